//! Alerts' words (PROTOCOL §21): rules ([`AlertRule`]: a [`Condition`] on
//! a summary field or on presence, over a target expression), the events
//! a rule's evaluation produces ([`AlertEvent`], firing then resolved, per
//! host), and the requests that read and edit them.
//!
//! One [`AlertEvent`] shape goes everywhere an alert goes: the `alerts`
//! service's broadcasts ([`ALERTS_SERVICE`]), the `alerts` request's
//! lists, and the body POSTed to the webhook. Its `seq` is the cluster's
//! order of events and what a webhook receiver deduplicates by.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::health::{format_secs, parse_secs, Field};
use crate::selector::Selector;

/// The service alert events are broadcast on, owned by the gateway: no
/// client may take this name.
pub const ALERTS_SERVICE: &str = "alerts";

/// The most rules a gateway holds (its configuration's and the API's
/// together).
pub const MAX_RULES: usize = 256;

/// The most events one `alerts` reply lists in `recent`.
pub const MAX_ALERTS_PAGE: usize = 500;

/// The longest `for` a condition may have: a week.
pub const MAX_FOR_SECS: u64 = 7 * 86_400;

/// How a field compares with a condition's threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Above,
    AtLeast,
    Below,
    AtMost,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Above => ">",
            Op::AtLeast => ">=",
            Op::Below => "<",
            Op::AtMost => "<=",
        }
    }

    /// Whether `value OP threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Above => value > threshold,
            Op::AtLeast => value >= threshold,
            Op::Below => value < threshold,
            Op::AtMost => value <= threshold,
        }
    }
}

/// What makes a host's alert fire, written as people write it:
/// `cpu > 90 for 5m`, `disk >= 95`, `offline for 2m`. Without `for` it
/// fires at the first evaluation that finds it true.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// The host's latest summary has `field OP value`, continuously for
    /// `for_secs` (a host without a summary, or offline, never matches).
    Compare {
        field: Field,
        op: Op,
        value: f64,
        for_secs: u64,
    },
    /// The host has been offline for `for_secs` (a host that never
    /// connected is not offline).
    Offline { for_secs: u64 },
}

impl Condition {
    /// How long the condition must hold before the alert fires.
    pub fn for_secs(&self) -> u64 {
        match *self {
            Condition::Compare { for_secs, .. } | Condition::Offline { for_secs } => for_secs,
        }
    }
}

impl FromStr for Condition {
    type Err = String;

    fn from_str(text: &str) -> Result<Condition, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let (head, for_secs) = match words.iter().position(|w| *w == "for") {
            Some(at) if at + 2 == words.len() => (&words[..at], parse_secs(words[at + 1])?),
            Some(_) => {
                return Err(format!(
                    "{text:?}: `for` is followed by one duration (for 5m)"
                ))
            }
            None => (&words[..], 0),
        };
        if for_secs > MAX_FOR_SECS {
            return Err(format!(
                "{text:?}: `for` is at most {}",
                format_secs(MAX_FOR_SECS)
            ));
        }
        match head {
            ["offline"] => Ok(Condition::Offline { for_secs }),
            [field, op, value] => {
                let field: Field = field.parse()?;
                let op = match *op {
                    ">" => Op::Above,
                    ">=" => Op::AtLeast,
                    "<" => Op::Below,
                    "<=" => Op::AtMost,
                    other => return Err(format!("{other:?} is no comparison (>, >=, <, <=)")),
                };
                let value: f64 = value
                    .parse()
                    .ok()
                    .filter(|v: &f64| v.is_finite())
                    .ok_or_else(|| format!("{value:?} is not a number"))?;
                Ok(Condition::Compare {
                    field,
                    op,
                    value,
                    for_secs,
                })
            }
            _ => Err(format!(
                "{text:?}: a condition is FIELD OP NUMBER [for DURATION] (cpu > 90 for 5m) \
                 or offline [for DURATION]"
            )),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Condition::Compare {
                field, op, value, ..
            } => write!(f, "{field} {} {value}", op.as_str())?,
            Condition::Offline { .. } => f.write_str("offline")?,
        }
        match self.for_secs() {
            0 => Ok(()),
            secs => write!(f, " for {}", format_secs(secs)),
        }
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Condition, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A rule: `when` on every host `target` selects (every host without
/// one). `alert_rule_set`'s argument, and a `[[alert]]` table of the
/// gateway's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// 1 to 64 bytes of `a-z`, `0-9`, `-` and `_`.
    pub name: String,
    pub when: Condition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl AlertRule {
    /// Whether the rule is well formed: the reason it is not, for a
    /// `bad_argument`.
    pub fn check(&self) -> Result<(), String> {
        let name_ok = (1..=64).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'));
        if !name_ok {
            return Err(format!(
                "rule name {:?}: 1 to 64 bytes of a-z, 0-9, '-' and '_'",
                self.name
            ));
        }
        if let Some(target) = &self.target {
            Selector::parse(target).map_err(|e| format!("rule {}: {e}", self.name))?;
        }
        Ok(())
    }
}

/// Where a rule comes from: the configuration's rules cannot be changed
/// over the API (edit the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSource {
    Config,
    Api,
}

/// A rule as `alert_rules` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleInfo {
    #[serde(flatten)]
    pub rule: AlertRule,
    pub source: RuleSource,
}

/// `alert_rule_delete`'s argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleName {
    pub name: String,
}

/// Whether an event starts or ends an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// An alert's start or end for one host under one rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// The cluster's order of events: increasing, never reused.
    pub seq: u64,
    pub state: AlertState,
    pub rule: String,
    pub host: String,
    /// The rule's condition, as written when the event happened.
    pub when: Condition,
    /// When this event happened, in seconds since the Unix epoch.
    pub at: u64,
    /// When the condition began to hold (for a firing event, `at` minus
    /// at least the rule's `for`).
    pub since: u64,
    /// The field's value that fired or resolved it (none for `offline`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

/// `alerts`: the alerts firing now, and the latest events before `before`
/// (a `seq`), at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// Default and ceiling [`MAX_ALERTS_PAGE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// The answer to `alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertsPage {
    /// The firing event of every alert that has not resolved, by host then
    /// rule.
    pub active: Vec<AlertEvent>,
    /// Events, newest first.
    pub recent: Vec<AlertEvent>,
    /// Whether older events follow (ask again with `before` the last
    /// `seq`).
    pub more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_read_and_write_as_people_write_them() {
        for (text, written) in [
            ("cpu > 90 for 5m", "cpu > 90 for 5m"),
            ("disk >= 95", "disk >= 95"),
            ("  offline   for 120s", "offline for 2m"),
            ("offline", "offline"),
            ("vpn_age > 300 for 1h", "vpn_age > 300 for 1h"),
            ("load < 0.5", "load < 0.5"),
        ] {
            let condition: Condition = text.parse().unwrap();
            assert_eq!(condition.to_string(), written);
            assert_eq!(written.parse::<Condition>(), Ok(condition));
        }
        assert_eq!(
            "cpu > 90 for 5m".parse(),
            Ok(Condition::Compare {
                field: Field::Cpu,
                op: Op::Above,
                value: 90.0,
                for_secs: 300
            })
        );
        for (bad, says) in [
            ("gpu > 3", "no summary field"),
            ("cpu = 3", "no comparison"),
            ("cpu > x", "not a number"),
            ("cpu > inf", "not a number"),
            ("cpu > 3 for", "one duration"),
            ("cpu > 3 for 5m 6m", "one duration"),
            ("offline for 9d", "at most 7d"),
            ("cpu >", "a condition is"),
            ("", "a condition is"),
        ] {
            let e = bad.parse::<Condition>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn rules_are_checked() {
        let rule: AlertRule = serde_json::from_str(
            r#"{"name": "hot-web", "when": "cpu > 90 for 5m", "target": "role=web"}"#,
        )
        .unwrap();
        assert_eq!(rule.check(), Ok(()));
        let bad_target = AlertRule {
            target: Some("role=(".into()),
            ..rule.clone()
        };
        assert!(bad_target.check().unwrap_err().starts_with("rule hot-web"));
        let bad_name = AlertRule {
            name: "Hot Web".into(),
            ..rule
        };
        assert!(bad_name.check().is_err());
        assert!(serde_json::from_str::<AlertRule>(r#"{"name": "x", "when": "cpu ~ 3"}"#).is_err());
        assert!(serde_json::from_str::<AlertRule>(
            r#"{"name": "x", "when": "offline", "to": "y"}"#
        )
        .is_err());
    }
}
