//! `private_key_jwt` client assertions (RFC 7523, SMART Backend Services).

use medvault_crypto::jose::assertion::MAX_ASSERTION_LIFETIME_SECS;
use medvault_crypto::jose::{
    unverified_client_id, validate_client_assertion, AssertionExpectation, JoseError, PublicJwk,
    DEFAULT_LEEWAY_SECS, MAX_TOKEN_LEN,
};
use serde_json::{json, Value};

use super::{b64, compact, flip_signature_byte, offline, part, unb64, with_part, TestKey, NOW};

const CLIENT: &str = "backend-service-1";
const TOKEN_URL: &str = "https://medvault.example/auth/token";

fn claims() -> Value {
    json!({
        "iss": CLIENT, "sub": CLIENT, "aud": TOKEN_URL,
        "exp": NOW + 240, "jti": "assertion-1",
    })
}

fn header(key: &TestKey) -> Value {
    json!({"alg": key.alg(), "typ": "JWT", "kid": "client-key-1"})
}

fn expectation() -> AssertionExpectation {
    AssertionExpectation::new(CLIENT, TOKEN_URL, NOW).unwrap()
}

fn check(key: &TestKey, edit: impl FnOnce(&mut Value)) -> Result<(), JoseError> {
    let mut c = claims();
    edit(&mut c);
    let jwt = compact(&header(key), &c, key);
    validate_client_assertion(&jwt, &key.public(), &expectation()).map(|_| ())
}

#[test]
fn valid_assertions_are_accepted() {
    for key in TestKey::one_of_each(30) {
        let jwt = compact(&header(&key), &claims(), &key);
        let got = validate_client_assertion(&jwt, &key.public(), &expectation()).unwrap();
        assert_eq!(got.jti(), "assertion-1");
        assert_eq!(got.exp(), NOW + 240);
        assert_eq!(unverified_client_id(&jwt).unwrap(), CLIENT);
    }
    let key = TestKey::ed25519(31);
    // aud as an array, and spelled with the default port and upper-case host.
    assert_eq!(
        check(&key, |c| c["aud"] = json!(["https://x.example", TOKEN_URL])),
        Ok(())
    );
    assert_eq!(
        check(&key, |c| c["aud"] =
            "https://MEDVAULT.example:443/auth/token".into()),
        Ok(())
    );
    // typ may be absent; iat and nbf are optional but checked when present.
    let mut h = header(&key);
    h.as_object_mut().unwrap().remove("typ");
    let jwt = compact(&h, &claims(), &key);
    assert!(validate_client_assertion(&jwt, &key.public(), &expectation()).is_ok());
    assert_eq!(check(&key, |c| c["iat"] = NOW.into()), Ok(()));
    assert_eq!(check(&key, |c| c["nbf"] = NOW.into()), Ok(()));
}

#[test]
fn smart_algorithms_interoperate() {
    // RS384 and ES384 assertions signed by Python's `cryptography` (SMART
    // Backend Services requires servers to accept both), including one from
    // an 8192-bit RSA key.
    let offline = offline();
    for (name, jti) in [
        ("rsa2048", "py-rs384-2048"),
        ("rsa8192", "py-rs384-8192"),
        ("p384", "py-es384"),
    ] {
        let key = PublicJwk::from_json_value(&offline[name]["jwk"]).unwrap();
        let jwt = offline[name]["assertion"].as_str().unwrap();
        let got = validate_client_assertion(jwt, &key, &expectation()).unwrap();
        assert_eq!(got.jti(), jti);
        assert_eq!(got.exp(), NOW + 240);
        assert_eq!(unverified_client_id(jwt).unwrap(), CLIENT);
        // Still every claim check applies: later, the same assertion has expired.
        let later = AssertionExpectation::new(CLIENT, TOKEN_URL, NOW + 3600).unwrap();
        assert_eq!(
            validate_client_assertion(jwt, &key, &later).unwrap_err(),
            JoseError::Expired
        );
    }
}

#[test]
fn rs384_and_es384_refusals() {
    let offline = offline();
    let rsa_other = PublicJwk::from_json_value(&offline["rsa2048_other"]["jwk"]).unwrap();
    let rsa8192 = PublicJwk::from_json_value(&offline["rsa8192"]["jwk"]).unwrap();
    let validate = |jwt: &str, key: &PublicJwk| {
        validate_client_assertion(jwt, key, &expectation()).map(|_| ())
    };
    for key in [TestKey::rsa(), TestKey::p384()] {
        let jwt = compact(&header(&key), &claims(), &key);
        assert_eq!(validate(&jwt, &key.public()), Ok(()));
        // Tampered payload (another, otherwise valid, jti) or signature.
        let mut c = claims();
        c["jti"] = "assertion-2".into();
        let tampered = with_part(&jwt, 1, &b64(c.to_string().as_bytes()));
        assert_eq!(
            validate(&tampered, &key.public()),
            Err(JoseError::BadSignature)
        );
        let len = unb64(part(&jwt, 2)).len();
        for i in [0, 1, len / 2, len - 2, len - 1] {
            assert_eq!(
                validate(&flip_signature_byte(&jwt, i), &key.public()),
                Err(JoseError::BadSignature),
                "{} byte {i}",
                key.alg()
            );
        }
        // Another key of the same type.
        let other = match key {
            TestKey::Rs(_) => rsa_other.clone(),
            _ => TestKey::p384().public(),
        };
        assert_eq!(validate(&jwt, &other), Err(JoseError::BadSignature));
        // A key of another type, whichever way round.
        for wrong in [TestKey::p256(), TestKey::ed25519(37)] {
            assert_eq!(
                validate(&jwt, &wrong.public()),
                Err(JoseError::AlgorithmKeyMismatch)
            );
            let theirs = compact(&header(&wrong), &claims(), &wrong);
            assert_eq!(
                validate(&theirs, &key.public()),
                Err(JoseError::AlgorithmKeyMismatch)
            );
        }
    }
    // An RS384 signature from the 2048-bit key is no signature for the 8192-bit one.
    let rs = TestKey::rsa();
    let jwt = compact(&header(&rs), &claims(), &rs);
    assert_eq!(validate(&jwt, &rsa8192), Err(JoseError::BadSignature));
    // A P-384 assertion relabelled ES256 (or the reverse) never reaches a verifier.
    let es384 = TestKey::p384();
    let mut h = header(&es384);
    h["alg"] = "ES256".into();
    assert_eq!(
        validate(&compact(&h, &claims(), &es384), &TestKey::p256().public()),
        Err(JoseError::Malformed("signature length"))
    );
    // RSA with SHA-256 is not accepted, even with a valid RS256-shaped token.
    let mut h = header(&rs);
    h["alg"] = "RS256".into();
    assert_eq!(
        validate(&compact(&h, &claims(), &rs), &rs.public()),
        Err(JoseError::UnsupportedAlgorithm)
    );
    // Oversized assertions are refused before any parsing or RSA work.
    let mut c = claims();
    c["pad"] = "x".repeat(MAX_TOKEN_LEN).into();
    let huge = compact(&header(&rs), &c, &rs);
    assert_eq!(validate(&huge, &rs.public()), Err(JoseError::TooLarge));
    assert_eq!(unverified_client_id(&huge), Err(JoseError::TooLarge));
}

#[test]
fn identity_refusals() {
    let key = TestKey::ed25519(32);
    assert_eq!(
        check(&key, |c| c["iss"] = "other-client".into()),
        Err(JoseError::WrongIssuer)
    );
    assert_eq!(
        check(&key, |c| c["sub"] = "other-client".into()),
        Err(JoseError::SubjectMismatch)
    );
    assert_eq!(
        check(&key, |c| {
            c["iss"] = "other-client".into();
            c["sub"] = "other-client".into();
        }),
        Err(JoseError::WrongIssuer)
    );
    assert_eq!(
        check(&key, |c| {
            c.as_object_mut().unwrap().remove("sub");
        }),
        Err(JoseError::MissingClaim("sub"))
    );
    assert_eq!(
        check(&key, |c| {
            c.as_object_mut().unwrap().remove("jti");
        }),
        Err(JoseError::MissingClaim("jti"))
    );
    assert_eq!(
        check(&key, |c| c["jti"] = "".into()),
        Err(JoseError::InvalidClaim("jti"))
    );
}

#[test]
fn audience_refusals() {
    let key = TestKey::p256();
    for aud in [
        json!("https://medvault.example/auth/authorize"),
        json!("https://medvault.example/auth/token/"),
        json!("https://medvault.example/auth/token?x=1"),
        json!("http://medvault.example/auth/token"),
        json!("https://medvault.example"),
        json!("medvault"),
        json!(["https://x.example"]),
    ] {
        assert_eq!(
            check(&key, |c| c["aud"] = aud.clone()),
            Err(JoseError::WrongAudience),
            "{aud}"
        );
    }
    assert_eq!(
        check(&key, |c| {
            c.as_object_mut().unwrap().remove("aud");
        }),
        Err(JoseError::MissingClaim("aud"))
    );
    assert_eq!(
        check(&key, |c| c["aud"] = json!([])),
        Err(JoseError::InvalidClaim("aud"))
    );
}

#[test]
fn time_refusals() {
    let key = TestKey::ed25519(33);
    let max = NOW + MAX_ASSERTION_LIFETIME_SECS + DEFAULT_LEEWAY_SECS;
    assert_eq!(check(&key, |c| c["exp"] = max.into()), Ok(()));
    assert_eq!(
        check(&key, |c| c["exp"] = (max + 1).into()),
        Err(JoseError::LifetimeTooLong)
    );
    assert_eq!(
        check(&key, |c| c["exp"] = (NOW + 3600).into()),
        Err(JoseError::LifetimeTooLong)
    );
    assert_eq!(
        check(&key, |c| c["exp"] = u64::MAX.into()),
        Err(JoseError::LifetimeTooLong)
    );
    assert_eq!(
        check(&key, |c| c["exp"] = (NOW - DEFAULT_LEEWAY_SECS).into()),
        Err(JoseError::Expired)
    );
    assert_eq!(
        check(&key, |c| c["exp"] = (NOW - 3600).into()),
        Err(JoseError::Expired)
    );
    assert_eq!(
        check(&key, |c| {
            c.as_object_mut().unwrap().remove("exp");
        }),
        Err(JoseError::MissingClaim("exp"))
    );
    assert_eq!(
        check(&key, |c| c["nbf"] = (NOW + 120).into()),
        Err(JoseError::NotYetValid)
    );
    assert_eq!(
        check(&key, |c| c["iat"] = (NOW + 120).into()),
        Err(JoseError::IssuedInFuture)
    );

    // With no leeway the boundaries are exact.
    let jwt = |exp: u64| {
        let mut c = claims();
        c["exp"] = exp.into();
        compact(&header(&key), &c, &key)
    };
    let strict = expectation().with_leeway(0).unwrap();
    let v = |exp| validate_client_assertion(&jwt(exp), &key.public(), &strict).map(|_| ());
    assert_eq!(v(NOW), Err(JoseError::Expired));
    assert_eq!(v(NOW + 1), Ok(()));
    assert_eq!(v(NOW + 300), Ok(()));
    assert_eq!(v(NOW + 301), Err(JoseError::LifetimeTooLong));
    assert_eq!(
        expectation().with_leeway(1000).unwrap_err(),
        JoseError::InvalidParameter("leeway")
    );
}

#[test]
fn key_and_type_refusals() {
    let key = TestKey::ed25519(34);
    let jwt = compact(&header(&key), &claims(), &key);
    // Another key, or a key of the other type.
    assert_eq!(
        validate_client_assertion(&jwt, &TestKey::ed25519(35).public(), &expectation())
            .unwrap_err(),
        JoseError::BadSignature
    );
    assert_eq!(
        validate_client_assertion(&jwt, &TestKey::p256().public(), &expectation()).unwrap_err(),
        JoseError::AlgorithmKeyMismatch
    );
    // Other JWT types are never client assertions.
    for typ in ["dpop+jwt", "at+jwt", "secevent+jwt"] {
        let mut h = header(&key);
        h["typ"] = typ.into();
        let jwt = compact(&h, &claims(), &key);
        assert_eq!(
            validate_client_assertion(&jwt, &key.public(), &expectation()).unwrap_err(),
            JoseError::WrongType,
            "{typ}"
        );
    }
    let mut h = header(&key);
    h["alg"] = "HS256".into();
    let jwt = compact(&h, &claims(), &key);
    assert_eq!(
        validate_client_assertion(&jwt, &key.public(), &expectation()).unwrap_err(),
        JoseError::UnsupportedAlgorithm
    );
}

#[test]
fn expectation_and_peek_inputs() {
    assert_eq!(
        AssertionExpectation::new("", TOKEN_URL, NOW).unwrap_err(),
        JoseError::InvalidParameter("client_id")
    );
    assert_eq!(
        AssertionExpectation::new(CLIENT, "https://medvault.example/token?x=1", NOW).unwrap_err(),
        JoseError::InvalidParameter("token_endpoint_url")
    );
    assert!(matches!(
        AssertionExpectation::new(CLIENT, "/token", NOW).unwrap_err(),
        JoseError::InvalidUrl(_)
    ));
    let key = TestKey::ed25519(36);
    let mut c = claims();
    c.as_object_mut().unwrap().remove("iss");
    assert_eq!(
        unverified_client_id(&compact(&header(&key), &c, &key)).unwrap_err(),
        JoseError::MissingClaim("iss")
    );
    assert_eq!(
        unverified_client_id("a.b").unwrap_err(),
        JoseError::Malformed("expected three parts")
    );
}
