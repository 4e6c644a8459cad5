//! IDOR-style tests: naming another patient's id never reaches their data.

use medvault_policy::{Action, CareFacts, Context, Target};
use serde_json::json;

use crate::{
    care_team, check, consent, encounter, in_pat, nurse, pat, patient_subject, patient_with_gp,
    physician, rid, service_request, NOW,
};

/// Every type the policy knows about, plus unknown ones.
const TYPES: [&str; 20] = [
    "Patient",
    "Observation",
    "Condition",
    "Encounter",
    "CareTeam",
    "MedicationRequest",
    "AllergyIntolerance",
    "Procedure",
    "Immunization",
    "DiagnosticReport",
    "ServiceRequest",
    "DocumentReference",
    "Communication",
    "Appointment",
    "Consent",
    "AuditEvent",
    "Practitioner",
    "Schedule",
    "Basic",
    "Bundle",
];

/// Targets naming `patient` in every way a caller could: compartment, id, basedOn.
fn targets_of(patient: &str) -> Vec<Target> {
    let mut out = vec![Target::patient(pat(patient))];
    for rt in TYPES {
        let t = in_pat(rt, patient);
        out.push(t.clone());
        out.push(t.clone().with_id(rid("x-1")).with_based_on(rid("sr-1")));
    }
    out
}

/// Rich facts for both patients: whatever the server gathered must not leak across.
fn both_patients() -> Context {
    let a = [
        patient_with_gp("pat-a", "Practitioner/dr-a"),
        care_team("pat-a", "active", "Practitioner/nurse-a"),
        consent("pat-a", "active", "Practitioner/dr-a"),
    ];
    let b = [
        patient_with_gp("pat-b", "Practitioner/dr-b"),
        encounter(
            "pat-b",
            "in-progress",
            "Practitioner/dr-b",
            json!({"start": "2024-06-01"}),
        ),
        service_request("sr-1", "pat-b", "active", "Organization/lab-1"),
    ];
    Context::new(NOW)
        .with_facts(CareFacts::from_resources(&pat("pat-a"), &a))
        .with_facts(CareFacts::from_resources(&pat("pat-b"), &b))
}

#[test]
fn patient_cannot_reach_another_patient() {
    let me = patient_subject("pat-a");
    let ctx = both_patients();
    for target in targets_of("pat-b") {
        for action in Action::ALL {
            let d = check(&me, action, &target, &ctx);
            assert!(!d.allowed(), "{action} {target:?} -> {d:?}");
        }
    }
    // The patient's own id passed as a resource id does not help: the compartment decides.
    let sneaky = in_pat("Observation", "pat-b").with_id(rid("pat-a"));
    assert!(!check(&me, Action::Read, &sneaky, &ctx).allowed());
    // A Patient target whose id and compartment disagree is refused outright.
    let confused = in_pat("Patient", "pat-a").with_id(rid("pat-b"));
    let d = check(&me, Action::Read, &confused, &ctx);
    assert_eq!(
        (d.allowed(), d.reason().as_str()),
        (false, "inconsistent-target")
    );
    let compartment_less = Target::of_type("Patient").unwrap().with_id(rid("pat-a"));
    assert!(!check(&me, Action::Read, &compartment_less, &ctx).allowed());
}

#[test]
fn clinician_in_care_of_a_is_denied_on_b() {
    let ctx = both_patients();
    for subject in [physician("dr-a"), nurse("nurse-a")] {
        // Sanity: the relationship with pat-a is real.
        assert!(check(
            &subject,
            Action::Read,
            &in_pat("Observation", "pat-a"),
            &ctx
        )
        .allowed());
        for target in targets_of("pat-b") {
            for action in Action::ALL {
                let d = check(&subject, action, &target, &ctx);
                // Break-glass invocation is the one legitimate way in, and is flagged.
                if action == Action::BreakGlass {
                    assert!(!d.allowed() || d.break_glass_used());
                    continue;
                }
                assert!(
                    !d.allowed(),
                    "{:?} {action} {target:?} -> {d:?}",
                    subject.role()
                );
            }
        }
    }
}

#[test]
fn facts_for_the_wrong_patient_grant_nothing() {
    // The server mistakenly passes pat-a's facts while the target is pat-b.
    let ctx = Context::new(NOW).with_facts(CareFacts::from_resources(
        &pat("pat-a"),
        &[patient_with_gp("pat-a", "Practitioner/dr-a")],
    ));
    let d = check(
        &physician("dr-a"),
        Action::Read,
        &in_pat("Observation", "pat-b"),
        &ctx,
    );
    assert_eq!((d.allowed(), d.reason().as_str()), (false, "not-in-care"));
    // Or extracts pat-a's resources as if they were pat-b's.
    let ctx = Context::new(NOW).with_facts(CareFacts::from_resources(
        &pat("pat-b"),
        &[
            patient_with_gp("pat-a", "Practitioner/dr-a"),
            care_team("pat-a", "active", "Practitioner/dr-a"),
        ],
    ));
    assert!(!check(
        &physician("dr-a"),
        Action::Read,
        &in_pat("Observation", "pat-b"),
        &ctx
    )
    .allowed());
    // Adding facts for the same patient replaces, not merges, earlier facts.
    let ctx = Context::new(NOW)
        .with_facts(CareFacts::from_resources(
            &pat("pat-a"),
            &[patient_with_gp("pat-a", "Practitioner/dr-a")],
        ))
        .with_facts(CareFacts::none(pat("pat-a")));
    assert!(!check(
        &physician("dr-a"),
        Action::Read,
        &in_pat("Observation", "pat-a"),
        &ctx
    )
    .allowed());
}
