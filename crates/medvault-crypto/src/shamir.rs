//! Shamir secret sharing over GF(2^8) (AES polynomial 0x11b), applied byte by byte.
//!
//! Each secret byte is the constant term of its own random polynomial of degree
//! `threshold - 1`; share `x` holds the evaluations at `x` for every byte.
//! Field arithmetic is branch-free and table-free so timing does not depend on
//! secret values.

use zeroize::Zeroizing;

use crate::{CryptoError, Random};

/// Multiply in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1, in constant time.
pub(crate) fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut product = 0u8;
    for _ in 0..8 {
        // Masks of all ones or all zeros replace data-dependent branches.
        product ^= a & 0u8.wrapping_sub(b & 1);
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (0x1b & carry);
        b >>= 1;
    }
    product
}

/// Multiplicative inverse as a^254 (a^255 = 1 for a != 0); maps 0 to 0.
pub(crate) fn gf_inv(a: u8) -> u8 {
    // Fixed square-and-multiply chain: 254 = 0b1111_1110.
    let a2 = gf_mul(a, a);
    let a3 = gf_mul(a2, a);
    let a6 = gf_mul(a3, a3);
    let a7 = gf_mul(a6, a);
    let a14 = gf_mul(a7, a7);
    let a15 = gf_mul(a14, a);
    let a30 = gf_mul(a15, a15);
    let a31 = gf_mul(a30, a);
    let a62 = gf_mul(a31, a31);
    let a63 = gf_mul(a62, a);
    let a126 = gf_mul(a63, a63);
    let a127 = gf_mul(a126, a);
    gf_mul(a127, a127)
}

/// One share: an x coordinate and the polynomial values at x, one per secret byte.
#[derive(Clone)]
pub struct Share {
    x: u8,
    y: Zeroizing<Vec<u8>>,
}

impl Share {
    /// Build a share; `x` must be nonzero (x = 0 is the secret itself) and `y` non-empty.
    pub fn new(x: u8, y: Vec<u8>) -> Result<Share, CryptoError> {
        // Wrap first so the bytes are zeroized even on the error paths.
        let y = Zeroizing::new(y);
        if x == 0 {
            return Err(CryptoError::InvalidShareSet(
                "share x coordinate must be nonzero",
            ));
        }
        if y.is_empty() {
            return Err(CryptoError::InvalidShareSet("share value is empty"));
        }
        Ok(Share { x, y })
    }

    /// The x coordinate (1..=255).
    pub fn x(&self) -> u8 {
        self.x
    }

    /// The share value, one byte per secret byte.
    pub fn y(&self) -> &[u8] {
        &self.y
    }
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share")
            .field("x", &self.x)
            .field("y", &"[redacted]")
            .finish()
    }
}

/// Split `secret` into `count` shares, any `threshold` of which reconstruct it.
///
/// Shares get x coordinates `1..=count`. Requires `1 <= threshold <= count`
/// and a non-empty secret.
pub fn split(
    secret: &[u8],
    threshold: u8,
    count: u8,
    rng: &dyn Random,
) -> Result<Vec<Share>, CryptoError> {
    if secret.is_empty() {
        return Err(CryptoError::InvalidShareSet("secret is empty"));
    }
    if threshold == 0 {
        return Err(CryptoError::InvalidShareSet("threshold must be at least 1"));
    }
    if threshold > count {
        return Err(CryptoError::InvalidShareSet(
            "threshold must not exceed share count",
        ));
    }
    let degree = usize::from(threshold - 1);
    // Coefficients for byte i are coeffs[i*degree .. (i+1)*degree] (x^1 upward).
    let mut coeffs = Zeroizing::new(vec![0u8; secret.len() * degree]);
    rng.fill(&mut coeffs)?;

    let shares = (1..=count)
        .map(|x| {
            let y: Vec<u8> = secret
                .iter()
                .enumerate()
                .map(|(i, &s)| {
                    // Horner evaluation from the highest coefficient down to the secret.
                    let c = &coeffs[i * degree..(i + 1) * degree];
                    let acc = c.iter().rev().fold(0u8, |acc, &ci| gf_mul(acc, x) ^ ci);
                    gf_mul(acc, x) ^ s
                })
                .collect();
            Share {
                x,
                y: Zeroizing::new(y),
            }
        })
        .collect();
    Ok(shares)
}

/// Reconstruct the secret by Lagrange interpolation at 0 using all given shares.
///
/// With fewer shares than the threshold the result is an unrelated value; the
/// caller detects that with a key check value, not here.
pub fn combine(shares: &[Share]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let first = shares
        .first()
        .ok_or(CryptoError::InvalidShareSet("no shares given"))?;
    let len = first.y.len();
    let mut seen = [false; 256];
    for share in shares {
        if share.y.len() != len {
            return Err(CryptoError::InvalidShareSet("share lengths differ"));
        }
        let slot = &mut seen[usize::from(share.x)];
        if *slot {
            return Err(CryptoError::InvalidShareSet("duplicate share x coordinate"));
        }
        *slot = true;
    }

    let mut secret = Zeroizing::new(vec![0u8; len]);
    for (i, share_i) in shares.iter().enumerate() {
        // Lagrange basis at 0: prod_{j != i} x_j / (x_j - x_i); subtraction is xor.
        let mut num = 1u8;
        let mut den = 1u8;
        for (j, share_j) in shares.iter().enumerate() {
            if i != j {
                num = gf_mul(num, share_j.x);
                den = gf_mul(den, share_j.x ^ share_i.x);
            }
        }
        let basis = gf_mul(num, gf_inv(den));
        for (out, &y) in secret.iter_mut().zip(share_i.y.iter()) {
            *out ^= gf_mul(basis, y);
        }
    }
    Ok(secret)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::DeterministicRandom;

    /// Reference multiply (Russian peasant with branches) to cross-check the
    /// constant-time one over the whole table.
    fn slow_mul(a: u8, b: u8) -> u8 {
        let (mut a, mut b, mut p) = (u16::from(a), u16::from(b), 0u16);
        while b != 0 {
            if b & 1 == 1 {
                p ^= a;
            }
            a <<= 1;
            if a & 0x100 != 0 {
                a ^= 0x11b;
            }
            b >>= 1;
        }
        u8::try_from(p).unwrap()
    }

    #[test]
    fn gf_mul_known_answers() {
        // FIPS-197 section 4.2 examples.
        assert_eq!(gf_mul(0x57, 0x83), 0xc1);
        assert_eq!(gf_mul(0x57, 0x13), 0xfe);
        assert_eq!(gf_mul(0x57, 0x02), 0xae);
        assert_eq!(gf_mul(0x57, 0x04), 0x47);
        assert_eq!(gf_mul(0x57, 0x08), 0x8e);
        assert_eq!(gf_mul(0x57, 0x10), 0x07);
        // AES inverse pair used to build the S-box.
        assert_eq!(gf_mul(0x53, 0xca), 0x01);
        assert_eq!(gf_mul(0, 0xff), 0);
        assert_eq!(gf_mul(1, 0xab), 0xab);
    }

    #[test]
    fn gf_mul_matches_reference_and_commutes() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(gf_mul(a, b), slow_mul(a, b), "{a:#x}*{b:#x}");
                assert_eq!(gf_mul(a, b), gf_mul(b, a));
            }
        }
    }

    #[test]
    fn gf_inverse_for_every_nonzero() {
        assert_eq!(gf_inv(0), 0);
        assert_eq!(gf_inv(0x53), 0xca);
        for a in 1..=255u8 {
            assert_eq!(gf_mul(a, gf_inv(a)), 1, "a = {a:#x}");
        }
    }

    #[test]
    fn threshold_one_shares_equal_secret() {
        let shares = split(b"abc", 1, 3, &DeterministicRandom::new(1)).unwrap();
        for s in &shares {
            assert_eq!(s.y(), b"abc");
            assert_eq!(&combine(std::slice::from_ref(s)).unwrap()[..], b"abc");
        }
    }

    #[test]
    fn x_coordinates_are_one_to_count() {
        let shares = split(b"k", 2, 5, &DeterministicRandom::new(1)).unwrap();
        let xs: Vec<u8> = shares.iter().map(Share::x).collect();
        assert_eq!(xs, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn debug_redacts_y() {
        let s = Share::new(3, vec![0xde, 0xad]).unwrap();
        let dbg = format!("{s:?}");
        assert_eq!(dbg, r#"Share { x: 3, y: "[redacted]" }"#);
    }
}
