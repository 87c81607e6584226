//! The command line of `concierge ctl`: its flags and subcommands, as clap
//! reads them, each with a description and examples in its help.

use clap::{Args, Subcommand};

use super::error::exit_statuses;

/// The flags every `ctl` command shares, and the command.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  # Who is connected, and the services they publish
  concierge ctl clients
  concierge ctl services --json
  # Run a command on host1 and wait for it, as ssh would
  concierge ctl exec host1 --follow -- uname -a
  # Another gateway, with a token kept in a file
  CONCIERGE_TOKEN=$(cat alice.token) concierge ctl --url wss://gw.example.com/ws ps host1")]
pub struct CtlArgs {
    /// The gateway's WebSocket URL.
    #[arg(long, env = "CONCIERGE_URL", default_value = "ws://127.0.0.1:8080/ws")]
    pub(crate) url: String,
    /// The token to identify with [default: the one `concierge login` kept].
    #[arg(long, env = "CONCIERGE_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Print replies as JSON (the reply's `msg`; paged lists merged into one
    /// array), one document per line.
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
    #[command(after_help = "\
Examples:
  concierge ctl hosts
  # The web hosts in Frankfurt or Amsterdam that are connected now
  concierge ctl hosts 'role=web,dc in (fra,ams)' --online
  concierge ctl hosts 'web*' --json")]
    Hosts {
        /// Which hosts: names, globs, labels and facts (docs/PROTOCOL.md,
        /// "Target expressions") [default: all].
        target: Option<String>,
        /// Only the hosts connected now.
        #[arg(long)]
        online: bool,
    },
    /// Remove a host from the inventory (admin); it is listed again if it connects.
    #[command(after_help = "\
Examples:
  concierge ctl forget oldhost")]
    Forget {
        /// The host's name, as `ctl hosts` lists it.
        host: String,
    },
    /// The connected clients: name, user, roles, tags, uuid.
    #[command(after_help = "\
Examples:
  concierge ctl clients
  # The names of the connected agents
  concierge ctl clients --json | jq -r '.[] | select(.tags | index(\"agent\")) | .name'")]
    Clients,
    /// The services: name, owner, subscribers.
    #[command(after_help = "\
Examples:
  concierge ctl services
  concierge ctl services --json")]
    Services,
    /// Send a MESSAGE with JSON data to a client, a service or everyone.
    #[command(after_help = "\
Examples:
  concierge ctl send host1 '{\"command\": \"status\"}'
  concierge ctl send service:news '{\"headline\": \"hello, fleet\"}'
  concierge ctl send all '{\"notice\": \"maintenance at 18:00\"}'")]
    Send {
        /// Who gets it: a client's name, uuid:UUID, service:NAME or all.
        target: String,
        /// The MESSAGE's data, a JSON value.
        #[arg(value_name = "JSON")]
        data: String,
    },
    /// Send any request to a host's agent and print the reply as JSON.
    #[command(after_help = "\
Examples:
  concierge ctl request host1 obtain_user_usages
  concierge ctl request host1 view_running '{\"verb\": 1}'")]
    Request {
        /// The host's name, as `ctl clients` lists it.
        host: String,
        /// The request's name (`req`), e.g. view_running (docs/PROTOCOL.md, section 13).
        req: String,
        /// The request's `msg`, a JSON object.
        #[arg(default_value = "{}")]
        msg: String,
    },
    /// Start a process on a host; prints its proc id (--follow: streams its
    /// output and exits with its exit code).
    #[command(after_help = "\
Examples:
  # Start a process and leave it running; prints its proc id
  concierge ctl exec host1 -- sleep 600
  # Run one and wait for it, its output on this terminal
  concierge ctl exec host1 --follow -- sh -c 'echo hi; exit 3'
  # In a folder under the agent's work folder
  concierge ctl exec host1 --cwd logs --follow -- ls -l")]
    Exec {
        /// The host's name, as `ctl clients` lists it.
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
    #[command(after_help = "\
Examples:
  concierge ctl output host1 3
  # Keep printing until it exits, then exit as it did
  concierge ctl output host1 3 --follow")]
    Output {
        /// The host's name, as `ctl clients` lists it.
        host: String,
        /// The proc id `ctl exec` printed.
        proc_id: u32,
        /// Keep printing until it exits.
        #[arg(long)]
        follow: bool,
    },
    /// The processes the agent started that run (--all: every process).
    #[command(after_help = "\
Examples:
  concierge ctl ps host1
  concierge ctl ps host1 --all --json")]
    Ps {
        /// The host's name, as `ctl clients` lists it.
        host: String,
        /// Every process of the host, not only those the agent started.
        #[arg(long)]
        all: bool,
    },
    /// One process in detail.
    #[command(after_help = "\
Examples:
  concierge ctl proc host1 4242")]
    Proc {
        /// The host's name, as `ctl clients` lists it.
        host: String,
        /// The process id, as `ctl ps` lists it.
        pid: u32,
    },
    /// Send a signal to a process, under the agent's policy.
    #[command(after_help = "\
Examples:
  concierge ctl signal host1 4242 SIGTERM
  concierge ctl signal host1 4242 SIGKILL")]
    Signal {
        /// The host's name, as `ctl clients` lists it.
        host: String,
        /// The process id, as `ctl ps` lists it.
        pid: u32,
        /// SIGTERM, SIGKILL, SIGHUP, SIGINT, SIGSTOP, SIGCONT, SIGUSR1 or SIGUSR2.
        signal: String,
    },
    /// Stop a process (SIGSTOP).
    #[command(after_help = "\
Examples:
  concierge ctl pause host1 4242")]
    Pause {
        /// The host's name, as `ctl clients` lists it.
        host: String,
        /// The process id, as `ctl ps` lists it.
        pid: u32,
    },
    /// Continue a stopped process (SIGCONT).
    #[command(after_help = "\
Examples:
  concierge ctl resume host1 4242")]
    Resume {
        /// The host's name, as `ctl clients` lists it.
        host: String,
        /// The process id, as `ctl ps` lists it.
        pid: u32,
    },
    /// The host's systemd services.
    #[command(after_help = "\
Examples:
  concierge ctl units host1
  concierge ctl units host1 --json")]
    Units {
        /// The host's name, as `ctl clients` lists it.
        host: String,
    },
    /// Start, stop, restart, reload or show one systemd unit.
    #[command(after_help = "\
Examples:
  concierge ctl unit host1 status nginx.service
  concierge ctl unit host1 restart nginx.service")]
    Unit {
        /// The host's name, as `ctl clients` lists it.
        host: String,
        /// What to do with the unit.
        #[arg(value_parser = ["start", "stop", "restart", "reload", "status"])]
        action: String,
        /// The unit's name, as `ctl units` lists it.
        unit: String,
    },
    /// Live CPU, memory and disks of a host.
    #[command(after_help = "\
Examples:
  # Redraws every two seconds until Ctrl-C
  concierge ctl top host1
  concierge ctl top host1 --once --json")]
    Top {
        /// The host's name, as `ctl clients` lists it.
        host: String,
        /// Print one snapshot and exit.
        #[arg(long)]
        once: bool,
    },
    /// Disk usage of the agent's work folder and its processes' resources.
    #[command(after_help = "\
Examples:
  concierge ctl usage host1")]
    Usage {
        /// The host's name, as `ctl clients` lists it.
        host: String,
    },
    /// WireGuard: your config, the peers, revoking one.
    #[command(subcommand)]
    Vpn(VpnCommand),
    /// The agent's audit log (--follow: and what it records from now on).
    #[command(after_help = "\
Examples:
  concierge ctl audit host1 --limit 50
  # The last entries, then every new one until Ctrl-C
  concierge ctl audit host1 --follow")]
    Audit {
        /// The host's name, as `ctl clients` lists it.
        host: String,
        /// How many of the latest entries to print.
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// Then print every entry the agent records, until Ctrl-C.
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum VpnCommand {
    /// Print the WireGuard config of NAME (default: the token's client), as wg-quick reads it.
    #[command(after_help = "\
Examples:
  concierge ctl vpn conf > wg0.conf
  # Keep the private key on this host: the gateway fills in the rest
  concierge ctl vpn conf --public-key \"$(wg pubkey < private.key)\"
  # For a phone's WireGuard app
  concierge ctl vpn conf --qr")]
    Conf {
        /// Whose config [default: the token's client].
        name: Option<String>,
        /// Your own public key: the private key then never leaves your host.
        #[arg(long)]
        public_key: Option<String>,
        /// Show it as a QR code (for a phone's WireGuard app).
        #[arg(long)]
        qr: bool,
    },
    /// Every peer: addresses, latest handshake, bytes.
    #[command(after_help = "\
Examples:
  concierge ctl vpn peers
  concierge ctl vpn peers --json")]
    Peers,
    /// Remove a peer from the server and free its addresses (admin).
    #[command(after_help = "\
Examples:
  concierge ctl vpn revoke host1")]
    Revoke {
        /// The peer's name, as `ctl vpn peers` lists it.
        name: String,
    },
}

/// `ctl`'s command (the one clap derives from [`CtlArgs`]) with its exit
/// statuses at the end of its own and each subcommand's long help, after
/// their examples.
pub fn documented(ctl: clap::Command) -> clap::Command {
    let after = match ctl.get_after_help() {
        Some(examples) => format!("{examples}\n\n{}", exit_statuses()),
        None => exit_statuses(),
    };
    ctl.after_long_help(after).mut_subcommands(documented)
}
