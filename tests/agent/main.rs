//! The host agent and `concierge ctl`, for real: a gateway on an ephemeral
//! port, the `concierge agent` binary connected to it, `concierge ctl` run
//! as a user runs it, and real processes on this machine. Here, the fleet
//! that the tests start and what they share; each module tests a concern.

#[path = "../common/mod.rs"]
mod common;

mod access;
mod connection;
mod escapes;
mod follows;
mod jobs;
mod policy;
mod processes;
mod refusals;
mod requests;
mod resume;
mod summaries;
mod telemetry;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use common::process::{command, ctl, ctl_json, outcome, Process};
use common::{Client, TestServer};

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
        outcome(ctl(&self.server.ws_url(), token).args(args)).await
    }

    /// `ctl --json`, parsed: exit code and the last JSON document printed.
    async fn ctl_json(&self, token: &str, args: &[&str]) -> (i32, Value) {
        ctl_json(&self.server.ws_url(), token, args).await
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

/// Asserts that `ctl` failed (exit status 1) on an error reply of `reason`.
fn assert_refused(code: i32, reply: &Value, reason: &str) {
    assert_eq!(
        (code, reply["result"].as_str(), reply["reason"].as_str()),
        (1, Some("error"), Some(reason)),
        "{reply}"
    );
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

fn payloads_in(text: &str, kind: &str) -> u64 {
    metric(
        text,
        &format!("concierge_payloads_in_total{{type=\"{kind}\"}}"),
    )
}

/// The MESSAGEs the gateway received other than the agent's health
/// summaries, which it sends every interval whatever else it does.
fn messages_but_summaries(text: &str) -> u64 {
    let summaries = metric(text, "concierge_summaries_accepted_total")
        + metric(text, "concierge_summaries_refused_total");
    payloads_in(text, "MESSAGE").saturating_sub(summaries)
}

fn metric(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key).filter(|v| v.starts_with(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
