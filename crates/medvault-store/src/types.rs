//! Plain records exchanged between the server and a `Store`.

/// A 16-byte keyed blind-index token.
pub type Token = [u8; 16];

/// The sealed-vault configuration row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultRecord {
    /// Identifies the current share set (shares of an older set are refused by name).
    pub set_id: [u8; 8],
    pub threshold: u8,
    pub share_count: u8,
    /// Lets the server verify a reconstructed root key.
    pub check_value: [u8; 32],
    /// The keyring envelope, wrapped under a key derived from the root key.
    pub keyring: Vec<u8>,
    /// Share commitments `(x, commitment)` of the current set.
    pub commitments: Vec<(u8, [u8; 32])>,
    /// Incremented on every rotate/rekey so concurrent changes cannot both win.
    pub generation: i64,
}

/// A wrapped data key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataKeyRecord {
    pub owner: Vec<u8>,
    pub kek_version: u32,
    pub wrapped: Vec<u8>,
}

/// Where a version's envelope lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// The envelope itself, in the database row.
    Inline(Vec<u8>),
    /// The name of an object in the blob store holding the envelope.
    Blob(String),
}

/// One stored version of a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRecord {
    pub rtype: String,
    pub id: String,
    pub version: i64,
    /// Milliseconds since the Unix epoch (server clock).
    pub updated_ms: i64,
    /// Keyed token naming the data key (and patient) this version is encrypted under.
    pub owner: Vec<u8>,
    /// `None` for a deletion.
    pub body: Option<Body>,
}

impl VersionRecord {
    pub fn is_deleted(&self) -> bool {
        self.body.is_none()
    }
}

/// A version to append, with its precondition and the index tokens of its content.
#[derive(Clone, Debug)]
pub struct NewVersion {
    pub record: VersionRecord,
    /// `None`: the resource must not exist yet. `Some(v)`: its current version must be `v`.
    pub expected_current: Option<i64>,
    /// Blind-index tokens of this version (ignored for deletions, which drop all tokens).
    pub tokens: Vec<Token>,
}

impl NewVersion {
    /// An empty value to leave behind when moving a version out of a larger structure.
    pub fn placeholder() -> NewVersion {
        NewVersion {
            record: VersionRecord {
                rtype: String::new(),
                id: String::new(),
                version: 0,
                updated_ms: 0,
                owner: Vec::new(),
                body: None,
            },
            expected_current: None,
            tokens: Vec::new(),
        }
    }
}

/// A search over current, non-deleted resources of one type.
#[derive(Clone, Debug, Default)]
pub struct StoreQuery {
    pub rtype: String,
    /// AND over the outer list, OR within each inner list.
    pub all_of: Vec<Vec<Token>>,
    /// Restrict to these ids (`_id`).
    pub ids: Option<Vec<String>>,
    /// Inclusive lower bound on `updated_ms`.
    pub updated_from_ms: Option<i64>,
    /// Exclusive upper bound on `updated_ms`.
    pub updated_until_ms: Option<i64>,
}

/// A page of search results.
#[derive(Clone, Debug)]
pub struct SearchPage {
    pub records: Vec<VersionRecord>,
    pub total: u64,
}

/// A page of history entries, newest first.
#[derive(Clone, Debug)]
pub struct HistoryPage {
    pub records: Vec<VersionRecord>,
    pub total: u64,
}

/// One audit-ledger entry as stored: its position, its tree leaf hash and its encrypted body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRecord {
    pub index: u64,
    pub leaf: [u8; 32],
    pub envelope: Vec<u8>,
}

/// The hash of a complete perfect subtree of the ledger (level >= 1; level 0 is the leaves).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerNode {
    pub level: u32,
    pub index: u64,
    pub hash: [u8; 32],
}

/// A signed checkpoint of the ledger at `size` entries (the note's text, as signed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointRecord {
    pub size: u64,
    pub note: String,
}

/// Ledger rows to append in the same transaction as the action they record.
#[derive(Clone, Debug, Default)]
pub struct LedgerAppend {
    /// New entries with consecutive indexes, the first equal to the ledger's current size.
    pub entries: Vec<LedgerRecord>,
    /// The perfect subtrees (level >= 1) these entries complete.
    pub nodes: Vec<LedgerNode>,
    /// A checkpoint of the tree including these entries, if one is due; its size must be
    /// the ledger's size after the append.
    pub checkpoint: Option<CheckpointRecord>,
}

impl LedgerAppend {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.nodes.is_empty() && self.checkpoint.is_none()
    }
}

/// An account row. `mac` authenticates every other field under the server's integrity key;
/// the store only keeps it. Its `Debug` leaves out the blind tokens, the password file and
/// the key bundle, so an account printed into a log gives nothing to attack offline.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountRecord {
    pub id: String,
    /// Blind-index token of the normalized login name.
    pub login: [u8; 16],
    /// Blind-index token of the national id (one account per person).
    pub national_id: [u8; 16],
    pub role: String,
    /// `Practitioner/<id>`, `Patient/<id>` or empty.
    pub link: String,
    pub disabled: bool,
    /// Incremented on every change; updates name the generation they replace.
    pub generation: i64,
    /// The OPAQUE password file, once registered.
    pub password_file: Option<Vec<u8>>,
    /// The user's key bundle, encrypted by the client under its OPAQUE export key.
    pub key_bundle: Option<Vec<u8>>,
    pub mac: [u8; 32],
}

impl std::fmt::Debug for AccountRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = |b: &Option<Vec<u8>>| b.as_ref().map(Vec::len);
        f.debug_struct("AccountRecord")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("link", &self.link)
            .field("disabled", &self.disabled)
            .field("generation", &self.generation)
            .field("password_file_len", &len(&self.password_file))
            .field("key_bundle_len", &len(&self.key_bundle))
            .finish_non_exhaustive()
    }
}

/// Where a one-time token (a registration or refresh token) stands. It only ever leaves
/// `Open`, and the store changes it only from the state the caller expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenState {
    /// Not yet used: it can be presented once.
    Open,
    /// Presented and honoured (a registration made, a refresh rotated).
    Used,
    /// Withdrawn before use (by its issuer, a logout, or a refused registration that must
    /// not be repeated with it).
    Revoked,
}

impl TokenState {
    /// The stored text (also the bytes a registration token's MAC covers).
    pub const fn as_str(self) -> &'static str {
        match self {
            TokenState::Open => "open",
            TokenState::Used => "used",
            TokenState::Revoked => "revoked",
        }
    }

    /// The state a stored text names; `None` for anything else (a damaged row).
    pub fn parse(s: &str) -> Option<TokenState> {
        [TokenState::Open, TokenState::Used, TokenState::Revoked]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// A registration token row (only the token's hash is stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationTokenRecord {
    pub hash: [u8; 32],
    pub role: String,
    pub link: String,
    pub issued_by: String,
    pub expires_ms: i64,
    pub state: TokenState,
    /// Empty for a new account; else the id of the account whose password this token
    /// resets.
    pub account: String,
    pub mac: [u8; 32],
}

/// A break-glass grant row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRecord {
    /// The clinician's account.
    pub account: String,
    /// Blind-index token of the patient id.
    pub patient: [u8; 16],
    pub issued_ms: i64,
    pub expires_ms: i64,
    pub mac: [u8; 32],
}

/// A refresh token row (only the token's hash is stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    pub hash: [u8; 32],
    /// Shared by every rotation of one login.
    pub family: [u8; 16],
    pub account: String,
    /// Thumbprint of the DPoP key the token is bound to.
    pub jkt: String,
    pub issued_ms: i64,
    pub expires_ms: i64,
    /// Not covered by the MAC (it only ever leaves `Open`).
    pub state: TokenState,
    pub mac: [u8; 32],
}

/// A machine client row (SMART Backend Services).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    pub link: String,
    /// The client's public key (a JWK, JSON text).
    pub jwk: String,
    /// Whether plain bearer tokens are issued to it (`--danger-bearer`).
    pub bearer: bool,
    pub disabled: bool,
    pub generation: i64,
    pub mac: [u8; 32],
}
