//! Ending tokens: a revocation, a password change or a retired key closes
//! the sockets they opened, on every replica within a second, and no
//! refresh outlives its login.

use std::time::{Duration, Instant};

use concierge::auth::Role;
use reqwest::StatusCode;

use crate::common::TestServer;
use crate::{
    add_user, auth_of, client_with, closed, identify, login, refresh, refused, replicas_with_alice,
    run, run_with, token, PASSWORD,
};

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
    run_with(&["token", "rotate-key", "--local", "--redis-url", &url], "").await;

    let started = Instant::now();
    run_with(
        &["token", "retire-key", &old, "--local", "--redis-url", &url],
        "",
    )
    .await;
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
