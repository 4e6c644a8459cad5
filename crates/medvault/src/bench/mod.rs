//! `medvault bench`: benchmarks that print ratios against a baseline measured in the same run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Result};
use clap::Subcommand;
use medvault_crypto::{Random, SystemRandom};
use medvault_server::clock::SystemClock;
use medvault_server::ledger::{Audit, Event, Ledger, LedgerConfig};
use medvault_server::open_data_dir;
use medvault_server::repo::Repository;
use medvault_server::vault::Vault;
use medvault_store::Store;
use serde_json::Value;

use crate::gen::transaction_bundle;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Ingest generated transaction Bundles: medvault's full path (validation, encryption,
    /// blind indexes, durable commit) against plain SQLite inserts of the same JSON.
    Ingest {
        /// Number of transaction Bundles.
        #[arg(long, default_value_t = 40)]
        bundles: usize,
        /// Patients per Bundle (each brings an Encounter, observations, a Condition and a MedicationRequest).
        #[arg(long, default_value_t = 20)]
        patients: usize,
        /// Observations per patient.
        #[arg(long, default_value_t = 10)]
        observations: usize,
        /// Rounds; each round measures both sides, and the median of the rounds' ratios is
        /// reported (on a shared machine, one side's best round can be a lucky one).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Scratch directory (default: the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Mixed reads, searches and writes over HTTP on loopback against a server this
    /// command starts, signed in with OPAQUE and DPoP: throughput and p50/p99 latency.
    Load {
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Patients (each with one Observation) seeded before the run.
        #[arg(long, default_value_t = 200)]
        patients: usize,
        /// Run for ten minutes and report the server's resident memory over time.
        #[arg(long)]
        soak: bool,
        /// Scratch directory (default: the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Audit-ledger append throughput (batched, durable commits) and full verification time,
    /// against plain SQLite inserts and reads of rows of the same size.
    Ledger {
        /// Number of ledger entries.
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        /// Entries per durable commit.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Scratch directory (default: the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Load {
            seconds,
            concurrency,
            patients,
            soak,
            dir,
        } => {
            let scratch = dir
                .unwrap_or_else(std::env::temp_dir)
                .join(format!("medvault-bench-load-{}", std::process::id()));
            let duration = std::time::Duration::from_secs(if soak { 600 } else { seconds.max(1) });
            let result = crate::load::run(duration, concurrency.max(1), patients.max(1), &scratch);
            let _ = std::fs::remove_dir_all(&scratch);
            result
        }
        BenchCommand::Ledger {
            entries,
            batch,
            dir,
        } => {
            let scratch = dir
                .unwrap_or_else(std::env::temp_dir)
                .join(format!("medvault-bench-ledger-{}", std::process::id()));
            let result = ledger_bench(&scratch, entries, batch.max(1));
            let _ = std::fs::remove_dir_all(&scratch);
            result
        }
        BenchCommand::Ingest {
            bundles,
            patients,
            observations,
            rounds,
            dir,
        } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let scratch = dir
                .unwrap_or_else(std::env::temp_dir)
                .join(format!("medvault-bench-{}", std::process::id()));
            let result = runtime.block_on(async move {
                tokio::task::spawn_blocking(move || {
                    ingest(&scratch, bundles, patients, observations, rounds.max(1))
                })
                .await
                .map_err(|_| anyhow!("benchmark thread failed"))?
            });
            result
        }
    }
}

fn ingest(
    scratch: &std::path::Path,
    bundles: usize,
    patients: usize,
    observations: usize,
    rounds: usize,
) -> Result<()> {
    let data: Vec<Value> = (0..bundles)
        .map(|i| transaction_bundle(i as u64 + 1, patients, observations).0)
        .collect();
    let resources: usize = data
        .iter()
        .map(|b| b["entry"].as_array().map_or(0, Vec::len))
        .sum();
    println!(
        "bench ingest: {bundles} transaction Bundles, {resources} resources, {rounds} round(s)"
    );
    println!("machine: {}", machine());
    let mut best_plain = 0.0f64;
    let mut best_full = 0.0f64;
    let mut ratios = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let dir = scratch.join(format!("round-{round}"));
        let plain = plain_sqlite(&dir.join("plain"), &data)?;
        let full = full_path(&dir.join("medvault"), &data)?;
        let _ = std::fs::remove_dir_all(&dir);
        let plain_rate = resources as f64 / plain;
        let full_rate = resources as f64 / full;
        println!(
            "  round {round}: plain SQLite {plain_rate:>9.0} resources/s   medvault full path {full_rate:>9.0} resources/s   ratio {:.2}",
            full_rate / plain_rate
        );
        best_plain = best_plain.max(plain_rate);
        best_full = best_full.max(full_rate);
        ratios.push(full_rate / plain_rate);
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios.get(ratios.len() / 2).copied().unwrap_or(0.0);
    let _ = std::fs::remove_dir_all(scratch);
    println!("best of {rounds}:");
    println!("  baseline  plain SQLite inserts (same JSON, WAL, synchronous=FULL, one tx per Bundle): {best_plain:.0} resources/s");
    println!("  medvault  full path (validate, AES-256-GCM per patient key, blind indexes, history):  {best_full:.0} resources/s");
    println!("  ratio full/baseline, median of {rounds} rounds: {median:.2}  (target >= 0.50)");
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!(
        "{cpu}, {cores} cores, {} {}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// Baseline: the same JSON inserted into one table, same durability settings, no crypto or indexes.
fn plain_sqlite(dir: &std::path::Path, data: &[Value]) -> Result<f64> {
    std::fs::create_dir_all(dir)?;
    let mut conn = rusqlite::Connection::open(dir.join("plain.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE resource (seq INTEGER PRIMARY KEY, rtype TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, json BLOB NOT NULL, UNIQUE (rtype, id, version))",
    )?;
    let rng = SystemRandom::new();
    let start = Instant::now();
    for bundle in data {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO resource (rtype, id, version, json) VALUES (?, ?, 1, ?)",
            )?;
            for e in bundle["entry"].as_array().into_iter().flatten() {
                let r = &e["resource"];
                let json = serde_json::to_vec(r)?;
                // Random v4 ids, like the ones the server assigns (sequential ids would make
                // the baseline's index inserts unrealistically cheap).
                let id = medvault_server::repo::new_uuid(&rng).map_err(|e| anyhow!("{e}"))?;
                stmt.execute(rusqlite::params![r["resourceType"].as_str(), id, json])?;
            }
        }
        tx.commit()?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// A fresh data directory with a 1-of-1 vault, unsealed.
fn unsealed_vault(
    dir: &std::path::Path,
) -> Result<(medvault_server::DataDir, Arc<dyn Random>, Vault)> {
    let dd = open_data_dir(dir)?;
    let rng: Arc<dyn Random> = Arc::new(SystemRandom::new());
    let (issued, _) = Vault::initialize(&*dd.store, &*rng, 1, 1)?;
    let vault = Vault::new(dd.store.clone(), rng.clone());
    let share = issued
        .shares
        .first()
        .ok_or_else(|| anyhow!("no share"))?
        .encode();
    vault.submit_share(&share)?;
    Ok((dd, rng, vault))
}

/// medvault's full path, in process (no HTTP), through the same code the API uses.
fn full_path(dir: &std::path::Path, data: &[Value]) -> Result<f64> {
    let (dd, rng, vault) = unsealed_vault(dir)?;
    let vault = Arc::new(vault);
    let repo = Repository::new(
        dd.store.clone(),
        dd.blobs.clone(),
        vault,
        Arc::new(SystemClock),
        rng,
    );
    let bundles: Vec<Value> = data.to_vec();
    let audit = Audit::system("bench");
    let start = Instant::now();
    for b in bundles {
        repo.bundle(&audit, b, &medvault_server::access::Caller::Anonymous)
            .map_err(|e| anyhow!("ingest failed: {e}"))?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// One audited read, as the API would record it.
fn sample_event(i: u64) -> Event {
    Event::new(
        "read",
        "Observation",
        &format!("{:08x}-0000-4000-8000-{:012x}", i as u32, i),
        medvault_ledger::Outcome::Allow,
    )
    .patient(&format!(
        "{:08x}-1111-4000-8000-{:012x}",
        (i / 50) as u32,
        i / 50
    ))
}

fn ledger_bench(scratch: &std::path::Path, entries: u64, batch: usize) -> Result<()> {
    println!("bench ledger: {entries} entries, {batch} per durable commit");
    println!("machine: {}", machine());
    let (dd, rng, vault) = unsealed_vault(&scratch.join("medvault"))?;
    let keys = vault.keys()?;
    let ledger = Ledger::new(
        dd.store.clone(),
        Arc::new(SystemClock),
        rng,
        LedgerConfig::default(),
    );
    let mut audit = Audit::anonymous(
        "10.1.2.3",
        "Mozilla/5.0 (X11; Linux x86_64) ward-tablet/2.1",
    );
    audit.actor = "3f1c9a0e-physician".into();
    audit.role = "physician".into();
    audit.purpose = "TREAT".into();

    let bar = indicatif::ProgressBar::new(entries);
    let start = Instant::now();
    let mut done = 0u64;
    let mut events = Vec::with_capacity(batch);
    while done < entries {
        events.clear();
        let n = (entries - done).min(batch as u64);
        events.extend((done..done + n).map(sample_event));
        ledger.record(&keys, &audit, &events)?;
        done += n;
        bar.set_position(done);
    }
    let append_s = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let envelope_len = dd
        .store
        .ledger_entries(0, 1)?
        .first()
        .map_or(0, |r| r.envelope.len());

    // Baseline: the same number of rows of the same size, same batching and durability.
    let plain_dir = scratch.join("plain");
    std::fs::create_dir_all(&plain_dir)?;
    let mut conn = rusqlite::Connection::open(plain_dir.join("plain.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE entry (idx INTEGER PRIMARY KEY, leaf BLOB NOT NULL, body BLOB NOT NULL)",
    )?;
    let row = vec![0x5au8; envelope_len];
    let start = Instant::now();
    let mut i = 0u64;
    while i < entries {
        let tx = conn.transaction()?;
        {
            let mut stmt =
                tx.prepare_cached("INSERT INTO entry (idx, leaf, body) VALUES (?, ?, ?)")?;
            let end = (i + batch as u64).min(entries);
            for k in i..end {
                stmt.execute(rusqlite::params![k as i64, [0u8; 32].as_slice(), row])?;
            }
            i = end;
        }
        tx.commit()?;
    }
    let plain_append_s = start.elapsed().as_secs_f64();

    let bar = indicatif::ProgressBar::new(entries);
    let start = Instant::now();
    let report = medvault_server::ledger::verify(&*dd.store, &keys, |d, _| bar.set_position(d))?;
    let verify_s = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    if let Some((i, why)) = report.first_bad {
        return Err(anyhow!("verify found entry {i} bad: {why}"));
    }
    let start = Instant::now();
    let mut stmt = conn.prepare("SELECT idx, leaf, body FROM entry ORDER BY idx")?;
    let mut rows = stmt.query([])?;
    let mut bytes = 0usize;
    while let Some(r) = rows.next()? {
        bytes += r.get_ref(2)?.as_blob()?.len();
    }
    let plain_read_s = start.elapsed().as_secs_f64();

    let rate = entries as f64 / append_s;
    let plain_rate = entries as f64 / plain_append_s;
    println!("append (batched, durable):");
    println!(
        "  baseline  plain SQLite inserts of {envelope_len}-byte rows: {plain_rate:>10.0} rows/s"
    );
    println!("  medvault  ledger append (encrypt, salt, hash, tree nodes):  {rate:>10.0} entries/s   ratio {:.2}   (target >= 50,000/s)", rate / plain_rate);
    println!(
        "full verify of {} entries ({} checkpoints):",
        report.entries, report.checkpoints
    );
    println!("  baseline  plain SQLite read of every row ({bytes} bytes): {plain_read_s:>8.2} s");
    println!("  medvault  ledger verify (decrypt, check, rebuild, compare): {verify_s:>8.2} s   ratio {:.2}   (target < 10 s for 1M)", verify_s / plain_read_s);
    Ok(())
}
