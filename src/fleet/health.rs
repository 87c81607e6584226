//! Hosts' health (PROTOCOL §20): the summaries every host sends every
//! `summary_interval`, whether or not anyone watches, kept as each host's
//! latest (with a trend) and as a series in the cluster's
//! [`HealthStore`], so that any replica lists every host's health and
//! draws any host's last day.
//!
//! Summaries arrive at the replica that holds the host's connection, a
//! thousand a second for ten thousand hosts. They are not written one by
//! one: each is checked and rate-limited here (at most one a second per
//! host, since points are kept to the second), queued (at most
//! [`MAX_PENDING`]: beyond, while the store does not keep up, new ones are
//! dropped and counted), and the queue is written every [`FLUSH`] in one
//! transaction or one round trip. A host's trend (its last [`TREND_POINTS`] CPU readings)
//! is kept in memory by the replica it reports to, read from the store
//! when it first reports there.
//!
//! Old points are thinned by a janitor that runs under a store lease, so
//! that one replica does it: kept at the interval for `history_hours`, as
//! `history_step_secs` averages for `history_days`, then dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::auth::{now_ms, now_secs};
use crate::cluster::health::{downsample, HealthStore, Sample};
use crate::cluster::store::{Store, StoreError, Table};
use crate::config::Settings;
use crate::protocol::agent::{Failure, Reason};
use crate::protocol::health::{
    HealthPoint, History, HistoryQuery, HostHealth, Summary, DEFAULT_HISTORY_SECS,
    MAX_HISTORY_POINTS, TREND_POINTS,
};

/// How often pending summaries are written.
const FLUSH: Duration = Duration::from_secs(1);

/// The most summaries waiting to be written: a minute of 20,000 hosts
/// every 10 s, about 10 MB.
pub const MAX_PENDING: usize = 120_000;

/// How often the janitor thins old points.
const COMPACT_EVERY: Duration = Duration::from_secs(600);

/// The janitor's lease.
const LEASES: Table = Table::new("health_leases");

/// What the health of hosts is kept for (from [`Settings`]).
#[derive(Debug, Clone, Copy)]
pub struct HealthSettings {
    /// Seconds between a host's summaries.
    pub interval: u64,
    /// Seconds points are kept as they came.
    pub raw: u64,
    /// Seconds points are kept at all.
    pub retention: u64,
    /// The width of a thinned point, in seconds.
    pub step: u64,
}

impl HealthSettings {
    pub fn new(settings: &Settings) -> HealthSettings {
        HealthSettings {
            interval: settings.summary_interval_secs,
            raw: settings.history_hours * 3_600,
            retention: settings.history_days * 86_400,
            step: settings.history_step_secs,
        }
    }
}

/// What this replica remembers of a host that reports to it.
struct Recent {
    /// When its last summary was accepted, in milliseconds.
    last_ms: u64,
    trend: VecDeque<u8>,
}

/// Hosts' health (see the module documentation).
pub struct Health {
    store: Arc<dyn HealthStore>,
    settings: HealthSettings,
    recent: Mutex<HashMap<String, Recent>>,
    pending: Mutex<Vec<Sample>>,
}

impl Health {
    /// Hosts' health kept in `store`, with its writer and its janitor
    /// (which takes `leases`' lease). Must run inside a Tokio runtime.
    pub fn start(
        store: Arc<dyn HealthStore>,
        leases: Arc<dyn Store>,
        settings: HealthSettings,
    ) -> Arc<Health> {
        let health = Arc::new(Health {
            store,
            settings,
            recent: Mutex::default(),
            pending: Mutex::default(),
        });
        tokio::spawn(flush(Arc::downgrade(&health)));
        tokio::spawn(janitor(Arc::downgrade(&health), leases));
        health
    }

    /// Seconds between a host's summaries.
    pub fn interval(&self) -> u64 {
        self.settings.interval
    }

    /// Takes `host`'s summary: checked, then written within [`FLUSH`].
    /// Answers when it was taken (seconds since the Unix epoch).
    pub async fn accept(&self, host: &str, summary: Summary) -> Result<u64, Failure> {
        summary.check().map_err(Failure::bad_argument)?;
        let now = now_ms();
        let soonest = (self.settings.interval * 1_000 / 2).max(1_000);
        let known = {
            let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            match recent.get(host) {
                Some(r) if now.saturating_sub(r.last_ms) < soonest => {
                    crate::metrics::get().summaries_refused.inc();
                    return Err(Failure::new(
                        Reason::Limit,
                        format!(
                            "one summary every {} s (summary_interval): this one came {} ms after the last, \
                             sooner than {soonest} ms",
                            self.settings.interval,
                            now.saturating_sub(r.last_ms)
                        ),
                    ));
                }
                Some(_) => true,
                None => false,
            }
        };
        // The first summary on this replica: the trend so far is the
        // store's.
        let earlier = if known {
            None
        } else {
            let latest = self.store.latest_of(host).await.unwrap_or_else(|e| {
                tracing::warn!(%host, error = %e, "could not read the host's latest summary");
                None
            });
            Some(latest.map(|l| l.trend).unwrap_or_default())
        };
        let at = now / 1_000;
        let trend = {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            let entry = recent.entry(host.to_owned()).or_insert_with(|| Recent {
                last_ms: 0,
                trend: earlier.unwrap_or_default().into(),
            });
            entry.last_ms = now;
            if entry.trend.len() == TREND_POINTS {
                entry.trend.pop_front();
            }
            entry
                .trend
                .push_back(summary.cpu.round().clamp(0.0, 100.0) as u8);
            entry.trend.iter().copied().collect()
        };
        let sample = Sample {
            host: host.to_owned(),
            point: HealthPoint { at, summary },
            latest: HostHealth { at, summary, trend },
        };
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() >= MAX_PENDING {
                crate::metrics::get().health_points_dropped.inc();
                return Err(Failure::new(
                    Reason::Unavailable,
                    "the health store is not keeping up: this summary is not kept",
                ));
            }
            pending.push(sample);
        }
        crate::metrics::get().summaries_accepted.inc();
        Ok(at)
    }

    /// Every host's latest health, by host.
    pub async fn latest(&self) -> Result<HashMap<String, HostHealth>, StoreError> {
        Ok(self.store.latest().await?.into_iter().collect())
    }

    /// A host's stored summaries, as `query` asks (the caller has checked
    /// that the host exists).
    pub async fn history(&self, query: &HistoryQuery) -> Result<History, Failure> {
        let until = query.until.unwrap_or_else(now_secs);
        let since = query
            .since
            .unwrap_or_else(|| until.saturating_sub(DEFAULT_HISTORY_SECS));
        if since > until {
            return Err(Failure::bad_argument(format!(
                "`since` ({since}) is after `until` ({until})"
            )));
        }
        let span = until - since;
        let widest = span.div_ceil(MAX_HISTORY_POINTS as u64).max(1);
        let step = query
            .step
            .unwrap_or(0)
            .max(self.settings.interval)
            .max(widest);
        let points = self
            .store
            .series(&query.host, since, until)
            .await
            .map_err(|e| Failure::new(Reason::Unavailable, e.to_string()))?;
        let points = if step > self.settings.interval || points.len() > MAX_HISTORY_POINTS {
            downsample(&points, step)
        } else {
            points
        };
        Ok(History {
            host: query.host.clone(),
            since,
            until,
            step,
            points,
        })
    }

    /// Forgets a host's summaries.
    pub async fn forget(&self, host: &str) -> Result<(), StoreError> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(host);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| s.host != host);
        self.store.forget(host).await
    }

    /// Writes what is pending; a batch that fails is kept for the next
    /// flush, before what came since.
    async fn write_pending(&self) {
        let batch: Vec<Sample> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if batch.is_empty() {
            return;
        }
        let count = batch.len() as u64;
        match self.store.record(batch.clone()).await {
            Ok(()) => {
                crate::metrics::get().health_points_written.inc_by(count);
            }
            Err(e) => {
                crate::metrics::get().health_write_errors.inc();
                tracing::warn!(error = %e, samples = count, "could not write hosts' summaries; retrying");
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                let since = std::mem::replace(&mut *pending, batch);
                pending.extend(since);
                if pending.len() > MAX_PENDING {
                    let over = pending.len() - MAX_PENDING;
                    crate::metrics::get()
                        .health_points_dropped
                        .inc_by(over as u64);
                    pending.drain(..over);
                }
            }
        }
        // Hosts silent for three intervals (gone, or reporting to another
        // replica now) are forgotten here; the store keeps their trend.
        let stale = now_ms().saturating_sub(self.settings.interval * 3_000);
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, r| r.last_ms >= stale);
    }
}

/// Writes pending summaries every [`FLUSH`] until `health` is dropped.
async fn flush(health: std::sync::Weak<Health>) {
    let mut ticks = tokio::time::interval(FLUSH);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(health) = health.upgrade() else {
            return;
        };
        health.write_pending().await;
    }
}

/// Thins and drops old points every [`COMPACT_EVERY`] (at once on start),
/// on the one replica that holds the lease.
async fn janitor(health: std::sync::Weak<Health>, leases: Arc<dyn Store>) {
    let holder = uuid::Uuid::new_v4().to_string();
    let mut ticks = tokio::time::interval(COMPACT_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(health) = health.upgrade() else {
            return;
        };
        // Held for the interval: a replica that dies hands it on then.
        match leases
            .acquire(LEASES, "compact", &holder, COMPACT_EVERY)
            .await
        {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "could not take the health janitor's lease");
                continue;
            }
        }
        let s = health.settings;
        let now = now_secs();
        match health
            .store
            .compact(
                now.saturating_sub(s.raw),
                s.step,
                now.saturating_sub(s.retention),
            )
            .await
        {
            Ok(done) => tracing::debug!(
                downsampled = done.downsampled,
                dropped = done.dropped,
                "hosts' summaries compacted"
            ),
            Err(e) => tracing::warn!(error = %e, "could not compact hosts' summaries"),
        }
    }
}
