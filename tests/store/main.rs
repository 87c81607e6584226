//! The store seam, on real parts: one conformance suite run against a
//! `DiskStore` (a file in a temp dir) and against two `RedisStore`s sharing a
//! real `redis-server` (two replicas), then what only one of them has:
//! on disk, reopening, files it refuses, lazy creation, crash safety and two
//! processes sharing the file; on Redis, the key layout, bad data and
//! outages; and which store each kind of cluster hands out. Here, the
//! stores the tests open and what they share; each module tests a concern.

#[path = "../common/mod.rs"]
mod common;

mod conformance;
mod disk_only;
mod processes;
mod redis_only;
mod seam;

use std::sync::Arc;
use std::time::Duration;

use concierge::cluster::disk::DiskStore;
use concierge::cluster::redis::master::{Endpoint, Master};
use concierge::cluster::redis::store::RedisStore;
use concierge::cluster::store::{Changed, Store, Table};
use redis::aio::ConnectionManagerConfig;
use tokio::sync::broadcast;

use common::redis::RedisServer;

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

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
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
