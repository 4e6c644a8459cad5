//! Parsing-only entry points for the cargo-fuzz targets in `fuzz/`; not part of the API.
//!
//! The Bundle and search parsing the fuzz targets exercise is private to this crate, and a
//! fuzz target can only call public functions. These wrappers expose exactly that parsing:
//! no keys, store, clock or network are involved, and nothing in the server calls them.

use serde_json::Value;

use crate::repo::{parse_query_string, RepoError};

/// A transaction or batch Bundle (already parsed as JSON, as `api.rs` does) through every
/// step before the repository is used; `Ok` is the number of entries.
pub fn bundle(bundle: Value) -> Result<usize, RepoError> {
    crate::bundle::parse_for_fuzzing(bundle)
}

/// A search on `rtype` with the raw query string (after `?`), as the FHIR search handler
/// parses it: percent-decoding, `_lastUpdated` against the server's own times, and the
/// FHIR search parameters. `Ok` is the number of index clauses.
pub fn search(rtype: &str, query: &str) -> Result<usize, RepoError> {
    let (q, _from, _until) = crate::repo::parse_query(rtype, &parse_query_string(query))?;
    Ok(q.clauses.len())
}
