//! The plain HTTP endpoints beside the WebSocket: health, readiness,
//! version and metrics, for operators and load balancers, and the VPN
//! config fetch for hosts with a bearer token.

use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;

use super::AppState;
use crate::auth::{self, Role};
use crate::metrics as gateway_metrics;
use crate::protocol::agent::args::GetVpnConf;
use crate::protocol::agent::Failure;
use crate::protocol::{PROTOCOL_VERSION, SUBPROTOCOL};
use crate::vpn::{Fetch, VpnError};

/// Reached only by requests that did not ask for a WebSocket upgrade (those
/// that do are taken over before routing): the handshake's check says what
/// is missing, with the status and reason a WebSocket client expects.
pub(super) async fn websocket_without_upgrade(
    req: HttpRequest,
) -> Result<HttpResponse, actix_web::Error> {
    ws::handshake_with_protocols(&req, &[SUBPROTOCOL])?;
    Ok(HttpResponse::BadRequest().body("send the WebSocket upgrade headers"))
}

/// `/socket.io/` without an upgrade: Engine.IO's long-polling transport
/// (see [`crate::adapters::socketio::engine`]), for the origins the
/// gateway allows; refusals in Engine.IO's own shape, as its reference
/// server answers them.
pub(super) async fn socketio_without_upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    use crate::adapters::socketio::{engine, OLD_ENGINE};
    use actix_web::http::StatusCode;
    if !super::origin::allowed(req.headers(), &state.settings) {
        return engine::error(StatusCode::FORBIDDEN, 4, super::origin::REFUSED);
    }
    let query = engine::Query::parse(req.uri().query());
    if query.eio != Some("4") {
        return engine::error(StatusCode::BAD_REQUEST, 5, OLD_ENGINE);
    }
    match query.transport {
        Some("polling") => {}
        Some("websocket") => {
            return engine::error(
                StatusCode::BAD_REQUEST,
                3,
                "transport=websocket takes the WebSocket upgrade headers",
            )
        }
        _ => return engine::error(StatusCode::BAD_REQUEST, 0, "Transport unknown"),
    }
    let Some(peer) = super::login::source(&req, &state.settings) else {
        return engine::error(StatusCode::BAD_REQUEST, 3, "Bad request");
    };
    state
        .polling
        .request(&state, req.method(), query.sid, peer, body)
        .await
}

pub(super) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// Ready when the registry answers within a second and the cluster link
/// works.
pub(super) async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.namespace.ready().await {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({ "status": "ready" })),
        Err(reason) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "status": "not ready", "reason": reason })),
    }
}

pub(super) async fn version() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "name": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": PROTOCOL_VERSION,
    }))
}

/// The token of an `Authorization: Bearer` header.
pub(super) fn bearer_token(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(auth::bearer)
}

/// The metrics; once the gateway requires tokens, only for a token whose
/// role implies `viewer`.
pub(super) async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if state.auth.required() {
        let Some(token) = bearer_token(&req) else {
            return HttpResponse::Unauthorized()
                .body("this gateway requires a token: send Authorization: Bearer TOKEN");
        };
        match state.auth.verify(token) {
            Ok(claims) if claims.role.implied().contains(&Role::Viewer) => {}
            Ok(claims) => {
                return HttpResponse::Forbidden()
                    .body(format!("the role {} may not read metrics", claims.role))
            }
            Err(why) => return HttpResponse::Unauthorized().body(why.reason()),
        }
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(gateway_metrics::get().render())
}

#[derive(serde::Deserialize)]
pub(super) struct ConfQuery {
    /// `get_vpn_conf`'s arguments.
    #[serde(flatten)]
    conf: GetVpnConf,
    /// `text` (the default): the config itself; `json`: the config and
    /// its QR code, for the console.
    format: Option<String>,
}

/// The verified claims of the request's bearer token, or why there are
/// none (answered 401).
fn bearer_claims(req: &HttpRequest, state: &AppState) -> Result<auth::Claims, VpnError> {
    let token = bearer_token(req)
        .ok_or_else(|| VpnError::Forbidden("send Authorization: Bearer TOKEN".into()))?;
    state
        .auth
        .verify(token)
        .map_err(|why| VpnError::Forbidden(why.reason().to_owned()))
}

fn vpn_failure(e: &VpnError) -> HttpResponse {
    let mut answer = match e {
        VpnError::Forbidden(_) => HttpResponse::Forbidden(),
        VpnError::NoSuchPeer(_) | VpnError::Disabled => HttpResponse::NotFound(),
        VpnError::PoolExhausted(_) | VpnError::Unavailable(_) => HttpResponse::ServiceUnavailable(),
        _ => HttpResponse::BadRequest(),
    };
    answer.json(Failure::from(e.clone()).to_msg())
}

/// `GET /vpn/conf`: the WireGuard config of the token's client (or of
/// `name`, for an admin), as `wg-quick` reads it.
pub(super) async fn vpn_conf(
    req: HttpRequest,
    query: web::Query<ConfQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let claims = match bearer_claims(&req, &state) {
        Ok(claims) => claims,
        Err(refused) => return HttpResponse::Unauthorized().json(Failure::from(refused).to_msg()),
    };
    let query = query.into_inner();
    let json = match query.format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            return vpn_failure(&VpnError::BadArgument(format!(
                "format {other:?} is not text or json"
            )))
        }
    };
    let name = query
        .conf
        .name
        .clone()
        .unwrap_or_else(|| claims.name.clone());
    let fetch = Fetch::new(name, Some(claims), &query.conf);
    let name = fetch.name.clone();
    match state.vpn.fetch(fetch).await {
        Ok(conf) if json => HttpResponse::Ok().json(serde_json::json!({
            "result": "success",
            "name": name,
            "conf_type": "wireguard",
            "conf_data": conf,
            "qr_svg": qr_svg(&conf),
        })),
        Ok(conf) => HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body(conf),
        Err(e) => vpn_failure(&e),
    }
}

/// A config as an SVG QR code, what a phone's WireGuard app scans; `null`
/// for one too long for a QR code (a config is a few hundred bytes).
fn qr_svg(conf: &str) -> Option<String> {
    let code = qrcode::QrCode::new(conf.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color>()
            .min_dimensions(256, 256)
            .quiet_zone(true)
            .build(),
    )
}

/// `GET /vpn/peers`: every peer and the managed interface's view of it,
/// for an operator. A gateway without a VPN says so (`vpn_disabled`) to
/// any role, before the role check: the console asks it to know whether
/// to offer a config at all, rather than fail after the confirmation.
pub(super) async fn vpn_peers(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let claims = match bearer_claims(&req, &state) {
        Ok(claims) => claims,
        Err(refused) => return HttpResponse::Unauthorized().json(Failure::from(refused).to_msg()),
    };
    if !state.vpn.enabled() {
        return vpn_failure(&VpnError::Disabled);
    }
    if !claims.role.implied().contains(&Role::Operator) {
        return vpn_failure(&VpnError::Forbidden(format!(
            "the role {} may not list VPN peers",
            claims.role
        )));
    }
    match state.vpn.peers().await {
        Ok(status) => HttpResponse::Ok().json(status),
        Err(e) => vpn_failure(&e),
    }
}
