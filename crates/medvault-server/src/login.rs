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
/// At most this many logins may be pending at once (a bound on memory).
const MAX_PENDING: usize = 10_000;
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

/// `Random` as the `rand` RNG that opaque-ke asks for.
struct Rng<'a>(&'a dyn Random);

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
    keys: [String; 2],
    expires_ms: i64,
}

#[derive(Default)]
struct Failures {
    count: u32,
    until_ms: i64,
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
    /// The OPAQUE session key (both sides have it; the server uses it to bind the session).
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

    fn record_failure(&self, key: &str, now_ms: i64) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let f = map.entry(key.to_string()).or_default();
        f.count = f.count.saturating_add(1);
        if f.count > FREE_FAILURES {
            let exp = (f.count - FREE_FAILURES - 1).min(20);
            let backoff = (1_000i64 << exp).min(MAX_BACKOFF_MS);
            f.until_ms = now_ms + backoff;
        }
    }

    fn clear_failures(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
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
    ) -> Result<(String, Vec<u8>), LoginError> {
        let account_key = format!("login:{login}");
        let address_key = format!("addr:{address}");
        self.check_locked(&account_key, now_ms)?;
        self.check_locked(&address_key, now_ms)?;
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
        pending.retain(|_, p| p.expires_ms > now_ms);
        if pending.len() >= MAX_PENDING {
            return Err(LoginError::Locked(1));
        }
        pending.insert(
            id.clone(),
            Pending {
                state: start.state,
                account: account.map(|(id, _)| id.to_string()),
                keys: [account_key, address_key],
                expires_ms: now_ms + PENDING_TTL_MS,
            },
        );
        Ok((id, start.message.serialize().to_vec()))
    }

    /// Login, step 3 of 3: check the client's finalization. Failures count towards the
    /// account's and the address's back-off.
    pub fn finish(
        &self,
        now_ms: i64,
        login_id: &str,
        finalization: &[u8],
    ) -> Result<LoggedIn, LoginError> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(login_id)
            .filter(|p| p.expires_ms > now_ms)
            .ok_or(LoginError::Failed)?;
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
                for k in &pending.keys {
                    self.clear_failures(k);
                }
                Ok(LoggedIn {
                    account,
                    session_key: Zeroizing::new(done.session_key.to_vec()),
                })
            }
            _ => {
                for k in &pending.keys {
                    self.record_failure(k, now_ms);
                }
                Err(LoginError::Failed)
            }
        }
    }
}
