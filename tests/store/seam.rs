//! Which store each kind of cluster hands out: a standalone gateway's file
//! in its data folder (private whatever the umask), a replica's Redis.

use std::time::Duration;

use concierge::cluster;
use concierge::cluster::disk::DiskStore;
use concierge::cluster::store::Store;
use concierge::config::Settings;

use crate::common::redis::RedisServer;
use crate::{assert_private_store, bytes, common, USERS};

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
    let (cluster, _inbound) = cluster::join(&settings).await.unwrap();
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
    let Err(cluster::ClusterError::Unavailable(message)) = cluster::join(&settings).await else {
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
    let (cluster, _inbound) = cluster::join(&settings).await.unwrap();
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
    cluster.deregister().await;
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
