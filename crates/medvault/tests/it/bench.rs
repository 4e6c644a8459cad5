//! `medvault bench load`: a short run against the server it starts, here under a wrapper
//! process, reports throughput and the server's own memory and threads, and stops the
//! server with SIGTERM. `medvault bench ingest`: both sides' page sizes as asked.

use crate::{fails, medvault, ok};

#[test]
fn bench_ingest_gives_the_baseline_the_page_size_asked_for_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().to_str().unwrap();
    let small = [
        "bench",
        "ingest",
        "--bundles",
        "2",
        "--patients",
        "2",
        "--observations",
        "1",
        "--rounds",
        "1",
        "--dir",
        scratch,
    ];
    let text = ok(&medvault(&small, ""));
    assert!(
        text.contains("page size: medvault 8192 bytes, baseline 4096 bytes (SQLite's default)"),
        "{text}"
    );
    assert!(
        text.contains("ratio full/baseline, median of 1 rounds"),
        "{text}"
    );

    // The baseline's database is checked to have the page size asked for (SQLite would
    // ignore it silently if it came after WAL mode).
    let text = ok(&medvault(
        &[&small[..], &["--baseline-page-size", "16384"]].concat(),
        "",
    ));
    assert!(
        text.contains("page size: medvault 8192 bytes, baseline 16384 bytes"),
        "{text}"
    );
    assert!(
        text.contains("ratio full/baseline, median of 1 rounds"),
        "{text}"
    );

    // A size SQLite would ignore is refused before anything runs.
    for bad in ["1000", "256", "131072", "big"] {
        let out = medvault(&[&small[..], &["--baseline-page-size", bad]].concat(), "");
        let line = fails(&out);
        assert!(line.contains("--baseline-page-size"), "{line}");
        assert!(String::from_utf8_lossy(&out.stdout).is_empty());
    }
}

#[test]
fn bench_load_reports_the_wrapped_servers_memory_and_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().to_str().unwrap();
    // `timeout` forks: the server is its child, as under heaptrack's script.
    let out = medvault(
        &[
            "bench",
            "load",
            "--seconds",
            "2",
            "--concurrency",
            "2",
            "--patients",
            "3",
            "--sqlite-cache-mib",
            "2",
            "--server-wrapper",
            "timeout 600",
            "--dir",
            scratch,
        ],
        "",
    );
    let text = ok(&out);
    assert!(text.contains("load: 2 clients"), "{text}");
    assert!(text.contains(" 0 errors"), "{text}");
    // Stopped the way production stops it (so a profiler wrapper writes its report), not
    // by the SIGKILL fallback; `timeout` passes on the server's own exit status.
    assert!(
        text.contains("server stopped by SIGTERM (exit status: 0)"),
        "{text}"
    );
    // The memory sampled is the server's (tens of MiB once unsealed), not the wrapper's
    // (`timeout` itself holds about 1 MiB).
    let line = text
        .lines()
        .find(|l| l.starts_with("server RSS"))
        .unwrap_or_else(|| panic!("no RSS line: {text}"));
    let first_mib: u64 = line
        .split("): ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected RSS line: {line}"));
    assert!(first_mib >= 8, "{line}");
    // Each sample also counts the server's threads (its async threads and more; the
    // single-threaded wrapper has one).
    let threads: Vec<u64> = text
        .lines()
        .filter(|l| l.trim_start().starts_with("rss t="))
        .map(|l| {
            l.rsplit("threads ")
                .next()
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no thread count: {l}"))
        })
        .collect();
    assert!(!threads.is_empty(), "{text}");
    assert!(threads.iter().all(|&n| n >= 3), "{text}");
    // The scratch directory is gone, and no process still serves it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(scratch),
            "a process still runs in the scratch directory: {}",
            String::from_utf8_lossy(&cmdline)
        );
    }
}
