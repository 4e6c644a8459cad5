//! Opening a data directory and running the HTTP(S) listener with its secure defaults:
//! plain HTTP only on loopback, TLS through rustls everywhere else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use medvault_store::{BlobStore, SqliteStore, StoreError};

use crate::api::{router, AppState};
use crate::repo::Repository;

/// Errors starting or running the server. Shown to the operator as one line.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("refusing plain HTTP on non-loopback address {0}: give --tls-cert/--tls-key, or accept the risk with --danger-allow-plain-http")]
    PlainHttpNotLoopback(SocketAddr),
    #[error("data directory {path} cannot be opened or written")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("TLS configuration: {0}")]
    Tls(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("listening on the unspecified address {0} needs --public-url (the base clients use in links)")]
    NeedPublicUrl(SocketAddr),
    #[error("data directory {0} is in use by another medvault process (a server, init, compact, restore or a backup into it holds its {LOCK_FILE}); let that one finish or stop it first")]
    InUse(PathBuf),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// The file a running server holds an advisory lock on, inside its data directory.
pub const LOCK_FILE: &str = "medvault.lock";

/// A process's claim on a data directory, held while this value lives: a second server
/// started on the same directory refuses to run (two would keep diverging in-memory state
/// over one database), and so do `medvault init`, `compact`, `restore` and a `backup` into
/// it. Taken before the database is opened, so a refused process has not touched it. The
/// lock is the OS's (`flock`), so it goes with the process, however it ends; the file
/// itself stays and means nothing.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Create the data directory `dir` if missing (owner-only), take its lock, or say who
    /// has it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, ServeError> {
        let io = |source| ServeError::DataDir {
            path: dir.to_path_buf(),
            source,
        };
        private_dir(dir).map_err(io)?;
        let path = dir.join(LOCK_FILE);
        // Read-only is enough for `flock`, and lets a server open a lock file another user
        // (say root, running `compact`) created.
        let create = || -> std::io::Result<std::fs::File> {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            // Readable by all whatever the umask, so a server running as another user can
            // open it to lock it.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            }
            Ok(file)
        };
        let file = match std::fs::File::open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(),
            other => other,
        }
        .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(ServeError::InUse(dir.to_path_buf())),
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }
}

/// Certificate chain and private key, PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How to listen.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Public base URL used in `Location` headers and paging links; defaults to the
    /// listen address.
    pub public_url: Option<String>,
    pub tls: Option<TlsFiles>,
    pub danger_allow_plain_http: bool,
    /// Serve FHIR requests that carry no token, anonymously and outside the access policy.
    pub danger_no_auth: bool,
    /// POST a JSON alert here when the audit ledger fails an integrity check or an account
    /// reaches its PHI read limit.
    pub alert_webhook: Option<String>,
    /// Per-account limits on reading patient data.
    pub read_limits: crate::limits::ReadLimits,
    /// A client must send a request's whole header within this time (and its first request
    /// within this time of connecting), or the connection is closed: a client dribbling
    /// header bytes cannot hold a connection open. [`HEADER_READ_TIMEOUT`] by default.
    pub header_read_timeout: std::time::Duration,
}

impl ServeOptions {
    /// Options with the secure defaults: listen on `listen`, no TLS (so only a loopback
    /// address is accepted), every `danger_` switch off, no alert webhook, the default read
    /// limits and header timeout. Change the fields that differ.
    pub fn new(listen: SocketAddr) -> ServeOptions {
        ServeOptions {
            listen,
            public_url: None,
            tls: None,
            danger_allow_plain_http: false,
            danger_no_auth: false,
            alert_webhook: None,
            read_limits: crate::limits::ReadLimits::default(),
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }
}

/// HTTP/1.1: a request's header must arrive within the timeout. HTTP/2: keep-alive pings
/// drop peers that stop answering (an HTTP/2 connection that stays idle but answers pings is
/// not cut off; request bodies of both are bounded by the body deadline middleware). A macro
/// because the builder's type lives in hyper-util, which is not a direct dependency.
macro_rules! limit_slow_clients {
    ($builder:expr, $timeout:expr) => {{
        let builder = $builder;
        builder.http1().header_read_timeout(Some($timeout));
        builder
            .http2()
            .keep_alive_interval(Some(std::time::Duration::from_secs(30)))
            .keep_alive_timeout($timeout);
    }};
}

/// The default for [`ServeOptions::header_read_timeout`].
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// An opened data directory.
pub struct DataDir {
    pub path: PathBuf,
    pub store: Arc<SqliteStore>,
    pub blobs: BlobStore,
}

impl DataDir {
    /// Path of the SQLite database inside a data directory.
    pub fn database_path(dir: &Path) -> PathBuf {
        dir.join("medvault.db")
    }
}

/// Open (creating if needed, owner-only permissions) a data directory.
pub fn open_data_dir(path: &Path) -> Result<DataDir, ServeError> {
    open_data_dir_with_cache(path, medvault_store::DEFAULT_CACHE_MIB)
}

/// [`open_data_dir`] with SQLite page caches of `cache_mib` MiB per connection.
pub fn open_data_dir_with_cache(path: &Path, cache_mib: u32) -> Result<DataDir, ServeError> {
    let io = |source| ServeError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    private_dir(path).map_err(io)?;
    let store = Arc::new(SqliteStore::open_with_cache(
        &DataDir::database_path(path),
        cache_mib,
    )?);
    let blobs = BlobStore::local(&path.join("blobs"))?;
    Ok(DataDir {
        path: path.to_path_buf(),
        store,
        blobs,
    })
}

/// Create `dir` (and its parents) if missing; make it readable by its owner only.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The listen policy: loopback may use plain HTTP; anything else needs TLS (or the named
/// danger flag).
pub fn check_listen(
    addr: SocketAddr,
    tls: bool,
    danger_allow_plain_http: bool,
) -> Result<(), ServeError> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    if !tls && !danger_allow_plain_http {
        return Err(ServeError::PlainHttpNotLoopback(addr));
    }
    Ok(())
}

/// Serve until Ctrl-C / SIGTERM, then let open requests finish (up to 10 s) and the worker
/// pool's jobs (up to [`SHUTDOWN_DRAIN`] more). `ready` is called with the bound address
/// and base URL once the socket accepts connections.
pub async fn serve(
    repo: Arc<Repository>,
    opts: ServeOptions,
    ready: impl FnOnce(SocketAddr, &str),
) -> Result<(), ServeError> {
    check_listen(
        opts.listen,
        opts.tls.is_some(),
        opts.danger_allow_plain_http,
    )?;
    if opts.danger_no_auth {
        tracing::warn!(
            "--danger-no-auth: FHIR requests without a token are served anonymously, outside the access policy"
        );
    }
    if opts.listen.ip().is_unspecified() && opts.public_url.is_none() {
        return Err(ServeError::NeedPublicUrl(opts.listen));
    }
    let listener = std::net::TcpListener::bind(opts.listen).map_err(|source| ServeError::Bind {
        addr: opts.listen,
        source,
    })?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    let public = opts
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{addr}"));
    spawn_checkpoint_ticker(repo.clone());
    let state = AppState::new(repo.clone(), &public)
        .allowing_anonymous(opts.danger_no_auth)
        .with_read_limits(opts.read_limits);
    if let Some(url) = opts.alert_webhook.clone() {
        repo.ledger().set_alert(webhook_alert(
            url.clone(),
            public.clone(),
            "ledger-compromised",
        ));
        state
            .read_limiter()
            .set_alert(webhook_alert(url, public.clone(), "phi-read-limit"));
    }
    spawn_ledger_verifier(repo);
    let app = router(state);

    // One server for both schemes (axum-server), because plain `axum::serve` installs no
    // timer and so cannot enforce a header read timeout.
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        h.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
    });
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let timeout = opts.header_read_timeout;
    match &opts.tls {
        None => {
            let mut server = axum_server::from_tcp(listener)?
                .handle(handle)
                .first_request_timeout(timeout);
            limit_slow_clients!(server.http_builder(), timeout);
            ready(addr, &public);
            server.serve(service).await?;
        }
        Some(tls) => {
            // One process-wide rustls provider (ring); ignore "already installed".
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                .await
                .map_err(ServeError::Tls)?;
            let mut server = axum_server::from_tcp_rustls(listener, config)?
                .handle(handle)
                .first_request_timeout(timeout);
            limit_slow_clients!(server.http_builder(), timeout);
            ready(addr, &public);
            server.serve(service).await?;
        }
    }
    // Let the worker pool's jobs finish before the process exits: those whose callers are
    // gone (a client that hung up, connections closed at the end of the grace period) and
    // the ledger's background work, which may still submit more. tokio's runtime waited
    // for its blocking pool without a bound; a short one keeps a stop within what service
    // managers allow. Answered work is durable either way, and a job cut short is a
    // rolled-back transaction, as after a crash.
    let drained = tokio::task::spawn_blocking(|| crate::workers::drain(SHUTDOWN_DRAIN))
        .await
        .unwrap_or(false);
    if !drained {
        tracing::warn!("worker jobs were still running at exit; they were cut short");
    }
    Ok(())
}

/// How long a stopping server waits for its worker jobs to finish.
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Verify the ledger in the background: everything once after start (as soon as the vault
/// is unsealed), then every new entry. A failure marks the ledger compromised and alerts.
fn spawn_ledger_verifier(repo: Arc<Repository>) {
    tokio::spawn(async move {
        let verifier = Arc::new(std::sync::Mutex::new(crate::ledger::Verifier::new()));
        let mut every = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            every.tick().await;
            let Ok(keys) = repo.vault().keys() else {
                continue;
            };
            let (r, v) = (repo.clone(), verifier.clone());
            let run = crate::workers::run(move || {
                let mut v = v.lock().unwrap_or_else(|e| e.into_inner());
                if v.first_bad().is_some() {
                    return Ok(None);
                }
                v.catch_up(r.store(), &keys, &mut |_, _| {})?;
                Ok::<_, crate::ledger::LedgerError>(v.first_bad().cloned())
            })
            .await;
            match run {
                Ok(Ok(Some((index, why)))) => repo
                    .ledger()
                    .mark_compromised(format!("ledger entry {index}: {why}")),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "background ledger verification failed"),
                Err(_) => tracing::error!("background ledger verifier failed"),
            }
        }
    });
}

/// An alert hook that POSTs `{"alert": KIND, "server": ..., "reason": ...}` to `url`.
fn webhook_alert(url: String, server: String, kind: &'static str) -> crate::ledger::AlertHook {
    Arc::new(move |reason: String| {
        let (url, server) = (url.clone(), server.clone());
        // The hook may run on an async worker; the POST blocks, so it gets its own thread.
        std::thread::spawn(move || {
            let body = serde_json::json!({
                "alert": kind,
                "server": server,
                "reason": reason,
            });
            // An answer that is not 2xx comes back as a response: its status is logged.
            let agent = ureq::Agent::config_builder()
                .timeout_global(Some(std::time::Duration::from_secs(10)))
                .http_status_as_error(false)
                .build()
                .new_agent();
            match agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.to_string())
            {
                Ok(r) if r.status().is_success() => {
                    tracing::warn!(kind, "alert sent to the webhook")
                }
                Ok(r) => tracing::error!(
                    kind,
                    status = r.status().as_u16(),
                    "alert webhook refused the alert"
                ),
                // Not the error's text: some of ureq's errors repeat the URL, which often
                // holds the webhook's secret.
                Err(e) => {
                    tracing::error!(kind, error = webhook_failure(&e), "alert webhook failed")
                }
            }
        });
    })
}

/// What went wrong with a webhook POST, in words that never include its URL.
fn webhook_failure(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(_) => "timed out".into(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::Io(io) => format!("I/O error ({})", io.kind()),
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => "TLS error".into(),
        _ => "the request failed".into(),
    }
}

/// Sign a ledger checkpoint when one is due by time, even if no request arrives.
fn spawn_checkpoint_ticker(repo: Arc<Repository>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            let Ok(keys) = repo.vault().keys() else {
                continue;
            };
            let r = repo.clone();
            match crate::workers::run(move || r.ledger().tick(&keys)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "ledger checkpoint failed"),
                Err(_) => tracing::error!("ledger checkpoint worker failed"),
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
