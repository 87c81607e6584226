//! The host agent and `concierge ctl`, for real: a gateway on an ephemeral
//! port, the `concierge agent` binary connected to it, `concierge ctl` run
//! as a user runs it, and real processes on this machine.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::process::{command, Process};
use common::{Client, TestServer};
use serde_json::{json, Value};

/// A gateway, an agent named `host1` and tokens for an operator (alice),
/// a viewer (vic) and the host.
struct Fleet {
    server: TestServer,
    agent: Process,
    work: tempfile::TempDir,
    alice: String,
    vic: String,
}

/// Issues a long-lived token from the store of the gateway on `data`.
async fn issue(data: &Path, name: &str, role: &str) -> String {
    let data = data.to_str().expect("utf-8 path");
    common::process::issue_token(&["--data-dir", data], name, role).await
}

impl Fleet {
    async fn start() -> Fleet {
        Self::with_config("").await
    }

    /// With `extra` appended to the agent's settings file.
    async fn with_config(extra: &str) -> Fleet {
        Self::launch(extra, false).await
    }

    /// With the agent's token in its settings file, or in
    /// `CONCIERGE_AGENT_TOKEN` (`token_in_env`).
    async fn launch(extra: &str, token_in_env: bool) -> Fleet {
        let server = TestServer::start();
        let host = issue(server.data.path(), "host1", "agent").await;
        let alice = issue(server.data.path(), "alice", "operator").await;
        let vic = issue(server.data.path(), "vic", "viewer").await;
        let work = tempfile::tempdir().expect("work dir");
        let in_file = if token_in_env { "" } else { host.as_str() };
        let mut cmd = agent_command(&server.ws_url(), in_file, work.path(), extra);
        if token_in_env {
            cmd.env("CONCIERGE_AGENT_TOKEN", &host);
        }
        let agent = Process::spawn(cmd);
        let fleet = Fleet {
            server,
            agent,
            work,
            alice,
            vic,
        };
        fleet.wait_for_agent().await;
        fleet
    }

    async fn wait_for_agent(&self) {
        for _ in 0..100 {
            if self
                .ctl(&self.alice, &["--json", "request", "host1", "ping"])
                .await
                .0
                == 0
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the agent never answered:\n{}", self.agent.log());
    }

    /// Runs `concierge ctl --url URL [--token T] ARGS`: exit code, stdout, stderr.
    async fn ctl(&self, token: &str, args: &[&str]) -> (i32, String, String) {
        ctl_at(&self.server.ws_url(), token, args).await
    }

    /// `ctl --json`, parsed: exit code and the last JSON document printed.
    async fn ctl_json(&self, token: &str, args: &[&str]) -> (i32, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let (code, out, err) = self.ctl(token, &all).await;
        let last = out.lines().last().unwrap_or_default();
        let value = serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("ctl {args:?} printed no JSON ({e}): {out:?} {err:?}"));
        (code, value)
    }

    /// `ctl request host1 REQ MSG`: exit code and the reply's `msg`.
    async fn request(&self, token: &str, req: &str, msg: Value) -> (i32, Value) {
        self.ctl_json(token, &["request", "host1", req, &msg.to_string()])
            .await
    }

    /// An operator's raw client subscribed to the agent's audit service.
    async fn audit_watcher(&self) -> Client {
        let mut watcher = self.client("alice_watch", &self.alice).await;
        watcher
            .send(json!({"type": "SELF_SUBSCRIBE", "service": "audit_host1"}))
            .await;
        watcher.skip_to("SELF_SUBSCRIBE_RESULT").await;
        watcher
    }

    /// A raw client identified with `token`, to send requests by hand.
    async fn client(&self, name: &str, token: &str) -> Client {
        let mut client = self.server.connect().await;
        client
            .identify_with(
                json!({"type": "IDENTIFY", "name": name, "version": "0.2.0", "token": token}),
            )
            .await;
        client
    }
}

async fn spawn_agent(url: &str, token: &str, work: &Path, extra: &str) -> Process {
    Process::spawn(agent_command(url, token, work, extra))
}

/// `concierge agent` with a settings file in `work`: `extra` appended.
fn agent_command(url: &str, token: &str, work: &Path, extra: &str) -> tokio::process::Command {
    let config = work.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "url = {url:?}\ntoken = {token:?}\nname = \"host1\"\nwork_dir = {:?}\nsystemd = \"system\"\n\
             telemetry_interval_ms = 200\nreconnect_min_ms = 100\nreconnect_max_ms = 400\n{extra}\n",
            work.display().to_string()
        ),
    )
    .expect("config written");
    let mut cmd = command(&["agent", "--config", config.to_str().expect("utf-8")]);
    cmd.env("CONCIERGE_LOG", "concierge=debug");
    cmd
}

async fn ctl_at(url: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let mut cmd = command(&["ctl", "--url", url]);
    if !token.is_empty() {
        cmd.args(["--token", token]);
    }
    // No saved login of whoever runs the tests.
    cmd.env("HOME", "/nonexistent")
        .env("XDG_CONFIG_HOME", "/nonexistent");
    cmd.args(args);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("ctl {args:?} did not finish"))
        .expect("ctl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that `ctl` failed (exit status 1) on an error reply of `reason`.
fn assert_refused(code: i32, reply: &Value, reason: &str) {
    assert_eq!(
        (code, reply["result"].as_str(), reply["reason"].as_str()),
        (1, Some("error"), Some(reason)),
        "{reply}"
    );
}

/// The state letter of `/proc/PID/stat`.
fn proc_state(pid: u64) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within 5 s");
}

/// The exit of a started process, once it has one.
async fn exit_of(fleet: &Fleet, pid: u64) -> Value {
    for _ in 0..100 {
        let (code, out) = fleet
            .request(
                &fleet.alice,
                "proc_output",
                json!({"proc_id": pid, "offset": u64::MAX}),
            )
            .await;
        assert_eq!(code, 0, "{out}");
        if !out["exit"].is_null() {
            return out["exit"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("process {pid} did not exit");
}

async fn start(fleet: &Fleet, cmd: &[&str]) -> u64 {
    let mut args = vec!["exec", "host1", "--"];
    args.extend_from_slice(cmd);
    let (code, out) = fleet.ctl_json(&fleet.alice, &args).await;
    assert_eq!(code, 0, "{out}");
    out["proc_id"].as_u64().expect("proc_id")
}

#[tokio::test]
async fn exec_follow_prints_the_output_and_exits_with_the_process_code() {
    let fleet = Fleet::start().await;
    let (code, out, err) = fleet
        .ctl(
            &fleet.alice,
            &[
                "exec",
                "host1",
                "--follow",
                "--",
                "sh",
                "-c",
                "echo hi; echo oops >&2; exit 3",
            ],
        )
        .await;
    assert_eq!((code, out.as_str()), (3, "hi\n"), "stderr: {err}");
    assert!(err.contains("oops"), "{err}");

    // As JSON: the reply, then the events, the exit last.
    let (code, out, _) = fleet
        .ctl(
            &fleet.alice,
            &[
                "--json",
                "exec",
                "host1",
                "--follow",
                "--",
                "sh",
                "-c",
                "printf 'a€b'; kill -9 $$",
            ],
        )
        .await;
    assert_eq!(code, 128 + 9);
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(events[0]["result"], "success", "{out}");
    let printed: String = events
        .iter()
        .filter(|e| e["event"] == "stdout")
        .filter_map(|e| e["data"].as_str())
        .collect();
    assert_eq!(printed, "a€b");
    let exit = events.last().expect("events");
    assert_eq!(
        (exit["event"].as_str(), exit["signal"].as_str()),
        (Some("exit"), Some("SIGKILL")),
        "{out}"
    );
    assert!(exit["duration_ms"].is_u64());
}

#[tokio::test]
async fn list_started_shows_running_and_exited_processes_and_execute_takes_a_command_line() {
    let fleet = Fleet::start().await;
    // A command line is split as a shell would split it; no shell runs it.
    let (code, reply) = fleet
        .request(
            &fleet.alice,
            "execute",
            json!({"command": "sh -c 'exit 4'"}),
        )
        .await;
    assert_eq!(code, 0, "{reply}");
    let exited = reply["proc_id"].as_u64().expect("proc_id");
    assert_eq!(exit_of(&fleet, exited).await["code"], 4);
    let (_, reply) = fleet
        .request(&fleet.alice, "execute", json!({"command": "sleep \"30\""}))
        .await;
    let running = reply["proc_id"].as_u64().expect("proc_id");
    for bad in [
        json!({"cmd": ["true"], "command": "true"}),
        json!({"command": "echo 'unterminated"}),
        json!({"command": 7}),
    ] {
        let (code, reply) = fleet.request(&fleet.alice, "execute", bad.clone()).await;
        assert_refused(code, &reply, "bad_argument");
    }

    // A viewer may read the list: newest first, exit codes kept.
    let (code, list) = fleet.request(&fleet.vic, "list_started", json!({})).await;
    assert_eq!(code, 0, "{list}");
    assert_eq!(
        (list["total"].as_u64(), &list["next_offset"]),
        (Some(2), &Value::Null)
    );
    let procs = list["processes"].as_array().expect("processes");
    assert_eq!(procs[0]["proc_id"].as_u64(), Some(running), "{list}");
    assert_eq!(procs[0]["cmd"], json!(["sleep", "30"]));
    assert_eq!(procs[0]["running"], true);
    assert_eq!(procs[0]["exit"], Value::Null);
    assert!(
        matches!(procs[0]["status"].as_str(), Some("sleeping" | "running")),
        "{list}"
    );
    assert_eq!(procs[1]["proc_id"].as_u64(), Some(exited), "{list}");
    assert_eq!(procs[1]["cmd"], json!(["sh", "-c", "exit 4"]));
    assert_eq!(procs[1]["running"], false);
    assert_eq!(procs[1]["status"], "exited");
    assert_eq!(procs[1]["exit"]["code"], 4);
    assert!(procs[1]["started"].as_u64() > Some(1_700_000_000));

    // Paused, the running one shows stopped, as /proc says.
    let (code, reply) = fleet
        .request(&fleet.alice, "pause_process", json!({"pid": running}))
        .await;
    assert_eq!(code, 0, "{reply}");
    eventually("the pause", || proc_state(running) == Some('T')).await;
    let (_, list) = fleet.request(&fleet.vic, "list_started", json!({})).await;
    assert_eq!(list["processes"][0]["status"], "stopped", "{list}");
    fleet
        .request(
            &fleet.alice,
            "kill_process",
            json!({"pid": running, "method": "SIGKILL"}),
        )
        .await;
}

#[tokio::test]
async fn output_is_kept_bounded_and_readable_after_exit() {
    let fleet = Fleet::with_config("output_limit = 100000").await;
    let pid = start(
        &fleet,
        &[
            "sh",
            "-c",
            "head -c 300000 /dev/zero | tr '\\0' x; echo; echo done",
        ],
    )
    .await;
    let exit = exit_of(&fleet, pid).await;
    assert_eq!(exit["code"], 0, "{exit}");
    let (code, page) = fleet
        .request(&fleet.alice, "proc_output", json!({"proc_id": pid}))
        .await;
    assert_eq!(code, 0, "{page}");
    assert!(
        page["dropped"].as_u64().expect("dropped") >= 200_000,
        "{page}"
    );
    // The newest bytes are kept: the last page ends with "done".
    let (code, out, _) = fleet
        .ctl(&fleet.alice, &["output", "host1", &pid.to_string()])
        .await;
    assert_eq!(code, 0);
    assert!(
        out.ends_with("x\ndone\n"),
        "{}",
        &out[out.len().saturating_sub(50)..]
    );
    assert!(out.len() <= 100_000 && out.len() > 90_000, "{}", out.len());
}

#[tokio::test]
async fn view_running_lists_started_processes_with_their_listening_ports() {
    let fleet = Fleet::start().await;
    let script = "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen()\nprint(s.getsockname()[1],flush=True)\ntime.sleep(60)";
    let pid = start(
        &fleet,
        &["sh", "-c", &format!("exec python3 -c \"{script}\"")],
    )
    .await;
    let mut port = None;
    for _ in 0..100 {
        let (_, out, _) = fleet
            .ctl(&fleet.alice, &["output", "host1", &pid.to_string()])
            .await;
        if let Ok(p) = out.trim().parse::<u64>() {
            port = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let port = port.expect("the child printed its port");
    let (code, running) = fleet.ctl_json(&fleet.vic, &["ps", "host1"]).await;
    assert_eq!(code, 0, "{running}");
    let entry = running
        .as_array()
        .expect("a list")
        .iter()
        .find(|p| p["pid"] == pid)
        .cloned()
        .expect("listed");
    assert_eq!(entry["port_util"], json!([port]), "{entry}");
    assert_eq!(entry["title"], "python3");
    assert!(
        entry["reqc"].as_str().expect("reqc").starts_with("sh -c"),
        "{entry}"
    );
    assert!(entry["mem_util"].as_f64().expect("MB") > 1.0, "{entry}");
    let (code, table, _) = fleet.ctl(&fleet.vic, &["ps", "host1"]).await;
    assert_eq!(code, 0);
    assert!(
        table.contains(&port.to_string()) && table.contains("PORTS"),
        "{table}"
    );
}

#[tokio::test]
async fn every_signal_reaches_the_process_and_pause_really_stops_it() {
    let fleet = Fleet::start().await;
    let pid = start(&fleet, &["sleep", "60"]).await;
    let (code, _, err) = fleet
        .ctl(&fleet.alice, &["pause", "host1", &pid.to_string()])
        .await;
    assert_eq!(code, 0, "{err}");
    eventually("state T", || proc_state(pid) == Some('T')).await;
    let (code, info) = fleet
        .ctl_json(&fleet.alice, &["proc", "host1", &pid.to_string()])
        .await;
    assert_eq!(
        (code, info["status"].as_str()),
        (0, Some("stopped")),
        "{info}"
    );
    assert_eq!(info["safe_kill"], true);
    let (code, _, _) = fleet
        .ctl(&fleet.alice, &["resume", "host1", &pid.to_string()])
        .await;
    assert_eq!(code, 0);
    eventually("state S", || proc_state(pid) == Some('S')).await;

    for signal in [
        "SIGTERM", "SIGKILL", "SIGHUP", "SIGINT", "SIGUSR1", "SIGUSR2",
    ] {
        let pid = start(&fleet, &["sleep", "60"]).await;
        let (code, reply) = fleet
            .ctl_json(&fleet.alice, &["signal", "host1", &pid.to_string(), signal])
            .await;
        assert_eq!(code, 0, "{reply}");
        let exit = exit_of(&fleet, pid).await;
        assert_eq!(exit["signal"], signal, "{exit}");
        assert!(exit["code"].is_null());
    }
    // seed 000's kill_process with its method.
    let pid = start(&fleet, &["sleep", "60"]).await;
    let (code, reply) = fleet
        .request(
            &fleet.alice,
            "kill_process",
            json!({"pid": pid, "method": "SIGKILL"}),
        )
        .await;
    assert_eq!(code, 0, "{reply}");
    assert_eq!(exit_of(&fleet, pid).await["signal"], "SIGKILL");
    let (code, reply) = fleet
        .request(
            &fleet.alice,
            "kill_process",
            json!({"pid": pid, "method": "SIGHUP"}),
        )
        .await;
    assert_refused(code, &reply, "bad_argument");
}

#[tokio::test]
async fn processes_the_agent_did_not_start_are_not_signalled() {
    let fleet = Fleet::start().await;
    let mut stranger = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep");
    let pid = stranger.id().to_string();
    let (code, reply) = fleet
        .ctl_json(&fleet.alice, &["signal", "host1", &pid, "SIGTERM"])
        .await;
    assert_refused(code, &reply, "forbidden");
    assert!(
        stranger.try_wait().expect("wait").is_none(),
        "still running"
    );
    let (_, info) = fleet.ctl_json(&fleet.alice, &["proc", "host1", &pid]).await;
    assert_eq!(
        (info["name"].as_str(), info["safe_kill"].as_bool()),
        (Some("sleep"), Some(false)),
        "{info}"
    );

    // The agent itself and its parent (this test) are never signalled.
    let agent_pid = fleet.agent.child.id().expect("agent runs").to_string();
    let (_, reply) = fleet
        .ctl_json(&fleet.alice, &["signal", "host1", &agent_pid, "SIGKILL"])
        .await;
    assert_eq!(reply["reason"], "forbidden", "{reply}");

    // A pid nothing holds.
    stranger.kill().expect("kill");
    stranger.wait().expect("reaped");
    let (code, reply) = fleet
        .ctl_json(&fleet.alice, &["signal", "host1", &pid, "SIGTERM"])
        .await;
    assert_refused(code, &reply, "not_found");
    let (code, reply) = fleet.ctl_json(&fleet.alice, &["proc", "host1", &pid]).await;
    assert_refused(code, &reply, "not_found");
}

/// Signals a `/usr/bin/sleep` the test started (no child of the agent's)
/// with SIGTERM through `ctl`, and checks the agent did.
async fn signals_a_strangers_sleep(fleet: &Fleet) {
    let mut stranger = std::process::Command::new("/usr/bin/sleep")
        .arg("60")
        .spawn()
        .expect("sleep");
    let pid = stranger.id().to_string();
    let (code, reply) = fleet
        .ctl_json(&fleet.alice, &["signal", "host1", &pid, "SIGTERM"])
        .await;
    assert_eq!(code, 0, "{reply}");
    let status = stranger.wait().expect("reaped");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM));
}

/// The name of the user running the tests (and so the agent).
fn user_name() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id runs");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn signal_allow_rules_widen_what_may_be_signalled() {
    let fleet = Fleet::with_config("[[signal_allow]]\nexecutable = \"/usr/bin/sleep\"").await;
    signals_a_strangers_sleep(&fleet).await;
}

/// A `signal_allow` rule with a user and an executable covers the processes
/// that match both, not those of the user running something else.
#[tokio::test]
async fn a_signal_allow_rule_needs_both_its_user_and_its_executable() {
    let fleet = Fleet::with_config(&format!(
        "[[signal_allow]]\nuser = \"{}\"\nexecutable = \"/usr/bin/sleep\"",
        user_name()
    ))
    .await;
    let mut other = std::process::Command::new("/usr/bin/tail")
        .args(["-f", "/dev/null"])
        .spawn()
        .expect("tail");
    let (code, reply) = fleet
        .ctl_json(
            &fleet.alice,
            &["signal", "host1", &other.id().to_string(), "SIGTERM"],
        )
        .await;
    assert_refused(code, &reply, "forbidden");
    assert!(other.try_wait().expect("wait").is_none(), "still running");
    other.kill().expect("kill");
    other.wait().expect("reaped");
    signals_a_strangers_sleep(&fleet).await;
}

/// The agent never signals itself, its parent or init, even where a
/// `signal_allow` rule covers them: here every process of the test's own
/// user, which a stranger's `sleep` shows the rule does cover.
#[tokio::test]
async fn no_rule_lets_the_agent_signal_itself_its_parent_or_init() {
    let fleet = Fleet::with_config(&format!("[[signal_allow]]\nuser = \"{}\"", user_name())).await;
    let agent_pid = fleet.agent.child.id().expect("agent runs");
    let parent = std::process::id();
    for pid in [agent_pid, parent, 1] {
        let (code, reply) = fleet
            .ctl_json(
                &fleet.alice,
                &["signal", "host1", &pid.to_string(), "SIGCONT"],
            )
            .await;
        assert_refused(code, &reply, "forbidden");
        assert!(
            reply["desc"]
                .as_str()
                .is_some_and(|d| d.contains("does not signal itself, its parent or init")),
            "{pid}: {reply}"
        );
    }
    signals_a_strangers_sleep(&fleet).await;
}

#[tokio::test]
async fn exec_allow_rules_limit_what_may_be_started() {
    let fleet = Fleet::with_config("[[exec_allow]]\nexecutable = \"echo\"\nargs = [\"**\"]").await;
    let (code, out, _) = fleet
        .ctl(
            &fleet.alice,
            &["exec", "host1", "--follow", "--", "echo", "allowed"],
        )
        .await;
    assert_eq!((code, out.as_str()), (0, "allowed\n"));
    let (code, reply) = fleet
        .ctl_json(
            &fleet.alice,
            &["exec", "host1", "--", "sh", "-c", "echo no"],
        )
        .await;
    assert_refused(code, &reply, "forbidden");
    let (code, reply) = fleet
        .request(
            &fleet.alice,
            "exec_command",
            json!({"command": "echo 'two words'"}),
        )
        .await;
    assert_eq!(
        (code, reply["stdout"].as_str(), reply["exit_code"].as_i64()),
        (0, Some("two words\n"), Some(0)),
        "{reply}"
    );
}

#[tokio::test]
async fn process_info_of_a_live_pid_matches_proc() {
    let fleet = Fleet::start().await;
    let me = std::process::id();
    let (code, info) = fleet
        .ctl_json(&fleet.vic, &["proc", "host1", &me.to_string()])
        .await;
    assert_eq!(code, 0, "{info}");
    assert_eq!(info["pid"], me);
    let actual = common::process::rss(me);
    let rss = info["memory"]["rss"].as_u64().expect("rss");
    assert!(
        rss > 0 && rss.abs_diff(actual) < rss / 2,
        "{rss} vs {actual} bytes"
    );
    assert!(
        info["cpu_time"]["user"].is_number() && info["started"].as_u64() > Some(0),
        "{info}"
    );
    let (code, all) = fleet.ctl_json(&fleet.vic, &["ps", "host1", "--all"]).await;
    assert_eq!(code, 0);
    let all = all.as_array().expect("list");
    let seen = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count();
    assert!(all.iter().any(|p| p["pid"] == me), "this test is listed");
    assert!(
        all.len() * 2 > seen,
        "{} of {seen} processes listed (paged)",
        all.len()
    );
}

#[tokio::test]
async fn all_processes_lists_processes_not_their_threads() {
    let fleet = Fleet::start().await;
    // This test runs on several threads: none of them is a process.
    let me = std::process::id();
    let threads: Vec<u64> = std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .filter_map(|t| t.ok()?.file_name().to_str()?.parse().ok())
        .filter(|tid| *tid != u64::from(me))
        .collect();
    assert!(!threads.is_empty(), "a multi-threaded test has threads");
    let (code, all) = fleet
        .ctl_json(&fleet.alice, &["ps", "host1", "--all"])
        .await;
    assert_eq!(code, 0, "{all}");
    let pids: Vec<u64> = all
        .as_array()
        .expect("processes")
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .collect();
    assert!(pids.contains(&u64::from(me)), "the test process is listed");
    assert!(
        threads.iter().all(|t| !pids.contains(t)),
        "threads {threads:?} listed as processes"
    );
}

#[tokio::test]
async fn telemetry_matches_proc() {
    let fleet = Fleet::start().await;
    let (code, reply) = fleet
        .ctl_json(&fleet.vic, &["top", "host1", "--once"])
        .await;
    assert_eq!(code, 0, "{reply}");
    let data = &reply["tele_data"];
    let cores = std::fs::read_to_string("/proc/stat")
        .expect("stat")
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    let cpu = data["ttl_cpu_usage"].as_array().expect("per core");
    assert_eq!(cpu.len(), cores);
    assert!(
        cpu.iter()
            .all(|c| (0.0..=1.0).contains(&c.as_f64().expect("share"))),
        "{cpu:?}"
    );
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let total_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("MemTotal");
    let mem: u64 = data["ttl_mem_usage"]
        .as_array()
        .expect("mem")
        .iter()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(mem, total_kb * 1024);
    let disks = data["disk_util"].as_object().expect("disks");
    assert!(
        !disks.is_empty() && disks.values().all(|d| d[0].is_u64() && d[1].is_u64()),
        "{disks:?}"
    );
    assert_eq!(data["vpn_status"]["up"], false);
    // One stat type only, and a wrong one.
    let (_, reply) = fleet
        .request(
            &fleet.vic,
            "telemetry",
            json!({"stat_types": ["ttl_mem_usage"]}),
        )
        .await;
    assert_eq!(
        reply["tele_data"].as_object().map(|m| m.len()),
        Some(1),
        "{reply}"
    );
    let (code, reply) = fleet
        .request(&fleet.vic, "telemetry", json!({"stat_types": ["gpu"]}))
        .await;
    assert_refused(code, &reply, "bad_argument");
    // The human screen: one bar per core.
    let (code, screen, _) = fleet.ctl(&fleet.vic, &["top", "host1", "--once"]).await;
    assert_eq!(code, 0);
    assert_eq!(
        screen.lines().filter(|l| l.starts_with("cpu")).count(),
        cores,
        "{screen}"
    );
}

fn payloads_in(text: &str, kind: &str) -> u64 {
    let key = format!("concierge_payloads_in_total{{type=\"{kind}\"}}");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn telemetry_is_published_only_while_someone_subscribes() {
    let fleet = Fleet::start().await;
    let metrics = || async {
        reqwest::get(fleet.server.http_url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    };
    let before = payloads_in(&metrics().await, "MESSAGE");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        payloads_in(&metrics().await, "MESSAGE"),
        before,
        "nobody subscribed, nothing published"
    );

    let mut viewer = fleet.client("vic_top", &fleet.vic).await;
    viewer
        .send(json!({"type": "SELF_SUBSCRIBE", "service": "telemetry_host1"}))
        .await;
    let event = viewer.skip_to("MESSAGE").await;
    assert_eq!(event["data"]["event"], "telemetry", "{event}");
    assert!(
        event["data"]["tele_data"]["ttl_cpu_usage"].is_array(),
        "{event}"
    );
    viewer.skip_to("MESSAGE").await; // and again on the next tick
    viewer
        .send(json!({"type": "SELF_UNSUBSCRIBE", "service": "telemetry_host1"}))
        .await;
    viewer.skip_to("SELF_UNSUBSCRIBE_RESULT").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = payloads_in(&metrics().await, "MESSAGE");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        payloads_in(&metrics().await, "MESSAGE"),
        after,
        "unsubscribed, nothing published"
    );
}

#[tokio::test]
async fn user_usages_measure_the_work_folder() {
    let fleet = Fleet::start().await;
    let work: PathBuf = fleet.work.path().to_owned();
    std::fs::write(work.join("one.bin"), vec![0u8; 1000]).expect("file");
    std::fs::create_dir(work.join("data")).expect("dir");
    std::fs::write(work.join("data").join("a"), vec![0u8; 300]).expect("file");
    std::fs::create_dir(work.join("data").join("deeper")).expect("dir");
    std::fs::write(work.join("data").join("deeper").join("b"), vec![0u8; 200]).expect("file");
    let (code, usage) = fleet.ctl_json(&fleet.vic, &["usage", "host1"]).await;
    assert_eq!(code, 0, "{usage}");
    let entry = |name: &str| {
        usage["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .expect(name)
    };
    assert_eq!(
        (
            entry("one.bin")["bytes"].as_u64(),
            entry("one.bin")["type"].as_str()
        ),
        (Some(1000), Some("file"))
    );
    assert_eq!(
        (
            entry("data")["bytes"].as_u64(),
            entry("data")["type"].as_str()
        ),
        (Some(500), Some("dir"))
    );
    assert!(usage["resources"]["processes"].is_u64(), "{usage}");
    let (code, table, _) = fleet.ctl(&fleet.vic, &["usage", "host1"]).await;
    assert_eq!(code, 0);
    assert!(
        table.contains("1.0 kB") && table.contains("one.bin"),
        "{table}"
    );
}

#[tokio::test]
async fn viewers_read_operators_command_anonymous_clients_do_nothing() {
    let fleet = Fleet::start().await;
    let pid = start(&fleet, &["sleep", "60"]).await.to_string();
    let (code, reply) = fleet
        .ctl_json(&fleet.vic, &["signal", "host1", &pid, "SIGKILL"])
        .await;
    assert_refused(code, &reply, "forbidden");
    assert!(
        reply["desc"].as_str().expect("desc").contains("operator"),
        "{reply}"
    );
    let (code, _, err) = fleet
        .ctl(&fleet.vic, &["signal", "host1", &pid, "SIGKILL"])
        .await;
    assert_eq!(code, 1);
    assert!(err.contains("forbidden"), "{err}");
    assert!(
        proc_state(pid.parse().expect("pid")).is_some(),
        "still running"
    );
    let (code, _) = fleet.ctl_json(&fleet.vic, &["ps", "host1"]).await;
    assert_eq!(code, 0, "a viewer reads");
    let (code, reply) = fleet.ctl_json("", &["ps", "host1"]).await;
    assert_refused(code, &reply, "forbidden");
    let (code, reply) = fleet.ctl_json("", &["exec", "host1", "--", "true"]).await;
    assert_refused(code, &reply, "forbidden");
}

/// The requests PROTOCOL.md §13.3 lists, each with whether it is marked
/// **read** (else `command`): the documented access, which the agent's
/// own table must not be trusted to give.
fn documented_requests() -> Vec<(String, bool)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md"))
        .expect("docs/PROTOCOL.md");
    let section = doc
        .split_once("### 13.3 Requests")
        .expect("PROTOCOL.md has section 13.3")
        .1;
    let table = section.split("\n### ").next().unwrap_or_default();
    let mut documented = Vec::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let read = match cells[2] {
            "read" => true,
            "command" => false,
            other => panic!("PROTOCOL.md §13.3: access {other:?} in {row}"),
        };
        for name in cells[1].split('/') {
            documented.push((name.trim().trim_matches('`').to_owned(), read));
        }
    }
    assert!(documented.len() > 10, "§13.3 parsed: {documented:?}");
    documented
}

/// The reply (`msg`) to every one of `rids` that `client` receives (MESSAGE
/// data `{"rid", "msg"}`; an event has no `msg`) within `patience` in all.
async fn replies_to(
    client: &mut Client,
    rids: &[u64],
    patience: Duration,
) -> std::collections::HashMap<u64, Value> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut replies = std::collections::HashMap::new();
    while replies.len() < rids.len() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(payload) =
            tokio::time::timeout(left, client.recv_within(left + common::PATIENCE)).await
        else {
            let missing: Vec<&u64> = rids.iter().filter(|r| !replies.contains_key(*r)).collect();
            panic!("no reply to rids {missing:?} within {patience:?}");
        };
        let data = &payload["data"];
        if payload["type"] == "MESSAGE" && !data["msg"].is_null() {
            if let Some(rid) = data["rid"].as_u64().filter(|r| rids.contains(r)) {
                replies.insert(rid, data["msg"].clone());
            }
        }
    }
    replies
}

/// Sends request `req` with `msg` as `rid` to host1.
async fn send_request(client: &mut Client, rid: u64, req: &str, msg: &Value) {
    client
        .send(
            json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "host1"},
            "data": {"req": req, "rid": rid, "msg": msg}}),
        )
        .await;
}

/// PROTOCOL §13.2 and §13.3, SECURITY.md §4: a viewer may make every request
/// marked read, and no other. Every request the agent serves (its one list,
/// `commands::REQUESTS`, so a request added there is covered) is sent by a
/// viewer with the access the documentation gives it (a request the
/// documentation does not list fails here): each command is refused with
/// the documented reply, `forbidden`, "vic (roles: viewer) may not do this:
/// it needs the operator role", and does nothing (the processes it would
/// signal keep their state, nothing is started, no file is written); each
/// read is served. The operator's same commands get through and do what the
/// viewer's did not, so the checks above could see it.
#[tokio::test]
async fn a_viewer_may_make_every_read_request_and_no_command() {
    use concierge::protocol::agent::REQUESTS;
    let documented = documented_requests();
    let served: Vec<&str> = REQUESTS.iter().map(|(name, _)| *name).collect();
    let undocumented: Vec<&&str> = served
        .iter()
        .filter(|name| !documented.iter().any(|(d, _)| d == **name))
        .collect();
    let unserved: Vec<&String> = documented
        .iter()
        .map(|(d, _)| d)
        .filter(|d| !served.contains(&d.as_str()))
        .collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not in PROTOCOL.md §13.3: {undocumented:?}; documented but not served: {unserved:?}"
    );
    let is_read = |req: &str| documented.iter().any(|(d, read)| d == req && *read);
    let commands: Vec<&str> = served.iter().copied().filter(|r| !is_read(r)).collect();
    assert!(
        commands.contains(&"kill_process") && served.iter().any(|r| is_read(r)),
        "both kinds are tested: {commands:?}"
    );
    // What each request is sent with: the process a signal would reach is
    // one of its own; a start would write a file.
    let fleet = Fleet::start().await;
    let work = fleet.work.path().to_owned();
    let mut targets = std::collections::HashMap::new();
    for req in [
        "proc_signal",
        "kill_process",
        "pause_process",
        "resume_process",
    ] {
        targets.insert(req, start(&fleet, &["sleep", "60"]).await);
    }
    // A resume would show on a stopped process only.
    let stopped = targets["resume_process"];
    let (code, reply) = fleet
        .request(&fleet.alice, "pause_process", json!({"pid": stopped}))
        .await;
    assert_eq!(code, 0, "{reply}");
    eventually("the pause", || proc_state(stopped) == Some('T')).await;
    let marker = |req: &str| work.join(format!("{req}.done"));
    let args = |req: &str| -> Value {
        let file = marker(req).display().to_string();
        let pid = targets
            .get(req)
            .copied()
            .unwrap_or(targets["pause_process"]);
        match req {
            "execute" => json!({"cmd": ["touch", file]}),
            "exec_command" => json!({"command": format!("touch {file}")}),
            "proc_signal" => json!({"pid": pid, "mode": "SIGKILL"}),
            "kill_process" => json!({"pid": pid, "method": "SIGKILL"}),
            "pause_process" | "resume_process" | "obtain_process_info" => json!({"pid": pid}),
            "proc_output" => json!({"proc_id": pid}),
            r if r.ends_with("_service") || r == "obtain_service_info" => {
                json!({"service_name": "concierge-i21-absent"})
            }
            _ => json!({}),
        }
    };
    // Running (or about to sleep) but the one paused: stopped.
    let untouched = |pid: u64| match proc_state(pid) {
        Some('T') => pid == stopped,
        Some('S' | 'R') => pid != stopped,
        _ => false,
    };
    for pid in targets.values() {
        assert!(untouched(*pid), "process {pid}: {:?}", proc_state(*pid));
    }

    let mut vic = fleet.client("vic_raw", &fleet.vic).await;
    for (rid, req) in served.iter().enumerate() {
        send_request(&mut vic, rid as u64, req, &args(req)).await;
    }
    let rids: Vec<u64> = (0..served.len() as u64).collect();
    let replies = replies_to(&mut vic, &rids, Duration::from_secs(10)).await;
    let refusal = json!({"result": "error", "reason": "forbidden",
        "desc": "vic (roles: viewer) may not do this: it needs the operator role"});
    let mut wrong = Vec::new();
    for (rid, req) in served.iter().enumerate() {
        let reply = &replies[&(rid as u64)];
        if is_read(req) {
            if reply["reason"] == "forbidden" {
                wrong.push(format!("read {req} refused to a viewer: {reply}"));
            }
        } else if *reply != refusal {
            wrong.push(format!("command {req} not refused to a viewer: {reply}"));
        }
    }
    // Nothing happened: every reply is in, so whatever a request did is done
    // (a signal is sent, a process registered, before the reply).
    for (req, pid) in &targets {
        if !untouched(*pid) {
            wrong.push(format!(
                "{req}'s process {pid} is {:?} now",
                proc_state(*pid)
            ));
        }
    }
    let (code, list) = fleet.request(&fleet.alice, "list_started", json!({})).await;
    assert_eq!(code, 0, "{list}");
    if list["total"].as_u64() != Some(targets.len() as u64) {
        wrong.push(format!("processes were started: {list}"));
    }
    for req in &commands {
        if marker(req).exists() {
            wrong.push(format!("{req} wrote {}", marker(req).display()));
        }
    }
    assert!(
        wrong.is_empty(),
        "a viewer is not held to the reads of PROTOCOL.md §13.3 (see commands::REQUESTS):\n{}",
        wrong.join("\n")
    );

    // The operator's same commands get through, one after another.
    let mut alice = fleet.client("alice_raw", &fleet.alice).await;
    let deadline = Duration::from_secs(20);
    let began = tokio::time::Instant::now();
    for (rid, req) in commands.iter().enumerate() {
        let rid = 100 + rid as u64;
        send_request(&mut alice, rid, req, &args(req)).await;
        let left = deadline.saturating_sub(began.elapsed());
        let reply = &replies_to(&mut alice, &[rid], left).await[&rid];
        assert_ne!(reply["reason"], "forbidden", "{req} refused to an operator");
    }
    for req in ["proc_signal", "kill_process"] {
        let exit = exit_of(&fleet, targets[req]).await;
        assert_eq!(exit["signal"], "SIGKILL", "{req}: {exit}");
    }
    let paused = targets["pause_process"];
    eventually("the operator's pause", || proc_state(paused) == Some('T')).await;
    eventually("the operator's resume", || proc_state(stopped) == Some('S')).await;
    assert!(
        marker("exec_command").exists(),
        "exec_command waits for its command"
    );
    eventually("execute's touch", || marker("execute").exists()).await;
    for pid in [paused, stopped] {
        fleet
            .request(
                &fleet.alice,
                "kill_process",
                json!({"pid": pid, "method": "SIGKILL"}),
            )
            .await;
    }
}

#[tokio::test]
async fn an_agent_can_let_anonymous_clients_read() {
    let fleet = Fleet::with_config("anonymous_role = \"viewer\"").await;
    let (code, _) = fleet.ctl_json("", &["ps", "host1"]).await;
    assert_eq!(code, 0);
    let (code, reply) = fleet.ctl_json("", &["exec", "host1", "--", "true"]).await;
    assert_refused(code, &reply, "forbidden");
}

#[tokio::test]
async fn commands_are_audited_to_the_log_and_the_audit_service() {
    let fleet = Fleet::start().await;
    let mut watcher = fleet.audit_watcher().await;
    let (code, _) = fleet
        .request(
            &fleet.alice,
            "execute",
            json!({"cmd": ["true"], "env": {"API_KEY": "hunter2"}}),
        )
        .await;
    assert_eq!(code, 0);
    let (code, _) = fleet
        .ctl_json(&fleet.vic, &["signal", "host1", "1", "SIGTERM"])
        .await;
    assert_eq!(code, 1);

    let published = watcher.skip_to("MESSAGE").await;
    let entry = &published["data"]["entry"];
    assert_eq!(
        (
            entry["user"].as_str(),
            entry["req"].as_str(),
            entry["result"].as_str()
        ),
        (Some("alice"), Some("execute"), Some("success")),
        "{published}"
    );
    assert!(
        entry["proc_id"].is_u64()
            && entry["client"]
                .as_str()
                .expect("client")
                .starts_with("alice_ctl_"),
        "{entry}"
    );
    let log = std::fs::read_to_string(fleet.work.path().join("audit.log")).expect("audit log");
    assert!(!log.contains("hunter2"), "env values are masked: {log}");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert_eq!(
        (lines[1]["user"].as_str(), lines[1]["reason"].as_str()),
        (Some("vic"), Some("forbidden"))
    );
    let (code, out, _) = fleet.ctl(&fleet.alice, &["--json", "audit", "host1"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, reply) = fleet.ctl_json(&fleet.vic, &["audit", "host1"]).await;
    assert_refused(code, &reply, "forbidden");
}

#[tokio::test]
async fn malformed_requests_get_error_replies() {
    let fleet = Fleet::start().await;
    let mut alice = fleet.client("alice_raw", &fleet.alice).await;
    let ask = |data: Value| json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "host1"}, "data": data});
    for (data, rid, reason) in [
        (json!("hello"), Value::Null, "malformed"),
        (json!({"req": "execute"}), Value::Null, "malformed"),
        (json!({"req": 5, "rid": 1}), json!(1), "malformed"),
        (
            json!({"req": "x", "rid": 2, "msg": []}),
            json!(2),
            "malformed",
        ),
        (
            json!({"req": "nope", "rid": 3}),
            json!(3),
            "unknown_request",
        ),
        (
            json!({"req": "proc_signal", "rid": 4, "msg": {"pid": "x", "mode": "SIGTERM"}}),
            json!(4),
            "bad_argument",
        ),
        (
            json!({"req": "proc_signal", "rid": 5, "msg": {"pid": 10, "mode": "SIGSEGV"}}),
            json!(5),
            "bad_argument",
        ),
        (
            json!({"req": "execute", "rid": 6, "msg": {"cmd": []}}),
            json!(6),
            "bad_argument",
        ),
        (
            json!({"req": "execute", "rid": 7, "msg": {"cmd": "ls -l"}}),
            json!(7),
            "bad_argument",
        ),
        (
            json!({"req": "execute", "rid": 8, "msg": {"cmd": ["/no/such/program"]}}),
            json!(8),
            "not_found",
        ),
        (
            json!({"req": "obtain_process_info", "rid": 9, "msg": {"pid": 0}}),
            json!(9),
            "bad_argument",
        ),
        (
            json!({"req": "proc_output", "rid": 10, "msg": {"proc_id": 1}}),
            json!(10),
            "not_found",
        ),
        (
            json!({"req": "list_services", "rid": 11}),
            json!(11),
            "no_systemd",
        ),
    ] {
        alice.send(ask(data.clone())).await;
        let reply = alice.skip_to("MESSAGE").await;
        assert_eq!(reply["data"]["rid"], rid, "{data} -> {reply}");
        assert_eq!(reply["data"]["msg"]["result"], "error", "{data} -> {reply}");
        assert_eq!(reply["data"]["msg"]["reason"], reason, "{data} -> {reply}");
        assert!(reply["data"]["msg"]["desc"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
    }
    // Replies sent to the agent are not answered (two agents would answer
    // each other forever).
    alice
        .send(ask(json!({"rid": 1, "msg": {"result": "success"}})))
        .await;
    alice.skip_to("OK").await;
    // A ping sent after it is answered first: the agent takes its messages
    // in order and a reply, if it answered one, would go out at once.
    alice.send(ask(json!({"req": "ping", "rid": 99}))).await;
    alice.skip_to("OK").await;
    let next = alice.skip_to("MESSAGE").await;
    assert_eq!(next["data"]["rid"], 99, "the reply was answered: {next}");
}

#[tokio::test]
async fn ctl_reports_a_host_that_is_not_there_and_bad_usage() {
    let fleet = Fleet::start().await;
    let (code, _, err) = fleet.ctl(&fleet.alice, &["ps", "host9"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("host9 is not connected"), "{err}");
    let (code, _, err) = ctl_at("ws://127.0.0.1:9/ws", "", &["clients"]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    let (code, _, _) = fleet
        .ctl(&fleet.alice, &["send", "host1", "{not json"])
        .await;
    assert_eq!(code, 2);
    let (code, clients, _) = fleet.ctl(&fleet.alice, &["clients"]).await;
    assert_eq!(code, 0);
    assert!(
        clients.contains("host1") && clients.contains("agent"),
        "{clients}"
    );
    let (code, services) = fleet.ctl_json(&fleet.alice, &["services"]).await;
    assert_eq!(code, 0);
    let names: Vec<&str> = services
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(
        names.contains(&"telemetry_host1") && names.contains(&"audit_host1"),
        "{names:?}"
    );
}

#[tokio::test]
async fn the_agent_reconnects_after_the_gateway_restarts() {
    let data = tempfile::tempdir().expect("data");
    let data_dir = data.path().to_str().expect("utf-8").to_owned();
    let gateway = |bind: &str| common::process::serve(bind, &data_dir);
    let mut first = gateway("127.0.0.1:0");
    let addr = first.listening().await;
    let url = format!("ws://{addr}/ws");
    let host = issue(data.path(), "host1", "agent").await;
    let alice = issue(data.path(), "alice", "operator").await;
    let work = tempfile::tempdir().expect("work");
    let mut agent = spawn_agent(&url, &host, work.path(), "").await;
    agent
        .wait_for_line(&["connected name=host1"], Duration::from_secs(10))
        .await;

    first.signal("TERM");
    first.exit(Duration::from_secs(10)).await;
    agent
        .wait_for_line(&["disconnected"], Duration::from_secs(10))
        .await;
    let mut second = gateway(&addr.to_string());
    second.listening().await;
    // Not `connected` alone: every failed attempt logs "disconnected;
    // reconnecting ...", and one queued during the restart would match.
    agent
        .wait_for_line(&["connected name=host1"], Duration::from_secs(10))
        .await;
    let (code, out, err) = ctl_at(
        &url,
        &alice,
        &["exec", "host1", "--follow", "--", "echo", "back"],
    )
    .await;
    assert_eq!(
        (code, out.as_str()),
        (0, "back\n"),
        "{err}\n{}",
        agent.log()
    );
    // Its services are there again.
    let (_, services, _) = ctl_at(&url, &alice, &["--json", "services"]).await;
    assert!(
        services.contains("telemetry_host1") && services.contains("audit_host1"),
        "{services}"
    );
}

#[tokio::test]
async fn a_slow_request_does_not_hold_up_the_others() {
    let fleet = Fleet::start().await;
    let mut alice = fleet.client("alice_raw", &fleet.alice).await;
    let to_host = |data: Value| json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "host1"}, "data": data});
    alice
        .send(to_host(
            json!({"req": "exec_command", "rid": 1, "msg": {"command": "sleep 2"}}),
        ))
        .await;
    alice.send(to_host(json!({"req": "ping", "rid": 2}))).await;
    let began = std::time::Instant::now();
    let first = alice.skip_to("MESSAGE").await;
    assert_eq!(first["data"]["rid"], 2, "{first}");
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    let second = alice
        .skip_to_within("MESSAGE", Duration::from_secs(10))
        .await;
    assert_eq!(
        (
            second["data"]["rid"].as_u64(),
            second["data"]["msg"]["exit_code"].as_i64()
        ),
        (Some(1), Some(0)),
        "{second}"
    );
}

/// Writes an executable shell script.
fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("script written");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[tokio::test]
async fn exec_allow_rules_cannot_be_walked_around() {
    // A folder of allowed tools, with one allowed tool and a folder under it.
    let tools = tempfile::tempdir().expect("tools");
    let tools_dir = tools.path().to_str().expect("utf-8").to_owned();
    script(&tools.path().join("hello"), "echo hello");
    std::fs::create_dir(tools.path().join("sub")).expect("sub");
    script(&tools.path().join("sub").join("deeper"), "id > out.txt");
    let fleet = Fleet::with_config(&format!(
        "exec_env_allow = [\"LANG\", \"PATH\"]\n\
         [[exec_allow]]\nexecutable = \"{tools_dir}/*\"\n\
         [[exec_allow]]\nexecutable = \"ls\"\nargs = [\"-l\", \"**\"]\n"
    ))
    .await;
    let work = fleet.work.path();
    // An attacker's `ls`, and a library, in a folder they control.
    let evil = work.join("evil");
    std::fs::create_dir(&evil).expect("evil");
    script(&evil.join("ls"), "id > out.txt");
    let depth = tools.path().components().count() - 1;
    let up = "../".repeat(depth);

    // What the rules allow still runs.
    let (code, reply) = fleet
        .request(
            &fleet.alice,
            "exec_command",
            json!({"command": format!("{tools_dir}/hello")}),
        )
        .await;
    assert_eq!(
        (code, reply["stdout"].as_str()),
        (0, Some("hello\n")),
        "{reply}"
    );
    let (code, reply) = fleet
        .request(&fleet.alice, "exec_command", json!({"command": "ls -l"}))
        .await;
    assert_eq!((code, reply["exit_code"].as_i64()), (0, Some(0)), "{reply}");

    for (what, req, msg) in [
        (
            "`..` out of the tools folder",
            "exec_command",
            json!({"command": format!("{tools_dir}/{up}bin/sh -c 'id > out.txt'")}),
        ),
        (
            "`*` across a `/`",
            "exec_command",
            json!({"command": format!("{tools_dir}/sub/deeper")}),
        ),
        (
            "a shell by its bare name",
            "exec_command",
            json!({"command": "sh -c 'echo hi; id > out.txt'"}),
        ),
        (
            "a relative path climbing to a shell",
            "execute",
            json!({"cmd": [format!("../../{up}bin/sh"), "-c", "id > out.txt"]}),
        ),
        (
            "LD_PRELOAD into an allowed program",
            "exec_command",
            json!({"command": "ls -l", "env": {"LD_PRELOAD": evil.join("x.so")}}),
        ),
        (
            "a folder outside work_dir",
            "exec_command",
            json!({"command": "ls -l", "cwd": "/"}),
        ),
    ] {
        let (code, reply) = fleet.request(&fleet.alice, req, msg.clone()).await;
        assert_refused(code, &reply, "forbidden");
        assert!(
            reply["desc"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: {reply}"
        );
    }
    // The request's PATH may be set here, but the program is found on the
    // agent's: the real ls runs, not the attacker's.
    let (code, reply) = fleet
        .request(
            &fleet.alice,
            "exec_command",
            json!({"command": "ls -l", "env": {"PATH": format!("{}:/usr/bin:/bin", evil.display())}}),
        )
        .await;
    assert_eq!((code, reply["exit_code"].as_i64()), (0, Some(0)), "{reply}");
    assert!(
        reply["stdout"].as_str().is_some_and(|o| o.contains("evil")),
        "{reply}"
    );
    assert!(
        !work.join("out.txt").exists() && !tools.path().join("out.txt").exists(),
        "an escape ran: {}",
        std::fs::read_to_string(work.join("out.txt")).unwrap_or_default()
    );
}

#[tokio::test]
async fn a_rule_handing_wildcards_to_a_shell_is_refused_at_start() {
    let work = tempfile::tempdir().expect("work");
    let mut agent = spawn_agent(
        "ws://127.0.0.1:9/ws",
        "",
        work.path(),
        "[[exec_allow]]\nexecutable = \"sh\"\nargs = [\"-c\", \"echo *\"]",
    )
    .await;
    let status = agent.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(2), "{}", agent.log());
    let log = agent.log();
    assert!(
        log.contains("\"sh\"") && log.contains("runs_code = true"),
        "{log}"
    );
}

/// The live processes (zombies aside) of process group `pgid`, from /proc.
fn group_members(pgid: u64) -> Vec<u64> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let fields: Vec<&str> = stat
                .rsplit_once(") ")
                .map(|(_, rest)| rest.split(' ').collect())
                .unwrap_or_default();
            fields.first().is_some_and(|s| *s != "Z") && fields.get(2) == Some(&&*pgid.to_string())
        })
        .collect()
}

#[tokio::test]
async fn a_started_process_counts_and_is_signalled_with_its_whole_tree() {
    let fleet = Fleet::with_config("max_running = 4\nkeep_exited = 1").await;
    // A shell, its child shell and two grandchildren: four processes.
    let tree = start(
        &fleet,
        &["sh", "-c", "sh -c 'sleep 60 & sleep 60 & wait' & wait"],
    )
    .await;
    eventually("four processes in the tree", || {
        group_members(tree).len() == 4
    })
    .await;
    let members = group_members(tree);
    let (code, reply) = fleet
        .request(&fleet.alice, "execute", json!({"cmd": ["true"]}))
        .await;
    assert_refused(code, &reply, "limit");
    assert!(
        reply["desc"]
            .as_str()
            .is_some_and(|d| d.contains("max_running")),
        "{reply}"
    );

    // SIGTERM to the started process reaches its grandchildren.
    let (code, reply) = fleet
        .request(&fleet.alice, "kill_process", json!({"pid": tree}))
        .await;
    assert_eq!((code, &reply["group"]), (0, &json!(true)), "{reply}");
    eventually("the whole tree ended", || {
        members
            .iter()
            .all(|m| proc_state(*m).is_none_or(|s| s == 'Z'))
    })
    .await;

    // A process that exited and left a child behind: the orphan is still
    // counted and still reached through the started process's pid.
    let left = start(&fleet, &["sh", "-c", "sleep 60 & exit 0"]).await;
    assert_eq!(exit_of(&fleet, left).await["code"], 0);
    let orphans = group_members(left);
    assert_eq!(orphans.len(), 1, "the sleep it left");
    // More exits than keep_exited do not make the agent forget it.
    for _ in 0..2 {
        let done = start(&fleet, &["true"]).await;
        exit_of(&fleet, done).await;
    }
    let (code, reply) = fleet
        .request(
            &fleet.alice,
            "kill_process",
            json!({"pid": left, "method": "SIGKILL"}),
        )
        .await;
    assert_eq!(code, 0, "{reply}");
    eventually("the orphan ended", || {
        orphans
            .iter()
            .all(|m| proc_state(*m).is_none_or(|s| s == 'Z'))
    })
    .await;
}

/// A `proc_output` follow request for `pid`, as a MESSAGE to host1.
fn follow_request(rid: u64, pid: u64) -> Value {
    json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "host1"},
           "data": {"req": "proc_output", "rid": rid, "msg": {"proc_id": pid, "follow": true}}})
}

/// The `data` of the first MESSAGE (among those `seen` before, then the
/// ones arriving) for which `wanted` holds; every MESSAGE read is kept in
/// `seen`. A client's `recv` bounds each wait.
async fn message_where(
    client: &mut Client,
    seen: &mut Vec<Value>,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    if let Some(found) = seen.iter().find(|d| wanted(d)) {
        return found.clone();
    }
    loop {
        let payload = client.skip_to("MESSAGE").await;
        let data = payload["data"].clone();
        seen.push(data.clone());
        if wanted(&data) {
            return data;
        }
    }
}

/// The reply (not an event) to request `rid`.
async fn reply_to(client: &mut Client, seen: &mut Vec<Value>, rid: u64) -> Value {
    message_where(client, seen, |d| d["rid"] == rid && d["msg"].is_object())
        .await
        .get("msg")
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn follows_are_capped_per_requester_per_process_and_in_all() {
    let fleet = Fleet::with_config(
        "max_follows = 4\nmax_follows_per_requester = 2\nmax_follows_per_process = 3",
    )
    .await;
    let chatty = start(
        &fleet,
        &["sh", "-c", "while :; do echo chatter; sleep 0.05; done"],
    )
    .await;
    let quiet = start(&fleet, &["sleep", "60"]).await;

    // A requester's third follow ends its first, which is told so.
    let mut alice = fleet.client("alice_raw", &fleet.alice).await;
    let mut seen = Vec::new();
    for rid in 1..=3 {
        alice.send(follow_request(rid, chatty)).await;
    }
    for rid in 1..=3 {
        let reply = reply_to(&mut alice, &mut seen, rid).await;
        assert_eq!(reply["following"], true, "{reply}");
    }
    let lost = message_where(&mut alice, &mut seen, |d| {
        d["rid"] == 1 && d["event"] == "exit"
    })
    .await;
    assert!(
        lost["lost"] == true
            && lost["desc"]
                .as_str()
                .is_some_and(|d| d.contains("max_follows_per_requester")),
        "{lost}"
    );

    // The chatty process is followed twice: a third follower, not a fourth.
    let mut vic = fleet.client("vic_raw", &fleet.vic).await;
    let mut vic_seen = Vec::new();
    vic.send(follow_request(1, chatty)).await;
    vic.send(follow_request(2, chatty)).await;
    let reply = reply_to(&mut vic, &mut vic_seen, 1).await;
    assert_eq!(reply["following"], true, "{reply}");
    let refused = reply_to(&mut vic, &mut vic_seen, 2).await;
    assert_eq!(refused["reason"], "limit", "{refused}");
    assert!(
        refused["desc"]
            .as_str()
            .is_some_and(|d| d.contains("max_follows_per_process")),
        "{refused}"
    );

    // Four follows in all, then none more.
    let mut idle = fleet.client("vic_idle", &fleet.vic).await;
    idle.send(follow_request(1, quiet)).await;
    let reply = reply_to(&mut idle, &mut Vec::new(), 1).await;
    assert_eq!(reply["following"], true, "{reply}");
    let mut other = fleet.client("vic_other", &fleet.vic).await;
    other.send(follow_request(1, quiet)).await;
    let refused = reply_to(&mut other, &mut Vec::new(), 1).await;
    assert_eq!(refused["reason"], "limit", "{refused}");

    // When a requester leaves, its follows end: a chatty process's at its
    // next event, a quiet one's at the agent's next check of its requesters
    // (it sends nothing that would tell). Each makes room for one more.
    vic.close().await;
    follow_when_room(&mut other, quiet).await;
    idle.close().await;
    let mut last = fleet.client("vic_last", &fleet.vic).await;
    follow_when_room(&mut last, quiet).await;
}

/// Asks to follow `pid` until the agent has room for it (10 s at most).
async fn follow_when_room(client: &mut Client, pid: u64) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for rid in 100.. {
        client.send(follow_request(rid, pid)).await;
        let reply = reply_to(client, &mut seen, rid).await;
        if reply["following"] == true {
            return;
        }
        assert_eq!(reply["reason"], "limit", "{reply}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room for a follow: the departed requester's follows were not ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_viewer_asking_for_1500_follows_and_leaving_does_not_get_the_agent_thrown_off() {
    let fleet = Fleet::start().await;
    let chatty = start(
        &fleet,
        &["sh", "-c", "while :; do echo chatter; sleep 0.01; done"],
    )
    .await;
    let mut vic = fleet.client("vic_raw", &fleet.vic).await;
    for rid in 0..1500 {
        vic.send(follow_request(rid, chatty)).await;
    }
    let mut seen = Vec::new();
    let last = reply_to(&mut vic, &mut seen, 1499).await;
    assert_eq!(last["following"], true, "{last}");
    vic.close().await;

    // Nobody follows any more: the MESSAGEs the gateway receives stop.
    let metrics = || async {
        let text = reqwest::get(fleet.server.http_url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        payloads_in(&text, "MESSAGE")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let before = metrics().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if metrics().await == before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent still streams after its requester left"
        );
    }
    // And the agent was never thrown off.
    let (code, _) = fleet.request(&fleet.alice, "ping", json!({})).await;
    assert_eq!(code, 0);
    let log = fleet.agent.log();
    assert!(!log.contains("disconnected"), "{log}");
}

#[tokio::test]
async fn started_processes_do_not_inherit_the_agents_token() {
    let fleet = Fleet::launch("", true).await;
    let (code, reply) = fleet
        .request(&fleet.alice, "exec_command", json!({"command": "env"}))
        .await;
    assert_eq!(code, 0, "{reply}");
    let env = reply["stdout"].as_str().expect("stdout");
    assert!(env.contains("PATH="), "{env}");
    assert!(!env.contains("CONCIERGE_AGENT_TOKEN"), "{env}");
}

#[tokio::test]
async fn exec_command_answers_even_when_no_exited_process_is_kept() {
    let fleet = Fleet::with_config("keep_exited = 0\nexec_timeout_secs = 5").await;
    let (code, reply) = fleet
        .request(&fleet.alice, "exec_command", json!({"command": "echo hi"}))
        .await;
    assert_eq!(
        (code, reply["stdout"].as_str()),
        (0, Some("hi\n")),
        "{reply}"
    );
}

/// MESSAGE `data` that JSON's grammar allows and strict parsers refuse
/// (serde_json, Python's `json`), with what the gateway's refusal names.
fn poisons() -> Vec<(String, &'static str)> {
    vec![
        (r#""\ud800""#.to_owned(), "lone surrogate"),
        ("1e400".to_owned(), "too large for a double"),
        (
            format!("{}0{}", "[".repeat(200), "]".repeat(200)),
            "nested deeper than 64",
        ),
    ]
}

#[tokio::test]
async fn data_no_client_can_read_is_refused_and_the_agent_stays_connected() {
    let fleet = Fleet::start().await;
    let mut vic = fleet.client("vic_raw", &fleet.vic).await;
    let mut seq = 0;
    for (data, named) in poisons() {
        for target in [r#"{"type":"ALL"}"#, r#"{"type":"NAME","name":"host1"}"#] {
            vic.send_text(format!(
                r#"{{"type":"MESSAGE","target":{target},"data":{data}}}"#
            ))
            .await;
            let refused = vic.expect("ERROR_PROTOCOL").await;
            assert_eq!(refused["seq"], seq, "{refused}");
            let desc = refused["desc"].as_str().unwrap_or_default();
            assert!(
                desc.contains("field `data`") && desc.contains(named),
                "{target} {named}: {desc}"
            );
            seq += 1;
        }
    }
    // The agent reads its frames in order: its answer to a ping sent after
    // the poisons shows it read past them, on the same connection.
    vic.send(
        json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "host1"},
        "data": {"req": "ping", "rid": 77}}),
    )
    .await;
    let pong = vic.skip_to("MESSAGE").await;
    assert_eq!(
        (
            pong["data"]["rid"].as_u64(),
            pong["data"]["msg"]["result"].as_str()
        ),
        (Some(77), Some("success")),
        "{pong}"
    );
    assert_eq!(pong["data"]["msg"]["undecodable_frames"], 0, "{pong}");
    let log = fleet.agent.log();
    assert!(!log.contains("disconnected"), "{log}");
}

#[tokio::test]
async fn the_agent_skips_frames_it_cannot_decode_and_keeps_its_connection() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    // A gateway of the test's own that says HELLO and then sends what no
    // gateway of this version lets through.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let url = format!("ws://{}/ws", listener.local_addr().expect("addr"));
    let work = tempfile::tempdir().expect("work");
    let agent = spawn_agent(&url, "not-checked", work.path(), "").await;
    let (tcp, _) = tokio::time::timeout(common::PATIENCE, listener.accept())
        .await
        .expect("the agent connects")
        .expect("accepts");
    let mut ws = tokio_tungstenite::accept_async(tcp)
        .await
        .expect("upgrades");
    let mut frames = Vec::new();
    // Every read is bounded: a missing frame fails in seconds, pings or not.
    let next_text = async |ws: &mut tokio_tungstenite::WebSocketStream<_>| {
        let deadline = tokio::time::Instant::now() + common::PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    return serde_json::from_str::<Value>(&text).expect("the agent sends JSON")
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                other => panic!("the agent's connection: {other:?}"),
            }
        }
    };
    let identify = next_text(&mut ws).await;
    assert_eq!(identify["type"], "IDENTIFY", "{identify}");
    let hello = json!({"type": "HELLO", "uuid": uuid(1), "version": "0.2.0"});
    ws.send(Message::Text(hello.to_string().into()))
        .await
        .expect("sends");
    let origin =
        json!({"name": "vic", "uuid": uuid(2), "tags": [], "user": "vic", "roles": ["viewer"]});
    let message = |data: &str| {
        format!(r#"{{"type":"MESSAGE","target":{{"type":"ALL"}},"origin":{origin},"data":{data}}}"#)
    };
    frames.extend(poisons().iter().map(|(data, _)| message(data)));
    frames.push("not JSON at all".to_owned());
    frames.push(r#"{"type":"FROM_A_NEWER_GATEWAY","x":1}"#.to_owned());
    let skipped = frames.len();
    frames.push(message(r#"{"req":"ping","rid":5}"#));
    for frame in frames {
        ws.send(Message::Text(frame.into())).await.expect("sends");
    }
    let pong = loop {
        let payload = next_text(&mut ws).await;
        if payload["type"] == "MESSAGE" && payload["data"]["rid"] == 5 {
            break payload;
        }
    };
    assert_eq!(
        (
            pong["data"]["msg"]["result"].as_str(),
            pong["data"]["msg"]["undecodable_frames"].as_u64()
        ),
        (Some("success"), Some(skipped as u64)),
        "{pong}\n{}",
        agent.log()
    );
    assert!(!agent.log().contains("disconnected"), "{}", agent.log());
}

fn uuid(n: u8) -> String {
    format!("00000000-0000-4000-8000-0000000000{n:02x}")
}

#[tokio::test]
async fn a_request_nested_to_the_limit_is_still_audited_and_readable() {
    let fleet = Fleet::start().await;
    let mut watcher = fleet.audit_watcher().await;
    // data {msg {x: 62 arrays}}: 64 levels, as deep as the gateway relays.
    let deep = format!("{}0{}", "[".repeat(62), "]".repeat(62));
    let mut vic = fleet.client("vic_raw", &fleet.vic).await;
    vic.send_text(format!(
        r#"{{"type":"MESSAGE","target":{{"type":"NAME","name":"host1"}},"data":{{"req":"execute","rid":3,"msg":{{"x":{deep}}}}}}}"#
    ))
    .await;
    let refused = vic.skip_to("MESSAGE").await;
    assert_eq!(refused["data"]["msg"]["reason"], "forbidden", "{refused}");
    // Published, with the arguments as their JSON text.
    let published = watcher.skip_to("MESSAGE").await;
    let args = &published["data"]["entry"]["args"];
    assert_eq!(args.as_str(), Some(format!(r#"{{"x":{deep}}}"#).as_str()));
    // And the trail can still be read.
    let (code, out, err) = fleet.ctl(&fleet.alice, &["--json", "audit", "host1"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(r#"[[[[0]]]]"#), "{out}");
}

#[tokio::test]
async fn a_viewer_cannot_take_a_hosts_services_before_its_agent_connects() {
    let server = TestServer::start();
    let host = issue(server.data.path(), "host1", "agent").await;
    let vic = issue(server.data.path(), "vic", "viewer").await;
    let mut viewer = server.connect().await;
    viewer
        .identify_with(
            json!({"type": "IDENTIFY", "name": "vic", "version": "0.2.0",
                              "tags": ["agent"], "token": vic}),
        )
        .await;
    let mut seq = 0;
    for service in ["telemetry_host1", "audit_host1"] {
        let create = json!({"type": "SERVICE_CREATE", "service": service});
        let reply = viewer.answer(create, seq).await;
        seq += 1;
        assert_eq!(reply["type"], "BAD", "{reply}");
    }

    // The agent connects and owns them: what a subscriber hears there
    // comes from host1 itself, as its verified origin says.
    let work = tempfile::tempdir().expect("work dir");
    let agent = spawn_agent(&server.ws_url(), &host, work.path(), "").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let subscribe = json!({"type": "SELF_SUBSCRIBE", "service": "telemetry_host1"});
        let reply = viewer.answer(subscribe, seq).await;
        seq += 1;
        if reply["type"] == "SELF_SUBSCRIBE_RESULT" && reply["successful"] == true {
            assert_eq!(reply["service"]["name"], "telemetry_host1");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never created its service: {reply}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event = viewer.skip_to("MESSAGE").await;
    let origin = &event["origin"];
    assert_eq!(origin["name"], "host1", "{event}");
    assert_eq!(origin["roles"], json!(["agent"]), "{event}");
    assert_eq!(origin["service"]["owner_uuid"], origin["uuid"], "{event}");
    assert_eq!(event["data"]["event"], "telemetry", "{event}");
}
