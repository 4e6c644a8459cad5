//! DPoP proof validation (RFC 9449 §4.3); the replay cache and nonce issuance stay with the server.

use super::claims::Claims;
use super::jws::{parse_compact, Alg};
use super::url::{HttpUrl, MAX_URL_LEN};
use super::{b64, JoseError, JwkThumbprint, MAX_LEEWAY_SECS};
use crate::keys::{constant_time_eq, sha256};

/// The `typ` header of DPoP proofs (RFC 9449 §4.2).
pub const DPOP_TYP: &str = "dpop+jwt";
/// Longest accepted proof `jti`, in bytes.
pub const MAX_DPOP_JTI_LEN: usize = 64;
/// Default: proofs issued up to this many seconds ago are accepted.
pub const DEFAULT_MAX_AGE_SECS: u64 = 60;
/// Default: proofs issued up to this many seconds in the future (clock skew) are accepted.
pub const DEFAULT_MAX_FUTURE_SECS: u64 = 5;
/// Longest accepted HTTP method.
const MAX_METHOD_LEN: usize = 32;
/// Longest accepted DPoP nonce.
const MAX_NONCE_LEN: usize = 256;

/// What a DPoP proof must match: the request it arrived with and the server's state.
#[derive(Debug, Clone)]
pub struct DpopExpectation {
    method: String,
    url: HttpUrl,
    now: u64,
    max_age: u64,
    max_future: u64,
    /// SHA-256 of the presented access token (only the hash is kept).
    ath: Option<[u8; 32]>,
    jkt: Option<JwkThumbprint>,
    nonce: Option<String>,
}

impl DpopExpectation {
    /// Expect a proof for a `method` request to `url` (the full request URL;
    /// query and fragment are ignored), validated at `now` (Unix seconds) with
    /// the default `iat` window (60 s old to 5 s ahead).
    ///
    /// `method` is compared case-sensitively, as HTTP methods are (RFC 9110 §9.1).
    pub fn new(method: &str, url: &str, now: u64) -> Result<DpopExpectation, JoseError> {
        let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if method.is_empty() || method.len() > MAX_METHOD_LEN || !method.bytes().all(is_tchar) {
            return Err(JoseError::InvalidMethod);
        }
        Ok(DpopExpectation {
            method: method.to_owned(),
            url: HttpUrl::parse(url)?,
            now,
            max_age: DEFAULT_MAX_AGE_SECS,
            max_future: DEFAULT_MAX_FUTURE_SECS,
            ath: None,
            jkt: None,
            nonce: None,
        })
    }

    /// The request carries this access token: the proof must contain
    /// `ath` = base64url(SHA-256(token)) (RFC 9449 §4.3 check 11).
    pub fn with_access_token(mut self, access_token: &str) -> DpopExpectation {
        self.ath = Some(sha256(access_token.as_bytes()));
        self
    }

    /// The proof key must have this thumbprint (the token's `cnf.jkt`, or a
    /// `dpop_jkt` authorization request parameter).
    pub fn with_jkt(mut self, jkt: JwkThumbprint) -> DpopExpectation {
        self.jkt = Some(jkt);
        self
    }

    /// The proof must carry this server-issued nonce (RFC 9449 §8). It must
    /// be 1 to 256 `NQCHAR`s (printable ASCII other than `"` and `\`).
    pub fn with_nonce(mut self, nonce: &str) -> Result<DpopExpectation, JoseError> {
        let nqchar = |b: u8| b.is_ascii_graphic() && b != b'"' && b != b'\\';
        if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN || !nonce.bytes().all(nqchar) {
            return Err(JoseError::InvalidParameter("nonce"));
        }
        self.nonce = Some(nonce.to_owned());
        Ok(self)
    }

    /// Accept `iat` from `max_age_secs` in the past to `max_future_secs` in the
    /// future (each at most [`MAX_LEEWAY_SECS`]).
    pub fn with_iat_window(
        mut self,
        max_age_secs: u64,
        max_future_secs: u64,
    ) -> Result<DpopExpectation, JoseError> {
        if max_age_secs > MAX_LEEWAY_SECS || max_future_secs > MAX_LEEWAY_SECS {
            return Err(JoseError::InvalidParameter("iat window"));
        }
        self.max_age = max_age_secs;
        self.max_future = max_future_secs;
        Ok(self)
    }
}

/// A valid DPoP proof: what the server needs for binding and replay detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopProof {
    jkt: JwkThumbprint,
    jti: String,
    iat: u64,
}

impl DpopProof {
    /// Thumbprint of the proof's public key (what `cnf.jkt` binds to).
    pub fn jkt(&self) -> &JwkThumbprint {
        &self.jkt
    }

    /// The proof's unique id. The server must refuse a `(jkt, jti)` it has
    /// already seen within the `iat` window.
    pub fn jti(&self) -> &str {
        &self.jti
    }

    /// The proof's issue time (Unix seconds); replay entries can expire after `iat` + window.
    pub fn iat(&self) -> u64 {
        self.iat
    }
}

/// `ath`: base64url (no padding) of SHA-256 over the ASCII access token (RFC 9449 §4.2).
pub fn access_token_hash(access_token: &str) -> String {
    b64::encode(&sha256(access_token.as_bytes()))
}

/// Validate a DPoP proof (the `DPoP` request header value) against `expected`.
///
/// Checks (RFC 9449 §4.3): size and compact structure; `typ` is `dpop+jwt`;
/// `alg` is one of [`Alg::ALL`] (ES256, EdDSA, ES384, RS384: RFC 9449 allows
/// any asymmetric algorithm) and fits the embedded public `jwk` (private
/// members refused), which must verify the signature; `jti` (1-64 bytes),
/// `htm`, `htu` and `iat` present; `htm` equals the method; `htu` equals the
/// request URL after normalization, ignoring query and fragment; the nonce if
/// one is required; `iat` within the window; `ath` if an access token was
/// presented; the key thumbprint if one is expected.
///
/// Replay detection on the returned `jti` is the caller's job.
pub fn validate_dpop(proof: &str, expected: &DpopExpectation) -> Result<DpopProof, JoseError> {
    let jws = parse_compact(proof)?;
    if !jws.header().typ_is(DPOP_TYP) {
        return Err(JoseError::WrongType);
    }
    let key = jws
        .header()
        .jwk()
        .cloned()
        .ok_or(JoseError::InvalidHeader("jwk"))?;
    let (_, payload) = jws.verify(&key, &Alg::ALL)?;
    let claims = Claims::from_payload(payload)?;

    let jti = claims.string("jti", MAX_DPOP_JTI_LEN)?;
    let htm = claims.string("htm", MAX_METHOD_LEN)?;
    let htu = claims.string("htu", MAX_URL_LEN)?;
    let iat = claims.time("iat")?;

    if htm != expected.method {
        return Err(JoseError::MethodMismatch);
    }
    let htu = HttpUrl::parse(htu).map_err(|_| JoseError::InvalidClaim("htu"))?;
    if htu.as_str() != expected.url.as_str() {
        return Err(JoseError::UriMismatch);
    }
    if let Some(nonce) = &expected.nonce {
        match claims.opt_string("nonce", MAX_NONCE_LEN)? {
            None => return Err(JoseError::MissingNonce),
            Some(got) if !constant_time_eq(got.as_bytes(), nonce.as_bytes()) => {
                return Err(JoseError::NonceMismatch)
            }
            Some(_) => {}
        }
    }
    if iat.saturating_add(expected.max_age) < expected.now {
        return Err(JoseError::ProofTooOld);
    }
    if iat > expected.now.saturating_add(expected.max_future) {
        return Err(JoseError::IssuedInFuture);
    }
    if let Some(want) = &expected.ath {
        let got = claims
            .opt_string("ath", MAX_NONCE_LEN)?
            .ok_or(JoseError::MissingAth)?;
        let got: [u8; 32] = b64::decode_array(got, "ath", JoseError::InvalidClaim("ath"))
            .map_err(|_| JoseError::InvalidClaim("ath"))?;
        if !constant_time_eq(&got, want) {
            return Err(JoseError::AthMismatch);
        }
    }
    let jkt = key.thumbprint();
    if expected.jkt.as_ref().is_some_and(|want| *want != jkt) {
        return Err(JoseError::ThumbprintMismatch);
    }
    Ok(DpopProof {
        jkt,
        jti: jti.to_owned(),
        iat,
    })
}
