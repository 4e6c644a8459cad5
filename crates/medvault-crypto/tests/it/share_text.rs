//! Printable share text: round trips, corruption detection, snapshot.

use expect_test::expect;
use medvault_crypto::shamir::{combine, split};
use medvault_crypto::share_text::ShareText;
use medvault_crypto::{CryptoError, DeterministicRandom, Share};
use proptest::prelude::*;

fn share_text_strategy() -> impl Strategy<Value = ShareText> {
    (
        any::<[u8; 8]>(),
        1..=255u8,
        1..=255u8,
        proptest::collection::vec(any::<u8>(), 1..64),
    )
        .prop_map(|(set_id, threshold, x, y)| {
            ShareText::new(set_id, threshold, Share::new(x, y).unwrap())
        })
}

/// Characters a typo could plausibly introduce, including format-relevant ones.
const TYPO_CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_:+/= .";

proptest! {
    #[test]
    fn round_trips(st in share_text_strategy()) {
        let text = st.encode();
        let parsed = ShareText::parse(&text).unwrap();
        prop_assert_eq!(parsed.set_id(), st.set_id());
        prop_assert_eq!(parsed.threshold(), st.threshold());
        prop_assert_eq!(parsed.share().x(), st.share().x());
        prop_assert_eq!(parsed.share().y(), st.share().y());
        prop_assert_eq!(parsed.commitment(), st.commitment());
        prop_assert_eq!(&*parsed.encode(), &*text);
    }

    #[test]
    fn any_changed_char_is_detected(
        st in share_text_strategy(),
        pos in any::<prop::sample::Index>(),
        replacement in any::<prop::sample::Index>(),
    ) {
        let mut bytes = st.encode().as_bytes().to_vec();
        let p = pos.index(bytes.len());
        let mut c = TYPO_CHARS[replacement.index(TYPO_CHARS.len())];
        if c == bytes[p] {
            // Guarantee an actual change by moving to the next candidate.
            c = TYPO_CHARS[(replacement.index(TYPO_CHARS.len()) + 1) % TYPO_CHARS.len()];
        }
        bytes[p] = c;
        let corrupted = String::from_utf8(bytes).unwrap();
        let err = ShareText::parse(&corrupted).unwrap_err();
        prop_assert!(
            matches!(err, CryptoError::ShareChecksum | CryptoError::ShareFormat(_)),
            "unexpected error {:?}", err
        );
    }
}

#[test]
fn every_position_and_deletion_is_detected() {
    let shares = split(b"0123456789abcdef", 2, 3, &DeterministicRandom::new(9)).unwrap();
    let text = ShareText::new([0xaa; 8], 2, shares[1].clone()).encode();
    for p in 0..text.len() {
        for &c in TYPO_CHARS {
            if c == text.as_bytes()[p] {
                continue;
            }
            let mut bytes = text.as_bytes().to_vec();
            bytes[p] = c;
            let corrupted = String::from_utf8(bytes).unwrap();
            assert!(ShareText::parse(&corrupted).is_err(), "{corrupted}");
        }
        let mut deleted = text.to_string();
        deleted.remove(p);
        assert!(ShareText::parse(&deleted).is_err(), "{deleted}");
    }
}

#[test]
fn checksum_mismatch_is_reported_as_such() {
    let st = ShareText::new([1; 8], 2, Share::new(1, vec![0x10, 0x20, 0x30]).unwrap());
    let text = st.encode();
    // Change the threshold digit: still well-formed, so only the checksum can catch it.
    let tampered = text.replacen(":2:1:", ":3:1:", 1);
    assert_ne!(tampered, *text);
    assert_eq!(
        ShareText::parse(&tampered).unwrap_err(),
        CryptoError::ShareChecksum
    );
}

#[test]
fn snapshot_with_deterministic_random_7() {
    let secret = b"medvault root key 32 bytes long!";
    let shares = split(secret, 2, 3, &DeterministicRandom::new(7)).unwrap();
    let set_id = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];
    let texts: Vec<String> = shares
        .iter()
        .map(|s| ShareText::new(set_id, 2, s.clone()).encode().to_string())
        .collect();
    expect![[r#"
        medvault-share:v1:0123456789abcdef:2:1:hbjwS1cZxpOexWmp2kblmnMFTPdOvl6j14k8XdKcieA:c8085484
        medvault-share:v1:0123456789abcdef:2:2:psRXDA2tI6FHB2P4M-xsgG1qzaP8wTfBGpwYDg6RoLg:9967f30f
        medvault-share:v1:0123456789abcdef:2:3:ThnDMTvBiUb5sGU-nYrif2dPsmaSHRAWqGYEP7NjTnk:28c6d018"#]].assert_eq(&texts.join("\n"));
    let parsed: Vec<Share> = texts[1..]
        .iter()
        .map(|t| ShareText::parse(t).unwrap().into_share())
        .collect();
    assert_eq!(&combine(&parsed).unwrap()[..], &secret[..]);
}

#[test]
fn commitment_matches_definition() {
    let st = ShareText::new([7; 8], 2, Share::new(5, vec![1, 2, 3]).unwrap());
    let mut input = b"medvault share commitment v1".to_vec();
    input.extend_from_slice(&[7; 8]);
    input.push(5);
    input.extend_from_slice(&[1, 2, 3]);
    assert_eq!(st.commitment(), medvault_crypto::keys::sha256(&input));
}

#[test]
fn debug_does_not_leak_share_value() {
    let st = ShareText::new([7; 8], 2, Share::new(5, vec![0xfe, 0xed]).unwrap());
    let dbg = format!("{st:?}");
    assert!(dbg.contains("[redacted]"), "{dbg}");
    assert!(!dbg.contains("254"), "{dbg}");
}
