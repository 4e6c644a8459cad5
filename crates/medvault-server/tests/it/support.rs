//! Test harness: a real data directory (SQLite file + blob dir) in a temp dir, a manual clock,
//! deterministic randomness, and helpers to call the router in-process.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use medvault_crypto::{DeterministicRandom, Random};
use medvault_server::api::{router, AppState};
use medvault_server::clock::ManualClock;
use medvault_server::ledger::LedgerConfig;
use medvault_server::repo::Repository;
use medvault_server::vault::Vault;
use medvault_server::{open_data_dir, DataDir};
use serde_json::Value;
use tower::ServiceExt;

pub const BASE: &str = "https://ehr.test";
/// 2026-11-23T10:00:00Z
pub const T0: i64 = 1_795_428_000_000;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub data: DataDir,
    pub repo: Arc<Repository>,
    pub clock: Arc<ManualClock>,
    pub app: Router,
    pub shares: Vec<String>,
    /// The one-time bootstrap token `init` printed (creates the first admin).
    pub bootstrap: String,
}

impl Harness {
    /// A vault with `threshold` of `count` shares, sealed.
    pub fn sealed(threshold: u8, count: u8, seed: u64) -> Harness {
        Harness::build(threshold, count, seed, LedgerConfig::default())
    }

    /// A 1-of-1 vault, unsealed, signing ledger checkpoints as `ledger` says.
    pub fn unsealed_with(ledger: LedgerConfig) -> Harness {
        let h = Harness::build(1, 1, 7, ledger);
        h.repo.vault().submit_share(&h.shares[0]).unwrap();
        h
    }

    fn build(threshold: u8, count: u8, seed: u64, ledger: LedgerConfig) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let data = open_data_dir(&dir.path().join("data")).unwrap();
        let rng: Arc<dyn Random> = Arc::new(DeterministicRandom::new(seed));
        let (issued, token) = Vault::initialize(&*data.store, &*rng, threshold, count).unwrap();
        let bootstrap = token.to_string();
        let shares = issued
            .shares
            .iter()
            .map(|s| s.encode().to_string())
            .collect();
        let vault = Arc::new(Vault::new(data.store.clone(), rng.clone()));
        let clock = Arc::new(ManualClock::new(T0));
        let repo = Arc::new(
            Repository::new(
                data.store.clone(),
                data.blobs.clone(),
                vault,
                clock.clone(),
                rng,
            )
            .with_ledger_config(ledger),
        );
        // Most tests exercise FHIR behaviour without accounts; access control has its own
        // tests, on routers that require tokens.
        let app = router(AppState::new(repo.clone(), BASE).allowing_anonymous(true));
        Harness {
            dir,
            data,
            repo,
            clock,
            app,
            shares,
            bootstrap,
        }
    }

    /// A 1-of-1 vault, unsealed, whose FHIR API requires a token (the production default).
    pub fn unsealed_requiring_auth() -> Harness {
        let mut h = Harness::unsealed();
        h.app = router(AppState::new(h.repo.clone(), BASE));
        h
    }

    /// A 1-of-1 vault, unsealed.
    pub fn unsealed() -> Harness {
        let h = Harness::sealed(1, 1, 7);
        h.repo.vault().submit_share(&h.shares[0]).unwrap();
        h
    }

    pub fn db_path(&self) -> std::path::PathBuf {
        DataDir::database_path(&self.data.path)
    }

    pub async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> Resp {
        self.call_with(method, uri, body, &[]).await
    }

    pub async fn call_with(
        &self,
        method: &str,
        uri: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(uri);
        let has_ct = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if body.is_some() && !has_ct {
            req = req.header("content-type", "application/fhir+json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(v) => Body::from(v.to_string()),
            None => Body::empty(),
        };
        self.raw(req.body(body).unwrap()).await
    }

    pub async fn raw(&self, req: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Resp {
            status,
            headers,
            json,
        }
    }

    /// Create a resource and return its id.
    pub async fn create(&self, resource: Value) -> String {
        let rtype = resource["resourceType"].as_str().unwrap().to_string();
        let r = self
            .call("POST", &format!("/fhir/{rtype}"), Some(resource))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
        r.json["id"].as_str().unwrap().to_string()
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub json: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Assert this is an error answered with an OperationOutcome.
    pub fn assert_outcome(&self, status: StatusCode) {
        assert_eq!(self.status, status, "{}", self.json);
        assert_eq!(
            self.json["resourceType"], "OperationOutcome",
            "{}",
            self.json
        );
        assert!(self.json["issue"][0]["code"].is_string(), "{}", self.json);
    }
}

pub fn patient(family: &str, given: &str, birth: &str) -> Value {
    serde_json::json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:mrn", "value": format!("MRN-{family}-{given}")}],
        "name": [{"family": family, "given": [given]}],
        "gender": "female",
        "birthDate": birth,
    })
}

pub fn observation(patient_id: &str, code: &str, date: &str, value: u32) -> Value {
    serde_json::json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{patient_id}")},
        "effectiveDateTime": date,
        "valueQuantity": {"value": value, "unit": "/min"},
    })
}
