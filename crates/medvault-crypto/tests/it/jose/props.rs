//! Property tests: any corruption of a valid token is refused, and no input panics.

use medvault_crypto::jose::{
    unverified_client_id, validate_client_assertion, validate_dpop, verify_jws, Alg,
    AssertionExpectation, DpopExpectation, PublicJwk, TokenSigner, TokenVerifier,
};
use medvault_crypto::SecretKey;
use proptest::prelude::*;
use serde_json::{json, Value};

use super::{b64, compact, TestKey, NOW};

const URL: &str = "https://medvault.example/fhir/Patient";

/// One valid DPoP proof per algorithm (EC keys are random, RSA is the fixture key).
fn proofs() -> Vec<(String, PublicJwk)> {
    TestKey::one_of_each(40)
        .into_iter()
        .map(|key| {
            let token = compact(
                &json!({"typ": "dpop+jwt", "alg": key.alg(), "jwk": key.jwk()}),
                &json!({"jti": "j", "htm": "GET", "htu": URL, "iat": NOW}),
                &key,
            );
            (token, key.public())
        })
        .collect()
}

/// Arbitrary JSON values, nested a little deeper than the parser allows.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        "[a-zA-Z0-9+/=._~:-]{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("EdDSA"),
            Just("ES256"),
            Just("ES384"),
            Just("RS384"),
            Just("RSA"),
            Just("EC"),
            Just("P-384"),
            Just("AQAB"),
            Just("none"),
            Just("dpop+jwt"),
            Just("at+jwt"),
            Just("GET"),
            Just(URL)
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(7, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("alg".to_owned()),
                        Just("typ".to_owned()),
                        Just("jwk".to_owned()),
                        Just("kty".to_owned()),
                        Just("crv".to_owned()),
                        Just("x".to_owned()),
                        Just("y".to_owned()),
                        Just("d".to_owned()),
                        Just("n".to_owned()),
                        Just("e".to_owned()),
                        Just("iat".to_owned()),
                        Just("exp".to_owned()),
                        Just("aud".to_owned()),
                        Just("cnf".to_owned()),
                        "[a-z]{1,4}",
                    ],
                    inner,
                ),
                0..6
            )
            .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// Run every entry point on `input`; the only requirement is that none panics.
fn exercise(input: &str, key: &PublicJwk) {
    let _ = verify_jws(input, key, &Alg::ALL);
    let _ = PublicJwk::from_json_str(input);
    let _ = unverified_client_id(input);
    if let Ok(expected) = DpopExpectation::new("GET", URL, NOW) {
        let _ = validate_dpop(input, &expected.with_access_token(input));
    }
    let _ = DpopExpectation::new(input, input, NOW);
    let _ = AssertionExpectation::new(input, input, NOW);
    if let Ok(expect) = AssertionExpectation::new("c", "https://medvault.example/token", NOW) {
        let _ = validate_client_assertion(input, key, &expect);
    }
    if let Ok(verifier) = TokenVerifier::new(key.clone(), "i", "a") {
        let _ = verifier.verify(input, NOW);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_byte_change_is_refused(which in 0usize..4, pos in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let (token, key) = &proofs()[which];
        let mut bytes = token.clone().into_bytes();
        let i = pos.index(bytes.len());
        bytes[i] ^= mask;
        // A change that breaks UTF-8 cannot even be passed as a &str: refused by the type system.
        if let Ok(corrupted) = String::from_utf8(bytes) {
            prop_assert!(verify_jws(&corrupted, key, &Alg::ALL).is_err());
            let expected = DpopExpectation::new("GET", URL, NOW).unwrap();
            prop_assert!(validate_dpop(&corrupted, &expected).is_err());
        }
    }

    #[test]
    fn truncation_and_extension_are_refused(which in 0usize..4, cut in any::<prop::sample::Index>(), extra in "[A-Za-z0-9_.=-]{1,4}") {
        let (token, key) = &proofs()[which];
        let cut = cut.index(token.len());
        prop_assert!(verify_jws(&token[..cut], key, &Alg::ALL).is_err());
        let extended = token.clone() + &extra;
        prop_assert!(verify_jws(&extended, key, &Alg::ALL).is_err());
    }

    #[test]
    fn arbitrary_strings_never_panic(input in any::<String>()) {
        exercise(&input, &TestKey::ed25519(41).public());
    }

    #[test]
    fn token_shaped_strings_never_panic(input in "[A-Za-z0-9_=+/ .-]{0,200}") {
        exercise(&input, &TestKey::ed25519(41).public());
    }

    #[test]
    fn arbitrary_json_parts_never_panic(header in arb_json(), payload in arb_json(), sig in prop::collection::vec(any::<u8>(), 0..80)) {
        let token = format!(
            "{}.{}.{}",
            b64(header.to_string().as_bytes()),
            b64(payload.to_string().as_bytes()),
            b64(&sig)
        );
        exercise(&token, &TestKey::ed25519(41).public());
        let _ = PublicJwk::from_json_value(&header);
        let _ = PublicJwk::from_json_str(&payload.to_string());
    }

    #[test]
    fn signed_arbitrary_claims_never_panic(claims in arb_json(), now in any::<u64>()) {
        // Correctly signed, so every claim check is reached.
        let signer = TokenSigner::new(&SecretKey::from_bytes([0x44; 32]));
        let verifier = signer.verifier("i", "a").unwrap();
        let _ = verifier.verify(&signer.sign(&claims), now);
        let key = TestKey::ed25519(42);
        let proof = compact(&json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": key.jwk()}), &claims, &key);
        let expected = DpopExpectation::new("GET", URL, now).unwrap();
        let _ = validate_dpop(&proof, &expected);
        let expect = AssertionExpectation::new("c", "https://medvault.example/token", now).unwrap();
        let _ = validate_client_assertion(&compact(&json!({"alg": "EdDSA"}), &claims, &key), &key.public(), &expect);
    }

    #[test]
    fn rsa_components_never_panic_and_follow_the_rules(
        n in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..16),
            prop::collection::vec(any::<u8>(), 250..262),
            prop::collection::vec(any::<u8>(), 1020..1030),
        ],
        e in prop_oneof![Just(vec![1, 0, 1]), prop::collection::vec(any::<u8>(), 0..8)],
        n_top in any::<u8>(),
        plausible in any::<bool>(),
    ) {
        // Steer half the cases towards plausible moduli so acceptance is reached too.
        let mut n = n;
        if let (Some(first), true) = (n.first_mut(), plausible) {
            *first = n_top;
        }
        if let (Some(last), true) = (n.last_mut(), plausible) {
            *last |= 1;
        }
        let direct = PublicJwk::rsa(&n, &e);
        let parsed = PublicJwk::from_json_value(&json!({"kty": "RSA", "n": b64(&n), "e": b64(&e)}));
        prop_assert_eq!(&direct, &parsed);
        prop_assert_eq!(direct.is_ok(), rsa_rules(&n, &e));
        if let Ok(key) = direct {
            // An accepted key survives a round trip, with a stable thumbprint.
            prop_assert_eq!(key.alg(), Alg::Rs384);
            let again = PublicJwk::from_json_value(&key.to_json_value()).unwrap();
            prop_assert_eq!(again.thumbprint(), key.thumbprint());
            prop_assert_eq!(again, key);
        }
    }

    #[test]
    fn p384_coordinates_never_panic(
        x in prop::collection::vec(any::<u8>(), 40..56),
        y in prop::collection::vec(any::<u8>(), 40..56),
    ) {
        let parsed = PublicJwk::from_json_value(&json!({"kty": "EC", "crv": "P-384", "x": b64(&x), "y": b64(&y)}));
        prop_assert_eq!(parsed.is_ok(), x.len() == 48 && y.len() == 48);
        if let Ok(key) = parsed {
            prop_assert_eq!(key.alg(), Alg::Es384);
            prop_assert_eq!(PublicJwk::from_json_value(&key.to_json_value()).unwrap(), key);
        }
    }

    #[test]
    fn new_key_type_members_never_panic(
        n in any::<String>(),
        e in "[A-Za-z0-9_=+/-]{0,12}",
        coordinate in "[A-Za-z0-9_=+/-]{0,70}",
        crv in prop_oneof![Just(Value::Null), Just(json!("P-384")), Just(json!("P-256")), any::<String>().prop_map(Value::from)],
    ) {
        for value in [
            json!({"kty": "RSA", "n": n, "e": e}),
            json!({"kty": "RSA", "n": n, "e": e, "crv": crv}),
            json!({"kty": "EC", "crv": crv, "x": coordinate, "y": coordinate}),
            json!({"kty": "EC", "crv": "P-384", "x": coordinate, "y": n}),
        ] {
            let _ = PublicJwk::from_json_value(&value);
            let _ = PublicJwk::from_json_str(&value.to_string());
        }
    }

    #[test]
    fn rsa_jwk_text_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64), at in any::<prop::sample::Index>()) {
        // A valid RSA JWK with random bytes spliced in somewhere.
        let mut text = json!({"kty": "RSA", "n": b64(&[0xc5; 256]), "e": "AQAB"}).to_string().into_bytes();
        let at = at.index(text.len() + 1);
        text.splice(at..at, bytes);
        if let Ok(text) = String::from_utf8(text) {
            let _ = PublicJwk::from_json_str(&text);
        }
    }
}

/// The RSA component rules, stated independently of the library: minimal
/// big-endian encodings, an odd 2048- to 8192-bit modulus and an odd exponent
/// from 3 to 2^33-1.
fn rsa_rules(n: &[u8], e: &[u8]) -> bool {
    let minimal = |v: &[u8]| !v.is_empty() && v[0] != 0;
    if !minimal(n) || !minimal(e) || n.last().is_some_and(|b| b & 1 == 0) {
        return false;
    }
    let n_bits = (n.len() - 1) * 8 + (8 - n[0].leading_zeros() as usize);
    let e_value = (e.len() <= 8).then(|| e.iter().fold(0u128, |v, &b| v * 256 + u128::from(b)));
    (2048..=8192).contains(&n_bits)
        && e_value.is_some_and(|v| v % 2 == 1 && (3..(1u128 << 33)).contains(&v))
}
