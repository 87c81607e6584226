//! Real WireGuard tunnels between Linux network namespaces, for tests of the
//! gateway's VPN actor: a gateway in one namespace and an agent in another see
//! each other only over a veth pair and, once configured, over a WireGuard
//! interface, as two hosts would.
//!
//! The machines have no WireGuard kernel module, so each interface is a
//! userspace one, run by `boringtun-cli` in the foreground inside its
//! namespace; `wg` and the gateway reach it through its UAPI socket
//! `/var/run/wireguard/IF.sock`. That folder is shared by every namespace,
//! so interface names come from [`unique_ifname`]; namespace names and veth
//! addresses are made unique per process and call as well, so that tests run
//! in parallel (nextest) never meet. Needs root, `ip` (iproute2), `wg`
//! (wireguard-tools), `boringtun-cli` and `/dev/net/tun`; `scripts/test`
//! installs the tools. A missing tool fails the test with its name.
//!
//! Everything is removed on drop, also when a test panics: a [`WgDevice`]
//! stops its boringtun and removes its socket, a [`NetNs`] kills whatever
//! still runs in it and deletes itself (and with it its end of the veth pair).
//! What a test process killed outright leaves (namespaces, boringtun
//! processes, sockets) is swept by the first [`NetNs::new`] of a later one.
//!
//! A gateway driving an interface through `wireguard-control` should find
//! it made by [`WgDevice::start`]: for an interface without a socket, that
//! crate's userspace backend launches `$WG_USERSPACE_IMPLEMENTATION`
//! (wireguard-go by default) itself, daemonized, which this harness does not
//! track.
//!
//! Note: boringtun reports `last_handshake_time_sec` as the seconds SINCE the
//! last handshake, not as a time since the epoch like the kernel does; see
//! [`PeerStats::since_handshake`].

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The folder of the UAPI sockets, shared by all namespaces.
pub const UAPI_DIR: &str = "/var/run/wireguard";

/// The name of the veth end in each namespace of a [`Pair`]; names are per
/// namespace, so every pair can use the same one.
pub const VETH: &str = "veth0";

/// The prefix length of the veth addresses of a [`Pair`].
pub const VETH_PREFIX: u8 = 30;

/// How long boringtun may take to create its interface and socket.
const START_PATIENCE: Duration = Duration::from_secs(10);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A number never handed out twice in this process.
fn next_id() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// How to install a tool the harness runs.
fn install_hint(program: &str) -> &'static str {
    match program {
        "boringtun-cli" => "cargo install --locked boringtun-cli",
        "wg" => "apt-get install --no-install-recommends wireguard-tools",
        "ip" => "apt-get install iproute2",
        "ping" => "apt-get install iputils-ping",
        "python3" => "apt-get install python3",
        _ => "install it",
    }
}

/// Panics, naming `program` and how to install it, unless it is on PATH.
/// Run before anything goes through `ip netns exec`, whose own complaint
/// about a missing program is easy to misread.
pub fn require(program: &str) {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program)).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    });
    assert!(
        found,
        "`{program}` is not installed (not on PATH); the network namespace tests need it: \
         {} (scripts/test installs it)",
        install_hint(program)
    );
}

/// Runs `cmd` to its end and returns its stdout; panics with its stderr if
/// it cannot start or fails.
pub fn run(cmd: &mut StdCommand) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        if unsafe { libc::geteuid() } != 0 {
            " (network namespaces need root)"
        } else {
            ""
        }
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip ARGS`, quietly, for clean-up in drops: never panics.
fn ip_quiet(args: &[&str]) {
    let _ = StdCommand::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Keeps ASCII letters and digits of `tag`, at most `max` of them.
fn clean_tag(tag: &str, max: usize) -> String {
    tag.chars()
        .filter(char::is_ascii_alphanumeric)
        .take(max)
        .collect()
}

/// An interface name (at most 15 bytes, the kernel's limit) that no other
/// call, in this process or any other running at the same time, returns:
/// up to 4 letters or digits of `tag`, then the pid and a per-process
/// counter in hex, `-`-separated (`wga-1f2e3-0`). Read from the right, the
/// two numbers are unambiguous whatever the tag.
pub fn unique_ifname(tag: &str) -> String {
    let n = next_id();
    assert!(n < 0x1000, "more than 4096 interface names in one process");
    let name = format!("{}-{:x}-{n:x}", clean_tag(tag, 4), std::process::id());
    assert!(name.len() <= 15, "interface name {name:?} is too long");
    name
}

/// A network namespace of its own, with `lo` up; deleted on drop, after
/// whatever still runs in it is killed.
pub struct NetNs {
    pub name: String,
    /// UAPI sockets of the boringtun interfaces started in it, removed on
    /// drop in case boringtun was killed before it could remove them.
    sockets: Mutex<Vec<PathBuf>>,
}

impl NetNs {
    /// A new namespace named `ct-PID-N-TAG`.
    pub fn new(tag: &str) -> NetNs {
        require("ip");
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(sweep_leftovers);
        let name = format!(
            "ct-{}-{}-{}",
            std::process::id(),
            next_id(),
            clean_tag(tag, 16)
        );
        // A namespace of this name is left over from a killed process that had
        // our pid: nothing uses it.
        if Path::new("/run/netns").join(&name).exists() {
            ip_quiet(&["netns", "delete", &name]);
        }
        run(StdCommand::new("ip").args(["netns", "add", &name]));
        let ns = NetNs {
            name,
            sockets: Mutex::new(Vec::new()),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Two namespaces joined by a veth pair ([`VETH`] in each, up), with
    /// addresses `.1` (in `a`) and `.2` (in `b`) of a /30 in 10.250.0.0/16.
    /// The namespaces isolate the addresses anyway; they are spread by pid
    /// and counter so that they also stay apart if a test links a namespace
    /// to the host.
    pub fn pair(tag: &str) -> Pair {
        let a = NetNs::new(&format!("{tag}a"));
        let b = NetNs::new(&format!("{tag}b"));
        let block = (std::process::id().wrapping_mul(61).wrapping_add(next_id())) % 16384;
        let base = u32::from(Ipv4Addr::new(10, 250, 0, 0)) + block * 4;
        let (a_addr, b_addr) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        a.ip(&[
            "link", "add", VETH, "type", "veth", "peer", "name", VETH, "netns", &b.name,
        ]);
        for (ns, addr) in [(&a, a_addr), (&b, b_addr)] {
            ns.ip(&["addr", "add", &format!("{addr}/{VETH_PREFIX}"), "dev", VETH]);
            ns.ip(&["link", "set", VETH, "up"]);
        }
        Pair {
            a,
            b,
            a_addr,
            b_addr,
        }
    }

    /// `ip -n NAME ARGS`; returns its stdout, panics with its stderr.
    pub fn ip(&self, args: &[&str]) -> String {
        run(StdCommand::new("ip").args(["-n", &self.name]).args(args))
    }

    /// `program` run inside the namespace (`ip netns exec NAME program`),
    /// stdin null, killed on drop. `ip` execs `program`, so the child's pid
    /// is the program's.
    pub fn command(&self, program: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::from(self.std_command(program));
        cmd.kill_on_drop(true);
        cmd
    }

    /// The same as [`NetNs::command`] for std (not killed on drop: the
    /// namespace's drop kills it).
    pub fn std_command(&self, program: &str) -> StdCommand {
        require(program);
        let mut cmd = StdCommand::new("ip");
        cmd.args(["netns", "exec", &self.name, program])
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `program ARGS` inside the namespace to its end; returns its
    /// stdout, panics with its stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        run(self.std_command(program).args(args))
    }

    /// Runs `f` on a thread of its own that has joined the namespace, and
    /// returns what it returns. Sockets it creates stay in the namespace for
    /// their whole life, whichever thread uses them later (a
    /// `std::net::TcpStream` can go to `tokio::net::TcpStream::from_std`),
    /// and threads it spawns start in the namespace too (an in-process
    /// gateway can be started there).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = Path::new("/run/netns").join(&self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = std::fs::File::open(&path)
                        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
                    let rc = unsafe {
                        libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET)
                    };
                    assert_eq!(
                        rc,
                        0,
                        "setns into {}: {}",
                        self.name,
                        std::io::Error::last_os_error()
                    );
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// The pids of the processes in the namespace.
    pub fn pids(&self) -> Vec<i32> {
        let out = StdCommand::new("ip")
            .args(["netns", "pids", &self.name])
            .stderr(Stdio::null())
            .output();
        out.map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect()
        })
        .unwrap_or_default()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        for pid in self.pids() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Ok(sockets) = self.sockets.lock() {
            for socket in sockets.iter() {
                let _ = std::fs::remove_file(socket);
            }
        }
        ip_quiet(&["netns", "delete", &self.name]);
    }
}

/// Whether process `pid` is alive.
fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Deletes what test processes that are gone left behind: namespaces
/// `ct-PID-...` (killing what still runs in them) and UAPI sockets
/// `TAG-PIDHEX-N.sock` that nothing answers on.
fn sweep_leftovers() {
    let entries = |dir: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|dir| {
                dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    for name in entries("/run/netns") {
        let pid = name
            .strip_prefix("ct-")
            .and_then(|rest| rest.split('-').next());
        if pid
            .and_then(|pid| pid.parse().ok())
            .is_some_and(|pid| !alive(pid))
        {
            drop(NetNs {
                name,
                sockets: Mutex::new(Vec::new()),
            });
        }
    }
    for file in entries(UAPI_DIR) {
        let Some(ifname) = file.strip_suffix(".sock") else {
            continue;
        };
        let pid = ifname
            .rsplit('-')
            .nth(1)
            .and_then(|pid| u32::from_str_radix(pid, 16).ok());
        let path = Path::new(UAPI_DIR).join(&file);
        if pid.is_some_and(|pid| !alive(pid)) && UnixStream::connect(&path).is_err() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Two namespaces joined by a veth pair; see [`NetNs::pair`].
pub struct Pair {
    pub a: NetNs,
    pub b: NetNs,
    /// The address of [`VETH`] in `a`.
    pub a_addr: Ipv4Addr,
    /// The address of [`VETH`] in `b`.
    pub b_addr: Ipv4Addr,
}

/// A WireGuard key pair, base64 as `wg` writes it.
pub struct Keypair {
    pub private: String,
    pub public: String,
}

impl Keypair {
    /// A fresh pair from `wg genkey` and `wg pubkey`.
    pub fn generate() -> Keypair {
        require("wg");
        let private = run(StdCommand::new("wg").arg("genkey")).trim().to_owned();
        let mut child = StdCommand::new("wg")
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("wg pubkey starts");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin
            .write_all(private.as_bytes())
            .expect("write to wg pubkey");
        drop(stdin);
        let out = child.wait_with_output().expect("wg pubkey ends");
        assert!(out.status.success(), "wg pubkey failed: {}", out.status);
        let public = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Keypair { private, public }
    }
}

/// A userspace WireGuard interface: `boringtun-cli NAME --foreground` inside
/// a namespace, its log kept in a temporary file. On drop, boringtun is
/// stopped (SIGTERM, then SIGKILL) and its socket removed.
pub struct WgDevice {
    pub name: String,
    /// The namespace it is in.
    pub ns: String,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl WgDevice {
    /// Starts boringtun with an interface `name` (from [`unique_ifname`])
    /// in `ns` and waits for its UAPI socket. The interface is down and has
    /// no address, key or peer.
    pub fn start(ns: &NetNs, name: &str) -> WgDevice {
        require("boringtun-cli");
        assert!(name.len() <= 15, "interface name {name:?} is over 15 bytes");
        assert!(
            Path::new("/dev/net/tun").exists(),
            "boringtun needs /dev/net/tun, which this machine lacks"
        );
        let socket = Path::new(UAPI_DIR).join(format!("{name}.sock"));
        // Left over from a killed boringtun: nothing answers on it.
        let _ = std::fs::remove_file(&socket);
        ns.sockets.lock().unwrap().push(socket.clone());
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("boringtun.log")).expect("log file");
        let child = ns
            .std_command("boringtun-cli")
            .args([name, "--foreground", "--disable-drop-privileges"])
            .args(["--verbosity", "info", "--threads", "2"])
            .env("WG_SUDO", "true")
            .env("NO_COLOR", "1")
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start boringtun-cli: {e}"));
        let mut device = WgDevice {
            name: name.to_owned(),
            ns: ns.name.clone(),
            child: Some(child),
            dir,
        };
        let deadline = Instant::now() + START_PATIENCE;
        while !socket.exists() {
            let child = device.child.as_mut().expect("running");
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "boringtun-cli {name} in {} exited ({status}) before making {}:\n{}",
                    device.ns,
                    socket.display(),
                    device.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "boringtun-cli {name} in {} made no {} within {START_PATIENCE:?}:\n{}",
                    device.ns,
                    socket.display(),
                    device.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        device
    }

    /// The UAPI socket.
    pub fn socket(&self) -> PathBuf {
        Path::new(UAPI_DIR).join(format!("{}.sock", self.name))
    }

    /// What boringtun has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("boringtun.log")).unwrap_or_default()
    }

    fn ip(&self, args: &[&str]) -> String {
        run(StdCommand::new("ip").args(["-n", &self.ns]).args(args))
    }

    /// `ip addr add CIDR dev NAME` in its namespace.
    pub fn add_addr(&self, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", &self.name]);
    }

    /// `ip link set NAME up` in its namespace.
    pub fn up(&self) {
        self.ip(&["link", "set", &self.name, "up"]);
    }

    /// `wg ARGS` in its namespace; returns its stdout.
    pub fn wg(&self, args: &[&str]) -> String {
        require("wg");
        run(StdCommand::new("ip")
            .args(["netns", "exec", &self.ns, "wg"])
            .args(args))
    }

    /// `wg set NAME ARGS`.
    pub fn set(&self, args: &[&str]) {
        let mut all = vec!["set", &self.name];
        all.extend_from_slice(args);
        self.wg(&all);
    }

    /// `wg set NAME private-key FILE listen-port PORT`, through a file of
    /// the device's temporary folder.
    pub fn set_key(&self, private: &str, listen_port: u16) {
        let file = self.dir.path().join("private.key");
        std::fs::write(&file, private).expect("write the private key");
        let port = listen_port.to_string();
        self.set(&[
            "private-key",
            file.to_str().expect("UTF-8 temp path"),
            "listen-port",
            &port,
        ]);
    }

    /// The lines of `wg show NAME dump`: the interface, then one per peer,
    /// split on tabs.
    pub fn dump(&self) -> Vec<Vec<String>> {
        self.wg(&["show", &self.name, "dump"])
            .lines()
            .map(|line| line.split('\t').map(str::to_owned).collect())
            .collect()
    }

    /// The answer to UAPI `get=1`, `key=value` lines up to `errno=0`.
    pub fn uapi_get(&self) -> String {
        let socket = self.socket();
        let mut stream = UnixStream::connect(&socket)
            .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", socket.display()));
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
        stream.write_all(b"get=1\n\n").expect("UAPI request");
        let mut answer = String::new();
        let mut buf = [0; 4096];
        while !answer.ends_with("\n\n") {
            let n = stream
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("UAPI answer from {}: {e}", socket.display()));
            if n == 0 {
                break;
            }
            answer.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(
            answer.contains("errno=0\n"),
            "UAPI get on {} failed: {answer}",
            socket.display()
        );
        answer
    }

    /// The peers as the UAPI reports them.
    pub fn peers(&self) -> Vec<PeerStats> {
        let mut peers: Vec<PeerStats> = Vec::new();
        let mut handshake_sec = None;
        for line in self.uapi_get().lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if key == "public_key" {
                peers.push(PeerStats {
                    public_key_hex: value.to_owned(),
                    ..PeerStats::default()
                });
                continue;
            }
            let Some(peer) = peers.last_mut() else {
                continue;
            };
            let number = || value.parse::<u64>().unwrap_or(0);
            match key {
                "endpoint" => peer.endpoint = Some(value.to_owned()),
                "rx_bytes" => peer.rx_bytes = number(),
                "tx_bytes" => peer.tx_bytes = number(),
                "last_handshake_time_sec" => handshake_sec = Some(number()),
                "last_handshake_time_nsec" => {
                    peer.since_handshake = Some(Duration::new(
                        handshake_sec.take().unwrap_or(0),
                        number() as u32,
                    ))
                }
                _ => {}
            }
        }
        peers
    }
}

impl Drop for WgDevice {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM lets boringtun remove its socket and interface itself.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(2);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }
}

/// A peer of a [`WgDevice`], from the UAPI.
#[derive(Debug, Default, Clone)]
pub struct PeerStats {
    /// Hex, as the UAPI writes keys (`wg` shows them in base64).
    pub public_key_hex: String,
    pub endpoint: Option<String>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// `None` before the first handshake. boringtun reports the time SINCE
    /// the last handshake here (the kernel and wireguard-go report its time
    /// since the epoch, which `wg` and wireguard-control expect), so
    /// `latest-handshake` in `wg show IF dump` is a few seconds, and 0 (no
    /// handshake, to `wg`) within the first second after one.
    pub since_handshake: Option<Duration>,
}
