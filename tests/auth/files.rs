//! A user's own data: settings read and written by their user, and what
//! a token (not a client's uuid) may write into the file server.

use concierge::auth::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::TestServer;
use crate::{add_user, client_with, token};

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
