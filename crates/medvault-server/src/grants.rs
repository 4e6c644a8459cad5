//! Break-glass grants: a clinician's time-limited emergency access to one chart. Rows carry a
//! MAC under the integrity key (a grant planted in the database is ignored and logged), and
//! name the patient only by a keyed blind-index token.

use medvault_crypto::keys::{constant_time_eq, hmac_sha256};
use medvault_store::{GrantRecord, Store, StoreError};

use crate::vault::Keys;

fn patient_token(keys: &Keys, patient: &str) -> [u8; 16] {
    keys.blind().token("break-glass.patient", patient)
}

fn grant_mac(keys: &Keys, g: &GrantRecord) -> [u8; 32] {
    let mut m = b"medvault/break-glass-grant/v1".to_vec();
    crate::accounts::push_field(&mut m, g.account.as_bytes());
    m.extend_from_slice(&g.patient);
    m.extend_from_slice(&g.issued_ms.to_be_bytes());
    m.extend_from_slice(&g.expires_ms.to_be_bytes());
    hmac_sha256(keys.integrity(), &m)
}

/// Record a grant for `account` on `patient` from `now_ms` until `expires_ms`.
pub fn insert(
    store: &dyn Store,
    keys: &Keys,
    account: &str,
    patient: &str,
    now_ms: i64,
    expires_ms: i64,
) -> Result<(), StoreError> {
    let mut g = GrantRecord {
        account: account.into(),
        patient: patient_token(keys, patient),
        issued_ms: now_ms,
        expires_ms,
        mac: [0; 32],
    };
    g.mac = grant_mac(keys, &g);
    store.insert_grant(&g)
}

/// When the latest active grant of `account` on `patient` ends, if there is one. Rows that
/// fail their MAC grant nothing (and are logged).
pub fn active_until(
    store: &dyn Store,
    keys: &Keys,
    account: &str,
    patient: &str,
    now_ms: i64,
) -> Result<Option<i64>, StoreError> {
    let rows = store.active_grants(account, &patient_token(keys, patient), now_ms)?;
    Ok(rows
        .into_iter()
        .filter(|g| {
            let ok = constant_time_eq(&grant_mac(keys, g), &g.mac);
            if !ok {
                tracing::error!(account = %g.account, "break-glass grant row failed its integrity check; ignored");
            }
            ok
        })
        .map(|g| g.expires_ms)
        .max())
}
