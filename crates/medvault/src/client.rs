//! A small blocking HTTP client for the operator commands (unseal, status, import, ...).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

/// A client for one medvault server.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
}

impl Client {
    /// `ca_cert`: PEM file of the CA (or self-signed certificate) to trust for https.
    pub fn new(server: &str, ca_cert: Option<&Path>) -> Result<Client> {
        // A timeout on each step of a request rather than one over the whole of it: with a
        // deadline covering name resolution, ureq resolves the host on a new thread per
        // request (so it can give up on it), even for an IP address and a pooled
        // connection. Without one it resolves on this thread, which for `127.0.0.1` or any
        // address literal is parsing, and for a name is the system resolver with its own
        // timeouts.
        let step = Some(std::time::Duration::from_secs(600));
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(std::time::Duration::from_secs(30)))
            .timeout_send_request(step)
            .timeout_send_body(step)
            .timeout_recv_response(step)
            .timeout_recv_body(step);
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading CA certificate {}", path.display()))?;
            let cert = ureq::tls::Certificate::from_pem(&pem)
                .map_err(|e| anyhow!("CA certificate {}: {e}", path.display()))?;
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
                    .build(),
            );
        }
        Ok(Client {
            agent: config.build().new_agent(),
            base: server.trim_end_matches('/').to_string(),
        })
    }

    /// GET a JSON document.
    pub fn get(&self, path: &str) -> Result<Value> {
        let resp = self
            .agent
            .get(&format!("{}{path}", self.base))
            .call()
            .map_err(|e| anyhow!("cannot reach {}: {e}", self.base))?;
        Self::json(resp)
    }

    /// GET a text document (checkpoints, keys).
    pub fn get_text(&self, path: &str) -> Result<String> {
        let mut resp = self
            .agent
            .get(&format!("{}{path}", self.base))
            .call()
            .map_err(|e| anyhow!("cannot reach {}: {e}", self.base))?;
        let status = resp.status();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| anyhow!("reading the response: {e}"))?;
        if !status.is_success() {
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            bail!("{} (HTTP {})", outcome_text(&value), status.as_u16());
        }
        Ok(text)
    }

    /// The server's base URL (what DPoP proofs name).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Any request with extra headers; returns the status and the body text, whatever the
    /// status (the caller decides what an error is).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = match body {
            Some((content_type, bytes)) => {
                let req = req
                    .header("Content-Type", content_type)
                    .body(bytes)
                    .map_err(|e| anyhow!("building the request: {e}"))?;
                self.agent.run(req)
            }
            None => {
                let req = req
                    .body(())
                    .map_err(|e| anyhow!("building the request: {e}"))?;
                self.agent.run(req)
            }
        };
        let mut resp = resp.map_err(|e| anyhow!("cannot reach {}: {e}", self.base))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| anyhow!("reading the response: {e}"))?;
        Ok((status, text))
    }

    /// POST a JSON document with the given content type.
    pub fn post(&self, path: &str, content_type: &str, body: &Value) -> Result<Value> {
        let resp = self
            .agent
            .post(&format!("{}{path}", self.base))
            .header("Content-Type", content_type)
            .send(body.to_string())
            .map_err(|e| anyhow!("cannot reach {}: {e}", self.base))?;
        Self::json(resp)
    }

    fn json(mut resp: ureq::http::Response<ureq::Body>) -> Result<Value> {
        let status = resp.status();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| anyhow!("reading the response: {e}"))?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .map_err(|_| anyhow!("the server answered {status} with a non-JSON body"))?
        };
        if !status.is_success() {
            bail!("{} (HTTP {})", outcome_text(&value), status.as_u16());
        }
        Ok(value)
    }
}

/// The diagnostics of an OperationOutcome, joined.
pub fn outcome_text(v: &Value) -> String {
    let issues = v.get("issue").and_then(Value::as_array);
    match issues {
        Some(list) if !list.is_empty() => list
            .iter()
            .map(|i| {
                let diag = i
                    .get("diagnostics")
                    .and_then(Value::as_str)
                    .unwrap_or("error");
                match i.pointer("/expression/0").and_then(Value::as_str) {
                    Some(expr) => format!("{expr}: {diag}"),
                    None => diag.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
        _ => "the server refused the request".to_string(),
    }
}
