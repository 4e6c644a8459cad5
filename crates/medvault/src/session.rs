//! `medvault register|login|passwd|whoami|logout|fhir|admin`: the client side of OPAQUE and of
//! DPoP-bound sessions. The password never leaves this process; the session file holds the
//! access and refresh tokens and the private DPoP key that every request is signed with. The
//! user's key bundle is made and sealed here, under the OPAQUE export key, and only ever
//! opened here.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use medvault_crypto::{KeyBundle, KeyBundlePublic, Random, SystemRandom};
use medvault_server::login::Suite;
use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialResponse, RegistrationResponse,
};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::client::{outcome_text, Client};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(v: &Value, what: &str) -> Result<Vec<u8>> {
    v.as_str()
        .and_then(|t| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .ok()
        })
        .ok_or_else(|| anyhow!("the server sent a malformed {what}"))
}

/// The system random source, for opaque-ke's client side.
static SYSTEM_RANDOM: std::sync::LazyLock<SystemRandom> =
    std::sync::LazyLock::new(SystemRandom::new);

fn rng() -> medvault_server::login::Rng<'static> {
    medvault_server::login::Rng(&*SYSTEM_RANDOM)
}

/// A secret: the environment variable `env`, or one line from stdin (prompted on a terminal).
fn secret(env: &str, what: &str) -> Result<Zeroizing<String>> {
    if let Ok(p) = std::env::var(env) {
        if !p.is_empty() {
            return Ok(Zeroizing::new(p));
        }
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        // Without a terminal-control dependency the input is echoed; say so.
        eprint!("{what} (shown as you type; set {env} to avoid that): ");
        std::io::stderr().flush()?;
    }
    let mut line = Zeroizing::new(String::new());
    stdin.lock().read_line(&mut line)?;
    let p = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string());
    if p.is_empty() {
        bail!("no {what} given");
    }
    Ok(p)
}

/// The password: `MEDVAULT_PASSWORD`, or one line from stdin.
fn password() -> Result<Zeroizing<String>> {
    secret("MEDVAULT_PASSWORD", "password")
}

/// The key bundle as the server stores it (opaque to the server): the public keys in clear
/// and the secrets sealed under the export key, bound to the login name.
fn seal_bundle(bundle: &KeyBundle, export_key: &[u8], login: &str) -> Result<Vec<u8>> {
    let login = medvault_server::accounts::normalized_login(login)?;
    let sealed = bundle
        .seal(export_key, login.as_bytes(), &SystemRandom::new())
        .map_err(|_| anyhow!("could not seal the key bundle"))?;
    let doc = json!({
        "v": 1,
        "public": serde_json::to_value(bundle.public())?,
        "sealed": b64(&sealed),
    });
    Ok(doc.to_string().into_bytes())
}

/// Open a stored key bundle with the export key of a login.
fn open_bundle(stored: &[u8], export_key: &[u8], login: &str) -> Result<KeyBundle> {
    let login = medvault_server::accounts::normalized_login(login)?;
    let doc: Value = serde_json::from_slice(stored)
        .map_err(|_| anyhow!("the stored key bundle is not in a format this client knows"))?;
    if doc["v"] != 1 {
        bail!("the stored key bundle has an unknown version");
    }
    let public = KeyBundlePublic::from_json(&doc["public"].to_string())
        .map_err(|_| anyhow!("the stored key bundle's public keys are malformed"))?;
    let sealed = unb64(&doc["sealed"], "key bundle")?;
    KeyBundle::open(&sealed, export_key, login.as_bytes(), &public).map_err(|_| {
        anyhow!("the key bundle does not open with this password (altered, or sealed under an earlier password)")
    })
}

fn fingerprint(bundle: &KeyBundle) -> String {
    medvault_server::vault::hex(&bundle.public().thumbprint()[..8])
}

/// Send a JSON step of the OPAQUE exchange; a refusal becomes a one-line error.
fn step(client: &Client, path: &str, headers: &[(&str, String)], body: &Value) -> Result<Value> {
    let (status, text) = client.request(
        "POST",
        path,
        headers,
        Some(("application/json", body.to_string().into_bytes())),
    )?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        bail!("{} (HTTP {status})", outcome_text(&value));
    }
    Ok(value)
}

pub fn register(client: &Client, token: &str, login: &str, national_id: &str) -> Result<()> {
    let pw = password()?;
    let (r, bundle) = register_with(client, token, login, national_id, &pw)?;
    println!(
        "registered account {} as {} (key bundle {})",
        r["account"].as_str().unwrap_or("?"),
        r["role"].as_str().unwrap_or("?"),
        fingerprint(&bundle)
    );
    Ok(())
}

/// Register with `pw` (no prompt); the server's answer and the new key bundle.
pub(crate) fn register_with(
    client: &Client,
    token: &str,
    login: &str,
    national_id: &str,
    pw: &str,
) -> Result<(Value, KeyBundle)> {
    let start = ClientRegistration::<Suite>::start(&mut rng(), pw.as_bytes())
        .map_err(|_| anyhow!("could not start the registration"))?;
    let r = step(
        client,
        "/auth/opaque/register/start",
        &[],
        &json!({"token": token, "login": login, "request": b64(&start.message.serialize())}),
    )?;
    let response = RegistrationResponse::deserialize(&unb64(&r["response"], "response")?)
        .map_err(|_| anyhow!("the server sent a malformed registration response"))?;
    let finish = start
        .state
        .finish(
            &mut rng(),
            pw.as_bytes(),
            response,
            ClientRegistrationFinishParameters::default(),
        )
        .map_err(|_| anyhow!("the server's registration response did not verify"))?;
    // A fresh key bundle, sealed under this password's export key.
    let bundle = KeyBundle::generate(&SystemRandom::new())
        .map_err(|_| anyhow!("could not generate a key bundle"))?;
    let sealed = seal_bundle(&bundle, &finish.export_key, login)?;
    let r = step(
        client,
        "/auth/opaque/register/finish",
        &[],
        &json!({
            "token": token, "login": login, "national_id": national_id,
            "upload": b64(&finish.message.serialize()),
            "binding": r["binding"],
            "key_bundle": b64(&sealed),
        }),
    )?;
    Ok((r, bundle))
}

/// Where the session lives: `MEDVAULT_SESSION`, else `~/.config/medvault/session.json`.
fn session_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MEDVAULT_SESSION") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").ok_or_else(|| anyhow!("set MEDVAULT_SESSION or HOME"))?;
    Ok(PathBuf::from(home).join(".config/medvault/session.json"))
}

/// A DPoP key pair (Ed25519) and its proofs.
struct DpopKey {
    pair: Ed25519KeyPair,
}

impl DpopKey {
    fn generate() -> Result<(DpopKey, Zeroizing<Vec<u8>>)> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map_err(|_| anyhow!("could not generate a key"))?;
        let bytes = Zeroizing::new(pkcs8.as_ref().to_vec());
        Ok((DpopKey::from_pkcs8(&bytes)?, bytes))
    }

    fn from_pkcs8(bytes: &[u8]) -> Result<DpopKey> {
        Ok(DpopKey {
            pair: Ed25519KeyPair::from_pkcs8(bytes)
                .map_err(|_| anyhow!("the session's key is damaged; log in again"))?,
        })
    }

    /// The RFC 7638 thumbprint of the public key.
    fn jkt(&self) -> String {
        let mut x = [0u8; 32];
        x.copy_from_slice(self.pair.public_key().as_ref());
        medvault_crypto::jose::PublicJwk::ed25519(x)
            .thumbprint()
            .as_str()
            .to_string()
    }

    /// A proof for `method url` now, bound to `token` if given (RFC 9449).
    fn proof(&self, method: &str, url: &str, token: Option<&str>) -> Result<String> {
        let mut jti = [0u8; 16];
        SystemRandom::new()
            .fill(&mut jti)
            .map_err(|_| anyhow!("the system random source failed"))?;
        let iat = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| anyhow!("the system clock is before 1970"))?
            .as_secs();
        let header = json!({
            "typ": "dpop+jwt", "alg": "EdDSA",
            "jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64(self.pair.public_key().as_ref())},
        });
        let mut claims = json!({"jti": b64(&jti), "htm": method, "htu": url, "iat": iat});
        if let Some(t) = token {
            claims["ath"] = json!(medvault_crypto::jose::access_token_hash(t));
        }
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.pair.sign(input.as_bytes());
        Ok(format!("{input}.{}", b64(sig.as_ref())))
    }
}

/// A finished OPAQUE login: the server's answer, the export key, the DPoP key (PKCS#8).
struct LoggedIn {
    answer: Value,
    export_key: Zeroizing<Vec<u8>>,
    pkcs8: Zeroizing<Vec<u8>>,
}

fn opaque_login(client: &Client, login: &str, pw: &str) -> Result<LoggedIn> {
    let start = ClientLogin::<Suite>::start(&mut rng(), pw.as_bytes())
        .map_err(|_| anyhow!("could not start the login"))?;
    // The key the session will be bound to; only a proof by it can finish this login.
    let (key, pkcs8) = DpopKey::generate()?;
    let r = step(
        client,
        "/auth/opaque/login/start",
        &[],
        &json!({"login": login, "request": b64(&start.message.serialize()), "dpop_jkt": key.jkt()}),
    )?;
    let login_id = r["login_id"]
        .as_str()
        .ok_or_else(|| anyhow!("the server sent no login id"))?
        .to_string();
    let response = CredentialResponse::deserialize(&unb64(&r["response"], "response")?)
        .map_err(|_| anyhow!("the server sent a malformed login response"))?;
    let finished = start.state.finish(
        &mut rng(),
        pw.as_bytes(),
        response,
        ClientLoginFinishParameters::default(),
    );
    let url = format!("{}/auth/opaque/login/finish", client.base());
    let proof = key.proof("POST", &url, None)?;
    // A wrong password is found here, on the client. Tell the server anyway (with a
    // finalization that cannot verify), so the failure counts towards its back-off.
    let finalization = match &finished {
        Ok(done) => b64(&done.message.serialize()),
        Err(_) => b64(&[0u8; 64]),
    };
    let r = step(
        client,
        "/auth/opaque/login/finish",
        &[("DPoP", proof)],
        &json!({"login_id": login_id, "finalization": finalization}),
    );
    let Ok(done) = finished else {
        bail!("login failed: wrong login name or password");
    };
    Ok(LoggedIn {
        answer: r?,
        export_key: Zeroizing::new(done.export_key.to_vec()),
        pkcs8,
    })
}

fn now_s() -> Result<i64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| anyhow!("the system clock is before 1970"))?
        .as_secs() as i64)
}

/// Keep the session of a finished login in the session file (owner-only).
fn save_session(client: &Client, login: &str, done: &LoggedIn) -> Result<PathBuf> {
    let r = &done.answer;
    let session = json!({
        "server": client.base(),
        "login": login,
        "account": r["account"],
        "role": r["role"],
        "access_token": r["access_token"],
        "refresh_token": r["refresh_token"],
        "expires_at": now_s()? + r["expires_in"].as_i64().unwrap_or(0),
        "dpop_key": b64(&done.pkcs8),
    });
    let path = session_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::write_private(
        &path,
        serde_json::to_string_pretty(&session)?.as_bytes(),
        true,
    )?;
    Ok(path)
}

/// Open the account's key bundle with this login's export key, if there is one; say what
/// happened (a bundle that does not open is reported, not fatal: the login itself worked).
fn check_bundle(done: &LoggedIn, login: &str) -> Option<KeyBundle> {
    let stored = done.answer["key_bundle"].as_str()?;
    let bytes = match unb64(&Value::String(stored.to_string()), "key bundle") {
        Ok(b) => b,
        Err(e) => {
            eprintln!("warning: {e}");
            return None;
        }
    };
    match open_bundle(&bytes, &done.export_key, login) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("warning: {e}");
            None
        }
    }
}

pub fn login(client: &Client, login: &str) -> Result<()> {
    let pw = password()?;
    let done = opaque_login(client, login, &pw)?;
    let path = save_session(client, login, &done)?;
    let bundle = match check_bundle(&done, login) {
        Some(b) => format!("key bundle {} opened", fingerprint(&b)),
        None => "no key bundle".to_string(),
    };
    println!(
        "logged in as {} ({}); {bundle}; session in {}",
        login,
        done.answer["role"].as_str().unwrap_or("?"),
        path.display(),
    );
    Ok(())
}

/// Log in with `pw` and keep the session in memory only.
pub(crate) fn session_in_memory(client: &Client, login: &str, pw: &str) -> Result<Session> {
    let done = opaque_login(client, login, pw)?;
    let r = &done.answer;
    let doc = json!({
        "server": client.base(),
        "access_token": r["access_token"],
        "refresh_token": r["refresh_token"],
        "expires_at": now_s()? + r["expires_in"].as_i64().unwrap_or(0),
    });
    let token = r["access_token"]
        .as_str()
        .ok_or_else(|| anyhow!("the server sent no access token"))?
        .to_string();
    Ok(Session {
        client: client.clone(),
        path: None,
        token,
        key: DpopKey::from_pkcs8(&done.pkcs8)?,
        doc,
    })
}

/// `medvault passwd`: log in with the current password (to open the key bundle), register
/// the new one, re-seal the bundle under it, and start a new session (every other session of
/// the account ends).
pub fn passwd(client: &Client, login: &str) -> Result<()> {
    let old = password()?;
    let new = secret("MEDVAULT_NEW_PASSWORD", "new password")?;
    let done = opaque_login(client, login, &old)?;
    let bundle = match check_bundle(&done, login) {
        Some(b) => b,
        None => KeyBundle::generate(&SystemRandom::new())
            .map_err(|_| anyhow!("could not generate a key bundle"))?,
    };
    save_session(client, login, &done)?;
    let session = load_session(Some(client))?;
    let start = ClientRegistration::<Suite>::start(&mut rng(), new.as_bytes())
        .map_err(|_| anyhow!("could not start the registration"))?;
    let r = session.json(
        "POST",
        "/auth/opaque/password/start",
        &json!({"login": login, "request": b64(&start.message.serialize())}),
    )?;
    let response = RegistrationResponse::deserialize(&unb64(&r["response"], "response")?)
        .map_err(|_| anyhow!("the server sent a malformed registration response"))?;
    let finish = start
        .state
        .finish(
            &mut rng(),
            new.as_bytes(),
            response,
            ClientRegistrationFinishParameters::default(),
        )
        .map_err(|_| anyhow!("the server's registration response did not verify"))?;
    let sealed = seal_bundle(&bundle, &finish.export_key, login)?;
    session.json(
        "POST",
        "/auth/opaque/password/finish",
        &json!({
            "login": login,
            "upload": b64(&finish.message.serialize()),
            "key_bundle": b64(&sealed),
        }),
    )?;
    let again = opaque_login(client, login, &new)?;
    save_session(client, login, &again)?;
    println!(
        "password changed; key bundle {} re-sealed; other sessions ended",
        fingerprint(&bundle)
    );
    Ok(())
}

/// A signed-in session: its client, its tokens and DPoP key; kept in the session file
/// (`path`) or only in memory (`None`, for programs such as the load generator).
pub(crate) struct Session {
    client: Client,
    path: Option<PathBuf>,
    doc: Value,
    token: String,
    key: DpopKey,
}

/// Load the session; renew its access token first if it is (nearly) expired. `client`
/// overrides the connection (for a CA certificate) when given.
fn load_session(client: Option<&Client>) -> Result<Session> {
    let mut s = read_session(client)?;
    s.renew_if_due()?;
    Ok(s)
}

fn read_session(client: Option<&Client>) -> Result<Session> {
    let path = session_path()?;
    let bytes =
        std::fs::read(&path).map_err(|_| anyhow!("not logged in (no {})", path.display()))?;
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|_| anyhow!("{} is not a session file; log in again", path.display()))?;
    let server = doc["server"]
        .as_str()
        .ok_or_else(|| anyhow!("the session names no server; log in again"))?;
    let token = doc["access_token"]
        .as_str()
        .ok_or_else(|| anyhow!("the session has no token; log in again"))?
        .to_string();
    let pkcs8 = Zeroizing::new(unb64(&doc["dpop_key"], "session key")?);
    let client = match client {
        Some(c) => c.clone(),
        None => Client::new(server, None)?,
    };
    Ok(Session {
        client,
        path: Some(path),
        token,
        key: DpopKey::from_pkcs8(&pkcs8)?,
        doc,
    })
}

/// A client for the session's server, trusting `ca_cert` if given.
fn session_client(ca_cert: Option<&std::path::Path>) -> Result<Option<Client>> {
    let Some(ca) = ca_cert else {
        return Ok(None);
    };
    let path = session_path()?;
    let bytes =
        std::fs::read(&path).map_err(|_| anyhow!("not logged in (no {})", path.display()))?;
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|_| anyhow!("{} is not a session file; log in again", path.display()))?;
    let server = doc["server"]
        .as_str()
        .ok_or_else(|| anyhow!("the session names no server; log in again"))?;
    Ok(Some(Client::new(server, Some(ca))?))
}

impl Session {
    /// Renew the access token with the refresh token when it expires within 30 s.
    pub(crate) fn renew_if_due(&mut self) -> Result<()> {
        let expires_at = self.doc["expires_at"].as_i64().unwrap_or(0);
        if now_s()? < expires_at - 30 {
            return Ok(());
        }
        let Some(refresh) = self.doc["refresh_token"].as_str().map(String::from) else {
            bail!("the session has expired; log in again");
        };
        let url = format!("{}/auth/token", self.client.base());
        let proof = self.key.proof("POST", &url, None)?;
        let body = format!("grant_type=refresh_token&refresh_token={refresh}");
        let (status, text) = self.client.request(
            "POST",
            "/auth/token",
            &[("DPoP", proof)],
            Some(("application/x-www-form-urlencoded", body.into_bytes())),
        )?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status != 200 {
            bail!(
                "the session has ended ({}); log in again",
                v["error_description"].as_str().unwrap_or("refused")
            );
        }
        let token = v["access_token"]
            .as_str()
            .ok_or_else(|| anyhow!("the server sent no access token"))?;
        self.token = token.to_string();
        self.doc["access_token"] = json!(token);
        self.doc["refresh_token"] = v["refresh_token"].clone();
        self.doc["expires_at"] = json!(now_s()? + v["expires_in"].as_i64().unwrap_or(0));
        if let Some(path) = &self.path {
            crate::write_private(
                path,
                serde_json::to_string_pretty(&self.doc)?.as_bytes(),
                true,
            )?;
        }
        Ok(())
    }

    /// A request signed with the session: the token and a fresh proof for method and URL.
    fn send(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<(u16, String)> {
        self.send_typed(method, path, body.map(|b| ("application/fhir+json", b)))
    }

    pub(crate) fn send_typed(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<(u16, String)> {
        let path_only = path.split(['?', '#']).next().unwrap_or(path);
        let url = format!("{}{path_only}", self.client.base());
        let proof = self.key.proof(method, &url, Some(&self.token))?;
        let headers = [
            ("Authorization", format!("DPoP {}", self.token)),
            ("DPoP", proof),
        ];
        self.client.request(method, path, &headers, body)
    }

    /// A signed JSON request; a refusal becomes a one-line error.
    pub(crate) fn json(&self, method: &str, path: &str, body: &Value) -> Result<Value> {
        let body = (!body.is_null()).then(|| ("application/json", body.to_string().into_bytes()));
        let (status, text) = self.send_typed(method, path, body)?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            bail!("{} (HTTP {status})", outcome_text(&v));
        }
        Ok(v)
    }
}

pub fn whoami(ca_cert: Option<&std::path::Path>) -> Result<()> {
    let s = load_session(session_client(ca_cert)?.as_ref())?;
    let (status, text) = s.send("GET", "/auth/whoami", None)?;
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status != 200 {
        bail!("{} (HTTP {status}); log in again", outcome_text(&v));
    }
    println!(
        "account {} ({}){}",
        v["account"].as_str().unwrap_or("?"),
        v["role"].as_str().unwrap_or("?"),
        v["link"]
            .as_str()
            .filter(|l| !l.is_empty())
            .map(|l| format!(", {l}"))
            .unwrap_or_default()
    );
    Ok(())
}

/// End the session on the server (its access token and refresh tokens; with `everywhere`,
/// every session of the account) and forget it here.
pub fn logout(ca_cert: Option<&std::path::Path>, everywhere: bool) -> Result<()> {
    let path = session_path()?;
    if !path.exists() {
        println!("not logged in");
        return Ok(());
    }
    // The file is removed whatever the server says; a session that cannot be ended there
    // (expired, server away) is reported.
    let ended = read_session(session_client(ca_cert)?.as_ref()).and_then(|mut s| {
        s.renew_if_due()?;
        let refresh = s.doc["refresh_token"].clone();
        s.json(
            "POST",
            "/auth/logout",
            &json!({"refresh_token": refresh, "everywhere": everywhere}),
        )
    });
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    match ended {
        Ok(_) => println!(
            "logged out (session ended on the server; removed {})",
            path.display()
        ),
        Err(e) => println!(
            "removed {}; the server did not confirm the end of the session: {e}",
            path.display()
        ),
    }
    Ok(())
}

/// `medvault fhir METHOD PATH [FILE]`: a signed request (relative paths are under `/fhir`);
/// prints the answer body.
pub fn fhir(
    ca_cert: Option<&std::path::Path>,
    method: &str,
    path: &str,
    file: Option<&std::path::Path>,
) -> Result<()> {
    let method = method.to_ascii_uppercase();
    if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE") {
        bail!("METHOD must be GET, POST, PUT, PATCH or DELETE");
    }
    // A path with a leading slash is used as it is (`/fhir/...`, `/ledger/entries`);
    // otherwise it is relative to the FHIR base.
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/fhir/{path}")
    };
    let body = match file {
        Some(f) => Some(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?),
        None => None,
    };
    let s = load_session(session_client(ca_cert)?.as_ref())?;
    let (status, text) = s.send(&method, &path, body)?;
    if !text.is_empty() {
        println!("{text}");
    }
    if !(200..300).contains(&status) {
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        bail!("{} (HTTP {status})", outcome_text(&v));
    }
    Ok(())
}

/// `medvault admin ...`: account administration with the current session.
pub fn admin(
    ca_cert: Option<&std::path::Path>,
    method: &str,
    path: &str,
    body: Value,
) -> Result<Value> {
    let s = load_session(session_client(ca_cert)?.as_ref())?;
    s.json(method, path, &body)
}
