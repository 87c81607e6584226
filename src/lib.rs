//! Concierge: a WebSocket gateway through which the programs of a fleet find,
//! address and command each other.
//!
//! See `docs/PROTOCOL.md` for the wire protocol and `README.md` for running it.

pub mod adapters;
pub mod admin;
pub mod agent;
pub mod auth;
pub mod bench;
pub mod client;
pub mod cluster;
pub mod config;
pub mod console;
pub mod ctl;
pub mod files;
pub mod gateway;
pub mod metrics;
pub mod namespace;
pub mod protocol;
pub mod session;
pub mod transport;
pub mod vpn;
