//! The admin commands through a running gateway's admin API, as processes
//! with an admin's context (and an operator's, refused), their output and
//! exit codes checked; the API's statuses over plain HTTP; and the local
//! mode, which never makes a store it was not asked to.

mod common;

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{json, Value};

use common::process::{add_user, as_person, command, fed, login, outcome, serve, Process};

const PASSWORD: &str = "correct horse battery";

/// A gateway whose store holds the admin `ada` and the operator `olga`,
/// and a config folder for each, logged in.
struct Fleet {
    gateway: Process,
    addr: String,
    ada: tempfile::TempDir,
    olga: tempfile::TempDir,
    _data: tempfile::TempDir,
}

async fn fleet() -> Fleet {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    add_user(&["--data-dir", dir], "ada", "admin", PASSWORD).await;
    add_user(&["--data-dir", dir], "olga", "operator", PASSWORD).await;
    let mut gateway = serve("127.0.0.1:0", dir);
    let addr = gateway.listening().await.to_string();
    let (ada, olga) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (home, user) in [(&ada, "ada"), (&olga, "olga")] {
        let (code, out, err) = login(home.path(), &addr, user, PASSWORD, &[]).await;
        assert_eq!(code, 0, "{out} {err}");
    }
    Fleet {
        gateway,
        addr,
        ada,
        olga,
        _data: data,
    }
}

/// `concierge ARGS` as the person of `home`: exit code, stdout, stderr.
async fn run(home: &Path, args: &[&str]) -> (i32, String, String) {
    outcome(&mut as_person(home, args)).await
}

/// [`run`] with `--json`, its stdout read as JSON.
async fn run_json(home: &Path, args: &[&str]) -> Value {
    let (code, out, err) = outcome(as_person(home, args).arg("--json")).await;
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[tokio::test]
async fn an_admin_manages_accounts_tokens_and_settings_through_the_gateway() {
    let mut fleet = fleet().await;
    let ada = fleet.ada.path();

    let (code, out, err) = fed(
        &mut as_person(
            ada,
            &["user", "add", "bob", "--role", "viewer", "--password-stdin"],
        ),
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert_eq!((code, out.trim()), (0, "created bob (viewer)"), "{err}");
    let users = run_json(ada, &["user", "list"]).await;
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ada", "bob", "olga"], "{users}");
    let (code, _, err) = fed(
        &mut as_person(
            ada,
            &["user", "add", "bob", "--role", "viewer", "--password-stdin"],
        ),
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert_eq!(code, 1, "{err}");

    let (code, token, err) = run(
        ada,
        &[
            "token", "issue", "--name", "host1", "--role", "agent", "--ttl", "1h",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(token.trim().starts_with("eyJ"), "{token}");
    assert!(err.contains("for host1 (agent)"), "{err}");
    let listed = run_json(ada, &["token", "list"]).await;
    assert_eq!(listed[0]["name"], "host1", "{listed}");
    assert_eq!(listed[0]["revoked"], false, "{listed}");
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let (code, out, err) = run(ada, &["token", "revoke", &id]).await;
    assert_eq!(
        (code, out.trim()),
        (0, format!("revoked {id}").as_str()),
        "{err}"
    );
    let listed = run_json(ada, &["token", "list"]).await;
    assert_eq!(listed[0]["revoked"], true, "{listed}");

    let (code, _, err) = run(
        ada,
        &[
            "token", "issue", "--name", "h2", "--role", "agent", "--ttl", "forever",
        ],
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("expected a duration like 30d or 12h"), "{err}");

    let settings = run_json(
        ada,
        &[
            "settings",
            "set",
            "bob",
            "storage_unit_of_measurement",
            "gib",
        ],
    )
    .await;
    assert_eq!(settings["storage_unit_of_measurement"], "gib", "{settings}");
    let settings = run_json(ada, &["settings", "get", "bob"]).await;
    assert_eq!(settings["storage_unit_of_measurement"], "gib", "{settings}");

    // Unknown ids and users are errors, not silent successes.
    for (args, said) in [
        (
            &["token", "revoke", "6f1c2a9e-3b4d-4e5f-8a7b-1c2d3e4f5a6b"][..],
            "no issued token has id",
        ),
        (&["settings", "get", "nobody"], "no user named \"nobody\""),
        (&["user", "remove", "nobody"], "no account named \"nobody\""),
        (
            &["token", "revoke", "--user", "nobody"],
            "no user named \"nobody\"",
        ),
        (&["token", "retire-key", "nokey"], "no signing key"),
    ] {
        let (code, out, err) = run(ada, args).await;
        assert_eq!(code, 1, "{args:?}: {out} {err}");
        assert!(err.contains(said), "{args:?}: {err}");
    }

    let (code, out, err) = run(ada, &["user", "remove", "bob"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed bob"), "{out}");

    // An operator's token is refused, and says why.
    let (code, _, err) = run(fleet.olga.path(), &["user", "list"]).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("only an admin"), "{err}");

    // Every action is in the gateway's log, with its admin, never a
    // password or a token.
    let log = fleet.gateway.log();
    for action in [
        "user add",
        "token issue",
        "token revoke",
        "settings set",
        "user remove",
    ] {
        assert!(
            log.lines().any(|l| l.contains("admin action")
                && l.contains("admin=ada")
                && l.contains(action)),
            "{action}: {log}"
        );
    }
    assert!(
        !log.contains(PASSWORD) && !log.contains(token.trim()),
        "{log}"
    );
    fleet.gateway.signal("TERM");
    fleet.gateway.exit(common::PATIENCE).await;
}

#[tokio::test]
async fn the_admin_api_answers_with_statuses_and_reasons() {
    let fleet = fleet().await;
    let url = |path: &str| format!("http://{}/admin/{path}", fleet.addr);
    let token_of = |home: &Path| {
        let kept: Value =
            serde_json::from_slice(&std::fs::read(home.join("concierge/contexts.json")).unwrap())
                .unwrap();
        kept["contexts"][&fleet.addr]["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (admin, operator) = (token_of(fleet.ada.path()), token_of(fleet.olga.path()));
    let http = reqwest::Client::new();

    let none = http.get(url("users")).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    let body: Value = none.json().await.unwrap();
    assert_eq!(body["reason"], "unauthorized", "{body}");

    let refused = http
        .get(url("users"))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["reason"], "forbidden", "{body}");

    for (request, status) in [
        (http.get(url("users")), StatusCode::OK),
        (
            http.delete(url("tokens/6f1c2a9e-3b4d-4e5f-8a7b-1c2d3e4f5a6b")),
            StatusCode::NOT_FOUND,
        ),
        (
            http.delete(url("tokens/not-an-id")),
            StatusCode::BAD_REQUEST,
        ),
        (
            http.get(url("users/nobody/settings")),
            StatusCode::NOT_FOUND,
        ),
        (
            http.post(url("users")).body("{\"username\": 1}"),
            StatusCode::BAD_REQUEST,
        ),
        (
            http.post(url("users"))
                .json(&json!({"username": "ada", "role": "viewer", "password": PASSWORD})),
            StatusCode::CONFLICT,
        ),
        (
            http.post(url("tokens"))
                .json(&json!({"name": "h1", "role": "agent", "ttl_secs": 60})),
            StatusCode::CREATED,
        ),
    ] {
        let response = request.bearer_auth(&admin).send().await.unwrap();
        assert_eq!(response.status(), status, "{:?}", response.url().path());
    }
}

#[tokio::test]
async fn local_mode_never_makes_a_store_it_was_not_asked_to() {
    let cwd = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let empty = cwd.path().join("elsewhere");
    let elsewhere = empty.to_str().unwrap();
    for args in [
        &["user", "list", "--local"][..],
        &["token", "revoke", "--user", "host1", "--local"],
        &[
            "settings",
            "get",
            "alice",
            "--local",
            "--data-dir",
            elsewhere,
        ],
        &["token", "list", "--local", "--data-dir", elsewhere],
    ] {
        let (code, _, err) = outcome(as_person(home.path(), args).current_dir(cwd.path())).await;
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("no store at") && err.contains("--data-dir"),
            "{args:?}: {err}"
        );
    }
    let (code, _, err) = fed(
        as_person(
            home.path(),
            &[
                "user",
                "add",
                "ada",
                "--role",
                "admin",
                "--password-stdin",
                "--local",
            ],
        )
        .current_dir(cwd.path()),
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no store at"), "{err}");
    let left: Vec<_> = std::fs::read_dir(cwd.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");

    // The bootstrap: the first admin, in the data folder named.
    let (code, out, err) = fed(
        command(&[
            "user",
            "add",
            "ada",
            "--role",
            "admin",
            "--password-stdin",
            "--local",
            "--data-dir",
            elsewhere,
        ])
        .current_dir(cwd.path()),
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert_eq!(code, 0, "{out} {err}");
    assert!(empty.join("concierge.db").exists());
    // --local takes no gateway, and the store flags need --local.
    let (code, _, err) = outcome(&mut as_person(
        home.path(),
        &["user", "list", "--data-dir", elsewhere],
    ))
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--local"), "{err}");
}
