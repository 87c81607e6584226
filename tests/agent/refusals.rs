//! An agent the gateway refuses for good (its token, its name, a name
//! another agent holds) stops with the exit status that says which and a
//! message that says what to do, or, with `retry_refused`, says so once
//! and keeps waiting; a second agent with a connected agent's name is
//! refused and the first stays, unless it takes the name over.

use std::time::Duration;

use crate::common::process::Process;
use crate::common::TestServer;
use crate::{agent_command, issue, Fleet};

/// Starts an agent with `token` (none when empty) and `flags`, and waits
/// for its exit: its status and its stderr.
async fn refused(server: &TestServer, token: &str, flags: &[&str]) -> (Option<i32>, String) {
    let work = tempfile::tempdir().expect("work dir");
    let mut cmd = agent_command(&server.ws_url(), token, work.path(), "");
    cmd.args(flags);
    let mut agent = Process::spawn(cmd);
    let status = agent.exit(Duration::from_secs(10)).await;
    (status.code(), agent.log())
}

#[tokio::test]
async fn an_agent_refused_for_good_exits_with_a_status_and_says_what_to_do() {
    let server = TestServer::with(|s| s.require_auth = true);
    let host = issue(server.data.path(), "host1", "agent").await;

    let (status, log) = refused(&server, "", &[]).await;
    assert_eq!(status, Some(4), "{log}");
    assert!(
        log.contains("requires a token and this agent has none")
            && log.contains("concierge token issue --name host1 --role agent"),
        "{log}"
    );
    assert!(!log.contains("refused this agent's token"), "{log}");

    let (status, log) = refused(&server, "not.a.token", &[]).await;
    assert_eq!(status, Some(4), "{log}");
    assert!(
        log.contains("does not accept this agent's token") && log.contains("--token-file"),
        "{log}"
    );

    let (status, log) = refused(&server, &host, &["--name", "host2"]).await;
    assert_eq!(status, Some(5), "{log}");
    assert!(
        log.contains("the token does not allow the name host2"),
        "{log}"
    );
    // Once, not once per attempt.
    assert_eq!(log.matches("does not allow").count(), 1, "{log}");
}

#[tokio::test]
async fn with_retry_refused_a_refusal_is_said_once_and_the_agent_waits() {
    let server = TestServer::with(|s| s.require_auth = true);
    let work = tempfile::tempdir().expect("work dir");
    let mut agent = Process::spawn(agent_command(
        &server.ws_url(),
        "not.a.token",
        work.path(),
        "retry_refused = true",
    ));
    agent
        .wait_for_line(
            &["does not accept this agent's token", "retry_refused"],
            Duration::from_secs(10),
        )
        .await;
    // Past several of its reconnect waits (100 to 400 ms): still there,
    // and silent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        agent.log().matches("does not accept").count(),
        1,
        "{}",
        agent.log()
    );
    agent.signal("TERM");
    let status = agent.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", agent.log());
}

#[tokio::test]
async fn a_second_agent_with_a_connected_name_is_refused_and_the_first_stays() {
    let mut fleet = Fleet::start().await;
    let host = issue(fleet.server.data.path(), "host1", "agent").await;
    let connected = |fleet: &Fleet| fleet.agent.log().matches("connected name=host1").count();
    assert_eq!(connected(&fleet), 1, "{}", fleet.agent.log());

    let (status, log) = refused(&fleet.server, &host, &[]).await;
    assert_eq!(status, Some(6), "{log}");
    assert!(
        log.contains("another client is connected as host1") && log.contains("--take-over"),
        "{log}"
    );
    // No flapping: the first never lost its connection.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(connected(&fleet), 1, "{}", fleet.agent.log());
    assert!(
        !fleet.agent.log().contains("disconnected"),
        "{}",
        fleet.agent.log()
    );
    fleet.wait_for_agent().await;

    // --take-over replaces it; the one replaced stops rather than taking
    // the name back.
    let work = tempfile::tempdir().expect("work dir");
    let mut cmd = agent_command(&fleet.server.ws_url(), &host, work.path(), "");
    cmd.arg("--take-over");
    let mut replacing = Process::spawn(cmd);
    let status = fleet.agent.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(6), "{}", fleet.agent.log());
    assert!(
        fleet
            .agent
            .log()
            .contains("another agent took the name host1 over"),
        "{}",
        fleet.agent.log()
    );
    replacing
        .wait_for_line(&["connected name=host1"], Duration::from_secs(10))
        .await;
    fleet.wait_for_agent().await;
}
