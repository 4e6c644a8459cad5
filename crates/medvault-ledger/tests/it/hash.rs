//! Tests of RFC 9162 leaf/node hashing and the `Hash` newtype.

use medvault_ledger::{empty_root, leaf_hash, node_hash, Hash, HashError};

use crate::{h, KAT_LEAF_INPUTS, KAT_NODES, KAT_ROOTS};

#[test]
fn leaf_hashes_match_known_answers() {
    for (data, want) in KAT_LEAF_INPUTS.iter().zip(KAT_NODES[0]) {
        assert_eq!(leaf_hash(data), h(want));
    }
}

#[test]
fn node_hashes_match_known_answers() {
    for level in 1..KAT_NODES.len() {
        for (index, want) in KAT_NODES[level].iter().enumerate() {
            let left = h(KAT_NODES[level - 1][2 * index]);
            let right = h(KAT_NODES[level - 1][2 * index + 1]);
            assert_eq!(
                node_hash(&left, &right),
                h(want),
                "level {level} index {index}"
            );
        }
    }
}

#[test]
fn empty_root_is_sha256_of_nothing() {
    assert_eq!(empty_root(), h(KAT_ROOTS[0]));
}

#[test]
fn leaf_and_node_domains_differ() {
    // Without the 0x00/0x01 prefixes a leaf holding l||r would equal the node over l and r.
    let (l, r) = (leaf_hash(b"l"), leaf_hash(b"r"));
    let mut concat = l.as_bytes().to_vec();
    concat.extend_from_slice(r.as_bytes());
    assert_ne!(leaf_hash(&concat), node_hash(&l, &r));
}

#[test]
fn hex_display_debug_and_parse_round_trip() {
    let hash = h(KAT_ROOTS[8]);
    assert_eq!(hash.to_string(), KAT_ROOTS[8]);
    assert_eq!(hash.to_hex(), KAT_ROOTS[8]);
    assert_eq!(format!("{hash:?}"), format!("Hash({})", KAT_ROOTS[8]));
    assert_eq!(Hash::from_hex(&KAT_ROOTS[8].to_uppercase()), Ok(hash));
    assert_eq!(Hash::from_bytes(*hash.as_bytes()), hash);
    assert_eq!(Hash::from_slice(hash.as_ref()), Ok(hash));
}

#[test]
fn malformed_hashes_are_rejected() {
    assert_eq!(Hash::from_slice(&[0; 31]), Err(HashError::Length(31)));
    assert_eq!(Hash::from_slice(&[0; 33]), Err(HashError::Length(33)));
    assert!(Hash::from_hex("00").is_err());
    assert_eq!(Hash::from_hex(&"g".repeat(64)), Err(HashError::Hex));
    assert_eq!(
        Hash::from_hex(&format!("{}é", "0".repeat(62))),
        Err(HashError::Hex)
    );
}
