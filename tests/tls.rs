//! TLS straight from the gateway: `wss://` and `https://` with a test
//! certificate authority, a plain connection to the TLS port, the
//! certificate replaced while the gateway runs (on SIGHUP and when its
//! files change), and certificates that cannot be used at start.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::flood;
use common::process::{command, Process};
use common::{Client, TestServer, PATIENCE};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ClientConfig;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::MaybeTlsStream;
use uuid::Uuid;

/// A certificate authority the test clients trust, and the files the
/// gateway is pointed at.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    /// A new authority, and a first certificate from it for `name`.
    fn new(name: &str) -> (Pki, CertificateDer<'static>) {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "concierge test CA");
        let ca = params.self_signed(&ca_key).expect("CA certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let pki = Pki {
            ca,
            ca_key,
            dir,
            cert,
            key,
        };
        let leaf = pki.issue(name);
        (pki, leaf)
    }

    /// Issues a certificate for 127.0.0.1 with the common name `name` and
    /// puts it and its key in place of the gateway's files, each replaced
    /// at once (written aside, then renamed over, as renewal tools do).
    fn issue(&self, name: &str) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("certificate");
        replace(&self.cert, cert.pem().as_bytes());
        replace(&self.key, key.serialize_pem().as_bytes());
        cert.der().clone()
    }

    /// A client configuration trusting only this authority.
    fn client(&self) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("CA accepted");
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        // Every handshake a full one: a resumed session presents no
        // certificate, and the client would report the one it stored.
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }

    /// An HTTP client trusting only this authority.
    fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca.pem().as_bytes()).expect("CA PEM"),
            )
            .build()
            .expect("HTTP client")
    }

    /// The gateway's arguments, with `workers` worker threads (each
    /// accepts connections with its own acceptor).
    fn args(&self, data: &Path, workers: usize) -> Vec<String> {
        [
            "--bind",
            "127.0.0.1:0",
            "--workers",
            &workers.to_string(),
            "--data-dir",
            &data.display().to_string(),
            "--tls-cert",
            &self.cert.display().to_string(),
            "--tls-key",
            &self.key.display().to_string(),
        ]
        .map(String::from)
        .to_vec()
    }
}

fn replace(path: &Path, contents: &[u8]) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).expect("write");
    std::fs::rename(&aside, path).expect("rename");
}

/// The gateway binary serving `pki`'s files (its log is read: it says
/// when the certificate was reloaded), and its address.
async fn tls_process(pki: &Pki, data: &Path, workers: usize) -> (Process, SocketAddr) {
    let args = pki.args(data, workers);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gateway = Process::spawn(command(&args));
    let addr = gateway.listening().await;
    (gateway, addr)
}

/// A gateway in this process serving `pki`'s files.
fn tls_server(pki: &Pki) -> TestServer {
    let (cert, key) = (pki.cert.clone(), pki.key.clone());
    TestServer::with(move |settings| {
        settings.tls_cert = cert;
        settings.tls_key = key;
    })
}

/// Opens a `wss://` connection; returns it with the certificate the
/// gateway presented.
async fn connect_wss(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> (Client, CertificateDer<'static>) {
    let tcp = TcpStream::connect(addr).await.expect("connects");
    connect_wss_over(tcp, addr, config).await
}

/// Completes a TLS handshake over `tcp`, a connection to `addr`.
async fn tls_over(
    tcp: TcpStream,
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    tokio::time::timeout(
        PATIENCE,
        TlsConnector::from(config.clone()).connect(ServerName::IpAddress(addr.ip().into()), tcp),
    )
    .await
    .expect("handshake in time")
    .expect("TLS handshake")
}

/// As [`connect_wss`], over a TCP connection already made to `addr`.
async fn connect_wss_over(
    tcp: TcpStream,
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> (Client, CertificateDer<'static>) {
    let tls = tls_over(tcp, addr, config).await;
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a certificate")
        .clone();
    let (ws, _) =
        tokio_tungstenite::client_async(format!("wss://{addr}/ws"), MaybeTlsStream::Rustls(tls))
            .await
            .expect("upgrades");
    let client = Client {
        ws,
        uuid: Uuid::nil(),
        name: String::new(),
        fs_key: String::new(),
    };
    (client, presented)
}

/// `from` sends `to` a MESSAGE by name, which arrives with its data.
async fn relay(from: &mut Client, to: &mut Client, data: &str) {
    from.send(
        json!({"type": "MESSAGE", "target": {"type": "NAME", "name": to.name}, "data": data}),
    )
    .await;
    from.expect("OK").await;
    let got = to.expect("MESSAGE").await;
    assert_eq!(got["data"], data);
    assert_eq!(got["origin"]["name"], from.name);
}

#[tokio::test]
async fn a_wss_client_identifies_and_exchanges_messages() {
    let (pki, first) = Pki::new("first.test");
    let server = tls_server(&pki);
    let config = pki.client();
    let (mut alice, presented) = connect_wss(server.addr, &config).await;
    assert_eq!(presented, first);
    alice.identify("alice").await;
    let (mut bob, _) = connect_wss(server.addr, &config).await;
    bob.identify("bob").await;
    alice.expect("CLIENT_JOINED").await;
    relay(&mut alice, &mut bob, "over TLS").await;
    relay(&mut bob, &mut alice, "and back").await;
    // A frame larger than a TLS record (16 KiB) arrives whole.
    let big = "x".repeat(40_000);
    relay(&mut alice, &mut bob, &big).await;
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn files_health_and_metrics_are_served_over_https() {
    let (pki, _) = Pki::new("files.test");
    let server = tls_server(&pki);
    let (mut carol, _) = connect_wss(server.addr, &pki.client()).await;
    carol.identify("carol").await;
    let http = pki.http();
    let url = format!("https://{}/fs/carol/reports/report.txt", server.addr);
    let body = "all systems nominal\n".repeat(5_000);
    let put = http
        .put(&url)
        .header("Authorization", &carol.fs_key)
        .body(body.clone())
        .send()
        .await
        .expect("PUT is answered");
    assert_eq!(put.status(), 201);
    let get = http
        .get(&url)
        .header("Authorization", carol.uuid.to_string())
        .send()
        .await
        .expect("GET is answered");
    assert_eq!(get.status(), 200);
    assert_eq!(get.text().await.expect("body"), body);
    for path in ["/healthz", "/metrics"] {
        let resp = http
            .get(format!("https://{}{path}", server.addr))
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), 200, "{path}");
    }
    // Plain HTTP to the TLS port gets no answer.
    let plain = tokio::time::timeout(
        PATIENCE,
        reqwest::get(format!("http://{}/healthz", server.addr)),
    )
    .await
    .expect("not left hanging");
    assert!(plain.is_err(), "{plain:?}");
}

#[tokio::test]
async fn a_plain_connection_to_the_tls_port_fails_and_the_gateway_keeps_serving() {
    let (pki, _) = Pki::new("plain.test");
    let server = tls_server(&pki);
    for _ in 0..3 {
        let plain = tokio::time::timeout(
            PATIENCE,
            tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr)),
        )
        .await
        .expect("refused, not left hanging");
        assert!(plain.is_err(), "a plain WebSocket was accepted");
    }
    // A client that trusts another authority is refused too.
    let (stranger, _) = Pki::new("stranger.test");
    let tcp = TcpStream::connect(server.addr).await.expect("connects");
    let refused = TlsConnector::from(stranger.client())
        .connect(ServerName::IpAddress(server.addr.ip().into()), tcp)
        .await;
    assert!(
        refused.is_err(),
        "a certificate from an unknown CA was trusted"
    );
    let (mut client, _) = connect_wss(server.addr, &pki.client()).await;
    client.identify("survivor").await;
}

#[tokio::test]
async fn changed_files_are_served_to_new_connections_while_open_ones_keep_going() {
    let (pki, first) = Pki::new("first.test");
    let data = tempfile::tempdir().expect("temp dir");
    let (mut gateway, addr) = tls_process(&pki, data.path(), 1).await;
    let config = pki.client();
    let (mut old, presented) = connect_wss(addr, &config).await;
    assert_eq!(presented, first);
    old.identify("old").await;

    // Not atomically, as a hand-copied renewal: for a moment the new
    // certificate sits beside the old key; the gateway keeps the old pair.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "second.test");
    let cert = params
        .signed_by(&key, &pki.ca, &pki.ca_key)
        .expect("certificate");
    std::fs::write(&pki.cert, cert.pem()).expect("write");
    // Files are looked at every 2 s.
    let patience = PATIENCE + Duration::from_secs(2);
    let warning = gateway
        .wait_for_line(
            &[
                "TLS files changed: keeping the current TLS certificate",
                "is not the key of the certificate",
            ],
            patience,
        )
        .await;
    assert!(warning.contains("WARN"), "{warning}");
    let (_, presented) = connect_wss(addr, &config).await;
    assert_eq!(presented, first, "a certificate without its key was served");
    std::fs::write(&pki.key, key.serialize_pem()).expect("write");

    gateway
        .wait_for_line(
            &[
                "TLS files changed: TLS certificate loaded",
                "subject=second.test",
            ],
            patience,
        )
        .await;
    let (mut new, presented) = connect_wss(addr, &config).await;
    assert_eq!(
        &presented,
        cert.der(),
        "the old certificate after the reload"
    );
    new.identify("new").await;
    old.expect("CLIENT_JOINED").await;
    relay(&mut old, &mut new, "from the first certificate").await;
    relay(&mut new, &mut old, "from the second").await;
}

/// Worker threads of the SIGHUP test's gateway.
const WORKERS: usize = 2;

#[tokio::test]
async fn sighup_reloads_the_certificate_and_a_bad_one_is_refused() {
    let (pki, first) = Pki::new("first.test");
    let data = tempfile::tempdir().expect("temp dir");
    let (mut gateway, addr) = tls_process(&pki, data.path(), WORKERS).await;
    let log = gateway.log();
    assert!(log.contains("listening: wss://"), "{log}");
    assert!(log.contains("TLS certificate loaded"), "{log}");
    assert!(log.contains("subject=first.test"), "{log}");
    assert!(!log.contains("PRIVATE KEY"), "{log}");
    let config = pki.client();
    let (mut old, presented) = connect_wss(addr, &config).await;
    assert_eq!(presented, first);
    old.identify("old").await;

    // A broken renewal: reported, naming the file; the old pair stays.
    replace(&pki.cert, b"not a certificate\n");
    gateway.signal("HUP");
    let warning = gateway
        .wait_for_line(
            &["SIGHUP received", "keeping the current TLS certificate"],
            PATIENCE,
        )
        .await;
    assert!(
        warning.contains(&format!("invalid TLS certificate {}", pki.cert.display())),
        "{warning}"
    );
    assert!(warning.contains("WARN"), "{warning}");
    let (_, presented) = connect_wss(addr, &config).await;
    assert_eq!(presented, first);

    let second = pki.issue("second.test");
    gateway.signal("HUP");
    gateway
        .wait_for_line(
            &[
                "SIGHUP received: TLS certificate loaded",
                "subject=second.test",
            ],
            PATIENCE,
        )
        .await;
    // Once the reload is logged, every new handshake gets the new pair,
    // whichever worker accepts it.
    let handshakes = (0..4 * WORKERS).map(|_| connect_wss(addr, &config));
    let mut connections = futures_util::future::join_all(handshakes).await;
    for (_, presented) in &connections {
        assert_eq!(presented, &second, "the old certificate after the reload");
    }
    let (mut new, _) = connections.swap_remove(0);
    drop(connections);
    new.identify("new").await;
    old.expect("CLIENT_JOINED").await;
    relay(&mut old, &mut new, "still here").await;
    relay(&mut new, &mut old, "welcome").await;

    gateway.signal("TERM");
    assert_eq!(old.expect_close().await.0, 1001);
    let status = gateway.exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}:\n{}", gateway.log());
}

/// Runs the binary to its end; returns its exit status and stderr.
async fn fails(args: &[String]) -> (Option<i32>, String) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = tokio::time::timeout(Duration::from_secs(20), command(&args).output())
        .await
        .expect("it exits")
        .expect("it runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("listening"), "{stderr}");
    (output.status.code(), stderr)
}

#[tokio::test]
async fn a_certificate_that_cannot_be_used_is_named_and_exits_3() {
    let (pki, _) = Pki::new("start.test");
    let data = tempfile::tempdir().expect("temp dir");
    let mut args = pki.args(data.path(), 1);
    let cert_arg = args.iter().position(|a| a == "--tls-cert").expect("flag") + 1;

    let missing = pki.dir.path().join("missing.pem");
    args[cert_arg] = missing.display().to_string();
    let (code, stderr) = fails(&args).await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "concierge: cannot read the TLS certificate {}: No such file or directory",
            missing.display()
        )),
        "{stderr}"
    );

    let garbage = pki.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64!\n").expect("write");
    args[cert_arg] = garbage.display().to_string();
    let (code, stderr) = fails(&args).await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("invalid TLS certificate {}: ", garbage.display())),
        "{stderr}"
    );

    // The key of another certificate.
    let (other, _) = Pki::new("other.test");
    args[cert_arg] = other.cert.display().to_string();
    let (code, stderr) = fails(&args).await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the TLS key {} is not the key of the certificate {}",
            pki.key.display(),
            other.cert.display()
        )),
        "{stderr}"
    );
    // Nothing was touched.
    assert!(!data.path().join("fs").exists());

    // A certificate without its key is a wrong setting.
    let dir = data.path().display().to_string();
    let cert = pki.cert.display().to_string();
    let args = ["--data-dir", &dir, "--tls-cert", &cert].map(String::from);
    let (code, stderr) = fails(&args).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "invalid settings: tls_cert = \"{cert}\" (set by --tls-cert) needs tls_key as well"
        )),
        "{stderr}"
    );
}

/// A client has 3 seconds to complete its TLS handshake (README "TLS",
/// SECURITY.md's limits): a connection to the TLS port that sends nothing,
/// and one that sends half a ClientHello, are dropped at that limit, not
/// before and not never (a silent connection costs the gateway a socket).
#[tokio::test]
async fn a_tls_handshake_not_completed_within_3_s_is_dropped() {
    const LIMIT: Duration = Duration::from_secs(3);
    let (pki, _) = Pki::new("slow.test");
    let server = tls_server(&pki);
    // A TLS record header announcing a 512-byte handshake message, a
    // ClientHello's type and length, and then nothing more.
    const HALF_HELLO: &[u8] = &[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let addr = server.addr;
    let dropped_after = |hello: &'static [u8]| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = TcpStream::connect(addr).await.expect("connects");
        let started = std::time::Instant::now();
        tcp.write_all(hello).await.expect("writes");
        let mut buf = [0u8; 1024];
        let patience = LIMIT + Duration::from_secs(2);
        match tokio::time::timeout(patience, tcp.read(&mut buf)).await {
            Err(_) => panic!("still connected {patience:?} into a handshake that never ends"),
            // Nothing is answered to half a ClientHello.
            Ok(Ok(n)) if n > 0 => panic!("answered with {n} bytes"),
            // The end of the stream, or a reset.
            Ok(_) => started.elapsed(),
        }
    };
    let (silent, half) = tokio::join!(dropped_after(&[]), dropped_after(HALF_HELLO));
    for (who, after) in [("silent", silent), ("half a ClientHello", half)] {
        assert!(
            after >= LIMIT - Duration::from_millis(500),
            "{who}: dropped after {after:?}, before the {LIMIT:?} limit"
        );
    }
    // The gateway still serves.
    let (mut client, _) = connect_wss(server.addr, &pki.client()).await;
    client.identify("patient").await;
}

/// The gateway sets `TCP_USER_TIMEOUT` to `heartbeat_timeout_ms` on a TLS
/// connection too (PROTOCOL.md 2.2 "TCP", README), so the kernel drops a
/// peer that stops acknowledging data.
#[tokio::test]
async fn a_tls_connection_has_the_heartbeat_timeout_as_its_tcp_user_timeout() {
    let (pki, _) = Pki::new("timeout.test");
    let (cert, key) = (pki.cert.clone(), pki.key.clone());
    let server = TestServer::with(move |s| {
        s.tls_cert = cert;
        s.tls_key = key;
        s.heartbeat_timeout_ms = 7_000;
    });
    let (mut client, _) = connect_wss(server.addr, &pki.client()).await;
    // HELLO: the gateway has accepted the connection and taken it over.
    client.identify("kept").await;
    let local = match client.ws.get_ref() {
        MaybeTlsStream::Rustls(tls) => tls.get_ref().0.local_addr().expect("address"),
        _ => unreachable!("a TLS connection"),
    };
    assert_eq!(
        common::user_timeout_of_accepted(server.addr, local),
        Some(Duration::from_secs(7))
    );
}

/// The gateway's close over TLS is followed at once by close_notify and a
/// FIN (PROTOCOL.md 3: "it sends the close frame and then a FIN"; a TLS
/// connection ends cleanly only with close_notify): a client that does not
/// answer the close frame still sees its connection end, cleanly, well
/// before `close_linger_ms` is over.
#[tokio::test]
async fn a_close_over_tls_is_followed_by_close_notify_and_a_fin() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const LINGER: Duration = Duration::from_secs(5);
    let (pki, _) = Pki::new("close.test");
    let (cert, key) = (pki.cert.clone(), pki.key.clone());
    let server = TestServer::with(move |s| {
        s.tls_cert = cert;
        s.tls_key = key;
        s.close_linger_ms = LINGER.as_millis() as u64;
    });
    let tcp = TcpStream::connect(server.addr).await.expect("connects");
    let mut tls = tls_over(tcp, server.addr, &pki.client()).await;
    // The upgrade by hand, then a first frame that is not a payload: 4002.
    let upgrade = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    tls.write_all(upgrade.as_bytes()).await.expect("writes");
    tls.write_all(&flood::text("not json"))
        .await
        .expect("writes");
    /// Reads more of the stream into `got`, before `deadline`.
    async fn more(
        tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
        got: &mut Vec<u8>,
        deadline: tokio::time::Instant,
        what: &str,
    ) {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, tls.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no {what} in time"))
            .expect("reads");
        assert!(n > 0, "the connection ended before the {what}");
        got.extend_from_slice(&chunk[..n]);
    }
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let head = loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break got.drain(..end + 4).collect::<Vec<u8>>();
        }
        more(&mut tls, &mut got, deadline, "answer to the upgrade").await;
    };
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    loop {
        match flood::parse(&got) {
            Some((0x8, payload, _)) => {
                assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4002);
                break;
            }
            Some((_, _, used)) => {
                got.drain(..used);
            }
            None => more(&mut tls, &mut got, deadline, "close frame").await,
        }
    }
    // Not answered: the gateway still ends the stream, cleanly (rustls
    // reports an end without close_notify as an error), at once.
    let end = tokio::time::timeout(Duration::from_secs(1), tls.read(&mut [0u8; 64])).await;
    assert!(
        matches!(end, Ok(Ok(0))),
        "no close_notify and FIN within 1 s of the close frame: {end:?}"
    );
}

/// Every frame reaches a TLS client that reads slowly, the last ones of a
/// burst too: the records rustls holds back while the socket is full (up to
/// 64 KiB) are sent as soon as the socket takes more, not only when another
/// frame, or the next ping, comes along.
#[tokio::test]
async fn a_slow_tls_reader_gets_every_frame_of_a_burst() {
    const MESSAGES: usize = 64;
    const PAD: usize = 32 * 1024;
    let (pki, _) = Pki::new("burst.test");
    let (cert, key) = (pki.cert.clone(), pki.key.clone());
    let server = TestServer::with(move |s| {
        s.tls_cert = cert;
        s.tls_key = key;
        // No ping while the test runs: a ping would push the records
        // held back out too.
        s.heartbeat_interval_ms = 60_000;
        s.heartbeat_timeout_ms = 120_000;
    });
    let config = pki.client();
    let (mut sender, _) = connect_wss(server.addr, &config).await;
    sender.identify("sender").await;
    // Small kernel buffers at both ends (loopback's own let the gateway's
    // socket take half a megabyte at a time): what waits for the reader
    // waits in rustls, and its tail is what rustls still holds when the
    // last frame has been handed to it.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(8 * 1024).expect("SO_RCVBUF");
    let tcp = socket.connect(server.addr).await.expect("connects");
    let local = tcp.local_addr().expect("address");
    let (mut reader, _) = connect_wss_over(tcp, server.addr, &config).await;
    reader.identify("reader").await;
    socket2::SockRef::from(&common::gateway_end(server.addr, local))
        .set_send_buffer_size(16 * 1024)
        .expect("SO_SNDBUF");
    sender.expect("CLIENT_JOINED").await;
    // 2 MiB for the reader, all queued for it (each OK comes once its
    // frame is) before it starts reading.
    let pad = "x".repeat(PAD);
    for i in 0..MESSAGES {
        let target = json!({"type": "NAME", "name": "reader"});
        sender
            .send(json!({"type": "MESSAGE", "target": target, "data": {"i": i, "pad": pad}}))
            .await;
        sender.expect("OK").await;
    }
    // Slower than the gateway writes: its socket stays full.
    for i in 0..MESSAGES {
        let got = reader.expect("MESSAGE").await;
        assert_eq!(got["data"]["i"], i, "in order, none lost");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
