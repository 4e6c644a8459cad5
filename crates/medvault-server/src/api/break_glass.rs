//! `POST /fhir/Patient/{id}/$break-glass`: emergency access to a chart outside care, with a
//! stated reason, for a limited time; the patient gets a notice in their record.

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::{
    blocking, fhir_response, json_body, repo_error, AppState, AuditPatient, AuditPurpose,
    AuditReason,
};
use crate::access::Caller;
use crate::clock::format_instant;
use crate::ledger::Audit;
use crate::repo::RepoError;

/// The `reason` of a FHIR Parameters body: `{"resourceType": "Parameters", "parameter":
/// [{"name": "reason", "valueString": "..."}]}`.
fn reason_of(body: &Value) -> Result<String, RepoError> {
    if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(RepoError::BadRequest(
            "the body must be a Parameters resource with a 'reason' valueString".into(),
        ));
    }
    body.get("parameter")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p.get("name").and_then(Value::as_str) == Some("reason"))
        .and_then(|p| p.get("valueString"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            RepoError::BadRequest("a reason (a valueString named 'reason') is required".into())
        })
}

pub(super) async fn break_glass(
    State(state): State<AppState>,
    Extension(audit): Extension<Audit>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let value = match json_body(&headers, &body, false) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let reason = match reason_of(&value) {
        Ok(r) => r,
        Err(e) => return repo_error(e),
    };
    let patient = id.clone();
    let stated = reason.clone();
    match blocking(&state, move |r| {
        r.break_glass(&caller, &audit, &id, &reason)
    })
    .await
    {
        Ok(opened) => {
            let body = json!({
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "expires", "valueInstant": format_instant(opened.expires_ms)},
                    {"name": "notice", "valueReference": {
                        "reference": format!("Communication/{}", opened.notice.id)
                    }}
                ]
            });
            let mut resp = fhir_response(StatusCode::OK, body);
            resp.extensions_mut().insert(AuditPatient(vec![patient]));
            resp.extensions_mut().insert(AuditReason(
                medvault_policy::Reason::BreakGlassInvoked.as_str(),
            ));
            // The stated reason goes into the (encrypted) ledger entry as its purpose.
            resp.extensions_mut().insert(AuditPurpose(stated));
            resp
        }
        Err(r) => r,
    }
}
