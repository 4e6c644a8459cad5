-- The audit ledger: an append-only Merkle log (RFC 9162). Entries are stored encrypted;
-- `leaf` is the tree leaf hash, which commits to a salted encoding of the entry, so the tree
-- and these rows reveal nothing without the ledger key.
CREATE TABLE ledger_entry (
    idx          INTEGER PRIMARY KEY,
    leaf         BLOB    NOT NULL,
    envelope     BLOB    NOT NULL
);

-- Hashes of complete perfect subtrees above the leaves (level >= 1): the subtree at
-- (level, idx) covers leaves [idx << level, (idx + 1) << level). Proofs are read from here.
CREATE TABLE ledger_node (
    level        INTEGER NOT NULL,
    idx          INTEGER NOT NULL,
    hash         BLOB    NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

-- Signed checkpoints (C2SP signed notes), one per tree size.
CREATE TABLE ledger_checkpoint (
    size         INTEGER PRIMARY KEY,
    note         TEXT    NOT NULL
);
