//! Accounts, tokens, revocation, lock-outs, user settings and the file
//! server's keys, against a real gateway (in this process or as the real
//! binary), real WebSocket clients and, across replicas, a real Redis.
//! Here, what the tests share; each module tests a concern.

#[path = "../common/mod.rs"]
mod common;

mod commands;
mod files;
mod identity;
mod lockout;
mod revocation;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use concierge::auth::{accounts, Auth, Role};
use concierge::config::Settings;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use common::process::{command, Process};
use common::redis::RedisServer;
use common::{Client, TestServer};

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

/// Runs the binary with `args` and `--data-dir data`, and `stdin`,
/// returning its stdout.
async fn run(args: &[&str], data: &Path, stdin: &str) -> String {
    let data = data.to_str().expect("a UTF-8 path");
    run_with(&[args, &["--local", "--data-dir", data]].concat(), stdin).await
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
