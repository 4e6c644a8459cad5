//! The storage error type.

/// Errors from the store. Messages never contain resource contents (the store never sees
/// plaintext anyway), only what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("blob store error: {0}")]
    Blob(#[from] object_store::Error),
    #[error("the data directory is already initialized")]
    AlreadyInitialized,
    #[error("a concurrent change won; the precondition no longer holds")]
    Conflict,
    #[error("the audit ledger does not continue where the appended rows expect (another writer, or rows deleted)")]
    LedgerConflict,
    #[error(
        "the database schema is newer than this program (schema {found}, supported {supported})"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("stored data is malformed: {0}")]
    Corrupt(&'static str),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The caller of a streamed commit stopped it (nothing was written).
    #[error("the commit was abandoned by its writer")]
    Abandoned,
}

/// Why a store operation could not run, for a precise answer to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The disk (or a file-size limit) is full.
    Full,
    /// Another process holds the database longer than the busy timeout.
    Busy,
    /// The database or data directory cannot be written.
    ReadOnly,
}

impl StoreError {
    /// The condition behind this error if it is one an operator must fix (nothing was
    /// written), as opposed to a bug or corruption.
    pub fn unavailable(&self) -> Option<Unavailable> {
        use rusqlite::ErrorCode as C;
        let from_os = |e: &std::io::Error| match e.raw_os_error() {
            // ENOSPC, EFBIG, EDQUOT
            Some(28 | 27 | 122) => Some(Unavailable::Full),
            // EROFS, EACCES, EPERM
            Some(30 | 13 | 1) => Some(Unavailable::ReadOnly),
            _ => None,
        };
        match self {
            StoreError::Database(rusqlite::Error::SqliteFailure(e, _)) => match e.code {
                C::DiskFull => Some(Unavailable::Full),
                C::DatabaseBusy | C::DatabaseLocked => Some(Unavailable::Busy),
                C::ReadOnly | C::CannotOpen | C::PermissionDenied => Some(Unavailable::ReadOnly),
                _ => None,
            },
            StoreError::Io(e) => from_os(e),
            StoreError::Blob(object_store::Error::Generic { source, .. }) => {
                source.downcast_ref::<std::io::Error>().and_then(from_os)
            }
            _ => None,
        }
    }
}
