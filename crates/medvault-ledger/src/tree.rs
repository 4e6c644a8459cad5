//! Append-only Merkle tree state ([`Frontier`]), the reference RFC 9162 MTH, and perfect-subtree sources.
//!
//! Addressing: a node at `level` L and `index` i is the perfect subtree over
//! leaves `[i << L, (i + 1) << L)`; level 0 is the leaf hashes themselves.

use crate::error::{FrontierError, MissingNode};
use crate::hash::{empty_root, node_hash, Hash};

/// Highest level a node can have: trees hold at most `u64::MAX` leaves.
pub const MAX_LEVEL: u32 = 63;

/// Most nodes one append can complete: the leaf plus one per merged level.
const MAX_COMPLETED: usize = 64;

/// A perfect subtree hash together with its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    /// Height of the subtree (0 = a single leaf).
    pub level: u32,
    /// Position within the level.
    pub index: u64,
    /// Hash of the subtree.
    pub hash: Hash,
}

/// The perfect subtrees completed by one [`Frontier::push`], lowest level first.
///
/// A fixed array instead of a `Vec` so the append hot path never allocates.
#[derive(Debug, Clone)]
pub struct Completed {
    leaf_index: u64,
    hashes: [Hash; MAX_COMPLETED],
    len: usize,
    next: usize,
}

impl Iterator for Completed {
    type Item = Node;

    fn next(&mut self) -> Option<Node> {
        if self.next >= self.len {
            return None;
        }
        let hash = *self.hashes.get(self.next)?;
        // next < len <= 64, so the level fits u32 and the shift is < 64.
        let level = u32::try_from(self.next).ok()?;
        self.next += 1;
        Some(Node {
            level,
            index: self.leaf_index >> level,
            hash,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len.saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Completed {}

/// Compact append-only accumulator: the roots of the maximal perfect subtrees
/// of the current tree, enough to append and to compute the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Left to right, so highest level first; `len() == size.count_ones()`.
    roots: Vec<Hash>,
}

impl Default for Frontier {
    fn default() -> Self {
        Self::new()
    }
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Self {
        Self {
            size: 0,
            // 64 roots is the maximum, so pushes never reallocate.
            roots: Vec::with_capacity(MAX_COMPLETED),
        }
    }

    /// Restores a frontier from `size` and its perfect subtree roots, left to
    /// right (as returned by [`Frontier::parts`]).
    pub fn from_parts(size: u64, roots: Vec<Hash>) -> Result<Self, FrontierError> {
        let expected = size.count_ones();
        if usize::try_from(expected).ok() != Some(roots.len()) {
            return Err(FrontierError::PartsMismatch {
                size,
                expected,
                got: roots.len(),
            });
        }
        let mut roots = roots;
        roots.reserve(MAX_COMPLETED.saturating_sub(roots.len()));
        Ok(Self { size, roots })
    }

    /// The tree size and its perfect subtree roots, left to right.
    pub fn parts(&self) -> (u64, &[Hash]) {
        (self.size, &self.roots)
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect subtrees the frontier holds, left to right, with positions.
    pub fn subtrees(&self) -> impl Iterator<Item = Node> + '_ {
        let size = self.size;
        let mut levels = (0..=MAX_LEVEL)
            .rev()
            .filter(move |level| (size >> level) & 1 == 1);
        let mut start = 0u64;
        self.roots.iter().filter_map(move |hash| {
            let level = levels.next()?;
            let node = Node {
                level,
                index: start >> level,
                hash: *hash,
            };
            // Sum of distinct set bits of `size`, so it cannot overflow.
            start = start.wrapping_add(1u64 << level);
            Some(node)
        })
    }

    /// Appends a leaf hash and returns every perfect subtree this completed:
    /// the leaf itself at level 0, then each merged parent.
    pub fn push(&mut self, leaf: Hash) -> Result<Completed, FrontierError> {
        let leaf_index = self.size;
        let new_size = leaf_index.checked_add(1).ok_or(FrontierError::Full)?;
        let mut completed = Completed {
            leaf_index,
            hashes: [Hash::default(); MAX_COMPLETED],
            len: 0,
            next: 0,
        };
        let mut acc = leaf;
        // Each trailing one bit of the old size is a same-height subtree to merge with.
        let merges = leaf_index.trailing_ones() as usize;
        for slot in completed.hashes.iter_mut().take(merges + 1) {
            if completed.len > 0 {
                // roots.len() == popcount(size) >= trailing_ones(size), so pop succeeds.
                let Some(left) = self.roots.pop() else { break };
                acc = node_hash(&left, &acc);
            }
            *slot = acc;
            completed.len += 1;
        }
        self.roots.push(acc);
        self.size = new_size;
        Ok(completed)
    }

    /// The RFC 9162 Merkle tree hash of the current tree.
    pub fn root(&self) -> Hash {
        let mut from_right = self.roots.iter().rev();
        let Some(mut acc) = from_right.next().copied() else {
            return empty_root();
        };
        for left in from_right {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// Largest power of two strictly below `n`, the RFC 9162 split point; 0 for `n < 2`.
pub(crate) fn split_point(n: u64) -> u64 {
    n.saturating_sub(1)
        .checked_ilog2()
        .map_or(0, |bit| 1u64 << bit)
}

/// Reference RFC 9162 §2.1.1 Merkle tree hash over leaf hashes, by the recursive definition.
pub fn mth(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [single] => *single,
        _ => {
            let n = leaves.len();
            let k = n
                .saturating_sub(1)
                .checked_ilog2()
                .map_or(0, |bit| 1usize << bit);
            // 1 <= k < n here, so both halves are non-empty and the split is in bounds.
            let (left, right) = leaves.split_at(k);
            node_hash(&mth(left), &mth(right))
        }
    }
}

/// Where proofs get perfect subtree hashes from (a tile store, a cache, a slice of leaves).
pub trait NodeSource {
    /// Why a node could not be produced.
    type Error;

    /// The hash of the perfect subtree at `level` covering leaves
    /// `[index << level, (index + 1) << level)`.
    fn node(&self, level: u32, index: u64) -> Result<Hash, Self::Error>;
}

/// Computes nodes on the fly from leaf hashes: O(2^level) per call, for tests and small trees.
impl NodeSource for [Hash] {
    type Error = MissingNode;

    fn node(&self, level: u32, index: u64) -> Result<Hash, MissingNode> {
        let missing = MissingNode { level, index };
        if level > MAX_LEVEL {
            return Err(missing);
        }
        let width = 1u64 << level;
        let start = index.checked_mul(width).ok_or(missing)?;
        let end = start.checked_add(width).ok_or(missing)?;
        let range = usize::try_from(start).map_err(|_| missing)?
            ..usize::try_from(end).map_err(|_| missing)?;
        self.get(range).map(mth).ok_or(missing)
    }
}

impl NodeSource for Vec<Hash> {
    type Error = MissingNode;

    fn node(&self, level: u32, index: u64) -> Result<Hash, MissingNode> {
        self.as_slice().node(level, index)
    }
}

/// MTH of the leaf range `[start, end)` (non-empty), built from perfect subtrees of `src`.
///
/// Ranges met by the RFC recursions are aligned, so each level of recursion
/// resolves its left half with one `node` call.
pub(crate) fn range_hash<S: NodeSource + ?Sized>(
    src: &S,
    start: u64,
    end: u64,
) -> Result<Hash, S::Error> {
    let n = end.saturating_sub(start);
    if n == 0 {
        return Ok(empty_root());
    }
    if n.is_power_of_two() && start & (n - 1) == 0 {
        let level = n.trailing_zeros();
        return src.node(level, start >> level);
    }
    let mid = start.saturating_add(split_point(n));
    let left = range_hash(src, start, mid)?;
    let right = range_hash(src, mid, end)?;
    Ok(node_hash(&left, &right))
}
