//! What the agent measures of its host: telemetry checked against /proc,
//! published only while someone subscribes, and the work folder's usage.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::{assert_refused, messages_but_summaries, Fleet};

#[tokio::test]
async fn telemetry_matches_proc() {
    let fleet = Fleet::start().await;
    let (code, reply) = fleet
        .ctl_json(&fleet.vic, &["top", "host1", "--once"])
        .await;
    assert_eq!(code, 0, "{reply}");
    let data = &reply["tele_data"];
    let cores = std::fs::read_to_string("/proc/stat")
        .expect("stat")
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    let cpu = data["ttl_cpu_usage"].as_array().expect("per core");
    assert_eq!(cpu.len(), cores);
    assert!(
        cpu.iter()
            .all(|c| (0.0..=1.0).contains(&c.as_f64().expect("share"))),
        "{cpu:?}"
    );
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let total_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("MemTotal");
    let mem: u64 = data["ttl_mem_usage"]
        .as_array()
        .expect("mem")
        .iter()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(mem, total_kb * 1024);
    let disks = data["disk_util"].as_object().expect("disks");
    assert!(
        !disks.is_empty() && disks.values().all(|d| d[0].is_u64() && d[1].is_u64()),
        "{disks:?}"
    );
    assert_eq!(data["vpn_status"]["up"], false);
    // One stat type only, and a wrong one.
    let (_, reply) = fleet
        .request(
            &fleet.vic,
            "telemetry",
            json!({"stat_types": ["ttl_mem_usage"]}),
        )
        .await;
    assert_eq!(
        reply["tele_data"].as_object().map(|m| m.len()),
        Some(1),
        "{reply}"
    );
    let (code, reply) = fleet
        .request(&fleet.vic, "telemetry", json!({"stat_types": ["gpu"]}))
        .await;
    assert_refused(code, &reply, "bad_argument");
    // The human screen: one bar per core.
    let (code, screen, _) = fleet.ctl(&fleet.vic, &["top", "host1", "--once"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        screen.lines().filter(|l| l.starts_with("cpu")).count(),
        cores,
        "{screen}"
    );
}

#[tokio::test]
async fn telemetry_is_published_only_while_someone_subscribes() {
    let fleet = Fleet::start().await;
    let metrics = || async {
        reqwest::get(fleet.server.http_url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    let before = messages_but_summaries(&metrics().await);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        messages_but_summaries(&metrics().await),
        before,
        "nobody subscribed, nothing published"
    );

    let mut viewer = fleet.client("vic_top", &fleet.vic).await;
    viewer
        .send(json!({"type": "SELF_SUBSCRIBE", "service": "telemetry_host1"}))
        .await;
    let event = viewer.skip_to("MESSAGE").await;
    assert_eq!(event["data"]["event"], "telemetry", "{event}");
    assert!(
        event["data"]["tele_data"]["ttl_cpu_usage"].is_array(),
        "{event}"
    );
    viewer.skip_to("MESSAGE").await; // and again on the next tick
    viewer
        .send(json!({"type": "SELF_UNSUBSCRIBE", "service": "telemetry_host1"}))
        .await;
    viewer.skip_to("SELF_UNSUBSCRIBE_RESULT").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = messages_but_summaries(&metrics().await);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        messages_but_summaries(&metrics().await),
        after,
        "unsubscribed, nothing published"
    );
}

#[tokio::test]
async fn user_usages_measure_the_work_folder() {
    let fleet = Fleet::start().await;
    let work: PathBuf = fleet.work.path().to_owned();
    std::fs::write(work.join("one.bin"), vec![0u8; 1000]).expect("file");
    std::fs::create_dir(work.join("data")).expect("dir");
    std::fs::write(work.join("data").join("a"), vec![0u8; 300]).expect("file");
    std::fs::create_dir(work.join("data").join("deeper")).expect("dir");
    std::fs::write(work.join("data").join("deeper").join("b"), vec![0u8; 200]).expect("file");
    let (code, usage) = fleet.ctl_json(&fleet.vic, &["usage", "host1"]).await;
    assert_eq!(code, 0, "{usage}");
    let entry = |name: &str| {
        usage["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .expect(name)
    };
    assert_eq!(
        (
            entry("one.bin")["bytes"].as_u64(),
            entry("one.bin")["type"].as_str()
        ),
        (Some(1000), Some("file"))
    );
    assert_eq!(
        (
            entry("data")["bytes"].as_u64(),
            entry("data")["type"].as_str()
        ),
        (Some(500), Some("dir"))
    );
    assert!(usage["resources"]["processes"].is_u64(), "{usage}");
    let (code, table, _) = fleet.ctl(&fleet.vic, &["usage", "host1"]).await;
    assert_eq!(code, 0);
    assert!(
        table.contains("1.0 kB") && table.contains("one.bin"),
        "{table}"
    );
}
