//! `medvault bench`: benchmarks that print ratios against a baseline measured in the same run.

mod aead;
mod dataset;
mod plot;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
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
        /// Ingest the transaction Bundles in this directory's `*.json` files (e.g. carebundle's
        /// output) instead of generated ones.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// Clients sending Bundles at once, on both sides (the baseline's clients serialize
        /// their rows in parallel and take turns at its one SQLite writer).
        #[arg(long, default_value_t = 1)]
        clients: usize,
        /// Give the baseline's database this page size in bytes (a power of two from 512 to
        /// 65536) instead of SQLite's default 4096; medvault's own is
        /// `medvault_store::PAGE_SIZE` (the command prints both). With both the same, the
        /// ratio leaves out what the page size alone changes.
        #[arg(long, value_name = "BYTES", value_parser = parse_page_size)]
        baseline_page_size: Option<u32>,
        /// Scratch directory (default: the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Envelope encryption (AES-256-GCM with medvault's header, AAD and random nonce) against
    /// ring's raw AES-256-GCM on the same buffer, at 600 B, 16 KiB and 1 MiB.
    Aead {
        /// MiB encrypted per buffer size and operation.
        #[arg(long, default_value_t = 256)]
        mib: usize,
    },
    /// Build a large data set through the full path and as plain SQLite rows, recording ingest
    /// throughput by size, then single-read and `Observation?patient=&code=` latency on both.
    Dataset {
        /// Resources to store (rounded up to whole Bundles of 280).
        #[arg(long, default_value_t = 1_000_000)]
        resources: usize,
        /// Random reads and searches to time on each side.
        #[arg(long, default_value_t = 10_000)]
        samples: usize,
        /// Points on the throughput-by-size curve.
        #[arg(long, default_value_t = 10)]
        points: usize,
        /// Write the throughput-by-size chart to this SVG file.
        #[arg(long, value_name = "FILE")]
        plot: Option<PathBuf>,
        /// Scratch directory (default: the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Everything above in one run (ingest, ingest of `--carebundle` data, AEAD, the data set,
    /// the ledger), then one summary table against the targets. `scripts/bench.sh` runs this
    /// with carebundle data and the Medplum peer figure.
    All {
        /// carebundle transaction Bundles to ingest (the data the peer figure was measured on).
        #[arg(long, value_name = "DIR")]
        carebundle: Option<PathBuf>,
        /// The peer's result: the JSON line `scripts/bench-medplum.sh` prints.
        #[arg(long, value_name = "FILE")]
        peer: Option<PathBuf>,
        /// Resources in the data set for the read and search latencies.
        #[arg(long, default_value_t = 1_000_000)]
        resources: usize,
        /// Ledger entries for append and verify.
        #[arg(long, default_value_t = 1_000_000)]
        entries: u64,
        /// Write the throughput-by-size chart to this SVG file.
        #[arg(long, value_name = "FILE")]
        plot: Option<PathBuf>,
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
        /// The server's SQLite page cache per reading connection, in MiB (`serve
        /// --sqlite-cache-mib`; the writer's is at most 16). A small cache fills within the
        /// first minutes of a soak, so memory that keeps growing after that is not the cache.
        #[arg(long, default_value_t = medvault_store::DEFAULT_CACHE_MIB)]
        sqlite_cache_mib: u32,
        /// For profiling the server: a command (split at spaces) that runs it, e.g.
        /// `--server-wrapper "heaptrack -o /tmp/server"` with a binary built with
        /// `--no-default-features` (the system allocator, which heaptrack sees). The server
        /// is stopped with SIGTERM, so the wrapper writes its report.
        #[arg(long, value_name = "COMMAND")]
        server_wrapper: Option<String>,
        /// Scratch directory (default: the system temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Audit-ledger append throughput (batched, durable commits), full verification time, and
    /// one entry per request from several requests at once, against plain SQLite inserts and
    /// reads of rows of the same size.
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
            sqlite_cache_mib,
            server_wrapper,
            dir,
        } => {
            let wrapper: Vec<String> = server_wrapper
                .as_deref()
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect();
            let scratch = scratch_dir(dir, "load");
            let duration = std::time::Duration::from_secs(if soak { 600 } else { seconds.max(1) });
            let result = crate::load::run(
                duration,
                concurrency.max(1),
                patients.max(1),
                sqlite_cache_mib.max(1),
                &wrapper,
                &scratch,
            );
            let _ = std::fs::remove_dir_all(&scratch);
            result
        }
        BenchCommand::Ledger {
            entries,
            batch,
            dir,
        } => {
            let scratch = scratch_dir(dir, "ledger");
            let result = ledger_bench(&scratch, entries, batch.max(1));
            let _ = std::fs::remove_dir_all(&scratch);
            result.map(drop)
        }
        BenchCommand::Ingest {
            bundles,
            patients,
            observations,
            rounds,
            from,
            clients,
            baseline_page_size,
            dir,
        } => {
            let data = match from {
                Some(dir) => load_bundles(&dir)?,
                None => generated(bundles, patients, observations),
            };
            let scratch = scratch_dir(dir, "ingest");
            let rounds = rounds.max(1);
            blocking(move || ingest(&scratch, &data, rounds, clients.max(1), baseline_page_size))
                .map(drop)
        }
        BenchCommand::Aead { mib } => aead::run(mib.max(1)).map(drop),
        BenchCommand::Dataset {
            resources,
            samples,
            points,
            plot,
            dir,
        } => {
            let scratch = scratch_dir(dir, "dataset");
            let figures = blocking({
                let scratch = scratch.clone();
                move || dataset::run(&scratch, resources.max(1), samples.max(1), points)
            });
            let _ = std::fs::remove_dir_all(&scratch);
            let figures = figures?;
            if let Some(path) = plot {
                write_plot(&path, &figures)?;
            }
            Ok(())
        }
        BenchCommand::All {
            carebundle,
            peer,
            resources,
            entries,
            plot,
            dir,
        } => all(AllArgs {
            carebundle,
            peer,
            resources,
            entries,
            plot,
            scratch: scratch_dir(dir, "all"),
        }),
    }
}

fn scratch_dir(dir: Option<PathBuf>, what: &str) -> PathBuf {
    dir.unwrap_or_else(std::env::temp_dir)
        .join(format!("medvault-bench-{what}-{}", std::process::id()))
}

/// Runs `f` on a blocking thread of a multi-threaded runtime (the repository's blob store and
/// parallel encryption expect one to exist).
fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| anyhow!("benchmark thread failed"))?
    })
}

fn generated(bundles: usize, patients: usize, observations: usize) -> Vec<Value> {
    (0..bundles)
        .map(|i| transaction_bundle(i as u64 + 1, patients, observations).0)
        .collect()
}

/// Every `*.json` file in `dir` (sorted by name), each a transaction Bundle.
fn load_bundles(dir: &std::path::Path) -> Result<Vec<Value>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("{} holds no *.json Bundles", dir.display());
    }
    paths
        .iter()
        .map(|p| {
            let bundle: Value = serde_json::from_slice(
                &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
            )
            .with_context(|| format!("{} is not JSON", p.display()))?;
            if bundle["resourceType"] != "Bundle" || bundle["type"] != "transaction" {
                bail!("{} is not a transaction Bundle", p.display());
            }
            Ok(bundle)
        })
        .collect()
}

/// Ingest figures: the best and median round of each side and the median of the rounds'
/// ratios.
pub struct IngestFigures {
    pub resources: usize,
    pub best_plain: f64,
    pub best_full: f64,
    pub median_full: f64,
    pub median_ratio: f64,
}

/// The page size of the SQLite database at `path`.
fn page_size_of(path: &std::path::Path) -> Result<u32> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(conn.pragma_query_value(None, "page_size", |r| r.get(0))?)
}

/// A page size SQLite accepts: it silently ignores any other, which would leave the
/// baseline at its default while the output claimed otherwise.
fn parse_page_size(s: &str) -> std::result::Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("not a number of bytes: {s:?}"))?;
    if (512..=65536).contains(&n) && n.is_power_of_two() {
        Ok(n)
    } else {
        Err(format!("{n} is not a power of two from 512 to 65536"))
    }
}

/// Both sides ingest `data` `rounds` times; the baseline's database at `baseline_page_size`
/// if given, else SQLite's default.
fn ingest(
    scratch: &std::path::Path,
    data: &[Value],
    rounds: usize,
    clients: usize,
    baseline_page_size: Option<u32>,
) -> Result<IngestFigures> {
    let resources: usize = data
        .iter()
        .map(|b| b["entry"].as_array().map_or(0, Vec::len))
        .sum();
    println!(
        "bench ingest: {} transaction Bundles, {resources} resources, {rounds} round(s), {clients} client(s) at once",
        data.len()
    );
    println!("machine: {}", machine());
    let mut best_plain = 0.0f64;
    let mut best_full = 0.0f64;
    let mut ratios = Vec::with_capacity(rounds);
    let mut full_rates = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let dir = scratch.join(format!("round-{round}"));
        let plain = plain_sqlite(&dir.join("plain"), data, clients, baseline_page_size)?;
        let full = full_path(&dir.join("medvault"), data, clients)?;
        // As the two databases have them (SQLite ignores a page size it cannot apply).
        let sizes = (round == 1).then(|| -> Result<(u32, u32)> {
            let medvault = medvault_server::DataDir::database_path(&dir.join("medvault"));
            let baseline = dir.join("plain").join("plain.db");
            Ok((page_size_of(&medvault)?, page_size_of(&baseline)?))
        });
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(sizes) = sizes {
            let (medvault, baseline) = sizes?;
            let default = if baseline_page_size.is_none() {
                " (SQLite's default)"
            } else {
                ""
            };
            println!("page size: medvault {medvault} bytes, baseline {baseline} bytes{default}");
        }
        let plain_rate = resources as f64 / plain;
        let full_rate = resources as f64 / full;
        println!(
            "  round {round}: plain SQLite {plain_rate:>9.0} resources/s   medvault full path {full_rate:>9.0} resources/s   ratio {:.2}",
            full_rate / plain_rate
        );
        best_plain = best_plain.max(plain_rate);
        best_full = best_full.max(full_rate);
        ratios.push(full_rate / plain_rate);
        full_rates.push(full_rate);
    }
    ratios.sort_by(f64::total_cmp);
    full_rates.sort_by(f64::total_cmp);
    let median_full = full_rates.get(full_rates.len() / 2).copied().unwrap_or(0.0);
    let median_ratio = ratios.get(ratios.len() / 2).copied().unwrap_or(0.0);
    let _ = std::fs::remove_dir_all(scratch);
    println!("best of {rounds}:");
    println!("  baseline  plain SQLite inserts (same JSON, WAL, synchronous=FULL, one tx per Bundle): {best_plain:.0} resources/s");
    println!("  medvault  full path (validate, AES-256-GCM per patient key, blind indexes, history):  {best_full:.0} resources/s");
    println!(
        "  ratio full/baseline, median of {rounds} rounds: {median_ratio:.2}  (target >= 0.50)"
    );
    Ok(IngestFigures {
        resources,
        best_plain,
        best_full,
        median_full,
        median_ratio,
    })
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

/// Baseline: the same JSON inserted into one table, same durability settings, no crypto or
/// indexes. With several clients, each serializes its Bundle's rows on its own thread and
/// then waits its turn at the one connection (SQLite has one writer).
fn plain_sqlite(
    dir: &std::path::Path,
    data: &[Value],
    clients: usize,
    page_size: Option<u32>,
) -> Result<f64> {
    std::fs::create_dir_all(dir)?;
    let mut plain = dataset::Plain::open(&dir.join("plain.db"), false, page_size)?;
    if clients == 1 {
        let start = Instant::now();
        for bundle in data {
            plain.insert_bundle(bundle, None, &mut [])?;
        }
        return Ok(start.elapsed().as_secs_f64());
    }
    let plain = std::sync::Mutex::new(plain);
    let rng = SystemRandom::new();
    let start = Instant::now();
    each_concurrently(data, clients, |bundle| {
        let rows = dataset::Plain::rows(bundle, &rng)?;
        plain
            .lock()
            .map_err(|_| anyhow!("a client panicked"))?
            .insert_rows(&rows)
    })?;
    Ok(start.elapsed().as_secs_f64())
}

/// Run `f` on every item, `clients` at a time, each client taking the next item not yet
/// taken; the first error stops every client.
fn each_concurrently<T: Sync>(
    data: &[T],
    clients: usize,
    f: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    while !failed.load(Ordering::Relaxed) {
                        let Some(item) = data.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            return Ok(());
                        };
                        if let Err(e) = f(item) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow!("a client panicked")))
            })
            .collect::<Result<Vec<()>>>()
            .map(drop)
    })
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
fn full_path(dir: &std::path::Path, data: &[Value], clients: usize) -> Result<f64> {
    let (dd, rng, vault) = unsealed_vault(dir)?;
    let vault = Arc::new(vault);
    let repo = Repository::new(
        dd.store.clone(),
        dd.blobs.clone(),
        vault,
        Arc::new(SystemClock),
        rng,
    );
    let audit = Audit::system("bench");
    let anonymous = medvault_server::access::Caller::Anonymous;
    if clients == 1 {
        let bundles: Vec<Value> = data.to_vec();
        let start = Instant::now();
        for b in bundles {
            repo.bundle(&audit, b, &anonymous)
                .map_err(|e| anyhow!("ingest failed: {e}"))?;
        }
        return Ok(start.elapsed().as_secs_f64());
    }
    // Each client's copy is taken before the clock starts, as above.
    let bundles: Vec<std::sync::Mutex<Option<Value>>> = data
        .iter()
        .map(|b| std::sync::Mutex::new(Some(b.clone())))
        .collect();
    // The clients' threads enter the runtime the blob store needs (large resources).
    let runtime = tokio::runtime::Handle::current();
    let start = Instant::now();
    each_concurrently(&bundles, clients, |slot| {
        let _runtime = runtime.enter();
        let bundle = slot
            .lock()
            .ok()
            .and_then(|mut b| b.take())
            .ok_or_else(|| anyhow!("a Bundle was taken twice"))?;
        repo.bundle(&audit, bundle, &anonymous)
            .map(drop)
            .map_err(|e| anyhow!("ingest failed: {e}"))
    })?;
    Ok(start.elapsed().as_secs_f64())
}

/// One audited read, as the API would record it. Each names its own patient: one request's
/// reads of the same patient would share an entry, and this measures entries.
fn sample_event(i: u64) -> Event {
    Event::new(
        "read",
        "Observation",
        &format!("{:08x}-0000-4000-8000-{:012x}", i as u32, i),
        medvault_ledger::Outcome::Allow,
    )
    .patient(&format!("{:08x}-1111-4000-8000-{:012x}", i as u32, i))
}

/// Ledger figures: appends per second on each side and full-verify seconds.
pub struct LedgerFigures {
    pub entries: u64,
    pub append: f64,
    pub plain_append: f64,
    pub verify_s: f64,
    pub plain_read_s: f64,
    /// One entry per request, `REQUESTERS` requests at once, each durable before it returns.
    pub per_request: f64,
    pub plain_per_request: f64,
}

/// Requests recording at once in the per-request part of `bench ledger`.
const REQUESTERS: usize = 4;
/// Requests each of them makes.
const REQUESTS_EACH: u64 = 2_000;

fn ledger_bench(scratch: &std::path::Path, entries: u64, batch: usize) -> Result<LedgerFigures> {
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
    // The figure is per entry: each event must have become one.
    let stored = dd.store.ledger_size()?;
    if stored != entries {
        bail!("the ledger holds {stored} entries for {entries} events");
    }
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
    let mut bytes = 0usize;
    {
        let mut stmt = conn.prepare("SELECT idx, leaf, body FROM entry ORDER BY idx")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            bytes += r.get_ref(2)?.as_blob()?.len();
        }
    }
    let plain_read_s = start.elapsed().as_secs_f64();

    // One entry per request, as reads and searches record theirs: several requests at once,
    // each returning only once its entry is durable. medvault commits the entries of
    // requests that queued behind one another together (group commit); the baseline commits
    // one row per request, taking turns at its one connection.
    let total = REQUESTERS as u64 * REQUESTS_EACH;
    let start = Instant::now();
    each_concurrently(&[(); REQUESTERS], REQUESTERS, |_| {
        for i in 0..REQUESTS_EACH {
            ledger.record(&keys, &audit, &[sample_event(i)])?;
        }
        Ok(())
    })?;
    let per_request = total as f64 / start.elapsed().as_secs_f64();
    let conn = std::sync::Mutex::new(conn);
    let next = std::sync::atomic::AtomicU64::new(entries);
    let start = Instant::now();
    each_concurrently(&[(); REQUESTERS], REQUESTERS, |_| {
        for _ in 0..REQUESTS_EACH {
            let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let conn = conn.lock().map_err(|_| anyhow!("a requester panicked"))?;
            conn.prepare_cached("INSERT INTO entry (idx, leaf, body) VALUES (?, ?, ?)")?
                .execute(rusqlite::params![k as i64, [0u8; 32].as_slice(), row])?;
        }
        Ok(())
    })?;
    let plain_per_request = total as f64 / start.elapsed().as_secs_f64();

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
    println!("one entry per request, {REQUESTERS} requests at once, each durable before it returns ({total} in all):");
    println!("  baseline  plain SQLite, one durable insert per request:   {plain_per_request:>10.0} rows/s");
    println!(
        "  medvault  Ledger::record (group commit):                  {per_request:>10.0} entries/s   ratio {:.2}",
        per_request / plain_per_request
    );
    Ok(LedgerFigures {
        entries,
        append: rate,
        plain_append: plain_rate,
        verify_s,
        plain_read_s,
        per_request,
        plain_per_request,
    })
}

fn write_plot(path: &std::path::Path, figures: &dataset::DatasetFigures) -> Result<()> {
    let svg = plot::line_chart(
        &format!("Ingest throughput by data set size ({})", machine_short()),
        "resources stored",
        "resources/s (over each chunk)",
        &[
            plot::Series {
                label: "plain SQLite inserts (baseline)",
                colour: "#888888",
                points: figures
                    .by_size
                    .iter()
                    .map(|p| (p.stored as f64, p.plain))
                    .collect(),
            },
            plot::Series {
                label: "medvault full path",
                colour: "#1f6feb",
                points: figures
                    .by_size
                    .iter()
                    .map(|p| (p.stored as f64, p.full))
                    .collect(),
            },
        ],
    );
    std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn machine_short() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cores} cores")
}

struct AllArgs {
    carebundle: Option<PathBuf>,
    peer: Option<PathBuf>,
    resources: usize,
    entries: u64,
    plot: Option<PathBuf>,
    scratch: PathBuf,
}

/// The peer figure as `scripts/bench-medplum.sh` prints it.
#[derive(serde::Deserialize)]
struct Peer {
    peer: String,
    resources: usize,
    resources_per_s_median: f64,
}

fn all(args: AllArgs) -> Result<()> {
    // Read everything the run depends on first, so a bad path fails before an hour of work.
    let peer: Option<Peer> = match &args.peer {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let line = text.lines().rev().find(|l| l.trim_start().starts_with('{'));
            Some(
                serde_json::from_str(line.unwrap_or(""))
                    .with_context(|| format!("{} holds no peer result line", path.display()))?,
            )
        }
        None => None,
    };
    let carebundle = match &args.carebundle {
        Some(dir) => Some(load_bundles(dir)?),
        None => None,
    };
    std::fs::create_dir_all(&args.scratch)?;
    let scratch = args.scratch.clone();
    let (generated_ingest, care_ingest, care_two, aead, data, ledger) = blocking(move || {
        println!("== 1/5 ingest, generated Bundles");
        let generated_ingest = ingest(&scratch.join("ingest"), &generated(40, 20, 10), 5, 1, None)?;
        println!();
        println!("== 2/5 ingest, carebundle Bundles");
        let care_ingest = match &carebundle {
            Some(data) => Some(ingest(&scratch.join("care"), data, 5, 1, None)?),
            None => {
                println!("  skipped (no --carebundle)");
                None
            }
        };
        // The same with two clients at once on both sides, as a server sees an importer
        // that keeps two Bundles in flight.
        let care_two = match &carebundle {
            Some(data) => {
                println!();
                Some(ingest(&scratch.join("care2"), data, 5, 2, None)?)
            }
            None => None,
        };
        println!();
        println!("== 3/5 AEAD");
        let aead = aead::run(256)?;
        println!();
        println!("== 4/5 data set");
        let data = dataset::run(&scratch.join("dataset"), args.resources, 10_000, 10)?;
        let _ = std::fs::remove_dir_all(scratch.join("dataset"));
        println!();
        println!("== 5/5 ledger");
        let ledger = ledger_bench(&scratch.join("ledger"), args.entries, 1000)?;
        Ok((generated_ingest, care_ingest, care_two, aead, data, ledger))
    })?;
    let _ = std::fs::remove_dir_all(&args.scratch);
    if let Some(path) = &args.plot {
        write_plot(path, &data)?;
    }

    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!();
    println!("summary ({}):", machine());
    println!("| measure | medvault | baseline | ratio | target | |");
    println!("|---|---:|---:|---:|---|---|");
    let g = &generated_ingest;
    let by_size: Vec<f64> = {
        let mut r: Vec<f64> = data.by_size.iter().map(|p| p.full / p.plain).collect();
        r.sort_by(f64::total_cmp);
        r
    };
    if let Some(&mid) = by_size.get(by_size.len() / 2) {
        println!(
            "| ingest while growing to {} resources (median of {} chunks) | | | {mid:.2} | security tax <= 2x (ratio >= 0.50) | {} |",
            data.resources,
            by_size.len(),
            met(mid >= 0.5)
        );
    }
    println!(
        "| ingest, generated ({} resources) | {:.0}/s | {:.0}/s plain SQLite | {:.2} (median) | security tax <= 2x (ratio >= 0.50) | {} |",
        g.resources, g.best_full, g.best_plain, g.median_ratio, met(g.median_ratio >= 0.5)
    );
    if let Some(c) = &care_ingest {
        println!(
            "| ingest, carebundle ({} resources) | {:.0}/s | {:.0}/s plain SQLite | {:.2} (median) | security tax <= 2x | {} |",
            c.resources, c.best_full, c.best_plain, c.median_ratio, met(c.median_ratio >= 0.5)
        );
        if let Some(p) = &peer {
            // Median against median: both sides ran five rounds on the same files.
            let ratio = c.median_full / p.resources_per_s_median;
            println!(
                "| ingest vs peer, carebundle, median rounds | {:.0}/s | {:.0}/s {} (no validation, no crypto, no disk; {} resources) | {ratio:.2} | >= 1.5x | {} |",
                c.median_full, p.resources_per_s_median, p.peer, p.resources, met(ratio >= 1.5)
            );
        }
    }
    if let Some(c) = &care_two {
        println!(
            "| ingest, carebundle, 2 clients at once on both sides | {:.0}/s | {:.0}/s plain SQLite | {:.2} (median) | (not a target) | |",
            c.best_full, c.best_plain, c.median_ratio
        );
        if let Some(p) = &peer {
            println!(
                "| ingest vs peer, carebundle, medvault with 2 clients (the peer is one single-threaded process) | {:.0}/s | {:.0}/s {} | {:.2} | (not a target) | |",
                c.median_full, p.resources_per_s_median, p.peer, c.median_full / p.resources_per_s_median
            );
        }
    }
    for a in &aead {
        println!(
            "| AEAD seal, {} buffers | {:.0} MiB/s | {:.0} MiB/s ring raw | {:.2} | | |",
            aead::human_size(a.size),
            a.envelope_seal,
            a.raw_seal,
            a.envelope_seal / a.raw_seal
        );
        println!(
            "| AEAD open, {} buffers | {:.0} MiB/s | {:.0} MiB/s ring raw | {:.2} | | |",
            aead::human_size(a.size),
            a.envelope_open,
            a.raw_open,
            a.envelope_open / a.raw_open
        );
    }
    for (what, full, plain, target_ms) in [
        ("read", &data.full_read, &data.plain_read, 5.0),
        (
            "Observation?patient=&code=",
            &data.full_search,
            &data.plain_search,
            20.0,
        ),
    ] {
        println!(
            "| {what} p99 at {} resources | {:.2} ms | {:.2} ms plain SQLite | {:.1}x | < {target_ms} ms | {} |",
            data.resources,
            full.p99,
            plain.p99,
            full.p99 / plain.p99,
            met(full.p99 < target_ms)
        );
    }
    println!(
        "| Observation?_count=20 (first page and total of the whole type) p99 at {} resources | {:.2} ms | {:.2} ms plain SQLite | {:.1}x | (not a target) | |",
        data.resources,
        data.full_list.p99,
        data.plain_list.p99,
        data.full_list.p99 / data.plain_list.p99
    );
    println!(
        "| ledger append, batched ({} entries) | {:.0}/s | {:.0}/s plain SQLite | {:.2} | >= 50,000/s | {} |",
        ledger.entries,
        ledger.append,
        ledger.plain_append,
        ledger.append / ledger.plain_append,
        met(ledger.append >= 50_000.0)
    );
    println!(
        "| ledger full verify ({} entries) | {:.2} s | {:.2} s plain read | {:.1}x | < 10 s per 1M | {} |",
        ledger.entries,
        ledger.verify_s,
        ledger.plain_read_s,
        ledger.verify_s / ledger.plain_read_s,
        met(ledger.verify_s * 1_000_000.0 / (ledger.entries.max(1) as f64) < 10.0)
    );
    println!(
        "| ledger, one entry per request, {REQUESTERS} requests at once | {:.0}/s | {:.0}/s plain SQLite | {:.2} | (not a target) | |",
        ledger.per_request,
        ledger.plain_per_request,
        ledger.per_request / ledger.plain_per_request,
    );
    if peer.is_none() {
        println!("(no --peer: the Medplum comparison needs scripts/bench.sh)");
    }
    Ok(())
}
