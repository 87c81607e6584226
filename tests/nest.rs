//! Nest bot hosts (seeds 000/001) on `/nest`: a host client written from the
//! seed documents alone (tests/clients/nest_host.py) commanded with `ctl`,
//! and every way its handshake can fail.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::process::{ctl_json, issue_token, json_lines, outcome, proc_state, revoke_user};
use common::{Client, TestServer};
use serde_json::{json, Value};

fn server() -> TestServer {
    TestServer::with(|s| {
        s.adapter_command_timeout_secs = 1;
        s.identify_timeout_ms = 500;
    })
}

async fn nest_token(server: &TestServer, name: &str) -> String {
    let data = server.data.path().to_str().expect("utf-8");
    issue_token(&["--data-dir", data, "--format", "nest"], name, "agent").await
}

/// The seed's host, connected with `token`; its stdout lines (the frames
/// it received) come through the returned receiver.
fn nest_host(
    server: &TestServer,
    token: &str,
    version: &str,
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<Value>,
) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/nest_host.py");
    let url = format!("ws://{}/nest", server.addr);
    let mut child = tokio::process::Command::new("python3")
        .args([script, &url, token, version])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let rx = json_lines(&mut child);
    (child, rx)
}

async fn next_frame(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the host printed a frame")
        .expect("the host is running")
}

async fn ctl(server: &TestServer, token: &str, args: &[&str]) -> (i32, String, String) {
    outcome(common::process::ctl(&server.ws_url(), token).args(args)).await
}

#[tokio::test]
async fn a_nest_host_is_commanded_like_an_agent() {
    let server = server();
    let token = nest_token(&server, "nesthost").await;
    let data = server.data.path().to_str().expect("utf-8").to_owned();
    let alice = issue_token(&["--data-dir", &data], "alice", "operator").await;
    let vic = issue_token(&["--data-dir", &data], "vic", "viewer").await;
    let (_host, mut frames) = nest_host(&server, &token, "0.1.0a");
    assert_eq!(
        next_frame(&mut frames).await,
        json!({"status": "info", "message": "Authenticated :D"})
    );

    // `ctl ps`: seed 003's view_running, answered from the host's process list.
    let (code, table, err) = ctl(&server, &alice, &["ps", "nesthost"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        table.contains("PID") && table.contains("python3"),
        "{table}"
    );
    let sent = next_frame(&mut frames).await;
    assert_eq!(
        (sent["status"].as_str(), sent["message"].as_str()),
        (Some("command"), Some("obtain_all_process_info")),
        "{sent}"
    );
    let (code, all) = ctl_json(&server.ws_url(), &vic, &["ps", "nesthost", "--all"]).await;
    assert_eq!(code, 0, "{all}");
    assert!(
        all.as_array()
            .is_some_and(|p| p.iter().any(|p| p["pid"] == std::process::id())),
        "{all}"
    );
    let (code, info) = ctl_json(
        &server.ws_url(),
        &vic,
        &["proc", "nesthost", &std::process::id().to_string()],
    )
    .await;
    assert_eq!(
        (code, info["result"].as_str()),
        (0, Some("success")),
        "{info}"
    );

    // Signals, through the seed's kill/pause/resume.
    let mut sleeper = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep");
    let pid = sleeper.id().to_string();
    let (code, reply) = ctl_json(&server.ws_url(), &vic, &["pause", "nesthost", &pid]).await;
    assert_eq!(
        (code, reply["reason"].as_str()),
        (1, Some("forbidden")),
        "a viewer does not command: {reply}"
    );
    let (code, _, err) = ctl(&server, &alice, &["pause", "nesthost", &pid]).await;
    assert_eq!(code, 0, "{err}");
    for _ in 0..50 {
        if proc_state(u64::from(sleeper.id())) == Some('T') {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(proc_state(u64::from(sleeper.id())), Some('T'));
    let (code, _, _) = ctl(&server, &alice, &["resume", "nesthost", &pid]).await;
    assert_eq!(code, 0);
    let (code, _, err) = ctl(&server, &alice, &["signal", "nesthost", &pid, "SIGKILL"]).await;
    assert_eq!(code, 0, "{err}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(sleeper.wait().expect("reaped").signal(), Some(9));

    // The host's error, a request it does not serve, one it never answers.
    let (code, reply) = ctl_json(&server.ws_url(), &alice, &["proc", "nesthost", &pid]).await;
    assert_eq!(
        (code, reply["reason"].as_str()),
        (1, Some("failed")),
        "{reply}"
    );
    assert!(
        reply["desc"]
            .as_str()
            .is_some_and(|d| d.contains("no process")),
        "{reply}"
    );
    let (code, reply) = ctl_json(
        &server.ws_url(),
        &alice,
        &["exec", "nesthost", "--", "true"],
    )
    .await;
    assert_eq!(
        (code, reply["reason"].as_str()),
        (1, Some("unknown_request")),
        "{reply}"
    );
    let (code, reply) = ctl_json(
        &server.ws_url(),
        &alice,
        &[
            "request",
            "nesthost",
            "exec_command",
            r#"{"command": "hang"}"#,
        ],
    )
    .await;
    assert_eq!(
        (code, reply["reason"].as_str()),
        (1, Some("timeout")),
        "{reply}"
    );
    // The next command gets its own answer, not the hung one's.
    let (code, info) = ctl_json(
        &server.ws_url(),
        &vic,
        &["proc", "nesthost", &std::process::id().to_string()],
    )
    .await;
    assert_eq!(
        (code, info["pid"].as_u64()),
        (0, Some(u64::from(std::process::id()))),
        "{info}"
    );

    // A native client sees the host in the namespace, by name.
    let (code, clients, _) = ctl(&server, &alice, &["clients"]).await;
    assert_eq!(code, 0);
    assert!(
        clients.contains("nesthost") && clients.contains("nest"),
        "{clients}"
    );

    // Revoking the host's token closes its socket.
    revoke_user(&["--data-dir", &data], "nesthost").await;
    let closed = loop {
        let frame = next_frame(&mut frames).await;
        if frame.get("closed").is_some() {
            break frame;
        }
    };
    assert_eq!(closed["closed"], 4013, "{closed}");
}

/// Sends `frames` on /nest and returns the error frame and the close code.
async fn refused(server: &TestServer, frames: &[Value]) -> (Value, u16) {
    let mut client = Client::connect(&format!("ws://{}/nest", server.addr)).await;
    for frame in frames {
        client.send(frame.clone()).await;
    }
    let patience = Duration::from_secs(5);
    let next = tokio::time::timeout(patience, client.recv_any());
    let error = match next
        .await
        .unwrap_or_else(|_| panic!("{frames:?}: nothing within {patience:?}"))
    {
        Ok(frame) => frame,
        Err(code) => panic!("closed with {code} and no error frame"),
    };
    let next = tokio::time::timeout(patience, client.recv_any());
    let code = match next
        .await
        .unwrap_or_else(|_| panic!("{frames:?}: no close within {patience:?}"))
    {
        Err(code) => code,
        Ok(more) => panic!("expected a close, got {more}"),
    };
    (error, code)
}

fn let_me_in(version: &str, token: Option<&str>) -> Value {
    let mut payload = json!({"version": version});
    if let Some(token) = token {
        payload["client_token"] = token.into();
    }
    json!({"status": "let_me_in_pls", "message": "let me in! :D", "payload": payload})
}

#[tokio::test]
async fn every_failed_handshake_is_an_error_frame_and_a_close() {
    let server = server();
    let token = nest_token(&server, "nesthost").await;
    let other = nest_token(&server, "otherhost").await;
    let unknown = {
        let body = "ab".repeat(32);
        use sha2::Digest;
        let sum: String = sha2::Sha256::digest(body.as_bytes())
            .iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{body}.{sum}")
    };
    let bad_sum = format!("{}.00000000", &token[..64]);
    for (frames, expected) in [
        (
            vec![json!({"status": "info", "message": "hi"})],
            "the first message must be let_me_in_pls",
        ),
        (vec![let_me_in("0.1.0a", None)], "client_token is missing"),
        (
            vec![let_me_in("0.1.0a", Some("abc"))],
            "client_token is not 64 hex",
        ),
        (vec![let_me_in("0.1.0a", Some(&bad_sum))], "bad checksum"),
        (
            vec![let_me_in("0.1.0a", Some(&unknown))],
            "client_token is unknown",
        ),
        (
            vec![let_me_in("2.0", Some(&token))],
            "version \"2.0\" is not accepted",
        ),
        (vec![json!([1, 2])], "a frame is a JSON object"),
    ] {
        let (error, code) = refused(&server, &frames).await;
        assert_eq!(error["status"], "error", "{frames:?}: {error}");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains(expected)),
            "{frames:?}: {error}"
        );
        assert_eq!(code, 1008, "{frames:?}");
    }
    // Not JSON at all.
    let mut client = Client::connect(&format!("ws://{}/nest", server.addr)).await;
    client.send_text("let me in".into()).await;
    let error = client.recv_any().await.expect("an error frame");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("not JSON")),
        "{error}"
    );
    // Silence.
    let mut client = Client::connect(&format!("ws://{}/nest", server.addr)).await;
    let error = client.recv_any().await.expect("an error frame");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("no let_me_in_pls within")),
        "{error}"
    );

    // Already connected.
    let (_first, mut frames) = nest_host(&server, &other, "0.1.0a");
    assert_eq!(next_frame(&mut frames).await["message"], "Authenticated :D");
    let (error, _) = refused(&server, &[let_me_in("0.1.0a", Some(&other))]).await;
    assert_eq!(error["message"], "already connected", "{error}");

    // Revoked.
    let data = server.data.path().to_str().expect("utf-8");
    revoke_user(&["--data-dir", data], "nesthost").await;
    // The gateway hears of it by polling the store's file: until then the
    // token still lets a host in; within a second it no longer does.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let mut host = Client::connect(&format!("ws://{}/nest", server.addr)).await;
        host.send(let_me_in("0.1.0a", Some(&token))).await;
        let first = host.recv_any().await.expect("an answer");
        if first["message"] == "Authenticated :D" {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the revoked token still lets a host in"
            );
            host.close().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(
            first["message"], "client_token is revoked or expired",
            "{first}"
        );
        break;
    }
}

#[tokio::test]
async fn an_answer_no_client_could_read_is_refused_under_its_rid() {
    let server = server();
    let token = nest_token(&server, "nesthost").await;
    let data = server.data.path().to_str().expect("utf-8").to_owned();
    let vic = issue_token(&["--data-dir", &data], "vic", "viewer").await;
    let mut host = Client::connect(&format!("ws://{}/nest", server.addr)).await;
    host.send(let_me_in("0.1.0a", Some(&token))).await;
    assert_eq!(host.recv().await["message"], "Authenticated :D");
    let mut viewer = server.connect().await;
    viewer
        .identify_with(
            json!({"type": "IDENTIFY", "name": "vic_raw", "version": "0.2.0", "token": vic}),
        )
        .await;
    let ask = |rid: u64| {
        json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "nesthost"},
        "data": {"req": "list_services", "rid": rid}})
    };
    // An answer as deep as a Nest frame may be: wrapped in a reply and a
    // MESSAGE it would be deeper than serde_json reads.
    let deep = format!("{}0{}", "[".repeat(126), "]".repeat(126));
    let answers = [
        format!(r#"{{"status":"command_response","message":"","payload":{deep}}}"#),
        r#"{"status":"command_response","message":"","payload":{"services":[]}}"#.to_owned(),
    ];
    for (rid, answer) in (1..).zip(answers) {
        viewer.send(ask(rid)).await;
        let command = host.recv().await;
        assert_eq!(command["message"], "list_services", "{command}");
        host.send_text(answer).await;
        let reply = viewer.skip_to("MESSAGE").await;
        assert_eq!(reply["data"]["rid"], rid, "{reply}");
        let msg = &reply["data"]["msg"];
        match rid {
            1 => {
                assert_eq!(msg["reason"], "failed", "{reply}");
                let desc = msg["desc"].as_str().unwrap_or_default();
                assert!(desc.contains("nested deeper than 64"), "{desc}");
            }
            _ => assert_eq!(msg, &json!({"result": "success", "services": []})),
        }
    }
}
