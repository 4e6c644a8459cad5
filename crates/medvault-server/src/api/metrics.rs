//! `/healthz` (is this node ready to serve?) and `/metrics` (Prometheus text exposition):
//! both unauthenticated, like `/sys/health`, so both carry aggregates only (counts and
//! states; no ids, paths, accounts or anything of a patient).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{fhir_response, AppState};
use crate::outcome::operation_outcome;

/// Answers since start, by status class (1xx to 5xx).
#[derive(Default)]
pub(crate) struct Answers {
    by_class: [AtomicU64; 5],
}

impl Answers {
    fn count(&self, status: StatusCode) {
        let class = usize::from(status.as_u16() / 100);
        if let Some(counter) = class.checked_sub(1).and_then(|i| self.by_class.get(i)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Count every answer (outermost layer: errors made by other layers count too).
pub(crate) async fn count_answers(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let response = next.run(req).await;
    state.answers.count(response.status());
    response
}

/// 200 while the node can serve FHIR requests; 503 (an OperationOutcome saying why) while it
/// is sealed or its audit ledger failed verification, so a load balancer sends nothing here.
pub(crate) async fn healthz(State(state): State<AppState>) -> Response {
    let why = if state.repo.vault().is_sealed() {
        Some("the server is sealed")
    } else if state.repo.ledger().compromised().is_some() {
        // The detail is logged where it was found, not shown here.
        Some("the audit ledger failed verification")
    } else {
        None
    };
    match why {
        Some(why) => fhir_response(
            StatusCode::SERVICE_UNAVAILABLE,
            operation_outcome("transient", why),
        ),
        None => Json(json!({ "status": "ok" })).into_response(),
    }
}

/// The Prometheus text format (version 0.0.4).
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let repo = state.repo.clone();
    // A point lookup (the greatest entry index), off the async threads like every store call.
    let ledger_size = crate::workers::run(move || repo.store().ledger_size())
        .await
        .ok()
        .and_then(Result::ok);
    let mut out = String::new();
    let flag = |b: bool| u64::from(b);
    let repo = &state.repo;
    metric(
        &mut out,
        "medvault_sealed",
        "gauge",
        "1 while the vault is sealed (only health and unseal answer).",
        &[("", flag(repo.vault().is_sealed()))],
    );
    metric(
        &mut out,
        "medvault_ledger_compromised",
        "gauge",
        "1 once the audit ledger failed verification (writes are refused).",
        &[("", flag(repo.ledger().compromised().is_some()))],
    );
    if let Some(size) = ledger_size {
        metric(
            &mut out,
            "medvault_ledger_entries",
            "gauge",
            "Entries in the audit ledger.",
            &[("", size)],
        );
    }
    metric(
        &mut out,
        "medvault_ledger_queued_entries",
        "gauge",
        "Ledger entries waiting for the next group commit.",
        &[("", repo.ledger().queued() as u64)],
    );
    metric(
        &mut out,
        "medvault_integrity_errors_total",
        "counter",
        "Stored rows that failed decryption or their integrity checks (never served).",
        &[("", repo.integrity_errors())],
    );
    metric(
        &mut out,
        "medvault_pipelined_transactions_total",
        "counter",
        "Large create-only transactions prepared while written.",
        &[("", repo.pipelined_commits())],
    );
    metric(
        &mut out,
        "medvault_retried_transactions_total",
        "counter",
        "Create-only transactions prepared again under the write lock after their commit lost a race.",
        &[("", repo.retried_commits())],
    );
    metric(
        &mut out,
        "medvault_worker_threads",
        "gauge",
        "Threads (busy, idle or starting) that run the server's blocking work; idle ones exit after 10 s.",
        &[("", crate::workers::threads() as u64)],
    );
    metric(
        &mut out,
        "medvault_refused_unseal_shares_total",
        "counter",
        "Unseal shares refused (wrong, duplicate or malformed).",
        &[("", state.refused_shares.load(Ordering::Relaxed))],
    );
    let classes: Vec<(String, u64)> = state
        .answers
        .by_class
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("class=\"{}xx\"", i + 1), c.load(Ordering::Relaxed)))
        .collect();
    let classes: Vec<(&str, u64)> = classes.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    metric(
        &mut out,
        "medvault_http_responses_total",
        "counter",
        "HTTP answers since start, by status class.",
        &classes,
    );
    if let Some(bytes) = resident_bytes() {
        metric(
            &mut out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            &[("", bytes)],
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// One metric family: its HELP and TYPE lines, then one sample per label set ("" for none).
fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// This process's resident set (Linux: `VmRSS` of `/proc/self/status`); `None` elsewhere.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}
