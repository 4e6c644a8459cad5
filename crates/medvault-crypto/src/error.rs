//! The single error type of the crypto core; messages never carry secret material.

/// Everything that can go wrong in `medvault-crypto`.
///
/// Variants only carry static reasons, never key bytes, share values or
/// plaintext, so errors are always safe to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The random number generator failed.
    #[error("random number generator failed")]
    Random,
    /// Key material had the wrong length.
    #[error("key material must be exactly 32 bytes")]
    KeyLength,
    /// Parameters of a split or combine were invalid.
    #[error("invalid share set: {0}")]
    InvalidShareSet(&'static str),
    /// A printable share could not be parsed.
    #[error("malformed share text: {0}")]
    ShareFormat(&'static str),
    /// A printable share parsed but its checksum did not match (typo or corruption).
    #[error("share checksum mismatch (typo or corrupted share)")]
    ShareChecksum,
    /// An envelope header was malformed or unsupported.
    #[error("malformed envelope: {0}")]
    EnvelopeFormat(&'static str),
    /// A sealed key bundle or its public-key text was malformed or of an unknown version.
    #[error("malformed key bundle: {0}")]
    KeyBundleFormat(&'static str),
    /// An OPAQUE export key was shorter than the 32 bytes a 256-bit key needs.
    #[error("export key must be at least 32 bytes")]
    ExportKeyLength,
    /// An X25519 peer key gave an all-zero shared secret (a low-order point).
    #[error("X25519 public key is a low-order point")]
    LowOrderPublicKey,
    /// Authentication failed: wrong key, wrong associated data or tampered data.
    #[error("integrity check failed")]
    Integrity,
}
