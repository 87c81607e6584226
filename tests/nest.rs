//! Nest bot hosts (seeds 000/001) on `/nest`: a host client that behaves on
//! the wire as the Nest client does (tests/clients/nest_host.py) commanded
//! with `ctl`, the versions it shipped, the commands it has, a host that
//! goes mid-command, its large answers, and every way its handshake can
//! fail.

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

/// The Nest client's host, connected with `token`; its stdout lines (the
/// frames it received) come through the returned receiver.
fn nest_host(
    server: &TestServer,
    token: &str,
    version: &str,
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<Value>,
) {
    nest_host_listing(server, token, version, 0)
}

/// A host whose process list has `extra` made-up processes after its
/// real ones.
fn nest_host_listing(
    server: &TestServer,
    token: &str,
    version: &str,
    extra: usize,
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<Value>,
) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/nest_host.py");
    let url = format!("ws://{}/nest", server.addr);
    let mut child = tokio::process::Command::new("python3")
        .args([script, &url, token, version, &extra.to_string()])
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

/// `ctl request nesthost REQ MSG`: its exit code and the reply's `msg`.
async fn request(server: &TestServer, token: &str, req: &str, msg: Value) -> (i32, Value) {
    let msg = msg.to_string();
    ctl_json(&server.ws_url(), token, &["request", "nesthost", req, &msg]).await
}

#[tokio::test]
async fn a_nest_host_is_commanded_like_an_agent() {
    let server = server();
    let token = nest_token(&server, "nesthost").await;
    let data = server.data.path().to_str().expect("utf-8").to_owned();
    let alice = issue_token(&["--data-dir", &data], "alice", "operator").await;
    let vic = issue_token(&["--data-dir", &data], "vic", "viewer").await;
    let (mut host, mut frames) = nest_host(&server, &token, "1.0.0");
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
    let (code, all) = request(&server, &vic, "obtain_all_process_info", json!({})).await;
    assert_eq!(code, 0, "{all}");
    assert!(
        all["data"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["pid"] == std::process::id())),
        "the host's list, as its data: {all}"
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
    let (code, out, err) = ctl(&server, &alice, &["signal", "nesthost", &pid, "SIGKILL"]).await;
    assert_eq!(code, 0, "{err}");
    // A bare success's message is its answer.
    assert!(
        out.contains(&format!("sent SIGKILL to {pid}")) && out.contains("the host says: done :D"),
        "{out}"
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(sleeper.wait().expect("reaped").signal(), Some(9));

    // The Nest client's get_port, its answer as the data.
    let (code, port) = request(&server, &vic, "get_port", json!({})).await;
    assert_eq!(
        (code, port),
        (0, json!({"result": "success", "data": "41234\n"}))
    );

    // The host's error, requests it does not serve (refused here: the Nest
    // client would exit on them), one it never answers.
    let (code, reply) = ctl_json(&server.ws_url(), &alice, &["proc", "nesthost", &pid]).await;
    assert_eq!(
        (code, reply["reason"].as_str()),
        (1, Some("failed")),
        "{reply}"
    );
    assert!(
        reply["desc"]
            .as_str()
            .is_some_and(|d| d.contains("no longer exists")),
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
    let (code, reply) = request(&server, &alice, "exec_command", json!({"command": "true"})).await;
    assert_eq!(
        (code, reply["reason"].as_str()),
        (1, Some("unknown_request")),
        "{reply}"
    );
    assert!(
        reply["desc"].as_str().is_some_and(
            |d| d.contains("does not serve \"exec_command\"") && d.contains("get_port")
        ),
        "the refusal says what a Nest host serves: {reply}"
    );
    let (code, reply) = request(
        &server,
        &alice,
        "kill_process",
        json!({"pid": 1, "method": "SIGHUP"}),
    )
    .await;
    assert_eq!(
        (code, reply["reason"].as_str()),
        (1, Some("bad_argument")),
        "the Nest client ignores other methods: {reply}"
    );
    let (code, reply) = request(
        &server,
        &vic,
        "obtain_service_info",
        json!({"service_name": "hang"}),
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

    assert!(
        host.try_wait().expect("the host's status").is_none(),
        "the host never got a command it does not have"
    );

    // A native client sees the host in the namespace, by name.
    let (code, clients, _) = ctl(&server, &alice, &["clients"]).await;
    assert_eq!(code, 0);
    assert!(
        clients.contains("nesthost") && clients.contains("nest"),
        "{clients}"
    );

    // Revoking the host's token closes its socket (4013), after an error
    // frame saying why, on which the Nest client exits.
    revoke_user(&["--data-dir", &data], "nesthost").await;
    let said = loop {
        let frame = next_frame(&mut frames).await;
        if frame["status"] == "error" {
            break frame;
        }
    };
    assert!(
        said["message"]
            .as_str()
            .is_some_and(|m| m.contains("revoked")),
        "{said}"
    );
    let exit = next_frame(&mut frames).await;
    assert!(exit.get("exit").is_some(), "{exit}");
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
            vec![let_me_in("2.0.0", Some(&token))],
            "version \"2.0.0\" is not accepted: ~0.1.0-a, ^1.0.0",
        ),
        (
            vec![let_me_in("0.2.0", Some(&token))],
            "version \"0.2.0\" is not accepted",
        ),
        (
            vec![let_me_in("1.0", Some(&token))],
            "version \"1.0\" is not accepted",
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

    // Revoked: a host that is in hears why, then is closed (4013).
    let mut host = Client::connect(&format!("ws://{}/nest", server.addr)).await;
    host.send(let_me_in("1.0.0", Some(&token))).await;
    assert_eq!(host.recv().await["message"], "Authenticated :D");
    let data = server.data.path().to_str().expect("utf-8");
    revoke_user(&["--data-dir", data], "nesthost").await;
    let said = host.recv().await;
    assert_eq!(said["status"], "error", "{said}");
    assert_eq!(host.expect_close().await.0, 4013);
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

/// The versions the Nest client shipped are let in (0.1.0a, as it wrote
/// its pre-release, and 1.0.0); `nest_versions` narrows or widens that.
#[tokio::test]
async fn the_versions_the_nest_client_shipped_are_let_in() {
    let server = server();
    for (i, version) in ["0.1.0a", "1.0.0", "1.0.3", "0.1.2"]
        .into_iter()
        .enumerate()
    {
        let token = nest_token(&server, &format!("host{i}")).await;
        let mut host = Client::connect(&format!("ws://{}/nest", server.addr)).await;
        host.send(let_me_in(version, Some(&token))).await;
        assert_eq!(
            host.recv().await,
            json!({"status": "info", "message": "Authenticated :D"}),
            "{version}"
        );
    }

    let only_one = TestServer::with(|s| s.nest_versions = "=1.0.0".into());
    let token = nest_token(&only_one, "nesthost").await;
    let (error, code) = refused(&only_one, &[let_me_in("0.1.0a", Some(&token))]).await;
    assert_eq!(
        (error["message"].as_str(), code),
        (Some("version \"0.1.0a\" is not accepted: =1.0.0"), 1008)
    );
    let mut host = Client::connect(&format!("ws://{}/nest", only_one.addr)).await;
    host.send(let_me_in("1.0.0", Some(&token))).await;
    assert_eq!(host.recv().await["message"], "Authenticated :D");
}

/// A host that goes while a command waits for it (and others wait behind
/// it): each operator gets `gone`, well before the command timeout.
#[tokio::test]
async fn a_host_that_goes_mid_command_leaves_no_operator_waiting() {
    let server = TestServer::with(|s| s.adapter_command_timeout_secs = 8);
    let token = nest_token(&server, "nesthost").await;
    let data = server.data.path().to_str().expect("utf-8").to_owned();
    let vic = issue_token(&["--data-dir", &data], "vic", "viewer").await;
    let (mut host, mut frames) = nest_host(&server, &token, "1.0.0");
    assert_eq!(next_frame(&mut frames).await["message"], "Authenticated :D");
    let started = tokio::time::Instant::now();

    // `ctl request`, in flight: the host never answers it.
    let asking = tokio::spawn({
        let url = server.ws_url();
        let vic = vic.clone();
        async move {
            let msg = json!({"service_name": "hang"}).to_string();
            ctl_json(
                &url,
                &vic,
                &["request", "nesthost", "obtain_service_info", &msg],
            )
            .await
        }
    });
    let sent = next_frame(&mut frames).await;
    assert_eq!(sent["payload"]["service_name"], "hang", "{sent}");

    // Two more, waiting behind it (routed to the host once their OKs come).
    let mut viewer = server.connect().await;
    viewer
        .identify_with(
            json!({"type": "IDENTIFY", "name": "vic_raw", "version": "0.2.0", "token": vic}),
        )
        .await;
    for (seq, req) in [(0, "list_services"), (1, "obtain_user_usages")] {
        let ask = json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "nesthost"},
            "data": {"req": req, "rid": seq + 10}});
        let ok = viewer.answer(ask, seq).await;
        assert_eq!(ok["type"], "OK", "{ok}");
    }

    host.kill().await.expect("the host is killed");
    let mut gone = Vec::new();
    for _ in 0..2 {
        let reply = viewer.skip_to("MESSAGE").await;
        assert_eq!(reply["data"]["msg"]["reason"], "gone", "{reply}");
        gone.push(reply["data"]["rid"].as_u64());
    }
    gone.sort();
    assert_eq!(gone, [Some(10), Some(11)]);
    let (code, reply) = asking.await.expect("ctl ran");
    assert_eq!(
        (code, reply["reason"].as_str()),
        (1, Some("gone")),
        "{reply}"
    );
    assert!(
        reply["desc"]
            .as_str()
            .is_some_and(|d| d.contains("Nest host disconnected")),
        "{reply}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "answered before the command timeout"
    );
}

/// The Nest client sends its whole process list in one frame: 1,800
/// processes (over 64 KiB) reach the operator, and only a frame over
/// `adapter_max_frame_size` closes the host (1009).
#[tokio::test]
async fn a_process_list_larger_than_max_frame_size_reaches_the_operator() {
    let server = TestServer::with(|s| s.adapter_max_frame_size = 200_000);
    let token = nest_token(&server, "nesthost").await;
    let data = server.data.path().to_str().expect("utf-8").to_owned();
    let vic = issue_token(&["--data-dir", &data], "vic", "viewer").await;
    let (_host, mut frames) = nest_host_listing(&server, &token, "1.0.0", 1_800);
    assert_eq!(next_frame(&mut frames).await["message"], "Authenticated :D");
    let (code, all) = request(&server, &vic, "obtain_all_process_info", json!({})).await;
    assert_eq!(code, 0, "{all}");
    let listed = all["data"].as_array().map_or(0, Vec::len);
    assert!(listed > 1_800, "{listed} processes");
    assert!(all.to_string().len() > 70_000, "over 64 KiB");

    // Past the adapter's limit.
    let token = nest_token(&server, "bighost").await;
    let (_big, mut frames) = nest_host_listing(&server, &token, "1.0.0", 6_000);
    assert_eq!(next_frame(&mut frames).await["message"], "Authenticated :D");
    let url = server.ws_url();
    let args = ["request", "bighost", "obtain_all_process_info", "{}"];
    let asked = ctl_json(&url, &vic, &args);
    let ((code, reply), closed) = tokio::join!(asked, async {
        loop {
            let frame = next_frame(&mut frames).await;
            if frame.get("closed").is_some() {
                break frame;
            }
        }
    });
    assert_eq!(closed["closed"], 1009, "{closed}");
    assert_eq!(
        (code, reply["reason"].as_str()),
        (1, Some("gone")),
        "{reply}"
    );
}

/// A frame over the limit is refused with 1009 and the same reason on
/// every path; a host that is in may send up to `adapter_max_frame_size`.
#[tokio::test]
async fn an_oversized_frame_is_1009_on_every_path() {
    let server = TestServer::with(|s| s.adapter_max_frame_size = 100_000);
    let big = |n: usize| format!("{{\"pad\": \"{}\"}}", "x".repeat(n));
    for path in [
        "/ws",
        "/nest",
        "/wsi",
        "/socket.io/?EIO=4&transport=websocket",
    ] {
        let url = format!("ws://{}{path}", server.addr);
        let (code, reason) = closed_after(&url, &[], big(70_000)).await;
        assert_eq!(
            (code, reason.as_str()),
            (1009, "frame exceeds 65536 bytes"),
            "{path}"
        );
    }

    // In: a 70 kB frame passes, one over 100,000 bytes does not.
    let token = nest_token(&server, "nesthost").await;
    let hello = let_me_in("1.0.0", Some(&token)).to_string();
    let url = format!("ws://{}/nest", server.addr);
    let answer = json!({"status": "info", "message": "x".repeat(70_000)}).to_string();
    let mut host = Client::connect(&url).await;
    host.send_text(hello.clone()).await;
    assert_eq!(host.recv().await["message"], "Authenticated :D");
    host.send_text(answer).await;
    host.expect_nothing_queued().await;
    let token = nest_token(&server, "otherhost").await;
    let hello = let_me_in("1.0.0", Some(&token)).to_string();
    let (code, reason) = closed_after(&url, &[hello], big(100_001)).await;
    assert_eq!(
        (code, reason.as_str()),
        (1009, "frame exceeds 100000 bytes")
    );

    let data = server.data.path().to_str().expect("utf-8").to_owned();
    let backend = issue_token(&["--data-dir", &data], "quixhost", "agent").await;
    let url = format!("ws://{}/wsi", server.addr);
    let hello = json!({"req": "authenticate", "rid": 1, "auth": backend, "msg": {}}).to_string();
    let (code, reason) = closed_after(&url, &[hello], big(100_001)).await;
    assert_eq!(
        (code, reason.as_str()),
        (1009, "frame exceeds 100000 bytes")
    );
}

/// Connects to `url`, sends `first` (waiting for an answer to each), then
/// `last`, and returns the close code and reason the gateway sends.
async fn closed_after(url: &str, first: &[String], last: String) -> (u16, String) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut client = Client::connect(url).await;
    for text in first {
        client.send_text(text.clone()).await;
        client.recv().await;
    }
    // The gateway may close before it has read the whole frame.
    let _ = client.ws.send(Message::Text(last.into())).await;
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, client.ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Ok(Some(Ok(Message::Close(None)))) => return (1005, String::new()),
            // The format's greeting (Engine.IO's open packet), pings.
            Ok(Some(Ok(_))) => continue,
            other => panic!("{url}: no close frame: {other:?}"),
        }
    }
}
