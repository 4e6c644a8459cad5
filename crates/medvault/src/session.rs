//! `medvault register|login|whoami|logout|fhir`: the client side of OPAQUE and of DPoP-bound
//! sessions. The password never leaves this process; the session file holds the access token
//! and the private DPoP key that every request is signed with.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use medvault_crypto::{Random, SystemRandom};
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

/// The password: `MEDVAULT_PASSWORD`, or one line from stdin (prompted on a terminal).
fn password() -> Result<Zeroizing<String>> {
    if let Ok(p) = std::env::var("MEDVAULT_PASSWORD") {
        if !p.is_empty() {
            return Ok(Zeroizing::new(p));
        }
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        // Without a terminal-control dependency the input is echoed; say so.
        eprint!("password (shown as you type; set MEDVAULT_PASSWORD to avoid that): ");
        std::io::stderr().flush()?;
    }
    let mut line = Zeroizing::new(String::new());
    stdin.lock().read_line(&mut line)?;
    let p = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_string());
    if p.is_empty() {
        bail!("no password given");
    }
    Ok(p)
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
    let r = step(
        client,
        "/auth/opaque/register/finish",
        &[],
        &json!({
            "token": token, "login": login, "national_id": national_id,
            "upload": b64(&finish.message.serialize()),
            "binding": r["binding"],
        }),
    )?;
    println!(
        "registered account {} as {}",
        r["account"].as_str().unwrap_or("?"),
        r["role"].as_str().unwrap_or("?")
    );
    Ok(())
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

pub fn login(client: &Client, login: &str) -> Result<()> {
    let pw = password()?;
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
    if finished.is_err() {
        bail!("login failed: wrong login name or password");
    }
    let r = r?;
    let session = json!({
        "server": client.base(),
        "account": r["account"],
        "role": r["role"],
        "access_token": r["access_token"],
        "expires_in": r["expires_in"],
        "dpop_key": b64(&pkcs8),
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
    println!(
        "logged in as {} ({}); session in {} (expires in {} s)",
        login,
        r["role"].as_str().unwrap_or("?"),
        path.display(),
        r["expires_in"]
    );
    Ok(())
}

struct Session {
    client: Client,
    token: String,
    key: DpopKey,
}

fn load_session(ca_cert: Option<&std::path::Path>) -> Result<Session> {
    let path = session_path()?;
    let bytes =
        std::fs::read(&path).map_err(|_| anyhow!("not logged in (no {})", path.display()))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|_| anyhow!("{} is not a session file; log in again", path.display()))?;
    let server = v["server"]
        .as_str()
        .ok_or_else(|| anyhow!("the session names no server; log in again"))?;
    let token = v["access_token"]
        .as_str()
        .ok_or_else(|| anyhow!("the session has no token; log in again"))?
        .to_string();
    let pkcs8 = Zeroizing::new(unb64(&v["dpop_key"], "session key")?);
    Ok(Session {
        client: Client::new(server, ca_cert)?,
        token,
        key: DpopKey::from_pkcs8(&pkcs8)?,
    })
}

impl Session {
    /// A request signed with the session: the token and a fresh proof for method and URL.
    fn send(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<(u16, String)> {
        let path_only = path.split(['?', '#']).next().unwrap_or(path);
        let url = format!("{}{path_only}", self.client.base());
        let proof = self.key.proof(method, &url, Some(&self.token))?;
        let headers = [
            ("Authorization", format!("DPoP {}", self.token)),
            ("DPoP", proof),
        ];
        self.client.request(
            method,
            path,
            &headers,
            body.map(|b| ("application/fhir+json", b)),
        )
    }
}

pub fn whoami(ca_cert: Option<&std::path::Path>) -> Result<()> {
    let s = load_session(ca_cert)?;
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

pub fn logout() -> Result<()> {
    let path = session_path()?;
    match std::fs::remove_file(&path) {
        Ok(()) => {
            println!("logged out (removed {})", path.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("not logged in");
            Ok(())
        }
        Err(e) => Err(e).context(format!("removing {}", path.display())),
    }
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
    let s = load_session(ca_cert)?;
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
