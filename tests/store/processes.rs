//! The file on disk shared with other processes: a writer killed
//! mid-stream loses no acknowledged write, and two processes on one file
//! read each other's writes and race fairly. The other process is this
//! test binary, run on an ignored test of this module.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concierge::cluster::disk::{DiskStore, POLL};
use concierge::cluster::store::{Changed, Store};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::broadcast;

use crate::{bytes, LOG, SECOND, USERS};

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
            "processes::disk_crash_writer",
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
                "processes::disk_peer_process",
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
