//! The file server: `PUT`, `GET`, `HEAD` and `DELETE` on
//! `/fs/{client_name}/{path}`, keyed by the uuid from HELLO; here, and the
//! helpers the modules share. `multipart`: the `POST` uploads of seed
//! 004's clients; `browser`: one of them from a page of another origin in
//! a real Chromium.

#[path = "../common/mod.rs"]
mod common;

mod browser;
mod multipart;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{eventually, raw_http, TestServer};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use uuid::Uuid;

fn fs_url(server: &TestServer, client: &str, path: &str) -> String {
    server.http_url(&format!("/fs/{client}/{path}"))
}

/// Asserts the response has `status` and a JSON body `{"error": "..."}`
/// with a non-empty reason; returns the reason.
async fn assert_error(resp: Response, status: StatusCode) -> String {
    assert_eq!(resp.status(), status, "{}", resp.url());
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "error content type {content_type:?}"
    );
    let body: Value = resp.json().await.expect("error body is JSON");
    let reason = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error string in {body}"))
        .to_owned();
    assert!(!reason.is_empty(), "{body}");
    reason
}

async fn put(
    http: &reqwest::Client,
    url: &str,
    key: impl std::fmt::Display,
    body: impl Into<reqwest::Body>,
) -> Response {
    http.put(url)
        .header("Authorization", key.to_string())
        .body(body)
        .send()
        .await
        .expect("PUT is answered")
}

async fn get(http: &reqwest::Client, url: &str, key: impl std::fmt::Display) -> Response {
    http.get(url)
        .header("Authorization", key.to_string())
        .send()
        .await
        .expect("GET is answered")
}

async fn delete(http: &reqwest::Client, url: &str, key: impl std::fmt::Display) -> Response {
    http.delete(url)
        .header("Authorization", key.to_string())
        .send()
        .await
        .expect("DELETE is answered")
}

/// Every regular file under `root`, relative to it, sorted.
fn files_under(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Deterministic pseudo-random bytes (xorshift64).
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// FNV-1a, 64 bits.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[tokio::test]
async fn upload_then_another_client_downloads_the_same_bytes() {
    let server = TestServer::start();
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let http = reqwest::Client::new();
    let body = noise(10_000, 7);

    let url = fs_url(&server, "alice", "report.bin");
    let resp = put(&http, &url, &alice.fs_key, body.clone()).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["size"], 10_000, "{created}");
    assert_eq!(
        std::fs::read(server.data.path().join("fs/alice/report.bin")).unwrap(),
        body,
        "stored under <data>/fs/<name>/"
    );

    let resp = get(&http, &url, bob.uuid).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());

    // HEAD: the size without the body.
    let resp = http
        .head(&url)
        .header("Authorization", bob.uuid.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[reqwest::header::CONTENT_LENGTH], "10000");
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn sub_folders_and_overwrites() {
    let server = TestServer::start();
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let http = reqwest::Client::new();

    let deep = fs_url(&server, "alice", "logs/2024/05/run.txt");
    let resp = put(&http, &deep, &alice.fs_key, "first version, rather long").await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = get(&http, &deep, bob.uuid).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "first version, rather long");

    // Overwriting replaces the content entirely (no leftover tail).
    let resp = put(&http, &deep, &alice.fs_key, "second").await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: Value = resp.json().await.unwrap();
    assert_eq!(created["size"], 6);
    let resp = get(&http, &deep, bob.uuid).await;
    assert_eq!(resp.text().await.unwrap(), "second");

    // A folder is not a file.
    let resp = get(&http, &fs_url(&server, "alice", "logs/2024"), bob.uuid).await;
    assert_error(resp, StatusCode::NOT_FOUND).await;

    assert_eq!(
        files_under(&server.data.path().join("fs/alice")),
        vec![PathBuf::from("logs/2024/05/run.txt")]
    );
}

#[tokio::test]
async fn both_key_headers_are_accepted() {
    let server = TestServer::start();
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let http = reqwest::Client::new();
    let url = fs_url(&server, "alice", "k.txt");

    let resp = http
        .put(&url)
        .header("x-fs-key", &alice.fs_key)
        .body("via x-fs-key")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = http
        .get(&url)
        .header("x-fs-key", bob.uuid.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "via x-fs-key");

    let resp = http
        .put(&url)
        .header("Authorization", &alice.fs_key)
        .body("via Authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = get(&http, &url, bob.uuid).await;
    assert_eq!(resp.text().await.unwrap(), "via Authorization");
}

#[tokio::test]
async fn bad_keys_are_401_with_a_json_error() {
    let server = TestServer::start();
    let alice = server.client("alice").await;
    let http = reqwest::Client::new();
    let url = fs_url(&server, "alice", "secret.txt");
    let resp = put(&http, &url, &alice.fs_key, "x").await;
    assert_eq!(resp.status(), StatusCode::CREATED);

    // No key at all.
    let resp = http.get(&url).send().await.unwrap();
    let reason = assert_error(resp, StatusCode::UNAUTHORIZED).await;
    assert!(reason.contains("key"), "{reason}");
    let resp = http.put(&url).body("y").send().await.unwrap();
    assert_error(resp, StatusCode::UNAUTHORIZED).await;
    let resp = http.delete(&url).send().await.unwrap();
    assert_error(resp, StatusCode::UNAUTHORIZED).await;

    // Not a uuid, in either header.
    for (header, value) in [
        ("Authorization", "alice"),
        ("Authorization", "not-a-uuid-at-all"),
        ("x-fs-key", "12345"),
        ("x-fs-key", ""),
    ] {
        let resp = http.get(&url).header(header, value).send().await.unwrap();
        assert_error(resp, StatusCode::UNAUTHORIZED).await;
    }

    // A well-formed uuid that belongs to nobody connected.
    for key in [Uuid::new_v4(), Uuid::nil()] {
        let resp = get(&http, &url, key).await;
        let reason = assert_error(resp, StatusCode::UNAUTHORIZED).await;
        assert!(reason.contains("no connected client"), "{reason}");
        let resp = put(&http, &url, key, "overwrite?").await;
        assert_error(resp, StatusCode::UNAUTHORIZED).await;
    }

    // Nothing above changed the file.
    let resp = get(&http, &url, alice.uuid).await;
    assert_eq!(resp.text().await.unwrap(), "x");
}

#[tokio::test]
async fn only_the_owner_writes_and_deletes() {
    let server = TestServer::start();
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let http = reqwest::Client::new();
    let url = fs_url(&server, "alice", "mine.txt");
    assert_eq!(
        put(&http, &url, &alice.fs_key, "alice's").await.status(),
        StatusCode::CREATED
    );

    // Bob may read alice's files but not change them.
    let resp = put(&http, &url, &bob.fs_key, "bob's").await;
    let reason = assert_error(resp, StatusCode::FORBIDDEN).await;
    assert!(reason.contains("alice"), "{reason}");
    let resp = put(
        &http,
        &fs_url(&server, "alice", "new.txt"),
        &bob.fs_key,
        "bob's",
    )
    .await;
    assert_error(resp, StatusCode::FORBIDDEN).await;
    let resp = delete(&http, &url, &bob.fs_key).await;
    assert_error(resp, StatusCode::FORBIDDEN).await;
    assert_eq!(
        get(&http, &url, bob.uuid).await.text().await.unwrap(),
        "alice's"
    );
    assert!(!server.data.path().join("fs/alice/new.txt").exists());

    // Alice deletes her file; then it is gone for everyone.
    let resp = delete(&http, &url, &alice.fs_key).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!server.data.path().join("fs/alice/mine.txt").exists());
    let resp = get(&http, &url, bob.uuid).await;
    assert_error(resp, StatusCode::NOT_FOUND).await;
    let resp = get(&http, &url, alice.uuid).await;
    assert_error(resp, StatusCode::NOT_FOUND).await;

    // Deleting what is not there.
    let resp = delete(&http, &url, &alice.fs_key).await;
    assert_error(resp, StatusCode::NOT_FOUND).await;
    let resp = delete(
        &http,
        &fs_url(&server, "alice", "never/was.txt"),
        &alice.fs_key,
    )
    .await;
    assert_error(resp, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn paths_that_escape_the_folder_are_400() {
    let server = TestServer::start();
    let alice = server.client("alice").await;
    let http = reqwest::Client::new();
    let key = alice.uuid.to_string();
    let data = server.data.path().to_owned();
    let outside = data.parent().unwrap().to_owned();
    let marker = format!("escaped-{}", Uuid::new_v4().simple());

    // Through reqwest: percent-encoded separators and a doubled slash are
    // sent as they are (the url crate leaves them alone).
    let encoded = [
        format!("..%2F..%2F..%2F{marker}"),
        format!("a%2F..%2F..%2F..%2F..%2F{marker}"),
        "..%2F..%2Fetc%2Fpasswd".to_owned(),
        "..%2f..%2f..%2fetc%2fpasswd".to_owned(),
        "%2Fetc%2Fpasswd".to_owned(),
        format!("..%5C..%5C{marker}"),
        "/etc/passwd".to_owned(),
        format!("/{marker}"),
    ];
    for path in &encoded {
        let url = fs_url(&server, "alice", path);
        let parsed = reqwest::Url::parse(&url).unwrap();
        assert!(
            parsed.path().ends_with(path.trim_start_matches('/')),
            "reqwest would rewrite {path:?} to {}",
            parsed.path()
        );
        for method in [reqwest::Method::PUT, reqwest::Method::GET] {
            let resp = http
                .request(method.clone(), parsed.clone())
                .header("Authorization", &key)
                .body("pwned")
                .send()
                .await
                .unwrap();
            assert_error(resp, StatusCode::BAD_REQUEST).await;
        }
    }

    // Dot segments would be normalized away by reqwest, so these go over a
    // raw socket exactly as written.
    let raw = [
        format!("/fs/alice/a/../../{marker}"),
        format!("/fs/alice/../../../{marker}"),
        format!("/fs/alice/a/../../../../{marker}"),
        "/fs/alice/./x".to_owned(),
        "/fs/alice/a/./b".to_owned(),
        "/fs/alice/a/".to_owned(),
        "/fs/alice/..".to_owned(),
        format!("/fs/alice/a/%2E%2E/%2E%2E/%2E%2E/{marker}"),
        format!("/fs/alice/.%2E/.%2e/..%2F{marker}"),
    ];
    for path in &raw {
        for method in ["PUT", "GET", "DELETE"] {
            let (status, body) = raw_http(
                server.addr,
                method,
                path,
                &[("Authorization", &key)],
                b"pwned",
            )
            .await;
            assert_eq!(status, 400, "{method} {path}: {body}");
            let body: Value = serde_json::from_str(&body).expect("JSON error body");
            assert!(body["error"].is_string(), "{body}");
        }
    }

    // The client part of the URL cannot be a path either.
    for path in ["/fs/../x", "/fs/..%2F/x", "/fs/al.ice/x"] {
        let (status, body) = raw_http(
            server.addr,
            "PUT",
            path,
            &[("Authorization", &key)],
            b"pwned",
        )
        .await;
        assert!(
            status == 400 || status == 404,
            "PUT {path}: {status} {body}"
        );
    }

    // Nothing was written anywhere: not outside the data dir, not inside it.
    for escaped in [
        outside.join(&marker),
        data.join(&marker),
        data.join("fs").join(&marker),
        data.join("etc/passwd"),
        data.join("fs/etc/passwd"),
    ] {
        assert!(!escaped.exists(), "{} was written", escaped.display());
    }
    // Only the gateway's own store (the key that signs fs_keys) is there.
    let written: Vec<PathBuf> = files_under(&data)
        .into_iter()
        .filter(|p| !p.to_string_lossy().starts_with("concierge.db"))
        .collect();
    assert_eq!(written, Vec::<PathBuf>::new());
}

#[tokio::test]
async fn an_encoded_slash_is_a_separator_not_part_of_a_name() {
    let server = TestServer::start();
    let alice = server.client("alice").await;
    let http = reqwest::Client::new();
    let resp = put(
        &http,
        &fs_url(&server, "alice", "dir%2Ffile.txt"),
        &alice.fs_key,
        "x",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = get(&http, &fs_url(&server, "alice", "dir/file.txt"), alice.uuid).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "x");
    // Other escapes decode the same way: "%20" is a space.
    let resp = put(
        &http,
        &fs_url(&server, "alice", "with%20space.txt"),
        &alice.fs_key,
        "y",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        files_under(&server.data.path().join("fs/alice")),
        vec![
            PathBuf::from("dir/file.txt"),
            PathBuf::from("with space.txt")
        ]
    );
}

fn tmp_is_empty(server: &TestServer) -> bool {
    std::fs::read_dir(server.data.path().join("fs/.tmp"))
        .expect(".tmp exists")
        .next()
        .is_none()
}

#[tokio::test]
async fn uploads_over_the_limit_are_413_and_leave_nothing() {
    let server = TestServer::with(|s| s.max_file_size = 1024);
    let alice = server.client("alice").await;
    let http = reqwest::Client::new();

    // Exactly at the limit is fine.
    let url = fs_url(&server, "alice", "limit.bin");
    let resp = put(&http, &url, &alice.fs_key, vec![1u8; 1024]).await;
    assert_eq!(resp.status(), StatusCode::CREATED);

    // Declared too big by Content-Length.
    let url = fs_url(&server, "alice", "declared.bin");
    let resp = put(&http, &url, &alice.fs_key, vec![2u8; 4096]).await;
    let reason = assert_error(resp, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(reason.contains("1024"), "{reason}");

    // Streamed (chunked, no Content-Length) and over the limit mid-way.
    let url = fs_url(&server, "alice", "streamed.bin");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..8).map(|i| Ok(vec![i; 512])).collect();
    let resp = http
        .put(&url)
        .header("Authorization", &alice.fs_key)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::PAYLOAD_TOO_LARGE).await;

    // Overwriting an existing file with something too big keeps the old one.
    let url = fs_url(&server, "alice", "limit.bin");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..3).map(|_| Ok(vec![9u8; 512])).collect();
    let resp = http
        .put(&url)
        .header("Authorization", &alice.fs_key)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_error(resp, StatusCode::PAYLOAD_TOO_LARGE).await;

    assert_eq!(
        files_under(&server.data.path().join("fs")),
        vec![PathBuf::from("alice/limit.bin")]
    );
    assert_eq!(
        std::fs::read(server.data.path().join("fs/alice/limit.bin")).unwrap(),
        vec![1u8; 1024]
    );
    assert!(tmp_is_empty(&server));

    // A streamed upload under the limit still works.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..4).map(|i| Ok(vec![i; 100])).collect();
    let resp = http
        .put(fs_url(&server, "alice", "small.bin"))
        .header("Authorization", &alice.fs_key)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.json::<Value>().await.unwrap()["size"], 400);
    assert!(tmp_is_empty(&server));
}

#[tokio::test]
async fn a_large_streamed_upload_round_trips() {
    const CHUNK: usize = 64 * 1024;
    const SIZE: usize = 20 * 1024 * 1024;
    let server = TestServer::start();
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let http = reqwest::Client::new();
    let body = noise(SIZE, 0x9e37_79b9_7f4a_7c15);
    let expected = checksum(&body);

    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(CHUNK).map(|c| Ok(c.to_vec())).collect();
    assert_eq!(chunks.len(), SIZE / CHUNK);
    let url = fs_url(&server, "alice", "big/blob.bin");
    let resp = http
        .put(&url)
        .header("Authorization", &alice.fs_key)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(resp.json::<Value>().await.unwrap()["size"], SIZE);

    let resp = get(&http, &url, bob.uuid).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[reqwest::header::CONTENT_LENGTH],
        SIZE.to_string().as_str()
    );
    let downloaded = resp.bytes().await.unwrap();
    assert_eq!(downloaded.len(), SIZE);
    assert_eq!(checksum(&downloaded), expected);
    assert!(tmp_is_empty(&server));
}

#[tokio::test]
async fn a_departed_clients_folder_is_removed() {
    let server = TestServer::start();
    let alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let http = reqwest::Client::new();
    let url = fs_url(&server, "alice", "notes/today.txt");
    assert_eq!(
        put(&http, &url, &alice.fs_key, "bye").await.status(),
        StatusCode::CREATED
    );
    let folder = server.data.path().join("fs/alice");
    assert!(folder.is_dir());
    let old_key = alice.uuid;

    alice.close().await;
    let left = bob.expect("CLIENT_LEFT").await;
    assert_eq!(left["client"]["name"], "alice");
    eventually(Duration::from_secs(5), "alice's folder is deleted", || {
        !folder.exists()
    })
    .await;
    // The departed client's key no longer opens anything.
    let resp = get(&http, &url, old_key).await;
    assert_error(resp, StatusCode::UNAUTHORIZED).await;

    // A newcomer with the same name starts with an empty folder.
    let alice2 = server.client("alice").await;
    let resp = get(&http, &url, alice2.uuid).await;
    assert_error(resp, StatusCode::NOT_FOUND).await;
    let resp = get(&http, &url, bob.uuid).await;
    assert_error(resp, StatusCode::NOT_FOUND).await;

    // And the trash is emptied in the background.
    let trash = server.data.path().join("fs/.trash");
    eventually(Duration::from_secs(5), "the trash is emptied", || {
        std::fs::read_dir(&trash).unwrap().next().is_none()
    })
    .await;
}

/// The statuses of `n` uploads of `len` bytes each, sent at once, into
/// `client`'s folder under the names `{prefix}{i}`.
async fn upload_at_once(
    server: &TestServer,
    client: &common::Client,
    prefix: &str,
    n: usize,
    len: usize,
) -> Vec<StatusCode> {
    let http = reqwest::Client::new();
    let uploads = (0..n).map(|i| {
        let url = fs_url(server, &client.name, &format!("{prefix}{i}"));
        let (http, key) = (http.clone(), client.fs_key.clone());
        async move { put(&http, &url, key, vec![7u8; len]).await.status() }
    });
    futures_util::future::join_all(uploads).await
}

#[tokio::test]
async fn quotas_bound_one_clients_files_and_all_files() {
    let server = TestServer::with(|s| {
        s.max_client_files_bytes = 2_500;
        s.max_files_bytes = 4_000;
    });
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let carol = server.client("carol").await;
    let http = reqwest::Client::new();

    // Eight uploads at once: only what fits alice's 2500 bytes is stored.
    let statuses = upload_at_once(&server, &alice, "a", 8, 1_000).await;
    let stored = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(stored, 2, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| [StatusCode::CREATED, StatusCode::PAYLOAD_TOO_LARGE].contains(s)),
        "{statuses:?}"
    );
    let url = fs_url(&server, "alice", "more");
    let reason = assert_error(
        put(&http, &url, &alice.fs_key, vec![1u8; 600]).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert!(reason.contains("max_client_files_bytes"), "{reason}");
    let alices = files_under(&server.data.path().join("fs/alice"));
    assert_eq!(alices.len(), 2, "{alices:?}");

    // At its limit, a client may still replace a file, and a deletion
    // makes room.
    let first = fs_url(&server, "alice", alices[0].to_str().unwrap());
    let resp = put(&http, &first, &alice.fs_key, vec![2u8; 1_000]).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = delete(&http, &first, &alice.fs_key).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = put(&http, &url, &alice.fs_key, vec![1u8; 1_000]).await;
    assert_eq!(resp.status(), StatusCode::CREATED);

    // Alice's 2000 and bob's 2000 fill the server's 4000: carol gets 507.
    let statuses = upload_at_once(&server, &bob, "b", 2, 1_000).await;
    assert_eq!(statuses, [StatusCode::CREATED; 2]);
    let carols = fs_url(&server, "carol", "c");
    let reason = assert_error(
        put(&http, &carols, &carol.fs_key, vec![3u8; 10]).await,
        StatusCode::INSUFFICIENT_STORAGE,
    )
    .await;
    assert!(reason.contains("max_files_bytes"), "{reason}");

    // Alice leaves: her folder is discarded and no longer counts.
    alice.close().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = put(&http, &carols, &carol.fs_key, vec![3u8; 10])
            .await
            .status();
        if status == StatusCode::CREATED {
            break;
        }
        assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE);
        assert!(
            tokio::time::Instant::now() < deadline,
            "alice's bytes still count after she left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(tmp_is_empty(&server));
}

/// An upload of `path` whose headers promise 100 kB: its `head` (a PUT's,
/// or a POST's with its form's first bytes) ends with one byte of the
/// file; then, with `trickle`, one more arrives every 20 ms, else nothing.
/// Returns the response's text, which must come within [`common::PATIENCE`].
async fn slow_upload(server: &TestServer, head: &str, trickle: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head.as_bytes()).await.unwrap();
    let sender = tokio::spawn(async move {
        while trickle && writer.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        writer // kept open, sending nothing more
    });
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    let answered = tokio::time::timeout(common::PATIENCE, async {
        while !String::from_utf8_lossy(&response).contains('}') {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    sender.abort();
    assert!(
        answered.is_ok(),
        "a slow upload (trickle: {trickle}) was never answered"
    );
    String::from_utf8_lossy(&response).into_owned()
}

/// The head of a PUT of `path` for [`slow_upload`].
fn slow_put(server: &TestServer, key: &str, path: &str) -> String {
    format!(
        "PUT /fs/{path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {key}\r\nContent-Length: 100000\r\n\r\nx",
        server.addr
    )
}

#[tokio::test]
async fn stalled_and_trickling_uploads_time_out_and_their_temporary_files_are_deleted() {
    let server = TestServer::with(|s| s.upload_idle_timeout_ms = 300);
    let alice = server.client("alice").await;
    for (path, trickle) in [("alice/stalled.bin", false), ("alice/trickle.bin", true)] {
        let text = slow_upload(&server, &slow_put(&server, &alice.fs_key, path), trickle).await;
        assert!(text.starts_with("HTTP/1.1 408"), "{path}: {text}");
        assert!(
            text.contains("less than 65536 bytes in 300 ms"),
            "{path}: {text}"
        );
        assert!(!server.data.path().join("fs").join(path).exists());
    }
    eventually(
        Duration::from_secs(5),
        "the temporary files are deleted",
        || tmp_is_empty(&server),
    )
    .await;
}

#[tokio::test]
async fn files_are_served_as_sandboxed_downloads_never_as_pages() {
    let server = TestServer::start();
    let alice = server.client("alice").await;
    let http = reqwest::Client::new();
    for (name, body) in [
        ("page.html", "<script>alert(document.cookie)</script>"),
        (
            "image.svg",
            "<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>",
        ),
    ] {
        let url = fs_url(&server, "alice", name);
        let resp = put(&http, &url, &alice.fs_key, body).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        let resp = get(&http, &url, &alice.fs_key).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let header = |h: &str| {
            resp.headers()
                .get(h)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        let disposition = header("content-disposition");
        assert!(
            disposition.starts_with("attachment"),
            "{name}: {disposition:?}"
        );
        assert!(disposition.contains(name), "{name}: {disposition:?}");
        let policy = header("content-security-policy");
        assert!(policy.contains("sandbox"), "{name}: {policy:?}");
        assert!(policy.contains("default-src 'none'"), "{name}: {policy:?}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{name}");
        assert_eq!(resp.text().await.unwrap(), body);
    }
}

/// Sends a PUT's head with `Content-Length: declared` and no body, and
/// returns the status and body of the answer, which must come before any
/// byte of the body is sent.
async fn answer_before_the_body(
    server: &TestServer,
    path: &str,
    key: &str,
    declared: u64,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connects");
    let head = format!(
        "PUT /fs/{path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {key}\r\n\
         Content-Length: {declared}\r\nConnection: close\r\n\r\n",
        server.addr
    );
    stream.write_all(head.as_bytes()).await.expect("writes");
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    // The head and the JSON body, without waiting for the connection's end:
    // the server may keep it open for the body it did not read.
    let text = loop {
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no answer to a {declared}-byte PUT before its body"))
            .expect("reads");
        response.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&response).into_owned();
        if n == 0 || text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
            break text;
        }
    };
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, body.to_owned())
}

/// PROTOCOL 8: an upload's size and the client's and server's quotas are
/// "checked against Content-Length before reading": a declared length over
/// any of them is answered at once, before the client sends its body.
#[tokio::test]
async fn a_declared_length_over_a_limit_is_refused_before_the_body() {
    let server = TestServer::with(|s| {
        s.max_file_size = 10_000;
        s.max_client_files_bytes = 2_500;
        s.max_files_bytes = 4_000;
    });
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;

    let (status, body) = answer_before_the_body(&server, "alice/big", &alice.fs_key, 20_000).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("10000"), "{body}");

    let (status, body) = answer_before_the_body(&server, "alice/a", &alice.fs_key, 3_000).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("max_client_files_bytes"), "{body}");

    // Bob fills 2000 of the server's 4000; alice's 2,400 would pass hers
    // but not the server's.
    let http = reqwest::Client::new();
    for name in ["b1", "b2"] {
        let url = fs_url(&server, "bob", name);
        let resp = put(&http, &url, &bob.fs_key, vec![1u8; 1_000]).await;
        assert_eq!(resp.status(), StatusCode::CREATED);
    }
    let (status, body) = answer_before_the_body(&server, "alice/a", &alice.fs_key, 2_400).await;
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("max_files_bytes"), "{body}");
    assert!(files_under(&server.data.path().join("fs/alice")).is_empty());
}
