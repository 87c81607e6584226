//! Replicas sharing a real Redis behave, for every client, like one gateway.

mod common;

use std::path::Path;
use std::time::Duration;

use common::process::{command, Process};
use common::redis::{RedisServer, Relay};
use common::{Client, TestServer};
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// A replica in this process, sharing `files` with the others.
fn replica(redis: &RedisServer, files: &Path) -> TestServer {
    replica_at(redis.url(), files)
}

/// A replica in this process reaching Redis at `url`.
fn replica_at(url: String, files: &Path) -> TestServer {
    let files = files.to_owned();
    TestServer::with(move |s| {
        s.redis_url = url;
        s.node_lease_ms = 1_500;
        s.data_dir = files;
    })
}

/// A Redis and two replicas in this process sharing a files folder.
fn two_replicas() -> (RedisServer, tempfile::TempDir, TestServer, TestServer) {
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    let r1 = replica(&redis, files.path());
    let r2 = replica(&redis, files.path());
    (redis, files, r1, r2)
}

/// Waits until `client`'s CLIENT_FETCH_ALL lists exactly `names`.
async fn sees(client: &mut Client, names: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        client.send(json!({"type": "CLIENT_FETCH_ALL"})).await;
        let all = client.skip_to("CLIENT_FETCH_ALL_RESULT").await;
        let mut listed: Vec<String> = all["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect();
        listed.sort();
        let mut wanted: Vec<&str> = names.to_vec();
        wanted.sort();
        if listed == wanted {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} sees {listed:?}, not {wanted:?}",
            client.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_different_replicas_message_each_other_by_every_target() {
    let (_redis, _files, r1, r2) = two_replicas();
    let mut alice = r1.client("alice").await;
    let mut bob = r2.client("bob").await;
    let mut carol = r1.client("carol").await;
    sees(&mut alice, &["alice", "bob", "carol"]).await;
    sees(&mut bob, &["alice", "bob", "carol"]).await;
    for c in [&mut alice, &mut bob, &mut carol] {
        c.drain(100).await;
        c.send(json!({"type": "SELF_SET_SEQ", "seq": 0})).await;
        c.expect("OK").await;
    }

    // By NAME and UUID, across replicas, data byte for byte.
    alice
        .send_text(
            r#"{"type":"MESSAGE","target":{"type":"NAME","name":"bob"},"data":{ "x" :1}}"#.into(),
        )
        .await;
    assert_eq!(alice.expect("OK").await["seq"], 1);
    let got = bob.expect("MESSAGE").await;
    assert_eq!(got["data"], json!({"x": 1}));
    assert_eq!(got["origin"]["name"], "alice");
    assert_eq!(got["origin"]["uuid"], alice.uuid.to_string());
    bob.send(json!({"type": "MESSAGE", "target": {"type": "UUID", "uuid": alice.uuid.to_string()}, "data": "back"}))
        .await;
    bob.expect("OK").await;
    assert_eq!(alice.expect("MESSAGE").await["data"], "back");

    // ALL reaches both replicas, the sender included.
    carol
        .send(json!({"type": "MESSAGE", "target": {"type": "ALL"}, "data": "everyone"}))
        .await;
    for c in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(c.skip_to("MESSAGE").await["data"], "everyone");
    }
    carol.expect("OK").await;

    // A service owned on r1 with subscribers on both replicas.
    alice
        .send(json!({"type": "SERVICE_CREATE", "service": "news"}))
        .await;
    assert_eq!(
        alice.expect("SERVICE_CREATE_RESULT").await["successful"],
        true
    );
    let seen = bob.expect("SERVICE_CREATE_RESULT").await;
    assert!(seen.get("seq").is_none());
    carol.expect("SERVICE_CREATE_RESULT").await;
    bob.send(json!({"type": "SELF_SUBSCRIBE", "service": "news"}))
        .await;
    bob.expect("SELF_SUBSCRIBE_RESULT").await;
    carol
        .send(json!({"type": "SELF_SUBSCRIBE", "service": "news"}))
        .await;
    carol.expect("SELF_SUBSCRIBE_RESULT").await;
    // Bob hears carol subscribe (bob subscribed first).
    assert_eq!(
        bob.expect("SERVICE_CLIENT_SUBSCRIBED").await["client"]["name"],
        "carol"
    );
    // The same name on the other replica is taken.
    let dup = bob
        .request(json!({"type": "SERVICE_CREATE", "service": "news"}), 3)
        .await;
    assert_eq!(dup["successful"], false);
    assert_eq!(dup["service"]["owner_uuid"], alice.uuid.to_string());
    // Subscriptions propagate: wait until r1 knows bob subscribed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        alice
            .send(json!({"type": "SERVICE_FETCH", "service": "news"}))
            .await;
        let fetched = alice.expect("SERVICE_FETCH_RESULT").await;
        if fetched["service"]["subscribers"].as_array().unwrap().len() == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{fetched}");
    }

    alice.send(json!({"type": "MESSAGE", "target": {"type": "SERVICE", "service": "news"}, "data": "extra"}))
        .await;
    alice.expect("OK").await;
    // (Carol may first hear of bob's subscription: r1 learns of it after
    // her own when the two race; replicas converge, they are not atomic.)
    for c in [&mut bob, &mut carol] {
        let got = c.skip_to("MESSAGE").await;
        assert_eq!(got["data"], "extra");
        assert_eq!(got["origin"]["service"]["name"], "news");
    }
    bob.send(
        json!({"type": "MESSAGE", "target": {"type": "SERVICE", "service": "news"}, "data": "tip"}),
    )
    .await;
    bob.expect("OK").await;
    assert_eq!(alice.expect("MESSAGE").await["data"], "tip");
    let to_bob = json!({"type": "MESSAGE", "target": {"type": "SERVICE_CLIENT_UUID", "service": "news", "uuid": bob.uuid.to_string()}, "data": "psst"});
    alice.send(to_bob).await;
    alice.expect("OK").await;
    assert_eq!(bob.expect("MESSAGE").await["data"], "psst");
    // Carol did not get it: alice's next frame to her comes first (one
    // sender's frames keep their order across replicas).
    alice
        .send(json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "carol"}, "data": "barrier"}))
        .await;
    alice.expect("OK").await;
    assert_eq!(carol.skip_to("MESSAGE").await["data"], "barrier");

    // Order holds across replicas and across targets.
    for i in 0..300 {
        let target = match i % 3 {
            0 => json!({"type": "SERVICE", "service": "news"}),
            1 => json!({"type": "NAME", "name": "bob"}),
            _ => json!({"type": "ALL"}),
        };
        alice
            .send(json!({"type": "MESSAGE", "target": target, "data": i}))
            .await;
    }
    for i in 0..300 {
        assert_eq!(bob.expect("MESSAGE").await["data"], i);
    }

    // The owner leaving deletes the service everywhere.
    let alice_uuid = alice.uuid.to_string();
    alice.close().await;
    let deleted = bob.skip_to("SERVICE_DELETE_RESULT").await;
    assert_eq!(deleted["service"]["name"], "news");
    assert_eq!(
        bob.skip_to("CLIENT_LEFT").await["client"]["uuid"],
        alice_uuid
    );
    sees(&mut bob, &["bob", "carol"]).await;
    bob.send(json!({"type": "SERVICE_FETCH_ALL"})).await;
    assert_eq!(
        bob.skip_to("SERVICE_FETCH_ALL_RESULT").await["services"],
        json!([])
    );
    // And frees the name on every replica.
    let mut again = r2.connect().await;
    again.identify("alice").await;
}

/// How many replicas follow a service's broadcast channel.
fn followers(redis: &RedisServer, service: &str) -> u64 {
    subscribers(redis, &format!("concierge:service:{service}"))
}

/// How many connections are subscribed to `channel`.
fn subscribers(redis: &RedisServer, channel: &str) -> u64 {
    let out = redis.cli(&["PUBSUB", "NUMSUB", channel]);
    out.lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("PUBSUB NUMSUB answered {out:?}"))
}

/// Once a client on one replica has its SELF_SUBSCRIBE_RESULT, a broadcast
/// the owner on another replica sends right then reaches it; and only the
/// replicas with subscribers follow the service's channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_right_after_a_remote_subscription_reaches_the_subscriber() {
    let (redis, _files, r1, r2) = two_replicas();
    let mut owner = r1.client("owner").await;
    let mut fan = r2.client("fan").await;
    sees(&mut owner, &["fan", "owner"]).await;
    sees(&mut fan, &["fan", "owner"]).await;
    for round in 0..20 {
        let service = format!("feed{round}");
        owner
            .send(json!({"type": "SERVICE_CREATE", "service": service}))
            .await;
        let created = owner.skip_to("SERVICE_CREATE_RESULT").await;
        assert_eq!(created["successful"], true, "{created}");
        // Subscribe as soon as fan's replica knows the service.
        'subscribed: loop {
            fan.send(json!({"type": "SELF_SUBSCRIBE", "service": service}))
                .await;
            // Read the answer (not resending on the announcement of the
            // service itself, whose answer could then come after the
            // owner's message).
            loop {
                let answer = fan.recv().await;
                match answer["type"].as_str() {
                    Some("SELF_SUBSCRIBE_RESULT") => {
                        assert_eq!(answer["successful"], true, "{answer}");
                        break 'subscribed;
                    }
                    Some("INVALID_SERVICE") => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        break;
                    }
                    _ => {}
                }
            }
        }
        // At once, out of band: the owner's replica may not even have heard
        // of the subscription yet.
        let target = json!({"type": "SERVICE", "service": service});
        owner
            .send(json!({"type": "MESSAGE", "target": target, "data": round}))
            .await;
        let message = fan.skip_to("MESSAGE").await;
        assert_eq!(message["data"], round, "round {round}");
        assert_eq!(followers(&redis, &service), 1, "only fan's replica follows");
    }
    // The last subscriber leaving the replica stops it following.
    fan.send(json!({"type": "SELF_UNSUBSCRIBE", "service": "feed0"}))
        .await;
    fan.skip_to("SELF_UNSUBSCRIBE_RESULT").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while followers(&redis, "feed0") != 0 {
        assert!(tokio::time::Instant::now() < deadline, "still followed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(followers(&redis, "feed1"), 1);
    // A service deleted stops being followed too.
    owner
        .send(json!({"type": "SERVICE_DELETE", "service": "feed1"}))
        .await;
    while followers(&redis, "feed1") != 0 {
        assert!(tokio::time::Instant::now() < deadline, "still followed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The answer to a MESSAGE, skipping the broadcasts around it.
async fn answer(client: &mut Client) -> serde_json::Value {
    loop {
        let payload = client.recv().await;
        if payload.get("seq").is_some() {
            return payload;
        }
    }
}

/// A client that got its HELLO on one replica can be messaged at once, by
/// name and by uuid, from another replica that has not heard of it yet (its
/// peer learnt of it out of band).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_just_joined_on_another_replica_can_be_messaged_at_once() {
    let (_redis, _files, r1, r2) = two_replicas();
    let mut sender = r2.client("sender").await;
    for round in 0..20 {
        let name = format!("new{round}");
        let mut newcomer = r1.client(&name).await;
        let by_name = json!({"type": "NAME", "name": name});
        sender
            .send(json!({"type": "MESSAGE", "target": by_name, "data": round}))
            .await;
        let ok = answer(&mut sender).await;
        assert_eq!(ok["type"], "OK", "round {round}: {ok}");
        let by_uuid = json!({"type": "UUID", "uuid": newcomer.uuid.to_string()});
        sender
            .send(json!({"type": "MESSAGE", "target": by_uuid, "data": -round}))
            .await;
        // Requests sent while the first one waited are answered after it.
        sender.send(json!({"type": "SELF_FETCH"})).await;
        let ok = answer(&mut sender).await;
        assert_eq!(ok["type"], "OK", "round {round}: {ok}");
        assert_eq!(answer(&mut sender).await["type"], "SELF_FETCH_RESULT");
        let first = newcomer.skip_to("MESSAGE").await;
        assert_eq!(first["data"], round);
        assert_eq!(first["origin"]["name"], "sender");
        assert_eq!(newcomer.skip_to("MESSAGE").await["data"], -round);
    }
    // A name nobody holds is still refused.
    let nobody = json!({"type": "NAME", "name": "nobody"});
    sender
        .send(json!({"type": "MESSAGE", "target": nobody, "data": 0}))
        .await;
    let refused = answer(&mut sender).await;
    assert_eq!(refused["type"], "INVALID_NAME", "{refused}");
}

/// Requests a client sends while one of its messages waits for a lookup
/// wait in a bounded queue: flooding it is treated like not reading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_held_behind_a_lookup_are_bounded() {
    let redis = RedisServer::start();
    let url = redis.url();
    let replica = TestServer::with(move |s| {
        s.redis_url = url;
        s.max_outgoing_queue = 8;
    });
    let mut flooder = replica.client("flooder").await;
    // Redis holds every command for a second: the lookup below is still
    // waiting when all the requests behind it have arrived, however loaded
    // the machine (the gateway's Redis requests time out after two).
    assert_eq!(redis.cli(&["CLIENT", "PAUSE", "1000"]).trim(), "OK");
    let nobody = json!({"type": "UUID", "uuid": uuid::Uuid::new_v4().to_string()});
    flooder
        .send(json!({"type": "MESSAGE", "target": nobody, "data": 0}))
        .await;
    for _ in 0..20 {
        flooder.send(json!({"type": "SELF_FETCH"})).await;
    }
    let (code, reason) = flooder.expect_close().await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("waiting for a lookup"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_is_unique_across_replicas_even_when_raced() {
    let (_redis, _files, r1, r2) = two_replicas();
    let holder = r1.client("taken").await;
    let mut dup = r2.connect().await;
    dup.send(json!({"type": "IDENTIFY", "name": "taken", "version": "0.2.0"}))
        .await;
    assert_eq!(dup.expect_close().await.0, 4005);
    drop(holder);

    let urls = [r1.ws_url(), r2.ws_url()];
    let mut tasks = Vec::new();
    for i in 0..20 {
        let url = urls[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&url).await;
            c.send(json!({"type": "IDENTIFY", "name": "prize", "version": "0.2.0"}))
                .await;
            let first = tokio::time::timeout(Duration::from_secs(5), c.recv_any()).await;
            (first, c)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (first, c) = task.await.unwrap();
        match first.expect("an answer") {
            Ok(hello) if hello["type"] == "HELLO" => winners.push(c),
            Ok(other) => panic!("unexpected {other}"),
            Err(code) => assert_eq!(code, 4005),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one client wins the name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_uploaded_through_one_replica_downloads_through_another() {
    let (_redis, _files, r1, r2) = two_replicas();
    let alice = r1.client("alice").await;
    let mut bob = r2.client("bob").await;
    sees(&mut bob, &["alice", "bob"]).await;
    let http = reqwest::Client::new();
    let put = http
        .put(r1.http_url("/fs/alice/report.txt"))
        .header("Authorization", &alice.fs_key)
        .body("shared bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    let got = http
        .get(r2.http_url("/fs/alice/report.txt"))
        .header("x-fs-key", bob.uuid.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), "shared bytes");
    // Bob may not write into alice's folder on any replica.
    let denied = http
        .put(r2.http_url("/fs/alice/report.txt"))
        .header("Authorization", &bob.fs_key)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
}

/// A replica process whose lease is `lease_ms`.
fn replica_process(redis: &RedisServer, files: &Path, lease_ms: u64) -> Process {
    let mut cmd = command(&[
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--node-lease-ms",
        &lease_ms.to_string(),
        "--redis-url",
        &redis.url(),
    ]);
    cmd.arg("--data-dir").arg(files);
    Process::spawn(cmd)
}

/// A replica process with client `name` on it, and a replica in this process.
async fn process_and_replica(
    redis: &RedisServer,
    files: &Path,
    name: &str,
) -> (Process, Client, TestServer) {
    let mut process = replica_process(redis, files, 1_500);
    let addr = process.listening().await;
    let mut client = Client::connect(&format!("ws://{addr}/ws")).await;
    client.identify(name).await;
    (process, client, replica(redis, files))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_s_clients_leave_within_the_lease() {
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    let (doomed, mut victim, survivor) = process_and_replica(&redis, files.path(), "victim").await;
    victim
        .send(json!({"type": "SERVICE_CREATE", "service": "doomed"}))
        .await;
    victim.expect("SERVICE_CREATE_RESULT").await;
    let mut watcher = survivor.client("watcher").await;
    sees(&mut watcher, &["victim", "watcher"]).await;
    watcher
        .send(json!({"type": "SELF_SUBSCRIBE", "service": "doomed"}))
        .await;
    watcher.skip_to("SELF_SUBSCRIBE_RESULT").await;

    doomed.signal("KILL");
    let started = std::time::Instant::now();
    let deleted = watcher.skip_to("SERVICE_DELETE_RESULT").await;
    assert_eq!(deleted["service"]["name"], "doomed");
    let left = watcher.skip_to("CLIENT_LEFT").await;
    assert_eq!(left["client"]["name"], "victim");
    // Within the lease (1.5 s) plus a third of it (docs/PROTOCOL.md
    // section 12), with a second to spare for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_millis(1_500 + 500 + 1_000),
        "{:?}",
        started.elapsed()
    );
    sees(&mut watcher, &["watcher"]).await;
    // Its name is free again.
    let mut again = survivor.connect().await;
    again.identify("victim").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_with_1012_and_deregisters_at_once() {
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    let (mut leaving, mut moving, staying) =
        process_and_replica(&redis, files.path(), "moving").await;
    let mut watcher = staying.client("watcher").await;
    sees(&mut watcher, &["moving", "watcher"]).await;

    moving.drain(100).await;
    let started = std::time::Instant::now();
    leaving.signal("TERM");
    let (code, reason) = moving.expect_close().await;
    assert_eq!(code, 1012, "{reason}");
    assert_eq!(
        watcher.skip_to("CLIENT_LEFT").await["client"]["name"],
        "moving"
    );
    // Well before the lease could have expired.
    assert!(
        started.elapsed() < Duration::from_millis(1_400),
        "{:?}",
        started.elapsed()
    );
    assert!(leaving.exit(Duration::from_secs(10)).await.success());
    let members = redis.cli(&["SMEMBERS", "concierge:nodes"]);
    assert_eq!(
        members.lines().count(),
        1,
        "only the staying node: {members:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_survive_a_redis_outage_and_re_register() {
    let (mut redis, _files, r1, r2) = two_replicas();
    let mut alice = r1.client("alice").await;
    let mut amy = r1.client("amy").await;
    let mut bob = r2.client("bob").await;
    sees(&mut bob, &["alice", "amy", "bob"]).await;

    let mut bob_feed = r2.client("bob_feed").await;
    alice
        .send(json!({"type": "SERVICE_CREATE", "service": "news"}))
        .await;
    assert_eq!(
        alice.skip_to("SERVICE_CREATE_RESULT").await["successful"],
        true
    );
    // Once bob_feed's replica has heard of the service (INVALID_SERVICE
    // until then).
    bob_feed.skip_to("SERVICE_CREATE_RESULT").await;
    let subscribed = bob_feed
        .request(json!({"type": "SELF_SUBSCRIBE", "service": "news"}), 0)
        .await;
    assert_eq!(subscribed["successful"], true, "{subscribed}");
    alice.drain(100).await;
    amy.drain(100).await;

    redis.kill();
    // From the moment Redis is gone, no frame for another replica is
    // acknowledged: whether the replica noticed yet (the write fails) or
    // not (it refuses at once), the sender is told it did not leave.
    let not_sent = |payload: &serde_json::Value| {
        assert_eq!(payload["type"], "ERROR_UNAVAILABLE", "{payload}");
        assert!(payload["desc"].as_str().unwrap().contains("other replicas"));
    };
    for target in [
        json!({"type": "NAME", "name": "bob"}),
        json!({"type": "ALL"}),
        json!({"type": "SERVICE", "service": "news"}),
    ] {
        alice
            .send(json!({"type": "MESSAGE", "target": target, "data": "lost?"}))
            .await;
        let answer = loop {
            // An answer within the Redis timeouts.
            let payload = alice.recv_within(Duration::from_secs(10)).await;
            if payload.get("seq").is_some() {
                break payload;
            }
        };
        not_sent(&answer);
    }
    // The copy for a client of this replica went out all the same.
    assert_eq!(amy.skip_to("MESSAGE").await["data"], "lost?");
    assert_eq!(metric(&r1, "cluster_frames_not_sent").await, 3);
    // Not ready, but local clients still talk.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = reqwest::get(r1.http_url("/readyz")).await.unwrap().status();
        if status == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    alice.send(json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "amy"}, "data": "still here"}))
        .await;
    alice.skip_to("OK").await;
    assert_eq!(amy.skip_to("MESSAGE").await["data"], "still here");
    // New clients cannot be admitted: their name cannot be claimed.
    let mut late = r1.connect().await;
    late.send(json!({"type": "IDENTIFY", "name": "late", "version": "0.2.0"}))
        .await;
    let (code, reason) = late.expect_close().await;
    assert_eq!(code, 1013, "{reason}");

    // Redis comes back empty: the replicas write their clients back.
    redis.restart();
    for server in [&r1, &r2] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while reqwest::get(server.http_url("/readyz"))
            .await
            .unwrap()
            .status()
            != 200
        {
            assert!(tokio::time::Instant::now() < deadline, "not ready again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut carol = r2.client("carol").await;
    sees(&mut carol, &["alice", "amy", "bob", "bob_feed", "carol"]).await;
    // Names are claimed again: nobody can take alice's.
    let mut dup = r2.connect().await;
    dup.send(json!({"type": "IDENTIFY", "name": "alice", "version": "0.2.0"}))
        .await;
    assert_eq!(dup.expect_close().await.0, 4005);
    // Cross-replica messaging works again.
    carol.send(json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "alice"}, "data": "welcome back"}))
        .await;
    carol.skip_to("OK").await;
    assert_eq!(alice.skip_to("MESSAGE").await["data"], "welcome back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_cluster_messages_are_dropped() {
    let (redis, _files, r1, r2) = two_replicas();
    let mut alice = r1.client("alice").await;
    let mut bob = r2.client("bob").await;
    sees(&mut alice, &["alice", "bob"]).await;
    for garbage in ["", "not json", "{\"from\":1}", "{\"from\":\"00000000-0000-0000-0000-000000000000\",\"route\":{\"kind\":\"client\",\"to\":\"x\"}}\nframe"] {
        redis.cli(&["PUBLISH", "concierge:events", garbage]);
    }
    let members = redis.cli(&["SMEMBERS", "concierge:nodes"]);
    for node in members.lines() {
        redis.cli(&[
            "PUBLISH",
            &format!("concierge:node:{}", node.trim()),
            "garbage",
        ]);
    }
    bob.drain(100).await;
    alice
        .send(json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "bob"}, "data": "fine"}))
        .await;
    alice.skip_to("OK").await;
    assert_eq!(bob.skip_to("MESSAGE").await["data"], "fine");
}

/// A sender pipelining MESSAGEs to another replica (answered once Redis
/// took each frame) mixed with local ones and other requests gets every
/// reply in request order, and every frame arrives in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_keep_request_order_while_frames_leave_for_the_cluster() {
    let (_redis, _files, r1, r2) = two_replicas();
    let mut alice = r1.client("alice").await;
    let mut amy = r1.client("amy").await;
    let mut bob = r2.client("bob").await;
    sees(&mut bob, &["alice", "amy", "bob"]).await;
    alice.drain(100).await;
    amy.drain(100).await;

    const ROUNDS: u64 = 100;
    for i in 0..ROUNDS {
        let request = match i % 4 {
            0 | 1 => {
                json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "bob"}, "data": i})
            }
            2 => json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "amy"}, "data": i}),
            _ => json!({"type": "SELF_FETCH"}),
        };
        alice.send(request).await;
    }
    for i in 0..ROUNDS {
        let reply = alice.recv().await;
        assert_eq!(reply["seq"], i, "reply {i} out of order: {reply}");
        let expected = if i % 4 == 3 {
            "SELF_FETCH_RESULT"
        } else {
            "OK"
        };
        assert_eq!(reply["type"], expected, "{reply}");
    }
    for i in (0..ROUNDS).filter(|i| i % 4 < 2) {
        assert_eq!(bob.skip_to("MESSAGE").await["data"], i);
    }
    for i in (0..ROUNDS).filter(|i| i % 4 == 2) {
        assert_eq!(amy.skip_to("MESSAGE").await["data"], i);
    }
}

/// The answer to a MESSAGE sent to another replica: within the Redis
/// timeouts (an answer may wait on a write), skipping broadcasts.
async fn cluster_answer(client: &mut Client) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let payload = client.recv_within(left).await;
        if payload.get("seq").is_some() {
            return payload;
        }
    }
}

/// The answer for a frame that did not leave for the other replicas
/// (docs/PROTOCOL.md section 12).
fn assert_not_sent(answer: &serde_json::Value) {
    assert_eq!(answer["type"], "ERROR_UNAVAILABLE", "{answer}");
    let desc = answer["desc"].as_str().unwrap_or_default();
    assert!(desc.contains("other replicas"), "{answer}");
}

/// A MESSAGE whose frame Redis refused while the link stayed up (the
/// write failed, the connections did not) is answered ERROR_UNAVAILABLE,
/// never OK, for every target on another replica: a MESSAGE is answered OK
/// only once Redis took its frame (docs/PROTOCOL.md section 12, "or because
/// the write failed"). Once Redis takes frames again, they are OK again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_redis_refused_while_the_link_is_up_is_not_answered_ok() {
    let (redis, _files, r1, r2) = two_replicas();
    let mut alice = r1.client("alice").await;
    let mut amy = r1.client("amy").await;
    let mut bob = r2.client("bob").await;
    sees(&mut alice, &["alice", "amy", "bob"]).await;
    alice
        .send(json!({"type": "SERVICE_CREATE", "service": "news"}))
        .await;
    let created = alice.skip_to("SERVICE_CREATE_RESULT").await;
    assert_eq!(created["successful"], true, "{created}");
    alice.drain(100).await;
    amy.drain(100).await;
    bob.drain(100).await;

    // Redis refuses PUBLISH (NOPERM) from now on; every connection stays
    // open and every other command works: only the frames' writes fail.
    assert_eq!(
        redis.cli(&["ACL", "SETUSER", "default", "-publish"]).trim(),
        "OK"
    );
    for target in [
        json!({"type": "NAME", "name": "bob"}),
        json!({"type": "ALL"}),
        json!({"type": "SERVICE", "service": "news"}),
    ] {
        alice
            .send(json!({"type": "MESSAGE", "target": target, "data": "refused"}))
            .await;
        assert_not_sent(&cluster_answer(&mut alice).await);
    }
    // Counted as not sent (the counter is the process's: the other replica
    // in this process sent no frame).
    assert_eq!(metric(&r1, "cluster_frames_not_sent").await, 3);
    // The subscription stayed up all along: the refusals were the writes'.
    assert_eq!(
        subscribers(&redis, "concierge:events"),
        2,
        "both replicas still subscribed"
    );
    // The copy for a client of the sender's own replica went out.
    assert_eq!(amy.skip_to("MESSAGE").await["data"], "refused");

    assert_eq!(
        redis.cli(&["ACL", "SETUSER", "default", "+publish"]).trim(),
        "OK"
    );
    alice
        .send(
            json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "bob"}, "data": "taken"}),
        )
        .await;
    let answer = cluster_answer(&mut alice).await;
    assert_eq!(answer["type"], "OK", "{answer}");
    // Nothing refused reached bob; what was taken did.
    assert_eq!(bob.skip_to("MESSAGE").await["data"], "taken");
}

/// A frame for a client of another replica counts as handed on only when
/// Redis reports that replica's inbox had its subscriber (docs/PROTOCOL.md
/// section 12): a replica killed a moment ago has lost its subscription at
/// once, while its lease, and so its clients, still look alive; a MESSAGE
/// to one of them reaches nobody and is answered ERROR_UNAVAILABLE, not OK.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_to_a_replica_no_longer_subscribed_is_not_answered_ok() {
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    // A lease far longer than the test: bob stays listed after the kill,
    // so the answer below cannot come from a reaping.
    let mut doomed = replica_process(&redis, files.path(), 120_000);
    let addr = doomed.listening().await;
    let mut bob = Client::connect(&format!("ws://{addr}/ws")).await;
    bob.identify("bob").await;
    let survivor = replica(&redis, files.path());
    let mut alice = survivor.client("alice").await;
    sees(&mut alice, &["alice", "bob"]).await;
    let record = redis.cli(&["HGET", "concierge:clients", &bob.uuid.to_string()]);
    let record: serde_json::Value = serde_json::from_str(record.trim())
        .unwrap_or_else(|e| panic!("bob's record {record:?}: {e}"));
    let inbox = format!("concierge:node:{}", record["node"].as_str().unwrap());
    assert_eq!(subscribers(&redis, &inbox), 1);
    alice.drain(100).await;

    doomed.signal("KILL");
    // Redis drops a dead connection's subscriptions as soon as it sees the
    // connection closed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while subscribers(&redis, &inbox) != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{inbox} still subscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for target in [
        json!({"type": "NAME", "name": "bob"}),
        json!({"type": "UUID", "uuid": bob.uuid.to_string()}),
    ] {
        alice
            .send(json!({"type": "MESSAGE", "target": target, "data": "lost"}))
            .await;
        assert_not_sent(&cluster_answer(&mut alice).await);
    }
    // Still listed: the answers came from Redis's count of subscribers.
    sees(&mut alice, &["alice", "bob"]).await;
}

/// Waits up to `patience` for the gateway to close `client`'s connection,
/// skipping what it sends before; returns the code and reason.
async fn closed_within(client: &mut Client, patience: Duration) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match tokio::time::timeout_at(deadline, client.ws.next()).await {
            Err(_) => panic!("{}: not closed within {patience:?}", client.name),
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return (u16::from(frame.code), frame.reason.to_string())
            }
            Ok(Some(Ok(Message::Close(None)))) => panic!("{}: closed without a code", client.name),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("{}: ended without a close frame: {other:?}", client.name),
        }
    }
}

/// A replica cut off from Redis long enough for another to reap its
/// clients keeps serving them; when another replica has meanwhile given
/// one's name to a new client, that old client is closed with 4005 once its
/// replica's link comes back, and the name stays with the new holder
/// (docs/PROTOCOL.md sections 3 and 12). The link that comes back follows
/// the service channels it followed before: a remote owner's broadcast
/// reaches a subscriber of the cut-off replica again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_given_away_while_its_replica_was_cut_off_closes_the_old_client_with_4005() {
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    // The replica to cut off reaches Redis through a relay of its own.
    let relay = Relay::start(redis.port).await;
    let cut = replica_at(relay.url(), files.path());
    let kept = replica(&redis, files.path());
    let mut old_bob = cut.client("bob").await;
    let mut carol = cut.client("carol").await;
    let mut watcher = kept.client("watcher").await;
    sees(&mut carol, &["bob", "carol", "watcher"]).await;
    sees(&mut watcher, &["bob", "carol", "watcher"]).await;
    watcher
        .send(json!({"type": "SERVICE_CREATE", "service": "news"}))
        .await;
    let created = watcher.skip_to("SERVICE_CREATE_RESULT").await;
    assert_eq!(created["successful"], true, "{created}");
    carol.skip_to("SERVICE_CREATE_RESULT").await;
    carol
        .send(json!({"type": "SELF_SUBSCRIBE", "service": "news"}))
        .await;
    let subscribed = carol.skip_to("SELF_SUBSCRIBE_RESULT").await;
    assert_eq!(subscribed["successful"], true, "{subscribed}");
    watcher.drain(100).await;

    relay.cut();
    // Its lease lapses (1.5 s): the other replica reaps its clients.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut reaped = Vec::new();
    while reaped.len() < 2 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let payload = watcher.skip_to_within("CLIENT_LEFT", left).await;
        reaped.push(payload["client"]["name"].as_str().unwrap().to_owned());
    }
    reaped.sort();
    assert_eq!(reaped, ["bob", "carol"]);
    let mut new_bob = kept.client("bob").await;
    // The cut-off replica still serves its old bob meanwhile.
    old_bob.send(json!({"type": "SELF_FETCH"})).await;
    let fetched = answer(&mut old_bob).await;
    assert_eq!(fetched["type"], "SELF_FETCH_RESULT", "{fetched}");

    relay.mend();
    // Within the subscriber's reconnection backoff (a few seconds by now),
    // the resync and the reclaim of the name.
    let (code, reason) = closed_within(&mut old_bob, Duration::from_secs(10)).await;
    assert_eq!(code, 4005, "{reason}");
    assert!(reason.contains("another replica"), "{reason}");
    // A barrier: carol's frame leaves her replica after old bob's
    // departure, on the same ordered link, so the watcher's replica has
    // applied that departure once the frame reached the watcher.
    carol
        .send(json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "watcher"}, "data": "barrier"}))
        .await;
    let ok = answer(&mut carol).await;
    assert_eq!(ok["type"], "OK", "{ok}");
    assert_eq!(watcher.skip_to("MESSAGE").await["data"], "barrier");
    // The name stays with the new bob, on its own replica too.
    watcher
        .send(json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "bob"}, "data": "hi"}))
        .await;
    let ok = answer(&mut watcher).await;
    assert_eq!(ok["type"], "OK", "{ok}");
    assert_eq!(new_bob.skip_to("MESSAGE").await["data"], "hi");
    let holder = redis.cli(&["GET", "concierge:name:bob"]);
    assert_eq!(holder.trim(), new_bob.uuid.to_string());
    // The service's channel is followed again: the owner's broadcast
    // reaches carol.
    watcher
        .send(json!({"type": "MESSAGE", "target": {"type": "SERVICE", "service": "news"}, "data": "again"}))
        .await;
    let ok = answer(&mut watcher).await;
    assert_eq!(ok["type"], "OK", "{ok}");
    assert_eq!(carol.skip_to("MESSAGE").await["data"], "again");
}

/// The value of counter `name` in `server`'s /metrics.
async fn metric(server: &TestServer, name: &str) -> u64 {
    let metrics = reqwest::get(server.http_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("concierge_{name}_total ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} counter in\n{metrics}"))
}

/// A client that leaves while its replica is cut off from Redis (too
/// briefly to be reaped) has left everywhere once the link is back: the
/// other replicas see CLIENT_LEFT, and its name is free (docs/PROTOCOL.md
/// section 12: events made during the outage are written back when Redis
/// returns).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_departure_during_a_cut_is_written_back_when_the_link_returns() {
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    let relay = Relay::start(redis.port).await;
    let cut = replica_at(relay.url(), files.path());
    let kept = replica(&redis, files.path());
    let leaver = cut.client("leaver").await;
    let mut carol = cut.client("carol").await;
    let mut watcher = kept.client("watcher").await;
    sees(&mut watcher, &["carol", "leaver", "watcher"]).await;
    watcher.drain(100).await;

    relay.cut();
    let failed = metric(&cut, "cluster_write_errors").await;
    leaver.close().await;
    // Its replica has removed it, and the write of its departure failed
    // (the only write it had to make): the departure is not in Redis.
    sees(&mut carol, &["carol", "watcher"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metric(&cut, "cluster_write_errors").await == failed {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the departure's write never failed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.mend();

    let left = watcher
        .skip_to_within("CLIENT_LEFT", Duration::from_secs(10))
        .await;
    assert_eq!(left["client"]["name"], "leaver", "{left}");
    sees(&mut watcher, &["carol", "watcher"]).await;
    // The departure's event and its record may have been written in two
    // batches, of which only the first failed: the name is free once the
    // record is written back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !redis
        .cli(&["GET", "concierge:name:leaver"])
        .trim()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the name is still held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = kept.connect().await;
    again.identify("leaver").await;
}

/// A replica that starts after a service has subscribers elsewhere lists
/// every one of them (every fetch works across replicas, docs/PROTOCOL.md
/// section 12): it reads them from Redis when it (re)subscribes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reading_the_namespace_gets_every_subscriber() {
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    let r1 = replica(&redis, files.path());
    let mut owner = r1.client("owner").await;
    owner
        .send(json!({"type": "SERVICE_CREATE", "service": "news"}))
        .await;
    let created = owner.skip_to("SERVICE_CREATE_RESULT").await;
    assert_eq!(created["successful"], true, "{created}");
    let mut fans = Vec::new();
    let mut connected = Vec::new();
    for name in ["fan1", "fan2", "fan3"] {
        let mut fan = r1.client(name).await;
        fan.send(json!({"type": "SELF_SUBSCRIBE", "service": "news"}))
            .await;
        let subscribed = fan.skip_to("SELF_SUBSCRIBE_RESULT").await;
        assert_eq!(subscribed["successful"], true, "{subscribed}");
        fans.push(fan.uuid.to_string());
        connected.push(fan);
    }
    fans.sort();
    // Recorded in Redis before the new replica reads it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while redis.cli(&["ZCARD", "concierge:subs:news"]).trim() != "3" {
        assert!(tokio::time::Instant::now() < deadline, "not recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let r2 = replica(&redis, files.path());
    let mut reader = r2.client("reader").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        reader
            .send(json!({"type": "SERVICE_FETCH", "service": "news"}))
            .await;
        let fetched = answer(&mut reader).await;
        let mut listed: Vec<String> = fetched["service"]["subscribers"]
            .as_array()
            .map(|s| s.iter().map(|u| u.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        listed.sort();
        if listed == fans {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "r2 lists {listed:?}, not {fans:?}: {fetched}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many connections Redis has accepted so far.
fn connections(redis: &RedisServer) -> u64 {
    let info = redis.cli(&["INFO", "stats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("INFO stats answered {info:?}"))
}

/// A replica that reaches Redis but cannot read the shared namespace does
/// not follow the cluster half-way: it reports not ready, and it tries
/// again with a growing delay (from 100 ms to 5 s), not in a loop that
/// floods Redis with connections; once it can read, it is ready and knows
/// the namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_read_the_namespace_retries_with_a_backoff() {
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    let r1 = replica(&redis, files.path());
    let mut owner = r1.client("owner").await;
    owner
        .send(json!({"type": "SERVICE_CREATE", "service": "news"}))
        .await;
    let created = owner.skip_to("SERVICE_CREATE_RESULT").await;
    assert_eq!(created["successful"], true, "{created}");
    // A user that may do everything but ZRANGE, which reading the
    // subscribers of a service takes: subscribing works, reading fails.
    assert_eq!(
        redis
            .cli(&["ACL", "SETUSER", "blind", "on", ">pw", "~*", "&*", "+@all", "-zrange"])
            .trim(),
        "OK"
    );
    let before = connections(&redis);
    let r2 = replica_at(
        format!("redis://blind:pw@127.0.0.1:{}", redis.port),
        files.path(),
    );
    // Only time tells how often it retries: two seconds hold 4 or 5
    // attempts with the backoff, thousands without.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let made = connections(&redis) - before;
    assert!(made < 30, "{made} connections in 2 s");
    let status = reqwest::get(r2.http_url("/readyz")).await.unwrap().status();
    assert_eq!(status, 503);

    assert_eq!(
        redis.cli(&["ACL", "SETUSER", "blind", "+zrange"]).trim(),
        "OK"
    );
    // The next attempt, within the (by now 1.6 to 3.2 s) delay.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reqwest::get(r2.http_url("/readyz")).await.unwrap().status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut reader = r2.client("reader").await;
    reader
        .send(json!({"type": "SERVICE_FETCH", "service": "news"}))
        .await;
    let fetched = answer(&mut reader).await;
    assert_eq!(
        fetched["service"]["owner_uuid"],
        owner.uuid.to_string(),
        "{fetched}"
    );
}

/// A NAME target whose record in Redis says it is a client of the sender's
/// own replica, which has no such client (a record left behind), is
/// refused with INVALID_NAME, not answered OK for a frame nobody receives:
/// OK only for a connected client (docs/PROTOCOL.md, MESSAGE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_left_behind_on_the_sender_s_replica_is_not_a_target() {
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    let r1 = replica(&redis, files.path());
    let mut alice = r1.client("alice").await;
    // A record like alice's, for a client "ghost" of the same replica.
    let record = redis.cli(&["HGET", "concierge:clients", &alice.uuid.to_string()]);
    let mut ghost: serde_json::Value = serde_json::from_str(record.trim())
        .unwrap_or_else(|e| panic!("alice's record {record:?}: {e}"));
    let uuid = uuid::Uuid::new_v4().to_string();
    ghost["client"]["name"] = json!("ghost");
    ghost["client"]["uuid"] = json!(uuid);
    redis.cli(&["HSET", "concierge:clients", &uuid, &ghost.to_string()]);
    redis.cli(&["SET", "concierge:name:ghost", &uuid]);

    alice
        .send(json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "ghost"}, "data": 1}))
        .await;
    let refused = answer(&mut alice).await;
    assert_eq!(refused["type"], "INVALID_NAME", "{refused}");
}

/// In steady state a cluster costs Redis what docs/SCALING.md says: a
/// MESSAGE to another replica is one PUBLISH, a lease tick a few small
/// commands. Neither re-reads the shared namespace, which a replica reads
/// only when its link (re)starts or recovers (ZRANGE, which only that read
/// sends, counts those reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_does_not_re_read_the_namespace() {
    let (redis, _files, r1, r2) = two_replicas();
    let mut alice = r1.client("alice").await;
    let mut bob = r2.client("bob").await;
    sees(&mut alice, &["alice", "bob"]).await;
    sees(&mut bob, &["alice", "bob"]).await;
    alice
        .send(json!({"type": "SERVICE_CREATE", "service": "news"}))
        .await;
    let created = alice.skip_to("SERVICE_CREATE_RESULT").await;
    assert_eq!(created["successful"], true, "{created}");
    bob.skip_to("SERVICE_CREATE_RESULT").await;
    alice.drain(100).await;

    assert_eq!(redis.cli(&["CONFIG", "RESETSTAT"]).trim(), "OK");
    for i in 0..20 {
        alice
            .send(json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "bob"}, "data": i}))
            .await;
        let ok = answer(&mut alice).await;
        assert_eq!(ok["type"], "OK", "{ok}");
        assert_eq!(bob.skip_to("MESSAGE").await["data"], i);
    }
    // Only time brings lease ticks: every 500 ms, so 1.5 s holds at least
    // two on each replica.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let stats = redis.cli(&["INFO", "commandstats"]);
    assert!(
        stats.contains("cmdstat_exists:"),
        "no lease tick seen: {stats}"
    );
    assert!(!stats.contains("cmdstat_zrange"), "{stats}");
}

/// A client that joined on another replica is found in Redis, by NAME and
/// by UUID, by a replica that has not heard of it (docs/PROTOCOL.md section
/// 12, "a client can be messaged from its HELLO on"). Its replica here may
/// not PUBLISH (an ACL): its clients' records and names are written, the
/// events announcing them never reach the sender's replica, so only the
/// lookup can find them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_no_event_announced_is_looked_up_by_name_and_by_uuid() {
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    assert_eq!(
        redis
            .cli(&["ACL", "SETUSER", "mute", "on", ">pw", "~*", "&*", "+@all", "-publish"])
            .trim(),
        "OK"
    );
    // The first replica creates the shared signing key (a write that
    // publishes); the mute one then only reads it.
    let r2 = replica(&redis, files.path());
    let r1 = replica_at(
        format!("redis://mute:pw@127.0.0.1:{}", redis.port),
        files.path(),
    );
    let mut sender = r2.client("sender").await;
    let mut unheard = r1.client("unheard").await;
    let by_name = json!({"type": "NAME", "name": "unheard"});
    let by_uuid = json!({"type": "UUID", "uuid": unheard.uuid.to_string()});
    for (i, target) in [by_name, by_uuid].into_iter().enumerate() {
        sender
            .send(json!({"type": "MESSAGE", "target": target, "data": i}))
            .await;
        let ok = answer(&mut sender).await;
        assert_eq!(ok["type"], "OK", "{ok}");
        assert_eq!(unheard.skip_to("MESSAGE").await["data"], i);
    }
    // Never announced: the sender's replica still does not list it.
    sender.send(json!({"type": "CLIENT_FETCH_ALL"})).await;
    let all = answer(&mut sender).await;
    assert_eq!(all["clients"].as_array().map(Vec::len), Some(1), "{all}");
}
