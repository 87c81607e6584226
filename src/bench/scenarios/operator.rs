//! The operator of `bench jobs`: one client that creates the job
//! (`job_create`), follows it as a follower does (§19: subscribe to the
//! job's service, read `job_get` for a baseline, apply the `host` events
//! on top, a final state never replaced) and times it on the run's clock,
//! then reads every host's row back for the checks. `job_get` with
//! `limit: 0` is read every [`POLL_WITH_EVENTS`] as well, so that a
//! follower that missed events (its subscription came late, the service
//! was made again after a takeover) still sees the job end. Without
//! `--events` it only polls, every [`POLL`]: a large job's `host` events
//! come faster than the gateway lets a client fall behind.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::run::Shared;
use crate::auth::now_ms;
use crate::bench::clients::{classify, encode, Client, Incoming, Ws};
use crate::bench::BenchError;
use crate::protocol::agent::{envelope, outcome, Failure, GatewayRequest};
use crate::protocol::jobs::{
    HostState, JobDetail, JobEvent, JobHost, JobId, JobInfo, JobQuery, JobSpec, JobState,
    MAX_JOB_HOSTS_PAGE,
};
use crate::protocol::{raw_json, PayloadIn, PayloadOut, Sequenced, Target, GATEWAY_NAME};

/// How often the follower reads the job's counts besides its events, and
/// without them.
const POLL_WITH_EVENTS: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(100);

/// A job as the follower saw it, on the run's clock.
#[derive(Debug, Default)]
pub(super) struct Followed {
    /// When `job_create` was sent and answered.
    pub(super) sent_ns: u64,
    pub(super) created_ns: u64,
    pub(super) job: Option<JobInfo>,
    /// When an agent sent the first outcome.
    pub(super) first_outcome_ns: Option<u64>,
    /// `job_create` sent, in Unix milliseconds (the rows' clock).
    pub(super) sent_unix_ms: u64,
    /// When the follower saw every host final.
    pub(super) all_final_ns: Option<u64>,
    /// `host` events received, and the other events.
    pub(super) host_events: u64,
    pub(super) other_events: u64,
    /// A `host` event that would have taken a host that an earlier event
    /// said final back to a non-final state (a follower ignores it;
    /// counted, as it should not happen). One older than a baseline's row
    /// is not counted: the reply to `job_get` and the events travel apart.
    pub(super) regressions: u64,
    /// Every host's row at the end (`job_get`, all pages).
    pub(super) hosts: Vec<JobHost>,
    /// Why following stopped early.
    pub(super) gave_up: Option<String>,
    pub(super) notes: Vec<String>,
}

/// The operator's connection.
pub(super) struct Operator {
    shared: Arc<Shared>,
    ws: Ws,
    next_rid: u64,
    /// The job's service, once subscribed.
    service: Option<String>,
    /// Each host's state as the events and baselines said, and whether an
    /// event said it.
    states: HashMap<String, (HostState, bool)>,
    finals: u64,
    /// The job is over (its `end` event came, or a poll said so).
    ended: bool,
    /// The final hosts the last poll counted.
    polled_finals: u64,
    pub(super) followed: Followed,
}

impl Operator {
    /// Connects to gateway `endpoint` as `name` (without presence: the
    /// fleet's arrivals are not its business).
    pub(super) async fn join(
        shared: Arc<Shared>,
        endpoint: usize,
        name: &str,
    ) -> Result<Operator, BenchError> {
        let ws = shared.spread.connect(0, endpoint).await?;
        let client = Client::identify(ws, name, &shared.secret, &shared.token, false).await?;
        Ok(Operator {
            shared,
            ws: client.ws,
            next_rid: 1,
            service: None,
            states: HashMap::new(),
            finals: 0,
            ended: false,
            polled_finals: 0,
            followed: Followed::default(),
        })
    }

    /// `job_create`: the job, timed.
    pub(super) async fn create(&mut self, spec: JobSpec) -> Result<JobInfo, BenchError> {
        self.followed.sent_ns = self.shared.now_ns();
        self.followed.sent_unix_ms = now_ms();
        let body: Created = self.ask(&GatewayRequest::JobCreate(spec)).await?;
        self.followed.created_ns = self.shared.now_ns();
        self.followed.job = Some(body.job.clone());
        Ok(body.job)
    }

    /// Follows the job until every host is final, or nothing moved for
    /// `patience`, with its `events` or by polling alone; then reads every
    /// host's row.
    pub(super) async fn follow(
        &mut self,
        job: &JobInfo,
        patience: Duration,
        events: bool,
    ) -> Result<(), BenchError> {
        if events {
            let service = job.service();
            self.send(&PayloadIn::SelfSubscribe {
                service: service.as_str().into(),
                position: None,
            })
            .await?;
            self.service = Some(service);
            self.baseline(&job.id).await?;
        }
        let total = u64::from(job.hosts);
        let mut progress = (self.finals, Instant::now());
        let mut poll = tokio::time::interval(if events { POLL_WITH_EVENTS } else { POLL });
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Every host final by the events, and the job over (its `end`, or a
        // poll): then the rows are all written.
        while self.finals < total || !self.ended {
            let moved = self.finals.max(self.polled_finals) + u64::from(self.ended);
            if moved != progress.0 {
                progress = (moved, Instant::now());
            } else if progress.1.elapsed() > patience {
                self.followed.gave_up = Some(format!(
                    "{} of {total} hosts final{}, nothing more for {patience:?}",
                    self.finals.max(self.polled_finals),
                    if self.ended { "" } else { ", the job not over" }
                ));
                break;
            }
            tokio::select! {
                frame = self.ws.next() => {
                    self.on_frame(frame)?;
                }
                _ = poll.tick() => {
                    let counts: JobDetail = self
                        .ask(&GatewayRequest::JobGet(query(&job.id, 0, 0)))
                        .await?;
                    self.ended |= counts.job.state != JobState::Running;
                    self.polled_finals = counts
                        .job
                        .counts
                        .iter()
                        .filter(|(state, _)| state.is_final())
                        .map(|(_, n)| u64::from(*n))
                        .sum();
                    self.followed.job = Some(counts.job);
                }
            }
            if self.ended && self.finals < total {
                // Over, and some host events missed: the rows say.
                self.baseline(&job.id).await?;
            }
        }
        self.followed.hosts = self.rows(&job.id).await?;
        Ok(())
    }

    /// Reads every host's row and applies it as a baseline.
    async fn baseline(&mut self, job: &JobId) -> Result<(), BenchError> {
        for row in self.rows(job).await? {
            self.apply(row.host, row.state, false);
        }
        Ok(())
    }

    /// Every host's row, page by page.
    async fn rows(&mut self, job: &JobId) -> Result<Vec<JobHost>, BenchError> {
        let mut rows = Vec::new();
        loop {
            let page: JobDetail = self
                .ask(&GatewayRequest::JobGet(query(
                    job,
                    rows.len() as u64,
                    MAX_JOB_HOSTS_PAGE as u64,
                )))
                .await?;
            let done =
                page.hosts.is_empty() || rows.len() + page.hosts.len() >= page.total as usize;
            rows.extend(page.hosts);
            self.followed.job = Some(page.job);
            if done {
                return Ok(rows);
            }
        }
    }

    /// A host's state as an event or a baseline says: a final one is
    /// never replaced.
    fn apply(&mut self, host: String, state: HostState, by_event: bool) {
        match self.states.get(&host) {
            Some((old, old_by_event)) if old.is_final() => {
                if by_event && *old_by_event && !state.is_final() {
                    self.followed.regressions += 1;
                }
            }
            _ => {
                self.states.insert(host, (state, by_event));
                if state.is_final() {
                    self.finals += 1;
                    let total = self.followed.job.as_ref().map_or(0, |j| u64::from(j.hosts));
                    if self.finals == total {
                        self.followed.all_final_ns = Some(self.shared.now_ns());
                    }
                }
            }
        }
    }

    /// Sends a gateway request and waits for its answer, applying the
    /// events that come meanwhile.
    async fn ask<T: DeserializeOwned>(
        &mut self,
        request: &GatewayRequest,
    ) -> Result<T, BenchError> {
        let rid = self.next_rid;
        self.next_rid += 1;
        let data = raw_json(&envelope(request, rid));
        self.send(&PayloadIn::Message {
            target: Target::Name {
                name: GATEWAY_NAME.into(),
            },
            data: &data,
        })
        .await?;
        let deadline = Instant::now() + self.shared.patience.max(Duration::from_secs(30));
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| BenchError::Protocol(format!("no answer to {rid} in time")))?;
            if let Some(answer) = self.on_frame(frame)? {
                if answer.get("rid").and_then(Value::as_u64) == Some(rid) {
                    let msg = answer.get("msg").cloned().unwrap_or_default();
                    let body = outcome(msg).map_err(refused)?;
                    return Ok(serde_json::from_value(body)?);
                }
            }
        }
    }

    async fn send(&mut self, payload: &PayloadIn<'_>) -> Result<(), BenchError> {
        Ok(self.ws.send(Message::Text(encode(payload)?)).await?)
    }

    /// Takes a frame in: applies a job event, hands back an answer from
    /// the gateway.
    fn on_frame(
        &mut self,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<Option<Value>, BenchError> {
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                return Err(BenchError::Protocol(format!(
                    "the gateway closed the operator's connection: {}",
                    frame
                        .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                        .unwrap_or_default()
                )))
            }
            Some(Ok(_)) => return Ok(None),
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(BenchError::Protocol(
                    "the operator's connection ended".into(),
                ))
            }
        };
        if let Incoming::Reply { ok: true, .. } = classify(&text) {
            return Ok(None);
        }
        let payload = serde_json::from_str::<Sequenced>(&text)?.payload;
        match payload {
            PayloadOut::Message { origin, data, .. } if origin.client.name == GATEWAY_NAME => {
                Ok(Some(data))
            }
            PayloadOut::Message {
                target: Target::Service { service },
                data,
                ..
            } if Some(&service) == self.service.as_ref() => {
                match serde_json::from_value::<JobEvent>(data) {
                    Ok(JobEvent::Hosts { hosts, .. }) => {
                        for host in hosts {
                            self.followed.host_events += 1;
                            self.apply(host.host, host.state, true);
                        }
                    }
                    Ok(JobEvent::End { job }) => {
                        self.followed.other_events += 1;
                        self.followed.job = Some(*job);
                        self.ended = true;
                    }
                    Ok(_) => self.followed.other_events += 1,
                    Err(e) => {
                        return Err(BenchError::Protocol(format!(
                            "an event of {service} that is no JobEvent: {e}"
                        )))
                    }
                }
                Ok(None)
            }
            PayloadOut::SelfSubscribeResult {
                successful: false,
                service,
                ..
            } => {
                // Gone already (a small job over at once): the polls say the rest.
                self.followed.notes.push(format!(
                    "could not subscribe to {}: followed by polling only",
                    service.name
                ));
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}

/// `job_create`'s success body.
#[derive(serde::Deserialize)]
struct Created {
    job: JobInfo,
}

fn query(job: &JobId, offset: u64, limit: u64) -> JobQuery {
    JobQuery {
        job: job.clone(),
        offset: Some(offset),
        limit: Some(limit),
        state: None,
        output: false,
    }
}

fn refused(failure: Failure) -> BenchError {
    BenchError::Protocol(format!("the gateway refused: {failure}"))
}
