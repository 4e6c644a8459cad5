//! Shamir split/combine: reconstruction, threshold secrecy, tamper sensitivity.

use medvault_crypto::shamir::{combine, split};
use medvault_crypto::{CryptoError, DeterministicRandom, Random, Share};
use proptest::prelude::*;
use proptest::sample::subsequence;

fn pick(shares: &[Share], idx: &[usize]) -> Vec<Share> {
    idx.iter().map(|&i| shares[i].clone()).collect()
}

/// (n, k, secret, rng seed, shuffled k-subset of share indices)
fn scenario(
    max_n: u8,
    min_k: u8,
    secret_len: std::ops::Range<usize>,
) -> impl Strategy<Value = (u8, u8, Vec<u8>, u64, Vec<usize>, Vec<usize>)> {
    (min_k.max(1)..=max_n)
        .prop_flat_map(move |n| (Just(n), min_k.max(1)..=n))
        .prop_flat_map(move |(n, k)| {
            let all: Vec<usize> = (0..usize::from(n)).collect();
            (
                Just(n),
                Just(k),
                proptest::collection::vec(any::<u8>(), secret_len.clone()),
                any::<u64>(),
                subsequence(all.clone(), usize::from(k)).prop_shuffle(),
                subsequence(all, usize::from(k) - 1).prop_shuffle(),
            )
        })
}

proptest! {
    #[test]
    fn any_k_subset_reconstructs((n, k, secret, seed, subset, _) in scenario(10, 1, 1..64)) {
        let shares = split(&secret, k, n, &DeterministicRandom::new(seed)).unwrap();
        prop_assert_eq!(shares.len(), usize::from(n));
        for s in &shares {
            prop_assert_eq!(s.y().len(), secret.len());
        }
        let got = combine(&pick(&shares, &subset)).unwrap();
        prop_assert_eq!(&got[..], &secret[..]);
        // More than k shares also reconstruct (the polynomial is the same).
        let got_all = combine(&shares).unwrap();
        prop_assert_eq!(&got_all[..], &secret[..]);
    }

    #[test]
    fn k_minus_one_shares_do_not_reconstruct(
        (n, k, secret, seed, _, fewer) in scenario(10, 2, 16..64)
    ) {
        let shares = split(&secret, k, n, &DeterministicRandom::new(seed)).unwrap();
        let got = combine(&pick(&shares, &fewer)).unwrap();
        prop_assert_ne!(&got[..], &secret[..]);
    }

    #[test]
    fn flipped_byte_changes_the_result(
        (n, k, secret, seed, subset, _) in scenario(10, 1, 1..64),
        which in any::<prop::sample::Index>(),
        byte in any::<prop::sample::Index>(),
        mask in 1..=255u8,
    ) {
        let shares = split(&secret, k, n, &DeterministicRandom::new(seed)).unwrap();
        let mut chosen = pick(&shares, &subset);
        let w = which.index(chosen.len());
        let mut y = chosen[w].y().to_vec();
        let b = byte.index(y.len());
        y[b] ^= mask;
        chosen[w] = Share::new(chosen[w].x(), y).unwrap();
        let got = combine(&chosen).unwrap();
        prop_assert_ne!(&got[..], &secret[..]);
    }
}

/// Fisher-Yates shuffle driven by the deterministic test RNG.
fn shuffled(n: usize, rng: &dyn Random) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let mut r = [0u8; 8];
        rng.fill(&mut r).unwrap();
        let j = usize::try_from(u64::from_be_bytes(r) % (i as u64 + 1)).unwrap();
        idx.swap(i, j);
    }
    idx
}

#[test]
fn large_share_counts() {
    let rng = DeterministicRandom::new(255);
    let secret: Vec<u8> = (0..32u8).map(|b| b.wrapping_mul(37)).collect();
    for (k, n) in [(1u8, 255u8), (2, 255), (17, 200), (128, 255), (255, 255)] {
        let shares = split(&secret, k, n, &rng).unwrap();
        assert_eq!(shares.len(), usize::from(n));
        assert_eq!(shares.last().unwrap().x(), n);
        let order = shuffled(usize::from(n), &rng);
        let got = combine(&pick(&shares, &order[..usize::from(k)])).unwrap();
        assert_eq!(&got[..], &secret[..], "k={k} n={n}");
        if k >= 2 {
            let fewer = combine(&pick(&shares, &order[..usize::from(k) - 1])).unwrap();
            assert_ne!(&fewer[..], &secret[..], "k={k} n={n}");
        }
    }
}

#[test]
fn split_parameter_errors() {
    let rng = DeterministicRandom::new(1);
    let err = |r: Result<Vec<Share>, CryptoError>| r.unwrap_err();
    assert!(matches!(
        err(split(b"", 1, 1, &rng)),
        CryptoError::InvalidShareSet(_)
    ));
    assert!(matches!(
        err(split(b"s", 0, 3, &rng)),
        CryptoError::InvalidShareSet(_)
    ));
    assert!(matches!(
        err(split(b"s", 4, 3, &rng)),
        CryptoError::InvalidShareSet(_)
    ));
    assert!(matches!(
        err(split(b"s", 1, 0, &rng)),
        CryptoError::InvalidShareSet(_)
    ));
}

#[test]
fn combine_errors() {
    assert_eq!(
        combine(&[]).unwrap_err(),
        CryptoError::InvalidShareSet("no shares given")
    );
    let a = Share::new(1, vec![1, 2]).unwrap();
    let b = Share::new(2, vec![3]).unwrap();
    assert_eq!(
        combine(&[a.clone(), b]).unwrap_err(),
        CryptoError::InvalidShareSet("share lengths differ")
    );
    assert_eq!(
        combine(&[a.clone(), a]).unwrap_err(),
        CryptoError::InvalidShareSet("duplicate share x coordinate")
    );
}

#[test]
fn share_new_validates() {
    assert!(matches!(
        Share::new(0, vec![1]).unwrap_err(),
        CryptoError::InvalidShareSet(_)
    ));
    assert!(matches!(
        Share::new(1, vec![]).unwrap_err(),
        CryptoError::InvalidShareSet(_)
    ));
    let s = Share::new(9, vec![4, 5]).unwrap();
    assert_eq!((s.x(), s.y()), (9, &[4u8, 5][..]));
}

#[test]
fn split_uses_the_rng() {
    let a = split(b"same secret", 2, 3, &DeterministicRandom::new(1)).unwrap();
    let b = split(b"same secret", 2, 3, &DeterministicRandom::new(1)).unwrap();
    let c = split(b"same secret", 2, 3, &DeterministicRandom::new(2)).unwrap();
    assert_eq!(a[0].y(), b[0].y());
    assert_ne!(a[0].y(), c[0].y());
}
