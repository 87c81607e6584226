//! Jobs' words (PROTOCOL §19): one agent [`Request`] run once on every host
//! a target expression resolves to, with a record that outlives the
//! socket that asked for it.
//!
//! Three conversations use them, each typed here once for every side:
//!
//! * an operator (`ctl`, the console, `POST /jobs`) and the gateway:
//!   [`JobSpec`] in `job_create`, [`JobInfo`] and [`JobHost`] back from
//!   `job_get`, `jobs`, `job_cancel`, `job_output`;
//! * the gateway's coordinator and each agent: [`RunJob`] and
//!   [`CancelJob`], answered once with a [`HostOutcome`] and preceded by
//!   [`RunJobEvent`]s;
//! * the coordinator and whoever follows a job: [`JobEvent`]s on the
//!   service [`JobId::service`] (with a history, so a follower resumes).
//!
//! The job's id is also the key that makes a host run it at most once: an
//! agent that is sent `run_job` again for a job it has started answers
//! with what it recorded instead of running it again.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::agent::{Envelope, Reason, Request, RequestName};

/// Job member and event service names start with this; no client may take
/// a name with it.
pub const JOB_PREFIX: &str = "job_";

/// The most hosts one `job_get` reply lists (`limit`'s ceiling).
pub const MAX_JOB_HOSTS_PAGE: usize = 5_000;

/// The most jobs one `jobs` reply lists.
pub const MAX_JOBS_PAGE: usize = 500;

/// The most host rows one [`JobEvent::Hosts`] carries.
pub const MAX_HOSTS_EVENT: usize = 500;

/// The longest per-host timeout and offline wait a job may ask for: a day.
pub const MAX_JOB_SECS: u64 = 86_400;

/// A job's id: 12 lowercase hex digits, random.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// A new random id.
    pub fn random() -> JobId {
        JobId(uuid::Uuid::new_v4().simple().to_string()[..12].to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of the job's coordinator and of its event service:
    /// `job_<id>`.
    pub fn service(&self) -> String {
        format!("{JOB_PREFIX}{}", self.0)
    }
}

impl FromStr for JobId {
    type Err = String;

    fn from_str(s: &str) -> Result<JobId, String> {
        let s = s.strip_prefix(JOB_PREFIX).unwrap_or(s);
        if s.len() == 12
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(JobId(s.to_owned()))
        } else {
            Err(format!("{s:?} is not a job id (12 lowercase hex digits)"))
        }
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A number of hosts, or a share of them: `10` or `"10"`, `"25%"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    Hosts(u32),
    Percent(u8),
}

impl Amount {
    /// How many of `total` hosts it is: a share rounds up, so that any
    /// share of a non-empty set is at least one host.
    pub fn of(self, total: usize) -> usize {
        match self {
            Amount::Hosts(n) => n as usize,
            Amount::Percent(p) => (total * p as usize).div_ceil(100),
        }
    }
}

impl FromStr for Amount {
    type Err = String;

    fn from_str(s: &str) -> Result<Amount, String> {
        let bad = || format!("{s:?} is not a number of hosts (10) or a share of them (25%)");
        match s.trim().strip_suffix('%') {
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if (1..=100).contains(&p) => Ok(Amount::Percent(p)),
                _ => Err(bad()),
            },
            None => s
                .trim()
                .parse::<u32>()
                .map(Amount::Hosts)
                .map_err(|_| bad()),
        }
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Hosts(n) => write!(f, "{n}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Amount::Hosts(n) => s.serialize_u32(*n),
            Amount::Percent(_) => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => u32::try_from(n)
                .map(Amount::Hosts)
                .map_err(|_| serde::de::Error::custom(format!("{n} hosts is too many"))),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// `job_create` (and `POST /jobs`): what to run where, and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The target expression (§18.3) naming the hosts.
    pub target: String,
    /// The agent request each host runs: `{"req": NAME, "msg": ARGS}`
    /// (`msg` may be left out, as in any request).
    #[serde(deserialize_with = "host_request")]
    pub request: Request,
    /// Only the hosts connected now.
    #[serde(default, skip_serializing_if = "is_false")]
    pub online: bool,
    /// How long a host that is offline is waited for (default: not at
    /// all, it is `offline` at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_secs: Option<u64>,
    /// At most this many hosts run at once (a sliding window; default:
    /// all, up to the gateway's `job_window`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Amount>,
    /// Once more hosts than this failed, no more are sent it (the rest are
    /// `skipped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<Amount>,
    /// These many hosts run it first; if any fails, the rest are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<u32>,
    /// How long each host may take (default: the agent's own limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Output is published as it comes ([`JobEvent::Output`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub stream: bool,
    /// Resolve the target and answer with the hosts; create nothing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A request read as the agent reads one (an absent `msg` is no
/// arguments), its faults named as the agent names them.
fn host_request<'de, D: Deserializer<'de>>(d: D) -> Result<Request, D::Error> {
    let mut value = Value::deserialize(d)?;
    if let Some(fields) = value.as_object_mut() {
        fields.insert("rid".into(), Value::from(0));
    }
    let envelope = Envelope::decode(&value).map_err(|(_, f)| serde::de::Error::custom(f.desc))?;
    Request::parse(&envelope).map_err(|f| serde::de::Error::custom(f.desc))
}

impl JobSpec {
    /// A job to run `request` on `target`, with every option at its
    /// default.
    pub fn new(target: impl Into<String>, request: Request) -> JobSpec {
        JobSpec {
            target: target.into(),
            request,
            online: false,
            wait_secs: None,
            batch: None,
            max_failures: None,
            canary: None,
            timeout_secs: None,
            stream: false,
            dry_run: false,
        }
    }

    /// What makes no job: a request that is itself about jobs or that
    /// streams to its requester (`follow`), a zero batch, out-of-range
    /// durations.
    pub fn check(&self) -> Result<(), String> {
        match self.request.name() {
            RequestName::RunJob | RequestName::CancelJob => {
                return Err(format!(
                    "a job runs a host request, not {}",
                    self.request.name().as_str()
                ))
            }
            _ => {}
        }
        match &self.request {
            Request::Execute(e) if e.follow => {
                return Err("a job's execute waits for the exit: `follow` is not for jobs".into())
            }
            Request::ProcOutput(p) if p.follow => {
                return Err(
                    "a job's proc_output reads what there is: `follow` is not for jobs".into(),
                )
            }
            _ => {}
        }
        if self.batch == Some(Amount::Hosts(0)) {
            return Err("`batch` must be at least 1 host".into());
        }
        for (field, secs) in [
            ("wait_secs", self.wait_secs),
            ("timeout_secs", self.timeout_secs),
        ] {
            if secs.is_some_and(|s| s == 0 || s > MAX_JOB_SECS) {
                return Err(format!("`{field}` is 1 to {MAX_JOB_SECS} seconds"));
            }
        }
        Ok(())
    }
}

/// Where one host is in a job.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::EnumIter,
    strum::IntoStaticStr,
    strum::EnumString,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum HostState {
    /// Not sent yet: waiting for its turn (batch, canary) or, with a wait,
    /// for the host to connect.
    Queued,
    /// Sent; the agent has not said it started.
    Sent,
    /// The agent started it.
    Running,
    /// A process ran and exited (with `exit_code`, or a `signal`).
    Exited,
    /// A request other than a process succeeded (its `reply` kept).
    Done,
    /// The agent refused or could not run it (`reason`, `desc`).
    Failed,
    /// It took longer than the job's timeout and was stopped.
    TimedOut,
    /// The host stayed offline for all of the job's wait.
    Expired,
    /// The host was offline and the job did not wait.
    Offline,
    /// Never sent: the job stopped (failures, canary) before its turn.
    Skipped,
    /// Cancelled: stopped while it ran, or never sent.
    Cancelled,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether the host is done with the job: the state never changes
    /// again.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            HostState::Queued | HostState::Sent | HostState::Running
        )
    }

    /// Whether it counts against `max_failures` and the canary: the host
    /// ran the job, and it went wrong.
    pub fn failed_run(self, exit_code: Option<i32>) -> bool {
        match self {
            HostState::Exited => exit_code != Some(0),
            HostState::Failed | HostState::TimedOut => true,
            _ => false,
        }
    }

    /// Whether the job did not succeed on the host (what makes `ctl run`
    /// exit non-zero).
    pub fn unsuccessful(self, exit_code: Option<i32>) -> bool {
        match self {
            HostState::Exited => exit_code != Some(0),
            HostState::Done => false,
            _ => self.is_final(),
        }
    }
}

/// Where a whole job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Hosts are not all in a final state.
    Running,
    /// Every host is in a final state, the job ran its course.
    Finished,
    /// Every host is in a final state; `max_failures` or the canary
    /// stopped it early (`stopped_by` says which).
    Stopped,
    /// Every host is in a final state; it was cancelled.
    Cancelled,
}

/// What one host's process printed, bounded: all of it, or its head and
/// its tail with `omitted` bytes between them left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    pub head: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tail: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Captured {
    /// Keeps `bytes` whole if it fits `budget` bytes, else its first and
    /// last `budget / 2` (cut at character boundaries, invalid UTF-8
    /// replaced).
    pub fn keep(bytes: &[u8], budget: usize) -> Captured {
        if bytes.len() <= budget {
            return Captured {
                head: String::from_utf8_lossy(bytes).into_owned(),
                ..Captured::default()
            };
        }
        let half = budget / 2;
        let head = String::from_utf8_lossy(&bytes[..half]).into_owned();
        let tail = String::from_utf8_lossy(&bytes[bytes.len() - half..]).into_owned();
        Captured {
            head,
            tail,
            omitted: (bytes.len() - 2 * half) as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_empty() && self.tail.is_empty() && self.omitted == 0
    }

    /// The text to show: the head, a line saying how much is left out, the
    /// tail.
    pub fn text(&self) -> String {
        match self.omitted {
            0 => format!("{}{}", self.head, self.tail),
            n => format!("{}\n[… {n} bytes left out …]\n{}", self.head, self.tail),
        }
    }
}

/// `run_job` (an agent request): run `request` once for job `job`. The
/// agent records the job before it starts anything, answers once with a
/// [`HostOutcome`], and answers a second `run_job` for the same job with
/// the recorded outcome (or, while it runs, once it ends) instead of
/// running it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunJob {
    pub job: JobId,
    pub request: Box<Request>,
    /// How long it may take; the agent stops it after that (`timed_out`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Send the process's output as [`RunJobEvent::Output`] while it runs.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stream: bool,
}

/// `cancel_job` (an agent request): stop job `job`'s process if it runs
/// (SIGTERM to its group, SIGKILL 5 s later); a job not started yet is
/// recorded as cancelled, so that a late `run_job` does not start it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelJob {
    pub job: JobId,
}

/// The success reply to `run_job`: how the job ended on this host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostOutcome {
    pub job: JobId,
    /// `exited`, `done`, `failed`, `timed_out` or `cancelled`.
    pub state: HostState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the process (`SIGKILL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<Captured>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<Captured>,
    /// The success body of a request that is not a process (`done`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Value>,
    /// When it started and ended, in Unix milliseconds.
    pub started_ms: u64,
    pub finished_ms: u64,
    /// Answered from the agent's record of an earlier `run_job`: nothing
    /// ran this time.
    #[serde(default, skip_serializing_if = "is_false")]
    pub replayed: bool,
}

impl HostOutcome {
    /// An outcome in `state`, between `started_ms` and `finished_ms`, with
    /// nothing more to say yet.
    pub fn new(job: JobId, state: HostState, started_ms: u64, finished_ms: u64) -> HostOutcome {
        HostOutcome {
            job,
            state,
            exit_code: None,
            signal: None,
            reason: None,
            desc: None,
            stdout: None,
            stderr: None,
            reply: None,
            started_ms,
            finished_ms,
            replayed: false,
        }
    }
}

/// What an agent sends under a `run_job`'s rid before its reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunJobEvent {
    /// The job started on this host (it is recorded: it will not start
    /// again).
    JobStarted { job: JobId },
    /// Output of the job's process, with `stream`.
    JobOutput {
        job: JobId,
        stream: OutputStream,
        data: String,
    },
}

/// Which of a process's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// A job as `job_create`, `job_get`, `jobs` and `job_cancel` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub id: JobId,
    pub spec: JobSpec,
    /// The user who created it (none on a gateway without tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The name of the client that created it.
    pub client: String,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    pub state: JobState,
    /// What stopped it early, or who cancelled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<String>,
    /// How many hosts the target resolved to.
    pub hosts: u32,
    /// How many hosts are in each state.
    pub counts: BTreeMap<HostState, u32>,
}

impl JobInfo {
    /// The events service's name.
    pub fn service(&self) -> String {
        self.id.service()
    }

    /// How many hosts are in `state`.
    pub fn count(&self, state: HostState) -> u32 {
        self.counts.get(&state).copied().unwrap_or(0)
    }
}

/// One host of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobHost {
    pub host: String,
    pub state: HostState,
    /// When its state last changed, in Unix milliseconds.
    pub updated_ms: u64,
    /// How many times it was sent (a redelivery after the agent or the
    /// coordinator reconnected counts).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    /// A digest of its output and reply: hosts with the same printed the
    /// same. None for a host that printed nothing and replied nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Its output and reply: in `job_output` always, in `job_get` with
    /// `output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<Captured>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<Captured>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Value>,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

impl JobHost {
    /// A host not sent anything yet.
    pub fn queued(host: impl Into<String>, now_ms: u64) -> JobHost {
        JobHost {
            host: host.into(),
            state: HostState::Queued,
            updated_ms: now_ms,
            attempts: 0,
            started_ms: None,
            finished_ms: None,
            exit_code: None,
            signal: None,
            reason: None,
            desc: None,
            digest: None,
            stdout: None,
            stderr: None,
            reply: None,
        }
    }

    pub fn unsuccessful(&self) -> bool {
        self.state.unsuccessful(self.exit_code)
    }
}

/// `job_get`: a job and a page of its hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobQuery {
    pub job: JobId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// At most this many hosts (default and ceiling [`MAX_JOB_HOSTS_PAGE`];
    /// 0 lists none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Only hosts in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<HostState>,
    /// With each host's output and reply (then at most 100 hosts).
    #[serde(default, skip_serializing_if = "is_false")]
    pub output: bool,
}

/// The answer to `job_get` (and `GET /jobs/ID`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    pub job: JobInfo,
    /// Hosts sorted by name, from `offset`.
    pub hosts: Vec<JobHost>,
    /// How many hosts matched the query's `state` (all of them without).
    pub total: u64,
    pub offset: u64,
}

/// `jobs`: the latest jobs, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsQuery {
    /// At most this many (default 50, ceiling [`MAX_JOBS_PAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Only jobs created before this (Unix milliseconds): the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_ms: Option<u64>,
}

/// The answer to `jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobsPage {
    pub jobs: Vec<JobInfo>,
}

/// `job_cancel`: stop a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRef {
    pub job: JobId,
}

/// `job_output`: one host's result and output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostRef {
    pub job: JobId,
    pub host: String,
}

/// The answer to `job_create` with `dry_run`: what the target resolves to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPreview {
    /// Sorted by name.
    pub hosts: Vec<PreviewHost>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviewHost {
    pub name: String,
    pub online: bool,
}

/// What the coordinator publishes on the job's service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    /// Hosts whose state changed, as the ledger has them now (output and
    /// reply left out: `job_output`): one event for the changes written
    /// together, at most [`MAX_HOSTS_EVENT`] rows, so that a follower of a
    /// job of thousands of hosts gets a few frames a second, not one per
    /// change.
    Hosts { job: JobId, hosts: Vec<JobHost> },
    /// Output as it came, with the job's `stream`.
    Output {
        job: JobId,
        host: String,
        stream: OutputStream,
        data: String,
    },
    /// The job's counts, at most four times a second while they change.
    Progress {
        job: JobId,
        counts: BTreeMap<HostState, u32>,
    },
    /// Every host is in a final state.
    End { job: Box<JobInfo> },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::args::Execute;
    use serde_json::json;

    #[test]
    fn ids_amounts_and_states_read_as_written() {
        let id = JobId::random();
        assert_eq!(id.as_str().len(), 12);
        assert_eq!(id.service().parse::<JobId>(), Ok(id.clone()));
        assert!("xyz".parse::<JobId>().is_err());
        assert!(serde_json::from_value::<JobId>(json!("ABCDEF012345")).is_err());
        assert_eq!("25%".parse(), Ok(Amount::Percent(25)));
        assert_eq!(
            serde_json::from_value::<Amount>(json!(3)).ok(),
            Some(Amount::Hosts(3))
        );
        assert_eq!(
            serde_json::from_value::<Amount>(json!("3")).ok(),
            Some(Amount::Hosts(3))
        );
        assert!("0%".parse::<Amount>().is_err() && "101%".parse::<Amount>().is_err());
        assert_eq!(Amount::Percent(10).of(15), 2);
        assert_eq!(json!(Amount::Percent(10)), json!("10%"));
        assert_eq!(json!(HostState::TimedOut), json!("timed_out"));
        assert!(HostState::Offline.is_final() && !HostState::Sent.is_final());
        assert!(HostState::Exited.failed_run(Some(2)) && !HostState::Offline.failed_run(None));
        assert!(HostState::Offline.unsuccessful(None) && !HostState::Done.unsuccessful(None));
    }

    #[test]
    fn a_spec_reads_its_request_and_refuses_what_makes_no_job() {
        let spec: JobSpec = serde_json::from_value(json!({
            "target": "role=web",
            "request": {"req": "execute", "msg": {"cmd": ["uptime"]}},
            "batch": "10%", "wait_secs": 60
        }))
        .expect("a spec");
        assert_eq!(spec.batch, Some(Amount::Percent(10)));
        assert!(spec.check().is_ok());
        let follow = JobSpec::new(
            "a",
            Request::Execute(Execute {
                cmd: Some(vec!["true".into()]),
                follow: true,
                ..Execute::default()
            }),
        );
        assert!(follow.check().is_err());
        let nested = JobSpec::new(
            "a",
            Request::CancelJob(CancelJob {
                job: JobId::random(),
            }),
        );
        assert!(nested.check().unwrap_err().contains("cancel_job"));
        let unknown = json!({"target": "a", "request": {"req": "ping"}, "bogus": 1});
        assert!(serde_json::from_value::<JobSpec>(unknown).is_err());
        let bare = json!({"target": "a", "request": {"req": "ping"}});
        assert!(serde_json::from_value::<JobSpec>(bare).is_ok());
        let typo = json!({"target": "a", "request": {"req": "pnig"}});
        let err = serde_json::from_value::<JobSpec>(typo)
            .unwrap_err()
            .to_string();
        assert!(err.contains("pnig"), "{err}");
    }

    #[test]
    fn output_keeps_its_head_and_tail() {
        let all = Captured::keep(b"hello", 10);
        assert_eq!((all.text(), all.omitted), ("hello".into(), 0));
        let cut = Captured::keep(b"0123456789abcdef", 8);
        assert_eq!(
            (cut.head.as_str(), cut.tail.as_str(), cut.omitted),
            ("0123", "cdef", 8)
        );
        assert!(cut.text().contains("8 bytes left out"));
    }

    #[test]
    fn run_job_nests_its_request() {
        let run = Request::RunJob(RunJob {
            job: "0123456789ab".parse().unwrap(),
            request: Box::new(Request::Ping(Default::default())),
            timeout_secs: Some(5),
            stream: false,
        });
        let wire = json!(run);
        assert_eq!(
            wire,
            json!({"req": "run_job", "msg": {"job": "0123456789ab", "request": {"req": "ping", "msg": {}}, "timeout_secs": 5}})
        );
        assert_eq!(serde_json::from_value::<Request>(wire).ok(), Some(run));
    }
}
