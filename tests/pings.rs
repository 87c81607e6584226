//! A client's pings cost the gateway what its other frames cost, on every
//! path, before IDENTIFY as after.
//!
//! The clients here are raw sockets (see `common::flood`) that send Ping
//! frames and never read. Every ping is answered with a pong; the pongs
//! that cannot leave wait in the client's queue, under the same bound as
//! its other frames (`max_outgoing_queue`, then 1008), and a ping is no
//! sign of life while the gateway's output to the client is stuck (the
//! heartbeat closes it). The gateway is a real process, so that its memory
//! can be read from `/proc` while it is flooded.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::flood::{self, Flood};
use common::process::{command, rss, serve, Process};
use common::PATIENCE;
use serde_json::json;

/// The paths a WebSocket client can flood: the native one and two adapters
/// (Quix's `/wsi` shares the adapters' frame handling with `/nest`).
const PATHS: [&str; 3] = ["/ws", "/nest", "/socket.io/?EIO=4&transport=websocket"];

/// How long the flood lasts.
const FLOOD: Duration = Duration::from_secs(5);

/// How much the gateway's memory may grow while flooded.
const MAX_GROWTH: u64 = 50 * 1024 * 1024;

/// How long `/healthz` may take while the gateway is flooded.
const HEALTHY: Duration = Duration::from_secs(1);

/// How long a client that does not read may take to be closed: first the
/// kernel's buffers for its socket fill with pongs (megabytes on loopback:
/// the gateway's send buffer grows to `tcp_wmem`'s maximum), which takes
/// seconds of pinging on a busy machine, then the bound or the heartbeat
/// closes it within a fraction of a second.
const CLOSED_WITHIN: Duration = Duration::from_secs(30);

/// Ping frames with the largest control payload (125 bytes), many per
/// write, so that the client sends as fast as the socket takes them.
fn pings(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|_| flood::frame(0x9, &[b'p'; 125]))
        .collect()
}

/// A gateway on an ephemeral port with its data in `data` and `flags`.
async fn gateway_with(data: &tempfile::TempDir, flags: &[&str]) -> (Process, SocketAddr) {
    let data_dir = data.path().display().to_string();
    let mut args = vec!["--bind", "127.0.0.1:0", "--data-dir", &data_dir];
    args.extend_from_slice(flags);
    let mut gateway = Process::spawn(command(&args));
    let addr = gateway.listening().await;
    (gateway, addr)
}

/// Asks `/healthz`; returns how long the answer took.
async fn healthz(http: &reqwest::Client, addr: SocketAddr) -> Duration {
    let start = Instant::now();
    let response = http
        .get(format!("http://{addr}/healthz"))
        .timeout(PATIENCE)
        .send()
        .await
        .expect("/healthz answers");
    assert_eq!(response.status(), 200);
    start.elapsed()
}

/// Floods `path` with pings for [`FLOOD`] from a client that never reads:
/// the gateway's memory stays within [`MAX_GROWTH`], `/healthz` stays
/// fast, the gateway closes the client with 1008 (it logs it), and the
/// client reads that close (unless its connection ended first).
async fn ping_flood_is_bounded(gateway: &mut Process, addr: SocketAddr, path: &str) {
    let pid = gateway.child.id().expect("running");
    let http = reqwest::Client::new();
    healthz(&http, addr).await;
    let before = rss(pid);

    let mut flooder = Flood::connect(addr, path).await;
    flooder.flood(Vec::new(), pings(64), Duration::ZERO);
    let start = Instant::now();
    let (mut slowest, mut peak) = (Duration::ZERO, 0);
    while start.elapsed() < FLOOD {
        let grown = rss(pid).saturating_sub(before);
        peak = peak.max(grown);
        assert!(
            grown < MAX_GROWTH,
            "{path}: the gateway grew by {} MB in {:?} of pings",
            grown >> 20,
            start.elapsed()
        );
        slowest = slowest.max(healthz(&http, addr).await);
        assert!(slowest < HEALTHY, "{path}: /healthz took {slowest:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    closed_too_slow(gateway, &mut flooder, path).await;
    let grown = rss(pid).saturating_sub(before);
    assert!(grown < MAX_GROWTH, "{path}: {} MB kept", grown >> 20);
    eprintln!(
        "{path}: grew by {} KiB at most, {} KiB kept; /healthz took {slowest:?} at most",
        peak >> 10,
        grown >> 10
    );
}

/// The gateway closes `client` (on `path`) for not reading: it logs the
/// 1008 ("too slow"), and the client reads that close unless its
/// connection ended first.
async fn closed_too_slow(gateway: &mut Process, client: &mut Flood, path: &str) {
    gateway
        .wait_for_line(
            &["closing connection", "code=1008", "too slow"],
            CLOSED_WITHIN,
        )
        .await;
    client.stop();
    if let Some((code, reason)) = client.close_or_end(PATIENCE).await {
        assert_eq!(code, 1008, "{path}: {reason}");
        assert!(reason.contains("too slow"), "{path}: {reason}");
    }
}

#[tokio::test]
async fn a_ping_flood_from_a_client_that_never_reads_is_bounded_on_every_path() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut gateway = serve("127.0.0.1:0", &data.path().display().to_string());
    let addr = gateway.listening().await;
    for path in PATHS {
        ping_flood_is_bounded(&mut gateway, addr, path).await;
    }
}

/// A client on `path` that sends `first`, then pings every millisecond,
/// and never reads, with a small receive buffer: once the gateway's frames
/// to it are stuck, its pings no longer keep it alive and the heartbeat
/// closes it (the gateway logs `closed`); its close frame is then the one
/// after the pongs it did not read, with a code in `codes`.
async fn closed_while_pinging(
    gateway: &mut Process,
    addr: SocketAddr,
    path: &str,
    first: Vec<u8>,
    closed: &[&str],
    code: u16,
) {
    let mut client = Flood::connect_with_recv_buffer(addr, path, 4096).await;
    client.flood(first, pings(64), Duration::from_millis(1));
    gateway.wait_for_line(closed, CLOSED_WITHIN).await;
    client.stop();
    let (got, reason) = client
        .close_or_end(PATIENCE)
        .await
        .unwrap_or_else(|| panic!("{path}: no close frame"));
    assert_eq!(got, code, "{path}: {reason}");
}

#[tokio::test]
async fn a_client_that_pings_but_never_reads_is_not_kept_alive_by_its_pings() {
    let data = tempfile::tempdir().expect("temp dir");
    let (mut gateway, addr) = gateway_with(
        &data,
        &[
            "--heartbeat-interval-ms",
            "100",
            "--heartbeat-timeout-ms",
            "400",
            // The heartbeat, not the identify timeout or the queue's bound,
            // must be what closes these clients.
            "--identify-timeout-ms",
            "60000",
            "--max-outgoing-queue",
            "1000000",
        ],
    )
    .await;
    let identify = json!({"type": "IDENTIFY", "name": "pinger", "version": "0.2.0"});
    let identify = flood::text(&identify.to_string());
    let closed = ["closing connection", "code=4009", "no frame or pong"];
    closed_while_pinging(&mut gateway, addr, "/ws", identify, &closed, 4009).await;
    let closed = ["Nest host silent: closing"];
    closed_while_pinging(&mut gateway, addr, "/nest", Vec::new(), &closed, 4009).await;
    // Socket.IO's heartbeat closes with 1001 ("no pong").
    let sio = "/socket.io/?EIO=4&transport=websocket";
    let closed = ["Socket.IO session closed", "no pong"];
    closed_while_pinging(&mut gateway, addr, sio, Vec::new(), &closed, 1001).await;
}

/// An adapter's own frames count against the same bound: a Socket.IO
/// client that sends Engine.IO pings (text packets `2…`, each answered
/// with a pong `3…`) and never reads is closed with 1008 once its pongs
/// fill the queue; they were dropped in silence and the client, whose text
/// frames count as signs of life, was kept forever.
#[tokio::test]
async fn an_adapters_own_replies_to_a_client_that_never_reads_are_bounded() {
    let data = tempfile::tempdir().expect("temp dir");
    let (mut gateway, addr) = gateway_with(&data, &["--max-outgoing-queue", "16"]).await;
    let sio = "/socket.io/?EIO=4&transport=websocket";
    let mut client = Flood::connect_with_recv_buffer(addr, sio, 4096).await;
    let ping = flood::text(&format!("2{}", "p".repeat(100)));
    client.flood(Vec::new(), ping.repeat(64), Duration::ZERO);
    closed_too_slow(&mut gateway, &mut client, sio).await;
}
