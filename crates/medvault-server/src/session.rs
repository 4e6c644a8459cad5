//! Sessions: short-lived access tokens bound to the client's DPoP key (RFC 9449), issued at
//! login, and the check every authenticated request passes: token signature and lifetime,
//! a fresh proof of possession for this method and URL, no replayed proof, and an account
//! that still exists, verifies and is enabled (so role changes and disabling apply at once).

use std::collections::HashMap;
use std::sync::Mutex;

use medvault_crypto::jose::{
    random_jti, validate_dpop, AccessClaims, DpopExpectation, JwkThumbprint,
};
use medvault_crypto::Random;
use medvault_store::Store;

use crate::accounts::{self, Account, AccountError};
use crate::vault::Keys;

/// Access tokens live this long; clients log in again (refresh tokens are not built yet).
pub const ACCESS_TOKEN_SECS: u64 = 300;
/// A proof is accepted for this long after its `iat` (and is remembered as long).
const PROOF_MAX_AGE_SECS: u64 = 60;
/// At most this many proofs are remembered; beyond it new proofs are refused (a flood
/// must not make the replay cache forget).
const MAX_REMEMBERED: usize = 200_000;
/// The `client_id` of tokens issued to a password login.
const PASSWORD_CLIENT: &str = "opaque-login";

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("authentication required: an Authorization: DPoP token and a DPoP proof")]
    Missing,
    #[error("the access token is invalid or expired")]
    InvalidToken,
    #[error("the DPoP proof is invalid for this request")]
    InvalidProof,
    #[error("the DPoP proof was already used")]
    Replayed,
    #[error("the account is disabled or no longer exists")]
    AccountUnusable,
    #[error("an account record failed its integrity check")]
    Forged,
    #[error("storage error")]
    Store,
    #[error("cryptographic failure")]
    Crypto,
}

impl From<AccountError> for SessionError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Forged => SessionError::Forged,
            AccountError::Store(_) => SessionError::Store,
            _ => SessionError::AccountUnusable,
        }
    }
}

/// An authenticated caller.
pub struct Authenticated {
    pub account: Account,
    pub claims: AccessClaims,
}

/// The replay cache of DPoP proofs.
#[derive(Default)]
pub struct Sessions {
    seen: Mutex<HashMap<String, u64>>,
}

impl Sessions {
    pub fn new() -> Sessions {
        Sessions::default()
    }

    /// Remember a proof; `false` if it was seen before (or the cache is full).
    fn first_use(&self, jkt: &JwkThumbprint, jti: &str, iat: u64, now: u64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_REMEMBERED / 2 {
            seen.retain(|_, until| *until > now);
        }
        if seen.len() >= MAX_REMEMBERED {
            return false;
        }
        let key = format!("{}|{jti}", jkt.as_str());
        if seen.contains_key(&key) {
            return false;
        }
        seen.insert(key, iat.saturating_add(PROOF_MAX_AGE_SECS + 5));
        true
    }

    /// Check the DPoP proof a login finish sends (no token yet) and return the key it
    /// proves. It is not put in the replay cache (anyone may send one, so they could fill
    /// it); a login id finishes only once, which already makes the proof single-use.
    pub fn login_proof(
        &self,
        proof: Option<&str>,
        url: &str,
        now: u64,
    ) -> Result<JwkThumbprint, SessionError> {
        let proof = proof.ok_or(SessionError::Missing)?;
        let expect = DpopExpectation::new("POST", url, now)
            .and_then(|e| e.with_iat_window(PROOF_MAX_AGE_SECS, 5))
            .map_err(|_| SessionError::InvalidProof)?;
        let p = validate_dpop(proof, &expect).map_err(|_| SessionError::InvalidProof)?;
        Ok(p.jkt().clone())
    }

    /// Issue an access token for `account`, bound to the DPoP key `jkt`.
    pub fn issue(
        &self,
        keys: &Keys,
        rng: &dyn Random,
        issuer: &str,
        account: &Account,
        jkt: JwkThumbprint,
        now: u64,
    ) -> Result<String, SessionError> {
        let jti = random_jti(rng).map_err(|_| SessionError::Crypto)?;
        let claims = AccessClaims::new(
            account.id(),
            account.role().as_str(),
            PASSWORD_CLIENT,
            &jti,
            now,
            now + ACCESS_TOKEN_SECS,
        )
        .map_err(|_| SessionError::Crypto)?
        .bound_to(jkt);
        Ok(keys.access_tokens().issue(issuer, issuer, &claims))
    }

    /// Authenticate one request: `authorization` and `dpop` are the header values, `method`
    /// and `url` (absolute, as the client addressed it) what the proof must name.
    #[allow(clippy::too_many_arguments)]
    pub fn authenticate(
        &self,
        store: &dyn Store,
        keys: &Keys,
        issuer: &str,
        authorization: Option<&str>,
        dpop: Option<&str>,
        method: &str,
        url: &str,
        now: u64,
    ) -> Result<Authenticated, SessionError> {
        let token = authorization
            .and_then(|h| h.strip_prefix("DPoP "))
            .map(str::trim)
            .ok_or(SessionError::Missing)?;
        let proof = dpop.ok_or(SessionError::Missing)?;
        let verifier = keys
            .access_tokens()
            .verifier(issuer, issuer)
            .map_err(|_| SessionError::Crypto)?;
        let claims = verifier
            .verify(token, now)
            .map_err(|_| SessionError::InvalidToken)?;
        // A token without a key binding is never accepted here (no bearer tokens).
        let jkt = claims
            .cnf_jkt()
            .cloned()
            .ok_or(SessionError::InvalidToken)?;
        let expect = DpopExpectation::new(method, url, now)
            .and_then(|e| e.with_iat_window(PROOF_MAX_AGE_SECS, 5))
            .map_err(|_| SessionError::InvalidProof)?
            .with_access_token(token)
            .with_jkt(jkt);
        let p = validate_dpop(proof, &expect).map_err(|_| SessionError::InvalidProof)?;
        if !self.first_use(p.jkt(), p.jti(), p.iat(), now) {
            return Err(SessionError::Replayed);
        }
        // The account as it is now, not as it was at login.
        let account = accounts::load(store, keys, claims.sub())?
            .filter(|a| !a.disabled())
            .ok_or(SessionError::AccountUnusable)?;
        Ok(Authenticated { account, claims })
    }
}
