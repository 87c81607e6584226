//! The payloads a client sends ([`PayloadIn`]), their `type` names
//! ([`PayloadKind`], the one list the gateway, its metrics and its tests
//! read), and how a text frame is decoded into one.
//!
//! The gateway decodes with [`PayloadIn::decode`] rather than a plain
//! `serde_json::from_str`: serde cannot keep a borrowed [`RawValue`] inside
//! an internally tagged enum, and MESSAGE `data` must be relayed
//! byte-for-byte without being parsed into a tree and printed again.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{data, History, Position, Target};

/// A payload sent by a client to the gateway.
///
/// Serialize it to send it; the gateway decodes it with [`PayloadIn::decode`].
#[derive(Debug, Serialize, strum::EnumDiscriminants)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
#[strum_discriminants(
    name(PayloadKind),
    doc = "A payload's `type`: the one list of what a client may send.",
    derive(strum::EnumString, strum::IntoStaticStr, strum::VariantNames, Hash),
    strum(serialize_all = "SCREAMING_SNAKE_CASE")
)]
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
        /// The `resume` secret of an earlier session's HELLO: proof of
        /// owning the name, to take it over from that session at once.
        #[serde(skip_serializing_if = "Option::is_none")]
        resume: Option<Cow<'a, str>>,
        /// `false`: a name held by another connection is refused (`4005`),
        /// even one of the same user or whose `resume` secret this one
        /// gives, instead of taken over (an agent started twice with one
        /// name). Absent or `null` means `true`.
        #[serde(skip_serializing_if = "Option::is_none")]
        take_over: Option<bool>,
    },
    Message {
        target: Target,
        data: &'a RawValue,
    },
    SelfSubscribe {
        service: Cow<'a, str>,
        /// The last position of the service's history the client saw: the
        /// messages after it are replayed before the live ones.
        #[serde(skip_serializing_if = "Option::is_none")]
        position: Option<Position>,
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
        /// The history to keep; absent: the gateway's default.
        #[serde(skip_serializing_if = "Option::is_none")]
        history: Option<History>,
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
    resume: Option<&'a RawValue>,
    #[serde(borrow)]
    take_over: Option<&'a RawValue>,
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
    #[serde(borrow)]
    position: Option<&'a RawValue>,
    #[serde(borrow)]
    history: Option<&'a RawValue>,
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
        let Ok(known) = kind.parse::<PayloadKind>() else {
            return Err(DecodeError::Unsupported(kind.into_owned()));
        };
        let r = Reader { kind: &kind };
        Ok(match known {
            PayloadKind::Identify => PayloadIn::Identify {
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
                resume: r.optional_string("resume", f.resume)?,
                take_over: r.optional("take_over", f.take_over)?,
            },
            PayloadKind::Message => {
                let target = r.required("target", f.target)?;
                let data = f.data.ok_or_else(|| {
                    DecodeError::Malformed("invalid MESSAGE: missing field `data`".into())
                })?;
                // Relayed as it is: it must be what every recipient reads.
                data::check(data.get()).map_err(|e| r.malformed("data", e))?;
                PayloadIn::Message { target, data }
            }
            PayloadKind::SelfSubscribe => PayloadIn::SelfSubscribe {
                service: r.string("service", f.service)?,
                position: r.optional("position", f.position)?,
            },
            PayloadKind::SelfUnsubscribe => PayloadIn::SelfUnsubscribe {
                service: r.string("service", f.service)?,
            },
            PayloadKind::SelfFetch => PayloadIn::SelfFetch,
            PayloadKind::SelfSetSeq => PayloadIn::SelfSetSeq {
                seq: r.required("seq", f.seq)?,
            },
            PayloadKind::ServiceCreate => PayloadIn::ServiceCreate {
                service: r.string("service", f.service)?,
                nickname: r.optional_string("nickname", f.nickname)?,
                history: r.optional("history", f.history)?,
            },
            PayloadKind::ServiceDelete => PayloadIn::ServiceDelete {
                service: r.string("service", f.service)?,
            },
            PayloadKind::ServiceFetch => PayloadIn::ServiceFetch {
                service: r.string("service", f.service)?,
            },
            PayloadKind::ServiceFetchAll => PayloadIn::ServiceFetchAll,
            PayloadKind::ClientFetch => PayloadIn::ClientFetch {
                uuid: r.string("uuid", f.uuid)?,
            },
            PayloadKind::ClientFetchAll => PayloadIn::ClientFetchAll,
            PayloadKind::UserSettingsFetch => PayloadIn::UserSettingsFetch,
            PayloadKind::UserSettingsSet => PayloadIn::UserSettingsSet {
                setting: r.string("setting", f.setting)?,
                value: r.string("value", f.value)?,
            },
        })
    }

    /// The payload's `type`, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        PayloadKind::from(self).as_str()
    }
}

impl PayloadKind {
    /// Every `type` a client may send.
    pub const NAMES: &'static [&'static str] = <PayloadKind as strum::VariantNames>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}
