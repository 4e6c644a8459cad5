//! Public JSON Web Keys (RFC 7517/7518/8037) for P-256 and Ed25519, and RFC 7638 thumbprints.

use serde_json::{Map, Value};

use super::jws::Alg;
use super::{b64, json, JoseError, MAX_JWK_LEN};
use crate::keys::sha256;

/// JWK members that only private (or symmetric) keys carry. Their presence in
/// a key that should be public means someone is leaking a private key, so it
/// is refused rather than ignored.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A public signature-verification key: P-256 (`kty` `EC`) or Ed25519 (`kty` `OKP`).
///
/// Only constructible from well-formed public key members, so holding one
/// means the coordinates have the right lengths and no private part was
/// present. Whether a P-256 point actually lies on the curve is checked by
/// ring when a signature is verified (an invalid point never verifies).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicJwk {
    key: KeyMaterial,
}

#[derive(Clone, PartialEq, Eq)]
pub(crate) enum KeyMaterial {
    /// Affine coordinates of a P-256 point, big-endian.
    P256 { x: [u8; 32], y: [u8; 32] },
    /// An Ed25519 public key (RFC 8032 encoding).
    Ed25519 { x: [u8; 32] },
}

impl PublicJwk {
    /// A P-256 key from its big-endian affine coordinates.
    pub fn p256(x: [u8; 32], y: [u8; 32]) -> PublicJwk {
        PublicJwk {
            key: KeyMaterial::P256 { x, y },
        }
    }

    /// An Ed25519 key from its 32-byte public key.
    pub fn ed25519(x: [u8; 32]) -> PublicJwk {
        PublicJwk {
            key: KeyMaterial::Ed25519 { x },
        }
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
            ("OKP", Some("Ed25519")) => {
                if map.contains_key("y") {
                    return Err(JoseError::InvalidKey("y"));
                }
                PublicJwk::ed25519(coordinate(map, "x")?)
            }
            ("EC" | "OKP", None) => return Err(JoseError::InvalidKey("crv")),
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

    /// The one algorithm this key verifies: `ES256` for P-256, `EdDSA` for Ed25519.
    pub fn alg(&self) -> Alg {
        match self.key {
            KeyMaterial::P256 { .. } => Alg::Es256,
            KeyMaterial::Ed25519 { .. } => Alg::EdDsa,
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
            KeyMaterial::Ed25519 { x } => format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                b64::encode(x)
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
            KeyMaterial::Ed25519 { x } => {
                map.insert("kty".into(), "OKP".into());
                map.insert("crv".into(), "Ed25519".into());
                map.insert("x".into(), b64::encode(x).into());
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

fn coordinate(map: &Map<String, Value>, name: &'static str) -> Result<[u8; 32], JoseError> {
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
