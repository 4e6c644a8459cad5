//! `medvault import`: load transaction/batch Bundles or NDJSON resources over HTTP, with a
//! progress bar. NDJSON is sent as transactions of `batch` resources (PUT when an id is given).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::client::Client;

/// One unit of work: a Bundle to POST and how many resources it carries.
struct Unit {
    bundle: Value,
    resources: u64,
    origin: String,
}

fn entry_for(resource: Value) -> Value {
    let rtype = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match resource.get("id").and_then(Value::as_str).map(String::from) {
        Some(id) => {
            json!({"resource": resource, "request": {"method": "PUT", "url": format!("{rtype}/{id}")}})
        }
        None => json!({"resource": resource, "request": {"method": "POST", "url": rtype}}),
    }
}

fn transaction(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

fn units_of(path: &Path, batch: usize) -> Result<Vec<Unit>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.display().to_string();
    let is_ndjson = path.extension().is_some_and(|e| e == "ndjson");
    if !is_ndjson {
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            anyhow!(
                "{name}: not valid JSON (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
        let kind = value.get("resourceType").and_then(Value::as_str);
        let entries = value
            .get("entry")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        return Ok(match (kind, value.get("type").and_then(Value::as_str)) {
            (Some("Bundle"), Some("transaction" | "batch")) => vec![Unit {
                resources: entries.len() as u64,
                bundle: value,
                origin: name,
            }],
            (Some("Bundle"), _) => {
                let resources: Vec<Value> = entries
                    .into_iter()
                    .filter_map(|e| e.get("resource").cloned())
                    .collect();
                vec![Unit {
                    resources: resources.len() as u64,
                    bundle: transaction(resources.into_iter().map(entry_for).collect()),
                    origin: name,
                }]
            }
            (Some(_), _) => vec![Unit {
                resources: 1,
                bundle: transaction(vec![entry_for(value)]),
                origin: name,
            }],
            (None, _) => bail!("{name}: not a FHIR resource or Bundle (no resourceType)"),
        });
    }
    let mut units = Vec::new();
    let mut chunk = Vec::new();
    let mut first_line = 1;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let resource: Value = serde_json::from_str(line)
            .map_err(|_| anyhow!("{name}:{}: not a JSON resource", i + 1))?;
        if chunk.is_empty() {
            first_line = i + 1;
        }
        chunk.push(entry_for(resource));
        if chunk.len() >= batch.max(1) {
            units.push(Unit {
                resources: chunk.len() as u64,
                bundle: transaction(std::mem::take(&mut chunk)),
                origin: format!("{name}:{first_line}-{}", i + 1),
            });
        }
    }
    if !chunk.is_empty() {
        units.push(Unit {
            resources: chunk.len() as u64,
            bundle: transaction(chunk),
            origin: format!("{name}:{first_line}-end"),
        });
    }
    Ok(units)
}

/// Import every file; stops at the first refused Bundle (earlier ones stay committed).
pub fn run(client: &Client, files: &[PathBuf], batch: usize) -> Result<()> {
    let mut units = Vec::new();
    for f in files {
        units.extend(units_of(f, batch)?);
    }
    let total: u64 = units.iter().map(|u| u.resources).sum();
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "importing {bar:40} {pos}/{len} resources ({per_sec}, {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut done = 0;
    for u in units {
        let answer = match client.post("/fhir", "application/fhir+json", &u.bundle) {
            Ok(a) => a,
            Err(e) => {
                bar.abandon();
                bail!(
                    "{}: {e:#} — {done} of {total} resources were imported before this",
                    u.origin
                );
            }
        };
        // A batch answers 200 even when entries fail; look at each entry's status.
        let failed: Vec<String> = answer
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .filter(|(_, e)| {
                !e.pointer("/response/status")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.starts_with('2'))
            })
            .map(|(i, e)| {
                let why = e
                    .pointer("/response/outcome")
                    .map(crate::client::outcome_text)
                    .unwrap_or_else(|| "failed".into());
                format!("entry {i}: {why}")
            })
            .collect();
        if !failed.is_empty() {
            bar.abandon();
            bail!(
                "{}: {} of {} entries failed ({}) — the others were stored",
                u.origin,
                failed.len(),
                u.resources,
                failed
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        done += u.resources;
        bar.inc(u.resources);
    }
    bar.finish_and_clear();
    println!("imported {done} resources from {} file(s)", files.len());
    Ok(())
}
