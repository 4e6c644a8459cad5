//! Error types of the ledger core, one enum per area so callers can match precisely.
//!
//! No variant carries entry contents or salts, so every error is safe to log.

/// A 32-byte value (hash or salt) could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    /// The input did not hold exactly 32 bytes.
    #[error("expected 32 bytes, got {0}")]
    Length(usize),
    /// The input was not lowercase or uppercase hexadecimal.
    #[error("invalid hexadecimal")]
    Hex,
}

/// A [`Frontier`](crate::Frontier) operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrontierError {
    /// Restored parts are inconsistent: a tree of `size` leaves has exactly
    /// popcount(`size`) perfect subtree roots.
    #[error("tree of size {size} needs {expected} subtree roots, got {got}")]
    PartsMismatch {
        /// Claimed tree size.
        size: u64,
        /// popcount(size).
        expected: u32,
        /// Number of roots supplied.
        got: usize,
    },
    /// The tree already holds `u64::MAX` leaves.
    #[error("tree is full")]
    Full,
}

/// A [`NodeSource`](crate::NodeSource) over a slice was asked for a subtree it does not cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no perfect subtree at level {level}, index {index}")]
pub struct MissingNode {
    /// Requested level.
    pub level: u32,
    /// Requested index within the level.
    pub index: u64,
}

/// Proof generation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError<E> {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// Requested leaf index.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// Consistency needs `0 < old_size <= new_size`.
    #[error("no consistency proof from size {old} to size {new}")]
    InvalidSizes {
        /// Older tree size.
        old: u64,
        /// Newer tree size.
        new: u64,
    },
    /// The node source failed (missing tile, storage error, ...).
    #[error("node source failed: {0}")]
    Source(E),
}

/// A proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// Claimed leaf index.
        index: u64,
        /// Claimed tree size.
        size: u64,
    },
    /// Consistency needs `0 < old_size <= new_size`.
    #[error("no consistency proof from size {old} to size {new}")]
    InvalidSizes {
        /// Claimed older size.
        old: u64,
        /// Claimed newer size.
        new: u64,
    },
    /// The proof has more elements than the tree shape allows.
    #[error("proof has too many elements")]
    ProofTooLong,
    /// The proof has fewer elements than the tree shape needs.
    #[error("proof has too few elements")]
    ProofTooShort,
    /// The recomputed old root differs from the claimed one.
    #[error("old root does not match")]
    OldRootMismatch,
    /// The recomputed root differs from the claimed one.
    #[error("root does not match")]
    RootMismatch,
}

/// An audit entry could not be built or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// A text value exceeds [`MAX_TEXT_LEN`](crate::entry::MAX_TEXT_LEN) bytes.
    #[error("text is {len} bytes, limit is 4096")]
    TextTooLong {
        /// Length of the rejected value in bytes.
        len: usize,
    },
    /// More further resources than one entry may name.
    #[error(
        "an entry names at most {} further resources, not {count}",
        crate::entry::MAX_MORE
    )]
    TooManyResources {
        /// How many were given.
        count: usize,
    },
    /// A version-2 encoding declares no further resources, or more than allowed.
    #[error("entry encoding declares {count} further resources, allowed 1 to {max}", count = .0, max = crate::entry::MAX_MORE)]
    ResourceCount(u32),
    /// The encoding starts with an unknown version byte.
    #[error("unknown entry encoding version {0}")]
    UnknownVersion(u8),
    /// The encoding ended in the middle of a field.
    #[error("entry encoding is truncated")]
    Truncated,
    /// Bytes follow the last field.
    #[error("entry encoding has trailing bytes")]
    TrailingBytes,
    /// A length prefix exceeds the per-field limit.
    #[error("field {field} declares {len} bytes, limit is 4096")]
    FieldTooLong {
        /// Field name.
        field: &'static str,
        /// Declared length.
        len: u32,
    },
    /// A text field is not valid UTF-8.
    #[error("field {field} is not valid UTF-8")]
    NotUtf8 {
        /// Field name.
        field: &'static str,
    },
    /// The outcome byte is not a known outcome.
    #[error("unknown outcome byte {0}")]
    UnknownOutcome(u8),
    /// A boolean byte is neither 0 nor 1.
    #[error("invalid boolean byte {0}")]
    InvalidBool(u8),
}

/// A checkpoint, signed note or key could not be built, parsed or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The note exceeds [`MAX_NOTE_LEN`](crate::checkpoint::MAX_NOTE_LEN).
    #[error("note is larger than 1 MiB")]
    TooLarge,
    /// The note is not valid UTF-8.
    #[error("note is not valid UTF-8")]
    NotUtf8,
    /// The note contains a control character other than newline.
    #[error("note contains a control character")]
    ControlChar,
    /// The note structure (lines, separators, signature lines) is wrong.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// The origin line is empty or contains whitespace or '+'.
    #[error("invalid origin")]
    InvalidOrigin,
    /// The tree size line is not a canonical decimal u64.
    #[error("invalid tree size")]
    InvalidSize,
    /// The root hash line is not base64 of exactly 32 bytes.
    #[error("invalid root hash")]
    InvalidRoot,
    /// A key name is empty or contains whitespace or '+'.
    #[error("invalid key name")]
    InvalidKeyName,
    /// A verifier key string is malformed or its key ID does not match.
    #[error("invalid verifier key: {0}")]
    InvalidVerifierKey(&'static str),
    /// The signing seed was rejected.
    #[error("signing key rejected")]
    KeyRejected,
    /// A signature from the trusted key did not verify.
    #[error("signature from the trusted key is invalid")]
    BadSignature,
    /// No signature line came from the trusted key.
    #[error("no signature from the trusted key")]
    NoTrustedSignature,
}
