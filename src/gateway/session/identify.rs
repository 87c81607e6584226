//! IDENTIFY: the native client's first payload.
//!
//! It is checked (the gateway's secret, the protocol version, the name,
//! nickname and tag limits, the token and the names it allows) before the
//! client joins the namespace; frames that arrive while the namespace
//! answers wait, so nothing the client sends overtakes its IDENTIFY.

use actix::prelude::*;

use super::{Native, State};
use crate::auth::Claims;
use crate::namespace::Resume;
use crate::protocol::{self, ClientInfo, Close, CloseCode, DecodeError, PayloadIn};
use crate::session::{refused, Ctx, Session};

impl Session<Native> {
    pub(super) fn on_first_text(
        &mut self,
        decoded: Result<PayloadIn<'_>, DecodeError>,
        ctx: &mut Ctx<Native>,
    ) {
        let payload = match decoded {
            Ok(payload) => payload,
            Err(e) => {
                return self.close(
                    ctx,
                    Close::new(
                        CloseCode::FatalDecode,
                        format!("cannot decode IDENTIFY: {e}"),
                    ),
                );
            }
        };
        let PayloadIn::Identify {
            name,
            nickname,
            version,
            tags,
            secret,
            token,
            presence,
            resume,
            take_over,
        } = payload
        else {
            let kind = payload.kind();
            return self.close(
                ctx,
                Close::new(
                    CloseCode::NoAuth,
                    format!("IDENTIFY must come first, got {kind}"),
                ),
            );
        };
        if let Err(close) = self.check_identity(
            &name,
            nickname.as_deref(),
            &version,
            &tags,
            secret.as_deref(),
        ) {
            return self.close(ctx, close);
        }
        let claims = match self.check_token(&name, token.as_deref()) {
            Ok(claims) => claims,
            Err(close) => return self.close(ctx, close),
        };
        // A client without a token proves it owns its name with a secret.
        let resume = match claims {
            Some(_) => None,
            None => match Resume::new(resume.as_deref()) {
                Ok(resume) => Some(resume),
                Err(close) => return self.close(ctx, close),
            },
        };
        let joining = self.joining(ctx);
        let info = ClientInfo {
            name: name.into_owned(),
            nickname: nickname.map(|n| n.into_owned()),
            uuid: joining.uuid(),
            tags: tags.into_iter().map(|t| t.into_owned()).collect(),
            user: claims.as_ref().map(|c| c.sub.clone()),
            roles: claims.as_ref().map_or_else(Vec::new, |c| {
                c.role.implied().iter().map(|r| r.to_string()).collect()
            }),
        };
        let uuid = info.uuid;
        self.span.record("uuid", tracing::field::display(uuid));
        self.span.record("name", info.name.as_str());
        self.format.state = State::Identifying { uuid };
        joining
            .join(
                info,
                presence.unwrap_or(true),
                take_over.unwrap_or(true),
                resume,
            )
            .into_actor(self)
            .map(move |result, act, ctx| match result {
                Ok(member) => {
                    act.format.state = State::Identified {
                        member,
                        next_seq: 0,
                        claims: claims.clone().map(Box::new),
                    };
                    if let Some(claims) = claims {
                        act.watch_token(claims, ctx);
                    }
                }
                Err(close) => {
                    act.format.state = State::Anonymous;
                    act.close(ctx, close);
                }
            })
            .wait(ctx);
    }

    /// The verified claims of IDENTIFY's token, if it has one; a close when
    /// it has a bad one, or none where one is required, or when it does not
    /// allow `name`.
    fn check_token(&self, name: &str, token: Option<&str>) -> Result<Option<Claims>, Close> {
        let Some(token) = token else {
            if self.auth.required() {
                return Err(Close::new(
                    CloseCode::AuthRequired,
                    "this gateway requires a token in IDENTIFY (POST /auth/token)",
                ));
            }
            return Ok(None);
        };
        let claims = self.auth.verify(token).map_err(refused)?;
        if !claims.allows_name(name) {
            return Err(Close::new(
                CloseCode::NameNotAllowed,
                format!("the token allows {}, not {name:?}", claims.allowed_names()),
            ));
        }
        Ok(Some(claims))
    }

    /// Validates an IDENTIFY against the gateway's secret, version and limits.
    fn check_identity(
        &self,
        name: &str,
        nickname: Option<&str>,
        version: &str,
        tags: &[std::borrow::Cow<'_, str>],
        secret: Option<&str>,
    ) -> Result<(), Close> {
        let s = &self.settings;
        if !s.secret.is_empty()
            && !constant_time_eq(secret.unwrap_or("").as_bytes(), s.secret.as_bytes())
        {
            return Err(Close::new(
                CloseCode::BadSecret,
                "the secret does not match the gateway's",
            ));
        }
        protocol::version_compatible(version).map_err(|e| Close::new(CloseCode::BadVersion, e))?;
        let bad = |reason: String| Err(Close::new(CloseCode::BadAuth, reason));
        if name == protocol::GATEWAY_NAME {
            return bad(format!("the name {name:?} is the gateway's own"));
        }
        if name == protocol::alerts::ALERTS_SERVICE {
            return bad(format!(
                "the name {name:?} is reserved: it is the gateway's publisher of alert events"
            ));
        }
        if name.starts_with(protocol::jobs::JOB_PREFIX) {
            return bad(format!(
                "the name {name:?} is reserved: names that start with {:?} are the gateway's job coordinators'",
                protocol::jobs::JOB_PREFIX
            ));
        }
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return bad(format!(
                "name {name:?} must be letters, digits and underscores"
            ));
        }
        if name.len() > s.max_name_len {
            return bad(format!("name is longer than {} bytes", s.max_name_len));
        }
        if nickname.is_some_and(|n| n.len() > s.max_nickname_len) {
            return bad(format!(
                "nickname is longer than {} bytes",
                s.max_nickname_len
            ));
        }
        if tags.len() > s.max_tags {
            return bad(format!("more than {} tags", s.max_tags));
        }
        if tags.iter().any(|t| t.len() > s.max_tag_len) {
            return bad(format!("a tag is longer than {} bytes", s.max_tag_len));
        }
        Ok(())
    }
}

/// Compares secrets without leaking how long a matching prefix was.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
