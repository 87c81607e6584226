//! Engine.IO's long-polling transport on `/socket.io/` and its upgrade, on
//! the wire (raw HTTP requests, as socket.io.js sends them, and
//! python-socketio's own polling-first client): a monitor commanded before,
//! during and after its upgrade, an upgrade given up, refusals and bounds,
//! a client that stops polling, every command's end, CORS.

use super::*;

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
    let mut client = Client::connect(&url).await;
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
