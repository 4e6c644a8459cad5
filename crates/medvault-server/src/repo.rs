//! The encrypted FHIR repository: validates, encrypts, indexes and stores resource versions,
//! and decrypts and verifies them on the way out. HTTP-agnostic; called from blocking threads.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use medvault_crypto::envelope::AeadKey;
use medvault_crypto::{CryptoError, Random, SecretKey};
use medvault_fhir::{FhirError, Issue, SearchQuery};
use medvault_store::{
    BlobStore, Body, DataKeyRecord, NewVersion, Store, StoreError, StoreQuery, Token, VersionRecord,
};
use serde_json::{json, Value};

use crate::clock::{format_instant, Clock};
use crate::ledger::{Audit, Event, Ledger, LedgerConfig, LedgerError};
use crate::vault::{Keys, Vault, VaultError};
use medvault_ledger::Outcome;

/// The owner of resources that belong to no patient (Practitioner, Organization, ...).
const SYSTEM_OWNER: &str = "system";
/// Default and maximum page sizes.
pub const DEFAULT_COUNT: usize = 50;
pub const MAX_COUNT: usize = 1000;

/// Repository failures. `Display` texts are safe to return to clients: no PHI, no internals.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("the server is sealed")]
    Sealed,
    #[error("resource not found")]
    NotFound,
    #[error("resource was deleted")]
    Gone,
    #[error("resource failed validation")]
    Invalid(Vec<Issue>),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Search(#[from] FhirError),
    #[error("resource type is not supported by this server")]
    UnsupportedType,
    #[error("version conflict: {0}")]
    PreconditionFailed(&'static str),
    #[error("a concurrent update won; retry")]
    Conflict,
    #[error("stored data failed its integrity check and was not served")]
    Integrity,
    #[error("storage failure")]
    Store(#[from] StoreError),
    #[error("cryptographic failure")]
    Crypto(CryptoError),
    #[error("access denied ({reason})")]
    Forbidden {
        reason: &'static str,
        break_glass_available: bool,
        /// The patient whose data was refused (so the refusal shows in their access log).
        patient: Option<String>,
    },
    #[error("the audit ledger could not be written, so the request was not carried out")]
    Ledger(#[from] LedgerError),
    #[error("internal error")]
    Internal(&'static str),
}

impl From<VaultError> for RepoError {
    fn from(e: VaultError) -> Self {
        match e {
            VaultError::Sealed => RepoError::Sealed,
            VaultError::Store(s) => RepoError::Store(s),
            VaultError::Crypto(c) => RepoError::Crypto(c),
            _ => RepoError::Internal("vault"),
        }
    }
}

pub type Result<T> = std::result::Result<T, RepoError>;

/// A stored resource version as returned to callers. Its `Debug` leaves out the id (a
/// Patient's is the patient's) and the resource (the patient's data).
#[derive(Clone)]
pub struct Stored {
    pub rtype: String,
    pub id: String,
    pub version: i64,
    pub updated_ms: i64,
    /// `None` for a deletion (history entries only), and in the writes a pipelined
    /// transaction returns for its answer (`Repository::commit_pipelined`).
    pub resource: Option<Value>,
}

/// The result of a create/update.
#[derive(Debug, Clone)]
pub struct Written {
    pub stored: Stored,
    /// True when a new resource was created (201), false for an update or a conditional
    /// create that matched an existing resource (200).
    pub created: bool,
}

/// A page of search or history results.
#[derive(Debug, Clone)]
pub struct Page {
    pub entries: Vec<Stored>,
    pub total: u64,
    pub offset: usize,
    pub count: usize,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stored")
            .field("rtype", &self.rtype)
            .field("version", &self.version)
            .field("updated_ms", &self.updated_ms)
            .field(
                "resource",
                &self.resource.as_ref().map(|_| format_args!("<redacted>")),
            )
            .finish_non_exhaustive()
    }
}

/// Progress of re-wrapping data keys after a rotation.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct RewrapProgress {
    pub rewrapped: u64,
    pub remaining: u64,
}

/// New data keys by owner token: the key, and the record that stores it wrapped.
type KeysByOwner = HashMap<Vec<u8>, (Arc<AeadKey>, DataKeyRecord)>;

/// Data keys created while preparing one operation. They are stored in the same
/// transaction as the versions encrypted under them, so a refused operation leaves nothing.
/// Shared by the thread that plans an operation (which adds keys) and the threads that
/// prepare its versions (which read them), hence the locks; each is held for a lookup only.
#[derive(Default)]
pub(crate) struct PendingKeys {
    map: Mutex<KeysByOwner>,
    /// Owner tokens by owner name, computed once per owner of the operation (most of a
    /// transaction's resources share one patient, and each token is an HMAC).
    tokens: Mutex<HashMap<String, Vec<u8>>>,
    /// Owners (`Patient/<id>`) whose id the operation drew itself for a Patient it creates:
    /// the store is not asked for their data key (a lookup per new patient was 3% of a
    /// large transaction's calling thread). Should a key be stored for one after all, the
    /// store refuses the new one (`Conflict`) and the operation is prepared again with
    /// lookups.
    new_owners: HashSet<String>,
}

impl PendingKeys {
    /// Keys for an operation that creates Patients with the ids `new_patients` it drew.
    pub(crate) fn with_new_patients<'a>(new_patients: impl IntoIterator<Item = &'a str>) -> Self {
        PendingKeys {
            new_owners: new_patients.into_iter().map(owner_of_patient).collect(),
            ..PendingKeys::default()
        }
    }

    /// The owner token of `name`, as `Keys::owner_token` computes it (remembered).
    fn owner_token(&self, keys: &Keys, name: &str) -> Vec<u8> {
        if let Some(token) = lock(&self.tokens).get(name) {
            return token.clone();
        }
        let token = keys.owner_token(name);
        lock(&self.tokens).insert(name.to_owned(), token.clone());
        token
    }

    fn get(&self, owner: &[u8]) -> Option<Arc<AeadKey>> {
        lock(&self.map).get(owner).map(|(k, _)| k.clone())
    }

    fn insert(&self, key: Arc<AeadKey>, record: DataKeyRecord) {
        lock(&self.map).insert(record.owner.clone(), (key, record));
    }

    /// The records to store with the operation's versions.
    fn records(&self) -> Vec<DataKeyRecord> {
        lock(&self.map).values().map(|(_, r)| r.clone()).collect()
    }

    /// After the commit: every new key joins the unsealed keys' cache.
    fn cache_all(&self, keys: &Keys) {
        for (owner, (key, _)) in lock(&self.map).iter() {
            keys.cache_dek(owner.clone(), key.clone());
        }
    }
}

/// Largest `_offset` accepted (keeps paging arithmetic and SQL offsets in range).
pub const MAX_OFFSET: usize = 100_000_000;
/// Limits on JSON Patch documents: operations, and size/depth of the patched resource.
const MAX_PATCH_OPS: usize = 100;
const MAX_RESOURCE_BYTES: usize = 16 * 1024 * 1024;
const MAX_DEPTH: usize = 64;

/// A write prepared for `Store::write` plus an optional blob to upload first.
struct Prepared {
    new: NewVersion,
    blob: Option<(String, Vec<u8>)>,
    stored: Stored,
    /// The patient (bare id) the version belongs to, empty for system data; for the ledger.
    patient: String,
}

/// The FHIR repository over a store, a blob store and the vault.
pub struct Repository {
    store: Arc<dyn Store>,
    blobs: BlobStore,
    vault: Arc<Vault>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn Random>,
    /// Serializes read-modify-write on this node; the store's version preconditions make
    /// concurrent writers on several nodes safe as well.
    write_lock: Mutex<()>,
    integrity_errors: AtomicU64,
    /// Transactions whose commit took the pipelined path (`commit_pipelined`), since start.
    pipelined: AtomicU64,
    /// Create-only transactions prepared again under the write lock after their commit
    /// lost a race (`prepare_again_locked`), since start.
    retried: AtomicU64,
    ledger: Ledger,
    access: crate::access::AccessConfig,
}

/// The serialization buffer a resource starts with, in bytes: a generated or carebundle
/// resource is 0.3-2 KiB of JSON, so most never need a second one.
const PLAINTEXT_CAPACITY: usize = 4096;

/// A buffer for plaintext that grows without leaving copies of it behind. A `Vec` that
/// grows hands its old block back to the allocator as it is, with the plaintext so far in
/// it, where `Zeroizing` cannot reach (zeroize's documentation says so); serde_json's
/// `to_vec` starts at 128 bytes and grew two to four times for most resources. Here the
/// bytes move to a buffer at least twice the size and the old one is zeroed as it drops.
struct ZeroizingBuf(zeroize::Zeroizing<Vec<u8>>);

impl ZeroizingBuf {
    fn with_capacity(n: usize) -> ZeroizingBuf {
        ZeroizingBuf(zeroize::Zeroizing::new(Vec::with_capacity(n)))
    }
}

impl std::io::Write for ZeroizingBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let need = self
            .0
            .len()
            .checked_add(data.len())
            .ok_or(std::io::ErrorKind::OutOfMemory)?;
        if need > self.0.capacity() {
            let mut bigger = Vec::new();
            bigger
                .try_reserve_exact(need.max(self.0.capacity().saturating_mul(2)))
                .map_err(|_| std::io::ErrorKind::OutOfMemory)?;
            bigger.extend_from_slice(&self.0);
            // The old buffer, spare capacity included, is zeroed as it drops here.
            self.0 = zeroize::Zeroizing::new(bigger);
        }
        // Fits: this never reallocates.
        self.0.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn resource_aad(rtype: &str, id: &str, version: i64, owner: &[u8]) -> Vec<u8> {
    use std::io::Write;
    const PREFIX: &[u8] = b"medvault/resource/v1|";
    // Sized once (20 bytes hold any i64): built by `format!` and then extended, it was
    // reallocated for nearly every resource.
    let mut aad = Vec::with_capacity(PREFIX.len() + rtype.len() + id.len() + 23 + owner.len());
    aad.extend_from_slice(PREFIX);
    aad.extend_from_slice(rtype.as_bytes());
    aad.push(b'|');
    aad.extend_from_slice(id.as_bytes());
    // Writing into a Vec cannot fail.
    let _ = write!(aad, "|{version}|");
    aad.extend_from_slice(owner);
    aad
}

/// The If-Match precondition: the live (not deleted) current version must be the one named.
pub(crate) fn check_if_match(current: Option<&VersionRecord>, if_match: Option<i64>) -> Result<()> {
    let Some(expected) = if_match else {
        return Ok(());
    };
    match current.filter(|c| !c.is_deleted()) {
        Some(c) if c.version == expected => Ok(()),
        Some(_) => Err(RepoError::PreconditionFailed(
            "If-Match does not match the current version",
        )),
        None => Err(RepoError::PreconditionFailed(
            "If-Match given for a resource that does not exist",
        )),
    }
}

/// The name of the data-key owner of a resource: its patient ("Patient/<id>"; a Patient owns
/// itself) or, for resources outside any patient's record, the system.
/// The bare patient id of an owner name ("Patient/123" → "123"; "system" → "").
fn patient_of_owner(owner: &str) -> String {
    owner.strip_prefix("Patient/").unwrap_or("").to_string()
}

/// The patient (bare id) a resource (as JSON, with its type and id) belongs to, empty if none.
pub fn patient_of_resource(resource: &Value) -> String {
    let rtype = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let id = resource.get("id").and_then(Value::as_str).unwrap_or("");
    patient_of_owner(&owner_of(rtype, id, resource))
}

/// The patient (bare id) a stored resource belongs to, empty if none.
pub fn patient_of_stored(s: &Stored) -> String {
    s.resource
        .as_ref()
        .map(|r| patient_of_owner(&owner_of(&s.rtype, &s.id, r)))
        .unwrap_or_default()
}

fn owner_of(rtype: &str, id: &str, resource: &Value) -> String {
    if rtype == "Patient" {
        return owner_of_patient(id);
    }
    match medvault_fhir::patient_of(resource) {
        Some(patient) => owner_of_patient(&patient),
        None => SYSTEM_OWNER.to_string(),
    }
}

/// The owner name of a patient's data (the inverse of [`patient_of_owner`]).
fn owner_of_patient(id: &str) -> String {
    format!("Patient/{id}")
}

/// Parse and check a search: `_lastUpdated` is answered from the store's own timestamps at
/// full precision (returned as a millisecond window); the rest is FHIR search over blind
/// indexes. Used before running a search and to check transaction reads up front.
pub(crate) fn parse_query(
    rtype: &str,
    pairs: &[(String, String)],
) -> Result<(SearchQuery, Option<i64>, Option<i64>)> {
    let updated: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "_lastUpdated")
        .map(|(_, v)| v.as_str())
        .collect();
    let rest: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "_lastUpdated")
        .cloned()
        .collect();
    let (from, until) = crate::search_time::last_updated_range(&updated)
        .map_err(|m| RepoError::BadRequest(m.into()))?;
    let query = medvault_fhir::parse_search(rtype, &rest)?;
    if query.offset > MAX_OFFSET {
        return Err(RepoError::BadRequest(format!(
            "_offset may be at most {MAX_OFFSET}"
        )));
    }
    Ok((query, from, until))
}

/// A random RFC 4122 version-4 UUID from the injected randomness.
pub fn new_uuid(rng: &dyn Random) -> Result<String> {
    let mut b = [0u8; 16];
    rng.fill(&mut b).map_err(RepoError::Crypto)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    // Lowercase hex, which the store keeps as the 16 bytes.
    Ok(medvault_store::uuid_text(&b))
}

fn check_type(rtype: &str) -> Result<()> {
    if medvault_fhir::is_supported_type(rtype) {
        Ok(())
    } else {
        Err(RepoError::UnsupportedType)
    }
}

fn check_id(id: &str) -> Result<()> {
    if medvault_fhir::is_valid_id(id) {
        Ok(())
    } else {
        Err(RepoError::BadRequest("invalid resource id".into()))
    }
}

fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let handle =
        tokio::runtime::Handle::try_current().map_err(|_| RepoError::Internal("no runtime"))?;
    Ok(handle.block_on(f))
}

impl Repository {
    pub fn new(
        store: Arc<dyn Store>,
        blobs: BlobStore,
        vault: Arc<Vault>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn Random>,
    ) -> Repository {
        let (store_for_ledger, clock_for_ledger, rng_for_ledger) =
            (store.clone(), clock.clone(), rng.clone());
        Repository {
            store,
            blobs,
            vault,
            clock,
            rng,
            write_lock: Mutex::new(()),
            integrity_errors: AtomicU64::new(0),
            pipelined: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            ledger: Ledger::new(
                store_for_ledger,
                clock_for_ledger,
                rng_for_ledger,
                LedgerConfig::default(),
            ),
            access: crate::access::AccessConfig::default(),
        }
    }

    /// Use `config` for the care window and break-glass duration.
    pub fn with_access_config(mut self, config: crate::access::AccessConfig) -> Repository {
        self.access = config;
        self
    }

    pub fn access_config(&self) -> &crate::access::AccessConfig {
        &self.access
    }

    /// Use `config` for when ledger checkpoints are signed.
    pub fn with_ledger_config(mut self, config: LedgerConfig) -> Repository {
        self.ledger = Ledger::new(
            self.store.clone(),
            self.clock.clone(),
            self.rng.clone(),
            config,
        );
        self
    }

    /// The store under this repository.
    pub fn store(&self) -> &dyn Store {
        &*self.store
    }

    /// The audit ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn rng(&self) -> &Arc<dyn Random> {
        &self.rng
    }

    /// Reads refused because stored data failed authentication, since start.
    pub fn integrity_errors(&self) -> u64 {
        self.integrity_errors.load(Ordering::Relaxed)
    }

    /// Transactions committed (or abandoned) by preparing their writes while writing them,
    /// since start: large create-only transactions (see `bundle.rs`, `PIPELINE_MIN`).
    pub fn pipelined_commits(&self) -> u64 {
        self.pipelined.load(Ordering::Relaxed)
    }

    /// Create-only transactions whose commit lost a race (a new owner's data key, or the
    /// ledger moved on) and were prepared again under the write lock, since start.
    pub fn retried_commits(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    pub(crate) fn keys(&self) -> Result<Arc<Keys>> {
        Ok(self.vault.keys()?)
    }

    fn integrity_failure(&self, rec: &VersionRecord, what: &'static str) -> RepoError {
        self.integrity_errors.fetch_add(1, Ordering::Relaxed);
        // Type, id and version are metadata, not PHI; the content is never logged.
        tracing::error!(
            rtype = %rec.rtype,
            id = %rec.id,
            version = rec.version,
            what,
            "integrity check failed; the stored row was not served"
        );
        RepoError::Integrity
    }

    /// The data key a new version will be encrypted under: one that exists, or one made
    /// ready in `pending` by `ensure_dek` beforehand.
    fn dek_ready(&self, keys: &Keys, owner: &[u8], pending: &PendingKeys) -> Result<Arc<AeadKey>> {
        if let Some(k) = pending.get(owner) {
            return Ok(k);
        }
        self.dek(keys, owner, None)?
            .ok_or(RepoError::Internal("data key not prepared"))
    }

    /// Make sure the data key of the owner of `resource` exists or is in `pending`. Runs
    /// before `prepare`, so preparing (the expensive part) can run on several threads.
    /// Returns the patient (bare id) the resource belongs to, empty for system data.
    pub(crate) fn ensure_dek(
        &self,
        keys: &Keys,
        rtype: &str,
        id: &str,
        resource: &Value,
        pending: &PendingKeys,
    ) -> Result<String> {
        let owner_name = owner_of(rtype, id, resource);
        let owner = pending.owner_token(keys, &owner_name);
        let stored = !pending.new_owners.contains(&owner_name);
        self.dek_or_new(keys, &owner, Some(pending), stored)?;
        Ok(patient_of_owner(&owner_name))
    }

    /// The data key of `owner`. If none exists and `pending` is given, a new one is created
    /// there (stored later, with the versions that use it).
    fn dek(
        &self,
        keys: &Keys,
        owner: &[u8],
        pending: Option<&PendingKeys>,
    ) -> Result<Option<Arc<AeadKey>>> {
        self.dek_or_new(keys, owner, pending, true)
    }

    /// [`Self::dek`], asking the store only if `stored` (false: the owner is known to be
    /// new, see `PendingKeys::new_owners`).
    fn dek_or_new(
        &self,
        keys: &Keys,
        owner: &[u8],
        pending: Option<&PendingKeys>,
        stored: bool,
    ) -> Result<Option<Arc<AeadKey>>> {
        if let Some(k) = keys.cached_dek(owner) {
            return Ok(Some(k));
        }
        if let Some(k) = pending.and_then(|p| p.get(owner)) {
            return Ok(Some(k));
        }
        let record = match stored {
            true => self.store.data_key(owner)?,
            false => None,
        };
        let Some(record) = record else {
            let Some(pending) = pending else {
                return Ok(None);
            };
            let dek = SecretKey::generate(&*self.rng).map_err(RepoError::Crypto)?;
            let wrapped = keys
                .wrap_dek(owner, &dek, &*self.rng)
                .map_err(RepoError::Crypto)?;
            let key = Arc::new(AeadKey::new(&dek, 0));
            let record = DataKeyRecord {
                owner: owner.to_vec(),
                kek_version: keys.current_kek(),
                wrapped,
            };
            // Only the planning thread adds keys, so none can appear between the lookup
            // above and here.
            pending.insert(key.clone(), record);
            return Ok(Some(key));
        };
        let dek = keys
            .unwrap_dek(owner, record.kek_version, &record.wrapped)
            .map_err(|_| RepoError::Integrity)?;
        let key = Arc::new(AeadKey::new(&dek, 0));
        keys.cache_dek(owner.to_vec(), key.clone());
        Ok(Some(key))
    }

    /// Validate, stamp, encrypt and index one resource version.
    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &self,
        keys: &Keys,
        rtype: &str,
        id: &str,
        version: i64,
        expected_current: Option<i64>,
        mut resource: Value,
        now_ms: i64,
        pending: &PendingKeys,
    ) -> Result<Prepared> {
        if resource.get("resourceType").and_then(Value::as_str) != Some(rtype) {
            return Err(RepoError::BadRequest(format!(
                "resourceType must be {rtype} at this endpoint"
            )));
        }
        let Some(obj) = resource.as_object_mut() else {
            return Err(RepoError::BadRequest(
                "a resource must be a JSON object".into(),
            ));
        };
        obj.insert("id".into(), Value::String(id.to_string()));
        let meta = obj
            .entry("meta")
            .or_insert_with(|| Value::Object(Default::default()));
        let Some(meta) = meta.as_object_mut() else {
            return Err(RepoError::Invalid(vec![Issue {
                code: medvault_fhir::IssueCode::Structure,
                expression: format!("{rtype}.meta"),
                diagnostics: "expected an object".into(),
            }]));
        };
        meta.insert("versionId".into(), Value::String(version.to_string()));
        meta.insert("lastUpdated".into(), Value::String(format_instant(now_ms)));
        medvault_fhir::validate(&resource).map_err(RepoError::Invalid)?;
        // A urn: reference left after transaction rewriting points nowhere; storing it would
        // also hide which patient the resource belongs to (and so which key encrypts it).
        if medvault_fhir::any_reference(&resource, &|r| r.starts_with("urn:")) {
            return Err(RepoError::BadRequest(
                "the resource has a urn: reference that no entry of this transaction resolves"
                    .into(),
            ));
        }

        let owner_name = owner_of(rtype, id, &resource);
        let owner = pending.owner_token(keys, &owner_name);
        let dek = self.dek_ready(keys, &owner, pending)?;
        let mut plaintext = ZeroizingBuf::with_capacity(PLAINTEXT_CAPACITY);
        serde_json::to_writer(&mut plaintext, &resource)
            .map_err(|_| RepoError::Internal("serialize"))?;
        let plaintext = plaintext.0;
        let envelope = dek
            .seal(
                &resource_aad(rtype, id, version, &owner),
                &plaintext,
                &*self.rng,
            )
            .map_err(RepoError::Crypto)?;
        let mut tokens: Vec<Token> = Vec::with_capacity(32);
        medvault_fhir::for_each_index_entry(&resource, |field, value| {
            tokens.push(keys.blind().token(field, value));
        });
        // Equal entries make equal tokens (as index_entries would have them: once each).
        tokens.sort_unstable();
        tokens.dedup();
        let (body, blob) = if BlobStore::wants(envelope.len()) {
            // A random suffix: a writer that loses the version race must not overwrite the
            // winner's object.
            let mut nonce = [0u8; 8];
            self.rng.fill(&mut nonce).map_err(RepoError::Crypto)?;
            let name = format!(
                "resources/{rtype}/{id}/{version}-{}",
                crate::vault::hex(&nonce)
            );
            (Body::Blob(name.clone()), Some((name, envelope)))
        } else {
            (Body::Inline(envelope), None)
        };
        Ok(Prepared {
            new: NewVersion {
                record: VersionRecord {
                    rtype: rtype.to_string(),
                    id: id.to_string(),
                    version,
                    updated_ms: now_ms,
                    owner,
                    body: Some(body),
                },
                expected_current,
                tokens,
            },
            blob,
            stored: Stored {
                rtype: rtype.to_string(),
                id: id.to_string(),
                version,
                updated_ms: now_ms,
                resource: Some(resource),
            },
            patient: patient_of_owner(&owner_name),
        })
    }

    /// Upload blobs, then commit all versions (and new data keys) atomically.
    fn commit(
        &self,
        keys: &Keys,
        audit: &Audit,
        prepared: &mut [Prepared],
        pending: PendingKeys,
    ) -> Result<()> {
        for p in prepared.iter_mut() {
            if let Some((name, bytes)) = p.blob.take() {
                block_on(self.blobs.put(&name, bytes))??;
            }
        }
        // Move the versions out (envelopes can be large); `stored` stays for the answer.
        let batch: Vec<NewVersion> = prepared
            .iter_mut()
            .map(|p| std::mem::replace(&mut p.new, NewVersion::placeholder()))
            .collect();
        let new_keys = pending.records();
        // One ledger entry per version, committed in the same transaction.
        let events: Vec<Event> = prepared
            .iter()
            .zip(&batch)
            .map(|(p, new)| {
                let action = match (&p.stored.resource, new.expected_current) {
                    (None, _) => "delete",
                    (Some(_), None) => "create",
                    (Some(_), Some(_)) => "update",
                };
                Event::new(action, &p.stored.rtype, &p.stored.id, Outcome::Allow)
                    .patient(&p.patient)
            })
            .collect();
        let once = || {
            self.ledger.commit_with(keys, audit, &events, |append| {
                self.store
                    .commit(&new_keys, &batch, append)
                    .map_err(|e| match e {
                        StoreError::Conflict => RepoError::Conflict,
                        StoreError::LedgerConflict => RepoError::Ledger(LedgerError::Conflict),
                        e => RepoError::Store(e),
                    })
            })
        };
        // Another writer moved the ledger on: the state was reloaded, so one retry appends
        // at the right place (the versions' own preconditions are re-checked by the store).
        match once() {
            Err(RepoError::Ledger(LedgerError::Conflict)) => once(),
            other => other,
        }?;
        pending.cache_all(keys);
        Ok(())
    }

    /// Decrypt and verify one stored version.
    fn open(&self, keys: &Keys, rec: &VersionRecord) -> Result<Stored> {
        let Some(body) = &rec.body else {
            return Ok(Stored {
                rtype: rec.rtype.clone(),
                id: rec.id.clone(),
                version: rec.version,
                updated_ms: rec.updated_ms,
                resource: None,
            });
        };
        let envelope = match body {
            Body::Inline(b) => b.clone(),
            Body::Blob(name) => block_on(self.blobs.get(name))?
                .map_err(|_| self.integrity_failure(rec, "blob missing"))?,
        };
        let dek = match self.dek(keys, &rec.owner, None) {
            Ok(Some(k)) => k,
            Ok(None) | Err(RepoError::Integrity) => {
                return Err(self.integrity_failure(rec, "data key"))
            }
            Err(e) => return Err(e),
        };
        let plaintext = zeroize::Zeroizing::new(
            dek.open(
                &resource_aad(&rec.rtype, &rec.id, rec.version, &rec.owner),
                &envelope,
            )
            .map_err(|_| self.integrity_failure(rec, "envelope"))?,
        );
        let resource: Value = serde_json::from_slice(&plaintext)
            .map_err(|_| self.integrity_failure(rec, "plaintext"))?;
        // Authenticated, but check the content agrees with its row as defence in depth.
        let agrees = resource.get("resourceType").and_then(Value::as_str) == Some(&rec.rtype)
            && resource.get("id").and_then(Value::as_str) == Some(&rec.id)
            && resource.pointer("/meta/versionId").and_then(Value::as_str)
                == Some(&rec.version.to_string());
        if !agrees {
            return Err(self.integrity_failure(rec, "content"));
        }
        Ok(Stored {
            rtype: rec.rtype.clone(),
            id: rec.id.clone(),
            version: rec.version,
            updated_ms: rec.updated_ms,
            resource: Some(resource),
        })
    }

    /// Read the current version.
    pub fn read(&self, rtype: &str, id: &str) -> Result<Stored> {
        check_type(rtype)?;
        check_id(id)?;
        let keys = self.keys()?;
        let rec = self.store.current(rtype, id)?.ok_or(RepoError::NotFound)?;
        if rec.is_deleted() {
            return Err(RepoError::Gone);
        }
        self.open(&keys, &rec)
    }

    /// Read one version.
    pub fn vread(&self, rtype: &str, id: &str, version: &str) -> Result<Stored> {
        check_type(rtype)?;
        check_id(id)?;
        let version: i64 = version.parse().map_err(|_| RepoError::NotFound)?;
        let keys = self.keys()?;
        let rec = self
            .store
            .version(rtype, id, version)?
            .ok_or(RepoError::NotFound)?;
        if rec.is_deleted() {
            return Err(RepoError::Gone);
        }
        self.open(&keys, &rec)
    }

    /// Create with a server-assigned id. With `if_none_exist` (a search query string), an
    /// existing single match is returned instead, and several matches are an error.
    pub fn create(
        &self,
        audit: &Audit,
        rtype: &str,
        resource: Value,
        if_none_exist: Option<&str>,
    ) -> Result<Written> {
        check_type(rtype)?;
        let keys = self.keys()?;
        let Some(query) = if_none_exist else {
            // A plain create reads nothing it could race on (its id is new), so it is
            // validated and encrypted outside the write lock, beside other writers' commits.
            // Only its owner's data key can race: two writers may each make the first key of
            // the same owner, and the store refuses the second (Conflict); that write is then
            // prepared again under the lock, with the key the first one stored.
            let id = new_uuid(&*self.rng)?;
            return match self.write_one(&keys, audit, rtype, &id, None, resource.clone()) {
                Err(RepoError::Conflict) => {
                    let _guard = self.lock_writes();
                    self.write_one(&keys, audit, rtype, &id, None, resource)
                }
                other => other,
            };
        };
        let _guard = self.lock_writes();
        if let Some(existing) = self.conditional_match(&keys, rtype, query)? {
            return Ok(Written {
                stored: existing,
                created: false,
            });
        }
        let id = new_uuid(&*self.rng)?;
        self.write_one(&keys, audit, rtype, &id, None, resource)
    }

    /// Write the next version of one resource (the caller holds the write lock and has
    /// checked preconditions): data key, validation, encryption, index, durable commit.
    fn write_one(
        &self,
        keys: &Keys,
        audit: &Audit,
        rtype: &str,
        id: &str,
        current_version: Option<i64>,
        resource: Value,
    ) -> Result<Written> {
        let pending = PendingKeys::default();
        self.ensure_dek(keys, rtype, id, &resource, &pending)?;
        let mut prepared = [self.prepare(
            keys,
            rtype,
            id,
            current_version.unwrap_or(0) + 1,
            current_version,
            resource,
            self.clock.now_ms(),
            &pending,
        )?];
        self.commit(keys, audit, &mut prepared, pending)?;
        let [p] = prepared;
        Ok(Written {
            stored: p.stored,
            created: current_version.is_none(),
        })
    }

    /// The single existing resource matching a conditional-create query, if any.
    pub(crate) fn conditional_match(
        &self,
        keys: &Keys,
        rtype: &str,
        query: &str,
    ) -> Result<Option<Stored>> {
        let pairs = parse_query_string(query.trim_start_matches('?'));
        if pairs.is_empty() {
            return Err(RepoError::BadRequest("empty If-None-Exist query".into()));
        }
        if pairs
            .iter()
            .any(|(k, _)| matches!(k.as_str(), "_count" | "_offset"))
        {
            return Err(RepoError::BadRequest(
                "If-None-Exist may not contain _count or _offset".into(),
            ));
        }
        let page = self.search_with_keys(keys, rtype, &pairs, Some(2))?;
        match page.total {
            0 => Ok(None),
            1 => Ok(page.entries.into_iter().next()),
            _ => Err(RepoError::PreconditionFailed(
                "the conditional create criteria match more than one resource",
            )),
        }
    }

    /// Update (or create with a client id). `if_match` is the version the client expects.
    pub fn update(
        &self,
        audit: &Audit,
        rtype: &str,
        id: &str,
        resource: Value,
        if_match: Option<i64>,
    ) -> Result<Written> {
        check_type(rtype)?;
        check_id(id)?;
        match resource.get("id").and_then(Value::as_str) {
            Some(body_id) if body_id == id => {}
            Some(_) => {
                return Err(RepoError::BadRequest(
                    "the resource id does not match the URL".into(),
                ))
            }
            None => return Err(RepoError::BadRequest("the resource must have an id".into())),
        }
        let keys = self.keys()?;
        let _guard = self.lock_writes();
        let current = self.store.current(rtype, id)?;
        let current_version = current.as_ref().map(|c| c.version);
        check_if_match(current.as_ref(), if_match)?;
        let created = current.as_ref().is_none_or(|c| c.is_deleted());
        let written = self.write_one(&keys, audit, rtype, id, current_version, resource)?;
        Ok(Written { created, ..written })
    }

    /// Apply a JSON Patch (RFC 6902) to the current version.
    pub fn patch(
        &self,
        audit: &Audit,
        rtype: &str,
        id: &str,
        patch: Value,
        if_match: Option<i64>,
        check: &dyn Fn(&Value) -> Result<()>,
    ) -> Result<Written> {
        let patch: json_patch::Patch = serde_json::from_value(patch).map_err(|_| {
            RepoError::BadRequest("the body is not a valid JSON Patch document".into())
        })?;
        if patch.0.len() > MAX_PATCH_OPS {
            return Err(RepoError::BadRequest(format!(
                "a JSON Patch may have at most {MAX_PATCH_OPS} operations"
            )));
        }
        let current = self.read(rtype, id)?;
        if let Some(expected) = if_match {
            if expected != current.version {
                return Err(RepoError::PreconditionFailed(
                    "If-Match does not match the current version",
                ));
            }
        }
        let mut doc = current.resource.ok_or(RepoError::Gone)?;
        // One operation at a time, bounding size and depth after each, so `copy` cannot
        // double the document until memory runs out and `add` cannot nest without limit.
        for op in patch.0 {
            json_patch::patch(&mut doc, &[op])
                .map_err(|_| RepoError::BadRequest("the JSON Patch could not be applied".into()))?;
            if depth(&doc, 0) > MAX_DEPTH || !fits(&doc, MAX_RESOURCE_BYTES) {
                return Err(RepoError::BadRequest(
                    "the patched resource would be too large or too deeply nested".into(),
                ));
            }
        }
        if doc.get("id").and_then(Value::as_str) != Some(id)
            || doc.get("resourceType").and_then(Value::as_str) != Some(rtype)
        {
            return Err(RepoError::BadRequest(
                "a patch may not change the resource type or id".into(),
            ));
        }
        // The caller's access check on the patched content (it may name another patient).
        check(&doc)?;
        // Pin the version we patched: a concurrent update makes this a conflict, not a
        // silent overwrite.
        match self.update(audit, rtype, id, doc, Some(current.version)) {
            Err(RepoError::PreconditionFailed(_)) if if_match.is_none() => Err(RepoError::Conflict),
            other => other,
        }
    }

    /// Delete (idempotent). Returns the deletion version, or `None` if nothing was live.
    pub fn delete(
        &self,
        audit: &Audit,
        rtype: &str,
        id: &str,
        if_match: Option<i64>,
    ) -> Result<Option<i64>> {
        check_type(rtype)?;
        check_id(id)?;
        let keys = self.keys()?;
        let _guard = self.lock_writes();
        let current = self.store.current(rtype, id)?;
        check_if_match(current.as_ref(), if_match)?;
        let Some(current) = current.filter(|c| !c.is_deleted()) else {
            return Ok(None);
        };
        let patient = self.patient_for_delete(&keys, &current);
        let PreparedWrite(prepared) = self.prepare_delete(&current, self.clock.now_ms(), patient);
        let version = prepared.new.record.version;
        self.commit(&keys, audit, &mut [prepared], PendingKeys::default())?;
        Ok(Some(version))
    }

    /// History of one resource or a whole type, newest first.
    pub fn history(
        &self,
        rtype: &str,
        id: Option<&str>,
        offset: usize,
        count: usize,
    ) -> Result<Page> {
        check_type(rtype)?;
        if let Some(id) = id {
            check_id(id)?;
        }
        let keys = self.keys()?;
        let count = count.min(MAX_COUNT);
        if offset > MAX_OFFSET {
            return Err(RepoError::BadRequest(format!(
                "_offset may be at most {MAX_OFFSET}"
            )));
        }
        let page = self.store.history(rtype, id, offset, count)?;
        if id.is_some() && page.total == 0 {
            return Err(RepoError::NotFound);
        }
        let entries = page
            .records
            .iter()
            .map(|r| self.open(&keys, r))
            .collect::<Result<Vec<_>>>()?;
        Ok(Page {
            entries,
            total: page.total,
            offset,
            count,
        })
    }

    /// Search current resources of a type.
    pub fn search(&self, rtype: &str, pairs: &[(String, String)]) -> Result<Page> {
        check_type(rtype)?;
        let keys = self.keys()?;
        self.search_with_keys(&keys, rtype, pairs, None)
    }

    /// A search with already unsealed keys (for access control's own lookups).
    pub(crate) fn search_with(
        &self,
        keys: &Keys,
        rtype: &str,
        pairs: &[(String, String)],
    ) -> Result<Page> {
        self.search_with_keys(keys, rtype, pairs, None)
    }

    fn search_with_keys(
        &self,
        keys: &Keys,
        rtype: &str,
        pairs: &[(String, String)],
        count_override: Option<usize>,
    ) -> Result<Page> {
        let (query, updated_from_ms, updated_until_ms) = parse_query(rtype, pairs)?;
        let count = count_override
            .or(query.count)
            .unwrap_or(DEFAULT_COUNT)
            .min(MAX_COUNT);
        let offset = query.offset;
        let mut store_query = self.store_query(keys, &query);
        store_query.updated_from_ms = updated_from_ms;
        store_query.updated_until_ms = updated_until_ms;
        let needs_filter = query.clauses.iter().any(|c| c.exact.is_some());
        if !needs_filter {
            let page = self.store.search(&store_query, offset, count)?;
            let entries = page
                .records
                .iter()
                .map(|r| self.open(keys, r))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Page {
                entries,
                total: page.total,
                offset,
                count,
            });
        }
        // Date ranges are matched by coarse buckets in the index; decrypt the candidates and
        // keep the exact matches, so totals and pages are computed after filtering.
        let mut matched = Vec::new();
        for rec in self.store.search_all(&store_query)? {
            let stored = self.open(keys, &rec)?;
            if stored
                .resource
                .as_ref()
                .is_some_and(|r| medvault_fhir::matches(&query, r))
            {
                matched.push(stored);
            }
        }
        let total = matched.len() as u64;
        let entries = matched.into_iter().skip(offset).take(count).collect();
        Ok(Page {
            entries,
            total,
            offset,
            count,
        })
    }

    fn store_query(&self, keys: &Keys, query: &SearchQuery) -> StoreQuery {
        let all_of = query
            .clauses
            .iter()
            .map(|c| {
                c.any_of
                    .iter()
                    .map(|v| keys.blind().token(&c.field, v))
                    .collect()
            })
            .collect();
        StoreQuery {
            rtype: query.resource_type.clone(),
            all_of,
            ids: query.ids.clone(),
            updated_from_ms: None,
            updated_until_ms: None,
        }
    }

    /// Re-wrap up to `limit` data keys that are not under the current KEK.
    pub fn rewrap_step(&self, limit: usize) -> Result<RewrapProgress> {
        let keys = self.keys()?;
        let current = keys.current_kek();
        let mut rewrapped = 0;
        for rec in self.store.data_keys_not_at_version(current, limit)? {
            let dek = keys
                .unwrap_dek(&rec.owner, rec.kek_version, &rec.wrapped)
                .map_err(|_| {
                    self.integrity_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!("a wrapped data key failed its integrity check during re-wrap");
                    RepoError::Integrity
                })?;
            let wrapped = keys
                .wrap_dek(&rec.owner, &dek, &*self.rng)
                .map_err(RepoError::Crypto)?;
            let new = DataKeyRecord {
                owner: rec.owner.clone(),
                kek_version: current,
                wrapped,
            };
            if self.store.rewrap_data_key(&new, rec.kek_version)? {
                rewrapped += 1;
            }
        }
        Ok(RewrapProgress {
            rewrapped,
            remaining: self.keys_not_current(current)?,
        })
    }

    fn keys_not_current(&self, current: u32) -> Result<u64> {
        Ok(self
            .store
            .data_key_versions()?
            .iter()
            .filter(|(v, _)| *v != current)
            .map(|(_, n)| n)
            .sum())
    }

    /// Counts of data keys per KEK version.
    pub fn key_versions(&self) -> Result<Vec<(u32, u64)>> {
        Ok(self.store.data_key_versions()?)
    }

    /// Process a transaction (all or nothing) or batch (each entry alone) Bundle.
    /// Run a transaction or batch Bundle; `caller` is decided entry by entry. Returns the
    /// answer and the batch entries the policy refused (patient, reason).
    pub fn bundle(
        &self,
        audit: &Audit,
        bundle: Value,
        caller: &crate::access::Caller,
    ) -> Result<(Value, crate::bundle::Refused)> {
        use crate::bundle::Touch;
        let decide = |t: &Touch<'_>| {
            self.authorize_resource(
                caller,
                t.action,
                t.rtype,
                Some(&t.patient),
                t.id,
                t.resource,
            )
        };
        let gate: crate::bundle::Gate<'_> = match caller {
            crate::access::Caller::Anonymous => None,
            crate::access::Caller::User(_) => Some(&decide),
        };
        crate::bundle::process(self, audit, bundle, gate)
    }

    // --- pieces used by bundle processing ---

    /// Serialize read-modify-write on this node (a poisoned lock guards nothing broken:
    /// the store rolls back any transaction a panicking writer left open).
    pub(crate) fn lock_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn current_record(&self, rtype: &str, id: &str) -> Result<Option<VersionRecord>> {
        Ok(self.store.current(rtype, id)?)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn prepare_version(
        &self,
        keys: &Keys,
        rtype: &str,
        id: &str,
        version: i64,
        expected_current: Option<i64>,
        resource: Value,
        now_ms: i64,
        pending: &PendingKeys,
    ) -> Result<PreparedWrite> {
        Ok(PreparedWrite(self.prepare(
            keys,
            rtype,
            id,
            version,
            expected_current,
            resource,
            now_ms,
            pending,
        )?))
    }

    /// The patient (bare id) of a version being deleted, for the ledger. A version that no
    /// longer decrypts (damaged, already counted as an integrity failure) can still be
    /// deleted; its entry then names no patient.
    pub(crate) fn patient_for_delete(&self, keys: &Keys, rec: &VersionRecord) -> String {
        self.open(keys, rec)
            .map(|s| patient_of_stored(&s))
            .unwrap_or_default()
    }

    pub(crate) fn prepare_delete(
        &self,
        current: &VersionRecord,
        now_ms: i64,
        patient: String,
    ) -> PreparedWrite {
        PreparedWrite(Prepared {
            new: NewVersion {
                record: VersionRecord {
                    rtype: current.rtype.clone(),
                    id: current.id.clone(),
                    version: current.version + 1,
                    updated_ms: now_ms,
                    owner: current.owner.clone(),
                    body: None,
                },
                expected_current: Some(current.version),
                tokens: Vec::new(),
            },
            blob: None,
            stored: Stored {
                rtype: current.rtype.clone(),
                id: current.id.clone(),
                version: current.version + 1,
                updated_ms: now_ms,
                resource: None,
            },
            patient,
        })
    }

    /// Commit a transaction's writes atomically. `locked` says whether the caller holds the
    /// write lock. A transaction prepared without it (creates only: their ids are new) can
    /// lose one race, the first data key of a new owner that another writer stored first;
    /// the store then refuses the whole commit, and every write is prepared again, under the
    /// lock, from the resource it was prepared from, with the key now stored.
    pub(crate) fn commit_all(
        &self,
        keys: &Keys,
        audit: &Audit,
        writes: Vec<PreparedWrite>,
        pending: PendingKeys,
        locked: bool,
    ) -> Result<Vec<Stored>> {
        let mut prepared: Vec<Prepared> = writes.into_iter().map(|w| w.0).collect();
        match self.commit(keys, audit, &mut prepared, pending) {
            Err(RepoError::Conflict) if !locked => {}
            other => {
                other?;
                return Ok(prepared.into_iter().map(|p| p.stored).collect());
            }
        }
        self.prepare_again_locked(
            keys,
            audit,
            prepared.into_iter().map(|p| p.stored).collect(),
        )
    }

    /// The retry of a create-only transaction that lost a race: every write prepared
    /// again from its resource, under the write lock, and committed.
    fn prepare_again_locked(
        &self,
        keys: &Keys,
        audit: &Audit,
        creates: Vec<Stored>,
    ) -> Result<Vec<Stored>> {
        self.retried.fetch_add(1, Ordering::Relaxed);
        let _guard = self.lock_writes();
        let now = self.clock.now_ms();
        let pending = PendingKeys::default();
        let mut again = Vec::with_capacity(creates.len());
        for s in creates {
            let Stored {
                rtype,
                id,
                version,
                resource,
                ..
            } = s;
            // Only creates are prepared unlocked, and a create always has its resource.
            let (Some(resource), 1) = (resource, version) else {
                return Err(RepoError::Internal(
                    "unlocked transaction with a non-create",
                ));
            };
            self.ensure_dek(keys, &rtype, &id, &resource, &pending)?;
            again.push(self.prepare(keys, &rtype, &id, 1, None, resource, now, &pending)?);
        }
        self.commit(keys, audit, &mut again, pending)?;
        Ok(again.into_iter().map(|p| p.stored).collect())
    }
}

/// A write ready to commit (opaque outside this module).
pub(crate) struct PreparedWrite(Prepared);

/// The writes of a pipelined commit with each one's part of the answer, if it was made.
type WritesAnswered<A> = (Vec<Stored>, Option<Vec<A>>);

/// The writes of a pipelined commit, shared by the writing thread and one helper. The
/// writing thread publishes each job as soon as it is planned (references rewritten, access
/// decided, data key ready), so the helper starts preparing while the rest is still being
/// planned; each job is prepared once, by whichever thread claims it first (claims go in
/// entry order, and only published jobs are claimed), and its result waits in its slot
/// until the writer takes it. A writer that finds its next result not ready prepares the
/// next unclaimed job itself instead of sleeping, so it only ever waits for the one job the
/// other thread is finishing (asleep, not spinning: with several transactions at once there
/// are more threads than cores); the helper sleeps only while it waits for a job to be
/// published.
struct Pipeline<J> {
    jobs: Vec<Mutex<Option<J>>>,
    results: Vec<Mutex<Option<Result<PreparedWrite>>>>,
    /// Jobs published so far, in order (only the writing thread publishes).
    published: std::sync::atomic::AtomicUsize,
    /// Set once no more jobs will be published.
    closed: std::sync::atomic::AtomicBool,
    /// The next job no thread has claimed.
    next: std::sync::atomic::AtomicUsize,
    /// Set when a job fails or the commit ends early: nothing more is claimed.
    stop: std::sync::atomic::AtomicBool,
    /// Threads asleep waiting for a job or a result: how many, and where they sleep.
    waiting: std::sync::atomic::AtomicUsize,
    ready: (Mutex<()>, std::sync::Condvar),
}

/// What a claim found.
enum Claim {
    /// A job was claimed and prepared (its result is in its slot).
    Prepared,
    /// Every published job is claimed, and more may be published.
    NotYet,
    /// Nothing is left to claim, now or later.
    Done,
}

impl<J> Pipeline<J> {
    /// A pipeline for `count` jobs, none published yet.
    fn open(count: usize) -> Pipeline<J> {
        Pipeline {
            jobs: (0..count).map(|_| Mutex::new(None)).collect(),
            results: (0..count).map(|_| Mutex::new(None)).collect(),
            published: std::sync::atomic::AtomicUsize::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
            next: std::sync::atomic::AtomicUsize::new(0),
            stop: std::sync::atomic::AtomicBool::new(false),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            ready: (Mutex::new(()), std::sync::Condvar::new()),
        }
    }

    /// Make the next job claimable. More jobs than the pipeline was opened for are refused
    /// (the writer then finds fewer published than planned, and stops).
    fn publish(&self, job: J) {
        let i = self.published.load(Ordering::SeqCst);
        let Some(slot) = self.jobs.get(i) else {
            self.stop.store(true, Ordering::SeqCst);
            return;
        };
        *lock(slot) = Some(job);
        self.published.store(i + 1, Ordering::SeqCst);
        self.wake();
    }

    /// No more jobs will be published; `stop` also ends every claim.
    fn close(&self, stop: bool) {
        if stop {
            self.stop.store(true, Ordering::SeqCst);
        }
        self.closed.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn published(&self) -> usize {
        self.published.load(Ordering::SeqCst)
    }

    /// Run the planner, which publishes the jobs, then close the pipeline: stopped too
    /// unless the plan succeeded with exactly `count` jobs (and results, e.g. ledger
    /// events) published. A panic in the planner becomes its internal error: left open, the
    /// pipeline would keep the helper waiting for jobs, and the scope waiting for the helper.
    fn plan<E>(
        &self,
        count: usize,
        plan: impl FnOnce(&dyn Fn(J)) -> Result<Vec<E>>,
    ) -> Result<Vec<E>> {
        match unless_panic(|| plan(&|job| self.publish(job))) {
            Ok(planned) if planned.len() == count && self.published() == count => {
                self.close(false);
                Ok(planned)
            }
            Ok(_) => {
                self.close(true);
                Err(RepoError::Internal("one ledger event per write"))
            }
            Err(e) => {
                self.close(true);
                Err(e)
            }
        }
    }

    /// Wake the sleepers. A sleeper counts itself (under `ready.0`) before it checks what
    /// it waits for, and whatever it waits for is stored before `waiting` is read here:
    /// either it sees the change or it is asleep in `wait` by the time this takes the lock.
    fn wake(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let _guard = lock(&self.ready.0);
            self.ready.1.notify_all();
        }
    }

    /// Sleep while `pending()` holds (rechecked after counting this thread as waiting); a
    /// timeout only as a backstop.
    fn sleep_while(&self, pending: impl Fn() -> bool) {
        let guard = lock(&self.ready.0);
        self.waiting.fetch_add(1, Ordering::SeqCst);
        if pending() {
            let _woken = self
                .ready
                .1
                .wait_timeout(guard, std::time::Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner());
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    /// Claim and prepare the next published job. A job that fails stops further claims:
    /// every job before it is already claimed, so the first failing entry is still found.
    /// A panic while preparing becomes that job's error (a slot left empty would keep the
    /// writer waiting for it).
    fn claim(&self, prepare: &(impl Fn(J) -> Result<PreparedWrite> + Sync)) -> Claim {
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Claim::Done;
            }
            let i = self.next.load(Ordering::SeqCst);
            if i >= self.published() {
                // `closed` is set after the last publish: once it is seen, `published` is final.
                if !self.closed.load(Ordering::SeqCst) {
                    return Claim::NotYet;
                }
                if i >= self.published() {
                    return Claim::Done;
                }
                continue;
            }
            if self
                .next
                .compare_exchange(i, i + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                continue;
            }
            let Some(job) = lock(&self.jobs[i]).take() else {
                // Published jobs are claimed once each; an empty slot is a broken invariant.
                *lock(&self.results[i]) = Some(Err(RepoError::Internal("pipeline slot")));
                self.stop.store(true, Ordering::SeqCst);
                self.wake();
                return Claim::Done;
            };
            let result = unless_panic(|| prepare(job));
            if result.is_err() {
                self.stop.store(true, Ordering::SeqCst);
            }
            *lock(&self.results[i]) = Some(result);
            self.wake();
            return Claim::Prepared;
        }
    }

    /// The helper's loop: prepare published jobs until none is left to claim.
    fn help(&self, prepare: &(impl Fn(J) -> Result<PreparedWrite> + Sync)) {
        loop {
            match self.claim(prepare) {
                Claim::Prepared => {}
                Claim::Done => return,
                Claim::NotYet => self.sleep_while(|| {
                    !self.closed.load(Ordering::SeqCst)
                        && !self.stop.load(Ordering::SeqCst)
                        && self.next.load(Ordering::SeqCst) >= self.published()
                }),
            }
        }
    }

    /// Job `k`'s result, preparing unclaimed jobs while it is not ready. Only asked after
    /// every job is published, in order, and never past a failed job, so job `k` has been
    /// claimed or is claimable.
    fn take(
        &self,
        k: usize,
        prepare: &(impl Fn(J) -> Result<PreparedWrite> + Sync),
    ) -> Result<PreparedWrite> {
        loop {
            if let Some(result) = lock(&self.results[k]).take() {
                return result;
            }
            match self.claim(prepare) {
                Claim::Prepared => continue,
                // The other thread is finishing job `k`: sleep until its result is stored.
                Claim::NotYet | Claim::Done => {
                    self.sleep_while(|| lock(&self.results[k]).is_none());
                }
            }
        }
    }
}

/// Run a pipelined commit's COMMIT (`commit`, the store's final durable step) on a pool
/// thread while this thread frees the transaction's parsed resources, which it parsed: a
/// free on another thread goes through the allocator's slow cross-thread path (see
/// `bundle::free_here`), and here the other core would otherwise sit idle through the
/// COMMIT, while the frees were a tenth of the writing thread's time on 280-resource
/// Bundles. The scope returns once the COMMIT has run.
///
/// The COMMIT waits in rayon's queue behind whatever the pool is doing, while this thread
/// holds the SQLite writer and the ledger's lock: no rayon job may ever wait on either (or
/// on the vault's state, which `rotate` holds while it waits for the writer), or this
/// deadlocks (ARCHITECTURE.md). Today the pool only prepares, answers and commits.
fn free_while_committing(commit: &mut (dyn FnMut() + Send), parsed: Option<Vec<Option<Value>>>) {
    rayon::in_place_scope(|scope| {
        scope.spawn(move |_| commit());
        drop(parsed);
    });
}

/// `f()`, with a panic turned into an internal error: for preparation on pool threads, whose
/// panics would otherwise surface on the request's thread or leave a pipeline slot empty.
pub(crate) fn unless_panic<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or(Err(RepoError::Internal("preparation panicked")))
}

/// A mutex whose poisoning is ignored: a panic is recorded as a job's error above, and the
/// slots hold plain values.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Repository {
    /// Commit a transaction of `count` creates prepared without the write lock, preparing
    /// it while it is planned and written. `plan` runs on the calling thread and publishes
    /// each job as soon as it is planned; a pool thread starts preparing (validating and
    /// encrypting) the published jobs at once. The calling thread then feeds each version
    /// into the open store transaction as soon as it is ready, while the pool thread
    /// prepares the following ones, so the two cores validate and encrypt on one side and
    /// plan and write SQLite pages on the other, where the plain path does one after the
    /// other. `plan` returns the `events` (one "create" per job, in order, naming the
    /// patient `ensure_dek` returned), which go into the ledger in the same commit; the
    /// data keys it adds to `pending` are stored with the versions.
    ///
    /// An error from `plan` is the error (nothing is written, whatever was prepared). The
    /// first job that fails to prepare stops the commit (nothing is written) and is the
    /// error. If the commit loses a race (a new owner's data key, or the ledger moved on),
    /// every write is prepared again under the write lock, as in `commit_all`.
    ///
    /// `answer_each` makes each write's part of the answer. Once the last version is in
    /// the store's transaction, a pool thread runs it over the writes while the calling
    /// thread writes the posting log; then SQLite's COMMIT runs on a pool thread while the
    /// calling thread frees the writes' parsed resources (`free_while_committing`), so the
    /// writes come back without them (`resource` is `None`). Its results are returned
    /// beside the writes if the commit succeeds, and dropped otherwise. `None` when they
    /// could not be made then (a retried commit, or `answer_each` panicked): the caller
    /// makes them itself.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn commit_pipelined<J: Send, A: Send>(
        &self,
        keys: &Keys,
        audit: &Audit,
        count: usize,
        pending: &PendingKeys,
        plan: impl FnOnce(&dyn Fn(J)) -> Result<Vec<Event>>,
        prepare: impl Fn(J) -> Result<PreparedWrite> + Sync,
        answer_each: impl Fn(&Stored) -> A + Sync,
    ) -> Result<WritesAnswered<A>> {
        self.pipelined.fetch_add(1, Ordering::Relaxed);
        let pipeline = Pipeline::open(count);
        let mut stored: Vec<Stored> = Vec::with_capacity(count);
        // Set once every write is in the store's transaction; the writes then move to the
        // pool task that answers them, and come back here with their answers.
        let mut all_taken = false;
        let answered: Mutex<Option<WritesAnswered<A>>> = Mutex::new(None);
        // The writes' parsed resources, taken out of them once all are in the store's
        // transaction, to be freed while the COMMIT runs (`free_while_committing`).
        let parsed: Mutex<Option<Vec<Option<Value>>>> = Mutex::new(None);
        // Why a streamed commit stopped, when the reason is the repository's own.
        let mut stopped: Option<RepoError> = None;
        let committed = rayon::in_place_scope(|scope| {
            let (pipeline, prepare) = (&pipeline, &prepare);
            let (answer_each, answered) = (&answer_each, &answered);
            scope.spawn(move |_| pipeline.help(prepare));
            // On an error the helper ends with its current job (the scope waits for it).
            let events = pipeline.plan(count, plan)?;
            let new_keys = pending.records();
            let committed = self.ledger.commit_with(keys, audit, &events, |append| {
                let mut next = || -> Option<medvault_store::Result<NewVersion>> {
                    if all_taken {
                        return None;
                    }
                    let k = stored.len();
                    if k == count {
                        all_taken = true;
                        let mut writes = std::mem::take(&mut stored);
                        *lock(&parsed) =
                            Some(writes.iter_mut().map(|s| s.resource.take()).collect());
                        scope.spawn(move |_| {
                            let each =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    writes.iter().map(answer_each).collect()
                                }));
                            *lock(answered) = Some((writes, each.ok()));
                        });
                        return None;
                    }
                    let abandon = |why: RepoError, stopped: &mut Option<RepoError>| {
                        *stopped = Some(why);
                        Some(Err(StoreError::Abandoned))
                    };
                    let mut p = match pipeline.take(k, prepare) {
                        Ok(PreparedWrite(p)) => p,
                        Err(e) => return abandon(e, &mut stopped),
                    };
                    // The ledger entry was written from the plan; the version must agree.
                    let event = &events[k];
                    if event.patient != p.patient
                        || event.resource_id != p.stored.id
                        || event.resource_type != p.stored.rtype
                    {
                        return abandon(RepoError::Internal("ledger event mismatch"), &mut stopped);
                    }
                    if let Some((name, bytes)) = p.blob.take() {
                        match block_on(self.blobs.put(&name, bytes)) {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => return abandon(e.into(), &mut stopped),
                            Err(e) => return abandon(e, &mut stopped),
                        }
                    }
                    let new = std::mem::replace(&mut p.new, NewVersion::placeholder());
                    stored.push(p.stored);
                    Some(Ok(new))
                };
                self.store
                    .commit_streamed(&new_keys, &mut next, append, &mut |commit| {
                        free_while_committing(commit, lock(&parsed).take());
                    })
                    .map_err(|e| match e {
                        StoreError::Conflict => RepoError::Conflict,
                        StoreError::LedgerConflict => RepoError::Ledger(LedgerError::Conflict),
                        e => RepoError::Store(e),
                    })
            });
            match committed {
                Err(RepoError::Conflict | RepoError::Ledger(LedgerError::Conflict)) => {
                    // The rest, for the retry (a job that fails now is the error). Once
                    // all were taken, they are with the answering task.
                    if !all_taken {
                        for k in stored.len()..count {
                            let PreparedWrite(p) = pipeline.take(k, prepare)?;
                            stored.push(p.stored);
                        }
                    }
                    Err(RepoError::Conflict)
                }
                other => {
                    // Ended: the helper claims nothing more (the scope waits for its job).
                    pipeline.close(true);
                    other
                }
            }
        });
        // The scope has waited for the answering task, if there was one.
        let mut answers = None;
        if let Some((writes, each)) = answered.into_inner().unwrap_or_else(|e| e.into_inner()) {
            stored = writes;
            answers = each;
        }
        match committed {
            Ok(()) => {
                pending.cache_all(keys);
                Ok((stored, answers))
            }
            Err(RepoError::Conflict) if stored.len() == count => {
                // A conflict comes before the COMMIT, so the resources were not freed. The
                // store's conflicts all come before the last version is handed over, when
                // they are still in the writes; should one ever come later, they are put
                // back from where they wait for the COMMIT (no test reaches this).
                if let Some(parsed) = lock(&parsed).take() {
                    for (s, resource) in stored.iter_mut().zip(parsed) {
                        s.resource = resource;
                    }
                }
                self.prepare_again_locked(keys, audit, stored)
                    .map(|stored| (stored, None))
            }
            Err(RepoError::Store(StoreError::Abandoned)) => {
                Err(stopped.unwrap_or(RepoError::Internal("commit abandoned")))
            }
            Err(e) => Err(e),
        }
    }
}

/// Split `a=b&c=d` into percent-decoded pairs (`+` is a space, as in forms).
pub fn parse_query_string(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                // Both bytes must be hex digits (from_str_radix alone would accept "+a").
                let hex = (bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit())
                    .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
                    .flatten()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A JSON OperationOutcome-ready description of validation issues.
pub fn issues_json(issues: &[Issue]) -> Vec<Value> {
    issues
        .iter()
        .map(|i| {
            json!({
                "severity": "error",
                "code": i.code.as_str(),
                "diagnostics": i.diagnostics,
                "expression": [i.expression],
            })
        })
        .collect()
}

/// Nesting depth of a JSON value (stops counting past the limit).
fn depth(v: &Value, at: usize) -> usize {
    if at > MAX_DEPTH {
        return at;
    }
    match v {
        Value::Array(a) => a.iter().map(|x| depth(x, at + 1)).max().unwrap_or(at + 1),
        Value::Object(o) => o.values().map(|x| depth(x, at + 1)).max().unwrap_or(at + 1),
        _ => at,
    }
}

/// Whether the serialized value fits in `limit` bytes (stops writing once it does not).
fn fits(v: &Value, limit: usize) -> bool {
    struct Counter(usize, usize);
    impl std::io::Write for Counter {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            if self.0 > self.1 {
                return Err(std::io::Error::other("too large"));
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Counter(0, limit), v).is_ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use medvault_crypto::DeterministicRandom;

    /// The plaintext buffer holds exactly what was written, across many growths, each at
    /// least doubling it. This checks the copying only: a plain `Vec` would pass it too,
    /// and whether the old blocks were zeroed is not visible from safe code (`Zeroizing`'s
    /// drop does that).
    #[test]
    fn the_zeroizing_buffer_keeps_every_byte_across_growths() {
        use std::io::Write;
        let mut buf = super::ZeroizingBuf::with_capacity(16);
        let mut want = Vec::new();
        let mut growths = 0;
        for i in 0..500u32 {
            let chunk: Vec<u8> = (0..(i % 53)).map(|k| (i * 7 + k) as u8).collect();
            let (cap, ptr) = (buf.0.capacity(), buf.0.as_ptr());
            buf.write_all(&chunk).unwrap();
            want.extend_from_slice(&chunk);
            if buf.0.capacity() != cap {
                growths += 1;
                assert!(
                    buf.0.capacity() >= 2 * cap,
                    "grew from {cap} to {}",
                    buf.0.capacity()
                );
            } else {
                assert_eq!(buf.0.as_ptr(), ptr, "moved without growing");
            }
        }
        assert_eq!(&**buf.0, &want[..]);
        assert!(growths >= 5, "{growths}");
        // As the repository uses it: serde_json's own bytes.
        let value = serde_json::json!({"resourceType": "Binary", "data": "x".repeat(10_000)});
        let mut buf = super::ZeroizingBuf::with_capacity(super::PLAINTEXT_CAPACITY);
        serde_json::to_writer(&mut buf, &value).unwrap();
        assert_eq!(&**buf.0, &serde_json::to_vec(&value).unwrap()[..]);
    }

    /// The AAD every stored version was sealed under, byte for byte: a change would make
    /// every existing row fail its integrity check.
    #[test]
    fn the_resource_aad_is_the_stored_format() {
        assert_eq!(
            super::resource_aad("Observation", "0f3e-x", 12, b"\x00own"),
            b"medvault/resource/v1|Observation|0f3e-x|12|\x00own"
        );
        assert_eq!(
            super::resource_aad("P", "", i64::MIN, b""),
            format!("medvault/resource/v1|P||{}|", i64::MIN).into_bytes()
        );
    }

    /// A version's envelope opens only under the AAD of its own type, id, version and
    /// owner: change any one and it does not (the type too, which the integration tests
    /// cannot tell from the content check after decryption).
    #[test]
    fn an_envelope_opens_only_under_its_own_type_id_version_and_owner() {
        use medvault_crypto::{envelope::AeadKey, SecretKey};
        let rng = DeterministicRandom::new(3);
        let key = AeadKey::new(&SecretKey::generate(&rng).unwrap(), 1);
        let aad = super::resource_aad("Observation", "x", 1, b"owner-a");
        let sealed = key.seal(&aad, b"{}", &rng).unwrap();
        assert!(key.open(&aad, &sealed).is_ok());
        for other in [
            super::resource_aad("Condition", "x", 1, b"owner-a"),
            super::resource_aad("Observation", "y", 1, b"owner-a"),
            super::resource_aad("Observation", "x", 2, b"owner-a"),
            super::resource_aad("Observation", "x", 1, b"owner-b"),
            // The separators keep fields from running into each other.
            super::resource_aad("Observatio", "nx", 1, b"owner-a"),
        ] {
            assert!(
                key.open(&other, &sealed).is_err(),
                "{:?}",
                String::from_utf8_lossy(&other)
            );
        }
    }

    /// However planning ends (a refusal, a panic, fewer jobs than announced, or success),
    /// the helper waiting for published jobs ends too; the request's thread would
    /// otherwise wait for it forever.
    #[test]
    fn the_helper_ends_however_planning_ends() {
        use super::{Pipeline, PreparedWrite, RepoError, Result};
        use std::sync::Arc;
        for case in 0..4 {
            let pipeline: Arc<Pipeline<u32>> = Arc::new(Pipeline::open(2));
            let (done, ended) = std::sync::mpsc::channel();
            let helper = {
                let pipeline = pipeline.clone();
                std::thread::spawn(move || {
                    let prepare = |_: u32| -> Result<PreparedWrite> {
                        Err(RepoError::Internal("this test prepares nothing"))
                    };
                    pipeline.help(&prepare);
                    done.send(()).unwrap();
                })
            };
            let planned = pipeline.plan(2, |publish| match case {
                0 => Err(RepoError::BadRequest("refused".into())),
                1 => panic!("a planner that panics"),
                2 => {
                    publish(7);
                    Ok(vec![()])
                }
                _ => {
                    publish(7);
                    publish(8);
                    Ok(vec![(), ()])
                }
            });
            assert_eq!(planned.is_ok(), case == 3, "case {case}");
            ended
                .recv_timeout(std::time::Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("case {case}: the helper still waits"));
            helper.join().unwrap();
        }
    }

    #[test]
    fn new_uuid_is_a_lowercase_version_4_uuid() {
        let rng = DeterministicRandom::new(7);
        let id = super::new_uuid(&rng).unwrap();
        // Each group's length, the version nibble and the variant bits.
        let groups: Vec<&str> = id.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(id
            .chars()
            .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert!(groups[2].starts_with('4'));
        assert!(matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
        assert_eq!(crate::vault::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert!(medvault_fhir::is_valid_id(&id));
        // The random bytes in order, with the version and variant bits set.
        let mut b = [0u8; 16];
        medvault_crypto::Random::fill(&DeterministicRandom::new(7), &mut b).unwrap();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        assert_eq!(id.replace('-', ""), crate::vault::hex(&b));
    }
}
