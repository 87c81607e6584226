//! Jobs among replicas: a job created through one replica reaches agents
//! connected to the other; when the replica that coordinates it is
//! SIGKILLed in the middle, the other takes it over from the ledger in
//! Redis, and every host ends in a final state, having run the command
//! once (counted on disk, in each agent's work folder).

use std::time::Duration;

use serde_json::json;

use crate::common::jobs::Operator;
use crate::common::process::{command, Process};
use crate::common::redis::RedisServer;
use crate::replica_process;

const HOSTS: usize = 6;

fn agent(url: &str, i: usize, work: &std::path::Path) -> Process {
    let dir = work.join(format!("edge_{i}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cmd = command(&[
        "agent",
        "--url",
        url,
        "--name",
        &format!("edge_{i}"),
        "--label",
        "role=edge",
        "--work-dir",
        dir.to_str().unwrap(),
        "--systemd",
        "off",
    ]);
    cmd.env("CONCIERGE_AGENT_ANONYMOUS_ROLE", "operator");
    Process::spawn(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_outlives_the_replica_that_coordinates_it() {
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut coordinator = replica_process(&redis, files.path(), 2_000);
    let a = format!("ws://{}/ws", coordinator.listening().await);
    let mut other = replica_process(&redis, files.path(), 2_000);
    let b = format!("ws://{}/ws", other.listening().await);
    // The agents are on B; the job is made through A, which coordinates it.
    let _agents: Vec<Process> = (0..HOSTS).map(|i| agent(&b, i, work.path())).collect();
    let mut op = Operator::connect(&a, "").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = op
            .ask("hosts", json!({"target": "role=edge", "online": true}))
            .await;
        if page["hosts"].as_array().map_or(0, Vec::len) == HOSTS {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = op
        .run_with(
            "role=edge",
            json!({"req": "execute", "msg": {"cmd": ["sh", "-c", "echo run >> ran; sleep 1"]}}),
            json!({"batch": 2}),
        )
        .await;
    // A dies while hosts run the job: their answers to it are lost.
    op.until_state(&job, "edge_0", "exited").await;
    op.until_state(&job, "edge_2", "running").await;
    coordinator.signal("KILL");
    coordinator.exit(Duration::from_secs(10)).await;

    let mut op = Operator::connect(&b, "").await;
    let end = op.until_over(&job).await;
    assert_eq!(end["state"], "finished", "{end}");
    assert_eq!(end["counts"], json!({"exited": HOSTS}), "{end}");
    for i in 0..HOSTS {
        let ran = std::fs::read_to_string(work.path().join(format!("edge_{i}/ran"))).unwrap();
        assert_eq!(ran.lines().count(), 1, "edge_{i} ran it once");
    }
    assert!(
        other.log().contains("taking the job over"),
        "B took it over"
    );
    let hosts = op.hosts(&job).await;
    assert!(
        hosts.iter().any(|h| h["attempts"].as_u64() > Some(1)),
        "a host in flight was asked again: {hosts:?}"
    );
}
