//! Hosts' health over time: every summary a host sends (PROTOCOL §20),
//! kept as a series per host, and each host's latest, shared by every node
//! so that any replica answers for any host.
//!
//! Why not the [`Store`](super::store::Store) or the
//! [`Histories`](super::Histories): ten thousand hosts reporting every ten
//! seconds are a thousand writes a second that nobody reads until someone
//! opens a chart. The store reads tables whole and announces every write;
//! a service history is bounded by count and dropped with its owner. The
//! health store writes a batch of samples in one transaction or one round
//! trip, reads one host's range without touching the others', keeps points
//! in a compact fixed-size encoding ([`POINT_BYTES`] each, see
//! [`encode`]), and thins out old points ([`HealthStore::compact`]) rather
//! than keeping them at full resolution for ever.
//!
//! The gateway decides what a host's latest is (its trend is the fleet
//! layer's); the store keeps it as given, as opaque JSON of
//! [`HostHealth`].

use crate::protocol::health::{HealthPoint, HostHealth, Summary, MAX_LOAD};

use super::store::StoreFuture;

/// One summary to record: a point of `host`'s series, and what becomes
/// its latest.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub host: String,
    pub point: HealthPoint,
    pub latest: HostHealth,
}

/// What [`HealthStore::compact`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Points replaced by their steps' averages: the points averaged less
    /// the averages.
    pub downsampled: u64,
    /// Points removed for being older than the retention.
    pub dropped: u64,
}

/// Hosts' series and latest summaries (see the module documentation).
///
/// Like the store's, every method is atomic, and an operation that fails
/// with [`StoreError::Unavailable`](super::store::StoreError) may or may
/// not have taken effect.
pub trait HealthStore: Send + Sync + 'static {
    /// Appends each sample's point to its host's series and makes its
    /// `latest` the host's, in one transaction or round trip. Points of a
    /// host arrive in time order; a point no newer than the host's last
    /// stored one is not appended (a resent batch adds nothing).
    fn record(&self, samples: Vec<Sample>) -> StoreFuture<'_, ()>;

    /// The latest health of every host that has one, sorted by host.
    fn latest(&self) -> StoreFuture<'_, Vec<(String, HostHealth)>>;

    /// One host's latest health.
    fn latest_of(&self, host: &str) -> StoreFuture<'_, Option<HostHealth>>;

    /// `host`'s stored points with `since <= at <= until`, oldest first:
    /// as recorded where they are recent, their steps' averages where
    /// [`compact`](HealthStore::compact) thinned them.
    fn series(&self, host: &str, since: u64, until: u64) -> StoreFuture<'_, Vec<HealthPoint>>;

    /// Replaces every host's points older than `raw_before` by the averages
    /// of `step`-second steps (aligned on multiples of `step`, whole steps
    /// only: `raw_before` is rounded down to one; a step already averaged
    /// is left as it is), and removes the points older than `drop_before`
    /// (with those of the step that starts before it, whose average would
    /// be older). Idempotent: running it twice changes nothing more.
    fn compact(&self, raw_before: u64, step: u64, drop_before: u64) -> StoreFuture<'_, Compacted>;

    /// Forgets `host`'s series and latest.
    fn forget(&self, host: &str) -> StoreFuture<'_, ()>;

    /// The bytes the stored points take, encoded (for the benchmark and
    /// `/metrics`; the storage's own overhead is not counted).
    fn point_bytes(&self) -> StoreFuture<'_, u64>;
}

/// A host's stored latest health (JSON of [`HostHealth`]), or `None`, with
/// a warning, for one this code cannot read: both stores leave it out.
pub(super) fn read_latest(host: &str, json: &[u8]) -> Option<HostHealth> {
    match serde_json::from_slice(json) {
        Ok(health) => Some(health),
        Err(e) => {
            tracing::warn!(%host, error = %e, "a stored latest health that cannot be read is left out");
            None
        }
    }
}

/// The size of one encoded point.
pub const POINT_BYTES: usize = 18;

/// `vpn_age` as encoded when the host has none.
const NO_VPN_AGE: u32 = u32::MAX;

/// Hundredths, saturating: what a percentage or a load is stored as.
fn hundredths<const MAX: u64>(value: f32) -> u64 {
    ((f64::from(value) * 100.0).round().max(0.0) as u64).min(MAX)
}

/// A point as [`POINT_BYTES`] little-endian bytes: `at` (u32 seconds),
/// `cpu` (u16 hundredths), `load` (u32 hundredths), `mem` and `disk` (u16
/// hundredths), `vpn_age` (u32 seconds, `u32::MAX` for none). Percentages
/// keep two decimals; times up to the year 2106.
pub fn encode(point: &HealthPoint, into: &mut Vec<u8>) {
    let s = &point.summary;
    let at = u32::try_from(point.at).unwrap_or(u32::MAX);
    into.extend_from_slice(&at.to_le_bytes());
    into.extend_from_slice(&(hundredths::<10_000>(s.cpu) as u16).to_le_bytes());
    into.extend_from_slice(&(hundredths::<{ u32::MAX as u64 }>(s.load) as u32).to_le_bytes());
    into.extend_from_slice(&(hundredths::<10_000>(s.mem) as u16).to_le_bytes());
    into.extend_from_slice(&(hundredths::<10_000>(s.disk) as u16).to_le_bytes());
    let age = s
        .vpn_age
        .map_or(NO_VPN_AGE, |a| u32::try_from(a).unwrap_or(NO_VPN_AGE - 1));
    into.extend_from_slice(&age.to_le_bytes());
}

/// The points of `bytes`, [`encode`]d back to back. Trailing bytes short
/// of a whole point (a damaged record) are ignored.
pub fn decode(bytes: &[u8]) -> Vec<HealthPoint> {
    bytes
        .chunks_exact(POINT_BYTES)
        .map(|b| {
            let u16_at = |i: usize| f32::from(u16::from_le_bytes([b[i], b[i + 1]])) / 100.0;
            let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            let age = u32_at(14);
            HealthPoint {
                at: u64::from(u32_at(0)),
                summary: Summary {
                    cpu: u16_at(4),
                    load: (u32_at(6) as f32 / 100.0).min(MAX_LOAD),
                    mem: u16_at(10),
                    disk: u16_at(12),
                    vpn_age: (age != NO_VPN_AGE).then_some(u64::from(age)),
                },
            }
        })
        .collect()
}

/// `points` (oldest first) averaged into steps of `step` seconds aligned on
/// multiples of `step`, each at its step's start; `vpn_age` is the step's
/// latest. Used to thin stored points and to fit a long range into a
/// reply.
pub fn downsample(points: &[HealthPoint], step: u64) -> Vec<HealthPoint> {
    let step = step.max(1);
    let mut out: Vec<HealthPoint> = Vec::new();
    let mut sums = [0f64; 4];
    let mut count = 0f64;
    let flush =
        |out: &mut Vec<HealthPoint>, start: u64, sums: &mut [f64; 4], count: &mut f64, vpn_age| {
            if *count > 0.0 {
                let avg = |i: usize| (sums[i] / *count) as f32;
                out.push(HealthPoint {
                    at: start,
                    summary: Summary {
                        cpu: avg(0),
                        load: avg(1),
                        mem: avg(2),
                        disk: avg(3),
                        vpn_age,
                    },
                });
            }
            *sums = [0.0; 4];
            *count = 0.0;
        };
    let mut current: Option<(u64, Option<u64>)> = None;
    for p in points {
        let start = p.at - p.at % step;
        if let Some((at, vpn_age)) = current {
            if at != start {
                flush(&mut out, at, &mut sums, &mut count, vpn_age);
            }
        }
        let s = &p.summary;
        for (sum, v) in sums.iter_mut().zip([s.cpu, s.load, s.mem, s.disk]) {
            *sum += f64::from(v);
        }
        count += 1.0;
        current = Some((start, s.vpn_age));
    }
    if let Some((at, vpn_age)) = current {
        flush(&mut out, at, &mut sums, &mut count, vpn_age);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at: u64, cpu: f32, vpn_age: Option<u64>) -> HealthPoint {
        HealthPoint {
            at,
            summary: Summary {
                cpu,
                load: 1.5,
                mem: 40.25,
                disk: 99.99,
                vpn_age,
            },
        }
    }

    #[test]
    fn points_are_encoded_back_to_back() {
        let points = [
            point(1_796_578_315, 12.34, Some(7)),
            point(1_796_578_325, 100.0, None),
        ];
        let mut bytes = Vec::new();
        for p in &points {
            encode(p, &mut bytes);
        }
        assert_eq!(bytes.len(), 2 * POINT_BYTES);
        bytes.push(0); // a damaged tail is ignored
        assert_eq!(decode(&bytes), points);
    }

    #[test]
    fn steps_are_averaged() {
        let points = [
            point(600, 10.0, Some(1)),
            point(610, 30.0, Some(2)),
            point(900, 50.0, None),
        ];
        let thin = downsample(&points, 300);
        assert_eq!(thin.len(), 2);
        assert_eq!(
            (thin[0].at, thin[0].summary.cpu, thin[0].summary.vpn_age),
            (600, 20.0, Some(2))
        );
        assert_eq!((thin[1].at, thin[1].summary.cpu), (900, 50.0));
        assert!(downsample(&[], 300).is_empty());
    }
}
