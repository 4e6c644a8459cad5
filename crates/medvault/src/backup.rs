//! Data-directory maintenance from the CLI: `backup` (online), `restore` and `compact`
//! (offline, the server stopped).
//!
//! A backup is a new directory laid out as a data directory: a consistent snapshot of the
//! database, a copy of the blob store, and `medvault-backup.json`, written last, which says
//! the backup is complete. It holds only what the data directory holds at rest (ciphertext,
//! blind indexes, wrapped keys), never a key share: restoring it needs the key shares the
//! vault had when it was taken.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use medvault_server::{DataDir, DataDirLock};
use medvault_store::sibling;
use serde_json::{json, Value};

/// The file that marks a complete backup (written after everything else).
const MANIFEST: &str = "medvault-backup.json";
/// This format's version in the manifest.
const FORMAT: u64 = 1;

fn bytes_bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{bytes}}/{{total_bytes}} ({{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `medvault backup`: copy a data directory, while its server runs, into `to` (new or
/// empty).
pub fn backup(data_dir: &Path, to: &Path) -> Result<()> {
    let db = DataDir::database_path(data_dir);
    if !db.is_file() {
        bail!("no database at {}", db.display());
    }
    // Before the lock creates it (a mistyped path is refused untouched), and again after.
    refuse_non_empty(to)?;
    // The backup is laid out as a data directory, and held like one while it is written
    // (no server can start on it meanwhile).
    let _lock = DataDirLock::acquire(to)?;
    refuse_non_empty(to)?;
    let bar = bytes_bar("database");
    let snap = medvault_store::snapshot(&db, &DataDir::database_path(to), &|written, expected| {
        bar.set_length(expected.max(written));
        bar.set_position(written);
    })
    .map_err(|e| anyhow!("{e}"))?;
    bar.finish_and_clear();
    // Blobs are written before the rows that name them and never removed, so every blob
    // the snapshot names is there to copy now.
    let blobs = copy_tree(&data_dir.join("blobs"), &to.join("blobs"))?;
    let manifest = json!({
        "format": FORMAT,
        "created_ms": now_ms(),
        "medvault": env!("CARGO_PKG_VERSION"),
        "database_bytes": snap.bytes,
        "resource_versions": snap.versions,
        "blobs": blobs,
    });
    write_durably(&to.join(MANIFEST), manifest.to_string().as_bytes())?;
    println!(
        "backed up {} to {}: {} resource versions ({:.1} MiB database), {blobs} blobs",
        data_dir.display(),
        to.display(),
        snap.versions,
        mib(snap.bytes)
    );
    println!(
        "it holds ciphertext and wrapped keys only: restoring it needs the key shares the vault has now (keep them even after a rekey)"
    );
    if data_dir.join(crate::DEV_SHARE_FILE).exists() {
        println!("the dev-mode share file was not copied (a backup never holds a key share)");
    }
    Ok(())
}

/// Refuse a backup target that exists and holds anything but a lock file (which a failed
/// backup leaves behind: its target can be used again).
fn refuse_non_empty(to: &Path) -> Result<()> {
    if !to.exists() {
        return Ok(());
    }
    for entry in
        std::fs::read_dir(to).with_context(|| format!("{} is not a directory", to.display()))?
    {
        if entry?.file_name() != medvault_server::LOCK_FILE {
            bail!(
                "{} already exists and is not empty; back up into a new directory",
                to.display()
            );
        }
    }
    Ok(())
}

/// `medvault restore`: make a new data directory from a backup (the server stopped).
pub fn restore(from: &Path, data_dir: &Path) -> Result<()> {
    let manifest = std::fs::read(from.join(MANIFEST)).map_err(|_| {
        anyhow!(
            "{} is not a complete medvault backup (it has no {MANIFEST})",
            from.display()
        )
    })?;
    let manifest: Value = serde_json::from_slice(&manifest)
        .map_err(|_| anyhow!("{} is damaged", from.join(MANIFEST).display()))?;
    if manifest["format"].as_u64() != Some(FORMAT) {
        bail!(
            "{} is in a backup format this medvault does not read ({})",
            from.display(),
            manifest["format"]
        );
    }
    let versions = medvault_store::check_copy(&DataDir::database_path(from))
        .map_err(|e| anyhow!("the backup's database: {e}"))?;
    if Some(versions) != manifest["resource_versions"].as_u64() {
        bail!(
            "the backup's database holds {versions} resource versions, its manifest says {}",
            manifest["resource_versions"]
        );
    }
    let mut backed_up = Vec::new();
    list_files(&from.join("blobs"), Path::new(""), &mut backed_up)?;
    if Some(backed_up.len() as u64) != manifest["blobs"].as_u64() {
        bail!(
            "the backup holds {} blobs, its manifest says {}: it is incomplete",
            backed_up.len(),
            manifest["blobs"]
        );
    }
    let _lock = DataDirLock::acquire(data_dir)?;
    let db = DataDir::database_path(data_dir);
    refuse_existing_database(data_dir)?;
    // Blobs first and the database last: until the database is in place the directory
    // holds no data, and an interrupted restore can simply be run again.
    let blobs = copy_tree(&from.join("blobs"), &data_dir.join("blobs"))?;
    let partial = sibling(&db, "restoring");
    std::fs::copy(DataDir::database_path(from), &partial)
        .with_context(|| format!("copying {}", DataDir::database_path(from).display()))?;
    std::fs::File::open(&partial)?.sync_all()?;
    // The file that goes into place is the one checked.
    let installed = medvault_store::check_copy(&partial)
        .map_err(|e| anyhow!("the restored copy of the database: {e}"))?;
    if installed != versions {
        bail!("the restored copy holds {installed} resource versions, the backup {versions}");
    }
    // Again, just before: nothing may have appeared meanwhile. A hard link, unlike a
    // rename, fails rather than replace a database that did; where the file system has
    // no hard links, a rename right after the check does.
    refuse_existing_database(data_dir)?;
    match std::fs::hard_link(&partial, &db) {
        Ok(()) => std::fs::remove_file(&partial)?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{} already holds a database; restore only into a new data directory (move the old one away first)",
            data_dir.display()
        ),
        Err(_) => std::fs::rename(&partial, &db)
            .with_context(|| format!("putting the database in place at {}", db.display()))?,
    }
    sync_dir(data_dir)?;
    println!(
        "restored {} into {}: {versions} resource versions, {blobs} blobs",
        from.display(),
        data_dir.display()
    );
    println!(
        "start `medvault serve --data-dir {}` and unseal it with the key shares the vault had when the backup was taken",
        data_dir.display()
    );
    Ok(())
}

/// Refuse a data directory with a database, or any of SQLite's files beside one (a stale
/// WAL or journal would be applied to the restored database when it is opened).
fn refuse_existing_database(data_dir: &Path) -> Result<()> {
    let db = DataDir::database_path(data_dir);
    let name = db.file_name().unwrap_or_default().to_os_string();
    let restoring = sibling(&db, "restoring");
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        let theirs = entry.file_name();
        let sqlite_file = theirs == name
            || theirs
                .to_string_lossy()
                .starts_with(&format!("{}-", name.to_string_lossy()));
        if sqlite_file && entry.path() != restoring {
            bail!(
                "{} already holds a database ({}); restore only into a new data directory (move the old one away first)",
                data_dir.display(),
                theirs.to_string_lossy()
            );
        }
    }
    Ok(())
}

/// `medvault compact`: rewrite a stopped server's database with the current page size.
pub fn compact(data_dir: &Path) -> Result<()> {
    let path = DataDir::database_path(data_dir);
    if !path.is_file() {
        bail!("no database at {}", path.display());
    }
    // A server of this version holds it while it runs; the store checks again for any
    // other connection.
    let _lock = DataDirLock::acquire(data_dir)?;
    let bar = bytes_bar("compacting");
    let done = medvault_store::compact(&path, &|written, expected| {
        bar.set_length(expected.max(written));
        bar.set_position(written);
    })
    .map_err(|e| anyhow!("{e}"))?;
    bar.finish_and_clear();
    println!(
        "compacted {}: {}-byte pages -> {}-byte pages, {:.1} MiB -> {:.1} MiB",
        path.display(),
        done.page_size_before,
        done.page_size_after,
        mib(done.bytes_before),
        mib(done.bytes_after)
    );
    Ok(())
}

/// Copy every file under `from` to the same place under `to`, each synced, with a
/// progress bar; returns how many. A missing `from` is an empty tree. Files named with a
/// `#` are `object_store`'s unfinished writes (renamed into place when done): skipped.
fn copy_tree(from: &Path, to: &Path) -> Result<u64> {
    let mut files = Vec::new();
    list_files(from, Path::new(""), &mut files)?;
    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("blobs {bar:40} {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut dirs = std::collections::BTreeSet::new();
    for rel in &files {
        let target = to.join(rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
            dirs.insert(parent.to_path_buf());
        }
        std::fs::copy(from.join(rel), &target)
            .with_context(|| format!("copying {}", from.join(rel).display()))?;
        std::fs::File::open(&target)?.sync_all()?;
        bar.inc(1);
    }
    // Deepest first, so each directory's entry in its parent is synced after it.
    for dir in dirs.iter().rev() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    bar.finish_and_clear();
    Ok(files.len() as u64)
}

fn list_files(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let dir = root.join(rel);
    let entries = match std::fs::read_dir(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && rel.as_os_str().is_empty() => {
            return Ok(())
        }
        other => other.with_context(|| format!("reading {}", dir.display()))?,
    };
    for entry in entries {
        let entry = entry?;
        let name = rel.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            list_files(root, &name, out)?;
        } else if !entry.file_name().to_string_lossy().contains('#') {
            out.push(name);
        }
    }
    Ok(())
}

/// Write `bytes` to `path` through a temporary file, synced, then renamed into place.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let partial = sibling(path, "partial");
    std::fs::write(&partial, bytes)?;
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::rename(&partial, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
