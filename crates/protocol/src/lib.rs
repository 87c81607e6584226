//! The concierge wire protocol: every payload a client sends (`PayloadIn`) or
//! receives (`PayloadOut`), the objects inside them, and the close codes.
//!
//! Payloads are JSON objects tagged by a `type` field in SCREAMING_SNAKE_CASE.
//! The gateway decodes incoming payloads with [`PayloadIn::decode`] rather than
//! a plain `serde_json::from_str`: serde cannot keep a borrowed [`RawValue`]
//! inside an internally tagged enum, and MESSAGE `data` must be relayed
//! byte-for-byte without being parsed into a tree and printed again.
//!
//! Both directions derive `Serialize` and `Deserialize` so that clients written
//! in Rust (the agent, `ctl`, the benchmark tool, the tests) share the exact
//! types the gateway speaks. It is a crate of its own, depending on nothing
//! else of concierge, so that the agent and `ctl` can be built from it without
//! the gateway.

pub mod agent;
pub mod data;
mod names;
mod role;
pub mod wireguard;

pub use role::Role;

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

pub use data::MAX_DATA_DEPTH;
pub use names::{CtlName, HostService};

/// The WebSocket subprotocol the gateway selects when a client offers it.
pub const SUBPROTOCOL: &str = "ert-concierge";

/// The name no client may take: MESSAGEs to it are answered by the gateway
/// itself (VPN configs), with this name as the sender.
pub const GATEWAY_NAME: &str = "concierge";

/// The protocol version this gateway speaks, sent in HELLO.
pub const PROTOCOL_VERSION: &str = "0.2.0";

/// Whether a client announcing `version` can talk to this gateway.
///
/// Protocol 0.2.x clients are accepted (pre-release and build metadata
/// included); anything else, or a version that is not semantic, is refused
/// with [`CloseCode::BadVersion`].
pub fn version_compatible(version: &str) -> Result<(), String> {
    let parsed = semver::Version::parse(version.trim())
        .map_err(|e| format!("version {version:?} is not a semantic version: {e}"))?;
    if parsed.major == 0 && parsed.minor == 2 {
        Ok(())
    } else {
        Err(format!(
            "protocol version {parsed} is not supported: this gateway speaks {PROTOCOL_VERSION} and accepts 0.2.x"
        ))
    }
}

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

/// A payload sent by a client to the gateway.
///
/// Serialize it to send it; the gateway decodes it with [`PayloadIn::decode`].
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PayloadIn<'a> {
    Identify {
        name: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        nickname: Option<Cow<'a, str>>,
        version: Cow<'a, str>,
        tags: Vec<Cow<'a, str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        secret: Option<Cow<'a, str>>,
        /// A token from `POST /auth/token` or `concierge token issue`.
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<Cow<'a, str>>,
        /// `false`: no CLIENT_JOINED or CLIENT_LEFT for this client (an
        /// agent of a large fleet needs no presence of the others).
        #[serde(skip_serializing_if = "Option::is_none")]
        presence: Option<bool>,
    },
    Message {
        target: Target,
        data: &'a RawValue,
    },
    SelfSubscribe {
        service: Cow<'a, str>,
    },
    SelfUnsubscribe {
        service: Cow<'a, str>,
    },
    SelfFetch,
    SelfSetSeq {
        seq: u64,
    },
    ServiceCreate {
        service: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        nickname: Option<Cow<'a, str>>,
    },
    ServiceDelete {
        service: Cow<'a, str>,
    },
    ServiceFetch {
        service: Cow<'a, str>,
    },
    ServiceFetchAll,
    ClientFetch {
        uuid: Cow<'a, str>,
    },
    ClientFetchAll,
    /// The identified user's settings.
    UserSettingsFetch,
    UserSettingsSet {
        setting: Cow<'a, str>,
        value: Cow<'a, str>,
    },
}

/// Why an incoming text frame could not be turned into a [`PayloadIn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON, not an object, no string `type`, or fields of the wrong
    /// shape for the type. Answered with ERROR_PROTOCOL (or close 4002 before
    /// identification).
    Malformed(String),
    /// Well-formed, but a `type` this gateway does not implement. Answered
    /// with ERROR_UNSUPPORTED.
    Unsupported(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Malformed(desc) => f.write_str(desc),
            DecodeError::Unsupported(kind) => write!(f, "unsupported payload type {kind:?}"),
        }
    }
}

/// Every field any payload has, each kept as the raw JSON of its value: one
/// pass over the frame finds them all, and only the fields the payload's
/// `type` needs are then parsed (a field another type would use, with a
/// value of any shape, is ignored as unknown fields are).
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    nickname: Option<&'a RawValue>,
    #[serde(borrow)]
    version: Option<&'a RawValue>,
    #[serde(borrow)]
    tags: Option<&'a RawValue>,
    #[serde(borrow)]
    secret: Option<&'a RawValue>,
    #[serde(borrow)]
    token: Option<&'a RawValue>,
    #[serde(borrow)]
    presence: Option<&'a RawValue>,
    #[serde(borrow)]
    setting: Option<&'a RawValue>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
    #[serde(borrow)]
    service: Option<&'a RawValue>,
    #[serde(borrow)]
    uuid: Option<&'a RawValue>,
    #[serde(borrow)]
    seq: Option<&'a RawValue>,
    #[serde(borrow)]
    target: Option<&'a RawValue>,
    /// Kept even when it is `null`, which is a valid MESSAGE `data`.
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// A string borrowed from the frame when it has no escapes.
#[derive(Deserialize)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

/// Reads the fields of one payload type, naming the type in errors.
struct Reader<'k> {
    kind: &'k str,
}

impl Reader<'_> {
    fn malformed(&self, field: &str, e: impl fmt::Display) -> DecodeError {
        DecodeError::Malformed(format!("invalid {}: field `{field}`: {e}", self.kind))
    }

    fn optional<'a, T: Deserialize<'a>>(
        &self,
        field: &str,
        raw: Option<&'a RawValue>,
    ) -> Result<Option<T>, DecodeError> {
        raw.map(|raw| serde_json::from_str(raw.get()).map_err(|e| self.malformed(field, e)))
            .transpose()
    }

    fn required<'a, T: Deserialize<'a>>(
        &self,
        field: &str,
        raw: Option<&'a RawValue>,
    ) -> Result<T, DecodeError> {
        self.optional(field, raw)?.ok_or_else(|| {
            DecodeError::Malformed(format!("invalid {}: missing field `{field}`", self.kind))
        })
    }

    fn string<'a>(
        &self,
        field: &str,
        raw: Option<&'a RawValue>,
    ) -> Result<Cow<'a, str>, DecodeError> {
        self.required::<Str>(field, raw).map(|s| s.0)
    }

    fn optional_string<'a>(
        &self,
        field: &str,
        raw: Option<&'a RawValue>,
    ) -> Result<Option<Cow<'a, str>>, DecodeError> {
        Ok(self.optional::<Str>(field, raw)?.map(|s| s.0))
    }
}

impl<'a> PayloadIn<'a> {
    /// Decodes one text frame, borrowing strings and MESSAGE `data` from it.
    pub fn decode(text: &'a str) -> Result<Self, DecodeError> {
        let f: Fields<'a> = serde_json::from_str(text)
            .map_err(|e| DecodeError::Malformed(format!("invalid payload: {e}")))?;
        let kind = f
            .kind
            .ok_or_else(|| DecodeError::Malformed("invalid payload: missing field `type`".into()))?
            .0;
        let r = Reader { kind: &kind };
        Ok(match kind.as_ref() {
            "IDENTIFY" => PayloadIn::Identify {
                name: r.string("name", f.name)?,
                nickname: r.optional_string("nickname", f.nickname)?,
                version: r.string("version", f.version)?,
                tags: r
                    .optional::<Vec<Str>>("tags", f.tags)?
                    .map(|tags| tags.into_iter().map(|t| t.0).collect())
                    .unwrap_or_default(),
                secret: r.optional_string("secret", f.secret)?,
                token: r.optional_string("token", f.token)?,
                presence: r.optional("presence", f.presence)?,
            },
            "MESSAGE" => {
                let target = r.required("target", f.target)?;
                let data = f.data.ok_or_else(|| {
                    DecodeError::Malformed("invalid MESSAGE: missing field `data`".into())
                })?;
                // Relayed as it is: it must be what every recipient reads.
                data::check(data.get()).map_err(|e| r.malformed("data", e))?;
                PayloadIn::Message { target, data }
            }
            "SELF_SUBSCRIBE" => PayloadIn::SelfSubscribe {
                service: r.string("service", f.service)?,
            },
            "SELF_UNSUBSCRIBE" => PayloadIn::SelfUnsubscribe {
                service: r.string("service", f.service)?,
            },
            "SELF_FETCH" => PayloadIn::SelfFetch,
            "SELF_SET_SEQ" => PayloadIn::SelfSetSeq {
                seq: r.required("seq", f.seq)?,
            },
            "SERVICE_CREATE" => PayloadIn::ServiceCreate {
                service: r.string("service", f.service)?,
                nickname: r.optional_string("nickname", f.nickname)?,
            },
            "SERVICE_DELETE" => PayloadIn::ServiceDelete {
                service: r.string("service", f.service)?,
            },
            "SERVICE_FETCH" => PayloadIn::ServiceFetch {
                service: r.string("service", f.service)?,
            },
            "SERVICE_FETCH_ALL" => PayloadIn::ServiceFetchAll,
            "CLIENT_FETCH" => PayloadIn::ClientFetch {
                uuid: r.string("uuid", f.uuid)?,
            },
            "CLIENT_FETCH_ALL" => PayloadIn::ClientFetchAll,
            "USER_SETTINGS_FETCH" => PayloadIn::UserSettingsFetch,
            "USER_SETTINGS_SET" => PayloadIn::UserSettingsSet {
                setting: r.string("setting", f.setting)?,
                value: r.string("value", f.value)?,
            },
            _ => return Err(DecodeError::Unsupported(kind.into_owned())),
        })
    }

    /// Every `type` a client may send, as [`PayloadIn::kind`] names them.
    pub const KINDS: [&'static str; 14] = [
        "IDENTIFY",
        "MESSAGE",
        "SELF_SUBSCRIBE",
        "SELF_UNSUBSCRIBE",
        "SELF_FETCH",
        "SELF_SET_SEQ",
        "SERVICE_CREATE",
        "SERVICE_DELETE",
        "SERVICE_FETCH",
        "SERVICE_FETCH_ALL",
        "CLIENT_FETCH",
        "CLIENT_FETCH_ALL",
        "USER_SETTINGS_FETCH",
        "USER_SETTINGS_SET",
    ];

    /// The payload's `type`, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PayloadIn::Identify { .. } => "IDENTIFY",
            PayloadIn::Message { .. } => "MESSAGE",
            PayloadIn::SelfSubscribe { .. } => "SELF_SUBSCRIBE",
            PayloadIn::SelfUnsubscribe { .. } => "SELF_UNSUBSCRIBE",
            PayloadIn::SelfFetch => "SELF_FETCH",
            PayloadIn::SelfSetSeq { .. } => "SELF_SET_SEQ",
            PayloadIn::ServiceCreate { .. } => "SERVICE_CREATE",
            PayloadIn::ServiceDelete { .. } => "SERVICE_DELETE",
            PayloadIn::ServiceFetch { .. } => "SERVICE_FETCH",
            PayloadIn::ServiceFetchAll => "SERVICE_FETCH_ALL",
            PayloadIn::ClientFetch { .. } => "CLIENT_FETCH",
            PayloadIn::ClientFetchAll => "CLIENT_FETCH_ALL",
            PayloadIn::UserSettingsFetch => "USER_SETTINGS_FETCH",
            PayloadIn::UserSettingsSet { .. } => "USER_SETTINGS_SET",
        }
    }
}

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
    },
    SelfSubscribeResult {
        successful: bool,
        service: ServiceInfo,
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

/// WebSocket close codes the gateway uses, each sent with a readable reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1001: the gateway is shutting down.
    GoingAway,
    /// 1008: the client broke a limit (for example it stopped reading and
    /// its outgoing queue filled up).
    Policy,
    /// 1009: a frame larger than the configured maximum.
    TooBig,
    /// 1012: this replica is restarting; reconnect (to another one).
    ServiceRestart,
    /// 1013: the cluster cannot take new clients right now (Redis is
    /// unreachable); try again later.
    TryAgainLater,
    /// 4000: an internal error.
    Unknown,
    /// 4002: the first frame could not be decoded.
    FatalDecode,
    /// 4003: a payload other than IDENTIFY was sent first.
    NoAuth,
    /// 4004: no IDENTIFY within the identify timeout.
    AuthFailed,
    /// 4005: the name is taken.
    DuplicateAuth,
    /// 4006: the gateway secret does not match.
    BadSecret,
    /// 4007: the protocol version is not compatible.
    BadVersion,
    /// 4008: the name (or another identity field) is not acceptable.
    BadAuth,
    /// 4009: no sign of life within the heartbeat timeout.
    HeartbeatFailed,
    /// 4010: the gateway requires a token and IDENTIFY carried none.
    AuthRequired,
    /// 4011: the token is not one of this gateway's (malformed, altered,
    /// or signed by a retired key).
    TokenInvalid,
    /// 4012: the token has expired (also sent to an open socket when its
    /// token expires).
    TokenExpired,
    /// 4013: the token was revoked (also sent to its open sockets).
    TokenRevoked,
    /// 4014: the token does not allow this name.
    NameNotAllowed,
    /// 4015: a newer connection with the same user took the name over.
    TakenOver,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            CloseCode::GoingAway => 1001,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::ServiceRestart => 1012,
            CloseCode::TryAgainLater => 1013,
            CloseCode::Unknown => 4000,
            CloseCode::FatalDecode => 4002,
            CloseCode::NoAuth => 4003,
            CloseCode::AuthFailed => 4004,
            CloseCode::DuplicateAuth => 4005,
            CloseCode::BadSecret => 4006,
            CloseCode::BadVersion => 4007,
            CloseCode::BadAuth => 4008,
            CloseCode::HeartbeatFailed => 4009,
            CloseCode::AuthRequired => 4010,
            CloseCode::TokenInvalid => 4011,
            CloseCode::TokenExpired => 4012,
            CloseCode::TokenRevoked => 4013,
            CloseCode::NameNotAllowed => 4014,
            CloseCode::TakenOver => 4015,
        }
    }
}

/// A close code with its human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: CloseCode,
    pub reason: String,
}

impl Close {
    pub fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        Close {
            code,
            reason: reason.into(),
        }
    }

    /// 1008 for a client that does not read: more than `max` frames (its
    /// payloads, and the pongs answering its pings) wait to be sent to it.
    pub fn too_slow(max: usize) -> Self {
        Close::new(
            CloseCode::Policy,
            format!("too slow: more than {max} frames waiting to be sent"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn out_roundtrip(value: serde_json::Value) {
        let parsed: Sequenced = serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("{value} does not decode: {e}"));
        let back = serde_json::to_value(&parsed).expect("encodes");
        assert_eq!(back, value);
    }

    fn in_roundtrip(value: serde_json::Value) {
        let text = value.to_string();
        let parsed = PayloadIn::decode(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let back = serde_json::to_value(&parsed).expect("encodes");
        assert_eq!(back, value);
    }

    const U1: &str = "8b3f0c6e-2f4e-4a55-9d0e-1f7c2b9a4e11";
    const U2: &str = "0d1c2b3a-4f5e-4d6c-8b7a-9e8f7a6b5c4d";

    fn service() -> serde_json::Value {
        json!({"name": "chat", "nickname": "Chat room", "owner_uuid": U1, "subscribers": [U1, U2]})
    }

    /// The seed's client object, with the verified identity the gateway
    /// adds (here an anonymous client's).
    fn client() -> serde_json::Value {
        json!({"name": "alice", "nickname": "Alice", "uuid": U1, "tags": ["a", "b"], "user": null, "roles": []})
    }

    #[test]
    fn a_client_object_without_an_identity_is_anonymous() {
        let seed = json!({"name": "alice", "uuid": U1, "tags": []});
        let info: ClientInfo = serde_json::from_value(seed).expect("decodes");
        assert_eq!((info.user, info.roles.len()), (None, 0));
        let verified =
            json!({"name": "alice", "uuid": U1, "tags": [], "user": "alice", "roles": ["viewer"]});
        let info: ClientInfo = serde_json::from_value(verified.clone()).expect("decodes");
        assert_eq!(serde_json::to_value(&info).unwrap(), verified);
    }

    #[test]
    fn every_payload_in_of_the_seed_round_trips() {
        in_roundtrip(
            json!({"type": "IDENTIFY", "name": "alice_1", "nickname": "Alice", "version": "0.2.0", "tags": ["x"]}),
        );
        in_roundtrip(
            json!({"type": "IDENTIFY", "name": "a", "version": "0.2.0", "tags": [], "secret": "s"}),
        );
        in_roundtrip(json!({"type": "SELF_SUBSCRIBE", "service": "chat"}));
        in_roundtrip(json!({"type": "SELF_UNSUBSCRIBE", "service": "chat"}));
        in_roundtrip(json!({"type": "SELF_FETCH"}));
        in_roundtrip(json!({"type": "SELF_SET_SEQ", "seq": 41}));
        in_roundtrip(json!({"type": "SERVICE_CREATE", "service": "chat", "nickname": "Chat"}));
        in_roundtrip(json!({"type": "SERVICE_CREATE", "service": "chat"}));
        in_roundtrip(json!({"type": "SERVICE_DELETE", "service": "chat"}));
        in_roundtrip(json!({"type": "SERVICE_FETCH", "service": "chat"}));
        in_roundtrip(json!({"type": "SERVICE_FETCH_ALL"}));
        in_roundtrip(json!({"type": "CLIENT_FETCH_ALL"}));
        in_roundtrip(json!({"type": "CLIENT_FETCH", "uuid": U2}));
        for target in [
            json!({"type": "NAME", "name": "bob"}),
            json!({"type": "UUID", "uuid": U2}),
            json!({"type": "SERVICE", "service": "chat"}),
            json!({"type": "SERVICE_CLIENT_UUID", "service": "chat", "uuid": U2}),
            json!({"type": "ALL"}),
        ] {
            in_roundtrip(
                json!({"type": "MESSAGE", "target": target, "data": {"n": [1, 2.5, null]}}),
            );
        }
    }

    #[test]
    fn identify_tags_default_to_empty() {
        let text = r#"{"type":"IDENTIFY","name":"a","version":"0.2.0"}"#;
        match PayloadIn::decode(text) {
            Ok(PayloadIn::Identify { tags, nickname, .. }) => {
                assert!(tags.is_empty());
                assert!(nickname.is_none());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn message_data_is_kept_byte_for_byte() {
        let text = r#"{"data" : { "b":1,  "a" : [1e3, "\u00e9"] } ,"type":"MESSAGE","target":{"type":"ALL"},"origin":{"forged":true}}"#;
        match PayloadIn::decode(text) {
            Ok(PayloadIn::Message { data, target }) => {
                assert_eq!(data.get(), r#"{ "b":1,  "a" : [1e3, "\u00e9"] }"#);
                assert_eq!(target, Target::All);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn every_payload_out_of_the_seed_round_trips() {
        let seq = |mut v: serde_json::Value| {
            v["seq"] = json!(7);
            v
        };
        out_roundtrip(json!({"type": "OK", "seq": 3}));
        out_roundtrip(json!({"type": "BAD"}));
        out_roundtrip(json!({"type": "BAD", "seq": 1, "desc": "not the owner"}));
        out_roundtrip(json!({"type": "HELLO", "uuid": U1, "version": "0.2.0"}));
        for kind in [
            "SELF_SUBSCRIBE_RESULT",
            "SELF_UNSUBSCRIBE_RESULT",
            "SERVICE_CREATE_RESULT",
        ] {
            out_roundtrip(seq(
                json!({"type": kind, "successful": true, "service": service()}),
            ));
            out_roundtrip(json!({"type": kind, "successful": false, "service": service()}));
        }
        for kind in ["SELF_FETCH_RESULT", "CLIENT_FETCH_RESULT"] {
            out_roundtrip(seq(
                json!({"type": kind, "client": client(), "subscriptions": [service()]}),
            ));
        }
        out_roundtrip(json!({"type": "SERVICE_DELETE_RESULT", "service": service()}));
        out_roundtrip(seq(
            json!({"type": "SERVICE_FETCH_RESULT", "service": service()}),
        ));
        out_roundtrip(seq(
            json!({"type": "SERVICE_FETCH_ALL_RESULT", "services": [service(), service()]}),
        ));
        out_roundtrip(seq(
            json!({"type": "CLIENT_FETCH_ALL_RESULT", "clients": [client()]}),
        ));
        out_roundtrip(json!({"type": "CLIENT_JOINED", "client": client()}));
        out_roundtrip(json!({"type": "CLIENT_LEFT", "client": client()}));
        out_roundtrip(
            json!({"type": "SERVICE_CLIENT_SUBSCRIBED", "client": client(), "service": service()}),
        );
        out_roundtrip(
            json!({"type": "SERVICE_CLIENT_UNSUBSCRIBED", "client": client(), "service": service()}),
        );
        out_roundtrip(json!({"type": "ERROR_INTERNAL", "desc": "x"}));
        out_roundtrip(seq(json!({"type": "ERROR_UNSUPPORTED"})));
        out_roundtrip(seq(
            json!({"type": "ERROR_PROTOCOL", "desc": "missing field"}),
        ));
        out_roundtrip(seq(json!({"type": "INVALID_NAME", "name": "nobody"})));
        out_roundtrip(seq(json!({"type": "INVALID_UUID", "uuid": "not-a-uuid"})));
        out_roundtrip(seq(json!({"type": "INVALID_SERVICE", "service": "nope"})));
        let mut origin = client();
        origin["service"] = json!({"name": "chat", "owner_uuid": U1, "subscribers": []});
        out_roundtrip(
            json!({"type": "MESSAGE", "target": {"type": "SERVICE", "service": "chat"}, "origin": origin, "data": "hi"}),
        );
    }

    #[test]
    fn message_out_relays_raw_data_and_matches_the_client_type() {
        let data = RawValue::from_string(r#"{"k": [1,2]}"#.to_owned()).expect("raw");
        let origin = Origin {
            client: serde_json::from_value(client()).expect("client"),
            service: None,
        };
        let target = Target::Name { name: "bob".into() };
        let encoded = OriginRef {
            client: &origin.client,
            service: None,
        }
        .encode();
        let text = MessageOut {
            target: &target,
            origin: &encoded,
            service: None,
            data: &data,
        }
        .encode();
        assert!(text.contains(r#""data":{"k": [1,2]}"#), "{text}");
        let back: Sequenced = serde_json::from_str(&text).expect("decodes");
        assert_eq!(back.seq, None);
        assert_eq!(
            back.payload,
            PayloadOut::Message {
                target,
                origin: origin.clone(),
                data: json!({"k": [1, 2]})
            }
        );
        // Through a service, the service is the receipt's last member.
        let service = ServiceInfo {
            name: "chat".into(),
            nickname: None,
            owner_uuid: origin.client.uuid,
            subscribers: Vec::new(),
        };
        let target = Target::Service {
            service: "chat".into(),
        };
        let text = MessageOut {
            target: &target,
            origin: &encoded,
            service: Some(&raw_json(&service)),
            data: &data,
        }
        .encode();
        let back: Sequenced = serde_json::from_str(&text).expect("decodes");
        assert_eq!(
            back.payload,
            PayloadOut::Message {
                target,
                origin: Origin {
                    client: origin.client,
                    service: Some(service),
                },
                data: json!({"k": [1, 2]})
            }
        );
    }

    #[test]
    fn decode_errors_are_classified() {
        assert!(matches!(
            PayloadIn::decode("{"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            PayloadIn::decode("[1]"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            PayloadIn::decode(r#"{"type": 5}"#),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            PayloadIn::decode(r#"{"type": "SELF_SUBSCRIBE"}"#),
            Err(DecodeError::Malformed(m)) if m.contains("service")
        ));
        assert_eq!(
            PayloadIn::decode(r#"{"type": "TELEPORT"}"#).err(),
            Some(DecodeError::Unsupported("TELEPORT".into()))
        );
        assert!(matches!(
            PayloadIn::decode(r#"{"type":"MESSAGE","target":{"type":"MOON"},"data":1}"#),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn message_data_that_strict_parsers_refuse_is_malformed() {
        for (data, named) in [
            (r#""\ud800""#, "lone surrogate"),
            ("1e400", "too large for a double"),
            (
                &format!("{}0{}", "[".repeat(65), "]".repeat(65)),
                "deeper than 64",
            ),
        ] {
            let text = format!(r#"{{"type":"MESSAGE","target":{{"type":"ALL"}},"data":{data}}}"#);
            match PayloadIn::decode(&text) {
                Err(DecodeError::Malformed(desc)) => {
                    assert!(
                        desc.starts_with("invalid MESSAGE: field `data`: "),
                        "{desc}"
                    );
                    assert!(desc.contains(named), "{desc}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn kinds_are_the_types_decode_knows() {
        for kind in PayloadIn::KINDS {
            let text = json!({"type": kind}).to_string();
            let decoded = PayloadIn::decode(&text);
            assert!(
                !matches!(decoded, Err(DecodeError::Unsupported(_))),
                "{kind}"
            );
            if let Ok(payload) = decoded {
                assert_eq!(payload.kind(), kind);
            }
        }
    }

    #[test]
    fn versions() {
        assert!(version_compatible("0.2.0").is_ok());
        assert!(version_compatible("0.2.17-beta.1").is_ok());
        assert!(version_compatible("0.3.0").is_err());
        assert!(version_compatible("1.2.0").is_err());
        assert!(version_compatible("banana").is_err());
    }
}
