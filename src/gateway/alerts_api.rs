//! `GET /alerts`: the alerts firing now and the latest events over HTTP
//! (PROTOCOL §21), for a monitoring system that polls: the `alerts`
//! request's query (`before`, `limit`) and answer, with a viewer's token
//! as `Authorization: Bearer <token>` (none on a gateway that requires
//! none), failures as `/jobs` answers them.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::jobs_api::{answer, caller};
use super::AppState;
use crate::auth::Role;
use crate::protocol::agent::Failure;
use crate::protocol::alerts::AlertsQuery;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/alerts", web::get().to(alerts));
}

async fn alerts(
    req: HttpRequest,
    query: Result<web::Query<AlertsQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let outcome = async {
        caller(&req, &state, Role::Viewer)?;
        let query = query.map_err(|e| Failure::bad_argument(e.to_string()))?;
        state.alerts.page(&query).await
    };
    answer(StatusCode::OK, outcome.await)
}
