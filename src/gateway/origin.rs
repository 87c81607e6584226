//! Which browser pages may talk to the gateway: the `Origin` check on every
//! WebSocket upgrade and on the login.
//!
//! A browser lets any page open a WebSocket to any address and post a form
//! anywhere; what it cannot hide is the page's origin, which it puts in an
//! `Origin` header. Without this check, a page a local user visits could
//! open a socket to an open gateway, or lock accounts out with cross-site
//! logins. A request with an `Origin` is accepted when that origin is the
//! gateway's own (its host and port are the request's `Host`: the console)
//! or one of `allowed_origins`; a request without one comes from a program,
//! not a browser, and is not affected.

use actix_http::header::{HeaderMap, HOST, ORIGIN};

use crate::config::{allowed_origins, Settings};

/// Why a request's origin is refused, for the 403 it gets.
pub const REFUSED: &str = "this Origin may not use the gateway: only the gateway's own pages \
                           and the origins in allowed_origins may (programs send no Origin)";

/// Whether the request may go on: no `Origin`, the gateway's own, or an
/// allowed one.
pub fn allowed(headers: &HeaderMap, settings: &Settings) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim().to_ascii_lowercase();
    let own = headers
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .is_some_and(|host| same_authority(&origin, host));
    own || allowed_origins(&settings.allowed_origins)
        .unwrap_or_default()
        .contains(&origin)
}

/// Whether `origin` (lowercased `scheme://host[:port]`) names the host and
/// port of `host` (a `Host` header), a default port written or not.
fn same_authority(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default = match scheme {
        "http" | "ws" => ":80",
        "https" | "wss" => ":443",
        _ => return false,
    };
    let host = host.trim().to_ascii_lowercase();
    let bare = |a: &str| {
        a.strip_suffix(default)
            .map(str::to_owned)
            .unwrap_or(a.to_owned())
    };
    !authority.is_empty() && bare(authority) == bare(&host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_host_and_port_is_the_gateways_own_origin() {
        assert!(same_authority("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(same_authority("https://gw.example", "gw.example:443"));
        assert!(same_authority("http://gw.example:80", "GW.example"));
        assert!(!same_authority("http://127.0.0.1:8081", "127.0.0.1:8080"));
        assert!(!same_authority("https://gw.example", "gw.example:80"));
        assert!(!same_authority("null", "127.0.0.1:8080"));
        assert!(!same_authority("http://evil.example", "gw.example"));
    }
}
