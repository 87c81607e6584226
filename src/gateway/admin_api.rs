//! `/admin/…`: accounts, tokens, signing keys and user settings over HTTP,
//! for an admin's token, so that `concierge user`, `token` and `settings`
//! work against a running gateway from anywhere, as tctl does through its
//! auth server, instead of opening the store by a path.
//!
//! Every request carries `Authorization: Bearer <token>` of an admin (401
//! without one or with a refused one, 403 for another role); bodies and
//! answers are the types of [`crate::protocol::admin`]; failures are an
//! HTTP status with an [`AdminFailure`] body (400 bad input, 404 unknown
//! user, token or key, 409 an account that exists, 503 the store). The
//! operations are [`crate::admin::ops`], the very ones the commands' local
//! mode runs. Each request is logged once, with the admin, the action, its
//! subject and its outcome (never a password nor a token): the audit
//! trail of who changed what.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use super::http::bearer_token;
use super::{origin, AppState};
use crate::admin::ops::{self, AdminError, Outcome};
use crate::auth::{Auth, Claims, Role};
use crate::protocol::admin::{AdminFailure, NewPassword, NewUser, SettingValue, TokenRequest};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin")
            .service(web::resource("/users").get(list_users).post(add_user))
            .service(web::resource("/users/{name}").delete(remove_user))
            .service(web::resource("/users/{name}/password").put(set_password))
            .service(web::resource("/users/{name}/tokens").delete(revoke_user_tokens))
            .service(web::resource("/users/{name}/settings").get(get_settings))
            .service(web::resource("/users/{name}/settings/{setting}").put(set_setting))
            .service(web::resource("/allow-anonymous").post(allow_anonymous))
            .service(web::resource("/tokens").get(list_tokens).post(issue_token))
            .service(web::resource("/tokens/{id}").delete(revoke_token))
            .service(web::resource("/keys").get(keys).post(rotate_key))
            .service(web::resource("/keys/{id}").delete(retire_key)),
    );
}

/// The failure's status and body.
fn failure(e: &AdminError) -> HttpResponse {
    let (status, reason) = match e {
        AdminError::Invalid(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        AdminError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        AdminError::Exists(_) => (StatusCode::CONFLICT, "exists"),
        AdminError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
        AdminError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
        AdminError::Unreachable(_) | AdminError::Failed(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
    };
    let mut response = HttpResponse::build(status);
    if status == StatusCode::UNAUTHORIZED {
        response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
    }
    response.json(AdminFailure {
        reason: reason.to_owned(),
        desc: e.to_string(),
    })
}

/// The admin's claims, from the request's token.
fn authorize(req: &HttpRequest, state: &AppState) -> Outcome<Claims> {
    if !origin::allowed(req.headers(), &state.settings) {
        return Err(AdminError::Forbidden(origin::REFUSED.to_owned()));
    }
    let token = bearer_token(req).ok_or_else(|| {
        AdminError::Unauthorized(
            "send an admin's token as Authorization: Bearer <token> (`concierge login URL ADMIN`)"
                .into(),
        )
    })?;
    let claims = state.auth.verify(token).map_err(|why| {
        AdminError::Unauthorized(format!("the token is refused: {}", why.reason()))
    })?;
    if claims.role != Role::Admin {
        return Err(AdminError::Forbidden(format!(
            "{} is {}: only an admin manages accounts, tokens and settings",
            claims.sub, claims.role
        )));
    }
    Ok(claims)
}

/// Runs `op` for an admin, answering `success` with its result; logs the
/// request either way.
async fn act<T: Serialize>(
    req: &HttpRequest,
    state: &AppState,
    action: &str,
    subject: &str,
    success: StatusCode,
    op: impl AsyncFnOnce(&Auth) -> Outcome<T>,
) -> HttpResponse {
    let admin = match authorize(req, state) {
        Ok(claims) => claims,
        Err(e) => {
            let source = super::login::source(req, &state.settings);
            tracing::warn!(action, subject, ?source, error = %e, "admin request refused");
            return failure(&e);
        }
    };
    match op(&state.auth).await {
        Ok(answer) => {
            tracing::info!(admin = %admin.sub, action, subject, "admin action done");
            HttpResponse::build(success).json(answer)
        }
        Err(e) => {
            tracing::info!(admin = %admin.sub, action, subject, error = %e, "admin action failed");
            failure(&e)
        }
    }
}

/// A JSON body of type `T`.
fn body<T: DeserializeOwned>(bytes: &[u8]) -> Outcome<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| AdminError::Invalid(format!("the body is not the expected JSON: {e}")))
}

async fn list_users(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    act(
        &req,
        &state,
        "user list",
        "",
        StatusCode::OK,
        async |auth| ops::list_users(auth).await,
    )
    .await
}

async fn add_user(req: HttpRequest, bytes: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let new = body::<NewUser>(&bytes);
    let subject = new.as_ref().map_or("", |n| n.username.as_str()).to_owned();
    act(
        &req,
        &state,
        "user add",
        &subject,
        StatusCode::CREATED,
        async |auth| ops::add_user(auth, &new?).await,
    )
    .await
}

async fn remove_user(
    req: HttpRequest,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    act(
        &req,
        &state,
        "user remove",
        &name,
        StatusCode::OK,
        async |auth| ops::remove_user(auth, &name).await,
    )
    .await
}

async fn set_password(
    req: HttpRequest,
    name: web::Path<String>,
    bytes: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    act(
        &req,
        &state,
        "user passwd",
        &name,
        StatusCode::OK,
        async |auth| {
            let new = body::<NewPassword>(&bytes)?;
            ops::set_password(auth, &name, &new.password).await
        },
    )
    .await
}

async fn revoke_user_tokens(
    req: HttpRequest,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    act(
        &req,
        &state,
        "token revoke --user",
        &name,
        StatusCode::OK,
        async |auth| ops::revoke_user_tokens(auth, &name).await,
    )
    .await
}

async fn get_settings(
    req: HttpRequest,
    name: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    act(
        &req,
        &state,
        "settings get",
        &name,
        StatusCode::OK,
        async |auth| ops::get_settings(auth, &name).await,
    )
    .await
}

async fn set_setting(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    bytes: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    let (name, setting) = path.into_inner();
    let subject = format!("{name} {setting}");
    act(
        &req,
        &state,
        "settings set",
        &subject,
        StatusCode::OK,
        async |auth| {
            let value = body::<SettingValue>(&bytes)?;
            ops::set_setting(auth, &name, &setting, &value.value).await
        },
    )
    .await
}

async fn allow_anonymous(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    act(
        &req,
        &state,
        "user allow-anonymous",
        "",
        StatusCode::OK,
        async |auth| ops::allow_anonymous(auth).await,
    )
    .await
}

async fn list_tokens(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    act(
        &req,
        &state,
        "token list",
        "",
        StatusCode::OK,
        async |auth| ops::list_tokens(auth).await,
    )
    .await
}

async fn issue_token(
    req: HttpRequest,
    bytes: web::Bytes,
    state: web::Data<AppState>,
) -> HttpResponse {
    let request = body::<TokenRequest>(&bytes);
    let subject = request.as_ref().map_or("", |r| r.name.as_str()).to_owned();
    act(
        &req,
        &state,
        "token issue",
        &subject,
        StatusCode::CREATED,
        async |auth| ops::issue_token(auth, &request?).await,
    )
    .await
}

async fn revoke_token(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    act(
        &req,
        &state,
        "token revoke",
        &id,
        StatusCode::OK,
        async |auth| {
            let id = Uuid::parse_str(&id)
                .map_err(|e| AdminError::Invalid(format!("{id:?} is not a token id: {e}")))?;
            ops::revoke_token(auth, id).await
        },
    )
    .await
}

async fn keys(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    act(
        &req,
        &state,
        "token keys",
        "",
        StatusCode::OK,
        async |auth| ops::keys(auth).await,
    )
    .await
}

async fn rotate_key(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    act(
        &req,
        &state,
        "token rotate-key",
        "",
        StatusCode::CREATED,
        async |auth| ops::rotate_key(auth).await,
    )
    .await
}

async fn retire_key(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    act(
        &req,
        &state,
        "token retire-key",
        &id,
        StatusCode::OK,
        async |auth| ops::retire_key(auth, &id).await,
    )
    .await
}
