//! How the shared namespace is laid out in Redis, and how messages on its
//! channels are encoded.
//!
//! Keys (prefix `concierge:`):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `name:{name}` | string | the uuid that claimed the name (`SET NX`) |
//! | `clients` | hash | uuid → `{client, node}` |
//! | `node-clients:{node}` | set | the uuids of a node's clients |
//! | `services` | hash | name → service (claimed with `HSETNX`) |
//! | `subs:{name}` | sorted set | subscriber uuids, scored by subscription time |
//! | `owned:{uuid}` | set | the names of the services a client claimed, released with its departure |
//! | `history:{name}` | stream | a service's history: id `0-{offset}`, fields `m` (the MESSAGE) and `t` (when kept, Unix ms) |
//! | `history-head:{name}` | hash | the history's `epoch` and `last` offset |
//! | `nodes` | set | every node that registered |
//! | `lease:{node}` | string with TTL | present while the node is alive |
//! | `reap:{node}` | string with TTL | who is cleaning up after a dead node |
//!
//! Channels: `concierge:events` carries namespace events and MESSAGEs to ALL
//! (every node needs both); `concierge:node:{node}` is a node's inbox for
//! frames to one of its clients; `concierge:service:{name}` carries the
//! broadcasts of a service from its owner's node.
//!
//! A channel message is a JSON header line, then (when the route carries
//! one) the frame's JSON, byte for byte. The receiving node hands the frame
//! up inside the message it came in ([`Payload`]), uncopied.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cluster::{Event, Inbound, NodeId, Payload};
use crate::protocol::ClientInfo;

pub const PREFIX: &str = "concierge";
pub const EVENTS: &str = "concierge:events";

/// `concierge:` followed by the parts, separated by colons.
pub fn key(parts: &[&str]) -> String {
    let mut key = String::from(PREFIX);
    for part in parts {
        key.push(':');
        key.push_str(part);
    }
    key
}

/// A node's inbox channel.
pub fn inbox(node: NodeId) -> String {
    key(&["node", &node.to_string()])
}

/// The channel of a service's broadcasts.
pub fn service_channel(name: &str) -> String {
    key(&["service", name])
}

/// A client as stored in the `clients` hash.
#[derive(Serialize, Deserialize)]
pub struct StoredClient {
    pub client: ClientInfo,
    pub node: NodeId,
}

/// The first line of every message on a channel.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    from: NodeId,
    route: Route,
}

/// Where a channel message goes, on the receiving node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Route {
    Event { event: Event },
    All { except: Option<Uuid> },
    Client { to: Uuid },
    Service { name: String, except: Option<Uuid> },
    TakeOver { uuid: Uuid },
}

/// A channel message: the header, then the frame's JSON `payload` if the
/// route carries one.
pub fn encode(from: NodeId, route: Route, payload: Option<&[u8]>) -> Vec<u8> {
    let header = Header { from, route };
    let mut out = Vec::with_capacity(96 + payload.map_or(0, <[u8]>::len));
    // A header is plain data: serializing it cannot fail.
    let _ = serde_json::to_writer(&mut out, &header);
    out.push(b'\n');
    if let Some(payload) = payload {
        out.extend_from_slice(payload);
    }
    out
}

/// Parses a channel message into its sender and what it carries; `None`
/// (logged) for anything malformed.
pub fn decode(message: redis::Msg) -> Option<(NodeId, Inbound)> {
    let bytes = message.get_payload_bytes();
    let split = bytes.iter().position(|b| *b == b'\n');
    let (head, body_at) = match split {
        Some(i) => (&bytes[..i], i + 1),
        None => (bytes, bytes.len()),
    };
    let header: Header = match serde_json::from_slice(head) {
        Ok(header) => header,
        Err(e) => {
            tracing::warn!(error = %e, "dropping a malformed cluster message");
            return None;
        }
    };
    let payload = || Payload::in_message(message, body_at);
    let inbound = match header.route {
        Route::Event { event } => Inbound::Event(event),
        Route::All { except } => Inbound::All {
            except,
            payload: payload(),
        },
        Route::Client { to } => Inbound::Client {
            to,
            payload: payload(),
        },
        Route::Service { name, except } => Inbound::Service {
            name,
            except,
            payload: payload(),
        },
        Route::TakeOver { uuid } => Inbound::TakenOver { uuid },
    };
    Some((header.from, inbound))
}
