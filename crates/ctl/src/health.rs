//! Hosts' health as `ctl` shows it (PROTOCOL §20): the health columns of
//! `ctl hosts` (CPU, load, memory, the fullest disk, the VPN handshake's
//! age, and a sparkline of the CPU trend, or `stale` when the latest
//! summary is older than three intervals), the orders `--sort` gives, and
//! `ctl history HOST`: a sparkline per field, then the points in local
//! time.

use std::cmp::Ordering;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::conn::decode;
use super::error::CtlError;
use super::render::{local_time, plain, Units};
use super::Ctl;
use concierge_protocol::agent::GatewayRequest;
use concierge_protocol::fleet::HostRecord;
use concierge_protocol::health::{
    parse_secs, Field, HealthPoint, History, HistoryQuery, HostHealth, STALE_INTERVALS,
};
use concierge_protocol::GATEWAY_NAME;

/// The cells of a sparkline, lowest first.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The widest sparkline `ctl history` draws: longer series are averaged
/// into this many cells.
const SPARK_WIDTH: usize = 60;

/// How `ctl hosts` orders its hosts (`--sort`): by name, or the busiest,
/// fullest or most recently seen first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    Name,
    Cpu,
    Load,
    Mem,
    Disk,
    LastSeen,
}

/// Sorts `hosts` as `by` says; hosts without that figure come last, by
/// name.
pub fn sort(hosts: &mut [HostRecord], by: SortBy) {
    let field = match by {
        SortBy::Name => return hosts.sort_by(|a, b| a.name.cmp(&b.name)),
        SortBy::LastSeen => {
            // Online hosts are seen now; never connected ones last.
            let key = |h: &HostRecord| (h.online, h.last_seen);
            return hosts.sort_by(|a, b| key(b).cmp(&key(a)).then_with(|| a.name.cmp(&b.name)));
        }
        SortBy::Cpu => Field::Cpu,
        SortBy::Load => Field::Load,
        SortBy::Mem => Field::Mem,
        SortBy::Disk => Field::Disk,
    };
    let value = |h: &HostRecord| h.health.as_ref().and_then(|x| x.summary.get(field));
    hosts.sort_by(|a, b| match (value(a), value(b)) {
        (Some(x), Some(y)) => y
            .partial_cmp(&x)
            .unwrap_or(Ordering::Equal)
            .then_with(|| a.name.cmp(&b.name)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.name.cmp(&b.name),
    });
}

/// The health cells of a host for `ctl hosts`: CPU, LOAD, MEM, DISK, VPN
/// and TREND (`-` each without a summary).
/// `interval` is the gateway's `summary_interval`.
pub fn cells(health: Option<&HostHealth>, now: u64, interval: u64) -> [String; 6] {
    let Some(h) = health else {
        return std::array::from_fn(|_| "-".to_owned());
    };
    let s = &h.summary;
    let age = now.saturating_sub(h.at);
    let trend = if age > STALE_INTERVALS * interval {
        format!("stale ({} ago)", short_age(age))
    } else {
        sparkline(h.trend.iter().map(|v| f64::from(*v)), Some(100.0))
    };
    [
        format!("{:.0}%", s.cpu),
        format!("{:.2}", s.load),
        format!("{:.0}%", s.mem),
        format!("{:.0}%", s.disk),
        s.vpn_age.map_or_else(|| "-".into(), short_age),
        trend,
    ]
}

/// A duration in its largest unit, as a column has room for: `45s`,
/// `3m`, `5h`, `2d`.
pub fn short_age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3_600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    }
}

/// `values` as a sparkline, one cell each, scaled to `top` (the series'
/// own largest value without one). An empty series is `-`.
pub fn sparkline(values: impl IntoIterator<Item = f64>, top: Option<f64>) -> String {
    let values: Vec<f64> = values.into_iter().collect();
    if values.is_empty() {
        return "-".into();
    }
    let top = top
        .unwrap_or_else(|| values.iter().copied().fold(0.0, f64::max))
        .max(f64::MIN_POSITIVE);
    values
        .iter()
        .map(|v| {
            let level = (v / top * (BARS.len() - 1) as f64).round();
            BARS[level.clamp(0.0, (BARS.len() - 1) as f64) as usize]
        })
        .collect()
}

/// `values` averaged into at most `width` buckets, in order.
fn squeeze(values: &[f64], width: usize) -> Vec<f64> {
    if values.len() <= width {
        return values.to_vec();
    }
    (0..width)
        .map(|i| {
            let bucket = &values[i * values.len() / width..(i + 1) * values.len() / width];
            bucket.iter().sum::<f64>() / bucket.len().max(1) as f64
        })
        .collect()
}

/// The label of `field` in `ctl history` (memory as the user calls it).
fn label(field: Field, units: &Units) -> String {
    match field {
        Field::Mem => units.mem_label.to_lowercase(),
        other => other.as_str().to_owned(),
    }
}

/// The fields a history shows, in order: the VPN's age only when a point
/// has it.
fn fields(points: &[HealthPoint]) -> Vec<Field> {
    let mut fields = vec![Field::Cpu, Field::Load, Field::Mem, Field::Disk];
    if points.iter().any(|p| p.summary.vpn_age.is_some()) {
        fields.push(Field::VpnAge);
    }
    fields
}

/// `ctl history`'s screen: a sparkline per field with its range, then a
/// table of the points in local time.
pub fn screen(history: &History, units: &Units) -> String {
    let head = format!(
        "{}  {} – {}, every {}, {} point{}\n",
        history.host,
        local_time(history.since),
        local_time(history.until),
        short_age(history.step),
        history.points.len(),
        if history.points.len() == 1 { "" } else { "s" }
    );
    if history.points.is_empty() {
        return head + "no summaries in this range";
    }
    let fields = fields(&history.points);
    let mut out = head + "\n";
    let width = fields
        .iter()
        .map(|f| label(*f, units).len())
        .max()
        .unwrap_or(0);
    for field in &fields {
        let values: Vec<f64> = history
            .points
            .iter()
            .filter_map(|p| p.summary.get(*field))
            .collect();
        let top = matches!(field, Field::Cpu | Field::Mem | Field::Disk).then_some(100.0);
        let (low, high) = values
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
        let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
        out.push_str(&format!(
            "{:<width$}  {}  min {} avg {} max {}\n",
            label(*field, units),
            sparkline(squeeze(&values, SPARK_WIDTH), top),
            figure(*field, low),
            figure(*field, mean),
            figure(*field, high),
        ));
    }
    let mut header = vec!["TIME".to_owned()];
    header.extend(fields.iter().map(|f| label(*f, units).to_uppercase()));
    let mut t = plain();
    t.set_header(header);
    for p in &history.points {
        let mut row = vec![local_time(p.at)];
        row.extend(fields.iter().map(|f| {
            p.summary
                .get(*f)
                .map_or_else(|| "-".into(), |v| figure(*f, v))
        }));
        t.add_row(row);
    }
    out.push('\n');
    out.push_str(&t.to_string());
    out
}

/// A value of `field` as a cell: percentages and the load to two figures,
/// the VPN's age in its unit.
fn figure(field: Field, value: f64) -> String {
    match field {
        Field::Cpu | Field::Mem | Field::Disk => format!("{value:.1}%"),
        Field::Load => format!("{value:.2}"),
        Field::VpnAge => short_age(value.max(0.0).round() as u64),
    }
}

/// `--since` and `--until`: a duration back from now (`1h`, `90m`) or a
/// time (`2026-12-07T09:00:00Z`, `2026-12-07 09:00:00`, UTC).
pub fn moment(text: &str, now: u64) -> Result<u64, String> {
    if let Ok(ago) = parse_secs(text) {
        return Ok(now.saturating_sub(ago));
    }
    humantime::parse_rfc3339_weak(text.trim())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .ok_or_else(|| {
            format!("{text:?} is neither a duration back from now (1h, 30m) nor a time (2026-12-07T09:00:00Z)")
        })
}

impl Ctl {
    /// `ctl history HOST`.
    pub(crate) async fn history(
        &mut self,
        host: String,
        since: Option<String>,
        until: Option<String>,
        step: Option<String>,
    ) -> Result<ExitCode, CtlError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        let at = |t: Option<String>| t.map(|t| moment(&t, now)).transpose();
        let query = HistoryQuery {
            host,
            since: at(since).map_err(CtlError::Usage)?,
            until: at(until).map_err(CtlError::Usage)?,
            step: step
                .map(|s| parse_secs(&s))
                .transpose()
                .map_err(CtlError::Usage)?,
        };
        let reply = self
            .request(GATEWAY_NAME, &GatewayRequest::History(query))
            .await?;
        if self.json {
            println!("{reply}");
            return Ok(ExitCode::SUCCESS);
        }
        let history: History = decode("history", reply)?;
        println!("{}", screen(&history, &self.units));
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concierge_protocol::fleet::Facts;
    use concierge_protocol::health::{Presence, Summary};
    use concierge_protocol::HostKind;

    fn health(at: u64, summary: Summary, trend: Vec<u8>) -> HostHealth {
        HostHealth { at, summary, trend }
    }

    #[test]
    fn sparklines_scale_to_their_top() {
        assert_eq!(sparkline([0.0, 50.0, 100.0], Some(100.0)), "▁▅█");
        assert_eq!(sparkline([1.0, 2.0], None), "▅█");
        assert_eq!(sparkline([0.0, 0.0], None), "▁▁");
        assert_eq!(sparkline([], None), "-");
        assert_eq!(sparkline([250.0, -3.0], Some(100.0)), "█▁");
        assert_eq!(squeeze(&[1.0, 3.0, 5.0, 7.0], 2), [2.0, 6.0]);
        assert_eq!(squeeze(&[1.0], 60), [1.0]);
    }

    #[test]
    fn health_cells_say_stale_and_nothing() {
        let s = Summary {
            cpu: 12.4,
            load: 0.4,
            mem: 40.1,
            disk: 91.0,
            vpn_age: Some(125),
        };
        let fresh = cells(Some(&health(1_000, s, vec![0, 100])), 1_010, 10);
        assert_eq!(
            fresh,
            ["12%", "0.40", "40%", "91%", "2m", "▁█"].map(String::from)
        );
        let old = cells(Some(&health(1_000, s, vec![0])), 1_000 + 31, 10);
        // At a longer interval, the same age is fresh.
        assert!(!cells(Some(&health(1_000, s, vec![0])), 1_031, 60)[5].starts_with("stale"));
        assert_eq!(old[5], "stale (31s ago)");
        assert!(cells(None, 5, 10).iter().all(|c| c == "-"));
    }

    #[test]
    fn hosts_sort_busiest_first_and_never_seen_last() {
        let host = |name: &str, cpu: Option<f32>, seen: Option<u64>, online: bool| HostRecord {
            name: name.into(),
            kind: HostKind::Agent,
            first_seen: seen,
            last_seen: seen,
            online,
            presence: match (online, seen) {
                (true, _) => Presence::Online,
                (false, Some(_)) => Presence::Offline,
                (false, None) => Presence::Never,
            },
            facts: Facts::default(),
            health: cpu.map(|cpu| {
                health(
                    1,
                    Summary {
                        cpu,
                        ..Summary::default()
                    },
                    vec![],
                )
            }),
        };
        let mut hosts = vec![
            host("a", None, None, false),
            host("b", Some(5.0), Some(10), false),
            host("c", Some(90.0), Some(20), true),
            host("d", Some(5.0), Some(30), false),
        ];
        let names = |h: &[HostRecord]| h.iter().map(|h| h.name.clone()).collect::<Vec<_>>();
        sort(&mut hosts, SortBy::Cpu);
        assert_eq!(names(&hosts), ["c", "b", "d", "a"]);
        sort(&mut hosts, SortBy::LastSeen);
        assert_eq!(names(&hosts), ["c", "d", "b", "a"]);
        sort(&mut hosts, SortBy::Name);
        assert_eq!(names(&hosts), ["a", "b", "c", "d"]);
    }

    #[test]
    fn moments_are_durations_back_or_times() {
        assert_eq!(moment("1h", 10_000), Ok(6_400));
        assert_eq!(moment("2d", 10), Ok(0));
        assert_eq!(moment("1970-01-01T01:00:00Z", 0), Ok(3_600));
        assert!(moment("yesterday", 0).unwrap_err().contains("duration"));
    }

    #[test]
    fn a_history_reads_as_sparklines_then_points() {
        let point = |at, cpu| HealthPoint {
            at,
            summary: Summary {
                cpu,
                load: 1.5,
                mem: 50.0,
                disk: 10.0,
                vpn_age: None,
            },
        };
        let history = History {
            host: "web1".into(),
            since: 0,
            until: 20,
            step: 10,
            points: vec![point(0, 0.0), point(10, 100.0)],
        };
        let out = screen(&history, &Units::default());
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("web1  "), "{out}");
        assert!(lines[0].ends_with("every 10s, 2 points"), "{out}");
        assert!(
            out.contains("cpu   ▁█  min 0.0% avg 50.0% max 100.0%"),
            "{out}"
        );
        assert!(out.contains("mem   ▅▅"), "{out}");
        assert!(!out.contains("vpn_age"), "{out}");
        let rows = out.lines().filter(|l| l.trim_start().starts_with("19"));
        assert_eq!(rows.filter(|l| l.contains("1.50")).count(), 2, "{out}");
        let empty = History {
            points: vec![],
            ..history
        };
        assert!(screen(&empty, &Units::default()).ends_with("no summaries in this range"));
    }
}
