//! The sealed key hierarchy: initialization, unsealing with k-of-n shares, sealing, KEK
//! rotation and rekeying. The root key exists only in memory, and only while unsealed.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use medvault_crypto::blind::BlindIndexKey;
use medvault_crypto::envelope::{unwrap_key, wrap_key, AeadKey};
use medvault_crypto::keys::{constant_time_eq, sha256};
use medvault_crypto::share_text::ShareText;
use medvault_crypto::{shamir, CryptoError, Random, SecretKey, Share};
use medvault_store::{Store, StoreError, VaultRecord};
use zeroize::Zeroizing;

const KEYRING_MAGIC: &[u8; 4] = b"MVKR";
const KEYRING_AAD: &[u8] = b"medvault/keyring/v1";
const WRAP_LABEL: &str = "medvault/keyring-wrap/v1";
/// Unwrapped data keys kept in memory at most (one per patient recently touched).
const MAX_CACHED_DEKS: usize = 100_000;

/// Errors of the seal lifecycle. Messages are safe to show to the operator.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the data directory is not initialized; run `medvault init`")]
    NotInitialized,
    #[error("the data directory is already initialized")]
    AlreadyInitialized,
    #[error("the vault is sealed")]
    Sealed,
    #[error("malformed share: {0}")]
    MalformedShare(String),
    #[error(
        "this share belongs to a different share set (an old set after rekey, or another server)"
    )]
    WrongShareSet,
    #[error("a share with this index was already provided")]
    DuplicateShare,
    #[error("this share does not match any share issued for this vault")]
    ShareRejected,
    #[error("the vault is already unsealed")]
    AlreadyUnsealed,
    #[error("invalid parameters: {0}")]
    BadParameters(&'static str),
    #[error("the reconstructed key does not match this vault")]
    KeyCheckFailed,
    #[error("the stored keyring is damaged or was tampered with")]
    KeyringDamaged,
    #[error("a concurrent key change won; retry")]
    Conflict,
    #[error("storage error: {0}")]
    Store(#[from] StoreError),
    #[error("cryptographic failure: {0}")]
    Crypto(#[from] CryptoError),
}

/// The decrypted keyring: KEK versions and the seed of the non-rotating keys. It survives
/// rekey (only its wrapping changes), so blind-index tokens stay valid.
struct Keyring {
    seed: SecretKey,
    current: u32,
    keks: BTreeMap<u32, SecretKey>,
}

impl Keyring {
    fn generate(rng: &dyn Random) -> Result<Keyring, VaultError> {
        let mut keks = BTreeMap::new();
        keks.insert(1, SecretKey::generate(rng)?);
        Ok(Keyring {
            seed: SecretKey::generate(rng)?,
            current: 1,
            keks,
        })
    }

    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(44 + 36 * self.keks.len()));
        out.extend_from_slice(KEYRING_MAGIC);
        out.extend_from_slice(self.seed.expose());
        out.extend_from_slice(&self.current.to_be_bytes());
        out.extend_from_slice(&(self.keks.len() as u32).to_be_bytes());
        for (v, k) in &self.keks {
            out.extend_from_slice(&v.to_be_bytes());
            out.extend_from_slice(k.expose());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Keyring> {
        fn u32_at(b: &[u8], at: usize) -> Option<u32> {
            Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
        }
        if bytes.get(..4)? != KEYRING_MAGIC {
            return None;
        }
        let seed = SecretKey::from_slice(bytes.get(4..36)?).ok()?;
        let current = u32_at(bytes, 36)?;
        let count = u32_at(bytes, 40)? as usize;
        if bytes.len() != 44 + 36 * count {
            return None;
        }
        let mut keks = BTreeMap::new();
        for i in 0..count {
            let at = 44 + 36 * i;
            keks.insert(
                u32_at(bytes, at)?,
                SecretKey::from_slice(bytes.get(at + 4..at + 36)?).ok()?,
            );
        }
        keks.contains_key(&current).then_some(Keyring {
            seed,
            current,
            keks,
        })
    }

    fn wrap(&self, root: &SecretKey, rng: &dyn Random) -> Result<Vec<u8>, VaultError> {
        let wrap = AeadKey::new(&root.derive(WRAP_LABEL), 0);
        Ok(wrap.seal(KEYRING_AAD, &self.encode(), rng)?)
    }

    fn unwrap(root: &SecretKey, wrapped: &[u8]) -> Result<Keyring, VaultError> {
        let wrap = AeadKey::new(&root.derive(WRAP_LABEL), 0);
        let plain = Zeroizing::new(
            wrap.open(KEYRING_AAD, wrapped)
                .map_err(|_| VaultError::KeyringDamaged)?,
        );
        Keyring::decode(&plain).ok_or(VaultError::KeyringDamaged)
    }
}

/// Keys available while unsealed. Dropping the last reference zeroizes the raw key bytes.
pub struct Keys {
    /// The root key of the current share set: kept only to re-wrap the keyring on rotate.
    root: SecretKey,
    keyring: Keyring,
    keks: BTreeMap<u32, AeadKey>,
    blind: BlindIndexKey,
    owner: BlindIndexKey,
    /// Encrypts audit-ledger entries.
    ledger_entries: AeadKey,
    /// Signs ledger checkpoints. Derived from the keyring seed, which is stored only
    /// wrapped under the root key, so the signing key is as sealed as the data.
    ledger_signer: medvault_ledger::SigningKey,
    /// MACs account, role and grant rows, so forged rows are refused.
    integrity: SecretKey,
    /// Encrypts the stored OPAQUE server setup.
    auth_setup: AeadKey,
    /// Signs access tokens (Ed25519).
    access_tokens: medvault_crypto::jose::TokenSigner,
    /// Unwrapped data keys by owner token. Cleared when the keys are dropped on seal.
    deks: Mutex<HashMap<Vec<u8>, Arc<AeadKey>>>,
}

impl Keys {
    fn new(root: SecretKey, keyring: Keyring) -> Result<Keys, VaultError> {
        let keks = keyring
            .keks
            .iter()
            .map(|(v, k)| (*v, AeadKey::new(k, *v)))
            .collect();
        let signing_seed = keyring.seed.derive("medvault/ledger-signing/v1");
        Ok(Keys {
            blind: BlindIndexKey::new(&keyring.seed.derive("medvault/blind-index/v1")),
            owner: BlindIndexKey::new(&keyring.seed.derive("medvault/owner-token/v1")),
            ledger_entries: AeadKey::new(&keyring.seed.derive("medvault/ledger-entry/v1"), 0),
            ledger_signer: crate::ledger::signing_key(signing_seed.expose())
                .map_err(|_| VaultError::KeyringDamaged)?,
            integrity: keyring.seed.derive("medvault/integrity/v1"),
            auth_setup: AeadKey::new(&keyring.seed.derive("medvault/opaque-setup/v1"), 0),
            access_tokens: medvault_crypto::jose::TokenSigner::new(
                &keyring.seed.derive("medvault/access-token/v1"),
            ),
            root,
            keyring,
            keks,
            deks: Mutex::new(HashMap::new()),
        })
    }

    /// These keys, with the unwrapped data keys moved over from `old`: rotation and rekey
    /// change how data keys are wrapped, never the data keys themselves.
    fn keeping_deks_of(self, old: &Keys) -> Keys {
        let cached = std::mem::take(&mut *old.deks.lock().unwrap_or_else(|e| e.into_inner()));
        *self.deks.lock().unwrap_or_else(|e| e.into_inner()) = cached;
        self
    }

    /// The key that MACs identity rows (accounts, registration tokens).
    pub fn integrity(&self) -> &SecretKey {
        &self.integrity
    }

    /// The key that signs access tokens.
    pub fn access_tokens(&self) -> &medvault_crypto::jose::TokenSigner {
        &self.access_tokens
    }

    /// The key that encrypts the stored OPAQUE server setup.
    pub fn auth_setup(&self) -> &AeadKey {
        &self.auth_setup
    }

    /// The key that encrypts audit-ledger entries.
    pub fn ledger_entries(&self) -> &AeadKey {
        &self.ledger_entries
    }

    /// The key that signs ledger checkpoints.
    pub fn ledger_signer(&self) -> &medvault_ledger::SigningKey {
        &self.ledger_signer
    }

    /// The blind-index key for search tokens.
    pub fn blind(&self) -> &BlindIndexKey {
        &self.blind
    }

    /// The keyed token naming a data-key owner ("Patient/123" or "system").
    pub fn owner_token(&self, owner: &str) -> Vec<u8> {
        self.owner.token("owner", owner).to_vec()
    }

    /// The current KEK version (new data keys are wrapped under it).
    pub fn current_kek(&self) -> u32 {
        self.keyring.current
    }

    /// A KEK by version.
    pub fn kek(&self, version: u32) -> Option<&AeadKey> {
        self.keks.get(&version)
    }

    /// A cached data key.
    pub fn cached_dek(&self, owner: &[u8]) -> Option<Arc<AeadKey>> {
        self.deks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(owner)
            .cloned()
    }

    /// Remember an unwrapped data key. The cache is bounded: when full it starts over
    /// (keys are re-read from the store on demand).
    pub fn cache_dek(&self, owner: Vec<u8>, key: Arc<AeadKey>) {
        let mut deks = self.deks.lock().unwrap_or_else(|e| e.into_inner());
        if deks.len() >= MAX_CACHED_DEKS {
            deks.clear();
        }
        deks.insert(owner, key);
    }

    /// Wrap a data key for `owner` under the current KEK.
    pub fn wrap_dek(
        &self,
        owner: &[u8],
        dek: &SecretKey,
        rng: &dyn Random,
    ) -> Result<Vec<u8>, CryptoError> {
        let kek = self
            .keks
            .get(&self.keyring.current)
            .ok_or(CryptoError::Integrity)?;
        wrap_key(kek, &dek_aad(owner), dek, rng)
    }

    /// Unwrap a data key wrapped under KEK `version`.
    pub fn unwrap_dek(
        &self,
        owner: &[u8],
        version: u32,
        wrapped: &[u8],
    ) -> Result<SecretKey, CryptoError> {
        let kek = self.keks.get(&version).ok_or(CryptoError::Integrity)?;
        unwrap_key(kek, &dek_aad(owner), wrapped)
    }
}

fn dek_aad(owner: &[u8]) -> Vec<u8> {
    let mut aad = b"medvault/dek/v1|".to_vec();
    aad.extend_from_slice(owner);
    aad
}

/// Seal state as reported by `GET /sys/seal-status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SealStatus {
    pub initialized: bool,
    pub sealed: bool,
    pub threshold: u8,
    pub shares: u8,
    /// Valid shares received so far towards unsealing.
    pub progress: u8,
    /// Identifies the current share set.
    pub share_set: String,
    pub key_version: Option<u32>,
}

/// What `initialize` and `rekey` hand out once.
pub struct IssuedShares {
    pub shares: Vec<ShareText>,
    pub threshold: u8,
}

enum State {
    Sealed { progress: Vec<Share> },
    Unsealed(Arc<Keys>),
}

/// The seal manager.
pub struct Vault {
    store: Arc<dyn Store>,
    rng: Arc<dyn Random>,
    state: RwLock<State>,
}

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn split_root(
    root: &SecretKey,
    threshold: u8,
    count: u8,
    rng: &dyn Random,
) -> Result<(VaultRecord, IssuedShares), VaultError> {
    if threshold == 0 || count == 0 || threshold > count {
        return Err(VaultError::BadParameters(
            "need 1 <= threshold <= shares <= 255",
        ));
    }
    let mut set_id = [0u8; 8];
    rng.fill(&mut set_id)?;
    let shares: Vec<ShareText> = shamir::split(root.expose(), threshold, count, rng)?
        .into_iter()
        .map(|s| ShareText::new(set_id, threshold, s))
        .collect();
    let record = VaultRecord {
        set_id,
        threshold,
        share_count: count,
        check_value: root.check_value(),
        keyring: Vec::new(),
        commitments: shares
            .iter()
            .map(|s| (s.share().x(), s.commitment()))
            .collect(),
        generation: 0,
    };
    Ok((record, IssuedShares { shares, threshold }))
}

impl Vault {
    /// Create a new vault in an empty store: a random root key split into `count` shares
    /// of which `threshold` unseal, a fresh keyring wrapped under the root, and a one-time
    /// bootstrap token (returned; only its hash is stored). The vault stays sealed.
    pub fn initialize(
        store: &dyn Store,
        rng: &dyn Random,
        threshold: u8,
        count: u8,
    ) -> Result<(IssuedShares, Zeroizing<String>), VaultError> {
        if store.vault()?.is_some() {
            return Err(VaultError::AlreadyInitialized);
        }
        let root = SecretKey::generate(rng)?;
        let (mut record, issued) = split_root(&root, threshold, count, rng)?;
        record.keyring = Keyring::generate(rng)?.wrap(&root, rng)?;
        let mut token = [0u8; 32];
        rng.fill(&mut token)?;
        let token_text = Zeroizing::new(format!("mvb_{}", hex(&token)));
        store
            .init_vault(&record, &sha256(token_text.as_bytes()))
            .map_err(|e| match e {
                StoreError::AlreadyInitialized => VaultError::AlreadyInitialized,
                e => VaultError::Store(e),
            })?;
        Ok((issued, token_text))
    }

    /// A sealed vault over an initialized store.
    pub fn new(store: Arc<dyn Store>, rng: Arc<dyn Random>) -> Vault {
        Vault {
            store,
            rng,
            state: RwLock::new(State::Sealed {
                progress: Vec::new(),
            }),
        }
    }

    fn record(&self) -> Result<VaultRecord, VaultError> {
        self.store.vault()?.ok_or(VaultError::NotInitialized)
    }

    /// The unsealed keys, or `Sealed`.
    pub fn keys(&self) -> Result<Arc<Keys>, VaultError> {
        match &*self.state.read().unwrap_or_else(|e| e.into_inner()) {
            State::Unsealed(keys) => Ok(keys.clone()),
            State::Sealed { .. } => Err(VaultError::Sealed),
        }
    }

    pub fn is_sealed(&self) -> bool {
        self.keys().is_err()
    }

    /// Current seal status.
    pub fn status(&self) -> Result<SealStatus, VaultError> {
        let Some(record) = self.store.vault()? else {
            return Ok(SealStatus {
                initialized: false,
                sealed: true,
                threshold: 0,
                shares: 0,
                progress: 0,
                share_set: String::new(),
                key_version: None,
            });
        };
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let (sealed, progress, key_version) = match &*state {
            State::Sealed { progress } => (true, progress.len() as u8, None),
            State::Unsealed(keys) => (false, 0, Some(keys.current_kek())),
        };
        Ok(SealStatus {
            initialized: true,
            sealed,
            threshold: record.threshold,
            shares: record.share_count,
            progress,
            share_set: hex(&record.set_id),
            key_version,
        })
    }

    /// Check a share's text against the current set's commitments.
    fn verify_share(&self, record: &VaultRecord, text: &str) -> Result<Share, VaultError> {
        let parsed =
            ShareText::parse(text).map_err(|e| VaultError::MalformedShare(e.to_string()))?;
        if parsed.set_id() != record.set_id {
            return Err(VaultError::WrongShareSet);
        }
        let commitment = parsed.commitment();
        let known = record
            .commitments
            .iter()
            .any(|(x, c)| *x == parsed.share().x() && constant_time_eq(c, &commitment));
        if !known {
            return Err(VaultError::ShareRejected);
        }
        Ok(parsed.into_share())
    }

    /// Submit one share towards unsealing. A malformed, foreign, unknown or duplicate share
    /// is refused on its own and the progress made so far is kept.
    pub fn submit_share(&self, text: &str) -> Result<SealStatus, VaultError> {
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            // Read the share set under the state lock: a concurrent rekey (which also takes
            // it) cannot slip between checking a share and counting it.
            let record = self.record()?;
            let share = self.verify_share(&record, text)?;
            let State::Sealed { progress } = &mut *state else {
                return Err(VaultError::AlreadyUnsealed);
            };
            if progress.iter().any(|s| s.x() == share.x()) {
                return Err(VaultError::DuplicateShare);
            }
            progress.push(share);
            if progress.len() >= record.threshold as usize {
                // Reachable only if the stored vault row was edited; start over rather than
                // fail every later share the same way.
                match unseal_with(progress, &record) {
                    Ok(keys) => *state = State::Unsealed(Arc::new(keys)),
                    Err(e) => {
                        progress.clear();
                        return Err(e);
                    }
                }
            }
        }
        self.status()
    }

    /// Forget the shares submitted so far; authorized by a valid share of the current set.
    pub fn reset_progress(&self, authorization: &str) -> Result<(), VaultError> {
        let record = self.record()?;
        self.verify_share(&record, authorization)?;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if let State::Sealed { progress } = &mut *state {
            progress.clear();
        }
        Ok(())
    }

    /// Check that `text` is a valid share of the current set (the authorization for operator
    /// actions until accounts exist), without using it.
    pub fn check_share(&self, text: &str) -> Result<(), VaultError> {
        let record = self.record()?;
        self.verify_share(&record, text).map(|_| ())
    }

    /// Seal: drop every key from memory. `authorization` must be a valid share of the
    /// current set (until accounts exist, holding a share is what makes an operator).
    pub fn seal(&self, authorization: &str) -> Result<(), VaultError> {
        let record = self.record()?;
        self.verify_share(&record, authorization)?;
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = State::Sealed {
            progress: Vec::new(),
        };
        Ok(())
    }

    /// Add a new KEK version (online); returns it. Data keys wrapped by older versions stay
    /// readable and are re-wrapped by `repo::Repository::rewrap_step`.
    pub fn rotate(&self, authorization: &str) -> Result<u32, VaultError> {
        let record = self.record()?;
        self.verify_share(&record, authorization)?;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let State::Unsealed(keys) = &*state else {
            return Err(VaultError::Sealed);
        };
        let next = keys.keyring.keks.keys().next_back().copied().unwrap_or(0) + 1;
        let mut keks: BTreeMap<u32, SecretKey> = keys.keyring.keks.clone();
        keks.insert(next, SecretKey::generate(&*self.rng)?);
        let keyring = Keyring {
            seed: keys.keyring.seed.clone(),
            current: next,
            keks,
        };
        let new_record = VaultRecord {
            keyring: keyring.wrap(&keys.root, &*self.rng)?,
            generation: record.generation + 1,
            ..record.clone()
        };
        self.store
            .replace_vault(&new_record, record.generation)
            .map_err(conflict)?;
        let new_keys = Keys::new(keys.root.clone(), keyring)?.keeping_deks_of(keys);
        *state = State::Unsealed(Arc::new(new_keys));
        Ok(next)
    }

    /// Issue a new share set (new threshold/count) from `threshold` shares of the current
    /// set. The keyring is re-wrapped under a new root key, so the old shares become useless.
    /// Works sealed or unsealed; does not change the seal state.
    pub fn rekey(
        &self,
        old_shares: &[String],
        threshold: u8,
        count: u8,
    ) -> Result<IssuedShares, VaultError> {
        let record = self.record()?;
        let mut shares: Vec<Share> = Vec::new();
        for text in old_shares {
            let share = self.verify_share(&record, text)?;
            if shares.iter().any(|s| s.x() == share.x()) {
                return Err(VaultError::DuplicateShare);
            }
            shares.push(share);
        }
        if shares.len() < record.threshold as usize {
            return Err(VaultError::BadParameters(
                "rekey needs at least threshold shares of the current set",
            ));
        }
        let old_root = SecretKey::from_slice(&shamir::combine(&shares)?)?;
        if !constant_time_eq(&old_root.check_value(), &record.check_value) {
            return Err(VaultError::KeyCheckFailed);
        }
        let keyring = Keyring::unwrap(&old_root, &record.keyring)?;
        let new_root = SecretKey::generate(&*self.rng)?;
        let (mut new_record, issued) = split_root(&new_root, threshold, count, &*self.rng)?;
        new_record.keyring = keyring.wrap(&new_root, &*self.rng)?;
        new_record.generation = record.generation + 1;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        self.store
            .replace_vault(&new_record, record.generation)
            .map_err(conflict)?;
        match &mut *state {
            State::Unsealed(keys) => {
                let new_keys = Keys::new(new_root, keyring)?.keeping_deks_of(keys);
                *state = State::Unsealed(Arc::new(new_keys));
            }
            // Shares of the old set in progress are now worthless.
            State::Sealed { progress } => progress.clear(),
        }
        Ok(issued)
    }
}

/// Reconstruct the root key from `shares` and open the keyring.
fn unseal_with(shares: &[Share], record: &VaultRecord) -> Result<Keys, VaultError> {
    let root = SecretKey::from_slice(&shamir::combine(shares)?)?;
    if !constant_time_eq(&root.check_value(), &record.check_value) {
        return Err(VaultError::KeyCheckFailed);
    }
    let keyring = Keyring::unwrap(&root, &record.keyring)?;
    Keys::new(root, keyring)
}

fn conflict(e: StoreError) -> VaultError {
    match e {
        StoreError::Conflict => VaultError::Conflict,
        e => VaultError::Store(e),
    }
}
