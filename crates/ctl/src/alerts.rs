//! The operator's side of alerts (docs/PROTOCOL.md §21): `ctl alerts`
//! lists the alerts firing now and the latest events (`alerts`), `--follow`
//! then prints each event the gateway broadcasts on its `alerts` service,
//! and `ctl alerts rules|set|delete` read and edit the rules.

use std::process::ExitCode;

use serde_json::json;

use super::args::{AlertsArgs, AlertsCommand};
use super::conn::decode;
use super::error::CtlError;
use super::render::table;
use super::summary::when;
use super::Ctl;
use concierge_protocol::agent::args::NoArgs;
use concierge_protocol::agent::GatewayRequest;
use concierge_protocol::alerts::{
    AlertEvent, AlertRule, AlertState, AlertsPage, AlertsQuery, RuleInfo, RuleName, RuleSource,
    ALERTS_SERVICE, MAX_ALERTS_PAGE,
};
use concierge_protocol::{PayloadOut, GATEWAY_NAME};

impl Ctl {
    /// `ctl alerts ...`.
    pub(crate) async fn alerts(&mut self, args: AlertsArgs) -> Result<ExitCode, CtlError> {
        match args.action {
            None => self.alerts_page(args.limit, args.follow).await,
            Some(AlertsCommand::Rules) => {
                let reply = self
                    .request(GATEWAY_NAME, &GatewayRequest::AlertRules(NoArgs {}))
                    .await?;
                let rules: Vec<RuleInfo> = decode("rules", reply["rules"].clone())?;
                self.show(&reply, |_, _| rules_table(&rules));
                Ok(ExitCode::SUCCESS)
            }
            Some(AlertsCommand::Set { name, when, target }) => {
                let when = when.parse().map_err(CtlError::Usage)?;
                let rule = AlertRule { name, when, target };
                let reply = self
                    .request(GATEWAY_NAME, &GatewayRequest::AlertRuleSet(rule))
                    .await?;
                let info: RuleInfo = decode("rule", reply["rule"].clone())?;
                self.show(&reply, |_, _| {
                    format!(
                        "rule {}: {} on {}",
                        info.rule.name,
                        info.rule.when,
                        info.rule.target.as_deref().unwrap_or("every host")
                    )
                });
                Ok(ExitCode::SUCCESS)
            }
            Some(AlertsCommand::Delete { name }) => {
                let reply = self
                    .request(
                        GATEWAY_NAME,
                        &GatewayRequest::AlertRuleDelete(RuleName { name: name.clone() }),
                    )
                    .await?;
                self.show(&reply, |_, _| {
                    format!("rule {name} deleted: its firing alerts resolve")
                });
                Ok(ExitCode::SUCCESS)
            }
        }
    }

    /// `ctl alerts [--follow]`: subscribed first, so that no event between
    /// the page and the subscription is missed (one already listed is not
    /// shown again).
    async fn alerts_page(&mut self, limit: u64, follow: bool) -> Result<ExitCode, CtlError> {
        if follow {
            self.follow(ALERTS_SERVICE, true).await?;
        }
        let query = AlertsQuery {
            before: None,
            limit: Some(limit.min(MAX_ALERTS_PAGE as u64)),
        };
        let reply = self
            .request(GATEWAY_NAME, &GatewayRequest::Alerts(query))
            .await?;
        let page: AlertsPage = decode("alerts", reply.clone())?;
        self.show(
            &json!({"active": page.active, "recent": page.recent}),
            |_, _| page_text(&page),
        );
        if !follow {
            return Ok(ExitCode::SUCCESS);
        }
        let mut last = page.recent.first().map_or(0, |e| e.seq);
        loop {
            let PayloadOut::Message { origin, data, .. } = self.next_followed().await? else {
                continue;
            };
            let from_alerts = origin
                .service
                .as_ref()
                .is_some_and(|s| s.name == ALERTS_SERVICE)
                && origin.client.name == ALERTS_SERVICE;
            let Ok(event) = serde_json::from_value::<AlertEvent>(data.clone()) else {
                continue;
            };
            if !from_alerts || event.seq <= last {
                continue;
            }
            last = event.seq;
            if self.json {
                println!("{data}");
            } else {
                println!("{}", event_line(&event));
            }
        }
    }
}

fn rules_table(rules: &[RuleInfo]) -> String {
    if rules.is_empty() {
        return "no alert rule".into();
    }
    let mut t = table(["NAME", "WHEN", "TARGET", "SOURCE"]);
    for r in rules {
        t.add_row([
            r.rule.name.clone(),
            r.rule.when.to_string(),
            r.rule.target.clone().unwrap_or_else(|| "*".into()),
            match r.source {
                RuleSource::Config => "config".into(),
                RuleSource::Api => "api".into(),
            },
        ]);
    }
    t.to_string()
}

fn value(event: &AlertEvent) -> String {
    event
        .value
        .map_or_else(|| "-".into(), |v| format!("{v:.1}"))
}

/// The alerts firing, then the latest events.
fn page_text(page: &AlertsPage) -> String {
    let mut out = String::new();
    if page.active.is_empty() {
        out.push_str("no alert firing\n");
    } else {
        let mut t = table(["HOST", "RULE", "WHEN", "VALUE", "SINCE"]);
        for e in &page.active {
            t.add_row([
                e.host.clone(),
                e.rule.clone(),
                e.when.to_string(),
                value(e),
                when(e.since * 1000),
            ]);
        }
        out.push_str(&format!("firing:\n{t}\n"));
    }
    if page.recent.is_empty() {
        out.push_str("no alert event yet");
    } else {
        let mut t = table(["SEQ", "AT", "STATE", "HOST", "RULE", "WHEN", "VALUE"]);
        for e in &page.recent {
            t.add_row([
                e.seq.to_string(),
                when(e.at * 1000),
                state(e.state).into(),
                e.host.clone(),
                e.rule.clone(),
                e.when.to_string(),
                value(e),
            ]);
        }
        out.push_str(&format!("\nlatest events, newest first:\n{t}"));
    }
    out
}

fn state(state: AlertState) -> &'static str {
    match state {
        AlertState::Firing => "firing",
        AlertState::Resolved => "resolved",
    }
}

/// One event as `--follow` prints it.
fn event_line(e: &AlertEvent) -> String {
    format!(
        "{} {:<8} {} {} ({}) value {} seq {}",
        when(e.at * 1000),
        state(e.state),
        e.host,
        e.rule,
        e.when,
        value(e),
        e.seq
    )
}
