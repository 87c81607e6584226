//! Redis without a single point of failure: a master, a replica and three
//! real `redis-sentinel`s; two gateway processes that follow them. The
//! master is SIGKILLed: the Sentinels promote the replica, both gateways
//! follow it, re-register and serve again, and nothing was acknowledged to
//! a sender that did not reach its recipient; a service's history survives
//! it (its owner's gateway writes it back to the new master), so a
//! subscriber on the other gateway recovers the broadcasts it missed live.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{command, Process};
use common::Client;
use serde_json::json;

/// A redis-server or redis-sentinel child, killed on drop.
struct Server {
    port: u16,
    child: Option<Child>,
}

impl Server {
    fn start(program: &str, conf: &Path, port: u16) -> Server {
        let child = Command::new(program)
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} runs (apt-get install redis-sentinel): {e}"));
        let server = Server {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.cli(&["PING"]).trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "{program} on {port} does not answer"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn cli(&self, args: &[&str]) -> String {
        common::redis::cli(self.port, args)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Master, replica and three Sentinels watching the master as "concierge".
struct Topology {
    _dir: tempfile::TempDir,
    master: Server,
    replica: Server,
    sentinels: Vec<Server>,
}

impl Topology {
    fn start() -> Topology {
        let dir = tempfile::tempdir().unwrap();
        let redis_conf = |name: &str, port: u16, extra: &str| {
            let folder = dir.path().join(name);
            std::fs::create_dir(&folder).unwrap();
            let conf = folder.join("redis.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {}\n{extra}",
                    folder.display()
                ),
            )
            .unwrap();
            conf
        };
        let master_port = common::free_port();
        let master = Server::start(
            "redis-server",
            &redis_conf("master", master_port, ""),
            master_port,
        );
        let replica_port = common::free_port();
        let replica = Server::start(
            "redis-server",
            &redis_conf(
                "replica",
                replica_port,
                &format!("replicaof 127.0.0.1 {master_port}\n"),
            ),
            replica_port,
        );
        // The replica has the master's data before anything depends on it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !replica
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
        {
            assert!(Instant::now() < deadline, "the replica does not sync");
            std::thread::sleep(Duration::from_millis(50));
        }
        let sentinels = (0..3)
            .map(|i| {
                let port = common::free_port();
                let conf = redis_conf(
                    &format!("sentinel{i}"),
                    port,
                    &format!(
                        "sentinel monitor concierge 127.0.0.1 {master_port} 2\n\
                         sentinel down-after-milliseconds concierge 1000\n\
                         sentinel failover-timeout concierge 4000\n\
                         sentinel parallel-syncs concierge 1\n"
                    ),
                );
                Server::start("redis-sentinel", &conf, port)
            })
            .collect();
        Topology {
            _dir: dir,
            master,
            replica,
            sentinels,
        }
    }

    fn sentinel_list(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The master's port as the first Sentinel names it.
    fn named_master(&self) -> Option<u16> {
        let out = self.sentinels[0].cli(&["SENTINEL", "get-master-addr-by-name", "concierge"]);
        out.lines().nth(1)?.trim().parse().ok()
    }
}

async fn gateway(topology: &Topology, data: &Path) -> (Process, String) {
    let sentinels = topology.sentinel_list();
    let data_dir = data.display().to_string();
    let args = [
        "--bind",
        "127.0.0.1:0",
        "--data-dir",
        &data_dir,
        "--workers",
        "1",
        "--redis-sentinels",
        &sentinels,
        "--redis-sentinel-master",
        "concierge",
    ];
    let mut process = Process::spawn(command(&args));
    let addr = process.listening().await;
    (process, format!("{addr}"))
}

async fn ready(addr: &str) -> bool {
    match reqwest::get(format!("http://{addr}/readyz")).await {
        Ok(response) => response.status() == 200,
        Err(_) => false,
    }
}

/// Sends MESSAGE `i` from `from` to `to` by name and returns the answer's
/// type (OK, ERROR_UNAVAILABLE, ...).
async fn send(from: &mut Client, to: &str, i: u64) -> String {
    from.send(json!({"type": "MESSAGE", "target": {"type": "NAME", "name": to}, "data": i}))
        .await;
    loop {
        // An answer within the Redis timeouts.
        let payload = from.recv_within(Duration::from_secs(10)).await;
        if payload.get("seq").is_some() {
            return payload["type"].as_str().unwrap_or_default().to_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_master_leaves_both_gateways_serving_on_the_promoted_replica() {
    let mut topology = Topology::start();
    let old_master = topology.master.port;
    assert_eq!(topology.named_master(), Some(old_master));
    let (data1, data2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (g1, addr1) = gateway(&topology, data1.path()).await;
    let (g2, addr2) = gateway(&topology, data2.path()).await;
    assert!(g1.log().contains("Sentinels"), "{}", g1.log());

    let mut alice = Client::connect(&format!("ws://{addr1}/ws")).await;
    alice.identify("alice").await;
    let mut bob = Client::connect(&format!("ws://{addr2}/ws")).await;
    bob.identify("bob").await;
    // Alice's replica has applied bob's arrival (else, once the link is
    // down, bob would be unknown there: INVALID_NAME, not a failover's
    // ERROR_UNAVAILABLE).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        alice.send(json!({"type": "CLIENT_FETCH_ALL"})).await;
        let all = alice.skip_to("CLIENT_FETCH_ALL_RESULT").await;
        if all.to_string().contains(&bob.uuid.to_string()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alice's replica never saw bob: {all}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(send(&mut alice, "bob", 0).await, "OK");
    assert_eq!(bob.skip_to("MESSAGE").await["data"], 0);

    let killed = Instant::now();
    topology.master.kill();

    // Alice keeps sending through the failover: every message told OK
    // must reach bob; the others were refused (ERROR_UNAVAILABLE).
    let mut acknowledged = BTreeSet::new();
    let mut refused = 0;
    let mut i = 1;
    let deadline = killed + Duration::from_secs(30);
    let served_again = loop {
        assert!(
            Instant::now() < deadline,
            "not serving 30 s after the kill:\ng1: {}\ng2: {}",
            g1.log(),
            g2.log()
        );
        match send(&mut alice, "bob", i).await.as_str() {
            "OK" => {
                acknowledged.insert(i);
            }
            "ERROR_UNAVAILABLE" => refused += 1,
            other => panic!("message {i}: {other}\ng1: {}\ng2: {}", g1.log(), g2.log()),
        }
        i += 1;
        if topology.named_master() == Some(topology.replica.port)
            && ready(&addr1).await
            && ready(&addr2).await
            && acknowledged.last() == Some(&(i - 1))
        {
            break killed.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "serving again {served_again:?} after the kill; {} acknowledged, {refused} refused",
        acknowledged.len()
    );
    // Failover: down-after 1 s, then the election; the gateways follow
    // within a second or two of it.
    assert!(served_again < Duration::from_secs(15), "{served_again:?}");
    assert!(
        refused > 0,
        "the outage went unnoticed: nothing was refused"
    );

    // Every acknowledged message arrives; refused ones may or may not.
    let mut received = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !acknowledged.is_subset(&received) {
        assert!(
            Instant::now() < deadline,
            "acknowledged but never received: {:?}",
            acknowledged.difference(&received).collect::<Vec<_>>()
        );
        let payload = tokio::time::timeout(Duration::from_secs(5), bob.recv())
            .await
            .expect("the acknowledged messages arrive");
        if payload["type"] == "MESSAGE" {
            received.insert(payload["data"].as_u64().unwrap());
        }
    }

    // Both ways, and new clients on both gateways, on the new master.
    bob.send(
        json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "alice"}, "data": "back"}),
    )
    .await;
    bob.skip_to("OK").await;
    assert_eq!(alice.skip_to("MESSAGE").await["data"], "back");
    let mut carol = Client::connect(&format!("ws://{addr1}/ws")).await;
    carol.identify("carol").await;
    carol.send(json!({"type": "CLIENT_FETCH_ALL"})).await;
    let all = carol.skip_to("CLIENT_FETCH_ALL_RESULT").await;
    let mut names: Vec<&str> = all["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["alice", "bob", "carol"]);
    // The names live on the new master: nobody can take alice's.
    let mut dup = Client::connect(&format!("ws://{addr2}/ws")).await;
    dup.send(json!({"type": "IDENTIFY", "name": "alice", "version": "0.2.0"}))
        .await;
    assert_eq!(dup.expect_close().await.0, 4005);
    let held = topology.replica.cli(&["GET", "concierge:name:alice"]);
    assert!(
        !held.trim().is_empty(),
        "alice's name is not on the new master"
    );
    for log in [g1.log(), g2.log()] {
        assert!(log.contains("the Redis master moved"), "{log}");
    }
}

#[tokio::test]
async fn sentinels_and_a_redis_url_together_are_refused_by_name() {
    let mut cmd = command(&[
        "serve",
        "--redis-url",
        "redis://127.0.0.1:6379",
        "--redis-sentinels",
        "127.0.0.1:26379",
    ]);
    let out = cmd.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("redis_url") && stderr.contains("redis_sentinels"),
        "{stderr}"
    );

    let mut cmd = command(&["serve", "--redis-sentinels", "redis://:pw@:1"]);
    let out = cmd.output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--redis-sentinels"), "{stderr}");
    assert!(!stderr.contains("pw"), "a password in a message: {stderr}");
}

/// The MESSAGEs' offsets `client` receives until `stop` says how many were
/// published and the last has come (or nothing more comes for 3 s).
async fn offsets_until(
    mut client: Client,
    mut stop: tokio::sync::watch::Receiver<u64>,
) -> (Client, Vec<u64>, serde_json::Value) {
    let mut seen = Vec::new();
    let mut epoch = serde_json::Value::Null;
    loop {
        let published = *stop.borrow();
        if published > 0 && seen.last() == Some(&published) {
            return (client, seen, epoch);
        }
        tokio::select! {
            _ = stop.changed() => {}
            payload = tokio::time::timeout(Duration::from_secs(3), client.recv_any()) => {
                match payload {
                    Ok(Ok(message)) if message["type"] == "MESSAGE" => {
                        seen.push(message["position"]["offset"].as_u64().expect("a position"));
                        epoch = message["position"]["epoch"].clone();
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(code)) => panic!("the listener was closed: {code}"),
                    Err(_) if published > 0 => return (client, seen, epoch),
                    Err(_) => {}
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_survives_a_failover_and_a_subscriber_elsewhere_recovers_what_it_missed() {
    let mut topology = Topology::start();
    let (data1, data2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (g1, addr1) = gateway(&topology, data1.path()).await;
    let (g2, addr2) = gateway(&topology, data2.path()).await;
    let mut owner = Client::connect(&format!("ws://{addr1}/ws")).await;
    owner.identify("radio").await;
    let history = json!({"size": 10_000, "ttl": 600});
    let create = json!({"type": "SERVICE_CREATE", "service": "news", "history": history});
    assert_eq!(owner.answer(create, 0).await["successful"], true);
    let mut listener = Client::connect(&format!("ws://{addr2}/ws")).await;
    listener.identify("listener").await;
    // Once the listener's gateway has heard of the service.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        listener
            .send(json!({"type": "SELF_SUBSCRIBE", "service": "news"}))
            .await;
        let reply = listener.recv().await;
        if reply["type"] == "SELF_SUBSCRIBE_RESULT" {
            break;
        }
        assert!(Instant::now() < deadline, "{reply}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (stop, stopped) = tokio::sync::watch::channel(0);
    let listening = tokio::spawn(offsets_until(listener, stopped));

    // The owner publishes one message every 5 ms, each after the previous
    // one's answer, through the failover.
    let target = json!({"type": "SERVICE", "service": "news"});
    let (mut published, mut refused) = (0u64, 0u64);
    let mut killed = None;
    let started = Instant::now();
    loop {
        published += 1;
        owner
            .send(json!({"type": "MESSAGE", "target": target, "data": published}))
            .await;
        let answer = loop {
            let payload = owner.recv_within(Duration::from_secs(10)).await;
            if payload.get("seq").is_some() {
                break payload;
            }
        };
        match answer["type"].as_str() {
            Some("OK") => {}
            Some("ERROR_UNAVAILABLE") => refused += 1,
            _ => panic!("{answer}\ng1: {}\ng2: {}", g1.log(), g2.log()),
        }
        if killed.is_none() && started.elapsed() > Duration::from_secs(1) {
            topology.master.kill();
            killed = Some(Instant::now());
        }
        if let Some(killed) = killed {
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "not serving 30 s after the kill:\ng1: {}\ng2: {}",
                g1.log(),
                g2.log()
            );
            // A second of publishing once both serve on the new master.
            if topology.named_master() == Some(topology.replica.port)
                && ready(&addr1).await
                && ready(&addr2).await
                && killed.elapsed() > Duration::from_secs(1)
                && started.elapsed() > killed.duration_since(started) + Duration::from_secs(5)
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.send(published).expect("the listener listens");
    let (mut listener, seen, epoch) = listening.await.expect("the listener's offsets");
    let missed_live: Vec<u64> = (1..=published).filter(|o| !seen.contains(o)).collect();
    // The last offset before the first one it missed.
    let contiguous = missed_live.first().map_or(published, |first| first - 1);

    // Back from there: the history the owner's gateway wrote back to the
    // new master has everything.
    let unsubscribe = json!({"type": "SELF_UNSUBSCRIBE", "service": "news"});
    listener.send(unsubscribe).await;
    listener.skip_to("SELF_UNSUBSCRIBE_RESULT").await;
    let position = json!({"epoch": epoch, "offset": contiguous});
    listener
        .send(json!({"type": "SELF_SUBSCRIBE", "service": "news", "position": position}))
        .await;
    let resumed = listener.skip_to("SELF_SUBSCRIBE_RESULT").await;
    assert_eq!(resumed["recovered"], true, "{resumed}\ng2: {}", g2.log());
    assert_eq!(resumed["position"]["offset"], published, "{resumed}");
    for offset in contiguous + 1..=published {
        let message = listener.recv().await;
        assert_eq!(message["position"]["offset"], offset, "{message}");
    }
    eprintln!(
        "failover: {published} broadcasts, {refused} answered ERROR_UNAVAILABLE; \
         the subscriber on the other gateway missed {} live (offsets {:?} to {:?}), \
         then recovered all {} after offset {contiguous} from the history: 0 lost",
        missed_live.len(),
        missed_live.first(),
        missed_live.last(),
        published - contiguous,
    );
}
