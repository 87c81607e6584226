//! `concierge bench`: a load generator that speaks the concierge protocol
//! to a running gateway (or to several, or to a cluster's load balancer) and
//! reports how fast and how big it is.
//!
//! Scenarios:
//! - `connect`: N clients connect and IDENTIFY; connects/s, failures, and the
//!   gateway's RSS per identified connection.
//! - `fanout`: one owner, a service with N subscribers, M messages (or K
//!   owners and services sharing the N subscribers, all sending at once).
//! - `direct`: P pairs exchanging M messages each way by NAME.
//! - `cluster <scenario>`: the same, requiring two gateway URLs or more;
//!   senders and receivers are placed on different gateways.
//! - `jobs`: N simulated agents, one job run on all of them (`job_create`),
//!   followed to the end; how long to the first and the last result, what
//!   the gateway spends per 1,000 hosts, and whether every host ended
//!   final, run once, when a share of the agents drop their sockets
//!   meanwhile.
//! - `summaries`: N simulated agents each sending a health summary every
//!   interval; summaries accepted per second, refusals, the gateway's CPU
//!   and memory, the health store's writes and bytes per host per day.
//!
//! Every benchmark message carries `[seq, sent_ns, "padding"]` in `data`:
//! its sequence number and the time it was sent, in nanoseconds since the
//! start of the run on this process's monotonic clock. Each receiver keeps a
//! bitmap of what it got, so every message is counted as delivered, missing
//! or duplicated. Senders keep at most `--window` messages in flight: not
//! yet answered by the server, or not yet received by every receiver (see
//! `--window-mode` and [`stats`]). With `--rate`, a message held back
//! by the window is timed from when it was due, so a slow server cannot hide
//! its delay by slowing the sender down.

mod clients;
mod report;
mod scenarios;
mod stats;
mod system;

use std::process::ExitCode;

pub use clients::{ws_config, Incoming};
pub use report::{Cpu, JobFigures, Memory, Report, SummaryFigures};
pub use stats::{Counts, Latency, WindowMode};

/// Why a run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Protocol(String),
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// `concierge bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
    /// Threads of the benchmark's runtime (0: one per CPU core).
    #[arg(long, default_value_t = 0, global = true)]
    pub threads: usize,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Scenario {
    /// N clients connect and IDENTIFY as fast as possible, then stay idle.
    #[command(after_help = "\
Examples:
  concierge bench connect --clients 1000
  # Measure the gateway's CPU and memory too, and hold the connections a minute
  concierge bench connect --clients 10000 --hold 60 --server-pid \"$(pgrep -f 'concierge serve')\"")]
    Connect(ConnectArgs),
    /// One owner sends M messages to a service with N subscribers.
    #[command(after_help = "\
Examples:
  concierge bench fanout --subscribers 1000 --messages 2000
  # Four services at once, 200 messages a second each, the report as JSON
  concierge bench fanout --services 4 --subscribers 400 --rate 200 --json")]
    Fanout(FanoutArgs),
    /// P pairs of clients send each other M messages by NAME.
    #[command(after_help = "\
Examples:
  concierge bench direct --pairs 100
  # 1 KB messages, the window counted until they are delivered
  concierge bench direct --pairs 100 --size 1000 --window-mode delivered")]
    Direct(DirectArgs),
    /// N simulated agents run one job (`job_create`), some dropping their
    /// sockets meanwhile: time to the first and the last result, the
    /// gateway's cost per 1,000 hosts, every host final and run once.
    #[command(after_help = "\
Examples:
  concierge bench jobs --agents 1000
  # 10,000 hosts, 30% of them dropping their socket as the job starts, the gateway measured
  concierge bench jobs --agents 10000 --kill-ratio 0.3 --server-pid \"$(pgrep -f 'concierge serve')\"
  # two replicas sharing a Redis: the agents spread over both
  concierge bench jobs --agents 10000 --replicas ws://127.0.0.1:8080/ws,ws://127.0.0.1:8081/ws")]
    Jobs(JobsArgs),
    /// N simulated agents each send a health summary every --interval for
    /// --duration: summaries accepted per second, refusals, the gateway's
    /// CPU and memory, store writes per second, bytes per host per day.
    #[command(after_help = "\
Examples:
  concierge bench summaries --agents 1000 --duration 30
  # 10,000 hosts every 10 s for two minutes, the gateway and its health store measured
  concierge bench summaries --agents 10000 --duration 120 --server-pid \"$(pgrep -f 'concierge serve')\" --health-db data/health.db
  # two replicas sharing a Redis (its memory growth is the store's)
  concierge bench summaries --agents 10000 --replicas ws://127.0.0.1:8080/ws,ws://127.0.0.1:8081/ws --redis-url redis://127.0.0.1:6379")]
    Summaries(SummariesArgs),
    /// A scenario with its clients spread over two gateway URLs or more.
    Cluster {
        #[command(subcommand)]
        scenario: ClusterScenario,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClusterScenario {
    /// `connect`, its clients spread over the URLs.
    #[command(after_help = "\
Examples:
  concierge bench cluster connect --clients 2000 --url ws://127.0.0.1:8080/ws --url ws://127.0.0.1:8081/ws")]
    Connect(ConnectArgs),
    /// `fanout`, its subscribers spread over the URLs.
    #[command(after_help = "\
Examples:
  concierge bench cluster fanout --subscribers 1000 --url ws://127.0.0.1:8080/ws --url ws://127.0.0.1:8081/ws")]
    Fanout(FanoutArgs),
    /// `direct`, the two clients of each pair on different gateways.
    #[command(after_help = "\
Examples:
  concierge bench cluster direct --pairs 100 --url ws://127.0.0.1:8080/ws --url ws://127.0.0.1:8081/ws")]
    Direct(DirectArgs),
}

/// Options every scenario has.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Gateway WebSocket URL (ws:// only); repeat it (or give several,
    /// comma-separated, as --replicas) to spread clients over several
    /// gateways: client i goes to URL i mod n.
    #[arg(
        long = "url",
        visible_alias = "replicas",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub urls: Vec<String>,
    /// PID of a gateway process, for its CPU time and resident memory
    /// (from /proc); repeat it for several.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Prometheus endpoint to read process_resident_memory_bytes from when
    /// no --server-pid is given.
    #[arg(long)]
    pub metrics_url: Option<String>,
    /// The gateway's secret, if it has one.
    #[arg(
        long,
        env = "CONCIERGE_SECRET",
        default_value = "",
        hide_env_values = true
    )]
    pub secret: String,
    /// A token every client identifies with, for a gateway that requires
    /// them: one for the name `bench` covers every client name the tool
    /// uses (`bench_<run>_<role><n>`), e.g. from
    /// `concierge token issue --name bench --role viewer --ttl 1d`.
    #[arg(
        long,
        env = "CONCIERGE_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub token: String,
    /// Local addresses clients connect from: "auto" (127.0.0.2-127.0.0.9
    /// when every gateway is on IPv4 loopback), "none", or a comma-separated
    /// list.
    #[arg(long, default_value = "auto")]
    pub source_addrs: String,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds without progress after which a run gives up (counting what
    /// is missing).
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Milliseconds without broadcast traffic that count as "setup is over".
    #[arg(long, default_value_t = 500)]
    pub settle_ms: u64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Options of the message scenarios.
#[derive(Debug, Clone, clap::Args)]
pub struct MessageArgs {
    /// Messages each sender sends.
    #[arg(long, default_value_t = 2_000)]
    pub messages: u64,
    /// Messages per second per sender; 0 sends as fast as the window allows.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Most messages a sender may have in flight (see --window-mode).
    #[arg(long, default_value_t = 32)]
    pub window: u64,
    /// What leaves the window: the server's reply to the message (acked),
    /// or its receipt by every receiver (delivered).
    #[arg(long, value_enum, default_value_t = WindowMode::Acked)]
    pub window_mode: WindowMode,
    /// Approximate size of each message's `data`, in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Milliseconds to keep listening after the last delivery, to catch
    /// duplicates.
    #[arg(long, default_value_t = 300)]
    pub drain_ms: u64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Clients to connect.
    #[arg(long, default_value_t = 1_000)]
    pub clients: usize,
    /// Seconds to keep the connections open after measuring.
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// IDENTIFY's `presence` for the clients (not the watchers): `false`
    /// identifies as agents do, told of no joins and leaves.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub presence: bool,
    /// Clients connected before the measured ones and told of every join
    /// (operators watching a fleet reconnect); the report says how many
    /// joins they heard.
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
    /// After IDENTIFY, each client (not the watchers) sets up what
    /// `concierge agent` does: creates `telemetry_NAME` and `audit_NAME`
    /// and subscribes to the first.
    #[arg(long)]
    pub agent_services: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub messages: MessageArgs,
    /// Subscribers, spread evenly over the services.
    #[arg(long, default_value_t = 1_000)]
    pub subscribers: usize,
    /// Services, each with its own owner sending to it at the same time:
    /// subscriber i subscribes to service i mod K.
    #[arg(long, default_value_t = 1)]
    pub services: usize,
    /// Each service keeps a history of this many messages (SERVICE_CREATE's
    /// `history`): what keeping one costs. 0 (the default) keeps none.
    #[arg(long, default_value_t = 0, value_name = "MESSAGES")]
    pub history: u64,
    /// How long the history keeps each message, in seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub history_ttl: u64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DirectArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub messages: MessageArgs,
    /// Pairs of clients; each member sends to the other.
    #[arg(long, default_value_t = 100)]
    pub pairs: usize,
}

#[derive(Debug, Clone, clap::Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Simulated agents, each its own WebSocket client: the job's hosts.
    #[arg(long, default_value_t = 1_000)]
    pub agents: usize,
    /// How long each host's run takes, in milliseconds.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub delay: u64,
    /// The share of the hosts whose run exits 1 (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    pub fail_ratio: f64,
    /// The share of the agents that drop their socket (no close frame)
    /// right after the job is created, and reconnect (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = ratio)]
    pub kill_ratio: f64,
    /// The longest a dropped agent waits before it reconnects (each waits
    /// a random time up to it), in milliseconds.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub reconnect_ms: u64,
    /// The job's `batch`: at most this many hosts run at once (`100`, or a
    /// share: `10%`). Default: the gateway's window.
    #[arg(long)]
    pub batch: Option<crate::protocol::jobs::Amount>,
    /// The job's `wait_secs`: how long a host that is offline when its
    /// turn comes is waited for.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub wait_secs: u64,
    /// Follow the job through its service's events as well as by polling
    /// `job_get` (a large job's events may come faster than the gateway
    /// lets one client fall behind: it closes it, 1008).
    #[arg(long)]
    pub events: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SummariesArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Simulated agents, each its own WebSocket client.
    #[arg(long, default_value_t = 10_000)]
    pub agents: usize,
    /// Seconds between one agent's summaries (the gateway refuses one
    /// sooner than half its `summary_interval_secs` after the last).
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub interval: f64,
    /// Seconds the agents send summaries for.
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    pub duration: f64,
    /// The gateway's health store file (`health.db` in its data folder),
    /// whose growth gives the bytes per host per day when its `/metrics`
    /// does not.
    #[arg(long, value_name = "PATH")]
    pub health_db: Option<std::path::PathBuf>,
    /// The replicas' Redis, whose `used_memory` growth gives the bytes per
    /// host per day when their `/metrics` does not.
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
}

/// A share, 0 to 1.
fn ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{text:?} is not a share from 0 to 1")),
    }
}

impl Scenario {
    fn common(&self) -> &CommonArgs {
        match self {
            Scenario::Connect(a)
            | Scenario::Cluster {
                scenario: ClusterScenario::Connect(a),
            } => &a.common,
            Scenario::Fanout(a)
            | Scenario::Cluster {
                scenario: ClusterScenario::Fanout(a),
            } => &a.common,
            Scenario::Direct(a)
            | Scenario::Cluster {
                scenario: ClusterScenario::Direct(a),
            } => &a.common,
            Scenario::Jobs(a) => &a.common,
            Scenario::Summaries(a) => &a.common,
        }
    }
}

/// Runs one scenario and returns its report.
pub async fn run(scenario: &Scenario) -> Result<Report, BenchError> {
    match scenario {
        Scenario::Connect(a) => scenarios::connect(a, "connect").await,
        Scenario::Fanout(a) => scenarios::fanout(a, "fanout").await,
        Scenario::Direct(a) => scenarios::direct(a, "direct").await,
        Scenario::Jobs(a) => scenarios::jobs(a, "jobs").await,
        Scenario::Summaries(a) => scenarios::summaries(a, "summaries").await,
        Scenario::Cluster { scenario } => {
            let urls = match scenario {
                ClusterScenario::Connect(a) => &a.common.urls,
                ClusterScenario::Fanout(a) => &a.common.urls,
                ClusterScenario::Direct(a) => &a.common.urls,
            };
            if urls.len() < 2 {
                return Err(BenchError::Usage(
                    "cluster needs two --url or more (one per gateway)".into(),
                ));
            }
            match scenario {
                ClusterScenario::Connect(a) => scenarios::connect(a, "cluster-connect").await,
                ClusterScenario::Fanout(a) => scenarios::fanout(a, "cluster-fanout").await,
                ClusterScenario::Direct(a) => scenarios::direct(a, "cluster-direct").await,
            }
        }
    }
}

/// `concierge bench`: runs the scenario on its own runtime and prints the
/// report. Exits 1 when a message was lost or duplicated or a client failed,
/// 2 when the run could not be carried out.
pub fn main(args: BenchArgs) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if args.threads > 0 {
        builder.worker_threads(args.threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("concierge bench: cannot start a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let json = args.scenario.common().json;
    match runtime.block_on(run(&args.scenario)) {
        Ok(report) => {
            if json {
                println!("{}", report.json());
            } else {
                print!("{}", report.table());
            }
            if report.clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("concierge bench: {e}");
            ExitCode::from(2)
        }
    }
}
