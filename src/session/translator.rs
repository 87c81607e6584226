//! What a wire format plugs into the session core.
//!
//! The core ([`Session`]) does what every connection needs; a
//! [`Translator`] is the rest: the format's state, its identify step, how
//! a client's frame becomes requests to the namespace and how what the
//! namespace sends becomes the format's frames. Its hooks are associated
//! functions on the whole session, so a format reads and writes its state
//! (`session.format`) and uses the core's queue and closes in one place,
//! and everything is resolved at compile time (no box, no virtual call).

use std::sync::Arc;
use std::time::Duration;

use actix_http::ws::Item;
use bytestring::ByteString;
use uuid::Uuid;

use super::{Ctx, Session};
use crate::protocol::Close;
use crate::transport::outbox::{Frame, FrameSink};

/// A client's frame, once the core has done the WebSocket's own business
/// (pings, pongs, closes, protocol errors).
pub enum Heard {
    Text(ByteString),
    /// A text frame that is not UTF-8.
    NotUtf8,
    Binary,
    /// A piece of a fragmented message.
    Fragment(Item),
}

/// A wire format: its state per connection, and what it does with the
/// session at each turn of the core.
pub trait Translator: Sized + Unpin + 'static {
    /// The WebSocket paths the format is served on.
    const PATHS: &'static [&'static str];

    /// Who connects on the first of [`Self::PATHS`], for the 404 that
    /// lists the paths ("Nest hosts"); empty for the native format, which
    /// is named first.
    const CLIENTS: &'static str;

    /// The state of a new connection from `peer`, and the span its logs
    /// go under.
    fn new(peer: &str) -> (Self, tracing::Span);

    /// Why an upgrade request with this query string is refused (a 400),
    /// if it is.
    fn refused(_query: Option<&str>) -> Option<&'static str> {
        None
    }

    /// Once the actor runs: what the format sends first, if anything.
    fn started(_session: &mut Session<Self>, _ctx: &mut Ctx<Self>) {}

    /// Whether the client has identified in time (the identify deadline
    /// closes it otherwise).
    fn identified(&self) -> bool;

    /// Whether the heartbeat may close the client for silence yet.
    fn heartbeat_due(&self) -> bool {
        true
    }

    /// The uuid the client holds (or is being given) in the namespace: the
    /// core leaves it when the session stops.
    fn registered(&self) -> Option<Uuid>;

    /// The identify deadline has passed: say so in the format and close.
    fn identify_late(session: &mut Session<Self>, timeout: Duration, ctx: &mut Ctx<Self>);

    /// A frame from the client.
    fn heard(session: &mut Session<Self>, heard: Heard, ctx: &mut Ctx<Self>);

    /// The heartbeat's ping (a WebSocket ping unless the format has its
    /// own).
    fn ping(session: &mut Session<Self>) {
        session.out.ping();
    }

    /// The client is silent past `limit` and no backlog explains it:
    /// close it as the format does.
    fn silent(session: &mut Session<Self>, limit: Duration, ctx: &mut Ctx<Self>);

    /// The session is about to close with `close`: the format's last word
    /// before the close frame, if it has one.
    fn closing(_session: &mut Session<Self>, _close: &Close) {}

    /// The session has stopped, the client is gone, and it is about to
    /// leave the namespace: the format settles what it still owes others
    /// (answers to commands in flight; it can no longer send to its client).
    fn stopped(_session: &mut Session<Self>) {}

    /// Where the namespace's frames for this client go: the socket itself
    /// for a format that speaks native payloads, else a
    /// [`ToActor`](super::ToActor) that brings them to
    /// [`delivered`](Translator::delivered).
    fn sink(session: &Session<Self>, _ctx: &mut Ctx<Self>) -> Arc<dyn FrameSink> {
        session.sink.clone()
    }

    /// A native payload from the namespace, for the format to translate
    /// (only with a [`ToActor`](super::ToActor) sink).
    fn delivered(_session: &mut Session<Self>, _frame: Frame, _ctx: &mut Ctx<Self>) {}
}
