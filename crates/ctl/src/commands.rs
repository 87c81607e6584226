//! The `ctl` commands that are more than one request and a table: the
//! directory, sending raw MESSAGEs, processes and their output, `ps`, the
//! audit trail, the VPN and `top`, with how each renders its replies.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use super::error::CtlError;
use super::interrupt::Interrupts;
use super::render::{table, text};
use super::{replies, top, Ctl, VpnCommand};
use concierge_protocol::agent::args::{
    Audit, Execute, GetVpnConf, NoArgs, Pid, ProcOutput, Telemetry, ViewRunning, VpnRevoke,
};
use concierge_protocol::agent::{GatewayRequest, Request};
use concierge_protocol::{HostKind, HostService, Origin, PayloadIn, PayloadOut, Target};

/// `exec --follow`: what Ctrl-C does to the process (see `interrupt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    /// Asks the agent to stop it.
    Stop,
    /// Leaves it running.
    Detach,
}

/// How often `top` asks a host that does not publish its telemetry (as
/// often as an agent publishes by default).
const ASK_EVERY: Duration = Duration::from_secs(2);

impl Ctl {
    pub(crate) async fn clients(&mut self) -> Result<ExitCode, CtlError> {
        let PayloadOut::ClientFetchAllResult { clients } =
            self.gateway(PayloadIn::ClientFetchAll).await?
        else {
            return Err(CtlError::Failed(
                "unexpected answer to CLIENT_FETCH_ALL".into(),
            ));
        };
        let value = serde_json::to_value(&clients).unwrap_or_default();
        self.show(&value, |_, _| {
            let mut t = table(["NAME", "USER", "ROLES", "TAGS", "UUID"]);
            for c in &clients {
                t.add_row([
                    c.name.clone(),
                    c.user.clone().unwrap_or_else(|| "-".into()),
                    c.roles.join(","),
                    c.tags.join(","),
                    c.uuid.to_string(),
                ]);
            }
            t.to_string()
        });
        Ok(ExitCode::SUCCESS)
    }

    pub(crate) async fn services(&mut self) -> Result<ExitCode, CtlError> {
        let PayloadOut::ServiceFetchAllResult { services } =
            self.gateway(PayloadIn::ServiceFetchAll).await?
        else {
            return Err(CtlError::Failed(
                "unexpected answer to SERVICE_FETCH_ALL".into(),
            ));
        };
        let value = serde_json::to_value(&services).unwrap_or_default();
        self.show(&value, |_, _| {
            let mut t = table(["SERVICE", "OWNER", "SUBSCRIBERS"]);
            for s in &services {
                t.add_row([
                    s.name.clone(),
                    s.owner_uuid.to_string(),
                    s.subscribers.len().to_string(),
                ]);
            }
            t.to_string()
        });
        Ok(ExitCode::SUCCESS)
    }

    pub(crate) async fn send(&mut self, target: &str, data: &str) -> Result<ExitCode, CtlError> {
        let data: Value = serde_json::from_str(data)
            .map_err(|e| CtlError::Usage(format!("the message is not JSON: {e}")))?;
        let target = parse_target(target);
        self.conn.sender.message(target.clone(), &data).await?;
        // The gateway answers only a target it cannot find; wait briefly.
        let wait = tokio::time::sleep(Duration::from_millis(300));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                next = self.conn.receiver.next() => match next?.payload {
                    PayloadOut::InvalidName { name } => return Err(CtlError::Failed(format!("no client named {name:?}"))),
                    PayloadOut::InvalidUuid { uuid } => return Err(CtlError::Failed(format!("no client {uuid}"))),
                    PayloadOut::InvalidService { service } => return Err(CtlError::Failed(format!("no service {service:?}"))),
                    PayloadOut::ErrorProtocol { desc } => return Err(CtlError::Failed(desc)),
                    _ => continue,
                }
            }
        }
        if !self.json {
            println!("sent");
        }
        Ok(ExitCode::SUCCESS)
    }

    pub(crate) async fn exec(
        &mut self,
        host: &str,
        follow: Option<Follow>,
        cwd: Option<String>,
        cmd: Vec<String>,
    ) -> Result<ExitCode, CtlError> {
        let request = Request::Execute(Execute {
            cmd: Some(cmd),
            cwd,
            follow: follow.is_some(),
            ..Execute::default()
        });
        // Caught before the process starts: Ctrl-C stops it from then on.
        let interrupts = match follow {
            Some(_) => Some(Interrupts::catch()?),
            None => None,
        };
        let rid = self.send_request(host, &request).await?;
        let reply = self.wait_reply(host, rid).await?;
        let reply = self.checked(host, reply)?;
        let (Some(follow), Some(interrupts)) = (follow, interrupts) else {
            self.show(&reply, |r, _| text(&r["proc_id"]));
            return Ok(ExitCode::SUCCESS);
        };
        if self.kind != HostKind::Agent {
            // Only an agent streams a process's output: another host's
            // reply is all there is.
            self.show(&reply, |r, _| text(&r["proc_id"]));
            if !self.json {
                eprintln!(
                    "concierge ctl: {host} is a {} host, which does not stream a process's output",
                    self.kind.tag()
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        if self.json {
            println!("{reply}");
        }
        let pid = reply["proc_id"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| CtlError::Failed(format!("{host} answered without a proc_id")))?;
        self.follow_started(host, rid, pid, follow == Follow::Detach, interrupts)
            .await
    }

    pub(crate) async fn output(
        &mut self,
        host: &str,
        proc_id: u32,
        follow: bool,
    ) -> Result<ExitCode, CtlError> {
        if follow {
            let rid = self
                .send_request(
                    host,
                    &Request::ProcOutput(ProcOutput {
                        proc_id: Pid(proc_id),
                        offset: None,
                        follow: true,
                    }),
                )
                .await?;
            let reply = self.wait_reply(host, rid).await?;
            self.checked(host, reply)?;
            return self.stream(host, rid).await;
        }
        let mut offset = 0;
        loop {
            let page = self
                .request(
                    host,
                    &Request::ProcOutput(ProcOutput {
                        proc_id: Pid(proc_id),
                        offset: Some(offset),
                        follow: false,
                    }),
                )
                .await?;
            if self.json {
                println!("{page}");
            } else {
                for chunk in page["chunks"].as_array().into_iter().flatten() {
                    write_chunk(chunk, chunk["stream"].as_str() == Some("stderr"));
                }
            }
            let next = page["next_offset"].as_u64().unwrap_or(offset);
            if next == offset || page["chunks"].as_array().is_none_or(|c| c.is_empty()) {
                return Ok(ExitCode::SUCCESS);
            }
            offset = next;
        }
    }

    /// Prints a followed process's events until its exit; exits as it did.
    pub(crate) async fn stream(&mut self, host: &str, rid: u64) -> Result<ExitCode, CtlError> {
        loop {
            let event = self.next_from(host, rid, None).await?;
            if self.json {
                println!("{event}");
            }
            match event["event"].as_str() {
                Some("stdout") if !self.json => write_chunk(&event, false),
                Some("stderr") if !self.json => write_chunk(&event, true),
                Some("exit") => {
                    if let Some(code) = event["code"].as_i64() {
                        return Ok(ExitCode::from(code.clamp(0, 255) as u8));
                    }
                    let signal = event["signal"].as_str().unwrap_or("an unknown signal");
                    if !self.json {
                        eprintln!("concierge ctl: the process was killed by {signal}");
                    }
                    let number =
                        concierge_protocol::agent::signals::parse(signal).map_or(1, |n| n as u8);
                    return Ok(ExitCode::from(128u8.saturating_add(number)));
                }
                _ => {}
            }
        }
    }

    pub(crate) async fn ps(&mut self, host: &str, all: bool) -> Result<ExitCode, CtlError> {
        let units = self.units.clone();
        if all {
            let procs = self
                .pages(host, Request::ObtainAllProcessInfo, "processes")
                .await?;
            if self.json {
                println!("{}", Value::from(procs));
                return Ok(ExitCode::SUCCESS);
            }
            println!("{}", replies::processes(&procs, &units));
            return Ok(ExitCode::SUCCESS);
        }
        let running = self
            .request(
                host,
                &Request::ViewRunning(ViewRunning {
                    verb: Some(Value::from(1)),
                }),
            )
            .await?;
        if self.json {
            println!("{running}");
            return Ok(ExitCode::SUCCESS);
        }
        println!("{}", replies::running(&running, self.kind, host, &units));
        Ok(ExitCode::SUCCESS)
    }

    pub(crate) async fn audit(
        &mut self,
        host: &str,
        limit: u64,
        follow: bool,
    ) -> Result<ExitCode, CtlError> {
        let service = HostService::Audit.of(host);
        let request = Request::Audit(Audit { limit: Some(limit) });
        if !follow {
            let reply = self.request(host, &request).await?;
            for entry in reply["entries"].as_array().into_iter().flatten() {
                self.audit_line(entry);
            }
            return Ok(ExitCode::SUCCESS);
        }
        self.follow(&service, true).await?;
        let (reply, early) = self.request_following(host, &request, &service).await?;
        let entries = reply["entries"].as_array().cloned().unwrap_or_default();
        for entry in &entries {
            self.audit_line(entry);
        }
        // Published while the log was read: shown unless the log had it.
        for data in early {
            if !entries.contains(&data["entry"]) {
                self.audit_line(&data["entry"]);
            }
        }
        loop {
            match self.next_followed().await? {
                PayloadOut::Message { origin, data, .. } if published(&origin, &service, host) => {
                    self.audit_line(&data["entry"]);
                }
                PayloadOut::InvalidService { service } => {
                    return Err(CtlError::NoHost(format!(
                        "no service {service}: is the agent connected?"
                    )))
                }
                _ => {}
            }
        }
    }

    pub(crate) async fn vpn(&mut self, command: VpnCommand) -> Result<ExitCode, CtlError> {
        let gateway = concierge_protocol::GATEWAY_NAME;
        match command {
            VpnCommand::Conf {
                name,
                public_key,
                qr,
            } => {
                let request = GatewayRequest::GetVpnConf(GetVpnConf {
                    name,
                    public_key,
                    conf_type: Some("wireguard".into()),
                    tun_mode: Some("udp".into()),
                });
                let reply = self.request(gateway, &request).await?;
                let conf = reply["conf_data"].as_str().unwrap_or_default();
                if self.json {
                    println!("{reply}");
                } else if qr {
                    let code = qrcode::QrCode::new(conf.as_bytes())
                        .map_err(|e| CtlError::Failed(format!("cannot make a QR code: {e}")))?;
                    let image = code
                        .render::<qrcode::render::unicode::Dense1x2>()
                        .dark_color(qrcode::render::unicode::Dense1x2::Light)
                        .light_color(qrcode::render::unicode::Dense1x2::Dark)
                        .build();
                    println!("{image}");
                } else {
                    print!("{conf}");
                }
            }
            VpnCommand::Peers => {
                let reply = self
                    .request(gateway, &GatewayRequest::VpnPeers(NoArgs {}))
                    .await?;
                self.show(&reply, |r, units| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let mut out = match (r["interface"].as_str(), r["problem"].as_str()) {
                        (_, Some(problem)) => format!("{problem}\n"),
                        (Some(interface), None) => format!("interface {interface}\n"),
                        _ => String::new(),
                    };
                    let mut t = table([
                        "NAME",
                        "IPV4",
                        "IPV6",
                        "STATE",
                        "HANDSHAKE",
                        "RX",
                        "TX",
                        "ENDPOINT",
                    ]);
                    for p in r["peers"].as_array().into_iter().flatten() {
                        let handshake = match p["latest_handshake"].as_u64() {
                            Some(0) | None => "never".to_owned(),
                            Some(t) => format!("{} s ago", now.saturating_sub(t)),
                        };
                        let state = match (p["valid"].as_bool(), p["active"].as_bool()) {
                            (Some(false), _) => "token invalid",
                            (_, Some(true)) => "active",
                            _ => "not on the interface",
                        };
                        t.add_row([
                            text(&p["name"]),
                            text(&p["ipv4"]),
                            text(&p["ipv6"]),
                            state.to_owned(),
                            handshake,
                            units.size(p["rx_bytes"].as_u64().unwrap_or(0)),
                            units.size(p["tx_bytes"].as_u64().unwrap_or(0)),
                            text(&p["endpoint"]),
                        ]);
                    }
                    out.push_str(&t.to_string());
                    out
                });
            }
            VpnCommand::Revoke { name } => {
                let reply = self
                    .request(
                        gateway,
                        &GatewayRequest::VpnRevoke(VpnRevoke { name: name.clone() }),
                    )
                    .await?;
                self.show(&reply, |_, _| {
                    format!("revoked {name}: its peer is removed and its addresses are free")
                });
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    pub(crate) fn audit_line(&self, entry: &Value) {
        if self.json {
            println!("{entry}");
            return;
        }
        let outcome = match entry["result"].as_str() {
            Some("success") => "ok".to_owned(),
            _ => format!("{}: {}", text(&entry["reason"]), text(&entry["desc"])),
        };
        println!(
            "{} {} ({}) {} {} -> {}",
            text(&entry["time"]),
            text(&entry["user"]),
            text(&entry["client"]),
            text(&entry["req"]),
            entry["args"],
            outcome
        );
    }

    pub(crate) async fn top(&mut self, host: &str, once: bool) -> Result<ExitCode, CtlError> {
        let units = self.units.clone();
        let first = self
            .request(host, &Request::Telemetry(Telemetry::default()))
            .await?;
        let kind = self.kind;
        let render = |data: &Value| top::frame(host, &data["tele_data"], &units, kind);
        if once {
            if self.json {
                println!("{first}");
            } else {
                println!("{}", render(&first));
            }
            return Ok(ExitCode::SUCCESS);
        }
        let service = HostService::Telemetry.of(host);
        // Only an agent publishes its telemetry: another host is asked.
        let publishes = kind == HostKind::Agent;
        if publishes {
            // A snapshot replaces the last: none missed is worth a word.
            self.follow(&service, false).await?;
        }
        let interactive = std::io::stdout().is_terminal() && !self.json;
        let draw = |data: &Value, json: bool| {
            let mut out = std::io::stdout().lock();
            if json {
                let _ = writeln!(out, "{data}");
            } else if interactive {
                let _ = write!(out, "\x1b[H\x1b[2J{}\n(Ctrl-C to quit)\n", render(data));
            } else {
                let _ = writeln!(out, "{}\n", render(data));
            }
            let _ = out.flush();
        };
        draw(&first, self.json);
        if !publishes {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(ASK_EVERY) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
                }
                let next = self
                    .request(host, &Request::Telemetry(Telemetry::default()))
                    .await?;
                draw(&next, self.json);
            }
        }
        loop {
            let next = tokio::select! {
                next = self.next_followed() => next?,
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            };
            match next {
                PayloadOut::Message { origin, data, .. } if published(&origin, &service, host) => {
                    draw(&data, self.json)
                }
                PayloadOut::InvalidService { service } => {
                    return Err(CtlError::NoHost(format!(
                        "no service {service}: is the agent connected?"
                    )))
                }
                PayloadOut::ServiceDeleteResult { service: s } if s.name == service => {
                    return Err(CtlError::NoHost(format!("{host} disconnected")))
                }
                _ => {}
            }
        }
    }
}

/// A target as typed: `uuid:U`, `service:S`, `all`, or a client name.
pub(crate) fn parse_target(target: &str) -> Target {
    if let Some(uuid) = target.strip_prefix("uuid:") {
        Target::Uuid {
            uuid: uuid.to_owned(),
        }
    } else if let Some(service) = target.strip_prefix("service:") {
        Target::Service {
            service: service.to_owned(),
        }
    } else if target == "all" {
        Target::All
    } else {
        Target::Name {
            name: target.to_owned(),
        }
    }
}

/// Whether a MESSAGE was published on `service` by host `host` itself:
/// what is shown is attributed to the verified publisher in `origin`, never
/// to fields inside `data`.
pub(crate) fn published(origin: &Origin, service: &str, host: &str) -> bool {
    origin.service.as_ref().is_some_and(|s| s.name == service) && origin.client.is_host(host)
}

/// Writes an output event's bytes to standard output or error.
pub(crate) fn write_chunk(event: &Value, stderr: bool) {
    let bytes = match (event["data"].as_str(), event["data_b64"].as_str()) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(b64)) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_default()
        }
        _ => return,
    };
    if stderr {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&bytes);
        let _ = err.flush();
    } else {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&bytes);
        let _ = out.flush();
    }
}
