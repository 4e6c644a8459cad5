-- medvault schema v1 (SQLite). Nothing in here is plaintext PHI: resource bodies are AEAD
-- envelopes, search values are keyed blind-index tokens, and the patient a row belongs to is
-- recorded only as a keyed token ("owner").

-- Sealed-vault configuration: one row. The keyring (KEK versions and derivation seeds) is
-- stored only wrapped under a key derived from the root key, which is never stored.
CREATE TABLE vault (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    set_id       BLOB    NOT NULL,
    threshold    INTEGER NOT NULL,
    share_count  INTEGER NOT NULL,
    check_value  BLOB    NOT NULL,
    keyring      BLOB    NOT NULL,
    generation   INTEGER NOT NULL
);

-- One commitment per share of the current set, so a wrong share is refused on its own.
CREATE TABLE share_commitment (
    x            INTEGER PRIMARY KEY,
    commitment   BLOB    NOT NULL
);

-- The one-time bootstrap token for the first admin (hash only).
CREATE TABLE bootstrap_token (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    token_hash   BLOB    NOT NULL,
    used         INTEGER NOT NULL DEFAULT 0
);

-- Data keys, one per patient (owner token) plus the system key; wrapped by a KEK version.
CREATE TABLE data_key (
    owner        BLOB    PRIMARY KEY,
    kek_version  INTEGER NOT NULL,
    wrapped      BLOB    NOT NULL
) WITHOUT ROWID;
CREATE INDEX data_key_version ON data_key (kek_version);

-- Every version of every resource. `body` holds the envelope inline, or `blob_ref` names an
-- object in the blob store for large envelopes. Deletions are versions with no body.
-- The current version is the highest one (found through the UNIQUE index); `is_current`
-- mirrors that for searches over a whole type. `tokens` lists the version's blind-index
-- tokens (16 bytes each) so they can be removed when the version stops being current.
CREATE TABLE resource_version (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    rtype        TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    is_current   INTEGER NOT NULL,
    deleted      INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL,
    owner        BLOB    NOT NULL,
    body         BLOB,
    blob_ref     TEXT,
    tokens       BLOB,
    UNIQUE (rtype, id, version)
);
CREATE INDEX resource_type_current ON resource_version (rtype, is_current, seq);

-- Blind-index tokens of the current, non-deleted version of each resource, pointing at the
-- version row. Tokens are keyed per "Type.param", so they never collide across types.
CREATE TABLE search_token (
    token        BLOB    NOT NULL,
    seq          INTEGER NOT NULL,
    PRIMARY KEY (token, seq)
) WITHOUT ROWID;
