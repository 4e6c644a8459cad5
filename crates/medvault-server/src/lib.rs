//! The medvault server: seal lifecycle (`vault`), the encrypted FHIR repository (`repo`),
//! the HTTP API (`api`) and the listener (`serve`).

pub mod access;
pub mod accounts;
pub mod api;
mod bundle;
pub mod clients;
pub mod clock;
#[doc(hidden)]
pub mod fuzzing;
pub mod grants;
pub mod ledger;
pub mod limits;
pub mod login;
pub mod outcome;
pub mod repo;
mod search_time;
mod serve;
pub mod session;
pub mod vault;
mod workers;

pub use serve::{
    check_listen, open_data_dir, open_data_dir_with_cache, serve, DataDir, DataDirLock, ServeError,
    ServeOptions, TlsFiles, HEADER_READ_TIMEOUT, LOCK_FILE,
};

/// Most entries one Bundle may have.
pub use bundle::MAX_ENTRIES as MAX_BUNDLE_ENTRIES;
