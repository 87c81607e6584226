//! The web console, in a real browser: Debian's headless Chromium driven by
//! Selenium (tests/clients/console_browser.py) against a real gateway with
//! real accounts and a real `concierge agent`; then what the browser did is
//! checked where it landed: the agent's audit, the VPN peer, the
//! downloaded config, the jobs' records. Two more runs keep a page open
//! while the gateway restarts and while its token expires every few
//! seconds: it must come back, and stay logged in, by itself.
//!
//! Screenshots of every page go to `$CONCIERGE_SCREENSHOTS` when set
//! (`CONCIERGE_SCREENSHOTS=docs/screenshots scripts/test --test console`
//! refreshes the README's pictures), otherwise to a temporary folder.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::process::{command, issue_token, json_lines, Process};
use common::relay::Relay;
use common::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/console_browser.py"
);
const OPERATOR_PASSWORD: &str = "correct horse battery";
const VIEWER_PASSWORD: &str = "viewer's own password";
const SHOTS: [&str; 14] = [
    "login",
    "fleet",
    "host",
    "started-paused",
    "started",
    "processes",
    "vpn",
    "audit",
    "jobs",
    "job",
    "phone-fleet",
    "phone-host",
    "phone-started",
    "host-viewer",
];

/// A gateway with a VPN endpoint, an admin and a viewer account, and an
/// agent `host1` sampling telemetry every half second.
async fn fleet(work: &Path) -> (TestServer, Process) {
    let server = TestServer::with(|s| s.vpn_endpoint = "vpn.test:51820".into());
    let data = server.data.path().to_str().expect("utf-8").to_owned();
    let agent = accounts_and_agent(&server.http_url(""), &data, work).await;
    (server, agent)
}

/// alice (admin), vic (viewer) and a `host1` agent for the gateway at
/// `base` whose data folder is `data`.
async fn accounts_and_agent(base: &str, data: &str, work: &Path) -> Process {
    common::console::accounts(
        base,
        data,
        &[
            ("alice", "admin", OPERATOR_PASSWORD),
            ("vic", "viewer", VIEWER_PASSWORD),
        ],
    )
    .await;
    let host = issue_token(&["--data-dir", data], "host1", "agent").await;
    let config = work.join("agent.toml");
    let url = format!("{}/ws", base.replacen("http://", "ws://", 1));
    std::fs::write(
        &config,
        format!(
            "url = {url:?}\ntoken = {host:?}\nname = \"host1\"\nwork_dir = {:?}\nsystemd = \"off\"\n\
             telemetry_interval_ms = 500\nreconnect_min_ms = 100\nreconnect_max_ms = 400\n",
            work.display().to_string()
        ),
    )
    .expect("agent config written");
    Process::spawn(command(&[
        "agent",
        "--config",
        config.to_str().expect("utf-8"),
    ]))
}

/// Runs tests/clients/console_browser.py with `args` to its end, within
/// `patience`, and returns its closing summary once it has succeeded.
async fn browse(args: &[&str], patience: Duration, agent: &Process) -> Value {
    common::browse(SCRIPT, args, patience, || {
        format!("agent:\n{}", agent.log())
    })
    .await
}

/// Asks `host1` for `req` as `token`'s holder, over the protocol.
async fn ask(server: &TestServer, token: &str, req: &str, msg: Value) -> Value {
    let mut client = server.connect().await;
    client
        .identify_with(
            json!({"type": "IDENTIFY", "name": "alice_check", "version": "0.2.0", "token": token}),
        )
        .await;
    client
        .send(
            json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "host1"},
                     "data": {"req": req, "rid": 1, "msg": msg}}),
        )
        .await;
    loop {
        let payload = client.skip_to("MESSAGE").await;
        if payload["data"]["rid"] == 1 {
            return payload["data"]["msg"].clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_and_a_viewer_use_the_console_in_a_real_browser() {
    common::require_browser();
    let work = tempfile::tempdir().expect("work dir");
    let (server, agent) = fleet(work.path()).await;
    // A viewer's client that declares the tag `agent`: the console must
    // not take it for a host (the browser checks the fleet's marks).
    let data = server.data.path().to_str().expect("utf-8").to_owned();
    let viewer = issue_token(&["--data-dir", &data], "vic", "viewer").await;
    let mut impostor = server.connect().await;
    impostor
        .identify_with(json!({
            "type": "IDENTIFY", "name": "vic_agent", "version": "0.2.0",
            "tags": ["agent"], "token": viewer,
        }))
        .await;
    // Read on (answering the gateway's pings) while the browser runs, for
    // as long as it runs: no payload is expected, so no helper's deadline.
    let impostor = tokio::spawn(async move {
        use futures_util::StreamExt;
        while let Some(Ok(_)) = impostor.ws.next().await {}
    });
    let scratch = tempfile::tempdir().expect("scratch dir");
    let shots = std::env::var("CONCIERGE_SCREENSHOTS")
        .map(|dir| Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .unwrap_or_else(|_| scratch.path().join("shots"));
    let downloads = scratch.path().join("downloads");
    let base = server.http_url("").trim_end_matches('/').to_owned();

    let shots_arg = shots.to_str().expect("utf-8");
    let downloads_arg = downloads.to_str().expect("utf-8");
    let summary = browse(
        &[
            "tour",
            &base,
            "alice",
            OPERATOR_PASSWORD,
            "vic",
            VIEWER_PASSWORD,
            "host1",
            shots_arg,
            downloads_arg,
        ],
        Duration::from_secs(300),
        &agent,
    )
    .await;

    impostor.abort();
    assert_eq!(summary["impostor_kind"], "client", "{summary}");
    // The inventory's target filter shows the gateway's caret under a mistake.
    let target_error = summary["target_error"].as_str().unwrap_or_default();
    assert!(
        target_error.contains("bad target expression") && target_error.contains('^'),
        "{summary}"
    );
    // The CPU chart moved, with a line per core.
    let points = &summary["cpu_points"];
    assert!(points[1].as_u64() > points[0].as_u64(), "{summary}");
    assert!(summary["cores"].as_u64() >= Some(1), "{summary}");
    assert!(
        summary["exit_text"]
            .as_str()
            .is_some_and(|t| t.starts_with("exited with 3")),
        "{summary}"
    );
    assert_eq!(
        summary["viewer_refusal"]["reason"], "forbidden",
        "{summary}"
    );

    // What the browser did reached the agent, as alice, and the viewer's
    // signal was refused there.
    let admin = issue_token(&["--data-dir", &data], "alice", "admin").await;
    let audit = ask(&server, &admin, "audit", json!({"limit": 1000})).await;
    let entries = audit["entries"].as_array().expect("audit entries");
    let pid = summary["pid"].as_u64().expect("pid");
    for req in ["pause_process", "resume_process", "kill_process"] {
        assert!(
            entries.iter().any(|e| e["req"] == req
                && e["user"] == "alice"
                && e["result"] == "success"
                && e["args"]["pid"] == pid),
            "no successful {req} of {pid} by alice in {audit}"
        );
    }
    assert!(
        entries.iter().any(|e| e["req"] == "execute"
            && e["args"]["command"] == "sleep 300"
            && e["user"] == "alice"),
        "the console's execute is not audited with its command line: {audit}"
    );
    let victim = summary["victim"].as_u64().expect("victim pid");
    assert!(
        entries.iter().any(|e| e["req"] == "pause_process"
            && e["user"] == "vic"
            && e["reason"] == "forbidden"
            && e["args"]["pid"] == victim),
        "the viewer's refused signal is not audited: {audit}"
    );

    // The downloaded config was the host's peer's (the address the page
    // listed), for the server's key; the page then revoked that peer.
    let conf = std::fs::read_to_string(summary["conf_file"].as_str().expect("conf path"))
        .expect("the downloaded config");
    let peers: Value = reqwest::Client::new()
        .get(server.http_url("/vpn/peers"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("peers answered")
        .json()
        .await
        .expect("peers JSON");
    let ipv4 = summary["peer_ipv4"].as_str().expect("the listed address");
    assert!(conf.contains("PrivateKey = "), "{conf}");
    assert!(conf.contains(&format!("Address = {ipv4}/32")), "{conf}");
    assert!(
        conf.contains(&format!(
            "PublicKey = {}",
            peers["server_public_key"].as_str().expect("server key")
        )),
        "{conf}"
    );
    assert!(
        !peers["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .any(|p| p["name"] == "host1"),
        "the revoked peer is still listed: {peers}"
    );
    let killed = summary["ctl_parity"]["sigkill"].as_u64().expect("pid");
    assert!(
        entries.iter().any(|e| e["req"] == "proc_signal"
            && e["args"]["mode"] == "SIGKILL"
            && e["args"]["pid"] == killed
            && e["result"] == "success"),
        "the SIGKILL from the details is not audited: {audit}"
    );

    // The job the browser ran is alice's, as the gateway recorded it, and
    // the host printed what the page showed; the one it cancelled and the
    // rerun of its host are too.
    let http = reqwest::Client::new();
    let get = |path: String| {
        let (http, server, admin) = (&http, &server, &admin);
        async move {
            let resp = http
                .get(server.http_url(&path))
                .bearer_auth(admin)
                .send()
                .await
                .expect("answered");
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            resp.json::<Value>().await.expect("JSON")
        }
    };
    let job = summary["job"].as_str().expect("the job's id");
    let detail = get(format!("/jobs/{job}")).await;
    assert_eq!(detail["job"]["user"], "alice", "{detail}");
    assert_eq!(detail["job"]["state"], "finished", "{detail}");
    assert_eq!(detail["hosts"][0]["host"], "host1", "{detail}");
    assert_eq!(detail["hosts"][0]["exit_code"], 0, "{detail}");
    let host = get(format!("/jobs/{job}/hosts/host1")).await;
    assert!(
        host["stdout"]["head"]
            .as_str()
            .is_some_and(|out| out.contains("hello")),
        "{host}"
    );
    assert!(
        summary["job_output"]
            .as_str()
            .is_some_and(|out| out.contains("hello")),
        "{summary}"
    );
    assert!(
        summary["job_target_error"]
            .as_str()
            .is_some_and(|e| e.contains('^')),
        "{summary}"
    );
    for (key, state) in [("cancelled", "cancelled"), ("rerun", "cancelled")] {
        let id = summary[key].as_str().expect("a job id");
        let detail = get(format!("/jobs/{id}")).await;
        assert_eq!(detail["job"]["state"], state, "{key}: {detail}");
        assert_eq!(detail["hosts"][0]["state"], "cancelled", "{key}: {detail}");
    }
    assert_eq!(summary["viewer_jobs_form"], false, "{summary}");

    for shot in SHOTS {
        let png = std::fs::read(shots.join(format!("{shot}.png")))
            .unwrap_or_else(|e| panic!("no screenshot {shot}: {e}"));
        assert!(png.starts_with(b"\x89PNG"), "{shot}.png is no PNG");
    }
}

/// The browser run's next line of `step` `wanted` (or its closing summary).
async fn step(lines: &mut tokio::sync::mpsc::UnboundedReceiver<Value>, wanted: &str) -> Value {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(90), lines.recv())
            .await
            .unwrap_or_else(|_| panic!("no {wanted:?} step within 90 s"))
            .unwrap_or_else(|| panic!("the browser run ended before {wanted:?}"));
        if line["step"] == wanted || line.get("ok").is_some() {
            return line;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_comes_back_by_itself_after_the_gateway_restarts() {
    common::require_browser();
    let data = tempfile::tempdir().expect("data");
    let data_dir = data.path().to_str().expect("utf-8").to_owned();
    let gateway = |bind: &str| common::process::serve(bind, &data_dir);
    let mut first = gateway("127.0.0.1:0");
    let addr = first.listening().await;
    let base = format!("http://{addr}");
    let work = tempfile::tempdir().expect("work dir");
    let agent = accounts_and_agent(&base, &data_dir, work.path()).await;
    let scratch = tempfile::tempdir().expect("scratch dir");
    let mut browser = tokio::process::Command::new("python3")
        .arg(SCRIPT)
        .args(["reconnect", &base, "alice", OPERATOR_PASSWORD, "host1"])
        .arg(scratch.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut lines = json_lines(&mut browser);
    step(&mut lines, "ready").await;
    first.signal("TERM");
    first.exit(Duration::from_secs(10)).await;
    step(&mut lines, "down").await;
    let mut second = gateway(&addr.to_string());
    second.listening().await;
    let back = step(&mut lines, "back").await;
    assert_eq!(back["step"], "back", "{back}");
    let summary = step(&mut lines, "done").await;
    let status = browser.wait().await.expect("the browser run ends");
    assert!(
        status.success() && summary["ok"] == true,
        "{summary}\nagent:\n{}",
        agent.log()
    );
    let points = &summary["points"];
    assert!(points[1].as_u64() > points[0].as_u64(), "{summary}");
    assert!(
        summary["while_down"]
            .as_str()
            .is_some_and(|s| s.starts_with("reconnecting")),
        "{summary}"
    );
    // The gateway has no vpn_endpoint: the VPN page said so, offering nothing.
    assert!(
        summary["vpn_off"]
            .as_str()
            .is_some_and(|s| s.contains("vpn_endpoint")),
        "{summary}"
    );
}

/// The console's connection is cut while it shows the audit (a relay the
/// test cuts: the gateway lives on) and commands run meanwhile: it comes
/// back, subscribes again from the last position it saw (its
/// SELF_SUBSCRIBE carries it, the gateway recovers it) and shows each
/// missed entry once. Cut again while the agent restarts (its audit
/// service's history starts anew): the history is not recovered, and the
/// page fetches the audit again, showing what ran meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_resumes_the_audit_after_its_connection_is_cut() {
    common::require_browser();
    let work = tempfile::tempdir().expect("work dir");
    let (server, mut agent) = fleet(work.path()).await;
    let data = server.data.path().to_str().expect("utf-8").to_owned();
    let admin = issue_token(&["--data-dir", &data], "alice", "admin").await;
    let relay = Relay::start(server.addr.port()).await;
    agent
        .wait_for_line(&["connected"], Duration::from_secs(20))
        .await;
    let mark = |n: u32| {
        let (server, admin) = (&server, &admin);
        async move {
            let cmd = json!({"cmd": ["echo", format!("mark-{n}")]});
            let reply = ask(server, admin, "execute", cmd).await;
            assert!(reply["proc_id"].is_u64(), "{reply}");
        }
    };
    mark(1).await;
    let scratch = tempfile::tempdir().expect("scratch dir");
    let base = relay.http_url("");
    let mut browser = tokio::process::Command::new("python3")
        .arg(SCRIPT)
        .args(["resume", &base, "alice", OPERATOR_PASSWORD, "host1"])
        .arg(scratch.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut lines = json_lines(&mut browser);
    step(&mut lines, "ready").await;
    mark(2).await;
    step(&mut lines, "live").await;
    relay.cut();
    step(&mut lines, "down").await;
    mark(3).await;
    mark(4).await;
    relay.mend();
    step(&mut lines, "back").await;

    relay.cut();
    step(&mut lines, "down again").await;
    agent.signal("KILL");
    agent.exit(Duration::from_secs(10)).await;
    let config = work.path().join("agent.toml");
    let mut agent = Process::spawn(command(&[
        "agent",
        "--config",
        config.to_str().expect("utf-8"),
    ]));
    agent
        .wait_for_line(&["connected"], Duration::from_secs(20))
        .await;
    mark(5).await;
    relay.mend();
    let summary = step(&mut lines, "done").await;
    let status = browser.wait().await.expect("the browser run ends");
    assert!(
        status.success() && summary["ok"] == true,
        "{summary}\nagent:\n{}",
        agent.log()
    );
    let marks = summary["marks"].as_array().expect("marks");
    for n in 1..=5 {
        let mark = json!(format!("mark-{n}"));
        assert_eq!(
            marks.iter().filter(|m| **m == mark).count(),
            1,
            "{mark} shown once: {summary}"
        );
    }
    // The first subscription has no position; the one after the first cut
    // gives the last seen (mark-2's) and is recovered; after the second,
    // the agent's new history cannot be.
    let subscribes = summary["subscribes"].as_array().expect("subscribes");
    assert!(subscribes[0].get("position").is_none(), "{summary}");
    assert!(
        subscribes[1..]
            .iter()
            .all(|s| s["position"]["offset"].as_u64() >= Some(1)),
        "{summary}"
    );
    let recovered: Vec<_> = summary["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r.get("recovered").cloned())
        .collect();
    assert_eq!(recovered, [json!(true), json!(false)], "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_renews_its_token_before_each_expiry() {
    common::require_browser();
    // Tokens that last 8 s: the page renews at four fifths, and the
    // gateway closes the old connection (4012) at its token's expiry.
    let server = TestServer::with(|s| s.token_validity_secs = 8);
    let data = server.data.path().to_str().expect("utf-8").to_owned();
    let work = tempfile::tempdir().expect("work dir");
    let agent = accounts_and_agent(&server.http_url(""), &data, work.path()).await;
    let scratch = tempfile::tempdir().expect("scratch dir");
    let base = server.http_url("");
    let scratch_arg = scratch.path().to_str().expect("utf-8");
    let summary = browse(
        &[
            "refresh",
            &base,
            "alice",
            OPERATOR_PASSWORD,
            "host1",
            scratch_arg,
        ],
        Duration::from_secs(120),
        &agent,
    )
    .await;
    // 20 s of 8 s tokens: the login's and at least two renewals.
    assert!(summary["tokens"].as_u64() >= Some(3), "{summary}");
}

#[actix_web::test]
async fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    let server = TestServer::start();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for path in ["/", "/console"] {
        let resp = http
            .get(server.http_url(path))
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), StatusCode::FOUND, "{path}");
        assert_eq!(resp.headers()["location"], "/console/", "{path}");
    }
    let page = http
        .get(server.http_url("/console/"))
        .send()
        .await
        .expect("answered");
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    let policy = headers["content-security-policy"].to_str().expect("ascii");
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let etag = headers["etag"].clone();
    let body = page.text().await.expect("body");
    assert!(body.contains("js/main.js") && body.contains("vendor/chart.min.js"));

    // Revalidation by content hash: unchanged is 304 without a body.
    let again = http
        .get(server.http_url("/console/"))
        .header("If-None-Match", etag)
        .send()
        .await
        .expect("answered");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert!(again.bytes().await.expect("body").is_empty());

    // Every file the page loads is there, with its type.
    for (path, kind) in [
        ("/console/js/main.js", "text/javascript; charset=utf-8"),
        (
            "/console/vendor/chart.min.js",
            "text/javascript; charset=utf-8",
        ),
        ("/console/console.css", "text/css; charset=utf-8"),
        ("/console/icon.svg", "image/svg+xml; charset=utf-8"),
    ] {
        let resp = http
            .get(server.http_url(path))
            .send()
            .await
            .expect("answered");
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(resp.headers()["content-type"], kind, "{path}");
        let head = http
            .head(server.http_url(path))
            .send()
            .await
            .expect("answered");
        assert_eq!(head.status(), StatusCode::OK, "HEAD {path}");
    }
    let missing = http
        .get(server.http_url("/console/js/nope.js"))
        .send()
        .await
        .expect("answered");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.text().await.expect("body").contains("nope.js"));
    // Only embedded files: no path leads out to the disk.
    for target in [
        "/console/../Cargo.toml",
        "/console/%2e%2e/Cargo.toml",
        "/console//etc/passwd",
    ] {
        let (status, _) = common::raw_http(server.addr, "GET", target, &[], b"").await;
        assert_eq!(status, 404, "{target}");
    }
}
