//! Concierge's own wire format (`/ws`), plugged into the session core.
//!
//! The core ([`crate::session`]) owns the connection: the identify
//! deadline, the heartbeat, the bounded queue, the closes. This translator
//! is what is native about a session: the IDENTIFY handshake and the checks
//! of the identity ([`identify`]), the sequence counter, the requests in
//! their order ([`replies`]) and the reassembly of fragmented messages
//! ([`fragments`]). Once identified, each request goes to the client's
//! [`Member`] handle on this actor's thread: MESSAGEs are routed and
//! fetches answered right here. Everything the client receives arrives as
//! a [`Frame`](crate::transport::outbox::Frame) pushed by its outbox
//! straight into the session's socket queue (see
//! [`crate::transport::websocket`]): native payloads need no translation.

mod fragments;
mod identify;
mod replies;

use std::time::Duration;

use bytestring::ByteString;
use uuid::Uuid;

use self::fragments::Fragments;
use self::replies::{request_for, Acks, Held, Request};
use crate::auth::Claims;
use crate::metrics;
use crate::namespace::Member;
use crate::protocol::{self, Close, CloseCode, DecodeError, PayloadIn, PayloadOut};
use crate::session::{Ctx, Heard, Session, Translator};

enum State {
    /// Connected, waiting for IDENTIFY.
    Anonymous,
    /// IDENTIFY accepted by the session, waiting for the registry.
    Identifying { uuid: Uuid },
    Identified {
        member: Member,
        /// The sequence number of the next counted payload.
        next_seq: u64,
        /// The verified token it identified with (boxed: most sessions of
        /// an open gateway have none).
        claims: Option<Box<Claims>>,
    },
}

/// The native format's state of one connection.
pub struct Native {
    state: State,
    held: Held,
    acks: Acks,
    fragments: Option<Fragments>,
}

impl Translator for Native {
    const PATHS: &'static [&'static str] = &["/ws"];
    const CLIENTS: &'static str = "";

    fn new(peer: &str) -> (Self, tracing::Span) {
        let span = tracing::info_span!(
            "conn",
            %peer,
            uuid = tracing::field::Empty,
            name = tracing::field::Empty
        );
        let native = Native {
            state: State::Anonymous,
            held: Held::default(),
            acks: Acks::default(),
            fragments: None,
        };
        (native, span)
    }

    fn identified(&self) -> bool {
        matches!(self.state, State::Identified { .. })
    }

    /// Before IDENTIFY the identify timeout is the one that applies.
    fn heartbeat_due(&self) -> bool {
        self.identified()
    }

    fn registered(&self) -> Option<Uuid> {
        match &self.state {
            State::Anonymous => None,
            State::Identifying { uuid } => Some(*uuid),
            State::Identified { member, .. } => Some(member.uuid()),
        }
    }

    fn identify_late(session: &mut Session<Self>, timeout: Duration, ctx: &mut Ctx<Self>) {
        session.close(
            ctx,
            Close::new(
                CloseCode::AuthFailed,
                format!("no IDENTIFY within {} ms", timeout.as_millis()),
            ),
        );
    }

    fn heard(session: &mut Session<Self>, heard: Heard, ctx: &mut Ctx<Self>) {
        match heard {
            Heard::Text(text) => session.on_text(text, ctx),
            // PROTOCOL.md 2.3 promises 1002 for it; only a reassembled
            // fragmented message is the gateway's 4002.
            Heard::NotUtf8 => session.protocol_error("a text frame that is not UTF-8", ctx),
            Heard::Binary => session.on_binary(ctx),
            Heard::Fragment(item) => session.on_fragment(item, ctx),
        }
    }

    fn silent(session: &mut Session<Self>, limit: Duration, ctx: &mut Ctx<Self>) {
        session.close(
            ctx,
            Close::new(
                CloseCode::HeartbeatFailed,
                format!("no frame or pong for {} ms", limit.as_millis()),
            ),
        );
    }
}

impl Session<Native> {
    pub(super) fn on_text(&mut self, text: ByteString, ctx: &mut Ctx<Native>) {
        let decoded = PayloadIn::decode(&text);
        metrics::get().payload_in(decoded.as_ref().ok().map(PayloadIn::kind), text.len());
        let State::Identified {
            ref member,
            ref mut next_seq,
            ..
        } = self.format.state
        else {
            if let State::Anonymous = self.format.state {
                self.on_first_text(decoded, ctx);
            }
            // While identifying, `ctx.wait` holds frames back.
            return;
        };
        let mut seq = *next_seq;
        *next_seq = seq.wrapping_add(1);
        let request = match decoded {
            Ok(PayloadIn::Message {
                target: protocol::Target::Name { ref name },
                data,
            }) if name == protocol::GATEWAY_NAME => Request::Gateway(data.to_owned()),
            // The common case, answered from the borrowed frame without
            // copying its data.
            Ok(PayloadIn::Message { target, data })
                if self.format.held.waiting_for.is_none() && self.format.held.queue.is_empty() =>
            {
                let relayed = member.relay(&target, data);
                return self.answer_relayed(Some(seq), relayed, ctx);
            }
            Ok(PayloadIn::SelfSetSeq { seq: n }) => {
                seq = n;
                *next_seq = n.wrapping_add(1);
                Request::Reply(Box::new(PayloadOut::Ok))
            }
            Ok(payload) => request_for(payload),
            Err(DecodeError::Malformed(desc)) => {
                Request::Reply(Box::new(PayloadOut::ErrorProtocol { desc }))
            }
            Err(DecodeError::Unsupported(kind)) => {
                tracing::debug!(%kind, "unsupported payload type");
                Request::Reply(Box::new(PayloadOut::ErrorUnsupported))
            }
        };
        self.submit(Some(seq), request, ctx);
    }

    pub(super) fn on_binary(&mut self, ctx: &mut Ctx<Native>) {
        match self.format.state {
            State::Anonymous => self.close(
                ctx,
                Close::new(
                    CloseCode::FatalDecode,
                    "binary frames are not supported: send IDENTIFY as text",
                ),
            ),
            State::Identifying { .. } => {}
            State::Identified { .. } => {
                let desc = "binary frames are not supported: payloads are JSON text frames";
                let reply =
                    Request::Reply(Box::new(PayloadOut::ErrorProtocol { desc: desc.into() }));
                self.submit(None, reply, ctx);
            }
        }
    }
}
