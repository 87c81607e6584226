//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format.
//!
//! One process runs one gateway, so the metrics are process-wide statics.
//! Everything on the per-delivery path is a relaxed atomic add on a handle
//! resolved at start-up; no label lookup happens per message. The counters
//! of every frame are [`Striped`]: worker threads each add to their own
//! cache line, which a scrape sums.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{Atomic, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Payload types counted by `concierge_payloads_in_total`: every type a
/// client may send and `INVALID`, for anything that does not decode.
fn payload_types() -> impl Iterator<Item = &'static str> {
    crate::protocol::PayloadKind::NAMES
        .iter()
        .copied()
        .chain(["INVALID"])
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

/// One VPN peer as the metrics show it.
pub struct VpnPeer<'a> {
    pub name: &'a str,
    pub active: bool,
    /// Seconds since the Unix epoch; 0 means never.
    pub latest_handshake: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

pub struct Metrics {
    registry: Registry,
    pub connections_open: Gauge,
    pub clients_identified: Gauge,
    closed: Family<CodeLabel, Counter>,
    payloads_in: Vec<Counter<u64, Striped>>,
    pub frames_out: Counter<u64, Striped>,
    pub bytes_in: Counter<u64, Striped>,
    pub bytes_out: Counter<u64, Striped>,
    pub services: Gauge,
    pub subscriptions: Gauge,
    /// Deepest outgoing queue seen since the last scrape.
    queue_high_water: AtomicU64,
    queue_depth_max: Gauge<i64, AtomicI64>,
    publish_seconds: Histogram,
    pub cluster_reconnects: Counter,
    pub inventory_touches_dropped: Counter,
    pub summaries_accepted: Counter,
    pub summaries_refused: Counter,
    pub health_points_written: Counter,
    pub health_write_errors: Counter,
    pub health_points_dropped: Counter,
    pub cluster_write_errors: Counter,
    pub cluster_frames_not_sent: Counter,
    pub logins_failed: Counter,
    pub lockouts: Counter,
    vpn_peers: Gauge,
    vpn_peers_active: Gauge,
    vpn_rx: Family<PeerLabel, Gauge>,
    vpn_tx: Family<PeerLabel, Gauge>,
    vpn_handshake: Family<PeerLabel, Gauge>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// How many cache lines a [`Striped`] counter is spread over.
const STRIPES: usize = 8;

/// The value of a counter spread over cache lines: each thread adds to its
/// own (threads beyond [`STRIPES`] share), so worker threads counting every
/// frame do not fight over one line. Reading sums them.
#[derive(Debug, Default)]
pub struct Striped([Line; STRIPES]);

#[derive(Debug, Default)]
#[repr(align(128))]
struct Line(AtomicU64);

/// This thread's stripe, given out in turn on first use.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
        }
        s.get()
    })
}

impl Atomic<u64> for Striped {
    fn inc(&self) -> u64 {
        self.inc_by(1)
    }

    /// Returns this thread's stripe's previous value (not the counter's).
    fn inc_by(&self, v: u64) -> u64 {
        self.0[stripe()].0.fetch_add(v, Ordering::Relaxed)
    }

    fn get(&self) -> u64 {
        self.0.iter().fold(0, |sum, line| {
            sum.wrapping_add(line.0.load(Ordering::Relaxed))
        })
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("concierge");
        let m = Metrics {
            connections_open: Gauge::default(),
            clients_identified: Gauge::default(),
            closed: Family::default(),
            payloads_in: Vec::new(),
            frames_out: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            services: Gauge::default(),
            subscriptions: Gauge::default(),
            queue_high_water: AtomicU64::new(0),
            queue_depth_max: Gauge::default(),
            publish_seconds: Histogram::new(exponential_buckets(1e-6, 4.0, 10)),
            cluster_reconnects: Counter::default(),
            inventory_touches_dropped: Counter::default(),
            summaries_accepted: Counter::default(),
            summaries_refused: Counter::default(),
            health_points_written: Counter::default(),
            health_write_errors: Counter::default(),
            health_points_dropped: Counter::default(),
            cluster_write_errors: Counter::default(),
            cluster_frames_not_sent: Counter::default(),
            logins_failed: Counter::default(),
            lockouts: Counter::default(),
            vpn_peers: Gauge::default(),
            vpn_peers_active: Gauge::default(),
            vpn_rx: Family::default(),
            vpn_tx: Family::default(),
            vpn_handshake: Family::default(),
            registry: Registry::default(),
        };
        let payloads = Family::<TypeLabel, Counter<u64, Striped>>::default();
        let payloads_in = payload_types()
            .map(|t| payloads.get_or_create(&TypeLabel { r#type: t }).clone())
            .collect();
        registry.register(
            "connections_open",
            "WebSocket connections open",
            m.connections_open.clone(),
        );
        registry.register(
            "clients_identified",
            "Clients identified on this node",
            m.clients_identified.clone(),
        );
        registry.register(
            "sessions_closed",
            "Sessions closed, by WebSocket close code (1006: connection lost without a close frame)",
            m.closed.clone(),
        );
        registry.register(
            "payloads_in",
            "Text payloads received from clients, by type",
            payloads,
        );
        registry.register(
            "frames_out",
            "Frames queued to clients",
            m.frames_out.clone(),
        );
        registry.register(
            "bytes_in",
            "Payload bytes received from clients",
            m.bytes_in.clone(),
        );
        registry.register(
            "bytes_out",
            "Payload bytes queued to clients",
            m.bytes_out.clone(),
        );
        registry.register("services", "Services that exist", m.services.clone());
        registry.register(
            "subscriptions",
            "Service subscriptions",
            m.subscriptions.clone(),
        );
        registry.register(
            "outgoing_queue_depth_max",
            "Deepest client outgoing queue since the previous scrape, in frames",
            m.queue_depth_max.clone(),
        );
        registry.register(
            "broker_publish_seconds",
            "Time to fan one publication out to this node's subscribers",
            m.publish_seconds.clone(),
        );
        registry.register(
            "inventory_touches_dropped",
            "Departures of hosts not written to the inventory (its queue was full): their last_seen is older than it should be",
            m.inventory_touches_dropped.clone(),
        );
        registry.register(
            "summaries_accepted",
            "Health summaries from hosts this process took (docs/PROTOCOL.md section 20)",
            m.summaries_accepted.clone(),
        );
        registry.register(
            "summaries_refused",
            "Health summaries refused for coming sooner than half of summary_interval after the host's last",
            m.summaries_refused.clone(),
        );
        registry.register(
            "health_points_written",
            "Summaries this process wrote to the health store (a batch a second)",
            m.health_points_written.clone(),
        );
        registry.register(
            "health_write_errors",
            "Batches of summaries the health store refused (kept and written again at the next flush)",
            m.health_write_errors.clone(),
        );
        registry.register(
            "health_points_dropped",
            "Summaries not kept because the health store did not keep up (more than 120,000 waiting)",
            m.health_points_dropped.clone(),
        );
        registry.register(
            "cluster_reconnects",
            "Times a connection to Redis (the subscription to the other nodes, or the one requests use) was lost or refused and built again",
            m.cluster_reconnects.clone(),
        );
        registry.register(
            "cluster_write_errors",
            "Writes to the shared namespace that failed: batches the cluster's backend refused, and writes refused because its queue was full",
            m.cluster_write_errors.clone(),
        );
        registry.register(
            "cluster_frames_not_sent",
            "Client frames for other replicas that the cluster could not take (the sender was answered ERROR_UNAVAILABLE, not OK)",
            m.cluster_frames_not_sent.clone(),
        );
        registry.register(
            "logins_failed",
            "Logins refused for a wrong username or password",
            m.logins_failed.clone(),
        );
        registry.register(
            "lockouts",
            "Usernames or source addresses locked out after too many failed logins",
            m.lockouts.clone(),
        );
        registry.register("vpn_peers", "VPN peers recorded", m.vpn_peers.clone());
        registry.register(
            "vpn_peers_active",
            "VPN peers on the interface this gateway manages",
            m.vpn_peers_active.clone(),
        );
        registry.register(
            "vpn_peer_rx_bytes",
            "Bytes the managed interface received from each peer",
            m.vpn_rx.clone(),
        );
        registry.register(
            "vpn_peer_tx_bytes",
            "Bytes the managed interface sent to each peer",
            m.vpn_tx.clone(),
        );
        registry.register(
            "vpn_peer_latest_handshake_seconds",
            "Each peer's latest handshake, seconds since the Unix epoch (0: never)",
            m.vpn_handshake.clone(),
        );
        Metrics {
            registry,
            payloads_in,
            ..m
        }
    }

    /// The VPN peers as of the last sync of the interface.
    pub fn vpn(&self, peers: &[VpnPeer<'_>]) {
        self.vpn_peers.set(peers.len() as i64);
        self.vpn_peers_active
            .set(peers.iter().filter(|p| p.active).count() as i64);
        for family in [&self.vpn_rx, &self.vpn_tx, &self.vpn_handshake] {
            family.clear();
        }
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for p in peers.iter().filter(|p| p.active) {
            let label = PeerLabel {
                peer: p.name.to_owned(),
            };
            self.vpn_rx.get_or_create(&label).set(clamp(p.rx_bytes));
            self.vpn_tx.get_or_create(&label).set(clamp(p.tx_bytes));
            self.vpn_handshake
                .get_or_create(&label)
                .set(clamp(p.latest_handshake));
        }
    }

    /// Counts a received text payload of `kind` (a `PayloadIn::kind`), or an
    /// undecodable one.
    pub fn payload_in(&self, kind: Option<&str>, bytes: usize) {
        let kind = kind.unwrap_or("INVALID");
        if let Some(i) = payload_types().position(|t| t == kind) {
            self.payloads_in[i].inc();
        }
        self.bytes_in.inc_by(bytes as u64);
    }

    /// Counts a frame queued to a client whose queue is now `depth` deep.
    pub fn frame_out(&self, bytes: usize, depth: usize) {
        self.frames_out.inc();
        self.bytes_out.inc_by(bytes as u64);
        let depth = depth as u64;
        if depth > self.queue_high_water.load(Ordering::Relaxed) {
            self.queue_high_water.fetch_max(depth, Ordering::Relaxed);
        }
    }

    pub fn session_closed(&self, code: u16) {
        self.closed.get_or_create(&CodeLabel { code }).inc();
    }

    pub fn published(&self, took: Duration) {
        self.publish_seconds.observe(took.as_secs_f64());
    }

    /// The metrics in OpenMetrics text format.
    pub fn render(&self) -> String {
        let high_water = self.queue_high_water.swap(0, Ordering::Relaxed);
        self.queue_depth_max.set(high_water as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
