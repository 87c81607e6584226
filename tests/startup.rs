//! The gateway's start-up log, read from a real gateway process: where to
//! reach it (WebSocket, console, metrics), one warning while anybody may
//! connect and none once an account exists, and a lasting condition (a
//! VPN interface that is not there) logged once, not at every sync.

mod common;

use std::time::Duration;

use common::process::{add_user, serve, serve_with};

#[tokio::test]
async fn the_start_up_log_names_the_endpoints_and_warns_once_of_an_open_gateway() {
    let data = tempfile::tempdir().expect("data");
    let data_dir = data.path().to_str().expect("utf-8").to_owned();
    let mut open = serve("127.0.0.1:0", &data_dir);
    let addr = open.listening().await;
    open.wait_for_line(
        &[&format!("console: http://{addr}/console/")],
        Duration::from_secs(5),
    )
    .await;
    open.wait_for_line(
        &[&format!("metrics: http://{addr}/metrics")],
        Duration::from_secs(5),
    )
    .await;
    open.wait_for_line(
        &[
            "WARN",
            "open gateway: no token is required",
            "concierge user add",
        ],
        Duration::from_secs(5),
    )
    .await;
    open.signal("TERM");
    open.exit(Duration::from_secs(10)).await;
    assert_eq!(
        open.log().matches("open gateway").count(),
        1,
        "{}",
        open.log()
    );

    // With an account, tokens are required: no warning.
    add_user(
        &["--data-dir", &data_dir],
        "ada",
        "admin",
        "correct horse battery",
    )
    .await;
    let mut closed = serve("127.0.0.1:0", &data_dir);
    closed.listening().await;
    closed
        .wait_for_line(&["metrics: http://"], Duration::from_secs(5))
        .await;
    closed.signal("TERM");
    closed.exit(Duration::from_secs(10)).await;
    assert!(!closed.log().contains("open gateway"), "{}", closed.log());
}

#[tokio::test]
async fn a_missing_vpn_interface_is_logged_once() {
    let data = tempfile::tempdir().expect("data");
    let data_dir = data.path().to_str().expect("utf-8").to_owned();
    let mut gateway = serve_with(
        "127.0.0.1:0",
        &data_dir,
        &[
            "--vpn-endpoint",
            "vpn.test",
            "--vpn-interface",
            "wgnothere0",
        ],
    );
    gateway.listening().await;
    gateway
        .wait_for_line(&["VPN interface not managed"], Duration::from_secs(5))
        .await;
    // The interface is looked at every second: several times over.
    tokio::time::sleep(Duration::from_secs(4)).await;
    gateway.signal("TERM");
    gateway.exit(Duration::from_secs(10)).await;
    assert_eq!(
        gateway.log().matches("VPN interface not managed").count(),
        1,
        "{}",
        gateway.log()
    );
}
