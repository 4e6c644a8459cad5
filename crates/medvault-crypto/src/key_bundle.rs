//! The user's key bundle (Ed25519 signing key + X25519 agreement key), sealed under the OPAQUE export key.
//!
//! OPAQUE gives every client that logs in the same export key, which the server never
//! learns. The client seals the bundle's secrets under a key derived from it and uploads
//! the sealed bytes; the server stores them opaquely next to the clear public keys, and any
//! device that logs in opens them again. [`KeyBundlePublic`] is what others use to verify
//! the user's signatures and to encrypt to the user (HPKE with X25519).
//!
//! # Sealed format, version 1 (93 bytes)
//!
//! | offset | length | content                                                        |
//! |--------|--------|----------------------------------------------------------------|
//! | 0      | 1      | version, `0x01`                                                |
//! | 1      | 12     | nonce, random                                                  |
//! | 13     | 64     | AES-256-GCM ciphertext of `ed25519 seed (32) ‖ x25519 secret (32)` |
//! | 77     | 16     | AES-256-GCM tag                                                |
//!
//! ```text
//! key = HKDF-SHA256(salt = "medvault/hkdf/v1", ikm = export key,
//!                   info = "medvault/key-bundle/v1", L = 32)
//! aad = 0x01 ‖ "medvault/key-bundle/v1" ‖ account binding
//!       ‖ ed25519 public key (32) ‖ x25519 public key (32)
//! ```
//!
//! Strings are their ASCII bytes, with no length prefix or terminator. The AAD is still
//! unambiguous: everything in it but the account binding has a fixed length. The binding
//! (the account's login name, as the caller spells it) stops a bundle being moved to
//! another account; the public keys stop the clear copy beside it being swapped.
//!
//! - The Ed25519 seed is the RFC 8032 private key; the X25519 secret is the RFC 7748
//!   scalar as generated (clamped when used, not when stored).
//! - The export key must be at least 32 bytes (opaque-ke with SHA-512 gives 64); it is
//!   used whole as the HKDF input.
//! - WebCrypto: `importKey("raw", exportKey, "HKDF")`, then `deriveKey({name: "HKDF",
//!   hash: "SHA-256", salt, info}, …, {name: "AES-GCM", length: 256})`; `encrypt({name:
//!   "AES-GCM", iv: nonce, additionalData: aad})` returns exactly bytes 13.. above.
//!
//! Opening refuses (never panics on) an unknown version, a wrong length, a wrong export
//! key, binding or public keys, and any altered byte; it also recomputes the public keys
//! from the decrypted secrets and requires them to equal the ones given.
//!
//! # Public keys
//!
//! Text form: `{"ed25519":"<base64url>","x25519":"<base64url>"}`, unpadded base64url of
//! the 32-byte RFC 8032 / RFC 7748 public keys, exactly these two members. Thumbprint:
//! `SHA-256("medvault/key-bundle/thumbprint/v1" ‖ ed25519 ‖ x25519)`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey as X25519PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::keys::{hkdf_sha256, sha256};
use crate::{CryptoError, Random};

/// Sealed key bundle format version 1.
pub const FORMAT_V1: u8 = 1;
/// HKDF info and AAD label of format version 1.
pub const LABEL: &str = "medvault/key-bundle/v1";
/// Length of each public key, and of each secret.
pub const KEY_LEN: usize = 32;
/// Length of the AES-GCM tag at the end of a sealed bundle.
pub const TAG_LEN: usize = 16;
/// Length of a version 1 sealed bundle: version, nonce, both secrets, tag.
pub const SEALED_LEN: usize = 1 + NONCE_LEN + SECRETS_LEN + TAG_LEN;
/// The shortest export key accepted: anything shorter cannot carry a 256-bit key.
pub const MIN_EXPORT_KEY_LEN: usize = 32;
/// Ed25519 signature length.
pub const SIGNATURE_LEN: usize = 64;

/// The plaintext: Ed25519 seed then X25519 secret.
const SECRETS_LEN: usize = 2 * KEY_LEN;
const HEADER_LEN: usize = 1 + NONCE_LEN;
const THUMBPRINT_LABEL: &[u8] = b"medvault/key-bundle/thumbprint/v1";
/// The JSON form is about 110 bytes; refusing far longer text bounds the parser's work.
const MAX_PUBLIC_JSON_LEN: usize = 1024;

/// A user's secret keys: an Ed25519 signing key and an X25519 agreement key.
///
/// Zeroized on drop; `Debug` shows only the public keys. Not `Clone`, so the secrets
/// exist once. ring's Ed25519 key pair is built per signature rather than kept, because
/// ring does not zeroize it; the only long-lived copy of the seed is the zeroized one here.
pub struct KeyBundle {
    ed25519_seed: Zeroizing<[u8; KEY_LEN]>,
    // StaticSecret zeroizes itself on drop (x25519-dalek's `zeroize` feature).
    x25519: StaticSecret,
    public: KeyBundlePublic,
}

impl KeyBundle {
    /// Generate a fresh bundle: 64 random bytes, the Ed25519 seed then the X25519 secret.
    pub fn generate(rng: &dyn Random) -> Result<KeyBundle, CryptoError> {
        let mut secrets = Zeroizing::new([0u8; SECRETS_LEN]);
        rng.fill(&mut secrets[..])?;
        Ok(KeyBundle::from_secret_block(&secrets))
    }

    /// A bundle from existing secrets (an RFC 8032 seed and an RFC 7748 scalar).
    /// The bytes are copied; the caller should zeroize its own copies.
    pub fn from_secrets(ed25519_seed: &[u8; KEY_LEN], x25519_secret: &[u8; KEY_LEN]) -> KeyBundle {
        let ed25519_seed = Zeroizing::new(*ed25519_seed);
        let x25519 = StaticSecret::from(*x25519_secret);
        let mut ed25519 = [0u8; KEY_LEN];
        // Ed25519 public keys are always 32 bytes, so this cannot panic.
        ed25519.copy_from_slice(ed25519_key_pair(&ed25519_seed).public_key().as_ref());
        let public = KeyBundlePublic {
            ed25519,
            x25519: X25519PublicKey::from(&x25519).to_bytes(),
        };
        KeyBundle {
            ed25519_seed,
            x25519,
            public,
        }
    }

    fn from_secret_block(secrets: &[u8; SECRETS_LEN]) -> KeyBundle {
        let (ed, x) = secrets.split_at(KEY_LEN);
        let mut ed_seed = Zeroizing::new([0u8; KEY_LEN]);
        let mut x_secret = Zeroizing::new([0u8; KEY_LEN]);
        // Both halves of a 64-byte array are 32 bytes, so neither copy can panic.
        ed_seed.copy_from_slice(ed);
        x_secret.copy_from_slice(x);
        KeyBundle::from_secrets(&ed_seed, &x_secret)
    }

    /// The public keys, to publish beside the sealed bundle.
    pub fn public(&self) -> KeyBundlePublic {
        self.public
    }

    /// Sign `msg` with Ed25519 (RFC 8032, pure); verify with [`KeyBundlePublic::verify`].
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let signature = ed25519_key_pair(&self.ed25519_seed).sign(msg);
        let mut out = [0u8; SIGNATURE_LEN];
        // Ed25519 signatures are always 64 bytes, so this cannot panic.
        out.copy_from_slice(signature.as_ref());
        out
    }

    /// X25519 (RFC 7748) with a peer's public key: the `DH(skR, pkE)` step of HPKE's
    /// DHKEM(X25519). Refuses a low-order peer key (all-zero result), as RFC 9180 §7.1.4 requires.
    pub fn x25519_agree(
        &self,
        peer_public: &[u8; KEY_LEN],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
        let shared = self
            .x25519
            .diffie_hellman(&X25519PublicKey::from(*peer_public));
        if !shared.was_contributory() {
            return Err(CryptoError::LowOrderPublicKey);
        }
        Ok(Zeroizing::new(shared.to_bytes()))
    }

    /// Seal the secrets under `export_key` for the account named by `account_binding`
    /// (see the module documentation for the format).
    pub fn seal(
        &self,
        export_key: &[u8],
        account_binding: &[u8],
        rng: &dyn Random,
    ) -> Result<Vec<u8>, CryptoError> {
        let key = bundle_key(export_key)?;
        check_binding(account_binding)?;
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce)?;
        // Encrypt in a zeroized buffer so the output never holds plaintext.
        let mut body = Zeroizing::new([0u8; SECRETS_LEN]);
        body[..KEY_LEN].copy_from_slice(self.ed25519_seed.as_ref());
        body[KEY_LEN..].copy_from_slice(self.x25519.as_bytes());
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(account_binding, &self.public)),
                &mut body[..],
            )
            // ring only refuses inputs beyond GCM's ~64 GiB limit; this is 64 bytes.
            .map_err(|_| CryptoError::KeyBundleFormat("sealing failed"))?;
        let mut out = Vec::with_capacity(SEALED_LEN);
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(body.as_ref());
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Open a bundle sealed by [`KeyBundle::seal`], given the public keys stored beside it.
    ///
    /// An unknown version or a wrong length gives [`CryptoError::KeyBundleFormat`]; a wrong
    /// export key, binding or public keys, or any altered byte, gives [`CryptoError::Integrity`].
    pub fn open(
        sealed: &[u8],
        export_key: &[u8],
        account_binding: &[u8],
        public: &KeyBundlePublic,
    ) -> Result<KeyBundle, CryptoError> {
        let key = bundle_key(export_key)?;
        check_binding(account_binding)?;
        // Version before length, so a future format of another length is named as such.
        match sealed.first() {
            None => return Err(CryptoError::KeyBundleFormat("empty")),
            Some(&FORMAT_V1) => {}
            Some(_) => return Err(CryptoError::KeyBundleFormat("unsupported version")),
        }
        if sealed.len() != SEALED_LEN {
            return Err(CryptoError::KeyBundleFormat("wrong length"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[1..HEADER_LEN]);
        let mut buf = Zeroizing::new([0u8; SECRETS_LEN + TAG_LEN]);
        buf.copy_from_slice(&sealed[HEADER_LEN..]);
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(account_binding, public)),
                &mut buf[..],
            )
            .map_err(|_| CryptoError::Integrity)?;
        // ring returns exactly the 64 plaintext bytes; a mismatch would be a ring bug.
        let secrets =
            <&[u8; SECRETS_LEN]>::try_from(&*plain).map_err(|_| CryptoError::Integrity)?;
        let bundle = KeyBundle::from_secret_block(secrets);
        // The AAD already binds the public keys; this also catches a sealer that bound
        // public keys not matching the secrets it sealed.
        if bundle.public != *public {
            return Err(CryptoError::Integrity);
        }
        Ok(bundle)
    }
}

impl zeroize::ZeroizeOnDrop for KeyBundle {}

impl std::fmt::Debug for KeyBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyBundle")
            .field("public", &self.public)
            .field("secrets", &"[redacted]")
            .finish()
    }
}

/// The public half of a [`KeyBundle`]; serializes as `{"ed25519":"…","x25519":"…"}`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBundlePublic {
    /// Ed25519 public key (RFC 8032 encoding).
    #[serde(with = "b64_key")]
    pub ed25519: [u8; KEY_LEN],
    /// X25519 public key (RFC 7748 u-coordinate).
    #[serde(with = "b64_key")]
    pub x25519: [u8; KEY_LEN],
}

impl KeyBundlePublic {
    /// Verify an Ed25519 signature made by [`KeyBundle::sign`]; failure is [`CryptoError::Integrity`].
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        UnparsedPublicKey::new(&ED25519, &self.ed25519)
            .verify(msg, signature)
            .map_err(|_| CryptoError::Integrity)
    }

    /// `SHA-256("medvault/key-bundle/thumbprint/v1" ‖ ed25519 ‖ x25519)`: one short name for both keys.
    pub fn thumbprint(&self) -> [u8; 32] {
        let mut input = Vec::with_capacity(THUMBPRINT_LABEL.len() + 2 * KEY_LEN);
        input.extend_from_slice(THUMBPRINT_LABEL);
        input.extend_from_slice(&self.ed25519);
        input.extend_from_slice(&self.x25519);
        sha256(&input)
    }

    /// The canonical JSON text: no whitespace, `ed25519` first (same as serde's output).
    pub fn to_json(&self) -> String {
        // Member values are base64url, which never needs JSON escaping.
        format!(
            r#"{{"ed25519":"{}","x25519":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(self.ed25519),
            URL_SAFE_NO_PAD.encode(self.x25519)
        )
    }

    /// Parse the JSON form: exactly the two members, each canonical unpadded base64url of 32 bytes.
    pub fn from_json(text: &str) -> Result<KeyBundlePublic, CryptoError> {
        if text.len() > MAX_PUBLIC_JSON_LEN {
            return Err(CryptoError::KeyBundleFormat("public keys JSON too long"));
        }
        serde_json::from_str(text)
            .map_err(|_| CryptoError::KeyBundleFormat("invalid public keys JSON"))
    }
}

impl std::fmt::Debug for KeyBundlePublic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyBundlePublic")
            .field("ed25519", &URL_SAFE_NO_PAD.encode(self.ed25519))
            .field("x25519", &URL_SAFE_NO_PAD.encode(self.x25519))
            .finish()
    }
}

/// Serde for a 32-byte key as unpadded base64url; padding, stray bits and other lengths are refused.
mod b64_key {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::KEY_LEN;

    pub(super) fn serialize<S: Serializer>(key: &[u8; KEY_LEN], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(key))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; KEY_LEN], D::Error> {
        let text = String::deserialize(d)?;
        URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|bytes| <[u8; KEY_LEN]>::try_from(bytes.as_slice()).ok())
            .ok_or_else(|| D::Error::custom("expected 32 bytes of unpadded base64url"))
    }
}

fn ed25519_key_pair(seed: &[u8; KEY_LEN]) -> Ed25519KeyPair {
    // from_seed_unchecked only rejects a seed that is not 32 bytes, and this one is.
    #[allow(clippy::expect_used)]
    Ed25519KeyPair::from_seed_unchecked(seed).expect("a 32-byte seed is a valid Ed25519 seed")
}

/// HKDF-SHA256 of the export key (info = [`LABEL`]) as an AES-256-GCM key.
fn bundle_key(export_key: &[u8]) -> Result<LessSafeKey, CryptoError> {
    if export_key.len() < MIN_EXPORT_KEY_LEN {
        return Err(CryptoError::ExportKeyLength);
    }
    let key = hkdf_sha256(export_key, LABEL);
    // UnboundKey::new only rejects a wrong key length; HKDF gave exactly 32 bytes.
    #[allow(clippy::expect_used)]
    let unbound =
        UnboundKey::new(&AES_256_GCM, key.expose()).expect("32-byte key fits AES-256-GCM");
    Ok(LessSafeKey::new(unbound))
}

/// An empty binding would bind the bundle to no account at all, so it is a caller bug.
fn check_binding(account_binding: &[u8]) -> Result<(), CryptoError> {
    if account_binding.is_empty() {
        return Err(CryptoError::KeyBundleFormat("empty account binding"));
    }
    Ok(())
}

fn aad(account_binding: &[u8], public: &KeyBundlePublic) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + LABEL.len() + account_binding.len() + 2 * KEY_LEN);
    aad.push(FORMAT_V1);
    aad.extend_from_slice(LABEL.as_bytes());
    aad.extend_from_slice(account_binding);
    aad.extend_from_slice(&public.ed25519);
    aad.extend_from_slice(&public.x25519);
    aad
}
