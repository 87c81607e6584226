//! A session's token, watched for as long as the session lives.
//!
//! A client that identified with a token is closed when the token expires
//! (4012), or when a revocation or a change of keys that covers it reaches
//! this replica (4013, 4011), whatever its wire format.

use actix::prelude::*;

use super::{Session, Translator};
use crate::auth::{Claims, TokenRefused};
use crate::protocol::{Close, CloseCode};

impl<T: Translator> Session<T> {
    /// Closes the session when `claims` stop holding.
    pub(crate) fn watch_token(&mut self, claims: Claims, ctx: &mut super::Ctx<T>) {
        let left = claims.exp.saturating_sub(crate::auth::now_secs());
        ctx.run_later(std::time::Duration::from_secs(left), |act, ctx| {
            let _entered = act.span.clone().entered();
            act.evict(refused(TokenRefused::Expired), ctx);
        });
        let changes = futures_util::stream::unfold(
            (self.auth.changes(), claims.clone()),
            |(mut rx, claims)| async move {
                use tokio::sync::broadcast::error::RecvError;
                match rx.recv().await {
                    Ok(()) | Err(RecvError::Lagged(_)) => {
                        Some((TokenCheck(claims.clone()), (rx, claims)))
                    }
                    Err(RecvError::Closed) => None,
                }
            },
        );
        ctx.add_stream(changes);
        // A revocation that came between the token's check and this watch
        // (identifying waits on the namespace in between) was announced
        // before anyone listened: check once more, now that changes are
        // followed, so that none falls between the two.
        if let Err(why) = self.auth.check(&claims) {
            self.evict(refused(why), ctx);
        }
    }
}

/// How a refused token closes the socket.
pub(crate) fn refused(why: TokenRefused) -> Close {
    match why {
        TokenRefused::Invalid => Close::new(
            CloseCode::TokenInvalid,
            "the token is not valid on this gateway",
        ),
        TokenRefused::Expired => Close::new(CloseCode::TokenExpired, "the token has expired"),
        TokenRefused::Revoked => Close::new(CloseCode::TokenRevoked, "the token was revoked"),
    }
}

/// Revocations or keys changed: whether the session's token still holds.
struct TokenCheck(Claims);

impl<T: Translator> StreamHandler<TokenCheck> for Session<T> {
    fn handle(&mut self, TokenCheck(claims): TokenCheck, ctx: &mut Self::Context) {
        if let Err(why) = self.auth.check(&claims) {
            let _entered = self.span.clone().entered();
            self.evict(refused(why), ctx);
        }
    }

    /// The token's watch ends with the session; its end must not stop it.
    fn finished(&mut self, _: &mut Self::Context) {}
}
