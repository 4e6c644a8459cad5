//! `POST /auth/opaque/password/{start,finish}`: a signed-in user changes their password by
//! registering again with OPAQUE for their own login name. The new password file (and the
//! key bundle, re-sealed by the client under the new export key) replace the old ones, and
//! every refresh token of the account is revoked (other devices log in again). Only a
//! session that proved the current password in the last five minutes may do it (a stolen
//! access token alone must not become a stolen account).

use axum::body::Bytes;
use axum::extract::{Extension, OriginalUri, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::admin::account_step;
use super::{b64, b64_field, key_bundle_field, text_field, AppState, AuthFailure};
use crate::accounts::{self, AccountError};
use crate::ledger::Audit;
use crate::login as opaque;
use medvault_crypto::keys::constant_time_eq;

/// Refuse unless the presented access token comes from a password login within
/// `FRESH_LOGIN_SECS` (the token itself is verified by `account_step` before this runs).
fn require_fresh_login(st: &AppState, jti: Option<&str>) -> Result<(), AuthFailure> {
    let now = u64::try_from(st.repo.clock().now_ms().div_euclid(1000)).unwrap_or(0);
    if jti.is_some_and(|j| st.sessions.is_fresh_login(j, now)) {
        Ok(())
    } else {
        Err(AuthFailure::Account(AccountError::Invalid(
            "session for this: log in with the current password first (within 5 minutes)",
        )))
    }
}

fn presented_jti(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("DPoP "))
        .and_then(|t| crate::session::unverified_jti(t.trim()))
}

/// The normalized login name, if it is the signed-in account's own.
fn own_login(
    keys: &crate::vault::Keys,
    account: &accounts::Account,
    v: &Value,
) -> Result<String, AuthFailure> {
    let login = accounts::normalized_login(text_field(v, "login")?)?;
    if !constant_time_eq(&accounts::login_token(keys, &login)?, account.login_token()) {
        return Err(AuthFailure::Account(AccountError::Invalid(
            "login name: it is not this account's",
        )));
    }
    Ok(login)
}

/// `{login, request}` → `{response}`.
pub(super) async fn start(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let jti = presented_jti(&headers);
    account_step(
        state,
        audit,
        method,
        uri,
        headers,
        body,
        "change-password",
        move |st, account, v| {
            require_fresh_login(st, jti.as_deref())?;
            let keys = st.repo.keys()?;
            let login = own_login(&keys, account, v)?;
            let setup = opaque::server_setup(st.repo.store(), &keys, &**st.repo.rng())?;
            let response =
                opaque::registration_response(&setup, &login, &b64_field(v, "request")?)?;
            Ok((
                StatusCode::OK,
                json!({ "response": b64(&response) }),
                account.id().to_string(),
            ))
        },
    )
    .await
}

/// `{login, upload, key_bundle?}` → `{account, refresh_tokens_revoked}`.
pub(super) async fn finish(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let jti = presented_jti(&headers);
    account_step(
        state,
        audit,
        method,
        uri,
        headers,
        body,
        "change-password",
        move |st, account, v| {
            require_fresh_login(st, jti.as_deref())?;
            let keys = st.repo.keys()?;
            own_login(&keys, account, v)?;
            let file = opaque::registration_finish(&b64_field(v, "upload")?)?;
            let bundle = key_bundle_field(v)?;
            let store = st.repo.store();
            let updated = accounts::update(store, &keys, account, |r| {
                r.password_file = Some(file);
                r.key_bundle = bundle;
            })?;
            let revoked = store
                .revoke_refresh_account(updated.id())
                .map_err(AccountError::from)?;
            Ok((
                StatusCode::OK,
                json!({ "account": updated.id(), "refresh_tokens_revoked": revoked }),
                updated.id().to_string(),
            ))
        },
    )
    .await
}
