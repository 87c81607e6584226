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

/// Runs the binary to its end; returns its exit status and stderr.
async fn fails(mut cmd: Command) -> (Option<i32>, String) {
    let output = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("it exits")
        .expect("it runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("listening"), "{stderr}");
    (output.status.code(), stderr)
}

/// Every `key = value` line of `concierge config`.
async fn documented_settings() -> Vec<(String, String)> {
    let output = command(&["config"]).output().await.unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        // The commented example of [[alert]] tables is no setting.
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(" = "))
        .map(|(key, value)| (key.to_owned(), value.trim_matches('"').to_owned()))
        .collect()
}

#[tokio::test]
async fn a_port_in_use_is_named_and_exits_3_leaving_the_data_folder_alone() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    // The files of the gateway that holds the address, in a shared folder.
    let kept = data.path().join("fs").join("someone").join("file.txt");
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    std::fs::write(&kept, "still here").unwrap();
    let dir = data.path().display().to_string();
    let (code, stderr) = fails(command(&["--bind", &addr, "--data-dir", &dir])).await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}: Address already in use")),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "still here");
}

/// A second gateway started by mistake on a running one's data folder (on
/// another port) is refused, and the first one's files are left alone.
#[tokio::test]
async fn a_second_gateway_on_the_same_data_folder_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let args = serve_args(data.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut first = Process::spawn(command(&args));
    first.listening().await;
    let kept = data.path().join("fs").join("someone").join("file.txt");
    std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
    std::fs::write(&kept, "still here").unwrap();
    let (code, stderr) = fails(command(&args)).await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("another gateway runs on this data folder"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), "still here");
    first.signal("TERM");
    assert!(first.exit(Duration::from_secs(10)).await.success());
    // Once it stopped, the folder can be used again.
    let mut again = Process::spawn(command(&args));
    again.listening().await;
    again.signal("TERM");
    assert!(again.exit(Duration::from_secs(10)).await.success());
}

#[tokio::test]
async fn a_data_folder_that_cannot_be_created_is_named_and_exits_3() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let dir = file.join("data").display().to_string();
    let (code, stderr) = fails(command(&["--bind", "127.0.0.1:0", "--data-dir", &dir])).await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot prepare the data folder {dir}/fs: ")),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_bad_redis_url_is_named_in_plain_words_and_exits_2() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    let args = ["--bind", "127.0.0.1:0", "--data-dir", &dir];
    let mut flag = command(&args);
    flag.args(["--redis-url", "foo"]);
    let (code, stderr) = fails(flag).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value \"foo\" for --redis-url: not a Redis URL"),
        "{stderr}"
    );
    assert!(stderr.contains("redis://HOST:PORT"), "{stderr}");
    let mut env = command(&args);
    env.env("CONCIERGE_REDIS_URL", "rediss://127.0.0.1:6379");
    let (code, stderr) = fails(env).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("CONCIERGE_REDIS_URL=rediss://127.0.0.1:6379: TLS"),
        "{stderr}"
    );
    // Refused before the data folder was touched.
    assert!(!data.path().join("fs").exists());
}

#[tokio::test]
async fn a_bad_variable_is_named_by_the_variable_and_exits_2() {
    let mut cmd = command(&["--bind", "127.0.0.1:0"]);
    cmd.env("CONCIERGE_WORKERS", "lots");
    let (code, stderr) = fails(cmd).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("CONCIERGE_WORKERS=lots: must be a whole number, 0 or more"),
        "{stderr}"
    );
    assert!(!stderr.contains("--workers"), "{stderr}");

    let mut cmd = command(&["--bind", "127.0.0.1:0"]);
    cmd.env("CONCIERGE_LOG", "concierge=loud");
    let (code, stderr) = fails(cmd).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("CONCIERGE_LOG=concierge=loud: not a log filter"),
        "{stderr}"
    );
}

/// Every number setting, as a variable and as a flag, refuses a word and a
/// negative number under the name it was given by.
#[tokio::test]
async fn every_number_setting_refuses_words_and_negatives_under_its_own_name() {
    let numbers: Vec<String> = documented_settings()
        .await
        .into_iter()
        .filter(|(_, value)| value.parse::<u64>().is_ok())
        .map(|(key, _)| key)
        .collect();
    assert!(numbers.len() > 10, "{numbers:?}");
    for key in numbers {
        let env = format!("CONCIERGE_{}", key.to_uppercase());
        let flag = format!("--{}", key.replace('_', "-"));
        let mut cmd = command(&["--bind", "127.0.0.1:0"]);
        cmd.env(&env, "lots");
        let (code, stderr) = fails(cmd).await;
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("{env}=lots: must be a whole number")),
            "{stderr}"
        );
        for value in ["-5", "lots"] {
            let (code, stderr) = fails(command(&[&flag, value])).await;
            assert_eq!(code, Some(2), "{stderr}");
            assert!(
                stderr.contains(&format!(
                    "invalid value '{value}' for '{flag} <{}>': must be a whole number, 0 or more",
                    key.to_uppercase()
                )),
                "{stderr}"
            );
        }
    }
}

#[tokio::test]
async fn a_negative_lease_is_an_invalid_value_for_its_flag() {
    let (code, stderr) = fails(command(&["--node-lease-ms", "-5"])).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value '-5' for '--node-lease-ms"),
        "{stderr}"
    );
    assert!(
        stderr.contains("must be a whole number, 0 or more"),
        "{stderr}"
    );
    assert!(!stderr.contains("unexpected argument"), "{stderr}");
    // A value of the right type the gateway cannot run with.
    let (code, stderr) = fails(command(&["--node-lease-ms", "0"])).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value 0 for --node-lease-ms: must be greater than 0"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_bad_config_value_names_the_file_and_the_key_and_exits_2() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("c.toml");
    let path = file.display().to_string();
    std::fs::write(&file, "node_lease_ms = 0\n").unwrap();
    let (code, stderr) = fails(command(&["--config", &path])).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "invalid config file {path}: node_lease_ms = 0: must be greater than 0"
        )),
        "{stderr}"
    );
    std::fs::write(&file, "workers = \"lots\"\n").unwrap();
    let (code, stderr) = fails(command(&["--config", &path])).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("invalid config file {path}")),
        "{stderr}"
    );
    assert!(stderr.contains("workers = \"lots\""), "{stderr}");
}

#[tokio::test]
async fn help_shows_every_default_and_variable() {
    let output = command(&["serve", "--help"]).output().await.unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for (key, value) in documented_settings().await {
        let default = if value.is_empty() { "empty" } else { &value };
        let env = format!("CONCIERGE_{}", key.to_uppercase());
        let flag = format!("--{} <", key.replace('_', "-"));
        assert!(help.contains(&flag), "no {flag} in:\n{help}");
        assert!(
            help.contains(&format!("[default: {default}] [env: {env}]")),
            "{key}: no default and variable in:\n{help}"
        );
    }
    assert!(help.contains("[env: CONCIERGE_CONFIG]"), "{help}");
}

/// `serve --help` and the README's table of the gateway's statuses give
/// the same exit statuses, and each kind of failure exits with its
/// documented status.
#[tokio::test]
async fn exit_statuses_match_the_documentation() {
    let output = command(&["serve", "--help"]).output().await.unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    let section = help
        .split_once("Exit status of the gateway:\n")
        .expect("an exit status section")
        .1;
    // "  N  text" lines, continued by indented ones.
    let mut in_help: Vec<(String, String)> = Vec::new();
    for line in section.lines() {
        let line = line.trim();
        match line.split_once("  ") {
            Some((code, text)) if code.parse::<u8>().is_ok() => {
                in_help.push((code.to_owned(), text.to_owned()))
            }
            _ => {
                let (_, text) = in_help.last_mut().expect("a status first");
                text.push(' ');
                text.push_str(line);
            }
        }
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    // The gateway's table, in "Errors and exit status" (ctl has its own).
    let (_, gateway_section) = readme
        .split_once("### Errors and exit status")
        .expect("the README's section on exit statuses");
    let in_readme: Vec<(String, String)> = gateway_section
        .lines()
        .take_while(|line| !line.starts_with("## "))
        .filter_map(|line| {
            let row = line.strip_prefix("| `")?;
            let (code, rest) = row.split_once("` | ")?;
            code.parse::<u8>().ok()?;
            Some((code.to_owned(), rest.strip_suffix(" |")?.to_owned()))
        })
        .collect();
    assert_eq!(in_help, in_readme, "--help and README.md differ");
    let codes: Vec<&str> = in_help.iter().map(|(code, _)| code.as_str()).collect();
    assert_eq!(codes, ["0", "1", "2", "3"]);

    // 2: a usage error of clap's own, like a wrong value of ours.
    let (code, stderr) = fails(command(&["--no-such-flag"])).await;
    assert_eq!(code, Some(2), "{stderr}");
    let (code, stderr) = fails(command(&["--bind", "nowhere"])).await;
    assert_eq!(code, Some(2), "{stderr}");
    // 3: a well-formed address that is not this machine's.
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().display().to_string();
    let (code, stderr) = fails(command(&["--bind", "192.0.2.1:8080", "--data-dir", &dir])).await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("cannot listen on 192.0.2.1:8080: "),
        "{stderr}"
    );
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

/// A client whose IDENTIFY arrives after a stopping replica closed its
/// clients gets the same close (1012) and leaves no name behind in Redis:
/// it is not registered past the replica's departure.
#[tokio::test]
async fn an_identify_after_the_close_all_gets_the_departure_close_and_claims_nothing() {
    let redis = common::redis::RedisServer::start();
    let data = tempfile::tempdir().unwrap();
    let mut args = serve_args(data.path());
    args.extend(["--redis-url".to_owned(), redis.url()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut gateway = Process::spawn(command(&args));
    let addr = gateway.listening().await;
    let url = format!("ws://{addr}/ws");

    let mut early = Client::connect(&url).await;
    early.identify("early").await;
    // Upgraded before the stop, identified after the close-all.
    let mut late = Client::connect(&url).await;
    gateway.signal("TERM");
    gateway
        .wait_for_line(&["closed sessions"], Duration::from_secs(10))
        .await;
    late.send(json!({"type": "IDENTIFY", "name": "late", "version": "0.2.0"}))
        .await;
    let (code, reason) = late.expect_close().await;
    assert_eq!(code, 1012, "{reason}");
    assert_eq!(early.expect_close().await.0, 1012);
    let status = gateway.exit(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}:\n{}", gateway.log());
    for name in ["late", "early"] {
        let held = redis.cli(&["GET", &format!("concierge:name:{name}")]);
        assert!(
            held.trim().is_empty(),
            "{name}'s name is still claimed: {held}"
        );
    }
}

/// The gateway sets `TCP_USER_TIMEOUT` to `heartbeat_timeout_ms` on every
/// connection it accepts (PROTOCOL.md 2.2 "TCP", README): a WebSocket's,
/// and an HTTP client's kept alive, so the kernel drops a peer that stops
/// acknowledging data instead of a stuck session or download holding its
/// socket forever.
#[tokio::test]
async fn every_connection_has_the_heartbeat_timeout_as_its_tcp_user_timeout() {
    let server = TestServer::with(|s| s.heartbeat_timeout_ms = 7_000);
    let expected = Some(Duration::from_secs(7));
    let ws = server.client("kept").await;
    let local = match ws.ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.local_addr().unwrap(),
        _ => unreachable!("plain TCP in tests"),
    };
    // HELLO came: the gateway has accepted the connection.
    assert_eq!(
        common::user_timeout_of_accepted(server.addr, local),
        expected
    );

    let mut http = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    http.write_all(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .unwrap();
    let mut response = [0u8; 1024];
    let n = tokio::time::timeout(common::PATIENCE, http.read(&mut response))
        .await
        .expect("answered in time")
        .unwrap();
    assert!(response[..n].starts_with(b"HTTP/1.1 200"));
    let local = http.local_addr().unwrap();
    assert_eq!(
        common::user_timeout_of_accepted(server.addr, local),
        expected
    );
}
