//! The envelope every request and reply travels in, inside a MESSAGE's
//! `data` (seed 003, PROTOCOL §13.1): a request is `{"req": NAME, "rid":
//! NUMBER, "msg": {...}}`, its reply `{"rid": NUMBER, "msg": {...}}`, a
//! streamed event `{"rid": NUMBER, "event": KIND, ...}`.
//!
//! The envelope is read before its arguments, so that a request whose
//! arguments are wrong is still answered under its `rid`, and so that the
//! audit trail can record the arguments as they were sent.

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::failure::{Failure, Reason};

/// A request id: seed 003 uses numbers; any JSON number is echoed back as
/// it came.
pub type Rid = serde_json::Number;

/// A decoded request envelope, its arguments not yet read (see
/// [`super::Request::parse`]).
#[derive(Debug, Clone)]
pub struct Envelope {
    pub req: String,
    pub rid: Rid,
    pub msg: Map<String, Value>,
}

impl Envelope {
    /// Whether `data` is a reply or an event rather than a request (`msg`
    /// or `event` without `req`): never answered, so that two agents never
    /// answer each other forever.
    pub fn is_answer(data: &Value) -> bool {
        data.get("req").is_none() && (data.get("msg").is_some() || data.get("event").is_some())
    }

    /// Reads the envelope from a MESSAGE's `data`. On failure the rid, when
    /// one could be read, comes back with the reason so the reply can still
    /// be matched by the requester.
    pub fn decode(data: &Value) -> Result<Envelope, (Option<Rid>, Failure)> {
        let malformed = |desc: &str| Failure::new(Reason::Malformed, desc);
        let Some(object) = data.as_object() else {
            return Err((None, malformed("a request is a JSON object")));
        };
        let rid = match object.get("rid") {
            Some(Value::Number(n)) => n.clone(),
            Some(_) => return Err((None, malformed("`rid` must be a number"))),
            None => return Err((None, malformed("a request needs a numeric `rid`"))),
        };
        let req = match object.get("req") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err((Some(rid), malformed("a request needs a string `req`"))),
        };
        let msg = match object.get("msg") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err((Some(rid), malformed("`msg` must be an object"))),
        };
        Ok(Envelope { req, rid, msg })
    }
}

/// The `data` of request `request` under `rid`: what `ctl`, the agent (to
/// the gateway) and an adapter (to its host) send.
pub fn envelope<R: Serialize>(request: &R, rid: impl Into<Rid>) -> Value {
    let mut data = serde_json::to_value(request).unwrap_or_default();
    if let Some(fields) = data.as_object_mut() {
        fields.insert("rid".into(), Value::Number(rid.into()));
    }
    data
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

/// The outcome a reply's `msg` carries: the body of a success, or the
/// [`Failure`] of an error reply.
pub fn outcome(msg: Value) -> Result<Value, Failure> {
    if msg.get("result").and_then(Value::as_str) == Some("error") {
        return Err(serde_json::from_value(msg.clone()).unwrap_or_else(|_| {
            Failure::new(
                Reason::Failed,
                format!("an error reply of no known shape: {msg}"),
            )
        }));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_decodes_and_its_faults_are_named() {
        let e = Envelope::decode(&json!({"req": "execute", "rid": 7, "msg": {"cmd": ["true"]}}))
            .expect("decodes");
        assert_eq!(e.req, "execute");
        assert_eq!(e.msg["cmd"], json!(["true"]));
        let (rid, f) = Envelope::decode(&json!({"rid": 7})).expect_err("no req");
        assert_eq!(rid.map(|n| n.to_string()), Some("7".into()));
        assert_eq!(f.reason, Reason::Malformed);
        let (rid, _) = Envelope::decode(&json!("hello")).expect_err("not an object");
        assert!(rid.is_none());
        let (_, f) = Envelope::decode(&json!({"req": "x", "rid": 1, "msg": 3})).expect_err("msg");
        assert_eq!(f.reason, Reason::Malformed);
        let e = Envelope::decode(&json!({"req": "ping", "rid": 1.5})).expect("no msg");
        assert!(e.msg.is_empty());
        assert_eq!(e.rid.to_string(), "1.5");
    }

    #[test]
    fn replies_and_events_are_not_requests() {
        assert!(Envelope::is_answer(&json!({"rid": 1, "msg": {}})));
        assert!(Envelope::is_answer(&json!({"rid": 1, "event": "exit"})));
        assert!(!Envelope::is_answer(
            &json!({"req": "ping", "rid": 1, "msg": {}})
        ));
        assert!(!Envelope::is_answer(&json!({"rid": 1})));
    }

    #[test]
    fn replies_carry_their_rid_and_outcome() {
        let rid = Rid::from(1);
        assert_eq!(
            reply(Some(&rid), Err(Failure::new(Reason::NotFound, "no"))),
            json!({"rid": 1, "msg": {"result": "error", "reason": "not_found", "desc": "no"}})
        );
        assert_eq!(
            reply(None, Ok(success(json!({"proc_id": 3})))),
            json!({"rid": null, "msg": {"result": "success", "proc_id": 3}})
        );
        assert_eq!(
            outcome(json!({"result": "error", "reason": "limit", "desc": "full"})),
            Err(Failure::new(Reason::Limit, "full"))
        );
        assert_eq!(outcome(json!([1])), Ok(json!([1])));
    }
}
