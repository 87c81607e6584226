//! Alerts, for real (PROTOCOL §21): a `concierge serve` process with rules
//! in its config file and a short `alert_interval_secs`, real agents that
//! are stopped and started again, a subscriber of the `alerts` service, and
//! a real HTTP server as the webhook's receiver, down at first, then
//! refusing, then too slow, then acknowledging.

#[path = "../common/mod.rs"]
mod common;
mod health;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use common::alerts::{Answer, Follower, Receiver};
use common::fleet::Fleet;
use common::jobs::Operator;
use common::process::{ctl, outcome};
use tokio::io::{AsyncBufReadExt, BufReader};

/// How long an alert of the tests may take to fire or resolve.
const PATIENCE: Duration = Duration::from_secs(30);

/// A config file holding `rules` (TOML), in `dir`.
fn config(dir: &tempfile::TempDir, rules: &str) -> String {
    let path = dir.path().join("concierge.toml");
    std::fs::write(&path, rules).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Polls `alerts` until `done` says the page is what is waited for.
async fn until_page(op: &mut Operator, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let page = op.ask("alerts", json!({})).await;
        if done(&page) {
            return page;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `offline for 2s`: a stopped agent's alert fires once it has been gone
/// that long and resolves when it is back, on the service, in `alerts` and
/// at the webhook, in order, each acknowledged event POSTed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_host_fires_then_resolves_everywhere_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(
        &dir,
        "[[alert]]\nname = \"down\"\nwhen = \"offline for 2s\"\ntarget = \"host_0\"\n",
    );
    let port = common::free_port();
    let hook = format!("http://127.0.0.1:{port}/hook");
    let mut fleet = Fleet::start_with(
        2,
        &[],
        &[
            "--config",
            &file,
            "--alert-interval-secs",
            "1",
            "--alert-webhook",
            &hook,
        ],
    )
    .await;
    let mut follower = Follower::subscribe(&fleet.url()).await;
    let mut op = fleet.operator().await;
    let rules = op.ask("alert_rules", json!({})).await;
    assert_eq!(
        rules["rules"],
        json!([{"name": "down", "when": "offline for 2s", "target": "host_0", "source": "config"}])
    );
    // Online: nothing fires.
    let quiet = op.ask("alerts", json!({})).await;
    assert_eq!(
        (quiet["active"].clone(), quiet["recent"].clone()),
        (json!([]), json!([]))
    );

    fleet.stop(0).await;
    let firing = follower.next(PATIENCE).await;
    assert_eq!(
        (
            &firing["state"],
            &firing["rule"],
            &firing["host"],
            &firing["when"]
        ),
        (
            &json!("firing"),
            &json!("down"),
            &json!("host_0"),
            &json!("offline for 2s")
        ),
        "{firing}"
    );
    let (at, since) = (
        firing["at"].as_u64().unwrap(),
        firing["since"].as_u64().unwrap(),
    );
    assert!(at >= since + 2, "{firing}");
    assert!(firing.get("value").is_none(), "{firing}");
    let page = op.ask("alerts", json!({})).await;
    assert_eq!(page["active"], json!([firing]), "{page}");
    assert_eq!(page["recent"], json!([firing]), "{page}");
    assert_eq!(page["more"], false);
    // ctl shows it, and follows what comes next.
    let (code, out, err) = outcome(ctl(&fleet.url(), "").arg("alerts")).await;
    assert_eq!(code, 0, "{err}");
    let firing_row = out
        .lines()
        .skip_while(|l| *l != "firing:")
        .nth(2)
        .unwrap_or_default();
    assert!(
        firing_row.contains("host_0")
            && firing_row.contains("down")
            && firing_row.contains("offline for 2s"),
        "{out}"
    );
    let mut following = ctl(&fleet.url(), "");
    following.args(["alerts", "--follow", "--json"]);
    let mut following = following.spawn().unwrap();
    let mut followed = BufReader::new(following.stdout.take().unwrap()).lines();
    let listed: Value =
        serde_json::from_str(&followed.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(listed["active"], json!([firing]), "{listed}");

    // The receiver comes up: it refuses once, answers too late once, then
    // acknowledges.
    let receiver = Receiver::start(
        ([127, 0, 0, 1], port).into(),
        vec![Answer::Status(503), Answer::Late(Duration::from_secs(12))],
    )
    .await;

    fleet.restart(0).await;
    let resolved = follower.next(PATIENCE).await;
    assert_eq!(
        (&resolved["state"], &resolved["rule"], &resolved["host"]),
        (&json!("resolved"), &json!("down"), &json!("host_0")),
        "{resolved}"
    );
    assert!(
        resolved["seq"].as_u64() > firing["seq"].as_u64(),
        "{resolved}"
    );
    assert_eq!(resolved["since"], firing["since"]);
    let line = tokio::time::timeout(PATIENCE, followed.next_line())
        .await
        .unwrap()
        .unwrap();
    let followed_event: Value = serde_json::from_str(&line.unwrap()).unwrap();
    assert_eq!(followed_event, resolved, "ctl alerts --follow");
    following.kill().await.unwrap();
    let page = until_page(&mut op, "resolved", |p| p["active"] == json!([])).await;
    assert_eq!(page["recent"], json!([resolved, firing]), "{page}");
    // Paged: one at a time, newest first.
    let first = op.ask("alerts", json!({"limit": 1})).await;
    assert_eq!(
        (first["recent"].clone(), first["more"].clone()),
        (json!([resolved]), json!(true))
    );
    let next = op
        .ask("alerts", json!({"limit": 1, "before": resolved["seq"]}))
        .await;
    assert_eq!(
        (next["recent"].clone(), next["more"].clone()),
        (json!([firing]), json!(false))
    );

    // Both reach the webhook, in order, through the refusal and the
    // timeout (1 s, 2 s, 4 s... apart).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while receiver.acknowledged().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            receiver.received.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        receiver.acknowledged(),
        vec![firing.clone(), resolved.clone()]
    );
    let received = receiver.received.lock().unwrap().clone();
    assert!(
        received.len() >= 4,
        "a refusal, a timeout, two 2xx: {received:?}"
    );
    // Nothing after its 2xx, and in seq order throughout.
    let mut acked: BTreeMap<u64, bool> = BTreeMap::new();
    let mut highest = 0;
    for r in &received {
        let seq = r.event["seq"].as_u64().unwrap();
        assert!(
            !acked.get(&seq).copied().unwrap_or(false),
            "{seq} again after a 2xx"
        );
        assert!(seq >= highest, "{seq} after {highest}");
        highest = seq;
        acked.insert(seq, r.acknowledged);
    }
    // Nothing more comes, and nothing is left to send.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.received.lock().unwrap().len(), received.len());
}

/// The rules' requests: viewers read, admins edit the API's rules, the
/// configuration's are not editable, a bad rule says why; the name and the
/// service `alerts` are the gateway's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_edit_the_api_rules_and_viewers_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(
        &dir,
        "[[alert]]\nname = \"cfg-down\"\nwhen = \"offline for 2m\"\n",
    );
    let fleet = Fleet::start_with(0, &["tokens"], &["--config", &file]).await;
    let mut admin = Operator::connect_as(&fleet.url(), "ada", &fleet.admin).await;
    let mut viewer = Operator::connect_as(&fleet.url(), "vic", &fleet.viewer).await;

    let hot = json!({"name": "hot-web", "when": "cpu > 90 for 5m", "target": "role=web"});
    let set = admin.ask("alert_rule_set", hot.clone()).await;
    assert_eq!(
        set["rule"],
        json!({"name": "hot-web", "when": "cpu > 90 for 5m", "target": "role=web", "source": "api"})
    );
    // Replaced, written as people write it.
    let set = admin
        .ask(
            "alert_rule_set",
            json!({"name": "hot-web", "when": "cpu >= 95  for 300s"}),
        )
        .await;
    assert_eq!(set["rule"]["when"], "cpu >= 95 for 5m", "{set}");
    let listed = viewer.ask("alert_rules", json!({})).await;
    assert_eq!(
        listed["rules"],
        json!([
            {"name": "cfg-down", "when": "offline for 2m", "source": "config"},
            {"name": "hot-web", "when": "cpu >= 95 for 5m", "source": "api"},
        ])
    );
    let page = viewer.ask("alerts", json!({})).await;
    assert_eq!(
        page,
        json!({"result": "success", "active": [], "recent": [], "more": false})
    );
    // Over HTTP too, for a viewer's token.
    let http = reqwest::Client::new();
    let got = http
        .get(fleet.http_url("/alerts?limit=5"))
        .bearer_auth(&fleet.viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    let body: Value = got.json().await.unwrap();
    assert_eq!(body, json!({"active": [], "recent": [], "more": false}));
    let anonymous = http.get(fleet.http_url("/alerts")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    for (req, msg) in [
        ("alert_rule_set", hot.clone()),
        ("alert_rule_delete", json!({"name": "hot-web"})),
    ] {
        let refused = viewer.ask_err(req, msg).await;
        assert_eq!(refused["reason"], "forbidden", "{refused}");
        assert!(
            refused["desc"].as_str().unwrap().contains("admin"),
            "{refused}"
        );
    }
    for (req, msg) in [
        (
            "alert_rule_set",
            json!({"name": "cfg-down", "when": "offline"}),
        ),
        ("alert_rule_delete", json!({"name": "cfg-down"})),
    ] {
        let refused = admin.ask_err(req, msg).await;
        assert_eq!(refused["reason"], "forbidden", "{refused}");
        assert!(
            refused["desc"].as_str().unwrap().contains("config"),
            "{refused}"
        );
    }
    for (msg, says) in [
        (json!({"name": "x", "when": "cpu ~ 3"}), "no comparison"),
        (json!({"name": "x", "when": "gpu > 3"}), "no summary field"),
        (json!({"name": "Bad Name", "when": "offline"}), "rule name"),
        (
            json!({"name": "x", "when": "offline", "target": "role in (web"}),
            "rule x",
        ),
    ] {
        let bad = admin.ask_err("alert_rule_set", msg.clone()).await;
        assert_eq!(bad["reason"], "bad_argument", "{msg}: {bad}");
        assert!(bad["desc"].as_str().unwrap().contains(says), "{msg}: {bad}");
    }

    let deleted = admin
        .ask("alert_rule_delete", json!({"name": "hot-web"}))
        .await;
    assert_eq!(deleted["name"], "hot-web");
    let gone = admin
        .ask_err("alert_rule_delete", json!({"name": "hot-web"}))
        .await;
    assert_eq!(gone["reason"], "not_found", "{gone}");
    let listed = viewer.ask("alert_rules", json!({})).await;
    assert_eq!(listed["rules"].as_array().unwrap().len(), 1, "{listed}");

    // The same with ctl.
    let url = fleet.url();
    let (code, out, err) = outcome(ctl(&url, &fleet.admin).args([
        "alerts",
        "set",
        "disk-full",
        "disk >= 95",
        "--target",
        "role=db",
    ]))
    .await;
    assert_eq!(
        (code, out.trim()),
        (0, "rule disk-full: disk >= 95 on role=db"),
        "{err}"
    );
    let (code, out, err) = outcome(ctl(&url, &fleet.viewer).args(["alerts", "rules"])).await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "WHEN", "TARGET", "SOURCE"], "{out}");
    assert_eq!(
        rows[1],
        ["cfg-down", "offline", "for", "2m", "*", "config"],
        "{out}"
    );
    assert_eq!(
        rows[2],
        ["disk-full", "disk", ">=", "95", "role=db", "api"],
        "{out}"
    );
    let (code, _, err) =
        outcome(ctl(&url, &fleet.viewer).args(["alerts", "delete", "disk-full"])).await;
    assert_ne!(code, 0);
    assert!(err.contains("admin"), "{err}");
    let (code, _, err) =
        outcome(ctl(&url, &fleet.admin).args(["alerts", "set", "x", "cpu ~ 3"])).await;
    assert_eq!(code, 2, "a usage error: {err}");
    assert!(err.contains("no comparison"), "{err}");
    let (code, out, err) =
        outcome(ctl(&url, &fleet.admin).args(["alerts", "delete", "disk-full"])).await;
    assert_eq!(
        (code, out.trim()),
        (0, "rule disk-full deleted: its firing alerts resolve"),
        "{err}"
    );

    // Nobody takes the name or the service.
    let mut client = common::Client::connect(&fleet.url()).await;
    client
        .send(
            json!({"type": "IDENTIFY", "name": "alerts", "version": "0.2.0", "token": fleet.admin}),
        )
        .await;
    let (_, reason) = client.expect_close().await;
    assert!(reason.contains("reserved"), "{reason}");
    let mut client = common::Client::connect(&fleet.url()).await;
    client
        .identify_with(
            json!({"type": "IDENTIFY", "name": "ada", "version": "0.2.0", "token": fleet.admin}),
        )
        .await;
    let created = client
        .answer(json!({"type": "SERVICE_CREATE", "service": "alerts"}), 0)
        .await;
    assert_eq!(created["successful"], false, "{created}");
}

/// A bad `[[alert]]` table stops the gateway at start, saying why.
#[tokio::test]
async fn a_bad_rule_in_the_config_file_is_a_start_up_error() {
    let dir = tempfile::tempdir().unwrap();
    for (rules, says) in [
        ("[[alert]]\nname = \"x\"\nwhen = \"cpu >> 3\"\n", "no comparison"),
        (
            "[[alert]]\nname = \"x\"\nwhen = \"offline\"\n[[alert]]\nname = \"x\"\nwhen = \"disk > 95\"\n",
            "two rules are named \"x\"",
        ),
        ("[[alert]]\nname = \"x\"\nwhen = \"offline\"\ntarget = \"a=(\"\n", "rule x"),
    ] {
        let file = config(&dir, rules);
        let out = common::process::command(&[
            "serve",
            "--config",
            &file,
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
        ])
        .output()
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{rules}: {stderr}");
        assert!(stderr.contains(says), "{rules}: {stderr}");
    }
}
