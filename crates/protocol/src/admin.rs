//! The bodies of the gateway's admin API (`/admin/…`, PROTOCOL.md section
//! 9.2): what `concierge user`, `token` and `settings` send and read, and
//! what the gateway answers, in one place for both sides.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Role;

/// An account, as `GET /admin/users` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    pub username: String,
    pub role: Role,
    /// When it was created, seconds since the Unix epoch.
    pub created: u64,
}

/// `POST /admin/users`: a new account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    pub role: Role,
    pub password: String,
}

/// `PUT /admin/users/{name}/password`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    pub password: String,
}

/// `DELETE /admin/users/{name}`: the account is gone and its tokens are
/// revoked; whether any account is left (tokens stay required either way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub username: String,
    pub accounts_left: bool,
}

/// A long-lived token, as `GET /admin/tokens` lists it (never the token
/// itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    /// Issued and expires at, seconds since the Unix epoch.
    pub issued: u64,
    pub expires: u64,
    pub revoked: bool,
}

/// The kinds of token `POST /admin/tokens` issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenFormat {
    /// A JWT, for concierge clients.
    #[default]
    Jwt,
    /// A Nest bot host's `client_token` (role agent).
    Nest,
}

/// `POST /admin/tokens`: a long-lived token for a host or a program.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The client name it may identify as (also NAME_anything), and its user.
    pub name: String,
    pub role: Role,
    /// How long it is valid, in seconds.
    pub ttl_secs: u64,
    #[serde(default)]
    pub format: TokenFormat,
}

/// The answer to a [`TokenRequest`]: the token, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IssuedToken {
    pub token: String,
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub format: TokenFormat,
    pub expires: u64,
}

/// A signing key (its id; never the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub id: String,
    /// When it was made, seconds since the Unix epoch.
    pub created: u64,
}

/// `PUT /admin/users/{name}/settings/{setting}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingValue {
    pub value: String,
}

/// Every failure's body, beside its HTTP status: a short machine word
/// (`bad_request`, `not_found`, `exists`, `forbidden`, `unauthorized`,
/// `unavailable`) and a sentence for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminFailure {
    pub reason: String,
    pub desc: String,
}
