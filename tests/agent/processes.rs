//! What the agent does with the processes it starts: running them,
//! following and keeping their output, listing them with their state and
//! ports, signalling them (and their whole tree), and limits on how many run.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::process::proc_state;
use crate::common::{eventually, PATIENCE};
use crate::{assert_refused, common, exit_of, start, Fleet};

#[tokio::test]
async fn exec_follow_prints_the_output_and_exits_with_the_process_code() {
    let fleet = Fleet::start().await;
    let (code, out, err) = fleet
        .ctl(
            &fleet.alice,
            &[
                "exec",
                "host1",
                "--follow",
                "--",
                "sh",
                "-c",
                "echo hi; echo oops >&2; exit 3",
            ],
        )
        .await;
    assert_eq!((code, out.as_str()), (3, "hi\n"), "stderr: {err}");
    assert!(err.contains("oops"), "{err}");

    // As JSON: the reply, then the events, the exit last.
    let (code, out, _) = fleet
        .ctl(
            &fleet.alice,
            &[
                "--json",
                "exec",
                "host1",
                "--follow",
                "--",
                "sh",
                "-c",
                "printf 'a€b'; kill -9 $$",
            ],
        )
        .await;
    assert_eq!(code, 128 + 9);
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(events[0]["result"], "success", "{out}");
    let printed: String = events
        .iter()
        .filter(|e| e["event"] == "stdout")
        .filter_map(|e| e["data"].as_str())
        .collect();
    assert_eq!(printed, "a€b");
    let exit = events.last().expect("events");
    assert_eq!(
        (exit["event"].as_str(), exit["signal"].as_str()),
        (Some("exit"), Some("SIGKILL")),
        "{out}"
    );
    assert!(exit["duration_ms"].is_u64());
}

#[tokio::test]
async fn list_started_shows_running_and_exited_processes_and_execute_takes_a_command_line() {
    let fleet = Fleet::start().await;
    // A command line is split as a shell would split it; no shell runs it.
    let (code, reply) = fleet
        .request(
            &fleet.alice,
            "execute",
            json!({"command": "sh -c 'exit 4'"}),
        )
        .await;
    assert_eq!(code, 0, "{reply}");
    let exited = reply["proc_id"].as_u64().expect("proc_id");
    assert_eq!(exit_of(&fleet, exited).await["code"], 4);
    let (_, reply) = fleet
        .request(&fleet.alice, "execute", json!({"command": "sleep \"30\""}))
        .await;
    let running = reply["proc_id"].as_u64().expect("proc_id");
    for bad in [
        json!({"cmd": ["true"], "command": "true"}),
        json!({"command": "echo 'unterminated"}),
        json!({"command": 7}),
    ] {
        let (code, reply) = fleet.request(&fleet.alice, "execute", bad.clone()).await;
        assert_refused(code, &reply, "bad_argument");
    }

    // A viewer may read the list: newest first, exit codes kept.
    let (code, list) = fleet.request(&fleet.vic, "list_started", json!({})).await;
    assert_eq!(code, 0, "{list}");
    assert_eq!(
        (list["total"].as_u64(), &list["next_offset"]),
        (Some(2), &Value::Null)
    );
    let procs = list["processes"].as_array().expect("processes");
    assert_eq!(procs[0]["proc_id"].as_u64(), Some(running), "{list}");
    assert_eq!(procs[0]["cmd"], json!(["sleep", "30"]));
    assert_eq!(procs[0]["running"], true);
    assert_eq!(procs[0]["exit"], Value::Null);
    assert!(
        matches!(procs[0]["status"].as_str(), Some("sleeping" | "running")),
        "{list}"
    );
    assert_eq!(procs[1]["proc_id"].as_u64(), Some(exited), "{list}");
    assert_eq!(procs[1]["cmd"], json!(["sh", "-c", "exit 4"]));
    assert_eq!(procs[1]["running"], false);
    assert_eq!(procs[1]["status"], "exited");
    assert_eq!(procs[1]["exit"]["code"], 4);
    assert!(procs[1]["started"].as_u64() > Some(1_700_000_000));

    // Paused, the running one shows stopped, as /proc says.
    let (code, reply) = fleet
        .request(&fleet.alice, "pause_process", json!({"pid": running}))
        .await;
    assert_eq!(code, 0, "{reply}");
    eventually(PATIENCE, "the pause", || proc_state(running) == Some('T')).await;
    let (_, list) = fleet.request(&fleet.vic, "list_started", json!({})).await;
    assert_eq!(list["processes"][0]["status"], "stopped", "{list}");
    fleet
        .request(
            &fleet.alice,
            "kill_process",
            json!({"pid": running, "method": "SIGKILL"}),
        )
        .await;
}

#[tokio::test]
async fn output_is_kept_bounded_and_readable_after_exit() {
    let fleet = Fleet::with_config("output_limit = 100000").await;
    let pid = start(
        &fleet,
        &[
            "sh",
            "-c",
            "head -c 300000 /dev/zero | tr '\\0' x; echo; echo done",
        ],
    )
    .await;
    let exit = exit_of(&fleet, pid).await;
    assert_eq!(exit["code"], 0, "{exit}");
    let (code, page) = fleet
        .request(&fleet.alice, "proc_output", json!({"proc_id": pid}))
        .await;
    assert_eq!(code, 0, "{page}");
    assert!(
        page["dropped"].as_u64().expect("dropped") >= 200_000,
        "{page}"
    );
    // The newest bytes are kept: the last page ends with "done".
    let (code, out, _) = fleet
        .ctl(&fleet.alice, &["output", "host1", &pid.to_string()])
        .await;
    assert_eq!(code, 0);
    assert!(
        out.ends_with("x\ndone\n"),
        "{}",
        &out[out.len().saturating_sub(50)..]
    );
    assert!(out.len() <= 100_000 && out.len() > 90_000, "{}", out.len());
}

#[tokio::test]
async fn view_running_lists_started_processes_with_their_listening_ports() {
    let fleet = Fleet::start().await;
    let script = "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen()\nprint(s.getsockname()[1],flush=True)\ntime.sleep(60)";
    let pid = start(
        &fleet,
        &["sh", "-c", &format!("exec python3 -c \"{script}\"")],
    )
    .await;
    let mut port = None;
    for _ in 0..100 {
        let (_, out, _) = fleet
            .ctl(&fleet.alice, &["output", "host1", &pid.to_string()])
            .await;
        if let Ok(p) = out.trim().parse::<u64>() {
            port = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let port = port.expect("the child printed its port");
    let (code, running) = fleet.ctl_json(&fleet.vic, &["ps", "host1"]).await;
    assert_eq!(code, 0, "{running}");
    let entry = running
        .as_array()
        .expect("a list")
        .iter()
        .find(|p| p["pid"] == pid)
        .cloned()
        .expect("listed");
    assert_eq!(entry["port_util"], json!([port]), "{entry}");
    assert_eq!(entry["title"], "python3");
    assert!(
        entry["reqc"].as_str().expect("reqc").starts_with("sh -c"),
        "{entry}"
    );
    assert!(entry["mem_util"].as_f64().expect("MB") > 1.0, "{entry}");
    let (code, table, _) = fleet.ctl(&fleet.vic, &["ps", "host1"]).await;
    assert_eq!(code, 0);
    assert!(
        table.contains(&port.to_string()) && table.contains("PORTS"),
        "{table}"
    );
}

#[tokio::test]
async fn every_signal_reaches_the_process_and_pause_really_stops_it() {
    let fleet = Fleet::start().await;
    let pid = start(&fleet, &["sleep", "60"]).await;
    let (code, _, err) = fleet
        .ctl(&fleet.alice, &["pause", "host1", &pid.to_string()])
        .await;
    assert_eq!(code, 0, "{err}");
    eventually(PATIENCE, "state T", || proc_state(pid) == Some('T')).await;
    let (code, info) = fleet
        .ctl_json(&fleet.alice, &["proc", "host1", &pid.to_string()])
        .await;
    assert_eq!(
        (code, info["status"].as_str()),
        (0, Some("stopped")),
        "{info}"
    );
    assert_eq!(info["safe_kill"], true);
    let (code, _, _) = fleet
        .ctl(&fleet.alice, &["resume", "host1", &pid.to_string()])
        .await;
    assert_eq!(code, 0);
    eventually(PATIENCE, "state S", || proc_state(pid) == Some('S')).await;

    for signal in [
        "SIGTERM", "SIGKILL", "SIGHUP", "SIGINT", "SIGUSR1", "SIGUSR2",
    ] {
        let pid = start(&fleet, &["sleep", "60"]).await;
        let (code, reply) = fleet
            .ctl_json(&fleet.alice, &["signal", "host1", &pid.to_string(), signal])
            .await;
        assert_eq!(code, 0, "{reply}");
        let exit = exit_of(&fleet, pid).await;
        assert_eq!(exit["signal"], signal, "{exit}");
        assert!(exit["code"].is_null());
    }
    // seed 000's kill_process with its method.
    let pid = start(&fleet, &["sleep", "60"]).await;
    let (code, reply) = fleet
        .request(
            &fleet.alice,
            "kill_process",
            json!({"pid": pid, "method": "SIGKILL"}),
        )
        .await;
    assert_eq!(code, 0, "{reply}");
    assert_eq!(exit_of(&fleet, pid).await["signal"], "SIGKILL");
    let (code, reply) = fleet
        .request(
            &fleet.alice,
            "kill_process",
            json!({"pid": pid, "method": "SIGHUP"}),
        )
        .await;
    assert_refused(code, &reply, "bad_argument");
}

#[tokio::test]
async fn process_info_of_a_live_pid_matches_proc() {
    let fleet = Fleet::start().await;
    let me = std::process::id();
    let (code, info) = fleet
        .ctl_json(&fleet.vic, &["proc", "host1", &me.to_string()])
        .await;
    assert_eq!(code, 0, "{info}");
    assert_eq!(info["pid"], me);
    let actual = common::process::rss(me);
    let rss = info["memory"]["rss"].as_u64().expect("rss");
    assert!(
        rss > 0 && rss.abs_diff(actual) < rss / 2,
        "{rss} vs {actual} bytes"
    );
    assert!(
        info["cpu_time"]["user"].is_number() && info["started"].as_u64() > Some(0),
        "{info}"
    );
    let (code, all) = fleet.ctl_json(&fleet.vic, &["ps", "host1", "--all"]).await;
    assert_eq!(code, 0);
    let all = all.as_array().expect("list");
    let seen = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count();
    assert!(all.iter().any(|p| p["pid"] == me), "this test is listed");
    assert!(
        all.len() * 2 > seen,
        "{} of {seen} processes listed (paged)",
        all.len()
    );
}

#[tokio::test]
async fn a_process_working_in_another_thread_is_running_and_its_user_is_named() {
    let fleet = Fleet::start().await;
    // This test's threads wait for ctl, but one spins: the process runs
    // (its main thread alone, as `ps` reads it, sleeps).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinning = stop.clone();
    let spinner = std::thread::spawn(move || {
        while !spinning.load(std::sync::atomic::Ordering::Relaxed) {
            std::hint::spin_loop();
        }
    });
    let me = std::process::id();
    let main_state = std::fs::read_to_string(format!("/proc/{me}/stat")).expect("stat");
    let (code, info) = fleet
        .ctl_json(&fleet.vic, &["proc", "host1", &me.to_string()])
        .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    spinner.join().expect("the spinner");
    assert_eq!(code, 0, "{info}");
    assert_eq!(
        info["status"], "running",
        "{info} (main thread: {main_state})"
    );
    let name = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id -un");
    let name = String::from_utf8_lossy(&name.stdout).trim().to_owned();
    assert_eq!(info["user_name"], name.as_str(), "{info}");
    assert_eq!(
        info["user"],
        std::fs::metadata(format!("/proc/{me}"))
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .expect("owner"),
        "{info}"
    );
    // A sleeping process sleeps.
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("sleep");
    let pid = sleeper.id().to_string();
    let mut status = Value::Null;
    for _ in 0..50 {
        let (_, info) = fleet.ctl_json(&fleet.vic, &["proc", "host1", &pid]).await;
        status = info["status"].clone();
        if status == "sleeping" {
            break;
        }
    }
    sleeper.kill().expect("kill");
    sleeper.wait().expect("reaped");
    assert_eq!(status, "sleeping");
}

#[tokio::test]
async fn all_processes_lists_processes_not_their_threads() {
    let fleet = Fleet::start().await;
    // This test runs on several threads: none of them is a process.
    let me = std::process::id();
    let threads: Vec<u64> = std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .filter_map(|t| t.ok()?.file_name().to_str()?.parse().ok())
        .filter(|tid| *tid != u64::from(me))
        .collect();
    assert!(!threads.is_empty(), "a multi-threaded test has threads");
    let (code, all) = fleet
        .ctl_json(&fleet.alice, &["ps", "host1", "--all"])
        .await;
    assert_eq!(code, 0, "{all}");
    let pids: Vec<u64> = all
        .as_array()
        .expect("processes")
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .collect();
    assert!(pids.contains(&u64::from(me)), "the test process is listed");
    assert!(
        threads.iter().all(|t| !pids.contains(t)),
        "threads {threads:?} listed as processes"
    );
}

#[tokio::test]
async fn a_slow_request_does_not_hold_up_the_others() {
    let fleet = Fleet::start().await;
    let mut alice = fleet.client("alice_raw", &fleet.alice).await;
    let to_host = |data: Value| json!({"type": "MESSAGE", "target": {"type": "NAME", "name": "host1"}, "data": data});
    alice
        .send(to_host(
            json!({"req": "exec_command", "rid": 1, "msg": {"command": "sleep 2"}}),
        ))
        .await;
    alice.send(to_host(json!({"req": "ping", "rid": 2}))).await;
    let began = std::time::Instant::now();
    let first = alice.skip_to("MESSAGE").await;
    assert_eq!(first["data"]["rid"], 2, "{first}");
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "{:?}",
        began.elapsed()
    );
    let second = alice
        .skip_to_within("MESSAGE", Duration::from_secs(10))
        .await;
    assert_eq!(
        (
            second["data"]["rid"].as_u64(),
            second["data"]["msg"]["exit_code"].as_i64()
        ),
        (Some(1), Some(0)),
        "{second}"
    );
}

/// The live processes (zombies aside) of process group `pgid`, from /proc.
fn group_members(pgid: u64) -> Vec<u64> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let fields: Vec<&str> = stat
                .rsplit_once(") ")
                .map(|(_, rest)| rest.split(' ').collect())
                .unwrap_or_default();
            fields.first().is_some_and(|s| *s != "Z") && fields.get(2) == Some(&&*pgid.to_string())
        })
        .collect()
}

#[tokio::test]
async fn a_started_process_counts_and_is_signalled_with_its_whole_tree() {
    let fleet = Fleet::with_config("max_running = 4\nkeep_exited = 1").await;
    // A shell, its child shell and two grandchildren: four processes.
    let tree = start(
        &fleet,
        &["sh", "-c", "sh -c 'sleep 60 & sleep 60 & wait' & wait"],
    )
    .await;
    eventually(PATIENCE, "four processes in the tree", || {
        group_members(tree).len() == 4
    })
    .await;
    let members = group_members(tree);
    let (code, reply) = fleet
        .request(&fleet.alice, "execute", json!({"cmd": ["true"]}))
        .await;
    assert_refused(code, &reply, "limit");
    assert!(
        reply["desc"]
            .as_str()
            .is_some_and(|d| d.contains("max_running")),
        "{reply}"
    );

    // SIGTERM to the started process reaches its grandchildren.
    let (code, reply) = fleet
        .request(&fleet.alice, "kill_process", json!({"pid": tree}))
        .await;
    assert_eq!((code, &reply["group"]), (0, &json!(true)), "{reply}");
    eventually(PATIENCE, "the whole tree ended", || {
        members
            .iter()
            .all(|m| proc_state(*m).is_none_or(|s| s == 'Z'))
    })
    .await;

    // A process that exited and left a child behind: the orphan is still
    // counted and still reached through the started process's pid.
    let left = start(&fleet, &["sh", "-c", "sleep 60 & exit 0"]).await;
    assert_eq!(exit_of(&fleet, left).await["code"], 0);
    let orphans = group_members(left);
    assert_eq!(orphans.len(), 1, "the sleep it left");
    // More exits than keep_exited do not make the agent forget it.
    for _ in 0..2 {
        let done = start(&fleet, &["true"]).await;
        exit_of(&fleet, done).await;
    }
    let (code, reply) = fleet
        .request(
            &fleet.alice,
            "kill_process",
            json!({"pid": left, "method": "SIGKILL"}),
        )
        .await;
    assert_eq!(code, 0, "{reply}");
    eventually(PATIENCE, "the orphan ended", || {
        orphans
            .iter()
            .all(|m| proc_state(*m).is_none_or(|s| s == 'Z'))
    })
    .await;
}

#[tokio::test]
async fn started_processes_do_not_inherit_the_agents_token() {
    let fleet = Fleet::launch("", true).await;
    let (code, reply) = fleet
        .request(&fleet.alice, "exec_command", json!({"command": "env"}))
        .await;
    assert_eq!(code, 0, "{reply}");
    let env = reply["stdout"].as_str().expect("stdout");
    assert!(env.contains("PATH="), "{env}");
    assert!(!env.contains("CONCIERGE_AGENT_TOKEN"), "{env}");
}

#[tokio::test]
async fn exec_command_answers_even_when_no_exited_process_is_kept() {
    let fleet = Fleet::with_config("keep_exited = 0\nexec_timeout_secs = 5").await;
    let (code, reply) = fleet
        .request(&fleet.alice, "exec_command", json!({"command": "echo hi"}))
        .await;
    assert_eq!(
        (code, reply["stdout"].as_str()),
        (0, Some("hi\n")),
        "{reply}"
    );
}
