//! Ledger rows: appended only in order, atomically with the action they record.

use medvault_store::{
    CheckpointRecord, LedgerAppend, LedgerNode, LedgerRecord, SqliteStore, Store, StoreError,
};

use crate::common::{create, open_store};

fn assert_conflict<T: std::fmt::Debug>(r: medvault_store::Result<T>) {
    match r {
        Err(StoreError::LedgerConflict) => {}
        other => panic!("expected LedgerConflict, got {other:?}"),
    }
}

fn entry(index: u64) -> LedgerRecord {
    LedgerRecord {
        index,
        leaf: [index as u8; 32],
        envelope: vec![0xE0, index as u8],
    }
}

fn entries(range: std::ops::Range<u64>) -> LedgerAppend {
    LedgerAppend {
        entries: range.map(entry).collect(),
        ..LedgerAppend::default()
    }
}

fn append(store: &SqliteStore, ledger: &LedgerAppend) -> medvault_store::Result<()> {
    store.commit(&[], &[], ledger)
}

#[test]
fn entries_nodes_and_checkpoints_are_stored_and_read_back() {
    let (_dir, store) = open_store();
    assert_eq!(store.ledger_size().unwrap(), 0);
    assert_eq!(store.latest_checkpoint().unwrap(), None);
    let mut first = entries(0..2);
    first.nodes.push(LedgerNode {
        level: 1,
        index: 0,
        hash: [0xAA; 32],
    });
    first.checkpoint = Some(CheckpointRecord {
        size: 2,
        note: "note at 2\n".into(),
    });
    append(&store, &first).unwrap();
    let mut second = entries(2..3);
    second.checkpoint = Some(CheckpointRecord {
        size: 3,
        note: "note at 3\n".into(),
    });
    append(&store, &second).unwrap();

    assert_eq!(store.ledger_size().unwrap(), 3);
    assert_eq!(
        store.ledger_entries(1, 10).unwrap(),
        vec![entry(1), entry(2)]
    );
    assert_eq!(store.ledger_entries(0, 1).unwrap(), vec![entry(0)]);
    assert_eq!(store.ledger_node(0, 2).unwrap(), Some([2; 32]));
    assert_eq!(store.ledger_node(1, 0).unwrap(), Some([0xAA; 32]));
    assert_eq!(store.ledger_node(1, 1).unwrap(), None);
    assert_eq!(store.ledger_node(0, 3).unwrap(), None);
    let sizes: Vec<u64> = store
        .ledger_checkpoints(0, 10)
        .unwrap()
        .iter()
        .map(|c| c.size)
        .collect();
    assert_eq!(sizes, [2, 3]);
    assert_eq!(store.latest_checkpoint().unwrap().unwrap().size, 3);
    assert_eq!(store.ledger_checkpoints(3, 10).unwrap().len(), 1);
}

#[test]
fn entries_that_do_not_continue_the_ledger_are_refused() {
    let (_dir, store) = open_store();
    append(&store, &entries(0..2)).unwrap();
    // A gap, a rewrite of an existing index, and a non-consecutive batch.
    assert_conflict(append(&store, &entries(3..4)));
    assert_conflict(append(&store, &entries(1..2)));
    let skipping = LedgerAppend {
        entries: vec![entry(2), entry(4)],
        ..LedgerAppend::default()
    };
    assert_conflict(append(&store, &skipping));
    assert_eq!(store.ledger_size().unwrap(), 2);
    assert_eq!(store.ledger_entries(0, 10).unwrap().len(), 2);
}

#[test]
fn nodes_and_checkpoints_must_not_claim_missing_entries() {
    let (_dir, store) = open_store();
    let mut early_node = entries(0..2);
    early_node.nodes.push(LedgerNode {
        level: 2,
        index: 0,
        hash: [1; 32],
    });
    assert_conflict(append(&store, &early_node));
    let mut level_zero = entries(0..2);
    level_zero.nodes.push(LedgerNode {
        level: 0,
        index: 0,
        hash: [1; 32],
    });
    assert_conflict(append(&store, &level_zero));
    let mut wrong_size = entries(0..2);
    wrong_size.checkpoint = Some(CheckpointRecord {
        size: 5,
        note: "n\n".into(),
    });
    assert_conflict(append(&store, &wrong_size));
    assert_eq!(store.ledger_size().unwrap(), 0);
}

#[test]
fn a_refused_write_stores_neither_the_action_nor_its_entry() {
    let (_dir, store) = open_store();
    store
        .commit(&[], &[create("Patient", "p1", 10, &[])], &entries(0..1))
        .unwrap();
    // The same create again conflicts, and takes its ledger entry down with it.
    let r = store.commit(&[], &[create("Patient", "p1", 11, &[])], &entries(1..2));
    assert!(matches!(r, Err(StoreError::Conflict)), "{r:?}");
    assert_eq!(store.ledger_size().unwrap(), 1);
    // And a ledger conflict takes the action down.
    let r = store.commit(&[], &[create("Patient", "p2", 12, &[])], &entries(5..6));
    assert!(matches!(r, Err(StoreError::LedgerConflict)), "{r:?}");
    assert_eq!(store.current("Patient", "p2").unwrap(), None);
}
