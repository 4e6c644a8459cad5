//! Blind-index tokens are HMAC-SHA256 bit for bit (`ring::hmac` is the reference), for
//! inputs of every length around SHA-256's block and padding boundaries.

use medvault_crypto::blind::BlindIndexKey;
use medvault_crypto::SecretKey;
use proptest::prelude::*;

fn reference(key: &[u8; 32], field: &str, value: &str) -> [u8; 16] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(field.as_bytes());
    ctx.update(&[0]);
    ctx.update(value.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&ctx.sign().as_ref()[..16]);
    out
}

#[test]
fn every_length_across_two_blocks_matches_hmac_sha256() {
    let key = [0x5a; 32];
    let bik = BlindIndexKey::new(&SecretKey::from_bytes(key));
    // field + NUL + value from 1 to 200 bytes: one, two and more final blocks, and every
    // place the 0x80 byte and the length can fall.
    for field_len in [0, 1, 14, 54, 55, 63, 64, 65] {
        let field = "f".repeat(field_len);
        for value_len in 0..=135 {
            let value = "v".repeat(value_len);
            assert_eq!(
                bik.token(&field, &value),
                reference(&key, &field, &value),
                "field {field_len} value {value_len}"
            );
        }
    }
}

#[test]
fn a_known_token_is_unchanged() {
    // Tokens are stored: a change here would orphan every existing blind index.
    let bik = BlindIndexKey::new(&SecretKey::from_bytes([4; 32]));
    expect_test::expect!["5e3a5d234a54a543934961ba69339df6"]
        .assert_eq(&crate::hex(&bik.token("Patient.family", "smith")));
}

proptest! {
    #[test]
    fn tokens_are_truncated_hmac_sha256(
        key in any::<[u8; 32]>(),
        field in "[a-zA-Z.-]{0,80}",
        value in any::<String>(),
    ) {
        let bik = BlindIndexKey::new(&SecretKey::from_bytes(key));
        prop_assert_eq!(bik.token(&field, &value), reference(&key, &field, &value));
    }
}
