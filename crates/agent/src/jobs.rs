//! `run_job` and `cancel_job` (PROTOCOL §19.4): the agent's side of a job,
//! which runs a host request at most once however often the gateway's
//! coordinator sends it (after a reconnection, a restart of either).
//!
//! The job's id is the key. A job is recorded ([`super::job_store`])
//! before anything of it starts; a `run_job` for a job that runs attaches
//! to it (the newest [`MAX_WAITERS`] requesters get the reply when it
//! ends), one for a job that ended is answered from the record
//! (`replayed`). `execute` and `exec_command` run their process under the
//! wrapper ([`super::job_wrap`]), so that an agent that restarts finds it
//! still running, or its exit recorded, and answers with it; other
//! requests are served as ever ([`Host::serve`]) and answered `done`.
//! A process is stopped at its deadline (`timed_out`) or on `cancel_job`
//! (`cancelled`): SIGTERM to its group, SIGKILL [`KILL_AFTER`] later.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use super::commands::Host;
use super::job_store::{Record, Stop, Store, Wrapper, KEEP};
use super::job_wrap::{self, ExitFile, STDERR_FILE, STDOUT_FILE};
use super::procs::{now_ms, utf8_boundary, Spawn, CHUNK_MAX};
use super::{signals, state};
use concierge_client::Sender;
use concierge_protocol::agent::{reply, success, Envelope, Failure, Reason, Request, Rid};
use concierge_protocol::jobs::{
    HostOutcome, HostState, JobId, JobSpec, OutputStream, RunJob, RunJobEvent, MAX_JOB_SECS,
};
use concierge_protocol::{Origin, Target};

/// The most requesters waiting for one job's end: a newer one past this
/// drops the oldest, which gets no reply (its connection is most likely
/// gone: the coordinator sends again only after a reconnection).
pub const MAX_WAITERS: u64 = 4;

/// How long after SIGTERM a stopped job's group gets SIGKILL.
pub const KILL_AFTER: Duration = Duration::from_secs(5);

/// How often a streamed job's output files are read, and how many events
/// each stream may send per read (of at most [`CHUNK_MAX`] bytes).
const OUTPUT_EVERY: Duration = Duration::from_millis(250);
const EVENTS_PER_READ: usize = 4;

/// Once the process has ended, the rest of its output is sent before the
/// reply, up to this many events per stream (the reply has it all).
const EVENTS_AT_END: usize = 64;

/// How long the reply waits for the last output events.
const LAST_OUTPUT_PATIENCE: Duration = Duration::from_secs(2);

/// How long an output event may wait for the socket: longer, and the
/// stream skips to what is written now (all of it stays in the files).
const SEND_PATIENCE: Duration = Duration::from_secs(1);

/// The jobs: their records and those that run now.
pub struct Jobs {
    store: Store,
    live: RefCell<HashMap<JobId, Rc<Live>>>,
}

/// A job that runs in this agent now.
struct Live {
    /// Set once it ended.
    outcome: watch::Sender<Option<HostOutcome>>,
    /// Set by `cancel_job`.
    cancel: watch::Sender<bool>,
    /// How many requesters have waited for it; the newest
    /// [`MAX_WAITERS`] are answered.
    waiters: Cell<u64>,
    /// The newest requester, to whom events go.
    to: RefCell<Option<Requester>>,
    /// Recorded (`job_started` sent).
    started: Cell<bool>,
    /// It runs a process (cancel stops it, it counts against
    /// `max_running`); a request served in the agent cannot be stopped.
    process: Cell<bool>,
}

/// Where a `run_job`'s events and reply go.
#[derive(Clone)]
pub struct Requester {
    pub sender: Sender,
    pub target: Target,
    pub rid: Rid,
}

impl Requester {
    async fn event(&self, event: &RunJobEvent) -> bool {
        let mut data = serde_json::to_value(event).unwrap_or_default();
        if let Some(fields) = data.as_object_mut() {
            fields.insert("rid".into(), Value::Number(self.rid.clone()));
        }
        self.sender
            .message(self.target.clone(), &data)
            .await
            .is_ok()
    }

    async fn reply(&self, outcome: &HostOutcome) {
        let body = success(serde_json::to_value(outcome).unwrap_or_default());
        let _ = self
            .sender
            .message(self.target.clone(), &reply(Some(&self.rid), Ok(body)))
            .await;
    }
}

impl Jobs {
    /// Opens the records in `work_dir`: the jobs, and those that had not
    /// ended when the agent stopped (for [`recover`]).
    pub fn open(work_dir: &std::path::Path) -> Result<(Jobs, Vec<Record>), String> {
        let (store, unfinished) = Store::open(work_dir, KEEP)?;
        let jobs = Jobs {
            store,
            live: RefCell::default(),
        };
        Ok((jobs, unfinished))
    }

    fn live(&self, job: &JobId) -> Option<Rc<Live>> {
        self.live.borrow().get(job).cloned()
    }

    /// Makes `job` live (it must not be).
    fn begin(&self, job: &JobId) -> Rc<Live> {
        let live = Rc::new(Live {
            outcome: watch::channel(None).0,
            cancel: watch::channel(false).0,
            waiters: Cell::new(0),
            to: RefCell::new(None),
            started: Cell::new(false),
            process: Cell::new(false),
        });
        self.live.borrow_mut().insert(job.clone(), live.clone());
        live
    }

    /// Records `record` off the agent's thread (it syncs the disk).
    async fn save(&self, record: &Record) -> std::io::Result<()> {
        let running: HashSet<JobId> = self.live.borrow().keys().cloned().collect();
        let (store, record) = (self.store.clone(), record.clone());
        tokio::task::spawn_blocking(move || store.save(&record, &running))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Records how `record`'s job ended and answers its waiters.
    async fn finish(&self, mut record: Record, outcome: HostOutcome) {
        record.outcome = Some(outcome.clone());
        if let Err(e) = self.save(&record).await {
            // Answered all the same; a redelivery after a restart finds it
            // unfinished and answers from the exit file or as lost.
            tracing::error!(job = %record.job, error = %e, "cannot record a job's end");
        }
        if let Some(live) = self.live.borrow_mut().remove(&record.job) {
            live.outcome.send_replace(Some(outcome));
        }
    }

    /// How many jobs' processes run now.
    fn processes(&self) -> usize {
        self.live
            .borrow()
            .values()
            .filter(|l| l.process.get())
            .count()
    }
}

/// Serves one `run_job` (its own access checked): runs it if it is new,
/// else attaches to it or answers from its record.
pub async fn run_job(
    host: &Rc<Host>,
    to: Requester,
    origin: Origin,
    run: RunJob,
    audit_service: &str,
) {
    let jobs = &host.jobs;
    let (live, first) = match jobs.live(&run.job) {
        Some(live) => (live, false),
        None => match jobs.store.load(&run.job) {
            Some(Record {
                outcome: Some(mut outcome),
                ..
            }) => {
                outcome.replayed = true;
                to.reply(&outcome).await;
                return;
            }
            // Every record without an outcome is live after `recover`.
            Some(record) => {
                let outcome = lost(&record, "its record has no end and nothing runs for it");
                to.reply(&outcome).await;
                return;
            }
            None => (jobs.begin(&run.job), true),
        },
    };
    let me = live.waiters.get() + 1;
    live.waiters.set(me);
    live.to.replace(Some(to.clone()));
    if first {
        let started = start(
            host.clone(),
            origin,
            run,
            live.clone(),
            audit_service.to_owned(),
        );
        actix::spawn(started);
    } else if live.started.get() {
        to.event(&RunJobEvent::JobStarted {
            job: run.job.clone(),
        })
        .await;
    }
    let mut ended = live.outcome.subscribe();
    let Ok(outcome) = ended.wait_for(Option::is_some).await.map(|o| o.clone()) else {
        return;
    };
    if live.waiters.get() - me >= MAX_WAITERS {
        return;
    }
    if let Some(mut outcome) = outcome {
        outcome.replayed = !first;
        to.reply(&outcome).await;
    }
}

/// What a job does: a process to run under the wrapper, or a request to
/// serve in the agent.
enum Plan {
    Process(Spawn),
    Serve(Request),
}

/// The job's plan, or why it cannot run: the inner request's access and
/// arguments, the policy's checks.
fn plan(host: &Host, origin: &Origin, request: &Request) -> Result<Plan, Failure> {
    JobSpec::new(String::new(), request.clone())
        .check()
        .map_err(Failure::bad_argument)?;
    host.authorize(origin, request.name())?;
    match request {
        Request::Execute(args) => host.execute_spec(args).map(Plan::Process),
        Request::ExecCommand(args) => host.exec_command_spec(args).map(Plan::Process),
        other => Ok(Plan::Serve(other.clone())),
    }
}

/// Runs a new job to its end: checks it, records it, says it started,
/// audits it, runs it, records its end.
async fn start(host: Rc<Host>, origin: Origin, run: RunJob, live: Rc<Live>, audit: String) {
    let jobs = &host.jobs;
    let job = run.job.clone();
    let request = *run.request;
    let mut record = Record {
        job: job.clone(),
        recorded_ms: now_ms(),
        req: request.name().as_str().to_owned(),
        deadline_ms: None,
        wrapper: None,
        stop: None,
        outcome: None,
    };
    let to = || live.to.borrow().clone();
    let audited = |result: Result<Value, Failure>| {
        audit_entry(&host, &origin, &job, &request, to(), &audit, result)
    };
    let plan = match plan(&host, &origin, &request) {
        Ok(plan) => plan,
        Err(failure) => {
            audited(Err(failure.clone())).await;
            let outcome = failed(&record, failure);
            jobs.finish(record, outcome).await;
            return;
        }
    };
    let secs = run
        .timeout_secs
        .unwrap_or(host.settings.exec_timeout.as_secs())
        .clamp(1, MAX_JOB_SECS);
    if matches!(plan, Plan::Process(_)) {
        let running = jobs.processes();
        if running >= host.settings.max_running {
            let failure = Failure::new(
                Reason::Limit,
                format!(
                    "{running} jobs' processes run, the most the agent runs at once (max_running)"
                ),
            );
            audited(Err(failure.clone())).await;
            let outcome = failed(&record, failure);
            jobs.finish(record, outcome).await;
            return;
        }
        live.process.set(true);
        record.deadline_ms = Some(record.recorded_ms + secs * 1000);
    }
    if let Err(e) = jobs.save(&record).await {
        let failure = Failure::new(
            Reason::OsError,
            format!("cannot record the job, so it did not start: {e}"),
        );
        audited(Err(failure.clone())).await;
        let outcome = failed(&record, failure);
        // Not recorded: a redelivery may try again.
        if let Some(live) = jobs.live.borrow_mut().remove(&job) {
            live.outcome.send_replace(Some(outcome));
        }
        return;
    }
    if *live.cancel.borrow() {
        let outcome = ended_as(&record, HostState::Cancelled);
        jobs.finish(record, outcome).await;
        return;
    }
    live.started.set(true);
    if let Some(to) = to() {
        to.event(&RunJobEvent::JobStarted { job: job.clone() })
            .await;
    }
    audited(Ok(json!({"job": job}))).await;
    let outcome = match plan {
        Plan::Serve(request) => match host.serve(origin.client.uuid, request).await {
            Ok((body, _)) => HostOutcome {
                reply: Some(body),
                ..ended_as(&record, HostState::Done)
            },
            Err(failure) => failed(&record, failure),
        },
        Plan::Process(_) if *live.cancel.borrow() => ended_as(&record, HostState::Cancelled),
        Plan::Process(spec) => match launch(&host, &mut record, &spec).await {
            Ok(child) => supervise(&host, &live, &mut record, run.stream, wait_child(child)).await,
            Err(failure) => failed(&record, failure),
        },
    };
    jobs.finish(record, outcome).await;
}

/// Writes the audit entry of a job's request (its arguments as sent, the
/// job's id) and publishes it on the host's audit service.
async fn audit_entry(
    host: &Host,
    origin: &Origin,
    job: &JobId,
    request: &Request,
    to: Option<Requester>,
    service: &str,
    result: Result<Value, Failure>,
) {
    let sent = serde_json::to_value(request).unwrap_or_default();
    let envelope = Envelope {
        req: request.name().as_str().to_owned(),
        rid: to.as_ref().map_or(Rid::from(0), |t| t.rid.clone()),
        msg: sent
            .get("msg")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    };
    let mut entry = super::audit::Audit::entry(origin, &envelope, &result);
    if let Some(fields) = entry.as_object_mut() {
        fields.insert("job".into(), Value::from(job.as_str()));
    }
    if let Some(to) = to {
        super::publish_audit(host, &to.sender, service, entry).await;
    } else {
        host.audit.write(&entry);
    }
}

/// Starts the job's wrapper, records its pid, then lets it start the
/// process.
async fn launch(
    host: &Host,
    record: &mut Record,
    spec: &Spawn,
) -> Result<tokio::process::Child, Failure> {
    let jobs = &host.jobs;
    let dir = jobs.store.dir(&record.job);
    let cannot = |e: std::io::Error| {
        Failure::new(
            Reason::OsError,
            format!("cannot start the job's wrapper: {e}"),
        )
    };
    let mut child = job_wrap::command(&dir, spec)
        .map_err(cannot)?
        .spawn()
        .map_err(cannot)?;
    let wrapper = child.id().and_then(|pid| {
        Some(Wrapper {
            pid,
            ticks: state::start_ticks(pid)?,
        })
    });
    let Some(wrapper) = wrapper else {
        return Err(Failure::new(
            Reason::Failed,
            "the job's wrapper ended at once",
        ));
    };
    record.wrapper = Some(wrapper);
    // Without its pid recorded, the wrapper reads the end of its stdin
    // (dropped here) and starts nothing.
    jobs.save(record).await.map_err(|e| {
        Failure::new(
            Reason::OsError,
            format!("cannot record the job's process, so it did not start: {e}"),
        )
    })?;
    let go = async {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take()?;
        stdin.write_all(job_wrap::GO).await.ok()
    };
    match go.await {
        Some(()) => Ok(child),
        None => Err(Failure::new(
            Reason::Failed,
            "the job's wrapper did not take its go",
        )),
    }
}

async fn wait_child(mut child: tokio::process::Child) {
    let _ = child.wait().await;
}

/// Waits for an adopted wrapper (not this agent's child: no exit status
/// comes, only its absence).
async fn wait_adopted(wrapper: Wrapper) {
    while wrapper.alive() {
        tokio::time::sleep(state::CHECK).await;
    }
}

/// Waits for the job's process to end (`ended`), stopping it at its
/// deadline or when cancelled, and streaming its output with `stream`.
async fn supervise(
    host: &Host,
    live: &Rc<Live>,
    record: &mut Record,
    stream: bool,
    ended: impl std::future::Future<Output = ()>,
) -> HostOutcome {
    let Some(wrapper) = record.wrapper else {
        return lost(record, "no wrapper was recorded");
    };
    let streamer = stream.then(|| {
        let dir = host.jobs.store.dir(&record.job);
        let (finish, finished) = tokio::sync::oneshot::channel();
        let streaming = actix::spawn(stream_output(
            live.clone(),
            dir,
            record.job.clone(),
            finished,
        ));
        (finish, streaming)
    });
    let at = |ms: u64| {
        let from_now = Duration::from_millis(ms.saturating_sub(now_ms()).min(MAX_JOB_SECS * 2000));
        tokio::time::Instant::now() + from_now
    };
    let mut cancel = live.cancel.subscribe();
    let mut killed = false;
    tokio::pin!(ended);
    loop {
        let stop = match record.stop {
            None => {
                let deadline = at(record.deadline_ms.unwrap_or(u64::MAX));
                tokio::select! {
                    () = &mut ended => break,
                    () = tokio::time::sleep_until(deadline) => HostState::TimedOut,
                    Ok(_) = cancel.wait_for(|c| *c) => HostState::Cancelled,
                }
            }
            Some(stop) => {
                let kill = at(stop.at_ms + KILL_AFTER.as_millis() as u64);
                tokio::select! {
                    () = &mut ended => break,
                    () = tokio::time::sleep_until(kill), if !killed => {
                        killed = true;
                        let _ = signals::send_group(wrapper.pid, libc::SIGKILL);
                    }
                }
                continue;
            }
        };
        record.stop = Some(Stop {
            state: stop,
            at_ms: now_ms(),
        });
        if let Err(e) = host.jobs.save(record).await {
            tracing::warn!(job = %record.job, error = %e, "cannot record that a job is stopped");
        }
        let _ = signals::send_group(wrapper.pid, libc::SIGTERM);
    }
    // What the process wrote last goes out before the reply.
    if let Some((finish, mut streaming)) = streamer {
        let _ = finish.send(());
        if tokio::time::timeout(LAST_OUTPUT_PATIENCE, &mut streaming)
            .await
            .is_err()
        {
            streaming.abort();
        }
    }
    ended_process(&host.jobs.store, record, host.settings.job_output_bytes)
}

/// How a job's process ended, from its wrapper's exit file and output.
fn ended_process(store: &Store, record: &Record, budget: usize) -> HostOutcome {
    let dir = store.dir(&record.job);
    let stop = record.stop.map(|s| s.state);
    let mut outcome = match (ExitFile::read(&dir), stop) {
        (
            Some(ExitFile {
                error: Some((reason, desc)),
                ..
            }),
            _,
        ) => return failed(record, Failure::new(reason, desc)),
        (Some(exit), stop) => HostOutcome {
            exit_code: exit.code,
            signal: exit.signal,
            finished_ms: exit.finished_ms,
            ..ended_as(record, stop.unwrap_or(HostState::Exited))
        },
        // Stopped, and the wrapper went with its group: SIGKILL.
        (None, Some(stop)) => HostOutcome {
            signal: Some(signals::name_of(libc::SIGKILL).to_owned()),
            ..ended_as(record, stop)
        },
        // The wrapper creates the output files once told to start.
        (None, None) if !dir.join(STDOUT_FILE).exists() => lost(
            record,
            "the agent stopped before it let the process start: nothing ran",
        ),
        (None, None) => lost(
            record,
            "its wrapper ended without recording the process's exit (killed with its group?)",
        ),
    };
    outcome.stdout = Some(store.captured(&record.job, STDOUT_FILE, budget));
    outcome.stderr = Some(store.captured(&record.job, STDERR_FILE, budget));
    outcome
}

/// Sends what the job's process writes to the newest requester, as
/// `job_output` events, until `finished`: then what is left, and ends.
async fn stream_output(
    live: Rc<Live>,
    dir: std::path::PathBuf,
    job: JobId,
    mut finished: tokio::sync::oneshot::Receiver<()>,
) {
    let mut read = [0u64; 2];
    let files = [
        (STDOUT_FILE, OutputStream::Stdout),
        (STDERR_FILE, OutputStream::Stderr),
    ];
    let mut ticks = tokio::time::interval(OUTPUT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = ticks.tick() => false,
            _ = &mut finished => true,
        };
        let events = if last { EVENTS_AT_END } else { EVENTS_PER_READ };
        for ((file, stream), offset) in files.iter().zip(read.iter_mut()) {
            let path = dir.join(file);
            for _ in 0..events {
                let bytes = read_at(&path, *offset, CHUNK_MAX);
                let cut = utf8_boundary(&bytes);
                if cut == 0 {
                    break;
                }
                *offset += cut as u64;
                let event = RunJobEvent::JobOutput {
                    job: job.clone(),
                    stream: *stream,
                    data: String::from_utf8_lossy(&bytes[..cut]).into_owned(),
                };
                let Some(to) = live.to.borrow().clone() else {
                    break;
                };
                if !matches!(
                    tokio::time::timeout(SEND_PATIENCE, to.event(&event)).await,
                    Ok(true)
                ) {
                    // Backed up or gone: what it wrote so far stays in the
                    // file (and the reply), the stream goes on from here.
                    *offset = std::fs::metadata(&path).map_or(*offset, |m| m.len());
                    break;
                }
            }
        }
        if last {
            return;
        }
    }
}

/// Up to `max` bytes of `path` from `offset` (none if it cannot be read).
fn read_at(path: &std::path::Path, offset: u64, max: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        f.take(max as u64).read_to_end(&mut bytes)
    });
    if read.is_err() {
        bytes.clear();
    }
    bytes
}

/// Takes up the jobs that had not ended when the agent stopped: waits for
/// a wrapper that still runs, answers the others from their exit files
/// (or as lost).
pub fn recover(host: &Rc<Host>, unfinished: Vec<Record>) {
    for mut record in unfinished {
        let alive = record.wrapper.filter(Wrapper::alive);
        let live = host.jobs.begin(&record.job);
        live.started.set(true);
        let host = host.clone();
        actix::spawn(async move {
            let outcome = match (alive, record.wrapper) {
                (Some(wrapper), _) => {
                    live.process.set(true);
                    tracing::info!(job = %record.job, pid = wrapper.pid, "waiting for a job's process an earlier run started");
                    supervise(&host, &live, &mut record, false, wait_adopted(wrapper)).await
                }
                (None, Some(_)) => {
                    ended_process(&host.jobs.store, &record, host.settings.job_output_bytes)
                }
                (None, None) => lost(
                    &record,
                    "the agent stopped before it ended: a process had not started (nothing ran), \
                     a request served in the agent may or may not have taken effect",
                ),
            };
            host.jobs.finish(record, outcome).await;
        });
    }
}

/// `cancel_job`: stops a job's process (and answers once it ended), keeps
/// a job not started yet from starting, or says how it ended.
pub async fn cancel(host: &Host, job: &JobId) -> Result<Value, Failure> {
    let jobs = &host.jobs;
    let answer = |state: HostState| Ok(success(json!({"job": job, "state": state})));
    if let Some(live) = jobs.live(job) {
        live.cancel.send_replace(true);
        if live.started.get() && !live.process.get() {
            // A request served in the agent: it cannot be stopped.
            return answer(HostState::Running);
        }
        let mut ended = live.outcome.subscribe();
        let state = match ended.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.as_ref().map_or(HostState::Cancelled, |o| o.state),
            Err(_) => HostState::Cancelled,
        };
        return answer(state);
    }
    if let Some(record) = jobs.store.load(job) {
        return answer(record.outcome.map_or(HostState::Running, |o| o.state));
    }
    // Never sent here yet: recorded cancelled, so a late run_job finds it.
    let live = jobs.begin(job);
    live.started.set(true);
    let record = Record {
        job: job.clone(),
        recorded_ms: now_ms(),
        req: String::new(),
        deadline_ms: None,
        wrapper: None,
        stop: None,
        outcome: None,
    };
    let outcome = ended_as(&record, HostState::Cancelled);
    jobs.finish(record, outcome).await;
    answer(HostState::Cancelled)
}

/// An outcome in `state`, started when it was recorded, finished now.
fn ended_as(record: &Record, state: HostState) -> HostOutcome {
    HostOutcome::new(record.job.clone(), state, record.recorded_ms, now_ms())
}

fn failed(record: &Record, failure: Failure) -> HostOutcome {
    HostOutcome {
        reason: Some(failure.reason),
        desc: Some(failure.desc),
        ..ended_as(record, HostState::Failed)
    }
}

/// A job whose end is unknown.
fn lost(record: &Record, why: &str) -> HostOutcome {
    failed(
        record,
        Failure::new(Reason::Gone, format!("the job's process was lost: {why}")),
    )
}
