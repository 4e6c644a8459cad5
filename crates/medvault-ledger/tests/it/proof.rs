//! Tests of RFC 9162 inclusion and consistency proofs: known answers, tampering, properties.

use std::collections::HashMap;

use medvault_ledger::{
    consistency_proof, empty_root, inclusion_proof, leaf_hash, mth, root_from_inclusion_proof,
    verify_consistency, verify_inclusion, Frontier, Hash, NodeSource, ProofError, VerifyError,
};
use proptest::prelude::*;

use crate::{distinct_leaves, h, kat_leaves, KAT_ROOTS};

// Vectors from transparency-dev/merkle proof/verify_test.go (`inclusionProofs`,
// `consistencyProofs`; leaf numbers there are 1-based, converted to 0-based
// indices here) and testonly/reference_test.go (`TestRefInclusionProof`,
// `TestRefConsistencyProof`), over the 8-leaf KAT tree.
const INCLUSION_VECTORS: &[(u64, u64, &[&str])] = &[
    (0, 1, &[]),
    (
        0,
        2,
        &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"],
    ),
    (
        1,
        2,
        &["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

const CONSISTENCY_VECTORS: &[(u64, u64, &[&str])] = &[
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn hashes(list: &[&str]) -> Vec<Hash> {
    list.iter().map(|s| h(s)).collect()
}

fn kat_root(size: u64) -> Hash {
    h(KAT_ROOTS[size as usize])
}

/// A fixed hash unrelated to any tree (transparency-dev's `sha256SomeHash`).
fn some_hash() -> Hash {
    h("abacaba000000000000000000000000000000000000000000060061e00123456")
}

/// Perfect subtrees persisted from `Frontier::push`, as a tile store would hold them.
struct Tiles(HashMap<(u32, u64), Hash>);

impl NodeSource for Tiles {
    type Error = (u32, u64);

    fn node(&self, level: u32, index: u64) -> Result<Hash, (u32, u64)> {
        self.0.get(&(level, index)).copied().ok_or((level, index))
    }
}

fn tiles_for(leaves: &[Hash]) -> Tiles {
    let mut frontier = Frontier::new();
    let mut map = HashMap::new();
    for leaf in leaves {
        for node in frontier.push(*leaf).unwrap() {
            map.insert((node.level, node.index), node.hash);
        }
    }
    Tiles(map)
}

#[test]
fn inclusion_proofs_match_known_answers_and_verify() {
    let leaves = kat_leaves();
    let tiles = tiles_for(&leaves);
    for &(index, size, want) in INCLUSION_VECTORS {
        let want = hashes(want);
        let from_slice = inclusion_proof(&leaves[..size as usize], index, size).unwrap();
        assert_eq!(from_slice, want, "index {index} size {size}");
        assert_eq!(inclusion_proof(&tiles, index, size).unwrap(), want);
        let leaf = leaves[index as usize];
        assert_eq!(
            verify_inclusion(&leaf, index, size, &want, &kat_root(size)),
            Ok(())
        );
        assert_eq!(
            root_from_inclusion_proof(&leaf, index, size, &want),
            Ok(kat_root(size))
        );
    }
}

#[test]
fn consistency_proofs_match_known_answers_and_verify() {
    let leaves = kat_leaves();
    let tiles = tiles_for(&leaves);
    for &(old, new, want) in CONSISTENCY_VECTORS {
        let want = hashes(want);
        let from_slice = consistency_proof(&leaves[..new as usize], old, new).unwrap();
        assert_eq!(from_slice, want, "{old} -> {new}");
        assert_eq!(consistency_proof(&tiles, old, new).unwrap(), want);
        assert_eq!(
            verify_consistency(old, new, &kat_root(old), &kat_root(new), &want),
            Ok(())
        );
    }
}

/// transparency-dev's `corruptInclusionProof` probes: each must fail.
#[test]
fn corrupted_known_inclusion_proofs_fail() {
    let leaves = kat_leaves();
    for &(index, size, proof) in INCLUSION_VECTORS {
        let proof = hashes(proof);
        let (leaf, root) = (leaves[index as usize], kat_root(size));
        let mut probes: Vec<(u64, u64, Hash, Hash, Vec<Hash>)> = vec![
            (index.wrapping_sub(1), size, leaf, root, proof.clone()),
            (index + 1, size, leaf, root, proof.clone()),
            (index ^ 2, size, leaf, root, proof.clone()),
            (index, size * 2, leaf, root, proof.clone()),
            (index, size / 2, leaf, root, proof.clone()),
            (index, size, leaf_hash(b"WrongLeaf"), root, proof.clone()),
            (index, size, leaf, empty_root(), proof.clone()),
            (index, size, leaf, some_hash(), proof.clone()),
            (
                index,
                size,
                leaf,
                root,
                [proof.clone(), vec![root]].concat(),
            ),
            (
                index,
                size,
                leaf,
                root,
                [vec![root], proof.clone()].concat(),
            ),
        ];
        for i in 0..proof.len() {
            let mut wrong = proof.clone();
            let mut bytes = *wrong[i].as_bytes();
            bytes[0] ^= 8;
            wrong[i] = Hash::from_bytes(bytes);
            probes.push((index, size, leaf, root, wrong));
        }
        if !proof.is_empty() {
            probes.push((index, size, leaf, root, proof[..proof.len() - 1].to_vec()));
        }
        if proof.len() > 1 {
            let inserted = [vec![proof[0], some_hash()], proof[1..].to_vec()].concat();
            probes.push((index, size, leaf, root, inserted));
        }
        for (i, (index, size, leaf, root, proof)) in probes.iter().enumerate() {
            assert!(
                verify_inclusion(leaf, *index, *size, proof, root).is_err(),
                "probe {i} for vector index {index} size {size} verified"
            );
        }
    }
}

/// transparency-dev's `corruptConsistencyProof` probes: each must fail.
#[test]
fn corrupted_known_consistency_proofs_fail() {
    for &(old, new, proof) in CONSISTENCY_VECTORS.iter().filter(|v| !v.2.is_empty()) {
        let proof = hashes(proof);
        let (r1, r2) = (kat_root(old), kat_root(new));
        let wrong_root = leaf_hash(b"WrongRoot");
        let mut probes: Vec<(u64, u64, Hash, Hash, Vec<Hash>)> = vec![
            (old - 1, new, r1, r2, proof.clone()),
            (old + 1, new, r1, r2, proof.clone()),
            (old ^ 2, new, r1, r2, proof.clone()),
            (old, new * 2, r1, r2, proof.clone()),
            (old, new / 2, r1, r2, proof.clone()),
            (old, new, wrong_root, r2, proof.clone()),
            (old, new, r1, wrong_root, proof.clone()),
            (old, new, r2, r1, proof.clone()),
            (old, new, r1, r2, Vec::new()),
            (old, new, r1, r2, [proof.clone(), vec![r1]].concat()),
            (old, new, r1, r2, [proof.clone(), vec![r2]].concat()),
            (old, new, r1, r2, [vec![r1], proof.clone()].concat()),
            (old, new, r1, r2, [vec![r2], proof.clone()].concat()),
            (old, new, r1, r2, [vec![proof[0]], proof.clone()].concat()),
            (old, new, r1, r2, proof[..proof.len() - 1].to_vec()),
        ];
        for i in 0..proof.len() {
            let mut wrong = proof.clone();
            let mut bytes = *wrong[i].as_bytes();
            bytes[0] ^= 16;
            wrong[i] = Hash::from_bytes(bytes);
            probes.push((old, new, r1, r2, wrong));
        }
        for (i, (o, n, a, b, p)) in probes.iter().enumerate() {
            assert!(
                verify_consistency(*o, *n, a, b, p).is_err(),
                "probe {i} for {old} -> {new} verified"
            );
        }
    }
}

#[test]
fn generation_rejects_out_of_range_requests() {
    let leaves = distinct_leaves(5);
    let src = leaves.as_slice();
    assert_eq!(
        inclusion_proof(src, 5, 5),
        Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
    );
    assert!(inclusion_proof(src, 0, 0).is_err());
    assert_eq!(
        consistency_proof(src, 0, 3),
        Err(ProofError::InvalidSizes { old: 0, new: 3 })
    );
    assert!(consistency_proof(src, 4, 3).is_err());
    assert_eq!(consistency_proof(src, 5, 5), Ok(Vec::new()));
    // Asking beyond what the source holds surfaces the source's error.
    assert!(matches!(
        inclusion_proof(src, 0, 6),
        Err(ProofError::Source(_))
    ));
    assert!(matches!(
        consistency_proof(src, 2, 9),
        Err(ProofError::Source(_))
    ));
}

#[test]
fn verification_edge_cases() {
    let leaf = leaf_hash(b"data");
    // A one-leaf tree's root is the leaf hash and the proof is empty.
    assert_eq!(verify_inclusion(&leaf, 0, 1, &[], &leaf), Ok(()));
    assert_eq!(
        verify_inclusion(&leaf, 0, 1, &[], &some_hash()),
        Err(VerifyError::RootMismatch)
    );
    assert_eq!(
        verify_inclusion(&leaf, 1, 1, &[], &leaf),
        Err(VerifyError::IndexOutOfRange { index: 1, size: 1 })
    );
    assert!(verify_inclusion(&leaf, 0, 0, &[], &empty_root()).is_err());
    assert_eq!(
        verify_inclusion(&leaf, 0, 1, &[leaf], &leaf),
        Err(VerifyError::ProofTooLong)
    );
    assert_eq!(
        verify_inclusion(&leaf, 0, 2, &[], &leaf),
        Err(VerifyError::ProofTooShort)
    );

    let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
    assert_eq!(verify_consistency(3, 3, &a, &a, &[]), Ok(()));
    assert_eq!(
        verify_consistency(3, 3, &a, &b, &[]),
        Err(VerifyError::RootMismatch)
    );
    assert_eq!(
        verify_consistency(3, 3, &a, &a, &[a]),
        Err(VerifyError::ProofTooLong)
    );
    assert_eq!(
        verify_consistency(0, 3, &empty_root(), &a, &[]),
        Err(VerifyError::InvalidSizes { old: 0, new: 3 })
    );
    assert!(verify_consistency(0, 0, &empty_root(), &empty_root(), &[]).is_err());
    assert!(verify_consistency(2, 1, &a, &b, &[a]).is_err());
    assert_eq!(
        verify_consistency(1, 2, &a, &b, &[]),
        Err(VerifyError::ProofTooShort)
    );
}

fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut bytes = *hash.as_bytes();
    bytes[bit / 8] ^= 1 << (bit % 8);
    Hash::from_bytes(bytes)
}

fn size_and_index() -> impl Strategy<Value = (u64, u64)> {
    (1u64..=300).prop_flat_map(|n| (Just(n), 0..n))
}

fn sizes() -> impl Strategy<Value = (u64, u64)> {
    (1u64..=300).prop_flat_map(|n| (1..=n, Just(n)))
}

proptest! {
    #[test]
    fn inclusion_proofs_verify((size, index) in size_and_index()) {
        let leaves = distinct_leaves(size);
        let root = mth(&leaves);
        let proof = inclusion_proof(leaves.as_slice(), index, size).unwrap();
        let leaf = leaves[index as usize];
        prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
        // The tile store built from Frontier emissions yields the same proof.
        prop_assert_eq!(inclusion_proof(&tiles_for(&leaves), index, size).unwrap(), proof);
    }

    #[test]
    fn tampered_inclusion_fails(
        (size, index) in size_and_index(),
        element in any::<prop::sample::Index>(),
        bit in 0usize..256,
        other in any::<prop::sample::Index>(),
    ) {
        let leaves = distinct_leaves(size);
        let root = mth(&leaves);
        let proof = inclusion_proof(leaves.as_slice(), index, size).unwrap();
        let leaf = leaves[index as usize];
        if !proof.is_empty() {
            let mut wrong = proof.clone();
            let i = element.index(proof.len());
            wrong[i] = flip(&wrong[i], bit);
            prop_assert!(verify_inclusion(&leaf, index, size, &wrong, &root).is_err());
            let mut short = proof.clone();
            short.pop();
            prop_assert!(verify_inclusion(&leaf, index, size, &short, &root).is_err());
        }
        let mut long = proof.clone();
        long.push(root);
        prop_assert!(verify_inclusion(&leaf, index, size, &long, &root).is_err());
        prop_assert!(verify_inclusion(&flip(&leaf, bit), index, size, &proof, &root).is_err());
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &flip(&root, bit)).is_err());
        let other_index = other.index(size as usize) as u64;
        if other_index != index {
            prop_assert!(verify_inclusion(&leaf, other_index, size, &proof, &root).is_err());
        }
    }

    /// Claiming another size, even with that size's true root, only verifies
    /// if the proof happens to be that size's genuine proof. (Against the
    /// *original* root a different size can verify when both sizes give the
    /// same path shape, e.g. index 0 in sizes 3 and 4 with root(3); that is
    /// harmless because checkpoints bind size and root together.)
    #[test]
    fn inclusion_binds_tree_size((size, index) in size_and_index(), delta in 1u64..40) {
        let leaves = distinct_leaves(2 * size + 40);
        let proof = inclusion_proof(leaves.as_slice(), index, size).unwrap();
        let leaf = leaves[index as usize];
        let mut others = vec![size + delta, size * 2];
        if size > delta && index < size - delta {
            others.push(size - delta);
        }
        for other in others {
            let other_root = mth(&leaves[..other as usize]);
            let genuine = inclusion_proof(leaves.as_slice(), index, other).unwrap();
            let verified = verify_inclusion(&leaf, index, other, &proof, &other_root).is_ok();
            prop_assert_eq!(verified, genuine == proof);
        }
    }

    #[test]
    fn consistency_proofs_verify((old, new) in sizes()) {
        let leaves = distinct_leaves(new);
        let (old_root, new_root) = (mth(&leaves[..old as usize]), mth(&leaves));
        let proof = consistency_proof(leaves.as_slice(), old, new).unwrap();
        prop_assert_eq!(verify_consistency(old, new, &old_root, &new_root, &proof), Ok(()));
        prop_assert_eq!(consistency_proof(&tiles_for(&leaves), old, new).unwrap(), proof);
    }

    #[test]
    fn tampered_consistency_fails(
        (old, new) in sizes(),
        element in any::<prop::sample::Index>(),
        bit in 0usize..256,
    ) {
        let leaves = distinct_leaves(new);
        let (r1, r2) = (mth(&leaves[..old as usize]), mth(&leaves));
        let proof = consistency_proof(leaves.as_slice(), old, new).unwrap();
        prop_assert!(verify_consistency(old, new, &flip(&r1, bit), &r2, &proof).is_err());
        prop_assert!(verify_consistency(old, new, &r1, &flip(&r2, bit), &proof).is_err());
        if !proof.is_empty() {
            let mut wrong = proof.clone();
            let i = element.index(proof.len());
            wrong[i] = flip(&wrong[i], bit);
            prop_assert!(verify_consistency(old, new, &r1, &r2, &wrong).is_err());
            let mut short = proof.clone();
            short.pop();
            prop_assert!(verify_consistency(old, new, &r1, &r2, &short).is_err());
            let mut long = proof.clone();
            long.push(r2);
            prop_assert!(verify_consistency(old, new, &r1, &r2, &long).is_err());
            prop_assert!(verify_consistency(old, new, &r2, &r1, &proof).is_err());
        }
    }

    /// As for inclusion: other sizes with their true roots verify only with their genuine proof.
    #[test]
    fn consistency_binds_tree_sizes((old, new) in sizes(), delta in 1u64..40) {
        let leaves = distinct_leaves(2 * new + 40);
        let proof = consistency_proof(leaves.as_slice(), old, new).unwrap();
        let mut claims = vec![(old, new + delta), (old, new * 2)];
        if old + delta <= new {
            claims.push((old + delta, new));
        }
        if old > delta {
            claims.push((old - delta, new));
        }
        for (o, n) in claims {
            let (r1, r2) = (mth(&leaves[..o as usize]), mth(&leaves[..n as usize]));
            let genuine = consistency_proof(leaves.as_slice(), o, n).unwrap();
            let verified = verify_consistency(o, n, &r1, &r2, &proof).is_ok();
            prop_assert_eq!(verified, genuine == proof);
        }
    }
}
