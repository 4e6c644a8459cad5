//! Machine clients (SMART Backend Services): registered by an admin with a public key, they
//! get DPoP-bound tokens with a signed assertion; replayed, expired, foreign-key or
//! wrong-audience assertions are refused; bearer tokens only where registered as a danger;
//! a forged client row is refused; disabling applies at once.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use medvault_store::Store;
use serde_json::{json, Value};

use crate::access::{put, world, User};
use crate::identity::{b64, DpopKey};
use crate::support::{observation, Harness, Resp, BASE};

fn jti() -> String {
    let mut b = [0u8; 12];
    medvault_crypto::Random::fill(&medvault_crypto::SystemRandom::new(), &mut b).unwrap();
    b64(&b)
}

fn now_s(h: &Harness) -> i64 {
    use medvault_server::clock::Clock;
    h.clock.now_ms() / 1000
}

fn assertion(h: &Harness, key: &DpopKey, client_id: &str, aud: &str, ttl: i64) -> String {
    key.jwt(&json!({
        "iss": client_id, "sub": client_id, "aud": aud,
        "exp": now_s(h) + ttl, "jti": jti(),
    }))
}

/// `POST /auth/token` for a client, with a DPoP proof by `dpop` if given.
async fn token(h: &Harness, assertion: &str, dpop: Option<&DpopKey>) -> Resp {
    let mut req = Request::builder()
        .method("POST")
        .uri("/auth/token")
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(k) = dpop {
        req = req.header(
            "dpop",
            k.proof(
                "POST",
                &format!("{BASE}/auth/token"),
                now_s(h),
                &jti(),
                None,
            ),
        );
    }
    let body = format!(
        "grant_type=client_credentials&scope=system%2FObservation.c&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={assertion}"
    );
    h.raw(req.body(Body::from(body)).unwrap()).await
}

async fn add_client(h: &Harness, admin: &User, body: Value) -> Resp {
    admin.call(h, "POST", "/admin/clients", Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lab_integration_posts_results_with_a_dpop_bound_client_token() {
    let w = world().await;
    let h = &w.h;
    let client_key = DpopKey::new();
    let body = json!({
        "name": "lab-1-integration",
        "role": "lab-technician",
        "link": "Practitioner/lab-bot|Organization/lab-1",
        "jwk": client_key.jwk(),
    });
    // Only admins register clients.
    add_client(h, &w.gp, body.clone())
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    let r = add_client(h, &w.admin, body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let client_id = r.json["client_id"].as_str().unwrap().to_string();
    assert_eq!(r.json["danger_bearer"], false);
    // Names are unique; bad registrations are refused precisely.
    add_client(h, &w.admin, body.clone())
        .await
        .assert_outcome(StatusCode::CONFLICT);
    for (field, value) in [
        ("role", json!("admin")),
        ("role", json!("patient")),
        ("link", json!("Practitioner/lab-bot")),
        ("name", json!("has spaces")),
        ("jwk", json!({"kty": "OKP", "crv": "Ed25519", "x": "short"})),
        ("jwk", json!({"kty": "oct", "k": "c2VjcmV0"})),
    ] {
        let mut b = body.clone();
        b[field] = value;
        b["name"] = if field == "name" {
            b["name"].clone()
        } else {
            json!(format!("c-{field}"))
        };
        add_client(h, &w.admin, b)
            .await
            .assert_outcome(StatusCode::BAD_REQUEST);
    }

    // A token for the client, bound to a DPoP key of its choosing.
    let dpop = DpopKey::new();
    let a = assertion(
        h,
        &client_key,
        &client_id,
        &format!("{BASE}/auth/token"),
        60,
    );
    let r = token(h, &a, Some(&dpop)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["token_type"], "DPoP");
    assert_eq!(r.json["scope"], "system/Observation.c");
    let bot = User {
        token: r.json["access_token"].as_str().unwrap().to_string(),
        key: dpop,
    };
    // The same assertion again: replayed.
    let r = token(h, &a, Some(&DpopKey::new())).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.json);
    assert_eq!(r.json["error"], "invalid_client");

    // The policy decides for the client's role: results for the lab's open order only.
    let order = put(
        h,
        json!({
            "resourceType": "ServiceRequest", "status": "active", "intent": "order",
            "code": {"text": "glucose"},
            "subject": {"reference": format!("Patient/{}", w.pid)},
            "performer": [{"reference": "Organization/lab-1"}]
        }),
    );
    let mut result = observation(&w.pid, "2345-7", "2024-03-03", 95);
    result["basedOn"] = json!([{"reference": format!("ServiceRequest/{order}")}]);
    let r = bot.call(h, "POST", "/fhir/Observation", Some(result)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    bot.call(h, "GET", &format!("/fhir/Observation/{}", w.obs), None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN);
    // The ledger names the client.
    let keys = h.repo.vault().keys().unwrap();
    let last = h.data.store.ledger_size().unwrap() - 1;
    let rec = &h.data.store.ledger_entries(last, 1).unwrap()[0];
    let e = medvault_server::ledger::open_entry(&keys, rec).unwrap().0;
    assert_eq!(e.client.as_str(), client_id);
    assert_eq!(e.actor.as_str(), client_id);

    // Without a DPoP proof this client gets nothing (it was not registered for bearer).
    let a = assertion(
        h,
        &client_key,
        &client_id,
        &format!("{BASE}/auth/token"),
        60,
    );
    let r = token(h, &a, None).await;
    assert_eq!(r.json["error"], "invalid_dpop_proof", "{}", r.json);
    // Assertions signed by another key, for another audience, too long-lived, or expired.
    let other = DpopKey::new();
    for a in [
        assertion(h, &other, &client_id, &format!("{BASE}/auth/token"), 60),
        assertion(h, &client_key, &client_id, &format!("{BASE}/fhir"), 60),
        assertion(
            h,
            &client_key,
            &client_id,
            &format!("{BASE}/auth/token"),
            3600,
        ),
        assertion(
            h,
            &client_key,
            &client_id,
            &format!("{BASE}/auth/token"),
            -120,
        ),
        assertion(
            h,
            &client_key,
            "client-unknown",
            &format!("{BASE}/auth/token"),
            60,
        ),
    ] {
        let r = token(h, &a, Some(&DpopKey::new())).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.json);
        assert_eq!(r.json["error"], "invalid_client", "{}", r.json);
    }

    // Disabled: the token in hand stops working, and no new one is issued.
    let r = w
        .admin
        .call(
            h,
            "PATCH",
            &format!("/admin/clients/{client_id}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    bot.call(h, "GET", "/auth/whoami", None)
        .await
        .assert_outcome(StatusCode::UNAUTHORIZED);
    let a = assertion(
        h,
        &client_key,
        &client_id,
        &format!("{BASE}/auth/token"),
        60,
    );
    assert_eq!(
        token(h, &a, Some(&DpopKey::new())).await.json["error"],
        "invalid_client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_only_for_clients_registered_as_a_danger() {
    let w = world().await;
    let h = &w.h;
    let key = DpopKey::new();
    let r = add_client(
        h,
        &w.admin,
        json!({
            "name": "legacy-fhir-tool", "role": "physician", "link": "Practitioner/dr-gp",
            "jwk": key.jwk(), "danger_bearer": true,
        }),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let id = r.json["client_id"].as_str().unwrap().to_string();
    let a = assertion(h, &key, &id, &format!("{BASE}/auth/token"), 60);
    let r = token(h, &a, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["token_type"], "Bearer");
    let bearer = format!("Bearer {}", r.json["access_token"].as_str().unwrap());
    let obs = format!("/fhir/Observation/{}", w.obs);
    let r = h
        .call_with("GET", &obs, None, &[("authorization", &bearer)])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    // Break-glass is for a person who answers for the reason, never for a machine client.
    let r = h
        .call_with(
            "POST",
            &format!("/fhir/Patient/{}/$break-glass", w.other_pid),
            Some(json!({"resourceType": "Parameters",
                "parameter": [{"name": "reason", "valueString": "batch job"}]})),
            &[("authorization", &bearer)],
        )
        .await;
    r.assert_outcome(StatusCode::FORBIDDEN);
    assert!(r.json["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("break-glass-needs-a-person"));

    // A DPoP-bound token presented as a bearer token is refused, whoever it belongs to.
    let a = assertion(h, &key, &id, &format!("{BASE}/auth/token"), 60);
    let r = token(h, &a, Some(&DpopKey::new())).await;
    assert_eq!(r.json["token_type"], "DPoP");
    let stolen = format!("Bearer {}", r.json["access_token"].as_str().unwrap());
    h.call_with("GET", &obs, None, &[("authorization", &stolen)])
        .await
        .assert_outcome(StatusCode::UNAUTHORIZED);
    let user_token = format!("Bearer {}", w.gp.token);
    h.call_with("GET", &obs, None, &[("authorization", &user_token)])
        .await
        .assert_outcome(StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_row_edited_in_the_database_is_refused() {
    let w = world().await;
    let h = &w.h;
    let key = DpopKey::new();
    let r = add_client(
        h,
        &w.admin,
        json!({"name": "bot", "role": "nurse", "link": "Practitioner/n-bot", "jwk": key.jwk()}),
    )
    .await;
    let id = r.json["client_id"].as_str().unwrap().to_string();
    // Someone with database access switches bearer tokens on and raises the role.
    let db = rusqlite::Connection::open(h.db_path()).unwrap();
    db.execute(
        "UPDATE client SET bearer = 1, role = 'physician', link = 'Practitioner/dr-gp' WHERE id = ?",
        [&id],
    )
    .unwrap();
    let a = assertion(h, &key, &id, &format!("{BASE}/auth/token"), 60);
    let r = token(h, &a, None).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.json);
    assert_eq!(r.json["error"], "server_error");
    w.admin
        .call(h, "GET", "/admin/clients", None)
        .await
        .assert_outcome(StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_es384_client_as_smart_backend_services_requires() {
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
    let w = world().await;
    let h = &w.h;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = pair.public_key().as_ref();
    let jwk =
        json!({"kty": "EC", "crv": "P-384", "x": b64(&point[1..49]), "y": b64(&point[49..97])});
    let r = add_client(
        h,
        &w.admin,
        json!({"name": "es384", "role": "auditor", "jwk": jwk}),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let id = r.json["client_id"].as_str().unwrap().to_string();
    let header = json!({"alg": "ES384", "typ": "JWT"});
    let claims = json!({
        "iss": id, "sub": id, "aud": format!("{BASE}/auth/token"),
        "exp": now_s(h) + 60, "jti": jti(),
    });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = pair.sign(&rng, input.as_bytes()).unwrap();
    let a = format!("{input}.{}", b64(sig.as_ref()));
    let r = token(h, &a, Some(&DpopKey::new())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["token_type"], "DPoP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_discovery_names_the_token_endpoint_and_algorithms() {
    let h = Harness::unsealed_requiring_auth();
    let r = h
        .call("GET", "/.well-known/smart-configuration", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["token_endpoint"], format!("{BASE}/auth/token"));
    assert_eq!(
        r.json["token_endpoint_auth_methods_supported"],
        json!(["private_key_jwt"])
    );
    assert_eq!(
        r.json["token_endpoint_auth_signing_alg_values_supported"],
        json!(["ES256", "ES384", "RS384", "EdDSA"])
    );
}
