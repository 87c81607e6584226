//! Who a client is: logins and the tokens they give, the user a token
//! makes every origin carry, anonymous clients and when tokens are
//! required, the names a token allows (a host's exactly one), expiry, and
//! a second connection of a user taking its name over.

use std::time::{Duration, Instant};

use concierge::auth::{Role, TokenKind};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::process::command;
use crate::common::TestServer;
use crate::{
    add_user, auth_of, client_with, closed, identify, login, refused, replicas_with_alice, run,
    token, PASSWORD,
};

#[tokio::test]
async fn a_login_gives_a_token_with_its_validity_and_refusals_say_why() {
    let server = TestServer::start();
    add_user(&server, "alice", Role::Operator).await;

    let (status, body) = login(&server, "alice", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    let validity = body["validity"].as_u64().expect("validity");
    assert!((86_390..=86_400).contains(&validity), "{body}");
    let token = body["token"].as_str().unwrap().to_owned();

    let (status, body) = login(&server, "alice", "wrong password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        json!({"success": false, "reason": "password_invalid"})
    );
    let (status, body) = login(&server, "mallory", PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["reason"], "user_invalid");
    let resp = reqwest::Client::new()
        .post(server.http_url("/auth/token"))
        .header("content-type", "application/json")
        .body("username=alice")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.json::<Value>().await.unwrap()["reason"], "bad_request");

    // Presenting the token tells its remaining validity (seed 003).
    let http = reqwest::Client::new();
    let resp = http
        .get(server.http_url("/auth/token"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["success"], true);
    assert_eq!(body["user"], "alice");
    assert!(body["validity"].as_u64().unwrap() <= 86_400);
    let resp = http
        .get(server.http_url("/auth/token"))
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"success": false, "reason": "token_invalid"})
    );

    // A refresh gives a new token that works as well.
    let resp = http
        .post(server.http_url("/auth/token/refresh"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let refreshed = resp.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(refreshed, token);
    client_with(&server, "alice", &refreshed).await;
}

#[tokio::test]
async fn the_verified_user_travels_in_every_origin_and_cannot_be_forged() {
    let server = TestServer::start();
    add_user(&server, "alice", Role::Operator).await;
    add_user(&server, "bob", Role::Viewer).await;
    let mut alice = client_with(&server, "alice", &token(&server, "alice").await).await;
    let mut bob = client_with(&server, "bob", &token(&server, "bob").await).await;
    assert_eq!(alice.expect("CLIENT_JOINED").await["client"]["name"], "bob");

    alice
        .send(json!({
            "type": "MESSAGE",
            "target": {"type": "NAME", "name": "bob"},
            "origin": {"name": "root", "user": "admin", "roles": ["admin"]},
            "user": "admin",
            "data": {"cmd": "uptime"},
        }))
        .await;
    let message = bob.skip_to("MESSAGE").await;
    let origin = &message["origin"];
    assert_eq!(origin["name"], "alice", "{message}");
    assert_eq!(origin["user"], "alice", "{message}");
    assert_eq!(origin["roles"], json!(["operator", "viewer"]), "{message}");
    assert_eq!(message["data"], json!({"cmd": "uptime"}));

    // The same identity is what everyone sees of the client.
    bob.send(json!({"type": "CLIENT_FETCH_ALL"})).await;
    let all = bob.skip_to("CLIENT_FETCH_ALL_RESULT").await;
    let listed = all["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "bob")
        .cloned()
        .unwrap();
    assert_eq!(listed["user"], "bob");
    assert_eq!(listed["roles"], json!(["viewer"]));
}

#[tokio::test]
async fn anonymous_clients_are_marked_and_the_first_account_makes_tokens_required() {
    let server = TestServer::start();
    let mut anon = server.client("anon").await;
    anon.send(json!({"type": "SELF_FETCH"})).await;
    let me = anon.expect("SELF_FETCH_RESULT").await;
    assert_eq!(me["client"]["user"], Value::Null, "{me}");
    assert_eq!(me["client"]["roles"], json!([]), "{me}");

    add_user(&server, "alice", Role::Admin).await;
    // Other processes' writes reach the gateway within a second.
    assert_eq!(anonymous_until(&server, false).await, Err(4010));

    let strict = TestServer::with(|s| s.require_auth = true);
    let (code, reason) = refused(&strict, identify("anon", None)).await;
    assert_eq!(code, 4010);
    assert!(reason.contains("token"), "{reason}");
}

/// Identifies anonymously, again every 100 ms for up to 5 s, until the
/// gateway answers as wanted: HELLO (`Ok`) or a close (`Err` and its code).
async fn anonymous_until(server: &TestServer, hello: bool) -> Result<Value, u16> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut client = server.connect().await;
        client.send(identify("late", None)).await;
        let answer = tokio::time::timeout(Duration::from_secs(5), client.recv_any())
            .await
            .expect("HELLO or a close within 5 s");
        if answer.is_ok() == hello {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "an anonymous IDENTIFY still gets {answer:?} after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn removing_the_last_account_keeps_tokens_required_until_an_admin_allows_anonymous_clients() {
    let server = TestServer::start();
    let data = server.data.path();
    add_user(&server, "alice", Role::Admin).await;
    let mut alice = client_with(&server, "alice", &token(&server, "alice").await).await;

    run(&["user", "remove", "alice"], data, "").await;
    // Her socket closing says the gateway has reloaded what changed.
    assert_eq!(alice.expect_close().await.0, 4013);
    let (code, reason) = refused(&server, identify("host1", None)).await;
    assert_eq!(code, 4010, "{reason}");
    let metrics = reqwest::get(server.http_url("/metrics")).await.unwrap();
    assert_eq!(metrics.status(), StatusCode::UNAUTHORIZED);

    // Only an admin's word opens it again, and not while accounts exist.
    add_user(&server, "bob", Role::Viewer).await;
    let out = command(&["user", "allow-anonymous", "--local", "--data-dir"])
        .arg(data)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("accounts exist"), "{stderr}");
    run(&["user", "remove", "bob"], data, "").await;
    run(&["user", "allow-anonymous"], data, "").await;
    let hello = anonymous_until(&server, true).await.unwrap();
    assert_eq!(hello["type"], "HELLO", "{hello}");
}

#[tokio::test]
async fn bad_tokens_and_names_a_token_does_not_allow_close_with_their_codes() {
    let server = TestServer::with(|s| s.require_auth = true);
    add_user(&server, "alice", Role::Operator).await;
    let token = token(&server, "alice").await;

    let (code, _) = refused(&server, identify("alice", Some("garbage"))).await;
    assert_eq!(code, 4011);
    let mut altered = token.clone();
    altered.pop();
    let (code, _) = refused(&server, identify("alice", Some(&altered))).await;
    assert_eq!(code, 4011);
    let (code, reason) = refused(&server, identify("bob", Some(&token))).await;
    assert_eq!(code, 4014);
    assert!(reason.contains("alice"), "{reason}");
    let (code, _) = refused(&server, identify("alicex", Some(&token))).await;
    assert_eq!(code, 4014);
    // Names under the token's own are the same user's.
    client_with(&server, "alice_ctl", &token).await;
}

/// Issues a host's token (role `agent`), as `concierge token issue --role
/// agent` does, beside the running gateway. Call it after a login, so that
/// the gateway already holds the signing key it is signed with.
async fn host_token(server: &TestServer, host: &str) -> String {
    auth_of(server, "")
        .await
        .issue(
            host,
            host,
            Role::Agent,
            Duration::from_secs(3600),
            TokenKind::Issued,
        )
        .await
        .expect("host token issued")
        .token
}

#[tokio::test]
async fn a_host_token_names_exactly_one_host() {
    let server = TestServer::with(|s| s.require_auth = true);
    add_user(&server, "alice", Role::Operator).await;
    let alice = token(&server, "alice").await;
    let web = host_token(&server, "web").await;
    let web_db = host_token(&server, "web_db").await;

    // Host web cannot take host web_db's name (and lock it out with 4005).
    let (code, reason) = refused(&server, identify("web_db", Some(&web))).await;
    assert_eq!(code, 4014, "{reason}");
    assert!(reason.contains("only the host name \"web\""), "{reason}");
    client_with(&server, "web_db", &web_db).await;
    client_with(&server, "web", &web).await;
    // Beside its agent, the host's own ctl (which fetches its VPN config).
    client_with(&server, "web_ctl_0a9f3c", &web).await;
    // A person's extra clients keep their names under the person's.
    client_with(&server, "alice_ctl", &alice).await;
}

#[tokio::test]
async fn only_the_host_itself_creates_its_telemetry_and_audit_services() {
    let server = TestServer::with(|s| s.require_auth = true);
    add_user(&server, "vic", Role::Viewer).await;
    // A person whose account happens to be named like a host is no host.
    add_user(&server, "host3", Role::Viewer).await;
    let vic = token(&server, "vic").await;
    let host3 = token(&server, "host3").await;
    let host1 = host_token(&server, "host1").await;
    let host2 = host_token(&server, "host2").await;
    let create = |service: &str| json!({"type": "SERVICE_CREATE", "service": service});

    // Before host1's agent connects, nobody else can take its services:
    // not a viewer, not another host, not a person named like a host.
    let mut vic = client_with(&server, "vic", &vic).await;
    let mut host2 = client_with(&server, "host2", &host2).await;
    let mut person = client_with(&server, "host3", &host3).await;
    for (seq, service) in ["telemetry_host1", "audit_host1"].into_iter().enumerate() {
        for client in [&mut vic, &mut host2] {
            let reply = client.answer(create(service), seq as u64).await;
            assert_eq!(reply["type"], "BAD", "{reply}");
            let desc = reply["desc"].as_str().unwrap_or_default();
            assert!(desc.contains("reserved for host \"host1\""), "{desc}");
        }
    }
    let reply = person.answer(create("telemetry_host3"), 0).await;
    assert_eq!(reply["type"], "BAD", "{reply}");

    // The host itself creates them.
    let mut host1 = client_with(&server, "host1", &host1).await;
    for (seq, service) in ["telemetry_host1", "audit_host1"].into_iter().enumerate() {
        let reply = host1.answer(create(service), seq as u64).await;
        assert_eq!(reply["type"], "SERVICE_CREATE_RESULT", "{reply}");
        assert_eq!(reply["successful"], true, "{reply}");
    }
}

#[tokio::test]
async fn an_expired_token_closes_its_socket_and_is_refused() {
    let server = TestServer::with(|s| s.token_validity_secs = 2);
    add_user(&server, "alice", Role::Operator).await;
    let token = token(&server, "alice").await;
    let mut alice = client_with(&server, "alice", &token).await;
    let (code, reason) = alice.expect_close().await;
    assert_eq!(code, 4012, "{reason}");
    let (code, _) = refused(&server, identify("alice", Some(&token))).await;
    assert_eq!(code, 4012);
}

#[tokio::test]
async fn a_second_connection_of_the_same_user_takes_the_name_over() {
    let server = TestServer::start();
    add_user(&server, "alice", Role::Operator).await;
    add_user(&server, "bob", Role::Operator).await;
    let bob_token = token(&server, "bob").await;
    let token = token(&server, "alice").await;
    let mut first = client_with(&server, "alice", &token).await;
    let mut watcher = client_with(&server, "bob", &bob_token).await;
    watcher.expect_nothing_queued().await;

    let mut second = client_with(&server, "alice", &token).await;
    assert_eq!(closed(&mut first).await, 4015);
    // Everyone sees the old client leave and the new one join.
    let left = watcher.skip_to("CLIENT_LEFT").await;
    assert_eq!(left["client"]["uuid"], first.uuid.to_string());
    let joined = watcher.skip_to("CLIENT_JOINED").await;
    assert_eq!(joined["client"]["uuid"], second.uuid.to_string());
    second.send(json!({"type": "SELF_FETCH"})).await;
    assert_eq!(
        second.skip_to("SELF_FETCH_RESULT").await["client"]["name"],
        "alice"
    );

    // Another user's token cannot take the name, and neither can a client
    // without a token on an open gateway.
    let (code, _) = refused(&server, identify("bob", Some(&token))).await;
    assert_eq!(code, 4014);
    let open = TestServer::start();
    let _held = open.client("carol").await;
    let (code, _) = refused(&open, identify("carol", None)).await;
    assert_eq!(code, 4005);
}

#[tokio::test]
async fn a_takeover_reaches_a_socket_on_another_replica() {
    let (_redis, r1, r2, _auth) = replicas_with_alice().await;
    let token = token(&r1, "alice").await;
    let mut first = client_with(&r1, "alice", &token).await;
    // r2 knows of the client on r1 once its CLIENT_JOINED went round.
    let mut probe = client_with(&r2, "alice_probe", &token).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        probe.send(json!({"type": "CLIENT_FETCH_ALL"})).await;
        let all = probe.skip_to("CLIENT_FETCH_ALL_RESULT").await;
        if all["clients"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "alice")
        {
            break;
        }
        assert!(Instant::now() < deadline, "r2 never saw alice: {all}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut second = client_with(&r2, "alice", &token).await;
    assert_eq!(closed(&mut first).await, 4015);
    second.send(json!({"type": "SELF_FETCH"})).await;
    assert_eq!(
        second.skip_to("SELF_FETCH_RESULT").await["client"]["name"],
        "alice"
    );
}
