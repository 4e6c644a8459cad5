-- The current, non-deleted versions of each resource type are listed in the blind index
-- under a per-type posting token, like a search parameter's, instead of by an index.
-- `resource_type_current` had one append point per resource type: a commit of a Bundle
-- with ten types dirtied ten of its pages, where the posting log appends one row.
-- The postings of the existing versions are written by the migration's second step, in
-- Rust (`post_type_postings`): merging the posting log, then one posting per 1,024 versions.
-- Type history pages through the UNIQUE (rtype, id, version) index instead.
DROP INDEX resource_type_current;
