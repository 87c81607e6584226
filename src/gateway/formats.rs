//! The wire formats the gateway serves, by WebSocket path.
//!
//! Each format is a [`Translator`] plugged into the one session core
//! ([`crate::session`]); this table is the only place that names them all.
//! Adding a format is its translator's file and one line in [`of_path`].

use std::rc::Rc;

use actix::prelude::*;

use super::session::Native;
use super::AppState;
use crate::adapters::{nest::Nest, quix::Quix, socketio::SocketIo};
use crate::session::{Session, Translator};
use crate::transport::frame_guard::{FrameGuard, FrameLimit};
use crate::transport::linger::Lent;
use crate::transport::socket::Socket;
use crate::transport::websocket::{Incoming, SocketInput, Writer};

/// What a session reads: the socket's frames, lent until it stops.
pub(super) type Input<S> = Lent<Incoming<FrameGuard<SocketInput<S>>>>;

/// Starts a format's session on the socket's input (the peer's address,
/// the frame guard's limit); its writer carries what the session sends.
pub(super) type Start<S> = fn(&AppState, Input<S>, String, Rc<FrameLimit>) -> Writer;

/// One wire format, for sockets of type `S`.
pub(super) struct Format<S: Socket> {
    pub paths: &'static [&'static str],
    clients: &'static str,
    /// Why an upgrade with this query string is refused, if it is.
    pub refused: fn(Option<&str>) -> Option<&'static str>,
    pub start: Start<S>,
}

/// Every format, the native one first.
fn all<S: Socket>() -> [Format<S>; 4] {
    [
        format::<S, Native>(),
        format::<S, Nest>(),
        format::<S, Quix>(),
        format::<S, SocketIo>(),
    ]
}

/// The format served on `path`, if any.
pub(super) fn of_path<S: Socket>(path: &str) -> Option<Format<S>> {
    all::<S>()
        .into_iter()
        .find(|format| format.paths.contains(&path))
}

/// The 404 of an upgrade on any other path: "WebSocket connections are
/// accepted on /ws (/nest for Nest hosts, ...) only", made once from the
/// table so that a new format is listed without another edit.
pub(super) fn paths_refusal<S: Socket>() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let formats = all::<S>();
        let (native, others) = formats.split_first().expect("the native format is first");
        let others: Vec<String> = others
            .iter()
            .map(|f| format!("{} for {}", f.paths[0], f.clients))
            .collect();
        format!(
            "WebSocket connections are accepted on {} ({}) only",
            native.paths[0],
            others.join(", ")
        )
    })
}

fn format<S: Socket, T: Translator>() -> Format<S> {
    Format {
        paths: T::PATHS,
        clients: T::CLIENTS,
        refused: T::refused,
        start: start::<S, T>,
    }
}

fn start<S: Socket, T: Translator>(
    state: &AppState,
    input: Input<S>,
    peer: String,
    limit: Rc<FrameLimit>,
) -> Writer {
    let (session, writer) = Session::<T>::new(
        state.settings.clone(),
        state.namespace.clone(),
        state.auth.clone(),
        state.vpn.clone(),
        (
            state.inventory.clone(),
            state.jobs.clone(),
            state.alerts.clone(),
        ),
        &peer,
        limit,
    );
    Session::create(move |ctx| {
        ctx.add_stream(input);
        session
    });
    writer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_404_lists_every_format_with_who_connects_there() {
        assert_eq!(
            paths_refusal::<tokio::net::TcpStream>(),
            "WebSocket connections are accepted on /ws (/nest for Nest hosts, /wsi for Quix \
             backends, /socket.io/ for Socket.IO clients) only"
        );
    }
}
