//! `run_job` and `cancel_job` (PROTOCOL §19.4), sent by hand as the
//! gateway's job coordinator sends them: a job runs at most once, however
//! often it is sent and across a SIGKILL of its agent; its process is
//! stopped at its timeout or on cancel; other requests are served and
//! answered `done`; refusals are `failed` and recorded.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::process::{command, Process};
use crate::common::{eventually, Client, PATIENCE};
use crate::Fleet;
use concierge_protocol::agent::args::{Execute, NoArgs};
use concierge_protocol::agent::{envelope, Request};
use concierge_protocol::jobs::{
    CancelJob, HostOutcome, HostState, JobId, OutputStream, RunJob, RunJobEvent,
};

/// How long a job's reply may take: a stopped job is killed 5 s after
/// SIGTERM.
const JOB_PATIENCE: Duration = Duration::from_secs(20);

/// `execute` of `sh -c SCRIPT` (in the agent's work folder).
fn sh(script: &str) -> Request {
    Request::Execute(Execute {
        cmd: Some(vec!["sh".into(), "-c".into(), script.into()]),
        ..Execute::default()
    })
}

/// Sends `run_job` for `job` as `rid` to host1.
async fn send_run(client: &mut Inbox, rid: u64, job: &JobId, request: Request, stream: bool) {
    send(
        client,
        rid,
        &Request::RunJob(RunJob {
            job: job.clone(),
            request: Box::new(request),
            timeout_secs: None,
            stream,
        }),
    )
    .await;
}

async fn send(client: &mut Inbox, rid: u64, request: &Request) {
    client
        .client
        .send(
            json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "host1"},
            "data": envelope(request, rid)}),
        )
        .await;
}

/// The next event under `rid` (other rids' messages are skipped).
async fn event(client: &mut Inbox, rid: u64) -> RunJobEvent {
    loop {
        let data = message(client, rid).await;
        if data.get("event").is_some() {
            return serde_json::from_value(data.clone()).unwrap_or_else(|e| panic!("{e}: {data}"));
        }
    }
}

/// The events under `rid` and then its reply, as a run_job's outcome.
async fn outcome(client: &mut Inbox, rid: u64) -> (Vec<RunJobEvent>, HostOutcome) {
    let mut events = Vec::new();
    loop {
        let data = message(client, rid).await;
        if data.get("event").is_some() {
            events.push(serde_json::from_value(data).expect("an event"));
            continue;
        }
        let msg = &data["msg"];
        assert_eq!(msg["result"], "success", "{data}");
        let outcome = serde_json::from_value(msg.clone()).unwrap_or_else(|e| panic!("{e}: {msg}"));
        return (events, outcome);
    }
}

/// The data of the next MESSAGE under `rid`; those under other rids are
/// kept for later.
async fn message(client: &mut Inbox, rid: u64) -> Value {
    if let Some(at) = client.held.iter().position(|d| d["rid"] == rid) {
        return client.held.remove(at);
    }
    loop {
        let payload = client.client.recv_within(JOB_PATIENCE).await;
        if payload["type"] == "MESSAGE" && payload["data"]["rid"] == rid {
            return payload["data"].clone();
        }
        if payload["type"] == "MESSAGE" && payload["data"]["rid"].is_u64() {
            client.held.push(payload["data"].clone());
        }
    }
}

/// A client and the messages it received that were not read yet.
struct Inbox {
    client: Client,
    held: Vec<Value>,
}

/// An operator's client.
async fn alice(fleet: &Fleet) -> Inbox {
    Inbox {
        client: fleet.client("alice_c", &fleet.alice).await,
        held: Vec::new(),
    }
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[tokio::test]
async fn a_job_runs_once_keeps_its_output_and_a_redelivery_is_replayed() {
    let fleet = Fleet::with_config("job_output_bytes = 64").await;
    let mut alice = alice(&fleet).await;
    let job = JobId::random();
    let script = "echo ran >> counter; printf 'H%.0s' $(seq 100); echo oops >&2; exit 3";
    send_run(&mut alice, 1, &job, sh(script), false).await;
    let (events, first) = outcome(&mut alice, 1).await;
    assert_eq!(events, [RunJobEvent::JobStarted { job: job.clone() }]);
    assert_eq!(
        (first.state, first.exit_code, first.replayed),
        (HostState::Exited, Some(3), false),
        "{first:?}"
    );
    let stdout = first.stdout.clone().expect("stdout");
    assert_eq!(
        (stdout.head.len(), stdout.tail.len(), stdout.omitted),
        (32, 32, 36)
    );
    assert_eq!(
        first.stderr.as_ref().map(|e| e.head.as_str()),
        Some("oops\n")
    );
    let record = fleet
        .work
        .path()
        .join("jobs")
        .join(job.as_str())
        .join("record.json");
    assert!(record.is_file(), "{}", record.display());

    // Sent again: the recorded outcome, nothing run again.
    send_run(&mut alice, 2, &job, sh(script), false).await;
    let (events, again) = outcome(&mut alice, 2).await;
    assert!(events.is_empty(), "{events:?}");
    assert!(again.replayed);
    assert_eq!(
        HostOutcome {
            replayed: false,
            ..again
        },
        first
    );
    assert_eq!(lines(&fleet.work.path().join("counter")), 1);

    // Audited once, under the job.
    let audit = std::fs::read_to_string(fleet.work.path().join("audit.log")).expect("audit");
    let entries: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &Value| e["job"] == job.as_str())
        .collect();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(
        (&entries[0]["req"], &entries[0]["user"]),
        (&json!("execute"), &json!("alice"))
    );
}

#[tokio::test]
async fn a_redelivery_while_it_runs_attaches_and_output_streams() {
    let fleet = Fleet::start().await;
    let mut alice = alice(&fleet).await;
    let job = JobId::random();
    let script =
        "echo ran >> counter; echo begun; while [ ! -e go ]; do sleep 0.05; done; echo done";
    send_run(&mut alice, 1, &job, sh(script), true).await;
    assert_eq!(
        event(&mut alice, 1).await,
        RunJobEvent::JobStarted { job: job.clone() }
    );
    let streamed = event(&mut alice, 1).await;
    assert_eq!(
        streamed,
        RunJobEvent::JobOutput {
            job: job.clone(),
            stream: OutputStream::Stdout,
            data: "begun\n".into()
        }
    );
    send_run(&mut alice, 2, &job, sh(script), false).await;
    assert_eq!(
        event(&mut alice, 2).await,
        RunJobEvent::JobStarted { job: job.clone() }
    );
    std::fs::write(fleet.work.path().join("go"), "").expect("go");
    let (_, first) = outcome(&mut alice, 1).await;
    let (_, attached) = outcome(&mut alice, 2).await;
    for (outcome, replayed) in [(&first, false), (&attached, true)] {
        assert_eq!(
            (outcome.state, outcome.exit_code, outcome.replayed),
            (HostState::Exited, Some(0), replayed),
            "{outcome:?}"
        );
        assert_eq!(
            outcome.stdout.as_ref().map(|o| o.head.as_str()),
            Some("begun\ndone\n")
        );
    }
    assert_eq!(lines(&fleet.work.path().join("counter")), 1);
}

/// SIGKILL to the agent: one job's process ends while no agent runs, the
/// other after the agent came back. Each is answered with its real exit,
/// neither runs twice.
#[tokio::test]
async fn a_job_survives_its_agent_killed_and_a_redelivery_answers_its_real_exit() {
    let mut fleet = Fleet::start().await;
    let mut alice = alice(&fleet).await;
    let (early, late) = (JobId::random(), JobId::random());
    let script = |name: &str| {
        format!("echo ran >> count_{name}; while [ ! -e go_{name} ]; do sleep 0.05; done; echo {name}; exit 7")
    };
    for (rid, job, name) in [(1, &early, "early"), (2, &late, "late")] {
        send_run(&mut alice, rid, job, sh(&script(name)), false).await;
        assert_eq!(
            event(&mut alice, rid).await,
            RunJobEvent::JobStarted { job: job.clone() }
        );
    }
    let work = fleet.work.path().to_owned();
    // Killed once both run (before, a process that never got to start
    // would be lost, not run).
    eventually(PATIENCE, "both processes run", || {
        lines(&work.join("count_early")) == 1 && lines(&work.join("count_late")) == 1
    })
    .await;
    fleet.agent.signal("KILL");
    fleet.agent.exit(PATIENCE).await;
    std::fs::write(work.join("go_early"), "").expect("go");
    let exit_file = work.join("jobs").join(early.as_str()).join("exit.json");
    eventually(PATIENCE, "the early job ends without its agent", || {
        exit_file.is_file()
    })
    .await;

    let config = work.join("agent.toml");
    let mut cmd = command(&["agent", "--config", config.to_str().expect("utf-8")]);
    cmd.env("CONCIERGE_LOG", "concierge=debug");
    fleet.agent = Process::spawn(cmd);
    fleet.wait_for_agent().await;
    send_run(&mut alice, 3, &early, sh(&script("early")), false).await;
    let (_, answered) = outcome(&mut alice, 3).await;
    assert_eq!(
        (answered.state, answered.exit_code, answered.replayed),
        (HostState::Exited, Some(7), true),
        "{answered:?}\n{}",
        fleet.agent.log()
    );
    assert_eq!(answered.stdout.map(|o| o.head), Some("early\n".into()));

    // The late one still runs, under the new agent's watch.
    send_run(&mut alice, 4, &late, sh(&script("late")), false).await;
    assert_eq!(
        event(&mut alice, 4).await,
        RunJobEvent::JobStarted { job: late.clone() }
    );
    std::fs::write(work.join("go_late"), "").expect("go");
    let (_, answered) = outcome(&mut alice, 4).await;
    assert_eq!(
        (answered.state, answered.exit_code, answered.replayed),
        (HostState::Exited, Some(7), true),
        "{answered:?}\n{}",
        fleet.agent.log()
    );
    assert_eq!(answered.stdout.map(|o| o.head), Some("late\n".into()));
    for name in ["early", "late"] {
        assert_eq!(lines(&work.join(format!("count_{name}"))), 1, "{name}");
    }
}

#[tokio::test]
async fn a_job_past_its_timeout_is_terminated_then_killed() {
    let fleet = Fleet::start().await;
    let mut alice = alice(&fleet).await;
    let job = JobId::random();
    let run = Request::RunJob(RunJob {
        job: job.clone(),
        // Outlives SIGTERM: killed 5 s later.
        request: Box::new(sh(
            "trap '' TERM; echo $$ > pid; while :; do sleep 0.1; done",
        )),
        timeout_secs: Some(1),
        stream: false,
    });
    send(&mut alice, 1, &run).await;
    let (_, timed_out) = outcome(&mut alice, 1).await;
    assert_eq!(
        (timed_out.state, timed_out.signal.as_deref()),
        (HostState::TimedOut, Some("SIGKILL")),
        "{timed_out:?}"
    );
    assert!(
        timed_out.finished_ms - timed_out.started_ms >= 5_000,
        "{timed_out:?}"
    );
    let pid: u64 = std::fs::read_to_string(fleet.work.path().join("pid"))
        .expect("pid")
        .trim()
        .parse()
        .expect("a pid");
    eventually(PATIENCE, "the process is gone", || {
        crate::common::process::proc_state(pid).is_none()
    })
    .await;
}

#[tokio::test]
async fn a_cancelled_job_stops_and_one_cancelled_before_it_came_never_starts() {
    let fleet = Fleet::start().await;
    let mut alice = alice(&fleet).await;
    let job = JobId::random();
    send_run(
        &mut alice,
        1,
        &job,
        sh("touch running; while :; do sleep 0.05; done"),
        false,
    )
    .await;
    assert_eq!(
        event(&mut alice, 1).await,
        RunJobEvent::JobStarted { job: job.clone() }
    );
    let running = fleet.work.path().join("running");
    eventually(PATIENCE, "the process runs", || running.exists()).await;
    send(
        &mut alice,
        2,
        &Request::CancelJob(CancelJob { job: job.clone() }),
    )
    .await;
    let cancelled = message(&mut alice, 2).await;
    assert_eq!(
        (&cancelled["msg"]["result"], &cancelled["msg"]["state"]),
        (&json!("success"), &json!("cancelled")),
        "{cancelled}"
    );
    let (_, outcome_1) = outcome(&mut alice, 1).await;
    assert_eq!(
        (outcome_1.state, outcome_1.signal.as_deref()),
        (HostState::Cancelled, Some("SIGTERM")),
        "{outcome_1:?}"
    );

    let early = JobId::random();
    send(
        &mut alice,
        3,
        &Request::CancelJob(CancelJob { job: early.clone() }),
    )
    .await;
    assert_eq!(message(&mut alice, 3).await["msg"]["state"], "cancelled");
    send_run(&mut alice, 4, &early, sh("touch started"), false).await;
    let (events, late) = outcome(&mut alice, 4).await;
    assert!(events.is_empty(), "{events:?}");
    assert_eq!((late.state, late.replayed), (HostState::Cancelled, true));
    assert!(!fleet.work.path().join("started").exists());
}

#[tokio::test]
async fn other_requests_are_done_and_refusals_failed_and_recorded() {
    let fleet = Fleet::with_config("[[exec_allow]]\nexecutable = \"echo\"\nargs = [\"**\"]").await;
    let mut alice = alice(&fleet).await;
    let job = JobId::random();
    send_run(&mut alice, 1, &job, Request::Ping(NoArgs::default()), false).await;
    let (_, done) = outcome(&mut alice, 1).await;
    assert_eq!(done.state, HostState::Done, "{done:?}");
    assert_eq!(
        done.reply.as_ref().map(|r| &r["name"]),
        Some(&json!("host1"))
    );

    // Refused by the policy (only echo may run): failed, and a
    // redelivery says the same without trying again.
    let refused = JobId::random();
    let secret = Request::Execute(Execute {
        cmd: Some(vec!["touch".into(), "started".into()]),
        ..Execute::default()
    });
    for (rid, replayed) in [(2, false), (3, true)] {
        send_run(&mut alice, rid, &refused, secret.clone(), false).await;
        let (events, failed) = outcome(&mut alice, rid).await;
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(
            (
                failed.state,
                failed.reason.map(|r| r.as_str()),
                failed.replayed
            ),
            (HostState::Failed, Some("forbidden"), replayed),
            "{failed:?}"
        );
    }
    assert!(!fleet.work.path().join("started").exists());
}
