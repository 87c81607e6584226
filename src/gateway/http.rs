//! The plain HTTP endpoints beside the WebSocket: health, readiness,
//! version and metrics, for operators and load balancers.

use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;

use super::AppState;
use crate::auth::{self, Role};
use crate::metrics as gateway_metrics;
use crate::protocol::{PROTOCOL_VERSION, SUBPROTOCOL};

/// Reached only by requests that did not ask for a WebSocket upgrade (those
/// that do are taken over before routing): the handshake's check says what
/// is missing, with the status and reason a WebSocket client expects.
pub(super) async fn websocket_without_upgrade(
    req: HttpRequest,
) -> Result<HttpResponse, actix_web::Error> {
    ws::handshake_with_protocols(&req, &[SUBPROTOCOL])?;
    Ok(HttpResponse::BadRequest().body("send the WebSocket upgrade headers"))
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
