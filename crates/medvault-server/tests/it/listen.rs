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
        tls: Some(TlsFiles {
            cert: cert_path.clone(),
            key: key_path,
        }),
        ..ServeOptions::new("127.0.0.1:0".parse().unwrap())
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

/// Slow clients (slowloris): a client that dribbles its header, or connects and sends
/// nothing, is disconnected once the header read timeout passes; a complete request is
/// still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_too_slow_to_send_a_header_are_disconnected() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    let h = Harness::unsealed();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let opts = ServeOptions {
        header_read_timeout: Duration::from_millis(500),
        ..ServeOptions::new("127.0.0.1:0".parse().unwrap())
    };
    let repo = h.repo.clone();
    let server = tokio::spawn(async move {
        serve(repo, opts, move |addr, _| {
            let _ = tx.send(addr);
        })
        .await
    });
    let addr = rx.await.unwrap();
    let (answer, dribbler_cut_off, idle_closed) = tokio::task::spawn_blocking(move || {
        let mut ok = TcpStream::connect(addr).unwrap();
        ok.write_all(b"GET /sys/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        ok.read_to_string(&mut answer).unwrap();

        // One header byte every 50 ms, never finishing: the server must hang up. (The limit
        // of 20 s only stops the test from running forever if it does not.)
        let mut slow = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        let mut cut_off = false;
        let header = b"GET /sys/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
        for byte in header.iter().chain(std::iter::repeat(&b'a')) {
            if slow.write_all(&[*byte]).is_err() {
                cut_off = true;
                break;
            }
            if started.elapsed() > Duration::from_secs(20) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }

        // A connection that sends nothing is closed too: the read ends (EOF or reset)
        // instead of running into the client's own 20 s read timeout.
        let mut idle = TcpStream::connect(addr).unwrap();
        idle.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buf = Vec::new();
        let idle_closed = match idle.read_to_end(&mut buf) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        (answer, cut_off, idle_closed)
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        dribbler_cut_off,
        "a client dribbling its header was never disconnected"
    );
    assert!(idle_closed, "an idle connection was never closed");
    server.abort();
}
