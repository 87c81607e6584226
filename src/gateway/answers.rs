//! The requests the gateway answers itself: a MESSAGE to the reserved name
//! [`GATEWAY_NAME`] carrying seed 003's envelope `{"req", "rid", "msg"}`,
//! answered on the sender's own replica by a MESSAGE from that name with
//! `{"rid", "msg"}`. It is how a host fetches its VPN config over the
//! connection it already has (`get_vpn_conf`), and how operators list and
//! revoke peers (`vpn_peers`, `vpn_revoke`).

use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::auth::Claims;
use crate::namespace::ReplyTo;
use crate::protocol::agent::args::VpnConf;
use crate::protocol::agent::{authorize, reply, success, Envelope, Failure, GatewayRequest};
use crate::protocol::{ClientInfo, Origin, PayloadOut, Target, GATEWAY_NAME};
use crate::vpn::{Fetch, Vpn};

/// Answers one request from `client` (identified with `claims`).
pub async fn answer(
    vpn: Vpn,
    client: ClientInfo,
    claims: Option<Claims>,
    data: Box<RawValue>,
    reply_to: ReplyTo,
) {
    // MESSAGE data is checked JSON already.
    let data = serde_json::from_str::<Value>(data.get()).unwrap_or_default();
    let data = match Envelope::decode(&data) {
        Ok(envelope) => {
            let outcome = serve(&vpn, &client, claims, &envelope).await;
            reply(Some(&envelope.rid), outcome)
        }
        Err((rid, failure)) => reply(rid.as_ref(), Err(failure)),
    };
    reply_to.send(PayloadOut::Message {
        target: Target::Uuid {
            uuid: client.uuid.to_string(),
        },
        origin: Origin {
            client: gateway(),
            service: None,
        },
        data,
        position: None,
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

async fn serve(
    vpn: &Vpn,
    client: &ClientInfo,
    claims: Option<Claims>,
    envelope: &Envelope,
) -> Result<Value, Failure> {
    let request = GatewayRequest::parse(envelope)?;
    if let Some(needed) = request.role() {
        let (user, roles) = match &claims {
            Some(c) => (Some(c.sub.as_str()), c.role.implied()),
            None => (None, &[][..]),
        };
        authorize(user, roles, needed)?;
    }
    match request {
        GatewayRequest::GetVpnConf(args) => {
            // By default the config of the name the token is for (a
            // `ctl` identifies as NAME_ctl_..., its config is NAME's).
            let own = claims.as_ref().map_or(&client.name, |c| &c.name).clone();
            let name = args.name.clone().unwrap_or(own);
            let conf_type = args.conf_type().to_owned();
            let conf_data = vpn.fetch(Fetch::new(name, claims, &args)).await?;
            Ok(success(json!(VpnConf {
                conf_type,
                conf_data
            })))
        }
        GatewayRequest::VpnPeers(_) => Ok(success(json!(vpn.peers().await?))),
        GatewayRequest::VpnRevoke(args) => {
            vpn.revoke(args.name.clone()).await?;
            Ok(success(json!({"name": args.name})))
        }
    }
}
