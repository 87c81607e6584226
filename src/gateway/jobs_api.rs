//! `/jobs`: jobs over HTTP, for automation (a CI pipeline runs a job and
//! waits for it) with the very types and rules of the WebSocket requests
//! (PROTOCOL §19.6): `POST /jobs` creates one, `GET /jobs/{id}` reads it
//! (with `wait_secs`, once it is over), `POST /jobs/{id}/cancel` stops it,
//! `GET /jobs` lists the latest, `GET /jobs/{id}/hosts/{host}` gives one
//! host's output.
//!
//! A request carries `Authorization: Bearer <token>`; creating and
//! cancelling need an operator, reading a viewer. A gateway that requires
//! no token takes requests without one, as over the WebSocket (each agent
//! then decides with its `anonymous_role`). Failures are an HTTP status
//! with the protocol's [`Failure`] as the body.

use std::time::Duration;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::http::bearer_token;
use super::{origin, AppState};
use crate::auth::Role;
use crate::fleet::jobs::{Created, Creator};
use crate::protocol::agent::{authorize, Failure, Reason};
use crate::protocol::jobs::{
    HostRef, HostState, JobId, JobQuery, JobSpec, JobsQuery, MAX_JOB_SECS,
};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/jobs")
            .service(web::resource("").get(list).post(create))
            .service(web::resource("/{id}").get(get))
            .service(web::resource("/{id}/cancel").post(cancel))
            .service(web::resource("/{id}/hosts/{host}").get(output)),
    );
}

/// The status a failure is answered with.
fn failure(f: &Failure) -> HttpResponse {
    let status = match f.reason {
        Reason::BadArgument | Reason::Malformed => StatusCode::BAD_REQUEST,
        Reason::NotAuthenticated => StatusCode::UNAUTHORIZED,
        Reason::Forbidden => StatusCode::FORBIDDEN,
        Reason::NotFound => StatusCode::NOT_FOUND,
        Reason::Limit => StatusCode::TOO_MANY_REQUESTS,
        Reason::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut response = HttpResponse::build(status);
    if status == StatusCode::UNAUTHORIZED {
        response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
    }
    response.json(f.to_msg())
}

/// Who asks, if they may do what needs `needed`.
pub(super) fn caller(
    req: &HttpRequest,
    state: &AppState,
    needed: Role,
) -> Result<Creator, Failure> {
    if !origin::allowed(req.headers(), &state.settings) {
        return Err(Failure::new(Reason::Forbidden, origin::REFUSED));
    }
    let Some(token) = bearer_token(req) else {
        if state.auth.required() {
            return Err(Failure::new(
                Reason::NotAuthenticated,
                "send a token as Authorization: Bearer <token> (`concierge login URL USER`)",
            ));
        }
        return Ok(Creator {
            user: None,
            roles: Vec::new(),
            client: "http".into(),
        });
    };
    let claims = state.auth.verify(token).map_err(|why| {
        Failure::new(
            Reason::NotAuthenticated,
            format!("the token is refused: {}", why.reason()),
        )
    })?;
    let roles = claims.role.implied();
    authorize(Some(&claims.sub), roles, needed)?;
    Ok(Creator {
        roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
        client: format!("{} (http)", claims.name),
        user: Some(claims.sub),
    })
}

pub(super) fn answer<T: serde::Serialize>(
    status: StatusCode,
    outcome: Result<T, Failure>,
) -> HttpResponse {
    match outcome {
        Ok(body) => HttpResponse::build(status).json(body),
        Err(f) => failure(&f),
    }
}

fn job_id(raw: &str) -> Result<JobId, Failure> {
    raw.parse().map_err(Failure::bad_argument)
}

async fn create(req: HttpRequest, bytes: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let creator = match caller(&req, &state, Role::Operator) {
        Ok(c) => c,
        Err(f) => return failure(&f),
    };
    let spec = match serde_json::from_slice::<JobSpec>(&bytes) {
        Ok(spec) => spec,
        Err(e) => {
            return failure(&Failure::bad_argument(format!(
                "the body is not a job: {e}"
            )))
        }
    };
    match state.jobs.create(spec, creator).await {
        Ok(Created::Job(job)) => HttpResponse::Created()
            .insert_header((header::LOCATION, format!("/jobs/{}", job.id)))
            .json(job),
        Ok(Created::Preview(preview)) => HttpResponse::Ok().json(preview),
        Err(f) => failure(&f),
    }
}

/// `GET /jobs/{id}`'s query: [`JobQuery`]'s fields and `wait_secs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetQuery {
    offset: Option<u64>,
    limit: Option<u64>,
    state: Option<HostState>,
    #[serde(default)]
    output: bool,
    wait_secs: Option<u64>,
}

async fn get(
    req: HttpRequest,
    id: web::Path<String>,
    query: Result<web::Query<GetQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let outcome = async {
        caller(&req, &state, Role::Viewer)?;
        let query = query.map_err(|e| Failure::bad_argument(e.to_string()))?;
        let job = JobQuery {
            job: job_id(&id)?,
            offset: query.offset,
            limit: query.limit,
            state: query.state,
            output: query.output,
        };
        match query.wait_secs {
            Some(secs) => {
                let wait = Duration::from_secs(secs.min(MAX_JOB_SECS));
                state.jobs.wait(&job, wait).await
            }
            None => state.jobs.get(&job).await,
        }
    };
    answer(StatusCode::OK, outcome.await)
}

async fn list(
    req: HttpRequest,
    query: Result<web::Query<JobsQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let outcome = async {
        caller(&req, &state, Role::Viewer)?;
        let query = query.map_err(|e| Failure::bad_argument(e.to_string()))?;
        state.jobs.list(&query).await
    };
    answer(StatusCode::OK, outcome.await)
}

async fn cancel(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let outcome = async {
        let by = caller(&req, &state, Role::Operator)?;
        let who = by.user.unwrap_or(by.client);
        state.jobs.cancel(&job_id(&id)?, &who).await
    };
    answer(StatusCode::OK, outcome.await)
}

async fn output(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let outcome = async {
        caller(&req, &state, Role::Viewer)?;
        let (job, host) = path.into_inner();
        let host = HostRef {
            job: job_id(&job)?,
            host,
        };
        state.jobs.output(&host).await
    };
    answer(StatusCode::OK, outcome.await)
}
