//! The request envelope the agent serves and the replies it sends, in seed
//! 003's shape, inside a MESSAGE's `data`.
//!
//! A request is `{"req": NAME, "rid": NUMBER, "msg": {...}}`; its reply is
//! `{"rid": NUMBER, "msg": {...}}`, and a streamed event (output of a
//! followed process) is `{"rid": NUMBER, "event": KIND, ...}`. Every failure
//! is `{"result": "error", "reason": CODE, "desc": TEXT}` with a [`Reason`]
//! from a fixed list, so a client can branch on `reason` and show `desc`.

use std::fmt;

use serde::Serialize;
use serde_json::{json, Map, Value};

/// Why a request failed: the stable `reason` of an error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// `data` is not a request envelope (`req` string, `rid` number, `msg`
    /// object).
    Malformed,
    /// `req` names no request this agent serves.
    UnknownRequest,
    /// An argument is missing, of the wrong type or out of range.
    BadArgument,
    /// The sender's roles or the agent's policy do not allow it.
    Forbidden,
    /// No such process, proc id or unit.
    NotFound,
    /// The operating system refused (permission, resource limits...).
    OsError,
    /// There is no systemd manager to talk to on this host.
    NoSystemd,
    /// The operation was attempted and failed (a unit's job failed, a
    /// command could not start).
    Failed,
    /// The operation did not finish in time.
    Timeout,
    /// A limit of this agent is reached (`max_running`, the follow caps):
    /// it may succeed later.
    Limit,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::UnknownRequest => "unknown_request",
            Reason::BadArgument => "bad_argument",
            Reason::Forbidden => "forbidden",
            Reason::NotFound => "not_found",
            Reason::OsError => "os_error",
            Reason::NoSystemd => "no_systemd",
            Reason::Failed => "failed",
            Reason::Timeout => "timeout",
            Reason::Limit => "limit",
        }
    }
}

/// A failed request: its reason code and a sentence for a person.
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
    pub fn to_msg(&self) -> Value {
        json!({"result": "error", "reason": self.reason, "desc": self.desc})
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.desc)
    }
}

/// A request id: seed 003 uses numbers; any JSON number is echoed back as
/// it came.
pub type Rid = serde_json::Number;

/// A decoded request envelope.
#[derive(Debug, Clone)]
pub struct Request {
    pub req: String,
    pub rid: Rid,
    pub msg: Map<String, Value>,
}

impl Request {
    /// Reads the envelope from a MESSAGE's `data`. On failure the rid, when
    /// one could be read, comes back with the reason so the reply can still
    /// be matched by the requester.
    pub fn decode(data: &Value) -> Result<Request, (Option<Rid>, Failure)> {
        let Some(object) = data.as_object() else {
            return Err((
                None,
                Failure::new(Reason::Malformed, "a request is a JSON object"),
            ));
        };
        let rid = match object.get("rid") {
            Some(Value::Number(n)) => n.clone(),
            Some(_) => {
                return Err((
                    None,
                    Failure::new(Reason::Malformed, "`rid` must be a number"),
                ))
            }
            None => {
                return Err((
                    None,
                    Failure::new(Reason::Malformed, "a request needs a numeric `rid`"),
                ))
            }
        };
        let req = match object.get("req") {
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err((
                    Some(rid),
                    Failure::new(Reason::Malformed, "a request needs a string `req`"),
                ))
            }
        };
        let msg = match object.get("msg") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                return Err((
                    Some(rid),
                    Failure::new(Reason::Malformed, "`msg` must be an object"),
                ))
            }
        };
        Ok(Request { req, rid, msg })
    }

    /// A required string argument.
    pub fn str(&self, key: &str) -> Result<&str, Failure> {
        match self.msg.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(Failure::bad_argument(format!(
                "`{key}` must be a string, not {other}"
            ))),
            None => Err(Failure::bad_argument(format!("`{key}` is required"))),
        }
    }

    /// An optional string argument.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, Failure> {
        match self.msg.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.str(key).map(Some),
        }
    }

    /// A required non-negative integer argument.
    pub fn u64(&self, key: &str) -> Result<u64, Failure> {
        match self.msg.get(key) {
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
                Failure::bad_argument(format!("`{key}` must be a non-negative integer, not {n}"))
            }),
            Some(other) => Err(Failure::bad_argument(format!(
                "`{key}` must be a number, not {other}"
            ))),
            None => Err(Failure::bad_argument(format!("`{key}` is required"))),
        }
    }

    /// An optional non-negative integer argument.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, Failure> {
        match self.msg.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.u64(key).map(Some),
        }
    }

    /// An optional boolean argument, `false` when absent.
    pub fn flag(&self, key: &str) -> Result<bool, Failure> {
        match self.msg.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(Failure::bad_argument(format!(
                "`{key}` must be true or false, not {other}"
            ))),
        }
    }

    /// A process id argument: a positive integer that fits a pid.
    pub fn pid(&self, key: &str) -> Result<u32, Failure> {
        let n = self.u64(key)?;
        match u32::try_from(n) {
            Ok(pid) if pid > 0 && pid <= i32::MAX as u32 => Ok(pid),
            _ => Err(Failure::bad_argument(format!(
                "`{key}` must be a process id (1..{}), not {n}",
                i32::MAX
            ))),
        }
    }

    /// A required array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<String>, Failure> {
        let wrong = || Failure::bad_argument(format!("`{key}` must be an array of strings"));
        match self.msg.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned).ok_or_else(wrong))
                .collect(),
            Some(_) => Err(wrong()),
            None => Err(Failure::bad_argument(format!("`{key}` is required"))),
        }
    }
}

/// The reply to request `rid`: `msg` is the success body or the failure.
pub fn reply(rid: Option<&Rid>, outcome: Result<Value, Failure>) -> Value {
    let msg = outcome.unwrap_or_else(|failure| failure.to_msg());
    json!({"rid": rid, "msg": msg})
}

/// `{"result": "success"}` with `fields` added.
pub fn success(fields: Value) -> Value {
    let mut body = Map::new();
    body.insert("result".into(), Value::from("success"));
    if let Value::Object(fields) = fields {
        body.extend(fields);
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_decodes_and_its_faults_are_named() {
        let r = Request::decode(&json!({"req": "execute", "rid": 7, "msg": {"cmd": ["true"]}}))
            .expect("decodes");
        assert_eq!(r.req, "execute");
        assert_eq!(r.strings("cmd").expect("cmd"), vec!["true"]);
        let (rid, f) = Request::decode(&json!({"rid": 7})).expect_err("no req");
        assert_eq!(rid.map(|n| n.to_string()), Some("7".into()));
        assert_eq!(f.reason, Reason::Malformed);
        let (rid, _) = Request::decode(&json!("hello")).expect_err("not an object");
        assert!(rid.is_none());
        assert_eq!(
            Request::decode(&json!({"req": "x", "rid": 1, "msg": 3}))
                .expect_err("msg")
                .1
                .reason,
            Reason::Malformed
        );
    }

    #[test]
    fn arguments_are_checked() {
        let r = Request::decode(&json!({"req": "x", "rid": 1, "msg": {"pid": -4, "n": "x"}}))
            .expect("decodes");
        assert_eq!(
            r.pid("pid").expect_err("negative").reason,
            Reason::BadArgument
        );
        assert_eq!(r.u64("n").expect_err("string").reason, Reason::BadArgument);
        assert_eq!(
            r.u64("absent").expect_err("absent").reason,
            Reason::BadArgument
        );
        assert_eq!(
            reply(Some(&r.rid), Err(Failure::new(Reason::NotFound, "no"))),
            json!({"rid": 1, "msg": {"result": "error", "reason": "not_found", "desc": "no"}})
        );
        assert_eq!(
            success(json!({"proc_id": 3})),
            json!({"result": "success", "proc_id": 3})
        );
    }
}
