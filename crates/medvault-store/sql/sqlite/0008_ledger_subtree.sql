-- Subtree hashes keyed by where they end. Keyed by (level, idx), a commit of many entries
-- dirtied one B-tree page per tree level (each level's right edge; 14 of a 45-entry
-- commit's ~110 written pages at 10k entries). Keyed by `pos` = (last leaf covered) * 64 +
-- level, every hash a commit completes is appended at one place, in the order the leaves
-- complete them. A node (level, idx) covers leaves [idx << level, (idx + 1) << level).
CREATE TABLE ledger_subtree (
    pos          INTEGER PRIMARY KEY,
    hash         BLOB    NOT NULL
);
-- Rows that cannot describe a subtree of a ledger smaller than 2^56 entries are dropped (a
-- planted row could otherwise collide with a real one here).
INSERT INTO ledger_subtree (pos, hash)
    SELECT ((((idx + 1) << level) - 1) << 6) | level, hash
    FROM ledger_node
    WHERE level BETWEEN 1 AND 56 AND idx >= 0 AND idx < (1 << (56 - level));
DROP TABLE ledger_node;
