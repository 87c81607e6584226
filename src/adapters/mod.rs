//! The seeds' wire formats on the namespace: what the adapters share.
//!
//! Each adapter is a [`Translator`](crate::session::Translator) plugged into
//! the one session core ([`crate::session`]), which owns the connection
//! (identify deadline, heartbeat, bounded queue, closes); the gateway's
//! table of formats gives each its path. An adapter's client joins the
//! namespace as a native one does and makes requests of its
//! [`Member`](crate::namespace::Member); what the namespace sends it
//! (native payloads) reaches the session through a
//! [`ToActor`](crate::session::ToActor) sink, and the adapter writes it out
//! in its own format.

pub mod nest;
pub mod quix;
pub mod socketio;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;

use crate::auth::{Claims, Role};
use crate::fleet::Inventory;
use crate::namespace::{Member, Outcome};
use crate::protocol::agent::{reply, Envelope, Failure, Reason, Request, RequestName, Rid};
use crate::protocol::fleet::Facts;
use crate::protocol::{ClientInfo, Close, HostKind, Origin, Target};
use crate::session::{Ctx, Heard, Joining, Session, ToActor, Translator};
use crate::transport::outbox::{Frame, FrameSink};

/// A MESSAGE another client sent, from a frame the namespace delivered:
/// who sent it and its `data` (a host's requests come this way); `None`
/// for any other payload.
pub fn message(frame: &Frame) -> Option<(Origin, serde_json::Value)> {
    match serde_json::from_slice::<crate::protocol::Sequenced>(frame.payload()) {
        Ok(crate::protocol::Sequenced {
            payload: crate::protocol::PayloadOut::Message { origin, data, .. },
            ..
        }) => Some((origin, data)),
        _ => None,
    }
}

/// An adapter's outbox sink: the namespace's frames go to the session's
/// actor, to be translated (see [`Translator::sink`]).
pub fn to_actor<T: Translator>(session: &Session<T>, ctx: &mut Ctx<T>) -> Arc<dyn FrameSink> {
    Arc::new(ToActor::new(
        ctx.address().recipient(),
        ctx.address().recipient(),
        session.settings.max_outgoing_queue,
    ))
}

/// The text of a client's frame, or why the adapters' formats have no
/// place for it.
pub fn text(heard: Heard) -> Result<ByteString, &'static str> {
    match heard {
        Heard::Text(text) => Ok(text),
        Heard::NotUtf8 => Err("a text frame that is not UTF-8"),
        Heard::Binary | Heard::Fragment(_) => {
            Err("binary and fragmented frames are not supported: send text frames")
        }
    }
}

/// Joins the namespace as the host `claims` are for (tagged with its
/// `kind`, no presence; `take_over` as
/// [`Namespace::join`](crate::namespace::Namespace::join) takes it), and
/// once in, files it in the inventory with what its dialect told of it.
pub async fn join(
    joining: Joining,
    claims: &Claims,
    kind: HostKind,
    take_over: bool,
    (inventory, facts): (&Arc<Inventory>, Facts),
) -> Result<Member, Close> {
    let info = ClientInfo {
        name: claims.name.clone(),
        nickname: None,
        uuid: joining.uuid(),
        tags: vec![kind.tag().to_owned()],
        user: Some(claims.sub.clone()),
        roles: claims
            .role
            .implied()
            .iter()
            .map(|r| r.to_string())
            .collect(),
    };
    let member = joining.join(info, false, take_over, None).await?;
    inventory.file(&claims.name, kind, facts).await;
    Ok(member)
}

/// Sends the reply `data` (`{"rid", "msg"}`) by MESSAGE from `member` to
/// client `to`; a reply whose target must be looked up comes back as a
/// future to run.
///
/// A host's answer is its own JSON: parsed, so free of lone surrogates and
/// numbers no double holds, but possibly nested as deep as its frame
/// allowed. One that not every client could read (see
/// [`crate::protocol::data`]) goes as a `failed` reply under the same rid.
pub fn send_to(
    member: &Member,
    to: uuid::Uuid,
    data: &serde_json::Value,
) -> Option<Pin<Box<dyn Future<Output = ()>>>> {
    let mut raw = crate::protocol::raw_json(data);
    if let Err(e) = crate::protocol::data::check(raw.get()) {
        tracing::warn!(error = %e, "a host's answer cannot be relayed: refused");
        let failure = Failure::new(
            Reason::Failed,
            format!("the host's answer cannot be relayed: {e}"),
        );
        let refusal = serde_json::json!({"rid": data.get("rid"), "msg": failure.to_msg()});
        raw = crate::protocol::raw_json(&refusal);
    }
    let target = Target::Uuid {
        uuid: to.to_string(),
    };
    match member.message(None, &target, &raw) {
        Outcome::Later { done, .. } => Some(done),
        Outcome::Answered => None,
    }
}

/// The request in `envelope`, if its sender has the role it needs (as the
/// agent asks it: viewers read, operators command), with its arguments
/// read into their type.
pub fn authorized(origin: &Origin, envelope: &Envelope) -> Result<Request, Failure> {
    let name = RequestName::parse(&envelope.req)?;
    let roles: Vec<Role> = origin
        .client
        .roles
        .iter()
        .filter_map(|r| r.parse().ok())
        .collect();
    crate::protocol::agent::authorize(origin.client.user.as_deref(), &roles, name.access().role())?;
    Request::parse(envelope)
}

/// Answers every request `owed` (who asked, under which rid) that a host
/// will never answer now that it is gone: each operator hears `gone`, so
/// that every command sent to a host behind an adapter ends with a reply
/// (the host's, a `timeout` or this). `host` names the kind of host.
///
/// Called as the session stops (see
/// [`Translator::stopped`](crate::session::Translator::stopped)): the
/// replies that wait for a lookup run on their own, not on the stopped
/// actor.
pub fn gone(member: &Member, host: &str, owed: impl IntoIterator<Item = (uuid::Uuid, Rid)>) {
    for (origin, rid) in owed {
        let failure = Failure::new(
            Reason::Gone,
            format!("the {host} disconnected before it answered"),
        );
        if let Some(done) = send_to(member, origin, &reply(Some(&rid), Err(failure))) {
            actix::spawn(done);
        }
    }
}

/// The refusal of a request to a host that already has `limit` waiting
/// (requests to a silent host must not grow the gateway's memory).
pub fn too_many(limit: usize) -> Failure {
    Failure::new(
        Reason::Failed,
        format!("{limit} requests already wait for this host: try again later"),
    )
}
