//! How bytes reach a client and come back: everything between a session
//! and its socket.
//!
//! The registry, the services and the broker hand a client serialized
//! frames through its [`outbox::Outbox`], from any thread and without
//! waiting; the session core ([`crate::session`]) reads the client's frames
//! and decides what to do with them. Neither knows what carries the bytes:
//! this layer does. It owns the socket once the upgrade is answered (see
//! [`websocket`] for why the gateway does not leave it to actix-web), bounds
//! every client's queue so that a slow reader costs memory only up to
//! `max_outgoing_queue`, refuses oversized frames from their header
//! ([`frame_guard`]), runs plain TCP and TLS through one generic path
//! ([`socket`]), and closes connections the way RFC 6455 asks
//! ([`linger`]). Keeping it apart keeps the hot path (a frame from the
//! registry to the kernel) in one place, free of copies, and lets the
//! session and the namespace be written as if every client were a queue.

pub mod frame_guard;
pub mod linger;
pub mod outbox;
pub mod polling;
pub mod socket;
pub mod websocket;
