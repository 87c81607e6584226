//! Many clients at once: nothing lost, nothing duplicated, per-pair order kept.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Client, TestServer};
use serde_json::{json, Value};

use tokio::sync::Barrier;

const CLIENTS: u64 = 200;
const PER_CLIENT: u64 = 20;
/// Every fifth message of a client goes to the shared service (its owner).
const SERVICE_EVERY: u64 = 5;
const SERVICE: &str = "hub";
const OWNER: &str = "hub_owner";

fn name(i: u64) -> String {
    format!("c{i:03}")
}

/// splitmix64: a fixed, well-spread choice of targets.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Where sender `i`'s message `k` goes: `None` for the service.
fn target(i: u64, k: u64) -> Option<u64> {
    if k % SERVICE_EVERY == SERVICE_EVERY - 1 {
        return None;
    }
    let t = mix(i * 1_000 + k) % (CLIENTS - 1);
    Some(if t >= i { t + 1 } else { t })
}

/// For every receiver, the (sender, counter) pairs it must get, in order.
fn expected() -> HashMap<String, Vec<(u64, u64)>> {
    let mut out: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    for i in 0..CLIENTS {
        for k in 0..PER_CLIENT {
            let receiver = target(i, k).map_or_else(|| OWNER.to_owned(), name);
            out.entry(receiver).or_default().push((i, k));
        }
    }
    out
}

/// A payload for a failure message, without its long lists.
fn short(p: &Value) -> String {
    let text = p.to_string();
    match text.char_indices().nth(300) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text,
    }
}

/// Reads until `want` MESSAGEs arrived (and, for a sender, all its OKs),
/// checking every payload on the way.
async fn receive(c: &mut Client, want: usize, oks_wanted: u64, first_seq: u64) -> Vec<(u64, u64)> {
    let mut got = Vec::with_capacity(want);
    let mut last: HashMap<u64, u64> = HashMap::new();
    let mut oks = 0;
    while got.len() < want || oks < oks_wanted {
        let p = c.recv().await;
        match p["type"].as_str() {
            Some("OK") => {
                assert_eq!(p["seq"], first_seq + oks, "{}: OKs in order: {p}", c.name);
                oks += 1;
                assert!(oks <= oks_wanted, "{}: an extra OK: {p}", c.name);
            }
            Some("MESSAGE") => {
                assert!(p.get("seq").is_none(), "{}: {p}", c.name);
                let from = p["data"]["from"].as_u64().expect("from");
                let n = p["data"]["n"].as_u64().expect("n");
                assert_eq!(p["origin"]["name"], name(from), "{}: origin {p}", c.name);
                if let Some(prev) = last.insert(from, n) {
                    assert!(
                        n > prev,
                        "{}: from {from}, counter {n} after {prev}",
                        c.name
                    );
                }
                got.push((from, n));
                assert!(
                    got.len() <= want,
                    "{}: more messages than sent: {p}",
                    c.name
                );
            }
            Some("CLIENT_JOINED" | "SERVICE_CLIENT_SUBSCRIBED") => {}
            _ => panic!("{}: unexpected {}", c.name, short(&p)),
        }
    }
    got
}

/// After everyone is done: a request whose reply must be the next thing
/// received (anything before it would be a duplicate or a stray).
async fn nothing_more(c: &mut Client, seq: u64) {
    c.send(json!({"type": "SELF_FETCH"})).await;
    loop {
        let p = c.recv().await;
        match p["type"].as_str() {
            Some("SELF_FETCH_RESULT") => {
                assert_eq!(p["seq"], seq, "{}: {p}", c.name);
                return;
            }
            Some("CLIENT_JOINED" | "SERVICE_CLIENT_SUBSCRIBED") => {}
            _ => panic!("{}: received after the end: {}", c.name, short(&p)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_lose_nothing_and_keep_order() {
    let server = TestServer::with(|s| s.workers = 2);
    let url = server.ws_url();
    let expected = Arc::new(expected());
    assert_eq!(
        expected.values().map(Vec::len).sum::<usize>() as u64,
        CLIENTS * PER_CLIENT
    );
    let started = std::time::Instant::now();

    let mut owner = server.client(OWNER).await;
    let created = owner
        .request(json!({"type": "SERVICE_CREATE", "service": SERVICE}), 0)
        .await;
    assert_eq!(created["successful"], true, "{created}");

    // Everyone is identified and subscribed before anyone sends; everyone
    // has its OKs and messages before anyone checks for extras.
    let ready = Arc::new(Barrier::new(CLIENTS as usize + 1));
    let done = Arc::new(Barrier::new(CLIENTS as usize + 1));

    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (url, expected, ready, done) =
            (url.clone(), expected.clone(), ready.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(&url).await;
            c.identify(&name(i)).await;
            c.send(json!({"type": "SELF_SUBSCRIBE", "service": SERVICE}))
                .await;
            loop {
                let p = c.recv().await;
                if p["type"] == "SELF_SUBSCRIBE_RESULT" {
                    assert_eq!(p["seq"], 0);
                    assert_eq!(p["successful"], true);
                    break;
                }
                assert!(p.get("seq").is_none(), "{}: {p}", c.name);
            }
            ready.wait().await;

            for k in 0..PER_CLIENT {
                let to = match target(i, k) {
                    Some(t) => json!({"type": "NAME", "name": name(t)}),
                    None => json!({"type": "SERVICE", "service": SERVICE}),
                };
                c.send(json!({
                    "type": "MESSAGE",
                    "target": to,
                    "data": {"from": i, "n": k},
                }))
                .await;
            }
            let want = expected.get(&name(i)).map_or(0, Vec::len);
            let got = receive(&mut c, want, PER_CLIENT, 1).await;
            done.wait().await;
            nothing_more(&mut c, PER_CLIENT + 1).await;
            // Stay connected until everyone is checked: a leave would be
            // broadcast to the others.
            (name(i), got, c)
        }));
    }

    let owner_task = {
        let (expected, ready, done) = (expected.clone(), ready.clone(), done.clone());
        tokio::spawn(async move {
            ready.wait().await;
            let want = expected[OWNER].len();
            let got = receive(&mut owner, want, 0, 1).await;
            done.wait().await;
            nothing_more(&mut owner, 1).await;
            (OWNER.to_owned(), got, owner)
        })
    };
    tasks.push(owner_task);

    let (all, _connected) = tokio::time::timeout(Duration::from_secs(60), async {
        let mut all = HashMap::new();
        let mut connected = Vec::new();
        for task in tasks {
            let (who, got, client) = task.await.expect("client task");
            all.insert(who, got);
            connected.push(client);
        }
        (all, connected)
    })
    .await
    .expect("every client finished within 60 s");

    // Exactly what was sent, per receiver: nothing lost, nothing duplicated.
    assert_eq!(all.len() as u64, CLIENTS + 1);
    let mut total = 0;
    for (who, got) in &all {
        let mut got_sorted = got.clone();
        got_sorted.sort_unstable();
        let mut want = expected.get(who).cloned().unwrap_or_default();
        want.sort_unstable();
        assert_eq!(got_sorted, want, "{who} received the wrong set");
        total += got.len();
    }
    assert_eq!(total as u64, CLIENTS * PER_CLIENT);
    assert_eq!(
        all[OWNER].len() as u64,
        CLIENTS * PER_CLIENT / SERVICE_EVERY
    );
    eprintln!(
        "{} clients x {PER_CLIENT} messages in {:?}",
        CLIENTS,
        started.elapsed()
    );
}
