//! When a replica goes: a killed one's clients leave within its lease, a
//! stopped one's at once, and a frame for a replica that no longer listens
//! is not answered OK; malformed frames between replicas are dropped.

use std::time::Duration;

use serde_json::json;

use crate::common::redis::RedisServer;
use crate::common::Client;
use crate::{
    assert_not_sent, cluster_answer, process_and_replica, replica, replica_process, sees,
    subscribers, two_replicas,
};

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
