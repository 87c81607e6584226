//! The fan-out seam between one gateway node and the rest of the cluster.
//!
//! The registry never loops over recipients itself for a broadcast: it
//! publishes a serialized frame on a [`Topic`], and the broker delivers it to
//! every outbox subscribed to that topic. [`LocalBroker`] is the in-process
//! implementation used when the gateway runs alone: it delivers synchronously,
//! so a publication reaches local clients in the same order as the direct
//! frames the registry sends around it (one sender's frames to one receiver
//! never overtake each other, whichever target they used). A Redis broker
//! (a later issue) keeps a `LocalBroker` for its own clients and relays each
//! publication to the other replicas subscribed to the topic.

use std::collections::HashMap;

use indexmap::IndexMap;
use uuid::Uuid;

use crate::outbox::{Frame, Outbox};

/// What a publication is addressed to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Every identified client.
    Everyone,
    /// The subscribers of one service.
    Service(String),
}

/// A serialized frame for every subscriber of a topic but `except`.
#[derive(Debug, Clone)]
pub struct Publication {
    pub frame: Frame,
    /// The client that caused it: it gets its own answer, with its `seq`,
    /// or (for a service broadcast by its owner) nothing at all.
    pub except: Option<Uuid>,
}

/// Delivers publications to the outboxes subscribed to a topic.
pub trait Broker: 'static {
    /// Adds `outbox` to the topic's subscribers (a no-op when it is there).
    fn subscribe(&mut self, topic: Topic, outbox: Outbox);
    /// Removes a client from the topic's subscribers.
    fn unsubscribe(&mut self, topic: &Topic, uuid: Uuid);
    /// Removes a topic and all its subscriptions.
    fn drop_topic(&mut self, topic: &Topic);
    /// Delivers `publication` to every subscriber of `topic`.
    fn publish(&mut self, topic: &Topic, publication: Publication);
}

/// The in-process broker: subscriptions are local outboxes, and publishing
/// is a loop of `try_send`s sharing one buffer.
#[derive(Default)]
pub struct LocalBroker {
    topics: HashMap<Topic, IndexMap<Uuid, Outbox>>,
}

impl Broker for LocalBroker {
    fn subscribe(&mut self, topic: Topic, outbox: Outbox) {
        self.topics
            .entry(topic)
            .or_default()
            .insert(outbox.uuid(), outbox);
    }

    fn unsubscribe(&mut self, topic: &Topic, uuid: Uuid) {
        if let Some(subscribers) = self.topics.get_mut(topic) {
            subscribers.swap_remove(&uuid);
            if subscribers.is_empty() {
                self.topics.remove(topic);
            }
        }
    }

    fn drop_topic(&mut self, topic: &Topic) {
        self.topics.remove(topic);
    }

    fn publish(&mut self, topic: &Topic, publication: Publication) {
        let Some(subscribers) = self.topics.get(topic) else {
            return;
        };
        for (uuid, outbox) in subscribers {
            if publication.except != Some(*uuid) {
                outbox.send(publication.frame.clone());
            }
        }
    }
}
