//! The jobs' ledger on real parts: one conformance suite run against a
//! `DiskLedger` (a file in a temp dir) and against two `RedisLedger`s
//! sharing a real `redis-server` (two replicas); then what the file alone
//! has (reopening, creating nothing until written, files it refuses), the
//! key layout and bad data on Redis, which ledger each kind of cluster
//! hands out, and a measurement of big jobs (ignored: run it in release).

mod common;

use std::sync::Arc;
use std::time::Instant;

use concierge::cluster;
use concierge::cluster::disk::DiskStore;
use concierge::cluster::disk_ledger::DiskLedger;
use concierge::cluster::ledger::{HostRow, Ledger};
use concierge::cluster::redis::ledger::RedisLedger;
use concierge::cluster::store::{Store, StoreError, Table};
use concierge::config::Settings;
use tokio::sync::Barrier;

use common::redis::RedisServer;

/// Two handles on one ledger (the same file on disk, two replicas on
/// Redis), and what keeps it alive.
struct Pair {
    a: Arc<dyn Ledger>,
    b: Arc<dyn Ledger>,
    _keep: Box<dyn Send>,
}

fn disk_pair() -> Pair {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger: Arc<dyn Ledger> =
        Arc::new(DiskLedger::open(dir.path().join(cluster::JOBS_FILE)).expect("ledger opens"));
    Pair {
        a: ledger.clone(),
        b: ledger,
        _keep: Box::new(dir),
    }
}

async fn redis_pair() -> Pair {
    let server = RedisServer::start();
    Pair {
        a: Arc::new(redis_ledger(&server.url()).await),
        b: Arc::new(redis_ledger(&server.url()).await),
        _keep: Box::new(server),
    }
}

/// A ledger as a replica makes it, on a connection to the master of its
/// own.
async fn redis_ledger(url: &str) -> RedisLedger {
    RedisLedger::new(common::redis::master(url).await, "concierge")
}

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// A host's row, `row` for its bytes.
fn row(host: &str, row: &str, output: Option<&str>, is_final: bool) -> HostRow {
    HostRow {
        host: host.to_owned(),
        row: bytes(row),
        output: output.map(bytes),
        is_final,
    }
}

fn queued(host: &str) -> HostRow {
    row(host, "queued", None, false)
}

fn records(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|r| bytes(r)).collect()
}

crate::conformance!(
    an_empty_ledger_reads_empty,
    jobs_are_listed_newest_first_in_pages,
    a_job_stays_active_until_updated_over,
    hosts_are_sorted_by_bytes_with_their_output,
    a_final_row_is_never_replaced,
    racing_final_rows_one_wins,
    rows_of_an_unknown_job_are_not_written,
    prune_deletes_old_jobs_that_are_over,
);

/// Every read of a ledger nobody wrote answers empty, and the writes that
/// change nothing fail nothing.
async fn an_empty_ledger_reads_empty(p: Pair) {
    let l = &p.a;
    assert_eq!(l.job("0123456789ab").await.unwrap(), None);
    assert!(l.jobs(None, 10).await.unwrap().is_empty());
    assert!(l.active().await.unwrap().is_empty());
    assert!(l.hosts("0123456789ab").await.unwrap().is_empty());
    assert_eq!(l.host("0123456789ab", "web-1").await.unwrap(), None);
    assert_eq!(l.prune(u64::MAX).await.unwrap(), 0);
    l.update("0123456789ab", bytes("r"), false).await.unwrap();
    assert_eq!(
        l.job("0123456789ab").await.unwrap(),
        None,
        "update creates nothing"
    );
}

/// Records read back on the other node; `jobs` lists newest first (equal
/// times by id, descending), a page at a time with `before_ms`; creating a
/// job again changes nothing.
async fn jobs_are_listed_newest_first_in_pages(p: Pair) {
    let (a, b) = (&p.a, &p.b);
    for (id, ms) in [
        ("00000000000a", 100),
        ("00000000000b", 200),
        ("00000000000c", 200),
        ("00000000000d", 300),
        ("00000000000e", 400),
    ] {
        a.create(id, ms, bytes(&format!("record {id}")), vec![queued("h")])
            .await
            .unwrap();
    }
    assert_eq!(
        b.job("00000000000c").await.unwrap(),
        Some(bytes("record 00000000000c"))
    );
    let all = records(&[
        "record 00000000000e",
        "record 00000000000d",
        "record 00000000000c",
        "record 00000000000b",
        "record 00000000000a",
    ]);
    assert_eq!(b.jobs(None, 10).await.unwrap(), all);
    assert_eq!(b.jobs(None, 2).await.unwrap(), all[..2]);
    assert_eq!(b.jobs(Some(400), 2).await.unwrap(), all[1..3]);
    assert_eq!(b.jobs(Some(200), 10).await.unwrap(), all[4..]);
    assert_eq!(b.jobs(Some(100), 10).await.unwrap(), Vec::<Vec<u8>>::new());
    assert_eq!(b.jobs(None, 0).await.unwrap(), Vec::<Vec<u8>>::new());

    // A second create (a retry) leaves the record and the rows alone.
    b.write_hosts("00000000000a", vec![row("h", "exited", None, true)])
        .await
        .unwrap();
    a.create(
        "00000000000a",
        999,
        bytes("again"),
        vec![queued("h"), queued("i")],
    )
    .await
    .unwrap();
    assert_eq!(
        b.job("00000000000a").await.unwrap(),
        Some(bytes("record 00000000000a"))
    );
    assert_eq!(
        b.hosts("00000000000a").await.unwrap(),
        vec![("h".to_owned(), bytes("exited"))]
    );
    assert_eq!(b.jobs(Some(101), 10).await.unwrap(), all[4..]);
}

/// A job is active from its creation until an update says it is over;
/// updates replace the record.
async fn a_job_stays_active_until_updated_over(p: Pair) {
    let (a, b) = (&p.a, &p.b);
    a.create("aaaaaaaaaaaa", 1, bytes("r1"), vec![])
        .await
        .unwrap();
    a.create("bbbbbbbbbbbb", 2, bytes("r1"), vec![])
        .await
        .unwrap();
    assert_eq!(b.active().await.unwrap(), ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]);
    b.update("aaaaaaaaaaaa", bytes("r2"), true).await.unwrap();
    assert_eq!(a.job("aaaaaaaaaaaa").await.unwrap(), Some(bytes("r2")));
    assert_eq!(a.active().await.unwrap().len(), 2);
    b.update("aaaaaaaaaaaa", bytes("over"), false)
        .await
        .unwrap();
    assert_eq!(a.job("aaaaaaaaaaaa").await.unwrap(), Some(bytes("over")));
    assert_eq!(a.active().await.unwrap(), ["bbbbbbbbbbbb"]);
    // Over, it is still listed.
    assert_eq!(a.jobs(None, 10).await.unwrap(), records(&["r1", "over"]));
}

/// `hosts` lists every row without outputs in byte order; `host` gives one
/// row and its output; a row that is not final is replaced with its
/// output, which goes when the new row has none.
async fn hosts_are_sorted_by_bytes_with_their_output(p: Pair) {
    let (a, b) = (&p.a, &p.b);
    let names = ["web-2", "Web-1", "é-1", "web-10", "10", "a"];
    a.create(
        "cccccccccccc",
        5,
        bytes("r"),
        names.iter().map(|h| queued(h)).collect(),
    )
    .await
    .unwrap();
    let mut sorted: Vec<&str> = names.to_vec();
    sorted.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
    assert_eq!(sorted, ["10", "Web-1", "a", "web-10", "web-2", "é-1"]);
    let listed = b.hosts("cccccccccccc").await.unwrap();
    assert_eq!(
        listed.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
        sorted
    );
    assert!(listed.iter().all(|(_, r)| *r == bytes("queued")));

    let written = b
        .write_hosts(
            "cccccccccccc",
            vec![
                row("web-2", "running", Some("half"), false),
                row("a", "", Some(""), false),
            ],
        )
        .await
        .unwrap();
    assert_eq!(written, ["web-2", "a"]);
    assert_eq!(
        a.host("cccccccccccc", "web-2").await.unwrap(),
        Some((bytes("running"), Some(bytes("half"))))
    );
    // Empty bytes are a row and an output, not none.
    assert_eq!(
        a.host("cccccccccccc", "a").await.unwrap(),
        Some((vec![], Some(vec![])))
    );
    assert_eq!(
        a.host("cccccccccccc", "10").await.unwrap(),
        Some((bytes("queued"), None))
    );
    assert_eq!(a.host("cccccccccccc", "nobody").await.unwrap(), None);
    assert_eq!(a.host("dddddddddddd", "web-2").await.unwrap(), None);

    let every_byte: Vec<u8> = (0..=255).collect();
    let done = HostRow {
        output: Some(every_byte.clone()),
        ..row("web-2", "exited", None, true)
    };
    assert_eq!(
        a.write_hosts("cccccccccccc", vec![done]).await.unwrap(),
        ["web-2"]
    );
    assert_eq!(
        b.host("cccccccccccc", "web-2").await.unwrap(),
        Some((bytes("exited"), Some(every_byte)))
    );
    a.write_hosts("cccccccccccc", vec![queued("a")])
        .await
        .unwrap();
    assert_eq!(
        b.host("cccccccccccc", "a").await.unwrap(),
        Some((bytes("queued"), None)),
        "a row without output takes the old one's away"
    );
    // Each job has its own rows.
    a.create("dddddddddddd", 6, bytes("r"), vec![queued("web-2")])
        .await
        .unwrap();
    assert_eq!(b.hosts("dddddddddddd").await.unwrap().len(), 1);
    assert_eq!(b.hosts("cccccccccccc").await.unwrap().len(), names.len());
}

/// A final row stays as it was: a later row for the host, final or not,
/// from this node or another, is refused, and the answer names only the
/// hosts written, in the order given.
async fn a_final_row_is_never_replaced(p: Pair) {
    let (a, b) = (&p.a, &p.b);
    a.create(
        "eeeeeeeeeeee",
        1,
        bytes("r"),
        vec![queued("h1"), queued("h2")],
    )
    .await
    .unwrap();
    let first = row("h1", "exited 0", Some("out"), true);
    assert_eq!(
        a.write_hosts("eeeeeeeeeeee", vec![first]).await.unwrap(),
        ["h1"]
    );
    let late = b
        .write_hosts(
            "eeeeeeeeeeee",
            vec![
                row("h3", "sent", None, false),
                row("h1", "sent", None, false),
                row("h2", "sent", None, false),
                row("h1", "exited 1", Some("other"), true),
            ],
        )
        .await
        .unwrap();
    assert_eq!(late, ["h3", "h2"]);
    let again = a
        .write_hosts("eeeeeeeeeeee", vec![row("h1", "offline", None, true)])
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(
        b.host("eeeeeeeeeeee", "h1").await.unwrap(),
        Some((bytes("exited 0"), Some(bytes("out"))))
    );
    // In one batch: the first final row for a host is the one kept.
    let batch = b
        .write_hosts(
            "eeeeeeeeeeee",
            vec![
                row("h2", "timed_out", None, true),
                row("h2", "exited", None, true),
            ],
        )
        .await
        .unwrap();
    assert_eq!(batch, ["h2"]);
    assert_eq!(
        a.hosts("eeeeeeeeeeee").await.unwrap(),
        vec![
            ("h1".to_owned(), bytes("exited 0")),
            ("h2".to_owned(), bytes("timed_out")),
            ("h3".to_owned(), bytes("sent")),
        ]
    );
}

/// Writers racing on both nodes, each with a final row for the same host:
/// exactly one is written, and it is the one stored.
async fn racing_final_rows_one_wins(p: Pair) {
    const RACERS: usize = 16;
    p.a.create("ffffffffffff", 1, bytes("r"), vec![queued("h")])
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(RACERS));
    let racers: Vec<_> = (0..RACERS)
        .map(|i| {
            let ledger = if i % 2 == 0 { p.a.clone() } else { p.b.clone() };
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let mine = row("h", &format!("final {i}"), None, true);
                let written = ledger
                    .write_hosts("ffffffffffff", vec![mine])
                    .await
                    .unwrap();
                (!written.is_empty()).then_some(i)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for racer in racers {
        winners.extend(racer.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(
        p.b.host("ffffffffffff", "h").await.unwrap(),
        Some((bytes(&format!("final {}", winners[0])), None))
    );
}

/// Rows of a job the ledger does not have are not written (a late writer
/// does not bring a pruned job's rows back).
async fn rows_of_an_unknown_job_are_not_written(p: Pair) {
    let written =
        p.a.write_hosts("abcabcabcabc", vec![row("h", "exited", None, true)])
            .await
            .unwrap();
    assert!(written.is_empty(), "{written:?}");
    assert!(p.b.hosts("abcabcabcabc").await.unwrap().is_empty());
    assert_eq!(p.b.job("abcabcabcabc").await.unwrap(), None);
}

/// `prune` deletes the jobs that are over and older than the bound, with
/// their rows and outputs; active and newer jobs stay.
async fn prune_deletes_old_jobs_that_are_over(p: Pair) {
    let (a, b) = (&p.a, &p.b);
    let host = || vec![row("h", "exited", Some("out"), true)];
    a.create("111111111111", 100, bytes("old over"), host())
        .await
        .unwrap();
    a.create("222222222222", 100, bytes("old active"), host())
        .await
        .unwrap();
    a.create("333333333333", 500, bytes("new over"), host())
        .await
        .unwrap();
    a.create("444444444444", 199, bytes("old over too"), host())
        .await
        .unwrap();
    for job in ["111111111111", "333333333333", "444444444444"] {
        a.update(job, bytes("over"), false).await.unwrap();
    }
    assert_eq!(b.prune(200).await.unwrap(), 2);
    for gone in ["111111111111", "444444444444"] {
        assert_eq!(a.job(gone).await.unwrap(), None);
        assert!(a.hosts(gone).await.unwrap().is_empty());
        assert_eq!(a.host(gone, "h").await.unwrap(), None);
    }
    assert_eq!(a.jobs(None, 10).await.unwrap().len(), 2);
    assert_eq!(a.hosts("222222222222").await.unwrap().len(), 1);
    assert_eq!(
        a.host("333333333333", "h").await.unwrap(),
        Some((bytes("exited"), Some(bytes("out"))))
    );
    assert_eq!(b.prune(200).await.unwrap(), 0);
    // A pruned job's rows are not written again.
    let late = a
        .write_hosts("111111111111", vec![queued("h")])
        .await
        .unwrap();
    assert!(late.is_empty());
    assert_eq!(b.prune(501).await.unwrap(), 1);
    assert_eq!(a.active().await.unwrap(), ["222222222222"]);
}

/// Jobs and rows survive closing and reopening the file, which is in WAL
/// mode and marked as a jobs ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(cluster::JOBS_FILE);
    {
        let ledger = DiskLedger::open(&path).unwrap();
        ledger
            .create(
                "0123456789ab",
                7,
                bytes("r"),
                vec![queued("b"), queued("a")],
            )
            .await
            .unwrap();
        ledger
            .write_hosts("0123456789ab", vec![row("a", "exited", Some("o"), true)])
            .await
            .unwrap();
    }
    let file = rusqlite::Connection::open(&path).unwrap();
    let mode: String = file
        .pragma_query_value(None, "journal_mode", |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let id: i64 = file
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .unwrap();
    assert_eq!(id.to_be_bytes()[4..], *b"Cjob");
    drop(file);
    let ledger = DiskLedger::open(&path).unwrap();
    assert_eq!(ledger.job("0123456789ab").await.unwrap(), Some(bytes("r")));
    assert_eq!(ledger.active().await.unwrap(), ["0123456789ab"]);
    assert_eq!(
        ledger.host("0123456789ab", "a").await.unwrap(),
        Some((bytes("exited"), Some(bytes("o"))))
    );
    let refused = ledger
        .write_hosts("0123456789ab", vec![queued("a"), queued("b")])
        .await
        .unwrap();
    assert_eq!(refused, ["b"], "the final row is still final");
}

/// Opening, reading and writes that change nothing create no folder and
/// no file; the first job does, private to the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_creates_nothing_until_a_job() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("data");
    let path = folder.join(cluster::JOBS_FILE);
    let ledger = DiskLedger::open(&path).unwrap();
    assert!(ledger.jobs(None, 5).await.unwrap().is_empty());
    ledger
        .update("0123456789ab", bytes("r"), false)
        .await
        .unwrap();
    let none = ledger
        .write_hosts("0123456789ab", vec![queued("a")])
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(ledger.prune(u64::MAX).await.unwrap(), 0);
    assert!(!folder.exists(), "nothing written, nothing created");
    ledger
        .create("0123456789ab", 1, bytes("r"), vec![])
        .await
        .unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(format!("{mode:o}"), "600");
}

/// A file that is not a jobs ledger (another program's SQLite database,
/// the store's file, a newer ledger) is refused as corrupt, naming it, and
/// left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_refuses_a_foreign_file() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |path: &std::path::Path, says: &str| {
        let before = std::fs::read(path).unwrap();
        let error = DiskLedger::open(path).err().expect("refused");
        assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
        let message = error.to_string();
        assert!(message.contains(&*path.to_string_lossy()), "{message}");
        assert!(message.contains(says), "{message}");
        assert_eq!(std::fs::read(path).unwrap(), before, "left as it was");
    };

    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    refused(&foreign, "not a Concierge jobs ledger");

    let store = dir.path().join(cluster::STORE_FILE);
    DiskStore::open(&store)
        .unwrap()
        .put(Table::new("users"), "alice", bytes("a"))
        .await
        .unwrap();
    closed(&store).await;
    refused(&store, "not a Concierge jobs ledger");

    let newer = dir.path().join("newer.db");
    DiskLedger::open(&newer)
        .unwrap()
        .create("0123456789ab", 1, bytes("r"), vec![])
        .await
        .unwrap();
    closed(&newer).await;
    rusqlite::Connection::open(&newer)
        .unwrap()
        .pragma_update(
            None,
            "user_version",
            concierge::cluster::disk_ledger::SCHEMA + 1,
        )
        .unwrap();
    refused(&newer, "newer version");
}

/// Waits until the last connection to the SQLite file at `path` is
/// closed: a dropped store's or ledger's thread closes its connection a
/// moment later, and that close moves the write-ahead log into the file
/// (and deletes the log), which would change the file under a comparison.
async fn closed(path: &std::path::Path) {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::path::Path::new(&wal).exists() {
        assert!(tokio::time::Instant::now() < deadline, "{wal:?} stays");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// On Redis: the documented keys, and data the ledger never writes read
/// as corrupt rather than taken for rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_are_as_documented() {
    let server = RedisServer::start();
    let ledger = redis_ledger(&server.url()).await;
    ledger
        .create("0123456789ab", 42, bytes("rec"), vec![queued("a")])
        .await
        .unwrap();
    ledger
        .write_hosts("0123456789ab", vec![row("b", "done", Some("out"), true)])
        .await
        .unwrap();
    assert_eq!(
        server.cli(&["GET", "concierge:job:0123456789ab"]).trim(),
        "rec"
    );
    assert_eq!(
        server
            .cli(&["ZSCORE", "concierge:jobs", "0123456789ab"])
            .trim(),
        "42"
    );
    assert_eq!(
        server.cli(&["SMEMBERS", "concierge:jobs:active"]).trim(),
        "0123456789ab"
    );
    let hosts = "concierge:job:0123456789ab:hosts";
    assert_eq!(server.cli(&["HGET", hosts, "a"]).trim(), "0queued");
    assert_eq!(server.cli(&["HGET", hosts, "b"]).trim(), "1done");
    assert_eq!(
        server
            .cli(&["HGET", "concierge:job:0123456789ab:output", "b"])
            .trim(),
        "out"
    );

    server.cli(&["HSET", hosts, "c", ""]);
    let error = ledger.hosts("0123456789ab").await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
    // A key of another type where a record should be.
    server.cli(&["HSET", "concierge:job:bad", "x", "y"]);
    let error = ledger.job("bad").await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error}");
}

/// A gateway alone keeps its jobs in `jobs.db` in its data folder, which
/// joining does not create; a replica keeps them in its Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cluster_hands_out_its_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let settings = Settings {
        data_dir: data.clone(),
        ..Settings::default()
    };
    let (alone, _inbound) = cluster::join(&settings.cluster()).await.unwrap();
    assert!(alone.ledger().active().await.unwrap().is_empty());
    assert!(!data.exists(), "joining creates no data folder");
    alone
        .ledger()
        .create("0123456789ab", 1, bytes("r"), vec![queued("a")])
        .await
        .unwrap();
    let file = DiskLedger::open(data.join(cluster::JOBS_FILE)).unwrap();
    assert_eq!(file.job("0123456789ab").await.unwrap(), Some(bytes("r")));

    let server = RedisServer::start();
    let settings = Settings {
        redis_url: server.url(),
        ..Settings::default()
    };
    let (replica, _inbound) = cluster::join(&settings.cluster()).await.unwrap();
    replica
        .ledger()
        .create("0123456789ab", 1, bytes("in redis"), vec![])
        .await
        .unwrap();
    assert_eq!(
        server.cli(&["GET", "concierge:job:0123456789ab"]).trim(),
        "in redis"
    );
    replica.claims().deregister().await;
}

/// Not a test: how long a job of 10,000 hosts takes to create and 1,000
/// rows to write, on each ledger. Run it in release:
/// `cargo test --release --test ledger -- --ignored --nocapture figures`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it in release with --nocapture"]
async fn figures() {
    async fn measure(name: &str, ledger: &dyn Ledger) {
        let row = |i: usize, state: &str, is_final: bool| HostRow {
            host: format!("host-{i:05}"),
            row: format!(
                r#"{{"host":"host-{i:05}","state":"{state}","updated_ms":1733560000000}}"#
            )
            .into_bytes(),
            output: is_final.then(|| vec![b'x'; 200]),
            is_final,
        };
        let hosts: Vec<HostRow> = (0..10_000).map(|i| row(i, "queued", false)).collect();
        let started = Instant::now();
        ledger
            .create("0123456789ab", 1, bytes("r"), hosts)
            .await
            .unwrap();
        let create = started.elapsed();
        let rows: Vec<HostRow> = (0..1_000).map(|i| row(i, "exited", true)).collect();
        let started = Instant::now();
        let written = ledger.write_hosts("0123456789ab", rows).await.unwrap();
        let write = started.elapsed();
        assert_eq!(written.len(), 1_000);
        let started = Instant::now();
        assert_eq!(ledger.hosts("0123456789ab").await.unwrap().len(), 10_000);
        let list = started.elapsed();
        println!(
            "{name}: create(10,000 hosts) {create:?}, write_hosts(1,000 final rows) {write:?}, \
             hosts() of 10,000 {list:?}"
        );
    }
    let disk = disk_pair();
    measure("disk", &*disk.a).await;
    let redis = redis_pair().await;
    measure("redis", &*redis.a).await;
}
