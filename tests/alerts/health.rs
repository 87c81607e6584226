//! Rules on summaries: a host that reports its health over the gateway's
//! own protocol (a client tagged `agent` sending `summary` every second, as
//! the agent does), with figures the test sets, so that what fires and when
//! is decided by the test and not by whatever else the machine runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::alerts::Follower;
use crate::common::jobs::Operator;
use crate::common::TestServer;
use crate::PATIENCE;

/// What the host reports, as the test sets it.
#[derive(Default)]
struct Figures {
    cpu: AtomicU64,
    disk: AtomicU64,
    /// Whether it stopped reporting (while staying connected).
    silent: AtomicBool,
    /// The `at` of every summary taken, with the cpu it said.
    taken: std::sync::Mutex<Vec<(u64, u64)>>,
}

/// Host `name` reporting `figures` every second until the task is aborted.
async fn report(url: String, name: &'static str, figures: Arc<Figures>) {
    let identify = json!({"type": "IDENTIFY", "name": name, "version": "0.2.0", "tags": ["agent"]});
    let mut host = Operator::identified(&url, identify).await;
    host.ask("facts", json!({"os": "debian"})).await;
    loop {
        if !figures.silent.load(Ordering::Relaxed) {
            let cpu = figures.cpu.load(Ordering::Relaxed);
            let summary = json!({"cpu": cpu, "load": 0.5, "mem": 40.0,
                "disk": figures.disk.load(Ordering::Relaxed)});
            let reply = host.reply("summary", summary).await;
            if let Some(at) = reply["at"].as_u64() {
                figures.taken.lock().unwrap().push((at, cpu));
            }
        }
        tokio::time::sleep(Duration::from_millis(1_000)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_host_fires_once_it_stayed_busy_and_resolves_when_it_calms_down() {
    let server = TestServer::with(|s| {
        s.summary_interval_secs = 1;
        s.alert_interval_secs = 1;
        s.alerts = vec![
            serde_json::from_value(
                json!({"name": "hot", "when": "cpu > 40 for 2s", "target": "web_1"}),
            )
            .unwrap(),
            serde_json::from_value(json!({"name": "full", "when": "disk > 95"})).unwrap(),
        ];
    });
    let url = server.ws_url();
    let mut follower = Follower::subscribe(&url).await;
    let figures = Arc::new(Figures::default());
    figures.cpu.store(10, Ordering::Relaxed);
    figures.disk.store(50, Ordering::Relaxed);
    let reporting = tokio::spawn(report(url.clone(), "web_1", figures.clone()));

    // Calm for a while: nothing.
    let mut op = Operator::connect(&url, "").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(op.ask("alerts", json!({})).await["recent"], json!([]));

    // Busy: fires once busy for 2 s by the summaries' own times.
    figures.cpu.store(90, Ordering::Relaxed);
    let firing = follower.next(PATIENCE).await;
    let taken = figures.taken.lock().unwrap().clone();
    let first_busy = taken
        .iter()
        .find(|(_, cpu)| *cpu == 90)
        .expect("a busy summary")
        .0;
    assert_eq!(
        (
            &firing["state"],
            &firing["rule"],
            &firing["host"],
            &firing["value"]
        ),
        (
            &json!("firing"),
            &json!("hot"),
            &json!("web_1"),
            &json!(90.0)
        ),
        "{firing}"
    );
    // From the first busy summary the evaluation saw (one a second each).
    let since = firing["since"].as_u64().unwrap();
    assert!(
        taken.iter().any(|&(at, cpu)| at == since && cpu == 90) && since <= first_busy + 1,
        "{firing} {taken:?}"
    );
    assert!(firing["at"].as_u64().unwrap() >= since + 2, "{firing}");
    assert!(
        taken.iter().filter(|(_, cpu)| *cpu == 90).count() >= 3,
        "fired before 2 s of summaries: {taken:?}"
    );

    // Calm again: resolved, with the reading that resolved it.
    figures.cpu.store(10, Ordering::Relaxed);
    let resolved = follower.next(PATIENCE).await;
    assert_eq!(
        (
            &resolved["state"],
            &resolved["rule"],
            &resolved["value"],
            &resolved["since"]
        ),
        (
            &json!("resolved"),
            &json!("hot"),
            &json!(10.0),
            &firing["since"]
        ),
        "{resolved}"
    );

    // A full disk fires at once (no `for`); a host that stops reporting
    // while connected resolves once its summary is three intervals old: an
    // old reading is no reading.
    figures.disk.store(97, Ordering::Relaxed);
    let full = follower.next(PATIENCE).await;
    assert_eq!(
        (&full["state"], &full["rule"], &full["value"]),
        (&json!("firing"), &json!("full"), &json!(97.0)),
        "{full}"
    );
    figures.silent.store(true, Ordering::Relaxed);
    let stale = follower.next(PATIENCE).await;
    assert_eq!(
        (&stale["state"], &stale["rule"], stale.get("value")),
        (&json!("resolved"), &json!("full"), None::<&Value>),
        "{stale}"
    );
    let page = op.ask("alerts", json!({})).await;
    assert_eq!(page["active"], json!([]), "{page}");
    assert_eq!(
        page["recent"],
        json!([stale, full, resolved, firing]),
        "{page}"
    );
    reporting.abort();
}
