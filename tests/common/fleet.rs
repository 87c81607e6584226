//! The fleet the job and alert tests run on: a `concierge serve` process
//! with its data folder, `host_0`… agents labelled `role=web|db` (even|odd) and
//! `dc=fra|ams` (every fourth in fra), and an operator client that speaks
//! the job requests to the gateway's reserved name.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::common::jobs::Operator;
use crate::common::process::{add_user, command, issue_token, serve_with, Process};

pub struct Fleet {
    pub data: tempfile::TempDir,
    pub work: tempfile::TempDir,
    pub gateway: Process,
    pub addr: SocketAddr,
    agents: Vec<Option<Process>>,
    /// With tokens: each host's own, and the people's.
    host_tokens: Vec<String>,
    pub operator: String,
    pub viewer: String,
    pub admin: String,
}

impl Fleet {
    /// A gateway and `n` agents, all connected and in the inventory. With
    /// `"tokens"` in `flags` the gateway requires tokens (olga operates,
    /// vic views); without, it is open and the agents let anonymous
    /// clients operate.
    pub async fn start(n: usize, flags: &[&str]) -> Fleet {
        Fleet::start_with(n, flags, &[]).await
    }

    /// [`start`](Fleet::start) with more flags for `concierge serve`; with
    /// tokens, ada administers.
    pub async fn start_with(n: usize, flags: &[&str], serve_flags: &[&str]) -> Fleet {
        let data = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let store = ["--data-dir", data.path().to_str().unwrap()];
        let tokens = flags.contains(&"tokens");
        let mut host_tokens = Vec::new();
        let (mut operator, mut viewer, mut admin) = (String::new(), String::new(), String::new());
        if tokens {
            for i in 0..n {
                host_tokens.push(issue_token(&store, &format!("host_{i}"), "agent").await);
            }
            // An account makes the gateway require tokens.
            add_user(&store, "olga", "operator", "olga's long password").await;
            operator = issue_token(&store, "olga", "operator").await;
            viewer = issue_token(&store, "vic", "viewer").await;
            admin = issue_token(&store, "ada", "admin").await;
        }
        let mut gateway = serve_with("127.0.0.1:0", data.path().to_str().unwrap(), serve_flags);
        let addr = gateway.listening().await;
        let mut fleet = Fleet {
            data,
            work,
            gateway,
            addr,
            agents: Vec::new(),
            host_tokens,
            operator,
            viewer,
            admin,
        };
        for i in 0..n {
            let agent = fleet.agent(i);
            fleet.agents.push(Some(agent));
        }
        fleet.until_online(n).await;
        fleet
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Host `i`'s work folder.
    pub fn work_of(&self, i: usize) -> PathBuf {
        self.work.path().join(format!("host_{i}"))
    }

    fn agent(&self, i: usize) -> Process {
        let dir = self.work_of(i);
        std::fs::create_dir_all(&dir).unwrap();
        let labels = format!(
            "role={},dc={}",
            if i.is_multiple_of(2) { "web" } else { "db" },
            if i.is_multiple_of(4) { "fra" } else { "ams" }
        );
        let url = self.url();
        let name = format!("host_{i}");
        let mut cmd = command(&[
            "agent",
            "--url",
            &url,
            "--name",
            &name,
            "--label",
            &labels,
            "--work-dir",
            dir.to_str().unwrap(),
            "--systemd",
            "off",
        ]);
        match self.host_tokens.get(i) {
            Some(token) => cmd.env("CONCIERGE_AGENT_TOKEN", token),
            None => cmd.env("CONCIERGE_AGENT_ANONYMOUS_ROLE", "operator"),
        };
        Process::spawn(cmd)
    }

    /// Waits until `n` hosts are online in the inventory.
    pub async fn until_online(&self, n: usize) {
        let mut op = self.operator().await;
        let deadline = tokio::time::Instant::now() + crate::common::jobs::JOB_PATIENCE;
        loop {
            let page = op.ask("hosts", json!({"online": true})).await;
            let online = page["hosts"].as_array().map_or(0, Vec::len);
            if online >= n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{online} of {n} hosts online"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops host `i`'s agent and waits until the gateway knows.
    pub async fn stop(&mut self, i: usize) {
        let mut agent = self.agents[i].take().expect("a running agent");
        agent.signal("TERM");
        agent.exit(Duration::from_secs(10)).await;
        let mut op = self.operator().await;
        let name = format!("host_{i}");
        let deadline = tokio::time::Instant::now() + crate::common::jobs::JOB_PATIENCE;
        loop {
            let page = op
                .ask("hosts", json!({"target": name, "online": true}))
                .await;
            if page["hosts"].as_array().is_some_and(Vec::is_empty) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} stays online"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills host `i`'s agent outright (SIGKILL).
    pub async fn kill(&mut self, i: usize) {
        let mut agent = self.agents[i].take().expect("a running agent");
        agent.signal("KILL");
        agent.exit(Duration::from_secs(10)).await;
    }

    /// Starts host `i`'s agent again.
    pub async fn restart(&mut self, i: usize) {
        self.agents[i] = Some(self.agent(i));
    }

    /// How many times each host ran a counted command (lines of `ran`).
    pub fn runs(&self) -> BTreeMap<String, usize> {
        (0..self.agents.len())
            .filter_map(|i| {
                let ran = std::fs::read_to_string(self.work_of(i).join("ran")).ok()?;
                Some((format!("host_{i}"), ran.lines().count()))
            })
            .collect()
    }

    /// Whether a process runs in one of the hosts' work folders.
    pub fn sleeping(&self) -> bool {
        let root = self.work.path();
        std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
            std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(root))
                && std::fs::read(entry.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).starts_with("sleep"))
        })
    }

    /// The names of the hosts whose index passes `which`, sorted by name.
    pub fn names_where(&self, which: impl Fn(usize) -> bool) -> Vec<String> {
        let mut names: Vec<String> = (0..self.agents.len())
            .filter(|i| which(*i))
            .map(|i| format!("host_{i}"))
            .collect();
        names.sort();
        names
    }

    /// The operator's connection.
    pub async fn operator(&self) -> Operator {
        Operator::connect(&self.url(), &self.operator).await
    }
}
