//! Jobs, for real (PROTOCOL §19): a gateway process with its ledger on
//! disk, real agents with labels running real processes, and an operator
//! that creates, follows and cancels jobs over the WebSocket and HTTP.
//! What each host ran is counted where it ran: every command appends a
//! line to a file in the agent's work folder, so "exactly once" is read off
//! the disk, not off the gateway's word.

#[path = "../common/mod.rs"]
mod common;
mod restarts;

use serde_json::{json, Value};
use std::collections::BTreeMap;

use common::fleet::Fleet;

/// Twenty agents; targets by label, glob and list; every host it names
/// runs the command once and only those; outputs are kept and digested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_once_on_exactly_the_hosts_its_target_names() {
    let fleet = Fleet::start(20, &[]).await;
    let mut op = fleet.operator().await;

    // A preview: what the target resolves to, nothing created.
    let preview = op
        .ask(
            "job_create",
            json!({
                "target": "role=web", "request": {"req": "ping"}, "dry_run": true
            }),
        )
        .await;
    let names: Vec<&str> = preview["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, fleet.names_where(|i| i % 2 == 0), "{preview}");
    assert!(preview["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["online"] == true));
    assert_eq!(op.ask("jobs", json!({})).await["jobs"], json!([]));

    for (target, wanted) in [
        (
            "role=web,dc=fra",
            fleet.names_where(|i| i % 2 == 0 && i % 4 == 0),
        ),
        (
            "host_1*",
            fleet.names_where(|i| i == 1 || (10..20).contains(&i)),
        ),
        (
            "host_3,host_7,host_8",
            ["host_3", "host_7", "host_8"].map(String::from).to_vec(),
        ),
    ] {
        let job = op.run(target, counted("echo hello")).await;
        let end = op.until_over(&job).await;
        assert_eq!(end["state"], "finished", "{end}");
        let detail = op.ask("job_get", json!({"job": job})).await;
        let hosts = detail["hosts"].as_array().unwrap();
        let ran: Vec<&str> = hosts.iter().map(|h| h["host"].as_str().unwrap()).collect();
        assert_eq!(ran, wanted, "{target}: {detail}");
        for host in hosts {
            assert_eq!(
                (host["state"].as_str(), host["exit_code"].as_i64()),
                (Some("exited"), Some(0)),
                "{host}"
            );
            assert_eq!(
                host["digest"], hosts[0]["digest"],
                "the same output, the same digest"
            );
        }
        let output = op
            .ask("job_output", json!({"job": job, "host": wanted[0]}))
            .await;
        assert_eq!(output["host"]["stdout"]["head"], "hello\n", "{output}");
    }
    // Counted on disk: each host ran what named it, once per job.
    let runs = fleet.runs();
    for i in 0..20 {
        let name = format!("host_{i}");
        let expected = [i % 4 == 0, i == 1 || i >= 10, [3, 7, 8].contains(&i)]
            .iter()
            .filter(|named| **named)
            .count();
        assert_eq!(
            runs.get(&name).copied().unwrap_or(0),
            expected,
            "{name}: {runs:?}"
        );
    }
    // The latest first, with who made them.
    let jobs = op.ask("jobs", json!({"limit": 2})).await;
    let listed = jobs["jobs"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["spec"]["target"], "host_3,host_7,host_8");
    assert!(listed[0]["client"].as_str().unwrap().starts_with("olga_"));
    // A target that names nothing, or is not one, is refused.
    let none = op
        .ask_err(
            "job_create",
            json!({"target": "role=nothing", "request": {"req": "ping"}}),
        )
        .await;
    assert_eq!(none["reason"], "not_found", "{none}");
    let bad = op
        .ask_err(
            "job_create",
            json!({"target": "role in (web", "request": {"req": "ping"}}),
        )
        .await;
    assert_eq!(bad["reason"], "bad_argument", "{bad}");
    assert!(bad["desc"].as_str().unwrap().contains('^'), "{bad}");
    // No client takes a coordinator's name.
    let mut impostor = common::Client::connect(&fleet.url()).await;
    impostor
        .send(json!({"type": "IDENTIFY", "name": "job_0123456789ab", "version": "0.2.0"}))
        .await;
    let (code, reason) = impostor.expect_close().await;
    assert_eq!(code, 4008, "{reason}");
    assert!(reason.contains("reserved"), "{reason}");
}

/// `batch` bounds how many run at once; `max_failures` stops the job and
/// skips the rest; a failed canary stops it before anyone else runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_bound_the_hosts_at_once_and_failures_stop_the_job() {
    let fleet = Fleet::start(10, &[]).await;
    // Hosts 4 and 6 fail: their work folder holds a `fail` file.
    for i in [4, 6] {
        std::fs::write(fleet.work_of(i).join("fail"), "").unwrap();
    }
    let mut op = fleet.operator().await;
    let script = "if [ -e fail ]; then exit 3; fi; sleep 0.3";
    let job = op
        .run_with("host_*", counted(script), json!({"batch": 3}))
        .await;
    op.until_over(&job).await;
    let hosts = op.hosts(&job).await;
    assert_eq!(hosts.len(), 10);
    assert_eq!(most_at_once(&hosts), 3, "{hosts:?}");
    let failed: Vec<&str> = hosts
        .iter()
        .filter(|h| h["exit_code"] == 3)
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["host_4", "host_6"]);

    // One at a time, at most one failure: the second stops it.
    let job = op
        .run_with(
            "host_*",
            counted(script),
            json!({"batch": 1, "max_failures": 1}),
        )
        .await;
    let end = op.until_over(&job).await;
    assert_eq!(end["state"], "stopped", "{end}");
    assert!(
        end["stopped_by"].as_str().unwrap().contains("max_failures"),
        "{end}"
    );
    let hosts = op.hosts(&job).await;
    let states: BTreeMap<&str, &str> = hosts
        .iter()
        .map(|h| (h["host"].as_str().unwrap(), h["state"].as_str().unwrap()))
        .collect();
    // Sorted by name: host_0..host_6 ran (4 and 6 failed), the rest never did.
    for (name, state) in &states {
        let i: usize = name[5..].parse().unwrap();
        let want = if i <= 6 { "exited" } else { "skipped" };
        assert_eq!(*state, want, "{states:?}");
    }
    assert_eq!(
        fleet.runs().get("host_9"),
        Some(&1),
        "skipped hosts did not run the second job"
    );

    // A canary that fails: nobody else runs. It is the first of the
    // target's hosts by name: host_4.
    let job = op
        .run_with(
            "host_6,host_5,host_4",
            counted(script),
            json!({"canary": 1}),
        )
        .await;
    let end = op.until_over(&job).await;
    assert_eq!(end["state"], "stopped", "{end}");
    assert!(
        end["stopped_by"]
            .as_str()
            .unwrap()
            .contains("canary host_4"),
        "{end}"
    );
    let hosts = op.hosts(&job).await;
    let states: Vec<&str> = hosts.iter().map(|h| h["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["exited", "skipped", "skipped"], "{hosts:?}");
    assert_eq!(hosts[0]["exit_code"], 3);
}

/// A host that is offline is `offline` at once without a wait; with one,
/// it runs the job when it comes back, or `expired` when it does not.
/// Cancelling stops what runs and what waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_hosts_are_waited_for_and_a_cancel_stops_everything() {
    let mut fleet = Fleet::start(4, &[]).await;
    let mut op = fleet.operator().await;
    fleet.stop(3).await;
    let job = op.run("host_*", counted("echo hi")).await;
    op.until_over(&job).await;
    let states = op.states(&job).await;
    assert_eq!(states["host_3"], "offline");
    assert_eq!(states["host_0"], "exited");

    let waited = op
        .run_with(
            "host_2,host_3",
            counted("echo back"),
            json!({"wait_secs": 60}),
        )
        .await;
    op.until_state(&waited, "host_2", "exited").await;
    assert_eq!(op.states(&waited).await["host_3"], "queued");
    fleet.restart(3).await;
    op.until_over(&waited).await;
    assert_eq!(op.states(&waited).await["host_3"], "exited");

    fleet.stop(3).await;
    let expired = op
        .run_with("host_3", counted("echo never"), json!({"wait_secs": 1}))
        .await;
    let end = op.until_over(&expired).await;
    assert_eq!(end["counts"], json!({"expired": 1}), "{end}");

    // Cancel: the running are stopped, the waiting never start.
    let job = op
        .run_with("host_*", counted("sleep 30"), json!({"wait_secs": 60}))
        .await;
    for host in ["host_0", "host_1", "host_2"] {
        op.until_state(&job, host, "running").await;
    }
    let cancelled = op.ask("job_cancel", json!({"job": job})).await;
    assert_eq!(cancelled["job"]["id"], job.as_str());
    let end = op.until_over(&job).await;
    assert_eq!(end["state"], "cancelled", "{end}");
    assert_eq!(end["counts"], json!({"cancelled": 4}), "{end}");
    assert_eq!(
        fleet.runs().get("host_3"),
        Some(&1),
        "the waiting host never ran it"
    );
    assert!(!fleet.sleeping(), "the cancelled processes are gone");
}

/// The HTTP API: a token decides who may create and read; a pipeline
/// creates a job and waits for it in one request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_creates_a_job_and_waits_for_it() {
    let fleet = Fleet::start(3, &["tokens"]).await;
    let http = reqwest::Client::new();
    let base = fleet.http_url("/jobs");
    let spec = json!({"target": "host_*", "request": counted("echo api")});
    let none = http.post(&base).json(&spec).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let viewer = http
        .post(&base)
        .bearer_auth(&fleet.viewer)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(viewer.status(), 403);
    let bad = http
        .post(&base)
        .bearer_auth(&fleet.operator)
        .json(&json!({"target": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["reason"], "bad_argument");
    let created = http
        .post(&base)
        .bearer_auth(&fleet.operator)
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let job: Value = created.json().await.unwrap();
    assert_eq!(job["user"], "olga");
    let id = job["id"].as_str().unwrap();
    let done: Value = http
        .get(format!("{base}/{id}?wait_secs=30"))
        .bearer_auth(&fleet.viewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["job"]["state"], "finished", "{done}");
    assert_eq!(done["job"]["counts"], json!({"exited": 3}));
    let out: Value = http
        .get(format!("{base}/{id}/hosts/host_1"))
        .bearer_auth(&fleet.viewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(out["stdout"]["head"], "api\n", "{out}");
    let missing = http
        .get(format!("{base}/0123456789ab"))
        .bearer_auth(&fleet.viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // Each agent audited the job's creator, not the gateway.
    let audit = std::fs::read_to_string(fleet.work_of(1).join("audit.log")).unwrap();
    assert!(audit.contains("olga") && audit.contains(id), "{audit}");
}

/// The command a host runs in a job: appends a line to `ran` in its work
/// folder (the count of its runs), then runs `script`.
fn counted(script: &str) -> Value {
    json!({"req": "execute", "msg": {"cmd": ["sh", "-c", format!("echo run >> ran; {script}")]}})
}

/// The most hosts whose runs overlapped in time.
fn most_at_once(hosts: &[Value]) -> usize {
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for h in hosts {
        edges.push((h["started_ms"].as_u64().unwrap(), 1));
        edges.push((h["finished_ms"].as_u64().unwrap(), -1));
    }
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}
