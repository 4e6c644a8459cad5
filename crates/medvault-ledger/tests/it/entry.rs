//! Tests of the audit entry encoding, its strict decoder, and salted commitments.

use expect_test::expect;
use medvault_ledger::entry::MAX_TEXT_LEN;
use medvault_ledger::{
    commitment, entry_leaf, leaf_hash, Entry, EntryError, EntryText, MoreResources, Outcome, Salt,
};
use proptest::prelude::*;

use crate::hex;

fn t(text: &str) -> EntryText {
    EntryText::new(text).unwrap()
}

fn sample() -> Entry {
    Entry {
        time: 1_700_000_000,
        actor: t("dr.alice"),
        role: t("clinician"),
        client: t("ehr-web"),
        action: t("read"),
        resource_type: t("Observation"),
        resource_id: t("obs-42"),
        patient: t("pat-7"),
        outcome: Outcome::Allow,
        reason: t("care-team"),
        purpose: t("TREAT"),
        break_glass: false,
        address: t("10.0.0.5"),
        user_agent: t("curl/8"),
        more: MoreResources::none(),
    }
}

/// The sample covering two more resources (version 2 of the encoding).
fn sample_with_more() -> Entry {
    Entry {
        action: t("create"),
        more: MoreResources::new(vec![t("Observation/obs-43"), t("Encounter/enc-1")]).unwrap(),
        ..sample()
    }
}

fn salt() -> Salt {
    Salt::from_bytes([0x5a; 32])
}

/// Commitment and leaf cross-checked with Python hashlib:
/// sha256(b"medvault-ledger-entry-v1\0" + b"\x5a" * 32 + enc), then sha256(b"\0" + commitment).
#[test]
fn encoding_snapshot() {
    let bytes = sample().encode();
    expect!["01000000006553f1000000000864722e616c69636500000009636c696e696369616e000000076568722d77656200000004726561640000000b4f62736572766174696f6e000000066f62732d3432000000057061742d370000000009636172652d7465616d000000055452454154000000000831302e302e302e35000000066375726c2f38"].assert_eq(&hex(&bytes));
    expect!["64ecf8f8ab1dba50ef3ef12faddd164599f2d9a4665dbd1e395ae2f24f2d18d3"]
        .assert_eq(&commitment(&salt(), &bytes).to_string());
    expect!["3c36ae3b3b2fd381e7f8021710c4c303ff76b2f5aa603cfd35373fd5bd34f381"]
        .assert_eq(&entry_leaf(&salt(), &bytes).to_string());
}

/// Version 2: the version-1 fields, then the count and the references (after user_agent:
/// 00000002, then 00000012 "Observation/obs-43" and 0000000f "Encounter/enc-1"). The leaf
/// is cross-checked with Python hashlib as above.
#[test]
fn encoding_snapshot_with_more_resources() {
    let bytes = sample_with_more().encode();
    expect!["02000000006553f1000000000864722e616c69636500000009636c696e696369616e000000076568722d776562000000066372656174650000000b4f62736572766174696f6e000000066f62732d3432000000057061742d370000000009636172652d7465616d000000055452454154000000000831302e302e302e35000000066375726c2f3800000002000000124f62736572766174696f6e2f6f62732d34330000000f456e636f756e7465722f656e632d31"].assert_eq(&hex(&bytes));
    expect!["d36d0025a50f733aad54c1f807f4d3ed6e42731fafbfb30f04747e8c99e65dae"]
        .assert_eq(&entry_leaf(&salt(), &bytes).to_string());
    assert_eq!(Entry::decode(&bytes), Ok(sample_with_more()));
}

#[test]
fn version_2_must_name_between_1_and_1023_more_resources() {
    let v1 = sample().encode();
    let mut none = v1.clone();
    none[0] = 2;
    none.extend_from_slice(&0u32.to_be_bytes());
    assert_eq!(Entry::decode(&none), Err(EntryError::ResourceCount(0)));
    let mut huge = v1.clone();
    huge[0] = 2;
    huge.extend_from_slice(&1024u32.to_be_bytes());
    assert_eq!(Entry::decode(&huge), Err(EntryError::ResourceCount(1024)));
    let mut max = v1;
    max[0] = 2;
    max.extend_from_slice(&1023u32.to_be_bytes());
    for _ in 0..1023 {
        max.extend_from_slice(&[0, 0, 0, 1, b'x']);
    }
    assert_eq!(Entry::decode(&max).map(|e| e.more.len()), Ok(1023));
    assert_eq!(
        MoreResources::new(vec![t("x"); 1024]),
        Err(EntryError::TooManyResources { count: 1024 })
    );
    assert!(MoreResources::new(vec![t("x"); 1023]).is_ok());
}

#[test]
fn convenience_methods_match_free_functions() {
    let entry = sample();
    let bytes = entry.encode();
    assert_eq!(entry.commitment(&salt()), commitment(&salt(), &bytes));
    assert_eq!(entry.leaf_hash(&salt()), entry_leaf(&salt(), &bytes));
    assert_eq!(
        entry_leaf(&salt(), &bytes),
        leaf_hash(commitment(&salt(), &bytes).as_bytes())
    );
}

#[test]
fn commitment_depends_on_salt_and_every_field() {
    let base = sample();
    let c = base.commitment(&salt());
    assert_ne!(c, base.commitment(&Salt::from_bytes([0x5b; 32])));
    let mut variants = Vec::new();
    let mut e = base.clone();
    e.time += 1;
    variants.push(e);
    let mut e = base.clone();
    e.patient = t("pat-8");
    variants.push(e);
    let mut e = base.clone();
    e.outcome = Outcome::Deny;
    variants.push(e);
    let mut e = base.clone();
    e.break_glass = true;
    variants.push(e);
    // Moving bytes between adjacent fields must change the encoding (length prefixes).
    let mut e = base.clone();
    e.actor = t("dr.alicec");
    e.role = t("linician");
    variants.push(e);
    let mut e = base.clone();
    e.more = MoreResources::new(vec![t("Observation/obs-43")]).unwrap();
    variants.push(e);
    let mut e = sample_with_more();
    e.more = MoreResources::new(vec![t("Encounter/enc-1"), t("Observation/obs-43")]).unwrap();
    variants.push(e);
    for v in variants {
        assert_ne!(v.commitment(&salt()), c, "{v:?}");
    }
}

#[test]
fn decode_rejects_every_truncation() {
    // Both encodings: version 1, and version 2 with its list of further resources.
    for entry in [sample(), sample_with_more()] {
        let bytes = entry.encode();
        for len in 0..bytes.len() {
            assert_eq!(
                Entry::decode(&bytes[..len]),
                Err(EntryError::Truncated),
                "version {}, prefix of {len} bytes",
                bytes[0]
            );
        }
    }
}

#[test]
fn decode_rejects_trailing_bytes() {
    let mut bytes = sample().encode();
    bytes.push(0);
    assert_eq!(Entry::decode(&bytes), Err(EntryError::TrailingBytes));
}

#[test]
fn decode_rejects_unknown_version() {
    let mut bytes = sample().encode();
    bytes[0] = 3;
    assert_eq!(Entry::decode(&bytes), Err(EntryError::UnknownVersion(3)));
    assert_eq!(Entry::decode(&[0]), Err(EntryError::UnknownVersion(0)));
}

/// Byte offset of the first text field's length prefix (after version and time).
const ACTOR_LEN_AT: usize = 1 + 8;

#[test]
fn decode_rejects_oversized_and_non_utf8_fields() {
    let bytes = sample().encode();
    let mut huge = bytes.clone();
    huge[ACTOR_LEN_AT..ACTOR_LEN_AT + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        Entry::decode(&huge),
        Err(EntryError::FieldTooLong {
            field: "actor",
            len: u32::MAX
        })
    );
    let mut just_over = bytes.clone();
    just_over[ACTOR_LEN_AT..ACTOR_LEN_AT + 4].copy_from_slice(&4097u32.to_be_bytes());
    assert!(matches!(
        Entry::decode(&just_over),
        Err(EntryError::FieldTooLong {
            field: "actor",
            len: 4097
        })
    ));
    let mut bad_utf8 = bytes.clone();
    bad_utf8[ACTOR_LEN_AT + 4] = 0xff;
    assert_eq!(
        Entry::decode(&bad_utf8),
        Err(EntryError::NotUtf8 { field: "actor" })
    );
}

#[test]
fn decode_rejects_bad_outcome_and_bool() {
    let entry = sample();
    let bytes = entry.encode();
    let text_len = |e: &EntryText| 4 + e.as_str().len();
    let outcome_at = ACTOR_LEN_AT
        + [
            &entry.actor,
            &entry.role,
            &entry.client,
            &entry.action,
            &entry.resource_type,
            &entry.resource_id,
            &entry.patient,
        ]
        .iter()
        .map(|e| text_len(e))
        .sum::<usize>();
    assert_eq!(bytes[outcome_at], Outcome::Allow.to_byte());
    let mut bad = bytes.clone();
    bad[outcome_at] = 3;
    assert_eq!(Entry::decode(&bad), Err(EntryError::UnknownOutcome(3)));

    let bool_at = outcome_at + 1 + text_len(&entry.reason) + text_len(&entry.purpose);
    assert_eq!(bytes[bool_at], 0);
    let mut bad = bytes.clone();
    bad[bool_at] = 2;
    assert_eq!(Entry::decode(&bad), Err(EntryError::InvalidBool(2)));
}

#[test]
fn text_is_capped() {
    assert!(EntryText::new("x".repeat(MAX_TEXT_LEN)).is_ok());
    assert_eq!(
        EntryText::new("x".repeat(MAX_TEXT_LEN + 1)),
        Err(EntryError::TextTooLong {
            len: MAX_TEXT_LEN + 1
        })
    );
    assert_eq!(EntryText::empty().as_str(), "");
    assert_eq!(EntryText::try_from("a").unwrap().to_string(), "a");
}

#[test]
fn outcome_bytes_round_trip() {
    for o in [Outcome::Allow, Outcome::Deny, Outcome::Error] {
        assert_eq!(Outcome::from_byte(o.to_byte()), Ok(o));
    }
    assert_eq!(Outcome::Deny.as_str(), "deny");
}

#[test]
fn salt_parses_and_never_prints() {
    let s = salt();
    assert_eq!(
        Salt::from_hex(&s.to_hex()).unwrap().as_bytes(),
        s.as_bytes()
    );
    assert_eq!(
        Salt::from_slice(s.as_bytes()).unwrap().as_bytes(),
        s.as_bytes()
    );
    assert!(Salt::from_slice(&[0; 31]).is_err());
    assert_eq!(format!("{s:?}"), "Salt(..)");
}

fn text() -> impl Strategy<Value = EntryText> {
    // Arbitrary Unicode including multi-byte and control characters, within the cap.
    ".{0,40}".prop_map(|s| EntryText::new(s).unwrap())
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Allow),
        Just(Outcome::Deny),
        Just(Outcome::Error)
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        any::<i64>(),
        [text(), text(), text(), text(), text(), text(), text()],
        outcome(),
        [text(), text()],
        any::<bool>(),
        [text(), text()],
        prop::collection::vec(text(), 0..4),
    )
        .prop_map(
            |(
                time,
                [actor, role, client, action, resource_type, resource_id, patient],
                outcome,
                [reason, purpose],
                break_glass,
                [address, user_agent],
                more,
            )| Entry {
                time,
                actor,
                role,
                client,
                action,
                resource_type,
                resource_id,
                patient,
                outcome,
                reason,
                purpose,
                break_glass,
                address,
                user_agent,
                more: MoreResources::new(more).unwrap(),
            },
        )
}

proptest! {
    #[test]
    fn encode_decode_round_trip(e in entry()) {
        let bytes = e.encode();
        prop_assert_eq!(Entry::decode(&bytes), Ok(e));
    }

    #[test]
    fn decode_accepts_only_canonical_bytes(
        e in entry(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        noise in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        // Mutated encodings and random bytes either fail or re-encode identically.
        let mut mutated = e.encode();
        let i = at.index(mutated.len());
        mutated[i] = byte;
        for bytes in [mutated, noise] {
            if let Ok(decoded) = Entry::decode(&bytes) {
                prop_assert_eq!(decoded.encode(), bytes);
            }
        }
    }
}

#[test]
fn debug_output_names_the_event_but_not_whom_or_what_it_concerns() {
    let mut e = sample_with_more();
    e.break_glass = true;
    e.reason = t("care-team rule 4 for pat-7");
    // A break-glass reason is recorded as the purpose.
    e.purpose = t("patient unconscious, suspected overdose");
    let text = format!("{e:?}");
    for hidden in [
        "dr.alice", "obs-42", "pat-7", "10.0.0.5", "curl/8", "ehr-web", "overdose", "rule 4",
        "obs-43", "enc-1",
    ] {
        assert!(!text.contains(hidden), "{hidden} in {text}");
    }
    expect![[r#"Entry { time: 1700000000, role: "clinician", action: "create", resource_type: "Observation", outcome: Allow, purpose_len: 39, break_glass: true, more: 2, .. }"#]]
        .assert_eq(&text);
}
