//! Tests of care-fact extraction: GP, CareTeam, Encounter, Appointment, Consent, and
//! malformed data granting nothing.

use medvault_policy::{Action, CareBasis, CareFacts, Context, DEFAULT_CARE_WINDOW_MS};
use serde_json::{json, Value};

use crate::{
    appointment, at, care_team, check, consent, ctx_with, encounter, in_pat, nurse, outcome, pat,
    patient_with_gp, physician, pr, reference, DAY, NOW,
};

/// The basis on which dr-a is in care of pat-a at [`NOW`] with the default window.
fn basis(resources: &[Value]) -> Option<CareBasis> {
    basis_at(resources, NOW)
}

fn basis_at(resources: &[Value], now: i64) -> Option<CareBasis> {
    CareFacts::from_resources(&pat("pat-a"), resources).basis_for(
        &pr("dr-a"),
        now,
        DEFAULT_CARE_WINDOW_MS,
    )
}

const DR_A: &str = "Practitioner/dr-a";

#[test]
fn general_practitioner() {
    assert_eq!(
        basis(&[patient_with_gp("pat-a", DR_A)]),
        Some(CareBasis::GeneralPractitioner)
    );
    // Another patient's GP entry, another practitioner, or a non-Practitioner reference.
    assert_eq!(basis(&[patient_with_gp("pat-b", DR_A)]), None);
    assert_eq!(
        basis(&[patient_with_gp("pat-a", "Practitioner/dr-b")]),
        None
    );
    assert_eq!(
        basis(&[patient_with_gp("pat-a", "Organization/dr-a")]),
        None
    );
    assert_eq!(
        basis(&[patient_with_gp("pat-a", "PractitionerRole/dr-a")]),
        None
    );
    let decision = check(
        &physician("dr-a"),
        Action::Read,
        &in_pat("Observation", "pat-a"),
        &ctx_with("pat-a", &[patient_with_gp("pat-a", DR_A)]),
    );
    assert_eq!(outcome(decision), (true, "in-care:general-practitioner"));
}

#[test]
fn care_team_status() {
    assert_eq!(
        basis(&[care_team("pat-a", "active", DR_A)]),
        Some(CareBasis::CareTeam)
    );
    for status in [
        "inactive",
        "proposed",
        "suspended",
        "entered-in-error",
        "Active",
        "",
    ] {
        assert_eq!(basis(&[care_team("pat-a", status, DR_A)]), None, "{status}");
    }
    let mut no_status = care_team("pat-a", "active", DR_A);
    no_status.as_object_mut().unwrap().remove("status");
    assert_eq!(basis(&[no_status]), None);
    // A team about another patient, or without a subject, says nothing about pat-a.
    assert_eq!(basis(&[care_team("pat-b", "active", DR_A)]), None);
    let mut no_subject = care_team("pat-a", "active", DR_A);
    no_subject.as_object_mut().unwrap().remove("subject");
    assert_eq!(basis(&[no_subject]), None);
    let decision = check(
        &nurse("dr-a"),
        Action::Read,
        &in_pat("Condition", "pat-a"),
        &ctx_with("pat-a", &[care_team("pat-a", "active", DR_A)]),
    );
    assert_eq!(outcome(decision), (true, "in-care:care-team"));
}

fn team_with_periods(team: Option<Value>, participant: Option<Value>) -> Value {
    let mut ct = care_team("pat-a", "active", DR_A);
    if let Some(p) = team {
        ct["period"] = p;
    }
    if let Some(p) = participant {
        ct["participant"][0]["period"] = p;
    }
    ct
}

#[test]
fn care_team_periods() {
    let cases = [
        (None, Some(json!({"start": "2024-01-01"})), true),
        (
            None,
            Some(json!({"start": "2024-01-01", "end": "2024-12-31"})),
            true,
        ),
        (None, Some(json!({"end": "2024-06"})), true),
        (None, Some(json!({"end": "2024-06-15"})), true),
        (None, Some(json!({"end": "2024-06-14"})), false),
        (None, Some(json!({"end": "2024-06-15T11:59:59Z"})), false),
        (None, Some(json!({"start": "2024-07"})), false),
        (None, Some(json!({"start": "2024-06-15T12:00:01Z"})), false),
        (Some(json!({"end": "2024-05"})), None, false),
        (
            Some(json!({"start": "2024"})),
            Some(json!({"end": "2025"})),
            true,
        ),
        (
            Some(json!({"end": "2024-06-01"})),
            Some(json!({"end": "2025"})),
            false,
        ),
        // Malformed periods grant nothing.
        (None, Some(json!({"end": "2024-13"})), false),
        (None, Some(json!({"end": 2025})), false),
        (None, Some(json!("2024")), false),
        (None, Some(json!({"start": "2025", "end": "2024"})), false),
        (Some(json!({"start": "soon"})), None, false),
    ];
    for (team, participant, want) in cases {
        let ct = team_with_periods(team.clone(), participant.clone());
        assert_eq!(
            basis(&[ct]).is_some(),
            want,
            "team {team:?} participant {participant:?}"
        );
    }
}

#[test]
fn encounter_status_and_window() {
    let ongoing = json!({"start": "2024-06-14"});
    let ended = |end: &str| json!({"start": "2020-01-01", "end": end});
    let cases = [
        ("in-progress", ongoing.clone(), true),
        // In progress counts as ongoing even if an end was recorded long ago.
        ("in-progress", ended("2023-01-01"), true),
        ("finished", ongoing.clone(), true),
        ("finished", ended("2024-06-10"), true),
        ("finished", ended("2024-05-20"), true),
        ("finished", ended("2024-05-14"), false),
        // "2024-05" ends at the end of May, so the 30-day window lasts into June.
        ("finished", ended("2024-05"), true),
        ("finished", ended("2024-04"), false),
        ("planned", json!({"start": "2024-07-01"}), true),
        ("arrived", ongoing.clone(), true),
        ("triaged", ongoing.clone(), true),
        ("onleave", ongoing.clone(), true),
        ("cancelled", ongoing.clone(), false),
        ("entered-in-error", ongoing.clone(), false),
        ("unknown", ongoing.clone(), false),
        ("finished", ended("2024-06-31"), false),
    ];
    for (status, period, want) in cases {
        let enc = encounter("pat-a", status, DR_A, period.clone());
        let got = basis(&[enc]);
        assert_eq!(got.is_some(), want, "{status} {period}");
        if want {
            assert_eq!(got, Some(CareBasis::Encounter));
        }
    }
    // No period at all: FHIR allows it, and an encounter without an end is ongoing.
    let mut no_period = encounter("pat-a", "finished", DR_A, json!({}));
    no_period.as_object_mut().unwrap().remove("period");
    assert_eq!(basis(&[no_period]), Some(CareBasis::Encounter));
    // Other patient's encounter; a participant that is not exactly Practitioner/<id>.
    assert_eq!(
        basis(&[encounter("pat-b", "in-progress", DR_A, ongoing.clone())]),
        None
    );
    assert_eq!(
        basis(&[encounter(
            "pat-a",
            "in-progress",
            "https://h.example/fhir/Practitioner/dr-a",
            ongoing
        )]),
        None
    );
}

#[test]
fn encounter_window_boundary_and_configured_window() {
    let enc = encounter(
        "pat-a",
        "finished",
        DR_A,
        json!({"start": "2024-05-01T09:00:00Z", "end": "2024-05-01T10:00:00Z"}),
    );
    // The end value covers its whole second: the window runs from 10:00:01.
    let end = at("2024-05-01T10:00:01Z");
    assert_eq!(
        basis_at(std::slice::from_ref(&enc), end + DEFAULT_CARE_WINDOW_MS - 1),
        Some(CareBasis::Encounter)
    );
    assert_eq!(
        basis_at(std::slice::from_ref(&enc), end + DEFAULT_CARE_WINDOW_MS),
        None
    );

    // The window is the context's: 7 days denies an encounter that ended 10 days ago.
    let recent = encounter("pat-a", "finished", DR_A, json!({"end": "2024-06-05"}));
    let read = |ctx: &Context| {
        check(
            &physician("dr-a"),
            Action::Read,
            &in_pat("Observation", "pat-a"),
            ctx,
        )
    };
    let ctx = ctx_with("pat-a", std::slice::from_ref(&recent));
    assert_eq!(outcome(read(&ctx)), (true, "in-care:encounter"));
    assert_eq!(
        outcome(read(&ctx.with_care_window_ms(7 * DAY))),
        (false, "not-in-care")
    );
    let ctx = ctx_with("pat-a", &[recent]).with_care_window_ms(-5);
    assert_eq!(ctx.care_window_ms(), 0);
}

#[test]
fn appointments() {
    let app = |status: &str, start: &str, end: &str| appointment("pat-a", status, DR_A, start, end);
    let cases = [
        (
            app("booked", "2024-06-20T09:00:00Z", "2024-06-20T09:30:00Z"),
            true,
        ),
        (
            app("booked", "2025-01-20T09:00:00Z", "2025-01-20T09:30:00Z"),
            true,
        ),
        (
            app("fulfilled", "2024-06-01T09:00:00Z", "2024-06-01T09:30:00Z"),
            true,
        ),
        (
            app("arrived", "2024-06-15T11:00:00Z", "2024-06-15T11:30:00Z"),
            true,
        ),
        (
            app("checked-in", "2024-06-15T11:00:00Z", "2024-06-15T11:30:00Z"),
            true,
        ),
        (
            app("fulfilled", "2024-05-01T09:00:00Z", "2024-05-01T09:30:00Z"),
            false,
        ),
        (
            app("cancelled", "2024-06-20T09:00:00Z", "2024-06-20T09:30:00Z"),
            false,
        ),
        (
            app("noshow", "2024-06-14T09:00:00Z", "2024-06-14T09:30:00Z"),
            false,
        ),
        (
            app(
                "entered-in-error",
                "2024-06-20T09:00:00Z",
                "2024-06-20T09:30:00Z",
            ),
            false,
        ),
        (
            app("proposed", "2024-06-20T09:00:00Z", "2024-06-20T09:30:00Z"),
            false,
        ),
        (
            app("waitlist", "2024-06-20T09:00:00Z", "2024-06-20T09:30:00Z"),
            false,
        ),
        (app("booked", "2024-06-20T09:00:00Z", "tomorrow"), false),
    ];
    for (resource, want) in cases {
        let got = basis(std::slice::from_ref(&resource));
        assert_eq!(got.is_some(), want, "{resource}");
        if want {
            assert_eq!(got, Some(CareBasis::Appointment));
        }
    }

    let mut declined = app("booked", "2024-06-20T09:00:00Z", "2024-06-20T09:30:00Z");
    declined["participant"][1]["status"] = json!("declined");
    assert_eq!(basis(&[declined]), None);

    // Not this patient's appointment.
    let other = appointment(
        "pat-b",
        "booked",
        DR_A,
        "2024-06-20T09:00:00Z",
        "2024-06-20T09:30:00Z",
    );
    assert_eq!(basis(&[other]), None);

    // Booked without times is malformed (FHIR app-3); start alone stands in for the end.
    let mut untimed = app("booked", "x", "y");
    untimed.as_object_mut().unwrap().remove("start");
    untimed.as_object_mut().unwrap().remove("end");
    assert_eq!(basis(&[untimed.clone()]), None);
    untimed["start"] = json!("2024-06-01T09:00:00Z");
    assert_eq!(basis(&[untimed]), Some(CareBasis::Appointment));
}

fn consent_with(provision: Value) -> Value {
    let mut c = consent("pat-a", "active", DR_A);
    c["provision"] = provision;
    c
}

#[test]
fn consents() {
    assert_eq!(
        basis(&[consent("pat-a", "active", DR_A)]),
        Some(CareBasis::Consent)
    );
    let actor = json!([{ "reference": reference(DR_A) }]);
    let cases = [
        (json!({ "actor": actor }), true),
        (
            json!({ "type": "permit", "actor": actor, "period": {"end": "2024-06"} }),
            true,
        ),
        (
            json!({ "type": "permit", "actor": actor, "period": {"start": "2024-06-15"} }),
            true,
        ),
        (
            json!({ "type": "permit", "actor": actor, "period": {"end": "2024-06-14"} }),
            false,
        ),
        (
            json!({ "type": "permit", "actor": actor, "period": {"start": "2024-06-16"} }),
            false,
        ),
        (
            json!({ "type": "permit", "actor": actor, "period": {"end": "06/2025"} }),
            false,
        ),
        (json!({ "type": "deny", "actor": actor }), false),
        (json!({ "type": "Permit", "actor": actor }), false),
        (json!({ "type": "permit" }), false),
        (
            json!({ "type": "permit", "actor": actor, "class": [{"code": "Observation"}] }),
            false,
        ),
        (
            json!({ "type": "permit", "actor": actor, "provision": [{"type": "deny"}] }),
            false,
        ),
        (
            json!({ "type": "permit", "actor": actor, "action": [{"text": "collect"}] }),
            false,
        ),
    ];
    for (provision, want) in cases {
        let got = basis(&[consent_with(provision.clone())]);
        assert_eq!(got.is_some(), want, "{provision}");
    }
    for status in [
        "inactive",
        "rejected",
        "entered-in-error",
        "draft",
        "proposed",
    ] {
        assert_eq!(basis(&[consent("pat-a", status, DR_A)]), None, "{status}");
    }
    // Another practitioner named, another patient's consent, a research consent.
    assert_eq!(
        basis(&[consent("pat-a", "active", "Practitioner/dr-b")]),
        None
    );
    assert_eq!(basis(&[consent("pat-b", "active", DR_A)]), None);
    let mut research = consent("pat-a", "active", DR_A);
    research["scope"] = json!({"coding": [{"code": "research"}]});
    assert_eq!(basis(&[research]), None);
}

#[test]
fn consent_revocation_takes_effect_immediately() {
    let read = |resources: &[Value]| {
        check(
            &physician("dr-a"),
            Action::Read,
            &in_pat("Observation", "pat-a"),
            &ctx_with("pat-a", resources),
        )
    };
    let active = read(&[consent("pat-a", "active", DR_A)]);
    assert_eq!(outcome(active), (true, "consent"));
    assert!(!active.break_glass_used());
    let revoked = read(&[consent("pat-a", "inactive", DR_A)]);
    assert_eq!(outcome(revoked), (false, "not-in-care"));
    assert!(revoked.break_glass_available());
}

#[test]
fn consent_cannot_be_turned_into_lasting_access() {
    let ctx = ctx_with("pat-a", &[consent("pat-a", "active", DR_A)]);
    let dr = physician("dr-a");
    let on = |action, rt| outcome(check(&dr, action, &in_pat(rt, "pat-a"), &ctx));
    assert_eq!(on(Action::Create, "Observation"), (true, "consent"));
    assert_eq!(on(Action::Update, "Condition"), (true, "consent"));
    for rt in ["CareTeam", "Encounter", "Appointment"] {
        assert_eq!(
            on(Action::Create, rt),
            (false, "care-relationship-required"),
            "{rt}"
        );
        assert_eq!(
            on(Action::Update, rt),
            (false, "care-relationship-required"),
            "{rt}"
        );
    }
    assert_eq!(
        on(Action::Delete, "Observation"),
        (false, "care-relationship-required")
    );
    assert_eq!(
        outcome(check(
            &dr,
            Action::Update,
            &medvault_policy::Target::patient(pat("pat-a")),
            &ctx
        )),
        (false, "care-relationship-required")
    );
}

#[test]
fn strongest_basis_is_reported() {
    let resources = [
        consent("pat-a", "active", DR_A),
        appointment(
            "pat-a",
            "booked",
            DR_A,
            "2024-06-20T09:00:00Z",
            "2024-06-20T09:30:00Z",
        ),
        encounter("pat-a", "in-progress", DR_A, json!({"start": "2024-06-15"})),
        care_team("pat-a", "active", DR_A),
        patient_with_gp("pat-a", DR_A),
    ];
    for n in (1..=resources.len()).rev() {
        let want = [
            CareBasis::Consent,
            CareBasis::Appointment,
            CareBasis::Encounter,
            CareBasis::CareTeam,
            CareBasis::GeneralPractitioner,
        ][n - 1];
        assert_eq!(basis(&resources[..n]), Some(want));
    }
}

/// References that are not exactly `Practitioner/<id>` grant nothing, wherever they appear.
#[test]
fn malformed_references_grant_nothing() {
    let bad: [Value; 16] = [
        json!("Practitioner/dr-a "),
        json!(" Practitioner/dr-a"),
        json!("Practitioner/dr_a"),
        json!("Practitioner/"),
        json!("Practitioner//dr-a"),
        json!("Practitioner/dr-a/_history/2"),
        json!("https://h.example/fhir/Practitioner/dr-a"),
        json!("practitioner/dr-a"),
        json!("PractitionerRole/dr-a"),
        json!("#dr-a"),
        json!("urn:uuid:5b9a0c1e-0000-4000-8000-000000000000"),
        json!("dr-a"),
        json!(42),
        json!({"reference": "Practitioner/dr-a"}),
        json!(["Practitioner/dr-a"]),
        json!(null),
    ];
    for r in bad {
        let as_ref = json!({ "reference": r });
        let mut gp = patient_with_gp("pat-a", "x");
        gp["generalPractitioner"][0] = as_ref.clone();
        let mut ct = care_team("pat-a", "active", "x");
        ct["participant"][0]["member"] = as_ref.clone();
        let mut enc = encounter("pat-a", "in-progress", "x", json!({"start": "2024-06-15"}));
        enc["participant"][0]["individual"] = as_ref.clone();
        let mut app = appointment(
            "pat-a",
            "booked",
            "x",
            "2024-06-20T09:00:00Z",
            "2024-06-20T09:30:00Z",
        );
        app["participant"][1]["actor"] = as_ref.clone();
        let mut con = consent("pat-a", "active", "x");
        con["provision"]["actor"][0]["reference"] = as_ref.clone();
        for resource in [gp, ct, enc, app, con] {
            assert_eq!(basis(std::slice::from_ref(&resource)), None, "{resource}");
        }
    }
}

/// A resource whose patient reference is not exactly `Patient/<id>` is not that patient's.
#[test]
fn malformed_patient_references_grant_nothing() {
    let bad = [
        "Patient/pat-a ",
        "Patient/pat-a/_history/1",
        "https://h.example/fhir/Patient/pat-a",
        "patient/pat-a",
        "Patient/pat_a",
        "Group/pat-a",
    ];
    for r in bad {
        let mut ct = care_team("pat-a", "active", DR_A);
        ct["subject"] = reference(r);
        let mut enc = encounter("pat-a", "in-progress", DR_A, json!({"start": "2024-06-15"}));
        enc["subject"] = reference(r);
        let mut app = appointment(
            "pat-a",
            "booked",
            DR_A,
            "2024-06-20T09:00:00Z",
            "2024-06-20T09:30:00Z",
        );
        app["participant"][0]["actor"] = reference(r);
        let mut con = consent("pat-a", "active", DR_A);
        con["patient"] = reference(r);
        for resource in [ct, enc, app, con] {
            assert_eq!(basis(std::slice::from_ref(&resource)), None, "{resource}");
        }
    }
}

#[test]
fn junk_resources_are_ignored() {
    let junk = [
        json!(null),
        json!("Patient"),
        json!([patient_with_gp("pat-a", DR_A)]),
        json!({"resourceType": 7}),
        json!({"resourceType": "Patient"}),
        json!({"resourceType": "CareTeam", "status": "active", "participant": "all"}),
        json!({"resourceType": "Encounter", "status": "in-progress", "subject": "Patient/pat-a"}),
        json!({"resourceType": "Consent", "status": "active", "patient": {"reference": "Patient/pat-a"}, "provision": []}),
        json!({"resourceType": "Observation", "performer": [{"reference": DR_A}]}),
    ];
    assert_eq!(basis(&junk), None);
    // Facts extracted for one patient never apply to another.
    let facts = CareFacts::from_resources(&pat("pat-b"), &[patient_with_gp("pat-a", DR_A)]);
    assert_eq!(
        facts.basis_for(&pr("dr-a"), NOW, DEFAULT_CARE_WINDOW_MS),
        None
    );
}
