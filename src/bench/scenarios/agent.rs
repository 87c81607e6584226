//! A simulated agent of `bench jobs`: what the gateway must carry for each
//! host of a fleet, at the cost of one task and one small socket in the
//! load generator. It joins as `concierge agent` does (the `agent` tag, no
//! presence, its facts with the run's label so that the job's target
//! resolves to it), and answers `run_job` as the agent does, from memory:
//! a job seen before is answered from its record (`replayed`) and counted
//! as a redelivery, a new one is one execution (`job_started`, then the
//! outcome after `--delay`). When the run says so, it drops its socket
//! without a close frame and comes back after a short random wait with its
//! last HELLO's `resume` secret (the client library's [`Resume`]), so its
//! name is back at once, as a real agent's after a network fault.
//!
//! For `bench summaries` it also sends a health summary every interval
//! once the run says go, as the agent does (PROTOCOL §20), with plausible
//! values from a few arithmetic steps of its own pseudo-random walk
//! ([`Vitals`]): what ten thousand hosts' summaries cost the gateway, not
//! the load generator.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use concierge_client::resume::Resume;
use concierge_client::Identity;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::client::Ready;
use super::run::Shared;
use super::{GO, STOP};
use crate::auth::now_ms;
use crate::bench::clients::{classify, encode, Client, Incoming, Ws};
use crate::bench::BenchError;
use crate::protocol::agent::{
    envelope, outcome, reply, success, Envelope, Failure, GatewayRequest, Reason, Request, Rid,
};
use crate::protocol::fleet::Facts;
use crate::protocol::health::Summary;
use crate::protocol::jobs::{HostOutcome, HostState, JobId, RunJob, RunJobEvent};
use crate::protocol::{raw_json, HostKind, PayloadIn, PayloadOut, Sequenced, Target, GATEWAY_NAME};

/// The `rid`s of the agent's `facts` report and summaries (the agent's own).
const FACTS_RID: u64 = 1;
const SUMMARY_RID: u64 = 2;

/// The first wait before a refused reconnection is tried again.
const REJOIN_FIRST_WAIT: Duration = Duration::from_millis(100);

/// The phase in which the agents told to drop their sockets do: the run's
/// "go", right after the job is created.
const KILL: u8 = GO;

/// Who one simulated agent is and what it does.
pub(super) struct AgentPlan {
    pub(super) index: usize,
    pub(super) endpoint: usize,
    pub(super) name: String,
    pub(super) labels: BTreeMap<String, String>,
    /// How long each execution takes.
    pub(super) delay: Duration,
    /// Its executions exit 1 instead of 0.
    pub(super) fails: bool,
    /// It drops its socket when the run enters [`KILL`], and comes back
    /// within this long (a uniform random wait).
    pub(super) kill: Option<Duration>,
    /// It sends a summary this often from the run's go (the first at a
    /// random moment of the first interval, so the fleet's are spread).
    pub(super) summaries: Option<Duration>,
}

/// What every agent adds to as it goes, read while the run is on.
#[derive(Default)]
pub(super) struct Live {
    pub(super) executions: AtomicU64,
    pub(super) redeliveries: AtomicU64,
    /// The first outcome an agent sent, on the run's clock (0: none yet).
    pub(super) first_outcome_ns: AtomicU64,
    /// Summaries sent, and answered with success or a failure.
    pub(super) summaries_sent: AtomicU64,
    pub(super) summaries_accepted: AtomicU64,
    pub(super) summaries_refused: AtomicU64,
    /// The run's time is up: no more summaries (their answers still count).
    pub(super) summaries_closed: AtomicBool,
}

/// One job as an agent recorded it.
#[derive(Debug, Default)]
pub(super) struct Record {
    /// Times it started it: more than one is a duplicate.
    pub(super) executions: u32,
    /// `run_job`s for it after the first, answered from the record.
    pub(super) redeliveries: u32,
    /// How it ended (none while it runs).
    pub(super) outcome: Option<HostOutcome>,
    /// When it ends.
    due: Option<Instant>,
    /// The `run_job`s waiting for the end: their rid, their sender and
    /// the connection they came on.
    waiting: Vec<(Rid, Target, u32, bool)>,
}

/// Waits for every agent's task: their outcomes, counted in `report` as
/// connected or not, and the distinct errors they met.
pub(super) async fn gather(
    handles: Vec<tokio::task::JoinHandle<AgentOutcome>>,
    report: &mut crate::bench::report::Report,
) -> (Vec<AgentOutcome>, std::collections::BTreeSet<String>) {
    let mut agents = Vec::with_capacity(handles.len());
    for h in handles {
        agents.push(h.await.unwrap_or_else(|e| AgentOutcome {
            error: Some(format!("agent task failed: {e}")),
            ..AgentOutcome::default()
        }));
    }
    let mut errors = std::collections::BTreeSet::new();
    for a in &agents {
        match &a.setup_error {
            Some(e) => {
                report.connect_failures += 1;
                errors.insert(e.clone());
            }
            None => report.connected += 1,
        }
        errors.extend(a.error.clone());
    }
    (agents, errors)
}

/// What an agent hands back when the run stops.
#[derive(Default)]
pub(super) struct AgentOutcome {
    pub(super) name: String,
    pub(super) setup_error: Option<String>,
    pub(super) jobs: BTreeMap<JobId, Record>,
    /// Connections after the first.
    pub(super) reconnects: u32,
    /// Reconnections refused and tried again, and the first refusal.
    pub(super) refused_rejoins: u32,
    pub(super) first_refusal: Option<String>,
    /// Requests other than `run_job`, and frames it could not read.
    pub(super) unexpected: u64,
    /// The first error after setup (a failed reconnection, a refusal).
    pub(super) error: Option<String>,
    /// Summaries the gateway refused, by reason, and the first refusal.
    pub(super) refusals: BTreeMap<String, u64>,
    pub(super) first_summary_refusal: Option<String>,
    /// The gateway's `summary_interval`, from its answer to `facts`.
    pub(super) gateway_interval: Option<u64>,
}

/// One simulated agent.
struct Agent<'a> {
    shared: &'a Shared,
    plan: AgentPlan,
    resume: Resume,
    identity: Identity,
    /// The current connection's number: a reply goes out only on the
    /// connection its request came on.
    connection: u32,
    live: &'a Live,
    out: AgentOutcome,
    vitals: Vitals,
}

pub(super) async fn agent_task(
    shared: Arc<Shared>,
    live: Arc<Live>,
    plan: AgentPlan,
    semaphore: Arc<Semaphore>,
    ready: mpsc::UnboundedSender<Ready>,
    phase: watch::Receiver<u8>,
) -> AgentOutcome {
    let index = plan.index;
    let mut agent = Agent {
        identity: Identity {
            name: plan.name.clone(),
            tags: vec![HostKind::Agent.tag().into()],
            token: None,
            presence: false,
            take_over: true,
        },
        out: AgentOutcome {
            name: plan.name.clone(),
            ..AgentOutcome::default()
        },
        shared: &shared,
        plan,
        resume: Resume::default(),
        connection: 0,
        live: &live,
        vitals: Vitals::new(index as u64),
    };
    let joined = {
        let _permit = semaphore.acquire().await;
        agent.join().await
    };
    let ws = match joined {
        Ok(ws) => ws,
        Err(e) => {
            agent.out.setup_error = Some(e.to_string());
            let _ = ready.send(Ready { index, ok: false });
            return agent.out;
        }
    };
    agent.serve(ws, ready, phase).await;
    agent.out
}

impl Agent<'_> {
    /// Connects, identifies with the last HELLO's secret, and files its
    /// facts (answered in [`Agent::serve`]).
    async fn join(&mut self) -> Result<Ws, BenchError> {
        let ws = self
            .shared
            .spread
            .connect(self.plan.index, self.plan.endpoint)
            .await?;
        let mut identify = self.resume.identify(&self.identity);
        if let PayloadIn::Identify { secret, .. } = &mut identify {
            *secret =
                (!self.shared.secret.is_empty()).then_some(Cow::Borrowed(&self.shared.secret));
        }
        let (client, hello) = Client::handshake(ws, &self.plan.name, &identify).await?;
        self.resume.hello(&hello);
        self.connection += 1;
        let mut ws = client.ws;
        let facts = Facts {
            labels: self.plan.labels.clone(),
            agent_version: Some(env!("CARGO_PKG_VERSION").into()),
            ..Facts::default()
        };
        let report = envelope(&GatewayRequest::Facts(facts), FACTS_RID);
        ws.send(message(to_gateway(), &report)?).await?;
        Ok(ws)
    }

    /// Joins again after a drop, as the agent does: a refusal (its own
    /// earlier connection's name, which the gateway has not yet let go) is
    /// tried again, waiting 100 ms doubling, for at most `--timeout`.
    async fn rejoin(&mut self) -> Result<Ws, BenchError> {
        let deadline = Instant::now() + self.shared.patience;
        let mut wait = REJOIN_FIRST_WAIT;
        loop {
            match self.join().await {
                Ok(ws) => return Ok(ws),
                Err(e) if Instant::now() + wait < deadline => {
                    self.out.refused_rejoins += 1;
                    self.out.first_refusal.get_or_insert(e.to_string());
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Serves requests until the run stops; reports ready once its facts
    /// are filed.
    async fn serve(
        &mut self,
        mut ws: Ws,
        ready: mpsc::UnboundedSender<Ready>,
        mut phase: watch::Receiver<u8>,
    ) {
        let mut ready = Some(ready);
        let mut killed = false;
        // The next summary, once the run says go.
        let mut summary_due: Option<Instant> = None;
        loop {
            let due = self.next_due();
            let tick = until(due);
            let summary = until(summary_due);
            tokio::select! {
                next = ws.next() => match next {
                    Some(Ok(Message::Text(text))) => {
                        let sends = self.on_text(&text, &mut ready);
                        if let Err(e) = self.send_all(&mut ws, sends).await {
                            self.broke(e.to_string());
                            break;
                        }
                        if self.out.setup_error.is_some() {
                            break;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let why = frame.map(|f| format!("{} {}", u16::from(f.code), f.reason));
                        self.broke(format!("closed by the gateway: {}", why.unwrap_or_default()));
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        self.broke(format!("connection failed: {e}"));
                        break;
                    }
                    None => {
                        self.broke("connection ended".into());
                        break;
                    }
                },
                _ = tick => {
                    let sends = self.finish_due();
                    if let Err(e) = self.send_all(&mut ws, sends).await {
                        self.broke(e.to_string());
                        break;
                    }
                }
                _ = summary => {
                    if self.live.summaries_closed.load(Ordering::Relaxed) {
                        summary_due = None;
                        continue;
                    }
                    let every = self.plan.summaries.unwrap_or(Duration::MAX);
                    summary_due = summary_due.map(|at| at + every);
                    let sends = self.summary().into_iter().collect();
                    if let Err(e) = self.send_all(&mut ws, sends).await {
                        self.broke(e.to_string());
                        break;
                    }
                }
                changed = phase.changed() => {
                    let now = if changed.is_ok() { *phase.borrow_and_update() } else { STOP };
                    if now >= STOP {
                        break;
                    }
                    if now == GO && summary_due.is_none() {
                        summary_due = self
                            .plan
                            .summaries
                            .map(|every| Instant::now() + every.mul_f64(unit()));
                    }
                    if now == KILL && !killed {
                        if let Some(within) = self.plan.kill {
                            killed = true;
                            // Dropped, not closed: no close frame, as when a
                            // host's network goes.
                            drop(ws);
                            tokio::time::sleep(within.mul_f64(unit())).await;
                            match self.rejoin().await {
                                Ok(back) => ws = back,
                                Err(e) => {
                                    self.out.error.get_or_insert(format!("reconnecting: {e}"));
                                    break;
                                }
                            }
                            self.out.reconnects += 1;
                        }
                    }
                }
            }
        }
        if let Some(ready) = ready {
            // It never got its facts filed: a setup failure.
            self.out
                .setup_error
                .get_or_insert_with(|| self.out.error.clone().unwrap_or_default());
            let _ = ready.send(Ready {
                index: self.plan.index,
                ok: false,
            });
        }
    }

    fn broke(&mut self, why: String) {
        self.out.error.get_or_insert(why);
    }

    /// What a frame asks of it: the frames to send.
    fn on_text(
        &mut self,
        text: &str,
        ready: &mut Option<mpsc::UnboundedSender<Ready>>,
    ) -> Vec<Message> {
        if let Incoming::Reply { ok: true, .. } = classify(text) {
            return Vec::new();
        }
        let payload = match serde_json::from_str::<Sequenced>(text) {
            Ok(sequenced) => sequenced.payload,
            Err(_) => {
                self.out.unexpected += 1;
                return Vec::new();
            }
        };
        let PayloadOut::Message { origin, data, .. } = payload else {
            return Vec::new();
        };
        if origin.client.name == GATEWAY_NAME {
            let rid = data.get("rid").and_then(Value::as_u64);
            if rid == Some(SUMMARY_RID) {
                self.summary_answered(data.get("msg").cloned().unwrap_or_default());
            } else if rid == Some(FACTS_RID) {
                let msg = data.get("msg").cloned().unwrap_or_default();
                self.out.gateway_interval = msg.get("summary_interval").and_then(Value::as_u64);
                let filed = outcome(msg);
                if let Some(ready) = ready.take() {
                    let ok = filed.is_ok();
                    if let Err(f) = filed {
                        self.out.setup_error = Some(format!("facts not filed: {f}"));
                    }
                    let _ = ready.send(Ready {
                        index: self.plan.index,
                        ok,
                    });
                }
            }
            return Vec::new();
        }
        if Envelope::is_answer(&data) {
            return Vec::new();
        }
        let reply_to = Target::Uuid {
            uuid: origin.client.uuid.to_string(),
        };
        let request = match Envelope::decode(&data) {
            Ok(request) => request,
            Err((rid, failure)) => {
                self.out.unexpected += 1;
                return message(reply_to, &reply(rid.as_ref(), Err(failure)))
                    .into_iter()
                    .collect();
            }
        };
        match Request::parse(&request) {
            Ok(Request::RunJob(run)) => self.run_job(run, request.rid, reply_to),
            Ok(other) => {
                self.out.unexpected += 1;
                let refused = Failure::new(
                    Reason::UnknownRequest,
                    format!(
                        "a simulated agent of `concierge bench jobs` serves run_job only, not {}",
                        other.name().as_str()
                    ),
                );
                message(reply_to, &reply(Some(&request.rid), Err(refused)))
                    .into_iter()
                    .collect()
            }
            Err(failure) => {
                self.out.unexpected += 1;
                message(reply_to, &reply(Some(&request.rid), Err(failure)))
                    .into_iter()
                    .collect()
            }
        }
    }

    /// `run_job`: a job seen before is answered from its record (once it
    /// ends, if it runs); a new one starts.
    fn run_job(&mut self, run: RunJob, rid: Rid, reply_to: Target) -> Vec<Message> {
        let connection = self.connection;
        let record = self.out.jobs.entry(run.job.clone()).or_default();
        if record.executions > 0 {
            record.redeliveries += 1;
            self.live.redeliveries.fetch_add(1, Ordering::Relaxed);
            return match &record.outcome {
                Some(done) => answer(done, &rid, reply_to, true).into_iter().collect(),
                None => {
                    record.waiting.push((rid, reply_to, connection, true));
                    Vec::new()
                }
            };
        }
        record.executions += 1;
        self.live.executions.fetch_add(1, Ordering::Relaxed);
        let started = envelope(
            &RunJobEvent::JobStarted {
                job: run.job.clone(),
            },
            rid.clone(),
        );
        let mut sends: Vec<Message> = message(reply_to.clone(), &started).into_iter().collect();
        record.waiting.push((rid, reply_to, connection, false));
        record.due = Some(Instant::now() + self.plan.delay);
        if self.plan.delay.is_zero() {
            sends.extend(self.finish_due());
        }
        sends
    }

    /// This interval's summary.
    fn summary(&mut self) -> Option<Message> {
        self.live.summaries_sent.fetch_add(1, Ordering::Relaxed);
        let summary = self.vitals.next();
        message(
            to_gateway(),
            &envelope(&GatewayRequest::Summary(summary), SUMMARY_RID),
        )
        .ok()
    }

    /// The gateway's answer to a summary: counted, a refusal by reason.
    fn summary_answered(&mut self, msg: Value) {
        match outcome(msg) {
            Ok(_) => {
                self.live.summaries_accepted.fetch_add(1, Ordering::Relaxed);
            }
            Err(failure) => {
                self.live.summaries_refused.fetch_add(1, Ordering::Relaxed);
                *self
                    .out
                    .refusals
                    .entry(failure.reason.as_str().to_owned())
                    .or_default() += 1;
                self.out
                    .first_summary_refusal
                    .get_or_insert_with(|| failure.to_string());
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.out.jobs.values().filter_map(|r| r.due).min()
    }

    /// Ends the executions that are due: their outcomes, to the requests
    /// that came on this connection.
    fn finish_due(&mut self) -> Vec<Message> {
        let now = Instant::now();
        let exit_code = if self.plan.fails { 1 } else { 0 };
        let mut sends = Vec::new();
        for (job, record) in &mut self.out.jobs {
            if record.due.is_none_or(|due| due > now) {
                continue;
            }
            record.due = None;
            let finished_ms = now_ms();
            let started_ms = finished_ms.saturating_sub(self.plan.delay.as_millis() as u64);
            let done = HostOutcome {
                exit_code: Some(exit_code),
                ..HostOutcome::new(job.clone(), HostState::Exited, started_ms, finished_ms)
            };
            for (rid, to, connection, replayed) in record.waiting.drain(..) {
                if connection == self.connection {
                    sends.extend(answer(&done, &rid, to, replayed));
                }
            }
            record.outcome = Some(done);
        }
        if !sends.is_empty() {
            let at = self.shared.now_ns().max(1);
            let _ = self.live.first_outcome_ns.compare_exchange(
                0,
                at,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        sends
    }

    async fn send_all(&mut self, ws: &mut Ws, sends: Vec<Message>) -> Result<(), BenchError> {
        for frame in sends {
            ws.feed(frame).await?;
        }
        ws.flush().await?;
        Ok(())
    }
}

/// The reply to a `run_job`: the recorded outcome, `replayed` when
/// nothing ran for this request.
fn answer(done: &HostOutcome, rid: &Rid, to: Target, replayed: bool) -> Option<Message> {
    let body = HostOutcome {
        replayed,
        ..done.clone()
    };
    message(to, &reply(Some(rid), Ok(success(json!(body))))).ok()
}

/// A MESSAGE with `data` to `target`.
fn message(target: Target, data: &Value) -> Result<Message, BenchError> {
    let data = raw_json(data);
    Ok(Message::Text(encode(&PayloadIn::Message {
        target,
        data: &data,
    })?))
}

/// Sleeps until `at`; for ever without one.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A simulated host's vitals: a few steps of arithmetic per summary (a
/// xorshift generator), drifting as a real host's do, always in range.
pub(super) struct Vitals {
    state: u64,
    summary: Summary,
}

impl Vitals {
    pub(super) fn new(seed: u64) -> Vitals {
        let mut vitals = Vitals {
            // Never zero, which xorshift would keep.
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            summary: Summary::default(),
        };
        vitals.summary = Summary {
            cpu: vitals.uniform(2.0, 40.0),
            load: vitals.uniform(0.0, 2.0),
            mem: vitals.uniform(20.0, 80.0),
            disk: vitals.uniform(10.0, 90.0),
            // A quarter of the hosts on the VPN.
            vpn_age: (vitals.uniform(0.0, 4.0) < 1.0).then_some(5),
        };
        vitals
    }

    /// Uniform in `[low, high)`.
    fn uniform(&mut self, low: f32, high: f32) -> f32 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let unit = (self.state >> 40) as f32 / (1u64 << 24) as f32;
        low + (high - low) * unit
    }

    /// The next summary: each figure a small step from the last.
    pub(super) fn next(&mut self) -> Summary {
        let step = |v: &mut Vitals, value: f32, by: f32, max: f32| {
            (value + v.uniform(-by, by)).clamp(0.0, max)
        };
        let s = self.summary;
        self.summary = Summary {
            cpu: step(self, s.cpu, 8.0, 100.0),
            load: step(self, s.load, 0.3, 64.0),
            mem: step(self, s.mem, 2.0, 100.0),
            disk: step(self, s.disk, 0.05, 100.0),
            // A handshake every two minutes, as WireGuard's rekeying does.
            vpn_age: s.vpn_age.map(|age| (age + 10) % 120),
        };
        self.summary
    }
}

/// The gateway's own requests' address.
fn to_gateway() -> Target {
    Target::Name {
        name: GATEWAY_NAME.into(),
    }
}

/// A uniform random number in [0, 1).
pub(super) fn unit() -> f64 {
    f64::from(getrandom::u32().unwrap_or(0)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::Vitals;

    #[test]
    fn simulated_vitals_drift_and_stay_in_range() {
        let mut vitals = Vitals::new(7);
        let first = vitals.next();
        let mut moved = false;
        for _ in 0..10_000 {
            let s = vitals.next();
            assert_eq!(s.check(), Ok(()), "{s:?}");
            moved |= s.cpu != first.cpu;
        }
        assert!(moved);
        let on_vpn = (0..1_000)
            .filter(|i| Vitals::new(*i).next().vpn_age.is_some())
            .count();
        assert!((150..350).contains(&on_vpn), "{on_vpn} of 1000 on the VPN");
    }
}
