//! Seed 002's pages in a real browser: Altoponix pages (a device and a
//! client, tests/clients/altoponix_pages/, which speak as the seed's
//! testing/ws_device.html and ws_client.html do) served from another
//! origin than the gateway's, with socket.io.js 4.x (from PyPI, see
//! `scripts/test`) connecting as it does by default: Engine.IO
//! long-polling first, through CORS, then the upgrade to a WebSocket.
//! Driven in Debian's Chromium by Selenium
//! (tests/clients/altoponix_browser.py).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::TestServer;
use serde_json::{json, Value};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/altoponix_browser.py"
);

/// The socket.io.js client `scripts/test` takes out of a PyPI wheel (or
/// the one `SOCKET_IO_JS` names), and the browser; this test fails saying
/// what is missing.
fn socket_io_js() -> PathBuf {
    let path = std::env::var_os("SOCKET_IO_JS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/socket.io/socket.io.min.js"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} is missing: scripts/test takes socket.io.js 4.x out of a PyPI wheel",
        path.display()
    );
    common::require_browser();
    path
}

/// A free port on 127.0.0.1 for the pages' server (their origin must be
/// known to the gateway before it starts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test]
async fn the_altoponix_pages_command_a_device_through_polling_first() {
    let js = socket_io_js();
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let server = TestServer::with(|s| s.allowed_origins = origin.clone());
    let gateway = format!("http://{}/", server.addr);
    let run = tokio::process::Command::new("python3")
        .arg(SCRIPT)
        .args(["ours", &gateway, &port.to_string()])
        .arg(&js)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser run ends within 120 s")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = stdout
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no summary from the browser run:\n{stdout}"));
    assert_eq!(summary["ok"], true, "{summary}");
    // Both pages started with long-polling; the device moved to a
    // WebSocket (the client may still be moving when it is read).
    assert_eq!(
        summary["device_transports"],
        json!(["polling", "websocket"]),
        "{summary}"
    );
    assert_eq!(summary["client_transports"][0], "polling", "{summary}");
}
