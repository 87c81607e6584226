//! The console's Fleet, Host and Alerts pages in a real browser
//! (tests/clients/console_fleet.py, Chromium through Selenium) against a
//! real gateway with thousands of hosts: real WebSocket clients with host
//! tokens of their own that reported facts and a health summary, some of
//! which then left (offline), and a host token issued for a name that never
//! connects.
//!
//! Screenshots go to `$CONCIERGE_SCREENSHOTS` when set (as in
//! tests/console.rs), otherwise to a temporary folder.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::console::{accounts, host_tokens, HostPlan, Hosts};
use common::jobs::Operator;
use common::process::issue_token;
use common::TestServer;
use serde_json::{json, Value};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/console_fleet.py"
);
const ADMIN_PASSWORD: &str = "correct horse battery";
const VIEWER_PASSWORD: &str = "viewer's own password";

/// A gateway with alice (admin) and vic (viewer), and alice's token.
async fn gateway() -> (TestServer, String) {
    let server = TestServer::start();
    let data = server.data.path().to_str().expect("utf-8").to_owned();
    accounts(
        &server.http_url(""),
        &data,
        &[
            ("alice", "admin", ADMIN_PASSWORD),
            ("vic", "viewer", VIEWER_PASSWORD),
        ],
    )
    .await;
    let admin = issue_token(&["--data-dir", &data], "alice", "admin").await;
    (server, admin)
}

/// `fleet_NNNN`.
fn host_name(i: usize) -> String {
    format!("fleet_{i:04}")
}

/// Host `i`'s labels: role web, db or cache in turn, dc fra or ams in turn.
fn labels(i: usize) -> BTreeMap<String, String> {
    let role = ["web", "db", "cache"][i % 3];
    let dc = ["fra", "ams"][i % 2];
    BTreeMap::from([("role".into(), role.into()), ("dc".into(), dc.into())])
}

/// `n` hosts with tokens, connected; host `hot`'s CPU is 99.5 %, every
/// other's below 97 %.
async fn connect_fleet(
    server: &TestServer,
    admin: &str,
    n: usize,
    hot: usize,
    extra: &[String],
) -> Hosts {
    let mut names: Vec<String> = (0..n).map(host_name).collect();
    names.extend_from_slice(extra);
    let start = std::time::Instant::now();
    let tokens = host_tokens(&server.http_url(""), admin, &names).await;
    eprintln!(
        "{} host tokens issued in {:?}",
        names.len(),
        start.elapsed()
    );
    let plans = (0..n)
        .map(|i| HostPlan {
            name: names[i].clone(),
            token: tokens[i].clone(),
            labels: labels(i),
            summary: json!({
                "cpu": if i == hot { 99.5 } else { (i % 97) as f64 },
                "load": (i % 8) as f64 / 4.0, "mem": 30 + i % 60, "disk": 40 + i % 50,
                "vpn_age": i % 180,
            }),
        })
        .collect();
    let start = std::time::Instant::now();
    let hosts = Hosts::connect(&server.ws_url(), plans).await;
    eprintln!("{n} hosts connected in {:?}", start.elapsed());
    hosts
}

/// Runs the browser script in `mode` with `config`; its summary.
async fn browse(server: &TestServer, mode: &str, config: Value) -> Value {
    let scratch = tempfile::tempdir().expect("shots");
    let shots = std::env::var("CONCIERGE_SCREENSHOTS")
        .map(|dir| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .unwrap_or_else(|_| scratch.path().to_owned());
    let base = server.http_url("");
    let config = config.to_string();
    common::browse(
        SCRIPT,
        &[
            mode,
            base.trim_end_matches('/'),
            "alice",
            ADMIN_PASSWORD,
            "vic",
            VIEWER_PASSWORD,
            shots.to_str().expect("utf-8"),
            &config,
        ],
        Duration::from_secs(300),
        String::new,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_page_lists_three_thousand_hosts_and_their_health() {
    common::require_browser();
    const HOSTS: usize = 3_000;
    const HOT: usize = 1_234;
    let (server, admin) = gateway().await;
    let never = "ghost".to_owned();
    let mut hosts = connect_fleet(&server, &admin, HOSTS, HOT, std::slice::from_ref(&never)).await;
    assert_eq!(hosts.len(), HOSTS);
    let offline: Vec<String> = (10..15).map(host_name).collect();
    for name in &offline {
        hosts.disconnect(name).await;
    }
    // The test's operator, connected while the browser looks (reading on,
    // so that it answers the gateway's pings).
    let operator_name = "alice_ops".to_owned();
    let mut operator = server.connect().await;
    operator
        .identify_with(
            json!({"type": "IDENTIFY", "name": operator_name, "version": "0.2.0", "token": admin}),
        )
        .await;
    let operator = tokio::spawn(async move {
        use futures_util::StreamExt;
        while let Some(Ok(_)) = operator.ws.next().await {}
    });
    let narrowed = (0..HOSTS).filter(|i| i % 3 == 1 && i % 2 == 0).count();

    let summary = browse(
        &server,
        "fleet",
        json!({
            "total": HOSTS + 1,
            "expression": "role=db,dc=fra",
            "narrowed": narrowed,
            "hottest": host_name(HOT),
            "offline": offline,
            "never": never,
            "operator": operator_name,
        }),
    )
    .await;
    operator.abort();

    let count = summary["count"].as_str().unwrap_or_default();
    assert!(
        count.starts_with(&format!("{0} of {0} hosts", HOSTS + 1)),
        "{summary}"
    );
    assert!(
        summary["narrowed"]
            .as_str()
            .is_some_and(|t| t.starts_with(&format!("{narrowed} of {}", HOSTS + 1))),
        "{summary}"
    );
    assert!(
        summary["target_error"]
            .as_str()
            .is_some_and(|e| e.contains("bad target expression") && e.contains('^')),
        "{summary}"
    );
    assert_eq!(summary["first_by_cpu"], host_name(HOT), "{summary}");
    assert!(
        summary["offline_text"]
            .as_str()
            .is_some_and(|t| t.starts_with("offline")),
        "{summary}"
    );
    assert_eq!(summary["never_text"], "never connected", "{summary}");
    let clients: Vec<&str> = summary["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(clients.contains(&operator_name.as_str()), "{summary}");
    assert!(
        !clients.iter().any(|c| c.starts_with("fleet_")),
        "{summary}"
    );
    let banner = summary["banner"].as_str().unwrap_or_default();
    assert!(
        banner.contains("Offline since") && banner.contains("ago") && banner.contains("debian 12"),
        "{summary}"
    );
    assert!(summary["history_points"].as_u64() >= Some(1), "{summary}");
    assert!(
        summary["never_banner"]
            .as_str()
            .is_some_and(|t| t.starts_with("Never connected")),
        "{summary}"
    );
    assert!(
        summary["missing_banner"]
            .as_str()
            .is_some_and(|t| t.starts_with("No such host")),
        "{summary}"
    );
    // The page's own timings: each filter and sort drawn within a second.
    for key in ["sort_ms", "filter_ms", "quick_ms"] {
        let ms = summary[key].as_f64().expect("a time");
        assert!((0.0..1000.0).contains(&ms), "{key}: {summary}");
    }
}

/// Written against the alerts' contract (PROTOCOL §21): it passes once
/// the gateway serves `alert_rules`, `alert_rule_set`, `alert_rule_delete`,
/// `alerts` and the `alerts` service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alerts_page_adds_a_rule_sees_it_fire_and_deletes_it() {
    common::require_browser();
    const HOT: usize = 3;
    let (server, admin) = gateway().await;
    let _hosts = connect_fleet(&server, &admin, 8, HOT, &[]).await;
    let summary = browse(
        &server,
        "alerts",
        json!({
            "rule": {"name": "cpu-hot", "when": "cpu > 98", "target": "fleet_*"},
            "hot": host_name(HOT),
        }),
    )
    .await;
    assert!(
        summary["bad_rule"]
            .as_str()
            .is_some_and(|t| t.starts_with("bad_argument")),
        "{summary}"
    );
    assert_eq!(summary["active"], json!([host_name(HOT)]), "{summary}");
    assert_eq!(summary["viewer_controls"], 0, "{summary}");
    // What the page did is the gateway's: the rule is gone, its alert fired.
    let mut operator = Operator::connect_as(&server.ws_url(), "alice", &admin).await;
    let rules = operator.ask("alert_rules", json!({})).await;
    assert!(
        !rules["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .any(|r| r["name"] == "cpu-hot"),
        "{rules}"
    );
    let page = operator.ask("alerts", json!({})).await;
    assert!(
        page["recent"]
            .as_array()
            .expect("recent")
            .iter()
            .any(|e| e["rule"] == "cpu-hot"
                && e["host"] == host_name(HOT)
                && e["state"] == "firing"),
        "{page}"
    );
}
