//! `/auth/token`: seed 003's authentication over HTTP.
//!
//! `POST /auth/token` with `{"username","password"}` answers
//! `{"success":true,"token","validity"}` (seconds) or
//! `{"success":false,"reason"}`; `GET /auth/token` with the token as
//! `Authorization: Bearer` tells its remaining validity (seed 003's
//! re-authentication); `POST /auth/token/refresh` with it gives a new one.
//! Failures carry an HTTP status too: 400 for a body that is not the
//! expected JSON, 403 for a browser page of another origin (see
//! [`origin`]), 415 for a login not sent as `application/json`, 401 for refused credentials or tokens, 429 (with
//! `Retry-After`) while locked out, 503 when the store cannot be reached.

use std::net::IpAddr;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::forwarded;
use super::http::bearer_token;
use super::origin;
use super::AppState;
use crate::auth::{self, Issued, LoginError, TokenRefused};
use crate::config::{self, Settings};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/auth/token", web::post().to(login))
        .route("/auth/token", web::get().to(validity))
        .route("/auth/token/refresh", web::post().to(refresh));
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

fn issued(issued: &Issued) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "success": true,
        "token": issued.token,
        "validity": issued.claims.exp.saturating_sub(auth::now_secs()),
    }))
}

fn failure(error: &LoginError) -> HttpResponse {
    let reason = error.to_string();
    match error {
        LoginError::Refused(_) | LoginError::Token(_) => {
            HttpResponse::Unauthorized().json(json!({ "success": false, "reason": reason }))
        }
        LoginError::Locked { retry_after } => HttpResponse::TooManyRequests()
            .insert_header((header::RETRY_AFTER, retry_after.to_string()))
            .json(json!({ "success": false, "reason": reason, "retry_after": retry_after })),
        LoginError::Failed(e) => {
            tracing::warn!(error = %e, "cannot check a login");
            HttpResponse::ServiceUnavailable().json(json!({
                "success": false,
                "reason": "unavailable",
                "desc": e.to_string(),
            }))
        }
    }
}

fn bad_request(desc: String) -> HttpResponse {
    HttpResponse::BadRequest()
        .json(json!({ "success": false, "reason": "bad_request", "desc": desc }))
}

/// The client's address: the peer's, or, from one of `trusted_proxies`,
/// the one its forwarding headers name (see [`forwarded`]).
pub(super) fn source(req: &HttpRequest, settings: &Settings) -> Option<IpAddr> {
    let peer = req.peer_addr()?.ip();
    let trusted = config::trusted_proxies(&settings.trusted_proxies).unwrap_or_default();
    Some(forwarded::source(peer, req.headers(), &trusted))
}

/// Whether the body is declared as JSON (`application/json`, parameters
/// such as a charset allowed). A browser form can only send other types
/// without the page asking the gateway first.
fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

async fn login(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    if !origin::allowed(req.headers(), &state.settings) {
        return HttpResponse::Forbidden().json(
            json!({ "success": false, "reason": "origin_refused", "desc": origin::REFUSED }),
        );
    }
    if !is_json(&req) {
        return HttpResponse::UnsupportedMediaType().json(json!({
            "success": false,
            "reason": "unsupported_media_type",
            "desc": "send the credentials with Content-Type: application/json",
        }));
    }
    let credentials: Credentials = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return bad_request(format!(
                "send {{\"username\": ..., \"password\": ...}} as JSON: {e}"
            ))
        }
    };
    match state
        .auth
        .login(
            &credentials.username,
            &credentials.password,
            source(&req, &state.settings),
        )
        .await
    {
        Ok(token) => {
            tracing::info!(user = %credentials.username, "token issued for a login");
            issued(&token)
        }
        Err(e) => {
            tracing::info!(user = %credentials.username, reason = %e, "login refused");
            failure(&e)
        }
    }
}

async fn validity(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(token) = bearer_token(&req) else {
        return failure(&LoginError::Token(TokenRefused::Invalid));
    };
    match state.auth.verify(token) {
        Ok(claims) => HttpResponse::Ok().json(json!({
            "success": true,
            "validity": claims.exp.saturating_sub(auth::now_secs()),
            "user": claims.sub,
            "name": claims.name,
            "role": claims.role,
        })),
        Err(why) => failure(&LoginError::Token(why)),
    }
}

async fn refresh(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let Some(token) = bearer_token(&req) else {
        return failure(&LoginError::Token(TokenRefused::Invalid));
    };
    match state.auth.refresh(token).await {
        Ok(token) => issued(&token),
        Err(e) => failure(&e),
    }
}
