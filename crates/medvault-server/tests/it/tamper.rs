//! What an attacker with the database file can and cannot do: no searchable plaintext in the
//! file, and edited, swapped or rolled-back ciphertext rows fail loudly and are counted.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::{observation, patient, Harness};

fn files_bytes(h: &Harness) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in walk(&h.data.path) {
        all.extend(std::fs::read(entry).unwrap());
    }
    all
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    contains_bytes(hay, needle.as_bytes())
}

fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_holds_none_of_the_plaintext() {
    let h = Harness::unsealed();
    let mut p = patient("Zebrowska", "Quintessa", "1987-04-23");
    p["identifier"] =
        json!([{"system": "urn:oid:2.16.840.1.113883.4.1", "value": "SSN-987-65-4321"}]);
    p["telecom"] = json!([{"system": "phone", "value": "+1-555-0199"}]);
    let pid = h.create(p).await;
    let mut o = observation(&pid, "72166-2", "2024-02-29", 123);
    o["note"] = json!([{"text": "Patient reports Xylophone allergy"}]);
    h.create(o).await;
    // Large resource through the blob store too.
    let big = format!("Quintessa-{}", "y".repeat(300 * 1024));
    h.create(json!({
        "resourceType": "DocumentReference", "status": "current",
        "subject": {"reference": format!("Patient/{pid}")},
        "description": big,
        "content": [{"attachment": {"contentType": "text/plain", "title": "Zebrowska letter"}}],
    }))
    .await;
    // Searches by these values work (so the index really holds them, blinded).
    assert_eq!(
        h.call("GET", "/fhir/Patient?family=Zebrowska", None)
            .await
            .json["total"],
        1
    );
    assert_eq!(
        h.call("GET", "/fhir/Observation?code=72166-2", None)
            .await
            .json["total"],
        1
    );
    let bytes = files_bytes(&h);
    assert!(bytes.len() > 300 * 1024, "blob missing from the scan");
    for needle in [
        "Zebrowska",
        "zebrowska",
        "Quintessa",
        "quintessa",
        "1987-04-23",
        "SSN-987-65-4321",
        "555-0199",
        "72166-2",
        "2024-02-29",
        "Xylophone",
        "http://loinc.org",
        "female",
    ] {
        assert!(
            !contains(&bytes, needle),
            "plaintext {needle:?} found in the data directory"
        );
    }
}

/// Nothing secret reaches the data directory either: not the root key or any share of it
/// (texts or values), not the bootstrap token, not a derived key, and not an account's
/// login name, national id or password, after init, unseal, registration and a key rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_holds_no_key_share_token_or_login() {
    use medvault_crypto::share_text::ShareText;
    use medvault_server::accounts::{self, Role};
    let h = Harness::sealed(2, 3, 11);
    for share in &h.shares[..2] {
        h.repo.vault().submit_share(share).unwrap();
    }
    let keys = h.repo.vault().keys().unwrap();
    let setup = medvault_server::login::server_setup(
        &*h.data.store,
        &keys,
        &medvault_crypto::SystemRandom::new(),
    )
    .unwrap();
    let admin =
        crate::identity::register(&h, &setup, &h.bootstrap, "zebulon-admin", "NID-5551234-Z")
            .unwrap();
    let token = accounts::issue_token(
        &*h.data.store,
        &keys,
        &medvault_crypto::SystemRandom::new(),
        medvault_server::clock::Clock::now_ms(&*h.clock),
        &admin,
        Role::Nurse,
        "Practitioner/n1",
        600_000,
    )
    .unwrap();
    crate::identity::register(&h, &setup, &token, "yolanda-nurse", "NID-7778888-Q").unwrap();
    h.create(patient("Quimby", "Q", "1950-05-05")).await;
    h.repo.vault().rotate(&h.shares[2]).unwrap();
    let keys = h.repo.vault().keys().unwrap();
    h.create(patient("Quimby", "R", "1951-05-05")).await;

    let parsed: Vec<ShareText> = h
        .shares
        .iter()
        .map(|s| ShareText::parse(s).unwrap())
        .collect();
    let root =
        medvault_crypto::shamir::combine(&[parsed[0].share().clone(), parsed[1].share().clone()])
            .unwrap();
    // It is the vault's root: its check value is the one the vault stores.
    let stored = medvault_store::Store::vault(&*h.data.store)
        .unwrap()
        .unwrap();
    let root_key = medvault_crypto::SecretKey::from_slice(&root).unwrap();
    assert_eq!(root_key.check_value(), stored.check_value);
    let bytes = files_bytes(&h);
    // The scan sees the identity tables: the registration token is there, as its hash.
    let token_hash = medvault_crypto::keys::sha256(token.as_bytes());
    assert!(
        contains_bytes(&bytes, &token_hash),
        "the scan missed the token table"
    );
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("root key".into(), root.to_vec()),
        ("integrity key".into(), keys.integrity().expose().to_vec()),
        ("bootstrap token".into(), h.bootstrap.as_bytes().to_vec()),
        ("registration token".into(), token.as_bytes().to_vec()),
        ("password".into(), b"correct horse battery staple".to_vec()),
    ];
    for (i, (text, share)) in h.shares.iter().zip(&parsed).enumerate() {
        secrets.push((format!("share {i} text"), text.as_bytes().to_vec()));
        secrets.push((format!("share {i} value"), share.share().y().to_vec()));
    }
    for login in [
        "zebulon-admin",
        "yolanda-nurse",
        "NID-5551234-Z",
        "NID-7778888-Q",
    ] {
        secrets.push((login.into(), login.as_bytes().to_vec()));
        secrets.push((login.into(), login.to_lowercase().into_bytes()));
    }
    // Keys also as hex and base64, the forms they would take if written as text.
    use base64::Engine as _;
    let keys_only: Vec<(String, Vec<u8>)> = secrets
        .iter()
        .filter(|(what, _)| what.contains("key") || what.contains("value"))
        .cloned()
        .collect();
    for (what, raw) in keys_only {
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        secrets.push((format!("{what} (hex)"), hex.into_bytes()));
        for engine in [
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            // The first 30 bytes' 40 characters: the same whatever padding follows.
            secrets.push((
                format!("{what} (base64)"),
                engine.encode(&raw[..30]).into_bytes(),
            ));
        }
    }
    for (what, needle) in &secrets {
        assert!(needle.len() >= 12, "{what} is too short to look for");
        assert!(
            !contains_bytes(&bytes, needle),
            "{what} found in the data directory"
        );
    }
}

// The server's ids are UUIDs, which the store keeps as their 16 bytes (migration 0010):
// `unhex(replace(?, '-', ''))` is the column value of such an id.
fn body_of(conn: &rusqlite::Connection, id: &str, version: i64) -> Vec<u8> {
    conn.query_row(
        "SELECT body FROM resource_version WHERE id = unhex(replace(?, '-', '')) AND version = ?",
        rusqlite::params![id, version],
        |r| r.get(0),
    )
    .unwrap()
}

fn owner_of(conn: &rusqlite::Connection, id: &str) -> Vec<u8> {
    conn.query_row(
        "SELECT owner FROM resource_version WHERE id = unhex(replace(?, '-', ''))",
        [id],
        |r| r.get(0),
    )
    .unwrap()
}

fn set_body(conn: &rusqlite::Connection, id: &str, version: i64, body: &[u8]) {
    let n = conn
        .execute(
            "UPDATE resource_version SET body = ? WHERE id = unhex(replace(?, '-', '')) AND version = ?",
            rusqlite::params![body, id, version],
        )
        .unwrap();
    assert_eq!(n, 1);
}

async fn assert_integrity_failure(h: &Harness, path: &str, expected_count: u64) {
    let r = h.call("GET", path, None).await;
    r.assert_outcome(StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.json["issue"][0]["code"], "security");
    assert_eq!(h.repo.integrity_errors(), expected_count);
    let health = h.call("GET", "/sys/health", None).await;
    assert_eq!(health.json["integrity_errors"], expected_count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_ciphertext_byte_fails_the_read() {
    let h = Harness::unsealed();
    let id = h.create(patient("Edit", "Me", "1970-01-01")).await;
    let conn = rusqlite::Connection::open(h.db_path()).unwrap();
    let mut body = body_of(&conn, &id, 1);
    let mid = body.len() / 2;
    body[mid] ^= 0x01;
    set_body(&conn, &id, 1, &body);
    assert_integrity_failure(&h, &format!("/fhir/Patient/{id}"), 1).await;
    // Searches that would return it fail too rather than serve or silently skip it.
    h.call("GET", "/fhir/Patient?family=edit", None)
        .await
        .assert_outcome(StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciphertexts_swapped_across_patients_fail_the_read() {
    let h = Harness::unsealed();
    let a = h.create(patient("Alpha", "A", "1970-01-01")).await;
    let b = h.create(patient("Bravo", "B", "1980-01-01")).await;
    let oa = h.create(observation(&a, "8867-4", "2024-01-01", 60)).await;
    let ob = h.create(observation(&b, "8867-4", "2024-01-01", 90)).await;
    let conn = rusqlite::Connection::open(h.db_path()).unwrap();
    let (ba, bb) = (body_of(&conn, &oa, 1), body_of(&conn, &ob, 1));
    set_body(&conn, &oa, 1, &bb);
    set_body(&conn, &ob, 1, &ba);
    assert_integrity_failure(&h, &format!("/fhir/Observation/{oa}"), 1).await;
    assert_integrity_failure(&h, &format!("/fhir/Observation/{ob}"), 2).await;
    // Swapping the owner column along with the body does not help: the AAD binds the id.
    let (wa, wb) = (owner_of(&conn, &oa), owner_of(&conn, &ob));
    for (owner, id) in [(&wb, &oa), (&wa, &ob)] {
        let n = conn
            .execute(
                "UPDATE resource_version SET owner = ? WHERE id = unhex(replace(?, '-', ''))",
                rusqlite::params![owner, id],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    assert_integrity_failure(&h, &format!("/fhir/Observation/{oa}"), 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_rolled_back_to_an_older_version_fails_the_read() {
    let h = Harness::unsealed();
    let id = h.create(patient("Rollback", "R", "1970-01-01")).await;
    let mut v = h
        .call("GET", &format!("/fhir/Patient/{id}"), None)
        .await
        .json;
    v["gender"] = json!("male");
    assert_eq!(
        h.call("PUT", &format!("/fhir/Patient/{id}"), Some(v))
            .await
            .status,
        StatusCode::OK
    );
    let conn = rusqlite::Connection::open(h.db_path()).unwrap();
    let old = body_of(&conn, &id, 1);
    set_body(&conn, &id, 2, &old);
    assert_integrity_failure(&h, &format!("/fhir/Patient/{id}"), 1).await;
    // The untouched old version is still readable by vread.
    assert_eq!(
        h.call("GET", &format!("/fhir/Patient/{id}/_history/1"), None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrapped_data_key_moved_to_another_patient_fails() {
    let h = Harness::unsealed();
    let a = h.create(patient("Key", "A", "1970-01-01")).await;
    let b = h.create(patient("Key", "B", "1970-01-01")).await;
    let conn = rusqlite::Connection::open(h.db_path()).unwrap();
    let wrapped_a: Vec<u8> = conn
        .query_row(
            "SELECT wrapped FROM data_key WHERE owner = ?",
            [owner_of(&conn, &a)],
            |r| r.get(0),
        )
        .unwrap();
    conn.execute(
        "UPDATE data_key SET wrapped = ? WHERE owner = ?",
        rusqlite::params![wrapped_a, owner_of(&conn, &b)],
    )
    .unwrap();
    // A fresh key cache, as after a restart.
    h.repo.vault().seal(&h.shares[0]).unwrap();
    h.repo.vault().submit_share(&h.shares[0]).unwrap();
    assert_integrity_failure(&h, &format!("/fhir/Patient/{b}"), 1).await;
    assert_eq!(
        h.call("GET", &format!("/fhir/Patient/{a}"), None)
            .await
            .status,
        StatusCode::OK
    );
}

/// Two resources with the same id, version and patient that differ only in their type
/// cannot take each other's place. (Both the AAD, which binds the type, and the check that
/// the decrypted content names its row's type refuse this; `repo.rs`'s unit test
/// `an_envelope_opens_only_under_its_own_type_id_version_and_owner` tests the AAD alone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ciphertexts_swapped_across_types_fail_the_read() {
    let h = Harness::unsealed();
    let p = h.create(patient("Types", "T", "1970-01-01")).await;
    let mut obs = observation(&p, "8867-4", "2024-01-01", 60);
    obs["id"] = json!("same-1");
    let cond = json!({
        "resourceType": "Condition",
        "id": "same-1",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
        "subject": {"reference": format!("Patient/{p}")},
    });
    for (path, body) in [
        ("/fhir/Observation/same-1", obs),
        ("/fhir/Condition/same-1", cond),
    ] {
        let r = h.call("PUT", path, Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    }
    let conn = rusqlite::Connection::open(h.db_path()).unwrap();
    let row = |rtype: &str| -> (Vec<u8>, Vec<u8>) {
        conn.query_row(
            "SELECT body, owner FROM resource_version WHERE rtype = ? AND id = 'same-1'",
            [rtype],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    };
    let (obs_body, obs_owner) = row("Observation");
    let (cond_body, cond_owner) = row("Condition");
    // Same patient, so the owner (and the data key) are the same: only the type differs.
    assert_eq!(obs_owner, cond_owner);
    for (rtype, body) in [("Observation", &cond_body), ("Condition", &obs_body)] {
        let n = conn
            .execute(
                "UPDATE resource_version SET body = ? WHERE rtype = ? AND id = 'same-1'",
                rusqlite::params![body, rtype],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    assert_integrity_failure(&h, "/fhir/Observation/same-1", 1).await;
    assert_integrity_failure(&h, "/fhir/Condition/same-1", 2).await;
}
