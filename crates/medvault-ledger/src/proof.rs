//! RFC 9162 inclusion and consistency proofs: generation (§2.1.3.1, §2.1.4.1) and verification (§2.1.3.2, §2.1.4.2).

use crate::error::{ProofError, VerifyError};
use crate::hash::{node_hash, Hash};
use crate::tree::{range_hash, split_point, NodeSource};

/// Proof paths are at most one hash per level.
const MAX_PATH: usize = 64;

/// Inclusion proof `PATH(leaf_index, D[tree_size])`, ordered leaf to root.
pub fn inclusion_proof<S: NodeSource + ?Sized>(
    src: &S,
    leaf_index: u64,
    tree_size: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if leaf_index >= tree_size {
        return Err(ProofError::IndexOutOfRange {
            index: leaf_index,
            size: tree_size,
        });
    }
    // Walk down from the root; siblings come out root-first and are reversed at the end.
    // Invariant: start <= leaf_index < end <= tree_size, so no arithmetic below overflows.
    let mut path = Vec::with_capacity(MAX_PATH);
    let (mut start, mut end) = (0u64, tree_size);
    while end - start > 1 {
        let mid = start + split_point(end - start);
        if leaf_index < mid {
            path.push(range_hash(src, mid, end).map_err(ProofError::Source)?);
            end = mid;
        } else {
            path.push(range_hash(src, start, mid).map_err(ProofError::Source)?);
            start = mid;
        }
    }
    path.reverse();
    Ok(path)
}

/// Consistency proof `PROOF(old_size, D[new_size])`, deepest element first.
///
/// `old_size == new_size` gives an empty proof; `old_size == 0` is an error
/// because RFC 9162 leaves consistency with the empty tree undefined.
pub fn consistency_proof<S: NodeSource + ?Sized>(
    src: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if old_size == 0 || old_size > new_size {
        return Err(ProofError::InvalidSizes {
            old: old_size,
            new: new_size,
        });
    }
    // SUBPROOF(m, D[start:end], have_root), unrolled; `m` is relative to `start`.
    // Invariant: 0 < m <= end - start, so no arithmetic below overflows.
    let mut path = Vec::with_capacity(MAX_PATH);
    let (mut m, mut start, mut end) = (old_size, 0u64, new_size);
    let mut have_root = true;
    loop {
        let n = end - start;
        if m == n {
            if !have_root {
                path.push(range_hash(src, start, end).map_err(ProofError::Source)?);
            }
            break;
        }
        let mid = start + split_point(n);
        if m <= mid - start {
            path.push(range_hash(src, mid, end).map_err(ProofError::Source)?);
            end = mid;
        } else {
            path.push(range_hash(src, start, mid).map_err(ProofError::Source)?);
            m -= mid - start;
            start = mid;
            have_root = false;
        }
    }
    // Collected root-first; the proof lists the deepest element first.
    path.reverse();
    Ok(path)
}

/// Recomputes the root from an inclusion proof (RFC 9162 §2.1.3.2 steps 1–5, minus the final compare).
pub fn root_from_inclusion_proof(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, VerifyError> {
    if index >= size {
        return Err(VerifyError::IndexOutOfRange { index, size });
    }
    // index < size, so size >= 1.
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(VerifyError::ProofTooLong);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(VerifyError::ProofTooShort);
    }
    Ok(r)
}

/// Verifies that `leaf` is at `index` in the tree of `size` leaves with `root`.
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    if root_from_inclusion_proof(leaf, index, size, proof)? == *root {
        Ok(())
    } else {
        Err(VerifyError::RootMismatch)
    }
}

/// Verifies that the tree of `old_size` with `old_root` is a prefix of the tree
/// of `new_size` with `new_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), VerifyError> {
    if old_size == 0 || old_size > new_size {
        return Err(VerifyError::InvalidSizes {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(VerifyError::ProofTooLong);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(VerifyError::RootMismatch)
        };
    }
    let Some((first, rest)) = proof.split_first() else {
        return Err(VerifyError::ProofTooShort);
    };
    // Step 2: a power-of-two old tree is a complete subtree, so its root is the implicit first element.
    let (seed, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        (first, rest)
    };
    // 0 < old_size < new_size here.
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (*seed, *seed);
    for c in rest {
        if snode == 0 {
            return Err(VerifyError::ProofTooLong);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(VerifyError::ProofTooShort);
    }
    if fr != *old_root {
        return Err(VerifyError::OldRootMismatch);
    }
    if sr != *new_root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}
