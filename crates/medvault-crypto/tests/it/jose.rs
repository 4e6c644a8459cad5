//! JOSE: JWK thumbprints, compact JWS, access tokens, DPoP proofs and client assertions.
//!
//! Test tokens are built here with ring directly (not with the library's own
//! signer), so headers and claims can be made as broken as each test needs.

mod assertion;
mod dpop;
mod jws;
mod props;
mod token;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use medvault_crypto::jose::PublicJwk;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde_json::{json, Value};

/// A fixed "current time" for tests (2023-11-14T22:13:20Z).
pub const NOW: u64 = 1_700_000_000;

/// Unpadded base64url.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decode unpadded base64url.
pub fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).unwrap()
}

/// A private signing key for tests.
pub enum TestKey {
    Ed(Ed25519KeyPair),
    Es(EcdsaKeyPair),
}

impl TestKey {
    /// A deterministic Ed25519 key from a repeated seed byte.
    pub fn ed25519(seed: u8) -> TestKey {
        TestKey::Ed(Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).unwrap())
    }

    /// A fresh random P-256 key.
    pub fn p256() -> TestKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        TestKey::Es(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        )
    }

    /// The JOSE `alg` this key signs with.
    pub fn alg(&self) -> &'static str {
        match self {
            TestKey::Ed(_) => "EdDSA",
            TestKey::Es(_) => "ES256",
        }
    }

    /// The public JWK, built from ring's raw public key (independently of the library).
    pub fn jwk(&self) -> Value {
        match self {
            TestKey::Ed(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.public_key().as_ref())})
            }
            TestKey::Es(k) => {
                let point = k.public_key().as_ref();
                assert_eq!(point.len(), 65);
                assert_eq!(point[0], 4, "uncompressed SEC 1 point");
                json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])})
            }
        }
    }

    /// The library's view of the public key.
    pub fn public(&self) -> PublicJwk {
        PublicJwk::from_json_value(&self.jwk()).unwrap()
    }

    /// Raw JWS signature over `message` (ES256: fixed 64-byte `r || s`).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            TestKey::Ed(k) => k.sign(message).as_ref().to_vec(),
            TestKey::Es(k) => k
                .sign(&SystemRandom::new(), message)
                .unwrap()
                .as_ref()
                .to_vec(),
        }
    }
}

/// A compact JWS over exactly these header and payload texts.
pub fn compact_raw(header: &str, payload: &str, key: &TestKey) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature))
}

/// A compact JWS over JSON header and payload.
pub fn compact(header: &Value, payload: &Value, key: &TestKey) -> String {
    compact_raw(&header.to_string(), &payload.to_string(), key)
}

/// Replace part `index` (0 = header, 1 = payload, 2 = signature) of a compact JWS.
pub fn with_part(token: &str, index: usize, part: &str) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    parts[index] = part;
    parts.join(".")
}

/// Part `index` of a compact JWS.
pub fn part(token: &str, index: usize) -> &str {
    token.split('.').nth(index).unwrap()
}

/// The token with byte `index` of its decoded signature flipped.
pub fn flip_signature_byte(token: &str, index: usize) -> String {
    let mut signature = unb64(part(token, 2));
    signature[index] ^= 0x01;
    with_part(token, 2, &b64(&signature))
}
