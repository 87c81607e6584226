//! Counting: what each receiver got (every message accounted for exactly),
//! latency histograms, and the in-flight window shared by a sender and its
//! receivers.
//!
//! The in-flight window (`--window W`) has two definitions, chosen with
//! `--window-mode`, applied the same way to any server:
//! - `acked` (the default): a sender may send message `i` once fewer than
//!   `W` of its earlier messages are still waiting for the server's reply
//!   (OK). This bounds the requests the server has not processed; what it
//!   has queued for receivers is up to the server (the gateway bounds it
//!   with `max_outgoing_queue`).
//! - `delivered`: a sender may send message `i` once fewer than `W` of its
//!   earlier messages are still missing at one of their receivers. This
//!   bounds every receiver's queue to `W` frames, and makes the run as slow
//!   as its slowest receiver.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Notify;

use super::BenchError;

/// Highest latency the histograms hold, in µs (larger ones are recorded as
/// this; the exact maximum is kept beside).
const MAX_LATENCY_US: u64 = 600_000_000;

/// A latency histogram in µs, three significant digits.
pub fn latency_histogram() -> Histogram<u32> {
    // Constant, valid bounds: 1 µs to 10 min, 3 digits.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// The delivery state of one sender's messages.
pub struct Tracker {
    receivers: AtomicU32,
    counts: Box<[AtomicU32]>,
    complete: AtomicU64,
    /// Replies to the sender's messages.
    replies: AtomicU64,
    notify: Notify,
}

/// What the in-flight window counts (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowMode {
    /// Messages the server has not replied to.
    #[default]
    Acked,
    /// Messages not yet received by all their receivers.
    Delivered,
}

impl Tracker {
    /// A tracker for `messages` messages, each expected by `receivers`.
    pub fn new(messages: u64, receivers: u32) -> Arc<Tracker> {
        Arc::new(Tracker {
            receivers: AtomicU32::new(receivers),
            counts: (0..messages).map(|_| AtomicU32::new(0)).collect(),
            complete: AtomicU64::new(0),
            replies: AtomicU64::new(0),
            notify: Notify::new(),
        })
    }

    /// Sets how many receivers each message has (known once setup is over,
    /// before the first message is sent).
    pub fn set_receivers(&self, receivers: u32) {
        self.receivers.store(receivers, Ordering::Relaxed);
    }

    /// Notes the first receipt of message `seq` by one receiver.
    pub fn delivered(&self, seq: u64) {
        let Some(count) = self.counts.get(seq as usize) else {
            return;
        };
        let now = count.fetch_add(1, Ordering::AcqRel) + 1;
        if now == self.receivers.load(Ordering::Relaxed) {
            self.complete.fetch_add(1, Ordering::AcqRel);
            self.notify.notify_one();
        }
    }

    pub fn receivers(&self) -> u32 {
        self.receivers.load(Ordering::Relaxed)
    }

    /// Deliveries this sender's messages will make if all are sent.
    pub fn expected_deliveries(&self) -> u64 {
        self.counts.len() as u64 * u64::from(self.receivers())
    }

    /// Deliveries of the messages completed so far (for progress bars).
    pub fn completed_deliveries(&self) -> u64 {
        self.complete() * u64::from(self.receivers())
    }

    /// Messages delivered to every receiver.
    pub fn complete(&self) -> u64 {
        self.complete.load(Ordering::Acquire)
    }

    /// Notes a reply from the server to one of the sender's messages.
    pub fn replied(&self) {
        self.replies.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// Messages that left the window: replied to, or fully delivered.
    pub fn done(&self, mode: WindowMode) -> u64 {
        match mode {
            WindowMode::Acked => self.replies.load(Ordering::Acquire),
            WindowMode::Delivered => self.complete(),
        }
    }

    /// Waits until at least `target` messages are done in `mode`. Returns
    /// false when `patience` passes without progress.
    pub async fn wait(&self, mode: WindowMode, target: u64, patience: Duration) -> bool {
        loop {
            let notified = self.notify.notified();
            if self.done(mode) >= target {
                return true;
            }
            if tokio::time::timeout(patience, notified).await.is_err() {
                return self.done(mode) >= target;
            }
        }
    }

    /// Waits until at least `target` messages are fully delivered.
    pub async fn wait_complete(&self, target: u64, patience: Duration) -> bool {
        self.wait(WindowMode::Delivered, target, patience).await
    }
}

/// Everything one receiver got from one sender.
pub struct Receipts {
    messages: u64,
    seen: Vec<u64>,
    pub delivered: u64,
    pub duplicated: u64,
    /// Benchmark frames with a sequence number that was never sent.
    pub unexpected: u64,
    pub latency: Histogram<u32>,
    pub max_latency_ns: u64,
    pub last_ns: u64,
}

impl Receipts {
    pub fn new(messages: u64) -> Receipts {
        Receipts {
            messages,
            seen: vec![0; messages.div_ceil(64) as usize],
            delivered: 0,
            duplicated: 0,
            unexpected: 0,
            latency: latency_histogram(),
            max_latency_ns: 0,
            last_ns: 0,
        }
    }

    /// Records message `seq`, sent at `sent_ns` and received at `now_ns`
    /// (both on the run's clock). Returns true for a first receipt.
    pub fn record(&mut self, seq: u64, sent_ns: u64, now_ns: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        let slot = self.seen.get_mut(word).filter(|_| seq < self.messages);
        let Some(slot) = slot else {
            self.unexpected += 1;
            return false;
        };
        if *slot & bit != 0 {
            self.duplicated += 1;
            return false;
        }
        *slot |= bit;
        self.delivered += 1;
        let latency_ns = now_ns.saturating_sub(sent_ns);
        self.max_latency_ns = self.max_latency_ns.max(latency_ns);
        self.latency.saturating_record((latency_ns / 1_000).max(1));
        self.last_ns = self.last_ns.max(now_ns);
        true
    }
}

/// The message accounting of a run, summed over receivers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Messages sent, over all senders.
    pub sent: u64,
    /// Replies OK to those messages.
    pub acked: u64,
    /// Replies other than OK.
    pub rejected: u64,
    /// Deliveries expected: each message sent times its receivers.
    pub expected: u64,
    /// Distinct deliveries.
    pub delivered: u64,
    pub missing: u64,
    pub duplicated: u64,
    /// Benchmark frames that were never sent (bad sequence number).
    pub unexpected: u64,
    /// Relayed MESSAGEs whose envelope did not match what was sent.
    pub malformed: u64,
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Sums receivers' histograms.
pub struct LatencySum {
    histogram: Histogram<u32>,
    max_ns: u64,
}

impl Default for LatencySum {
    fn default() -> Self {
        LatencySum {
            histogram: latency_histogram(),
            max_ns: 0,
        }
    }
}

impl LatencySum {
    pub fn add(&mut self, histogram: &Histogram<u32>, max_ns: u64) -> Result<(), BenchError> {
        self.histogram
            .add(histogram)
            .map_err(|e| BenchError::Protocol(format!("cannot merge histograms: {e:?}")))?;
        self.max_ns = self.max_ns.max(max_ns);
        Ok(())
    }

    pub fn record_ns(&mut self, ns: u64) {
        self.histogram.saturating_record((ns / 1_000).max(1));
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn summary(&self) -> Option<Latency> {
        let h = &self.histogram;
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1_000.0;
        Some(Latency {
            samples: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: self.max_ns as f64 / 1e6,
            mean_ms: h.mean() / 1_000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_count_every_message_exactly() {
        let mut r = Receipts::new(100);
        assert!(r.record(0, 0, 5_000));
        assert!(r.record(99, 1_000, 3_000));
        assert!(!r.record(0, 0, 9_000));
        assert!(!r.record(100, 0, 9_000));
        assert_eq!(
            (r.delivered, r.duplicated, r.unexpected),
            (2, 1, 1),
            "two firsts, one duplicate, one out of range"
        );
        assert_eq!(r.max_latency_ns, 5_000);
        assert_eq!(r.last_ns, 5_000);
    }

    #[tokio::test]
    async fn the_window_opens_when_every_receiver_has_a_message() {
        let t = Tracker::new(4, 2);
        t.delivered(0);
        assert_eq!(t.complete(), 0);
        t.delivered(0);
        assert_eq!(t.complete(), 1);
        assert!(t.wait_complete(1, Duration::from_millis(10)).await);
        assert!(!t.wait_complete(2, Duration::from_millis(10)).await);
        t.delivered(7); // never sent: ignored
        assert_eq!(t.complete(), 1);
        assert_eq!(t.done(WindowMode::Acked), 0);
        t.replied();
        t.replied();
        assert!(
            t.wait(WindowMode::Acked, 2, Duration::from_millis(10))
                .await
        );
        assert_eq!(t.done(WindowMode::Delivered), 1);
    }

    #[test]
    fn latency_summary_is_ordered() {
        let mut sum = LatencySum::default();
        assert!(sum.summary().is_none());
        for us in 1..=1000 {
            sum.record_ns(us * 1_000);
        }
        let l = sum.summary().expect("samples");
        assert_eq!(l.samples, 1000);
        assert!(l.p50_ms <= l.p90_ms && l.p90_ms <= l.p99_ms && l.p99_ms <= l.max_ms);
        assert!((l.max_ms - 1.0).abs() < 1e-9);
        assert!((l.p50_ms - 0.5).abs() < 0.01, "{l:?}");
    }
}
