//! Crash consistency: the server is killed with SIGKILL at random moments while several
//! clients ingest concurrently; after every restart each acknowledged write is readable as
//! written, no transaction is visible in part, and at the end `ledger verify` passes.
//! `MEDVAULT_CRASH_KILLS` sets the number of kills (default 50), `MEDVAULT_CRASH_SEED` the
//! seed of the kill timing (printed, so a failing run can be repeated).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::{dev_ledger_verifies, medvault, ok, start};

/// What the server acknowledged.
#[derive(Clone, Debug)]
enum Acked {
    /// A Patient created alone: its id and family name.
    Patient(String, String),
    /// A transaction: the Patient it created and its three Observations.
    Bundle(String),
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent()
}

/// A small deterministic generator for the kill timing (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn transaction(tag: &str) -> Value {
    let pat = "urn:uuid:9a3e0e8e-8d39-4f7e-9b1a-6f0c3f7a1b2c";
    let obs = |i: u32| {
        json!({
            "resource": {
                "resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": pat},
                "effectiveDateTime": "2024-01-01", "valueQuantity": {"value": i}
            },
            "request": {"method": "POST", "url": "Observation"}
        })
    };
    json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            {"fullUrl": pat,
             "resource": {"resourceType": "Patient", "name": [{"family": format!("bundle{tag}")}]},
             "request": {"method": "POST", "url": "Patient"}},
            obs(1), obs(2), obs(3)
        ]
    })
}

/// Ingest until the server goes away; push every acknowledged write.
fn writer(base: String, name: String, acked: Arc<Mutex<Vec<Acked>>>, stop: Arc<AtomicBool>) {
    let agent = agent();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let tag = format!("{name}x{i}");
        let (path, body) = if i.is_multiple_of(4) {
            (format!("{base}/fhir"), transaction(&tag))
        } else {
            let family = format!("single{tag}");
            (
                format!("{base}/fhir/Patient"),
                json!({"resourceType": "Patient", "name": [{"family": family}]}),
            )
        };
        let sent = agent
            .post(&path)
            .header("Content-Type", "application/fhir+json")
            .send(body.to_string());
        let Ok(resp) = sent else { return };
        let status = resp.status().as_u16();
        let Ok(text) = resp.into_body().read_to_string() else {
            return;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            return;
        };
        let ack = match status {
            201 => Acked::Patient(
                v["id"].as_str().unwrap_or_default().to_string(),
                v["name"][0]["family"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ),
            200 if v["type"] == "transaction-response" => {
                let location = v["entry"][0]["response"]["location"].as_str().unwrap_or("");
                Acked::Bundle(location.split('/').nth(1).unwrap_or_default().to_string())
            }
            // A refusal while sealed or shutting down is not an acknowledgement.
            _ => continue,
        };
        acked.lock().unwrap().push(ack);
    }
}

fn get(agent: &ureq::Agent, url: &str) -> (u16, Value) {
    let resp = agent.get(url).call().unwrap();
    let status = resp.status().as_u16();
    let text = resp.into_body().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Every write in `acked` reads back as written, with all of its transaction.
fn check(base: &str, acked: &[Acked]) {
    let agent = agent();
    for a in acked {
        match a {
            Acked::Patient(id, family) => {
                let (status, v) = get(&agent, &format!("{base}/fhir/Patient/{id}"));
                assert_eq!(status, 200, "acknowledged Patient/{id} lost: {v}");
                assert_eq!(v["name"][0]["family"], family.as_str());
            }
            Acked::Bundle(pid) => {
                let (status, v) = get(&agent, &format!("{base}/fhir/Patient/{pid}"));
                assert_eq!(
                    status, 200,
                    "acknowledged transaction's Patient/{pid} lost: {v}"
                );
                let (_, page) = get(&agent, &format!("{base}/fhir/Observation?patient={pid}"));
                assert_eq!(
                    page["total"], 3,
                    "transaction of Patient/{pid} in part: {page}"
                );
            }
        }
    }
}

/// No transaction is visible in part, acknowledged or not: every Patient a transaction
/// created has its three Observations.
fn check_no_partial_transactions(base: &str) {
    let agent = agent();
    let mut next = Some(format!("{base}/fhir/Patient?family=bundle&_count=500"));
    let mut seen = 0;
    while let Some(url) = next.take() {
        let (_, page) = get(&agent, &url);
        for e in page["entry"].as_array().into_iter().flatten() {
            let pid = e["resource"]["id"].as_str().unwrap();
            let (_, obs) = get(&agent, &format!("{base}/fhir/Observation?patient={pid}"));
            assert_eq!(
                obs["total"], 3,
                "transaction of Patient/{pid} visible in part"
            );
            seen += 1;
        }
        next = page["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str())
            .map(String::from);
    }
    assert!(seen > 0, "no transaction was ever committed");
}

#[test]
fn acknowledged_writes_survive_sigkill_during_concurrent_ingest() {
    let kills: usize = std::env::var("MEDVAULT_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("MEDVAULT_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("crash test: {kills} kills, MEDVAULT_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("crash");
    let ds = d.to_str().unwrap();
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let mut checked = 0;
    for round in 0..kills {
        let mut server = start(&["--dev", "--data-dir", ds]);
        // What was acknowledged before the last kill is all there.
        let so_far = acked.lock().unwrap().clone();
        check(&server.url, &so_far[checked..]);
        checked = so_far.len();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..3)
            .map(|w| {
                let (base, acked, stop) = (server.url.clone(), acked.clone(), stop.clone());
                let name = format!("r{round}w{w}");
                std::thread::spawn(move || writer(base, name, acked, stop))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(30 + rng.below(400)));
        // SIGKILL: no shutdown hook, no flush, mid-request.
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
    }
    let server = start(&["--dev", "--data-dir", ds]);
    let all = acked.lock().unwrap().clone();
    check(&server.url, &all[checked..]);
    // And everything once more, after the last restart.
    check(&server.url, &all);
    check_no_partial_transactions(&server.url);
    drop(server);
    let bundles = all.iter().filter(|a| matches!(a, Acked::Bundle(_))).count();
    println!(
        "crash test: {} acknowledged writes ({bundles} transactions) survived {kills} kills",
        all.len()
    );
    assert!(
        all.len() > kills,
        "too few writes were acknowledged to mean anything"
    );
    // The ledger of everything that happened, killed requests included, verifies.
    dev_ledger_verifies(&d);
}

#[test]
fn sealing_while_busy_drops_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    let ds = d.to_str().unwrap();
    let v = super::init_json(&d);
    let share = v["shares"][0].as_str().unwrap().to_string();
    let server = start(&["--data-dir", ds, "--danger-no-auth"]);
    ok(&medvault(&["unseal", "--server", &server.url], &share));
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (base, acked, stop) = (server.url.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || writer(base, format!("s{w}"), acked, stop))
        })
        .collect();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(150));
        ok(&medvault(&["seal", "--server", &server.url], &share));
        std::thread::sleep(Duration::from_millis(100));
        ok(&medvault(&["unseal", "--server", &server.url], &share));
    }
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let all = acked.lock().unwrap().clone();
    assert!(
        all.len() > 10,
        "only {} writes were acknowledged",
        all.len()
    );
    check(&server.url, &all);
    check_no_partial_transactions(&server.url);
    drop(server);
    let out = ok(&medvault(&["ledger", "verify", "--data-dir", ds], &share));
    assert!(out.contains("ledger ok"), "{out}");
}
