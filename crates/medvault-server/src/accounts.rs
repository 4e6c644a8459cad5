//! Accounts and registration tokens. Every stored row carries a MAC under the integrity key,
//! so a row written or edited straight in the database (a forged admin) is refused on load.
//! Login names and national ids are stored only as keyed blind-index tokens.

use medvault_crypto::keys::{constant_time_eq, hmac_sha256, sha256};
use medvault_crypto::Random;
use medvault_store::{AccountRecord, RegistrationTokenRecord, Store, StoreError, TokenState};

use crate::vault::Keys;

/// Longest accepted login name or national id.
const MAX_NAME: usize = 128;

pub use medvault_policy::Role;

/// What an account of this role must link to: a Patient, a Practitioner, or nothing.
fn link_type(role: Role) -> Option<&'static str> {
    match role {
        Role::Patient => Some("Patient"),
        Role::Physician | Role::Nurse | Role::Receptionist | Role::LabTechnician => {
            Some("Practitioner")
        }
        Role::Admin | Role::Auditor => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("storage error")]
    Store(#[from] StoreError),
    #[error("an identity record failed its integrity check and was refused")]
    Forged,
    #[error("the registration token is unknown, used, revoked or expired")]
    BadToken,
    #[error(
        "this login name or national id is already registered (if it is the national id, the registration token is now spent)"
    )]
    Taken,
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("not allowed")]
    Forbidden,
    #[error("no such account")]
    NotFound,
    #[error("cryptographic failure")]
    Crypto,
}

/// An account whose row passed its integrity check.
#[derive(Clone, Debug)]
pub struct Account {
    record: AccountRecord,
    role: Role,
    machine: bool,
}

impl Account {
    /// A machine client as a principal: its role and link, nothing to log in with. Never
    /// stored as an account (the client row, MAC'd on its own, is the source).
    pub(crate) fn machine(id: &str, role: Role, link: &str, disabled: bool) -> Account {
        Account {
            record: AccountRecord {
                id: id.into(),
                login: [0; 16],
                national_id: [0; 16],
                role: role.as_str().into(),
                link: link.into(),
                disabled,
                generation: 0,
                password_file: None,
                key_bundle: None,
                mac: [0; 32],
            },
            role,
            machine: true,
        }
    }

    pub fn id(&self) -> &str {
        &self.record.id
    }
    pub fn role(&self) -> Role {
        self.role
    }
    /// `Practitioner/<id>`, `Patient/<id>` or empty.
    pub fn link(&self) -> &str {
        &self.record.link
    }
    pub fn disabled(&self) -> bool {
        self.record.disabled
    }
    /// The blind-index token of the login name (compare with `login_token`).
    pub fn login_token(&self) -> &[u8; 16] {
        &self.record.login
    }
    /// True for a machine client acting as a principal (not a person).
    pub fn is_machine(&self) -> bool {
        self.machine
    }
    pub fn generation(&self) -> i64 {
        self.record.generation
    }
    pub fn password_file(&self) -> Option<&[u8]> {
        self.record.password_file.as_deref()
    }
    pub fn key_bundle(&self) -> Option<&[u8]> {
        self.record.key_bundle.as_deref()
    }
}

/// Append `bytes` with its length before it (u64, big-endian): how the identity rows' MACs
/// (accounts, tokens, clients, grants, refresh tokens) and the replay cache's keys frame
/// variable-length fields, so no two field lists share an encoding.
pub(crate) fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn push_opt(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            push_field(out, b);
        }
    }
}

/// The MAC of every account column but the MAC itself, in a length-prefixed encoding.
fn account_mac(keys: &Keys, r: &AccountRecord) -> [u8; 32] {
    let mut m = b"medvault/account/v1".to_vec();
    push_field(&mut m, r.id.as_bytes());
    push_field(&mut m, &r.login);
    push_field(&mut m, &r.national_id);
    push_field(&mut m, r.role.as_bytes());
    push_field(&mut m, r.link.as_bytes());
    m.push(u8::from(r.disabled));
    m.extend_from_slice(&r.generation.to_be_bytes());
    push_opt(&mut m, r.password_file.as_deref());
    push_opt(&mut m, r.key_bundle.as_deref());
    hmac_sha256(keys.integrity(), &m)
}

fn token_mac(keys: &Keys, t: &RegistrationTokenRecord) -> [u8; 32] {
    let mut m = b"medvault/registration-token/v1".to_vec();
    push_field(&mut m, &t.hash);
    push_field(&mut m, t.role.as_bytes());
    push_field(&mut m, t.link.as_bytes());
    push_field(&mut m, t.issued_by.as_bytes());
    m.extend_from_slice(&t.expires_ms.to_be_bytes());
    push_field(&mut m, t.state.as_str().as_bytes());
    // Added with password resets; tokens without one keep their original MAC.
    if !t.account.is_empty() {
        m.extend_from_slice(b"|reset");
        push_field(&mut m, t.account.as_bytes());
    }
    hmac_sha256(keys.integrity(), &m)
}

/// Check a loaded account row; a bad MAC or an unknown role is a forgery.
fn verified(keys: &Keys, record: AccountRecord) -> Result<Account, AccountError> {
    let role = Role::from_code(&record.role);
    match role {
        Some(role) if constant_time_eq(&account_mac(keys, &record), &record.mac) => Ok(Account {
            record,
            role,
            machine: false,
        }),
        _ => {
            // The id is not PHI; it tells the operator which row to look at.
            tracing::error!(account = %record.id, "account row failed its integrity check");
            Err(AccountError::Forged)
        }
    }
}

fn verified_token(
    keys: &Keys,
    t: RegistrationTokenRecord,
) -> Result<RegistrationTokenRecord, AccountError> {
    if constant_time_eq(&token_mac(keys, &t), &t.mac) {
        Ok(t)
    } else {
        tracing::error!("registration token row failed its integrity check");
        Err(AccountError::Forged)
    }
}

fn normalize(text: &str, what: &'static str) -> Result<String, AccountError> {
    let t = text.trim().to_lowercase();
    if t.is_empty() || t.len() > MAX_NAME || t.chars().any(char::is_control) {
        return Err(AccountError::Invalid(what));
    }
    Ok(t)
}

/// Binds the two registration steps: `start` answers for one login name (OPAQUE's credential
/// identifier), so `finish` must be for the same token and the same name, or the account
/// could never log in.
pub fn registration_binding(
    keys: &Keys,
    token: &str,
    login: &str,
) -> Result<[u8; 32], AccountError> {
    let mut m = b"medvault/registration-binding/v1".to_vec();
    push_field(&mut m, &sha256(token.trim().as_bytes()));
    push_field(&mut m, normalize(login, "login name")?.as_bytes());
    Ok(hmac_sha256(keys.integrity(), &m))
}

/// A login name as OPAQUE and the index see it (trimmed, lowercase), or `Invalid`.
pub fn normalized_login(login: &str) -> Result<String, AccountError> {
    normalize(login, "login name")
}

/// The blind-index token of a login name (case-insensitive).
pub fn login_token(keys: &Keys, login: &str) -> Result<[u8; 16], AccountError> {
    Ok(keys
        .blind()
        .token("account.login", &normalize(login, "login name")?))
}

fn national_token(keys: &Keys, national_id: &str) -> Result<[u8; 16], AccountError> {
    Ok(keys.blind().token(
        "account.national-id",
        &normalize(national_id, "national id")?,
    ))
}

fn random_text(rng: &dyn Random, prefix: &str) -> Result<String, AccountError> {
    let mut bytes = [0u8; 24];
    rng.fill(&mut bytes).map_err(|_| AccountError::Crypto)?;
    Ok(format!("{prefix}{}", crate::vault::hex(&bytes)))
}

/// Load an account by id.
pub fn load(store: &dyn Store, keys: &Keys, id: &str) -> Result<Option<Account>, AccountError> {
    store.account(id)?.map(|r| verified(keys, r)).transpose()
}

/// Load an account by login name.
pub fn load_by_login(
    store: &dyn Store,
    keys: &Keys,
    login: &str,
) -> Result<Option<Account>, AccountError> {
    store
        .account_by_login(&login_token(keys, login)?)?
        .map(|r| verified(keys, r))
        .transpose()
}

/// Every account; any forged row fails the whole listing (and is logged).
pub fn list(store: &dyn Store, keys: &Keys) -> Result<Vec<Account>, AccountError> {
    store
        .accounts()?
        .into_iter()
        .map(|r| verified(keys, r))
        .collect()
}

/// Who may issue a registration token for `role`: admins for any role; receptionists for
/// patients (bound to an existing Patient, which the caller checks).
fn may_issue(issuer: &Account, role: Role) -> bool {
    !issuer.disabled()
        && match issuer.role() {
            Role::Admin => true,
            Role::Receptionist => role == Role::Patient,
            _ => false,
        }
}

/// A lab technician's link: `Practitioner/<id>|Organization/<lab>` (who they are, and the
/// lab orders must be addressed to). Returns the two bare ids.
pub fn lab_link(link: &str) -> Option<(&str, &str)> {
    let (practitioner, lab) = link.split_once('|')?;
    let practitioner = practitioner.strip_prefix("Practitioner/")?;
    let lab = lab.strip_prefix("Organization/")?;
    (medvault_fhir::is_valid_id(practitioner) && medvault_fhir::is_valid_id(lab))
        .then_some((practitioner, lab))
}

pub(crate) fn check_link(role: Role, link: &str) -> Result<(), AccountError> {
    if role == Role::LabTechnician {
        return lab_link(link).map(|_| ()).ok_or(AccountError::Invalid(
            "link for a lab technician: Practitioner/ID|Organization/LAB",
        ));
    }
    let ok = match link_type(role) {
        None => link.is_empty(),
        Some(t) => link
            .strip_prefix(t)
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(medvault_fhir::is_valid_id),
    };
    if ok {
        Ok(())
    } else {
        Err(AccountError::Invalid("link for this role"))
    }
}

/// Issue a one-time registration token for `role` (linked to `link`), valid for `ttl_ms`.
/// Returns the token text, shown once; only its hash is stored.
#[allow(clippy::too_many_arguments)]
pub fn issue_token(
    store: &dyn Store,
    keys: &Keys,
    rng: &dyn Random,
    now_ms: i64,
    issuer: &Account,
    role: Role,
    link: &str,
    ttl_ms: i64,
) -> Result<String, AccountError> {
    if !may_issue(issuer, role) {
        return Err(AccountError::Forbidden);
    }
    check_link(role, link)?;
    if !(60_000..=30 * 24 * 3_600_000).contains(&ttl_ms) {
        return Err(AccountError::Invalid("token lifetime"));
    }
    let text = random_text(rng, "mvr_")?;
    let mut t = RegistrationTokenRecord {
        hash: sha256(text.as_bytes()),
        role: role.as_str().into(),
        link: link.into(),
        issued_by: issuer.id().into(),
        expires_ms: now_ms + ttl_ms,
        state: TokenState::Open,
        account: String::new(),
        mac: [0; 32],
    };
    t.mac = token_mac(keys, &t);
    store.insert_registration_token(&t)?;
    Ok(text)
}

/// Revoke an open registration token.
pub fn revoke_token(
    store: &dyn Store,
    keys: &Keys,
    issuer: &Account,
    token: &str,
) -> Result<(), AccountError> {
    let t = store
        .registration_token(&sha256(token.as_bytes()))?
        .ok_or(AccountError::BadToken)?;
    let mut t = verified_token(keys, t)?;
    let role = Role::from_code(&t.role).ok_or(AccountError::Forged)?;
    if !may_issue(issuer, role) {
        return Err(AccountError::Forbidden);
    }
    t.state = TokenState::Revoked;
    t.mac = token_mac(keys, &t);
    store
        .update_registration_token(&t, TokenState::Open)
        .map_err(|e| match e {
            StoreError::Conflict => AccountError::BadToken,
            e => e.into(),
        })
}

/// What a registration will create, once the token is checked.
pub struct Grant {
    pub role: Role,
    pub link: String,
    /// The account whose password this token resets, if it is a reset token.
    pub reset: Option<String>,
    token: Option<RegistrationTokenRecord>,
    bootstrap_hash: Option<[u8; 32]>,
}

/// Check a registration token (or `init`'s bootstrap token) without using it.
pub fn check_token(
    store: &dyn Store,
    keys: &Keys,
    now_ms: i64,
    token: &str,
) -> Result<Grant, AccountError> {
    let hash = sha256(token.trim().as_bytes());
    if token.starts_with("mvb_") {
        // Only good for the very first account; the store re-checks atomically.
        if store.account_count()? != 0 {
            return Err(AccountError::BadToken);
        }
        return Ok(Grant {
            role: Role::Admin,
            link: String::new(),
            reset: None,
            token: None,
            bootstrap_hash: Some(hash),
        });
    }
    let t = store
        .registration_token(&hash)?
        .ok_or(AccountError::BadToken)?;
    let t = verified_token(keys, t)?;
    if t.state != TokenState::Open || now_ms >= t.expires_ms {
        return Err(AccountError::BadToken);
    }
    let role = Role::from_code(&t.role).ok_or(AccountError::Forged)?;
    Ok(Grant {
        role,
        link: t.link.clone(),
        reset: (!t.account.is_empty()).then(|| t.account.clone()),
        token: Some(t),
        bootstrap_hash: None,
    })
}

/// Create the account a checked token grants, using the token up in the same transaction.
#[allow(clippy::too_many_arguments)]
pub fn register(
    store: &dyn Store,
    keys: &Keys,
    rng: &dyn Random,
    grant: Grant,
    login: &str,
    national_id: &str,
    password_file: Vec<u8>,
    key_bundle: Option<Vec<u8>>,
) -> Result<Account, AccountError> {
    if grant.reset.is_some() {
        return reset(
            store,
            keys,
            grant,
            login,
            national_id,
            password_file,
            key_bundle,
        );
    }
    // One account per patient record: a second token for the same Patient (e.g. issued
    // by the front desk to itself) cannot open the record again.
    if grant.role == Role::Patient && list(store, keys)?.iter().any(|a| a.link() == grant.link) {
        return Err(AccountError::Taken);
    }
    let mut id_bytes = [0u8; 16];
    rng.fill(&mut id_bytes).map_err(|_| AccountError::Crypto)?;
    let mut record = AccountRecord {
        id: crate::vault::hex(&id_bytes),
        login: login_token(keys, login)?,
        national_id: national_token(keys, national_id)?,
        role: grant.role.as_str().into(),
        link: grant.link.clone(),
        disabled: false,
        generation: 1,
        password_file: Some(password_file),
        key_bundle,
        mac: [0; 32],
    };
    record.mac = account_mac(keys, &record);
    let stored = match (&grant.token, &grant.bootstrap_hash) {
        (Some(t), _) => {
            let mut used = t.clone();
            used.state = TokenState::Used;
            used.mac = token_mac(keys, &used);
            store.insert_account(&record, Some(&used))
        }
        (None, Some(hash)) => store.insert_first_account(&record, hash),
        (None, None) => return Err(AccountError::BadToken),
    };
    match stored {
        Ok(()) => Ok(Account {
            record,
            role: grant.role,
            machine: false,
        }),
        // Either the login/national id is taken or the token was used meanwhile; tell which.
        Err(StoreError::Conflict) => {
            if store.account_by_login(&record.login)?.is_some() {
                Err(AccountError::Taken)
            } else if grant.bootstrap_hash.is_some() {
                Err(AccountError::BadToken)
            } else {
                match check_token_state(store, &grant) {
                    // The national id is someone's already. That spends the token, or its
                    // holder could ask again and again, with new login names, whether a
                    // given national id has an account here. Only the request that spends
                    // it hears so: others racing on the same token find it spent.
                    Ok(true) => {
                        if spend(store, keys, &grant)? {
                            Err(AccountError::Taken)
                        } else {
                            Err(AccountError::BadToken)
                        }
                    }
                    _ => Err(AccountError::BadToken),
                }
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Revoke the grant's token, if it is still open: a refused registration that must not be
/// repeated with the same token. `true` if this call revoked it; `false` if it was used or
/// revoked already (by a request racing this one, say).
fn spend(store: &dyn Store, keys: &Keys, grant: &Grant) -> Result<bool, AccountError> {
    let Some(t) = &grant.token else {
        return Ok(false);
    };
    let mut spent = t.clone();
    spent.state = TokenState::Revoked;
    spent.mac = token_mac(keys, &spent);
    match store.update_registration_token(&spent, TokenState::Open) {
        Ok(()) => Ok(true),
        Err(StoreError::Conflict) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn check_token_state(store: &dyn Store, grant: &Grant) -> Result<bool, AccountError> {
    let Some(t) = &grant.token else {
        return Ok(false);
    };
    Ok(store
        .registration_token(&t.hash)?
        .is_some_and(|now| now.state == TokenState::Open))
}

/// Apply `change` to an account (role, disabled, password file, key bundle) as one new
/// generation; a concurrent change makes this a `Store(Conflict)`.
pub fn update(
    store: &dyn Store,
    keys: &Keys,
    account: &Account,
    change: impl FnOnce(&mut AccountRecord),
) -> Result<Account, AccountError> {
    let mut record = account.record.clone();
    change(&mut record);
    record.id = account.record.id.clone();
    record.generation = account.record.generation + 1;
    let role = Role::from_code(&record.role).ok_or(AccountError::Invalid("role"))?;
    check_link(role, &record.link)?;
    record.mac = account_mac(keys, &record);
    store.update_account(&record, account.record.generation)?;
    Ok(Account {
        record,
        role,
        machine: false,
    })
}

/// Issue a one-time token with which the holder of `target` sets a new password (the old
/// one stops working once it is used). Admins only; valid for `ttl_ms`.
#[allow(clippy::too_many_arguments)]
pub fn issue_reset_token(
    store: &dyn Store,
    keys: &Keys,
    rng: &dyn Random,
    now_ms: i64,
    issuer: &Account,
    target: &Account,
    ttl_ms: i64,
) -> Result<String, AccountError> {
    if issuer.disabled() || issuer.role() != Role::Admin {
        return Err(AccountError::Forbidden);
    }
    if !(60_000..=7 * 24 * 3_600_000).contains(&ttl_ms) {
        return Err(AccountError::Invalid("token lifetime"));
    }
    let text = random_text(rng, "mvr_")?;
    let mut t = RegistrationTokenRecord {
        hash: sha256(text.as_bytes()),
        role: target.role().as_str().into(),
        link: target.link().into(),
        issued_by: issuer.id().into(),
        expires_ms: now_ms + ttl_ms,
        state: TokenState::Open,
        account: target.id().into(),
        mac: [0; 32],
    };
    t.mac = token_mac(keys, &t);
    store.insert_registration_token(&t)?;
    Ok(text)
}

/// Use a reset token: the login name and national id must be the account's own. The token
/// is used up first, before they are compared, so a wrong login name or national id spends
/// it too: its holder gets one try (even with requests in parallel), not as many guesses
/// at the account's national id as they care to make. Then the new password file (and key
/// bundle) replace the old.
fn reset(
    store: &dyn Store,
    keys: &Keys,
    grant: Grant,
    login: &str,
    national_id: &str,
    password_file: Vec<u8>,
    key_bundle: Option<Vec<u8>>,
) -> Result<Account, AccountError> {
    let (Some(id), Some(token)) = (&grant.reset, &grant.token) else {
        return Err(AccountError::BadToken);
    };
    let account = load(store, keys, id)?.ok_or(AccountError::BadToken)?;
    let mut used = token.clone();
    used.state = TokenState::Used;
    used.mac = token_mac(keys, &used);
    store
        .update_registration_token(&used, TokenState::Open)
        .map_err(|e| match e {
            StoreError::Conflict => AccountError::BadToken,
            e => e.into(),
        })?;
    let same_login = constant_time_eq(&login_token(keys, login)?, &account.record.login);
    let same_person = constant_time_eq(
        &national_token(keys, national_id)?,
        &account.record.national_id,
    );
    if !(same_login && same_person) {
        return Err(AccountError::BadToken);
    }
    let updated = update(store, keys, &account, |r| {
        r.password_file = Some(password_file);
        r.key_bundle = key_bundle;
    })?;
    // Sessions of the old password end: its refresh tokens are revoked.
    store.revoke_refresh_account(updated.id())?;
    Ok(updated)
}

/// What an admin may change on an account.
#[derive(Debug, Default, Clone)]
pub struct AccountChange {
    pub role: Option<Role>,
    pub link: Option<String>,
    pub disabled: Option<bool>,
}

/// An admin changes another account's role, link or disabled flag; it applies from the
/// next request (every request reloads the account) and ends its refresh tokens. Admins
/// cannot change their own account (so the last admin cannot lock everyone out by mistake).
pub fn admin_update(
    store: &dyn Store,
    keys: &Keys,
    admin: &Account,
    target_id: &str,
    change: AccountChange,
) -> Result<Account, AccountError> {
    if admin.disabled() || admin.role() != Role::Admin {
        return Err(AccountError::Forbidden);
    }
    if admin.id() == target_id {
        return Err(AccountError::Invalid(
            "change: admins cannot change their own account",
        ));
    }
    let target = load(store, keys, target_id)?.ok_or(AccountError::NotFound)?;
    let updated = update(store, keys, &target, |r| {
        if let Some(role) = change.role {
            r.role = role.as_str().into();
        }
        if let Some(link) = change.link {
            r.link = link;
        }
        if let Some(disabled) = change.disabled {
            r.disabled = disabled;
        }
    })?;
    store.revoke_refresh_account(updated.id())?;
    Ok(updated)
}
