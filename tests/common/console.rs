//! What the console's browser tests set up around a gateway: its accounts
//! (then it requires tokens), and a fleet of hosts for the Fleet page:
//! real WebSocket clients, each with a host token of its own (issued over
//! the admin API, as an admin would), that identify as hosts, file their
//! facts and a health summary, and stay connected, answering the gateway's
//! pings, until the test lets some go (they become offline).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::process::add_user;
use super::Client;

/// How many hosts connect, or tokens are issued, at once.
const AT_ONCE: usize = 16;

/// Adds `users` (name, role, password) to the gateway at `base` whose data
/// folder is `data`, and waits until the gateway has seen them (it then
/// requires tokens).
pub async fn accounts(base: &str, data: &str, users: &[(&str, &str, &str)]) {
    for (name, role, password) in users {
        add_user(&["--data-dir", data], name, role, password).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reqwest::get(format!("{base}/metrics"))
        .await
        .expect("answered")
        .status()
        != StatusCode::UNAUTHORIZED
    {
        assert!(tokio::time::Instant::now() < deadline, "accounts not seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A host token for each of `names` (`POST /admin/tokens`, role `agent`),
/// as `admin` (an admin's token) on the gateway at `base`. The inventory
/// lists each host from then on, as never connected.
pub async fn host_tokens(base: &str, admin: &str, names: &[String]) -> Vec<String> {
    let http = reqwest::Client::new();
    let gate = Arc::new(Semaphore::new(AT_ONCE));
    let mut issued = JoinSet::new();
    for (i, name) in names.iter().enumerate() {
        let (http, gate, name) = (http.clone(), Arc::clone(&gate), name.clone());
        let (url, admin) = (format!("{base}/admin/tokens"), admin.to_owned());
        issued.spawn(async move {
            let _permit = gate.acquire().await.expect("open");
            let resp = http
                .post(url)
                .bearer_auth(admin)
                .json(&json!({"name": name, "role": "agent", "ttl_secs": 86_400}))
                .send()
                .await
                .expect("answered");
            let status = resp.status();
            assert_eq!(
                status,
                StatusCode::CREATED,
                "token for {name}: {}",
                resp.text().await.unwrap_or_default()
            );
            let body: Value = resp.json().await.expect("JSON");
            (i, body["token"].as_str().expect("a token").to_owned())
        });
    }
    let mut tokens = vec![String::new(); names.len()];
    while let Some(done) = issued.join_next().await {
        let (i, token) = done.expect("issued");
        tokens[i] = token;
    }
    tokens
}

/// One simulated host: its name, token, labels and the summary it reports.
pub struct HostPlan {
    pub name: String,
    pub token: String,
    pub labels: BTreeMap<String, String>,
    pub summary: Value,
}

/// Hosts that stay connected until [`Hosts::disconnect`] (or the drop).
pub struct Hosts {
    live: BTreeMap<String, (oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Hosts {
    /// Connects every host of `plans` to `ws_url`, `AT_ONCE` at a time;
    /// each identifies with its token, files its facts and its summary
    /// (both answered with success) before this returns.
    pub async fn connect(ws_url: &str, plans: Vec<HostPlan>) -> Hosts {
        let gate = Arc::new(Semaphore::new(AT_ONCE));
        let mut joining = JoinSet::new();
        for plan in plans {
            let (gate, url) = (Arc::clone(&gate), ws_url.to_owned());
            joining.spawn(async move {
                let client = {
                    let _permit = gate.acquire().await.expect("open");
                    join(&url, &plan).await
                };
                let (stop, stopped) = oneshot::channel();
                (plan.name, stop, tokio::spawn(stay(client, stopped)))
            });
        }
        let mut live = BTreeMap::new();
        while let Some(done) = joining.join_next().await {
            let (name, stop, task) = done.expect("a host joined");
            live.insert(name, (stop, task));
        }
        Hosts { live }
    }

    /// Closes `name`'s connection and waits until the gateway has closed
    /// it too: the host is offline from then on.
    pub async fn disconnect(&mut self, name: &str) {
        let (stop, task) = self.live.remove(name).expect("a connected host");
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the host's connection closed")
            .expect("its task ended");
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for (_, (_, task)) in std::mem::take(&mut self.live) {
            task.abort();
        }
    }
}

/// One host's arrival: IDENTIFY with its token (without presence, as the
/// agent: no news of the other hosts), then `facts` and `summary`
/// to the gateway, each answered with success.
async fn join(url: &str, plan: &HostPlan) -> Client {
    let mut client = Client::connect(url).await;
    client
        .identify_with(json!({
            "type": "IDENTIFY", "name": plan.name, "version": "0.2.0",
            "tags": ["agent"], "token": plan.token, "presence": false,
        }))
        .await;
    let facts = json!({
        "hostname": format!("{}.test", plan.name), "os": "debian", "os_version": "12",
        "arch": "x86_64", "cpus": 4, "memory_bytes": 8_000_000_000u64,
        "agent_version": env!("CARGO_PKG_VERSION"), "labels": plan.labels,
    });
    for (rid, req, msg) in [(1, "facts", facts), (2, "summary", plan.summary.clone())] {
        client
            .send(
                json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "concierge"},
                         "data": {"req": req, "rid": rid, "msg": msg}}),
            )
            .await;
        loop {
            let frame = client.recv().await;
            if frame["type"] == "MESSAGE" && frame["data"]["rid"] == rid {
                assert_eq!(
                    frame["data"]["msg"]["result"], "success",
                    "{}'s {req}: {frame}",
                    plan.name
                );
                break;
            }
        }
    }
    client
}

/// Reads (the library answers pings) until told to stop, then closes.
async fn stay(mut client: Client, mut stopped: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            frame = client.ws.next() => if !matches!(frame, Some(Ok(_))) { return },
        }
    }
    client.close().await;
}
