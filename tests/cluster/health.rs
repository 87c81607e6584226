//! Hosts' health among replicas: a host reports to one replica, and the
//! other lists its latest health and reads its history back, from the
//! Redis they share.

use std::time::Duration;

use serde_json::{json, Value};

use super::common::jobs::Operator;
use super::common::redis::RedisServer;
use super::common::PATIENCE;
use super::replica_with;

/// A host of an open gateway: a client tagged `agent` under `name`, with
/// its facts (which list it in the inventory).
async fn host(url: &str, name: &str) -> Operator {
    let identify = json!({"type": "IDENTIFY", "name": name, "version": "0.2.0", "tags": ["agent"]});
    let mut host = Operator::identified(url, identify).await;
    let facts = host.ask("facts", json!({"os": "debian"})).await;
    assert_eq!(facts["summary_interval"], 1, "{facts}");
    host
}

/// Sends a summary of `cpu`, waiting out the rate limit (half the
/// interval); when the gateway took it.
async fn send_summary(host: &mut Operator, cpu: f64) -> u64 {
    let summary = json!({"cpu": cpu, "load": 0.5, "mem": 40.0, "disk": 71.5});
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let reply = host.reply("summary", summary.clone()).await;
        if reply["reason"] != "limit" {
            assert_eq!(reply["result"], "success", "{reply}");
            return reply["at"].as_u64().expect("at");
        }
        assert!(tokio::time::Instant::now() < deadline, "{reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The CPU readings of a `history` reply.
fn cpus(history: &Value) -> Vec<f64> {
    history["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["cpu"].as_f64().unwrap())
        .collect()
}

/// Asks `hosts` until every one of `names` is listed with the CPU it
/// last reported.
async fn until_listed(viewer: &mut Operator, names: &[(&str, f64)]) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let page = viewer.ask("hosts", json!({})).await;
        let hosts = page["hosts"].as_array().cloned().unwrap_or_default();
        let listed = |name: &str, cpu: f64| {
            hosts
                .iter()
                .any(|h| h["name"] == name && h["health"]["cpu"].as_f64() == Some(cpu))
        };
        if names.iter().all(|&(name, cpu)| listed(name, cpu)) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_reads_every_hosts_health() {
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    let every_second = |s: &mut concierge::config::Settings| s.summary_interval_secs = 1;
    let r1 = replica_with(redis.url(), files.path(), every_second);
    let r2 = replica_with(redis.url(), files.path(), every_second);
    let mut web = host(&r1.ws_url(), "web_1").await;
    let mut db = host(&r2.ws_url(), "db_1").await;
    let mut first = 0;
    for cpu in [10.0, 20.0, 30.5] {
        let at = send_summary(&mut web, cpu).await;
        first = if first == 0 { at } else { first };
        send_summary(&mut db, cpu + 1.0).await;
    }

    // Each replica lists both hosts' latest, and reads both histories.
    for url in [r1.ws_url(), r2.ws_url()] {
        let mut viewer = Operator::connect(&url, "").await;
        until_listed(&mut viewer, &[("web_1", 30.5), ("db_1", 31.5)]).await;
        for (name, expected) in [("web_1", [10.0, 20.0, 30.5]), ("db_1", [11.0, 21.0, 31.5])] {
            // (Each replica writes what it took every second.)
            let deadline = tokio::time::Instant::now() + PATIENCE;
            loop {
                let history = viewer
                    .ask("history", json!({"host": name, "since": first - 10}))
                    .await;
                if cpus(&history) == expected {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{url} {name}: {history}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // In the Redis they share, not in their files folder.
    let stored = redis.cli(&["ZRANGE", "concierge:health:hosts", "0", "-1"]);
    let mut stored: Vec<&str> = stored.split_whitespace().collect();
    stored.sort_unstable();
    assert_eq!(stored, ["db_1", "web_1"]);
    assert!(!files.path().join(concierge::cluster::HEALTH_FILE).exists());
}
