//! The client's config file, in the format `wg-quick` reads.

use std::fmt::Write;
use std::net::IpAddr;

use ipnet::IpNet;

use super::peers::Peer;

/// What the server side of a config says.
pub struct Server<'a> {
    pub public_key: &'a str,
    pub endpoint: &'a str,
    pub routes: &'a [IpNet],
    pub dns: &'a [IpAddr],
    pub keepalive: u64,
}

/// The config for `peer`. With `private_key` (a pair the gateway made) it
/// is complete; without (the client kept its key), `wg-quick` sets the key
/// from the file where the client keeps it, `/etc/wireguard/<if>.key`.
pub fn render(peer: &Peer, private_key: Option<&str>, server: &Server<'_>) -> String {
    let mut out = String::from("[Interface]\n");
    match private_key {
        Some(key) => {
            let _ = writeln!(out, "PrivateKey = {key}");
        }
        None => {
            out.push_str(
                "# The private key stays on this host: wg-quick reads it from this file.\n",
            );
            out.push_str("PostUp = wg set %i private-key /etc/wireguard/%i.key\n");
        }
    }
    let addresses: Vec<String> = peer
        .allowed_ips()
        .iter()
        .map(|net| net.to_string())
        .collect();
    let _ = writeln!(out, "Address = {}", addresses.join(", "));
    if !server.dns.is_empty() {
        let dns: Vec<String> = server.dns.iter().map(|d| d.to_string()).collect();
        let _ = writeln!(out, "DNS = {}", dns.join(", "));
    }
    out.push_str("\n[Peer]\n");
    let _ = writeln!(out, "PublicKey = {}", server.public_key);
    let _ = writeln!(out, "Endpoint = {}", server.endpoint);
    let routes: Vec<String> = server.routes.iter().map(|r| r.to_string()).collect();
    let _ = writeln!(out, "AllowedIPs = {}", routes.join(", "));
    if server.keepalive > 0 {
        let _ = writeln!(out, "PersistentKeepalive = {}", server.keepalive);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokens::{Claims, TokenKind};
    use crate::auth::Role;

    #[test]
    fn a_config_has_what_wg_quick_needs() {
        let peer = Peer {
            name: "host1".into(),
            public_key: "x".into(),
            ipv4: Some("10.8.0.2".parse().expect("v4")),
            ipv6: Some("fd00:8::2".parse().expect("v6")),
            claims: Claims {
                sub: "host1".into(),
                name: "host1".into(),
                role: Role::Agent,
                jti: uuid::Uuid::nil(),
                iat: 0,
                exp: 1,
                kind: TokenKind::Issued,
                fam: uuid::Uuid::nil(),
                fexp: 0,
                iat_ms: 0,
                kid: String::new(),
            },
            fetched: 0,
        };
        let routes = ["10.8.0.0/24".parse().expect("net")];
        let server = Server {
            public_key: "SERVERKEY=",
            endpoint: "vpn.example.com:51820",
            routes: &routes,
            dns: &["10.8.0.1".parse().expect("dns")],
            keepalive: 25,
        };
        let conf = render(&peer, Some("PRIVATE="), &server);
        assert_eq!(
            conf,
            "[Interface]\nPrivateKey = PRIVATE=\nAddress = 10.8.0.2/32, fd00:8::2/128\nDNS = 10.8.0.1\n\n\
             [Peer]\nPublicKey = SERVERKEY=\nEndpoint = vpn.example.com:51820\nAllowedIPs = 10.8.0.0/24\n\
             PersistentKeepalive = 25\n"
        );
        let kept = render(&peer, None, &server);
        assert!(
            kept.contains("PostUp = wg set %i private-key /etc/wireguard/%i.key"),
            "{kept}"
        );
        assert!(!kept.contains("PrivateKey ="), "{kept}");
    }
}
