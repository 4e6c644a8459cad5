//! The server's own access tokens: EdDSA-signed `at+jwt` (RFC 9068 shape), optionally DPoP-bound via `cnf.jkt`.

use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde_json::{Map, Value};

use super::claims::{check_exp, check_iat, check_nbf, Claims};
use super::jws::{parse_compact, sign_eddsa, Alg};
use super::url::MAX_URL_LEN;
use super::{b64, JoseError, JwkThumbprint, PublicJwk};
use super::{DEFAULT_LEEWAY_SECS, MAX_CLAIM_LEN, MAX_LEEWAY_SECS};
use crate::{CryptoError, Random, SecretKey};

/// The `typ` header of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// Random bytes in a [`random_jti`] (128 bits).
const JTI_BYTES: usize = 16;

/// The claims medvault puts in (and requires of) its access tokens, besides `iss` and `aud`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    sub: String,
    role: String,
    client_id: String,
    jti: String,
    iat: u64,
    exp: u64,
    cnf_jkt: Option<JwkThumbprint>,
}

impl AccessClaims {
    /// Claims for a new token. Strings must be non-empty and at most
    /// [`MAX_CLAIM_LEN`] bytes, and `exp` must be after `iat`.
    pub fn new(
        sub: &str,
        role: &str,
        client_id: &str,
        jti: &str,
        iat: u64,
        exp: u64,
    ) -> Result<AccessClaims, JoseError> {
        for (value, name) in [
            (sub, "sub"),
            (role, "role"),
            (client_id, "client_id"),
            (jti, "jti"),
        ] {
            if value.is_empty() || value.len() > MAX_CLAIM_LEN {
                return Err(JoseError::InvalidParameter(name));
            }
        }
        if exp <= iat {
            return Err(JoseError::InvalidParameter("exp"));
        }
        Ok(AccessClaims {
            sub: sub.to_owned(),
            role: role.to_owned(),
            client_id: client_id.to_owned(),
            jti: jti.to_owned(),
            iat,
            exp,
            cnf_jkt: None,
        })
    }

    /// Bind the token to a DPoP key (RFC 9449 §6.1: `"cnf":{"jkt":...}`).
    pub fn bound_to(mut self, jkt: JwkThumbprint) -> AccessClaims {
        self.cnf_jkt = Some(jkt);
        self
    }

    /// The subject (user) the token was issued for.
    pub fn sub(&self) -> &str {
        &self.sub
    }

    /// The medvault role of the subject.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The OAuth client the token was issued to.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The unique token id.
    pub fn jti(&self) -> &str {
        &self.jti
    }

    /// Issued-at, Unix seconds.
    pub fn iat(&self) -> u64 {
        self.iat
    }

    /// Expiry, Unix seconds.
    pub fn exp(&self) -> u64 {
        self.exp
    }

    /// The thumbprint of the DPoP key the token is bound to, if any. A bound
    /// token must only be accepted with a DPoP proof signed by that key.
    pub fn cnf_jkt(&self) -> Option<&JwkThumbprint> {
        self.cnf_jkt.as_ref()
    }
}

/// A fresh random `jti`: 128 bits from `rng`, base64url (22 characters).
pub fn random_jti(rng: &dyn Random) -> Result<String, CryptoError> {
    let mut bytes = [0u8; JTI_BYTES];
    rng.fill(&mut bytes)?;
    Ok(b64::encode(&bytes))
}

/// Signs the server's access tokens with Ed25519 (deterministic, so no randomness needed).
///
/// The `kid` header is the RFC 7638 thumbprint of the public key, so
/// verifiers and JWKS consumers can tell rotated keys apart.
pub struct TokenSigner {
    key: Ed25519KeyPair,
    public: PublicJwk,
    kid: String,
}

impl TokenSigner {
    /// Build a signer from a 32-byte Ed25519 seed (normally a key derived with
    /// [`SecretKey::derive`]). The seed is only borrowed; the caller's
    /// [`SecretKey`] zeroizes it. Note that ring keeps its own expanded copy of
    /// the private key, which it does not zeroize on drop.
    pub fn new(seed: &SecretKey) -> TokenSigner {
        // The seed is a SecretKey, always exactly the 32 bytes Ed25519 needs;
        // that length is the only thing from_seed_unchecked can reject.
        #[allow(clippy::expect_used)]
        let key = Ed25519KeyPair::from_seed_unchecked(seed.expose())
            .expect("a 32-byte seed is a valid Ed25519 seed");
        let mut x = [0u8; 32];
        // Ed25519 public keys are always 32 bytes, so this cannot panic.
        x.copy_from_slice(key.public_key().as_ref());
        let public = PublicJwk::ed25519(x);
        let kid = public.thumbprint().as_str().to_owned();
        TokenSigner { key, public, kid }
    }

    /// The public key, for verifiers and the JWKS endpoint.
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.public
    }

    /// The `kid` put in every token header (the public key's thumbprint).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Sign arbitrary claims as a compact JWS with header
    /// `{"alg":"EdDSA","typ":"at+jwt","kid":...}`.
    ///
    /// Nothing about the claims is checked here; prefer [`TokenSigner::issue`].
    /// Claims large enough to push the token past [`MAX_TOKEN_LEN`](super::MAX_TOKEN_LEN) produce a
    /// token that no verifier in this module accepts.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Map::new();
        header.insert("alg".into(), Alg::EdDsa.as_str().into());
        header.insert("typ".into(), ACCESS_TOKEN_TYP.into());
        header.insert("kid".into(), self.kid.clone().into());
        sign_eddsa(&Value::Object(header), claims, &self.key)
    }

    /// Issue an access token for `claims` from `issuer` to `audience`
    /// (the claims of RFC 9068 §2.2 plus medvault's `role` and, if bound, `cnf`).
    pub fn issue(&self, issuer: &str, audience: &str, claims: &AccessClaims) -> String {
        let mut map = Map::new();
        map.insert("iss".into(), issuer.into());
        map.insert("sub".into(), claims.sub.clone().into());
        map.insert("aud".into(), audience.into());
        map.insert("client_id".into(), claims.client_id.clone().into());
        map.insert("role".into(), claims.role.clone().into());
        map.insert("jti".into(), claims.jti.clone().into());
        map.insert("iat".into(), claims.iat.into());
        map.insert("exp".into(), claims.exp.into());
        if let Some(jkt) = &claims.cnf_jkt {
            let mut cnf = Map::new();
            cnf.insert("jkt".into(), jkt.as_str().into());
            map.insert("cnf".into(), Value::Object(cnf));
        }
        self.sign(&Value::Object(map))
    }

    /// A verifier for this signer's tokens.
    pub fn verifier(&self, issuer: &str, audience: &str) -> Result<TokenVerifier, JoseError> {
        TokenVerifier::new(self.public.clone(), issuer, audience)
    }
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// Verifies access tokens issued by a [`TokenSigner`]: signature, `typ`,
/// `kid`, `iss`, `aud` and the time claims.
#[derive(Debug, Clone)]
pub struct TokenVerifier {
    key: PublicJwk,
    kid: String,
    issuer: String,
    audience: String,
    leeway: u64,
}

impl TokenVerifier {
    /// Accept tokens signed by `key` (with its own `alg`) for `issuer` and `audience`
    /// (both non-empty, at most 2 KiB), with [`DEFAULT_LEEWAY_SECS`] of clock skew.
    pub fn new(key: PublicJwk, issuer: &str, audience: &str) -> Result<TokenVerifier, JoseError> {
        for (value, name) in [(issuer, "issuer"), (audience, "audience")] {
            if value.is_empty() || value.len() > MAX_URL_LEN {
                return Err(JoseError::InvalidParameter(name));
            }
        }
        Ok(TokenVerifier {
            kid: key.thumbprint().as_str().to_owned(),
            key,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway: DEFAULT_LEEWAY_SECS,
        })
    }

    /// Use a different clock-skew allowance (at most [`MAX_LEEWAY_SECS`]).
    pub fn with_leeway(mut self, secs: u64) -> Result<TokenVerifier, JoseError> {
        if secs > MAX_LEEWAY_SECS {
            return Err(JoseError::InvalidParameter("leeway"));
        }
        self.leeway = secs;
        Ok(self)
    }

    /// Verify `token` at time `now` (Unix seconds) and return its claims.
    ///
    /// Checks, in order: size and structure, `typ` is `at+jwt`, `kid` (if
    /// present) is this key's thumbprint, `alg` and signature, then `iss`,
    /// `aud`, `exp`, `nbf`, `iat` (with leeway) and the shape of `sub`,
    /// `client_id`, `role`, `jti` and `cnf`. A `cnf` without `jkt` is refused
    /// rather than treated as unbound.
    pub fn verify(&self, token: &str, now: u64) -> Result<AccessClaims, JoseError> {
        let jws = parse_compact(token)?;
        if !jws.header().typ_is(ACCESS_TOKEN_TYP) {
            return Err(JoseError::WrongType);
        }
        if jws.header().kid().is_some_and(|kid| kid != self.kid) {
            return Err(JoseError::KeyIdMismatch);
        }
        let (_, payload) = jws.verify(&self.key, &[self.key.alg()])?;
        let claims = Claims::from_payload(payload)?;
        if claims.string("iss", MAX_URL_LEN)? != self.issuer {
            return Err(JoseError::WrongIssuer);
        }
        if !claims.audience_contains(|aud| aud == self.audience)? {
            return Err(JoseError::WrongAudience);
        }
        let exp = claims.time("exp")?;
        let iat = claims.time("iat")?;
        check_exp(exp, now, self.leeway)?;
        check_nbf(claims.opt_time("nbf")?, now, self.leeway)?;
        check_iat(Some(iat), now, self.leeway)?;
        if exp <= iat {
            return Err(JoseError::InvalidClaim("exp"));
        }
        let cnf_jkt = match claims.get("cnf") {
            None => None,
            Some(Value::Object(cnf)) => match cnf.get("jkt") {
                Some(Value::String(jkt)) => {
                    Some(JwkThumbprint::parse(jkt).map_err(|_| JoseError::InvalidClaim("cnf"))?)
                }
                _ => return Err(JoseError::InvalidClaim("cnf")),
            },
            Some(_) => return Err(JoseError::InvalidClaim("cnf")),
        };
        Ok(AccessClaims {
            sub: claims.string("sub", MAX_CLAIM_LEN)?.to_owned(),
            role: claims.string("role", MAX_CLAIM_LEN)?.to_owned(),
            client_id: claims.string("client_id", MAX_CLAIM_LEN)?.to_owned(),
            jti: claims.string("jti", MAX_CLAIM_LEN)?.to_owned(),
            iat,
            exp,
            cnf_jkt,
        })
    }
}
