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
