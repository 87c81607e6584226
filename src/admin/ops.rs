//! The admin operations, once: what `concierge user`, `token` and
//! `settings` do to the store, called by the gateway's admin API (for an
//! admin's token) and by the commands' local mode alike, with the answers
//! of the admin API's types ([`crate::protocol::admin`]).
//!
//! An operation on a name or id that does not exist is an error
//! ([`AdminError::NotFound`]), never a silent success.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::auth::{accounts, tokens, user_settings, Auth, AuthError, Role, TokenKind};
use crate::cluster::store::Store;
use crate::protocol::admin::{
    IssuedToken, KeyEntry, NewUser, Removed, TokenEntry, TokenFormat, TokenRequest, UserEntry,
};
use crate::protocol::CtlName;

/// Why an admin operation failed; each has its HTTP status in the admin
/// API and its exit status in the commands.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Bad input (400).
    #[error("{0}")]
    Invalid(String),
    /// No such user, token or key (404).
    #[error("{0}")]
    NotFound(String),
    /// The account exists already (409).
    #[error("{0}")]
    Exists(String),
    /// No token, or one the gateway refuses (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A token that is not an admin's (403).
    #[error("{0}")]
    Forbidden(String),
    /// The gateway could not be reached (the commands only).
    #[error("{0}")]
    Unreachable(String),
    /// The store failed (503), or anything else.
    #[error("{0}")]
    Failed(String),
}

impl From<AuthError> for AdminError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Invalid(why) => AdminError::Invalid(why),
            AuthError::Exists(why) => AdminError::Exists(why),
            AuthError::NotFound(why) => AdminError::NotFound(why),
            e @ (AuthError::Store(_) | AuthError::Internal(_)) => AdminError::Failed(e.to_string()),
        }
    }
}

pub type Outcome<T> = Result<T, AdminError>;

pub async fn list_users(auth: &Auth) -> Outcome<Vec<UserEntry>> {
    Ok(accounts::list(auth.store())
        .await?
        .into_iter()
        .map(|a| UserEntry {
            username: a.username,
            role: a.role,
            created: a.created,
        })
        .collect())
}

pub async fn add_user(auth: &Auth, new: &NewUser) -> Outcome<UserEntry> {
    let store = auth.store();
    check_apart(store, &new.username, new.role).await?;
    accounts::add(store, &new.username, new.role, &new.password).await?;
    accounts::get(store, &new.username)
        .await?
        .map(|a| UserEntry {
            username: a.username,
            role: a.role,
            created: a.created,
        })
        .ok_or_else(|| AdminError::Failed("the account was removed as it was made".into()))
}

/// Changes a password; its earlier tokens are revoked.
pub async fn set_password(auth: &Auth, username: &str, password: &str) -> Outcome<()> {
    Ok(auth.set_password(username, password).await?)
}

pub async fn remove_user(auth: &Auth, username: &str) -> Outcome<Removed> {
    if !auth.remove_user(username).await? {
        return Err(AdminError::NotFound(format!(
            "no account named {username:?}"
        )));
    }
    Ok(Removed {
        username: username.to_owned(),
        accounts_left: accounts::any(auth.store()).await?,
    })
}

pub async fn allow_anonymous(auth: &Auth) -> Outcome<()> {
    Ok(accounts::allow_anonymous(auth.store()).await?)
}

pub async fn list_tokens(auth: &Auth) -> Outcome<Vec<TokenEntry>> {
    Ok(tokens::list_issued(auth.store())
        .await?
        .into_iter()
        .map(|c| TokenEntry {
            revoked: auth.check(&c).is_err(),
            id: c.jti,
            name: c.name,
            role: c.role,
            issued: c.iat,
            expires: c.exp,
        })
        .collect())
}

pub async fn issue_token(auth: &Auth, request: &TokenRequest) -> Outcome<IssuedToken> {
    let store = auth.store();
    let TokenRequest {
        name,
        role,
        ttl_secs,
        format,
    } = request;
    accounts::check_username(name)?;
    if *role == Role::Agent {
        check_host_name(name)?;
    }
    check_apart(store, name, *role).await?;
    if *ttl_secs == 0 {
        return Err(AdminError::Invalid(
            "a token valid for no time: give ttl_secs > 0".into(),
        ));
    }
    let ttl = Duration::from_secs(*ttl_secs);
    let (token, claims) = match format {
        TokenFormat::Nest => {
            if *role != Role::Agent {
                return Err(AdminError::Invalid(
                    "a Nest token is a host's: issue it with role agent".into(),
                ));
            }
            crate::auth::nest::issue(store, name, ttl).await?
        }
        TokenFormat::Jwt => {
            let issued = auth
                .issue(name, name, *role, ttl, TokenKind::Issued)
                .await?;
            (issued.token, issued.claims)
        }
    };
    if *role == Role::Agent {
        // The fleet lists the host from now on, as never connected.
        crate::fleet::inventory::expect(store.as_ref(), name)
            .await
            .map_err(|e| AdminError::Failed(e.to_string()))?;
    }
    Ok(IssuedToken {
        token,
        id: claims.jti,
        name: claims.name,
        role: claims.role,
        format: *format,
        expires: claims.exp,
    })
}

/// Revokes a listed token by its id, and every refresh of it.
pub async fn revoke_token(auth: &Auth, id: Uuid) -> Outcome<()> {
    let listed = tokens::list_issued(auth.store()).await?;
    if !listed.iter().any(|c| c.jti == id) {
        return Err(AdminError::NotFound(format!(
            "no issued token has id {id} (`token list` shows them; a person's logins end with `token revoke --user NAME`)"
        )));
    }
    Ok(auth.revoke_token(id).await?)
}

/// Revokes every token of a known user (an account, or the name of an
/// issued token).
pub async fn revoke_user_tokens(auth: &Auth, user: &str) -> Outcome<()> {
    known_user(auth.store(), user).await?;
    Ok(auth.revoke_subject(user).await?)
}

pub async fn keys(auth: &Auth) -> Outcome<Vec<KeyEntry>> {
    Ok(tokens::Keys::load(auth.store())
        .await?
        .ids()
        .into_iter()
        .map(|(id, created)| KeyEntry { id, created })
        .collect())
}

pub async fn rotate_key(auth: &Auth) -> Outcome<KeyEntry> {
    let id = tokens::rotate(auth.store()).await?;
    keys(auth)
        .await?
        .into_iter()
        .find(|k| k.id == id)
        .ok_or_else(|| AdminError::Failed(format!("the new key {id} is not in the store")))
}

pub async fn retire_key(auth: &Auth, id: &str) -> Outcome<()> {
    if !tokens::retire(auth.store(), id).await? {
        return Err(AdminError::NotFound(format!("no signing key {id:?}")));
    }
    Ok(())
}

pub async fn get_settings(auth: &Auth, user: &str) -> Outcome<BTreeMap<String, String>> {
    known_user(auth.store(), user).await?;
    Ok(user_settings::get(auth.store(), user).await?)
}

pub async fn set_setting(
    auth: &Auth,
    user: &str,
    setting: &str,
    value: &str,
) -> Outcome<BTreeMap<String, String>> {
    known_user(auth.store(), user).await?;
    Ok(user_settings::set(auth.store(), user, setting, value).await?)
}

/// A user is known when an account or an issued token (a host's) bears
/// its name.
async fn known_user(store: &Arc<dyn Store>, user: &str) -> Outcome<()> {
    if accounts::get(store, user).await?.is_some()
        || tokens::list_issued(store)
            .await?
            .iter()
            .any(|c| c.sub == user)
    {
        return Ok(());
    }
    Err(AdminError::NotFound(format!(
        "no user named {user:?}: no account nor issued token bears that name (`user list`, `token list`)"
    )))
}

/// A host may not be named like a ctl command (`NAME_ctl_` and six hex
/// digits): host NAME's token allows those names for its own ctl.
fn check_host_name(name: &str) -> Outcome<()> {
    match CtlName::owner(name) {
        Some(owner) => Err(AdminError::Invalid(format!(
            "{name:?} has the shape of a ctl command's name (host {owner:?}'s): a host may not be named so"
        ))),
        None => Ok(()),
    }
}

/// People and hosts are named apart. A person's token also allows the
/// person's name followed by `_` and anything (`alice_ctl`), so a host named
/// `alice_db` could be taken by alice while its agent is offline: a host
/// name under a person's names is refused, and so is a person's name over a
/// host's (from the accounts and the issued tokens).
async fn check_apart(store: &Arc<dyn Store>, name: &str, role: Role) -> Outcome<()> {
    let under = |person: &str, host: &str| {
        host.strip_prefix(person)
            .is_some_and(|rest| rest.starts_with('_'))
    };
    let mut hosts = Vec::new();
    let mut people = Vec::new();
    for a in accounts::list(store).await? {
        if a.role == Role::Agent {
            hosts.push(a.username);
        } else {
            people.push(a.username);
        }
    }
    for c in tokens::list_issued(store).await? {
        if c.is_host() {
            hosts.push(c.name);
        } else {
            people.push(c.name);
        }
    }
    if role == Role::Agent {
        if let Some(person) = people.iter().find(|p| under(p, name)) {
            return Err(AdminError::Invalid(format!(
                "host {name:?} would be among the names {person:?}'s tokens allow ({person}_…): name the host apart"
            )));
        }
    } else if let Some(host) = hosts.iter().find(|h| under(name, h)) {
        return Err(AdminError::Invalid(format!(
            "{name:?}'s tokens would allow host {host:?}'s name ({name}_…): name the person apart"
        )));
    }
    Ok(())
}
