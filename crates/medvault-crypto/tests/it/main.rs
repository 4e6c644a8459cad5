//! Integration tests for medvault-crypto: one test binary, one module per area.

// Tests: a panic is the failure report, so unwrap/expect are the right tool here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod blind;
mod envelope;
mod jose;
mod key_bundle;
mod keys;
mod shamir;
mod share_text;

/// Lowercase hex for snapshots and assertions.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
