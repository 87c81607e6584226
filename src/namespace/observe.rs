//! Telling other parts of the gateway that the namespace changed.
//!
//! The namespace sits below everything that reacts to it (the file server
//! removes a departed client's folder, the metrics count clients, services
//! and subscriptions): rather than calling up into them, it tells the
//! [`Observer`]s it was given when the gateway was wired together.

use std::sync::Arc;

use crate::protocol::{ClientInfo, ServiceInfo};

/// A change to the namespace, as this node saw it.
#[derive(Debug)]
pub enum Change<'a> {
    Joined {
        client: &'a ClientInfo,
        /// A client of this node.
        local: bool,
    },
    Left {
        client: &'a ClientInfo,
        local: bool,
        /// This node is the one that cleans up after the client (its own
        /// node, or the node that reaped a dead one).
        cleanup: bool,
    },
    ServiceCreated {
        service: &'a ServiceInfo,
    },
    /// A service ended with `subscribers` subscribed.
    ServiceDeleted {
        service: &'a ServiceInfo,
    },
    Subscribed {
        service: &'a str,
        client: &'a ClientInfo,
    },
    Unsubscribed {
        service: &'a str,
        client: &'a ClientInfo,
    },
}

/// Something that reacts to namespace changes. Called on the thread of the
/// actor that made the change: it must not block.
pub trait Observer: Send + Sync {
    fn observe(&self, change: &Change<'_>);
}

/// The observers of one gateway.
#[derive(Clone, Default)]
pub struct Observers(Arc<[Arc<dyn Observer>]>);

impl Observers {
    pub fn new(observers: Vec<Arc<dyn Observer>>) -> Self {
        Observers(observers.into())
    }

    pub(super) fn tell(&self, change: Change<'_>) {
        for observer in self.0.iter() {
            observer.observe(&change);
        }
    }
}
