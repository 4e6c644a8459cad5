//! Whole-database copies: offline compaction (rewritten with medvault's page size) and online
//! snapshots for backups.
//!
//! SQLite sets a file's page size when the file is created and cannot change it while the
//! file is in WAL mode, so a database an older medvault made keeps 4 KiB pages (and every
//! page it has ever freed). Compacting writes a fresh copy with [`PAGE_SIZE`] pages beside
//! it (`VACUUM INTO`) and then puts the copy in its place with one rename. The original's
//! contents are never changed (only its journal mode, which the server sets back to WAL
//! when it opens it), so a failure or a crash at any point leaves them as they were.
//!
//! A snapshot is the same `VACUUM INTO`, run beside a live server: one read transaction, so
//! the copy holds exactly the commits made before it began, whatever the server writes
//! meanwhile.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::{StoreError, PAGE_SIZE};

/// What [`compact`] found and made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compacted {
    pub page_size_before: u32,
    pub page_size_after: u32,
    /// The database's size in bytes, its WAL file included.
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Why a database could not be compacted or copied; the original's contents are unchanged
/// in every case.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error("no database at {0}")]
    Missing(PathBuf),
    #[error("{0} is not a medvault database")]
    NotMedvault(PathBuf),
    #[error("the database is in use (is `medvault serve` running on this data directory?); stop the server first")]
    InUse,
    #[error(
        "the database stayed locked for 10 s (is `medvault compact` running on it?); try again"
    )]
    Busy,
    #[error("{0} is not valid UTF-8, which SQLite needs for the copy's name")]
    NotUtf8(PathBuf),
    #[error("the copy could not be given the database's owner ({0}); run this as the user that owns the database")]
    Owner(std::io::Error),
    #[error("{0} already exists; give a new path")]
    Exists(PathBuf),
    #[error("not enough free disk space for a copy of the database")]
    Full,
    #[error("the copy failed SQLite's check ({0}); the original is unchanged")]
    CheckFailed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for MaintenanceError {
    fn from(e: rusqlite::Error) -> Self {
        let e = StoreError::from(e);
        match e.unavailable() {
            Some(crate::Unavailable::Busy) => MaintenanceError::InUse,
            Some(crate::Unavailable::Full) => MaintenanceError::Full,
            _ => MaintenanceError::Store(e),
        }
    }
}

impl From<std::io::Error> for MaintenanceError {
    fn from(e: std::io::Error) -> Self {
        match StoreError::from(e) {
            e if e.unavailable() == Some(crate::Unavailable::Full) => MaintenanceError::Full,
            e => MaintenanceError::Store(e),
        }
    }
}

/// Rewrite the database at `path` with [`PAGE_SIZE`] pages and no free pages. It must not
/// be open anywhere else: a running server makes this fail with [`MaintenanceError::InUse`].
/// Nothing may open it while this runs either (a connection opened meanwhile could go on
/// using the replaced file): `medvault compact` holds the data directory's lock, which a
/// server takes before it opens the database.
///
/// `progress(written, expected)` is called about every 200 ms while the copy is written,
/// with the copy's size so far and the size of the data it will hold (about its final size).
pub fn compact(
    path: &Path,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Compacted, MaintenanceError> {
    if !path.is_file() {
        return Err(MaintenanceError::Missing(path.to_path_buf()));
    }
    let bytes_before = size_with_wal(path)?;
    // Never created here: a mistyped path is an error, not a new empty database.
    // Fail at once if anyone else holds it, rather than wait for them.
    let conn = open_medvault(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE,
        std::time::Duration::ZERO,
    )?;
    // Leaving WAL mode needs the only connection: it fails while a server has the file
    // open. It folds the WAL into the file and removes it, so no old WAL can later be
    // taken for the new file's. The exclusive lock then keeps every other connection out
    // until this one closes, after the rename. (Should anything fail from here on, the
    // original is left in rollback-journal mode, which the server turns back to WAL when it
    // next opens it.)
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(MaintenanceError::InUse);
    }
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
    conn.execute_batch("BEGIN EXCLUSIVE; COMMIT;")?;
    let page_size_before: u32 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let pages: u64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let free: u64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    let expected = pages.saturating_sub(free) * u64::from(page_size_before);

    let copy = sibling(path, "compacting");
    // A copy a crash left behind is stale, with any journal of its own; VACUUM INTO
    // refuses an existing file.
    for stale in [
        sibling(&copy, "journal"),
        sibling(&copy, "wal"),
        copy.clone(),
    ] {
        remove_if_exists(&stale)?;
    }
    let result = watch_size(&copy, expected, progress, || write_copy(&conn, path, &copy)).and_then(
        |page_size_after| {
            // The copy is complete and on disk: it takes the original's name in one step.
            std::fs::rename(&copy, path)?;
            sync_dir(path)?;
            Ok(page_size_after)
        },
    );
    if result.is_err() {
        let _ = std::fs::remove_file(&copy);
    }
    let page_size_after = result?;
    // Releases the lock on the original's (now unnamed) file.
    drop(conn);
    Ok(Compacted {
        page_size_before,
        page_size_after,
        bytes_before,
        bytes_after: size_with_wal(path)?,
    })
}

/// What [`snapshot`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub bytes: u64,
    /// Resource versions in the copy.
    pub versions: u64,
}

/// Write a consistent copy of the database at `db` to `out` (a new file), while a server
/// may be using it: the commits made before the copy began, and none after. The copy is
/// checked and synced before it takes its name, so `out` either does not exist or is whole.
/// `progress` as for [`compact`].
pub fn snapshot(
    db: &Path,
    out: &Path,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Snapshot, MaintenanceError> {
    if !db.is_file() {
        return Err(MaintenanceError::Missing(db.to_path_buf()));
    }
    if out.exists() {
        return Err(MaintenanceError::Exists(out.to_path_buf()));
    }
    // The server's writes hold the lock only for a commit; wait that out.
    let conn = open_medvault(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE,
        std::time::Duration::from_secs(10),
    )
    .map_err(busy)?;
    let page_size: u64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let pages: u64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let free: u64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    let partial = sibling(out, "partial");
    remove_if_exists(&partial)?;
    let expected = pages.saturating_sub(free) * page_size;
    let result = watch_size(
        &partial,
        expected,
        progress,
        || -> Result<u64, MaintenanceError> {
            conn.execute("VACUUM INTO ?", [utf8(&partial)?])
                .map_err(|e| busy(e.into()))?;
            let versions = check_copy(&partial)?;
            std::fs::File::open(&partial)?.sync_all()?;
            std::fs::rename(&partial, out)?;
            sync_dir(out)?;
            Ok(versions)
        },
    );
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    Ok(Snapshot {
        versions: result?,
        bytes: std::fs::metadata(out)?.len(),
    })
}

/// For a snapshot beside a live server, whose commits are short: a lock held past the
/// timeout is someone else's (a compaction), so say so rather than ask for the server to
/// be stopped.
fn busy(e: MaintenanceError) -> MaintenanceError {
    match e {
        MaintenanceError::InUse => MaintenanceError::Busy,
        e => e,
    }
}

/// Open an existing medvault database (never creating one), or say why not. `busy`: how
/// long to wait out another connection's lock, from the first read on.
fn open_medvault(
    path: &Path,
    flags: OpenFlags,
    busy: std::time::Duration,
) -> Result<Connection, MaintenanceError> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(busy)?;
    let schema: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let has_versions: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = 'resource_version'",
        [],
        |r| r.get(0),
    )?;
    if schema < 1 || !has_versions {
        return Err(MaintenanceError::NotMedvault(path.to_path_buf()));
    }
    Ok(conn)
}

fn quick_check(conn: &Connection) -> Result<(), MaintenanceError> {
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(MaintenanceError::CheckFailed(check));
    }
    Ok(())
}

fn utf8(path: &Path) -> Result<&str, MaintenanceError> {
    path.to_str()
        .ok_or_else(|| MaintenanceError::NotUtf8(path.to_path_buf()))
}

/// `VACUUM INTO` a new file with [`PAGE_SIZE`] pages, then check it, give it the
/// original's owner and mode, and sync it. Returns the copy's page size.
fn write_copy(conn: &Connection, original: &Path, copy: &Path) -> Result<u32, MaintenanceError> {
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    conn.execute("VACUUM INTO ?", [utf8(copy)?])?;
    let out = Connection::open_with_flags(copy, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    quick_check(&out)?;
    let page_size: u32 = out.pragma_query_value(None, "page_size", |r| r.get(0))?;
    // Stored in the header: the copy is a WAL database like the one it replaces. Closing
    // the only connection folds that (empty) WAL back and removes it.
    out.pragma_update(None, "journal_mode", "WAL")?;
    out.close().map_err(|(_, e)| e)?;
    // The server's user must be able to open it as it did the original (this may run as
    // root on a file that user owns).
    same_owner_and_mode(original, copy)?;
    // VACUUM INTO does not sync what it writes.
    std::fs::File::open(copy)?.sync_all()?;
    Ok(page_size)
}

/// Run `work`, reporting `file`'s size against `expected` every 200 ms until it returns.
fn watch_size<T>(
    file: &Path,
    expected: u64,
    progress: &(dyn Fn(u64, u64) + Sync),
    work: impl FnOnce() -> T,
) -> T {
    let done = std::sync::atomic::AtomicBool::new(false);
    let wake = std::sync::Condvar::new();
    let lock = std::sync::Mutex::new(());
    // Stops the watcher however `work` ends (a panic too, or the scope would wait forever).
    struct Stop<'a>(
        &'a std::sync::atomic::AtomicBool,
        &'a std::sync::Condvar,
        &'a std::sync::Mutex<()>,
    );
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            {
                let _guard = self.2.lock().unwrap_or_else(|e| e.into_inner());
                self.0.store(true, std::sync::atomic::Ordering::Release);
            }
            self.1.notify_all();
        }
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                progress(std::fs::metadata(file).map_or(0, |m| m.len()), expected);
                guard = wake
                    .wait_timeout(guard, std::time::Duration::from_millis(200))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        });
        let _stop = Stop(&done, &wake, &lock);
        work()
    })
}

/// Give `copy` the owner, group and permission bits of `original`.
fn same_owner_and_mode(original: &Path, copy: &Path) -> Result<(), MaintenanceError> {
    let meta = std::fs::metadata(original)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let mine = std::fs::metadata(copy)?;
        if (mine.uid(), mine.gid()) != (meta.uid(), meta.gid()) {
            std::os::unix::fs::chown(copy, Some(meta.uid()), Some(meta.gid()))
                .map_err(MaintenanceError::Owner)?;
        }
    }
    std::fs::set_permissions(copy, meta.permissions())?;
    Ok(())
}

/// `medvault.db` → `medvault.db-<suffix>`, in the same directory (so a rename is atomic):
/// how SQLite names a database's WAL and journal, and how medvault names its copies.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push("-");
    name.push(suffix);
    path.with_file_name(name)
}

fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn size_with_wal(path: &Path) -> std::io::Result<u64> {
    let wal = std::fs::metadata(sibling(path, "wal")).map_or(0, |m| m.len());
    Ok(std::fs::metadata(path)?.len() + wal)
}

/// Make a rename in `path`'s directory durable.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => std::fs::File::open(".")?.sync_all(),
    }
}

/// Check a copy made by [`snapshot`] (as a restore does before using it): a medvault
/// database that passes SQLite's `quick_check`. Returns its number of resource versions.
pub fn check_copy(path: &Path) -> Result<u64, MaintenanceError> {
    if !path.is_file() {
        return Err(MaintenanceError::Missing(path.to_path_buf()));
    }
    // Read-only: checking a backup never changes it (not even by rolling back a journal).
    let conn = open_medvault(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY,
        std::time::Duration::ZERO,
    )?;
    quick_check(&conn)?;
    Ok(conn.query_row("SELECT count(*) FROM resource_version", [], |r| r.get(0))?)
}
