//! What the admin commands run their operations on: the store itself
//! (`--local`) or a gateway's admin API. Each operation is answered with
//! the same types either way, so the commands print the same.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

use super::ops::{self, AdminError, Outcome};
use super::remote::Remote;
use super::{local, GatewayArgs};
use crate::auth::Auth;
use crate::protocol::admin::{
    IssuedToken, KeyEntry, NewPassword, NewUser, Removed, SettingValue, TokenEntry, TokenRequest,
    UserEntry,
};

pub(super) enum Backend {
    Local(Arc<Auth>),
    Remote(Remote),
}

impl Backend {
    /// The store (`--local`; `creates`: a missing one may be made, see
    /// [`local::open`]) or the gateway `args` name.
    pub(super) async fn open(args: GatewayArgs, creates: bool) -> Result<Backend, AdminError> {
        if args.local {
            return Ok(Backend::Local(local::open(&args, creates).await?));
        }
        let resolved = concierge_client::context::resolve(
            args.context.as_deref(),
            args.url.as_deref(),
            args.token,
        )
        .map_err(|e| AdminError::Invalid(e.to_string()))?;
        Ok(Backend::Remote(Remote::new(resolved)?))
    }

    pub(super) async fn list_users(&self) -> Outcome<Vec<UserEntry>> {
        match self {
            Backend::Local(auth) => ops::list_users(auth).await,
            Backend::Remote(r) => r.get(&["users"]).await,
        }
    }

    pub(super) async fn add_user(&self, new: &NewUser) -> Outcome<UserEntry> {
        match self {
            Backend::Local(auth) => ops::add_user(auth, new).await,
            Backend::Remote(r) => r.post(&["users"], new).await,
        }
    }

    pub(super) async fn set_password(&self, name: &str, password: &str) -> Outcome<()> {
        match self {
            Backend::Local(auth) => ops::set_password(auth, name, password).await,
            Backend::Remote(r) => {
                let body = NewPassword {
                    password: password.to_owned(),
                };
                r.put(&["users", name, "password"], &body).await
            }
        }
    }

    pub(super) async fn remove_user(&self, name: &str) -> Outcome<Removed> {
        match self {
            Backend::Local(auth) => ops::remove_user(auth, name).await,
            Backend::Remote(r) => r.delete(&["users", name]).await,
        }
    }

    pub(super) async fn allow_anonymous(&self) -> Outcome<()> {
        match self {
            Backend::Local(auth) => ops::allow_anonymous(auth).await,
            Backend::Remote(r) => r.post(&["allow-anonymous"], &()).await,
        }
    }

    pub(super) async fn list_tokens(&self) -> Outcome<Vec<TokenEntry>> {
        match self {
            Backend::Local(auth) => ops::list_tokens(auth).await,
            Backend::Remote(r) => r.get(&["tokens"]).await,
        }
    }

    pub(super) async fn issue_token(&self, request: &TokenRequest) -> Outcome<IssuedToken> {
        match self {
            Backend::Local(auth) => ops::issue_token(auth, request).await,
            Backend::Remote(r) => r.post(&["tokens"], request).await,
        }
    }

    pub(super) async fn revoke_token(&self, id: Uuid) -> Outcome<()> {
        match self {
            Backend::Local(auth) => ops::revoke_token(auth, id).await,
            Backend::Remote(r) => r.delete(&["tokens", &id.to_string()]).await,
        }
    }

    pub(super) async fn revoke_user_tokens(&self, user: &str) -> Outcome<()> {
        match self {
            Backend::Local(auth) => ops::revoke_user_tokens(auth, user).await,
            Backend::Remote(r) => r.delete(&["users", user, "tokens"]).await,
        }
    }

    pub(super) async fn keys(&self) -> Outcome<Vec<KeyEntry>> {
        match self {
            Backend::Local(auth) => ops::keys(auth).await,
            Backend::Remote(r) => r.get(&["keys"]).await,
        }
    }

    pub(super) async fn rotate_key(&self) -> Outcome<KeyEntry> {
        match self {
            Backend::Local(auth) => ops::rotate_key(auth).await,
            Backend::Remote(r) => r.post(&["keys"], &()).await,
        }
    }

    pub(super) async fn retire_key(&self, id: &str) -> Outcome<()> {
        match self {
            Backend::Local(auth) => ops::retire_key(auth, id).await,
            Backend::Remote(r) => r.delete(&["keys", id]).await,
        }
    }

    pub(super) async fn get_settings(&self, user: &str) -> Outcome<BTreeMap<String, String>> {
        match self {
            Backend::Local(auth) => ops::get_settings(auth, user).await,
            Backend::Remote(r) => r.get(&["users", user, "settings"]).await,
        }
    }

    pub(super) async fn set_setting(
        &self,
        user: &str,
        setting: &str,
        value: &str,
    ) -> Outcome<BTreeMap<String, String>> {
        match self {
            Backend::Local(auth) => ops::set_setting(auth, user, setting, value).await,
            Backend::Remote(r) => {
                let body = SettingValue {
                    value: value.to_owned(),
                };
                r.put(&["users", user, "settings", setting], &body).await
            }
        }
    }
}
