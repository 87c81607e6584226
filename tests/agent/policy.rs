//! The agent's policy: which processes it may signal (its own, what
//! `signal_allow` rules add, never itself, its parent or init) and what it
//! may start (`exec_allow` rules, which no path, wildcard, environment or
//! folder trick walks around).

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::{assert_refused, spawn_agent, Fleet};

#[tokio::test]
async fn processes_the_agent_did_not_start_are_not_signalled() {
    let fleet = Fleet::start().await;
    let mut stranger = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep");
    let pid = stranger.id().to_string();
    let (code, reply) = fleet
        .ctl_json(&fleet.alice, &["signal", "host1", &pid, "SIGTERM"])
        .await;
    assert_refused(code, &reply, "forbidden");
    assert!(
        stranger.try_wait().expect("wait").is_none(),
        "still running"
    );
    let (_, info) = fleet.ctl_json(&fleet.alice, &["proc", "host1", &pid]).await;
    assert_eq!(
        (info["name"].as_str(), info["safe_kill"].as_bool()),
        (Some("sleep"), Some(false)),
        "{info}"
    );

    // The agent itself and its parent (this test) are never signalled.
    let agent_pid = fleet.agent.child.id().expect("agent runs").to_string();
    let (_, reply) = fleet
        .ctl_json(&fleet.alice, &["signal", "host1", &agent_pid, "SIGKILL"])
        .await;
    assert_eq!(reply["reason"], "forbidden", "{reply}");

    // A pid nothing holds.
    stranger.kill().expect("kill");
    stranger.wait().expect("reaped");
    let (code, reply) = fleet
        .ctl_json(&fleet.alice, &["signal", "host1", &pid, "SIGTERM"])
        .await;
    assert_refused(code, &reply, "not_found");
    let (code, reply) = fleet.ctl_json(&fleet.alice, &["proc", "host1", &pid]).await;
    assert_refused(code, &reply, "not_found");
}

/// Signals a `/usr/bin/sleep` the test started (no child of the agent's)
/// with SIGTERM through `ctl`, and checks the agent did.
async fn signals_a_strangers_sleep(fleet: &Fleet) {
    let mut stranger = std::process::Command::new("/usr/bin/sleep")
        .arg("60")
        .spawn()
        .expect("sleep");
    let pid = stranger.id().to_string();
    let (code, reply) = fleet
        .ctl_json(&fleet.alice, &["signal", "host1", &pid, "SIGTERM"])
        .await;
    assert_eq!(code, 0, "{reply}");
    let status = stranger.wait().expect("reaped");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM));
}

/// The name of the user running the tests (and so the agent).
fn user_name() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id runs");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn signal_allow_rules_widen_what_may_be_signalled() {
    let fleet = Fleet::with_config("[[signal_allow]]\nexecutable = \"/usr/bin/sleep\"").await;
    signals_a_strangers_sleep(&fleet).await;
}

/// A `signal_allow` rule with a user and an executable covers the processes
/// that match both, not those of the user running something else.
#[tokio::test]
async fn a_signal_allow_rule_needs_both_its_user_and_its_executable() {
    let fleet = Fleet::with_config(&format!(
        "[[signal_allow]]\nuser = \"{}\"\nexecutable = \"/usr/bin/sleep\"",
        user_name()
    ))
    .await;
    let mut other = std::process::Command::new("/usr/bin/tail")
        .args(["-f", "/dev/null"])
        .spawn()
        .expect("tail");
    let (code, reply) = fleet
        .ctl_json(
            &fleet.alice,
            &["signal", "host1", &other.id().to_string(), "SIGTERM"],
        )
        .await;
    assert_refused(code, &reply, "forbidden");
    assert!(other.try_wait().expect("wait").is_none(), "still running");
    other.kill().expect("kill");
    other.wait().expect("reaped");
    signals_a_strangers_sleep(&fleet).await;
}

/// The agent never signals itself, its parent or init, even where a
/// `signal_allow` rule covers them: here every process of the test's own
/// user, which a stranger's `sleep` shows the rule does cover.
#[tokio::test]
async fn no_rule_lets_the_agent_signal_itself_its_parent_or_init() {
    let fleet = Fleet::with_config(&format!("[[signal_allow]]\nuser = \"{}\"", user_name())).await;
    let agent_pid = fleet.agent.child.id().expect("agent runs");
    let parent = std::process::id();
    for pid in [agent_pid, parent, 1] {
        let (code, reply) = fleet
            .ctl_json(
                &fleet.alice,
                &["signal", "host1", &pid.to_string(), "SIGCONT"],
            )
            .await;
        assert_refused(code, &reply, "forbidden");
        assert!(
            reply["desc"]
                .as_str()
                .is_some_and(|d| d.contains("does not signal itself, its parent or init")),
            "{pid}: {reply}"
        );
    }
    signals_a_strangers_sleep(&fleet).await;
}

#[tokio::test]
async fn exec_allow_rules_limit_what_may_be_started() {
    let fleet = Fleet::with_config("[[exec_allow]]\nexecutable = \"echo\"\nargs = [\"**\"]").await;
    let (code, out, _) = fleet
        .ctl(
            &fleet.alice,
            &["exec", "host1", "--follow", "--", "echo", "allowed"],
        )
        .await;
    assert_eq!((code, out.as_str()), (0, "allowed\n"));
    let (code, reply) = fleet
        .ctl_json(
            &fleet.alice,
            &["exec", "host1", "--", "sh", "-c", "echo no"],
        )
        .await;
    assert_refused(code, &reply, "forbidden");
    let (code, reply) = fleet
        .request(
            &fleet.alice,
            "exec_command",
            json!({"command": "echo 'two words'"}),
        )
        .await;
    assert_eq!(
        (code, reply["stdout"].as_str(), reply["exit_code"].as_i64()),
        (0, Some("two words\n"), Some(0)),
        "{reply}"
    );
}

/// Writes an executable shell script.
fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("script written");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[tokio::test]
async fn exec_allow_rules_cannot_be_walked_around() {
    // A folder of allowed tools, with one allowed tool and a folder under it.
    let tools = tempfile::tempdir().expect("tools");
    let tools_dir = tools.path().to_str().expect("utf-8").to_owned();
    script(&tools.path().join("hello"), "echo hello");
    std::fs::create_dir(tools.path().join("sub")).expect("sub");
    script(&tools.path().join("sub").join("deeper"), "id > out.txt");
    let fleet = Fleet::with_config(&format!(
        "exec_env_allow = [\"LANG\", \"PATH\"]\n\
         [[exec_allow]]\nexecutable = \"{tools_dir}/*\"\n\
         [[exec_allow]]\nexecutable = \"ls\"\nargs = [\"-l\", \"**\"]\n"
    ))
    .await;
    let work = fleet.work.path();
    // An attacker's `ls`, and a library, in a folder they control.
    let evil = work.join("evil");
    std::fs::create_dir(&evil).expect("evil");
    script(&evil.join("ls"), "id > out.txt");
    let depth = tools.path().components().count() - 1;
    let up = "../".repeat(depth);

    // What the rules allow still runs.
    let (code, reply) = fleet
        .request(
            &fleet.alice,
            "exec_command",
            json!({"command": format!("{tools_dir}/hello")}),
        )
        .await;
    assert_eq!(
        (code, reply["stdout"].as_str()),
        (0, Some("hello\n")),
        "{reply}"
    );
    let (code, reply) = fleet
        .request(
            &fleet.alice,
            "exec_command",
            json!({"command": "ls -l -d evil"}),
        )
        .await;
    assert_eq!((code, reply["exit_code"].as_i64()), (0, Some(0)), "{reply}");

    for (what, req, msg) in [
        (
            "`..` out of the tools folder",
            "exec_command",
            json!({"command": format!("{tools_dir}/{up}bin/sh -c 'id > out.txt'")}),
        ),
        (
            "`*` across a `/`",
            "exec_command",
            json!({"command": format!("{tools_dir}/sub/deeper")}),
        ),
        (
            "a shell by its bare name",
            "exec_command",
            json!({"command": "sh -c 'echo hi; id > out.txt'"}),
        ),
        (
            "a relative path climbing to a shell",
            "execute",
            json!({"cmd": [format!("../../{up}bin/sh"), "-c", "id > out.txt"]}),
        ),
        (
            "LD_PRELOAD into an allowed program",
            "exec_command",
            json!({"command": "ls -l", "env": {"LD_PRELOAD": evil.join("x.so")}}),
        ),
        (
            "a folder outside work_dir",
            "exec_command",
            json!({"command": "ls -l", "cwd": "/"}),
        ),
    ] {
        let (code, reply) = fleet.request(&fleet.alice, req, msg.clone()).await;
        assert_refused(code, &reply, "forbidden");
        assert!(
            reply["desc"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: {reply}"
        );
    }
    // The request's PATH may be set here, but the program is found on the
    // agent's: the real ls runs, not the attacker's. (Listings name `evil`
    // alone: a listing of the whole work folder would race the agent's
    // atomic writes there, whose temporary files vanish under `ls -l`.)
    let (code, reply) = fleet
        .request(
            &fleet.alice,
            "exec_command",
            json!({"command": "ls -l -d evil", "env": {"PATH": format!("{}:/usr/bin:/bin", evil.display())}}),
        )
        .await;
    assert_eq!((code, reply["exit_code"].as_i64()), (0, Some(0)), "{reply}");
    assert!(
        reply["stdout"].as_str().is_some_and(|o| o.contains("evil")),
        "{reply}"
    );
    assert!(
        !work.join("out.txt").exists() && !tools.path().join("out.txt").exists(),
        "an escape ran: {}",
        std::fs::read_to_string(work.join("out.txt")).unwrap_or_default()
    );
}

#[tokio::test]
async fn a_rule_handing_wildcards_to_a_shell_is_refused_at_start() {
    let work = tempfile::tempdir().expect("work");
    let mut agent = spawn_agent(
        "ws://127.0.0.1:9/ws",
        "",
        work.path(),
        "[[exec_allow]]\nexecutable = \"sh\"\nargs = [\"-c\", \"echo *\"]",
    )
    .await;
    let status = agent.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(2), "{}", agent.log());
    let log = agent.log();
    assert!(
        log.contains("\"sh\"") && log.contains("runs_code = true"),
        "{log}"
    );
}
