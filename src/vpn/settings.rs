//! The VPN's settings: what `vpn_*` say, checked and parsed beside the
//! code that uses them.
//!
//! The config module holds them as plain values and calls the checks below
//! by name (so a wrong value is reported as its source gave it); it builds
//! a [`VpnSettings`] from them with [`VpnSettings::parse`].

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::peers::Pools;

/// The `vpn_*` settings as the config holds them.
pub struct VpnText<'a> {
    pub endpoint: &'a str,
    pub interface: &'a str,
    pub backend: &'a str,
    pub listen_port: u64,
    pub ipv4_pool: &'a str,
    pub ipv6_pool: &'a str,
    pub dns: &'a str,
    pub keepalive_secs: u64,
    pub routes: &'a str,
    pub resync_secs: u64,
}

/// The VPN settings, checked.
#[derive(Debug, Clone)]
pub struct VpnSettings {
    pub endpoint: Option<String>,
    pub interface: Option<String>,
    pub backend: String,
    pub listen_port: u16,
    pub pools: Pools,
    pub dns: Vec<IpAddr>,
    pub keepalive: u64,
    pub routes: Vec<IpNet>,
    /// How often the interface is compared with the records even when
    /// nothing was reported changed (`vpn_resync_secs`).
    pub resync: Duration,
}

impl VpnSettings {
    /// The settings `text` gives, checked.
    pub fn parse(text: &VpnText<'_>) -> Result<VpnSettings, String> {
        let pool = |list: &str, v4: bool| -> Result<Option<IpNet>, String> {
            let nets = cidr_list(list)?;
            match nets.as_slice() {
                [] => Ok(None),
                [net] if net.addr().is_ipv4() == v4 && net.hosts().nth(2).is_some() => {
                    Ok(Some(*net))
                }
                [net] if net.addr().is_ipv4() == v4 => {
                    Err(format!("{net} is too small for a pool"))
                }
                _ => Err(format!(
                    "{list:?}: one IPv{} network",
                    if v4 { 4 } else { 6 }
                )),
            }
        };
        let pools = Pools {
            ipv4: pool(text.ipv4_pool, true).map_err(|e| format!("vpn_ipv4_pool: {e}"))?,
            ipv6: pool(text.ipv6_pool, false).map_err(|e| format!("vpn_ipv6_pool: {e}"))?,
        };
        let mut routes = cidr_list(text.routes)?;
        if routes.is_empty() {
            routes = [pools.ipv4, pools.ipv6].into_iter().flatten().collect();
        }
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let listen_port = u16::try_from(text.listen_port).unwrap_or(51_820);
        let endpoint = vpn_endpoint_parts(text.endpoint)
            .map(|(host, port)| format!("{host}:{}", port.unwrap_or(listen_port)));
        Ok(VpnSettings {
            endpoint,
            interface: non_empty(text.interface),
            backend: text.backend.to_owned(),
            listen_port,
            pools,
            dns: ip_list(text.dns)?,
            keepalive: text.keepalive_secs,
            routes,
            resync: Duration::from_secs(text.resync_secs),
        })
    }
}

/// `vpn_endpoint`: empty, HOST or HOST:PORT (a name, an IPv4 address or
/// an IPv6 address in brackets).
pub fn vpn_endpoint(endpoint: &str) -> Result<(), String> {
    if endpoint.is_empty() || vpn_endpoint_parts(endpoint).is_some() {
        Ok(())
    } else {
        Err(
            "not HOST or HOST:PORT, e.g. vpn.example.com:51820, 203.0.113.7 or [2001:db8::7]:51820"
                .to_owned(),
        )
    }
}

/// `vpn_endpoint`'s host and port (if it has one).
fn vpn_endpoint_parts(endpoint: &str) -> Option<(&str, Option<u16>)> {
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0);
    if let Some(rest) = endpoint.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return match after {
            "" => Some((&endpoint[..host.len() + 2], None)),
            _ => Some((
                &endpoint[..host.len() + 2],
                Some(port(after.strip_prefix(':')?)?),
            )),
        };
    }
    let fine = |h: &str| {
        !h.is_empty()
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
    };
    match endpoint.split_once(':') {
        None => fine(endpoint).then_some((endpoint, None)),
        Some((host, p)) => (fine(host)).then_some((host, Some(port(p)?))),
    }
}

/// `vpn_interface`: empty, or an interface name (1 to 15 bytes of letters,
/// digits, `_`, `-`, `.`).
pub fn vpn_interface(name: &str) -> Result<(), String> {
    let fine = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    if name.is_empty() || (name.len() <= 15 && name.chars().all(fine)) {
        Ok(())
    } else {
        Err("not an interface name: 1 to 15 letters, digits, '_', '-' or '.'".to_owned())
    }
}

pub fn vpn_backend(backend: &str) -> Result<(), String> {
    match backend {
        "auto" | "kernel" | "userspace" => Ok(()),
        _ => Err("must be auto, kernel or userspace".to_owned()),
    }
}

pub fn udp_port(port: &u64) -> Result<(), String> {
    if (1..=65_535).contains(port) {
        Ok(())
    } else {
        Err("must be a port, 1 to 65535".to_owned())
    }
}

/// Comma-separated networks in CIDR notation (`10.8.0.0/24`,
/// `fd00:8::/64`); empty is none.
pub fn cidr_list(text: &str) -> Result<Vec<ipnet::IpNet>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .map(|net| net.trunc())
                .map_err(|_| format!("{s:?} is not a network in CIDR notation, e.g. 10.8.0.0/24"))
        })
        .collect()
}

/// Comma-separated IP addresses; empty is none.
pub fn ip_list(text: &str) -> Result<Vec<std::net::IpAddr>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| format!("{s:?} is not an IP address")))
        .collect()
}
