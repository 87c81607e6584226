//! The concierge wire protocol: every payload a client sends (`PayloadIn`) or
//! receives (`PayloadOut`), the objects inside them, and the close codes.
//!
//! Payloads are JSON objects tagged by a `type` field in SCREAMING_SNAKE_CASE.
//! Both directions derive `Serialize` and `Deserialize` so that clients written
//! in Rust (the agent, `ctl`, the benchmark tool, the tests) share the exact
//! types the gateway speaks; the requests carried inside MESSAGE `data` (the
//! agent's and the gateway's own) are typed in [`agent`]. It is a crate of
//! its own, depending on nothing else of concierge, so that the agent and
//! `ctl` can be built from it without the gateway.
//!
//! One module per concern: [`objects`] (clients, services, targets, origins),
//! [`incoming`] and [`outgoing`] payloads, [`close`] codes, [`data`] (what a
//! MESSAGE may carry), the reserved names, roles, [`agent`], [`files`]
//! (the file server's HTTP answers), [`fleet`] (the inventory: what hosts
//! report of themselves and what the gateway keeps), [`selector`] (target expressions:
//! which hosts a fleet command is for), [`jobs`] (one request run once on
//! every host a target names), [`health`] (the summaries hosts send and
//! their history), [`alerts`] (rules and their events) and [`wireguard`].

pub mod admin;
pub mod agent;
pub mod alerts;
pub mod close;
pub mod data;
pub mod files;
pub mod fleet;
pub mod health;
pub mod incoming;
pub mod jobs;
mod names;
pub mod objects;
pub mod outgoing;
mod role;
pub mod selector;
pub mod wireguard;

pub use close::{Close, CloseCode};
pub use data::MAX_DATA_DEPTH;
pub use incoming::{DecodeError, PayloadIn, PayloadKind};
pub use names::{CtlName, HostKind, HostService};
pub use objects::{ClientInfo, History, Origin, Position, ServiceInfo, Target};
pub use outgoing::{raw_json, MessageOut, OriginRef, PayloadOut, Sequenced};
pub use role::Role;

/// The WebSocket subprotocol the gateway selects when a client offers it.
pub const SUBPROTOCOL: &str = "ert-concierge";

/// The name no client may take: MESSAGEs to it are answered by the gateway
/// itself (VPN configs), with this name as the sender.
pub const GATEWAY_NAME: &str = "concierge";

/// The protocol version this gateway speaks, sent in HELLO.
pub const PROTOCOL_VERSION: &str = "0.2.0";

/// Whether a client announcing `version` can talk to this gateway.
///
/// Protocol 0.2.x clients are accepted (pre-release and build metadata
/// included); anything else, or a version that is not semantic, is refused
/// with [`CloseCode::BadVersion`].
pub fn version_compatible(version: &str) -> Result<(), String> {
    let parsed = semver::Version::parse(version.trim())
        .map_err(|e| format!("version {version:?} is not a semantic version: {e}"))?;
    if parsed.major == 0 && parsed.minor == 2 {
        Ok(())
    } else {
        Err(format!(
            "protocol version {parsed} is not supported: this gateway speaks {PROTOCOL_VERSION} and accepts 0.2.x"
        ))
    }
}

#[cfg(test)]
mod tests;
