//! Pure cryptographic core of medvault: Shamir shares, key hierarchy, envelopes, blind indexes, JOSE, user key bundles.
//!
//! This crate performs no I/O at all (no files, network, environment or clock);
//! randomness is always passed in through the [`Random`] trait so that callers
//! decide the source and tests stay deterministic.

pub mod blind;
pub mod envelope;
mod error;
pub mod jose;
pub mod key_bundle;
pub mod keys;
pub mod random;
pub mod shamir;
pub mod share_text;

pub use error::CryptoError;
pub use jose::JoseError;
pub use key_bundle::{KeyBundle, KeyBundlePublic};
pub use keys::SecretKey;
pub use random::{DeterministicRandom, Random, SystemRandom};
pub use shamir::Share;
