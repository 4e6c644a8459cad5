//! Fuzzes the printable Shamir share (`medvault_crypto::share_text::ShareText::parse`, what
//! `medvault unseal`/`rekey`/`ledger verify` read from administrators), and combining the
//! shares it yields (`shamir::combine`).
//!
//! Input: mode byte (`m % 3`), then
//! - 0: lines of share text, parsed as they are (the checksum stops most mutations early);
//! - 1: lines of share text without the checksum field: the harness appends the correct
//!   `:<check>` to each, so the fuzzer reaches the field parsing behind it;
//! - 2: a secret split by the harness (threshold, count and the shares used come from the
//!   input), printed, parsed back and combined.
//!
//! Checks beyond "no panic": what parses prints back as exactly the text it came from (one
//! text form per share), and a split, printed, parsed and combined secret is the secret.

#![no_main]

use libfuzzer_sys::fuzz_target;
use medvault_crypto::keys::sha256;
use medvault_crypto::shamir::{combine, split};
use medvault_crypto::share_text::ShareText;
use medvault_crypto::DeterministicRandom;
use medvault_fuzz::{hex, mode_and_rest};

/// Parse each line; what parses must print back as the (trimmed) line.
fn parse_lines(text: &str) -> Vec<ShareText> {
    let mut out = Vec::new();
    for line in text.lines() {
        if let Ok(share) = ShareText::parse(line) {
            assert_eq!(
                share.encode().as_str(),
                line.trim(),
                "a parsed share prints differently"
            );
            let _ = share.commitment();
            out.push(share);
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = mode_and_rest(data) else {
        return;
    };
    match mode % 3 {
        0 | 1 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            let text = if mode % 3 == 1 {
                text.lines()
                    .map(|body| {
                        let check = sha256(body.trim().as_bytes());
                        format!("{}:{}\n", body.trim(), hex(&check[..4]))
                    })
                    .collect()
            } else {
                text.to_owned()
            };
            let shares: Vec<_> = parse_lines(&text)
                .into_iter()
                .map(ShareText::into_share)
                .collect();
            let _ = combine(&shares);
        }
        _ => {
            let [threshold, count, seed, pick, secret @ ..] = rest else {
                return;
            };
            // Small enough to stay fast: up to 12 shares of up to 64 bytes.
            let count = 1 + count % 12;
            let threshold = 1 + threshold % count;
            let secret = &secret[..secret.len().min(64)];
            let Ok(shares) = split(
                secret,
                threshold,
                count,
                &DeterministicRandom::new(u64::from(*seed)),
            ) else {
                return;
            };
            let texts: Vec<_> = shares
                .into_iter()
                .map(|s| ShareText::new([*seed; 8], threshold, s).encode())
                .collect();
            // Any `threshold` shares, starting from a picked one.
            let chosen: Vec<_> = (0..usize::from(threshold))
                .map(|i| {
                    let text = &texts[(usize::from(*pick) + i) % texts.len()];
                    ShareText::parse(text)
                        .expect("a printed share parses")
                        .into_share()
                })
                .collect();
            let got = combine(&chosen).expect("distinct shares combine");
            assert_eq!(
                &got[..],
                secret,
                "split, print, parse, combine lost the secret"
            );
        }
    }
});
