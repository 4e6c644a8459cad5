-- Password resets: a registration token may name the account whose password it resets
-- (empty for a token that creates an account).
ALTER TABLE registration_token ADD COLUMN account TEXT NOT NULL DEFAULT '';

-- Break-glass grants and refresh tokens. Both carry `mac`, an HMAC under the integrity key
-- over their fixed columns, so a row planted in the database is refused when loaded.

-- A clinician's time-limited emergency access to one patient's chart. The patient is stored
-- only as a keyed blind-index token (who opened whose chart is sensitive); the stated
-- reason lives in the encrypted ledger and in the patient's notice, not here.
CREATE TABLE break_glass_grant (
    id            INTEGER PRIMARY KEY,
    account       TEXT    NOT NULL,
    patient       BLOB    NOT NULL,
    issued_ms     INTEGER NOT NULL,
    expires_ms    INTEGER NOT NULL,
    mac           BLOB    NOT NULL
);
CREATE INDEX break_glass_grant_lookup ON break_glass_grant (account, patient, expires_ms);

-- Rotating refresh tokens. Only the SHA-256 of a token is stored. Every rotation of one
-- login shares a `family`; reusing a rotated token or logging out revokes the family.
-- `state` (open, used, revoked) only ever moves away from `open` and is outside the MAC:
-- reopening a row also needs the token itself and the DPoP key it is bound to.
CREATE TABLE refresh_token (
    hash          BLOB    PRIMARY KEY,
    family        BLOB    NOT NULL,
    account       TEXT    NOT NULL,
    jkt           TEXT    NOT NULL,
    issued_ms     INTEGER NOT NULL,
    expires_ms    INTEGER NOT NULL,
    state         TEXT    NOT NULL,
    mac           BLOB    NOT NULL
) WITHOUT ROWID;
CREATE INDEX refresh_token_family ON refresh_token (family);
CREATE INDEX refresh_token_account ON refresh_token (account);
