//! Tests for patient compartment detection and reference listing/rewriting.

use std::collections::HashMap;

use medvault_fhir::{patient_of, references, refs::normalize_reference, rewrite_references};
use serde_json::json;

use crate::examples;

#[test]
fn patient_of_each_type() {
    let expected = [
        Some("pat-1"),
        None,
        None,
        Some("pat-1"),
        Some("pat-1"),
        Some("pat-1"),
        Some("pat-1"),
        Some("pat-1"),
        Some("pat-1"),
        Some("pat-1"),
        Some("pat-1"),
        Some("pat-1"),
        Some("pat-1"),
        Some("pat-1"),
        Some("pat-1"),
        Some("pat-1"),
    ];
    for (ex, want) in examples::all().iter().zip(expected) {
        assert_eq!(patient_of(ex).as_deref(), want, "{}", ex["resourceType"]);
    }
}

#[test]
fn patient_of_edge_cases() {
    // Non-patient subject, urn and contained references do not count.
    let o = json!({"resourceType": "Observation", "subject": {"reference": "Group/g1"}});
    assert_eq!(patient_of(&o), None);
    let o = json!({"resourceType": "Observation", "subject": {"reference": "urn:uuid:abc"}});
    assert_eq!(patient_of(&o), None);
    let o = json!({"resourceType": "Observation", "subject": {"reference": "#p1"}});
    assert_eq!(patient_of(&o), None);
    let o = json!({"resourceType": "Observation"});
    assert_eq!(patient_of(&o), None);
    let p = json!({"resourceType": "Patient"});
    assert_eq!(patient_of(&p), None);
    let o = json!({"resourceType": "Observation", "subject": {"reference": "http://x.org/fhir/Patient/p9/_history/3"}});
    assert_eq!(patient_of(&o).as_deref(), Some("p9"));
}

#[test]
fn references_lists_all_reference_strings() {
    let mut v = examples::encounter();
    v["contained"] = json!([{"resourceType": "Patient", "id": "c1", "managingOrganization": {"reference": "Organization/o2"}}]);
    assert_eq!(
        references(&v),
        [
            "Patient/pat-1",
            "Practitioner/prac-1",
            "Condition/cond-1",
            "urn:uuid:loc-1",
            "Organization/org-1",
            "Organization/o2",
        ]
    );
    // Consent.provision.actor.reference is a Reference object, not a string.
    assert_eq!(
        references(&examples::consent()),
        ["Patient/pat-1", "Organization/org-1"]
    );
}

#[test]
fn rewrite() {
    let mut v = json!({
        "resourceType": "Observation",
        "subject": {"reference": "urn:uuid:1111"},
        "performer": [{"reference": "urn:uuid:2222"}, {"reference": "Practitioner/keep"}],
        "hasMember": [{"reference": "urn:uuid:1111"}],
        "encounter": {"reference": "urn:uuid:3"},
        "note": [{"text": "urn:uuid:1111"}]
    });
    // Shorter and longer replacements (strings are rewritten in place).
    let long = format!("Encounter/{}", "e".repeat(64));
    let map: HashMap<String, String> = [
        ("urn:uuid:1111".to_owned(), "Patient/123".to_owned()),
        ("urn:uuid:2222".to_owned(), "Practitioner/9".to_owned()),
        ("urn:uuid:3".to_owned(), long.clone()),
    ]
    .into_iter()
    .collect();
    assert_eq!(rewrite_references(&mut v, &map), 4);
    assert_eq!(v["encounter"]["reference"], long.as_str());
    assert_eq!(v["subject"]["reference"], "Patient/123");
    assert_eq!(v["performer"][0]["reference"], "Practitioner/9");
    assert_eq!(v["performer"][1]["reference"], "Practitioner/keep");
    assert_eq!(v["hasMember"][0]["reference"], "Patient/123");
    assert_eq!(v["note"][0]["text"], "urn:uuid:1111");
    assert_eq!(rewrite_references(&mut v, &map), 0);
    assert_eq!(
        normalize_reference("https://a.b/Patient/1").as_deref(),
        Some("Patient/1")
    );
}

/// The patient of a resource is the id of its reference as `normalize_reference` reduces it,
/// whatever the form (the plain `Patient/<id>` form takes a shorter way there).
#[test]
fn patient_of_agrees_with_the_normalized_reference() {
    let long = format!("Patient/{}", "a".repeat(65));
    let forms = [
        "Patient/p1",
        "Patient/p-1.x",
        "Patient/p1/_history/2",
        " Patient/p1 ",
        "Patient/p1 ",
        "Patient/",
        "Patient/p1/",
        "Patient//p1",
        "Patient/a b",
        "Patient/ä",
        long.as_str(),
        "Patientx/p1",
        "patient/p1",
        "http://x.org/fhir/Patient/p1",
        "Patient/p1?x=1",
        "Patient/p1#frag",
    ];
    for r in forms {
        let o = json!({"resourceType": "Observation", "subject": {"reference": r}});
        let normalized =
            normalize_reference(r).and_then(|n| n.strip_prefix("Patient/").map(str::to_owned));
        assert_eq!(patient_of(&o), normalized, "{r:?}");
    }
    let o = json!({"resourceType": "Observation", "subject": {"reference": "Patient/p1"}});
    assert_eq!(patient_of(&o).as_deref(), Some("p1"));
}
