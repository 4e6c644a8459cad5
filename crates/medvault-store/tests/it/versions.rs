//! Writing versions: preconditions, atomic batches, deletions, current/version lookups, history.

use medvault_store::{Body, NewVersion, Store, StoreQuery};

use crate::common::{
    assert_conflict, create, db_path, delete, ids, open_store, record, tok, token_rows, update,
};

fn by_token(rtype: &str, t: u8) -> StoreQuery {
    StoreQuery {
        rtype: rtype.to_owned(),
        all_of: vec![vec![tok(t)]],
        ..StoreQuery::default()
    }
}

#[test]
fn create_update_and_read_versions() {
    let (_dir, store) = open_store();
    assert_eq!(store.current("Patient", "p1").unwrap(), None);

    store.write(&[create("Patient", "p1", 100, &[])]).unwrap();
    assert_eq!(
        store.current("Patient", "p1").unwrap(),
        Some(record("Patient", "p1", 1, 100))
    );

    store
        .write(&[update("Patient", "p1", 2, 200, &[])])
        .unwrap();
    let current = store.current("Patient", "p1").unwrap().unwrap();
    assert_eq!(current, record("Patient", "p1", 2, 200));
    assert!(!current.is_deleted());

    assert_eq!(
        store.version("Patient", "p1", 1).unwrap(),
        Some(record("Patient", "p1", 1, 100))
    );
    assert_eq!(
        store.version("Patient", "p1", 2).unwrap(),
        Some(record("Patient", "p1", 2, 200))
    );
    assert_eq!(store.version("Patient", "p1", 3).unwrap(), None);
    // The type is part of the key.
    assert_eq!(store.current("Observation", "p1").unwrap(), None);
    assert_eq!(store.version("Observation", "p1", 1).unwrap(), None);
}

#[test]
fn same_id_in_two_types_are_independent() {
    let (_dir, store) = open_store();
    store
        .write(&[
            create("Patient", "x", 1, &[tok(1)]),
            create("Observation", "x", 2, &[tok(1)]),
        ])
        .unwrap();
    store.write(&[update("Patient", "x", 2, 3, &[])]).unwrap();
    assert_eq!(store.current("Patient", "x").unwrap().unwrap().version, 2);
    assert_eq!(
        store.current("Observation", "x").unwrap().unwrap().version,
        1
    );
    assert_eq!(
        ids(&store.search_all(&by_token("Observation", 1)).unwrap()),
        ["x"]
    );
    assert!(store
        .search_all(&by_token("Patient", 1))
        .unwrap()
        .is_empty());
}

#[test]
fn wrong_preconditions_are_conflicts_and_change_nothing() {
    let (dir, store) = open_store();
    store
        .write(&[create("Patient", "p1", 100, &[tok(1)])])
        .unwrap();

    // Create of an existing resource.
    assert_conflict(store.write(&[create("Patient", "p1", 101, &[tok(2)])]));
    // Update expecting a stale or future version.
    let mut stale = update("Patient", "p1", 2, 102, &[tok(2)]);
    stale.expected_current = Some(0);
    assert_conflict(store.write(&[stale]));
    assert_conflict(store.write(&[update("Patient", "p1", 3, 103, &[tok(2)])]));
    // Update of a resource that does not exist.
    assert_conflict(store.write(&[update("Patient", "nope", 2, 104, &[])]));

    assert_eq!(
        store.current("Patient", "p1").unwrap(),
        Some(record("Patient", "p1", 1, 100))
    );
    assert_eq!(store.current("Patient", "nope").unwrap(), None);
    assert_eq!(store.history("Patient", None, 0, 100).unwrap().total, 1);
    assert_eq!(token_rows(&db_path(&dir), "Patient", "p1"), 1);
    assert_eq!(
        ids(&store.search_all(&by_token("Patient", 1)).unwrap()),
        ["p1"]
    );
}

#[test]
fn a_conflict_late_in_a_batch_rolls_back_the_whole_batch() {
    let (dir, store) = open_store();

    // Two creates where the second has a precondition that cannot hold: neither is stored.
    let mut bad = create("Patient", "b", 2, &[tok(2)]);
    bad.expected_current = Some(1);
    assert_conflict(store.write(&[create("Patient", "a", 1, &[tok(1)]), bad]));
    assert_eq!(store.current("Patient", "a").unwrap(), None);
    assert_eq!(store.current("Patient", "b").unwrap(), None);
    assert_eq!(store.history("Patient", None, 0, 100).unwrap().total, 0);
    assert_eq!(token_rows(&db_path(&dir), "Patient", "a"), 0);

    // With existing resources: the first update (which would retire v1 and swap tokens)
    // must be undone when the second entry conflicts.
    store
        .write(&[
            create("Patient", "a", 10, &[tok(1)]),
            create("Patient", "b", 11, &[tok(1)]),
        ])
        .unwrap();
    assert_conflict(store.write(&[
        update("Patient", "a", 2, 20, &[tok(9)]),
        update("Patient", "b", 3, 21, &[tok(9)]),
    ]));
    assert_eq!(
        store.current("Patient", "a").unwrap(),
        Some(record("Patient", "a", 1, 10))
    );
    assert_eq!(store.version("Patient", "a", 2).unwrap(), None);
    assert_eq!(
        ids(&store.search_all(&by_token("Patient", 1)).unwrap()),
        ["a", "b"]
    );
    assert!(store
        .search_all(&by_token("Patient", 9))
        .unwrap()
        .is_empty());
    assert_eq!(store.history("Patient", None, 0, 100).unwrap().total, 2);

    // The connection is still usable after the rolled-back transaction.
    store
        .write(&[update("Patient", "a", 2, 30, &[tok(9)])])
        .unwrap();
    assert_eq!(
        ids(&store.search_all(&by_token("Patient", 9)).unwrap()),
        ["a"]
    );
}

#[test]
fn a_batch_may_chain_versions_of_one_resource() {
    let (_dir, store) = open_store();
    store
        .write(&[
            create("Patient", "p1", 1, &[tok(1)]),
            update("Patient", "p1", 2, 2, &[tok(2)]),
            create("Patient", "p2", 3, &[tok(1)]),
            update("Patient", "p1", 3, 4, &[tok(3)]),
        ])
        .unwrap();
    assert_eq!(
        store.current("Patient", "p1").unwrap(),
        Some(record("Patient", "p1", 3, 4))
    );
    assert_eq!(
        store.history("Patient", Some("p1"), 0, 10).unwrap().total,
        3
    );
    assert_eq!(
        ids(&store.search_all(&by_token("Patient", 1)).unwrap()),
        ["p2"]
    );
    assert!(store
        .search_all(&by_token("Patient", 2))
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(&store.search_all(&by_token("Patient", 3)).unwrap()),
        ["p1"]
    );
}

#[test]
fn an_empty_batch_is_a_no_op() {
    let (_dir, store) = open_store();
    store.write(&[]).unwrap();
    assert_eq!(store.history("Patient", None, 0, 10).unwrap().total, 0);
}

#[test]
fn deletion_marks_current_and_drops_tokens() {
    let (dir, store) = open_store();
    let path = db_path(&dir);
    store
        .write(&[
            create("Patient", "p1", 100, &[tok(1), tok(2)]),
            create("Patient", "p2", 101, &[tok(1)]),
        ])
        .unwrap();
    assert_eq!(token_rows(&path, "Patient", "p1"), 2);

    store.write(&[delete("Patient", "p1", 2, 200)]).unwrap();

    let current = store.current("Patient", "p1").unwrap().unwrap();
    assert!(current.is_deleted());
    assert_eq!(current.version, 2);
    assert_eq!(current.updated_ms, 200);
    assert_eq!(current.body, None);
    // The old version is still readable.
    assert_eq!(
        store.version("Patient", "p1", 1).unwrap(),
        Some(record("Patient", "p1", 1, 100))
    );

    assert_eq!(token_rows(&path, "Patient", "p1"), 0);
    assert_eq!(token_rows(&path, "Patient", "p2"), 1);
    assert_eq!(
        ids(&store.search_all(&by_token("Patient", 1)).unwrap()),
        ["p2"]
    );
    assert!(store
        .search_all(&by_token("Patient", 2))
        .unwrap()
        .is_empty());
    let all = StoreQuery {
        rtype: "Patient".into(),
        ..StoreQuery::default()
    };
    let page = store.search(&all, 0, 10).unwrap();
    assert_eq!(ids(&page.records), ["p2"]);
    assert_eq!(page.total, 1);

    // The deletion is in the history.
    let history = store.history("Patient", Some("p1"), 0, 10).unwrap();
    assert_eq!(history.total, 2);
    assert!(history.records[0].is_deleted());

    // Deleting again needs the deletion's version as precondition.
    assert_conflict(store.write(&[delete("Patient", "p1", 2, 250)]));
    // Re-creating after deletion continues the version chain and indexes again.
    store
        .write(&[update("Patient", "p1", 3, 300, &[tok(3)])])
        .unwrap();
    assert_eq!(
        store.current("Patient", "p1").unwrap(),
        Some(record("Patient", "p1", 3, 300))
    );
    assert_eq!(
        ids(&store.search_all(&by_token("Patient", 3)).unwrap()),
        ["p1"]
    );
    assert!(store
        .search_all(&by_token("Patient", 2))
        .unwrap()
        .is_empty());
}

#[test]
fn tokens_given_with_a_deletion_are_ignored() {
    let (dir, store) = open_store();
    store
        .write(&[create("Patient", "p1", 1, &[tok(1)])])
        .unwrap();
    let mut del = delete("Patient", "p1", 2, 2);
    del.tokens = vec![tok(1), tok(5)];
    store.write(&[del]).unwrap();
    assert_eq!(token_rows(&db_path(&dir), "Patient", "p1"), 0);
    assert!(store
        .search_all(&by_token("Patient", 5))
        .unwrap()
        .is_empty());
}

#[test]
fn an_empty_inline_body_is_not_a_deletion() {
    let (_dir, store) = open_store();
    let mut nv = create("Binary", "empty", 1, &[tok(1)]);
    nv.record.body = Some(Body::Inline(Vec::new()));
    store.write(std::slice::from_ref(&nv)).unwrap();

    let current = store.current("Binary", "empty").unwrap().unwrap();
    assert!(!current.is_deleted());
    assert_eq!(current, nv.record);
    assert_eq!(
        ids(&store.search_all(&by_token("Binary", 1)).unwrap()),
        ["empty"]
    );
}

#[test]
fn owner_and_binary_body_round_trip_exactly() {
    let (_dir, store) = open_store();
    let mut nv = create("Observation", "o1", -5, &[]);
    nv.record.owner = vec![0, 0xFF, 0, 0x80];
    nv.record.body = Some(Body::Inline((0..=255u8).collect()));
    store.write(std::slice::from_ref(&nv)).unwrap();
    assert_eq!(store.current("Observation", "o1").unwrap(), Some(nv.record));
}

/// Patient a: v1 v2 v3, Patient b: v1 v2, Observation o: v1, interleaved in time.
fn history_fixture() -> (tempfile::TempDir, medvault_store::SqliteStore) {
    let (dir, store) = open_store();
    let steps: Vec<NewVersion> = vec![
        create("Patient", "a", 1, &[]),
        create("Patient", "b", 2, &[]),
        create("Observation", "o", 3, &[]),
        update("Patient", "a", 2, 4, &[]),
        update("Patient", "b", 2, 5, &[]),
        update("Patient", "a", 3, 6, &[]),
    ];
    for step in steps {
        store.write(&[step]).unwrap();
    }
    (dir, store)
}

fn versions(records: &[medvault_store::VersionRecord]) -> Vec<(&str, i64)> {
    records.iter().map(|r| (r.id.as_str(), r.version)).collect()
}

#[test]
fn history_of_one_resource_is_newest_first() {
    let (_dir, store) = history_fixture();
    let page = store.history("Patient", Some("a"), 0, 10).unwrap();
    assert_eq!(page.total, 3);
    assert_eq!(versions(&page.records), [("a", 3), ("a", 2), ("a", 1)]);
    assert_eq!(page.records[2], record("Patient", "a", 1, 1));

    let none = store.history("Patient", Some("zzz"), 0, 10).unwrap();
    assert_eq!(none.total, 0);
    assert!(none.records.is_empty());
}

#[test]
fn history_of_a_type_is_newest_first_and_excludes_other_types() {
    let (_dir, store) = history_fixture();
    let page = store.history("Patient", None, 0, 10).unwrap();
    assert_eq!(page.total, 5);
    assert_eq!(
        versions(&page.records),
        [("a", 3), ("b", 2), ("a", 2), ("b", 1), ("a", 1)]
    );
    let obs = store.history("Observation", None, 0, 10).unwrap();
    assert_eq!(obs.total, 1);
    assert_eq!(versions(&obs.records), [("o", 1)]);
}

#[test]
fn history_pages_with_offset_and_limit() {
    let (_dir, store) = history_fixture();

    let page = store.history("Patient", None, 1, 2).unwrap();
    assert_eq!(page.total, 5);
    assert_eq!(versions(&page.records), [("b", 2), ("a", 2)]);

    let page = store.history("Patient", None, 4, 2).unwrap();
    assert_eq!(page.total, 5);
    assert_eq!(versions(&page.records), [("a", 1)]);

    let page = store.history("Patient", None, 5, 2).unwrap();
    assert_eq!(page.total, 5);
    assert!(page.records.is_empty());

    let page = store.history("Patient", Some("a"), 1, 1).unwrap();
    assert_eq!(page.total, 3);
    assert_eq!(versions(&page.records), [("a", 2)]);

    let page = store.history("Patient", Some("a"), 0, 0).unwrap();
    assert_eq!(page.total, 3);
    assert!(page.records.is_empty());

    // Walking the pages covers every entry exactly once, newest first.
    let mut walked = Vec::new();
    let mut offset = 0;
    loop {
        let page = store.history("Patient", None, offset, 2).unwrap();
        if page.records.is_empty() {
            break;
        }
        offset += page.records.len();
        walked.extend(page.records);
    }
    assert_eq!(
        walked,
        store.history("Patient", None, 0, 100).unwrap().records
    );
}

#[test]
fn versions_replaced_within_one_batch_leave_no_token_rows() {
    let (dir, store) = open_store();
    store
        .write(&[
            create("Patient", "p1", 1, &[tok(1), tok(2)]),
            update("Patient", "p1", 2, 2, &[tok(3)]),
            create("Patient", "p2", 3, &[tok(4), tok(5)]),
            delete("Patient", "p2", 2, 4),
        ])
        .unwrap();
    let path = db_path(&dir);
    // Only the current version's one token remains for p1; nothing for the deleted p2.
    assert_eq!(token_rows(&path, "Patient", "p1"), 1);
    assert_eq!(token_rows(&path, "Patient", "p2"), 0);
    assert_eq!(crate::common::token_pairs(&path).len(), 1);
}

#[test]
fn a_streamed_commit_writes_what_it_is_handed_and_nothing_if_the_writer_stops() {
    use medvault_store::{LedgerAppend, StoreError};
    let (_dir, store) = open_store();
    let with_token_1 = |store: &medvault_store::SqliteStore| -> Vec<String> {
        let page = store.search(&by_token("Patient", 1), 0, 10).unwrap();
        ids(&page.records).into_iter().map(String::from).collect()
    };
    // Handed over one at a time: all three are written, in one commit.
    let mut versions = vec![
        create("Patient", "a", 1, &[tok(1)]),
        create("Patient", "b", 2, &[tok(1)]),
        create("Patient", "c", 3, &[tok(2)]),
    ]
    .into_iter();
    store
        .commit_streamed(
            &[],
            &mut || versions.next().map(Ok),
            &LedgerAppend::default(),
            &mut |commit| commit(),
        )
        .unwrap();
    assert_eq!(with_token_1(&store), ["a", "b"]);
    // The writer stops after handing over one version: its error is the result and the
    // version it did hand over is not stored.
    let mut handed = 0;
    let r = store.commit_streamed(
        &[],
        &mut || {
            handed += 1;
            Some(match handed {
                1 => Ok(create("Patient", "d", 4, &[tok(1)])),
                _ => Err(StoreError::Abandoned),
            })
        },
        &LedgerAppend::default(),
        &mut |commit| commit(),
    );
    assert!(matches!(r, Err(StoreError::Abandoned)), "{r:?}");
    assert_eq!(store.current("Patient", "d").unwrap(), None);
    assert_eq!(with_token_1(&store), ["a", "b"]);
    // A streamed version is checked like any other: a second version 1 is a Conflict.
    let mut again = vec![
        create("Patient", "e", 5, &[]),
        create("Patient", "a", 6, &[]),
    ]
    .into_iter();
    assert_conflict(store.commit_streamed(
        &[],
        &mut || again.next().map(Ok),
        &LedgerAppend::default(),
        &mut |commit| commit(),
    ));
    assert_eq!(store.current("Patient", "e").unwrap(), None);
}

/// The final COMMIT of a streamed commit runs where its runner puts it: on another thread,
/// while the calling thread does its own work, the versions are committed as usual. A runner
/// that returns without running it, or panics, leaves nothing stored and the writer usable.
#[test]
fn a_streamed_commit_is_finished_by_its_runner_on_any_thread_or_not_at_all() {
    use medvault_store::{LedgerAppend, StoreError};
    let (_dir, store) = open_store();
    let stream = |store: &medvault_store::SqliteStore,
                  id: &str,
                  seq: i64,
                  finish: medvault_store::Finish<'_>| {
        let mut versions = vec![create("Patient", id, seq, &[tok(1)])].into_iter();
        store.commit_streamed(
            &[],
            &mut || versions.next().map(Ok),
            &LedgerAppend::default(),
            finish,
        )
    };
    // On another thread, while this one works.
    let mut worked = false;
    stream(&store, "elsewhere", 1, &mut |commit| {
        std::thread::scope(|s| {
            let other = s.spawn(|| {
                commit();
                std::thread::current().id()
            });
            worked = true;
            assert_ne!(other.join().unwrap(), std::thread::current().id());
        })
    })
    .unwrap();
    assert!(worked);
    assert!(store.current("Patient", "elsewhere").unwrap().is_some());
    // Run twice: the second run does nothing, and the first one's success stands.
    stream(&store, "twice", 5, &mut |commit| {
        commit();
        commit();
    })
    .unwrap();
    assert!(store.current("Patient", "twice").unwrap().is_some());
    // Never run: refused, nothing stored.
    let r = stream(&store, "never", 2, &mut |_commit| {});
    assert!(matches!(r, Err(StoreError::Abandoned)), "{r:?}");
    assert_eq!(store.current("Patient", "never").unwrap(), None);
    // A runner that panics: the transaction is rolled back as the panic passes.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        stream(&store, "panicked", 3, &mut |_commit| {
            panic!("runner failed")
        })
    }));
    assert!(panicked.is_err());
    assert_eq!(store.current("Patient", "panicked").unwrap(), None);
    // The writer is not left inside either transaction: the next commit succeeds.
    stream(&store, "after", 4, &mut |commit| commit()).unwrap();
    assert!(store.current("Patient", "after").unwrap().is_some());
    assert_eq!(store.current("Patient", "never").unwrap(), None);
}
