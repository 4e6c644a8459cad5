//! 256-bit secret keys, HKDF derivation, HMAC, hashing and constant-time comparison.

use ring::{digest, hkdf, hmac};
use zeroize::Zeroizing;

use crate::{CryptoError, Random};

/// Length in bytes of every symmetric key in medvault.
pub const KEY_LEN: usize = 32;

/// HKDF salt: a fixed domain separator so medvault keys never collide with
/// derivations made by other software from the same input key.
const HKDF_SALT: &[u8] = b"medvault/hkdf/v1";
const CHECK_LABEL: &str = "medvault/key-check";
const CHECK_MESSAGE: &[u8] = b"medvault key check v1";

/// A 32-byte secret key, zeroized when dropped.
///
/// Deliberately not `Serialize`, not `PartialEq` (use [`constant_time_eq`] on
/// [`SecretKey::expose`] if needed) and its `Debug` output is redacted.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; KEY_LEN]>);

impl SecretKey {
    /// Generate a fresh random key.
    pub fn generate(rng: &dyn Random) -> Result<SecretKey, CryptoError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill(bytes.as_mut())?;
        Ok(SecretKey(bytes))
    }

    /// Wrap existing key bytes. The caller should zeroize its own copy of `bytes`.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> SecretKey {
        SecretKey(Zeroizing::new(bytes))
    }

    /// Copy key bytes from a slice; fails with [`CryptoError::KeyLength`] unless it is 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<SecretKey, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::KeyLength);
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(bytes);
        Ok(SecretKey(key))
    }

    /// Borrow the raw key bytes.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Derive an independent subkey with HKDF-SHA256
    /// (salt `medvault/hkdf/v1`, info = `label`).
    pub fn derive(&self, label: &str) -> SecretKey {
        hkdf_sha256(self.expose(), label)
    }

    /// A public fingerprint of this key: HMAC-SHA256 under `derive("medvault/key-check")`
    /// of a fixed message. Lets a server verify a reconstructed root key without storing it.
    pub fn check_value(&self) -> [u8; 32] {
        hmac_sha256(&self.derive(CHECK_LABEL), CHECK_MESSAGE)
    }
}

/// HKDF-SHA256 with salt `medvault/hkdf/v1` and info = `label`, 32 bytes out.
/// Shared by [`SecretKey::derive`] and derivations from keys of other lengths
/// (the 64-byte OPAQUE export key).
pub(crate) fn hkdf_sha256(ikm: &[u8], label: &str) -> SecretKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(ikm);
    let info = [label.as_bytes()];
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    // HKDF only fails when asking for more than 255 * 32 bytes; we ask for 32
    // (HKDF_SHA256's own length), so neither step can fail.
    #[allow(clippy::expect_used)]
    prk.expand(&info, hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(out.as_mut()))
        .expect("HKDF-SHA256 expand of 32 bytes cannot fail");
    SecretKey(out)
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &SecretKey, data: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac::sign(&key, data).as_ref());
    out
}

/// Compare two byte strings in time independent of their contents
/// (a length mismatch returns `false`; lengths are not treated as secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Accumulate all differences instead of returning at the first one, so the
    // running time does not reveal where the inputs diverge.
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Lowercase hex, used for test snapshots and printable identifiers.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::DeterministicRandom;

    #[test]
    fn constant_time_eq_behaves() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"\x00", b""));
    }

    #[test]
    fn from_slice_checks_length() {
        assert_eq!(
            SecretKey::from_slice(&[0u8; 31]).unwrap_err(),
            CryptoError::KeyLength
        );
        assert_eq!(
            SecretKey::from_slice(&[0u8; 33]).unwrap_err(),
            CryptoError::KeyLength
        );
        let k = SecretKey::from_slice(&[7u8; 32]).unwrap();
        assert_eq!(k.expose(), &[7u8; 32]);
    }

    #[test]
    fn generate_uses_rng() {
        let a = SecretKey::generate(&DeterministicRandom::new(1)).unwrap();
        let b = SecretKey::generate(&DeterministicRandom::new(1)).unwrap();
        let c = SecretKey::generate(&DeterministicRandom::new(2)).unwrap();
        assert_eq!(a.expose(), b.expose());
        assert_ne!(a.expose(), c.expose());
    }

    #[test]
    fn debug_is_redacted() {
        let k = SecretKey::from_bytes([0xab; 32]);
        let dbg = format!("{k:?}");
        assert!(dbg.contains("[redacted]"));
        assert!(!dbg.contains("ab"));
        assert!(!dbg.contains("171"));
    }

    #[test]
    fn sha256_known_answer() {
        // FIPS 180-2 "abc" test vector.
        assert_eq!(
            to_hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hmac_sha256_known_answer() {
        // RFC 4231 test case 2 uses a 4-byte key, so use a 32-byte key and check
        // against an independent computation via ring's one-shot API instead.
        let key = SecretKey::from_bytes([0x0b; 32]);
        let expected = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[0x0b; 32]),
            b"Hi There",
        );
        assert_eq!(hmac_sha256(&key, b"Hi There").as_slice(), expected.as_ref());
        // RFC 4231 test case 1 uses a 20-byte key; HMAC pads keys, so the
        // 32-byte key with 12 trailing zero bytes gives the same result.
        let mut padded = [0u8; 32];
        padded[..20].copy_from_slice(&[0x0b; 20]);
        assert_eq!(
            to_hex(&hmac_sha256(&SecretKey::from_bytes(padded), b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    #[test]
    fn clone_is_equal() {
        let k = SecretKey::from_bytes([5; 32]);
        assert_eq!(k.clone().expose(), k.expose());
    }
}
