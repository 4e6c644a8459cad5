//! Key derivation, check values and helper primitives.

use expect_test::expect;
use medvault_crypto::keys::{constant_time_eq, hmac_sha256, sha256, KEY_LEN};
use medvault_crypto::{CryptoError, SecretKey};

use crate::hex;

fn root() -> SecretKey {
    SecretKey::from_bytes([0x0b; KEY_LEN])
}

#[test]
fn derive_distinct_labels_differ_and_same_label_is_stable() {
    let root = root();
    let a = root.derive("medvault/data");
    let b = root.derive("medvault/blind-index");
    assert_ne!(a.expose(), b.expose());
    assert_ne!(a.expose(), root.expose());
    assert_eq!(a.expose(), root.derive("medvault/data").expose());
    assert_eq!(a.expose(), root.clone().derive("medvault/data").expose());
    // A different root gives a different subkey for the same label.
    let other = SecretKey::from_bytes([0x0c; KEY_LEN]);
    assert_ne!(a.expose(), other.derive("medvault/data").expose());
    // Labels are not prefix-confusable.
    assert_ne!(
        root.derive("medvault/data").expose(),
        root.derive("medvault/data2").expose()
    );
}

#[test]
fn hkdf_known_answer() {
    // HKDF-SHA256(ikm = 0x0b * 32, salt = "medvault/hkdf/v1", info = label, L = 32).
    // Pinned so the derivation can never change silently; the value was checked
    // against an independent HKDF (RFC 5869) implementation.
    expect!["ef67ede7ef8820ab136d23f0ba481d577cea3217ab68c901b05b3b6fda0ba690"]
        .assert_eq(&hex(root().derive("medvault/test").expose()));
    expect!["c3c6c390630f6c3aacff125b04ae241f27ad0e6e77633726ea391c63954b4e26"]
        .assert_eq(&hex(root().derive("").expose()));
}

#[test]
fn check_value_known_answer_and_definition() {
    let root = root();
    let cv = root.check_value();
    assert_eq!(
        cv,
        hmac_sha256(&root.derive("medvault/key-check"), b"medvault key check v1")
    );
    assert_ne!(cv, SecretKey::from_bytes([0x0c; KEY_LEN]).check_value());
    expect!["3fd4073621cec1c11bbde7246b963134ac479a897baccb7f723f803d31f32312"]
        .assert_eq(&hex(&cv));
}

#[test]
fn helpers() {
    assert_eq!(
        hex(&sha256(b"")),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert!(constant_time_eq(&[1, 2, 3], &[1, 2, 3]));
    assert!(!constant_time_eq(&[1, 2, 3], &[1, 2, 4]));
    assert!(!constant_time_eq(&[1, 2, 3], &[1, 2]));
    assert_eq!(
        SecretKey::from_slice(&[0; 16]).unwrap_err(),
        CryptoError::KeyLength
    );
    assert_eq!(format!("{:?}", root()), "SecretKey([redacted])");
}

#[test]
fn error_messages_are_static() {
    // Messages are built from static reasons only; spot-check the wording.
    assert_eq!(CryptoError::Integrity.to_string(), "integrity check failed");
    assert_eq!(
        CryptoError::ShareFormat("bad x coordinate").to_string(),
        "malformed share text: bad x coordinate"
    );
}
