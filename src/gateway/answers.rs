//! The requests the gateway answers itself: a MESSAGE to the reserved name
//! [`GATEWAY_NAME`] carrying seed 003's envelope `{"req", "rid", "msg"}`,
//! answered on the sender's own replica by a MESSAGE from that name with
//! `{"rid", "msg"}`. It is how a host fetches its VPN config over the
//! connection it already has (`get_vpn_conf`), and how operators list and
//! revoke peers (`vpn_peers`, `vpn_revoke`).

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::auth::{Claims, Role};
use crate::namespace::ReplyTo;
use crate::protocol::{ClientInfo, Origin, PayloadOut, Target, GATEWAY_NAME};
use crate::vpn::{Fetch, Vpn, VpnError};

#[derive(Deserialize)]
struct Envelope {
    req: String,
    rid: serde_json::Number,
    #[serde(default)]
    msg: Map<String, Value>,
}

/// Answers one request from `client` (identified with `claims`).
pub async fn answer(
    vpn: Vpn,
    client: ClientInfo,
    claims: Option<Claims>,
    data: Box<RawValue>,
    reply: ReplyTo,
) {
    let (rid, msg) = match serde_json::from_str::<Envelope>(data.get()) {
        Err(e) => (
            Value::Null,
            json!({"result": "error", "reason": "malformed",
                   "desc": format!("a request to {GATEWAY_NAME} is {{\"req\", \"rid\", \"msg\"}}: {e}")}),
        ),
        Ok(envelope) => {
            let msg = serve(&vpn, &client, claims, &envelope)
                .await
                .unwrap_or_else(|e| e.to_msg());
            (Value::Number(envelope.rid), msg)
        }
    };
    reply.send(PayloadOut::Message {
        target: Target::Uuid {
            uuid: client.uuid.to_string(),
        },
        origin: Origin {
            client: gateway(),
            service: None,
        },
        data: json!({"rid": rid, "msg": msg}),
    });
}

/// The sender the answers come from.
fn gateway() -> ClientInfo {
    ClientInfo {
        name: GATEWAY_NAME.to_owned(),
        nickname: None,
        uuid: uuid::Uuid::nil(),
        tags: vec!["gateway".into()],
        user: None,
        roles: Vec::new(),
    }
}

fn text(msg: &Map<String, Value>, key: &str) -> Result<Option<String>, VpnError> {
    match msg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(VpnError::BadArgument(format!(
            "`{key}` must be a string, not {other}"
        ))),
    }
}

async fn serve(
    vpn: &Vpn,
    client: &ClientInfo,
    claims: Option<Claims>,
    envelope: &Envelope,
) -> Result<Value, VpnError> {
    let msg = &envelope.msg;
    match envelope.req.as_str() {
        "get_vpn_conf" => {
            let conf_type = text(msg, "conf_type")?.unwrap_or_else(|| "wireguard".into());
            // By default the config of the name the token is for (a
            // `ctl` identifies as NAME_ctl_..., its config is NAME's).
            let own = claims.as_ref().map_or(&client.name, |c| &c.name).clone();
            let conf_data = vpn
                .fetch(Fetch {
                    name: text(msg, "name")?.unwrap_or(own),
                    claims,
                    conf_type: conf_type.clone(),
                    tun_mode: text(msg, "tun_mode")?.unwrap_or_else(|| "udp".into()),
                    public_key: text(msg, "public_key")?,
                })
                .await?;
            Ok(json!({"result": "success", "conf_type": conf_type, "conf_data": conf_data}))
        }
        "vpn_peers" => {
            allowed(&claims, Role::Operator)?;
            let status = vpn.peers().await?;
            let mut body = serde_json::to_value(status).unwrap_or_default();
            if let Some(fields) = body.as_object_mut() {
                fields.insert("result".into(), Value::from("success"));
            }
            Ok(body)
        }
        "vpn_revoke" => {
            allowed(&claims, Role::Admin)?;
            let name = text(msg, "name")?
                .ok_or_else(|| VpnError::BadArgument("`name` is required".into()))?;
            vpn.revoke(name.clone()).await?;
            Ok(json!({"result": "success", "name": name}))
        }
        other => Err(VpnError::UnknownRequest(other.to_owned())),
    }
}

fn allowed(claims: &Option<Claims>, role: Role) -> Result<(), VpnError> {
    match claims {
        Some(c) if c.role.implied().contains(&role) => Ok(()),
        Some(c) => Err(VpnError::Forbidden(format!(
            "{} ({}) may not do this: it needs the {role} role",
            c.sub, c.role
        ))),
        None => Err(VpnError::Forbidden(format!(
            "this needs a token with the {role} role"
        ))),
    }
}
