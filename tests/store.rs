//! The store seam, on real parts: one conformance suite run against a
//! `DiskStore` (a file in a temp dir) and against two `RedisStore`s sharing a
//! real `redis-server` (two replicas), then what only one of them has:
//! on disk, reopening, files it refuses, lazy creation, crash safety and two
//! processes sharing the file; on Redis, the key layout, bad data and
//! outages; and which store each kind of cluster hands out.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use concierge::cluster;
use concierge::cluster::disk::{DiskStore, POLL};
use concierge::cluster::redis::master::{Endpoint, Master};
use concierge::cluster::redis::store::{RedisStore, TIMEOUT};
use concierge::cluster::store::{Changed, Store, StoreError, StoreFuture, Table, Taken};
use concierge::config::Settings;
use redis::aio::ConnectionManagerConfig;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, Barrier};

const USERS: Table = Table::new("users");
const TOKENS: Table = Table::new("tokens");
const TUNNELS: Table = Table::new("tunnels");
const COUNTS: Table = Table::new("failed-logins");
const LEASES: Table = Table::new("leases");
/// Written to find out when a store's changes are being followed.
const PROBE: Table = Table::new("probe");
/// What the crash test's writer writes.
const LOG: Table = Table::new("log");

const SECOND: Duration = Duration::from_secs(1);

/// Two handles on one shared state (the same store on disk, two replicas on
/// Redis), and what keeps it alive.
struct Pair {
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
    _keep: Box<dyn Send>,
}

fn disk_pair() -> Pair {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> =
        Arc::new(DiskStore::open(dir.path().join("concierge.db")).expect("store opens"));
    Pair {
        a: store.clone(),
        b: store,
        _keep: Box::new(dir),
    }
}

async fn redis_pair() -> Pair {
    let server = RedisServer::start();
    Pair {
        a: Arc::new(redis_store(&server.url()).await),
        b: Arc::new(redis_store(&server.url()).await),
        _keep: Box::new(server),
    }
}

/// A store as a replica makes it, on a connection to the master of its
/// own (default configuration: no response timeout of its own).
async fn redis_store(url: &str) -> RedisStore {
    let endpoint = Endpoint::new(url, "", "").expect("a Redis url");
    let config = ConnectionManagerConfig::new().set_response_timeout(None);
    let master = Master::connect(Arc::new(endpoint), config)
        .await
        .expect("Redis answers");
    RedisStore::new(master, "concierge")
}

/// Runs each check against both implementations, as `on_disk::check` and
/// `on_redis::check`.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod on_disk {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::disk_pair()).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    super::$check(super::redis_pair().await).await;
                }
            )*
        }
    };
}

conformance!(
    records,
    compare_and_swap_semantics,
    compare_and_swap_racers,
    compare_and_swap_increments,
    address_allocation,
    counters,
    counter_window,
    counter_limit,
    leases,
    lease_racers,
    changes_reach_every_node,
);

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// get, put, delete and list, written on one node and read on the other.
async fn records(p: Pair) {
    let (a, b) = (&p.a, &p.b);
    assert_eq!(a.get(USERS, "alice").await.unwrap(), None);
    assert_eq!(a.list(USERS).await.unwrap(), vec![]);

    a.put(USERS, "alice", bytes("v1")).await.unwrap();
    assert_eq!(b.get(USERS, "alice").await.unwrap(), Some(bytes("v1")));
    b.put(USERS, "alice", bytes("v2")).await.unwrap();
    assert_eq!(a.get(USERS, "alice").await.unwrap(), Some(bytes("v2")));

    // An empty value is a value; any bytes are kept as they are.
    a.put(USERS, "empty", vec![]).await.unwrap();
    assert_eq!(b.get(USERS, "empty").await.unwrap(), Some(vec![]));
    let every_byte: Vec<u8> = (0..=255).collect();
    a.put(USERS, "bin:ä\n", every_byte.clone()).await.unwrap();
    assert_eq!(
        b.get(USERS, "bin:ä\n").await.unwrap(),
        Some(every_byte.clone())
    );

    // Listed in key order, whatever the order of writing.
    a.put(USERS, "carol", bytes("c")).await.unwrap();
    a.put(USERS, "bob", bytes("b")).await.unwrap();
    assert_eq!(
        b.list(USERS).await.unwrap(),
        vec![
            ("alice".to_owned(), bytes("v2")),
            ("bin:ä\n".to_owned(), every_byte),
            ("bob".to_owned(), bytes("b")),
            ("carol".to_owned(), bytes("c")),
            ("empty".to_owned(), vec![]),
        ]
    );

    // Tables are separate.
    assert_eq!(a.get(TOKENS, "alice").await.unwrap(), None);
    a.put(TOKENS, "alice", bytes("t")).await.unwrap();
    assert_eq!(a.get(USERS, "alice").await.unwrap(), Some(bytes("v2")));

    assert!(a.delete(USERS, "alice").await.unwrap());
    assert!(!b.delete(USERS, "alice").await.unwrap());
    assert_eq!(b.get(USERS, "alice").await.unwrap(), None);
    assert_eq!(a.get(TOKENS, "alice").await.unwrap(), Some(bytes("t")));
    assert_eq!(b.list(USERS).await.unwrap().len(), 4);
}

/// Every case of compare_and_swap: insert if absent, replace if equal,
/// delete if equal, and refusals that leave the record alone.
async fn compare_and_swap_semantics(p: Pair) {
    let (a, b) = (&p.a, &p.b);
    let cas = |store: &Arc<dyn Store>, expected: Option<&str>, new: Option<&str>| {
        let store = store.clone();
        let (expected, new) = (expected.map(bytes), new.map(bytes));
        async move {
            store
                .compare_and_swap(USERS, "k", expected, new)
                .await
                .unwrap()
        }
    };
    // Absent: only "expected absent" matches.
    assert!(!cas(a, Some("x"), Some("y")).await);
    assert!(!cas(a, Some(""), Some("y")).await, "empty is not absent");
    assert_eq!(a.get(USERS, "k").await.unwrap(), None);
    assert!(cas(a, None, None).await, "absent stays absent");
    assert_eq!(a.get(USERS, "k").await.unwrap(), None);
    assert!(cas(a, None, Some("1")).await, "insert if absent");
    assert!(!cas(b, None, Some("2")).await, "present: no second insert");
    assert_eq!(b.get(USERS, "k").await.unwrap(), Some(bytes("1")));

    // Present: only the current value matches.
    assert!(!cas(b, Some("0"), Some("2")).await);
    assert!(!cas(b, Some(""), Some("2")).await);
    assert_eq!(a.get(USERS, "k").await.unwrap(), Some(bytes("1")));
    assert!(cas(b, Some("1"), Some("2")).await);
    assert_eq!(a.get(USERS, "k").await.unwrap(), Some(bytes("2")));
    assert!(cas(a, Some("2"), Some("")).await, "to an empty value");
    assert_eq!(b.get(USERS, "k").await.unwrap(), Some(vec![]));
    assert!(!cas(a, None, Some("3")).await, "empty is present");
    assert!(cas(a, Some(""), Some("3")).await);

    // Delete if equal.
    assert!(!cas(b, Some("2"), None).await);
    assert_eq!(a.get(USERS, "k").await.unwrap(), Some(bytes("3")));
    assert!(cas(b, Some("3"), None).await);
    assert_eq!(a.get(USERS, "k").await.unwrap(), None);
    assert_eq!(a.list(USERS).await.unwrap(), vec![]);
}

/// Starts `n` tasks, alternating between the two nodes, released together.
async fn race<T: Send + 'static, F>(
    p: &Pair,
    n: usize,
    task: impl Fn(Arc<dyn Store>, usize) -> F,
) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let store = if i % 2 == 0 { &p.a } else { &p.b }.clone();
            let barrier = barrier.clone();
            let work = task(store, i);
            tokio::spawn(async move {
                barrier.wait().await;
                work.await
            })
        })
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.expect("racer finished"));
    }
    results
}

/// 20 racers on two nodes claim one key: exactly one wins, and the record
/// is the winner's.
async fn compare_and_swap_racers(p: Pair) {
    let wins = race(&p, 20, |store, i| async move {
        store
            .compare_and_swap(USERS, "claimed", None, Some(bytes(&format!("racer-{i}"))))
            .await
            .unwrap()
    })
    .await;
    let winners: Vec<usize> = (0..20).filter(|&i| wins[i]).collect();
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    assert_eq!(
        p.a.get(USERS, "claimed").await.unwrap(),
        Some(bytes(&format!("racer-{}", winners[0])))
    );
}

/// 8 tasks on two nodes each add 1 five times with read-compare-swap loops:
/// no increment is lost.
async fn compare_and_swap_increments(p: Pair) {
    race(&p, 8, |store, _| async move {
        for _ in 0..5 {
            loop {
                let current = store.get(USERS, "n").await.unwrap();
                let n: u64 = current
                    .as_deref()
                    .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
                let next = bytes(&(n + 1).to_string());
                if store
                    .compare_and_swap(USERS, "n", current, Some(next))
                    .await
                    .unwrap()
                {
                    break;
                }
            }
        }
    })
    .await;
    assert_eq!(p.b.get(USERS, "n").await.unwrap(), Some(bytes("40")));
}

/// Claims the first free address of `pool` for `owner`.
async fn allocate(store: &dyn Store, pool: &[String], owner: &str) -> Option<String> {
    for address in pool {
        if store
            .compare_and_swap(TUNNELS, address, None, Some(bytes(owner)))
            .await
            .unwrap()
        {
            return Some(address.clone());
        }
    }
    None
}

/// 16 peers on two nodes allocate from a pool of 10 tunnel addresses at once:
/// no address is handed out twice, 6 peers find the pool exhausted, and an
/// address given back goes to the next peer.
async fn address_allocation(p: Pair) {
    let pool: Arc<Vec<String>> = Arc::new((1..=10).map(|i| format!("10.77.0.{i}")).collect());
    let results = race(&p, 16, |store, i| {
        let pool = pool.clone();
        async move {
            let owner = format!("peer-{i:02}");
            let address = allocate(&*store, &pool, &owner).await;
            (owner, address)
        }
    })
    .await;
    let mut given: Vec<(String, Vec<u8>)> = results
        .iter()
        .filter_map(|(owner, address)| Some((address.clone()?, bytes(owner))))
        .collect();
    given.sort();
    assert_eq!(given.len(), 10, "every address is handed out: {results:?}");
    let mut addresses: Vec<&String> = given.iter().map(|(address, _)| address).collect();
    addresses.dedup();
    assert_eq!(addresses.len(), 10, "an address was handed out twice");
    assert_eq!(results.iter().filter(|(_, a)| a.is_none()).count(), 6);
    assert_eq!(p.b.list(TUNNELS).await.unwrap(), given, "the store agrees");

    let (address, owner) = given[3].clone();
    assert!(p
        .a
        .compare_and_swap(TUNNELS, &address, Some(owner), None)
        .await
        .unwrap());
    assert_eq!(allocate(&*p.b, &pool, "late").await, Some(address));
    assert_eq!(allocate(&*p.a, &pool, "later").await, None);
}

/// Counts add up across nodes, per table and key, apart from records.
async fn counters(p: Pair) {
    let (a, b) = (&p.a, &p.b);
    let long = Duration::from_secs(30);
    assert_eq!(a.count(COUNTS, "alice", long).await.unwrap(), 1);
    assert_eq!(a.count(COUNTS, "alice", long).await.unwrap(), 2);
    assert_eq!(b.count(COUNTS, "alice", long).await.unwrap(), 3);
    assert_eq!(b.count(COUNTS, "bob", long).await.unwrap(), 1);
    assert_eq!(a.count(USERS, "alice", long).await.unwrap(), 1);
    assert_eq!(a.get(COUNTS, "alice").await.unwrap(), None, "not a record");
    // A window longer than any clock does not fail.
    assert_eq!(a.count(COUNTS, "max", Duration::MAX).await.unwrap(), 1);
    assert_eq!(b.count(COUNTS, "max", Duration::MAX).await.unwrap(), 2);
}

/// A 300 ms counter expires 300 ms after its first count, not its last.
async fn counter_window(p: Pair) {
    let window = Duration::from_millis(300);
    let start = Instant::now();
    assert_eq!(p.a.count(COUNTS, "carol", window).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(p.b.count(COUNTS, "carol", window).await.unwrap(), 2);
    tokio::time::sleep_until((start + Duration::from_millis(400)).into()).await;
    // 400 ms after the first count, 250 ms after the last.
    assert_eq!(p.a.count(COUNTS, "carol", window).await.unwrap(), 1);
    assert_eq!(p.b.count(COUNTS, "carol", window).await.unwrap(), 2);
}

/// Of 20 racers on both nodes taking places of 5, exactly 5 count; a place
/// given back is taken again; a full counter says how long it has left.
async fn counter_limit(p: Pair) {
    let window = Duration::from_secs(30);
    let racers = (0..20).map(|i| {
        let store = if i % 2 == 0 { p.a.clone() } else { p.b.clone() };
        async move { store.take(COUNTS, "dave", 5, window).await.unwrap() }
    });
    let taken = futures_util::future::join_all(racers).await;
    let mut counted: Vec<u64> = taken
        .iter()
        .filter_map(|t| match t {
            Taken::Counted(n) => Some(*n),
            Taken::Full(_) => None,
        })
        .collect();
    counted.sort_unstable();
    assert_eq!(counted, vec![1, 2, 3, 4, 5], "{taken:?}");
    for t in &taken {
        if let Taken::Full(left) = t {
            let left = left.expect("the counter expires");
            assert!(left <= window && left > window / 2, "{left:?}");
        }
    }
    p.b.uncount(COUNTS, "dave").await.unwrap();
    assert_eq!(
        p.a.take(COUNTS, "dave", 5, window).await.unwrap(),
        Taken::Counted(5)
    );
    assert!(matches!(
        p.b.take(COUNTS, "dave", 5, window).await.unwrap(),
        Taken::Full(_)
    ));
    // Giving back what was never taken leaves nothing behind.
    p.a.uncount(COUNTS, "erin").await.unwrap();
    assert_eq!(
        p.a.take(COUNTS, "erin", 1, window).await.unwrap(),
        Taken::Counted(1)
    );
}

/// Taking, renewing (by the holder, from any node), refusing, releasing and
/// expiry of a lease.
async fn leases(p: Pair) {
    let (a, b) = (&p.a, &p.b);
    let ttl = Duration::from_millis(600);
    let start = Instant::now();
    assert!(a.acquire(LEASES, "reaper", "alpha", ttl).await.unwrap());
    assert!(!b.acquire(LEASES, "reaper", "beta", ttl).await.unwrap());
    assert!(a.acquire(LEASES, "other", "beta", ttl).await.unwrap());
    assert!(
        a.get(LEASES, "reaper").await.unwrap().is_none(),
        "not a record"
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        b.acquire(LEASES, "reaper", "alpha", ttl).await.unwrap(),
        "renewed"
    );
    tokio::time::sleep_until((start + Duration::from_millis(800)).into()).await;
    assert!(
        !b.acquire(LEASES, "reaper", "beta", ttl).await.unwrap(),
        "still held thanks to the renewal"
    );

    b.release(LEASES, "reaper", "beta").await.unwrap();
    assert!(
        !b.acquire(LEASES, "reaper", "beta", ttl).await.unwrap(),
        "only the holder releases"
    );
    a.release(LEASES, "reaper", "alpha").await.unwrap();
    assert!(
        b.acquire(LEASES, "reaper", "beta", ttl).await.unwrap(),
        "released"
    );

    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(
        a.acquire(LEASES, "reaper", "alpha", ttl).await.unwrap(),
        "expired"
    );
    assert!(a
        .acquire(LEASES, "forever", "alpha", Duration::MAX)
        .await
        .unwrap());
    assert!(!b.acquire(LEASES, "forever", "beta", ttl).await.unwrap());
}

/// 20 racers on two nodes take one lease: exactly one holds it.
async fn lease_racers(p: Pair) {
    let held = race(&p, 20, |store, i| async move {
        store
            .acquire(
                LEASES,
                "leader",
                &format!("node-{i}"),
                Duration::from_secs(30),
            )
            .await
            .unwrap()
    })
    .await;
    assert_eq!(held.iter().filter(|&&h| h).count(), 1, "holders: {held:?}");
}

/// Waits until the changes `rx` gets include those written through `store`.
async fn following(store: &dyn Store, rx: &mut broadcast::Receiver<Changed>) {
    for _ in 0..100 {
        store.put(PROBE, "probe", vec![]).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
        while let Ok(change) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if let Changed::Key { table, .. } = change.expect("no lag") {
                if table == PROBE.name() {
                    return;
                }
            }
        }
    }
    panic!("changes are not followed");
}

/// The next change of a record (probes and `Missed` aside), if one comes
/// `within`.
async fn next_change(
    rx: &mut broadcast::Receiver<Changed>,
    within: Duration,
) -> Option<(String, String)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await.ok()? {
            Ok(Changed::Key { table, key }) if table != PROBE.name() => return Some((table, key)),
            Ok(_) => continue,
            Err(e) => panic!("changes: {e}"),
        }
    }
}

fn changed(table: Table, key: &str) -> Option<(String, String)> {
    Some((table.name().to_owned(), key.to_owned()))
}

/// A write on one node is reported on the other within a second, and on the
/// writing node too; writes that change nothing, counters and leases are
/// not reported.
async fn changes_reach_every_node(p: Pair) {
    let (a, b) = (&p.a, &p.b);
    let mut rx = b.changes();
    following(&**a, &mut rx).await;
    let mut own = a.changes();

    a.put(TOKENS, "revoked:1", bytes("1")).await.unwrap();
    assert_eq!(
        next_change(&mut rx, SECOND).await,
        changed(TOKENS, "revoked:1")
    );
    assert_eq!(
        next_change(&mut own, SECOND).await,
        changed(TOKENS, "revoked:1")
    );

    assert!(a
        .compare_and_swap(TOKENS, "revoked:2", None, Some(bytes("2")))
        .await
        .unwrap());
    assert_eq!(
        next_change(&mut rx, SECOND).await,
        changed(TOKENS, "revoked:2")
    );

    // Nothing changes: a refused swap, the delete of nothing, a count, a lease.
    assert!(!a
        .compare_and_swap(TOKENS, "revoked:2", None, Some(bytes("3")))
        .await
        .unwrap());
    assert!(!a.delete(TOKENS, "nothing").await.unwrap());
    a.count(TOKENS, "count", SECOND).await.unwrap();
    a.acquire(TOKENS, "lease", "alpha", SECOND).await.unwrap();

    assert!(a.delete(TOKENS, "revoked:1").await.unwrap());
    assert_eq!(
        next_change(&mut rx, SECOND).await,
        changed(TOKENS, "revoked:1")
    );
    assert_eq!(next_change(&mut rx, Duration::from_millis(200)).await, None);
}

// Disk only.

/// Records survive closing and reopening the file, which is in WAL mode
/// and marked as a Concierge store; counters and leases (volatile) do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("concierge.db");
    {
        let store = DiskStore::open(&path).unwrap();
        store.put(USERS, "alice", bytes("a")).await.unwrap();
        store.put(USERS, "bob", bytes("b")).await.unwrap();
        assert!(store.delete(USERS, "bob").await.unwrap());
        assert!(store
            .compare_and_swap(TUNNELS, "10.77.0.1", None, Some(bytes("alice")))
            .await
            .unwrap());
        assert_eq!(store.count(COUNTS, "alice", SECOND * 60).await.unwrap(), 1);
        assert!(store
            .acquire(LEASES, "l", "alpha", SECOND * 60)
            .await
            .unwrap());
    }
    // The file as documented: write-ahead logged, marked as a store of
    // this schema.
    let file = rusqlite::Connection::open(&path).unwrap();
    let mode: String = file
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let id: i64 = file
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .unwrap();
    assert_eq!(id.to_be_bytes()[4..], *b"Conc");
    let version: i64 = file
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, concierge::cluster::disk::SCHEMA);
    drop(file);
    let store = DiskStore::open(&path).unwrap();
    assert_eq!(
        store.list(USERS).await.unwrap(),
        vec![("alice".to_owned(), bytes("a"))]
    );
    assert_eq!(
        store.get(TUNNELS, "10.77.0.1").await.unwrap(),
        Some(bytes("alice"))
    );
    // Counters are kept in the file (failed logins outlive a restart),
    // leases are not.
    assert_eq!(store.count(COUNTS, "alice", SECOND * 60).await.unwrap(), 2);
    assert!(store
        .acquire(LEASES, "l", "beta", SECOND * 60)
        .await
        .unwrap());
}

/// A file of schema 1 (records only, before counters were kept in the
/// file) is read as it is and upgraded by its first count.
#[tokio::test]
async fn disk_upgrades_a_file_of_schema_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("concierge.db");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE records (tbl TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
               PRIMARY KEY (tbl, key)) STRICT, WITHOUT ROWID;
             INSERT INTO records VALUES ('users', 'alice', X'61');
             PRAGMA application_id = 1131376227;
             PRAGMA user_version = 1;",
        )
        .unwrap();
    let store = DiskStore::open(&path).unwrap();
    assert_eq!(store.get(USERS, "alice").await.unwrap(), Some(bytes("a")));
    assert_eq!(store.count(COUNTS, "alice", SECOND * 60).await.unwrap(), 1);
    drop(store);
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, concierge::cluster::disk::SCHEMA);
    let store = DiskStore::open(&path).unwrap();
    assert_eq!(store.count(COUNTS, "alice", SECOND * 60).await.unwrap(), 2);
}

/// A file that is not a store this version can use is refused, naming
/// it, and left as it was: bytes that are not SQLite, an SQLite database of
/// another program, a store of a newer schema, a folder. A file that is
/// open already is not one of them: another store opens it too.
#[test]
fn disk_open_fails_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |path: &std::path::Path| {
        let before = std::fs::read(path).ok();
        let error = DiskStore::open(path).err().expect("refused");
        assert!(
            error.to_string().contains(&*path.to_string_lossy()),
            "{error}"
        );
        assert_eq!(std::fs::read(path).ok(), before, "left as it was");
        error
    };

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 64 * 1024]).unwrap();
    let error = refused(&garbage);
    assert!(matches!(error, StoreError::Corrupt(_)), "{error}");

    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    let error = refused(&foreign);
    assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
    assert!(
        error.to_string().contains("not a Concierge store"),
        "{error}"
    );

    let newer = dir.path().join("newer.db");
    let store = DiskStore::open(&newer).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime
        .block_on(store.put(USERS, "alice", bytes("a")))
        .unwrap();
    drop(store);
    rusqlite::Connection::open(&newer)
        .unwrap()
        .pragma_update(None, "user_version", concierge::cluster::disk::SCHEMA + 1)
        .unwrap();
    let error = refused(&newer);
    assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
    assert!(error.to_string().contains("newer version"), "{error}");

    let folder = dir.path().join("folder.db");
    std::fs::create_dir(&folder).unwrap();
    let error = refused(&folder);
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");

    // A path that cannot even be looked at (here a symbolic link to itself;
    // for anyone but root, a folder without permission too) is refused at
    // once, not taken for a store yet to be written.
    let looped = dir.path().join("looped.db");
    std::os::unix::fs::symlink(&looped, &looped).unwrap();
    let error = refused(&looped);
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");

    let path = dir.path().join("concierge.db");
    let first = DiskStore::open(&path).unwrap();
    runtime
        .block_on(first.put(USERS, "alice", bytes("a")))
        .unwrap();
    let second = DiskStore::open(&path).expect("not locked by the first");
    assert_eq!(
        runtime.block_on(second.get(USERS, "alice")).unwrap(),
        Some(bytes("a"))
    );
}

/// A store whose folder cannot be created opens (it creates nothing) and
/// reads as empty; its first write fails as unavailable, naming the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_first_write_fails_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let path = file.join("data").join("concierge.db");
    let store = DiskStore::open(&path).expect("opening creates nothing");
    assert_eq!(store.list(USERS).await.unwrap(), vec![]);
    let error = store.put(USERS, "alice", vec![]).await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error}");
    assert!(
        error.to_string().contains(&*path.to_string_lossy()),
        "{error}"
    );
}

/// Opening a store and using it in every way that writes no record creates
/// nothing, not even its folder, while its thread looks for the file; the
/// first write creates the folder and the file, which then reopens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_creates_nothing_until_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("concierge.db");
    let store = DiskStore::open(&path).unwrap();
    assert_eq!(store.get(USERS, "alice").await.unwrap(), None);
    assert_eq!(store.list(USERS).await.unwrap(), vec![]);
    assert!(!store.delete(USERS, "alice").await.unwrap());
    assert!(!store
        .compare_and_swap(USERS, "alice", Some(bytes("a")), None)
        .await
        .unwrap());
    assert!(store
        .compare_and_swap(USERS, "alice", None, None)
        .await
        .unwrap());
    assert!(store.uncount(COUNTS, "alice").await.is_ok());
    assert!(store.acquire(LEASES, "l", "alpha", SECOND).await.unwrap());
    tokio::time::sleep(POLL * 3).await;
    let found: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(found.is_empty(), "created: {found:?}");

    store.put(USERS, "alice", bytes("a")).await.unwrap();
    assert!(path.is_file(), "the first write creates the file");
    // A count is a write too: counters are kept in the file.
    assert_eq!(store.count(COUNTS, "alice", SECOND).await.unwrap(), 1);
    drop(store);
    let store = DiskStore::open(&path).unwrap();
    assert_eq!(
        store.list(USERS).await.unwrap(),
        vec![("alice".to_owned(), bytes("a"))]
    );
}

/// Selects the writer mode of this test binary, and names its file.
const CRASH_WRITER: &str = "CONCIERGE_STORE_CRASH_WRITER";

/// The value the crash writer writes for its `i`th key: up to 60 KB, so
/// that the kill often lands mid-commit.
fn crash_value(i: u64) -> Vec<u8> {
    format!("{i:08}")
        .repeat((i % 7) as usize * 1_250 + 1)
        .into_bytes()
}

/// The child of `disk_crash_keeps_every_acknowledged_write`: writes records
/// until killed, printing each key once its write is acknowledged. Not a
/// test of its own: ignored, so the runner lists it as skipped, and run
/// with `--ignored` by its parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of disk_crash_keeps_every_acknowledged_write"]
async fn disk_crash_writer() {
    let path = std::env::var_os(CRASH_WRITER)
        .expect("run by disk_crash_keeps_every_acknowledged_write, which names the file");
    let store = DiskStore::open(path).expect("the crash writer opens the store");
    let mut stdout = std::io::stdout();
    for i in 0.. {
        let key = format!("key-{i:08}");
        store.put(LOG, &key, crash_value(i)).await.expect("written");
        writeln!(stdout, "acked {key}")
            .and_then(|()| stdout.flush())
            .expect("stdout");
    }
}

/// A process writing in a loop is SIGKILLed mid-stream: the file opens
/// again, readable, with every write that was acknowledged.
#[test]
fn disk_crash_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("concierge.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "disk_crash_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_WRITER, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the writer starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.len() < 300 {
        assert!(Instant::now() < deadline, "the writer is too slow");
        let line = lines.next().expect("the writer writes").unwrap();
        if let Some(key) = line.strip_prefix("acked ") {
            acked.push(key.to_owned());
        }
    }
    // Another process reads the file while the writer writes, and sees
    // every write acknowledged so far.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let reader = DiskStore::open(&path).expect("opens beside the writer");
        let all = reader.list(LOG).await.expect("reads beside the writer");
        for key in &acked {
            assert!(all.iter().any(|(k, _)| k == key), "{key} not seen");
        }
    });

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // What it printed before it died was acknowledged too.
    for line in lines {
        if let Some(key) = line.unwrap().strip_prefix("acked ") {
            acked.push(key.to_owned());
        }
    }

    runtime.block_on(async {
        let store = DiskStore::open(&path).expect("the file opens after the crash");
        let all = store.list(LOG).await.expect("the file reads");
        eprintln!("{} writes acknowledged, {} found", acked.len(), all.len());
        assert!(all.len() >= acked.len(), "{} < {}", all.len(), acked.len());
        for (i, (key, value)) in all.iter().enumerate() {
            assert_eq!(key, &format!("key-{i:08}"), "writes are in order");
            assert_eq!(value, &crash_value(i as u64), "{key} reads back whole");
        }
        for key in &acked {
            assert!(store.get(LOG, key).await.unwrap().is_some(), "{key} lost");
        }
        // And it takes writes again.
        store.put(LOG, "after", vec![1]).await.unwrap();
    });
}

/// Selects the peer mode of this test binary, and names its file.
const PEER: &str = "CONCIERGE_STORE_PEER";

/// Rounds of the claim race across processes, and how far apart they start.
const ROUNDS: u64 = 10;
const ROUND: Duration = Duration::from_millis(100);
/// Racers of each process in each round.
const RACERS: u64 = 5;

/// The moment `unix_ms` (milliseconds since the Unix epoch, which both
/// processes read from the same clock), on this process's runtime clock.
fn at_unix_ms(unix_ms: u64) -> tokio::time::Instant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let target = Duration::from_millis(unix_ms);
    tokio::time::Instant::now() + target.saturating_sub(now)
}

/// This process's part of the claim race: in each round, `RACERS` tasks
/// released together at the round's start try to claim `claim-{round}` with
/// `compare_and_swap`, each writing its own name. The (round, name) of every
/// win.
async fn claim_rounds(store: Arc<dyn Store>, who: &str, start_unix_ms: u64) -> Vec<(u64, String)> {
    let mut racers = Vec::new();
    for round in 0..ROUNDS {
        let at = at_unix_ms(start_unix_ms + round * ROUND.as_millis() as u64);
        for i in 0..RACERS {
            let store = store.clone();
            let name = format!("{who}-{round}-{i}");
            racers.push(tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let won = store
                    .compare_and_swap(USERS, &format!("claim-{round}"), None, Some(bytes(&name)))
                    .await
                    .unwrap();
                won.then_some((round, name))
            }));
        }
    }
    let mut wins = Vec::new();
    for racer in racers {
        wins.extend(racer.await.unwrap());
    }
    wins
}

/// Adds 1 to the record `key` `times` times, each with a
/// read-compare-swap loop.
async fn increment(store: &dyn Store, key: &str, times: u64) {
    for _ in 0..times {
        loop {
            let current = store.get(USERS, key).await.unwrap();
            let n: u64 = current
                .as_deref()
                .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
            let next = bytes(&(n + 1).to_string());
            if store
                .compare_and_swap(USERS, key, current, Some(next))
                .await
                .unwrap()
            {
                break;
            }
        }
    }
}

/// The second process of `disk_two_processes_share_the_file`: a store on
/// the file named by `PEER`, driven by commands on stdin, one a line,
/// answering each on stdout. Not a test of its own: ignored, so the runner
/// lists it as skipped, and run with `--ignored` by its parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the second process of disk_two_processes_share_the_file"]
async fn disk_peer_process() {
    let path = std::env::var_os(PEER)
        .expect("run by disk_two_processes_share_the_file, which names the file");
    let store: Arc<dyn Store> = Arc::new(DiskStore::open(path).expect("the peer opens the store"));
    let mut stdout = std::io::stdout();
    let mut say = |line: String| {
        // Marked, as libtest may have begun a line of its own.
        writeln!(stdout, "peer: {line}")
            .and_then(|()| stdout.flush())
            .expect("stdout");
    };
    say("ready".to_owned());
    let mut commands = BufReader::new(std::io::stdin()).lines();
    while let Some(Ok(command)) = tokio::task::block_in_place(|| commands.next()) {
        let words: Vec<&str> = command.split(' ').collect();
        match words[..] {
            ["put", key, value] => {
                store.put(USERS, key, bytes(value)).await.unwrap();
                say("ok".to_owned());
            }
            ["get", key] => match store.get(USERS, key).await.unwrap() {
                Some(value) => say(format!("value {}", String::from_utf8(value).unwrap())),
                None => say("none".to_owned()),
            },
            ["race", start] => {
                let wins = claim_rounds(store.clone(), "child", start.parse().unwrap()).await;
                for (round, name) in wins {
                    say(format!("won {round} {name}"));
                }
                say("ok".to_owned());
            }
            ["increment", key, times] => {
                increment(&*store, key, times.parse().unwrap()).await;
                say("ok".to_owned());
            }
            _ => panic!("the peer does not know {command:?}"),
        }
    }
}

/// The other process, as `disk_two_processes_share_the_file` drives it.
struct Peer {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Peer {
    fn start(path: &std::path::Path) -> Peer {
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "disk_peer_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PEER, path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the peer starts");
        let stdin = child.stdin.take().unwrap();
        let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        Peer {
            child,
            stdin,
            lines,
        }
    }

    /// Sends a command.
    async fn send(&mut self, command: &str) {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("the peer reads");
    }

    /// The peer's lines up to its answer (`ready`, `ok`, `value …`,
    /// `none`), the answer last; the test harness's own output is skipped.
    async fn answer(&mut self) -> Vec<String> {
        let mut said = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .expect("the peer answers in time")
                .expect("the peer's output")
                .expect("the peer is alive");
            let Some((_, line)) = line.split_once("peer: ") else {
                continue;
            };
            let line = line.to_owned();
            let done =
                ["ready", "ok", "none"].contains(&line.as_str()) || line.starts_with("value ");
            said.push(line);
            if done {
                return said;
            }
        }
    }

    async fn ask(&mut self, command: &str) -> Vec<String> {
        self.send(command).await;
        self.answer().await
    }
}

/// Waits up to `within` for a `Missed` (what another process's writes are
/// reported as), skipping this process's own changes.
async fn missed(rx: &mut broadcast::Receiver<Changed>, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(Changed::Missed)) => return true,
            Ok(Ok(Changed::Key { .. })) => continue,
            Ok(Err(e)) => panic!("changes: {e}"),
            Err(_) => return false,
        }
    }
}

/// Two processes, each with its own store on one file, as the gateway and
/// a command run on its host: the file that the first found missing is
/// created by the second, and the first's changes report it; both write and
/// read each other's writes; claims raced across the two have exactly one
/// winner each; read-compare-swap increments from both lose none; a write
/// in the other process is reported to the first within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_two_processes_share_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("concierge.db");
    let store: Arc<dyn Store> = Arc::new(DiskStore::open(&path).unwrap());
    let mut rx = store.changes();
    let mut peer = Peer::start(&path);
    assert_eq!(peer.answer().await, ["ready"]);

    // The peer creates the file with its first write.
    assert_eq!(peer.ask("put from-peer p1").await, ["ok"]);
    assert!(
        missed(&mut rx, SECOND).await,
        "the file the peer created is not reported"
    );
    assert_eq!(
        store.get(USERS, "from-peer").await.unwrap(),
        Some(bytes("p1"))
    );

    // Both write, both read.
    store.put(USERS, "from-first", bytes("f1")).await.unwrap();
    assert_eq!(peer.ask("get from-first").await, ["value f1"]);
    assert_eq!(peer.ask("put from-first f2").await, ["ok"]);
    assert_eq!(
        store.get(USERS, "from-first").await.unwrap(),
        Some(bytes("f2"))
    );
    assert!(store.delete(USERS, "from-peer").await.unwrap());
    assert_eq!(peer.ask("get from-peer").await, ["none"]);

    // Claims raced across the processes: one winner per round.
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        + Duration::from_millis(300);
    let start = start.as_millis() as u64;
    peer.send(&format!("race {start}")).await;
    let mut wins = claim_rounds(store.clone(), "first", start).await;
    let said = peer.answer().await;
    for line in &said[..said.len() - 1] {
        let mut words = line.split(' ').skip(1);
        let round = words.next().unwrap().parse().unwrap();
        wins.push((round, words.next().unwrap().to_owned()));
    }
    eprintln!("claim winners: {wins:?}");
    for round in 0..ROUNDS {
        let winners: Vec<&String> = wins
            .iter()
            .filter(|(r, _)| *r == round)
            .map(|(_, name)| name)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        assert_eq!(
            store.get(USERS, &format!("claim-{round}")).await.unwrap(),
            Some(bytes(winners[0])),
            "round {round}"
        );
    }

    // Increments from both processes at once: none is lost.
    peer.send("increment n 25").await;
    increment(&*store, "n", 25).await;
    assert_eq!(peer.answer().await, ["ok"]);
    assert_eq!(store.get(USERS, "n").await.unwrap(), Some(bytes("50")));
    assert_eq!(peer.ask("get n").await, ["value 50"]);

    // Once what came before has been reported, one more write of the peer
    // is reported within a second.
    tokio::time::sleep(POLL * 3).await;
    while rx.try_recv().is_ok() {}
    assert_eq!(peer.ask("put late l").await, ["ok"]);
    let written = Instant::now();
    assert!(
        missed(&mut rx, SECOND).await,
        "the peer's write is not reported"
    );
    eprintln!("reported {:?} after the write", written.elapsed());
    assert_eq!(store.get(USERS, "late").await.unwrap(), Some(bytes("l")));

    drop(peer.stdin);
    let status = peer.child.wait().await.unwrap();
    assert!(status.success(), "the peer failed: {status}");
}

// The cluster seam.

/// A standalone gateway's store is `concierge.db` in its data folder,
/// which joining does not create: the first write does, and another store
/// on that file (a command on the gateway's host) reads what it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_store_is_a_file_in_the_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let settings = Settings {
        data_dir: data.clone(),
        ..Settings::default()
    };
    let (cluster, _inbound) = cluster::join(&settings.cluster()).await.unwrap();
    let store = cluster.store();
    assert_eq!(store.list(USERS).await.unwrap(), vec![]);
    assert!(!data.exists(), "joining creates no data folder");
    store.put(USERS, "alice", bytes("a")).await.unwrap();
    let path = data.join(cluster::STORE_FILE);
    assert_eq!(
        DiskStore::open(&path)
            .unwrap()
            .get(USERS, "alice")
            .await
            .unwrap(),
        Some(bytes("a"))
    );
}

/// A store file that cannot be used keeps a standalone gateway out,
/// naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_join_names_a_store_it_cannot_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(cluster::STORE_FILE);
    std::fs::write(&path, vec![0x5a; 4096]).unwrap();
    let settings = Settings {
        data_dir: dir.path().to_owned(),
        ..Settings::default()
    };
    let Err(cluster::ClusterError::Unavailable(message)) = cluster::join(&settings.cluster()).await
    else {
        panic!("a garbage store file is accepted");
    };
    assert!(message.contains(&*path.to_string_lossy()), "{message}");
}

/// A replica's store is in the cluster's Redis, under the `concierge`
/// prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_store_is_in_its_redis() {
    let server = RedisServer::start();
    let settings = Settings {
        redis_url: server.url(),
        ..Settings::default()
    };
    let (cluster, _inbound) = cluster::join(&settings.cluster()).await.unwrap();
    cluster
        .store()
        .put(USERS, "alice", bytes("record"))
        .await
        .unwrap();
    assert_eq!(
        server
            .cli(&["HGET", "concierge:store:users", "alice"])
            .trim(),
        "record"
    );
    cluster.claims().deregister().await;
}

/// The permission bits of `path`, if it exists.
fn mode_of(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

/// Asserts that the store file at `path`, and the write-ahead log and
/// shared memory beside it while it is open, are mode 0600.
fn assert_private_store(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        let mode = mode_of(&file).map(|m| format!("{m:o}"));
        assert_eq!(mode.as_deref(), Some("600"), "{}", file.display());
    }
}

/// The store holds password hashes and signing keys (SECURITY §3): the
/// file its first write creates is mode 0600, and so are its write-ahead
/// log and shared memory, which hold the same records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_creates_its_file_for_its_user_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("concierge.db");
    let store = DiskStore::open(&path).unwrap();
    store
        .put(USERS, "alice", bytes("an argon2id hash"))
        .await
        .unwrap();
    assert_private_store(&path);
}

/// A gateway running alone creates its `concierge.db` mode 0600 (SECURITY
/// §3) even under a umask of 0000, which would let everyone read what it
/// creates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_gateway_creates_its_store_private_whatever_its_umask() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut cmd = common::process::command(&["serve", "--bind", "127.0.0.1:0", "--data-dir", data]);
    // SAFETY: the closure runs in the child between fork and exec, and
    // calls only umask(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    let mut gateway = common::process::Process::spawn(cmd);
    let addr = gateway.listening().await;
    // The first HELLO carries a file server key, signed by the gateway's
    // first signing key: making that key is the store's first write.
    let mut client = common::Client::connect(&format!("ws://{addr}/ws")).await;
    client.identify("probe").await;
    assert_private_store(&dir.path().join(cluster::STORE_FILE));
    gateway.signal("TERM");
    assert!(gateway.exit(Duration::from_secs(10)).await.success());
}

// Redis only.

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
