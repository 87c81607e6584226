//! The `summaries` scenario (issue 26's proof): N simulated agents
//! ([`super::agent`]) join, then each sends a health summary every
//! `--interval` for `--duration`, as ten thousand hosts do whether or not
//! anyone watches. What it measures: the summaries accepted per second and
//! those refused, the gateway's CPU and memory meanwhile, the health
//! store's writes per second, and what a host's history costs in bytes per
//! day.
//!
//! Store writes come from the gateway's `/metrics` (a counter named
//! [`WRITES_METRIC`]) when it has one, else they are the summaries
//! accepted (each is one point written). The bytes per host per day come
//! from the growth over the run of Redis's `used_memory` (`--redis-url`),
//! or of the size of the health store's file (`--health-db`; its
//! write-ahead log left out), extrapolated to 24 hours; the report says
//! which. A run shorter than a few checkpoints of the log reads low.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::agent::{agent_task, gather, AgentPlan, Live};
use super::run::{finish, Clocks, Ctx};
use super::{GO, STOP};
use crate::bench::report::{Report, SummaryFigures};
use crate::bench::{system, BenchError, SummariesArgs};

/// The gateway's counter of points written to the health store.
pub const WRITES_METRIC: &str = "concierge_health_points_written_total";

/// `summaries`: see the module's doc.
pub async fn summaries(args: &SummariesArgs, scenario: &str) -> Result<Report, BenchError> {
    let n = args.agents;
    if n == 0 || args.interval <= 0.0 || args.duration <= 0.0 {
        return Err(BenchError::Usage(
            "--agents, --interval and --duration must be above 0".into(),
        ));
    }
    let interval = Duration::from_secs_f64(args.interval);
    let mut ctx = Ctx::new(&args.common, n).await?;
    let mut report = ctx.report(scenario);
    report.clients = n as u64;
    let live = Arc::new(Live::default());
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let setup_clock = Instant::now();
    ctx.progress.phase("joining", n as u64);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let plan = AgentPlan {
                index: i,
                endpoint: ctx.shared.spread.endpoint_for(i),
                name: ctx.name("host", i),
                labels: BTreeMap::new(),
                delay: Duration::ZERO,
                fails: false,
                kill: None,
                summaries: Some(interval),
            };
            tokio::spawn(agent_task(
                ctx.shared.clone(),
                live.clone(),
                plan,
                ctx.connecting(),
                ready_tx.clone(),
                ctx.shared.phase.subscribe(),
            ))
        })
        .collect();
    let up = ctx.await_ready(&mut ready, n).await.len();
    ctx.progress.finish();
    report.setup_seconds = setup_clock.elapsed().as_secs_f64();
    let mut figures = SummaryFigures {
        agents: up as u64,
        interval_secs: args.interval,
        ..SummaryFigures::default()
    };
    // Every gateway's /metrics, beside its WebSocket endpoint.
    let metrics: Vec<String> = args.common.urls.iter().map(|u| metrics_url(u)).collect();
    let writes_before = read_metric(&metrics, WRITES_METRIC).await;
    let bytes_before = stored_bytes(args).await;
    figures.server_rss_before_bytes = ctx.server_rss().await;
    let begun = Clocks::read(&ctx);
    if up > 0 {
        ctx.set_phase(GO);
        ctx.progress
            .phase("summaries", (args.duration * 10.0).round() as u64);
        let started = Instant::now();
        let run_for = Duration::from_secs_f64(args.duration);
        while started.elapsed() < run_for {
            tokio::time::sleep(Duration::from_millis(100).min(run_for)).await;
            ctx.progress
                .set((started.elapsed().as_secs_f64() * 10.0).round() as u64);
        }
        live.summaries_closed.store(true, Ordering::Relaxed);
        ctx.progress.finish();
    } else {
        ctx.notes.push("no agent joined: nothing was sent".into());
    }
    let ended = Clocks::read(&ctx);
    // The answers to the last summaries sent.
    settle_answers(&live, ctx.shared.patience).await;
    figures.server_rss_after_bytes = ctx.server_rss().await;
    let writes_after = read_metric(&metrics, WRITES_METRIC).await;
    let bytes_after = stored_bytes(args).await;
    ctx.set_phase(STOP);
    let (agents, errors) = gather(handles, &mut report).await;
    for a in &agents {
        for (reason, count) in &a.refusals {
            *figures.refusals.entry(reason.clone()).or_default() += count;
        }
        if figures.first_refusal.is_none() {
            figures.first_refusal = a.first_summary_refusal.clone();
        }
    }
    if let Some(theirs) = agents.iter().find_map(|a| a.gateway_interval) {
        figures.gateway_interval_secs = Some(theirs);
        if args.interval < theirs as f64 / 2.0 {
            ctx.notes.push(format!(
                "--interval {}s is under half the gateway's summary_interval ({theirs}s): it \
                 refuses those summaries (limit)",
                args.interval
            ));
        }
    }
    let cpu = begun.until(&ended, 0);
    let seconds = cpu.wall_seconds.max(1e-9);
    figures.seconds = cpu.wall_seconds;
    figures.sent = live.summaries_sent.load(Ordering::Relaxed);
    figures.accepted = live.summaries_accepted.load(Ordering::Relaxed);
    figures.refused = live.summaries_refused.load(Ordering::Relaxed);
    figures.unanswered = figures
        .sent
        .saturating_sub(figures.accepted + figures.refused);
    figures.accepted_per_sec = figures.accepted as f64 / seconds;
    figures.server_cpu_percent = cpu.server_cores.map(|c| c * 100.0);
    (figures.store_writes_per_sec, figures.writes_source) = match (writes_before, writes_after) {
        (Some(a), Some(b)) => (Some((b - a).max(0.0) / seconds), WRITES_METRIC.into()),
        _ => (
            Some(figures.accepted_per_sec),
            "summaries accepted (one point each)".into(),
        ),
    };
    if let (Some((a, source)), Some((b, _))) = (bytes_before, bytes_after) {
        let per_host_sec = (b - a).max(0.0) / up.max(1) as f64 / seconds;
        figures.bytes_per_host_per_day = Some(per_host_sec * 86_400.0);
        figures.bytes_source = Some(source);
    }
    report.cpu = Some(cpu);
    report.errors = errors.into_iter().take(5).collect();
    report.summaries = Some(figures);
    finish(ctx, report)
}

/// Waits (at most `patience`) until every summary sent was answered.
async fn settle_answers(live: &Live, patience: Duration) {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        let answered = live.summaries_accepted.load(Ordering::Relaxed)
            + live.summaries_refused.load(Ordering::Relaxed);
        if answered >= live.summaries_sent.load(Ordering::Relaxed) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The gateways' `/metrics` for a WebSocket URL (`ws://H:P/ws` →
/// `http://H:P/metrics`).
fn metrics_url(ws: &str) -> String {
    let rest = ws
        .strip_prefix("ws://")
        .or_else(|| ws.strip_prefix("wss://"))
        .unwrap_or(ws);
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("http://{authority}/metrics")
}

/// A counter summed over every gateway's Prometheus endpoint; none when
/// a gateway does not have it.
async fn read_metric(urls: &[String], name: &str) -> Option<f64> {
    let mut total = 0.0;
    for url in urls {
        let text = system::http_get(url).await.ok()?;
        total += metric_in(&text, name)?;
    }
    Some(total)
}

/// `name`'s value in a Prometheus text exposition (its first series).
fn metric_in(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            let labelled = key
                .strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'));
            labelled.then(|| value.parse().ok()).flatten()
        })
}

/// What the stored points take now, and how it was measured: Redis's
/// memory, or the health store's files.
async fn stored_bytes(args: &SummariesArgs) -> Option<(f64, String)> {
    if let Some(url) = &args.redis_url {
        let memory = redis_used_memory(url).await?;
        return Some((memory as f64, "Redis INFO memory used_memory growth".into()));
    }
    // The file alone: its write-ahead log is copied into it at each
    // checkpoint and then reused, so its size says how much was written
    // lately, not how much is kept.
    let db = args.health_db.as_ref()?;
    let size = std::fs::metadata(db).map_or(0, |m| m.len());
    Some((
        size as f64,
        format!("file size growth of {} (its -wal left out)", db.display()),
    ))
}

/// Redis's `used_memory`, from `INFO memory`.
async fn redis_used_memory(url: &str) -> Option<u64> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_beside_the_websocket() {
        assert_eq!(
            metrics_url("ws://127.0.0.1:8191/ws"),
            "http://127.0.0.1:8191/metrics"
        );
        let text = "# HELP x\nconcierge_health_points_written_total 1800\n\
                    concierge_health_points_written_total_max 9\nother{a=\"b\"} 3\n";
        assert_eq!(metric_in(text, WRITES_METRIC), Some(1800.0));
        assert_eq!(metric_in(text, "other"), Some(3.0));
        assert_eq!(metric_in(text, "absent"), None);
    }
}
