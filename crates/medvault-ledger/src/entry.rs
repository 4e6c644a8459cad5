//! Audit entries, their canonical binary encoding, and salted commitments that become tree leaves.
//!
//! The tree stores `leaf_hash(commitment(salt, entry.encode()))`, so a published
//! tree reveals nothing about entries, while a patient handed the entry, its
//! salt and a proof can recompute and check their own leaf.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{EntryError, HashError};
use crate::hash::{decode_hex32, encode_hex, leaf_hash, sha256, Hash};

/// Maximum byte length of any text field.
pub const MAX_TEXT_LEN: usize = 4096;

/// First byte of an encoded entry that names one resource; its layout never changes, so
/// entries written before [`ENCODING_VERSION_LIST`] existed keep their leaves.
pub const ENCODING_VERSION: u8 = 1;

/// First byte of an encoded entry that names further resources ([`Entry::more`]): the
/// version-1 fields, then the count and the further resources.
pub const ENCODING_VERSION_LIST: u8 = 2;

/// Most further resources one entry can name (a request acting on more writes more entries).
pub const MAX_MORE: usize = 1023;

/// Domain separator for commitments, so they cannot collide with other SHA-256 uses.
const COMMITMENT_DOMAIN: &[u8] = b"medvault-ledger-entry-v1\0";

/// A UTF-8 text field of at most [`MAX_TEXT_LEN`] bytes, so encoding can never fail.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryText(String);

impl EntryText {
    /// Accepts `text` if it is at most [`MAX_TEXT_LEN`] bytes.
    pub fn new(text: impl Into<String>) -> Result<Self, EntryError> {
        let text = text.into();
        if text.len() > MAX_TEXT_LEN {
            return Err(EntryError::TextTooLong { len: text.len() });
        }
        Ok(Self(text))
    }

    /// The empty string (for optional fields such as `client` or `patient`).
    pub const fn empty() -> Self {
        Self(String::new())
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Unwraps the text.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl TryFrom<&str> for EntryText {
    type Error = EntryError;

    fn try_from(text: &str) -> Result<Self, EntryError> {
        Self::new(text)
    }
}

impl TryFrom<String> for EntryText {
    type Error = EntryError;

    fn try_from(text: String) -> Result<Self, EntryError> {
        Self::new(text)
    }
}

impl AsRef<str> for EntryText {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntryText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EntryText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Further resources one entry covers, beyond its first (`resource_type`/`resource_id`), as
/// "Type/id" references: at most [`MAX_MORE`], so encoding can never fail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MoreResources(Vec<EntryText>);

impl MoreResources {
    /// Accepts at most [`MAX_MORE`] references.
    pub fn new(refs: Vec<EntryText>) -> Result<Self, EntryError> {
        if refs.len() > MAX_MORE {
            return Err(EntryError::TooManyResources { count: refs.len() });
        }
        Ok(Self(refs))
    }

    /// None: the entry names one resource.
    pub const fn none() -> Self {
        Self(Vec::new())
    }

    /// The references, in the order they were recorded.
    pub fn as_slice(&self) -> &[EntryText] {
        &self.0
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the entry names only its first resource.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Result of the audited operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The operation was permitted and carried out.
    Allow,
    /// The operation was refused by policy.
    Deny,
    /// The operation failed.
    Error,
}

impl Outcome {
    /// Wire byte of this outcome.
    pub const fn to_byte(self) -> u8 {
        match self {
            Self::Allow => 0,
            Self::Deny => 1,
            Self::Error => 2,
        }
    }

    /// Parses a wire byte.
    pub const fn from_byte(byte: u8) -> Result<Self, EntryError> {
        match byte {
            0 => Ok(Self::Allow),
            1 => Ok(Self::Deny),
            2 => Ok(Self::Error),
            other => Err(EntryError::UnknownOutcome(other)),
        }
    }

    /// Lowercase name ("allow", "deny", "error").
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Error => "error",
        }
    }
}

/// One audited event. Every field is bounded, so [`Entry::encode`] is infallible.
/// `Debug` shows what the event was, not whom it concerns: see its impl.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// Unix time in seconds.
    pub time: i64,
    /// Account id of the actor.
    pub actor: EntryText,
    /// Role the actor acted in.
    pub role: EntryText,
    /// Client id (empty when not applicable).
    pub client: EntryText,
    /// Action, e.g. "read", "create", "search", "login", "unseal".
    pub action: EntryText,
    /// Resource type, e.g. "Patient", "Observation".
    pub resource_type: EntryText,
    /// Resource id.
    pub resource_id: EntryText,
    /// Patient the data belongs to (empty when not patient data).
    pub patient: EntryText,
    /// Result of the operation.
    pub outcome: Outcome,
    /// Why the outcome was reached (policy rule, error class).
    pub reason: EntryText,
    /// Declared purpose of use.
    pub purpose: EntryText,
    /// Whether emergency ("break-glass") access was invoked.
    pub break_glass: bool,
    /// Client IP address as text.
    pub address: EntryText,
    /// Client user agent.
    pub user_agent: EntryText,
    /// Further resources the same decision covered, for the same patient and in the same
    /// request (a transaction's creates for one patient are one entry).
    pub more: MoreResources,
}

/// What kind of event it was, never the ids, addresses or free text: a `{:?}` in a log
/// line or a failed assertion must not carry a patient id, a resource id, an IP address or
/// a break-glass reason (which can hold clinical detail, and is recorded as the purpose).
impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("time", &self.time)
            .field("role", &self.role)
            .field("action", &self.action)
            .field("resource_type", &self.resource_type)
            .field("outcome", &self.outcome)
            .field("purpose_len", &self.purpose.as_ref().len())
            .field("break_glass", &self.break_glass)
            .field("more", &self.more.0.len())
            .finish_non_exhaustive()
    }
}

impl Entry {
    /// Canonical encoding: version byte, then fields in declaration order;
    /// `time` as 8 bytes big-endian, text as u32 big-endian length + UTF-8,
    /// `outcome` and `break_glass` as one byte each. An entry with no further resources is
    /// version 1 and ends after `user_agent`; otherwise version 2 adds their count (u32
    /// big-endian, at least 1) and the references as text.
    pub fn encode(&self) -> Vec<u8> {
        let texts = [
            &self.actor,
            &self.role,
            &self.client,
            &self.action,
            &self.resource_type,
            &self.resource_id,
            &self.patient,
            &self.reason,
            &self.purpose,
            &self.address,
            &self.user_agent,
        ];
        let text_bytes: usize = texts
            .iter()
            .copied()
            .chain(self.more.as_slice())
            .map(|t| 4 + t.0.len())
            .sum();
        let mut out = Vec::with_capacity(1 + 8 + 2 + 4 + text_bytes);
        out.push(if self.more.is_empty() {
            ENCODING_VERSION
        } else {
            ENCODING_VERSION_LIST
        });
        out.extend_from_slice(&self.time.to_be_bytes());
        put_text(&mut out, &self.actor);
        put_text(&mut out, &self.role);
        put_text(&mut out, &self.client);
        put_text(&mut out, &self.action);
        put_text(&mut out, &self.resource_type);
        put_text(&mut out, &self.resource_id);
        put_text(&mut out, &self.patient);
        out.push(self.outcome.to_byte());
        put_text(&mut out, &self.reason);
        put_text(&mut out, &self.purpose);
        out.push(u8::from(self.break_glass));
        put_text(&mut out, &self.address);
        put_text(&mut out, &self.user_agent);
        if !self.more.is_empty() {
            // At most MAX_MORE, which always fits u32.
            let count = u32::try_from(self.more.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&count.to_be_bytes());
            for r in self.more.as_slice() {
                put_text(&mut out, r);
            }
        }
        out
    }

    /// Strict inverse of [`Entry::encode`]: any other byte string is rejected.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        let mut r = Reader { rest: bytes };
        let version = r.byte()?;
        if version != ENCODING_VERSION && version != ENCODING_VERSION_LIST {
            return Err(EntryError::UnknownVersion(version));
        }
        let mut entry = Self {
            time: i64::from_be_bytes(r.array()?),
            actor: r.text("actor")?,
            role: r.text("role")?,
            client: r.text("client")?,
            action: r.text("action")?,
            resource_type: r.text("resource_type")?,
            resource_id: r.text("resource_id")?,
            patient: r.text("patient")?,
            outcome: Outcome::from_byte(r.byte()?)?,
            reason: r.text("reason")?,
            purpose: r.text("purpose")?,
            break_glass: match r.byte()? {
                0 => false,
                1 => true,
                other => return Err(EntryError::InvalidBool(other)),
            },
            address: r.text("address")?,
            user_agent: r.text("user_agent")?,
            more: MoreResources::none(),
        };
        if version == ENCODING_VERSION_LIST {
            let count = u32::from_be_bytes(r.array()?);
            // Version 2 with none would be a second encoding of a version-1 entry. Checked
            // before reading, so a huge count cannot cause work.
            let n = usize::try_from(count)
                .ok()
                .filter(|n| (1..=MAX_MORE).contains(n))
                .ok_or(EntryError::ResourceCount(count))?;
            let mut more = Vec::with_capacity(n);
            for _ in 0..n {
                more.push(r.text("more")?);
            }
            entry.more = MoreResources(more);
        }
        if !r.rest.is_empty() {
            return Err(EntryError::TrailingBytes);
        }
        Ok(entry)
    }

    /// The salted commitment to this entry's encoding.
    pub fn commitment(&self, salt: &Salt) -> Hash {
        commitment(salt, &self.encode())
    }

    /// The tree leaf hash for this entry.
    pub fn leaf_hash(&self, salt: &Salt) -> Hash {
        entry_leaf(salt, &self.encode())
    }
}

fn put_text(out: &mut Vec<u8>, text: &EntryText) {
    // EntryText is at most MAX_TEXT_LEN bytes, which always fits u32.
    let len = u32::try_from(text.0.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text.0.as_bytes());
}

/// Cursor over the encoding; every read fails cleanly on truncation.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EntryError> {
        if self.rest.len() < n {
            return Err(EntryError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EntryError> {
        self.take(N)?.try_into().map_err(|_| EntryError::Truncated)
    }

    fn byte(&mut self) -> Result<u8, EntryError> {
        let [byte] = self.array::<1>()?;
        Ok(byte)
    }

    fn text(&mut self, field: &'static str) -> Result<EntryText, EntryError> {
        let len = u32::from_be_bytes(self.array()?);
        // Check the cap before touching the data so a huge prefix cannot cause work.
        let n = usize::try_from(len)
            .ok()
            .filter(|n| *n <= MAX_TEXT_LEN)
            .ok_or(EntryError::FieldTooLong { field, len })?;
        let bytes = self.take(n)?;
        let text = std::str::from_utf8(bytes).map_err(|_| EntryError::NotUtf8 { field })?;
        Ok(EntryText(text.to_owned()))
    }
}

/// Per-entry secret randomness that hides the entry inside its commitment.
///
/// Zeroized on drop; `Debug` never prints it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Salt([u8; 32]);

impl Salt {
    /// Wraps 32 salt bytes (the caller supplies randomness; this crate does no I/O).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, HashError> {
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| HashError::Length(bytes.len()))?;
        Ok(Self(array))
    }

    /// Parses 64 hexadecimal digits, e.g. from a patient's receipt.
    pub fn from_hex(text: &str) -> Result<Self, HashError> {
        decode_hex32(text).map(Self)
    }

    /// The raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hexadecimal, for handing to a patient.
    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }
}

impl fmt::Debug for Salt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Salt(..)")
    }
}

/// SHA-256("medvault-ledger-entry-v1\0" || salt || entry_bytes).
pub fn commitment(salt: &Salt, entry_bytes: &[u8]) -> Hash {
    sha256(&[COMMITMENT_DOMAIN, &salt.0, entry_bytes])
}

/// The tree leaf for an encoded entry: `leaf_hash(commitment(salt, entry_bytes))`.
pub fn entry_leaf(salt: &Salt, entry_bytes: &[u8]) -> Hash {
    leaf_hash(commitment(salt, entry_bytes).as_bytes())
}
