//! Following a process's output: the caps per requester, per process and
//! in all, and follows ended when their requester leaves.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::Client;
use crate::{messages_but_summaries, start, Fleet};

/// A `proc_output` follow request for `pid`, as a MESSAGE to host1.
fn follow_request(rid: u64, pid: u64) -> Value {
    json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "host1"},
           "data": {"req": "proc_output", "rid": rid, "msg": {"proc_id": pid, "follow": true}}})
}

/// The `data` of the first MESSAGE (among those `seen` before, then the
/// ones arriving) for which `wanted` holds; every MESSAGE read is kept in
/// `seen`. A client's `recv` bounds each wait.
async fn message_where(
    client: &mut Client,
    seen: &mut Vec<Value>,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    if let Some(found) = seen.iter().find(|d| wanted(d)) {
        return found.clone();
    }
    loop {
        let payload = client.skip_to("MESSAGE").await;
        let data = payload["data"].clone();
        seen.push(data.clone());
        if wanted(&data) {
            return data;
        }
    }
}

/// The reply (not an event) to request `rid`.
async fn reply_to(client: &mut Client, seen: &mut Vec<Value>, rid: u64) -> Value {
    message_where(client, seen, |d| d["rid"] == rid && d["msg"].is_object())
        .await
        .get("msg")
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn follows_are_capped_per_requester_per_process_and_in_all() {
    let fleet = Fleet::with_config(
        "max_follows = 4\nmax_follows_per_requester = 2\nmax_follows_per_process = 3",
    )
    .await;
    let chatty = start(
        &fleet,
        &["sh", "-c", "while :; do echo chatter; sleep 0.05; done"],
    )
    .await;
    let quiet = start(&fleet, &["sleep", "60"]).await;

    // A requester's third follow ends its first, which is told so.
    let mut alice = fleet.client("alice_raw", &fleet.alice).await;
    let mut seen = Vec::new();
    for rid in 1..=3 {
        alice.send(follow_request(rid, chatty)).await;
    }
    for rid in 1..=3 {
        let reply = reply_to(&mut alice, &mut seen, rid).await;
        assert_eq!(reply["following"], true, "{reply}");
    }
    let lost = message_where(&mut alice, &mut seen, |d| {
        d["rid"] == 1 && d["event"] == "exit"
    })
    .await;
    assert!(
        lost["lost"] == true
            && lost["desc"]
                .as_str()
                .is_some_and(|d| d.contains("max_follows_per_requester")),
        "{lost}"
    );

    // The chatty process is followed twice: a third follower, not a fourth.
    let mut vic = fleet.client("vic_raw", &fleet.vic).await;
    let mut vic_seen = Vec::new();
    vic.send(follow_request(1, chatty)).await;
    vic.send(follow_request(2, chatty)).await;
    let reply = reply_to(&mut vic, &mut vic_seen, 1).await;
    assert_eq!(reply["following"], true, "{reply}");
    let refused = reply_to(&mut vic, &mut vic_seen, 2).await;
    assert_eq!(refused["reason"], "limit", "{refused}");
    assert!(
        refused["desc"]
            .as_str()
            .is_some_and(|d| d.contains("max_follows_per_process")),
        "{refused}"
    );

    // Four follows in all, then none more.
    let mut idle = fleet.client("vic_idle", &fleet.vic).await;
    idle.send(follow_request(1, quiet)).await;
    let reply = reply_to(&mut idle, &mut Vec::new(), 1).await;
    assert_eq!(reply["following"], true, "{reply}");
    let mut other = fleet.client("vic_other", &fleet.vic).await;
    other.send(follow_request(1, quiet)).await;
    let refused = reply_to(&mut other, &mut Vec::new(), 1).await;
    assert_eq!(refused["reason"], "limit", "{refused}");

    // When a requester leaves, its follows end: a chatty process's at its
    // next event, a quiet one's at the agent's next check of its requesters
    // (it sends nothing that would tell). Each makes room for one more.
    vic.close().await;
    follow_when_room(&mut other, quiet).await;
    idle.close().await;
    let mut last = fleet.client("vic_last", &fleet.vic).await;
    follow_when_room(&mut last, quiet).await;
}

/// Asks to follow `pid` until the agent has room for it (10 s at most).
async fn follow_when_room(client: &mut Client, pid: u64) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for rid in 100.. {
        client.send(follow_request(rid, pid)).await;
        let reply = reply_to(client, &mut seen, rid).await;
        if reply["following"] == true {
            return;
        }
        assert_eq!(reply["reason"], "limit", "{reply}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room for a follow: the departed requester's follows were not ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_viewer_asking_for_1500_follows_and_leaving_does_not_get_the_agent_thrown_off() {
    let fleet = Fleet::start().await;
    let chatty = start(
        &fleet,
        &["sh", "-c", "while :; do echo chatter; sleep 0.01; done"],
    )
    .await;
    let mut vic = fleet.client("vic_raw", &fleet.vic).await;
    for rid in 0..1500 {
        vic.send(follow_request(rid, chatty)).await;
    }
    let mut seen = Vec::new();
    let last = reply_to(&mut vic, &mut seen, 1499).await;
    assert_eq!(last["following"], true, "{last}");
    vic.close().await;

    // Nobody follows any more: the MESSAGEs the gateway receives stop.
    let metrics = || async {
        let text = reqwest::get(fleet.server.http_url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        messages_but_summaries(&text)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let before = metrics().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if metrics().await == before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent still streams after its requester left"
        );
    }
    // And the agent was never thrown off.
    let (code, _) = fleet.request(&fleet.alice, "ping", json!({})).await;
    assert_eq!(code, 0);
    let log = fleet.agent.log();
    assert!(!log.contains("disconnected"), "{log}");
}
