//! Pure Merkle audit-ledger core of medvault: tree hashing, proofs, entry commitments, checkpoints.
//!
//! Every audited event is an [`Entry`] with a canonical binary encoding. The
//! log never stores entries in the tree directly: it appends
//! `leaf_hash(commitment(salt, entry))`, a salted commitment, so the public
//! tree reveals nothing, yet a patient handed `(entry, salt, proof)` can
//! recompute their leaf and check it against a signed checkpoint.
//!
//! - [`hash`]: RFC 9162 leaf/node hashing.
//! - [`tree`]: the append-only [`Frontier`] (emits completed perfect subtrees so a
//!   store can persist them as tiles), the reference [`mth`], and [`NodeSource`].
//! - [`proof`]: RFC 9162 inclusion and consistency proof generation and verification.
//! - [`entry`]: audit entries, canonical encoding, salted commitments.
//! - [`checkpoint`]: C2SP tlog-checkpoint bodies in C2SP signed notes (Ed25519).
//!
//! The crate performs no I/O (no files, network, clock, threads or randomness):
//! callers pass in times, salts, seeds and node sources, so everything is
//! deterministic and testable.

#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod entry;
mod error;
pub mod hash;
pub mod proof;
pub mod tree;

pub use checkpoint::{open, Checkpoint, SignedNote, SigningKey, VerifierKey};
pub use entry::{commitment, entry_leaf, Entry, EntryText, MoreResources, Outcome, Salt};
pub use error::{
    CheckpointError, EntryError, FrontierError, HashError, MissingNode, ProofError, VerifyError,
};
pub use hash::{empty_root, leaf_hash, node_hash, Hash};
pub use proof::{
    consistency_proof, inclusion_proof, root_from_inclusion_proof, verify_consistency,
    verify_inclusion,
};
pub use tree::{mth, Completed, Frontier, Node, NodeSource};
