//! One job's coordinator: the task that sends each host its `run_job`,
//! collects the outcomes, writes them to the ledger and publishes them.
//!
//! It runs on the replica that holds the job's lease, as a namespace
//! member named `job_<id>` carrying the creator's user and roles (so each
//! agent authorizes and audits the creator). Its state is the ledger's:
//! it starts from the rows it is given (all queued for a new job, whatever
//! was written for a job it takes over) and every change it makes goes to
//! the ledger within [`FLUSH`]. What it does not know (a reply it lost, a
//! host it sent to before another replica took over) it asks again: a
//! host that is sent `run_job` again answers from its record, so asking
//! twice never runs twice, and the ledger never replaces a final row.
//!
//! Dispatch is a sliding window: at most `batch` (and the gateway's
//! `job_window`) hosts are sent and not yet final at once; the canary's
//! hosts go first, alone; once more than `max_failures` hosts failed, or a
//! canary did, the hosts not sent yet are `skipped`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::record::{self, Record};
use super::{now_ms, Command, Shared};
use crate::fleet::inbox::{relay, Delivery, Inbox};
use crate::namespace::{Member, Op, Outcome};
use crate::protocol::agent::{envelope, outcome, Failure, Reason, Request};
use crate::protocol::jobs::{
    CancelJob, HostOutcome, HostState, JobEvent, JobHost, JobState, RunJob, RunJobEvent,
    MAX_HOSTS_EVENT,
};
use crate::protocol::{ClientInfo, History, PayloadOut, Target};
use crate::transport::outbox::Outbox;

/// How often the coordinator dispatches, checks and writes.
pub const FLUSH: Duration = Duration::from_millis(100);

/// How often progress is published at most.
const PROGRESS: Duration = Duration::from_millis(250);

/// A host sent `run_job` that has not said it started is sent it again
/// after this long (the request or its answer was lost).
const RESEND_SENT: Duration = Duration::from_secs(5);

/// A host that said it started and has not answered is asked again after
/// this long (its answer may have been lost).
const RESEND_RUNNING: Duration = Duration::from_secs(60);

/// Beyond the job's timeout, how long a host is given to answer
/// `timed_out` itself before the coordinator decides it.
const TIMEOUT_GRACE: Duration = Duration::from_secs(15);

/// After `cancel_job`, how long a host is given to answer `cancelled`.
const CANCEL_GRACE: Duration = Duration::from_secs(30);

/// How long a finished job's coordinator stays, its service with it.
const LINGER: Duration = Duration::from_secs(1);

/// After a coordinator takes a job over, how long the hosts it finds
/// offline are given to come back (their agents reconnect after the
/// gateway or a replica went) before a job without a wait calls them
/// `offline`.
const TAKEOVER_GRACE: Duration = Duration::from_secs(30);

/// The rids of `cancel_job` requests start here (those of `run_job` are
/// host indexes).
const CANCEL_RID: usize = 1 << 40;

/// One host, as the coordinator follows it.
struct Slot {
    row: JobHost,
    /// When it was last sent `run_job`, and to which connection of it.
    sent_at: Option<Instant>,
    sent_to: Option<Uuid>,
    /// Since when the host has been disconnected while sent or running.
    absent_since: Option<Instant>,
    cancel_sent: Option<Instant>,
}

/// What ended the coordinator's run.
pub enum End {
    /// Every host is final and the job is closed.
    Finished,
    /// Another replica holds the job now, or this one is stopping: leave
    /// it as the ledger has it.
    Abandoned,
}

pub struct Coordinator {
    shared: Arc<Shared>,
    record: Record,
    slots: Vec<Slot>,
    index: HashMap<String, usize>,
    /// Queued hosts not tried yet, in dispatch order.
    pending: VecDeque<usize>,
    /// Queued hosts that were offline, waited for.
    waiting: BTreeSet<usize>,
    in_flight: usize,
    /// Hosts whose run failed (what `max_failures` counts).
    failures: usize,
    window: usize,
    canary: usize,
    dirty: BTreeSet<usize>,
    /// Hosts whose change is published once it is written: a follower
    /// that subscribes and then reads the ledger misses nothing.
    announce: BTreeSet<usize>,
    counts_changed: bool,
    last_progress: Instant,
    last_record: Instant,
    /// Until when offline hosts are waited for after a takeover.
    grace_until: Option<Instant>,
}

impl Coordinator {
    /// A coordinator of `record` with `hosts`' rows; `taken_over` when the
    /// job was coordinated before (by another replica or process).
    pub fn new(
        shared: Arc<Shared>,
        record: Record,
        hosts: Vec<JobHost>,
        taken_over: bool,
    ) -> Coordinator {
        let total = hosts.len();
        let spec = &record.info.spec;
        let window = spec
            .batch
            .map_or(total, |b| b.of(total).max(1))
            .min(shared.settings.job_window);
        let canary = spec.canary.map_or(0, |k| k as usize).min(total);
        let mut coordinator = Coordinator {
            shared,
            record,
            slots: Vec::with_capacity(total),
            index: HashMap::with_capacity(total),
            pending: VecDeque::new(),
            waiting: BTreeSet::new(),
            in_flight: 0,
            failures: 0,
            window,
            canary,
            dirty: BTreeSet::new(),
            announce: BTreeSet::new(),
            counts_changed: true,
            last_progress: Instant::now(),
            last_record: Instant::now(),
            grace_until: None,
        };
        if taken_over {
            coordinator.grace_until = Some(Instant::now() + TAKEOVER_GRACE);
        }
        for (i, row) in hosts.into_iter().enumerate() {
            coordinator.index.insert(row.host.clone(), i);
            match row.state {
                HostState::Queued => coordinator.pending.push_back(i),
                // Taken over: ask again (the agent answers from its record).
                HostState::Sent | HostState::Running => coordinator.in_flight += 1,
                state if state.failed_run(row.exit_code) => coordinator.failures += 1,
                _ => {}
            }
            coordinator.slots.push(Slot {
                row,
                sent_at: None,
                sent_to: None,
                absent_since: None,
                cancel_sent: None,
            });
        }
        // Taken over after it stopped sending: what was not sent never
        // will be (a cancel's own hosts are settled by the cancel again).
        if coordinator.record.info.stopped_by.is_some() && !coordinator.record.cancelled {
            coordinator.skip_unsent(HostState::Skipped);
        }
        coordinator
    }

    fn id(&self) -> &crate::protocol::jobs::JobId {
        &self.record.info.id
    }

    /// Runs the job until every host is final, or until another replica
    /// holds it. `ready` is told once the job's service exists (or why it
    /// could not start).
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        ready: Option<oneshot::Sender<Result<(), Failure>>>,
    ) -> End {
        let (member, mut inbox) = match self.join().await {
            Ok(joined) => joined,
            Err(failure) => {
                if let Some(ready) = ready {
                    let _ = ready.send(Err(failure));
                }
                return End::Abandoned;
            }
        };
        if let Some(ready) = ready {
            let _ = ready.send(Ok(()));
        }
        // Taken over after a cancel: finish what it began.
        if self.record.cancelled {
            self.stop_all(&member);
        }
        let mut member = member;
        let mut tick = tokio::time::interval(FLUSH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lease = tokio::time::interval(self.shared.settings.lease_ttl / 3);
        lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = loop {
            tokio::select! {
                delivery = inbox.recv() => match delivery {
                    Some(Delivery::Frame(frame)) => self.receive(&member, frame.payload()),
                    // Closed (a takeover of the name, an eviction): join
                    // again and ask the hosts in flight again.
                    gone => {
                        if let Some(Delivery::Closed(close)) = gone {
                            tracing::info!(job = %self.id(), reason = %close.reason, "the job's coordinator was closed; it joins again");
                        }
                        match self.join().await {
                            Ok((again, rx)) => {
                                member = again;
                                inbox = rx;
                                self.forget_connections();
                            }
                            Err(_) => break End::Abandoned,
                        }
                    }
                },
                command = commands.recv() => match command {
                    Some(Command::Cancel { by }) => self.cancel(&member, by),
                    None => break End::Abandoned,
                },
                _ = tick.tick() => {
                    self.dispatch(&member);
                    self.check(&member);
                    self.flush(&member, false).await;
                    if self.in_flight == 0 && self.pending.is_empty() && self.waiting.is_empty() {
                        self.finish(&member).await;
                        break End::Finished;
                    }
                }
                _ = lease.tick() => {
                    if !self.renew().await {
                        tracing::warn!(job = %self.id(), "another replica coordinates this job now");
                        break End::Abandoned;
                    }
                    if self.cancel_requested().await {
                        self.cancel(&member, None);
                    }
                }
            }
        };
        // Its followers get the end before the service goes with it.
        if let End::Finished = end {
            tokio::time::sleep(LINGER).await;
        }
        self.shared.namespace.leave(member.uuid());
        end
    }

    /// Joins the namespace as `job_<id>` and creates the job's service.
    async fn join(&self) -> Result<(Member, mpsc::Receiver<Delivery>), Failure> {
        let shared = &self.shared;
        let name = self.id().service();
        let info = ClientInfo {
            name: name.clone(),
            nickname: None,
            uuid: Uuid::new_v4(),
            tags: vec!["job".into()],
            user: self.record.info.user.clone(),
            roles: self.record.roles.clone(),
        };
        let (sink, rx) = Inbox::new(4 * self.window + 1024);
        let outbox = Outbox::new(
            info.uuid,
            sink.clone(),
            sink.control(),
            shared.namespace.overflow_recipient(),
        );
        // The name may still be held by the coordinator of a replica that
        // died, until the cluster reaps it.
        let mut tries = 0;
        let member = loop {
            let joined = shared
                .namespace
                .join(
                    info.clone(),
                    outbox.clone(),
                    String::new(),
                    false,
                    true,
                    None,
                )
                .await;
            match joined {
                Ok(member) => break member,
                Err(close) if tries < 30 => {
                    tracing::debug!(job = %self.id(), reason = %close.reason, "the job's name is held; trying again");
                    tries += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(close) => {
                    return Err(Failure::new(
                        Reason::Unavailable,
                        format!("the job's coordinator cannot join: {}", close.reason),
                    ))
                }
            }
        };
        let history = History {
            size: (self.slots.len() as u64 * 3 + 16).min(shared.settings.max_history_size),
            ttl: 3_600,
        };
        let created = member.request(
            None,
            Op::ServiceCreate {
                service: name,
                nickname: None,
                history: (history.size > 0).then_some(history),
            },
        );
        if let Outcome::Later { done, .. } = created {
            done.await;
        }
        Ok((member, rx))
    }

    /// Every host in flight is asked again on its current connection.
    fn forget_connections(&mut self) {
        for slot in &mut self.slots {
            slot.sent_to = None;
        }
    }

    /// A frame the namespace sent the coordinator.
    fn receive(&mut self, member: &Member, payload: &[u8]) {
        let Ok(PayloadOut::Message {
            origin, mut data, ..
        }) = serde_json::from_slice(payload)
        else {
            return;
        };
        let Some(rid) = data.get("rid").and_then(Value::as_u64) else {
            return;
        };
        let rid = rid as usize;
        if rid >= CANCEL_RID {
            return; // `cancel_job`'s answer: the run_job's own says the rest.
        }
        // Only the host itself answers for itself: its name is verified.
        let Some(slot) = self.slots.get(rid) else {
            return;
        };
        if origin.client.name != slot.row.host || slot.row.state.is_final() {
            return;
        }
        if let Ok(event) = RunJobEvent::deserialize(&data) {
            match event {
                RunJobEvent::JobStarted { job }
                    if &job == self.id() && self.slots[rid].row.state == HostState::Sent =>
                {
                    self.change(rid, |row, now| {
                        row.state = HostState::Running;
                        row.started_ms = Some(now);
                    });
                    self.publish_host(rid);
                }
                RunJobEvent::JobOutput { job, stream, data } if &job == self.id() => {
                    let event = JobEvent::Output {
                        job,
                        host: origin.client.name,
                        stream,
                        data,
                    };
                    self.publish(member, &event);
                }
                _ => {}
            }
            return;
        }
        let Some(msg) = data.get_mut("msg").map(Value::take) else {
            return;
        };
        match outcome(msg) {
            Ok(body) => match HostOutcome::deserialize(&body) {
                Ok(done) if &done.job == self.id() && done.state.is_final() => {
                    self.settle(rid, |row, now| record::settle(row, done, now));
                }
                _ => self.settle(rid, |row, now| {
                    fail(
                        row,
                        now,
                        Reason::Failed,
                        "the agent's answer to run_job cannot be read",
                    )
                }),
            },
            Err(failure) => self.settle(rid, |row, now| {
                let desc = match failure.reason {
                    Reason::UnknownRequest => {
                        format!("{} (an agent older than jobs?)", failure.desc)
                    }
                    _ => failure.desc,
                };
                fail(row, now, failure.reason, &desc)
            }),
        }
    }

    /// Applies a change to host `i`'s row, to be written.
    fn change(&mut self, i: usize, apply: impl FnOnce(&mut JobHost, u64)) {
        let now = now_ms();
        let row = &mut self.slots[i].row;
        apply(row, now);
        row.updated_ms = now;
        self.dirty.insert(i);
        self.counts_changed = true;
    }

    /// Host `i` reached a final state.
    fn settle(&mut self, i: usize, apply: impl FnOnce(&mut JobHost, u64)) {
        let was = self.slots[i].row.state;
        if was.is_final() {
            return;
        }
        self.change(i, apply);
        if matches!(was, HostState::Sent | HostState::Running) {
            self.in_flight -= 1;
        }
        self.waiting.remove(&i);
        let slot = &mut self.slots[i];
        slot.absent_since = None;
        let failed = slot.row.state.failed_run(slot.row.exit_code);
        self.publish_host(i);
        if failed {
            self.after_failure(i);
        }
    }

    /// Stops dispatching once failures are beyond the job's bound, or a
    /// canary failed.
    fn after_failure(&mut self, i: usize) {
        let total = self.slots.len();
        self.failures += 1;
        let failures = self.failures;
        let spec = &self.record.info.spec;
        let stopped_by = if i < self.canary {
            Some(format!("canary {} failed", self.slots[i].row.host))
        } else {
            spec.max_failures
                .filter(|max| failures > max.of(total))
                .map(|max| format!("{failures} hosts failed (max_failures {max})"))
        };
        if let Some(why) = stopped_by {
            if self.record.info.stopped_by.is_none() {
                tracing::info!(job = %self.id(), %why, "the job stops sending");
                self.record.info.stopped_by = Some(why);
            }
            self.skip_unsent(HostState::Skipped);
        }
    }

    /// Every host not sent yet ends in `state`.
    fn skip_unsent(&mut self, state: HostState) {
        let unsent: Vec<usize> = self
            .pending
            .drain(..)
            .chain(std::mem::take(&mut self.waiting))
            .collect();
        for i in unsent {
            self.change(i, |row, _| row.state = state);
        }
    }

    /// Sends hosts their `run_job` while the window has room.
    fn dispatch(&mut self, member: &Member) {
        // A full window (the usual case in a large job) costs nothing.
        if self.record.info.stopped_by.is_some() || self.in_flight >= self.window {
            return;
        }
        let now = Instant::now();
        let directory = self.shared.namespace.directory();
        let in_grace = self.grace_until.is_some_and(|until| now < until);
        let wait_over = !in_grace
            && self
                .record
                .wait_until_ms
                .is_none_or(|until| now_ms() >= until);
        // The canary's hosts alone, until every one of them is final.
        let canary_running = (0..self.canary).any(|i| !self.slots[i].row.state.is_final());
        let room = |c: &Coordinator| c.in_flight < c.window;
        let mut tried: Vec<usize> = self.waiting.iter().copied().collect();
        tried.extend(self.pending.iter().copied());
        for i in tried {
            if !room(self) {
                break;
            }
            if self.canary > 0 && canary_running && i >= self.canary {
                break;
            }
            let host = self.slots[i].row.host.clone();
            match directory.named(&host) {
                Some(agent) => {
                    let uuid = agent.info.uuid;
                    self.unqueue(i);
                    self.waiting.remove(&i);
                    self.in_flight += 1;
                    self.send(member, i, uuid, now);
                }
                None if !wait_over => {
                    self.unqueue(i);
                    self.waiting.insert(i);
                }
                None => {
                    let waited = self.record.wait_until_ms.is_some();
                    self.unqueue(i);
                    self.settle(i, |row, _| {
                        row.state = if waited {
                            HostState::Expired
                        } else {
                            HostState::Offline
                        };
                    });
                }
            }
        }
    }

    /// Takes host `i` out of the queue (dispatch takes them from its
    /// front, in order).
    fn unqueue(&mut self, i: usize) {
        if self.pending.front() == Some(&i) {
            self.pending.pop_front();
        } else {
            self.pending.retain(|p| *p != i);
        }
    }

    /// Sends host `i` its `run_job` (again), on connection `to`.
    fn send(&mut self, member: &Member, i: usize, to: Uuid, now: Instant) {
        let spec = &self.record.info.spec;
        let request = Request::RunJob(RunJob {
            job: self.record.info.id.clone(),
            request: Box::new(spec.request.clone()),
            timeout_secs: spec.timeout_secs,
            stream: spec.stream,
        });
        relay(
            member,
            Target::Uuid {
                uuid: to.to_string(),
            },
            &envelope(&request, i as u64),
        );
        let first = self.slots[i].row.state == HostState::Queued;
        let slot = &mut self.slots[i];
        slot.sent_at = Some(now);
        slot.sent_to = Some(to);
        slot.absent_since = None;
        self.change(i, |row, _| {
            row.attempts += 1;
            if first {
                row.state = HostState::Sent;
            }
        });
        if first {
            self.publish_host(i);
        }
    }

    /// The hosts in flight: asked again after a reconnection or a silence,
    /// failed once gone too long, timed out past the job's timeout.
    fn check(&mut self, member: &Member) {
        let now = Instant::now();
        let directory = self.shared.namespace.directory();
        let gone_after = Duration::from_secs(self.shared.settings.host_gone_secs);
        let timeout = self.record.info.spec.timeout_secs.map(Duration::from_secs);
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if !matches!(slot.row.state, HostState::Sent | HostState::Running) {
                continue;
            }
            let (state, sent_to, cancel_sent) = (slot.row.state, slot.sent_to, slot.cancel_sent);
            let since = slot.sent_at.map_or(Duration::MAX, |t| now - t);
            if let Some(cancelled) = cancel_sent {
                if now - cancelled > CANCEL_GRACE {
                    self.settle(i, |row, now| {
                        fail(
                            row,
                            now,
                            Reason::Timeout,
                            "cancelled; the host did not confirm it",
                        );
                        row.state = HostState::Cancelled;
                    });
                }
                continue;
            }
            if let (Some(t), Some(to)) = (timeout, sent_to) {
                if since > t + TIMEOUT_GRACE {
                    self.settle(i, |row, now| {
                        fail(
                            row,
                            now,
                            Reason::Timeout,
                            "the host did not answer within the job's timeout",
                        );
                        row.state = HostState::TimedOut;
                    });
                    self.send_cancel(member, i, to);
                    continue;
                }
            }
            let current = directory
                .named(&self.slots[i].row.host)
                .map(|a| a.info.uuid);
            match current {
                None => {
                    let absent = *self.slots[i].absent_since.get_or_insert(now);
                    if now - absent > gone_after {
                        self.settle(i, |row, now| {
                            let desc = format!(
                                "the host left during the job and did not come back within {} s",
                                gone_after.as_secs()
                            );
                            fail(row, now, Reason::Gone, &desc);
                        });
                    }
                }
                Some(uuid) => {
                    self.slots[i].absent_since = None;
                    let quiet = match state {
                        HostState::Sent => RESEND_SENT,
                        _ => RESEND_RUNNING,
                    };
                    if sent_to != Some(uuid) || since > quiet {
                        self.send(member, i, uuid, now);
                    }
                }
            }
        }
    }

    fn send_cancel(&mut self, member: &Member, i: usize, to: Uuid) {
        let request = Request::CancelJob(CancelJob {
            job: self.record.info.id.clone(),
        });
        relay(
            member,
            Target::Uuid {
                uuid: to.to_string(),
            },
            &envelope(&request, (CANCEL_RID + i) as u64),
        );
        self.slots[i].cancel_sent = Some(Instant::now());
    }

    /// Cancels the job: what waits is cancelled, what runs is told to stop.
    fn cancel(&mut self, member: &Member, by: Option<String>) {
        if self.record.cancelled {
            return;
        }
        let by = by.unwrap_or_else(|| "an operator".into());
        tracing::info!(job = %self.id(), %by, "job cancelled");
        // The job is `cancelled` once every host is final (`finish`).
        self.record.cancelled = true;
        self.record.info.stopped_by = Some(format!("cancelled by {by}"));
        self.stop_all(member);
    }

    /// A cancelled job's hosts: what waits is cancelled, what runs is
    /// told to stop (on the connection it was sent on, or the host's
    /// current one after a takeover).
    fn stop_all(&mut self, member: &Member) {
        self.skip_unsent(HostState::Cancelled);
        let directory = self.shared.namespace.directory();
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if matches!(slot.row.state, HostState::Sent | HostState::Running)
                && slot.cancel_sent.is_none()
            {
                let current = directory.named(&slot.row.host).map(|a| a.info.uuid);
                match slot.sent_to.or(current) {
                    Some(to) => self.send_cancel(member, i, to),
                    None => self.slots[i].cancel_sent = Some(Instant::now()),
                }
            }
        }
        self.counts_changed = true;
    }

    /// Writes the changed rows (and, now and then, the record) to the
    /// ledger; publishes progress.
    async fn flush(&mut self, member: &Member, last: bool) {
        let ledger = self.shared.ledger.clone();
        if !self.dirty.is_empty() {
            let dirty: Vec<usize> = self.dirty.iter().copied().collect();
            let rows = dirty
                .iter()
                .map(|&i| record::row(&self.slots[i].row))
                .collect();
            match ledger.write_hosts(self.id().as_str(), rows).await {
                Ok(written) => {
                    let written: BTreeSet<String> = written.into_iter().collect();
                    for i in dirty {
                        self.dirty.remove(&i);
                        if !written.contains(&self.slots[i].row.host) {
                            self.adopt_stored(i).await;
                        }
                    }
                    self.publish_rows(member);
                }
                Err(e) => {
                    tracing::warn!(job = %self.id(), error = %e, "cannot write the job's hosts; trying again");
                }
            }
        }
        if self.counts_changed && (last || self.last_progress.elapsed() >= PROGRESS) {
            self.counts_changed = false;
            self.last_progress = Instant::now();
            self.record.info.counts = record::counts(self.slots.iter().map(|s| &s.row));
            let event = JobEvent::Progress {
                job: self.id().clone(),
                counts: self.record.info.counts.clone(),
            };
            self.publish(member, &event);
            if last || self.last_record.elapsed() >= Duration::from_secs(1) {
                self.last_record = Instant::now();
                let active = !self.record.is_over();
                if let Err(e) = ledger
                    .update(self.id().as_str(), self.record.encode(), active)
                    .await
                {
                    tracing::warn!(job = %self.id(), error = %e, "cannot write the job's record");
                    self.counts_changed = true;
                }
            }
        }
    }

    /// The ledger kept a final row for host `i` that another coordinator
    /// wrote: it is the truth.
    async fn adopt_stored(&mut self, i: usize) {
        let host = self.slots[i].row.host.clone();
        if let Ok(Some((row, output))) = self.shared.ledger.host(self.id().as_str(), &host).await {
            if let Some(stored) = record::host(&row, output.as_deref()) {
                self.slots[i].row = stored;
                self.counts_changed = true;
            }
        }
    }

    /// Every host is final: the record says how the job ended.
    async fn finish(&mut self, member: &Member) {
        let info = &mut self.record.info;
        info.state = match (self.record.cancelled, &info.stopped_by) {
            (true, _) => JobState::Cancelled,
            (false, Some(_)) => JobState::Stopped,
            (false, None) => JobState::Finished,
        };
        info.finished_ms = Some(now_ms());
        self.counts_changed = true;
        // Until the ledger has it all: a finished job is read from there.
        loop {
            self.flush(member, true).await;
            if self.dirty.is_empty() && !self.counts_changed {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let end = JobEvent::End {
            job: Box::new(self.record.info.clone()),
        };
        self.publish(member, &end);
        tracing::info!(job = %self.id(), state = ?self.record.info.state, counts = ?self.record.info.counts, "job over");
    }

    /// Renews the job's lease; false if another replica holds it.
    async fn renew(&self) -> bool {
        let shared = &self.shared;
        // The store down: nobody else can take the job either.
        shared
            .store
            .acquire(
                super::LEASES,
                self.id().as_str(),
                &shared.holder,
                shared.settings.lease_ttl,
            )
            .await
            .unwrap_or(true)
    }

    /// Whether a cancellation was asked through another replica.
    async fn cancel_requested(&self) -> bool {
        !self.record.cancelled
            && matches!(
                self.shared
                    .store
                    .get(super::CANCELS, self.id().as_str())
                    .await,
                Ok(Some(_))
            )
    }

    /// Publishes host `i`'s change once the ledger has it.
    fn publish_host(&mut self, i: usize) {
        self.announce.insert(i);
    }

    /// Publishes the rows of the hosts that changed, written now, in
    /// events of at most [`MAX_HOSTS_EVENT`] rows.
    fn publish_rows(&mut self, member: &Member) {
        let changed: Vec<usize> = std::mem::take(&mut self.announce).into_iter().collect();
        for chunk in changed.chunks(MAX_HOSTS_EVENT) {
            let hosts = chunk
                .iter()
                .map(|&i| {
                    let mut row = self.slots[i].row.clone();
                    (row.stdout, row.stderr, row.reply) = (None, None, None);
                    row
                })
                .collect();
            let event = JobEvent::Hosts {
                job: self.id().clone(),
                hosts,
            };
            self.publish(member, &event);
        }
    }

    fn publish(&self, member: &Member, event: &JobEvent) {
        relay(
            member,
            Target::Service {
                service: self.id().service(),
            },
            &json!(event),
        );
    }
}

/// Marks a row failed with `reason`.
fn fail(row: &mut JobHost, now: u64, reason: Reason, desc: &str) {
    row.state = HostState::Failed;
    row.reason = Some(reason);
    row.desc = Some(desc.to_owned());
    row.finished_ms = Some(now);
}
