-- Machine clients (SMART Backend Services): a lab integration or a script that authenticates
-- with a signed assertion (private_key_jwt) by the public key registered here. `mac` is an
-- HMAC under the integrity key over every other column, so a client planted or edited in the
-- database (a key swapped, a role raised, bearer tokens switched on) is refused at load.
CREATE TABLE client (
    id            TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    role          TEXT    NOT NULL,
    link          TEXT    NOT NULL,
    jwk           TEXT    NOT NULL,
    bearer        INTEGER NOT NULL,
    disabled      INTEGER NOT NULL,
    generation    INTEGER NOT NULL,
    mac           BLOB    NOT NULL
);
