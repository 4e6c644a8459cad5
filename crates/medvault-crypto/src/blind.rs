//! Keyed blind index: deterministic tokens that allow equality search over encrypted fields.

use ring::hmac;

use crate::SecretKey;

/// Length in bytes of a blind-index token.
pub const TOKEN_LEN: usize = 16;

/// HMAC-SHA256 key used to compute blind-index tokens.
pub struct BlindIndexKey {
    key: hmac::Key,
}

impl BlindIndexKey {
    /// Use `key` (normally a dedicated derived key) for blind-index tokens.
    pub fn new(key: &SecretKey) -> BlindIndexKey {
        BlindIndexKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, key.expose()),
        }
    }

    /// `HMAC-SHA256(field || 0x00 || value)` truncated to 16 bytes.
    ///
    /// The field name (e.g. `"Patient.family"`) separates token spaces so equal
    /// values in different fields are unlinkable. Field names are fixed
    /// identifiers without NUL bytes, which keeps the encoding unambiguous.
    pub fn token(&self, field: &str, value: &str) -> [u8; TOKEN_LEN] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(field.as_bytes());
        ctx.update(&[0]);
        ctx.update(value.as_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; TOKEN_LEN];
        out.copy_from_slice(&tag.as_ref()[..TOKEN_LEN]);
        out
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
