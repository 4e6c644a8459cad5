//! The `medvault` binary: runs the server and is the operator's CLI (init, unseal, seal,
//! status, keys rotate, rekey, backup, restore, compact, import, gen, bench).

mod backup;
mod bench;
mod client;
mod gen;
mod import;
mod ledger;
mod load;
mod session;

use std::io::{BufRead, IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use medvault_crypto::{Random, SystemRandom};
use medvault_ledger::Outcome;
use medvault_server::access::AccessConfig;
use medvault_server::clock::SystemClock;
use medvault_server::ledger::{Audit, Event, LedgerConfig};
use medvault_server::limits::ReadLimits;
use medvault_server::repo::Repository;
use medvault_server::vault::Vault;
use medvault_server::{open_data_dir, ServeOptions, TlsFiles};
use medvault_store::Store;
use serde_json::json;

use crate::client::Client;

const DEFAULT_SERVER: &str = "http://127.0.0.1:8200";
const DEV_SHARE_FILE: &str = "dev-unseal-share";

#[derive(Parser)]
#[command(
    name = "medvault",
    version,
    about = "A secure FHIR R4 health-records server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
pub(crate) struct ServerArgs {
    /// Base URL of the medvault server.
    #[arg(long, env = "MEDVAULT_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    /// PEM file of the CA certificate to trust for https (e.g. a self-signed server cert).
    #[arg(long, env = "MEDVAULT_CA_CERT")]
    ca_cert: Option<PathBuf>,
}

impl ServerArgs {
    pub(crate) fn client(&self) -> Result<Client> {
        Client::new(&self.server, self.ca_cert.as_deref())
    }
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Register a machine client (SMART Backend Services) with its public key.
    Add {
        #[arg(long)]
        name: String,
        /// physician, nurse, receptionist, lab-technician or auditor.
        #[arg(long)]
        role: String,
        /// A file with the client's public JWK (EC P-256/P-384, Ed25519 or RSA 2048+).
        #[arg(long)]
        jwk: PathBuf,
        /// `Practitioner/ID` (or `Practitioner/ID|Organization/LAB` for a lab).
        #[arg(long, default_value = "")]
        link: String,
        /// Also issue plain bearer tokens (no proof of possession) so unmodified FHIR
        /// clients can be used: a stolen token is then usable by anyone until it expires.
        #[arg(long)]
        danger_bearer: bool,
    },
    /// List machine clients.
    List,
    /// Stop a client (its tokens stop working at once).
    Disable { id: String },
    /// Let a disabled client in again.
    Enable { id: String },
}

fn client_command(ca_cert: Option<&Path>, command: ClientCommand) -> Result<()> {
    let call = |method: &str, path: &str, body: serde_json::Value| {
        session::admin(ca_cert, method, path, body)
    };
    let show = |c: &serde_json::Value| {
        println!(
            "{}  {:<24} {:<15} {:<40} jkt {}{}{}",
            c["client_id"].as_str().unwrap_or("?"),
            c["name"].as_str().unwrap_or("?"),
            c["role"].as_str().unwrap_or("?"),
            c["link"].as_str().unwrap_or(""),
            c["jkt"].as_str().unwrap_or("?"),
            if c["danger_bearer"] == true {
                " BEARER"
            } else {
                ""
            },
            if c["disabled"] == true {
                " disabled"
            } else {
                ""
            },
        )
    };
    match command {
        ClientCommand::Add {
            name,
            role,
            jwk,
            link,
            danger_bearer,
        } => {
            let text = std::fs::read_to_string(&jwk)
                .with_context(|| format!("reading {}", jwk.display()))?;
            let key: serde_json::Value = serde_json::from_str(&text)
                .map_err(|_| anyhow!("{} is not a JSON Web Key", jwk.display()))?;
            let r = call(
                "POST",
                "/admin/clients",
                json!({"name": name, "role": role, "link": link, "jwk": key, "danger_bearer": danger_bearer}),
            )?;
            show(&r);
        }
        ClientCommand::List => {
            let r = call("GET", "/admin/clients", serde_json::Value::Null)?;
            for c in r["clients"].as_array().into_iter().flatten() {
                show(c);
            }
        }
        ClientCommand::Disable { id } => show(&call(
            "PATCH",
            &format!("/admin/clients/{id}"),
            json!({"disabled": true}),
        )?),
        ClientCommand::Enable { id } => show(&call(
            "PATCH",
            &format!("/admin/clients/{id}"),
            json!({"disabled": false}),
        )?),
    }
    Ok(())
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Issue a one-time registration token for a role (printed once).
    Token {
        /// admin, physician, nurse, receptionist, lab-technician, auditor or patient.
        #[arg(long)]
        role: String,
        /// `Practitioner/ID` for staff, `Patient/ID` for patients, nothing for admins and
        /// auditors.
        #[arg(long, default_value = "")]
        link: String,
        #[arg(long, default_value_t = 168, value_parser = clap::value_parser!(u64).range(1..=720))]
        ttl_hours: u64,
    },
    /// Revoke an unused registration token.
    Revoke { token: String },
    /// List accounts.
    Accounts,
    /// Change an account's role or link, or disable/enable it (from its next request).
    Account {
        id: String,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        link: Option<String>,
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        #[arg(long)]
        enable: bool,
    },
    /// Issue a one-time password-reset token for an account (printed once).
    Reset {
        id: String,
        #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u64).range(1..=168))]
        ttl_hours: u64,
    },
}

fn admin(ca_cert: Option<&Path>, command: AdminCommand) -> Result<()> {
    let call = |method: &str, path: &str, body: serde_json::Value| {
        session::admin(ca_cert, method, path, body)
    };
    match command {
        AdminCommand::Token {
            role,
            link,
            ttl_hours,
        } => {
            let r = call(
                "POST",
                "/admin/tokens",
                json!({"role": role, "link": link, "ttl_seconds": ttl_hours * 3600}),
            )?;
            println!("{}", r["token"].as_str().unwrap_or(""));
            eprintln!(
                "registration token for {} {} (one use, until {})",
                r["role"].as_str().unwrap_or("?"),
                r["link"].as_str().unwrap_or(""),
                r["expires"].as_str().unwrap_or("?")
            );
        }
        AdminCommand::Revoke { token } => {
            call("POST", "/admin/tokens/revoke", json!({"token": token}))?;
            println!("revoked");
        }
        AdminCommand::Accounts => {
            let r = call("GET", "/admin/accounts", serde_json::Value::Null)?;
            for a in r["accounts"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<15} {:<30} {}",
                    a["account"].as_str().unwrap_or("?"),
                    a["role"].as_str().unwrap_or("?"),
                    a["link"].as_str().unwrap_or(""),
                    if a["disabled"] == true {
                        "disabled"
                    } else {
                        ""
                    }
                );
            }
        }
        AdminCommand::Account {
            id,
            role,
            link,
            disable,
            enable,
        } => {
            let mut change = serde_json::Map::new();
            if let Some(r) = role {
                change.insert("role".into(), json!(r));
            }
            if let Some(l) = link {
                change.insert("link".into(), json!(l));
            }
            if disable || enable {
                change.insert("disabled".into(), json!(disable));
            }
            if change.is_empty() {
                bail!("nothing to change: give --role, --link, --disable or --enable");
            }
            let r = call("PATCH", &format!("/admin/accounts/{id}"), change.into())?;
            println!(
                "account {}: {} {}{}",
                r["account"].as_str().unwrap_or("?"),
                r["role"].as_str().unwrap_or("?"),
                r["link"].as_str().unwrap_or(""),
                if r["disabled"] == true {
                    " (disabled)"
                } else {
                    ""
                }
            );
        }
        AdminCommand::Reset { id, ttl_hours } => {
            let r = call(
                "POST",
                &format!("/admin/accounts/{id}/reset-token"),
                json!({"ttl_seconds": ttl_hours * 3600}),
            )?;
            println!("{}", r["token"].as_str().unwrap_or(""));
            eprintln!(
                "password-reset token for account {} (one try: a wrong login or national id \
                 spends it; until {}); the owner runs \
                 `medvault register --token ... --login THEIR-LOGIN --national-id THEIR-ID`",
                r["account"].as_str().unwrap_or("?"),
                r["expires"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

#[derive(Subcommand)]
enum Command {
    /// Create a new vault in an empty data directory and print its key shares once.
    Init {
        #[arg(long, env = "MEDVAULT_DATA_DIR")]
        data_dir: PathBuf,
        /// Number of key shares to issue (one per admin).
        #[arg(long)]
        shares: u8,
        /// Number of shares needed to unseal.
        #[arg(long)]
        threshold: u8,
        /// Print the shares and bootstrap token as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the server. It starts sealed unless --dev.
    Serve {
        #[arg(long, env = "MEDVAULT_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[arg(long, env = "MEDVAULT_LISTEN", default_value = "127.0.0.1:8200")]
        listen: SocketAddr,
        /// Public base URL (for Location headers and paging links), e.g. https://ehr.example.org
        #[arg(long, env = "MEDVAULT_PUBLIC_URL")]
        public_url: Option<String>,
        /// PEM certificate chain for TLS.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// PEM private key for TLS.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Allow plain HTTP on a non-loopback address (traffic, including shares, in clear).
        #[arg(long)]
        danger_allow_plain_http: bool,
        /// Serve FHIR requests that carry no access token, anonymously and outside the access
        /// policy (as before accounts existed). Requests with a token are still checked.
        #[arg(long)]
        danger_no_auth: bool,
        /// Development mode: initialize 1-of-1 if needed, keep the share ON DISK in the data
        /// directory and unseal automatically. Never use with real data.
        #[arg(long)]
        dev: bool,
        /// POST a JSON alert to this URL if the audit ledger fails an integrity check.
        #[arg(long, env = "MEDVAULT_ALERT_WEBHOOK")]
        alert_webhook: Option<String>,
        /// Sign an audit-ledger checkpoint after this many new entries...
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        ledger_checkpoint_every: u64,
        /// ...or after this many seconds, if there are new entries.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        ledger_checkpoint_seconds: u64,
        /// How long a clinician's break-glass access to a chart lasts.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=1440))]
        break_glass_minutes: u64,
        /// How long after an Encounter or Appointment ends its clinicians stay in care.
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3650))]
        care_window_days: u64,
        /// Patient records one account may read per window (each answer counts once per
        /// patient whose data it carries); beyond it reads are refused and an alert raised.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        phi_read_limit: u64,
        /// The window of --phi-read-limit, in seconds.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=604_800))]
        phi_read_window_seconds: u64,
        /// SQLite page cache per reading database connection, in MiB (there are four; the
        /// one writing connection uses at most 16).
        #[arg(long, default_value_t = medvault_store::DEFAULT_CACHE_MIB, value_parser = clap::value_parser!(u32).range(1..=65_536))]
        sqlite_cache_mib: u32,
    },
    /// Submit one key share (read from stdin) towards unsealing.
    Unseal {
        #[command(flatten)]
        server: ServerArgs,
        /// Forget the shares submitted so far instead (authorized by the share on stdin).
        #[arg(long)]
        reset: bool,
    },
    /// Seal the server (drop all keys from memory); authorized by one share on stdin.
    Seal {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show seal status and health.
    Status {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Key-encryption-key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Issue a new share set (new threshold/count) from current shares read from stdin, one per line.
    Rekey {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        shares: u8,
        #[arg(long)]
        threshold: u8,
        #[arg(long)]
        json: bool,
    },
    /// Load transaction/batch Bundles (.json) or NDJSON resources (.ndjson) into the server.
    Import {
        #[command(flatten)]
        server: ServerArgs,
        /// Resources per transaction when importing NDJSON.
        #[arg(long, default_value_t = 500)]
        batch: usize,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Write synthetic transaction Bundles (test data, no real people) to a file.
    Gen {
        #[arg(long, default_value_t = 10)]
        patients: usize,
        #[arg(long, default_value_t = 5)]
        observations: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Create your account with a registration token (password from MEDVAULT_PASSWORD or
    /// stdin; it never leaves this machine: OPAQUE).
    Register {
        #[command(flatten)]
        server: ServerArgs,
        /// The one-time registration token you were given (or `init`'s bootstrap token).
        #[arg(long)]
        token: String,
        /// Your login name.
        #[arg(long)]
        login: String,
        /// Your national id (one account per person; stored only as a keyed token).
        #[arg(long)]
        national_id: String,
    },
    /// Log in (OPAQUE) and keep a DPoP-bound session in MEDVAULT_SESSION
    /// (default ~/.config/medvault/session.json).
    Login {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        login: String,
    },
    /// Show who the current session belongs to.
    Whoami {
        #[arg(long, env = "MEDVAULT_CA_CERT")]
        ca_cert: Option<PathBuf>,
    },
    /// End the current session on the server and forget it here.
    Logout {
        #[arg(long, env = "MEDVAULT_CA_CERT")]
        ca_cert: Option<PathBuf>,
        /// End every session of the account (all devices), not just this one.
        #[arg(long)]
        everywhere: bool,
    },
    /// Change your password (current one from MEDVAULT_PASSWORD or stdin, new one from
    /// MEDVAULT_NEW_PASSWORD or the next line); re-seals your key bundle under it and ends
    /// your other sessions.
    Passwd {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        login: String,
    },
    /// Machine clients (SMART Backend Services), with the current (admin) session.
    Client {
        #[arg(long, env = "MEDVAULT_CA_CERT")]
        ca_cert: Option<PathBuf>,
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Account administration with the current session (admins; receptionists may issue
    /// patient tokens).
    Admin {
        #[arg(long, env = "MEDVAULT_CA_CERT")]
        ca_cert: Option<PathBuf>,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// A FHIR request signed with the current session; prints the answer.
    Fhir {
        #[arg(long, env = "MEDVAULT_CA_CERT")]
        ca_cert: Option<PathBuf>,
        /// GET, POST, PUT, PATCH or DELETE.
        method: String,
        /// e.g. `Patient/123`, `/fhir/Observation?code=8867-4` or `/ledger/entries`.
        path: String,
        /// The request body (a JSON file).
        file: Option<PathBuf>,
    },
    /// Copy a data directory into a new directory while its server runs: a consistent
    /// snapshot of the database and the blob store, which hold ciphertext only (no key
    /// share is copied; restoring needs the vault's key shares as they are now).
    Backup {
        #[arg(long, env = "MEDVAULT_DATA_DIR")]
        data_dir: PathBuf,
        /// A new (or empty) directory to write the backup into.
        #[arg(long)]
        to: PathBuf,
    },
    /// Make a new data directory from a backup (offline: no server on it). Refuses a data
    /// directory that already holds a database.
    Restore {
        /// The backup's directory.
        #[arg(long)]
        from: PathBuf,
        #[arg(long, env = "MEDVAULT_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Rewrite a stopped server's database with the current page size (8 KiB; a database
    /// made before it keeps 4 KiB pages) and without its free pages. Offline: the server
    /// must be stopped. Needs free disk space for a second copy of the database; the
    /// original is replaced only once the copy is complete and checked.
    Compact {
        #[arg(long, env = "MEDVAULT_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// The audit ledger: offline verification and a witness of a server's checkpoints.
    Ledger {
        #[command(subcommand)]
        command: ledger::LedgerCommand,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a key-encryption-key version online and re-wrap data keys in the background;
    /// authorized by one share on stdin.
    Rotate {
        #[command(flatten)]
        server: ServerArgs,
        /// Return at once instead of following the re-wrap progress.
        #[arg(long)]
        no_wait: bool,
    },
}

// glibc's allocator spends much of ingest consolidating and unlinking chunks freed on other
// threads; mimalloc's per-thread heaps do not (measured in BENCHMARKS.md). The `mimalloc`
// feature is on by default; builds without it are for heap profilers.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The allocator option the server and the benchmarks run with: mimalloc hands memory it
/// no longer uses back to the OS as soon as it is freed. With its default (after 10 ms,
/// and only when the thread next works in that part of its heap), and with any other delay
/// tried, a server's resident memory kept rising through a 10-minute soak; with none it
/// levelled off, at the cost of some ingest speed (BENCHMARKS.md, `bench load`).
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
const PURGE_DELAY: (&str, &str) = ("MIMALLOC_PURGE_DELAY", "0");

/// mimalloc reads its options from the environment once, before `main`, and setting one
/// from Rust takes `unsafe` code, which this workspace forbids. So a `serve` or `bench`
/// process started without [`PURGE_DELAY`] executes itself again, once, with it set (an
/// operator's own setting of it, or of its older name, is kept). Nothing has been opened or
/// written yet when this runs. An exec that fails ends the process: std has already reset
/// SIGPIPE to its default for the new image by then, and a server left running that way
/// would die the first time a client hung up mid-answer.
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
fn with_allocator_options() {
    use std::os::unix::process::CommandExt;
    let (name, value) = PURGE_DELAY;
    if std::env::var_os(name).is_some() || std::env::var_os("MIMALLOC_RESET_DELAY").is_some() {
        return;
    }
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_else(|| "medvault".into());
    // The executable's path, not `/proc/self/exe`: the kernel names a process after the
    // file it executes, and `bench load` finds its server by that name (this process's).
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            // Nothing was changed yet: go on with mimalloc's defaults.
            eprintln!(
                "warning: could not run with {name}={value} ({e}); memory may grow under load"
            );
            return;
        }
    };
    let err = std::process::Command::new(exe)
        .arg0(argv0)
        .args(args)
        .env(name, value)
        .exec();
    eprintln!("error: could not re-execute with {name}={value}: {err}; set {name} (e.g. to {value}) to start without it");
    std::process::exit(1);
}

#[cfg(not(all(feature = "mimalloc", target_os = "linux")))]
fn with_allocator_options() {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve { .. } | Command::Bench { .. }) {
        with_allocator_options();
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MEDVAULT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init {
            data_dir,
            shares,
            threshold,
            json,
        } => init(&data_dir, shares, threshold, json),
        Command::Serve {
            data_dir,
            listen,
            public_url,
            tls_cert,
            tls_key,
            danger_allow_plain_http,
            danger_no_auth,
            dev,
            ledger_checkpoint_every,
            ledger_checkpoint_seconds,
            alert_webhook,
            break_glass_minutes,
            care_window_days,
            phi_read_limit,
            phi_read_window_seconds,
            sqlite_cache_mib,
        } => {
            if let Some(url) = &alert_webhook {
                check_webhook_url(url)?;
            }
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                _ => None,
            };
            let data_dir = match (data_dir, dev) {
                (Some(d), _) => d,
                (None, true) => PathBuf::from("medvault-data"),
                (None, false) => bail!("--data-dir is required (or --dev for a throw-away setup)"),
            };
            serve(
                &data_dir,
                ServeOptions {
                    listen,
                    public_url,
                    tls,
                    danger_allow_plain_http,
                    // Dev mode is for trying things out with curl: no token needed.
                    danger_no_auth: danger_no_auth || dev,
                    alert_webhook,
                    read_limits: ReadLimits {
                        max: phi_read_limit,
                        window_ms: phi_read_window_seconds as i64 * 1000,
                    },
                    header_read_timeout: medvault_server::HEADER_READ_TIMEOUT,
                },
                dev,
                LedgerConfig {
                    checkpoint_every: ledger_checkpoint_every,
                    checkpoint_interval_ms: ledger_checkpoint_seconds as i64 * 1000,
                },
                AccessConfig {
                    break_glass_ms: break_glass_minutes as i64 * 60_000,
                    care_window_ms: care_window_days as i64 * 86_400_000,
                },
                sqlite_cache_mib,
            )
        }
        Command::Unseal { server, reset } => {
            let client = server.client()?;
            let share = read_one_share()?;
            let body = if reset {
                json!({"reset": true, "share": share.trim()})
            } else {
                json!({"share": share.trim()})
            };
            let status = client.post("/sys/unseal", "application/json", &body)?;
            print_seal_status(&status);
            Ok(())
        }
        Command::Seal { server } => {
            let share = read_one_share()?;
            let status = server.client()?.post(
                "/sys/seal",
                "application/json",
                &json!({"share": share.trim()}),
            )?;
            print_seal_status(&status);
            Ok(())
        }
        Command::Status { server } => {
            let client = server.client()?;
            let status = client.get("/sys/seal-status")?;
            let health = client.get("/sys/health")?;
            print_seal_status(&status);
            println!(
                "integrity errors since start: {}",
                health
                    .get("integrity_errors")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(0)
            );
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Rotate { server, no_wait },
        } => rotate(&server, no_wait),
        Command::Rekey {
            server,
            shares,
            threshold,
            json,
        } => rekey(&server, shares, threshold, json),
        Command::Import {
            server,
            batch,
            files,
        } => import::run(&server.client()?, &files, batch),
        Command::Gen {
            patients,
            observations,
            seed,
            out,
        } => {
            let (bundle, n) = gen::transaction_bundle(seed, patients, observations);
            std::fs::write(&out, serde_json::to_vec_pretty(&bundle)?)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "wrote a transaction Bundle of {n} resources to {}",
                out.display()
            );
            Ok(())
        }
        Command::Register {
            server,
            token,
            login,
            national_id,
        } => session::register(&server.client()?, &token, &login, &national_id),
        Command::Login { server, login } => session::login(&server.client()?, &login),
        Command::Whoami { ca_cert } => session::whoami(ca_cert.as_deref()),
        Command::Logout {
            ca_cert,
            everywhere,
        } => session::logout(ca_cert.as_deref(), everywhere),
        Command::Passwd { server, login } => session::passwd(&server.client()?, &login),
        Command::Admin { ca_cert, command } => admin(ca_cert.as_deref(), command),
        Command::Client { ca_cert, command } => client_command(ca_cert.as_deref(), command),
        Command::Fhir {
            ca_cert,
            method,
            path,
            file,
        } => session::fhir(ca_cert.as_deref(), &method, &path, file.as_deref()),
        Command::Compact { data_dir } => backup::compact(&data_dir),
        Command::Backup { data_dir, to } => backup::backup(&data_dir, &to),
        Command::Restore { from, data_dir } => backup::restore(&from, &data_dir),
        Command::Ledger { command } => ledger::run(command),
        Command::Bench { command } => bench::run(command),
    }
}

/// Read key shares from stdin, one per line, until end of input.
pub(crate) fn read_shares() -> Result<Vec<String>> {
    if std::io::stdin().is_terminal() {
        eprintln!("enter current key shares, one per line, then Ctrl-D:");
    }
    let shares: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .map_while(|l| l.ok())
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if shares.is_empty() {
        bail!("no shares on stdin");
    }
    Ok(shares)
}

/// Read one share from stdin (prompting if it is a terminal).
fn read_one_share() -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("key share: ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    if line.trim().is_empty() {
        bail!("no share on stdin");
    }
    Ok(line)
}

fn print_seal_status(s: &serde_json::Value) {
    let get = |k: &str| s.get(k).cloned().unwrap_or(serde_json::Value::Null);
    if get("initialized") == json!(false) {
        println!("not initialized");
        return;
    }
    if get("sealed") == json!(true) {
        println!(
            "sealed: {} of {} shares provided (threshold {} of {})",
            get("progress"),
            get("threshold"),
            get("threshold"),
            get("shares")
        );
    } else {
        println!(
            "unsealed (threshold {} of {}, key version {})",
            get("threshold"),
            get("shares"),
            get("key_version")
        );
    }
}

fn init(data_dir: &Path, shares: u8, threshold: u8, as_json: bool) -> Result<()> {
    if threshold == 0 || shares == 0 || threshold > shares {
        bail!("need 1 <= --threshold <= --shares <= 255");
    }
    let _lock = medvault_server::DataDirLock::acquire(data_dir)?;
    let dir = open_data_dir(data_dir)?;
    let rng = SystemRandom::new();
    let (issued, token) = Vault::initialize(&*dir.store, &rng, threshold, shares)
        .map_err(|e| anyhow!("{e} ({})", data_dir.display()))?;
    if as_json {
        let shares: Vec<String> = issued
            .shares
            .iter()
            .map(|s| s.encode().to_string())
            .collect();
        println!(
            "{}",
            json!({"threshold": threshold, "shares": shares, "bootstrap_token": token.as_str()})
        );
        return Ok(());
    }
    println!(
        "Initialized {} with {shares} key shares; {threshold} are needed to unseal.\n",
        data_dir.display()
    );
    for s in &issued.shares {
        println!("  {}", s.encode().as_str());
    }
    println!(
        "\nGive each share to a different administrator. They are shown ONCE and are not stored;"
    );
    println!(
        "losing more than {} of them makes the data unrecoverable.",
        shares - threshold
    );
    println!(
        "\nOne-time bootstrap token for the first admin account:\n  {}",
        token.as_str()
    );
    Ok(())
}

/// `--alert-webhook` must be an http(s) URL with a host: checked at start, so that a typo is
/// not found only when the first alert (a compromised ledger) cannot be sent. The URL is
/// not repeated: a webhook's URL often holds its secret.
fn check_webhook_url(url: &str) -> Result<()> {
    let ok = ureq::http::Uri::try_from(url).is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
    });
    if !ok {
        bail!(
            "--alert-webhook (or MEDVAULT_ALERT_WEBHOOK) must be an http:// or https:// URL with a host"
        );
    }
    Ok(())
}

fn serve(
    data_dir: &Path,
    opts: ServeOptions,
    dev: bool,
    ledger: LedgerConfig,
    access: AccessConfig,
    sqlite_cache_mib: u32,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Before the database is opened (a refused server touches nothing), and held until this
    // server has stopped (dropped when this function returns).
    let _lock = medvault_server::DataDirLock::acquire(data_dir)?;
    let dir = medvault_server::open_data_dir_with_cache(data_dir, sqlite_cache_mib)?;
    let rng: Arc<dyn Random> = Arc::new(SystemRandom::new());
    let share_file = data_dir.join(DEV_SHARE_FILE);
    if dev {
        eprintln!("\n**********************************************************************");
        eprintln!("*  DEV MODE: the unseal key share is stored ON DISK next to the data  *");
        eprintln!(
            "*  ({}). Anyone who can read it can read everything.",
            share_file.display()
        );
        eprintln!("*  Never use --dev with real patient data.                           *");
        eprintln!("**********************************************************************\n");
        if dir.store.vault()?.is_none() {
            // A share file without a vault is left over from a deleted database; it unseals
            // nothing, and keeping it would block writing the new one.
            if share_file.exists() {
                std::fs::remove_file(&share_file)
                    .with_context(|| format!("removing stale {}", share_file.display()))?;
            }
            let (issued, _token) = Vault::initialize(&*dir.store, &*rng, 1, 1)?;
            let share = issued
                .shares
                .first()
                .ok_or_else(|| anyhow!("initialization issued no share"))?
                .encode();
            write_private(&share_file, share.as_bytes(), false)?;
        }
    } else if dir.store.vault()?.is_none() {
        bail!(
            "{} is not initialized; run `medvault init --data-dir {} --shares N --threshold K` first (or use --dev)",
            data_dir.display(),
            data_dir.display()
        );
    }
    let vault = Arc::new(Vault::new(dir.store.clone(), rng.clone()));
    if dev {
        let mut share = String::new();
        std::fs::File::open(&share_file)
            .and_then(|mut f| f.read_to_string(&mut share))
            .with_context(|| format!("dev mode needs its share file {}", share_file.display()))?;
        vault.submit_share(share.trim())?;
    }
    let repo = Arc::new(
        Repository::new(
            dir.store.clone(),
            dir.blobs.clone(),
            vault,
            Arc::new(SystemClock),
            rng,
        )
        .with_ledger_config(ledger)
        .with_access_config(access),
    );
    let sealed = repo.vault().is_sealed();
    if let Ok(keys) = repo.vault().keys() {
        let event = Event::new("unseal", "", "", Outcome::Allow).reason("dev mode share file");
        repo.ledger()
            .record(&keys, &Audit::system("dev-mode"), &[event])
            .context("could not write the audit ledger")?;
    }
    runtime.block_on(medvault_server::serve(repo, opts, |addr, url| {
        println!("medvault listening on {url} ({addr})");
        if sealed {
            println!("the vault is SEALED: run `medvault unseal --server {url}` with key shares");
        }
        let _ = std::io::stdout().flush();
    }))?;
    Ok(())
}

/// Write a file only its owner can read (mode 0600), synced. `replace`: overwrite an
/// existing file; otherwise refuse to (the dev share must never be overwritten).
pub(crate) fn write_private(path: &Path, bytes: &[u8], replace: bool) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    if replace {
        opts.write(true).create(true).truncate(true);
    } else {
        opts.write(true).create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| {
        let verb = if replace { "writing" } else { "creating" };
        format!("{verb} {}", path.display())
    })?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

fn rotate(server: &ServerArgs, no_wait: bool) -> Result<()> {
    let client = server.client()?;
    let share = read_one_share()?;
    let r = client.post(
        "/sys/rotate",
        "application/json",
        &json!({"share": share.trim()}),
    )?;
    println!(
        "new key-encryption key version {}",
        r.get("key_version").cloned().unwrap_or_default()
    );
    if no_wait {
        return Ok(());
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "re-wrapping data keys {bar:40} {pos}/{len} ({eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    loop {
        let s = client.get("/sys/rotate")?;
        let rewrap = s.get("rewrap").cloned().unwrap_or_default();
        let done = rewrap
            .get("rewrapped")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        let remaining = rewrap
            .get("remaining")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        bar.set_length(done + remaining);
        bar.set_position(done);
        if let Some(err) = rewrap.get("error").and_then(|v| v.as_str()) {
            bar.abandon();
            bail!("re-wrap stopped: {err}");
        }
        if rewrap.get("running") != Some(&json!(true)) {
            bar.finish();
            println!("all data keys are wrapped by the new version ({done} re-wrapped)");
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn rekey(server: &ServerArgs, count: u8, threshold: u8, as_json: bool) -> Result<()> {
    if threshold == 0 || count == 0 || threshold > count {
        bail!("need 1 <= --threshold <= --shares <= 255");
    }
    let shares = read_shares()?;
    let r = server.client()?.post(
        "/sys/rekey",
        "application/json",
        &json!({"shares": shares, "new_threshold": threshold, "new_shares": count}),
    )?;
    if as_json {
        println!("{r}");
        return Ok(());
    }
    println!("New share set: {threshold} of {count}. The old shares no longer work.\n");
    for s in r
        .get("shares")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
    {
        println!("  {}", s.as_str().unwrap_or_default());
    }
    Ok(())
}
