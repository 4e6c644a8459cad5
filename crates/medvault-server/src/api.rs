//! The HTTP API: `/sys/*` seal lifecycle and `/fhir/*` FHIR R4 REST. This module is the only
//! place that knows the JSON wire shapes; it maps everything to the repository and the vault.

// Helpers return a finished error `Response` in `Err`; it is built once per failed request,
// so its size does not matter.
#![allow(clippy::result_large_err)]

mod admin;
mod break_glass;
mod metrics;
mod password;
mod token;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Extension, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::access::Caller;
use crate::accounts::{self, AccountError};
use crate::bundle::parse_etag;
use crate::clock::{format_http_date, format_instant};
use crate::ledger::{Audit, Event, LedgerError};
use crate::limits::{ReadLimiter, ReadLimits};
use crate::login::{self as opaque, LoginError, Logins};
use crate::outcome::{
    for_account_error, for_login_error, for_repo_error, for_vault_error, operation_outcome,
};
use crate::repo::{
    parse_query_string, patient_of_resource, patient_of_stored, Page, RepoError, Repository,
    RewrapProgress, Stored,
};
use crate::session::{SessionError, Sessions};
use crate::vault::{Vault, VaultError};
use medvault_ledger::Outcome;
use medvault_policy::Action;

/// Largest request body accepted (bundles can be large; resources are not).
pub const MAX_BODY: usize = 64 * 1024 * 1024;
/// How long a client may take to send a request body before it is answered 408 (a slow
/// client must not hold a connection and a buffer for ever).
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// State of the background re-wrap after a rotation.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RewrapStatus {
    pub running: bool,
    pub rewrapped: u64,
    pub remaining: u64,
    pub error: Option<String>,
}

/// Shared state of the HTTP layer.
#[derive(Clone)]
pub struct AppState {
    pub repo: Arc<Repository>,
    /// Absolute base of the FHIR endpoint, e.g. `https://ehr.example.org/fhir`.
    pub fhir_base: String,
    pub rewrap: Arc<Mutex<RewrapStatus>>,
    /// Shares refused while sealed (the ledger cannot be written then); recorded at unseal.
    pub refused_shares: Arc<AtomicU64>,
    /// Operator entries that could not be written yet (see `record_sys`).
    unrecorded: Arc<Mutex<Vec<(Audit, Event)>>>,
    /// OPAQUE logins in progress and failed-login back-off.
    logins: Arc<Logins>,
    /// The DPoP replay cache and token issuance.
    sessions: Arc<Sessions>,
    /// The public base URL (issuer and audience of access tokens; DPoP proofs name it).
    public_url: String,
    /// Whether FHIR requests without a token are served (anonymously, outside the policy).
    allow_anonymous: bool,
    /// Per-account limits on reading patient data.
    reads: Arc<ReadLimiter>,
    /// How long a client may take to send a request body.
    body_timeout: std::time::Duration,
    /// Answers by status class, for `/metrics`.
    answers: Arc<metrics::Answers>,
}

impl AppState {
    pub fn new(repo: Arc<Repository>, public_url: &str) -> AppState {
        AppState {
            repo,
            fhir_base: format!("{}/fhir", public_url.trim_end_matches('/')),
            rewrap: Arc::new(Mutex::new(RewrapStatus::default())),
            refused_shares: Arc::new(AtomicU64::new(0)),
            unrecorded: Arc::new(Mutex::new(Vec::new())),
            logins: Arc::new(Logins::new()),
            sessions: Arc::new(Sessions::new()),
            public_url: public_url.trim_end_matches('/').to_string(),
            allow_anonymous: false,
            reads: Arc::new(ReadLimiter::new(ReadLimits::default())),
            body_timeout: BODY_TIMEOUT,
            answers: Arc::default(),
        }
    }

    /// How long a client may take to send a request body (default `BODY_TIMEOUT`).
    pub fn with_body_timeout(mut self, t: std::time::Duration) -> AppState {
        self.body_timeout = t;
        self
    }

    /// Limit how much patient data one account may read per window.
    pub fn with_read_limits(mut self, limits: ReadLimits) -> AppState {
        self.reads = Arc::new(ReadLimiter::new(limits));
        self
    }

    /// The PHI read limiter (to attach an alert hook).
    pub fn read_limiter(&self) -> &Arc<ReadLimiter> {
        &self.reads
    }

    /// Serve FHIR requests that carry no token, anonymously and outside the access policy
    /// (`--danger-no-auth`, `--dev`). Requests that carry a token are still checked.
    pub fn allowing_anonymous(mut self, allow: bool) -> AppState {
        self.allow_anonymous = allow;
        self
    }
}

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let fhir = Router::new()
        .route("/metadata", get(metadata))
        .route("/", post(bundle))
        .route("/{rtype}", get(search).post(create))
        .route("/{rtype}/_search", post(search_post))
        .route("/{rtype}/_history", get(type_history))
        .route(
            "/{rtype}/{id}",
            get(read).put(update).delete(delete).patch(patch),
        )
        .route("/{rtype}/{id}/_history", get(instance_history))
        .route("/{rtype}/{id}/_history/{vid}", get(vread))
        .route("/Patient/{id}/$break-glass", post(break_glass::break_glass))
        .layer(middleware::from_fn_with_state(state.clone(), record_fhir));
    // `POST [base]/` (trailing slash) is the same transaction/batch endpoint: fhirclient,
    // fhirpy and fhir-kit-client all post Bundles there. Nested at "/fhir/", so its handler
    // and `record_fhir` see the path "/" like the one above.
    let fhir_root = Router::new()
        .route("/", post(bundle))
        .layer(middleware::from_fn_with_state(state.clone(), record_fhir));
    let ledger = Router::new()
        .route("/checkpoint", get(ledger_checkpoint))
        .route("/key", get(ledger_key))
        .route("/proof/inclusion", get(ledger_inclusion))
        .route("/proof/consistency", get(ledger_consistency))
        .route("/entries", get(ledger_entries));
    let auth = Router::new()
        .route("/opaque/register/start", post(register_start))
        .route("/opaque/register/finish", post(register_finish))
        .route("/opaque/login/start", post(login_start))
        .route("/opaque/login/finish", post(login_finish))
        .route("/opaque/password/start", post(password::start))
        .route("/opaque/password/finish", post(password::finish))
        .route("/whoami", get(whoami))
        .route("/token", post(token::token))
        .route("/logout", post(token::logout));
    let admin = Router::new()
        .route("/accounts", get(admin::list_accounts))
        .route(
            "/accounts/{id}",
            axum::routing::patch(admin::update_account),
        )
        .route("/accounts/{id}/reset-token", post(admin::reset_token))
        .route("/tokens", post(admin::issue_token))
        .route("/tokens/revoke", post(admin::revoke_token))
        .route("/clients", get(admin::list_clients).post(admin::add_client))
        .route("/clients/{id}", axum::routing::patch(admin::update_client));
    Router::new()
        .route("/sys/health", get(health))
        .route("/sys/seal-status", get(seal_status))
        .route("/sys/unseal", post(unseal))
        .route("/sys/seal", post(seal))
        .route("/sys/rotate", post(rotate).get(rotate_status))
        .route("/sys/rekey", post(rekey))
        .route(
            "/.well-known/smart-configuration",
            get(token::smart_configuration),
        )
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(metrics::healthz))
        .route("/metrics", get(metrics::metrics))
        // SMART App Launch: discovery is at the FHIR base + /.well-known (where clients such
        // as fhir-kit-client look); public, like the copy at the root.
        .route(
            "/fhir/.well-known/smart-configuration",
            get(token::smart_configuration),
        )
        .nest("/fhir", fhir)
        .nest("/fhir/", fhir_root)
        .nest("/ledger", ledger)
        .nest("/auth", auth)
        .nest("/admin", admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), sealed_gate))
        .layer(middleware::from_fn_with_state(state.clone(), body_deadline))
        .layer(middleware::from_fn(attach_audit))
        .layer(middleware::from_fn(outcome_for_every_error))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::count_answers,
        ))
        .with_state(state)
}

/// Read the whole request body within the deadline (and the size limit) before anything
/// else runs: a client that sends too slowly gets 408, one that sends too much 413.
async fn body_deadline(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, MAX_BODY);
    let bytes = match tokio::time::timeout(state.body_timeout, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return if too_large {
                fhir_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    operation_outcome(
                        "too-costly",
                        "the request body is larger than the server accepts",
                    ),
                )
            } else {
                bad_request("the request body could not be read")
            };
        }
        Err(_) => {
            return fhir_response(
                StatusCode::REQUEST_TIMEOUT,
                operation_outcome(
                    "timeout",
                    "the request body did not arrive in time; nothing was done",
                ),
            )
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

/// The OpenAPI document of this API (`GET /openapi.json`).
const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// While sealed, only health, seal status, unseal, metrics and the OpenAPI document answer;
/// everything else is 503.
async fn sealed_gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let open = matches!(
        (req.method(), req.uri().path()),
        (&Method::GET, "/sys/health")
            | (&Method::GET, "/sys/seal-status")
            | (&Method::POST, "/sys/unseal")
            | (&Method::GET, "/openapi.json")
            | (&Method::GET, "/healthz")
            | (&Method::GET, "/metrics")
    );
    if !open && state.repo.vault().is_sealed() {
        return fhir_response(
            StatusCode::SERVICE_UNAVAILABLE,
            operation_outcome(
                "transient",
                "the server is sealed; unseal it with key shares",
            ),
        );
    }
    next.run(req).await
}

/// Marks a response whose ledger entry was committed together with the action itself.
#[derive(Clone, Copy, Debug)]
struct Recorded;

/// Marks a response to a request whose writes are already committed (each with its own
/// ledger entry), but which still needs its summary entry: if that entry cannot be written
/// the answer is withheld, and the client must not be told that nothing was written.
#[derive(Clone, Copy, Debug)]
struct Committed;

/// The patients whose data a response carries (or a search named), for its ledger entries:
/// one entry per patient, so each patient sees every access to their data.
#[derive(Clone, Debug, Default)]
struct AuditPatient(Vec<String>);

/// The policy's reason for a refusal, for its ledger entry.
#[derive(Clone, Copy, Debug)]
struct AuditReason(&'static str);

/// Batch entries the policy refused (patient, reason): each gets its own refusal entry.
#[derive(Clone, Debug, Default)]
struct RefusedEntries(Vec<(String, &'static str)>);

/// The purpose of use a caller stated (break-glass), for its ledger entry.
#[derive(Clone, Debug)]
struct AuditPurpose(String);

/// Most patients one response's ledger entries name individually.
const MAX_AUDITED_PATIENTS: usize = 1000;

/// The distinct patients of every resource in a response body (resources, search and history
/// Bundles, and the Bundles nested in batch/transaction responses).
fn patients_in(v: &Value, out: &mut std::collections::BTreeSet<String>) {
    if out.len() >= MAX_AUDITED_PATIENTS {
        return;
    }
    if v.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
        for e in v["entry"].as_array().into_iter().flatten() {
            if let Some(r) = e.get("resource") {
                patients_in(r, out);
            }
        }
        return;
    }
    let p = patient_of_resource(v);
    if !p.is_empty() {
        out.insert(p);
    }
}

fn audit_patients(body: &Value, named: Option<String>) -> AuditPatient {
    let mut set = std::collections::BTreeSet::new();
    if let Some(p) = named.filter(|p| !p.is_empty()) {
        set.insert(p);
    }
    patients_in(body, &mut set);
    AuditPatient(set.into_iter().collect())
}

/// Attach who is asking, and from where, to every request (handlers and the ledger read it).
async fn attach_audit(mut req: Request, next: Next) -> Response {
    let address = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    req.extensions_mut()
        .insert(Audit::anonymous(&address, &agent));
    next.run(req).await
}

/// The ledger's action name, resource type and id for a FHIR request (never its query,
/// which can hold names and identifiers). `None` for requests that touch no data.
fn describe(method: &Method, path: &str) -> Option<(&'static str, String, String)> {
    // `path` is relative to /fhir (this runs inside the nested router).
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let action = match (method, segs.as_slice()) {
        // Only reading the capability statement is public.
        (&Method::GET, ["metadata"]) => return None,
        (&Method::POST, []) => "bundle",
        (&Method::GET, [_]) | (&Method::POST, [_, "_search"]) => "search",
        (&Method::POST, [_]) => "create",
        (&Method::GET, [_, "_history"]) | (&Method::GET, [_, _, "_history"]) => "history",
        (&Method::GET, [_, _, "_history", _]) => "vread",
        (&Method::GET, [_, _]) => "read",
        (&Method::PUT, [_, _]) => "update",
        (&Method::PATCH, [_, _]) => "patch",
        (&Method::DELETE, [_, _]) => "delete",
        (&Method::POST, ["Patient", _, "$break-glass"]) => "break-glass",
        _ => "other",
    };
    // Only a supported type and a well-formed id go into the ledger: the path is the
    // client's text, from anyone (refusals are recorded before authentication), and what
    // is not an id may be data.
    let rtype = segs
        .first()
        .copied()
        .filter(|t| medvault_fhir::is_supported_type(t));
    let id = segs
        .get(1)
        .copied()
        .filter(|id| rtype.is_some() && medvault_fhir::is_valid_id(id));
    Some((
        action,
        rtype.unwrap_or_default().to_string(),
        id.unwrap_or_default().to_string(),
    ))
}

/// Every FHIR request ends in the ledger: writes inside their own commit (marked
/// `Recorded`), everything else (reads, searches, refusals, errors) here, in a durable commit
/// before the answer leaves. If that commit fails, the answer is withheld.
async fn record_fhir(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let mut audit = req.extensions().get::<Audit>().cloned().unwrap_or_default();
    let described = describe(req.method(), req.uri().path());
    // Who is asking: a DPoP-bound token if one is presented; anonymous only where the
    // server allows it (`--danger-no-auth`, `--dev`). The capability statement is public.
    let caller = if described.is_none() {
        Caller::Anonymous
    } else if req.headers().contains_key(header::AUTHORIZATION) || !state.allow_anonymous {
        let path = req
            .extensions()
            .get::<axum::extract::OriginalUri>()
            .map_or_else(|| req.uri().path().to_string(), |u| u.0.path().to_string());
        match authenticate(&state, req.method(), &path, req.headers()).await {
            Ok(a) => {
                audit.actor = a.account.id().to_string();
                audit.role = a.account.role().as_str().to_string();
                audit.client = a.client().unwrap_or_default().to_string();
                Caller::User(Box::new(a.account))
            }
            Err(resp) => {
                let (action, rtype, id) = described.unwrap_or_default();
                let event =
                    Event::new(action, &rtype, &id, Outcome::Deny).reason(resp.status().as_str());
                return record_then(&state, audit, vec![event], resp).await;
            }
        }
    } else {
        Caller::Anonymous
    };
    // Reads of patient data are limited per account: past the limit, refused until the
    // window ends (the refusal is recorded like any other).
    // Everything that can answer with stored data counts: reads, searches, history,
    // bundles (their reads), PATCH (the merged resource) and a conditional create (the
    // match it returns); a plain create, update or delete answers with what was sent.
    let conditional = req.headers().contains_key("if-none-exist");
    let reader = match (&caller, described.as_ref()) {
        (Caller::User(a), Some((action, _, _)))
            if matches!(
                *action,
                "read" | "vread" | "search" | "history" | "bundle" | "patch"
            ) || (*action == "create" && conditional) =>
        {
            Some(a.id().to_string())
        }
        _ => None,
    };
    if let Some(account) = &reader {
        if let Err(wait) = state.reads.check(account, state.repo.clock().now_ms()) {
            let (action, rtype, id) = described.unwrap_or_default();
            let event = Event::new(action, &rtype, &id, Outcome::Deny).reason("phi-read-limit");
            let mut resp = fhir_response(
                StatusCode::TOO_MANY_REQUESTS,
                operation_outcome(
                    "throttled",
                    &format!("this account has read its limit of patient data for now; retry after {wait} s"),
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return record_then(&state, audit, vec![event], resp).await;
        }
    }
    req.extensions_mut().insert(audit.clone());
    req.extensions_mut().insert(caller.clone());
    let resp = next.run(req).await;
    if let (Some(account), true) = (&reader, resp.status().is_success()) {
        let n = resp
            .extensions()
            .get::<AuditPatient>()
            .map_or(0, |p| p.0.len() as u64);
        if n > 0 {
            state.reads.add(account, n, state.repo.clock().now_ms());
        }
    }
    if resp.extensions().get::<Recorded>().is_some() {
        return resp;
    }
    let Some((action, rtype, id)) = described else {
        return resp;
    };
    let status = resp.status();
    let outcome = if status.is_success() {
        Outcome::Allow
    } else if matches!(status, StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED) {
        Outcome::Deny
    } else {
        Outcome::Error
    };
    let mut event = Event::new(action, &rtype, &id, outcome);
    if let Some(AuditReason(code)) = resp.extensions().get::<AuditReason>() {
        event = event.reason(code);
    } else if !status.is_success() {
        event = event.reason(status.as_str());
    }
    let patients = resp
        .extensions()
        .get::<AuditPatient>()
        .cloned()
        .unwrap_or_default();
    let mut events: Vec<Event> = if patients.0.is_empty() {
        vec![event]
    } else {
        patients
            .0
            .iter()
            .map(|p| event.clone().patient(p))
            .collect()
    };
    if let Some(RefusedEntries(refused)) = resp.extensions().get::<RefusedEntries>() {
        for (patient, reason) in refused {
            events.push(
                Event::new(action, &rtype, &id, Outcome::Deny)
                    .reason(reason)
                    .patient(patient),
            );
        }
    }
    if let Some(AuditPurpose(p)) = resp.extensions().get::<AuditPurpose>() {
        audit.purpose = p.chars().take(1000).collect();
    }
    // If the grants cannot be read, the entries are written unflagged and the answer is
    // withheld; a request whose writes are committed says so (`carried_out`).
    let resp = match flag_break_glass(&state, caller, &mut events).await {
        Ok(()) => resp,
        Err(failed) if resp.extensions().get::<Committed>().is_some() => {
            carried_out(failed.status())
        }
        Err(failed) => failed,
    };
    record_then(&state, audit, events, resp).await
}

/// Flag every entry about a patient whose chart the caller holds a break-glass grant on
/// (every access during the grant is flagged, whatever else allowed it).
async fn flag_break_glass(
    state: &AppState,
    caller: Caller,
    events: &mut [Event],
) -> Result<(), Response> {
    if !matches!(&caller, Caller::User(a) if matches!(a.role(), accounts::Role::Physician | accounts::Role::Nurse))
    {
        return Ok(());
    }
    let patients: Vec<String> = events.iter().map(|e| e.patient.clone()).collect();
    let flags = blocking(state, move |r| {
        patients
            .iter()
            .map(|p| r.under_break_glass(&caller, p))
            .collect::<Result<Vec<bool>, RepoError>>()
    })
    .await?;
    for (e, flag) in events.iter_mut().zip(flags) {
        e.break_glass |= flag;
    }
    Ok(())
}

/// Write `events` durably, then answer `resp`; if they cannot be written, the answer is
/// withheld.
async fn record_then(
    state: &AppState,
    audit: Audit,
    events: Vec<Event>,
    resp: Response,
) -> Response {
    let repo = state.repo.clone();
    let recorded = crate::workers::run(move || -> Result<(), RepoError> {
        let keys = repo.keys()?;
        Ok(repo.ledger().record(&keys, &audit, &events)?)
    })
    .await;
    let err = match recorded {
        Ok(Ok(())) => return resp,
        Ok(Err(e)) => e,
        Err(_) => RepoError::Internal("worker failed"),
    };
    tracing::error!(error = %err, "audit ledger write failed; answer withheld");
    if resp.extensions().get::<Committed>().is_none() {
        return repo_error(err);
    }
    // The writes stand: say so, with the status the failure itself would have.
    carried_out(for_repo_error(&err).0)
}

/// Which of a Bundle's entries ask to write (any method but GET), in order.
fn asks_to_write(bundle: &Value) -> Vec<bool> {
    bundle["entry"].as_array().map_or_else(Vec::new, |entries| {
        entries
            .iter()
            .map(|e| e["request"]["method"].as_str() != Some("GET"))
            .collect()
    })
}

/// Whether the answer to a Bundle reports a write that succeeded (its entries answer the
/// request's in order): only then can a withheld answer say that what it wrote is stored.
/// A batch whose writes all failed wrote nothing.
fn wrote_something(answer: &Value, asks: &[bool]) -> bool {
    answer["entry"].as_array().is_some_and(|entries| {
        entries.iter().zip(asks).any(|(e, &asked)| {
            asked
                && e["response"]["status"]
                    .as_str()
                    .is_some_and(|s| s.starts_with('2'))
        })
    })
}

/// The answer to a request whose writes are committed but whose audit record could not be
/// completed afterwards: withheld, with the failure's `status`, and never "nothing was
/// written" (a client that retried would write it all twice).
fn carried_out(status: StatusCode) -> Response {
    let mut resp = fhir_response(
        status,
        operation_outcome(
            "transient",
            "the request was carried out and what it wrote is stored, but its audit record \
             could not be completed (see the server's log), so the answer is withheld",
        ),
    );
    // Still committed, should its entries then fail to be written too.
    resp.extensions_mut().insert(Committed);
    resp
}

/// Record an operator action (seal, unseal, rotate, rekey) while keys are available.
///
/// An operator action is not undone or refused because its entry cannot be written (sealing
/// must work exactly when something is wrong): the entry is kept in memory and written with
/// the next operator entry that can be, and the failure is logged.
async fn record_sys(state: &AppState, audit: Audit, event: Event) {
    let repo = state.repo.clone();
    let queue = state.unrecorded.clone();
    let r = crate::workers::run(move || -> Result<(), RepoError> {
        let mut queue = queue.lock().unwrap_or_else(|e| e.into_inner());
        queue.push((audit, event));
        let keys = repo.keys()?;
        for (audit, event) in queue.iter() {
            repo.ledger()
                .record(&keys, audit, std::slice::from_ref(event))?;
        }
        queue.clear();
        Ok(())
    })
    .await;
    match r {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::error!(error = %e, "operator action not yet in the audit ledger; kept for the next attempt")
        }
        Err(_) => tracing::error!("operator ledger worker failed"),
    }
}

/// Errors produced outside the handlers (body too large, bad path encoding, ...) come from
/// axum as plain text; give them an OperationOutcome body like every other error.
async fn outcome_for_every_error(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_fhir = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/fhir+json"));
    let own_shape = resp.extensions().get::<token::OwnErrorShape>().is_some();
    if !(status.is_client_error() || status.is_server_error()) || is_fhir || own_shape {
        return resp;
    }
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too-costly",
        StatusCode::METHOD_NOT_ALLOWED => "not-supported",
        StatusCode::NOT_FOUND => "not-found",
        s if s.is_server_error() => "exception",
        _ => "invalid",
    };
    let text = status.canonical_reason().unwrap_or("error");
    fhir_response(status, operation_outcome(code, text))
}

async fn method_not_allowed() -> Response {
    fhir_response(
        StatusCode::METHOD_NOT_ALLOWED,
        operation_outcome("not-supported", "this method is not supported on this path"),
    )
}

fn fhir_response(status: StatusCode, body: Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    resp
}

fn repo_error(err: RepoError) -> Response {
    let (status, body) = for_repo_error(&err);
    let mut resp = fhir_response(status, body);
    // A refusal is an access to that patient's data too: it goes into their log.
    if let RepoError::Forbidden {
        patient, reason, ..
    } = &err
    {
        if let Some(p) = patient {
            resp.extensions_mut().insert(AuditPatient(vec![p.clone()]));
        }
        resp.extensions_mut().insert(AuditReason(reason));
    }
    resp
}

fn bad_request(msg: &str) -> Response {
    fhir_response(StatusCode::BAD_REQUEST, operation_outcome("invalid", msg))
}

async fn not_found() -> Response {
    fhir_response(
        StatusCode::NOT_FOUND,
        operation_outcome("not-found", "no such endpoint"),
    )
}

/// Run blocking repository work off the async threads.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Repository) -> Result<T, RepoError> + Send + 'static,
) -> Result<T, Response> {
    let repo = state.repo.clone();
    match crate::workers::run(move || f(&repo)).await {
        Ok(r) => r.map_err(repo_error),
        Err(_) => Err(repo_error(RepoError::Internal("worker failed"))),
    }
}

/// What a request body that does not parse as JSON is told.
const NOT_JSON: &str = "the request body is not valid JSON";

/// Accept FHIR JSON or plain JSON (and JSON Patch where asked); parse the body.
fn json_body(headers: &HeaderMap, body: &Bytes, allow_patch: bool) -> Result<Value, Response> {
    json_content_type(headers, allow_patch)?;
    serde_json::from_slice(body).map_err(|_| bad_request(NOT_JSON))
}

/// Refuse a body that is not FHIR JSON or plain JSON (or JSON Patch where asked).
fn json_content_type(headers: &HeaderMap, allow_patch: bool) -> Result<(), Response> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let ok = ct == "application/fhir+json"
        || ct == "application/json"
        || (allow_patch && ct == "application/json-patch+json");
    if !ok {
        return Err(fhir_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            operation_outcome(
                "not-supported",
                "Content-Type must be application/fhir+json or application/json",
            ),
        ));
    }
    Ok(())
}

fn if_match(headers: &HeaderMap) -> Result<Option<i64>, Response> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(parse_etag)
            .map(Some)
            .ok_or_else(|| bad_request("If-Match must be a version ETag like W/\"1\"")),
    }
}

fn wants_minimal(headers: &HeaderMap) -> bool {
    headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("return=minimal"))
}

fn resource_response(
    state: &AppState,
    status: StatusCode,
    stored: &Stored,
    location: bool,
    minimal: bool,
) -> Response {
    let body = if minimal {
        String::new()
    } else {
        stored
            .resource
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default()
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{}\"", stored.version)) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format_http_date(stored.updated_ms)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    if location {
        let url = format!(
            "{}/{}/{}/_history/{}",
            state.fhir_base, stored.rtype, stored.id, stored.version
        );
        if let Ok(v) = HeaderValue::from_str(&url) {
            h.insert(header::LOCATION, v.clone());
            h.insert(header::CONTENT_LOCATION, v);
        }
    }
    resp
}

// ---------------------------------------------------------------- /sys

async fn health(State(state): State<AppState>) -> Response {
    let sealed = state.repo.vault().is_sealed();
    // The reason is logged, not shown: health is unauthenticated.
    let compromised = state.repo.ledger().compromised().is_some();
    Json(json!({
        "status": if compromised { "ledger-compromised" } else { "ok" },
        "sealed": sealed,
        "integrity_errors": state.repo.integrity_errors(),
        "ledger_compromised": compromised,
    }))
    .into_response()
}

/// Run blocking vault work off the async threads; errors become their HTTP answers.
async fn vault_blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Vault) -> Result<T, VaultError> + Send + 'static,
) -> Result<T, Response> {
    let vault = state.repo.vault().clone();
    match crate::workers::run(move || f(&vault)).await {
        Ok(r) => r.map_err(vault_error),
        Err(_) => Err(repo_error(RepoError::Internal("worker failed"))),
    }
}

async fn seal_status(State(state): State<AppState>) -> Response {
    match vault_blocking(&state, |v| v.status()).await {
        Ok(s) => Json(s).into_response(),
        Err(r) => r,
    }
}

fn vault_error(e: VaultError) -> Response {
    let (status, body) = for_vault_error(&e);
    fhir_response(status, body)
}

/// Parse `{"share": "..."}`.
fn share_field(body: &Bytes) -> Result<String, Response> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| bad_request("expected a JSON object"))?;
    v.get("share")
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| bad_request("expected {\"share\": \"medvault-share:...\"}"))
}

async fn unseal(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    body: Bytes,
) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return bad_request("expected a JSON object"),
    };
    let Some(share) = v.get("share").and_then(Value::as_str).map(String::from) else {
        return bad_request(
            "expected {\"share\": \"medvault-share:...\"} (and \"reset\": true to start over)",
        );
    };
    if v.get("reset").and_then(Value::as_bool) == Some(true) {
        // Starting over needs a valid share too, or anyone could wipe the admins' progress.
        return match vault_blocking(&state, move |v| v.reset_progress(&share)).await {
            Ok(()) => seal_status(State(state)).await,
            Err(r) => r,
        };
    }
    let submit = move |v: &Vault| {
        v.submit_share(&share)
            .inspect_err(|e| tracing::warn!(reason = %e, "unseal share refused"))
    };
    match vault_blocking(&state, submit).await {
        Ok(status) => {
            if !status.sealed {
                tracing::info!("vault unsealed");
                // While sealed nothing can be written to the ledger; the unseal entry
                // carries how many shares were refused on the way.
                let refused = state.refused_shares.swap(0, Ordering::Relaxed);
                let event = Event::new("unseal", "", "", Outcome::Allow)
                    .reason(&format!("{refused} share(s) refused while sealed"));
                record_sys(&state, audit, event).await;
                // Finish any re-wrap a rotation before a restart or seal left unfinished.
                start_rewrap(&state);
            }
            Json(status).into_response()
        }
        Err(r) => {
            if state.repo.vault().is_sealed() {
                state.refused_shares.fetch_add(1, Ordering::Relaxed);
            } else {
                // A share sent to an unsealed server: recordable now.
                let event = Event::new("unseal", "", "", Outcome::Deny).reason("already unsealed");
                record_sys(&state, audit, event).await;
            }
            r
        }
    }
}

async fn seal(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    body: Bytes,
) -> Response {
    let share = match share_field(&body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    // Check the share first, record the decision while the keys are still here, then seal.
    let check = share.clone();
    if let Err(r) = vault_blocking(&state, move |v| v.check_share(&check)).await {
        let event = Event::new("seal", "", "", Outcome::Deny).reason("share refused");
        record_sys(&state, audit, event).await;
        return r;
    }
    record_sys(&state, audit, Event::new("seal", "", "", Outcome::Allow)).await;
    match vault_blocking(&state, move |v| v.seal(&share)).await {
        Ok(()) => {
            state.repo.ledger().forget();
            tracing::warn!("vault sealed by operator");
            seal_status(State(state)).await
        }
        Err(r) => r,
    }
}

async fn rotate(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    body: Bytes,
) -> Response {
    let share = match share_field(&body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let version = match vault_blocking(&state, move |v| v.rotate(&share)).await {
        Ok(v) => v,
        Err(r) => {
            let event = Event::new("rotate", "", "", Outcome::Deny).reason(r.status().as_str());
            record_sys(&state, audit, event).await;
            return r;
        }
    };
    tracing::info!(key_version = version, "key-encryption key rotated");
    let event = Event::new("rotate", "", "", Outcome::Allow)
        .reason(&format!("key-encryption key version {version}"));
    record_sys(&state, audit, event).await;
    start_rewrap(&state);
    (
        StatusCode::ACCEPTED,
        Json(json!({ "key_version": version, "rewrap": "started" })),
    )
        .into_response()
}

/// Re-wrap data keys under the newest KEK in the background, a batch at a time.
pub fn start_rewrap(state: &AppState) {
    {
        let mut s = state.rewrap.lock().unwrap_or_else(|e| e.into_inner());
        if s.running {
            return;
        }
        *s = RewrapStatus {
            running: true,
            ..Default::default()
        };
    }
    let repo = state.repo.clone();
    let status = state.rewrap.clone();
    tokio::spawn(async move {
        let mut total = 0;
        loop {
            let r = repo.clone();
            let step = crate::workers::run(move || r.rewrap_step(256)).await;
            let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
            match step {
                Ok(Ok(RewrapProgress {
                    rewrapped,
                    remaining,
                })) => {
                    total += rewrapped;
                    s.rewrapped = total;
                    s.remaining = remaining;
                    if remaining == 0 {
                        s.running = false;
                        if total > 0 {
                            tracing::info!(rewrapped = total, "data-key re-wrap finished");
                        }
                        return;
                    }
                    if rewrapped == 0 {
                        // Keys remain but none could be moved: do not spin; report it.
                        s.running = false;
                        s.error = Some(format!("{remaining} data keys could not be re-wrapped"));
                        tracing::error!(remaining, "data-key re-wrap made no progress");
                        return;
                    }
                }
                Ok(Err(e)) => {
                    s.running = false;
                    s.error = Some(e.to_string());
                    tracing::error!(error = %e, "data-key re-wrap stopped");
                    return;
                }
                Err(_) => {
                    s.running = false;
                    s.error = Some("worker failed".into());
                    return;
                }
            }
        }
    });
}

async fn rotate_status(State(state): State<AppState>) -> Response {
    let rewrap = state
        .rewrap
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let current = state.repo.vault().keys().map(|k| k.current_kek()).ok();
    match blocking(&state, |r| r.key_versions()).await {
        Ok(versions) => Json(json!({
            "key_version": current,
            "data_keys_by_version": versions.iter().map(|(v, n)| json!({"version": v, "count": n})).collect::<Vec<_>>(),
            "rewrap": rewrap,
        }))
        .into_response(),
        Err(r) => r,
    }
}

async fn rekey(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    body: Bytes,
) -> Response {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return bad_request("expected a JSON object"),
    };
    let shares: Option<Vec<String>> = v.get("shares").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect()
    });
    let threshold = v.get("new_threshold").and_then(Value::as_u64);
    let count = v.get("new_shares").and_then(Value::as_u64);
    let (Some(shares), Some(threshold), Some(count)) = (shares, threshold, count) else {
        return bad_request(
            "expected {\"shares\": [current shares...], \"new_threshold\": K, \"new_shares\": N}",
        );
    };
    let (Ok(threshold), Ok(count)) = (u8::try_from(threshold), u8::try_from(count)) else {
        return bad_request("new_threshold and new_shares must be between 1 and 255");
    };
    match vault_blocking(&state, move |v| v.rekey(&shares, threshold, count)).await {
        Ok(issued) => {
            tracing::warn!(threshold, count, "vault rekeyed; old shares are void");
            let event = Event::new("rekey", "", "", Outcome::Allow)
                .reason(&format!("new share set {threshold} of {count}"));
            record_sys(&state, audit, event).await;
            let shares: Vec<String> = issued
                .shares
                .iter()
                .map(|s| s.encode().to_string())
                .collect();
            Json(json!({ "threshold": issued.threshold, "shares": shares })).into_response()
        }
        Err(r) => {
            let event = Event::new("rekey", "", "", Outcome::Deny).reason(r.status().as_str());
            record_sys(&state, audit, event).await;
            r
        }
    }
}

// ---------------------------------------------------------------- /auth

/// Why an authentication request failed.
enum AuthFailure {
    Account(AccountError),
    Login(LoginError),
    Session(SessionError),
    Repo(RepoError),
    BadRequest(&'static str),
}

impl From<AccountError> for AuthFailure {
    fn from(e: AccountError) -> Self {
        AuthFailure::Account(e)
    }
}
impl From<LoginError> for AuthFailure {
    fn from(e: LoginError) -> Self {
        AuthFailure::Login(e)
    }
}
impl From<SessionError> for AuthFailure {
    fn from(e: SessionError) -> Self {
        AuthFailure::Session(e)
    }
}

impl From<RepoError> for AuthFailure {
    fn from(e: RepoError) -> Self {
        AuthFailure::Repo(e)
    }
}

impl AuthFailure {
    fn response(self) -> Response {
        match self {
            AuthFailure::Account(e) => {
                let (status, body) = for_account_error(&e);
                fhir_response(status, body)
            }
            AuthFailure::Login(e) => {
                let (status, body, wait) = for_login_error(&e);
                let mut resp = fhir_response(status, body);
                if let Some(v) = wait.and_then(|w| HeaderValue::from_str(&w.to_string()).ok()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
                resp
            }
            AuthFailure::Session(e) => session_error(&e),
            AuthFailure::Repo(e) => repo_error(e),
            AuthFailure::BadRequest(msg) => bad_request(msg),
        }
    }

    /// The ledger's outcome for this failure.
    fn outcome(&self) -> (Outcome, &'static str) {
        match self {
            AuthFailure::Account(AccountError::BadToken | AccountError::Forbidden)
            | AuthFailure::Login(LoginError::Failed | LoginError::Locked(_)) => {
                (Outcome::Deny, "refused")
            }
            AuthFailure::Account(AccountError::Forged)
            | AuthFailure::Session(SessionError::Forged) => (Outcome::Deny, "forged record"),
            AuthFailure::Session(_) => (Outcome::Deny, "unauthenticated"),
            AuthFailure::Repo(RepoError::Forbidden { .. }) => (Outcome::Deny, "forbidden"),
            AuthFailure::Account(AccountError::Taken) => (Outcome::Deny, "already registered"),
            _ => (Outcome::Error, "error"),
        }
    }
}

fn b64_field(v: &Value, name: &'static str) -> Result<Vec<u8>, AuthFailure> {
    use base64::Engine;
    let text = v
        .get(name)
        .and_then(Value::as_str)
        .ok_or(AuthFailure::BadRequest("a base64url field is missing"))?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| AuthFailure::BadRequest("a field is not unpadded base64url"))
}

/// The optional `key_bundle` of a registration or password change: sealed by the client,
/// opaque here, bounded in size.
fn key_bundle_field(v: &Value) -> Result<Option<Vec<u8>>, AuthFailure> {
    let bundle = match v.get("key_bundle") {
        None | Some(Value::Null) => None,
        Some(_) => Some(b64_field(v, "key_bundle")?),
    };
    if bundle.as_ref().is_some_and(|b| b.len() > 64 * 1024) {
        return Err(AuthFailure::BadRequest("the key bundle is too large"));
    }
    Ok(bundle)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn text_field<'a>(v: &'a Value, name: &'static str) -> Result<&'a str, AuthFailure> {
    v.get(name)
        .and_then(Value::as_str)
        .ok_or(AuthFailure::BadRequest("a text field is missing"))
}

/// Run an authentication step off the async threads and record it in the ledger (allowed or
/// not; never the login name, password material or token). The step returns its answer and
/// the account it concerns.
async fn auth_step(
    state: &AppState,
    audit: Audit,
    action: &'static str,
    body: Bytes,
    f: impl FnOnce(&AppState, &Value) -> Result<(StatusCode, Value, String), AuthFailure>
        + Send
        + 'static,
) -> Response {
    let st = state.clone();
    let run = crate::workers::run(move || {
        let v: Value = serde_json::from_slice(&body)
            .map_err(|_| AuthFailure::BadRequest("expected a JSON object"))?;
        f(&st, &v)
    })
    .await;
    let result = match run {
        Ok(r) => r,
        Err(_) => Err(AuthFailure::Repo(RepoError::Internal("worker failed"))),
    };
    let (event, resp) = match result {
        Ok((status, body, account)) => (
            Event::new(action, "Account", &account, Outcome::Allow),
            (status, Json(body)).into_response(),
        ),
        Err(f) => {
            let (outcome, reason) = f.outcome();
            (
                Event::new(action, "Account", "", outcome).reason(reason),
                f.response(),
            )
        }
    };
    // Logins and registrations are access decisions too: no answer without its entry.
    record_then(state, audit, vec![event], resp).await
}

/// `{token, login, request}` → `{response, binding}`: OPAQUE registration, step 2.
async fn register_start(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    body: Bytes,
) -> Response {
    auth_step(&state, audit, "register", body, |st, v| {
        let repo = &st.repo;
        let keys = repo.keys()?;
        let now = repo.clock().now_ms();
        accounts::check_token(repo.store(), &keys, now, text_field(v, "token")?)?;
        let login = accounts::normalized_login(text_field(v, "login")?)?;
        let setup = opaque::server_setup(repo.store(), &keys, &**repo.rng())?;
        let response = opaque::registration_response(&setup, &login, &b64_field(v, "request")?)?;
        let binding = accounts::registration_binding(&keys, text_field(v, "token")?, &login)?;
        Ok((
            StatusCode::OK,
            json!({ "response": b64(&response), "binding": b64(&binding) }),
            String::new(),
        ))
    })
    .await
}

/// `{token, login, national_id, upload, binding, key_bundle?}` → 201 `{account, role, link}`:
/// OPAQUE registration, step 4; the token is used up with the account it creates. With a
/// reset token, the login name and national id must be the account's own, and the answer
/// is 200 with the account whose password was replaced.
async fn register_finish(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    body: Bytes,
) -> Response {
    auth_step(&state, audit, "register", body, |st, v| {
        let repo = &st.repo;
        let keys = repo.keys()?;
        let now = repo.clock().now_ms();
        let token = text_field(v, "token")?;
        let grant = accounts::check_token(repo.store(), &keys, now, token)?;
        let expected = accounts::registration_binding(&keys, token, text_field(v, "login")?)?;
        if !medvault_crypto::keys::constant_time_eq(&expected, &b64_field(v, "binding")?) {
            return Err(AuthFailure::BadRequest(
                "finish the registration with the token and login name it was started with",
            ));
        }
        let file = opaque::registration_finish(&b64_field(v, "upload")?)?;
        let bundle = key_bundle_field(v)?;
        // A reset token replaces the password of its account instead of creating one.
        let status = if grant.reset.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        let new_patient_account = grant.reset.is_none() && grant.role == accounts::Role::Patient;
        let account = accounts::register(
            repo.store(),
            &keys,
            &**repo.rng(),
            grant,
            text_field(v, "login")?,
            text_field(v, "national_id")?,
            file,
            bundle,
        )?;
        if new_patient_account {
            // The patient is told in their own record that an account can now read it.
            if let Err(e) = account_notice(repo, &account) {
                tracing::error!(error = %e, account = %account.id(), "could not write the new-account notice");
            }
        }
        Ok((
            status,
            json!({
                "account": account.id(),
                "role": account.role().as_str(),
                "link": account.link(),
            }),
            account.id().to_string(),
        ))
    })
    .await
}

/// Write a Communication into a patient's record saying an account now reads it.
fn account_notice(repo: &Repository, account: &accounts::Account) -> Result<(), RepoError> {
    let Some(pid) = account.link().strip_prefix("Patient/") else {
        return Ok(());
    };
    let now = format_instant(repo.clock().now_ms());
    let notice = json!({
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"text": "Account registered for your record"}],
        "subject": {"reference": format!("Patient/{pid}")},
        "recipient": [{"reference": format!("Patient/{pid}")}],
        "sent": now,
        "payload": [{"contentString": format!(
            "A patient account ({}) was registered at {now} to read this record. If it was not you, tell the clinic.",
            account.id()
        )}]
    });
    repo.create(
        &Audit::system("registration"),
        "Communication",
        notice,
        None,
    )?;
    Ok(())
}

/// `{login, request, dpop_jkt}` → `{login_id, response}`: OPAQUE login, step 2. An unknown
/// login name gets an answer indistinguishable from a known one. `dpop_jkt` is the
/// thumbprint of the DPoP key that must sign the finish (and that the token is bound to).
async fn login_start(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    body: Bytes,
) -> Response {
    let address = audit.address.clone();
    auth_step(&state, audit, "login", body, move |st, v| {
        let repo = &st.repo;
        let keys = repo.keys()?;
        let now = repo.clock().now_ms();
        let login = accounts::normalized_login(text_field(v, "login")?)?;
        let account =
            accounts::load_by_login(repo.store(), &keys, &login)?.filter(|a| !a.disabled());
        let file = account.as_ref().and_then(|a| a.password_file());
        let setup = opaque::server_setup(repo.store(), &keys, &**repo.rng())?;
        let (id, response) = st.logins.start(
            &setup,
            &**repo.rng(),
            now,
            &login,
            &address,
            account.as_ref().zip(file).map(|(a, f)| (a.id(), f)),
            &b64_field(v, "request")?,
            text_field(v, "dpop_jkt")?,
        )?;
        Ok((
            StatusCode::OK,
            json!({ "login_id": id, "response": b64(&response) }),
            String::new(),
        ))
    })
    .await
}

/// `{login_id, finalization}` → `{account, role, link, key_bundle}`: OPAQUE login, step 3.
async fn login_finish(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let proof = headers
        .get("dpop")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    auth_step(&state, audit, "login", body, move |st, v| {
        let repo = &st.repo;
        let keys = repo.keys()?;
        let now = repo.clock().now_ms();
        let now_s = u64::try_from(now.div_euclid(1000)).unwrap_or(0);
        // The token will be bound to the key this proof shows; check it before the password.
        let url = format!("{}/auth/opaque/login/finish", st.public_url);
        let jkt = st.sessions.login_proof(proof.as_deref(), &url, now_s)?;
        let done = st.logins.finish(
            now,
            text_field(v, "login_id")?,
            &b64_field(v, "finalization")?,
            jkt.as_str(),
        )?;
        let account = accounts::load(repo.store(), &keys, &done.account)?
            .filter(|a| !a.disabled())
            .ok_or(AuthFailure::Login(LoginError::Failed))?;
        let refresh =
            st.sessions
                .issue_refresh(repo.store(), &keys, &**repo.rng(), &account, &jkt, now)?;
        let token =
            st.sessions
                .issue(&keys, &**repo.rng(), &st.public_url, &account, jkt, now_s)?;
        st.sessions.mark_fresh_login(&token, now_s);
        Ok((
            StatusCode::OK,
            json!({
                "account": account.id(),
                "role": account.role().as_str(),
                "link": account.link(),
                "key_bundle": account.key_bundle().map(b64),
                "access_token": token,
                "token_type": "DPoP",
                "expires_in": crate::session::ACCESS_TOKEN_SECS,
                "refresh_token": refresh,
            }),
            account.id().to_string(),
        ))
    })
    .await
}

fn session_error(e: &SessionError) -> Response {
    let (status, code, www) = match e {
        SessionError::Missing => (StatusCode::UNAUTHORIZED, "login", "DPoP"),
        SessionError::InvalidToken | SessionError::AccountUnusable => (
            StatusCode::UNAUTHORIZED,
            "login",
            "DPoP error=\"invalid_token\"",
        ),
        SessionError::InvalidProof | SessionError::Replayed => (
            StatusCode::UNAUTHORIZED,
            "login",
            "DPoP error=\"invalid_dpop_proof\"",
        ),
        SessionError::NotOwnRefresh => (StatusCode::BAD_REQUEST, "invalid", ""),
        SessionError::Forged => (StatusCode::INTERNAL_SERVER_ERROR, "security", ""),
        SessionError::Store | SessionError::Crypto => {
            (StatusCode::INTERNAL_SERVER_ERROR, "exception", "")
        }
    };
    let mut resp = fhir_response(status, operation_outcome(code, &e.to_string()));
    if let (false, Ok(v)) = (www.is_empty(), HeaderValue::from_str(www)) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// Authenticate a request with its DPoP-bound access token (blocking work inside).
async fn authenticate(
    state: &AppState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<crate::session::Authenticated, Response> {
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let (authz, proof) = (header_text("authorization"), header_text("dpop"));
    let url = format!("{}{path}", state.public_url);
    let (st, method) = (state.clone(), method.to_string());
    let r = crate::workers::run(move || {
        let repo = &st.repo;
        let keys = repo.keys().map_err(|_| SessionError::Store)?;
        let now = u64::try_from(repo.clock().now_ms().div_euclid(1000)).unwrap_or(0);
        st.sessions.authenticate(
            repo.store(),
            &keys,
            &st.public_url,
            authz.as_deref(),
            proof.as_deref(),
            &method,
            &url,
            now,
        )
    })
    .await;
    match r {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(e)) => Err(session_error(&e)),
        Err(_) => Err(repo_error(RepoError::Internal("worker failed"))),
    }
}

/// Who the presented DPoP-bound token belongs to (as the account is now).
async fn whoami(
    State(state): State<AppState>,
    Extension(mut audit): Extension<Audit>,
    method: Method,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    headers: HeaderMap,
) -> Response {
    let result = authenticate(&state, &method, uri.path(), &headers).await;
    // Authentication decisions are access decisions: recorded, allowed or not.
    let (event, resp) = match result {
        Ok(a) => {
            audit.actor = a.account.id().to_string();
            audit.role = a.account.role().as_str().to_string();
            (
                Event::new("authenticate", "Account", a.account.id(), Outcome::Allow),
                Json(json!({
                    "account": a.account.id(),
                    "role": a.account.role().as_str(),
                    "link": a.account.link(),
                    "token_expires": a.claims.exp(),
                }))
                .into_response(),
            )
        }
        Err(r) => (
            Event::new("authenticate", "Account", "", Outcome::Deny).reason(r.status().as_str()),
            r,
        ),
    };
    record_then(&state, audit, vec![event], resp).await
}

// ---------------------------------------------------------------- /ledger

fn entry_json(
    index: u64,
    e: &medvault_ledger::Entry,
    salt: &medvault_ledger::Salt,
    leaf: &medvault_ledger::Hash,
) -> Value {
    json!({
        "index": index,
        "time": format_instant(e.time.saturating_mul(1000)),
        "actor": e.actor.as_str(),
        "role": e.role.as_str(),
        "client": e.client.as_str(),
        "action": e.action.as_str(),
        "resource_type": e.resource_type.as_str(),
        "resource_id": e.resource_id.as_str(),
        "more_resources": e.more.as_slice().iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "patient": e.patient.as_str(),
        "outcome": e.outcome.as_str(),
        "reason": e.reason.as_str(),
        "purpose": e.purpose.as_str(),
        "break_glass": e.break_glass,
        "address": e.address.as_str(),
        "user_agent": e.user_agent.as_str(),
        "salt": salt.to_hex(),
        "leaf": b64_std(leaf.as_bytes()),
    })
}

fn b64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `GET /ledger/entries?from=&count=`: the decrypted entries, for auditors only (always with
/// a token: entries say who read which patient's data). Recorded like any other access.
async fn ledger_entries(
    State(state): State<AppState>,
    Extension(mut audit): Extension<Audit>,
    method: Method,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let account = match authenticate(&state, &method, uri.path(), &headers).await {
        Ok(a) => a.account,
        Err(resp) => {
            let event =
                Event::new("read-ledger", "", "", Outcome::Deny).reason(resp.status().as_str());
            return record_then(&state, audit, vec![event], resp).await;
        }
    };
    audit.actor = account.id().to_string();
    audit.role = account.role().as_str().to_string();
    let pairs = parse_query_string(q.as_deref().unwrap_or(""));
    let from = pairs
        .iter()
        .find(|(k, _)| k == "from")
        .map_or(Ok(0), |(_, v)| v.parse::<u64>());
    let count = pairs
        .iter()
        .find(|(k, _)| k == "count")
        .map_or(Ok(100), |(_, v)| v.parse::<usize>());
    let (Ok(from), Ok(count)) = (from, count) else {
        return bad_request("from and count must be non-negative integers");
    };
    let count = count.clamp(1, 1000);
    let caller = Caller::User(Box::new(account));
    let run = blocking(&state, move |r| {
        r.authorize(&caller, Action::ReadLedger, "AuditEvent", None)?;
        let keys = r.keys()?;
        Ok(r.ledger().entries(&keys, from, count)?)
    })
    .await;
    let (event, resp) = match run {
        Ok(list) => {
            let next = list.last().map(|(i, ..)| i + 1);
            let body = json!({
                "entries": list.iter().map(|(i, e, s, l)| entry_json(*i, e, s, l)).collect::<Vec<_>>(),
                "next": next,
            });
            (
                Event::new("read-ledger", "", "", Outcome::Allow)
                    .reason(&format!("entries {from}..{}", next.unwrap_or(from))),
                Json(body).into_response(),
            )
        }
        Err(r) => (
            Event::new("read-ledger", "", "", Outcome::Deny).reason(r.status().as_str()),
            r,
        ),
    };
    record_then(&state, audit, vec![event], resp).await
}

/// `GET /fhir/AuditEvent?patient=ID`: a patient's own ledger entries as FHIR AuditEvents,
/// each with what is needed to check it: its salt and leaf, and an inclusion proof against
/// the latest signed checkpoint (included in the Bundle), if the checkpoint covers it yet.
async fn own_audit_events(
    state: AppState,
    caller: Caller,
    pairs: Vec<(String, String)>,
) -> Response {
    let mut patient = None;
    for (k, v) in &pairs {
        match k.as_str() {
            "patient" if patient.is_none() => {
                patient = Some(v.strip_prefix("Patient/").unwrap_or(v).to_string())
            }
            "_format" | "_pretty" => {}
            _ => return bad_request("AuditEvent is searched by patient only (one value)"),
        }
    }
    let Some(patient) = patient else {
        return bad_request("AuditEvent is searched by patient only (one value)");
    };
    if matches!(caller, Caller::Anonymous) {
        // Entries name who read what: never served without a token.
        return session_error(&SessionError::Missing);
    }
    let p = patient.clone();
    let run = blocking(&state, move |r| {
        r.authorize(&caller, Action::ReadOwnAudit, "AuditEvent", Some(&p))?;
        let keys = r.keys()?;
        let ledger = r.ledger();
        let entries = ledger.entries_of_patient(&keys, &p, 10_000)?;
        let latest = ledger.latest()?;
        let mut out = Vec::with_capacity(entries.len());
        for (index, e, salt, leaf) in entries {
            let proof = match &latest {
                Some((size, _)) if index < *size => Some(ledger.inclusion(index, *size)?),
                _ => None,
            };
            out.push((index, e, salt, leaf, proof));
        }
        Ok((out, latest))
    })
    .await;
    let (entries, latest) = match run {
        Ok(v) => v,
        Err(r) => return r,
    };
    const EXT: &str = "https://medvault.invalid/fhir/StructureDefinition";
    let resources: Vec<Value> = entries
        .iter()
        .map(|(index, e, salt, leaf, proof)| {
            let code = match e.action.as_str() {
                "create" => "C",
                "read" | "vread" | "search" | "history" => "R",
                "update" | "patch" => "U",
                "delete" => "D",
                _ => "E",
            };
            let outcome = match e.outcome {
                Outcome::Allow => "0",
                Outcome::Deny => "4",
                Outcome::Error => "8",
            };
            let mut ext = vec![
                json!({"url": "index", "valueUnsignedInt": index}),
                json!({"url": "salt", "valueString": salt.to_hex()}),
                json!({"url": "leaf", "valueBase64Binary": b64_std(leaf.as_bytes())}),
                // The canonical encoding the leaf commits to, so the patient can recompute it.
                json!({"url": "entry", "valueBase64Binary": b64_std(&e.encode())}),
            ];
            if let (Some(p), Some((size, _))) = (proof, &latest) {
                ext.push(json!({"url": "checkpointSize", "valueUnsignedInt": size}));
                for h in &p.hashes {
                    ext.push(json!({"url": "proofHash", "valueBase64Binary": b64_std(h.as_bytes())}));
                }
            }
            // The resource, the patient, then the further resources the entry covers.
            let entity: Vec<Value> = [
                format!("{}/{}", e.resource_type.as_str(), e.resource_id.as_str()),
                format!("Patient/{}", e.patient.as_str()),
            ]
            .into_iter()
            .chain(e.more.as_slice().iter().map(|r| r.as_str().to_owned()))
            .map(|reference| json!({"what": {"reference": reference}}))
            .collect();
            json!({
                "fullUrl": format!("{}/AuditEvent/ledger-{index}", state.fhir_base),
                "resource": {
                    "resourceType": "AuditEvent",
                    "id": format!("ledger-{index}"),
                    "extension": [{"url": format!("{EXT}/ledger-inclusion"), "extension": ext}],
                    "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
                    "subtype": [{"code": e.action.as_str()}],
                    "action": code,
                    "recorded": format_instant(e.time.saturating_mul(1000)),
                    "outcome": outcome,
                    "outcomeDesc": e.reason.as_str(),
                    "purposeOfEvent": if e.purpose.as_str().is_empty() { json!([]) } else { json!([{"text": e.purpose.as_str()}]) },
                    "agent": [{
                        "who": {"identifier": {"value": e.actor.as_str()}},
                        "role": [{"text": e.role.as_str()}],
                        "requestor": true,
                        "network": {"address": e.address.as_str(), "type": "2"},
                    }],
                    "source": {"observer": {"display": "medvault"}},
                    "entity": entity,
                },
                "search": {"mode": "match"},
            })
        })
        .collect();
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": resources.len(),
        "entry": resources,
    });
    if let Some((size, note)) = latest {
        bundle["extension"] = json!([{
            "url": format!("{EXT}/ledger-checkpoint"),
            "extension": [
                {"url": "size", "valueUnsignedInt": size},
                {"url": "note", "valueString": note},
            ],
        }]);
    }
    let mut resp = fhir_response(StatusCode::OK, bundle);
    resp.extensions_mut().insert(AuditPatient(vec![patient]));
    resp
}

fn ledger_error(e: LedgerError) -> Response {
    match e {
        LedgerError::BadRequest(msg) => bad_request(msg),
        e => repo_error(RepoError::Ledger(e)),
    }
}

/// Run blocking ledger work off the async threads.
async fn ledger_blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Repository) -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, Response> {
    let repo = state.repo.clone();
    match crate::workers::run(move || f(&repo)).await {
        Ok(r) => r.map_err(ledger_error),
        Err(_) => Err(repo_error(RepoError::Internal("worker failed"))),
    }
}

fn plain_text(body: String) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The latest signed checkpoint (a C2SP signed note).
async fn ledger_checkpoint(State(state): State<AppState>) -> Response {
    match ledger_blocking(&state, |r| r.ledger().latest_checkpoint()).await {
        Ok(Some(note)) => plain_text(note),
        Ok(None) => fhir_response(
            StatusCode::NOT_FOUND,
            operation_outcome("not-found", "no checkpoint has been signed yet"),
        ),
        Err(r) => r,
    }
}

/// The verifier key for checkpoints (`<name>+<key id>+<base64 key>`), for witnesses to pin.
async fn ledger_key(State(state): State<AppState>) -> Response {
    match state.repo.vault().keys() {
        Ok(keys) => plain_text(format!("{}\n", keys.ledger_signer().verifier_key())),
        Err(e) => vault_error(e),
    }
}

fn u64_param(pairs: &[(String, String)], name: &str) -> Result<u64, Response> {
    let mut found = None;
    for (k, v) in pairs {
        if k == name {
            if found.is_some() {
                return Err(bad_request("each proof parameter may appear once"));
            }
            found = Some(
                v.parse::<u64>()
                    .map_err(|_| bad_request("proof parameters must be non-negative integers"))?,
            );
        } else if !matches!(k.as_str(), "index" | "size" | "from" | "to") {
            return Err(bad_request("unsupported proof parameter"));
        }
    }
    found.ok_or_else(|| bad_request("a proof parameter is missing"))
}

fn proof_json(fields: Value, hashes: &[medvault_ledger::Hash]) -> Response {
    let mut body = fields;
    body["hashes"] = hashes
        .iter()
        .map(|h| Value::String(b64_std(h.as_bytes())))
        .collect();
    Json(body).into_response()
}

/// `?index=&size=`: the inclusion proof of one entry's leaf in the tree of `size` entries.
async fn ledger_inclusion(State(state): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let pairs = parse_query_string(q.as_deref().unwrap_or(""));
    let (index, size) = match (u64_param(&pairs, "index"), u64_param(&pairs, "size")) {
        (Ok(i), Ok(s)) => (i, s),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    match ledger_blocking(&state, move |r| r.ledger().inclusion(index, size)).await {
        Ok(p) => proof_json(json!({ "index": index, "size": size }), &p.hashes),
        Err(r) => r,
    }
}

/// `?from=&to=`: the consistency proof between two tree sizes.
async fn ledger_consistency(State(state): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let pairs = parse_query_string(q.as_deref().unwrap_or(""));
    let (from, to) = match (u64_param(&pairs, "from"), u64_param(&pairs, "to")) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    match ledger_blocking(&state, move |r| r.ledger().consistency(from, to)).await {
        Ok(p) => proof_json(json!({ "from": from, "to": to }), &p.hashes),
        Err(r) => r,
    }
}

// ---------------------------------------------------------------- /fhir

async fn metadata(State(state): State<AppState>) -> Response {
    let resources: Vec<Value> = medvault_fhir::SUPPORTED_TYPES
        .iter()
        .map(|t| {
            let mut params: Vec<Value> = medvault_fhir::search_params(t)
                .iter()
                .map(|p| {
                    json!({
                        "name": p.name,
                        "type": match p.kind {
                            medvault_fhir::ParamKind::Token => "token",
                            medvault_fhir::ParamKind::String => "string",
                            medvault_fhir::ParamKind::Date => "date",
                            medvault_fhir::ParamKind::Reference => "reference",
                        },
                        "documentation": p.description,
                    })
                })
                .collect();
            params.push(json!({"name": "_id", "type": "token"}));
            params.push(json!({"name": "_lastUpdated", "type": "date"}));
            let interactions: Vec<Value> = [
                "read",
                "vread",
                "update",
                "patch",
                "delete",
                "history-instance",
                "history-type",
                "create",
                "search-type",
            ]
            .iter()
            .map(|c| json!({ "code": c }))
            .collect();
            json!({
                "type": t,
                "versioning": "versioned",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "interaction": interactions,
                "searchParam": params,
            })
        })
        .collect();
    let body = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": format_instant(state.repo.clock().now_ms()),
        "kind": "instance",
        "software": { "name": "medvault", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "medvault encrypted FHIR R4 server", "url": state.fhir_base },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "application/json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
        }],
    });
    fhir_response(StatusCode::OK, body)
}

async fn bundle(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = json_content_type(&headers, false) {
        return r;
    }
    // Parsed on the thread that runs the Bundle, which then frees the tree where it was
    // allocated (see `bundle::free_here`), and off the async threads (a large Bundle takes
    // milliseconds). Each write is recorded in the transaction's own commit; the bundle as
    // a whole gets a summary entry from `record_fhir`.
    let run = blocking(&state, move |r| {
        let value: Value =
            serde_json::from_slice(&body).map_err(|_| RepoError::BadRequest(NOT_JSON.into()))?;
        let asks = asks_to_write(&value);
        r.bundle(&audit, value, &caller).map(|(b, refused)| {
            let wrote = wrote_something(&b, &asks);
            (b, refused, wrote)
        })
    });
    match run.await {
        Ok((b, refused, wrote)) => {
            // Reads inside the bundle returned these patients' data.
            let patients = audit_patients(&b, None);
            let mut resp = fhir_response(StatusCode::OK, b);
            resp.extensions_mut().insert(patients);
            resp.extensions_mut().insert(RefusedEntries(refused));
            // Its writes are committed: `record_fhir` adds the summary entry.
            if wrote {
                resp.extensions_mut().insert(Committed);
            }
            resp
        }
        Err(r) => r,
    }
}

async fn create(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    Extension(caller): Extension<Caller>,
    Path(rtype): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Search parameters on a create (fhirpy's conditional create, `POST Patient?identifier=..`)
    // are not FHIR R4; ignoring them would silently create a duplicate. Refuse instead.
    let params = parse_query_string(query.as_deref().unwrap_or(""));
    if params
        .iter()
        .any(|(k, _)| !matches!(k.as_str(), "_format" | "_pretty"))
    {
        return bad_request(
            "a create takes no search parameters; a conditional create sends them in If-None-Exist",
        );
    }
    let value = match json_body(&headers, &body, false) {
        Ok(v) => v,
        Err(r) => return r,
    };
    // A header that is present but unreadable must not turn into an unconditional create.
    let if_none_exist = match headers.get("if-none-exist").map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(v.to_string()),
        Some(Err(_)) => return bad_request("If-None-Exist must be a percent-encoded query"),
    };
    let minimal = wants_minimal(&headers);
    match blocking(&state, move |r| {
        let compartment = new_compartment(&rtype, &value);
        r.authorize_resource(
            &caller,
            Action::Create,
            &rtype,
            Some(&compartment),
            None,
            Some(&value),
        )?;
        if let (Caller::User(_), Some(q)) = (&caller, if_none_exist.as_deref()) {
            // The condition is a search; for a signed-in caller it may only look inside the
            // chart being written to, or it would tell what other charts contain.
            if rtype != "Patient" {
                let named = parse_query_string(q.trim_start_matches('?'))
                    .into_iter()
                    .find(|(k, _)| matches!(k.as_str(), "patient" | "subject"))
                    .map(|(_, v)| v.strip_prefix("Patient/").unwrap_or(&v).to_string());
                if named.as_deref() != Some(compartment.as_str()) {
                    return Err(RepoError::BadRequest(
                        "If-None-Exist must name the resource's own patient (patient=...)".into(),
                    ));
                }
            }
            // The condition is a search of that chart: only for callers who may search it
            // (else its 412-or-not answers questions about data they may not read).
            r.authorize(&caller, Action::Search, &rtype, Some(&compartment))?;
        }
        let w = r.create(&audit, &rtype, value, if_none_exist.as_deref())?;
        if !w.created {
            // An existing match is returned instead: that is a read of it. A match the
            // caller may not read answers like any failed condition.
            let patient = patient_of_stored(&w.stored);
            match r.authorize(&caller, Action::Read, &rtype, Some(&patient)) {
                Ok(()) => {}
                Err(RepoError::Forbidden { .. }) => {
                    return Err(RepoError::PreconditionFailed(
                        "the conditional create criteria match a resource you may not read",
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(w)
    })
    .await
    {
        Ok(w) => {
            let status = if w.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let mut resp = resource_response(&state, status, &w.stored, true, minimal);
            if w.created {
                resp.extensions_mut().insert(Recorded);
            } else {
                // An existing match was returned: a read, recorded by `record_fhir`.
                resp.extensions_mut()
                    .insert(AuditPatient(vec![patient_of_stored(&w.stored)]));
            }
            resp
        }
        Err(r) => r,
    }
}

fn read_response(state: &AppState, s: &Stored) -> Response {
    let mut resp = resource_response(state, StatusCode::OK, s, false, false);
    resp.extensions_mut()
        .insert(AuditPatient(vec![patient_of_stored(s)]));
    resp
}

async fn read(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((rtype, id)): Path<(String, String)>,
) -> Response {
    match blocking(&state, move |r| {
        let s = r.read(&rtype, &id)?;
        r.authorize_resource(
            &caller,
            Action::Read,
            &rtype,
            Some(&patient_of_stored(&s)),
            Some(&s.id),
            s.resource.as_ref(),
        )?;
        Ok(s)
    })
    .await
    {
        Ok(s) => read_response(&state, &s),
        Err(r) => r,
    }
}

async fn vread(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((rtype, id, vid)): Path<(String, String, String)>,
) -> Response {
    match blocking(&state, move |r| {
        let s = r.vread(&rtype, &id, &vid)?;
        r.authorize_resource(
            &caller,
            Action::Read,
            &rtype,
            Some(&patient_of_stored(&s)),
            Some(&s.id),
            s.resource.as_ref(),
        )?;
        Ok(s)
    })
    .await
    {
        Ok(s) => read_response(&state, &s),
        Err(r) => r,
    }
}

async fn update(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    Extension(caller): Extension<Caller>,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let value = match json_body(&headers, &body, false) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let expected = match if_match(&headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let minimal = wants_minimal(&headers);
    if rtype == "Patient" && id == crate::access::NEW_PATIENT {
        return bad_request("this Patient id is reserved");
    }
    match blocking(&state, move |r| {
        // Decided on both the version being replaced and the new one, so a resource can
        // neither be changed nor moved into a chart without access to it.
        if matches!(caller, Caller::User(_)) {
            // Nothing current: the PUT creates, and is decided as a create.
            let action = match r.read(&rtype, &id) {
                Ok(current) => {
                    r.authorize_resource(
                        &caller,
                        Action::Update,
                        &rtype,
                        Some(&patient_of_stored(&current)),
                        Some(&id),
                        current.resource.as_ref(),
                    )?;
                    Action::Update
                }
                Err(RepoError::NotFound | RepoError::Gone) => Action::Create,
                Err(e) => return Err(e),
            };
            let patient = existing_compartment(&rtype, &id, &value);
            r.authorize_resource(
                &caller,
                action,
                &rtype,
                Some(&patient),
                Some(&id),
                Some(&value),
            )?;
        }
        r.update(&audit, &rtype, &id, value, expected)
    })
    .await
    {
        Ok(w) => {
            let status = if w.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let mut resp = resource_response(&state, status, &w.stored, w.created, minimal);
            resp.extensions_mut().insert(Recorded);
            resp
        }
        Err(r) => r,
    }
}

async fn patch(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    Extension(caller): Extension<Caller>,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let value = match json_body(&headers, &body, true) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let expected = match if_match(&headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match blocking(&state, move |r| {
        if matches!(caller, Caller::User(_)) {
            let current = r.read(&rtype, &id)?;
            // A patch answers with the merged resource (and its `test` operations compare
            // values): it needs read access as well as update.
            for action in [Action::Read, Action::Update] {
                r.authorize_resource(
                    &caller,
                    action,
                    &rtype,
                    Some(&patient_of_stored(&current)),
                    Some(&id),
                    current.resource.as_ref(),
                )?;
            }
        }
        let check = |doc: &Value| {
            r.authorize_resource(
                &caller,
                Action::Update,
                &rtype,
                Some(&existing_compartment(&rtype, &id, doc)),
                Some(&id),
                Some(doc),
            )
        };
        r.patch(&audit, &rtype, &id, value, expected, &check)
    })
    .await
    {
        Ok(w) => {
            let mut resp = resource_response(&state, StatusCode::OK, &w.stored, false, false);
            resp.extensions_mut().insert(Recorded);
            // The merged resource goes back: it counts as a read (limits).
            resp.extensions_mut()
                .insert(AuditPatient(vec![patient_of_stored(&w.stored)]));
            resp
        }
        Err(r) => r,
    }
}

async fn delete(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    Extension(caller): Extension<Caller>,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let expected = match if_match(&headers) {
        Ok(v) => v,
        Err(r) => return r,
    };
    match blocking(&state, move |r| {
        if matches!(caller, Caller::User(_)) {
            match r.read(&rtype, &id) {
                Ok(current) => r.authorize(
                    &caller,
                    Action::Delete,
                    &rtype,
                    Some(&patient_of_stored(&current)),
                )?,
                Err(RepoError::NotFound | RepoError::Gone) => {
                    r.authorize(&caller, Action::Delete, &rtype, None)?
                }
                Err(e) => return Err(e),
            }
        }
        r.delete(&audit, &rtype, &id, expected)
    })
    .await
    {
        Ok(Some(version)) => {
            let mut resp = StatusCode::NO_CONTENT.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("W/\"{version}\"")) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            resp.extensions_mut().insert(Recorded);
            resp
        }
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

async fn search(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(rtype): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let pairs = parse_query_string(query.as_deref().unwrap_or(""));
    if rtype == "AuditEvent" {
        return own_audit_events(state, caller, pairs).await;
    }
    run_search(state, caller, rtype, pairs).await
}

async fn search_post(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(rtype): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut pairs = parse_query_string(query.as_deref().unwrap_or(""));
    let Ok(form) = std::str::from_utf8(&body) else {
        return bad_request("the search form is not UTF-8");
    };
    pairs.extend(parse_query_string(form));
    run_search(state, caller, rtype, pairs).await
}

async fn run_search(
    state: AppState,
    caller: Caller,
    rtype: String,
    pairs: Vec<(String, String)>,
) -> Response {
    let base = format!("{}/{}", state.fhir_base, rtype);
    let p = pairs.clone();
    // A search within one patient's compartment is recorded against that patient.
    // (A Patient search by one `_id` is within that patient's compartment too.)
    let patient = pairs
        .iter()
        .find(|(k, v)| {
            matches!(k.as_str(), "patient" | "subject")
                || (rtype == "Patient" && k == "_id" && !v.contains(','))
        })
        .map(|(_, v)| v.strip_prefix("Patient/").unwrap_or(v).to_string());
    let named = patient.clone();
    match blocking(&state, move |r| {
        let reason = r.decision(&caller, Action::Search, &rtype, named.as_deref())?;
        // Also when a patient is named: a filtered page's paging links would still count
        // what is hidden.
        refuse_if_filtered(reason, "search-within-one-patient")?;
        let page = r.search(&rtype, &p)?;
        filter_page(r, &caller, page)
    })
    .await
    {
        Ok((page, filtered)) => {
            page_response(&state, "searchset", &base, &pairs, page, filtered, patient)
        }
        Err(r) => r,
    }
}

async fn type_history(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(rtype): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let base = format!("{}/{}/_history", state.fhir_base, rtype);
    history(state, caller, rtype, None, base, query).await
}

async fn instance_history(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((rtype, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let base = format!("{}/{}/{}/_history", state.fhir_base, rtype, id);
    history(state, caller, rtype, Some(id), base, query).await
}

async fn history(
    state: AppState,
    caller: Caller,
    rtype: String,
    id: Option<String>,
    base: String,
    query: Option<String>,
) -> Response {
    let pairs = parse_query_string(query.as_deref().unwrap_or(""));
    let mut count = crate::repo::DEFAULT_COUNT;
    let mut offset = 0;
    for (k, v) in &pairs {
        let parsed = v.parse::<usize>();
        match (k.as_str(), parsed) {
            ("_count", Ok(n)) => count = n,
            ("_offset", Ok(n)) => offset = n,
            ("_count" | "_offset", Err(_)) => {
                return bad_request("_count and _offset must be non-negative integers")
            }
            ("_format" | "_pretty", _) => {}
            _ => return bad_request("unsupported history parameter"),
        }
    }
    match blocking(&state, move |r| {
        match id.as_deref() {
            None => refuse_if_filtered(
                r.decision(&caller, Action::History, &rtype, None)?,
                "history-within-one-patient",
            )?,
            // An instance's history is decided on its own patient, like a read (a deleted
            // resource on the last version that had content).
            Some(id) if matches!(caller, Caller::User(_)) => {
                let versions = r.history(&rtype, Some(id), 0, crate::repo::MAX_COUNT)?;
                let Some(last) = versions.entries.iter().find(|s| s.resource.is_some()) else {
                    return Err(RepoError::NotFound);
                };
                r.authorize_resource(
                    &caller,
                    Action::History,
                    &rtype,
                    Some(&patient_of_stored(last)),
                    Some(id),
                    last.resource.as_ref(),
                )?;
            }
            Some(_) => {}
        }
        let page = r.history(&rtype, id.as_deref(), offset, count)?;
        filter_page(r, &caller, page)
    })
    .await
    {
        Ok((page, filtered)) => {
            page_response(&state, "history", &base, &pairs, page, filtered, None)
        }
        Err(r) => r,
    }
}

/// A clinician's type-wide search or history would have to be filtered, and its paging would
/// still tell how much is hidden: refuse it (the caller names a patient instead).
fn refuse_if_filtered(
    reason: Option<medvault_policy::Reason>,
    code: &'static str,
) -> Result<(), RepoError> {
    if reason == Some(medvault_policy::Reason::SearchFiltered) {
        return Err(RepoError::Forbidden {
            reason: code,
            break_glass_available: false,
            patient: None,
        });
    }
    Ok(())
}

/// A search or history page as a Bundle answer, naming for the ledger every patient whose
/// data it carries (and `named`, the patient a search asked for).
#[allow(clippy::too_many_arguments)]
fn page_response(
    state: &AppState,
    kind: &str,
    base: &str,
    pairs: &[(String, String)],
    page: Page,
    filtered: bool,
    named: Option<String>,
) -> Response {
    let mut body = page_bundle(state, kind, base, pairs, page);
    if filtered {
        hide_total(&mut body);
    }
    let patients = audit_patients(&body, named);
    let mut resp = fhir_response(StatusCode::OK, body);
    resp.extensions_mut().insert(patients);
    resp
}

/// The compartment a new resource will belong to. A new Patient is its own compartment but
/// has no id yet; "new-patient" stands for it (a valid id no stored patient has, since the
/// server assigns uuids).
fn new_compartment(rtype: &str, value: &Value) -> String {
    if rtype == "Patient" {
        return crate::access::NEW_PATIENT.to_string();
    }
    patient_of_resource(value)
}

/// The compartment of a resource written at a known id (update, patch).
fn existing_compartment(rtype: &str, id: &str, value: &Value) -> String {
    if rtype == "Patient" {
        return id.to_string();
    }
    patient_of_resource(value)
}

/// For a signed-in caller, keep only the entries the policy lets them read (decided once
/// per resource type and patient). Returns whether anything could have been dropped, in
/// which case the total is not shown (it would count what the caller may not see).
fn filter_page(r: &Repository, caller: &Caller, mut page: Page) -> Result<(Page, bool), RepoError> {
    if matches!(caller, Caller::Anonymous) {
        return Ok((page, false));
    }
    // Decisions are per type and patient, except for lab technicians, whose reads depend
    // on each order.
    let per_resource =
        matches!(caller, Caller::User(a) if a.role() == accounts::Role::LabTechnician);
    let mut decided: std::collections::HashMap<(String, String, String), bool> =
        std::collections::HashMap::new();
    let before = page.entries.len();
    let mut keep = Vec::with_capacity(before);
    for s in std::mem::take(&mut page.entries) {
        let id = if per_resource {
            s.id.clone()
        } else {
            String::new()
        };
        let key = (s.rtype.clone(), patient_of_stored(&s), id);
        let allowed = match decided.get(&key) {
            Some(a) => *a,
            None => {
                let id = per_resource.then_some(s.id.as_str());
                let res = per_resource.then_some(s.resource.as_ref()).flatten();
                let a =
                    match r.authorize_resource(caller, Action::Read, &key.0, Some(&key.1), id, res)
                    {
                        Ok(()) => true,
                        Err(RepoError::Forbidden { .. }) => false,
                        Err(e) => return Err(e),
                    };
                decided.insert(key, a);
                a
            }
        };
        if allowed {
            keep.push(s);
        }
    }
    let dropped = keep.len() != before;
    page.entries = keep;
    Ok((page, dropped))
}

fn hide_total(body: &mut Value) {
    if let Some(o) = body.as_object_mut() {
        o.remove("total");
    }
}

fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'|'
            | b':'
            | b','
            | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn page_url(base: &str, pairs: &[(String, String)], offset: usize, count: usize) -> String {
    let mut parts: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k != "_offset" && k != "_count")
        .map(|(k, v)| format!("{}={}", encode_component(k), encode_component(v)))
        .collect();
    parts.push(format!("_count={count}"));
    parts.push(format!("_offset={offset}"));
    format!("{base}?{}", parts.join("&"))
}

/// A searchset or history Bundle with absolute self/next/previous links. The page's
/// resources move into it (a copy of each would be most of a search's allocations).
fn page_bundle(
    state: &AppState,
    kind: &str,
    base: &str,
    pairs: &[(String, String)],
    page: Page,
) -> Value {
    let mut links =
        vec![json!({"relation": "self", "url": page_url(base, pairs, page.offset, page.count)})];
    let next = page.offset.saturating_add(page.count);
    if page.count > 0 && (next as u64) < page.total {
        links.push(json!({"relation": "next", "url": page_url(base, pairs, next, page.count)}));
    }
    if page.offset > 0 {
        links.push(json!({"relation": "previous", "url": page_url(base, pairs, page.offset.saturating_sub(page.count), page.count)}));
    }
    let entries: Vec<Value> = page
        .entries
        .into_iter()
        .map(|s| {
            let full_url = format!("{}/{}/{}", state.fhir_base, s.rtype, s.id);
            if kind == "searchset" {
                crate::bundle::search_match(full_url, s.resource)
            } else {
                let method = match (s.resource.is_some(), s.version) {
                    (false, _) => "DELETE",
                    (true, 1) => "POST",
                    _ => "PUT",
                };
                let url = if method == "POST" {
                    s.rtype
                } else {
                    format!("{}/{}", s.rtype, s.id)
                };
                let status = match method {
                    "DELETE" => "204 No Content",
                    "POST" => "201 Created",
                    _ => "200 OK",
                };
                let mut e = json!({
                    "fullUrl": full_url,
                    "request": {"method": method, "url": url},
                    "response": {
                        "status": status,
                        "etag": format!("W/\"{}\"", s.version),
                        "lastModified": format_instant(s.updated_ms),
                    },
                });
                if let Some(r) = s.resource {
                    e["resource"] = r;
                }
                e
            }
        })
        .collect();
    json!({
        "resourceType": "Bundle",
        "type": kind,
        "total": page.total,
        "link": links,
        "entry": entries,
    })
}
