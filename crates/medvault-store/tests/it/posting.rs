//! The posting-list encoding of the blind index: round trips and refusal of corrupt lists.

use medvault_store::posting::{decode, encode};

#[test]
fn round_trip_small_and_large_gaps() {
    let seqs = [1, 2, 130, 131, 1 << 20, (1 << 40) + 7, i64::MAX];
    let (first, rest) = encode(&seqs).unwrap();
    assert_eq!(first, 1);
    // 1-byte deltas for neighbours, longer ones only for big gaps.
    assert_eq!(rest[..4], [1, 0x80, 0x01, 1]);
    assert_eq!(decode(first, &rest).unwrap(), seqs);
    assert_eq!(encode(&[]), None);
    assert_eq!(encode(&[5]).unwrap(), (5, vec![]));
}

#[test]
fn refuses_zero_deltas_truncation_and_overflow() {
    // A zero delta would repeat a row; a dangling continuation bit is a truncated list.
    assert!(decode(1, &[0]).is_err());
    assert!(decode(1, &[0x81]).is_err());
    assert!(decode(i64::MAX, &[1]).is_err());
    assert!(decode(1, &[0xff; 11]).is_err());
    assert_eq!(decode(1, &[2, 3]).unwrap(), [1, 3, 6]);
}

#[test]
fn log_batches_round_trip_and_refuse_corruption() {
    use medvault_store::posting::{decode_batch, encode_batch, for_each_logged, LogBatch};
    // The merge's decoding refuses exactly what the map decoding refuses.
    let refused =
        |data: &[u8]| decode_batch(data).is_err() && for_each_logged(data, |_, _| ()).is_err();
    let mut batch = LogBatch::new();
    batch.insert([1; 16], vec![5]);
    batch.insert([2; 16], vec![5, 6, 300, 1 << 40]);
    batch.insert([9; 16], vec![i64::MAX]);
    let data = encode_batch(&batch);
    assert_eq!(decode_batch(&data).unwrap(), batch);
    let mut walked = Vec::new();
    for_each_logged(&data, |t, seqs| walked.push((*t, seqs.to_vec()))).unwrap();
    let expected: Vec<_> = batch.clone().into_iter().collect();
    assert_eq!(walked, expected, "in token order");
    assert!(decode_batch(&encode_batch(&LogBatch::new()))
        .unwrap()
        .is_empty());
    assert!(refused(&[]));
    // Trailing bytes are refused too.
    assert!(refused(&[data.as_slice(), &[0]].concat()));
    // Truncated anywhere, the row is refused (never read as fewer postings).
    for cut in 1..data.len() {
        assert!(refused(&data[..cut]), "cut at {cut}");
    }
    // Tokens out of order or repeated are refused.
    let one = |t: u8| {
        let mut b = LogBatch::new();
        b.insert([t; 16], vec![1]);
        encode_batch(&b)
    };
    let two = |a: u8, b: u8| [vec![2u8], one(a)[1..].to_vec(), one(b)[1..].to_vec()].concat();
    assert!(refused(&two(2, 1)));
    assert!(refused(&two(1, 1)));
    assert_eq!(decode_batch(&two(1, 2)).unwrap().len(), 2);
    // A first seq beyond i64 and an over-long LEB128 are refused.
    let mut big = vec![1u8];
    big.extend_from_slice(&[7u8; 16]);
    big.extend_from_slice(&[0xff; 9]);
    big.extend_from_slice(&[0x01, 0x00]);
    assert!(refused(&big));
    let mut long = vec![1u8];
    long.extend_from_slice(&[7u8; 16]);
    long.extend_from_slice(&[0x80; 10]);
    long.extend_from_slice(&[0x01, 0x00]);
    assert!(refused(&long));
}

#[test]
fn log_rows_written_from_pairs_are_the_batch_encoding() {
    use medvault_store::posting::{decode_batch, encode_batch, encode_pairs, LogBatch};
    assert_eq!(encode_pairs(&[]), encode_batch(&LogBatch::new()));
    // Pseudo-random commits: a few tokens shared by many rows, big and small seq gaps.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..200 {
        let mut pairs: Vec<([u8; 16], i64)> = Vec::new();
        let mut seq: i64 = (next() % 1_000_000) as i64;
        for _ in 0..(next() % 60) {
            seq += 1 + (next() % if round % 2 == 0 { 3 } else { 100_000 }) as i64;
            for _ in 0..(1 + next() % 12) {
                pairs.push(([(next() % 7) as u8; 16], seq));
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        let mut batch = LogBatch::new();
        for &(token, seq) in &pairs {
            batch.entry(token).or_default().push(seq);
        }
        let row = encode_pairs(&pairs);
        assert_eq!(row, encode_batch(&batch), "round {round}");
        assert_eq!(decode_batch(&row).unwrap(), batch);
    }
}

proptest::proptest! {
    /// `sort_pairs` orders and dedups exactly as a plain sort does, whatever the tokens:
    /// sharing first bytes (one bucket), spread over them, repeated, with repeated pairs.
    #[test]
    fn sorting_pairs_by_bucket_is_a_plain_sort(
        pairs in proptest::collection::vec(
            (proptest::array::uniform16(proptest::prop_oneof![
                proptest::prelude::Just(0u8),
                proptest::prelude::Just(0xffu8),
                proptest::prelude::any::<u8>(),
            ]), 0i64..50),
            0..400,
        )
    ) {
        let mut want = pairs.clone();
        want.sort_unstable();
        want.dedup();
        let mut got = pairs;
        medvault_store::posting::sort_pairs(&mut got);
        proptest::prop_assert_eq!(got, want);
    }
}
