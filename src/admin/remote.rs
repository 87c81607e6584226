//! The admin commands through a gateway's admin API (`/admin/…`, see
//! `gateway::admin_api`): one HTTP request per operation, with the
//! token as `Authorization: Bearer`, and the gateway's failures turned back
//! into [`AdminError`]s that say what to do.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::ops::{AdminError, Outcome};
use crate::protocol::admin::AdminFailure;
use concierge_client::context::{why_unreachable, GatewayUrl, Resolved};

/// How long one request may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(30);

pub(super) struct Remote {
    http: reqwest::Client,
    gateway: GatewayUrl,
    token: Option<String>,
}

impl Remote {
    pub(super) fn new(resolved: Resolved) -> Outcome<Remote> {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| AdminError::Failed(format!("cannot make an HTTP client: {e}")))?;
        Ok(Remote {
            http,
            gateway: resolved.gateway,
            token: resolved.token,
        })
    }

    pub(super) async fn get<T: DeserializeOwned>(&self, path: &[&str]) -> Outcome<T> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub(super) async fn post<T: DeserializeOwned>(
        &self,
        path: &[&str],
        body: &impl Serialize,
    ) -> Outcome<T> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub(super) async fn put<T: DeserializeOwned>(
        &self,
        path: &[&str],
        body: &impl Serialize,
    ) -> Outcome<T> {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub(super) async fn delete<T: DeserializeOwned>(&self, path: &[&str]) -> Outcome<T> {
        self.call(Method::DELETE, path, None::<&()>).await
    }

    /// `/admin/` and the segments of `path`, each escaped.
    fn url(&self, path: &[&str]) -> Outcome<reqwest::Url> {
        let mut url = reqwest::Url::parse(&self.gateway.http("/admin"))
            .map_err(|e| AdminError::Invalid(format!("{}: {e}", self.gateway)))?;
        url.path_segments_mut()
            .map_err(|()| AdminError::Invalid(format!("{}: not a base URL", self.gateway)))?
            .extend(path);
        Ok(url)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        body: Option<&impl Serialize>,
    ) -> Outcome<T> {
        let mut request = self.http.request(method, self.url(path)?);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let unreachable = |e: reqwest::Error| {
            AdminError::Unreachable(format!(
                "cannot reach {}: {}",
                self.gateway,
                why_unreachable(&e)
            ))
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                AdminError::Failed(format!(
                    "{}: an answer this command cannot read: {e}",
                    self.gateway
                ))
            });
        }
        let Ok(failure) = serde_json::from_slice::<AdminFailure>(&bytes) else {
            return Err(AdminError::Failed(format!(
                "{} answered {status} without an admin API's answer: is it a concierge gateway \
                 of this version?",
                self.gateway
            )));
        };
        let desc = failure.desc;
        Err(match status {
            StatusCode::BAD_REQUEST => AdminError::Invalid(desc),
            StatusCode::NOT_FOUND => AdminError::NotFound(desc),
            StatusCode::CONFLICT => AdminError::Exists(desc),
            StatusCode::UNAUTHORIZED => AdminError::Unauthorized(format!(
                "{}: {desc} (log in as an admin: `concierge login {} USER`, or pass --token)",
                self.gateway, self.gateway
            )),
            StatusCode::FORBIDDEN => AdminError::Forbidden(format!("{}: {desc}", self.gateway)),
            _ => AdminError::Failed(format!("{}: {status}: {desc}", self.gateway)),
        })
    }
}
