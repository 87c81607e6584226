//! The `connect` scenario: clients connect, identify and stay idle while
//! the gateway's memory is read.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::client::Plan;
use super::run::{finish, join, tally, Clocks, Ctx};
use super::STOP;
use crate::bench::report::{Memory, Report};
use crate::bench::stats::LatencySum;
use crate::bench::{system, BenchError, ConnectArgs};
use crate::protocol::HostService;

/// `connect`: N clients connect and identify, then stay idle while the
/// gateway's memory is read.
pub async fn connect(args: &ConnectArgs, scenario: &str) -> Result<Report, BenchError> {
    let n = args.clients;
    let mut ctx = Ctx::new(&args.common, n).await?;
    let mut report = ctx.report(scenario);
    report.clients = n as u64;
    let rss_before = ctx.server_rss().await;
    let own_before = system::own_rss().ok();
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    // The watchers connect first, told of every join; the others as
    // `--presence` says.
    let w = args.watchers.min(n);
    let plan = |ctx: &Ctx, i: usize| {
        let name = ctx.name("c", i);
        // What `concierge agent` does once identified.
        let agent = i >= w && args.agent_services;
        Plan {
            index: i,
            endpoint: ctx.shared.spread.endpoint_for(i),
            presence: i < w || args.presence,
            create: if agent {
                HostService::ALL.map(|kind| kind.of(&name)).to_vec()
            } else {
                Vec::new()
            },
            history: None,
            subscribe: agent.then(|| HostService::Telemetry.of(&name)),
            receive: None,
            send: None,
            name,
        }
    };
    let mut handles: Vec<_> = (0..w)
        .map(|i| ctx.spawn(plan(&ctx, i), &ready_tx))
        .collect();
    let watching = ctx.await_ready(&mut ready, w).await.len();
    let setup_clock = Instant::now();
    let clocks = Clocks::read(&ctx);
    ctx.progress.phase("connecting", (n - w) as u64);
    handles.extend((w..n).map(|i| ctx.spawn(plan(&ctx, i), &ready_tx)));
    let connected = watching + ctx.await_ready(&mut ready, n - w).await.len();
    ctx.progress.finish();
    let cpu = clocks.until(&Clocks::read(&ctx), 0);
    ctx.settle().await;
    if w > 0 {
        // Each watcher hears of the watchers after it and of every other
        // client; a client without presence hears of nobody.
        let heard = ctx.shared.broadcasts.load(Ordering::Relaxed);
        let others = if args.presence {
            (n - w) * (n - w - 1) / 2
        } else {
            0
        };
        let joins = w * (w - 1) / 2 + w * (n - w) + others;
        // With --agent-services each watcher also hears of two services
        // per client (SERVICE_CREATE_RESULT), and nobody else does.
        let creates = if args.agent_services {
            2 * w * (n - w)
        } else {
            0
        };
        ctx.notes.push(format!(
            "{w} watchers connected first; broadcast frames received: {heard} (every join{} heard by every watcher: {joins} joins + {creates} service creations = {})",
            if args.agent_services { " and service creation" } else { "" },
            joins + creates
        ));
    }
    report.setup_seconds = setup_clock.elapsed().as_secs_f64();
    let rss_after = ctx.server_rss().await;
    let own_after = system::own_rss().ok();
    if args.hold > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    }
    ctx.set_phase(STOP);
    let outcomes = join(handles).await;
    let mut latency = LatencySum::default();
    let (mut first, mut last) = (u64::MAX, 0);
    for (begun, ended) in outcomes.iter().filter_map(|o| o.setup_ns) {
        latency.record_ns(ended - begun);
        first = first.min(begun);
        last = last.max(ended);
    }
    report.connect_latency = latency.summary();
    if connected > 0 && last > first {
        report.connects_per_sec = Some(connected as f64 / ((last - first) as f64 / 1e9));
    }
    tally(&mut report, outcomes, &[])?;
    let per_conn = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) if connected > 0 => Some((a as f64 - b as f64) / connected as f64),
        _ => None,
    };
    report.memory = Some(Memory {
        server_rss_before_bytes: rss_before,
        server_rss_after_bytes: rss_after,
        server_rss_per_connection_bytes: per_conn(rss_before, rss_after),
        bench_rss_per_connection_bytes: per_conn(own_before, own_after),
    });
    report.cpu = Some(cpu);
    finish(ctx, report)
}
