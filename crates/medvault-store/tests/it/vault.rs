//! The vault row: init, read back, AlreadyInitialized, and generation-checked replacement.

use medvault_store::{SqliteStore, Store, StoreError, VaultRecord};

use crate::common::{assert_conflict, db_path, open_store, raw, vault_record};

fn bootstrap_row(path: &std::path::Path) -> (Vec<u8>, i64) {
    raw(path)
        .query_row("SELECT token_hash, used FROM bootstrap_token", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
}

#[test]
fn init_then_read_round_trips_every_field() {
    let (dir, store) = open_store();
    assert_eq!(store.vault().unwrap(), None);

    let vault = VaultRecord {
        set_id: [0, 1, 2, 3, 0xFD, 0xFE, 0xFF, 0x80],
        threshold: 255,
        share_count: 255,
        check_value: std::array::from_fn(|i| i as u8),
        keyring: (0..=255u8).cycle().take(4096).collect(),
        commitments: vec![
            (1, [0x11; 32]),
            (2, [0x22; 32]),
            (200, [0xEE; 32]),
            (255, [0xFF; 32]),
        ],
        generation: 41,
    };
    store.init_vault(&vault, &[0xAB; 32]).unwrap();
    assert_eq!(store.vault().unwrap(), Some(vault));
    assert_eq!(bootstrap_row(&db_path(&dir)), (vec![0xAB; 32], 0));
}

#[test]
fn commitments_come_back_ordered_by_x() {
    let (_dir, store) = open_store();
    let mut vault = vault_record(1, &[5, 1, 3]);
    store.init_vault(&vault, &[0; 32]).unwrap();
    vault.commitments.sort_by_key(|(x, _)| *x);
    assert_eq!(store.vault().unwrap(), Some(vault));
}

#[test]
fn second_init_is_already_initialized_and_changes_nothing() {
    let (dir, store) = open_store();
    let first = vault_record(1, &[1, 2, 3]);
    store.init_vault(&first, &[1; 32]).unwrap();

    let second = vault_record(7, &[4, 5]);
    match store.init_vault(&second, &[2; 32]) {
        Err(StoreError::AlreadyInitialized) => {}
        other => panic!("expected AlreadyInitialized, got {other:?}"),
    }
    assert_eq!(store.vault().unwrap(), Some(first));
    assert_eq!(bootstrap_row(&db_path(&dir)), (vec![1; 32], 0));
}

#[test]
fn replace_before_init_is_a_conflict() {
    let (_dir, store) = open_store();
    assert_conflict(store.replace_vault(&vault_record(1, &[1]), 0));
    assert_eq!(store.vault().unwrap(), None);
}

#[test]
fn replace_with_wrong_expected_generation_changes_nothing() {
    let (_dir, store) = open_store();
    let original = vault_record(3, &[1, 2, 3]);
    store.init_vault(&original, &[0; 32]).unwrap();

    // Expected generation behind and ahead of the stored one, each with a record that
    // would otherwise be consistent (expected + 1).
    assert_conflict(store.replace_vault(&vault_record(3, &[9]), 2));
    assert_conflict(store.replace_vault(&vault_record(5, &[9]), 4));
    assert_eq!(store.vault().unwrap(), Some(original));
}

#[test]
fn replace_with_record_not_at_expected_plus_one_changes_nothing() {
    let (_dir, store) = open_store();
    let original = vault_record(3, &[1, 2, 3]);
    store.init_vault(&original, &[0; 32]).unwrap();

    for generation in [3, 5, 2, 0] {
        assert_conflict(store.replace_vault(&vault_record(generation, &[9]), 3));
    }
    assert_eq!(store.vault().unwrap(), Some(original));
}

#[test]
fn correct_replace_swaps_record_and_commitments() {
    let (dir, store) = open_store();
    store
        .init_vault(&vault_record(1, &[1, 2, 3, 4, 5]), &[7; 32])
        .unwrap();

    let next = vault_record(2, &[2, 9]);
    store.replace_vault(&next, 1).unwrap();
    // The old set's commitments (1, 3, 4, 5) are gone, not merged.
    assert_eq!(store.vault().unwrap(), Some(next.clone()));
    // The bootstrap token is not part of the vault row and survives.
    assert_eq!(bootstrap_row(&db_path(&dir)), (vec![7; 32], 0));

    // A second writer still holding generation 1 loses.
    assert_conflict(store.replace_vault(&vault_record(2, &[1]), 1));
    assert_eq!(store.vault().unwrap(), Some(next));

    // And the chain continues from 2, persisting across a reopen.
    let third = vault_record(3, &[]);
    store.replace_vault(&third, 2).unwrap();
    drop(store);
    let store = SqliteStore::open(&db_path(&dir)).unwrap();
    assert_eq!(store.vault().unwrap(), Some(third));
}
