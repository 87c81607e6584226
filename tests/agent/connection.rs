//! When a host or the gateway is not there: what `ctl` reports, and the
//! agent reconnecting after the gateway restarts.

use std::time::Duration;

use crate::common::process::{ctl, outcome};
use crate::{common, issue, spawn_agent, Fleet};

#[tokio::test]
async fn ctl_reports_a_host_that_is_not_there_and_bad_usage() {
    let fleet = Fleet::start().await;
    let (code, _, err) = fleet.ctl(&fleet.alice, &["ps", "host9"]).await;
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("host9 is not connected"), "{err}");
    let (code, _, err) = outcome(ctl("ws://127.0.0.1:9/ws", "").arg("clients")).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    let (code, _, _) = fleet
        .ctl(&fleet.alice, &["send", "host1", "{not json"])
        .await;
    assert_eq!(code, 2);
    let (code, clients, _) = fleet.ctl(&fleet.alice, &["clients"]).await;
    assert_eq!(code, 0);
    assert!(
        clients.contains("host1") && clients.contains("agent"),
        "{clients}"
    );
    let (code, services) = fleet.ctl_json(&fleet.alice, &["services"]).await;
    assert_eq!(code, 0);
    let names: Vec<&str> = services
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(
        names.contains(&"telemetry_host1") && names.contains(&"audit_host1"),
        "{names:?}"
    );
    // The audit trail is kept for watchers that come back; telemetry is not.
    let history = |name: &str| {
        let service = services
            .as_array()
            .expect("list")
            .iter()
            .find(|s| s["name"] == name);
        service.expect("listed")["history"].clone()
    };
    assert_eq!(
        history("audit_host1"),
        serde_json::json!({"size": 1000, "ttl": 3600})
    );
    assert!(history("telemetry_host1").is_null(), "{services}");
}

#[tokio::test]
async fn the_agent_reconnects_after_the_gateway_restarts() {
    let data = tempfile::tempdir().expect("data");
    let data_dir = data.path().to_str().expect("utf-8").to_owned();
    let gateway = |bind: &str| common::process::serve(bind, &data_dir);
    let mut first = gateway("127.0.0.1:0");
    let addr = first.listening().await;
    let url = format!("ws://{addr}/ws");
    let host = issue(data.path(), "host1", "agent").await;
    let alice = issue(data.path(), "alice", "operator").await;
    let work = tempfile::tempdir().expect("work");
    let mut agent = spawn_agent(&url, &host, work.path(), "").await;
    agent
        .wait_for_line(&["connected name=host1"], Duration::from_secs(10))
        .await;

    first.signal("TERM");
    first.exit(Duration::from_secs(10)).await;
    agent
        .wait_for_line(&["disconnected"], Duration::from_secs(10))
        .await;
    let mut second = gateway(&addr.to_string());
    second.listening().await;
    // Not `connected` alone: every failed attempt logs "disconnected;
    // reconnecting ...", and one queued during the restart would match.
    agent
        .wait_for_line(&["connected name=host1"], Duration::from_secs(10))
        .await;
    let (code, out, err) =
        outcome(ctl(&url, &alice).args(["exec", "host1", "--follow", "--", "echo", "back"])).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "back\n"),
        "{err}\n{}",
        agent.log()
    );
    // Its services are there again.
    let (_, services, _) = outcome(ctl(&url, &alice).args(["--json", "services"])).await;
    assert!(
        services.contains("telemetry_host1") && services.contains("audit_host1"),
        "{services}"
    );
}
