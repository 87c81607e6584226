//! Engine.IO v4 and Socket.IO v5 packets as text, read and written without
//! any state: the session ([`super::SocketIo`]) decides what they mean.
//!
//! A WebSocket text frame is one Engine.IO packet: a digit for its type
//! (`0` open, `1` close, `2` ping, `3` pong, `4` message, `5` upgrade, `6`
//! noop) and its data. An Engine.IO message carries one Socket.IO packet: a
//! digit for its type (`0` CONNECT, `1` DISCONNECT, `2` EVENT, `3` ACK, `4`
//! CONNECT_ERROR; `5` and `6`, the binary ones, are refused), then an
//! optional namespace (`/name,`), an optional ack id (digits), and JSON.

use serde_json::{json, Value};

/// An Engine.IO packet from the client.
#[derive(Debug, PartialEq)]
pub enum Engine<'a> {
    Close,
    /// A ping with its data (clients of v4 do not send them; answered
    /// anyway, as a v3 client or a probe would want).
    Ping(&'a str),
    Pong,
    Message(&'a str),
    Upgrade,
    Noop,
}

pub fn engine(text: &str) -> Result<Engine<'_>, String> {
    let mut chars = text.chars();
    let kind = chars
        .next()
        .ok_or_else(|| "an empty Engine.IO packet".to_owned())?;
    let rest = chars.as_str();
    Ok(match kind {
        '1' => Engine::Close,
        '2' => Engine::Ping(rest),
        '3' => Engine::Pong,
        '4' => Engine::Message(rest),
        '5' => Engine::Upgrade,
        '6' => Engine::Noop,
        '0' => return Err("the open packet is the server's to send".to_owned()),
        other => return Err(format!("no Engine.IO packet type {other:?}")),
    })
}

/// A Socket.IO packet's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
}

/// A Socket.IO packet from the client.
#[derive(Debug, PartialEq)]
pub struct Packet {
    pub kind: Kind,
    /// `/` unless the packet names another.
    pub nsp: String,
    pub id: Option<u64>,
    pub data: Option<Value>,
}

impl Packet {
    /// An EVENT's name and its first argument (`Null` when it has none).
    pub fn event(&self) -> Option<(&str, &Value)> {
        let args = self.data.as_ref()?.as_array()?;
        let name = args.first()?.as_str()?;
        Some((name, args.get(1).unwrap_or(&Value::Null)))
    }
}

/// The longest ack id read (`u64::MAX` has 20 digits).
const MAX_ID_DIGITS: usize = 19;

pub fn socket(text: &str) -> Result<Packet, String> {
    let mut chars = text.chars();
    let kind = match chars.next() {
        Some('0') => Kind::Connect,
        Some('1') => Kind::Disconnect,
        Some('2') => Kind::Event,
        Some('3') => Kind::Ack,
        Some('4') => Kind::ConnectError,
        Some('5' | '6') => {
            return Err("binary packets are not supported: send JSON arguments".to_owned())
        }
        Some(other) => return Err(format!("no Socket.IO packet type {other:?}")),
        None => return Err("an empty Socket.IO packet".to_owned()),
    };
    let mut rest = chars.as_str();
    let mut nsp = "/".to_owned();
    if rest.starts_with('/') {
        let (name, after) = rest.split_once(',').unwrap_or((rest, ""));
        nsp = name.to_owned();
        rest = after;
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let mut id = None;
    if digits > 0 {
        if digits > MAX_ID_DIGITS {
            return Err("the ack id is too long".to_owned());
        }
        id = Some(
            rest[..digits]
                .parse()
                .map_err(|_| "a bad ack id".to_owned())?,
        );
        rest = &rest[digits..];
    }
    let data = match rest {
        "" => None,
        json => Some(serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?),
    };
    let packet = Packet {
        kind,
        nsp,
        id,
        data,
    };
    match (kind, &packet.data) {
        (Kind::Connect, None | Some(Value::Object(_))) => {}
        (Kind::Connect, _) => return Err("CONNECT's auth data is a JSON object".to_owned()),
        (Kind::Event, _) if packet.event().is_none() => {
            return Err("an EVENT is a JSON array [\"name\", ...]".to_owned())
        }
        (Kind::Ack, Some(Value::Array(_))) if packet.id.is_some() => {}
        (Kind::Ack, _) => return Err("an ACK is an id and a JSON array".to_owned()),
        _ => {}
    }
    Ok(packet)
}

/// The Engine.IO open packet; `upgrades` the transports the client may
/// move to (`websocket` from polling, none from a WebSocket).
pub fn open(
    sid: &str,
    upgrades: &[&str],
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    max_payload: usize,
) -> String {
    let handshake = json!({
        "sid": sid,
        "upgrades": upgrades,
        "pingInterval": ping_interval_ms,
        "pingTimeout": ping_timeout_ms,
        "maxPayload": max_payload,
    });
    format!("0{handshake}")
}

pub const PING: &str = "2";
pub const DISCONNECT: &str = "41";

pub fn pong(data: &str) -> String {
    format!("3{data}")
}

/// CONNECT's answer on `nsp`.
pub fn connected(nsp: &str, sid: &str) -> String {
    format!("40{}{}", prefix(nsp), json!({ "sid": sid }))
}

pub fn connect_error(nsp: &str, message: &str) -> String {
    format!("44{}{}", prefix(nsp), json!({ "message": message }))
}

/// An EVENT with no argument, or one.
pub fn event(name: &str, data: Option<Value>) -> String {
    let args = match data {
        Some(data) => json!([name, data]),
        None => json!([name]),
    };
    format!("42{args}")
}

/// The answer to an EVENT that asked for one: no arguments.
pub fn ack(id: u64) -> String {
    format!("43{id}[]")
}

fn prefix(nsp: &str) -> String {
    if nsp == "/" {
        String::new()
    } else {
        format!("{nsp},")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_packets_clients_send() {
        assert_eq!(engine("3"), Ok(Engine::Pong));
        assert_eq!(engine("2probe"), Ok(Engine::Ping("probe")));
        assert_eq!(engine("440"), Ok(Engine::Message("40")));
        assert!(engine("").is_err() && engine("0{}").is_err() && engine("x").is_err());

        let connect = socket("0{\"token\":\"t\"}").unwrap();
        assert_eq!((connect.kind, connect.nsp.as_str()), (Kind::Connect, "/"));
        assert_eq!(connect.data, Some(json!({"token": "t"})));
        let event = socket("2/admin,12[\"con\",{\"monitor_id\":\"m1\"}]").unwrap();
        assert_eq!((event.nsp.as_str(), event.id), ("/admin", Some(12)));
        assert_eq!(event.event(), Some(("con", &json!({"monitor_id": "m1"}))));
        assert_eq!(
            socket("2[\"command done\"]").unwrap().event(),
            Some(("command done", &Value::Null))
        );
        assert_eq!(socket("1").unwrap().kind, Kind::Disconnect);
    }

    #[test]
    fn refuses_what_makes_no_sense() {
        for bad in [
            "",
            "9",
            "5-[\"x\",{\"_placeholder\":true,\"num\":0}]",
            "0[1]",
            "2{\"a\":1}",
            "2[1,2]",
            "2[]",
            "2[\"x\"",
            "299999999999999999999[\"x\"]",
            "3[]",
        ] {
            assert!(socket(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn writes_the_packets_the_server_sends() {
        assert_eq!(connected("/", "abc"), "40{\"sid\":\"abc\"}");
        assert_eq!(connect_error("/x", "no"), "44/x,{\"message\":\"no\"}");
        assert_eq!(event("command finish", None), "42[\"command finish\"]");
        assert_eq!(
            event("command do", Some(json!({"command": "ls"}))),
            "42[\"command do\",{\"command\":\"ls\"}]"
        );
        assert_eq!(ack(3), "433[]");
        assert!(open("s", &[], 1, 2, 3).starts_with("0{"));
        assert!(open("s", &["websocket"], 1, 2, 3).contains("\"upgrades\":[\"websocket\"]"));
    }
}
