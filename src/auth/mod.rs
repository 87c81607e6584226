//! Who may connect and what they may do: accounts, signed tokens,
//! revocations, failed-login lock-outs and user settings.
//!
//! Everything here is state in the cluster's [`Store`], so it works the
//! same on a gateway running alone (on disk) and on replicas sharing Redis,
//! and the `concierge user`/`token`/`settings` commands work on it directly
//! beside a running gateway. [`Auth`] is what the gateway holds: it keeps
//! the signing keys and the revocations in memory, verifies tokens without
//! touching the store, and reloads both whenever the store reports a change
//! to them (within a second, on every replica), telling whoever listens
//! ([`Auth::changes`]) so that revoked sockets are closed.

pub mod accounts;
mod lockout;
pub mod nest;
pub mod revocations;
pub mod tokens;
pub mod user_settings;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::broadcast;
use uuid::Uuid;

pub use crate::protocol::Role;
pub use accounts::{Account, LoginRefused};
pub use tokens::{Claims, TokenKind, TokenRefused};

use crate::cluster::store::{Changed, Store, StoreError};
use crate::config::Settings;
use revocations::Revocations;
use tokens::Keys;

/// The token in an `Authorization` header's value: `Bearer TOKEN`.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why an account, token or setting operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A name, password, role or value that cannot be used, and why.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

/// Why a login or a refresh gave no token.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("{}", match .0 { LoginRefused::UserInvalid => "user_invalid", LoginRefused::PasswordInvalid => "password_invalid" })]
    Refused(LoginRefused),
    #[error("{}", .0.reason())]
    Token(TokenRefused),
    /// Too many failed logins for this username or address: try again in
    /// `retry_after` seconds.
    #[error("locked_out")]
    Locked { retry_after: u64 },
    #[error(transparent)]
    Failed(#[from] AuthError),
}

/// A token and what it says.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub claims: Claims,
}

/// The gateway's view of the auth state (see the module documentation).
pub struct Auth {
    store: Arc<dyn Store>,
    keys: ArcSwap<Keys>,
    revoked: ArcSwap<Revocations>,
    /// The store's [`accounts::tokens_required`].
    tokens_required: AtomicBool,
    require: bool,
    validity: Duration,
    /// How long a login's family lives at most (`token_lifetime_secs`).
    lifetime: Duration,
    lockout: lockout::Policy,
    changed: broadcast::Sender<()>,
}

impl Auth {
    /// Loads the keys, the revocations and whether accounts exist, and
    /// follows the store's changes from now on (on the current runtime).
    pub async fn open(store: Arc<dyn Store>, settings: &Settings) -> Result<Arc<Auth>, AuthError> {
        let changes = store.changes();
        let auth = Arc::new(Auth {
            keys: ArcSwap::from_pointee(Keys::load(&store).await?),
            revoked: ArcSwap::from_pointee(Revocations::load(&store).await?),
            tokens_required: AtomicBool::new(accounts::tokens_required(&store).await?),
            require: settings.require_auth,
            validity: Duration::from_secs(settings.token_validity_secs),
            lifetime: Duration::from_secs(settings.token_lifetime_secs),
            lockout: lockout::Policy {
                max_failures: settings.max_failed_logins,
                lockout: Duration::from_secs(settings.login_lockout_secs),
            },
            changed: broadcast::channel(16).0,
            store,
        });
        tokio::spawn(follow(Arc::downgrade(&auth), changes));
        Ok(auth)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether every client must present a token: `require_auth`, or once
    /// the first account was made, until an admin allows anonymous clients
    /// again with no account left.
    pub fn required(&self) -> bool {
        self.require || self.tokens_required.load(Ordering::Relaxed)
    }

    /// Ticks whenever revocations or signing keys changed: tokens that
    /// were valid may no longer be ([`check`](Auth::check) them again).
    pub fn changes(&self) -> broadcast::Receiver<()> {
        self.changed.subscribe()
    }

    /// Verifies a token: signature, expiry, revocation.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenRefused> {
        let claims = tokens::verify(&self.keys.load(), token)?;
        self.check(&claims)?;
        Ok(claims)
    }

    /// Whether verified claims still hold: not expired, not revoked (nor
    /// their family, nor their subject since), signed by a key that has not
    /// been retired (a retired key revokes what it signed).
    pub fn check(&self, claims: &Claims) -> Result<(), TokenRefused> {
        if claims.exp <= now_secs() {
            return Err(TokenRefused::Expired);
        }
        if self.revoked.load().revoked(claims)
            || (!claims.kid.is_empty() && !self.keys.load().has(&claims.kid))
        {
            return Err(TokenRefused::Revoked);
        }
        Ok(())
    }

    /// The file server key for a session (see [`tokens::fs_key`]).
    pub async fn fs_key(&self, uuid: Uuid) -> Result<String, AuthError> {
        self.ensure_key().await?;
        tokens::fs_key(&self.keys.load(), uuid)
            .ok_or_else(|| AuthError::Internal("no signing key".into()))
    }

    /// The session uuid a file server key belongs to, if it is genuine.
    pub fn check_fs_key(&self, fs_key: &str) -> Option<Uuid> {
        tokens::check_fs_key(&self.keys.load(), fs_key)
    }

    /// Creates the first signing key if there is none.
    pub async fn ensure_key(&self) -> Result<(), AuthError> {
        if self.keys.load().ids().is_empty() {
            tokens::rotate(&self.store).await?;
            self.reload(Some(tokens::KEYS.name())).await?;
        }
        Ok(())
    }

    /// Signs the first token of a new family, valid for `ttl`, creating the
    /// first signing key if there is none. The family is named by this
    /// token's id; a login's family ends `token_lifetime_secs` from now, an
    /// issued token's with the token. An issued token is listed.
    pub async fn issue(
        &self,
        sub: &str,
        name: &str,
        role: Role,
        ttl: Duration,
        kind: TokenKind,
    ) -> Result<Issued, AuthError> {
        let jti = Uuid::new_v4();
        let fexp = now_secs().saturating_add(match kind {
            TokenKind::Login => self.lifetime.as_secs(),
            TokenKind::Issued => ttl.as_secs().max(1),
        });
        let claims = Claims {
            sub: sub.to_owned(),
            name: name.to_owned(),
            role,
            jti,
            iat: 0,
            exp: 0,
            kind,
            fam: jti,
            fexp,
            iat_ms: 0,
            kid: String::new(),
        };
        let issued = self.sign(claims, ttl).await?;
        if kind == TokenKind::Issued {
            tokens::record_issued(&self.store, &issued.claims).await?;
        }
        Ok(issued)
    }

    /// Signs `claims` as issued now, valid for `ttl` but not past their
    /// family's end, creating the first signing key if there is none.
    async fn sign(&self, mut claims: Claims, ttl: Duration) -> Result<Issued, AuthError> {
        self.ensure_key().await?;
        claims.iat_ms = now_ms();
        claims.iat = claims.iat_ms / 1000;
        claims.exp = claims
            .iat
            .saturating_add(ttl.as_secs().max(1))
            .min(claims.family_end());
        let token = tokens::sign(&self.keys.load(), &mut claims)?;
        Ok(Issued { token, claims })
    }

    /// A username and password for a token (seed 003's authenticate),
    /// counting failures per username and source address.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        source: Option<IpAddr>,
    ) -> Result<Issued, LoginError> {
        if let Some(retry_after) = lockout::locked(&self.store, username, source).await? {
            return Err(LoginError::Locked { retry_after });
        }
        let attempt = match lockout::attempt(&self.store, self.lockout, username, source).await? {
            Ok(attempt) => attempt,
            Err(retry_after) => return Err(LoginError::Locked { retry_after }),
        };
        match accounts::check(&self.store, username, password).await? {
            Ok(account) => {
                attempt.succeeded(&self.store).await?;
                Ok(self
                    .issue(
                        &account.username,
                        &account.username,
                        account.role,
                        self.validity,
                        TokenKind::Login,
                    )
                    .await?)
            }
            Err(refused) => {
                attempt.failed(&self.store).await?;
                Err(LoginError::Refused(refused))
            }
        }
    }

    /// A new token for the bearer of a valid one: the same subject, name
    /// and family, a new id and validity, never past the family's end (so
    /// revoking the family's id revokes it, and refreshing never extends a
    /// login beyond `token_lifetime_secs`). A login token's account must
    /// still exist, and gives its current role.
    pub async fn refresh(&self, token: &str) -> Result<Issued, LoginError> {
        let presented = self.verify(token).map_err(LoginError::Token)?;
        let (role, ttl) = match presented.kind {
            TokenKind::Login => match accounts::get(&self.store, &presented.sub).await? {
                Some(account) => (account.role, self.validity),
                None => return Err(LoginError::Token(TokenRefused::Revoked)),
            },
            TokenKind::Issued => (
                presented.role,
                Duration::from_secs(presented.exp.saturating_sub(presented.iat)),
            ),
        };
        let claims = Claims {
            role,
            jti: Uuid::new_v4(),
            fam: presented.family(),
            fexp: presented.family_end(),
            ..presented
        };
        Ok(self.sign(claims, ttl).await?)
    }

    /// Revokes one token and the tokens refreshed from it (the family it
    /// names), until they would have expired: a listed long-lived token's
    /// family end, or else the longest a login's family lives.
    pub async fn revoke_token(&self, jti: Uuid) -> Result<(), AuthError> {
        let longest = self.lifetime.max(self.validity).as_secs();
        let until = tokens::list_issued(&self.store)
            .await?
            .iter()
            .find(|c| c.jti == jti)
            .map_or(now_secs().saturating_add(longest), Claims::family_end);
        revocations::revoke_token(&self.store, jti, until).await?;
        self.reload(Some(revocations::REVOKED.name())).await
    }

    /// Revokes every token of `sub` issued so far.
    pub async fn revoke_subject(&self, sub: &str) -> Result<(), AuthError> {
        revocations::revoke_subject(&self.store, sub).await?;
        self.reload(Some(revocations::REVOKED.name())).await
    }

    /// Changes an account's password and revokes every token issued to it
    /// so far: whoever held the old password (or a token got with it) is
    /// out, open sockets included, on every replica.
    pub async fn set_password(&self, username: &str, password: &str) -> Result<(), AuthError> {
        accounts::set_password(&self.store, username, password).await?;
        self.revoke_subject(username).await
    }

    /// Removes an account, its settings, and revokes its tokens at once;
    /// whether it existed.
    pub async fn remove_user(&self, username: &str) -> Result<bool, AuthError> {
        let existed = accounts::remove(&self.store, username).await?;
        if existed {
            self.revoke_subject(username).await?;
            user_settings::forget(&self.store, username).await?;
        }
        Ok(existed)
    }

    /// Reloads what `table` holds (`None`: everything); when keys or
    /// revocations were among it, tells [`changes`](Auth::changes) once.
    async fn reload(&self, table: Option<&str>) -> Result<(), AuthError> {
        let all = table.is_none();
        let keys = all || table == Some(tokens::KEYS.name());
        let revoked = all || table == Some(revocations::REVOKED.name());
        if keys {
            self.keys.store(Arc::new(Keys::load(&self.store).await?));
        }
        if revoked {
            self.revoked
                .store(Arc::new(Revocations::load(&self.store).await?));
        }
        if all || table == Some(accounts::USERS.name()) || table == Some(accounts::STATE.name()) {
            let required = accounts::tokens_required(&self.store).await?;
            self.tokens_required.store(required, Ordering::Relaxed);
        }
        if keys || revoked {
            let _ = self.changed.send(());
        }
        Ok(())
    }
}

/// Reloads what changed in the store, for as long as the [`Auth`] lives. A
/// reload that fails (the store is unreachable) is retried on the next
/// change, and every few seconds until it succeeds.
async fn follow(auth: Weak<Auth>, mut changes: broadcast::Receiver<Changed>) {
    let mut stale = false;
    loop {
        let next = tokio::time::timeout(Duration::from_secs(5), changes.recv()).await;
        let Some(auth) = auth.upgrade() else { return };
        let table = match next {
            Ok(Ok(Changed::Key { table, .. })) if !stale => Some(table),
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => None,
            Ok(Err(broadcast::error::RecvError::Closed)) => return,
            Err(_) if stale => None,
            Err(_) => continue,
        };
        stale = match auth.reload(table.as_deref()).await {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload accounts, keys or revocations");
                true
            }
        };
    }
}
