//! Replicas sharing a real Redis behave, for every client, like one
//! gateway. Here, the replicas the tests start and what they share; each
//! module tests a concern.

#[path = "../common/mod.rs"]
mod common;

mod dead_replica;
mod departures;
mod health;
mod history;
mod inventory;
mod jobs;
mod kill_replay;
mod messaging;
mod namespace;
mod outages;
mod recovery;

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use common::process::{command, Process};
use common::redis::RedisServer;
use common::{Client, TestServer};
use concierge::config::Settings;

/// A replica in this process, sharing `files` with the others.
fn replica(redis: &RedisServer, files: &Path) -> TestServer {
    replica_at(redis.url(), files)
}

/// A replica in this process reaching Redis at `url`.
fn replica_at(url: String, files: &Path) -> TestServer {
    replica_with(url, files, |_| {})
}

/// A replica in this process reaching Redis at `url`, its settings then
/// changed by `tweak`.
fn replica_with(url: String, files: &Path, tweak: impl FnOnce(&mut Settings)) -> TestServer {
    let files = files.to_owned();
    TestServer::with(move |s| {
        s.redis_url = url;
        s.node_lease_ms = 1_500;
        s.data_dir = files;
        tweak(s);
    })
}

/// A Redis and two replicas in this process sharing a files folder.
fn two_replicas() -> (RedisServer, tempfile::TempDir, TestServer, TestServer) {
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    let r1 = replica(&redis, files.path());
    let r2 = replica(&redis, files.path());
    (redis, files, r1, r2)
}

/// Waits until `client`'s CLIENT_FETCH_ALL lists exactly `names`.
async fn sees(client: &mut Client, names: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        client.send(json!({"type": "CLIENT_FETCH_ALL"})).await;
        let all = client.skip_to("CLIENT_FETCH_ALL_RESULT").await;
        let mut listed: Vec<String> = all["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect();
        listed.sort();
        let mut wanted: Vec<&str> = names.to_vec();
        wanted.sort();
        if listed == wanted {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} sees {listed:?}, not {wanted:?}",
            client.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many connections are subscribed to `channel`.
fn subscribers(redis: &RedisServer, channel: &str) -> u64 {
    let out = redis.cli(&["PUBSUB", "NUMSUB", channel]);
    out.lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("PUBSUB NUMSUB answered {out:?}"))
}

/// The answer to a MESSAGE, skipping the broadcasts around it.
async fn answer(client: &mut Client) -> serde_json::Value {
    loop {
        let payload = client.recv().await;
        if payload.get("seq").is_some() {
            return payload;
        }
    }
}

/// A replica process whose lease is `lease_ms`.
fn replica_process(redis: &RedisServer, files: &Path, lease_ms: u64) -> Process {
    replica_process_with(redis, files, lease_ms, &[])
}

/// A replica process whose lease is `lease_ms`, with more `flags`.
fn replica_process_with(
    redis: &RedisServer,
    files: &Path,
    lease_ms: u64,
    flags: &[&str],
) -> Process {
    let mut cmd = command(&[
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--node-lease-ms",
        &lease_ms.to_string(),
        "--redis-url",
        &redis.url(),
    ]);
    cmd.arg("--data-dir").arg(files).args(flags);
    Process::spawn(cmd)
}

/// A replica process with client `name` on it, and a replica in this process.
async fn process_and_replica(
    redis: &RedisServer,
    files: &Path,
    name: &str,
) -> (Process, Client, TestServer) {
    let mut process = replica_process(redis, files, 1_500);
    let addr = process.listening().await;
    let mut client = Client::connect(&format!("ws://{addr}/ws")).await;
    client.identify(name).await;
    (process, client, replica(redis, files))
}

/// The answer to a MESSAGE sent to another replica: within the Redis
/// timeouts (an answer may wait on a write), skipping broadcasts.
async fn cluster_answer(client: &mut Client) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let payload = client.recv_within(left).await;
        if payload.get("seq").is_some() {
            return payload;
        }
    }
}

/// The answer for a frame that did not leave for the other replicas
/// (docs/PROTOCOL.md section 12).
fn assert_not_sent(answer: &serde_json::Value) {
    assert_eq!(answer["type"], "ERROR_UNAVAILABLE", "{answer}");
    let desc = answer["desc"].as_str().unwrap_or_default();
    assert!(desc.contains("other replicas"), "{answer}");
}
