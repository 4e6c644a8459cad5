//! Durability and concurrency smoke tests: data survives drop/reopen; racing writers.

use std::sync::Arc;
use std::thread;

use medvault_store::{DataKeyRecord, SqliteStore, Store, StoreError, StoreQuery};

use crate::common::{create, db_path, delete, raw, record, tok, update, vault_record};

#[test]
fn everything_written_is_there_after_drop_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let key = DataKeyRecord {
        owner: b"owner-p1".to_vec(),
        kek_version: 2,
        wrapped: vec![7; 40],
    };
    {
        let store = SqliteStore::open(&path).unwrap();
        store
            .init_vault(&vault_record(1, &[1, 2, 3]), &[5; 32])
            .unwrap();
        store.insert_data_key(&key).unwrap();
        store
            .write(&[create("Patient", "p1", 1, &[tok(1)])])
            .unwrap();
        store
            .write(&[update("Patient", "p1", 2, 2, &[tok(2)])])
            .unwrap();
        store
            .write(&[create("Patient", "p2", 3, &[tok(1)])])
            .unwrap();
        store.write(&[delete("Patient", "p2", 2, 4)]).unwrap();
        // Dropped here without any explicit close or checkpoint.
    }

    // Readable by plain SQLite with no store involved.
    let rows: i64 = raw(&path)
        .query_row("SELECT count(*) FROM resource_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 4);

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.vault().unwrap(), Some(vault_record(1, &[1, 2, 3])));
    assert_eq!(store.data_key(b"owner-p1").unwrap(), Some(key));
    assert_eq!(
        store.current("Patient", "p1").unwrap(),
        Some(record("Patient", "p1", 2, 2))
    );
    assert!(store
        .current("Patient", "p2")
        .unwrap()
        .unwrap()
        .is_deleted());
    assert_eq!(store.history("Patient", None, 0, 10).unwrap().total, 4);

    let q = |t: u8| StoreQuery {
        rtype: "Patient".into(),
        all_of: vec![vec![tok(t)]],
        ..StoreQuery::default()
    };
    assert!(store.search_all(&q(1)).unwrap().is_empty());
    let found = store.search_all(&q(2)).unwrap();
    assert_eq!(found, vec![record("Patient", "p1", 2, 2)]);

    // Preconditions still hold against the reopened data.
    crate::common::assert_conflict(store.write(&[create("Patient", "p1", 5, &[])]));
    store.write(&[update("Patient", "p1", 3, 5, &[])]).unwrap();
}

#[test]
fn acknowledged_write_is_visible_to_an_outside_connection_immediately() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = SqliteStore::open(&path).unwrap();
    store.write(&[create("Patient", "p1", 1, &[])]).unwrap();
    // Committed, not merely buffered in the store's connection.
    let version: i64 = raw(&path)
        .query_row(
            "SELECT version FROM resource_version WHERE id = 'p1' AND is_current = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, 1);
}

#[test]
fn concurrent_writers_on_distinct_resources_all_land() {
    let (_dir, store) = crate::common::open_store();
    let store: Arc<dyn Store> = Arc::new(store);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            thread::spawn(move || {
                for i in 0..20 {
                    let id = format!("t{t}-{i}");
                    store
                        .write(&[create("Patient", &id, i, &[tok(t)])])
                        .unwrap();
                    // Reads interleave with other threads' writes.
                    assert!(store.current("Patient", &id).unwrap().is_some());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let all = StoreQuery {
        rtype: "Patient".into(),
        ..StoreQuery::default()
    };
    assert_eq!(store.search(&all, 0, 1).unwrap().total, 80);
    for t in 0..4u8 {
        let q = StoreQuery {
            all_of: vec![vec![tok(t)]],
            ..all.clone()
        };
        assert_eq!(store.search_all(&q).unwrap().len(), 20);
    }
}

#[test]
fn racing_updates_of_one_resource_exactly_one_wins() {
    let (_dir, store) = crate::common::open_store();
    store.write(&[create("Patient", "p1", 0, &[])]).unwrap();
    let store = Arc::new(store);
    let barrier = Arc::new(std::sync::Barrier::new(6));
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                match store.write(&[update("Patient", "p1", 2, 100 + t, &[])]) {
                    Ok(()) => Some(t),
                    Err(StoreError::Conflict) => None,
                    Err(e) => panic!("unexpected error {e}"),
                }
            })
        })
        .collect();
    let winners: Vec<i64> = threads
        .into_iter()
        .filter_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let current = store.current("Patient", "p1").unwrap().unwrap();
    assert_eq!(current, record("Patient", "p1", 2, 100 + winners[0]));
    assert_eq!(
        store.history("Patient", Some("p1"), 0, 10).unwrap().total,
        2
    );
}
