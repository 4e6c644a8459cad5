//! ARCHITECTURE.md's first invariant, checked on the sources: the pure cores
//! (`medvault-crypto`, `medvault-fhir`, `medvault-ledger`, `medvault-policy`) do no I/O and
//! take time from their callers, and depend on nothing that does I/O.

use std::path::{Path, PathBuf};

/// The pure crates and the dependencies each may have (adding one is a decision: update
/// this list and ARCHITECTURE.md together).
const PURE: &[(&str, &[&str])] = &[
    (
        "medvault-crypto",
        &[
            "base64",
            "ring",
            "sha2",
            "serde",
            "serde_json",
            "thiserror",
            "x25519-dalek",
            "zeroize",
        ],
    ),
    ("medvault-fhir", &["serde_json", "thiserror"]),
    (
        "medvault-ledger",
        &["base64", "ring", "thiserror", "zeroize"],
    ),
    ("medvault-policy", &["serde_json", "thiserror"]),
];

/// What I/O, the clock or the environment looks like in Rust source.
const FORBIDDEN: &[&str] = &[
    "std::fs",
    "std::net",
    "std::env",
    "std::process",
    "std::io::stdin",
    "std::io::stdout",
    "std::io::stderr",
    "SystemTime::now",
    "Instant::now",
    "File::",
    "println!",
    "eprintln!",
    "print!(",
    "dbg!(",
    "tokio",
    "rusqlite",
    "object_store",
];

fn crate_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The names of every dependency that is built into the crate: `[dependencies]`,
/// `[build-dependencies]`, their target-specific forms, and `[dependencies.NAME]` tables
/// (not dev-dependencies: tests may do I/O).
fn dependencies(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut inside = false;
    for line in manifest.lines().map(str::trim) {
        if let Some(table) = line.strip_prefix('[') {
            let table = table.trim_end_matches(']');
            // `target.'cfg(..)'.dependencies` is `dependencies` for one target.
            let table = table.rsplit_once("'.").map_or(table, |(_, rest)| rest);
            inside = false;
            for kind in ["dependencies", "build-dependencies"] {
                if table == kind {
                    inside = true;
                } else if let Some(name) = table.strip_prefix(&format!("{kind}.")) {
                    names.push(name.to_string());
                }
            }
        } else if inside && !line.is_empty() && !line.starts_with('#') {
            let name = line.split(['=', '.', ' ']).next().unwrap_or("");
            names.push(name.to_string());
        }
    }
    names
}

/// A line without its `//` comment (a `//` right after a `:` is a URL's, not a comment).
fn code_of(line: &str) -> &str {
    let mut from = 0;
    while let Some(i) = line[from..].find("//") {
        let at = from + i;
        if at > 0 && line.as_bytes()[at - 1] == b':' {
            from = at + 2;
            continue;
        }
        return &line[..at];
    }
    line
}

/// No line of `file`'s code (before its unit tests, outside comments) names any of
/// `patterns`.
fn assert_absent(file: &Path, patterns: &[&str], why: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    // Unit tests at the end of a file may use anything.
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    for (n, line) in code.lines().enumerate() {
        let line = code_of(line);
        for pattern in patterns {
            assert!(
                !line.contains(pattern),
                "{}:{}: `{pattern}` {why}",
                file.display(),
                n + 1
            );
        }
    }
}

#[test]
fn the_pure_crates_do_no_io() {
    for (name, allowed) in PURE {
        let dir = crate_dir(name);
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        assert!(
            files.len() >= 3,
            "{name}: sources not found in {}",
            dir.display()
        );
        for file in &files {
            assert_absent(file, FORBIDDEN, "in a crate that does no I/O");
        }
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let deps = dependencies(&manifest);
        assert!(!deps.is_empty(), "{name}: no [dependencies] read");
        for dep in &deps {
            assert!(
                allowed.contains(&dep.as_str()),
                "{name} depends on {dep}, which is not on its list (tests/it/architecture.rs)"
            );
        }
    }
}

#[test]
fn the_checks_find_what_they_look_for() {
    let manifest = "[package]\nname = \"x\"\n\n[dependencies]\nring.workspace = true\ntokio = { version = \"1\" }\n\n[dependencies.hyper]\nversion = \"1\"\n\n[target.'cfg(unix)'.dependencies]\nlibc = \"0.2\"\n\n[build-dependencies]\ncc = \"1\"\n\n[dev-dependencies]\nproptest = \"1\"\n";
    assert_eq!(
        dependencies(manifest),
        ["ring", "tokio", "hyper", "libc", "cc"]
    );
    let line = "    let f = std::fs::read(\"x\"); // std::env in a comment";
    assert!(code_of(line).contains("std::fs") && !code_of(line).contains("std::env"));
    let url = "    let u = \"https://x/\"; std::net::TcpStream::connect(u) // why";
    assert!(code_of(url).contains("std::net"));
}

/// ARCHITECTURE's HTTP invariant: routes, status codes, headers and media types are decided
/// only in the server's `api.rs` (and `api/`) and `outcome.rs`.
#[test]
fn only_the_api_and_outcome_modules_speak_http() {
    let src = crate_dir("medvault-server").join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let allowed = |f: &Path| {
        let rel = f.strip_prefix(&src).unwrap();
        rel == Path::new("api.rs") || rel == Path::new("outcome.rs") || rel.starts_with("api")
    };
    let mut checked = 0;
    for file in files.iter().filter(|f| !allowed(f)) {
        checked += 1;
        assert_absent(
            file,
            &["StatusCode", "HeaderMap", "HeaderValue", "http::", "axum::"],
            "outside api.rs, api/ and outcome.rs",
        );
    }
    assert!(checked >= 10, "only {checked} files checked");
}
