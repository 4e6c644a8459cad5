//! Integration tests for medvault-policy: one test binary, one module per area, shared fixtures here.

// Tests: a panic is the failure report, so unwrap/expect are the right tool here.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![forbid(unsafe_code)]

mod break_glass;
mod care;
mod datetime;
mod idor;
mod ids;
mod lab;
mod matrix;
mod props;

use medvault_policy::{
    decide, parse_datetime, AccountId, Action, BreakGlassReason, CareFacts, Context, Decision,
    Identity, OrganizationId, PatientId, PractitionerId, ResourceId, Subject, Target,
};
use serde_json::{json, Value};

/// One day in milliseconds.
pub const DAY: i64 = 86_400_000;

/// The decision time used throughout: 2024-06-15T12:00:00Z.
pub const NOW: i64 = 1_718_452_800_000;

/// Start of a FHIR dateTime, in unix ms.
pub fn at(text: &str) -> i64 {
    parse_datetime(text).unwrap().start_ms()
}

pub fn pat(id: &str) -> PatientId {
    PatientId::new(id).unwrap()
}

pub fn pr(id: &str) -> PractitionerId {
    PractitionerId::new(id).unwrap()
}

pub fn org(id: &str) -> OrganizationId {
    OrganizationId::new(id).unwrap()
}

pub fn rid(id: &str) -> ResourceId {
    ResourceId::new(id).unwrap()
}

fn account(id: &str) -> AccountId {
    AccountId::new(id).unwrap()
}

pub fn physician(practitioner: &str) -> Subject {
    Subject::new(
        account(&format!("acct-{practitioner}")),
        Identity::Physician {
            practitioner: pr(practitioner),
        },
    )
}

pub fn nurse(practitioner: &str) -> Subject {
    Subject::new(
        account(&format!("acct-{practitioner}")),
        Identity::Nurse {
            practitioner: pr(practitioner),
        },
    )
}

pub fn receptionist() -> Subject {
    Subject::new(
        account("acct-desk"),
        Identity::Receptionist {
            practitioner: pr("desk-1"),
        },
    )
}

pub fn lab_tech(lab: &str) -> Subject {
    Subject::new(
        account("acct-tech"),
        Identity::LabTechnician {
            practitioner: pr("tech-1"),
            lab: org(lab),
        },
    )
}

pub fn patient_subject(patient: &str) -> Subject {
    Subject::new(
        account(&format!("acct-{patient}")),
        Identity::Patient {
            patient: pat(patient),
        },
    )
}

pub fn admin() -> Subject {
    Subject::new(
        account("acct-admin"),
        Identity::Admin { practitioner: None },
    )
}

pub fn auditor() -> Subject {
    Subject::new(
        account("acct-auditor"),
        Identity::Auditor {
            practitioner: Some(pr("aud-1")),
        },
    )
}

pub fn reason(text: &str) -> BreakGlassReason {
    BreakGlassReason::new(text).unwrap()
}

/// Target of `resource_type` in `patient`'s compartment.
pub fn in_pat(resource_type: &str, patient: &str) -> Target {
    Target::in_compartment(resource_type, pat(patient)).unwrap()
}

/// A context at [`NOW`] with facts for `patient` extracted from `resources`.
pub fn ctx_with(patient: &str, resources: &[Value]) -> Context {
    Context::new(NOW).with_facts(CareFacts::from_resources(&pat(patient), resources))
}

pub fn check(subject: &Subject, action: Action, target: &Target, ctx: &Context) -> Decision {
    decide(subject, action, target, ctx)
}

/// `(allowed, reason code)` for compact assertions.
pub fn outcome(d: Decision) -> (bool, &'static str) {
    (d.allowed(), d.reason().as_str())
}

pub fn reference(text: &str) -> Value {
    json!({ "reference": text })
}

/// A Patient resource with the given general practitioner reference.
pub fn patient_with_gp(patient: &str, gp_reference: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "id": patient,
        "generalPractitioner": [reference(gp_reference)],
    })
}

/// A CareTeam of `patient` with one participant.
pub fn care_team(patient: &str, status: &str, member_reference: &str) -> Value {
    json!({
        "resourceType": "CareTeam",
        "id": "ct-1",
        "status": status,
        "subject": reference(&format!("Patient/{patient}")),
        "participant": [{ "member": reference(member_reference) }],
    })
}

/// An Encounter of `patient` with one participant and the given period.
pub fn encounter(patient: &str, status: &str, individual_reference: &str, period: Value) -> Value {
    json!({
        "resourceType": "Encounter",
        "id": "enc-1",
        "status": status,
        "subject": reference(&format!("Patient/{patient}")),
        "participant": [{ "individual": reference(individual_reference) }],
        "period": period,
    })
}

/// An Appointment of `patient` with a practitioner actor, from `start` to `end`.
pub fn appointment(
    patient: &str,
    status: &str,
    actor_reference: &str,
    start: &str,
    end: &str,
) -> Value {
    json!({
        "resourceType": "Appointment",
        "id": "appt-1",
        "status": status,
        "start": start,
        "end": end,
        "participant": [
            { "actor": reference(&format!("Patient/{patient}")), "status": "accepted" },
            { "actor": reference(actor_reference), "status": "accepted" },
        ],
    })
}

/// An active permit Consent of `patient` naming `actor_reference`.
pub fn consent(patient: &str, status: &str, actor_reference: &str) -> Value {
    json!({
        "resourceType": "Consent",
        "id": "consent-1",
        "status": status,
        "patient": reference(&format!("Patient/{patient}")),
        "provision": {
            "type": "permit",
            "actor": [{ "reference": reference(actor_reference) }],
        },
    })
}

/// An active lab order of `patient` addressed to `performer_reference`.
pub fn service_request(id: &str, patient: &str, status: &str, performer_reference: &str) -> Value {
    json!({
        "resourceType": "ServiceRequest",
        "id": id,
        "status": status,
        "intent": "order",
        "subject": reference(&format!("Patient/{patient}")),
        "performer": [reference(performer_reference)],
    })
}
