//! JWK parsing and RFC 7638 thumbprints, and compact JWS verification.

use medvault_crypto::jose::jwk::{MAX_RSA_BITS, MIN_RSA_BITS};
use medvault_crypto::jose::{
    verify_jws, Alg, JoseError, JwkThumbprint, PublicJwk, TokenSigner, MAX_JWK_LEN, MAX_TOKEN_LEN,
};
use medvault_crypto::keys::sha256;
use medvault_crypto::SecretKey;
use ring::signature::{
    EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING,
};
use serde_json::{json, Value};

use super::{
    b64, compact, compact_raw, flip_signature_byte, offline, part, unb64, with_part, TestKey,
};

/// RFC 7515 Appendix A.3: an ES256 JWS and its P-256 public key.
const RFC7515_A3_JWS: &str = concat!(
    "eyJhbGciOiJFUzI1NiJ9",
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ",
    ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q",
);
const RFC7515_A3_JWK: &str = r#"{"kty":"EC","crv":"P-256",
  "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
  "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

/// RFC 8037 Appendix A.1/A.4: an Ed25519 private key and a JWS it made over
/// the (non-JSON) payload "Example of Ed25519 signing".
const RFC8037_D: &str = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A";
const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const RFC8037_A4_JWS: &str = concat!(
    "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc",
    ".hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg",
);

fn jwk(text: &str) -> Result<PublicJwk, JoseError> {
    PublicJwk::from_json_str(text)
}

fn tp(text: &str) -> String {
    jwk(text).unwrap().thumbprint().as_str().to_owned()
}

/// The RSA key of RFC 7638 §3.1 (2048 bits, e = 65537).
const RFC7638_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";

#[test]
fn rfc7638_thumbprint_known_answers() {
    // RFC 7638 §3.1: the RSA example and its published thumbprint. The RFC's
    // JWK says "alg":"RS256", which this module does not implement, so that
    // exact JWK is refused; without it (or as RS384) the key is accepted.
    let rfc =
        json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"});
    assert_eq!(
        jwk(&rfc.to_string()).unwrap_err(),
        JoseError::InvalidKey("alg")
    );
    let expected = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
    let mut unlabelled = rfc.clone();
    unlabelled.as_object_mut().unwrap().remove("alg");
    assert_eq!(tp(&unlabelled.to_string()), expected);
    let mut rs384 = rfc.clone();
    rs384["alg"] = "RS384".into();
    let key = jwk(&rs384.to_string()).unwrap();
    assert_eq!(key.alg(), Alg::Rs384);
    assert_eq!(key.thumbprint().as_str(), expected);
    // The same key built from its components, and the rule spelled out:
    // SHA-256 of the required members, sorted, no whitespace, base64url unpadded.
    assert_eq!(PublicJwk::rsa(&unb64(RFC7638_N), &[1, 0, 1]).unwrap(), key);
    let canonical = format!(r#"{{"e":"AQAB","kty":"RSA","n":"{RFC7638_N}"}}"#);
    assert_eq!(b64(&sha256(canonical.as_bytes())), expected);
    assert_eq!(
        key.to_json_value(),
        json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB"})
    );

    // RSA and P-384 keys made by Python's `cryptography`, thumbprints computed
    // there with json.dumps(sort_keys=True, separators=(",", ":")) + SHA-256.
    let offline = offline();
    for name in ["rsa2048", "rsa8192", "p384"] {
        let fixture = &offline[name];
        let key = PublicJwk::from_json_value(&fixture["jwk"]).unwrap();
        assert_eq!(key.thumbprint().as_str(), fixture["jkt"], "{name}");
        assert_eq!(key.to_json_value(), fixture["jwk"], "{name}");
        assert_eq!(
            tp(&fixture["jwk"].to_string()),
            fixture["jkt"].as_str().unwrap()
        );
    }

    // EC: the RFC 7517 Appendix A.1 P-256 key. Expected value computed
    // independently in Python:
    //   json.dumps({"kty":"EC","crv":"P-256","x":X,"y":Y}, sort_keys=True,
    //              separators=(",", ":")) -> hashlib.sha256 -> urlsafe_b64encode
    //   with "=" stripped
    // (the same script reproduces the RFC 7638 RSA value above and the two
    // published values below).
    let ec = r#"{"kty":"EC","crv":"P-256",
        "x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
        "y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","use":"enc"}"#;
    // (RFC 7517 marks that key "use":"enc", which a signature key must not be.)
    assert_eq!(jwk(ec).unwrap_err(), JoseError::InvalidKey("use"));
    let ec = ec.replace(r#""use":"enc""#, r#""use":"sig","kid":"1""#);
    assert_eq!(tp(&ec), "cn-I_WNMClehiVp51i_0VpOENW1upEerA8sEam5hn-s");

    // RFC 9449 §6.1 publishes the jkt of its §4.1 example key (member order as in the RFC).
    assert_eq!(
        tp(
            r#"{"kty":"EC","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
               "y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA","crv":"P-256"}"#
        ),
        "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    );

    // RFC 8037 Appendix A.3 publishes the thumbprint of its Ed25519 key.
    let okp = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{RFC8037_X}"}}"#);
    assert_eq!(tp(&okp), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");

    // Member order, whitespace and optional members never change a thumbprint.
    let reordered = format!(
        r#"{{ "x" : "{RFC8037_X}", "alg":"EdDSA", "kid":"k", "key_ops":["verify"], "crv":"Ed25519", "kty":"OKP" }}"#
    );
    assert_eq!(tp(&reordered), tp(&okp));
    // And the thumbprint equals that of the JWK the library re-serializes.
    let key = jwk(&okp).unwrap();
    assert_eq!(
        PublicJwk::from_json_value(&key.to_json_value()).unwrap(),
        key
    );
    assert!(format!("{key:?}").contains("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"));
}

#[test]
fn rfc7515_a3_es256_known_answer() {
    let key = jwk(RFC7515_A3_JWK).unwrap();
    assert_eq!(key.alg(), Alg::Es256);
    let (header, payload) = verify_jws(RFC7515_A3_JWS, &key, &Alg::ALL).unwrap();
    assert_eq!(header.alg(), Alg::Es256);
    assert_eq!(header.typ(), None);
    assert_eq!(payload["iss"], "joe");
    assert_eq!(payload["exp"], 1_300_819_380);
    assert_eq!(payload["http://example.com/is_root"], true);

    assert_eq!(
        verify_jws(&flip_signature_byte(RFC7515_A3_JWS, 10), &key, &Alg::ALL).unwrap_err(),
        JoseError::BadSignature
    );
    assert_eq!(
        verify_jws(RFC7515_A3_JWS, &key, &[Alg::EdDsa]).unwrap_err(),
        JoseError::AlgorithmNotAllowed
    );
}

#[test]
fn rfc8037_eddsa_known_answers() {
    // A.1 private key -> A.2 public key, via the library's signer.
    let seed = SecretKey::from_slice(&unb64(RFC8037_D)).unwrap();
    let signer = TokenSigner::new(&seed);
    let x: [u8; 32] = unb64(RFC8037_X).try_into().unwrap();
    assert_eq!(signer.public_jwk(), &PublicJwk::ed25519(x));
    assert_eq!(signer.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");

    // A.4: the signature verifies; the payload is a sentence, not JSON, which
    // is only parsed (and refused) after the signature check succeeded.
    let key = PublicJwk::ed25519(x);
    assert_eq!(
        verify_jws(RFC8037_A4_JWS, &key, &Alg::ALL).unwrap_err(),
        JoseError::Json("payload")
    );
    for i in [0, 31, 32, 63] {
        assert_eq!(
            verify_jws(&flip_signature_byte(RFC8037_A4_JWS, i), &key, &Alg::ALL).unwrap_err(),
            JoseError::BadSignature,
            "byte {i}"
        );
    }
}

#[test]
fn offline_rs384_and_es384_known_answers() {
    // JWTs signed by another implementation (Python `cryptography`), incl. an
    // 8192-bit RSA key, the largest accepted.
    let offline = offline();
    for (name, alg) in [
        ("rsa2048", Alg::Rs384),
        ("rsa8192", Alg::Rs384),
        ("p384", Alg::Es384),
    ] {
        let key = PublicJwk::from_json_value(&offline[name]["jwk"]).unwrap();
        assert_eq!(key.alg(), alg);
        let token = offline[name]["assertion"].as_str().unwrap();
        let (header, payload) = verify_jws(token, &key, &Alg::ALL).unwrap();
        assert_eq!(header.alg(), alg);
        assert_eq!(header.kid(), Some("client-key-1"));
        assert_eq!(payload["iss"], "backend-service-1");
        assert_eq!(
            verify_jws(token, &key, &[Alg::Es256, Alg::EdDsa]).unwrap_err(),
            JoseError::AlgorithmNotAllowed
        );
        let len = unb64(part(token, 2)).len();
        for i in [0, len / 2, len - 1] {
            assert_eq!(
                verify_jws(&flip_signature_byte(token, i), &key, &Alg::ALL).unwrap_err(),
                JoseError::BadSignature,
                "{name} byte {i}"
            );
        }
    }
    // The TEST-ONLY key is the one Python wrote the public JWK of, and since
    // RSASSA-PKCS1-v1_5 is deterministic, ring signs exactly as Python did.
    let rsa = TestKey::rsa();
    assert_eq!(rsa.jwk(), offline["rsa2048"]["jwk"]);
    let token = offline["rsa2048"]["assertion"].as_str().unwrap();
    let (input, signature) = token.rsplit_once('.').unwrap();
    assert_eq!(b64(&rsa.sign(input.as_bytes())), signature);
}

#[test]
fn round_trip_every_key_type() {
    for key in TestKey::one_of_each(1) {
        let claims = json!({"sub": "user-1", "n": [1, 2, {"deep": null}]});
        let token = compact(
            &json!({"alg": key.alg(), "typ": "JWT", "kid": "k1"}),
            &claims,
            &key,
        );
        let (header, payload) = verify_jws(&token, &key.public(), &Alg::ALL).unwrap();
        assert_eq!(header.alg().as_str(), key.alg());
        assert_eq!(header.typ(), Some("JWT"));
        assert!(header.typ_is("jwt"));
        assert_eq!(header.kid(), Some("k1"));
        assert!(header.jwk().is_none());
        assert_eq!(payload, claims);
        // Only the key's own algorithm is accepted, even if the list allows more.
        assert_eq!(
            verify_jws(&token, &key.public(), &[key.public().alg()])
                .unwrap()
                .1,
            claims
        );
    }
}

#[test]
fn algorithm_refusals() {
    let ed = TestKey::ed25519(2);
    let es = TestKey::p256();
    let payload = json!({"sub": "x"});
    let check = |header: Value, signer: &TestKey, verifier: &PublicJwk| {
        verify_jws(&compact(&header, &payload, signer), verifier, &Alg::ALL).unwrap_err()
    };

    // alg none: refused whatever the signature part holds.
    assert_eq!(
        check(json!({"alg": "none"}), &ed, &ed.public()),
        JoseError::UnsupportedAlgorithm
    );
    let unsecured = format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(payload.to_string().as_bytes())
    );
    assert_eq!(
        verify_jws(&unsecured, &ed.public(), &Alg::ALL).unwrap_err(),
        JoseError::Malformed("empty part")
    );
    for name in [
        "None", "NONE", "HS256", "HS384", "HS512", "RS256", "RS512", "PS256", "PS384", "ES512",
        "ES256K", "Ed25519", "rs384", "Es384",
    ] {
        assert_eq!(
            check(json!({"alg": name}), &ed, &ed.public()),
            JoseError::UnsupportedAlgorithm,
            "{name}"
        );
    }
    // The classic confusion attack: HMAC keyed with the public key's bytes.
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256"}"#),
        b64(payload.to_string().as_bytes())
    );
    let hmac_key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        ed.jwk()["x"].as_str().unwrap().as_bytes(),
    );
    let tag = ring::hmac::sign(&hmac_key, input.as_bytes());
    let forged = format!("{input}.{}", b64(tag.as_ref()));
    assert_eq!(
        verify_jws(&forged, &ed.public(), &Alg::ALL).unwrap_err(),
        JoseError::UnsupportedAlgorithm
    );

    assert_eq!(
        check(json!({}), &ed, &ed.public()),
        JoseError::InvalidHeader("alg")
    );
    assert_eq!(
        check(json!({"alg": ["EdDSA"]}), &ed, &ed.public()),
        JoseError::InvalidHeader("alg")
    );
    // alg that does not fit the key, in both directions.
    assert_eq!(
        check(json!({"alg": "ES256"}), &ed, &ed.public()),
        JoseError::AlgorithmKeyMismatch
    );
    assert_eq!(
        check(json!({"alg": "ES256"}), &es, &ed.public()),
        JoseError::AlgorithmKeyMismatch
    );
    assert_eq!(
        check(json!({"alg": "EdDSA"}), &ed, &es.public()),
        JoseError::AlgorithmKeyMismatch
    );
    // The same for the SHA-384 algorithms: each key type verifies exactly one
    // alg, whatever the signature's length says.
    let es384 = TestKey::p384();
    let rs = TestKey::rsa();
    for (signer, verifier) in [
        (&es384, &es),
        (&es, &es384),
        (&es384, &ed),
        (&es384, &rs),
        (&rs, &es384),
        (&rs, &es),
        (&rs, &ed),
        (&ed, &rs),
        (&es, &rs),
    ] {
        assert_eq!(
            check(json!({"alg": signer.alg()}), signer, &verifier.public()),
            JoseError::AlgorithmKeyMismatch,
            "{} token, {} key",
            signer.alg(),
            verifier.alg()
        );
    }
    // A header claiming an alg whose signatures cannot have this length.
    for (alg, signer, verifier) in [
        ("ES384", &es, &es384),
        ("ES256", &es384, &es),
        ("RS384", &es, &rs),
        ("RS384", &es384, &rs),
        ("EdDSA", &rs, &ed),
    ] {
        assert_eq!(
            check(json!({"alg": alg}), signer, &verifier.public()),
            JoseError::Malformed("signature length"),
            "{alg} header, {} signature",
            signer.alg()
        );
    }
    // RSA with another hash is not RS384, even with a real RSA signature.
    assert_eq!(
        check(json!({"alg": "RS256"}), &rs, &rs.public()),
        JoseError::UnsupportedAlgorithm
    );
    // Allowed list.
    let token = compact(&json!({"alg": "EdDSA"}), &payload, &ed);
    assert_eq!(
        verify_jws(&token, &ed.public(), &[Alg::Es256]).unwrap_err(),
        JoseError::AlgorithmNotAllowed
    );
    assert_eq!(
        verify_jws(&token, &ed.public(), &[]).unwrap_err(),
        JoseError::AlgorithmNotAllowed
    );
    // Critical extensions and unencoded payloads.
    assert_eq!(
        check(
            json!({"alg": "EdDSA", "crit": ["exp"], "exp": 1}),
            &ed,
            &ed.public()
        ),
        JoseError::UnsupportedCritical
    );
    assert_eq!(
        check(json!({"alg": "EdDSA", "b64": false}), &ed, &ed.public()),
        JoseError::InvalidHeader("b64")
    );
    // Malformed optional header members.
    assert_eq!(
        check(json!({"alg": "EdDSA", "typ": 1}), &ed, &ed.public()),
        JoseError::InvalidHeader("typ")
    );
    assert_eq!(
        check(json!({"alg": "EdDSA", "kid": ""}), &ed, &ed.public()),
        JoseError::InvalidHeader("kid")
    );
    assert_eq!(
        check(json!({"alg": "EdDSA", "jwk": "x"}), &ed, &ed.public()),
        JoseError::JsonShape("jwk")
    );
}

#[test]
fn signature_refusals() {
    for key in TestKey::one_of_each(3) {
        let header = json!({"alg": key.alg()});
        let token = compact(&header, &json!({"sub": "a"}), &key);
        let public = key.public();
        assert!(verify_jws(&token, &public, &Alg::ALL).is_ok());

        // Wrong key of the same type.
        let other = match key {
            TestKey::Ed(_) => TestKey::ed25519(4).public(),
            TestKey::Es(_) => TestKey::p256().public(),
            TestKey::Es384(_) => TestKey::p384().public(),
            TestKey::Rs(_) => {
                PublicJwk::from_json_value(&offline()["rsa2048_other"]["jwk"]).unwrap()
            }
        };
        assert_eq!(
            verify_jws(&token, &other, &Alg::ALL).unwrap_err(),
            JoseError::BadSignature
        );
        // Any signature byte flipped.
        let len = key.signature_len();
        assert_eq!(unb64(part(&token, 2)).len(), len);
        for i in 0..len {
            assert_eq!(
                verify_jws(&flip_signature_byte(&token, i), &public, &Alg::ALL).unwrap_err(),
                JoseError::BadSignature,
                "byte {i}"
            );
        }
        // Payload or header changed under the same signature.
        let changed = with_part(&token, 1, &b64(br#"{"sub":"b"}"#));
        assert_eq!(
            verify_jws(&changed, &public, &Alg::ALL).unwrap_err(),
            JoseError::BadSignature
        );
        let mut header2 = header.clone();
        header2["kid"] = "x".into();
        let changed = with_part(&token, 0, &b64(header2.to_string().as_bytes()));
        assert_eq!(
            verify_jws(&changed, &public, &Alg::ALL).unwrap_err(),
            JoseError::BadSignature
        );
        // Signatures of the wrong length: refused while parsing, except an
        // RSA signature of a length some other modulus could have.
        let sig = unb64(part(&token, 2));
        let longer = [sig.as_slice(), &[0]].concat();
        for bad in [&sig[..len - 1], &longer[..], &[][..]] {
            let err = verify_jws(&with_part(&token, 2, &b64(bad)), &public, &Alg::ALL).unwrap_err();
            if matches!(key, TestKey::Rs(_)) && bad.len() > len {
                assert_eq!(err, JoseError::BadSignature);
            } else {
                assert!(matches!(err, JoseError::Malformed(_)), "{err:?}");
            }
        }
    }

    // RSA: a signature as long as an 8192-bit key's is refused by a 2048-bit
    // key; longer ones than any key's, or not below the modulus, too.
    let rs = TestKey::rsa();
    let token = compact(&json!({"alg": "RS384"}), &json!({"sub": "a"}), &rs);
    for (bad, err) in [
        (vec![1; MAX_RSA_BITS / 8], JoseError::BadSignature),
        (
            vec![1; MAX_RSA_BITS / 8 + 1],
            JoseError::Malformed("signature length"),
        ),
        (
            vec![1; MIN_RSA_BITS / 8 - 1],
            JoseError::Malformed("signature length"),
        ),
        (vec![0xff; 256], JoseError::BadSignature),
        (vec![0; 256], JoseError::BadSignature),
    ] {
        assert_eq!(
            verify_jws(&with_part(&token, 2, &b64(&bad)), &rs.public(), &Alg::ALL).unwrap_err(),
            err,
            "{} bytes",
            bad.len()
        );
    }

    // ES256 must use the fixed r||s form: a DER (ASN.1) signature is refused.
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let der_key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = ring::signature::KeyPair::public_key(&der_key)
        .as_ref()
        .to_vec();
    let public = PublicJwk::p256(
        point[1..33].try_into().unwrap(),
        point[33..].try_into().unwrap(),
    );
    let input = format!("{}.{}", b64(br#"{"alg":"ES256"}"#), b64(b"{}"));
    let der = der_key.sign(&rng, input.as_bytes()).unwrap();
    assert_ne!(der.as_ref().len(), 64);
    assert_eq!(
        verify_jws(
            &format!("{input}.{}", b64(der.as_ref())),
            &public,
            &Alg::ALL
        )
        .unwrap_err(),
        JoseError::Malformed("signature length")
    );

    // The same for ES384: DER signatures are never 96 bytes.
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &rng).unwrap();
    let der_key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let point = ring::signature::KeyPair::public_key(&der_key)
        .as_ref()
        .to_vec();
    let public = PublicJwk::p384(
        point[1..49].try_into().unwrap(),
        point[49..].try_into().unwrap(),
    );
    let input = format!("{}.{}", b64(br#"{"alg":"ES384"}"#), b64(b"{}"));
    let der = der_key.sign(&rng, input.as_bytes()).unwrap();
    assert_ne!(der.as_ref().len(), 96);
    assert_eq!(
        verify_jws(
            &format!("{input}.{}", b64(der.as_ref())),
            &public,
            &Alg::ALL
        )
        .unwrap_err(),
        JoseError::Malformed("signature length")
    );

    // A P-256 or P-384 "key" that is not a point on the curve never verifies.
    let token = compact_raw(r#"{"alg":"ES256"}"#, "{}", &TestKey::p256());
    assert_eq!(
        verify_jws(&token, &PublicJwk::p256([1; 32], [2; 32]), &Alg::ALL).unwrap_err(),
        JoseError::BadSignature
    );
    let token = compact_raw(r#"{"alg":"ES384"}"#, "{}", &TestKey::p384());
    assert_eq!(
        verify_jws(&token, &PublicJwk::p384([1; 48], [2; 48]), &Alg::ALL).unwrap_err(),
        JoseError::BadSignature
    );
    // Nor does an RSA "modulus" that has the right form but is not the signer's.
    let token = compact_raw(r#"{"alg":"RS384"}"#, "{}", &TestKey::rsa());
    assert_eq!(
        verify_jws(
            &token,
            &PublicJwk::rsa(&modulus(2048), &[1, 0, 1]).unwrap(),
            &Alg::ALL
        )
        .unwrap_err(),
        JoseError::BadSignature
    );
}

/// An odd number of exactly `bits` bits, big-endian without leading zeros:
/// the form of an RSA modulus (not a real one).
fn modulus(bits: usize) -> Vec<u8> {
    let len = bits.div_ceil(8);
    let mut n = vec![0x5a; len];
    n[0] = 0xff >> (len * 8 - bits);
    n[len - 1] |= 1;
    n
}

#[test]
fn encoding_and_structure_refusals() {
    let key = TestKey::ed25519(5);
    let public = key.public();
    let token = compact_raw(r#"{"alg":"EdDSA"}"#, r#"{"sub":"a"}"#, &key);
    let verify = |t: &str| verify_jws(t, &public, &Alg::ALL);
    assert!(verify(&token).is_ok());

    // Padding, standard-alphabet characters, whitespace, stray bits.
    for (i, what) in [(0, "header"), (1, "payload"), (2, "signature")] {
        let p = part(&token, i);
        for bad in [
            format!("{p}="),
            format!("{p}=="),
            format!("+{}", &p[1..]),
            format!("/{}", &p[1..]),
            format!(" {p}"),
            format!("{p}\n"),
            format!("{}*{}", &p[..2], &p[3..]),
            format!("{}\u{e9}", &p[..p.len() - 1]),
        ] {
            assert_eq!(
                verify(&with_part(&token, i, &bad)).unwrap_err(),
                JoseError::Base64(what),
                "{what}: {bad:?}"
            );
        }
    }
    // Non-canonical last character: same bytes under a lenient decoder, refused here.
    let sig = part(&token, 2);
    let last = sig.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(last).unwrap();
    assert_eq!(
        idx & 0b1111,
        0,
        "64 bytes leave 4 zero bits in the last character"
    );
    let stray = alphabet.as_bytes()[idx | 1] as char;
    let bad = with_part(&token, 2, &format!("{}{stray}", &sig[..sig.len() - 1]));
    assert_eq!(verify(&bad).unwrap_err(), JoseError::Base64("signature"));

    // Part count and empty parts.
    let (h, p, s) = (part(&token, 0), part(&token, 1), part(&token, 2));
    for bad in [
        String::new(),
        ".".into(),
        "..".into(),
        "...".into(),
        format!("{h}.{p}"),
        format!("{h}.{p}.{s}."),
        format!("{h}.{p}.{s}.{s}"),
        format!("{h}..{s}"),
        format!(".{p}.{s}"),
        format!("{h}.{p}."),
        h.to_owned(),
    ] {
        assert!(
            matches!(verify(&bad).unwrap_err(), JoseError::Malformed(_)),
            "{bad:?}"
        );
    }

    // Header JSON problems, each reported before any signature work.
    let header_case = |header: &str| verify(&with_part(&token, 0, &b64(header.as_bytes())));
    assert_eq!(
        header_case("not json").unwrap_err(),
        JoseError::Json("header")
    );
    assert_eq!(
        header_case(r#"{"alg":"EdDSA"} x"#).unwrap_err(),
        JoseError::Json("header")
    );
    assert_eq!(
        header_case(r#"["EdDSA"]"#).unwrap_err(),
        JoseError::JsonShape("header")
    );
    assert_eq!(
        header_case(r#"{"alg":"EdDSA","alg":"none"}"#).unwrap_err(),
        JoseError::JsonDuplicateMember("header")
    );
    assert_eq!(
        header_case(r#"{"alg":"EdDSA","x":[[[[[1]]]]]}"#).unwrap_err(),
        JoseError::JsonTooDeep("header")
    );
    // Payload JSON problems, reported after the signature verified.
    let signed = |payload: &str| verify(&compact_raw(r#"{"alg":"EdDSA"}"#, payload, &key));
    assert_eq!(signed("{").unwrap_err(), JoseError::Json("payload"));
    assert_eq!(
        signed(r#"{"a":1,"a":2}"#).unwrap_err(),
        JoseError::JsonDuplicateMember("payload")
    );
    assert_eq!(
        signed(r#"{"a":[[[[[1]]]]]}"#).unwrap_err(),
        JoseError::JsonTooDeep("payload")
    );
    // MAX_JSON_DEPTH (5) levels are fine.
    assert!(signed(r#"{"a":[[[[1]]]]}"#).is_ok());
    // Any JSON type is a valid JWS payload; JWT layers require objects.
    assert_eq!(signed("[1]").unwrap().1, json!([1]));
}

#[test]
fn size_limit() {
    let key = TestKey::ed25519(6);
    let token_with = |filler: usize| {
        compact(
            &json!({"alg": "EdDSA"}),
            &json!({"f": "a".repeat(filler)}),
            &key,
        )
    };
    // The largest filler that still fits, found by search; one more character tips it over.
    let fits = (5_000..7_000)
        .rev()
        .find(|&n| token_with(n).len() <= MAX_TOKEN_LEN)
        .unwrap();
    let largest = token_with(fits);
    assert!(largest.len() > MAX_TOKEN_LEN - 4);
    assert!(verify_jws(&largest, &key.public(), &Alg::ALL).is_ok());
    let too_big = token_with(fits + 1);
    assert!(too_big.len() > MAX_TOKEN_LEN);
    assert_eq!(
        verify_jws(&too_big, &key.public(), &Alg::ALL).unwrap_err(),
        JoseError::TooLarge
    );
    assert_eq!(
        verify_jws(&"a".repeat(1 << 20), &key.public(), &Alg::ALL).unwrap_err(),
        JoseError::TooLarge
    );
}

#[test]
fn jwk_parsing_refusals() {
    let x = b64(&[9; 32]);
    let x48 = b64(&[9; 48]);
    let ok = [
        json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
        json!({"kty": "EC", "crv": "P-256", "x": x, "y": x}),
        json!({"kty": "EC", "crv": "P-256", "x": x, "y": x, "alg": "ES256", "use": "sig", "key_ops": ["verify"], "kid": "a", "ext": true}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA"}),
        json!({"kty": "EC", "crv": "P-384", "x": x48, "y": x48}),
        json!({"kty": "EC", "crv": "P-384", "x": x48, "y": x48, "alg": "ES384", "use": "sig"}),
        json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB"}),
        json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS384", "use": "sig", "key_ops": ["verify"], "kid": "r"}),
    ];
    for v in ok {
        assert!(jwk(&v.to_string()).is_ok(), "{v}");
    }
    let cases: Vec<(Value, JoseError)> = vec![
        // Private parts are refused outright, before anything else.
        (
            json!({"kty": "EC", "crv": "P-256", "x": x, "y": x, "d": x}),
            JoseError::PrivateKeyMaterial,
        ),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": x, "d": x}),
            JoseError::PrivateKeyMaterial,
        ),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": x, "d": null}),
            JoseError::PrivateKeyMaterial,
        ),
        (json!({"kty": "oct", "k": x}), JoseError::PrivateKeyMaterial),
        (
            json!({"kty": "RSA", "n": x, "e": "AQAB", "p": x}),
            JoseError::PrivateKeyMaterial,
        ),
        (
            json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "d": x}),
            JoseError::PrivateKeyMaterial,
        ),
        // Unsupported types and curves.
        (
            json!({"kty": "EC", "crv": "P-521", "x": x, "y": x}),
            JoseError::UnsupportedKey,
        ),
        (
            json!({"kty": "EC", "crv": "secp384r1", "x": x48, "y": x48}),
            JoseError::UnsupportedKey,
        ),
        (
            json!({"kty": "rsa", "n": RFC7638_N, "e": "AQAB"}),
            JoseError::UnsupportedKey,
        ),
        (
            json!({"kty": "EC", "crv": "secp256k1", "x": x, "y": x}),
            JoseError::UnsupportedKey,
        ),
        (
            json!({"kty": "OKP", "crv": "X25519", "x": x}),
            JoseError::UnsupportedKey,
        ),
        (
            json!({"kty": "OKP", "crv": "Ed448", "x": x}),
            JoseError::UnsupportedKey,
        ),
        (
            json!({"kty": "ec", "crv": "P-256", "x": x, "y": x}),
            JoseError::UnsupportedKey,
        ),
        // Missing or malformed members.
        (
            json!({"crv": "P-256", "x": x, "y": x}),
            JoseError::InvalidKey("kty"),
        ),
        (
            json!({"kty": 1, "crv": "P-256", "x": x, "y": x}),
            JoseError::InvalidKey("kty"),
        ),
        (
            json!({"kty": "EC", "x": x, "y": x}),
            JoseError::InvalidKey("crv"),
        ),
        (
            json!({"kty": "EC", "crv": 7, "x": x, "y": x}),
            JoseError::InvalidKey("crv"),
        ),
        (
            json!({"kty": "EC", "crv": "P-256", "x": x}),
            JoseError::InvalidKey("y"),
        ),
        (
            json!({"kty": "EC", "crv": "P-256", "y": x}),
            JoseError::InvalidKey("x"),
        ),
        (
            json!({"kty": "EC", "crv": "P-256", "x": b64(&[1; 31]), "y": x}),
            JoseError::InvalidKey("x"),
        ),
        (
            json!({"kty": "EC", "crv": "P-256", "x": x, "y": b64(&[1; 33])}),
            JoseError::InvalidKey("y"),
        ),
        // P-384 coordinates are 48 bytes; a P-256-sized one is refused.
        (
            json!({"kty": "EC", "crv": "P-384", "x": x, "y": x48}),
            JoseError::InvalidKey("x"),
        ),
        (
            json!({"kty": "EC", "crv": "P-384", "x": x48, "y": b64(&[1; 49])}),
            JoseError::InvalidKey("y"),
        ),
        (
            json!({"kty": "EC", "crv": "P-384", "x": x48}),
            JoseError::InvalidKey("y"),
        ),
        (
            json!({"kty": "EC", "crv": "P-256", "x": x48, "y": x48}),
            JoseError::InvalidKey("x"),
        ),
        (
            json!({"kty": "EC", "crv": "P-384", "x": x48, "y": x48, "alg": "ES256"}),
            JoseError::InvalidKey("alg"),
        ),
        (
            json!({"kty": "EC", "crv": "P-256", "x": x, "y": x, "alg": "ES384"}),
            JoseError::InvalidKey("alg"),
        ),
        // An RSA key is an RS384 key: RS256 (the commonest label) is refused.
        (
            json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256"}),
            JoseError::InvalidKey("alg"),
        ),
        (
            json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "use": "enc"}),
            JoseError::InvalidKey("use"),
        ),
        (
            json!({"kty": "EC", "crv": "P-256", "x": format!("{x}="), "y": x}),
            JoseError::Base64("x"),
        ),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": x.replace('C', "+")}),
            JoseError::Base64("x"),
        ),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": x, "y": x}),
            JoseError::InvalidKey("y"),
        ),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "ES256"}),
            JoseError::InvalidKey("alg"),
        ),
        (
            json!({"kty": "EC", "crv": "P-256", "x": x, "y": x, "alg": "none"}),
            JoseError::InvalidKey("alg"),
        ),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": x, "use": "enc"}),
            JoseError::InvalidKey("use"),
        ),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": x, "key_ops": ["sign"]}),
            JoseError::InvalidKey("key_ops"),
        ),
        (
            json!({"kty": "OKP", "crv": "Ed25519", "x": x, "key_ops": "verify"}),
            JoseError::InvalidKey("key_ops"),
        ),
        (json!(["kty", "OKP"]), JoseError::JsonShape("jwk")),
    ];
    for (value, err) in cases {
        assert_eq!(jwk(&value.to_string()).unwrap_err(), err, "{value}");
        if value.is_object() {
            assert_eq!(
                PublicJwk::from_json_value(&value).unwrap_err(),
                err,
                "{value}"
            );
        }
    }
    assert_eq!(
        jwk(&format!(
            r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}","x":"{x}"}}"#
        ))
        .unwrap_err(),
        JoseError::JsonDuplicateMember("jwk")
    );
    let huge = format!(
        r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}","pad":"{}"}}"#,
        " ".repeat(MAX_JWK_LEN)
    );
    assert_eq!(jwk(&huge).unwrap_err(), JoseError::TooLarge);
}

#[test]
fn rsa_jwk_strictness() {
    let rsa = |n: &[u8], e: &[u8]| {
        let from_json = jwk(&json!({"kty": "RSA", "n": b64(n), "e": b64(e)}).to_string());
        // Parsing and the constructor agree on every case.
        assert_eq!(from_json, PublicJwk::rsa(n, e));
        from_json.map(|_| ())
    };
    let e = [1, 0, 1];
    let rfc_n = unb64(RFC7638_N);
    assert_eq!(rsa(&rfc_n, &e), Ok(()));

    // Modulus size: 2048 to 8192 bits, counted exactly (ring itself would take
    // a 2047-bit modulus, as it only counts bytes).
    for bits in [2048, 2049, 3072, 4096, 8191, 8192] {
        assert_eq!(rsa(&modulus(bits), &e), Ok(()), "{bits} bits");
    }
    for bits in [8, 512, 1024, 2040, 2047, 8193, 8200, 16384] {
        assert_eq!(
            rsa(&modulus(bits), &e),
            Err(JoseError::InvalidKey("n")),
            "{bits} bits"
        );
    }
    // Modulus encoding: minimal (no leading zero byte, RFC 7518 §6.3.1.1), odd, non-empty.
    for bad in [
        [&[0u8][..], &rfc_n].concat(),
        [&[0u8, 0][..], &rfc_n].concat(),
        [&[0u8][..], &modulus(8192)].concat(),
        {
            let mut even = rfc_n.clone();
            *even.last_mut().unwrap() &= 0xfe;
            even
        },
        vec![],
        vec![0],
        vec![0; 256],
    ] {
        assert_eq!(rsa(&bad, &e), Err(JoseError::InvalidKey("n")), "{bad:?}");
    }
    // Exponent: odd, 3..=2^33-1 (ring's range), minimal encoding.
    for good in [
        &[3][..],
        &[1, 0, 1],
        &[0xff, 0xff, 0xff, 0xff],
        &[1, 0xff, 0xff, 0xff, 0xff],
    ] {
        assert_eq!(rsa(&rfc_n, good), Ok(()), "{good:?}");
    }
    for bad in [
        &[][..],
        &[0],
        &[1],
        &[2],
        &[1, 0, 0],
        &[0, 1, 0, 1],
        &[2, 0, 0, 0, 1],
        &[0xff, 0xff, 0xff, 0xff, 0xff],
        &[1, 0, 0, 0, 0, 1],
        &[0, 0, 0, 0, 0, 0, 0, 0, 3],
    ] {
        assert_eq!(rsa(&rfc_n, bad), Err(JoseError::InvalidKey("e")), "{bad:?}");
    }

    // JSON members: canonical base64url strings, no curve, no EC members.
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut v = json!({"kty": "RSA", "n": RFC7638_N, "e": "AQAB"});
        edit(&mut v);
        jwk(&v.to_string()).map(|_| ())
    };
    type Edit<'a> = &'a dyn Fn(&mut Value);
    let cases: Vec<(Edit, JoseError)> = vec![
        (&|v| v["n"] = 7.into(), JoseError::InvalidKey("n")),
        (&|v| v["e"] = 65537.into(), JoseError::InvalidKey("e")),
        (&|v| v["n"] = Value::Null, JoseError::InvalidKey("n")),
        (
            &|v| {
                v.as_object_mut().unwrap().remove("n");
            },
            JoseError::InvalidKey("n"),
        ),
        (
            &|v| {
                v.as_object_mut().unwrap().remove("e");
            },
            JoseError::InvalidKey("e"),
        ),
        (&|v| v["e"] = "".into(), JoseError::InvalidKey("e")),
        (&|v| v["e"] = "AQAB=".into(), JoseError::Base64("e")),
        (&|v| v["e"] = "AQB".into(), JoseError::Base64("e")),
        (
            &|v| v["n"] = format!("{RFC7638_N}=").into(),
            JoseError::Base64("n"),
        ),
        (
            &|v| v["n"] = RFC7638_N.replace('-', "+").into(),
            JoseError::Base64("n"),
        ),
        (
            &|v| v["n"] = format!("{} ", RFC7638_N).into(),
            JoseError::Base64("n"),
        ),
        (&|v| v["crv"] = "P-256".into(), JoseError::InvalidKey("crv")),
        (&|v| v["crv"] = Value::Null, JoseError::InvalidKey("crv")),
        (
            &|v| v["x"] = b64(&[1; 32]).into(),
            JoseError::InvalidKey("x"),
        ),
        (
            &|v| v["y"] = b64(&[1; 32]).into(),
            JoseError::InvalidKey("y"),
        ),
        (&|v| v["alg"] = "RS512".into(), JoseError::InvalidKey("alg")),
        (&|v| v["alg"] = "PS384".into(), JoseError::InvalidKey("alg")),
        (&|v| v["alg"] = "ES384".into(), JoseError::InvalidKey("alg")),
        (&|v| v["alg"] = "rs384".into(), JoseError::InvalidKey("alg")),
    ];
    for (edit, err) in cases {
        assert_eq!(with(edit), Err(err));
    }
    // Every RSA private member (RFC 7518 §6.3.2), whatever its value.
    for member in ["d", "p", "q", "dp", "dq", "qi", "oth"] {
        assert_eq!(
            with(&|v| v[member] = "AQAB".into()),
            Err(JoseError::PrivateKeyMaterial),
            "{member}"
        );
    }
    // "AQAB" is the only encoding of 65537, and a base64url-encoded leading
    // zero ("AAEAAQ" = 00 01 00 01) is refused like the bytes are.
    assert_eq!(
        with(&|v| v["e"] = "AAEAAQ".into()),
        Err(JoseError::InvalidKey("e"))
    );
}

#[test]
fn rsa_sizes_fit_the_limits() {
    // The largest RSA key, as a pretty-printed JWK with the usual optional
    // members, fits MAX_JWK_LEN with room to spare.
    let key = offline()["rsa8192"]["jwk"].clone();
    let mut full = key.clone();
    full["alg"] = "RS384".into();
    full["use"] = "sig".into();
    full["key_ops"] = json!(["verify"]);
    full["kid"] = "a-key-id-as-long-as-a-uuid-0123456789".into();
    full["x5t#S256"] = b64(&[7; 32]).into();
    let text = serde_json::to_string_pretty(&full).unwrap();
    assert!(text.len() < MAX_JWK_LEN - 1024, "{}", text.len());
    assert_eq!(
        jwk(&text).unwrap(),
        PublicJwk::from_json_value(&key).unwrap()
    );
    // An oversized document is refused before parsing, an oversized modulus
    // (8200 bits) after decoding, both cleanly.
    let mut big = key.clone();
    big["n"] = b64(&modulus(8200)).into();
    assert_eq!(
        jwk(&big.to_string()).unwrap_err(),
        JoseError::InvalidKey("n")
    );
    big["n"] = b64(&modulus(MAX_JWK_LEN * 8)).into();
    assert_eq!(jwk(&big.to_string()).unwrap_err(), JoseError::TooLarge);
    assert_eq!(
        PublicJwk::from_json_value(&big).unwrap_err(),
        JoseError::InvalidKey("n")
    );
    // An RS384 token from the largest key fits MAX_TOKEN_LEN twice over, even
    // a DPoP proof carrying the modulus in its header (checked in dpop.rs).
    let token = offline()["rsa8192"]["dpop"].as_str().unwrap().to_owned();
    assert!(token.len() * 2 < MAX_TOKEN_LEN, "{}", token.len());
}

#[test]
fn thumbprint_parsing() {
    let key = TestKey::ed25519(7).public();
    let jkt = key.thumbprint();
    assert_eq!(jkt.as_str().len(), 43);
    assert_eq!(JwkThumbprint::parse(jkt.as_str()).unwrap(), jkt);
    assert_eq!(jkt.to_string(), jkt.as_str());
    assert_ne!(TestKey::ed25519(8).public().thumbprint(), jkt);
    for bad in [
        String::new(),
        format!("{}=", jkt.as_str()),
        jkt.as_str()[..42].to_owned(),
        format!("{}A", jkt.as_str()),
        b64(&[0; 31]),
        b64(&[0; 33]),
        "!".repeat(43),
    ] {
        assert_eq!(
            JwkThumbprint::parse(&bad).unwrap_err(),
            JoseError::InvalidThumbprint,
            "{bad:?}"
        );
    }
}
