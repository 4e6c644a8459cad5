-- Search tokens become posting lists: one row per distinct token per commit, holding every
-- version row (`seq`) that carries the token, instead of one row per (token, seq) pair. A
-- commit then writes a few hundred index entries per Bundle instead of thousands.
-- `first_seq` is the posting's smallest seq; `rest` holds the others as LEB128 deltas
-- (empty for a posting of one). Postings of one token cover disjoint seq ranges.
CREATE TABLE search_posting (
    token        BLOB    NOT NULL,
    first_seq    INTEGER NOT NULL,
    rest         BLOB    NOT NULL,
    PRIMARY KEY (token, first_seq)
) WITHOUT ROWID;

-- Every existing (token, seq) pair is a valid posting of one.
INSERT INTO search_posting (token, first_seq, rest)
    SELECT token, seq, X'' FROM search_token;
DROP TABLE search_token;
