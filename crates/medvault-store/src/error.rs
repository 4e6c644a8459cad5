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
}
