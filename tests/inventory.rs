//! The inventory, for real: a gateway process with its store on disk, real
//! agents with labels reporting their facts, `concierge ctl hosts` with
//! target expressions as an operator types them, hosts that leave and a
//! gateway that restarts; and the rule that only a host files facts, and
//! only under its own name.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use common::process::{agent, ctl, ctl_json, issue_token, outcome, serve, Process};
use common::{Client, PATIENCE};

/// `ctl --json hosts ARGS`: the names listed, and whether each is online.
async fn hosts(url: &str, token: &str, args: &[&str]) -> Vec<(String, bool)> {
    let (code, reply) = ctl_json(url, token, &[&["hosts"], args].concat()).await;
    assert_eq!(code, 0, "hosts {args:?}: {reply}");
    reply["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| (h["name"].as_str().unwrap().to_owned(), h["online"] == true))
        .collect()
}

fn names(listed: &[(String, bool)]) -> Vec<&str> {
    listed.iter().map(|(n, _)| n.as_str()).collect()
}

/// Waits until `ctl hosts` lists exactly `wanted` (name, online).
async fn until_listed(url: &str, token: &str, wanted: &[(&str, bool)]) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (code, reply) = ctl_json(url, token, &["hosts"]).await;
        let listed: Vec<(String, bool)> = reply["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| (h["name"].as_str().unwrap().to_owned(), h["online"] == true))
            .collect();
        let want: Vec<(String, bool)> = wanted.iter().map(|(n, o)| (n.to_string(), *o)).collect();
        if code == 0 && listed == want {
            return reply;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hosts lists {listed:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Three agents with labels: targets select them by name, glob, list,
/// label and fact; one that stops stays listed, offline, with when it
/// was last seen; everything survives the gateway's restart; only an
/// admin forgets a host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_are_listed_selected_and_kept_after_they_leave() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let store = ["--data-dir", data.path().to_str().unwrap()];
    let mut tokens = Vec::new();
    for name in ["web_1", "web_2", "db_1"] {
        tokens.push(issue_token(&store, name, "agent").await);
    }
    let vic = issue_token(&store, "vic", "viewer").await;
    let olga = issue_token(&store, "olga", "operator").await;
    let ada = issue_token(&store, "ada", "admin").await;
    let mut gateway = serve("127.0.0.1:0", data.path().to_str().unwrap());
    let addr = gateway.listening().await;
    let url = format!("ws://{addr}/ws");
    let labels = [
        "role=web,dc=fra",
        "role=web,dc=ams,canary=yes",
        "role=db,dc=fra",
    ];
    let mut agents: Vec<Process> = ["web_1", "web_2", "db_1"]
        .iter()
        .zip(&tokens)
        .zip(labels)
        .map(|((name, token), labels)| agent(&url, token, name, labels, work.path()))
        .collect();
    let all = until_listed(
        &url,
        &vic,
        &[("db_1", true), ("web_1", true), ("web_2", true)],
    )
    .await;
    // What the agents reported: this machine's facts and their labels.
    let web_1 = &all["hosts"][1];
    assert_eq!(web_1["kind"], "agent");
    assert_eq!(
        web_1["facts"]["labels"],
        json!({"role": "web", "dc": "fra"})
    );
    assert_eq!(
        web_1["facts"]["cpus"],
        json!(std::thread::available_parallelism().unwrap().get())
    );
    assert_eq!(web_1["facts"]["agent_version"], env!("CARGO_PKG_VERSION"));
    let os = web_1["facts"]["os"].as_str().expect("the os").to_owned();
    let first_seen = web_1["first_seen"].as_u64().unwrap();
    assert!(first_seen <= now() && first_seen + 60 > now(), "{web_1}");

    for (target, wanted) in [
        ("web*", &["web_1", "web_2"][..]),
        ("web_1,db_1", &["db_1", "web_1"]),
        ("role=web,!canary", &["web_1"]),
        ("dc in (fra)", &["db_1", "web_1"]),
        ("role!=web", &["db_1"]),
        ("web*,dc notin (fra)", &["web_2"]),
        (
            &format!("os={os},kind=agent,cpus!=0"),
            &["db_1", "web_1", "web_2"],
        ),
        ("nothing_like_it", &[]),
    ] {
        assert_eq!(
            names(&hosts(&url, &vic, &[target]).await),
            wanted,
            "{target}"
        );
    }
    // A mistake is shown where it is, before anything is asked.
    let (code, _, stderr) = outcome(ctl(&url, &vic).args(["hosts", "role=web,dc in (fra"])).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("expected \",\" or \")\"") && stderr.contains("  role=web,dc in (fra\n"),
        "{stderr}"
    );

    // A host that stops stays listed, offline, last seen when it left.
    agents[2].signal("TERM");
    agents[2].exit(PATIENCE).await;
    let left = now();
    let listed = until_listed(
        &url,
        &vic,
        &[("db_1", false), ("web_1", true), ("web_2", true)],
    )
    .await;
    let last_seen = listed["hosts"][0]["last_seen"].as_u64().unwrap();
    assert!(last_seen <= left && last_seen + 10 >= left, "{listed}");
    assert_eq!(
        names(&hosts(&url, &vic, &["--online", "role=db"]).await),
        Vec::<&str>::new()
    );
    // The human table says so too.
    let (_, table, _) = outcome(ctl(&url, &vic).args(["hosts", "db*"])).await;
    assert!(
        table.contains("offline") && table.contains("role=db"),
        "{table}"
    );

    // The gateway restarts on the same store: the inventory is still
    // there, and the agents that reconnect are online again.
    gateway.signal("TERM");
    gateway.exit(PATIENCE).await;
    let mut gateway = serve(&addr.to_string(), data.path().to_str().unwrap());
    gateway.listening().await;
    let after = until_listed(
        &url,
        &vic,
        &[("db_1", false), ("web_1", true), ("web_2", true)],
    )
    .await;
    assert_eq!(after["hosts"][1]["first_seen"].as_u64(), Some(first_seen));
    // Its departure's write may land after the listing that first showed it
    // offline: as late as its departure, never later.
    let last_seen_after = after["hosts"][0]["last_seen"].as_u64().unwrap();
    assert!(
        last_seen_after >= last_seen && last_seen_after <= left + 1,
        "{after}"
    );

    // Forgetting is an admin's.
    let (code, _, stderr) = outcome(ctl(&url, &olga).args(["forget", "db_1"])).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("forbidden"), "{stderr}");
    let (code, out, stderr) = outcome(ctl(&url, &ada).args(["forget", "db_1"])).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(out.contains("forgotten: db_1"), "{out}");
    let (code, _, stderr) = outcome(ctl(&url, &ada).args(["forget", "db_1"])).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("not_found") || stderr.contains("no host"),
        "{stderr}"
    );
    until_listed(&url, &vic, &[("web_1", true), ("web_2", true)]).await;
    drop(agents);
    drop(gateway);
}

/// Facts are filed under the name the sender verifiably holds, and only a
/// host's token files them: a person, or a `ctl`, cannot put a host in the
/// inventory; a report that breaks the rules is refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_host_reports_facts_and_only_of_itself() {
    let data = tempfile::tempdir().unwrap();
    let store = ["--data-dir", data.path().to_str().unwrap()];
    let host = issue_token(&store, "edge_7", "agent").await;
    let olga = issue_token(&store, "olga", "operator").await;
    let mut gateway = serve("127.0.0.1:0", data.path().to_str().unwrap());
    let url = format!("ws://{}/ws", gateway.listening().await);

    let report = |facts: Value, rid: u64| {
        json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "concierge"},
               "data": {"req": "facts", "rid": rid, "msg": facts}})
    };
    async fn answer(client: &mut Client) -> Value {
        let message = client.skip_to("MESSAGE").await;
        assert_eq!(message["origin"]["name"], "concierge");
        message["data"]["msg"].clone()
    }
    async fn identified(url: &str, name: &str, token: &str) -> Client {
        let mut client = Client::connect(url).await;
        client
            .identify_with(
                json!({"type": "IDENTIFY", "name": name, "version": "0.2.0", "token": token}),
            )
            .await;
        client
    }

    let mut person = identified(&url, "olga", &olga).await;
    person.send(report(json!({"os": "debian"}), 1)).await;
    let refused = answer(&mut person).await;
    assert_eq!(refused["reason"], "forbidden", "{refused}");

    let mut edge = identified(&url, "edge_7", &host).await;
    edge.send(report(json!({"labels": {"os": "windows"}}), 2))
        .await;
    let refused = answer(&mut edge).await;
    assert_eq!(refused["reason"], "bad_argument", "{refused}");
    assert!(
        refused["desc"].as_str().unwrap().contains("is a fact's"),
        "{refused}"
    );
    // A report names no host: whatever `hostname` says, it is edge_7's.
    edge.send(report(
        json!({"hostname": "web_1", "labels": {"role": "edge"}}),
        3,
    ))
    .await;
    let filed = answer(&mut edge).await;
    assert_eq!(filed["name"], "edge_7", "{filed}");
    let listed = hosts(&url, &olga, &[]).await;
    assert_eq!(listed, [("edge_7".to_owned(), true)]);
    let (_, reply) = ctl_json(&url, &olga, &["hosts", "role=edge"]).await;
    assert_eq!(reply["hosts"][0]["facts"]["hostname"], "web_1");
    drop(gateway.child.kill().await);
}
