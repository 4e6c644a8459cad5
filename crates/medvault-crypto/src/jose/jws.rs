//! Compact JWS (RFC 7515 §7.1): strict parsing, ES256/ES384/EdDSA/RS384 verification, EdDSA signing.

use std::ops::RangeInclusive;

use ring::signature::{
    Ed25519KeyPair, RsaPublicKeyComponents, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P384_SHA384_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA384,
};
use serde_json::{Map, Value};

use super::jwk::{KeyMaterial, MAX_RSA_BITS, MIN_RSA_BITS};
use super::{b64, json, JoseError, PublicJwk, MAX_CLAIM_LEN, MAX_TOKEN_LEN};

/// Longest accepted `typ` header value.
const MAX_TYP_LEN: usize = 64;

/// The signature algorithms this module implements: the asymmetric ones SMART
/// Backend Services requires of servers (`RS384`, `ES384`) plus `ES256` and `EdDSA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// ECDSA with P-256 and SHA-256, fixed-length `r || s` signature (RFC 7518 §3.4).
    Es256,
    /// EdDSA with Ed25519 (RFC 8037).
    EdDsa,
    /// ECDSA with P-384 and SHA-384, fixed-length 96-byte `r || s` signature (RFC 7518 §3.4).
    Es384,
    /// RSASSA-PKCS1-v1_5 with SHA-384 (RFC 7518 §3.3), 2048- to 8192-bit keys.
    Rs384,
}

impl Alg {
    /// Every implemented algorithm.
    ///
    /// Client assertions and DPoP proofs both accept all of them. RFC 9449
    /// allows any asymmetric JWS algorithm for DPoP, and nothing argues for a
    /// shorter list there: even an 8192-bit RS384 proof (key and signature
    /// inline) is under half of [`MAX_TOKEN_LEN`], and RSA verification with
    /// the small public exponents accepted is cheap.
    pub const ALL: [Alg; 4] = [Alg::Es256, Alg::EdDsa, Alg::Es384, Alg::Rs384];

    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
            Alg::Es384 => "ES384",
            Alg::Rs384 => "RS384",
        }
    }

    /// Parse a JOSE `alg` name (case-sensitive, RFC 7515 §4.1.1). Anything
    /// else, notably `none`, the `HS*` family and RSA with other hashes or
    /// PSS, is unsupported.
    pub fn parse(name: &str) -> Result<Alg, JoseError> {
        match name {
            "ES256" => Ok(Alg::Es256),
            "EdDSA" => Ok(Alg::EdDsa),
            "ES384" => Ok(Alg::Es384),
            "RS384" => Ok(Alg::Rs384),
            _ => Err(JoseError::UnsupportedAlgorithm),
        }
    }

    /// The possible signature lengths in bytes. RSA signatures are as long as
    /// the modulus, which only the verifying key fixes exactly.
    fn signature_len(self) -> RangeInclusive<usize> {
        match self {
            Alg::Es256 | Alg::EdDsa => 64..=64,
            Alg::Es384 => 96..=96,
            Alg::Rs384 => MIN_RSA_BITS / 8..=MAX_RSA_BITS / 8,
        }
    }
}

/// A parsed JOSE header. Only the parameters this module uses are kept;
/// unknown ones are ignored except `crit` and `b64`, which are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    alg: Alg,
    typ: Option<String>,
    kid: Option<String>,
    jwk: Option<PublicJwk>,
}

impl Header {
    /// The signature algorithm.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The `typ` parameter, as sent.
    pub fn typ(&self) -> Option<&str> {
        self.typ.as_deref()
    }

    /// The `kid` parameter.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The embedded public key (`jwk` parameter), already checked to be public.
    pub fn jwk(&self) -> Option<&PublicJwk> {
        self.jwk.as_ref()
    }

    /// Whether `typ` names the media type `expected` (e.g. `dpop+jwt`).
    ///
    /// Per RFC 7515 §4.1.9 media types compare case-insensitively and the
    /// `application/` prefix may be omitted, so `application/DPoP+JWT` matches too.
    pub fn typ_is(&self, expected: &str) -> bool {
        const PREFIX: &str = "application/";
        let Some(typ) = self.typ.as_deref() else {
            return false;
        };
        let bare = match (typ.get(..PREFIX.len()), typ.get(PREFIX.len()..)) {
            (Some(prefix), Some(rest)) if prefix.eq_ignore_ascii_case(PREFIX) => rest,
            _ => typ,
        };
        bare.eq_ignore_ascii_case(expected)
    }

    fn from_json(map: &Map<String, Value>) -> Result<Header, JoseError> {
        if map.contains_key("crit") {
            return Err(JoseError::UnsupportedCritical);
        }
        // RFC 7797 unencoded payloads are never used here; refuse rather than
        // risk a signer and verifier disagreeing on what was signed.
        if map.contains_key("b64") {
            return Err(JoseError::InvalidHeader("b64"));
        }
        let alg = match map.get("alg") {
            Some(Value::String(alg)) => Alg::parse(alg)?,
            _ => return Err(JoseError::InvalidHeader("alg")),
        };
        let typ = optional_str(map, "typ", MAX_TYP_LEN)?;
        let kid = optional_str(map, "kid", MAX_CLAIM_LEN)?;
        let jwk = map.get("jwk").map(PublicJwk::from_json_value).transpose()?;
        Ok(Header { alg, typ, kid, jwk })
    }
}

fn optional_str(
    map: &Map<String, Value>,
    name: &'static str,
    max_len: usize,
) -> Result<Option<String>, JoseError> {
    match map.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= max_len => Ok(Some(s.clone())),
        Some(_) => Err(JoseError::InvalidHeader(name)),
    }
}

/// A compact JWS whose structure, header and encodings are valid but whose
/// signature has not been checked yet.
pub(crate) struct Unverified<'a> {
    header: Header,
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`: exactly the signed bytes.
    signing_input: &'a str,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

/// Split and decode a compact JWS: exactly three non-empty, canonical base64url
/// parts, a header that is a bounded JSON object with a supported `alg`, and a
/// signature of a length that `alg` can produce. The payload is decoded but
/// not yet parsed.
pub(crate) fn parse_compact(compact: &str) -> Result<Unverified<'_>, JoseError> {
    if compact.len() > MAX_TOKEN_LEN {
        return Err(JoseError::TooLarge);
    }
    let (signing_input, signature) = compact
        .rsplit_once('.')
        .ok_or(JoseError::Malformed("expected three parts"))?;
    let (header, payload) = signing_input
        .split_once('.')
        .ok_or(JoseError::Malformed("expected three parts"))?;
    if payload.contains('.') {
        return Err(JoseError::Malformed("expected three parts"));
    }
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(JoseError::Malformed("empty part"));
    }
    let header_bytes = b64::decode(header, "header")?;
    let header = Header::from_json(&json::parse_object(&header_bytes, "header", MAX_TOKEN_LEN)?)?;
    let payload = b64::decode(payload, "payload")?;
    let signature = b64::decode(signature, "signature")?;
    if !header.alg.signature_len().contains(&signature.len()) {
        return Err(JoseError::Malformed("signature length"));
    }
    Ok(Unverified {
        header,
        signing_input,
        payload,
        signature,
    })
}

impl Unverified<'_> {
    pub(crate) fn header(&self) -> &Header {
        &self.header
    }

    /// The decoded, not yet authenticated payload bytes.
    pub(crate) fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Check `alg` against `allowed` and `key`, verify the signature, and only
    /// then parse the payload as bounded JSON.
    pub(crate) fn verify(
        self,
        key: &PublicJwk,
        allowed: &[Alg],
    ) -> Result<(Header, Value), JoseError> {
        if !allowed.contains(&self.header.alg) {
            return Err(JoseError::AlgorithmNotAllowed);
        }
        if key.alg() != self.header.alg {
            return Err(JoseError::AlgorithmKeyMismatch);
        }
        verify_signature(key, self.signing_input.as_bytes(), &self.signature)?;
        let payload = json::parse(&self.payload, "payload", MAX_TOKEN_LEN)?;
        Ok((self.header, payload))
    }
}

fn verify_signature(key: &PublicJwk, message: &[u8], signature: &[u8]) -> Result<(), JoseError> {
    let result = match key.material() {
        KeyMaterial::P256 { x, y } => {
            // SEC 1 uncompressed point: 0x04 || x || y.
            let point = [&[4u8][..], x, y].concat();
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).verify(message, signature)
        }
        KeyMaterial::P384 { x, y } => {
            let point = [&[4u8][..], x, y].concat();
            UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, point).verify(message, signature)
        }
        KeyMaterial::Ed25519 { x } => {
            UnparsedPublicKey::new(&ED25519, x).verify(message, signature)
        }
        KeyMaterial::Rsa { n, e } => {
            // RFC 8017 §8.2.2 step 1: the signature is exactly as long as the
            // modulus. ring checks this too; saying it here keeps it obvious.
            if signature.len() != n.len() {
                return Err(JoseError::BadSignature);
            }
            RsaPublicKeyComponents { n, e }.verify(&RSA_PKCS1_2048_8192_SHA384, message, signature)
        }
    };
    result.map_err(|_| JoseError::BadSignature)
}

/// Verify a compact JWS with `key` and return its header and JSON payload.
///
/// The token must be at most [`MAX_TOKEN_LEN`] bytes with three canonical
/// unpadded base64url parts; `alg` must be in `allowed_algs` and match the
/// key type. The payload is only parsed after the signature verified, and
/// must be JSON (any type) nested at most [`super::MAX_JSON_DEPTH`] levels.
/// The header `typ` is returned, not checked; see [`Header::typ_is`].
pub fn verify_jws(
    compact: &str,
    key: &PublicJwk,
    allowed_algs: &[Alg],
) -> Result<(Header, Value), JoseError> {
    parse_compact(compact)?.verify(key, allowed_algs)
}

/// Sign `payload` under `header` (which must say `"alg":"EdDSA"`) with an Ed25519 key.
pub(crate) fn sign_eddsa(header: &Value, payload: &Value, key: &Ed25519KeyPair) -> String {
    let mut out = b64::encode(header.to_string().as_bytes());
    out.push('.');
    out.push_str(&b64::encode(payload.to_string().as_bytes()));
    let signature = key.sign(out.as_bytes());
    out.push('.');
    out.push_str(&b64::encode(signature.as_ref()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(typ: Option<&str>) -> Header {
        Header {
            alg: Alg::EdDsa,
            typ: typ.map(str::to_owned),
            kid: None,
            jwk: None,
        }
    }

    #[test]
    fn typ_matching_follows_rfc7515() {
        assert!(header(Some("dpop+jwt")).typ_is("dpop+jwt"));
        assert!(header(Some("DPoP+JWT")).typ_is("dpop+jwt"));
        assert!(header(Some("application/dpop+jwt")).typ_is("dpop+jwt"));
        assert!(header(Some("Application/dpop+jwt")).typ_is("dpop+jwt"));
        assert!(!header(Some("application/")).typ_is("dpop+jwt"));
        assert!(!header(Some("jwt")).typ_is("dpop+jwt"));
        assert!(!header(Some("text/dpop+jwt")).typ_is("dpop+jwt"));
        assert!(!header(Some("dpop+jwt ")).typ_is("dpop+jwt"));
        assert!(!header(None).typ_is("dpop+jwt"));
        // Multi-byte characters never cause a slicing panic.
        assert!(!header(Some("applicatio\u{e9}n/x")).typ_is("x"));
    }

    #[test]
    fn alg_names() {
        for alg in Alg::ALL {
            assert_eq!(Alg::parse(alg.as_str()), Ok(alg));
        }
        for bad in [
            "none", "None", "HS256", "HS384", "RS256", "RS512", "PS384", "ES512", "es384", "rs384",
            "ES256K", "es256", "EDDSA", "",
        ] {
            assert_eq!(Alg::parse(bad), Err(JoseError::UnsupportedAlgorithm));
        }
    }
}
