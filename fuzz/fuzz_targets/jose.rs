//! Fuzzes JOSE input from the network: DPoP proofs (`validate_dpop`), the server's access
//! tokens (`TokenVerifier::verify`), client assertions (`validate_client_assertion`,
//! `unverified_client_id`) and JWKs (`PublicJwk::from_json_str`, `JwkThumbprint::parse`),
//! all against fixed expectations (`medvault_fuzz::NOW`, `DPOP_URL`, ...).
//!
//! Input: mode byte (`m % 4`), then
//! - 0: a compact token, checked as a DPoP proof (three expectations), an access token and
//!   a client assertion under each fixed key (Ed25519, and the crypto tests' offline RSA
//!   2048/8192 and P-384 keys, so their real tokens are valid seeds);
//! - 1: JWK JSON text;
//! - 2: header JSON, NUL, payload bytes: the harness signs them with its Ed25519 key, so
//!   the fuzzer gets past the signature to the header, claim, time and binding checks;
//! - 3: method, NUL, expected URL, NUL, `htu`: a proof with those claims, signed by the
//!   harness (URL normalization and comparison).
//!
//! Checks beyond "no panic": whatever is accepted honours the expectation it was checked
//! against (time windows, `jkt` binding, lifetime), and a proof whose `htu` is the very URL
//! expected, for a method the expectation accepts, is accepted.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use medvault_crypto::jose::{
    unverified_client_id, validate_client_assertion, validate_dpop, AssertionExpectation,
    DpopExpectation, JwkThumbprint, PublicJwk, TokenSigner, TokenVerifier,
};
use medvault_crypto::SecretKey;
use medvault_fuzz::{
    ed25519, mode_and_rest, parts, sign_compact, ACCESS_TOKEN, CLIENT_ID, DPOP_NONCE, DPOP_URL,
    NOW, SIGNING_SEED, TOKEN_AUDIENCE, TOKEN_ENDPOINT, TOKEN_ISSUER,
};
use ring::signature::Ed25519KeyPair;
use serde_json::json;

/// Public keys of the crypto crate's offline fixtures (`tests/it/jose/fixtures/offline.json`).
const RSA2048_JWK: &str = r#"{"kty":"RSA","e":"AQAB","n":"g26Vlk_lV_uQmrSltYzIUZGwiQCWdolI2hUQt1CzH4G4CZiSqM53C2wQIu9TG4XySmCut4GdgqOxvJUNIl9cXmtcrUxB6okS9adwA2hfxm9AxaO2VSkgSDNcxVj_M9ODALAHOK1rqd-UQTQA7uG0gMZ4-HPZo22G9VqPGoRzLz0FJ017-pVUyda9dY9I2NO_1IIMrFkb3Nn0mCKbAfdlNyDhHE-lR4N-YO4eiwCcShL_-oWm6nkkUem2m1ZPPiZ9oB9JxpAMo9fkFLTjUgC6cxsHuVh9StKw0QIRBCJ02_ExvzFbuQOJ3a6qroPXX6sYnZX6c-vpAk5I8ynycRP5Cw"}"#;
const P384_JWK: &str = r#"{"kty":"EC","crv":"P-384","x":"UdbiXNQpy6tsbW_wnLemB6vsMwqwMVr-KIgUWTol--wp-x0U146GW7dQ4659l7fB","y":"hEnamXj4iYeJyzzf1SMXJUPWlWX-OvV5a5uDelt0f6AMEKSfhzbn7v7JkCNHNXoS"}"#;

struct Fixed {
    key: Ed25519KeyPair,
    jwk: PublicJwk,
    jkt: JwkThumbprint,
    verifier: TokenVerifier,
    client_keys: Vec<PublicJwk>,
    /// Plain; with the access token, the harness key's `jkt` and a nonce; another method.
    dpop: [DpopExpectation; 3],
    assertion: AssertionExpectation,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let signer = TokenSigner::new(&SecretKey::from_bytes(SIGNING_SEED));
        let jwk = signer.public_jwk().clone();
        let jkt = jwk.thumbprint();
        let dpop = [
            DpopExpectation::new("GET", DPOP_URL, NOW).expect("fixed expectation"),
            DpopExpectation::new("GET", DPOP_URL, NOW)
                .expect("fixed expectation")
                .with_access_token(ACCESS_TOKEN)
                .with_jkt(jkt.clone())
                .with_nonce(DPOP_NONCE)
                .expect("fixed nonce"),
            DpopExpectation::new("POST", TOKEN_ENDPOINT, NOW).expect("fixed expectation"),
        ];
        Fixed {
            key: ed25519(&SIGNING_SEED),
            verifier: signer
                .verifier(TOKEN_ISSUER, TOKEN_AUDIENCE)
                .expect("fixed verifier"),
            client_keys: vec![
                jwk.clone(),
                PublicJwk::from_json_str(RSA2048_JWK).expect("fixture key"),
                PublicJwk::from_json_str(P384_JWK).expect("fixture key"),
            ],
            jwk,
            jkt,
            dpop,
            assertion: AssertionExpectation::new(CLIENT_ID, TOKEN_ENDPOINT, NOW)
                .expect("fixed expectation"),
        }
    })
}

/// Every check a compact token goes through, with the invariants of what is accepted.
fn check_token(f: &Fixed, token: &str) {
    for (i, expected) in f.dpop.iter().enumerate() {
        if let Ok(proof) = validate_dpop(token, expected) {
            assert!(
                proof.iat() + 60 >= NOW && proof.iat() <= NOW + 5,
                "DPoP iat outside the window"
            );
            assert!(!proof.jti().is_empty() && proof.jti().len() <= 64);
            if i == 1 {
                assert_eq!(*proof.jkt(), f.jkt, "DPoP accepted from another key");
            }
        }
    }
    if let Ok(claims) = f.verifier.verify(token, NOW) {
        assert!(claims.exp() > claims.iat(), "token exp not after iat");
        assert!(claims.exp() + 30 > NOW, "expired token accepted");
        assert!(claims.iat() <= NOW + 30, "token from the future accepted");
    }
    for key in &f.client_keys {
        if let Ok(a) = validate_client_assertion(token, key, &f.assertion) {
            assert!(a.exp() + 30 > NOW, "expired assertion accepted");
            assert!(a.exp() <= NOW + 300 + 30, "assertion lifetime too long");
            assert!(!a.jti().is_empty());
        }
    }
    let _ = unverified_client_id(token);
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = mode_and_rest(data) else {
        return;
    };
    let f = fixed();
    match mode % 4 {
        0 => {
            if let Ok(token) = std::str::from_utf8(rest) {
                check_token(f, token);
            }
        }
        1 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(jwk) = PublicJwk::from_json_str(text) {
                // The canonical form parses back to the same key with the same thumbprint.
                let again = PublicJwk::from_json_value(&jwk.to_json_value())
                    .expect("a key's own JSON parses");
                assert_eq!(again, jwk);
                assert_eq!(again.thumbprint(), jwk.thumbprint());
                JwkThumbprint::parse(jwk.thumbprint().as_str()).expect("own thumbprint parses");
            }
            let _ = JwkThumbprint::parse(text);
        }
        2 => {
            let [header, payload] = parts::<2>(rest);
            check_token(f, &sign_compact(&f.key, header, payload));
        }
        _ => {
            let [method, url, htu] = parts::<3>(rest);
            let (Ok(method), Ok(url), Ok(htu)) = (
                std::str::from_utf8(method),
                std::str::from_utf8(url),
                std::str::from_utf8(htu),
            ) else {
                return;
            };
            let Ok(expected) = DpopExpectation::new(method, url, NOW) else {
                return;
            };
            let header = json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": f.jwk.to_json_value()});
            let claims = json!({"jti": "j-1", "htm": method, "htu": htu, "iat": NOW});
            let proof = sign_compact(
                &f.key,
                header.to_string().as_bytes(),
                claims.to_string().as_bytes(),
            );
            let result = validate_dpop(&proof, &expected);
            if htu == url {
                let proof = result.expect("a proof for the expected method and URL is accepted");
                assert_eq!(*proof.jkt(), f.jkt);
            }
        }
    }
});
