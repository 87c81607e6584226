//! The inventory among replicas: a host connected to one is listed by the
//! other, online, with its facts; when it stops it stays listed there,
//! offline.

use std::time::Duration;

use serde_json::Value;

use super::common::process::{command, ctl_json, Process};
use super::common::PATIENCE;
use super::two_replicas;

/// `ctl hosts` through `url`: name and online of each host.
async fn listed(url: &str) -> Vec<(String, bool, Value)> {
    let (code, reply) = ctl_json(url, "", &["hosts"]).await;
    assert_eq!(code, 0, "{reply}");
    reply["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_owned(),
                h["online"] == true,
                h["facts"]["labels"].clone(),
            )
        })
        .collect()
}

async fn until(url: &str, wanted: bool) -> Vec<(String, bool, Value)> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let hosts = listed(url).await;
        if hosts.len() == 1 && hosts[0].1 == wanted {
            return hosts;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other replica lists {hosts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_answers_for_every_host() {
    let (_redis, _files, r1, r2) = two_replicas();
    let work = tempfile::tempdir().unwrap();
    let mut agent = Process::spawn(command(&[
        "agent",
        "--url",
        &r1.ws_url(),
        "--name",
        "far_host",
        "--label",
        "role=edge",
        "--work-dir",
        work.path().to_str().unwrap(),
        "--systemd",
        "off",
    ]));
    let hosts = until(&r2.ws_url(), true).await;
    assert_eq!(hosts[0].0, "far_host");
    assert_eq!(hosts[0].2["role"], "edge");
    agent.signal("TERM");
    agent.exit(PATIENCE).await;
    until(&r2.ws_url(), false).await;
}
