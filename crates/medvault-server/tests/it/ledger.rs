//! The audit ledger: every request is recorded with its outcome, checkpoints and proofs verify
//! against the vault's key, a failed ledger write fails the action, and `verify` names the
//! first tampered entry of a real SQLite file.

use axum::http::StatusCode;
use medvault_ledger::VerifierKey;
use medvault_ledger::{
    open, verify_consistency, verify_inclusion, Checkpoint, Entry, Hash, Outcome,
};
use medvault_server::ledger::{
    open_entry, verify, Audit, Event, LedgerConfig, LedgerError, Verifier,
};
use medvault_server::{serve, ServeOptions};
use medvault_store::Store;
use serde_json::json;

use crate::support::{observation, patient, Harness};

fn entries(h: &Harness) -> Vec<Entry> {
    let keys = h.repo.vault().keys().unwrap();
    h.data
        .store
        .ledger_entries(0, 100_000)
        .unwrap()
        .iter()
        .map(|rec| open_entry(&keys, rec).unwrap().0)
        .collect()
}

fn summary(e: &Entry) -> (String, String, String, Outcome, String) {
    (
        e.action.as_str().to_string(),
        e.resource_type.as_str().to_string(),
        e.patient.as_str().to_string(),
        e.outcome,
        e.reason.as_str().to_string(),
    )
}

fn row(
    action: &str,
    rtype: &str,
    patient: &str,
    outcome: Outcome,
    reason: &str,
) -> (String, String, String, Outcome, String) {
    (
        action.into(),
        rtype.into(),
        patient.into(),
        outcome,
        reason.into(),
    )
}

fn b64(h: &serde_json::Value) -> Hash {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(h.as_str().unwrap())
        .unwrap();
    Hash::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_recorded_with_its_outcome_and_patient() {
    let h = Harness::unsealed();
    let pid = h.create(patient("Ledger", "Lena", "1970-01-01")).await;
    let oid = h
        .create(observation(&pid, "8867-4", "2024-01-01", 70))
        .await;
    let agent = [("user-agent", "ward-tablet/2.1")];
    let r = h
        .call_with("GET", &format!("/fhir/Observation/{oid}"), None, &agent)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h
        .call("GET", &format!("/fhir/Observation?patient={pid}"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    h.call("GET", "/fhir/Patient/no-such-patient", None)
        .await
        .assert_outcome(StatusCode::NOT_FOUND);
    h.call(
        "POST",
        "/fhir/Patient",
        Some(json!({"resourceType": "Patient", "birthDate": "yesterday"})),
    )
    .await
    .assert_outcome(StatusCode::BAD_REQUEST);
    let r = h
        .call("DELETE", &format!("/fhir/Observation/{oid}"), None)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    let all = entries(&h);
    let got: Vec<_> = all.iter().map(summary).collect();
    assert_eq!(
        got,
        vec![
            row("create", "Patient", &pid, Outcome::Allow, ""),
            row("create", "Observation", &pid, Outcome::Allow, ""),
            row("read", "Observation", &pid, Outcome::Allow, ""),
            row("search", "Observation", &pid, Outcome::Allow, ""),
            row("read", "Patient", "", Outcome::Error, "404"),
            row("create", "Patient", "", Outcome::Error, "400"),
            row("delete", "Observation", &pid, Outcome::Allow, ""),
        ]
    );
    assert_eq!(all[2].resource_id.as_str(), oid);
    assert_eq!(all[2].user_agent.as_str(), "ward-tablet/2.1");
    assert_eq!(all[2].actor.as_str(), "anonymous");
    // The query string (which can hold names) is never recorded, only the patient.
    assert!(all.iter().all(|e| !e.resource_id.as_str().contains('=')));
}

/// The path is the client's text: only a supported type and a well-formed id from it reach
/// the ledger; text of any other shape (a name with a space or comma, `=`) is not kept.
/// (An id-shaped name or date under a supported type is still recorded as an id.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_supported_type_and_a_well_formed_id_from_the_path_are_recorded() {
    let h = Harness::unsealed();
    for path in [
        "/fhir/Smith%20John/1970-01-01",
        "/fhir/Patient/Smith%20John",
        "/fhir/Patient/Smith,John/_history",
        "/fhir/Smith=John",
    ] {
        let r = h.call("GET", path, None).await;
        assert!(r.status.is_client_error(), "{path}: {}", r.status);
    }
    let r = h.call("GET", "/fhir/Patient/no-such-patient", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let all = entries(&h);
    let got: Vec<_> = all
        .iter()
        .map(|e| (e.resource_type.as_str(), e.resource_id.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("", ""),
            ("Patient", ""),
            ("Patient", ""),
            ("", ""),
            ("Patient", "no-such-patient")
        ]
    );
}

/// A transaction's writes are recorded in their own commit, one entry per patient (and one
/// for resources of no patient) naming every resource it wrote for them, then the request's
/// summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_records_one_entry_per_patient_and_a_summary() {
    let h = Harness::unsealed();
    let mut items = Vec::new();
    for (n, name) in ["Tia", "Uma"].iter().enumerate() {
        items.push(json!({"fullUrl": format!("urn:uuid:p{n}"),
            "resource": patient("Tx", name, "1990-01-01"),
            "request": {"method": "POST", "url": "Patient"}}));
        if n == 0 {
            items.push(
                json!({"resource": {"resourceType": "Practitioner", "name": [{"family": "Who"}]},
                "request": {"method": "POST", "url": "Practitioner"}}),
            );
        }
        for value in [70 + n as u32, 80 + n as u32] {
            let mut obs = observation("x", "8867-4", "2024-01-01", value);
            obs["subject"]["reference"] = json!(format!("urn:uuid:p{n}"));
            items.push(
                json!({"resource": obs, "request": {"method": "POST", "url": "Observation"}}),
            );
        }
    }
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": items});
    let r = h.call("POST", "/fhir", Some(bundle)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let written: Vec<String> = r.json["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["response"]["location"].as_str().unwrap().to_string())
        .map(|l| l.split("/_history").next().unwrap().to_string())
        .collect();
    let all = entries(&h);
    let got: Vec<_> = all.iter().map(summary).collect();
    let (p0, p1) = (all[0].patient.as_str(), all[2].patient.as_str());
    assert!(!p0.is_empty() && !p1.is_empty() && p0 != p1);
    assert_eq!(
        got,
        vec![
            row("create", "Patient", p0, Outcome::Allow, ""),
            row("create", "Practitioner", "", Outcome::Allow, ""),
            row("create", "Patient", p1, Outcome::Allow, ""),
            row("bundle", "", "", Outcome::Allow, ""),
        ]
    );
    // Each entry names its first resource, then the others in the order they were written.
    let named = |e: &Entry| -> Vec<String> {
        std::iter::once(format!(
            "{}/{}",
            e.resource_type.as_str(),
            e.resource_id.as_str()
        ))
        .chain(e.more.as_slice().iter().map(|r| r.as_str().to_string()))
        .collect()
    };
    let picks = |at: &[usize]| -> Vec<String> { at.iter().map(|&i| written[i].clone()).collect() };
    assert_eq!(named(&all[0]), picks(&[0, 2, 3]));
    assert_eq!(named(&all[1]), picks(&[1]));
    assert_eq!(named(&all[2]), picks(&[4, 5, 6]));
    assert!(all[3].more.is_empty());
}

/// One request's events of the same decision on one patient's resources share an entry; a
/// different decision, patient, or an event naming no resource does not. (Separate requests
/// never share one, even with equal audits: `concurrent_records_share_one_durable_commit`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_requests_events_of_the_same_decision_share_an_entry() {
    let h = Harness::unsealed();
    let keys = h.repo.vault().keys().unwrap();
    let before = entries(&h).len();
    let read = |id: &str, patient: &str| {
        Event::new("read", "Observation", id, Outcome::Allow).patient(patient)
    };
    let events = [
        read("a", "p1"),
        read("b", "p2"),
        read("c", "p1"),
        Event::new("read", "Observation", "d", Outcome::Deny).patient("p1"),
        read("e", "p1").reason("break-glass"),
        Event::new("read", "", "", Outcome::Allow).patient("p1"),
        Event::new("read", "", "", Outcome::Allow).patient("p1"),
        read("f", "p1"),
    ];
    h.repo
        .ledger()
        .record(&keys, &Audit::anonymous("127.0.0.1", "agent"), &events)
        .unwrap();
    let got: Vec<(String, Vec<String>)> = entries(&h)[before..]
        .iter()
        .map(|e| {
            (
                e.resource_id.as_str().to_string(),
                e.more
                    .as_slice()
                    .iter()
                    .map(|r| r.as_str().to_string())
                    .collect(),
            )
        })
        .collect();
    let row =
        |id: &str, more: &[&str]| (id.to_string(), more.iter().map(|m| m.to_string()).collect());
    assert_eq!(
        got,
        vec![
            row("a", &["Observation/c", "Observation/f"]),
            row("b", &[]),
            row("d", &[]),
            row("e", &[]),
            row("", &[]),
            row("", &[]),
        ]
    );
    // An entry names at most 1 + 1,023 resources; the rest start another.
    let many: Vec<Event> = (0..1030).map(|i| read(&format!("m{i}"), "p3")).collect();
    h.repo
        .ledger()
        .record(&keys, &Audit::anonymous("127.0.0.1", "agent"), &many)
        .unwrap();
    let all = entries(&h);
    let last: Vec<(&str, usize)> = all[before + 6..]
        .iter()
        .map(|e| (e.resource_id.as_str(), e.more.len()))
        .collect();
    assert_eq!(last, [("m0", 1023), ("m1024", 5)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_operator_actions_are_recorded_as_denials() {
    let h = Harness::unsealed();
    // A share for an unsealed server, and a seal request with a share that is not valid.
    let r = h
        .call("POST", "/sys/unseal", Some(json!({"share": h.shares[0]})))
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let r = h
        .call(
            "POST",
            "/sys/seal",
            Some(json!({"share": "medvault-share:v1:nope"})),
        )
        .await;
    r.assert_outcome(StatusCode::BAD_REQUEST);
    assert!(!h.repo.vault().is_sealed());
    let got: Vec<_> = entries(&h).iter().map(summary).collect();
    assert_eq!(
        got,
        vec![
            row("unseal", "", "", Outcome::Deny, "already unsealed"),
            row("seal", "", "", Outcome::Deny, "share refused"),
        ]
    );
    // A valid seal is recorded before the keys go.
    let r = h
        .call("POST", "/sys/seal", Some(json!({"share": h.shares[0]})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    h.repo.vault().submit_share(&h.shares[0]).unwrap();
    assert_eq!(
        summary(&entries(&h)[2]),
        row("seal", "", "", Outcome::Allow, "")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_signed_and_proofs_verify_against_them() {
    let h = Harness::unsealed_with(LedgerConfig {
        checkpoint_every: 3,
        checkpoint_interval_ms: 3_600_000,
    });
    h.call("GET", "/ledger/checkpoint", None)
        .await
        .assert_outcome(StatusCode::NOT_FOUND);
    let pid = h.create(patient("Proof", "Pia", "1970-01-01")).await;
    for _ in 0..3 {
        h.call("GET", &format!("/fhir/Patient/{pid}"), None).await;
    }
    // 4 entries: a checkpoint was signed at 3.
    let key_text = h.call("GET", "/ledger/key", None).await.json;
    let key = VerifierKey::parse(key_text.as_str().unwrap().trim()).unwrap();
    let note = h.call("GET", "/ledger/checkpoint", None).await;
    assert_eq!(
        note.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let first: Checkpoint = open(note.json.as_str().unwrap(), &key).unwrap();
    assert_eq!(first.size(), 3);
    assert!(first.origin().starts_with("medvault/ledger/"));

    for index in 0..3u64 {
        let r = h
            .call(
                "GET",
                &format!("/ledger/proof/inclusion?index={index}&size=3"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        let proof: Vec<Hash> = r.json["hashes"]
            .as_array()
            .unwrap()
            .iter()
            .map(b64)
            .collect();
        let leaf = Hash::from_bytes(h.data.store.ledger_node(0, index).unwrap().unwrap());
        verify_inclusion(&leaf, index, 3, &proof, first.root()).unwrap();
        // The same proof does not place the entry anywhere else.
        assert!(verify_inclusion(&leaf, (index + 1) % 3, 3, &proof, first.root()).is_err());
    }

    // A checkpoint by time: nothing is due by count, but the interval passed.
    h.clock.advance(3_600_000);
    let keys = h.repo.vault().keys().unwrap();
    h.repo.ledger().tick(&keys).unwrap();
    let second = open(
        h.call("GET", "/ledger/checkpoint", None)
            .await
            .json
            .as_str()
            .unwrap(),
        &key,
    )
    .unwrap();
    assert_eq!(second.size(), 4);
    let r = h
        .call("GET", "/ledger/proof/consistency?from=3&to=4", None)
        .await;
    let proof: Vec<Hash> = r.json["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(b64)
        .collect();
    verify_consistency(3, 4, first.root(), second.root(), &proof).unwrap();
    assert!(verify_consistency(3, 4, second.root(), first.root(), &proof).is_err());

    // Bad proof requests are 400s, not 500s.
    for q in [
        "inclusion?index=9&size=4",
        "inclusion?index=0&size=99",
        "inclusion?index=x&size=4",
        "inclusion?size=4",
        "consistency?from=0&to=4",
        "consistency?from=4&to=3",
    ] {
        h.call("GET", &format!("/ledger/proof/{q}"), None)
            .await
            .assert_outcome(StatusCode::BAD_REQUEST);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_the_ledger_cannot_be_written_the_action_fails() {
    let h = Harness::unsealed();
    let pid = h.create(patient("Fail", "Fay", "1970-01-01")).await;
    // Another writer takes the ledger's next index: the create's commit (resource and entry
    // in one transaction) is refused as a whole.
    let raw = rusqlite::Connection::open(h.db_path()).unwrap();
    raw.execute(
        "INSERT INTO ledger_entry (idx, leaf, envelope) VALUES (1, zeroblob(32), X'00')",
        [],
    )
    .unwrap();
    let r = h
        .call(
            "POST",
            "/fhir/Patient",
            Some(patient("Lost", "Lou", "1980-01-01")),
        )
        .await;
    assert!(!r.status.is_success(), "{}", r.json);
    assert_eq!(r.json["resourceType"], "OperationOutcome");
    let patients: i64 = raw
        .query_row(
            "SELECT count(*) FROM resource_version WHERE rtype = 'Patient'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(patients, 1, "the write must not have landed");

    // With the ledger table gone, a read is carried out but its answer is withheld.
    raw.execute_batch("DROP TABLE ledger_subtree; DROP TABLE ledger_entry;")
        .unwrap();
    h.repo.ledger().forget();
    let r = h.call("GET", &format!("/fhir/Patient/{pid}"), None).await;
    r.assert_outcome(StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!r.json.to_string().contains("Fay"), "{}", r.json);
}

/// A large create-only transaction is prepared while it is written (`bundle.rs`,
/// `PIPELINE_MIN`): its ledger entries go in first, then its versions as they are ready.
/// If the ledger cannot be written, or the store refuses a version half-way through the
/// stream, nothing of it is stored, its ledger entries included, and the answer is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_transaction_that_fails_stores_nothing() {
    let h = Harness::unsealed();
    let pid = h.create(patient("Fail", "Fay", "1970-01-01")).await;
    let raw = rusqlite::Connection::open(h.db_path()).unwrap();
    let count = |sql: &str| -> i64 { raw.query_row(sql, [], |r| r.get(0)).unwrap() };
    let bundle = || {
        let entries: Vec<_> = (0..40)
            .map(|i| {
                json!({
                    "resource": observation(&pid, "8867-4", "2024-01-01", 60 + i),
                    "request": {"method": "POST", "url": "Observation"},
                })
            })
            .collect();
        json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    };
    let observations = "SELECT count(*) FROM resource_version WHERE rtype = 'Observation'";

    // Half-way through the stream: the 21st Observation's insert is refused.
    raw.execute_batch(
        "CREATE TRIGGER half_way BEFORE INSERT ON resource_version
         WHEN NEW.rtype = 'Observation'
          AND (SELECT count(*) FROM resource_version WHERE rtype = 'Observation') >= 20
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    )
    .unwrap();
    let (entries_before, logged) = (
        count("SELECT count(*) FROM ledger_entry"),
        count("SELECT count(*) FROM posting_log"),
    );
    let (pipelined, retried) = (h.repo.pipelined_commits(), h.repo.retried_commits());
    let r = h.call("POST", "/fhir", Some(bundle())).await;
    assert!(!r.status.is_success(), "{}", r.json);
    assert_eq!(r.json["resourceType"], "OperationOutcome");
    assert_eq!(
        h.repo.pipelined_commits(),
        pipelined + 1,
        "not the pipelined path"
    );
    assert_eq!(h.repo.retried_commits(), retried, "answered by a retry");
    assert_eq!(
        count(observations),
        0,
        "a version of the transaction landed"
    );
    // Of the transaction's 40 creates, none is in the ledger: only the failed request is,
    // as the one refusal the server answered.
    let added: Vec<_> = entries(&h)[usize::try_from(entries_before).unwrap()..]
        .iter()
        .map(summary)
        .collect();
    assert_eq!(added.len(), 1, "{added:?}");
    assert_ne!(added[0].3, Outcome::Allow, "{added:?}");
    assert_eq!(
        count("SELECT count(*) FROM posting_log"),
        logged,
        "its search tokens landed"
    );
}

/// A transaction is committed with its writes' own entries; its summary entry is written
/// after the COMMIT. If that one cannot be written (here a trigger refuses every entry once
/// an Observation is stored, as a disk that fills just then would), the answer is withheld,
/// and it must say the request was carried out: the writes stand, and a client told that
/// nothing was written would send them again. Both the small path and the pipelined one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_transaction_whose_summary_entry_fails_says_it_was_carried_out() {
    for n in [1u32, 40] {
        let h = Harness::unsealed();
        let pid = h.create(patient("Fail", "Fay", "1970-01-01")).await;
        let raw = rusqlite::Connection::open(h.db_path()).unwrap();
        let count = |sql: &str| -> i64 { raw.query_row(sql, [], |r| r.get(0)).unwrap() };
        let observations = "SELECT count(*) FROM resource_version WHERE rtype = 'Observation'";
        let writes: Vec<_> = (0..n)
            .map(|i| {
                json!({
                    "resource": observation(&pid, "8867-4", "2024-01-01", 60 + i),
                    "request": {"method": "POST", "url": "Observation"},
                })
            })
            .collect();
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": writes});
        // A transaction's own entries go in before its versions, in its transaction.
        raw.execute_batch(&format!(
            "CREATE TRIGGER after_the_commit BEFORE INSERT ON ledger_entry
             WHEN ({observations}) > 0
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"
        ))
        .unwrap();
        let entries_before = count("SELECT count(*) FROM ledger_entry");
        let pipelined = h.repo.pipelined_commits();
        let r = h.call("POST", "/fhir", Some(bundle)).await;
        r.assert_outcome(StatusCode::INTERNAL_SERVER_ERROR);
        let text = r.json.to_string();
        assert!(
            text.contains("was carried out and what it wrote is stored"),
            "{n}: {text}"
        );
        assert!(!text.contains("nothing was written"), "{n}: {text}");
        assert_eq!(
            h.repo.pipelined_commits(),
            pipelined + u64::from(n > 1),
            "{n}: not the path meant"
        );
        assert_eq!(count(observations), i64::from(n), "the writes must stand");
        // The writes' own entry (one patient, one decision) is there; the summary is not.
        let added: Vec<_> = entries(&h)[usize::try_from(entries_before).unwrap()..]
            .iter()
            .map(summary)
            .collect();
        assert_eq!(added.len(), 1, "{n}: {added:?}");
        assert_eq!(added[0].0, "create", "{n}: {added:?}");
        assert_eq!(added[0].3, Outcome::Allow, "{n}: {added:?}");

        // Once entries can be written again, the next request is recorded and answered,
        // the Observations can be read, and the ledger verifies.
        raw.execute_batch("DROP TRIGGER after_the_commit").unwrap();
        let r = h
            .call("GET", &format!("/fhir/Observation?patient={pid}"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        assert_eq!(r.json["total"], n, "{}", r.json);
        assert_eq!(first_bad(&h), None);
        assert_eq!(
            count("SELECT count(*) FROM ledger_entry"),
            entries_before + 2,
            "{n}: the search's entry"
        );
    }
}

/// A Bundle that only reads, or whose writes all fail, writes nothing, so when its entry
/// cannot be written its answer is withheld as any read's is: it must not claim that what
/// it wrote is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_that_wrote_nothing_and_whose_entry_fails_does_not_say_it_wrote() {
    let h = Harness::unsealed();
    let pid = h.create(patient("Read", "Ray", "1970-01-01")).await;
    let raw = rusqlite::Connection::open(h.db_path()).unwrap();
    raw.execute_batch(
        "CREATE TRIGGER no_entries BEFORE INSERT ON ledger_entry
         BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
    )
    .unwrap();
    // A transaction and a batch that read, and a batch whose one write is refused.
    let read = json!({"request": {"method": "GET", "url": format!("Patient/{pid}")}});
    let refused = json!({
        "resource": {"resourceType": "Patient", "birthDate": "not a date"},
        "request": {"method": "POST", "url": "Patient"},
    });
    for (kind, entries) in [
        ("transaction", vec![read.clone()]),
        ("batch", vec![read.clone()]),
        ("batch", vec![refused, read]),
    ] {
        let bundle = json!({"resourceType": "Bundle", "type": kind, "entry": entries});
        let r = h.call("POST", "/fhir", Some(bundle)).await;
        r.assert_outcome(StatusCode::INTERNAL_SERVER_ERROR);
        let text = r.json.to_string();
        assert!(!text.contains("what it wrote is stored"), "{kind}: {text}");
        assert!(text.contains("not carried out"), "{kind}: {text}");
        assert!(!text.contains("Ray"), "{kind}: {text}");
    }
}

/// An entry planted after the latest checkpoint, with a leaf of the attacker's choosing, is
/// found when the tree is rebuilt (after an unseal, or when the store refuses an append
/// because another writer took its index), whichever subtrees it would complete: the
/// ledger is marked compromised, `/healthz` says so, and nothing more is signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_planted_after_the_latest_checkpoint_is_found_when_the_tree_is_rebuilt() {
    // Planted at an even index it completes no subtree; at an odd one it does.
    for n in [6u64, 7] {
        let h = ledger_of(n);
        let checkpoints = h.data.store.latest_checkpoint().unwrap().unwrap().size;
        assert!(checkpoints < n);
        sql(
            &h,
            &format!(
                "INSERT INTO ledger_entry (idx, leaf, envelope) VALUES ({n}, zeroblob(32), X'00')"
            ),
        );
        // The next append conflicts with the planted row; the retry rebuilds the tree.
        let r = h
            .call(
                "POST",
                "/fhir/Patient",
                Some(patient("Plant", "Pia", "1970-01-01")),
            )
            .await;
        let why = h.repo.ledger().compromised();
        assert!(
            why.as_deref()
                .is_some_and(|w| w.contains(&format!("entry {n}"))),
            "{n}: {} {why:?}",
            r.status
        );
        h.call("GET", "/healthz", None)
            .await
            .assert_outcome(StatusCode::SERVICE_UNAVAILABLE);
        // Whatever is appended after it, not one more checkpoint is signed.
        for _ in 0..6 {
            h.call("GET", "/fhir/Patient?family=plant", None).await;
        }
        let keys = h.repo.vault().keys().unwrap();
        // (A tick may fail too: the stored hashes do not cover the planted entry.)
        let _ = h.repo.ledger().tick(&keys);
        assert_eq!(
            h.data.store.latest_checkpoint().unwrap().unwrap().size,
            checkpoints,
            "{n}: a checkpoint was signed over the planted entry"
        );
        assert_eq!(first_bad(&h), Some(n));
    }
}

/// A ledger of `n` entries recorded one by one, with a checkpoint every 5.
fn ledger_of(n: u64) -> Harness {
    let h = Harness::unsealed_with(LedgerConfig {
        checkpoint_every: 5,
        checkpoint_interval_ms: 3_600_000,
    });
    let keys = h.repo.vault().keys().unwrap();
    for i in 0..n {
        let ev = Event::new("read", "Patient", &format!("p{i}"), Outcome::Allow);
        h.repo
            .ledger()
            .record(&keys, &Audit::system("test"), &[ev])
            .unwrap();
    }
    h
}

fn first_bad(h: &Harness) -> Option<u64> {
    let keys = h.repo.vault().keys().unwrap();
    let report = verify(&*h.data.store, &keys, |_, _| {}).unwrap();
    report.first_bad.map(|(i, _)| i)
}

fn sql(h: &Harness, statements: &str) {
    rusqlite::Connection::open(h.db_path())
        .unwrap()
        .execute_batch(statements)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_accepts_an_untouched_ledger() {
    let h = ledger_of(20);
    let keys = h.repo.vault().keys().unwrap();
    let mut calls = 0;
    let report = verify(&*h.data.store, &keys, |done, total| {
        calls += 1;
        assert!(done <= total);
    })
    .unwrap();
    assert_eq!(report.entries, 20);
    assert_eq!(report.checkpoints, 4);
    assert_eq!(report.first_bad, None);
    assert!(calls >= 1, "progress is reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_first_edited_entry() {
    let h = ledger_of(20);
    let raw = rusqlite::Connection::open(h.db_path()).unwrap();
    let mut envelope: Vec<u8> = raw
        .query_row("SELECT envelope FROM ledger_entry WHERE idx = 7", [], |r| {
            r.get(0)
        })
        .unwrap();
    envelope[30] ^= 0x01;
    raw.execute(
        "UPDATE ledger_entry SET envelope = ? WHERE idx = 7",
        [envelope],
    )
    .unwrap();
    assert_eq!(first_bad(&h), Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_an_entry_whose_leaf_was_replaced() {
    let h = ledger_of(20);
    sql(
        &h,
        "UPDATE ledger_entry SET leaf = zeroblob(32) WHERE idx = 12",
    );
    assert_eq!(first_bad(&h), Some(12));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_deleted_entry() {
    let h = ledger_of(20);
    sql(&h, "DELETE FROM ledger_entry WHERE idx = 7");
    assert_eq!(first_bad(&h), Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_start_of_a_truncation() {
    let h = ledger_of(20);
    // The last three entries and their subtree hashes go; the checkpoint at 20 remembers them.
    sql(
        &h,
        "DELETE FROM ledger_entry WHERE idx >= 17; DELETE FROM ledger_subtree WHERE (pos >> 6) >= 17;",
    );
    assert_eq!(first_bad(&h), Some(17));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_the_first_of_two_swapped_entries() {
    let h = ledger_of(20);
    sql(
        &h,
        "UPDATE ledger_entry SET idx = -1 WHERE idx = 4;
         UPDATE ledger_entry SET idx = 4 WHERE idx = 9;
         UPDATE ledger_entry SET idx = 9 WHERE idx = -1;",
    );
    assert_eq!(first_bad(&h), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_an_inserted_entry() {
    let h = ledger_of(20);
    // Shift entries 6.. up by one and put a copy of entry 2 in the gap.
    let mut statements = String::new();
    for i in (6..20).rev() {
        statements.push_str(&format!(
            "UPDATE ledger_entry SET idx = {} WHERE idx = {i};",
            i + 1
        ));
    }
    statements.push_str(
        "INSERT INTO ledger_entry (idx, leaf, envelope) SELECT 6, leaf, envelope FROM ledger_entry WHERE idx = 2;",
    );
    sql(&h, &statements);
    assert_eq!(first_bad(&h), Some(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_ledger_that_no_longer_extends_its_checkpoint_is_reported() {
    let h = ledger_of(12);
    let health = h.call("GET", "/sys/health", None).await;
    assert_eq!(health.json["ledger_compromised"], false);
    // Rewrite the subtree over entries 0..8 (part of the tree's frontier), then make the
    // server rebuild its tree as after a restart.
    sql(
        &h,
        "UPDATE ledger_subtree SET hash = zeroblob(32) WHERE pos = (7 << 6) | 3",
    );
    h.repo.ledger().forget();
    let keys = h.repo.vault().keys().unwrap();
    h.repo.ledger().tick(&keys).unwrap();
    assert!(h.repo.ledger().compromised().is_some());
    let health = h.call("GET", "/sys/health", None).await;
    assert_eq!(health.json["ledger_compromised"], true);
    assert_eq!(health.json["status"], "ledger-compromised");
    // And no further checkpoint is signed over the rewritten history.
    let before = h.data.store.latest_checkpoint().unwrap().unwrap().size;
    for _ in 0..6 {
        h.repo
            .ledger()
            .record(
                &keys,
                &Audit::system("test"),
                &[Event::new("read", "Patient", "x", Outcome::Allow)],
            )
            .unwrap();
    }
    assert_eq!(
        h.data.store.latest_checkpoint().unwrap().unwrap().size,
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_rewritten_subtree_hash_by_its_first_entry() {
    let h = ledger_of(20);
    // The subtree over entries 4..8 (level 2, index 1): proofs through it would fail.
    sql(
        &h,
        "UPDATE ledger_subtree SET hash = zeroblob(32) WHERE pos = (7 << 6) | 2",
    );
    assert_eq!(first_bad(&h), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verifier_resumes_and_checks_only_what_is_new() {
    let h = ledger_of(10);
    let keys = h.repo.vault().keys().unwrap();
    let mut v = Verifier::new();
    v.catch_up(&*h.data.store, &keys, &mut |_, _| {}).unwrap();
    assert_eq!((v.verified(), v.first_bad()), (10, None));
    for i in 0..5 {
        let ev = Event::new("read", "Patient", &format!("q{i}"), Outcome::Allow);
        h.repo
            .ledger()
            .record(&keys, &Audit::system("test"), &[ev])
            .unwrap();
    }
    sql(
        &h,
        "UPDATE ledger_entry SET envelope = zeroblob(length(envelope)) WHERE idx = 12",
    );
    v.catch_up(&*h.data.store, &keys, &mut |_, _| {}).unwrap();
    assert_eq!(v.first_bad().map(|b| b.0), Some(12));
    assert_eq!(v.verified(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_finds_a_tampered_ledger_and_calls_the_webhook() {
    use std::io::{Read, Write};
    let h = ledger_of(6);
    sql(
        &h,
        "UPDATE ledger_entry SET envelope = zeroblob(length(envelope)) WHERE idx = 2",
    );

    // A webhook receiver on loopback that hands over the first request it gets.
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_url = format!("http://{}/alerts", hook.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut conn, _) = hook.accept().unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !String::from_utf8_lossy(&buf).contains("ledger-compromised") {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
        tx.send(String::from_utf8_lossy(&buf).into_owned()).unwrap();
    });

    let opts = ServeOptions {
        alert_webhook: Some(hook_url),
        ..ServeOptions::new("127.0.0.1:0".parse().unwrap())
    };
    let repo = h.repo.clone();
    let server = tokio::spawn(async move { serve(repo, opts, |_, _| {}).await });
    let request =
        tokio::task::spawn_blocking(move || rx.recv_timeout(std::time::Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("no alert arrived");
    server.abort();
    assert!(request.starts_with("POST /alerts "), "{request}");
    assert!(request.contains("ledger entry 2"), "{request}");
    let health = h.call("GET", "/sys/health", None).await;
    assert_eq!(health.json["ledger_compromised"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_name_every_patient_whose_data_they_return() {
    let h = Harness::unsealed();
    let a = h.create(patient("Same", "Ann", "1970-01-01")).await;
    let b = h.create(patient("Same", "Bea", "1980-01-01")).await;
    let before = entries(&h).len();
    // A search by name (no patient parameter) returns two patients' records.
    let r = h.call("GET", "/fhir/Patient?family=Same", None).await;
    assert_eq!(r.json["total"], 2);
    // A batch whose GET entry reads one patient.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Patient/{b}")}}
    ]});
    let r = h.call("POST", "/fhir", Some(batch)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let got: Vec<_> = entries(&h)[before..].iter().map(summary).collect();
    let mut searched = vec![
        row("search", "Patient", &a, Outcome::Allow, ""),
        row("search", "Patient", &b, Outcome::Allow, ""),
    ];
    searched.sort_by(|x, y| x.2.cmp(&y.2));
    assert_eq!(got[..2].to_vec(), searched);
    assert_eq!(
        got[2..].to_vec(),
        vec![row("bundle", "", &b, Outcome::Allow, "")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_resource_can_still_be_deleted() {
    let h = Harness::unsealed();
    let id = h.create(patient("Broken", "Bo", "1970-01-01")).await;
    sql(
        &h,
        &format!("UPDATE resource_version SET body = zeroblob(length(body)) WHERE id = unhex(replace('{id}', '-', ''))"),
    );
    h.call("GET", &format!("/fhir/Patient/{id}"), None)
        .await
        .assert_outcome(StatusCode::INTERNAL_SERVER_ERROR);
    let r = h.call("DELETE", &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.json);
    let last = entries(&h).pop().unwrap();
    assert_eq!(
        summary(&last),
        row("delete", "Patient", "", Outcome::Allow, "")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealing_works_even_when_the_ledger_cannot_be_written() {
    let h = Harness::unsealed();
    sql(&h, "DROP TABLE ledger_subtree; DROP TABLE ledger_entry;");
    h.repo.ledger().forget();
    let r = h
        .call("POST", "/sys/seal", Some(json!({"share": h.shares[0]})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert!(h.repo.vault().is_sealed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_newest_entries_is_found_when_the_tree_is_rebuilt() {
    let h = ledger_of(7);
    // No checkpoint covers entries 5 and 6 (one every 5): delete them. Their subtree hash
    // (over 4..6) stays behind and gives the deletion away.
    sql(&h, "DELETE FROM ledger_entry WHERE idx >= 5");
    h.repo.ledger().forget();
    let keys = h.repo.vault().keys().unwrap();
    h.repo.ledger().tick(&keys).unwrap();
    let why = h.repo.ledger().compromised().unwrap();
    assert!(why.contains("deleted"), "{why}");
}

/// Record `n` read events from as many threads, all queued behind a commit that holds the
/// tree lock until every one of them waits; what each `record` call returned.
fn records_queued_behind_a_commit(h: &Harness, n: usize) -> Vec<Result<(), LedgerError>> {
    let keys = h.repo.vault().keys().unwrap();
    let ledger = h.repo.ledger();
    std::thread::scope(|s| {
        let mut calls = Vec::new();
        ledger
            .commit_with(&keys, &Audit::system("test"), &[], |_| {
                for i in 0..n {
                    let keys = &keys;
                    calls.push(s.spawn(move || {
                        let ev = Event::new("read", "Patient", &format!("g{i}"), Outcome::Allow);
                        ledger.record(keys, &Audit::system("test"), &[ev])
                    }));
                }
                while ledger.queued() < n {
                    std::thread::yield_now();
                }
                Ok::<(), LedgerError>(())
            })
            .unwrap();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_records_share_one_durable_commit() {
    // A checkpoint in every commit: checkpoints count the commits.
    let h = Harness::unsealed_with(LedgerConfig {
        checkpoint_every: 1,
        checkpoint_interval_ms: 3_600_000,
    });
    let size = h.data.store.ledger_size().unwrap();
    let checkpoints = h.data.store.ledger_checkpoints(0, 10_000).unwrap().len();
    for result in records_queued_behind_a_commit(&h, 8) {
        result.unwrap();
    }
    // Eight entries: the requests' audits and decisions are equal, but separate requests
    // never share an entry.
    assert_eq!(h.data.store.ledger_size().unwrap(), size + 8);
    assert_eq!(
        h.data.store.ledger_checkpoints(0, 10_000).unwrap().len(),
        checkpoints + 1,
        "the eight queued requests were committed together"
    );
    let mut recorded: Vec<String> = entries(&h)
        .iter()
        .filter(|e| e.resource_id.as_str().starts_with('g'))
        .map(|e| e.resource_id.as_str().to_string())
        .collect();
    recorded.sort();
    assert_eq!(
        recorded,
        (0..8).map(|i| format!("g{i}")).collect::<Vec<_>>()
    );
    assert_eq!(first_bad(&h), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_group_commit_fails_every_request_in_it() {
    let h = ledger_of(1);
    let size = h.data.store.ledger_size().unwrap();
    // Four entries complete at least one subtree hash, which can no longer be stored (the
    // tree itself is still loaded, so the commit holding the lock goes through).
    sql(&h, "DROP TABLE ledger_subtree;");
    let results = records_queued_behind_a_commit(&h, 4);
    assert_eq!(results.len(), 4);
    assert!(results.iter().all(Result::is_err), "{results:?}");
    assert_eq!(h.data.store.ledger_size().unwrap(), size);
}

#[test]
fn events_and_stored_versions_keep_ids_and_data_out_of_debug_output() {
    let e = Event::new("read", "Patient", "pat-4471", Outcome::Allow)
        .patient("pat-4471")
        .reason("seen in clinic 12");
    let text = format!("{e:?}");
    for hidden in ["pat-4471", "clinic 12"] {
        assert!(!text.contains(hidden), "{hidden} in {text}");
    }
    assert!(
        text.contains("\"read\"") && text.contains("Allow"),
        "{text}"
    );
    let s = medvault_server::repo::Stored {
        rtype: "Patient".into(),
        id: "pat-4471".into(),
        version: 3,
        updated_ms: 0,
        resource: Some(json!({"resourceType": "Patient", "name": [{"family": "Zimmermann"}]})),
    };
    let text = format!("{s:?}");
    for hidden in ["pat-4471", "Zimmermann"] {
        assert!(!text.contains(hidden), "{hidden} in {text}");
    }
    assert!(text.contains("version: 3"), "{text}");
}
