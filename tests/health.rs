//! Hosts' health (PROTOCOL §20), for real: hosts that send summaries to a
//! gateway, the inventory listing their latest with a trend, the history
//! read back and averaged, the rules a summary must follow, hosts that
//! leave staying listed with their last health, a host token's host listed
//! as never connected, and a history that outlives the gateway's restart.

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::jobs::Operator;
use common::process::{issue_token, serve_with, Process};
use common::{TestServer, PATIENCE};

/// A host of an open gateway: a client tagged `agent` under `name`.
async fn host(url: &str, name: &str) -> Operator {
    let identify = json!({"type": "IDENTIFY", "name": name, "version": "0.2.0", "tags": ["agent"]});
    Operator::identified(url, identify).await
}

fn summary(cpu: f64) -> Value {
    json!({"cpu": cpu, "load": 0.5, "mem": 40.0, "disk": 71.5, "vpn_age": 12})
}

/// Sends a summary, waiting out the rate limit (half the interval) if it
/// comes too soon; the reply.
async fn send_summary(host: &mut Operator, cpu: f64) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let reply = host.reply("summary", summary(cpu)).await;
        if reply["reason"] != "limit" {
            return reply;
        }
        assert!(tokio::time::Instant::now() < deadline, "{reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asks `hosts` until `done` holds of the record of `name`; that record.
async fn until_host(viewer: &mut Operator, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let page = viewer.ask("hosts", json!({})).await;
        let record = page["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|h| h["name"] == name)
            .cloned()
            .unwrap_or_default();
        if done(&record) {
            return record;
        }
        assert!(tokio::time::Instant::now() < deadline, "{name}: {record}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn cpus(history: &Value) -> Vec<f64> {
    history["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p["cpu"].as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_are_listed_with_a_trend_and_read_back() {
    let server = TestServer::with(|s| s.summary_interval_secs = 1);
    let url = server.ws_url();
    let mut web = host(&url, "web_1").await;
    let facts = web.ask("facts", json!({"os": "debian"})).await;
    assert_eq!(facts["summary_interval"], 1, "{facts}");

    // The rules: in range, not too often.
    let bad = web
        .ask_err(
            "summary",
            json!({"cpu": 101, "load": 0, "mem": 0, "disk": 0}),
        )
        .await;
    assert_eq!(bad["reason"], "bad_argument", "{bad}");
    assert!(bad["desc"].as_str().unwrap().contains("cpu"), "{bad}");
    let bad = web.ask_err("summary", json!({"cpu": 1})).await;
    assert_eq!(bad["reason"], "bad_argument", "{bad}");
    let mut viewer = Operator::connect(&url, "").await;
    let first = send_summary(&mut web, 10.0).await;
    assert_eq!(first["result"], "success", "{first}");
    let too_soon = web.ask_err("summary", summary(11.0)).await;
    assert_eq!(too_soon["reason"], "limit", "{too_soon}");

    for cpu in [20.0, 30.4] {
        let reply = send_summary(&mut web, cpu).await;
        assert_eq!(reply["result"], "success", "{reply}");
    }
    // Listed with its latest and the trend of its readings, rounded.
    let record = until_host(&mut viewer, "web_1", |h| {
        h["health"]["trend"] == json!([10, 20, 30])
    })
    .await;
    assert_eq!(record["presence"], "online");
    assert_eq!(record["health"]["cpu"].as_f64(), Some(30.4f32 as f64));
    assert_eq!(record["health"]["disk"], 71.5);
    assert_eq!(record["health"]["vpn_age"], 12);

    // Read back as stored (a range short enough for the interval's
    // resolution: a second's points over the default hour would be 3,600,
    // more than a reply holds), then averaged into one wide step.
    let since = first["at"].as_u64().unwrap() - 10;
    let history = viewer
        .ask("history", json!({"host": "web_1", "since": since}))
        .await;
    assert_eq!(cpus(&history), [10.0, 20.0, 30.4f32 as f64]);
    assert_eq!(history["step"], 1);
    assert_eq!(history["points"][0]["mem"], 40.0);
    let until = history["until"].as_u64().unwrap();
    let wide = viewer
        .ask(
            "history",
            json!({"host": "web_1", "since": until - 600, "step": 600}),
        )
        .await;
    let averaged = cpus(&wide);
    assert!(
        (1..=2).contains(&averaged.len()),
        "three points in one or two 10-minute steps: {wide}"
    );
    let empty = viewer
        .ask("history", json!({"host": "web_1", "since": 1, "until": 2}))
        .await;
    assert_eq!(empty["points"], json!([]));
    for (msg, reason) in [
        (json!({"host": "nobody"}), "not_found"),
        (
            json!({"host": "web_1", "since": 5, "until": 4}),
            "bad_argument",
        ),
        (json!({"host": "web_1", "sinse": 5}), "bad_argument"),
    ] {
        let failure = viewer.ask_err("history", msg.clone()).await;
        assert_eq!(failure["reason"], reason, "{msg}: {failure}");
    }

    // A host that leaves stays listed, offline since it left, with its
    // last health.
    web.close().await;
    // (Its departure is written a moment after it is seen.)
    let record = until_host(&mut viewer, "web_1", |h| {
        h["presence"] == "offline" && h["last_seen"].as_u64() >= Some(until - 1)
    })
    .await;
    assert_eq!(record["online"], false);
    assert_eq!(record["health"]["trend"], json!([10, 20, 30]));
    let offline = viewer
        .ask("hosts", json!({"target": "presence=offline"}))
        .await;
    assert_eq!(offline["hosts"][0]["name"], "web_1", "{offline}");
}

/// A gateway process started on `data` with summaries every second.
fn gateway(data: &std::path::Path, bind: &str) -> Process {
    serve_with(
        bind,
        data.to_str().unwrap(),
        &["--summary-interval-secs", "1"],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_outlives_a_restart_and_a_host_token_is_a_host_never_seen() {
    let data = tempfile::tempdir().unwrap();
    let store = ["--data-dir", data.path().to_str().unwrap()];
    let token = issue_token(&store, "db_9", "agent").await;
    // An admin, who reads as a viewer does and forgets the host at the end.
    let viewer_token = issue_token(&store, "olga", "admin").await;
    let mut server = gateway(data.path(), "127.0.0.1:0");
    let addr = server.listening().await;
    let url = format!("ws://{addr}/ws");
    let mut viewer = Operator::connect(&url, &viewer_token).await;
    // Only a host, with its own host token, reports its health.
    let refused = viewer.ask_err("summary", summary(5.0)).await;
    assert_eq!(refused["reason"], "forbidden", "{refused}");

    // Issued a token, never connected: listed apart from offline hosts.
    let never = until_host(&mut viewer, "db_9", |h| h["presence"] == "never").await;
    assert_eq!(
        (never["first_seen"].clone(), never["last_seen"].clone()),
        (Value::Null, Value::Null)
    );
    let selected = viewer
        .ask("hosts", json!({"target": "presence=never"}))
        .await;
    assert_eq!(selected["hosts"].as_array().unwrap().len(), 1, "{selected}");

    let identify = json!({"type": "IDENTIFY", "name": "db_9", "version": "0.2.0",
        "tags": ["agent"], "token": token});
    let mut db = Operator::identified(&url, identify).await;
    db.ask("facts", json!({"os": "debian"})).await;
    let mut since = None;
    for cpu in [1.0, 2.0, 3.0] {
        let reply = send_summary(&mut db, cpu).await;
        assert_eq!(reply["result"], "success", "{reply}");
        since.get_or_insert(reply["at"].as_u64().unwrap());
    }
    until_host(&mut viewer, "db_9", |h| {
        h["health"]["trend"] == json!([1, 2, 3])
    })
    .await;
    let hour = viewer.ask("history", json!({"host": "db_9"})).await;
    assert_eq!(
        hour["step"], 2,
        "an hour of 1-second points, in 2-second steps"
    );
    let before = viewer
        .ask("history", json!({"host": "db_9", "since": since}))
        .await;
    assert_eq!(cpus(&before), [1.0, 2.0, 3.0]);

    server.signal("KILL");
    server.exit(PATIENCE).await;
    let mut server = gateway(data.path(), &addr.to_string());
    server.listening().await;
    let mut viewer = Operator::connect(&url, &viewer_token).await;
    let after = viewer
        .ask(
            "history",
            json!({"host": "db_9", "since": before["since"], "until": before["until"]}),
        )
        .await;
    assert_eq!(after["points"], before["points"]);
    let record = until_host(&mut viewer, "db_9", |h| h["presence"] == "offline").await;
    assert_eq!(record["health"]["trend"], json!([1, 2, 3]), "{record}");

    // Forgotten, its history goes with it.
    let forgotten = viewer.ask("forget_host", json!({"name": "db_9"})).await;
    assert_eq!(forgotten["name"], "db_9");
    let gone = viewer.ask_err("history", json!({"host": "db_9"})).await;
    assert_eq!(gone["reason"], "not_found", "{gone}");
}
