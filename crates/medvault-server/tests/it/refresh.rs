//! Sessions after login: rotating refresh tokens bound to the DPoP key (reuse revokes the
//! session), their 12-hour limit, and logout ending the access token and the session.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

use crate::access::{world, User};
use crate::identity::{b64, http_login_with, DpopKey};
use crate::support::{Harness, Resp, BASE};

const PASSWORD: &str = "correct horse battery staple";

fn jti() -> String {
    let mut b = [0u8; 12];
    medvault_crypto::Random::fill(&medvault_crypto::SystemRandom::new(), &mut b).unwrap();
    b64(&b)
}

fn now_s(h: &Harness) -> i64 {
    use medvault_server::clock::Clock;
    h.clock.now_ms() / 1000
}

/// `POST /auth/token` with a refresh token and a proof by `key` for `url` (or none).
async fn refresh_with(h: &Harness, key: Option<&DpopKey>, url: &str, token: &str) -> Resp {
    let mut req = Request::builder()
        .method("POST")
        .uri("/auth/token")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(k) = key {
        req = req.header("dpop", k.proof("POST", url, now_s(h), &jti(), None));
    }
    let body = format!("grant_type=refresh_token&refresh_token={token}");
    h.raw(req.body(Body::from(body)).unwrap()).await
}

async fn refresh(h: &Harness, key: &DpopKey, token: &str) -> Resp {
    refresh_with(h, Some(key), &format!("{BASE}/auth/token"), token).await
}

/// Log in as `name`; the user, its refresh token.
async fn login(h: &Harness, name: &str) -> (User, String) {
    let key = DpopKey::new();
    let r = http_login_with(h, name, PASSWORD, &key).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let refresh = r.json["refresh_token"].as_str().unwrap().to_string();
    (
        User {
            token: r.json["access_token"].as_str().unwrap().to_string(),
            key,
        },
        refresh,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_renews_once_by_its_key_and_reuse_ends_the_session() {
    let w = world().await;
    let h = &w.h;
    let (gp, first) = login(h, "gp").await;
    // The access token expires after five minutes (and a little leeway for clock skew).
    h.clock.advance(400_000);
    gp.call(h, "GET", "/auth/whoami", None)
        .await
        .assert_outcome(StatusCode::UNAUTHORIZED);

    // Not by another key, not without a proof, not with a proof for another URL.
    let other = DpopKey::new();
    for r in [
        refresh(h, &other, &first).await,
        refresh_with(h, None, "", &first).await,
        refresh_with(h, Some(&gp.key), &format!("{BASE}/auth/whoami"), &first).await,
    ] {
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.json["error"], "invalid_dpop_proof", "{}", r.json);
    }
    // By its key: a new access token that works, and the next refresh token.
    let r = refresh(h, &gp.key, &first).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["token_type"], "DPoP");
    assert_eq!(r.headers.get("cache-control").unwrap(), "no-store");
    let second = r.json["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(second, first);
    let renewed = User {
        token: r.json["access_token"].as_str().unwrap().to_string(),
        key: gp.key,
    };
    let r = renewed.call(h, "GET", "/auth/whoami", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);

    // The used token presented again: refused, and the whole session with it.
    let r = refresh(h, &renewed.key, &first).await;
    assert_eq!(r.json["error"], "invalid_grant", "{}", r.json);
    let r = refresh(h, &renewed.key, &second).await;
    assert_eq!(r.json["error"], "invalid_grant", "{}", r.json);

    // Malformed requests get precise OAuth errors.
    let bad = |body: &'static str, ct: &'static str| {
        Request::builder()
            .method("POST")
            .uri("/auth/token")
            .header("content-type", ct)
            .body(Body::from(body))
            .unwrap()
    };
    for (req, error) in [
        (
            bad("grant_type=password", "application/x-www-form-urlencoded"),
            "unsupported_grant_type",
        ),
        (
            bad("refresh_token=x", "application/x-www-form-urlencoded"),
            "invalid_request",
        ),
        (
            bad(
                "grant_type=refresh_token",
                "application/x-www-form-urlencoded",
            ),
            "invalid_request",
        ),
        (
            bad("{\"grant_type\":\"refresh_token\"}", "application/json"),
            "invalid_request",
        ),
        (
            bad(
                "grant_type=refresh_token&grant_type=refresh_token&refresh_token=x",
                "application/x-www-form-urlencoded",
            ),
            "invalid_request",
        ),
    ] {
        let r = h.raw(req).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.json["error"], error, "{}", r.json);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_lasts_twelve_hours_and_ends_with_the_account() {
    let w = world().await;
    let h = &w.h;
    let (gp, mut token) = login(h, "gp").await;
    // Renewing every five minutes keeps the session for twelve hours, not longer.
    for _ in 0..143 {
        h.clock.advance(300_000);
        let r = refresh(h, &gp.key, &token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        token = r.json["refresh_token"].as_str().unwrap().to_string();
    }
    h.clock.advance(300_000);
    let r = refresh(h, &gp.key, &token).await;
    assert_eq!(r.json["error"], "invalid_grant", "{}", r.json);

    // Disabling an account ends its sessions.
    let (nurse_like, t) = login(h, "stranger").await;
    let id = nurse_like.call(h, "GET", "/auth/whoami", None).await.json["account"]
        .as_str()
        .unwrap()
        .to_string();
    let (admin, _) = login(h, "admin").await;
    let r = admin
        .call(
            h,
            "PATCH",
            &format!("/admin/accounts/{id}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let r = admin
        .call(
            h,
            "PATCH",
            &format!("/admin/accounts/{id}"),
            Some(json!({"disabled": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    // Re-enabled, but the session it had is gone.
    let r = refresh(h, &nurse_like.key, &t).await;
    assert_eq!(r.json["error"], "invalid_grant", "{}", r.json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_access_token_and_the_session() {
    let w = world().await;
    let h = &w.h;
    let (a, a_refresh) = login(h, "gp").await;
    let (b, b_refresh) = login(h, "gp").await;
    let (c, c_refresh) = login(h, "gp").await;
    // Someone else's refresh token cannot be logged out by this session.
    let (other, other_refresh) = login(h, "stranger").await;
    a.call(
        h,
        "POST",
        "/auth/logout",
        Some(json!({"refresh_token": other_refresh})),
    )
    .await
    .assert_outcome(StatusCode::BAD_REQUEST);
    let r = a
        .call(
            h,
            "POST",
            "/auth/logout",
            Some(json!({"refresh_token": a_refresh})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["refresh_tokens_revoked"], 1);
    a.call(h, "GET", "/auth/whoami", None)
        .await
        .assert_outcome(StatusCode::UNAUTHORIZED);
    assert_eq!(
        refresh(h, &a.key, &a_refresh).await.json["error"],
        "invalid_grant"
    );
    // The other sessions of the account go on until logged out everywhere.
    assert_eq!(
        b.call(h, "GET", "/auth/whoami", None).await.status,
        StatusCode::OK
    );
    let r = b
        .call(h, "POST", "/auth/logout", Some(json!({"everywhere": true})))
        .await;
    // b's, c's and the world's own login of gp.
    assert_eq!(r.json["refresh_tokens_revoked"], 3, "{}", r.json);
    for (u, t) in [(&b, &b_refresh), (&c, &c_refresh)] {
        assert_eq!(refresh(h, &u.key, t).await.json["error"], "invalid_grant");
    }
    // The other account is untouched.
    assert_eq!(
        refresh(h, &other.key, &other_refresh).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_password_re_registers_and_ends_every_session() {
    use medvault_server::login::Suite;
    use opaque_ke::{ClientRegistration, ClientRegistrationFinishParameters, RegistrationResponse};
    let w = world().await;
    let h = &w.h;
    let (a, _) = login(h, "gp").await;
    let (b, b_refresh) = login(h, "gp").await;
    let new_password = "a much better passphrase";
    let start =
        ClientRegistration::<Suite>::start(&mut crate::identity::rng(), new_password.as_bytes())
            .unwrap();
    let request = b64(&start.message.serialize());
    // Not for someone else's login name, and not without a session.
    a.call(
        h,
        "POST",
        "/auth/opaque/password/start",
        Some(json!({"login": "stranger", "request": request})),
    )
    .await
    .assert_outcome(StatusCode::BAD_REQUEST);
    h.call(
        "POST",
        "/auth/opaque/password/start",
        Some(json!({"login": "gp", "request": request})),
    )
    .await
    .assert_outcome(StatusCode::UNAUTHORIZED);
    let r = a
        .call(
            h,
            "POST",
            "/auth/opaque/password/start",
            Some(json!({"login": "GP ", "request": request})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let finish = start
        .state
        .finish(
            &mut crate::identity::rng(),
            new_password.as_bytes(),
            RegistrationResponse::deserialize(&crate::identity::unb64(&r.json["response"]))
                .unwrap(),
            ClientRegistrationFinishParameters::default(),
        )
        .unwrap();
    let r = a
        .call(
            h,
            "POST",
            "/auth/opaque/password/finish",
            Some(json!({"login": "gp", "upload": b64(&finish.message.serialize()), "key_bundle": b64(b"resealed")})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    // The world's login and a's and b's.
    assert_eq!(r.json["refresh_tokens_revoked"], 3, "{}", r.json);
    assert_eq!(
        refresh(h, &b.key, &b_refresh).await.json["error"],
        "invalid_grant"
    );
    http_login_with(h, "gp", PASSWORD, &DpopKey::new())
        .await
        .assert_outcome(StatusCode::UNAUTHORIZED);
    let r = http_login_with(h, "gp", new_password, &DpopKey::new()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["key_bundle"], b64(b"resealed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_needs_a_fresh_password_login() {
    let w = world().await;
    let h = &w.h;
    let (gp, refresh_token) = login(h, "gp").await;
    let body = json!({"login": "gp", "request": b64(b"not even opaque")});
    // Six minutes later, with a token renewed by the refresh token: refused, it proves
    // possession of a session, not of the password.
    h.clock.advance(360_000);
    let r = refresh(h, &gp.key, &refresh_token).await;
    let renewed = User {
        token: r.json["access_token"].as_str().unwrap().to_string(),
        key: gp.key,
    };
    let r = renewed
        .call(h, "POST", "/auth/opaque/password/start", Some(body.clone()))
        .await;
    r.assert_outcome(StatusCode::BAD_REQUEST);
    assert!(r.json["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("log in with the current password first"));
    // Right after a password login it goes on to the OPAQUE step (here: a malformed
    // request, so a 400 of another kind).
    let (fresh, _) = login(h, "gp").await;
    let r = fresh
        .call(h, "POST", "/auth/opaque/password/start", Some(body))
        .await;
    assert!(
        !r.json
            .to_string()
            .contains("log in with the current password first"),
        "{}",
        r.json
    );
}

/// A refresh-token row is MAC'd: one edited in the database (a later expiry, another
/// account) or planted under a token text of the attacker's choosing renews nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_row_edited_or_planted_in_the_database_renews_nothing() {
    let w = world().await;
    let h = &w.h;
    let keys = h.repo.vault().keys().unwrap();
    let account_id = |login: &str| {
        medvault_server::accounts::load_by_login(&*h.data.store, &keys, login)
            .unwrap()
            .unwrap()
            .id()
            .to_string()
    };
    let (gp_id, admin_id) = (account_id("gp"), account_id("admin"));
    let raw = rusqlite::Connection::open(h.db_path()).unwrap();
    let edit = |sql: &str, account: &str| {
        let n = raw
            .execute(
                &format!("UPDATE refresh_token SET {sql} WHERE account = ? AND state = 'open'"),
                [account],
            )
            .unwrap();
        assert_eq!(n, 1, "{sql}");
    };
    // Refused as a forgery (a row that merely is not valid any more is `invalid_grant`).
    let refused = |r: Resp| {
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.json);
        assert_eq!(r.json["error"], "server_error", "{}", r.json);
        assert!(r.json.get("access_token").is_none(), "{}", r.json);
    };

    // An untouched session renews (so the refusals below are the tampering's).
    let (gp, token) = login(h, "gp").await;
    assert_eq!(refresh(h, &gp.key, &token).await.status, StatusCode::OK);
    raw.execute("DELETE FROM refresh_token", []).unwrap();

    // A year more.
    let (gp, token) = login(h, "gp").await;
    edit("expires_ms = expires_ms + 31536000000", &gp_id);
    refused(refresh(h, &gp.key, &token).await);

    // Someone else's session: the admin's account on the GP's token.
    raw.execute("DELETE FROM refresh_token", []).unwrap();
    let (gp, token) = login(h, "gp").await;
    edit(&format!("account = '{admin_id}'"), &gp_id);
    refused(refresh(h, &gp.key, &token).await);

    // A row copied under the hash of a token text the attacker chose.
    raw.execute("DELETE FROM refresh_token", []).unwrap();
    let (gp, _) = login(h, "gp").await;
    let planted = "planted-refresh-token";
    let hash = medvault_crypto::keys::sha256(planted.as_bytes());
    raw.execute(
        "INSERT INTO refresh_token (hash, family, account, jkt, issued_ms, expires_ms, state, mac)
         SELECT ?, family, account, jkt, issued_ms, expires_ms, 'open', mac FROM refresh_token",
        [hash.as_slice()],
    )
    .unwrap();
    refused(refresh(h, &gp.key, planted).await);
}
