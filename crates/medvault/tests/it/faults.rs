//! Storage faults on a real server process: a full disk (a small tmpfs), a data directory
//! that cannot be written, and a database held by another process. Each gets a clear error
//! that says nothing was written, nothing acknowledged is lost, and the server recovers
//! once the fault is gone. Mounting needs root, which the CI machine has; without it these
//! tests fail and say why rather than pass without testing anything.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use super::{dev_ledger_verifies, fails, http, medvault, start};

/// A tmpfs mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn new(parent: &Path, size: &str) -> Tmpfs {
        let dir = parent.join("small-disk");
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "these fault tests mount a small tmpfs and need root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn remount(&self, options: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}

fn post(agent: &ureq::Agent, url: &str, body: &Value) -> (u16, Value) {
    let resp = agent
        .post(url)
        .header("Content-Type", "application/fhir+json")
        .send(body.to_string())
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.into_body().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn get_status(agent: &ureq::Agent, url: &str) -> u16 {
    agent.get(url).call().unwrap().status().as_u16()
}

/// The answer to a write the full disk refused: 507 with an OperationOutcome that says so
/// and that nothing was written.
fn assert_storage_full(status: u16, outcome: &Value) {
    assert_eq!(status, 507, "{outcome}");
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    let text = outcome["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        text.contains("storage is full") && text.contains("nothing was written"),
        "{text}"
    );
}

/// Write with `write(n)` for n = 0, 1, ... (at most `limit` times) until one is refused:
/// what the acknowledged writes returned, and the refused one's number, status and answer.
fn write_until_refused<T>(
    limit: usize,
    mut write: impl FnMut(usize) -> Result<T, (u16, Value)>,
) -> (Vec<T>, usize, u16, Value) {
    let mut acked = Vec::new();
    for n in 0..limit {
        match write(n) {
            Ok(ack) => acked.push(ack),
            Err((status, answer)) => return (acked, n, status, answer),
        }
    }
    panic!("the disk never filled up");
}

fn patient(n: usize) -> Value {
    // Some bulk, so the disk fills in a few hundred writes.
    json!({"resourceType": "Patient", "name": [{"family": format!("full{n}"), "given": ["x".repeat(2000)]}]})
}

#[test]
fn a_full_disk_is_a_clear_error_that_loses_nothing_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = Tmpfs::new(tmp.path(), "6m");
    let d = disk.dir.join("data");
    let ds = d.to_str().unwrap();
    let server = start(&["--dev", "--data-dir", ds]);
    let agent = agent();
    let url = format!("{}/fhir/Patient", server.url);
    let (mut acked, _, status, outcome) = write_until_refused(20_000, |n| {
        let (status, v) = post(&agent, &url, &patient(n));
        match status {
            201 => Ok(v["id"].as_str().unwrap().to_string()),
            _ => Err((status, v)),
        }
    });
    assert_storage_full(status, &outcome);
    assert!(acked.len() > 10, "only {} writes fit", acked.len());
    // Still full: refused again, and the server is alive to say so.
    assert_eq!(post(&agent, &url, &patient(0)).0, 507);
    // Space comes back: the same process writes again.
    disk.remount("size=64m");
    let (status, v) = post(&agent, &url, &patient(1));
    assert_eq!(status, 201, "{v}");
    acked.push(v["id"].as_str().unwrap().to_string());
    // And after a restart everything acknowledged is there, and the ledger verifies.
    drop(server);
    let server = start(&["--dev", "--data-dir", ds]);
    let url = format!("{}/fhir/Patient", server.url);
    for id in &acked {
        assert_eq!(
            get_status(&agent, &format!("{url}/{id}")),
            200,
            "Patient/{id} lost"
        );
    }
    drop(server);
    dev_ledger_verifies(&d);
}

/// A transaction Bundle large enough for the pipelined commit (one Patient and 19
/// Observations of some bulk, all inline), its Patient named `family`.
fn chart(family: &str) -> Value {
    let urn = "urn:uuid:33333333-3333-4333-8333-333333333333";
    let mut entries = vec![json!({
        "fullUrl": urn,
        "resource": {"resourceType": "Patient", "name": [{"family": family}]},
        "request": {"method": "POST", "url": "Patient"}
    })];
    for i in 0..19 {
        entries.push(json!({
            "resource": {
                "resourceType": "Observation", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}],
                         "text": "x".repeat(1500)},
                "subject": {"reference": urn},
                "effectiveDateTime": "2024-03-01",
                "valueQuantity": {"value": 60 + i, "unit": "/min"}
            },
            "request": {"method": "POST", "url": "Observation"}
        }));
    }
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// The same for the pipelined transaction, whose COMMIT runs on a pool thread: the disk
/// fills at that COMMIT (the pages reach the WAL there), the whole Bundle is refused with
/// the same clear error and none of it is stored, and once there is room again the same
/// process commits Bundles again; after a restart every acknowledged one is whole.
#[test]
fn a_full_disk_refuses_a_whole_transaction_and_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = Tmpfs::new(tmp.path(), "6m");
    let d = disk.dir.join("data");
    let ds = d.to_str().unwrap();
    let server = start(&["--dev", "--data-dir", ds]);
    let agent = agent();
    let base = format!("{}/fhir", server.url);
    let count = |family: &str, base: &str| -> (u64, u64) {
        let get = |url: String| -> Value { http("GET", &url, None).1 };
        let patients = get(format!("{base}/Patient?family={family}"));
        let total = patients["total"].as_u64().unwrap();
        let observations = match patients["entry"][0]["resource"]["id"].as_str() {
            Some(id) => get(format!("{base}/Observation?patient={id}&_count=1"))["total"]
                .as_u64()
                .unwrap(),
            None => 0,
        };
        (total, observations)
    };
    // No name a prefix of another: name searches match prefixes.
    let family = |n: usize| format!("chart{n}x");
    let (mut acked, refused, status, outcome) = write_until_refused(2_000, |n| {
        let (status, v) = post(&agent, &base, &chart(&family(n)));
        match status {
            200 => {
                assert_eq!(v["entry"].as_array().unwrap().len(), 20, "{v}");
                Ok(family(n))
            }
            _ => Err((status, v)),
        }
    });
    let refused = family(refused);
    assert!(acked.len() > 3, "only {} Bundles fit", acked.len());
    // The disk filled either at the Bundle's own COMMIT (refused: nothing of it written) or
    // just after it, at the request's summary audit entry (carried out: the Bundle is stored
    // with its writes' own entries, and the answer is withheld). Never anything between.
    let text = outcome["issue"][0]["diagnostics"].as_str().unwrap_or("");
    let carried_out = text.contains("carried out");
    if carried_out {
        assert_eq!(status, 507, "{outcome}");
        assert!(
            text.contains("what it wrote is stored") && text.contains("answer is withheld"),
            "{text}"
        );
    } else {
        assert_storage_full(status, &outcome);
    }
    // While the disk is full even a search may be refused: its audit entry is committed
    // before the answer leaves, and with no room for it the server fails closed, with the
    // same clear error (likelier with 8 KiB pages, each a larger WAL frame).
    let (status, found) = http("GET", &format!("{base}/Patient?family={refused}"), None);
    match status {
        200 => assert_eq!(
            found["total"],
            u64::from(carried_out),
            "{refused}: carried out {carried_out}"
        ),
        _ => assert_storage_full(status, &found),
    }
    disk.remount("size=64m");
    if carried_out {
        // Space comes back: the Bundle is there, whole.
        assert_eq!(count(&refused, &base), (1, 19), "{refused} is not whole");
    } else {
        // Space comes back: nothing of the refused Bundle is there, and the same process
        // then commits it, whole.
        assert_eq!(
            count(&refused, &base),
            (0, 0),
            "part of {refused} was stored"
        );
        let (status, v) = post(&agent, &base, &chart(&refused));
        assert_eq!(status, 200, "{v}");
    }
    acked.push(refused);
    drop(server);
    let server = start(&["--dev", "--data-dir", ds]);
    let base = format!("{}/fhir", server.url);
    for family in &acked {
        assert_eq!(count(family, &base), (1, 19), "{family} is not whole");
    }
    drop(server);
    dev_ledger_verifies(&d);
}

#[test]
fn a_read_only_data_directory_is_refused_at_start_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = Tmpfs::new(tmp.path(), "16m");
    let d = disk.dir.join("data");
    let ds = d.to_str().unwrap();
    let server = start(&["--dev", "--data-dir", ds]);
    let (status, _) = post(
        &agent(),
        &format!("{}/fhir/Patient", server.url),
        &patient(0),
    );
    assert_eq!(status, 201);
    drop(server);
    disk.remount("ro");
    let err = fails(&medvault(
        &[
            "serve",
            "--dev",
            "--data-dir",
            ds,
            "--listen",
            "127.0.0.1:0",
        ],
        "",
    ));
    assert!(
        err.contains("cannot be opened or written") && err.contains("Read-only file system"),
        "{err}"
    );
    disk.remount("rw");
    let server = start(&["--dev", "--data-dir", ds]);
    let (status, _) = post(
        &agent(),
        &format!("{}/fhir/Patient", server.url),
        &patient(1),
    );
    assert_eq!(status, 201);
}

#[test]
fn a_database_held_by_another_process_is_a_clear_error_until_released() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    let ds = d.to_str().unwrap();
    let server = start(&["--dev", "--data-dir", ds]);
    let agent = agent();
    let url = format!("{}/fhir/Patient", server.url);
    assert_eq!(post(&agent, &url, &patient(0)).0, 201);
    // Another process (here: this test) takes the write lock and keeps it past the
    // server's busy timeout.
    let other = rusqlite::Connection::open(d.join("medvault.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (status, outcome) = post(&agent, &url, &patient(1));
    assert_eq!(status, 503, "{outcome}");
    let text = outcome["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        text.contains("busy") && text.contains("nothing was written"),
        "{text}"
    );
    other.execute_batch("ROLLBACK").unwrap();
    let (status, v) = post(&agent, &url, &patient(2));
    assert_eq!(status, 201, "{v}");
}
