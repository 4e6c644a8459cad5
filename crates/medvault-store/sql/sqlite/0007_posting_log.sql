-- The posting log: the newest commits' search postings, one row per commit, appended in
-- `seq` order and merged into search_posting in bulk every few dozen commits. Posting to the
-- blind index per commit dirtied index pages all over the B-tree (its keys are random
-- HMACs); a log row is one sequential append.
-- `batch` is at most every `seq` the row holds (its smallest when written; rows cover
-- disjoint, increasing `seq` ranges, all newer than anything in search_posting); `rev` counts rewrites (a retired version's
-- `seq` is taken out of its row), so readers can cache a decoded row by (batch, rev).
CREATE TABLE posting_log (
    batch   INTEGER PRIMARY KEY,
    rev     INTEGER NOT NULL,
    data    BLOB    NOT NULL
);
