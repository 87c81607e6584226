//! The wire formats the gateway serves, by WebSocket path.
//!
//! Each format is a [`Translator`] plugged into the one session core
//! ([`crate::session`]); this table is the only place that names them all.
//! Adding a format is its translator's file and one line in [`of_path`].

use std::cell::Cell;
use std::rc::Rc;

use actix::prelude::*;

use super::session::Native;
use super::AppState;
use crate::adapters::{nest::Nest, quix::Quix, socketio::SocketIo};
use crate::session::{Session, Translator};
use crate::transport::frame_guard::FrameGuard;
use crate::transport::linger::Lent;
use crate::transport::socket::Socket;
use crate::transport::websocket::{Incoming, SocketInput, Writer};

/// What a session reads: the socket's frames, lent until it stops.
pub(super) type Input<S> = Lent<Incoming<FrameGuard<SocketInput<S>>>>;

/// Starts a format's session on the socket's input (the peer's address,
/// the flag the frame guard sets on an oversized frame); its writer carries
/// what the session sends.
pub(super) type Start<S> = fn(&AppState, Input<S>, String, Rc<Cell<bool>>) -> Writer;

/// One wire format, for sockets of type `S`.
pub(super) struct Format<S: Socket> {
    paths: &'static [&'static str],
    /// Why an upgrade with this query string is refused, if it is.
    pub refused: fn(Option<&str>) -> Option<&'static str>,
    pub start: Start<S>,
}

/// The format served on `path`, if any.
pub(super) fn of_path<S: Socket>(path: &str) -> Option<Format<S>> {
    [
        format::<S, Native>(),
        format::<S, Nest>(),
        format::<S, Quix>(),
        format::<S, SocketIo>(),
    ]
    .into_iter()
    .find(|format| format.paths.contains(&path))
}

fn format<S: Socket, T: Translator>() -> Format<S> {
    Format {
        paths: T::PATHS,
        refused: T::refused,
        start: start::<S, T>,
    }
}

fn start<S: Socket, T: Translator>(
    state: &AppState,
    input: Input<S>,
    peer: String,
    oversized: Rc<Cell<bool>>,
) -> Writer {
    let (session, writer) = Session::<T>::new(
        state.settings.clone(),
        state.namespace.clone(),
        state.auth.clone(),
        state.vpn.clone(),
        &peer,
        oversized,
    );
    Session::create(move |ctx| {
        ctx.add_stream(input);
        session
    });
    writer
}
