//! Accounts, tokens, revocation, lock-outs, user settings and the file
//! server's keys, against a real gateway (in this process or as the real
//! binary), real WebSocket clients and, across replicas, a real Redis.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::process::{command, Process};
use common::redis::RedisServer;
use common::{Client, TestServer};
use concierge::auth::{accounts, tokens, Auth, Claims, Role, TokenKind};
use concierge::config::Settings;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

const PASSWORD: &str = "correct horse battery";

/// The settings that find a test server's store.
fn store_settings(server: &TestServer, redis_url: &str) -> Settings {
    Settings {
        data_dir: server.data.path().to_owned(),
        redis_url: redis_url.to_owned(),
        ..Settings::default()
    }
}

async fn auth_of(server: &TestServer, redis_url: &str) -> std::sync::Arc<Auth> {
    let settings = store_settings(server, redis_url);
    let store = concierge::cluster::open_store(&settings.cluster())
        .await
        .expect("store opens");
    Auth::open(store, &settings).await.expect("auth opens")
}

/// Creates an account in a gateway's store (one running alone).
async fn add_user(server: &TestServer, name: &str, role: Role) {
    let auth = auth_of(server, "").await;
    accounts::add(auth.store(), name, role, PASSWORD)
        .await
        .expect("account created");
    // Written beside the gateway, as `concierge user add` does: the gateway
    // learns of it from the store's changes (within its poll). Once it has,
    // tokens are required: /metrics refuses a request without one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while reqwest::get(server.http_url("/metrics"))
        .await
        .unwrap()
        .status()
        != StatusCode::UNAUTHORIZED
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway did not learn that an account exists"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn login(server: &TestServer, name: &str, password: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(server.http_url("/auth/token"))
        .json(&json!({"username": name, "password": password}))
        .send()
        .await
        .expect("answered");
    let status = resp.status();
    (status, resp.json().await.expect("JSON body"))
}

async fn token(server: &TestServer, name: &str) -> String {
    let (status, body) = login(server, name, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["token"].as_str().expect("token").to_owned()
}

fn identify(name: &str, token: Option<&str>) -> Value {
    let mut identify = json!({"type": "IDENTIFY", "name": name, "version": "0.2.0", "tags": []});
    if let Some(token) = token {
        identify["token"] = json!(token);
    }
    identify
}

/// Connects and identifies with a token, expecting HELLO.
async fn client_with(server: &TestServer, name: &str, token: &str) -> Client {
    let mut client = server.connect().await;
    client.identify_with(identify(name, Some(token))).await;
    client
}

/// Connects, sends this IDENTIFY and returns the close code and reason.
async fn refused(server: &TestServer, identify: Value) -> (u16, String) {
    let mut client = server.connect().await;
    client.send(identify).await;
    client.expect_close().await
}

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
    let out = command(&["user", "allow-anonymous", "--data-dir"])
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
async fn settings_are_read_and_written_by_their_user() {
    let server = TestServer::start();
    add_user(&server, "alice", Role::Viewer).await;
    let mut alice = client_with(&server, "alice", &token(&server, "alice").await).await;

    let got = alice
        .request(json!({"type": "USER_SETTINGS_FETCH"}), 0)
        .await;
    assert_eq!(got["type"], "USER_SETTINGS_FETCH_RESULT", "{got}");
    assert_eq!(
        got["settings"],
        json!({"mem_or_ram": "mem", "storage_unit_of_measurement": "gb", "tutorial": "stage_1"})
    );
    let set = alice
        .request(
            json!({"type": "USER_SETTINGS_SET", "setting": "storage_unit_of_measurement", "value": "gib"}),
            1,
        )
        .await;
    assert_eq!(set["type"], "USER_SETTINGS_SET_RESULT", "{set}");
    assert_eq!(set["settings"]["storage_unit_of_measurement"], "gib");
    let bad = alice
        .request(
            json!({"type": "USER_SETTINGS_SET", "setting": "mem_or_ram", "value": "swap"}),
            2,
        )
        .await;
    assert_eq!(bad["type"], "BAD", "{bad}");
    assert!(bad["desc"].as_str().unwrap().contains("mem, ram"), "{bad}");
    let bad = alice
        .request(
            json!({"type": "USER_SETTINGS_SET", "setting": "colour", "value": "red"}),
            3,
        )
        .await;
    assert!(bad["desc"].as_str().unwrap().contains("tutorial"), "{bad}");
    let missing = alice
        .request(
            json!({"type": "USER_SETTINGS_SET", "setting": "tutorial"}),
            4,
        )
        .await;
    assert_eq!(missing["type"], "ERROR_PROTOCOL", "{missing}");
    // Kept: a new session reads what was set.
    let got = alice
        .request(json!({"type": "USER_SETTINGS_FETCH"}), 5)
        .await;
    assert_eq!(got["settings"]["storage_unit_of_measurement"], "gib");

    let open = TestServer::start();
    let mut anon = open.client("anon").await;
    let refused = anon
        .request(json!({"type": "USER_SETTINGS_FETCH"}), 0)
        .await;
    assert_eq!(refused["type"], "BAD", "{refused}");
}

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

#[tokio::test]
async fn another_clients_uuid_is_no_write_key() {
    let server = TestServer::start();
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let http = reqwest::Client::new();
    let url = server.http_url("/fs/alice/notes.txt");
    let put = |key: String| http.put(&url).header("Authorization", key).body("x").send();

    // Bob read alice's uuid from CLIENT_JOINED: it writes nothing.
    let resp = put(alice.uuid.to_string()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = http
        .delete(&url)
        .header("x-fs-key", alice.uuid.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Bob's own key is his, not alice's.
    let resp = put(bob.fs_key.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = put(alice.fs_key.clone()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // A forged key for alice's uuid is refused.
    let forged = format!("{}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", alice.uuid);
    assert_eq!(
        put(forged).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    // The compatibility setting accepts the uuid, as seed 004 clients use it.
    let compat = TestServer::with(|s| s.fs_uuid_write = true);
    let carol = compat.client("carol").await;
    let resp = http
        .put(compat.http_url("/fs/carol/a.txt"))
        .header("Authorization", carol.uuid.to_string())
        .body("seed 004")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_token_writes_into_its_users_folder() {
    let server = TestServer::start();
    add_user(&server, "alice", Role::Operator).await;
    let token = token(&server, "alice").await;
    let alice = client_with(&server, "alice", &token).await;
    let http = reqwest::Client::new();
    let resp = http
        .put(server.http_url("/fs/alice/by-token.txt"))
        .bearer_auth(&token)
        .body("bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // The uuid reads nothing while tokens are required.
    let resp = http
        .get(server.http_url("/fs/alice/by-token.txt"))
        .header("Authorization", alice.uuid.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = http
        .get(server.http_url("/fs/alice/by-token.txt"))
        .header("x-fs-key", &alice.fs_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), "bytes");
}

/// A replica in this process on `redis`, with its own data folder.
fn replica(redis: &RedisServer) -> TestServer {
    let url = redis.url();
    TestServer::with(move |s| {
        s.redis_url = url;
        s.node_lease_ms = 1_500;
    })
}

/// A Redis, two replicas on it, and the account `alice` in their store.
async fn replicas_with_alice() -> (RedisServer, TestServer, TestServer, std::sync::Arc<Auth>) {
    let redis = RedisServer::start();
    let r1 = replica(&redis);
    let r2 = replica(&redis);
    let auth = auth_of(&r1, &redis.url()).await;
    accounts::add(auth.store(), "alice", Role::Operator, PASSWORD)
        .await
        .unwrap();
    (redis, r1, r2, auth)
}

#[tokio::test]
async fn a_revocation_on_one_replica_closes_a_socket_on_another_within_a_second() {
    let (_redis, r1, r2, auth) = replicas_with_alice().await;
    let token = token(&r1, "alice").await;
    let mut alice = client_with(&r2, "alice", &token).await;

    let started = Instant::now();
    auth.revoke_subject("alice").await.unwrap();
    let (code, reason) = alice.expect_close().await;
    let took = started.elapsed();
    assert_eq!(code, 4013, "{reason}");
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    // r1 hears of it within the same second, by its own subscription: an
    // IDENTIFY there is refused, or accepted a moment before r1 reloaded
    // and then closed.
    let mut again = r1.connect().await;
    again.send(identify("alice", Some(&token))).await;
    let code = match again.recv_any().await {
        Err(code) => code,
        Ok(hello) => {
            assert_eq!(hello["type"], "HELLO", "{hello}");
            again.expect_close().await.0
        }
    };
    assert_eq!(code, 4013);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "r1 refused it after {:?}",
        started.elapsed()
    );
}

/// Runs the binary with `args` and `--data-dir data`, and `stdin`,
/// returning its stdout.
async fn run(args: &[&str], data: &Path, stdin: &str) -> String {
    let data = data.to_str().expect("a UTF-8 path");
    run_with(&[args, &["--data-dir", data]].concat(), stdin).await
}

/// Runs the binary with `args` and `stdin`, returning its stdout.
async fn run_with(args: &[&str], stdin: &str) -> String {
    let mut cmd = command(args);
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "concierge {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn gateway(data: &Path) -> Process {
    let mut cmd = command(&["--bind", "127.0.0.1:0", "--workers", "1"]);
    cmd.arg("--data-dir")
        .arg(data)
        .env("CONCIERGE_LOG", "debug");
    Process::spawn(cmd)
}

async fn login_at(addr: std::net::SocketAddr, name: &str) -> Value {
    reqwest::Client::new()
        .post(format!("http://{addr}/auth/token"))
        .json(&json!({"username": name, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_commands_manage_accounts_and_host_tokens_beside_a_running_gateway() {
    let data = tempfile::tempdir().unwrap();
    let mut process = gateway(data.path());
    let addr = process.listening().await;

    let out = run(
        &[
            "user",
            "add",
            "alice",
            "--role",
            "operator",
            "--password-stdin",
        ],
        data.path(),
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert!(out.contains("created alice"), "{out}");
    let listed = run(&["user", "list"], data.path(), "").await;
    assert!(
        listed.contains("alice") && listed.contains("operator"),
        "{listed}"
    );
    let body = login_at(addr, "alice").await;
    assert_eq!(body["success"], true, "{body}");
    let user_token = body["token"].as_str().unwrap().to_owned();

    // `concierge login` keeps a token only its owner can read.
    let home = tempfile::tempdir().unwrap();
    let mut cmd = command(&[
        "login",
        &format!("http://{addr}"),
        "alice",
        "--password-stdin",
    ]);
    cmd.env("XDG_CONFIG_HOME", home.path())
        .stdin(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .await
        .unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept = home.path().join("concierge/token");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&kept).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let kept = std::fs::read_to_string(&kept).unwrap();
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/auth/token"))
        .bearer_auth(kept.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let host_token = run(
        &[
            "token", "issue", "--name", "host1", "--role", "agent", "--ttl", "1h",
        ],
        data.path(),
        "",
    )
    .await
    .trim()
    .to_owned();
    let listed = run(&["token", "list"], data.path(), "").await;
    assert!(
        listed.contains("host1") && listed.contains("agent"),
        "{listed}"
    );
    // No host is named like a ctl command (whose names host tokens allow),
    // and people and hosts are named apart: alice's tokens allow alice_…, so
    // no host may be named alice_db, and no person web while host web_db
    // exists.
    run(
        &["token", "issue", "--name", "web_db", "--role", "agent"],
        data.path(),
        "",
    )
    .await;
    for (name, role, said) in [
        ("host1_ctl_0a9f3c", "agent", "shape of a ctl command's name"),
        ("alice_db", "agent", "name the host apart"),
        ("web", "operator", "name the person apart"),
    ] {
        let refused = command(&["token", "issue", "--name", name, "--role", role])
            .arg("--data-dir")
            .arg(data.path())
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{name}: {stderr}");
        assert!(stderr.contains(said), "{name}: {stderr}");
    }

    let url = format!("ws://{addr}/ws");
    let mut host = Client::connect(&url).await;
    host.identify_with(identify("host1", Some(&host_token)))
        .await;
    let mut other = Client::connect(&url).await;
    other.send(identify("host2", Some(&host_token))).await;
    assert_eq!(other.expect_close().await.0, 4014);

    // The operator's message reaches the host with a verified origin.
    let mut alice = Client::connect(&url).await;
    alice
        .identify_with(identify("alice", Some(&user_token)))
        .await;
    alice
        .send(json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "host1"}, "data": "ps"}))
        .await;
    let message = host.skip_to("MESSAGE").await;
    assert_eq!(message["origin"]["user"], "alice");
    assert_eq!(message["origin"]["roles"][0], "operator");

    // Revoked from the command line: the host's socket closes.
    run(&["token", "revoke", "--user", "host1"], data.path(), "").await;
    assert_eq!(host.expect_close().await.0, 4013);

    // A restart keeps the account.
    process.signal("TERM");
    assert!(process.exit(Duration::from_secs(10)).await.success());
    let log = process.log();
    let mut process = gateway(data.path());
    let addr = process.listening().await;
    assert_eq!(login_at(addr, "alice").await["success"], true);
    process.signal("TERM");
    process.exit(Duration::from_secs(10)).await;

    // No secret in any log line.
    let log = log + &process.log();
    assert!(log.contains("token issued"), "{log}");
    for secret in [PASSWORD, &user_token, &host_token] {
        assert!(!log.contains(secret), "a secret is in the log:\n{log}");
    }
    let stored = std::fs::read(data.path().join("concierge.db")).unwrap();
    assert!(
        !String::from_utf8_lossy(&stored).contains(PASSWORD),
        "the password is stored in clear"
    );
}

/// The close code of a client, past whatever frames come before it.
async fn closed(client: &mut Client) -> u16 {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Err(code) = client.recv_any().await {
                return code;
            }
        }
    })
    .await
    .expect("closed within 5 s")
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

/// `POST /auth/token/refresh` with `token`: the status and the answer.
async fn refresh(server: &TestServer, token: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(server.http_url("/auth/token/refresh"))
        .bearer_auth(token)
        .send()
        .await
        .expect("answered");
    (resp.status(), resp.json().await.expect("JSON body"))
}

#[tokio::test]
async fn revoking_a_tokens_id_revokes_its_refreshes_and_no_refresh_outlives_the_login() {
    let server = TestServer::with(|s| s.token_lifetime_secs = 3);
    add_user(&server, "alice", Role::Operator).await;
    let auth = auth_of(&server, "").await;

    // A host token, refreshed twice: revoking the id `token issue` printed
    // ends the whole line, open socket included.
    let issued = auth
        .issue(
            "host1",
            "host1",
            Role::Agent,
            Duration::from_secs(3_600),
            concierge::auth::TokenKind::Issued,
        )
        .await
        .unwrap();
    let (status, body) = refresh(&server, &issued.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = refresh(&server, body["token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let grandchild = body["token"].as_str().unwrap().to_owned();
    let mut host = client_with(&server, "host1", &grandchild).await;
    auth.revoke_token(issued.claims.jti).await.unwrap();
    assert_eq!(closed(&mut host).await, 4013);
    let (status, body) = refresh(&server, &grandchild).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["reason"], "token_revoked");

    // A login lives token_lifetime_secs (3 s here, under the 86400 s a
    // token is valid for), however often it is refreshed.
    let (status, body) = login(&server, "alice", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["validity"].as_u64().unwrap() <= 3, "{body}");
    let started = Instant::now();
    let mut token = body["token"].as_str().unwrap().to_owned();
    let ended = loop {
        let (status, body) = refresh(&server, &token).await;
        if status != StatusCode::OK {
            break body;
        }
        assert!(body["validity"].as_u64().unwrap() <= 3, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still refreshed after {:?}",
            started.elapsed()
        );
        token = body["token"].as_str().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ended["reason"], "token_expired", "{ended}");
}

#[tokio::test]
async fn a_password_change_revokes_the_earlier_tokens_and_closes_their_sockets() {
    let server = TestServer::start();
    add_user(&server, "alice", Role::Operator).await;
    let old = token(&server, "alice").await;
    let mut alice = client_with(&server, "alice", &old).await;

    run(
        &["user", "passwd", "alice", "--password-stdin"],
        server.data.path(),
        "a brand new password\n",
    )
    .await;
    assert_eq!(closed(&mut alice).await, 4013);
    let (code, _) = refused(&server, identify("alice", Some(&old))).await;
    assert_eq!(code, 4013);
    let (status, body) = refresh(&server, &old).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // A login with the new password, at once, is not caught by it.
    let (status, body) = login(&server, "alice", "a brand new password").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    client_with(&server, "alice", body["token"].as_str().unwrap()).await;
}

#[tokio::test]
async fn retiring_a_key_closes_the_sockets_it_signed_on_every_replica_within_a_second() {
    let (redis, r1, r2, auth) = replicas_with_alice().await;
    let signed = token(&r1, "alice").await;
    let mut on_r1 = client_with(&r1, "alice_a", &signed).await;
    let mut on_r2 = client_with(&r2, "alice_b", &signed).await;
    let keys = concierge::auth::tokens::Keys::load(auth.store())
        .await
        .unwrap();
    let (old, _) = keys.ids().pop().expect("the key that signed it");
    let url = redis.url();
    run_with(&["token", "rotate-key", "--redis-url", &url], "").await;

    let started = Instant::now();
    run_with(&["token", "retire-key", &old, "--redis-url", &url], "").await;
    assert_eq!(closed(&mut on_r1).await, 4013);
    assert_eq!(closed(&mut on_r2).await, 4013);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1_500), "closed after {took:?}");
    let (code, _) = refused(&r2, identify("alice", Some(&signed))).await;
    assert_eq!(code, 4011);
    // The newer key signs from now on.
    let fresh = token(&r1, "alice").await;
    client_with(&r2, "alice", &fresh).await;
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

// Issue 21: tests that fail when a promise breaks.

/// `PUT /fs/{client}/{path}` with `token`: the status and the JSON body.
async fn put_with_token(
    server: &TestServer,
    token: &str,
    client: &str,
    path: &str,
) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .put(server.http_url(&format!("/fs/{client}/{path}")))
        .bearer_auth(token)
        .body("written with a token")
        .send()
        .await
        .expect("answered");
    (resp.status(), resp.json().await.expect("JSON body"))
}

/// Files (PROTOCOL §9, SECURITY §7): a token writes into the folder of a
/// name it allows only while a client of the token's user is connected
/// under that name. A name nobody holds, one held by someone else (an
/// anonymous client that took it while the gateway was open) and one its
/// user's client has left are refused with 403 saying so, and nothing of
/// the upload reaches the disk.
#[tokio::test]
async fn a_token_writes_only_into_a_folder_its_user_holds_connected() {
    let server = TestServer::start();
    // While the gateway is open, anyone takes any name.
    let _impostor = server.client("alice_phone").await;
    add_user(&server, "alice", Role::Operator).await;
    let token = token(&server, "alice").await;
    let files = server.data.path().join("fs");
    let tmp_is_empty = || {
        std::fs::read_dir(files.join(".tmp"))
            .unwrap()
            .next()
            .is_none()
    };

    // Nobody is connected as alice.
    let (status, body) = put_with_token(&server, &token, "alice", "a.txt").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let reason = body["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains(r#"no client of "alice" is connected as "alice""#),
        "{body}"
    );
    assert!(!files.join("alice").exists(), "a folder was made");
    assert!(tmp_is_empty(), "an upload file was made");

    // alice_phone is a name her token allows, but someone else holds it.
    let (status, body) = put_with_token(&server, &token, "alice_phone", "a.txt").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(!files.join("alice_phone/a.txt").exists());
    assert!(tmp_is_empty());

    // Connected as alice, her token writes there.
    let mut watcher = client_with(&server, "alice_watch", &token).await;
    let alice = client_with(&server, "alice", &token).await;
    let (status, body) = put_with_token(&server, &token, "alice", "a.txt").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Once she has left (everyone is told after the directory changed),
    // it writes nothing there again.
    let uuid = alice.uuid.to_string();
    alice.close().await;
    let left = watcher.skip_to("CLIENT_LEFT").await;
    assert_eq!(left["client"]["uuid"], uuid, "{left}");
    let (status, body) = put_with_token(&server, &token, "alice", "b.txt").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(!files.join("alice/b.txt").exists());
    assert!(tmp_is_empty());
}

/// The ids `concierge token list` shows for the store in `data`.
async fn listed_token_ids(data: &Path) -> Vec<String> {
    run(&["token", "list"], data, "")
        .await
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// `concierge token issue --name NAME --role agent` on the store in `data`:
/// the token, and its id as `token list` shows it.
async fn issue_listed(data: &Path, name: &str) -> (String, String) {
    let before = listed_token_ids(data).await;
    let token = run(
        &["token", "issue", "--name", name, "--role", "agent"],
        data,
        "",
    )
    .await
    .trim()
    .to_owned();
    let mut new: Vec<String> = listed_token_ids(data)
        .await
        .into_iter()
        .filter(|id| !before.contains(id))
        .collect();
    assert_eq!(new.len(), 1, "one new token listed: {new:?}");
    (token, new.remove(0))
}

/// `concierge token revoke ID` (PROTOCOL §2.4, README): the token with that
/// id, and every refresh of it, is refused on its next IDENTIFY with 4013,
/// and the socket identified with it is closed with 4013 within a second;
/// another token of the same host keeps working, its open socket included.
#[tokio::test]
async fn token_revoke_by_id_ends_that_tokens_family_and_spares_the_other_tokens() {
    let server = TestServer::with(|s| s.require_auth = true);
    let data = server.data.path();
    add_user(&server, "alice", Role::Operator).await;
    // The gateway makes the signing key the commands then sign with.
    token(&server, "alice").await;
    let (revoked, id) = issue_listed(data, "host1").await;
    let (kept, _) = issue_listed(data, "host1").await;
    let (status, body) = refresh(&server, &revoked).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let refreshed = body["token"].as_str().unwrap().to_owned();
    let mut doomed = client_with(&server, "host1", &revoked).await;
    let mut spared = client_with(&server, "host1_ctl_0a9f3c", &kept).await;

    run(&["token", "revoke", &id], data, "").await;
    let started = Instant::now();
    assert_eq!(closed(&mut doomed).await, 4013);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    let (code, reason) = refused(&server, identify("host1", Some(&revoked))).await;
    assert_eq!(code, 4013, "{reason}");
    let (code, reason) = refused(&server, identify("host1", Some(&refreshed))).await;
    assert_eq!(code, 4013, "{reason}");
    let (status, body) = refresh(&server, &refreshed).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["reason"], "token_revoked");

    // The host's other token: it identifies and refreshes, and its socket
    // still answers a second after the revocation reached the gateway (by
    // then a revocation has reached every socket it closes).
    client_with(&server, "host1", &kept).await;
    let (status, body) = refresh(&server, &kept).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tokio::time::sleep_until((started + took + Duration::from_secs(1)).into()).await;
    spared.send(json!({"type": "SELF_FETCH"})).await;
    let me = spared.skip_to("SELF_FETCH_RESULT").await;
    assert_eq!(me["client"]["name"], "host1_ctl_0a9f3c", "{me}");
}

/// The id of the key that signed `token` (its header's `kid`).
fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("a JWT")
        .kid
        .expect("a key id")
}

/// Key rotation and retirement (PROTOCOL §2.4, SECURITY §3), on a lone
/// gateway with the commands beside it: after `token rotate-key` the new key
/// signs and the previous key's tokens keep working (a new socket, a
/// refresh, the open socket); after `token retire-key` of the previous key
/// its tokens are refused with 4011 and their open sockets are closed with
/// 4013 within a second, while the new key's tokens keep working.
#[tokio::test]
async fn rotation_keeps_the_previous_keys_tokens_until_it_is_retired() {
    let server = TestServer::start();
    let data = server.data.path();
    add_user(&server, "alice", Role::Operator).await;
    let old = token(&server, "alice").await;
    let old_kid = kid(&old);
    let mut on_old = client_with(&server, "alice", &old).await;

    let out = run(&["token", "rotate-key"], data, "").await;
    let new_kid = out
        .trim()
        .strip_prefix("new signing key ")
        .unwrap_or_else(|| panic!("no key id in {out:?}"))
        .to_owned();
    assert_ne!(new_kid, old_kid);
    // Within a second the gateway signs with the new key.
    let deadline = Instant::now() + Duration::from_secs(5);
    let new = loop {
        let fresh = token(&server, "alice").await;
        if kid(&fresh) == new_kid {
            break fresh;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway still signs with {old_kid}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let loaded = Instant::now();
    let mut also_on_old = client_with(&server, "alice_2", &old).await;
    let (status, body) = refresh(&server, &old).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(kid(body["token"].as_str().unwrap()), new_kid, "{body}");
    // The open socket was not closed by the rotation: it still answers a
    // second after the gateway loaded the new key (when it tells every
    // socket to check its token again).
    tokio::time::sleep_until((loaded + Duration::from_secs(1)).into()).await;
    on_old.send(json!({"type": "SELF_FETCH"})).await;
    assert_eq!(
        on_old.skip_to("SELF_FETCH_RESULT").await["client"]["name"],
        "alice"
    );

    run(&["token", "retire-key", &old_kid], data, "").await;
    let started = Instant::now();
    assert_eq!(closed(&mut on_old).await, 4013);
    assert_eq!(closed(&mut also_on_old).await, 4013);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    let (code, reason) = refused(&server, identify("alice", Some(&old))).await;
    assert_eq!(code, 4011, "{reason}");
    let (status, body) = refresh(&server, &old).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["reason"], "token_invalid");
    client_with(&server, "alice", &new).await;
}

/// `token rotate-key` (README: "a new key signs from now on"): each new
/// key signs the tokens issued after it, also when keys are made one right
/// after another, within the same second.
#[tokio::test]
async fn each_new_key_signs_from_then_on_even_within_one_second() {
    let data = tempfile::tempdir().unwrap();
    let settings = Settings {
        data_dir: data.path().to_owned(),
        ..Settings::default()
    };
    let store = concierge::cluster::open_store(&settings.cluster())
        .await
        .unwrap();
    for _ in 0..5 {
        let kid = tokens::rotate(&store).await.unwrap();
        let keys = tokens::Keys::load(&store).await.unwrap();
        let mut claims = Claims {
            sub: "alice".into(),
            name: "alice".into(),
            role: Role::Operator,
            jti: uuid::Uuid::new_v4(),
            iat: concierge::auth::now_secs(),
            exp: concierge::auth::now_secs() + 60,
            kind: TokenKind::Login,
            fam: uuid::Uuid::nil(),
            fexp: 0,
            iat_ms: 0,
            kid: String::new(),
        };
        tokens::sign(&keys, &mut claims).unwrap();
        assert_eq!(claims.kid, kid, "the key made before it still signs");
    }
}

/// `concierge user remove NAME` (README, SECURITY §3): the account can no
/// longer log in (401 `user_invalid`), and every token issued to it, its
/// logins' and the ones `token issue` made for its name, is refused (4013,
/// and its refresh 401) with its sockets closed; another user's token,
/// socket and login are not touched.
#[tokio::test]
async fn a_removed_user_cannot_log_in_and_its_tokens_are_refused() {
    let server = TestServer::start();
    let data = server.data.path();
    add_user(&server, "alice", Role::Operator).await;
    add_user(&server, "bob", Role::Operator).await;
    let login_token = token(&server, "alice").await;
    let issued = run(
        &["token", "issue", "--name", "alice", "--role", "operator"],
        data,
        "",
    )
    .await
    .trim()
    .to_owned();
    let bob_token = token(&server, "bob").await;
    let mut alice = client_with(&server, "alice", &login_token).await;
    let mut alice_ctl = client_with(&server, "alice_ctl", &issued).await;
    let mut bob = client_with(&server, "bob", &bob_token).await;

    run(&["user", "remove", "alice"], data, "").await;
    assert_eq!(closed(&mut alice).await, 4013);
    assert_eq!(closed(&mut alice_ctl).await, 4013);
    let revoked = Instant::now();
    let (status, body) = login(&server, "alice", PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["reason"], "user_invalid");
    for token in [&login_token, &issued] {
        let (code, reason) = refused(&server, identify("alice", Some(token))).await;
        assert_eq!(code, 4013, "{reason}");
        let (status, body) = refresh(&server, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }

    // Bob: his token still identifies, he still logs in, and his socket
    // still answers a second after alice's were closed.
    client_with(&server, "bob_2", &bob_token).await;
    let (status, body) = login(&server, "bob", PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    tokio::time::sleep_until((revoked + Duration::from_secs(1)).into()).await;
    bob.send(json!({"type": "SELF_FETCH"})).await;
    assert_eq!(
        bob.skip_to("SELF_FETCH_RESULT").await["client"]["name"],
        "bob"
    );
}

/// `concierge user passwd NAME` (README, SECURITY §3): from then on the
/// old password is refused (401 `password_invalid`) and the new one logs
/// in, with a token that works once the change has closed the earlier
/// tokens' sockets; another user's token and socket are not touched.
#[tokio::test]
async fn after_a_password_change_the_old_password_is_refused_and_others_keep_their_tokens() {
    let server = TestServer::start();
    let data = server.data.path();
    add_user(&server, "alice", Role::Operator).await;
    add_user(&server, "bob", Role::Operator).await;
    let alice_token = token(&server, "alice").await;
    let bob_token = token(&server, "bob").await;
    let mut alice = client_with(&server, "alice", &alice_token).await;
    let mut bob = client_with(&server, "bob", &bob_token).await;

    run(
        &["user", "passwd", "alice", "--password-stdin"],
        data,
        "a brand new password\n",
    )
    .await;
    let (status, body) = login(&server, "alice", PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["reason"], "password_invalid");
    let (status, body) = login(&server, "alice", "a brand new password").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(closed(&mut alice).await, 4013);
    let revoked = Instant::now();
    // By now the gateway holds the revocation: the new token is not caught
    // by it.
    client_with(&server, "alice", &new_token).await;

    // Bob's token still identifies, and his socket still answers a second
    // after alice's was closed.
    client_with(&server, "bob_2", &bob_token).await;
    tokio::time::sleep_until((revoked + Duration::from_secs(1)).into()).await;
    bob.send(json!({"type": "SELF_FETCH"})).await;
    assert_eq!(
        bob.skip_to("SELF_FETCH_RESULT").await["client"]["name"],
        "bob"
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
