//! Offline compaction: a database an older medvault made (4 KiB pages, WAL mode, its last
//! commits still in the WAL after a crash) comes out with medvault's page size and all it
//! held; it is refused while the database is open, and for anything not a medvault database.

use std::path::{Path, PathBuf};

use medvault_store::{compact, CompactError, SqliteStore, Store, StoreQuery, PAGE_SIZE};

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
    // A copy a crashed compaction left behind is not taken for the new one.
    std::fs::write(sibling(&path, "compacting"), b"half a copy").unwrap();

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
    for leftover in ["compacting", "compacting-wal", "journal"] {
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
    assert!(matches!(refused, Err(CompactError::InUse)), "{refused:?}");
    assert!(!sibling(&path, "compacting").exists());
    // The server that has it open goes on as before.
    store
        .write(&[create("Patient", "still", 2, &[tok(251)])])
        .unwrap();
    assert_eq!(all_patients(&store), PATIENTS + 1);
    drop(store);
    assert_eq!(page_size(&path), 4096);

    // An idle connection, holding no lock at the time, is enough to refuse it.
    let idle = raw(&path);
    let n: i64 = idle
        .query_row("SELECT count(*) FROM resource_version", [], |r| r.get(0))
        .unwrap();
    let refused = compact(&path, &|_, _| {});
    assert!(matches!(refused, Err(CompactError::InUse)), "{refused:?}");
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
        matches!(missing, Err(CompactError::Missing(_))),
        "{missing:?}"
    );
    assert!(!path.exists(), "a database was created");

    let conn = raw(&path);
    conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');")
        .unwrap();
    drop(conn);
    let foreign = compact(&path, &|_, _| {});
    assert!(
        matches!(foreign, Err(CompactError::NotMedvault(_))),
        "{foreign:?}"
    );
    assert_eq!(page_size(&path), 4096);
    let body: String = raw(&path)
        .query_row("SELECT body FROM notes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(body, "mine");
}
