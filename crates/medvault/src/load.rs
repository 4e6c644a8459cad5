//! `medvault bench load`: a load generator over HTTP on loopback. It starts its own server
//! (a fresh 1-of-1 vault in a scratch directory), signs in a receptionist and physicians
//! with OPAQUE and DPoP as real clients do, then runs a mix of reads, searches and writes
//! from several threads and reports throughput and p50/p99 latency per operation; `--soak`
//! runs for ten minutes and samples the server's resident memory over time.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::client::Client;
use crate::session::{register_with, session_in_memory, Session};

const PASSWORD: &str = "load generator password";

/// The server under load, stopped when dropped.
struct Server {
    child: Child,
    /// The server's own process: the child itself, or its descendant when the server runs
    /// under a wrapper (e.g. heaptrack's script).
    pid: u32,
    url: String,
    /// How it ended, once stopped.
    stopped: Option<String>,
}

impl Server {
    /// Whether `pid` is still the server: our child (whose pid stays ours until we reap
    /// it), or a process whose parents lead to our child. A wrapped server that died
    /// frees its pid for any other process, which must not be signalled.
    fn is_ours(&self) -> bool {
        let root = self.child.id();
        let mut p = self.pid;
        for _ in 0..16 {
            if p == root {
                return true;
            }
            match parent_of(p) {
                Some(parent) if parent > 1 => p = parent,
                _ => return false,
            }
        }
        false
    }

    fn signal(&self, name: &str) {
        if self.is_ours() {
            let _ = Command::new("kill")
                .args([name, &self.pid.to_string()])
                .status();
        }
    }

    fn wait_for(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, so the server shuts down as in production and a wrapper or the allocator
    /// writes its report (heaptrack, `MIMALLOC_SHOW_STATS=1`). SIGKILL to the server if it
    /// still runs 20 s later, then to the wrapper if that has not finished 10 s after
    /// (heaptrack's script first finishes its recording). Says how it ended.
    fn stop(&mut self) -> String {
        if let Some(how) = &self.stopped {
            return how.clone();
        }
        let how = if let Ok(Some(status)) = self.child.try_wait() {
            format!("had exited before the end ({status})")
        } else {
            self.signal("-TERM");
            match self.wait_for(Duration::from_secs(20)) {
                Some(status) => format!("stopped by SIGTERM ({status})"),
                None => {
                    self.signal("-KILL");
                    if self.wait_for(Duration::from_secs(10)).is_none() {
                        let _ = self.child.kill();
                        let _ = self.child.wait();
                    }
                    "killed: still running 20 s after SIGTERM".to_string()
                }
            }
        };
        self.stopped = Some(how.clone());
        how
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The parent of process `pid` (Linux `/proc/PID/stat`, whose fields after the command
/// name, which ends with the line's last `)`, are the state and then the parent).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The first of `root`'s descendants (Linux `/proc`, searched breadth first) that runs this
/// executable (its command name is this process's); `root` itself if there is none.
fn medvault_descendant(root: u32) -> u32 {
    let comm = |p: &str| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
    let me = comm("self");
    let mut queue = std::collections::VecDeque::from([root]);
    while let Some(p) = queue.pop_front() {
        if p != root && comm(&p.to_string()) == me {
            return p;
        }
        let children =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        queue.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    root
}

fn me() -> Result<std::path::PathBuf> {
    std::env::current_exe().context("finding the medvault executable")
}

fn start(dir: &Path, cache_mib: u32, wrapper: &[String]) -> Result<(Server, String, String)> {
    let out = Command::new(me()?)
        .args([
            "init",
            "--shares",
            "1",
            "--threshold",
            "1",
            "--json",
            "--data-dir",
        ])
        .arg(dir)
        .output()?;
    if !out.status.success() {
        bail!("init failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let share = v["shares"][0].as_str().ok_or_else(|| anyhow!("no share"))?;
    let bootstrap = v["bootstrap_token"]
        .as_str()
        .ok_or_else(|| anyhow!("no bootstrap token"))?;
    // The load is the point: no PHI read limit gets in its way.
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(me()?);
            c
        }
        None => Command::new(me()?),
    };
    let mut child = command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--phi-read-limit",
            "1000000000000",
        ])
        .arg("--sqlite-cache-mib")
        .arg(cache_mib.to_string())
        .arg("--data-dir")
        .arg(dir)
        .env("MEDVAULT_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(if wrapper.is_empty() {
            Stdio::null()
        } else {
            Stdio::inherit()
        })
        .spawn()
        .with_context(|| format!("starting the server {wrapper:?}"))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    // A wrapper may print lines of its own first; they are passed on.
    let url = loop {
        let line = lines
            .next()
            .ok_or_else(|| anyhow!("the server exited before listening"))??;
        match line.strip_prefix("medvault listening on ") {
            Some(rest) => break rest.split(' ').next().unwrap_or_default().to_string(),
            None if !wrapper.is_empty() => eprintln!("{line}"),
            None => bail!("unexpected first line: {line}"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let pid = if wrapper.is_empty() {
        child.id()
    } else {
        let pid = medvault_descendant(child.id());
        if pid == child.id() {
            eprintln!(
                "warning: no medvault process found under the wrapper; its memory and signals go to the wrapper"
            );
        }
        pid
    };
    let server = Server {
        child,
        pid,
        url,
        stopped: None,
    };
    let client = Client::new(&server.url, None)?;
    let (status, text) = client.request(
        "POST",
        "/sys/unseal",
        &[],
        Some((
            "application/json",
            json!({ "share": share }).to_string().into_bytes(),
        )),
    )?;
    if status != 200 {
        bail!("unseal failed (HTTP {status}): {text}");
    }
    Ok((server, bootstrap.to_string(), share.to_string()))
}

/// Register `login` with a token the admin issues for `role` and `link`, and sign it in.
fn account(client: &Client, admin: &Session, role: &str, link: &str, login: &str) -> Result<()> {
    let t = admin.json(
        "POST",
        "/admin/tokens",
        &json!({"role": role, "link": link}),
    )?;
    let token = t["token"].as_str().ok_or_else(|| anyhow!("no token"))?;
    register_with(client, token, login, &format!("NID-{login}"), PASSWORD)?;
    Ok(())
}

fn observation(patient: &str, i: u64) -> Value {
    json!({
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": "2024-01-01", "valueQuantity": {"value": i % 200, "unit": "/min"}
    })
}

#[derive(Default)]
struct Samples {
    read: Vec<Duration>,
    search: Vec<Duration>,
    write: Vec<Duration>,
    errors: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Seconds since the run started, with the server's memory and threads then.
type RssSamples = Vec<(u64, ServerSample)>;

/// The server's resident set and its anonymous part (heap, stacks: what the allocator
/// holds, as opposed to mapped files), in KiB, and its threads (each keeps an allocator heap).
#[derive(Clone, Copy)]
struct ServerSample {
    rss_kib: u64,
    anon_kib: u64,
    threads: u64,
}

/// The server's [`ServerSample`], from `/proc/PID/status` (Linux).
fn server_sample(pid: u32) -> Option<ServerSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some(ServerSample {
        rss_kib: field("VmRSS:")?,
        anon_kib: field("RssAnon:")?,
        threads: field("Threads:")?,
    })
}

/// A small deterministic generator for the operation mix (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

pub fn run(
    duration: Duration,
    concurrency: usize,
    patients: usize,
    cache_mib: u32,
    wrapper: &[String],
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let data = dir.join("data");
    eprintln!("starting a server in {} ...", data.display());
    let (mut server, bootstrap, _share) = start(&data, cache_mib, wrapper)?;
    let client = Client::new(&server.url, None)?;
    register_with(&client, &bootstrap, "admin", "NID-admin", PASSWORD)?;
    let admin = session_in_memory(&client, "admin", PASSWORD)?;
    account(
        &client,
        &admin,
        "receptionist",
        "Practitioner/desk-1",
        "desk",
    )?;
    account(&client, &admin, "physician", "Practitioner/doc-1", "doc")?;
    let desk = session_in_memory(&client, "desk", PASSWORD)?;
    let doc = session_in_memory(&client, "doc", PASSWORD)?;
    eprintln!("seeding {patients} patients in the physician's care ...");
    let mut pool: Vec<(String, String)> = Vec::new();
    for i in 0..patients {
        let p = desk.json(
            "POST",
            "/fhir/Patient",
            &json!({"resourceType": "Patient", "name": [{"family": format!("Load{i}")}],
                "generalPractitioner": [{"reference": "Practitioner/doc-1"}]}),
        )?;
        let pid = p["id"]
            .as_str()
            .ok_or_else(|| anyhow!("no id"))?
            .to_string();
        let o = doc.json("POST", "/fhir/Observation", &observation(&pid, i as u64))?;
        let oid = o["id"]
            .as_str()
            .ok_or_else(|| anyhow!("no id"))?
            .to_string();
        pool.push((pid, oid));
    }
    let pool = Arc::new(pool);
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Samples::default()));
    let pid = server.pid;
    let rss: Arc<Mutex<RssSamples>> = Arc::default();
    let sampler = {
        let (rss, stop) = (rss.clone(), stop.clone());
        let every = if duration >= Duration::from_secs(300) {
            30
        } else {
            5
        };
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                if let Some(k) = server_sample(pid) {
                    rss.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((t0.elapsed().as_secs(), k));
                }
                for _ in 0..every * 10 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };
    eprintln!(
        "running {concurrency} clients for {} s ...",
        duration.as_secs()
    );
    // One session per client, signed in one after another (the server allows one login in
    // progress per account).
    let sessions = (0..concurrency)
        .map(|_| session_in_memory(&client, "doc", PASSWORD))
        .collect::<Result<Vec<Session>>>()?;
    let t0 = Instant::now();
    let workers: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(w, mut session)| {
            let (pool, stop, samples) = (pool.clone(), stop.clone(), samples.clone());
            std::thread::spawn(move || -> Result<()> {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (w as u64 + 1));
                let mut mine = Samples::default();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    session.renew_if_due()?;
                    let (pid, oid) = &pool[rng.below(pool.len() as u64) as usize];
                    let roll = rng.below(100);
                    let started = Instant::now();
                    // 60% reads, 25% searches, 15% writes.
                    let status = if roll < 60 {
                        session
                            .send_typed("GET", &format!("/fhir/Observation/{oid}"), None)?
                            .0
                    } else if roll < 85 {
                        let q = format!("/fhir/Observation?patient={pid}&code=8867-4");
                        session.send_typed("GET", &q, None)?.0
                    } else {
                        i += 1;
                        let body = observation(pid, i).to_string().into_bytes();
                        session
                            .send_typed(
                                "POST",
                                "/fhir/Observation",
                                Some(("application/fhir+json", body)),
                            )?
                            .0
                    };
                    let took = started.elapsed();
                    if !(200..300).contains(&status) {
                        mine.errors += 1;
                    } else if roll < 60 {
                        mine.read.push(took);
                    } else if roll < 85 {
                        mine.search.push(took);
                    } else {
                        mine.write.push(took);
                    }
                }
                let mut all = samples.lock().unwrap_or_else(|e| e.into_inner());
                all.read.extend(mine.read);
                all.search.extend(mine.search);
                all.write.extend(mine.write);
                all.errors += mine.errors;
                Ok(())
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().map_err(|_| anyhow!("a load worker panicked"))??;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let _ = sampler.join();
    let mut s = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    let total = s.read.len() + s.search.len() + s.write.len();
    println!(
        "load: {concurrency} clients, {elapsed:.0} s, {total} requests, {:.0} req/s, {} errors (DPoP-signed, every request in the ledger)",
        total as f64 / elapsed,
        s.errors
    );
    println!(
        "{:<8} {:>8} {:>10} {:>10} {:>10}",
        "op", "count", "req/s", "p50 ms", "p99 ms"
    );
    for (name, v) in [
        ("read", &mut s.read),
        ("search", &mut s.search),
        ("write", &mut s.write),
    ] {
        v.sort_unstable();
        println!(
            "{name:<8} {:>8} {:>10.0} {:>10.2} {:>10.2}",
            v.len(),
            v.len() as f64 / elapsed,
            percentile(v, 0.5),
            percentile(v, 0.99)
        );
    }
    let rss = rss.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let (Some(first), Some(last)) = (rss.first(), rss.last()) {
        let max = rss.iter().map(|r| r.1.rss_kib).max().unwrap_or(0);
        println!(
            "server RSS (SQLite page caches up to {} x {cache_mib} + {} MiB): {} MiB at {} s, {} MiB at {} s, max {} MiB ({} samples)",
            medvault_store::READERS,
            cache_mib.min(medvault_store::WRITER_CACHE_MIB),
            first.1.rss_kib / 1024,
            first.0,
            last.1.rss_kib / 1024,
            last.0,
            max / 1024,
            rss.len()
        );
        for (t, sample) in &rss {
            println!(
                "  rss t={t:>4}s {:>6} MiB  (anonymous {:>6} MiB)  threads {:>3}",
                sample.rss_kib / 1024,
                sample.anon_kib / 1024,
                sample.threads
            );
        }
    }
    println!("server {}", server.stop());
    Ok(())
}
