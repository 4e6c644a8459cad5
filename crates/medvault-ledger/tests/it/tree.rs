//! Tests of the `Frontier` accumulator, the reference `mth`, and the slice `NodeSource`.

use std::collections::HashSet;
use std::time::Instant;

use medvault_ledger::{leaf_hash, mth, Frontier, FrontierError, MissingNode, Node, NodeSource};
use proptest::prelude::*;

use crate::{distinct_leaves, h, kat_leaves, KAT_NODES, KAT_ROOTS};

#[test]
fn mth_matches_known_roots_for_every_size() {
    let leaves = kat_leaves();
    for (size, want) in KAT_ROOTS.iter().enumerate() {
        assert_eq!(mth(&leaves[..size]), h(want), "size {size}");
    }
}

#[test]
fn frontier_matches_known_roots_and_compact_trees() {
    // Compact forms from transparency-dev/merkle testonly/constants.go `CompactTrees`,
    // as (level, index) into KAT_NODES.
    let compact: [&[(usize, usize)]; 9] = [
        &[],
        &[(0, 0)],
        &[(1, 0)],
        &[(1, 0), (0, 2)],
        &[(2, 0)],
        &[(2, 0), (0, 4)],
        &[(2, 0), (1, 2)],
        &[(2, 0), (1, 2), (0, 6)],
        &[(3, 0)],
    ];
    let mut frontier = Frontier::new();
    assert_eq!(frontier.root(), h(KAT_ROOTS[0]));
    for (i, leaf) in kat_leaves().into_iter().enumerate() {
        frontier.push(leaf).unwrap();
        let size = i + 1;
        assert_eq!(frontier.size(), size as u64);
        assert_eq!(frontier.root(), h(KAT_ROOTS[size]), "size {size}");
        let want: Vec<_> = compact[size]
            .iter()
            .map(|&(level, index)| h(KAT_NODES[level][index]))
            .collect();
        assert_eq!(frontier.parts(), (size as u64, want.as_slice()));
        let positions: Vec<_> = frontier.subtrees().map(|n| (n.level, n.index)).collect();
        let want_positions: Vec<_> = compact[size]
            .iter()
            .map(|&(level, index)| (level as u32, index as u64))
            .collect();
        assert_eq!(positions, want_positions);
    }
}

#[test]
fn push_emits_the_known_perfect_subtrees() {
    let mut frontier = Frontier::new();
    let mut emitted = Vec::new();
    for leaf in kat_leaves() {
        emitted.extend(frontier.push(leaf).unwrap());
    }
    let want: Vec<Node> = [
        (0, 0),
        (0, 1),
        (1, 0),
        (0, 2),
        (0, 3),
        (1, 1),
        (2, 0),
        (0, 4),
        (0, 5),
        (1, 2),
        (0, 6),
        (0, 7),
        (1, 3),
        (2, 1),
        (3, 0),
    ]
    .iter()
    .map(|&(level, index)| Node {
        level,
        index,
        hash: h(KAT_NODES[level as usize][index as usize]),
    })
    .collect();
    assert_eq!(emitted, want);
}

#[test]
fn completed_reports_exact_length() {
    let mut frontier = Frontier::from_parts(7, distinct_leaves(3)).unwrap();
    let completed = frontier.push(leaf_hash(b"x")).unwrap();
    assert_eq!(completed.len(), 4);
    assert_eq!(completed.last().map(|n| (n.level, n.index)), Some((3, 0)));
}

#[test]
fn restored_frontier_continues_identically() {
    let leaves = distinct_leaves(100);
    let mut original = Frontier::new();
    for leaf in &leaves[..37] {
        original.push(*leaf).unwrap();
    }
    let (size, roots) = original.parts();
    let mut restored = Frontier::from_parts(size, roots.to_vec()).unwrap();
    assert_eq!(restored, original);
    for leaf in &leaves[37..] {
        let a: Vec<_> = original.push(*leaf).unwrap().collect();
        let b: Vec<_> = restored.push(*leaf).unwrap().collect();
        assert_eq!(a, b);
    }
    assert_eq!(restored.root(), mth(&leaves));
}

#[test]
fn from_parts_requires_popcount_roots() {
    assert_eq!(
        Frontier::from_parts(7, distinct_leaves(2)),
        Err(FrontierError::PartsMismatch {
            size: 7,
            expected: 3,
            got: 2
        })
    );
    assert!(Frontier::from_parts(0, distinct_leaves(1)).is_err());
    assert!(Frontier::from_parts(0, Vec::new()).is_ok());
}

#[test]
fn full_tree_rejects_push() {
    let roots = distinct_leaves(64);
    let mut frontier = Frontier::from_parts(u64::MAX, roots).unwrap();
    assert_eq!(
        frontier.push(leaf_hash(b"x")).map(|_| ()),
        Err(FrontierError::Full)
    );
    // The largest possible merge: 63 trailing ones, 64 completed nodes.
    let mut almost = Frontier::from_parts(u64::MAX >> 1, distinct_leaves(63)).unwrap();
    let completed: Vec<_> = almost.push(leaf_hash(b"x")).unwrap().collect();
    assert_eq!(completed.len(), 64);
    assert_eq!(completed.last().map(|n| (n.level, n.index)), Some((63, 0)));
    assert_eq!(almost.parts().1.len(), 1);
}

#[test]
fn slice_source_rejects_nodes_outside_the_leaves() {
    let leaves = distinct_leaves(6);
    assert!(leaves.as_slice().node(1, 2).is_ok());
    assert_eq!(
        leaves.as_slice().node(1, 3),
        Err(MissingNode { level: 1, index: 3 })
    );
    assert!(leaves.as_slice().node(3, 0).is_err());
    assert!(leaves.as_slice().node(64, 0).is_err());
    assert!(leaves.as_slice().node(63, u64::MAX).is_err());
}

#[test]
fn million_leaf_root_is_fast() {
    // Server budget: >= 50k appends/s and re-verifying 1M entries in < 10 s.
    // Measured with the unoptimised test build, so release is comfortably faster.
    let start = Instant::now();
    let mut frontier = Frontier::new();
    let mut data = [0u8; 8];
    for i in 0..1_000_000u64 {
        data.copy_from_slice(&i.to_be_bytes());
        frontier.push(leaf_hash(&data)).unwrap();
    }
    let elapsed = start.elapsed();
    assert_eq!(frontier.size(), 1_000_000);
    assert_eq!(frontier.parts().1.len(), 1_000_000u64.count_ones() as usize);
    assert!(elapsed.as_secs_f64() < 10.0, "1M appends took {elapsed:?}");
    // Cross-checked with an independent recursive MTH in Python (hashlib):
    // leaves sha256(0x00 || u64be(i)), nodes sha256(0x01 || l || r).
    assert_eq!(
        frontier.root(),
        h("8ed0805dba1b06ac61a0a2fd76302bbdff69af7305fe8dd16e1dd05ce3ea3295")
    );
}

proptest! {
    #[test]
    fn frontier_root_equals_mth_for_every_prefix(n in 0u64..300) {
        let leaves = distinct_leaves(n);
        let mut frontier = Frontier::new();
        prop_assert_eq!(frontier.root(), mth(&[]));
        for (i, leaf) in leaves.iter().enumerate() {
            frontier.push(*leaf).unwrap();
            prop_assert_eq!(frontier.root(), mth(&leaves[..=i]));
        }
    }

    #[test]
    fn emitted_nodes_are_exactly_the_perfect_subtrees(n in 0u64..300) {
        let leaves = distinct_leaves(n);
        let mut frontier = Frontier::new();
        let mut seen = HashSet::new();
        for leaf in &leaves {
            for node in frontier.push(*leaf).unwrap() {
                prop_assert_eq!(Ok(node.hash), leaves.as_slice().node(node.level, node.index));
                prop_assert!(seen.insert((node.level, node.index)));
            }
        }
        // Every perfect subtree inside [0, n) is emitted, each once.
        let want: u64 = (0..64).map(|level| n >> level).sum();
        prop_assert_eq!(seen.len() as u64, want);
    }
}
