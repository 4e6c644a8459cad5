//! Shared fixtures for the store integration tests: temp databases and record builders.

use std::path::{Path, PathBuf};

use medvault_store::{
    Body, NewVersion, Result, SqliteStore, StoreError, Token, VaultRecord, VersionRecord,
};
use tempfile::TempDir;

/// The database file inside a test directory.
pub fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("medvault.db")
}

/// A fresh temp directory with a store opened on `medvault.db` inside it.
pub fn open_store() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&db_path(&dir)).unwrap();
    (dir, store)
}

/// A raw rusqlite connection to a database file, independent of any store.
pub fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

/// A token whose 16 bytes are all `n`.
pub fn tok(n: u8) -> Token {
    [n; 16]
}

/// An inline envelope distinct per (id, version).
pub fn envelope(id: &str, version: i64) -> Vec<u8> {
    format!("envelope:{id}:v{version}").into_bytes()
}

/// A version record with an inline body, owner `b"owner-<id>"`.
pub fn record(rtype: &str, id: &str, version: i64, updated_ms: i64) -> VersionRecord {
    VersionRecord {
        rtype: rtype.to_owned(),
        id: id.to_owned(),
        version,
        updated_ms,
        owner: format!("owner-{id}").into_bytes(),
        body: Some(Body::Inline(envelope(id, version))),
    }
}

/// A new resource (version 1, must not exist yet).
pub fn create(rtype: &str, id: &str, updated_ms: i64, tokens: &[Token]) -> NewVersion {
    NewVersion {
        record: record(rtype, id, 1, updated_ms),
        expected_current: None,
        tokens: tokens.to_vec(),
    }
}

/// An update to `version`, expecting the current version to be `version - 1`.
pub fn update(
    rtype: &str,
    id: &str,
    version: i64,
    updated_ms: i64,
    tokens: &[Token],
) -> NewVersion {
    NewVersion {
        record: record(rtype, id, version, updated_ms),
        expected_current: Some(version - 1),
        tokens: tokens.to_vec(),
    }
}

/// A deletion marker as `version`, expecting the current version to be `version - 1`.
pub fn delete(rtype: &str, id: &str, version: i64, updated_ms: i64) -> NewVersion {
    let mut record = record(rtype, id, version, updated_ms);
    record.body = None;
    NewVersion {
        record,
        expected_current: Some(version - 1),
        tokens: Vec::new(),
    }
}

/// A vault record with distinctive bytes in every field.
pub fn vault_record(generation: i64, commitments: &[u8]) -> VaultRecord {
    VaultRecord {
        set_id: [generation as u8, 1, 2, 3, 4, 5, 6, 0xFF],
        threshold: 3,
        share_count: 5,
        check_value: [0xC0 ^ generation as u8; 32],
        keyring: format!("keyring-gen-{generation}").into_bytes(),
        commitments: commitments
            .iter()
            .map(|&x| (x, [x.wrapping_mul(7) ^ generation as u8; 32]))
            .collect(),
        generation,
    }
}

/// Fails the test unless `r` is `Err(StoreError::Conflict)`.
pub fn assert_conflict<T: std::fmt::Debug>(r: Result<T>) {
    match r {
        Err(StoreError::Conflict) => {}
        other => panic!("expected Conflict, got {other:?}"),
    }
}

/// The ids of a list of records, in order.
pub fn ids(records: &[VersionRecord]) -> Vec<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}

/// Every (token, seq) pair of a search parameter's token in the blind index and the posting
/// log, decoded (read directly from the file). The store's own per-type postings are left
/// out: see [`type_postings`].
pub fn token_pairs(path: &Path) -> Vec<([u8; 16], i64)> {
    let types: Vec<[u8; 16]> = {
        let conn = raw(path);
        let mut stmt = conn
            .prepare("SELECT DISTINCT rtype FROM resource_version")
            .unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
        rows.map(|t| medvault_store::posting::type_token(&t.unwrap()))
            .collect()
    };
    all_pairs(path)
        .into_iter()
        .filter(|(token, _)| !types.contains(token))
        .collect()
}

/// The `seq`s posted under `rtype`'s type token, sorted (read directly from the file).
pub fn type_postings(path: &Path, rtype: &str) -> Vec<i64> {
    let token = medvault_store::posting::type_token(rtype);
    let mut seqs: Vec<i64> = all_pairs(path)
        .into_iter()
        .filter(|(t, _)| *t == token)
        .map(|(_, seq)| seq)
        .collect();
    seqs.sort_unstable();
    seqs
}

/// The `seq`s of the current, non-deleted versions of `rtype`, sorted (what its type
/// postings must hold).
pub fn live_seqs(path: &Path, rtype: &str) -> Vec<i64> {
    let conn = raw(path);
    let mut stmt = conn
        .prepare("SELECT seq FROM resource_version WHERE rtype = ? AND is_current = 1 AND deleted = 0 ORDER BY seq")
        .unwrap();
    let rows = stmt.query_map([rtype], |r| r.get(0)).unwrap();
    rows.collect::<rusqlite::Result<_>>().unwrap()
}

/// Every (token, seq) pair in the blind index and the posting log.
fn all_pairs(path: &Path) -> Vec<([u8; 16], i64)> {
    let conn = raw(path);
    let mut stmt = conn
        .prepare("SELECT token, first_seq, rest FROM search_posting")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })
        .unwrap();
    let mut pairs = Vec::new();
    for row in rows {
        let (token, first, rest) = row.unwrap();
        let token: [u8; 16] = token.try_into().unwrap();
        for seq in medvault_store::posting::decode(first, &rest).unwrap() {
            pairs.push((token, seq));
        }
    }
    // The newest commits' postings are still in the posting log.
    let mut stmt = conn.prepare("SELECT data FROM posting_log").unwrap();
    let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap();
    for data in rows {
        for (token, seqs) in medvault_store::posting::decode_batch(&data.unwrap()).unwrap() {
            pairs.extend(seqs.into_iter().map(|seq| (token, seq)));
        }
    }
    pairs
}

/// Number of search-token entries stored for one resource (read directly from the file).
pub fn token_rows(path: &Path, rtype: &str, id: &str) -> i64 {
    let seqs: Vec<i64> = {
        let conn = raw(path);
        // A lowercase UUID is kept as its 16 bytes (migration 0010), any other id as text;
        // `unhex` of anything that is not hex is NULL, which matches nothing.
        let mut stmt = conn
            .prepare("SELECT seq FROM resource_version WHERE rtype = ?1 AND (id = ?2 OR id = unhex(replace(?2, '-', '')))")
            .unwrap();
        let rows = stmt
            .query_map(rusqlite::params![rtype, id], |r| r.get(0))
            .unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    };
    token_pairs(path)
        .iter()
        .filter(|(_, seq)| seqs.contains(seq))
        .count() as i64
}
