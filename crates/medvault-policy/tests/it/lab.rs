//! Tests of the lab technician rules: results only for orders addressed to the lab.

use medvault_policy::{Action, CareFacts, Context, OrderStatus, Target};
use serde_json::Value;

use crate::{check, ctx_with, in_pat, lab_tech, outcome, pat, rid, service_request, NOW};

const LAB: &str = "Organization/lab-1";

fn result(rt: &str, patient: &str, order: &str) -> Target {
    in_pat(rt, patient).with_based_on(rid(order))
}

fn post(target: &Target, ctx: &Context) -> (bool, &'static str) {
    outcome(check(&lab_tech("lab-1"), Action::Create, target, ctx))
}

#[test]
fn results_for_orders_addressed_to_the_lab() {
    let ctx = ctx_with("pat-a", &[service_request("sr-1", "pat-a", "active", LAB)]);
    assert_eq!(
        post(&result("Observation", "pat-a", "sr-1"), &ctx),
        (true, "lab-order")
    );
    assert_eq!(
        post(&result("DiagnosticReport", "pat-a", "sr-1"), &ctx),
        (true, "lab-order")
    );
    assert!(!check(
        &lab_tech("lab-1"),
        Action::Create,
        &result("Observation", "pat-a", "sr-1"),
        &ctx
    )
    .break_glass_used());
    // Unknown order id, no basedOn, no compartment.
    assert_eq!(
        post(&result("Observation", "pat-a", "sr-2"), &ctx),
        (false, "no-lab-order")
    );
    assert_eq!(
        post(&in_pat("Observation", "pat-a"), &ctx),
        (false, "no-lab-order")
    );
    assert_eq!(
        post(
            &Target::of_type("Observation")
                .unwrap()
                .with_based_on(rid("sr-1")),
            &ctx
        ),
        (false, "no-compartment")
    );
    // Another lab's technician.
    let other = check(
        &lab_tech("lab-2"),
        Action::Create,
        &result("Observation", "pat-a", "sr-1"),
        &ctx,
    );
    assert_eq!(outcome(other), (false, "no-lab-order"));
}

#[test]
fn order_for_another_lab_or_patient_is_refused() {
    let to_other_lab = ctx_with(
        "pat-a",
        &[service_request(
            "sr-1",
            "pat-a",
            "active",
            "Organization/lab-2",
        )],
    );
    assert_eq!(
        post(&result("Observation", "pat-a", "sr-1"), &to_other_lab),
        (false, "no-lab-order")
    );

    // The order belongs to pat-b: results cannot be posted into pat-a's compartment...
    let b_facts = CareFacts::from_resources(
        &pat("pat-b"),
        &[service_request("sr-1", "pat-b", "active", LAB)],
    );
    let ctx = Context::new(NOW).with_facts(b_facts);
    assert_eq!(
        post(&result("Observation", "pat-a", "sr-1"), &ctx),
        (false, "no-lab-order")
    );
    // ...nor does pat-a's extraction accept a ServiceRequest about pat-b.
    let mixed = ctx_with("pat-a", &[service_request("sr-1", "pat-b", "active", LAB)]);
    assert_eq!(
        post(&result("Observation", "pat-a", "sr-1"), &mixed),
        (false, "no-lab-order")
    );
    // It does work in pat-b's own compartment.
    assert_eq!(
        post(&result("Observation", "pat-b", "sr-1"), &ctx),
        (true, "lab-order")
    );
}

#[test]
fn order_status_intent_and_shape() {
    let with = |sr: Value| ctx_with("pat-a", &[sr]);
    let target = result("Observation", "pat-a", "sr-1");
    let lab = lab_tech("lab-1");
    let cases = [
        ("active", true, true, true),
        ("completed", false, true, true),
        ("on-hold", false, false, true),
        ("revoked", false, false, true),
        ("draft", false, false, false),
        ("entered-in-error", false, false, false),
        ("Active", false, false, false),
    ];
    for (status, create, update, read) in cases {
        let ctx = with(service_request("sr-1", "pat-a", status, LAB));
        assert_eq!(
            check(&lab, Action::Create, &target, &ctx).allowed(),
            create,
            "{status}"
        );
        assert_eq!(
            check(&lab, Action::Update, &target, &ctx).allowed(),
            update,
            "{status}"
        );
        let sr = in_pat("ServiceRequest", "pat-a").with_id(rid("sr-1"));
        assert_eq!(
            check(&lab, Action::Read, &sr, &ctx).allowed(),
            read,
            "{status}"
        );
    }
    let facts = CareFacts::from_resources(
        &pat("pat-a"),
        &[service_request("sr-1", "pat-a", "completed", LAB)],
    );
    assert_eq!(
        facts.lab_order(&rid("sr-1")).unwrap().status(),
        OrderStatus::Completed
    );

    let mut proposal = service_request("sr-1", "pat-a", "active", LAB);
    proposal["intent"] = "proposal".into();
    assert_eq!(post(&target, &with(proposal)), (false, "no-lab-order"));
    for performer in [
        "https://h.example/fhir/Organization/lab-1",
        "Organization/lab-1/_history/1",
        "Practitioner/lab-1",
        "organization/lab-1",
    ] {
        let sr = service_request("sr-1", "pat-a", "active", performer);
        assert_eq!(
            post(&target, &with(sr)),
            (false, "no-lab-order"),
            "{performer}"
        );
    }
    // Two resources claiming the same order id: trust neither.
    let ctx = ctx_with(
        "pat-a",
        &[
            service_request("sr-1", "pat-a", "active", LAB),
            service_request("sr-1", "pat-a", "revoked", "Organization/lab-2"),
        ],
    );
    assert_eq!(post(&target, &ctx), (false, "no-lab-order"));
}

#[test]
fn lab_reads_only_its_orders() {
    let ctx = ctx_with(
        "pat-a",
        &[
            service_request("sr-1", "pat-a", "active", LAB),
            service_request("sr-2", "pat-a", "active", "Organization/lab-2"),
        ],
    );
    let lab = lab_tech("lab-1");
    let read = |target: Target| outcome(check(&lab, Action::Read, &target, &ctx));
    assert_eq!(
        read(in_pat("ServiceRequest", "pat-a").with_id(rid("sr-1"))),
        (true, "lab-order")
    );
    assert_eq!(
        read(in_pat("ServiceRequest", "pat-a").with_id(rid("sr-2"))),
        (false, "no-lab-order")
    );
    assert_eq!(
        read(in_pat("ServiceRequest", "pat-a")),
        (false, "no-lab-order")
    );
    // No chart reads, not even of results for its own order.
    assert_eq!(
        read(result("Observation", "pat-a", "sr-1")),
        (false, "role-forbids-action")
    );
    assert_eq!(
        read(result("DiagnosticReport", "pat-a", "sr-1")),
        (false, "role-forbids-action")
    );
    for rt in [
        "Condition",
        "Encounter",
        "MedicationRequest",
        "Consent",
        "Appointment",
    ] {
        assert_eq!(
            read(in_pat(rt, "pat-a")),
            (false, "role-forbids-resource"),
            "{rt}"
        );
    }
    assert_eq!(
        read(Target::patient(pat("pat-a"))),
        (false, "role-forbids-resource")
    );
    assert_eq!(
        read(Target::of_type("Organization").unwrap()),
        (true, "staff-directory")
    );
    // Results of other kinds cannot be posted even with a valid order.
    let condition = in_pat("Condition", "pat-a").with_based_on(rid("sr-1"));
    assert_eq!(post(&condition, &ctx), (false, "role-forbids-resource"));
    // The worklist search is allowed, filtered by the read rule.
    let search = check(
        &lab,
        Action::Search,
        &Target::of_type("ServiceRequest").unwrap(),
        &ctx,
    );
    assert_eq!(outcome(search), (true, "search-filtered"));
    let delete = check(
        &lab,
        Action::Delete,
        &result("Observation", "pat-a", "sr-1"),
        &ctx,
    );
    assert_eq!(outcome(delete), (false, "role-forbids-action"));
}
