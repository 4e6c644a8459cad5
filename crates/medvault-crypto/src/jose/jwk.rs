//! Public JSON Web Keys (RFC 7517/7518/8037) for P-256, P-384, Ed25519 and RSA, and RFC 7638 thumbprints.

use serde_json::{Map, Value};

use super::jws::Alg;
use super::{b64, json, JoseError, MAX_JWK_LEN};
use crate::keys::sha256;

/// JWK members that only private (or symmetric) keys carry. Their presence in
/// a key that should be public means someone is leaking a private key, so it
/// is refused rather than ignored.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Smallest accepted RSA modulus, in bits (RFC 7518 §3.3: 2048 or larger).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest accepted RSA modulus, in bits: ring's verification limit, and a
/// bound on the work an attacker-chosen DPoP key can cause.
pub const MAX_RSA_BITS: usize = 8192;
/// Largest accepted RSA public exponent: exactly ring's limit (2^33 - 1), so a
/// key that parses is never one ring refuses at verification time.
const MAX_RSA_E: u64 = (1 << 33) - 1;

/// A public signature-verification key: P-256 or P-384 (`kty` `EC`), Ed25519
/// (`kty` `OKP`) or RSA (`kty` `RSA`).
///
/// Only constructible from well-formed public key members, so holding one
/// means the coordinates have the right lengths, an RSA modulus and exponent
/// are minimal and in range, and no private part was present. Whether an EC
/// point actually lies on its curve (or an RSA modulus is a real one) is
/// checked by ring when a signature is verified: such a key never verifies.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicJwk {
    key: KeyMaterial,
}

#[derive(Clone, PartialEq, Eq)]
pub(crate) enum KeyMaterial {
    /// Affine coordinates of a P-256 point, big-endian.
    P256 { x: [u8; 32], y: [u8; 32] },
    /// Affine coordinates of a P-384 point, big-endian.
    P384 { x: [u8; 48], y: [u8; 48] },
    /// An Ed25519 public key (RFC 8032 encoding).
    Ed25519 { x: [u8; 32] },
    /// An RSA modulus and public exponent, minimal big-endian, already checked
    /// by [`PublicJwk::rsa`] (so they are exactly what ring accepts).
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

impl PublicJwk {
    /// A P-256 key from its big-endian affine coordinates.
    pub fn p256(x: [u8; 32], y: [u8; 32]) -> PublicJwk {
        PublicJwk {
            key: KeyMaterial::P256 { x, y },
        }
    }

    /// A P-384 key from its big-endian affine coordinates.
    pub fn p384(x: [u8; 48], y: [u8; 48]) -> PublicJwk {
        PublicJwk {
            key: KeyMaterial::P384 { x, y },
        }
    }

    /// An Ed25519 key from its 32-byte public key.
    pub fn ed25519(x: [u8; 32]) -> PublicJwk {
        PublicJwk {
            key: KeyMaterial::Ed25519 { x },
        }
    }

    /// An RSA key from its modulus `n` and public exponent `e`, both big-endian
    /// without leading zero bytes (RFC 7518 §6.3.1: the minimal encoding, so
    /// each key has exactly one thumbprint).
    ///
    /// `n` must be odd and [`MIN_RSA_BITS`]..=[`MAX_RSA_BITS`] bits long; `e`
    /// must be odd and 3..=2^33-1, which is exactly what ring verifies with
    /// (2^33-1 is ring's cap; real keys use 65537). Errors name the member.
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<PublicJwk, JoseError> {
        if !rsa_modulus_ok(n) {
            return Err(JoseError::InvalidKey("n"));
        }
        if !rsa_exponent_ok(e) {
            return Err(JoseError::InvalidKey("e"));
        }
        Ok(PublicJwk {
            key: KeyMaterial::Rsa {
                n: n.to_vec(),
                e: e.to_vec(),
            },
        })
    }

    /// Parse a JWK from JSON text (at most [`MAX_JWK_LEN`] bytes).
    pub fn from_json_str(text: &str) -> Result<PublicJwk, JoseError> {
        let map = json::parse_object(text.as_bytes(), "jwk", MAX_JWK_LEN)?;
        PublicJwk::from_json_object(&map)
    }

    /// Parse a JWK from an already-parsed JSON value (e.g. the `jwk` header of a DPoP proof).
    pub fn from_json_value(value: &Value) -> Result<PublicJwk, JoseError> {
        match value {
            Value::Object(map) => PublicJwk::from_json_object(map),
            _ => Err(JoseError::JsonShape("jwk")),
        }
    }

    fn from_json_object(map: &Map<String, Value>) -> Result<PublicJwk, JoseError> {
        if PRIVATE_MEMBERS.iter().any(|m| map.contains_key(*m)) {
            return Err(JoseError::PrivateKeyMaterial);
        }
        let kty = required_str(map, "kty")?;
        let crv = match map.get("crv") {
            Some(Value::String(crv)) => Some(crv.as_str()),
            Some(_) => return Err(JoseError::InvalidKey("crv")),
            None => None,
        };
        let jwk = match (kty, crv) {
            ("EC", Some("P-256")) => PublicJwk::p256(coordinate(map, "x")?, coordinate(map, "y")?),
            ("EC", Some("P-384")) => PublicJwk::p384(coordinate(map, "x")?, coordinate(map, "y")?),
            ("OKP", Some("Ed25519")) => {
                if map.contains_key("y") {
                    return Err(JoseError::InvalidKey("y"));
                }
                PublicJwk::ed25519(coordinate(map, "x")?)
            }
            ("EC" | "OKP", None) => return Err(JoseError::InvalidKey("crv")),
            ("RSA", None) => {
                // Members of the other key types mean the producer is confused
                // about what this key is; refuse rather than guess.
                if let Some(name) = ["x", "y"].into_iter().find(|m| map.contains_key(*m)) {
                    return Err(JoseError::InvalidKey(name));
                }
                let n = b64::decode(required_str(map, "n")?, "n")?;
                let e = b64::decode(required_str(map, "e")?, "e")?;
                PublicJwk::rsa(&n, &e)?
            }
            ("RSA", Some(_)) => return Err(JoseError::InvalidKey("crv")),
            _ => return Err(JoseError::UnsupportedKey),
        };
        // Optional members (RFC 7517 §4): if present they must agree with a signing key.
        match map.get("alg") {
            None => {}
            Some(Value::String(alg)) if alg == jwk.alg().as_str() => {}
            Some(_) => return Err(JoseError::InvalidKey("alg")),
        }
        match map.get("use") {
            None => {}
            Some(Value::String(u)) if u == "sig" => {}
            Some(_) => return Err(JoseError::InvalidKey("use")),
        }
        match map.get("key_ops") {
            None => {}
            Some(Value::Array(ops))
                if ops.iter().all(Value::is_string)
                    && ops.iter().any(|op| op.as_str() == Some("verify")) => {}
            Some(_) => return Err(JoseError::InvalidKey("key_ops")),
        }
        Ok(jwk)
    }

    /// The one algorithm this key verifies: `ES256` for P-256, `ES384` for
    /// P-384, `EdDSA` for Ed25519 and `RS384` for RSA (the only RSA algorithm
    /// implemented, so an RSA JWK saying `"alg":"RS256"` is refused).
    pub fn alg(&self) -> Alg {
        match self.key {
            KeyMaterial::P256 { .. } => Alg::Es256,
            KeyMaterial::P384 { .. } => Alg::Es384,
            KeyMaterial::Ed25519 { .. } => Alg::EdDsa,
            KeyMaterial::Rsa { .. } => Alg::Rs384,
        }
    }

    pub(crate) fn material(&self) -> &KeyMaterial {
        &self.key
    }

    /// The RFC 7638 thumbprint: SHA-256 over the required members in
    /// lexicographic order without whitespace, base64url without padding.
    pub fn thumbprint(&self) -> JwkThumbprint {
        JwkThumbprint(b64::encode(&sha256(self.canonical_json().as_bytes())))
    }

    /// The required members as canonical JSON (RFC 7638 §3.2). Member values are
    /// base64url or fixed ASCII names, so no JSON escaping is ever needed.
    fn canonical_json(&self) -> String {
        match &self.key {
            KeyMaterial::P256 { x, y } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                b64::encode(x),
                b64::encode(y)
            ),
            KeyMaterial::P384 { x, y } => format!(
                r#"{{"crv":"P-384","kty":"EC","x":"{}","y":"{}"}}"#,
                b64::encode(x),
                b64::encode(y)
            ),
            KeyMaterial::Ed25519 { x } => format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                b64::encode(x)
            ),
            KeyMaterial::Rsa { n, e } => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                b64::encode(e),
                b64::encode(n)
            ),
        }
    }

    /// The public JWK as a JSON object with exactly its required members.
    pub fn to_json_value(&self) -> Value {
        let mut map = Map::new();
        match &self.key {
            KeyMaterial::P256 { x, y } => {
                map.insert("kty".into(), "EC".into());
                map.insert("crv".into(), "P-256".into());
                map.insert("x".into(), b64::encode(x).into());
                map.insert("y".into(), b64::encode(y).into());
            }
            KeyMaterial::P384 { x, y } => {
                map.insert("kty".into(), "EC".into());
                map.insert("crv".into(), "P-384".into());
                map.insert("x".into(), b64::encode(x).into());
                map.insert("y".into(), b64::encode(y).into());
            }
            KeyMaterial::Ed25519 { x } => {
                map.insert("kty".into(), "OKP".into());
                map.insert("crv".into(), "Ed25519".into());
                map.insert("x".into(), b64::encode(x).into());
            }
            KeyMaterial::Rsa { n, e } => {
                map.insert("kty".into(), "RSA".into());
                map.insert("n".into(), b64::encode(n).into());
                map.insert("e".into(), b64::encode(e).into());
            }
        }
        Value::Object(map)
    }
}

impl std::fmt::Debug for PublicJwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Public data, but the thumbprint is the compact, comparable identity.
        f.debug_struct("PublicJwk")
            .field("alg", &self.alg())
            .field("jkt", &self.thumbprint().as_str())
            .finish()
    }
}

fn required_str<'m>(map: &'m Map<String, Value>, name: &'static str) -> Result<&'m str, JoseError> {
    match map.get(name) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(JoseError::InvalidKey(name)),
    }
}

fn rsa_modulus_ok(n: &[u8]) -> bool {
    // The length check first keeps the bit count below from overflowing.
    if n.len() > MAX_RSA_BITS / 8 {
        return false;
    }
    let (Some(&first), Some(&last)) = (n.first(), n.last()) else {
        return false;
    };
    // A leading zero byte is not the minimal encoding (RFC 7518 §6.3.1.1).
    if first == 0 {
        return false;
    }
    let bits = n.len() * 8 - first.leading_zeros() as usize;
    // A modulus is a product of odd primes, so odd; ring refuses even ones too.
    last & 1 == 1 && (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits)
}

fn rsa_exponent_ok(e: &[u8]) -> bool {
    // Five bytes already exceed MAX_RSA_E; the cap also keeps the u64 from overflowing.
    if e.len() > 5 || e.first().is_none_or(|&b| b == 0) {
        return false;
    }
    let value = e.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b));
    value & 1 == 1 && (3..=MAX_RSA_E).contains(&value)
}

/// A fixed-length EC coordinate or OKP key: 32 bytes (P-256, Ed25519) or 48 (P-384).
fn coordinate<const N: usize>(
    map: &Map<String, Value>,
    name: &'static str,
) -> Result<[u8; N], JoseError> {
    b64::decode_array(required_str(map, name)?, name, JoseError::InvalidKey(name))
}

/// An RFC 7638 JWK SHA-256 thumbprint, base64url without padding (43 characters).
///
/// This is the `jkt` of RFC 9449: the value of `cnf.jkt` in a bound access
/// token and the identity of a DPoP key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JwkThumbprint(String);

impl JwkThumbprint {
    /// Parse a thumbprint string; it must be canonical base64url of exactly 32 bytes.
    pub fn parse(text: &str) -> Result<JwkThumbprint, JoseError> {
        b64::decode_array::<32>(text, "jkt", JoseError::InvalidThumbprint)
            .map_err(|_| JoseError::InvalidThumbprint)?;
        Ok(JwkThumbprint(text.to_owned()))
    }

    /// The base64url text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for JwkThumbprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwkThumbprint({})", self.0)
    }
}

impl std::fmt::Display for JwkThumbprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
