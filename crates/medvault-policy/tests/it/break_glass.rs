//! Tests of break-glass: invocation, reason requirement, flagged access, expiry, and who may use it.

use medvault_policy::{
    Action, BreakGlassGrant, BreakGlassReason, Context, PolicyError, Target,
    DEFAULT_BREAK_GLASS_MS, MAX_BREAK_GLASS_REASON_LEN,
};

use crate::{
    admin, auditor, check, ctx_with, in_pat, lab_tech, nurse, outcome, pat, patient_subject,
    patient_with_gp, physician, pr, reason, receptionist, NOW,
};

fn grant(practitioner: &str, patient: &str) -> BreakGlassGrant {
    BreakGlassGrant::issued_at(pr(practitioner), pat(patient), NOW)
}

/// pat-b's facts exist (GP dr-other) but name neither dr-a nor nurse-a.
fn unrelated() -> Context {
    ctx_with(
        "pat-b",
        &[patient_with_gp("pat-b", "Practitioner/dr-other")],
    )
}

#[test]
fn invocation_needs_a_reason_and_a_patient() {
    let dr = physician("dr-a");
    let invoke = |ctx: &Context, target: &Target| check(&dr, Action::BreakGlass, target, ctx);
    let no_reason = invoke(&unrelated(), &Target::patient(pat("pat-b")));
    assert_eq!(outcome(no_reason), (false, "break-glass-reason-required"));

    let ctx = unrelated().with_break_glass_reason(reason("  unconscious in ER  "));
    assert_eq!(
        ctx.break_glass_reason().unwrap().as_str(),
        "unconscious in ER"
    );
    let invoked = invoke(&ctx, &Target::patient(pat("pat-b")));
    assert_eq!(outcome(invoked), (true, "break-glass-invoked"));
    assert!(invoked.break_glass_used());
    assert!(!invoked.break_glass_available());

    let nowhere = invoke(&ctx, &Target::of_type("Patient").unwrap());
    assert_eq!(outcome(nowhere), (false, "no-compartment"));

    // Allowed even for a patient the clinician is already in care of.
    let gp_ctx = ctx_with("pat-a", &[patient_with_gp("pat-a", "Practitioner/dr-a")])
        .with_break_glass_reason(reason("second opinion"));
    assert!(invoke(&gp_ctx, &Target::patient(pat("pat-a"))).allowed());
    assert!(check(
        &nurse("nurse-a"),
        Action::BreakGlass,
        &Target::patient(pat("pat-b")),
        &ctx
    )
    .allowed());
}

#[test]
fn reasons_are_validated() {
    assert_eq!(
        BreakGlassReason::new(""),
        Err(PolicyError::InvalidBreakGlassReason("empty"))
    );
    assert_eq!(
        BreakGlassReason::new(" \t\n "),
        Err(PolicyError::InvalidBreakGlassReason("empty"))
    );
    assert_eq!(
        BreakGlassReason::new("cardiac\narrest"),
        Err(PolicyError::InvalidBreakGlassReason("control character"))
    );
    assert_eq!(
        BreakGlassReason::new(&"x".repeat(MAX_BREAK_GLASS_REASON_LEN + 1)),
        Err(PolicyError::InvalidBreakGlassReason("too long"))
    );
    assert!(BreakGlassReason::new(&"x".repeat(MAX_BREAK_GLASS_REASON_LEN)).is_ok());
}

#[test]
fn denied_read_offers_break_glass_then_grant_allows_flagged() {
    let dr = physician("dr-a");
    let obs = in_pat("Observation", "pat-b");
    for action in [Action::Read, Action::Search, Action::History] {
        let d = check(&dr, action, &obs, &unrelated());
        assert_eq!(outcome(d), (false, "not-in-care"), "{action}");
        assert!(d.break_glass_available(), "{action}");
    }
    // Writes are denied without offering break-glass: it is for opening a chart.
    let d = check(&dr, Action::Create, &obs, &unrelated());
    assert_eq!(outcome(d), (false, "not-in-care"));
    assert!(!d.break_glass_available());

    let ctx = unrelated().with_grant(grant("dr-a", "pat-b"));
    for action in [Action::Read, Action::Search, Action::History] {
        let d = check(&dr, action, &obs, &ctx);
        assert_eq!(outcome(d), (true, "break-glass"), "{action}");
        assert!(d.break_glass_used(), "{action}");
        assert!(!d.break_glass_available(), "{action}");
    }
    // It opens the chart for reading only: writing still needs care or consent.
    for action in [Action::Create, Action::Update] {
        let d = check(&dr, action, &obs, &ctx);
        assert!(!d.allowed(), "{action}");
        assert!(!d.break_glass_used(), "{action}");
    }
    // Break-glass opens the chart; it does not create lasting relationships or delete.
    for rt in ["CareTeam", "Encounter", "Appointment"] {
        assert_eq!(
            outcome(check(&dr, Action::Create, &in_pat(rt, "pat-b"), &ctx)),
            (false, "care-relationship-required"),
            "{rt}"
        );
    }
    assert_eq!(
        outcome(check(&dr, Action::Delete, &obs, &ctx)),
        (false, "care-relationship-required")
    );
    assert_eq!(
        outcome(check(
            &dr,
            Action::Update,
            &Target::patient(pat("pat-b")),
            &ctx
        )),
        (false, "care-relationship-required")
    );
    // Role limits still apply under break-glass.
    let nurse_ctx = unrelated().with_grant(grant("nurse-a", "pat-b"));
    let n = nurse("nurse-a");
    assert_eq!(
        outcome(check(&n, Action::Read, &obs, &nurse_ctx)),
        (true, "break-glass")
    );
    assert_eq!(
        outcome(check(
            &n,
            Action::Create,
            &in_pat("MedicationRequest", "pat-b"),
            &nurse_ctx
        )),
        (false, "role-forbids-action")
    );
}

#[test]
fn grants_expire() {
    let dr = physician("dr-a");
    let obs = in_pat("Observation", "pat-b");
    let g = grant("dr-a", "pat-b");
    assert_eq!(g.expires_ms(), NOW + DEFAULT_BREAK_GLASS_MS);
    assert_eq!(DEFAULT_BREAK_GLASS_MS, 3_600_000);
    let at = |now: i64| {
        let ctx = Context::new(now)
            .with_facts(unrelated().facts_for(&pat("pat-b")).unwrap().clone())
            .with_grant(g.clone());
        check(&dr, Action::Read, &obs, &ctx)
    };
    assert_eq!(outcome(at(NOW)), (true, "break-glass"));
    assert_eq!(outcome(at(g.expires_ms() - 1)), (true, "break-glass"));
    let expired = at(g.expires_ms());
    assert_eq!(outcome(expired), (false, "not-in-care"));
    assert!(expired.break_glass_available());
    assert!(!expired.break_glass_used());
    assert_eq!(outcome(at(g.expires_ms() + 1)), (false, "not-in-care"));
}

#[test]
fn grants_are_bound_to_practitioner_and_patient() {
    let obs = in_pat("Observation", "pat-b");
    let dr = physician("dr-a");
    for g in [grant("dr-b", "pat-b"), grant("dr-a", "pat-c")] {
        let d = check(&dr, Action::Read, &obs, &unrelated().with_grant(g));
        assert_eq!(outcome(d), (false, "not-in-care"));
    }
}

#[test]
fn in_care_access_is_not_flagged_even_with_a_grant() {
    let ctx = ctx_with("pat-a", &[patient_with_gp("pat-a", "Practitioner/dr-a")])
        .with_grant(grant("dr-a", "pat-a"));
    let d = check(
        &physician("dr-a"),
        Action::Read,
        &in_pat("Observation", "pat-a"),
        &ctx,
    );
    assert_eq!(outcome(d), (true, "in-care:general-practitioner"));
    assert!(!d.break_glass_used());
}

#[test]
fn other_roles_cannot_break_glass() {
    let ctx = unrelated()
        .with_break_glass_reason(reason("emergency"))
        .with_grant(grant("desk-1", "pat-b"))
        .with_grant(grant("tech-1", "pat-b"))
        .with_grant(grant("aud-1", "pat-b"));
    let target = Target::patient(pat("pat-b"));
    let cases = [
        (receptionist(), "role-forbids-action"),
        (lab_tech("lab-1"), "role-forbids-action"),
        (patient_subject("pat-a"), "role-forbids-action"),
        (patient_subject("pat-b"), "role-forbids-action"),
        (auditor(), "ledger-only"),
        (admin(), "admin-no-clinical"),
    ];
    for (subject, want) in cases {
        let d = check(&subject, Action::BreakGlass, &target, &ctx);
        assert_eq!(outcome(d), (false, want), "{:?}", subject.role());
        assert!(!d.break_glass_used());
        if subject.patient() == Some(&pat("pat-b")) {
            continue; // pat-b reading their own chart is fine, and tested elsewhere.
        }
        // A grant naming their practitioner id does not open clinical data either.
        let read = check(
            &subject,
            Action::Read,
            &in_pat("Observation", "pat-b"),
            &ctx,
        );
        assert!(!read.allowed(), "{:?}", subject.role());
        assert!(!read.break_glass_available(), "{:?}", subject.role());
    }
}

#[test]
fn a_reason_s_debug_output_gives_only_its_length() {
    let r = BreakGlassReason::new("unconscious, suspected overdose").unwrap();
    assert_eq!(format!("{r:?}"), "BreakGlassReason(<31 bytes>)");
    // Display is how it reaches the ledger and the patient's view: the text itself.
    assert_eq!(r.to_string(), "unconscious, suspected overdose");
}
