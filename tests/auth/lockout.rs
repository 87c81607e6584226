//! The lock-out of failed logins (SECURITY §5): per user and per address,
//! across replicas and restarts, with forwarded headers counted only from
//! a trusted proxy.

use std::time::{Duration, Instant};

use concierge::auth::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::TestServer;
use crate::{add_user, common, login, replicas_with_alice, PASSWORD};

#[tokio::test]
async fn failed_logins_lock_out_and_the_lock_out_ends() {
    let server = TestServer::with(|s| {
        s.max_failed_logins = 3;
        s.login_lockout_secs = 2;
    });
    add_user(&server, "alice", Role::Operator).await;
    for _ in 0..3 {
        let (status, _) = login(&server, "alice", "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let resp = reqwest::Client::new()
        .post(server.http_url("/auth/token"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("retry-after").is_some());
    assert_eq!(resp.json::<Value>().await.unwrap()["reason"], "locked_out");

    let metrics = reqwest::get(server.http_url("/metrics")).await.unwrap();
    // Tokens are required now (an account exists): metrics need one.
    assert_eq!(metrics.status(), StatusCode::UNAUTHORIZED);

    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (status, body) = login(&server, "alice", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let metrics = reqwest::Client::new()
        .get(server.http_url("/metrics"))
        .bearer_auth(body["token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("concierge_lockouts_total"), "{metrics}");
}

/// `POST /auth/token` at `url` with a wrong password for `name`, and these
/// extra headers: the status.
async fn wrong_login(url: &str, name: &str, headers: &[(&str, &str)]) -> StatusCode {
    wrong_login_with(&reqwest::Client::new(), url, name, headers).await
}

/// [`wrong_login`] on `http`'s connections.
async fn wrong_login_with(
    http: &reqwest::Client,
    url: &str,
    name: &str,
    headers: &[(&str, &str)],
) -> StatusCode {
    let mut request = http
        .post(url)
        .json(&json!({"username": name, "password": "not the password"}));
    for (header, value) in headers {
        request = request.header(*header, *value);
    }
    request.send().await.expect("answered").status()
}

/// Sends 100 wrong logins for alice at once, spread over `servers`: how
/// many got their password checked (401) and how many were refused (429).
async fn storm(servers: &[&TestServer]) -> (usize, usize) {
    let urls: Vec<String> = servers.iter().map(|s| s.http_url("/auth/token")).collect();
    // One client: making one takes tens of milliseconds, and the first
    // requests would wait for the last client made.
    let http = reqwest::Client::new();
    let tries = (0..100).map(|i| {
        let (http, url) = (&http, &urls[i % urls.len()]);
        async move { wrong_login_with(http, url, "alice", &[]).await }
    });
    let statuses = futures_util::future::join_all(tries).await;
    let count = |status| statuses.iter().filter(|s| **s == status).count();
    let (checked, refused) = (
        count(StatusCode::UNAUTHORIZED),
        count(StatusCode::TOO_MANY_REQUESTS),
    );
    assert_eq!(checked + refused, 100, "{statuses:?}");
    (checked, refused)
}

#[tokio::test]
async fn parallel_wrong_logins_check_no_more_passwords_than_the_limit() {
    let server = TestServer::start();
    add_user(&server, "alice", Role::Operator).await;
    assert_eq!(storm(&[&server]).await, (5, 95));

    let (_redis, r1, r2, _auth) = replicas_with_alice().await;
    assert_eq!(storm(&[&r1, &r2]).await, (5, 95));
}

#[tokio::test]
async fn forwarding_headers_count_only_from_a_trusted_proxy() {
    // Nobody's proxy: what a client says of its address changes nothing,
    // failures from this socket's address lock it out.
    let open = TestServer::with(|s| s.max_failed_logins = 3);
    let url = open.http_url("/auth/token");
    for (i, claimed) in ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        .iter()
        .enumerate()
    {
        let user = format!("nobody{i}");
        let status = wrong_login(&url, &user, &[("x-forwarded-for", claimed)]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let status = wrong_login(&url, "nobody9", &[("forwarded", "for=198.51.100.4")]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    // Behind a trusted proxy (this test, on 127.0.0.1), the address it
    // appends is the client's; what the client wrote left of it is not.
    let proxied = TestServer::with(|s| {
        s.max_failed_logins = 3;
        s.trusted_proxies = "127.0.0.0/8".into();
    });
    let url = proxied.http_url("/auth/token");
    for i in 0..3 {
        let user = format!("nobody{i}");
        let spoofed = format!("192.0.2.{i}, 203.0.113.7");
        let status = wrong_login(&url, &user, &[("x-forwarded-for", &spoofed)]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let status = wrong_login(&url, "nobody9", &[("x-forwarded-for", "203.0.113.7")]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let status = wrong_login(&url, "nobody9", &[("x-forwarded-for", "203.0.113.8")]).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "another client is not locked out"
    );
}

#[tokio::test]
async fn failed_logins_still_count_after_a_restart_of_a_lone_gateway() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap().to_owned();
    let flags = ["--max-failed-logins", "3"];
    let mut gateway = common::process::serve_with("127.0.0.1:0", &data_dir, &flags);
    let addr = gateway.listening().await.to_string();
    let url = format!("http://{addr}/auth/token");
    for _ in 0..2 {
        assert_eq!(
            wrong_login(&url, "alice", &[]).await,
            StatusCode::UNAUTHORIZED
        );
    }
    gateway.signal("TERM");
    assert!(gateway.exit(Duration::from_secs(10)).await.success());

    let mut gateway = common::process::serve_with(&addr, &data_dir, &flags);
    gateway.listening().await;
    assert_eq!(
        wrong_login(&url, "alice", &[]).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        wrong_login(&url, "alice", &[]).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// `POST /auth/token` for `name` with `password`, through a proxy that
/// says the client is `address` (`X-Forwarded-For`): the status and body.
async fn login_from(
    server: &TestServer,
    name: &str,
    password: &str,
    address: &str,
) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(server.http_url("/auth/token"))
        .header("x-forwarded-for", address)
        .json(&json!({"username": name, "password": password}))
        .send()
        .await
        .expect("answered");
    let status = resp.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        assert!(
            resp.headers().get("retry-after").is_some(),
            "no Retry-After"
        );
    }
    (status, resp.json().await.expect("JSON body"))
}

/// The per-address lock-out (SECURITY §5, PROTOCOL §9.1): after
/// `max_failed_logins` failures from one address, whatever usernames they
/// named, that address is refused with 429 `locked_out` (and the seconds
/// left), even with a right password, for `login_lockout_secs` from the
/// failure that locked it (also once the failures' own window has passed);
/// another address logs in, as often as it likes (a right password gives
/// its place back); and the lock-out ends.
#[tokio::test]
async fn an_address_that_failed_too_often_is_locked_out_for_the_window_even_with_the_right_password(
) {
    const LOCKOUT: Duration = Duration::from_secs(3);
    let server = TestServer::with(|s| {
        s.max_failed_logins = 2;
        s.login_lockout_secs = LOCKOUT.as_secs();
        // This test is the proxy: 127.0.0.1 says who the client is.
        s.trusted_proxies = "127.0.0.0/8".into();
    });
    add_user(&server, "alice", Role::Operator).await;
    let (locked, other) = ("203.0.113.7", "203.0.113.8");

    // Two failures from one address, for two usernames (so no username is
    // locked out), 2 s apart: their counter's window ends LOCKOUT after
    // the first, the lock-out LOCKOUT after the second.
    let (status, _) = login_from(&server, "mallory", "not the password", locked).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let first = Instant::now();
    tokio::time::sleep_until((first + Duration::from_secs(2)).into()).await;
    let second = Instant::now();
    let (status, _) = login_from(&server, "trudy", "not the password", locked).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = login_from(&server, "alice", PASSWORD, locked).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["reason"], "locked_out", "{body}");
    // The lock-out's end is in whole seconds: LOCKOUT after the second
    // failure's second, less the seconds begun since.
    let begun = second.elapsed().as_secs() + 1;
    let left = body["retry_after"].as_u64().expect("retry_after");
    assert!(
        (LOCKOUT.as_secs().saturating_sub(begun)..=LOCKOUT.as_secs()).contains(&left),
        "{body}"
    );

    // Past the failures' window (which began at the first), within the
    // lock-out's (at least LOCKOUT - 1 s after the second: its end is in
    // whole seconds): still locked out.
    tokio::time::sleep_until((first + LOCKOUT + Duration::from_millis(300)).into()).await;
    assert!(
        second.elapsed() < LOCKOUT - Duration::from_millis(1_300),
        "too slow to check within the lock-out"
    );
    let (status, body) = login_from(&server, "alice", PASSWORD, locked).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");

    // Another address logs in, more often than max_failed_logins: a right
    // password gives back the place its login took.
    for _ in 0..3 {
        let (status, body) = login_from(&server, "alice", PASSWORD, other).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    // It ends: a right password from that address logs in again.
    let deadline = second + LOCKOUT + Duration::from_secs(2);
    loop {
        let (status, body) = login_from(&server, "alice", PASSWORD, locked).await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert!(
            Instant::now() < deadline,
            "still locked out after {:?}",
            second.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
