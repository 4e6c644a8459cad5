//! Access control over HTTP: signed-in callers are decided by the policy (care relationship,
//! consent, roles), callers without a token are refused, and every decision is recorded.

use axum::http::StatusCode;
use medvault_crypto::SystemRandom;
use medvault_server::accounts::{self, Role};
use medvault_server::ledger::Audit;
use medvault_server::login;
use medvault_store::Store;
use serde_json::{json, Value};

use crate::identity::{http_login_with, register, DpopKey};
use crate::support::{observation, patient, Harness, Resp, BASE};

const PASSWORD: &str = "correct horse battery staple";

/// A signed-in user: their token and DPoP key.
pub struct User {
    pub token: String,
    pub key: DpopKey,
}

impl User {
    pub async fn call(&self, h: &Harness, method: &str, path: &str, body: Option<Value>) -> Resp {
        self.call_with(h, method, path, body, &[]).await
    }

    pub async fn call_with(
        &self,
        h: &Harness,
        method: &str,
        path: &str,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> Resp {
        let (auth, proof) = self.credentials(h, method, path);
        let mut headers: Vec<(&str, &str)> = vec![("authorization", &auth), ("dpop", &proof)];
        headers.extend_from_slice(extra);
        h.call_with(method, path, body, &headers).await
    }

    /// A request with a body that is not JSON (a form, for `_search`).
    pub async fn call_raw(
        &self,
        h: &Harness,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> Resp {
        let (auth, proof) = self.credentials(h, method, path);
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", auth)
            .header("dpop", proof)
            .header("content-type", content_type)
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        h.raw(req).await
    }

    /// The Authorization header and a fresh DPoP proof for one request.
    fn credentials(&self, h: &Harness, method: &str, path: &str) -> (String, String) {
        let path_only = path.split('?').next().unwrap_or(path);
        let mut jti = [0u8; 12];
        medvault_crypto::Random::fill(&SystemRandom::new(), &mut jti).unwrap();
        let proof = self.key.proof(
            method,
            &format!("{BASE}{path_only}"),
            h.clock_now_s(),
            &crate::identity::b64(&jti),
            Some(&self.token),
        );
        (format!("DPoP {}", self.token), proof)
    }
}

impl Harness {
    fn clock_now_s(&self) -> i64 {
        use medvault_server::clock::Clock;
        self.clock.now_ms() / 1000
    }
}

/// An account of `role` linked to `link`, signed in.
pub async fn user(
    h: &Harness,
    admin: &accounts::Account,
    role: Role,
    link: &str,
    name: &str,
) -> User {
    let keys = h.repo.vault().keys().unwrap();
    let setup = login::server_setup(&*h.data.store, &keys, &SystemRandom::new()).unwrap();
    let token = accounts::issue_token(
        &*h.data.store,
        &keys,
        &SystemRandom::new(),
        h.clock_now_s() * 1000,
        admin,
        role,
        link,
        3_600_000,
    )
    .unwrap();
    register(h, &setup, &token, name, &format!("NID-{name}")).unwrap();
    signed_in(h, name).await
}

pub async fn signed_in(h: &Harness, name: &str) -> User {
    let key = DpopKey::new();
    let r = http_login_with(h, name, PASSWORD, &key).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    User {
        token: r.json["access_token"].as_str().unwrap().to_string(),
        key,
    }
}

/// Data written straight through the repository (set-up, not under test).
pub fn put(h: &Harness, resource: Value) -> String {
    let rtype = resource["resourceType"].as_str().unwrap().to_string();
    h.repo
        .create(&Audit::system("test"), &rtype, resource, None)
        .unwrap()
        .stored
        .id
}

pub struct World {
    pub h: Harness,
    pub pid: String,
    pub other_pid: String,
    pub obs: String,
    pub gp: User,
    pub stranger: User,
    pub reception: User,
    pub patient: User,
    pub admin: User,
}

/// Patient P (GP: dr-gp) with an Observation, and another patient; a GP, an unrelated
/// physician, a receptionist, P as a patient user, and the admin, all signed in.
pub async fn world() -> World {
    let h = Harness::unsealed_requiring_auth();
    let keys = h.repo.vault().keys().unwrap();
    let setup = login::server_setup(&*h.data.store, &keys, &SystemRandom::new()).unwrap();
    let admin_account = register(&h, &setup, &h.bootstrap, "admin", "NID-admin").unwrap();
    let mut p = patient("Care", "Cara", "1960-01-01");
    p["generalPractitioner"] = json!([{"reference": "Practitioner/dr-gp"}]);
    let pid = put(&h, p);
    let other_pid = put(&h, patient("Else", "Ed", "1970-01-01"));
    let obs = put(&h, observation(&pid, "8867-4", "2024-01-01", 70));
    put(&h, observation(&other_pid, "8867-4", "2024-01-01", 90));
    let gp = user(
        &h,
        &admin_account,
        Role::Physician,
        "Practitioner/dr-gp",
        "gp",
    )
    .await;
    let stranger = user(
        &h,
        &admin_account,
        Role::Physician,
        "Practitioner/dr-x",
        "stranger",
    )
    .await;
    let reception = user(
        &h,
        &admin_account,
        Role::Receptionist,
        "Practitioner/rec",
        "rec",
    )
    .await;
    let patient_user = user(
        &h,
        &admin_account,
        Role::Patient,
        &format!("Patient/{pid}"),
        "cara",
    )
    .await;
    let admin = signed_in(&h, "admin").await;
    World {
        h,
        pid,
        other_pid,
        obs,
        gp,
        stranger,
        reception,
        patient: patient_user,
        admin,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_fhir_api_refuses() {
    let w = world().await;
    let r =
        w.h.call("GET", &format!("/fhir/Patient/{}", w.pid), None)
            .await;
    r.assert_outcome(StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("www-authenticate"), Some("DPoP"));
    // The capability statement stays public.
    assert_eq!(
        w.h.call("GET", "/fhir/metadata", None).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_general_practitioner_reads_and_writes_the_chart() {
    let w = world().await;
    let h = &w.h;
    let r =
        w.gp.call(h, "GET", &format!("/fhir/Patient/{}", w.pid), None)
            .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let r =
        w.gp.call(h, "GET", &format!("/fhir/Observation/{}", w.obs), None)
            .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let r =
        w.gp.call(
            h,
            "GET",
            &format!("/fhir/Observation?patient={}", w.pid),
            None,
        )
        .await;
    assert_eq!(r.json["entry"].as_array().unwrap().len(), 1, "{}", r.json);
    let r =
        w.gp.call(
            h,
            "POST",
            "/fhir/Observation",
            Some(observation(&w.pid, "8310-5", "2024-02-02", 37)),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    // But not another patient's chart, and not by moving a resource into it.
    let r =
        w.gp.call(
            h,
            "POST",
            "/fhir/Observation",
            Some(observation(&w.other_pid, "8310-5", "2024-02-02", 37)),
        )
        .await;
    r.assert_outcome(StatusCode::FORBIDDEN);
    // A type-wide clinical search would have to be filtered, and its paging would still
    // tell how much is hidden: it must name a patient.
    let r =
        w.gp.call(h, "GET", "/fhir/Observation?code=8867-4", None)
            .await;
    r.assert_outcome(StatusCode::FORBIDDEN);
    assert!(
        r.json.to_string().contains("search-within-one-patient"),
        "{}",
        r.json
    );
    // A conditional create may only look inside the chart it writes to.
    let r =
        w.gp.call_with(
            h,
            "POST",
            "/fhir/Observation",
            Some(observation(&w.pid, "8310-5", "2024-02-03", 38)),
            &[(
                "if-none-exist",
                &format!("patient={}&code=8867-4", w.other_pid),
            )],
        )
        .await;
    r.assert_outcome(StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn others_are_refused_by_role_or_relationship() {
    let w = world().await;
    let h = &w.h;
    let obs = format!("/fhir/Observation/{}", w.obs);
    // An unrelated physician: refused, told break-glass would apply.
    let r = w.stranger.call(h, "GET", &obs, None).await;
    r.assert_outcome(StatusCode::FORBIDDEN);
    let text = r.json["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        text.contains("not-in-care") && text.contains("break-glass"),
        "{text}"
    );
    w.stranger
        .call(
            h,
            "GET",
            &format!("/fhir/Observation?patient={}", w.pid),
            None,
        )
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    // Reception sees demographics, not clinical data.
    let r = w
        .reception
        .call(h, "GET", &format!("/fhir/Patient/{}", w.pid), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    w.reception
        .call(h, "GET", &obs, None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    // The patient reads their own record, read-only, and nobody else's.
    let r = w.patient.call(h, "GET", &obs, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    w.patient
        .call(
            h,
            "POST",
            "/fhir/Observation",
            Some(observation(&w.pid, "8310-5", "2024-02-02", 37)),
        )
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    w.patient
        .call(h, "GET", &format!("/fhir/Patient/{}", w.other_pid), None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    // The admin manages accounts and reads no charts.
    w.admin
        .call(h, "GET", &format!("/fhir/Patient/{}", w.pid), None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patients_consent_grants_and_its_revocation_withdraws_access_at_once() {
    let w = world().await;
    let h = &w.h;
    let obs = format!("/fhir/Observation/{}", w.obs);
    w.stranger
        .call(h, "GET", &obs, None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    let consent = json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{}", w.pid)},
        "provision": {"type": "permit", "actor": [{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
            "reference": {"reference": "Practitioner/dr-x"}
        }]}
    });
    let r = w
        .patient
        .call(h, "POST", "/fhir/Consent", Some(consent.clone()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let cid = r.json["id"].as_str().unwrap().to_string();
    let r = w.stranger.call(h, "GET", &obs, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    // Revoked: refused on the very next request.
    let mut revoked = consent;
    revoked["id"] = json!(cid);
    revoked["status"] = json!("inactive");
    let r = w
        .patient
        .call(h, "PUT", &format!("/fhir/Consent/{cid}"), Some(revoked))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    w.stranger
        .call(h, "GET", &obs, None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_in_the_ledger_with_who_asked() {
    let w = world().await;
    let h = &w.h;
    let before = h.data.store.ledger_size().unwrap();
    w.stranger
        .call(h, "GET", &format!("/fhir/Observation/{}", w.obs), None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    h.call("GET", &format!("/fhir/Patient/{}", w.pid), None)
        .await
        .assert_outcome(StatusCode::UNAUTHORIZED);
    let keys = h.repo.vault().keys().unwrap();
    let got: Vec<(String, String, medvault_ledger::Outcome, String)> = h
        .data
        .store
        .ledger_entries(before, 100)
        .unwrap()
        .iter()
        .map(|rec| {
            let e = medvault_server::ledger::open_entry(&keys, rec).unwrap().0;
            (
                e.role.as_str().to_string(),
                e.action.as_str().to_string(),
                e.outcome,
                e.reason.as_str().to_string(),
            )
        })
        .collect();
    use medvault_ledger::Outcome::Deny;
    assert_eq!(
        got,
        vec![
            (
                "physician".into(),
                "read".into(),
                Deny,
                "not-in-care".into()
            ),
            ("none".into(), "read".into(), Deny, "401".into()),
        ]
    );
}

fn b64std(v: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_sees_exactly_their_own_entries_with_proofs() {
    let w = world().await;
    let h = &w.h;
    // Some accesses to each patient, then a checkpoint.
    w.gp.call(h, "GET", &format!("/fhir/Observation/{}", w.obs), None)
        .await;
    w.stranger
        .call(h, "GET", &format!("/fhir/Observation/{}", w.obs), None)
        .await;
    w.reception
        .call(h, "GET", &format!("/fhir/Patient/{}", w.other_pid), None)
        .await;
    h.clock.advance(61_000);
    let keys = h.repo.vault().keys().unwrap();
    h.repo.ledger().tick(&keys).unwrap();

    let r = w
        .patient
        .call(
            h,
            "GET",
            &format!("/fhir/AuditEvent?patient={}", w.pid),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let key_text = h.call("GET", "/ledger/key", None).await.json;
    let vkey = medvault_ledger::VerifierKey::parse(key_text.as_str().unwrap().trim()).unwrap();
    let cp_ext = &r.json["extension"][0]["extension"];
    let note = cp_ext[1]["valueString"].as_str().unwrap();
    let checkpoint = medvault_ledger::open(note, &vkey).unwrap();
    let entries = r.json["entry"].as_array().unwrap();
    assert!(!entries.is_empty());
    let mut actions = Vec::new();
    for e in entries {
        let res = &e["resource"];
        assert_eq!(
            res["entity"][1]["what"]["reference"],
            format!("Patient/{}", w.pid),
            "{res}"
        );
        let ext = res["extension"][0]["extension"].as_array().unwrap();
        let field = |name: &str| ext.iter().find(|x| x["url"] == name).cloned();
        let index = field("index").unwrap()["valueUnsignedInt"]
            .as_u64()
            .unwrap();
        let salt = medvault_ledger::Salt::from_hex(
            field("salt").unwrap()["valueString"].as_str().unwrap(),
        )
        .unwrap();
        let bytes = b64std(&field("entry").unwrap()["valueBase64Binary"]);
        let entry = medvault_ledger::Entry::decode(&bytes).unwrap();
        assert_eq!(entry.patient.as_str(), w.pid);
        // The patient recomputes the leaf from the entry and checks it is in the signed tree.
        let leaf = medvault_ledger::entry_leaf(&salt, &bytes);
        assert_eq!(
            leaf.as_bytes().to_vec(),
            b64std(&field("leaf").unwrap()["valueBase64Binary"])
        );
        if index < checkpoint.size() {
            let proof: Vec<medvault_ledger::Hash> = ext
                .iter()
                .filter(|x| x["url"] == "proofHash")
                .map(|x| {
                    medvault_ledger::Hash::from_slice(&b64std(&x["valueBase64Binary"])).unwrap()
                })
                .collect();
            medvault_ledger::verify_inclusion(
                &leaf,
                index,
                checkpoint.size(),
                &proof,
                checkpoint.root(),
            )
            .unwrap();
        }
        actions.push((entry.role.as_str().to_string(), entry.outcome));
    }
    // The GP's read and the stranger's refused read are there; the other patient's are not.
    assert!(actions.contains(&("physician".into(), medvault_ledger::Outcome::Allow)));
    assert!(actions.contains(&("physician".into(), medvault_ledger::Outcome::Deny)));
    assert!(!actions.iter().any(|(role, _)| role == "receptionist"));

    // Nobody else reads a patient's log through this door.
    w.patient
        .call(
            h,
            "GET",
            &format!("/fhir/AuditEvent?patient={}", w.other_pid),
            None,
        )
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    w.gp.call(
        h,
        "GET",
        &format!("/fhir/AuditEvent?patient={}", w.pid),
        None,
    )
    .await
    .assert_outcome(StatusCode::FORBIDDEN);
    h.call("GET", &format!("/fhir/AuditEvent?patient={}", w.pid), None)
        .await
        .assert_outcome(StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_auditors_page_through_the_whole_ledger() {
    let w = world().await;
    let h = &w.h;
    let keys = h.repo.vault().keys().unwrap();
    let admin = accounts::load_by_login(&*h.data.store, &keys, "admin")
        .unwrap()
        .unwrap();
    let auditor = user(h, &admin, Role::Auditor, "", "auditor").await;
    let r = auditor
        .call(h, "GET", "/ledger/entries?from=0&count=5", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let list = r.json["entries"].as_array().unwrap();
    assert_eq!(list.len(), 5);
    assert_eq!(list[0]["index"], 0);
    assert_eq!(r.json["next"], 5);
    for other in [&w.gp, &w.patient, &w.admin, &w.reception] {
        other
            .call(h, "GET", "/ledger/entries", None)
            .await
            .assert_outcome(StatusCode::FORBIDDEN);
    }
    h.call("GET", "/ledger/entries", None)
        .await
        .assert_outcome(StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naming_another_patient_in_ones_own_chart_grants_nothing_there() {
    let w = world().await;
    let h = &w.h;
    // The GP books an Appointment in their patient's chart that also names the other patient.
    let appointment = json!({
        "resourceType": "Appointment",
        "status": "booked",
        "start": "2026-11-23T11:00:00Z",
        "end": "2026-11-23T11:30:00Z",
        "participant": [
            {"actor": {"reference": format!("Patient/{}", w.pid)}, "status": "accepted"},
            {"actor": {"reference": format!("Patient/{}", w.other_pid)}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/dr-gp"}, "status": "accepted"},
        ],
    });
    let r =
        w.gp.call(h, "POST", "/fhir/Appointment", Some(appointment))
            .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    // That does not put them in care of the other patient.
    w.gp.call(h, "GET", &format!("/fhir/Patient/{}", w.other_pid), None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    // And the placeholder id of a Patient being created cannot be taken.
    let mut p = patient("Place", "Holder", "1990-01-01");
    p["id"] = json!("new-patient");
    w.reception
        .call(h, "PUT", "/fhir/Patient/new-patient", Some(p))
        .await
        .assert_outcome(StatusCode::BAD_REQUEST);
}

fn break_glass_body(reason: &str) -> Value {
    json!({"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": reason}]})
}

/// The ledger entries written since `before`: (action, resource type, patient, outcome,
/// reason, break-glass flag).
pub fn entries_since(
    h: &Harness,
    before: u64,
) -> Vec<(String, String, String, bool, String, bool)> {
    let keys = h.repo.vault().keys().unwrap();
    h.data
        .store
        .ledger_entries(before, 1000)
        .unwrap()
        .iter()
        .map(|rec| {
            let e = medvault_server::ledger::open_entry(&keys, rec).unwrap().0;
            (
                e.action.as_str().to_string(),
                e.resource_type.as_str().to_string(),
                e.patient.as_str().to_string(),
                e.outcome == medvault_ledger::Outcome::Allow,
                e.reason.as_str().to_string(),
                e.break_glass,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_opens_a_chart_for_an_hour_flags_every_access_and_tells_the_patient() {
    let w = world().await;
    let h = &w.h;
    let obs = format!("/fhir/Observation/{}", w.obs);
    let op = format!("/fhir/Patient/{}/$break-glass", w.pid);
    w.stranger
        .call(h, "GET", &obs, None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    // No reason, a blank reason, or the wrong body: refused, nothing granted.
    for body in [
        json!({"resourceType": "Parameters", "parameter": []}),
        break_glass_body("   "),
        json!({"reason": "unconscious"}),
    ] {
        w.stranger
            .call(h, "POST", &op, Some(body))
            .await
            .assert_outcome(StatusCode::BAD_REQUEST);
    }
    // Roles without break-glass, and a chart that does not exist.
    for who in [&w.reception, &w.patient, &w.admin] {
        w.stranger
            .call(h, "GET", &obs, None)
            .await
            .assert_outcome(StatusCode::FORBIDDEN);
        who.call(h, "POST", &op, Some(break_glass_body("curious")))
            .await
            .assert_outcome(StatusCode::FORBIDDEN);
    }
    w.stranger
        .call(
            h,
            "POST",
            "/fhir/Patient/no-such-patient/$break-glass",
            Some(break_glass_body("unconscious in the ER")),
        )
        .await
        .assert_outcome(StatusCode::NOT_FOUND);
    w.stranger
        .call(h, "GET", &obs, None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN);

    let before = h.data.store.ledger_size().unwrap();
    let r = w
        .stranger
        .call(
            h,
            "POST",
            &op,
            Some(break_glass_body("unconscious in the ER")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["parameter"][0]["name"], "expires");
    assert_eq!(
        r.json["parameter"][0]["valueInstant"],
        "2026-11-23T11:00:00.000Z"
    );
    let notice = r.json["parameter"][1]["valueReference"]["reference"]
        .as_str()
        .unwrap()
        .to_string();
    // Reads now succeed (flagged); writes still need a care relationship.
    let r = w.stranger.call(h, "GET", &obs, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let r = w
        .stranger
        .call(
            h,
            "GET",
            &format!("/fhir/Observation?patient={}", w.pid),
            None,
        )
        .await;
    assert_eq!(r.json["total"], 1, "{}", r.json);
    w.stranger
        .call(
            h,
            "POST",
            "/fhir/Observation",
            Some(observation(&w.pid, "8310-5", "2024-02-02", 37)),
        )
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    // Only that chart: the other patient stays closed.
    w.stranger
        .call(h, "GET", &format!("/fhir/Patient/{}", w.other_pid), None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN);

    // The patient finds the notice in their record, with who, when, until when and why.
    let r = w
        .patient
        .call(h, "GET", &format!("/fhir/{notice}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["subject"]["reference"], format!("Patient/{}", w.pid));
    assert_eq!(r.json["sender"]["reference"], "Practitioner/dr-x");
    let text = r.json["payload"][0]["contentString"].as_str().unwrap();
    for part in [
        "break-glass",
        "unconscious in the ER",
        "2026-11-23T11:00:00.000Z",
    ] {
        assert!(text.contains(part), "{text}");
    }
    let r = w
        .patient
        .call(
            h,
            "GET",
            &format!("/fhir/Communication?patient={}", w.pid),
            None,
        )
        .await;
    assert_eq!(r.json["total"], 1, "{}", r.json);

    // The ledger: the notice's creation, the invocation and both reads are flagged; the
    // refused write and the other patient's refusal are entries too, and the patient's own
    // reads of the notice are not flagged.
    let got = entries_since(h, before);
    let flagged: Vec<(&str, &str, bool)> = got
        .iter()
        .filter(|e| e.5)
        .map(|e| (e.0.as_str(), e.1.as_str(), e.3))
        .collect();
    assert_eq!(
        flagged,
        vec![
            ("break-glass", "Patient", true),
            ("read", "Observation", true),
            ("search", "Observation", true),
            ("create", "Observation", false),
        ],
        "{got:?}"
    );
    assert!(got
        .iter()
        .any(|e| e.0 == "create" && e.1 == "Communication" && e.2 == w.pid));
    assert!(got
        .iter()
        .any(|e| e.0 == "break-glass" && e.4 == "break-glass-invoked"));

    // An hour later the grant is over: refused again, and break-glass is offered again.
    h.clock.advance(60 * 60 * 1000);
    let stranger = signed_in(h, "stranger").await;
    let r = stranger.call(h, "GET", &obs, None).await;
    r.assert_outcome(StatusCode::FORBIDDEN);
    assert!(r.json["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("break-glass"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_break_glass_grant_planted_in_the_database_opens_nothing() {
    let w = world().await;
    let h = &w.h;
    let stranger_id =
        accounts::load_by_login(&*h.data.store, &h.repo.vault().keys().unwrap(), "stranger")
            .unwrap()
            .unwrap()
            .id()
            .to_string();
    // A row with a valid-looking shape but no valid MAC (the integrity key never leaves
    // the unsealed server), for the right account and far in the future.
    let keys = h.repo.vault().keys().unwrap();
    h.data
        .store
        .insert_grant(&medvault_store::GrantRecord {
            account: stranger_id.clone(),
            patient: keys.blind().token("break-glass.patient", &w.pid),
            issued_ms: 0,
            expires_ms: i64::MAX,
            mac: [7; 32],
        })
        .unwrap();
    w.stranger
        .call(h, "GET", &format!("/fhir/Observation/{}", w.obs), None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    // A real grant for someone else's account does not carry over either.
    medvault_server::grants::insert(&*h.data.store, &keys, "someone-else", &w.pid, 0, i64::MAX)
        .unwrap();
    w.stranger
        .call(h, "GET", &format!("/fhir/Observation/{}", w.obs), None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
}

/// After a transaction's writes are committed, its summary entry is flagged if the caller
/// holds a break-glass grant on a patient whose data it returned, which means reading the
/// grants again. If that read fails
/// (here a trigger plants a damaged grant row as the Observation is stored, so the read
/// before the commit succeeds and the one after it fails), the answer is withheld, and it
/// must say the request was carried out, not that nothing was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_transaction_whose_grants_cannot_be_read_says_it_was_carried_out() {
    let w = world().await;
    let h = &w.h;
    let keys = h.repo.vault().keys().unwrap();
    let gp_id = accounts::load_by_login(&*h.data.store, &keys, "gp")
        .unwrap()
        .unwrap()
        .id()
        .to_string();
    let token: String = keys
        .blind()
        .token("break-glass.patient", &w.pid)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let raw = rusqlite::Connection::open(h.db_path()).unwrap();
    let count = |sql: &str| -> i64 { raw.query_row(sql, [], |r| r.get(0)).unwrap() };
    let observations = "SELECT count(*) FROM resource_version WHERE rtype = 'Observation'";
    raw.execute_batch(&format!(
        "CREATE TRIGGER damaged_grant AFTER INSERT ON resource_version
         WHEN NEW.rtype = 'Observation'
         BEGIN INSERT INTO break_glass_grant (account, patient, issued_ms, expires_ms, mac)
               VALUES ('{gp_id}', X'{token}', 0, 9223372036854775807, X'00'); END;"
    ))
    .unwrap();
    let before = count(observations);
    let entries_before = h.data.store.ledger_size().unwrap();
    // The read makes the summary entry name the patient (a write-only summary names none,
    // and no grant is looked up for it).
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation(&w.pid, "8867-4", "2024-02-02", 71),
         "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "GET", "url": format!("Observation/{}", w.obs)}},
    ]});
    let r = w.gp.call(h, "POST", "/fhir", Some(bundle.clone())).await;
    r.assert_outcome(StatusCode::INTERNAL_SERVER_ERROR);
    let text = r.json.to_string();
    assert!(
        text.contains("was carried out and what it wrote is stored"),
        "{text}"
    );
    assert!(!text.contains("nothing was written"), "{text}");
    assert_eq!(count(observations), before + 1, "the write must stand");
    // Its own entry and the summary, written unflagged (the grants could not be read).
    let added = entries_since(h, entries_before);
    assert_eq!(added.len(), 2, "{added:?}");
    assert!(added.iter().all(|e| e.3 && !e.5), "{added:?}");

    // The same, and then its entries cannot be written either (the ledger refuses any
    // entry once the Observation is stored): still carried out, not "nothing was written".
    raw.execute_batch(&format!(
        "DELETE FROM break_glass_grant;
         CREATE TRIGGER no_more_entries BEFORE INSERT ON ledger_entry
         WHEN ({observations}) > {}
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        before + 1
    ))
    .unwrap();
    let r = w.gp.call(h, "POST", "/fhir", Some(bundle.clone())).await;
    r.assert_outcome(StatusCode::INTERNAL_SERVER_ERROR);
    let text = r.json.to_string();
    assert!(
        text.contains("was carried out and what it wrote is stored"),
        "{text}"
    );
    assert_eq!(count(observations), before + 2, "the write must stand");
    let added = entries_since(h, entries_before);
    assert_eq!(
        added.len(),
        3,
        "only the second write's own entry is new: {added:?}"
    );

    // With the damaged row gone, the chart answers again.
    raw.execute_batch(
        "DROP TRIGGER no_more_entries; DROP TRIGGER damaged_grant; DELETE FROM break_glass_grant;",
    )
    .unwrap();
    let r =
        w.gp.call(
            h,
            "GET",
            &format!("/fhir/Observation?patient={}", w.pid),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["total"], 3, "{}", r.json);
}

fn order(pid: &str, lab: &str, status: &str) -> Value {
    json!({
        "resourceType": "ServiceRequest",
        "status": status,
        "intent": "order",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "subject": {"reference": format!("Patient/{pid}")},
        "performer": [{"reference": format!("Organization/{lab}")}]
    })
}

fn result_for(pid: &str, order: Option<&str>) -> Value {
    let mut o = observation(pid, "2345-7", "2024-03-03", 95);
    if let Some(sr) = order {
        o["basedOn"] = json!([{"reference": format!("ServiceRequest/{sr}")}]);
    }
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_technicians_post_results_for_their_labs_orders_and_read_no_charts() {
    let w = world().await;
    let h = &w.h;
    let keys = h.repo.vault().keys().unwrap();
    let admin = accounts::load_by_login(&*h.data.store, &keys, "admin")
        .unwrap()
        .unwrap();
    // A lab technician's account names the lab orders must be addressed to.
    let refused = accounts::issue_token(
        &*h.data.store,
        &keys,
        &SystemRandom::new(),
        h.clock_now_s() * 1000,
        &admin,
        Role::LabTechnician,
        "Practitioner/tech-1",
        3_600_000,
    );
    assert!(matches!(refused, Err(accounts::AccountError::Invalid(_))));
    let tech = user(
        h,
        &admin,
        Role::LabTechnician,
        "Practitioner/tech-1|Organization/lab-1",
        "tech",
    )
    .await;
    let ours = put(h, order(&w.pid, "lab-1", "active"));
    let theirs = put(h, order(&w.pid, "lab-2", "active"));
    let done = put(h, order(&w.pid, "lab-1", "completed"));

    // A result for an open order addressed to the lab: accepted.
    let r = tech
        .call(
            h,
            "POST",
            "/fhir/Observation",
            Some(result_for(&w.pid, Some(&ours))),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let posted = r.json["id"].as_str().unwrap().to_string();
    // No order, another lab's order, a completed order: refused.
    for sr in [None, Some(theirs.as_str()), Some(done.as_str())] {
        let r = tech
            .call(h, "POST", "/fhir/Observation", Some(result_for(&w.pid, sr)))
            .await;
        r.assert_outcome(StatusCode::FORBIDDEN);
        assert!(
            r.json["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains("no-lab-order"),
            "{}",
            r.json
        );
    }
    // A correction of the posted result is an update; a result moved onto another lab's
    // order is not.
    let mut corrected = result_for(&w.pid, Some(&ours));
    corrected["id"] = json!(posted);
    let r = tech
        .call(
            h,
            "PUT",
            &format!("/fhir/Observation/{posted}"),
            Some(corrected.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    corrected["basedOn"] = json!([{"reference": format!("ServiceRequest/{theirs}")}]);
    tech.call(
        h,
        "PUT",
        &format!("/fhir/Observation/{posted}"),
        Some(corrected),
    )
    .await
    .assert_outcome(StatusCode::FORBIDDEN);
    // The order itself is readable; the chart is not.
    let r = tech
        .call(h, "GET", &format!("/fhir/ServiceRequest/{ours}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    for path in [
        format!("/fhir/ServiceRequest/{theirs}"),
        format!("/fhir/Observation/{}", w.obs),
        format!("/fhir/Observation/{posted}"),
        format!("/fhir/Patient/{}", w.pid),
        format!("/fhir/Observation?patient={}", w.pid),
    ] {
        tech.call(h, "GET", &path, None)
            .await
            .assert_outcome(StatusCode::FORBIDDEN);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_too_much_patient_data_is_refused_until_the_window_ends_and_alerts_once() {
    use medvault_server::api::{router, AppState};
    use medvault_server::limits::ReadLimits;
    use std::sync::{Arc, Mutex};
    let mut w = world().await;
    let state =
        AppState::new(w.h.repo.clone(), crate::support::BASE).with_read_limits(ReadLimits {
            max: 3,
            window_ms: 60_000,
        });
    let alerts: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = alerts.clone();
    state
        .read_limiter()
        .set_alert(Arc::new(move |m: String| seen.lock().unwrap().push(m)));
    w.h.app = router(state);
    let h = &w.h;
    let chart = format!("/fhir/Observation/{}", w.obs);
    let patient = format!("/fhir/Patient/{}", w.pid);
    // Three answers carrying the patient's data are within the limit.
    for path in [&chart, &patient, &chart] {
        assert_eq!(w.gp.call(h, "GET", path, None).await.status, StatusCode::OK);
    }
    assert_eq!(alerts.lock().unwrap().len(), 1);
    // The fourth read is refused, with when to come back; writes are not reads.
    let r = w.gp.call(h, "GET", &chart, None).await;
    r.assert_outcome(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), Some("60"));
    let r =
        w.gp.call(
            h,
            "POST",
            "/fhir/Observation",
            Some(observation(&w.pid, "8310-5", "2024-02-02", 37)),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    // Other accounts are not affected; refusals count nothing and alert no more.
    assert_eq!(
        w.patient.call(h, "GET", &chart, None).await.status,
        StatusCode::OK
    );
    w.gp.call(h, "GET", &chart, None)
        .await
        .assert_outcome(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(alerts.lock().unwrap().len(), 1);
    assert!(alerts.lock().unwrap()[0].contains("3 or more patient records within 60 s"));
    // The refusal is in the ledger.
    let got = entries_since(h, h.data.store.ledger_size().unwrap() - 1);
    assert_eq!(got[0].4, "phi-read-limit");
    // A new window: reads again.
    h.clock.advance(60_000);
    let gp = signed_in(h, "gp").await;
    assert_eq!(gp.call(h, "GET", &chart, None).await.status, StatusCode::OK);
}

fn tx(kind: &str, entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": kind, "entry": entries})
}

fn post_entry(resource: Value) -> Value {
    let rtype = resource["resourceType"].as_str().unwrap().to_string();
    json!({"resource": resource, "request": {"method": "POST", "url": rtype}})
}

fn observations_of(h: &Harness, pid: &str) -> usize {
    h.repo
        .search("Observation", &[("patient".into(), pid.into())])
        .unwrap()
        .entries
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bundle_entry_is_decided_for_the_signed_in_caller() {
    let w = world().await;
    let h = &w.h;
    let before = observations_of(h, &w.pid);
    // In care: a transaction writing to the chart and reading it.
    let r =
        w.gp.call(
            h,
            "POST",
            "/fhir",
            Some(tx(
                "transaction",
                vec![
                    post_entry(observation(&w.pid, "8310-5", "2024-02-02", 37)),
                    json!({"request": {"method": "GET", "url": format!("Patient/{}", w.pid)}}),
                ],
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(observations_of(h, &w.pid), before + 1);

    // Outside care: the whole transaction is refused and nothing is written, even when
    // the refused entry comes after allowed ones.
    let r =
        w.gp.call(
            h,
            "POST",
            "/fhir",
            Some(tx(
                "transaction",
                vec![
                    post_entry(observation(&w.pid, "8310-5", "2024-02-03", 38)),
                    post_entry(observation(&w.other_pid, "8310-5", "2024-02-03", 38)),
                ],
            )),
        )
        .await;
    r.assert_outcome(StatusCode::FORBIDDEN);
    assert_eq!(observations_of(h, &w.pid), before + 1);
    assert_eq!(observations_of(h, &w.other_pid), 1);
    // Reading another chart inside a transaction, moving a resource into one, searching,
    // and conditional creates: refused.
    let mut moved = h
        .repo
        .read("Observation", &w.obs)
        .unwrap()
        .resource
        .unwrap();
    moved["subject"] = json!({"reference": format!("Patient/{}", w.other_pid)});
    for entry in [
        json!({"request": {"method": "GET", "url": format!("Patient/{}", w.other_pid)}}),
        json!({"resource": moved, "request": {"method": "PUT", "url": format!("Observation/{}", w.obs)}}),
        json!({"request": {"method": "GET", "url": format!("Observation?patient={}", w.pid)}}),
        json!({"resource": observation(&w.pid, "1-1", "2024-01-01", 1),
               "request": {"method": "POST", "url": "Observation", "ifNoneExist": "code=1-1"}}),
    ] {
        w.gp.call(h, "POST", "/fhir", Some(tx("transaction", vec![entry])))
            .await
            .assert_outcome(StatusCode::FORBIDDEN);
    }
    assert_eq!(
        h.repo
            .read("Observation", &w.obs)
            .unwrap()
            .resource
            .unwrap()["subject"]["reference"],
        format!("Patient/{}", w.pid)
    );

    // A batch decides entry by entry.
    let r = w
        .stranger
        .call(
            h,
            "POST",
            "/fhir",
            Some(tx(
                "batch",
                vec![
                    json!({"request": {"method": "GET", "url": format!("Observation/{}", w.obs)}}),
                    json!({"request": {"method": "GET", "url": "Practitioner?name=x"}}),
                    json!({"request": {"method": "DELETE", "url": format!("Observation/{}", w.obs)}}),
                ],
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let statuses: Vec<&str> = r.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["403", "403", "403"]);
    assert!(h.repo.read("Observation", &w.obs).is_ok());

    // Reception registers a patient with an appointment in one transaction (the new
    // patient's entries are decided as a new chart), but writes nothing clinical.
    let patient_entry = json!({
        "fullUrl": "urn:uuid:0b8c5e0c-52c3-4a6e-9f55-3c9a1e2d7f10",
        "resource": patient("New", "Nia", "1990-05-05"),
        "request": {"method": "POST", "url": "Patient"}
    });
    let appointment = json!({
        "resourceType": "Appointment", "status": "booked",
        "participant": [{"actor": {"reference": "urn:uuid:0b8c5e0c-52c3-4a6e-9f55-3c9a1e2d7f10"}, "status": "accepted"}]
    });
    let r = w
        .reception
        .call(
            h,
            "POST",
            "/fhir",
            Some(tx(
                "transaction",
                vec![patient_entry.clone(), post_entry(appointment)],
            )),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let mut clinical = observation("x", "8310-5", "2024-02-02", 37);
    clinical["subject"] = json!({"reference": "urn:uuid:0b8c5e0c-52c3-4a6e-9f55-3c9a1e2d7f10"});
    w.reception
        .call(
            h,
            "POST",
            "/fhir",
            Some(tx("transaction", vec![patient_entry, post_entry(clinical)])),
        )
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
}

/// A large create-only transaction is planned while a pool thread already prepares its
/// first entries (`PIPELINE_MIN`); every entry is still decided for the signed-in caller
/// before anything is written, and a refusal wins over an earlier entry's invalid data
/// (decisions come first, as for small transactions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transactions_are_decided_entry_by_entry_before_anything_is_written() {
    let w = world().await;
    let h = &w.h;
    let total = |pid: &str| {
        h.repo
            .search("Observation", &[("patient".into(), pid.into())])
            .unwrap()
            .total
    };
    let (mine, theirs) = (total(&w.pid), total(&w.other_pid));
    let pipelined = h.repo.pipelined_commits();
    let entries = |refused: Option<usize>, invalid: Option<usize>| -> Vec<Value> {
        (0..24)
            .map(|i| {
                let pid = if Some(i) == refused {
                    &w.other_pid
                } else {
                    &w.pid
                };
                let date = if Some(i) == invalid {
                    "2024-13-01"
                } else {
                    "2024-03-03"
                };
                post_entry(observation(pid, "8310-5", date, 36 + i as u32 % 3))
            })
            .collect()
    };
    // In care throughout: committed whole.
    let r =
        w.gp.call(
            h,
            "POST",
            "/fhir",
            Some(tx("transaction", entries(None, None))),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(h.repo.pipelined_commits(), pipelined + 1, "pipelined");
    assert_eq!(total(&w.pid), mine + 24);
    // One entry of another chart, after an invalid one: refused, nothing written.
    for (refused, invalid) in [(Some(17), Some(5)), (Some(0), None), (Some(23), None)] {
        w.gp.call(
            h,
            "POST",
            "/fhir",
            Some(tx("transaction", entries(refused, invalid))),
        )
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    }
    assert_eq!(h.repo.pipelined_commits(), pipelined + 4);
    assert_eq!((total(&w.pid), total(&w.other_pid)), (mine + 24, theirs));
    // In care but invalid: the first invalid entry is the error.
    let r =
        w.gp.call(
            h,
            "POST",
            "/fhir",
            Some(tx("transaction", entries(None, Some(9)))),
        )
        .await;
    r.assert_outcome(StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json["issue"][0]["expression"][0],
        "Bundle.entry[9].resource.Observation.effectiveDateTime"
    );
    assert_eq!(total(&w.pid), mine + 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_patches_and_conditional_creates_count_towards_the_read_limit() {
    use medvault_server::api::{router, AppState};
    use medvault_server::limits::ReadLimits;
    let mut w = world().await;
    w.h.app = router(
        AppState::new(w.h.repo.clone(), crate::support::BASE).with_read_limits(ReadLimits {
            max: 2,
            window_ms: 60_000,
        }),
    );
    let h = &w.h;
    let read_in_batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Observation/{}", w.obs)}}]});
    // A batch read counts ...
    let r =
        w.gp.call(h, "POST", "/fhir", Some(read_in_batch.clone()))
            .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    // ... and so does a patch (it answers with the merged resource).
    let r =
        w.gp.call_with(
            h,
            "PATCH",
            &format!("/fhir/Observation/{}", w.obs),
            Some(json!([])),
            &[("content-type", "application/json-patch+json")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    // The limit is reached: batches, patches and plain reads are all refused now.
    w.gp.call(h, "POST", "/fhir", Some(read_in_batch))
        .await
        .assert_outcome(StatusCode::TOO_MANY_REQUESTS);
    w.gp.call_with(
        h,
        "PATCH",
        &format!("/fhir/Observation/{}", w.obs),
        Some(json!([])),
        &[("content-type", "application/json-patch+json")],
    )
    .await
    .assert_outcome(StatusCode::TOO_MANY_REQUESTS);
    w.gp.call(h, "GET", &format!("/fhir/Observation/{}", w.obs), None)
        .await
        .assert_outcome(StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_refusals_are_in_the_refused_patients_log() {
    let w = world().await;
    let h = &w.h;
    let before = h.data.store.ledger_size().unwrap();
    let r = w
        .stranger
        .call(
            h,
            "POST",
            "/fhir",
            Some(json!({"resourceType": "Bundle", "type": "batch", "entry": [
                {"request": {"method": "GET", "url": format!("Observation/{}", w.obs)}}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let got = entries_since(h, before);
    assert!(
        got.iter()
            .any(|e| e.0 == "bundle" && e.2 == w.pid && !e.3 && e.4 == "not-in-care"),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_technicians_cannot_probe_charts_through_conditions_searches_patches_or_put() {
    let w = world().await;
    let h = &w.h;
    let keys = h.repo.vault().keys().unwrap();
    let admin = accounts::load_by_login(&*h.data.store, &keys, "admin")
        .unwrap()
        .unwrap();
    let tech = user(
        h,
        &admin,
        Role::LabTechnician,
        "Practitioner/tech-1|Organization/lab-1",
        "tech",
    )
    .await;
    let ours = put(h, order(&w.pid, "lab-1", "active"));
    let done = put(h, order(&w.pid, "lab-1", "completed"));
    // A conditional create is a search of the chart: refused, whatever would match.
    let r = tech
        .call_with(
            h,
            "POST",
            "/fhir/Observation",
            Some(result_for(&w.pid, Some(&ours))),
            &[("if-none-exist", &format!("patient={}&code=8867-4", w.pid))],
        )
        .await;
    r.assert_outcome(StatusCode::FORBIDDEN);
    // A search naming the patient would be filtered, and its paging would count what is
    // hidden: refused.
    tech.call(
        h,
        "GET",
        &format!("/fhir/ServiceRequest?patient={}&_count=1", w.pid),
        None,
    )
    .await
    .assert_outcome(StatusCode::FORBIDDEN);
    // A PUT that creates a result on a completed order is a create, and refused.
    let mut late = result_for(&w.pid, Some(&done));
    late["id"] = json!("late-result");
    tech.call(h, "PUT", "/fhir/Observation/late-result", Some(late))
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    // A patch of its own result answers with it: refused too (no reads of results).
    let r = tech
        .call(
            h,
            "POST",
            "/fhir/Observation",
            Some(result_for(&w.pid, Some(&ours))),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let posted = r.json["id"].as_str().unwrap().to_string();
    tech.call_with(
        h,
        "PATCH",
        &format!("/fhir/Observation/{posted}"),
        Some(json!([{"op": "test", "path": "/status", "value": "final"}])),
        &[("content-type", "application/json-patch+json")],
    )
    .await
    .assert_outcome(StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_per_patient_and_the_patient_is_told() {
    let w = world().await;
    let h = &w.h;
    // Reception issues a second patient token for a record that already has an account.
    let r = w
        .reception
        .call(
            h,
            "POST",
            "/admin/tokens",
            Some(json!({"role": "patient", "link": format!("Patient/{}", w.pid)})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let token = r.json["token"].as_str().unwrap().to_string();
    let r = crate::identity::http_register(h, &token, "mallory", "NID-mallory", PASSWORD).await;
    r.assert_outcome(StatusCode::CONFLICT);
    // For the other patient it works once, and that patient finds a notice in the record;
    // the token's issue is in that patient's log.
    let before = h.data.store.ledger_size().unwrap();
    let r = w
        .reception
        .call(
            h,
            "POST",
            "/admin/tokens",
            Some(json!({"role": "patient", "link": format!("Patient/{}", w.other_pid)})),
        )
        .await;
    let token = r.json["token"].as_str().unwrap().to_string();
    let r = crate::identity::http_register(h, &token, "ed", "NID-ed", PASSWORD).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let notices = h
        .repo
        .search("Communication", &[("patient".into(), w.other_pid.clone())])
        .unwrap();
    assert_eq!(notices.entries.len(), 1);
    let got = entries_since(h, before);
    assert!(
        got.iter()
            .any(|e| e.0 == "issue-token" && e.2 == w.other_pid && e.4.contains("role=patient")),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_is_for_people_and_its_reason_is_in_the_ledger() {
    let w = world().await;
    let h = &w.h;
    let op = format!("/fhir/Patient/{}/$break-glass", w.pid);
    let before = h.data.store.ledger_size().unwrap();
    let r = w
        .stranger
        .call(
            h,
            "POST",
            &op,
            Some(break_glass_body("cardiac arrest in bay 3")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let keys = h.repo.vault().keys().unwrap();
    let purposes: Vec<String> = h
        .data
        .store
        .ledger_entries(before, 100)
        .unwrap()
        .iter()
        .map(|rec| medvault_server::ledger::open_entry(&keys, rec).unwrap().0)
        .filter(|e| e.action.as_str() == "break-glass")
        .map(|e| e.purpose.as_str().to_string())
        .collect();
    assert_eq!(purposes, ["cardiac arrest in bay 3"]);
}

/// The policy's reason for a refusal, from the OperationOutcome's diagnostics.
fn reason(r: &Resp) -> String {
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.json);
    r.json["issue"][0]["diagnostics"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Every way in to a resource, not only read and search by `patient=`, is decided the same
/// way: history of a type or an instance, an old version, searches posted as forms, naming
/// several patients, by `subject` or by `_id`, and writes of every kind. Each route that
/// names a chart is shown to work on the caller's own chart first, so its refusal on the
/// other chart is the policy's decision about that chart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_to_another_chart_is_refused() {
    let w = world().await;
    let h = &w.h;
    let (pid, other) = (w.pid.as_str(), w.other_pid.as_str());
    let own_obs = w.obs.as_str();
    let other_obs = put(h, observation(other, "8867-4", "2024-03-03", 91));
    let form = "application/x-www-form-urlencoded";
    for (who, caller) in [("patient", &w.patient), ("gp", &w.gp)] {
        // Reads that name one chart: allowed on the caller's own, refused on the other.
        for (own, theirs) in [
            (
                format!("/fhir/Observation/{own_obs}/_history"),
                format!("/fhir/Observation/{other_obs}/_history"),
            ),
            (
                format!("/fhir/Observation/{own_obs}/_history/1"),
                format!("/fhir/Observation/{other_obs}/_history/1"),
            ),
            (
                format!("/fhir/Patient/{pid}/_history"),
                format!("/fhir/Patient/{other}/_history"),
            ),
            (
                format!("/fhir/Observation?subject=Patient/{pid}"),
                format!("/fhir/Observation?subject=Patient/{other}"),
            ),
        ] {
            let r = caller.call(h, "GET", &own, None).await;
            assert_eq!(r.status, StatusCode::OK, "{who} GET {own}: {}", r.json);
            let r = caller.call(h, "GET", &theirs, None).await;
            let why = reason(&r);
            assert!(
                why.contains("not-own-compartment") || why.contains("not-in-care"),
                "{who} GET {theirs}: {why}"
            );
        }
        for (own, theirs) in [
            (format!("patient={pid}"), format!("patient={other}")),
            (
                format!("subject=Patient/{pid}"),
                format!("subject=Patient/{other}"),
            ),
        ] {
            let r = caller
                .call_raw(h, "POST", "/fhir/Observation/_search", form, &own)
                .await;
            assert_eq!(
                r.json["entry"].as_array().map(Vec::len),
                Some(1),
                "{who} _search {own}: {}",
                r.json
            );
            let r = caller
                .call_raw(h, "POST", "/fhir/Observation/_search", form, &theirs)
                .await;
            let why = reason(&r);
            assert!(
                why.contains("not-own-compartment") || why.contains("not-in-care"),
                "{who} _search {theirs}: {why}"
            );
        }
        // Routes that name no single chart are refused whatever they would find (a filtered
        // answer's paging would still tell how much is hidden), and lists of patients are
        // not a chart.
        for path in [
            "/fhir/Observation/_history".to_string(),
            "/fhir/Patient/_history".to_string(),
            "/fhir/Patient".to_string(),
            format!("/fhir/Patient?_id={other}"),
            format!("/fhir/Observation?_id={other_obs}"),
            format!("/fhir/Observation?patient={pid},{other}"),
            format!("/fhir/Observation?patient={other}&patient={pid}"),
        ] {
            let r = caller.call(h, "GET", &path, None).await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{who} GET {path}: {}",
                r.json
            );
        }
        for body in [format!("patient={pid},{other}"), String::new()] {
            let r = caller
                .call_raw(h, "POST", "/fhir/Observation/_search", form, &body)
                .await;
            assert_eq!(
                r.status,
                StatusCode::FORBIDDEN,
                "{who} _search {body:?}: {}",
                r.json
            );
        }
        // Clauses that AND the caller's own chart with the other one's find nothing.
        for path in [
            format!("/fhir/Observation?patient={pid}&subject=Patient/{other}"),
            format!("/fhir/Observation?patient={pid}&_id={other_obs}"),
            format!("/fhir/Observation?patient={pid}&patient={other}"),
        ] {
            let r = caller.call(h, "GET", &path, None).await;
            if r.status == StatusCode::FORBIDDEN {
                continue;
            }
            assert_eq!(r.status, StatusCode::OK, "{who} GET {path}: {}", r.json);
            assert_eq!(r.json["total"], 0, "{who} GET {path}: {}", r.json);
        }
    }
    // Writes, by the GP, who may write in their own chart: the same PUT, PATCH and DELETE
    // work there and are refused on the other chart's resource, including a PUT that
    // would move it into the GP's own chart. (The patient may write nothing clinical at
    // all: see `others_are_refused_by_role_or_relationship`.)
    let gp = &w.gp;
    let mine = put(h, observation(pid, "8867-4", "2024-03-04", 72));
    let patch = json!([{"op": "replace", "path": "/status", "value": "amended"}]);
    let patch_type = [("content-type", "application/json-patch+json")];
    for (id, expect) in [(mine.as_str(), true), (other_obs.as_str(), false)] {
        let mut moved = observation(pid, "8867-4", "2024-03-03", 1);
        moved["id"] = json!(id);
        let path = format!("/fhir/Observation/{id}");
        let answers = [
            gp.call(h, "PUT", &path, Some(moved)).await,
            gp.call_with(h, "PATCH", &path, Some(patch.clone()), &patch_type)
                .await,
            gp.call(h, "DELETE", &path, None).await,
        ];
        for r in answers {
            if expect {
                assert!(r.status.is_success(), "gp on {id}: {} {}", r.status, r.json);
            } else {
                let why = reason(&r);
                assert!(why.contains("not-in-care"), "gp on {id}: {why}");
            }
        }
    }
    // Nothing of the other chart was changed: still version 1, as it was written.
    let stored = h.repo.read("Observation", &other_obs).unwrap();
    assert_eq!(stored.version, 1);
    let stored = stored.resource.unwrap();
    assert_eq!(stored["status"], "final");
    assert_eq!(stored["subject"]["reference"], format!("Patient/{other}"));
}

/// Break-glass never opens a chart without the patient's notice: when the notice (a
/// Communication in the chart) cannot be stored, nothing is granted and the chart stays
/// closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_grants_nothing_when_the_patients_notice_cannot_be_stored() {
    let w = world().await;
    let h = &w.h;
    let obs = format!("/fhir/Observation/{}", w.obs);
    let op = format!("/fhir/Patient/{}/$break-glass", w.pid);
    let raw = rusqlite::Connection::open(h.db_path()).unwrap();
    raw.execute_batch(
        "CREATE TRIGGER no_notice BEFORE INSERT ON resource_version
         WHEN NEW.rtype = 'Communication' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    )
    .unwrap();
    let r = w
        .stranger
        .call(
            h,
            "POST",
            &op,
            Some(break_glass_body("unconscious in the ER")),
        )
        .await;
    assert!(!r.status.is_success(), "{}", r.json);
    assert_eq!(r.json["resourceType"], "OperationOutcome");
    let grants: i64 = raw
        .query_row("SELECT count(*) FROM break_glass_grant", [], |r| r.get(0))
        .unwrap();
    assert_eq!(grants, 0);
    w.stranger
        .call(h, "GET", &obs, None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    // With the notice possible again, the same request opens the chart (so the refusal
    // above was the notice's).
    raw.execute_batch("DROP TRIGGER no_notice").unwrap();
    let r = w
        .stranger
        .call(
            h,
            "POST",
            &op,
            Some(break_glass_body("unconscious in the ER")),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let r = w.stranger.call(h, "GET", &obs, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
}
