//! Socket.IO (seed 002, Altoponix) on `/socket.io/`: a user and a monitor
//! written against python-socketio's documented client API
//! (tests/clients/altoponix_*.py), on one gateway and on two replicas;
//! native clients and `ctl send` commanding a monitor; tokens and roles;
//! hostile packets from a raw WebSocket client; Engine.IO's long-polling
//! transport in [`polling`].

#[path = "../common/mod.rs"]
mod common;
mod polling;

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
    // A monitor is a host of the fleet's inventory.
    let (code, hosts) = common::process::ctl_json(&server.ws_url(), &token, &["hosts"]).await;
    assert_eq!(code, 0, "{hosts}");
    assert_eq!(
        (&hosts["hosts"][0]["name"], &hosts["hosts"][0]["kind"]),
        (&json!("mon_ctl"), &json!("altoponix-monitor")),
        "{hosts}"
    );

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
    let mut client = Client::connect(&url).await;
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
