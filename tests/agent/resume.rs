//! Followers that outlive their connection (`docs/PROTOCOL.md` §17,
//! "client libraries"): the client library's `Resume` against a real
//! gateway, and `ctl audit --follow` across a connection cut under it (a
//! TCP relay the test cuts and restores) and across a gateway restart.

use std::time::Duration;

use serde_json::{json, Value};

use super::common::process::{ctl, ctl_json, json_lines, outcome, serve, Process};
use super::common::relay::Relay;
use super::common::{library_reader, Client, TestServer, PATIENCE};
use super::{issue, spawn_agent, Fleet};
use concierge_client::resume::{Observed, Resubscribed};
use concierge_client::ClientError;
use concierge_protocol::{PayloadOut, Target};

/// The client library takes its name back with its HELLO's secret and
/// resubscribes from the last position it saw: what was broadcast while it
/// was away comes once, in order, before the live broadcasts.
#[tokio::test]
async fn the_client_library_resumes_its_name_and_its_subscriptions() {
    let server = TestServer::start();
    let mut owner = server.client("radio").await;
    let create = json!({"type": "SERVICE_CREATE", "service": "news",
        "history": {"size": 100, "ttl": 60}});
    let created = owner.answer(create, 0).await;
    assert_eq!(created["successful"], true, "{created}");
    let (identity, mut resume, mut first) =
        library_reader(&server.ws_url(), "reader", "news").await;
    let mut seen = Vec::new();
    while seen.is_empty() {
        let next = tokio::time::timeout(PATIENCE, first.receiver.next())
            .await
            .expect("in time")
            .expect("open");
        resume.observe(&next.payload);
        match next.payload {
            PayloadOut::SelfSubscribeResult { .. } => broadcast(&mut owner, 1).await,
            PayloadOut::Message { data, .. } => seen.push(data["n"].clone()),
            _ => {}
        }
    }
    assert_eq!(resume.position("news").map(|p| p.offset), Some(1));

    // Away (the first connection is not read any more, and the gateway
    // has not seen it go): two broadcasts missed.
    broadcast(&mut owner, 2).await;
    broadcast(&mut owner, 3).await;
    let taken = concierge_client::connect(&server.ws_url(), &identity).await;
    assert!(
        matches!(taken, Err(ClientError::Closed { code: 4005, .. })),
        "without the secret the name is taken: {:?}",
        taken.err()
    );
    let mut back = resume
        .reconnect(&server.ws_url(), &identity, PATIENCE)
        .await
        .expect("the secret takes the name back at once");
    let mut found = None;
    while seen.len() < 4 {
        let next = tokio::time::timeout(PATIENCE, back.receiver.next())
            .await
            .expect("in time")
            .expect("open");
        if let Observed::Resubscribed(resubscribed) = resume.observe(&next.payload) {
            found = Some(resubscribed);
            broadcast(&mut owner, 4).await;
        }
        if let PayloadOut::Message { data, target, .. } = next.payload {
            assert_eq!(
                target,
                Target::Service {
                    service: "news".into()
                }
            );
            seen.push(data["n"].clone());
        }
    }
    assert_eq!(
        found,
        Some(Resubscribed {
            service: "news".into(),
            recovered: true
        })
    );
    assert_eq!(seen, [json!(1), json!(2), json!(3), json!(4)]);
    assert_eq!(resume.position("news").map(|p| p.offset), Some(4));
}

/// Broadcasts `{"n": n}` to `news`, the owner's request `n`.
async fn broadcast(owner: &mut Client, n: u64) {
    let target = json!({"type": "SERVICE", "service": "news"});
    let message = json!({"type": "MESSAGE", "target": target, "data": {"n": n}});
    let ok = owner.answer(message, n).await;
    assert_eq!(ok["type"], "OK", "{ok}");
}

/// `ctl audit --follow` whose connection is cut reconnects and shows
/// every command recorded meanwhile exactly once, with nothing said.
#[tokio::test]
async fn ctl_audit_follow_resumes_after_its_connection_is_cut() {
    let fleet = Fleet::start().await;
    let relay = Relay::start(fleet.server.addr.port()).await;
    let mut follower = Process::spawn({
        let mut cmd = ctl(&relay.ws_url(), &fleet.alice);
        cmd.args(["--json", "audit", "host1", "--follow", "--limit", "0"]);
        cmd
    });
    let mut entries = json_lines(&mut follower.child);
    subscribed(&fleet.server.ws_url(), &fleet.alice).await;
    let mut marks = Vec::new();
    execute(&fleet.server.ws_url(), &fleet.alice, "mark-1").await;
    next_marks(&mut entries, &mut marks, "mark-1").await;

    relay.cut();
    execute(&fleet.server.ws_url(), &fleet.alice, "mark-2").await;
    execute(&fleet.server.ws_url(), &fleet.alice, "mark-3").await;
    // Down long enough for ctl to have found it down and backed off.
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.mend();
    next_marks(&mut entries, &mut marks, "mark-3").await;
    execute(&fleet.server.ws_url(), &fleet.alice, "mark-4").await;
    next_marks(&mut entries, &mut marks, "mark-4").await;

    // The cut closed ctl's connection: what came after came on another.
    assert_eq!(marks, ["mark-1", "mark-2", "mark-3", "mark-4"]);
    follower.signal("TERM");
    follower.exit(PATIENCE).await;
    assert!(
        !follower.log().contains("missing"),
        "nothing said when recovered: {}",
        follower.log()
    );
}

/// A gateway running alone loses its histories when it restarts:
/// `ctl audit --follow` reconnects, says once that entries may be missing,
/// and goes on showing what comes.
#[tokio::test]
async fn ctl_audit_follow_says_when_a_restart_lost_the_history() {
    let data = tempfile::tempdir().expect("data dir");
    let data_dir = data.path().to_str().expect("utf-8");
    let mut gateway = serve("127.0.0.1:0", data_dir);
    let addr = gateway.listening().await;
    let url = format!("ws://{addr}/ws");
    let host = issue(data.path(), "host1", "agent").await;
    let alice = issue(data.path(), "alice", "operator").await;
    let work = tempfile::tempdir().expect("work dir");
    let agent = spawn_agent(&url, &host, work.path(), "").await;
    // Once the agent answers (this entry is before what ctl shows).
    execute(&url, &alice, "mark-0").await;
    let mut follower = Process::spawn({
        let mut cmd = ctl(&url, &alice);
        cmd.args(["--json", "audit", "host1", "--follow", "--limit", "0"]);
        cmd
    });
    let mut entries = json_lines(&mut follower.child);
    subscribed(&url, &alice).await;
    let mut marks = Vec::new();
    execute(&url, &alice, "mark-1").await;
    next_marks(&mut entries, &mut marks, "mark-1").await;

    gateway.signal("TERM");
    gateway.exit(PATIENCE).await;
    let mut gateway = serve(&addr.to_string(), data_dir);
    gateway.listening().await;
    follower
        .wait_for_line(
            &["audit_host1: entries may be missing; showing from now"],
            Duration::from_secs(20),
        )
        .await;
    execute(&url, &alice, "mark-2").await;
    next_marks(&mut entries, &mut marks, "mark-2").await;
    assert_eq!(marks, ["mark-1", "mark-2"], "{}", agent.log());
    follower.signal("TERM");
    follower.exit(PATIENCE).await;
    assert_eq!(
        follower.log().matches("missing").count(),
        1,
        "{}",
        follower.log()
    );
}

/// Waits until someone (the `ctl` under test) subscribes to `audit_host1`.
async fn subscribed(url: &str, token: &str) {
    for _ in 0..100 {
        let (_, services) = ctl_json(url, token, &["services"]).await;
        let audit = services
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == "audit_host1");
        if audit.is_some_and(|s| s["subscribers"].as_array().is_some_and(|s| !s.is_empty())) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nobody subscribed to audit_host1");
}

/// `ctl exec host1 -- echo MARK`, an audited command, once the agent
/// answers (it may be reconnecting).
async fn execute(url: &str, token: &str, mark: &str) {
    for _ in 0..100 {
        let (code, _, _) =
            outcome(ctl(url, token).args(["exec", "host1", "--", "echo", mark])).await;
        if code == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("host1 never ran {mark}");
}

/// Reads the audit entries `ctl` prints, adding the marks they ran to
/// `marks`, until `last`'s.
async fn next_marks(
    entries: &mut tokio::sync::mpsc::UnboundedReceiver<Value>,
    marks: &mut Vec<String>,
    last: &str,
) {
    loop {
        let entry = tokio::time::timeout(Duration::from_secs(20), entries.recv())
            .await
            .unwrap_or_else(|_| panic!("no {last} within 20 s; saw {marks:?}"))
            .expect("ctl still prints");
        if let Some(mark) = entry["args"]["cmd"][1].as_str() {
            marks.push(mark.to_owned());
            if mark == last {
                return;
            }
        }
    }
}
