//! Fuzzes the audit ledger's readers of untrusted input: signed checkpoints
//! (`medvault_ledger::open`, `Checkpoint::parse_body`, `VerifierKey::parse`: what
//! `ledger witness` fetches), inclusion and consistency proof verification with arbitrary
//! hashes and sizes, the `Frontier` restored from stored parts, and `Entry::decode` (the
//! canonical encoding auditors and patients are handed).
//!
//! Input: mode byte (`m % 6`), then
//! - 0: a signed note, opened with the fixed verifier key;
//! - 1: a checkpoint body: the harness signs it (fixed key) and opens the note;
//! - 2: a verifier key string;
//! - 3: an entry encoding;
//! - 4: `index`, `size`, `old size` (8 bytes each, big-endian), then 32-byte hashes: leaf,
//!   root, old root, proof...: verified as inclusion and consistency proofs, and the sizes
//!   and hashes given to `Frontier::from_parts`;
//! - 5: a real tree of 1..=64 leaves (count, index, old size and a corruption position from
//!   the input): its proofs must verify, and must fail once one byte is changed.
//!
//! Checks beyond "no panic": what opens or decodes prints back as exactly its input (one
//! encoding per value); proofs made by the crate verify; changed proofs do not.

#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use medvault_fuzz::{ed25519, mode_and_rest, take_u64, LEDGER_KEY_NAME, LEDGER_SEED};
use medvault_ledger::{
    consistency_proof, inclusion_proof, leaf_hash, mth, open, root_from_inclusion_proof,
    verify_consistency, verify_inclusion, Checkpoint, Entry, Frontier, Hash, SigningKey,
    VerifierKey,
};
use ring::signature::Ed25519KeyPair;

struct Fixed {
    key: Ed25519KeyPair,
    verifier: VerifierKey,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| Fixed {
        key: ed25519(&LEDGER_SEED),
        verifier: SigningKey::from_seed(LEDGER_KEY_NAME, &LEDGER_SEED)
            .expect("fixed ledger key")
            .verifier_key(),
    })
}

/// A C2SP signed note over `body` with one signature line by the fixed key.
fn sign_note(f: &Fixed, body: &str) -> String {
    let mut blob = f.verifier.key_id().to_be_bytes().to_vec();
    blob.extend_from_slice(f.key.sign(body.as_bytes()).as_ref());
    format!(
        "{body}\n\u{2014} {} {}\n",
        f.verifier.name(),
        STANDARD.encode(blob)
    )
}

fn hashes(data: &[u8]) -> Vec<Hash> {
    data.chunks_exact(32)
        .map(|c| Hash::from_slice(c).expect("32-byte chunk"))
        .collect()
}

/// Mode 5: a real tree and its real proofs.
fn real_tree(data: &[u8]) {
    let [n, index, old, flip_at, flip_bit, ..] = *data else {
        return;
    };
    let n = 1 + u64::from(n % 64);
    let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect();
    let root = mth(&leaves);

    let mut frontier = Frontier::new();
    for leaf in &leaves {
        frontier.push(*leaf).expect("small tree");
    }
    assert_eq!(frontier.root(), root, "frontier root differs from MTH");
    let (size, roots) = frontier.parts();
    let restored = Frontier::from_parts(size, roots.to_vec()).expect("own parts");
    assert_eq!(restored.root(), root);

    let index = u64::from(index) % n;
    let leaf = leaves[usize::try_from(index).expect("small index")];
    let mut proof = inclusion_proof(&leaves, index, n).expect("proof of a real leaf");
    verify_inclusion(&leaf, index, n, &proof, &root).expect("a real inclusion proof verifies");
    if !proof.is_empty() {
        let at = usize::from(flip_at) % (proof.len() * 32);
        let mut bytes = *proof[at / 32].as_bytes();
        bytes[at % 32] ^= 1 << (flip_bit % 8);
        proof[at / 32] = Hash::from_bytes(bytes);
        assert!(
            verify_inclusion(&leaf, index, n, &proof, &root).is_err(),
            "a changed inclusion proof verifies"
        );
    }

    let old = 1 + u64::from(old) % n;
    let old_root = mth(&leaves[..usize::try_from(old).expect("small size")]);
    let mut proof = consistency_proof(&leaves, old, n).expect("proof between real sizes");
    verify_consistency(old, n, &old_root, &root, &proof)
        .expect("a real consistency proof verifies");
    if !proof.is_empty() {
        let at = usize::from(flip_at) % (proof.len() * 32);
        let mut bytes = *proof[at / 32].as_bytes();
        bytes[at % 32] ^= 1 << (flip_bit % 8);
        proof[at / 32] = Hash::from_bytes(bytes);
        assert!(
            verify_consistency(old, n, &old_root, &root, &proof).is_err(),
            "a changed consistency proof verifies"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = mode_and_rest(data) else {
        return;
    };
    let f = fixed();
    match mode % 6 {
        0 => {
            let _ = open(rest, &f.verifier);
        }
        1 => {
            let Ok(body) = std::str::from_utf8(rest) else {
                return;
            };
            let note = sign_note(f, body);
            if let Ok(cp) = open(&note, &f.verifier) {
                assert_eq!(cp.body(), body, "an opened checkpoint prints differently");
                assert_eq!(Checkpoint::parse_body(body).ok(), Some(cp));
            }
            let _ = Checkpoint::parse_body(body);
        }
        2 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(key) = VerifierKey::parse(text) {
                assert_eq!(key.to_string(), text, "a verifier key prints differently");
            }
        }
        3 => {
            if let Ok(entry) = Entry::decode(rest) {
                assert_eq!(entry.encode(), rest, "a decoded entry encodes differently");
            }
        }
        4 => {
            let (index, rest) = take_u64(rest);
            let (size, rest) = take_u64(rest);
            let (old, rest) = take_u64(rest);
            let hs = hashes(rest);
            let [leaf, root, old_root, proof @ ..] = hs.as_slice() else {
                return;
            };
            let _ = root_from_inclusion_proof(leaf, index, size, proof);
            let _ = verify_inclusion(leaf, index, size, proof, root);
            let _ = verify_consistency(old, size, old_root, root, proof);
            if let Ok(mut frontier) = Frontier::from_parts(size, hs[..].to_vec()) {
                let _ = frontier.root();
                let _ = frontier.subtrees().count();
                let _ = frontier.push(*leaf);
            }
        }
        _ => real_tree(rest),
    }
});
