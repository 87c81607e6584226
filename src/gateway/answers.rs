//! The requests the gateway answers itself: a MESSAGE to the reserved name
//! [`GATEWAY_NAME`] carrying seed 003's envelope `{"req", "rid", "msg"}`,
//! answered on the sender's own replica by a MESSAGE from that name with
//! `{"rid", "msg"}`. It is how a host fetches its VPN config over the
//! connection it already has (`get_vpn_conf`), how operators list and
//! revoke peers (`vpn_peers`, `vpn_revoke`), and how hosts file their facts
//! in the inventory and operators read it (`facts`, `hosts`,
//! `forget_host`), how hosts report their health and operators read its
//! history (`summary`, `history`), and how jobs are created, read and cancelled
//! (`job_create`, `job_get`, `jobs`, `job_cancel`, `job_output`).

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::auth::{Auth, Claims, Role};
use crate::fleet::inventory::may_be_host;
use crate::fleet::jobs::{Created, Creator};
use crate::fleet::{Inventory, Jobs};
use crate::namespace::{Namespace, ReplyTo};
use crate::protocol::agent::args::VpnConf;
use crate::protocol::agent::{
    authorize, reply, success, Envelope, Failure, GatewayRequest, Reason,
};
use crate::protocol::selector::Selector;
use crate::protocol::{ClientInfo, HostKind, Origin, PayloadOut, Target, GATEWAY_NAME};
use crate::vpn::{Fetch, Vpn};

/// What the gateway's own answers reach.
#[derive(Clone)]
pub struct Desk {
    pub vpn: Vpn,
    pub inventory: Arc<Inventory>,
    pub jobs: Arc<Jobs>,
    pub namespace: Namespace,
    pub auth: Arc<Auth>,
}

/// Answers one request from `client` (identified with `claims`).
pub async fn answer(
    desk: Desk,
    client: ClientInfo,
    claims: Option<Claims>,
    data: Box<RawValue>,
    reply_to: ReplyTo,
) {
    // MESSAGE data is checked JSON already.
    let data = serde_json::from_str::<Value>(data.get()).unwrap_or_default();
    let data = match Envelope::decode(&data) {
        Ok(envelope) => {
            let outcome = serve(&desk, &client, claims, &envelope).await;
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
    desk: &Desk,
    client: &ClientInfo,
    claims: Option<Claims>,
    envelope: &Envelope,
) -> Result<Value, Failure> {
    let request = GatewayRequest::parse(envelope)?;
    match (request.role(), &claims) {
        // A gateway that requires no token lets anyone read the inventory
        // and jobs, as anyone may list its clients, and create and cancel
        // jobs: each agent decides whether an anonymous sender may run
        // what a job asks (its `anonymous_role`).
        (Some(Role::Viewer), None) if !desk.auth.required() => {}
        (Some(_), None)
            if !desk.auth.required()
                && matches!(
                    request,
                    GatewayRequest::JobCreate(_) | GatewayRequest::JobCancel(_)
                ) => {}
        (Some(needed), claims) => {
            let (user, roles) = match claims {
                Some(c) => (Some(c.sub.as_str()), c.role.implied()),
                None => (None, &[][..]),
            };
            authorize(user, roles, needed)?;
        }
        (None, _) => {}
    }
    let unavailable =
        |e: crate::cluster::store::StoreError| Failure::new(Reason::Unavailable, e.to_string());
    match request {
        GatewayRequest::GetVpnConf(args) => {
            // By default the config of the name the token is for (a
            // `ctl` identifies as NAME_ctl_..., its config is NAME's).
            let own = claims.as_ref().map_or(&client.name, |c| &c.name).clone();
            let name = args.name.clone().unwrap_or(own);
            let conf_type = args.conf_type().to_owned();
            let conf_data = desk.vpn.fetch(Fetch::new(name, claims, &args)).await?;
            Ok(success(json!(VpnConf {
                conf_type,
                conf_data
            })))
        }
        GatewayRequest::VpnPeers(_) => Ok(success(json!(desk.vpn.peers().await?))),
        GatewayRequest::VpnRevoke(args) => {
            desk.vpn.revoke(args.name.clone()).await?;
            Ok(success(json!({"name": args.name})))
        }
        GatewayRequest::Facts(facts) => {
            if !may_be_host(client) {
                return Err(Failure::new(
                    Reason::Forbidden,
                    "only a host reports facts: a client with a host token for its own name",
                ));
            }
            facts.check().map_err(Failure::bad_argument)?;
            desk.inventory
                .report(&client.name, HostKind::Agent, facts)
                .await
                .map_err(unavailable)?;
            Ok(success(json!({
                "name": client.name,
                "summary_interval": desk.inventory.health().interval(),
            })))
        }
        GatewayRequest::Summary(summary) => {
            if !may_be_host(client) {
                return Err(Failure::new(
                    Reason::Forbidden,
                    "only a host reports its health: a client with a host token for its own name",
                ));
            }
            let at = desk
                .inventory
                .health()
                .accept(&client.name, summary)
                .await?;
            Ok(success(json!({ "at": at })))
        }
        GatewayRequest::History(query) => {
            if !desk.inventory.has(&query.host).await.map_err(unavailable)? {
                return Err(Failure::new(
                    Reason::NotFound,
                    format!("the inventory has no host {:?}", query.host),
                ));
            }
            Ok(success(json!(
                desk.inventory.health().history(&query).await?
            )))
        }
        GatewayRequest::Hosts(query) => {
            let selector = match query.target.as_deref() {
                Some(target) => Some(
                    Selector::parse(target).map_err(|e| Failure::bad_argument(e.to_string()))?,
                ),
                None => None,
            };
            let directory = Arc::clone(&desk.namespace.directory());
            let page = desk
                .inventory
                .hosts(&query, selector.as_ref(), &|name| {
                    directory.named(name).is_some()
                })
                .await
                .map_err(unavailable)?;
            Ok(success(json!(page)))
        }
        GatewayRequest::JobCreate(spec) => {
            let creator = Creator {
                user: claims.as_ref().map(|c| c.sub.clone()),
                roles: client.roles.clone(),
                client: client.name.clone(),
            };
            Ok(success(match desk.jobs.create(spec, creator).await? {
                Created::Job(job) => json!({ "job": job }),
                Created::Preview(preview) => json!(preview),
            }))
        }
        GatewayRequest::JobGet(query) => Ok(success(json!(desk.jobs.get(&query).await?))),
        GatewayRequest::Jobs(query) => Ok(success(json!(desk.jobs.list(&query).await?))),
        GatewayRequest::JobCancel(job) => {
            let by = claims.as_ref().map_or(&client.name, |c| &c.sub);
            let job = desk.jobs.cancel(&job.job, by).await?;
            Ok(success(json!({ "job": job })))
        }
        GatewayRequest::JobOutput(host) => {
            Ok(success(json!({ "host": desk.jobs.output(&host).await? })))
        }
        // Served from issue 26's health and alerts (in progress).
        GatewayRequest::Alerts(_)
        | GatewayRequest::AlertRules(_)
        | GatewayRequest::AlertRuleSet(_)
        | GatewayRequest::AlertRuleDelete(_) => Err(Failure::new(
            Reason::UnknownRequest,
            "this gateway does not serve health or alerts yet",
        )),
        GatewayRequest::ForgetHost(args) => {
            if !desk
                .inventory
                .forget(&args.name)
                .await
                .map_err(unavailable)?
            {
                return Err(Failure::new(
                    Reason::NotFound,
                    format!("the inventory has no host {:?}", args.name),
                ));
            }
            tracing::info!(host = %args.name, by = ?claims.as_ref().map(|c| &c.sub), "host forgotten");
            Ok(success(json!({"name": args.name})))
        }
    }
}
