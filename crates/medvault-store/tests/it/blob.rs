//! Large envelopes: `Body::Blob` references through the store and the `BlobStore` itself.

use std::sync::Arc;

use medvault_store::{BlobStore, Body, Store, StoreError};

use crate::common::{create, db_path, open_store, raw, tok, update};

const THRESHOLD: usize = 256 * 1024;

#[test]
fn blob_reference_round_trips_through_the_row() {
    let (dir, store) = open_store();
    let mut nv = create("Binary", "big", 10, &[tok(1)]);
    nv.record.body = Some(Body::Blob("envelopes/Binary/big/1".into()));
    store.write(std::slice::from_ref(&nv)).unwrap();

    let current = store.current("Binary", "big").unwrap().unwrap();
    assert_eq!(current, nv.record);
    assert!(!current.is_deleted());
    assert_eq!(
        store.version("Binary", "big", 1).unwrap(),
        Some(nv.record.clone())
    );
    assert_eq!(
        store
            .search_all(&medvault_store::StoreQuery {
                rtype: "Binary".into(),
                all_of: vec![vec![tok(1)]],
                ..Default::default()
            })
            .unwrap(),
        vec![nv.record.clone()]
    );

    // On disk: no inline body, the name in blob_ref, and not marked deleted.
    let (body, blob_ref, deleted): (Option<Vec<u8>>, Option<String>, i64) = raw(&db_path(&dir))
        .query_row(
            "SELECT body, blob_ref, deleted FROM resource_version WHERE rtype = 'Binary' AND id = 'big'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(body, None);
    assert_eq!(blob_ref.as_deref(), Some("envelopes/Binary/big/1"));
    assert_eq!(deleted, 0);

    // Switching between blob and inline bodies across versions keeps each version's own.
    store.write(&[update("Binary", "big", 2, 20, &[])]).unwrap();
    assert!(matches!(
        store.current("Binary", "big").unwrap().unwrap().body,
        Some(Body::Inline(_))
    ));
    assert_eq!(
        store.version("Binary", "big", 1).unwrap().unwrap().body,
        Some(Body::Blob("envelopes/Binary/big/1".into()))
    );
    let history = store.history("Binary", Some("big"), 0, 10).unwrap();
    assert_eq!(history.records[1], nv.record);
}

#[test]
fn wants_switches_at_the_threshold() {
    assert!(!BlobStore::wants(0));
    assert!(!BlobStore::wants(1024));
    assert!(!BlobStore::wants(THRESHOLD - 1));
    assert!(BlobStore::wants(THRESHOLD));
    assert!(BlobStore::wants(THRESHOLD + 1));
    assert!(BlobStore::wants(64 * 1024 * 1024));
}

#[tokio::test]
async fn local_put_get_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    // The directory does not exist yet: `local` creates it.
    let root = dir.path().join("blobs/nested");
    let blobs = BlobStore::local(&root).unwrap();
    assert!(root.is_dir());

    let big: Vec<u8> = (0..THRESHOLD + 12345)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    blobs
        .put("envelopes/Binary/big/1", big.clone())
        .await
        .unwrap();
    assert_eq!(blobs.get("envelopes/Binary/big/1").await.unwrap(), big);

    // The object is a real file under the directory.
    let on_disk = root.join("envelopes/Binary/big/1");
    assert_eq!(std::fs::read(&on_disk).unwrap(), big);

    // Small and empty objects, and overwriting.
    blobs.put("small", b"abc".to_vec()).await.unwrap();
    blobs.put("empty", Vec::new()).await.unwrap();
    assert_eq!(blobs.get("small").await.unwrap(), b"abc");
    assert!(blobs.get("empty").await.unwrap().is_empty());
    blobs.put("small", b"xyz!".to_vec()).await.unwrap();
    assert_eq!(blobs.get("small").await.unwrap(), b"xyz!");

    // A second handle on the same directory (e.g. after a restart) sees the objects.
    let again = BlobStore::local(&root).unwrap();
    assert_eq!(again.get("envelopes/Binary/big/1").await.unwrap(), big);
}

#[tokio::test]
async fn local_get_of_a_missing_object_is_a_blob_error() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::local(dir.path()).unwrap();
    match blobs.get("no/such/object").await {
        Err(StoreError::Blob(_)) => {}
        other => panic!("expected a blob error, got {other:?}"),
    }
}

#[test]
fn local_blob_store_works_from_a_multi_thread_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::local(dir.path()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let got = rt.block_on(async {
        let handles: Vec<_> = (0..8u8)
            .map(|i| {
                let blobs = blobs.clone();
                tokio::spawn(async move {
                    blobs.put(&format!("obj/{i}"), vec![i; 1000]).await.unwrap();
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        let mut got = Vec::new();
        for i in 0..8u8 {
            got.push(blobs.get(&format!("obj/{i}")).await.unwrap());
        }
        got
    });
    for (i, bytes) in got.into_iter().enumerate() {
        assert_eq!(bytes, vec![i as u8; 1000]);
    }
}

#[tokio::test]
async fn any_object_store_backend() {
    let blobs = BlobStore::from_object_store(Arc::new(object_store::memory::InMemory::new()));
    blobs.put("a/b", vec![1, 2, 3]).await.unwrap();
    assert_eq!(blobs.get("a/b").await.unwrap(), vec![1, 2, 3]);
    assert!(matches!(blobs.get("a/c").await, Err(StoreError::Blob(_))));
}
