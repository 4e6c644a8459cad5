//! Keyed blind index: deterministic tokens that allow equality search over encrypted fields.

use sha2::digest::generic_array::GenericArray;
use zeroize::Zeroize;

use crate::SecretKey;

/// Length in bytes of a blind-index token.
pub const TOKEN_LEN: usize = 16;

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// HMAC-SHA256 key used to compute blind-index tokens.
///
/// Kept as the SHA-256 states after the key's inner and outer pad blocks (RFC 2104), so a
/// token of a short field and value is exactly two compressions. Every stored resource
/// needs a dozen tokens, and `ring::hmac` spent more on copying its contexts than on
/// hashing. The result is HMAC-SHA256 bit for bit; the tests check it against
/// `ring::hmac` for inputs of every length across the block boundaries.
pub struct BlindIndexKey {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl BlindIndexKey {
    /// Use `key` (normally a dedicated derived key) for blind-index tokens.
    pub fn new(key: &SecretKey) -> BlindIndexKey {
        // A 32-byte key is shorter than the block, so it is used as is, padded with zeros.
        let mut pad = zeroize::Zeroizing::new([0u8; 64]);
        pad[..key.expose().len()].copy_from_slice(key.expose());
        pad.iter_mut().for_each(|b| *b ^= 0x36);
        let mut inner = SHA256_IV;
        compress(&mut inner, &pad);
        pad.iter_mut().for_each(|b| *b ^= 0x36 ^ 0x5c);
        let mut outer = SHA256_IV;
        compress(&mut outer, &pad);
        BlindIndexKey { inner, outer }
    }

    /// `HMAC-SHA256(field || 0x00 || value)` truncated to 16 bytes.
    ///
    /// The field name (e.g. `"Patient.family"`) separates token spaces so equal
    /// values in different fields are unlinkable. Field names are fixed
    /// identifiers without NUL bytes, which keeps the encoding unambiguous.
    pub fn token(&self, field: &str, value: &str) -> [u8; TOKEN_LEN] {
        let mut inner = Sha256Tail::after_key_block(self.inner);
        inner.update(field.as_bytes());
        inner.update(&[0]);
        inner.update(value.as_bytes());
        let mut outer = Sha256Tail::after_key_block(self.outer);
        outer.update(&inner.finish());
        let mut out = [0u8; TOKEN_LEN];
        out.copy_from_slice(&outer.finish()[..TOKEN_LEN]);
        out
    }
}

impl Drop for BlindIndexKey {
    fn drop(&mut self) {
        // The states are as good as the key.
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
}

/// SHA-256 continued from a state that has hashed one 64-byte block (the HMAC pad).
/// Zeroized when dropped: it starts as a copy of a pad state, and holds the hashed value.
struct Sha256Tail {
    state: [u32; 8],
    block: [u8; 64],
    /// Bytes in `block`.
    fill: usize,
    /// Bytes hashed, the pad block included.
    total: u64,
}

impl Sha256Tail {
    fn after_key_block(state: [u32; 8]) -> Sha256Tail {
        Sha256Tail {
            state,
            block: [0; 64],
            fill: 0,
            total: 64,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = (64 - self.fill).min(data.len());
            self.block[self.fill..self.fill + n].copy_from_slice(&data[..n]);
            self.fill += n;
            self.total += n as u64;
            data = &data[n..];
            if self.fill == 64 {
                compress(&mut self.state, &self.block);
                self.fill = 0;
            }
        }
    }

    /// The padding (0x80, zeros, the length in bits) and the digest.
    fn finish(&mut self) -> [u8; 32] {
        let bits = self.total.wrapping_mul(8);
        self.block[self.fill] = 0x80;
        self.block[self.fill + 1..].fill(0);
        if self.fill >= 56 {
            compress(&mut self.state, &self.block);
            self.block.fill(0);
        }
        self.block[56..].copy_from_slice(&bits.to_be_bytes());
        compress(&mut self.state, &self.block);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

impl Drop for Sha256Tail {
    fn drop(&mut self) {
        self.state.zeroize();
        self.block.zeroize();
    }
}

impl std::fmt::Debug for BlindIndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlindIndexKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::hmac_sha256;

    #[test]
    fn token_is_truncated_hmac_and_field_separated() {
        let key = SecretKey::from_bytes([4; 32]);
        let bik = BlindIndexKey::new(&key);
        let full = hmac_sha256(&key, b"Patient.family\0Smith");
        assert_eq!(bik.token("Patient.family", "Smith"), full[..TOKEN_LEN]);
        assert_eq!(
            bik.token("Patient.family", "Smith"),
            bik.token("Patient.family", "Smith")
        );
        assert_ne!(
            bik.token("Patient.family", "Smith"),
            bik.token("Patient.given", "Smith")
        );
        assert_ne!(
            bik.token("Patient.family", "Smith"),
            bik.token("Patient.family", "Smyth")
        );
        let other = BlindIndexKey::new(&SecretKey::from_bytes([5; 32]));
        assert_ne!(
            bik.token("Patient.family", "Smith"),
            other.token("Patient.family", "Smith")
        );
        assert_eq!(format!("{bik:?}"), "BlindIndexKey([redacted])");
    }
}
