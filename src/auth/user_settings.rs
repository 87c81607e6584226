//! Per-user settings, with seed 000's names, values and defaults.
//!
//! One record per user (a JSON object of the settings set away from their
//! defaults) in the store, read and written by the user through the
//! protocol and by `concierge settings`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::AuthError;
use crate::cluster::store::{Store, Table};

const SETTINGS: Table = Table::new("user-settings");

/// Each setting: its name, its values, and its default (seed 000 marks no
/// default for `tutorial`; a new user starts at `stage_1`).
pub const DEFINED: [(&str, &[&str], &str); 3] = [
    ("storage_unit_of_measurement", &["bytes", "gb", "gib"], "gb"),
    ("mem_or_ram", &["mem", "ram"], "mem"),
    ("tutorial", &["stage_1", "stage_2", "stage_3"], "stage_1"),
];

/// Every setting of `user`, defaults included, by name.
pub async fn get(
    store: &Arc<dyn Store>,
    user: &str,
) -> Result<BTreeMap<String, String>, AuthError> {
    let stored = load(store, user).await?.unwrap_or_default();
    Ok(DEFINED
        .iter()
        .map(|(name, values, default)| {
            let value = stored
                .get(*name)
                .filter(|v| values.contains(&v.as_str()))
                .map_or(*default, String::as_str);
            (name.to_string(), value.to_owned())
        })
        .collect())
}

async fn load(
    store: &Arc<dyn Store>,
    user: &str,
) -> Result<Option<BTreeMap<String, String>>, AuthError> {
    match store.get(SETTINGS, user).await? {
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            AuthError::Internal(format!("the settings of {user} are unreadable: {e}"))
        }),
        None => Ok(None),
    }
}

/// Checks a setting's name and value.
pub fn check(name: &str, value: &str) -> Result<(), AuthError> {
    let names = || DEFINED.map(|(n, _, _)| n).join(", ");
    let Some((_, values, _)) = DEFINED.iter().find(|(n, _, _)| *n == name) else {
        return Err(AuthError::Invalid(format!(
            "no setting {name:?}: the settings are {}",
            names()
        )));
    };
    if !values.contains(&value) {
        return Err(AuthError::Invalid(format!(
            "{name} is one of {}, not {value:?}",
            values.join(", ")
        )));
    }
    Ok(())
}

/// Sets one setting of `user`; every setting afterwards.
pub async fn set(
    store: &Arc<dyn Store>,
    user: &str,
    name: &str,
    value: &str,
) -> Result<BTreeMap<String, String>, AuthError> {
    check(name, value)?;
    loop {
        let before = store.get(SETTINGS, user).await?;
        let mut map: BTreeMap<String, String> = match &before {
            Some(bytes) => serde_json::from_slice(bytes).unwrap_or_default(),
            None => BTreeMap::new(),
        };
        map.insert(name.to_owned(), value.to_owned());
        let after = serde_json::to_vec(&map).unwrap_or_default();
        if store
            .compare_and_swap(SETTINGS, user, before, Some(after))
            .await?
        {
            return get(store, user).await;
        }
    }
}

/// Forgets a user's settings (when the account is removed).
pub(super) async fn forget(store: &Arc<dyn Store>, user: &str) -> Result<(), AuthError> {
    store.delete(SETTINGS, user).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_are_checked() {
        assert!(check("mem_or_ram", "ram").is_ok());
        let e = check("mem_or_ram", "swap").unwrap_err().to_string();
        assert!(e.contains("mem, ram"), "{e}");
        let e = check("colour", "red").unwrap_err().to_string();
        assert!(e.contains("storage_unit_of_measurement"), "{e}");
    }
}
