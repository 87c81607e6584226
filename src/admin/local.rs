//! `--local`: the admin commands on the store itself, found by the
//! gateway's own settings (`--data-dir`, `--config`, `--redis-url` and the
//! `CONCIERGE_*` variables), for the first admin of a new gateway or with
//! no gateway running.
//!
//! A command run from the wrong folder must not make a second, empty store
//! there and report success: a store file that does not exist is an error
//! naming its path, except for the bootstrap commands (`user add`, `token
//! issue`) given the data folder explicitly (`--data-dir` or
//! `CONCIERGE_DATA_DIR`), which create it.

use std::sync::Arc;

use super::ops::AdminError;
use super::GatewayArgs;
use crate::auth::Auth;
use crate::cluster::STORE_FILE;
use crate::config::{Settings, SettingsLayer};

/// The store `args` name, and an [`Auth`] on it; `creates`: the command
/// may create a store that does not exist yet, if its folder was named.
pub(super) async fn open(args: &GatewayArgs, creates: bool) -> Result<Arc<Auth>, AdminError> {
    let layer = SettingsLayer {
        data_dir: args.data_dir.clone(),
        redis_url: args.redis_url.clone(),
        ..SettingsLayer::default()
    };
    let settings = Settings::from_process(args.config.clone(), layer)
        .map_err(|e| AdminError::Invalid(e.to_string()))?;
    let cluster = settings.cluster();
    if cluster.redis_url.is_empty() && cluster.redis_sentinels.is_empty() {
        let path = cluster.data_dir.join(STORE_FILE);
        let named = args.data_dir.is_some() || std::env::var_os("CONCIERGE_DATA_DIR").is_some();
        let may_create = creates && named;
        if !(path.exists() || may_create) {
            let shown = std::path::absolute(&path).unwrap_or(path);
            return Err(AdminError::Invalid(format!(
                "no store at {}: name the gateway's data folder with --data-dir DIR (or its \
                 --config, or --redis-url); only `user add` and `token issue` given --data-dir \
                 create a new store",
                shown.display()
            )));
        }
    }
    let store = crate::cluster::open_store(&cluster)
        .await
        .map_err(|e| AdminError::Failed(e.to_string()))?;
    Ok(Auth::open(store, &settings).await?)
}
