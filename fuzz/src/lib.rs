//! Shared pieces of the fuzz targets: how an input is cut into parts, the fixed keys and
//! expectations the targets check against, and the signing the harness does itself so
//! that the fuzzer reaches the code behind a signature or checksum check.
//!
//! Input layout used by every target: the first byte picks a mode (`mode_and_rest`),
//! the rest is split on NUL bytes where a mode needs several parts (`parts`). JSON and
//! the text formats fuzzed here never contain a raw NUL, so seeds stay readable.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::signature::Ed25519KeyPair;

/// The "current time" every time-dependent check is made at (as in the crates' tests).
pub const NOW: u64 = 1_700_000_000;
/// The request URL DPoP proofs are checked against (as in the crypto crate's tests).
pub const DPOP_URL: &str = "https://medvault.example/fhir/Patient/123";
/// The access token presented with the proof, for the `ath` check.
pub const ACCESS_TOKEN: &str = "an-access-token.with.dots";
/// The DPoP nonce one of the expectations requires.
pub const DPOP_NONCE: &str = "nonce-1";
/// Issuer and audience of the server's own access tokens.
pub const TOKEN_ISSUER: &str = "https://medvault.example";
pub const TOKEN_AUDIENCE: &str = "https://medvault.example/fhir";
/// The client and token endpoint client assertions are checked against (as in the
/// offline fixtures of the crypto crate's tests).
pub const CLIENT_ID: &str = "backend-service-1";
pub const TOKEN_ENDPOINT: &str = "https://medvault.example/auth/token";

/// The one Ed25519 seed the harness signs with (a TEST-ONLY key): DPoP proofs (their
/// header `jwk` must be this key's), access tokens (the verifier's key) and client
/// assertions (the client's registered key).
pub const SIGNING_SEED: [u8; 32] = [7; 32];
/// Name and seed of the ledger checkpoint key the ledger target signs notes with.
pub const LEDGER_KEY_NAME: &str = "medvault.example/ledger";
pub const LEDGER_SEED: [u8; 32] = [9; 32];
/// The key bundle the key_bundle target seals once: secrets, export key and account
/// binding (TEST-ONLY values), and the seed of the nonce's `DeterministicRandom`.
pub const BUNDLE_ED25519_SEED: [u8; 32] = [1; 32];
pub const BUNDLE_X25519_SECRET: [u8; 32] = [2; 32];
pub const BUNDLE_EXPORT_KEY: [u8; 64] = [3; 64];
pub const BUNDLE_BINDING: &[u8] = b"alice";
pub const BUNDLE_NONCE_SEED: u64 = 1;

/// First byte (the mode) and the rest; `None` for an empty input.
pub fn mode_and_rest(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(m, rest)| (*m, rest))
}

/// The first `N` NUL-separated parts of `data`; missing parts are empty and the last part
/// keeps any further NULs.
pub fn parts<const N: usize>(data: &[u8]) -> [&[u8]; N] {
    let mut out = [&data[..0]; N];
    let mut it = data.splitn(N, |b| *b == 0);
    for slot in &mut out {
        if let Some(p) = it.next() {
            *slot = p;
        }
    }
    out
}

/// Unpadded base64url.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The harness's Ed25519 key pair for `seed`.
pub fn ed25519(seed: &[u8; 32]) -> Ed25519KeyPair {
    // A 32-byte seed is always accepted; this is a fuzz harness, a panic would be reported.
    Ed25519KeyPair::from_seed_unchecked(seed).expect("32-byte Ed25519 seed")
}

/// A compact JWS over the exact `header` and `payload` bytes, signed with `key` (EdDSA).
pub fn sign_compact(key: &Ed25519KeyPair, header: &[u8], payload: &[u8]) -> String {
    let mut out = b64url(header);
    out.push('.');
    out.push_str(&b64url(payload));
    let sig = key.sign(out.as_bytes());
    out.push('.');
    out.push_str(&b64url(sig.as_ref()));
    out
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Eight bytes as a big-endian u64 (zero-padded when short), and the rest.
pub fn take_u64(data: &[u8]) -> (u64, &[u8]) {
    let n = data.len().min(8);
    let mut b = [0u8; 8];
    b[8 - n..].copy_from_slice(&data[..n]);
    (u64::from_be_bytes(b), &data[n..])
}
