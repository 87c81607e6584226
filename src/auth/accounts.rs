//! Accounts: a username, a role and an argon2id password hash, one record
//! each in the cluster's [`Store`] (on disk alone, in Redis in a cluster).
//!
//! Passwords are hashed and checked on the blocking pool: argon2id is slow
//! on purpose (tens of milliseconds), and a worker thread must not stall
//! its sockets for it.

use std::sync::{Arc, LazyLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

use super::{now_secs, AuthError, Role};
use crate::cluster::store::{Store, Table};

/// One record per account, keyed by username.
pub const USERS: Table = Table::new("users");

/// Gateway-wide auth state: the record [`REQUIRED`] once tokens were
/// required.
pub const STATE: Table = Table::new("auth-state");

/// The record of [`STATE`] that says tokens are required: written before the
/// first account is, and kept when the last one is removed, so removing
/// every account does not open the gateway to anonymous clients again. Only
/// [`allow_anonymous`] removes it.
pub const REQUIRED: &str = "tokens-required";

/// Longest username, as for client names.
pub const MAX_USERNAME_LEN: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub username: String,
    pub role: Role,
    /// When it was created, in seconds since the Unix epoch.
    pub created: u64,
    /// The argon2id hash in PHC string form (salt and parameters included).
    password: String,
}

/// Why a username and password were refused, in seed 003's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefused {
    /// No account has that name.
    UserInvalid,
    /// The password does not match.
    PasswordInvalid,
}

/// Usernames are what client names are made of (letters, digits and
/// underscores), since a user's token lets it identify as its username.
pub fn check_username(name: &str) -> Result<(), AuthError> {
    if name.is_empty()
        || name.len() > MAX_USERNAME_LEN
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(AuthError::Invalid(format!(
            "username {name:?} must be 1 to {MAX_USERNAME_LEN} letters, digits and underscores"
        )));
    }
    Ok(())
}

fn check_password_text(password: &str) -> Result<(), AuthError> {
    if password.chars().count() < 8 {
        return Err(AuthError::Invalid(
            "a password has at least 8 characters".into(),
        ));
    }
    Ok(())
}

async fn hash(password: String) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AuthError::Internal(format!("cannot hash a password: {e}")))
    })
    .await
    .map_err(|e| AuthError::Internal(format!("password hashing did not finish: {e}")))?
}

/// A hash of nothing anyone knows, checked against when the user does not
/// exist, so that an unknown user costs the same time as a wrong password.
static DUMMY: LazyLock<String> = LazyLock::new(|| {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(b"no account has this password", &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
});

async fn verify(password: String, phc: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&phc)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

fn decode(bytes: &[u8]) -> Result<Account, AuthError> {
    serde_json::from_slice(bytes)
        .map_err(|e| AuthError::Internal(format!("an account record is unreadable: {e}")))
}

fn encode(account: &Account) -> Vec<u8> {
    serde_json::to_vec(account).unwrap_or_default()
}

/// Creates an account; an error if one has that name.
pub async fn add(
    store: &Arc<dyn Store>,
    username: &str,
    role: Role,
    password: &str,
) -> Result<Account, AuthError> {
    check_username(username)?;
    check_password_text(password)?;
    let account = Account {
        username: username.to_owned(),
        role,
        created: now_secs(),
        password: hash(password.to_owned()).await?,
    };
    // First, so that no account ever exists without it.
    require_tokens(store).await?;
    if !store
        .compare_and_swap(USERS, username, None, Some(encode(&account)))
        .await?
    {
        return Err(AuthError::Exists(format!(
            "an account named {username:?} exists"
        )));
    }
    Ok(account)
}

pub async fn get(store: &Arc<dyn Store>, username: &str) -> Result<Option<Account>, AuthError> {
    match store.get(USERS, username).await? {
        Some(bytes) => decode(&bytes).map(Some),
        None => Ok(None),
    }
}

/// Every account, by username.
pub async fn list(store: &Arc<dyn Store>) -> Result<Vec<Account>, AuthError> {
    store
        .list(USERS)
        .await?
        .iter()
        .map(|(_, bytes)| decode(bytes))
        .collect()
}

/// Whether any account exists.
pub async fn any(store: &Arc<dyn Store>) -> Result<bool, AuthError> {
    Ok(!store.list(USERS).await?.is_empty())
}

/// Whether the store requires tokens: an account exists, or did once and
/// no admin has allowed anonymous clients since. A store whose accounts
/// predate the [`REQUIRED`] record gets it here.
pub async fn tokens_required(store: &Arc<dyn Store>) -> Result<bool, AuthError> {
    if store.get(STATE, REQUIRED).await?.is_some() {
        return Ok(true);
    }
    if any(store).await? {
        require_tokens(store).await?;
        return Ok(true);
    }
    Ok(false)
}

async fn require_tokens(store: &Arc<dyn Store>) -> Result<(), AuthError> {
    let since = serde_json::json!({ "since": now_secs() }).to_string();
    store
        .compare_and_swap(STATE, REQUIRED, None, Some(since.into_bytes()))
        .await?;
    Ok(())
}

/// Lets clients without a token in again (`concierge user
/// allow-anonymous`): refused while any account exists, since an account
/// requires tokens anyway.
pub async fn allow_anonymous(store: &Arc<dyn Store>) -> Result<(), AuthError> {
    if any(store).await? {
        return Err(AuthError::Invalid(
            "accounts exist, and tokens stay required while any does: remove them first".into(),
        ));
    }
    store.delete(STATE, REQUIRED).await?;
    Ok(())
}

/// Replaces an account's password; an error if there is no such account.
pub async fn set_password(
    store: &Arc<dyn Store>,
    username: &str,
    password: &str,
) -> Result<(), AuthError> {
    check_password_text(password)?;
    let hashed = hash(password.to_owned()).await?;
    // Swapped against what was read, so a concurrent removal is not undone.
    loop {
        let Some(old) = store.get(USERS, username).await? else {
            return Err(AuthError::NotFound(format!(
                "no account named {username:?}"
            )));
        };
        let mut account = decode(&old)?;
        account.password = hashed.clone();
        if store
            .compare_and_swap(USERS, username, Some(old), Some(encode(&account)))
            .await?
        {
            return Ok(());
        }
    }
}

/// Removes an account; whether there was one. The caller revokes its
/// tokens ([`Auth::remove_user`](super::Auth::remove_user) does both).
pub(super) async fn remove(store: &Arc<dyn Store>, username: &str) -> Result<bool, AuthError> {
    Ok(store.delete(USERS, username).await?)
}

/// The account, if the password is its own.
pub async fn check(
    store: &Arc<dyn Store>,
    username: &str,
    password: &str,
) -> Result<Result<Account, LoginRefused>, AuthError> {
    let account = match check_username(username) {
        Ok(()) => get(store, username).await?,
        Err(_) => None,
    };
    let phc = account
        .as_ref()
        .map_or_else(|| DUMMY.clone(), |a| a.password.clone());
    let matches = verify(password.to_owned(), phc).await;
    Ok(match account {
        None => Err(LoginRefused::UserInvalid),
        Some(_) if !matches => Err(LoginRefused::PasswordInvalid),
        Some(account) => Ok(account),
    })
}
