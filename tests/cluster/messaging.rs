//! Clients on different replicas as if on one gateway: messages by every
//! target, broadcasts to remote subscribers, clients found from their
//! HELLO on, names unique across replicas, replies in request order, and
//! files uploaded through one replica and downloaded through another.

use std::time::Duration;

use serde_json::json;

use crate::common::redis::RedisServer;
use crate::common::{Client, TestServer};
use crate::{answer, replica, replica_at, sees, subscribers, two_replicas};

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
