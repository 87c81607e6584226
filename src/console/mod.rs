//! The web console: a page served by the gateway itself at `/console/`,
//! for operators who would rather look than read.
//!
//! Everything it needs is compiled into the binary ([`Assets`], the files
//! under `src/console/assets/`), so a gateway with no network beyond its
//! clients still serves it, and a page and the gateway that serves it are
//! always of one version. There is no build step: the page is plain HTML,
//! CSS and JavaScript modules, and its one library, Chart.js, is the file
//! Debian's `libjs-chart.js` package ships (`assets/vendor/`, with its
//! licence), copied in as it is.
//!
//! One file is not a copy but made from the protocol's types when the
//! gateway starts: `js/requests.js`, the agent's requests with who may
//! send them, the signals a request may name, and the words of jobs (the
//! gateway's job requests, the host states and what each means)
//! ([`requests_js`]), so the console offers what the agents and the
//! gateway serve.
//!
//! The page is an ordinary client of the protocol: it logs in with
//! `POST /auth/token`, connects to `/ws` with that token and asks the
//! agents what `ctl` asks them. The server side is only this file server;
//! what the console may do is what its token may do, checked where it is
//! always checked (the gateway, the agents).

use std::borrow::Cow;
use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use rust_embed::Embed;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use strum::IntoEnumIterator;

use crate::protocol::agent::{signals, GatewayRequestName, RequestName};
use crate::protocol::alerts::{ALERTS_SERVICE, MAX_ALERTS_PAGE, MAX_RULES};
use crate::protocol::fleet::MAX_HOSTS_PAGE;
use crate::protocol::health::{
    DEFAULT_HISTORY_SECS, DEFAULT_SUMMARY_INTERVAL_SECS, MAX_HISTORY_POINTS, STALE_INTERVALS,
    TREND_POINTS,
};
use crate::protocol::jobs::{HostState, JOB_PREFIX, MAX_JOBS_PAGE, MAX_JOB_SECS};
use crate::protocol::GATEWAY_NAME;

/// The console's files, embedded at build time.
#[derive(Embed)]
#[folder = "src/console/assets/"]
struct Assets;

/// The generated module the console imports its request table from.
const REQUESTS_JS: &str = "js/requests.js";

/// `js/requests.js`: `ACCESS`, each request's access (`read` or
/// `command`), `SIGNALS`, and for the Jobs page `GATEWAY` (the gateway's
/// reserved name), `JOBS` (its job requests, the event services' prefix,
/// the limits) and `HOST_STATES` ([`host_states`]); for the Fleet and Host
/// pages `FLEET` (the inventory's and history's requests and limits), for
/// the Alerts page `ALERTS` (its requests, its service, its limits), from
/// the protocol's types.
fn requests_js() -> &'static (String, String) {
    static MADE: LazyLock<(String, String)> = LazyLock::new(|| {
        let signals: Vec<&str> = signals::names().collect();
        let request = |name: GatewayRequestName| -> &'static str { name.into() };
        let jobs = json!({
            "create": request(GatewayRequestName::JobCreate),
            "get": request(GatewayRequestName::JobGet),
            "list": request(GatewayRequestName::Jobs),
            "cancel": request(GatewayRequestName::JobCancel),
            "output": request(GatewayRequestName::JobOutput),
            "prefix": JOB_PREFIX,
            "max_secs": MAX_JOB_SECS,
            "max_page": MAX_JOBS_PAGE,
        });
        let fleet = json!({
            "hosts": request(GatewayRequestName::Hosts),
            "history": request(GatewayRequestName::History),
            "max_page": MAX_HOSTS_PAGE,
            "summary_interval": DEFAULT_SUMMARY_INTERVAL_SECS,
            "stale_intervals": STALE_INTERVALS,
            "trend_points": TREND_POINTS,
            "max_history_points": MAX_HISTORY_POINTS,
            "history_secs": DEFAULT_HISTORY_SECS,
        });
        let alerts = json!({
            "list": request(GatewayRequestName::Alerts),
            "rules": request(GatewayRequestName::AlertRules),
            "set": request(GatewayRequestName::AlertRuleSet),
            "delete": request(GatewayRequestName::AlertRuleDelete),
            "service": ALERTS_SERVICE,
            "max_rules": MAX_RULES,
            "max_page": MAX_ALERTS_PAGE,
        });
        let text = format!(
            "// Made by the gateway from its protocol types (src/console/mod.rs): not a file to edit.\n\
             /** Each request an agent serves, with who may send it (PROTOCOL §13.2, §13.3). */\n\
             export const ACCESS = {};\n\
             /** The signals a request may name (PROTOCOL §13.3). */\n\
             export const SIGNALS = {};\n\
             /** The name the gateway answers its own requests under (PROTOCOL §14). */\n\
             export const GATEWAY = {};\n\
             /** The gateway's job requests, the prefix of a job's event service, the longest wait and timeout, the longest page of jobs (PROTOCOL §19). */\n\
             export const JOBS = {};\n\
             /** Each host state of a job, in order: whether it is final, and how the host went with exit code 0 and with any other (PROTOCOL §19). */\n\
             export const HOST_STATES = {};\n\
             /** The inventory's and the history's requests and limits; `summary_interval` is the protocol's default (PROTOCOL §18, §20). */\n\
             export const FLEET = {};\n\
             /** The alerts' requests, their service, the most rules and the longest page of events (PROTOCOL §21). */\n\
             export const ALERTS = {};\n",
            RequestName::table(),
            json!(signals),
            json!(GATEWAY_NAME),
            jobs,
            host_states(),
            fleet,
            alerts,
        );
        let etag = format!(
            "\"{}\"",
            URL_SAFE_NO_PAD.encode(&Sha256::digest(text.as_bytes())[..16])
        );
        (text, etag)
    });
    &MADE
}

/// Every host state with what the protocol says of it, for the page's
/// badges and counts: `final` ([`HostState::is_final`]) and, for a host
/// whose exit code is 0 (`exit_0`) and for any other (`exit_other`), how
/// it went: `pending` (not final), `bad` (it ran and went wrong:
/// [`HostState::failed_run`]), `none` (it did not succeed without a run
/// going wrong: offline, expired, skipped, cancelled:
/// [`HostState::unsuccessful`]) or `ok`.
fn host_states() -> Value {
    let outcome = |state: HostState, exit_code: Option<i32>| {
        if !state.is_final() {
            "pending"
        } else if state.failed_run(exit_code) {
            "bad"
        } else if state.unsuccessful(exit_code) {
            "none"
        } else {
            "ok"
        }
    };
    HostState::iter()
        .map(|state| {
            json!({
                "state": state.as_str(),
                "final": state.is_final(),
                "exit_0": outcome(state, Some(0)),
                "exit_other": outcome(state, None),
            })
        })
        .collect()
}

/// The console page may load only what it ships and talk only to its own
/// gateway: no inline scripts, no third-party origin, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' blob:; connect-src 'self'; \
     font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(to_console))
        .route("/console", web::get().to(to_console))
        .service(
            web::resource("/console/{path:.*}")
                .route(web::get().to(asset))
                .route(web::head().to(asset)),
        );
}

/// `/` and `/console` lead to the console's page.
async fn to_console() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/console/"))
        .finish()
}

/// One embedded file (`index.html` for the folder itself), revalidated by
/// its content hash on every load: an upgraded gateway never leaves a
/// browser running last version's scripts.
async fn asset(req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let path = path.into_inner();
    let path = if path.is_empty() {
        "index.html"
    } else {
        path.as_str()
    };
    let (data, etag, mime) = if path == REQUESTS_JS {
        let (text, etag) = requests_js();
        (
            Bytes::from_static(text.as_bytes()),
            etag.clone(),
            "text/javascript".to_owned(),
        )
    } else {
        let Some(file) = Assets::get(path) else {
            return HttpResponse::NotFound()
                .content_type("text/plain; charset=utf-8")
                .body(format!("the console has no file {path:?}"));
        };
        let etag = format!(
            "\"{}\"",
            URL_SAFE_NO_PAD.encode(&file.metadata.sha256_hash()[..16])
        );
        // Embedded files are static: served without a copy.
        let data = match file.data {
            Cow::Borrowed(bytes) => Bytes::from_static(bytes),
            Cow::Owned(bytes) => Bytes::from(bytes),
        };
        (data, etag, file.metadata.mimetype().to_owned())
    };
    let unchanged = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tag| tag.as_bytes() == etag.as_bytes());
    let mut answer = if unchanged {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    answer
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    if unchanged {
        return answer.finish();
    }
    let text = mime.starts_with("text/") || mime.ends_with("javascript") || mime.ends_with("+xml");
    if text {
        answer.content_type(format!("{mime}; charset=utf-8"));
    } else {
        answer.content_type(mime);
    }
    answer.body(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_table_is_made_from_the_types() {
        let (text, etag) = requests_js();
        assert!(text.contains(r#"export const ACCESS = {"#), "{text}");
        assert!(text.contains(r#""execute":"command""#), "{text}");
        assert!(text.contains(r#""ping":"read""#), "{text}");
        assert!(
            text.contains(r#"export const SIGNALS = ["SIGTERM","#),
            "{text}"
        );
        assert!(etag.starts_with('"') && etag.len() > 10, "{etag}");
        assert!(
            text.contains(r#"export const GATEWAY = "concierge";"#),
            "{text}"
        );
        assert!(text.contains(r#""create":"job_create""#), "{text}");
        assert!(text.contains(r#""list":"jobs""#), "{text}");
        assert!(text.contains(r#""prefix":"job_""#), "{text}");
        assert!(text.contains(r#""history":"history""#), "{text}");
        assert!(text.contains(r#""service":"alerts""#), "{text}");
        assert!(text.contains(r#""set":"alert_rule_set""#), "{text}");
    }

    #[test]
    fn host_states_say_how_a_host_went() {
        let states = host_states();
        let states = states.as_array().expect("a list");
        assert_eq!(states.len(), HostState::iter().count());
        assert_eq!(states[0]["state"], "queued", "in the protocol's order");
        let of = |name: &str| {
            states
                .iter()
                .find(|s| s["state"] == name)
                .unwrap_or_else(|| panic!("no {name}"))
                .clone()
        };
        assert_eq!(
            of("exited"),
            json!({"state": "exited", "final": true, "exit_0": "ok", "exit_other": "bad"})
        );
        assert_eq!(of("running")["exit_0"], "pending");
        assert_eq!(of("running")["final"], false);
        assert_eq!(of("done")["exit_other"], "ok");
        for bad in ["failed", "timed_out"] {
            assert_eq!(of(bad)["exit_0"], "bad", "{bad}");
        }
        for none in ["offline", "expired", "skipped", "cancelled"] {
            assert_eq!(of(none)["exit_other"], "none", "{none}");
        }
    }
}
