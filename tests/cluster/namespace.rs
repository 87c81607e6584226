//! The shared namespace in Redis: read whole when a replica (re)starts,
//! retried with a backoff when it cannot be read, and never re-read in
//! steady state.

use std::time::Duration;

use serde_json::json;

use crate::common::redis::RedisServer;
use crate::{answer, replica, replica_at, sees, two_replicas};

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
