//! The seal lifecycle over the HTTP API: sealed refusals, share-by-share unsealing with
//! refusals that keep progress, sealing, KEK rotation with re-wrap, and rekeying.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::{patient, Harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_server_answers_only_health_status_and_unseal() {
    let h = Harness::sealed(2, 3, 11);
    assert_eq!(
        h.call("GET", "/sys/health", None).await.status,
        StatusCode::OK
    );
    let st = h.call("GET", "/sys/seal-status", None).await;
    assert_eq!(st.json["sealed"], true);
    assert_eq!(st.json["threshold"], 2);
    assert_eq!(st.json["shares"], 3);
    for (method, uri) in [
        ("GET", "/fhir/metadata"),
        ("GET", "/fhir/Patient"),
        ("GET", "/fhir/Patient/1"),
        ("POST", "/fhir/Patient"),
        ("POST", "/fhir"),
        ("POST", "/sys/seal"),
        ("POST", "/sys/rotate"),
        ("POST", "/sys/rekey"),
        ("GET", "/anything"),
    ] {
        let body = (method == "POST").then(|| patient("A", "B", "2000"));
        h.call(method, uri, body)
            .await
            .assert_outcome(StatusCode::SERVICE_UNAVAILABLE);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unseal_share_by_share_refusing_bad_shares_without_losing_progress() {
    let h = Harness::sealed(2, 3, 12);
    let other = Harness::sealed(2, 3, 13); // another vault: its shares are foreign here
    let unseal = |share: &str| {
        let body = json!({ "share": share });
        async { h.call("POST", "/sys/unseal", Some(body)).await }
    };
    let r = unseal(&h.shares[0]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["progress"], 1);
    assert_eq!(r.json["sealed"], true);

    // Malformed, corrupted (checksum), foreign, duplicate: each refused, progress kept.
    unseal("hello")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST);
    let mut corrupted = h.shares[1].clone();
    let last = corrupted.pop().unwrap();
    corrupted.push(if last == '0' { '1' } else { '0' });
    unseal(&corrupted)
        .await
        .assert_outcome(StatusCode::BAD_REQUEST);
    let foreign = unseal(&other.shares[1]).await;
    foreign.assert_outcome(StatusCode::BAD_REQUEST);
    assert!(foreign.json["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("different share set"));
    unseal(&h.shares[0])
        .await
        .assert_outcome(StatusCode::CONFLICT);
    let st = h.call("GET", "/sys/seal-status", None).await;
    assert_eq!(st.json["progress"], 1);
    h.call("GET", "/fhir/Patient", None)
        .await
        .assert_outcome(StatusCode::SERVICE_UNAVAILABLE);

    let r = unseal(&h.shares[2]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["sealed"], false);
    let id = h.create(patient("Kowalski", "Piotr", "1970-01-01")).await;

    // Seal needs a valid share; then data routes are refused again and keys are gone.
    h.call("POST", "/sys/seal", Some(json!({"share": other.shares[0]})))
        .await
        .assert_outcome(StatusCode::BAD_REQUEST);
    let sealed = h
        .call("POST", "/sys/seal", Some(json!({"share": h.shares[1]})))
        .await;
    assert_eq!(sealed.json["sealed"], true);
    assert!(h.repo.vault().keys().is_err());
    h.call("GET", &format!("/fhir/Patient/{id}"), None)
        .await
        .assert_outcome(StatusCode::SERVICE_UNAVAILABLE);

    // Unseal with a different pair of shares; the data is intact.
    unseal(&h.shares[2]).await;
    unseal(&h.shares[1]).await;
    let r = h.call("GET", &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["name"][0]["family"], "Kowalski");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unseal_progress_can_be_reset_only_by_a_share_holder() {
    let h = Harness::sealed(3, 5, 14);
    let other = Harness::sealed(3, 5, 16);
    h.call("POST", "/sys/unseal", Some(json!({"share": h.shares[4]})))
        .await;
    h.call("POST", "/sys/unseal", Some(json!({"reset": true})))
        .await
        .assert_outcome(StatusCode::BAD_REQUEST);
    h.call(
        "POST",
        "/sys/unseal",
        Some(json!({"reset": true, "share": other.shares[0]})),
    )
    .await
    .assert_outcome(StatusCode::BAD_REQUEST);
    let st = h.call("GET", "/sys/seal-status", None).await;
    assert_eq!(st.json["progress"], 1);
    let r = h
        .call(
            "POST",
            "/sys/unseal",
            Some(json!({"reset": true, "share": h.shares[0]})),
        )
        .await;
    assert_eq!(r.json["progress"], 0);
}

async fn wait_for_rewrap(h: &Harness) -> serde_json::Value {
    for _ in 0..500 {
        let s = h.call("GET", "/sys/rotate", None).await.json;
        if s["rewrap"]["running"] == false {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("re-wrap did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_adds_a_kek_version_and_rewraps_data_keys() {
    let h = Harness::unsealed();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            h.create(patient("Rotate", &format!("P{i}"), "2000-01-01"))
                .await,
        );
    }
    h.call("POST", "/sys/rotate", Some(json!({"share": "nonsense"})))
        .await
        .assert_outcome(StatusCode::BAD_REQUEST);
    let r = h
        .call("POST", "/sys/rotate", Some(json!({"share": h.shares[0]})))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.json["key_version"], 2);
    let status = wait_for_rewrap(&h).await;
    assert_eq!(status["key_version"], 2);
    assert_eq!(status["rewrap"]["remaining"], 0);
    assert_eq!(status["rewrap"]["rewrapped"], 5);
    assert_eq!(
        status["data_keys_by_version"],
        json!([{"version": 2, "count": 5}])
    );
    // Old data readable after re-wrap, also after a seal/unseal cycle (fresh key cache).
    h.call("POST", "/sys/seal", Some(json!({"share": h.shares[0]})))
        .await;
    h.call("POST", "/sys/unseal", Some(json!({"share": h.shares[0]})))
        .await;
    for id in &ids {
        let r = h.call("GET", &format!("/fhir/Patient/{id}"), None).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let new_id = h.create(patient("After", "Rotate", "2001-01-01")).await;
    assert_eq!(
        h.call("GET", &format!("/fhir/Patient/{new_id}"), None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekey_issues_new_shares_and_voids_the_old_ones() {
    let h = Harness::sealed(2, 3, 15);
    for s in &h.shares[..2] {
        h.call("POST", "/sys/unseal", Some(json!({"share": s})))
            .await;
    }
    let id = h.create(patient("Rekey", "Ann", "1999-09-09")).await;
    // One share is not enough.
    h.call(
        "POST",
        "/sys/rekey",
        Some(json!({"shares": [h.shares[0]], "new_threshold": 3, "new_shares": 5})),
    )
    .await
    .assert_outcome(StatusCode::BAD_REQUEST);
    let r = h
        .call(
            "POST",
            "/sys/rekey",
            Some(
                json!({"shares": [h.shares[0], h.shares[2]], "new_threshold": 3, "new_shares": 5}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let new: Vec<String> = r.json["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(new.len(), 5);
    // Still unsealed; seal with a new share, old shares are refused, three new ones unseal.
    h.call("POST", "/sys/seal", Some(json!({"share": h.shares[0]})))
        .await
        .assert_outcome(StatusCode::BAD_REQUEST);
    let s = h
        .call("POST", "/sys/seal", Some(json!({"share": new[4]})))
        .await;
    assert_eq!(s.json["sealed"], true);
    assert_eq!(s.json["threshold"], 3);
    h.call("POST", "/sys/unseal", Some(json!({"share": h.shares[0]})))
        .await
        .assert_outcome(StatusCode::BAD_REQUEST);
    for s in &new[1..4] {
        h.call("POST", "/sys/unseal", Some(json!({"share": s})))
            .await;
    }
    let r = h.call("GET", &format!("/fhir/Patient/{id}"), None).await;
    assert_eq!(r.status, StatusCode::OK);
    // Blind indexes survive a rekey (they hang off the keyring, not the root key).
    let found = h.call("GET", "/fhir/Patient?family=rekey", None).await;
    assert_eq!(found.json["total"], 1);
}

/// Sealing drops the keys: once the requests that were using them have finished, nothing
/// in the server (vault, repository, ledger, caches) still holds them, so their memory is
/// freed and zeroized.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sealing_no_copy_of_the_keys_is_left() {
    let h = Harness::unsealed();
    // Use every kind of key: data keys (cached), blind indexes, the ledger's.
    let id = h.create(patient("Seal", "Sam", "1970-01-01")).await;
    for path in [
        format!("/fhir/Patient/{id}"),
        "/fhir/Patient?family=seal".to_string(),
        "/ledger/key".to_string(),
    ] {
        assert_eq!(
            h.call("GET", &path, None).await.status,
            StatusCode::OK,
            "{path}"
        );
    }
    let keys = std::sync::Arc::downgrade(&h.repo.vault().keys().unwrap());
    assert!(keys.upgrade().is_some());
    let r = h
        .call("POST", "/sys/seal", Some(json!({"share": h.shares[0]})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    // Work handed to other threads (freeing a request's leftovers) may still be finishing;
    // on a busy machine that can take a while, so wait up to 30 s (usually not at all).
    for _ in 0..3000 {
        if keys.upgrade().is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        keys.upgrade().is_none(),
        "a copy of the keys outlived the seal"
    );
    h.call("GET", &format!("/fhir/Patient/{id}"), None)
        .await
        .assert_outcome(StatusCode::SERVICE_UNAVAILABLE);
}
