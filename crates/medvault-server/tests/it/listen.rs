//! The listen policy (plain HTTP only on loopback) and a real TLS listener on loopback.

use std::net::SocketAddr;

use medvault_server::{check_listen, serve, ServeOptions, TlsFiles};

use crate::support::Harness;

#[test]
fn plain_http_is_only_allowed_on_loopback() {
    let lo: SocketAddr = "127.0.0.1:8200".parse().unwrap();
    let lo6: SocketAddr = "[::1]:8200".parse().unwrap();
    let any: SocketAddr = "0.0.0.0:8200".parse().unwrap();
    assert!(check_listen(lo, false, false).is_ok());
    assert!(check_listen(lo6, false, false).is_ok());
    let err = check_listen(any, false, false).unwrap_err().to_string();
    assert!(err.contains("--danger-allow-plain-http"), "{err}");
    assert!(check_listen(any, true, false).is_ok());
    assert!(check_listen(any, false, true).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_on_loopback() {
    let h = Harness::unsealed();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = h.dir.path().join("cert.pem");
    let key_path = h.dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let opts = ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: None,
        tls: Some(TlsFiles {
            cert: cert_path.clone(),
            key: key_path,
        }),
        danger_allow_plain_http: false,
        danger_no_auth: false,
        alert_webhook: None,
        read_limits: Default::default(),
    };
    let repo = h.repo.clone();
    let server = tokio::spawn(async move {
        serve(repo, opts, move |addr, url| {
            let _ = tx.send((addr, url.to_string()));
        })
        .await
    });
    let (addr, url) = rx.await.unwrap();
    assert_eq!(url, format!("https://{addr}"));
    let pem = std::fs::read(&cert_path).unwrap();
    let body = tokio::task::spawn_blocking(move || {
        let root = ureq::tls::Certificate::from_pem(&pem).unwrap();
        let agent = ureq::Agent::config_builder()
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&[root]))
                    .build(),
            )
            .build()
            .new_agent();
        let https = format!("https://localhost:{}/sys/health", addr.port());
        let ok = agent
            .get(&https)
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        // Plain HTTP to the TLS port does not get an answer.
        let plain = agent
            .get(&format!("http://localhost:{}/sys/health", addr.port()))
            .call();
        (ok, plain.is_err())
    })
    .await
    .unwrap();
    assert!(body.0.contains("\"sealed\":false"), "{}", body.0);
    assert!(body.1, "plain HTTP must not be answered on the TLS port");
    server.abort();
}
