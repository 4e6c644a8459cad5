//! Posting lists of the blind index: the row ids (`seq`) that carry one search token.
//!
//! Each commit appends its postings as one posting-log row ([`encode_batch`]); a merge
//! writes one posting per token for all the logged commits together into the blind index,
//! not one row per (token, row) pair. A posting is stored as its first `seq` (part of the
//! key) plus the remaining `seq`s as LEB128 deltas. Postings of one token cover disjoint
//! `seq` ranges, because the log only ever holds `seq`s newer than everything already
//! merged; removing a `seq` keeps a posting inside its range.

use crate::{Result, StoreError};

/// Encode the `seq`s after the first of a strictly increasing list.
///
/// Returns `None` for an empty list. The caller stores `seqs[0]` as the key.
pub fn encode(seqs: &[i64]) -> Option<(i64, Vec<u8>)> {
    let (&first, rest) = seqs.split_first()?;
    let mut out = Vec::with_capacity(rest.len() * 2);
    push_deltas(&mut out, first, rest.iter().copied());
    Some((first, out))
}

/// Append the LEB128 deltas of `rest`, each from the one before it (`first` for the first).
fn push_deltas(out: &mut Vec<u8>, first: i64, rest: impl Iterator<Item = i64>) {
    let mut prev = first;
    for s in rest {
        // Strictly increasing input makes every delta at least 1.
        push_leb128(out, s.wrapping_sub(prev) as u64);
        prev = s;
    }
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

/// The posting token under which the store lists the current, non-deleted versions of
/// resource type `rtype` (it replaced the `resource_type_current` index: migration 0009):
/// SHA-256 of a domain separator and the type name, cut to 16 bytes.
///
/// Not keyed: the type is stored in plaintext beside every version anyway. Collision
/// resistant, so a type's posting holds exactly that type's versions and its length is the
/// type's total.
pub fn type_token(rtype: &str) -> crate::Token {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"medvault-store-type-posting\0");
    ctx.update(rtype.as_bytes());
    let mut token = [0u8; 16];
    token.copy_from_slice(&ctx.finish().as_ref()[..16]);
    token
}

/// One commit's postings as kept in the posting log: every token the commit wrote, with the
/// commit's `seq`s that carry it (sorted, at least one each).
pub type LogBatch = std::collections::BTreeMap<crate::Token, Vec<i64>>;

/// Encode a posting-log row: the number of tokens as LEB128, then per token, in token
/// order, the 16-byte token, the first `seq` as LEB128, the length of the rest as LEB128, and
/// the rest as in [`encode`]. Tokens with no `seq`s are left out.
pub fn encode_batch(batch: &LogBatch) -> Vec<u8> {
    let mut out = Vec::new();
    push_leb128(
        &mut out,
        batch.values().filter(|seqs| !seqs.is_empty()).count() as u64,
    );
    for (token, seqs) in batch {
        let Some((first, rest)) = encode(seqs) else {
            continue;
        };
        out.extend_from_slice(token);
        push_leb128(&mut out, first as u64);
        push_leb128(&mut out, rest.len() as u64);
        out.extend_from_slice(&rest);
    }
    out
}

/// Sort a commit's (token, seq) pairs by token bytes, then seq, and drop repeats: the order
/// [`encode_pairs`] needs. Tokens are HMAC (or SHA-256) outputs, spread evenly over their
/// first byte, so the pairs are first moved into 256 buckets by it, in place (one radix
/// pass, swapping each pair into its bucket's next free slot), and each small bucket is then
/// sorted on its own, in cache, instead of sorting the thousands of a large Bundle's commit
/// in one go. Any tokens sort correctly; only the speed assumes the spread.
pub fn sort_pairs(pairs: &mut Vec<(crate::Token, i64)>) {
    let mut ends = [0usize; 256];
    for (token, _) in pairs.iter() {
        ends[usize::from(token[0])] += 1;
    }
    let mut next = [0usize; 256];
    let mut at = 0;
    for b in 0..256 {
        next[b] = at;
        at += ends[b];
        ends[b] = at;
    }
    for b in 0..256 {
        // Every slot before next[b] holds a pair of bucket b; the pair at next[b] goes to
        // its own bucket's next free slot, and whatever was there comes here to be placed.
        while next[b] < ends[b] {
            let to = usize::from(pairs[next[b]].0[0]);
            if to == b {
                next[b] += 1;
            } else {
                pairs.swap(next[b], next[to]);
                next[to] += 1;
            }
        }
    }
    let mut from = 0;
    for end in ends {
        // Compared as integers: the tokens' byte order, without a compare call per pair.
        pairs[from..end].sort_unstable_by_key(|&(token, seq)| (u128::from_be_bytes(token), seq));
        from = end;
    }
    pairs.dedup();
}

/// [`encode_batch`] of the batch that groups `pairs` by token, written straight from the
/// pairs: a commit collects its (token, seq) pairs, and building the map first was most of
/// the cost of its log row. `pairs` must be sorted and free of repeats (as [`sort_pairs`]
/// leaves them).
pub fn encode_pairs(pairs: &[(crate::Token, i64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pairs.len() * 20 + 8);
    let runs = || pairs.chunk_by(|a, b| a.0 == b.0);
    push_leb128(&mut out, runs().count() as u64);
    let mut rest = Vec::new();
    for run in runs() {
        let (token, first) = run[0];
        rest.clear();
        push_deltas(&mut rest, first, run[1..].iter().map(|&(_, s)| s));
        out.extend_from_slice(&token);
        push_leb128(&mut out, first as u64);
        push_leb128(&mut out, rest.len() as u64);
        out.extend_from_slice(&rest);
    }
    out
}

/// Decode a posting-log row written by [`encode_batch`], refusing anything malformed.
pub fn decode_batch(data: &[u8]) -> Result<LogBatch> {
    let mut batch = LogBatch::new();
    for_each_logged(data, |token, seqs| {
        batch.insert(*token, seqs.to_vec());
    })?;
    Ok(batch)
}

/// Decode a posting-log row as [`decode_batch`] does, calling `f` with each token and its
/// `seq`s (strictly increasing), in token order, instead of building a map: a merge takes
/// the pairs of all logged rows into one list (merging maps of one `Vec` per token cost a
/// third of the merge). Anything malformed is refused, and `f` may have seen part of the
/// row by then.
pub fn for_each_logged(data: &[u8], mut f: impl FnMut(&crate::Token, &[i64])) -> Result<()> {
    const BAD: StoreError = StoreError::Corrupt("posting log");
    let (count, mut data) = read_leb128(data).ok_or(BAD)?;
    let mut last: Option<&crate::Token> = None;
    let mut seqs = Vec::new();
    for _ in 0..count {
        let (token, rest) = data.split_first_chunk::<16>().ok_or(BAD)?;
        let (first, rest) = read_leb128(rest).ok_or(BAD)?;
        let (len, rest) = read_leb128(rest).ok_or(BAD)?;
        let len = usize::try_from(len).map_err(|_| BAD)?;
        if rest.len() < len {
            return Err(BAD);
        }
        let first = i64::try_from(first).map_err(|_| BAD)?;
        seqs.clear();
        decode_into(first, &rest[..len], &mut seqs)?;
        // Tokens are written in order and once each.
        if last.is_some_and(|last| last >= token) {
            return Err(BAD);
        }
        last = Some(token);
        f(token, &seqs);
        data = &rest[len..];
    }
    // The count says where the row ends: a shorter row is truncated, a longer one padded.
    if !data.is_empty() {
        return Err(BAD);
    }
    Ok(())
}

fn push_leb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_leb128(data: &[u8]) -> Option<(u64, &[u8])> {
    let mut v: u64 = 0;
    for (i, &byte) in data.iter().enumerate().take(10) {
        // The tenth byte may only hold the 64th bit.
        if i == 9 && byte > 1 {
            return None;
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, &data[i + 1..]));
        }
    }
    None
}
