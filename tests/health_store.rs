//! Hosts' health store on real parts: one conformance suite run against a
//! `DiskHealth` (a file in a temp dir) and against two `RedisHealth`s
//! sharing a real `redis-server` (two replicas); then what the file alone
//! has (reopening), the key layout and damaged data on Redis, which store
//! each kind of cluster hands out, and a measurement of a host's day
//! (ignored: run it in release).

mod common;

use std::sync::Arc;
use std::time::Instant;

use concierge::cluster;
use concierge::cluster::disk_health::DiskHealth;
use concierge::cluster::health::{Compacted, HealthStore, Sample, POINT_BYTES};
use concierge::cluster::redis::health::RedisHealth;
use concierge::cluster::store::StoreError;
use concierge::config::Settings;
use concierge::protocol::health::{HealthPoint, HostHealth, Summary};

use common::redis::RedisServer;

/// Two handles on one health store (the same file on disk, two replicas
/// on Redis), and what keeps it alive.
struct Pair {
    a: Arc<dyn HealthStore>,
    b: Arc<dyn HealthStore>,
    _keep: Box<dyn Send>,
}

fn disk_pair() -> Pair {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn HealthStore> = Arc::new(
        DiskHealth::open(dir.path().join(cluster::HEALTH_FILE)).expect("health store opens"),
    );
    Pair {
        a: store.clone(),
        b: store,
        _keep: Box::new(dir),
    }
}

async fn redis_pair() -> Pair {
    let server = RedisServer::start();
    Pair {
        a: Arc::new(redis_health(&server.url()).await),
        b: Arc::new(redis_health(&server.url()).await),
        _keep: Box::new(server),
    }
}

async fn redis_health(url: &str) -> RedisHealth {
    RedisHealth::new(common::redis::master(url).await, "concierge")
}

/// Midnight UTC, 2026-12-06: a day's, an hour's and a step's start.
const BASE: u64 = 1_796_515_200;

const STEP: u64 = 300;

/// A point with every field set from `at`: `cpu` is its place in its
/// 5-minute step (0 to 29 at 10 s: the step's average is 14.5), `mem` the
/// step's number, `vpn_age` its place in the series.
fn point(at: u64) -> HealthPoint {
    let since = at - BASE;
    HealthPoint {
        at,
        summary: Summary {
            cpu: (since % STEP / 10) as f32,
            load: 1.0,
            mem: (since / STEP % 100) as f32,
            disk: 50.0,
            vpn_age: Some(since / 10),
        },
    }
}

fn sample_of(host: &str, point: HealthPoint) -> Sample {
    Sample {
        host: host.to_owned(),
        point,
        latest: HostHealth {
            at: point.at,
            summary: point.summary,
            trend: vec![point.summary.cpu as u8, 7],
        },
    }
}

fn sample(host: &str, at: u64) -> Sample {
    sample_of(host, point(at))
}

/// `host`'s points every 10 s from `from` (included) to `to` (excluded),
/// a record call per `batch` points.
async fn record_every_10s(store: &dyn HealthStore, host: &str, from: u64, to: u64) {
    let samples: Vec<Sample> = (from..to).step_by(10).map(|at| sample(host, at)).collect();
    for batch in samples.chunks(360) {
        store.record(batch.to_vec()).await.unwrap();
    }
}

/// Every stored point of `host`.
async fn all_of(store: &dyn HealthStore, host: &str) -> Vec<HealthPoint> {
    store.series(host, 0, u64::MAX).await.unwrap()
}

fn times(points: &[HealthPoint]) -> Vec<u64> {
    points.iter().map(|p| p.at).collect()
}

crate::conformance!(
    an_empty_store_reads_empty,
    recorded_points_read_back_on_the_other_node,
    a_point_no_newer_than_the_last_is_not_appended,
    series_bounds_are_inclusive_and_per_host,
    compact_averages_old_steps_and_drops_expired_points,
    compact_keeps_steps_whole,
    forget_removes_one_host,
    point_bytes_count_appended_points,
    many_hosts_in_one_batch,
    hostile_host_names_stay_apart,
);

/// Every read of a store nobody wrote answers empty, and the writes that
/// change nothing fail nothing.
async fn an_empty_store_reads_empty(p: Pair) {
    let s = &p.a;
    assert!(s.latest().await.unwrap().is_empty());
    assert_eq!(s.latest_of("web-1").await.unwrap(), None);
    assert!(all_of(&**s, "web-1").await.is_empty());
    assert_eq!(s.point_bytes().await.unwrap(), 0);
    s.record(vec![]).await.unwrap();
    s.forget("web-1").await.unwrap();
    assert_eq!(
        s.compact(u64::MAX, STEP, u64::MAX).await.unwrap(),
        Compacted::default()
    );
    assert!(s.latest().await.unwrap().is_empty());
}

/// A batch recorded on one node reads back on the other: each host's
/// latest (sorted by host, as given) and its series, oldest first.
async fn recorded_points_read_back_on_the_other_node(p: Pair) {
    let (a, b) = (&p.a, &p.b);
    a.record(vec![
        sample("web-2", BASE),
        sample("db", BASE + 5),
        sample("web-2", BASE + 10),
    ])
    .await
    .unwrap();
    a.record(vec![sample("web-1", BASE + 20), sample("web-2", BASE + 20)])
        .await
        .unwrap();
    let latest = b.latest().await.unwrap();
    let hosts: Vec<&str> = latest.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(hosts, ["db", "web-1", "web-2"]);
    assert_eq!(latest[2].1, sample("web-2", BASE + 20).latest);
    assert_eq!(
        b.latest_of("db").await.unwrap(),
        Some(sample("db", BASE + 5).latest)
    );
    assert_eq!(b.latest_of("web-3").await.unwrap(), None);
    assert_eq!(
        all_of(&**b, "web-2").await,
        [point(BASE), point(BASE + 10), point(BASE + 20)]
    );
    assert_eq!(all_of(&**b, "db").await, [point(BASE + 5)]);
    // No VPN, and values at the codec's bounds, read back as given.
    let bounds = HealthPoint {
        at: BASE + 30,
        summary: Summary {
            cpu: 100.0,
            load: 12_345.67,
            mem: 0.0,
            disk: 99.99,
            vpn_age: None,
        },
    };
    a.record(vec![sample_of("db", bounds)]).await.unwrap();
    assert_eq!(all_of(&**b, "db").await, [point(BASE + 5), bounds]);
    assert_eq!(
        b.latest_of("db").await.unwrap().unwrap().summary,
        bounds.summary
    );
}

/// A resent batch adds nothing; a point no newer than the host's last is
/// not appended and does not become its latest; a later one is.
async fn a_point_no_newer_than_the_last_is_not_appended(p: Pair) {
    let (a, b) = (&p.a, &p.b);
    let batch = vec![
        sample("web", BASE),
        sample("web", BASE + 10),
        sample("db", BASE),
    ];
    a.record(batch.clone()).await.unwrap();
    let bytes = a.point_bytes().await.unwrap();
    b.record(batch).await.unwrap();
    assert_eq!(times(&all_of(&**a, "web").await), [BASE, BASE + 10]);
    assert_eq!(a.point_bytes().await.unwrap(), bytes);

    let mut stale = sample("web", BASE + 5);
    stale.latest.trend = vec![99];
    let same_time = sample_of(
        "web",
        HealthPoint {
            at: BASE + 10,
            summary: Summary::default(),
        },
    );
    b.record(vec![stale, same_time]).await.unwrap();
    assert_eq!(times(&all_of(&**a, "web").await), [BASE, BASE + 10]);
    assert_eq!(
        a.latest_of("web").await.unwrap(),
        Some(sample("web", BASE + 10).latest)
    );
    assert_eq!(a.point_bytes().await.unwrap(), bytes);

    // In one batch too: the second point of a host must be newer.
    b.record(vec![sample("db", BASE + 30), sample("db", BASE + 20)])
        .await
        .unwrap();
    assert_eq!(times(&all_of(&**a, "db").await), [BASE, BASE + 30]);
    assert_eq!(a.latest_of("db").await.unwrap().unwrap().at, BASE + 30);
}

/// `series` reads `since <= at <= until`, oldest first, across hours; a
/// range with nothing, or upside down, reads empty; other hosts' points
/// stay out.
async fn series_bounds_are_inclusive_and_per_host(p: Pair) {
    let (a, b) = (&p.a, &p.b);
    record_every_10s(&**a, "web", BASE, BASE + 7_200).await;
    record_every_10s(&**a, "web-1", BASE, BASE + 7_200).await;
    let range = b.series("web", BASE + 100, BASE + 200).await.unwrap();
    assert_eq!(
        times(&range),
        (BASE + 100..=BASE + 200).step_by(10).collect::<Vec<_>>()
    );
    assert_eq!(range[3], point(BASE + 130));
    let across = b.series("web", BASE + 3_590, BASE + 3_610).await.unwrap();
    assert_eq!(times(&across), [BASE + 3_590, BASE + 3_600, BASE + 3_610]);
    let between = b.series("web", BASE + 101, BASE + 109).await.unwrap();
    assert!(between.is_empty(), "{between:?}");
    assert!(b
        .series("web", BASE + 200, BASE + 100)
        .await
        .unwrap()
        .is_empty());
    assert!(b.series("web", 0, BASE - 1).await.unwrap().is_empty());
    assert!(b
        .series("web", BASE + 7_200, u64::MAX)
        .await
        .unwrap()
        .is_empty());
    let whole = all_of(&**b, "web").await;
    assert_eq!(whole.len(), 720);
    assert!(whole.windows(2).all(|w| w[0].at < w[1].at));
    assert!(b.series("web-", 0, u64::MAX).await.unwrap().is_empty());
    assert!(b.series("we", 0, u64::MAX).await.unwrap().is_empty());
}

/// The expected series of a host recorded every 10 s from BASE once
/// compacted: 5-minute averages from `first` to `cutoff` (each at its
/// step's start), then the points as recorded up to `end`.
fn thinned(first: u64, cutoff: u64, end: u64) -> Vec<HealthPoint> {
    let averages = (first..cutoff)
        .step_by(STEP as usize)
        .map(|start| HealthPoint {
            at: start,
            summary: Summary {
                cpu: 14.5,
                vpn_age: Some((start + STEP - 10 - BASE) / 10),
                ..point(start).summary
            },
        });
    averages
        .chain((cutoff..end).step_by(10).map(point))
        .collect()
}

/// Three hours every 10 s, compacted: the steps before the cutoff become
/// their averages at their starts, the points before the retention go,
/// with the whole step the retention starts in; the last hour is as
/// recorded; another host's recent points stay. A second run changes
/// nothing; a later run moves on.
async fn compact_averages_old_steps_and_drops_expired_points(p: Pair) {
    let (a, b) = (&p.a, &p.b);
    record_every_10s(&**a, "web", BASE, BASE + 10_800).await;
    record_every_10s(&**a, "db", BASE + 10_000, BASE + 10_800).await;
    let db = all_of(&**a, "db").await;

    // Cutoff BASE + 7,200 (whole steps), retention from the step after
    // BASE + 1,900, which starts before it.
    let done = b.compact(BASE + 7_200, STEP, BASE + 1_900).await.unwrap();
    let expected = thinned(BASE + 2_100, BASE + 7_200, BASE + 10_800);
    assert_eq!(all_of(&**a, "web").await, expected);
    assert_eq!(
        done,
        Compacted {
            downsampled: 17 * 30 - 17,
            dropped: 210
        }
    );
    assert_eq!(all_of(&**a, "db").await, db);
    let bytes = (expected.len() + db.len()) * POINT_BYTES;
    assert_eq!(a.point_bytes().await.unwrap(), bytes as u64);
    // The averages are read like points, by their step's start.
    let range = a.series("web", BASE + 2_100, BASE + 2_400).await.unwrap();
    assert_eq!(times(&range), [BASE + 2_100, BASE + 2_400]);

    assert_eq!(
        a.compact(BASE + 7_200, STEP, BASE + 1_900).await.unwrap(),
        Compacted::default()
    );
    assert_eq!(all_of(&**b, "web").await, expected);
    assert_eq!(a.point_bytes().await.unwrap(), bytes as u64);

    // An hour later: the next hour is averaged, the averages before the
    // new retention dropped.
    let done = b.compact(BASE + 10_800, STEP, BASE + 3_600).await.unwrap();
    assert_eq!(
        done,
        Compacted {
            downsampled: 12 * 30 - 12 + (db.len() as u64 - 3),
            dropped: 5
        }
    );
    let web = thinned(BASE + 3_600, BASE + 10_800, BASE + 10_800);
    assert_eq!(all_of(&**a, "web").await, web);
    assert_eq!(all_of(&**a, "db").await.len(), 3);
    assert_eq!(
        b.compact(BASE + 10_800, STEP, BASE + 3_600).await.unwrap(),
        Compacted::default()
    );

    // Past the retention of everything: nothing stays but the latest.
    let done = a.compact(BASE + 20_000, STEP, BASE + 20_000).await.unwrap();
    assert_eq!(done.dropped, web.len() as u64 + 3);
    assert!(all_of(&**b, "web").await.is_empty());
    assert_eq!(b.point_bytes().await.unwrap(), 0);
    assert_eq!(b.latest().await.unwrap().len(), 2);
}

/// With a `raw_before` inside a step, that step stays as recorded until
/// it is whole; an hour that was thinned gets no new averages from it.
async fn compact_keeps_steps_whole(p: Pair) {
    let (a, b) = (&p.a, &p.b);
    record_every_10s(&**a, "web", BASE, BASE + 900).await;
    let done = b.compact(BASE + 450, STEP, 0).await.unwrap();
    assert_eq!(
        done,
        Compacted {
            downsampled: 29,
            dropped: 0
        }
    );
    assert_eq!(
        all_of(&**a, "web").await,
        thinned(BASE, BASE + 300, BASE + 900)
    );
    let done = b.compact(BASE + 600, STEP, 0).await.unwrap();
    assert_eq!(
        done,
        Compacted {
            downsampled: 29,
            dropped: 0
        }
    );
    assert_eq!(
        all_of(&**a, "web").await,
        thinned(BASE, BASE + 600, BASE + 900)
    );
    // Points recorded later in the same hour join it as recorded.
    record_every_10s(&**a, "web", BASE + 900, BASE + 1_200).await;
    assert_eq!(
        all_of(&**b, "web").await,
        thinned(BASE, BASE + 600, BASE + 1_200)
    );
    assert_eq!(
        a.compact(BASE + 600, STEP, 0).await.unwrap(),
        Compacted::default()
    );
}

/// `forget` removes one host's series and latest, and its bytes; the
/// others stay; the host may report again afresh.
async fn forget_removes_one_host(p: Pair) {
    let (a, b) = (&p.a, &p.b);
    record_every_10s(&**a, "web", BASE, BASE + 4_000).await;
    record_every_10s(&**a, "db", BASE + 4_000, BASE + 4_100).await;
    a.compact(BASE + 600, STEP, 0).await.unwrap();
    b.forget("web").await.unwrap();
    assert_eq!(a.latest_of("web").await.unwrap(), None);
    assert!(all_of(&**a, "web").await.is_empty());
    let latest = a.latest().await.unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].0, "db");
    assert_eq!(all_of(&**a, "db").await.len(), 10);
    assert_eq!(a.point_bytes().await.unwrap(), 10 * POINT_BYTES as u64);
    b.forget("web").await.unwrap();
    b.forget("nobody").await.unwrap();
    // Forgotten, its last time is too: an earlier point is appended.
    a.record(vec![sample("web", BASE)]).await.unwrap();
    assert_eq!(all_of(&**b, "web").await, [point(BASE)]);
    assert_eq!(b.point_bytes().await.unwrap(), 11 * POINT_BYTES as u64);
}

/// Each appended point adds POINT_BYTES, whoever appends it; a point not
/// appended adds nothing.
async fn point_bytes_count_appended_points(p: Pair) {
    let (a, b) = (&p.a, &p.b);
    let mut expected = 0;
    for i in 0..5 {
        let at = BASE + i * 1_000;
        let store = if i % 2 == 0 { a } else { b };
        store
            .record(vec![sample("web", at), sample("db", at), sample("web", at)])
            .await
            .unwrap();
        expected += 2 * POINT_BYTES as u64;
        assert_eq!(a.point_bytes().await.unwrap(), expected);
        assert_eq!(b.point_bytes().await.unwrap(), expected);
    }
}

/// 2,000 hosts' points in one call: every host has its latest and its
/// point.
async fn many_hosts_in_one_batch(p: Pair) {
    const HOSTS: u64 = 2_000;
    let (a, b) = (&p.a, &p.b);
    let name = |i: u64| format!("host-{i:04}");
    let batch =
        |at: u64| -> Vec<Sample> { (0..HOSTS).map(|i| sample(&name(i), at + i % 10)).collect() };
    a.record(batch(BASE)).await.unwrap();
    b.record(batch(BASE + 10)).await.unwrap();
    let latest = b.latest().await.unwrap();
    assert_eq!(latest.len(), HOSTS as usize);
    for (i, (host, health)) in latest.iter().enumerate() {
        let i = i as u64;
        assert_eq!(
            (host.as_str(), health.at),
            (name(i).as_str(), BASE + 10 + i % 10)
        );
    }
    assert_eq!(
        a.point_bytes().await.unwrap(),
        2 * HOSTS * POINT_BYTES as u64
    );
    assert_eq!(
        times(&all_of(&**a, &name(1_999)).await),
        [BASE + 9, BASE + 19]
    );
}

/// Names with separators, glob characters, spaces, non-ASCII and 256
/// bytes are hosts of their own: each keeps its own points and latest,
/// forgetting one forgets no other, compaction reaches them all.
async fn hostile_host_names_stay_apart(p: Pair) {
    let (a, b) = (&p.a, &p.b);
    let long = "x".repeat(256);
    let names = [
        "a",
        "a:1",
        "a:*",
        "*",
        "a b",
        " ",
        "é 主机 🙂",
        long.as_str(),
        "series:a",
        "h1796515200",
        "concierge:health:latest",
        "[a-z]?",
    ];
    let samples: Vec<Sample> = names
        .iter()
        .enumerate()
        .map(|(i, host)| sample(host, BASE + i as u64 * 10))
        .collect();
    a.record(samples).await.unwrap();
    let latest = b.latest().await.unwrap();
    assert_eq!(latest.len(), names.len());
    for (i, host) in names.iter().enumerate() {
        let at = BASE + i as u64 * 10;
        assert_eq!(all_of(&**b, host).await, [point(at)], "{host:?}");
        assert_eq!(b.latest_of(host).await.unwrap().unwrap().at, at, "{host:?}");
    }
    b.forget("a").await.unwrap();
    b.forget("*").await.unwrap();
    assert_eq!(a.latest().await.unwrap().len(), names.len() - 2);
    for host in ["a:1", "a:*", "a b", "[a-z]?"] {
        assert_eq!(all_of(&**a, host).await.len(), 1, "{host:?}");
    }
    let done = a.compact(BASE + 600, STEP, 0).await.unwrap();
    assert_eq!(
        done,
        Compacted::default(),
        "one point a step: as many averages"
    );
    let done = a.compact(BASE + 600, STEP, BASE + 600).await.unwrap();
    assert_eq!(done.dropped, names.len() as u64 - 2);
    assert_eq!(a.point_bytes().await.unwrap(), 0);
}

/// Hosts' latest and points survive closing and reopening the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(cluster::HEALTH_FILE);
    {
        let store = DiskHealth::open(&path).unwrap();
        record_every_10s(&store, "web", BASE, BASE + 4_000).await;
        store.compact(BASE + 600, STEP, 0).await.unwrap();
    }
    let store = DiskHealth::open(&path).unwrap();
    assert_eq!(
        store.latest().await.unwrap(),
        [("web".to_owned(), sample("web", BASE + 3_990).latest)]
    );
    assert_eq!(
        all_of(&store, "web").await,
        thinned(BASE, BASE + 600, BASE + 4_000)
    );
    // The last time survives too.
    store
        .record(vec![sample("web", BASE + 3_990)])
        .await
        .unwrap();
    assert_eq!(all_of(&store, "web").await.len(), 2 + 340);
}

/// On Redis: the documented keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_are_as_documented() {
    let server = RedisServer::start();
    let store = redis_health(&server.url()).await;
    store
        .record(vec![
            sample("web", BASE + 3_610),
            sample("web", BASE + 3_620),
        ])
        .await
        .unwrap();
    let json = server.cli(&["HGET", "concierge:health:latest", "web"]);
    let latest: HostHealth = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(latest, sample("web", BASE + 3_620).latest);
    assert_eq!(
        server
            .cli(&["ZSCORE", "concierge:health:hosts", "web"])
            .trim(),
        (BASE + 3_620).to_string()
    );
    let series = "concierge:health:series:web";
    let hour = format!("h{}", BASE + 3_600);
    assert_eq!(server.cli(&["HKEYS", series]).trim(), hour);
    assert_eq!(server.cli(&["HSTRLEN", series, &hour]).trim(), "36");
    assert_eq!(server.cli(&["GET", "concierge:health:bytes"]).trim(), "36");
    store.compact(BASE + 7_200, STEP, 0).await.unwrap();
    assert_eq!(server.cli(&["HKEYS", series]).trim(), format!("c{BASE}"));
    assert_eq!(server.cli(&["GET", "concierge:health:bytes"]).trim(), "18");
    store
        .compact(BASE + 7_200, STEP, BASE + 7_200)
        .await
        .unwrap();
    assert_eq!(server.cli(&["EXISTS", series]).trim(), "0");
    assert_eq!(server.cli(&["ZCARD", "concierge:health:hosts"]).trim(), "0");
}

/// On Redis, damaged data: a host's series of another type is skipped by
/// `record` and `compact` (the others go on), `Corrupt` for `series`, and
/// `forget` clears it; a latest that is not JSON is left out; blobs of a
/// damaged length or unknown fields are read as far as they go; a latest
/// hash of another type is `Corrupt`. Nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_damaged_data_is_skipped_or_corrupt() {
    let server = RedisServer::start();
    let store = redis_health(&server.url()).await;
    server.cli(&["SET", "concierge:health:series:bad", "x"]);
    store
        .record(vec![sample("bad", BASE), sample("good", BASE)])
        .await
        .unwrap();
    assert_eq!(all_of(&store, "good").await, [point(BASE)]);
    assert_eq!(store.latest_of("bad").await.unwrap(), None);
    let error = store.series("bad", 0, u64::MAX).await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
    server.cli(&["ZADD", "concierge:health:hosts", "1", "bad"]);
    let done = store.compact(BASE + 600, STEP, BASE + 600).await.unwrap();
    assert_eq!(done.dropped, 1, "the good host's point");
    store.forget("bad").await.unwrap();
    store.record(vec![sample("bad", BASE)]).await.unwrap();
    assert_eq!(all_of(&store, "bad").await, [point(BASE)]);

    server.cli(&["HSET", "concierge:health:latest", "evil", "{not json"]);
    let latest = store.latest().await.unwrap();
    assert_eq!(
        latest.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
        ["bad", "good"]
    );
    assert_eq!(store.latest_of("evil").await.unwrap(), None);

    let series = "concierge:health:series:bad";
    server.cli(&["HSET", series, &format!("h{}", BASE + 3_600), "abc"]);
    server.cli(&["HSET", series, "zzz", "abc"]);
    server.cli(&["HSET", series, "c12", "abc"]);
    assert_eq!(all_of(&store, "bad").await, [point(BASE)]);
    store.compact(BASE + 7_200, STEP, 0).await.unwrap();
    assert_eq!(all_of(&store, "bad").await, [point(BASE)]);

    server.cli(&["DEL", "concierge:health:latest"]);
    server.cli(&["SET", "concierge:health:latest", "x"]);
    let error = store.latest().await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
    let error = store
        .record(vec![sample("good", BASE + 10)])
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
}

/// A gateway alone keeps hosts' health in `health.db` in its data folder;
/// a replica keeps it in its Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cluster_hands_out_its_health_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let settings = Settings {
        data_dir: data.clone(),
        ..Settings::default()
    };
    let (alone, _inbound) = cluster::join(&settings.cluster()).await.unwrap();
    alone
        .health()
        .record(vec![sample("web", BASE)])
        .await
        .unwrap();
    let file = DiskHealth::open(data.join(cluster::HEALTH_FILE)).unwrap();
    assert_eq!(all_of(&file, "web").await, [point(BASE)]);

    let server = RedisServer::start();
    let settings = Settings {
        redis_url: server.url(),
        data_dir: dir.path().join("replica"),
        ..Settings::default()
    };
    let (replica, _inbound) = cluster::join(&settings.cluster()).await.unwrap();
    replica
        .health()
        .record(vec![sample("web", BASE)])
        .await
        .unwrap();
    assert_eq!(
        server.cli(&["HKEYS", "concierge:health:series:web"]).trim(),
        format!("h{BASE}")
    );
    assert!(!dir.path().join("replica").exists(), "nothing on disk");
    replica.claims().deregister().await;
}

/// Not a test: what a host's day takes on each backend, for
/// docs/BENCHMARKS.md. 100 hosts record 24 hours at 10 s (8,640 points
/// each, a call per 10 s of the fleet), then the day is compacted into
/// 5-minute averages. The bytes do not depend on the build; for the
/// times, run it in release:
/// `cargo test --release --test health_store -- --ignored --nocapture figures`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it in release with --nocapture"]
async fn figures() {
    const HOSTS: usize = 100;
    const POINTS: u64 = 8_640;
    let names: Vec<String> = (0..HOSTS)
        .map(|i| format!("host-{i:05}.example.net"))
        .collect();
    async fn fill(store: &dyn HealthStore, names: &[String]) -> std::time::Duration {
        let started = Instant::now();
        for i in 0..POINTS {
            let batch = names.iter().map(|h| sample(h, BASE + i * 10)).collect();
            store.record(batch).await.unwrap();
        }
        started.elapsed()
    }
    let per_host = |bytes: u64| bytes as f64 / HOSTS as f64;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(cluster::HEALTH_FILE);
    let disk = DiskHealth::open(&path).unwrap();
    // The file's size once its write-ahead log is moved into it (the
    // store's own connection is idle between calls).
    let file_size = |path: &std::path::Path, then: &str| {
        rusqlite::Connection::open(path)
            .unwrap()
            .execute_batch(&format!("{then} PRAGMA wal_checkpoint(TRUNCATE);"))
            .unwrap();
        std::fs::metadata(path).unwrap().len()
    };
    let took = fill(&disk, &names).await;
    let raw = disk.point_bytes().await.unwrap();
    let raw_file = file_size(&path, "");
    let started = Instant::now();
    let done = disk.compact(BASE + POINTS * 10, STEP, 0).await.unwrap();
    let compact_took = started.elapsed();
    let thin = disk.point_bytes().await.unwrap();
    let thin_file = file_size(&path, "");
    let vacuumed = file_size(&path, "VACUUM;");
    println!(
        "disk: {HOSTS} hosts x {POINTS} points recorded in {took:?} ({:?} a call); \
         a host's day: {:.0} B encoded, {:.0} B of file; compacted in {compact_took:?} \
         ({done:?}): {:.0} B encoded, {:.0} B of file ({:.0} B vacuumed)",
        took / POINTS as u32,
        per_host(raw),
        per_host(raw_file),
        per_host(thin),
        per_host(thin_file),
        per_host(vacuumed),
    );

    let server = RedisServer::start();
    let redis = redis_health(&server.url()).await;
    let memory = || -> u64 {
        let mut total = 0;
        for key in [
            "concierge:health:latest",
            "concierge:health:hosts",
            "concierge:health:bytes",
        ] {
            total += server
                .cli(&["MEMORY", "USAGE", key, "SAMPLES", "0"])
                .trim()
                .parse::<u64>()
                .unwrap_or(0);
        }
        for name in &names {
            let key = format!("concierge:health:series:{name}");
            total += server
                .cli(&["MEMORY", "USAGE", &key, "SAMPLES", "0"])
                .trim()
                .parse::<u64>()
                .unwrap_or(0);
        }
        total
    };
    let took = fill(&redis, &names).await;
    let raw = redis.point_bytes().await.unwrap();
    let raw_memory = memory();
    let started = Instant::now();
    let done = redis.compact(BASE + POINTS * 10, STEP, 0).await.unwrap();
    let compact_took = started.elapsed();
    let thin = redis.point_bytes().await.unwrap();
    println!(
        "redis: {HOSTS} hosts x {POINTS} points recorded in {took:?} ({:?} a call); \
         a host's day: {:.0} B encoded, {:.0} B of MEMORY USAGE; compacted in \
         {compact_took:?} ({done:?}): {:.0} B encoded, {:.0} B of MEMORY USAGE",
        took / POINTS as u32,
        per_host(raw),
        per_host(raw_memory),
        per_host(thin),
        per_host(memory()),
    );
}
