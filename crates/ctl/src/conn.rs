//! The connection plumbing every `ctl` command shares: which gateway and
//! token (the context's, or `--url` and `--token`), a request to a host
//! and its reply by `rid`, the gateway's directory requests, paged lists,
//! and the user's display settings.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::args::CtlArgs;
use super::error::CtlError;
use super::render::Units;
use super::{spinner, Ctl};
use concierge_client::context;
use concierge_protocol::agent::args::Page;
use concierge_protocol::agent::{envelope, outcome, Request};
use concierge_protocol::{HostKind, PayloadIn, PayloadOut, Target};

impl Ctl {
    /// Sends a directory request (CLIENT_FETCH_ALL or SERVICE_FETCH_ALL)
    /// and waits for its result.
    pub(crate) async fn gateway(&mut self, payload: PayloadIn<'_>) -> Result<PayloadOut, CtlError> {
        self.conn.sender.send(&payload).await?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.conn.receiver.next())
                .await
                .map_err(|_| {
                    CtlError::Unreachable("the gateway did not answer in time".into())
                })??;
            match next.payload {
                PayloadOut::ClientFetchAllResult { .. }
                | PayloadOut::ServiceFetchAllResult { .. } => return Ok(next.payload),
                _ => continue,
            }
        }
    }

    /// Sends a request to `host`'s agent and waits for its reply: the
    /// reply's `msg` on success, [`CtlError::Refused`] on an error reply.
    pub(crate) async fn request(
        &mut self,
        host: &str,
        request: &impl Serialize,
    ) -> Result<Value, CtlError> {
        let rid = self.send_request(host, request).await?;
        let bar = spinner(&format!("waiting for {host}"));
        let reply = self.wait_reply(host, rid).await;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        self.checked(host, reply?)
    }

    /// A reply's `msg`, or [`CtlError::Refused`] for an error reply (printed
    /// first under `--json`).
    pub(crate) fn checked(&self, host: &str, reply: Value) -> Result<Value, CtlError> {
        if self.json && reply.get("result").and_then(Value::as_str) == Some("error") {
            println!("{reply}");
        }
        outcome(reply).map_err(|failure| CtlError::Refused {
            host: host.to_owned(),
            reason: failure.reason.to_string(),
            desc: failure.desc,
        })
    }

    pub(crate) async fn send_request(
        &mut self,
        host: &str,
        request: &impl Serialize,
    ) -> Result<u64, CtlError> {
        let rid = self.next_rid;
        self.next_rid += 1;
        self.conn
            .sender
            .message(
                Target::Name {
                    name: host.to_owned(),
                },
                &envelope(request, rid),
            )
            .await?;
        Ok(rid)
    }

    /// The next MESSAGE from `host` about `rid` (a reply or an event).
    pub(crate) async fn next_from(
        &mut self,
        host: &str,
        rid: u64,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Value, CtlError> {
        loop {
            let next = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, self.conn.receiver.next())
                    .await
                    .map_err(|_| {
                        CtlError::NoHost(format!("{host} did not answer within {:?}", self.timeout))
                    })??,
                None => self.conn.receiver.next().await?,
            };
            match next.payload {
                PayloadOut::Message { origin, data, .. }
                    if origin.client.name == host && data["rid"].as_u64() == Some(rid) =>
                {
                    self.kind = HostKind::of(&origin.client.tags).unwrap_or(HostKind::Agent);
                    return Ok(data);
                }
                PayloadOut::InvalidName { name } => {
                    return Err(CtlError::NoHost(format!(
                    "{name} is not connected to the gateway (`concierge ctl clients` lists who is)"
                )))
                }
                PayloadOut::ClientLeft { client } if client.name == host => {
                    return Err(CtlError::NoHost(format!(
                        "{host} left the gateway before it answered"
                    )))
                }
                PayloadOut::ErrorProtocol { desc } => return Err(CtlError::Failed(desc)),
                _ => continue,
            }
        }
    }

    pub(crate) async fn wait_reply(&mut self, host: &str, rid: u64) -> Result<Value, CtlError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let data = self.next_from(host, rid, Some(deadline)).await?;
            if let Some(msg) = data.get("msg") {
                return Ok(msg.clone());
            }
        }
    }

    /// Every page of a paged list request: the entries under `key`, or
    /// the list a Nest host answers with (the adapter's `data`).
    pub(crate) async fn pages(
        &mut self,
        host: &str,
        request: fn(Page) -> Request,
        key: &str,
    ) -> Result<Vec<Value>, CtlError> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let page = self
                .request(
                    host,
                    &request(Page {
                        offset: Some(offset),
                    }),
                )
                .await?;
            let entries = page.get(key).unwrap_or(&page["data"]);
            all.extend(entries.as_array().cloned().unwrap_or_default());
            match page["next_offset"].as_u64() {
                Some(next) if next > offset => offset = next,
                _ => return Ok(all),
            }
        }
    }

    /// Prints a reply: JSON, or what `human` makes of it.
    pub(crate) fn show(&self, reply: &Value, human: impl FnOnce(&Value, &Units) -> String) {
        if self.json {
            println!("{reply}");
        } else {
            println!("{}", human(reply, &self.units));
        }
    }

    /// The identified user's display settings (the defaults without a
    /// user).
    pub(crate) async fn load_units(&mut self) -> Units {
        match self.gateway_settings().await {
            Some(settings) => Units::from_settings(&settings),
            None => Units::default(),
        }
    }

    pub(crate) async fn gateway_settings(&mut self) -> Option<BTreeMap<String, String>> {
        self.conn
            .sender
            .send(&PayloadIn::UserSettingsFetch)
            .await
            .ok()?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.conn.receiver.next())
                .await
                .ok()?
                .ok()?;
            match next.payload {
                PayloadOut::UserSettingsFetchResult { settings } => return Some(settings),
                // No user (no token): the defaults.
                PayloadOut::Bad { .. }
                | PayloadOut::ErrorProtocol { .. }
                | PayloadOut::ErrorUnsupported => return None,
                _ => continue,
            }
        }
    }
}

/// The gateway's WebSocket URL and the token to identify with: `--url`,
/// `--token` (or their variables), else the context's (see
/// [`concierge_client::context`]).
pub(crate) fn gateway(args: &CtlArgs) -> Result<(String, Option<String>), CtlError> {
    let resolved = context::resolve(
        args.context.as_deref(),
        args.url.as_deref(),
        args.token.clone(),
    )
    .map_err(|e| CtlError::Usage(e.to_string()))?;
    Ok((resolved.gateway.ws(), resolved.token))
}

/// A gateway's reply body read into its protocol type: a reply of another
/// shape is a failure naming `what`, never a panic.
pub(crate) fn decode<T: DeserializeOwned>(what: &str, reply: Value) -> Result<T, CtlError> {
    serde_json::from_value(reply)
        .map_err(|e| CtlError::Failed(format!("the gateway's {what} is of no known shape: {e}")))
}
