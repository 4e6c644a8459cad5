//! Property tests: separation of duties, compartment confinement, and decision invariants
//! over random subjects, targets and contexts (including random care facts and grants).

use medvault_policy::{
    decide, AccountId, Action, BreakGlassGrant, CareFacts, Context, Identity, Role, Subject,
    Target, DEFAULT_CARE_WINDOW_MS,
};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::{org, pat, pr, reason, reference, rid, NOW};

const PATIENTS: [&str; 3] = ["pat-a", "pat-b", "pat-c"];
const PRACTITIONERS: [&str; 3] = ["dr-a", "dr-b", "nurse-a"];
const LABS: [&str; 2] = ["lab-1", "lab-2"];
const TYPES: [&str; 21] = [
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
    "Organization",
    "Location",
    "Schedule",
    "Slot",
];
const DIRECTORY: [&str; 5] = [
    "Practitioner",
    "Organization",
    "Location",
    "Schedule",
    "Slot",
];
const STATUSES: [&str; 8] = [
    "active",
    "inactive",
    "in-progress",
    "finished",
    "booked",
    "cancelled",
    "completed",
    "entered-in-error",
];
const TIMES: [&str; 5] = [
    "2024-05",
    "2024-06-15",
    "2023",
    "2024-06-15T12:00:00Z",
    "bad",
];

fn one_of<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = T> {
    prop::sample::select(items)
}

fn subject() -> impl Strategy<Value = Subject> {
    (
        0usize..Role::ALL.len(),
        one_of(&PRACTITIONERS),
        one_of(&PATIENTS),
        one_of(&LABS),
        prop::bool::ANY,
    )
        .prop_map(|(role, practitioner, patient, lab, linked)| {
            let practitioner = pr(practitioner);
            let identity = match Role::ALL[role] {
                Role::Admin => Identity::Admin {
                    practitioner: linked.then_some(practitioner),
                },
                Role::Auditor => Identity::Auditor {
                    practitioner: linked.then_some(practitioner),
                },
                Role::Physician => Identity::Physician { practitioner },
                Role::Nurse => Identity::Nurse { practitioner },
                Role::Receptionist => Identity::Receptionist { practitioner },
                Role::LabTechnician => Identity::LabTechnician {
                    practitioner,
                    lab: org(lab),
                },
                Role::Patient => Identity::Patient {
                    patient: pat(patient),
                },
            };
            Subject::new(AccountId::new("acct-1").unwrap(), identity)
        })
}

fn target() -> impl Strategy<Value = Target> {
    (
        prop_oneof![one_of(&TYPES).prop_map(str::to_owned), "[A-Z][a-z]{0,8}"],
        prop::option::of(one_of(&PATIENTS)),
        prop::option::of(prop_oneof![one_of(&PATIENTS), Just("sr-1"), Just("sr-2")]),
        prop::option::of(prop_oneof![Just("sr-1"), Just("sr-2")]),
    )
        .prop_map(|(rt, compartment, id, based_on)| {
            let mut t = Target::new(&rt, compartment.map(pat)).unwrap();
            if let Some(id) = id {
                t = t.with_id(rid(id));
            }
            if let Some(sr) = based_on {
                t = t.with_based_on(rid(sr));
            }
            t
        })
}

/// A random resource that may or may not establish a relationship for anyone.
fn resource() -> impl Strategy<Value = Value> {
    (
        0usize..6,
        one_of(&PATIENTS),
        one_of(&PRACTITIONERS),
        one_of(&STATUSES),
        one_of(&TIMES),
        prop_oneof![Just("sr-1"), Just("sr-2")],
        one_of(&LABS),
    )
        .prop_map(|(kind, patient, practitioner, status, time, sr, lab)| {
            let subject = reference(&format!("Patient/{patient}"));
            let who = reference(&format!("Practitioner/{practitioner}"));
            match kind {
                0 => json!({"resourceType": "Patient", "id": patient, "generalPractitioner": [who]}),
                1 => json!({"resourceType": "CareTeam", "status": status, "subject": subject,
                            "participant": [{"member": who, "period": {"end": time}}]}),
                2 => json!({"resourceType": "Encounter", "status": status, "subject": subject,
                            "participant": [{"individual": who}], "period": {"end": time}}),
                3 => json!({"resourceType": "Appointment", "status": status, "end": time,
                            "participant": [{"actor": subject}, {"actor": who}]}),
                4 => json!({"resourceType": "Consent", "status": status, "patient": subject,
                            "provision": {"actor": [{"reference": who}], "period": {"start": time}}}),
                _ => json!({"resourceType": "ServiceRequest", "id": sr, "status": status,
                            "intent": "order", "subject": subject,
                            "performer": [reference(&format!("Organization/{lab}"))]}),
            }
        })
}

fn context() -> impl Strategy<Value = Context> {
    (
        NOW - 400 * crate::DAY..NOW + 400 * crate::DAY,
        prop::collection::vec(resource(), 0..12),
        prop::collection::vec(
            (
                one_of(&PRACTITIONERS),
                one_of(&PATIENTS),
                -7_200_000i64..7_200_000,
            ),
            0..3,
        ),
        prop::bool::ANY,
        0i64..2 * DEFAULT_CARE_WINDOW_MS,
    )
        .prop_map(|(now, resources, grants, with_reason, window)| {
            let mut ctx = Context::new(now).with_care_window_ms(window);
            for p in PATIENTS {
                ctx = ctx.with_facts(CareFacts::from_resources(&pat(p), &resources));
            }
            for (practitioner, patient, offset) in grants {
                ctx = ctx.with_grant(BreakGlassGrant::new(
                    pr(practitioner),
                    pat(patient),
                    now + offset,
                ));
            }
            if with_reason {
                ctx = ctx.with_break_glass_reason(reason("emergency"));
            }
            ctx
        })
}

fn action() -> impl Strategy<Value = Action> {
    one_of(&Action::ALL)
}

fn is_directory(t: &Target) -> bool {
    DIRECTORY.contains(&t.resource_type())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn decisions_are_consistent(s in subject(), a in action(), t in target(), ctx in context()) {
        let d = decide(&s, a, &t, &ctx);
        prop_assert_eq!(d.allowed(), d.reason().allows());
        prop_assert!(!(d.allowed() && d.break_glass_available()));
        prop_assert!(!d.break_glass_used() || d.allowed());
        // Only clinicians ever get break-glass, used or offered.
        if d.break_glass_used() || d.break_glass_available() {
            prop_assert!(matches!(s.role(), Role::Physician | Role::Nurse));
        }
        prop_assert_eq!(d, decide(&s, a, &t, &ctx));
    }

    /// Separation of duties: admins and auditors never get anything clinical.
    #[test]
    fn admin_and_auditor_never_touch_clinical_data(
        s in subject(), a in action(), t in target(), ctx in context(),
    ) {
        let d = decide(&s, a, &t, &ctx);
        match s.role() {
            Role::Admin => prop_assert!(
                !d.allowed() || a == Action::ManageAccounts || (a.is_fhir() && is_directory(&t)),
                "{:?} {:?} {:?}", a, t, d
            ),
            Role::Auditor => prop_assert!(
                !d.allowed() || a == Action::ReadLedger || (a.is_read() && is_directory(&t)),
                "{:?} {:?} {:?}", a, t, d
            ),
            _ => {}
        }
        if matches!(s.role(), Role::Admin | Role::Auditor) && d.allowed() {
            prop_assert!(t.compartment().is_none() || !a.is_fhir());
        }
    }

    /// A patient subject is confined to their own compartment and to reading (plus Consent).
    #[test]
    fn patients_stay_in_their_compartment(
        s in subject(), a in action(), t in target(), ctx in context(),
    ) {
        let Some(me) = s.patient() else { return Ok(()); };
        let d = decide(&s, a, &t, &ctx);
        if d.allowed() {
            prop_assert_eq!(t.compartment(), Some(me));
            prop_assert!(
                a.is_read() || a == Action::ReadOwnAudit || t.resource_type() == "Consent",
                "{:?} {:?}", a, t
            );
        }
    }

    /// Clinicians reach a patient's data only through a relationship or an active grant.
    #[test]
    fn clinicians_need_a_basis(s in subject(), a in action(), t in target(), ctx in context()) {
        if !matches!(s.role(), Role::Physician | Role::Nurse) || !a.is_fhir() {
            return Ok(());
        }
        let (Some(me), Some(patient)) = (s.practitioner(), t.compartment()) else {
            return Ok(());
        };
        let d = decide(&s, a, &t, &ctx);
        if d.allowed() {
            let basis = ctx
                .facts_for(patient)
                .and_then(|f| f.basis_for(me, ctx.now_ms(), ctx.care_window_ms()));
            let granted = ctx.has_active_grant(me, patient);
            prop_assert!(basis.is_some() || granted, "{:?} {:?} {:?}", a, t, d);
            prop_assert_eq!(d.break_glass_used(), basis.is_none());
        }
    }

    /// Lab technicians write only results tied to an order of theirs, in that order's patient.
    #[test]
    fn lab_writes_need_their_order(s in subject(), a in action(), t in target(), ctx in context()) {
        let Some(lab) = s.lab() else { return Ok(()); };
        let d = decide(&s, a, &t, &ctx);
        if d.allowed() && !is_directory(&t) {
            prop_assert!(matches!(a, Action::Create | Action::Update | Action::Read | Action::Search | Action::History));
            if matches!(a, Action::Create | Action::Update) {
                let order = t.based_on().and_then(|sr| ctx.facts_for(t.compartment()?)?.lab_order(sr));
                prop_assert!(order.is_some_and(|o| o.is_addressed_to(lab)), "{:?} {:?}", a, t);
            }
        }
    }
}
