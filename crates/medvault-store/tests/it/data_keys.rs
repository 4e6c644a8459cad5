//! Wrapped data keys: insert-if-absent, lookup, listing by KEK version, rewrap, version counts.

use medvault_store::{DataKeyRecord, Store};

use crate::common::open_store;

fn key(owner: &str, kek_version: u32, wrapped: &str) -> DataKeyRecord {
    DataKeyRecord {
        owner: owner.as_bytes().to_vec(),
        kek_version,
        wrapped: wrapped.as_bytes().to_vec(),
    }
}

fn owners(keys: &[DataKeyRecord]) -> Vec<String> {
    let mut o: Vec<String> = keys
        .iter()
        .map(|k| String::from_utf8(k.owner.clone()).unwrap())
        .collect();
    o.sort();
    o
}

#[test]
fn insert_then_lookup() {
    let (_dir, store) = open_store();
    assert_eq!(store.data_key(b"alice").unwrap(), None);

    let k = key("alice", 1, "wrapped-alice-v1");
    assert_eq!(store.insert_data_key(&k).unwrap(), k);
    assert_eq!(store.data_key(b"alice").unwrap(), Some(k));
    assert_eq!(store.data_key(b"bob").unwrap(), None);
}

#[test]
fn second_insert_returns_the_existing_key() {
    let (_dir, store) = open_store();
    let first = key("alice", 1, "first-wrapping");
    store.insert_data_key(&first).unwrap();

    let loser = key("alice", 2, "second-wrapping");
    assert_eq!(store.insert_data_key(&loser).unwrap(), first);
    assert_eq!(store.data_key(b"alice").unwrap(), Some(first));
    assert_eq!(store.data_key_versions().unwrap(), vec![(1, 1)]);
}

#[test]
fn binary_owner_tokens_are_distinct_keys() {
    let (_dir, store) = open_store();
    let a = DataKeyRecord {
        owner: vec![0, 0, 1],
        kek_version: 1,
        wrapped: vec![1],
    };
    let b = DataKeyRecord {
        owner: vec![0, 0, 1, 0],
        kek_version: 1,
        wrapped: vec![2],
    };
    assert_eq!(store.insert_data_key(&a).unwrap(), a);
    assert_eq!(store.insert_data_key(&b).unwrap(), b);
    assert_eq!(store.data_key(&[0, 0, 1]).unwrap(), Some(a));
    assert_eq!(store.data_key(&[0, 0, 1, 0]).unwrap(), Some(b));
}

#[test]
fn keys_not_at_version_respects_version_and_limit() {
    let (_dir, store) = open_store();
    for (owner, v) in [("a", 1), ("b", 1), ("c", 2), ("d", 3)] {
        store
            .insert_data_key(&key(owner, v, &format!("w-{owner}")))
            .unwrap();
    }

    let not2 = store.data_keys_not_at_version(2, 10).unwrap();
    assert_eq!(owners(&not2), ["a", "b", "d"]);
    for k in &not2 {
        let owner = String::from_utf8(k.owner.clone()).unwrap();
        assert_eq!(k.wrapped, format!("w-{owner}").into_bytes());
        assert_ne!(k.kek_version, 2);
    }

    assert_eq!(
        owners(&store.data_keys_not_at_version(4, 10).unwrap()),
        ["a", "b", "c", "d"]
    );
    assert_eq!(store.data_keys_not_at_version(1, 1).unwrap().len(), 1);
    assert_eq!(store.data_keys_not_at_version(2, 2).unwrap().len(), 2);
    assert!(store.data_keys_not_at_version(2, 0).unwrap().is_empty());
}

#[test]
fn rewrap_only_if_still_at_expected_version() {
    let (_dir, store) = open_store();
    store.insert_data_key(&key("a", 1, "a-v1")).unwrap();
    store.insert_data_key(&key("b", 1, "b-v1")).unwrap();

    let a2 = key("a", 2, "a-v2");
    assert!(store.rewrap_data_key(&a2, 1).unwrap());
    assert_eq!(store.data_key(b"a").unwrap(), Some(a2.clone()));

    // A concurrent rotation that still thinks "a" is at version 1 must not overwrite.
    assert!(!store
        .rewrap_data_key(&key("a", 3, "a-v3-stale"), 1)
        .unwrap());
    assert_eq!(store.data_key(b"a").unwrap(), Some(a2));

    // Unknown owner: nothing to rewrap, nothing created.
    assert!(!store.rewrap_data_key(&key("zed", 2, "zed"), 1).unwrap());
    assert_eq!(store.data_key(b"zed").unwrap(), None);

    // "b" was untouched.
    assert_eq!(store.data_key(b"b").unwrap(), Some(key("b", 1, "b-v1")));
}

#[test]
fn version_counts_follow_a_rotation() {
    let (_dir, store) = open_store();
    assert_eq!(store.data_key_versions().unwrap(), Vec::<(u32, u64)>::new());

    for owner in ["a", "b", "c", "d", "e"] {
        store.insert_data_key(&key(owner, 3, owner)).unwrap();
    }
    store.insert_data_key(&key("f", 1, "f")).unwrap();
    assert_eq!(store.data_key_versions().unwrap(), vec![(1, 1), (3, 5)]);

    // Rotate everything to version 4 in batches of two, as a rotation job would.
    let mut rounds = 0;
    loop {
        let batch = store.data_keys_not_at_version(4, 2).unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 2);
        for old in batch {
            let new = DataKeyRecord {
                kek_version: 4,
                wrapped: [old.wrapped.as_slice(), b"-v4"].concat(),
                ..old.clone()
            };
            assert!(store.rewrap_data_key(&new, old.kek_version).unwrap());
        }
        rounds += 1;
        assert!(rounds <= 3, "rotation did not converge");
    }
    assert_eq!(store.data_key_versions().unwrap(), vec![(4, 6)]);
    assert_eq!(store.data_key(b"f").unwrap(), Some(key("f", 4, "f-v4")));
}
