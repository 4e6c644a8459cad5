//! JWK parsing and RFC 7638 thumbprints, and compact JWS verification.

use medvault_crypto::jose::{
    verify_jws, Alg, JoseError, JwkThumbprint, PublicJwk, TokenSigner, MAX_JWK_LEN, MAX_TOKEN_LEN,
};
use medvault_crypto::keys::sha256;
use medvault_crypto::SecretKey;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use serde_json::{json, Value};

use super::{b64, compact, compact_raw, flip_signature_byte, part, unb64, with_part, TestKey};

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

#[test]
fn rfc7638_thumbprint_known_answers() {
    // RFC 7638 §3.1 is an RSA key, which this module does not accept...
    let rsa_n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    assert_eq!(
        jwk(&json!({"kty": "RSA", "n": rsa_n, "e": "AQAB", "alg": "RS256"}).to_string())
            .unwrap_err(),
        JoseError::UnsupportedKey
    );
    // ...so check the rule's hashing and encoding step on its canonical form:
    // SHA-256 of the required members, sorted, no whitespace, base64url unpadded.
    let canonical = format!(r#"{{"e":"AQAB","kty":"RSA","n":"{rsa_n}"}}"#);
    assert_eq!(
        b64(&sha256(canonical.as_bytes())),
        "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    );

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
fn round_trip_ed25519_and_p256() {
    for key in [TestKey::ed25519(1), TestKey::p256()] {
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
        "None", "NONE", "HS256", "HS512", "RS256", "PS256", "ES384", "ES256K", "Ed25519",
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
    for key in [TestKey::ed25519(3), TestKey::p256()] {
        let header = json!({"alg": key.alg()});
        let token = compact(&header, &json!({"sub": "a"}), &key);
        let public = key.public();
        assert!(verify_jws(&token, &public, &Alg::ALL).is_ok());

        // Wrong key of the same type.
        let other = match key {
            TestKey::Ed(_) => TestKey::ed25519(4),
            TestKey::Es(_) => TestKey::p256(),
        };
        assert_eq!(
            verify_jws(&token, &other.public(), &Alg::ALL).unwrap_err(),
            JoseError::BadSignature
        );
        // Any signature byte flipped.
        for i in 0..64 {
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
        // Signatures of the wrong length.
        let sig = unb64(part(&token, 2));
        for bad in [&sig[..63], &[sig.as_slice(), &[0]].concat()[..], &[][..]] {
            let bad = with_part(&token, 2, &b64(bad));
            assert!(matches!(
                verify_jws(&bad, &public, &Alg::ALL).unwrap_err(),
                JoseError::Malformed(_)
            ));
        }
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

    // A P-256 "key" that is not a point on the curve never verifies.
    let token = compact_raw(r#"{"alg":"ES256"}"#, "{}", &TestKey::p256());
    assert_eq!(
        verify_jws(&token, &PublicJwk::p256([1; 32], [2; 32]), &Alg::ALL).unwrap_err(),
        JoseError::BadSignature
    );
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
    let ok = [
        json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
        json!({"kty": "EC", "crv": "P-256", "x": x, "y": x}),
        json!({"kty": "EC", "crv": "P-256", "x": x, "y": x, "alg": "ES256", "use": "sig", "key_ops": ["verify"], "kid": "a", "ext": true}),
        json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA"}),
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
        // Unsupported types and curves.
        (
            json!({"kty": "RSA", "n": x, "e": "AQAB"}),
            JoseError::UnsupportedKey,
        ),
        (
            json!({"kty": "EC", "crv": "P-384", "x": x, "y": x}),
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
