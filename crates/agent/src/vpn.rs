//! `concierge agent --vpn`: the host's end of the tunnel.
//!
//! The agent keeps a WireGuard key pair of its own (in `vpn_key_file`, mode
//! 0600: the private key never leaves the host), asks the gateway for its
//! config with the public key (`get_vpn_conf` to the gateway's reserved
//! name) on every connection, and brings the interface up as the config
//! says: a kernel interface where the module is loaded, else a userspace
//! implementation it finds (boringtun, wireguard-go) that it starts and
//! keeps. Its state is the telemetry's `vpn_status`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use ipnet::IpNet;
use serde_json::{json, Value};
use wireguard_control::{
    Backend, Device, DeviceUpdate, InterfaceName, Key, KeyPair, PeerConfigBuilder,
};

/// What the config says of the tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    pub addresses: Vec<IpNet>,
    pub server_key: String,
    pub endpoint: String,
    pub routes: Vec<IpNet>,
    pub keepalive: Option<u16>,
}

impl Tunnel {
    /// Reads a config as the gateway writes it (`wg-quick`'s format).
    pub fn parse(conf: &str) -> Result<Tunnel, String> {
        let (mut addresses, mut routes) = (Vec::new(), Vec::new());
        let (mut server_key, mut endpoint, mut keepalive) = (None, None, None);
        let nets = |v: &str| -> Result<Vec<IpNet>, String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().map_err(|_| format!("{s:?} is not a network")))
                .collect()
        };
        for line in conf.lines().map(str::trim) {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "Address" => addresses = nets(value)?,
                "PublicKey" => server_key = Some(value.to_owned()),
                "Endpoint" => endpoint = Some(value.to_owned()),
                "AllowedIPs" => routes = nets(value)?,
                "PersistentKeepalive" => keepalive = value.parse().ok(),
                _ => {}
            }
        }
        Ok(Tunnel {
            addresses,
            server_key: server_key.ok_or("the config has no [Peer] PublicKey")?,
            endpoint: endpoint.ok_or("the config has no Endpoint")?,
            routes,
            keepalive,
        })
    }
}

/// The host's tunnel.
pub struct VpnClient {
    interface: String,
    userspace: Option<String>,
    keypair: KeyPair,
    tunnel: ArcSwapOption<(Tunnel, Backend)>,
    problem: ArcSwapOption<String>,
    /// The userspace implementation the agent started, if it did.
    child: Mutex<Option<std::process::Child>>,
}

impl VpnClient {
    /// Loads the key pair from `key_file`, or makes one and keeps it there
    /// (mode 0600).
    pub fn load(
        interface: &str,
        key_file: &Path,
        userspace: Option<String>,
    ) -> Result<VpnClient, String> {
        let keypair = match std::fs::read_to_string(key_file) {
            Ok(text) => KeyPair::from_private(
                Key::from_base64(text.trim())
                    .map_err(|_| format!("{}: not a WireGuard private key", key_file.display()))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pair = KeyPair::generate();
                write_private(key_file, &pair.private.to_base64())?;
                pair
            }
            Err(e) => return Err(format!("{}: {e}", key_file.display())),
        };
        Ok(VpnClient {
            interface: interface.to_owned(),
            userspace,
            keypair,
            tunnel: ArcSwapOption::empty(),
            problem: ArcSwapOption::from_pointee("no config fetched yet".to_owned()),
            child: Mutex::new(None),
        })
    }

    pub fn public_key(&self) -> String {
        self.keypair.public.to_base64()
    }

    /// Brings the tunnel up as `conf` says (again: it is idempotent).
    pub fn apply(&self, conf: &str) -> Result<(), String> {
        let outcome = Tunnel::parse(conf).and_then(|tunnel| {
            let backend = self.ensure_interface()?;
            self.configure(&tunnel, backend)?;
            Ok((tunnel, backend))
        });
        match outcome {
            Ok(state) => {
                tracing::info!(interface = %self.interface, endpoint = %state.0.endpoint, "VPN tunnel up");
                self.tunnel.store(Some(Arc::new(state)));
                self.problem.store(None);
                Ok(())
            }
            Err(e) => {
                self.problem.store(Some(Arc::new(e.clone())));
                Err(e)
            }
        }
    }

    /// Notes why there is no tunnel (the gateway refused the fetch).
    pub fn refused(&self, why: String) {
        self.problem.store(Some(Arc::new(why)));
    }

    fn name(&self) -> Result<InterfaceName, String> {
        self.interface
            .parse()
            .map_err(|e| format!("vpn_interface {:?}: {e}", self.interface))
    }

    /// The interface, made if there is none: kernel first, else userspace.
    fn ensure_interface(&self) -> Result<Backend, String> {
        let name = self.name()?;
        for backend in [Backend::Kernel, Backend::Userspace] {
            if Device::get(&name, backend).is_ok() {
                return Ok(backend);
            }
        }
        let kernel = run("ip", &["link", "add", &self.interface, "type", "wireguard"]);
        if kernel.is_ok() && Device::get(&name, Backend::Kernel).is_ok() {
            return Ok(Backend::Kernel);
        }
        let program = self
            .userspace
            .clone()
            .or_else(find_userspace)
            .ok_or_else(|| {
                format!(
                "cannot create {}: no WireGuard kernel module ({}) and no userspace implementation \
                 (boringtun-cli, boringtun or wireguard-go on PATH, or vpn_userspace)",
                self.interface,
                kernel.err().unwrap_or_default()
            )
            })?;
        let mut command = std::process::Command::new(&program);
        if program.contains("wireguard-go") {
            command.args(["-f", &self.interface]);
        } else {
            command.args([&self.interface, "--foreground", "--disable-drop-privileges"]);
        }
        let child = command
            .env("WG_SUDO", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        for _ in 0..100 {
            if Device::get(&name, Backend::Userspace).is_ok() {
                return Ok(Backend::Userspace);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "{program} did not create {} within 5 s",
            self.interface
        ))
    }

    fn configure(&self, tunnel: &Tunnel, backend: Backend) -> Result<(), String> {
        let name = self.name()?;
        let server = Key::from_base64(&tunnel.server_key).map_err(|_| {
            format!(
                "the server key {:?} is not a WireGuard key",
                tunnel.server_key
            )
        })?;
        let endpoint = resolve(&tunnel.endpoint)?;
        let mut peer = PeerConfigBuilder::new(&server)
            .set_endpoint(endpoint)
            .replace_allowed_ips();
        for route in &tunnel.routes {
            peer = peer.add_allowed_ip(route.addr(), route.prefix_len());
        }
        if let Some(k) = tunnel.keepalive.filter(|k| *k > 0) {
            peer = peer.set_persistent_keepalive_interval(k);
        }
        // One peer, the server: replacing the set is right on this side.
        DeviceUpdate::new()
            .set_private_key(self.keypair.private.clone())
            .replace_peers()
            .add_peer(peer)
            .apply(&name, backend)
            .map_err(|e| format!("cannot configure {}: {e}", self.interface))?;
        for address in &tunnel.addresses {
            run(
                "ip",
                &[
                    "address",
                    "replace",
                    &address.to_string(),
                    "dev",
                    &self.interface,
                ],
            )?;
        }
        run("ip", &["link", "set", &self.interface, "up"])?;
        for route in &tunnel.routes {
            run(
                "ip",
                &[
                    "route",
                    "replace",
                    &route.to_string(),
                    "dev",
                    &self.interface,
                ],
            )?;
        }
        Ok(())
    }

    /// seed 003's `vpn_status`, with the tunnel's live state.
    /// The tunnel's first address, once it is configured.
    pub fn address(&self) -> Option<String> {
        let state = self.tunnel.load_full()?;
        let address = state.0.addresses.first()?.addr().to_string();
        Some(address)
    }

    pub fn status(&self) -> Value {
        let Some(state) = self.tunnel.load_full() else {
            let why = self.problem.load_full().map(|p| (*p).clone());
            return json!({
                "ifname": self.interface, "conn_type": "wireguard", "conn_host": null,
                "conn_ip4": null, "conn_ip6": null, "up": false,
                "desc": why.unwrap_or_else(|| "no tunnel".into()),
            });
        };
        let (tunnel, backend) = &*state;
        let address = |v4: bool| {
            tunnel
                .addresses
                .iter()
                .find(|a| a.addr().is_ipv4() == v4)
                .map(|a| a.addr().to_string())
        };
        let live = self
            .name()
            .ok()
            .and_then(|name| Device::get(&name, *backend).ok())
            .and_then(|d| d.peers.into_iter().next());
        let now = SystemTime::now();
        let handshake = live
            .as_ref()
            .and_then(|p| p.stats.last_handshake_time)
            .map(|t| concierge_protocol::wireguard::handshake_time(t, now))
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let host = tunnel
            .endpoint
            .rsplit_once(':')
            .map_or(tunnel.endpoint.as_str(), |(h, _)| h);
        json!({
            "ifname": self.interface,
            "conn_type": "wireguard",
            "conn_host": host,
            "conn_ip4": address(true),
            "conn_ip6": address(false),
            "up": live.is_some(),
            "latest_handshake": handshake,
            "rx_bytes": live.as_ref().map_or(0, |p| p.stats.rx_bytes),
            "tx_bytes": live.as_ref().map_or(0, |p| p.stats.tx_bytes),
        })
    }
}

impl Drop for VpnClient {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The first userspace implementation on PATH.
fn find_userspace() -> Option<String> {
    if let Ok(chosen) = std::env::var("WG_USERSPACE_IMPLEMENTATION") {
        return Some(chosen);
    }
    let path = std::env::var_os("PATH")?;
    ["boringtun-cli", "boringtun", "wireguard-go"]
        .into_iter()
        .find(|p| std::env::split_paths(&path).any(|dir| dir.join(p).is_file()))
        .map(str::to_owned)
}

fn resolve(endpoint: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    endpoint
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve the endpoint {endpoint}: {e}"))?
        .next()
        .ok_or_else(|| format!("the endpoint {endpoint} resolves to nothing"))
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Writes the private key, readable by this user only.
fn write_private(path: &Path, key: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(file, "{key}").map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_config_is_read() {
        let conf = "[Interface]\n# kept\nPostUp = wg set %i private-key /etc/wireguard/%i.key\n\
                    Address = 10.8.0.2/32, fd00:8::2/128\n\n[Peer]\nPublicKey = abc=\n\
                    Endpoint = vpn.example.com:51820\nAllowedIPs = 10.8.0.0/24, fd00:8::/64\nPersistentKeepalive = 25\n";
        let t = Tunnel::parse(conf).expect("parses");
        assert_eq!(t.addresses.len(), 2);
        assert_eq!(
            (t.server_key.as_str(), t.endpoint.as_str(), t.keepalive),
            ("abc=", "vpn.example.com:51820", Some(25))
        );
        assert_eq!(t.routes[0].to_string(), "10.8.0.0/24");
        assert!(Tunnel::parse("[Interface]\nAddress = 10.8.0.2/32\n").is_err());
    }
}
