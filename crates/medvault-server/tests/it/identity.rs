//! Accounts and OPAQUE: the bootstrap admin, registration tokens (one-time, expiring,
//! revocable, role-bound), login without the password reaching the server, lockout with
//! back-off, and forged account rows refused.

use medvault_crypto::SystemRandom;
use medvault_server::accounts::{self, AccountError, Role};
use medvault_server::login::{self, LoginError, Logins, Suite};
use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialResponse, RegistrationResponse, ServerSetup,
};

use medvault_store::Store;

use crate::support::{Harness, T0};

static SYSTEM_RANDOM: std::sync::LazyLock<SystemRandom> =
    std::sync::LazyLock::new(SystemRandom::new);

/// The system random source, for opaque-ke's client side.
pub fn rng() -> login::Rng<'static> {
    login::Rng(&*SYSTEM_RANDOM)
}

/// Client and server run OPAQUE registration; returns the password file the server stores
/// (the password itself never crosses).
fn opaque_register(setup: &ServerSetup<Suite>, login: &str, password: &str) -> Vec<u8> {
    let start = ClientRegistration::<Suite>::start(&mut rng(), password.as_bytes()).unwrap();
    let response = login::registration_response(setup, login, &start.message.serialize()).unwrap();
    let finish = start
        .state
        .finish(
            &mut rng(),
            password.as_bytes(),
            RegistrationResponse::deserialize(&response).unwrap(),
            ClientRegistrationFinishParameters::default(),
        )
        .unwrap();
    login::registration_finish(&finish.message.serialize()).unwrap()
}

/// Client and server run OPAQUE login; `Ok(account id)` if the server accepted it.
fn opaque_login(
    h: &Harness,
    logins: &Logins,
    setup: &ServerSetup<Suite>,
    now: i64,
    login: &str,
    password: &str,
) -> Result<String, LoginError> {
    let keys = h.repo.vault().keys().unwrap();
    let account = accounts::load_by_login(&*h.data.store, &keys, login).unwrap();
    let start = ClientLogin::<Suite>::start(&mut rng(), password.as_bytes()).unwrap();
    let file = account
        .as_ref()
        .and_then(|a| a.password_file().map(<[u8]>::to_vec));
    let (id, response) = logins.start(
        setup,
        &SystemRandom::new(),
        now,
        &login.to_lowercase(),
        "10.0.0.9",
        account
            .as_ref()
            .zip(file.as_deref())
            .map(|(a, f)| (a.id(), f)),
        &start.message.serialize(),
        "test-jkt",
    )?;
    let finalization = match start.state.finish(
        &mut rng(),
        password.as_bytes(),
        CredentialResponse::deserialize(&response).unwrap(),
        ClientLoginFinishParameters::default(),
    ) {
        Ok(done) => done.message.serialize().to_vec(),
        // A wrong password fails on the client; a guesser would send something anyway.
        Err(_) => vec![0u8; 64],
    };
    logins
        .finish(now, &id, &finalization, "test-jkt")
        .map(|l| l.account)
}

pub fn register(
    h: &Harness,
    setup: &ServerSetup<Suite>,
    token: &str,
    login: &str,
    nid: &str,
) -> Result<accounts::Account, AccountError> {
    let keys = h.repo.vault().keys().unwrap();
    let grant = accounts::check_token(&*h.data.store, &keys, h.clock_now(), token)?;
    let file = opaque_register(setup, &login.to_lowercase(), "correct horse battery staple");
    accounts::register(
        &*h.data.store,
        &keys,
        &SystemRandom::new(),
        grant,
        login,
        nid,
        file,
        Some(b"client-encrypted key bundle".to_vec()),
    )
}

impl Harness {
    fn clock_now(&self) -> i64 {
        use medvault_server::clock::Clock;
        self.clock.now_ms()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_admin_then_role_bound_one_time_tokens() {
    let h = Harness::unsealed();
    let keys = h.repo.vault().keys().unwrap();
    let store = &*h.data.store;
    let setup = login::server_setup(store, &keys, &SystemRandom::new()).unwrap();
    // The setup is made once and read back the same afterwards.
    let again = login::server_setup(store, &keys, &SystemRandom::new()).unwrap();
    assert_eq!(setup.serialize(), again.serialize());

    let admin = register(&h, &setup, &h.bootstrap, "Admin@Example.org", "NID-A").unwrap();
    assert_eq!(admin.role(), Role::Admin);
    // A one-hour registration token the admin issues for `role` and `link`.
    let hour_token = |role: Role, link: &str| {
        accounts::issue_token(
            store,
            &keys,
            &SystemRandom::new(),
            T0,
            &admin,
            role,
            link,
            3_600_000,
        )
        .unwrap()
    };
    assert!(matches!(
        register(&h, &setup, &h.bootstrap, "second-admin", "NID-B"),
        Err(AccountError::BadToken)
    ));

    let t = hour_token(Role::Physician, "Practitioner/dr-1");
    let doc = register(&h, &setup, &t, "dr.one", "NID-D").unwrap();
    assert_eq!(
        (doc.role(), doc.link()),
        (Role::Physician, "Practitioner/dr-1")
    );
    assert_eq!(doc.key_bundle(), Some(&b"client-encrypted key bundle"[..]));
    // One-time.
    assert!(matches!(
        register(&h, &setup, &t, "dr.two", "NID-E"),
        Err(AccountError::BadToken)
    ));
    // One account per national id, and per login name (case-insensitive).
    let t2 = hour_token(Role::Nurse, "Practitioner/n-1");
    // A login name already taken leaves the token usable (pick another name)...
    assert!(matches!(
        register(&h, &setup, &t2, "DR.ONE", "NID-F"),
        Err(AccountError::Taken)
    ));
    register(&h, &setup, &t2, "nurse.one", "NID-F").unwrap();
    // ...but a national id already registered spends it: a token's holder cannot ask, with
    // one new login name after another, which national ids have accounts here.
    let t3 = hour_token(Role::Nurse, "Practitioner/n-2");
    assert!(matches!(
        register(&h, &setup, &t3, "nurse.two", "nid-d"),
        Err(AccountError::Taken)
    ));
    for (login, nid) in [("nurse.three", "NID-D"), ("nurse.two", "NID-H")] {
        assert!(matches!(
            register(&h, &setup, &t3, login, nid),
            Err(AccountError::BadToken)
        ));
    }
    // Requests racing on one token with national ids that have accounts: only the one that
    // spends the token hears "taken"; the others find it spent.
    let t4 = hour_token(Role::Nurse, "Practitioner/n-3");
    let racers = 6;
    let prepared: Vec<_> = (0..racers)
        .map(|i| {
            let login = format!("racer.{i}");
            let grant = accounts::check_token(store, &keys, h.clock_now(), &t4).unwrap();
            let file = opaque_register(&setup, &login, "correct horse battery staple");
            (login, grant, file)
        })
        .collect();
    let start = std::sync::Barrier::new(racers);
    let outcomes: Vec<_> = std::thread::scope(|scope| {
        let runs: Vec<_> = prepared
            .into_iter()
            .enumerate()
            .map(|(i, (login, grant, file))| {
                let (keys, start) = (&keys, &start);
                scope.spawn(move || {
                    start.wait();
                    let nid = ["NID-D", "NID-F"][i % 2];
                    let r = accounts::register(
                        store,
                        keys,
                        &SystemRandom::new(),
                        grant,
                        &login,
                        nid,
                        file,
                        None,
                    );
                    match r {
                        Err(AccountError::Taken) => "taken",
                        Err(AccountError::BadToken) => "spent",
                        _ => "other",
                    }
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(
        (
            outcomes.iter().filter(|o| **o == "taken").count(),
            outcomes.iter().filter(|o| **o == "spent").count()
        ),
        (1, racers - 1),
        "{outcomes:?}"
    );

    // Expiry and revocation.
    let short = accounts::issue_token(
        store,
        &keys,
        &SystemRandom::new(),
        T0,
        &admin,
        Role::Auditor,
        "",
        60_000,
    )
    .unwrap();
    h.clock.advance(60_000);
    assert!(matches!(
        register(&h, &setup, &short, "auditor", "NID-G"),
        Err(AccountError::BadToken)
    ));
    let revoked = accounts::issue_token(
        store,
        &keys,
        &SystemRandom::new(),
        h.clock_now(),
        &admin,
        Role::Auditor,
        "",
        600_000,
    )
    .unwrap();
    accounts::revoke_token(store, &keys, &admin, &revoked).unwrap();
    assert!(matches!(
        register(&h, &setup, &revoked, "auditor", "NID-G"),
        Err(AccountError::BadToken)
    ));

    // Only admins issue staff tokens; links must fit the role.
    assert!(matches!(
        accounts::issue_token(
            store,
            &keys,
            &SystemRandom::new(),
            T0,
            &doc,
            Role::Admin,
            "",
            600_000
        ),
        Err(AccountError::Forbidden)
    ));
    assert!(matches!(
        accounts::issue_token(
            store,
            &keys,
            &SystemRandom::new(),
            T0,
            &admin,
            Role::Patient,
            "Practitioner/x",
            600_000
        ),
        Err(AccountError::Invalid(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_login_and_lockout_with_back_off() {
    let h = Harness::unsealed();
    let keys = h.repo.vault().keys().unwrap();
    let setup = login::server_setup(&*h.data.store, &keys, &SystemRandom::new()).unwrap();
    let admin = register(&h, &setup, &h.bootstrap, "admin", "NID-A").unwrap();
    let logins = Logins::new();

    let id = opaque_login(
        &h,
        &logins,
        &setup,
        T0,
        "ADMIN",
        "correct horse battery staple",
    )
    .unwrap();
    assert_eq!(id, admin.id());

    // Wrong passwords: three are free, then each failure doubles the wait.
    for _ in 0..4 {
        assert!(matches!(
            opaque_login(&h, &logins, &setup, T0, "admin", "wrong"),
            Err(LoginError::Failed)
        ));
    }
    match opaque_login(
        &h,
        &logins,
        &setup,
        T0,
        "admin",
        "correct horse battery staple",
    ) {
        Err(LoginError::Locked(secs)) => assert_eq!(secs, 1),
        other => panic!("expected a lockout, got {:?}", other.map(|_| ())),
    }
    // After the back-off the right password works again and clears the count.
    let later = T0 + 1_000;
    opaque_login(
        &h,
        &logins,
        &setup,
        later,
        "admin",
        "correct horse battery staple",
    )
    .unwrap();

    // That address still carries its recent failures (a success gives back one attempt,
    // it does not wipe them); an hour later they are forgotten.
    let hour = later + 3_600_000;
    // An unknown name runs the whole exchange (no enumeration) and fails at the end.
    assert!(matches!(
        opaque_login(&h, &logins, &setup, hour, "nobody", "whatever"),
        Err(LoginError::Failed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_login_start_counts_so_guessing_offline_is_throttled_too() {
    let h = Harness::unsealed();
    let keys = h.repo.vault().keys().unwrap();
    let setup = login::server_setup(&*h.data.store, &keys, &SystemRandom::new()).unwrap();
    register(&h, &setup, &h.bootstrap, "admin", "NID-A").unwrap();
    let logins = Logins::new();
    let account = accounts::load_by_login(&*h.data.store, &keys, "admin")
        .unwrap()
        .unwrap();
    let file = account.password_file().unwrap().to_vec();
    // A guesser only ever calls start: its answer is enough to test a password offline.
    let start_only = |now: i64| {
        let start = ClientLogin::<Suite>::start(&mut rng(), b"guess").unwrap();
        logins
            .start(
                &setup,
                &SystemRandom::new(),
                now,
                "admin",
                "2001:db8::1",
                Some((account.id(), &file)),
                &start.message.serialize(),
                "jkt",
            )
            .map(|_| ())
    };
    for _ in 0..4 {
        start_only(T0).unwrap();
    }
    assert!(matches!(start_only(T0), Err(LoginError::Locked(1))));
    // The address is throttled as a /64: another host of the prefix is held back too.
    let start = ClientLogin::<Suite>::start(&mut rng(), b"guess").unwrap();
    let other = logins.start(
        &setup,
        &SystemRandom::new(),
        T0,
        "someone-else",
        "2001:db8::2",
        None,
        &start.message.serialize(),
        "jkt",
    );
    assert!(
        matches!(other, Err(LoginError::Locked(_))),
        "{:?}",
        other.map(|_| ())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_edited_account_row_is_refused() {
    let h = Harness::unsealed();
    let keys = h.repo.vault().keys().unwrap();
    let setup = login::server_setup(&*h.data.store, &keys, &SystemRandom::new()).unwrap();
    let admin = register(&h, &setup, &h.bootstrap, "admin", "NID-A").unwrap();
    let t = accounts::issue_token(
        &*h.data.store,
        &keys,
        &SystemRandom::new(),
        T0,
        &admin,
        Role::Nurse,
        "Practitioner/n1",
        600_000,
    )
    .unwrap();
    let nurse = register(&h, &setup, &t, "nurse", "NID-N").unwrap();
    assert!(accounts::load(&*h.data.store, &keys, nurse.id())
        .unwrap()
        .is_some());

    let raw = rusqlite::Connection::open(h.db_path()).unwrap();
    // Promote the nurse straight in the database.
    raw.execute(
        "UPDATE account SET role = 'admin' WHERE id = ?",
        [nurse.id()],
    )
    .unwrap();
    assert!(matches!(
        accounts::load(&*h.data.store, &keys, nurse.id()),
        Err(AccountError::Forged)
    ));
    // Insert a new admin row (copying a real row's MAC does not help: it covers the id).
    raw.execute(
        "INSERT INTO account (id, login, national_id, role, link, disabled, generation, password_file, key_bundle, mac)
         SELECT 'forged', zeroblob(16), zeroblob(16), 'admin', '', 0, 1, password_file, NULL, mac FROM account WHERE id = ?",
        [admin.id()],
    )
    .unwrap();
    assert!(matches!(
        accounts::load(&*h.data.store, &keys, "forged"),
        Err(AccountError::Forged)
    ));
    assert!(matches!(
        accounts::list(&*h.data.store, &keys),
        Err(AccountError::Forged)
    ));
    // A registration token planted in the database is refused too.
    raw.execute(
        "INSERT INTO registration_token (hash, role, link, issued_by, expires_ms, state, mac)
         VALUES (?, 'admin', '', 'x', 9999999999999, 'open', zeroblob(32))",
        [medvault_crypto::keys::sha256(b"mvr_planted").to_vec()],
    )
    .unwrap();
    assert!(matches!(
        accounts::check_token(&*h.data.store, &keys, T0, "mvr_planted"),
        Err(AccountError::Forged)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_changes_and_disabling_are_new_authenticated_generations() {
    let h = Harness::unsealed();
    let keys = h.repo.vault().keys().unwrap();
    let setup = login::server_setup(&*h.data.store, &keys, &SystemRandom::new()).unwrap();
    let admin = register(&h, &setup, &h.bootstrap, "admin", "NID-A").unwrap();
    let t = accounts::issue_token(
        &*h.data.store,
        &keys,
        &SystemRandom::new(),
        T0,
        &admin,
        Role::Nurse,
        "Practitioner/n1",
        600_000,
    )
    .unwrap();
    let nurse = register(&h, &setup, &t, "nurse", "NID-N").unwrap();
    let changed = accounts::update(&*h.data.store, &keys, &nurse, |r| {
        r.role = Role::Physician.as_str().into();
        r.disabled = true;
    })
    .unwrap();
    let loaded = accounts::load(&*h.data.store, &keys, nurse.id())
        .unwrap()
        .unwrap();
    assert_eq!(
        (loaded.role(), loaded.disabled(), loaded.generation()),
        (Role::Physician, true, 2)
    );
    // A change based on the old generation loses.
    assert!(accounts::update(&*h.data.store, &keys, &nurse, |r| r.disabled = false).is_err());
    assert_eq!(changed.generation(), 2);
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(v: &serde_json::Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(v.as_str().unwrap())
        .unwrap()
}

pub async fn http_register(
    h: &Harness,
    token: &str,
    login: &str,
    nid: &str,
    password: &str,
) -> crate::support::Resp {
    let start = ClientRegistration::<Suite>::start(&mut rng(), password.as_bytes()).unwrap();
    let r = h
        .call(
            "POST",
            "/auth/opaque/register/start",
            Some(serde_json::json!({"token": token, "login": login, "request": b64(&start.message.serialize())})),
        )
        .await;
    if r.status != axum::http::StatusCode::OK {
        return r;
    }
    let finish = start
        .state
        .finish(
            &mut rng(),
            password.as_bytes(),
            RegistrationResponse::deserialize(&unb64(&r.json["response"])).unwrap(),
            ClientRegistrationFinishParameters::default(),
        )
        .unwrap();
    h.call(
        "POST",
        "/auth/opaque/register/finish",
        Some(serde_json::json!({
            "token": token, "login": login, "national_id": nid,
            "upload": b64(&finish.message.serialize()),
            "binding": r.json["binding"],
            "key_bundle": b64(b"sealed keys"),
        })),
    )
    .await
}

/// A client's DPoP key: an Ed25519 key pair that signs proofs (RFC 9449).
pub struct DpopKey(ring::signature::Ed25519KeyPair);

impl DpopKey {
    pub fn new() -> DpopKey {
        let pkcs8 =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .unwrap();
        DpopKey(ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap())
    }

    /// A proof for `method url` issued at `iat` (seconds), with `jti`, bound to `token`.
    /// The RFC 7638 thumbprint of this key.
    pub fn jkt(&self) -> String {
        use ring::signature::KeyPair;
        let mut x = [0u8; 32];
        x.copy_from_slice(self.0.public_key().as_ref());
        medvault_crypto::jose::PublicJwk::ed25519(x)
            .thumbprint()
            .as_str()
            .to_string()
    }

    pub fn proof(
        &self,
        method: &str,
        url: &str,
        iat: i64,
        jti: &str,
        token: Option<&str>,
    ) -> String {
        use ring::signature::KeyPair;
        let header = serde_json::json!({
            "typ": "dpop+jwt", "alg": "EdDSA",
            "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64(self.0.public_key().as_ref())},
        });
        let mut claims = serde_json::json!({"jti": jti, "htm": method, "htu": url, "iat": iat});
        if let Some(t) = token {
            claims["ath"] = serde_json::json!(medvault_crypto::jose::access_token_hash(t));
        }
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.0.sign(input.as_bytes());
        format!("{input}.{}", b64(sig.as_ref()))
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> serde_json::Value {
        use ring::signature::KeyPair;
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64(self.0.public_key().as_ref())})
    }

    /// A compact JWS (EdDSA) of `claims` with `typ: JWT`.
    pub fn jwt(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"typ": "JWT", "alg": "EdDSA"});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.0.sign(input.as_bytes());
        format!("{input}.{}", b64(sig.as_ref()))
    }
}

async fn http_login(h: &Harness, login: &str, password: &str) -> crate::support::Resp {
    http_login_with(h, login, password, &DpopKey::new()).await
}

pub async fn http_login_with(
    h: &Harness,
    login: &str,
    password: &str,
    key: &DpopKey,
) -> crate::support::Resp {
    let start = ClientLogin::<Suite>::start(&mut rng(), password.as_bytes()).unwrap();
    let r = h
        .call(
            "POST",
            "/auth/opaque/login/start",
            Some(serde_json::json!({"login": login, "request": b64(&start.message.serialize()), "dpop_jkt": key.jkt()})),
        )
        .await;
    if r.status != axum::http::StatusCode::OK {
        return r;
    }
    let finalization = match start.state.finish(
        &mut rng(),
        password.as_bytes(),
        CredentialResponse::deserialize(&unb64(&r.json["response"])).unwrap(),
        ClientLoginFinishParameters::default(),
    ) {
        Ok(done) => b64(&done.message.serialize()),
        Err(_) => b64(&[7u8; 64]),
    };
    let now = h.clock_now() / 1000;
    let proof = key.proof(
        "POST",
        &format!("{}/auth/opaque/login/finish", crate::support::BASE),
        now,
        &format!("login-{}", r.json["login_id"].as_str().unwrap()),
        None,
    );
    h.call_with(
        "POST",
        "/auth/opaque/login/finish",
        Some(serde_json::json!({"login_id": r.json["login_id"], "finalization": finalization})),
        &[("dpop", &proof)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_and_log_in_over_http_with_every_decision_in_the_ledger() {
    use axum::http::StatusCode;
    let h = Harness::unsealed();
    let r = http_register(&h, &h.bootstrap, "Root", "NID-1", "pw-1").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["role"], "admin");
    let admin_id = r.json["account"].as_str().unwrap().to_string();
    // The bootstrap token is spent.
    http_register(&h, &h.bootstrap, "other", "NID-2", "pw")
        .await
        .assert_outcome(StatusCode::FORBIDDEN);

    let r = http_login(&h, "root", "pw-1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["account"], admin_id.as_str());
    assert_eq!(unb64(&r.json["key_bundle"]), b"sealed keys");

    for _ in 0..4 {
        http_login(&h, "root", "nope")
            .await
            .assert_outcome(StatusCode::UNAUTHORIZED);
    }
    let r = http_login(&h, "root", "pw-1").await;
    r.assert_outcome(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), Some("1"));
    h.clock.advance(1_000);
    assert_eq!(http_login(&h, "root", "pw-1").await.status, StatusCode::OK);

    // Malformed input is a 400 with an OperationOutcome, not a 500.
    h.call(
        "POST",
        "/auth/opaque/login/start",
        Some(serde_json::json!({"login": "root", "request": "%%%"})),
    )
    .await
    .assert_outcome(StatusCode::BAD_REQUEST);

    let keys = h.repo.vault().keys().unwrap();
    let entries: Vec<(String, medvault_ledger::Outcome)> = h
        .data
        .store
        .ledger_entries(0, 1000)
        .unwrap()
        .iter()
        .map(|rec| {
            let e = medvault_server::ledger::open_entry(&keys, rec).unwrap().0;
            (e.action.as_str().to_string(), e.outcome)
        })
        .collect();
    use medvault_ledger::Outcome::{Allow, Deny, Error};
    let expect: Vec<(String, medvault_ledger::Outcome)> = [
        ("register", Allow),
        ("register", Allow),
        ("register", Deny),
        ("login", Allow),
        ("login", Allow),
        ("login", Allow),
        ("login", Deny),
        ("login", Allow),
        ("login", Deny),
        ("login", Allow),
        ("login", Deny),
        ("login", Allow),
        ("login", Deny),
        ("login", Deny),
        ("login", Allow),
        ("login", Allow),
        ("login", Error),
    ]
    .iter()
    .map(|(a, o)| (a.to_string(), *o))
    .collect();
    assert_eq!(entries, expect);
}

async fn whoami(h: &Harness, token: &str, proof: &str) -> crate::support::Resp {
    h.call_with(
        "GET",
        "/auth/whoami",
        None,
        &[("authorization", &format!("DPoP {token}")), ("dpop", proof)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_bound_to_the_dpop_key_and_each_proof_works_once() {
    use axum::http::StatusCode;
    let h = Harness::unsealed();
    http_register(&h, &h.bootstrap, "root", "NID-1", "pw").await;
    let key = DpopKey::new();
    let r = http_login_with(&h, "root", "pw", &key).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["token_type"], "DPoP");
    let token = r.json["access_token"].as_str().unwrap().to_string();
    let url = format!("{}/auth/whoami", crate::support::BASE);
    let now = h.clock_now() / 1000;

    let ok = key.proof("GET", &url, now, "j1", Some(&token));
    let r = whoami(&h, &token, &ok).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["role"], "admin");
    // The same proof again: replay.
    whoami(&h, &token, &ok)
        .await
        .assert_outcome(StatusCode::UNAUTHORIZED);

    let refused = |name: &'static str, proof: String| (name, proof);
    let other = DpopKey::new();
    for (name, proof) in [
        refused(
            "another key",
            other.proof("GET", &url, now, "j2", Some(&token)),
        ),
        refused(
            "wrong method",
            key.proof("POST", &url, now, "j3", Some(&token)),
        ),
        refused(
            "wrong url",
            key.proof(
                "GET",
                &format!("{}/auth/whoamI", crate::support::BASE),
                now,
                "j4",
                Some(&token),
            ),
        ),
        refused(
            "stale",
            key.proof("GET", &url, now - 120, "j5", Some(&token)),
        ),
        refused(
            "future",
            key.proof("GET", &url, now + 60, "j6", Some(&token)),
        ),
        refused("no ath", key.proof("GET", &url, now, "j7", None)),
        refused("garbage", "a.b.c".to_string()),
    ] {
        let r = whoami(&h, &token, &proof).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}: {}", r.json);
        assert!(r.header("www-authenticate").is_some(), "{name}");
    }
    // No proof at all, and a bearer-style header.
    let r = h
        .call_with(
            "GET",
            "/auth/whoami",
            None,
            &[("authorization", &format!("DPoP {token}"))],
        )
        .await;
    r.assert_outcome(StatusCode::UNAUTHORIZED);
    let r = h
        .call_with(
            "GET",
            "/auth/whoami",
            None,
            &[
                ("authorization", &format!("Bearer {token}")),
                ("dpop", &key.proof("GET", &url, now, "j8", Some(&token))),
            ],
        )
        .await;
    r.assert_outcome(StatusCode::UNAUTHORIZED);

    // A role change takes effect on the next request; disabling ends the session.
    let keys = h.repo.vault().keys().unwrap();
    let admin = accounts::load_by_login(&*h.data.store, &keys, "root")
        .unwrap()
        .unwrap();
    let admin =
        accounts::update(&*h.data.store, &keys, &admin, |r| r.role = "auditor".into()).unwrap();
    let r = whoami(&h, &token, &key.proof("GET", &url, now, "j9", Some(&token))).await;
    assert_eq!(r.json["role"], "auditor");
    accounts::update(&*h.data.store, &keys, &admin, |r| r.disabled = true).unwrap();
    whoami(
        &h,
        &token,
        &key.proof("GET", &url, now, "j10", Some(&token)),
    )
    .await
    .assert_outcome(StatusCode::UNAUTHORIZED);

    // A bootstrap token is worthless once an account exists.
    let r = http_register(&h, "mvb_unused", "x", "y", "z").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Tokens expire.
    h.clock.advance(301_000);
    let later = h.clock_now() / 1000;
    whoami(
        &h,
        &token,
        &key.proof("GET", &url, later, "j11", Some(&token)),
    )
    .await
    .assert_outcome(StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_without_a_valid_proof_gets_no_token() {
    use axum::http::StatusCode;
    let h = Harness::unsealed();
    http_register(&h, &h.bootstrap, "root", "NID-1", "pw").await;
    // Finish without a DPoP header.
    let start = ClientLogin::<Suite>::start(&mut rng(), b"pw").unwrap();
    let key = DpopKey::new();
    let r = h
        .call(
            "POST",
            "/auth/opaque/login/start",
            Some(serde_json::json!({"login": "root", "request": b64(&start.message.serialize()), "dpop_jkt": key.jkt()})),
        )
        .await;
    let done = start
        .state
        .finish(
            &mut rng(),
            b"pw",
            CredentialResponse::deserialize(&unb64(&r.json["response"])).unwrap(),
            ClientLoginFinishParameters::default(),
        )
        .unwrap();
    let r = h
        .call(
            "POST",
            "/auth/opaque/login/finish",
            Some(serde_json::json!({"login_id": r.json["login_id"], "finalization": b64(&done.message.serialize())})),
        )
        .await;
    r.assert_outcome(StatusCode::UNAUTHORIZED);
    assert!(r.json.get("access_token").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_can_only_be_finished_by_the_key_declared_at_start() {
    use axum::http::StatusCode;
    let h = Harness::unsealed();
    http_register(&h, &h.bootstrap, "root", "NID-1", "pw").await;
    let declared = DpopKey::new();
    let thief = DpopKey::new();
    let start = ClientLogin::<Suite>::start(&mut rng(), b"pw").unwrap();
    let r = h
        .call(
            "POST",
            "/auth/opaque/login/start",
            Some(serde_json::json!({"login": "root", "request": b64(&start.message.serialize()), "dpop_jkt": declared.jkt()})),
        )
        .await;
    let done = start
        .state
        .finish(
            &mut rng(),
            b"pw",
            CredentialResponse::deserialize(&unb64(&r.json["response"])).unwrap(),
            ClientLoginFinishParameters::default(),
        )
        .unwrap();
    // Someone who intercepted the finalization signs the finish with their own key.
    let url = format!("{}/auth/opaque/login/finish", crate::support::BASE);
    let proof = thief.proof("POST", &url, h.clock_now() / 1000, "t1", None);
    let r = h
        .call_with(
            "POST",
            "/auth/opaque/login/finish",
            Some(serde_json::json!({"login_id": r.json["login_id"], "finalization": b64(&done.message.serialize())})),
            &[("dpop", &proof)],
        )
        .await;
    r.assert_outcome(StatusCode::UNAUTHORIZED);
    assert!(r.json.get("access_token").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_must_finish_with_the_login_name_it_started_with() {
    use axum::http::StatusCode;
    let h = Harness::unsealed();
    let start = ClientRegistration::<Suite>::start(&mut rng(), b"pw").unwrap();
    let r = h
        .call(
            "POST",
            "/auth/opaque/register/start",
            Some(serde_json::json!({"token": h.bootstrap, "login": "alice", "request": b64(&start.message.serialize())})),
        )
        .await;
    let finish = start
        .state
        .finish(
            &mut rng(),
            b"pw",
            RegistrationResponse::deserialize(&unb64(&r.json["response"])).unwrap(),
            ClientRegistrationFinishParameters::default(),
        )
        .unwrap();
    let body = |login: &str| {
        serde_json::json!({
            "token": h.bootstrap, "login": login, "national_id": "NID-1",
            "upload": b64(&finish.message.serialize()), "binding": r.json["binding"],
        })
    };
    h.call(
        "POST",
        "/auth/opaque/register/finish",
        Some(body("mallory")),
    )
    .await
    .assert_outcome(StatusCode::BAD_REQUEST);
    // Nothing was used up: the right name still registers.
    let ok = h
        .call("POST", "/auth/opaque/register/finish", Some(body("Alice")))
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.json);
}
