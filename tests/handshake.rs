//! Connecting and identifying: HELLO, the subprotocol, and every close code.

mod common;

use std::time::Duration;

use common::flood::{self, Flood};
use common::{raw_http, Client, TestServer, PATIENCE};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn identify_gets_hello_with_uuid_and_version() {
    let server = TestServer::start();
    let mut c = server.connect().await;
    c.send(json!({"type": "IDENTIFY", "name": "alice", "nickname": "Alice", "version": "0.2.0", "tags": ["a"]}))
        .await;
    let hello = c.expect("HELLO").await;
    assert_eq!(hello["version"], "0.2.0");
    let uuid: uuid::Uuid = hello["uuid"].as_str().unwrap().parse().unwrap();
    assert_ne!(uuid, uuid::Uuid::nil());
}

#[tokio::test]
async fn subprotocol_is_selected_when_offered_and_optional() {
    let server = TestServer::start();
    let mut req = server.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "ert-concierge".parse().unwrap());
    let (_, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "ert-concierge");

    // A client offering none is still accepted.
    let (_, resp) = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .unwrap();
    assert!(resp.headers().get("sec-websocket-protocol").is_none());
}

#[tokio::test]
async fn protocol_0_2_x_clients_are_accepted() {
    let server = TestServer::start();
    let mut c = server.connect().await;
    c.send(json!({"type": "IDENTIFY", "name": "old", "version": "0.2.9"}))
        .await;
    c.expect("HELLO").await;
}

async fn closed_with(server: &TestServer, first: Message) -> (u16, String) {
    let mut c = server.connect().await;
    c.ws.send(first).await.unwrap();
    c.expect_close().await
}

fn identify(fields: serde_json::Value) -> Message {
    let mut payload = json!({"type": "IDENTIFY", "name": "x", "version": "0.2.0", "tags": []});
    for (k, v) in fields.as_object().unwrap() {
        payload[k] = v.clone();
    }
    Message::Text(payload.to_string().into())
}

#[tokio::test]
async fn undecodable_first_frame_closes_4002() {
    let server = TestServer::start();
    let (code, reason) = closed_with(&server, Message::Text("{not json".into())).await;
    assert_eq!(code, 4002, "{reason}");
    assert!(!reason.is_empty());
    let (code, _) = closed_with(&server, Message::Text(r#"{"type":"IDENTIFY"}"#.into())).await;
    assert_eq!(code, 4002);
    let (code, _) = closed_with(&server, Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(code, 4002);
    let (code, _) = closed_with(&server, Message::Text(r#"{"type":"WHATEVER"}"#.into())).await;
    assert_eq!(code, 4002);
}

#[tokio::test]
async fn another_payload_first_closes_4003() {
    let server = TestServer::start();
    let (code, reason) =
        closed_with(&server, Message::Text(r#"{"type":"SELF_FETCH"}"#.into())).await;
    assert_eq!(code, 4003);
    assert!(reason.contains("IDENTIFY"), "{reason}");
}

#[tokio::test]
async fn silence_closes_4004_after_the_identify_timeout() {
    let server = TestServer::with(|s| s.identify_timeout_ms = 300);
    let mut c = server.connect().await;
    let started = std::time::Instant::now();
    let (code, reason) = c.expect_close().await;
    assert_eq!(code, 4004, "{reason}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(250));
}

#[tokio::test]
async fn taken_name_closes_4005_and_frees_on_leave() {
    let server = TestServer::start();
    let first = server.client("dup").await;
    let (code, reason) = closed_with(&server, identify(json!({"name": "dup"}))).await;
    assert_eq!(code, 4005);
    assert!(reason.contains("dup"), "{reason}");
    first.close().await;
    let mut again = server.connect().await;
    again.identify("dup").await;
}

/// On an open gateway, HELLO's `resume` secret proves a client owns its
/// name: given in a later IDENTIFY, it takes the name over at once (4015 to
/// the old connection, a new secret in the new HELLO); without it, or with
/// a wrong or spent one, the name is taken (4005).
#[tokio::test]
async fn the_resume_secret_of_hello_takes_the_name_over() {
    let server = TestServer::start();
    let identify = |resume: Option<&str>| json!({"type": "IDENTIFY", "name": "roamer", "version": "0.2.0", "presence": false, "resume": resume});
    let mut old = server.connect().await;
    old.send(identify(None)).await;
    let hello = old.expect("HELLO").await;
    let secret = hello["resume"]
        .as_str()
        .expect("a resume secret")
        .to_owned();
    assert!(secret.len() >= 43, "256 bits: {secret}");
    for wrong in [None, Some("not the secret")] {
        let mut refused = server.connect().await;
        refused.send(identify(wrong)).await;
        assert_eq!(refused.recv_any().await, Err(4005), "{wrong:?}");
    }
    let mut new = server.connect().await;
    new.send(identify(Some(&secret))).await;
    let hello = new.expect("HELLO").await;
    let renewed = hello["resume"].as_str().expect("a new secret");
    assert_ne!(renewed, secret);
    assert_eq!(old.expect_close().await.0, 4015);
    let mut spent = server.connect().await;
    spent.send(identify(Some(&secret))).await;
    assert_eq!(spent.recv_any().await, Err(4005));
}

/// `take_over: false`: a taken name is refused (4005) even with the proof
/// that would take it over, and the holder stays; anything but a boolean
/// is a decoding error (4002).
#[tokio::test]
async fn an_identify_that_does_not_take_over_is_refused_a_taken_name() {
    let server = TestServer::start();
    let mut holder = server.connect().await;
    holder
        .send(json!({"type": "IDENTIFY", "name": "host7", "version": "0.2.0"}))
        .await;
    let hello = holder.expect("HELLO").await;
    let secret = hello["resume"].as_str().expect("a resume secret");
    let mut second = server.connect().await;
    second
        .send(json!({"type": "IDENTIFY", "name": "host7", "version": "0.2.0", "resume": secret, "take_over": false}))
        .await;
    assert_eq!(second.recv_any().await, Err(4005));
    holder.send(json!({"type": "CLIENT_FETCH_ALL"})).await;
    holder.expect("CLIENT_FETCH_ALL_RESULT").await;

    let mut bad = server.connect().await;
    bad.send(json!({"type": "IDENTIFY", "name": "host8", "version": "0.2.0", "take_over": "no"}))
        .await;
    let (code, reason) = bad.expect_close().await;
    assert_eq!(code, 4002);
    assert!(reason.contains("take_over"), "{reason}");
}

#[tokio::test]
async fn wrong_secret_closes_4006() {
    let server = TestServer::with(|s| s.secret = "hunter2".into());
    let (code, _) = closed_with(&server, identify(json!({"secret": "nope"}))).await;
    assert_eq!(code, 4006);
    let (code, _) = closed_with(&server, identify(json!({}))).await;
    assert_eq!(code, 4006);
    let mut ok = server.connect().await;
    ok.ws
        .send(identify(json!({"secret": "hunter2"})))
        .await
        .unwrap();
    ok.expect("HELLO").await;
}

#[tokio::test]
async fn bad_versions_close_4007() {
    let server = TestServer::start();
    for version in ["banana", "1.0.0", "0.3.0", ""] {
        let (code, reason) = closed_with(&server, identify(json!({"version": version}))).await;
        assert_eq!(code, 4007, "{version}: {reason}");
    }
}

#[tokio::test]
async fn bad_names_and_identity_limits_close_4008() {
    let server = TestServer::with(|s| {
        s.max_name_len = 8;
        s.max_tags = 2;
        s.max_tag_len = 4;
        s.max_nickname_len = 5;
    });
    for fields in [
        json!({"name": ""}),
        json!({"name": "has space"}),
        json!({"name": "dash-ed"}),
        json!({"name": "ünï"}),
        json!({"name": "waytoolongname"}),
        json!({"tags": ["a", "b", "c"]}),
        json!({"tags": ["toolong"]}),
        json!({"nickname": "toolong"}),
    ] {
        let (code, reason) = closed_with(&server, identify(fields.clone())).await;
        assert_eq!(code, 4008, "{fields}: {reason}");
        assert!(!reason.is_empty());
    }
}

#[tokio::test]
async fn a_silent_client_closes_4009() {
    let server = TestServer::with(|s| {
        s.heartbeat_interval_ms = 100;
        s.heartbeat_timeout_ms = 300;
    });
    // tungstenite answers pings only while it is being read, so a client that
    // stops reading shows no sign of life.
    let mut c = server.client("sleepy").await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let (code, reason) = c.expect_close().await;
    assert_eq!(code, 4009, "{reason}");
}

#[tokio::test]
async fn a_client_answering_pings_stays() {
    let server = TestServer::with(|s| {
        s.heartbeat_interval_ms = 100;
        s.heartbeat_timeout_ms = 300;
    });
    let mut c = server.client("awake").await;
    // Reading keeps answering pings.
    c.expect_silence(900).await;
    c.send(json!({"type": "SELF_FETCH"})).await;
    c.expect("SELF_FETCH_RESULT").await;
}

/// A client that reads steadily through a backlog far longer than the
/// heartbeat timeout is alive, even though the gateway's pings wait behind
/// that backlog: it must not be closed with 4009 (it once was, in a cluster
/// fan-out to 1,000 subscribers).
#[tokio::test]
async fn a_client_reading_a_long_backlog_is_not_closed_as_silent() {
    const MESSAGES: usize = 2_000;
    const PAD: usize = 32 * 1024;
    let server = TestServer::with(|s| {
        s.heartbeat_interval_ms = 250;
        s.heartbeat_timeout_ms = 1_000;
        s.max_outgoing_queue = 4_096;
    });
    let mut owner = server.client("owner").await;
    let created = owner
        .request(json!({"type": "SERVICE_CREATE", "service": "feed"}), 0)
        .await;
    assert_eq!(created["successful"], true, "{created}");
    // A small kernel receive buffer keeps the backlog in the gateway.
    let mut reader = server.connect_with_recv_buffer(16 * 1024).await;
    reader.identify("reader").await;
    let subscribed = reader
        .request(json!({"type": "SELF_SUBSCRIBE", "service": "feed"}), 0)
        .await;
    assert_eq!(subscribed["successful"], true, "{subscribed}");

    // 64 MiB, sent faster than the reader reads it.
    let sender = tokio::spawn(async move {
        let pad = "x".repeat(PAD);
        for i in 0..MESSAGES {
            let target = json!({"type": "SERVICE", "service": "feed"});
            owner
                .send(json!({"type": "MESSAGE", "target": target, "data": {"i": i, "pad": pad}}))
                .await;
            // Let the reader run: writes to loopback rarely block.
            tokio::task::yield_now().await;
        }
        // Stay alive (reading answers the gateway's pings) until aborted.
        while let Some(Ok(_)) = owner.ws.next().await {}
    });
    let started = std::time::Instant::now();
    let mut next = 0;
    while next < MESSAGES {
        let msg = reader.ws.next().await.expect("open").expect("reads");
        match msg {
            // Parsing 32 KiB of JSON per message would make the reader too
            // slow for this test in a debug build: find the counter instead.
            Message::Text(text) if text.starts_with(r#"{"type":"MESSAGE""#) => {
                let at = text.find(r#""i":"#).expect("counter") + 4;
                let digits: String = text[at..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                assert_eq!(digits, next.to_string(), "in order, none lost");
                next += 1;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            Message::Close(frame) => panic!("closed after {next} messages: {frame:?}"),
            _ => {}
        }
    }
    // 2,000 messages at most one per millisecond.
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "the backlog outlasted the heartbeat timeout twice"
    );
    // Still connected and answered.
    let fetched = reader.request(json!({"type": "SELF_FETCH"}), 1).await;
    assert_eq!(fetched["type"], "SELF_FETCH_RESULT", "{fetched}");
    sender.abort();
}

#[tokio::test]
async fn oversized_frames_close_1009() {
    let server = TestServer::with(|s| s.max_frame_size = 1024);
    let mut c = server.client("big").await;
    let data = "x".repeat(2048);
    c.send(json!({"type": "MESSAGE", "target": {"type": "ALL"}, "data": data}))
        .await;
    let (code, reason) = c.expect_close().await;
    assert_eq!(code, 1009, "{reason}");
}

#[tokio::test]
async fn fragmented_messages_are_reassembled() {
    use tokio_tungstenite::tungstenite::protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    };
    let server = TestServer::start();
    let mut c = server.client("frag").await;
    let text = json!({"type": "SELF_FETCH"}).to_string();
    let (a, b) = text.as_bytes().split_at(5);
    let mut first = Frame::message(a.to_vec(), OpCode::Data(Data::Text), false);
    first.header_mut().is_final = false;
    let last = Frame::message(b.to_vec(), OpCode::Data(Data::Continue), true);
    c.ws.send(Message::Frame(first)).await.unwrap();
    c.ws.send(Message::Frame(last)).await.unwrap();
    let reply = c.expect("SELF_FETCH_RESULT").await;
    assert_eq!(reply["seq"], 0);
}

#[tokio::test]
async fn http_get_on_ws_without_upgrade_is_refused() {
    let server = TestServer::start();
    let resp = reqwest::get(server.http_url("/ws")).await.unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
}

#[tokio::test]
async fn health_ready_and_version() {
    let server = TestServer::start();
    for (path, key, value) in [
        ("/healthz", "status", "ok"),
        ("/readyz", "status", "ready"),
        ("/version", "protocol", "0.2.0"),
    ] {
        let resp = reqwest::get(server.http_url(path)).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body[key], value, "{path}: {body}");
    }
}

/// A client's close frame is answered with a close frame echoing it, its
/// code and reason (RFC 6455 §5.5.1; PROTOCOL.md 2.3 "the gateway echoes
/// it"), before the gateway ends the TCP connection; and the client has
/// left: its name is free again.
#[tokio::test]
async fn client_close_is_acknowledged() {
    let server = TestServer::start();
    let mut c = Flood::connect(server.addr, "/ws").await;
    c.send(&flood::text(&identify_json("bye"))).await;
    let (op, hello) = c.next_frame().await;
    assert_eq!(op, 0x1);
    assert!(String::from_utf8_lossy(&hello).contains("HELLO"));
    let mut close = 4321u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"see you");
    c.send(&flood::frame(0x8, &close)).await;
    // Panics if the connection ends before a close frame.
    let (code, reason) = c.expect_close().await;
    assert_eq!((code, reason.as_str()), (4321, "see you"));
    // Then the TCP connection ends, with nothing more sent.
    assert_eq!(c.close_or_end(PATIENCE).await, None, "a second close frame");
    let mut other = Client::connect(&server.ws_url()).await;
    other.identify("bye").await;
}

/// An IDENTIFY for `name`, as JSON text.
fn identify_json(name: &str) -> String {
    json!({"type": "IDENTIFY", "name": name, "version": "0.2.0"}).to_string()
}

/// WebSocket protocol violations close the socket with 1002 and a reason
/// saying so (PROTOCOL.md 2.3 and 3), and the close frame reaches the
/// client: each of the examples the protocol gives, and the other frames
/// RFC 6455 forbids, written by hand after the upgrade.
#[tokio::test]
async fn websocket_protocol_violations_close_1002() {
    let server = TestServer::start();
    let with = |frame: Vec<u8>, change: fn(&mut Vec<u8>)| {
        let mut frame = frame;
        change(&mut frame);
        frame
    };
    let violations = [
        // Client frames must be masked: a text frame without its mask.
        ("an unmasked frame", vec![0x81, 0x02, b'h', b'i']),
        ("a bad opcode", flood::frame(0x3, b"")),
        (
            "a continuation frame outside a fragmented message",
            flood::frame(0x0, b"x"),
        ),
        (
            "an unfragmented text frame that is not UTF-8",
            flood::frame(0x1, &[b'{', 0xff, 0xfe, b'}']),
        ),
        (
            "a fragmented control frame",
            with(flood::frame(0x9, b"x"), |f| f[0] &= 0x7f),
        ),
        (
            "a control frame over 125 bytes",
            flood::frame(0x9, &[b'x'; 126]),
        ),
        (
            "reserved bits set",
            with(flood::text("{}"), |f| f[0] |= 0x40),
        ),
    ];
    for (i, (what, frame)) in violations.into_iter().enumerate() {
        let mut c = Flood::connect(server.addr, "/ws").await;
        c.send(&flood::text(&identify_json(&format!("rude{i}"))))
            .await;
        let (op, hello) = c.next_frame().await;
        assert_eq!(op, 0x1, "{what}");
        assert!(String::from_utf8_lossy(&hello).contains("HELLO"), "{what}");
        c.send(&frame).await;
        let (code, reason) = c.expect_close().await;
        assert_eq!(code, 1002, "{what}: {reason}");
        assert!(
            reason.starts_with("websocket protocol error: "),
            "{what}: {reason}"
        );
    }
}

/// A close reason is cut to 123 bytes, so that the close frame stays within
/// the 125 bytes RFC 6455 §5.5 allows a control frame (PROTOCOL.md 3), and
/// on a character boundary, so that it stays UTF-8. The reason here quotes
/// a refused name of 4-byte characters, 162 bytes long, placed so that byte
/// 123 falls in the middle of one.
#[tokio::test]
async fn a_long_close_reason_is_cut_to_123_bytes_on_a_character_boundary() {
    let server = TestServer::start();
    let name = format!("ab{}", "\u{1f600}".repeat(40));
    let mut c = Flood::connect(server.addr, "/ws").await;
    c.send(&flood::text(&identify_json(&name))).await;
    let payload = loop {
        let (op, payload) = c.next_frame().await;
        if op == 0x8 {
            break payload;
        }
    };
    assert!(
        payload.len() <= 125,
        "a close frame of {} bytes",
        payload.len()
    );
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4008);
    let reason = std::str::from_utf8(&payload[2..])
        .unwrap_or_else(|e| panic!("the reason is not UTF-8 ({e}): {:?}", &payload[2..]));
    // Cut at the last boundary before byte 123: less than a character lost.
    assert!(
        (120..=123).contains(&reason.len()),
        "{} bytes: {reason}",
        reason.len()
    );
    assert!(reason.starts_with("name \"ab\u{1f600}"), "{reason}");
}

#[tokio::test]
async fn a_huge_frame_header_is_refused_before_its_payload_arrives() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start();
    let mut c = server.client("greedy").await;
    // A masked text frame announcing 1 GiB, followed by only a few bytes.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4, b'x', b'y']);
    match c.ws.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.write_all(&header).await.unwrap(),
        _ => unreachable!("plain TCP in tests"),
    }
    let (code, reason) = c.expect_close().await;
    assert_eq!(code, 1009, "{reason}");
}

#[tokio::test]
async fn upgrades_that_cannot_be_accepted_get_an_http_error() {
    let server = TestServer::start();
    let upgrade = [("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")];
    // The right headers on another path.
    let mut headers = upgrade.to_vec();
    headers.push(("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="));
    let (status, body) = raw_http(server.addr, "GET", "/metrics", &headers, b"").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("/ws"), "{body}");
    // Not a GET.
    let (status, _) = raw_http(server.addr, "POST", "/ws", &headers, b"").await;
    assert_eq!(status, 405);
    // No key (and no `Connection: upgrade`).
    let (status, _) = raw_http(server.addr, "GET", "/ws", &upgrade, b"").await;
    assert_eq!(status, 400);
    // The gateway still serves.
    let mut c = server.client("after").await;
    c.request(json!({"type": "SELF_FETCH"}), 0).await;
}

#[tokio::test]
async fn frames_sent_right_behind_the_upgrade_request_are_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start();
    let identify = json!({"type": "IDENTIFY", "name": "eager", "version": "0.2.0"}).to_string();
    assert!(identify.len() < 126, "one-byte length");
    let mask = [7u8, 1, 9, 3];
    // The request and the first frame in one write: the dispatcher reads
    // both before the gateway takes the socket over.
    let mut bytes = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    )
    .into_bytes();
    bytes.extend([0x81, 0x80 | identify.len() as u8]);
    bytes.extend(mask);
    bytes.extend(identify.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(&bytes).await.unwrap();

    let mut got = Vec::new();
    let hello = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&got).into_owned();
            let Some((head, _)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            let frame = &got[head.len() + 4..];
            // An unmasked text frame with a 1- or 2-byte length.
            if frame.len() < 2 {
                continue;
            }
            assert_eq!(frame[0], 0x81, "a final text frame");
            let (len, at) = match frame[1] {
                126 if frame.len() >= 4 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
                126 => continue,
                n => (n as usize, 2),
            };
            if frame.len() >= at + len {
                break serde_json::from_slice::<serde_json::Value>(&frame[at..at + len]).unwrap();
            }
        }
    })
    .await
    .expect("HELLO within 5 s");
    assert_eq!(hello["type"], "HELLO", "{hello}");
}

#[tokio::test]
async fn a_client_without_presence_hears_of_no_joins_and_leaves() {
    let server = TestServer::start();
    let mut agent = server.connect().await;
    agent
        .identify_with(
            json!({"type": "IDENTIFY", "name": "agent1", "version": "0.2.0", "presence": false}),
        )
        .await;
    let mut operator = server.client("operator").await;
    let mut other = server.connect().await;
    other
        .identify_with(
            json!({"type": "IDENTIFY", "name": "agent2", "version": "0.2.0", "presence": false}),
        )
        .await;
    // The operator hears of the agents as always.
    let joined = operator.expect("CLIENT_JOINED").await;
    assert_eq!(joined["client"]["name"], "agent2");
    other.close().await;
    let left = operator.expect("CLIENT_LEFT").await;
    assert_eq!(left["client"]["name"], "agent2");
    // The agent heard of neither, nor of services created, but can still
    // list the clients and find the services.
    for (seq, service) in [(0, "news"), (1, "weather")] {
        operator
            .request(json!({"type": "SERVICE_CREATE", "service": service}), seq)
            .await;
    }
    agent.send(json!({"type": "CLIENT_FETCH_ALL"})).await;
    let all = agent.expect("CLIENT_FETCH_ALL_RESULT").await;
    assert_eq!(all["clients"].as_array().unwrap().len(), 2, "{all}");
    // It hears of the deletion of a service it subscribes to, and only
    // of that one.
    agent
        .send(json!({"type": "SELF_SUBSCRIBE", "service": "news"}))
        .await;
    agent.expect("SELF_SUBSCRIBE_RESULT").await;
    operator
        .request(json!({"type": "SERVICE_DELETE", "service": "weather"}), 2)
        .await;
    operator
        .request(json!({"type": "SERVICE_DELETE", "service": "news"}), 3)
        .await;
    let deleted = agent.expect("SERVICE_DELETE_RESULT").await;
    assert_eq!(deleted["service"]["name"], "news", "{deleted}");
    agent.expect_nothing_queued().await;

    let mut bad = server.connect().await;
    bad.send(json!({"type": "IDENTIFY", "name": "agent3", "version": "0.2.0", "presence": "no"}))
        .await;
    let (code, reason) = bad.expect_close().await;
    assert_eq!(code, 4002);
    assert!(reason.contains("presence"), "{reason}");
}
