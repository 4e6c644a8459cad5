//! `POST /auth/token` (OAuth 2.0 token endpoint: `grant_type=refresh_token` renews a
//! DPoP-bound session; `grant_type=client_credentials` with a `private_key_jwt` assertion
//! authenticates a machine client) and `POST /auth/logout`. Token-endpoint errors use the RFC 6749 §5.2
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
        Some("client_credentials") => {
            let fields = ClientFields {
                assertion_type: field("client_assertion_type"),
                assertion: field("client_assertion"),
                client_id: field("client_id"),
                scope: field("scope"),
            };
            return client_credentials(state, audit, fields, proof).await;
        }
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "supported: refresh_token, client_credentials",
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
    let r = crate::workers::run(move || {
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

/// The form fields of a client-credentials request.
struct ClientFields {
    assertion_type: Option<String>,
    assertion: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
}

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Why a client-credentials request failed (RFC 6749 §5.2, RFC 9449 §7).
enum ClientFailure {
    Request(&'static str),
    Client(&'static str),
    Proof(&'static str),
    Server,
}

impl ClientFailure {
    fn response(&self) -> Response {
        match self {
            ClientFailure::Request(d) => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", d),
            ClientFailure::Client(d) => oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", d),
            ClientFailure::Proof(d) => {
                oauth_error(StatusCode::BAD_REQUEST, "invalid_dpop_proof", d)
            }
            ClientFailure::Server => oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "the request could not be completed",
            ),
        }
    }
}

/// `grant_type=client_credentials` with a `private_key_jwt` assertion (SMART Backend
/// Services): a token bound to the DPoP key of the proof sent along, or a bearer token for a
/// client registered with `danger_bearer`. No refresh token: the client asserts again.
async fn client_credentials(
    state: AppState,
    mut audit: Audit,
    f: ClientFields,
    proof: Option<String>,
) -> Response {
    use medvault_crypto::jose::{
        unverified_client_id, validate_client_assertion, AssertionExpectation,
    };
    let st = state.clone();
    let run = crate::workers::run(move || -> Result<(crate::clients::Client, String, bool, Option<String>), ClientFailure> {
        if f.assertion_type.as_deref() != Some(JWT_BEARER) {
            return Err(ClientFailure::Request(
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer (once)",
            ));
        }
        let assertion = f
            .assertion
            .ok_or(ClientFailure::Request("client_assertion is required (once)"))?;
        let repo = &st.repo;
        let keys = repo.keys().map_err(|_| ClientFailure::Server)?;
        let now_ms = repo.clock().now_ms();
        let now = u64::try_from(now_ms.div_euclid(1000)).unwrap_or(0);
        let url = format!("{}/auth/token", st.public_url);
        let unknown = ClientFailure::Client("unknown or disabled client, or the assertion is invalid");
        let client_id = unverified_client_id(&assertion).map_err(|_| ClientFailure::Client("the client assertion is malformed"))?;
        if f.client_id.as_deref().is_some_and(|c| c != client_id) {
            return Err(ClientFailure::Client("client_id does not match the assertion"));
        }
        let client = match crate::clients::load(repo.store(), &keys, &client_id) {
            Ok(Some(c)) if !c.disabled() => c,
            Ok(_) => return Err(unknown),
            Err(_) => return Err(ClientFailure::Server),
        };
        let expect = AssertionExpectation::new(&client_id, &url, now).map_err(|_| ClientFailure::Server)?;
        let a = validate_client_assertion(&assertion, client.jwk(), &expect).map_err(|_| unknown)?;
        if !st.sessions.first_assertion(client.id(), a.jti(), a.exp(), now) {
            return Err(ClientFailure::Client("the client assertion was already used"));
        }
        let jkt = match proof.as_deref() {
            Some(p) => Some(st.sessions.token_proof(p, &url, now).map_err(|_| {
                ClientFailure::Proof("the DPoP proof is invalid for this request")
            })?),
            None if client.bearer() => None,
            None => return Err(ClientFailure::Proof("this client must send a DPoP proof")),
        };
        let bound = jkt.is_some();
        let token = st
            .sessions
            .issue_for_client(&keys, &**repo.rng(), &st.public_url, &client, jkt, now)
            .map_err(|_| ClientFailure::Server)?;
        Ok((client, token, bound, f.scope))
    })
    .await
    .unwrap_or(Err(ClientFailure::Server));
    let (event, resp) = match run {
        Ok((client, token, bound, scope)) => {
            audit.actor = client.id().to_string();
            audit.role = client.role().as_str().to_string();
            audit.client = client.id().to_string();
            let mut resp = Json(json!({
                "access_token": token,
                "token_type": if bound { "DPoP" } else { "Bearer" },
                "expires_in": ACCESS_TOKEN_SECS,
                // Scopes are not a grant here: every request is decided by the policy for
                // the client's role. The requested scope is echoed for SMART clients.
                "scope": scope.unwrap_or_else(|| "system/*.*".to_string()),
            }))
            .into_response();
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            (
                Event::new("token", "Client", client.id(), Outcome::Allow),
                resp,
            )
        }
        Err(e) => {
            let (outcome, reason) = match &e {
                ClientFailure::Server => (Outcome::Error, "server error"),
                ClientFailure::Request(_) => (Outcome::Error, "invalid request"),
                ClientFailure::Client(_) => (Outcome::Deny, "invalid client"),
                ClientFailure::Proof(_) => (Outcome::Deny, "invalid proof"),
            };
            (
                Event::new("token", "Client", "", outcome).reason(reason),
                e.response(),
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
    let r = crate::workers::run(move || {
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

/// `GET /.well-known/smart-configuration`: how clients authenticate here (SMART App Launch
/// 2.x discovery, as far as this server implements it: backend services and refresh).
pub(super) async fn smart_configuration(State(state): State<AppState>) -> Response {
    let algs = ["ES256", "ES384", "RS384", "EdDSA"];
    Json(json!({
        "issuer": state.public_url,
        "token_endpoint": format!("{}/auth/token", state.public_url),
        "grant_types_supported": ["client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": algs,
        "dpop_signing_alg_values_supported": algs,
        "scopes_supported": ["system/*.*"],
        "capabilities": ["client-confidential-asymmetric"],
    }))
    .into_response()
}
