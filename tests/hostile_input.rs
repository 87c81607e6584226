//! The hostile-input suite: every decoder a client reaches, fed arbitrary
//! and almost-right input by proptest, on stable Rust and under the
//! ordinary test runner.
//!
//! The decoders that are functions (the native payloads, MESSAGE `data`'s
//! profile, Engine.IO and Socket.IO packets, the agent's request envelope)
//! are called directly: nothing may panic, every input decodes or is an
//! error, and what has an encoder round-trips. The Nest and Quix frames are
//! read inside their sessions, so those (and every other path) are fed to a
//! real gateway: each frame is followed by a probe the session always
//! answers, so a frame that hangs a session or kills its worker fails the
//! case within seconds.
//!
//! Each property runs a bounded number of cases (a few hundred to two
//! thousand) and finishes in seconds; a failure prints its shrunk input.

mod common;

use std::cell::{Cell, RefCell};

use concierge::adapters::socketio::packet::{self, Engine, Kind};
use concierge::protocol::agent::{reply, Envelope, Reason, Request, RequestName};
use concierge::protocol::data::{self, MAX_DATA_DEPTH};
use concierge::protocol::{
    ClientInfo, DecodeError, MessageOut, OriginRef, PayloadIn, PayloadKind, Sequenced,
};
use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn config(cases: u32) -> Config {
    Config {
        cases,
        // A failure is printed shrunk; no regression files in the tree.
        failure_persistence: None,
        max_shrink_time: 20_000,
        ..Config::default()
    }
}

// ---- generators ----

/// A JSON string literal with the escapes strict parsers care about: any
/// `\uXXXX` (lone surrogates included), proper pairs, and plain text.
fn string_text() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        3 => "[a-zA-Z0-9 _]{1,3}",
        1 => Just("\\n".to_owned()),
        1 => Just("\\\"".to_owned()),
        1 => Just("\\\\".to_owned()),
        1 => Just("é😀".to_owned()),
        2 => "\\\\u[0-9a-fA-F]{4}",
        2 => "\\\\u[dD][89abAB][0-9a-fA-F]{2}",
        2 => "\\\\u[dD][89abAB][0-9a-fA-F]{2}\\\\u[dD][c-fC-F][0-9a-fA-F]{2}",
    ];
    prop::collection::vec(part, 0..5).prop_map(|parts| format!("\"{}\"", parts.concat()))
}

/// Syntactically valid JSON text: numbers of any size (`1e400` among
/// them), strings with every kind of escape, and nesting around the limits
/// (64 here, serde_json's 128).
fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,4})?([eE][+-]?[0-9]{1,3})?",
        string_text(),
    ];
    let tree = leaf.prop_recursive(5, 40, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec((string_text(), inner), 0..4).prop_map(|members| {
                let members: Vec<String> =
                    members.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", members.join(", "))
            }),
        ]
    });
    let wraps = prop_oneof![3 => 0usize..3, 1 => 58usize..70, 1 => 120usize..132];
    (tree, wraps, any::<bool>()).prop_map(|(tree, n, objects)| {
        if objects {
            format!("{}{tree}{}", r#"{"k":"#.repeat(n), "}".repeat(n))
        } else {
            format!("{}{tree}{}", "[".repeat(n), "]".repeat(n))
        }
    })
}

/// An arbitrary JSON value whose numbers print and parse back exactly.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i32>().prop_map(|n| Value::from(f64::from(n) / 4.0)),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The payload types a client may send, and two it may not.
fn types() -> Vec<&'static str> {
    let mut types = PayloadKind::NAMES.to_vec();
    types.extend(["TELEPORT", "message"]);
    types
}

const FIELDS: [&str; 15] = [
    "name", "nickname", "version", "tags", "secret", "token", "presence", "setting", "value",
    "service", "uuid", "seq", "target", "data", "origin",
];

/// A payload of the right outline and wrong details: a known (or unknown)
/// `type` with fields of any shape.
fn wrong_payload() -> impl Strategy<Value = String> {
    let kind = prop_oneof![
        4 => prop::sample::select(types()).prop_map(Value::from),
        1 => json_value(),
    ];
    let field = (prop::sample::select(&FIELDS[..]), json_value());
    (kind, prop::collection::vec(field, 0..5)).prop_map(|(kind, fields)| {
        let mut object = serde_json::Map::new();
        object.insert("type".into(), kind);
        for (name, value) in fields {
            object.insert(name.into(), value);
        }
        Value::Object(object).to_string()
    })
}

fn target() -> impl Strategy<Value = Value> {
    let s = any::<String>;
    prop_oneof![
        s().prop_map(|name| json!({"type": "NAME", "name": name})),
        s().prop_map(|uuid| json!({"type": "UUID", "uuid": uuid})),
        s().prop_map(|service| json!({"type": "SERVICE", "service": service})),
        (s(), s()).prop_map(
            |(service, uuid)| json!({"type": "SERVICE_CLIENT_UUID", "service": service, "uuid": uuid})
        ),
        Just(json!({"type": "ALL"})),
    ]
}

/// A payload as a client library writes it, every field well typed.
fn valid_payload() -> impl Strategy<Value = Value> {
    let s = any::<String>;
    let optional = || proptest::option::of(any::<String>());
    prop_oneof![
        (
            s(),
            optional(),
            s(),
            prop::collection::vec(s(), 0..3),
            optional(),
            optional(),
            proptest::option::of(any::<bool>())
        )
            .prop_map(|(name, nickname, version, tags, secret, token, presence)| {
                let mut v = json!({"type": "IDENTIFY", "name": name, "version": version, "tags": tags});
                for (key, field) in [("nickname", nickname), ("secret", secret), ("token", token)] {
                    if let Some(field) = field {
                        v[key] = field.into();
                    }
                }
                if let Some(presence) = presence {
                    v["presence"] = presence.into();
                }
                v
            }),
        (target(), json_value())
            .prop_map(|(target, data)| json!({"type": "MESSAGE", "target": target, "data": data})),
        (
            prop::sample::select(&["SELF_SUBSCRIBE", "SELF_UNSUBSCRIBE", "SERVICE_DELETE", "SERVICE_FETCH"][..]),
            s()
        )
            .prop_map(|(kind, service)| json!({"type": kind, "service": service})),
        (s(), optional()).prop_map(|(service, nickname)| {
            let mut v = json!({"type": "SERVICE_CREATE", "service": service});
            if let Some(nickname) = nickname {
                v["nickname"] = nickname.into();
            }
            v
        }),
        any::<u64>().prop_map(|seq| json!({"type": "SELF_SET_SEQ", "seq": seq})),
        s().prop_map(|uuid| json!({"type": "CLIENT_FETCH", "uuid": uuid})),
        (s(), s()).prop_map(
            |(setting, value)| json!({"type": "USER_SETTINGS_SET", "setting": setting, "value": value})
        ),
        prop::sample::select(
            &["SELF_FETCH", "SERVICE_FETCH_ALL", "CLIENT_FETCH_ALL", "USER_SETTINGS_FETCH"][..]
        )
        .prop_map(|kind| json!({"type": kind})),
    ]
}

// ---- the decoders, called directly ----

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn payload_decode_takes_any_text(text in any::<String>()) {
        let _ = PayloadIn::decode(&text);
    }

    #[test]
    fn engine_and_socket_packets_take_any_text(text in any::<String>()) {
        let _ = packet::engine(&text);
        check_socket_packet(&text)?;
    }
}

// Structured input costs more to make: fewer cases.
proptest! {
    #![proptest_config(config(800))]

    #[test]
    fn payload_decode_takes_any_json(text in json_text()) {
        let _ = PayloadIn::decode(&text);
    }

    #[test]
    fn payload_decode_names_what_is_wrong(text in wrong_payload()) {
        match PayloadIn::decode(&text) {
            // Whatever decodes encodes again.
            Ok(payload) => prop_assert!(serde_json::to_string(&payload).is_ok()),
            Err(DecodeError::Malformed(desc)) => prop_assert!(desc.starts_with("invalid "), "{desc}"),
            Err(DecodeError::Unsupported(kind)) => prop_assert!(!PayloadKind::NAMES.contains(&kind.as_str())),
        }
    }

    #[test]
    fn payloads_round_trip(value in valid_payload()) {
        let text = value.to_string();
        let decoded = PayloadIn::decode(&text);
        prop_assert!(decoded.is_ok(), "{text}: {:?}", decoded.err());
        let back = serde_json::to_value(decoded.ok()).expect("encodes");
        prop_assert_eq!(back, value);
    }

    #[test]
    fn data_check_agrees_with_a_strict_parser(text in json_text()) {
        // The depth of the text, not of a parsed value: a duplicate key's
        // deeper value counts though a parser keeps only the last.
        let strict = serde_json::from_str::<Value>(&text).is_ok()
            && text_depth(&text) <= MAX_DATA_DEPTH;
        prop_assert_eq!(data::check(&text).is_ok(), strict, "{}", text);
    }

    /// The property behind the gateway's check: whatever MESSAGE `data` it
    /// accepts, relayed as it is, every recipient's client library reads.
    #[test]
    fn accepted_data_reaches_every_client_readable(data in json_text()) {
        let text = format!(r#"{{"type":"MESSAGE","target":{{"type":"ALL"}},"data":{data}}}"#);
        match PayloadIn::decode(&text) {
            Ok(PayloadIn::Message { target, data: raw }) => {
                prop_assert_eq!(raw.get(), data.as_str());
                let client: ClientInfo = serde_json::from_value(
                    json!({"name": "a", "uuid": uuid::Uuid::nil(), "tags": []}),
                ).expect("client");
                let origin = OriginRef { client: &client, service: None }.encode();
                let frame = MessageOut { target: &target, origin: &origin, service: None, data: raw, position: None }
                    .encode();
                let read = serde_json::from_str::<Sequenced>(&frame);
                prop_assert!(read.is_ok(), "{frame}: {:?}", read.err());
            }
            Ok(other) => prop_assert!(false, "decoded as {other:?}"),
            Err(DecodeError::Malformed(_)) => prop_assert!(data::check(&data).is_err()),
            Err(e) => prop_assert!(false, "{e}"),
        }
    }

    #[test]
    fn socket_packets_of_almost_the_right_shape(
        kind in "[0-9]",
        nsp in "(/[a-z0-9,_]{0,6},?)?",
        id in "[0-9]{0,22}",
        json in prop_oneof![json_text(), any::<String>()],
    ) {
        check_socket_packet(&format!("{kind}{nsp}{id}{json}"))?;
    }

    #[test]
    fn server_packets_read_back(
        name in any::<String>(),
        data in proptest::option::of(json_value()),
        nsp in "/[a-z0-9_]{0,8}",
        sid in any::<String>(),
        id in 0u64..10_000_000_000_000_000_000,
    ) {
        let event = packet::event(&name, data.clone());
        let Ok(Engine::Message(inner)) = packet::engine(&event) else {
            return Err(TestCaseError::fail(format!("{event}: not an Engine.IO message")));
        };
        let read = packet::socket(inner).map_err(TestCaseError::fail)?;
        let expected = data.unwrap_or(Value::Null);
        prop_assert_eq!(read.event(), Some((name.as_str(), &expected)));

        let connected = packet::connected(&nsp, &sid);
        let read = packet::socket(&connected[1..]).map_err(TestCaseError::fail)?;
        prop_assert_eq!((read.kind, read.nsp.as_str()), (Kind::Connect, nsp.as_str()));
        prop_assert_eq!(read.data, Some(json!({"sid": sid})));

        let refused = packet::connect_error(&nsp, &name);
        let read = packet::socket(&refused[1..]).map_err(TestCaseError::fail)?;
        prop_assert_eq!(read.kind, Kind::ConnectError);
        prop_assert_eq!(read.data, Some(json!({"message": name})));

        let ack = packet::ack(id);
        let read = packet::socket(&ack[1..]).map_err(TestCaseError::fail)?;
        prop_assert_eq!((read.kind, read.id), (Kind::Ack, Some(id)));
    }

    #[test]
    fn request_envelopes_decode_or_name_the_fault(data in prop_oneof![
        json_value(),
        (
            prop_oneof![json_value(), any::<String>().prop_map(Value::from)],
            prop_oneof![json_value(), any::<i64>().prop_map(Value::from)],
            prop_oneof![json_value(), prop::collection::btree_map(
                prop::sample::select(&["pid", "cmd", "proc_id", "offset", "follow", "command"][..]),
                json_value(),
                0..4,
            ).prop_map(|m| json!(m))],
        ).prop_map(|(req, rid, msg)| json!({"req": req, "rid": rid, "msg": msg})),
    ]) {
        match Envelope::decode(&data) {
            Ok(request) => {
                prop_assert_eq!(Some(request.req.as_str()), data["req"].as_str());
                prop_assert_eq!(Some(&request.rid), data["rid"].as_number());
                // Whatever the arguments, every request reads them into its
                // type or names why not.
                for name in RequestName::NAMES.iter().copied().chain([request.req.as_str()]) {
                    let named = Envelope { req: name.to_owned(), ..request.clone() };
                    match Request::parse(&named) {
                        Ok(typed) => prop_assert_eq!(typed.name().as_str(), name),
                        Err(failure) => prop_assert!(
                            matches!(failure.reason, Reason::BadArgument | Reason::UnknownRequest)
                                && !failure.desc.is_empty(),
                            "{}", failure
                        ),
                    }
                }
                let answer = reply(Some(&request.rid), Ok(json!({})));
                prop_assert_eq!(&answer["rid"], &data["rid"]);
            }
            Err((rid, failure)) => {
                prop_assert_eq!(failure.reason, Reason::Malformed);
                prop_assert!(!failure.desc.is_empty());
                if let Some(rid) = &rid {
                    prop_assert_eq!(Some(rid), data["rid"].as_number());
                }
                let answer = reply(rid.as_ref(), Err(failure));
                prop_assert_eq!(&answer["msg"]["reason"], "malformed");
            }
        }
    }
}

/// How deeply arrays and objects nest in JSON text.
fn text_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0, false, false);
    for c in text.chars() {
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => in_string = false,
            (true, false, _) => {}
            (false, _, '"') => in_string = true,
            (false, _, '[' | '{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, ']' | '}') => depth = depth.saturating_sub(1),
            (false, _, _) => {}
        }
    }
    deepest
}

/// What `packet::socket` promises of the packets it returns.
fn check_socket_packet(text: &str) -> Result<(), TestCaseError> {
    if let Ok(packet) = packet::socket(text) {
        match packet.kind {
            Kind::Event => prop_assert!(packet.event().is_some(), "{text}"),
            Kind::Connect => prop_assert!(matches!(packet.data, None | Some(Value::Object(_)))),
            Kind::Ack => {
                prop_assert!(packet.id.is_some() && packet.data.is_some_and(|d| d.is_array()))
            }
            Kind::Disconnect | Kind::ConnectError => {}
        }
    }
    Ok(())
}

// ---- every path of a real gateway ----

/// A frame for any of the gateway's dialects: any text, any JSON, native
/// payloads of the wrong shape, and frames shaped like Nest's, Quix's and
/// Engine.IO's.
fn hostile_frame() -> impl Strategy<Value = String> {
    let nest = (
        prop_oneof![
            prop::sample::select(
                &[
                    "let_me_in_pls",
                    "command_response",
                    "command_response_error",
                    "info",
                    "warning",
                    "error"
                ][..]
            )
            .prop_map(Value::from),
            json_value(),
        ],
        json_value(),
        json_value(),
    )
        .prop_map(|(status, message, payload)| {
            json!({"status": status, "message": message, "payload": payload}).to_string()
        });
    let quix = (
        prop_oneof![
            prop::sample::select(&["authenticate", "get_vpn_conf", "execute"][..])
                .prop_map(Value::from),
            json_value(),
        ],
        json_value(),
        json_value(),
        json_value(),
    )
        .prop_map(|(req, rid, msg, auth)| {
            json!({"req": req, "rid": rid, "msg": msg, "auth": auth}).to_string()
        });
    let sio = (
        "[0-9]",
        "[0-9]?",
        "(/[a-z,]{0,4},?)?[0-9]{0,3}",
        prop_oneof![json_text(), any::<String>()],
    )
        .prop_map(|(engine, socket, middle, json)| format!("{engine}{socket}{middle}{json}"));
    prop_oneof![
        any::<String>(),
        json_text(),
        wrong_payload(),
        nest,
        quix,
        sio
    ]
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One of the gateway's paths, as the fuzzer drives it.
struct Path {
    name: &'static str,
    url: String,
    /// Frames that open a session (identify, authenticate, connect) and a
    /// text each one's answer contains.
    opening: Vec<(String, &'static str)>,
    /// The probe with number `n`, which the session always answers.
    probe: fn(u64) -> String,
}

/// Opens `path`'s session, or panics within [`common::PATIENCE`] each step.
async fn open(path: &Path) -> Ws {
    // No Nagle: a frame the session does not answer would hold the probe
    // behind it for a delayed ACK.
    let connect = tokio_tungstenite::connect_async_with_config(&path.url, None, true);
    let (mut ws, _) = tokio::time::timeout(common::PATIENCE, connect)
        .await
        .unwrap_or_else(|_| panic!("{}: no connection", path.name))
        .unwrap_or_else(|e| panic!("{}: {e}", path.name));
    for (frame, answer) in &path.opening {
        ws.send(Message::Text(frame.clone().into()))
            .await
            .expect("sends");
        match next_text_containing(&mut ws, answer).await {
            Some(_) => {}
            None => panic!("{}: closed while opening", path.name),
        }
    }
    ws
}

/// Reads until a text frame containing `needle` (`Some`) or the close
/// (`None`); panics when neither comes within [`common::PATIENCE`].
async fn next_text_containing(ws: &mut Ws, needle: &str) -> Option<String> {
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!(
                "nothing containing {needle:?} within {:?}",
                common::PATIENCE
            ),
            Ok(Some(Ok(Message::Text(text)))) if text.contains(needle) => {
                return Some(text.to_string())
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

#[test]
fn every_path_of_the_gateway_answers_hostile_frames_and_keeps_serving() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = common::TestServer::with(|s| s.identify_timeout_ms = 2_000);
    let data = server.data.path().to_str().expect("utf-8").to_owned();
    let (nest_token, quix_token) = rt.block_on(async {
        let store = ["--data-dir", data.as_str()];
        let nest_store = ["--data-dir", data.as_str(), "--format", "nest"];
        let nest = common::process::issue_token(&nest_store, "nesthost", "agent").await;
        let quix = common::process::issue_token(&store, "quixhost", "agent").await;
        (nest, quix)
    });
    let base = format!("ws://{}", server.addr);
    let paths = [
        Path {
            name: "/ws",
            url: format!("{base}/ws"),
            opening: vec![(
                json!({"type": "IDENTIFY", "name": "fuzzer", "version": "0.2.0"}).to_string(),
                "HELLO",
            )],
            probe: |n| json!({"type": "SELF_SET_SEQ", "seq": 1_000_000_000 + n}).to_string(),
        },
        Path {
            name: "/nest",
            url: format!("{base}/nest"),
            opening: vec![(
                json!({"status": "let_me_in_pls", "message": "", "payload": {"version": "0.1.0a", "client_token": nest_token}}).to_string(),
                "Authenticated",
            )],
            probe: |n| json!({"status": format!("probe_{n}")}).to_string(),
        },
        Path {
            name: "/wsi",
            url: format!("{base}/wsi"),
            opening: vec![(
                json!({"req": "authenticate", "rid": 0, "auth": quix_token, "msg": {}}).to_string(),
                "validity",
            )],
            probe: |n| json!({"req": format!("probe_{n}"), "rid": format!("probe_{n}")}).to_string(),
        },
        Path {
            name: "/socket.io/",
            url: format!("{base}/socket.io/?EIO=4&transport=websocket"),
            opening: vec![("40".to_owned(), "40{")],
            probe: |n| format!("2probe_{n}"),
        },
    ];
    // The text each probe's answer is known by.
    let answer = |path: &Path, n: u64| match path.name {
        "/ws" => format!("\"seq\":{}", 1_000_000_000 + n),
        "/socket.io/" => format!("3probe_{n}"),
        // In the error frame's text: `unknown status \"probe_N\"`.
        "/nest" => format!(r#"\"probe_{n}\""#),
        _ => format!("\"probe_{n}\""),
    };
    for path in &paths {
        let ws = RefCell::new(Some(rt.block_on(open(path))));
        let n = Cell::new(0u64);
        let mut runner = TestRunner::new(config(300));
        let outcome = runner.run(&hostile_frame(), |frame| {
            n.set(n.get() + 1);
            let n = n.get();
            let open_socket = ws.take();
            let kept = rt.block_on(async {
                // A frame that ended the session (a refusal may close):
                // the next case opens a new one.
                let mut socket = match open_socket {
                    Some(socket) => socket,
                    None => open(path).await,
                };
                let sent = socket.send(Message::Text(frame.clone().into())).await;
                let probed = match sent {
                    Ok(()) => socket.send(Message::Text((path.probe)(n).into())).await,
                    Err(e) => Err(e),
                };
                let answered = match probed {
                    Ok(()) => next_text_containing(&mut socket, &answer(path, n)).await,
                    Err(_) => None,
                };
                answered.map(|_| socket)
            });
            ws.replace(kept);
            Ok(())
        });
        if let Err(e) = outcome {
            panic!("{}: {e}", path.name);
        }
        if let Some(mut socket) = ws.take() {
            rt.block_on(async {
                let _ = socket.close(None).await;
            });
        }
    }
    // Still serving, after all that: a new client identifies.
    rt.block_on(async {
        let mut client = server.connect().await;
        client.identify("after_the_fuzz").await;
    });
}
