//! Health's words (PROTOCOL §20): the small [`Summary`] every host sends
//! the gateway on an interval whether or not anyone watches, what the
//! inventory shows of the latest one ([`HostHealth`]), and the stored
//! series a `history` request reads back ([`HistoryQuery`], [`History`]).
//!
//! A summary is a handful of numbers, not seed 003's `tele_data`: it is
//! what ten thousand hosts can send every ten seconds to one gateway, what
//! the Fleet page sorts by, and what alert rules test (their fields are
//! [`Field`]s, named as the summary's keys).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The gateway's default `summary_interval`, in seconds.
pub const DEFAULT_SUMMARY_INTERVAL_SECS: u64 = 10;

/// A summary older than this many of the gateway's intervals is stale: the
/// console and `ctl` show it so, and alert rules on its fields no longer
/// hold.
pub const STALE_INTERVALS: u64 = 3;

/// How many of a host's latest CPU readings [`HostHealth::trend`] holds.
pub const TREND_POINTS: usize = 30;

/// The most points one `history` reply holds: a longer range is averaged
/// into wider steps.
pub const MAX_HISTORY_POINTS: usize = 2_000;

/// The range `history` reads when it is given no `since`: the last hour.
pub const DEFAULT_HISTORY_SECS: u64 = 3_600;

/// A host's health now (`summary`). Percentages are of the whole host, 0 to
/// 100. Fields a gateway does not know are ignored, so agents can be
/// upgraded first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// CPU use over the last interval, all CPUs together.
    pub cpu: f32,
    /// The 1-minute load average.
    pub load: f32,
    /// Memory in use.
    pub mem: f32,
    /// The fullest mounted disk's use.
    pub disk: f32,
    /// Seconds since the VPN's latest handshake; absent when the host is
    /// not on the VPN or has never completed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpn_age: Option<u64>,
}

/// The largest load average a summary may report.
pub const MAX_LOAD: f32 = 1.0e6;

/// The largest `vpn_age` a summary may report: ten years.
pub const MAX_VPN_AGE: u64 = 315_360_000;

impl Summary {
    /// Whether every field is in range: the reason it is not, for a
    /// `bad_argument`.
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in [("cpu", self.cpu), ("mem", self.mem), ("disk", self.disk)] {
            if !(0.0..=100.0).contains(&value) {
                return Err(format!("`{name}` is a percentage, 0 to 100: {value}"));
            }
        }
        if !(0.0..=MAX_LOAD).contains(&self.load) {
            return Err(format!("`load` is 0 to {MAX_LOAD}: {}", self.load));
        }
        if self.vpn_age.is_some_and(|age| age > MAX_VPN_AGE) {
            return Err(format!("`vpn_age` is at most {MAX_VPN_AGE} seconds"));
        }
        Ok(())
    }

    /// The value of `field`, `None` for a `vpn_age` the host does not have.
    pub fn get(&self, field: Field) -> Option<f64> {
        match field {
            Field::Cpu => Some(f64::from(self.cpu)),
            Field::Load => Some(f64::from(self.load)),
            Field::Mem => Some(f64::from(self.mem)),
            Field::Disk => Some(f64::from(self.disk)),
            Field::VpnAge => self.vpn_age.map(|age| age as f64),
        }
    }
}

/// A summary's field, by its key: what a history column and an alert
/// condition name.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumIter,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Field {
    Cpu,
    Load,
    Mem,
    Disk,
    VpnAge,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A summary at a moment: one point of a history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HealthPoint {
    /// When, in seconds since the Unix epoch (for a downsampled point, the
    /// start of its step).
    pub at: u64,
    #[serde(flatten)]
    pub summary: Summary,
}

/// What the inventory shows of a host's health ([`crate::fleet::HostRecord`]'s
/// `health`): its latest summary and the CPU readings before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostHealth {
    /// When the latest summary arrived, in seconds since the Unix epoch.
    pub at: u64,
    #[serde(flatten)]
    pub summary: Summary,
    /// Up to [`TREND_POINTS`] CPU readings, oldest first, the latest
    /// included, rounded to whole percents: a sparkline's worth.
    #[serde(default)]
    pub trend: Vec<u8>,
}

/// `history`: one host's stored summaries from `since` to `until` (seconds
/// since the Unix epoch; by default the last [`DEFAULT_HISTORY_SECS`] up to
/// now).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    /// Average into steps of this many seconds (at least the stored
    /// resolution; widened so that the reply holds at most
    /// [`MAX_HISTORY_POINTS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
}

/// The answer to `history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub host: String,
    pub since: u64,
    pub until: u64,
    /// The seconds each point stands for: the summary interval where the
    /// points are as stored, wider where they were averaged.
    pub step: u64,
    /// Oldest first; a gap in time is a gap in the host's reports.
    pub points: Vec<HealthPoint>,
}

/// A host's presence, as the inventory lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Presence {
    /// A client holds its name now.
    Online,
    /// It has connected, and is not connected now (since `last_seen`).
    Offline,
    /// It is expected (a host token was issued for it) and has never
    /// connected.
    Never,
}

impl Presence {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A duration in a condition or a query, as people write them: `90s`,
/// `5m`, `2h`, `1d` (a number alone is seconds).
pub fn parse_secs(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: a duration is a number and a unit (30s, 5m, 2h, 1d)"))?;
    let unit = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?}: the unit is s, m, h or d (30s, 5m, 2h, 1d)"
            ))
        }
    };
    number
        .checked_mul(unit)
        .ok_or_else(|| format!("{text:?}: too long"))
}

/// `secs` as [`parse_secs`] reads it, in its largest whole unit.
pub fn format_secs(secs: u64) -> String {
    match secs {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl FromStr for Field {
    type Err = String;

    fn from_str(s: &str) -> Result<Field, String> {
        use strum::IntoEnumIterator;
        Field::iter().find(|f| f.as_str() == s).ok_or_else(|| {
            let known: Vec<_> = Field::iter().map(Field::as_str).collect();
            format!("{s:?} is no summary field ({})", known.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_checked_and_read() {
        let s: Summary =
            serde_json::from_str(r#"{"cpu": 12.5, "load": 0.4, "mem": 40, "disk": 91, "gpu": 3}"#)
                .unwrap();
        assert_eq!(s.check(), Ok(()));
        assert_eq!(s.get(Field::Disk), Some(91.0));
        assert_eq!(s.get(Field::VpnAge), None);
        for bad in [
            Summary { cpu: 100.5, ..s },
            Summary { mem: -1.0, ..s },
            Summary {
                disk: f32::NAN,
                ..s
            },
            Summary {
                load: f32::INFINITY,
                ..s
            },
            Summary {
                vpn_age: Some(MAX_VPN_AGE + 1),
                ..s
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
        let point = HealthPoint { at: 7, summary: s };
        let json = serde_json::to_value(point).unwrap();
        assert_eq!(json["at"], 7);
        assert_eq!(json["disk"], 91.0);
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_secs("90s"), Ok(90));
        assert_eq!(parse_secs("5m"), Ok(300));
        assert_eq!(parse_secs("2h"), Ok(7_200));
        assert_eq!(parse_secs("1d"), Ok(86_400));
        assert_eq!(parse_secs("45"), Ok(45));
        for bad in ["", "m", "5 m", "5w", "-5m", "99999999999999999999d"] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
        for secs in [0, 45, 300, 7_200, 86_400, 90] {
            assert_eq!(parse_secs(&format_secs(secs)), Ok(secs));
        }
        assert_eq!("vpn_age".parse(), Ok(Field::VpnAge));
        assert!("gpu".parse::<Field>().unwrap_err().contains("cpu, load"));
    }
}
