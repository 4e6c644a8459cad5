//! Randomness sources, passed as a parameter so the core stays pure and tests deterministic.

use std::sync::Mutex;

use ring::rand::SecureRandom;

use crate::CryptoError;

/// A source of random bytes.
pub trait Random: Send + Sync {
    /// Fill `dest` entirely with random bytes.
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError>;
}

/// Operating-system randomness (wraps [`ring::rand::SystemRandom`]).
///
/// Requests up to [`SMALL`] bytes (nonces, salts, ids, 32-byte keys: several per stored
/// resource) are served from a pool filled from the OS [`POOL`] bytes at a time, so they cost
/// a copy rather than a `getrandom` system call each. Every pooled byte is handed out once
/// and zeroed as it is, so what the pool holds is only OS output nobody has been given yet
/// (on the heap, zeroed when dropped). Larger requests go to the OS directly.
pub struct SystemRandom {
    os: ring::rand::SystemRandom,
    pool: Mutex<Pool>,
}

/// Largest request served from the pool.
pub const SMALL: usize = 64;
/// Bytes fetched from the OS per refill.
pub const POOL: usize = 4096;

struct Pool {
    /// Boxed, so moving a `SystemRandom` leaves no copy of unused bytes behind.
    bytes: zeroize::Zeroizing<Box<[u8]>>,
    /// Bytes before `used` have been handed out (and zeroed).
    used: usize,
}

impl SystemRandom {
    /// Create a handle to the operating system's CSPRNG.
    pub fn new() -> SystemRandom {
        SystemRandom {
            os: ring::rand::SystemRandom::new(),
            // Starts empty: the first small request fills it.
            pool: Mutex::new(Pool {
                bytes: zeroize::Zeroizing::new(vec![0u8; POOL].into_boxed_slice()),
                used: POOL,
            }),
        }
    }
}

impl Default for SystemRandom {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for SystemRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemRandom")
    }
}

impl Random for SystemRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        if dest.len() > SMALL {
            return self.os.fill(dest).map_err(|_| CryptoError::Random);
        }
        // A poisoned lock: another thread panicked while holding it, though nothing between
        // the copy and `used` moving on can panic. Bytes are handed out only below from
        // `used` on, and `used` is reset only after a successful refill, so no stretch can
        // be handed out twice either way.
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if POOL - pool.used < dest.len() {
            self.os
                .fill(&mut pool.bytes[..])
                .map_err(|_| CryptoError::Random)?;
            pool.used = 0;
        }
        let (start, end) = (pool.used, pool.used + dest.len());
        dest.copy_from_slice(&pool.bytes[start..end]);
        zeroize::Zeroize::zeroize(&mut pool.bytes[start..end]);
        pool.used = end;
        Ok(())
    }
}

/// A reproducible byte stream: SHA-256(seed || counter) blocks.
///
/// **FOR TESTS ONLY.** The output is fully determined by the 64-bit seed, so it
/// provides no secrecy whatsoever; never use it to generate real keys or shares.
pub struct DeterministicRandom {
    seed: u64,
    // Interior mutability so `fill` can take `&self` like the trait requires.
    counter: Mutex<u64>,
}

impl DeterministicRandom {
    /// Create a stream from `seed`. FOR TESTS ONLY.
    pub fn new(seed: u64) -> DeterministicRandom {
        DeterministicRandom {
            seed,
            counter: Mutex::new(0),
        }
    }
}

impl std::fmt::Debug for DeterministicRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeterministicRandom")
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl Random for DeterministicRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<(), CryptoError> {
        // A poisoned lock only means another test thread panicked mid-fill; the
        // counter is still a valid u64, so keep going rather than fail.
        let mut counter = self
            .counter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Each call starts on a fresh block; simpler than buffering leftovers and
        // still deterministic.
        for chunk in dest.chunks_mut(32) {
            let mut input = [0u8; 16];
            input[..8].copy_from_slice(&self.seed.to_be_bytes());
            input[8..].copy_from_slice(&counter.to_be_bytes());
            let block = ring::digest::digest(&ring::digest::SHA256, &input);
            chunk.copy_from_slice(&block.as_ref()[..chunk.len()]);
            *counter = counter.wrapping_add(1);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn deterministic_is_reproducible_and_seed_dependent() {
        let (a, b, c) = (
            DeterministicRandom::new(1),
            DeterministicRandom::new(1),
            DeterministicRandom::new(2),
        );
        let (mut x, mut y, mut z) = ([0u8; 70], [0u8; 70], [0u8; 70]);
        a.fill(&mut x).unwrap();
        b.fill(&mut y).unwrap();
        c.fill(&mut z).unwrap();
        assert_eq!(x, y);
        assert_ne!(x, z);
        // The stream advances between calls.
        let mut next = [0u8; 70];
        a.fill(&mut next).unwrap();
        assert_ne!(x, next);
    }

    #[test]
    fn pooled_requests_never_repeat_bytes_across_refills() {
        // Many small requests cross several refills; 16-byte outputs from a CSPRNG do not
        // collide, so any repeat means a pooled stretch was handed out twice.
        let rng = SystemRandom::new();
        let mut seen = std::collections::HashSet::new();
        for len in [16usize, 12, 32, 64, 1] {
            for _ in 0..(3 * POOL / len) {
                let mut b = vec![0u8; len];
                rng.fill(&mut b).unwrap();
                if len >= 12 {
                    assert!(seen.insert(b), "a pooled stretch was handed out twice");
                }
            }
        }
        // After the pool was drained by odd sizes, a request larger than what is left
        // still gets fresh bytes (not a short or zero-padded copy).
        let mut big = [0u8; SMALL];
        rng.fill(&mut big).unwrap();
        assert!(big.iter().any(|&b| b != 0));
        let mut direct = [0u8; SMALL + 1];
        rng.fill(&mut direct).unwrap();
        assert!(direct.iter().any(|&b| b != 0));
    }

    #[test]
    fn system_random_fills() {
        let rng = SystemRandom::new();
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        rng.fill(&mut a).unwrap();
        rng.fill(&mut b).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn random_impls_are_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SystemRandom>();
        assert_send_sync::<DeterministicRandom>();
    }
}
