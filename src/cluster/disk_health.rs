//! The [`HealthStore`] of a gateway running alone: hosts' summaries in
//! `health.db`, an SQLite file of their own beside the store's
//! `concierge.db` in the data folder.
//!
//! # Why a file of its own
//!
//! A thousand points a second, thinned out and dropped as they age, are
//! not what the store's small, precious file is for (see
//! [`disk_ledger`](super::disk_ledger) for the same reasoning about jobs):
//! apart, the summaries never hold the store's write lock while a user
//! logs in, and the file can be deleted (losing the history, nothing
//! else) without touching accounts. It is opened and kept like the other
//! two ([`sqlite`](super::sqlite)): write-ahead logged, synced by every
//! commit, mode 0600, created by its first write, one thread owning the
//! connection, marked `PRAGMA application_id` `Chlt` and `user_version`
//! [`SCHEMA`].
//!
//! Schema 1:
//!
//! * `chunks (host, hour, points)`: a host's points of one hour (`hour` is
//!   the hour's first second), [`encode`]d back to back, keyed by host and
//!   hour (`WITHOUT ROWID`: a host's hours lie together, in order, so a
//!   range is one index walk). An append rewrites the chunk: it holds at
//!   most 360 points at a 10-second interval (6.3 KiB), so a point costs
//!   one row rewrite, not one row (a row per point would cost three times
//!   the bytes in keys alone);
//! * `latest (host, last_at, health)`: each host's latest [`HostHealth`]
//!   as JSON, and the time of its last appended point, which keeps a
//!   resent point out.
//!
//! [`compact`](HealthStore::compact) rewrites the chunks it thins; it runs
//! from the gateway's janitor, not on the write path.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use super::health::{decode, downsample, encode, read_latest, Compacted, HealthStore, Sample};
use super::sqlite::{FileThread, Schema, Worker};
use super::store::{StoreError, StoreFuture};
use crate::protocol::health::{HealthPoint, HostHealth};

/// What names the file in errors.
const WHAT: &str = "the health store";

/// `PRAGMA application_id` of a health store: "Chlt" in ASCII.
const APPLICATION_ID: i64 = 0x4368_6c74;

/// The schema version (`PRAGMA user_version`) this code reads and writes.
pub const SCHEMA: i64 = 1;

/// The seconds of one chunk.
const HOUR: u64 = 3_600;

const CREATE: &str = "CREATE TABLE chunks (
  host TEXT NOT NULL,
  hour INTEGER NOT NULL,
  thin INTEGER NOT NULL,
  points BLOB NOT NULL,
  PRIMARY KEY (host, hour)
) STRICT, WITHOUT ROWID;
CREATE INDEX chunks_by_hour ON chunks (hour);
CREATE TABLE latest (
  host TEXT PRIMARY KEY NOT NULL,
  last_at INTEGER NOT NULL,
  health BLOB NOT NULL
) STRICT, WITHOUT ROWID;";

const LAST_AT: &str = "SELECT last_at FROM latest WHERE host = ?1";
const CHUNK: &str = "SELECT points FROM chunks WHERE host = ?1 AND hour = ?2";
/// SQLite's `||` makes text of blobs: an append is read, then written.
const WRITE_CHUNK: &str = "INSERT INTO chunks (host, hour, thin, points) VALUES (?1, ?2, 0, ?3)
  ON CONFLICT (host, hour) DO UPDATE SET points = excluded.points";
const SET_LATEST: &str = "INSERT INTO latest (host, last_at, health) VALUES (?1, ?2, ?3)
  ON CONFLICT (host) DO UPDATE SET last_at = excluded.last_at, health = excluded.health";
const LATEST: &str = "SELECT host, health FROM latest ORDER BY host";
const LATEST_OF: &str = "SELECT health FROM latest WHERE host = ?1";
const SERIES: &str = "SELECT points FROM chunks WHERE host = ?1 AND hour BETWEEN ?2 AND ?3
  ORDER BY hour";
/// The bytes of the chunks whose every point is older than a time, and
/// their removal.
const EXPIRED_BYTES: &str =
    "SELECT coalesce(sum(length(points)), 0) FROM chunks WHERE hour <= ?1 - 3600";
const EXPIRE: &str = "DELETE FROM chunks WHERE hour <= ?1 - 3600";
/// The chunks to thin: not yet thinned and with points before the cut
/// (?1), or with points to drop (?2: after [`EXPIRE`], the chunk that
/// straddles the retention's start).
const OLD_CHUNKS: &str =
    "SELECT host, hour, points FROM chunks WHERE hour < ?1 AND (thin = 0 OR hour < ?2)";
const PUT_CHUNK: &str = "UPDATE chunks SET points = ?3, thin = ?4 WHERE host = ?1 AND hour = ?2";
const DROP_CHUNK: &str = "DELETE FROM chunks WHERE host = ?1 AND hour = ?2";
const FORGET_CHUNKS: &str = "DELETE FROM chunks WHERE host = ?1";
const FORGET_LATEST: &str = "DELETE FROM latest WHERE host = ?1";
const POINT_BYTES: &str = "SELECT coalesce(sum(length(points)), 0) FROM chunks";

static FILE: Schema = Schema {
    what: WHAT,
    noun: "health store",
    application_id: APPLICATION_ID,
    version: SCHEMA,
    create: CREATE,
};

/// The standalone [`HealthStore`]: see the module documentation.
pub struct DiskHealth {
    thread: FileThread<Worker>,
}

impl DiskHealth {
    /// A health store on the file at `path`, which need not exist, nor its
    /// folder: nothing is created until the first write. Blocks while an
    /// existing file is opened and checked.
    pub fn open(path: impl AsRef<Path>) -> Result<DiskHealth, StoreError> {
        let path = path.as_ref();
        let worker = Worker::open(&FILE, path)?;
        let thread = FileThread::spawn("concierge-health", path, WHAT, worker, None)?;
        Ok(DiskHealth { thread })
    }
}

/// A time as SQLite stores it.
fn secs_sql(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// Whether compacting removes `point`: it is older than `drop_before`, or
/// it would be averaged into a step that starts before `drop_before` (an
/// average older than the retention, which the next run would drop:
/// compacting twice would not be idempotent).
fn gone(point: &HealthPoint, cut: u64, step: u64, drop_before: u64) -> bool {
    point.at < drop_before || (point.at < cut && point.at - point.at % step < drop_before)
}

/// Thins one chunk's points: those before `cut` averaged into `step`s,
/// the [`gone`] ones removed. `None` when nothing changes.
fn thin(points: &[HealthPoint], cut: u64, step: u64, drop_before: u64) -> Option<Vec<HealthPoint>> {
    let kept: Vec<HealthPoint> = points
        .iter()
        .copied()
        .filter(|p| !gone(p, cut, step, drop_before))
        .collect();
    let split = kept.partition_point(|p| p.at < cut);
    let mut thinned = downsample(&kept[..split], step);
    thinned.extend_from_slice(&kept[split..]);
    (thinned != points).then_some(thinned)
}

fn compact_chunks(
    conn: &Connection,
    raw_before: u64,
    step: u64,
    drop_before: u64,
) -> rusqlite::Result<Compacted> {
    let step = step.max(1);
    // Aligned on a step, so that no step holds both averages and raw
    // points: compacting again finds each average alone in its step.
    let cut = raw_before - raw_before % step;
    let mut done = Compacted::default();
    let expired: i64 = conn
        .prepare_cached(EXPIRED_BYTES)?
        .query_row([secs_sql(drop_before)], |row| row.get(0))?;
    done.dropped = u64::try_from(expired).unwrap_or(0) / super::health::POINT_BYTES as u64;
    conn.prepare_cached(EXPIRE)?
        .execute([secs_sql(drop_before)])?;
    let chunks: Vec<(String, i64, Vec<u8>)> = conn
        .prepare_cached(OLD_CHUNKS)?
        .query_map(
            [secs_sql(cut.max(drop_before)), secs_sql(drop_before)],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;
    for (host, hour, bytes) in chunks {
        // A chunk wholly before the cut is thinned for good.
        let whole = u64::try_from(hour).unwrap_or(0) + HOUR <= cut;
        let points = decode(&bytes);
        let Some(thinned) = thin(&points, cut, step, drop_before) else {
            if whole {
                conn.prepare_cached(PUT_CHUNK)?
                    .execute((&host, hour, &bytes, true))?;
            }
            continue;
        };
        let dropped = points
            .iter()
            .filter(|p| gone(p, cut, step, drop_before))
            .count();
        done.dropped += dropped as u64;
        done.downsampled += (points.len() - dropped - thinned.len()) as u64;
        if thinned.is_empty() {
            conn.prepare_cached(DROP_CHUNK)?.execute((&host, hour))?;
        } else {
            let mut encoded = Vec::with_capacity(thinned.len() * super::health::POINT_BYTES);
            for point in &thinned {
                encode(point, &mut encoded);
            }
            conn.prepare_cached(PUT_CHUNK)?
                .execute((&host, hour, &encoded, whole))?;
        }
    }
    Ok(done)
}

impl HealthStore for DiskHealth {
    fn record(&self, samples: Vec<Sample>) -> StoreFuture<'_, ()> {
        self.thread.run(move |worker| {
            if samples.is_empty() {
                return Ok(());
            }
            worker.write(None, |txn| {
                for sample in &samples {
                    let at = sample.point.at;
                    let last: Option<i64> = txn
                        .prepare_cached(LAST_AT)?
                        .query_row([&sample.host], |row| row.get(0))
                        .optional()?;
                    if last.is_some_and(|last| last >= secs_sql(at)) {
                        continue;
                    }
                    let hour = secs_sql(at - at % HOUR);
                    let mut bytes: Vec<u8> = txn
                        .prepare_cached(CHUNK)?
                        .query_row((&sample.host, hour), |row| row.get(0))
                        .optional()?
                        .unwrap_or_default();
                    encode(&sample.point, &mut bytes);
                    txn.prepare_cached(WRITE_CHUNK)?
                        .execute((&sample.host, hour, &bytes))?;
                    // Numbers and a short list: serializing cannot fail.
                    let latest = serde_json::to_vec(&sample.latest).unwrap_or_default();
                    txn.prepare_cached(SET_LATEST)?.execute((
                        &sample.host,
                        secs_sql(at),
                        &latest,
                    ))?;
                }
                Ok(())
            })
        })
    }

    fn latest(&self) -> StoreFuture<'_, Vec<(String, HostHealth)>> {
        self.thread.run(move |worker| {
            worker.read(Vec::new(), |conn| {
                let mut statement = conn.prepare_cached(LATEST)?;
                let rows = statement.query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
                })?;
                let mut latest = Vec::new();
                for row in rows {
                    let (host, bytes) = row?;
                    if let Some(health) = read_latest(&host, &bytes) {
                        latest.push((host, health));
                    }
                }
                Ok(latest)
            })
        })
    }

    fn latest_of(&self, host: &str) -> StoreFuture<'_, Option<HostHealth>> {
        let host = host.to_owned();
        self.thread.run(move |worker| {
            worker.read(None, |conn| {
                let bytes: Option<Vec<u8>> = conn
                    .prepare_cached(LATEST_OF)?
                    .query_row([&host], |row| row.get(0))
                    .optional()?;
                Ok(bytes.and_then(|b| read_latest(&host, &b)))
            })
        })
    }

    fn series(&self, host: &str, since: u64, until: u64) -> StoreFuture<'_, Vec<HealthPoint>> {
        let host = host.to_owned();
        self.thread.run(move |worker| {
            worker.read(Vec::new(), |conn| {
                let mut statement = conn.prepare_cached(SERIES)?;
                let chunks = statement.query_map(
                    (&host, secs_sql(since - since % HOUR), secs_sql(until)),
                    |row| row.get::<_, Vec<u8>>(0),
                )?;
                let mut points = Vec::new();
                for chunk in chunks {
                    points.extend(
                        decode(&chunk?)
                            .into_iter()
                            .filter(|p| (since..=until).contains(&p.at)),
                    );
                }
                Ok(points)
            })
        })
    }

    fn compact(&self, raw_before: u64, step: u64, drop_before: u64) -> StoreFuture<'_, Compacted> {
        self.thread.run(move |worker| {
            worker.write(Some(Compacted::default()), |txn| {
                compact_chunks(txn, raw_before, step, drop_before)
            })
        })
    }

    fn forget(&self, host: &str) -> StoreFuture<'_, ()> {
        let host = host.to_owned();
        self.thread.run(move |worker| {
            worker.write(Some(()), |txn| {
                txn.prepare_cached(FORGET_CHUNKS)?.execute([&host])?;
                txn.prepare_cached(FORGET_LATEST)?.execute([&host])?;
                Ok(())
            })
        })
    }

    fn point_bytes(&self) -> StoreFuture<'_, u64> {
        self.thread.run(move |worker| {
            worker.read(0, |conn| {
                let bytes: i64 = conn
                    .prepare_cached(POINT_BYTES)?
                    .query_row([], |row| row.get(0))?;
                Ok(u64::try_from(bytes).unwrap_or(0))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::health::Summary;

    fn at(at: u64, cpu: f32) -> HealthPoint {
        HealthPoint {
            at,
            summary: Summary {
                cpu,
                ..Summary::default()
            },
        }
    }

    #[test]
    fn a_chunk_is_thinned_once() {
        let points: Vec<_> = (0..60).map(|i| at(3_600 + i * 10, i as f32)).collect();
        // Points before 3,900 averaged into 5-minute steps, none dropped.
        let thinned = thin(&points, 3_900, 300, 0).expect("changed");
        assert_eq!(thinned.len(), 1 + 30);
        assert_eq!((thinned[0].at, thinned[0].summary.cpu), (3_600, 14.5));
        assert_eq!(thin(&thinned, 3_900, 300, 0), None);
        // Dropping what is older than 3,700 removes the average.
        let dropped = thin(&thinned, 3_900, 300, 3_700).expect("changed");
        assert_eq!(dropped.len(), 30);
        assert_eq!(thin(&dropped, 3_900, 300, 3_700), None);
    }
}
