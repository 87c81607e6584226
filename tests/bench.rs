//! `concierge bench` against a real gateway, at tiny sizes: every scenario
//! must account for every message exactly. This checks the tool, not the
//! gateway's speed: nothing here asserts a rate or a latency bound.

mod common;

use clap::Parser;
use common::TestServer;
use concierge::bench::{self, BenchArgs, Report};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

async fn bench(args: &[&str]) -> Report {
    let cli = Cli::try_parse_from(["concierge"].iter().chain(args).chain(&[
        "--quiet",
        "--timeout",
        "5",
        "--settle-ms",
        "100",
    ]))
    .unwrap_or_else(|e| panic!("{args:?} does not parse: {e}"));
    bench::run(&cli.bench.scenario)
        .await
        .unwrap_or_else(|e| panic!("{args:?} failed: {e}"))
}

/// Every message delivered exactly once, with sane latency figures.
fn assert_exact(report: &Report, expected: u64) {
    let c = report.counts.as_ref().expect("message counts");
    assert_eq!(c.expected, expected, "{}", report.table());
    assert_eq!(c.delivered, expected, "{}", report.table());
    assert_eq!(c.missing, 0, "{}", report.table());
    assert_eq!(c.duplicated, 0, "{}", report.table());
    assert_eq!(
        c.unexpected + c.malformed + c.rejected,
        0,
        "{}",
        report.table()
    );
    assert_eq!(c.acked, c.sent, "{}", report.table());
    assert!(report.clean() && !report.stalled, "{}", report.table());
    let l = report.latency.as_ref().expect("latency figures");
    assert_eq!(l.samples, expected);
    assert!(l.p50_ms > 0.0, "{l:?}");
    assert!(l.p50_ms <= l.p90_ms && l.p90_ms <= l.p99_ms, "{l:?}");
    // Histogram quantiles are rounded up to their bucket (0.1%).
    assert!(l.p99_ms <= l.max_ms * 1.001 + 0.001, "{l:?}");
    let seconds = report.seconds.expect("duration");
    assert!(l.max_ms <= seconds * 1e3 + 1.0, "{l:?} in {seconds} s");
    assert!(report.deliveries_per_sec.is_some_and(|d| d > 0.0));
    let cpu = report.cpu.as_ref().expect("cpu figures");
    assert!(
        cpu.bench_us_per_delivery.is_some_and(|us| us > 0.0),
        "{cpu:?}"
    );
    assert!(report.frame_bytes.is_some_and(|b| b > 64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_delivers_every_message_to_every_subscriber_once() {
    let server = TestServer::start();
    let url = server.ws_url();
    let pid = std::process::id().to_string();
    let report = bench(&[
        "fanout",
        "--url",
        &url,
        "--subscribers",
        "20",
        "--messages",
        "50",
        "--window",
        "8",
        "--server-pid",
        &pid,
    ])
    .await;
    assert_exact(&report, 20 * 50);
    assert_eq!(report.scenario, "fanout");
    assert_eq!((report.connected, report.connect_failures), (21, 0));
    assert_eq!(report.window, Some(8));
    // The gateway runs in this process: its CPU is this process's.
    let cpu = report.cpu.as_ref().expect("cpu");
    assert!(cpu.server_seconds.is_some() && cpu.server_us_per_delivery.is_some());
    // The JSON has every figure.
    let json: serde_json::Value = serde_json::from_str(&report.json()).expect("json");
    assert_eq!(json["counts"]["delivered"], 1000);
    assert!(json["latency"]["p99_ms"].is_number());
}

/// Several owners fanning out to their own services at once: each message
/// reaches exactly the subscribers of its service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_services_fan_out_at_once() {
    let server = TestServer::with(|s| s.workers = 2);
    let url = server.ws_url();
    let report = bench(&[
        "fanout",
        "--url",
        &url,
        "--subscribers",
        "30",
        "--services",
        "3",
        "--messages",
        "40",
        "--window",
        "8",
    ])
    .await;
    // 3 owners × 40 messages × 10 subscribers each.
    assert_exact(&report, 3 * 40 * 10);
    assert_eq!((report.connected, report.connect_failures), (33, 0));
    assert_eq!(report.senders, Some(3));
    assert_eq!(report.receivers_per_message, Some(10));
}

/// `--history`: the services keep one, so every relayed frame carries its
/// position (and is bigger than the same frame without), and every message
/// still reaches every subscriber once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_with_history_keeps_every_message_in_one() {
    let server = TestServer::start();
    let url = server.ws_url();
    let run = |history: &'static str| {
        let url = url.clone();
        async move {
            bench(&[
                "fanout",
                "--url",
                &url,
                "--subscribers",
                "10",
                "--messages",
                "60",
                "--window",
                "8",
                "--history",
                history,
            ])
            .await
        }
    };
    let kept = run("50").await;
    assert_exact(&kept, 10 * 60);
    assert_eq!(kept.scenario, "fanout (history 50 messages, 300 s)");
    let plain = run("0").await;
    assert_exact(&plain, 10 * 60);
    assert_eq!(plain.scenario, "fanout");
    let (with, without) = (kept.frame_bytes.unwrap(), plain.frame_bytes.unwrap());
    assert!(
        with > without + r#","position":{"epoch":"","offset":1}"#.len() as u64,
        "{with} bytes with history, {without} without"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_at_a_target_rate() {
    let server = TestServer::start();
    let url = server.ws_url();
    let report = bench(&[
        "fanout",
        "--url",
        &url,
        "--subscribers",
        "10",
        "--messages",
        "40",
        "--rate",
        "400",
    ])
    .await;
    assert_exact(&report, 10 * 40);
    assert_eq!(report.rate, Some(400.0));
    // 40 messages at 400/s take at least 97.5 ms from first to last.
    assert!(
        report.seconds.expect("duration") >= 0.0975,
        "{}",
        report.table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_pairs_exchange_every_message_once() {
    let server = TestServer::start();
    let url = server.ws_url();
    let report = bench(&[
        "direct",
        "--url",
        &url,
        "--pairs",
        "5",
        "--messages",
        "40",
        "--window",
        "4",
    ])
    .await;
    assert_exact(&report, 2 * 5 * 40);
    assert_eq!(report.senders, Some(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_counts_clients_broadcasts_and_memory() {
    let server = TestServer::start();
    let url = server.ws_url();
    let pid = std::process::id().to_string();
    let report = bench(&[
        "connect",
        "--url",
        &url,
        "--clients",
        "30",
        "--server-pid",
        &pid,
    ])
    .await;
    assert!(report.clean(), "{}", report.table());
    assert_eq!((report.connected, report.connect_failures), (30, 0));
    assert!(report.connects_per_sec.is_some_and(|r| r > 0.0));
    let l = report.connect_latency.expect("connect latency");
    assert_eq!(l.samples, 30);
    // Each client hears CLIENT_JOINED for everyone who identified after it.
    assert_eq!(report.broadcast_frames, 30 * 29 / 2);
    let m = report.memory.expect("memory");
    assert!(m.server_rss_before_bytes.is_some() && m.server_rss_after_bytes.is_some());
    assert!(m.server_rss_per_connection_bytes.is_some());
    assert!(report.counts.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_spreads_clients_over_several_urls() {
    let server = TestServer::start();
    // Two URLs for the one gateway: the clients are spread over both.
    let a = server.ws_url();
    let b = format!("ws://localhost:{}/ws", server.addr.port());
    let report = bench(&[
        "cluster",
        "fanout",
        "--url",
        &a,
        "--url",
        &b,
        "--subscribers",
        "6",
        "--messages",
        "20",
    ])
    .await;
    assert_exact(&report, 6 * 20);
    assert_eq!(report.scenario, "cluster-fanout");
    assert_eq!(report.urls, vec![a.clone(), b]);

    let cli = Cli::try_parse_from(["concierge", "cluster", "direct", "--url", &a]).expect("parses");
    let err = bench::run(&cli.bench.scenario)
        .await
        .expect_err("one URL is not a cluster");
    assert!(err.to_string().contains("two --url"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gateway_is_reported_not_hung() {
    let server = TestServer::start();
    let url = format!("ws://127.0.0.1:{}/nowhere", server.addr.port());
    let cli =
        Cli::try_parse_from(["concierge", "fanout", "--url", &url, "--quiet"]).expect("parses");
    let err = bench::run(&cli.bench.scenario)
        .await
        .expect_err("no gateway there");
    assert!(err.to_string().contains("owner"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_requires_tokens_is_benchmarked_with_one() {
    let server = TestServer::with(|s| s.require_auth = true);
    let settings = concierge::config::Settings {
        data_dir: server.data.path().to_owned(),
        ..Default::default()
    };
    let store = concierge::cluster::open_store(&settings.cluster())
        .await
        .unwrap();
    let auth = concierge::auth::Auth::open(store, &settings).await.unwrap();
    let token = auth
        .issue(
            "bench",
            "bench",
            concierge::auth::Role::Viewer,
            std::time::Duration::from_secs(600),
            concierge::auth::TokenKind::Issued,
        )
        .await
        .unwrap()
        .token;
    let url = server.ws_url();
    let args = ["direct", "--url", &url, "--pairs", "2", "--messages", "10"];
    // The signing key reaches the gateway within a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let report = loop {
        let cli = Cli::try_parse_from(["concierge"].iter().chain(&args).chain(&[
            "--token",
            &token,
            "--quiet",
            "--timeout",
            "5",
            "--settle-ms",
            "100",
        ]))
        .unwrap();
        match bench::run(&cli.bench.scenario).await {
            Ok(report) => break report,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_exact(&report, 2 * 2 * 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_presence_leave_only_the_watchers_to_hear_joins() {
    let server = TestServer::start();
    let url = server.ws_url();
    let report = bench(&[
        "connect",
        "--url",
        &url,
        "--clients",
        "30",
        "--watchers",
        "3",
        "--presence",
        "false",
    ])
    .await;
    assert!(report.clean(), "{}", report.table());
    assert_eq!((report.connected, report.connect_failures), (30, 0));
    // The 3 watchers hear each other (3) and the 27 agents (3 × 27); the
    // agents hear nothing.
    assert_eq!(report.broadcast_frames, 3 + 3 * 27, "{}", report.table());
    assert!(
        report.notes.iter().any(|n| n.contains("received: 84")),
        "{:?}",
        report.notes
    );
}

/// `jobs`: 50 simulated agents, 30% of them dropping their sockets (no
/// close frame) as the job starts and coming back with their `resume`
/// secret, 10% of them failing, followed through its events: every host
/// ends final, run once by its agent, as its agent answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_end_final_and_run_once_on_every_host_when_agents_drop() {
    let server = TestServer::start();
    let url = server.ws_url();
    let pid = std::process::id().to_string();
    let report = bench(&[
        "jobs",
        "--url",
        &url,
        "--agents",
        "50",
        "--kill-ratio",
        "0.3",
        "--fail-ratio",
        "0.1",
        "--delay",
        "100",
        "--reconnect-ms",
        "300",
        "--events",
        "--server-pid",
        &pid,
    ])
    .await;
    let table = report.table();
    assert!(report.clean(), "{table}");
    assert_eq!(
        (report.connected, report.connect_failures),
        (50, 0),
        "{table}"
    );
    let jobs = report.jobs.as_ref().expect("job figures");
    assert_eq!(jobs.hosts, 50, "{table}");
    assert_eq!(
        (jobs.executed_once, jobs.duplicated, jobs.lost),
        (50, 0, 0),
        "{table}"
    );
    assert_eq!((jobs.killed, jobs.reconnected), (15, 15), "{table}");
    // Every host exited, 5 of them with 1: the rows say what the agents
    // answered.
    assert_eq!(jobs.states.get("exited"), Some(&50), "{table}");
    let (first, all) = (
        jobs.first_result_ms.expect("first result"),
        jobs.all_results_ms.expect("all results"),
    );
    // No host ends before its run's delay.
    assert!(99.0 <= first && first <= all, "{table}");
    assert!(jobs.server_cpu_ms_per_1000_hosts.is_some(), "{table}");
    // Followed through its events: each host's at least once.
    assert!(jobs.host_events >= 50 && jobs.regressions == 0, "{table}");
    assert!(table.contains("every host final"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&report.json()).expect("json");
    assert_eq!(json["jobs"]["lost"], 0);
}

/// `bench summaries` at a small size: 50 simulated agents, one summary
/// every 1.5 s each for four seconds, against a gateway whose interval is a
/// second (it takes one a second at most): every summary is accepted and
/// written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_are_accepted_from_every_agent() {
    let server = TestServer::with(|s| s.summary_interval_secs = 1);
    let url = server.ws_url();
    let pid = std::process::id().to_string();
    let db = server.data.path().join("health.db");
    let report = bench(&[
        "summaries",
        "--url",
        &url,
        "--agents",
        "50",
        "--interval",
        "1.5",
        "--duration",
        "4",
        "--server-pid",
        &pid,
        "--health-db",
        db.to_str().expect("utf-8"),
    ])
    .await;
    let table = report.table();
    assert!(report.clean(), "{table}");
    assert_eq!(
        (report.connected, report.connect_failures),
        (50, 0),
        "{table}"
    );
    let s = report.summaries.as_ref().expect("summary figures");
    assert_eq!(s.gateway_interval_secs, Some(1), "{table}");
    // Each agent's first within its first interval, then one an interval.
    assert!((100..=150).contains(&s.sent), "{table}");
    assert_eq!(
        (s.accepted, s.refused, s.unanswered),
        (s.sent, 0, 0),
        "{table}"
    );
    assert!(s.accepted_per_sec > 0.0, "{table}");
    assert!(s.server_cpu_percent.is_some(), "{table}");
    // From the gateway's counter of points written.
    assert!(s.writes_source.contains("points_written"), "{table}");
    assert!(s.store_writes_per_sec.is_some_and(|w| w > 0.0), "{table}");
    assert!(
        s.bytes_source
            .as_deref()
            .is_some_and(|b| b.contains("health.db")),
        "{table}"
    );
    assert!(table.contains("every summary accepted"), "{table}");
}
