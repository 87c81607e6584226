//! A client that makes the gateway's job requests (PROTOCOL §19) to its
//! reserved name, as `ctl` and the console do, for the tests of jobs alone
//! and among replicas.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::Client;

/// How long a job of the tests may take.
pub const JOB_PATIENCE: Duration = Duration::from_secs(60);

/// A client that makes the gateway's job requests.
pub struct Operator {
    client: Client,
    rid: u64,
}

impl Operator {
    /// Connects as `olga_…` (with `token`, unless it is empty).
    pub async fn connect(url: &str, token: &str) -> Operator {
        // Each connection a name of its own, as ctl's are.
        let name = format!("olga_{:06x}", rand_suffix());
        let mut identify = json!({"type": "IDENTIFY", "name": name, "version": "0.2.0"});
        if !token.is_empty() {
            identify["token"] = json!(token);
        }
        Operator::identified(url, identify).await
    }

    /// Connects and identifies with `identify` (a host's, say).
    pub async fn identified(url: &str, identify: Value) -> Operator {
        let mut client = Client::connect(url).await;
        client.identify_with(identify).await;
        Operator { client, rid: 0 }
    }

    /// Closes the connection.
    pub async fn close(self) {
        self.client.close().await;
    }

    /// The reply's `msg` to request `req`.
    pub async fn reply(&mut self, req: &str, msg: Value) -> Value {
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

/// A number that differs between connections of one test.
fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
