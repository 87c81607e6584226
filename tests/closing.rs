//! Every close the gateway decides on reaches a client that keeps sending.
//!
//! The client here never stops writing (see `common::flood`): when the
//! gateway closes it, frames the client sent are still arriving. Closing the
//! socket with them unread would reset the connection and destroy the close
//! frame in the client's receive buffer; the gateway reads and drops them
//! until the client answers or closes (the lingering close), so the client
//! reads the close frame, its code and its reason, and its writes still
//! succeed after it has.

mod common;

use std::time::Duration;

use common::flood::{self, Flood};
use common::process::{command, Process};
use common::redis::RedisServer;
use common::{TestServer, PATIENCE};
use serde_json::json;

const EVERY_MS: Duration = Duration::from_millis(1);

fn identify(name: &str) -> Vec<u8> {
    flood::text(&json!({"type": "IDENTIFY", "name": name, "version": "0.2.0"}).to_string())
}

fn self_fetch() -> Vec<u8> {
    flood::text(r#"{"type":"SELF_FETCH"}"#)
}

/// Reads to the close frame, checks its code and that the reason says
/// `reason_has` (words of the reason the gateway gives for that close: every
/// close carries one, PROTOCOL.md 3), and that the client is still sending
/// once it has read it.
async fn closed_while_sending(client: &mut Flood, code: u16, reason_has: &str) {
    assert!(!reason_has.is_empty(), "a test must name the words to find");
    let (got, reason) = client.expect_close().await;
    assert_eq!(got, code, "close reason: {reason}");
    assert!(
        reason.contains(reason_has),
        "close {code}: {reason:?} does not say {reason_has:?}"
    );
    assert!(
        client.still_sending().await,
        "the client's writes failed right after the close frame: the connection was reset"
    );
}

/// A client sending `first` and then SELF_FETCH every millisecond.
async fn flooding(server: &TestServer, first: Vec<u8>) -> Flood {
    let mut client = Flood::connect(server.addr, "/ws").await;
    client.flood(first, self_fetch(), EVERY_MS);
    client
}

/// A frame over `max_frame_size`, with frames behind it: 1009, "frame exceeds
/// 65536 bytes" (PROTOCOL.md 2.3, 3), read by the client that keeps sending.
#[tokio::test]
async fn an_oversized_frame_then_more_frames_get_1009_with_its_reason() {
    let server = TestServer::start();
    let mut client = Flood::connect(server.addr, "/ws").await;
    client.send(&identify("big")).await;
    let mut oversized = flood::text(&"x".repeat(70_000));
    oversized.extend(self_fetch());
    client.flood(oversized, self_fetch(), Duration::ZERO);
    closed_while_sending(&mut client, 1009, "frame exceeds 65536 bytes").await;
}

/// A first frame that is not a payload: 4002 with its reason, read by a
/// client that keeps sending.
#[tokio::test]
async fn an_undecodable_first_frame_then_more_get_4002() {
    let server = TestServer::start();
    let mut client = flooding(&server, flood::text("not json")).await;
    closed_while_sending(&mut client, 4002, "cannot decode IDENTIFY").await;
}

/// A request before IDENTIFY: 4003, saying IDENTIFY must come first, read
/// by a client that keeps sending.
#[tokio::test]
async fn a_request_before_identify_then_more_get_4003() {
    let server = TestServer::start();
    let mut client = flooding(&server, self_fetch()).await;
    closed_while_sending(&mut client, 4003, "IDENTIFY").await;
}

/// A client that only pings is still closed 4004 at the identify timeout,
/// with the timeout in the reason, and reads it while it keeps pinging.
#[tokio::test]
async fn pings_without_identify_get_4004_at_the_identify_timeout() {
    let server = TestServer::with(|s| s.identify_timeout_ms = 300);
    let mut client = Flood::connect(server.addr, "/ws").await;
    // Pings are frames, but not IDENTIFY: the timeout still runs.
    client.flood(Vec::new(), flood::frame(0x9, b"hi"), EVERY_MS);
    closed_while_sending(&mut client, 4004, "no IDENTIFY within 300 ms").await;
}

/// A taken name: 4005 naming it, read by a client that keeps sending.
#[tokio::test]
async fn a_taken_name_then_more_frames_get_4005() {
    let server = TestServer::start();
    let _holder = server.client("taken").await;
    let mut client = flooding(&server, identify("taken")).await;
    closed_while_sending(&mut client, 4005, "taken").await;
}

/// A wrong secret: 4006 saying so, read by a client that keeps sending.
#[tokio::test]
async fn a_wrong_secret_then_more_frames_get_4006() {
    let server = TestServer::with(|s| s.secret = "right".into());
    let first = json!({"type": "IDENTIFY", "name": "s", "version": "0.2.0", "secret": "wrong"});
    let mut client = flooding(&server, flood::text(&first.to_string())).await;
    closed_while_sending(&mut client, 4006, "the secret does not match").await;
}

/// An unsupported version: 4007 naming it, read by a client that keeps
/// sending.
#[tokio::test]
async fn a_bad_version_then_more_frames_get_4007() {
    let server = TestServer::start();
    let first = json!({"type": "IDENTIFY", "name": "v", "version": "9.0.0"});
    let mut client = flooding(&server, flood::text(&first.to_string())).await;
    closed_while_sending(&mut client, 4007, "9.0.0 is not supported").await;
}

/// A bad name: 4008 saying what a name may be, read by a client that keeps
/// sending.
#[tokio::test]
async fn a_bad_name_then_more_frames_get_4008() {
    let server = TestServer::start();
    let mut client = flooding(&server, identify("has space")).await;
    closed_while_sending(&mut client, 4008, "must be letters, digits and underscores").await;
}

/// Bytes that never complete a frame are no sign of life: 4009 at the
/// heartbeat timeout, read by the client still trickling.
#[tokio::test]
async fn a_frame_trickling_in_slower_than_the_heartbeat_gets_4009() {
    let server = TestServer::with(|s| {
        s.heartbeat_interval_ms = 100;
        s.heartbeat_timeout_ms = 400;
    });
    let mut client = Flood::connect(server.addr, "/ws").await;
    client.send(&identify("trickle")).await;
    // One frame of 60,000 bytes, a byte every millisecond: bytes keep
    // arriving, but no frame completes within the heartbeat timeout.
    client.flood(flood::text_header(60_000), b"x".to_vec(), EVERY_MS);
    closed_while_sending(&mut client, 4009, "no frame or pong").await;
}

/// A client that sends requests and never reads their replies is evicted
/// with 1008 once `max_outgoing_queue` frames wait for it (PROTOCOL.md 3),
/// and still reads the close frame when it finally reads.
#[tokio::test]
async fn a_client_that_floods_requests_and_does_not_read_gets_1008() {
    let server = TestServer::with(|s| s.max_outgoing_queue = 8);
    let mut client = Flood::connect_with_recv_buffer(server.addr, "/ws", 4096).await;
    client.send(&identify("greedy")).await;
    client.flood(Vec::new(), self_fetch(), Duration::ZERO);
    // Not reading: the replies fill the socket, then the queue. Once the
    // gateway counts the 1008 close, reading can no longer undo it.
    closes_counted(&server, 1008).await;
    // "too slow: more than 8 frames waiting to be sent" (or, should the
    // requests back up first, "too fast: more than 8 requests waiting").
    closed_while_sending(&mut client, 1008, "more than 8").await;
}

/// Waits (up to `PATIENCE`) until the gateway's `/metrics` count a session
/// closed with `code` (this test's own gateway: nextest runs every test in
/// a process of its own, and the metrics are the process's).
async fn closes_counted(server: &TestServer, code: u16) {
    let sample = format!("concierge_sessions_closed_total{{code=\"{code}\"}} ");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let metrics = reqwest::get(server.http_url("/metrics"))
            .await
            .expect("/metrics answers")
            .text()
            .await
            .expect("a body");
        let counted = metrics
            .lines()
            .filter_map(|line| line.strip_prefix(&sample))
            .any(|n| n.parse::<f64>().is_ok_and(|n| n >= 1.0));
        if counted {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no close {code} counted within {PATIENCE:?}:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gateway process with `extra` arguments, a client flooding it, then
/// SIGTERM: the client reads `code`, with a reason saying `reason_has`,
/// while it is still sending.
async fn stopped_while_flooded(extra: &[&str], code: u16, reason_has: &str) {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    let mut args = vec!["--bind", "127.0.0.1:0", "--data-dir", &data_dir];
    args.extend_from_slice(&["--workers", "1", "--shutdown-timeout-secs", "5"]);
    args.extend_from_slice(extra);
    let mut gateway = Process::spawn(command(&args));
    let addr = gateway.listening().await;

    let mut client = Flood::connect(addr, "/ws").await;
    client.send(&identify("busy")).await;
    let (op, hello) = client.next_frame().await;
    assert_eq!(op, 0x1);
    assert!(String::from_utf8_lossy(&hello).contains("HELLO"));
    client.flood(Vec::new(), self_fetch(), EVERY_MS);
    tokio::time::sleep(Duration::from_millis(200)).await;

    gateway.signal("TERM");
    closed_while_sending(&mut client, code, reason_has).await;
    drop(client);
    let status = gateway.exit(Duration::from_secs(15)).await;
    assert!(status.success(), "exit {status}:\n{}", gateway.log());
}

/// SIGTERM closes a client with 1001 and the documented reason, read while
/// the client keeps sending.
#[tokio::test]
async fn a_gateway_stopping_alone_sends_1001_to_a_client_that_keeps_sending() {
    // The reason PROTOCOL.md 3 gives.
    stopped_while_flooded(&[], 1001, "the gateway is shutting down").await;
}

/// SIGTERM of a replica in a cluster closes a client with 1012, telling it
/// to reconnect to another replica, read while the client keeps sending.
#[tokio::test]
async fn a_replica_stopping_sends_1012_to_a_client_that_keeps_sending() {
    let redis = RedisServer::start();
    let url = redis.url();
    stopped_while_flooded(&["--redis-url", &url], 1012, "reconnect to another").await;
}

/// An adapter's refusal goes through the same lingering close: a Nest host
/// whose first frame is not let_me_in_pls reads 1008 and the why.
#[tokio::test]
async fn an_adapter_closes_a_client_that_keeps_sending_with_its_reason() {
    // A Nest host whose first frame is not let_me_in_pls: the adapter's
    // error frame and close go through the same lingering close.
    let server = TestServer::start();
    let mut client = Flood::connect(server.addr, "/nest").await;
    client.flood(
        flood::text(r#"{"status":"info","message":"hello","payload":{}}"#),
        flood::text(r#"{"status":"info","message":"more","payload":{}}"#),
        EVERY_MS,
    );
    // PROTOCOL.md 15: an error frame, then 1008 with the same why.
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 1008, "{reason}");
    assert_eq!(reason, "the first message must be let_me_in_pls");
    assert!(client.still_sending().await, "reset under the close frame");
}

/// A client that neither answers the gateway's close frame nor closes its
/// end is cut off when `close_linger_ms` ends (PROTOCOL.md 3, "How a close
/// ends"; SECURITY.md's limits): not before (it may still answer, and what
/// it sends meanwhile is read so the close frame is not reset away), and
/// not never (a client could otherwise hold its socket forever).
#[tokio::test]
async fn a_client_that_never_answers_the_close_is_cut_off_when_the_linger_ends() {
    const LINGER: Duration = Duration::from_millis(1_000);
    let server = TestServer::with(|s| s.close_linger_ms = LINGER.as_millis() as u64);
    // Pings, never a close frame. Its writes are what shows the cut-off: the
    // gateway's FIN came right behind its close frame, and once the gateway
    // has closed its socket the kernel answers the next segment with a reset.
    let mut client = Flood::connect(server.addr, "/ws").await;
    let ping = flood::frame(0x9, b"still here");
    client.flood(flood::text("not json"), ping, Duration::from_millis(10));
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 4002, "{reason}");
    let closed = std::time::Instant::now();
    let cut = client
        .writes_fail_within(LINGER + Duration::from_secs(2))
        .await
        .unwrap_or_else(|| panic!("still connected {LINGER:?} + 2 s after the close frame"));
    let after = cut - closed;
    // The linger started as the close frame left, a moment before it was read.
    assert!(
        after >= LINGER * 3 / 4,
        "cut off {after:?} after the close frame, before the linger of {LINGER:?} ended"
    );
}

/// A client that answers the gateway's close frame with its own is let go
/// at once (PROTOCOL.md 3: what the client sends is read "until the
/// client's own close frame"; RFC 6455 §7.1.1: the server closes the TCP
/// connection after the closing handshake), not held until
/// `close_linger_ms` ends.
#[tokio::test]
async fn a_client_that_answers_the_close_is_let_go_at_once() {
    const LINGER: Duration = Duration::from_millis(3_000);
    let server = TestServer::with(|s| s.close_linger_ms = LINGER.as_millis() as u64);
    let mut client = Flood::connect(server.addr, "/ws").await;
    client.send(&flood::text("not json")).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 4002, "{reason}");
    // The answer (the code echoed), then pings whose writes show when the
    // gateway has closed its socket: the kernel answers them with a reset.
    let answer = flood::frame(0x8, &code.to_be_bytes());
    client.flood(
        answer,
        flood::frame(0x9, b"probe"),
        Duration::from_millis(10),
    );
    assert!(
        client.writes_fail_within(LINGER / 2).await.is_some(),
        "the closing handshake is over, but the connection is still open {:?} later",
        LINGER / 2
    );
}
