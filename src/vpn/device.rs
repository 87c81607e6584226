//! The WireGuard interface a gateway manages: its peers made equal to the
//! issued configs by changing only what differs (a peer added, its
//! addresses replaced, a peer removed), never by replacing the whole set,
//! which would drop the sessions of every live peer; and its peers' state.
//!
//! The interface must exist (created by `ip link add ... type wireguard`
//! or by a userspace implementation such as boringtun): the gateway never
//! starts one itself.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::time::SystemTime;

use ipnet::IpNet;
use wireguard_control::{
    AllowedIp, Backend, Device, DeviceUpdate, InterfaceName, Key, KeyPair, PeerConfigBuilder,
};

/// A managed interface.
#[derive(Debug, Clone)]
pub struct Interface {
    pub name: InterfaceName,
    pub backend: Backend,
}

/// What a sync changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
}

/// One peer as the interface sees it.
#[derive(Debug, Clone)]
pub struct PeerState {
    pub public_key: String,
    pub endpoint: Option<SocketAddr>,
    /// `None`: never.
    pub latest_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl Interface {
    /// The interface `name` on `backend` (`auto`: kernel if the interface
    /// is a kernel one, else userspace).
    pub fn open(name: &str, backend: &str) -> Result<Interface, String> {
        let name: InterfaceName = name
            .parse()
            .map_err(|e| format!("{name:?} is not an interface name: {e}"))?;
        let candidates: &[Backend] = match backend {
            "kernel" => &[Backend::Kernel],
            "userspace" => &[Backend::Userspace],
            _ => &[Backend::Kernel, Backend::Userspace],
        };
        let mut why = Vec::new();
        for backend in candidates {
            match Device::get(&name, *backend) {
                Ok(_) => {
                    return Ok(Interface {
                        name,
                        backend: *backend,
                    })
                }
                Err(e) => why.push(format!("{backend}: {e}")),
            }
        }
        Err(format!(
            "no WireGuard interface {name} to manage ({})",
            why.join("; ")
        ))
    }

    /// Makes the interface's key, port and peers those given.
    pub fn sync(
        &self,
        keypair: &KeyPair,
        port: u16,
        desired: &[(Key, Vec<IpNet>)],
    ) -> io::Result<Diff> {
        let device = Device::get(&self.name, self.backend)?;
        let mut update = DeviceUpdate::new();
        let mut changed = false;
        if device.private_key.as_ref() != Some(&keypair.private) {
            update = update.set_private_key(keypair.private.clone());
            changed = true;
        }
        if device.listen_port != Some(port) {
            update = update.set_listen_port(port);
            changed = true;
        }
        let current: HashMap<Key, HashSet<String>> = device
            .peers
            .iter()
            .map(|p| {
                let ips = p
                    .config
                    .allowed_ips
                    .iter()
                    .map(|ip| format!("{}/{}", ip.address, ip.cidr))
                    .collect();
                (p.config.public_key.clone(), ips)
            })
            .collect();
        let mut diff = Diff::default();
        let mut wanted = HashSet::new();
        for (key, nets) in desired {
            wanted.insert(key.clone());
            let ips: HashSet<String> = nets.iter().map(|n| n.to_string()).collect();
            let allowed: Vec<AllowedIp> = nets
                .iter()
                .map(|n| AllowedIp {
                    address: n.addr(),
                    cidr: n.prefix_len(),
                })
                .collect();
            match current.get(key) {
                None => {
                    update = update.add_peer(PeerConfigBuilder::new(key).add_allowed_ips(&allowed));
                    diff.added += 1;
                }
                Some(have) if *have != ips => {
                    update = update.add_peer(
                        PeerConfigBuilder::new(key)
                            .replace_allowed_ips()
                            .add_allowed_ips(&allowed),
                    );
                    diff.updated += 1;
                }
                Some(_) => {}
            }
        }
        for key in current.keys().filter(|k| !wanted.contains(*k)) {
            update = update.remove_peer_by_key(key);
            diff.removed += 1;
        }
        if changed || diff != Diff::default() {
            update.apply(&self.name, self.backend)?;
        }
        Ok(diff)
    }

    /// Every peer's endpoint, latest handshake and bytes.
    pub fn peers(&self) -> io::Result<Vec<PeerState>> {
        let device = Device::get(&self.name, self.backend)?;
        let now = SystemTime::now();
        Ok(device
            .peers
            .into_iter()
            .map(|p| PeerState {
                public_key: p.config.public_key.to_base64(),
                endpoint: p.config.endpoint,
                latest_handshake: p
                    .stats
                    .last_handshake_time
                    .map(|t| concierge_protocol::wireguard::handshake_time(t, now)),
                rx_bytes: p.stats.rx_bytes,
                tx_bytes: p.stats.tx_bytes,
            })
            .collect())
    }
}
