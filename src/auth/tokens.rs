//! Signed tokens: who the bearer is, which client name it may take, what
//! it may do, and until when.
//!
//! A token is a JWT signed with HMAC-SHA256 by a key every replica reads
//! from the [`Store`] (table `auth-keys`), so any replica verifies any token
//! on its own: no session table is shared, only revocations are. The key a
//! token was signed with is named in its header (`kid`): a new key
//! ([`rotate`]) signs every token issued after it, and the older ones keep
//! verifying the tokens they signed until they are retired ([`retire`]).
//! Two replicas that both find no key and create one at once each sign
//! with their own, and both verify: nothing needs to be unique.
//!
//! Long-lived tokens (`concierge token issue`) are listed in the table
//! `auth-tokens` (their claims, never the token) so they can be shown and
//! revoked by id.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use super::{now_ms, now_secs, AuthError, Role};
use crate::cluster::store::{Store, Table};
use crate::protocol::CtlName;

/// The signing keys, by key id.
pub const KEYS: Table = Table::new("auth-keys");
/// Long-lived tokens' claims, by token id.
pub const ISSUED: Table = Table::new("auth-tokens");

/// Bytes of a signing key (HMAC-SHA256 wants at least 32).
const KEY_BYTES: usize = 32;

/// What a token says. `sub` is the account (or, for a host token, the
/// host's name); `name` the client name it may identify as. A person's
/// token (any role but `agent`) also allows `name_` followed by anything,
/// for that person's extra clients (`alice_ctl`, a console); a host token
/// (role `agent`) names exactly one host, so that host `web` cannot take
/// the name of host `web_db`: besides its name it allows only its ctl
/// commands' names (`web_ctl_` and six hex digits, [`CtlName`]), which no
/// host may have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub name: String,
    pub role: Role,
    /// The token's id, for revocation.
    pub jti: Uuid,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
    pub kind: TokenKind,
    /// The token's family: the id of the login's (or the issued) token
    /// that refreshes descend from; revoking that id revokes all of them.
    /// Nil in a token from before families: its own id.
    #[serde(default)]
    pub fam: Uuid,
    /// The family's end (seconds): no refresh gives a token valid past it.
    /// 0 in a token from before families: its own expiry.
    #[serde(default)]
    pub fexp: u64,
    /// Issued at, in milliseconds, for revocations of every token of a
    /// subject issued before a moment (a password change). 0 in a token
    /// from before: the start of its `iat` second.
    #[serde(default)]
    pub iat_ms: u64,
    /// The id of the key that signed it (as verified: the header's), so
    /// that retiring that key ends it; empty for a token that is not signed
    /// (a Nest token).
    #[serde(default)]
    pub kid: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// From a username and password (`POST /auth/token`), or a refresh.
    Login,
    /// Issued by `concierge token issue`, for a host or a program.
    Issued,
}

impl Claims {
    /// Whether this is a host's token (role `agent`), not a person's.
    pub fn is_host(&self) -> bool {
        self.role == Role::Agent
    }

    /// The family this token belongs to (see [`Claims::fam`]).
    pub fn family(&self) -> Uuid {
        if self.fam.is_nil() {
            self.jti
        } else {
            self.fam
        }
    }

    /// When the family ends (see [`Claims::fexp`]).
    pub fn family_end(&self) -> u64 {
        if self.fexp == 0 {
            self.exp
        } else {
            self.fexp
        }
    }

    /// When it was issued, in milliseconds (see [`Claims::iat_ms`]).
    pub fn issued_ms(&self) -> u64 {
        if self.iat_ms == 0 {
            self.iat.saturating_mul(1000)
        } else {
            self.iat_ms
        }
    }

    /// Whether the token lets its bearer identify as `name`.
    pub fn allows_name(&self, name: &str) -> bool {
        if name == self.name {
            return true;
        }
        if self.is_host() {
            return CtlName::owner(name) == Some(self.name.as_str());
        }
        name.strip_prefix(self.name.as_str())
            .is_some_and(|rest| rest.starts_with('_'))
    }

    /// The names [`allows_name`](Claims::allows_name) accepts, as a refusal
    /// tells them.
    pub fn allowed_names(&self) -> String {
        if self.is_host() {
            format!(
                "only the host name {0:?} (or {0}_ctl_XXXXXX for ctl)",
                self.name
            )
        } else {
            format!("the name {0:?} (or {0}_...)", self.name)
        }
    }
}

/// A signing key as stored.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredKey {
    /// When it was made, in seconds since the Unix epoch (`token keys`).
    pub created: u64,
    /// Its rank among the keys: the greatest signs. Milliseconds since the
    /// Unix epoch, and more than every key there was when it was made
    /// ([`rotate`]): ranked by `created` alone, a key made in the same
    /// second as the one before it signed only if its random id happened
    /// to sort after that one's, so `token rotate-key` right after the first
    /// key (or after another rotation) often left the old key signing. 0
    /// in a key from before: its `created` second.
    #[serde(default)]
    rank: u64,
    secret: Vec<u8>,
}

impl StoredKey {
    /// Its rank: the field's, or in a key from before it, its `created`
    /// second in milliseconds.
    fn rank(&self) -> u64 {
        if self.rank == 0 {
            self.created.saturating_mul(1000)
        } else {
            self.rank
        }
    }
}

/// The keys a node signs and verifies with, loaded from the store.
#[derive(Default, Clone)]
pub struct Keys {
    /// By key id, with the newest (the one that signs) known.
    keys: Vec<(String, StoredKey)>,
}

impl Keys {
    pub async fn load(store: &Arc<dyn Store>) -> Result<Keys, AuthError> {
        let mut keys = Vec::new();
        for (kid, bytes) in store.list(KEYS).await? {
            let key: StoredKey = serde_json::from_slice(&bytes).map_err(|e| {
                AuthError::Internal(format!("signing key {kid} is unreadable: {e}"))
            })?;
            keys.push((kid, key));
        }
        Ok(Keys { keys })
    }

    fn newest(&self) -> Option<&(String, StoredKey)> {
        self.keys
            .iter()
            .max_by(|a, b| (a.1.rank(), &a.0).cmp(&(b.1.rank(), &b.0)))
    }

    /// Whether the key `kid` is still there (not retired).
    pub fn has(&self, kid: &str) -> bool {
        self.find(kid).is_some()
    }

    fn find(&self, kid: &str) -> Option<&StoredKey> {
        self.keys.iter().find(|(k, _)| k == kid).map(|(_, key)| key)
    }

    /// Key ids and creation times, newest last.
    pub fn ids(&self) -> Vec<(String, u64)> {
        let mut keys: Vec<_> = self.keys.iter().collect();
        keys.sort_by(|a, b| (a.1.rank(), &a.0).cmp(&(b.1.rank(), &b.0)));
        keys.into_iter()
            .map(|(k, v)| (k.clone(), v.created))
            .collect()
    }
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefused {
    /// Not a token of this gateway: malformed, signed by an unknown key, or
    /// altered.
    Invalid,
    Expired,
    Revoked,
}

impl TokenRefused {
    /// Seed 003's `reason`.
    pub fn reason(self) -> &'static str {
        match self {
            TokenRefused::Invalid => "token_invalid",
            TokenRefused::Expired => "token_expired",
            TokenRefused::Revoked => "token_revoked",
        }
    }
}

/// Creates a signing key; the newest key signs from now on. It ranks
/// above every key already there, whatever the clock says (see
/// [`StoredKey`]); two made at once on two replicas both rank above
/// those, and either may sign: both verify.
pub async fn rotate(store: &Arc<dyn Store>) -> Result<String, AuthError> {
    let above = Keys::load(store)
        .await?
        .newest()
        .map_or(0, |(_, key)| key.rank());
    let mut secret = vec![0u8; KEY_BYTES];
    getrandom::fill(&mut secret)
        .map_err(|e| AuthError::Internal(format!("no randomness for a signing key: {e}")))?;
    let kid = Uuid::new_v4().simple().to_string()[..12].to_owned();
    let key = StoredKey {
        created: now_secs(),
        rank: now_ms().max(above.saturating_add(1)),
        secret,
    };
    let bytes = serde_json::to_vec(&key).unwrap_or_default();
    store
        .compare_and_swap(KEYS, &kid, None, Some(bytes))
        .await?;
    Ok(kid)
}

/// Removes a signing key: the tokens it signed stop verifying.
pub async fn retire(store: &Arc<dyn Store>, kid: &str) -> Result<bool, AuthError> {
    Ok(store.delete(KEYS, kid).await?)
}

/// Signs `claims` with the newest key, whose id it sets in them.
pub fn sign(keys: &Keys, claims: &mut Claims) -> Result<String, AuthError> {
    let (kid, key) = keys
        .newest()
        .ok_or_else(|| AuthError::Internal("no signing key".into()))?;
    claims.kid = kid.clone();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.clone());
    let signing = |e| AuthError::Internal(format!("cannot sign a token: {e}"));
    let key = EncodingKey::from_secret(&key.secret).map_err(signing)?;
    jsonwebtoken::encode(&header, claims, &key).map_err(signing)
}

/// Checks a token's signature (in constant time, by the HMAC) and expiry.
/// Revocation is checked by the caller, against its cache.
pub fn verify(keys: &Keys, token: &str) -> Result<Claims, TokenRefused> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRefused::Invalid)?;
    if header.alg != Algorithm::HS256 {
        return Err(TokenRefused::Invalid);
    }
    let kid = header.kid.ok_or(TokenRefused::Invalid)?;
    let key = keys.find(&kid).ok_or(TokenRefused::Invalid)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub"]);
    let key = DecodingKey::from_secret(&key.secret).map_err(|_| TokenRefused::Invalid)?;
    match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
        // jsonwebtoken accepts a token in its expiry second; this does not.
        Ok(mut data) if data.claims.exp > now_secs() => {
            data.claims.kid = kid;
            Ok(data.claims)
        }
        Ok(_) => Err(TokenRefused::Expired),
        Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
            Err(TokenRefused::Expired)
        }
        Err(_) => Err(TokenRefused::Invalid),
    }
}

fn fs_mac(key: &StoredKey, uuid: Uuid) -> Option<Hmac<Sha256>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.secret).ok()?;
    mac.update(b"concierge file server key\0");
    mac.update(uuid.as_bytes());
    Some(mac)
}

/// A session's private file server key: its uuid and a MAC of it by the
/// newest signing key, so any replica can check it without a shared table.
pub fn fs_key(keys: &Keys, uuid: Uuid) -> Option<String> {
    let (_, key) = keys.newest()?;
    let tag = fs_mac(key, uuid)?.finalize().into_bytes();
    Some(format!("{uuid}.{}", URL_SAFE_NO_PAD.encode(tag)))
}

/// The uuid a file server key was made for, if one of the keys made it
/// (compared in constant time).
pub fn check_fs_key(keys: &Keys, fs_key: &str) -> Option<Uuid> {
    let (uuid, tag) = fs_key.split_once('.')?;
    let uuid: Uuid = uuid.parse().ok()?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    keys.keys
        .iter()
        .any(|(_, key)| fs_mac(key, uuid).is_some_and(|mac| mac.verify_slice(&tag).is_ok()))
        .then_some(uuid)
}

/// A long-lived token as listed (its claims, not the token).
pub async fn record_issued(store: &Arc<dyn Store>, claims: &Claims) -> Result<(), AuthError> {
    let bytes = serde_json::to_vec(claims).unwrap_or_default();
    Ok(store.put(ISSUED, &claims.jti.to_string(), bytes).await?)
}

/// Every long-lived token issued and not yet expired (expired ones are
/// dropped from the list as it is read).
pub async fn list_issued(store: &Arc<dyn Store>) -> Result<Vec<Claims>, AuthError> {
    let now = now_secs();
    let mut live = Vec::new();
    for (id, bytes) in store.list(ISSUED).await? {
        match serde_json::from_slice::<Claims>(&bytes) {
            Ok(claims) if claims.exp > now => live.push(claims),
            _ => {
                store.delete(ISSUED, &id).await?;
            }
        }
    }
    live.sort_by_key(|c| c.iat);
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys {
            keys: vec![(
                "k1".into(),
                StoredKey {
                    created: 1,
                    rank: 0,
                    secret: vec![7; KEY_BYTES],
                },
            )],
        }
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            name: "alice".into(),
            role: Role::Operator,
            jti: Uuid::new_v4(),
            iat: now_secs(),
            exp,
            kind: TokenKind::Login,
            fam: Uuid::nil(),
            fexp: 0,
            iat_ms: 0,
            kid: String::new(),
        }
    }

    #[test]
    fn a_signed_token_verifies_and_an_altered_one_does_not() {
        let keys = keys();
        let mut c = claims(now_secs() + 60);
        let token = sign(&keys, &mut c).unwrap();
        assert_eq!(c.kid, "k1");
        assert_eq!(verify(&keys, &token), Ok(c));
        let mut altered = token.clone();
        altered.pop();
        assert_eq!(verify(&keys, &altered), Err(TokenRefused::Invalid));
        assert_eq!(verify(&Keys::default(), &token), Err(TokenRefused::Invalid));
        assert_eq!(verify(&keys, "not a token"), Err(TokenRefused::Invalid));
    }

    #[test]
    fn an_expired_token_is_refused_as_expired() {
        let keys = keys();
        let token = sign(&keys, &mut claims(now_secs() - 1)).unwrap();
        assert_eq!(verify(&keys, &token), Err(TokenRefused::Expired));
    }

    /// jsonwebtoken accepts a token in its expiry second; Concierge does
    /// not: `exp` is the first second it is refused.
    #[test]
    fn a_token_is_refused_in_its_expiry_second() {
        let keys = keys();
        let token = sign(&keys, &mut claims(now_secs())).unwrap();
        assert_eq!(verify(&keys, &token), Err(TokenRefused::Expired));
    }

    #[test]
    fn a_file_server_key_is_checked_against_its_uuid() {
        let keys = keys();
        let uuid = Uuid::new_v4();
        let key = fs_key(&keys, uuid).unwrap();
        assert_eq!(check_fs_key(&keys, &key), Some(uuid));
        let other = key.replacen(&uuid.to_string(), &Uuid::new_v4().to_string(), 1);
        assert_eq!(check_fs_key(&keys, &other), None);
        assert_eq!(check_fs_key(&keys, &uuid.to_string()), None);
        assert_eq!(check_fs_key(&Keys::default(), &key), None);
    }

    #[test]
    fn a_token_allows_its_name_and_names_under_it() {
        let c = claims(0);
        assert!(c.allows_name("alice"));
        assert!(c.allows_name("alice_ctl"));
        assert!(!c.allows_name("alicex"));
        assert!(!c.allows_name("bob"));
    }

    #[test]
    fn a_host_token_allows_its_name_only() {
        let host = Claims {
            name: "web".into(),
            role: Role::Agent,
            ..claims(0)
        };
        assert!(host.allows_name("web"));
        assert!(!host.allows_name("web_db"));
        assert!(host.allows_name("web_ctl_0a9f3c"));
        assert!(!host.allows_name("web_ctl_db"));
        assert!(!host.allows_name("web_db_ctl_0a9f3c"));
        assert!(host.allowed_names().contains("only"));
    }
}
