//! Whole-database copies. Offline compaction: a database an older medvault made (4 KiB
//! pages, WAL mode, its last commits still in the WAL after a crash) comes out with
//! medvault's page size and all it held; it is refused while the database is open, and for
//! anything not a medvault database. Online snapshots: whole commits only, while a writer
//! goes on.

use std::path::{Path, PathBuf};

use medvault_store::{
    compact, snapshot, MaintenanceError, SqliteStore, Store, StoreQuery, PAGE_SIZE,
};

use crate::common::{create, db_path, ids, raw, tok};

const PATIENTS: usize = 300;

fn page_size(path: &Path) -> i64 {
    raw(path)
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap()
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}-{suffix}", path.display()))
}

/// A store on an older medvault's file: SQLite's default 4 KiB pages, in WAL mode.
fn old_store(path: &Path) -> SqliteStore {
    raw(path)
        .pragma_update(None, "journal_mode", "WAL")
        .unwrap();
    assert_eq!(page_size(path), 4096);
    let store = SqliteStore::open(path).unwrap();
    for i in 0..PATIENTS {
        let n = u8::try_from(i % 200).unwrap();
        store
            .write(&[create("Patient", &format!("p{i}"), 1, &[tok(n)])])
            .unwrap();
    }
    store
}

/// Every patient `old_store` wrote, read through a store.
fn all_patients(store: &SqliteStore) -> usize {
    store
        .search_all(&StoreQuery {
            rtype: "Patient".into(),
            all_of: vec![],
            ids: None,
            updated_from_ms: None,
            updated_until_ms: None,
        })
        .unwrap()
        .len()
}

#[test]
fn an_old_database_left_by_a_crash_comes_out_with_large_pages_and_everything_in_it() {
    let dir = tempfile::tempdir().unwrap();
    let live = db_path(&dir);
    let store = old_store(&live);
    // The files as a killed server leaves them: the commits are in the WAL, not yet in
    // the database file.
    let crashed = dir.path().join("crashed");
    std::fs::create_dir(&crashed).unwrap();
    let path = crashed.join("medvault.db");
    std::fs::copy(&live, &path).unwrap();
    std::fs::copy(sibling(&live, "wal"), sibling(&path, "wal")).unwrap();
    drop(store);
    assert!(std::fs::metadata(sibling(&path, "wal")).unwrap().len() > 0);
    #[cfg(unix)]
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        || std::fs::metadata(&path).unwrap().permissions().mode() & 0o777
    };
    // A copy a crashed compaction left behind is not taken for the new one, nor its
    // journal or WAL applied to it.
    std::fs::write(sibling(&path, "compacting"), b"half a copy").unwrap();
    std::fs::write(sibling(&path, "compacting-journal"), b"stale").unwrap();
    std::fs::write(sibling(&path, "compacting-wal"), b"stale").unwrap();

    let calls = std::sync::Mutex::new(Vec::new());
    let done = compact(&path, &|written, expected| {
        calls.lock().unwrap().push((written, expected));
    })
    .unwrap();
    assert_eq!(done.page_size_before, 4096);
    assert_eq!(done.page_size_after, PAGE_SIZE);
    assert!(done.bytes_before > 0 && done.bytes_after > 0, "{done:?}");
    for (written, expected) in calls.into_inner().unwrap() {
        assert!(
            expected > 0 && written <= 4 * expected,
            "{written} of {expected}"
        );
    }

    assert_eq!(page_size(&path), i64::from(PAGE_SIZE));
    #[cfg(unix)]
    assert_eq!(mode(), 0o640, "the original's permissions");
    let conn = raw(&path);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    for leftover in [
        "compacting",
        "compacting-wal",
        "compacting-journal",
        "journal",
        "wal",
        "shm",
    ] {
        assert!(!sibling(&path, leftover).exists(), "{leftover} left behind");
    }

    // Everything, the WAL's commits included, through the store; and it takes new writes.
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(all_patients(&store), PATIENTS);
    let last = store
        .current("Patient", &format!("p{}", PATIENTS - 1))
        .unwrap();
    assert!(last.is_some());
    store
        .write(&[create("Patient", "after", 2, &[tok(250)])])
        .unwrap();
    let found = store
        .search_all(&StoreQuery {
            rtype: "Patient".into(),
            all_of: vec![vec![tok(250)]],
            ids: None,
            updated_from_ms: None,
            updated_until_ms: None,
        })
        .unwrap();
    assert_eq!(ids(&found), ["after"]);
}

#[test]
fn an_open_database_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = old_store(&path);
    let refused = compact(&path, &|_, _| {});
    assert!(
        matches!(refused, Err(MaintenanceError::InUse)),
        "{refused:?}"
    );
    assert!(!sibling(&path, "compacting").exists());
    // The server that has it open goes on as before.
    store
        .write(&[create("Patient", "still", 2, &[tok(251)])])
        .unwrap();
    assert_eq!(all_patients(&store), PATIENTS + 1);
    drop(store);
    assert_eq!(page_size(&path), 4096);

    // An idle connection is enough to refuse it: once it has read, a connection to a WAL
    // database keeps a shared lock, which leaving WAL mode needs gone.
    let idle = raw(&path);
    let n: i64 = idle
        .query_row("SELECT count(*) FROM resource_version", [], |r| r.get(0))
        .unwrap();
    let refused = compact(&path, &|_, _| {});
    assert!(
        matches!(refused, Err(MaintenanceError::InUse)),
        "{refused:?}"
    );
    let mode: String = idle
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(idle);
    assert_eq!(page_size(&path), 4096);
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(all_patients(&store), usize::try_from(n).unwrap());
}

#[test]
fn a_missing_or_foreign_file_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let missing = compact(&path, &|_, _| {});
    assert!(
        matches!(missing, Err(MaintenanceError::Missing(_))),
        "{missing:?}"
    );
    assert!(!path.exists(), "a database was created");

    let conn = raw(&path);
    conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');")
        .unwrap();
    drop(conn);
    let foreign = compact(&path, &|_, _| {});
    assert!(
        matches!(foreign, Err(MaintenanceError::NotMedvault(_))),
        "{foreign:?}"
    );
    assert_eq!(page_size(&path), 4096);
    let body: String = raw(&path)
        .query_row("SELECT body FROM notes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(body, "mine");
}

/// A snapshot taken while another thread commits two versions at a time holds whole
/// commits only (an even number of versions), opens as a store, and leaves the live
/// database to go on.
#[test]
fn a_snapshot_beside_a_writer_holds_whole_commits_and_opens_as_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let store = SqliteStore::open(&path).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let out = dir.path().join("backup.db");
    let taken = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || i < 400 {
                store
                    .write(&[
                        create("Patient", &format!("a{i}"), 1, &[tok(1)]),
                        create("Patient", &format!("b{i}"), 1, &[tok(2)]),
                    ])
                    .unwrap();
                i += 1;
            }
            i
        });
        // Once some commits are in, copy while they go on.
        while all_patients(&store) < 200 {
            std::thread::yield_now();
        }
        let taken = snapshot(&path, &out, &|_, _| {}).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let written = writer.join().unwrap();
        assert!(taken.versions <= u64::from(written) * 2);
        taken
    });
    assert!(
        taken.versions >= 200 && taken.versions % 2 == 0,
        "{taken:?}"
    );
    assert_eq!(taken.bytes, std::fs::metadata(&out).unwrap().len());
    assert!(!sibling(&out, "partial").exists());
    // The copy is a database of its own: a store opens it and finds what it counted.
    let copy = SqliteStore::open(&out).unwrap();
    assert_eq!(all_patients(&copy) as u64, taken.versions);
    assert!(all_patients(&store) as u64 >= taken.versions);

    // Never over an existing file, and never from a missing one.
    let again = snapshot(&path, &out, &|_, _| {});
    assert!(
        matches!(again, Err(MaintenanceError::Exists(_))),
        "{again:?}"
    );
    let none = snapshot(
        &dir.path().join("none.db"),
        &dir.path().join("x.db"),
        &|_, _| {},
    );
    assert!(
        matches!(none, Err(MaintenanceError::Missing(_))),
        "{none:?}"
    );
    assert!(!dir.path().join("x.db").exists());
}
