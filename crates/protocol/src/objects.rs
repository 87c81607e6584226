//! The objects payloads carry: who a client is ([`ClientInfo`]), what a
//! service is ([`ServiceInfo`]), where a MESSAGE goes ([`Target`]) and the
//! receipt saying who sent it ([`Origin`]).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Public information about a connected client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    pub uuid: Uuid,
    #[serde(default)]
    pub tags: Vec<String>,
    /// The account (or host) the client's token was issued to, verified by
    /// the gateway; `null` for a client that identified without a token.
    #[serde(default)]
    pub user: Option<String>,
    /// The token's role and the roles it implies (`admin` implies
    /// `operator`, which implies `viewer`); empty without a token.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Public information about a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    pub owner_uuid: Uuid,
    /// Subscriber uuids in subscription order. Empty in MESSAGE receipts (see
    /// [`Origin`]); complete everywhere else.
    #[serde(default)]
    pub subscribers: Vec<Uuid>,
    /// The history the service keeps of its broadcasts; absent when it
    /// keeps none (`docs/PROTOCOL.md` §17).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<History>,
}

/// How much of its broadcasts a service keeps, for subscribers that come
/// back (`docs/PROTOCOL.md` §17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The most messages kept: the oldest goes when one more comes.
    pub size: u64,
    /// Seconds a message is kept.
    pub ttl: u64,
}

/// Where a broadcast stands in its service's history: the history's
/// `epoch`, which changes when the history is lost, and the message's
/// `offset` in it (the first is 1; 0 is the position before it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

/// Where a MESSAGE goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "SCREAMING_SNAKE_CASE",
    try_from = "TargetFields"
)]
pub enum Target {
    /// The client with this name.
    Name { name: String },
    /// The client with this uuid. Kept as a string so that an unparsable uuid
    /// is answered with INVALID_UUID carrying exactly what was sent.
    Uuid { uuid: String },
    /// Owner → every subscriber (but the owner); subscriber → the owner.
    Service { service: String },
    /// Owner → one subscriber of its service.
    ServiceClientUuid { service: String, uuid: String },
    /// Every connected client, the sender included.
    All,
}

/// A target's fields, read in one pass: serde's internally tagged enums
/// buffer every field first, and a target is read for every MESSAGE.
#[derive(Deserialize)]
struct TargetFields {
    #[serde(rename = "type")]
    kind: TargetKind,
    name: Option<String>,
    uuid: Option<String>,
    service: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum TargetKind {
    Name,
    Uuid,
    Service,
    ServiceClientUuid,
    All,
}

impl TryFrom<TargetFields> for Target {
    type Error = &'static str;

    fn try_from(f: TargetFields) -> Result<Self, &'static str> {
        Ok(match f.kind {
            TargetKind::Name => Target::Name {
                name: f.name.ok_or("missing field `name` in a NAME target")?,
            },
            TargetKind::Uuid => Target::Uuid {
                uuid: f.uuid.ok_or("missing field `uuid` in a UUID target")?,
            },
            TargetKind::Service => Target::Service {
                service: f
                    .service
                    .ok_or("missing field `service` in a SERVICE target")?,
            },
            TargetKind::ServiceClientUuid => Target::ServiceClientUuid {
                service: f
                    .service
                    .ok_or("missing field `service` in a SERVICE_CLIENT_UUID target")?,
                uuid: f
                    .uuid
                    .ok_or("missing field `uuid` in a SERVICE_CLIENT_UUID target")?,
            },
            TargetKind::All => Target::All,
        })
    }
}

/// The receipt the gateway attaches to every relayed MESSAGE: who sent it
/// and, when it went through a service, which one.
///
/// `service.subscribers` is always empty here: copying the subscriber list into
/// every relayed message would make a broadcast cost grow with the square of
/// its audience. SERVICE_FETCH gives the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    #[serde(flatten)]
    pub client: ClientInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceInfo>,
}
