//! Test harness: a real gateway on an ephemeral port, real WebSocket clients.
#![allow(dead_code)] // each test crate uses a different part of the harness

/// Runs each check of a conformance suite against both implementations of
/// a cluster part, as `on_disk::check` (on the test crate's `disk_pair()`) and
/// `on_redis::check` (on its `redis_pair().await`).
#[macro_export]
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod on_disk {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check($crate::disk_pair()).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check($crate::redis_pair().await).await;
                }
            )*
        }
    };
}

pub mod alerts;
pub mod console;
pub mod fleet;
pub mod flood;
pub mod jobs;
pub mod netns;
pub mod process;
pub mod redis;
pub mod relay;

use std::net::SocketAddr;
use std::time::Duration;

use concierge::config::Settings;
use concierge::gateway::Gateway;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

/// How long a test waits for a frame it expects.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// A gateway running on its own actix system thread, stopped on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub data: tempfile::TempDir,
    system: actix_web::rt::System,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::with(|_| {})
    }

    /// Starts a gateway with test-friendly settings changed by `tweak`.
    pub fn with(tweak: impl FnOnce(&mut Settings)) -> TestServer {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("TLOG").unwrap_or_default())
            .try_init();
        let data = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings {
            bind: "127.0.0.1:0".into(),
            workers: 1,
            data_dir: data.path().to_owned(),
            ..Settings::default()
        };
        tweak(&mut settings);
        settings.validate().expect("valid test settings");
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                let gateway = Gateway::start(settings).await.expect("gateway starts");
                tx.send((gateway.addrs[0], actix_web::rt::System::current()))
                    .expect("report address");
                actix_web::rt::spawn(gateway.server);
            });
            // Runs until `System::stop`, which also stops the registry's arbiter.
            let _ = system.run();
        });
        let (addr, system) = rx.recv().expect("gateway started");
        TestServer {
            addr,
            data,
            system,
            thread: Some(thread),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn connect(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    /// Connects with a small, fixed kernel receive buffer (no autotuning),
    /// so that a client which stops reading backs the gateway up quickly.
    pub async fn connect_with_recv_buffer(&self, bytes: u32) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(self.addr).await.expect("connects");
        let (ws, _) = tokio_tungstenite::client_async(self.ws_url(), MaybeTlsStream::Plain(stream))
            .await
            .expect("upgrades");
        Client {
            ws,
            uuid: Uuid::nil(),
            name: String::new(),
            fs_key: String::new(),
        }
    }

    /// Connects and identifies as `name`.
    pub async fn client(&self, name: &str) -> Client {
        let mut client = self.connect().await;
        client.identify(name).await;
        client
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.system.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub uuid: Uuid,
    pub name: String,
    /// The file server key from HELLO.
    pub fs_key: String,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connects");
        Client {
            ws,
            uuid: Uuid::nil(),
            name: String::new(),
            fs_key: String::new(),
        }
    }

    /// Sends IDENTIFY and waits for HELLO.
    pub async fn identify(&mut self, name: &str) {
        self.identify_with(
            json!({"type": "IDENTIFY", "name": name, "version": "0.2.0", "tags": ["test"]}),
        )
        .await;
    }

    /// Sends this IDENTIFY and waits for HELLO.
    pub async fn identify_with(&mut self, identify: Value) {
        let name = identify["name"].as_str().unwrap_or_default().to_owned();
        self.send(identify).await;
        let hello = self.recv().await;
        assert_eq!(hello["type"], "HELLO", "{hello}");
        assert!(hello.get("seq").is_none(), "HELLO carries no seq: {hello}");
        self.uuid = hello["uuid"]
            .as_str()
            .expect("uuid")
            .parse()
            .expect("uuid parses");
        self.fs_key = hello["fs_key"].as_str().expect("fs_key").to_owned();
        self.name = name;
    }

    pub async fn send(&mut self, payload: Value) {
        self.send_text(payload.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// Sends a request and returns its reply, the payload carrying `seq`,
    /// skipping what comes before it (broadcasts).
    pub async fn answer(&mut self, payload: Value, seq: u64) -> Value {
        self.send(payload).await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let reply = self.recv_before(deadline).await;
            if reply["seq"] == seq {
                return reply;
            }
        }
    }

    /// The next frame before `deadline`; panics when none comes in time.
    /// Pings and pongs do not restart the wait: every helper below sets one
    /// deadline for what it expects, so a missing reply or close fails within
    /// [`PATIENCE`] even while the gateway keeps pinging.
    async fn next_before(
        &mut self,
        deadline: tokio::time::Instant,
        expecting: &str,
    ) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
        tokio::time::timeout_at(deadline, self.ws.next())
            .await
            .unwrap_or_else(|_| panic!("{}: no {expecting} in time", self.name))
    }

    /// The next text payload, skipping pings. Panics after [`PATIENCE`].
    pub async fn recv(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        self.recv_before(deadline).await
    }

    /// The next text payload within `patience` (for what may take longer
    /// than [`PATIENCE`], such as an answer that waits on Redis timeouts).
    pub async fn recv_within(&mut self, patience: Duration) -> Value {
        self.recv_before(tokio::time::Instant::now() + patience)
            .await
    }

    /// The next text payload before `deadline`, skipping pings.
    async fn recv_before(&mut self, deadline: tokio::time::Instant) -> Value {
        loop {
            let msg = match self.next_before(deadline, "frame").await {
                None => panic!("{}: connection ended", self.name),
                Some(Err(e)) => panic!("{}: read error {e}", self.name),
                Some(Ok(msg)) => msg,
            };
            match msg {
                Message::Text(text) => {
                    return serde_json::from_str(&text).expect("gateway sends JSON")
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("{}: expected text, got {other:?}", self.name),
            }
        }
    }

    /// The next payload, which must be of `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let payload = self.recv().await;
        assert_eq!(payload["type"], kind, "{}: {payload}", self.name);
        payload
    }

    /// Skips payloads until one of `kind` arrives, within [`PATIENCE`].
    pub async fn skip_to(&mut self, kind: &str) -> Value {
        self.skip_to_within(kind, PATIENCE).await
    }

    /// Skips payloads until one of `kind` arrives, within `patience`.
    pub async fn skip_to_within(&mut self, kind: &str, patience: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let payload = self.recv_before(deadline).await;
            if payload["type"] == kind {
                return payload;
            }
        }
    }

    /// Discards payloads until none arrives for `ms` milliseconds.
    pub async fn drain(&mut self, ms: u64) {
        while let Ok(Some(Ok(_))) =
            tokio::time::timeout(Duration::from_millis(ms), self.ws.next()).await
        {}
    }

    /// Sends a request and returns the reply, checking it carries `seq`.
    pub async fn request(&mut self, payload: Value, seq: u64) -> Value {
        self.send(payload).await;
        let reply = self.recv().await;
        assert_eq!(
            reply["seq"], seq,
            "{}: reply without seq {seq}: {reply}",
            self.name
        );
        reply
    }

    /// Asserts that nothing is queued for this client: not a frame the
    /// gateway pushed for it before this call. The gateway answers a ping
    /// with a pong queued behind every frame already queued for the client
    /// (one queue, in order), so the pong of a fresh ping comes first only
    /// if nothing else was waiting. A negative check with no time in it:
    /// whatever a handler delivered before the reply the test has seen is
    /// caught, however slow the machine.
    pub async fn expect_nothing_queued(&mut self) {
        let token = Uuid::new_v4();
        self.ws
            .send(Message::Ping(token.as_bytes().to_vec().into()))
            .await
            .expect("send ping");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match self.next_before(deadline, "pong").await {
                Some(Ok(Message::Pong(payload))) if payload[..] == token.as_bytes()[..] => return,
                // The gateway's heartbeat, or an earlier ping's pong.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("{}: expected nothing queued, got {other:?}", self.name),
            }
        }
    }

    /// Asserts that nothing arrives for `ms` milliseconds.
    pub async fn expect_silence(&mut self, ms: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("{}: expected silence, got {other:?}", self.name),
            }
        }
    }

    /// The next payload, or the close code if the gateway closes instead.
    /// Panics when neither comes within [`PATIENCE`].
    pub async fn recv_any(&mut self) -> Result<Value, u16> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match self.next_before(deadline, "payload or close").await {
                Some(Ok(Message::Text(text))) => {
                    return Ok(serde_json::from_str(&text).expect("gateway sends JSON"))
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame.map_or(1005, |f| u16::from(f.code)))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(1006),
            }
        }
    }

    /// Waits for the gateway to close the connection; returns code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match self.next_before(deadline, "close").await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string())
                }
                Some(Ok(Message::Close(None))) => {
                    return (u16::from(CloseCode::Status), String::new())
                }
                Some(Ok(Message::Text(text))) => {
                    panic!("{}: expected close, got {text}", self.name)
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("{}: connection failed instead of closing: {e}", self.name),
                None => panic!("{}: connection ended without a close frame", self.name),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Wait for the server's close frame: by then its session has stopped.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            if msg.is_close() {
                break;
            }
        }
    }
}

/// Polls `condition` every 20 ms until it holds; panics after `patience`.
pub async fn eventually(patience: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + patience;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {patience:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends one HTTP/1.1 request over a plain socket, with the request target
/// exactly as given (no client library normalizing `..` or `//` away), and
/// returns the status and body.
pub async fn raw_http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("connects");
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("writes");
    // The server may answer (and close) before reading the body.
    let _ = stream.write_all(body).await;
    let mut response = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response)).await;
    assert!(
        read.is_ok(),
        "no response to {method} {target} within {PATIENCE:?}"
    );
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{method} {target}: incomplete response {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {target}: bad status line in {head:?}"));
    (status, body.to_owned())
}

/// The gateway's end of the TCP connection from `client` to `server` (a
/// copy of its descriptor, closed on drop), to read or set its socket
/// options. The gateway of a [`TestServer`] runs in the test's own process,
/// so its socket is one of the process's open files, told apart by its two
/// addresses. Call it once the gateway has answered on the connection (it
/// has accepted it then).
pub fn gateway_end(server: SocketAddr, client: SocketAddr) -> std::os::fd::OwnedFd {
    use std::os::fd::{FromRawFd, OwnedFd, RawFd};
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let Some(fd) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<RawFd>().ok())
        else {
            continue;
        };
        // A copy of the descriptor, ours to close: the gateway's threads may
        // close `fd` meanwhile (the copy then fails, or is of another file,
        // which the addresses tell apart).
        // SAFETY: fcntl only reads the number; it returns a new descriptor or -1.
        let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if copy < 0 {
            continue;
        }
        // SAFETY: `copy` is a descriptor just made for us and owned by nobody else.
        let copy = unsafe { OwnedFd::from_raw_fd(copy) };
        let socket = socket2::SockRef::from(&copy);
        let addr = |a: std::io::Result<socket2::SockAddr>| a.ok().and_then(|a| a.as_socket());
        if addr(socket.local_addr()) == Some(server) && addr(socket.peer_addr()) == Some(client) {
            return copy;
        }
    }
    panic!("no socket of this process is the gateway's end of {client} -> {server}");
}

/// The `TCP_USER_TIMEOUT` the gateway set on its end of the connection from
/// `client` to `server` (see [`gateway_end`]); `None` when not set.
pub fn user_timeout_of_accepted(server: SocketAddr, client: SocketAddr) -> Option<Duration> {
    socket2::SockRef::from(&gateway_end(server, client))
        .tcp_user_timeout()
        .expect("TCP_USER_TIMEOUT reads back")
}

/// For the tests that drive a real browser: Debian's Chromium and its
/// driver, and Selenium, are installed by `scripts/test`; without them the
/// test fails and says what is missing.
pub fn require_browser() {
    for program in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            std::path::Path::new(program).exists(),
            "{program} is missing: scripts/test installs Debian's chromium and chromium-driver"
        );
    }
    let selenium = std::process::Command::new("python3")
        .args(["-c", "import selenium"])
        .status()
        .expect("python3 runs");
    assert!(
        selenium.success(),
        "Selenium is missing: scripts/test installs it (pip install selenium)"
    );
}

/// Runs a browser-driving script, `python3 script args...`, to its end
/// within `patience` and returns its closing summary (the JSON of its last
/// line) once the run and the summary say it succeeded; `context` (a
/// process's log) is added to a failure's message.
pub async fn browse(
    script: &str,
    args: &[&str],
    patience: Duration,
    context: impl Fn() -> String,
) -> Value {
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(patience, run)
        .await
        .unwrap_or_else(|_| panic!("the browser run {args:?} took over {patience:?}"))
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser run failed:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        context()
    );
    let summary: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no summary from the browser run:\n{stdout}"));
    assert_eq!(summary["ok"], true, "{summary}");
    summary
}

/// A TCP port on 127.0.0.1 free at the moment (for a child server whose
/// address must be known before it starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The value of counter `name` (`concierge_{name}_total`) in `server`'s
/// /metrics.
pub async fn counter(server: &TestServer, name: &str) -> u64 {
    let text = reqwest::get(server.http_url("/metrics"))
        .await
        .expect("/metrics answers")
        .text()
        .await
        .expect("a text body");
    let prefix = format!("concierge_{name}_total ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} counter in\n{text}"))
}

/// Has `owner` broadcast `m1` to `mN` (`total`) to `service` back to back,
/// without waiting for each OK, then reads until every OK has come, in
/// order (other frames, without `seq`, are skipped); returns the owner.
pub async fn publish_back_to_back(mut owner: Client, service: &str, total: u64) -> Client {
    let target = json!({"type": "SERVICE", "service": service});
    for n in 1..=total {
        owner
            .send(json!({"type": "MESSAGE", "target": target, "data": format!("m{n}")}))
            .await;
    }
    let mut n = 1;
    while n <= total {
        let reply = owner.recv().await;
        if reply.get("seq").is_some() {
            assert_eq!((&reply["type"], &reply["seq"]), (&json!("OK"), &json!(n)));
            n += 1;
        }
    }
    owner
}

/// The client library as a long-lived reader: `name` (no token) connected
/// to `url` with a fresh [`concierge_client::resume::Resume`], its
/// SELF_SUBSCRIBE to `service` sent (the result not yet read).
pub async fn library_reader(
    url: &str,
    name: &str,
    service: &str,
) -> (
    concierge_client::Identity,
    concierge_client::resume::Resume,
    concierge_client::Connection,
) {
    let identity = concierge_client::Identity {
        name: name.into(),
        tags: Vec::new(),
        token: None,
        presence: false,
        take_over: true,
    };
    let mut resume = concierge_client::resume::Resume::default();
    let connection = resume.connect(url, &identity).await.expect("connects");
    connection
        .sender
        .send(&resume.subscribe(service))
        .await
        .expect("sent");
    (identity, resume, connection)
}
