//! The VPN actor for real: a gateway in one network namespace managing a
//! userspace WireGuard interface (boringtun), `concierge agent --vpn` in
//! another fetching its config through the protocol and bringing its own
//! tunnel up; a ping crosses it, the gateway's status shows the handshake
//! and bytes, the agent's telemetry shows `vpn_status`. Needs root;
//! `scripts/test` installs boringtun-cli, wg and ip.

mod common;

use std::time::{Duration, Instant};

use common::netns::{require, unique_ifname, NetNs, WgDevice};
use common::process::Process;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_concierge");

async fn issue(data: &std::path::Path, name: &str, role: &str) -> String {
    let out = common::process::command(&[
        "token",
        "issue",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--name",
        name,
        "--role",
        role,
    ])
    .output()
    .await
    .expect("token issue runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// `concierge ctl --json ...` inside `ns`: exit code and the last JSON line.
async fn ctl(ns: &NetNs, url: &str, token: &str, args: &[&str]) -> (i32, Value) {
    let out = ns
        .command(BIN)
        .args(["ctl", "--url", url, "--token", token, "--json"])
        .args(args)
        .env("HOME", "/nonexistent")
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()
        .await
        .expect("ctl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "ctl {args:?}: no JSON ({e}): {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), value)
}

fn ping(ns: &NetNs, addr: &str) -> bool {
    (0..5).any(|_| {
        ns.std_command("ping")
            .args(["-c", "1", "-W", "2", addr])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[tokio::test]
async fn an_agent_gets_a_working_tunnel_and_the_gateway_sees_it() {
    for tool in ["ip", "wg", "boringtun-cli", "ping"] {
        require(tool);
    }
    let pair = NetNs::pair("vpn");
    let server_if = unique_ifname("vs");
    let server = WgDevice::start(&pair.a, &server_if);
    server.add_addr("10.8.0.1/24");
    server.up();

    let data = tempfile::tempdir().expect("data");
    let mut gateway = pair.a.command(BIN);
    gateway
        .args(["serve", "--bind", &format!("{}:0", pair.a_addr)])
        .args(["--data-dir", data.path().to_str().expect("utf-8")])
        .args(["--vpn-endpoint", &pair.a_addr.to_string()])
        .args(["--vpn-interface", &server_if, "--vpn-backend", "userspace"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut gateway = Process::spawn(gateway);
    let addr = gateway.listening().await;
    let url = format!("ws://{addr}/ws");
    let host = issue(data.path(), "host1", "agent").await;
    let admin = issue(data.path(), "root", "admin").await;

    let work = tempfile::tempdir().expect("work");
    let client_if = unique_ifname("vc");
    let config = work.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "url = {url:?}\ntoken = {host:?}\nname = \"host1\"\nwork_dir = {:?}\nsystemd = \"off\"\n\
             telemetry_interval_ms = 300\nvpn = true\nvpn_interface = {client_if:?}\nvpn_userspace = \"boringtun-cli\"\n",
            work.path().display().to_string()
        ),
    )
    .expect("config");
    let mut agent = pair.b.command(BIN);
    agent
        .args(["agent", "--config", config.to_str().expect("utf-8")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut agent = Process::spawn(agent);
    agent
        .wait_for_line(&["VPN tunnel up"], Duration::from_secs(20))
        .await;

    // The private key stayed on the host, readable by its user only.
    let key_file = work.path().join("vpn.key");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_file)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    assert!(
        ping(&pair.b, "10.8.0.1"),
        "no ping across the tunnel:\n{}\n{}",
        agent.log(),
        server.log()
    );

    // The gateway's view: the peer, its handshake and bytes.
    let deadline = Instant::now() + Duration::from_secs(10);
    let peer = loop {
        let (code, status) = ctl(&pair.a, &url, &admin, &["vpn", "peers"]).await;
        assert_eq!(code, 0, "{status}");
        let peer = status["peers"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "host1"))
            .cloned();
        if let Some(peer) = peer.filter(|p| {
            p["latest_handshake"].as_u64() > Some(0) && p["rx_bytes"].as_u64() > Some(0)
        }) {
            break peer;
        }
        assert!(
            Instant::now() < deadline,
            "no handshake in the gateway's status: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (
            peer["active"].as_bool(),
            peer["valid"].as_bool(),
            peer["ipv4"].as_str()
        ),
        (Some(true), Some(true), Some("10.8.0.2")),
        "{peer}"
    );
    assert!(peer["tx_bytes"].as_u64() > Some(0), "{peer}");
    assert!(
        peer["endpoint"]
            .as_str()
            .is_some_and(|e| e.starts_with(&pair.b_addr.to_string())),
        "{peer}"
    );
    let (_, status) = ctl(&pair.a, &url, &admin, &["vpn", "peers"]).await;
    assert!(status["problem"].is_null(), "{status}");

    // The agent's telemetry.
    let (code, telemetry) = ctl(&pair.a, &url, &admin, &["top", "host1", "--once"]).await;
    assert_eq!(code, 0, "{telemetry}");
    let vpn = &telemetry["tele_data"]["vpn_status"];
    assert_eq!(vpn["ifname"], client_if.as_str(), "{vpn}");
    assert_eq!(
        (
            vpn["conn_type"].as_str(),
            vpn["conn_ip4"].as_str(),
            vpn["up"].as_bool()
        ),
        (Some("wireguard"), Some("10.8.0.2"), Some(true)),
        "{vpn}"
    );
    assert_eq!(vpn["conn_host"], pair.a_addr.to_string().as_str(), "{vpn}");
    assert_eq!(vpn["conn_ip6"], "fd00:8::2", "{vpn}");

    // A second peer, then revoked: gone from the live interface, the first untouched.
    let key2 = common::netns::Keypair::generate();
    let (code, conf) = ctl(
        &pair.a,
        &url,
        &admin,
        &["vpn", "conf", "host2", "--public-key", &key2.public],
    )
    .await;
    assert_eq!(code, 0, "{conf}");
    assert!(
        conf["conf_data"]
            .as_str()
            .is_some_and(|c| c.contains("Address = 10.8.0.3/32")),
        "{conf}"
    );
    let on_interface = |key: &str| {
        server
            .wg(&["show", &server_if, "peers"])
            .lines()
            .any(|l| l.trim() == key)
    };
    let until = Instant::now() + Duration::from_secs(3);
    while !on_interface(&key2.public) {
        assert!(Instant::now() < until, "host2 never reached the interface");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, done) = ctl(&pair.a, &url, &admin, &["vpn", "revoke", "host2"]).await;
    assert_eq!(code, 0, "{done}");
    let until = Instant::now() + Duration::from_secs(3);
    while on_interface(&key2.public) {
        assert!(
            Instant::now() < until,
            "host2 still on the interface after its revoke"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ping(&pair.b, "10.8.0.1"),
        "host1's tunnel survives another peer's removal"
    );
    let peers = server.wg(&["show", &server_if, "peers"]);
    assert_eq!(peers.lines().count(), 1, "{peers}");

    // Re-fetching (as the agent does on every connection) keeps the address.
    let private = std::fs::read_to_string(&key_file).expect("key");
    let mut pubkey = std::process::Command::new("wg")
        .arg("pubkey")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wg pubkey");
    use std::io::Write;
    pubkey
        .stdin
        .take()
        .expect("stdin")
        .write_all(private.as_bytes())
        .expect("key in");
    let public =
        String::from_utf8(pubkey.wait_with_output().expect("wg pubkey").stdout).expect("utf-8");
    let (_, again) = ctl(
        &pair.a,
        &url,
        &host,
        &["vpn", "conf", "--public-key", public.trim()],
    )
    .await;
    assert!(
        again["conf_data"]
            .as_str()
            .is_some_and(|c| c.contains("Address = 10.8.0.2/32, fd00:8::2/128")),
        "{again}"
    );
    assert!(ping(&pair.b, "10.8.0.1"), "the same key, the same tunnel");

    // A revoked host loses its peer.
    let out = common::process::command(&[
        "token",
        "revoke",
        "--data-dir",
        data.path().to_str().expect("utf-8"),
        "--user",
        "host1",
    ])
    .output()
    .await
    .expect("token revoke runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let until = Instant::now() + Duration::from_secs(5);
    while on_interface(public.trim()) {
        assert!(
            Instant::now() < until,
            "a revoked host keeps its peer:\n{}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, status) = ctl(&pair.a, &url, &admin, &["vpn", "peers"]).await;
    let peer = status["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "host1"))
        .cloned()
        .expect("still listed");
    assert_eq!(
        (peer["valid"].as_bool(), peer["active"].as_bool()),
        (Some(false), Some(false)),
        "{peer}"
    );
    drop(agent);
    drop(gateway);
}
