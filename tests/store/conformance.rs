//! What every store does alike, run against both implementations (as
//! `on_disk::CHECK` and `on_redis::CHECK`): records, compare-and-swap and
//! its races, counters, leases, and changes reported to every node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use concierge::cluster::store::{Store, Taken};
use tokio::sync::Barrier;

use crate::{
    bytes, changed, following, next_change, Pair, COUNTS, LEASES, SECOND, TOKENS, TUNNELS, USERS,
};

crate::conformance!(
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

/// A 1 s counter expires 1 s after its first count, not its last.
async fn counter_window(p: Pair) {
    // The check comes 250 ms after the window from the first count closes
    // and 250 ms before one from the last would: a loaded machine may delay
    // either count by that much before the test could be wrong (it had 50 ms).
    let window = Duration::from_millis(1000);
    let start = Instant::now();
    assert_eq!(p.a.count(COUNTS, "carol", window).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(p.b.count(COUNTS, "carol", window).await.unwrap(), 2);
    tokio::time::sleep_until((start + Duration::from_millis(1250)).into()).await;
    // 1.25 s after the first count, 0.75 s after the last.
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
