//! Why a request failed, as every side spells it: the `reason` codes of
//! PROTOCOL §13.1 and §14 in one enum, and the one error reply
//! `{"result": "error", "reason", "desc"}` built from them.
//!
//! The agent, the adapters, the gateway's own requests and the VPN all
//! answer with a [`Failure`]; a client branches on its [`Reason`] and shows
//! its `desc`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The stable `reason` of an error reply.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr, strum::EnumIter,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Reason {
    /// `data` is not a request envelope (`req` string, `rid` number, `msg`
    /// object).
    Malformed,
    /// `req` names no request the receiver serves.
    UnknownRequest,
    /// An argument is missing, of the wrong type or out of range.
    BadArgument,
    /// The sender's roles or the receiver's policy do not allow it.
    Forbidden,
    /// No such process, proc id, unit or VPN peer.
    NotFound,
    /// The operating system refused (permission, resource limits...).
    OsError,
    /// There is no systemd manager to talk to on this host.
    NoSystemd,
    /// The operation was attempted and failed (a unit's job failed, a
    /// command could not start, a host's answer cannot be relayed).
    Failed,
    /// The operation did not finish in time.
    Timeout,
    /// The host the request was sent to disconnected before it answered
    /// (a host behind an adapter: the command may or may not have run).
    Gone,
    /// A limit of the receiver is reached (`max_running`, the follow caps,
    /// an adapter's queue): it may succeed later.
    Limit,
    /// A Quix backend asked before it authenticated (seed 003); an HTTP
    /// request without a token the gateway accepts (401).
    NotAuthenticated,
    /// The gateway issues no VPN configs (§14).
    VpnDisabled,
    /// `public_key` is not a WireGuard public key (§14).
    BadPublicKey,
    /// `conf_type` other than `wireguard` (§14).
    BadConfType,
    /// `tun_mode` other than `udp` (§14).
    BadTunMode,
    /// The VPN's address pool is full (§14).
    PoolExhausted,
    /// The shared store cannot be reached.
    Unavailable,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed request: its reason code and a sentence for a person. It is
/// the `msg` of an error reply, and serializes as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub desc: String,
}

impl Failure {
    pub fn new(reason: Reason, desc: impl Into<String>) -> Failure {
        Failure {
            reason,
            desc: desc.into(),
        }
    }

    pub fn bad_argument(desc: impl Into<String>) -> Failure {
        Failure::new(Reason::BadArgument, desc)
    }

    /// The `msg` of the error reply.
    pub fn to_msg(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// The wire shape of an error reply's `msg`.
#[derive(Serialize, Deserialize)]
struct ErrorMsg {
    result: ErrorTag,
    reason: Reason,
    desc: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ErrorTag {
    Error,
}

impl Serialize for Failure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        ErrorMsg {
            result: ErrorTag::Error,
            reason: self.reason,
            desc: self.desc.clone(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Failure {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let ErrorMsg { reason, desc, .. } = ErrorMsg::deserialize(d)?;
        Ok(Failure { reason, desc })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.desc)
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use strum::IntoEnumIterator;

    use super::*;

    #[test]
    fn an_error_reply_has_the_documented_shape() {
        let failure = Failure::new(Reason::NotFound, "no process 4");
        let msg = json!({"result": "error", "reason": "not_found", "desc": "no process 4"});
        assert_eq!(failure.to_msg(), msg);
        assert_eq!(
            serde_json::from_value::<Failure>(msg).expect("reads back"),
            failure
        );
        assert!(serde_json::from_value::<Failure>(
            json!({"result": "success", "reason": "not_found", "desc": ""})
        )
        .is_err());
    }

    #[test]
    fn every_reason_is_spelled_as_it_serializes() {
        for reason in Reason::iter() {
            assert_eq!(json!(reason), json!(reason.as_str()));
        }
        assert_eq!(Reason::UnknownRequest.as_str(), "unknown_request");
        assert_eq!(Reason::OsError.as_str(), "os_error");
        assert_eq!(Reason::Gone.as_str(), "gone");
    }
}
