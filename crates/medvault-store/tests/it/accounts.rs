//! Accounts, registration tokens and the bootstrap token: uniqueness, one-time use and
//! optimistic updates, each atomic; break-glass grants by expiry; refresh-token rotation and
//! revocation.

use medvault_store::{
    AccountRecord, ClientRecord, GrantRecord, RefreshTokenRecord, RegistrationTokenRecord,
    SqliteStore, Store, StoreError, TokenState,
};

use crate::common::{assert_conflict, db_path, open_store, raw, vault_record};

fn account(id: &str, login: u8, national: u8, role: &str) -> AccountRecord {
    AccountRecord {
        id: id.into(),
        login: [login; 16],
        national_id: [national; 16],
        role: role.into(),
        link: format!("Practitioner/{id}"),
        disabled: false,
        generation: 1,
        password_file: Some(vec![1, 2, 3]),
        key_bundle: None,
        mac: [id.len() as u8; 32],
    }
}

fn token(hash: u8, state: TokenState) -> RegistrationTokenRecord {
    RegistrationTokenRecord {
        hash: [hash; 32],
        role: "physician".into(),
        link: "Practitioner/d1".into(),
        issued_by: "admin-1".into(),
        expires_ms: 1_000,
        state,
        account: String::new(),
        mac: [hash ^ 0xFF; 32],
    }
}

fn with_vault() -> (tempfile::TempDir, SqliteStore) {
    let (dir, store) = open_store();
    store
        .init_vault(&vault_record(1, &[1]), &[0xB0; 32])
        .unwrap();
    (dir, store)
}

#[test]
fn the_bootstrap_token_creates_the_first_account_once() {
    let (_dir, store) = with_vault();
    // A wrong token hash creates nothing.
    assert_conflict(store.insert_first_account(&account("a1", 1, 1, "admin"), &[0xB1; 32]));
    assert!(store.accounts().unwrap().is_empty());
    store
        .insert_first_account(&account("a1", 1, 1, "admin"), &[0xB0; 32])
        .unwrap();
    // Used: a second first account is refused, even with the right token.
    assert_conflict(store.insert_first_account(&account("a2", 2, 2, "admin"), &[0xB0; 32]));
    assert_eq!(
        store.accounts().unwrap(),
        vec![account("a1", 1, 1, "admin")]
    );
}

#[test]
fn a_registration_token_is_consumed_with_the_account_it_creates() {
    let (_dir, store) = with_vault();
    store
        .insert_registration_token(&token(7, TokenState::Open))
        .unwrap();
    assert_conflict(store.insert_registration_token(&token(7, TokenState::Open)));
    store
        .insert_account(
            &account("d1", 1, 1, "physician"),
            Some(&token(7, TokenState::Used)),
        )
        .unwrap();
    assert_eq!(
        store.registration_token(&[7; 32]).unwrap(),
        Some(token(7, TokenState::Used))
    );
    // The token cannot be used twice; the second account is not created.
    assert_conflict(store.insert_account(
        &account("d2", 2, 2, "physician"),
        Some(&token(7, TokenState::Used)),
    ));
    assert_eq!(store.account("d2").unwrap(), None);
    // An unknown token creates nothing either.
    assert_conflict(store.insert_account(
        &account("d3", 3, 3, "physician"),
        Some(&token(9, TokenState::Used)),
    ));
    assert_eq!(store.accounts().unwrap().len(), 1);
}

#[test]
fn one_account_per_login_and_per_national_id() {
    let (_dir, store) = with_vault();
    store
        .insert_registration_token(&token(1, TokenState::Open))
        .unwrap();
    store
        .insert_registration_token(&token(2, TokenState::Open))
        .unwrap();
    store
        .insert_account(&account("a", 1, 1, "nurse"), None)
        .unwrap();
    // Same national id, different login: refused, and the token stays open.
    assert_conflict(store.insert_account(
        &account("b", 2, 1, "nurse"),
        Some(&token(1, TokenState::Used)),
    ));
    assert_eq!(
        store.registration_token(&[1; 32]).unwrap().unwrap().state,
        TokenState::Open
    );
    assert_conflict(store.insert_account(
        &account("c", 1, 3, "nurse"),
        Some(&token(2, TokenState::Used)),
    ));
    assert_conflict(store.insert_account(&account("a", 4, 4, "nurse"), None));
    assert_eq!(store.account_by_login(&[1; 16]).unwrap().unwrap().id, "a");
    assert_eq!(store.account_by_login(&[9; 16]).unwrap(), None);
}

#[test]
fn updates_name_the_generation_they_replace() {
    let (_dir, store) = with_vault();
    store
        .insert_account(&account("a", 1, 1, "nurse"), None)
        .unwrap();
    let mut changed = account("a", 1, 1, "physician");
    changed.generation = 2;
    store.update_account(&changed, 1).unwrap();
    let mut stale = account("a", 1, 1, "admin");
    stale.generation = 2;
    assert_conflict(store.update_account(&stale, 1));
    assert_eq!(store.account("a").unwrap().unwrap().role, "physician");

    store
        .insert_registration_token(&token(5, TokenState::Open))
        .unwrap();
    store
        .update_registration_token(&token(5, TokenState::Revoked), TokenState::Open)
        .unwrap();
    assert_conflict(store.update_registration_token(&token(5, TokenState::Open), TokenState::Open));
}

#[test]
fn the_auth_setup_is_written_once() {
    let (_dir, store) = with_vault();
    assert_eq!(store.auth_setup().unwrap(), None);
    assert_eq!(store.init_auth_setup(b"first").unwrap(), b"first");
    assert_eq!(store.init_auth_setup(b"second").unwrap(), b"first");
    assert_eq!(store.auth_setup().unwrap(), Some(b"first".to_vec()));
}

fn grant(account: &str, patient: u8, expires_ms: i64) -> GrantRecord {
    GrantRecord {
        account: account.into(),
        patient: [patient; 16],
        issued_ms: 0,
        expires_ms,
        mac: [patient; 32],
    }
}

#[test]
fn only_unexpired_grants_of_that_account_and_patient_are_active() {
    let (_dir, store) = with_vault();
    store.insert_grant(&grant("doc", 1, 100)).unwrap();
    store.insert_grant(&grant("doc", 1, 50)).unwrap();
    store.insert_grant(&grant("doc", 2, 100)).unwrap();
    store.insert_grant(&grant("nurse", 1, 100)).unwrap();
    assert_eq!(
        store.active_grants("doc", &[1; 16], 60).unwrap(),
        vec![grant("doc", 1, 100)]
    );
    // Expiry is exclusive: a grant is over at its expiry instant.
    assert!(store
        .active_grants("doc", &[1; 16], 100)
        .unwrap()
        .is_empty());
    assert_eq!(store.active_grants("doc", &[1; 16], 0).unwrap().len(), 2);
}

fn refresh(hash: u8, family: u8, account: &str) -> RefreshTokenRecord {
    RefreshTokenRecord {
        hash: [hash; 32],
        family: [family; 16],
        account: account.into(),
        jkt: "jkt".into(),
        issued_ms: 0,
        expires_ms: 1_000,
        state: TokenState::Open,
        mac: [hash; 32],
    }
}

#[test]
fn a_refresh_token_rotates_once_and_families_revoke_together() {
    let (_dir, store) = with_vault();
    store.insert_refresh_token(&refresh(1, 9, "a")).unwrap();
    assert_conflict(store.insert_refresh_token(&refresh(1, 9, "a")));
    store
        .rotate_refresh_token(&[1; 32], &refresh(2, 9, "a"))
        .unwrap();
    // A used token cannot rotate again, and the failed rotation inserts nothing.
    assert_conflict(store.rotate_refresh_token(&[1; 32], &refresh(3, 9, "a")));
    assert!(store.refresh_token(&[3; 32]).unwrap().is_none());
    assert_eq!(
        store.refresh_token(&[1; 32]).unwrap().unwrap().state,
        TokenState::Used
    );
    store.insert_refresh_token(&refresh(4, 8, "a")).unwrap();
    store.insert_refresh_token(&refresh(5, 7, "b")).unwrap();
    assert_eq!(store.revoke_refresh_family(&[9; 16]).unwrap(), 1);
    assert_eq!(
        store.refresh_token(&[2; 32]).unwrap().unwrap().state,
        TokenState::Revoked
    );
    assert_eq!(
        store.refresh_token(&[4; 32]).unwrap().unwrap().state,
        TokenState::Open
    );
    assert_eq!(store.revoke_refresh_account("a").unwrap(), 1);
    assert_eq!(
        store.refresh_token(&[4; 32]).unwrap().unwrap().state,
        TokenState::Revoked
    );
    assert_eq!(
        store.refresh_token(&[5; 32]).unwrap().unwrap().state,
        TokenState::Open
    );
    assert_conflict(store.rotate_refresh_token(&[4; 32], &refresh(6, 8, "a")));
}

#[test]
fn a_reset_token_keeps_the_account_it_resets() {
    let (_dir, store) = with_vault();
    let mut t = token(3, TokenState::Open);
    t.account = "acc-1".into();
    store.insert_registration_token(&t).unwrap();
    assert_eq!(store.registration_token(&[3; 32]).unwrap(), Some(t));
}

fn client(id: &str, name: &str) -> ClientRecord {
    ClientRecord {
        id: id.into(),
        name: name.into(),
        role: "lab-technician".into(),
        link: "Practitioner/t|Organization/l".into(),
        jwk: "{}".into(),
        bearer: false,
        disabled: false,
        generation: 1,
        mac: [9; 32],
    }
}

#[test]
fn clients_have_unique_ids_and_names_and_optimistic_updates() {
    let (_dir, store) = with_vault();
    store.insert_client(&client("c1", "lab")).unwrap();
    assert_conflict(store.insert_client(&client("c1", "other")));
    assert_conflict(store.insert_client(&client("c2", "lab")));
    store.insert_client(&client("c0", "alpha")).unwrap();
    assert_eq!(store.client("c1").unwrap(), Some(client("c1", "lab")));
    assert_eq!(store.client("nope").unwrap(), None);
    let names: Vec<String> = store
        .clients()
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["alpha", "lab"]);
    let mut next = client("c1", "lab");
    next.disabled = true;
    next.generation = 2;
    store.update_client(&next, 1).unwrap();
    assert_conflict(store.update_client(&next, 1));
    assert_eq!(store.client("c1").unwrap(), Some(next));
}

/// An account printed with `{:?}` shows its id, role, link and state, and none of the bytes
/// of its login or national-id tokens, password file or key bundle.
#[test]
fn an_account_row_prints_without_its_tokens_or_password_file() {
    let mut a = account("acct-1", 0xA7, 0xB8, "physician");
    a.password_file = Some(vec![0xC9; 64]);
    a.key_bundle = Some(vec![0xDA; 48]);
    let text = format!("{a:?}");
    assert!(
        text.contains("acct-1") && text.contains("physician"),
        "{text}"
    );
    assert!(text.contains("password_file_len: Some(64)"), "{text}");
    for byte in [0xA7u8, 0xB8, 0xC9, 0xDA] {
        assert!(!text.contains(&byte.to_string()), "{byte} in {text}");
        assert!(!text.contains(&format!("{byte:x}")), "{byte:x} in {text}");
    }
}

/// The states' stored texts are part of the format: a registration token's MAC covers its
/// state's text, and rows written before the states were a type must still load.
#[test]
fn token_states_are_stored_as_their_texts_and_a_damaged_state_is_refused() {
    for (state, text) in [
        (TokenState::Open, "open"),
        (TokenState::Used, "used"),
        (TokenState::Revoked, "revoked"),
    ] {
        assert_eq!(state.as_str(), text);
        assert_eq!(TokenState::parse(text), Some(state));
    }
    for text in ["", "Open", "spent", "open "] {
        assert_eq!(TokenState::parse(text), None, "{text:?}");
    }

    let (dir, store) = with_vault();
    store
        .insert_registration_token(&token(6, TokenState::Used))
        .unwrap();
    store.insert_refresh_token(&refresh(7, 9, "a")).unwrap();
    let db = raw(&db_path(&dir));
    let stored = |table: &str| -> String {
        db.query_row(&format!("SELECT state FROM {table}"), [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(stored("registration_token"), "used");
    assert_eq!(stored("refresh_token"), "open");
    db.execute_batch(
        "UPDATE registration_token SET state = 'opened'; UPDATE refresh_token SET state = '';",
    )
    .unwrap();
    assert!(
        matches!(
            store.registration_token(&[6; 32]),
            Err(StoreError::Corrupt("token state"))
        ),
        "a registration token with a state no version writes"
    );
    assert!(
        matches!(
            store.refresh_token(&[7; 32]),
            Err(StoreError::Corrupt("refresh state"))
        ),
        "a refresh token with a state no version writes"
    );
}
