//! The SQLite implementation of `Store`: WAL journal, `synchronous=FULL`, one writer
//! connection and a small pool of reader connections.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{
    params, params_from_iter, Connection, DropBehavior, OptionalExtension, Transaction,
    TransactionBehavior,
};

use rusqlite::vtab::array::Array;

use crate::posting::{self, LogBatch};
use crate::types::{
    AccountRecord, Body, CheckpointRecord, ClientRecord, DataKeyRecord, GrantRecord, HistoryPage,
    LedgerAppend, LedgerNode, LedgerRecord, NewVersion, RefreshTokenRecord,
    RegistrationTokenRecord, SearchPage, StoreQuery, TokenState, VaultRecord, VersionRecord,
};
use crate::{Finish, Result, Store, StoreError};

/// Migrations in order; the schema version is the number of migrations applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../sql/sqlite/0001_init.sql"),
    include_str!("../sql/sqlite/0002_search_posting.sql"),
    include_str!("../sql/sqlite/0003_ledger.sql"),
    include_str!("../sql/sqlite/0004_identity.sql"),
    include_str!("../sql/sqlite/0005_grants_sessions.sql"),
    include_str!("../sql/sqlite/0006_clients.sql"),
    include_str!("../sql/sqlite/0007_posting_log.sql"),
    include_str!("../sql/sqlite/0008_ledger_subtree.sql"),
    include_str!("../sql/sqlite/0009_type_posting.sql"),
    include_str!("../sql/sqlite/0010_compact_ids.sql"),
];
/// Reader connections beside the one writer.
pub const READERS: usize = 4;
/// The default SQLite page cache per connection, in MiB.
pub const DEFAULT_CACHE_MIB: u32 = 64;
/// The writer's page cache is at most this many MiB. SQLite scans its whole page cache at
/// the end of any write transaction in which a B-tree was rebalanced (the rebalance parks a
/// page under a temporary page number past the end of the file, and the commit drops every
/// cached page past the end): with 64 MiB cached that scan was 6% of a carebundle commit's
/// thread. `bench ingest` was 11% faster with 16 MiB (10 alternating rounds), and
/// `bench dataset` no slower up to a million resources, where the OS page cache holds the
/// rest of the indexes.
pub const WRITER_CACHE_MIB: u32 = 16;
const VERSION_COLUMNS: &str = "rtype, id, version, updated_ms, owner, body, blob_ref";

/// Rows (one per commit that wrote search tokens) the posting log holds before it is merged
/// into the blind index. More means fewer, cheaper merges; every search looks up its tokens
/// in each row.
pub const POSTING_MERGE_EVERY: usize = 32;

/// The posting log is also merged once its rows hold this many bytes (a few huge Bundles).
const POSTING_LOG_MAX_BYTES: i64 = 8 << 20;

/// A `Store` in one SQLite file.
pub struct SqliteStore {
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Decoded posting-log rows by batch, with the `rev` they were decoded at. Only
    /// committed rows are ever decoded (readers read them), so an entry is never stale
    /// for its (batch, rev).
    log_cache: Mutex<HashMap<i64, (i64, Arc<LogBatch>)>>,
    merge_every: AtomicUsize,
}

impl SqliteStore {
    /// Open (creating and migrating if needed) the database at `path`, with SQLite page
    /// caches of [`DEFAULT_CACHE_MIB`] per connection.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        SqliteStore::open_with_cache(path, DEFAULT_CACHE_MIB)
    }

    /// Open with a page cache of `cache_mib` MiB per reader connection ([`READERS`] of
    /// them) and at most [`WRITER_CACHE_MIB`] for the one writer. Smaller saves memory;
    /// larger keeps more of the indexes hot. Neither affects durability.
    pub fn open_with_cache(path: &Path, cache_mib: u32) -> Result<SqliteStore> {
        let writer = Connection::open(path)?;
        configure(&writer, cache_mib.min(WRITER_CACHE_MIB))?;
        migrate(&writer)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let conn = Connection::open(path)?;
            configure(&conn, cache_mib)?;
            readers.push(Mutex::new(conn));
        }
        Ok(SqliteStore {
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            log_cache: Mutex::new(HashMap::new()),
            merge_every: AtomicUsize::new(POSTING_MERGE_EVERY),
        })
    }

    /// Merge the posting log into the blind index once it holds `commits` rows (default
    /// [`POSTING_MERGE_EVERY`]; tests use small numbers to exercise both places).
    pub fn set_posting_merge_every(&self, commits: usize) {
        self.merge_every.store(commits.max(1), Ordering::Relaxed);
    }

    /// The posting log as far as `query` needs it (nothing without token clauses).
    fn log_for(&self, conn: &Connection, query: &StoreQuery) -> Result<LogView> {
        // Only a search by ids alone reads no postings.
        if query.all_of.is_empty() && !lists_whole_type(query) {
            return Ok(LogView {
                batches: Vec::new(),
            });
        }
        self.log_view(conn)
    }

    /// The posting-log rows visible in `conn`'s snapshot, decoded (from the cache when the
    /// row's (batch, rev) was seen before).
    fn log_view(&self, conn: &Connection) -> Result<LogView> {
        let mut list = conn.prepare_cached("SELECT batch, rev FROM posting_log ORDER BY batch")?;
        let rows = list
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let cached: Vec<Option<Arc<LogBatch>>> = {
            let mut cache = self.log_cache.lock().unwrap_or_else(|e| e.into_inner());
            // Rows below the oldest visible one have been merged away.
            match rows.first() {
                Some(&(oldest, _)) => cache.retain(|&batch, _| batch >= oldest),
                None => cache.clear(),
            }
            rows.iter()
                .map(|(batch, rev)| {
                    cache
                        .get(batch)
                        .filter(|(cached_rev, _)| cached_rev == rev)
                        .map(|(_, decoded)| decoded.clone())
                })
                .collect()
        };
        // Misses are read and decoded without holding the cache lock.
        let mut read = conn.prepare_cached("SELECT data FROM posting_log WHERE batch = ?")?;
        let mut batches = Vec::with_capacity(rows.len());
        let mut decoded_now = Vec::new();
        for (&(batch, rev), hit) in rows.iter().zip(cached) {
            match hit {
                Some(decoded) => batches.push(decoded),
                None => {
                    let data: Vec<u8> = read.query_row(params![batch], |r| r.get(0))?;
                    let decoded = Arc::new(posting::decode_batch(&data)?);
                    decoded_now.push((batch, rev, decoded.clone()));
                    batches.push(decoded);
                }
            }
        }
        if !decoded_now.is_empty() {
            let mut cache = self.log_cache.lock().unwrap_or_else(|e| e.into_inner());
            for (batch, rev, decoded) in decoded_now {
                cache.insert(batch, (rev, decoded));
            }
        }
        Ok(LogView { batches })
    }

    /// `Store::commit` with the versions from an iterator: a slice, or a writer still
    /// preparing later versions while earlier ones are written. An `Err` from the iterator
    /// rolls everything back and is returned.
    fn commit_from<V: std::borrow::Borrow<NewVersion>>(
        &self,
        keys: &[DataKeyRecord],
        versions: impl Iterator<Item = Result<V>>,
        ledger: &LedgerAppend,
        finish: Finish<'_>,
    ) -> Result<()> {
        let mut conn = self.writer();
        let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if !ledger.is_empty() {
            append_ledger(&tx, ledger)?;
        }
        {
            let mut add_key = tx.prepare_cached(
                "INSERT OR IGNORE INTO data_key (owner, kek_version, wrapped) VALUES (?, ?, ?)",
            )?;
            let mut get_key = tx.prepare_cached("SELECT wrapped FROM data_key WHERE owner = ?")?;
            for key in keys {
                add_key.execute(params![key.owner, key.kek_version, key.wrapped])?;
                let stored: Vec<u8> = get_key.query_row(params![key.owner], |r| r.get(0))?;
                if stored != key.wrapped {
                    return Err(StoreError::Conflict);
                }
            }
        }
        {
            let mut current = tx.prepare_cached(
                "SELECT seq, version, tokens FROM resource_version WHERE rtype = ? AND id = ? ORDER BY version DESC LIMIT 1",
            )?;
            let mut retire =
                tx.prepare_cached("UPDATE resource_version SET is_current = 0 WHERE seq = ?")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO resource_version (rtype, id, version, is_current, deleted, updated_ms, owner, body, blob_ref, tokens)
                 VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
            )?;
            let mut postings = PostingStatements {
                find: tx.prepare_cached(
                    "SELECT first_seq, rest FROM search_posting WHERE token = ? AND first_seq <= ? ORDER BY first_seq DESC LIMIT 1",
                )?,
                drop: tx
                    .prepare_cached("DELETE FROM search_posting WHERE token = ? AND first_seq = ?")?,
                put: tx.prepare_cached(
                    "INSERT INTO search_posting (token, first_seq, rest) VALUES (?, ?, ?)",
                )?,
                log_find: tx.prepare_cached(
                    "SELECT batch FROM posting_log WHERE batch <= ? ORDER BY batch DESC LIMIT 1",
                )?,
                log_read: tx.prepare_cached("SELECT data FROM posting_log WHERE batch = ?")?,
                log_rows: HashMap::new(),
                log_drop: tx.prepare_cached("DELETE FROM posting_log WHERE batch = ?")?,
                log_put: tx.prepare_cached(
                    "UPDATE posting_log SET rev = rev + 1, data = ? WHERE batch = ?",
                )?,
            };
            let mut new_tokens: Vec<(crate::Token, i64)> = Vec::new();
            // Each type's posting token, hashed once per commit (a Bundle has a few types).
            let mut type_tokens: HashMap<String, crate::Token> = HashMap::new();
            let mut type_token = |rtype: &str| -> crate::Token {
                if let Some(token) = type_tokens.get(rtype) {
                    return *token;
                }
                let token = posting::type_token(rtype);
                type_tokens.insert(rtype.to_owned(), token);
                token
            };
            for entry in versions {
                let entry = entry?;
                let entry: &NewVersion = entry.borrow();
                let r = &entry.record;
                let id = IdColumn::of(&r.id);
                // A create needs no lookup: version 1 of an existing resource violates the
                // UNIQUE (rtype, id, version) constraint, which is reported as Conflict.
                let found: Option<(i64, i64, Option<Vec<u8>>)> = match entry.expected_current {
                    None if r.version == 1 => None,
                    _ => current
                        .query_row(params![r.rtype, id], |row| {
                            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                        })
                        .optional()?,
                };
                if found.as_ref().map(|f| f.1) != entry.expected_current {
                    return Err(StoreError::Conflict);
                }
                if let Some((old_seq, _, old_tokens)) = found {
                    retire.execute(params![old_seq])?;
                    // A version written earlier in this same batch has its tokens still
                    // queued; they must not be posted for a version that is no longer current.
                    new_tokens.retain(|&(_, s)| s != old_seq);
                    // A version with a body (its token list is not NULL) is also posted
                    // under its type.
                    if let Some(mut old_tokens) = old_tokens {
                        old_tokens.extend_from_slice(&type_token(&r.rtype));
                        postings.retire(&old_tokens, old_seq)?;
                    }
                }
                let (body, blob_ref) = match &r.body {
                    Some(Body::Inline(b)) => (Some(b.as_slice()), None),
                    Some(Body::Blob(name)) => (None, Some(name.as_str())),
                    None => (None, None),
                };
                let tokens: Option<Vec<u8>> = r
                    .body
                    .is_some()
                    .then(|| entry.tokens.as_flattened().to_vec());
                let inserted = insert.execute(params![
                    r.rtype,
                    id,
                    r.version,
                    r.body.is_none(),
                    r.updated_ms,
                    r.owner,
                    body,
                    blob_ref,
                    tokens
                ]);
                match inserted {
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
                    {
                        return Err(StoreError::Conflict)
                    }
                    other => other?,
                };
                let seq = tx.last_insert_rowid();
                if r.body.is_some() {
                    new_tokens.extend(entry.tokens.iter().map(|t| (*t, seq)));
                    new_tokens.push((type_token(&r.rtype), seq));
                }
            }
            // One log row for the whole commit: a sequential append, where posting each
            // token to the blind index would dirty pages all over it.
            posting::sort_pairs(&mut new_tokens);
            postings.flush_log()?;
            if let Some(first) = new_tokens.iter().map(|&(_, seq)| seq).min() {
                tx.prepare_cached("INSERT INTO posting_log (batch, rev, data) VALUES (?, 0, ?)")?
                    .execute(params![first, posting::encode_pairs(&new_tokens)])?;
            }
            let (rows, bytes): (i64, i64) = tx
                .prepare_cached("SELECT count(*), coalesce(sum(length(data)), 0) FROM posting_log")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let every = i64::try_from(self.merge_every.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
            // Merged early if a few huge Bundles fill it: every search reads the whole log.
            if rows >= every || bytes >= POSTING_LOG_MAX_BYTES {
                merge_posting_log(&tx)?;
            }
        }
        // The transaction stays open past `tx`: the COMMIT is run by `finish`, maybe on
        // another thread, through the connection itself (a `Transaction` cannot be sent).
        tx.set_drop_behavior(DropBehavior::Ignore);
        drop(tx);
        let open = OpenTransaction(&mut conn);
        let mut outcome: Option<Result<()>> = None;
        {
            let conn: &mut Connection = &mut *open.0;
            // With synchronous=FULL the commit is on disk once the job has run.
            finish(&mut || {
                // Once only: a second COMMIT would fail, with no transaction left to end,
                // and hide the first one's success.
                if outcome.is_none() {
                    // A unique borrow (the connection is `Send`, not `Sync`).
                    let conn: &mut Connection = &mut *conn;
                    outcome = Some(conn.execute_batch("COMMIT").map_err(StoreError::from));
                }
            });
        }
        if !open.0.is_autocommit() {
            // Not run, or failed part way (SQLite leaves some failed COMMITs open): nothing
            // of it may stay half done on the writer. A failed COMMIT's own error is the
            // one to report (it says why, e.g. a full disk), not the rollback's.
            let rolled_back = open.0.execute_batch("ROLLBACK");
            if let Some(Err(e)) = outcome {
                return Err(e);
            }
            rolled_back?;
        }
        outcome.unwrap_or(Err(StoreError::Abandoned))
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        // A poisoned lock only means another thread panicked mid-call; SQLite rolled back
        // its open transaction, so the connection is still consistent.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.readers.len() {
            if let Ok(guard) = self.readers[(start + i) % self.readers.len()].try_lock() {
                return guard;
            }
        }
        self.readers[start % self.readers.len()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// The writer while a commit's transaction is open outside a `Transaction` (its COMMIT runs
/// through [`Finish`]): rolled back if it is dropped still open, also when the runner
/// panics, so the writer is never left inside a transaction.
struct OpenTransaction<'a>(&'a mut Connection);

impl Drop for OpenTransaction<'_> {
    fn drop(&mut self) {
        if !self.0.is_autocommit() {
            // Nothing to report it to here; a later write finds the writer usable either way
            // or fails with SQLite's own error.
            let _ = self.0.execute_batch("ROLLBACK");
        }
    }
}

/// Prepared statements kept per connection: at least the number of `prepare_cached` call
/// sites in this file (a test checks), so no statement evicts another. Cached SQL must be
/// fixed text (`format!` only with constants), or the call sites no longer bound the
/// distinct statements. (A statement asked for while its cached copy is in use, as the
/// merge's posting insert is, is still prepared anew.)
const STATEMENT_CACHE: usize = 64;

/// The page size of a new database, in bytes (SQLite's default is 4096). A version's row
/// (sealed body and its tokens) is 1-2 KiB and a commit's posting-log row 100 KiB or more,
/// so 4 KiB pages split often and a commit wrote many small WAL frames: with 8 KiB pages
/// `bench ingest` ran 5-10% faster (measured while the checkpoint threshold still counted
/// pages, so with twice the WAL; a point or two of it may be that), with reads by id at 1M
/// resources about as fast (p50) and searches no slower. 16 KiB ingested no faster than 8
/// and made those reads and searches about 45% slower (each lookup reads whole pages).
/// BENCHMARKS.md has the figures, and shows that the plain-SQLite baseline gains as much
/// from larger pages. SQLite applies it only while the file is empty: an existing
/// database keeps the page size it was created with.
pub const PAGE_SIZE: u32 = 8 * 1024;

/// How much the WAL may hold before a commit checkpoints it into the database (SQLite's
/// default is 1000 pages, 4 MiB at 4 KiB pages).
const WAL_CHECKPOINT_BYTES: i64 = 10_000 * 4096;

fn configure(conn: &Connection, cache_mib: u32) -> Result<()> {
    // Before WAL mode: a database in WAL mode can no longer change its page size.
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    // WAL lets readers run beside the writer; synchronous=FULL makes every commit durable
    // before it returns, which is what lets the server acknowledge a write.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // A large page cache keeps index pages hot during ingest (64 MiB by default; a negative
    // cache_size is in KiB); a larger WAL checkpoints less often. Neither affects durability.
    conn.pragma_update(None, "cache_size", -(i64::from(cache_mib.max(1)) * 1024))?;
    // The threshold is in pages: the same bytes whatever page size the file has.
    let page: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        WAL_CHECKPOINT_BYTES / page.max(512),
    )?;
    // Every statement of a commit stays prepared: with rusqlite's default of 16 a commit's
    // ~20 statements evicted each other, and re-preparing them was 6% of a 45-entry
    // transaction's calling thread.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // `rarray`, the table function that passes search candidates as one parameter.
    rusqlite::vtab::array::load_module(conn)?;
    Ok(())
}

fn migrate(conn: &Connection) -> Result<()> {
    // IMMEDIATE takes the write lock before reading the schema version, so two processes
    // opening a new file at once cannot both apply the same migration.
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let supported = MIGRATIONS.len() as i64;
    if current > supported {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    let current = usize::try_from(current).map_err(|_| StoreError::Corrupt("schema version"))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        tx.execute_batch(sql)?;
        // Steps SQL cannot express, right after their migration's SQL.
        if i + 1 == TYPE_POSTING_MIGRATION {
            post_type_postings(&tx)?;
        }
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}

/// The migration (0009) after which `post_type_postings` runs.
const TYPE_POSTING_MIGRATION: usize = 9;

/// Postings longer than this are split (a retired version rewrites its whole posting).
const TYPE_POSTING_CHUNK: usize = 1024;

/// Migration 0009: post every current, non-deleted version under its type's token. The log
/// is merged first, so the new postings keep the rule that logged `seq`s are newer than
/// everything in the blind index.
fn post_type_postings(tx: &Transaction<'_>) -> Result<()> {
    merge_posting_log(tx)?;
    let types: Vec<String> = tx
        .prepare("SELECT DISTINCT rtype FROM resource_version")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut seqs_of = tx.prepare(
        "SELECT seq FROM resource_version WHERE rtype = ? AND is_current = 1 AND deleted = 0 ORDER BY seq",
    )?;
    let mut put =
        tx.prepare("INSERT INTO search_posting (token, first_seq, rest) VALUES (?, ?, ?)")?;
    for rtype in types {
        let token = posting::type_token(&rtype);
        let seqs: Vec<i64> = seqs_of
            .query_map(params![rtype], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for chunk in seqs.chunks(TYPE_POSTING_CHUNK) {
            if let Some((first, rest)) = posting::encode(chunk) {
                put.execute(params![token.as_slice(), first, rest])?;
            }
        }
    }
    Ok(())
}

fn array<const N: usize>(v: Vec<u8>, what: &'static str) -> Result<[u8; N]> {
    v.try_into().map_err(|_| StoreError::Corrupt(what))
}

/// A resource id as `resource_version.id` holds it (migration 0010): an id of the form the
/// server draws, a UUID in lowercase hex (`8-4-4-4-12` digits), as its 16 bytes; any other
/// id as its text. Only that exact form is compacted, so decoding gives back the same
/// string; SQLite never finds a BLOB equal to a TEXT value, so the forms cannot collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdColumn<'a> {
    Uuid([u8; 16]),
    Text(&'a str),
}

impl<'a> IdColumn<'a> {
    fn of(id: &'a str) -> IdColumn<'a> {
        match uuid_bytes(id) {
            Some(bytes) => IdColumn::Uuid(bytes),
            None => IdColumn::Text(id),
        }
    }

    /// The column value, owned (for parameter lists built at run time).
    fn value(self) -> rusqlite::types::Value {
        match self {
            IdColumn::Uuid(b) => rusqlite::types::Value::Blob(b.to_vec()),
            IdColumn::Text(t) => rusqlite::types::Value::Text(t.to_owned()),
        }
    }
}

impl rusqlite::ToSql for IdColumn<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            IdColumn::Uuid(b) => ValueRef::Blob(b),
            IdColumn::Text(t) => ValueRef::Text(t.as_bytes()),
        }))
    }
}

/// The 16 bytes of `id` if it is a UUID in lowercase hex with its four dashes.
fn uuid_bytes(id: &str) -> Option<[u8; 16]> {
    let text: &[u8; 36] = id.as_bytes().try_into().ok()?;
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 16];
    let mut at = 0;
    for (i, byte) in out.iter_mut().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            if text[at] != b'-' {
                return None;
            }
            at += 1;
        }
        *byte = digit(text[at])? << 4 | digit(text[at + 1])?;
        at += 2;
    }
    Some(out)
}

/// 16 bytes written as a UUID in lowercase hex (`8-4-4-4-12`): the form of the ids the
/// server draws, which the store keeps as those 16 bytes.
pub fn uuid_text(bytes: &[u8; 16]) -> String {
    // Digit by digit: a transaction draws one id per created resource, and `format!` over
    // five slices of a hex string was 1.4% of a transaction's thread.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            id.push('-');
        }
        id.push(char::from(DIGITS[usize::from(byte >> 4)]));
        id.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    id
}

/// The id a `resource_version.id` value stands for (see [`IdColumn`]).
fn id_from_column(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<String> {
    use rusqlite::types::{FromSqlError, ValueRef};
    match value {
        ValueRef::Text(t) => {
            String::from_utf8(t.to_vec()).map_err(|e| FromSqlError::Other(e.into()))
        }
        ValueRef::Blob(b) => {
            let bytes: &[u8; 16] = b.try_into().map_err(|_| FromSqlError::InvalidBlobSize {
                expected_size: 16,
                blob_size: b.len(),
            })?;
            Ok(uuid_text(bytes))
        }
        _ => Err(FromSqlError::InvalidType),
    }
}

fn version_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRecord> {
    let body: Option<Vec<u8>> = row.get(5)?;
    let blob_ref: Option<String> = row.get(6)?;
    let id = row.get_ref(1)?;
    let id = id_from_column(id)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, id.data_type(), Box::new(e)))?;
    Ok(VersionRecord {
        rtype: row.get(0)?,
        id,
        version: row.get(2)?,
        updated_ms: row.get(3)?,
        owner: row.get(4)?,
        body: match (body, blob_ref) {
            (Some(b), _) => Some(Body::Inline(b)),
            (None, Some(r)) => Some(Body::Blob(r)),
            (None, None) => None,
        },
    })
}

fn to_i64(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| StoreError::Corrupt("ledger index out of range"))
}

fn checkpoint_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<CheckpointRecord>> {
    let size: i64 = r.get(0)?;
    let note: String = r.get(1)?;
    Ok(u64::try_from(size)
        .map(|size| CheckpointRecord { size, note })
        .map_err(|_| StoreError::Corrupt("checkpoint size")))
}

fn ledger_size_in(conn: &Connection) -> Result<u64> {
    // Entries are dense from 0, so the size is the greatest index + 1.
    let size: i64 = conn
        .prepare_cached("SELECT coalesce(max(idx) + 1, 0) FROM ledger_entry")?
        .query_row([], |r| r.get(0))?;
    u64::try_from(size).map_err(|_| StoreError::Corrupt("ledger size"))
}

/// Append ledger rows inside the caller's write transaction, checking that they continue
/// the stored ledger exactly.
fn ledger_conflict(e: StoreError) -> StoreError {
    match e {
        StoreError::Conflict => StoreError::LedgerConflict,
        e => e,
    }
}

fn append_ledger(tx: &Transaction<'_>, ledger: &LedgerAppend) -> Result<()> {
    let mut next = ledger_size_in(tx)?;
    let mut add_entry =
        tx.prepare_cached("INSERT INTO ledger_entry (idx, leaf, envelope) VALUES (?, ?, ?)")?;
    for e in &ledger.entries {
        if e.index != next {
            return Err(StoreError::LedgerConflict);
        }
        unique_is_conflict(add_entry.execute(params![
            to_i64(e.index)?,
            e.leaf.as_slice(),
            e.envelope
        ]))
        .map_err(ledger_conflict)?;
        next += 1;
    }
    let mut add_node = tx.prepare_cached("INSERT INTO ledger_subtree (pos, hash) VALUES (?, ?)")?;
    for n in &ledger.nodes {
        // A node may only cover leaves that exist; level 0 lives in ledger_entry.
        let pos = subtree_pos(n.level, n.index).filter(|&(last, _)| last < next);
        let Some((_, pos)) = pos else {
            return Err(StoreError::LedgerConflict);
        };
        // A stored hash already there was left by entries deleted from the end.
        unique_is_conflict(add_node.execute(params![pos, n.hash.as_slice()]))
            .map_err(ledger_conflict)?;
    }
    if let Some(c) = &ledger.checkpoint {
        if c.size != next {
            return Err(StoreError::LedgerConflict);
        }
        unique_is_conflict(
            tx.prepare_cached("INSERT INTO ledger_checkpoint (size, note) VALUES (?, ?)")?
                .execute(params![to_i64(c.size)?, c.note]),
        )
        .map_err(ledger_conflict)?;
    }
    Ok(())
}

/// Where the subtree hash at (`level` >= 1, `index`) is stored: its last leaf and its
/// `ledger_subtree.pos` (last leaf * 64 + level). None for a subtree that no ledger smaller
/// than 2^56 entries can have.
fn subtree_pos(level: u32, index: u64) -> Option<(u64, i64)> {
    if !(1..=56).contains(&level) || index >= 1 << (56 - level) {
        return None;
    }
    let last = ((index + 1) << level) - 1;
    Some((last, i64::try_from((last << 6) | u64::from(level)).ok()?))
}

/// The inverse of [`subtree_pos`]: the (level, index) of the subtree stored at `pos` (the
/// low six bits are the level, the rest the last leaf covered). None for a position no
/// subtree has.
fn subtree_at(pos: i64) -> Option<(u32, u64)> {
    let pos = u64::try_from(pos).ok()?;
    let level = (pos & 63) as u32;
    let last = pos >> 6;
    (level >= 1).then(|| (level, ((last + 1) >> level).saturating_sub(1)))
}

const ACCOUNT_COLUMNS: &str =
    "id, login, national_id, role, link, disabled, generation, password_file, key_bundle, mac";

fn account_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<AccountRecord>> {
    let login: Vec<u8> = r.get(1)?;
    let national: Vec<u8> = r.get(2)?;
    let mac: Vec<u8> = r.get(9)?;
    let (id, role, link, disabled, generation, password_file, key_bundle) = (
        r.get(0)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    );
    Ok((|| {
        Ok(AccountRecord {
            id,
            login: array(login, "account login")?,
            national_id: array(national, "account national id")?,
            role,
            link,
            disabled,
            generation,
            password_file,
            key_bundle,
            mac: array(mac, "account mac")?,
        })
    })())
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<RegistrationTokenRecord>> {
    let hash: Vec<u8> = r.get(0)?;
    let mac: Vec<u8> = r.get(6)?;
    let state: String = r.get(5)?;
    let (role, link, issued_by, expires_ms, account) =
        (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(7)?);
    Ok((|| {
        Ok(RegistrationTokenRecord {
            hash: array(hash, "token hash")?,
            role,
            link,
            issued_by,
            expires_ms,
            state: token_state(&state, "token state")?,
            account,
            mac: array(mac, "token mac")?,
        })
    })())
}

/// A stored token state; any other text is a damaged row.
fn token_state(s: &str, what: &'static str) -> Result<TokenState> {
    TokenState::parse(s).ok_or(StoreError::Corrupt(what))
}

/// Map a UNIQUE/PRIMARY KEY violation to `Conflict`.
fn unique_is_conflict(r: rusqlite::Result<usize>) -> Result<usize> {
    match r {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            Err(StoreError::Conflict)
        }
        other => Ok(other?),
    }
}

fn insert_account_in(tx: &Transaction<'_>, a: &AccountRecord) -> Result<()> {
    unique_is_conflict(tx.execute(
        &format!("INSERT INTO account ({ACCOUNT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
        params![
            a.id,
            a.login.as_slice(),
            a.national_id.as_slice(),
            a.role,
            a.link,
            a.disabled,
            a.generation,
            a.password_file,
            a.key_bundle,
            a.mac.as_slice()
        ],
    ))?;
    Ok(())
}

fn insert_refresh_in(conn: &rusqlite::Connection, t: &RefreshTokenRecord) -> Result<()> {
    unique_is_conflict(conn.execute(
        "INSERT INTO refresh_token (hash, family, account, jkt, issued_ms, expires_ms, state, mac)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            t.hash.as_slice(),
            t.family.as_slice(),
            t.account,
            t.jkt,
            t.issued_ms,
            t.expires_ms,
            t.state.as_str(),
            t.mac.as_slice()
        ],
    ))?;
    Ok(())
}

const CLIENT_COLUMNS: &str = "id, name, role, link, jwk, bearer, disabled, generation, mac";

fn client_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<ClientRecord>> {
    let mac: Vec<u8> = r.get(8)?;
    let (id, name, role, link, jwk, bearer, disabled, generation) = (
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    );
    Ok((|| -> Result<ClientRecord> {
        Ok(ClientRecord {
            id,
            name,
            role,
            link,
            jwk,
            bearer,
            disabled,
            generation,
            mac: array(mac, "client mac")?,
        })
    })())
}

/// The statements that maintain posting lists inside one write transaction.
struct PostingStatements<'c> {
    find: rusqlite::CachedStatement<'c>,
    drop: rusqlite::CachedStatement<'c>,
    put: rusqlite::CachedStatement<'c>,
    log_find: rusqlite::CachedStatement<'c>,
    log_read: rusqlite::CachedStatement<'c>,
    log_drop: rusqlite::CachedStatement<'c>,
    log_put: rusqlite::CachedStatement<'c>,
    /// Log rows this commit changed, decoded, with whether anything was taken out.
    log_rows: HashMap<i64, (LogBatch, bool)>,
}

/// Move every posting-log row into the blind index: one posting per token for all the
/// logged commits together, inserted in token order, so the index's pages are dirtied once
/// per merge instead of once per commit. The merged postings cover `seq` ranges newer than
/// any already in the index, which keeps each token's postings disjoint.
///
/// A log that holds a (token, seq) pair twice is refused as corrupt (rows cover disjoint
/// `seq` ranges, so only a damaged or planted row can): the commit that wanted the merge
/// fails, and so does every later one that does, until the log is repaired. Writing the
/// pair twice would have left a posting no reader accepts.
fn merge_posting_log(tx: &Transaction<'_>) -> Result<()> {
    // (first 8 bytes, last 8 bytes) of the token as big-endian integers, then the seq: the
    // tokens' byte order, with cheap compares, in 24 bytes a pair.
    let mut keyed: Vec<(u64, u64, i64)> = Vec::new();
    {
        let bytes: i64 = tx
            .prepare_cached("SELECT coalesce(sum(length(data)), 0) FROM posting_log")?
            .query_row([], |r| r.get(0))?;
        // A pair takes about five bytes of a row (its delta, and its share of the token).
        keyed.reserve(usize::try_from(bytes / 5).unwrap_or(0));
        let mut rows = tx.prepare_cached("SELECT data FROM posting_log ORDER BY batch")?;
        let mut rows = rows.query([])?;
        while let Some(row) = rows.next()? {
            let data = row
                .get_ref(0)?
                .as_blob()
                .map_err(|_| StoreError::Corrupt("posting log"))?;
            posting::for_each_logged(data, |token, seqs| {
                let (hi, lo) = token_halves(token);
                keyed.extend(seqs.iter().map(|&seq| (hi, lo, seq)));
            })?;
        }
    }
    // Sorted by token, then seq: each token's run is its new posting. Each row's pairs are
    // already sorted, and the stable sort merges such runs instead of sorting from scratch.
    keyed.sort();
    if keyed.windows(2).any(|w| w[0] == w[1]) {
        return Err(StoreError::Corrupt("posting log"));
    }
    let mut put =
        tx.prepare_cached("INSERT INTO search_posting (token, first_seq, rest) VALUES (?, ?, ?)")?;
    let mut seqs = Vec::new();
    for run in keyed.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        seqs.clear();
        seqs.extend(run.iter().map(|&(_, _, s)| s));
        if let Some((first, rest)) = posting::encode(&seqs) {
            let mut token = [0u8; 16];
            token[..8].copy_from_slice(&run[0].0.to_be_bytes());
            token[8..].copy_from_slice(&run[0].1.to_be_bytes());
            put.execute(params![token.as_slice(), first, rest])?;
        }
    }
    tx.execute("DELETE FROM posting_log", [])?;
    Ok(())
}

/// A token as two big-endian integers, which order as its bytes do.
fn token_halves(token: &crate::Token) -> (u64, u64) {
    let (hi, lo) = token.split_at(8);
    let half = |b: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_be_bytes(a)
    };
    (half(hi), half(lo))
}

impl PostingStatements<'_> {
    /// Take a retired version's `seq` out of the postings of its `tokens` (16 bytes each):
    /// out of its posting-log row if it is that new, else out of the blind index.
    /// Log rows are changed in memory and written once per commit by [`Self::flush_log`].
    fn retire(&mut self, tokens: &[u8], seq: i64) -> Result<()> {
        if tokens.is_empty() {
            return Ok(());
        }
        // Every logged row is newer than everything in the blind index, so a log row at or
        // below `seq` means `seq` was logged, in that row (rows cover disjoint ranges).
        let batch: Option<i64> = self
            .log_find
            .query_row(params![seq], |r| r.get(0))
            .optional()?;
        let Some(batch) = batch else {
            for token in tokens.chunks(16) {
                self.remove(token, seq)?;
            }
            return Ok(());
        };
        if !self.log_rows.contains_key(&batch) {
            let data: Vec<u8> = self.log_read.query_row(params![batch], |r| r.get(0))?;
            self.log_rows
                .insert(batch, (posting::decode_batch(&data)?, false));
        }
        let Some((decoded, changed)) = self.log_rows.get_mut(&batch) else {
            return Ok(());
        };
        for token in tokens.chunks(16) {
            let Ok(token) = <crate::Token>::try_from(token) else {
                return Err(StoreError::Corrupt("token list"));
            };
            if let Some(seqs) = decoded.get_mut(&token) {
                let before = seqs.len();
                seqs.retain(|&s| s != seq);
                *changed |= seqs.len() != before;
                if seqs.is_empty() {
                    decoded.remove(&token);
                }
            }
        }
        Ok(())
    }

    /// Write back the log rows [`Self::retire`] changed, each once (a new `rev` makes
    /// readers decode it again).
    fn flush_log(&mut self) -> Result<()> {
        for (batch, (decoded, changed)) in std::mem::take(&mut self.log_rows) {
            if !changed {
                continue;
            }
            if decoded.is_empty() {
                self.log_drop.execute(params![batch])?;
            } else {
                self.log_put
                    .execute(params![posting::encode_batch(&decoded), batch])?;
            }
        }
        Ok(())
    }

    /// Remove `seq` from the posting of `token` that covers it (postings of one token cover
    /// disjoint ranges, so that is the one with the greatest `first_seq <= seq`).
    fn remove(&mut self, token: &[u8], seq: i64) -> Result<()> {
        let found: Option<(i64, Vec<u8>)> = self
            .find
            .query_row(params![token, seq], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((first, rest)) = found else {
            return Ok(());
        };
        let mut seqs = posting::decode(first, &rest)?;
        let Ok(at) = seqs.binary_search(&seq) else {
            return Ok(());
        };
        seqs.remove(at);
        self.drop.execute(params![token, first])?;
        if let Some((first, rest)) = posting::encode(&seqs) {
            self.put.execute(params![token, first, rest])?;
        }
        Ok(())
    }
}

/// The posting-log rows of one snapshot, oldest first.
struct LogView {
    batches: Vec<Arc<LogBatch>>,
}

impl LogView {
    /// Every logged `seq` carrying `token`, sorted (rows cover increasing `seq` ranges).
    fn seqs(&self, token: &crate::Token) -> Vec<i64> {
        let mut out = Vec::new();
        for batch in &self.batches {
            if let Some(seqs) = batch.get(token) {
                out.extend_from_slice(seqs);
            }
        }
        out
    }

    /// How many rows hold `token` (each counts like one posting of the blind index).
    fn rows_with(&self, token: &crate::Token) -> i64 {
        self.batches
            .iter()
            .filter(|b| b.contains_key(token))
            .count() as i64
    }

    /// How many logged `seq`s carry `token`.
    fn seq_count(&self, token: &crate::Token) -> i64 {
        self.batches
            .iter()
            .filter_map(|b| b.get(token))
            .map(|seqs| seqs.len() as i64)
            .sum()
    }
}

/// How many postings a probe may cost before decoding a clause's whole posting list is
/// cheaper: a probe is one B-tree descent, a full decode reads postings in key order.
const PROBE_COST: i64 = 8;

/// Whether `query` lists its whole type: no token clause and no ids, so the type's own
/// posting token is its one clause (read from the blind index and the posting log).
fn lists_whole_type(query: &StoreQuery) -> bool {
    query.all_of.is_empty() && query.ids.is_none()
}

/// Candidate rows for the token clauses (AND over clauses, OR within one), or `None` when
/// the query has ids but no token clause. A query with neither lists its whole type: the
/// clause is then the type's own posting token ([`posting::type_token`]). Postings live in
/// the blind index (`search_posting`) and, for the newest commits, in the posting log
/// (`log`); a clause's rows are the union of both.
///
/// Clauses are taken in order of size (the rows their postings name, estimated). The first
/// is decoded whole; a later one is decoded whole and intersected only while the candidates
/// are many. Once they are few, each candidate is checked by probing the one posting per
/// token whose range can hold it (postings of one token cover disjoint `seq` ranges). For
/// `Observation?patient=&code=` at a million rows that reads about ten postings instead of
/// the code's thousands. Run inside the caller's read transaction (one snapshot).
fn token_candidates(
    conn: &Connection,
    query: &StoreQuery,
    log: &LogView,
) -> Result<Option<Vec<i64>>> {
    // Postings, and the rows they name estimated from their size (a posting holds its first
    // `seq` and at least one byte per further `seq`; SQLite knows a blob's length without
    // reading it).
    let mut count = conn.prepare_cached(
        "SELECT count(*), coalesce(sum(length(rest)), 0) FROM search_posting WHERE token = ?",
    )?;
    let whole_type;
    let all_of = if lists_whole_type(query) {
        whole_type = [vec![posting::type_token(&query.rtype)]];
        &whole_type[..]
    } else {
        &query.all_of[..]
    };
    let mut clauses = Vec::with_capacity(all_of.len());
    for any in all_of {
        let (mut postings, mut rows) = (0i64, 0i64);
        for token in any {
            let (n, bytes): (i64, i64) =
                count.query_row(params![token.as_slice()], |r| Ok((r.get(0)?, r.get(1)?)))?;
            postings += n + log.rows_with(token);
            rows += n + bytes + log.seq_count(token);
        }
        clauses.push((rows, postings, any));
    }
    clauses.sort_by_key(|&(rows, _, _)| rows);
    let mut result: Option<Vec<i64>> = None;
    for (_, postings, any) in clauses {
        let next = match result {
            None => decode_clause(conn, any, log)?,
            Some(prev)
                if (prev.len() as i64)
                    .saturating_mul(any.len() as i64)
                    .saturating_mul(PROBE_COST)
                    < postings =>
            {
                probe_clause(conn, any, log, &prev)?
            }
            Some(prev) => posting::intersect(&prev, &decode_clause(conn, any, log)?),
        };
        let empty = next.is_empty();
        result = Some(next);
        if empty {
            break;
        }
    }
    Ok(result)
}

/// Every `seq` carrying any of `any`'s tokens, sorted and deduplicated.
fn decode_clause(conn: &Connection, any: &[crate::Token], log: &LogView) -> Result<Vec<i64>> {
    let mut stmt =
        conn.prepare_cached("SELECT first_seq, rest FROM search_posting WHERE token = ?")?;
    let mut union = Vec::new();
    for token in any {
        let mut rows = stmt.query(params![token.as_slice()])?;
        while let Some(row) = rows.next()? {
            let rest = row
                .get_ref(1)?
                .as_blob()
                .map_err(|_| StoreError::Corrupt("search posting"))?;
            posting::decode_into(row.get(0)?, rest, &mut union)?;
        }
        union.extend(log.seqs(token));
    }
    union.sort_unstable();
    union.dedup();
    Ok(union)
}

/// The `candidates` (sorted) that carry any of `any`'s tokens, found by reading only the
/// posting whose range could hold each candidate.
fn probe_clause(
    conn: &Connection,
    any: &[crate::Token],
    log: &LogView,
    candidates: &[i64],
) -> Result<Vec<i64>> {
    let mut find = conn.prepare_cached(
        "SELECT first_seq, rest FROM search_posting WHERE token = ? AND first_seq <= ? ORDER BY first_seq DESC LIMIT 1",
    )?;
    let mut keep = vec![false; candidates.len()];
    let mut posting = Vec::new();
    for token in any {
        let logged = log.seqs(token);
        // The posting last read and the range it covers; sorted candidates often share one.
        let mut loaded: Option<(i64, i64)> = None;
        for (i, &seq) in candidates.iter().enumerate() {
            if keep[i] {
                continue;
            }
            if logged.binary_search(&seq).is_ok() {
                keep[i] = true;
                continue;
            }
            if !loaded.is_some_and(|(first, last)| first <= seq && seq <= last) {
                posting.clear();
                loaded = None;
                let row = find
                    .query_row(params![token.as_slice(), seq], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
                    })
                    .optional()?;
                let Some((first, rest)) = row else {
                    continue;
                };
                posting::decode_into(first, &rest, &mut posting)?;
                loaded = Some((first, posting.last().copied().unwrap_or(first)));
            }
            keep[i] = posting.binary_search(&seq).is_ok();
        }
    }
    Ok(candidates
        .iter()
        .zip(keep)
        .filter_map(|(&seq, k)| k.then_some(seq))
        .collect())
}

/// The rows of `seqs`, each checked to be a current, non-deleted version of `rtype` (a row
/// that is not means the type posting is damaged).
fn current_rows(conn: &Connection, rtype: &str, seqs: &[i64]) -> Result<Vec<VersionRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {VERSION_COLUMNS} FROM resource_version WHERE seq = ? AND is_current = 1 AND deleted = 0"
    ))?;
    let mut records = Vec::with_capacity(seqs.len());
    for &seq in seqs {
        let record = stmt
            .query_row(params![seq], version_row)
            .optional()?
            .filter(|r| r.rtype == rtype)
            .ok_or(StoreError::Corrupt("type posting"))?;
        records.push(record);
    }
    Ok(records)
}

/// SQL text and parameters for the WHERE clause of a search, given the token candidates.
fn search_filter(
    query: &StoreQuery,
    candidates: Option<Vec<i64>>,
) -> (String, Vec<Box<dyn rusqlite::ToSql>>) {
    use rusqlite::types::Value;
    // With candidates the rows are found by `seq`: the unary `+` keeps SQLite from scanning
    // the type's range of the (rtype, id, version) index instead and testing every row
    // against the candidates (it cannot tell how many the array holds).
    let rtype = if candidates.is_some() {
        "+r.rtype"
    } else {
        "r.rtype"
    };
    let mut sql = format!("{rtype} = ? AND r.is_current = 1 AND r.deleted = 0");
    let mut args: Vec<Box<dyn rusqlite::ToSql>> = vec![Box::new(query.rtype.clone())];
    if let Some(ids) = &query.ids {
        sql.push_str(" AND r.id IN (");
        sql.push_str(&vec!["?"; ids.len().max(1)].join(","));
        sql.push(')');
        if ids.is_empty() {
            args.push(Box::new(Value::Null));
        }
        args.extend(
            ids.iter()
                .map(|i| Box::new(IdColumn::of(i).value()) as Box<dyn rusqlite::ToSql>),
        );
    }
    if let Some(from) = query.updated_from_ms {
        sql.push_str(" AND r.updated_ms >= ?");
        args.push(Box::new(from));
    }
    if let Some(until) = query.updated_until_ms {
        sql.push_str(" AND r.updated_ms < ?");
        args.push(Box::new(until));
    }
    if let Some(seqs) = candidates {
        // The candidates travel as one array parameter (the `rarray` table function), so a
        // large result does not turn into a huge SQL text.
        sql.push_str(" AND r.seq IN rarray(?)");
        let array: Array = std::rc::Rc::new(seqs.into_iter().map(Value::Integer).collect());
        args.push(Box::new(array));
    }
    (sql, args)
}

impl Store for SqliteStore {
    fn vault(&self) -> Result<Option<VaultRecord>> {
        let guard = self.reader();
        // One read transaction = one WAL snapshot: row and commitments of the same generation.
        let conn = guard.unchecked_transaction()?;
        let row = conn
            .query_row(
                "SELECT set_id, threshold, share_count, check_value, keyring, generation FROM vault WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, Vec<u8>>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, Vec<u8>>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((set_id, threshold, share_count, check_value, keyring, generation)) = row else {
            return Ok(None);
        };
        let mut stmt = conn.prepare("SELECT x, commitment FROM share_commitment ORDER BY x")?;
        let mut commitments = Vec::new();
        for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))? {
            let (x, c) = row?;
            let x = u8::try_from(x).map_err(|_| StoreError::Corrupt("share x"))?;
            commitments.push((x, array(c, "share commitment")?));
        }
        Ok(Some(VaultRecord {
            set_id: array(set_id, "set id")?,
            threshold: u8::try_from(threshold).map_err(|_| StoreError::Corrupt("threshold"))?,
            share_count: u8::try_from(share_count)
                .map_err(|_| StoreError::Corrupt("share count"))?,
            check_value: array(check_value, "check value")?,
            keyring,
            commitments,
            generation,
        }))
    }

    fn init_vault(&self, vault: &VaultRecord, bootstrap_token_hash: &[u8; 32]) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists: i64 = tx.query_row("SELECT count(*) FROM vault", [], |r| r.get(0))?;
        if exists > 0 {
            return Err(StoreError::AlreadyInitialized);
        }
        write_vault(&tx, vault)?;
        tx.execute(
            "INSERT INTO bootstrap_token (id, token_hash, used) VALUES (1, ?, 0)",
            params![bootstrap_token_hash.to_vec()],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn replace_vault(&self, vault: &VaultRecord, expected_generation: i64) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<i64> = tx
            .query_row("SELECT generation FROM vault WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        if current != Some(expected_generation)
            || Some(vault.generation) != expected_generation.checked_add(1)
        {
            return Err(StoreError::Conflict);
        }
        tx.execute("DELETE FROM vault", [])?;
        tx.execute("DELETE FROM share_commitment", [])?;
        write_vault(&tx, vault)?;
        tx.commit()?;
        Ok(())
    }

    fn data_key(&self, owner: &[u8]) -> Result<Option<DataKeyRecord>> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare_cached("SELECT kek_version, wrapped FROM data_key WHERE owner = ?")?;
        let row = stmt
            .query_row(params![owner], |r| {
                Ok(DataKeyRecord {
                    owner: owner.to_vec(),
                    kek_version: r.get(0)?,
                    wrapped: r.get(1)?,
                })
            })
            .optional()?;
        Ok(row)
    }

    fn insert_data_key(&self, key: &DataKeyRecord) -> Result<DataKeyRecord> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT OR IGNORE INTO data_key (owner, kek_version, wrapped) VALUES (?, ?, ?)",
            params![key.owner, key.kek_version, key.wrapped],
        )?;
        let stored = tx.query_row(
            "SELECT kek_version, wrapped FROM data_key WHERE owner = ?",
            params![key.owner],
            |r| {
                Ok(DataKeyRecord {
                    owner: key.owner.clone(),
                    kek_version: r.get(0)?,
                    wrapped: r.get(1)?,
                })
            },
        )?;
        tx.commit()?;
        Ok(stored)
    }

    fn data_keys_not_at_version(&self, version: u32, limit: usize) -> Result<Vec<DataKeyRecord>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT owner, kek_version, wrapped FROM data_key WHERE kek_version <> ? LIMIT ?",
        )?;
        let rows = stmt.query_map(params![version, limit as i64], |r| {
            Ok(DataKeyRecord {
                owner: r.get(0)?,
                kek_version: r.get(1)?,
                wrapped: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn rewrap_data_key(&self, key: &DataKeyRecord, expected_version: u32) -> Result<bool> {
        let conn = self.writer();
        let n = conn.execute(
            "UPDATE data_key SET kek_version = ?, wrapped = ? WHERE owner = ? AND kek_version = ?",
            params![key.kek_version, key.wrapped, key.owner, expected_version],
        )?;
        Ok(n == 1)
    }

    fn data_key_versions(&self) -> Result<Vec<(u32, u64)>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT kek_version, count(*) FROM data_key GROUP BY kek_version ORDER BY kek_version",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn commit(
        &self,
        keys: &[DataKeyRecord],
        batch: &[NewVersion],
        ledger: &LedgerAppend,
    ) -> Result<()> {
        self.commit_from(keys, batch.iter().map(Ok), ledger, &mut |commit| commit())
    }

    fn commit_streamed(
        &self,
        keys: &[DataKeyRecord],
        next: &mut dyn FnMut() -> Option<Result<NewVersion>>,
        ledger: &LedgerAppend,
        finish: Finish<'_>,
    ) -> Result<()> {
        self.commit_from(keys, std::iter::from_fn(next), ledger, finish)
    }

    fn ledger_size(&self) -> Result<u64> {
        let conn = self.reader();
        ledger_size_in(&conn)
    }

    fn insert_account(
        &self,
        account: &AccountRecord,
        token: Option<&RegistrationTokenRecord>,
    ) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(t) = token {
            let n = tx.execute(
                "UPDATE registration_token SET role = ?, link = ?, issued_by = ?, expires_ms = ?, state = ?, mac = ?
                 WHERE hash = ? AND state = ?",
                params![t.role, t.link, t.issued_by, t.expires_ms, t.state.as_str(), t.mac.as_slice(), t.hash.as_slice(), TokenState::Open.as_str()],
            )?;
            if n != 1 {
                return Err(StoreError::Conflict);
            }
        }
        insert_account_in(&tx, account)?;
        tx.commit()?;
        Ok(())
    }

    fn insert_first_account(&self, account: &AccountRecord, token_hash: &[u8; 32]) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let accounts: i64 = tx.query_row("SELECT count(*) FROM account", [], |r| r.get(0))?;
        let n = tx.execute(
            "UPDATE bootstrap_token SET used = 1 WHERE id = 1 AND used = 0 AND token_hash = ?",
            params![token_hash.as_slice()],
        )?;
        if accounts != 0 || n != 1 {
            return Err(StoreError::Conflict);
        }
        insert_account_in(&tx, account)?;
        tx.commit()?;
        Ok(())
    }

    fn account(&self, id: &str) -> Result<Option<AccountRecord>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM account WHERE id = ?"
        ))?;
        let found = stmt.query_row(params![id], account_row).optional()?;
        found.transpose()
    }

    fn account_by_login(&self, login: &[u8; 16]) -> Result<Option<AccountRecord>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM account WHERE login = ?"
        ))?;
        let found = stmt
            .query_row(params![login.as_slice()], account_row)
            .optional()?;
        found.transpose()
    }

    fn accounts(&self) -> Result<Vec<AccountRecord>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM account ORDER BY id"
        ))?;
        let rows = stmt.query_map([], account_row)?;
        rows.map(|r| r?).collect()
    }

    fn account_count(&self) -> Result<u64> {
        let conn = self.reader();
        let n: i64 = conn.query_row("SELECT count(*) FROM account", [], |r| r.get(0))?;
        u64::try_from(n).map_err(|_| StoreError::Corrupt("account count"))
    }

    fn update_account(&self, a: &AccountRecord, expected_generation: i64) -> Result<()> {
        let conn = self.writer();
        let n = unique_is_conflict(conn.execute(
            "UPDATE account SET login = ?, national_id = ?, role = ?, link = ?, disabled = ?, generation = ?,
                 password_file = ?, key_bundle = ?, mac = ?
             WHERE id = ? AND generation = ?",
            params![
                a.login.as_slice(),
                a.national_id.as_slice(),
                a.role,
                a.link,
                a.disabled,
                a.generation,
                a.password_file,
                a.key_bundle,
                a.mac.as_slice(),
                a.id,
                expected_generation
            ],
        ))?;
        if n != 1 {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    fn insert_registration_token(&self, t: &RegistrationTokenRecord) -> Result<()> {
        let conn = self.writer();
        unique_is_conflict(conn.execute(
            "INSERT INTO registration_token (hash, role, link, issued_by, expires_ms, state, mac, account)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                t.hash.as_slice(),
                t.role,
                t.link,
                t.issued_by,
                t.expires_ms,
                t.state.as_str(),
                t.mac.as_slice(),
                t.account
            ],
        ))?;
        Ok(())
    }

    fn registration_token(&self, hash: &[u8; 32]) -> Result<Option<RegistrationTokenRecord>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT hash, role, link, issued_by, expires_ms, state, mac, account FROM registration_token WHERE hash = ?",
        )?;
        let found = stmt
            .query_row(params![hash.as_slice()], token_row)
            .optional()?;
        found.transpose()
    }

    fn update_registration_token(
        &self,
        t: &RegistrationTokenRecord,
        expected_state: TokenState,
    ) -> Result<()> {
        let conn = self.writer();
        let n = conn.execute(
            "UPDATE registration_token SET role = ?, link = ?, issued_by = ?, expires_ms = ?, state = ?, mac = ?
             WHERE hash = ? AND state = ?",
            params![t.role, t.link, t.issued_by, t.expires_ms, t.state.as_str(), t.mac.as_slice(), t.hash.as_slice(), expected_state.as_str()],
        )?;
        if n != 1 {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    fn auth_setup(&self) -> Result<Option<Vec<u8>>> {
        let conn = self.reader();
        let found = conn
            .query_row("SELECT envelope FROM auth_setup WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(found)
    }

    fn init_auth_setup(&self, envelope: &[u8]) -> Result<Vec<u8>> {
        let conn = self.writer();
        conn.execute(
            "INSERT OR IGNORE INTO auth_setup (id, envelope) VALUES (1, ?)",
            params![envelope],
        )?;
        Ok(
            conn.query_row("SELECT envelope FROM auth_setup WHERE id = 1", [], |r| {
                r.get(0)
            })?,
        )
    }

    fn insert_grant(&self, g: &GrantRecord) -> Result<()> {
        self.writer().execute(
            "INSERT INTO break_glass_grant (account, patient, issued_ms, expires_ms, mac)
             VALUES (?, ?, ?, ?, ?)",
            params![
                g.account,
                g.patient.as_slice(),
                g.issued_ms,
                g.expires_ms,
                g.mac.as_slice()
            ],
        )?;
        Ok(())
    }

    fn active_grants(
        &self,
        account: &str,
        patient: &[u8; 16],
        now_ms: i64,
    ) -> Result<Vec<GrantRecord>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT account, patient, issued_ms, expires_ms, mac FROM break_glass_grant
             WHERE account = ? AND patient = ? AND expires_ms > ? ORDER BY id",
        )?;
        let rows = stmt.query_map(params![account, patient.as_slice(), now_ms], |r| {
            let patient: Vec<u8> = r.get(1)?;
            let mac: Vec<u8> = r.get(4)?;
            let (account, issued_ms, expires_ms) = (r.get(0)?, r.get(2)?, r.get(3)?);
            Ok((|| -> Result<GrantRecord> {
                Ok(GrantRecord {
                    account,
                    patient: array(patient, "grant patient")?,
                    issued_ms,
                    expires_ms,
                    mac: array(mac, "grant mac")?,
                })
            })())
        })?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        Ok(out)
    }

    fn insert_refresh_token(&self, t: &RefreshTokenRecord) -> Result<()> {
        let conn = self.writer();
        insert_refresh_in(&conn, t)
    }

    fn refresh_token(&self, hash: &[u8; 32]) -> Result<Option<RefreshTokenRecord>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT hash, family, account, jkt, issued_ms, expires_ms, state, mac
             FROM refresh_token WHERE hash = ?",
        )?;
        let found = stmt
            .query_row(params![hash.as_slice()], |r| {
                let hash: Vec<u8> = r.get(0)?;
                let family: Vec<u8> = r.get(1)?;
                let mac: Vec<u8> = r.get(7)?;
                let state: String = r.get(6)?;
                let (account, jkt, issued_ms, expires_ms) =
                    (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
                Ok((|| -> Result<RefreshTokenRecord> {
                    Ok(RefreshTokenRecord {
                        hash: array(hash, "refresh hash")?,
                        family: array(family, "refresh family")?,
                        account,
                        jkt,
                        issued_ms,
                        expires_ms,
                        state: token_state(&state, "refresh state")?,
                        mac: array(mac, "refresh mac")?,
                    })
                })())
            })
            .optional()?;
        found.transpose()
    }

    fn rotate_refresh_token(&self, used_hash: &[u8; 32], next: &RefreshTokenRecord) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE refresh_token SET state = ? WHERE hash = ? AND state = ?",
            params![
                TokenState::Used.as_str(),
                used_hash.as_slice(),
                TokenState::Open.as_str()
            ],
        )?;
        if n != 1 {
            return Err(StoreError::Conflict);
        }
        insert_refresh_in(&tx, next)?;
        tx.commit()?;
        Ok(())
    }

    fn revoke_refresh_family(&self, family: &[u8; 16]) -> Result<u64> {
        let n = self.writer().execute(
            "UPDATE refresh_token SET state = ? WHERE family = ? AND state = ?",
            params![
                TokenState::Revoked.as_str(),
                family.as_slice(),
                TokenState::Open.as_str()
            ],
        )?;
        Ok(n as u64)
    }

    fn revoke_refresh_account(&self, account: &str) -> Result<u64> {
        let n = self.writer().execute(
            "UPDATE refresh_token SET state = ? WHERE account = ? AND state = ?",
            params![
                TokenState::Revoked.as_str(),
                account,
                TokenState::Open.as_str()
            ],
        )?;
        Ok(n as u64)
    }

    fn insert_client(&self, c: &ClientRecord) -> Result<()> {
        unique_is_conflict(self.writer().execute(
            &format!("INSERT INTO client ({CLIENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            params![
                c.id,
                c.name,
                c.role,
                c.link,
                c.jwk,
                c.bearer,
                c.disabled,
                c.generation,
                c.mac.as_slice()
            ],
        ))?;
        Ok(())
    }

    fn client(&self, id: &str) -> Result<Option<ClientRecord>> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {CLIENT_COLUMNS} FROM client WHERE id = ?"))?;
        stmt.query_row(params![id], client_row)
            .optional()?
            .transpose()
    }

    fn clients(&self) -> Result<Vec<ClientRecord>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {CLIENT_COLUMNS} FROM client ORDER BY name"
        ))?;
        let rows = stmt.query_map([], client_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row??);
        }
        Ok(out)
    }

    fn update_client(&self, c: &ClientRecord, expected_generation: i64) -> Result<()> {
        let n = self.writer().execute(
            "UPDATE client SET name = ?, role = ?, link = ?, jwk = ?, bearer = ?, disabled = ?,
                 generation = ?, mac = ?
             WHERE id = ? AND generation = ?",
            params![
                c.name,
                c.role,
                c.link,
                c.jwk,
                c.bearer,
                c.disabled,
                c.generation,
                c.mac.as_slice(),
                c.id,
                expected_generation
            ],
        )?;
        if n != 1 {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    fn ledger_entries(&self, from: u64, limit: usize) -> Result<Vec<LedgerRecord>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT idx, leaf, envelope FROM ledger_entry WHERE idx >= ? ORDER BY idx LIMIT ?",
        )?;
        let rows = stmt.query_map(params![to_i64(from)?, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (index, leaf, envelope) = row?;
            out.push(LedgerRecord {
                index: u64::try_from(index).map_err(|_| StoreError::Corrupt("ledger index"))?,
                leaf: array(leaf, "ledger leaf")?,
                envelope,
            });
        }
        Ok(out)
    }

    fn ledger_node(&self, level: u32, index: u64) -> Result<Option<[u8; 32]>> {
        let conn = self.reader();
        let hash: Option<Vec<u8>> = if level == 0 {
            conn.prepare_cached("SELECT leaf FROM ledger_entry WHERE idx = ?")?
                .query_row(params![to_i64(index)?], |r| r.get(0))
                .optional()?
        } else {
            let Some((_, pos)) = subtree_pos(level, index) else {
                return Ok(None);
            };
            conn.prepare_cached("SELECT hash FROM ledger_subtree WHERE pos = ?")?
                .query_row(params![pos], |r| r.get(0))
                .optional()?
        };
        hash.map(|h| array(h, "ledger node")).transpose()
    }

    fn ledger_nodes_ending(&self, from: u64, to: u64) -> Result<Vec<LedgerNode>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT pos, hash FROM ledger_subtree WHERE pos >= ? AND pos < ? ORDER BY pos",
        )?;
        // Positions of leaves from..to: [from * 64, to * 64), clamped to what an i64 holds.
        let bound = |leaf: u64| i64::try_from(leaf.saturating_mul(64)).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![bound(from), bound(to)], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (pos, hash) = row?;
            let (level, index) = subtree_at(pos).ok_or(StoreError::Corrupt("ledger position"))?;
            out.push(LedgerNode {
                level,
                index,
                hash: array(hash, "ledger node")?,
            });
        }
        Ok(out)
    }

    fn ledger_checkpoints(&self, from_size: u64, limit: usize) -> Result<Vec<CheckpointRecord>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT size, note FROM ledger_checkpoint WHERE size >= ? ORDER BY size LIMIT ?",
        )?;
        let rows = stmt.query_map(params![to_i64(from_size)?, limit as i64], checkpoint_row)?;
        rows.map(|r| r?).collect()
    }

    fn latest_checkpoint(&self) -> Result<Option<CheckpointRecord>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT size, note FROM ledger_checkpoint ORDER BY size DESC LIMIT 1",
        )?;
        let found = stmt.query_row([], checkpoint_row).optional()?;
        found.transpose()
    }

    fn current(&self, rtype: &str, id: &str) -> Result<Option<VersionRecord>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS} FROM resource_version WHERE rtype = ? AND id = ? ORDER BY version DESC LIMIT 1"
        ))?;
        Ok(stmt
            .query_row(params![rtype, IdColumn::of(id)], version_row)
            .optional()?)
    }

    fn version(&self, rtype: &str, id: &str, version: i64) -> Result<Option<VersionRecord>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS} FROM resource_version WHERE rtype = ? AND id = ? AND version = ?"
        ))?;
        Ok(stmt
            .query_row(params![rtype, IdColumn::of(id), version], version_row)
            .optional()?)
    }

    fn history(
        &self,
        rtype: &str,
        id: Option<&str>,
        offset: usize,
        limit: usize,
    ) -> Result<HistoryPage> {
        let guard = self.reader();
        // Count and page from one snapshot so the total agrees with the page.
        let conn = guard.unchecked_transaction()?;
        let id = id.map(IdColumn::of);
        let (filter, args): (&str, Vec<&dyn rusqlite::ToSql>) = match &id {
            Some(id) => ("rtype = ? AND id = ?", vec![&rtype, id]),
            None => ("rtype = ?", vec![&rtype]),
        };
        let total: i64 = conn.query_row(
            &format!("SELECT count(*) FROM resource_version WHERE {filter}"),
            params_from_iter(args.iter()),
            |r| r.get(0),
        )?;
        // The page's `seq`s first, from the UNIQUE (rtype, id, version) index alone (it holds
        // the `seq`): sorting them costs little, where sorting whole rows would read every
        // body of the type. Then those rows.
        let seqs: Vec<i64> = conn
            .prepare(&format!(
                "SELECT seq FROM resource_version WHERE {filter} ORDER BY seq DESC LIMIT {} OFFSET {}",
                limit as i64, offset as i64
            ))?
            .query_map(params_from_iter(args.iter()), |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let mut row = conn.prepare_cached(&format!(
            "SELECT {VERSION_COLUMNS} FROM resource_version WHERE seq = ?"
        ))?;
        let records = seqs
            .iter()
            .map(|seq| row.query_row(params![seq], version_row))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(HistoryPage {
            records,
            total: total as u64,
        })
    }

    fn search(&self, query: &StoreQuery, offset: usize, limit: usize) -> Result<SearchPage> {
        let guard = self.reader();
        // Count and page from one snapshot so the total agrees with the page.
        let conn = guard.unchecked_transaction()?;
        let log = self.log_for(&conn, query)?;
        let candidates = token_candidates(&conn, query, &log)?;
        let whole_type = lists_whole_type(query)
            && query.updated_from_ms.is_none()
            && query.updated_until_ms.is_none();
        if whole_type {
            // The type posting lists exactly the type's current, non-deleted versions, in
            // `seq` order: the total is its length and the page a slice of it, so only the
            // page's rows are read (counting through the rows read every one of them).
            let seqs = candidates.unwrap_or_default();
            let page: Vec<i64> = seqs.iter().skip(offset).take(limit).copied().collect();
            return Ok(SearchPage {
                records: current_rows(&conn, &query.rtype, &page)?,
                total: seqs.len() as u64,
            });
        }
        let (filter, args) = search_filter(query, candidates);
        let total: i64 = conn.query_row(
            &format!("SELECT count(*) FROM resource_version r WHERE {filter}"),
            params_from_iter(args.iter()),
            |r| r.get(0),
        )?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {VERSION_COLUMNS} FROM resource_version r WHERE {filter} ORDER BY r.seq LIMIT {} OFFSET {}",
            limit as i64, offset as i64
        ))?;
        let records = stmt
            .query_map(params_from_iter(args.iter()), version_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(SearchPage {
            records,
            total: total as u64,
        })
    }

    fn search_all(&self, query: &StoreQuery) -> Result<Vec<VersionRecord>> {
        let guard = self.reader();
        // Candidates and rows from one snapshot.
        let conn = guard.unchecked_transaction()?;
        let log = self.log_for(&conn, query)?;
        let candidates = token_candidates(&conn, query, &log)?;
        let (filter, args) = search_filter(query, candidates);
        let mut stmt = conn.prepare(&format!(
            "SELECT {VERSION_COLUMNS} FROM resource_version r WHERE {filter} ORDER BY r.seq"
        ))?;
        let records = stmt
            .query_map(params_from_iter(args.iter()), version_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(records)
    }
}

fn write_vault(tx: &rusqlite::Transaction<'_>, vault: &VaultRecord) -> Result<()> {
    tx.execute(
        "INSERT INTO vault (id, set_id, threshold, share_count, check_value, keyring, generation)
         VALUES (1, ?, ?, ?, ?, ?, ?)",
        params![
            vault.set_id.to_vec(),
            vault.threshold,
            vault.share_count,
            vault.check_value.to_vec(),
            vault.keyring,
            vault.generation
        ],
    )?;
    for (x, c) in &vault.commitments {
        tx.execute(
            "INSERT INTO share_commitment (x, commitment) VALUES (?, ?)",
            params![x, c.to_vec()],
        )?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    /// Only a lowercase `8-4-4-4-12` hex UUID is kept as 16 bytes; every id comes back as
    /// the same string from the column value SQLite returns.
    #[test]
    fn ids_round_trip_through_their_column_value() {
        let conn = Connection::open_in_memory().unwrap();
        let uuid = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
        let cases: [(&str, bool); 9] = [
            (uuid, true),
            ("00000000-0000-0000-0000-000000000000", true),
            ("ffffffff-ffff-ffff-ffff-ffffffffffff", true),
            // Uppercase digits are a different FHIR id: kept as written.
            ("0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D", false),
            // 36 characters with the dashes elsewhere, or without them.
            ("0a1b2c3d4-e5f-4a6b-8c7d-9e0f1a2b3c4d", false),
            ("0a1b2c3d4e5f4a6b8c7d9e0f1a2b3c4d", false),
            ("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4g", false),
            ("p1", false),
            ("", false),
        ];
        for (id, compact) in cases {
            let column = IdColumn::of(id);
            assert_eq!(matches!(column, IdColumn::Uuid(_)), compact, "{id}");
            let (kind, back): (String, String) = conn
                .query_row("SELECT typeof(?1), ?1", [column], |r| {
                    Ok((r.get(0)?, id_from_column(r.get_ref(1)?).unwrap()))
                })
                .unwrap();
            assert_eq!(kind, if compact { "blob" } else { "text" }, "{id}");
            assert_eq!(back, id);
            assert_eq!(
                id_from_column((&column.value()).into()).ok().as_deref(),
                Some(id)
            );
        }
        // The SQL of migration 0010 makes the same bytes as `IdColumn`.
        let migrated: Vec<u8> = conn
            .query_row("SELECT unhex(replace(?, '-', ''))", [uuid], |r| r.get(0))
            .unwrap();
        assert_eq!(
            IdColumn::of(uuid),
            IdColumn::Uuid(migrated.try_into().unwrap())
        );
        // A blob of any other length is not an id.
        assert!(id_from_column(rusqlite::types::ValueRef::Blob(&[1; 15])).is_err());
        assert!(id_from_column(rusqlite::types::ValueRef::Integer(7)).is_err());
    }

    proptest::proptest! {
        /// Any id comes back unchanged, and any 16 bytes written as a lowercase UUID are
        /// kept as those bytes.
        #[test]
        fn any_id_round_trips(id in "\\PC{0,40}|[0-9a-f-]{36}", bytes in proptest::array::uniform16(proptest::num::u8::ANY)) {
            let back = id_from_column((&IdColumn::of(&id).value()).into()).unwrap();
            proptest::prop_assert_eq!(&back, &id);
            let uuid = id_from_column(rusqlite::types::ValueRef::Blob(&bytes)).unwrap();
            proptest::prop_assert_eq!(IdColumn::of(&uuid), IdColumn::Uuid(bytes));
        }
    }

    fn cache_kib(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "cache_size", |r| r.get(0))
            .unwrap()
    }

    /// Readers get the cache asked for; the writer at most `WRITER_CACHE_MIB`.
    #[test]
    fn the_writer_cache_is_capped_and_readers_get_what_was_asked() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with_cache(&dir.path().join("a.db"), 64).unwrap();
        assert_eq!(cache_kib(&store.writer()), -16 * 1024);
        assert!(store
            .readers
            .iter()
            .all(|r| cache_kib(&r.lock().unwrap()) == -64 * 1024));
        let store = SqliteStore::open_with_cache(&dir.path().join("b.db"), 2).unwrap();
        assert_eq!(cache_kib(&store.writer()), -2 * 1024);
        assert!(store
            .readers
            .iter()
            .all(|r| cache_kib(&r.lock().unwrap()) == -2 * 1024));
    }

    /// The WAL is checkpointed after the same number of bytes whatever the file's page
    /// size: 8 KiB pages in a new file, 4 KiB in one an older medvault made.
    #[test]
    fn the_checkpoint_threshold_is_in_bytes_not_pages() {
        let checkpoint_pages = |conn: &Connection| -> i64 {
            conn.pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
                .unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("new.db")).unwrap();
        assert_eq!(
            checkpoint_pages(&store.writer()),
            WAL_CHECKPOINT_BYTES / i64::from(PAGE_SIZE)
        );
        let old = dir.path().join("old.db");
        {
            let conn = Connection::open(&old).unwrap();
            conn.pragma_update(None, "page_size", 4096).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        }
        let store = SqliteStore::open(&old).unwrap();
        assert_eq!(
            checkpoint_pages(&store.writer()),
            WAL_CHECKPOINT_BYTES / 4096
        );
        assert_eq!(WAL_CHECKPOINT_BYTES / 4096, 10_000);
    }

    /// Every cached statement of this file fits the cache at once (call sites count at least
    /// the distinct statements while cached SQL is fixed text), so none evicts another.
    #[test]
    fn every_cached_statement_fits_the_statement_cache() {
        // Split so that this line is not counted as a call site.
        let sites = include_str!("sqlite.rs")
            .matches(concat!("prepare", "_cached("))
            .count();
        assert!(sites > 20, "the count must see the call sites ({sites})");
        assert!(
            sites <= STATEMENT_CACHE,
            "{sites} prepare_cached call sites, but the statement cache holds {STATEMENT_CACHE}"
        );
    }
}
