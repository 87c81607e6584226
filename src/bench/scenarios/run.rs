//! A run in progress, as a scenario holds it: what its client tasks
//! share, the checks and notes made before it starts, the wait for setup
//! traffic to settle, both sides' CPU clocks, and the sum of what its
//! clients counted.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use super::client::{client_task, Outcome, Plan, Ready, Sent};
use super::{SETUP, STOP};
use crate::bench::clients::Spread;
use crate::bench::report::{Cpu, Progress, Report};
use crate::bench::stats::{Counts, LatencySum};
use crate::bench::{system, BenchError, CommonArgs};

/// Longest wait for the setup traffic to die down.
const SETTLE_CAP: Duration = Duration::from_secs(900);

/// Most distinct errors a report lists.
const MAX_ERRORS: usize = 5;

/// What every client task of a run shares.
pub(super) struct Shared {
    start: Instant,
    pub(super) spread: Spread,
    pub(super) secret: String,
    pub(super) token: String,
    pub(super) patience: Duration,
    pub(super) phase: watch::Sender<u8>,
    /// Frames that were neither benchmark messages nor replies.
    pub(super) broadcasts: AtomicU64,
}

impl Shared {
    pub(super) fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// A run in progress, held by the scenario.
pub(super) struct Ctx {
    pub(super) shared: Arc<Shared>,
    common: CommonArgs,
    started_unix: u64,
    run_id: String,
    pub(super) progress: Progress,
    pub(super) notes: Vec<String>,
    /// Cores the machine kept busy just before the run.
    busy_before: Option<f64>,
    /// Broadcast frames received when the run stopped.
    broadcasts_at_stop: u64,
    semaphore: Arc<Semaphore>,
}

impl Ctx {
    pub(super) async fn new(common: &CommonArgs, connections: usize) -> Result<Ctx, BenchError> {
        let spread = Spread::new(&common.urls, &common.source_addrs).await?;
        let limit = system::raise_open_files();
        let needed = connections as u64 + 64;
        if needed > limit {
            return Err(BenchError::Usage(format!(
                "{connections} connections need about {needed} open files, and this process may \
                 open {limit}: use fewer clients per bench process"
            )));
        }
        let mut notes = Vec::new();
        for &pid in &common.server_pids {
            match system::open_files_limit(pid) {
                Some(l) if l < needed => notes.push(format!(
                    "gateway pid {pid} may open only {l} files: start it from a shell with \
                     `ulimit -n {needed}` (or more) to hold {connections} connections"
                )),
                _ => {}
            }
        }
        if common.server_pids.is_empty() && connections > 1000 {
            notes.push(format!(
                "a gateway needs an open file per connection: start it under `ulimit -n {needed}` \
                 (or more)"
            ));
        }
        // A busy machine makes every figure low: say so in the report.
        let busy_before = machine_busy_over(Duration::from_millis(500)).await;
        if let Some(busy) = busy_before.filter(|b| *b > 0.25) {
            notes.push(format!(
                "the machine was already busy before the run ({busy:.2} cores): figures may be low"
            ));
        }
        let (phase, _) = watch::channel(SETUP);
        let started_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        Ok(Ctx {
            shared: Arc::new(Shared {
                start: Instant::now(),
                spread,
                secret: common.secret.clone(),
                token: common.token.clone(),
                patience: Duration::from_secs_f64(common.timeout.max(0.1)),
                phase,
                broadcasts: AtomicU64::new(0),
            }),
            common: common.clone(),
            started_unix,
            run_id,
            progress: Progress::new(!common.json && !common.quiet),
            notes,
            busy_before,
            broadcasts_at_stop: 0,
            semaphore: Arc::new(Semaphore::new(common.concurrency.max(1))),
        })
    }

    /// This run's id, in every client name it uses.
    pub(super) fn run_id(&self) -> &str {
        &self.run_id
    }

    /// What bounds the connections set up at once (`--concurrency`), for
    /// client tasks of a scenario's own kind.
    pub(super) fn connecting(&self) -> Arc<Semaphore> {
        self.semaphore.clone()
    }

    /// A client name unique to this run.
    pub(super) fn name(&self, role: &str, i: usize) -> String {
        format!("bench_{}_{role}{i}", self.run_id)
    }

    pub(super) fn report(&self, scenario: &str) -> Report {
        Report {
            scenario: scenario.to_owned(),
            urls: self.common.urls.clone(),
            started_unix: self.started_unix,
            machine_busy_before_cores: self.busy_before,
            ..Report::default()
        }
    }

    pub(super) fn spawn(
        &self,
        plan: Plan,
        ready: &mpsc::UnboundedSender<Ready>,
    ) -> JoinHandle<Outcome> {
        tokio::spawn(client_task(
            self.shared.clone(),
            plan,
            self.semaphore.clone(),
            ready.clone(),
        ))
    }

    /// Waits for `n` clients to report on their setup; returns the indices
    /// of those that succeeded.
    pub(super) async fn await_ready(
        &self,
        rx: &mut mpsc::UnboundedReceiver<Ready>,
        n: usize,
    ) -> Vec<usize> {
        let mut up = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(ready) = rx.recv().await else {
                break;
            };
            if ready.ok {
                up.push(ready.index);
            }
            self.progress.inc();
        }
        up
    }

    /// Waits until no broadcast has arrived for `--settle-ms`.
    pub(super) async fn settle(&mut self) {
        let quiet = Duration::from_millis(self.common.settle_ms);
        let step = (quiet / 10).max(Duration::from_millis(10));
        let begun = Instant::now();
        let mut last = self.shared.broadcasts.load(Ordering::Relaxed);
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(step).await;
            let now = self.shared.broadcasts.load(Ordering::Relaxed);
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return;
            }
            if begun.elapsed() > SETTLE_CAP {
                self.notes.push(format!(
                    "setup broadcasts were still arriving after {SETTLE_CAP:?}"
                ));
                return;
            }
        }
    }

    fn server_cpu(&self) -> Option<Duration> {
        if self.common.server_pids.is_empty() {
            return None;
        }
        let mut total = Duration::ZERO;
        for &pid in &self.common.server_pids {
            total += system::process_cpu(pid).ok()?;
        }
        Some(total)
    }

    pub(super) async fn server_rss(&mut self) -> Option<u64> {
        if !self.common.server_pids.is_empty() {
            let mut total = 0;
            for &pid in &self.common.server_pids {
                total += system::process_rss(pid).ok()?;
            }
            return Some(total);
        }
        let url = self.common.metrics_url.clone()?;
        match system::metrics_rss(&url).await {
            Ok(rss) => Some(rss),
            Err(e) => {
                self.notes.push(e.to_string());
                None
            }
        }
    }

    pub(super) fn set_phase(&mut self, phase: u8) {
        if phase == STOP {
            // Clients that stop first leave, and the gateway tells the
            // others: those goodbyes are not part of the run.
            self.broadcasts_at_stop = self.shared.broadcasts.load(Ordering::Relaxed);
        }
        self.shared.phase.send_replace(phase);
    }
}

/// Cores the whole machine keeps busy over `span`.
async fn machine_busy_over(span: Duration) -> Option<f64> {
    let before = system::machine_busy()?;
    tokio::time::sleep(span).await;
    let after = system::machine_busy()?;
    Some(after.saturating_sub(before).as_secs_f64() / span.as_secs_f64())
}

/// A snapshot of both sides' CPU clocks.
pub(super) struct Clocks {
    wall: Instant,
    bench: Duration,
    server: Option<Duration>,
    machine: Option<Duration>,
}

impl Clocks {
    pub(super) fn read(ctx: &Ctx) -> Clocks {
        Clocks {
            wall: Instant::now(),
            bench: system::own_cpu(),
            server: ctx.server_cpu(),
            machine: system::machine_busy(),
        }
    }

    /// Both sides' CPU between `self` and `end`.
    pub(super) fn until(&self, end: &Clocks, deliveries: u64) -> Cpu {
        let wall = (end.wall - self.wall).as_secs_f64();
        let bench = (end.bench.saturating_sub(self.bench)).as_secs_f64();
        let server = match (self.server, end.server) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64()),
            _ => None,
        };
        let machine = match (self.machine, end.machine) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64()),
            _ => None,
        };
        let per = |s: f64| (deliveries > 0).then(|| s * 1e6 / deliveries as f64);
        Cpu {
            wall_seconds: wall,
            bench_seconds: bench,
            bench_cores: bench / wall.max(1e-9),
            bench_us_per_delivery: per(bench),
            server_seconds: server,
            server_cores: server.map(|s| s / wall.max(1e-9)),
            server_us_per_delivery: server.and_then(per),
            machine_busy_cores: machine.map(|s| s / wall.max(1e-9)),
        }
    }
}

/// Sums the outcomes of a run's clients into `report`; returns the
/// deliveries.
pub(super) fn tally(
    report: &mut Report,
    outcomes: Vec<Outcome>,
    sent: &[Sent],
) -> Result<u64, BenchError> {
    let mut errors = BTreeSet::new();
    let mut counts = Counts::default();
    let mut latency = LatencySum::default();
    let mut last_ns = 0;
    let mut receiving = false;
    for o in outcomes {
        match &o.setup_error {
            Some(e) => {
                report.connect_failures += 1;
                errors.insert(e.clone());
            }
            None => report.connected += 1,
        }
        if let Some(e) = o.error {
            errors.insert(e);
        }
        counts.acked += o.acked;
        counts.rejected += o.rejected;
        counts.malformed += o.malformed;
        report.frame_bytes = report.frame_bytes.or(o.frame_bytes);
        if let Some(r) = o.receipts {
            receiving = true;
            counts.delivered += r.delivered;
            counts.duplicated += r.duplicated;
            counts.unexpected += r.unexpected;
            last_ns = last_ns.max(r.last_ns);
            latency.add(&r.latency, r.max_latency_ns)?;
        }
    }
    let mut first_ns = u64::MAX;
    for s in sent {
        counts.sent += s.sent;
        if let Some(t) = &s.tracker {
            counts.expected += s.sent * u64::from(t.receivers());
        }
        if let Some(f) = s.first_ns {
            first_ns = first_ns.min(f);
        }
        report.stalled |= s.stalled;
        if let Some(e) = &s.error {
            errors.insert(e.clone());
        }
    }
    if receiving {
        counts.missing = counts.expected.saturating_sub(counts.delivered);
        if first_ns < last_ns {
            let seconds = (last_ns - first_ns) as f64 / 1e9;
            report.seconds = Some(seconds);
            report.deliveries_per_sec = Some(counts.delivered as f64 / seconds);
        }
        report.latency = latency.summary();
        report.counts = Some(counts.clone());
    }
    report.errors = errors.into_iter().take(MAX_ERRORS).collect();
    Ok(counts.delivered)
}

pub(super) async fn join(handles: Vec<JoinHandle<Outcome>>) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(handles.len());
    for h in handles {
        outcomes.push(h.await.unwrap_or_else(|e| Outcome {
            error: Some(format!("client task failed: {e}")),
            ..Outcome::default()
        }));
    }
    outcomes
}

pub(super) fn finish(ctx: Ctx, mut report: Report) -> Result<Report, BenchError> {
    report.broadcast_frames = ctx.broadcasts_at_stop;
    report.notes = ctx.notes;
    Ok(report)
}
