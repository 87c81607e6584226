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
//! not a browser, and is not affected. `allowed_origins = "*"` allows every
//! origin, as the seeds' servers did; it is never the default.
//!
//! The HTTP endpoints a page of another origin calls with `fetch` or XHR
//! (the file server's uploads, Engine.IO's polling) also need the browser's
//! leave to read the answer: [`cors`] gives them CORS headers for the same
//! origins, and answers their preflights.

use actix_http::header::{HeaderMap, HOST, ORIGIN};

use crate::config::{allowed_origins, Settings, ANY_ORIGIN};

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
    own || {
        let allowed = allowed_origins(&settings.allowed_origins).unwrap_or_default();
        allowed.iter().any(|a| a == ANY_ORIGIN || *a == origin)
    }
}

/// CORS for endpoints that pages of the allowed origins call across
/// origins: their requests' answers carry `Access-Control-Allow-Origin`,
/// and their preflights (`OPTIONS`) are answered for any method and header
/// the endpoint takes. Other origins get no CORS headers (their preflights
/// are refused with 400), so the browser keeps the answer from them; the
/// endpoint's own checks still hold for programs, which send no `Origin`.
/// The gateway's own pages need no CORS.
pub fn cors(settings: &Settings) -> actix_cors::Cors {
    let allowed = allowed_origins(&settings.allowed_origins).unwrap_or_default();
    let cors = actix_cors::Cors::default()
        .allow_any_method()
        .allow_any_header()
        .max_age(3600);
    if allowed.iter().any(|a| a == ANY_ORIGIN) {
        return cors.allow_any_origin().send_wildcard();
    }
    cors.allowed_origin_fn(move |origin, _| {
        origin
            .to_str()
            .is_ok_and(|o| allowed.contains(&o.trim().to_ascii_lowercase()))
    })
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
