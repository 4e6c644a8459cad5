//! `private_key_jwt` client assertions (RFC 7523 §3, SMART Backend Services) without replay state.

use super::claims::{check_exp, check_iat, check_nbf, Claims};
use super::jws::{parse_compact, Alg};
use super::url::HttpUrl;
use super::MAX_TOKEN_LEN;
use super::{json, JoseError, PublicJwk, DEFAULT_LEEWAY_SECS, MAX_CLAIM_LEN, MAX_LEEWAY_SECS};

/// Longest accepted time between now and an assertion's `exp` (SMART: five minutes).
pub const MAX_ASSERTION_LIFETIME_SECS: u64 = 300;

/// What a client assertion must match.
#[derive(Debug, Clone)]
pub struct AssertionExpectation {
    client_id: String,
    token_endpoint: HttpUrl,
    now: u64,
    leeway: u64,
}

impl AssertionExpectation {
    /// Expect an assertion by `client_id` for the token endpoint at
    /// `token_endpoint_url` (absolute http(s), no query or fragment), checked
    /// at `now` (Unix seconds) with [`DEFAULT_LEEWAY_SECS`] of clock skew.
    pub fn new(
        client_id: &str,
        token_endpoint_url: &str,
        now: u64,
    ) -> Result<AssertionExpectation, JoseError> {
        if client_id.is_empty() || client_id.len() > MAX_CLAIM_LEN {
            return Err(JoseError::InvalidParameter("client_id"));
        }
        let token_endpoint = HttpUrl::parse(token_endpoint_url)?;
        if token_endpoint.had_query_or_fragment() {
            return Err(JoseError::InvalidParameter("token_endpoint_url"));
        }
        Ok(AssertionExpectation {
            client_id: client_id.to_owned(),
            token_endpoint,
            now,
            leeway: DEFAULT_LEEWAY_SECS,
        })
    }

    /// Use a different clock-skew allowance (at most [`MAX_LEEWAY_SECS`]).
    pub fn with_leeway(mut self, secs: u64) -> Result<AssertionExpectation, JoseError> {
        if secs > MAX_LEEWAY_SECS {
            return Err(JoseError::InvalidParameter("leeway"));
        }
        self.leeway = secs;
        Ok(self)
    }
}

/// A valid client assertion: what the server needs for replay detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAssertion {
    jti: String,
    exp: u64,
}

impl ClientAssertion {
    /// The assertion's unique id. The server must refuse a `(client_id, jti)`
    /// it has already seen before `exp`.
    pub fn jti(&self) -> &str {
        &self.jti
    }

    /// Expiry (Unix seconds): how long the replay entry must be kept.
    pub fn exp(&self) -> u64 {
        self.exp
    }
}

/// Validate a `client_assertion` JWT signed by the client's registered `key`.
///
/// Checks: size and compact structure; `typ` absent or `JWT` (so DPoP proofs
/// and access tokens are never accepted as assertions); `alg` (any of
/// [`Alg::ALL`]: ES256, EdDSA, and SMART's required ES384 and RS384) fits
/// `key` and the signature verifies; `iss` == client id; `sub` == `iss`;
/// `aud` (string or array) contains the token endpoint URL (compared after
/// normalization); `exp` not passed and at most five minutes ahead (both with
/// leeway); `nbf`/`iat` if present not in the future; `jti` present
/// (1-256 bytes).
pub fn validate_client_assertion(
    jwt: &str,
    key: &PublicJwk,
    expect: &AssertionExpectation,
) -> Result<ClientAssertion, JoseError> {
    let jws = parse_compact(jwt)?;
    if jws.header().typ().is_some() && !jws.header().typ_is("JWT") {
        return Err(JoseError::WrongType);
    }
    let (_, payload) = jws.verify(key, &Alg::ALL)?;
    let claims = Claims::from_payload(payload)?;
    let iss = claims.string("iss", MAX_CLAIM_LEN)?;
    if iss != expect.client_id {
        return Err(JoseError::WrongIssuer);
    }
    if claims.string("sub", MAX_CLAIM_LEN)? != iss {
        return Err(JoseError::SubjectMismatch);
    }
    let aud_ok = claims.audience_contains(|aud| {
        HttpUrl::parse(aud).is_ok_and(|url| {
            !url.had_query_or_fragment() && url.as_str() == expect.token_endpoint.as_str()
        })
    })?;
    if !aud_ok {
        return Err(JoseError::WrongAudience);
    }
    let exp = claims.time("exp")?;
    check_exp(exp, expect.now, expect.leeway)?;
    let latest = expect
        .now
        .saturating_add(MAX_ASSERTION_LIFETIME_SECS)
        .saturating_add(expect.leeway);
    if exp > latest {
        return Err(JoseError::LifetimeTooLong);
    }
    check_nbf(claims.opt_time("nbf")?, expect.now, expect.leeway)?;
    check_iat(claims.opt_time("iat")?, expect.now, expect.leeway)?;
    let jti = claims.string("jti", MAX_CLAIM_LEN)?;
    Ok(ClientAssertion {
        jti: jti.to_owned(),
        exp,
    })
}

/// The `iss` of an assertion **without verifying anything but its syntax**,
/// so the server can look up which client (and so which key) to verify it
/// with. Never trust the result before [`validate_client_assertion`] succeeds.
pub fn unverified_client_id(jwt: &str) -> Result<String, JoseError> {
    let jws = parse_compact(jwt)?;
    let payload = json::parse(jws.payload(), "payload", MAX_TOKEN_LEN)?;
    let claims = Claims::from_payload(payload)?;
    Ok(claims.string("iss", MAX_CLAIM_LEN)?.to_owned())
}
