//! Fuzzes FHIR JSON resources: arbitrary bytes → JSON `Value` (as the server parses request
//! bodies) → `medvault_fhir::validate`, and the other readers of stored resources
//! (`index_entries`, `patient_of`, `references`, `rewrite_references`).
//!
//! Checks beyond "no panic": validation is deterministic; no issue text echoes a string
//! value of the resource (the crate's rule: diagnostics never carry PHI); rewriting
//! references is complete (a second pass rewrites nothing).

#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use medvault_fhir::{index_entries, patient_of, references, rewrite_references, validate};
use serde_json::Value;

/// Every string value (not key) in `v`, and every key.
fn strings<'a>(v: &'a Value, values: &mut Vec<&'a str>, keys: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => values.push(s),
        Value::Array(items) => items.iter().for_each(|i| strings(i, values, keys)),
        Value::Object(map) => {
            for (k, child) in map {
                keys.push(k);
                strings(child, values, keys);
            }
        }
        _ => {}
    }
}

/// Whether `s` is something the validator's own vocabulary (ASCII element names, type
/// names, codes of bindings, fixed messages) could never contain: non-ASCII or `~`.
fn is_distinctive(s: &str) -> bool {
    s.chars().any(|c| !c.is_ascii() || c == '~')
}

fuzz_target!(|data: &[u8]| {
    let Ok(mut resource) = serde_json::from_slice::<Value>(data) else {
        return;
    };

    let first = validate(&resource);
    assert_eq!(first, validate(&resource), "validate is not deterministic");
    if let Err(issues) = &first {
        let mut values = Vec::new();
        let mut keys = Vec::new();
        strings(&resource, &mut values, &mut keys);
        for s in values.iter().filter(|s| is_distinctive(s)) {
            for issue in issues {
                assert!(
                    !issue.diagnostics.contains(s),
                    "diagnostics echo a value: {issue:?}"
                );
                // Expressions name element paths, so keys (the client's own) may appear;
                // a value may not, unless it is part of a key or spans a path separator.
                let explained = s.contains(['.', '[', ']']) || keys.iter().any(|k| k.contains(s));
                assert!(
                    explained || !issue.expression.contains(s),
                    "expression echoes a value: {issue:?}"
                );
            }
        }
    }

    let _ = index_entries(&resource);
    let _ = patient_of(&resource);

    // Rewrite every urn: reference the resource has to a plain one, as a transaction does.
    let mut map = HashMap::new();
    let mut stack = vec![&resource];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("reference") {
                    if r.starts_with("urn:") {
                        map.insert(r.clone(), format!("Patient/p{}", map.len()));
                    }
                }
                stack.extend(o.values());
            }
            Value::Array(a) => stack.extend(a.iter()),
            _ => {}
        }
    }
    let _ = references(&resource);
    rewrite_references(&mut resource, &map);
    assert_eq!(
        rewrite_references(&mut resource, &map),
        0,
        "a rewritten reference was left behind"
    );
    let _ = validate(&resource);
});
