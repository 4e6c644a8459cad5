//! Password registration and login where the password never reaches the server: OPAQUE
//! (RFC 9807) with ristretto255, TripleDH over SHA-512 and Argon2id, plus lockout with
//! exponential back-off per account and per client address.

use std::collections::HashMap;
use std::sync::Mutex;

use medvault_crypto::Random;
use medvault_store::Store;
use opaque_ke::argon2::Argon2;
use opaque_ke::ciphersuite::CipherSuite;
use opaque_ke::rand::{CryptoRng, RngCore};
use opaque_ke::{
    CredentialFinalization, CredentialRequest, RegistrationRequest, RegistrationUpload,
    ServerLogin, ServerLoginParameters, ServerRegistration, ServerSetup,
};
use zeroize::Zeroizing;

use crate::vault::Keys;

/// The ciphersuite: the one `@serenity-kit/opaque` runs in browsers (ristretto255 OPRF and
/// key exchange, TripleDH with SHA-512, Argon2id as the key-stretching function).
pub struct Suite;

impl CipherSuite for Suite {
    type OprfCs = opaque_ke::Ristretto255;
    type KeyExchange = opaque_ke::TripleDh<opaque_ke::Ristretto255, sha2::Sha512>;
    type Ksf = Argon2<'static>;
}

/// Logins started but not finished are forgotten after this long.
const PENDING_TTL_MS: i64 = 60_000;
/// At most this many logins may be pending at once (a bound on memory), and at most this
/// many from one address (so one client cannot fill the table for everyone).
const MAX_PENDING: usize = 10_000;
const MAX_PENDING_PER_ADDRESS: usize = 16;
/// At most this many accounts and addresses are tracked for back-off; when full, logins are
/// refused rather than forgotten (failing closed).
const MAX_TRACKED: usize = 100_000;
/// Failures older than this no longer count.
const FAILURE_MEMORY_MS: i64 = 3_600_000;
/// Failures allowed before back-off starts.
const FREE_FAILURES: u32 = 3;
/// The longest back-off.
const MAX_BACKOFF_MS: i64 = 15 * 60_000;

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("malformed {0}")]
    Malformed(&'static str),
    #[error("login failed")]
    Failed,
    #[error("too many failed logins; retry in {0} s")]
    Locked(u64),
    #[error("storage error")]
    Store(#[from] medvault_store::StoreError),
    #[error("cryptographic failure")]
    Crypto,
}

/// `Random` as the `rand` RNG that opaque-ke asks for (the client side uses it too).
pub struct Rng<'a>(pub &'a dyn Random);

impl RngCore for Rng<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        // `fill_bytes` cannot report failure; going on with predictable bytes would make
        // keys guessable, so stop the process instead.
        if self.0.fill(dest).is_err() {
            tracing::error!("the system random source failed; stopping");
            std::process::abort();
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), opaque_ke::rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Rng<'_> {}

const SETUP_AAD: &[u8] = b"medvault/opaque-setup/v1";

/// The server's OPAQUE setup: made once, stored encrypted under a key from the keyring.
pub fn server_setup(
    store: &dyn Store,
    keys: &Keys,
    rng: &dyn Random,
) -> Result<ServerSetup<Suite>, LoginError> {
    let envelope = match store.auth_setup()? {
        Some(e) => e,
        None => {
            let setup = ServerSetup::<Suite>::new(&mut Rng(rng));
            let bytes = Zeroizing::new(setup.serialize().to_vec());
            let sealed = keys
                .auth_setup()
                .seal(SETUP_AAD, &bytes, rng)
                .map_err(|_| LoginError::Crypto)?;
            // Another process may have won the race; use whatever is stored.
            store.init_auth_setup(&sealed)?
        }
    };
    let bytes = Zeroizing::new(
        keys.auth_setup()
            .open(SETUP_AAD, &envelope)
            .map_err(|_| LoginError::Crypto)?,
    );
    ServerSetup::<Suite>::deserialize(&bytes).map_err(|_| LoginError::Crypto)
}

/// Registration, step 2 of 4: answer the client's blinded request.
pub fn registration_response(
    setup: &ServerSetup<Suite>,
    login: &str,
    request: &[u8],
) -> Result<Vec<u8>, LoginError> {
    let request = RegistrationRequest::<Suite>::deserialize(request)
        .map_err(|_| LoginError::Malformed("registration request"))?;
    let start = ServerRegistration::<Suite>::start(setup, request, login.as_bytes())
        .map_err(|_| LoginError::Malformed("registration request"))?;
    Ok(start.message.serialize().to_vec())
}

/// Registration, step 4 of 4: the password file to store.
pub fn registration_finish(upload: &[u8]) -> Result<Vec<u8>, LoginError> {
    let upload = RegistrationUpload::<Suite>::deserialize(upload)
        .map_err(|_| LoginError::Malformed("registration upload"))?;
    Ok(ServerRegistration::finish(upload).serialize().to_vec())
}

struct Pending {
    state: ServerLogin<Suite>,
    /// `None` when the login name is unknown: the exchange runs on (so nobody can tell
    /// which names exist) and fails at the end.
    account: Option<String>,
    /// The back-off keys of the account and of the address.
    account_key: String,
    address_key: String,
    /// The DPoP key the client declared at start; only a proof by that key may finish.
    jkt: String,
    expires_ms: i64,
}

#[derive(Default)]
struct Failures {
    count: u32,
    until_ms: i64,
    last_ms: i64,
}

/// The back-off key of a login name: a hash, so the table holds no login names.
fn account_key(login: &str) -> String {
    let digest = medvault_crypto::keys::sha256(login.as_bytes());
    format!("login:{}", crate::vault::hex(&digest[..16]))
}

/// The back-off key of a client address: IPv6 clients are grouped by /64 (one host usually
/// holds the whole prefix).
fn address_key(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("addr:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(std::net::IpAddr::V4(v4)) => format!("addr:{v4}"),
        Err(_) => format!("addr:{}", address.chars().take(64).collect::<String>()),
    }
}

/// Logins in progress and the failure counters of accounts and addresses.
#[derive(Default)]
pub struct Logins {
    pending: Mutex<HashMap<String, Pending>>,
    failures: Mutex<HashMap<String, Failures>>,
}

/// A finished login.
pub struct LoggedIn {
    pub account: String,
    /// The OPAQUE session key (both sides have it; not used further yet).
    pub session_key: Zeroizing<Vec<u8>>,
}

impl Logins {
    pub fn new() -> Logins {
        Logins::default()
    }

    /// Refuse while `key` (an account or an address) is backing off.
    fn check_locked(&self, key: &str, now_ms: i64) -> Result<(), LoginError> {
        let f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match f.get(key) {
            Some(f) if f.until_ms > now_ms => Err(LoginError::Locked(
                ((f.until_ms - now_ms) as u64).div_ceil(1000),
            )),
            _ => Ok(()),
        }
    }

    /// Count one attempt against `key`. Every login start counts: its answer already lets
    /// the client test a password offline, so waiting for `finish` would count nothing.
    fn record_attempt(&self, key: &str, now_ms: i64) -> Result<(), LoginError> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED / 2 {
            map.retain(|_, f| f.until_ms > now_ms || now_ms - f.last_ms < FAILURE_MEMORY_MS);
        }
        if map.len() >= MAX_TRACKED && !map.contains_key(key) {
            return Err(LoginError::Locked(60));
        }
        let f = map.entry(key.to_string()).or_default();
        if now_ms - f.last_ms >= FAILURE_MEMORY_MS {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last_ms = now_ms;
        if f.count > FREE_FAILURES {
            let exp = (f.count - FREE_FAILURES - 1).min(20);
            let backoff = (1_000i64 << exp).min(MAX_BACKOFF_MS);
            f.until_ms = now_ms + backoff;
        }
        Ok(())
    }

    /// A login succeeded: the account starts afresh; the address only gets this one attempt
    /// back (so logging into one's own account does not reset an address's back-off).
    fn record_success(&self, account_key: &str, address_key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(account_key);
        if let Some(f) = map.get_mut(address_key) {
            f.count = f.count.saturating_sub(1);
        }
    }

    /// Login, step 2 of 3: answer the client's credential request. `account` is the account
    /// the login name belongs to (with its password file), or `None` if there is none.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        &self,
        setup: &ServerSetup<Suite>,
        rng: &dyn Random,
        now_ms: i64,
        login: &str,
        address: &str,
        account: Option<(&str, &[u8])>,
        request: &[u8],
        dpop_jkt: &str,
    ) -> Result<(String, Vec<u8>), LoginError> {
        let account_key = account_key(login);
        let address_key = address_key(address);
        self.check_locked(&account_key, now_ms)?;
        self.check_locked(&address_key, now_ms)?;
        if dpop_jkt.is_empty() || dpop_jkt.len() > 128 {
            return Err(LoginError::Malformed("DPoP key thumbprint"));
        }
        let request = CredentialRequest::<Suite>::deserialize(request)
            .map_err(|_| LoginError::Malformed("credential request"))?;
        let file = match account {
            Some((_, bytes)) => Some(
                ServerRegistration::<Suite>::deserialize(bytes).map_err(|_| LoginError::Crypto)?,
            ),
            None => None,
        };
        let start = ServerLogin::start(
            &mut Rng(rng),
            setup,
            file,
            request,
            login.as_bytes(),
            ServerLoginParameters::default(),
        )
        .map_err(|_| LoginError::Malformed("credential request"))?;
        let mut id = [0u8; 16];
        rng.fill(&mut id).map_err(|_| LoginError::Crypto)?;
        let id = crate::vault::hex(&id);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // One login in progress per account: a new start replaces an older one.
        pending.retain(|_, p| p.expires_ms > now_ms && p.account_key != account_key);
        let from_address = pending
            .values()
            .filter(|p| p.address_key == address_key)
            .count();
        if pending.len() >= MAX_PENDING || from_address >= MAX_PENDING_PER_ADDRESS {
            return Err(LoginError::Locked(1));
        }
        drop(pending);
        self.record_attempt(&account_key, now_ms)?;
        self.record_attempt(&address_key, now_ms)?;
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id.clone(),
                Pending {
                    state: start.state,
                    account: account.map(|(id, _)| id.to_string()),
                    account_key,
                    address_key,
                    jkt: dpop_jkt.to_string(),
                    expires_ms: now_ms + PENDING_TTL_MS,
                },
            );
        Ok((id, start.message.serialize().to_vec()))
    }

    /// Login, step 3 of 3: check the client's finalization, sent with a proof by the DPoP
    /// key declared at start (`jkt`), so an intercepted finalization cannot be redeemed
    /// with another key. (The attempt was counted at start.)
    pub fn finish(
        &self,
        now_ms: i64,
        login_id: &str,
        finalization: &[u8],
        jkt: &str,
    ) -> Result<LoggedIn, LoginError> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(login_id)
            .filter(|p| p.expires_ms > now_ms)
            .ok_or(LoginError::Failed)?;
        if !medvault_crypto::keys::constant_time_eq(pending.jkt.as_bytes(), jkt.as_bytes()) {
            return Err(LoginError::Failed);
        }
        let finished = CredentialFinalization::<Suite>::deserialize(finalization)
            .ok()
            .and_then(|f| {
                pending
                    .state
                    .finish(f, ServerLoginParameters::default())
                    .ok()
            });
        match (finished, pending.account) {
            (Some(done), Some(account)) => {
                self.record_success(&pending.account_key, &pending.address_key);
                Ok(LoggedIn {
                    account,
                    session_key: Zeroizing::new(done.session_key.to_vec()),
                })
            }
            _ => Err(LoginError::Failed),
        }
    }
}
