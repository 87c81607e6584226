//! What the link to Redis must survive and put right afterwards (issue 24's
//! groundwork): a reconnection refused for its password ends in a working
//! link once the password is right again; what a replica did while it was
//! cut off (a subscription) is written back; a service's claim is deleted
//! only by its owner; the client library fills the hole a cut leaves in a
//! history's live broadcasts.

use std::time::Duration;

use serde_json::json;

use crate::common::redis::{RedisServer, Relay};
use crate::common::{library_reader, Client, TestServer};
use crate::{answer, cluster_answer, replica, replica_at, sees};
use concierge_client::resume::{Observed, Resume};
use concierge_client::Connection;
use concierge_protocol::PayloadOut;

/// A replica reaching Redis at `url` whose lease outlasts the cuts these
/// tests make: its clients are never reaped meanwhile.
fn long_lease_replica(url: String, files: &std::path::Path) -> TestServer {
    let files = files.to_owned();
    TestServer::with(move |s| {
        s.redis_url = url;
        s.node_lease_ms = 30_000;
        s.data_dir = files;
    })
}

/// A Redis, a replica that reaches it through a relay the test cuts, and
/// one that reaches it directly (their files folder, kept alive, second).
async fn cut_and_kept() -> (
    RedisServer,
    tempfile::TempDir,
    Relay,
    TestServer,
    TestServer,
) {
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    let relay = Relay::start(redis.port).await;
    let cut = long_lease_replica(relay.url(), files.path());
    let kept = long_lease_replica(redis.url(), files.path());
    (redis, files, relay, cut, kept)
}

/// Waits until `server`'s /readyz answers `status`.
async fn readiness_becomes(server: &TestServer, status: u16, patience: Duration) {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let now = reqwest::get(server.http_url("/readyz"))
            .await
            .unwrap()
            .status();
        if now == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {now}, not {status}, for {patience:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many authentications Redis refused (the counts of its ACL log).
fn refused_logins(redis: &RedisServer, password: &str) -> u64 {
    let out = redis.cli(&["-a", password, "--no-auth-warning", "ACL", "LOG"]);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|pair| pair[0] == "count")
        .map(|pair| pair[1].parse::<u64>().unwrap_or(0))
        .sum()
}

/// The redis crate's `ConnectionManager` reconnects only after an I/O
/// error: once a reconnection is refused for its password
/// (`AuthenticationFailed`) it answers that error to every request for
/// good. Here Redis's password changes and every connection is killed, so
/// both replicas' reconnections are refused; once the password is back,
/// both are ready again without a restart and relay a message, and the
/// reconnections were counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_refused_for_its_password_recovers_once_the_password_is_back() {
    let redis = RedisServer::start();
    let old = "old-secret";
    let new = "new-secret";
    assert_eq!(
        redis.cli(&["CONFIG", "SET", "requirepass", old]).trim(),
        "OK"
    );
    let files = tempfile::tempdir().unwrap();
    let url = format!("redis://:{old}@127.0.0.1:{}", redis.port);
    let r1 = replica_at(url.clone(), files.path());
    let r2 = replica_at(url, files.path());
    let mut alice = r1.client("alice").await;
    let mut bob = r2.client("bob").await;
    sees(&mut alice, &["alice", "bob"]).await;
    sees(&mut bob, &["alice", "bob"]).await;
    let reconnects = crate::common::counter(&r1, "cluster_reconnects").await;

    let cli = |password: &str, args: &[&str]| {
        let mut all = vec!["-a", password, "--no-auth-warning"];
        all.extend_from_slice(args);
        redis.cli(&all)
    };
    assert_eq!(
        cli(old, &["CONFIG", "SET", "requirepass", new]).trim(),
        "OK"
    );
    let refused = refused_logins(&redis, new);
    for kind in ["normal", "pubsub"] {
        cli(new, &["CLIENT", "KILL", "TYPE", kind]);
    }
    for server in [&r1, &r2] {
        readiness_becomes(server, 503, Duration::from_secs(10)).await;
    }
    // The outage: the password stays wrong for OUTAGE, longer than the
    // connection manager's own tries (3, at most ~5 s apart in all with
    // the gateway's timeouts), while both replicas' connections are
    // refused over and over (the writer's, the lease keeper's, the
    // subscription's).
    const OUTAGE: Duration = Duration::from_secs(7);
    let ends = tokio::time::Instant::now() + OUTAGE;
    while refused_logins(&redis, new) < refused + 8 || tokio::time::Instant::now() < ends {
        assert!(
            tokio::time::Instant::now() < ends + Duration::from_secs(10),
            "the replicas never tried the old password"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Still refused, still not ready.
    readiness_becomes(&r1, 503, Duration::from_secs(1)).await;

    assert_eq!(
        cli(new, &["CONFIG", "SET", "requirepass", old]).trim(),
        "OK"
    );
    for server in [&r1, &r2] {
        readiness_becomes(server, 200, Duration::from_secs(15)).await;
    }
    alice
        .send(json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "bob"}, "data": "back"}))
        .await;
    let ok = cluster_answer(&mut alice).await;
    assert_eq!(ok["type"], "OK", "{ok}");
    assert_eq!(bob.skip_to("MESSAGE").await["data"], "back");
    assert!(
        crate::common::counter(&r1, "cluster_reconnects").await > reconnects,
        "the reconnections were not counted"
    );
}

/// A subscription accepted while its replica was cut off from Redis (too
/// briefly to be reaped) is in Redis once the link is back, and the
/// owner's replica routes the service's broadcasts to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_made_during_a_cut_is_written_back() {
    let (redis, _files, relay, cut, kept) = cut_and_kept().await;
    let mut carol = cut.client("carol").await;
    let mut owner = kept.client("owner").await;
    sees(&mut carol, &["carol", "owner"]).await;
    sees(&mut owner, &["carol", "owner"]).await;
    owner
        .send(json!({"type": "SERVICE_CREATE", "service": "news"}))
        .await;
    let created = owner.skip_to("SERVICE_CREATE_RESULT").await;
    assert_eq!(created["successful"], true, "{created}");
    carol.skip_to("SERVICE_CREATE_RESULT").await;

    relay.cut();
    readiness_becomes(&cut, 503, Duration::from_secs(10)).await;
    carol
        .send(json!({"type": "SELF_SUBSCRIBE", "service": "news"}))
        .await;
    let subscribed = carol.skip_to("SELF_SUBSCRIBE_RESULT").await;
    assert_eq!(subscribed["successful"], true, "{subscribed}");
    // Redis never heard of it.
    assert_eq!(
        redis
            .cli(&["ZRANGE", "concierge:subs:news", "0", "-1"])
            .trim(),
        ""
    );
    relay.mend();
    readiness_becomes(&cut, 200, Duration::from_secs(15)).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while redis
        .cli(&["ZRANGE", "concierge:subs:news", "0", "-1"])
        .trim()
        != carol.uuid.to_string()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscription was not written back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The owner's replica learnt of it: its broadcast reaches carol.
    owner.drain(100).await;
    owner
        .send(json!({"type": "MESSAGE", "target": {"type": "SERVICE", "service": "news"}, "data": "after the cut"}))
        .await;
    let ok = answer(&mut owner).await;
    assert_eq!(ok["type"], "OK", "{ok}");
    let message = carol
        .skip_to_within("MESSAGE", Duration::from_secs(10))
        .await;
    assert_eq!(message["data"], "after the cut", "{message}");
}

/// The service record of `name` in Redis, if any.
fn service_record(redis: &RedisServer, name: &str) -> Option<serde_json::Value> {
    let out = redis.cli(&["HGET", "concierge:services", name]);
    let out = out.trim();
    (!out.is_empty()).then(|| serde_json::from_str(out).expect("a service record is JSON"))
}

/// Creates service `name` for `client`, checking it succeeded.
async fn create(client: &mut Client, name: &str) {
    client
        .send(json!({"type": "SERVICE_CREATE", "service": name}))
        .await;
    let created = client.skip_to("SERVICE_CREATE_RESULT").await;
    assert_eq!(created["successful"], true, "{created}");
    assert_eq!(created["service"]["name"], name, "{created}");
}

/// A departed owner's service claim is removed (another client, on another
/// replica, can create the service at once), and an old owner's late
/// delete leaves a newer owner's claim alone: the delete compares the
/// owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_claim_is_deleted_only_by_its_owner() {
    let redis = RedisServer::start();
    let files = tempfile::tempdir().unwrap();
    let r1 = replica(&redis, files.path());
    let r2 = replica(&redis, files.path());
    let mut alice = r1.client("alice").await;
    let mut bob = r2.client("bob").await;
    sees(&mut bob, &["alice", "bob"]).await;

    // The normal leave: the claim goes with its owner.
    create(&mut alice, "news").await;
    let record = service_record(&redis, "news").expect("claimed");
    assert_eq!(record["owner_uuid"], alice.uuid.to_string());
    alice.close().await;
    sees(&mut bob, &["bob"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while service_record(&redis, "news").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the departed owner's claim stayed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    create(&mut bob, "news").await;

    // The race: amy's claim of "weather" is taken over by a newer owner
    // (as another replica would once amy's was reaped) before amy's
    // departure reaches Redis; her delete must not remove it.
    let amy = r1.client("amy").await;
    let mut amy = amy;
    create(&mut amy, "weather").await;
    let newer = json!({
        "name": "weather",
        "owner_uuid": bob.uuid,
        "subscribers": [],
    })
    .to_string();
    redis.cli(&["HSET", "concierge:services", "weather", &newer]);
    redis.cli(&["ZADD", "concierge:subs:weather", "1", &bob.uuid.to_string()]);
    let amy_uuid = amy.uuid;
    amy.close().await;
    // Amy's departure is in Redis (her client record is gone) ...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !redis
        .cli(&["HGET", "concierge:clients", &amy_uuid.to_string()])
        .trim()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "amy's departure was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and written after her service's delete, on the same ordered
    // link: the newer claim and its subscribers stayed.
    let record = service_record(&redis, "weather").expect("the newer claim stays");
    assert_eq!(record["owner_uuid"], bob.uuid.to_string(), "{record}");
    assert_eq!(
        redis
            .cli(&["ZRANGE", "concierge:subs:weather", "0", "-1"])
            .trim(),
        bob.uuid.to_string()
    );
}

/// An owner that leaves while its replica is cut off (too briefly to be
/// reaped) takes its service's claim with it once the link is back: the
/// departure's delete failed during the cut, and is written back with the
/// departure, so a client of another replica can create the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_whose_owner_left_during_a_cut_is_released_when_the_link_returns() {
    let (redis, _files, relay, cut, kept) = cut_and_kept().await;
    let mut owner = cut.client("owner").await;
    let mut carol = cut.client("carol").await;
    let mut watcher = kept.client("watcher").await;
    sees(&mut watcher, &["carol", "owner", "watcher"]).await;
    create(&mut owner, "news").await;
    watcher.skip_to("SERVICE_CREATE_RESULT").await;

    relay.cut();
    readiness_becomes(&cut, 503, Duration::from_secs(10)).await;
    owner.close().await;
    sees(&mut carol, &["carol", "watcher"]).await;
    // Redis still holds the departed owner's claim.
    assert!(service_record(&redis, "news").is_some());
    relay.mend();
    readiness_becomes(&cut, 200, Duration::from_secs(15)).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while service_record(&redis, "news").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the departed owner's service stayed claimed: {} {}",
            redis.cli(&["HGETALL", "concierge:clients"]),
            redis.cli(&["HGETALL", "concierge:services"])
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sees(&mut watcher, &["carol", "watcher"]).await;
    create(&mut watcher, "news").await;
}

/// A subscriber on another replica than the owner's misses live the
/// broadcasts made while the owner's replica is cut off from Redis; the
/// client library sees the hole in the offsets at the next one and asks
/// for the history again: every broadcast comes once, in order
/// (`docs/PROTOCOL.md` §17.5, §17.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_library_fills_the_hole_a_cut_leaves() {
    let (redis, _files, relay, cut, kept) = cut_and_kept().await;
    let mut owner = cut.client("owner").await;
    owner
        .send(json!({"type": "SERVICE_CREATE", "service": "news",
            "history": {"size": 100, "ttl": 60}}))
        .await;
    let created = owner.skip_to("SERVICE_CREATE_RESULT").await;
    assert_eq!(created["successful"], true, "{created}");

    let (_, mut resume, mut reader) = library_reader(&kept.ws_url(), "reader", "news").await;
    // Subscribed: its result comes before any broadcast.
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), reader.receiver.next())
            .await
            .expect("the result in time")
            .expect("open");
        resume.observe(&next.payload);
        if matches!(next.payload, PayloadOut::SelfSubscribeResult { .. }) {
            break;
        }
    }
    let (mut seen, mut holes) = (Vec::new(), 0);
    sees_subscribed(&redis).await;
    for n in 1..=2 {
        owner.send(broadcast(n)).await;
        assert_eq!(answer(&mut owner).await["type"], "OK");
    }
    read_until(&mut reader, &mut resume, &mut seen, &mut holes, 2).await;

    // Cut off: kept in the owner's replica's copy, not sent on.
    relay.cut();
    readiness_becomes(&cut, 503, Duration::from_secs(10)).await;
    for n in 3..=4 {
        owner.send(broadcast(n)).await;
        let refused = answer(&mut owner).await;
        assert_eq!(refused["type"], "ERROR_UNAVAILABLE", "{refused}");
    }
    relay.mend();
    readiness_becomes(&cut, 200, Duration::from_secs(15)).await;
    // Written back, under the same epoch.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while redis.cli(&["XLEN", "concierge:history:news"]).trim() != "4" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the history was not written back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    owner.send(broadcast(5)).await;
    assert_eq!(answer(&mut owner).await["type"], "OK");
    read_until(&mut reader, &mut resume, &mut seen, &mut holes, 5).await;
    assert_eq!(seen, [1, 2, 3, 4, 5]);
    assert_eq!(holes, 1);
}

/// Reads `reader` until `count` broadcasts were shown, doing what the
/// library says (a hole: ask for the history again).
async fn read_until(
    reader: &mut Connection,
    resume: &mut Resume,
    seen: &mut Vec<u64>,
    holes: &mut u32,
    count: usize,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while seen.len() < count {
        let next = tokio::time::timeout_at(deadline, reader.receiver.next())
            .await
            .unwrap_or_else(|_| panic!("only {seen:?} within 15 s"))
            .expect("open");
        match resume.observe(&next.payload) {
            Observed::Hole(refill) => {
                *holes += 1;
                for payload in &refill.payloads() {
                    reader.sender.send(payload).await.expect("sent");
                }
            }
            Observed::Drop => {}
            Observed::Resubscribed(found) => assert!(found.recovered, "{found:?}"),
            Observed::Pass => {
                if let PayloadOut::Message { data, .. } = next.payload {
                    seen.push(data["n"].as_u64().expect("n"));
                }
            }
        }
    }
}

/// `{"n": n}` to `news`.
fn broadcast(n: u64) -> serde_json::Value {
    json!({"type": "MESSAGE", "target": {"type": "SERVICE", "service": "news"}, "data": {"n": n}})
}

/// Waits until Redis lists a subscriber of `news`: the owner's replica
/// routes its broadcasts to the other one.
async fn sees_subscribed(redis: &RedisServer) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while redis
        .cli(&["ZRANGE", "concierge:subs:news", "0", "-1"])
        .trim()
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscription never reached Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
