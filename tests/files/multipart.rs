//! The multipart `POST` uploads of seed 004's clients (ERT's browser client
//! posts a `FormData` to `/fs/<name>/system.json` with `x-fs-key`): one
//! file at `/fs/<name>/<path>`, several at `/fs/<name>/` named by their
//! parts' filenames, sanitized; the limits, keys and CORS of every upload;
//! and hostile forms (proptest, bounded) against a real gateway.

use concierge::protocol::files::{Stored, StoredFile, StoredFiles, MAX_FILES_PER_POST};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::multipart::{Form, Part};

use super::*;

const BOUNDARY: &str = "----WebKitFormBoundaryERT0123456789";
const FORM_TYPE: &str = "multipart/form-data; boundary=----WebKitFormBoundaryERT0123456789";

/// A `multipart/form-data` body as a browser writes a `FormData`: one field
/// named `file` per part, with the part's filename if it has one.
fn form(parts: &[(Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (filename, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        let disposition = match filename {
            Some(name) => format!("form-data; name=\"file\"; filename=\"{name}\""),
            None => "form-data; name=\"file\"".to_owned(),
        };
        body.extend_from_slice(
            format!(
                "Content-Disposition: {disposition}\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// POSTs `body` (a [`form`]) to `url` with `key` in `x-fs-key`, as ERT's
/// clients do.
async fn post_form(url: &str, key: impl std::fmt::Display, body: Vec<u8>) -> Response {
    reqwest::Client::new()
        .post(url)
        .header("x-fs-key", key.to_string())
        .header("content-type", FORM_TYPE)
        .body(body)
        .send()
        .await
        .expect("POST is answered")
}

/// What reqwest's own multipart form sends: one file part, `file`.
fn file_form(filename: &str, bytes: Vec<u8>) -> Form {
    Form::new().part(
        "file",
        Part::bytes(bytes)
            .file_name(filename.to_owned())
            .mime_str("application/json")
            .expect("a MIME type"),
    )
}

fn stored_at(server: &TestServer, path: &str) -> Vec<u8> {
    std::fs::read(server.data.path().join("fs").join(path))
        .unwrap_or_else(|e| panic!("{path} is not stored: {e}"))
}

#[tokio::test]
async fn a_form_posted_to_a_path_is_stored_there_and_downloadable() {
    let server = TestServer::start();
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let http = reqwest::Client::new();

    let system = br#"{"bodies": [{"name": "sun", "mass": 1.0}]}"#.to_vec();
    let url = fs_url(&server, "alice", "system.json");
    let resp = http
        .post(&url)
        .header("x-fs-key", &alice.fs_key)
        .multipart(file_form("my-system.json", system.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let stored: Stored = resp.json().await.unwrap();
    assert_eq!(stored.size, system.len() as u64);
    // Stored at the URL's path; the part's own filename does not matter.
    assert_eq!(stored_at(&server, "alice/system.json"), system);
    let resp = get(&http, &url, bob.uuid).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), system.as_slice());

    // Sub-folders, a file of many chunks, and a replaced file.
    let big = noise(300_000, 11);
    let url = fs_url(&server, "alice", "saves/2026/system.json");
    let resp = post_form(&url, &alice.fs_key, form(&[(Some("s.json"), &big)])).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        checksum(&stored_at(&server, "alice/saves/2026/system.json")),
        checksum(&big)
    );
    let resp = post_form(&url, &alice.fs_key, form(&[(Some("s.json"), b"v2")])).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(stored_at(&server, "alice/saves/2026/system.json"), b"v2");

    // The pieces of one file (parts with the same filename) are one file,
    // as the original server took them.
    let url = fs_url(&server, "alice", "pieces.txt");
    let body = form(&[(Some("p.txt"), b"one,"), (Some("p.txt"), b"two")]);
    let resp = post_form(&url, &alice.fs_key, body).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(stored_at(&server, "alice/pieces.txt"), b"one,two");
    assert!(tmp_is_empty(&server));
}

#[tokio::test]
async fn several_files_posted_to_the_folder_are_stored_under_their_sanitized_names() {
    let server = TestServer::start();
    let alice = server.client("alice").await;
    let big = noise(200_000, 5);
    let body = form(&[
        (Some("a.txt"), b"alpha"),
        (Some("../../../escape.txt"), b"not outside"),
        (Some("sub/dir.txt"), b"flat"),
        (Some("C:\\Users\\ert\\win.txt"), b"windows path"),
        (Some("big.bin"), &big),
        (Some("a.txt"), b"+more"),
    ]);
    let resp = post_form(&fs_url(&server, "alice", ""), &alice.fs_key, body).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let stored: StoredFiles = resp.json().await.unwrap();
    let names: Vec<&str> = stored.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "a.txt",
            "......escape.txt",
            "subdir.txt",
            "CUsersertwin.txt",
            "big.bin"
        ]
    );
    assert_eq!(
        stored.files[0],
        StoredFile {
            name: "a.txt".into(),
            size: 10
        }
    );
    // Every file is in alice's folder, whatever its part said.
    let mut expected: Vec<PathBuf> = names.iter().map(|n| Path::new("alice").join(n)).collect();
    expected.sort();
    assert_eq!(files_under(&server.data.path().join("fs")), expected);
    assert!(!server.data.path().join("escape.txt").exists());
    assert_eq!(stored_at(&server, "alice/a.txt"), b"alpha+more");
    assert_eq!(
        checksum(&stored_at(&server, "alice/big.bin")),
        checksum(&big)
    );

    // A filename that is nothing once sanitized, a part without one, and
    // a form without a part: refused, nothing stored.
    for (body, status, says) in [
        (
            form(&[(Some("ok.txt"), b"1"), (Some(".."), b"2")]),
            StatusCode::BAD_REQUEST,
            "names no file",
        ),
        (
            form(&[(Some("ok.txt"), b"1"), (None, b"2")]),
            StatusCode::PRECONDITION_REQUIRED,
            "filename",
        ),
        (form(&[]), StatusCode::BAD_REQUEST, "no file"),
    ] {
        let resp = post_form(&fs_url(&server, "alice", ""), &alice.fs_key, body).await;
        let reason = assert_error(resp, status).await;
        assert!(reason.contains(says), "{reason}");
    }
    assert!(!server.data.path().join("fs/alice/ok.txt").exists());

    // A folder where one of the files would go: none of them is stored.
    let resp = put(
        &reqwest::Client::new(),
        &fs_url(&server, "alice", "taken/inside.txt"),
        &alice.fs_key,
        "x",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let body = form(&[(Some("ok.txt"), b"1"), (Some("taken"), b"2")]);
    let reason = assert_error(
        post_form(&fs_url(&server, "alice", ""), &alice.fs_key, body).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(reason.contains("taken"), "{reason}");
    assert!(!server.data.path().join("fs/alice/ok.txt").exists());
    assert!(tmp_is_empty(&server));
}

#[tokio::test]
async fn a_path_takes_one_file_and_refuses_a_form_of_several() {
    let server = TestServer::start();
    let alice = server.client("alice").await;
    let url = fs_url(&server, "alice", "one.txt");
    let body = form(&[(Some("a.txt"), b"a"), (Some("b.txt"), b"b")]);
    let reason = assert_error(
        post_form(&url, &alice.fs_key, body).await,
        StatusCode::PRECONDITION_FAILED,
    )
    .await;
    assert!(reason.contains("/fs/<name>/"), "{reason}");
    let reason = assert_error(
        post_form(&url, &alice.fs_key, form(&[])).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(reason.contains("no file"), "{reason}");
    assert!(files_under(&server.data.path().join("fs/alice")).is_empty());
    assert!(tmp_is_empty(&server));
}

#[tokio::test]
async fn posted_files_keep_the_size_limit_and_the_quotas_and_leave_nothing_when_refused() {
    let server = TestServer::with(|s| {
        s.max_file_size = 1_000;
        s.max_client_files_bytes = 2_500;
    });
    let alice = server.client("alice").await;
    let folder = fs_url(&server, "alice", "");

    let url = fs_url(&server, "alice", "big.bin");
    let body = form(&[(Some("big.bin"), &[1u8; 1_500])]);
    let reason = assert_error(
        post_form(&url, &alice.fs_key, body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert!(reason.contains("1000"), "{reason}");
    // Each file within the size limit, all three over the client's quota:
    // none is stored, and none counts.
    let body = form(&[
        (Some("a"), &[1u8; 900]),
        (Some("b"), &[2u8; 900]),
        (Some("c"), &[3u8; 900]),
    ]);
    let reason = assert_error(
        post_form(&folder, &alice.fs_key, body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert!(reason.contains("max_client_files_bytes"), "{reason}");
    assert!(files_under(&server.data.path().join("fs/alice")).is_empty());
    let body = form(&[(Some("a"), &[1u8; 900]), (Some("b"), &[2u8; 900])]);
    let resp = post_form(&folder, &alice.fs_key, body).await;
    assert_eq!(resp.status(), StatusCode::CREATED);

    // One file more than a POST may carry.
    let names: Vec<String> = (0..=MAX_FILES_PER_POST).map(|i| format!("f{i}")).collect();
    let parts: Vec<(Option<&str>, &[u8])> = names
        .iter()
        .map(|n| (Some(n.as_str()), b"x".as_slice()))
        .collect();
    let reason = assert_error(
        post_form(&folder, &alice.fs_key, form(&parts)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert!(
        reason.contains(&format!("at most {MAX_FILES_PER_POST} files")),
        "{reason}"
    );
    assert_eq!(files_under(&server.data.path().join("fs/alice")).len(), 2);
    assert!(tmp_is_empty(&server));
}

#[tokio::test]
async fn posts_need_the_owners_key() {
    let server = TestServer::start();
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let url = fs_url(&server, "alice", "system.json");
    let body = || form(&[(Some("system.json"), b"{}")]);

    let resp = reqwest::Client::new()
        .post(&url)
        .header("content-type", FORM_TYPE)
        .body(body())
        .send()
        .await
        .unwrap();
    let reason = assert_error(resp, StatusCode::UNAUTHORIZED).await;
    assert!(reason.contains("missing key"), "{reason}");
    assert_error(
        post_form(&url, "12345", body()).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let reason = assert_error(
        post_form(&url, &bob.fs_key, body()).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert!(reason.contains("only \"alice\""), "{reason}");
    // The public HELLO uuid writes only where fs_uuid_write says so.
    let reason = assert_error(
        post_form(&url, alice.uuid, body()).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(reason.contains("fs_uuid_write"), "{reason}");
    assert!(files_under(&server.data.path().join("fs")).is_empty());
}

#[tokio::test]
async fn with_fs_uuid_write_the_hello_uuid_uploads_as_erts_client_does() {
    let server = TestServer::with(|s| s.fs_uuid_write = true);
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let url = fs_url(&server, "alice", "system.json");
    let resp = post_form(&url, alice.uuid, form(&[(Some("blob"), b"{\"G\": 1}")])).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    // The service it tells reads the file with its own uuid.
    let resp = get(&reqwest::Client::new(), &url, bob.uuid).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "{\"G\": 1}");
    // Bob's uuid is no key to alice's folder.
    let resp = post_form(&url, bob.uuid, form(&[(Some("blob"), b"{}")])).await;
    assert_error(resp, StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn a_post_that_is_not_a_form_is_415_and_a_broken_form_400() {
    let server = TestServer::start();
    let alice = server.client("alice").await;
    let key = alice.fs_key.as_str();
    // The bytes as they are (ERT's Rust example did so): that is a PUT.
    for content_type in [None, Some("application/octet-stream")] {
        let mut headers = vec![("x-fs-key", key)];
        headers.extend(content_type.map(|t| ("content-type", t)));
        let (status, body) =
            raw_http(server.addr, "POST", "/fs/alice/raw.bin", &headers, b"raw").await;
        assert_eq!(status, 415, "{body}");
        assert!(body.contains("PUT"), "{body}");
    }
    // A form cut short, a boundary that is not in the body, a part's head
    // that never ends, and one longer than the parser keeps (64 KiB).
    let mut cut = form(&[(Some("a.txt"), &[7u8; 5_000])]);
    cut.truncate(3_000);
    let headless = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"");
    let mut other_boundary = form(&[(Some("a.txt"), b"a")]);
    other_boundary.splice(0..2, b"++".iter().copied());
    let endless_head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\n\r\nx",
        "n".repeat(100_000)
    );
    for body in [
        cut,
        headless.into_bytes(),
        other_boundary,
        endless_head.into_bytes(),
    ] {
        let (status, text) = raw_http(
            server.addr,
            "POST",
            "/fs/alice/a.txt",
            &[("x-fs-key", key), ("content-type", FORM_TYPE)],
            &body,
        )
        .await;
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("\"error\""), "{text}");
    }
    assert!(files_under(&server.data.path().join("fs")).is_empty());
    assert!(tmp_is_empty(&server));
}

#[tokio::test]
async fn a_stalled_form_times_out_and_leaves_nothing() {
    let server = TestServer::with(|s| s.upload_idle_timeout_ms = 300);
    let alice = server.client("alice").await;
    for (path, trickle) in [("alice/", false), ("alice/trickle.bin", true)] {
        let head = format!(
            "POST /fs/{path} HTTP/1.1\r\nHost: {}\r\nx-fs-key: {}\r\n\
             Content-Type: {FORM_TYPE}\r\nContent-Length: 100000\r\n\r\n\
             --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.bin\"\r\n\r\nx",
            server.addr, alice.fs_key
        );
        let text = slow_upload(&server, &head, trickle).await;
        assert!(text.starts_with("HTTP/1.1 408"), "{path}: {text}");
    }
    eventually(
        Duration::from_secs(5),
        "the temporary files are deleted",
        || tmp_is_empty(&server),
    )
    .await;
    assert!(files_under(&server.data.path().join("fs/alice")).is_empty());
}

/// A POST of a small form to `path` with `origin`: the status and the
/// `Access-Control-Allow-Origin` of the answer.
async fn post_from(
    server: &TestServer,
    path: &str,
    key: &str,
    origin: &str,
) -> (StatusCode, Option<String>) {
    let resp = reqwest::Client::new()
        .post(server.http_url(path))
        .header("origin", origin)
        .header("x-fs-key", key)
        .header("content-type", FORM_TYPE)
        .body(form(&[(Some("system.json"), b"{}")]))
        .send()
        .await
        .unwrap();
    let allowed = resp
        .headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status(), allowed)
}

#[tokio::test]
async fn pages_of_allowed_origins_upload_and_read_across_origins_and_others_are_refused() {
    const APP: &str = "http://app.example:8080";
    let server = TestServer::with(|s| s.allowed_origins = APP.into());
    let alice = server.client("alice").await;
    let http = reqwest::Client::new();

    // The browser asks first (x-fs-key is not a simple header).
    let preflight = http
        .request(
            reqwest::Method::OPTIONS,
            fs_url(&server, "alice", "system.json"),
        )
        .header("origin", APP)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-fs-key")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::OK);
    let header = |name: &str| {
        preflight
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_ascii_lowercase())
            .unwrap_or_default()
    };
    assert_eq!(header("access-control-allow-origin"), APP);
    assert!(header("access-control-allow-methods").contains("post"));
    assert!(header("access-control-allow-headers").contains("x-fs-key"));

    let (status, allowed) = post_from(&server, "/fs/alice/system.json", &alice.fs_key, APP).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(allowed.as_deref(), Some(APP));
    let resp = http
        .get(fs_url(&server, "alice", "system.json"))
        .header("origin", APP)
        .header("x-fs-key", alice.uuid.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()["access-control-allow-origin"]
            .to_str()
            .unwrap(),
        APP
    );
    // The gateway's own pages need no leave.
    let own = format!("http://{}", server.addr);
    let (status, _) = post_from(&server, "/fs/alice/own.json", &alice.fs_key, &own).await;
    assert_eq!(status, StatusCode::CREATED);

    // Another origin: refused as on the WebSockets, with no CORS headers.
    let (status, allowed) = post_from(
        &server,
        "/fs/alice/evil.json",
        &alice.fs_key,
        "http://evil.example",
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(allowed, None);
    assert!(!server.data.path().join("fs/alice/evil.json").exists());
}

/// A part's filename as a hostile sender writes it: escapes, separators,
/// dots, quotes, control characters, non-ASCII, or very long.
fn hostile_filename() -> impl Strategy<Value = Option<String>> {
    let piece = prop_oneof![
        Just("../".to_owned()),
        Just("..".to_owned()),
        Just("/".to_owned()),
        Just("\\".to_owned()),
        Just(".".to_owned()),
        Just("\"".to_owned()),
        Just("\u{0}".to_owned()),
        Just("%2e%2e%2f".to_owned()),
        Just("é中".to_owned()),
        Just("x".repeat(300)),
        "[a-z0-9._-]{1,8}",
        any::<String>(),
    ];
    proptest::option::weighted(
        0.9,
        proptest::collection::vec(piece, 1..5).prop_map(|p| p.concat()),
    )
}

/// A form of hostile parts, maybe cut short or with bytes changed.
fn hostile_form() -> impl Strategy<Value = Vec<u8>> {
    let part = (
        hostile_filename(),
        proptest::collection::vec(any::<u8>(), 0..300),
    );
    (
        proptest::collection::vec(part, 0..6),
        any::<prop::sample::Index>(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        any::<bool>(),
    )
        .prop_map(|(parts, cut, flips, truncate)| {
            let parts: Vec<(Option<&str>, &[u8])> = parts
                .iter()
                .map(|(name, bytes)| (name.as_deref(), bytes.as_slice()))
                .collect();
            let mut body = form(&parts);
            for (at, byte) in flips {
                let at = at.index(body.len());
                body[at] = byte;
            }
            if truncate {
                body.truncate(cut.index(body.len() + 1));
            }
            body
        })
}

/// Every multipart body, however hostile, gets a JSON answer of the file
/// server's statuses (never a 5xx), stores files only in the folder the
/// URL names and directly in it, and leaves no temporary file.
#[test]
fn hostile_forms_get_a_clear_answer_and_never_leave_the_folder() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = TestServer::start();
    let alice = rt.block_on(server.client("alice"));
    let http = reqwest::Client::new();
    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&(hostile_form(), any::<bool>()), |(body, folder)| {
        let path = if folder { "" } else { "one.bin" };
        let (status, text) = rt.block_on(async {
            let resp = http
                .post(fs_url(&server, "alice", path))
                .header("x-fs-key", &alice.fs_key)
                .header("content-type", FORM_TYPE)
                .body(body)
                .send()
                .await
                .expect("answered");
            (resp.status().as_u16(), resp.text().await.expect("a body"))
        });
        prop_assert!(
            [201, 400, 412, 413, 428].contains(&status),
            "{status}: {text}"
        );
        let answer: Value = serde_json::from_str(&text).expect("a JSON answer");
        prop_assert!(answer.get("error").is_some() == (status != 201), "{text}");
        for file in files_under(&server.data.path().join("fs")) {
            if file.starts_with(".trash") {
                continue;
            }
            prop_assert!(
                file.starts_with("alice") && file.components().count() == 2,
                "stored at {}",
                file.display()
            );
        }
        prop_assert!(tmp_is_empty(&server), "a temporary file is left");
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    // Still serving, alice's folder included.
    rt.block_on(async {
        let resp = post_form(
            &fs_url(&server, "alice", "after.txt"),
            &alice.fs_key,
            form(&[(Some("after.txt"), b"after")]),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::CREATED);
    });
}
