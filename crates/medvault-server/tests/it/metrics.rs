//! `/healthz` and `/metrics`: readiness follows the seal and the ledger's state; the metrics
//! are Prometheus text with aggregates only, and they answer while sealed.

use axum::http::StatusCode;

use crate::support::{patient, Harness};

/// The samples of a Prometheus text answer, by name with labels; every line checked for form.
fn samples(text: &str) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let mut typed = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(matches!(kind, "gauge" | "counter"), "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap();
        let name = key.split('{').next().unwrap();
        assert!(typed.contains(name), "a sample before its TYPE: {line}");
        assert!(
            name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{line}"
        );
        out.insert(key.to_string(), value.parse().unwrap());
    }
    out
}

async fn metrics(h: &Harness) -> std::collections::BTreeMap<String, u64> {
    let r = h.call("GET", "/metrics", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    samples(r.json.as_str().expect("a text body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_seal_and_the_ledger() {
    let h = Harness::sealed(1, 1, 7);
    h.call("GET", "/healthz", None)
        .await
        .assert_outcome(StatusCode::SERVICE_UNAVAILABLE);
    h.repo.vault().submit_share(&h.shares[0]).unwrap();
    let r = h.call("GET", "/healthz", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["status"], "ok");
    h.repo
        .ledger()
        .mark_compromised("test: a replaced row".into());
    let r = h.call("GET", "/healthz", None).await;
    r.assert_outcome(StatusCode::SERVICE_UNAVAILABLE);
    // Why is logged; the unauthenticated answer does not carry the detail.
    assert!(!r.json.to_string().contains("replaced row"), "{}", r.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_answers_and_carry_no_identifiers() {
    let h = Harness::sealed(1, 1, 7);
    // Sealed: the metrics answer (and say so); FHIR does not.
    let sealed = metrics(&h).await;
    assert_eq!(sealed["medvault_sealed"], 1);
    h.call("GET", "/fhir/Patient", None)
        .await
        .assert_outcome(StatusCode::SERVICE_UNAVAILABLE);
    h.repo.vault().submit_share(&h.shares[0]).unwrap();
    let before = metrics(&h).await;
    assert_eq!(before["medvault_sealed"], 0);
    assert_eq!(before["medvault_ledger_compromised"], 0);
    assert_eq!(before["medvault_http_responses_total{class=\"5xx\"}"], 1);
    assert!(before["process_resident_memory_bytes"] > 0);
    let id = h.create(patient("Metric", "Mia", "1980-01-01")).await;
    h.call("GET", "/fhir/Patient/no-such-id", None)
        .await
        .assert_outcome(StatusCode::NOT_FOUND);
    let r = h.call("GET", "/metrics", None).await;
    let text = r.json.as_str().unwrap().to_string();
    let after = samples(&text);
    let class = |m: &std::collections::BTreeMap<String, u64>, c: &str| {
        m[&format!("medvault_http_responses_total{{class=\"{c}\"}}")]
    };
    // The create, and the /metrics call before this one; the 404.
    assert_eq!(class(&after, "2xx") - class(&before, "2xx"), 2);
    assert_eq!(class(&after, "4xx") - class(&before, "4xx"), 1);
    assert!(after["medvault_ledger_entries"] > before["medvault_ledger_entries"]);
    assert_eq!(after["medvault_integrity_errors_total"], 0);
    assert_eq!(after["medvault_retried_transactions_total"], 0);
    // The create and the ledger lookup ran on a worker thread, still alive (idle ones stay
    // 10 s). Other tests in this process share the pool, so only this much is certain.
    assert!(after["medvault_worker_threads"] >= 1);
    // Aggregates only: nothing of the resource or its patient.
    for secret in [id.as_str(), "Metric", "Mia"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

/// After signed-in traffic of every kind (logins, reads, refusals, searches, an unknown
/// path), nothing that answers without a token names an account, a patient, a resource or
/// a path: the only label is the answer's status class.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_answers_name_no_account_patient_or_path() {
    let w = crate::access::world().await;
    let h = &w.h;
    let before = metrics(h).await;
    for (user, path, status) in [
        (&w.gp, format!("/fhir/Patient/{}", w.pid), 200),
        (
            &w.gp,
            format!("/fhir/Observation?patient={}&code=8867-4", w.pid),
            200,
        ),
        (&w.stranger, format!("/fhir/Observation/{}", w.obs), 403),
        (&w.patient, format!("/fhir/Patient/{}", w.other_pid), 403),
        (
            &w.reception,
            "/fhir/Patient/no-such-chart-zz9".to_string(),
            404,
        ),
        (&w.admin, "/auth/whoami".to_string(), 200),
    ] {
        let r = user.call(h, "GET", &path, None).await;
        assert_eq!(r.status.as_u16(), status, "{path}: {}", r.json);
    }
    let after = metrics(h).await;
    let grew = |class: &str| {
        let key = format!("medvault_http_responses_total{{class=\"{class}\"}}");
        after[&key] - before[&key]
    };
    // The traffic above, and the first /metrics call, was counted.
    assert_eq!(grew("2xx"), 4);
    assert_eq!(grew("4xx"), 3);
    let keys = h.repo.vault().keys().unwrap();
    let ids: Vec<String> = ["gp", "stranger", "rec", "cara", "admin"]
        .iter()
        .map(|login| {
            medvault_server::accounts::load_by_login(&*h.data.store, &keys, login)
                .unwrap()
                .unwrap()
                .id()
                .to_string()
        })
        .collect();
    let mut answers = String::new();
    for path in ["/metrics", "/healthz", "/sys/health", "/sys/seal-status"] {
        let r = h.call("GET", path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        answers.push_str(&r.json.to_string());
    }
    for secret in ids.iter().map(String::as_str).chain([
        w.pid.as_str(),
        w.other_pid.as_str(),
        w.obs.as_str(),
        "no-such-chart-zz9",
        "8867-4",
        "/fhir/",
        "whoami",
        "stranger",
        "dr-gp",
        "Practitioner/",
        "Care",
        "Cara",
    ]) {
        assert!(!answers.contains(secret), "{secret:?} in {answers}");
    }
    let text = h.call("GET", "/metrics", None).await.json;
    for key in samples(text.as_str().unwrap()).keys() {
        if let Some((_, labels)) = key.split_once('{') {
            for label in labels.trim_end_matches('}').split(',') {
                let name = label.split('=').next().unwrap();
                assert_eq!(name, "class", "label {label} in {key}");
            }
        }
    }
}
