//! The host's health summary (PROTOCOL §20): every `summary_interval`
//! seconds the agent sends the gateway a handful of numbers — CPU %, the
//! 1-minute load, memory %, the fullest disk's %, the VPN handshake's age —
//! whether or not anyone watches, so that the inventory shows every host's
//! health and keeps its history.
//!
//! The numbers come from the telemetry sampler's latest snapshot (the
//! `tele_data` the agent already keeps, see [`super::telemetry`]): a
//! summary costs no sampling of its own, only the load average, which the
//! snapshot does not hold. They are clamped into the contract's ranges
//! ([`Summary::check`]) so that the gateway never refuses a real host's
//! summary for a reading that is odd (a CPU share a rounding above 100 %).
//!
//! One summary is in flight at a time: the next is not sent before the
//! gateway answered the last (or before [`LOST_AFTER`] intervals without
//! an answer). A refusal is logged once per reason, not once per summary.
//! The interval is the gateway's (`facts`' reply's `summary_interval`),
//! [`DEFAULT_SUMMARY_INTERVAL_SECS`] until it is known; a reconnection
//! does not send sooner than an interval after the last one.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::commands::Host;
use concierge_client::Sender;
use concierge_protocol::agent::{envelope, outcome, GatewayRequest};
use concierge_protocol::health::{Summary, DEFAULT_SUMMARY_INTERVAL_SECS, MAX_LOAD, MAX_VPN_AGE};
use concierge_protocol::{Target, GATEWAY_NAME};

/// The `rid` of the agent's summaries (its other requests to the gateway
/// have theirs in `lib.rs`).
pub const SUMMARY_RID: u64 = 2;

/// A summary unanswered for this many intervals is taken as lost, and the
/// next one is sent.
pub const LOST_AFTER: u32 = 3;

/// The longest interval the agent takes from a gateway: a day.
const MAX_INTERVAL_SECS: u64 = 86_400;

/// How long the agent waits for the sampler's first snapshot.
const FIRST_SNAPSHOT_POLL: Duration = Duration::from_millis(100);

/// A summary of `snapshot` (the sampler's `tele_data`), with the 1-minute
/// `load` average, at `now` (seconds since the Unix epoch, for the VPN
/// handshake's age). Readings the snapshot lacks are 0.
pub fn summarize(snapshot: &Map<String, Value>, load: f64, now: u64) -> Summary {
    Summary {
        cpu: percent(cpu_share(snapshot.get("ttl_cpu_usage"))),
        load: clamp(load, f64::from(MAX_LOAD)),
        mem: percent(mem_share(snapshot.get("ttl_mem_usage"))),
        disk: percent(fullest_disk(snapshot.get("disk_util"))),
        vpn_age: vpn_age(snapshot.get("vpn_status"), now),
    }
}

/// The whole host's CPU use: the mean of every core's share (0 to 1).
fn cpu_share(cores: Option<&Value>) -> f64 {
    let shares: Vec<f64> = cores
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    if shares.is_empty() {
        return 0.0;
    }
    shares.iter().sum::<f64>() / shares.len() as f64
}

/// Memory in use of all of it: `[used, buff/cache, free]`.
fn mem_share(memory: Option<&Value>) -> f64 {
    let parts: Vec<f64> = memory
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    match parts.as_slice() {
        [used, cache, free] if used + cache + free > 0.0 => used / (used + cache + free),
        _ => 0.0,
    }
}

/// The fullest disk's share used, of `{device: [used, free]}` (the
/// sampler lists real file systems only; one of no size is no disk).
fn fullest_disk(disks: Option<&Value>) -> f64 {
    disks
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|disks| disks.values())
        .filter_map(|usage| Some((usage.get(0)?.as_f64()?, usage.get(1)?.as_f64()?)))
        .filter(|(used, free)| used + free > 0.0)
        .map(|(used, free)| used / (used + free))
        .fold(0.0, f64::max)
}

/// Seconds since the tunnel's latest handshake; none without a tunnel or
/// before its first handshake (`latest_handshake` 0).
fn vpn_age(status: Option<&Value>, now: u64) -> Option<u64> {
    let at = status?.get("latest_handshake")?.as_u64()?;
    (at > 0).then(|| now.saturating_sub(at).min(MAX_VPN_AGE))
}

/// A share (0 to 1) as a percentage, within 0 to 100.
fn percent(share: f64) -> f32 {
    clamp(share * 100.0, 100.0)
}

/// `value` within 0 to `max` (0 for a value that is no number).
fn clamp(value: f64, max: f64) -> f32 {
    if value.is_finite() {
        value.clamp(0.0, max) as f32
    } else {
        0.0
    }
}

/// What the agent keeps of its summaries across connections: the
/// gateway's interval, when it last sent one, and the refusals it has
/// logged.
pub struct Reporter {
    interval: Cell<Duration>,
    last_sent: Cell<Option<Instant>>,
    /// Sent and not answered yet (on this connection), since when.
    in_flight: Cell<Option<Instant>>,
    said: RefCell<Vec<String>>,
    /// The gateway answered `facts`: the host is in the inventory.
    filed: Notify,
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter {
            interval: Cell::new(Duration::from_secs(DEFAULT_SUMMARY_INTERVAL_SECS)),
            last_sent: Cell::new(None),
            in_flight: Cell::new(None),
            said: RefCell::new(Vec::new()),
            filed: Notify::new(),
        }
    }
}

impl Reporter {
    pub fn interval(&self) -> Duration {
        self.interval.get()
    }

    /// Takes the interval from the gateway's answer to `facts` (its
    /// `summary_interval`; the default when it has none).
    pub fn learn(&self, facts_reply: &Value) {
        let secs = facts_reply
            .get("summary_interval")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_SUMMARY_INTERVAL_SECS)
            .clamp(1, MAX_INTERVAL_SECS);
        if self.interval.replace(Duration::from_secs(secs)) != Duration::from_secs(secs) {
            tracing::debug!(secs, "summary interval");
        }
        self.filed.notify_one();
    }

    /// The gateway's answer to the summary in flight (its reply's `msg`).
    pub fn answered(&self, msg: Value) {
        self.in_flight.set(None);
        match outcome(msg) {
            Ok(_) => {}
            Err(failure) => {
                let reason = failure.reason.as_str();
                let mut said = self.said.borrow_mut();
                if said.iter().any(|r| r == reason) {
                    tracing::debug!(reason, desc = %failure.desc, "summary refused again");
                } else {
                    tracing::warn!(reason, desc = %failure.desc,
                        "the gateway refused this host's summary (said once per reason)");
                    said.push(reason.to_owned());
                }
            }
        }
    }

    /// When the next summary is due: an interval after the last one (now,
    /// for the first), and not while one is in flight unless it is lost.
    fn due(&self) -> Instant {
        let interval = self.interval.get();
        let next = self
            .last_sent
            .get()
            .map_or_else(Instant::now, |at| at + interval);
        match self.in_flight.get() {
            Some(since) => next.max(since + interval * LOST_AFTER),
            None => next,
        }
    }
}

/// Sends the host's summary every interval while the connection lasts
/// (the connection's task; `host.summaries` outlives it).
pub async fn report(host: Rc<Host>, sender: Sender) {
    let reporter = &host.summaries;
    // A new connection: an answer to the last one's summary will not come.
    reporter.in_flight.set(None);
    if reporter.last_sent.get().is_none() {
        // The agent's first summary follows its facts into the inventory.
        let _ = tokio::time::timeout(reporter.interval(), reporter.filed.notified()).await;
    }
    let mut snapshots = host.snapshots.clone();
    loop {
        tokio::time::sleep_until(reporter.due()).await;
        if let Some(since) = reporter.in_flight.get() {
            tracing::warn!(after = ?since.elapsed(), "no answer to the last summary; sending the next");
        }
        let snapshot = snapshots.borrow_and_update().clone();
        if snapshot.is_empty() {
            // The sampler's first tick is a moment after the agent starts.
            tokio::time::sleep(FIRST_SNAPSHOT_POLL).await;
            continue;
        }
        let load = sysinfo::System::load_average().map_or(0.0, |l| l.one);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let summary = summarize(&snapshot, load, now);
        let request = envelope(&GatewayRequest::Summary(summary), SUMMARY_RID);
        let to = Target::Name {
            name: GATEWAY_NAME.into(),
        };
        if sender.message(to, &request).await.is_err() {
            return;
        }
        let sent = Instant::now();
        reporter.last_sent.set(Some(sent));
        reporter.in_flight.set(Some(sent));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn a_snapshot_reads_as_a_summary() {
        let s = summarize(
            &snapshot(json!({
                "ttl_cpu_usage": [0.5, 0.25, 0.0, 0.25],
                "ttl_mem_usage": [4_000, 5_000, 1_000],
                "disk_util": {"/dev/sda1": [90, 10], "/dev/sdb1": [30, 70], "empty": [0, 0]},
                "vpn_status": {"up": true, "latest_handshake": 1_000},
            })),
            0.42,
            1_012,
        );
        assert_eq!(
            s,
            Summary {
                cpu: 25.0,
                load: 0.42,
                mem: 40.0,
                disk: 90.0,
                vpn_age: Some(12),
            }
        );
        assert_eq!(s.check(), Ok(()));
    }

    #[test]
    fn a_host_without_a_tunnel_or_readings_still_reports() {
        // No VPN (the sampler's value without --vpn), a tunnel before its
        // first handshake, and readings missing or of no known shape.
        let none = summarize(
            &snapshot(json!({"vpn_status": {"up": false, "ifname": null}})),
            0.0,
            5,
        );
        assert_eq!(none, Summary::default());
        let odd = summarize(
            &snapshot(json!({
                "ttl_cpu_usage": "busy", "ttl_mem_usage": [0, 0, 0],
                "disk_util": {"x": ["a", 1]}, "vpn_status": {"latest_handshake": 0},
            })),
            0.0,
            5,
        );
        assert_eq!(odd, Summary::default());
    }

    #[test]
    fn readings_out_of_range_are_clamped_into_the_contract() {
        let s = summarize(
            &snapshot(json!({
                "ttl_cpu_usage": [1.2, 1.0],
                "ttl_mem_usage": [-5, 0, 10],
                "disk_util": {"d": [200, -100]},
                // A handshake from the future (the clock stepped back),
                // and one from before the epoch of ten years.
                "vpn_status": {"latest_handshake": 9_000},
            })),
            f64::INFINITY,
            100,
        );
        assert_eq!((s.cpu, s.mem, s.disk, s.load), (100.0, 0.0, 100.0, 0.0));
        assert_eq!(s.vpn_age, Some(0));
        assert_eq!(s.check(), Ok(()));
        let old = vpn_age(Some(&json!({"latest_handshake": 1})), u64::MAX);
        assert_eq!(old, Some(MAX_VPN_AGE));
        assert_eq!(clamp(2.0e9, f64::from(MAX_LOAD)), MAX_LOAD);
        assert_eq!(clamp(f64::NAN, 100.0), 0.0);
    }

    #[test]
    fn the_interval_is_the_gateways_and_one_summary_is_in_flight() {
        let r = Reporter::default();
        assert_eq!(r.interval(), Duration::from_secs(10));
        r.learn(&json!({"name": "h", "summary_interval": 30}));
        assert_eq!(r.interval(), Duration::from_secs(30));
        r.learn(&json!({"name": "h", "summary_interval": 0}));
        assert_eq!(r.interval(), Duration::from_secs(1));
        r.learn(&json!({"name": "h"}));
        assert_eq!(r.interval(), Duration::from_secs(10));
        let sent = Instant::now();
        r.last_sent.set(Some(sent));
        assert_eq!(r.due(), sent + Duration::from_secs(10));
        r.in_flight.set(Some(sent));
        assert_eq!(r.due(), sent + Duration::from_secs(10) * LOST_AFTER);
        r.answered(json!({"result": "error", "reason": "limit", "desc": "too soon"}));
        r.answered(json!({"result": "error", "reason": "limit", "desc": "too soon"}));
        assert_eq!(r.said.borrow().as_slice(), ["limit"]);
        assert_eq!(r.due(), sent + Duration::from_secs(10));
    }
}
