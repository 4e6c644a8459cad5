//! JOSE: JWK thumbprints, compact JWS, access tokens, DPoP proofs and client assertions.
//!
//! Test tokens are built here with ring directly (not with the library's own
//! signer), so headers and claims can be made as broken as each test needs.
//! ring cannot generate RSA keys, so RS384 tests sign with a fixed TEST-ONLY
//! 2048-bit key, and `fixtures/offline.json` holds keys and tokens made by a
//! second implementation (Python `cryptography`, see `fixtures/make_fixtures.py`),
//! including an 8192-bit key ring cannot sign with.

mod assertion;
mod dpop;
mod jws;
mod props;
mod token;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use medvault_crypto::jose::PublicJwk;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, RsaPublicKeyComponents,
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, RSA_PKCS1_SHA384,
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

/// TEST-ONLY 2048-bit RSA private key (PKCS#8 PEM) made by `fixtures/make_fixtures.py`.
const RSA2048_PEM: &str = include_str!("jose/fixtures/rsa2048-TEST-ONLY.pem");
/// Public keys and signed tokens made offline by `fixtures/make_fixtures.py`.
const OFFLINE: &str = include_str!("jose/fixtures/offline.json");

/// The offline fixtures: `rsa2048`, `rsa2048_other`, `rsa8192`, `p384`, each
/// with a `jwk` and (not `rsa2048_other`) its `jkt` and signed tokens.
pub fn offline() -> Value {
    serde_json::from_str(OFFLINE).unwrap()
}

/// The DER bytes of the TEST-ONLY RSA key: the base64 between the PEM boundaries.
fn rsa2048_pkcs8() -> Vec<u8> {
    let body = RSA2048_PEM
        .split("-----BEGIN PRIVATE KEY-----")
        .nth(1)
        .and_then(|rest| rest.split("-----END PRIVATE KEY-----").next())
        .unwrap();
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(b64).unwrap()
}

/// A private signing key for tests.
pub enum TestKey {
    Ed(Ed25519KeyPair),
    /// P-256 (ES256).
    Es(EcdsaKeyPair),
    /// P-384 (ES384).
    Es384(EcdsaKeyPair),
    /// RSA (RS384).
    Rs(RsaKeyPair),
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

    /// A fresh random P-384 key.
    pub fn p384() -> TestKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
        TestKey::Es384(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .unwrap(),
        )
    }

    /// The fixed TEST-ONLY 2048-bit RSA key (the only one tests can sign with).
    pub fn rsa() -> TestKey {
        TestKey::Rs(RsaKeyPair::from_pkcs8(&rsa2048_pkcs8()).unwrap())
    }

    /// One key of each supported type.
    pub fn one_of_each(ed_seed: u8) -> [TestKey; 4] {
        [
            TestKey::ed25519(ed_seed),
            TestKey::p256(),
            TestKey::p384(),
            TestKey::rsa(),
        ]
    }

    /// The JOSE `alg` this key signs with.
    pub fn alg(&self) -> &'static str {
        match self {
            TestKey::Ed(_) => "EdDSA",
            TestKey::Es(_) => "ES256",
            TestKey::Es384(_) => "ES384",
            TestKey::Rs(_) => "RS384",
        }
    }

    /// The length of this key's JWS signatures in bytes.
    pub fn signature_len(&self) -> usize {
        match self {
            TestKey::Ed(_) | TestKey::Es(_) => 64,
            TestKey::Es384(_) => 96,
            TestKey::Rs(k) => k.public().modulus_len(),
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
            TestKey::Es384(k) => {
                let point = k.public_key().as_ref();
                assert_eq!(point.len(), 97);
                assert_eq!(point[0], 4, "uncompressed SEC 1 point");
                json!({"kty": "EC", "crv": "P-384", "x": b64(&point[1..49]), "y": b64(&point[49..])})
            }
            TestKey::Rs(k) => {
                // ring gives both minimal big-endian, as RFC 7518 §6.3.1 wants.
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
                json!({"kty": "RSA", "n": b64(&c.n), "e": b64(&c.e)})
            }
        }
    }

    /// The library's view of the public key.
    pub fn public(&self) -> PublicJwk {
        PublicJwk::from_json_value(&self.jwk()).unwrap()
    }

    /// Raw JWS signature over `message` (ES256/ES384: fixed-length `r || s`).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            TestKey::Ed(k) => k.sign(message).as_ref().to_vec(),
            TestKey::Es(k) | TestKey::Es384(k) => k
                .sign(&SystemRandom::new(), message)
                .unwrap()
                .as_ref()
                .to_vec(),
            TestKey::Rs(k) => {
                let mut signature = vec![0; k.public().modulus_len()];
                k.sign(
                    &RSA_PKCS1_SHA384,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .unwrap();
                signature
            }
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
