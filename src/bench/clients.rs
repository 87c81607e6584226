//! Benchmark clients: where they connect from and to, the concierge
//! handshake, and the cheap reading of the frames a run is made of.
//!
//! Client `i` binds its socket to source address `i % k` of the spread
//! (127.0.0.2–127.0.0.9 by default when every gateway is on loopback), so a
//! run of tens of thousands of connections does not run out of ephemeral
//! ports, and connects to gateway URL `i % urls` unless a scenario places it
//! explicitly. Every socket uses a 4 KiB read buffer ([`ws_config`]): with
//! tungstenite's default of 128 KiB the load generator itself would need
//! gigabytes for an idle-connection run.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

use super::BenchError;
use crate::protocol::{PayloadIn, PayloadOut, Sequenced, Target, PROTOCOL_VERSION};

/// A client's WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// The socket settings of every benchmark client, and of the baseline
/// server: a 4 KiB read buffer instead of tungstenite's 128 KiB.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// How long a setup step (a connect, a reply) may take before the client
/// counts as failed.
pub const SETUP_PATIENCE: Duration = Duration::from_secs(30);

/// One gateway, resolved once.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    pub addr: SocketAddr,
}

/// Splits `ws://host:port/path` (or `http://…`) into `host:port` and the path.
pub fn split_url(url: &str) -> Result<(String, String), BenchError> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            BenchError::Usage(format!(
                "{url:?}: only ws:// (and http:// for metrics) URLs are supported"
            ))
        })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(BenchError::Usage(format!("{url:?} has no host")));
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'))
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_owned()))
}

impl Endpoint {
    pub async fn resolve(url: &str) -> Result<Endpoint, BenchError> {
        if !url.starts_with("ws://") {
            return Err(BenchError::Usage(format!(
                "{url:?}: only ws:// URLs are supported"
            )));
        }
        let (authority, _) = split_url(url)?;
        let addr = tokio::net::lookup_host(authority.as_str())
            .await
            .map_err(|e| BenchError::Usage(format!("cannot resolve {authority}: {e}")))?
            .next()
            .ok_or_else(|| BenchError::Usage(format!("{authority} resolves to nothing")))?;
        Ok(Endpoint {
            url: url.to_owned(),
            addr,
        })
    }
}

/// The gateways of a run and the local addresses its clients connect from.
#[derive(Debug, Clone)]
pub struct Spread {
    pub endpoints: Vec<Endpoint>,
    pub sources: Vec<IpAddr>,
}

impl Spread {
    /// Resolves `urls`; `sources` is `auto`, `none` or a comma-separated
    /// list of local addresses.
    pub async fn new(urls: &[String], sources: &str) -> Result<Spread, BenchError> {
        if urls.is_empty() {
            return Err(BenchError::Usage("at least one --url is needed".into()));
        }
        let mut endpoints = Vec::with_capacity(urls.len());
        for url in urls {
            endpoints.push(Endpoint::resolve(url).await?);
        }
        let sources = match sources {
            "none" => Vec::new(),
            "auto" => {
                let all_loopback_v4 = endpoints
                    .iter()
                    .all(|e| matches!(e.addr.ip(), IpAddr::V4(ip) if ip.is_loopback()));
                if all_loopback_v4 {
                    (2..=9)
                        .map(|d| IpAddr::V4(Ipv4Addr::new(127, 0, 0, d)))
                        .collect()
                } else {
                    Vec::new()
                }
            }
            list => list
                .split(',')
                .map(|s| {
                    s.trim()
                        .parse()
                        .map_err(|e| BenchError::Usage(format!("source address {s:?}: {e}")))
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Spread { endpoints, sources })
    }

    /// The gateway client `i` talks to when the scenario does not choose.
    pub fn endpoint_for(&self, i: usize) -> usize {
        i % self.endpoints.len()
    }

    /// Opens client `i`'s WebSocket to gateway `endpoint`.
    pub async fn connect(&self, i: usize, endpoint: usize) -> Result<Ws, BenchError> {
        let target = &self.endpoints[endpoint % self.endpoints.len()];
        let socket = if target.addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if !self.sources.is_empty() {
            let source = self.sources[i % self.sources.len()];
            socket
                .bind(SocketAddr::new(source, 0))
                .map_err(|e| BenchError::Connect(format!("bind {source}: {e}")))?;
        }
        let stream = tokio::time::timeout(SETUP_PATIENCE, socket.connect(target.addr))
            .await
            .map_err(|_| BenchError::Connect(format!("connect to {} timed out", target.addr)))?
            .map_err(|e| BenchError::Connect(format!("connect to {}: {e}", target.addr)))?;
        stream.set_nodelay(true)?;
        let handshake = tokio_tungstenite::client_async_with_config(
            target.url.as_str(),
            stream,
            Some(ws_config()),
        );
        let (ws, _) = tokio::time::timeout(SETUP_PATIENCE, handshake)
            .await
            .map_err(|_| BenchError::Connect("WebSocket handshake timed out".into()))??;
        Ok(ws)
    }
}

/// Serializes a payload for the wire.
pub fn encode(payload: &PayloadIn<'_>) -> Result<Utf8Bytes, BenchError> {
    Ok(serde_json::to_string(payload)?.into())
}

/// An identified client during setup: requests are answered in order, and
/// broadcasts that arrive meanwhile are skipped (and counted).
pub struct Client {
    pub ws: Ws,
    pub name: String,
    pub uuid: Uuid,
    /// The `seq` the gateway gives this client's next payload.
    pub next_seq: u64,
    /// Frames other than the awaited replies seen during setup.
    pub skipped: u64,
}

impl Client {
    /// Sends the benchmark's IDENTIFY on `ws` and waits for HELLO.
    pub async fn identify(
        ws: Ws,
        name: &str,
        secret: &str,
        token: &str,
        presence: bool,
    ) -> Result<Client, BenchError> {
        let identify = PayloadIn::Identify {
            name: Cow::Borrowed(name),
            nickname: None,
            version: Cow::Borrowed(PROTOCOL_VERSION),
            tags: vec![Cow::Borrowed("bench")],
            secret: (!secret.is_empty()).then_some(Cow::Borrowed(secret)),
            token: (!token.is_empty()).then_some(Cow::Borrowed(token)),
            presence: (!presence).then_some(false),
            resume: None,
            take_over: None,
        };
        Ok(Client::handshake(ws, name, &identify).await?.0)
    }

    /// Sends `identify` on `ws` and waits for HELLO: the client, and the
    /// HELLO (its `resume` secret).
    pub async fn handshake(
        mut ws: Ws,
        name: &str,
        identify: &PayloadIn<'_>,
    ) -> Result<(Client, PayloadOut), BenchError> {
        ws.send(Message::Text(encode(identify)?)).await?;
        let mut client = Client {
            ws,
            name: name.to_owned(),
            uuid: Uuid::nil(),
            next_seq: 0,
            skipped: 0,
        };
        match client.next_payload().await? {
            Sequenced {
                payload: hello @ PayloadOut::Hello { .. },
                ..
            } => {
                if let PayloadOut::Hello { uuid, .. } = &hello {
                    client.uuid = *uuid;
                }
                Ok((client, hello))
            }
            other => Err(BenchError::Protocol(format!(
                "{name}: expected HELLO, got {other:?}"
            ))),
        }
    }

    /// Sends a request and returns the reply carrying its `seq`.
    pub async fn request(&mut self, payload: &PayloadIn<'_>) -> Result<PayloadOut, BenchError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.ws.send(Message::Text(encode(payload)?)).await?;
        loop {
            let reply = self.next_payload().await?;
            if reply.seq == Some(seq) {
                return Ok(reply.payload);
            }
            self.skipped += 1;
        }
    }

    /// The next text payload, parsed.
    async fn next_payload(&mut self) -> Result<Sequenced, BenchError> {
        loop {
            let next = tokio::time::timeout(SETUP_PATIENCE, self.ws.next())
                .await
                .map_err(|_| {
                    BenchError::Protocol(format!(
                        "{}: no reply within {SETUP_PATIENCE:?}",
                        self.name
                    ))
                })?;
            match next {
                None => {
                    return Err(BenchError::Protocol(format!(
                        "{}: connection ended",
                        self.name
                    )))
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text)?),
                Some(Ok(Message::Close(frame))) => {
                    let why = frame
                        .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                        .unwrap_or_else(|| "without a code".into());
                    return Err(BenchError::Protocol(format!(
                        "{}: the gateway closed the connection: {why}",
                        self.name
                    )));
                }
                Some(Ok(_)) => continue,
            }
        }
    }
}

/// Builds the MESSAGE frames a sender sends: the envelope is serialized once
/// from [`PayloadIn::Message`], and each frame only formats `data`, which is
/// `[seq, sent_ns, "padding"]`.
pub struct MessageFrames {
    prefix: String,
    pad: String,
}

impl MessageFrames {
    /// `size` is the approximate length of `data` in bytes.
    pub fn new(target: Target, size: usize) -> Result<MessageFrames, BenchError> {
        let null = RawValue::from_string("null".into())?;
        let mut prefix = serde_json::to_string(&PayloadIn::Message {
            target,
            data: &null,
        })?;
        if !prefix.ends_with("null}") {
            return Err(BenchError::Protocol(format!(
                "unexpected MESSAGE encoding {prefix}"
            )));
        }
        prefix.truncate(prefix.len() - "null}".len());
        // `[seq,ns,""]` is 6 bytes of punctuation and about 18 digits
        // (a 5-digit seq, 13-digit nanoseconds: up to 2.7 hours).
        let pad = "x".repeat(size.saturating_sub(24));
        Ok(MessageFrames { prefix, pad })
    }

    pub fn frame(&self, seq: u64, sent_ns: u64) -> Utf8Bytes {
        let mut text = String::with_capacity(self.prefix.len() + self.pad.len() + 48);
        text.push_str(&self.prefix);
        text.push('[');
        push_u64(&mut text, seq);
        text.push(',');
        push_u64(&mut text, sent_ns);
        text.push_str(",\"");
        text.push_str(&self.pad);
        text.push_str("\"]}");
        text.into()
    }
}

fn push_u64(text: &mut String, n: u64) {
    use std::fmt::Write;
    // Writing into a String cannot fail.
    let _ = write!(text, "{n}");
}

/// What a frame received during a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// A relayed benchmark MESSAGE.
    Bench { seq: u64, sent_ns: u64 },
    /// A MESSAGE whose `data` is not a benchmark's.
    ForeignMessage,
    /// The reply to request `seq`; `ok` when it is OK.
    Reply { seq: u64, ok: bool },
    /// Anything else (broadcasts, unparsable text).
    Other,
}

/// Only what a benchmark needs of a frame, in any field order.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// Classifies a received text frame. The gateway writes relayed MESSAGEs as
/// `{"type":"MESSAGE",…,"data":…}` and replies as `{"seq":n,"type":…}`;
/// frames of that shape are read without a JSON parser, anything else goes
/// through serde, so a gateway that orders fields differently still counts.
pub fn classify(text: &str) -> Incoming {
    if text.starts_with(r#"{"type":"MESSAGE","#) {
        // A kept broadcast's position comes after its data (§17.2).
        let body = text
            .strip_suffix('}')
            .map(|body| match body.rfind(r#","position":{"#) {
                Some(at) if body.ends_with('}') => &body[..at],
                _ => body,
            });
        let data = body.and_then(|body| body.rfind(r#""data":"#).map(|at| &body[at + 7..]));
        if let Some(found) = data.and_then(parse_bench_data) {
            return found;
        }
    } else if let Some(rest) = text.strip_prefix(r#"{"seq":"#) {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if let Ok(seq) = rest[..digits].parse() {
            let tail = &rest[digits..];
            if tail == r#","type":"OK"}"# {
                return Incoming::Reply { seq, ok: true };
            }
            if tail.starts_with(r#","type":""#) {
                return Incoming::Reply { seq, ok: false };
            }
        }
    } else if text.starts_with(r#"{"type":""#) && !text.contains(r#""seq":"#) {
        return Incoming::Other;
    }
    match serde_json::from_str::<Probe>(text) {
        Ok(Probe {
            kind,
            data: Some(data),
            ..
        }) if kind == "MESSAGE" => parse_bench_data(data.get()).unwrap_or(Incoming::ForeignMessage),
        Ok(Probe {
            seq: Some(seq),
            kind,
            ..
        }) => Incoming::Reply {
            seq,
            ok: kind == "OK",
        },
        _ => Incoming::Other,
    }
}

/// Reads `[seq,sent_ns,"…"]`.
fn parse_bench_data(data: &str) -> Option<Incoming> {
    let rest = data.trim_start().strip_prefix('[')?;
    let (seq, rest) = rest.split_once(',')?;
    let (sent, rest) = rest.split_once(',')?;
    if !rest.trim_end().ends_with(']') {
        return None;
    }
    Some(Incoming::Bench {
        seq: seq.trim().parse().ok()?,
        sent_ns: sent.trim().parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        let (a, p) = split_url("ws://127.0.0.1:9100/ws").expect("valid");
        assert_eq!((a.as_str(), p.as_str()), ("127.0.0.1:9100", "/ws"));
        let (a, p) = split_url("http://localhost/metrics").expect("valid");
        assert_eq!((a.as_str(), p.as_str()), ("localhost:80", "/metrics"));
        assert!(split_url("wss://x/ws").is_err());
    }

    #[test]
    fn message_frames_carry_seq_and_time_and_classify_back() {
        let frames = MessageFrames::new(
            Target::Service {
                service: "s".into(),
            },
            64,
        )
        .expect("frames");
        let frame = frames.frame(41_000, 1_234_567_890_123);
        let payload = PayloadIn::decode(&frame).expect("the gateway can decode it");
        let PayloadIn::Message { data, .. } = payload else {
            panic!("not a MESSAGE: {frame}");
        };
        assert!((60..=68).contains(&data.get().len()), "{}", data.get());
        // As relayed by the gateway (data last) and in another field order.
        let relayed = format!(
            r#"{{"type":"MESSAGE","target":{{"type":"ALL"}},"origin":{{"name":"a"}},"data":{}}}"#,
            data.get()
        );
        let reordered = format!(r#"{{"data":{},"type":"MESSAGE"}}"#, data.get());
        // A kept broadcast: its position after the data.
        let kept = format!(
            r#"{{"type":"MESSAGE","target":{{"type":"ALL"}},"origin":{{"name":"a"}},"data":{},"position":{{"epoch":"e1","offset":7}}}}"#,
            data.get()
        );
        for text in [relayed, reordered, kept] {
            assert_eq!(
                classify(&text),
                Incoming::Bench {
                    seq: 41_000,
                    sent_ns: 1_234_567_890_123
                }
            );
        }
    }

    #[test]
    fn replies_and_broadcasts_are_told_apart() {
        assert_eq!(
            classify(r#"{"seq":7,"type":"OK"}"#),
            Incoming::Reply { seq: 7, ok: true }
        );
        assert_eq!(
            classify(r#"{"seq":8,"type":"INVALID_NAME","name":"x"}"#),
            Incoming::Reply { seq: 8, ok: false }
        );
        assert_eq!(
            classify(r#"{"type":"OK","seq":9}"#),
            Incoming::Reply { seq: 9, ok: true }
        );
        assert_eq!(
            classify(r#"{"type":"CLIENT_JOINED","client":{}}"#),
            Incoming::Other
        );
        assert_eq!(
            classify(r#"{"type":"MESSAGE","data":{"hello":1}}"#),
            Incoming::ForeignMessage
        );
        assert_eq!(classify("not json"), Incoming::Other);
    }
}
