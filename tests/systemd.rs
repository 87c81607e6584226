//! The agent against a real systemd: a container with systemd as PID 1
//! (`concierge/systemd-test`, see deploy/README.md) runs the gateway, the
//! agent and a demo unit as systemd services; from this host, `concierge ctl`
//! lists the units of host1 and starts, stops, restarts and reloads the demo
//! unit through the gateway, and every answer is checked against what
//! systemd itself says (`systemctl show`, the unit's journal). Then the web
//! console does the same in a real browser (tests/clients/console_browser.py
//! `units`, as tests/console.rs runs it).
//!
//! Needs Docker and root (or sudo, for `deploy/build-images.sh`): without a
//! `docker` command it fails, naming what is missing. `scripts/test` leaves
//! this binary out on a machine without one, and says so, so the runner
//! reports it skipped rather than passed. With a `docker` command, anything
//! missing (a daemon that does not answer, an image that cannot be built,
//! systemd that does not boot) fails it. The image is built (10-20 s with
//! the Debian base cached, a few minutes without) when it is missing or holds
//! another binary than this test's, which is the one the container runs.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const IMAGE: &str = "concierge/systemd-test:latest";
const BINARY: &str = env!("CARGO_BIN_EXE_concierge");
const DEMO: &str = "concierge-demo";
const HOST: &str = "host1";
const CONSOLE_PASSWORD: &str = "a console operator's password";

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

/// Waits until `check` answers `Some`, or fails with `what` and the last
/// thing `check` saw.
fn wait_for<T>(what: &str, within: Duration, mut check: impl FnMut(&mut String) -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    let mut last = String::new();
    loop {
        if let Some(value) = check(&mut last) {
            return value;
        }
        if Instant::now() > deadline {
            panic!("{what}: not within {} s; last: {last}", within.as_secs());
        }
        sleep(Duration::from_millis(500));
    }
}

/// Fails unless Docker is here and its daemon answers.
fn require_docker() {
    match Command::new("docker").arg("--version").output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "no `docker` command: this test needs a Docker engine \
             (scripts/test leaves tests/systemd.rs out on such a machine)"
        ),
        Err(e) => panic!("cannot run docker: {e}"),
        Ok(_) => {
            let info = run(Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]));
            assert!(
                info.status.success(),
                "docker is installed but its daemon does not answer (docker info: {}); \
                 this test needs it",
                text(&info.stderr)
            );
        }
    }
}

fn sha256(path: &str) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    assert!(
        out.status.success(),
        "sha256sum {path}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Builds the image unless it exists with this test's binary in it.
fn ensure_image() {
    let want = sha256(BINARY);
    let have = run(Command::new("docker").args([
        "image",
        "inspect",
        "-f",
        "{{index .Config.Labels \"org.concierge.binary.sha256\"}}",
        IMAGE,
    ]));
    if have.status.success() && text(&have.stdout) == want {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    eprintln!("building {IMAGE} with {BINARY} (deploy/build-images.sh --only systemd)");
    let out = run(Command::new(root.join("deploy/build-images.sh"))
        .args(["--only", "systemd", "--binary", BINARY])
        .current_dir(root));
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stdout);
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "deploy/build-images.sh --only systemd --binary {BINARY} failed ({}):\n{}\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            text(&out.stderr)
        );
    }
}

/// A running container, removed when dropped (also when the test fails).
struct Container {
    name: String,
}

impl Container {
    fn start() -> Container {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("concierge-systemd-test-{}-{nanos}", std::process::id());
        // No --privileged: refused on the project's machines, and not
        // needed (deploy/README.md).
        let out = run(Command::new("docker").args([
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            "org.concierge.test=systemd",
            "-e",
            "container=docker",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "--tmpfs",
            "/tmp",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup:ro",
            IMAGE,
        ]));
        assert!(
            out.status.success(),
            "docker run {IMAGE} failed: {}",
            text(&out.stderr)
        );
        Container { name }
    }

    fn exec_with(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("docker");
        cmd.arg("exec");
        if stdin.is_some() {
            cmd.arg("-i");
        }
        cmd.arg(&self.name).args(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .expect("write to docker exec");
        }
        child.wait_with_output().expect("docker exec")
    }

    fn exec(&self, args: &[&str]) -> Output {
        self.exec_with(args, None)
    }

    /// Runs `args` in the container; fails the test unless it succeeds.
    fn must(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "in the container, {args:?} failed ({}): {} {}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn ip(&self) -> String {
        let out = run(Command::new("docker").args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &self.name,
        ]));
        let ip = text(&out.stdout);
        assert!(!ip.is_empty(), "the container has no IP address");
        ip
    }

    /// What systemd says of the demo unit: (ActiveState, SubState, MainPID).
    fn demo_state(&self) -> (String, String, u64) {
        let out = self.must(&[
            "systemctl",
            "show",
            DEMO,
            "-p",
            "ActiveState",
            "-p",
            "SubState",
            "-p",
            "MainPID",
        ]);
        let get = |key: &str| {
            out.lines()
                .find_map(|line| line.strip_prefix(&format!("{key}=")))
                .unwrap_or_default()
                .to_owned()
        };
        let pid = get("MainPID").parse().unwrap_or(0);
        (get("ActiveState"), get("SubState"), pid)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the failure needs to be understood, before it is gone.
            for args in [
                &["systemctl", "--failed", "--no-pager"][..],
                &[
                    "journalctl",
                    "-u",
                    "concierge-agent",
                    "-u",
                    "concierge-gateway",
                    "-n",
                    "40",
                    "--no-pager",
                ],
            ] {
                let out = self.exec(args);
                eprintln!("--- {args:?}:\n{}{}", text(&out.stdout), text(&out.stderr));
            }
        }
        let _ = Command::new("docker")
            .args(["rm", "-f", "-v", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `concierge ctl --url URL --token TOKEN --json ARGS...` from this host
/// (`common::process::ctl`): its exit status and the reply's `msg` it
/// prints.
struct Ctl {
    url: String,
    token: String,
}

impl Ctl {
    fn run(&self, args: &[&str]) -> (bool, Value, String) {
        let out = run(common::process::ctl_blocking(&self.url, &self.token)
            .arg("--json")
            .args(args));
        let stdout = text(&out.stdout);
        let msg = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        let said = format!(
            "concierge ctl {args:?}: {} stdout={stdout} stderr={}",
            out.status,
            text(&out.stderr)
        );
        (out.status.success(), msg, said)
    }

    /// A request that must succeed: its `msg`.
    fn ok(&self, args: &[&str]) -> Value {
        let (ok, msg, said) = self.run(args);
        assert!(ok && (msg.is_object() || msg.is_array()), "{said}");
        msg
    }

    /// A request that must fail with `reason`.
    fn fails(&self, args: &[&str], reason: &str) {
        let (ok, msg, said) = self.run(args);
        assert!(!ok, "expected a failure: {said}");
        assert_eq!(msg["result"], "error", "{said}");
        assert_eq!(msg["reason"], reason, "{said}");
    }

    /// `unit host1 ACTION concierge-demo`: the unit's state it answers.
    fn demo(&self, action: &str) -> Unit {
        Unit::of(&self.ok(&["unit", HOST, action, DEMO]))
    }
}

/// A unit's state as the agent reports it (`Systemd::service_info`).
#[derive(Debug)]
struct Unit {
    active_state: String,
    sub_state: String,
    pid: Option<u64>,
}

impl Unit {
    /// The unit object in a reply: `msg` itself, or the object in it that
    /// has an `active_state`.
    fn of(msg: &Value) -> Unit {
        let info = if msg.get("active_state").is_some() {
            msg
        } else {
            msg.as_object()
                .and_then(|m| m.values().find(|v| v.get("active_state").is_some()))
                .unwrap_or_else(|| panic!("no unit state in {msg}"))
        };
        assert_eq!(info["name"], format!("{DEMO}.service"), "{info}");
        assert!(info["uptime"].is_u64(), "{info}");
        assert_eq!(
            info["file_location"],
            format!("/etc/systemd/system/{DEMO}.service"),
            "{info}"
        );
        Unit {
            active_state: info["active_state"].as_str().unwrap_or_default().into(),
            sub_state: info["sub_state"].as_str().unwrap_or_default().into(),
            pid: info["pid"].as_u64(),
        }
    }

    /// Checks the state is what systemd itself says.
    fn agrees_with(&self, container: &Container) {
        let (active, sub, pid) = container.demo_state();
        assert_eq!(
            (
                self.active_state.as_str(),
                self.sub_state.as_str(),
                self.pid
            ),
            (active.as_str(), sub.as_str(), (pid != 0).then_some(pid)),
            "the agent's answer and systemctl show disagree"
        );
    }
}

/// The list of units in a `units` reply: its `services` (a page of them,
/// the agent's `list_services`), or `msg` itself if it is the list.
fn units_of(msg: &Value) -> &Vec<Value> {
    msg.get("services")
        .and_then(Value::as_array)
        .or_else(|| msg.as_array())
        .unwrap_or_else(|| panic!("no list of units in {msg}"))
}

#[test]
fn ctl_drives_real_systemd_units_through_the_agent() {
    require_docker();
    ensure_image();
    let container = Container::start();

    // systemd boots.
    wait_for("systemd to boot", Duration::from_secs(60), |last| {
        let out = container.exec(&["systemctl", "is-system-running"]);
        *last = text(&out.stdout);
        matches!(last.as_str(), "running" | "degraded").then_some(())
    });
    wait_for("the gateway to be ready", Duration::from_secs(30), |last| {
        let out = container.exec(&["curl", "-fsS", "http://127.0.0.1:8080/readyz"]);
        *last = format!("{} {}", text(&out.stdout), text(&out.stderr));
        out.status.success().then_some(())
    });

    // Tokens from the gateway's store; the agent starts once it has its own.
    let issue = |name: &str, role: &str| {
        container.must(&[
            "concierge",
            "token",
            "issue",
            "--data-dir",
            "/var/lib/concierge",
            "--name",
            name,
            "--role",
            role,
        ])
    };
    let agent_token = issue(HOST, "agent");
    let operator_token = issue("alice", "operator");
    assert!(!agent_token.is_empty() && !operator_token.is_empty());
    let out = container.exec_with(
        &["sh", "-c", "umask 077 && cat > /etc/concierge/agent.env"],
        Some(&format!("CONCIERGE_AGENT_TOKEN={agent_token}\n")),
    );
    assert!(
        out.status.success(),
        "writing agent.env: {}",
        text(&out.stderr)
    );
    container.must(&["systemctl", "start", "concierge-agent"]);

    let ctl = Ctl {
        url: format!("ws://{}:8080/ws", container.ip()),
        token: operator_token,
    };

    // The agent is connected once host1 answers.
    let units = wait_for("host1 to answer `units`", Duration::from_secs(30), |last| {
        let (ok, msg, said) = ctl.run(&["units", HOST]);
        // A binary without `ctl` (or with other flags) will not get better.
        assert!(!said.contains("unrecognized"), "{said}");
        *last = said;
        ok.then_some(msg)
    });
    let list = units_of(&units);
    let demo = list
        .iter()
        .find(|u| u["name"] == format!("{DEMO}.service"))
        .unwrap_or_else(|| panic!("{DEMO}.service is not in {units}"));
    assert_eq!(demo["load_state"], "loaded", "{demo}");
    assert_eq!(demo["active_state"], "active", "{demo}");
    assert_eq!(demo["description"], "Concierge demo service", "{demo}");
    let agent = list
        .iter()
        .find(|u| u["name"] == "concierge-agent.service")
        .unwrap_or_else(|| panic!("concierge-agent.service is not in {units}"));
    assert_eq!(agent["sub_state"], "running", "{agent}");

    // status: the demo unit runs since boot.
    let status = Unit::of(&ctl.ok(&["unit", HOST, "status", DEMO]));
    assert_eq!(
        (status.active_state.as_str(), status.sub_state.as_str()),
        ("active", "running")
    );
    assert!(status.pid.is_some(), "{status:?}");
    status.agrees_with(&container);

    // stop, start, restart: the state and the main process change for real.
    let stopped = ctl.demo("stop");
    assert_eq!(
        (stopped.active_state.as_str(), stopped.sub_state.as_str()),
        ("inactive", "dead")
    );
    assert_eq!(stopped.pid, None);
    stopped.agrees_with(&container);

    let started = ctl.demo("start");
    assert_eq!(
        (started.active_state.as_str(), started.sub_state.as_str()),
        ("active", "running")
    );
    let first = started.pid.expect("a started unit has a main process");
    assert_ne!(Some(first), status.pid, "start after stop is a new process");
    started.agrees_with(&container);

    let restarted = ctl.demo("restart");
    assert_eq!(restarted.active_state, "active");
    let second = restarted.pid.expect("a restarted unit has a main process");
    assert_ne!(second, first, "restart must replace the main process");
    restarted.agrees_with(&container);

    // reload: the same process, which saw its SIGHUP.
    let reloaded = ctl.demo("reload");
    assert_eq!(reloaded.active_state, "active");
    assert_eq!(reloaded.pid, Some(second), "reload keeps the main process");
    reloaded.agrees_with(&container);
    let reloads = container.must(&["cat", "/run/concierge-demo/reloads"]);
    assert_eq!(
        reloads.lines().filter(|l| *l == "reloaded").count(),
        1,
        "{reloads}"
    );
    let journal = container.must(&["journalctl", "-u", DEMO, "-o", "cat", "--no-pager"]);
    assert!(
        journal.lines().any(|l| l == "reloaded"),
        "no 'reloaded' in the journal:\n{journal}"
    );

    // An unknown unit is not_found, for status and for a job alike; a name
    // that is not a unit name is a bad argument.
    ctl.fails(&["unit", HOST, "status", "no-such-unit-here"], "not_found");
    ctl.fails(&["unit", HOST, "start", "no-such-unit-here"], "not_found");
    ctl.fails(&["unit", HOST, "status", "../etc/passwd"], "bad_argument");

    // The same units from the web console, in a real browser: stop, start
    // and restart from the unit's row, each as systemd sees it after.
    let before = container.demo_state();
    let out = container.exec_with(
        &[
            "concierge",
            "user",
            "add",
            "ops",
            "--role",
            "operator",
            "--password-stdin",
            "--data-dir",
            "/var/lib/concierge",
        ],
        Some(&format!("{CONSOLE_PASSWORD}\n")),
    );
    assert!(out.status.success(), "user add: {}", text(&out.stderr));
    // As tests/console.rs: CONCIERGE_SCREENSHOTS keeps the picture (units.png).
    let scratch = tempfile::tempdir().expect("screenshots");
    let shots = std::env::var("CONCIERGE_SCREENSHOTS")
        .map(|dir| Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .unwrap_or_else(|_| scratch.path().to_owned());
    let unit = format!("{DEMO}.service");
    let browser = run(Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/console_browser.py"
        ))
        .args([
            "units",
            &format!("http://{}:8080", container.ip()),
            "ops",
            CONSOLE_PASSWORD,
            HOST,
            &unit,
        ])
        .arg(&shots));
    let said = format!("{}\n{}", text(&browser.stdout), text(&browser.stderr));
    assert!(
        browser.status.success(),
        "the console's units run failed:\n{said}"
    );
    let summary: Value = text(&browser.stdout)
        .lines()
        .last()
        .and_then(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no summary:\n{said}"));
    assert_eq!(summary["ok"], true, "{summary}");
    assert_eq!(
        summary["file"],
        format!("/etc/systemd/system/{unit}"),
        "{summary}"
    );
    let (active, sub, pid) = container.demo_state();
    assert_eq!((active.as_str(), sub.as_str()), ("active", "running"));
    assert_ne!(
        pid, before.2,
        "restarted from the console: a new main process"
    );
    assert_eq!(summary["pid_after"], pid.to_string(), "{summary}");
}
