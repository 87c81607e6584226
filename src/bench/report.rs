//! What a run tells its user: a progress bar while it runs, then a summary
//! table, or one JSON object with every figure (`--json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::stats::{Counts, Latency, WindowMode};

/// CPU time of both sides during the measured phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cpu {
    /// Wall-clock length of the measured phase.
    pub wall_seconds: f64,
    pub bench_seconds: f64,
    /// Benchmark CPU time divided by wall time: cores kept busy.
    pub bench_cores: f64,
    pub bench_us_per_delivery: Option<f64>,
    /// Summed over every `--server-pid`; absent without one.
    pub server_seconds: Option<f64>,
    pub server_cores: Option<f64>,
    pub server_us_per_delivery: Option<f64>,
    /// Cores the whole machine kept busy (every process, and kernel work
    /// billed to none, such as loopback softirqs).
    pub machine_busy_cores: Option<f64>,
}

/// Resident memory of the gateway(s) around an idle-connection run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    pub server_rss_before_bytes: Option<u64>,
    pub server_rss_after_bytes: Option<u64>,
    pub server_rss_per_connection_bytes: Option<f64>,
    pub bench_rss_per_connection_bytes: Option<f64>,
}

/// What `bench jobs` measured and checked: one job over simulated agents.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobFigures {
    pub job: String,
    /// The hosts the job's target resolved to (every agent that joined).
    pub hosts: u64,
    pub delay_ms: u64,
    pub fail_ratio: f64,
    pub kill_ratio: f64,
    pub batch: Option<String>,
    /// Agents that dropped their socket after the job was created, and of
    /// them those that came back.
    pub killed: u64,
    pub reconnected: u64,
    /// Reconnections the gateway refused (and the agents tried again, as
    /// the agent does), and the first refusal.
    pub refused_rejoins: u64,
    pub first_refusal: Option<String>,
    /// `job_create` sent → answered: resolving the target and writing the
    /// job and every host's first row to the ledger.
    pub create_ms: f64,
    /// `job_create` sent → the first outcome an agent sent.
    pub first_outcome_ms: Option<f64>,
    /// `job_create` sent → the first and the last outcome recorded (the
    /// rows' `updated_ms`: to the millisecond).
    pub first_result_ms: Option<f64>,
    pub all_results_ms: Option<f64>,
    /// `job_create` sent → every host final, as the follower saw it
    /// (events, and the rows once the job was over).
    pub followed_all_ms: Option<f64>,
    /// Hosts by final state, from the rows read back at the end.
    pub states: BTreeMap<String, u64>,
    /// Hosts whose agent ran the job once, and more than once.
    pub executed_once: u64,
    pub duplicated: u64,
    /// Hosts not final at the end, final without having run it (offline,
    /// expired, failed), or whose row says otherwise than their agent
    /// answered.
    pub lost: u64,
    /// `run_job`s an agent answered from its record (redeliveries).
    pub redeliveries: u64,
    /// The most times one host was sent the job (the rows' `attempts`).
    pub max_attempts: u32,
    /// `host` events the follower received, and those that would have
    /// taken a final host back (none should).
    pub host_events: u64,
    pub regressions: u64,
    /// The gateway's CPU over the job (create → every host final) per
    /// 1,000 hosts.
    pub server_cpu_ms_per_1000_hosts: Option<f64>,
    /// The gateway's resident memory per 1,000 hosts: for the agents'
    /// connections (before → all joined), and for the job on top (→ every
    /// host final).
    pub server_rss_per_1000_hosts_bytes: Option<f64>,
    pub job_rss_per_1000_hosts_bytes: Option<f64>,
    /// The ledger's cost per host: `job_create`'s time per 1,000 hosts.
    pub create_ms_per_1000_hosts: f64,
    /// Why following stopped before every host was final.
    pub gave_up: Option<String>,
}

impl JobFigures {
    /// Every host final, run once, and none lost.
    pub fn clean(&self) -> bool {
        self.hosts > 0
            && self.lost == 0
            && self.duplicated == 0
            && self.regressions == 0
            && self.gave_up.is_none()
            && self.executed_once == self.hosts
    }

    fn rows(&self, row: &mut impl FnMut(&str, String)) {
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} ms"));
        row(
            "job",
            format!(
                "{} on {} hosts: delay {} ms, fail ratio {}, kill ratio {}, batch {}",
                self.job,
                self.hosts,
                self.delay_ms,
                self.fail_ratio,
                self.kill_ratio,
                self.batch.as_deref().unwrap_or("all")
            ),
        );
        row(
            "created",
            format!(
                "{:.1} ms ({:.1} ms per 1,000 hosts)",
                self.create_ms, self.create_ms_per_1000_hosts
            ),
        );
        row(
            "first result",
            format!(
                "{} (first outcome sent by an agent: {})",
                ms(self.first_result_ms),
                ms(self.first_outcome_ms)
            ),
        );
        row(
            "all results",
            format!(
                "{} (seen by the follower: {})",
                ms(self.all_results_ms),
                ms(self.followed_all_ms)
            ),
        );
        let states: Vec<String> = self
            .states
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        row("final states", states.join(", "));
        row(
            "hosts",
            format!(
                "run once {} duplicated {} lost {}",
                self.executed_once, self.duplicated, self.lost
            ),
        );
        row(
            "redeliveries",
            format!(
                "{} answered from the record, most attempts on one host {}",
                self.redeliveries, self.max_attempts
            ),
        );
        if self.killed > 0 {
            row(
                "killed",
                format!(
                    "{} dropped, {} came back; {} reconnections refused and tried again{}",
                    self.killed,
                    self.reconnected,
                    self.refused_rejoins,
                    self.first_refusal
                        .as_ref()
                        .map_or(String::new(), |r| format!(" (first: {r})"))
                ),
            );
        }
        row(
            "events",
            format!(
                "{} host events, {} taking a host back from final",
                self.host_events, self.regressions
            ),
        );
        let per = |v: Option<f64>, unit: &str| v.map_or("-".into(), |v| format!("{v:.1} {unit}"));
        row(
            "per 1,000 hosts",
            format!(
                "server CPU {}, RSS {} for connections + {} for the job",
                per(self.server_cpu_ms_per_1000_hosts, "ms"),
                per(
                    self.server_rss_per_1000_hosts_bytes.map(|b| b / 1048576.0),
                    "MiB"
                ),
                per(
                    self.job_rss_per_1000_hosts_bytes.map(|b| b / 1048576.0),
                    "MiB"
                ),
            ),
        );
        if let Some(why) = &self.gave_up {
            row("GAVE UP", why.clone());
        }
    }
}

/// What `bench summaries` measured: hosts' health summaries at a rate.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SummaryFigures {
    /// Agents that joined and sent summaries.
    pub agents: u64,
    pub interval_secs: f64,
    /// The gateway's `summary_interval`, from its answer to `facts`.
    pub gateway_interval_secs: Option<u64>,
    /// The measured phase's length.
    pub seconds: f64,
    pub sent: u64,
    pub accepted: u64,
    pub refused: u64,
    /// Sent and not answered by the end (after waiting up to --timeout).
    pub unanswered: u64,
    /// Refusals by reason, and the first one.
    pub refusals: BTreeMap<String, u64>,
    pub first_refusal: Option<String>,
    pub accepted_per_sec: f64,
    /// The gateways' (and Redis's) CPU over the measured phase, in percent
    /// of one core; absent without --server-pid.
    pub server_cpu_percent: Option<f64>,
    pub server_rss_before_bytes: Option<u64>,
    pub server_rss_after_bytes: Option<u64>,
    /// Points written to the health store per second, and where the figure
    /// comes from.
    pub store_writes_per_sec: Option<f64>,
    pub writes_source: String,
    /// A host's history's growth extrapolated to a day, and how it was
    /// measured.
    pub bytes_per_host_per_day: Option<f64>,
    pub bytes_source: Option<String>,
}

impl SummaryFigures {
    /// Summaries were sent, and every one was accepted.
    pub fn clean(&self) -> bool {
        self.sent > 0 && self.refused == 0 && self.unanswered == 0
    }

    fn rows(&self, row: &mut impl FnMut(&str, String)) {
        row(
            "summaries",
            format!(
                "{} agents, one every {} s (the gateway's interval: {}) for {:.1} s",
                self.agents,
                self.interval_secs,
                self.gateway_interval_secs
                    .map_or("unknown".into(), |s| format!("{s} s")),
                self.seconds
            ),
        );
        row(
            "answers",
            format!(
                "sent {} accepted {} refused {} unanswered {}",
                self.sent, self.accepted, self.refused, self.unanswered
            ),
        );
        if !self.refusals.is_empty() {
            let reasons: Vec<String> = self
                .refusals
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            row(
                "refusals",
                format!(
                    "{} (first: {})",
                    reasons.join(", "),
                    self.first_refusal.as_deref().unwrap_or("-")
                ),
            );
        }
        row("accepted/s", format!("{:.1}", self.accepted_per_sec));
        let mib =
            |v: Option<u64>| v.map_or("-".into(), |v| format!("{:.1} MiB", v as f64 / 1048576.0));
        row(
            "server",
            format!(
                "CPU {}, RSS {} before, {} after",
                self.server_cpu_percent
                    .map_or("unknown (pass --server-pid)".into(), |c| format!(
                        "{c:.1} %"
                    )),
                mib(self.server_rss_before_bytes),
                mib(self.server_rss_after_bytes)
            ),
        );
        row(
            "store writes/s",
            format!(
                "{} ({})",
                self.store_writes_per_sec
                    .map_or("-".into(), |w| format!("{w:.1}")),
                self.writes_source
            ),
        );
        row(
            "bytes/host/day",
            match (self.bytes_per_host_per_day, &self.bytes_source) {
                (Some(b), Some(source)) => format!("{b:.0} ({source}, extrapolated to 24 h)"),
                _ => "unknown (pass --health-db or --redis-url)".into(),
            },
        );
    }
}

/// Every figure of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub urls: Vec<String>,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    /// Connections the run opened (or tried to).
    pub clients: u64,
    pub connected: u64,
    pub connect_failures: u64,
    /// The first few distinct errors, if any.
    pub errors: Vec<String>,
    /// Connecting and identifying every client (and subscribing, for fan-out).
    pub setup_seconds: f64,
    pub connects_per_sec: Option<f64>,
    /// From starting a connection to receiving HELLO.
    pub connect_latency: Option<Latency>,
    /// Messages a sender may have in flight.
    pub window: Option<u64>,
    /// What leaves the window: the server's reply, or delivery to all.
    pub window_mode: Option<WindowMode>,
    /// Messages per second per sender; absent when as fast as the window allows.
    pub rate: Option<f64>,
    pub senders: Option<u64>,
    pub receivers_per_message: Option<u64>,
    pub messages_per_sender: Option<u64>,
    /// Size of one relayed MESSAGE frame as received, in bytes.
    pub frame_bytes: Option<u64>,
    pub counts: Option<Counts>,
    /// From the first message sent to the last delivery.
    pub seconds: Option<f64>,
    pub deliveries_per_sec: Option<f64>,
    pub latency: Option<Latency>,
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
    /// `bench jobs`' figures.
    pub jobs: Option<JobFigures>,
    /// `bench summaries`' figures.
    pub summaries: Option<SummaryFigures>,
    /// Frames that were neither benchmark messages nor replies (broadcasts
    /// such as CLIENT_JOINED), over all clients.
    pub broadcast_frames: u64,
    /// Cores the machine kept busy in the half second before the run (other
    /// work competing with it).
    pub machine_busy_before_cores: Option<f64>,
    /// True when a sender gave up because nothing was delivered for `--timeout`.
    pub stalled: bool,
    pub notes: Vec<String>,
}

impl Report {
    /// True when every message was delivered exactly once and every client
    /// connected.
    pub fn clean(&self) -> bool {
        let counts_ok = self.counts.as_ref().is_none_or(|c| {
            c.missing == 0
                && c.duplicated == 0
                && c.unexpected == 0
                && c.malformed == 0
                && c.rejected == 0
        });
        let jobs_ok = self.jobs.as_ref().is_none_or(JobFigures::clean);
        let summaries_ok = self.summaries.as_ref().is_none_or(SummaryFigures::clean);
        counts_ok && jobs_ok && summaries_ok && !self.stalled && self.connect_failures == 0
    }

    pub fn json(&self) -> String {
        // Numbers, strings and options only: serializing cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
        row("scenario", self.scenario.clone());
        row("gateways", self.urls.join(", "));
        row(
            "clients",
            format!(
                "{} connected of {} ({} failed)",
                self.connected, self.clients, self.connect_failures
            ),
        );
        row("setup", format!("{:.2} s", self.setup_seconds));
        if let Some(rate) = self.connects_per_sec {
            row("connects/s", format!("{rate:.0}"));
        }
        if let Some(l) = &self.connect_latency {
            row("connect+identify", latency_line(l));
        }
        if let (Some(s), Some(r), Some(m)) = (
            self.senders,
            self.receivers_per_message,
            self.messages_per_sender,
        ) {
            row(
                "workload",
                format!("{s} sender(s) × {m} messages → {r} receiver(s) each"),
            );
        }
        if let Some(w) = self.window {
            let mode = match self.window_mode {
                Some(WindowMode::Delivered) => "not yet delivered to all",
                _ => "not yet acknowledged",
            };
            let rate = match self.rate {
                Some(r) => format!("{r} msgs/s per sender"),
                None => "as fast as the window allows".into(),
            };
            row("window / rate", format!("{w} {mode} / {rate}"));
        }
        if let Some(b) = self.frame_bytes {
            row("relayed frame", format!("{b} bytes"));
        }
        if let Some(c) = &self.counts {
            row(
                "messages",
                format!("sent {} acked {} rejected {}", c.sent, c.acked, c.rejected),
            );
            row(
                "deliveries",
                format!(
                    "expected {} delivered {} missing {} duplicated {} unexpected {} malformed {}",
                    c.expected, c.delivered, c.missing, c.duplicated, c.unexpected, c.malformed
                ),
            );
        }
        if let (Some(s), Some(d)) = (self.seconds, self.deliveries_per_sec) {
            row("deliveries/s", format!("{} (over {s:.3} s)", thousands(d)));
        }
        if let Some(l) = &self.latency {
            row("latency", latency_line(l));
        }
        if let Some(cpu) = &self.cpu {
            let per = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2} µs/delivery"));
            row(
                "bench CPU",
                format!(
                    "{:.2} s = {:.2} cores, {}",
                    cpu.bench_seconds,
                    cpu.bench_cores,
                    per(cpu.bench_us_per_delivery)
                ),
            );
            let server = match (cpu.server_seconds, cpu.server_cores) {
                (Some(s), Some(c)) => format!(
                    "{s:.2} s = {c:.2} cores, {}",
                    per(cpu.server_us_per_delivery)
                ),
                _ => "unknown (pass --server-pid)".into(),
            };
            row("server CPU", server);
            if let Some(m) = cpu.machine_busy_cores {
                row("machine busy", format!("{m:.2} cores"));
            }
        }
        if let Some(m) = &self.memory {
            let kib = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.2} KiB", v / 1024.0));
            let mib = |v: Option<u64>| {
                v.map_or("-".into(), |v| format!("{:.1} MiB", v as f64 / 1048576.0))
            };
            row(
                "server RSS",
                format!(
                    "{} before, {} after",
                    mib(m.server_rss_before_bytes),
                    mib(m.server_rss_after_bytes)
                ),
            );
            row(
                "RSS per connection",
                format!(
                    "server {}, bench {}",
                    kib(m.server_rss_per_connection_bytes),
                    kib(m.bench_rss_per_connection_bytes)
                ),
            );
        }
        if let Some(jobs) = &self.jobs {
            jobs.rows(&mut row);
        }
        if let Some(summaries) = &self.summaries {
            summaries.rows(&mut row);
        }
        row("broadcast frames", self.broadcast_frames.to_string());
        if self.stalled {
            row(
                "STALLED",
                "nothing was delivered for --timeout: the rest was not sent".into(),
            );
        }
        for e in &self.errors {
            row("error", e.clone());
        }
        for n in &self.notes {
            row("note", n.clone());
        }
        row(
            "verdict",
            if self.clean() && self.jobs.is_some() {
                "every host final, the job run once on each".into()
            } else if self.clean() && self.summaries.is_some() {
                "every summary accepted".into()
            } else if self.clean() {
                "every message delivered exactly once".into()
            } else {
                "FAILED: see missing/duplicated/errors above".into()
            },
        );
        let width = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:>width$}  {v}");
        }
        out
    }
}

fn latency_line(l: &Latency) -> String {
    format!(
        "p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  ({} samples)",
        l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.samples
    )
}

/// 1234567.8 → "1,234,568".
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A progress bar on stderr, or nothing (`--json`, `--quiet`, or stderr not
/// a terminal). Each phase of a run gets a bar of its own.
#[derive(Clone)]
pub struct Progress {
    visible: bool,
    bar: Arc<Mutex<ProgressBar>>,
}

impl Progress {
    pub fn new(visible: bool) -> Progress {
        Progress {
            visible,
            bar: Arc::new(Mutex::new(ProgressBar::hidden())),
        }
    }

    fn bar(&self) -> MutexGuard<'_, ProgressBar> {
        self.bar
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts a phase of `len` steps.
    pub fn phase(&self, what: &str, len: u64) {
        let target = if self.visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        let style = ProgressStyle::with_template(
            "{msg:>12} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        let old = std::mem::replace(&mut *self.bar(), bar);
        old.finish_and_clear();
    }

    pub fn set(&self, pos: u64) {
        self.bar().set_position(pos);
    }

    pub fn inc(&self) {
        self.bar().inc(1);
    }

    pub fn finish(&self) {
        self.bar().finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_separators() {
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(0.0), "0");
    }

    #[test]
    fn a_job_with_a_lost_or_twice_run_host_is_not_clean() {
        let figures = JobFigures {
            job: "0123456789ab".into(),
            hosts: 2,
            executed_once: 2,
            states: BTreeMap::from([("exited".into(), 2)]),
            first_result_ms: Some(1.5),
            ..JobFigures::default()
        };
        let mut r = Report {
            jobs: Some(figures.clone()),
            ..Report::default()
        };
        assert!(r.clean(), "{}", r.table());
        assert!(r.table().contains("every host final"));
        assert!(r.table().contains("exited 2"));
        for broken in [
            JobFigures {
                lost: 1,
                executed_once: 1,
                ..figures.clone()
            },
            JobFigures {
                duplicated: 1,
                executed_once: 1,
                ..figures.clone()
            },
            JobFigures {
                gave_up: Some("stuck".into()),
                ..figures.clone()
            },
        ] {
            r.jobs = Some(broken);
            assert!(!r.clean());
            assert!(r.table().contains("FAILED"));
        }
        assert!(r.json().contains("\"gave_up\": \"stuck\""));
    }

    #[test]
    fn a_report_with_losses_is_not_clean() {
        let mut r = Report {
            counts: Some(Counts {
                missing: 1,
                ..Counts::default()
            }),
            ..Report::default()
        };
        assert!(!r.clean());
        assert!(r.table().contains("FAILED"));
        r.counts = Some(Counts::default());
        assert!(r.clean());
        assert!(r.json().contains("\"scenario\""));
    }
}
