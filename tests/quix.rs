//! Quix backends (seed 003) on `/wsi`: a backend written from the seed
//! and Quix's test client (tests/clients/quix_backend.py) authenticating
//! with an account or a token (`authenticate` or Quix's
//! `token_authentication`), commanded with `ctl`, its token taking over an
//! older socket, its large answers, and its operators told when it goes.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::process::{ctl_json, issue_token, json_lines, revoke_user};
use common::TestServer;
use serde_json::{json, Value};

const PASSWORD: &str = "quix-secret-1";

fn server() -> TestServer {
    TestServer::with(|s| {
        s.adapter_command_timeout_secs = 2;
        s.vpn_endpoint = "vpn.test:51820".into();
    })
}

async fn add_account(server: &TestServer, name: &str) {
    let data = server.data.path().to_str().expect("utf-8");
    common::process::add_user(&["--data-dir", data], name, "agent", PASSWORD).await;
}

struct Backend {
    _child: tokio::process::Child,
    frames: tokio::sync::mpsc::UnboundedReceiver<Value>,
}

impl Backend {
    fn start(server: &TestServer, args: &[&str]) -> Backend {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/quix_backend.py");
        let url = format!("ws://{}/wsi", server.addr);
        let mut child = tokio::process::Command::new("python3")
            .arg(script)
            .arg(&url)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let frames = json_lines(&mut child);
        Backend {
            _child: child,
            frames,
        }
    }

    async fn next(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(10), self.frames.recv())
            .await
            .expect("the backend printed a frame")
            .expect("the backend is running")
    }

    /// Skips frames until one with `rid`.
    async fn answer_to(&mut self, rid: u64) -> Value {
        loop {
            let frame = self.next().await;
            if frame["rid"] == rid && frame.get("req").is_none() {
                return frame["msg"].clone();
            }
        }
    }
}

#[tokio::test]
async fn a_quix_backend_is_commanded_like_an_agent() {
    let server = server();
    add_account(&server, "quixhost").await;
    let data = server.data.path().to_str().expect("utf-8").to_owned();
    let alice = issue_token(&["--data-dir", &data], "alice", "operator").await;
    let vic = issue_token(&["--data-dir", &data], "vic", "viewer").await;
    let mut backend = Backend::start(&server, &["--password", "quixhost", PASSWORD, "--vpn"]);
    let auth = backend.answer_to(1).await;
    assert_eq!(auth["success"], true, "{auth}");
    assert!(
        auth["token"].is_string() && auth["validity"].as_u64() > Some(0),
        "{auth}"
    );
    let vpn = backend.answer_to(2).await;
    assert_eq!(
        vpn["result"], "success",
        "the backend's own get_vpn_conf: {vpn}"
    );
    assert!(
        vpn["conf_data"]
            .as_str()
            .is_some_and(|c| c.contains("Endpoint = vpn.test:51820")),
        "{vpn}"
    );

    let (code, started) = ctl_json(
        &server.ws_url(),
        &alice,
        &["exec", "quixhost", "--", "sleep", "30"],
    )
    .await;
    assert_eq!(code, 0, "{started}");
    let pid = started["proc_id"].as_u64().expect("proc_id");
    let (code, running) = ctl_json(&server.ws_url(), &vic, &["ps", "quixhost"]).await;
    assert_eq!(code, 0, "{running}");
    assert!(
        running
            .as_array()
            .is_some_and(|r| r.iter().any(|p| p["pid"] == pid && p["reqc"] == "sleep 30")),
        "{running}"
    );
    let (code, reply) = ctl_json(
        &server.ws_url(),
        &vic,
        &["signal", "quixhost", &pid.to_string(), "SIGTERM"],
    )
    .await;
    assert_eq!(
        (code, reply["reason"].as_str()),
        (1, Some("forbidden")),
        "{reply}"
    );
    let (code, reply) = ctl_json(
        &server.ws_url(),
        &alice,
        &["signal", "quixhost", &pid.to_string(), "SIGTERM"],
    )
    .await;
    assert_eq!(code, 0, "{reply}");
    let (code, telemetry) = ctl_json(&server.ws_url(), &vic, &["top", "quixhost", "--once"]).await;
    assert_eq!(code, 0, "{telemetry}");
    assert!(
        telemetry["tele_data"]["ttl_cpu_usage"].is_array(),
        "{telemetry}"
    );
    let (code, reply) = ctl_json(&server.ws_url(), &alice, &["units", "quixhost"]).await;
    assert_eq!(
        (code, reply["reason"].as_str()),
        (1, Some("unknown_request")),
        "{reply}"
    );

    // Two operators using the same rid get their own answers.
    let mut a = server.connect().await;
    a.identify_with(
        json!({"type": "IDENTIFY", "name": "alice_a", "version": "0.2.0", "token": alice}),
    )
    .await;
    let mut b = server.connect().await;
    b.identify_with(json!({"type": "IDENTIFY", "name": "vic_b", "version": "0.2.0", "token": vic}))
        .await;
    let ask = |req: &str| {
        json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "quixhost"},
                                  "data": {"req": req, "rid": 7, "msg": {}}})
    };
    a.send(ask("telemetry")).await;
    b.send(ask("view_running")).await;
    let got_a = a.skip_to("MESSAGE").await;
    let got_b = b.skip_to("MESSAGE").await;
    assert_eq!(
        (got_a["data"]["rid"].as_u64(), got_b["data"]["rid"].as_u64()),
        (Some(7), Some(7))
    );
    assert!(got_a["data"]["msg"]["tele_data"].is_object(), "{got_a}");
    assert!(got_b["data"]["msg"].is_array(), "{got_b}");

    // The same token on a second socket takes the name over.
    let token = auth["token"].as_str().expect("token").to_owned();
    let mut second = Backend::start(&server, &["--token", &token]);
    let again = second.answer_to(1).await;
    assert_eq!(again["success"], true, "{again}");
    assert!(
        again.get("token").is_none() && again["validity"].as_u64() > Some(0),
        "{again}"
    );
    let closed = loop {
        let frame = backend.next().await;
        if frame.get("closed").is_some() {
            break frame;
        }
    };
    assert_eq!(closed["closed"], 4015, "{closed}");
    let (code, _) = ctl_json(&server.ws_url(), &vic, &["ps", "quixhost"]).await;
    assert_eq!(code, 0, "the new socket serves");

    // Revoking the account's tokens closes its socket, as a native one's.
    revoke_user(&["--data-dir", &data], "quixhost").await;
    let closed = loop {
        let frame = second.next().await;
        if frame.get("closed").is_some() {
            break frame;
        }
    };
    assert_eq!(closed["closed"], 4013, "{closed}");
}

#[tokio::test]
async fn bad_credentials_get_the_seeds_reasons() {
    let server = server();
    add_account(&server, "quixhost").await;
    for (args, reason) in [
        (
            vec!["--password", "quixhost", "wrong-password"],
            "password_invalid",
        ),
        (vec!["--password", "nobody", PASSWORD], "user_invalid"),
        (vec!["--token", "not-a-token"], "token_invalid"),
    ] {
        let mut backend = Backend::start(&server, &args);
        let answer = backend.answer_to(1).await;
        assert_eq!(
            (answer["success"].as_bool(), answer["reason"].as_str()),
            (Some(false), Some(reason)),
            "{args:?}: {answer}"
        );
    }
    // Hostile frames: answered, never a crash.
    let mut raw = common::Client::connect(&format!("ws://{}/wsi", server.addr)).await;
    raw.send_text("{not json".into()).await;
    let answer = raw.recv_any().await.expect("an answer");
    assert_eq!(answer["msg"]["reason"], "malformed", "{answer}");
    raw.send(json!({"req": "execute", "rid": 3, "msg": {"cmd": ["true"]}}))
        .await;
    let answer = raw.recv_any().await.expect("an answer");
    assert_eq!(
        (answer["rid"].as_u64(), answer["msg"]["reason"].as_str()),
        (Some(3), Some("unknown_request")),
        "{answer}"
    );
    raw.send(json!({"req": "get_vpn_conf", "rid": 4})).await;
    let answer = raw.recv_any().await.expect("an answer");
    assert_eq!(answer["msg"]["reason"], "not_authenticated", "{answer}");
}

/// A backend `quixhost` on a raw socket, logged in with a host token, and
/// a viewer's token.
async fn backend_in(server: &TestServer) -> (common::Client, String) {
    let data = server.data.path().to_str().expect("utf-8").to_owned();
    let host = issue_token(&["--data-dir", &data], "quixhost", "agent").await;
    let vic = issue_token(&["--data-dir", &data], "vic", "viewer").await;
    let mut backend = common::Client::connect(&format!("ws://{}/wsi", server.addr)).await;
    backend
        .send(json!({"req": "authenticate", "rid": 1, "auth": host, "msg": {}}))
        .await;
    assert_eq!(backend.recv().await["msg"]["success"], true);
    (backend, vic)
}

/// [`backend_in`], and a raw client `vic_raw` identified with the viewer's
/// token.
async fn backend_and_viewer(server: &TestServer) -> (common::Client, common::Client) {
    let (backend, vic) = backend_in(server).await;
    let mut viewer = server.connect().await;
    viewer
        .identify_with(
            json!({"type": "IDENTIFY", "name": "vic_raw", "version": "0.2.0", "token": vic}),
        )
        .await;
    (backend, viewer)
}

#[tokio::test]
async fn an_answer_no_client_could_read_is_refused_under_the_operators_rid() {
    let server = server();
    let (mut backend, mut viewer) = backend_and_viewer(&server).await;
    // As deep as a Quix frame may be: in a reply and a MESSAGE it would be
    // deeper than serde_json reads.
    let deep = format!("{}0{}", "[".repeat(126), "]".repeat(126));
    for (rid, answer) in [(41, deep), (42, r#"{"result":"success"}"#.to_owned())] {
        viewer
            .send(
                json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "quixhost"},
                "data": {"req": "telemetry", "rid": rid}}),
            )
            .await;
        let request = backend.recv().await;
        assert_eq!(request["req"], "telemetry", "{request}");
        backend
            .send_text(format!(r#"{{"rid":{},"msg":{answer}}}"#, request["rid"]))
            .await;
        let reply = viewer.skip_to("MESSAGE").await;
        assert_eq!(reply["data"]["rid"], rid, "{reply}");
        let msg = &reply["data"]["msg"];
        if rid == 41 {
            assert_eq!(msg["reason"], "failed", "{reply}");
            let desc = msg["desc"].as_str().unwrap_or_default();
            assert!(desc.contains("nested deeper than 64"), "{desc}");
        } else {
            assert_eq!(msg, &json!({"result": "success"}));
        }
    }
}

/// Quix's test client authenticates with `token_authentication` and
/// `msg.token_id`: answered as `authenticate` with a token, and the
/// backend is in (not closed at the identify deadline).
#[tokio::test]
async fn token_authentication_is_authenticate_with_a_token() {
    let server = TestServer::with(|s| s.identify_timeout_ms = 300);
    let data = server.data.path().to_str().expect("utf-8").to_owned();
    let host = issue_token(&["--data-dir", &data], "quixhost", "agent").await;
    let vic = issue_token(&["--data-dir", &data], "vic", "viewer").await;
    let mut backend = Backend::start(&server, &["--token-authentication", &host]);
    let auth = backend.answer_to(1).await;
    assert_eq!(auth["success"], true, "{auth}");
    assert!(
        auth.get("token").is_none() && auth["validity"].as_u64() > Some(0),
        "{auth}"
    );
    // Past the identify deadline, commanded.
    let (code, telemetry) = ctl_json(&server.ws_url(), &vic, &["top", "quixhost", "--once"]).await;
    assert_eq!(code, 0, "{telemetry}");
    assert!(
        telemetry["tele_data"]["ttl_cpu_usage"].is_array(),
        "{telemetry}"
    );

    let mut refused = Backend::start(&server, &["--token-authentication", "no token found"]);
    let answer = refused.answer_to(1).await;
    assert_eq!(
        answer,
        json!({"success": false, "reason": "token_invalid"}),
        "as seed 003 refuses a token"
    );
}

/// A backend that goes while requests wait for it: each operator hears
/// `gone` at once, not a timeout.
#[tokio::test]
async fn a_backend_that_goes_mid_request_leaves_no_operator_waiting() {
    let server = TestServer::with(|s| s.adapter_command_timeout_secs = 8);
    let (mut backend, mut viewer) = backend_and_viewer(&server).await;
    let started = tokio::time::Instant::now();
    for rid in [5, 6] {
        viewer
            .send(
                json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "quixhost"},
                "data": {"req": "view_running", "rid": rid}}),
            )
            .await;
        assert_eq!(backend.recv().await["req"], "view_running");
    }
    backend.close().await;
    let mut gone = Vec::new();
    for _ in 0..2 {
        let reply = viewer.skip_to("MESSAGE").await;
        let msg = &reply["data"]["msg"];
        assert_eq!(msg["reason"], "gone", "{reply}");
        assert!(
            msg["desc"]
                .as_str()
                .is_some_and(|d| d.contains("Quix backend disconnected")),
            "{reply}"
        );
        gone.push(reply["data"]["rid"].as_u64());
    }
    gone.sort();
    assert_eq!(gone, [Some(5), Some(6)]);
    assert!(started.elapsed() < Duration::from_secs(8), "not a timeout");
}

/// An answer over 64 KiB (a long process list) reaches the operator.
#[tokio::test]
async fn an_answer_larger_than_max_frame_size_reaches_the_operator() {
    let server = server();
    let (mut backend, vic) = backend_in(&server).await;
    let asked = tokio::spawn({
        let url = server.ws_url();
        async move { ctl_json(&url, &vic, &["request", "quixhost", "view_running", "{}"]).await }
    });
    let request = backend.recv().await;
    let listed: Vec<Value> = (0..1_000)
        .map(|pid| {
            json!({"title": format!("Test Server {pid}"), "pid": pid + 1, "cpu_util": 0,
                "mem_util": 111, "reqc": "python3 testserver/testserver.py", "port_util": []})
        })
        .collect();
    let answer = json!({"rid": request["rid"], "msg": listed}).to_string();
    assert!(answer.len() > 70_000, "{} bytes", answer.len());
    backend.send_text(answer).await;
    let (code, reply) = asked.await.expect("ctl ran");
    assert_eq!(code, 0, "{reply}");
    assert_eq!(reply.as_array().map(Vec::len), Some(1_000));
}
