-- Accounts and registration tokens. Every row carries `mac`, an HMAC under the integrity key
-- (held only by the unsealed server) over all its other columns, so a row inserted or edited
-- directly in the database (a forged admin) is refused when loaded. Login names and national
-- ids are stored only as keyed blind-index tokens.
CREATE TABLE account (
    id            TEXT    PRIMARY KEY,
    login         BLOB    NOT NULL UNIQUE,
    national_id   BLOB    NOT NULL UNIQUE,
    role          TEXT    NOT NULL,
    link          TEXT    NOT NULL,
    disabled      INTEGER NOT NULL,
    generation    INTEGER NOT NULL,
    password_file BLOB,
    key_bundle    BLOB,
    mac           BLOB    NOT NULL
);

-- One-time, expiring, revocable tokens that let one person register with a given role.
-- Only the SHA-256 of the token is stored.
CREATE TABLE registration_token (
    hash          BLOB    PRIMARY KEY,
    role          TEXT    NOT NULL,
    link          TEXT    NOT NULL,
    issued_by     TEXT    NOT NULL,
    expires_ms    INTEGER NOT NULL,
    state         TEXT    NOT NULL,
    mac           BLOB    NOT NULL
) WITHOUT ROWID;

-- The server's OPAQUE setup (OPRF seed and key-exchange key pair), encrypted under a key
-- derived from the keyring.
CREATE TABLE auth_setup (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    envelope      BLOB    NOT NULL
);
