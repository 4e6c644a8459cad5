//! Account administration over HTTP: registration tokens issued and revoked by admins (and
//! patient tokens by reception), role changes and disabling that apply on the next request,
//! password resets by token, and who is refused.

use axum::http::StatusCode;
use medvault_store::Store;
use serde_json::json;

use crate::access::{entries_since, world, User, World};
use crate::identity::{http_login_with, http_register, DpopKey};
use crate::support::Harness;

const PASSWORD: &str = "correct horse battery staple";

async fn issue(h: &Harness, who: &User, body: serde_json::Value) -> crate::support::Resp {
    who.call(h, "POST", "/admin/tokens", Some(body)).await
}

async fn account_id(w: &World, who: &User) -> String {
    let r = who.call(&w.h, "GET", "/auth/whoami", None).await;
    r.json["account"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_issue_tokens_for_any_role_and_reception_only_for_existing_patients() {
    let w = world().await;
    let h = &w.h;
    let r = issue(
        h,
        &w.admin,
        json!({"role": "nurse", "link": "Practitioner/n1", "ttl_seconds": 3600}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["expires"], "2026-11-23T11:00:00.000Z");
    let token = r.json["token"].as_str().unwrap().to_string();
    let r = http_register(h, &token, "nina", "NID-nina", PASSWORD).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["role"], "nurse");
    // One-time.
    let r = http_register(h, &token, "nina2", "NID-nina2", PASSWORD).await;
    r.assert_outcome(StatusCode::FORBIDDEN);

    // Reception: patient tokens bound to an existing Patient, nothing else.
    let r = issue(
        h,
        &w.reception,
        json!({"role": "patient", "link": format!("Patient/{}", w.other_pid)}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let r = issue(
        h,
        &w.reception,
        json!({"role": "patient", "link": "Patient/nobody"}),
    )
    .await;
    r.assert_outcome(StatusCode::BAD_REQUEST);
    let r = issue(
        h,
        &w.reception,
        json!({"role": "physician", "link": "Practitioner/p9"}),
    )
    .await;
    r.assert_outcome(StatusCode::FORBIDDEN);
    // Clinicians and patients issue nothing; bad input is refused precisely.
    for who in [&w.gp, &w.patient] {
        issue(
            h,
            who,
            json!({"role": "patient", "link": format!("Patient/{}", w.pid)}),
        )
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    }
    for body in [
        json!({"role": "surgeon", "link": "Practitioner/x"}),
        json!({"role": "nurse", "link": "Patient/x"}),
        json!({"role": "nurse", "link": "Practitioner/x", "ttl_seconds": 1}),
        json!({"link": "Practitioner/x"}),
    ] {
        issue(h, &w.admin, body)
            .await
            .assert_outcome(StatusCode::BAD_REQUEST);
    }
    // Without a token: 401.
    h.call("POST", "/admin/tokens", Some(json!({"role": "admin"})))
        .await
        .assert_outcome(StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_registers_nobody() {
    let w = world().await;
    let h = &w.h;
    let r = issue(h, &w.admin, json!({"role": "auditor"})).await;
    let token = r.json["token"].as_str().unwrap().to_string();
    let before = h.data.store.ledger_size().unwrap();
    // Only the issuing side may revoke.
    let r =
        w.gp.call(
            h,
            "POST",
            "/admin/tokens/revoke",
            Some(json!({"token": token})),
        )
        .await;
    r.assert_outcome(StatusCode::FORBIDDEN);
    let r = w
        .admin
        .call(
            h,
            "POST",
            "/admin/tokens/revoke",
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    http_register(h, &token, "audrey", "NID-audrey", PASSWORD)
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    // Revoking twice says the token is no longer open.
    w.admin
        .call(
            h,
            "POST",
            "/admin/tokens/revoke",
            Some(json!({"token": token})),
        )
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    // Each attempt is in the ledger (never the token itself).
    let got: Vec<(String, bool, String)> = entries_since(h, before)
        .into_iter()
        .filter(|e| e.0 == "revoke-token")
        .map(|e| (e.0, e.3, e.4))
        .collect();
    assert_eq!(
        got,
        vec![
            ("revoke-token".into(), false, "refused".into()),
            ("revoke-token".into(), true, String::new()),
            ("revoke-token".into(), false, "refused".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_changes_and_disabling_apply_on_the_next_request() {
    let w = world().await;
    let h = &w.h;
    let gp = account_id(&w, &w.gp).await;
    let obs = format!("/fhir/Observation/{}", w.obs);
    assert_eq!(w.gp.call(h, "GET", &obs, None).await.status, StatusCode::OK);

    // Only admins list and change accounts.
    let r = w.admin.call(h, "GET", "/admin/accounts", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["accounts"].as_array().unwrap().len(), 5);
    for who in [&w.gp, &w.reception, &w.patient] {
        who.call(h, "GET", "/admin/accounts", None)
            .await
            .assert_outcome(StatusCode::FORBIDDEN);
        who.call(
            h,
            "PATCH",
            &format!("/admin/accounts/{gp}"),
            Some(json!({"disabled": true})),
        )
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    }

    // Disabled: the same, still unexpired token stops working at once.
    let path = format!("/admin/accounts/{gp}");
    let r = w
        .admin
        .call(h, "PATCH", &path, Some(json!({"disabled": true})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["disabled"], true);
    w.gp.call(h, "GET", &obs, None)
        .await
        .assert_outcome(StatusCode::UNAUTHORIZED);
    let r = http_login_with(h, "gp", PASSWORD, &DpopKey::new()).await;
    r.assert_outcome(StatusCode::UNAUTHORIZED);
    let r = w
        .admin
        .call(h, "PATCH", &path, Some(json!({"disabled": false})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(w.gp.call(h, "GET", &obs, None).await.status, StatusCode::OK);

    // A receptionist now: clinical data is refused on the next request.
    let r = w
        .admin
        .call(h, "PATCH", &path, Some(json!({"role": "receptionist"})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    w.gp.call(h, "GET", &obs, None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    let r = w.gp.call(h, "GET", "/auth/whoami", None).await;
    assert_eq!(r.json["role"], "receptionist");

    // Bad changes change nothing: an unknown role, a link that does not fit the role,
    // an unknown account, an empty change, and an admin changing their own account.
    let admin = account_id(&w, &w.admin).await;
    for (p, body, status) in [
        (
            path.clone(),
            json!({"role": "king"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            path.clone(),
            json!({"role": "patient"}),
            StatusCode::BAD_REQUEST,
        ),
        (path.clone(), json!({}), StatusCode::BAD_REQUEST),
        (
            "/admin/accounts/nobody".to_string(),
            json!({"disabled": true}),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/admin/accounts/{admin}"),
            json!({"disabled": true}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        w.admin
            .call(h, "PATCH", &p, Some(body))
            .await
            .assert_outcome(status);
    }
    let r = w.gp.call(h, "GET", "/auth/whoami", None).await;
    assert_eq!(r.json["role"], "receptionist");
    assert_eq!(r.json["link"], "Practitioner/dr-gp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_token_sets_a_new_password_for_its_own_account_only() {
    let w = world().await;
    let h = &w.h;
    let gp = account_id(&w, &w.gp).await;
    w.gp.call(
        h,
        "POST",
        &format!("/admin/accounts/{gp}/reset-token"),
        None,
    )
    .await
    .assert_outcome(StatusCode::FORBIDDEN);
    let new_reset_token = || async {
        let r = w
            .admin
            .call(
                h,
                "POST",
                &format!("/admin/accounts/{gp}/reset-token"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
        r.json["token"].as_str().unwrap().to_string()
    };
    let token = new_reset_token().await;
    // Someone else's login or national id: refused, and the token is spent (one try, not
    // one guess at the national id after another); the right answers come too late.
    for (login, nid) in [("stranger", "NID-gp"), ("gp", "NID-someone")] {
        let token = new_reset_token().await;
        http_register(h, &token, login, nid, "new password one")
            .await
            .assert_outcome(StatusCode::FORBIDDEN);
        http_register(h, &token, "gp", "NID-gp", "new password one")
            .await
            .assert_outcome(StatusCode::FORBIDDEN);
    }
    let r = http_register(h, &token, "gp", "NID-gp", "new password one").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["account"], gp.as_str(), "{}", r.json);
    assert_eq!(r.json["role"], "physician");
    // The old password no longer works; the new one does, for the same account.
    http_login_with(h, "gp", PASSWORD, &DpopKey::new())
        .await
        .assert_outcome(StatusCode::UNAUTHORIZED);
    let key = DpopKey::new();
    let r = http_login_with(h, "gp", "new password one", &key).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["account"], gp.as_str());
    // Used once.
    http_register(h, &token, "gp", "NID-gp", "new password two")
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
}
