//! The network namespace harness (tests/common/netns.rs) on its own: a real
//! WireGuard tunnel between two namespaces through userspace boringtun
//! interfaces, and a TCP listener in one namespace reached from the other
//! over their veth pair, as an agent will reach a gateway. Needs root;
//! `scripts/test` installs boringtun-cli, wg, ip and ping.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::netns::{unique_ifname, Keypair, NetNs, WgDevice};

/// The WireGuard port in each namespace (each has its own port space).
const WG_PORT: u16 = 51820;

/// Pings `addr` from `ns`, a few times if need be: the first packet only
/// starts the handshake, which boringtun may finish after ping has given up.
fn ping(ns: &NetNs, addr: &str) {
    let mut last = String::new();
    for _ in 0..5 {
        let out = ns
            .std_command("ping")
            .args(["-c", "1", "-W", "2", addr])
            .output()
            .expect("ping runs");
        if out.status.success() {
            return;
        }
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    panic!("no answer from {addr} in {}:\n{last}", ns.name);
}

#[test]
fn wireguard_tunnel_between_namespaces() {
    let pair = NetNs::pair("wg");
    let a = WgDevice::start(&pair.a, &unique_ifname("wga"));
    let b = WgDevice::start(&pair.b, &unique_ifname("wgb"));
    let (key_a, key_b) = (Keypair::generate(), Keypair::generate());
    // Tunnel addresses, like the veth's, are private to each namespace.
    let (tun_a, tun_b) = ("10.251.0.1", "10.251.0.2");

    for (dev, key, peer, peer_tun, peer_veth, own_tun) in [
        (&a, &key_a, &key_b, tun_b, pair.b_addr, tun_a),
        (&b, &key_b, &key_a, tun_a, pair.a_addr, tun_b),
    ] {
        dev.set_key(&key.private, WG_PORT);
        dev.set(&[
            "peer",
            &peer.public,
            "allowed-ips",
            &format!("{peer_tun}/32"),
            "endpoint",
            &format!("{peer_veth}:{WG_PORT}"),
        ]);
        dev.add_addr(&format!("{own_tun}/24"));
        dev.up();
    }

    ping(&pair.a, tun_b);
    ping(&pair.b, tun_a);

    for (dev, peer) in [(&a, &key_b), (&b, &key_a)] {
        let dump = dev.dump();
        assert_eq!(dump.len(), 2, "one interface line, one peer: {dump:?}");
        let line = &dump[1];
        assert_eq!(line[0], peer.public, "{dump:?}");
        let [rx, tx]: [u64; 2] = [5, 6].map(|i| line[i].parse().expect("a byte count"));
        assert!(rx > 0 && tx > 0, "{} moved no bytes: {dump:?}", dev.name);

        let peers = dev.peers();
        assert_eq!(peers.len(), 1, "{peers:?}");
        let since = peers[0]
            .since_handshake
            .unwrap_or_else(|| panic!("{}: no handshake: {peers:?}\n{}", dev.name, dev.log()));
        assert!(since < Duration::from_secs(60), "{peers:?}");
        assert!(peers[0].rx_bytes > 0 && peers[0].tx_bytes > 0, "{peers:?}");
    }
}

#[tokio::test]
async fn tcp_listener_reachable_across_the_veth_pair() {
    let pair = NetNs::pair("tcp");
    let port = 8080;
    let _server = pair
        .a
        .command("python3")
        .args(["-m", "http.server", "--bind", &pair.a_addr.to_string()])
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 starts");
    let addr = SocketAddr::from((pair.a_addr, port));

    // The client socket is made in b, so it can only go over the veth.
    let response = pair.b.enter(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut stream = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() > deadline => panic!("{addr} from b: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let local = stream.local_addr().unwrap();
        assert_eq!(local.ip(), pair.b_addr, "the client is b's veth end");
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    });
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
}
