//! Concierge: a WebSocket gateway through which the programs of a fleet find,
//! address and command each other.
//!
//! See `docs/PROTOCOL.md` for the wire protocol and `README.md` for running it.

pub mod adapters;
pub mod admin;
pub mod auth;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod console;
pub mod files;
pub mod fleet;
pub mod gateway;
pub mod metrics;
pub mod namespace;
pub mod session;
pub mod transport;
pub mod vpn;

pub use concierge_protocol as protocol;
