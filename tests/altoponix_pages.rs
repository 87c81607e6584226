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
use std::time::Duration;

use common::TestServer;
use serde_json::json;

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

#[tokio::test]
async fn the_altoponix_pages_command_a_device_through_polling_first() {
    let js = socket_io_js();
    let port = common::free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let server = TestServer::with(|s| s.allowed_origins = origin.clone());
    let gateway = format!("http://{}/", server.addr);
    let summary = common::browse(
        SCRIPT,
        &[
            "ours",
            &gateway,
            &port.to_string(),
            js.to_str().expect("utf-8"),
        ],
        Duration::from_secs(120),
        String::new,
    )
    .await;
    // Both pages started with long-polling; the device moved to a
    // WebSocket (the client may still be moving when it is read).
    assert_eq!(
        summary["device_transports"],
        json!(["polling", "websocket"]),
        "{summary}"
    );
    assert_eq!(summary["client_transports"][0], "polling", "{summary}");
}
