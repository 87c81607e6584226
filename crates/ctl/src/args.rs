//! The command line of `concierge ctl`: its flags and subcommands, as clap
//! reads them.

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The gateway's WebSocket URL.
    #[arg(long, env = "CONCIERGE_URL", default_value = "ws://127.0.0.1:8080/ws")]
    pub(crate) url: String,
    /// The token to identify with [default: the one `concierge login` kept].
    #[arg(long, env = "CONCIERGE_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Print replies as JSON (the reply's `msg`), one document per line.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Seconds to wait for a reply.
    #[arg(long, default_value_t = 10, global = true)]
    pub(crate) timeout: u64,
    #[command(subcommand)]
    pub(crate) command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Every host of the inventory, connected or not (TARGET: a target
    /// expression, e.g. 'web*', 'a,b', 'role=web,dc in (fra,ams),!canary').
    Hosts {
        /// Which hosts: names, globs, labels and facts (docs/PROTOCOL.md,
        /// "Target expressions") [default: all].
        target: Option<String>,
        /// Only the hosts connected now.
        #[arg(long)]
        online: bool,
    },
    /// Remove a host from the inventory (admin); it is listed again if it connects.
    Forget { host: String },
    /// The connected clients.
    Clients,
    /// The services.
    Services,
    /// Send a MESSAGE: TARGET is a client name, uuid:UUID, service:NAME or all.
    Send {
        target: String,
        #[arg(value_name = "JSON")]
        data: String,
    },
    /// Send any request to a host's agent and print the reply.
    Request {
        host: String,
        req: String,
        /// The request's `msg`, a JSON object.
        #[arg(default_value = "{}")]
        msg: String,
    },
    /// Start a process on a host; prints its proc id.
    Exec {
        host: String,
        /// Stream its output and exit with its exit code.
        #[arg(long)]
        follow: bool,
        /// The folder to start it in, a relative one under the agent's work folder
        /// [default: the work folder].
        #[arg(long)]
        cwd: Option<String>,
        /// The program and its arguments (after --).
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// The output of a process the agent started.
    Output {
        host: String,
        proc_id: u32,
        /// Keep printing until it exits.
        #[arg(long)]
        follow: bool,
    },
    /// The processes the agent started that run (--all: every process).
    Ps {
        host: String,
        #[arg(long)]
        all: bool,
    },
    /// One process in detail.
    Proc { host: String, pid: u32 },
    /// Send a signal (SIGTERM, SIGKILL, SIGHUP, SIGINT, SIGSTOP, SIGCONT, SIGUSR1, SIGUSR2).
    Signal {
        host: String,
        pid: u32,
        signal: String,
    },
    /// Stop a process (SIGSTOP).
    Pause { host: String, pid: u32 },
    /// Continue a stopped process (SIGCONT).
    Resume { host: String, pid: u32 },
    /// The host's systemd services.
    Units { host: String },
    /// Start, stop, restart, reload or show one systemd unit.
    Unit {
        host: String,
        #[arg(value_parser = ["start", "stop", "restart", "reload", "status"])]
        action: String,
        unit: String,
    },
    /// Live CPU, memory and disks of a host.
    Top {
        host: String,
        /// Print one snapshot and exit.
        #[arg(long)]
        once: bool,
    },
    /// Disk usage of the agent's work folder and its processes' resources.
    Usage { host: String },
    /// WireGuard: your config, the peers, revoking one.
    #[command(subcommand)]
    Vpn(VpnCommand),
    /// The agent's audit log (--follow: and what it records from now on).
    Audit {
        host: String,
        #[arg(long, default_value_t = 20)]
        limit: u64,
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum VpnCommand {
    /// Print the WireGuard config of NAME (default: the token's client), as wg-quick reads it.
    Conf {
        name: Option<String>,
        /// Your own public key: the private key then never leaves your host.
        #[arg(long)]
        public_key: Option<String>,
        /// Show it as a QR code (for a phone's WireGuard app).
        #[arg(long)]
        qr: bool,
    },
    /// Every peer: addresses, latest handshake, bytes.
    Peers,
    /// Remove a peer from the server and free its addresses (admin).
    Revoke { name: String },
}
