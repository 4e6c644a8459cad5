//! Reference handling: normalising reference strings, finding the patient a resource
//! belongs to (its compartment, which selects the data key), and listing/rewriting
//! references for transaction processing.

use std::collections::HashMap;

use serde_json::Value;

/// True for a FHIR resource type name shape (`[A-Z][A-Za-z]*`).
fn is_type_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_uppercase()) && s.chars().all(|c| c.is_ascii_alphabetic())
}

/// Reduces a literal reference to relative `Type/id` form.
///
/// Accepts `Type/id`, `Type/id/_history/v` and absolute URLs ending in one of those
/// (`https://host/fhir/Patient/123`). Returns None for contained (`#id`), `urn:` and
/// anything that does not end in a well-formed type and id.
pub fn normalize_reference(reference: &str) -> Option<String> {
    let s = reference.trim();
    if s.is_empty() || s.starts_with('#') || s.starts_with("urn:") {
        return None;
    }
    let absolute = s.contains("://");
    let s = if absolute {
        s.split(['?', '#']).next().unwrap_or(s)
    } else {
        s
    };
    let mut segs: Vec<&str> = s.split('/').collect();
    if segs.len() >= 4 && segs[segs.len() - 2] == "_history" {
        segs.truncate(segs.len() - 2);
    }
    if !absolute && segs.len() != 2 {
        return None;
    }
    let n = segs.len();
    if n < 2 {
        return None;
    }
    let (ty, id) = (segs[n - 2], segs[n - 1]);
    (is_type_name(ty) && crate::is_valid_id(id)).then(|| format!("{ty}/{id}"))
}

/// The id of the Patient a reference points to, if it is a Patient reference.
pub(crate) fn patient_id_of_reference(reference: &str) -> Option<String> {
    // The usual form, `Patient/<id>`, is already normal: no reduced copy to build. Any
    // other form (absolute, versioned, padded) goes through `normalize_reference`.
    if let Some(id) = reference.strip_prefix("Patient/") {
        if crate::is_valid_id(id) {
            return Some(id.to_owned());
        }
    }
    normalize_reference(reference)?
        .strip_prefix("Patient/")
        .map(str::to_owned)
}

/// The patient a resource belongs to (for choosing its data key), as a bare id.
///
/// Patient → its own `id`. Practitioner/Organization → None. Other resources → the id of
/// the first Patient reference found in `subject`, `patient`, `beneficiary`, then (for
/// Appointment) `participant[].actor`. Absolute URLs are reduced; `urn:`/contained
/// references do not count.
pub fn patient_of(resource: &Value) -> Option<String> {
    let rt = resource.get("resourceType")?.as_str()?;
    match rt {
        "Patient" => {
            let id = resource.get("id")?.as_str()?;
            crate::is_valid_id(id).then(|| id.to_owned())
        }
        "Practitioner" | "Organization" => None,
        _ => {
            let direct = ["subject", "patient", "beneficiary"].iter().find_map(|k| {
                let r = resource.get(*k)?.get("reference")?.as_str()?;
                patient_id_of_reference(r)
            });
            direct.or_else(|| {
                resource
                    .get("participant")?
                    .as_array()?
                    .iter()
                    .filter_map(|p| p.get("actor")?.get("reference")?.as_str())
                    .find_map(patient_id_of_reference)
            })
        }
    }
}

/// Every `reference` string anywhere in the resource (recursively, including contained
/// resources and extensions), in document order, without duplicates.
pub fn references(resource: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    match (k.as_str(), child) {
                        ("reference", Value::String(s)) => {
                            if !out.contains(s) {
                                out.push(s.clone());
                            }
                        }
                        _ => walk(child, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(resource, &mut out);
    out
}

/// Whether any `reference` string anywhere in the resource (as [`references`] finds them)
/// satisfies `pred`, without collecting them.
pub fn any_reference(resource: &Value, pred: &dyn Fn(&str) -> bool) -> bool {
    match resource {
        Value::Object(map) => map.iter().any(|(k, child)| match (k.as_str(), child) {
            ("reference", Value::String(s)) => pred(s),
            _ => any_reference(child, pred),
        }),
        Value::Array(items) => items.iter().any(|i| any_reference(i, pred)),
        _ => false,
    }
}

/// Rewrites every `reference` string equal to a key of `map` (e.g. a transaction's
/// `urn:uuid:...` fullUrl) to the mapped value (e.g. `Patient/123`). Returns the number
/// of strings rewritten.
pub fn rewrite_references(resource: &mut Value, map: &HashMap<String, String>) -> usize {
    match resource {
        Value::Object(obj) => obj
            .iter_mut()
            .map(|(k, child)| match child {
                Value::String(s) if k == "reference" => match map.get(s.as_str()) {
                    Some(new) => {
                        // In place: a `urn:uuid:` fullUrl (45 bytes) has room for the
                        // `Patient/<uuid>` (44) that most references become; longer
                        // types' ids still grow the string once.
                        s.clear();
                        s.push_str(new);
                        1
                    }
                    None => 0,
                },
                _ => rewrite_references(child, map),
            })
            .sum(),
        Value::Array(items) => items.iter_mut().map(|i| rewrite_references(i, map)).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_reference_sees_what_references_lists() {
        let r = serde_json::json!({
            "resourceType": "Observation",
            "subject": {"reference": "Patient/1"},
            "contained": [{"resourceType": "Device", "owner": {"reference": "urn:uuid:x"}}],
            "extension": [{"valueReference": {"reference": {"odd": {"reference": "#c1"}}}}],
            "note": [{"text": "reference"}],
        });
        assert_eq!(references(&r), ["Patient/1", "urn:uuid:x", "#c1"]);
        for probe in ["Patient/1", "urn:uuid:x", "#c1", "reference", "Patient/2"] {
            assert_eq!(
                any_reference(&r, &|s| s == probe),
                references(&r).iter().any(|s| s == probe),
                "{probe}"
            );
        }
        assert!(any_reference(&r, &|s| s.starts_with("urn:")));
        assert!(!any_reference(
            &serde_json::json!({"a": [1, "urn:x"]}),
            &|_| true
        ));
    }

    #[test]
    fn normalize() {
        let n = |s: &str| normalize_reference(s);
        assert_eq!(n("Patient/123").as_deref(), Some("Patient/123"));
        assert_eq!(n(" Patient/123 ").as_deref(), Some("Patient/123"));
        assert_eq!(n("Patient/123/_history/2").as_deref(), Some("Patient/123"));
        assert_eq!(
            n("https://ex.org/fhir/Patient/123").as_deref(),
            Some("Patient/123")
        );
        assert_eq!(
            n("https://ex.org/fhir/Patient/123/_history/4?x=1").as_deref(),
            Some("Patient/123")
        );
        assert_eq!(n("#p1"), None);
        assert_eq!(n("urn:uuid:1234"), None);
        assert_eq!(n("123"), None);
        assert_eq!(n("patient/123"), None);
        assert_eq!(n("a/Patient/123"), None);
        assert_eq!(n("Patient/"), None);
        assert_eq!(n("Patient/a b"), None);
    }
}
