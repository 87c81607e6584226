//! The address a login comes from, for lock-outs per source address.
//!
//! `X-Forwarded-For` and `Forwarded` are what a reverse proxy says about
//! the client it forwards, and what any client can write itself: trusted
//! from anyone, they let an attacker pick the address its failures count
//! against (a fresh one each try, or a victim's to lock it out). They are
//! read only when the peer is one of `trusted_proxies`, and then from the
//! right: each trusted proxy appends the address it saw, so the rightmost
//! address that is not a trusted proxy is the client (what it wrote to the
//! left of that is its own claim, and ignored).

use std::net::{IpAddr, SocketAddr};

use actix_http::header::{HeaderMap, FORWARDED, X_FORWARDED_FOR};
use ipnet::IpNet;

/// The source address of a request from `peer` with these `headers`.
pub fn source(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops = if headers.contains_key(FORWARDED) {
        forwarded_for(headers)
    } else {
        x_forwarded_for(headers)
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        // A hop that names no address (`unknown`, an obfuscated name):
        // nothing left of it can be placed, the last proxy stands for it.
        let Some(ip) = hop else { break };
        client = *ip;
        if !is_trusted(ip) {
            break;
        }
    }
    client
}

/// Every `X-Forwarded-For` entry, in order.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(X_FORWARDED_FOR)
        .flat_map(|value| value.to_str().unwrap_or("unknown").split(','))
        .map(address)
        .collect()
}

/// Every `for=` of `Forwarded` (RFC 7239), in order.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(FORWARDED)
        .flat_map(|value| value.to_str().unwrap_or("for=unknown").split(','))
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.split_once('='))
                .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, value)| address(value))
        })
        .collect()
}

/// An address as a proxy writes it: `192.0.2.7`, `2001:db8::1`, with a
/// port (`192.0.2.7:4711`, `[2001:db8::1]:4711`), quoted or not.
fn address(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            text.trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_http::header::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.parse().unwrap(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let trusted = ["10.0.0.0/24".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9")]);
        assert_eq!(source(proxy, &spoofed, &trusted), ip("203.0.113.9"));
        // From a peer that is no proxy, the header is nobody's word.
        assert_eq!(
            source(ip("198.51.100.1"), &spoofed, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(source(proxy, &spoofed, &[]), proxy);
        let chain = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "10.0.0.7"),
        ]);
        assert_eq!(source(proxy, &chain, &trusted), ip("203.0.113.9"));
        let forwarded = headers(&[(
            "forwarded",
            "for=1.2.3.4, for=\"[2001:db8::1]:4711\";proto=https",
        )]);
        assert_eq!(source(proxy, &forwarded, &trusted), ip("2001:db8::1"));
        let unknown = headers(&[("x-forwarded-for", "203.0.113.9, unknown")]);
        assert_eq!(source(proxy, &unknown, &trusted), proxy);
        assert_eq!(source(proxy, &headers(&[]), &trusted), proxy);
    }
}
