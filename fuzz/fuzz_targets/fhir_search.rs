//! Fuzzes search query strings: the raw `?a=b&c=d` text (percent-decoded as the server
//! does, `medvault_server::repo::parse_query_string`) → `medvault_fhir::parse_search` on a
//! supported or arbitrary resource type, and the server's whole search parsing
//! (`_lastUpdated` included, `medvault_server::fuzzing::search`); then `matches` against
//! example resources (the crate's test examples, or one the input brings).
//!
//! Input: mode byte, then: `m < 0x80`: the query, on `SUPPORTED_TYPES[m % 17]`;
//! `0x80..0xC0`: `Type?query` with any type; `0xC0..`: resource JSON, NUL, query (on the
//! resource's type if supported).
//!
//! Checks beyond "no panic": the documented shape of a parsed query (every clause names
//! `Type.param` and has candidate tokens, `_count` ≤ 1000), and index soundness: a resource
//! that `matches` a query (the exact post-filter) must also carry one of each clause's
//! candidate tokens, or the index would never have found it. Dates outside the years
//! 1800..=2200 are exempt, as the crate documents.

#![no_main]

#[path = "../../crates/medvault-fhir/tests/it/examples.rs"]
#[allow(dead_code)]
mod examples;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use medvault_fhir::search::MAX_COUNT;
use medvault_fhir::{index_entries, matches, parse_search, SUPPORTED_TYPES};
use medvault_fuzz::{mode_and_rest, parts};
use serde_json::Value;

fn examples() -> &'static [Value] {
    static ALL: OnceLock<Vec<Value>> = OnceLock::new();
    ALL.get_or_init(examples::all)
}

/// Whether every date token of `field` in the resource's index lies in 1800..=2200.
fn dates_in_window(entries: &[medvault_fhir::IndexEntry], field: &str) -> bool {
    entries
        .iter()
        .filter(|e| e.field == field)
        .filter_map(|e| e.value.strip_prefix("y:"))
        .all(|y| y.parse::<i32>().is_ok_and(|y| (1800..=2200).contains(&y)))
}

fn check(rtype: &str, query: &str, resources: &[Value]) {
    let _ = medvault_server::fuzzing::search(rtype, query);
    let pairs = medvault_server::repo::parse_query_string(query);
    let Ok(q) = parse_search(rtype, &pairs) else {
        return;
    };
    assert_eq!(q.resource_type, rtype);
    assert!(q.count.is_none_or(|c| c <= MAX_COUNT));
    for c in &q.clauses {
        assert!(
            c.field
                .strip_prefix(rtype)
                .is_some_and(|p| p.starts_with('.')),
            "clause field {} on {rtype}",
            c.field
        );
        assert!(!c.any_of.is_empty(), "clause {} without tokens", c.field);
    }
    for r in resources {
        if !matches(&q, r) {
            continue;
        }
        let entries = index_entries(r);
        for c in &q.clauses {
            if c.exact.is_none() || !dates_in_window(&entries, &c.field) {
                continue;
            }
            let found = entries
                .iter()
                .any(|e| e.field == c.field && c.any_of.contains(&e.value));
            assert!(
                found,
                "{} matches {query:?} exactly but the index misses it for {}",
                r["id"], c.field
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = mode_and_rest(data) else {
        return;
    };
    if mode < 0x80 {
        let Ok(query) = std::str::from_utf8(rest) else {
            return;
        };
        check(
            SUPPORTED_TYPES[usize::from(mode) % SUPPORTED_TYPES.len()],
            query,
            examples(),
        );
    } else if mode < 0xC0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        let (rtype, query) = text.split_once('?').unwrap_or((text, ""));
        check(rtype, query, examples());
    } else {
        let [resource, query] = parts::<2>(rest);
        let (Ok(resource), Ok(query)) = (
            serde_json::from_slice::<Value>(resource),
            std::str::from_utf8(query),
        ) else {
            return;
        };
        let rtype = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .filter(|t| medvault_fhir::is_supported_type(t))
            .unwrap_or(SUPPORTED_TYPES[usize::from(mode) % SUPPORTED_TYPES.len()])
            .to_owned();
        check(&rtype, query, std::slice::from_ref(&resource));
    }
});
