//! Tests of identifier validation, stable codes and target construction.

use std::collections::HashSet;

use medvault_policy::{
    is_valid_id, Action, PatientId, PolicyError, PractitionerId, Reason, Role, Target,
};

use crate::{admin, lab_tech, pat, patient_subject, physician};

#[test]
fn fhir_ids() {
    for good in ["a", "A-1.b", "0", &"z".repeat(64)] {
        assert!(is_valid_id(good), "{good}");
        assert_eq!(PatientId::new(good).unwrap().as_str(), good);
    }
    for bad in [
        "",
        " a",
        "a b",
        "a_b",
        "a/b",
        "Patient/1",
        "é",
        &"z".repeat(65),
        "a\n",
    ] {
        assert!(!is_valid_id(bad), "{bad:?}");
        assert_eq!(
            PatientId::new(bad),
            Err(PolicyError::InvalidId { kind: "patient" })
        );
    }
    assert_eq!(
        "x y".parse::<PractitionerId>(),
        Err(PolicyError::InvalidId {
            kind: "practitioner"
        })
    );
    assert_eq!(pat("p-1").to_string(), "p-1");
}

#[test]
fn resource_types() {
    for good in ["Patient", "Observation", "X"] {
        assert_eq!(Target::of_type(good).unwrap().resource_type(), good);
    }
    for bad in [
        "",
        "patient",
        "Patient/1",
        "Pat ient",
        "Patient1",
        "Ünicode",
        &format!("P{}", "a".repeat(64)),
    ] {
        assert_eq!(
            Target::of_type(bad),
            Err(PolicyError::InvalidResourceType),
            "{bad:?}"
        );
    }
    let t = Target::patient(pat("p-1"));
    assert_eq!(t.resource_type(), "Patient");
    assert_eq!(t.id().map(|i| i.as_str()), Some("p-1"));
    assert_eq!(t.compartment(), Some(&pat("p-1")));
}

#[test]
fn codes_are_unique_and_stable() {
    let reasons: HashSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(reasons.len(), Reason::ALL.len());
    let allowing: Vec<&str> = Reason::ALL
        .iter()
        .filter(|r| r.allows())
        .map(|r| r.as_str())
        .collect();
    assert_eq!(
        allowing.join(" "),
        "in-care:general-practitioner in-care:care-team in-care:encounter in-care:appointment \
         consent break-glass break-glass-invoked own-compartment own-audit lab-order \
         staff-directory front-desk search-filtered ledger-audit account-admin"
    );
    let actions: HashSet<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
    assert_eq!(actions.len(), Action::ALL.len());
    for role in Role::ALL {
        assert_eq!(Role::from_code(role.as_str()), Some(role));
    }
    assert_eq!(Role::from_code("Admin"), None);
}

#[test]
fn subject_links() {
    let dr = physician("dr-a");
    assert_eq!(dr.role(), Role::Physician);
    assert_eq!(dr.practitioner().map(|p| p.as_str()), Some("dr-a"));
    assert_eq!(dr.patient(), None);
    let lab = lab_tech("lab-1");
    assert_eq!(lab.lab().map(|o| o.as_str()), Some("lab-1"));
    let p = patient_subject("pat-a");
    assert_eq!(p.patient(), Some(&pat("pat-a")));
    assert_eq!(p.practitioner(), None);
    assert!(!Role::Patient.is_staff());
    assert_eq!(admin().practitioner(), None);
}
