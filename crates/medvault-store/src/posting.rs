//! Posting lists of the blind index: the row ids (`seq`) that carry one search token.
//!
//! One commit writes one posting per distinct token, not one row per (token, row) pair, so a
//! Bundle of 280 resources touches a few hundred index entries instead of thousands. A
//! posting is stored as its first `seq` (part of the key) plus the remaining `seq`s as
//! LEB128 deltas. Postings of one token cover disjoint `seq` ranges, because every commit
//! takes fresh, increasing `seq`s; removing a `seq` keeps a posting inside its range.

use crate::{Result, StoreError};

/// Encode the `seq`s after the first of a strictly increasing list.
///
/// Returns `None` for an empty list. The caller stores `seqs[0]` as the key.
pub fn encode(seqs: &[i64]) -> Option<(i64, Vec<u8>)> {
    let (&first, rest) = seqs.split_first()?;
    let mut out = Vec::with_capacity(rest.len() * 2);
    let mut prev = first;
    for &s in rest {
        // Strictly increasing input makes every delta at least 1.
        let mut delta = s.wrapping_sub(prev) as u64;
        prev = s;
        loop {
            let byte = (delta & 0x7f) as u8;
            delta >>= 7;
            if delta == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    Some((first, out))
}

/// Decode a posting into `out` (appending), checking that it is strictly increasing.
pub fn decode_into(first: i64, rest: &[u8], out: &mut Vec<i64>) -> Result<()> {
    const BAD: StoreError = StoreError::Corrupt("search posting");
    out.push(first);
    let mut prev = first;
    let mut delta: u64 = 0;
    let mut shift = 0u32;
    for &byte in rest {
        if shift > 63 {
            return Err(BAD);
        }
        delta |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 != 0 {
            shift += 7;
            continue;
        }
        let step = i64::try_from(delta).map_err(|_| BAD)?;
        if step == 0 {
            return Err(BAD);
        }
        prev = prev.checked_add(step).ok_or(BAD)?;
        out.push(prev);
        delta = 0;
        shift = 0;
    }
    if shift != 0 {
        return Err(BAD);
    }
    Ok(())
}

/// Decode a posting into a new list.
pub fn decode(first: i64, rest: &[u8]) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    decode_into(first, rest, &mut out)?;
    Ok(out)
}

/// Intersect two sorted, deduplicated lists.
pub(crate) fn intersect(a: &[i64], b: &[i64]) -> Vec<i64> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    while let (Some(&x), Some(&y)) = (a.get(i), b.get(j)) {
        match x.cmp(&y) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(x);
                i += 1;
                j += 1;
            }
        }
    }
    out
}
