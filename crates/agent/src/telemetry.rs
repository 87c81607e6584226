//! The host's vital statistics, sampled by one actor on an interval.
//!
//! One `sysinfo` [`System`] is refreshed every `telemetry_interval_ms`, not
//! per request: CPU usage is a difference between two samples, so a request
//! answered from the last two ticks is both cheaper and more meaningful than
//! one that samples twice while the requester waits. Each tick's snapshot
//! (seed 003's `tele_data`, every stat type) goes out on a [`watch`]
//! channel; the connection publishes it on `telemetry_<host>` while that
//! service has subscribers, and `telemetry` requests read the latest one.
//! Process questions go to the same actor, which owns the process list.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use procfs::Current;
use serde_json::{json, Map, Value};
use sysinfo::{
    Disks, Pid, ProcessRefreshKind, ProcessesToUpdate, System, ThreadKind, UpdateKind, Users,
};
use tokio::sync::watch;

/// The stat types of seed 003, in its order.
pub const STAT_TYPES: [&str; 4] = ["ttl_cpu_usage", "ttl_mem_usage", "disk_util", "vpn_status"];

/// File systems that are not storage and that `sysinfo` lists: views of
/// the kernel's state (lxcfs), images mounted read-only and always full
/// (snaps, erofs), and desktop sessions' virtual folders.
const PSEUDO: [&str; 6] = [
    "fuse.lxcfs",
    "fuse.snapfuse",
    "fuse.gvfsd-fuse",
    "fuse.portal",
    "erofs",
    "ramfs",
];

/// A snapshot: every stat type by name.
pub type Snapshot = Arc<Map<String, Value>>;

pub struct Telemetry {
    system: System,
    disks: Disks,
    /// The host's users, to name a process's uid; read again when a
    /// process has a uid it does not know.
    users: Users,
    interval: Duration,
    snapshots: watch::Sender<Snapshot>,
    vpn: Option<Arc<super::vpn::VpnClient>>,
}

impl Telemetry {
    /// Starts the sampler; the receiver holds the latest snapshot.
    pub fn start(
        interval: Duration,
        vpn: Option<Arc<super::vpn::VpnClient>>,
    ) -> Result<(Addr<Telemetry>, watch::Receiver<Snapshot>), String> {
        let system =
            System::new().map_err(|e| format!("cannot read this host's statistics: {e}"))?;
        let disks = Disks::new_with_refreshed_list()
            .map_err(|e| format!("cannot list this host's disks: {e}"))?;
        let users = Users::new_with_refreshed_list()
            .map_err(|e| format!("cannot read the user list: {e}"))?;
        let (snapshots, receiver) = watch::channel(Snapshot::default());
        let actor = Telemetry {
            system,
            disks,
            users,
            interval,
            snapshots,
            vpn,
        };
        Ok((actor.start(), receiver))
    }

    fn refresh_processes(&mut self) {
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing()
                .with_cpu()
                .with_memory()
                .with_user(UpdateKind::OnlyIfNotSet)
                .with_cmd(UpdateKind::OnlyIfNotSet),
        );
    }

    /// Reads the user list again when a process runs as a uid it lacks
    /// (a user added since).
    fn refresh_users(&mut self) {
        let unknown = self
            .system
            .processes()
            .values()
            .filter_map(|p| p.user_id())
            .any(|uid| self.users.get_user_by_id(uid).is_none());
        if unknown {
            self.users.refresh();
        }
    }

    fn sample(&mut self) {
        self.system.refresh_cpu_usage();
        self.refresh_processes();
        self.disks.refresh(true);
        let mut stats = Map::new();
        stats.insert("ttl_cpu_usage".into(), self.cpu());
        stats.insert("ttl_mem_usage".into(), memory());
        stats.insert("disk_util".into(), self.disk_util());
        let vpn = match &self.vpn {
            Some(vpn) => vpn.status(),
            None => no_vpn(),
        };
        stats.insert("vpn_status".into(), vpn);
        self.snapshots.send_replace(Arc::new(stats));
    }

    /// Each core's usage over the last interval, 0 to 1.
    fn cpu(&self) -> Value {
        self.system
            .cpus()
            .iter()
            .map(|c| {
                let share = f64::from(c.usage()) / 100.0;
                Value::from((share.clamp(0.0, 1.0) * 1000.0).round() / 1000.0)
            })
            .collect()
    }

    /// `{device: [bytes used, bytes free]}`, one entry per device (its first
    /// mount), real file systems only: `sysinfo` leaves out the kernel's
    /// pseudo ones (proc, sysfs, cgroup, tmpfs, squashfs…); here also those
    /// of no size and the userspace ones that are not storage
    /// ([`PSEUDO`]), which would read as empty or as full.
    fn disk_util(&self) -> Value {
        let mut out = Map::new();
        let real = self.disks.iter().filter(|disk| {
            let fs = disk.file_system().to_string_lossy();
            disk.total_space() > 0 && !PSEUDO.contains(&fs.as_ref())
        });
        for disk in real {
            let name = disk.name().to_string_lossy().into_owned();
            let name = if name.is_empty() {
                disk.mount_point().display().to_string()
            } else {
                name
            };
            let total = disk.total_space();
            let free = disk.available_space();
            out.entry(name)
                .or_insert_with(|| json!([total.saturating_sub(free), free]));
        }
        Value::Object(out)
    }

    /// One process as `obtain_process_info` shows it (without `safe_kill`,
    /// which is the policy's to say).
    fn process(&self, pid: u32) -> Option<Value> {
        let process = self.system.process(Pid::from_u32(pid))?;
        let proc_fs = procfs::process::Process::new(pid as i32).ok();
        let stat = proc_fs.as_ref().and_then(|p| p.stat().ok());
        let status = proc_fs.as_ref().and_then(|p| p.status().ok());
        let ticks = procfs::ticks_per_second().max(1) as f64;
        let kib = |v: Option<u64>| v.map(|kb| kb * 1024);
        Some(json!({
            "pid": pid,
            "name": stat.as_ref().map_or_else(|| process.name().to_string_lossy().into_owned(), |s| s.comm.clone()),
            "cmd": process.cmd().iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>(),
            "user": process.user_id().map(|uid| **uid),
            "user_name": process.user_id().and_then(|uid| self.users.get_user_by_id(uid)).map(|u| u.name()),
            "cpu_usage": (f64::from(process.cpu_usage()) * 10.0).round() / 10.0,
            "cpu_time": {
                "user": stat.as_ref().map(|s| s.utime as f64 / ticks),
                "system": stat.as_ref().map(|s| s.stime as f64 / ticks),
            },
            "status": match (&proc_fs, &stat) {
                (Some(p), Some(s)) => state_of(p, s),
                _ => "unknown",
            },
            "memory": {
                "rss": kib(status.as_ref().and_then(|s| s.vmrss)).unwrap_or(process.memory()),
                "swap": kib(status.as_ref().and_then(|s| s.vmswap)).unwrap_or(0),
            },
            "started": process.start_time(),
        }))
    }

    /// `pid` and every process descended from it.
    fn family(&self, pid: u32) -> Vec<u32> {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (child, process) in self.system.processes() {
            if let Some(parent) = process.parent() {
                children
                    .entry(parent.as_u32())
                    .or_default()
                    .push(child.as_u32());
            }
        }
        let mut out = vec![pid];
        let mut i = 0;
        while i < out.len() {
            if let Some(kids) = children.get(&out[i]) {
                for kid in kids {
                    if !out.contains(kid) {
                        out.push(*kid);
                    }
                }
            }
            i += 1;
        }
        out
    }
}

impl Actor for Telemetry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Usage is a difference: a first snapshot a moment after the
        // baseline, rather than zeros until the first interval ends.
        self.system.refresh_cpu_usage();
        self.refresh_processes();
        ctx.run_later(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL, |this, _| {
            this.sample()
        });
        ctx.run_interval(self.interval, |this, _| this.sample());
    }
}

/// `obtain_process_info` of one pid; `None` when there is no such process.
#[derive(Message)]
#[rtype(result = "Option<Value>")]
pub struct ProcessInfo(pub u32);

impl Handler<ProcessInfo> for Telemetry {
    type Result = Option<Value>;

    fn handle(&mut self, ProcessInfo(pid): ProcessInfo, _: &mut Context<Self>) -> Option<Value> {
        // A process younger than the last tick is not in the list yet.
        self.system
            .refresh_processes(ProcessesToUpdate::Some(&[Pid::from_u32(pid)]), true);
        self.refresh_users();
        self.process(pid)
    }
}

/// Every process, as `obtain_process_info` shows each.
#[derive(Message)]
#[rtype(result = "Vec<Value>")]
pub struct AllProcesses;

impl Handler<AllProcesses> for Telemetry {
    type Result = MessageResult<AllProcesses>;

    fn handle(&mut self, _: AllProcesses, _: &mut Context<Self>) -> Self::Result {
        // Every process now, not as of the last tick (CPU usage still
        // spans the time since then).
        self.refresh_processes();
        self.refresh_users();
        // Processes, not the threads sysinfo also lists as tasks of them.
        let mut pids: Vec<u32> = self
            .system
            .processes()
            .iter()
            .filter(|(_, p)| p.thread_kind() != Some(ThreadKind::Userland))
            .map(|(pid, _)| pid.as_u32())
            .collect();
        pids.sort_unstable();
        MessageResult(
            pids.into_iter()
                .filter_map(|pid| self.process(pid))
                .collect(),
        )
    }
}

/// seed 003's `view_running` entries for the agent's running processes:
/// `(pid, command line)` each.
#[derive(Message)]
#[rtype(result = "Vec<Value>")]
pub struct Running(pub Vec<(u32, String)>);

impl Handler<Running> for Telemetry {
    type Result = MessageResult<Running>;

    fn handle(&mut self, Running(procs): Running, _: &mut Context<Self>) -> Self::Result {
        let pids: Vec<Pid> = procs.iter().map(|(pid, _)| Pid::from_u32(*pid)).collect();
        self.system
            .refresh_processes(ProcessesToUpdate::Some(&pids), false);
        let ports = listening_sockets();
        let mut out = Vec::new();
        for (pid, reqc) in procs {
            let Some(process) = self.system.process(Pid::from_u32(pid)) else {
                continue;
            };
            // The name now, not when sysinfo first saw the pid: a wrapper
            // that exec()s its program changes it.
            let title = procfs::process::Process::new(pid as i32)
                .and_then(|p| p.stat())
                .map(|s| s.comm)
                .unwrap_or_else(|_| process.name().to_string_lossy().into_owned());
            let family = self.family(pid);
            let (mut cpu, mut rss) = (0.0f64, 0u64);
            let mut port_util = Vec::new();
            for member in &family {
                if let Some(p) = self.system.process(Pid::from_u32(*member)) {
                    cpu += f64::from(p.cpu_usage());
                    rss += p.memory();
                }
                for port in ports_of(*member, &ports) {
                    if !port_util.contains(&port) {
                        port_util.push(port);
                    }
                }
            }
            port_util.sort_unstable();
            out.push(json!({
                "title": title,
                "pid": pid,
                "cpu_util": (cpu * 10.0).round() / 10.0,
                // MB (10^6 bytes, seed 003's unit), to a tenth.
                "mem_util": (rss as f64 / 100_000.0).round() / 10.0,
                "reqc": reqc,
                "port_util": port_util,
            }));
        }
        MessageResult(out)
    }
}

/// Socket inode → local port, for TCP sockets listening and UDP sockets
/// bound, IPv4 and IPv6.
fn listening_sockets() -> HashMap<u64, u16> {
    use procfs::net::TcpState;
    let mut out = HashMap::new();
    for table in [procfs::net::tcp(), procfs::net::tcp6()]
        .into_iter()
        .flatten()
    {
        for entry in table {
            if entry.state == TcpState::Listen {
                out.insert(entry.inode, entry.local_address.port());
            }
        }
    }
    for table in [procfs::net::udp(), procfs::net::udp6()]
        .into_iter()
        .flatten()
    {
        for entry in table {
            if entry.remote_address.port() == 0 && entry.local_address.port() != 0 {
                out.insert(entry.inode, entry.local_address.port());
            }
        }
    }
    out
}

/// The ports among `sockets` that process `pid` holds open.
fn ports_of(pid: u32, sockets: &HashMap<u64, u16>) -> HashSet<u16> {
    let Ok(process) = procfs::process::Process::new(pid as i32) else {
        return HashSet::new();
    };
    let Ok(fds) = process.fd() else {
        return HashSet::new();
    };
    fds.flatten()
        .filter_map(|fd| match fd.target {
            procfs::process::FDTarget::Socket(inode) => sockets.get(&inode).copied(),
            _ => None,
        })
        .collect()
}

/// `[used, buff/cache, free]` in bytes, as `free(1)` counts them.
fn memory() -> Value {
    match procfs::Meminfo::current() {
        Ok(m) => {
            let cache = m.buffers + m.cached + m.s_reclaimable.unwrap_or(0);
            let used = m.mem_total.saturating_sub(m.mem_free).saturating_sub(cache);
            json!([used, cache, m.mem_free])
        }
        Err(_) => Value::Null,
    }
}

/// The tunnel's state on a host without `--vpn`: a value that says so
/// rather than an empty object.
fn no_vpn() -> Value {
    json!({
        "ifname": null,
        "conn_type": null,
        "conn_host": null,
        "conn_ip4": null,
        "conn_ip6": null,
        "up": false,
        "desc": "no VPN on this host (the agent runs without --vpn)",
    })
}

/// A process's state now, in words (`unknown` when it cannot be read).
pub fn status_of(pid: u32) -> &'static str {
    let Ok(process) = procfs::process::Process::new(pid as i32) else {
        return "unknown";
    };
    process
        .stat()
        .map_or("unknown", |stat| state_of(&process, &stat))
}

/// A process's state in words: its main thread's, except that a process
/// with any thread on a CPU or waiting for one is `running` (`ps` shows
/// the main thread alone, which a program that works in other threads
/// keeps asleep: it looked idle while it used a core).
fn state_of(process: &procfs::process::Process, stat: &procfs::process::Stat) -> &'static str {
    if stat.state != 'R' && stat.num_threads > 1 && matches!(stat.state, 'S' | 'D' | 'I') {
        let any_running = process.tasks().is_ok_and(|mut tasks| {
            tasks.any(|task| task.and_then(|t| t.stat()).is_ok_and(|s| s.state == 'R'))
        });
        if any_running {
            return "running";
        }
    }
    state_name(stat.state)
}

/// The `/proc/PID/stat` state letter in words.
fn state_name(state: char) -> &'static str {
    match state {
        'R' => "running",
        'S' => "sleeping",
        'D' => "disk_sleep",
        'T' => "stopped",
        't' => "tracing_stop",
        'Z' => "zombie",
        'X' | 'x' => "dead",
        'I' => "idle",
        'P' => "parked",
        'W' => "waking",
        'K' => "wakekill",
        _ => "unknown",
    }
}
