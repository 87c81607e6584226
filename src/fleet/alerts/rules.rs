//! Which alert rules there are: the configuration's `[[alert]]` tables,
//! checked when the gateway starts and fixed while it runs, and the rules
//! admins add over the API, kept in the store's [`RULES`] table so that
//! every replica evaluates and lists the same ones.
//!
//! A configuration rule wins over an API rule of the same name (one added
//! before the file named it) and cannot be replaced or deleted over the
//! API: the file is its truth. Together they are at most [`MAX_RULES`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::cluster::store::{Store, StoreError, Table};
use crate::protocol::agent::{Failure, Reason};
use crate::protocol::alerts::{AlertRule, RuleInfo, RuleSource, MAX_RULES};

/// The rules added over the API: a record per rule name, its JSON.
pub const RULES: Table = Table::new("alert_rules");

/// Checks the configuration's rules: each well formed, names unique, at
/// most [`MAX_RULES`].
pub fn check_config(rules: &[AlertRule]) -> Result<(), String> {
    if rules.len() > MAX_RULES {
        return Err(format!(
            "{} rules; a gateway holds at most {MAX_RULES}",
            rules.len()
        ));
    }
    let mut names = BTreeSet::new();
    for rule in rules {
        rule.check()?;
        if !names.insert(rule.name.as_str()) {
            return Err(format!("two rules are named {:?}", rule.name));
        }
    }
    Ok(())
}

/// The rules of this gateway (see the module documentation).
pub struct Rules {
    config: Vec<AlertRule>,
    store: Arc<dyn Store>,
}

impl Rules {
    pub fn new(config: Vec<AlertRule>, store: Arc<dyn Store>) -> Rules {
        Rules { config, store }
    }

    /// Every rule, by name.
    pub async fn all(&self) -> Result<Vec<RuleInfo>, StoreError> {
        let mut rules: BTreeMap<String, RuleInfo> = BTreeMap::new();
        for (name, bytes) in self.store.list(RULES).await? {
            match serde_json::from_slice::<AlertRule>(&bytes) {
                Ok(rule) if rule.name == name => {
                    rules.insert(
                        name,
                        RuleInfo {
                            rule,
                            source: RuleSource::Api,
                        },
                    );
                }
                _ => tracing::warn!(rule = %name, "an alert rule that cannot be read is left out"),
            }
        }
        for rule in &self.config {
            rules.insert(
                rule.name.clone(),
                RuleInfo {
                    rule: rule.clone(),
                    source: RuleSource::Config,
                },
            );
        }
        Ok(rules.into_values().collect())
    }

    fn configured(&self, name: &str) -> bool {
        self.config.iter().any(|r| r.name == name)
    }

    /// Adds or replaces an API rule.
    pub async fn set(&self, rule: AlertRule) -> Result<RuleInfo, Failure> {
        rule.check().map_err(Failure::bad_argument)?;
        if self.configured(&rule.name) {
            return Err(config_rule(&rule.name));
        }
        let all = self.all().await.map_err(super::unavailable)?;
        if all.len() >= MAX_RULES && !all.iter().any(|r| r.rule.name == rule.name) {
            return Err(Failure::new(
                Reason::Limit,
                format!("this gateway has {MAX_RULES} alert rules already: delete one first"),
            ));
        }
        let bytes = serde_json::to_vec(&rule).unwrap_or_default();
        self.store
            .put(RULES, &rule.name, bytes)
            .await
            .map_err(super::unavailable)?;
        Ok(RuleInfo {
            rule,
            source: RuleSource::Api,
        })
    }

    /// Deletes an API rule.
    pub async fn delete(&self, name: &str) -> Result<(), Failure> {
        if self.configured(name) {
            return Err(config_rule(name));
        }
        if !self
            .store
            .delete(RULES, name)
            .await
            .map_err(super::unavailable)?
        {
            return Err(Failure::new(
                Reason::NotFound,
                format!("there is no alert rule {name:?}"),
            ));
        }
        Ok(())
    }
}

fn config_rule(name: &str) -> Failure {
    Failure::new(
        Reason::Forbidden,
        format!(
            "the alert rule {name:?} is the configuration's ([[alert]]): edit the gateway's config file"
        ),
    )
}
