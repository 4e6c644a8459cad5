//! End-to-end tests of the `medvault` binary: real processes, a real SQLite data directory
//! and real HTTP on loopback (init, serve, unseal, import, rotate, rekey, seal, dev mode).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use serde_json::{json, Value};

mod api_fuzz;
mod architecture;
mod bench;
mod clients;
mod crash;
mod faults;

const BIN: &str = env!("CARGO_BIN_EXE_medvault");

/// A running `medvault serve`, killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str]) -> Server {
    start_with(args, |_| {})
}

/// `start`, with `env` adjusting the server's environment first.
fn start_with(args: &[&str], env: impl FnOnce(&mut Command)) -> Server {
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .env("MEDVAULT_LOG", "warn");
    env(&mut command);
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("MEDVAULT_TEST_SERVER_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines
        .next()
        .expect("server exited before listening")
        .unwrap();
    let url = first
        .strip_prefix("medvault listening on ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_string();
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, url }
}

fn medvault(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env("MEDVAULT_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `medvault ledger verify` of a `--dev` data directory (the share it keeps on disk on
/// stdin) succeeds and says the ledger is whole; returns the share.
fn dev_ledger_verifies(dir: &Path) -> String {
    let share = std::fs::read_to_string(dir.join("dev-unseal-share")).unwrap();
    let data_dir = dir.to_str().unwrap();
    let out = ok(&medvault(
        &["ledger", "verify", "--data-dir", data_dir],
        &share,
    ));
    assert!(out.contains("ledger ok"), "{out}");
    share
}

/// The one-line error of a failed command.
fn fails(out: &Output) -> String {
    assert!(!out.status.success(), "command unexpectedly succeeded");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    lines[0].to_string()
}

fn http(method: &str, url: &str, body: Option<&Value>) -> (u16, Value) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let resp = match body {
        Some(b) => agent
            .post(url)
            .header("Content-Type", "application/fhir+json")
            .send(b.to_string()),
        None if method == "GET" => agent.get(url).call(),
        None => panic!("unsupported"),
    }
    .unwrap();
    let status = resp.status().as_u16();
    let text = resp.into_body().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `medvault` with extra environment variables.
fn medvault_env(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("MEDVAULT_LOG", "warn")
        .env_remove("MEDVAULT_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn init_json(dir: &Path) -> Value {
    let out = medvault(
        &[
            "init",
            "--data-dir",
            dir.to_str().unwrap(),
            "--shares",
            "1",
            "--threshold",
            "1",
            "--json",
        ],
        "",
    );
    serde_json::from_str(&ok(&out)).unwrap()
}

fn init(dir: &Path, shares: u8, threshold: u8) -> Vec<String> {
    let out = medvault(
        &[
            "init",
            "--data-dir",
            dir.to_str().unwrap(),
            "--shares",
            &shares.to_string(),
            "--threshold",
            &threshold.to_string(),
            "--json",
        ],
        "",
    );
    let v: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert!(v["bootstrap_token"].as_str().unwrap().starts_with("mvb_"));
    v["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn operator_lifecycle_over_http_and_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let shares = init(&data, 3, 2);
    assert_eq!(shares.len(), 3);
    // Re-initializing is refused and changes nothing.
    let again = medvault(
        &["init", "--data-dir", d, "--shares", "1", "--threshold", "1"],
        "",
    );
    assert!(fails(&again).contains("already initialized"));

    // Anonymous FHIR access for this operator walkthrough (accounts have their own test).
    let server = start(&["--data-dir", d, "--danger-no-auth"]);
    let url = server.url.clone();
    let status = ok(&medvault(&["status", "--server", &url], ""));
    assert!(status.contains("sealed: 0 of 2"), "{status}");
    let (code, body) = http("GET", &format!("{url}/fhir/Patient"), None);
    assert_eq!(code, 503);
    assert_eq!(body["resourceType"], "OperationOutcome");

    // A malformed share and a duplicate are refused with a clear message; progress stays.
    let bad = fails(&medvault(
        &["unseal", "--server", &url],
        "medvault-share:v1:nope\n",
    ));
    assert!(bad.contains("malformed share"), "{bad}");
    let one = ok(&medvault(&["unseal", "--server", &url], &shares[0]));
    assert!(one.contains("1 of 2"), "{one}");
    let dup = fails(&medvault(&["unseal", "--server", &url], &shares[0]));
    assert!(dup.contains("already provided"), "{dup}");
    let two = ok(&medvault(&["unseal", "--server", &url], &shares[2]));
    assert!(two.contains("unsealed"), "{two}");

    // Import a generated multi-patient transaction Bundle and an NDJSON file.
    let bundle = tmp.path().join("bundle.json");
    ok(&medvault(
        &[
            "gen",
            "--patients",
            "6",
            "--observations",
            "3",
            "--seed",
            "5",
            "--out",
            bundle.to_str().unwrap(),
        ],
        "",
    ));
    let ndjson = tmp.path().join("practitioners.ndjson");
    let lines: Vec<String> = (0..7)
        .map(|i| {
            json!({"resourceType": "Practitioner", "id": format!("pr-{i}"),
                   "identifier": [{"system": "urn:npi", "value": format!("NPI{i}")}],
                   "name": [{"family": "Doctor", "given": [format!("G{i}")]}]})
            .to_string()
        })
        .collect();
    std::fs::write(&ndjson, lines.join("\n")).unwrap();
    let imported = ok(&medvault(
        &[
            "import",
            "--server",
            &url,
            "--batch",
            "3",
            bundle.to_str().unwrap(),
            ndjson.to_str().unwrap(),
        ],
        "",
    ));
    assert!(imported.contains("imported 49 resources"), "{imported}");
    let total = |q: &str| {
        http("GET", &format!("{url}/fhir/{q}"), None).1["total"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(total("Patient"), 6);
    assert_eq!(total("Observation"), 18);
    assert_eq!(total("Encounter"), 6);
    assert_eq!(total("Practitioner?identifier=urn:npi|NPI3"), 1);
    let (_, pats) = http("GET", &format!("{url}/fhir/Patient?_count=1"), None);
    let pid = pats["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(total(&format!("Observation?patient={pid}")), 3);
    // An invalid file is refused with a one-line error, and nothing of it is stored.
    let bad_file = tmp.path().join("bad.json");
    std::fs::write(
        &bad_file,
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "gender": "robot"}, "request": {"method": "POST", "url": "Patient"}}
        ]})
        .to_string(),
    )
    .unwrap();
    let err = fails(&medvault(
        &["import", "--server", &url, bad_file.to_str().unwrap()],
        "",
    ));
    assert!(err.contains("Patient.gender"), "{err}");
    assert_eq!(total("Patient"), 6);
    // A batch with one bad entry: the good one is stored, and the import says what failed.
    let batch_file = tmp.path().join("batch.json");
    std::fs::write(
        &batch_file,
        json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": {"resourceType": "Patient", "name": [{"family": "Batch"}]}, "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Patient", "birthDate": "2020-02-31"}, "request": {"method": "POST", "url": "Patient"}}
        ]})
        .to_string(),
    )
    .unwrap();
    let err = fails(&medvault(
        &["import", "--server", &url, batch_file.to_str().unwrap()],
        "",
    ));
    assert!(
        err.contains("1 of 2 entries failed") && err.contains("Patient.birthDate"),
        "{err}"
    );
    assert_eq!(total("Patient"), 7);

    // Rotate the KEK online: the CLI follows the re-wrap to the end.
    let rotated = ok(&medvault(&["keys", "rotate", "--server", &url], &shares[1]));
    assert!(
        rotated.contains("new key-encryption key version 2"),
        "{rotated}"
    );
    assert!(
        rotated.contains("all data keys are wrapped by the new version"),
        "{rotated}"
    );
    assert_eq!(total("Patient"), 7);

    // Rekey to 1 of 2 with two old shares.
    let rekeyed = ok(&medvault(
        &[
            "rekey",
            "--server",
            &url,
            "--shares",
            "2",
            "--threshold",
            "1",
            "--json",
        ],
        &format!("{}\n{}\n", shares[0], shares[1]),
    ));
    let new: Value = serde_json::from_str(&rekeyed).unwrap();
    let new_share = new["shares"][1].as_str().unwrap().to_string();

    // Seal with the new share; the old one is refused.
    assert!(
        fails(&medvault(&["seal", "--server", &url], &shares[2])).contains("different share set")
    );
    let sealed = ok(&medvault(&["seal", "--server", &url], &new_share));
    assert!(sealed.contains("sealed: 0 of 1"), "{sealed}");
    assert_eq!(http("GET", &format!("{url}/fhir/Patient"), None).0, 503);

    // Restart: the server comes up sealed; the new share unseals; everything is there.
    drop(server);
    let server = start(&["--data-dir", d, "--danger-no-auth"]);
    let url = server.url.clone();
    assert_eq!(http("GET", &format!("{url}/fhir/Patient"), None).0, 503);
    ok(&medvault(&["unseal", "--server", &url], &new_share));
    let total = |q: &str| {
        http("GET", &format!("{url}/fhir/{q}"), None).1["total"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(total("Patient"), 7);
    assert_eq!(total("Practitioner"), 7);
}

#[test]
fn serve_refuses_unsafe_or_missing_setups() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("fresh");
    let d = d.to_str().unwrap();
    let err = fails(&medvault(
        &["serve", "--data-dir", d, "--listen", "127.0.0.1:0"],
        "",
    ));
    assert!(err.contains("not initialized"), "{err}");
    init(Path::new(d), 1, 1);
    let err = fails(&medvault(
        &["serve", "--data-dir", d, "--listen", "0.0.0.0:0"],
        "",
    ));
    assert!(err.contains("--danger-allow-plain-http"), "{err}");
    let err = fails(&medvault(
        &["init", "--data-dir", d, "--shares", "2", "--threshold", "3"],
        "",
    ));
    assert!(err.contains("threshold"), "{err}");
    // A webhook URL that could never be used is refused at start, and not repeated (a
    // webhook's URL often holds its secret).
    for bad in [
        "hooks.example/T0/secret-part",
        "ftp://hooks.example/secret-part",
        "https:///secret-part",
    ] {
        let err = fails(&medvault(
            &[
                "serve",
                "--data-dir",
                d,
                "--listen",
                "127.0.0.1:0",
                "--alert-webhook",
                bad,
            ],
            "",
        ));
        assert!(err.contains("must be an http:// or https:// URL"), "{err}");
        assert!(!err.contains("secret-part"), "{err}");
    }
}

#[test]
fn dev_mode_initializes_unseals_and_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("dev");
    let ds = d.to_str().unwrap();
    let server = start(&["--dev", "--data-dir", ds]);
    let (code, _) = http(
        "POST",
        &format!("{}/fhir/Patient", server.url),
        Some(&json!({"resourceType": "Patient", "name": [{"family": "Dev"}]})),
    );
    assert_eq!(code, 201);
    let share_file = d.join("dev-unseal-share");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&share_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    drop(server);
    let server = start(&["--dev", "--data-dir", ds]);
    let (_, found) = http(
        "GET",
        &format!("{}/fhir/Patient?family=dev", server.url),
        None,
    );
    assert_eq!(found["total"], 1);
    // Database deleted but share file left behind: dev mode starts a fresh vault.
    drop(server);
    for f in ["medvault.db", "medvault.db-wal", "medvault.db-shm"] {
        let _ = std::fs::remove_file(d.join(f));
    }
    let server = start(&["--dev", "--data-dir", ds]);
    let (_, found) = http("GET", &format!("{}/fhir/Patient", server.url), None);
    assert_eq!(found["total"], 0);
}

/// `medvault compact` on a data directory an older medvault made (4 KiB pages): refused
/// while the server runs, then, with the server killed (its last commits in the WAL), the
/// database gets the current page size, and the server finds everything it had, writes,
/// and its ledger verifies.
#[test]
fn compact_gives_an_older_database_large_pages_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("dev");
    let ds = d.to_str().unwrap();
    std::fs::create_dir(&d).unwrap();
    let db = d.join("medvault.db");
    let page_size = || -> i64 {
        rusqlite::Connection::open(&db)
            .unwrap()
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap()
    };
    {
        // As SQLite made it before medvault chose its own page size.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    }
    let server = start(&["--dev", "--data-dir", ds]);
    add_patients(&server.url, "Compact", 30);
    assert_eq!(page_size(), 4096);

    let err = fails(&medvault(&["compact", "--data-dir", ds], ""));
    assert!(err.contains("in use"), "{err}");
    drop(server);
    assert!(d.join("medvault.db-wal").exists(), "the kill left no WAL");

    let out = ok(&medvault(&["compact", "--data-dir", ds], ""));
    assert!(
        out.contains(&format!(
            "4096-byte pages -> {}-byte pages",
            medvault_store::PAGE_SIZE
        )),
        "{out}"
    );
    assert_eq!(page_size(), i64::from(medvault_store::PAGE_SIZE));

    let server = start(&["--dev", "--data-dir", ds]);
    let (_, found) = http(
        "GET",
        &format!("{}/fhir/Patient?family=compact", server.url),
        None,
    );
    assert_eq!(found["total"], 30, "{found}");
    add_patients(&server.url, "After", 1);
    drop(server);
    dev_ledger_verifies(&d);

    let missing = tmp.path().join("nothing-here");
    let err = fails(&medvault(
        &["compact", "--data-dir", missing.to_str().unwrap()],
        "",
    ));
    assert!(err.contains("no database at"), "{err}");
    assert!(!missing.exists(), "compact created {}", missing.display());
}

/// Two servers on one data directory would each keep their own in-memory state (keys,
/// the ledger's tree, caches) over the one database: the second refuses to start, and
/// changes nothing. Once the first has stopped, however it stopped, a new one starts.
#[test]
fn a_second_server_on_the_same_data_dir_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("dev");
    let ds = d.to_str().unwrap();
    let first = start(&["--dev", "--data-dir", ds]);
    add_patients(&first.url, "Only", 1);

    let err = refused_to_serve(&["--dev", "--data-dir", ds]);
    assert!(err.contains("in use by another medvault process"), "{err}");
    let (code, found) = http(
        "GET",
        &format!("{}/fhir/Patient?family=only", first.url),
        None,
    );
    assert_eq!((code, found["total"].clone()), (200, json!(1)), "{found}");

    // Killed, not stopped: the lock went with the process.
    drop(first);

    // The lock is taken before the database is opened: a server (or `init`) refused by
    // someone else's lock has not created, migrated or written anything.
    let fresh = tmp.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    let held = std::fs::File::create(fresh.join("medvault.lock")).unwrap();
    held.try_lock().unwrap();
    let fs = fresh.to_str().unwrap();
    let err = refused_to_serve(&["--dev", "--data-dir", fs]);
    assert!(err.contains("in use by another medvault process"), "{err}");
    let err = fails(&medvault(
        &[
            "init",
            "--data-dir",
            fs,
            "--shares",
            "1",
            "--threshold",
            "1",
        ],
        "",
    ));
    assert!(err.contains("in use"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&fresh)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["medvault.lock"]);
    drop(held);

    let again = start(&["--dev", "--data-dir", ds]);
    let (_, found) = http(
        "GET",
        &format!("{}/fhir/Patient?family=only", again.url),
        None,
    );
    assert_eq!(found["total"], 1, "{found}");
}

/// `medvault backup` while the server runs, then `medvault restore` into a new data
/// directory: the restored server has what was committed before the backup (a document
/// large enough for the blob store included) and nothing after it, and its ledger
/// verifies. Bad sources and targets are refused with one line, changing nothing.
#[test]
fn backup_while_serving_and_restore_into_a_new_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("dev");
    let ds = d.to_str().unwrap();
    let b = tmp.path().join("backup");
    let bs = b.to_str().unwrap();
    let server = start(&["--dev", "--data-dir", ds]);
    add_patients(&server.url, "Kept", 5);
    let (code, p) = http(
        "POST",
        &format!("{}/fhir/Patient", server.url),
        Some(&json!({"resourceType": "Patient", "name": [{"family": "Owner"}]})),
    );
    assert_eq!(code, 201);
    // About 300 KiB once decoded: its envelope goes to the blob store.
    let data = "eHh4".repeat(100_000);
    let (code, doc) = http(
        "POST",
        &format!("{}/fhir/DocumentReference", server.url),
        Some(&json!({
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": {"reference": format!("Patient/{}", p["id"].as_str().unwrap())},
            "content": [{"attachment": {"contentType": "text/plain", "data": data}}],
        })),
    );
    assert_eq!(code, 201, "{doc}");
    let doc_id = doc["id"].as_str().unwrap().to_string();

    // A backup that fails (here its source is not a medvault database) leaves its target
    // usable: the retry goes into the same directory.
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    rusqlite::Connection::open(foreign.join("medvault.db"))
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT);")
        .unwrap();
    let err = fails(&medvault(
        &[
            "backup",
            "--data-dir",
            foreign.to_str().unwrap(),
            "--to",
            bs,
        ],
        "",
    ));
    assert!(err.contains("not a medvault database"), "{err}");
    let out = ok(&medvault(&["backup", "--data-dir", ds, "--to", bs], ""));
    assert!(
        out.contains("backed up") && out.contains("1 blobs"),
        "{out}"
    );
    assert!(out.contains("dev-mode share file was not copied"), "{out}");
    assert!(!b.join("dev-unseal-share").exists());
    add_patients(&server.url, "Later", 2);
    let err = fails(&medvault(&["backup", "--data-dir", ds, "--to", bs], ""));
    assert!(err.contains("not empty"), "{err}");
    drop(server);

    let r = tmp.path().join("restored");
    let rs = r.to_str().unwrap();
    // What an interrupted restore leaves (its unfinished copy) does not stop the next one.
    std::fs::create_dir(&r).unwrap();
    std::fs::write(r.join("medvault.db-restoring"), b"half a copy").unwrap();
    let out = ok(&medvault(&["restore", "--from", bs, "--data-dir", rs], ""));
    assert!(!r.join("medvault.db-restoring").exists());
    assert!(out.contains("restored"), "{out}");
    // The operator brings the vault's key shares; in dev mode that is the share file.
    std::fs::copy(d.join("dev-unseal-share"), r.join("dev-unseal-share")).unwrap();
    let server = start(&["--dev", "--data-dir", rs]);
    let count = |family: &str| {
        let (_, found) = http(
            "GET",
            &format!("{}/fhir/Patient?family={family}", server.url),
            None,
        );
        found["total"].clone()
    };
    assert_eq!((count("kept"), count("later")), (json!(5), json!(0)));
    let (code, got) = http(
        "GET",
        &format!("{}/fhir/DocumentReference/{doc_id}", server.url),
        None,
    );
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["content"][0]["attachment"]["data"], json!(data));
    drop(server);
    dev_ledger_verifies(&r);

    let err = fails(&medvault(&["restore", "--from", bs, "--data-dir", rs], ""));
    assert!(err.contains("already holds a database"), "{err}");
    // Nor beside a stale WAL or journal, which SQLite would apply to the restored file.
    let stale = tmp.path().join("stale");
    std::fs::create_dir(&stale).unwrap();
    for leftover in ["medvault.db-journal", "medvault.db-wal"] {
        std::fs::write(stale.join(leftover), b"old").unwrap();
        let err = fails(&medvault(
            &[
                "restore",
                "--from",
                bs,
                "--data-dir",
                stale.to_str().unwrap(),
            ],
            "",
        ));
        assert!(err.contains(leftover), "{err}");
        assert!(!stale.join("medvault.db").exists());
        std::fs::remove_file(stale.join(leftover)).unwrap();
    }
    // A backup that lost a blob is incomplete, and refused before anything is written.
    let partial = tmp.path().join("partial-backup");
    copy_dir(&b, &partial);
    let mut blob = partial.join("blobs");
    while blob.is_dir() {
        blob = std::fs::read_dir(&blob)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
    }
    std::fs::remove_file(&blob).unwrap();
    let target = tmp.path().join("from-partial");
    let err = fails(&medvault(
        &[
            "restore",
            "--from",
            partial.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ],
        "",
    ));
    assert!(err.contains("incomplete"), "{err}");
    assert!(!target.exists());
    let err = fails(&medvault(&["restore", "--from", ds, "--data-dir", rs], ""));
    assert!(err.contains("not a complete medvault backup"), "{err}");
    let missing = tmp.path().join("none");
    let err = fails(&medvault(
        &[
            "backup",
            "--data-dir",
            missing.to_str().unwrap(),
            "--to",
            bs,
        ],
        "",
    ));
    assert!(err.contains("no database at"), "{err}");
    assert!(!missing.exists());
}

/// The one-line error of a `medvault serve` that must refuse to start; a server that starts
/// anyway fails the test within a minute rather than hang it.
fn refused_to_serve(args: &[&str]) -> String {
    let mut server = Command::new(BIN)
        .arg("serve")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .env("MEDVAULT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while server.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = server.kill();
            panic!("the server started: {args:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    fails(&server.wait_with_output().unwrap())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn add_patients(url: &str, family: &str, n: usize) {
    for i in 0..n {
        let (code, _) = http(
            "POST",
            &format!("{url}/fhir/Patient"),
            Some(&json!({"resourceType": "Patient", "name": [{"family": format!("{family}{i}")}]})),
        );
        assert_eq!(code, 201);
    }
}

#[test]
fn ledger_witness_and_verify_catch_a_replaced_database() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("data");
    let ds = d.to_str().unwrap();
    let state = tmp.path().join("witness.json");
    let st = state.to_str().unwrap();
    let args = ["--dev", "--data-dir", ds, "--ledger-checkpoint-every", "2"];

    let server = start(&args);
    add_patients(&server.url, "Before", 4);
    let out = ok(&medvault(
        &["ledger", "witness", "--server", &server.url, "--state", st],
        "",
    ));
    assert!(out.contains("pinned"), "{out}");
    // Kill the server (acknowledged writes are durable) and keep a copy of this history.
    drop(server);
    let backup = tmp.path().join("backup");
    copy_dir(&d, &backup);

    let server = start(&args);
    add_patients(&server.url, "After", 4);
    let out = ok(&medvault(
        &["ledger", "witness", "--server", &server.url, "--state", st],
        "",
    ));
    assert!(out.contains("ledger consistent"), "{out}");
    drop(server);

    // Offline verification of the real file, with the share on stdin.
    let share = dev_ledger_verifies(&d);

    // Someone replaces the database with the older copy and the server writes a different
    // history on top: the witness refuses it.
    for f in ["medvault.db", "medvault.db-wal", "medvault.db-shm"] {
        let _ = std::fs::remove_file(d.join(f));
        if backup.join(f).exists() {
            std::fs::copy(backup.join(f), d.join(f)).unwrap();
        }
    }
    let server = start(&args);
    add_patients(&server.url, "Forged", 8);
    let err = fails(&medvault(
        &["ledger", "witness", "--server", &server.url, "--state", st],
        "",
    ));
    assert!(err.contains("FORK"), "{err}");
    drop(server);

    // An entry edited in the file is named by verify.
    let conn = rusqlite::Connection::open(d.join("medvault.db")).unwrap();
    conn.execute(
        "UPDATE ledger_entry SET envelope = zeroblob(length(envelope)) WHERE idx = 3",
        [],
    )
    .unwrap();
    drop(conn);
    let err = fails(&medvault(&["ledger", "verify", "--data-dir", ds], &share));
    assert!(err.contains("ledger entry 3 is bad"), "{err}");
    // Without a valid share nothing is opened.
    let err = fails(&medvault(
        &["ledger", "verify", "--data-dir", ds],
        "not-a-share\n",
    ));
    assert!(err.contains("share refused"), "{err}");
}

#[test]
fn register_log_in_and_sign_requests_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let v = init_json(&data);
    let share = v["shares"][0].as_str().unwrap().to_string();
    let bootstrap = v["bootstrap_token"].as_str().unwrap().to_string();
    let server = start(&["--data-dir", data.to_str().unwrap()]);
    let url = server.url.clone();
    ok(&medvault(&["unseal", "--server", &url], &share));
    let session = tmp.path().join("session.json");
    let sess = session.to_str().unwrap();

    // The password comes from stdin here (MEDVAULT_PASSWORD works too).
    let out = ok(&medvault_env(
        &[
            "register",
            "--server",
            &url,
            "--token",
            &bootstrap,
            "--login",
            "root",
            "--national-id",
            "NID-1",
        ],
        &[],
        "s3cret pass\n",
    ));
    assert!(out.contains("as admin"), "{out}");
    // The bootstrap token is spent: a one-line error and a non-zero exit.
    let err = fails(&medvault_env(
        &[
            "register",
            "--server",
            &url,
            "--token",
            &bootstrap,
            "--login",
            "two",
            "--national-id",
            "NID-2",
        ],
        &[],
        "other\n",
    ));
    assert!(err.contains("registration token"), "{err}");

    let err = fails(&medvault_env(
        &["login", "--server", &url, "--login", "root"],
        &[("MEDVAULT_SESSION", sess), ("MEDVAULT_PASSWORD", "wrong")],
        "",
    ));
    assert!(err.contains("wrong login name or password"), "{err}");
    assert!(!session.exists());

    let out = ok(&medvault_env(
        &["login", "--server", &url, "--login", "ROOT"],
        &[
            ("MEDVAULT_SESSION", sess),
            ("MEDVAULT_PASSWORD", "s3cret pass"),
        ],
        "",
    ));
    assert!(out.contains("logged in"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&session).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = ok(&medvault_env(
        &["whoami"],
        &[("MEDVAULT_SESSION", sess)],
        "",
    ));
    assert!(out.contains("(admin)"), "{out}");
    // Signed FHIR requests are authenticated and decided by the policy: an admin manages
    // accounts and may not touch clinical data (separation of duties).
    let patient = tmp.path().join("p.json");
    std::fs::write(
        &patient,
        r#"{"resourceType": "Patient", "name": [{"family": "Cli"}]}"#,
    )
    .unwrap();
    let err = fails(&medvault_env(
        &["fhir", "POST", "Patient", patient.to_str().unwrap()],
        &[("MEDVAULT_SESSION", sess)],
        "",
    ));
    assert!(
        err.contains("HTTP 403") && err.contains("admin-no-clinical"),
        "{err}"
    );
    // Without a token the FHIR API refuses: this server was not started with
    // --danger-no-auth.
    let (code, _) = http("GET", &format!("{url}/fhir/Patient"), None);
    assert_eq!(code, 401);

    // The admin issues a receptionist token; the receptionist registers (a key bundle is
    // made and sealed under the password) and logs in (the bundle opens again).
    let as_admin = [("MEDVAULT_SESSION", sess)];
    let token = ok(&medvault_env(
        &[
            "admin",
            "token",
            "--role",
            "receptionist",
            "--link",
            "Practitioner/rec-1",
        ],
        &as_admin,
        "",
    ))
    .trim()
    .to_string();
    assert!(token.starts_with("mvr_"), "{token}");
    let out = ok(&medvault_env(
        &[
            "register",
            "--server",
            &url,
            "--token",
            &token,
            "--login",
            "rec",
            "--national-id",
            "NID-3",
        ],
        &[("MEDVAULT_PASSWORD", "front desk pw")],
        "",
    ));
    let bundle = out
        .split("key bundle ")
        .nth(1)
        .unwrap()
        .trim_end_matches([')', '\n'])
        .to_string();
    assert_eq!(bundle.len(), 16, "{out}");
    let rec_session = tmp.path().join("rec.json");
    let rec = [("MEDVAULT_SESSION", rec_session.to_str().unwrap())];
    let out = ok(&medvault_env(
        &["login", "--server", &url, "--login", "rec"],
        &[rec[0], ("MEDVAULT_PASSWORD", "front desk pw")],
        "",
    ));
    assert!(
        out.contains(&format!("key bundle {bundle} opened")),
        "{out}"
    );
    let out = ok(&medvault_env(
        &["fhir", "POST", "Patient", patient.to_str().unwrap()],
        &rec,
        "",
    ));
    assert!(out.contains("\"Patient\""), "{out}");

    // Accounts are listed; disabling applies to the next request, enabling restores it.
    let out = ok(&medvault_env(&["admin", "accounts"], &as_admin, ""));
    assert_eq!(out.lines().count(), 2, "{out}");
    let rec_id = out
        .lines()
        .find(|l| l.contains("receptionist"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let out = ok(&medvault_env(
        &["admin", "account", &rec_id, "--disable"],
        &as_admin,
        "",
    ));
    assert!(out.contains("(disabled)"), "{out}");
    let err = fails(&medvault_env(&["whoami"], &rec, ""));
    assert!(err.contains("HTTP 401"), "{err}");
    ok(&medvault_env(
        &["admin", "account", &rec_id, "--enable"],
        &as_admin,
        "",
    ));
    let err = fails(&medvault_env(&["admin", "account", &rec_id], &as_admin, ""));
    assert!(err.contains("nothing to change"), "{err}");
    // The receptionist is no admin.
    let err = fails(&medvault_env(&["admin", "accounts"], &rec, ""));
    assert!(err.contains("HTTP 403"), "{err}");

    // A machine client is registered with its public key (RFC 8037's example Ed25519 key).
    let jwk = tmp.path().join("client.jwk");
    std::fs::write(
        &jwk,
        r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#,
    )
    .unwrap();
    let out = ok(&medvault_env(
        &[
            "client",
            "add",
            "--name",
            "lab-feed",
            "--role",
            "lab-technician",
            "--link",
            "Practitioner/bot|Organization/lab-1",
            "--jwk",
            jwk.to_str().unwrap(),
        ],
        &as_admin,
        "",
    ));
    assert!(
        out.contains("lab-feed") && out.contains("kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"),
        "{out}"
    );
    let client_id = out.split_whitespace().next().unwrap().to_string();
    let err = fails(&medvault_env(
        &[
            "client",
            "add",
            "--name",
            "lab-feed2",
            "--role",
            "admin",
            "--jwk",
            jwk.to_str().unwrap(),
        ],
        &as_admin,
        "",
    ));
    assert!(err.contains("HTTP 400"), "{err}");
    let out = ok(&medvault_env(
        &["client", "disable", &client_id],
        &as_admin,
        "",
    ));
    assert!(out.contains("disabled"), "{out}");
    let out = ok(&medvault_env(&["client", "list"], &as_admin, ""));
    assert_eq!(out.lines().count(), 1, "{out}");

    // An expired access token is renewed with the refresh token, transparently.
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&session).unwrap()).unwrap();
    let first_refresh = doc["refresh_token"].clone();
    doc["expires_at"] = json!(0);
    std::fs::write(&session, doc.to_string()).unwrap();
    let out = ok(&medvault_env(&["whoami"], &as_admin, ""));
    assert!(out.contains("(admin)"), "{out}");
    let doc: Value = serde_json::from_slice(&std::fs::read(&session).unwrap()).unwrap();
    assert_ne!(doc["refresh_token"], first_refresh);

    // Changing the password re-seals the same key bundle under the new one.
    let out = ok(&medvault_env(
        &["passwd", "--server", &url, "--login", "rec"],
        &[
            rec[0],
            ("MEDVAULT_PASSWORD", "front desk pw"),
            ("MEDVAULT_NEW_PASSWORD", "better desk pw"),
        ],
        "",
    ));
    assert!(
        out.contains(&format!("key bundle {bundle} re-sealed")),
        "{out}"
    );
    let err = fails(&medvault_env(
        &["login", "--server", &url, "--login", "rec"],
        &[rec[0], ("MEDVAULT_PASSWORD", "front desk pw")],
        "",
    ));
    assert!(err.contains("wrong login name or password"), "{err}");
    let out = ok(&medvault_env(
        &["login", "--server", &url, "--login", "rec"],
        &[rec[0], ("MEDVAULT_PASSWORD", "better desk pw")],
        "",
    ));
    assert!(
        out.contains(&format!("key bundle {bundle} opened")),
        "{out}"
    );

    // Logout ends the session on the server: a copy of the session file is useless.
    let copy = tmp.path().join("copy.json");
    std::fs::copy(&session, &copy).unwrap();
    let out = ok(&medvault_env(
        &["logout"],
        &[("MEDVAULT_SESSION", sess)],
        "",
    ));
    assert!(out.contains("session ended on the server"), "{out}");
    let err = fails(&medvault_env(
        &["whoami"],
        &[("MEDVAULT_SESSION", sess)],
        "",
    ));
    assert!(err.contains("not logged in"), "{err}");
    let err = fails(&medvault_env(
        &["whoami"],
        &[("MEDVAULT_SESSION", copy.to_str().unwrap())],
        "",
    ));
    assert!(err.contains("HTTP 401"), "{err}");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&copy).unwrap()).unwrap();
    doc["expires_at"] = json!(0);
    std::fs::write(&copy, doc.to_string()).unwrap();
    let err = fails(&medvault_env(
        &["whoami"],
        &[("MEDVAULT_SESSION", copy.to_str().unwrap())],
        "",
    ));
    assert!(err.contains("session has ended"), "{err}");
}

/// The server's own environment, as the kernel holds it (`/proc/PID/environ`).
#[cfg(all(target_os = "linux", feature = "mimalloc"))]
fn environ_of(server: &Server) -> Vec<String> {
    std::fs::read(format!("/proc/{}/environ", server.child.id()))
        .unwrap()
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[cfg(all(target_os = "linux", feature = "mimalloc"))]
#[test]
fn the_server_runs_with_mimalloc_returning_freed_memory_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("dev");
    let args = ["--dev", "--data-dir", d.to_str().unwrap()];
    // Started without the option, whatever this test's own environment holds.
    let server = start_with(&args, |c| {
        c.env_remove("MIMALLOC_PURGE_DELAY")
            .env_remove("MIMALLOC_RESET_DELAY");
    });
    // Same process (the exec keeps the pid), now with the option set, and serving, still
    // under its own name (what `ps`, `pgrep` and `bench load` find it by).
    assert!(environ_of(&server).contains(&"MIMALLOC_PURGE_DELAY=0".to_string()));
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", server.child.id())).unwrap();
    assert_eq!(comm.trim(), "medvault");
    let (code, _) = http("GET", &format!("{}/sys/health", server.url), None);
    assert_eq!(code, 200);
    drop(server);

    // An operator's own setting is kept.
    let server = start_with(&args, |c| {
        c.env("MIMALLOC_PURGE_DELAY", "25");
    });
    let env = environ_of(&server);
    assert!(
        env.contains(&"MIMALLOC_PURGE_DELAY=25".to_string()),
        "{env:?}"
    );
    assert!(!env.contains(&"MIMALLOC_PURGE_DELAY=0".to_string()));
}
