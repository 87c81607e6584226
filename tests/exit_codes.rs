//! `concierge ctl`'s exit statuses, the CLI run as a process as a script
//! runs it: each kind of failure (the command line, the gateway, the token,
//! the host, the host's answer) has its own status and a message that says
//! what to do, and success is 0.

mod common;

use std::time::Duration;

use common::process::{
    command, ctl, ctl_json, issue_token, outcome, revoke_user, serve_with, Process,
};
use common::PATIENCE;

/// A gateway process that requires tokens, on an ephemeral port: its
/// WebSocket URL, with its data folder and process kept alive.
async fn gateway() -> (String, tempfile::TempDir, Process) {
    let data = tempfile::tempdir().expect("data dir");
    let dir = data.path().to_str().expect("utf-8").to_owned();
    let mut server = serve_with("127.0.0.1:0", &dir, &["--require-auth", "true"]);
    let addr = server.listening().await;
    (format!("ws://{addr}/ws"), data, server)
}

#[tokio::test]
async fn each_kind_of_failure_has_its_own_exit_status_and_says_what_to_do() {
    let (url, data, _server) = gateway().await;
    let store = ["--data-dir", data.path().to_str().expect("utf-8")];
    let alice = issue_token(&store, "alice", "operator").await;
    let host = issue_token(&store, "host1", "agent").await;
    let work = tempfile::tempdir().expect("work dir");
    let token_file = work.path().join("host1.token");
    std::fs::write(&token_file, &host).expect("token written");
    let agent = Process::spawn(command(&[
        "agent",
        "--url",
        &url,
        "--name",
        "host1",
        "--token-file",
        token_file.to_str().expect("utf-8"),
        "--work-dir",
        work.path().to_str().expect("utf-8"),
        "--systemd",
        "off",
    ]));

    // 0: done. The agent may still be connecting: `ctl` is asked until it
    // lists host1, a bounded number of times.
    let mut listed = false;
    for _ in 0..100 {
        let (code, out, err) = outcome(ctl(&url, &alice).arg("clients")).await;
        assert_eq!(code, 0, "{err}");
        if out.contains("host1") {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listed, "host1 never connected:\n{}", agent.log());
    let (code, clients) = ctl_json(&url, &alice, &["clients"]).await;
    assert_eq!(code, 0, "{clients}");
    assert!(
        clients
            .as_array()
            .is_some_and(|all| all.iter().any(|c| c["name"] == "host1")),
        "{clients}"
    );

    // 1: the host answered with an error (it signals only what it started).
    let (code, _, err) = outcome(ctl(&url, &alice).args(["signal", "host1", "1", "SIGTERM"])).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("concierge ctl: host1: "), "{err}");

    // 2: the command line is wrong, as clap or as `ctl` finds it.
    let (code, _, err) = outcome(ctl(&url, &alice).arg("frobnicate")).await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = outcome(ctl(&url, &alice).args(["send", "host1", "{not json"])).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not JSON"), "{err}");

    // 3: no gateway there.
    let stopped = format!("ws://127.0.0.1:{}/ws", common::free_port());
    let (code, _, err) = outcome(ctl(&stopped, &alice).arg("clients")).await;
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("cannot connect") && err.contains("CONCIERGE_URL"),
        "{err}"
    );

    // 4: the token is missing, not the gateway's, or revoked; each message
    // says how to get one.
    let refused = |err: &str, code: &str| {
        assert!(err.contains(code), "{err}");
        assert!(
            err.contains("CONCIERGE_TOKEN") && err.contains("concierge login"),
            "{err}"
        );
    };
    let (code, _, err) = outcome(ctl(&url, "").arg("clients")).await;
    assert_eq!(code, 4, "{err}");
    refused(&err, "4010");
    assert!(err.contains("requires a token"), "{err}");
    let (code, _, err) = outcome(ctl(&url, "not.a.token").arg("clients")).await;
    assert_eq!(code, 4, "{err}");
    refused(&err, "4011");
    let bob = issue_token(&store, "bob", "operator").await;
    revoke_user(&store, "bob").await;
    // The running gateway reads the revocation from its store within a
    // second (docs/PROTOCOL.md, 2.4).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (code, err) = loop {
        let (code, _, err) = outcome(ctl(&url, &bob).arg("clients")).await;
        if code != 0 || tokio::time::Instant::now() > deadline {
            break (code, err);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(code, 4, "{err}");
    refused(&err, "4013");

    // 5: no such host connected.
    let (code, _, err) = outcome(ctl(&url, &alice).args(["ps", "host9"])).await;
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("host9 is not connected") && err.contains("ctl clients"),
        "{err}"
    );
}
