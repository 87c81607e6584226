//! Revoked tokens: the one piece of token state the replicas share.
//!
//! A token is revoked by its id (`token revoke ID`), which revokes its
//! family too (every token refreshed from it, see [`Claims::fam`]), or with
//! every token of its subject issued up to now (`token revoke --user`,
//! `user remove`, `user passwd`), to the millisecond.
//! Each replica keeps the whole table in memory and reloads it when the
//! store reports a change to it, which it does within a second on every
//! node; a token-id record is dropped once the token would have expired
//! anyway.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::tokens::Claims;
use super::{now_ms, now_secs, AuthError};
use crate::cluster::store::{Store, Table};

pub const REVOKED: Table = Table::new("auth-revoked");

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Record {
    /// One token, until it expires.
    Token { until: u64 },
    /// Every token of a subject issued before `before_ms` (milliseconds),
    /// or, in a record from before it, before `before` (seconds).
    Subject {
        before: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before_ms: Option<u64>,
    },
}

fn token_key(jti: Uuid) -> String {
    format!("token:{jti}")
}

fn subject_key(sub: &str) -> String {
    format!("subject:{sub}")
}

/// The revocations as loaded from the store.
#[derive(Debug, Default, Clone)]
pub struct Revocations {
    /// Revoked token ids, each of which also revokes its family.
    tokens: HashSet<Uuid>,
    /// By subject, the millisecond before which its tokens are revoked.
    subjects: HashMap<String, u64>,
}

impl Revocations {
    pub async fn load(store: &Arc<dyn Store>) -> Result<Revocations, AuthError> {
        let now = now_secs();
        let mut loaded = Revocations::default();
        for (key, bytes) in store.list(REVOKED).await? {
            let record: Record = serde_json::from_slice(&bytes)
                .map_err(|e| AuthError::Internal(format!("revocation {key} is unreadable: {e}")))?;
            match (record, key.split_once(':')) {
                (Record::Token { until }, Some(("token", id))) => match id.parse() {
                    Ok(_) if until <= now => {
                        store.delete(REVOKED, &key).await?;
                    }
                    Ok(jti) => {
                        loaded.tokens.insert(jti);
                    }
                    Err(_) => {}
                },
                (Record::Subject { before, before_ms }, Some(("subject", sub))) => {
                    let before_ms = before_ms.unwrap_or(before.saturating_mul(1000));
                    loaded.subjects.insert(sub.to_owned(), before_ms);
                }
                _ => {}
            }
        }
        Ok(loaded)
    }

    pub fn revoked(&self, claims: &Claims) -> bool {
        self.tokens.contains(&claims.jti)
            || self.tokens.contains(&claims.family())
            || self
                .subjects
                .get(&claims.sub)
                .is_some_and(|&before_ms| claims.issued_ms() < before_ms)
    }
}

pub async fn revoke_token(store: &Arc<dyn Store>, jti: Uuid, until: u64) -> Result<(), AuthError> {
    let record = serde_json::to_vec(&Record::Token { until }).unwrap_or_default();
    Ok(store.put(REVOKED, &token_key(jti), record).await?)
}

/// Revokes every token of `sub` issued so far (in this millisecond
/// included).
pub async fn revoke_subject(store: &Arc<dyn Store>, sub: &str) -> Result<(), AuthError> {
    let record = serde_json::to_vec(&Record::Subject {
        before: now_secs() + 1,
        before_ms: Some(now_ms() + 1),
    })
    .unwrap_or_default();
    Ok(store.put(REVOKED, &subject_key(sub), record).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokens::TokenKind;
    use crate::auth::Role;
    use crate::cluster::disk::DiskStore;

    fn issued_at(ms: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            name: "alice".into(),
            role: Role::Operator,
            jti: Uuid::new_v4(),
            iat: ms / 1000,
            exp: u64::MAX,
            kind: TokenKind::Login,
            fam: Uuid::nil(),
            fexp: 0,
            iat_ms: ms,
            kid: String::new(),
        }
    }

    /// "Every token of its subject issued up to now, to the millisecond":
    /// a token of this very millisecond is revoked, one of the next is not.
    #[tokio::test]
    async fn a_subject_revocation_ends_at_the_millisecond_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(DiskStore::open(dir.path().join("db")).unwrap());
        let just_issued = issued_at(now_ms());
        revoke_subject(&store, "alice").await.unwrap();
        let revocations = Revocations::load(&store).await.unwrap();
        assert!(revocations.revoked(&just_issued));
        let before = revocations.subjects["alice"];
        assert!(before > just_issued.iat_ms, "{before}");
        assert!(revocations.revoked(&issued_at(before - 1)));
        assert!(!revocations.revoked(&issued_at(before)));
        let bob = Claims {
            sub: "bob".into(),
            ..issued_at(before - 1)
        };
        assert!(!revocations.revoked(&bob));
    }
}
