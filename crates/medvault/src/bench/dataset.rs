//! `medvault bench dataset`: builds a large data set (1M resources by default) through
//! medvault's full path and as plain SQLite rows side by side, recording ingest throughput as
//! the data grows, then measures single-read and `Observation?patient=&code=` latency on both.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use medvault_crypto::{Random, SystemRandom};
use medvault_server::access::Caller;
use medvault_server::clock::SystemClock;
use medvault_server::ledger::Audit;
use medvault_server::repo::Repository;
use serde_json::Value;

use crate::gen::{transaction_bundle, Lcg};

/// Patients per generated Bundle, and Observations per patient (14 resources per patient).
const PATIENTS: usize = 20;
const OBSERVATIONS: usize = 10;
const PER_PATIENT: usize = 4 + OBSERVATIONS;
const PER_BUNDLE: usize = PATIENTS * PER_PATIENT;

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    fn of(mut samples: Vec<f64>) -> Latency {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).saturating_sub(1);
            samples.get(i).copied().unwrap_or(0.0)
        };
        Latency {
            p50: at(0.50),
            p99: at(0.99),
            max: samples.last().copied().unwrap_or(0.0),
        }
    }
}

impl std::fmt::Display for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            self.p50, self.p99, self.max
        )
    }
}

/// One point of the throughput-by-size curve: resources stored after a chunk, and each side's
/// rate over that chunk.
pub struct SizePoint {
    pub stored: usize,
    pub plain: f64,
    pub full: f64,
}

pub struct DatasetFigures {
    pub resources: usize,
    pub by_size: Vec<SizePoint>,
    pub plain_read: Latency,
    pub full_read: Latency,
    pub plain_search: Latency,
    pub full_search: Latency,
    /// The first page of a whole type with its total (`Observation?_count=20`).
    pub plain_list: Latency,
    pub full_list: Latency,
}

/// Whole-type first pages measured per side (each counts every current resource of the type).
const LIST_SAMPLES: usize = 10;

/// A sampled Observation: where it sits in the generated data, and, once stored, its id and
/// its patient's id on each side plus the code to search for.
#[derive(Default, Clone)]
pub(super) struct Sample {
    code: String,
    plain_id: String,
    plain_patient: String,
    full_id: String,
    full_patient: String,
}

pub fn run(
    scratch: &Path,
    resources: usize,
    samples: usize,
    points: usize,
) -> Result<DatasetFigures> {
    let bundles = resources.div_ceil(PER_BUNDLE).max(1);
    let resources = bundles * PER_BUNDLE;
    let points = points.clamp(1, bundles);
    println!(
        "bench dataset: {resources} resources in {bundles} transaction Bundles, {samples} sampled reads and searches"
    );
    println!("machine: {}", super::machine());

    // Which Observations to sample, picked before ingest so both sides record the same ones.
    let mut rng = Lcg(0x9E37_79B9_7F4A_7C15);
    let mut wanted: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
    for s in 0..samples {
        let b = (rng.next() % bundles as u64) as usize;
        let entry = (rng.next() % PATIENTS as u64) as usize * PER_PATIENT
            + 2
            + (rng.next() % OBSERVATIONS as u64) as usize;
        wanted.entry(b).or_default().push((entry, s));
    }
    let mut picked = vec![Sample::default(); samples];

    std::fs::create_dir_all(scratch)?;
    let mut plain = Plain::open(&scratch.join("plain.db"), true, None)?;
    let (dd, rng_sys, vault) = super::unsealed_vault(&scratch.join("medvault"))?;
    let repo = Repository::new(
        dd.store.clone(),
        dd.blobs.clone(),
        Arc::new(vault),
        Arc::new(SystemClock),
        rng_sys,
    );
    let audit = Audit::system("bench");

    let bar = indicatif::ProgressBar::new(resources as u64);
    let mut by_size = Vec::with_capacity(points);
    let mut done = 0usize;
    for chunk in 0..points {
        let end = bundles * (chunk + 1) / points;
        let data: Vec<(usize, Value)> = (done..end)
            .map(|b| {
                (
                    b,
                    transaction_bundle(b as u64 + 1, PATIENTS, OBSERVATIONS).0,
                )
            })
            .collect();
        let chunk_resources = data.len() * PER_BUNDLE;

        let start = Instant::now();
        for (b, bundle) in &data {
            plain.insert_bundle(bundle, wanted.get(b), &mut picked)?;
        }
        let plain_rate = chunk_resources as f64 / start.elapsed().as_secs_f64();

        let start = Instant::now();
        for (b, bundle) in data {
            let (answer, _) = repo
                .bundle(&audit, bundle, &Caller::Anonymous)
                .map_err(|e| anyhow!("ingest failed: {e}"))?;
            if let Some(want) = wanted.get(&b) {
                record_full(&answer, want, &mut picked)?;
            }
            bar.inc(PER_BUNDLE as u64);
        }
        let full_rate = chunk_resources as f64 / start.elapsed().as_secs_f64();
        done = end;
        by_size.push(SizePoint {
            stored: done * PER_BUNDLE,
            plain: plain_rate,
            full: full_rate,
        });
    }
    bar.finish_and_clear();
    println!("ingest throughput by data set size (resources/s over each chunk):");
    for p in &by_size {
        println!(
            "  {:>9} stored: plain SQLite {:>9.0}   medvault full path {:>9.0}   ratio {:.2}",
            p.stored,
            p.plain,
            p.full,
            p.full / p.plain
        );
    }

    // The baseline gets a plain index for its search (built now, not timed); medvault's
    // search index is the blind index it maintained during ingest.
    plain.index_for_search()?;

    let mut order: Vec<usize> = (0..samples).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let mut plain_read = Vec::with_capacity(samples);
    let mut full_read = Vec::with_capacity(samples);
    for &i in &order {
        let s = &picked[i];
        let start = Instant::now();
        let found = plain.read(&s.plain_id)?;
        plain_read.push(ms(start));
        if found["resourceType"] != "Observation" {
            bail!("plain read of a sampled Observation found none");
        }
        let start = Instant::now();
        let stored = repo
            .read("Observation", &s.full_id)
            .map_err(|e| anyhow!("read failed: {e}"))?;
        full_read.push(ms(start));
        if stored.resource.is_none() {
            bail!("medvault read of a sampled Observation found none");
        }
    }
    let mut plain_search = Vec::with_capacity(samples);
    let mut full_search = Vec::with_capacity(samples);
    for &i in &order {
        let s = &picked[i];
        let start = Instant::now();
        let plain_hits = plain.search(&s.plain_patient, &s.code)?;
        plain_search.push(ms(start));
        let pairs = [
            ("patient".to_string(), format!("Patient/{}", s.full_patient)),
            ("code".to_string(), format!("http://loinc.org|{}", s.code)),
        ];
        let start = Instant::now();
        let page = repo
            .search("Observation", &pairs)
            .map_err(|e| anyhow!("search failed: {e}"))?;
        full_search.push(ms(start));
        // Both sides hold the same data, so they must find the same number of Observations.
        if page.total as usize != plain_hits || plain_hits == 0 {
            bail!(
                "search mismatch: medvault found {}, plain SQLite {plain_hits}",
                page.total
            );
        }
    }
    // The first page of the whole type and its total, as `GET /fhir/Observation?_count=20`
    // answers it: medvault lists the type from its type posting, plain SQLite counts through
    // its (type, id, version) index.
    let mut plain_list = Vec::with_capacity(LIST_SAMPLES);
    let mut full_list = Vec::with_capacity(LIST_SAMPLES);
    let count = [("_count".to_string(), "20".to_string())];
    for _ in 0..LIST_SAMPLES {
        let start = Instant::now();
        let plain_total = plain.first_page("Observation", 20)?;
        plain_list.push(ms(start));
        let start = Instant::now();
        let page = repo
            .search("Observation", &count)
            .map_err(|e| anyhow!("search failed: {e}"))?;
        full_list.push(ms(start));
        if page.total as usize != plain_total
            || page.total as usize != resources / PER_PATIENT * OBSERVATIONS
        {
            bail!(
                "whole-type total mismatch: medvault {}, plain SQLite {plain_total}",
                page.total
            );
        }
    }
    let figures = DatasetFigures {
        resources,
        by_size,
        plain_read: Latency::of(plain_read),
        full_read: Latency::of(full_read),
        plain_search: Latency::of(plain_search),
        full_search: Latency::of(full_search),
        plain_list: Latency::of(plain_list),
        full_list: Latency::of(full_list),
    };
    println!("single read of an Observation by id, {samples} random ones:");
    println!(
        "  baseline  plain SQLite row + JSON parse:            {}",
        figures.plain_read
    );
    println!(
        "  medvault  Repository::read (decrypt, check, parse): {}   (target p99 < 5 ms)",
        figures.full_read
    );
    println!("Observation?patient=&code= ({samples} random patient and code pairs):");
    println!(
        "  baseline  plain SQLite (patient, code) index + parse: {}",
        figures.plain_search
    );
    println!(
        "  medvault  Repository::search (blind index, decrypt):  {}   (target p99 < 20 ms)",
        figures.full_search
    );
    println!("Observation?_count=20, the first page of the whole type and its total ({LIST_SAMPLES} times):");
    println!(
        "  baseline  plain SQLite count + first 20 rows + parse: {}",
        figures.plain_list
    );
    println!(
        "  medvault  Repository::search (type posting, decrypt): {}   (not a target)",
        figures.full_list
    );
    Ok(figures)
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// Picks out the sampled Observations' ids (and their patients') from a transaction answer.
fn record_full(answer: &Value, want: &[(usize, usize)], picked: &mut [Sample]) -> Result<()> {
    let located = |entry: usize| -> Result<String> {
        answer["entry"][entry]["response"]["location"]
            .as_str()
            .and_then(|l| l.split('/').nth(1))
            .map(str::to_string)
            .ok_or_else(|| anyhow!("transaction answer without a location for entry {entry}"))
    };
    for &(entry, s) in want {
        picked[s].full_id = located(entry)?;
        picked[s].full_patient = located(entry - entry % PER_PATIENT)?;
    }
    Ok(())
}

/// One baseline row: type, id and resource JSON.
pub(super) struct PlainRow {
    rtype: String,
    id: String,
    json: Vec<u8>,
}

/// The baseline: the same JSON in one SQLite table, same durability settings as medvault
/// (WAL, `synchronous=FULL`), one transaction per Bundle, no validation, crypto or search
/// index. Used by `bench ingest` too.
pub(super) struct Plain {
    conn: rusqlite::Connection,
    rng: SystemRandom,
    search_columns: bool,
}

impl Plain {
    /// A new table at `path`; with `search_columns`, also patient and code columns for the
    /// search baseline (filled for Observations, indexed only after ingest). `page_size`
    /// overrides SQLite's default 4096 (a plain database's).
    pub(super) fn open(path: &Path, search_columns: bool, page_size: Option<u32>) -> Result<Plain> {
        let conn = rusqlite::Connection::open(path)?;
        if let Some(n) = page_size {
            // Before WAL mode, which fixes the page size.
            conn.pragma_update(None, "page_size", n)?;
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        if let Some(n) = page_size {
            // Read back once the file exists: before, SQLite reports the size it would use.
            let set: u32 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
            anyhow::ensure!(set == n, "SQLite kept page size {set}, not {n}");
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(if search_columns {
            "CREATE TABLE resource (seq INTEGER PRIMARY KEY, rtype TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, patient TEXT, code TEXT, json BLOB NOT NULL, UNIQUE (rtype, id, version))"
        } else {
            "CREATE TABLE resource (seq INTEGER PRIMARY KEY, rtype TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, json BLOB NOT NULL, UNIQUE (rtype, id, version))"
        })?;
        Ok(Plain {
            conn,
            rng: SystemRandom::new(),
            search_columns,
        })
    }

    /// Insert every resource of `bundle` in one transaction; the ids of the `want`ed
    /// entries (entry index, sample index) go into `picked`.
    pub(super) fn insert_bundle(
        &mut self,
        bundle: &Value,
        want: Option<&Vec<(usize, usize)>>,
        picked: &mut [Sample],
    ) -> Result<()> {
        let entries = bundle["entry"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let mut ids = Vec::new();
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(if self.search_columns {
                "INSERT INTO resource (rtype, id, version, patient, code, json) VALUES (?, ?, 1, ?, ?, ?)"
            } else {
                "INSERT INTO resource (rtype, id, version, json) VALUES (?, ?, 1, ?)"
            })?;
            for e in entries {
                let r = &e["resource"];
                let json = serde_json::to_vec(r)?;
                // Random v4 ids, like the ones the server assigns (sequential ids would make
                // the baseline's index inserts unrealistically cheap).
                let id = medvault_server::repo::new_uuid(&self.rng as &dyn Random)
                    .map_err(|e| anyhow!("{e}"))?;
                let rtype = r["resourceType"].as_str();
                if self.search_columns {
                    let (patient, code) = if r["resourceType"] == "Observation" {
                        (
                            r["subject"]["reference"].as_str(),
                            r["code"]["coding"][0]["code"].as_str(),
                        )
                    } else {
                        (None, None)
                    };
                    stmt.execute(rusqlite::params![rtype, id, patient, code, json])?;
                } else {
                    stmt.execute(rusqlite::params![rtype, id, json])?;
                }
                if want.is_some() {
                    ids.push(id);
                }
            }
        }
        tx.commit()?;
        for &(entry, s) in want.into_iter().flatten() {
            let r = &entries[entry]["resource"];
            picked[s].plain_id = ids[entry].clone();
            picked[s].plain_patient = r["subject"]["reference"].as_str().unwrap_or("").into();
            picked[s].code = r["code"]["coding"][0]["code"].as_str().unwrap_or("").into();
        }
        Ok(())
    }

    /// The rows `insert_bundle` writes for `bundle` (type, a new random id, the JSON),
    /// made without the connection so several clients can make theirs at once.
    pub(super) fn rows(bundle: &Value, rng: &SystemRandom) -> Result<Vec<PlainRow>> {
        let entries = bundle["entry"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        entries
            .iter()
            .map(|e| {
                let r = &e["resource"];
                Ok(PlainRow {
                    rtype: r["resourceType"].as_str().unwrap_or_default().to_string(),
                    id: medvault_server::repo::new_uuid(rng as &dyn Random)
                        .map_err(|e| anyhow!("{e}"))?,
                    json: serde_json::to_vec(r)?,
                })
            })
            .collect()
    }

    /// Insert rows made by [`Plain::rows`] in one transaction.
    pub(super) fn insert_rows(&mut self, rows: &[PlainRow]) -> Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO resource (rtype, id, version, json) VALUES (?, ?, 1, ?)",
            )?;
            for row in rows {
                stmt.execute(rusqlite::params![row.rtype, row.id, row.json])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn index_for_search(&self) -> Result<()> {
        self.conn
            .execute_batch("CREATE INDEX resource_patient_code ON resource (patient, code)")?;
        Ok(())
    }

    fn read(&self, id: &str) -> Result<Value> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT json FROM resource WHERE rtype = 'Observation' AND id = ? ORDER BY version DESC LIMIT 1",
        )?;
        let json: Vec<u8> = stmt.query_row([id], |r| r.get(0))?;
        Ok(serde_json::from_slice(&json)?)
    }

    /// The total of `rtype` and its first `limit` rows by insertion order, parsed.
    fn first_page(&self, rtype: &str, limit: usize) -> Result<usize> {
        let total: i64 = self.conn.query_row(
            "SELECT count(*) FROM resource WHERE rtype = ?",
            [rtype],
            |r| r.get(0),
        )?;
        let mut stmt = self
            .conn
            .prepare_cached("SELECT json FROM resource WHERE rtype = ? ORDER BY seq LIMIT ?")?;
        let mut rows = stmt.query(rusqlite::params![rtype, limit as i64])?;
        while let Some(row) = rows.next()? {
            let v: Value = serde_json::from_slice(row.get_ref(0)?.as_blob()?)?;
            std::hint::black_box(v);
        }
        Ok(total as usize)
    }

    fn search(&self, patient: &str, code: &str) -> Result<usize> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT json FROM resource WHERE rtype = 'Observation' AND patient = ? AND code = ?",
        )?;
        let mut rows = stmt.query([patient, code])?;
        let mut found = 0;
        while let Some(row) = rows.next()? {
            let v: Value = serde_json::from_slice(row.get_ref(0)?.as_blob()?)?;
            std::hint::black_box(v);
            found += 1;
        }
        Ok(found)
    }
}
