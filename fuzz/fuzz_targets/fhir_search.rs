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
//! candidate tokens, or the index would never have found it (dates outside the years
//! 1800..=2200 are exempt, as the crate documents); for a resource the input brings, a
//! search for any string, token or reference value it holds finds it; and an error names
//! only parameters and modifiers the crate defines, never a key, value or type as sent.

#![no_main]

#[path = "../../crates/medvault-fhir/tests/it/examples.rs"]
#[allow(dead_code)]
mod examples;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use medvault_fhir::search::{
    is_known_modifier, is_known_search_name, MAX_COUNT, UNREPEATED_MODIFIER,
};
use medvault_fhir::{
    index_entries, matches, parse_search, search_param, FhirError, ParamKind, SUPPORTED_TYPES,
};
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

/// A search value as a client would write it: `,` and `\\` escaped.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, ',' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether whitespace stands next to a `|` in `v`.
fn pipe_by_space(v: &str) -> bool {
    let parts: Vec<&str> = v.split('|').collect();
    parts
        .windows(2)
        .any(|w| w[0].ends_with(char::is_whitespace) || w[1].starts_with(char::is_whitespace))
}

/// Searching for what a resource holds finds it: for every index entry of a string, token
/// or reference parameter, a query naming that value (as a word, a prefix, `system|code`
/// or a reference) asks for a token the entry satisfies. Index extraction and query
/// parsing must normalise alike; this is where they would disagree.
fn stored_values_are_found(rtype: &str, resource: &Value) {
    let entries = index_entries(resource);
    for e in &entries {
        let Some(param) = e
            .field
            .strip_prefix(rtype)
            .and_then(|p| p.strip_prefix('.'))
        else {
            continue;
        };
        let Some(def) = search_param(rtype, param) else {
            continue;
        };
        let queries: Vec<(String, String)> = match (def.kind, e.value.split_once(':')) {
            (ParamKind::String, Some(("w", word))) => vec![
                (format!("{param}:exact"), escape(word)),
                (param.to_owned(), escape(word)),
            ],
            // A code ending in `|` cannot be asked for (`system|` means any code); a `|`
            // next to whitespace is trimmed away on the query side only. Both are edge
            // cases of no real code system, left out here.
            (ParamKind::Token, _) if !e.value.ends_with('|') && !pipe_by_space(&e.value) => {
                vec![(param.to_owned(), escape(&e.value))]
            }
            (ParamKind::Reference, _) => vec![(param.to_owned(), escape(&e.value))],
            _ => Vec::new(),
        };
        for pair in queries {
            let q = parse_search(rtype, std::slice::from_ref(&pair))
                .unwrap_or_else(|err| panic!("{pair:?} from the index does not parse: {err}"));
            for c in &q.clauses {
                let found = entries
                    .iter()
                    .any(|x| x.field == c.field && c.any_of.contains(&x.value));
                assert!(found, "{pair:?} (from {e:?}) does not find its resource");
            }
        }
    }
}

/// An error repeats only names this crate defines (parameters, modifiers), never a key,
/// value or type as sent: those may be data (a value joined to its name by an
/// encoded `=`, or a bare value).
fn errors_repeat_only_known_names(e: &FhirError) {
    let known_key = |k: &str| match k.split_once(':') {
        None => is_known_search_name(k),
        Some((n, m)) => {
            is_known_search_name(n) && (is_known_modifier(m) || m == UNREPEATED_MODIFIER)
        }
    };
    match e {
        FhirError::UnknownParam(None) => {}
        FhirError::UnknownParam(Some(n))
        | FhirError::BadParamValue(n)
        | FhirError::UnsupportedPrefix { param: n, .. } => {
            assert!(is_known_search_name(n), "{e}")
        }
        FhirError::UnsupportedParam(k) => assert!(known_key(k), "{e}"),
        FhirError::UnsupportedType => {}
    }
}

fn check(rtype: &str, query: &str, resources: &[Value]) {
    let _ = medvault_server::fuzzing::search(rtype, query);
    let pairs = medvault_server::repo::parse_query_string(query);
    let q = match parse_search(rtype, &pairs) {
        Ok(q) => q,
        Err(e) => return errors_repeat_only_known_names(&e),
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
        stored_values_are_found(&rtype, &resource);
    }
});
