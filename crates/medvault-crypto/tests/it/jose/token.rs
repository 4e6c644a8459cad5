//! The server's own access tokens: issue, verify, refusals, DPoP binding, a pinned snapshot.

use expect_test::expect;
use medvault_crypto::jose::token::ACCESS_TOKEN_TYP;
use medvault_crypto::jose::{
    random_jti, AccessClaims, Alg, JoseError, JwkThumbprint, TokenSigner, TokenVerifier,
    DEFAULT_LEEWAY_SECS,
};
use medvault_crypto::{DeterministicRandom, SecretKey};
use serde_json::{json, Value};

use super::{b64, compact, part, unb64, with_part, TestKey, NOW};

const ISS: &str = "https://medvault.example/auth";
const AUD: &str = "https://medvault.example/fhir";
const SEED: [u8; 32] = [0x42; 32];

fn signer() -> TokenSigner {
    TokenSigner::new(&SecretKey::from_bytes(SEED))
}

fn verifier() -> TokenVerifier {
    signer().verifier(ISS, AUD).unwrap()
}

fn claims() -> AccessClaims {
    AccessClaims::new(
        "Practitioner/7",
        "clinician",
        "app-1",
        "jti-1",
        NOW,
        NOW + 300,
    )
    .unwrap()
}

/// Claims as JSON, for building tokens by hand.
fn claims_json() -> Value {
    json!({
        "iss": ISS, "sub": "Practitioner/7", "aud": AUD, "client_id": "app-1",
        "role": "clinician", "jti": "jti-1", "iat": NOW, "exp": NOW + 300,
    })
}

/// The same Ed25519 key as `signer()`, through ring directly, for hand-made headers.
fn raw_key() -> TestKey {
    TestKey::ed25519(0x42)
}

fn header() -> Value {
    json!({"alg": "EdDSA", "typ": "at+jwt", "kid": signer().kid()})
}

#[test]
fn issue_and_verify_round_trip() {
    let token = signer().issue(ISS, AUD, &claims());
    let got = verifier().verify(&token, NOW).unwrap();
    assert_eq!(got, claims());
    assert_eq!(got.sub(), "Practitioner/7");
    assert_eq!(got.role(), "clinician");
    assert_eq!(got.client_id(), "app-1");
    assert_eq!(got.jti(), "jti-1");
    assert_eq!((got.iat(), got.exp()), (NOW, NOW + 300));
    assert_eq!(got.cnf_jkt(), None);

    // A verifier built from the public key alone behaves the same.
    let standalone = TokenVerifier::new(signer().public_jwk().clone(), ISS, AUD).unwrap();
    assert_eq!(standalone.verify(&token, NOW).unwrap(), claims());
    // The library's signer and a plain ring signature agree (Ed25519 is deterministic).
    assert_eq!(
        signer().sign(&claims_json()),
        compact(&header(), &claims_json(), &raw_key())
    );
}

#[test]
fn dpop_binding_round_trip() {
    let jkt = TestKey::p256().public().thumbprint();
    let token = signer().issue(ISS, AUD, &claims().bound_to(jkt.clone()));
    let payload: Value = serde_json::from_slice(&unb64(part(&token, 1))).unwrap();
    assert_eq!(payload["cnf"], json!({"jkt": jkt.as_str()}));
    let got = verifier().verify(&token, NOW).unwrap();
    assert_eq!(got.cnf_jkt(), Some(&jkt));

    // Unknown or malformed confirmation methods are refused, never treated as unbound.
    for cnf in [
        json!({}),
        json!({"x5t#S256": "abc"}),
        json!({"jkt": "short"}),
        json!({"jkt": 5}),
        json!("x"),
    ] {
        let mut c = claims_json();
        c["cnf"] = cnf.clone();
        let token = compact(&header(), &c, &raw_key());
        assert_eq!(
            verifier().verify(&token, NOW).unwrap_err(),
            JoseError::InvalidClaim("cnf"),
            "{cnf}"
        );
    }
}

#[test]
fn snapshot_with_fixed_seed() {
    // Pinned so the token format can never change silently. Cross-checked
    // independently with Python's `cryptography` package: Ed25519 seed 0x42*32
    // re-signs the same signing input to the same signature, and the kid is
    // the RFC 7638 thumbprint of its public key (hashlib + json, sorted members).
    let signer = signer();
    expect!["nEArpjG3kYMcxbdzInyGlBEYQUw7RfAfe3Tw1fZvAA0"].assert_eq(signer.kid());
    let jkt = JwkThumbprint::parse("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I").unwrap();
    let token = signer.issue(ISS, AUD, &claims().bound_to(jkt.clone()));
    assert_eq!(
        verifier().verify(&token, NOW).unwrap().cnf_jkt(),
        Some(&jkt)
    );
    expect!["eyJhbGciOiJFZERTQSIsInR5cCI6ImF0K2p3dCIsImtpZCI6Im5FQXJwakcza1lNY3hiZHpJbnlHbEJFWVFVdzdSZkFmZTNUdzFmWnZBQTAifQ.eyJpc3MiOiJodHRwczovL21lZHZhdWx0LmV4YW1wbGUvYXV0aCIsInN1YiI6IlByYWN0aXRpb25lci83IiwiYXVkIjoiaHR0cHM6Ly9tZWR2YXVsdC5leGFtcGxlL2ZoaXIiLCJjbGllbnRfaWQiOiJhcHAtMSIsInJvbGUiOiJjbGluaWNpYW4iLCJqdGkiOiJqdGktMSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDAwMzAwLCJjbmYiOnsiamt0IjoiMFpjT0NPUlpOWXktRFdwcXEzMGpaeUpHSFROMGQySGdsQlYzdWlndUE0SSJ9fQ.V-T2N8kRE_MW9yuux9M5ylXE5C7iKLifIitdUQ_o_yfXUqizx6jwIhe-AEeQEhOLb47vkmI4zJCwm_PMBPAiCA"].assert_eq(&token);
}

#[test]
fn time_refusals() {
    let v = verifier();
    let token = signer().issue(ISS, AUD, &claims());
    let exp = NOW + 300;
    assert!(v.verify(&token, exp + DEFAULT_LEEWAY_SECS - 1).is_ok());
    assert_eq!(
        v.verify(&token, exp + DEFAULT_LEEWAY_SECS).unwrap_err(),
        JoseError::Expired
    );
    assert_eq!(v.verify(&token, u64::MAX).unwrap_err(), JoseError::Expired);
    let strict = v.clone().with_leeway(0).unwrap();
    assert_eq!(strict.verify(&token, exp).unwrap_err(), JoseError::Expired);
    assert!(strict.verify(&token, exp - 1).is_ok());
    // iat in the future.
    assert_eq!(
        strict.verify(&token, NOW - 1).unwrap_err(),
        JoseError::IssuedInFuture
    );
    assert!(v.verify(&token, NOW - DEFAULT_LEEWAY_SECS).is_ok());
    assert_eq!(
        v.verify(&token, NOW - DEFAULT_LEEWAY_SECS - 1).unwrap_err(),
        JoseError::IssuedInFuture
    );
    // nbf in the future.
    let mut c = claims_json();
    c["nbf"] = (NOW + 100).into();
    let token = signer().sign(&c);
    assert_eq!(v.verify(&token, NOW).unwrap_err(), JoseError::NotYetValid);
    assert!(v.verify(&token, NOW + 100 - DEFAULT_LEEWAY_SECS).is_ok());
    // exp not after iat.
    let mut c = claims_json();
    c["exp"] = NOW.into();
    assert_eq!(
        v.verify(&signer().sign(&c), NOW - 10).unwrap_err(),
        JoseError::InvalidClaim("exp")
    );
    // Leeway is bounded.
    assert_eq!(
        v.with_leeway(301).unwrap_err(),
        JoseError::InvalidParameter("leeway")
    );
}

#[test]
fn issuer_audience_and_type_refusals() {
    let v = verifier();
    let s = signer();
    assert_eq!(
        v.verify(&s.issue("https://evil.example", AUD, &claims()), NOW)
            .unwrap_err(),
        JoseError::WrongIssuer
    );
    assert_eq!(
        v.verify(&s.issue(ISS, "https://other.example/fhir", &claims()), NOW)
            .unwrap_err(),
        JoseError::WrongAudience
    );
    // aud may be an array containing ours; an array of others is refused.
    let mut c = claims_json();
    c["aud"] = json!(["https://other.example", AUD]);
    assert!(v.verify(&s.sign(&c), NOW).is_ok());
    c["aud"] = json!(["https://other.example"]);
    assert_eq!(
        v.verify(&s.sign(&c), NOW).unwrap_err(),
        JoseError::WrongAudience
    );
    for bad in [json!([]), json!([AUD, 1]), json!(1), json!("")] {
        c["aud"] = bad;
        assert_eq!(
            v.verify(&s.sign(&c), NOW).unwrap_err(),
            JoseError::InvalidClaim("aud")
        );
    }

    // typ: missing, wrong, or another JWT type altogether.
    for typ in [None, Some("JWT"), Some("dpop+jwt"), Some("at+jw"), Some("")] {
        let mut h = header();
        match typ {
            Some(t) => h["typ"] = t.into(),
            None => {
                h.as_object_mut().unwrap().remove("typ");
            }
        }
        let err = v
            .verify(&compact(&h, &claims_json(), &raw_key()), NOW)
            .unwrap_err();
        let expected = if typ == Some("") {
            JoseError::InvalidHeader("typ")
        } else {
            JoseError::WrongType
        };
        assert_eq!(err, expected, "{typ:?}");
    }
    // RFC 7515 media-type spelling of the same type is accepted.
    let mut h = header();
    h["typ"] = "application/AT+JWT".into();
    assert!(v
        .verify(&compact(&h, &claims_json(), &raw_key()), NOW)
        .is_ok());
    assert_eq!(ACCESS_TOKEN_TYP, "at+jwt");
}

#[test]
fn key_and_tamper_refusals() {
    let v = verifier();
    let token = signer().issue(ISS, AUD, &claims());

    // Claims tampered under the original signature.
    let mut c = claims_json();
    c["role"] = "admin".into();
    let tampered = with_part(&token, 1, &b64(c.to_string().as_bytes()));
    assert_eq!(
        v.verify(&tampered, NOW).unwrap_err(),
        JoseError::BadSignature
    );

    // Another server's key: its kid differs...
    let other = TokenSigner::new(&SecretKey::from_bytes([0x43; 32]));
    assert_eq!(
        v.verify(&other.issue(ISS, AUD, &claims()), NOW)
            .unwrap_err(),
        JoseError::KeyIdMismatch
    );
    // ...and claiming our kid does not help.
    let forged = compact(&header(), &claims_json(), &TestKey::ed25519(0x43));
    assert_eq!(v.verify(&forged, NOW).unwrap_err(), JoseError::BadSignature);
    // No kid at all is fine when the signature is right.
    let mut h = header();
    h.as_object_mut().unwrap().remove("kid");
    assert!(v
        .verify(&compact(&h, &claims_json(), &raw_key()), NOW)
        .is_ok());

    // An ES256 token is refused by an EdDSA verifier, whatever key it names.
    let es = TestKey::p256();
    let es_token = compact(
        &json!({"alg": "ES256", "typ": "at+jwt"}),
        &claims_json(),
        &es,
    );
    assert_eq!(
        v.verify(&es_token, NOW).unwrap_err(),
        JoseError::AlgorithmNotAllowed
    );
    // alg none with our kid.
    let none = format!(
        "{}.{}.{}",
        b64(json!({"alg": "none", "typ": "at+jwt"})
            .to_string()
            .as_bytes()),
        b64(claims_json().to_string().as_bytes()),
        part(&token, 2)
    );
    assert_eq!(
        v.verify(&none, NOW).unwrap_err(),
        JoseError::UnsupportedAlgorithm
    );
    assert_eq!(
        v.verify("", NOW).unwrap_err(),
        JoseError::Malformed("expected three parts")
    );
}

#[test]
fn required_claims() {
    let v = verifier();
    for name in [
        "iss",
        "aud",
        "sub",
        "role",
        "client_id",
        "jti",
        "exp",
        "iat",
    ] {
        let mut c = claims_json();
        c.as_object_mut().unwrap().remove(name);
        assert_eq!(
            v.verify(&signer().sign(&c), NOW).unwrap_err(),
            JoseError::MissingClaim(name),
            "{name}"
        );
        // Wrong JSON types and empty strings are invalid, not missing.
        c[name] = if matches!(name, "exp" | "iat") {
            json!("1700000000")
        } else {
            json!(7)
        };
        assert_eq!(
            v.verify(&signer().sign(&c), NOW).unwrap_err(),
            JoseError::InvalidClaim(name),
            "{name}"
        );
    }
    for (name, value) in [
        ("exp", json!(1.7e9)),
        ("iat", json!(-1)),
        ("sub", json!("")),
        ("jti", json!("x".repeat(257))),
    ] {
        let mut c = claims_json();
        c[name] = value;
        assert_eq!(
            v.verify(&signer().sign(&c), NOW).unwrap_err(),
            JoseError::InvalidClaim(name),
            "{name}"
        );
    }
    assert_eq!(
        v.verify(&signer().sign(&json!(["not", "claims"])), NOW)
            .unwrap_err(),
        JoseError::JsonShape("payload")
    );
}

#[test]
fn constructors_check_their_inputs() {
    assert_eq!(
        AccessClaims::new("", "r", "c", "j", 1, 2).unwrap_err(),
        JoseError::InvalidParameter("sub")
    );
    assert_eq!(
        AccessClaims::new("s", "r", "c", &"j".repeat(257), 1, 2).unwrap_err(),
        JoseError::InvalidParameter("jti")
    );
    assert_eq!(
        AccessClaims::new("s", "r", "c", "j", 2, 2).unwrap_err(),
        JoseError::InvalidParameter("exp")
    );
    assert_eq!(
        signer().verifier("", AUD).unwrap_err(),
        JoseError::InvalidParameter("issuer")
    );
    assert_eq!(
        TokenVerifier::new(signer().public_jwk().clone(), ISS, "").unwrap_err(),
        JoseError::InvalidParameter("audience")
    );
    let dbg = format!("{:?}", signer());
    assert!(
        dbg.contains("[redacted]") && dbg.contains(signer().kid()),
        "{dbg}"
    );
    assert_eq!(signer().public_jwk().alg(), Alg::EdDsa);
}

#[test]
fn random_jti_uses_the_rng() {
    let a = random_jti(&DeterministicRandom::new(1)).unwrap();
    let b = random_jti(&DeterministicRandom::new(1)).unwrap();
    let c = random_jti(&DeterministicRandom::new(2)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.len(), 22);
    assert_eq!(unb64(&a).len(), 16);
}
