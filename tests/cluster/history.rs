//! Services' histories among replicas (`docs/PROTOCOL.md` §17.5): a
//! subscriber that comes back on a replica that is not its owner's is
//! replayed what it missed from Redis, then the live broadcasts, with none
//! repeated and none skipped, also while the owner keeps publishing; a
//! history recreated (another epoch), outgrown, or lost by Redis and
//! written back.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{publish_back_to_back, Client, TestServer, PATIENCE};
use crate::two_replicas;

/// The owner `radio` on `server`, having created `news` keeping `size`
/// messages for a minute.
async fn owner_of_news(server: &TestServer, size: u64) -> Client {
    let mut owner = server.client("radio").await;
    create_news(&mut owner, size).await;
    owner
}

/// Creates `news` keeping `size` messages for a minute (the owner's request
/// 0).
pub async fn create_news(owner: &mut Client, size: u64) {
    let history = json!({"size": size, "ttl": 60});
    let create = json!({"type": "SERVICE_CREATE", "service": "news", "history": history});
    let reply = owner.answer(create, 0).await;
    assert_eq!(reply["successful"], true, "{reply}");
    assert_eq!(reply["service"]["history"], history, "{reply}");
}

/// Broadcasts `m{n}` to `news`, as the owner's request `n`.
pub async fn broadcast(owner: &mut Client, n: u64) {
    let target = json!({"type": "SERVICE", "service": "news"});
    let message = json!({"type": "MESSAGE", "target": target, "data": format!("m{n}")});
    let ok = owner.answer(message, n).await;
    assert_eq!(ok["type"], "OK", "{ok}");
}

/// SELF_SUBSCRIBE to `news` from `position` (none when `null`): the result,
/// once the client's replica has heard of the service (it learns of one
/// created on another replica from its event).
pub async fn subscribe(client: &mut Client, position: &Value) -> Value {
    let mut subscribe = json!({"type": "SELF_SUBSCRIBE", "service": "news"});
    if !position.is_null() {
        subscribe["position"] = position.clone();
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        client.send(subscribe.clone()).await;
        let reply = loop {
            let payload = client.recv().await;
            if payload.get("seq").is_some() {
                break payload;
            }
        };
        if reply["type"] == "INVALID_SERVICE" && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        assert_eq!(reply["type"], "SELF_SUBSCRIBE_RESULT", "{reply}");
        assert_eq!(reply["successful"], true, "{reply}");
        return reply;
    }
}

/// The next MESSAGE's offset, after checking its data names it.
pub async fn next_offset(client: &mut Client) -> (u64, Value) {
    let message = client.skip_to("MESSAGE").await;
    let offset = message["position"]["offset"].as_u64().expect("a position");
    assert_eq!(message["data"], format!("m{offset}"), "{message}");
    (offset, message["position"].clone())
}

/// `listener` on the replica that is not the owner's, subscribed from the
/// start, having seen `m1..=m3`: its last position.
async fn saw_three(owner: &mut Client, listener: &mut Client) -> Value {
    let first = subscribe(listener, &Value::Null).await;
    assert_eq!(first["position"]["offset"], 0, "{first}");
    assert!(first.get("recovered").is_none(), "{first}");
    for n in 1..=3 {
        broadcast(owner, n).await;
    }
    let mut last = Value::Null;
    for n in 1..=3 {
        let (offset, position) = next_offset(listener).await;
        assert_eq!(offset, n);
        assert_eq!(position["epoch"], first["position"]["epoch"]);
        last = position;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_resumes_on_either_replica_with_what_it_missed() {
    let (_redis, _files, r1, r2) = two_replicas();
    let mut owner = owner_of_news(&r1, 100).await;
    let mut listener = r2.client("listener").await;
    let last = saw_three(&mut owner, &mut listener).await;
    listener.close().await;
    for n in 4..=8 {
        broadcast(&mut owner, n).await;
    }

    // Back on the replica that is not the owner's: from Redis.
    let mut back = r2.client("listener").await;
    let resumed = subscribe(&mut back, &last).await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    assert_eq!(resumed["position"]["offset"], 8, "{resumed}");
    assert_eq!(resumed["position"]["epoch"], last["epoch"], "{resumed}");
    for n in 4..=8 {
        let message = back.recv().await;
        assert_eq!(message["type"], "MESSAGE", "{message}");
        assert_eq!(message["position"]["offset"], n, "{message}");
        assert_eq!(message["origin"]["service"]["name"], "news", "{message}");
    }
    broadcast(&mut owner, 9).await;
    assert_eq!(next_offset(&mut back).await.0, 9);
    back.expect_nothing_queued().await;

    // And on the owner's replica: from its copy.
    let mut there = r1.client("other").await;
    let resumed = subscribe(&mut there, &last).await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    for n in 4..=9 {
        assert_eq!(next_offset(&mut there).await.0, n);
    }
    there.expect_nothing_queued().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_is_repeated_or_skipped_resuming_elsewhere_while_the_owner_publishes() {
    const TOTAL: u64 = 500;
    let (_redis, _files, r1, r2) = two_replicas();
    let owner = owner_of_news(&r1, 1000).await;
    let mut client = r2.client("listener").await;
    subscribe(&mut client, &Value::Null).await;
    // Back to back, without waiting for each OK, while the listener comes
    // and goes on the other replica.
    let publishing = tokio::spawn(publish_back_to_back(owner, "news", TOTAL));
    let mut seen = Vec::new();
    let mut last = Value::Null;
    for round in 0..8 {
        for _ in 0..(10 + round * 10) {
            let (offset, position) = next_offset(&mut client).await;
            seen.push(offset);
            last = position;
        }
        client.close().await;
        client = r2.client("listener").await;
        let resumed = subscribe(&mut client, &last).await;
        assert_eq!(resumed["recovered"], true, "{resumed}");
    }
    while seen.last() != Some(&TOTAL) {
        seen.push(next_offset(&mut client).await.0);
    }
    assert_eq!(
        seen,
        (1..=TOTAL).collect::<Vec<_>>(),
        "every offset once, in order"
    );
    let _owner = publishing.await.expect("the owner published everything");
    client.expect_nothing_queued().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_or_outgrown_history_is_answered_not_recovered() {
    let (redis, _files, r1, r2) = two_replicas();
    let mut owner = owner_of_news(&r1, 2).await;
    let mut listener = r2.client("listener").await;
    let last = saw_three(&mut owner, &mut listener).await;
    listener.close().await;
    for n in 4..=6 {
        broadcast(&mut owner, n).await;
    }
    // 4 fell out of a history of 2.
    let mut back = r2.client("listener").await;
    let lost = subscribe(&mut back, &last).await;
    assert_eq!(lost["recovered"], false, "{lost}");
    assert_eq!(lost["position"]["offset"], 6, "{lost}");
    back.expect_nothing_queued().await;
    broadcast(&mut owner, 7).await;
    assert_eq!(next_offset(&mut back).await.0, 7);
    back.close().await;

    // The service deleted and created again: another epoch. The listener
    // waits until its replica has heard of both.
    let mut again = r2.client("listener").await;
    let delete = owner
        .answer(json!({"type": "SERVICE_DELETE", "service": "news"}), 8)
        .await;
    assert_eq!(delete["type"], "SERVICE_DELETE_RESULT", "{delete}");
    // Its history went with it.
    let kept = [
        "EXISTS",
        "concierge:history:news",
        "concierge:history-head:news",
    ];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while redis.cli(&kept).trim() != "0" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the history outlived its service"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let create = json!({"type": "SERVICE_CREATE", "service": "news",
                        "history": {"size": 2, "ttl": 60}});
    let created = owner.answer(create, 9).await;
    assert_eq!(created["successful"], true, "{created}");
    again.skip_to("SERVICE_DELETE_RESULT").await;
    again.skip_to("SERVICE_CREATE_RESULT").await;
    let other = subscribe(&mut again, &last).await;
    assert_eq!(other["recovered"], false, "{other}");
    assert_ne!(other["position"]["epoch"], last["epoch"], "{other}");
    assert_eq!(other["position"]["offset"], 0, "{other}");
}

/// Waits until every server's `/readyz` says it is ready (or not).
async fn ready(servers: &[&TestServer], ready: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    for server in servers {
        loop {
            let status = reqwest::get(server.http_url("/readyz"))
                .await
                .unwrap()
                .status();
            if (status == 200) == ready {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ready: {status}, not {ready}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_redis_lost_is_written_back_by_the_owners_replica() {
    let (mut redis, _files, r1, r2) = two_replicas();
    let mut owner = owner_of_news(&r1, 100).await;
    let mut listener = r2.client("listener").await;
    let last = saw_three(&mut owner, &mut listener).await;
    listener.close().await;
    for n in 4..=5 {
        broadcast(&mut owner, n).await;
    }
    // An empty Redis: every replica writes its state back once it is
    // reconnected, and is ready again only then.
    redis.kill();
    ready(&[&r1, &r2], false).await;
    redis.restart();
    ready(&[&r1, &r2], true).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while redis.cli(&["XLEN", "concierge:history:news"]).trim() != "5" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the history is not back in Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut back = r2.client("listener").await;
    let resumed = subscribe(&mut back, &last).await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    for n in 4..=5 {
        assert_eq!(next_offset(&mut back).await.0, n);
    }
    back.expect_nothing_queued().await;
}
