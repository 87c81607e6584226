//! The gateway as a process and over time: graceful shutdown on SIGTERM and
//! SIGINT, settings through the real binary, and eviction of a client that
//! stops reading.

mod common;

use std::path::Path;
use std::time::Duration;

use common::process::{command, Process};
use common::{Client, TestServer};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

fn serve_args(data: &Path) -> Vec<String> {
    vec![
        "--bind".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--workers".into(),
        "1".into(),
    ]
}

async fn shuts_down_gracefully_on(signal: &str) {
    let data = tempfile::tempdir().unwrap();
    let args = serve_args(data.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gateway = Process::spawn(command(&args));
    let addr = gateway.listening().await;
    let url = format!("ws://{addr}/ws");

    let mut a = Client::connect(&url).await;
    a.identify("a").await;
    let mut b = Client::connect(&url).await;
    b.identify("b").await;
    a.expect("CLIENT_JOINED").await;
    // Both are fully registered: each answers a request.
    for c in [&mut a, &mut b] {
        c.request(json!({"type": "SELF_FETCH"}), 0).await;
    }
    // An HTTP client that keeps its connection open after a request.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /readyz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    let mut response = [0u8; 1024];
    let n = idle.read(&mut response).await.unwrap();
    assert!(response[..n].starts_with(b"HTTP/1.1 200"));

    gateway.signal(signal);
    for c in [&mut a, &mut b] {
        let (code, reason) = c.expect_close().await;
        assert_eq!(code, 1001, "{}: {reason}", c.name);
        assert!(!reason.is_empty(), "{}: empty close reason", c.name);
    }
    drop((a, b));
    // The idle keep-alive connection is closed by the stop, not after its
    // keep-alive timeout (5 s).
    let closed = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut response)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the idle connection is still open: {closed:?}"
    );

    let status = gateway.exit(Duration::from_secs(10)).await;
    let log = gateway.log();
    assert!(status.success(), "exit status {status}:\n{log}");
    assert!(log.contains(&format!("{signal} received")), "{log}");
    assert!(log.contains("stopped"), "{log}");
    // New connections are refused once it is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn sigterm_closes_every_client_with_1001_and_exits_0() {
    shuts_down_gracefully_on("SIGTERM").await;
}

#[tokio::test]
async fn sigint_closes_every_client_with_1001_and_exits_0() {
    shuts_down_gracefully_on("SIGINT").await;
}

/// A supervisor may stop the gateway the moment it reports its address:
/// the signal must already be handled gracefully by then.
#[tokio::test]
async fn a_signal_right_after_the_listening_line_exits_0() {
    for _ in 0..3 {
        let data = tempfile::tempdir().unwrap();
        let args = serve_args(data.path());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut gateway = Process::spawn(command(&args));
        gateway.listening().await;
        gateway.signal("TERM");
        let status = gateway.exit(Duration::from_secs(10)).await;
        assert!(status.success(), "exit status {status}:\n{}", gateway.log());
        assert!(gateway.log().contains("SIGTERM received"));
    }
}

#[tokio::test]
async fn config_subcommand_prints_the_shipped_file() {
    let output = command(&["config"]).output().await.unwrap();
    assert!(output.status.success());
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/concierge.toml"
    ))
    .unwrap();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), shipped);
}

#[tokio::test]
async fn a_bad_bind_exits_non_zero_with_a_clear_message() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    let output = command(&["--bind", "nowhere", "--data-dir", &dir])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"nowhere\""), "{stderr}");
    assert!(stderr.contains("HOST:PORT"), "{stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
    // It failed before touching the data folder.
    assert!(!data.path().join("fs").exists());
}

/// Starts the binary; returns whether it listened (then stops it) or the
/// stderr of its failure.
async fn starts(cmd: Command) -> Result<(), String> {
    let mut process = Process::spawn(cmd);
    match process.try_listening().await {
        Ok(_) => {
            process.signal("TERM");
            let status = process.exit(Duration::from_secs(10)).await;
            assert!(status.success(), "{}", process.log());
            Ok(())
        }
        Err(log) => {
            let status = process.exit(Duration::from_secs(10)).await;
            assert!(!status.success(), "{log}");
            Err(log)
        }
    }
}

#[tokio::test]
async fn flags_beat_variables_beat_the_config_file() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    let bad_file = data.path().join("bad.toml");
    std::fs::write(&bad_file, "bind = \"from_file\"\n").unwrap();
    let good_file = data.path().join("good.toml");
    std::fs::write(&good_file, "bind = \"127.0.0.1:0\"\nworkers = 1\n").unwrap();
    let bad_file = bad_file.display().to_string();
    let good_file = good_file.display().to_string();

    // The file alone applies.
    let err = starts(command(&["--config", &bad_file, "--data-dir", &dir]))
        .await
        .unwrap_err();
    assert!(err.contains("from_file"), "{err}");
    starts(command(&["--config", &good_file, "--data-dir", &dir]))
        .await
        .unwrap();

    // A variable beats the file, both ways.
    let mut cmd = command(&["--config", &bad_file, "--data-dir", &dir]);
    cmd.env("CONCIERGE_BIND", "127.0.0.1:0");
    starts(cmd).await.unwrap();
    let mut cmd = command(&["--config", &good_file, "--data-dir", &dir]);
    cmd.env("CONCIERGE_BIND", "from_env");
    let err = starts(cmd).await.unwrap_err();
    assert!(err.contains("from_env"), "{err}");

    // A flag beats the variable and the file, both ways.
    let mut cmd = command(&[
        "--config",
        &bad_file,
        "--data-dir",
        &dir,
        "--bind",
        "127.0.0.1:0",
    ]);
    cmd.env("CONCIERGE_BIND", "from_env");
    starts(cmd).await.unwrap();
    let mut cmd = command(&[
        "--config",
        &good_file,
        "--data-dir",
        &dir,
        "--bind",
        "from_flag",
    ]);
    cmd.env("CONCIERGE_BIND", "127.0.0.1:0");
    let err = starts(cmd).await.unwrap_err();
    assert!(err.contains("from_flag"), "{err}");

    // CONCIERGE_CONFIG names the file too.
    let mut cmd = command(&["--data-dir", &dir]);
    cmd.env("CONCIERGE_CONFIG", &bad_file);
    let err = starts(cmd).await.unwrap_err();
    assert!(err.contains("from_file"), "{err}");
}

/// Reads until a payload carrying a `seq` (a reply), skipping broadcasts.
async fn reply(c: &mut Client) -> Value {
    loop {
        let payload = c.recv().await;
        if payload.get("seq").is_some() {
            return payload;
        }
        assert!(
            matches!(
                payload["type"].as_str(),
                Some(
                    "CLIENT_JOINED"
                        | "CLIENT_LEFT"
                        | "SERVICE_CLIENT_SUBSCRIBED"
                        | "SERVICE_CLIENT_UNSUBSCRIBED"
                )
            ),
            "{}: unexpected {payload}",
            c.name
        );
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_evicted_without_hurting_anyone() {
    const MESSAGES: u64 = 2_000;
    const PAD: usize = 16 * 1024;
    let server = TestServer::with(|s| s.max_outgoing_queue = 8);

    let mut owner = server.client("owner").await;
    owner
        .send(json!({"type": "SERVICE_CREATE", "service": "feed"}))
        .await;
    let created = reply(&mut owner).await;
    assert_eq!(created["type"], "SERVICE_CREATE_RESULT", "{created}");
    assert_eq!(created["successful"], true);

    let mut reader = server.client("reader").await;
    let subscribed = reader
        .request(json!({"type": "SELF_SUBSCRIBE", "service": "feed"}), 0)
        .await;
    assert_eq!(subscribed["successful"], true, "{subscribed}");

    // The slow client: a tiny kernel receive buffer, subscribed, and then
    // never read again until the end.
    let mut slow = server.connect_with_recv_buffer(4096).await;
    slow.identify("slow").await;
    let subscribed = slow
        .request(json!({"type": "SELF_SUBSCRIBE", "service": "feed"}), 0)
        .await;
    assert_eq!(subscribed["successful"], true, "{subscribed}");
    let slow_uuid = slow.uuid.to_string();

    let mut watcher = server.client("watcher").await;

    // The reader drains everything and keeps the MESSAGEs.
    let reader_task = tokio::spawn(async move {
        let mut received = Vec::new();
        let mut others = Vec::new();
        while received.len() < MESSAGES as usize {
            let payload = reader.recv().await;
            if payload["type"] == "MESSAGE" {
                assert_eq!(payload["origin"]["name"], "owner");
                let data = &payload["data"];
                assert_eq!(data["pad"].as_str().map(str::len), Some(PAD));
                received.push(data["i"].as_u64().expect("counter"));
            } else {
                others.push(payload);
            }
        }
        (reader, received, others)
    });
    // The watcher waits to see the slow client leave.
    let watch_for = slow_uuid.clone();
    let watcher_task = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            assert!(tokio::time::Instant::now() < deadline, "slow never left");
            let payload = watcher.recv().await;
            if payload["type"] == "CLIENT_LEFT" && payload["client"]["uuid"] == watch_for {
                return watcher;
            }
        }
    });

    // The owner sends, one reply per message, and is never held up.
    let pad = "x".repeat(PAD);
    for i in 0..MESSAGES {
        owner
            .send(json!({
                "type": "MESSAGE",
                "target": {"type": "SERVICE", "service": "feed"},
                "data": {"i": i, "pad": pad},
            }))
            .await;
        let ok = reply(&mut owner).await;
        assert_eq!(ok["type"], "OK", "message {i}: {ok}");
        assert_eq!(ok["seq"], i + 1, "message {i}: {ok}");
    }

    let (mut reader, received, others) = reader_task.await.expect("reader");
    assert_eq!(received, (0..MESSAGES).collect::<Vec<_>>(), "all, in order");
    assert!(
        others
            .iter()
            .any(|p| p["type"] == "CLIENT_LEFT" && p["client"]["uuid"] == slow_uuid.as_str()),
        "the reader saw the slow client leave: {others:?}"
    );
    let mut watcher = watcher_task.await.expect("watcher");

    // The slow client is gone from the namespace and from the service.
    let all = watcher
        .request(json!({"type": "CLIENT_FETCH_ALL"}), 0)
        .await;
    let names: Vec<&str> = all["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["owner", "reader", "watcher"], "{all}");
    let feed = watcher
        .request(json!({"type": "SERVICE_FETCH", "service": "feed"}), 1)
        .await;
    assert_eq!(
        feed["service"]["subscribers"],
        json!([reader.uuid.to_string()]),
        "{feed}"
    );
    // Its name is free again.
    let again = server.client("slow").await;
    assert_ne!(again.uuid, slow.uuid);

    // Everyone else is still served.
    reader.send(json!({"type": "SELF_FETCH"})).await;
    let fetched = reply(&mut reader).await;
    assert_eq!(fetched["type"], "SELF_FETCH_RESULT", "{fetched}");
    assert_eq!(fetched["seq"], 1);
    owner.send(json!({"type": "SELF_FETCH"})).await;
    assert_eq!(reply(&mut owner).await["type"], "SELF_FETCH_RESULT");

    // When the slow client finally reads, it finds what was queued before
    // the eviction and then a close frame with 1008.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut texts = 0u64;
    let (code, reason) = loop {
        let next = tokio::time::timeout_at(deadline, slow.ws.next()).await;
        match next {
            Ok(Some(Ok(Message::Text(_)))) => texts += 1,
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                break (u16::from(frame.code), frame.reason.to_string())
            }
            Ok(Some(Ok(Message::Close(None)))) => panic!("closed without a code"),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("slow: read error after {texts} texts: {e}"),
            Ok(None) => panic!("slow: ended without a close frame after {texts} texts"),
            Err(_) => panic!("slow: no close frame within 10 s ({texts} texts)"),
        }
    };
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("slow"), "{reason}");
    assert!(
        texts < MESSAGES,
        "the slow client was cut off, not served everything ({texts} frames)"
    );
}
