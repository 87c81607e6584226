//! The fleet layer: what the gateway knows of hosts beyond who is
//! connected at this moment.
//!
//! The namespace knows the clients that are connected now; an operator of
//! a fleet also needs the hosts that are not (a stopped agent, a machine
//! that is down), what each is (its facts and labels) and when it was last
//! seen. [`Inventory`] keeps that in the cluster's [`Store`](crate::cluster::Store)
//! (the file of a gateway running alone, Redis among replicas), so that
//! every replica answers for every host and the inventory outlives
//! restarts. It sits beside the namespace, not above it: the sessions
//! report to it and ask it, and it learns of departures as an
//! [`Observer`](crate::namespace::Observer). [`Health`] keeps what hosts
//! say of their health every few seconds, and the inventory lists it.

pub mod health;
pub mod inventory;
pub mod jobs;

pub use health::Health;
pub use inventory::Inventory;
pub use jobs::Jobs;
