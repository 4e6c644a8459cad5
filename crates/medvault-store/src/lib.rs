//! Storage for medvault: the `Store` trait every backend implements, its SQLite implementation
//! and the blob store for large envelopes.
//!
//! The store only ever sees ciphertext envelopes, keyed tokens and non-clinical metadata
//! (resource type, id, version, timestamps); it holds no keys and does no cryptography.

mod blob;
mod error;
mod maintenance;
pub mod posting;
mod sqlite;
mod types;

pub use blob::BlobStore;
pub use error::{StoreError, Unavailable};
pub use maintenance::{
    check_copy, compact, sibling, snapshot, Compacted, MaintenanceError, Snapshot,
};
pub use sqlite::{
    uuid_text, SqliteStore, DEFAULT_CACHE_MIB, PAGE_SIZE, POSTING_MERGE_EVERY, READERS,
    WRITER_CACHE_MIB,
};
pub use types::{
    AccountRecord, Body, CheckpointRecord, ClientRecord, DataKeyRecord, GrantRecord, HistoryPage,
    LedgerAppend, LedgerNode, LedgerRecord, NewVersion, RefreshTokenRecord,
    RegistrationTokenRecord, SearchPage, StoreQuery, Token, TokenState, VaultRecord, VersionRecord,
};

/// Result alias for store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

/// How [`Store::commit_streamed`] makes its transaction durable: it hands the runner one
/// job, the final durable step (SQLite's COMMIT), and the runner must run it, on a thread
/// of its choosing, before it returns (the job does its work once, however often it is
/// run). Meanwhile the caller's own thread is free for work of its own (the server frees
/// the transaction's parsed resources there, with the other core idle otherwise). A runner
/// that returns without running the job leaves the transaction uncommitted: it is rolled
/// back and the commit refused (`Abandoned`).
pub type Finish<'a> = &'a mut dyn FnMut(&mut (dyn FnMut() + Send));

/// The one storage interface. Implementations must make every successful `write` durable
/// before returning (the server acknowledges a write only after this returns `Ok`).
///
/// All methods are synchronous; the server calls them from blocking threads.
pub trait Store: Send + Sync {
    /// The vault configuration, or `None` if the data directory was never initialized.
    fn vault(&self) -> Result<Option<VaultRecord>>;
    /// Create the vault row, share commitments and bootstrap token hash.
    /// Fails with `AlreadyInitialized` if a vault exists.
    fn init_vault(&self, vault: &VaultRecord, bootstrap_token_hash: &[u8; 32]) -> Result<()>;
    /// Replace the vault row (new keyring and/or new share set) if its generation is still
    /// `expected_generation`; the new record must carry `expected_generation + 1`.
    fn replace_vault(&self, vault: &VaultRecord, expected_generation: i64) -> Result<()>;

    /// Look up a wrapped data key by owner token.
    fn data_key(&self, owner: &[u8]) -> Result<Option<DataKeyRecord>>;
    /// Insert a data key unless one exists for the owner; returns the stored record (which is
    /// the existing one if another writer won the race).
    fn insert_data_key(&self, key: &DataKeyRecord) -> Result<DataKeyRecord>;
    /// Up to `limit` data keys wrapped by a KEK version other than `version`.
    fn data_keys_not_at_version(&self, version: u32, limit: usize) -> Result<Vec<DataKeyRecord>>;
    /// Replace a data key's wrapping if it is still at `expected_version`; returns whether it did.
    fn rewrap_data_key(&self, key: &DataKeyRecord, expected_version: u32) -> Result<bool>;
    /// Counts of data keys per KEK version, ascending by version.
    fn data_key_versions(&self) -> Result<Vec<(u32, u64)>>;

    /// Atomically apply new versions (all or nothing). Each entry's precondition on the
    /// current version is checked inside the transaction; any mismatch is `Conflict`.
    fn write(&self, batch: &[NewVersion]) -> Result<()> {
        self.write_with_keys(&[], batch)
    }
    /// `write`, also inserting the new data keys the versions are encrypted under, in the
    /// same transaction. If another writer already stored a different key for one of the
    /// owners, nothing is written and the result is `Conflict`.
    fn write_with_keys(&self, keys: &[DataKeyRecord], batch: &[NewVersion]) -> Result<()> {
        self.commit(keys, batch, &LedgerAppend::default())
    }
    /// `write_with_keys`, also appending audit-ledger rows, all in one durable transaction:
    /// an action and its ledger entry are stored together or not at all. Ledger entries
    /// that do not continue the stored ledger exactly (index = current size, consecutive)
    /// or a checkpoint whose size is not the size after the append make it a `Conflict`.
    fn commit(
        &self,
        keys: &[DataKeyRecord],
        batch: &[NewVersion],
        ledger: &LedgerAppend,
    ) -> Result<()>;
    /// `commit`, with the versions handed over one at a time by `next` while the
    /// transaction is open, so a caller can still be preparing later versions while
    /// earlier ones are written. `None` ends the batch; an `Err` from `next` rolls
    /// everything back and is returned as the result. `finish` runs the final durable step
    /// (see [`Finish`]); the result is that step's.
    fn commit_streamed(
        &self,
        keys: &[DataKeyRecord],
        next: &mut dyn FnMut() -> Option<Result<NewVersion>>,
        ledger: &LedgerAppend,
        finish: Finish<'_>,
    ) -> Result<()>;
    /// The current version of a resource (including a deletion marker).
    fn current(&self, rtype: &str, id: &str) -> Result<Option<VersionRecord>>;
    /// One specific version.
    fn version(&self, rtype: &str, id: &str, version: i64) -> Result<Option<VersionRecord>>;
    /// History, newest first: of one resource if `id` is given, else of the whole type.
    fn history(
        &self,
        rtype: &str,
        id: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<HistoryPage>;
    /// One page of current, non-deleted resources matching the query, ordered by their last
    /// change (oldest first), with the total number of matches.
    fn search(&self, query: &StoreQuery, offset: usize, limit: usize) -> Result<SearchPage>;
    /// Every current, non-deleted resource matching the query, ordered by last change (for
    /// queries the caller must filter further after decryption).
    fn search_all(&self, query: &StoreQuery) -> Result<Vec<VersionRecord>>;

    /// Number of ledger entries (the index the next entry gets).
    fn ledger_size(&self) -> Result<u64>;
    /// Up to `limit` ledger entries from index `from`, in index order.
    fn ledger_entries(&self, from: u64, limit: usize) -> Result<Vec<LedgerRecord>>;
    /// The hash of the perfect subtree at (`level`, `index`); level 0 is an entry's leaf.
    fn ledger_node(&self, level: u32, index: u64) -> Result<Option<[u8; 32]>>;
    /// The stored subtree hashes (level >= 1) whose last leaf is in `from..to`: those that
    /// appending entries `from..to` completed, in the order they were completed.
    fn ledger_nodes_ending(&self, from: u64, to: u64) -> Result<Vec<LedgerNode>>;
    /// Up to `limit` stored checkpoints with size >= `from_size`, by size.
    fn ledger_checkpoints(&self, from_size: u64, limit: usize) -> Result<Vec<CheckpointRecord>>;
    /// The checkpoint with the greatest size, if any.
    fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>>;

    /// Insert an account. With `token`, the registration token of that hash must still be
    /// `open`; it is replaced by `token` (now `used`) in the same transaction. A taken id,
    /// login or national id, or a token no longer open, is `Conflict` and changes nothing.
    fn insert_account(
        &self,
        account: &AccountRecord,
        token: Option<&RegistrationTokenRecord>,
    ) -> Result<()>;
    /// Insert the first account with the one-time bootstrap token from `init`: only while no
    /// account exists and the unused bootstrap token's hash is `token_hash` (else `Conflict`).
    fn insert_first_account(&self, account: &AccountRecord, token_hash: &[u8; 32]) -> Result<()>;
    /// An account by id.
    fn account(&self, id: &str) -> Result<Option<AccountRecord>>;
    /// An account by login token.
    fn account_by_login(&self, login: &[u8; 16]) -> Result<Option<AccountRecord>>;
    /// Every account, by id.
    fn accounts(&self) -> Result<Vec<AccountRecord>>;
    /// The number of accounts.
    fn account_count(&self) -> Result<u64>;
    /// Replace an account if its stored generation is still `expected_generation`.
    fn update_account(&self, account: &AccountRecord, expected_generation: i64) -> Result<()>;
    /// Insert a registration token (`Conflict` if the hash exists).
    fn insert_registration_token(&self, token: &RegistrationTokenRecord) -> Result<()>;
    /// A registration token by hash.
    fn registration_token(&self, hash: &[u8; 32]) -> Result<Option<RegistrationTokenRecord>>;
    /// Replace a registration token if its stored state is still `expected_state`.
    fn update_registration_token(
        &self,
        token: &RegistrationTokenRecord,
        expected_state: TokenState,
    ) -> Result<()>;
    /// The stored OPAQUE setup envelope, if any.
    fn auth_setup(&self) -> Result<Option<Vec<u8>>>;
    /// Store the OPAQUE setup envelope unless one exists; returns the stored one.
    fn init_auth_setup(&self, envelope: &[u8]) -> Result<Vec<u8>>;

    /// Record a break-glass grant.
    fn insert_grant(&self, grant: &GrantRecord) -> Result<()>;
    /// The grants of `account` on the patient token `patient` that expire after `now_ms`.
    fn active_grants(
        &self,
        account: &str,
        patient: &[u8; 16],
        now_ms: i64,
    ) -> Result<Vec<GrantRecord>>;
    /// Insert a refresh token (`Conflict` if the hash exists).
    fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> Result<()>;
    /// A refresh token by hash.
    fn refresh_token(&self, hash: &[u8; 32]) -> Result<Option<RefreshTokenRecord>>;
    /// Mark the open token `used_hash` as used and insert its successor `next`, atomically;
    /// `Conflict` (and no change) if it is no longer open.
    fn rotate_refresh_token(&self, used_hash: &[u8; 32], next: &RefreshTokenRecord) -> Result<()>;
    /// Revoke every open token of a family; returns how many.
    fn revoke_refresh_family(&self, family: &[u8; 16]) -> Result<u64>;
    /// Revoke every open token of an account; returns how many.
    fn revoke_refresh_account(&self, account: &str) -> Result<u64>;

    /// Register a machine client (`Conflict` if the id or name is taken).
    fn insert_client(&self, client: &ClientRecord) -> Result<()>;
    /// A client by id.
    fn client(&self, id: &str) -> Result<Option<ClientRecord>>;
    /// Every client, by name.
    fn clients(&self) -> Result<Vec<ClientRecord>>;
    /// Replace a client if its stored generation is still `expected_generation`.
    fn update_client(&self, client: &ClientRecord, expected_generation: i64) -> Result<()>;
}
