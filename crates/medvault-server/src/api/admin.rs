//! `/admin/*`: account administration over HTTP. Admins issue and revoke registration
//! tokens, list accounts, change roles and links, disable accounts and issue password-reset
//! tokens; receptionists issue patient tokens bound to an existing Patient. Every call is
//! authenticated with a DPoP-bound token and recorded in the ledger.

use axum::body::Bytes;
use axum::extract::{Extension, OriginalUri, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{authenticate, record_then, text_field, AppState, AuthFailure};
use crate::access::Caller;
use crate::accounts::{self, Account, AccountChange, AccountError, Role};
use crate::clock::format_instant;
use crate::ledger::{Audit, Event};
use crate::repo::RepoError;
use medvault_ledger::Outcome;
use medvault_policy::Action;

/// Registration tokens live a week unless asked otherwise.
const DEFAULT_TOKEN_SECS: i64 = 7 * 24 * 3600;

fn account_json(a: &Account) -> Value {
    json!({
        "account": a.id(),
        "role": a.role().as_str(),
        "link": a.link(),
        "disabled": a.disabled(),
        "has_key_bundle": a.key_bundle().is_some(),
    })
}

/// Only what the policy allows to manage accounts (admins).
fn require_admin(st: &AppState, account: &Account) -> Result<(), AuthFailure> {
    st.repo
        .authorize(
            &Caller::User(Box::new(account.clone())),
            Action::ManageAccounts,
            "Account",
            None,
        )
        .map_err(AuthFailure::Repo)
}

fn ttl_ms(v: &Value) -> Result<i64, AuthFailure> {
    match v.get("ttl_seconds") {
        None => Ok(DEFAULT_TOKEN_SECS * 1000),
        Some(t) => t
            .as_i64()
            .and_then(|s| s.checked_mul(1000))
            .ok_or(AuthFailure::BadRequest("ttl_seconds must be an integer")),
    }
}

/// The ledger entry of an allowed administrative change: what was granted (role, link,
/// disabled) as its reason, and a patient link as its patient, so a token or account for a
/// patient's record shows in that patient's own log. Never the token.
fn change_event(action: &str, target: &str, body: &Value) -> Event {
    let mut detail = Vec::new();
    for key in ["role", "link", "disabled", "danger_bearer"] {
        if let Some(v) = body.get(key) {
            detail.push(format!(
                "{key}={}",
                v.as_str().map_or_else(|| v.to_string(), str::to_string)
            ));
        }
    }
    let mut e = Event::new(action, "Account", target, Outcome::Allow).reason(&detail.join(" "));
    if let Some(p) = body
        .get("link")
        .and_then(Value::as_str)
        .and_then(|l| l.strip_prefix("Patient/"))
    {
        e = e.patient(p);
    }
    e
}

/// Authenticate, run `f` off the async threads as the caller, record the outcome (never a
/// token) and answer.
#[allow(clippy::too_many_arguments)]
pub(super) async fn account_step(
    state: AppState,
    mut audit: Audit,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
    action: &'static str,
    f: impl FnOnce(&AppState, &Account, &Value) -> Result<(StatusCode, Value, String), AuthFailure>
        + Send
        + 'static,
) -> Response {
    let account = match authenticate(&state, &method, uri.path(), &headers).await {
        Ok(a) => {
            audit.client = a.client().unwrap_or_default().to_string();
            a.account
        }
        Err(resp) => {
            let event =
                Event::new(action, "Account", "", Outcome::Deny).reason(resp.status().as_str());
            return record_then(&state, audit, vec![event], resp).await;
        }
    };
    audit.actor = account.id().to_string();
    audit.role = account.role().as_str().to_string();
    let st = state.clone();
    let run = crate::workers::run(move || {
        let v: Value = if body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(&body)
                .map_err(|_| AuthFailure::BadRequest("expected a JSON object"))?
        };
        f(&st, &account, &v)
    })
    .await;
    let result = run.unwrap_or(Err(AuthFailure::Repo(RepoError::Internal("worker failed"))));
    let (event, resp) = match result {
        Ok((status, body, target)) => (
            change_event(action, &target, &body),
            (status, Json(body)).into_response(),
        ),
        Err(f) => {
            let (outcome, reason) = f.outcome();
            let reason = match &f {
                AuthFailure::Repo(RepoError::Forbidden { reason, .. }) => reason,
                _ => reason,
            };
            (
                Event::new(action, "Account", "", outcome).reason(reason),
                f.response(),
            )
        }
    };
    record_then(&state, audit, vec![event], resp).await
}

/// `GET /admin/accounts` → `{accounts: [...]}` (ids, roles, links, flags; login names and
/// national ids are stored only as blind-index tokens and cannot be listed).
pub(super) async fn list_accounts(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    account_step(
        state,
        audit,
        method,
        uri,
        headers,
        Bytes::new(),
        "list-accounts",
        |st, caller, _| {
            require_admin(st, caller)?;
            let keys = st.repo.keys()?;
            let all = accounts::list(st.repo.store(), &keys)?;
            Ok((
                StatusCode::OK,
                json!({ "accounts": all.iter().map(account_json).collect::<Vec<_>>() }),
                String::new(),
            ))
        },
    )
    .await
}

/// `PATCH /admin/accounts/{id}` `{role?, link?, disabled?}` → the account as it now is.
pub(super) async fn update_account(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    account_step(
        state,
        audit,
        method,
        uri,
        headers,
        body,
        "update-account",
        move |st, caller, v| {
            require_admin(st, caller)?;
            let role = match v.get("role") {
                None => None,
                Some(r) => Some(
                    r.as_str()
                        .and_then(Role::from_code)
                        .ok_or(AuthFailure::BadRequest("unknown role"))?,
                ),
            };
            let link = match v.get("link") {
                None => None,
                Some(l) => Some(
                    l.as_str()
                        .ok_or(AuthFailure::BadRequest("link must be text"))?
                        .to_string(),
                ),
            };
            let disabled = match v.get("disabled") {
                None => None,
                Some(d) => Some(
                    d.as_bool()
                        .ok_or(AuthFailure::BadRequest("disabled must be true or false"))?,
                ),
            };
            if role.is_none() && link.is_none() && disabled.is_none() {
                return Err(AuthFailure::BadRequest(
                    "nothing to change: give role, link or disabled",
                ));
            }
            let keys = st.repo.keys()?;
            let change = AccountChange {
                role,
                link,
                disabled,
            };
            let updated = accounts::admin_update(st.repo.store(), &keys, caller, &id, change)?;
            Ok((
                StatusCode::OK,
                account_json(&updated),
                updated.id().to_string(),
            ))
        },
    )
    .await
}

/// `POST /admin/accounts/{id}/reset-token` `{ttl_seconds?}` → `{token, expires}`: a
/// one-time token with which the account's owner sets a new password (register with it,
/// giving their own login name and national id).
pub(super) async fn reset_token(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    account_step(state, audit, method, uri, headers, body, "issue-reset-token", move |st, caller, v| {
        require_admin(st, caller)?;
        let keys = st.repo.keys()?;
        let target = accounts::load(st.repo.store(), &keys, &id)?.ok_or(AccountError::NotFound)?;
        if target.id() == caller.id() {
            return Err(AccountError::Invalid("account: admins cannot reset their own password here").into());
        }
        let now = st.repo.clock().now_ms();
        let ttl = ttl_ms(v)?;
        let token = accounts::issue_reset_token(
            st.repo.store(),
            &keys,
            &**st.repo.rng(),
            now,
            caller,
            &target,
            ttl,
        )?;
        Ok((
            StatusCode::CREATED,
            json!({ "token": token, "account": target.id(), "expires": format_instant(now + ttl) }),
            target.id().to_string(),
        ))
    })
    .await
}

/// `POST /admin/tokens` `{role, link, ttl_seconds?}` → `{token, role, link, expires}`.
/// Admins issue any role; receptionists issue patient tokens. A patient token must name an
/// existing Patient.
pub(super) async fn issue_token(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    account_step(
        state,
        audit,
        method,
        uri,
        headers,
        body,
        "issue-token",
        |st, caller, v| {
            let role = Role::from_code(text_field(v, "role")?)
                .ok_or(AuthFailure::BadRequest("unknown role"))?;
            let link = v
                .get("link")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            // Reception registers patients; everything else is account administration.
            if !(caller.role() == Role::Receptionist && role == Role::Patient) {
                require_admin(st, caller)?;
            }
            if let Some(pid) = link.strip_prefix("Patient/") {
                match st.repo.read("Patient", pid) {
                    Ok(_) => {}
                    Err(RepoError::NotFound | RepoError::Gone) => {
                        return Err(AuthFailure::BadRequest("the linked Patient does not exist"))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let keys = st.repo.keys()?;
            let now = st.repo.clock().now_ms();
            let ttl = ttl_ms(v)?;
            let token = accounts::issue_token(
                st.repo.store(),
                &keys,
                &**st.repo.rng(),
                now,
                caller,
                role,
                &link,
                ttl,
            )?;
            Ok((
                StatusCode::CREATED,
                json!({
                    "token": token,
                    "role": role.as_str(),
                    "link": link,
                    "expires": format_instant(now + ttl),
                }),
                String::new(),
            ))
        },
    )
    .await
}

/// `POST /admin/tokens/revoke` `{token}` → `{revoked: true}`.
pub(super) async fn revoke_token(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    account_step(
        state,
        audit,
        method,
        uri,
        headers,
        body,
        "revoke-token",
        |st, caller, v| {
            let keys = st.repo.keys()?;
            accounts::revoke_token(st.repo.store(), &keys, caller, text_field(v, "token")?)?;
            Ok((StatusCode::OK, json!({ "revoked": true }), String::new()))
        },
    )
    .await
}

fn client_json(c: &crate::clients::Client) -> Value {
    json!({
        "client_id": c.id(),
        "name": c.name(),
        "role": c.role().as_str(),
        "link": c.link(),
        "danger_bearer": c.bearer(),
        "disabled": c.disabled(),
        "jkt": c.jwk().thumbprint().as_str(),
    })
}

/// `POST /admin/clients` `{name, role, link?, jwk, danger_bearer?}` → 201 the client: a
/// machine client (SMART Backend Services) that authenticates with a `private_key_jwt`
/// assertion signed by `jwk`'s private key.
pub(super) async fn add_client(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    account_step(state, audit, method, uri, headers, body, "add-client", |st, caller, v| {
        require_admin(st, caller)?;
        let role = Role::from_code(text_field(v, "role")?)
            .ok_or(AuthFailure::BadRequest("unknown role"))?;
        let jwk = match v.get("jwk") {
            Some(Value::Object(_)) => v["jwk"].to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => return Err(AuthFailure::BadRequest("jwk (the client's public key) is required")),
        };
        let danger_bearer = match v.get("danger_bearer") {
            None => false,
            Some(b) => b
                .as_bool()
                .ok_or(AuthFailure::BadRequest("danger_bearer must be true or false"))?,
        };
        let keys = st.repo.keys()?;
        let new = crate::clients::NewClient {
            name: text_field(v, "name")?,
            role,
            link: v.get("link").and_then(Value::as_str).unwrap_or(""),
            jwk: &jwk,
            danger_bearer,
        };
        let client =
            crate::clients::register(st.repo.store(), &keys, &**st.repo.rng(), caller, &new)?;
        if danger_bearer {
            tracing::warn!(client = %client.id(), "client registered for plain bearer tokens (danger_bearer)");
        }
        Ok((StatusCode::CREATED, client_json(&client), client.id().to_string()))
    })
    .await
}

/// `GET /admin/clients` → `{clients: [...]}`.
pub(super) async fn list_clients(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    account_step(
        state,
        audit,
        method,
        uri,
        headers,
        Bytes::new(),
        "list-clients",
        |st, caller, _| {
            require_admin(st, caller)?;
            let keys = st.repo.keys()?;
            let all = crate::clients::list(st.repo.store(), &keys)?;
            Ok((
                StatusCode::OK,
                json!({ "clients": all.iter().map(client_json).collect::<Vec<_>>() }),
                String::new(),
            ))
        },
    )
    .await
}

/// `PATCH /admin/clients/{id}` `{disabled}` → the client as it now is.
pub(super) async fn update_client(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    account_step(
        state,
        audit,
        method,
        uri,
        headers,
        body,
        "update-client",
        move |st, caller, v| {
            require_admin(st, caller)?;
            let disabled = v
                .get("disabled")
                .and_then(Value::as_bool)
                .ok_or(AuthFailure::BadRequest("give disabled: true or false"))?;
            let keys = st.repo.keys()?;
            let c = crate::clients::set_disabled(st.repo.store(), &keys, caller, &id, disabled)?;
            Ok((StatusCode::OK, client_json(&c), c.id().to_string()))
        },
    )
    .await
}
