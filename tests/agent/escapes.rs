//! Processes that must not escape the agent: Ctrl-C on `ctl exec
//! --follow` stops what it started (`--detach` leaves it), and a process
//! started before the agent restarted is still listed and signalled.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::process::{command, ctl, proc_state, Process};
use crate::common::{eventually, PATIENCE};
use crate::{start, Fleet};

/// `ctl --json exec host1 --follow [--detach] -- sleep 300`, interrupted
/// with SIGINT once the process runs: the exit status, stderr and the pid.
async fn interrupted(fleet: &Fleet, detach: bool) -> (Option<i32>, String, u64) {
    let mut args = vec!["--json", "exec", "host1", "--follow"];
    if detach {
        args.push("--detach");
    }
    args.extend(["--", "sleep", "300"]);
    let mut cmd = ctl(&fleet.server.ws_url(), &fleet.alice);
    cmd.args(&args);
    let mut child = cmd.spawn().expect("ctl starts");
    let stdout = child.stdout.take().expect("piped");
    let first = tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("the reply in time")
    .expect("stdout")
    .expect("a line");
    let reply: Value = serde_json::from_str(&first).expect("the reply as JSON");
    let pid = reply["proc_id"].as_u64().expect("proc_id");
    assert!(proc_state(pid).is_some(), "{reply}");
    let ctl_pid = child.id().expect("running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &ctl_pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("ctl exits")
        .expect("wait");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), err, pid)
}

#[tokio::test]
async fn ctrl_c_on_exec_follow_stops_the_process_and_detach_leaves_it() {
    let fleet = Fleet::start().await;
    let (code, err, pid) = interrupted(&fleet, false).await;
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains(&format!("asked host1 to stop process {pid}")),
        "{err}"
    );
    eventually(PATIENCE, "the process is gone", || {
        proc_state(pid).is_none()
    })
    .await;

    let (code, err, pid) = interrupted(&fleet, true).await;
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains(&format!("process {pid} keeps running")),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(proc_state(pid), Some('S'), "left running");
    let (code, _, err) = fleet
        .ctl(
            &fleet.alice,
            &["signal", "host1", &pid.to_string(), "SIGTERM"],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    eventually(PATIENCE, "the process is gone", || {
        proc_state(pid).is_none()
    })
    .await;
}

#[tokio::test]
async fn a_process_started_before_the_agent_restarted_is_listed_and_signalled() {
    let mut fleet = Fleet::start().await;
    let pid = start(&fleet, &["sleep", "300"]).await;
    fleet.agent.signal("TERM");
    fleet.agent.exit(Duration::from_secs(10)).await;
    assert_eq!(proc_state(pid), Some('S'), "the process outlives its agent");

    let config = fleet.work.path().join("agent.toml");
    let mut cmd = command(&["agent", "--config", config.to_str().expect("utf-8")]);
    cmd.env("CONCIERGE_LOG", "concierge=debug");
    fleet.agent = Process::spawn(cmd);
    fleet.wait_for_agent().await;

    let (code, listed) = fleet.request(&fleet.alice, "list_started", json!({})).await;
    assert_eq!(code, 0, "{listed}");
    let entry = listed["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .find(|p| p["proc_id"] == pid)
        .cloned()
        .unwrap_or_else(|| panic!("{pid} not listed: {listed}"));
    assert_eq!(
        (&entry["running"], &entry["adopted"], &entry["cmd"]),
        (&json!(true), &json!(true), &json!(["sleep", "300"])),
        "{entry}"
    );
    let (code, table, err) = fleet.ctl(&fleet.alice, &["ps", "host1"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(table.contains(&pid.to_string()), "{table}");
    // Its output went to the agent that stopped.
    let (code, _, err) = fleet
        .ctl(
            &fleet.alice,
            &["output", "host1", &pid.to_string(), "--follow"],
        )
        .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("earlier run of this agent"), "{err}");

    let (code, _, err) = fleet
        .ctl(
            &fleet.alice,
            &["signal", "host1", &pid.to_string(), "SIGTERM"],
        )
        .await;
    assert_eq!(code, 0, "{err}");
    eventually(PATIENCE, "the process is gone", || {
        proc_state(pid).is_none()
    })
    .await;
    // Its end is noticed: no longer running.
    for _ in 0..50 {
        let (_, listed) = fleet.request(&fleet.alice, "list_started", json!({})).await;
        let running = listed["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["proc_id"] == pid && p["running"] == true);
        if !running {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{pid} still listed as running:\n{}", fleet.agent.log());
}
