//! Alerts among replicas: two gateway processes on one Redis with the same
//! rule evaluate it once (one event per change, whichever replica the host
//! was on), and when the replica that evaluates it is SIGKILLed while the
//! alert fires, the other takes the rule over after its lease and resolves
//! it, without firing it again.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::jobs::Operator;
use crate::common::process::{command, Process};
use crate::common::redis::RedisServer;
use crate::replica_process_with;

fn agent(url: &str, work: &std::path::Path) -> Process {
    std::fs::create_dir_all(work).unwrap();
    let mut cmd = command(&[
        "agent",
        "--url",
        url,
        "--name",
        "edge_0",
        "--work-dir",
        work.to_str().unwrap(),
        "--systemd",
        "off",
    ]);
    cmd.env("CONCIERGE_AGENT_ANONYMOUS_ROLE", "operator");
    Process::spawn(cmd)
}

/// Polls `alerts` until `done` holds of the events, newest first.
async fn until_events(
    op: &mut Operator,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let page = op.ask("alerts", json!({})).await;
        let recent = page["recent"].as_array().cloned().unwrap_or_default();
        if done(&recent) {
            return recent;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether `replica` logged the event `state` (Firing, Resolved) of rule
/// `down`: it is the replica that evaluated it.
fn logged(replica: &Process, state: &str) -> bool {
    replica
        .log()
        .lines()
        .any(|l| l.contains("rule=down") && l.contains(&format!("state={state}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_is_evaluated_once_and_outlives_the_replica_that_evaluates_it() {
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = files.path().join("alerts.toml");
    std::fs::write(
        &config,
        "[[alert]]\nname = \"down\"\nwhen = \"offline for 1s\"\ntarget = \"edge_0\"\n",
    )
    .unwrap();
    let flags = [
        "--config",
        config.to_str().unwrap(),
        "--alert-interval-secs",
        "1",
    ];
    let mut replicas = [
        replica_process_with(&redis, files.path(), 2_000, &flags),
        replica_process_with(&redis, files.path(), 2_000, &flags),
    ];
    let mut urls = Vec::new();
    for replica in &mut replicas {
        urls.push(format!("ws://{}/ws", replica.listening().await));
    }
    let mut host = agent(&urls[1], &work.path().join("edge_0"));
    let mut op = Operator::connect(&urls[0], "").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while op
        .ask("hosts", json!({"target": "edge_0", "online": true}))
        .await["hosts"]
        == json!([])
    {
        assert!(tokio::time::Instant::now() < deadline, "edge_0 never came");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    host.signal("TERM");
    host.exit(Duration::from_secs(10)).await;
    let fired = until_events(&mut op, "firing", |e| !e.is_empty()).await;
    let firing = fired[0].clone();
    assert_eq!(
        (&firing["state"], &firing["host"]),
        (&json!("firing"), &json!("edge_0")),
        "{firing}"
    );
    // Both replicas evaluate every second: one of them holds the rule, and
    // it fired once.
    let evaluator = match (
        logged(&replicas[0], "Firing"),
        logged(&replicas[1], "Firing"),
    ) {
        (true, false) => 0,
        (false, true) => 1,
        both => panic!("which replica fired it: {both:?}"),
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let page = op.ask("alerts", json!({})).await;
    assert_eq!(page["recent"], json!([firing]), "fired again: {page}");

    // The evaluator dies while the alert fires; the host comes back on the
    // other, which takes the rule over once its lease lapses.
    let survivor = 1 - evaluator;
    replicas[evaluator].signal("KILL");
    replicas[evaluator].exit(Duration::from_secs(10)).await;
    let _host = agent(&urls[survivor], &work.path().join("edge_0"));
    let mut op = Operator::connect(&urls[survivor], "").await;
    let events = until_events(&mut op, "resolved", |e| {
        e.first().is_some_and(|e| e["state"] == "resolved")
    })
    .await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1], firing, "{events:?}");
    let resolved = &events[0];
    assert_eq!(
        (&resolved["host"], &resolved["since"]),
        (&json!("edge_0"), &firing["since"])
    );
    assert!(
        resolved["seq"].as_u64() > firing["seq"].as_u64(),
        "{events:?}"
    );
    assert!(logged(&replicas[survivor], "Resolved"));
    let page = op.ask("alerts", json!({})).await;
    assert_eq!(page["active"], json!([]), "{page}");
}
