//! The audit ledger service: every access decision becomes an encrypted, salted entry in an
//! RFC 9162 Merkle log stored beside the data, with signed checkpoints, proofs and a verifier.
//!
//! Entries are appended in the same store transaction as the action they record (writes), or
//! in their own durable commit before the answer leaves (reads, refusals); if the ledger cannot
//! be written, the action fails. The tree state (a `Frontier`) lives in memory and is rebuilt
//! from the stored subtree hashes after unseal, checked against the latest signed checkpoint.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use medvault_crypto::Random;
use medvault_ledger::entry::MAX_MORE;
use medvault_ledger::{
    consistency_proof, entry_leaf, inclusion_proof, open, Checkpoint, Entry, EntryText, Frontier,
    Hash, MoreResources, NodeSource, Outcome, ProofError, Salt, SigningKey,
};
use medvault_store::{CheckpointRecord, LedgerAppend, LedgerNode, LedgerRecord, Store, StoreError};
use zeroize::Zeroizing;

use crate::clock::Clock;
use crate::vault::Keys;

/// Entries read per round trip by the verifier.
const VERIFY_CHUNK: usize = 8192;

/// Errors of the ledger service. None carries entry contents.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("storage error: {0}")]
    Store(StoreError),
    #[error("the stored ledger tree is incomplete")]
    MissingNode,
    #[error("cryptographic failure")]
    Crypto,
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("ledger entry {0} failed authentication")]
    EntryDamaged(u64),
    #[error("the stored ledger moved on (another writer); reloaded")]
    Conflict,
}

impl From<StoreError> for LedgerError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LedgerConflict => LedgerError::Conflict,
            e => LedgerError::Store(e),
        }
    }
}

impl From<medvault_crypto::CryptoError> for LedgerError {
    fn from(_: medvault_crypto::CryptoError) -> Self {
        LedgerError::Crypto
    }
}

impl From<ProofError<LedgerError>> for LedgerError {
    fn from(e: ProofError<LedgerError>) -> Self {
        match e {
            ProofError::IndexOutOfRange { .. } => {
                LedgerError::BadRequest("index must be below size")
            }
            ProofError::InvalidSizes { .. } => {
                LedgerError::BadRequest("sizes must satisfy 0 < from <= to")
            }
            ProofError::Source(e) => e,
        }
    }
}

/// The checkpoint signing key for a seed. Its name (and the log's origin) is derived from the
/// public key, so it is unique per vault and survives rotation and rekey.
pub fn signing_key(seed: &[u8; 32]) -> Result<SigningKey, LedgerError> {
    let probe = SigningKey::from_seed("medvault", seed).map_err(|_| LedgerError::Crypto)?;
    let digest = medvault_crypto::keys::sha256(probe.verifier_key().public_key());
    let origin = format!("medvault/ledger/{}", hex(&digest[..8]));
    SigningKey::from_seed(&origin, seed).map_err(|_| LedgerError::Crypto)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who acts and from where: the request context every entry records.
#[derive(Clone, Debug, Default)]
pub struct Audit {
    pub actor: String,
    pub role: String,
    pub client: String,
    pub address: String,
    pub user_agent: String,
    pub purpose: String,
}

impl Audit {
    /// An API caller. Until accounts exist every caller is anonymous; address and agent are
    /// still recorded.
    pub fn anonymous(address: &str, user_agent: &str) -> Audit {
        Audit {
            actor: "anonymous".into(),
            role: "none".into(),
            address: address.into(),
            user_agent: user_agent.into(),
            ..Audit::default()
        }
    }

    /// An operator command or background job run by the server itself.
    pub fn system(actor: &str) -> Audit {
        Audit {
            actor: actor.into(),
            role: "system".into(),
            ..Audit::default()
        }
    }
}

/// One access decision. Its `Debug` leaves out the ids and the reason, as the ledger
/// `Entry`'s does.
#[derive(Clone)]
pub struct Event {
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    /// The patient whose data this is (bare id), empty if none.
    pub patient: String,
    pub outcome: Outcome,
    pub reason: String,
    pub break_glass: bool,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("action", &self.action)
            .field("resource_type", &self.resource_type)
            .field("outcome", &self.outcome)
            .field("break_glass", &self.break_glass)
            .finish_non_exhaustive()
    }
}

impl Event {
    pub fn new(action: &str, resource_type: &str, resource_id: &str, outcome: Outcome) -> Event {
        Event {
            action: action.into(),
            resource_type: resource_type.into(),
            resource_id: resource_id.into(),
            patient: String::new(),
            outcome,
            reason: String::new(),
            break_glass: false,
        }
    }

    pub fn patient(mut self, patient: &str) -> Event {
        self.patient = patient.into();
        self
    }

    pub fn reason(mut self, reason: &str) -> Event {
        self.reason = reason.into();
        self
    }
}

/// When checkpoints are signed.
#[derive(Clone, Copy, Debug)]
pub struct LedgerConfig {
    /// Sign a checkpoint once this many entries were added since the last one.
    pub checkpoint_every: u64,
    /// Or once this much time passed since the last one and entries were added.
    pub checkpoint_interval_ms: i64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            checkpoint_every: 1000,
            checkpoint_interval_ms: 60_000,
        }
    }
}

struct TreeState {
    frontier: Frontier,
    checkpoint_size: u64,
    checkpoint_ms: i64,
}

/// A proof answered over HTTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    pub hashes: Vec<Hash>,
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub entries: u64,
    pub checkpoints: u64,
    /// The first entry index found bad, and what is wrong with it.
    pub first_bad: Option<(u64, String)>,
}

/// The ledger of one data directory.
pub struct Ledger {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    rng: Arc<dyn Random>,
    config: LedgerConfig,
    /// `None` until loaded (after unseal) or after a failed commit, which may mean the stored
    /// ledger moved; it is then rebuilt from the store.
    state: Mutex<Option<TreeState>>,
    /// `record` calls waiting for the tree lock. Whoever holds it next records every
    /// queued request in one durable commit (group commit): concurrent requests share one
    /// WAL sync instead of taking turns at one each.
    queue: Mutex<Vec<Arc<Queued>>>,
    compromised: Mutex<Option<String>>,
    /// Called once, when the ledger is first found compromised (e.g. a webhook).
    alert: Mutex<Option<AlertHook>>,
}

/// Receives the reason when the ledger is first found compromised.
pub type AlertHook = Arc<dyn Fn(String) + Send + Sync>;

/// One `record` call waiting in the group-commit queue.
struct Queued {
    audit: Audit,
    events: Vec<Event>,
    /// Set, under the tree lock, by the caller that committed this request's group.
    done: Mutex<Option<GroupOutcome>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GroupOutcome {
    /// Recorded durably with its group.
    Recorded,
    /// Its group's commit failed: the request records itself alone (and so gets its own,
    /// precise error).
    Alone,
}

impl Queued {
    fn outcome(&self) -> Option<GroupOutcome> {
        *self.done.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self, outcome: GroupOutcome) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    }
}

struct StoreNodes<'a>(&'a dyn Store);

impl NodeSource for StoreNodes<'_> {
    type Error = LedgerError;
    fn node(&self, level: u32, index: u64) -> Result<Hash, LedgerError> {
        self.0
            .ledger_node(level, index)?
            .map(Hash::from_bytes)
            .ok_or(LedgerError::MissingNode)
    }
}

/// The entries that record `items`: the events of one request (one `Audit`) that record the
/// same decision (action, outcome, reason, break-glass) on resources of the same patient
/// become one entry naming them all, in order, up to `MAX_MORE` further ones each; IHE's
/// Basic Audit Log Patterns likewise record one AuditEvent per patient per transaction. A
/// transaction creating 45 resources for one patient writes one entry, not 45 (each entry is
/// salted, hashed, sealed and stored on its own). Events naming no resource stay alone.
fn group_events<'a>(
    items: &[(&'a Audit, &'a Event)],
) -> Vec<(&'a Audit, &'a Event, MoreResources)> {
    /// What events must share to share an entry (besides the request).
    type Decision<'e> = (&'e str, &'e str, Outcome, &'e str, bool);
    let mut groups: Vec<(&Audit, &Event, Vec<EntryText>)> = Vec::with_capacity(items.len());
    // The open group of each decision of the current request (a group commit records
    // several requests, which never share an entry; each request's events are contiguous).
    let mut open: HashMap<Decision<'a>, usize> = HashMap::new();
    let mut request: Option<&Audit> = None;
    // The decision of the last event that joined or opened a group, and that group.
    let mut last: Option<(Decision<'a>, usize)> = None;
    for &(audit, ev) in items {
        if !request.is_some_and(|r| std::ptr::eq(r, audit)) {
            open.clear();
            last = None;
            request = Some(audit);
        }
        if ev.resource_type.is_empty() {
            groups.push((audit, ev, Vec::new()));
            continue;
        }
        let decision = (
            ev.action.as_str(),
            ev.patient.as_str(),
            ev.outcome,
            ev.reason.as_str(),
            ev.break_glass,
        );
        // Most events share the decision of the one before (a patient's resources come
        // together in a Bundle), which needs no hashing.
        let group = match last {
            Some((d, g)) if d == decision => Some(g),
            _ => open.get(&decision).copied(),
        };
        match group {
            Some(g) if groups[g].2.len() < MAX_MORE => {
                groups[g]
                    .2
                    .push(text(&[&ev.resource_type, "/", &ev.resource_id].concat()));
                last = Some((decision, g));
            }
            _ => {
                open.insert(decision, groups.len());
                last = Some((decision, groups.len()));
                groups.push((audit, ev, Vec::new()));
            }
        }
    }
    groups
        .into_iter()
        .map(|(audit, ev, more)| {
            // At most MAX_MORE by construction.
            let more = MoreResources::new(more).unwrap_or_default();
            (audit, ev, more)
        })
        .collect()
}

fn text(s: &str) -> EntryText {
    // Entry fields are bounded; a longer value (a huge user agent) is cut at a char boundary.
    let mut end = s.len().min(4096);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    EntryText::new(&s[..end]).unwrap_or_else(|_| EntryText::empty())
}

fn entry_aad(index: u64) -> Vec<u8> {
    let mut aad = b"medvault/ledger-entry/v1|".to_vec();
    aad.extend_from_slice(&index.to_be_bytes());
    aad
}

/// Decrypt a stored entry and check that it is the one its leaf commits to.
pub fn open_entry(keys: &Keys, rec: &LedgerRecord) -> Result<(Entry, Salt), LedgerError> {
    let damaged = || LedgerError::EntryDamaged(rec.index);
    let plain = Zeroizing::new(
        keys.ledger_entries()
            .open(&entry_aad(rec.index), &rec.envelope)
            .map_err(|_| damaged())?,
    );
    let (salt, bytes) = plain.split_at_checked(32).ok_or_else(damaged)?;
    let salt = Salt::from_slice(salt).map_err(|_| damaged())?;
    if entry_leaf(&salt, bytes).as_bytes() != &rec.leaf {
        return Err(damaged());
    }
    let entry = Entry::decode(bytes).map_err(|_| damaged())?;
    Ok((entry, salt))
}

impl Ledger {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        rng: Arc<dyn Random>,
        config: LedgerConfig,
    ) -> Ledger {
        Ledger {
            store,
            clock,
            rng,
            config,
            state: Mutex::new(None),
            queue: Mutex::new(Vec::new()),
            compromised: Mutex::new(None),
            alert: Mutex::new(None),
        }
    }

    /// Call `hook` (once) when the ledger is found compromised.
    pub fn set_alert(&self, hook: AlertHook) {
        *self.alert.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// Why the ledger is considered compromised, if it is.
    pub fn compromised(&self) -> Option<String> {
        self.compromised
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Record that the ledger failed an integrity check: no more checkpoints are signed,
    /// `/sys/health` says so, and the alert hook runs (the first time only).
    pub fn mark_compromised(&self, why: String) {
        tracing::error!(reason = %why, "audit ledger integrity check failed");
        let first = {
            let mut c = self.compromised.lock().unwrap_or_else(|e| e.into_inner());
            let first = c.is_none();
            if first {
                *c = Some(why.clone());
            }
            first
        };
        if first {
            let hook = self.alert.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(hook) = hook {
                hook(why);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<TreeState>> {
        // A panic while holding the lock leaves at worst a stale state; drop it so it is
        // rebuilt from the store.
        self.state.lock().unwrap_or_else(|e| {
            let mut g = e.into_inner();
            *g = None;
            g
        })
    }

    /// Drop the in-memory tree (on seal); it is rebuilt on next use.
    pub fn forget(&self) {
        *self.lock() = None;
    }

    /// The frontier of the first `size` leaves, from the stored perfect-subtree hashes.
    fn frontier_from_nodes(&self, size: u64) -> Result<Frontier, LedgerError> {
        let nodes = StoreNodes(&*self.store);
        let mut roots = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            if (size >> level) & 1 == 1 {
                roots.push(nodes.node(level, start >> level)?);
                start += 1 << level;
            }
        }
        Frontier::from_parts(size, roots).map_err(|_| LedgerError::MissingNode)
    }

    /// Rebuild the tree after unseal. Up to the latest checkpoint the stored subtree hashes
    /// are trusted only because the signed root checks them; past it, the tree is recomputed
    /// from the leaves and every stored subtree hash compared, so nothing unchecked is ever
    /// signed. Integrity failures mark the ledger compromised; storage errors just fail.
    fn load(&self, keys: &Keys) -> Result<TreeState, LedgerError> {
        let size = self.store.ledger_size()?;
        let latest = self.store.latest_checkpoint()?;
        let mut problem: Option<String> = None;
        let mut base = 0u64;
        let mut frontier = Frontier::new();
        if let Some(c) = &latest {
            match open(&c.note, &keys.ledger_signer().verifier_key()) {
                Err(_) => {
                    problem = Some("the latest checkpoint's signature does not verify".into())
                }
                Ok(cp) if cp.size() != c.size => {
                    problem = Some("a checkpoint row's size differs from its signed note".into())
                }
                Ok(cp) if cp.size() > size => {
                    problem = Some(format!(
                        "the ledger has {size} entries but a signed checkpoint covers {}: entries were deleted",
                        cp.size()
                    ))
                }
                Ok(cp) => match self.frontier_from_nodes(cp.size()) {
                    Ok(f) if f.root() == *cp.root() => {
                        base = cp.size();
                        frontier = f;
                    }
                    Ok(_) | Err(LedgerError::MissingNode) => {
                        problem = Some(
                            "the stored tree differs from its latest signed checkpoint".into(),
                        )
                    }
                    Err(e) => return Err(e),
                },
            }
        }
        if problem.is_none() {
            problem = self.extend_from_leaves(keys, &mut frontier, base, size)?;
        }
        if let Some(why) = problem {
            self.mark_compromised(why);
            // Keep serving from what the stored hashes say, so reads stay recorded; nothing
            // more is signed while compromised.
            frontier = self.frontier_from_nodes(size)?;
        }
        Ok(TreeState {
            frontier,
            checkpoint_size: latest.map_or(0, |c| c.size),
            checkpoint_ms: self.clock.now_ms(),
        })
    }

    /// Push leaves `from..to` onto `frontier`, comparing every subtree hash they complete with
    /// the stored one; also refuse stored hashes beyond the end (left by deleted entries).
    /// Each entry must open under the ledger key with its leaf the hash of its contents: a
    /// row planted in the database (completing no stored subtree) would otherwise join the
    /// tree and be signed with the next checkpoint. These are the entries since the latest
    /// checkpoint, at most `checkpoint_every` of them in a healthy ledger.
    fn extend_from_leaves(
        &self,
        keys: &Keys,
        frontier: &mut Frontier,
        from: u64,
        to: u64,
    ) -> Result<Option<String>, LedgerError> {
        let mut next = from;
        while next < to {
            let chunk = self.store.ledger_entries(next, VERIFY_CHUNK)?;
            if chunk.is_empty() {
                return Ok(Some(format!("ledger entry {next} is missing")));
            }
            for rec in chunk {
                if rec.index != next {
                    return Ok(Some(format!("ledger entry {next} is missing")));
                }
                if open_entry(keys, &rec).is_err() {
                    return Ok(Some(format!(
                        "ledger entry {next} does not open under the ledger key or its leaf is not its hash"
                    )));
                }
                let completed = frontier
                    .push(Hash::from_bytes(rec.leaf))
                    .map_err(|_| LedgerError::MissingNode)?;
                for n in completed.filter(|n| n.level >= 1) {
                    if self.store.ledger_node(n.level, n.index)? != Some(*n.hash.as_bytes()) {
                        return Ok(Some(format!(
                            "the stored subtree hash over entries {}.. is missing or wrong",
                            n.index << n.level
                        )));
                    }
                }
                next += 1;
            }
        }
        // The next append would complete these subtrees; a stored hash there means entries
        // were deleted from the end (and appends would collide with it).
        for level in 1..64u32 {
            let index = to >> level;
            if index.checked_shl(level).is_none() {
                break;
            }
            if self.store.ledger_node(level, index)?.is_some() {
                return Ok(Some(format!(
                    "stored subtree hashes cover entries past the last one ({to}): entries were deleted"
                )));
            }
        }
        Ok(None)
    }

    fn entry(&self, audit: &Audit, ev: &Event, more: MoreResources, now_ms: i64) -> Entry {
        Entry {
            time: now_ms.div_euclid(1000),
            actor: text(&audit.actor),
            role: text(&audit.role),
            client: text(&audit.client),
            action: text(&ev.action),
            resource_type: text(&ev.resource_type),
            resource_id: text(&ev.resource_id),
            patient: text(&ev.patient),
            outcome: ev.outcome,
            reason: text(&ev.reason),
            purpose: text(&audit.purpose),
            break_glass: ev.break_glass,
            address: text(&audit.address),
            user_agent: text(&audit.user_agent),
            more,
        }
    }

    /// Build the ledger rows for `events`, hand them to `commit` (which must store them
    /// durably, together with whatever they record), and advance the tree only if it
    /// succeeded. A checkpoint is signed into the same commit when one is due.
    pub fn commit_with<T, E>(
        &self,
        keys: &Keys,
        audit: &Audit,
        events: &[Event],
        commit: impl FnOnce(&LedgerAppend) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<LedgerError>,
    {
        let mut guard = self.lock();
        let items: Vec<(&Audit, &Event)> = events.iter().map(|ev| (audit, ev)).collect();
        self.commit_locked(&mut guard, keys, &items, commit)
    }

    /// `commit_with` for entries of possibly several requests, under the tree lock.
    fn commit_locked<T, E>(
        &self,
        guard: &mut MutexGuard<'_, Option<TreeState>>,
        keys: &Keys,
        items: &[(&Audit, &Event)],
        commit: impl FnOnce(&LedgerAppend) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<LedgerError>,
    {
        if guard.is_none() {
            **guard = Some(self.load(keys)?);
        }
        let Some(state) = guard.as_mut() else {
            return Err(LedgerError::MissingNode.into());
        };
        let now = self.clock.now_ms();
        let mut frontier = state.frontier.clone();
        let mut append = LedgerAppend::default();
        for (audit, ev, more) in group_events(items) {
            let index = frontier.size();
            let bytes = self.entry(audit, ev, more, now).encode();
            let mut salt = [0u8; 32];
            self.rng.fill(&mut salt).map_err(LedgerError::from)?;
            let salt = Salt::from_bytes(salt);
            let leaf = entry_leaf(&salt, &bytes);
            let mut plain = Zeroizing::new(Vec::with_capacity(32 + bytes.len()));
            plain.extend_from_slice(salt.as_bytes());
            plain.extend_from_slice(&bytes);
            let envelope = keys
                .ledger_entries()
                .seal(&entry_aad(index), &plain, &*self.rng)
                .map_err(LedgerError::from)?;
            let completed = frontier.push(leaf).map_err(|_| LedgerError::MissingNode)?;
            append
                .nodes
                .extend(completed.filter(|n| n.level >= 1).map(|n| LedgerNode {
                    level: n.level,
                    index: n.index,
                    hash: *n.hash.as_bytes(),
                }));
            append.entries.push(LedgerRecord {
                index,
                leaf: *leaf.as_bytes(),
                envelope,
            });
        }
        let size = frontier.size();
        let grown = size - state.checkpoint_size;
        let due = grown > 0
            && (grown >= self.config.checkpoint_every
                || now - state.checkpoint_ms >= self.config.checkpoint_interval_ms);
        // A compromised ledger gets no new signatures: signing over a history that does not
        // extend the last checkpoint would be signing two inconsistent views.
        if due && self.compromised().is_none() {
            let cp = Checkpoint::new(keys.ledger_signer().name(), size, frontier.root())
                .map_err(|_| LedgerError::Crypto)?;
            let note = keys
                .ledger_signer()
                .sign(&cp)
                .map_err(|_| LedgerError::Crypto)?;
            append.checkpoint = Some(CheckpointRecord {
                size,
                note: note.into_string(),
            });
        }
        let signed = append.checkpoint.is_some();
        match commit(&append) {
            Ok(t) => {
                state.frontier = frontier;
                if signed {
                    state.checkpoint_size = size;
                    state.checkpoint_ms = now;
                }
                Ok(t)
            }
            Err(e) => {
                **guard = None;
                Err(e)
            }
        }
    }

    /// Record `events` durably before returning. Concurrent calls are committed together:
    /// each queues its request, and whichever holds the tree lock next commits everything
    /// queued in one transaction; the others find theirs done when they get the lock. If a
    /// group's commit fails, each of its requests is recorded again alone.
    pub fn record(&self, keys: &Keys, audit: &Audit, events: &[Event]) -> Result<(), LedgerError> {
        let me = Arc::new(Queued {
            audit: audit.clone(),
            events: events.to_vec(),
            done: Mutex::new(None),
        });
        self.queue_lock().push(me.clone());
        let mut guard = self.lock();
        match me.outcome() {
            Some(GroupOutcome::Recorded) => return Ok(()),
            Some(GroupOutcome::Alone) => {
                drop(guard);
                return self.record_alone(keys, audit, events);
            }
            None => {}
        }
        // Lead: this request and every one queued behind it, in one commit. Outcomes are
        // set before the lock is released, so a waiter that gets the lock next finds its
        // own (a waiter finding none leads the next group, which holds it).
        let mut group = std::mem::take(&mut *self.queue_lock());
        // Always among them: had a group taken this request and failed to finish (a panic
        // while committing), it would otherwise go unrecorded.
        if !group.iter().any(|q| Arc::ptr_eq(q, &me)) {
            group.push(me.clone());
        }
        let items: Vec<(&Audit, &Event)> = group
            .iter()
            .flat_map(|q| q.events.iter().map(move |ev| (&q.audit, ev)))
            .collect();
        let result = self.commit_locked(&mut guard, keys, &items, |a| self.store_entries(a));
        let outcome = match result {
            Ok(()) => GroupOutcome::Recorded,
            Err(_) => GroupOutcome::Alone,
        };
        for q in &group {
            q.finish(outcome);
        }
        drop(guard);
        match result {
            Ok(()) => Ok(()),
            Err(_) if group.len() > 1 => self.record_alone(keys, audit, events),
            Err(LedgerError::Conflict) => self.record_alone(keys, audit, events),
            Err(e) => Err(e),
        }
    }

    /// A commit of ledger rows alone (for entries that record no other write).
    fn store_entries(&self, append: &LedgerAppend) -> Result<(), LedgerError> {
        Ok(self.store.commit(&[], &[], append)?)
    }

    /// `record` calls waiting to be committed right now.
    pub fn queued(&self) -> usize {
        self.queue_lock().len()
    }

    fn queue_lock(&self) -> MutexGuard<'_, Vec<Arc<Queued>>> {
        // The queue is only ever pushed to or taken whole: a panic leaves it consistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record `events` in their own durable commit (retried once if another writer moved
    /// the ledger on meanwhile).
    fn record_alone(
        &self,
        keys: &Keys,
        audit: &Audit,
        events: &[Event],
    ) -> Result<(), LedgerError> {
        let once = || self.commit_with(keys, audit, events, |a| self.store_entries(a));
        match once() {
            Err(LedgerError::Conflict) => once(),
            other => other,
        }
    }

    /// Sign a checkpoint if one is due by time (called periodically).
    pub fn tick(&self, keys: &Keys) -> Result<(), LedgerError> {
        self.commit_with(keys, &Audit::default(), &[], |append| {
            if append.is_empty() {
                return Ok(());
            }
            self.store_entries(append)
        })
    }

    /// The latest signed checkpoint note, if any.
    pub fn latest_checkpoint(&self) -> Result<Option<String>, LedgerError> {
        Ok(self.store.latest_checkpoint()?.map(|c| c.note))
    }

    /// Up to `count` decrypted entries from index `from` (for auditors), each with its salt
    /// and leaf so it can be checked against a proof.
    pub fn entries(
        &self,
        keys: &Keys,
        from: u64,
        count: usize,
    ) -> Result<Vec<(u64, Entry, Salt, Hash)>, LedgerError> {
        let mut out = Vec::new();
        for rec in self.store.ledger_entries(from, count)? {
            let (entry, salt) = open_entry(keys, &rec)?;
            out.push((rec.index, entry, salt, Hash::from_bytes(rec.leaf)));
        }
        Ok(out)
    }

    /// Every entry naming `patient`, oldest first (a full scan: entries are encrypted, so
    /// there is no index by patient), at most `limit`.
    pub fn entries_of_patient(
        &self,
        keys: &Keys,
        patient: &str,
        limit: usize,
    ) -> Result<Vec<(u64, Entry, Salt, Hash)>, LedgerError> {
        let mut out = Vec::new();
        let mut from = 0;
        loop {
            let chunk = self.store.ledger_entries(from, VERIFY_CHUNK)?;
            let Some(last) = chunk.last() else {
                return Ok(out);
            };
            from = last.index + 1;
            for rec in chunk {
                let (entry, salt) = open_entry(keys, &rec)?;
                if entry.patient.as_str() == patient {
                    out.push((rec.index, entry, salt, Hash::from_bytes(rec.leaf)));
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
    }

    /// The latest checkpoint's size and note, if any.
    pub fn latest(&self) -> Result<Option<(u64, String)>, LedgerError> {
        Ok(self.store.latest_checkpoint()?.map(|c| (c.size, c.note)))
    }

    /// Inclusion proof of entry `index` in the tree of `size` entries.
    pub fn inclusion(&self, index: u64, size: u64) -> Result<Proof, LedgerError> {
        if size > self.store.ledger_size()? {
            return Err(LedgerError::BadRequest("size is larger than the ledger"));
        }
        let hashes = inclusion_proof(&StoreNodes(&*self.store), index, size)?;
        Ok(Proof { hashes })
    }

    /// Consistency proof from the tree of `from` entries to the tree of `to` entries.
    pub fn consistency(&self, from: u64, to: u64) -> Result<Proof, LedgerError> {
        if to > self.store.ledger_size()? {
            return Err(LedgerError::BadRequest("size is larger than the ledger"));
        }
        let hashes = consistency_proof(&StoreNodes(&*self.store), from, to)?;
        Ok(Proof { hashes })
    }
}

/// Rebuild the whole tree from the stored entries and check everything: each entry decrypts
/// under its own index and matches its leaf, the stored subtree hashes match, every stored
/// checkpoint is signed by this vault's key and matches the rebuilt tree at its size, and no
/// checkpoint covers more entries than exist. Reports the first bad entry index.
pub fn verify(
    store: &dyn Store,
    keys: &Keys,
    mut progress: impl FnMut(u64, u64),
) -> Result<VerifyReport, LedgerError> {
    let mut v = Verifier::new();
    v.catch_up(store, keys, &mut progress)?;
    Ok(v.report())
}

/// Verification that can resume: the server's background verifier keeps one and feeds it the
/// entries appended since its last run (the first run checks everything).
pub struct Verifier {
    frontier: Frontier,
    checkpoints: u64,
    last_good_checkpoint: u64,
    first_bad: Option<(u64, String)>,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new()
    }
}

impl Verifier {
    pub fn new() -> Verifier {
        Verifier {
            frontier: Frontier::new(),
            checkpoints: 0,
            last_good_checkpoint: 0,
            first_bad: None,
        }
    }

    /// Entries verified so far.
    pub fn verified(&self) -> u64 {
        self.frontier.size()
    }

    /// The first bad entry found, if any (verification stops there).
    pub fn first_bad(&self) -> Option<&(u64, String)> {
        self.first_bad.as_ref()
    }

    pub fn report(&self) -> VerifyReport {
        VerifyReport {
            entries: self.frontier.size(),
            checkpoints: self.checkpoints,
            first_bad: self.first_bad.clone(),
        }
    }

    fn bad(&mut self, index: u64, why: String) {
        self.first_bad = Some((index, why));
    }

    /// Verify every entry appended since the last call (up to the size the store reports
    /// now), and the checkpoints that cover them.
    pub fn catch_up(
        &mut self,
        store: &dyn Store,
        keys: &Keys,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(), LedgerError> {
        if self.first_bad.is_some() {
            return Ok(());
        }
        let size = store.ledger_size()?;
        let verifier = keys.ledger_signer().verifier_key();
        while self.frontier.size() < size && self.first_bad.is_none() {
            self.chunk(store, keys, &verifier)?;
            progress(self.frontier.size(), size);
        }
        if self.first_bad.is_none() {
            // Checkpoints are committed with the entries they cover, so one beyond the last
            // entry means entries were deleted from the end.
            let have = self.frontier.size();
            let beyond = store.ledger_checkpoints(have + 1, 1)?;
            // Entries and their checkpoint may have been committed after the size was read:
            // only a checkpoint beyond the ledger's size *now* means entries were deleted.
            if let Some(c) = beyond
                .first()
                .filter(|c| store.ledger_size().map_or(true, |now| c.size > now))
            {
                self.bad(
                    have,
                    format!(
                        "a signed checkpoint covers {} entries but only {have} exist: entries were deleted",
                        c.size
                    ),
                );
            }
        }
        Ok(())
    }

    fn chunk(
        &mut self,
        store: &dyn Store,
        keys: &Keys,
        verifier: &medvault_ledger::VerifierKey,
    ) -> Result<(), LedgerError> {
        let start = self.frontier.size();
        let chunk = store.ledger_entries(start, VERIFY_CHUNK)?;
        if chunk.is_empty() {
            self.bad(start, "entry is missing".into());
            return Ok(());
        }
        // The subtree hashes and checkpoints these entries complete, read in one range query
        // (a point query per node costs a lock round trip per entry).
        let end = start + chunk.len() as u64;
        let stored_nodes: HashMap<(u32, u64), [u8; 32]> = store
            .ledger_nodes_ending(start, end)?
            .into_iter()
            .map(|n| ((n.level, n.index), n.hash))
            .collect();
        let mut checkpoints = Vec::new();
        let mut from = start + 1;
        loop {
            let page = store.ledger_checkpoints(from, 1024)?;
            let Some(last) = page.last() else { break };
            from = last.size + 1;
            let done = last.size >= end;
            checkpoints.extend(page.into_iter().filter(|c| c.size <= end));
            if done {
                break;
            }
        }
        let mut pending = checkpoints.iter().peekable();
        for rec in &chunk {
            let expected = self.frontier.size();
            if rec.index != expected {
                self.bad(expected, "entry is missing (deleted)".into());
                return Ok(());
            }
            if open_entry(keys, rec).is_err() {
                self.bad(
                    expected,
                    "entry was modified, moved or inserted (it fails authentication at this index)"
                        .into(),
                );
                return Ok(());
            }
            let leaf = Hash::from_bytes(rec.leaf);
            let completed = self
                .frontier
                .push(leaf)
                .map_err(|_| LedgerError::MissingNode)?;
            for n in completed.filter(|n| n.level >= 1) {
                if stored_nodes.get(&(n.level, n.index)) != Some(n.hash.as_bytes()) {
                    let first = n.index << n.level;
                    self.bad(
                        first,
                        format!(
                            "the stored subtree hash over entries {first}..{} is missing or wrong",
                            first + (1u64 << n.level)
                        ),
                    );
                    return Ok(());
                }
            }
            while let Some(c) = pending.next_if(|c| c.size == self.frontier.size()) {
                self.checkpoints += 1;
                let ok = match open(&c.note, verifier) {
                    Err(_) => Err("its signature does not verify"),
                    Ok(cp) if cp.size() != c.size => {
                        Err("its row size differs from the signed size")
                    }
                    Ok(cp) if cp.root() != &self.frontier.root() => {
                        Err("the rebuilt tree differs from it")
                    }
                    Ok(_) => Ok(()),
                };
                if let Err(why) = ok {
                    let from = self.last_good_checkpoint;
                    self.bad(
                        from,
                        format!(
                            "checkpoint at size {}: {why}; entries from {from} on were rewritten",
                            c.size
                        ),
                    );
                    return Ok(());
                }
                self.last_good_checkpoint = c.size;
            }
        }
        Ok(())
    }
}
