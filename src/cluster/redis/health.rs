//! The [`HealthStore`] of replicas sharing one Redis: whichever replica a
//! host reports to, every replica reads its series and latest health.
//!
//! Keys (`{prefix}` is given to [`RedisHealth::new`], `concierge` in a
//! gateway, the store's):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{prefix}:health:latest` | hash | host → its latest [`HostHealth`], JSON |
//! | `{prefix}:health:hosts` | sorted set | every host with points, scored by its last point's `at` |
//! | `{prefix}:health:series:{host}` | hash | blob → [`encode`]d points, oldest first |
//! | `{prefix}:health:bytes` | string | the bytes of every blob together ([`HealthStore::point_bytes`]) |
//!
//! A host's series is one hash of blobs: `h{start}` holds its points as
//! recorded from `start` (a multiple of [`RAW_SPAN`], an hour) for an
//! hour, `c{start}` its steps' averages from `start` (a multiple of
//! [`DAY`]) for a day. A point is [`POINT_BYTES`] appended to its hour's
//! blob; one host's day at 10 s is 24 fields of 6,480 bytes, and a month
//! of 5-minute averages 30 fields of 5,184: one key per host, whatever the
//! retention. The host's name ends its key and no other key of this
//! store starts with `{prefix}:health:series:`, so names with `:`, `*` or
//! anything else meet no other key; no key is ever looked for by pattern.
//!
//! [`record`](HealthStore::record) is one round trip: a Lua script per
//! [`RECORD_CHUNK`] samples, pipelined. For each sample the script appends
//! the point to its hour blob and sets the host's latest only if the point
//! is newer than the host's score in `hosts` (then raised to it), checked
//! and written atomically on the server, whichever replica writes.
//!
//! [`compact`](HealthStore::compact) walks `hosts` with `ZSCAN`, a page of
//! [`PAGE`] hosts at a time, with two scripts per page: the first reads,
//! of each host's blobs, only the points to thin or drop (an hour blob's
//! points before the cutoff, a day blob's points before `drop_before`) and
//! the last time of each day blob they may join; the points are averaged
//! here, with [`downsample`]; a second script cuts what was read from the
//! blobs' fronts and appends the averages to their days, for each host
//! whose blobs have the lengths they had when read (so two replicas
//! compacting at once cannot both move the same points: the second finds
//! other lengths and leaves the host to the next run). Only whole steps are
//! averaged (the cutoff is `raw_before` rounded down to a multiple of
//! `step`), so a step is never averaged twice; an average whose step a day
//! blob has already is not added; the points of a step that starts before
//! `drop_before` are dropped, not averaged (their average would be older
//! than the retention, and dropped by the next run). A host left with no
//! blob leaves `hosts`.
//!
//! A key that is not a hash where a host's series should be (damaged by
//! hand) does not stop the other hosts: `record` and `compact` skip that host with a
//! warning, `series` answers [`StoreError::Corrupt`], `forget` deletes it.
//! A latest that is not JSON of [`HostHealth`] is left out, with a
//! warning.
//!
//! `bytes` is kept by the scripts that change blobs; it drifts if blobs
//! are changed by anything else (no key here expires, so Redis does not).
//! Everything is as durable as the Redis behind it (see
//! [`store`](super::store)), and every request is bounded by the store's
//! [`TIMEOUT`](super::store::TIMEOUT).

use std::collections::BTreeMap;
use std::sync::Arc;

use redis::Script;

use super::master::Master;
use super::store::bounded;
use crate::cluster::health::{
    decode, downsample, encode, read_latest, Compacted, HealthStore, Sample, POINT_BYTES,
};
use crate::cluster::store::{StoreError, StoreFuture};
use crate::protocol::health::{HealthPoint, HostHealth};

/// The seconds one raw blob spans.
pub const RAW_SPAN: u64 = 3_600;

/// The seconds one blob of averages spans.
pub const DAY: u64 = 86_400;

/// How many samples one run of [`RECORD`] writes: a batch of more is
/// several runs in one round trip, so that a large batch (the backlog
/// after an outage) does not hold Redis for seconds at once.
const RECORD_CHUNK: usize = 1_000;

/// How many hosts [`HealthStore::compact`] asks `ZSCAN` for at a time.
const PAGE: usize = 100;

/// How many latest records [`HealthStore::latest`] asks `HSCAN` for at a
/// time.
const LATEST_PAGE: usize = 1_000;

/// KEYS: latest, hosts, bytes. ARGV: the series keys' prefix, then per
/// sample: host, at, its hour blob's field, the encoded point, the latest.
/// The hosts skipped for a series that is not a hash.
const RECORD: &str = r"
local skipped, added = {}, 0
for i = 2, #ARGV, 5 do
  local host, at = ARGV[i], tonumber(ARGV[i + 1])
  local key = ARGV[1] .. host
  local kind = redis.call('TYPE', key).ok
  if kind == 'hash' or kind == 'none' then
    local last = redis.call('ZSCORE', KEYS[2], host)
    if not last or at > tonumber(last) then
      redis.call('HSET', KEYS[1], host, ARGV[i + 4])
      local blob = redis.call('HGET', key, ARGV[i + 2]) or ''
      redis.call('HSET', key, ARGV[i + 2], blob .. ARGV[i + 3])
      redis.call('ZADD', KEYS[2], at, host)
      added = added + #ARGV[i + 3]
    end
  else
    skipped[#skipped + 1] = host
  end
end
if added > 0 then redis.call('INCRBY', KEYS[3], added) end
return skipped
";

/// KEYS: series. ARGV: since, until, RAW_SPAN, DAY. The blobs that may
/// hold points from since to until.
const SERIES: &str = r"
local since, upto = tonumber(ARGV[1]), tonumber(ARGV[2])
local spans = {h = tonumber(ARGV[3]), c = tonumber(ARGV[4])}
local blobs = {}
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  local span, start = spans[string.sub(field, 1, 1)], tonumber(string.sub(field, 2))
  if span and start and start <= upto and start + span > since then
    blobs[#blobs + 1] = redis.call('HGET', KEYS[1], field)
  end
end
return blobs
";

/// ARGV: the series keys' prefix, cutoff, drop_before, step, DAY, then
/// hosts. `{compactable, damaged}`: per host with something to do, `{host,
/// {{field, length, front, last}...}}`, where `front` is the blob's
/// leading points to move or drop and `last` the `at` of its last point;
/// the hosts whose series is not a hash.
const READ: &str = r"
local cutoff, drop = tonumber(ARGV[2]), tonumber(ARGV[3])
local step, day = tonumber(ARGV[4]), tonumber(ARGV[5])
local function at(blob, pos)
  local a, b, c, d = string.byte(blob, pos, pos + 3)
  return a + b * 256 + c * 65536 + d * 16777216
end
local function front(blob, bound)
  local n = 0
  while n + 18 <= #blob and at(blob, n + 1) < bound do n = n + 18 end
  return string.sub(blob, 1, n)
end
local function last(blob)
  local whole = #blob - #blob % 18
  if whole == 0 then return 0 end
  return at(blob, whole - 17)
end
local compactable, damaged = {}, {}
for i = 6, #ARGV do
  local host = ARGV[i]
  local key = ARGV[1] .. host
  local kind = redis.call('TYPE', key).ok
  if kind == 'hash' then
    local found, days, lo = {}, {}, nil
    local raw_bound = math.max(cutoff, drop)
    for _, field in ipairs(redis.call('HKEYS', key)) do
      local kind, start = string.sub(field, 1, 1), tonumber(string.sub(field, 2))
      if start and kind == 'h' and start < raw_bound then
        local blob = redis.call('HGET', key, field)
        local old = front(blob, raw_bound)
        if #old > 0 then
          found[#found + 1] = {field, #blob, old, last(blob)}
          if not lo or start < lo then lo = start end
        end
      elseif start and kind == 'c' then
        days[#days + 1] = {field, start}
      end
    end
    for _, d in ipairs(days) do
      local field, start = d[1], d[2]
      local joined = lo and start + day > lo - step and start < cutoff
      if start < drop or joined then
        local blob = redis.call('HGET', key, field)
        local old = front(blob, drop)
        if #old > 0 or joined then
          found[#found + 1] = {field, #blob, old, last(blob)}
        end
      end
    end
    if #found > 0 then compactable[#compactable + 1] = {host, found} end
  elseif kind ~= 'none' then
    damaged[#damaged + 1] = host
  end
end
return {compactable, damaged}
";

/// KEYS: hosts, bytes. ARGV: the series keys' prefix, then per host:
/// host, n, then n times: field, its length when read, how many bytes to
/// cut from its front, what to append. Writes a host only if every field
/// still has the length read. The hosts written.
const WRITE: &str = r"
local written, delta = {}, 0
local i = 2
while i <= #ARGV do
  local host, n = ARGV[i], tonumber(ARGV[i + 1])
  local key = ARGV[1] .. host
  local first = i + 2
  i = first + 4 * n
  local same = redis.call('TYPE', key).ok == 'hash'
  for j = first, i - 1, 4 do
    if same and redis.call('HSTRLEN', key, ARGV[j]) ~= tonumber(ARGV[j + 1]) then
      same = false
    end
  end
  if same then
    for j = first, i - 1, 4 do
      local old = redis.call('HGET', key, ARGV[j]) or ''
      local new = string.sub(old, tonumber(ARGV[j + 2]) + 1) .. ARGV[j + 3]
      delta = delta + #new - #old
      if new == '' then
        redis.call('HDEL', key, ARGV[j])
      else
        redis.call('HSET', key, ARGV[j], new)
      end
    end
    if redis.call('EXISTS', key) == 0 then redis.call('ZREM', KEYS[1], host) end
    written[#written + 1] = host
  end
end
if delta ~= 0 then redis.call('INCRBY', KEYS[2], delta) end
return written
";

/// KEYS: series, latest, hosts, bytes. ARGV: host.
const FORGET: &str = r"
if redis.call('TYPE', KEYS[1]).ok == 'hash' then
  local gone = 0
  for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
    gone = gone + redis.call('HSTRLEN', KEYS[1], field)
  end
  if gone > 0 then redis.call('DECRBY', KEYS[4], gone) end
end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 0
";

/// The scripts, loaded once per store (sent as EVALSHA).
struct Scripts {
    record: Script,
    series: Script,
    read: Script,
    write: Script,
    forget: Script,
}

/// The shared [`HealthStore`]: see the module documentation.
pub struct RedisHealth {
    master: Arc<Master>,
    prefix: String,
    scripts: Scripts,
}

/// A blob of a host's series, by its field: the hour of points as
/// recorded, or the day of averages, starting at the second given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Blob {
    Raw(u64),
    Averages(u64),
}

impl Blob {
    /// The hour blob `at` goes in.
    fn raw(at: u64) -> Blob {
        Blob::Raw(at - at % RAW_SPAN)
    }

    fn field(self) -> String {
        match self {
            Blob::Raw(start) => format!("h{start}"),
            Blob::Averages(start) => format!("c{start}"),
        }
    }

    fn parse(field: &[u8]) -> Option<Blob> {
        let (&kind, start) = field.split_first()?;
        let start = std::str::from_utf8(start).ok()?.parse().ok()?;
        match kind {
            b'h' => Some(Blob::Raw(start)),
            b'c' => Some(Blob::Averages(start)),
            _ => None,
        }
    }
}

/// One blob as [`READ`] found it: its field, length, the points at its
/// front to move or drop, and the time of its last point.
type Found = (Vec<u8>, u64, Vec<u8>, u64);

/// What [`READ`] answers: each host with something to compact and its
/// blobs, then the hosts whose series is damaged.
type ReadReply = (Vec<(Vec<u8>, Vec<Found>)>, Vec<Vec<u8>>);

/// A page of `HSCAN` or `ZSCAN`: the next cursor, and pairs (a field and
/// its value, a member and its score).
type ScanPage = (u64, Vec<(Vec<u8>, Vec<u8>)>);

/// A change to one blob: its field, the length it must still have, the
/// bytes to cut from its front, and the bytes to append.
#[derive(Debug, PartialEq)]
struct Change {
    field: Vec<u8>,
    length: u64,
    cut: u64,
    append: Vec<u8>,
}

/// What compacting one host does: see [`plan`].
#[derive(Debug, Default, PartialEq)]
struct Plan {
    changes: Vec<Change>,
    done: Compacted,
}

/// A day blob's part in a [`Plan`]: what it had and what it gets.
struct Day {
    length: u64,
    cut: u64,
    last: Option<u64>,
    append: Vec<u8>,
}

/// The changes that compact one host's series, from what [`READ`] found:
/// every point before `drop_before` goes, and so do the points of a step
/// that starts before it (its average would be older than the retention);
/// the hour blobs' other points before `cutoff` become their steps'
/// averages, appended to their days' blobs (but for a step a day has
/// already).
fn plan(found: Vec<Found>, cutoff: u64, step: u64, drop_before: u64) -> Plan {
    let mut plan = Plan::default();
    let mut old: Vec<HealthPoint> = Vec::new();
    let mut days: BTreeMap<u64, Day> = BTreeMap::new();
    for (field, length, front, last) in found {
        let points = decode(&front);
        let cut = (points.len() * POINT_BYTES) as u64;
        match Blob::parse(&field) {
            Some(Blob::Raw(_)) => {
                // The front holds only points to average or to drop.
                for point in points {
                    let expired =
                        point.at < drop_before || point.at - point.at % step < drop_before;
                    if point.at < cutoff && !expired {
                        old.push(point);
                    } else {
                        plan.done.dropped += 1;
                    }
                }
                plan.changes.push(Change {
                    field,
                    length,
                    cut,
                    append: Vec::new(),
                });
            }
            Some(Blob::Averages(start)) => {
                plan.done.dropped += points.len() as u64;
                let last = (length >= POINT_BYTES as u64).then_some(last);
                days.insert(
                    start,
                    Day {
                        length,
                        cut,
                        last,
                        append: Vec::new(),
                    },
                );
            }
            None => {}
        }
    }
    old.sort_by_key(|p| p.at);
    let mut kept = 0;
    for average in downsample(&old, step) {
        let day = days.entry(average.at - average.at % DAY).or_insert(Day {
            length: 0,
            cut: 0,
            last: None,
            append: Vec::new(),
        });
        if day.last.is_some_and(|last| average.at <= last) {
            continue;
        }
        encode(&average, &mut day.append);
        day.last = Some(average.at);
        kept += 1;
    }
    plan.done.downsampled = old.len() as u64 - kept;
    for (start, day) in days {
        if day.cut > 0 || !day.append.is_empty() {
            plan.changes.push(Change {
                field: Blob::Averages(start).field().into_bytes(),
                length: day.length,
                cut: day.cut,
                append: day.append,
            });
        }
    }
    plan
}

/// A host's name as stored; `None` (with a warning) if it is not UTF-8.
fn host_name(bytes: Vec<u8>) -> Option<String> {
    match String::from_utf8(bytes) {
        Ok(host) => Some(host),
        Err(e) => {
            tracing::warn!(
                host = %String::from_utf8_lossy(e.as_bytes()),
                "Redis: skipping a host's health whose name is not UTF-8"
            );
            None
        }
    }
}

/// Warns about hosts whose series is damaged.
fn warn_damaged(hosts: &[Vec<u8>], doing: &str) {
    for host in hosts {
        tracing::warn!(
            host = %String::from_utf8_lossy(host),
            "Redis: the health series of this host is not a hash: {doing} skips it"
        );
    }
}

impl RedisHealth {
    /// A health store on the master's connection, with keys under
    /// `prefix`.
    pub fn new(master: Arc<Master>, prefix: &str) -> RedisHealth {
        RedisHealth {
            master,
            prefix: prefix.to_owned(),
            scripts: Scripts {
                record: Script::new(RECORD),
                series: Script::new(SERIES),
                read: Script::new(READ),
                write: Script::new(WRITE),
                forget: Script::new(FORGET),
            },
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}:health:{name}", self.prefix)
    }

    /// What every host's series key starts with.
    fn series_prefix(&self) -> String {
        self.key("series:")
    }

    fn series_key(&self, host: &str) -> String {
        format!("{}{host}", self.series_prefix())
    }

    /// Compacts one page of hosts: see the module documentation.
    async fn compact_page(
        &self,
        hosts: Vec<Vec<u8>>,
        cutoff: u64,
        step: u64,
        drop_before: u64,
    ) -> Result<Compacted, StoreError> {
        let mut read = self.scripts.read.prepare_invoke();
        read.arg(self.series_prefix())
            .arg(cutoff)
            .arg(drop_before)
            .arg(step)
            .arg(DAY)
            .arg(hosts);
        let (found, damaged): ReadReply = self.master.script(read).await?;
        warn_damaged(&damaged, "compacting");
        let mut write = self.scripts.write.prepare_invoke();
        write.key(self.key("hosts")).key(self.key("bytes"));
        write.arg(self.series_prefix());
        let mut planned = BTreeMap::new();
        for (host, blobs) in found {
            let plan = plan(blobs, cutoff, step, drop_before);
            if plan.changes.is_empty() {
                continue;
            }
            write.arg(&host).arg(plan.changes.len());
            for change in &plan.changes {
                write
                    .arg(&change.field)
                    .arg(change.length)
                    .arg(change.cut)
                    .arg(&change.append);
            }
            planned.insert(host, plan.done);
        }
        if planned.is_empty() {
            return Ok(Compacted::default());
        }
        let written: Vec<Vec<u8>> = self.master.script(write).await?;
        let mut done = Compacted::default();
        for host in written {
            if let Some(host_done) = planned.get(&host) {
                done.downsampled += host_done.downsampled;
                done.dropped += host_done.dropped;
            }
        }
        Ok(done)
    }
}

impl HealthStore for RedisHealth {
    fn record(&self, samples: Vec<Sample>) -> StoreFuture<'_, ()> {
        if samples.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        // One round trip: the script (in case Redis lost it), then a run of
        // it per chunk of samples.
        let mut pipe = redis::pipe();
        pipe.load_script(&self.scripts.record).ignore();
        let mut point = Vec::with_capacity(POINT_BYTES);
        for chunk in samples.chunks(RECORD_CHUNK) {
            let mut script = self.scripts.record.prepare_invoke();
            script
                .key(self.key("latest"))
                .key(self.key("hosts"))
                .key(self.key("bytes"))
                .arg(self.series_prefix());
            for sample in chunk {
                // As encoded: a time past 2106 is stored as its last second.
                let at = sample.point.at.min(u64::from(u32::MAX));
                point.clear();
                encode(&sample.point, &mut point);
                // Numbers and a short list: serializing cannot fail.
                let latest = serde_json::to_vec(&sample.latest).unwrap_or_default();
                script
                    .arg(&sample.host)
                    .arg(at)
                    .arg(Blob::raw(at).field())
                    .arg(&point)
                    .arg(latest);
            }
            pipe.invoke_script(&script);
        }
        let mut conn = self.master.conn();
        Box::pin(async move {
            let skipped: Vec<Vec<Vec<u8>>> =
                bounded(async move { pipe.query_async(&mut conn).await }).await?;
            warn_damaged(&skipped.concat(), "recording");
            Ok(())
        })
    }

    fn latest(&self) -> StoreFuture<'_, Vec<(String, HostHealth)>> {
        let key = self.key("latest");
        Box::pin(async move {
            let mut all = BTreeMap::new();
            let mut cursor = 0u64;
            loop {
                let mut cmd = redis::cmd("HSCAN");
                cmd.arg(&key).arg(cursor).arg("COUNT").arg(LATEST_PAGE);
                let (next, page): ScanPage = self.master.query(cmd).await?;
                for (host, json) in page {
                    let Some(host) = host_name(host) else {
                        continue;
                    };
                    if let Some(health) = read_latest(&host, &json) {
                        all.insert(host, health);
                    }
                }
                if next == 0 {
                    return Ok(all.into_iter().collect());
                }
                cursor = next;
            }
        })
    }

    fn latest_of(&self, host: &str) -> StoreFuture<'_, Option<HostHealth>> {
        let json: StoreFuture<'_, Option<Vec<u8>>> = self
            .master
            .query(redis::cmd("HGET").arg(self.key("latest")).arg(host).clone());
        let host = host.to_owned();
        Box::pin(async move { Ok(json.await?.and_then(|json| read_latest(&host, &json))) })
    }

    fn series(&self, host: &str, since: u64, until: u64) -> StoreFuture<'_, Vec<HealthPoint>> {
        if since > until {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        let mut script = self.scripts.series.prepare_invoke();
        script
            .key(self.series_key(host))
            .arg(since)
            .arg(until)
            .arg(RAW_SPAN)
            .arg(DAY);
        let blobs: StoreFuture<'_, Vec<Vec<u8>>> = self.master.script(script);
        Box::pin(async move {
            let mut points: Vec<HealthPoint> = blobs
                .await?
                .iter()
                .flat_map(|blob| decode(blob))
                .filter(|p| (since..=until).contains(&p.at))
                .collect();
            points.sort_by_key(|p| p.at);
            Ok(points)
        })
    }

    fn compact(&self, raw_before: u64, step: u64, drop_before: u64) -> StoreFuture<'_, Compacted> {
        let step = step.max(1);
        // Whole steps only: a step is averaged once, when it is all old.
        let cutoff = raw_before - raw_before % step;
        let hosts = self.key("hosts");
        Box::pin(async move {
            let mut done = Compacted::default();
            let mut cursor = 0u64;
            loop {
                let mut cmd = redis::cmd("ZSCAN");
                cmd.arg(&hosts).arg(cursor).arg("COUNT").arg(PAGE);
                let (next, page): ScanPage = self.master.query(cmd).await?;
                let names: Vec<Vec<u8>> = page.into_iter().map(|(host, _)| host).collect();
                if !names.is_empty() {
                    let page_done = self.compact_page(names, cutoff, step, drop_before).await?;
                    done.downsampled += page_done.downsampled;
                    done.dropped += page_done.dropped;
                }
                if next == 0 {
                    return Ok(done);
                }
                cursor = next;
            }
        })
    }

    fn forget(&self, host: &str) -> StoreFuture<'_, ()> {
        let mut script = self.scripts.forget.prepare_invoke();
        script
            .key(self.series_key(host))
            .key(self.key("latest"))
            .key(self.key("hosts"))
            .key(self.key("bytes"))
            .arg(host);
        let forgotten: StoreFuture<'_, i64> = self.master.script(script);
        Box::pin(async move { forgotten.await.map(drop) })
    }

    fn point_bytes(&self) -> StoreFuture<'_, u64> {
        let bytes: StoreFuture<'_, Option<i64>> = self
            .master
            .query(redis::cmd("GET").arg(self.key("bytes")).clone());
        Box::pin(async move { Ok(bytes.await?.map_or(0, |b| u64::try_from(b).unwrap_or(0))) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::health::Summary;

    fn point(at: u64, cpu: f32) -> HealthPoint {
        HealthPoint {
            at,
            summary: Summary {
                cpu,
                load: 0.5,
                mem: 10.0,
                disk: 20.0,
                vpn_age: None,
            },
        }
    }

    fn blob(points: &[HealthPoint]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for p in points {
            encode(p, &mut bytes);
        }
        bytes
    }

    #[test]
    fn blobs_are_named_by_kind_and_start() {
        assert_eq!(Blob::raw(7_201).field(), "h7200");
        assert_eq!(Blob::parse(b"h7200"), Some(Blob::Raw(7_200)));
        assert_eq!(Blob::parse(b"c86400"), Some(Blob::Averages(86_400)));
        for bad in [&b""[..], b"h", b"x1", b"h-1", b"h1x", b"\xff1"] {
            assert_eq!(Blob::parse(bad), None, "{bad:?}");
        }
    }

    /// An hour's old front becomes averages appended to its day, past the
    /// day's last step; the day's points before `drop_before` are cut.
    #[test]
    fn a_plan_moves_old_points_into_their_day() {
        let old = [
            point(90_000, 10.0),
            point(90_010, 30.0),
            point(90_300, 50.0),
        ];
        let day = [point(86_400, 1.0), point(89_700, 2.0)];
        let found = vec![
            (b"h90000".to_vec(), 200 * 18, blob(&old), 90_000 + 199 * 10),
            (b"c86400".to_vec(), 36, blob(&day[..1]), 89_700),
        ];
        let plan = plan(found, 90_600, 300, 87_000);
        assert_eq!(
            plan.done,
            Compacted {
                downsampled: 1,
                dropped: 1
            }
        );
        assert_eq!(
            plan.changes,
            [
                Change {
                    field: b"h90000".to_vec(),
                    length: 3_600,
                    cut: 54,
                    append: vec![],
                },
                Change {
                    field: b"c86400".to_vec(),
                    length: 36,
                    cut: 18,
                    append: blob(&[point(90_000, 20.0), point(90_300, 50.0)]),
                },
            ]
        );
        // A step the day has already is not added again; a damaged front
        // (not whole points) cuts only its whole points.
        let mut damaged = blob(&old[..1]);
        damaged.push(0);
        let again = plan_of(vec![
            (b"h90000".to_vec(), 19, damaged, 90_000),
            (b"c86400".to_vec(), 18, vec![], 90_000),
        ]);
        assert_eq!(again.changes.len(), 1);
        assert_eq!(again.changes[0].cut, 18);
        assert_eq!(again.done.downsampled, 1);
    }

    fn plan_of(found: Vec<Found>) -> Plan {
        plan(found, 90_600, 300, 0)
    }
}
