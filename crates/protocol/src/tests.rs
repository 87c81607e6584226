//! The payloads against the seed documents' JSON.

use super::*;
use serde_json::json;
use serde_json::value::RawValue;

fn out_roundtrip(value: serde_json::Value) {
    let parsed: Sequenced = serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("{value} does not decode: {e}"));
    let back = serde_json::to_value(&parsed).expect("encodes");
    assert_eq!(back, value);
}

fn in_roundtrip(value: serde_json::Value) {
    let text = value.to_string();
    let parsed = PayloadIn::decode(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let back = serde_json::to_value(&parsed).expect("encodes");
    assert_eq!(back, value);
}

const U1: &str = "8b3f0c6e-2f4e-4a55-9d0e-1f7c2b9a4e11";
const U2: &str = "0d1c2b3a-4f5e-4d6c-8b7a-9e8f7a6b5c4d";

fn service() -> serde_json::Value {
    json!({"name": "chat", "nickname": "Chat room", "owner_uuid": U1, "subscribers": [U1, U2]})
}

/// The seed's client object, with the verified identity the gateway
/// adds (here an anonymous client's).
fn client() -> serde_json::Value {
    json!({"name": "alice", "nickname": "Alice", "uuid": U1, "tags": ["a", "b"], "user": null, "roles": []})
}

#[test]
fn a_client_object_without_an_identity_is_anonymous() {
    let seed = json!({"name": "alice", "uuid": U1, "tags": []});
    let info: ClientInfo = serde_json::from_value(seed).expect("decodes");
    assert_eq!((info.user, info.roles.len()), (None, 0));
    let verified =
        json!({"name": "alice", "uuid": U1, "tags": [], "user": "alice", "roles": ["viewer"]});
    let info: ClientInfo = serde_json::from_value(verified.clone()).expect("decodes");
    assert_eq!(serde_json::to_value(&info).unwrap(), verified);
}

#[test]
fn every_payload_in_of_the_seed_round_trips() {
    in_roundtrip(
        json!({"type": "IDENTIFY", "name": "alice_1", "nickname": "Alice", "version": "0.2.0", "tags": ["x"]}),
    );
    in_roundtrip(
        json!({"type": "IDENTIFY", "name": "a", "version": "0.2.0", "tags": [], "secret": "s"}),
    );
    in_roundtrip(json!({"type": "SELF_SUBSCRIBE", "service": "chat"}));
    in_roundtrip(json!({"type": "SELF_UNSUBSCRIBE", "service": "chat"}));
    in_roundtrip(json!({"type": "SELF_FETCH"}));
    in_roundtrip(json!({"type": "SELF_SET_SEQ", "seq": 41}));
    in_roundtrip(json!({"type": "SERVICE_CREATE", "service": "chat", "nickname": "Chat"}));
    in_roundtrip(json!({"type": "SERVICE_CREATE", "service": "chat"}));
    in_roundtrip(json!({"type": "SERVICE_DELETE", "service": "chat"}));
    in_roundtrip(json!({"type": "SERVICE_FETCH", "service": "chat"}));
    in_roundtrip(json!({"type": "SERVICE_FETCH_ALL"}));
    in_roundtrip(json!({"type": "CLIENT_FETCH_ALL"}));
    in_roundtrip(json!({"type": "CLIENT_FETCH", "uuid": U2}));
    for target in [
        json!({"type": "NAME", "name": "bob"}),
        json!({"type": "UUID", "uuid": U2}),
        json!({"type": "SERVICE", "service": "chat"}),
        json!({"type": "SERVICE_CLIENT_UUID", "service": "chat", "uuid": U2}),
        json!({"type": "ALL"}),
    ] {
        in_roundtrip(json!({"type": "MESSAGE", "target": target, "data": {"n": [1, 2.5, null]}}));
    }
}

#[test]
fn identify_tags_default_to_empty() {
    let text = r#"{"type":"IDENTIFY","name":"a","version":"0.2.0"}"#;
    match PayloadIn::decode(text) {
        Ok(PayloadIn::Identify { tags, nickname, .. }) => {
            assert!(tags.is_empty());
            assert!(nickname.is_none());
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn message_data_is_kept_byte_for_byte() {
    let text = r#"{"data" : { "b":1,  "a" : [1e3, "\u00e9"] } ,"type":"MESSAGE","target":{"type":"ALL"},"origin":{"forged":true}}"#;
    match PayloadIn::decode(text) {
        Ok(PayloadIn::Message { data, target }) => {
            assert_eq!(data.get(), r#"{ "b":1,  "a" : [1e3, "\u00e9"] }"#);
            assert_eq!(target, Target::All);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn every_payload_out_of_the_seed_round_trips() {
    let seq = |mut v: serde_json::Value| {
        v["seq"] = json!(7);
        v
    };
    out_roundtrip(json!({"type": "OK", "seq": 3}));
    out_roundtrip(json!({"type": "BAD"}));
    out_roundtrip(json!({"type": "BAD", "seq": 1, "desc": "not the owner"}));
    out_roundtrip(json!({"type": "HELLO", "uuid": U1, "version": "0.2.0"}));
    for kind in [
        "SELF_SUBSCRIBE_RESULT",
        "SELF_UNSUBSCRIBE_RESULT",
        "SERVICE_CREATE_RESULT",
    ] {
        out_roundtrip(seq(
            json!({"type": kind, "successful": true, "service": service()}),
        ));
        out_roundtrip(json!({"type": kind, "successful": false, "service": service()}));
    }
    for kind in ["SELF_FETCH_RESULT", "CLIENT_FETCH_RESULT"] {
        out_roundtrip(seq(
            json!({"type": kind, "client": client(), "subscriptions": [service()]}),
        ));
    }
    out_roundtrip(json!({"type": "SERVICE_DELETE_RESULT", "service": service()}));
    out_roundtrip(seq(
        json!({"type": "SERVICE_FETCH_RESULT", "service": service()}),
    ));
    out_roundtrip(seq(
        json!({"type": "SERVICE_FETCH_ALL_RESULT", "services": [service(), service()]}),
    ));
    out_roundtrip(seq(
        json!({"type": "CLIENT_FETCH_ALL_RESULT", "clients": [client()]}),
    ));
    out_roundtrip(json!({"type": "CLIENT_JOINED", "client": client()}));
    out_roundtrip(json!({"type": "CLIENT_LEFT", "client": client()}));
    out_roundtrip(
        json!({"type": "SERVICE_CLIENT_SUBSCRIBED", "client": client(), "service": service()}),
    );
    out_roundtrip(
        json!({"type": "SERVICE_CLIENT_UNSUBSCRIBED", "client": client(), "service": service()}),
    );
    out_roundtrip(json!({"type": "ERROR_INTERNAL", "desc": "x"}));
    out_roundtrip(seq(json!({"type": "ERROR_UNSUPPORTED"})));
    out_roundtrip(seq(
        json!({"type": "ERROR_PROTOCOL", "desc": "missing field"}),
    ));
    out_roundtrip(seq(json!({"type": "INVALID_NAME", "name": "nobody"})));
    out_roundtrip(seq(json!({"type": "INVALID_UUID", "uuid": "not-a-uuid"})));
    out_roundtrip(seq(json!({"type": "INVALID_SERVICE", "service": "nope"})));
    let mut origin = client();
    origin["service"] = json!({"name": "chat", "owner_uuid": U1, "subscribers": []});
    out_roundtrip(
        json!({"type": "MESSAGE", "target": {"type": "SERVICE", "service": "chat"}, "origin": origin, "data": "hi"}),
    );
}

#[test]
fn message_out_relays_raw_data_and_matches_the_client_type() {
    let data = RawValue::from_string(r#"{"k": [1,2]}"#.to_owned()).expect("raw");
    let origin = Origin {
        client: serde_json::from_value(client()).expect("client"),
        service: None,
    };
    let target = Target::Name { name: "bob".into() };
    let encoded = OriginRef {
        client: &origin.client,
        service: None,
    }
    .encode();
    let text = MessageOut {
        target: &target,
        origin: &encoded,
        service: None,
        data: &data,
        position: None,
    }
    .encode();
    assert!(text.contains(r#""data":{"k": [1,2]}"#), "{text}");
    let back: Sequenced = serde_json::from_str(&text).expect("decodes");
    assert_eq!(back.seq, None);
    assert_eq!(
        back.payload,
        PayloadOut::Message {
            target,
            origin: origin.clone(),
            data: json!({"k": [1, 2]}),
            position: None,
        }
    );
    // Through a service, the service is the receipt's last member.
    let service = ServiceInfo {
        name: "chat".into(),
        nickname: None,
        owner_uuid: origin.client.uuid,
        subscribers: Vec::new(),
        history: Some(History { size: 10, ttl: 60 }),
    };
    let target = Target::Service {
        service: "chat".into(),
    };
    let position = Position {
        epoch: "e1".into(),
        offset: 7,
    };
    let text = MessageOut {
        target: &target,
        origin: &encoded,
        service: Some(&raw_json(&service)),
        data: &data,
        position: Some(&position),
    }
    .encode();
    assert!(
        text.ends_with(r#","position":{"epoch":"e1","offset":7}}"#),
        "{text}"
    );
    let back: Sequenced = serde_json::from_str(&text).expect("decodes");
    assert_eq!(
        back.payload,
        PayloadOut::Message {
            target,
            origin: Origin {
                client: origin.client,
                service: Some(service),
            },
            data: json!({"k": [1, 2]}),
            position: Some(position),
        }
    );
}

#[test]
fn decode_errors_are_classified() {
    assert!(matches!(
        PayloadIn::decode("{"),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        PayloadIn::decode("[1]"),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        PayloadIn::decode(r#"{"type": 5}"#),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(
        PayloadIn::decode(r#"{"type": "SELF_SUBSCRIBE"}"#),
        Err(DecodeError::Malformed(m)) if m.contains("service")
    ));
    assert_eq!(
        PayloadIn::decode(r#"{"type": "TELEPORT"}"#).err(),
        Some(DecodeError::Unsupported("TELEPORT".into()))
    );
    assert!(matches!(
        PayloadIn::decode(r#"{"type":"MESSAGE","target":{"type":"MOON"},"data":1}"#),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn message_data_that_strict_parsers_refuse_is_malformed() {
    for (data, named) in [
        (r#""\ud800""#, "lone surrogate"),
        ("1e400", "too large for a double"),
        (
            &format!("{}0{}", "[".repeat(65), "]".repeat(65)),
            "deeper than 64",
        ),
    ] {
        let text = format!(r#"{{"type":"MESSAGE","target":{{"type":"ALL"}},"data":{data}}}"#);
        match PayloadIn::decode(&text) {
            Err(DecodeError::Malformed(desc)) => {
                assert!(
                    desc.starts_with("invalid MESSAGE: field `data`: "),
                    "{desc}"
                );
                assert!(desc.contains(named), "{desc}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn kinds_are_the_types_decode_knows() {
    for &kind in PayloadKind::NAMES {
        let text = json!({"type": kind}).to_string();
        let decoded = PayloadIn::decode(&text);
        assert!(
            !matches!(decoded, Err(DecodeError::Unsupported(_))),
            "{kind}"
        );
        if let Ok(payload) = decoded {
            assert_eq!(payload.kind(), kind);
        }
    }
}

#[test]
fn versions() {
    assert!(version_compatible("0.2.0").is_ok());
    assert!(version_compatible("0.2.17-beta.1").is_ok());
    assert!(version_compatible("0.3.0").is_err());
    assert!(version_compatible("1.2.0").is_err());
    assert!(version_compatible("banana").is_err());
}

#[test]
fn a_host_kind_is_read_from_the_first_tag_that_names_one() {
    let tags = |t: &[&str]| t.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(HostKind::of(&tags(&["web", "quix"])), Some(HostKind::Quix));
    assert_eq!(
        HostKind::of(&tags(&["nest", "agent"])),
        Some(HostKind::Nest)
    );
    assert_eq!(HostKind::of(&tags(&["agent"])), Some(HostKind::Agent));
    assert_eq!(HostKind::of(&tags(&["Nest", "ctl"])), None);
}
