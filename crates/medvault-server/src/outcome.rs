//! OperationOutcome bodies and the mapping from errors to HTTP status codes. Client-facing
//! texts are generic; details go to the log, never PHI.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::repo::{issues_json, RepoError};
use crate::vault::VaultError;

/// An OperationOutcome with one error issue.
pub fn operation_outcome(code: &str, diagnostics: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "error", "code": code, "diagnostics": diagnostics }],
    })
}

/// Status and OperationOutcome for a repository error.
/// Storage an operator must fix: what the client is told (nothing was written).
fn unavailable(why: Option<medvault_store::Unavailable>) -> (StatusCode, Value) {
    use medvault_store::Unavailable as U;
    let (status, text) = match why {
        Some(U::Full) => (
            StatusCode::INSUFFICIENT_STORAGE,
            "the server's storage is full; nothing was written",
        ),
        Some(U::Busy) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is busy (held by another process); nothing was written, retry later",
        ),
        Some(U::ReadOnly) | None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the server's data directory cannot be written; nothing was written",
        ),
    };
    (status, operation_outcome("transient", text))
}

pub fn for_repo_error(err: &RepoError) -> (StatusCode, Value) {
    let simple =
        |status: StatusCode, code: &str| (status, operation_outcome(code, &err.to_string()));
    match err {
        RepoError::Sealed => simple(StatusCode::SERVICE_UNAVAILABLE, "transient"),
        RepoError::NotFound => simple(StatusCode::NOT_FOUND, "not-found"),
        RepoError::Gone => simple(StatusCode::GONE, "deleted"),
        RepoError::Invalid(issues) => (
            StatusCode::BAD_REQUEST,
            json!({ "resourceType": "OperationOutcome", "issue": issues_json(issues) }),
        ),
        RepoError::BadRequest(_) => simple(StatusCode::BAD_REQUEST, "invalid"),
        RepoError::Search(_) => simple(StatusCode::BAD_REQUEST, "not-supported"),
        RepoError::UnsupportedType => simple(StatusCode::NOT_FOUND, "not-supported"),
        RepoError::PreconditionFailed(_) => simple(StatusCode::PRECONDITION_FAILED, "conflict"),
        RepoError::Conflict => simple(StatusCode::CONFLICT, "conflict"),
        RepoError::Integrity => simple(StatusCode::INTERNAL_SERVER_ERROR, "security"),
        RepoError::Store(e) | RepoError::Ledger(crate::ledger::LedgerError::Store(e))
            if e.unavailable().is_some() =>
        {
            tracing::error!(error = %e, "storage unavailable");
            unavailable(e.unavailable())
        }
        RepoError::Store(e) => {
            tracing::error!(error = %e, "storage failure");
            simple(StatusCode::INTERNAL_SERVER_ERROR, "exception")
        }
        RepoError::Crypto(e) => {
            tracing::error!(error = %e, "cryptographic failure");
            simple(StatusCode::INTERNAL_SERVER_ERROR, "exception")
        }
        RepoError::Forbidden {
            break_glass_available,
            ..
        } => {
            let mut text = err.to_string();
            if *break_glass_available {
                text.push_str(
                    "; break-glass is available: POST Patient/{id}/$break-glass with a reason",
                );
            }
            (StatusCode::FORBIDDEN, operation_outcome("forbidden", &text))
        }
        RepoError::Ledger(e) => {
            tracing::error!(error = %e, "audit ledger failure");
            simple(StatusCode::INTERNAL_SERVER_ERROR, "exception")
        }
        RepoError::Internal(what) => {
            tracing::error!(what, "internal error");
            simple(StatusCode::INTERNAL_SERVER_ERROR, "exception")
        }
    }
}

/// Status and OperationOutcome for a seal-lifecycle error.
pub fn for_vault_error(err: &VaultError) -> (StatusCode, Value) {
    let (status, code) = match err {
        VaultError::Sealed => (StatusCode::SERVICE_UNAVAILABLE, "transient"),
        VaultError::NotInitialized => (StatusCode::SERVICE_UNAVAILABLE, "transient"),
        VaultError::MalformedShare(_)
        | VaultError::WrongShareSet
        | VaultError::ShareRejected
        | VaultError::BadParameters(_) => (StatusCode::BAD_REQUEST, "invalid"),
        VaultError::DuplicateShare
        | VaultError::AlreadyUnsealed
        | VaultError::AlreadyInitialized => (StatusCode::CONFLICT, "duplicate"),
        VaultError::Conflict => (StatusCode::CONFLICT, "conflict"),
        VaultError::KeyCheckFailed | VaultError::KeyringDamaged => {
            tracing::error!(error = %err, "vault integrity failure");
            (StatusCode::INTERNAL_SERVER_ERROR, "security")
        }
        VaultError::Store(e) => {
            tracing::error!(error = %e, "storage failure");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                operation_outcome("exception", "storage failure"),
            );
        }
        VaultError::Crypto(e) => {
            tracing::error!(error = %e, "cryptographic failure");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                operation_outcome("exception", "cryptographic failure"),
            );
        }
    };
    (status, operation_outcome(code, &err.to_string()))
}

/// Status and OperationOutcome for an account error.
pub fn for_account_error(err: &crate::accounts::AccountError) -> (StatusCode, Value) {
    use crate::accounts::AccountError as E;
    let (status, code) = match err {
        E::BadToken | E::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
        E::Taken => (StatusCode::CONFLICT, "duplicate"),
        E::NotFound => (StatusCode::NOT_FOUND, "not-found"),
        E::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
        E::Forged => (StatusCode::INTERNAL_SERVER_ERROR, "security"),
        E::Store(e) => {
            tracing::error!(error = %e, "storage failure");
            (StatusCode::INTERNAL_SERVER_ERROR, "exception")
        }
        E::Crypto => (StatusCode::INTERNAL_SERVER_ERROR, "exception"),
    };
    (status, operation_outcome(code, &err.to_string()))
}

/// Status and OperationOutcome for a login error (and the seconds to wait, for 429).
pub fn for_login_error(err: &crate::login::LoginError) -> (StatusCode, Value, Option<u64>) {
    use crate::login::LoginError as E;
    let (status, code, wait) = match err {
        E::Malformed(_) => (StatusCode::BAD_REQUEST, "invalid", None),
        E::Failed => (StatusCode::UNAUTHORIZED, "login", None),
        E::Locked(s) => (StatusCode::TOO_MANY_REQUESTS, "throttled", Some(*s)),
        E::Store(e) => {
            tracing::error!(error = %e, "storage failure");
            (StatusCode::INTERNAL_SERVER_ERROR, "exception", None)
        }
        E::Crypto => (StatusCode::INTERNAL_SERVER_ERROR, "exception", None),
    };
    (status, operation_outcome(code, &err.to_string()), wait)
}
