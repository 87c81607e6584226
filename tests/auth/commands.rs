//! The admin's commands beside a running gateway (`concierge user ...`,
//! `concierge token ...`): accounts, host tokens, revocation by id, key
//! rotation and retirement, removing a user and changing a password.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use concierge::auth::{tokens, Claims, Role, TokenKind};
use concierge::config::Settings;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::common::process::command;
use crate::common::{Client, TestServer};
use crate::{
    add_user, client_with, closed, gateway, identify, login, refresh, refused, run, token, PASSWORD,
};

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
    // The README's other place for the store's options: between the
    // command and its subcommand.
    let dir = data.path().to_str().unwrap();
    let before = crate::run_with(&["user", "--local", "--data-dir", dir, "list"], "").await;
    assert_eq!(before, listed);
    let body = login_at(addr, "alice").await;
    assert_eq!(body["success"], true, "{body}");
    let user_token = body["token"].as_str().unwrap().to_owned();

    // `concierge login` keeps a context (the gateway and a token) only its
    // owner can read.
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
    let kept = home.path().join("concierge/contexts.json");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&kept).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let kept: Value = serde_json::from_slice(&std::fs::read(&kept).unwrap()).unwrap();
    let current = kept["current"].as_str().unwrap();
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/auth/token"))
        .bearer_auth(kept["contexts"][current]["token"].as_str().unwrap())
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
        let refused = command(&["token", "issue", "--name", name, "--role", role, "--local"])
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
