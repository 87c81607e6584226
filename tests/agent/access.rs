//! Who may ask the agent what: viewers read, operators command, anonymous
//! clients do nothing unless the agent lets them read, every request
//! checked against the access PROTOCOL.md documents, and a host's services
//! kept for its agent.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::process::proc_state;
use crate::common::{eventually, PATIENCE};
use crate::common::{Client, TestServer};
use crate::{assert_refused, common, exit_of, issue, spawn_agent, start, Fleet};

#[tokio::test]
async fn viewers_read_operators_command_anonymous_clients_do_nothing() {
    let fleet = Fleet::start().await;
    let pid = start(&fleet, &["sleep", "60"]).await.to_string();
    let (code, reply) = fleet
        .ctl_json(&fleet.vic, &["signal", "host1", &pid, "SIGKILL"])
        .await;
    assert_refused(code, &reply, "forbidden");
    assert!(
        reply["desc"].as_str().expect("desc").contains("operator"),
        "{reply}"
    );
    let (code, _, err) = fleet
        .ctl(&fleet.vic, &["signal", "host1", &pid, "SIGKILL"])
        .await;
    assert_eq!(code, 1);
    assert!(err.contains("forbidden"), "{err}");
    assert!(
        proc_state(pid.parse().expect("pid")).is_some(),
        "still running"
    );
    let (code, _) = fleet.ctl_json(&fleet.vic, &["ps", "host1"]).await;
    assert_eq!(code, 0, "a viewer reads");
    let (code, reply) = fleet.ctl_json("", &["ps", "host1"]).await;
    assert_refused(code, &reply, "forbidden");
    let (code, reply) = fleet.ctl_json("", &["exec", "host1", "--", "true"]).await;
    assert_refused(code, &reply, "forbidden");
}

/// The requests PROTOCOL.md §13.3 lists, each with whether it is marked
/// **read** (else `command`): the documented access, which the agent's
/// own table must not be trusted to give.
fn documented_requests() -> Vec<(String, bool)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md"))
        .expect("docs/PROTOCOL.md");
    let section = doc
        .split_once("### 13.3 Requests")
        .expect("PROTOCOL.md has section 13.3")
        .1;
    let table = section.split("\n### ").next().unwrap_or_default();
    let mut documented = Vec::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let read = match cells[2] {
            "read" => true,
            "command" => false,
            other => panic!("PROTOCOL.md §13.3: access {other:?} in {row}"),
        };
        for name in cells[1].split('/') {
            documented.push((name.trim().trim_matches('`').to_owned(), read));
        }
    }
    assert!(documented.len() > 10, "§13.3 parsed: {documented:?}");
    documented
}

/// The reply (`msg`) to every one of `rids` that `client` receives (MESSAGE
/// data `{"rid", "msg"}`; an event has no `msg`) within `patience` in all.
async fn replies_to(
    client: &mut Client,
    rids: &[u64],
    patience: Duration,
) -> std::collections::HashMap<u64, Value> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut replies = std::collections::HashMap::new();
    while replies.len() < rids.len() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(payload) =
            tokio::time::timeout(left, client.recv_within(left + common::PATIENCE)).await
        else {
            let missing: Vec<&u64> = rids.iter().filter(|r| !replies.contains_key(*r)).collect();
            panic!("no reply to rids {missing:?} within {patience:?}");
        };
        let data = &payload["data"];
        if payload["type"] == "MESSAGE" && !data["msg"].is_null() {
            if let Some(rid) = data["rid"].as_u64().filter(|r| rids.contains(r)) {
                replies.insert(rid, data["msg"].clone());
            }
        }
    }
    replies
}

/// Sends request `req` with `msg` as `rid` to host1.
async fn send_request(client: &mut Client, rid: u64, req: &str, msg: &Value) {
    client
        .send(
            json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "host1"},
            "data": {"req": req, "rid": rid, "msg": msg}}),
        )
        .await;
}

/// PROTOCOL §13.2 and §13.3, SECURITY.md §4: a viewer may make every request
/// marked read, and no other. Every request the agent serves (the
/// protocol's one list, `RequestName`, so a request added there is covered) is sent by a
/// viewer with the access the documentation gives it (a request the
/// documentation does not list fails here): each command is refused with
/// the documented reply, `forbidden`, "vic (roles: viewer) may not do this:
/// it needs the operator role", and does nothing (the processes it would
/// signal keep their state, nothing is started, no file is written); each
/// read is served. The operator's same commands get through and do what the
/// viewer's did not, so the checks above could see it.
#[tokio::test]
async fn a_viewer_may_make_every_read_request_and_no_command() {
    let documented = documented_requests();
    let served: Vec<&str> = concierge::protocol::agent::RequestName::NAMES.to_vec();
    let undocumented: Vec<&&str> = served
        .iter()
        .filter(|name| !documented.iter().any(|(d, _)| d == **name))
        .collect();
    let unserved: Vec<&String> = documented
        .iter()
        .map(|(d, _)| d)
        .filter(|d| !served.contains(&d.as_str()))
        .collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "served but not in PROTOCOL.md §13.3: {undocumented:?}; documented but not served: {unserved:?}"
    );
    let is_read = |req: &str| documented.iter().any(|(d, read)| d == req && *read);
    let commands: Vec<&str> = served.iter().copied().filter(|r| !is_read(r)).collect();
    assert!(
        commands.contains(&"kill_process") && served.iter().any(|r| is_read(r)),
        "both kinds are tested: {commands:?}"
    );
    // What each request is sent with: the process a signal would reach is
    // one of its own; a start would write a file.
    let fleet = Fleet::start().await;
    let work = fleet.work.path().to_owned();
    let mut targets = std::collections::HashMap::new();
    for req in [
        "proc_signal",
        "kill_process",
        "pause_process",
        "resume_process",
    ] {
        targets.insert(req, start(&fleet, &["sleep", "60"]).await);
    }
    // A resume would show on a stopped process only.
    let stopped = targets["resume_process"];
    let (code, reply) = fleet
        .request(&fleet.alice, "pause_process", json!({"pid": stopped}))
        .await;
    assert_eq!(code, 0, "{reply}");
    eventually(PATIENCE, "the pause", || proc_state(stopped) == Some('T')).await;
    let marker = |req: &str| work.join(format!("{req}.done"));
    let args = |req: &str| -> Value {
        let file = marker(req).display().to_string();
        let pid = targets
            .get(req)
            .copied()
            .unwrap_or(targets["pause_process"]);
        match req {
            "execute" => json!({"cmd": ["touch", file]}),
            "exec_command" => json!({"command": format!("touch {file}")}),
            "proc_signal" => json!({"pid": pid, "mode": "SIGKILL"}),
            "kill_process" => json!({"pid": pid, "method": "SIGKILL"}),
            "pause_process" | "resume_process" | "obtain_process_info" => json!({"pid": pid}),
            "proc_output" => json!({"proc_id": pid}),
            r if r.ends_with("_service") || r == "obtain_service_info" => {
                json!({"service_name": "concierge-i21-absent"})
            }
            _ => json!({}),
        }
    };
    // Running (or about to sleep) but the one paused: stopped.
    let untouched = |pid: u64| match proc_state(pid) {
        Some('T') => pid == stopped,
        Some('S' | 'R') => pid != stopped,
        _ => false,
    };
    for pid in targets.values() {
        assert!(untouched(*pid), "process {pid}: {:?}", proc_state(*pid));
    }

    let mut vic = fleet.client("vic_raw", &fleet.vic).await;
    for (rid, req) in served.iter().enumerate() {
        send_request(&mut vic, rid as u64, req, &args(req)).await;
    }
    let rids: Vec<u64> = (0..served.len() as u64).collect();
    let replies = replies_to(&mut vic, &rids, Duration::from_secs(10)).await;
    let refusal = json!({"result": "error", "reason": "forbidden",
        "desc": "vic (roles: viewer) may not do this: it needs the operator role"});
    let mut wrong = Vec::new();
    for (rid, req) in served.iter().enumerate() {
        let reply = &replies[&(rid as u64)];
        if is_read(req) {
            if reply["reason"] == "forbidden" {
                wrong.push(format!("read {req} refused to a viewer: {reply}"));
            }
        } else if *reply != refusal {
            wrong.push(format!("command {req} not refused to a viewer: {reply}"));
        }
    }
    // Nothing happened: every reply is in, so whatever a request did is done
    // (a signal is sent, a process registered, before the reply).
    for (req, pid) in &targets {
        if !untouched(*pid) {
            wrong.push(format!(
                "{req}'s process {pid} is {:?} now",
                proc_state(*pid)
            ));
        }
    }
    let (code, list) = fleet.request(&fleet.alice, "list_started", json!({})).await;
    assert_eq!(code, 0, "{list}");
    if list["total"].as_u64() != Some(targets.len() as u64) {
        wrong.push(format!("processes were started: {list}"));
    }
    for req in &commands {
        if marker(req).exists() {
            wrong.push(format!("{req} wrote {}", marker(req).display()));
        }
    }
    assert!(
        wrong.is_empty(),
        "a viewer is not held to the reads of PROTOCOL.md §13.3 (see protocol::agent::RequestName):\n{}",
        wrong.join("\n")
    );

    // The operator's same commands get through, one after another.
    let mut alice = fleet.client("alice_raw", &fleet.alice).await;
    let deadline = Duration::from_secs(20);
    let began = tokio::time::Instant::now();
    for (rid, req) in commands.iter().enumerate() {
        let rid = 100 + rid as u64;
        send_request(&mut alice, rid, req, &args(req)).await;
        let left = deadline.saturating_sub(began.elapsed());
        let reply = &replies_to(&mut alice, &[rid], left).await[&rid];
        assert_ne!(reply["reason"], "forbidden", "{req} refused to an operator");
    }
    for req in ["proc_signal", "kill_process"] {
        let exit = exit_of(&fleet, targets[req]).await;
        assert_eq!(exit["signal"], "SIGKILL", "{req}: {exit}");
    }
    let paused = targets["pause_process"];
    eventually(PATIENCE, "the operator's pause", || {
        proc_state(paused) == Some('T')
    })
    .await;
    eventually(PATIENCE, "the operator's resume", || {
        proc_state(stopped) == Some('S')
    })
    .await;
    assert!(
        marker("exec_command").exists(),
        "exec_command waits for its command"
    );
    eventually(PATIENCE, "execute's touch", || marker("execute").exists()).await;
    for pid in [paused, stopped] {
        fleet
            .request(
                &fleet.alice,
                "kill_process",
                json!({"pid": pid, "method": "SIGKILL"}),
            )
            .await;
    }
}

#[tokio::test]
async fn an_agent_can_let_anonymous_clients_read() {
    let fleet = Fleet::with_config("anonymous_role = \"viewer\"").await;
    let (code, _) = fleet.ctl_json("", &["ps", "host1"]).await;
    assert_eq!(code, 0);
    let (code, reply) = fleet.ctl_json("", &["exec", "host1", "--", "true"]).await;
    assert_refused(code, &reply, "forbidden");
}

#[tokio::test]
async fn a_viewer_cannot_take_a_hosts_services_before_its_agent_connects() {
    let server = TestServer::start();
    let host = issue(server.data.path(), "host1", "agent").await;
    let vic = issue(server.data.path(), "vic", "viewer").await;
    let mut viewer = server.connect().await;
    viewer
        .identify_with(
            json!({"type": "IDENTIFY", "name": "vic", "version": "0.2.0",
                              "tags": ["agent"], "token": vic}),
        )
        .await;
    let mut seq = 0;
    for service in ["telemetry_host1", "audit_host1"] {
        let create = json!({"type": "SERVICE_CREATE", "service": service});
        let reply = viewer.answer(create, seq).await;
        seq += 1;
        assert_eq!(reply["type"], "BAD", "{reply}");
    }

    // The agent connects and owns them: what a subscriber hears there
    // comes from host1 itself, as its verified origin says.
    let work = tempfile::tempdir().expect("work dir");
    let agent = spawn_agent(&server.ws_url(), &host, work.path(), "").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let subscribe = json!({"type": "SELF_SUBSCRIBE", "service": "telemetry_host1"});
        let reply = viewer.answer(subscribe, seq).await;
        seq += 1;
        if reply["type"] == "SELF_SUBSCRIBE_RESULT" && reply["successful"] == true {
            assert_eq!(reply["service"]["name"], "telemetry_host1");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never created its service: {reply}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event = viewer.skip_to("MESSAGE").await;
    let origin = &event["origin"];
    assert_eq!(origin["name"], "host1", "{event}");
    assert_eq!(origin["roles"], json!(["agent"]), "{event}");
    assert_eq!(origin["service"]["owner_uuid"], origin["uuid"], "{event}");
    assert_eq!(event["data"]["event"], "telemetry", "{event}");
}
