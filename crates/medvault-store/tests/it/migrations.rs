//! Opening a database: schema creation, user_version, WAL mode, reopening and too-new schemas.

use medvault_store::{SqliteStore, Store, StoreError, StoreQuery};

use crate::common::{create, db_path, open_store, raw, record, tok, vault_record};

/// The schema version this store migrates to (the number of migrations).
const LATEST: i64 = 10;

fn user_version(conn: &rusqlite::Connection) -> i64 {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

fn journal_mode(conn: &rusqlite::Connection) -> String {
    conn.pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap()
}

/// The schema as migration `version` left it (a database from an older medvault).
fn schema_at(conn: &rusqlite::Connection, version: usize) {
    let all = [
        include_str!("../../sql/sqlite/0001_init.sql"),
        include_str!("../../sql/sqlite/0002_search_posting.sql"),
        include_str!("../../sql/sqlite/0003_ledger.sql"),
        include_str!("../../sql/sqlite/0004_identity.sql"),
        include_str!("../../sql/sqlite/0005_grants_sessions.sql"),
        include_str!("../../sql/sqlite/0006_clients.sql"),
        include_str!("../../sql/sqlite/0007_posting_log.sql"),
        include_str!("../../sql/sqlite/0008_ledger_subtree.sql"),
    ];
    for sql in &all[..version] {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", version as i64)
        .unwrap();
}

#[test]
fn open_creates_schema_at_the_latest_user_version() {
    let (dir, _store) = open_store();
    let conn = raw(&db_path(&dir));
    assert_eq!(user_version(&conn), LATEST);

    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap();
    let tables: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    for expected in [
        "account",
        "auth_setup",
        "bootstrap_token",
        "break_glass_grant",
        "client",
        "data_key",
        "resource_version",
        "ledger_checkpoint",
        "ledger_entry",
        "ledger_subtree",
        "posting_log",
        "refresh_token",
        "registration_token",
        "search_posting",
        "share_commitment",
        "vault",
    ] {
        assert!(
            tables.iter().any(|t| t == expected),
            "table {expected} missing from {tables:?}"
        );
    }
}

#[test]
fn open_puts_the_file_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);

    // Baseline: a database SQLite creates on its own is not in WAL mode, so the check
    // below really depends on what `SqliteStore::open` did.
    let other = dir.path().join("plain.db");
    {
        let conn = raw(&other);
        conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        assert_eq!(journal_mode(&conn), "delete");
    }

    let store = SqliteStore::open(&path).unwrap();
    // journal_mode=WAL is persistent: a fresh connection that sets nothing sees it.
    let conn = raw(&path);
    assert_eq!(journal_mode(&conn), "wal");
    drop(conn);

    // While the store is open and has written, the WAL file sits beside the database.
    store.write(&[create("Patient", "p1", 1, &[])]).unwrap();
    let wal = dir.path().join("medvault.db-wal");
    assert!(wal.exists(), "no WAL file at {}", wal.display());

    drop(store);
    assert_eq!(journal_mode(&raw(&path)), "wal");
}

fn page_size(conn: &rusqlite::Connection) -> i64 {
    conn.pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap()
}

#[test]
fn a_new_database_gets_large_pages_and_an_old_one_keeps_its_own() {
    let dir = tempfile::tempdir().unwrap();

    // A new file: created with medvault's page size, not SQLite's default.
    let path = db_path(&dir);
    let store = SqliteStore::open(&path).unwrap();
    store
        .write(&[create("Patient", "p1", 1, &[tok(1)])])
        .unwrap();
    drop(store);
    assert_eq!(page_size(&raw(&path)), i64::from(medvault_store::PAGE_SIZE));
    assert_ne!(medvault_store::PAGE_SIZE, 4096);

    // A database an older medvault made, with SQLite's default 4 KiB pages and already in
    // WAL mode: it keeps them (SQLite cannot change a WAL database's page size), and it
    // migrates and works as before.
    let old_dir = tempfile::tempdir().unwrap();
    let old = db_path(&old_dir);
    {
        let conn = raw(&old);
        assert_eq!(page_size(&conn), 4096);
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        schema_at(&conn, 8);
    }
    let store = SqliteStore::open(&old).unwrap();
    store
        .write(&[create("Patient", "p2", 1, &[tok(2)])])
        .unwrap();
    let found = store
        .search_all(&StoreQuery {
            rtype: "Patient".into(),
            all_of: vec![vec![tok(2)]],
            ids: None,
            updated_from_ms: None,
            updated_until_ms: None,
        })
        .unwrap();
    assert_eq!(crate::common::ids(&found), ["p2"]);
    drop(store);
    let conn = raw(&old);
    assert_eq!(page_size(&conn), 4096);
    assert_eq!(user_version(&conn), LATEST);
}

#[test]
fn reopening_an_existing_file_keeps_schema_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .init_vault(&vault_record(1, &[1, 2]), &[9; 32])
            .unwrap();
        store.write(&[create("Patient", "p1", 10, &[])]).unwrap();
    }
    // Reopening must not re-run the migration (it would fail on CREATE TABLE).
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&raw(&path)), LATEST);
    assert_eq!(store.vault().unwrap(), Some(vault_record(1, &[1, 2])));
    assert_eq!(
        store.current("Patient", "p1").unwrap(),
        Some(record("Patient", "p1", 1, 10))
    );
    drop(store);

    // And a third time, to be sure reopening is repeatable.
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.history("Patient", None, 0, 10).unwrap().total, 1);
}

#[test]
fn two_stores_on_one_file_see_each_others_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let a = SqliteStore::open(&path).unwrap();
    let b = SqliteStore::open(&path).unwrap();
    a.write(&[create("Patient", "p1", 10, &[])]).unwrap();
    assert_eq!(
        b.current("Patient", "p1").unwrap(),
        Some(record("Patient", "p1", 1, 10))
    );
    // b's precondition check sees a's commit.
    crate::common::assert_conflict(b.write(&[create("Patient", "p1", 11, &[])]));
}

#[test]
fn schema_newer_than_supported_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        let store = SqliteStore::open(&path).unwrap();
        store.write(&[create("Patient", "p1", 10, &[])]).unwrap();
    }
    raw(&path)
        .pragma_update(None, "user_version", LATEST + 1)
        .unwrap();

    match SqliteStore::open(&path) {
        Err(StoreError::SchemaTooNew { found, supported }) => {
            assert_eq!(found, LATEST + 1);
            assert_eq!(supported, LATEST);
        }
        Err(other) => panic!("expected SchemaTooNew, got {other:?}"),
        Ok(_) => panic!("expected SchemaTooNew, the store opened"),
    }

    // The refused open left the file alone.
    let conn = raw(&path);
    assert_eq!(user_version(&conn), LATEST + 1);
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM resource_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn empty_file_with_future_user_version_is_refused_without_migrating() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    raw(&path)
        .pragma_update(None, "user_version", LATEST + 2)
        .unwrap();

    assert!(matches!(
        SqliteStore::open(&path),
        Err(StoreError::SchemaTooNew { found, supported })
            if found == LATEST + 2 && supported == LATEST
    ));
    let tables: i64 = raw(&path)
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "no migration may run on a too-new schema");
}

#[test]
fn open_in_a_missing_directory_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/medvault.db");
    assert!(matches!(
        SqliteStore::open(&path),
        Err(StoreError::Database(_))
    ));
}

#[test]
fn version_1_search_tokens_become_postings_and_stay_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        // A database as schema version 1 left it: one (token, seq) row per token.
        let conn = raw(&path);
        conn.execute_batch(include_str!("../../sql/sqlite/0001_init.sql"))
            .unwrap();
        conn.execute_batch(
            "INSERT INTO resource_version (rtype, id, version, is_current, deleted, updated_ms, owner, body, tokens)
               VALUES ('Patient', 'p1', 1, 1, 0, 10, X'00', X'01', NULL),
                      ('Patient', 'p2', 1, 1, 0, 11, X'00', X'02', NULL);
             INSERT INTO search_token (token, seq) VALUES
               (X'11111111111111111111111111111111', 1),
               (X'11111111111111111111111111111111', 2),
               (X'22222222222222222222222222222222', 2);",
        )
        .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&raw(&path)), LATEST);
    let query = |tokens: Vec<Vec<[u8; 16]>>| StoreQuery {
        rtype: "Patient".into(),
        all_of: tokens,
        ids: None,
        updated_from_ms: None,
        updated_until_ms: None,
    };
    let found = store.search_all(&query(vec![vec![[0x11; 16]]])).unwrap();
    assert_eq!(crate::common::ids(&found), ["p1", "p2"]);
    let found = store
        .search_all(&query(vec![vec![[0x11; 16]], vec![[0x22; 16]]]))
        .unwrap();
    assert_eq!(crate::common::ids(&found), ["p2"]);
    let tables: i64 = raw(&path)
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'search_token'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0, "the old token table is dropped");
}

#[test]
fn version_7_ledger_subtrees_are_rekeyed_by_their_last_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    {
        // A database as schema version 7 left it: subtree hashes keyed by (level, idx).
        let conn = raw(&path);
        schema_at(&conn, 7);
        for i in 0..6u8 {
            conn.execute(
                "INSERT INTO ledger_entry (idx, leaf, envelope) VALUES (?, ?, X'00')",
                rusqlite::params![i, vec![i; 32]],
            )
            .unwrap();
        }
        // Six leaves: (1,0), (1,1), (1,2) and (2,0); the last row could describe no ledger.
        conn.execute_batch(
            "INSERT INTO ledger_node (level, idx, hash) VALUES
               (1, 0, zeroblob(32)), (1, 1, randomblob(32)), (1, 2, randomblob(32)),
               (2, 0, randomblob(32)), (60, 1, randomblob(32));",
        )
        .unwrap();
        conn.pragma_update(None, "user_version", 7).unwrap();
    }
    let old: Vec<(u32, u64, Vec<u8>)> = {
        let conn = raw(&path);
        let mut stmt = conn
            .prepare(
                "SELECT level, idx, hash FROM ledger_node WHERE level < 60 ORDER BY level, idx",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&raw(&path)), LATEST);
    for (level, index, hash) in &old {
        assert_eq!(
            store
                .ledger_node(*level, *index)
                .unwrap()
                .map(|h| h.to_vec()),
            Some(hash.clone()),
            "node ({level}, {index})"
        );
    }
    assert_eq!(store.ledger_node(60, 1).unwrap(), None);
    assert_eq!(store.ledger_node(2, 1).unwrap(), None);
    // Entries 2..4 complete (1, 1) and (2, 0) (both end at leaf 3); entry 5 completes (1, 2).
    let ending = |from, to| -> Vec<(u32, u64)> {
        store
            .ledger_nodes_ending(from, to)
            .unwrap()
            .into_iter()
            .map(|n| (n.level, n.index))
            .collect()
    };
    assert_eq!(ending(2, 4), [(1, 1), (2, 0)]);
    assert_eq!(ending(0, 6), [(1, 0), (1, 1), (2, 0), (1, 2)]);
    assert_eq!(ending(4, 5), []);
    let rows: i64 = raw(&path)
        .query_row("SELECT count(*) FROM ledger_subtree", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 4, "the row no ledger can have is dropped");
}

#[test]
fn version_8_current_versions_are_posted_under_their_type() {
    use medvault_store::posting::{encode, encode_batch, LogBatch};

    use crate::common::{ids, live_seqs, type_postings, update};

    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let patients = 1030; // more than one posting's worth
    {
        let conn = raw(&path);
        schema_at(&conn, 8);
        let mut insert = conn
            .prepare(
                "INSERT INTO resource_version (rtype, id, version, is_current, deleted, updated_ms, owner, body, tokens)
                 VALUES (?, ?, ?, ?, ?, 10, X'00', ?, ?)",
            )
            .unwrap();
        for n in 0..patients {
            let body: Option<Vec<u8>> = Some(vec![1]);
            let tokens: Option<Vec<u8>> = Some(Vec::new());
            insert
                .execute(rusqlite::params![
                    "Patient",
                    format!("p{n}"),
                    1,
                    1,
                    0,
                    body,
                    tokens
                ])
                .unwrap();
        }
        // o1 has a retired version 1, o2 is deleted, o3 is current.
        let rows: [(&str, i64, bool, bool); 5] = [
            ("o1", 1, false, false),
            ("o1", 2, true, false),
            ("o2", 1, false, false),
            ("o2", 2, true, true),
            ("o3", 1, true, false),
        ];
        for (id, version, current, deleted) in rows {
            let body: Option<Vec<u8>> = (!deleted).then(|| vec![2]);
            let tokens: Option<Vec<u8>> = (!deleted).then(|| [0x33u8; 16].to_vec());
            insert
                .execute(rusqlite::params![
                    "Observation",
                    id,
                    version,
                    current,
                    deleted,
                    body,
                    tokens
                ])
                .unwrap();
        }
        // A search token of o1 v2 and o3, half merged and half still in the posting log.
        let seq = |id: &str| -> i64 {
            conn.query_row(
                "SELECT seq FROM resource_version WHERE id = ? AND is_current = 1",
                [id],
                |r| r.get(0),
            )
            .unwrap()
        };
        let (first, rest) = encode(&[seq("o1")]).unwrap();
        conn.execute(
            "INSERT INTO search_posting (token, first_seq, rest) VALUES (?, ?, ?)",
            rusqlite::params![[0x33u8; 16].to_vec(), first, rest],
        )
        .unwrap();
        let mut batch = LogBatch::new();
        batch.insert([0x33; 16], vec![seq("o3")]);
        conn.execute(
            "INSERT INTO posting_log (batch, rev, data) VALUES (?, 0, ?)",
            rusqlite::params![seq("o3"), encode_batch(&batch)],
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&raw(&path)), LATEST);
    let index: i64 = raw(&path)
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'resource_type_current'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(index, 0, "the type index is dropped");
    for rtype in ["Patient", "Observation"] {
        assert_eq!(
            type_postings(&path, rtype),
            live_seqs(&path, rtype),
            "{rtype}"
        );
    }
    let postings: i64 = raw(&path)
        .query_row(
            "SELECT count(*) FROM search_posting WHERE token = ?",
            [medvault_store::posting::type_token("Patient").to_vec()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        postings, 2,
        "1,030 versions make two postings of at most 1,024"
    );
    let logged: i64 = raw(&path)
        .query_row("SELECT count(*) FROM posting_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(logged, 0, "the log is merged first");

    // Whole-type listings and searches read the new postings.
    let whole = |rtype: &str| StoreQuery {
        rtype: rtype.into(),
        all_of: Vec::new(),
        ids: None,
        updated_from_ms: None,
        updated_until_ms: None,
    };
    assert_eq!(
        ids(&store.search_all(&whole("Observation")).unwrap()),
        ["o1", "o3"]
    );
    assert_eq!(
        store.search(&whole("Patient"), 0, 5).unwrap().total,
        patients
    );
    let mut by_token = whole("Observation");
    by_token.all_of = vec![vec![[0x33; 16]]];
    assert_eq!(ids(&store.search_all(&by_token).unwrap()), ["o1", "o3"]);

    // A version written before the migration is retired from its type posting when replaced.
    store
        .write(&[update("Observation", "o1", 3, 20, &[])])
        .unwrap();
    store
        .write(&[crate::common::delete("Patient", "p0", 2, 21)])
        .unwrap();
    for rtype in ["Patient", "Observation"] {
        assert_eq!(
            type_postings(&path, rtype),
            live_seqs(&path, rtype),
            "{rtype}"
        );
    }
    assert_eq!(ids(&store.search_all(&by_token).unwrap()), ["o3"]);
    assert_eq!(
        store.search(&whole("Patient"), 0, 5).unwrap().total,
        patients - 1
    );
}

#[test]
fn version_9_server_ids_are_kept_as_16_bytes_and_still_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let uuid = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    let upper = "0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D";
    let tokens = [crate::common::tok(7)];
    {
        // Written by this version, then turned back into what version 9 kept: every id
        // as text (the postings do not name ids, so they stay as they are).
        let store = SqliteStore::open(&path).unwrap();
        store
            .write(&[
                create("Observation", uuid, 10, &tokens),
                create("Observation", upper, 10, &tokens),
                create("Observation", "p1", 10, &tokens),
            ])
            .unwrap();
        store
            .write(&[crate::common::update("Observation", uuid, 2, 20, &tokens)])
            .unwrap();
        let conn = raw(&path);
        conn.execute_batch(
            "UPDATE resource_version SET id = lower(substr(hex(id), 1, 8) || '-' || substr(hex(id), 9, 4) || '-' || substr(hex(id), 13, 4) || '-' || substr(hex(id), 17, 4) || '-' || substr(hex(id), 21)) WHERE typeof(id) = 'blob';
             PRAGMA user_version = 9;",
        )
        .unwrap();
    }
    let kinds = |path: &std::path::Path| -> Vec<String> {
        raw(path)
            .prepare("SELECT typeof(id) FROM resource_version ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    assert_eq!(kinds(&path), ["text"; 4], "a version 9 database");

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(user_version(&raw(&path)), LATEST);
    // Both versions of the lowercase UUID are compacted; the others stay text.
    assert_eq!(kinds(&path), ["blob", "text", "text", "blob"]);
    assert_eq!(
        store.current("Observation", uuid).unwrap(),
        Some(record("Observation", uuid, 2, 20))
    );
    assert_eq!(
        store.version("Observation", uuid, 1).unwrap(),
        Some(record("Observation", uuid, 1, 10))
    );
    for id in [upper, "p1"] {
        assert_eq!(
            store.current("Observation", id).unwrap(),
            Some(record("Observation", id, 1, 10)),
            "{id}"
        );
    }
    let history = store.history("Observation", Some(uuid), 0, 10).unwrap();
    assert_eq!(history.total, 2);
    assert_eq!(crate::common::ids(&history.records), [uuid, uuid]);
    let by_id = |ids: &[&str]| {
        let query = StoreQuery {
            rtype: "Observation".into(),
            all_of: vec![tokens.to_vec()],
            ids: Some(ids.iter().map(|i| i.to_string()).collect()),
            updated_from_ms: None,
            updated_until_ms: None,
        };
        let found = store.search(&query, 0, 10).unwrap().records;
        let mut ids: Vec<String> = found.into_iter().map(|r| r.id).collect();
        ids.sort();
        ids
    };
    assert_eq!(by_id(&[uuid, "p1"]), [uuid, "p1"]);
    assert_eq!(by_id(&[upper]), [upper]);
    // The same UUID in capitals is another resource, here and after the migration.
    assert_ne!(
        store.current("Observation", upper).unwrap(),
        store.current("Observation", uuid).unwrap()
    );
    // A new write of an existing UUID's next version finds it in its 16-byte form.
    store
        .write(&[crate::common::update("Observation", uuid, 3, 30, &tokens)])
        .unwrap();
    crate::common::assert_conflict(store.write(&[create("Observation", uuid, 40, &[])]));
    assert_eq!(store.history("Observation", None, 0, 10).unwrap().total, 5);
}
