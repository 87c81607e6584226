//! The payloads the gateway sends ([`PayloadOut`]), with the `seq` of the
//! request they answer ([`Sequenced`]), and a relayed MESSAGE written from
//! pieces encoded once ([`MessageOut`]).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::{ClientInfo, Origin, Position, ServiceInfo, Target};

/// A payload sent by the gateway. The `seq` of the request it answers travels
/// beside it in [`Sequenced`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PayloadOut {
    Hello {
        uuid: Uuid,
        version: String,
        /// This session's private key to the file server (never sent to
        /// anyone else).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        fs_key: String,
        /// A secret proving this session owns its name (never sent to
        /// anyone else): given back in a later IDENTIFY's `resume`, it takes
        /// the name over at once. Only for a client without a token.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<String>,
    },
    Ok,
    /// The request was understood but refused; `desc` says why.
    Bad {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        desc: Option<String>,
    },
    /// A relayed MESSAGE. The gateway builds these with [`MessageOut`] so that
    /// `data` is never re-encoded; clients read them through this variant.
    Message {
        target: Target,
        origin: Origin,
        data: serde_json::Value,
        /// Where a broadcast of a service that keeps a history stands in it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<Position>,
    },
    SelfSubscribeResult {
        successful: bool,
        service: ServiceInfo,
        /// The history's last position (of a service that keeps one): the
        /// live broadcasts that follow come after it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<Position>,
        /// Whether the messages after the position the client gave are
        /// replayed (after this reply, before the live ones); absent when
        /// it gave none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    SelfUnsubscribeResult {
        successful: bool,
        service: ServiceInfo,
    },
    SelfFetchResult {
        client: ClientInfo,
        subscriptions: Vec<ServiceInfo>,
    },
    ClientFetchResult {
        client: ClientInfo,
        subscriptions: Vec<ServiceInfo>,
    },
    ServiceCreateResult {
        successful: bool,
        service: ServiceInfo,
    },
    ServiceDeleteResult {
        service: ServiceInfo,
    },
    ServiceFetchResult {
        service: ServiceInfo,
    },
    ServiceFetchAllResult {
        services: Vec<ServiceInfo>,
    },
    ClientFetchAllResult {
        clients: Vec<ClientInfo>,
    },
    ClientJoined {
        client: ClientInfo,
    },
    ClientLeft {
        client: ClientInfo,
    },
    ServiceClientSubscribed {
        client: ClientInfo,
        service: ServiceInfo,
    },
    ServiceClientUnsubscribed {
        client: ClientInfo,
        service: ServiceInfo,
    },
    ErrorInternal {
        desc: String,
    },
    /// A MESSAGE whose frame could not be handed to the other replicas
    /// (the cluster is unreachable): it did not reach clients elsewhere.
    ErrorUnavailable {
        desc: String,
    },
    ErrorUnsupported,
    ErrorProtocol {
        desc: String,
    },
    InvalidName {
        name: String,
    },
    InvalidUuid {
        uuid: String,
    },
    InvalidService {
        service: String,
    },
    /// The identified user's settings, every one with its value (defaults
    /// included).
    UserSettingsFetchResult {
        settings: std::collections::BTreeMap<String, String>,
    },
    /// A setting was written: every setting now.
    UserSettingsSetResult {
        settings: std::collections::BTreeMap<String, String>,
    },
}

/// A [`PayloadOut`] with the sequence number of the request it answers.
/// Broadcasts not caused by the receiving client carry no `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sequenced {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(flatten)]
    pub payload: PayloadOut,
}

impl PayloadOut {
    /// Serializes the payload, with `seq` when it answers a request.
    pub fn encode(self, seq: Option<u64>) -> String {
        encode_json(&Sequenced { seq, payload: self })
    }
}

/// A relayed MESSAGE as the gateway writes it. Nothing in it is encoded per
/// message but the target: `data` is the sender's bytes, and the receipt is
/// JSON encoded once per client ([`OriginRef::encode`]) and once per
/// service, written as it is.
pub struct MessageOut<'a> {
    pub target: &'a Target,
    /// The sender's client information, a JSON object.
    pub origin: &'a RawValue,
    /// The service the message went through, a JSON object.
    pub service: Option<&'a RawValue>,
    pub data: &'a RawValue,
    /// Its place in the service's history, when the service keeps one.
    pub position: Option<&'a Position>,
}

/// The borrowed form of [`Origin`], to encode once.
#[derive(Serialize)]
pub struct OriginRef<'a> {
    #[serde(flatten)]
    pub client: &'a ClientInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<&'a ServiceInfo>,
}

impl OriginRef<'_> {
    /// The receipt as JSON, for [`MessageOut::origin`].
    pub fn encode(&self) -> Box<RawValue> {
        // Plain data: encoding it cannot fail.
        serde_json::value::to_raw_value(self).expect("a receipt always serializes")
    }
}

/// Encodes a value once, for [`MessageOut::service`].
pub fn raw_json<T: Serialize>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("protocol objects always serialize")
}

impl MessageOut<'_> {
    /// How long the message is, near enough to size a buffer for it.
    pub fn size_hint(&self) -> usize {
        64 + self.origin.get().len()
            + self.service.map_or(0, |s| s.get().len())
            + self.data.get().len()
            + self.position.map_or(0, |p| 48 + p.epoch.len())
    }

    /// Writes the message's JSON: `{"type":"MESSAGE","target":…,"origin":…,"data":…}`,
    /// with `"service"` as the origin's last member when there is one.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"type":"MESSAGE","target":"#);
        // A target is strings in an enum: encoding it cannot fail.
        serde_json::to_writer(&mut *out, self.target).expect("a target always serializes");
        out.extend_from_slice(br#","origin":"#);
        let origin = self.origin.get().as_bytes();
        match self.service {
            // The origin is an object: its closing brace is its last byte.
            Some(service) if origin.ends_with(b"}") => {
                out.extend_from_slice(&origin[..origin.len() - 1]);
                out.extend_from_slice(br#","service":"#);
                out.extend_from_slice(service.get().as_bytes());
                out.push(b'}');
            }
            _ => out.extend_from_slice(origin),
        }
        out.extend_from_slice(br#","data":"#);
        out.extend_from_slice(self.data.get().as_bytes());
        if let Some(position) = self.position {
            out.extend_from_slice(br#","position":"#);
            // Strings and a number: encoding it cannot fail.
            serde_json::to_writer(&mut *out, position).expect("a position always serializes");
        }
        out.push(b'}');
    }

    pub fn encode(&self) -> String {
        let mut out = Vec::with_capacity(self.size_hint());
        self.write(&mut out);
        // Made of valid JSON pieces and ASCII punctuation.
        String::from_utf8(out).unwrap_or_default()
    }
}

fn encode_json<T: Serialize>(value: &T) -> String {
    // Every type here is made of strings, numbers, uuids, vectors and already
    // validated raw JSON: serializing it into a String cannot fail.
    serde_json::to_string(value).expect("protocol payloads always serialize")
}
