//! The commands that follow a host's service (`audit --follow`, `top`)
//! outlive their connection: when it drops (a replica restarting, 1012 or
//! 1001, a network fault) `ctl` connects again with backoff, takes its name
//! back (its token, or the HELLO's `resume` secret), and subscribes again
//! from the last position it saw, so that what was published meanwhile is
//! replayed once (`docs/PROTOCOL.md` §17). When the history of a service
//! whose every message counts (the audit, not telemetry snapshots) could
//! not be recovered, or it keeps none (a cluster's), it says so on standard
//! error, once, and carries on.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use concierge_client::resume::{retryable, Observed, Resume};
use concierge_client::{ClientError, Connection, Identity};
use concierge_protocol::PayloadOut;
use tokio::time::Instant;

use super::commands::published;
use super::error::CtlError;
use super::Ctl;

/// How long `ctl` keeps trying to reconnect after its connection dropped.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// How long after a subscription is refused (INVALID_SERVICE: the host has
/// not yet created it again after the same outage) it is asked again.
const ASK_AGAIN: Duration = Duration::from_millis(250);

/// Where `ctl` connects, as whom, and what it needs to resume.
pub(crate) struct Link {
    url: String,
    identity: Identity,
    resume: Resume,
    /// The followed services whose missed messages are worth a word.
    counted: BTreeSet<String>,
    /// Until when a refused subscription is asked again: set by a
    /// reconnection, for `--timeout`.
    settling: Option<Instant>,
}

impl Link {
    pub(crate) fn new(url: String, identity: Identity) -> Link {
        Link {
            url,
            identity,
            resume: Resume::default(),
            counted: BTreeSet::new(),
            settling: None,
        }
    }

    /// The first connection.
    pub(crate) async fn connect(&mut self) -> Result<Connection, ClientError> {
        self.resume.connect(&self.url, &self.identity).await
    }
}

impl Ctl {
    /// Subscribes to `service` and waits for the result, kept to resume
    /// from: the live messages come after it. `counted`: a message missed
    /// after a reconnection is worth a word on standard error.
    pub(crate) async fn follow(&mut self, service: &str, counted: bool) -> Result<(), CtlError> {
        if counted {
            self.link.counted.insert(service.to_owned());
        }
        self.subscribe(service).await?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.conn.receiver.next())
                .await
                .map_err(|_| {
                    CtlError::Unreachable("the gateway did not answer in time".into())
                })??;
            if !self.screen(&next.payload).await? {
                continue;
            }
            match next.payload {
                PayloadOut::SelfSubscribeResult { service: s, .. } if s.name == service => {
                    return Ok(())
                }
                PayloadOut::InvalidService { service } => {
                    return Err(CtlError::Unreachable(format!(
                        "no service {service}: is the agent connected?"
                    )))
                }
                _ => continue,
            }
        }
    }

    /// Sends a SELF_SUBSCRIBE to `service`, from the last position seen
    /// of it: its result comes through [`Ctl::next_followed`].
    pub(crate) async fn subscribe(&mut self, service: &str) -> Result<(), CtlError> {
        let subscribe = self.link.resume.subscribe(service);
        self.conn.sender.send(&subscribe).await?;
        Ok(())
    }

    /// Asks `host` for `request` while following its `service`: the
    /// reply's `msg`, and the data of the service's messages that came
    /// before it (which the reply may or may not include: the caller
    /// shows those it does not). They are not dropped, as a plain request
    /// would, so that the position moves past them and nothing published
    /// meanwhile is lost or, after a reconnection, shown twice.
    pub(crate) async fn request_following(
        &mut self,
        host: &str,
        request: &impl Serialize,
        service: &str,
    ) -> Result<(Value, Vec<Value>), CtlError> {
        let rid = self.send_request(host, request).await?;
        let deadline = Instant::now() + self.timeout;
        let mut early = Vec::new();
        loop {
            let next = tokio::time::timeout_at(deadline, self.conn.receiver.next())
                .await
                .map_err(|_| {
                    CtlError::Unreachable(format!(
                        "{host} did not answer within {:?}",
                        self.timeout
                    ))
                })??;
            if !self.screen(&next.payload).await? {
                continue;
            }
            match next.payload {
                PayloadOut::Message { origin, data, .. } if published(&origin, service, host) => {
                    early.push(data)
                }
                PayloadOut::Message { origin, data, .. }
                    if origin.client.name == host
                        && data["rid"].as_u64() == Some(rid)
                        && data.get("msg").is_some() =>
                {
                    return Ok((self.checked(host, data["msg"].clone())?, early));
                }
                PayloadOut::InvalidName { name } => {
                    return Err(CtlError::Unreachable(format!(
                        "{name} is not connected to the gateway"
                    )))
                }
                PayloadOut::ErrorProtocol { desc } => return Err(CtlError::Failed(desc)),
                _ => continue,
            }
        }
    }

    /// The next payload while following: after a dropped connection,
    /// reconnects and resubscribes first. A history that could not be
    /// recovered is said on standard error; a subscription refused just
    /// after a reconnection (the host not back yet) is asked again for
    /// `--timeout` before the refusal is returned.
    pub(crate) async fn next_followed(&mut self) -> Result<PayloadOut, CtlError> {
        loop {
            let payload = match self.conn.receiver.next().await {
                Ok(next) => next.payload,
                Err(e) if retryable(&e) => {
                    let link = &mut self.link;
                    self.conn = link
                        .resume
                        .reconnect(&link.url, &link.identity, RECONNECT_FOR)
                        .await?;
                    link.settling = Some(Instant::now() + self.timeout);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if !self.screen(&payload).await? {
                continue;
            }
            if let PayloadOut::InvalidService { service } = &payload {
                let settling = self.link.settling.is_some_and(|s| Instant::now() < s);
                if settling && self.link.resume.subscribed(service) {
                    tokio::time::sleep(ASK_AGAIN).await;
                    let again = self.link.resume.subscribe(service);
                    self.conn.sender.send(&again).await?;
                    continue;
                }
            }
            return Ok(payload);
        }
    }

    /// Whether to handle `payload`: not a broadcast already shown, nor one
    /// after a hole in its service's offsets, for which the history is
    /// asked again (its replay brings the missing ones, then this one). A
    /// history that could not be recovered is said on standard error.
    async fn screen(&mut self, payload: &PayloadOut) -> Result<bool, CtlError> {
        match self.link.resume.observe(payload) {
            Observed::Pass => Ok(true),
            Observed::Drop => Ok(false),
            Observed::Hole(refill) => {
                for again in &refill.payloads() {
                    self.conn.sender.send(again).await?;
                }
                Ok(false)
            }
            Observed::Resubscribed(found) => {
                if !found.recovered && self.link.counted.contains(&found.service) {
                    eprintln!(
                        "concierge ctl: {}: entries may be missing; showing from now",
                        found.service
                    );
                }
                Ok(true)
            }
        }
    }
}
