//! The scenarios. Each is a set of client tasks built from a
//! [`Plan`](client::Plan): who the client is, where it connects, what it
//! sets up (a service, a subscription), whose messages it receives and whom
//! it sends to.
//!
//! A run has three phases, announced to every task through one watch
//! channel: setup (connect, identify, create or subscribe, then keep
//! reading whatever the gateway broadcasts), go (senders send), stop
//! (every task hands back what it counted). Between setup and go the run
//! waits until no broadcast has arrived for `--settle-ms`, so the measured
//! phase does not include the tail of the setup traffic.
//!
//! Here, the phases; [`run`] holds what a run shares, [`client`] what each
//! client task does, and each family of scenarios has a module of its own.
//! `jobs` has clients of its own kinds: simulated agents ([`agent`]), for
//! which "go" is when the chosen ones drop their sockets, and the operator
//! who creates and follows the job ([`operator`]). `summaries` has the same
//! simulated agents, for which "go" is when they start sending summaries.

mod agent;
mod client;
mod connect;
mod jobs;
mod messages;
mod operator;
mod run;
mod summaries;

pub use connect::connect;
pub use jobs::jobs;
pub use messages::{direct, fanout};
pub use summaries::summaries;

/// The phases of a run, in order.
const SETUP: u8 = 0;
const GO: u8 = 1;
const STOP: u8 = 2;
