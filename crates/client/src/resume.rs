//! What a long-lived client keeps across its connections so that a dropped
//! connection costs it nothing (`docs/PROTOCOL.md` §2.1 and §17): the
//! `resume` secret of its last HELLO, which takes its name back at once
//! from a session the gateway has not yet seen go, and the last position it
//! saw of each service it subscribes to, which a SELF_SUBSCRIBE after the
//! reconnection gives back so that the gateway replays what it missed.
//!
//! [`Resume`] is fed every payload the client receives
//! ([`Resume::observe`]); it says when a resubscription could not recover
//! the history ([`Resubscribed::recovered`] `false`): the caller must then
//! resync from the owner, since messages may be missing. It also watches
//! the offsets of the live broadcasts: one after a hole (broadcasts the
//! client's replica did not get while the owner's replica was cut off from
//! Redis, §17.5) is set aside and the history asked again from the last
//! position seen ([`Observed::Hole`]), so that the missed ones come, in
//! order, without a reconnection.
//! [`Resume::reconnect`] connects again with backoff after the errors that
//! a restart or a network fault gives ([`retryable`]), and resubscribes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use concierge_protocol::{PayloadIn, PayloadOut, Position, Target};

use super::{ClientError, Connection, Identity, Sender};

/// The first wait before connecting again; each failure doubles it.
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
const LONGEST_WAIT: Duration = Duration::from_secs(5);

/// A client's resume state: its name's secret and its subscriptions with
/// the last position seen of each. Not `Debug`: the secret is never
/// printed or logged.
#[derive(Default, Clone)]
pub struct Resume {
    /// The `resume` secret of the last HELLO (none with a token).
    secret: Option<String>,
    /// Each subscribed service and the last position seen of its history
    /// (`None` before one is known or for a service without history).
    services: BTreeMap<String, Option<Position>>,
    /// The services resubscribed after a reconnection whose result has not
    /// come yet.
    resubscribing: BTreeSet<String>,
    /// The services asked again after a hole in their offsets, whose
    /// result has not come yet: their live broadcasts meanwhile come again
    /// in the replay.
    refilling: BTreeSet<String>,
}

/// How to ask a service's history again from the last position seen:
/// SELF_UNSUBSCRIBE, then SELF_SUBSCRIBE from `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refill {
    pub service: String,
    pub from: Position,
}

impl Refill {
    /// The two payloads to send, in order.
    pub fn payloads(&self) -> [PayloadIn<'_>; 2] {
        [
            PayloadIn::SelfUnsubscribe {
                service: self.service.as_str().into(),
            },
            PayloadIn::SelfSubscribe {
                service: self.service.as_str().into(),
                position: Some(self.from.clone()),
            },
        ]
    }
}

/// What the caller does with a payload [`Resume::observe`] looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Handle it as usual.
    Pass,
    /// A broadcast not to show: the client had it already, or it comes
    /// again, in order, in the replay asked for after a hole.
    Drop,
    /// A broadcast after a hole in its service's offsets: drop it and send
    /// the [`Refill`]'s payloads, whose replay brings the missing ones and
    /// this one.
    Hole(Refill),
    /// What a resubscription found.
    Resubscribed(Resubscribed),
}

/// What a resubscription found: whether the messages the client missed
/// are replayed (`recovered`) or may be lost (it must resync): also when
/// there was no position to resume from (a service without history), after
/// a reconnection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resubscribed {
    pub service: String,
    pub recovered: bool,
}

impl Resume {
    /// Connects and identifies as [`crate::connect`] does, presenting the
    /// last HELLO's secret (to take the name back at once) and keeping the
    /// new one. Subscribes to nothing: see [`Resume::reconnect`].
    pub async fn connect(
        &mut self,
        url: &str,
        identity: &Identity,
    ) -> Result<Connection, ClientError> {
        let (connection, secret) = super::identify(url, identity, self.secret.as_deref()).await?;
        self.secret = secret;
        Ok(connection)
    }

    /// The IDENTIFY of `identity` with the last HELLO's secret, for a
    /// client that does its own handshake (the load generator's simulated
    /// agents, on their own sockets); [`Resume::hello`] keeps the answer's.
    pub fn identify<'a>(&'a self, identity: &'a Identity) -> PayloadIn<'a> {
        identity.payload(self.secret.as_deref())
    }

    /// Keeps the secret of a HELLO that such a client received.
    pub fn hello(&mut self, hello: &PayloadOut) {
        if let PayloadOut::Hello { resume, .. } = hello {
            self.secret = resume.clone();
        }
    }

    /// Connects again, waiting longer after each failure (100 ms doubling
    /// to 5 s, jittered) for at most `patience`, as long as the failure is
    /// [`retryable`]; then sends the SELF_SUBSCRIBE of every subscription,
    /// with its last position.
    pub async fn reconnect(
        &mut self,
        url: &str,
        identity: &Identity,
        patience: Duration,
    ) -> Result<Connection, ClientError> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut wait = FIRST_WAIT;
        let connection = loop {
            let attempt = tokio::time::timeout_at(deadline, self.connect(url, identity)).await;
            match attempt {
                Ok(Ok(connection)) => break connection,
                Ok(Err(e)) if retryable(&e) => {
                    if tokio::time::Instant::now() + wait > deadline {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, ?wait, "reconnecting");
                    tokio::time::sleep(jittered(wait)).await;
                    wait = (wait * 2).min(LONGEST_WAIT);
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(ClientError::Connect {
                        url: url.to_owned(),
                        reason: format!("no connection within {patience:?}"),
                    })
                }
            }
        };
        self.resubscribe(&connection.sender).await?;
        Ok(connection)
    }

    /// Records a subscription to `service` and returns its SELF_SUBSCRIBE,
    /// with the last position seen when there is one.
    pub fn subscribe(&mut self, service: &str) -> PayloadIn<'static> {
        let position = self.services.entry(service.to_owned()).or_default();
        PayloadIn::SelfSubscribe {
            service: service.to_owned().into(),
            position: position.clone(),
        }
    }

    /// Forgets a subscription (the client unsubscribed).
    pub fn unsubscribe(&mut self, service: &str) {
        self.services.remove(service);
    }

    /// The SELF_SUBSCRIBE of every subscription, with its last position:
    /// what to send after reconnecting.
    pub fn subscriptions(&self) -> Vec<PayloadIn<'_>> {
        self.services
            .iter()
            .map(|(service, position)| PayloadIn::SelfSubscribe {
                service: service.as_str().into(),
                position: position.clone(),
            })
            .collect()
    }

    /// Sends [`Resume::subscriptions`]; each result is reported by
    /// [`Resume::observe`].
    pub async fn resubscribe(&mut self, sender: &Sender) -> Result<(), ClientError> {
        self.resubscribing = self.services.keys().cloned().collect();
        self.refilling.clear();
        for payload in self.subscriptions() {
            sender.send(&payload).await?;
        }
        Ok(())
    }

    /// Whether `service` is one of the subscriptions.
    pub fn subscribed(&self, service: &str) -> bool {
        self.services.contains_key(service)
    }

    /// The last position seen of `service`'s history.
    pub fn position(&self, service: &str) -> Option<&Position> {
        self.services.get(service)?.as_ref()
    }

    /// Takes note of a payload received: a subscribed service's broadcast
    /// moves its position (or, after a hole, asks for the history again),
    /// a SELF_SUBSCRIBE_RESULT sets it. Says what the caller does with it,
    /// and what a subscription with a position, or any after a
    /// reconnection or a hole, found.
    pub fn observe(&mut self, payload: &PayloadOut) -> Observed {
        match payload {
            PayloadOut::Message {
                target: Target::Service { service },
                position: Some(position),
                ..
            } => self.broadcast(service, position),
            PayloadOut::SelfSubscribeResult {
                successful,
                service,
                position,
                recovered,
            } => {
                let Some(last) = self.services.get_mut(&service.name) else {
                    return Observed::Pass;
                };
                // Replayed: the replay moves the position, one message at a
                // time. Otherwise the live messages follow the result's.
                let replayed = *successful && *recovered == Some(true);
                if !replayed && (*successful || last.is_none()) {
                    *last = position.clone();
                }
                let again =
                    self.resubscribing.remove(&service.name) | self.refilling.remove(&service.name);
                match recovered.or(again.then_some(false)) {
                    Some(recovered) => Observed::Resubscribed(Resubscribed {
                        service: service.name.clone(),
                        recovered,
                    }),
                    None => Observed::Pass,
                }
            }
            _ => Observed::Pass,
        }
    }

    /// A broadcast of `service` at `position`: the next one, one already
    /// seen, or one after a hole.
    fn broadcast(&mut self, service: &str, position: &Position) -> Observed {
        let Some(last) = self.services.get_mut(service) else {
            return Observed::Pass;
        };
        if self.refilling.contains(service) {
            return Observed::Drop;
        }
        match last {
            Some(seen) if seen.epoch == position.epoch && position.offset <= seen.offset => {
                Observed::Drop
            }
            Some(seen) if seen.epoch == position.epoch && position.offset > seen.offset + 1 => {
                let from = seen.clone();
                self.refilling.insert(service.to_owned());
                Observed::Hole(Refill {
                    service: service.to_owned(),
                    from,
                })
            }
            _ => {
                *last = Some(position.clone());
                Observed::Pass
            }
        }
    }
}

/// Whether a client should connect again after `error`: the gateway is
/// restarting or going away (1001, 1012, 1013), the connection broke or
/// was refused (a network fault, a gateway not yet back), or the gateway
/// found it silent (4009) or failed (1011). Not after a refusal of the
/// client itself (a 4xxx of identification, 4015 taken over, 1008).
pub fn retryable(error: &ClientError) -> bool {
    match error {
        ClientError::Connect { .. } | ClientError::Broken(_) => true,
        ClientError::Closed { code, .. } => {
            matches!(code, 1001 | 1005 | 1006 | 1011 | 1012 | 1013 | 4009)
        }
        ClientError::Protocol(_) => false,
    }
}

/// A wait between half of `wait` and all of it, so that clients that lost
/// their gateway at once do not all come back at once.
fn jittered(wait: Duration) -> Duration {
    let unit = f64::from(getrandom::u32().unwrap_or(u32::MAX / 2)) / f64::from(u32::MAX);
    wait.mul_f64(0.5 + unit / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use concierge_protocol::{Origin, ServiceInfo};
    use serde_json::json;
    use uuid::Uuid;

    fn at(epoch: &str, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }

    fn service(name: &str) -> ServiceInfo {
        ServiceInfo {
            name: name.into(),
            nickname: None,
            owner_uuid: Uuid::nil(),
            subscribers: Vec::new(),
            history: None,
        }
    }

    fn broadcast(name: &str, position: Option<Position>) -> PayloadOut {
        let origin: Origin = serde_json::from_value(json!({
            "name": "host1", "uuid": Uuid::nil(), "tags": [], "service": service(name),
        }))
        .expect("an origin");
        PayloadOut::Message {
            target: Target::Service {
                service: name.into(),
            },
            origin,
            data: json!({}),
            position,
        }
    }

    fn result(name: &str, position: Position, recovered: Option<bool>) -> PayloadOut {
        PayloadOut::SelfSubscribeResult {
            successful: true,
            service: service(name),
            position: Some(position),
            recovered,
        }
    }

    fn subscribe_position(payload: &PayloadIn<'_>) -> Option<Position> {
        match payload {
            PayloadIn::SelfSubscribe { position, .. } => position.clone(),
            other => panic!("not a SELF_SUBSCRIBE: {other:?}"),
        }
    }

    #[test]
    fn the_first_subscription_has_no_position_and_takes_the_results() {
        let mut resume = Resume::default();
        assert_eq!(subscribe_position(&resume.subscribe("audit_h")), None);
        assert_eq!(
            resume.observe(&result("audit_h", at("e", 4), None)),
            Observed::Pass
        );
        assert_eq!(resume.position("audit_h"), Some(&at("e", 4)));
        let again = resume.subscriptions();
        assert_eq!(again.len(), 1);
        assert_eq!(subscribe_position(&again[0]), Some(at("e", 4)));
    }

    #[test]
    fn broadcasts_move_the_position_of_their_service_only() {
        let mut resume = Resume::default();
        resume.subscribe("audit_h");
        resume.observe(&result("audit_h", at("e", 0), None));
        resume.observe(&broadcast("audit_h", Some(at("e", 1))));
        resume.observe(&broadcast("audit_h", Some(at("e", 2))));
        // Another service's, and a broadcast without history, move nothing.
        resume.observe(&broadcast("other", Some(at("x", 9))));
        resume.observe(&broadcast("audit_h", None));
        assert_eq!(resume.position("audit_h"), Some(&at("e", 2)));
        assert_eq!(resume.position("other"), None);
    }

    #[test]
    fn a_recovered_resubscription_keeps_the_position_for_the_replay() {
        let mut resume = Resume::default();
        resume.subscribe("audit_h");
        resume.observe(&broadcast("audit_h", Some(at("e", 2))));
        // The result gives the history's end; the replay of 3..=5 follows.
        let found = resume.observe(&result("audit_h", at("e", 5), Some(true)));
        assert_eq!(
            found,
            Observed::Resubscribed(Resubscribed {
                service: "audit_h".into(),
                recovered: true
            })
        );
        assert_eq!(resume.position("audit_h"), Some(&at("e", 2)));
        resume.observe(&broadcast("audit_h", Some(at("e", 3))));
        assert_eq!(resume.position("audit_h"), Some(&at("e", 3)));
    }

    #[test]
    fn a_lost_history_moves_to_the_results_position() {
        let mut resume = Resume::default();
        resume.subscribe("audit_h");
        resume.observe(&broadcast("audit_h", Some(at("old", 7))));
        let found = resume.observe(&result("audit_h", at("new", 2), Some(false)));
        assert_eq!(
            found,
            Observed::Resubscribed(Resubscribed {
                service: "audit_h".into(),
                recovered: false
            })
        );
        assert_eq!(resume.position("audit_h"), Some(&at("new", 2)));
    }

    #[tokio::test]
    async fn a_resubscription_without_a_position_recovers_nothing() {
        let mut resume = Resume::default();
        resume.subscribe("telemetry_h");
        // A service without history: no position, ever.
        resume.observe(&PayloadOut::SelfSubscribeResult {
            successful: true,
            service: service("telemetry_h"),
            position: None,
            recovered: None,
        });
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let sender = Sender {
            tx,
            window: std::sync::Arc::new(crate::Window {
                sent: 0.into(),
                answered: tokio::sync::watch::Sender::new(0),
            }),
        };
        resume.resubscribe(&sender).await.expect("sent");
        let sent = rx.recv().await.expect("a frame");
        assert_eq!(
            sent.into_text().expect("text").as_str(),
            r#"{"type":"SELF_SUBSCRIBE","service":"telemetry_h"}"#
        );
        let result = PayloadOut::SelfSubscribeResult {
            successful: true,
            service: service("telemetry_h"),
            position: None,
            recovered: None,
        };
        assert_eq!(
            resume.observe(&result),
            Observed::Resubscribed(Resubscribed {
                service: "telemetry_h".into(),
                recovered: false
            })
        );
        // Said once: a later result is not a resubscription's.
        assert_eq!(resume.observe(&result), Observed::Pass);
    }

    #[test]
    fn an_identify_of_its_own_gives_the_last_hellos_secret() {
        let identity = Identity {
            name: "host1".into(),
            tags: vec!["agent".into()],
            token: None,
            presence: false,
            take_over: true,
        };
        let resume_of = |payload: PayloadIn<'_>| match payload {
            PayloadIn::Identify { resume, .. } => resume.map(|r| r.into_owned()),
            other => panic!("not an IDENTIFY: {other:?}"),
        };
        let mut resume = Resume::default();
        assert_eq!(resume_of(resume.identify(&identity)), None);
        for secret in ["s1", "s2"] {
            resume.hello(&PayloadOut::Hello {
                uuid: Uuid::nil(),
                version: "0.2.0".into(),
                fs_key: String::new(),
                resume: Some(secret.into()),
            });
            assert_eq!(resume_of(resume.identify(&identity)), Some(secret.into()));
        }
    }

    #[test]
    fn still_subscribed_keeps_what_was_seen() {
        let mut resume = Resume::default();
        resume.subscribe("audit_h");
        resume.observe(&broadcast("audit_h", Some(at("e", 3))));
        let still = PayloadOut::SelfSubscribeResult {
            successful: false,
            service: service("audit_h"),
            position: Some(at("e", 9)),
            recovered: None,
        };
        assert_eq!(resume.observe(&still), Observed::Pass);
        assert_eq!(resume.position("audit_h"), Some(&at("e", 3)));
    }

    #[test]
    fn results_of_services_not_subscribed_here_are_ignored() {
        let mut resume = Resume::default();
        assert_eq!(
            resume.observe(&result("x", at("e", 1), Some(false))),
            Observed::Pass
        );
        assert!(resume.subscriptions().is_empty());
        resume.subscribe("x");
        assert!(resume.subscribed("x"));
        resume.unsubscribe("x");
        assert!(!resume.subscribed("x"));
        assert!(resume.subscriptions().is_empty());
    }

    #[test]
    fn restarts_and_network_faults_are_retried_refusals_are_not() {
        let closed = |code| ClientError::Closed {
            code,
            reason: String::new(),
        };
        for code in [1001, 1006, 1011, 1012, 4009] {
            assert!(retryable(&closed(code)), "{code}");
        }
        for code in [1008, 4005, 4010, 4013, 4015] {
            assert!(!retryable(&closed(code)), "{code}");
        }
        assert!(retryable(&ClientError::Broken("reset".into())));
        assert!(retryable(&ClientError::Connect {
            url: "ws://x".into(),
            reason: "refused".into()
        }));
    }

    /// A live broadcast after a hole (the owner's replica was cut off from
    /// the others): set aside, the history asked again from the last
    /// position seen, the live ones meanwhile dropped, and the replay
    /// taken in order; one already seen is dropped.
    #[test]
    fn a_hole_in_the_offsets_asks_for_the_history_again() {
        let mut resume = Resume::default();
        resume.subscribe("audit_h");
        resume.observe(&result("audit_h", at("e", 0), None));
        assert_eq!(
            resume.observe(&broadcast("audit_h", Some(at("e", 1)))),
            Observed::Pass
        );
        assert_eq!(
            resume.observe(&broadcast("audit_h", Some(at("e", 1)))),
            Observed::Drop
        );
        let Observed::Hole(refill) = resume.observe(&broadcast("audit_h", Some(at("e", 4)))) else {
            panic!("a hole after 1");
        };
        let [unsubscribe, subscribe] = refill.payloads();
        assert!(
            matches!(&unsubscribe, PayloadIn::SelfUnsubscribe { service } if service == "audit_h")
        );
        assert_eq!(subscribe_position(&subscribe), Some(at("e", 1)));
        // Live ones before the result come again in the replay.
        assert_eq!(
            resume.observe(&broadcast("audit_h", Some(at("e", 5)))),
            Observed::Drop
        );
        assert_eq!(resume.position("audit_h"), Some(&at("e", 1)));
        assert_eq!(
            resume.observe(&result("audit_h", at("e", 5), Some(true))),
            Observed::Resubscribed(Resubscribed {
                service: "audit_h".into(),
                recovered: true
            })
        );
        for offset in 2..=6 {
            assert_eq!(
                resume.observe(&broadcast("audit_h", Some(at("e", offset)))),
                Observed::Pass,
                "offset {offset}"
            );
        }
        assert_eq!(resume.position("audit_h"), Some(&at("e", 6)));
        // Another epoch (the service made again) is not a hole.
        assert_eq!(
            resume.observe(&broadcast("audit_h", Some(at("f", 9)))),
            Observed::Pass
        );
    }
}
