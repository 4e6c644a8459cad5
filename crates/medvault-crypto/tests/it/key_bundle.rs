//! User key bundles: sealing under the OPAQUE export key, known answers, and refusal of anything altered.

use expect_test::expect;
use medvault_crypto::key_bundle::{FORMAT_V1, MIN_EXPORT_KEY_LEN, SEALED_LEN};
use medvault_crypto::{CryptoError, DeterministicRandom, KeyBundle, KeyBundlePublic, SystemRandom};
use proptest::prelude::*;

use crate::hex;

/// opaque-ke with SHA-512 gives a 64-byte export key.
const EXPORT_KEY: [u8; 64] = [0x5a; 64];
const ACCOUNT: &[u8] = b"alice@example.org";

fn bundle(seed: u64) -> KeyBundle {
    KeyBundle::generate(&DeterministicRandom::new(seed)).unwrap()
}

fn sealed(bundle: &KeyBundle) -> Vec<u8> {
    bundle
        .seal(&EXPORT_KEY, ACCOUNT, &DeterministicRandom::new(99))
        .unwrap()
}

fn unhex32(text: &str) -> [u8; 32] {
    assert_eq!(text.len(), 64);
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

fn is_refusal(err: &CryptoError) -> bool {
    matches!(
        err,
        CryptoError::Integrity | CryptoError::KeyBundleFormat(_)
    )
}

#[test]
fn round_trip() {
    let rng = SystemRandom::new();
    let original = KeyBundle::generate(&rng).unwrap();
    let public = original.public();
    let sealed = original.seal(&EXPORT_KEY, ACCOUNT, &rng).unwrap();
    assert_eq!(sealed.len(), SEALED_LEN);
    assert_eq!(sealed.len(), 93);
    assert_eq!(sealed[0], FORMAT_V1);

    let opened = KeyBundle::open(&sealed, &EXPORT_KEY, ACCOUNT, &public).unwrap();
    assert_eq!(opened.public(), public);
    // Ed25519 is deterministic, so equal signatures mean equal seeds.
    assert_eq!(opened.sign(b"msg"), original.sign(b"msg"));
    let peer = bundle(5).public().x25519;
    assert_eq!(
        *opened.x25519_agree(&peer).unwrap(),
        *original.x25519_agree(&peer).unwrap()
    );
    // A fresh nonce every time.
    assert_ne!(sealed, original.seal(&EXPORT_KEY, ACCOUNT, &rng).unwrap());
}

#[test]
fn generate_uses_rng() {
    assert_eq!(bundle(1).public(), bundle(1).public());
    assert_ne!(bundle(1).public(), bundle(2).public());
    let public = bundle(1).public();
    assert_ne!(public.ed25519, public.x25519);
}

#[test]
fn wrong_export_key_binding_or_public_keys_refused() {
    let b = bundle(1);
    let public = b.public();
    let sealed = sealed(&b);
    let open = |key: &[u8], binding: &[u8], public: &KeyBundlePublic| {
        KeyBundle::open(&sealed, key, binding, public).unwrap_err()
    };

    let mut other_key = EXPORT_KEY;
    other_key[63] ^= 1;
    assert_eq!(open(&other_key, ACCOUNT, &public), CryptoError::Integrity);
    // The whole export key is the HKDF input, not a prefix of it.
    assert_eq!(
        open(&EXPORT_KEY[..32], ACCOUNT, &public),
        CryptoError::Integrity
    );

    for binding in [
        &b"bob@example.org"[..],
        b"alice@example.or",
        b"alice@example.org\0",
        b"Alice@example.org",
    ] {
        assert_eq!(open(&EXPORT_KEY, binding, &public), CryptoError::Integrity);
    }

    let stranger = bundle(2).public();
    let swapped = [
        stranger,
        KeyBundlePublic {
            ed25519: stranger.ed25519,
            ..public
        },
        KeyBundlePublic {
            x25519: stranger.x25519,
            ..public
        },
        KeyBundlePublic {
            ed25519: public.x25519,
            x25519: public.ed25519,
        },
    ];
    for other in swapped {
        assert_eq!(open(&EXPORT_KEY, ACCOUNT, &other), CryptoError::Integrity);
    }
    assert!(KeyBundle::open(&sealed, &EXPORT_KEY, ACCOUNT, &public).is_ok());
}

#[test]
fn public_keys_not_matching_the_secrets_refused() {
    // A sealer that binds public keys other than its own: the AAD matches, the
    // recomputed keys do not. Built by hand with ring, as a broken client would.
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    use ring::hkdf;

    let liar = bundle(2).public();
    let mut aad = vec![FORMAT_V1];
    aad.extend_from_slice(b"medvault/key-bundle/v1");
    aad.extend_from_slice(ACCOUNT);
    aad.extend_from_slice(&liar.ed25519);
    aad.extend_from_slice(&liar.x25519);
    let mut key = [0u8; 32];
    hkdf::Salt::new(hkdf::HKDF_SHA256, b"medvault/hkdf/v1")
        .extract(&EXPORT_KEY)
        .expand(&[b"medvault/key-bundle/v1"], hkdf::HKDF_SHA256)
        .unwrap()
        .fill(&mut key)
        .unwrap();
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
    let nonce = [7u8; 12];
    let mut body = [3u8; 64]; // secrets of some other bundle
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad),
            &mut body,
        )
        .unwrap();
    let mut sealed = vec![FORMAT_V1];
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&body);
    sealed.extend_from_slice(tag.as_ref());
    assert_eq!(
        KeyBundle::open(&sealed, &EXPORT_KEY, ACCOUNT, &liar).unwrap_err(),
        CryptoError::Integrity
    );
    // The same construction with the true public keys opens: the test is sound.
    let honest = KeyBundle::from_secrets(&[3; 32], &[3; 32]).public();
    let mut aad = vec![FORMAT_V1];
    aad.extend_from_slice(b"medvault/key-bundle/v1");
    aad.extend_from_slice(ACCOUNT);
    aad.extend_from_slice(&honest.ed25519);
    aad.extend_from_slice(&honest.x25519);
    let mut body = [3u8; 64];
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad),
            &mut body,
        )
        .unwrap();
    let mut sealed = vec![FORMAT_V1];
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&body);
    sealed.extend_from_slice(tag.as_ref());
    let opened = KeyBundle::open(&sealed, &EXPORT_KEY, ACCOUNT, &honest).unwrap();
    assert_eq!(opened.public(), honest);
}

#[test]
fn bad_arguments_refused() {
    let b = bundle(1);
    let public = b.public();
    let sealed = sealed(&b);
    let rng = DeterministicRandom::new(1);
    let short = [0x5a; MIN_EXPORT_KEY_LEN - 1];
    assert_eq!(
        b.seal(&short, ACCOUNT, &rng).unwrap_err(),
        CryptoError::ExportKeyLength
    );
    assert_eq!(
        b.seal(&[], ACCOUNT, &rng).unwrap_err(),
        CryptoError::ExportKeyLength
    );
    assert_eq!(
        KeyBundle::open(&sealed, &short, ACCOUNT, &public).unwrap_err(),
        CryptoError::ExportKeyLength
    );
    assert_eq!(
        b.seal(&EXPORT_KEY, b"", &rng).unwrap_err(),
        CryptoError::KeyBundleFormat("empty account binding")
    );
    assert_eq!(
        KeyBundle::open(&sealed, &EXPORT_KEY, b"", &public).unwrap_err(),
        CryptoError::KeyBundleFormat("empty account binding")
    );
    // Exactly the minimum length is accepted.
    let min_key = [0x5a; MIN_EXPORT_KEY_LEN];
    let s = b.seal(&min_key, ACCOUNT, &rng).unwrap();
    assert!(KeyBundle::open(&s, &min_key, ACCOUNT, &public).is_ok());
}

#[test]
fn every_bit_flip_refused() {
    let b = bundle(3);
    let public = b.public();
    let sealed = sealed(&b);
    for i in 0..sealed.len() {
        for bit in 0..8 {
            let mut bad = sealed.clone();
            bad[i] ^= 1 << bit;
            let err = KeyBundle::open(&bad, &EXPORT_KEY, ACCOUNT, &public).unwrap_err();
            let expected = if i == 0 {
                CryptoError::KeyBundleFormat("unsupported version")
            } else {
                CryptoError::Integrity
            };
            assert_eq!(err, expected, "byte {i} bit {bit}");
        }
    }
}

#[test]
fn truncated_extended_and_unknown_versions_refused() {
    let b = bundle(4);
    let public = b.public();
    let sealed = sealed(&b);
    assert_eq!(
        KeyBundle::open(&[], &EXPORT_KEY, ACCOUNT, &public).unwrap_err(),
        CryptoError::KeyBundleFormat("empty")
    );
    for len in 1..sealed.len() {
        assert_eq!(
            KeyBundle::open(&sealed[..len], &EXPORT_KEY, ACCOUNT, &public).unwrap_err(),
            CryptoError::KeyBundleFormat("wrong length"),
            "prefix of {len} bytes"
        );
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert_eq!(
        KeyBundle::open(&longer, &EXPORT_KEY, ACCOUNT, &public).unwrap_err(),
        CryptoError::KeyBundleFormat("wrong length")
    );
    for version in [0u8, 2, 0x80, 0xff] {
        let mut other = sealed.clone();
        other[0] = version;
        assert_eq!(
            KeyBundle::open(&other, &EXPORT_KEY, ACCOUNT, &public).unwrap_err(),
            CryptoError::KeyBundleFormat("unsupported version")
        );
        // An unknown version is named as such whatever its length.
        assert_eq!(
            KeyBundle::open(&other[..10], &EXPORT_KEY, ACCOUNT, &public).unwrap_err(),
            CryptoError::KeyBundleFormat("unsupported version")
        );
    }
}

#[test]
fn sealed_snapshot() {
    // Secrets from DeterministicRandom(1), nonce from DeterministicRandom(2). Pinned so
    // the format cannot drift. All three values were reproduced from the module
    // documentation alone with Python `cryptography`, and the sealed bytes opened with
    // WebCrypto (Node) following the recipe there.
    let b = bundle(1);
    let public = b.public();
    let sealed = b
        .seal(&EXPORT_KEY, ACCOUNT, &DeterministicRandom::new(2))
        .unwrap();
    expect![[r#"{"ed25519":"Bp2NaYDq8byi5BGLxhKhPyN5G_LGDO7yaStYHSewoVk","x25519":"NIkVSUgmtcwA0lVPc3Pe9EbPwMjYcghiHJK32nzH7gg"}"#]].assert_eq(&public.to_json());
    expect!["0343262682e6741a406078f59ea9078874e7550e451291c8d7fffd77812b502d"]
        .assert_eq(&hex(&public.thumbprint()));
    expect!["011309ac3f4e41512820fbf2590917640a9930270353a02611b5f76d2c79f258e43b6178edb7955ea4f78da85e83544633cfbf3cfd36f1f9fdb89c1c5eb69d6da8032f7fd7bd39581cc0e5de87d899b086c5fa3f5aca385a7e1bea6c37"].assert_eq(&hex(&sealed));
    let opened = KeyBundle::open(&sealed, &EXPORT_KEY, ACCOUNT, &public).unwrap();
    assert_eq!(opened.public(), public);
}

#[test]
fn x25519_rfc7748_known_answer() {
    // RFC 7748 §6.1.
    let alice_secret = unhex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let alice_public = unhex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    let bob_secret = unhex32("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    let bob_public = unhex32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    let shared = unhex32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");

    let alice = KeyBundle::from_secrets(&[1; 32], &alice_secret);
    let bob = KeyBundle::from_secrets(&[2; 32], &bob_secret);
    assert_eq!(alice.public().x25519, alice_public);
    assert_eq!(bob.public().x25519, bob_public);
    assert_eq!(*alice.x25519_agree(&bob_public).unwrap(), shared);
    assert_eq!(*bob.x25519_agree(&alice_public).unwrap(), shared);

    // The secret survives sealing unchanged (stored as given, clamped only when used).
    let sealed = alice
        .seal(&EXPORT_KEY, ACCOUNT, &DeterministicRandom::new(1))
        .unwrap();
    let opened = KeyBundle::open(&sealed, &EXPORT_KEY, ACCOUNT, &alice.public()).unwrap();
    assert_eq!(*opened.x25519_agree(&bob_public).unwrap(), shared);
}

#[test]
fn x25519_low_order_peer_refused() {
    let b = bundle(1);
    // u = 0 and u = 1 are small-order points: the shared secret would be all zeros.
    let mut one = [0u8; 32];
    one[0] = 1;
    for peer in [[0u8; 32], one] {
        assert_eq!(
            b.x25519_agree(&peer).unwrap_err(),
            CryptoError::LowOrderPublicKey
        );
    }
}

#[test]
fn ed25519_rfc8032_known_answer() {
    // RFC 8032 §7.1, TEST 1 (empty message).
    let seed = unhex32("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60");
    let public = unhex32("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    let b = KeyBundle::from_secrets(&seed, &[9; 32]);
    assert_eq!(b.public().ed25519, public);
    let signature = b.sign(b"");
    assert_eq!(
        hex(&signature),
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    );
    b.public().verify(b"", &signature).unwrap();
}

#[test]
fn signatures_verify_only_unaltered() {
    let b = bundle(6);
    let public = b.public();
    let signature = b.sign(b"consent v3");
    public.verify(b"consent v3", &signature).unwrap();
    assert_eq!(
        public.verify(b"consent v4", &signature).unwrap_err(),
        CryptoError::Integrity
    );
    let mut bad = signature;
    bad[10] ^= 1;
    assert_eq!(
        public.verify(b"consent v3", &bad).unwrap_err(),
        CryptoError::Integrity
    );
    assert_eq!(
        public.verify(b"consent v3", &signature[..63]).unwrap_err(),
        CryptoError::Integrity
    );
    assert_eq!(
        bundle(7)
            .public()
            .verify(b"consent v3", &signature)
            .unwrap_err(),
        CryptoError::Integrity
    );
}

#[test]
fn public_json_round_trip_and_strictness() {
    let public = KeyBundle::from_secrets(&[1; 32], &[2; 32]).public();
    let json = public.to_json();
    assert_eq!(json, serde_json::to_string(&public).unwrap());
    assert_eq!(KeyBundlePublic::from_json(&json).unwrap(), public);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        serde_json::from_value::<KeyBundlePublic>(value).unwrap(),
        public
    );

    let ed = &json[12..55];
    let x = &json[67..110];
    assert_eq!(format!(r#"{{"ed25519":"{ed}","x25519":"{x}"}}"#), json);
    // Whitespace and member order are JSON's business, not the keys'.
    assert_eq!(
        KeyBundlePublic::from_json(&format!(r#" {{ "x25519" : "{x}", "ed25519":"{ed}" }} "#))
            .unwrap(),
        public
    );

    let refused = [
        String::new(),
        "null".to_owned(),
        "[]".to_owned(),
        format!(r#"{{"ed25519":"{ed}"}}"#),
        format!(r#"{{"x25519":"{x}"}}"#),
        format!(r#"{{"ed25519":"{ed}","x25519":"{x}","kid":"k"}}"#),
        format!(r#"{{"ed25519":"{ed}","x25519":"{x}","x25519":"{x}"}}"#),
        format!(r#"{{"ed25519":"{ed}=","x25519":"{x}"}}"#),
        format!(r#"{{"ed25519":"{ed}","x25519":"{}"}}"#, &x[..42]),
        format!(r#"{{"ed25519":"{ed}","x25519":"{x}A"}}"#),
        format!(r#"{{"ed25519":"{ed}","x25519":"{x}AAAA"}}"#),
        format!(r#"{{"ed25519":"{ed}","x25519":null}}"#),
        format!(r#"{{"ed25519":"{ed}","x25519":"{x}"}} x"#),
        // Standard alphabet instead of base64url.
        format!(r#"{{"ed25519":"{ed}","x25519":"+{}"}}"#, &x[1..]),
        format!(r#"{{"ed25519":"{ed}","x25519":"/{}"}}"#, &x[1..]),
        format!(r#"{{"ed25519":"{ed}","x25519":"{x}"{}}}"#, " ".repeat(1024)),
    ];
    for text in &refused {
        let err = KeyBundlePublic::from_json(text).unwrap_err();
        assert!(
            matches!(err, CryptoError::KeyBundleFormat(_)),
            "{text}: {err:?}"
        );
    }
}

#[test]
fn public_json_refuses_non_canonical_trailing_bits() {
    let public = KeyBundle::from_secrets(&[1; 32], &[2; 32]).public();
    let json = public.to_json();
    let x = &json[67..110];
    // 32 bytes are 43 characters: the last carries 4 data bits and 2 bits that must be zero.
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut accepted = 0;
    for (i, c) in ALPHABET.chars().enumerate() {
        let text = json.replace(x, &format!("{}{c}", &x[..42]));
        let ok = KeyBundlePublic::from_json(&text).is_ok();
        assert_eq!(ok, i % 4 == 0, "{c}");
        accepted += usize::from(ok);
    }
    assert_eq!(accepted, 16);
}

#[test]
fn thumbprint_is_defined_and_distinguishes() {
    let public = bundle(1).public();
    let mut input = b"medvault/key-bundle/thumbprint/v1".to_vec();
    input.extend_from_slice(&public.ed25519);
    input.extend_from_slice(&public.x25519);
    assert_eq!(public.thumbprint(), medvault_crypto::keys::sha256(&input));
    assert_ne!(public.thumbprint(), bundle(2).public().thumbprint());
    let swapped = KeyBundlePublic {
        ed25519: public.x25519,
        x25519: public.ed25519,
    };
    assert_ne!(public.thumbprint(), swapped.thumbprint());
}

#[test]
fn debug_shows_no_secret() {
    let b = KeyBundle::from_secrets(&[0xab; 32], &[0xcd; 32]);
    let text = format!("{b:?}");
    // The secrets in base64url, hex and decimal.
    for needle in ["q6ur", "zc3N", "abab", "cdcd", "171, 171", "205, 205"] {
        assert!(!text.contains(needle), "{needle} in {text}");
    }
    expect![[r#"KeyBundle { public: KeyBundlePublic { ed25519: "JIrL26-eBQGW3nBL6i1odw5RkVDRA7WH2uLZytU92TA", x25519: "tb6oI9nJ_1dgkcVLfFlsCuKWiE8OFQKQ6IRV1_umEm8" }, secrets: "[redacted]" }"#]].assert_eq(&text);
}

#[test]
fn key_bundle_is_send_sync_and_zeroizes_on_drop() {
    fn check<T: Send + Sync + zeroize::ZeroizeOnDrop>() {}
    check::<KeyBundle>();
}

/// Proptest strategies: export keys, bindings, seeds.
fn export_key() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), MIN_EXPORT_KEY_LEN..=80)
}

fn binding() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..48)
}

proptest! {
    #[test]
    fn any_round_trip_and_any_bit_flip_refused(
        seed in any::<u64>(),
        nonce_seed in any::<u64>(),
        key in export_key(),
        account in binding(),
        bit in 0..SEALED_LEN * 8,
    ) {
        let b = bundle(seed);
        let public = b.public();
        let sealed = b.seal(&key, &account, &DeterministicRandom::new(nonce_seed)).unwrap();
        prop_assert_eq!(sealed.len(), SEALED_LEN);
        let opened = KeyBundle::open(&sealed, &key, &account, &public).unwrap();
        prop_assert_eq!(opened.public(), public);

        let mut bad = sealed.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let err = KeyBundle::open(&bad, &key, &account, &public).unwrap_err();
        prop_assert!(is_refusal(&err), "{:?}", err);
    }

    #[test]
    fn any_altered_key_binding_or_public_key_refused(
        seed in any::<u64>(),
        key in export_key(),
        account in binding(),
        key_bit in any::<prop::sample::Index>(),
        account_bit in any::<prop::sample::Index>(),
        public_bit in 0..512usize,
    ) {
        let b = bundle(seed);
        let public = b.public();
        let sealed = b.seal(&key, &account, &DeterministicRandom::new(seed)).unwrap();

        let mut other_key = key.clone();
        other_key[key_bit.index(key.len())] ^= 1 << (key_bit.index(8));
        prop_assert_eq!(
            KeyBundle::open(&sealed, &other_key, &account, &public).unwrap_err(),
            CryptoError::Integrity
        );

        let mut other_account = account.clone();
        other_account[account_bit.index(account.len())] ^= 1 << (account_bit.index(8));
        prop_assert_eq!(
            KeyBundle::open(&sealed, &key, &other_account, &public).unwrap_err(),
            CryptoError::Integrity
        );

        let mut other_public = public;
        if public_bit < 256 {
            other_public.ed25519[public_bit / 8] ^= 1 << (public_bit % 8);
        } else {
            other_public.x25519[(public_bit - 256) / 8] ^= 1 << (public_bit % 8);
        }
        prop_assert_eq!(
            KeyBundle::open(&sealed, &key, &account, &other_public).unwrap_err(),
            CryptoError::Integrity
        );
    }

    #[test]
    fn any_truncation_or_extension_refused(
        seed in any::<u64>(),
        cut in 0..SEALED_LEN,
        extra in proptest::collection::vec(any::<u8>(), 1..32),
    ) {
        let b = bundle(seed);
        let public = b.public();
        let sealed = sealed(&b);
        let err = KeyBundle::open(&sealed[..cut], &EXPORT_KEY, ACCOUNT, &public).unwrap_err();
        prop_assert!(matches!(err, CryptoError::KeyBundleFormat(_)), "{:?}", err);
        let mut longer = sealed.clone();
        longer.extend_from_slice(&extra);
        prop_assert_eq!(
            KeyBundle::open(&longer, &EXPORT_KEY, ACCOUNT, &public).unwrap_err(),
            CryptoError::KeyBundleFormat("wrong length")
        );
    }

    #[test]
    fn arbitrary_input_never_opens_or_panics(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..128),
        version_one in any::<bool>(),
    ) {
        if version_one && !bytes.is_empty() {
            bytes[0] = FORMAT_V1;
        }
        let public = bundle(1).public();
        let err = KeyBundle::open(&bytes, &EXPORT_KEY, ACCOUNT, &public).unwrap_err();
        prop_assert!(is_refusal(&err), "{:?}", err);
    }

    #[test]
    fn arbitrary_json_never_panics(text in ".{0,200}") {
        let _ = KeyBundlePublic::from_json(&text);
    }
}
