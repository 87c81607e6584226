//! The scenarios. Each is a set of client tasks built from a [`Plan`]: who
//! the client is, where it connects, what it sets up (a service, a
//! subscription), whose messages it receives and whom it sends to.
//!
//! A run has three phases, announced to every task through one watch
//! channel: setup (connect, identify, create or subscribe, then keep
//! reading whatever the gateway broadcasts), go (senders send), stop
//! (every task hands back what it counted). Between setup and go the run
//! waits until no broadcast has arrived for `--settle-ms`, so the measured
//! phase does not include the tail of the setup traffic.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::clients::{classify, Client, Incoming, MessageFrames, Spread};
use super::report::{Cpu, Memory, Progress, Report};
use super::stats::{Counts, LatencySum, Receipts, Tracker};
use super::system;
use super::{BenchError, CommonArgs, ConnectArgs, DirectArgs, FanoutArgs, MessageArgs};
use crate::protocol::{HostService, PayloadIn, PayloadOut, Sequenced, Target};

const SETUP: u8 = 0;
const GO: u8 = 1;
const STOP: u8 = 2;

/// Longest wait for the setup traffic to die down.
const SETTLE_CAP: Duration = Duration::from_secs(900);

/// Most distinct errors a report lists.
const MAX_ERRORS: usize = 5;

/// What every client task of a run shares.
struct Shared {
    start: Instant,
    spread: Spread,
    secret: String,
    token: String,
    patience: Duration,
    phase: watch::Sender<u8>,
    /// Frames that were neither benchmark messages nor replies.
    broadcasts: AtomicU64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// A run in progress, held by the scenario.
struct Ctx {
    shared: Arc<Shared>,
    common: CommonArgs,
    started_unix: u64,
    run_id: String,
    progress: Progress,
    notes: Vec<String>,
    /// Cores the machine kept busy just before the run.
    busy_before: Option<f64>,
    /// Broadcast frames received when the run stopped.
    broadcasts_at_stop: u64,
    semaphore: Arc<Semaphore>,
}

impl Ctx {
    async fn new(common: &CommonArgs, connections: usize) -> Result<Ctx, BenchError> {
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

    /// A client name unique to this run.
    fn name(&self, role: &str, i: usize) -> String {
        format!("bench_{}_{role}{i}", self.run_id)
    }

    fn report(&self, scenario: &str) -> Report {
        Report {
            scenario: scenario.to_owned(),
            urls: self.common.urls.clone(),
            started_unix: self.started_unix,
            machine_busy_before_cores: self.busy_before,
            ..Report::default()
        }
    }

    fn spawn(&self, plan: Plan, ready: &mpsc::UnboundedSender<Ready>) -> JoinHandle<Outcome> {
        tokio::spawn(client_task(
            self.shared.clone(),
            plan,
            self.semaphore.clone(),
            ready.clone(),
        ))
    }

    /// Waits for `n` clients to report on their setup; returns the indices
    /// of those that succeeded.
    async fn await_ready(&self, rx: &mut mpsc::UnboundedReceiver<Ready>, n: usize) -> Vec<usize> {
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
    async fn settle(&mut self) {
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

    async fn server_rss(&mut self) -> Option<u64> {
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

    fn set_phase(&mut self, phase: u8) {
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
struct Clocks {
    wall: Instant,
    bench: Duration,
    server: Option<Duration>,
    machine: Option<Duration>,
}

impl Clocks {
    fn read(ctx: &Ctx) -> Clocks {
        Clocks {
            wall: Instant::now(),
            bench: system::own_cpu(),
            server: ctx.server_cpu(),
            machine: system::machine_busy(),
        }
    }

    /// Both sides' CPU between `self` and `end`.
    fn until(&self, end: &Clocks, deliveries: u64) -> Cpu {
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

/// What a relayed benchmark MESSAGE must look like.
#[derive(Clone)]
struct Expect {
    target: Target,
    origin: String,
    service: Option<String>,
}

impl Expect {
    fn check(&self, text: &str) -> Result<(), String> {
        let parsed: Sequenced =
            serde_json::from_str(text).map_err(|e| format!("undecodable MESSAGE ({e}): {text}"))?;
        match parsed.payload {
            PayloadOut::Message { target, origin, .. }
                if target == self.target
                    && origin.client.name == self.origin
                    && origin.service.as_ref().map(|s| s.name.as_str())
                        == self.service.as_deref() =>
            {
                Ok(())
            }
            _ => Err(format!("unexpected MESSAGE envelope: {text}")),
        }
    }
}

struct Receive {
    tracker: Arc<Tracker>,
    messages: u64,
    expect: Expect,
}

struct Send {
    tracker: Arc<Tracker>,
    target: Target,
    args: MessageArgs,
    /// Where in the rate interval this sender's messages fall (0..1), so
    /// that paced senders do not all send at the same instant.
    offset: f64,
    done: mpsc::UnboundedSender<Sent>,
}

/// One client of a scenario.
struct Plan {
    index: usize,
    endpoint: usize,
    name: String,
    /// IDENTIFY's `presence`: whether it is told of joins and leaves.
    presence: bool,
    /// Services it creates, in order.
    create: Vec<String>,
    subscribe: Option<String>,
    receive: Option<Receive>,
    send: Option<Send>,
}

/// A client's report on its setup.
struct Ready {
    index: usize,
    ok: bool,
}

/// What a sender did.
#[derive(Default)]
struct Sent {
    sent: u64,
    first_ns: Option<u64>,
    stalled: bool,
    error: Option<String>,
    tracker: Option<Arc<Tracker>>,
}

/// Everything a client task counted.
#[derive(Default)]
struct Outcome {
    setup_error: Option<String>,
    /// When setup began and ended, on the run's clock.
    setup_ns: Option<(u64, u64)>,
    receipts: Option<Receipts>,
    malformed: u64,
    acked: u64,
    rejected: u64,
    frame_bytes: Option<u64>,
    error: Option<String>,
}

/// Connects, identifies and does the setup requests of `plan`.
async fn set_up(shared: &Shared, plan: &Plan) -> Result<Client, BenchError> {
    let ws = shared.spread.connect(plan.index, plan.endpoint).await?;
    let mut client =
        Client::identify(ws, &plan.name, &shared.secret, &shared.token, plan.presence).await?;
    for service in &plan.create {
        let create = PayloadIn::ServiceCreate {
            service: service.into(),
            nickname: None,
        };
        succeed(&mut client, &create).await?;
    }
    if let Some(service) = &plan.subscribe {
        let subscribe = PayloadIn::SelfSubscribe {
            service: service.into(),
        };
        succeed(&mut client, &subscribe).await?;
    }
    Ok(client)
}

/// Sends a setup request that must succeed.
async fn succeed(client: &mut Client, request: &PayloadIn<'_>) -> Result<(), BenchError> {
    match client.request(request).await? {
        PayloadOut::ServiceCreateResult {
            successful: true, ..
        }
        | PayloadOut::SelfSubscribeResult {
            successful: true, ..
        } => Ok(()),
        reply => Err(BenchError::Protocol(format!(
            "{}: {reply:?}",
            request.kind()
        ))),
    }
}

async fn client_task(
    shared: Arc<Shared>,
    mut plan: Plan,
    semaphore: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<Ready>,
) -> Outcome {
    let mut outcome = Outcome::default();
    let permit = semaphore.acquire_owned().await;
    let begun = shared.now_ns();
    let setup = set_up(&shared, &plan).await;
    let ended = shared.now_ns();
    drop(permit);
    let client = match setup {
        Ok(client) => client,
        Err(e) => {
            outcome.setup_error = Some(e.to_string());
            let _ = ready.send(Ready {
                index: plan.index,
                ok: false,
            });
            return outcome;
        }
    };
    outcome.setup_ns = Some((begun, ended));
    shared
        .broadcasts
        .fetch_add(client.skipped, Ordering::Relaxed);
    let mut inbox = Inbox {
        shared: &shared,
        receive: plan.receive.take(),
        sending: plan.send.as_ref().map(|s| s.tracker.clone()),
        receipts: None,
        verified: false,
        replies_from: client.next_seq,
        outcome,
    };
    if let Some(r) = &inbox.receive {
        inbox.receipts = Some(Receipts::new(r.messages));
    }
    // Subscribe before reporting ready: the phase may change right after.
    let phase = shared.phase.subscribe();
    let _ = ready.send(Ready {
        index: plan.index,
        ok: true,
    });
    match plan.send.take() {
        None => {
            let mut ws = client.ws;
            read_loop(&mut ws, &mut inbox, phase).await;
        }
        Some(send) => {
            let (mut sink, mut stream) = client.ws.split();
            let reading = read_loop(&mut stream, &mut inbox, phase.clone());
            // The sender reports as soon as it is done; the reader goes on
            // until the run stops.
            let sending = async {
                let sent = send_loop(&mut sink, &shared, &send, phase).await;
                let _ = send.done.send(sent);
            };
            tokio::join!(reading, sending);
        }
    }
    let Inbox {
        mut outcome,
        receipts,
        ..
    } = inbox;
    outcome.receipts = receipts;
    outcome
}

/// The receiving side of one client.
struct Inbox<'a> {
    shared: &'a Shared,
    receive: Option<Receive>,
    /// The client's own messages, when it sends.
    sending: Option<Arc<Tracker>>,
    receipts: Option<Receipts>,
    verified: bool,
    /// Replies with this `seq` or later answer the client's MESSAGEs.
    replies_from: u64,
    outcome: Outcome,
}

impl Inbox<'_> {
    fn on_text(&mut self, text: &str) {
        match classify(text) {
            Incoming::Bench { seq, sent_ns } => {
                let now = self.shared.now_ns();
                let (Some(receive), Some(receipts)) = (&self.receive, &mut self.receipts) else {
                    self.outcome.malformed += 1;
                    return;
                };
                if !self.verified {
                    self.verified = true;
                    self.outcome.frame_bytes = Some(text.len() as u64);
                    if let Err(e) = receive.expect.check(text) {
                        self.outcome.malformed += 1;
                        self.outcome.error.get_or_insert(e);
                    }
                }
                if receipts.record(seq, sent_ns, now) {
                    receive.tracker.delivered(seq);
                }
            }
            Incoming::ForeignMessage => self.outcome.malformed += 1,
            Incoming::Reply { seq, ok } if seq >= self.replies_from => {
                if let Some(t) = &self.sending {
                    t.replied();
                }
                if ok {
                    self.outcome.acked += 1;
                } else {
                    self.outcome.rejected += 1;
                    self.outcome
                        .error
                        .get_or_insert_with(|| format!("request refused: {text}"));
                }
            }
            Incoming::Reply { .. } | Incoming::Other => {
                self.shared.broadcasts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn read_loop<S>(stream: &mut S, inbox: &mut Inbox<'_>, mut phase: watch::Receiver<u8>)
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let stop = phase.wait_for(|p| *p >= STOP);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(Ok(Message::Text(text))) => inbox.on_text(&text),
                Some(Ok(Message::Close(frame))) => {
                    let why = frame
                        .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                        .unwrap_or_default();
                    inbox.outcome.error.get_or_insert(format!("closed by the gateway: {why}"));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    inbox.outcome.error.get_or_insert(format!("connection failed: {e}"));
                    break;
                }
                None => {
                    inbox.outcome.error.get_or_insert("connection ended".into());
                    break;
                }
            },
            _ = &mut stop => break,
        }
    }
}

async fn send_loop<K>(
    sink: &mut K,
    shared: &Shared,
    send: &Send,
    mut phase: watch::Receiver<u8>,
) -> Sent
where
    K: Sink<Message, Error = WsError> + Unpin,
{
    let mut out = Sent {
        tracker: Some(send.tracker.clone()),
        ..Sent::default()
    };
    if !matches!(phase.wait_for(|p| *p >= GO).await.map(|p| *p), Ok(GO)) {
        return out;
    }
    let frames = match MessageFrames::new(send.target.clone(), send.args.size) {
        Ok(frames) => frames,
        Err(e) => {
            out.error = Some(e.to_string());
            return out;
        }
    };
    let tracker = &send.tracker;
    let window = send.args.window.max(1);
    let interval_ns = (send.args.rate > 0.0).then(|| 1e9 / send.args.rate);
    let t0 = shared.now_ns() + interval_ns.map_or(0, |d| (d * send.offset) as u64);
    for i in 0..send.args.messages {
        let due = interval_ns.map(|d| t0 + (d * i as f64) as u64);
        if let Some(due) = due {
            let now = shared.now_ns();
            if due > now {
                tokio::time::sleep(Duration::from_nanos(due - now)).await;
            }
        }
        let mut held = false;
        let mode = send.args.window_mode;
        if i >= window && tracker.done(mode) < i + 1 - window {
            held = true;
            if !tracker.wait(mode, i + 1 - window, shared.patience).await {
                out.stalled = true;
                break;
            }
        }
        let now = shared.now_ns();
        let sent_ns = match due {
            Some(due) if held && now > due => due,
            _ => now,
        };
        out.first_ns.get_or_insert(sent_ns);
        if let Err(e) = sink.send(Message::Text(frames.frame(i, sent_ns))).await {
            out.error = Some(format!("send failed: {e}"));
            break;
        }
        out.sent += 1;
    }
    out
}

/// Sums the outcomes of a run's clients into `report`; returns the
/// deliveries.
fn tally(report: &mut Report, outcomes: Vec<Outcome>, sent: &[Sent]) -> Result<u64, BenchError> {
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

/// Runs the message phase: go, wait for every sender and every delivery,
/// drain, stop. Returns the senders' accounts and both sides' CPU.
async fn message_phase(
    ctx: &mut Ctx,
    senders: usize,
    trackers: Vec<Arc<Tracker>>,
    mut done: mpsc::UnboundedReceiver<Sent>,
    drain: Duration,
) -> (Vec<Sent>, Clocks, Clocks) {
    let expected: u64 = trackers.iter().map(|t| t.expected_deliveries()).sum();
    ctx.progress.phase("delivering", expected);
    let ticker = {
        let progress = ctx.progress.clone();
        let trackers = trackers.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                progress.set(trackers.iter().map(|t| t.completed_deliveries()).sum());
            }
        })
    };
    let clocks = Clocks::read(ctx);
    ctx.set_phase(GO);
    let mut sent = Vec::with_capacity(senders);
    while sent.len() < senders {
        match done.recv().await {
            Some(s) => sent.push(s),
            None => break,
        }
    }
    for s in &sent {
        if let Some(t) = &s.tracker {
            if !t.wait_complete(s.sent, ctx.shared.patience).await {
                ctx.notes.push(format!(
                    "gave up waiting for deliveries after {:?} without progress",
                    ctx.shared.patience
                ));
                break;
            }
        }
    }
    let end = Clocks::read(ctx);
    ticker.abort();
    ctx.progress.finish();
    tokio::time::sleep(drain).await;
    ctx.set_phase(STOP);
    (sent, clocks, end)
}

async fn join(handles: Vec<JoinHandle<Outcome>>) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(handles.len());
    for h in handles {
        outcomes.push(h.await.unwrap_or_else(|e| Outcome {
            error: Some(format!("client task failed: {e}")),
            ..Outcome::default()
        }));
    }
    outcomes
}

fn message_report(report: &mut Report, args: &MessageArgs, senders: usize, receivers: u64) {
    report.window = Some(args.window.max(1));
    report.window_mode = Some(args.window_mode);
    report.rate = (args.rate > 0.0).then_some(args.rate);
    report.senders = Some(senders as u64);
    report.receivers_per_message = Some(receivers);
    report.messages_per_sender = Some(args.messages);
}

/// `fanout`: K owners (one by default), each with a service; N subscribers
/// spread over the services (subscriber i on service i mod K); every owner
/// sends M messages to its service at the same time.
pub async fn fanout(args: &FanoutArgs, scenario: &str) -> Result<Report, BenchError> {
    let (n, k) = (args.subscribers, args.services.max(1));
    let mut ctx = Ctx::new(&args.common, n + k).await?;
    let mut report = ctx.report(scenario);
    report.clients = (n + k) as u64;
    let services: Vec<String> = (0..k).map(|s| ctx.name("svc", s)).collect();
    let owners: Vec<String> = (0..k).map(|s| ctx.name("owner", s)).collect();
    let trackers: Vec<Arc<Tracker>> = (0..k)
        .map(|_| Tracker::new(args.messages.messages, 0))
        .collect();
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let (done_tx, done) = mpsc::unbounded_channel();
    let setup_clock = Instant::now();
    ctx.progress.phase("connecting", (n + k) as u64);
    let mut handles = Vec::with_capacity(n + k);
    for s in 0..k {
        handles.push(ctx.spawn(
            Plan {
                index: s,
                endpoint: ctx.shared.spread.endpoint_for(s),
                name: owners[s].clone(),
                presence: true,
                create: vec![services[s].clone()],
                subscribe: None,
                receive: None,
                send: Some(Send {
                    tracker: trackers[s].clone(),
                    target: Target::Service {
                        service: services[s].clone(),
                    },
                    args: args.messages.clone(),
                    offset: s as f64 / k as f64,
                    done: done_tx.clone(),
                }),
            },
            &ready_tx,
        ));
    }
    drop(done_tx);
    if ctx.await_ready(&mut ready, k).await.len() < k {
        ctx.set_phase(STOP);
        let outcomes = join(handles).await;
        let why = outcomes
            .into_iter()
            .find_map(|o| o.setup_error)
            .unwrap_or_default();
        return Err(BenchError::Connect(format!(
            "an owner could not set up: {why}"
        )));
    }
    for i in 0..n {
        let s = i % k;
        handles.push(ctx.spawn(
            Plan {
                index: k + i,
                // The owner and the first subscriber sit on different
                // gateways when there are several.
                endpoint: ctx.shared.spread.endpoint_for(s + i / k + 1),
                name: ctx.name("sub", i),
                presence: true,
                create: Vec::new(),
                subscribe: Some(services[s].clone()),
                receive: Some(Receive {
                    tracker: trackers[s].clone(),
                    messages: args.messages.messages,
                    expect: Expect {
                        target: Target::Service {
                            service: services[s].clone(),
                        },
                        origin: owners[s].clone(),
                        service: Some(services[s].clone()),
                    },
                }),
                send: None,
            },
            &ready_tx,
        ));
    }
    let mut subscribed = vec![0u32; k];
    for index in ctx.await_ready(&mut ready, n).await {
        subscribed[(index - k) % k] += 1;
    }
    ctx.progress.finish();
    for (tracker, count) in trackers.iter().zip(&subscribed) {
        tracker.set_receivers(*count);
    }
    ctx.settle().await;
    report.setup_seconds = setup_clock.elapsed().as_secs_f64();
    let total: u64 = subscribed.iter().map(|c| u64::from(*c)).sum();
    message_report(&mut report, &args.messages, k, total / k as u64);
    let drain = Duration::from_millis(args.messages.drain_ms);
    let (sent, begun, ended) = message_phase(&mut ctx, k, trackers, done, drain).await;
    let outcomes = join(handles).await;
    let delivered = tally(&mut report, outcomes, &sent)?;
    report.cpu = Some(begun.until(&ended, delivered));
    finish(ctx, report)
}

/// `direct`: P pairs, each member sending M messages to the other by NAME.
pub async fn direct(args: &DirectArgs, scenario: &str) -> Result<Report, BenchError> {
    let clients = args.pairs * 2;
    let mut ctx = Ctx::new(&args.common, clients).await?;
    let mut report = ctx.report(scenario);
    report.clients = clients as u64;
    let names: Vec<String> = (0..clients)
        .map(|j| ctx.name(if j % 2 == 0 { "a" } else { "b" }, j / 2))
        .collect();
    let trackers: Vec<Arc<Tracker>> = (0..clients)
        .map(|_| Tracker::new(args.messages.messages, 0))
        .collect();
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let (done_tx, done) = mpsc::unbounded_channel();
    let setup_clock = Instant::now();
    ctx.progress.phase("connecting", clients as u64);
    let mut handles = Vec::with_capacity(clients);
    for j in 0..clients {
        let (pair, peer) = (j / 2, j ^ 1);
        // The two members of a pair sit on different gateways when there
        // are several.
        let endpoint = ctx.shared.spread.endpoint_for(pair + j % 2);
        handles.push(ctx.spawn(
            Plan {
                index: j,
                endpoint,
                name: names[j].clone(),
                presence: true,
                create: Vec::new(),
                subscribe: None,
                receive: Some(Receive {
                    tracker: trackers[peer].clone(),
                    messages: args.messages.messages,
                    expect: Expect {
                        target: Target::Name {
                            name: names[j].clone(),
                        },
                        origin: names[peer].clone(),
                        service: None,
                    },
                }),
                send: Some(Send {
                    tracker: trackers[j].clone(),
                    target: Target::Name {
                        name: names[peer].clone(),
                    },
                    args: args.messages.clone(),
                    offset: j as f64 / clients as f64,
                    done: done_tx.clone(),
                }),
            },
            &ready_tx,
        ));
    }
    drop(done_tx);
    let mut up = vec![false; clients];
    for j in ctx.await_ready(&mut ready, clients).await {
        up[j] = true;
    }
    ctx.progress.finish();
    for j in 0..clients {
        // A sender whose peer is not up has no one to send to.
        trackers[j].set_receivers(u32::from(up[j ^ 1]));
    }
    let senders = up.iter().filter(|u| **u).count();
    ctx.settle().await;
    report.setup_seconds = setup_clock.elapsed().as_secs_f64();
    message_report(&mut report, &args.messages, senders, 1);
    let drain = Duration::from_millis(args.messages.drain_ms);
    let (sent, begun, ended) = message_phase(&mut ctx, senders, trackers, done, drain).await;
    let outcomes = join(handles).await;
    let delivered = tally(&mut report, outcomes, &sent)?;
    report.cpu = Some(begun.until(&ended, delivered));
    finish(ctx, report)
}

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

fn finish(ctx: Ctx, mut report: Report) -> Result<Report, BenchError> {
    report.broadcast_frames = ctx.broadcasts_at_stop;
    report.notes = ctx.notes;
    Ok(report)
}
