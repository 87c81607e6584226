//! The fleet the job tests run on: a `concierge serve` process with its
//! data folder, `host_0`… agents labelled `role=web|db` (even|odd) and
//! `dc=fra|ams` (every fourth in fra), and an operator client that speaks
//! the job requests to the gateway's reserved name.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::process::{command, issue_token, serve, Process};
use crate::common::Client;

/// How long a job of these tests may take.
const JOB_PATIENCE: Duration = Duration::from_secs(60);

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
}

impl Fleet {
    /// A gateway and `n` agents, all connected and in the inventory. With
    /// `"tokens"` in `flags` the gateway requires tokens (olga operates,
    /// vic views); without, it is open and the agents let anonymous
    /// clients operate.
    pub async fn start(n: usize, flags: &[&str]) -> Fleet {
        let data = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let store = ["--data-dir", data.path().to_str().unwrap()];
        let tokens = flags.contains(&"tokens");
        let mut host_tokens = Vec::new();
        let (mut operator, mut viewer) = (String::new(), String::new());
        if tokens {
            for i in 0..n {
                host_tokens.push(issue_token(&store, &format!("host_{i}"), "agent").await);
            }
            operator = issue_token(&store, "olga", "operator").await;
            viewer = issue_token(&store, "vic", "viewer").await;
        }
        let mut gateway = serve("127.0.0.1:0", data.path().to_str().unwrap());
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
        let deadline = tokio::time::Instant::now() + JOB_PATIENCE;
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
        let deadline = tokio::time::Instant::now() + JOB_PATIENCE;
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

/// A client that makes the gateway's job requests.
pub struct Operator {
    client: Client,
    rid: u64,
}

impl Operator {
    /// Connects as `olga` (with `token`, unless it is empty).
    pub async fn connect(url: &str, token: &str) -> Operator {
        let mut client = Client::connect(url).await;
        let mut identify =
            json!({"type": "IDENTIFY", "name": "olga", "version": "0.2.0", "take_over": true});
        if !token.is_empty() {
            identify["token"] = json!(token);
        }
        client.identify_with(identify).await;
        Operator { client, rid: 0 }
    }

    /// The reply's `msg` to request `req`.
    async fn reply(&mut self, req: &str, msg: Value) -> Value {
        self.rid += 1;
        let rid = self.rid;
        self.client
            .send(
                json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "concierge"},
                "data": {"req": req, "rid": rid, "msg": msg}}),
            )
            .await;
        loop {
            let frame = self.client.recv_within(JOB_PATIENCE).await;
            if frame["type"] == "MESSAGE" && frame["data"]["rid"] == rid {
                return frame["data"]["msg"].clone();
            }
        }
    }

    /// The success body of `req`.
    pub async fn ask(&mut self, req: &str, msg: Value) -> Value {
        let reply = self.reply(req, msg.clone()).await;
        assert_eq!(reply["result"], "success", "{req} {msg}: {reply}");
        reply
    }

    /// The failure `req` is answered with.
    pub async fn ask_err(&mut self, req: &str, msg: Value) -> Value {
        let reply = self.reply(req, msg.clone()).await;
        assert_eq!(reply["result"], "error", "{req} {msg}: {reply}");
        reply
    }

    /// Creates a job; its id.
    pub async fn run(&mut self, target: &str, request: Value) -> String {
        self.run_with(target, request, json!({})).await
    }

    pub async fn run_with(&mut self, target: &str, request: Value, options: Value) -> String {
        let mut spec = json!({"target": target, "request": request});
        spec.as_object_mut()
            .unwrap()
            .extend(options.as_object().unwrap().clone());
        let created = self.ask("job_create", spec).await;
        assert_eq!(created["job"]["state"], "running", "{created}");
        created["job"]["id"].as_str().unwrap().to_owned()
    }

    /// The job's record once it is over.
    pub async fn until_over(&mut self, job: &str) -> Value {
        let deadline = tokio::time::Instant::now() + JOB_PATIENCE;
        loop {
            let detail = self.ask("job_get", json!({"job": job, "limit": 0})).await;
            if detail["job"]["state"] != "running" {
                return detail["job"].clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {job} is still running: {detail}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `host` is in `state` in `job`.
    pub async fn until_state(&mut self, job: &str, host: &str, state: &str) {
        let deadline = tokio::time::Instant::now() + JOB_PATIENCE;
        loop {
            let states = self.states(job).await;
            if states.get(host).map(String::as_str) == Some(state) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{host} is not {state}: {states:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every host row of `job`.
    pub async fn hosts(&mut self, job: &str) -> Vec<Value> {
        let detail = self.ask("job_get", json!({"job": job})).await;
        detail["hosts"].as_array().unwrap().clone()
    }

    /// Each host's state in `job`.
    pub async fn states(&mut self, job: &str) -> BTreeMap<String, String> {
        self.hosts(job)
            .await
            .iter()
            .map(|h| {
                (
                    h["host"].as_str().unwrap().to_owned(),
                    h["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}
