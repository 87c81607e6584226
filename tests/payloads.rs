//! Every payload after identification: replies, seq numbering, broadcasts,
//! every MESSAGE target, and what a departing client leaves behind.

mod common;

use common::{Client, TestServer};
use serde_json::{json, Value};

/// Two identified clients, `a` having seen `b` join.
async fn pair(server: &TestServer) -> (Client, Client) {
    let mut a = server.client("alice").await;
    let b = server.client("bob").await;
    let joined = a.expect("CLIENT_JOINED").await;
    assert_eq!(joined["client"]["name"], "bob");
    (a, b)
}

fn uuids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_str().expect("uuid string").to_owned())
        .collect()
}

#[tokio::test]
async fn seq_counts_text_payloads_from_zero_and_self_set_seq_moves_it() {
    let server = TestServer::start();
    let mut a = server.client("alice").await;
    a.request(json!({"type": "SELF_FETCH"}), 0).await;
    a.request(json!({"type": "CLIENT_FETCH_ALL"}), 1).await;
    // Malformed and unsupported payloads are counted too.
    let bad = a.request(json!({"type": "SELF_SUBSCRIBE"}), 2).await;
    assert_eq!(bad["type"], "ERROR_PROTOCOL");
    assert!(bad["desc"].as_str().unwrap().contains("service"), "{bad}");
    let unsupported = a.request(json!({"type": "FLY"}), 3).await;
    assert_eq!(unsupported["type"], "ERROR_UNSUPPORTED");
    a.send_text("not json at all".into()).await;
    let garbage = a.expect("ERROR_PROTOCOL").await;
    assert_eq!(garbage["seq"], 4);

    let ok = a
        .request(json!({"type": "SELF_SET_SEQ", "seq": 100}), 100)
        .await;
    assert_eq!(ok["type"], "OK");
    a.request(json!({"type": "SELF_FETCH"}), 101).await;
    a.request(json!({"type": "SELF_SET_SEQ", "seq": 0}), 0)
        .await;
    a.request(json!({"type": "SELF_FETCH"}), 1).await;

    // Binary frames are refused without being counted.
    use futures_util::SinkExt;
    a.ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        vec![0, 1].into(),
    ))
    .await
    .unwrap();
    let err = a.expect("ERROR_PROTOCOL").await;
    assert!(err.get("seq").is_none(), "{err}");
    a.request(json!({"type": "SELF_FETCH"}), 2).await;

    // A second IDENTIFY is an error, not a new identity.
    let again = a
        .request(
            json!({"type": "IDENTIFY", "name": "x", "version": "0.2.0"}),
            3,
        )
        .await;
    assert_eq!(again["type"], "ERROR_PROTOCOL");
    let me = a.request(json!({"type": "SELF_FETCH"}), 4).await;
    assert_eq!(me["client"]["name"], "alice");
}

#[tokio::test]
async fn replies_come_in_request_order() {
    let server = TestServer::start();
    let mut a = server.client("alice").await;
    for _ in 0..50 {
        a.send(json!({"type": "SELF_FETCH"})).await;
        a.send(json!({"type": "SELF_SET_SEQ", "seq": 7})).await;
    }
    let mut expected = 0;
    for i in 0..100 {
        let reply = a.recv().await;
        assert_eq!(reply["seq"], expected, "reply {i}: {reply}");
        expected = if i % 2 == 0 { 7 } else { 8 };
    }
}

#[tokio::test]
async fn self_fetch_client_fetch_and_client_fetch_all() {
    let server = TestServer::start();
    let (mut a, b) = pair(&server).await;
    let me = a.request(json!({"type": "SELF_FETCH"}), 0).await;
    assert_eq!(me["type"], "SELF_FETCH_RESULT");
    assert_eq!(me["client"]["uuid"], a.uuid.to_string());
    assert_eq!(me["client"]["tags"], json!(["test"]));
    assert_eq!(me["subscriptions"], json!([]));

    let other = a
        .request(
            json!({"type": "CLIENT_FETCH", "uuid": b.uuid.to_string()}),
            1,
        )
        .await;
    assert_eq!(other["type"], "CLIENT_FETCH_RESULT");
    assert_eq!(other["client"]["name"], "bob");
    assert_eq!(other["subscriptions"], json!([]));

    for uuid in ["nope", "00000000-0000-0000-0000-000000000000"] {
        let missing = a
            .request(json!({"type": "CLIENT_FETCH", "uuid": uuid}), 2)
            .await;
        assert_eq!(
            missing,
            json!({"type": "INVALID_UUID", "uuid": uuid, "seq": 2})
        );
        a.send(json!({"type": "SELF_SET_SEQ", "seq": 1})).await;
        a.expect("OK").await;
    }

    let all = a.request(json!({"type": "CLIENT_FETCH_ALL"}), 2).await;
    let names: Vec<&str> = all["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
}

#[tokio::test]
async fn client_joined_and_left_reach_everyone_else() {
    let server = TestServer::start();
    let (mut a, b) = pair(&server).await;
    let mut c = server.client("carol").await;
    a.expect("CLIENT_JOINED").await;
    let bob_uuid = b.uuid;
    b.close().await;
    for client in [&mut a, &mut c] {
        let left = client.expect("CLIENT_LEFT").await;
        assert_eq!(left["client"]["uuid"], bob_uuid.to_string());
        assert!(left.get("seq").is_none());
    }
    // The joiner does not hear about itself.
    c.expect_nothing_queued().await;
}

#[tokio::test]
async fn service_lifecycle_and_broadcasts() {
    let server = TestServer::start();
    let (mut a, mut b) = pair(&server).await;

    // Create: the creator gets the result with seq, everyone else without.
    let created = a
        .request(
            json!({"type": "SERVICE_CREATE", "service": "chat", "nickname": "Chat"}),
            0,
        )
        .await;
    assert_eq!(created["type"], "SERVICE_CREATE_RESULT");
    assert_eq!(created["successful"], true);
    assert_eq!(created["service"]["owner_uuid"], a.uuid.to_string());
    assert_eq!(created["service"]["nickname"], "Chat");
    let seen = b.expect("SERVICE_CREATE_RESULT").await;
    assert!(seen.get("seq").is_none());
    assert_eq!(seen["service"]["name"], "chat");
    a.expect_nothing_queued().await;

    // Creating it again fails, and is not broadcast.
    let dup = b
        .request(json!({"type": "SERVICE_CREATE", "service": "chat"}), 0)
        .await;
    assert_eq!(dup["successful"], false);
    assert_eq!(dup["service"]["owner_uuid"], a.uuid.to_string());
    a.expect_nothing_queued().await;

    // Subscribe: the owner subscribes to see joins.
    let sub = a
        .request(json!({"type": "SELF_SUBSCRIBE", "service": "chat"}), 1)
        .await;
    assert_eq!(sub["type"], "SELF_SUBSCRIBE_RESULT");
    assert_eq!(sub["successful"], true);
    assert_eq!(uuids(&sub["service"]["subscribers"]), [a.uuid.to_string()]);
    let sub = b
        .request(json!({"type": "SELF_SUBSCRIBE", "service": "chat"}), 1)
        .await;
    assert_eq!(
        uuids(&sub["service"]["subscribers"]),
        [a.uuid.to_string(), b.uuid.to_string()]
    );
    let joined = a.expect("SERVICE_CLIENT_SUBSCRIBED").await;
    assert_eq!(joined["client"]["name"], "bob");
    assert_eq!(joined["service"]["name"], "chat");
    assert!(joined.get("seq").is_none());
    let again = b
        .request(json!({"type": "SELF_SUBSCRIBE", "service": "chat"}), 2)
        .await;
    assert_eq!(again["successful"], false);
    let missing = b
        .request(json!({"type": "SELF_SUBSCRIBE", "service": "nope"}), 3)
        .await;
    assert_eq!(
        missing,
        json!({"type": "INVALID_SERVICE", "service": "nope", "seq": 3})
    );

    // Fetches see the subscribers.
    let fetched = b
        .request(json!({"type": "SERVICE_FETCH", "service": "chat"}), 4)
        .await;
    assert_eq!(fetched["type"], "SERVICE_FETCH_RESULT");
    assert_eq!(
        fetched["service"]["subscribers"].as_array().unwrap().len(),
        2
    );
    let all = b.request(json!({"type": "SERVICE_FETCH_ALL"}), 5).await;
    assert_eq!(all["type"], "SERVICE_FETCH_ALL_RESULT");
    assert_eq!(all["services"].as_array().unwrap().len(), 1);
    let me = b.request(json!({"type": "SELF_FETCH"}), 6).await;
    assert_eq!(me["subscriptions"][0]["name"], "chat");
    let missing = b
        .request(json!({"type": "SERVICE_FETCH", "service": "nope"}), 7)
        .await;
    assert_eq!(missing["type"], "INVALID_SERVICE");

    // Unsubscribe: announced to the remaining subscribers.
    let unsub = b
        .request(json!({"type": "SELF_UNSUBSCRIBE", "service": "chat"}), 8)
        .await;
    assert_eq!(unsub["type"], "SELF_UNSUBSCRIBE_RESULT");
    assert_eq!(unsub["successful"], true);
    assert_eq!(
        uuids(&unsub["service"]["subscribers"]),
        [a.uuid.to_string()]
    );
    let left = a.expect("SERVICE_CLIENT_UNSUBSCRIBED").await;
    assert_eq!(left["client"]["name"], "bob");
    let again = b
        .request(json!({"type": "SELF_UNSUBSCRIBE", "service": "chat"}), 9)
        .await;
    assert_eq!(again["successful"], false);
    let missing = b
        .request(json!({"type": "SELF_UNSUBSCRIBE", "service": "nope"}), 10)
        .await;
    assert_eq!(missing["type"], "INVALID_SERVICE");

    // Delete: only the owner; everyone hears it.
    let denied = b
        .request(json!({"type": "SERVICE_DELETE", "service": "chat"}), 11)
        .await;
    assert_eq!(denied["type"], "BAD");
    assert!(denied["desc"].as_str().unwrap().contains("owner"));
    let missing = b
        .request(json!({"type": "SERVICE_DELETE", "service": "nope"}), 12)
        .await;
    assert_eq!(missing["type"], "INVALID_SERVICE");
    let deleted = a
        .request(json!({"type": "SERVICE_DELETE", "service": "chat"}), 2)
        .await;
    assert_eq!(deleted["type"], "SERVICE_DELETE_RESULT");
    assert_eq!(deleted["service"]["name"], "chat");
    let seen = b.expect("SERVICE_DELETE_RESULT").await;
    assert!(seen.get("seq").is_none());
    let all = b.request(json!({"type": "SERVICE_FETCH_ALL"}), 13).await;
    assert_eq!(all["services"], json!([]));
    let me = a.request(json!({"type": "SELF_FETCH"}), 3).await;
    assert_eq!(me["subscriptions"], json!([]));
}

#[tokio::test]
async fn service_names_and_limits_are_enforced() {
    let server = TestServer::with(|s| {
        s.max_services_per_client = 2;
        s.max_subscriptions_per_client = 1;
        s.max_name_len = 10;
    });
    let mut a = server.client("alice").await;
    for (i, name) in ["", "has space", "waytoolongname"].iter().enumerate() {
        let bad = a
            .request(json!({"type": "SERVICE_CREATE", "service": name}), i as u64)
            .await;
        assert_eq!(bad["type"], "BAD", "{name:?}");
        assert!(bad["desc"].is_string());
    }
    a.request(json!({"type": "SERVICE_CREATE", "service": "s1"}), 3)
        .await;
    a.request(json!({"type": "SERVICE_CREATE", "service": "s2"}), 4)
        .await;
    let over = a
        .request(json!({"type": "SERVICE_CREATE", "service": "s3"}), 5)
        .await;
    assert_eq!(over["type"], "BAD");
    assert!(
        over["desc"].as_str().unwrap().contains("at most 2"),
        "{over}"
    );
    a.request(json!({"type": "SELF_SUBSCRIBE", "service": "s1"}), 6)
        .await;
    let over = a
        .request(json!({"type": "SELF_SUBSCRIBE", "service": "s2"}), 7)
        .await;
    assert_eq!(over["type"], "BAD");
}

#[tokio::test]
async fn message_by_name_and_uuid_relays_data_and_origin() {
    let server = TestServer::start();
    let (mut a, mut b) = pair(&server).await;
    let raw = r#"{"type":"MESSAGE","target":{"type":"NAME","name":"bob"},"data":{ "z": 1,  "a":[1.50, "é"] },"origin":{"name":"forged"}}"#;
    a.send_text(raw.into()).await;
    let ok = a.expect("OK").await;
    assert_eq!(ok["seq"], 0);
    // Compare the raw text: data must be relayed byte for byte.
    let text = loop {
        match b.ws.next().await.unwrap().unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(t) => break t,
            _ => continue,
        }
    };
    assert!(
        text.contains(r#""data":{ "z": 1,  "a":[1.50, "é"] }"#),
        "{text}"
    );
    let got: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(got["type"], "MESSAGE");
    assert!(got.get("seq").is_none());
    assert_eq!(got["target"], json!({"type": "NAME", "name": "bob"}));
    assert_eq!(got["origin"]["name"], "alice");
    assert_eq!(got["origin"]["uuid"], a.uuid.to_string());
    assert_eq!(got["origin"]["tags"], json!(["test"]));
    assert!(got["origin"].get("service").is_none());

    b.send(json!({"type": "MESSAGE", "target": {"type": "UUID", "uuid": a.uuid.to_string()}, "data": 42}))
        .await;
    b.expect("OK").await;
    let got = a.expect("MESSAGE").await;
    assert_eq!(got["data"], 42);
    assert_eq!(got["origin"]["name"], "bob");

    // Messages to oneself are allowed.
    a.send(json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "alice"}, "data": "me"}))
        .await;
    assert_eq!(a.expect("MESSAGE").await["data"], "me");
    a.expect("OK").await;

    let missing = a
        .request(
            json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "nobody"}, "data": 1}),
            2,
        )
        .await;
    assert_eq!(
        missing,
        json!({"type": "INVALID_NAME", "name": "nobody", "seq": 2})
    );
    for uuid in ["zzz", "00000000-0000-0000-0000-000000000000"] {
        a.send(json!({"type": "MESSAGE", "target": {"type": "UUID", "uuid": uuid}, "data": 1}))
            .await;
        let reply = a.expect("INVALID_UUID").await;
        assert_eq!(reply["uuid"], uuid);
    }
    let bad = a
        .request(
            json!({"type": "MESSAGE", "target": {"type": "NAME"}, "data": 1}),
            5,
        )
        .await;
    assert_eq!(bad["type"], "ERROR_PROTOCOL");
    let bad = a
        .request(json!({"type": "MESSAGE", "target": {"type": "ALL"}}), 6)
        .await;
    assert_eq!(bad["type"], "ERROR_PROTOCOL");
    b.expect_nothing_queued().await;
}

use futures_util::StreamExt;

#[tokio::test]
async fn message_to_all_reaches_everyone_including_the_sender() {
    let server = TestServer::start();
    let (mut a, mut b) = pair(&server).await;
    a.send(json!({"type": "MESSAGE", "target": {"type": "ALL"}, "data": [1, 2]}))
        .await;
    for client in [&mut a, &mut b] {
        let got = client.expect("MESSAGE").await;
        assert_eq!(got["data"], json!([1, 2]));
        assert_eq!(got["origin"]["name"], "alice");
    }
    assert_eq!(a.expect("OK").await["seq"], 0);
}

/// Owner `a` of "chat" (subscribed to itself), subscribers `b` and `c`,
/// bystander `d`. Everyone's queues are drained of the set-up broadcasts and
/// their seq counters reset to 0.
async fn chat_room(server: &TestServer) -> [Client; 4] {
    let mut a = server.client("alice").await;
    let mut b = server.client("bob").await;
    let mut c = server.client("carol").await;
    let d = server.client("dave").await;
    a.send(json!({"type": "SERVICE_CREATE", "service": "chat"}))
        .await;
    a.send(json!({"type": "SELF_SUBSCRIBE", "service": "chat"}))
        .await;
    a.skip_to("SELF_SUBSCRIBE_RESULT").await;
    for client in [&mut b, &mut c] {
        client
            .send(json!({"type": "SELF_SUBSCRIBE", "service": "chat"}))
            .await;
        client.skip_to("SELF_SUBSCRIBE_RESULT").await;
    }
    let mut clients = [a, b, c, d];
    // Every set-up broadcast was queued before the last subscription's
    // result came back, so it is queued before this OK too.
    for client in clients.iter_mut() {
        client.send(json!({"type": "SELF_SET_SEQ", "seq": 0})).await;
        client.skip_to("OK").await;
    }
    clients
}

#[tokio::test]
async fn service_messages_follow_ownership() {
    let server = TestServer::start();
    let [mut a, mut b, mut c, mut d] = chat_room(&server).await;

    // Owner → every subscriber but itself, with the service in the receipt.
    a.send(json!({"type": "MESSAGE", "target": {"type": "SERVICE", "service": "chat"}, "data": "hi all"}))
        .await;
    assert_eq!(a.expect("OK").await["seq"], 1);
    for client in [&mut b, &mut c] {
        let got = client.expect("MESSAGE").await;
        assert_eq!(got["data"], "hi all");
        assert_eq!(got["origin"]["name"], "alice");
        assert_eq!(got["origin"]["service"]["name"], "chat");
        assert_eq!(got["origin"]["service"]["owner_uuid"], a.uuid.to_string());
        assert_eq!(got["origin"]["service"]["subscribers"], json!([]));
    }
    a.expect_nothing_queued().await;
    d.expect_nothing_queued().await;

    // Subscriber → the owner only.
    b.send(json!({"type": "MESSAGE", "target": {"type": "SERVICE", "service": "chat"}, "data": "to owner"}))
        .await;
    assert_eq!(b.expect("OK").await["seq"], 1);
    let got = a.expect("MESSAGE").await;
    assert_eq!(got["data"], "to owner");
    assert_eq!(got["origin"]["name"], "bob");
    assert_eq!(got["origin"]["service"]["name"], "chat");
    c.expect_nothing_queued().await;

    // Anyone else → BAD.
    let bad = d
        .request(
            json!({"type": "MESSAGE", "target": {"type": "SERVICE", "service": "chat"}, "data": 1}),
            1,
        )
        .await;
    assert_eq!(bad["type"], "BAD");
    let missing = d
        .request(
            json!({"type": "MESSAGE", "target": {"type": "SERVICE", "service": "x"}, "data": 1}),
            2,
        )
        .await;
    assert_eq!(
        missing,
        json!({"type": "INVALID_SERVICE", "service": "x", "seq": 2})
    );

    // SERVICE_CLIENT_UUID: owner → one subscriber.
    let to_c = json!({"type": "MESSAGE", "target": {"type": "SERVICE_CLIENT_UUID", "service": "chat", "uuid": c.uuid.to_string()}, "data": "just you"});
    a.send(to_c.clone()).await;
    assert_eq!(a.expect("OK").await["seq"], 2);
    let got = c.expect("MESSAGE").await;
    assert_eq!(got["data"], "just you");
    assert_eq!(got["origin"]["service"]["name"], "chat");
    b.expect_nothing_queued().await;
    // Not the owner → BAD; not a subscriber → INVALID_UUID.
    b.send(to_c).await;
    assert_eq!(b.expect("BAD").await["seq"], 2);
    let to_d = json!({"type": "MESSAGE", "target": {"type": "SERVICE_CLIENT_UUID", "service": "chat", "uuid": d.uuid.to_string()}, "data": 1});
    a.send(to_d).await;
    assert_eq!(a.expect("INVALID_UUID").await["uuid"], d.uuid.to_string());
    d.expect_nothing_queued().await;
}

#[tokio::test]
async fn owner_leaving_deletes_its_services_and_subscribers_leaving_are_announced() {
    let server = TestServer::start();
    let [mut a, b, mut c, mut d] = chat_room(&server).await;

    let bob = b.uuid.to_string();
    b.close().await;
    let unsub = a.expect("SERVICE_CLIENT_UNSUBSCRIBED").await;
    assert_eq!(unsub["client"]["uuid"], bob);
    assert_eq!(
        uuids(&unsub["service"]["subscribers"]),
        [a.uuid.to_string(), c.uuid.to_string()]
    );
    assert_eq!(a.expect("CLIENT_LEFT").await["client"]["uuid"], bob);
    assert_eq!(
        c.expect("SERVICE_CLIENT_UNSUBSCRIBED").await["client"]["uuid"],
        bob
    );
    assert_eq!(c.expect("CLIENT_LEFT").await["client"]["uuid"], bob);
    assert_eq!(d.expect("CLIENT_LEFT").await["client"]["uuid"], bob);

    let alice = a.uuid.to_string();
    a.close().await;
    // Carol is told alice unsubscribed (alice subscribed to her own service),
    // then that the service is gone, then that alice left.
    assert_eq!(
        c.expect("SERVICE_CLIENT_UNSUBSCRIBED").await["client"]["uuid"],
        alice
    );
    let deleted = c.expect("SERVICE_DELETE_RESULT").await;
    assert_eq!(deleted["service"]["name"], "chat");
    assert!(deleted.get("seq").is_none());
    assert_eq!(c.expect("CLIENT_LEFT").await["client"]["uuid"], alice);
    assert_eq!(
        d.expect("SERVICE_DELETE_RESULT").await["service"]["name"],
        "chat"
    );
    assert_eq!(d.expect("CLIENT_LEFT").await["client"]["uuid"], alice);

    let me = c.request(json!({"type": "SELF_FETCH"}), 1).await;
    assert_eq!(me["subscriptions"], json!([]));
    let all = c.request(json!({"type": "SERVICE_FETCH_ALL"}), 2).await;
    assert_eq!(all["services"], json!([]));
    // The name is free again.
    let mut again = server.connect().await;
    again.identify("alice").await;
}

#[tokio::test]
async fn one_senders_frames_keep_their_order_across_targets() {
    let server = TestServer::start();
    let [mut a, mut b, _c, _d] = chat_room(&server).await;
    for i in 0..200 {
        let target = match i % 3 {
            0 => json!({"type": "SERVICE", "service": "chat"}),
            1 => json!({"type": "NAME", "name": "bob"}),
            _ => json!({"type": "ALL"}),
        };
        a.send(json!({"type": "MESSAGE", "target": target, "data": i}))
            .await;
    }
    for i in 0..200 {
        let got = b.expect("MESSAGE").await;
        assert_eq!(got["data"], i, "{got}");
    }
}

/// The client library (the agent's and `ctl`'s) keeps its unanswered
/// requests within the gateway's bound: 20,000 MESSAGEs sent at once by
/// concurrent tasks to a client that has just left (each needs a lookup,
/// and the requests sent meanwhile wait behind it) are all answered,
/// where a sender that did not wait for its replies was closed with 1008
/// ("too fast") past `max_outgoing_queue` waiting requests.
#[actix_web::test]
async fn the_client_library_keeps_its_requests_within_the_gateways_bound() {
    use concierge::protocol::{PayloadOut, Target};
    use concierge_client::{connect, Identity};

    const SENT: usize = 20_000;
    let server = TestServer::start();
    let identity = |name: &str| Identity {
        name: name.into(),
        tags: Vec::new(),
        token: None,
        presence: false,
        take_over: true,
    };
    let gone = connect(&server.ws_url(), &identity("gone"))
        .await
        .expect("connects");
    let target = Target::Uuid {
        uuid: gone.uuid.to_string(),
    };
    gone.sender.close().await;
    drop(gone);
    let mut sender = connect(&server.ws_url(), &identity("sender"))
        .await
        .expect("connects");
    let tasks: Vec<_> = (0..SENT)
        .map(|i| {
            let (tx, target) = (sender.sender.clone(), target.clone());
            actix_web::rt::spawn(async move {
                tx.message(target, &json!({"n": i})).await.expect("sent");
            })
        })
        .collect();
    let mut answered = 0;
    while answered < SENT {
        let next = tokio::time::timeout(common::PATIENCE, sender.receiver.next())
            .await
            .expect("a reply within the patience")
            .expect("the connection stays open");
        if next.seq.is_some() {
            assert!(
                matches!(
                    next.payload,
                    PayloadOut::InvalidUuid { .. } | PayloadOut::Ok
                ),
                "{:?}",
                next.payload
            );
            answered += 1;
        }
    }
    for task in tasks {
        task.await.expect("task");
    }
}

/// The harness's negative check is not vacuous: a frame queued for a client
/// before its ping fails `expect_nothing_queued` (the pong comes behind it).
#[tokio::test]
#[should_panic(expected = "expected nothing queued")]
async fn a_queued_frame_fails_the_nothing_queued_check() {
    let server = TestServer::start();
    let (mut a, mut b) = pair(&server).await;
    a.request(
        json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "bob"}, "data": 1}),
        0,
    )
    .await;
    b.expect_nothing_queued().await;
}
