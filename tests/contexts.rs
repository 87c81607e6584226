//! Contexts, as a person uses them: `concierge login` with each spelling
//! of a gateway's address, `ctl` and the admin commands using the current
//! context, `context use`/`--context` switching between two gateways, and
//! every address mistake answered with the fix, all as processes with a
//! config folder of their own.

mod common;

use std::path::Path;

use serde_json::Value;

use common::free_port;
use common::process::{add_user, as_person, login, outcome, serve, Process};

const PASSWORD: &str = "correct horse battery";

/// A gateway on an ephemeral port whose store already holds the admin
/// `admin` (made with `user add --local`, as a first admin is).
async fn gateway(data: &Path, admin: &str) -> (Process, String) {
    let dir = data.to_str().unwrap();
    add_user(&["--data-dir", dir], admin, "admin", PASSWORD).await;
    let mut process = serve("127.0.0.1:0", dir);
    let addr = process.listening().await;
    (process, addr.to_string())
}

/// `concierge ARGS --json` as the person of `home`: its exit code and the
/// JSON it printed (Null when none), and its stderr.
async fn json(home: &Path, args: &[&str]) -> (i32, Value, String) {
    let (code, stdout, stderr) = outcome(as_person(home, args).arg("--json")).await;
    let value = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (code, value, stderr)
}

#[tokio::test]
async fn login_takes_every_spelling_of_the_address_and_ctl_uses_the_context() {
    let data = tempfile::tempdir().unwrap();
    let (_gateway, addr) = gateway(data.path(), "ada").await;
    let port = addr.rsplit(':').next().unwrap();
    for given in [
        format!("http://{addr}"),
        format!("ws://{addr}/ws"),
        format!("ws://{addr}"),
        format!("HTTP://{addr}/"),
        format!("127.0.0.1:{port}"),
    ] {
        let home = tempfile::tempdir().unwrap();
        let (code, out, err) = login(home.path(), &given, "ada", PASSWORD, &[]).await;
        assert_eq!(code, 0, "{given}: {out} {err}");
        let (code, listed, err) = json(home.path(), &["context", "list"]).await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            listed,
            serde_json::json!([{"name": addr, "url": format!("http://{addr}"), "user": "ada", "current": true}]),
            "{given}"
        );
        let kept = home.path().join("concierge/contexts.json");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&kept).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{given}");
        // The token is never shown.
        let (_, shown, _) = outcome(&mut as_person(home.path(), &["context", "show"])).await;
        assert!(shown.contains(&format!("http://{addr}")), "{shown}");
        assert!(!shown.contains("eyJ"), "{shown}");

        // ctl finds the gateway and the token in the context: it is ada's.
        let (code, clients, err) = json(home.path(), &["ctl", "clients"]).await;
        assert_eq!(code, 0, "{given}: {err}");
        let names: Vec<&str> = clients
            .as_array()
            .unwrap_or_else(|| panic!("{clients}"))
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert!(names.iter().any(|n| n.starts_with("ada_ctl_")), "{names:?}");
    }
}

#[tokio::test]
async fn every_address_mistake_says_the_fix() {
    let data = tempfile::tempdir().unwrap();
    let (mut gateway, addr) = gateway(data.path(), "ada").await;
    let home = tempfile::tempdir().unwrap();

    for wrong in ["ftp://127.0.0.1:8080", "http://", "http://h:8080/console"] {
        let (code, _, err) = login(home.path(), wrong, "ada", PASSWORD, &[]).await;
        assert_eq!(code, 2, "{wrong}: {err}");
        assert!(
            err.contains("give the gateway as http://HOST:PORT"),
            "{wrong}: {err}"
        );
        assert!(!err.contains("builder error"), "{err}");
    }
    let (code, _, err) = outcome(&mut as_person(
        home.path(),
        &["ctl", "--url", "ftp://h", "clients"],
    ))
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("http://HOST:PORT"), "{err}");

    let https = format!("https://{addr}");
    let (code, _, err) = login(home.path(), &https, "ada", PASSWORD, &[]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("TLS and plain HTTP mixed up"), "{err}");

    let (code, _, err) = login(home.path(), &addr, "ada", "wrong password", &[]).await;
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("login refused") && err.contains("password_invalid"),
        "{err}"
    );

    // Logged in, then the gateway stops: login, ctl and the admin commands
    // say that nothing listens there and what to do.
    let (code, _, err) = login(home.path(), &addr, "ada", PASSWORD, &[]).await;
    assert_eq!(code, 0, "{err}");
    gateway.signal("TERM");
    gateway.exit(common::PATIENCE).await;
    let fix = "is the gateway running?";
    let (code, _, err) = login(home.path(), &addr, "ada", PASSWORD, &[]).await;
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("connection refused") && err.contains(fix),
        "{err}"
    );
    for args in [&["ctl", "clients"][..], &["user", "list"]] {
        let (code, _, err) = outcome(&mut as_person(home.path(), args)).await;
        assert_eq!(code, 3, "{args:?}: {err}");
        assert!(err.contains(fix), "{args:?}: {err}");
        assert!(!err.contains("error sending request"), "{err}");
    }
    let nowhere = format!("127.0.0.1:{}", free_port());
    let (code, _, err) = login(home.path(), &nowhere, "ada", PASSWORD, &[]).await;
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(fix), "{err}");
}

#[tokio::test]
async fn contexts_switch_between_gateways_and_a_token_goes_only_to_its_own() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_first, first) = gateway(one.path(), "ada").await;
    let (_second, second) = gateway(two.path(), "bea").await;
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    assert_eq!(
        login(home, &first, "ada", PASSWORD, &["--context", "one"])
            .await
            .0,
        0
    );
    assert_eq!(
        login(home, &second, "bea", PASSWORD, &["--context", "two"])
            .await
            .0,
        0
    );

    let users = async |args: &[&str]| {
        let (code, listed, err) = json(home, args).await;
        assert_eq!(code, 0, "{args:?}: {err}");
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    // The last login is the current context.
    assert_eq!(users(&["user", "list"]).await, ["bea"]);
    assert_eq!(users(&["user", "list", "--context", "one"]).await, ["ada"]);
    let (code, out, err) = outcome(&mut as_person(home, &["context", "use", "one"])).await;
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(users(&["user", "list"]).await, ["ada"]);
    let (_, current, _) = json(home, &["context", "show"]).await;
    assert_eq!(current["name"], "one");
    assert_eq!(current["url"], format!("http://{first}"));

    // --url naming another gateway than the context's: the context's token
    // is not sent there, so the admin API refuses the request.
    let (code, _, err) = outcome(&mut as_person(
        home,
        &["user", "list", "--url", &format!("ws://{second}/ws")],
    ))
    .await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("Authorization: Bearer"), "{err}");

    let (code, _, err) = outcome(&mut as_person(
        home,
        &["user", "list", "--context", "three"],
    ))
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no context named \"three\"") && err.contains("one, two"),
        "{err}"
    );

    let (code, _, err) = outcome(&mut as_person(home, &["context", "delete", "one"])).await;
    assert_eq!(code, 0, "{err}");
    let (_, listed, _) = json(home, &["context", "list"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["name"], "two");
    assert_eq!(listed[0]["current"], false);
    let (code, _, err) = outcome(&mut as_person(home, &["context", "use", "one"])).await;
    assert_eq!(code, 1, "{err}");
}

/// A token kept by a `login` from before contexts (`concierge/token`) is
/// still used while no contexts file exists.
#[tokio::test]
async fn the_token_file_of_an_earlier_login_still_works() {
    let data = tempfile::tempdir().unwrap();
    let (_gateway, addr) = gateway(data.path(), "ada").await;
    let store = ["--data-dir", data.path().to_str().unwrap()];
    let token = common::process::issue_token(&store, "ada", "operator").await;
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("concierge")).unwrap();
    std::fs::write(home.path().join("concierge/token"), format!("{token}\n")).unwrap();
    let url = format!("http://{addr}");
    let (code, clients, err) = json(home.path(), &["ctl", "--url", &url, "clients"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        clients
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["user"] == "ada"),
        "{clients}"
    );
}

/// An agent started with `--context` finds the gateway there; its own
/// token (`--token-file`) wins over the context's.
#[tokio::test]
async fn an_agent_takes_the_gateway_from_a_context() {
    let data = tempfile::tempdir().unwrap();
    let (_gateway, addr) = gateway(data.path(), "ada").await;
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    assert_eq!(
        login(home, &addr, "ada", PASSWORD, &["--context", "lab"])
            .await
            .0,
        0
    );
    let (code, token, err) = outcome(&mut as_person(
        home,
        &[
            "token", "issue", "--name", "host3", "--role", "agent", "--ttl", "1h",
        ],
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    let work = tempfile::tempdir().unwrap();
    let token_file = work.path().join("host3.token");
    std::fs::write(&token_file, token).unwrap();
    let mut agent = as_person(
        home,
        &[
            "agent",
            "--context",
            "lab",
            "--name",
            "host3",
            "--systemd",
            "off",
        ],
    );
    agent
        .arg("--token-file")
        .arg(&token_file)
        .arg("--work-dir")
        .arg(work.path());
    let agent = Process::spawn(agent);
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        let (code, clients, err) = json(home, &["ctl", "clients"]).await;
        assert_eq!(code, 0, "{err}");
        if clients
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "host3" && c["user"] == "host3")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent did not connect: {clients}\n{}",
            agent.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
