//! Fuzzes the blind index's stored encodings (`medvault_store::posting`), read back from the
//! database file on every search: posting lists (`decode`) and posting-log rows
//! (`decode_batch`).
//!
//! Input: mode byte (`m % 2`), then
//! - 0: a posting: 8 bytes of first `seq` (big-endian), the rest as its LEB128 deltas;
//! - 1: a posting-log row as stored.
//!
//! Checks beyond "no panic": what decodes is strictly increasing, and encoding it again
//! decodes to the same thing (the encoder and decoder agree on every decodable input).

#![no_main]

use libfuzzer_sys::fuzz_target;
use medvault_fuzz::mode_and_rest;
use medvault_store::posting::{decode, decode_batch, encode, encode_batch};

fn check_increasing(seqs: &[i64]) {
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "a decoded posting is not strictly increasing"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = mode_and_rest(data) else {
        return;
    };
    if mode % 2 == 0 {
        let Some((first, rest)) = rest.split_first_chunk::<8>() else {
            return;
        };
        let Ok(seqs) = decode(i64::from_be_bytes(*first), rest) else {
            return;
        };
        check_increasing(&seqs);
        let (first, again) = encode(&seqs).expect("a decoded posting is never empty");
        assert_eq!(
            decode(first, &again).expect("an encoded posting decodes"),
            seqs,
            "posting round trip"
        );
    } else {
        let Ok(batch) = decode_batch(rest) else {
            return;
        };
        for seqs in batch.values() {
            assert!(!seqs.is_empty(), "a logged token without rows");
            check_increasing(seqs);
        }
        assert_eq!(
            decode_batch(&encode_batch(&batch)).expect("an encoded row decodes"),
            batch,
            "posting-log row round trip"
        );
    }
});
