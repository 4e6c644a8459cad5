//! The role × action × resource-type matrix, as one reviewable snapshot per area.
//!
//! Column pairs are (patient A, patient B): A is "related" to the subject (the physician is
//! A's GP, the nurse is on A's active CareTeam, the lab has an active order of A addressed
//! to it, the patient subject *is* A); B is an unrelated patient with their own GP, care team
//! and an order addressed to another lab. Cells: `Y` allowed, `G` allowed via break-glass,
//! `b` denied with break-glass available, `-` denied.

use std::fmt::Write;

use expect_test::expect;
use medvault_policy::{
    decide, may_search_type, Action, CareFacts, Context, Decision, Role, Subject, Target,
};

use crate::{
    admin, auditor, care_team, lab_tech, nurse, pat, patient_subject, patient_with_gp, physician,
    reason, receptionist, rid, service_request, NOW,
};

const TYPES: [&str; 18] = [
    "Patient",
    "Observation",
    "Condition",
    "Encounter",
    "CareTeam",
    "MedicationRequest",
    "DiagnosticReport",
    "ServiceRequest",
    "Communication",
    "Appointment",
    "Consent",
    "Practitioner",
    "Organization",
    "Location",
    "Schedule",
    "Slot",
    "AuditEvent",
    "Basic",
];

const FHIR_ACTIONS: [Action; 6] = [
    Action::Read,
    Action::Search,
    Action::Create,
    Action::Update,
    Action::Delete,
    Action::History,
];

const SYSTEM_ACTIONS: [Action; 4] = [
    Action::ReadLedger,
    Action::ReadOwnAudit,
    Action::ManageAccounts,
    Action::BreakGlass,
];

fn subject(role: Role) -> Subject {
    match role {
        Role::Admin => admin(),
        Role::Physician => physician("dr-a"),
        Role::Nurse => nurse("nurse-a"),
        Role::Receptionist => receptionist(),
        Role::LabTechnician => lab_tech("lab-1"),
        Role::Auditor => auditor(),
        Role::Patient => patient_subject("pat-a"),
    }
}

/// Facts for both patients and a break-glass reason, but no grants.
fn world() -> Context {
    let a = [
        patient_with_gp("pat-a", "Practitioner/dr-a"),
        care_team("pat-a", "active", "Practitioner/nurse-a"),
        service_request("sr-pat-a", "pat-a", "active", "Organization/lab-1"),
    ];
    let b = [
        patient_with_gp("pat-b", "Practitioner/dr-other"),
        care_team("pat-b", "active", "Practitioner/nurse-other"),
        service_request("sr-pat-b", "pat-b", "active", "Organization/lab-2"),
    ];
    Context::new(NOW)
        .with_facts(CareFacts::from_resources(&pat("pat-a"), &a))
        .with_facts(CareFacts::from_resources(&pat("pat-b"), &b))
        .with_break_glass_reason(reason("matrix"))
}

/// The target of `resource_type` for `patient`, as the server would build it.
fn target(resource_type: &str, patient: &str) -> Target {
    let order = rid(&format!("sr-{patient}"));
    match resource_type {
        "Practitioner" | "Organization" | "Location" | "Schedule" | "Slot" => {
            Target::of_type(resource_type).unwrap()
        }
        "Patient" => Target::patient(pat(patient)),
        "ServiceRequest" => Target::in_compartment(resource_type, pat(patient))
            .unwrap()
            .with_id(order),
        "Observation" | "DiagnosticReport" => Target::in_compartment(resource_type, pat(patient))
            .unwrap()
            .with_based_on(order),
        _ => Target::in_compartment(resource_type, pat(patient)).unwrap(),
    }
}

fn cell(d: Decision) -> char {
    match (d.allowed(), d.break_glass_used(), d.break_glass_available()) {
        (true, false, _) => 'Y',
        (true, true, _) => 'G',
        (false, _, true) => 'b',
        (false, _, false) => '-',
    }
}

fn pair(subject: &Subject, action: Action, a: &Target, b: &Target, ctx: &Context) -> String {
    let da = decide(subject, action, a, ctx);
    let db = decide(subject, action, b, ctx);
    // Every decision must be internally consistent, whatever the table says.
    for d in [da, db] {
        assert_eq!(d.allowed(), d.reason().allows(), "{d:?}");
        assert!(!(d.allowed() && d.break_glass_available()), "{d:?}");
        assert!(!d.break_glass_used() || d.allowed(), "{d:?}");
    }
    format!("{}{}", cell(da), cell(db))
}

fn fhir_matrix() -> String {
    let ctx = world();
    let mut out = String::new();
    for role in Role::ALL {
        let s = subject(role);
        writeln!(out, "{role}").unwrap();
        write!(out, "  {:<18}", "").unwrap();
        for action in FHIR_ACTIONS {
            write!(out, "{:<8}", action.as_str()).unwrap();
        }
        writeln!(out, "type-wide-search").unwrap();
        for rt in TYPES {
            write!(out, "  {rt:<18}").unwrap();
            for action in FHIR_ACTIONS {
                let cells = pair(&s, action, &target(rt, "pat-a"), &target(rt, "pat-b"), &ctx);
                write!(out, "{cells:<8}").unwrap();
            }
            let wide = if may_search_type(&s, rt) { "Y" } else { "-" };
            writeln!(out, "{wide}").unwrap();
        }
    }
    out
}

#[test]
fn fhir_interactions_by_role_and_type() {
    expect![[r#"
        admin
                            read    search  create  update  delete  history type-wide-search
          Patient           --      --      --      --      --      --      -
          Observation       --      --      --      --      --      --      -
          Condition         --      --      --      --      --      --      -
          Encounter         --      --      --      --      --      --      -
          CareTeam          --      --      --      --      --      --      -
          MedicationRequest --      --      --      --      --      --      -
          DiagnosticReport  --      --      --      --      --      --      -
          ServiceRequest    --      --      --      --      --      --      -
          Communication     --      --      --      --      --      --      -
          Appointment       --      --      --      --      --      --      -
          Consent           --      --      --      --      --      --      -
          Practitioner      YY      YY      YY      YY      --      YY      Y
          Organization      YY      YY      YY      YY      --      YY      Y
          Location          YY      YY      YY      YY      --      YY      Y
          Schedule          YY      YY      --      --      --      YY      Y
          Slot              YY      YY      --      --      --      YY      Y
          AuditEvent        --      --      --      --      --      --      -
          Basic             --      --      --      --      --      --      -
        physician
                            read    search  create  update  delete  history type-wide-search
          Patient           Yb      Yb      Y-      Y-      --      Yb      Y
          Observation       Yb      Yb      Y-      Y-      Y-      Yb      Y
          Condition         Yb      Yb      Y-      Y-      Y-      Yb      Y
          Encounter         Yb      Yb      Y-      Y-      Y-      Yb      Y
          CareTeam          Yb      Yb      Y-      Y-      Y-      Yb      Y
          MedicationRequest Yb      Yb      Y-      Y-      Y-      Yb      Y
          DiagnosticReport  Yb      Yb      Y-      Y-      Y-      Yb      Y
          ServiceRequest    Yb      Yb      Y-      Y-      Y-      Yb      Y
          Communication     Yb      Yb      Y-      Y-      Y-      Yb      Y
          Appointment       Yb      Yb      Y-      Y-      --      Yb      Y
          Consent           Yb      Yb      --      --      --      Yb      Y
          Practitioner      YY      YY      --      --      --      YY      Y
          Organization      YY      YY      --      --      --      YY      Y
          Location          YY      YY      --      --      --      YY      Y
          Schedule          YY      YY      --      --      --      YY      Y
          Slot              YY      YY      --      --      --      YY      Y
          AuditEvent        --      --      --      --      --      --      -
          Basic             --      --      --      --      --      --      -
        nurse
                            read    search  create  update  delete  history type-wide-search
          Patient           Yb      Yb      --      --      --      Yb      Y
          Observation       Yb      Yb      Y-      Y-      --      Yb      Y
          Condition         Yb      Yb      --      --      --      Yb      Y
          Encounter         Yb      Yb      --      --      --      Yb      Y
          CareTeam          Yb      Yb      --      --      --      Yb      Y
          MedicationRequest Yb      Yb      --      --      --      Yb      Y
          DiagnosticReport  Yb      Yb      --      --      --      Yb      Y
          ServiceRequest    Yb      Yb      --      --      --      Yb      Y
          Communication     Yb      Yb      --      --      --      Yb      Y
          Appointment       Yb      Yb      --      --      --      Yb      Y
          Consent           Yb      Yb      --      --      --      Yb      Y
          Practitioner      YY      YY      --      --      --      YY      Y
          Organization      YY      YY      --      --      --      YY      Y
          Location          YY      YY      --      --      --      YY      Y
          Schedule          YY      YY      --      --      --      YY      Y
          Slot              YY      YY      --      --      --      YY      Y
          AuditEvent        --      --      --      --      --      --      -
          Basic             --      --      --      --      --      --      -
        receptionist
                            read    search  create  update  delete  history type-wide-search
          Patient           YY      YY      YY      YY      --      YY      Y
          Observation       --      --      --      --      --      --      -
          Condition         --      --      --      --      --      --      -
          Encounter         --      --      --      --      --      --      -
          CareTeam          --      --      --      --      --      --      -
          MedicationRequest --      --      --      --      --      --      -
          DiagnosticReport  --      --      --      --      --      --      -
          ServiceRequest    --      --      --      --      --      --      -
          Communication     --      --      --      --      --      --      -
          Appointment       YY      YY      YY      YY      --      YY      Y
          Consent           --      --      --      --      --      --      -
          Practitioner      YY      YY      --      --      --      YY      Y
          Organization      YY      YY      --      --      --      YY      Y
          Location          YY      YY      --      --      --      YY      Y
          Schedule          YY      YY      YY      YY      YY      YY      Y
          Slot              YY      YY      YY      YY      YY      YY      Y
          AuditEvent        --      --      --      --      --      --      -
          Basic             --      --      --      --      --      --      -
        lab-technician
                            read    search  create  update  delete  history type-wide-search
          Patient           --      --      --      --      --      --      -
          Observation       --      --      Y-      Y-      --      --      -
          Condition         --      --      --      --      --      --      -
          Encounter         --      --      --      --      --      --      -
          CareTeam          --      --      --      --      --      --      -
          MedicationRequest --      --      --      --      --      --      -
          DiagnosticReport  --      --      Y-      Y-      --      --      -
          ServiceRequest    Y-      YY      --      --      --      Y-      Y
          Communication     --      --      --      --      --      --      -
          Appointment       --      --      --      --      --      --      -
          Consent           --      --      --      --      --      --      -
          Practitioner      YY      YY      --      --      --      YY      Y
          Organization      YY      YY      --      --      --      YY      Y
          Location          YY      YY      --      --      --      YY      Y
          Schedule          YY      YY      --      --      --      YY      Y
          Slot              YY      YY      --      --      --      YY      Y
          AuditEvent        --      --      --      --      --      --      -
          Basic             --      --      --      --      --      --      -
        auditor
                            read    search  create  update  delete  history type-wide-search
          Patient           --      --      --      --      --      --      -
          Observation       --      --      --      --      --      --      -
          Condition         --      --      --      --      --      --      -
          Encounter         --      --      --      --      --      --      -
          CareTeam          --      --      --      --      --      --      -
          MedicationRequest --      --      --      --      --      --      -
          DiagnosticReport  --      --      --      --      --      --      -
          ServiceRequest    --      --      --      --      --      --      -
          Communication     --      --      --      --      --      --      -
          Appointment       --      --      --      --      --      --      -
          Consent           --      --      --      --      --      --      -
          Practitioner      YY      YY      --      --      --      YY      Y
          Organization      YY      YY      --      --      --      YY      Y
          Location          YY      YY      --      --      --      YY      Y
          Schedule          YY      YY      --      --      --      YY      Y
          Slot              YY      YY      --      --      --      YY      Y
          AuditEvent        --      --      --      --      --      --      -
          Basic             --      --      --      --      --      --      -
        patient
                            read    search  create  update  delete  history type-wide-search
          Patient           Y-      Y-      --      --      --      Y-      -
          Observation       Y-      Y-      --      --      --      Y-      -
          Condition         Y-      Y-      --      --      --      Y-      -
          Encounter         Y-      Y-      --      --      --      Y-      -
          CareTeam          Y-      Y-      --      --      --      Y-      -
          MedicationRequest Y-      Y-      --      --      --      Y-      -
          DiagnosticReport  Y-      Y-      --      --      --      Y-      -
          ServiceRequest    Y-      Y-      --      --      --      Y-      -
          Communication     Y-      Y-      --      --      --      Y-      -
          Appointment       Y-      Y-      --      --      --      Y-      -
          Consent           Y-      Y-      Y-      Y-      Y-      Y-      -
          Practitioner      --      --      --      --      --      --      -
          Organization      --      --      --      --      --      --      -
          Location          --      --      --      --      --      --      -
          Schedule          --      --      --      --      --      --      -
          Slot              --      --      --      --      --      --      -
          AuditEvent        --      --      --      --      --      --      -
          Basic             --      --      --      --      --      --      -
    "#]]
    .assert_eq(&fhir_matrix());
}

#[test]
fn system_actions_by_role() {
    let ctx = world();
    let mut out = format!("{:<16}", "");
    for action in SYSTEM_ACTIONS {
        write!(out, "{:<16}", action.as_str()).unwrap();
    }
    out.push('\n');
    for role in Role::ALL {
        let s = subject(role);
        write!(out, "{:<16}", role.as_str()).unwrap();
        for action in SYSTEM_ACTIONS {
            let cells = pair(
                &s,
                action,
                &Target::patient(pat("pat-a")),
                &Target::patient(pat("pat-b")),
                &ctx,
            );
            write!(out, "{cells:<16}").unwrap();
        }
        out.push('\n');
    }
    expect![[r#"
                        read-ledger     read-own-audit  manage-accounts break-glass     
        admin           --              --              YY              --              
        physician       --              --              --              GG              
        nurse           --              --              --              GG              
        receptionist    --              --              --              --              
        lab-technician  --              --              --              --              
        auditor         YY              --              --              --              
        patient         --              Y-              --              --              
    "#]]
    .assert_eq(&out);
}

/// The reason codes behind the matrix, one line per distinct (role, reason), so a change in
/// *why* something is denied shows up even when allow/deny does not change.
#[test]
fn reasons_used_by_role() {
    let ctx = world();
    let mut out = String::new();
    for role in Role::ALL {
        let s = subject(role);
        let mut reasons: Vec<&str> = Vec::new();
        for rt in TYPES {
            for patient in ["pat-a", "pat-b"] {
                for action in FHIR_ACTIONS.into_iter().chain(SYSTEM_ACTIONS) {
                    let t = target(rt, patient);
                    reasons.push(decide(&s, action, &t, &ctx).reason().as_str());
                }
            }
        }
        reasons.sort_unstable();
        reasons.dedup();
        writeln!(out, "{role}: {}", reasons.join(" ")).unwrap();
    }
    expect![[r#"
        admin: account-admin admin-no-clinical audit-via-ledger role-forbids-action staff-directory unknown-resource-type
        physician: audit-via-ledger break-glass-invoked consent-patient-only in-care:general-practitioner no-compartment not-in-care role-forbids-action staff-directory unknown-resource-type
        nurse: audit-via-ledger break-glass-invoked consent-patient-only in-care:care-team no-compartment not-in-care role-forbids-action staff-directory unknown-resource-type
        receptionist: audit-via-ledger front-desk role-forbids-action role-forbids-resource staff-directory unknown-resource-type
        lab-technician: audit-via-ledger lab-order no-lab-order role-forbids-action role-forbids-resource search-filtered staff-directory unknown-resource-type
        auditor: audit-via-ledger ledger-audit ledger-only role-forbids-action staff-directory unknown-resource-type
        patient: audit-via-ledger not-own-compartment own-audit own-compartment patient-read-only role-forbids-action unknown-resource-type
    "#]].assert_eq(&out);
}
