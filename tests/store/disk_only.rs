//! The store on disk alone: reopening, upgrading an older file, files it
//! refuses, creating nothing until written, and a file private to its
//! user.

use concierge::cluster::disk::{DiskStore, POLL};
use concierge::cluster::store::{Store, StoreError};

use crate::{assert_private_store, bytes, COUNTS, LEASES, SECOND, TUNNELS, USERS};

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
