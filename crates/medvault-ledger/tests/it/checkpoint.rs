//! Tests of C2SP checkpoints in signed notes: snapshot, verification, tampering, strict parsing.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use expect_test::expect;
use medvault_ledger::checkpoint::MAX_NOTE_LEN;
use medvault_ledger::{
    empty_root, open, Checkpoint, CheckpointError, SignedNote, SigningKey, VerifierKey,
};

use crate::{h, KAT_ROOTS};

const ORIGIN: &str = "medvault.example/audit";

fn seed() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

fn key() -> SigningKey {
    SigningKey::from_seed(ORIGIN, &seed()).unwrap()
}

fn checkpoint() -> Checkpoint {
    Checkpoint::new(ORIGIN, 8, h(KAT_ROOTS[8])).unwrap()
}

fn note() -> String {
    key().sign(&checkpoint()).unwrap().into_string()
}

/// The signature line of a note (its last line, without the newline).
fn sig_line(note: &str) -> &str {
    note.trim_end_matches('\n').rsplit('\n').next().unwrap()
}

/// Ed25519 is deterministic, so the whole note is a stable snapshot.
///
/// Cross-checked with Python (hashlib + cryptography): the public key from
/// `Ed25519PrivateKey.from_private_bytes(bytes(range(32)))` gives key ID
/// `sha256(b"medvault.example/audit\n\x01" + pub)[:4]` = the first 4 signature
/// bytes, and the remaining 64 bytes verify over the body.
#[test]
fn signed_note_snapshot() {
    expect![[r#"
        medvault.example/audit
        8
        XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=

        — medvault.example/audit +PKCZwAvlojQ26IRzn9U5ZKSTgH8736GlGtBlCYl9EJYZJ39KaSkuku8W4FvsQVm7UBSYvQKgUTWG1mxt0hF5hTxBwE=
    "#]].assert_eq(&note());
    expect!["medvault.example/audit+f8f28267+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"]
        .assert_eq(&key().verifier_key().to_string());
}

#[test]
fn open_accepts_the_signed_note() {
    let note = key().sign(&checkpoint()).unwrap();
    let opened = open(&note, &key().verifier_key()).unwrap();
    assert_eq!(opened, checkpoint());
    assert_eq!(opened.origin(), ORIGIN);
    assert_eq!(opened.size(), 8);
    assert_eq!(opened.root(), &h(KAT_ROOTS[8]));
    assert!(opened.extensions().is_empty());
    assert_eq!(open(note.as_str(), &key().verifier_key()), Ok(checkpoint()));
    assert_eq!(note.to_string(), note.as_str());
}

#[test]
fn empty_tree_checkpoint_round_trips() {
    let cp = Checkpoint::new(ORIGIN, 0, empty_root()).unwrap();
    assert_eq!(
        cp.body(),
        "medvault.example/audit\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    );
    let note = key().sign(&cp).unwrap();
    assert_eq!(open(&note, &key().verifier_key()), Ok(cp));
}

fn tampered_signature(note: &str) -> String {
    let line = sig_line(note);
    let (prefix, b64) = line.rsplit_once(' ').unwrap();
    let mut blob = STANDARD.decode(b64).unwrap();
    blob[10] ^= 1;
    note.replace(line, &format!("{prefix} {}", STANDARD.encode(blob)))
}

fn tampered_key_id(note: &str) -> String {
    let line = sig_line(note);
    let (prefix, b64) = line.rsplit_once(' ').unwrap();
    let mut blob = STANDARD.decode(b64).unwrap();
    blob[0] ^= 1;
    note.replace(line, &format!("{prefix} {}", STANDARD.encode(blob)))
}

#[test]
fn every_tampering_is_rejected() {
    let good = note();
    let root_b64 = STANDARD.encode(h(KAT_ROOTS[8]).as_bytes());
    let other_root = STANDARD.encode(h(KAT_ROOTS[7]).as_bytes());
    let cases: Vec<(&str, String, CheckpointError)> = vec![
        (
            "size",
            good.replacen("\n8\n", "\n9\n", 1),
            CheckpointError::BadSignature,
        ),
        (
            "root",
            good.replacen(&root_b64, &other_root, 1),
            CheckpointError::BadSignature,
        ),
        (
            "origin",
            good.replacen("medvault.example/audit\n", "medvault.example/audi7\n", 1),
            CheckpointError::BadSignature,
        ),
        (
            "signature byte",
            tampered_signature(&good),
            CheckpointError::BadSignature,
        ),
        (
            "key name",
            good.replacen(
                "\u{2014} medvault.example/audit ",
                "\u{2014} medvault.example/other ",
                1,
            ),
            CheckpointError::NoTrustedSignature,
        ),
        (
            "key id",
            tampered_key_id(&good),
            CheckpointError::NoTrustedSignature,
        ),
        (
            "extra blank line before signatures",
            good.replacen("\n\n", "\n\n\n", 1),
            CheckpointError::BadSignature,
        ),
        (
            "extra blank line at end",
            format!("{good}\n"),
            CheckpointError::Malformed("signature line must start with em dash"),
        ),
        (
            "missing final newline",
            good.trim_end_matches('\n').to_owned(),
            CheckpointError::Malformed("note must end with a newline"),
        ),
        (
            "CRLF line endings",
            good.replace('\n', "\r\n"),
            CheckpointError::ControlChar,
        ),
        (
            "no signatures",
            good.replacen(sig_line(&good), "", 1)
                .trim_end_matches('\n')
                .to_owned()
                + "\n\n",
            CheckpointError::Malformed("signature line must start with em dash"),
        ),
        (
            "hyphen instead of em dash",
            good.replacen('\u{2014}', "-", 1),
            CheckpointError::Malformed("signature line must start with em dash"),
        ),
        (
            "body only",
            checkpoint().body(),
            CheckpointError::Malformed("no signature block"),
        ),
    ];
    let vkey = key().verifier_key();
    for (desc, note, want) in cases {
        assert_eq!(open(&note, &vkey), Err(want), "{desc}: {note:?}");
    }
}

#[test]
fn other_keys_are_ignored_and_cannot_vouch() {
    let other = SigningKey::from_seed("other.example/log", &[9; 32]).unwrap();
    let same_name = SigningKey::from_seed(ORIGIN, &[9; 32]).unwrap();
    let vkey = key().verifier_key();
    for signer in [&other, &same_name] {
        let note = signer.sign(&checkpoint()).unwrap();
        assert_eq!(open(&note, &vkey), Err(CheckpointError::NoTrustedSignature));
    }

    // A cosigned note opens with either key; unknown signatures are skipped.
    let ours = note();
    let theirs = other.sign(&checkpoint()).unwrap().into_string();
    let cosigned = format!("{ours}{}\n", sig_line(&theirs));
    assert_eq!(open(&cosigned, &vkey), Ok(checkpoint()));
    assert_eq!(open(&cosigned, &other.verifier_key()), Ok(checkpoint()));
    let reversed = format!("{theirs}{}\n", sig_line(&ours));
    assert_eq!(open(&reversed, &vkey), Ok(checkpoint()));

    // A bad signature claiming to be ours poisons the note even next to a good one.
    let poisoned = format!("{ours}{}\n", sig_line(&tampered_signature(&ours)));
    assert_eq!(open(&poisoned, &vkey), Err(CheckpointError::BadSignature));
}

#[test]
fn size_and_encoding_limits() {
    let vkey = key().verifier_key();
    let huge = "a".repeat(MAX_NOTE_LEN + 1);
    assert_eq!(open(&huge, &vkey), Err(CheckpointError::TooLarge));
    assert_eq!(
        open(b"\xff\n\n".as_slice(), &vkey),
        Err(CheckpointError::NotUtf8)
    );
    let with_nul = note().replacen("audit", "au\0dit", 1);
    assert_eq!(open(&with_nul, &vkey), Err(CheckpointError::ControlChar));
    let many = format!(
        "{}{}",
        note(),
        format!("{}\n", sig_line(&note())).repeat(64)
    );
    assert_eq!(
        open(&many, &vkey),
        Err(CheckpointError::Malformed("too many signatures"))
    );
    let sixteen = format!(
        "{}{}",
        note(),
        format!("{}\n", sig_line(&note())).repeat(15)
    );
    assert_eq!(open(&sixteen, &vkey), Ok(checkpoint()));
}

#[test]
fn parse_body_is_strict() {
    let root = STANDARD.encode(h(KAT_ROOTS[8]).as_bytes());
    let short_root = STANDARD.encode([0u8; 31]);
    let cases: Vec<(String, CheckpointError)> = vec![
        (format!("o\n08\n{root}\n"), CheckpointError::InvalidSize),
        (format!("o\n-1\n{root}\n"), CheckpointError::InvalidSize),
        (format!("o\n+8\n{root}\n"), CheckpointError::InvalidSize),
        (format!("o\n\n{root}\n"), CheckpointError::InvalidSize),
        (format!("o\n 8\n{root}\n"), CheckpointError::InvalidSize),
        (
            format!("o\n18446744073709551616\n{root}\n"),
            CheckpointError::InvalidSize,
        ),
        (
            format!("o\n8\n{short_root}\n"),
            CheckpointError::InvalidRoot,
        ),
        (
            format!("o\n8\n{}\n", root.trim_end_matches('=')),
            CheckpointError::InvalidRoot,
        ),
        (
            "o\n8\nnot base64!\n".to_owned(),
            CheckpointError::InvalidRoot,
        ),
        (format!("\n8\n{root}\n"), CheckpointError::InvalidOrigin),
        (format!("o o\n8\n{root}\n"), CheckpointError::InvalidOrigin),
        (format!("o+1\n8\n{root}\n"), CheckpointError::InvalidOrigin),
        (
            format!("o\u{a0}\n8\n{root}\n"),
            CheckpointError::InvalidOrigin,
        ),
        (
            format!("o\n8\n{root}\n\next\n"),
            CheckpointError::Malformed("empty line in body"),
        ),
        (
            format!("o\n8\n{root}\n\n"),
            CheckpointError::Malformed("empty line in body"),
        ),
        (
            format!("o\n8\n{root}"),
            CheckpointError::Malformed("body must end with a newline"),
        ),
        (
            "o\n8\n".to_owned(),
            CheckpointError::Malformed("body needs three lines"),
        ),
        (format!("o\n8\n{root}\t\n"), CheckpointError::ControlChar),
    ];
    for (body, want) in cases {
        assert_eq!(Checkpoint::parse_body(&body), Err(want), "{body:?}");
    }
    assert_eq!(
        Checkpoint::parse_body(&format!("o\n18446744073709551615\n{root}\n")).map(|c| c.size()),
        Ok(u64::MAX)
    );
}

#[test]
fn extension_lines_are_kept_and_signed() {
    let root = STANDARD.encode(h(KAT_ROOTS[8]).as_bytes());
    let body = format!("{ORIGIN}\n8\n{root}\next one\nsecond ext\n");
    let cp = Checkpoint::parse_body(&body).unwrap();
    assert_eq!(cp.extensions(), ["ext one", "second ext"]);
    assert_eq!(cp.body(), body);
    let note = key().sign(&cp).unwrap();
    assert_eq!(open(&note, &key().verifier_key()), Ok(cp));
}

#[test]
fn names_are_validated() {
    for bad in ["", "a b", "a+b", "a\tb", "a\nb", "a\u{2003}b"] {
        assert_eq!(
            Checkpoint::new(bad, 0, empty_root()),
            Err(CheckpointError::InvalidOrigin),
            "{bad:?}"
        );
        assert_eq!(
            SigningKey::from_seed(bad, &seed()).map(|_| ()),
            Err(CheckpointError::InvalidKeyName),
            "{bad:?}"
        );
    }
}

#[test]
fn verifier_key_round_trip_and_rejections() {
    let vkey = key().verifier_key();
    let text = vkey.to_string();
    assert_eq!(VerifierKey::parse(&text), Ok(vkey.clone()));
    assert_eq!(vkey.name(), ORIGIN);
    assert_eq!(
        format!("{:08x}", vkey.key_id()),
        text.split('+').nth(1).unwrap()
    );

    let (name, rest) = text.split_once('+').unwrap();
    let (id, b64) = rest.split_once('+').unwrap();
    let mut raw = STANDARD.decode(b64).unwrap();
    let wrong_id = format!("{:08x}", vkey.key_id() ^ 1);
    raw[0] = 0x02;
    let wrong_type = STANDARD.encode(&raw);
    let short = STANDARD.encode(&raw[..32]);
    for bad in [
        format!("{name}+{wrong_id}+{b64}"),
        format!("{name}+{}+{b64}", id.to_uppercase()),
        format!("{name}+{}+{b64}", &id[1..]),
        format!("other+{id}+{b64}"),
        format!("{name}+{id}+{wrong_type}"),
        format!("{name}+{id}+{short}"),
        format!("{name}+{id}+{b64}+extra"),
        format!("{name}+{id}"),
        format!("+{id}+{b64}"),
        format!("{name}+{id}+not base64"),
    ] {
        assert!(VerifierKey::parse(&bad).is_err(), "{bad}");
    }
}

#[test]
fn signing_key_debug_hides_the_seed() {
    let debug = format!("{:?}", key());
    assert!(debug.contains(ORIGIN));
    assert!(!debug.contains("seed"));
    assert!(!debug.contains("[0, 1, 2"));
    assert_eq!(key().name(), ORIGIN);
}

#[test]
fn signed_note_is_exposed_as_text() {
    let note: SignedNote = key().sign(&checkpoint()).unwrap();
    assert!(note.as_str().starts_with(&checkpoint().body()));
    assert!(note.as_str().ends_with('\n'));
}

/// Interop with golang.org/x/mod/sumdb/note (its package docs / note_test.go
/// example key pair and signed note). The note text is not a checkpoint, so
/// `open` fails on the body, but only after the signature verified.
#[test]
fn interop_with_go_sumdb_note() {
    const GO_SKEY_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
        then you don't know what your problem is.\n\
        \n\
        \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    // Go's private key string is "PRIVATE+KEY+<name>+<id>+base64(0x01 || seed)".
    let skey = STANDARD.decode(GO_SKEY_B64).unwrap();
    assert_eq!(skey[0], 0x01);
    let seed: [u8; 32] = skey[1..].try_into().unwrap();
    let ours = SigningKey::from_seed("PeterNeumann", &seed).unwrap();
    assert_eq!(ours.verifier_key().to_string(), GO_VKEY);

    let vkey = VerifierKey::parse(GO_VKEY).unwrap();
    assert_eq!(
        open(GO_NOTE, &vkey),
        Err(CheckpointError::Malformed("body needs three lines"))
    );
    let tampered = GO_NOTE.replace("cryptography", "cryptographY");
    assert_eq!(open(&tampered, &vkey), Err(CheckpointError::BadSignature));
}
