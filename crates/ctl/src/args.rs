//! The command line of `concierge ctl`: its flags and subcommands, as clap
//! reads them, each with a description and examples in its help.

use clap::{ArgGroup, Args, Subcommand};

use super::error::exit_statuses;
use super::health::SortBy;
use concierge_protocol::jobs::{Amount, JobId};

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
    /// The gateway: http://HOST:PORT, ws://HOST:PORT/ws or HOST:PORT
    /// [default: the context's, else http://127.0.0.1:8080].
    #[arg(long, env = "CONCIERGE_URL")]
    pub(crate) url: Option<String>,
    /// The token to identify with [default: the context's].
    #[arg(long, env = "CONCIERGE_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// The context (from `concierge login`) to use [default: the current one].
    #[arg(long, env = "CONCIERGE_CONTEXT")]
    pub(crate) context: Option<String>,
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
  # The busiest first; the hosts that went away, and those never seen
  concierge ctl hosts --sort cpu
  concierge ctl hosts 'presence=offline' --sort last-seen
  concierge ctl hosts 'web*' --json")]
    Hosts {
        /// Which hosts: names, globs, labels and facts (docs/PROTOCOL.md,
        /// "Target expressions") [default: all].
        target: Option<String>,
        /// Only the hosts connected now.
        #[arg(long)]
        online: bool,
        /// The order: by name, or the highest CPU, load, memory or disk use
        /// first, or the most recently seen first (hosts without the figure
        /// last).
        #[arg(long, value_enum, default_value_t = SortBy::Name)]
        sort: SortBy,
    },
    /// A host's health over time (its summaries: CPU, load, memory, disk, VPN
    /// handshake age): a sparkline per figure, then the points in local time.
    #[command(after_help = "\
Examples:
  # The last hour
  concierge ctl history web1
  # The last day, in 15-minute averages
  concierge ctl history web1 --since 1d --step 15m
  # From 6 hours ago to 5 hours ago, as JSON
  concierge ctl history web1 --since 6h --until 5h --json")]
    History {
        /// The host's name, as `ctl hosts` lists it.
        host: String,
        /// From when: a duration back from now (30m, 6h, 7d) or a UTC time
        /// (2026-12-07T09:00:00Z) [default: 1h].
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// Until when, as --since [default: now].
        #[arg(long, value_name = "WHEN")]
        until: Option<String>,
        /// Average the points into steps this long (5m, 1h) [default: as
        /// stored, wider when the range holds more than 2,000 points].
        #[arg(long, value_name = "DUR")]
        step: Option<String>,
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
        /// Stream its output and exit with its exit code; Ctrl-C asks the agent to
        /// stop the process.
        #[arg(long)]
        follow: bool,
        /// With --follow: Ctrl-C leaves the process running.
        #[arg(long, requires = "follow")]
        detach: bool,
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
    /// Run a command on every host a target expression names, as a job the gateway keeps
    /// (or a unit action, or any agent request); shows its progress, then a summary.
    #[command(after_help = "\
Examples:
  # Every web host, its output grouped: hosts that printed the same are shown once
  concierge ctl run 'role=web' -- uptime
  # Ten at a time; stop sending it once 2 hosts failed
  concierge ctl run 'web*' --batch 10 --max-failures 2 -- sh -c 'apt-get -y upgrade'
  # One host first; the rest only if it went well; hosts offline waited for 5 minutes
  concierge ctl run 'db_1,db_2,db_3' --canary 1 --wait 5m -- systemctl is-active postgresql
  concierge ctl run 'role=web' --unit restart nginx.service
  concierge ctl run 'web*' --request '{\"req\": \"obtain_user_usages\", \"msg\": {}}'
  # Which hosts it would run on; nothing runs
  concierge ctl run 'dc in (fra,ams)' --dry-run -- true
  # Print the job's id and leave it running (ctl job ID shows it)
  concierge ctl run 'web*' --detach -- sleep 60
  concierge ctl run 'web*' --stream --json -- ls

Ctrl-C while it runs asks whether to cancel the job: `y` cancels it (the hosts not sent
it yet are cancelled, the running ones asked to stop) and shows the end; anything else
leaves it running and exits with 130 (`ctl job ID` shows it later). Without a terminal,
Ctrl-C or SIGTERM leaves it running and exits with 130 or 143.")]
    #[command(group(ArgGroup::new("what").required(true).args(["cmd", "unit", "request"])))]
    Run(RunArgs),
    /// The latest jobs, newest first: who ran what where, and how it went.
    #[command(after_help = "\
Examples:
  concierge ctl jobs
  concierge ctl jobs --limit 100 --json")]
    Jobs {
        /// How many of the latest jobs to list (at most 500).
        #[arg(long, default_value_t = 20)]
        limit: u64,
    },
    /// One job: its hosts (`job ID`), one host's output (`job ID --output HOST`),
    /// cancelling it (`job cancel ID`), running it again (`job rerun ID [--failed]`).
    #[command(
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true,
        after_help = "\
Examples:
  concierge ctl job 3f2a9c01b7e4
  concierge ctl job 3f2a9c01b7e4 --output web_1
  concierge ctl job cancel 3f2a9c01b7e4
  # Again, on the hosts where it did not succeed
  concierge ctl job rerun 3f2a9c01b7e4 --failed"
    )]
    Job(JobArgs),
    /// The alerts firing now and the latest events (--follow: then every event as it
    /// happens); `alerts rules`, `alerts set`, `alerts delete` read and edit the rules.
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "\
Examples:
  concierge ctl alerts
  # Every event as it happens, until Ctrl-C
  concierge ctl alerts --follow
  concierge ctl alerts rules
  # Admins: add or replace a rule, delete one
  concierge ctl alerts set web-cpu 'cpu > 90 for 5m' --target 'role=web'
  concierge ctl alerts set host-down 'offline for 2m'
  concierge ctl alerts delete web-cpu"
    )]
    Alerts(AlertsArgs),
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

/// `ctl run`: where, what, and how.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Which hosts: names, globs, labels and facts (docs/PROTOCOL.md, "Target
    /// expressions"), e.g. 'web*', 'a,b', 'role=web,!canary'.
    pub(crate) target: String,
    /// Only the hosts connected now (the others are left out, not counted offline).
    #[arg(long)]
    pub(crate) online: bool,
    /// How long to wait for a host that is offline (30s, 5m) [default: not at all:
    /// it is counted offline].
    #[arg(long, value_name = "DUR", value_parser = seconds)]
    pub(crate) wait: Option<u64>,
    /// At most this many hosts at once, or this share of them (10, 25%).
    #[arg(long, value_name = "N|P%")]
    pub(crate) batch: Option<Amount>,
    /// Once more hosts than this failed (or this share), the rest are skipped.
    #[arg(long, value_name = "N|P%")]
    pub(crate) max_failures: Option<Amount>,
    /// These many hosts first; if any of them fails, the rest are skipped.
    #[arg(long, value_name = "K")]
    pub(crate) canary: Option<u32>,
    /// How long each host may take (30s, 5m) before it is stopped [default: the
    /// agent's limit]. (`--timeout` is how long ctl waits for the gateway's answers.)
    #[arg(long, value_name = "DUR", value_parser = seconds)]
    pub(crate) host_timeout: Option<u64>,
    /// Print the output as it comes, each line prefixed with its host (then the
    /// summary, without the grouped outputs).
    #[arg(long)]
    pub(crate) stream: bool,
    /// Print the hosts the target names, connected or not, and run nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Print the job's id and exit: it runs on without ctl.
    #[arg(long)]
    pub(crate) detach: bool,
    /// A systemd unit action instead of a command: start, stop, restart or reload.
    #[arg(long, num_args = 2, value_names = ["ACTION", "UNIT"])]
    pub(crate) unit: Option<Vec<String>>,
    /// Any agent request instead of a command: '{"req": NAME, "msg": {...}}'
    /// (docs/PROTOCOL.md, section 13).
    #[arg(long, value_name = "JSON")]
    pub(crate) request: Option<String>,
    /// The program and its arguments (after --).
    #[arg(last = true)]
    pub(crate) cmd: Vec<String>,
}

/// `ctl alerts`: the alerts, or what to do with their rules.
#[derive(Debug, Args)]
pub struct AlertsArgs {
    #[command(subcommand)]
    pub(crate) action: Option<AlertsCommand>,
    /// How many of the latest events to list (at most 500).
    #[arg(long, default_value_t = 20)]
    pub(crate) limit: u64,
    /// Then print every event as it happens, until Ctrl-C.
    #[arg(long)]
    pub(crate) follow: bool,
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Every rule: the gateway's configuration's and those added with `alerts set`.
    #[command(after_help = "\
Examples:
  concierge ctl alerts rules
  concierge ctl alerts rules --json")]
    Rules,
    /// Add or replace a rule (admin; not one of the configuration's).
    #[command(after_help = "\
Examples:
  concierge ctl alerts set web-cpu 'cpu > 90 for 5m' --target 'role=web'
  concierge ctl alerts set disk-full 'disk >= 95'
  concierge ctl alerts set host-down 'offline for 2m'")]
    Set {
        /// The rule's name: a-z, 0-9, '-' and '_'.
        name: String,
        /// The condition: FIELD OP NUMBER [for DURATION] (FIELD: cpu, load, mem,
        /// disk, vpn_age; OP: >, >=, <, <=), or offline [for DURATION].
        when: String,
        /// Which hosts (a target expression, docs/PROTOCOL.md) [default: every host].
        #[arg(long)]
        target: Option<String>,
    },
    /// Delete a rule (admin; not one of the configuration's): its firing alerts resolve.
    #[command(after_help = "\
Examples:
  concierge ctl alerts delete web-cpu")]
    Delete {
        /// The rule's name, as `ctl alerts rules` lists it.
        name: String,
    },
}

/// `ctl job`: a job by its id, or what to do with one.
#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(subcommand)]
    pub(crate) action: Option<JobCommand>,
    /// The job's id, as `ctl run` and `ctl jobs` print it.
    #[arg(required = true)]
    pub(crate) id: Option<JobId>,
    /// Print this host's output and result instead of the table of hosts.
    #[arg(long, value_name = "HOST")]
    pub(crate) output: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Stop a job: hosts not sent it yet are cancelled, running ones asked to stop.
    #[command(after_help = "\
Examples:
  concierge ctl job cancel 3f2a9c01b7e4")]
    Cancel {
        /// The job's id, as `ctl run` and `ctl jobs` print it.
        id: JobId,
    },
    /// Run a job again, as `ctl run` would (same request, options and target).
    #[command(after_help = "\
Examples:
  concierge ctl job rerun 3f2a9c01b7e4
  # Only on the hosts where it did not succeed (their names become the target)
  concierge ctl job rerun 3f2a9c01b7e4 --failed --detach")]
    Rerun {
        /// The job's id, as `ctl run` and `ctl jobs` print it.
        id: JobId,
        /// Only the hosts where it did not succeed: `a,b,c` becomes the target.
        #[arg(long)]
        failed: bool,
        /// Print the new job's id and exit: it runs on without ctl.
        #[arg(long)]
        detach: bool,
    },
}

/// A duration as a person writes it (`30s`, `5m`, `1h 30m`, or seconds),
/// in whole seconds, at least one.
fn seconds(s: &str) -> Result<u64, String> {
    let duration = match s.trim().parse::<u64>() {
        Ok(secs) => std::time::Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s)
            .map_err(|_| format!("{s:?} is not a duration like 30s, 5m or 1h"))?,
    };
    match duration.as_secs() + u64::from(duration.subsec_nanos() > 0) {
        0 => Err("a duration of at least one second".into()),
        secs => Ok(secs),
    }
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

#[cfg(test)]
mod tests {
    use super::seconds;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(seconds("30s"), Ok(30));
        assert_eq!(seconds("5m"), Ok(300));
        assert_eq!(seconds("1h 30m"), Ok(5400));
        assert_eq!(seconds("45"), Ok(45));
        assert_eq!(seconds("1500ms"), Ok(2));
        assert!(seconds("0s").is_err() && seconds("soon").is_err());
    }
}
