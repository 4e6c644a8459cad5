//! `POST /auth/token` (OAuth 2.0 token endpoint: `grant_type=refresh_token` renews a
//! DPoP-bound session) and `POST /auth/logout`. Token-endpoint errors use the RFC 6749 §5.2
//! JSON shape OAuth clients expect, not an OperationOutcome.

use axum::body::Bytes;
use axum::extract::{Extension, OriginalUri, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{authenticate, record_then, session_error, AppState};
use crate::ledger::{Audit, Event};
use crate::repo::parse_query_string;
use crate::session::{SessionError, ACCESS_TOKEN_SECS};
use medvault_ledger::Outcome;

/// Marks a response whose error body is already in its protocol's own shape.
#[derive(Clone, Copy, Debug)]
pub(super) struct OwnErrorShape;

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut resp = (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.extensions_mut().insert(OwnErrorShape);
    resp
}

fn session_oauth_error(e: &SessionError) -> Response {
    match e {
        SessionError::Missing | SessionError::InvalidProof | SessionError::Replayed => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_dpop_proof",
            &e.to_string(),
        ),
        SessionError::InvalidToken
        | SessionError::AccountUnusable
        | SessionError::NotOwnRefresh => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the refresh token is invalid, expired, revoked or already used",
        ),
        SessionError::Forged | SessionError::Store | SessionError::Crypto => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "the request could not be completed",
        ),
    }
}

/// `POST /auth/token`, form-encoded. `grant_type=refresh_token&refresh_token=...` with a
/// `DPoP` proof by the key the session is bound to → a new access token and the next
/// refresh token (the presented one is used up).
pub(super) async fn token(
    State(state): State<AppState>,
    Extension(mut audit): Extension<Audit>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let Some(text) = std::str::from_utf8(&body).ok().filter(|_| form_type) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        );
    };
    let form = parse_query_string(text);
    let field = |name: &str| {
        let mut found = form.iter().filter(|(k, _)| k == name);
        match (found.next(), found.next()) {
            (Some((_, v)), None) => Some(v.clone()),
            _ => None,
        }
    };
    let proof = headers
        .get("dpop")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    match field("grant_type").as_deref() {
        Some("refresh_token") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "supported: refresh_token",
            )
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required (once)",
            )
        }
    }
    let Some(refresh) = field("refresh_token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh_token is required (once)",
        );
    };
    let st = state.clone();
    let r = tokio::task::spawn_blocking(move || {
        let repo = &st.repo;
        let keys = repo.keys().map_err(|_| SessionError::Store)?;
        let url = format!("{}/auth/token", st.public_url);
        st.sessions.refresh(
            repo.store(),
            &keys,
            &**repo.rng(),
            &st.public_url,
            &refresh,
            proof.as_deref(),
            &url,
            repo.clock().now_ms(),
        )
    })
    .await
    .unwrap_or(Err(SessionError::Crypto));
    let (event, resp) = match r {
        Ok(done) => {
            audit.actor = done.account.id().to_string();
            audit.role = done.account.role().as_str().to_string();
            let mut resp = Json(json!({
                "access_token": done.access_token,
                "token_type": "DPoP",
                "expires_in": ACCESS_TOKEN_SECS,
                "refresh_token": done.refresh_token,
            }))
            .into_response();
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            (
                Event::new("refresh", "Account", done.account.id(), Outcome::Allow),
                resp,
            )
        }
        Err(e) => {
            let outcome = match e {
                SessionError::Store | SessionError::Crypto => Outcome::Error,
                _ => Outcome::Deny,
            };
            (
                Event::new("refresh", "Account", "", outcome).reason(&e.to_string()),
                session_oauth_error(&e),
            )
        }
    };
    record_then(&state, audit, vec![event], resp).await
}

/// `POST /auth/logout` `{refresh_token?, everywhere?}` with the session's token and proof:
/// the access token stops working now; the refresh token's family (or, with `everywhere`,
/// every session of the account) is revoked.
pub(super) async fn logout(
    State(state): State<AppState>,
    Extension(mut audit): Extension<Audit>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let who = match authenticate(&state, &method, uri.path(), &headers).await {
        Ok(a) => a,
        Err(resp) => {
            let event =
                Event::new("logout", "Account", "", Outcome::Deny).reason(resp.status().as_str());
            return record_then(&state, audit, vec![event], resp).await;
        }
    };
    audit.actor = who.account.id().to_string();
    audit.role = who.account.role().as_str().to_string();
    let v: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return super::bad_request("expected a JSON object"),
        }
    };
    let refresh = v
        .get("refresh_token")
        .and_then(Value::as_str)
        .map(String::from);
    let everywhere = v
        .get("everywhere")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let st = state.clone();
    let id = who.account.id().to_string();
    let r = tokio::task::spawn_blocking(move || {
        let keys = st.repo.keys().map_err(|_| SessionError::Store)?;
        st.sessions
            .logout(st.repo.store(), &keys, &who, refresh.as_deref(), everywhere)
    })
    .await
    .unwrap_or(Err(SessionError::Crypto));
    let (event, resp) = match r {
        Ok(n) => (
            Event::new("logout", "Account", &id, Outcome::Allow),
            Json(json!({ "logged_out": true, "refresh_tokens_revoked": n })).into_response(),
        ),
        Err(e) => (
            Event::new("logout", "Account", &id, Outcome::Deny).reason(&e.to_string()),
            session_error(&e),
        ),
    };
    record_then(&state, audit, vec![event], resp).await
}
