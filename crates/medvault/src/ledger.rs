//! `medvault ledger`: offline verification of a data directory's audit ledger, and a witness
//! that follows a server's signed checkpoints and catches a rewritten or forked history.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use medvault_crypto::{Random, SystemRandom};
use medvault_ledger::{open, verify_consistency, Checkpoint, Hash, VerifierKey};
use medvault_server::open_data_dir;
use medvault_server::vault::Vault;
use medvault_store::Store;
use serde_json::{json, Value};

use crate::{read_shares, ServerArgs};

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Rebuild the ledger of a data directory and check every entry, subtree hash and signed
    /// checkpoint; report the first bad entry. Reads K key shares from stdin, one per line.
    /// Exits non-zero if anything is wrong.
    Verify {
        #[arg(long, env = "MEDVAULT_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Check that the server's newest checkpoint extends the last one this witness saw (a
    /// consistency proof), then remember it. Run it regularly from another machine: a
    /// rewritten, rolled-back or forked history fails it, even if the whole database was
    /// replaced. Exits non-zero on any failure.
    Witness {
        #[command(flatten)]
        server: ServerArgs,
        /// The witness's own state: the pinned verifier key and the last checkpoint seen.
        #[arg(long)]
        state: PathBuf,
        /// Verifier key to pin (from `GET /ledger/key` on a trusted channel). Without it, the
        /// key the server shows on first use is pinned.
        #[arg(long)]
        key: Option<String>,
    },
}

pub fn run(cmd: LedgerCommand) -> Result<()> {
    match cmd {
        LedgerCommand::Verify { data_dir } => verify(&data_dir),
        LedgerCommand::Witness { server, state, key } => witness(&server, &state, key.as_deref()),
    }
}

fn verify(data_dir: &Path) -> Result<()> {
    if !data_dir.is_dir() {
        bail!("{} is not a data directory", data_dir.display());
    }
    // Opening creates a database where there is none: say so instead.
    let db = medvault_server::DataDir::database_path(data_dir);
    if !db.is_file() {
        bail!("no database at {}", db.display());
    }
    let dir = open_data_dir(data_dir)?;
    let rng: Arc<dyn Random> = Arc::new(SystemRandom::new());
    let vault = Vault::new(dir.store.clone(), rng);
    for share in read_shares()? {
        let status = vault
            .submit_share(&share)
            .map_err(|e| anyhow!("share refused: {e}"))?;
        if !status.sealed {
            break;
        }
    }
    let keys = vault
        .keys()
        .map_err(|_| anyhow!("not enough valid shares to open the ledger"))?;
    let total = dir.store.ledger_size()?;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("verifying {bar:40} {pos}/{len} entries ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report =
        medvault_server::ledger::verify(&*dir.store, &keys, |done, _| bar.set_position(done))?;
    bar.finish_and_clear();
    match report.first_bad {
        None => {
            println!(
                "ledger ok: {} entries, {} signed checkpoints verified",
                report.entries, report.checkpoints
            );
            Ok(())
        }
        Some((index, why)) => bail!("ledger entry {index} is bad: {why}"),
    }
}

fn witness(server: &ServerArgs, state_path: &Path, pin: Option<&str>) -> Result<()> {
    let client = server.client()?;
    let state: Option<Value> = match std::fs::read(state_path) {
        Ok(bytes) => Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a witness state file", state_path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).context(format!("reading {}", state_path.display())),
    };
    let served_key = client.get_text("/ledger/key")?.trim().to_string();
    let pinned = state
        .as_ref()
        .and_then(|s| s["key"].as_str().map(String::from))
        .or_else(|| pin.map(String::from))
        .unwrap_or_else(|| served_key.clone());
    if let Some(p) = pin {
        if p.trim() != pinned {
            bail!(
                "--key differs from the key pinned in {}",
                state_path.display()
            );
        }
    }
    if served_key != pinned {
        bail!("the server's checkpoint key changed (pinned {pinned}, served {served_key})");
    }
    let key = VerifierKey::parse(&pinned).map_err(|e| anyhow!("pinned key: {e}"))?;
    let note = client.get_text("/ledger/checkpoint")?;
    let new = open(&note, &key).map_err(|e| anyhow!("the server's checkpoint: {e}"))?;
    let old: Option<Checkpoint> = match state.as_ref().and_then(|s| s["checkpoint"].as_str()) {
        Some(text) => Some(open(text, &key).map_err(|e| anyhow!("stored checkpoint: {e}"))?),
        None => None,
    };
    if let Some(old) = &old {
        if old.origin() != new.origin() {
            bail!("the server's log origin changed");
        }
        if new.size() < old.size() {
            bail!(
                "ROLLBACK: the server's checkpoint has {} entries, fewer than the {} seen before",
                new.size(),
                old.size()
            );
        }
        if new.size() == old.size() {
            if new.root() != old.root() {
                bail!(
                    "FORK: two different trees of {} entries are signed",
                    new.size()
                );
            }
        } else {
            let r = client.get(&format!(
                "/ledger/proof/consistency?from={}&to={}",
                old.size(),
                new.size()
            ))?;
            let proof = r["hashes"]
                .as_array()
                .ok_or_else(|| anyhow!("malformed consistency proof"))?
                .iter()
                .map(hash_of)
                .collect::<Result<Vec<Hash>>>()?;
            verify_consistency(old.size(), new.size(), old.root(), new.root(), &proof).map_err(
                |_| {
                    anyhow!(
                        "FORK: the checkpoint of {} entries does not extend the one of {} seen before",
                        new.size(),
                        old.size()
                    )
                },
            )?;
        }
    }
    let saved = json!({ "key": pinned, "checkpoint": note });
    let tmp = state_path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&saved)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, state_path)
        .with_context(|| format!("writing {}", state_path.display()))?;
    match old {
        Some(old) => println!(
            "ledger consistent: {} entries (was {}), root {}",
            new.size(),
            old.size(),
            new.root()
        ),
        None => println!(
            "ledger checkpoint pinned: {} entries, root {}",
            new.size(),
            new.root()
        ),
    }
    Ok(())
}

fn hash_of(v: &Value) -> Result<Hash> {
    use base64::Engine;
    let text = v.as_str().ok_or_else(|| anyhow!("malformed proof hash"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| anyhow!("malformed proof hash"))?;
    Hash::from_slice(&bytes).map_err(|_| anyhow!("malformed proof hash"))
}
