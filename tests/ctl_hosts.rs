//! `concierge ctl` against every kind of host, read as a person reads it:
//! a real gateway, a Nest host and a Quix backend of this file that answer
//! on the wire as the seeds' own programs do (the Nest bot's
//! `nest_management_bot/client.py`, Quix's `test/client/backup.py` and its
//! README: each reply below is the shape their code sends, with made-up
//! values), and the real agent; what `ctl` prints is what is checked.

mod common;

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use common::process::{add_user, ctl_json, issue_token, outcome, Process};
use common::{TestServer, PATIENCE};

const PASSWORD: &str = "quix-secret-1";

/// A host of this file, answering in a task; the commands it was sent
/// come through `heard`. It stops when dropped.
struct FakeHost {
    heard: mpsc::UnboundedReceiver<Value>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeHost {
    /// The next command the host was sent.
    async fn heard(&mut self) -> Value {
        tokio::time::timeout(PATIENCE, self.heard.recv())
            .await
            .expect("the host was sent a command")
            .expect("the host is running")
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

/// Serves `socket` with `answer` (what to send for a frame; `None` ends
/// the connection) until it closes.
fn serve(
    mut ws: Socket,
    answer: fn(&Value) -> Option<Value>,
    is_command: fn(&Value) -> bool,
) -> FakeHost {
    let (tx, heard) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Some(Ok(frame)) = ws.next().await {
            let Message::Text(text) = frame else { continue };
            let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if !is_command(&frame) {
                continue;
            }
            let _ = tx.send(frame.clone());
            match answer(&frame) {
                Some(reply) => {
                    if ws.send(Message::text(reply.to_string())).await.is_err() {
                        return;
                    }
                }
                None => return,
            }
        }
    });
    FakeHost { heard, task }
}

/// A Nest host as `client.py` is: it lets itself in with its token and
/// answers each command as `command_handler` does. A command it does not
/// have makes the real one raise and exit: this one hangs up.
async fn nest_host(server: &TestServer, token: &str) -> FakeHost {
    let url = format!("ws://{}/nest", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connects");
    let hello = json!({"status": "let_me_in_pls",
        "payload": {"version": "0.1.0a", "client_token": token}});
    ws.send(Message::text(hello.to_string()))
        .await
        .expect("sent");
    let answer = next_json(&mut ws).await;
    assert_eq!(answer["message"], "Authenticated :D", "{answer}");
    serve(ws, nest_answer, |f| f["status"] == "command")
}

/// `command_handler`'s answer to a command (its shapes, made-up values).
fn nest_answer(command: &Value) -> Option<Value> {
    let payload = &command["payload"];
    let done = |words: &str| json!({"status": "command_response", "message": words});
    Some(match command["message"].as_str()? {
        "obtain_user_usages" => json!({"status": "command_response", "payload": {
            "resources": "Disk usage: 1.50 MB used out of 15.00 GB limit\n\
                          Memory usage: 12.34 MB used out of 2.00 GB limit\n",
            // `du --max-depth=1 -c -b CWD`, split at tabs.
            "storage": [["4096", "/home/nesthost/.cache"], ["1495904", "/home/nesthost/demo_app"],
                        ["1500000", "/home/nesthost"], ["1500000", "total"]],
        }}),
        "obtain_all_process_info" => json!({"status": "command_response", "payload": [
            {"pid": 1, "name": "systemd"}, {"pid": 21384, "name": "python3"}]}),
        "obtain_process_info" if payload["pid"] == 21384 => {
            json!({"status": "command_response", "payload": {
                "pid": 21384, "name": "python3", "cpu_usage": 2.5,
                "cpu_time": {"user": 1.5, "system": 0.25}, "status": "sleeping",
                "memory": {"rss": 12_345_678, "swap": 0}, "started": 1_796_612_400.25,
                "safe_kill": true}})
        }
        "obtain_process_info" => json!({"status": "command_response_error",
            "message": "Could not get process info, it no longer exists :(",
            "payload": {"pid": payload["pid"]}}),
        "kill_process" => done("You're a killer now... >:( (process was killed successfully)"),
        "pause_process" => {
            done("Poor process didn't even get a choice, it was just forced to SIGSTOP")
        }
        "resume_process" => done("Keep going! The process is back in action (SIGCONT) :D"),
        "list_services" => json!({"status": "command_response", "payload": ["demo_app.service"]}),
        "obtain_service_info" => json!({"status": "command_response", "payload": {
            "name": "demo_app.service", "description": "Demo app",
            "active_state": "active", "sub_state": "running",
            "file_location": "/home/nesthost/.config/systemd/user/demo_app.service",
            "uptime": "Mon 2026-12-07 03:00:00 ; 20 minutes ago", "pid": 4242}}),
        "start_service" => done("Started service, what a lovely day :D"),
        "stop_service" => done("Service stopped, what a sad day :("),
        "restart_service" => done("Service was given a bit of a mental restart"),
        "reload_service" => done("Service was given a mental reload"),
        "get_port" => json!({"status": "command_response",
            "message": "Here's a port for you :D ~~stolen~~", "payload": "38123\n"}),
        _ => return None,
    })
}

/// A Quix backend as seed 003 and `backup.py` describe it: it
/// authenticates with its account and answers execute, view_running,
/// proc_signal and telemetry with `backup.py`'s replies.
async fn quix_backend(server: &TestServer, account: &str) -> FakeHost {
    let url = format!("ws://{}/wsi", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connects");
    let login = json!({"auth": null, "req": "authenticate", "rid": 48213,
        "msg": {"username": account, "password": PASSWORD}});
    ws.send(Message::text(login.to_string()))
        .await
        .expect("sent");
    let answer = next_json(&mut ws).await;
    assert_eq!(answer["msg"]["success"], true, "{answer}");
    serve(ws, quix_answer, |f| f.get("req").is_some())
}

fn quix_answer(request: &Value) -> Option<Value> {
    let program = |title: &str, pid: u32| {
        json!({"title": title, "pid": pid, "cpu_util": 0, "mem_util": 111,
            "reqc": "python3 testserver/testserver.py --help", "port_util": [12345, 56193]})
    };
    let msg = match request["req"].as_str()? {
        "execute" => json!({"result": "success", "proc_id": 12345}),
        "view_running" => json!([
            program("Test Server v0.1", 12321),
            program("Test Server v0.2", 44421)
        ]),
        "proc_signal" => json!({"result": "success"}),
        "telemetry" => json!({"tele_data": {
            "ttl_cpu_usage": [0.10, 0.11, 0.02, 0.01],
            "ttl_mem_usage": [128, 1000, 412],
            "disk_util": {"/dev/sda": [195_739_194, 8_185_749_375u64],
                          "/dev/sdb": [185_844_831, 8_187_395_730u64]},
            "vpn_status": {"ifname": "tun0", "conn_type": "openvpn",
                "conn_host": "th1.s.quix.click", "conn_ip4": "10.8.0.120", "conn_ip6": "fe80::1"},
        }}),
        _ => return None,
    };
    Some(json!({"rid": request["rid"], "msg": msg}))
}

fn server() -> TestServer {
    TestServer::with(|s| s.adapter_command_timeout_secs = 5)
}

fn data(server: &TestServer) -> String {
    server.data.path().to_str().expect("utf-8").to_owned()
}

async fn token(server: &TestServer, name: &str, role: &str) -> String {
    issue_token(&["--data-dir", &data(server)], name, role).await
}

/// `ctl ARGS` as `token`, which must succeed: what it printed.
async fn shown(server: &TestServer, token: &str, args: &[&str]) -> String {
    let (code, out, err) = outcome(common::process::ctl(&server.ws_url(), token).args(args)).await;
    assert_eq!(code, 0, "ctl {args:?}: {out}{err}");
    out
}

#[tokio::test]
async fn a_nest_hosts_replies_read_as_it_gives_them() {
    let server = server();
    let host_token = issue_token(
        &["--data-dir", &data(&server), "--format", "nest"],
        "nesthost",
        "agent",
    )
    .await;
    let alice = token(&server, "alice", "operator").await;
    let mut host = nest_host(&server, &host_token).await;

    // The inventory lists it, with what its dialect told: its version.
    let (code, hosts) = ctl_json(&server.ws_url(), &alice, &["hosts", "kind=nest"]).await;
    assert_eq!(code, 0, "{hosts}");
    let listed = &hosts["hosts"][0];
    assert_eq!(
        (
            &listed["name"],
            &listed["online"],
            &listed["facts"]["agent_version"]
        ),
        (&json!("nesthost"), &json!(true), &json!("0.1.0a")),
        "{hosts}"
    );

    // Services: the names it lists, and a line saying that is all.
    let units = shown(&server, &alice, &["units", "nesthost"]).await;
    assert!(units.contains("demo_app.service"), "{units}");
    assert!(
        units.contains("names only: `ctl unit nesthost status UNIT`"),
        "{units}"
    );
    assert_eq!(host.heard().await["message"], "list_services");
    let (code, raw) = ctl_json(&server.ws_url(), &alice, &["units", "nesthost"]).await;
    assert_eq!((code, raw), (0, json!(["demo_app.service"])));
    host.heard().await;

    let status = shown(&server, &alice, &["unit", "nesthost", "status", "demo_app"]).await;
    assert!(
        status.starts_with("demo_app.service: active (running), main pid 4242\n"),
        "{status}"
    );
    assert!(
        status.contains("uptime: Mon 2026-12-07 03:00:00 ; 20 minutes ago"),
        "{status}"
    );
    assert!(
        status.contains("file: /home/nesthost/.config/systemd/user/demo_app.service"),
        "{status}"
    );
    host.heard().await;
    let restart = shown(
        &server,
        &alice,
        &["unit", "nesthost", "restart", "demo_app"],
    )
    .await;
    assert!(
        restart.starts_with("restarted demo_app\n")
            && restart.contains("`ctl unit nesthost status demo_app` asks"),
        "{restart}"
    );
    assert!(!restart.contains("- -"), "{restart}");
    let sent = host.heard().await;
    assert_eq!(
        (&sent["message"], &sent["payload"]),
        (
            &json!("restart_service"),
            &json!({"service_name": "demo_app"})
        )
    );

    // Signals: the one asked for, as the host only says it succeeded.
    let signal = shown(&server, &alice, &["signal", "nesthost", "21384", "SIGTERM"]).await;
    assert!(signal.starts_with("sent SIGTERM to 21384"), "{signal}");
    let sent = host.heard().await;
    assert_eq!(
        (&sent["message"], &sent["payload"]),
        (
            &json!("kill_process"),
            &json!({"pid": 21384, "method": "SIGTERM"})
        )
    );
    let pause = shown(&server, &alice, &["pause", "nesthost", "21384"]).await;
    assert!(pause.starts_with("sent SIGSTOP to 21384"), "{pause}");
    assert_eq!(host.heard().await["message"], "pause_process");
    let resume = shown(&server, &alice, &["resume", "nesthost", "21384"]).await;
    assert!(resume.starts_with("sent SIGCONT to 21384"), "{resume}");
    assert_eq!(host.heard().await["message"], "resume_process");

    // Usage: what `nest resources` printed, and du's rows in bytes.
    let usage = shown(&server, &alice, &["usage", "nesthost"]).await;
    assert!(
        usage.starts_with(
            "Disk usage: 1.50 MB used out of 15.00 GB limit\n\
             Memory usage: 12.34 MB used out of 2.00 GB limit\ntotal 1.5 MB\n"
        ),
        "{usage}"
    );
    assert!(
        usage.contains("4.1 kB") && usage.contains("/home/nesthost/demo_app"),
        "{usage}"
    );
    assert!(!usage.contains("0 B in - entries"), "{usage}");
    host.heard().await;
    let (code, raw) = ctl_json(&server.ws_url(), &alice, &["usage", "nesthost"]).await;
    assert_eq!(code, 0);
    assert_eq!(raw["storage"][3], json!(["1500000", "total"]), "{raw}");
    host.heard().await;

    // Processes: pids and names, no columns of zeros it never reported.
    let ps = shown(&server, &alice, &["ps", "nesthost"]).await;
    let header = ps.lines().next().unwrap_or_default();
    assert!(
        header.contains("PID") && header.contains("NAME") && !header.contains("CPU"),
        "{ps}"
    );
    assert!(
        ps.contains("21384") && ps.contains("python3") && ps.contains("ctl proc nesthost PID"),
        "{ps}"
    );
    assert_eq!(host.heard().await["message"], "obtain_all_process_info");
    let all = shown(&server, &alice, &["ps", "nesthost", "--all"]).await;
    let header = all.lines().next().unwrap_or_default();
    assert!(
        header.contains("PID") && header.contains("NAME") && !header.contains("RSS"),
        "{all}"
    );
    assert!(all.contains("systemd") && all.contains("python3"), "{all}");
    host.heard().await;
    let proc = shown(&server, &alice, &["proc", "nesthost", "21384"]).await;
    for part in [
        "rss 12.3 MB, swap 0 B",
        "user 1.5 s, system 0.25 s",
        "2.5%",
        "2026-12-07T03:00:00Z",
    ] {
        assert!(proc.contains(part), "{part}: {proc}");
    }
    host.heard().await;
    let (code, _, err) =
        outcome(common::process::ctl(&server.ws_url(), &alice).args(["proc", "nesthost", "7"]))
            .await;
    assert_eq!(code, 1);
    assert!(err.contains("it no longer exists"), "{err}");
    host.heard().await;

    // What a Nest host does not serve is refused at the gateway.
    let (code, _, err) =
        outcome(common::process::ctl(&server.ws_url(), &alice).args(["top", "nesthost", "--once"]))
            .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("unknown_request"), "{err}");
}

#[tokio::test]
async fn a_quix_backends_replies_read_as_it_gives_them() {
    let server = server();
    add_user(
        &["--data-dir", &data(&server)],
        "quixhost",
        "agent",
        PASSWORD,
    )
    .await;
    let alice = token(&server, "alice", "operator").await;
    let mut backend = quix_backend(&server, "quixhost").await;
    let (_, hosts) = ctl_json(&server.ws_url(), &alice, &["hosts", "quix*"]).await;
    assert_eq!(hosts["hosts"][0]["kind"], "quix", "{hosts}");

    // mem_util is MB: 111 MB, in the user's unit.
    let ps = shown(&server, &alice, &["ps", "quixhost"]).await;
    assert!(
        ps.contains("111.0 MB") && ps.contains("12345,56193") && ps.contains("Test Server v0.2"),
        "{ps}"
    );
    assert!(!ps.contains("116.4"), "MB is not MiB: {ps}");
    backend.heard().await;
    add_user(&["--data-dir", &data(&server)], "bob", "viewer", PASSWORD).await;
    let bob = token(&server, "bob", "viewer").await;
    let mut client = server.connect().await;
    client
        .identify_with(json!({"type": "IDENTIFY", "name": "bob", "version": "0.2.0", "token": bob}))
        .await;
    let set = client
        .request(
            json!({"type": "USER_SETTINGS_SET", "setting": "storage_unit_of_measurement", "value": "gib"}),
            0,
        )
        .await;
    assert_eq!(set["type"], "USER_SETTINGS_SET_RESULT", "{set}");
    let ps = shown(&server, &bob, &["ps", "quixhost"]).await;
    assert!(ps.contains("105.9 MiB"), "{ps}");
    backend.heard().await;

    // Signals: named as asked; pause and resume are proc_signal.
    let signal = shown(&server, &alice, &["signal", "quixhost", "12321", "SIGHUP"]).await;
    assert_eq!(signal.trim_end(), "sent SIGHUP to 12321");
    let sent = backend.heard().await;
    assert_eq!(
        (&sent["req"], &sent["msg"]),
        (
            &json!("proc_signal"),
            &json!({"pid": 12321, "mode": "SIGHUP"})
        )
    );
    let pause = shown(&server, &alice, &["pause", "quixhost", "12321"]).await;
    assert_eq!(pause.trim_end(), "sent SIGSTOP to 12321");
    assert_eq!(backend.heard().await["msg"]["mode"], "SIGSTOP");

    // Telemetry: memory totals without a unit, disks in bytes.
    let top = shown(&server, &alice, &["top", "quixhost", "--once"]).await;
    assert!(
        top.contains("used 128, buff/cache 1000, free 412 of 1540 (no unit given)"),
        "{top}"
    );
    assert!(
        top.contains("195.7 MB used, 8.2 GB free  /dev/sda"),
        "{top}"
    );
    assert!(top.contains("tun0 openvpn to th1.s.quix.click"), "{top}");
    assert_eq!(
        top.lines().filter(|l| l.starts_with("cpu")).count(),
        4,
        "{top}"
    );
    backend.heard().await;
    // A backend publishes nothing: `top` asks it again.
    let mut follow = common::process::ctl(&server.ws_url(), &alice);
    follow.args(["top", "quixhost"]);
    let mut follow = follow.spawn().expect("ctl starts");
    for _ in 0..3 {
        assert_eq!(backend.heard().await["req"], "telemetry");
    }
    follow.kill().await.expect("killed");

    // exec: the proc_id; --follow ends, as a backend streams nothing.
    let started = shown(
        &server,
        &alice,
        &["exec", "quixhost", "--", "python3", "x.py"],
    )
    .await;
    assert_eq!(started.trim_end(), "12345");
    backend.heard().await;
    let (code, out, err) = outcome(
        common::process::ctl(&server.ws_url(), &alice)
            .args(["exec", "quixhost", "--follow", "--", "sleep", "1"]),
    )
    .await;
    assert_eq!((code, out.trim_end()), (0, "12345"), "{err}");
    assert!(err.contains("does not stream"), "{err}");
    backend.heard().await;
}

/// The real agent: what changed for it reads as before, with its units.
#[tokio::test]
async fn an_agents_replies_keep_their_fields() {
    let server = server();
    let host = token(&server, "host1", "agent").await;
    let alice = token(&server, "alice", "operator").await;
    let work = tempfile::tempdir().expect("work dir");
    let agent = agent(&server.ws_url(), &host, work.path());
    // Once it answers, it runs a process to be shown.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let pid = loop {
        let (code, out, _) = outcome(
            common::process::ctl(&server.ws_url(), &alice)
                .args(["exec", "host1", "--", "sleep", "30"]),
        )
        .await;
        if code == 0 {
            break out.trim_end().to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the agent never answered:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let ps = shown(&server, &alice, &["ps", "host1"]).await;
    assert!(ps.contains("sleep 30") && ps.contains(" MB"), "{ps}");
    let pause = shown(&server, &alice, &["pause", "host1", &pid]).await;
    assert_eq!(
        pause.trim_end(),
        format!("sent SIGSTOP to {pid} and its process group")
    );
    let resume = shown(&server, &alice, &["resume", "host1", &pid]).await;
    assert_eq!(
        resume.trim_end(),
        format!("sent SIGCONT to {pid} and its process group")
    );
    let usage = shown(&server, &alice, &["usage", "host1"]).await;
    assert!(
        usage.contains("1 running processes") && usage.contains("B Mem"),
        "{usage}"
    );
    let (code, out, err) = outcome(
        common::process::ctl(&server.ws_url(), &alice)
            .args(["exec", "host1", "--follow", "--", "echo", "streamed"]),
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "streamed\n"), "{err}");
    let signal = shown(&server, &alice, &["signal", "host1", &pid, "SIGKILL"]).await;
    assert_eq!(
        signal.trim_end(),
        format!("sent SIGKILL to {pid} and its process group")
    );
}

/// `concierge agent` named host1, with its settings in `work`.
fn agent(url: &str, token: &str, work: &Path) -> Process {
    let config = work.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "url = {url:?}\ntoken = {token:?}\nname = \"host1\"\nwork_dir = {:?}\n\
             systemd = \"off\"\nreconnect_min_ms = 100\nreconnect_max_ms = 400\n",
            work.display().to_string()
        ),
    )
    .expect("config written");
    Process::spawn(common::process::command(&[
        "agent",
        "--config",
        config.to_str().expect("utf-8"),
    ]))
}

/// `ctl hosts` with its health columns and `ctl history`, against a real
/// agent sending its summaries every second, and a host expected (its
/// token issued) that never connected.
#[tokio::test]
async fn hosts_show_health_and_history_reads_it_back() {
    let server = TestServer::with(|s| s.summary_interval_secs = 1);
    let host = token(&server, "host1", "agent").await;
    token(&server, "host0", "agent").await;
    let alice = token(&server, "alice", "operator").await;
    let work = tempfile::tempdir().expect("work dir");
    let agent = agent(&server.ws_url(), &host, work.path());
    // Until its trend has three readings.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let (code, listed) = ctl_json(&server.ws_url(), &alice, &["hosts", "--sort", "cpu"]).await;
        assert_eq!(code, 0, "{listed}");
        let trend = listed["hosts"][0]["health"]["trend"]
            .as_array()
            .map_or(0, Vec::len);
        if trend >= 3 {
            break listed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no health listed: {listed}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Sorted by CPU: the host with a summary first, the one never seen after.
    let names: Vec<&str> = listed["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| h["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["host1", "host0"], "{listed}");
    let health = &listed["hosts"][0]["health"];
    for field in ["cpu", "load", "mem", "disk"] {
        assert!(health[field].is_number(), "{field}: {health}");
    }
    assert!(
        (0.0..=100.0).contains(&health["mem"].as_f64().expect("mem"))
            && health["mem"].as_f64() > Some(0.0),
        "{health}"
    );
    assert!(
        health.get("vpn_age").is_none(),
        "no VPN on this host: {health}"
    );

    let table = shown(&server, &alice, &["hosts", "--sort", "cpu"]).await;
    let lines: Vec<&str> = table.lines().map(str::trim_start).collect();
    for column in ["PRESENCE", "CPU", "LOAD", "MEM", "DISK", "VPN", "TREND"] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(
        lines[1].starts_with("host1") && lines[1].contains("online"),
        "{table}"
    );
    assert!(lines[1].contains('%'), "{table}");
    assert!(
        lines[1].chars().filter(|c| ('▁'..='█').contains(c)).count() >= 3,
        "a sparkline of the trend: {table}"
    );
    assert!(
        lines[2].starts_with("host0") && lines[2].contains("never connected"),
        "{table}"
    );

    // The history: a sparkline per figure, then the points.
    let (code, history) = ctl_json(
        &server.ws_url(),
        &alice,
        &["history", "host1", "--since", "5m"],
    )
    .await;
    assert_eq!(code, 0, "{history}");
    let points = history["points"].as_array().expect("points").len();
    assert!(points >= 3, "{history}");
    let screen = shown(&server, &alice, &["history", "host1", "--since", "5m"]).await;
    for figure in ["cpu ", "load", "mem ", "disk"] {
        assert!(
            screen
                .lines()
                .any(|l| l.starts_with(figure) && l.contains(" min ")),
            "{figure}: {screen}"
        );
    }
    assert!(screen.contains("TIME"), "{screen}");
    assert!(screen.lines().count() >= points + 6, "{screen}");
    // A host the inventory does not have, and a --since of no meaning.
    let (code, _, err) =
        outcome(common::process::ctl(&server.ws_url(), &alice).args(["history", "nohost"])).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not_found"), "{err}");
    let (code, _, err) = outcome(
        common::process::ctl(&server.ws_url(), &alice)
            .args(["history", "host1", "--since", "soon"]),
    )
    .await;
    assert_eq!(code, 2, "{err}");
}
