//! An upload as seed 004's browser client makes it, in a real Chromium: a
//! page of another origin identifies, posts a `FormData` with `fetch` and
//! its HELLO uuid in `x-fs-key` (`fs_uuid_write`), reads the file back,
//! and is refused another client's folder; the same page from an origin the
//! gateway does not allow cannot upload at all. The page and its driver are
//! `tests/clients/ert_upload.html` and `ert_upload_browser.py`.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::*;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/ert_upload_browser.py"
);

#[tokio::test]
async fn a_page_of_an_allowed_origin_uploads_as_erts_client_and_another_origin_cannot() {
    common::require_browser();
    let shots = tempfile::tempdir().expect("a folder for screenshots");
    let mut browser = tokio::process::Command::new("python3")
        .arg(SCRIPT)
        .arg(shots.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut to_browser = browser.stdin.take().expect("its stdin");
    let mut lines = BufReader::new(browser.stdout.take().expect("its stdout")).lines();
    let mut said = Vec::new();
    let mut next = async || {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the browser run went silent")
            .expect("reads")
            .unwrap_or_default();
        said.push(line.clone());
        serde_json::from_str::<Value>(&line)
            .unwrap_or_else(|_| panic!("the browser run ended or failed; it said:\n{said:#?}"))
    };

    let serving = next().await;
    assert_eq!(serving["step"], "serving", "{serving}");
    let page = format!("http://127.0.0.1:{}", serving["port"]);
    let server = TestServer::with(|s| {
        s.allowed_origins = page;
        s.fs_uuid_write = true;
    });
    let gateway = server.http_url("");
    to_browser
        .write_all(format!("{gateway}\n").as_bytes())
        .await
        .expect("writes");

    let uploaded = next().await;
    assert_eq!(uploaded["step"], "uploaded", "{uploaded}");
    // The page's client is connected while the test looks: its folder holds
    // the file, and only it.
    let stored = std::fs::read_to_string(server.data.path().join("fs/alice/system.json"))
        .expect("the page's upload is stored");
    assert!(stored.starts_with(r#"{"name": "Binary""#), "{stored}");
    assert_eq!(
        files_under(&server.data.path().join("fs")),
        [PathBuf::from("alice/system.json")]
    );
    to_browser.write_all(b"checked\n").await.expect("writes");

    // Another file, from a page of another origin, with alice's uuid: the
    // browser sent nothing.
    let refused = next().await;
    assert_eq!(refused["step"], "refused", "{refused}");
    assert_eq!(
        std::fs::read_to_string(server.data.path().join("fs/alice/system.json")).unwrap(),
        stored
    );
    to_browser.write_all(b"checked\n").await.expect("writes");

    let summary = next().await;
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(summary["upload"]["status"], 201, "{summary}");
    assert!(
        summary["other_folder"]
            .as_str()
            .is_some_and(|e| e.contains("only \"bob\" may change its files")),
        "{summary}"
    );
    assert!(
        summary["other_origin"]
            .as_str()
            .is_some_and(|e| e.contains("Failed to fetch")),
        "{summary}"
    );
    let status = tokio::time::timeout(common::PATIENCE, browser.wait())
        .await
        .expect("the browser run ends")
        .expect("waits");
    assert!(status.success(), "{said:#?}");
}
