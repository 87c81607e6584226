//! Browser origins: a page of another origin can neither open a WebSocket
//! (on any of the gateway's paths) nor post a login, while the gateway's own
//! pages, the configured origins and programs (no `Origin`) can; a login is
//! JSON only. Against a real gateway with real WebSocket and HTTP clients.

mod common;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;

/// Every path a WebSocket may be opened on.
const PATHS: [&str; 4] = [
    "/ws",
    "/nest",
    "/wsi",
    "/socket.io/?EIO=4&transport=websocket",
];

/// Opens a WebSocket on `path` with this `Origin` (none for `None`): the
/// HTTP status of the refusal, or 101 once upgraded.
async fn upgrade(server: &TestServer, path: &str, origin: Option<&str>) -> (u16, String) {
    let mut request = format!("ws://{}{path}", server.addr)
        .into_client_request()
        .expect("a request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("a header value"));
    }
    let connected =
        tokio::time::timeout(common::PATIENCE, tokio_tungstenite::connect_async(request))
            .await
            .expect("answered in time");
    match connected {
        Ok((_, response)) => (response.status().as_u16(), String::new()),
        Err(WsError::Http(response)) => (
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(e) => panic!("{path} with origin {origin:?}: {e}"),
    }
}

#[tokio::test]
async fn only_the_gateways_own_and_allowed_origins_open_websockets_on_every_path() {
    let server = TestServer::with(|s| s.allowed_origins = "https://app.example".into());
    let own = format!("http://{}", server.addr);
    for path in PATHS {
        for origin in ["http://evil.example", "null", "https://app.example:444"] {
            let (status, body) = upgrade(&server, path, Some(origin)).await;
            assert_eq!(status, 403, "{path} from {origin}: {body}");
            assert!(body.contains("allowed_origins"), "{path}: {body}");
        }
        for origin in [None, Some(own.as_str()), Some("https://app.example")] {
            let (status, body) = upgrade(&server, path, origin).await;
            assert_eq!(status, 101, "{path} from {origin:?}: {body}");
        }
    }
}

#[tokio::test]
async fn an_asterisk_in_allowed_origins_lets_every_origin_open_websockets() {
    let server = TestServer::with(|s| s.allowed_origins = "*".into());
    for path in PATHS {
        for origin in [Some("http://evil.example"), Some("null"), None] {
            let (status, body) = upgrade(&server, path, origin).await;
            assert_eq!(status, 101, "{path} from {origin:?}: {body}");
        }
    }
}

/// A CORS preflight for an upload to the file server from `origin`: the
/// status and the `Access-Control-Allow-Origin` it carries.
async fn preflight(server: &TestServer, origin: &str) -> (StatusCode, Option<String>) {
    let response = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            server.http_url("/fs/alice/notes.txt"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-fs-key")
        .send()
        .await
        .expect("answered");
    let allowed = response
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().expect("text").to_owned());
    (response.status(), allowed)
}

#[tokio::test]
async fn the_file_server_answers_cors_preflights_of_allowed_origins_only() {
    let server = TestServer::with(|s| s.allowed_origins = "https://app.example".into());
    let (status, allowed) = preflight(&server, "https://app.example").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(allowed.as_deref(), Some("https://app.example"));
    let (status, allowed) = preflight(&server, "http://evil.example").await;
    assert!(status.is_client_error(), "{status}");
    assert_eq!(allowed, None);
    let every = TestServer::with(|s| s.allowed_origins = "*".into());
    let (status, allowed) = preflight(&every, "http://evil.example").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(allowed.as_deref(), Some("*"));
}

async fn post_login(
    server: &TestServer,
    origin: Option<&str>,
    content_type: &str,
    body: String,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(server.http_url("/auth/token"))
        .header("content-type", content_type)
        .body(body);
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.expect("answered");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn a_cross_site_login_is_refused_before_it_counts_and_a_login_is_json_only() {
    let server = TestServer::with(|s| s.max_failed_logins = 2);
    let data = server.data.path().to_str().unwrap().to_owned();
    common::process::add_user(&["--data-dir", &data], "alice", "operator", "correct horse").await;
    let wrong = json!({"username": "alice", "password": "guessing"}).to_string();
    // A page elsewhere posting wrong passwords, as JSON or as a form: each
    // refused before the password is checked, so nothing locks alice out.
    let form = "username=alice&password=guessing".to_owned();
    for _ in 0..4 {
        for (content_type, body) in [
            ("application/json", wrong.clone()),
            ("application/x-www-form-urlencoded", form.clone()),
        ] {
            let (status, body) =
                post_login(&server, Some("http://evil.example"), content_type, body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
            assert_eq!(body["reason"], "origin_refused", "{body}");
        }
        // Without an Origin (a program), a form is still not a login.
        let (status, body) = post_login(
            &server,
            None,
            "application/x-www-form-urlencoded",
            form.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
        assert_eq!(body["reason"], "unsupported_media_type", "{body}");
        let (status, body) = post_login(&server, None, "text/plain", wrong.clone()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    }
    let right = json!({"username": "alice", "password": "correct horse"}).to_string();
    // The gateway's own page (the console) logs in.
    let own = format!("http://{}", server.addr);
    let (status, body) = post_login(
        &server,
        Some(&own),
        "application/json; charset=utf-8",
        right.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post_login(&server, None, "application/json", right).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
