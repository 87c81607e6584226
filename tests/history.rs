//! Services' histories on a gateway running alone (`docs/PROTOCOL.md` §17):
//! positions on broadcasts, a subscriber that comes back replayed what it
//! missed and then the live ones with none repeated and none skipped (also
//! while the owner keeps publishing), and the answers when it cannot be.

mod common;

use common::{publish_back_to_back, Client, TestServer};
use serde_json::{json, Value};

/// The owner `radio`, having created `news` with `history` (none when
/// `null`), and the service as the reply gives it.
async fn owner_of_news(server: &TestServer, history: Value) -> (Client, Value) {
    let mut owner = server.client("radio").await;
    let mut create = json!({"type": "SERVICE_CREATE", "service": "news"});
    if !history.is_null() {
        create["history"] = history;
    }
    let reply = owner.answer(create, 0).await;
    assert_eq!(reply["type"], "SERVICE_CREATE_RESULT", "{reply}");
    assert_eq!(reply["successful"], true, "{reply}");
    (owner, reply["service"].clone())
}

/// Broadcasts `text` to `news`; `seq` numbers the owner's requests.
async fn broadcast(owner: &mut Client, text: &str, seq: u64) {
    let target = json!({"type": "SERVICE", "service": "news"});
    let ok = owner
        .answer(
            json!({"type": "MESSAGE", "target": target, "data": text}),
            seq,
        )
        .await;
    assert_eq!(ok["type"], "OK", "{ok}");
}

/// A listener subscribed to `news` from `position` (none when `null`):
/// the SELF_SUBSCRIBE_RESULT.
async fn subscribe(client: &mut Client, position: Value, seq: u64) -> Value {
    let mut subscribe = json!({"type": "SELF_SUBSCRIBE", "service": "news"});
    if !position.is_null() {
        subscribe["position"] = position;
    }
    let reply = client.answer(subscribe, seq).await;
    assert_eq!(reply["type"], "SELF_SUBSCRIBE_RESULT", "{reply}");
    assert_eq!(reply["successful"], true, "{reply}");
    reply
}

/// The next MESSAGE's data and position, skipping the rest.
async fn next_message(client: &mut Client) -> (String, Value) {
    let message = client.skip_to("MESSAGE").await;
    let data = message["data"].as_str().expect("text data").to_owned();
    (data, message["position"].clone())
}

#[tokio::test]
async fn broadcasts_carry_their_position_and_a_returning_subscriber_gets_what_it_missed() {
    let server = TestServer::start();
    let (mut owner, service) = owner_of_news(&server, json!({"size": 100, "ttl": 60})).await;
    assert_eq!(service["history"], json!({"size": 100, "ttl": 60}));

    let mut listener = server.client("listener").await;
    let first = subscribe(&mut listener, Value::Null, 0).await;
    // No position given: nothing said of a recovery, the history's start.
    assert!(first.get("recovered").is_none(), "{first}");
    assert_eq!(first["position"]["offset"], 0, "{first}");
    let epoch = first["position"]["epoch"].clone();
    assert!(epoch.as_str().is_some_and(|e| !e.is_empty()), "{first}");

    for n in 1..=3 {
        broadcast(&mut owner, &format!("m{n}"), n).await;
    }
    let mut last = Value::Null;
    for n in 1..=3u64 {
        let (data, position) = next_message(&mut listener).await;
        assert_eq!(data, format!("m{n}"));
        assert_eq!(position, json!({"epoch": epoch, "offset": n}));
        last = position;
    }
    listener.close().await;

    for n in 4..=8 {
        broadcast(&mut owner, &format!("m{n}"), n).await;
    }
    let mut back = server.client("listener").await;
    let resumed = subscribe(&mut back, last, 0).await;
    assert_eq!(resumed["recovered"], true, "{resumed}");
    assert_eq!(resumed["position"], json!({"epoch": epoch, "offset": 8}));
    assert_eq!(
        resumed["service"]["history"],
        json!({"size": 100, "ttl": 60})
    );
    // The replay comes right after the reply, in order, then the live ones.
    for n in 4..=8u64 {
        let message = back.recv().await;
        assert_eq!(message["type"], "MESSAGE", "{message}");
        assert_eq!(message["data"], format!("m{n}"));
        assert_eq!(message["position"]["offset"], n);
        assert_eq!(message["origin"]["service"]["name"], "news", "{message}");
    }
    broadcast(&mut owner, "m9", 9).await;
    let (data, position) = next_message(&mut back).await;
    assert_eq!(data, "m9");
    assert_eq!(position["offset"], 9);
    back.expect_nothing_queued().await;
}

#[tokio::test]
async fn none_is_repeated_or_skipped_while_the_owner_keeps_publishing() {
    const TOTAL: u64 = 500;
    let server = TestServer::start();
    let (owner, _) = owner_of_news(&server, json!({"size": 1000, "ttl": 60})).await;
    let mut listener = server.client("listener").await;
    subscribe(&mut listener, Value::Null, 0).await;
    // Sent back to back, without waiting for each OK: the gateway routes
    // them while the listener comes and goes.
    let publishing = tokio::spawn(publish_back_to_back(owner, "news", TOTAL));
    // Leaves after a few, comes back (several times) while the owner goes on.
    let mut seen: Vec<u64> = Vec::new();
    let mut client = listener;
    let mut last = Value::Null;
    for round in 0..8 {
        for _ in 0..(10 + round * 10) {
            let (_, position) = next_message(&mut client).await;
            seen.push(position["offset"].as_u64().expect("offset"));
            last = position;
        }
        client.close().await;
        client = server.client("listener").await;
        let resumed = subscribe(&mut client, last.clone(), 0).await;
        assert_eq!(resumed["recovered"], true, "{resumed}");
    }
    while seen.last() != Some(&TOTAL) {
        let (_, position) = next_message(&mut client).await;
        seen.push(position["offset"].as_u64().expect("offset"));
    }
    let expected: Vec<u64> = (1..=TOTAL).collect();
    assert_eq!(seen, expected, "every offset once, in order");
    // Kept until the end: its departure would delete the service.
    let _owner = publishing.await.expect("the owner published everything");
    client.expect_nothing_queued().await;
}

#[tokio::test]
async fn a_position_out_of_the_history_is_answered_not_recovered() {
    let server = TestServer::start();
    let (mut owner, _) = owner_of_news(&server, json!({"size": 2, "ttl": 60})).await;
    let mut listener = server.client("listener").await;
    let start = subscribe(&mut listener, Value::Null, 0).await["position"].clone();
    listener.close().await;
    for n in 1..=4 {
        broadcast(&mut owner, &format!("m{n}"), n).await;
    }
    // Messages 1 and 2 fell out of a history of 2.
    let mut back = server.client("listener").await;
    let lost = subscribe(&mut back, start.clone(), 0).await;
    assert_eq!(lost["recovered"], false, "{lost}");
    assert_eq!(lost["position"]["offset"], 4, "{lost}");
    // Subscribed all the same: the live ones come, nothing replayed.
    back.expect_nothing_queued().await;
    broadcast(&mut owner, "m5", 5).await;
    assert_eq!(next_message(&mut back).await.0, "m5");

    // Another epoch (a history lost), or a position ahead of it.
    for position in [
        json!({"epoch": "another", "offset": 3}),
        json!({"epoch": start["epoch"], "offset": 99}),
    ] {
        let mut other = server.client("other").await;
        let reply = subscribe(&mut other, position, 0).await;
        assert_eq!(reply["recovered"], false, "{reply}");
        other.expect_nothing_queued().await;
        other.close().await;
    }
}

#[tokio::test]
async fn a_service_without_history_says_so_and_recovers_nothing() {
    let server = TestServer::start();
    let (mut owner, service) = owner_of_news(&server, Value::Null).await;
    assert!(service.get("history").is_none(), "{service}");
    let mut listener = server.client("listener").await;
    let reply = subscribe(&mut listener, json!({"epoch": "e", "offset": 1}), 0).await;
    assert_eq!(reply["recovered"], false, "{reply}");
    assert!(reply.get("position").is_none(), "{reply}");
    broadcast(&mut owner, "plain", 1).await;
    let message = listener.skip_to("MESSAGE").await;
    assert!(message.get("position").is_none(), "{message}");
}

#[tokio::test]
async fn history_requests_are_checked_and_the_default_comes_from_the_settings() {
    let server = TestServer::with(|s| {
        s.history_size = 5;
        s.history_ttl_secs = 30;
        s.max_history_size = 50;
    });
    let mut owner = server.client("radio").await;
    let cases = [
        (json!({"size": 51, "ttl": 10}), "at most 50 messages"),
        (json!({"size": 5, "ttl": 0}), "1 to 86400 seconds"),
        (json!({"size": 5, "ttl": 86401}), "1 to 86400 seconds"),
    ];
    for (seq, (history, desc)) in (0u64..).zip(cases) {
        let reply = owner
            .answer(
                json!({"type": "SERVICE_CREATE", "service": "s", "history": history}),
                seq,
            )
            .await;
        assert_eq!(reply["type"], "BAD", "{reply}");
        assert!(reply["desc"].as_str().unwrap().contains(desc), "{reply}");
    }
    let malformed = owner
        .answer(
            json!({"type": "SERVICE_CREATE", "service": "s", "history": {"size": -1}}),
            3,
        )
        .await;
    assert_eq!(malformed["type"], "ERROR_PROTOCOL", "{malformed}");
    let default = owner
        .answer(json!({"type": "SERVICE_CREATE", "service": "d"}), 4)
        .await;
    assert_eq!(default["service"]["history"], json!({"size": 5, "ttl": 30}));
    // Asking for 0 messages keeps none, whatever the default.
    let none = owner
        .answer(
            json!({"type": "SERVICE_CREATE", "service": "n", "history": {"size": 0, "ttl": 1}}),
            5,
        )
        .await;
    assert!(none["service"].get("history").is_none(), "{none}");
}
