//! Client tokens in the Nest bot's format (seeds 000/001): 64 hexadecimal
//! characters, a dot, and the first 8 hexadecimal characters of the SHA-256
//! of the 64 (`e70f…4684f.ddc69770`). Nest hosts send them in
//! `let_me_in_pls`; they cannot carry claims as a signed token does, so the
//! store keeps each one's claims under the SHA-256 of the token (never the
//! token itself), and revocation works on them as on every issued token.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::tokens::{self, Claims, TokenKind};
use super::{now_secs, AuthError, Role};
use crate::cluster::store::{Store, Table};

/// Nest tokens' claims, by the SHA-256 of the token.
pub const NEST_TOKENS: Table = Table::new("nest-tokens");

/// Why a Nest client token was refused: the `message` of the Nest error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NestRefused {
    #[error("client_token is missing")]
    Missing,
    #[error("client_token is not 64 hex characters, a dot and 8 hex characters")]
    Malformed,
    #[error("client_token has a bad checksum")]
    BadChecksum,
    #[error("client_token is unknown")]
    Unknown,
    #[error("client_token is revoked or expired")]
    Revoked,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The checksum part of a token whose first part is `body`.
fn checksum(body: &str) -> String {
    hex(&Sha256::digest(body.as_bytes()))[..8].to_owned()
}

/// Checks the token's shape and checksum.
pub fn check_format(token: &str) -> Result<(), NestRefused> {
    let (body, sum) = token.split_once('.').ok_or(NestRefused::Malformed)?;
    let is_hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !is_hex(body, 64) || !is_hex(sum, 8) {
        return Err(NestRefused::Malformed);
    }
    if checksum(&body.to_ascii_lowercase()) != sum.to_ascii_lowercase() {
        return Err(NestRefused::BadChecksum);
    }
    Ok(())
}

fn key_of(token: &str) -> String {
    hex(&Sha256::digest(token.to_ascii_lowercase().as_bytes()))
}

/// Issues a Nest token for host `name`: returns it and its claims.
pub async fn issue(
    store: &Arc<dyn Store>,
    name: &str,
    ttl: Duration,
) -> Result<(String, Claims), AuthError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| AuthError::Internal(format!("no randomness: {e}")))?;
    let body = hex(&secret);
    let token = format!("{body}.{}", checksum(&body));
    let iat = now_secs();
    let claims = Claims {
        sub: name.to_owned(),
        name: name.to_owned(),
        role: Role::Agent,
        jti: uuid::Uuid::new_v4(),
        iat,
        exp: iat.saturating_add(ttl.as_secs().max(1)),
        kind: TokenKind::Issued,
        fam: uuid::Uuid::nil(),
        fexp: 0,
        iat_ms: 0,
        kid: String::new(),
    };
    let bytes = serde_json::to_vec(&claims).map_err(|e| AuthError::Internal(e.to_string()))?;
    store.put(NEST_TOKENS, &key_of(&token), bytes).await?;
    tokens::record_issued(store, &claims).await?;
    Ok((token, claims))
}

/// The claims of a Nest token, if it is well-formed and issued (whether it
/// is still valid is [`Auth::check`](super::Auth::check)'s to say).
pub async fn lookup(store: &Arc<dyn Store>, token: &str) -> Result<Claims, NestRefused> {
    check_format(token)?;
    let bytes = store
        .get(NEST_TOKENS, &key_of(token))
        .await
        .map_err(|_| NestRefused::Unknown)?
        .ok_or(NestRefused::Unknown)?;
    serde_json::from_slice(&bytes).map_err(|_| NestRefused::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_example_token_checks_out() {
        let seed = "e70f344347c59f6619489ee2b11c453dc9c25b2e33ddc532c73ebbc0b2b4684f.ddc69770";
        assert_eq!(check_format(seed), Ok(()));
        assert_eq!(check_format(&seed.to_ascii_uppercase()), Ok(()));
        assert_eq!(
            check_format(&seed.replace(".ddc69770", ".ddc69771")),
            Err(NestRefused::BadChecksum)
        );
        assert_eq!(check_format("abc.def"), Err(NestRefused::Malformed));
        assert_eq!(check_format(&seed[..64]), Err(NestRefused::Malformed));
    }
}
