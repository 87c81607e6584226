//! What the agent makes of each request it receives: the audit trail of
//! commands, error replies to malformed requests, and frames it cannot
//! decode skipped without losing its connection.

use serde_json::{json, Value};

use crate::{assert_refused, common, spawn_agent, Fleet};

#[tokio::test]
async fn commands_are_audited_to_the_log_and_the_audit_service() {
    let fleet = Fleet::start().await;
    let mut watcher = fleet.audit_watcher().await;
    let (code, _) = fleet
        .request(
            &fleet.alice,
            "execute",
            json!({"cmd": ["true"], "env": {"API_KEY": "hunter2"}}),
        )
        .await;
    assert_eq!(code, 0);
    let (code, _) = fleet
        .ctl_json(&fleet.vic, &["signal", "host1", "1", "SIGTERM"])
        .await;
    assert_eq!(code, 1);

    let published = watcher.skip_to("MESSAGE").await;
    let entry = &published["data"]["entry"];
    assert_eq!(
        (
            entry["user"].as_str(),
            entry["req"].as_str(),
            entry["result"].as_str()
        ),
        (Some("alice"), Some("execute"), Some("success")),
        "{published}"
    );
    assert!(
        entry["proc_id"].is_u64()
            && entry["client"]
                .as_str()
                .expect("client")
                .starts_with("alice_ctl_"),
        "{entry}"
    );
    let log = std::fs::read_to_string(fleet.work.path().join("audit.log")).expect("audit log");
    assert!(!log.contains("hunter2"), "env values are masked: {log}");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert_eq!(
        (lines[1]["user"].as_str(), lines[1]["reason"].as_str()),
        (Some("vic"), Some("forbidden"))
    );
    let (code, out, _) = fleet.ctl(&fleet.alice, &["--json", "audit", "host1"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, reply) = fleet.ctl_json(&fleet.vic, &["audit", "host1"]).await;
    assert_refused(code, &reply, "forbidden");
}

#[tokio::test]
async fn malformed_requests_get_error_replies() {
    let fleet = Fleet::start().await;
    let mut alice = fleet.client("alice_raw", &fleet.alice).await;
    let ask = |data: Value| json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "host1"}, "data": data});
    for (data, rid, reason) in [
        (json!("hello"), Value::Null, "malformed"),
        (json!({"req": "execute"}), Value::Null, "malformed"),
        (json!({"req": 5, "rid": 1}), json!(1), "malformed"),
        (
            json!({"req": "x", "rid": 2, "msg": []}),
            json!(2),
            "malformed",
        ),
        (
            json!({"req": "nope", "rid": 3}),
            json!(3),
            "unknown_request",
        ),
        (
            json!({"req": "proc_signal", "rid": 4, "msg": {"pid": "x", "mode": "SIGTERM"}}),
            json!(4),
            "bad_argument",
        ),
        (
            json!({"req": "proc_signal", "rid": 5, "msg": {"pid": 10, "mode": "SIGSEGV"}}),
            json!(5),
            "bad_argument",
        ),
        (
            json!({"req": "execute", "rid": 6, "msg": {"cmd": []}}),
            json!(6),
            "bad_argument",
        ),
        (
            json!({"req": "execute", "rid": 7, "msg": {"cmd": "ls -l"}}),
            json!(7),
            "bad_argument",
        ),
        (
            json!({"req": "execute", "rid": 8, "msg": {"cmd": ["/no/such/program"]}}),
            json!(8),
            "not_found",
        ),
        (
            json!({"req": "obtain_process_info", "rid": 9, "msg": {"pid": 0}}),
            json!(9),
            "bad_argument",
        ),
        (
            json!({"req": "proc_output", "rid": 10, "msg": {"proc_id": 1}}),
            json!(10),
            "not_found",
        ),
        (
            json!({"req": "list_services", "rid": 11}),
            json!(11),
            "no_systemd",
        ),
    ] {
        alice.send(ask(data.clone())).await;
        let reply = alice.skip_to("MESSAGE").await;
        assert_eq!(reply["data"]["rid"], rid, "{data} -> {reply}");
        assert_eq!(reply["data"]["msg"]["result"], "error", "{data} -> {reply}");
        assert_eq!(reply["data"]["msg"]["reason"], reason, "{data} -> {reply}");
        assert!(reply["data"]["msg"]["desc"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
    }
    // Replies sent to the agent are not answered (two agents would answer
    // each other forever).
    alice
        .send(ask(json!({"rid": 1, "msg": {"result": "success"}})))
        .await;
    alice.skip_to("OK").await;
    // A ping sent after it is answered first: the agent takes its messages
    // in order and a reply, if it answered one, would go out at once.
    alice.send(ask(json!({"req": "ping", "rid": 99}))).await;
    alice.skip_to("OK").await;
    let next = alice.skip_to("MESSAGE").await;
    assert_eq!(next["data"]["rid"], 99, "the reply was answered: {next}");
}

/// MESSAGE `data` that JSON's grammar allows and strict parsers refuse
/// (serde_json, Python's `json`), with what the gateway's refusal names.
fn poisons() -> Vec<(String, &'static str)> {
    vec![
        (r#""\ud800""#.to_owned(), "lone surrogate"),
        ("1e400".to_owned(), "too large for a double"),
        (
            format!("{}0{}", "[".repeat(200), "]".repeat(200)),
            "nested deeper than 64",
        ),
    ]
}

#[tokio::test]
async fn data_no_client_can_read_is_refused_and_the_agent_stays_connected() {
    let fleet = Fleet::start().await;
    let mut vic = fleet.client("vic_raw", &fleet.vic).await;
    let mut seq = 0;
    for (data, named) in poisons() {
        for target in [r#"{"type":"ALL"}"#, r#"{"type":"NAME","name":"host1"}"#] {
            vic.send_text(format!(
                r#"{{"type":"MESSAGE","target":{target},"data":{data}}}"#
            ))
            .await;
            let refused = vic.expect("ERROR_PROTOCOL").await;
            assert_eq!(refused["seq"], seq, "{refused}");
            let desc = refused["desc"].as_str().unwrap_or_default();
            assert!(
                desc.contains("field `data`") && desc.contains(named),
                "{target} {named}: {desc}"
            );
            seq += 1;
        }
    }
    // The agent reads its frames in order: its answer to a ping sent after
    // the poisons shows it read past them, on the same connection.
    vic.send(
        json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "host1"},
        "data": {"req": "ping", "rid": 77}}),
    )
    .await;
    let pong = vic.skip_to("MESSAGE").await;
    assert_eq!(
        (
            pong["data"]["rid"].as_u64(),
            pong["data"]["msg"]["result"].as_str()
        ),
        (Some(77), Some("success")),
        "{pong}"
    );
    assert_eq!(pong["data"]["msg"]["undecodable_frames"], 0, "{pong}");
    let log = fleet.agent.log();
    assert!(!log.contains("disconnected"), "{log}");
}

#[tokio::test]
async fn the_agent_skips_frames_it_cannot_decode_and_keeps_its_connection() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    // A gateway of the test's own that says HELLO and then sends what no
    // gateway of this version lets through.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let url = format!("ws://{}/ws", listener.local_addr().expect("addr"));
    let work = tempfile::tempdir().expect("work");
    let agent = spawn_agent(&url, "not-checked", work.path(), "").await;
    let (tcp, _) = tokio::time::timeout(common::PATIENCE, listener.accept())
        .await
        .expect("the agent connects")
        .expect("accepts");
    let mut ws = tokio_tungstenite::accept_async(tcp)
        .await
        .expect("upgrades");
    let mut frames = Vec::new();
    // Every read is bounded: a missing frame fails in seconds, pings or not.
    let next_text = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| {
        let deadline = tokio::time::Instant::now() + common::PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    return serde_json::from_str::<Value>(&text).expect("the agent sends JSON")
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                other => panic!("the agent's connection: {other:?}"),
            }
        }
    };
    let identify = next_text(&mut ws).await;
    assert_eq!(identify["type"], "IDENTIFY", "{identify}");
    let hello = json!({"type": "HELLO", "uuid": uuid(1), "version": "0.2.0"});
    ws.send(Message::Text(hello.to_string().into()))
        .await
        .expect("sends");
    let origin =
        json!({"name": "vic", "uuid": uuid(2), "tags": [], "user": "vic", "roles": ["viewer"]});
    let message = |data: &str| {
        format!(r#"{{"type":"MESSAGE","target":{{"type":"ALL"}},"origin":{origin},"data":{data}}}"#)
    };
    frames.extend(poisons().iter().map(|(data, _)| message(data)));
    frames.push("not JSON at all".to_owned());
    frames.push(r#"{"type":"FROM_A_NEWER_GATEWAY","x":1}"#.to_owned());
    let skipped = frames.len();
    frames.push(message(r#"{"req":"ping","rid":5}"#));
    for frame in frames {
        ws.send(Message::Text(frame.into())).await.expect("sends");
    }
    let pong = loop {
        let payload = next_text(&mut ws).await;
        if payload["type"] == "MESSAGE" && payload["data"]["rid"] == 5 {
            break payload;
        }
    };
    assert_eq!(
        (
            pong["data"]["msg"]["result"].as_str(),
            pong["data"]["msg"]["undecodable_frames"].as_u64()
        ),
        (Some("success"), Some(skipped as u64)),
        "{pong}\n{}",
        agent.log()
    );
    assert!(!agent.log().contains("disconnected"), "{}", agent.log());
}

fn uuid(n: u8) -> String {
    format!("00000000-0000-4000-8000-0000000000{n:02x}")
}

#[tokio::test]
async fn a_request_nested_to_the_limit_is_still_audited_and_readable() {
    let fleet = Fleet::start().await;
    let mut watcher = fleet.audit_watcher().await;
    // data {msg {x: 62 arrays}}: 64 levels, as deep as the gateway relays.
    let deep = format!("{}0{}", "[".repeat(62), "]".repeat(62));
    let mut vic = fleet.client("vic_raw", &fleet.vic).await;
    vic.send_text(format!(
        r#"{{"type":"MESSAGE","target":{{"type":"NAME","name":"host1"}},"data":{{"req":"execute","rid":3,"msg":{{"x":{deep}}}}}}}"#
    ))
    .await;
    let refused = vic.skip_to("MESSAGE").await;
    assert_eq!(refused["data"]["msg"]["reason"], "forbidden", "{refused}");
    // Published, with the arguments as their JSON text.
    let published = watcher.skip_to("MESSAGE").await;
    let args = &published["data"]["entry"]["args"];
    assert_eq!(args.as_str(), Some(format!(r#"{{"x":{deep}}}"#).as_str()));
    // And the trail can still be read.
    let (code, out, err) = fleet.ctl(&fleet.alice, &["--json", "audit", "host1"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(r#"[[[[0]]]]"#), "{out}");
}

/// `get_port` (the Nest client's): a viewer may ask, and the port is free
/// to listen on.
#[tokio::test]
async fn get_port_hands_out_a_port_free_to_listen_on() {
    let fleet = Fleet::start().await;
    let (code, reply) = fleet.request(&fleet.vic, "get_port", json!({})).await;
    assert_eq!(code, 0, "{reply}");
    let port = reply["port"].as_u64().expect("a port") as u16;
    assert_ne!(port, 0, "{reply}");
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
}

#[tokio::test]
async fn an_audit_watcher_that_comes_back_gets_the_commands_it_missed() {
    let fleet = Fleet::start().await;
    let mut watcher = fleet.audit_watcher().await;
    let (code, _) = fleet
        .request(&fleet.alice, "execute", json!({"cmd": ["true"]}))
        .await;
    assert_eq!(code, 0);
    let seen = watcher.skip_to("MESSAGE").await;
    let position = seen["position"].clone();
    assert_eq!(position["offset"], 1, "{seen}");
    watcher.close().await;

    // Two commands while nobody watches.
    for cmd in ["false", "true"] {
        fleet
            .request(&fleet.alice, "execute", json!({"cmd": [cmd]}))
            .await;
    }
    let mut back = fleet.client("alice_watch", &fleet.alice).await;
    let subscribe =
        json!({"type": "SELF_SUBSCRIBE", "service": "audit_host1", "position": position});
    back.send(subscribe).await;
    let reply = back.skip_to("SELF_SUBSCRIBE_RESULT").await;
    assert_eq!(reply["recovered"], true, "{reply}");
    let mut replayed = Vec::new();
    for _ in 0..2 {
        let message = back.recv().await;
        assert_eq!(message["type"], "MESSAGE", "{message}");
        let args = &message["data"]["entry"]["args"];
        replayed.push((
            message["position"]["offset"].clone(),
            args["cmd"][0].clone(),
        ));
    }
    assert_eq!(
        replayed,
        [(json!(2), json!("false")), (json!(3), json!("true"))],
        "the missed commands, in order"
    );
}
