//! The store on Redis alone: its key layout, foreign data, malformed
//! notifications, and outages (Redis gone, or silent) answered within the
//! store's timeout.

use std::time::{Duration, Instant};

use concierge::cluster::redis::store::{RedisStore, TIMEOUT};
use concierge::cluster::store::{Changed, Store, StoreError, StoreFuture};

use crate::common::redis::RedisServer;
use crate::{
    bytes, changed, following, next_change, redis_store, COUNTS, LEASES, SECOND, TOKENS, USERS,
};

/// The documented layout: records in a hash, counters and leases as
/// expiring strings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_key_layout() {
    let server = RedisServer::start();
    let store = redis_store(&server.url()).await;
    store.put(USERS, "alice", bytes("record")).await.unwrap();
    assert_eq!(
        server
            .cli(&["HGET", "concierge:store:users", "alice"])
            .trim(),
        "record"
    );
    store.count(COUNTS, "alice", SECOND * 10).await.unwrap();
    assert_eq!(
        server
            .cli(&["GET", "concierge:count:failed-logins:alice"])
            .trim(),
        "1"
    );
    let ttl: u64 = server
        .cli(&["PTTL", "concierge:count:failed-logins:alice"])
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 5_000 && ttl <= 10_000, "{ttl}");
    store
        .acquire(LEASES, "job", "alpha", SECOND * 10)
        .await
        .unwrap();
    assert_eq!(
        server.cli(&["GET", "concierge:lease:leases:job"]).trim(),
        "alpha"
    );
    let ttl: u64 = server
        .cli(&["PTTL", "concierge:lease:leases:job"])
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 5_000 && ttl <= 10_000, "{ttl}");
}

/// Keys of the wrong type, and hash fields that are not UTF-8, are
/// reported as corrupt rather than taken for something else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_foreign_data_is_corrupt() {
    let server = RedisServer::start();
    let store = redis_store(&server.url()).await;
    server.cli(&["SET", "concierge:store:users", "not a hash"]);
    let error = store.get(USERS, "alice").await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
    let error = store.put(USERS, "alice", vec![]).await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error}");

    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("HSET")
        .arg("concierge:store:tokens")
        .arg(&b"\xff\xfe"[..])
        .arg("v")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let error = store.list(TOKENS).await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
}

/// Whatever else is published on the changes channel is dropped, and the
/// changes keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_malformed_notifications_are_dropped() {
    let server = RedisServer::start();
    let store = redis_store(&server.url()).await;
    let mut rx = store.changes();
    following(&store, &mut rx).await;
    for garbage in ["", "no separator", ":no table"] {
        server.cli(&["PUBLISH", "concierge:store-changes", garbage]);
    }
    store.put(USERS, "alice", vec![]).await.unwrap();
    assert_eq!(next_change(&mut rx, SECOND).await, changed(USERS, "alice"));
}

/// When Redis goes away and comes back, receivers are told they may have
/// missed changes, and changes flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_changes_resume_after_outage() {
    let mut server = RedisServer::start();
    let a = redis_store(&server.url()).await;
    let b = redis_store(&server.url()).await;
    let mut rx = b.changes();
    following(&a, &mut rx).await;

    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    match tokio::time::timeout_at(deadline, rx.recv()).await {
        Ok(Ok(Changed::Missed)) => {}
        Ok(other) => panic!("before Missed: {other:?}"),
        Err(_) => panic!("no Missed after the outage"),
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while a.put(USERS, "alice", vec![]).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the writer's connection never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(next_change(&mut rx, SECOND).await, changed(USERS, "alice"));
}

/// Runs every operation at once and asserts that each fails as unavailable
/// after at least `at_least` and less than `at_most`.
async fn all_unavailable(store: &RedisStore, at_least: Duration, at_most: Duration) {
    type Op<'a> = StoreFuture<'a, ()>;
    let ops: Vec<(&str, Op<'_>)> = vec![
        (
            "get",
            Box::pin(async { store.get(USERS, "a").await.map(drop) }),
        ),
        (
            "list",
            Box::pin(async { store.list(USERS).await.map(drop) }),
        ),
        ("put", store.put(USERS, "a", vec![])),
        (
            "delete",
            Box::pin(async { store.delete(USERS, "a").await.map(drop) }),
        ),
        (
            "compare_and_swap",
            Box::pin(async {
                store
                    .compare_and_swap(USERS, "a", None, None)
                    .await
                    .map(drop)
            }),
        ),
        (
            "count",
            Box::pin(async { store.count(COUNTS, "a", SECOND).await.map(drop) }),
        ),
        (
            "acquire",
            Box::pin(async { store.acquire(LEASES, "a", "x", SECOND).await.map(drop) }),
        ),
        ("release", store.release(LEASES, "a", "x")),
    ];
    let timed = ops.into_iter().map(|(name, op)| async move {
        let start = Instant::now();
        let result = op.await;
        (name, start.elapsed(), result)
    });
    for (name, took, result) in futures_util::future::join_all(timed).await {
        eprintln!("{name}: {took:?} {result:?}");
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{name}: {result:?}"
        );
        assert!(took >= at_least && took < at_most, "{name} took {took:?}");
    }
}

/// With Redis killed, every operation fails as unavailable within the
/// store's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_unavailable() {
    let mut server = RedisServer::start();
    let store = redis_store(&server.url()).await;
    store.put(USERS, "a", vec![]).await.unwrap();
    server.kill();
    all_unavailable(&store, Duration::ZERO, TIMEOUT + SECOND).await;
}

/// With Redis up but not answering (every client paused), every operation
/// fails as unavailable once the store's timeout runs out: the connection
/// has no timeout of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_silent_is_unavailable() {
    let server = RedisServer::start();
    let store = redis_store(&server.url()).await;
    store.put(USERS, "a", vec![]).await.unwrap();
    server.cli(&["CLIENT", "PAUSE", "60000", "ALL"]);
    all_unavailable(
        &store,
        TIMEOUT - Duration::from_millis(50),
        TIMEOUT + SECOND,
    )
    .await;
}
