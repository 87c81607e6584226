//! The `concierge` command's help and completion, read as a person reads
//! them: a short overview at the top (the gateway's settings under `serve
//! --help`, where a bare `concierge` still takes them), examples and exit
//! statuses in each command's help, and completion scripts from clap that a
//! shell accepts and that complete.

mod common;

use std::process::Stdio;

use common::process::{command, outcome, Process};

/// `concierge ARGS`, which must succeed: what it printed.
async fn stdout(args: &[&str]) -> String {
    let (code, out, err) = outcome(&mut command(args)).await;
    assert_eq!(code, 0, "concierge {args:?}: {err}");
    out
}

#[tokio::test]
async fn the_top_level_help_is_an_overview_and_each_command_has_its_own() {
    let top = stdout(&["--help"]).await;
    assert!(top.lines().count() < 50, "{top}");
    assert!(
        top.contains("Examples:") && top.contains("completion") && top.contains("serve --help"),
        "{top}"
    );
    assert!(
        !top.contains("--bind") && !top.contains("--redis-url"),
        "{top}"
    );

    let serve = stdout(&["serve", "--help"]).await;
    assert!(
        serve.contains("--bind")
            && serve.contains("Examples:")
            && serve.contains("Exit status of the gateway"),
        "{serve}"
    );

    let ps = stdout(&["ctl", "ps", "--help"]).await;
    assert!(
        ps.contains("The host's name") && ps.contains("concierge ctl ps host1"),
        "{ps}"
    );
    assert!(
        ps.contains("Exit status:") && ps.contains("4  the gateway refused the token"),
        "{ps}"
    );
    // The short help keeps the examples, and leaves the statuses to --help.
    let short = stdout(&["ctl", "ps", "-h"]).await;
    assert!(
        short.contains("Examples:") && !short.contains("Exit status:"),
        "{short}"
    );
    let add = stdout(&["user", "add", "--help"]).await;
    assert!(add.contains("viewer (read), operator"), "{add}");
}

/// The gateway's settings are hidden from the overview, not taken away:
/// `concierge --bind ADDR` runs the gateway there.
#[tokio::test]
async fn a_bare_concierge_still_takes_the_gateways_flags() {
    let data = tempfile::tempdir().expect("data dir");
    let mut gateway = Process::spawn(command(&[
        "--bind",
        "127.0.0.1:0",
        "--data-dir",
        data.path().to_str().expect("utf-8"),
    ]));
    let addr = gateway.listening().await;
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
}

#[tokio::test]
async fn completion_scripts_come_from_clap_and_complete() {
    let bash = stdout(&["completion", "bash"]).await;
    let dir = tempfile::tempdir().expect("dir");
    let script = dir.path().join("concierge.bash");
    std::fs::write(&script, &bash).expect("script written");
    let script = script.to_str().expect("utf-8");

    let (code, _, err) = outcome(
        tokio::process::Command::new("bash")
            .args(["-n", script])
            .stdin(Stdio::null()),
    )
    .await;
    assert_eq!(code, 0, "bash -n: {err}");

    // What bash offers after `concierge ct<TAB>` and `concierge ctl e<TAB>`.
    let complete = format!(
        "source {script}
         COMP_WORDS=(concierge ct); COMP_CWORD=1; _concierge concierge ct concierge
         echo \"${{COMPREPLY[*]}}\"
         COMP_WORDS=(concierge ctl e); COMP_CWORD=2; _concierge concierge e ctl
         echo \"${{COMPREPLY[*]}}\""
    );
    let (code, out, err) = outcome(
        tokio::process::Command::new("bash")
            .args(["-c", &complete])
            .stdin(Stdio::null()),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["ctl", "exec"], "{err}");

    let zsh = stdout(&["completion", "zsh"]).await;
    assert!(zsh.starts_with("#compdef concierge"), "{zsh}");
    let fish = stdout(&["completion", "fish"]).await;
    assert!(fish.contains("complete -c concierge"), "{fish}");

    let (code, _, err) = outcome(&mut command(&["completion", "tcsh"])).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bash") && err.contains("zsh") && err.contains("fish"),
        "{err}"
    );
}
