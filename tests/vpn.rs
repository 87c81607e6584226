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

/// `concierge ctl --json ...` inside `ns`: exit code and the last JSON line.
async fn ctl(ns: &NetNs, url: &str, token: &str, args: &[&str]) -> (i32, Value) {
    common::process::last_json(
        common::process::ctl_in(ns, url, token)
            .arg("--json")
            .args(args),
    )
    .await
}

/// `curl` inside `ns` with a bearer token.
async fn ns_http_get(ns: &NetNs, url: &str, token: &str) -> String {
    let out = ns
        .command("curl")
        .args([
            "--silent",
            "--fail",
            "-H",
            &format!("Authorization: Bearer {token}"),
            url,
        ])
        .output()
        .await
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
    let host = common::process::issue_token(
        &["--data-dir", data.path().to_str().expect("utf-8")],
        "host1",
        "agent",
    )
    .await;
    let admin = common::process::issue_token(
        &["--data-dir", data.path().to_str().expect("utf-8")],
        "root",
        "admin",
    )
    .await;

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
    // And /metrics, refreshed every second.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = ns_http_get(&pair.a, &format!("http://{addr}/metrics"), &admin).await;
        let rx = metrics
            .lines()
            .find_map(|l| l.strip_prefix("concierge_vpn_peer_rx_bytes{peer=\"host1\"} "))
            .and_then(|v| v.trim().parse::<u64>().ok());
        if rx > Some(0) && metrics.contains("concierge_vpn_peers_active 1") {
            break;
        }
        assert!(Instant::now() < until, "{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

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
    common::process::revoke_user(
        &["--data-dir", data.path().to_str().expect("utf-8")],
        "host1",
    )
    .await;
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

/// A client of `server` identified with `token` (or none).
async fn client(server: &common::TestServer, name: &str, token: Option<&str>) -> common::Client {
    let mut client = server.connect().await;
    let mut identify = serde_json::json!({"type": "IDENTIFY", "name": name, "version": "0.2.0"});
    if let Some(token) = token {
        identify["token"] = token.into();
    }
    client.identify_with(identify).await;
    client
}

/// Sends a request to the gateway itself and returns its reply's `msg`.
async fn ask(client: &mut common::Client, data: Value) -> Value {
    client
        .send(serde_json::json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "concierge"}, "data": data}))
        .await;
    let reply = client.skip_to("MESSAGE").await;
    assert_eq!(reply["origin"]["name"], "concierge", "{reply}");
    reply["data"]["msg"].clone()
}

fn fetch(name: Option<&str>, public_key: Option<&str>) -> Value {
    let mut msg = serde_json::json!({"conf_type": "wireguard", "tun_mode": "udp"});
    if let Some(name) = name {
        msg["name"] = name.into();
    }
    if let Some(key) = public_key {
        msg["public_key"] = key.into();
    }
    serde_json::json!({"req": "get_vpn_conf", "rid": 1, "msg": msg})
}

fn address_of(msg: &Value) -> String {
    let conf = msg["conf_data"]
        .as_str()
        .unwrap_or_else(|| panic!("no config: {msg}"));
    conf.lines()
        .find_map(|l| l.strip_prefix("Address = "))
        .expect("an Address line")
        .to_owned()
}

#[tokio::test]
async fn fetch_errors_come_in_seed_003_shape() {
    let server = common::TestServer::with(|s| {
        s.vpn_endpoint = "vpn.test".into();
        s.vpn_ipv4_pool = "10.9.0.0/29".into();
        s.vpn_ipv6_pool = String::new();
    });
    let data = server.data.path().to_str().expect("utf-8").to_owned();
    let host = common::process::issue_token(&["--data-dir", &data], "host1", "agent").await;
    let admin = common::process::issue_token(&["--data-dir", &data], "root", "admin").await;
    let viewer = common::process::issue_token(&["--data-dir", &data], "vic", "viewer").await;
    let mut h = client(&server, "host1", Some(&host)).await;

    let ok = ask(&mut h, fetch(None, None)).await;
    assert_eq!(
        (ok["result"].as_str(), ok["conf_type"].as_str()),
        (Some("success"), Some("wireguard")),
        "{ok}"
    );
    let conf = ok["conf_data"].as_str().expect("conf");
    assert!(
        conf.contains("PrivateKey = ") && conf.contains("Endpoint = vpn.test:51820"),
        "{conf}"
    );
    assert!(
        conf.contains("Address = 10.9.0.2/32\n") && conf.contains("AllowedIPs = 10.9.0.0/29"),
        "{conf}"
    );

    for (data, reason) in [
        (
            serde_json::json!({"req": "get_vpn_conf", "rid": 2, "msg": {"conf_type": "openvpn"}}),
            "bad_conf_type",
        ),
        (
            serde_json::json!({"req": "get_vpn_conf", "rid": 3, "msg": {"tun_mode": "tcp"}}),
            "bad_tun_mode",
        ),
        (fetch(None, Some("not a key")), "bad_public_key"),
        (fetch(Some("host2"), None), "forbidden"),
        (
            serde_json::json!({"req": "vpn_peers", "rid": 4}),
            "forbidden",
        ),
        (
            serde_json::json!({"req": "vpn_revoke", "rid": 5, "msg": {"name": "host1"}}),
            "forbidden",
        ),
        (
            serde_json::json!({"req": "nope", "rid": 6}),
            "unknown_request",
        ),
        (serde_json::json!("hello"), "malformed"),
    ] {
        let msg = ask(&mut h, data.clone()).await;
        assert_eq!(
            (msg["result"].as_str(), msg["reason"].as_str()),
            (Some("error"), Some(reason)),
            "{data} -> {msg}"
        );
        assert!(msg["desc"].as_str().is_some_and(|d| !d.is_empty()), "{msg}");
    }
    let mut anonymous = client(&server, "someone", None).await;
    let msg = ask(&mut anonymous, fetch(None, None)).await;
    assert_eq!(msg["reason"], "forbidden", "{msg}");

    // The pool: .1 is the server's, .2 is host1's, .3 to .6 for four more, then none.
    let mut root = client(&server, "root", Some(&admin)).await;
    for (i, expected) in ["10.9.0.3/32", "10.9.0.4/32", "10.9.0.5/32", "10.9.0.6/32"]
        .iter()
        .enumerate()
    {
        let msg = ask(&mut root, fetch(Some(&format!("h{i}")), None)).await;
        assert_eq!(address_of(&msg), *expected);
    }
    let full = ask(&mut root, fetch(Some("h9"), None)).await;
    assert_eq!(full["reason"], "pool_exhausted", "{full}");
    // Revoking frees an address for the next.
    let done = ask(
        &mut root,
        serde_json::json!({"req": "vpn_revoke", "rid": 7, "msg": {"name": "h1"}}),
    )
    .await;
    assert_eq!(done["result"], "success", "{done}");
    let msg = ask(&mut root, fetch(Some("h9"), None)).await;
    assert_eq!(address_of(&msg), "10.9.0.4/32");
    let missing = ask(
        &mut root,
        serde_json::json!({"req": "vpn_revoke", "rid": 8, "msg": {"name": "h1"}}),
    )
    .await;
    assert_eq!(missing["reason"], "not_found", "{missing}");

    // No interface here: configs are issued, and the status says why nothing is managed.
    let status = ask(&mut root, serde_json::json!({"req": "vpn_peers", "rid": 9})).await;
    assert!(
        status["problem"]
            .as_str()
            .is_some_and(|p| p.contains("vpn_interface is not set")),
        "{status}"
    );
    assert_eq!(
        status["peers"].as_array().map(Vec::len),
        Some(5),
        "{status}"
    );
    assert!(status["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .all(|p| p["latest_handshake"] == 0 && p["active"] == false));

    // Over HTTP.
    let http = reqwest::Client::new();
    let resp = http
        .get(server.http_url("/vpn/conf"))
        .bearer_auth(&host)
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);
    let conf = resp.text().await.expect("text");
    assert!(
        conf.contains("Address = 10.9.0.2/32\n"),
        "the same address over HTTP: {conf}"
    );
    // As JSON, for the console: the config and its QR code.
    let resp = http
        .get(server.http_url("/vpn/conf?format=json"))
        .bearer_auth(&host)
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(
        (&body["result"], &body["conf_type"]),
        (
            &serde_json::json!("success"),
            &serde_json::json!("wireguard")
        )
    );
    assert!(
        body["conf_data"]
            .as_str()
            .is_some_and(|c| c.contains("Address = 10.9.0.2/32\n")),
        "{body}"
    );
    let svg = body["qr_svg"].as_str().expect("a QR code");
    assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
    let resp = http
        .get(server.http_url("/vpn/conf?format=png"))
        .bearer_auth(&host)
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["reason"], "bad_argument", "{body}");
    let resp = http
        .get(server.http_url("/vpn/conf"))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 401);
    let resp = http
        .get(server.http_url("/vpn/conf?public_key=xyz"))
        .bearer_auth(&host)
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["reason"], "bad_public_key");
    let resp = http
        .get(server.http_url("/vpn/peers"))
        .bearer_auth(&viewer)
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 403);
    let resp = http
        .get(server.http_url("/vpn/peers"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), 200);
    // The pool's first address is the server's own.
    let status: Value = resp.json().await.expect("JSON");
    assert_eq!(
        status["server_addresses"],
        serde_json::json!(["10.9.0.1"]),
        "{status}"
    );

    // wg-quick takes both kinds of config as they are.
    let dir = tempfile::tempdir().expect("dir");
    let kept_key = common::netns::Keypair::generate();
    let kept = ask(&mut h, fetch(None, Some(&kept_key.public))).await;
    for (file, conf) in [
        ("made0.conf", conf.as_str()),
        ("kept0.conf", kept["conf_data"].as_str().expect("conf")),
    ] {
        let path = dir.path().join(file);
        std::fs::write(&path, conf).expect("written");
        let out = std::process::Command::new("wg-quick")
            .arg("strip")
            .arg(&path)
            .output()
            .expect("wg-quick runs");
        assert!(
            out.status.success(),
            "wg-quick refuses {conf}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stripped = String::from_utf8_lossy(&out.stdout);
        assert!(
            stripped.contains("[Peer]") && stripped.contains("Endpoint = vpn.test:51820"),
            "{stripped}"
        );
    }
    // As a QR code for a phone.
    let (code, qr, _) = common::process::outcome(
        common::process::ctl(&server.ws_url(), &host).args(["vpn", "conf", "--qr"]),
    )
    .await;
    assert!(
        code == 0 && qr.lines().count() > 20 && qr.contains('\u{2580}'),
        "{qr}"
    );

    // The reserved name is the gateway's.
    let mut taker = server.connect().await;
    taker
        .send(serde_json::json!({"type": "IDENTIFY", "name": "concierge", "version": "0.2.0"}))
        .await;
    let (code, reason) = taker.expect_close().await;
    assert_eq!(code, 4008, "{reason}");
}

#[tokio::test]
async fn a_gateway_without_an_endpoint_issues_no_configs() {
    let server = common::TestServer::start();
    let data = server.data.path().to_str().expect("utf-8").to_owned();
    let host = common::process::issue_token(&["--data-dir", &data], "host1", "agent").await;
    let mut h = client(&server, "host1", Some(&host)).await;
    let msg = ask(&mut h, fetch(None, None)).await;
    assert_eq!(msg["reason"], "vpn_disabled", "{msg}");
    // Any role learns it from /vpn/peers, as the console does before it
    // offers a config; an operator's role changes nothing.
    let viewer = common::process::issue_token(&["--data-dir", &data], "vic", "viewer").await;
    for token in [&viewer, &host] {
        let resp = reqwest::Client::new()
            .get(server.http_url("/vpn/peers"))
            .bearer_auth(token)
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), 404);
        let body: Value = resp.json().await.expect("JSON");
        assert_eq!(body["reason"], "vpn_disabled", "{body}");
    }
}

#[tokio::test]
async fn replicas_hand_out_each_address_once_and_keep_a_peers_address() {
    let redis = common::redis::RedisServer::start();
    let url = redis.url();
    let replica = || {
        let url = url.clone();
        common::TestServer::with(move |s| {
            s.redis_url = url;
            s.vpn_endpoint = "vpn.test:51820".into();
        })
    };
    let (a, b) = (replica(), replica());
    let admin = common::process::issue_token(&["--redis-url", &url], "root", "admin").await;
    let (mut on_a, mut on_b) = (
        client(&a, "root_a", Some(&admin)).await,
        client(&b, "root_b", Some(&admin)).await,
    );

    // Ten fetches on each replica at once, for twenty names, and one name on both.
    let mut addresses = Vec::new();
    for round in 0..10 {
        let (x, y) = tokio::join!(
            ask(&mut on_a, fetch(Some(&format!("a{round}")), None)),
            ask(&mut on_b, fetch(Some(&format!("b{round}")), None))
        );
        addresses.push(address_of(&x));
        addresses.push(address_of(&y));
    }
    let (x, y) = tokio::join!(
        ask(&mut on_a, fetch(Some("both"), None)),
        ask(&mut on_b, fetch(Some("both"), None))
    );
    assert_eq!(
        address_of(&x),
        address_of(&y),
        "one name, one address, whichever replica"
    );
    addresses.push(address_of(&x));
    let mut unique = addresses.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        addresses.len(),
        "an address handed out twice: {addresses:?}"
    );
    // A peer keeps its address when it fetches again, on the other replica.
    let again = ask(&mut on_b, fetch(Some("a3"), None)).await;
    assert_eq!(address_of(&again), addresses[6]);
    // And the server key is the same everywhere.
    let key = |msg: &Value| {
        msg["conf_data"].as_str().and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("PublicKey = "))
                .map(str::to_owned)
        })
    };
    assert_eq!(key(&x), key(&y));
}

/// A gateway of this process, on a Redis of its own, managing a userspace
/// WireGuard interface (boringtun, in a namespace of its own) with its
/// periodic resync at 60 s: within the few seconds a test waits, only what
/// the gateway is told (a change of a peer's record, a revocation, an
/// expiry) brings the interface up to date. On Redis a revocation is no
/// change of the peers' records, unlike on the disk store, whose notice of
/// another process's write ("something changed") makes the VPN resync too.
struct Managed {
    server: common::TestServer,
    device: WgDevice,
    _ns: NetNs,
    redis: common::redis::RedisServer,
}

impl Managed {
    fn start() -> Managed {
        for tool in ["ip", "wg", "boringtun-cli"] {
            require(tool);
        }
        let redis = common::redis::RedisServer::start();
        let ns = NetNs::new("vpnsync");
        let device = WgDevice::start(&ns, &unique_ifname("vm"));
        let (url, interface) = (redis.url(), device.name.clone());
        let server = common::TestServer::with(move |s| {
            s.redis_url = url;
            s.vpn_endpoint = "vpn.test".into();
            s.vpn_interface = interface;
            s.vpn_backend = "userspace".into();
            s.vpn_resync_secs = 60;
        });
        Managed {
            server,
            device,
            _ns: ns,
            redis,
        }
    }

    /// A token for `name` (`extra`: more `token issue` flags, e.g. `--ttl`).
    async fn token(&self, name: &str, extra: &[&str]) -> String {
        let url = self.redis.url();
        let mut args = vec!["--redis-url", url.as_str()];
        args.extend_from_slice(extra);
        common::process::issue_token(&args, name, "agent").await
    }

    /// Another replica on the same Redis, managing no interface.
    fn replica(&self) -> common::TestServer {
        let url = self.redis.url();
        common::TestServer::with(move |s| {
            s.redis_url = url;
            s.vpn_endpoint = "vpn.test".into();
        })
    }

    /// Fetches `name`'s config with its `token` and a key of its own, and
    /// returns the key's public half.
    async fn fetch(&self, name: &str, token: &str) -> String {
        fetch_through(&self.server, name, token).await
    }

    /// Whether the peer of `public_key` is on the interface now.
    fn on_interface(&self, public_key: &str) -> bool {
        self.device
            .wg(&["show", &self.device.name, "peers"])
            .lines()
            .any(|l| l.trim() == public_key)
    }

    /// Waits until the peer of `public_key` is (`on`) or is not on the
    /// interface, by `deadline`; panics with `what` if it is not by then.
    async fn until(&self, public_key: &str, on: bool, deadline: Instant, what: &str) {
        while self.on_interface(public_key) != on {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// [`Managed::fetch`] through `server`.
async fn fetch_through(server: &common::TestServer, name: &str, token: &str) -> String {
    let key = common::netns::Keypair::generate();
    let mut host = client(server, name, Some(token)).await;
    let msg = ask(&mut host, fetch(None, Some(&key.public))).await;
    assert_eq!(msg["result"], "success", "{msg}");
    key.public
}

/// README ("A revoked or expired token takes its peer off the interface
/// within a second") and PROTOCOL §14 ("within a second of a change made on
/// any replica"), each by its own trigger, the resync being at 60 s and the
/// store on Redis (see [`Managed`]): revoking a host's token takes its peer
/// off the managed interface by the revocation itself (another host's peer
/// stays), and a config then fetched through another replica reaches the
/// interface by the change of its record. 3 s are allowed for the 1 s
/// promised, for a loaded machine.
#[tokio::test]
async fn a_revoked_token_takes_its_peer_off_the_interface_by_itself() {
    let vpn = Managed::start();
    let other = vpn.replica();
    let mut tokens = Vec::new();
    for host in ["host1", "host2", "host3"] {
        tokens.push(vpn.token(host, &[]).await);
    }
    let (k1, k2) = (
        vpn.fetch("host1", &tokens[0]).await,
        vpn.fetch("host2", &tokens[1]).await,
    );
    let soon = Instant::now() + Duration::from_secs(3);
    vpn.until(&k1, true, soon, "host1 never reached the interface")
        .await;
    vpn.until(&k2, true, soon, "host2 never reached the interface")
        .await;

    common::process::revoke_user(&["--redis-url", &vpn.redis.url()], "host1").await;
    let revoked = Instant::now();
    vpn.until(
        &k1,
        false,
        revoked + Duration::from_secs(3),
        "host1's peer is still on the interface 3 s after its token was revoked",
    )
    .await;
    assert!(vpn.on_interface(&k2), "host2's peer stays");

    // The sync that removed host1 came after every earlier trigger (the
    // fetches, the tokens' issue): only the new record can bring host3.
    let k3 = fetch_through(&other, "host3", &tokens[2]).await;
    vpn.until(
        &k3,
        true,
        Instant::now() + Duration::from_secs(3),
        "host3, fetched through another replica, did not reach the interface within 3 s",
    )
    .await;
}

/// README ("A revoked or expired token takes its peer off the interface
/// within a second") and PROTOCOL §14 ("a peer is on the managed interface
/// while the token it was last fetched with is valid (not expired, ...)"):
/// a host whose token expires loses its peer when it expires, with the
/// resync at 60 s (see [`Managed`]): within 3 s of the expiry (1 s
/// promised; room for a loaded machine). Another host's peer stays.
#[tokio::test]
async fn a_peer_leaves_the_interface_when_its_token_expires() {
    use base64::Engine;
    let vpn = Managed::start();
    let lasting = vpn.token("host2", &[]).await;
    let short = vpn.token("host3", &["--ttl", "4s"]).await;
    let payload = short.split('.').nth(1).expect("a JWT");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("JSON claims");
    let exp = std::time::UNIX_EPOCH + Duration::from_secs(claims["exp"].as_u64().expect("exp"));
    let expiry = Instant::now()
        + exp
            .duration_since(std::time::SystemTime::now())
            .expect("issued for 4 s");
    let (kept, expiring) = (
        vpn.fetch("host2", &lasting).await,
        vpn.fetch("host3", &short).await,
    );
    vpn.until(&kept, true, expiry, "host2 never reached the interface")
        .await;
    vpn.until(
        &expiring,
        true,
        expiry,
        "host3 did not reach the interface before its token expired (a slow machine?)",
    )
    .await;
    vpn.until(
        &expiring,
        false,
        expiry + Duration::from_secs(3),
        "host3's peer is still on the interface 3 s after its token expired",
    )
    .await;
    assert!(vpn.on_interface(&kept), "host2's peer stays");
}
