//! Jobs as an operator runs them: a real gateway process, 21 real agents
//! with labels (one of them stopped, so offline), and `concierge ctl run`,
//! `ctl jobs` and `ctl job` as typed. What is checked is what they print
//! and how they exit: targets by glob, list and label, the summary's
//! counts and grouped outputs when some hosts fail, `--max-failures`,
//! `--batch` (from the times the gateway recorded), `--dry-run`, the
//! NDJSON of `--json`, reading, cancelling and rerunning a job.

mod common;

use std::time::Duration;

use serde_json::Value;

use common::process::{agent, ctl, ctl_json, issue_token, outcome, serve, Process};
use common::PATIENCE;

/// 12 web hosts, 6 databases and 2 caches stay up; db7 is stopped once
/// the inventory knows it.
fn fleet() -> Vec<(String, &'static str)> {
    let mut hosts = Vec::new();
    for i in 1..=12 {
        hosts.push((format!("web{i}"), "role=web,dc=fra"));
    }
    for i in 1..=7 {
        hosts.push((format!("db{i}"), "role=db,dc=ams"));
    }
    for i in 1..=2 {
        hosts.push((format!("cache{i}"), "role=cache,dc=fra"));
    }
    hosts
}

/// Waits until `ctl hosts` lists `online` hosts online and `offline`
/// offline.
async fn until_hosts(url: &str, token: &str, online: usize, offline: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE * 4;
    loop {
        let (code, reply) = ctl_json(url, token, &["hosts"]).await;
        let listed = reply["hosts"].as_array().cloned().unwrap_or_default();
        let up = listed.iter().filter(|h| h["online"] == true).count();
        if code == 0 && up == online && listed.len() == online + offline {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hosts: {up} online of {}, not {online} of {}",
            listed.len(),
            online + offline
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The names of a `JobDetail`'s hosts in `state`.
fn in_state<'a>(detail: &'a Value, state: &str) -> Vec<&'a str> {
    detail["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .filter(|h| h["state"] == state)
        .map(|h| h["host"].as_str().expect("a name"))
        .collect()
}

/// The most hosts that ran at once, from the times the gateway recorded.
fn most_at_once(detail: &Value) -> usize {
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for h in detail["hosts"].as_array().expect("hosts") {
        let (Some(start), Some(end)) = (h["started_ms"].as_u64(), h["finished_ms"].as_u64()) else {
            continue;
        };
        edges.push((start, 1));
        edges.push((end, -1));
    }
    // An end before a start at the same millisecond: not at once.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

/// `ctl --json run ARGS`: the exit code and every line it printed, parsed.
async fn run_json(url: &str, token: &str, args: &[&str]) -> (i32, Vec<Value>) {
    let (code, stdout, stderr) = outcome(ctl(url, token).arg("--json").arg("run").args(args)).await;
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{stderr}")))
        .collect();
    (code, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_across_a_fleet_and_say_how_it_went() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let store = ["--data-dir", data.path().to_str().unwrap()];
    let hosts = fleet();
    let mut tokens = Vec::new();
    for (name, _) in &hosts {
        tokens.push(issue_token(&store, name, "agent").await);
    }
    let olga = issue_token(&store, "olga", "operator").await;
    let vic = issue_token(&store, "vic", "viewer").await;
    let mut gateway = serve("127.0.0.1:0", data.path().to_str().unwrap());
    let url = format!("ws://{}/ws", gateway.listening().await);
    let mut agents: Vec<Process> = hosts
        .iter()
        .zip(&tokens)
        .map(|((name, labels), token)| agent(&url, token, name, labels, work.path()))
        .collect();
    until_hosts(&url, &vic, 21, 0).await;
    let db7 = hosts.iter().position(|(n, _)| n == "db7").unwrap();
    agents[db7].signal("SIGTERM");
    agents[db7].exit(PATIENCE).await;
    until_hosts(&url, &vic, 20, 1).await;

    // --dry-run: the hosts, connected or not; nothing runs.
    let (code, preview) = ctl_json(&url, &olga, &["run", "db*", "--dry-run", "--", "true"]).await;
    assert_eq!(code, 0, "{preview}");
    let names: Vec<(&str, bool)> = preview["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["name"].as_str().unwrap(), h["online"] == true))
        .collect();
    assert_eq!(names.len(), 7, "{preview}");
    assert_eq!(names[6], ("db7", false));
    let (code, stdout, _) =
        outcome(ctl(&url, &olga).args(["run", "db*", "--dry-run", "--", "true"])).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("7 hosts, 6 online"), "{stdout}");

    // By label, two hosts failing: the exit codes counted, the failing
    // hosts named, each distinct output shown once under its hosts.
    let script = "case $(basename \"$PWD\") in web3|web7) echo bad; exit 3;; *) echo ok;; esac";
    let (code, stdout, stderr) =
        outcome(ctl(&url, &olga).args(["run", "role=web", "--", "sh", "-c", script])).await;
    assert_eq!(code, 6, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("exit 0: 10 hosts, exit 3: 2 hosts (web[3,7])"),
        "{stdout}"
    );
    for (title, output) in [("web[1-2,4-6,8-12] (10)", "ok"), ("web[3,7] (2)", "bad")] {
        let rule = "-".repeat(title.len().max(15));
        let group = format!("{rule}\n{title}\n{rule}\n{output}\n");
        assert!(stdout.contains(&group), "{group}\nin\n{stdout}");
    }
    let (_, listed) = ctl_json(&url, &vic, &["jobs"]).await;
    let failing = listed["jobs"][0]["id"]
        .as_str()
        .expect("the newest job")
        .to_owned();
    assert_eq!(listed["jobs"][0]["spec"]["target"], "role=web");

    // A list, all well: exit 0.
    let (code, stdout, _) =
        outcome(ctl(&url, &olga).args(["run", "web1,db1,cache1", "--", "true"])).await;
    assert_eq!(
        (code, stdout.trim_end()),
        (0, "exit 0: 3 hosts"),
        "{stdout}"
    );

    // A glob with an offline host: counted and named; --online leaves it out.
    let (code, stdout, _) = outcome(ctl(&url, &olga).args(["run", "db*", "--", "true"])).await;
    assert_eq!(code, 6, "{stdout}");
    assert!(
        stdout.contains("exit 0: 6 hosts") && stdout.contains("offline: 1 host (db7)"),
        "{stdout}"
    );
    let (code, stdout, _) =
        outcome(ctl(&url, &olga).args(["run", "db*", "--online", "--", "true"])).await;
    assert_eq!(
        (code, stdout.trim_end()),
        (0, "exit 0: 6 hosts"),
        "{stdout}"
    );

    // --json: NDJSON, the events as they came, then the final JobDetail.
    let (code, lines) = run_json(&url, &olga, &["cache*", "--stream", "--", "echo", "hi"]).await;
    assert_eq!(code, 0, "{lines:?}");
    let (last, events) = lines.split_last().expect("lines");
    assert_eq!(last["job"]["state"], "finished", "{last}");
    assert_eq!(in_state(last, "exited"), ["cache1", "cache2"]);
    assert!(events.iter().all(|e| e["event"].is_string()), "{events:?}");
    assert_eq!(events.last().unwrap()["event"], "end", "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "output" && e["data"] == "hi\n"),
        "{events:?}"
    );

    // --batch 3: never more than 3 hosts at once.
    let (code, lines) = run_json(
        &url,
        &olga,
        &["role=web", "--batch", "3", "--", "sh", "-c", "sleep 0.3"],
    )
    .await;
    let detail = lines.last().unwrap();
    assert_eq!(code, 0, "{detail}");
    let most = most_at_once(detail);
    assert!((1..=3).contains(&most), "{most} at once: {detail}");

    // --max-failures 1, one at a time: the second failure stops it.
    let (code, lines) = run_json(
        &url,
        &olga,
        &[
            "role=web",
            "--batch",
            "1",
            "--max-failures",
            "1",
            "--",
            "sh",
            "-c",
            "exit 3",
        ],
    )
    .await;
    let detail = lines.last().unwrap();
    assert_eq!(code, 6, "{detail}");
    assert_eq!(detail["job"]["state"], "stopped", "{detail}");
    assert_eq!(in_state(detail, "exited").len(), 2, "{detail}");
    assert_eq!(in_state(detail, "skipped").len(), 10, "{detail}");

    // Reading a job: its hosts, one host's output.
    let (code, detail) = ctl_json(&url, &vic, &["job", &failing]).await;
    assert_eq!(code, 0, "{detail}");
    assert_eq!(detail["hosts"].as_array().unwrap().len(), 12, "{detail}");
    let (code, stdout, _) = outcome(ctl(&url, &vic).args(["job", &failing])).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains(&format!("job {failing}")) && stdout.contains("exit 3"),
        "{stdout}"
    );
    let (code, stdout, stderr) =
        outcome(ctl(&url, &vic).args(["job", &failing, "--output", "web3"])).await;
    assert_eq!((code, stdout.as_str()), (0, "bad\n"), "{stderr}");
    let (_, stdout, _) = outcome(ctl(&url, &vic).args(["jobs"])).await;
    assert!(
        stdout.contains(&failing) && stdout.contains("role=web"),
        "{stdout}"
    );

    // Again on the hosts where it failed: their names are the target.
    let (code, stdout, _) = outcome(
        ctl(&url, &olga)
            .arg("--json")
            .args(["job", "rerun", &failing, "--failed"]),
    )
    .await;
    let rerun: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(code, 6, "{rerun}");
    assert_eq!(rerun["job"]["spec"]["target"], "web3,web7");
    assert_eq!(in_state(&rerun, "exited"), ["web3", "web7"]);

    // Detached, then cancelled: its hosts end cancelled.
    let (code, stdout, _) =
        outcome(ctl(&url, &olga).args(["run", "web*", "--detach", "--", "sleep", "30"])).await;
    assert_eq!(code, 0);
    let id = stdout.trim().to_owned();
    let (code, stdout, stderr) = outcome(ctl(&url, &olga).args(["job", "cancel", &id])).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    let deadline = tokio::time::Instant::now() + PATIENCE * 2;
    loop {
        let (_, detail) = ctl_json(&url, &vic, &["job", &id]).await;
        if detail["job"]["state"] == "cancelled" {
            assert_eq!(in_state(&detail, "cancelled").len(), 12, "{detail}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{detail}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Mistakes are usage errors, before anything runs; a viewer may not run.
    let (code, _, stderr) =
        outcome(ctl(&url, &olga).args(["run", "role=web,dc in (fra", "--", "true"])).await;
    assert_eq!(code, 2);
    assert!(stderr.contains('^'), "{stderr}");
    let (code, _, stderr) =
        outcome(ctl(&url, &olga).args(["run", "web*", "--request", r#"{"req": "nope"}"#])).await;
    assert!(code == 2 && stderr.contains("--request"), "{stderr}");
    let (code, _, stderr) = outcome(ctl(&url, &vic).args(["run", "web*", "--", "true"])).await;
    assert!(code == 1 && stderr.contains("forbidden"), "{stderr}");
}
