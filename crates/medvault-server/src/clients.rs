//! Machine clients (SMART Backend Services): registered by an admin with a name, a role, a
//! link and a public key; they obtain access tokens with a signed assertion
//! (`private_key_jwt`, RFC 7523). Rows carry a MAC under the integrity key like accounts.
//! Plain bearer tokens only for clients registered with `danger_bearer`.

use medvault_crypto::jose::PublicJwk;
use medvault_crypto::keys::{constant_time_eq, hmac_sha256};
use medvault_crypto::Random;
use medvault_store::{ClientRecord, Store, StoreError};

use crate::accounts::{Account, AccountError, Role};
use crate::vault::Keys;

/// A client whose row passed its integrity check.
#[derive(Clone, Debug)]
pub struct Client {
    record: ClientRecord,
    role: Role,
    jwk: PublicJwk,
}

impl Client {
    pub fn id(&self) -> &str {
        &self.record.id
    }
    pub fn name(&self) -> &str {
        &self.record.name
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn link(&self) -> &str {
        &self.record.link
    }
    pub fn bearer(&self) -> bool {
        self.record.bearer
    }
    pub fn disabled(&self) -> bool {
        self.record.disabled
    }
    pub fn jwk(&self) -> &PublicJwk {
        &self.jwk
    }
    /// The client as a policy principal (role and link; no password, no key bundle).
    pub fn as_account(&self) -> Account {
        Account::machine(
            &self.record.id,
            self.role,
            &self.record.link,
            self.record.disabled,
        )
    }
}

fn client_mac(keys: &Keys, r: &ClientRecord) -> [u8; 32] {
    let mut m = b"medvault/client/v1".to_vec();
    for text in [&r.id, &r.name, &r.role, &r.link, &r.jwk] {
        crate::accounts::push_field(&mut m, text.as_bytes());
    }
    m.push(u8::from(r.bearer));
    m.push(u8::from(r.disabled));
    m.extend_from_slice(&r.generation.to_be_bytes());
    hmac_sha256(keys.integrity(), &m)
}

fn verified(keys: &Keys, record: ClientRecord) -> Result<Client, AccountError> {
    let role = Role::from_code(&record.role);
    let jwk = PublicJwk::from_json_str(&record.jwk).ok();
    match (role, jwk) {
        (Some(role), Some(jwk)) if constant_time_eq(&client_mac(keys, &record), &record.mac) => {
            Ok(Client { record, role, jwk })
        }
        _ => {
            tracing::error!(client = %record.id, "client row failed its integrity check");
            Err(AccountError::Forged)
        }
    }
}

/// A client name: 1-64 of `A-Z a-z 0-9 . _ -`.
fn check_name(name: &str) -> Result<(), AccountError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    ok.then_some(()).ok_or(AccountError::Invalid(
        "client name (1-64 of A-Z a-z 0-9 . _ -)",
    ))
}

/// What an admin registers.
pub struct NewClient<'a> {
    pub name: &'a str,
    pub role: Role,
    pub link: &'a str,
    /// The client's public key as a JWK (JSON text); private members are refused.
    pub jwk: &'a str,
    /// Issue plain bearer tokens (no proof of possession): a named risk.
    pub danger_bearer: bool,
}

/// Register a client (admins only). Clients act as staff: never as admins or patients.
pub fn register(
    store: &dyn Store,
    keys: &Keys,
    rng: &dyn Random,
    admin: &Account,
    new: &NewClient<'_>,
) -> Result<Client, AccountError> {
    if admin.disabled() || admin.role() != Role::Admin {
        return Err(AccountError::Forbidden);
    }
    check_name(new.name)?;
    if matches!(new.role, Role::Admin | Role::Patient) {
        return Err(AccountError::Invalid(
            "role for a client (not admin or patient)",
        ));
    }
    crate::accounts::check_link(new.role, new.link)?;
    let jwk = PublicJwk::from_json_str(new.jwk)
        .map_err(|_| AccountError::Invalid("jwk (a public EC P-256/P-384, Ed25519 or RSA key)"))?;
    let mut id = [0u8; 16];
    rng.fill(&mut id).map_err(|_| AccountError::Crypto)?;
    let mut record = ClientRecord {
        id: format!("client-{}", crate::vault::hex(&id)),
        name: new.name.into(),
        role: new.role.as_str().into(),
        link: new.link.into(),
        jwk: jwk.to_json_value().to_string(),
        bearer: new.danger_bearer,
        disabled: false,
        generation: 1,
        mac: [0; 32],
    };
    record.mac = client_mac(keys, &record);
    store.insert_client(&record).map_err(|e| match e {
        StoreError::Conflict => AccountError::Taken,
        e => e.into(),
    })?;
    Ok(Client {
        record,
        role: new.role,
        jwk,
    })
}

/// Load a client by id.
pub fn load(store: &dyn Store, keys: &Keys, id: &str) -> Result<Option<Client>, AccountError> {
    store.client(id)?.map(|r| verified(keys, r)).transpose()
}

/// Every client; a forged row fails the listing.
pub fn list(store: &dyn Store, keys: &Keys) -> Result<Vec<Client>, AccountError> {
    store
        .clients()?
        .into_iter()
        .map(|r| verified(keys, r))
        .collect()
}

/// Disable or enable a client (admins only); applies to its next request.
pub fn set_disabled(
    store: &dyn Store,
    keys: &Keys,
    admin: &Account,
    id: &str,
    disabled: bool,
) -> Result<Client, AccountError> {
    if admin.disabled() || admin.role() != Role::Admin {
        return Err(AccountError::Forbidden);
    }
    let client = load(store, keys, id)?.ok_or(AccountError::NotFound)?;
    let mut record = client.record.clone();
    record.disabled = disabled;
    record.generation += 1;
    record.mac = client_mac(keys, &record);
    store.update_client(&record, client.record.generation)?;
    Ok(Client { record, ..client })
}
