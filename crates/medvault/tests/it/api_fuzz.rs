//! Property-based API testing against a real `medvault serve --dev` on loopback: schemathesis
//! generates requests from the server's own OpenAPI document (`tests/api/run.sh`), and the run
//! fails on any 5xx or any answer that does not match the documented schema.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{http, start, BIN};

/// `<target>/api-cache`: `BIN` is `<target>/<profile>/medvault`.
fn cache_dir() -> PathBuf {
    Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .expect("the binary lives in <target>/<profile>/")
        .join("api-cache")
}

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = start(&["--dev", "--data-dir", data.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http("GET", &format!("{}/sys/health", server.url), None).1["sealed"] != false {
        assert!(Instant::now() < deadline, "server not unsealed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/api/run.sh");
    let log_path = tmp.path().join("api.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let status = Command::new("timeout")
        .args(["--kill-after=10", "600", "bash"])
        .arg(&script)
        .arg(&server.url)
        .arg(cache_dir())
        .env(
            "SCHEMATHESIS_SECONDS",
            std::env::var("SCHEMATHESIS_SECONDS").unwrap_or_else(|_| "45".into()),
        )
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .expect("could not run tests/api/run.sh through timeout(1)");
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        status.success(),
        "tests/api/run.sh failed ({status}):\n{output}"
    );
    // It really generated and sent requests, and none failed a check.
    let summary = output
        .lines()
        .find(|l| l.contains(" generated, "))
        .unwrap_or_else(|| panic!("no summary line:\n{output}"));
    assert!(
        summary.contains(" passed") && !summary.contains("failed"),
        "{summary}\n{output}"
    );
}
