//! When Redis fails or a replica is cut off from it: replicas survive and
//! re-register, a frame Redis refused is not answered OK, a name given
//! away meanwhile closes its old client with 4005, and what happened
//! during the cut is written back when the link returns.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::redis::{RedisServer, Relay};
use crate::common::Client;
use crate::{
    answer, assert_not_sent, cluster_answer, replica, replica_at, sees, subscribers, two_replicas,
};

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
    assert_eq!(
        crate::common::counter(&r1, "cluster_frames_not_sent").await,
        3
    );
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
    assert_eq!(
        crate::common::counter(&r1, "cluster_frames_not_sent").await,
        3
    );
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
    let failed = crate::common::counter(&cut, "cluster_write_errors").await;
    leaver.close().await;
    // Its replica has removed it, and the write of its departure failed
    // (the only write it had to make): the departure is not in Redis.
    sees(&mut carol, &["carol", "watcher"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while crate::common::counter(&cut, "cluster_write_errors").await == failed {
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
