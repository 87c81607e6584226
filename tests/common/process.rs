//! The gateway as a child process: spawned from the real binary, its
//! stderr collected, signalled like a supervisor would; and the binary's
//! commands (`ctl`, `token`, `user`, `login`) run as an admin or a user runs
//! them, each person with a config folder of their own.

use std::net::SocketAddr;
use std::process::{Command as StdCommand, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::netns::NetNs;

const BIN: &str = env!("CARGO_BIN_EXE_concierge");

/// A `concierge` process whose stderr is collected line by line.
pub struct Process {
    pub child: Child,
    log: Arc<Mutex<Vec<String>>>,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// The binary with no CONCIERGE_* variable inherited from the environment.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::from(concierge(StdCommand::new(BIN), args));
    cmd.kill_on_drop(true);
    cmd
}

/// `cmd`, which starts the binary (itself, or through `ip netns exec`),
/// given `args`, its output piped, and none of the CONCIERGE_* variables
/// nor RUST_LOG of whoever runs the tests.
fn concierge(mut cmd: StdCommand, args: &[&str]) -> StdCommand {
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("CONCIERGE_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// `concierge ctl --url URL [--token TOKEN]` (no token when `token` is
/// empty), for the arguments of its command to be added, as a user runs it
/// on this host. Every `ctl` of the tests runs in one environment: that of
/// [`command`], with HOME and XDG_CONFIG_HOME pointing nowhere, so that no
/// saved login of whoever runs the tests stands in for a missing token.
pub fn ctl(url: &str, token: &str) -> Command {
    let mut cmd = Command::from(ctl_by(StdCommand::new(BIN), url, token));
    cmd.kill_on_drop(true);
    cmd
}

/// [`ctl`] run inside the network namespace `ns`.
pub fn ctl_in(ns: &NetNs, url: &str, token: &str) -> Command {
    let mut cmd = Command::from(ctl_by(ns.std_command(BIN), url, token));
    cmd.kill_on_drop(true);
    cmd
}

/// [`ctl`] for a test with no runtime, to be run with `output()`.
pub fn ctl_blocking(url: &str, token: &str) -> StdCommand {
    ctl_by(StdCommand::new(BIN), url, token)
}

/// `cmd`, which starts the binary, made the `ctl` of [`ctl`].
fn ctl_by(cmd: StdCommand, url: &str, token: &str) -> StdCommand {
    let mut cmd = concierge(cmd, &["ctl", "--url", url]);
    if !token.is_empty() {
        cmd.args(["--token", token]);
    }
    cmd.env("HOME", "/nonexistent")
        .env("XDG_CONFIG_HOME", "/nonexistent");
    cmd
}

/// Runs `cmd` (a [`ctl`]) to its end, within 30 s: its exit code, stdout
/// and stderr.
pub async fn outcome(cmd: &mut Command) -> (i32, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output()).await;
    ended(cmd, out)
}

/// What [`outcome`] and [`fed`] make of a command's end, within 30 s.
fn ended(
    cmd: &Command,
    out: Result<std::io::Result<std::process::Output>, tokio::time::error::Elapsed>,
) -> (i32, String, String) {
    let out = out
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish within 30 s"))
        .expect("the command runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Process {
    pub fn spawn(mut cmd: Command) -> Process {
        let mut child = cmd.spawn().expect("the binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let sink = log.clone();
        // Keep draining stderr for the whole life of the process, so it can
        // never block on a full pipe.
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Process { child, log, lines }
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits for the `listening: ws://ADDR/ws` line (`wss://` with TLS) and
    /// returns ADDR.
    pub async fn listening(&mut self) -> SocketAddr {
        match self.try_listening().await {
            Ok(addr) => addr,
            Err(log) => panic!("exited without listening:\n{log}"),
        }
    }

    /// ADDR from the `listening: ws://ADDR/ws` line (or `wss://`), or the whole log if
    /// stderr ended without one.
    pub async fn try_listening(&mut self) -> Result<SocketAddr, String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let line = match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => return Err(self.log()),
                Err(_) => panic!("no listening line:\n{}", self.log()),
            };
            assert!(
                !line.contains('\x1b'),
                "escape codes in a log that is not a terminal: {line:?}"
            );
            let url = line
                .split_once("listening: ws://")
                .or(line.split_once("listening: wss://"));
            if let Some((_, rest)) = url {
                let addr = rest.split("/ws").next().unwrap();
                return Ok(addr
                    .parse()
                    .unwrap_or_else(|e| panic!("bad address {addr:?} in {line:?}: {e}")));
            }
        }
    }

    /// Waits (up to `patience`) for a line of stderr containing every one
    /// of `needles`, and returns it.
    pub async fn wait_for_line(&mut self, needles: &[&str], patience: Duration) -> String {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) if needles.iter().all(|n| line.contains(n)) => return line,
                Ok(Some(_)) => {}
                Ok(None) => panic!("exited without logging {needles:?}:\n{}", self.log()),
                Err(_) => panic!(
                    "no line with {needles:?} within {patience:?}:\n{}",
                    self.log()
                ),
            }
        }
    }

    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Waits for the process to exit and for the end of its stderr, and
    /// returns its status.
    pub async fn exit(&mut self, patience: Duration) -> std::process::ExitStatus {
        let status = match tokio::time::timeout(patience, self.child.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => panic!("still running after {patience:?}:\n{}", self.log()),
        };
        let drained = tokio::time::timeout(patience, async {
            while self.lines.recv().await.is_some() {}
        });
        assert!(drained.await.is_ok(), "stderr still open after exit");
        status
    }
}

/// The state letter of process `pid` (`/proc/PID/stat`: `S` sleeping, `T`
/// stopped, `Z` a zombie...); `None` once it is gone.
pub fn proc_state(pid: u64) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// The resident memory of process `pid` (`VmRSS` in `/proc/PID/status`),
/// in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// A long-lived token from `concierge token issue`, on the store that
/// `store_args` name (`--data-dir DIR` or `--redis-url URL`).
pub async fn issue_token(store_args: &[&str], name: &str, role: &str) -> String {
    let mut args = vec!["token", "issue", "--local", "--name", name, "--role", role];
    args.extend_from_slice(store_args);
    let out = command(&args).output().await.expect("token issue runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// Revokes every token of `name` with `concierge token revoke --user`, on
/// the store that `store_args` name, as an admin would.
pub async fn revoke_user(store_args: &[&str], name: &str) {
    let mut args = vec!["token", "revoke", "--local", "--user", name];
    args.extend_from_slice(store_args);
    let out = command(&args).output().await.expect("token revoke runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `concierge agent` named `name` with `labels` (`role=web,dc=fra`) and the
/// token `token`, its work folder under `work`, no systemd.
pub fn agent(url: &str, token: &str, name: &str, labels: &str, work: &std::path::Path) -> Process {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir).expect("work dir");
    let mut cmd = command(&[
        "agent",
        "--url",
        url,
        "--name",
        name,
        "--label",
        labels,
        "--work-dir",
        dir.to_str().expect("utf-8"),
        "--systemd",
        "off",
    ]);
    cmd.env("CONCIERGE_AGENT_TOKEN", token);
    Process::spawn(cmd)
}

/// `concierge serve` on `bind` with the data folder `data_dir`: started
/// again on the address it reported, it is the same gateway restarted.
pub fn serve(bind: &str, data_dir: &str) -> Process {
    serve_with(bind, data_dir, &[])
}

/// [`serve`] with more flags.
pub fn serve_with(bind: &str, data_dir: &str, flags: &[&str]) -> Process {
    let mut cmd = command(&["serve", "--bind", bind, "--data-dir", data_dir]);
    cmd.args(flags);
    Process::spawn(cmd)
}

/// Creates an account with `concierge user add NAME --role ROLE
/// --password-stdin --local` on the store `store_args` name, as an admin
/// bootstrapping a gateway would.
pub async fn add_user(store_args: &[&str], name: &str, role: &str, password: &str) {
    let mut args = vec![
        "user",
        "add",
        name,
        "--role",
        role,
        "--password-stdin",
        "--local",
    ];
    args.extend_from_slice(store_args);
    let (code, _, stderr) = fed(&mut command(&args), &format!("{password}\n")).await;
    assert_eq!(code, 0, "{stderr}");
}

/// The binary with `args`, as a person runs it whose config folder is
/// `home` (HOME and XDG_CONFIG_HOME): its contexts are `home`'s alone, so
/// tests never touch the real config folder nor each other's.
pub fn as_person(home: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = command(args);
    cmd.env("HOME", home).env("XDG_CONFIG_HOME", home);
    cmd
}

/// `concierge login URL USER --password-stdin [FLAGS]` as the person of
/// [`as_person`]: its exit code, stdout and stderr.
pub async fn login(
    home: &std::path::Path,
    url: &str,
    user: &str,
    password: &str,
    flags: &[&str],
) -> (i32, String, String) {
    let mut cmd = as_person(home, &["login", url, user, "--password-stdin"]);
    cmd.args(flags);
    fed(&mut cmd, &format!("{password}\n")).await
}

/// Runs `cmd` as [`outcome`] does, with `input` on its standard input.
pub async fn fed(cmd: &mut Command, input: &str) -> (i32, String, String) {
    use tokio::io::AsyncWriteExt;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the binary starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin
        .write_all(input.as_bytes())
        .await
        .expect("input written");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output()).await;
    ended(cmd, out)
}

/// The JSON lines `child` prints on its (piped) stdout, as they come; the
/// channel ends when the child's stdout does.
pub fn json_lines(child: &mut Child) -> tokio::sync::mpsc::UnboundedReceiver<serde_json::Value> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(value) = serde_json::from_str(&line) {
                let _ = tx.send(value);
            }
        }
    });
    rx
}

/// `concierge ctl --json ARGS` at `url` with `token` (see [`ctl`]): its
/// exit code and the last JSON document it printed.
pub async fn ctl_json(url: &str, token: &str, args: &[&str]) -> (i32, serde_json::Value) {
    last_json(ctl(url, token).arg("--json").args(args)).await
}

/// Runs `cmd` (a `concierge ctl --json ...`) to its end, as [`outcome`]:
/// its exit code and the last JSON document it printed.
pub async fn last_json(cmd: &mut Command) -> (i32, serde_json::Value) {
    let (code, stdout, stderr) = outcome(cmd).await;
    let last = stdout.lines().last().unwrap_or_default();
    let value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("{cmd:?} printed no JSON ({e}): {stdout} {stderr}"));
    (code, value)
}
