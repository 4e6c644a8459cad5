//! Sessions: short-lived access tokens bound to the client's DPoP key (RFC 9449), issued at
//! login, and the check every authenticated request passes: token signature and lifetime,
//! a fresh proof of possession for this method and URL, no replayed proof, and an account
//! that still exists, verifies and is enabled (so role changes and disabling apply at once).
//! Rotating refresh tokens (bound to the same DPoP key) renew access tokens for up to
//! `SESSION_SECS` after login; logout revokes them and the access token it was made with.

use std::collections::HashMap;
use std::sync::Mutex;

use medvault_crypto::jose::{
    random_jti, validate_dpop, AccessClaims, DpopExpectation, JwkThumbprint,
};
use medvault_crypto::keys::{constant_time_eq, hmac_sha256, sha256};
use medvault_crypto::Random;
use medvault_store::{RefreshTokenRecord, Store, StoreError, TokenState};

use crate::accounts::{self, Account, AccountError};
use crate::clients::{self, Client};
use crate::vault::Keys;

/// Access tokens live this long; clients renew them with their refresh token.
pub const ACCESS_TOKEN_SECS: u64 = 300;
/// A login's refresh tokens renew access for at most this long after the login.
pub const SESSION_SECS: i64 = 12 * 3600;
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
    #[error("the refresh token is unknown or belongs to another account")]
    NotOwnRefresh,
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

/// Proof and assertion ids seen, each until it expires. Expired ids are dropped every
/// `PRUNE_EVERY_SECS`, so the cache's size follows the request rate over a proof's lifetime
/// rather than growing to its cap, and at most once a second while it is half full (each
/// scan is of the whole cache, under its lock: once per request would make a flood
/// quadratic).
///
/// Ids are kept as 32-byte digests, not strings: an entry takes about 41 bytes in the table
/// instead of 33 plus a separate allocation of about 90, so a full cache holds about 11 MB
/// instead of 26.
#[derive(Default)]
struct ReplayCache {
    until: HashMap<[u8; 32], u64>,
    last_prune: u64,
}

/// How often expired ids leave the replay cache, at the latest.
const PRUNE_EVERY_SECS: u64 = 10;

impl ReplayCache {
    /// Remember `key` until `until`; `false` if it is remembered already (a replay) or the
    /// cache is full.
    fn first_use(&mut self, key: [u8; 32], until: u64, now: u64) -> bool {
        let due = now >= self.last_prune.saturating_add(PRUNE_EVERY_SECS);
        if due || (self.until.len() >= MAX_REMEMBERED / 2 && now > self.last_prune) {
            self.until.retain(|_, u| *u > now);
            self.last_prune = now;
        }
        if self.until.len() >= MAX_REMEMBERED || self.until.contains_key(&key) {
            return false;
        }
        self.until.insert(key, until);
        true
    }
}

/// The replay cache's key for an id: a digest of its kind, its issuer (a key thumbprint or a
/// client id) and the id, each length-prefixed so no two triples share an encoding.
fn replay_key(kind: &[u8], issuer: &str, jti: &str) -> [u8; 32] {
    let mut m = Vec::with_capacity(24 + kind.len() + issuer.len() + jti.len());
    for part in [kind, issuer.as_bytes(), jti.as_bytes()] {
        accounts::push_field(&mut m, part);
    }
    sha256(&m)
}

/// The replay cache of DPoP proofs.
#[derive(Default)]
pub struct Sessions {
    seen: Mutex<ReplayCache>,
    /// Access tokens ended by logout before their expiry: jti → exp.
    ended: Mutex<HashMap<String, u64>>,
    /// Access tokens issued by a password login (not a refresh): jti → issued at.
    fresh: Mutex<HashMap<String, u64>>,
}

/// How long after a password login its access token may change the password.
pub const FRESH_LOGIN_SECS: u64 = 300;

/// The `jti` of a token, read without verifying it: only for a token that was (or is
/// about to be) verified by `authenticate`.
pub fn unverified_jti(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("jti")?.as_str().map(str::to_string)
}

fn refresh_mac(keys: &Keys, r: &RefreshTokenRecord) -> [u8; 32] {
    let mut m = b"medvault/refresh-token/v1".to_vec();
    m.extend_from_slice(&r.hash);
    m.extend_from_slice(&r.family);
    for text in [&r.account, &r.jkt] {
        accounts::push_field(&mut m, text.as_bytes());
    }
    m.extend_from_slice(&r.issued_ms.to_be_bytes());
    m.extend_from_slice(&r.expires_ms.to_be_bytes());
    hmac_sha256(keys.integrity(), &m)
}

fn new_refresh(
    keys: &Keys,
    rng: &dyn Random,
    family: [u8; 16],
    account: &str,
    jkt: &str,
    now_ms: i64,
    expires_ms: i64,
) -> Result<(String, RefreshTokenRecord), SessionError> {
    let mut secret = [0u8; 32];
    rng.fill(&mut secret).map_err(|_| SessionError::Crypto)?;
    let text = format!("mvt_{}", crate::vault::hex(&secret));
    let mut r = RefreshTokenRecord {
        hash: sha256(text.as_bytes()),
        family,
        account: account.into(),
        jkt: jkt.into(),
        issued_ms: now_ms,
        expires_ms,
        state: TokenState::Open,
        mac: [0; 32],
    };
    r.mac = refresh_mac(keys, &r);
    Ok((text, r))
}

/// What a refresh returns.
pub struct Refreshed {
    pub account: Account,
    pub access_token: String,
    pub refresh_token: String,
}

impl Sessions {
    pub fn new() -> Sessions {
        Sessions::default()
    }

    /// Remember a proof; `false` if it was seen before (or the cache is full).
    fn first_use(&self, jkt: &JwkThumbprint, jti: &str, iat: u64, now: u64) -> bool {
        let key = replay_key(b"dpop", jkt.as_str(), jti);
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first_use(key, iat.saturating_add(PROOF_MAX_AGE_SECS + 5), now)
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

    /// Start a refresh-token family for a login of `account` bound to `jkt`.
    pub fn issue_refresh(
        &self,
        store: &dyn Store,
        keys: &Keys,
        rng: &dyn Random,
        account: &Account,
        jkt: &JwkThumbprint,
        now_ms: i64,
    ) -> Result<String, SessionError> {
        let mut family = [0u8; 16];
        rng.fill(&mut family).map_err(|_| SessionError::Crypto)?;
        let expires = now_ms.saturating_add(SESSION_SECS * 1000);
        let (text, r) = new_refresh(
            keys,
            rng,
            family,
            account.id(),
            jkt.as_str(),
            now_ms,
            expires,
        )?;
        store
            .insert_refresh_token(&r)
            .map_err(|_| SessionError::Store)?;
        Ok(text)
    }

    /// Load a refresh token row by its text; a row failing its MAC is a forgery.
    fn refresh_row(
        store: &dyn Store,
        keys: &Keys,
        token: &str,
    ) -> Result<RefreshTokenRecord, SessionError> {
        let r = store
            .refresh_token(&sha256(token.trim().as_bytes()))
            .map_err(|_| SessionError::Store)?
            .ok_or(SessionError::InvalidToken)?;
        if !constant_time_eq(&refresh_mac(keys, &r), &r.mac) {
            tracing::error!(account = %r.account, "refresh token row failed its integrity check");
            return Err(SessionError::Forged);
        }
        Ok(r)
    }

    /// Renew: check the DPoP proof (fresh, unreplayed, for `POST url`, by the key the token
    /// is bound to), use the refresh token up and issue its successor with a new access
    /// token. Presenting a token that was already used revokes its whole family (it was
    /// copied: RFC 9700 §4.14).
    #[allow(clippy::too_many_arguments)]
    pub fn refresh(
        &self,
        store: &dyn Store,
        keys: &Keys,
        rng: &dyn Random,
        issuer: &str,
        refresh_token: &str,
        proof: Option<&str>,
        url: &str,
        now_ms: i64,
    ) -> Result<Refreshed, SessionError> {
        let now = u64::try_from(now_ms.div_euclid(1000)).unwrap_or(0);
        let proof = proof.ok_or(SessionError::Missing)?;
        let expect = DpopExpectation::new("POST", url, now)
            .and_then(|e| e.with_iat_window(PROOF_MAX_AGE_SECS, 5))
            .map_err(|_| SessionError::InvalidProof)?;
        let p = validate_dpop(proof, &expect).map_err(|_| SessionError::InvalidProof)?;
        // The token and its key first: only a proof by a key that holds a session may take
        // a place in the replay cache (anyone could fill it otherwise).
        let row = Self::refresh_row(store, keys, refresh_token)?;
        if !constant_time_eq(row.jkt.as_bytes(), p.jkt().as_str().as_bytes()) {
            return Err(SessionError::InvalidProof);
        }
        if !self.first_use(p.jkt(), p.jti(), p.iat(), now) {
            return Err(SessionError::Replayed);
        }
        match row.state {
            TokenState::Open => {}
            TokenState::Used => {
                tracing::warn!(account = %row.account, "a used refresh token was presented again; its session is revoked");
                store
                    .revoke_refresh_family(&row.family)
                    .map_err(|_| SessionError::Store)?;
                return Err(SessionError::InvalidToken);
            }
            TokenState::Revoked => return Err(SessionError::InvalidToken),
        }
        if now_ms >= row.expires_ms {
            return Err(SessionError::InvalidToken);
        }
        let account = accounts::load(store, keys, &row.account)?
            .filter(|a| !a.disabled())
            .ok_or(SessionError::AccountUnusable)?;
        let (text, next) = new_refresh(
            keys,
            rng,
            row.family,
            &row.account,
            &row.jkt,
            now_ms,
            row.expires_ms,
        )?;
        match store.rotate_refresh_token(&row.hash, &next) {
            Ok(()) => {}
            // Used concurrently: one of the two presenters is not the client.
            Err(StoreError::Conflict) => {
                store
                    .revoke_refresh_family(&row.family)
                    .map_err(|_| SessionError::Store)?;
                return Err(SessionError::InvalidToken);
            }
            Err(_) => return Err(SessionError::Store),
        }
        let access_token = self.issue(keys, rng, issuer, &account, p.jkt().clone(), now)?;
        Ok(Refreshed {
            account,
            access_token,
            refresh_token: text,
        })
    }

    /// Log out the authenticated session `who`: its access token stops working now and the
    /// refresh-token family of `refresh_token` (which must be the same account's), or with
    /// `everywhere` every refresh token of the account, is revoked. Returns how many refresh
    /// tokens were revoked.
    pub fn logout(
        &self,
        store: &dyn Store,
        keys: &Keys,
        who: &Authenticated,
        refresh_token: Option<&str>,
        everywhere: bool,
    ) -> Result<u64, SessionError> {
        // Check everything before ending anything.
        let family = match refresh_token {
            None => None,
            Some(t) => match Self::refresh_row(store, keys, t) {
                Ok(row) if row.account == who.account.id() => Some(row.family),
                Ok(_) | Err(SessionError::InvalidToken) => return Err(SessionError::NotOwnRefresh),
                Err(e) => return Err(e),
            },
        };
        {
            let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
            ended.insert(who.claims.jti().to_string(), who.claims.exp());
        }
        let mut revoked = 0;
        if let Some(family) = family {
            revoked += store
                .revoke_refresh_family(&family)
                .map_err(|_| SessionError::Store)?;
        }
        if everywhere {
            revoked += store
                .revoke_refresh_account(who.account.id())
                .map_err(|_| SessionError::Store)?;
        }
        Ok(revoked)
    }

    /// Remember that the access token `token` comes straight from a password login.
    pub fn mark_fresh_login(&self, token: &str, now: u64) {
        let Some(jti) = unverified_jti(token) else {
            return;
        };
        let mut fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        if fresh.len() > 1024 {
            fresh.retain(|_, at| now < at.saturating_add(FRESH_LOGIN_SECS));
        }
        fresh.insert(jti, now);
    }

    /// True if the access token `jti` was issued by a password login in the last
    /// `FRESH_LOGIN_SECS` (so whoever holds it just proved the password).
    pub fn is_fresh_login(&self, jti: &str, now: u64) -> bool {
        let fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        fresh
            .get(jti)
            .is_some_and(|at| now < at.saturating_add(FRESH_LOGIN_SECS))
    }

    /// True if the access token `jti` was ended by logout (forgetting expired ones).
    fn ended(&self, jti: &str, now: u64) -> bool {
        let mut ended = self.ended.lock().unwrap_or_else(|e| e.into_inner());
        if ended.len() > 1024 {
            ended.retain(|_, exp| *exp > now);
        }
        ended.get(jti).is_some_and(|exp| *exp > now)
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
        let verifier = keys
            .access_tokens()
            .verifier(issuer, issuer)
            .map_err(|_| SessionError::Crypto)?;
        if let Some(token) = authorization.and_then(|h| h.strip_prefix("Bearer ")) {
            return self.authenticate_bearer(store, keys, &verifier, token.trim(), now);
        }
        let token = authorization
            .and_then(|h| h.strip_prefix("DPoP "))
            .map(str::trim)
            .ok_or(SessionError::Missing)?;
        let proof = dpop.ok_or(SessionError::Missing)?;
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
        if self.ended(claims.jti(), now) {
            return Err(SessionError::InvalidToken);
        }
        let account = principal(store, keys, &claims)?;
        Ok(Authenticated { account, claims })
    }

    /// A plain bearer token: only from a client registered with `danger_bearer`, and only
    /// a token issued without a key binding (a DPoP-bound token is never accepted bare).
    fn authenticate_bearer(
        &self,
        store: &dyn Store,
        keys: &Keys,
        verifier: &medvault_crypto::jose::TokenVerifier,
        token: &str,
        now: u64,
    ) -> Result<Authenticated, SessionError> {
        let claims = verifier
            .verify(token, now)
            .map_err(|_| SessionError::InvalidToken)?;
        if claims.cnf_jkt().is_some() || claims.client_id() == PASSWORD_CLIENT {
            return Err(SessionError::InvalidToken);
        }
        if self.ended(claims.jti(), now) {
            return Err(SessionError::InvalidToken);
        }
        let client = clients::load(store, keys, claims.sub())?
            .filter(|c| !c.disabled() && c.bearer())
            .ok_or(SessionError::AccountUnusable)?;
        Ok(Authenticated {
            account: client.as_account(),
            claims,
        })
    }

    /// Issue an access token to a machine client: bound to `jkt` if the client proved a
    /// DPoP key, else a bearer token (only for `danger_bearer` clients).
    pub fn issue_for_client(
        &self,
        keys: &Keys,
        rng: &dyn Random,
        issuer: &str,
        client: &Client,
        jkt: Option<JwkThumbprint>,
        now: u64,
    ) -> Result<String, SessionError> {
        if jkt.is_none() && !client.bearer() {
            return Err(SessionError::Missing);
        }
        let jti = random_jti(rng).map_err(|_| SessionError::Crypto)?;
        let mut claims = AccessClaims::new(
            client.id(),
            client.role().as_str(),
            client.id(),
            &jti,
            now,
            now + ACCESS_TOKEN_SECS,
        )
        .map_err(|_| SessionError::Crypto)?;
        if let Some(jkt) = jkt {
            claims = claims.bound_to(jkt);
        }
        Ok(keys.access_tokens().issue(issuer, issuer, &claims))
    }

    /// Remember a client assertion's `jti` until it expires; `false` if seen before.
    pub fn first_assertion(&self, client_id: &str, jti: &str, exp: u64, now: u64) -> bool {
        let key = replay_key(b"assertion", client_id, jti);
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first_use(key, exp.saturating_add(PROOF_MAX_AGE_SECS), now)
    }

    /// Check a DPoP proof sent to the token endpoint (no access token yet); returns the key.
    pub fn token_proof(
        &self,
        proof: &str,
        url: &str,
        now: u64,
    ) -> Result<JwkThumbprint, SessionError> {
        let expect = DpopExpectation::new("POST", url, now)
            .and_then(|e| e.with_iat_window(PROOF_MAX_AGE_SECS, 5))
            .map_err(|_| SessionError::InvalidProof)?;
        let p = validate_dpop(proof, &expect).map_err(|_| SessionError::InvalidProof)?;
        if !self.first_use(p.jkt(), p.jti(), p.iat(), now) {
            return Err(SessionError::Replayed);
        }
        Ok(p.jkt().clone())
    }
}

/// Whom a token speaks for, as they are now (not as at login): an account, or for tokens
/// issued to a machine client, that client.
fn principal(
    store: &dyn Store,
    keys: &Keys,
    claims: &AccessClaims,
) -> Result<Account, SessionError> {
    if claims.client_id() == PASSWORD_CLIENT {
        accounts::load(store, keys, claims.sub())?
            .filter(|a| !a.disabled())
            .ok_or(SessionError::AccountUnusable)
    } else {
        clients::load(store, keys, claims.sub())?
            .filter(|c| !c.disabled() && c.id() == claims.client_id())
            .map(|c| c.as_account())
            .ok_or(SessionError::AccountUnusable)
    }
}

impl Authenticated {
    /// The machine client the token was issued to, if not a password login.
    pub fn client(&self) -> Option<&str> {
        (self.claims.client_id() != PASSWORD_CLIENT).then(|| self.claims.client_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(id: &str) -> [u8; 32] {
        replay_key(b"test", "issuer", id)
    }

    #[test]
    fn replay_keys_differ_by_kind_issuer_and_id_however_the_parts_are_split() {
        let a = replay_key(b"dpop", "key", "1|2");
        assert_ne!(a, replay_key(b"dpop", "key|1", "2"));
        assert_ne!(a, replay_key(b"assertion", "key", "1|2"));
        assert_ne!(a, replay_key(b"dpop", "key", "1|3"));
        assert_eq!(a, replay_key(b"dpop", "key", "1|2"));
    }

    #[test]
    fn the_replay_cache_forgets_expired_ids_long_before_it_fills() {
        let mut cache = ReplayCache::default();
        for i in 0..1_000 {
            assert!(cache.first_use(k(&format!("a{i}")), 65, 0));
        }
        // A replay is refused while the id is remembered.
        assert!(!cache.first_use(k("a7"), 65, 30));
        assert_eq!(cache.until.len(), 1_000);
        // Past their expiry (and a pruning interval later), the thousand are gone although
        // the cache is far below its cap; the new id is remembered.
        assert!(cache.first_use(k("b"), 130, 70));
        assert_eq!(cache.until.len(), 1);
        assert!(!cache.first_use(k("b"), 130, 71));
    }

    #[test]
    fn a_full_replay_cache_refuses_new_ids_until_some_expire() {
        let mut cache = ReplayCache::default();
        for i in 0..MAX_REMEMBERED {
            assert!(cache.first_use(k(&format!("k{i}")), 1_000 + i as u64 % 2, 1));
        }
        assert!(!cache.first_use(k("one more"), 2_000, 2));
        assert_eq!(cache.until.len(), MAX_REMEMBERED);
        // Half of them expire at 1,000.
        assert!(cache.first_use(k("one more"), 2_000, 1_000));
        assert_eq!(cache.until.len(), MAX_REMEMBERED / 2 + 1);
    }
}
