//! Concierge: a WebSocket gateway through which the programs of a fleet find,
//! address and command each other.
//!
//! Data flows one way: socket → [`session`] → [`registry`] → [`broker`] →
//! the sessions' [`outbox`]es. See `docs/PROTOCOL.md` for the wire protocol
//! and `README.md` for running it.

pub mod bench;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod files;
pub mod frame_guard;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod registry;
pub mod server;
pub mod session;
pub mod websocket;
