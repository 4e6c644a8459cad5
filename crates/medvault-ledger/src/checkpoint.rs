//! Signed tree heads: C2SP tlog-checkpoint bodies inside C2SP signed notes with Ed25519 signatures.
//!
//! Note layout: `<origin>\n<size>\n<base64 root>\n[extension lines]` + `\n` +
//! one or more `— <key name> <base64(key ID || signature)>\n` lines.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use zeroize::Zeroizing;

use crate::error::CheckpointError;
use crate::hash::{sha256, Hash};

/// Largest note [`open`] accepts; bounds work done on untrusted input.
pub const MAX_NOTE_LEN: usize = 1 << 20;

/// Most signature lines [`open`] accepts (the spec requires at least 16).
pub const MAX_SIGNATURES: usize = 64;

/// Signed-note signature type byte for Ed25519.
const ED25519_TYPE: u8 = 0x01;

const ED25519_PUBLIC_LEN: usize = 32;
const ED25519_SIG_LEN: usize = 64;
const KEY_ID_LEN: usize = 4;

/// U+2014 EM DASH and a space: the start of every signature line.
const SIG_PREFIX: &str = "\u{2014} ";

/// A tree head: which log, how many leaves, and the root over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root: Hash,
    extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines; `origin` must be non-empty and
    /// contain no whitespace, '+' or control characters.
    pub fn new(origin: &str, size: u64, root: Hash) -> Result<Self, CheckpointError> {
        if !is_valid_name(origin) {
            return Err(CheckpointError::InvalidOrigin);
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        })
    }

    /// The log identity.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Merkle tree hash at `size`.
    pub fn root(&self) -> &Hash {
        &self.root
    }

    /// Opaque extension lines, as parsed (never produced by [`Checkpoint::new`]).
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The note text that gets signed.
    pub fn body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root.as_bytes())
        );
        for line in &self.extensions {
            body.push_str(line);
            body.push('\n');
        }
        body
    }

    /// Parses a checkpoint body. This alone proves nothing: use [`open`] for
    /// untrusted notes.
    pub fn parse_body(text: &str) -> Result<Self, CheckpointError> {
        check_chars(text)?;
        let Some(content) = text.strip_suffix('\n') else {
            return Err(CheckpointError::Malformed("body must end with a newline"));
        };
        let mut lines = content.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(CheckpointError::Malformed("body needs three lines"));
        };
        if !is_valid_name(origin) {
            return Err(CheckpointError::InvalidOrigin);
        }
        let size = parse_size(size)?;
        let root = STANDARD
            .decode(root)
            .ok()
            .and_then(|bytes| Hash::from_slice(&bytes).ok())
            .ok_or(CheckpointError::InvalidRoot)?;
        let extensions = lines
            .map(|line| {
                if line.is_empty() {
                    Err(CheckpointError::Malformed("empty line in body"))
                } else {
                    Ok(line.to_owned())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

/// A signed note as text, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote(String);

impl SignedNote {
    /// The note text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Unwraps the note text.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for SignedNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<[u8]> for SignedNote {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// An Ed25519 note signing key. Only the seed is kept, zeroized on drop.
pub struct SigningKey {
    name: String,
    seed: Zeroizing<[u8; 32]>,
    verifier: VerifierKey,
}

impl SigningKey {
    /// Derives the key from a 32-byte seed (RFC 8032 private key); `name`
    /// must be non-empty without whitespace, '+' or control characters.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, CheckpointError> {
        if !is_valid_name(name) {
            return Err(CheckpointError::InvalidKeyName);
        }
        let seed = Zeroizing::new(*seed);
        let pair = key_pair(&seed)?;
        let public = <[u8; ED25519_PUBLIC_LEN]>::try_from(pair.public_key().as_ref())
            .map_err(|_| CheckpointError::KeyRejected)?;
        Ok(Self {
            name: name.to_owned(),
            verifier: VerifierKey::from_public(name, public),
            seed,
        })
    }

    /// The key name used on signature lines.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public verifier key.
    pub fn verifier_key(&self) -> VerifierKey {
        self.verifier.clone()
    }

    /// Signs the checkpoint body, producing a note with one signature line.
    pub fn sign(&self, checkpoint: &Checkpoint) -> Result<SignedNote, CheckpointError> {
        // Rebuilt per call: ring's key pair does not zeroize, so keep it short-lived.
        let pair = key_pair(&self.seed)?;
        let body = checkpoint.body();
        let mut blob = Vec::with_capacity(KEY_ID_LEN + ED25519_SIG_LEN);
        blob.extend_from_slice(&self.verifier.id.to_be_bytes());
        blob.extend_from_slice(pair.sign(body.as_bytes()).as_ref());
        let note = format!(
            "{body}\n{SIG_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(&blob)
        );
        Ok(SignedNote(note))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.verifier.id))
            .finish_non_exhaustive()
    }
}

fn key_pair(seed: &[u8; 32]) -> Result<Ed25519KeyPair, CheckpointError> {
    Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| CheckpointError::KeyRejected)
}

/// A trusted Ed25519 note verifier key, as `<name>+<hex8 key ID>+<base64(0x01 || public key)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    public: [u8; ED25519_PUBLIC_LEN],
}

impl VerifierKey {
    fn from_public(name: &str, public: [u8; ED25519_PUBLIC_LEN]) -> Self {
        Self {
            name: name.to_owned(),
            id: key_id(name, &public),
            public,
        }
    }

    /// Parses the verifier key string and checks that its key ID matches.
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        // Names and IDs contain no '+', but standard base64 may: split off two fields only.
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CheckpointError::InvalidVerifierKey(
                "expected name+keyid+key",
            ));
        };
        if !is_valid_name(name) {
            return Err(CheckpointError::InvalidKeyName);
        }
        // Exactly 8 lowercase hex digits, the canonical form Display produces.
        let id_is_canonical = id.len() == 8
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let id = u32::from_str_radix(id, 16)
            .ok()
            .filter(|_| id_is_canonical)
            .ok_or(CheckpointError::InvalidVerifierKey(
                "key ID must be 8 hex digits",
            ))?;
        let key = STANDARD
            .decode(key)
            .map_err(|_| CheckpointError::InvalidVerifierKey("key is not base64"))?;
        let public = match key.split_first() {
            Some((&ED25519_TYPE, public)) => <[u8; ED25519_PUBLIC_LEN]>::try_from(public)
                .map_err(|_| CheckpointError::InvalidVerifierKey("Ed25519 key must be 32 bytes"))?,
            _ => {
                return Err(CheckpointError::InvalidVerifierKey(
                    "only Ed25519 keys are supported",
                ))
            }
        };
        let parsed = Self::from_public(name, public);
        if parsed.id != id {
            return Err(CheckpointError::InvalidVerifierKey(
                "key ID does not match key",
            ));
        }
        Ok(parsed)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 32-bit key ID.
    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> &[u8; ED25519_PUBLIC_LEN] {
        &self.public
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key = Vec::with_capacity(1 + ED25519_PUBLIC_LEN);
        key.push(ED25519_TYPE);
        key.extend_from_slice(&self.public);
        write!(f, "{}+{:08x}+{}", self.name, self.id, STANDARD.encode(key))
    }
}

/// Key ID = first 4 bytes (big-endian) of SHA-256(name || "\n" || 0x01 || public key).
fn key_id(name: &str, public: &[u8; ED25519_PUBLIC_LEN]) -> u32 {
    let digest = sha256(&[name.as_bytes(), b"\n", &[ED25519_TYPE], public]);
    let [a, b, c, d, ..] = *digest.as_bytes();
    u32::from_be_bytes([a, b, c, d])
}

/// Verifies a signed note against `key` and parses its checkpoint body.
///
/// Signatures from other keys are ignored, as signed-note requires; a
/// signature that claims to be from `key` but fails rejects the whole note.
pub fn open(note: impl AsRef<[u8]>, key: &VerifierKey) -> Result<Checkpoint, CheckpointError> {
    let note = note.as_ref();
    if note.len() > MAX_NOTE_LEN {
        return Err(CheckpointError::TooLarge);
    }
    let note = std::str::from_utf8(note).map_err(|_| CheckpointError::NotUtf8)?;
    check_chars(note)?;
    if !note.ends_with('\n') {
        return Err(CheckpointError::Malformed("note must end with a newline"));
    }
    // The text ends at the last blank line; what follows is the signature block.
    let Some(split) = note.rfind("\n\n") else {
        return Err(CheckpointError::Malformed("no signature block"));
    };
    // The text keeps its final newline; the blank line's newline is dropped.
    let (text, sigs) = note
        .split_at_checked(split + 1)
        .ok_or(CheckpointError::Malformed("no signature block"))?;
    let sigs = sigs.strip_prefix('\n').unwrap_or(sigs);
    let sig_lines = sigs.strip_suffix('\n').unwrap_or(sigs);

    let mut verified = false;
    for (count, line) in sig_lines.split('\n').enumerate() {
        if count >= MAX_SIGNATURES {
            return Err(CheckpointError::Malformed("too many signatures"));
        }
        let (name, blob) = parse_signature_line(line)?;
        let Some((id, signature)) = blob.split_first_chunk::<KEY_ID_LEN>() else {
            return Err(CheckpointError::Malformed("signature too short"));
        };
        if name != key.name || u32::from_be_bytes(*id) != key.id {
            continue;
        }
        UnparsedPublicKey::new(&ED25519, &key.public)
            .verify(text.as_bytes(), signature)
            .map_err(|_| CheckpointError::BadSignature)?;
        verified = true;
    }
    if !verified {
        return Err(CheckpointError::NoTrustedSignature);
    }
    Checkpoint::parse_body(text)
}

/// Splits `— <name> <base64>` into the name and decoded signature bytes.
fn parse_signature_line(line: &str) -> Result<(&str, Vec<u8>), CheckpointError> {
    let rest = line
        .strip_prefix(SIG_PREFIX)
        .ok_or(CheckpointError::Malformed(
            "signature line must start with em dash",
        ))?;
    let (name, sig) = rest.split_once(' ').ok_or(CheckpointError::Malformed(
        "signature line needs name and signature",
    ))?;
    if !is_valid_name(name) {
        return Err(CheckpointError::InvalidKeyName);
    }
    let blob = STANDARD
        .decode(sig)
        .map_err(|_| CheckpointError::Malformed("signature is not base64"))?;
    if blob.len() <= KEY_ID_LEN {
        return Err(CheckpointError::Malformed("signature too short"));
    }
    Ok((name, blob))
}

/// Key names and origins: non-empty, no Unicode whitespace, no '+', no control characters.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '+')
}

/// Rejects control characters other than newline (stricter than the spec: also DEL and C1).
fn check_chars(text: &str) -> Result<(), CheckpointError> {
    if text.chars().any(|c| c != '\n' && c.is_control()) {
        return Err(CheckpointError::ControlChar);
    }
    Ok(())
}

/// ASCII decimal without sign or leading zeros ("0" alone is allowed).
fn parse_size(text: &str) -> Result<u64, CheckpointError> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    if !canonical {
        return Err(CheckpointError::InvalidSize);
    }
    text.parse().map_err(|_| CheckpointError::InvalidSize)
}
