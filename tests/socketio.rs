//! Socket.IO (seed 002, Altoponix) on `/socket.io/`: a user and a monitor
//! written against python-socketio's documented client API
//! (tests/clients/altoponix_*.py), on one gateway and on two replicas;
//! native clients and `ctl send` commanding a monitor; tokens and roles;
//! hostile packets from a raw WebSocket client; Engine.IO's long-polling
//! transport and its upgrade on the wire (raw HTTP requests, and
//! python-socketio's own polling-first client), its refusals, bounds and
//! CORS.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::process::{issue_token, outcome};
use common::redis::RedisServer;
use common::{Client, TestServer};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

/// A python-socketio client: its printed events, and its stdin (a user's
/// commands, one JSON line each).
struct Py {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    events: tokio::sync::mpsc::UnboundedReceiver<Value>,
    name: String,
}

impl Py {
    fn spawn(script: &str, server: &TestServer, monitor_id: &str, token: Option<&str>) -> Py {
        Py::spawn_over(script, server, monitor_id, token, "websocket")
    }

    /// A client on `transports` (python-socketio's, comma-separated:
    /// `polling,websocket` starts polling and upgrades).
    fn spawn_over(
        script: &str,
        server: &TestServer,
        monitor_id: &str,
        token: Option<&str>,
        transports: &str,
    ) -> Py {
        let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
        let url = format!("http://{}", server.addr);
        let mut child = tokio::process::Command::new("python3")
            .env("ALTOPONIX_TRANSPORTS", transports)
            .arg(&path)
            .args([&url, monitor_id])
            .args(token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let stdin = child.stdin.take().expect("stdin");
        let events = common::process::json_lines(&mut child);
        Py {
            _child: child,
            stdin,
            events,
            name: format!("{script} {monitor_id}"),
        }
    }

    fn monitor(server: &TestServer, id: &str) -> Py {
        Py::spawn("altoponix_monitor.py", server, id, None)
    }

    fn user(server: &TestServer, monitor_id: &str) -> Py {
        Py::spawn("altoponix_user.py", server, monitor_id, None)
    }

    /// The next event, `(name, data)`.
    async fn next(&mut self) -> (String, Value) {
        let event = tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: no event within 10 s", self.name))
            .unwrap_or_else(|| panic!("{}: exited", self.name));
        (
            event["event"].as_str().expect("event").to_owned(),
            event["data"].clone(),
        )
    }

    /// Skips `connect`, then the next event must be `name`: its data.
    async fn expect(&mut self, name: &str) -> Value {
        loop {
            let (event, data) = self.next().await;
            if event == "connect" && name != "connect" {
                continue;
            }
            assert_eq!(event, name, "{}: {data}", self.name);
            return data;
        }
    }

    /// The CONNECT_ERROR of a client the gateway refused, read from all it
    /// printed until it exited: python-socketio runs the `connect_error`
    /// handler beside the `connect()` that raises, so the two lines come in
    /// either order.
    async fn expect_refused(&mut self) -> Value {
        let mut error = None;
        let mut raised = false;
        while let Some(event) = tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: still running after 10 s", self.name))
        {
            match event["event"].as_str() {
                Some("connect_error") => error = Some(event["data"].clone()),
                Some("connection refused") => raised = true,
                _ => panic!("{}: expected a refusal, got {event}", self.name),
            }
        }
        assert!(raised, "{}: connect() did not fail", self.name);
        error.unwrap_or_else(|| panic!("{}: no connect_error", self.name))
    }

    /// Waits until the gateway has closed the client: its `disconnect`
    /// event, or its exit (python-socketio may end `wait()` before the
    /// handler prints).
    async fn expect_closed(&mut self) {
        let next = tokio::time::timeout(Duration::from_secs(10), self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("{}: not closed within 10 s", self.name));
        match next {
            None => {}
            Some(event) if event["event"] == "disconnect" => {}
            Some(event) => panic!("{}: expected the close, got {event}", self.name),
        }
    }

    async fn send(&mut self, data: Value) {
        let line = format!("{data}\n");
        self.stdin.write_all(line.as_bytes()).await.expect("stdin");
    }
}

/// A monitor with `con ok`.
async fn monitor(server: &TestServer, id: &str) -> Py {
    let mut monitor = Py::monitor(server, id);
    monitor.expect("con ok").await;
    monitor
}

/// A user with `query ok`.
async fn user(server: &TestServer, monitor_id: &str) -> Py {
    let mut user = Py::user(server, monitor_id);
    user.expect("query ok").await;
    user
}

#[tokio::test]
async fn a_user_commands_a_monitor() {
    let server = TestServer::start();
    let mut monitor = monitor(&server, "greenhouse1").await;
    let mut user = user(&server, "greenhouse1").await;

    user.send(json!({"command": "water 5"})).await;
    assert_eq!(user.expect("command ok").await, Value::Null);
    assert_eq!(
        monitor.expect("command do").await,
        json!({"command": "water 5"})
    );
    assert_eq!(user.expect("command finish").await, Value::Null);

    // The monitor's error, with its reason.
    user.send(json!({"command": "fail the pump"})).await;
    user.expect("command ok").await;
    monitor.expect("command do").await;
    assert_eq!(
        user.expect("command failed").await,
        json!({"reason": "cannot fail the pump"})
    );

    // Invalid commands never reach the monitor.
    for bad in [json!({"command": ""}), json!({"command": 5}), json!({})] {
        user.send(bad.clone()).await;
        let failed = user.expect("command failed").await;
        assert!(
            failed["reason"]
                .as_str()
                .is_some_and(|r| r.contains("non-empty string")),
            "{bad}: {failed}"
        );
    }
    // None reached the monitor: the next command it gets is the valid one
    // sent after them, on the same path.
    user.send(json!({"command": "water 1"})).await;
    user.expect("command ok").await;
    assert_eq!(
        monitor.expect("command do").await,
        json!({"command": "water 1"})
    );
    user.expect("command finish").await;

    // monitor_id is unique, and a client name.
    let mut twin = Py::monitor(&server, "greenhouse1");
    assert_eq!(
        twin.expect("con failed").await,
        json!({"reason": "already connected"})
    );
    twin.expect_closed().await;
    let mut bad = Py::monitor(&server, "green house");
    let failed = bad.expect("con failed").await;
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("letters, digits and underscores")),
        "{failed}"
    );
    bad.expect_closed().await;

    // Both are clients of the namespace, by their tags.
    let mut native = server.client("watcher").await;
    native.send(json!({"type": "CLIENT_FETCH_ALL"})).await;
    let all = native.skip_to("CLIENT_FETCH_ALL_RESULT").await;
    let tags: Vec<(String, Value)> = all["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_owned(),
                c["tags"].clone(),
            )
        })
        .collect();
    assert!(
        tags.contains(&("greenhouse1".into(), json!(["altoponix-monitor"]))),
        "{tags:?}"
    );
    assert!(
        tags.iter()
            .any(|(name, t)| name.starts_with("sio_") && *t == json!(["altoponix-user"])),
        "{tags:?}"
    );
}

#[tokio::test]
async fn a_command_to_an_absent_monitor_fails() {
    let server = TestServer::start();
    // query does not check that the monitor is there (it may come later).
    let mut user = user(&server, "nobody").await;
    user.send(json!({"command": "ls"})).await;
    assert_eq!(
        user.expect("command failed").await,
        json!({"reason": "monitor \"nobody\" is not connected"})
    );
    // Once it connects, the same user commands it.
    let mut monitor = monitor(&server, "nobody").await;
    user.send(json!({"command": "ls"})).await;
    user.expect("command ok").await;
    monitor.expect("command do").await;
    user.expect("command finish").await;

    // A query without a usable monitor_id fails and closes.
    let mut lost = Py::user(&server, "not an id");
    let failed = lost.expect("query failed").await;
    assert!(failed["reason"].is_string(), "{failed}");
    lost.expect_closed().await;
}

#[tokio::test]
async fn each_answer_goes_to_the_user_who_sent_the_command() {
    let server = TestServer::start();
    let mut monitor = monitor(&server, "shared").await;
    let mut alice = user(&server, "shared").await;
    let mut bob = user(&server, "shared").await;

    alice.send(json!({"command": "from alice"})).await;
    alice.expect("command ok").await;
    monitor.expect("command do").await;
    alice.expect("command finish").await;

    // Bob's first event is the answer to his own command: alice's answers,
    // queued before it, did not reach him.
    bob.send(json!({"command": "fail for bob"})).await;
    bob.expect("command ok").await;
    monitor.expect("command do").await;
    assert_eq!(
        bob.expect("command failed").await,
        json!({"reason": "cannot fail for bob"})
    );
    // Nor did bob's reach alice: her next event answers her next command.
    alice.send(json!({"command": "again from alice"})).await;
    alice.expect("command ok").await;
    monitor.expect("command do").await;
    alice.expect("command finish").await;
}

#[tokio::test]
async fn a_monitor_on_another_replica_is_commanded() {
    let redis = RedisServer::start();
    let replica = || {
        let url = redis.url();
        TestServer::with(move |s| {
            s.redis_url = url;
            s.node_lease_ms = 1_500;
        })
    };
    let (a, b) = (replica(), replica());
    let mut monitor = monitor(&b, "far_away").await;
    let mut user = user(&a, "far_away").await;
    user.send(json!({"command": "across"})).await;
    user.expect("command ok").await;
    assert_eq!(
        monitor.expect("command do").await,
        json!({"command": "across"})
    );
    user.expect("command finish").await;
    // Unique across the cluster.
    let mut twin = Py::monitor(&a, "far_away");
    assert_eq!(
        twin.expect("con failed").await,
        json!({"reason": "already connected"})
    );
}

#[tokio::test]
async fn native_clients_and_ctl_command_a_monitor() {
    let server = TestServer::start();
    let mut monitor = monitor(&server, "mon_ctl").await;

    let data = server.data.path().to_str().expect("utf-8");
    let token = issue_token(&["--data-dir", data], "alice", "operator").await;
    let (code, _, err) = outcome(common::process::ctl(&server.ws_url(), &token).args([
        "send",
        "mon_ctl",
        r#"{"command": "x"}"#,
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(monitor.expect("command do").await, json!({"command": "x"}));

    // A native client gets the monitor's answers as MESSAGEs.
    let mut native = server.client("dashboard").await;
    let to_monitor = |data: Value| json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "mon_ctl"}, "data": data});
    native.send(to_monitor(json!({"command": "status"}))).await;
    let answer = native.skip_to("MESSAGE").await;
    assert_eq!(
        answer["data"],
        json!({"event": "command finish"}),
        "{answer}"
    );
    assert_eq!(answer["origin"]["name"], "mon_ctl");
    native.send(to_monitor(json!({"command": "fail"}))).await;
    let answer = native.skip_to("MESSAGE").await;
    assert_eq!(
        answer["data"],
        json!({"event": "command failed", "reason": "cannot fail"})
    );
    native.send(to_monitor(json!({"cmd": "nope"}))).await;
    let answer = native.skip_to("MESSAGE").await;
    assert_eq!(answer["data"]["event"], "command failed", "{answer}");
}

#[tokio::test]
async fn tokens_and_roles_decide_who_commands() {
    let server = TestServer::with(|s| s.require_auth = true);
    let data = server.data.path().to_str().expect("utf-8").to_owned();
    let store = ["--data-dir", data.as_str()];
    let operator = issue_token(&store, "alice", "operator").await;
    let viewer = issue_token(&store, "vic", "viewer").await;
    let agent = issue_token(&store, "pod", "agent").await;

    // No token: refused at CONNECT.
    let mut anonymous = Py::user(&server, "pod");
    let refused = anonymous.expect_refused().await;
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|d| d.contains("requires a token")),
        "{refused}"
    );

    // A monitor's token names its monitor_id.
    let mut wrong = Py::spawn("altoponix_monitor.py", &server, "pod2x", Some(&agent));
    let failed = wrong.expect("con failed").await;
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("the token allows")),
        "{failed}"
    );
    let mut monitor = Py::spawn("altoponix_monitor.py", &server, "pod", Some(&agent));
    monitor.expect("con ok").await;

    // A viewer may not command; an operator may.
    let mut vic = Py::spawn("altoponix_user.py", &server, "pod", Some(&viewer));
    assert_eq!(
        vic.expect("query failed").await,
        json!({"reason": "commanding a monitor needs the operator role"})
    );
    let mut alice = Py::spawn("altoponix_user.py", &server, "pod", Some(&operator));
    alice.expect("query ok").await;
    alice.send(json!({"command": "go"})).await;
    alice.expect("command ok").await;
    monitor.expect("command do").await;
    alice.expect("command finish").await;

    // A bad token.
    let mut forged = Py::spawn("altoponix_user.py", &server, "pod", Some("not.a.token"));
    let refused = forged.expect_refused().await;
    assert_eq!(
        refused["message"], "the token was refused: token_invalid",
        "{refused}"
    );
}

/// A raw WebSocket on /socket.io/, after the open packet.
async fn raw(server: &TestServer) -> Client {
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrades");
    let mut client = Client {
        ws,
        uuid: uuid::Uuid::nil(),
        name: "raw".into(),
        fs_key: String::new(),
    };
    let open = text(&mut client).await;
    let handshake: Value =
        serde_json::from_str(open.strip_prefix('0').expect("open packet")).expect("JSON");
    assert_eq!(handshake["upgrades"], json!([]), "{handshake}");
    assert!(handshake["sid"].is_string() && handshake["pingInterval"].is_u64());
    client
}

async fn text(client: &mut Client) -> String {
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), client.ws.next())
            .await
            .expect("a frame within 5 s");
        match next {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Sends `frames`; the last text before the close, and the close code.
async fn ends(server: &TestServer, connect: bool, frames: Vec<Message>) -> (String, u16) {
    let mut client = raw(server).await;
    if connect {
        client.send_text("40".into()).await;
        // (A ping may come first.)
        while !text(&mut client).await.starts_with("40{\"sid\":") {}
    }
    for frame in frames {
        let _ = client.ws.send(frame).await;
    }
    let mut last = String::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), client.ws.next())
            .await
            .expect("closed within 5 s");
        match next {
            Some(Ok(Message::Text(text))) => last = text.to_string(),
            Some(Ok(Message::Close(frame))) => {
                return (last, frame.map_or(1005, |f| u16::from(f.code)))
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return (last, 1006),
        }
    }
}

#[tokio::test]
async fn hostile_packets_close_the_connection() {
    let server = TestServer::with(|s| {
        s.max_frame_size = 4_096;
        s.heartbeat_interval_ms = 300;
        s.heartbeat_timeout_ms = 1_000;
    });
    let t = |s: &str| Message::Text(s.to_owned().into());
    for (connect, frames, said) in [
        (
            false,
            vec![t("42[\"query\",{\"monitor_id\":\"m\"}]")],
            "44{\"message\":\"CONNECT to the namespace / first\"}",
        ),
        (false, vec![t("hello")], "44"),
        (false, vec![t("40[1,2]")], "44"),
        (false, vec![t("0{}")], "44"),
        (false, vec![t("4")], "44"),
        (false, vec![Message::Binary(vec![1, 2, 3].into())], "44"),
        (true, vec![t("42{\"not\":\"an array\"}")], "41"),
        (true, vec![t("42[\"query\"")], "41"),
        (true, vec![t("42[\"dance\",{}]")], "41"),
        (
            true,
            vec![t("45-[\"x\",{\"_placeholder\":true,\"num\":0}]")],
            "41",
        ),
        (true, vec![t("40")], "41"),
        (true, vec![t("44{\"message\":\"me too\"}")], "41"),
        (true, vec![t("42[\"con\",{\"monitor_id\":5}]")], "41"),
        (true, vec![t("42[\"query\",[]]")], "41"),
    ] {
        let (last, code) = ends(&server, connect, frames.clone()).await;
        assert!(last.starts_with(said), "{frames:?}: {last}");
        assert!(code == 1000 || code == 1008, "{frames:?}: {code}");
    }
    // A frame past max_frame_size.
    let huge = format!("42[\"query\",{{\"monitor_id\":\"{}\"}}]", "m".repeat(8_192));
    let (_, code) = ends(&server, true, vec![t(&huge)]).await;
    assert_ne!(code, 1000, "an oversized frame is an error");
    // A namespace other than / is refused without ending the session.
    let mut client = raw(&server).await;
    client.send_text("40/admin,".into()).await;
    assert_eq!(
        text(&mut client).await,
        "44/admin,{\"message\":\"only the default namespace / is served\"}"
    );
    // Pings come every heartbeat_interval_ms; a client that never answers
    // (nor sends anything) is closed after heartbeat_timeout_ms.
    client.send_text("40".into()).await;
    assert!(text(&mut client).await.starts_with("40{"));
    assert_eq!(text(&mut client).await, "2");
    client.send_text("3".into()).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(msg)) = client.ws.next().await {
            if msg.is_close() {
                return true;
            }
        }
        true
    });
    assert!(closed.await.is_ok(), "a silent client is closed");

    // Still serving.
    let mut monitor = monitor(&server, "still_here").await;
    let mut user = user(&server, "still_here").await;
    user.send(json!({"command": "ok"})).await;
    user.expect("command ok").await;
    monitor.expect("command do").await;
}

#[tokio::test]
async fn only_engine_io_4_is_served() {
    let server = TestServer::start();
    // Polling: Engine.IO's own refusals.
    for (query, code, why) in [
        ("EIO=3&transport=polling", 5, "only Engine.IO v4"),
        ("transport=polling", 5, "only Engine.IO v4"),
        ("EIO=4&transport=carrier-pigeon", 0, "Transport unknown"),
        ("EIO=4", 0, "Transport unknown"),
        ("EIO=4&transport=websocket", 3, "upgrade headers"),
    ] {
        let (status, body) = common::raw_http(
            server.addr,
            "GET",
            &format!("/socket.io/?{query}"),
            &[],
            b"",
        )
        .await;
        assert_eq!(status, 400, "{query}");
        let body: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(body["code"], code, "{query}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(why),
            "{query}: {body}"
        );
    }
    // Upgrades: Engine.IO v3, polling asked for on one, a sid no session has.
    for (query, why) in [
        ("EIO=3&transport=websocket", "only Engine.IO v4"),
        ("transport=websocket", "only Engine.IO v4"),
        ("EIO=4&transport=polling", "takes transport=websocket"),
        ("EIO=4&transport=websocket&sid=nope", "Session ID unknown"),
    ] {
        let url = format!("ws://{}/socket.io/?{query}", server.addr);
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "{query}");
                let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned();
                assert!(body.contains(why), "{query}: {body}");
            }
            other => panic!("{query}: expected a 400, got {other:?}"),
        }
    }
}

/// A long-polling client speaking raw HTTP, as socket.io.js does.
struct Poller {
    http: reqwest::Client,
    base: String,
    sid: String,
    handshake: Value,
}

impl Poller {
    async fn open(server: &TestServer) -> Poller {
        Poller::open_from(server, None).await.expect("a handshake")
    }

    /// The handshake, from a page of `origin`; the refusal's status and
    /// body otherwise.
    async fn open_from(server: &TestServer, origin: Option<&str>) -> Result<Poller, (u16, String)> {
        let http = reqwest::Client::new();
        let base = format!("http://{}/socket.io/?EIO=4&transport=polling", server.addr);
        let mut request = http.get(&base);
        if let Some(origin) = origin {
            request = request.header("Origin", origin);
        }
        let response = request.send().await.expect("answers");
        let status = response.status().as_u16();
        // The sid, for a load balancer's stickiness.
        let header = response.headers().get("x-concierge-sid").cloned();
        let body = response.text().await.expect("a body");
        if status != 200 {
            return Err((status, body));
        }
        let handshake: Value =
            serde_json::from_str(body.strip_prefix('0').expect("the open packet")).expect("JSON");
        assert_eq!(
            header.as_ref().and_then(|h| h.to_str().ok()),
            handshake["sid"].as_str()
        );
        Ok(Poller {
            sid: handshake["sid"].as_str().expect("sid").to_owned(),
            http,
            base,
            handshake,
        })
    }

    fn url(&self) -> String {
        format!("{}&sid={}", self.base, self.sid)
    }

    async fn get(&self) -> (u16, String) {
        let response =
            tokio::time::timeout(Duration::from_secs(10), self.http.get(self.url()).send())
                .await
                .expect("a GET answered within 10 s")
                .expect("answers");
        (
            response.status().as_u16(),
            response.text().await.expect("a body"),
        )
    }

    /// The packets of the next GET that has any other than pings (which
    /// are answered).
    async fn packets(&self) -> Vec<String> {
        loop {
            let (status, body) = self.get().await;
            assert_eq!(status, 200, "{body}");
            let packets: Vec<String> = body.split('\x1e').map(str::to_owned).collect();
            if packets.iter().any(|p| p == "2") {
                self.post("3").await;
            }
            let rest: Vec<String> = packets.into_iter().filter(|p| p != "2").collect();
            if !rest.is_empty() {
                return rest;
            }
        }
    }

    async fn post(&self, body: &str) -> (u16, String) {
        let response = self
            .http
            .post(self.url())
            .header("Content-Type", "text/plain;charset=UTF-8")
            .body(body.to_owned())
            .send()
            .await
            .expect("answers");
        (
            response.status().as_u16(),
            response.text().await.expect("a body"),
        )
    }

    /// CONNECTs and emits `con` as monitor `id`.
    async fn monitor(server: &TestServer, id: &str) -> Poller {
        let poller = Poller::open(server).await;
        let con = format!("40\x1e42[\"con\",{{\"monitor_id\":\"{id}\"}}]");
        assert_eq!(poller.post(&con).await, (200, "ok".to_owned()));
        let mut seen = Vec::new();
        while !seen.iter().any(|p: &String| p == "42[\"con ok\"]") {
            seen.extend(poller.packets().await);
        }
        assert!(seen[0].starts_with("40{\"sid\":"), "{seen:?}");
        poller
    }
}

#[tokio::test]
async fn a_polling_monitor_is_commanded_then_upgrades_to_a_websocket() {
    let server = TestServer::start();
    let poller = Poller::monitor(&server, "pm").await;
    let h = &poller.handshake;
    assert_eq!(h["upgrades"], json!(["websocket"]), "{h}");
    assert!(h["pingInterval"].is_u64() && h["pingTimeout"].is_u64() && h["maxPayload"].is_u64());

    // Over polling: a command, its answer.
    let mut user = user(&server, "pm").await;
    user.send(json!({"command": "ls"})).await;
    user.expect("command ok").await;
    assert_eq!(
        poller.packets().await,
        ["42[\"command do\",{\"command\":\"ls\"}]"]
    );
    assert_eq!(poller.post("42[\"command done\"]").await.0, 200);
    user.expect("command finish").await;

    // The upgrade: a GET waits; the probe is answered on the WebSocket and
    // the waiting GET is let go with a noop.
    let waiting = {
        let (http, url) = (poller.http.clone(), poller.url());
        tokio::spawn(async move { http.get(url).send().await.unwrap().text().await.unwrap() })
    };
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={}",
        server.addr, poller.sid
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrades");
    ws.send(Message::Text("2probe".into())).await.unwrap();
    let mut client = Client {
        ws,
        uuid: uuid::Uuid::nil(),
        name: "upgraded".into(),
        fs_key: String::new(),
    };
    assert_eq!(text(&mut client).await, "3probe");
    let released = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the waiting GET is answered")
        .unwrap();
    assert!(released.split('\x1e').any(|p| p == "6"), "{released}");
    // A command sent before the switch is not lost: it waits for the
    // WebSocket.
    user.send(json!({"command": "uptime"})).await;
    user.expect("command ok").await;
    client.send_text("5".into()).await;
    loop {
        let packet = text(&mut client).await;
        if packet == "2" {
            client.send_text("3".into()).await;
            continue;
        }
        assert_eq!(packet, "42[\"command do\",{\"command\":\"uptime\"}]");
        break;
    }
    client
        .send_text("42[\"command error\",{\"reason\":\"no\"}]".into())
        .await;
    assert_eq!(user.expect("command failed").await["reason"], "no");
    // Still the monitor `pm` (a second one would be refused), and polling
    // with its sid is over.
    let (status, body) = poller.get().await;
    assert_eq!(
        (status, body.as_str()),
        (400, "{\"code\":1,\"message\":\"Session ID unknown\"}")
    );
    let mut again = Py::monitor(&server, "pm");
    assert_eq!(
        again.expect("con failed").await["reason"],
        "already connected"
    );
    user.send(json!({"command": "w"})).await;
    user.expect("command ok").await;
    loop {
        let packet = text(&mut client).await;
        if packet != "2" {
            assert_eq!(packet, "42[\"command do\",{\"command\":\"w\"}]");
            break;
        }
    }
}

#[tokio::test]
async fn an_upgrade_given_up_leaves_the_client_polling() {
    let server = TestServer::start();
    let poller = Poller::monitor(&server, "stay").await;
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={}",
        server.addr, poller.sid
    );
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrades");
    let mut client = Client {
        ws,
        uuid: uuid::Uuid::nil(),
        name: "probe".into(),
        fs_key: String::new(),
    };
    client.send_text("2probe".into()).await;
    assert_eq!(text(&mut client).await, "3probe");
    // Meanwhile a GET is let go at once.
    assert_eq!(poller.get().await, (200, "6".to_owned()));
    client.close().await;
    // Given up: GETs wait for packets again, and the session goes on.
    let mut user = user(&server, "stay").await;
    let waiting = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let packets = poller.packets().await;
            if packets != ["6"] {
                return packets;
            }
        }
    });
    user.send(json!({"command": "still"})).await;
    user.expect("command ok").await;
    assert_eq!(
        waiting.await.expect("polling goes on"),
        ["42[\"command do\",{\"command\":\"still\"}]"]
    );
}

#[tokio::test]
async fn python_socketio_polls_first_and_upgrades() {
    let server = TestServer::start();
    let mut monitor = Py::spawn_over(
        "altoponix_monitor.py",
        &server,
        "pym",
        None,
        "polling,websocket",
    );
    monitor.expect("con ok").await;
    let mut user = Py::spawn_over(
        "altoponix_user.py",
        &server,
        "pym",
        None,
        "polling,websocket",
    );
    user.expect("query ok").await;
    for command in ["one", "fail two", "three"] {
        user.send(json!({ "command": command })).await;
        user.expect("command ok").await;
        assert_eq!(monitor.expect("command do").await["command"], command);
        if command.starts_with("fail") {
            assert_eq!(
                user.expect("command failed").await["reason"],
                "cannot fail two"
            );
        } else {
            user.expect("command finish").await;
        }
    }
}

#[tokio::test]
async fn polling_refusals_and_bounds() {
    let server = TestServer::with(|s| s.max_frame_size = 4_096);
    // No such session; a handshake that is not a GET.
    let bad = Poller {
        http: reqwest::Client::new(),
        base: format!("http://{}/socket.io/?EIO=4&transport=polling", server.addr),
        sid: "nope".into(),
        handshake: Value::Null,
    };
    assert_eq!(
        bad.get().await,
        (
            400,
            "{\"code\":1,\"message\":\"Session ID unknown\"}".into()
        )
    );
    assert_eq!(bad.post("40").await.0, 400);
    let (status, body) = common::raw_http(
        server.addr,
        "POST",
        "/socket.io/?EIO=4&transport=polling",
        &[],
        b"40",
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (400, "{\"code\":2,\"message\":\"Bad handshake method\"}")
    );

    // A second GET while one waits ends the session.
    let poller = Poller::monitor(&server, "twice").await;
    // (Nothing is queued for it: both wait, or one is refused at once.)
    let (one, two) = tokio::join!(poller.get(), poller.get());
    let mut statuses = [one.0, two.0];
    statuses.sort();
    assert_eq!(statuses, [200, 400], "{one:?} {two:?}");
    polling_ends(&poller).await;

    // A POST past maxPayload: 413, and the session ends.
    let poller = Poller::monitor(&server, "big").await;
    assert_eq!(poller.handshake["maxPayload"], 4_096);
    let huge = format!("42[\"command done\",\"{}\"]", "x".repeat(5_000));
    assert_eq!(poller.post(&huge).await.0, 413);
    polling_ends(&poller).await;
    // Its name is free again.
    Poller::monitor(&server, "big").await;

    // At most 64 polling sessions from one address.
    let mut open = Vec::new();
    let refused = loop {
        match Poller::open_from(&server, None).await {
            Ok(poller) => open.push(poller),
            Err(refused) => break refused,
        }
        assert!(
            open.len() <= 64,
            "more than 64 polling sessions from one address"
        );
    };
    assert!(open.len() >= 62, "{}", open.len());
    assert_eq!(refused.0, 503, "{refused:?}");
    assert!(
        refused.1.contains("too many polling sessions"),
        "{refused:?}"
    );
}

/// Polls until the session is gone: its close packet, then an unknown sid.
async fn polling_ends(poller: &Poller) {
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (status, body) = poller.get().await;
            if status == 400 || body.split('\x1e').any(|p| p == "1") {
                return;
            }
        }
    });
    assert!(gone.await.is_ok(), "the session ends");
}

#[tokio::test]
async fn a_client_that_stops_polling_is_closed_and_leaves() {
    let server = TestServer::with(|s| {
        s.heartbeat_interval_ms = 300;
        s.heartbeat_timeout_ms = 1_000;
    });
    let poller = Poller::monitor(&server, "quiet").await;
    assert_eq!(poller.handshake["pingInterval"], 300);
    assert_eq!(poller.handshake["pingTimeout"], 700);
    // Polling and answering pings keeps it: past the timeout, still there.
    let until = tokio::time::Instant::now() + Duration::from_millis(1_500);
    while tokio::time::Instant::now() < until {
        let (status, body) = poller.get().await;
        assert_eq!(status, 200, "{body}");
        if body.split('\x1e').any(|p| p == "2") {
            poller.post("3").await;
        }
    }
    let mut again = Py::monitor(&server, "quiet");
    assert_eq!(
        again.expect("con failed").await["reason"],
        "already connected"
    );
    // It stops: within pingInterval + pingTimeout (and a beat), it has left
    // the namespace and its sid is forgotten.
    let mut freed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !freed && tokio::time::Instant::now() < deadline {
        let mut again = Py::monitor(&server, "quiet");
        let (event, _) = again.next().await;
        let event = if event == "connect" {
            again.next().await.0
        } else {
            event
        };
        freed = event == "con ok";
    }
    assert!(freed, "the silent poller left the namespace");
    polling_ends(&poller).await;
}

#[tokio::test]
async fn every_command_to_a_monitor_ends_with_an_answer_a_timeout_or_gone() {
    let server = TestServer::with(|s| s.adapter_command_timeout_secs = 1);
    let poller = Poller::monitor(&server, "slow").await;
    let mut user = user(&server, "slow").await;
    // Unanswered: a timeout; the monitor's late answer is dropped, and the
    // next command gets its own answer.
    user.send(json!({"command": "one"})).await;
    user.expect("command ok").await;
    assert_eq!(
        poller.packets().await,
        ["42[\"command do\",{\"command\":\"one\"}]"]
    );
    let why = user.expect("command failed").await["reason"].clone();
    assert!(why.as_str().unwrap().starts_with("timeout"), "{why}");
    poller.post("42[\"command done\"]").await;
    user.send(json!({"command": "two"})).await;
    user.expect("command ok").await;
    assert_eq!(
        poller.packets().await,
        ["42[\"command do\",{\"command\":\"two\"}]"]
    );
    poller
        .post("42[\"command error\",{\"reason\":\"nope\"}]")
        .await;
    assert_eq!(user.expect("command failed").await["reason"], "nope");
    // The monitor leaves with a command in flight: its sender is told.
    user.send(json!({"command": "three"})).await;
    user.expect("command ok").await;
    assert_eq!(
        poller.packets().await,
        ["42[\"command do\",{\"command\":\"three\"}]"]
    );
    poller.post("41").await;
    let why = user.expect("command failed").await["reason"].clone();
    assert_eq!(why, "gone: the monitor slow disconnected");
}

#[tokio::test]
async fn polling_has_cors_for_allowed_origins_only() {
    let server = TestServer::with(|s| {
        s.allowed_origins = "http://pages.example".into();
        // A GET with nothing queued waits for the next ping.
        s.heartbeat_interval_ms = 300;
        s.heartbeat_timeout_ms = 1_000;
    });
    let poller = Poller::open_from(&server, Some("http://pages.example"))
        .await
        .expect("an allowed origin polls");
    let response = poller
        .http
        .get(poller.url())
        .header("Origin", "http://pages.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://pages.example"
    );
    // A preflight, as a browser sends before a POST of text/plain with
    // its own headers.
    let preflight = poller
        .http
        .request(reqwest::Method::OPTIONS, poller.url())
        .header("Origin", "http://pages.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://pages.example"
    );
    // Another origin: refused, and no CORS header lets its page read it.
    let response = poller
        .http
        .get(&poller.base)
        .header("Origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 4, "{body}");
    // `*`: every origin.
    let open = TestServer::with(|s| s.allowed_origins = "*".into());
    let response = reqwest::Client::new()
        .get(format!(
            "http://{}/socket.io/?EIO=4&transport=polling",
            open.addr
        ))
        .header("Origin", "http://anywhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_some());
}

/// An adapter's client reading a backlog longer than the heartbeat timeout
/// is alive, as a native one is (handshake.rs): a Socket.IO user whose
/// events wait in the gateway's queue, the gateway's Engine.IO pings behind
/// them, says nothing until it reads a ping, and must not be closed for
/// that silence. Adapters once closed it ("no pong").
#[tokio::test]
async fn a_user_reading_a_long_backlog_is_not_closed_as_silent() {
    const EVENTS: usize = 600;
    const PAD: usize = 32 * 1024;
    // The user reads at most 3.2 MiB/s, slower than the gateway writes
    // even in a debug build under load: the backlog stays in the gateway's
    // queue, and what the kernel holds drains well within the timeout.
    let server = TestServer::with(|s| {
        s.heartbeat_interval_ms = 500;
        s.heartbeat_timeout_ms = 2_000;
        s.max_outgoing_queue = 4_096;
    });
    // A small kernel receive buffer keeps the backlog in the gateway.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    let stream = socket.connect(server.addr).await.expect("connects");
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    let (ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("upgrades");
    let mut user = Client {
        ws,
        uuid: uuid::Uuid::nil(),
        name: "user".into(),
        fs_key: String::new(),
    };
    assert!(text(&mut user).await.starts_with('0'), "the open packet");
    user.send_text("40".into()).await;
    while !text(&mut user).await.starts_with("40{") {}
    user.send_text(r#"42["query",{"monitor_id":"mon"}]"#.into())
        .await;
    while text(&mut user).await != r#"42["query ok"]"# {}

    // A native client named as the user's monitor reports to it.
    let mut monitor = server.client("mon").await;
    monitor.send(json!({"type": "CLIENT_FETCH_ALL"})).await;
    let all = monitor.skip_to("CLIENT_FETCH_ALL_RESULT").await;
    let clients = all["clients"].as_array().expect("clients");
    let to = clients
        .iter()
        .find(|c| c["tags"][0] == "altoponix-user")
        .expect("the user")["uuid"]
        .clone();
    let monitor = tokio::spawn(async move {
        let pad = "x".repeat(PAD);
        for i in 0..EVENTS {
            let target = json!({"type": "UUID", "uuid": to});
            let data = json!({"event": "command failed", "reason": format!("{i} {pad}")});
            monitor
                .send(json!({"type": "MESSAGE", "target": target, "data": data}))
                .await;
            // Let the user run: writes to loopback rarely block.
            tokio::task::yield_now().await;
        }
        // Stay alive (reading answers the gateway's pings) until aborted.
        while let Some(Ok(_)) = monitor.ws.next().await {}
    });

    let started = std::time::Instant::now();
    let mut next = 0;
    while next < EVENTS {
        let frame = tokio::time::timeout(Duration::from_secs(10), user.ws.next());
        match frame.await.expect("a frame within 10 s") {
            Some(Ok(Message::Text(text))) if text.starts_with(r#"42["command failed""#) => {
                let at = text.find(r#""reason":""#).expect("reason") + 10;
                let digits: String = text[at..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                assert_eq!(digits, next.to_string(), "in order, none lost");
                next += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // The gateway's ping, answered once it is read, as an Engine.IO
            // client does: it waited behind the backlog.
            Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
                user.send_text("3".into()).await;
            }
            other => panic!("after {next} events: {other:?}"),
        }
    }
    // 600 events at most one per 10 ms.
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "the backlog outlasted the heartbeat timeout twice"
    );
    // Still connected: a command is answered.
    user.send_text(r#"42["command send",{"command":"ls"}]"#.into())
        .await;
    loop {
        let said = text(&mut user).await;
        if said.starts_with(r#"42["command"#) {
            assert_eq!(said, r#"42["command ok"]"#);
            break;
        }
    }
    monitor.abort();
}
