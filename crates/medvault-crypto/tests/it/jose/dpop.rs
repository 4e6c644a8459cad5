//! DPoP proofs (RFC 9449): acceptance, then each refusal on its own.

use medvault_crypto::jose::dpop::{DPOP_TYP, MAX_DPOP_JTI_LEN};
use medvault_crypto::jose::{
    access_token_hash, validate_dpop, DpopExpectation, JoseError, JwkThumbprint, MAX_TOKEN_LEN,
};
use serde_json::{json, Value};

use super::{b64, compact, flip_signature_byte, offline, part, unb64, with_part, TestKey, NOW};

const URL: &str = "https://medvault.example/fhir/Patient/123";
const TOKEN: &str = "an-access-token.with.dots";

fn header(key: &TestKey) -> Value {
    json!({"typ": "dpop+jwt", "alg": key.alg(), "jwk": key.jwk()})
}

fn claims() -> Value {
    json!({"jti": "proof-1", "htm": "GET", "htu": URL, "iat": NOW})
}

fn proof(key: &TestKey, header: &Value, claims: &Value) -> String {
    compact(header, claims, key)
}

fn expect_get() -> DpopExpectation {
    DpopExpectation::new("GET", URL, NOW).unwrap()
}

/// Validate a proof made by `key` with `claims` edited by `edit`.
fn with_claims(key: &TestKey, edit: impl FnOnce(&mut Value)) -> Result<(), JoseError> {
    let mut c = claims();
    edit(&mut c);
    validate_dpop(&proof(key, &header(key), &c), &expect_get()).map(|_| ())
}

/// Validate a proof made by `key` with its header edited by `edit`.
fn with_header(key: &TestKey, edit: impl FnOnce(&mut Value)) -> Result<(), JoseError> {
    let mut h = header(key);
    edit(&mut h);
    validate_dpop(&proof(key, &h, &claims()), &expect_get()).map(|_| ())
}

#[test]
fn rfc9449_example_proof_is_accepted() {
    // RFC 9449 §4.1, Figure 4: an ES256 proof for a token request.
    let rfc = concat!(
        "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0",
        "VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10",
        "NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19",
        ".eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1w",
        "bGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ",
        ".2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg",
    );
    let expected =
        DpopExpectation::new("POST", "https://server.example.com/token", 1_562_262_616).unwrap();
    let got = validate_dpop(rfc, &expected).unwrap();
    assert_eq!(got.jti(), "-BwC3ESc6acc2lTc");
    assert_eq!(got.iat(), 1_562_262_616);
    // RFC 9449 §6.1 gives this key's thumbprint.
    assert_eq!(
        got.jkt().as_str(),
        "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    );
    // Same proof, different request.
    let elsewhere =
        DpopExpectation::new("POST", "https://server.example.com/other", 1_562_262_616).unwrap();
    assert_eq!(
        validate_dpop(rfc, &elsewhere).unwrap_err(),
        JoseError::UriMismatch
    );
}

#[test]
fn rfc9449_ath_known_answer() {
    // RFC 9449 §7.1: the access token and the ath in its example proof.
    assert_eq!(
        access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
        "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    );
}

#[test]
fn valid_proofs_are_accepted_for_every_algorithm() {
    for key in TestKey::one_of_each(11) {
        let got = validate_dpop(&proof(&key, &header(&key), &claims()), &expect_get()).unwrap();
        assert_eq!(got.jkt(), &key.public().thumbprint());
        assert_eq!(got.jti(), "proof-1");
        assert_eq!(got.iat(), NOW);

        // With every optional expectation at once.
        let mut c = claims();
        c["ath"] = access_token_hash(TOKEN).into();
        c["nonce"] = "server-nonce-1".into();
        let full = DpopExpectation::new("GET", URL, NOW)
            .unwrap()
            .with_access_token(TOKEN)
            .with_jkt(key.public().thumbprint())
            .with_nonce("server-nonce-1")
            .unwrap();
        assert_eq!(
            validate_dpop(&proof(&key, &header(&key), &c), &full).unwrap(),
            got
        );
    }
}

#[test]
fn offline_es384_and_rs384_proofs() {
    // Proofs made by Python's `cryptography`, one with an 8192-bit RSA key:
    // the largest key and signature, both in one proof, still fit MAX_TOKEN_LEN.
    let offline = offline();
    for (name, jti) in [("p384", "py-dpop-p384"), ("rsa8192", "py-dpop-8192")] {
        let proof = offline[name]["dpop"].as_str().unwrap();
        assert!(proof.len() < MAX_TOKEN_LEN / 2, "{}", proof.len());
        let jkt = JwkThumbprint::parse(offline[name]["jkt"].as_str().unwrap()).unwrap();
        let got = validate_dpop(proof, &expect_get().with_jkt(jkt.clone())).unwrap();
        assert_eq!(got.jkt(), &jkt);
        assert_eq!(got.jti(), jti);
        assert_eq!(got.iat(), NOW);
        let len = unb64(part(proof, 2)).len();
        for i in [0, len / 2, len - 1] {
            assert_eq!(
                validate_dpop(&flip_signature_byte(proof, i), &expect_get()).unwrap_err(),
                JoseError::BadSignature,
                "{name} byte {i}"
            );
        }
        let other = JwkThumbprint::parse(offline["rsa2048"]["jkt"].as_str().unwrap()).unwrap();
        assert_eq!(
            validate_dpop(proof, &expect_get().with_jkt(other)).unwrap_err(),
            JoseError::ThumbprintMismatch
        );
    }
}

#[test]
fn header_refusals() {
    let key = TestKey::ed25519(12);
    // typ
    assert_eq!(
        with_header(&key, |h| {
            h.as_object_mut().unwrap().remove("typ");
        }),
        Err(JoseError::WrongType)
    );
    for typ in [
        "jwt",
        "JWT",
        "at+jwt",
        "dpop",
        "dpop+jwt+x",
        "application/jwt",
    ] {
        assert_eq!(
            with_header(&key, |h| h["typ"] = typ.into()),
            Err(JoseError::WrongType),
            "{typ}"
        );
    }
    assert_eq!(with_header(&key, |h| h["typ"] = "DPoP+JWT".into()), Ok(()));
    assert_eq!(
        with_header(&key, |h| h["typ"] = "application/dpop+jwt".into()),
        Ok(())
    );
    assert_eq!(DPOP_TYP, "dpop+jwt");
    // alg
    assert_eq!(
        with_header(&key, |h| h["alg"] = "none".into()),
        Err(JoseError::UnsupportedAlgorithm)
    );
    assert_eq!(
        with_header(&key, |h| h["alg"] = "HS256".into()),
        Err(JoseError::UnsupportedAlgorithm)
    );
    assert_eq!(
        with_header(&key, |h| h["alg"] = "ES256".into()),
        Err(JoseError::AlgorithmKeyMismatch)
    );
    let es = TestKey::p256();
    assert_eq!(
        with_header(&es, |h| h["alg"] = "EdDSA".into()),
        Err(JoseError::AlgorithmKeyMismatch)
    );
    // jwk: missing, private, malformed, not the signer's.
    assert_eq!(
        with_header(&key, |h| {
            h.as_object_mut().unwrap().remove("jwk");
        }),
        Err(JoseError::InvalidHeader("jwk"))
    );
    assert_eq!(
        with_header(&key, |h| h["jwk"]["d"] = b64(&[0x0c; 32]).into()),
        Err(JoseError::PrivateKeyMaterial)
    );
    assert_eq!(
        with_header(&es, |h| h["jwk"]["d"] = b64(&[1; 32]).into()),
        Err(JoseError::PrivateKeyMaterial)
    );
    assert_eq!(
        with_header(&key, |h| h["jwk"]["x"] = b64(b"short").into()),
        Err(JoseError::InvalidKey("x"))
    );
    assert_eq!(
        with_header(&key, |h| h["jwk"] = TestKey::ed25519(13).jwk()),
        Err(JoseError::BadSignature)
    );
    assert_eq!(
        with_header(&key, |h| h["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"})),
        Err(JoseError::PrivateKeyMaterial)
    );

    // The SHA-384 algorithms: alg must fit the embedded key, and an RSA jwk is
    // held to the same strict rules as anywhere else.
    let es384 = TestKey::p384();
    let rs = TestKey::rsa();
    assert_eq!(
        with_header(&es384, |h| h["jwk"] = TestKey::p256().jwk()),
        Err(JoseError::AlgorithmKeyMismatch)
    );
    assert_eq!(
        with_header(&rs, |h| h["jwk"] = es384.jwk()),
        Err(JoseError::AlgorithmKeyMismatch)
    );
    assert_eq!(
        with_header(&es, |h| h["jwk"] = rs.jwk()),
        Err(JoseError::AlgorithmKeyMismatch)
    );
    assert_eq!(
        with_header(&es384, |h| h["alg"] = "ES256".into()),
        Err(JoseError::Malformed("signature length"))
    );
    for alg in ["RS256", "PS384", "RS512"] {
        assert_eq!(
            with_header(&rs, |h| h["alg"] = alg.into()),
            Err(JoseError::UnsupportedAlgorithm),
            "{alg}"
        );
    }
    assert_eq!(
        with_header(&rs, |h| h["jwk"]["d"] = "AQAB".into()),
        Err(JoseError::PrivateKeyMaterial)
    );
    assert_eq!(
        with_header(&es384, |h| h["jwk"]["d"] = b64(&[1; 48]).into()),
        Err(JoseError::PrivateKeyMaterial)
    );
    assert_eq!(
        with_header(&rs, |h| h["jwk"]["alg"] = "RS256".into()),
        Err(JoseError::InvalidKey("alg"))
    );
    assert_eq!(
        with_header(&rs, |h| {
            let n = unb64(h["jwk"]["n"].as_str().unwrap());
            h["jwk"]["n"] = b64(&[&[0][..], &n].concat()).into();
        }),
        Err(JoseError::InvalidKey("n"))
    );
    assert_eq!(
        with_header(&rs, |h| {
            let n = unb64(h["jwk"]["n"].as_str().unwrap());
            h["jwk"]["n"] = b64(&n[..128]).into();
        }),
        Err(JoseError::InvalidKey("n"))
    );
    assert_eq!(
        with_header(&rs, |h| h["jwk"]["e"] = b64(&[1, 0, 0]).into()),
        Err(JoseError::InvalidKey("e"))
    );
    assert_eq!(
        with_header(&rs, |h| h["jwk"]["crv"] = "P-384".into()),
        Err(JoseError::InvalidKey("crv"))
    );
}

#[test]
fn signature_refusals() {
    for key in [TestKey::p256(), TestKey::p384(), TestKey::rsa()] {
        let good = proof(&key, &header(&key), &claims());
        assert!(validate_dpop(&good, &expect_get()).is_ok());
        assert_eq!(
            validate_dpop(&flip_signature_byte(&good, 5), &expect_get()).unwrap_err(),
            JoseError::BadSignature
        );
        let mut c = claims();
        c["htu"] = "https://medvault.example/fhir/Patient/124".into();
        let changed = with_part(&good, 1, &b64(c.to_string().as_bytes()));
        assert_eq!(
            validate_dpop(&changed, &expect_get()).unwrap_err(),
            JoseError::BadSignature
        );
        // Signed by another key than the embedded one (for RSA: the embedded
        // one is swapped, as tests can sign with only one RSA key).
        let forged = match key {
            TestKey::Rs(_) => {
                let mut h = header(&key);
                h["jwk"] = offline()["rsa2048_other"]["jwk"].clone();
                proof(&key, &h, &claims())
            }
            TestKey::Es384(_) => proof(&TestKey::p384(), &header(&key), &claims()),
            _ => proof(&TestKey::p256(), &header(&key), &claims()),
        };
        assert_eq!(
            validate_dpop(&forged, &expect_get()).unwrap_err(),
            JoseError::BadSignature,
            "{}",
            key.alg()
        );
    }
}

#[test]
fn method_refusals() {
    let key = TestKey::ed25519(14);
    for htm in ["POST", "get", "Get", "GET ", "HEAD"] {
        assert_eq!(
            with_claims(&key, |c| c["htm"] = htm.into()),
            Err(JoseError::MethodMismatch),
            "{htm}"
        );
    }
    assert_eq!(
        with_claims(&key, |c| c["htm"] = "".into()),
        Err(JoseError::InvalidClaim("htm"))
    );
    // The expectation's own method must be a token.
    for bad in ["", "GE T", "GET\n", &"G".repeat(33)] {
        assert_eq!(
            DpopExpectation::new(bad, URL, NOW).unwrap_err(),
            JoseError::InvalidMethod
        );
    }
}

#[test]
fn uri_refusals_and_normalization() {
    let key = TestKey::ed25519(15);
    for htu in [
        "https://medvault.example/fhir/Patient/124",
        "https://medvault.example/fhir/Patient",
        "https://medvault.example/fhir/Patient/123/",
        "https://medvault.example/fhir/patient/123",
        "https://other.example/fhir/Patient/123",
        "https://medvault.example.evil/fhir/Patient/123",
        "http://medvault.example/fhir/Patient/123",
        "https://medvault.example:8443/fhir/Patient/123",
        "https://medvault.example:80/fhir/Patient/123",
    ] {
        assert_eq!(
            with_claims(&key, |c| c["htu"] = htu.into()),
            Err(JoseError::UriMismatch),
            "{htu}"
        );
    }
    // Query and fragment ignored; scheme/host case, default port and
    // percent-encoding normalized (RFC 9449 §4.3, RFC 3986 §6.2.2-6.2.3).
    for htu in [
        "https://medvault.example/fhir/Patient/123?_format=json",
        "https://medvault.example/fhir/Patient/123#frag",
        "HTTPS://MedVault.Example/fhir/Patient/123",
        "https://medvault.example:443/fhir/Patient/123",
        "https://medvault.example/fhir/%50atient/123",
        "https://medvault.example/fhir/x/../Patient/123",
    ] {
        assert_eq!(
            with_claims(&key, |c| c["htu"] = htu.into()),
            Ok(()),
            "{htu}"
        );
    }
    // The request URL side is normalized the same way.
    let c = claims();
    let p = proof(&key, &header(&key), &c);
    for url in [
        "https://medvault.example:443/fhir/Patient/123?page=2",
        "https://MEDVAULT.example/fhir/Patient/123",
    ] {
        let e = DpopExpectation::new("GET", url, NOW).unwrap();
        assert!(validate_dpop(&p, &e).is_ok(), "{url}");
    }
    let plain_http =
        DpopExpectation::new("GET", "http://medvault.example:80/fhir/Patient/123", NOW).unwrap();
    let mut c = claims();
    c["htu"] = "http://medvault.example/fhir/Patient/123".into();
    assert!(validate_dpop(&proof(&key, &header(&key), &c), &plain_http).is_ok());

    // Unparseable htu.
    for htu in [
        "/fhir/Patient/123",
        "medvault.example/fhir",
        "ftp://medvault.example/x",
        "https://u@medvault.example/fhir/Patient/123",
    ] {
        assert_eq!(
            with_claims(&key, |c| c["htu"] = htu.into()),
            Err(JoseError::InvalidClaim("htu")),
            "{htu}"
        );
    }
    assert_eq!(
        DpopExpectation::new("GET", "not a url", NOW).unwrap_err(),
        JoseError::InvalidUrl("invalid character")
    );
}

#[test]
fn iat_window() {
    let key = TestKey::ed25519(16);
    assert_eq!(with_claims(&key, |c| c["iat"] = (NOW - 60).into()), Ok(()));
    assert_eq!(
        with_claims(&key, |c| c["iat"] = (NOW - 61).into()),
        Err(JoseError::ProofTooOld)
    );
    assert_eq!(
        with_claims(&key, |c| c["iat"] = 0.into()),
        Err(JoseError::ProofTooOld)
    );
    assert_eq!(with_claims(&key, |c| c["iat"] = (NOW + 5).into()), Ok(()));
    assert_eq!(
        with_claims(&key, |c| c["iat"] = (NOW + 6).into()),
        Err(JoseError::IssuedInFuture)
    );
    assert_eq!(
        with_claims(&key, |c| c["iat"] = u64::MAX.into()),
        Err(JoseError::IssuedInFuture)
    );
    for bad in [json!("1700000000"), json!(1.7e9), json!(-5), json!(null)] {
        assert_eq!(
            with_claims(&key, |c| c["iat"] = bad.clone()),
            Err(JoseError::InvalidClaim("iat")),
            "{bad}"
        );
    }
    // A custom window.
    let p = proof(&key, &header(&key), &claims());
    let narrow = expect_get().with_iat_window(10, 0).unwrap();
    assert!(validate_dpop(&p, &narrow).is_ok());
    let later = DpopExpectation::new("GET", URL, NOW + 11)
        .unwrap()
        .with_iat_window(10, 0)
        .unwrap();
    assert_eq!(
        validate_dpop(&p, &later).unwrap_err(),
        JoseError::ProofTooOld
    );
    let earlier = DpopExpectation::new("GET", URL, NOW - 1)
        .unwrap()
        .with_iat_window(10, 0)
        .unwrap();
    assert_eq!(
        validate_dpop(&p, &earlier).unwrap_err(),
        JoseError::IssuedInFuture
    );
    assert_eq!(
        expect_get().with_iat_window(301, 0).unwrap_err(),
        JoseError::InvalidParameter("iat window")
    );
}

#[test]
fn required_claims() {
    let key = TestKey::ed25519(17);
    for name in ["jti", "htm", "htu", "iat"] {
        assert_eq!(
            with_claims(&key, |c| {
                c.as_object_mut().unwrap().remove(name);
            }),
            Err(JoseError::MissingClaim(name)),
            "{name}"
        );
    }
    assert_eq!(
        with_claims(&key, |c| c["jti"] = "".into()),
        Err(JoseError::InvalidClaim("jti"))
    );
    assert_eq!(
        with_claims(&key, |c| c["jti"] = 7.into()),
        Err(JoseError::InvalidClaim("jti"))
    );
    assert_eq!(
        with_claims(&key, |c| c["jti"] = "j".repeat(MAX_DPOP_JTI_LEN).into()),
        Ok(())
    );
    assert_eq!(
        with_claims(&key, |c| c["jti"] = "j".repeat(MAX_DPOP_JTI_LEN + 1).into()),
        Err(JoseError::InvalidClaim("jti"))
    );
    let p = compact(&header(&key), &json!(["GET", URL]), &key);
    assert_eq!(
        validate_dpop(&p, &expect_get()).unwrap_err(),
        JoseError::JsonShape("payload")
    );
}

#[test]
fn access_token_hash_binding() {
    let key = TestKey::ed25519(18);
    let expected = expect_get().with_access_token(TOKEN);
    let check = |ath: Option<Value>| {
        let mut c = claims();
        if let Some(ath) = ath {
            c["ath"] = ath;
        }
        validate_dpop(&proof(&key, &header(&key), &c), &expected).map(|_| ())
    };
    assert_eq!(check(Some(access_token_hash(TOKEN).into())), Ok(()));
    assert_eq!(check(None), Err(JoseError::MissingAth));
    assert_eq!(
        check(Some(access_token_hash("another-token").into())),
        Err(JoseError::AthMismatch)
    );
    assert_eq!(
        check(Some(b64(&[0; 32]).into())),
        Err(JoseError::AthMismatch)
    );
    assert_eq!(
        check(Some(format!("{}=", access_token_hash(TOKEN)).into())),
        Err(JoseError::InvalidClaim("ath"))
    );
    assert_eq!(
        check(Some(b64(b"short").into())),
        Err(JoseError::InvalidClaim("ath"))
    );
    assert_eq!(check(Some(json!(1))), Err(JoseError::InvalidClaim("ath")));
    // Without a presented token (e.g. at the token endpoint) ath is not consulted.
    let mut c = claims();
    c["ath"] = access_token_hash("whatever").into();
    assert!(validate_dpop(&proof(&key, &header(&key), &c), &expect_get()).is_ok());
}

#[test]
fn thumbprint_binding() {
    let key = TestKey::p256();
    let p = proof(&key, &header(&key), &claims());
    let bound = expect_get().with_jkt(key.public().thumbprint());
    assert!(validate_dpop(&p, &bound).is_ok());
    let other = expect_get().with_jkt(TestKey::p256().public().thumbprint());
    assert_eq!(
        validate_dpop(&p, &other).unwrap_err(),
        JoseError::ThumbprintMismatch
    );
    let rfc = JwkThumbprint::parse("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I").unwrap();
    assert_eq!(
        validate_dpop(&p, &expect_get().with_jkt(rfc)).unwrap_err(),
        JoseError::ThumbprintMismatch
    );
}

#[test]
fn nonce() {
    let key = TestKey::ed25519(19);
    let expected = expect_get().with_nonce("n-1").unwrap();
    let check = |nonce: Option<Value>| {
        let mut c = claims();
        if let Some(n) = nonce {
            c["nonce"] = n;
        }
        validate_dpop(&proof(&key, &header(&key), &c), &expected).map(|_| ())
    };
    assert_eq!(check(Some("n-1".into())), Ok(()));
    assert_eq!(check(None), Err(JoseError::MissingNonce));
    assert_eq!(check(Some("n-2".into())), Err(JoseError::NonceMismatch));
    assert_eq!(check(Some("n-1 ".into())), Err(JoseError::NonceMismatch));
    assert_eq!(check(Some(json!(1))), Err(JoseError::InvalidClaim("nonce")));
    // A nonce in the proof is harmless when none is required.
    assert_eq!(with_claims(&key, |c| c["nonce"] = "n-1".into()), Ok(()));
    for bad in ["", "a\"b", "a\\b", "a b", "\u{e9}"] {
        assert_eq!(
            expect_get().with_nonce(bad).unwrap_err(),
            JoseError::InvalidParameter("nonce"),
            "{bad:?}"
        );
    }
}

#[test]
fn size_and_encoding_refusals() {
    let key = TestKey::ed25519(20);
    let mut c = claims();
    c["pad"] = "x".repeat(MAX_TOKEN_LEN).into();
    assert_eq!(
        validate_dpop(&proof(&key, &header(&key), &c), &expect_get()).unwrap_err(),
        JoseError::TooLarge
    );
    let good = proof(&key, &header(&key), &claims());
    let padded = with_part(&good, 0, &format!("{}=", part(&good, 0)));
    assert_eq!(
        validate_dpop(&padded, &expect_get()).unwrap_err(),
        JoseError::Base64("header")
    );
    let bad_char = with_part(&good, 1, &format!("{}!", part(&good, 1)));
    assert_eq!(
        validate_dpop(&bad_char, &expect_get()).unwrap_err(),
        JoseError::Base64("payload")
    );
    assert_eq!(
        validate_dpop(&format!("{good}.x"), &expect_get()).unwrap_err(),
        JoseError::Malformed("expected three parts")
    );
}
