//! The role × action × resource-type matrix over HTTP: every role, in care and not, every
//! interaction, on real resources. The snapshot is what the server answered (Y allowed,
//! N refused with 403, anything else its status); it must agree with the policy crate's
//! own matrix, and any change to who may do what shows up here as a diff.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::access::{put, signed_in, user, world, User};
use crate::support::{observation, Harness, Resp};
use medvault_server::accounts::{self, Role};

fn resource(rtype: &str, pid: &str) -> Value {
    let subject = json!({"reference": format!("Patient/{pid}")});
    match rtype {
        "Observation" => observation(pid, "8867-4", "2024-01-01", 70),
        "Condition" => json!({"resourceType": "Condition", "subject": subject,
            "code": {"text": "asthma"}}),
        "MedicationRequest" => json!({"resourceType": "MedicationRequest", "status": "active",
            "intent": "order", "subject": subject,
            "medicationCodeableConcept": {"text": "salbutamol"}}),
        "Communication" => json!({"resourceType": "Communication", "status": "completed",
            "subject": subject}),
        "Consent" => json!({"resourceType": "Consent", "status": "inactive",
            "scope": {"text": "treatment"}, "category": [{"text": "treatment"}],
            "patient": subject}),
        "Appointment" => json!({"resourceType": "Appointment", "status": "proposed",
            "participant": [{"actor": subject, "status": "needs-action"}]}),
        "Practitioner" => json!({"resourceType": "Practitioner", "name": [{"family": "Doe"}]}),
        _ => unreachable!("{rtype}"),
    }
}

fn cell(r: &Resp) -> String {
    match r.status {
        s if s.is_success() => "Y".into(),
        StatusCode::FORBIDDEN => "N".into(),
        s => s.as_u16().to_string(),
    }
}

/// Read, search, history, create, update and delete of `rtype` in `pid`'s chart.
async fn row(h: &Harness, who: &User, rtype: &str, pid: &str) -> Vec<String> {
    let target = if rtype == "Patient" {
        pid.to_string()
    } else {
        let mut r = resource(rtype, pid);
        if rtype == "Practitioner" {
            r["id"] = json!(format!("pr-{}", pid));
        }
        put(h, r)
    };
    let one = format!("/fhir/{rtype}/{target}");
    let search = match rtype {
        "Patient" => format!("/fhir/Patient?_id={pid}"),
        "Practitioner" => "/fhir/Practitioner?family=Doe".to_string(),
        _ => format!("/fhir/{rtype}?patient={pid}"),
    };
    let current = h.repo.read(rtype, &target).unwrap().resource.unwrap();
    let new = if rtype == "Patient" {
        crate::support::patient("Fresh", "Fay", "2001-01-01")
    } else {
        resource(rtype, pid)
    };
    let mut out = vec![
        cell(&who.call(h, "GET", &one, None).await),
        cell(&who.call(h, "GET", &search, None).await),
        cell(&who.call(h, "GET", &format!("{one}/_history"), None).await),
        cell(
            &who.call(h, "POST", &format!("/fhir/{rtype}"), Some(new))
                .await,
        ),
        cell(&who.call(h, "PUT", &one, Some(current)).await),
    ];
    // Deleting the chart's own Patient would change every row after it.
    out.push(if rtype == "Patient" {
        "-".into()
    } else {
        cell(&who.call(h, "DELETE", &one, None).await)
    });
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_and_interaction_over_http() {
    let w = world().await;
    let h = &w.h;
    let keys = h.repo.vault().keys().unwrap();
    let admin = accounts::load_by_login(&*h.data.store, &keys, "admin")
        .unwrap()
        .unwrap();
    // A nurse on the patient's care team; a nurse, a lab technician and an auditor without
    // any relationship.
    put(
        h,
        json!({"resourceType": "CareTeam", "status": "active",
            "subject": {"reference": format!("Patient/{}", w.pid)},
            "participant": [{"member": {"reference": "Practitioner/nurse-in"}}]}),
    );
    let nurse_in = user(h, &admin, Role::Nurse, "Practitioner/nurse-in", "nurse-in").await;
    let nurse_out = user(
        h,
        &admin,
        Role::Nurse,
        "Practitioner/nurse-out",
        "nurse-out",
    )
    .await;
    let tech = user(
        h,
        &admin,
        Role::LabTechnician,
        "Practitioner/tech|Organization/lab-9",
        "tech9",
    )
    .await;
    let auditor = user(h, &admin, Role::Auditor, "", "aud").await;
    let admin_user = signed_in(h, "admin").await;
    let rows: Vec<(&str, &User, &str)> = vec![
        ("physician in care", &w.gp, &w.pid),
        ("physician not in care", &w.stranger, &w.pid),
        ("nurse in care", &nurse_in, &w.pid),
        ("nurse not in care", &nurse_out, &w.pid),
        ("receptionist", &w.reception, &w.pid),
        ("lab technician", &tech, &w.pid),
        ("auditor", &auditor, &w.pid),
        ("admin", &admin_user, &w.pid),
        ("patient, own chart", &w.patient, &w.pid),
        ("patient, other chart", &w.patient, &w.other_pid),
    ];
    let types = [
        "Patient",
        "Observation",
        "Condition",
        "MedicationRequest",
        "Communication",
        "Consent",
        "Appointment",
        "Practitioner",
    ];
    let mut text =
        String::from("                                         read srch hist crea updt dele\n");
    for (label, who, pid) in rows {
        for rtype in types {
            let cells = row(h, who, rtype, pid).await;
            text.push_str(&format!("{label:<22} {rtype:<18}"));
            for c in cells {
                text.push_str(&format!(" {c:>4}"));
            }
            text.push('\n');
        }
    }
    expect_test::expect![[r#"
                                                 read srch hist crea updt dele
        physician in care      Patient               Y    Y    Y    N    Y    -
        physician in care      Observation           Y    Y    Y    Y    Y    Y
        physician in care      Condition             Y    Y    Y    Y    Y    Y
        physician in care      MedicationRequest     Y    Y    Y    Y    Y    Y
        physician in care      Communication         Y    Y    Y    Y    Y    Y
        physician in care      Consent               Y    Y    Y    N    N    N
        physician in care      Appointment           Y    Y    Y    Y    Y    N
        physician in care      Practitioner          Y    Y    Y    N    N    N
        physician not in care  Patient               N    N    N    N    N    -
        physician not in care  Observation           N    N    N    N    N    N
        physician not in care  Condition             N    N    N    N    N    N
        physician not in care  MedicationRequest     N    N    N    N    N    N
        physician not in care  Communication         N    N    N    N    N    N
        physician not in care  Consent               N    N    N    N    N    N
        physician not in care  Appointment           N    N    N    N    N    N
        physician not in care  Practitioner          Y    Y    Y    N    N    N
        nurse in care          Patient               Y    Y    Y    N    N    -
        nurse in care          Observation           Y    Y    Y    Y    Y    N
        nurse in care          Condition             Y    Y    Y    N    N    N
        nurse in care          MedicationRequest     Y    Y    Y    N    N    N
        nurse in care          Communication         Y    Y    Y    N    N    N
        nurse in care          Consent               Y    Y    Y    N    N    N
        nurse in care          Appointment           Y    Y    Y    N    N    N
        nurse in care          Practitioner          Y    Y    Y    N    N    N
        nurse not in care      Patient               N    N    N    N    N    -
        nurse not in care      Observation           N    N    N    N    N    N
        nurse not in care      Condition             N    N    N    N    N    N
        nurse not in care      MedicationRequest     N    N    N    N    N    N
        nurse not in care      Communication         N    N    N    N    N    N
        nurse not in care      Consent               N    N    N    N    N    N
        nurse not in care      Appointment           N    N    N    N    N    N
        nurse not in care      Practitioner          Y    Y    Y    N    N    N
        receptionist           Patient               Y    Y    Y    Y    Y    -
        receptionist           Observation           N    N    N    N    N    N
        receptionist           Condition             N    N    N    N    N    N
        receptionist           MedicationRequest     N    N    N    N    N    N
        receptionist           Communication         N    N    N    N    N    N
        receptionist           Consent               N    N    N    N    N    N
        receptionist           Appointment           Y    Y    Y    Y    Y    N
        receptionist           Practitioner          Y    Y    Y    N    N    N
        lab technician         Patient               N    N    N    N    N    -
        lab technician         Observation           N    N    N    N    N    N
        lab technician         Condition             N    N    N    N    N    N
        lab technician         MedicationRequest     N    N    N    N    N    N
        lab technician         Communication         N    N    N    N    N    N
        lab technician         Consent               N    N    N    N    N    N
        lab technician         Appointment           N    N    N    N    N    N
        lab technician         Practitioner          Y    Y    Y    N    N    N
        auditor                Patient               N    N    N    N    N    -
        auditor                Observation           N    N    N    N    N    N
        auditor                Condition             N    N    N    N    N    N
        auditor                MedicationRequest     N    N    N    N    N    N
        auditor                Communication         N    N    N    N    N    N
        auditor                Consent               N    N    N    N    N    N
        auditor                Appointment           N    N    N    N    N    N
        auditor                Practitioner          Y    Y    Y    N    N    N
        admin                  Patient               N    N    N    N    N    -
        admin                  Observation           N    N    N    N    N    N
        admin                  Condition             N    N    N    N    N    N
        admin                  MedicationRequest     N    N    N    N    N    N
        admin                  Communication         N    N    N    N    N    N
        admin                  Consent               N    N    N    N    N    N
        admin                  Appointment           N    N    N    N    N    N
        admin                  Practitioner          Y    Y    Y    Y    Y    N
        patient, own chart     Patient               Y    Y    Y    N    N    -
        patient, own chart     Observation           Y    Y    Y    N    N    N
        patient, own chart     Condition             Y    Y    Y    N    N    N
        patient, own chart     MedicationRequest     Y    Y    Y    N    N    N
        patient, own chart     Communication         Y    Y    Y    N    N    N
        patient, own chart     Consent               Y    Y    Y    Y    Y    Y
        patient, own chart     Appointment           Y    Y    Y    N    N    N
        patient, own chart     Practitioner          N    N    N    N    N    N
        patient, other chart   Patient               N    N    N    N    N    -
        patient, other chart   Observation           N    N    N    N    N    N
        patient, other chart   Condition             N    N    N    N    N    N
        patient, other chart   MedicationRequest     N    N    N    N    N    N
        patient, other chart   Communication         N    N    N    N    N    N
        patient, other chart   Consent               N    N    N    N    N    N
        patient, other chart   Appointment           N    N    N    N    N    N
        patient, other chart   Practitioner          N    N    N    N    N    N
    "#]]
    .assert_eq(&text);
}
