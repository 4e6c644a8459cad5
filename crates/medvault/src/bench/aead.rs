//! `medvault bench aead`: the envelope cipher every stored ciphertext goes through, against
//! ring's raw AES-256-GCM on the same buffer, at the sizes medvault actually encrypts.

use std::hint::black_box;
use std::time::Instant;

use anyhow::{anyhow, Result};
use medvault_crypto::envelope::AeadKey;
use medvault_crypto::{SecretKey, SystemRandom};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

/// One buffer size's figures, in MiB/s of plaintext.
pub struct AeadFigure {
    pub size: usize,
    pub raw_seal: f64,
    pub envelope_seal: f64,
    pub raw_open: f64,
    pub envelope_open: f64,
}

/// Sizes: a typical stored resource version, a large one, and a document chunk.
const SIZES: [usize; 3] = [600, 16 * 1024, 1024 * 1024];

pub fn run(mib_per_size: usize) -> Result<Vec<AeadFigure>> {
    println!("bench aead: {mib_per_size} MiB per buffer size and operation, one core");
    println!("machine: {}", super::machine());
    // A fixed test key: nothing here is kept, and the figure does not depend on the key.
    let key_bytes = [0x5au8; 32];
    let aad = b"Observation/3f1c9a0e-1111-4000-8000-000000000001/1|patient";
    let rng = SystemRandom::new();
    let envelope_key = AeadKey::new(&SecretKey::from_bytes(key_bytes), 1);
    let raw_key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &key_bytes).map_err(|_| anyhow!("AES-256 key rejected"))?,
    );
    let mut figures = Vec::new();
    for size in SIZES {
        let iters = ((mib_per_size << 20) / size).max(1);
        let mib = (iters * size) as f64 / (1024.0 * 1024.0);
        let plaintext = vec![0x42u8; size];

        // ring alone: seal in place with a counter nonce (the least work AES-256-GCM can do).
        let mut work = plaintext.clone();
        let start = Instant::now();
        for i in 0..iters {
            let tag = raw_key
                .seal_in_place_separate_tag(nonce(i), Aad::from(&aad[..]), &mut work)
                .map_err(|_| anyhow!("seal failed"))?;
            let _ = black_box(tag);
        }
        let raw_seal = mib / start.elapsed().as_secs_f64();

        // ring alone, opening: the ciphertext is copied into the work buffer first (open
        // decrypts in place), as any caller that keeps its stored copy must do.
        let mut sealed = plaintext.clone();
        let tag = raw_key
            .seal_in_place_separate_tag(nonce(0), Aad::from(&aad[..]), &mut sealed)
            .map_err(|_| anyhow!("seal failed"))?;
        sealed.extend_from_slice(tag.as_ref());
        let mut work = sealed.clone();
        let start = Instant::now();
        for _ in 0..iters {
            work.copy_from_slice(&sealed);
            let out = raw_key
                .open_in_place(nonce(0), Aad::from(&aad[..]), &mut work)
                .map_err(|_| anyhow!("open failed"))?;
            black_box(out);
        }
        let raw_open = mib / start.elapsed().as_secs_f64();

        // medvault's envelope: random nonce, header, header-bound AAD, a fresh output buffer.
        let start = Instant::now();
        for _ in 0..iters {
            black_box(envelope_key.seal(aad, &plaintext, &rng)?);
        }
        let envelope_seal = mib / start.elapsed().as_secs_f64();

        let envelope = envelope_key.seal(aad, &plaintext, &rng)?;
        let start = Instant::now();
        for _ in 0..iters {
            black_box(envelope_key.open(aad, &envelope)?);
        }
        let envelope_open = mib / start.elapsed().as_secs_f64();

        println!(
            "  {:>9} buffers: seal  ring {raw_seal:>7.0} MiB/s  envelope {envelope_seal:>7.0} MiB/s  ratio {:.2}   open  ring {raw_open:>7.0} MiB/s  envelope {envelope_open:>7.0} MiB/s  ratio {:.2}",
            human_size(size),
            envelope_seal / raw_seal,
            envelope_open / raw_open,
        );
        figures.push(AeadFigure {
            size,
            raw_seal,
            envelope_seal,
            raw_open,
            envelope_open,
        });
    }
    Ok(figures)
}

fn nonce(i: usize) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&(i as u64).to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

pub fn human_size(size: usize) -> String {
    if size >= 1 << 20 {
        format!("{} MiB", size >> 20)
    } else if size >= 1 << 10 {
        format!("{} KiB", size >> 10)
    } else {
        format!("{size} B")
    }
}
