//! Why a `ctl` command failed, and the exit status each failure gives: one
//! status per kind of failure, so that a script can tell a gateway that is
//! down from a token it refused, a host that is not there, and a host that
//! answered with an error.

use concierge_client::ClientError;
use concierge_protocol::CloseCode;

/// Exit status: the host answered the request with an error, or the
/// process `exec --follow` ran failed without an exit code.
pub(crate) const FAILED: u8 = 1;
/// Exit status: the command line is wrong (clap's usage errors exit with
/// it too).
pub(crate) const USAGE: u8 = 2;
/// Exit status: the gateway could not be reached, broke the connection,
/// or did not answer in time.
pub(crate) const UNREACHABLE: u8 = 3;
/// Exit status: the gateway refused the token (or wanted one).
pub(crate) const AUTH: u8 = 4;
/// Exit status: the host is not connected to the gateway, left, or did not
/// answer in time.
pub(crate) const NO_HOST: u8 = 5;
/// Exit status: a job ran, and did not succeed on every host (`ctl run`,
/// `ctl job rerun`): an exit code other than 0, a failure, a timeout, a
/// host offline, skipped or cancelled; the summary says which.
pub(crate) const SOME_HOSTS_FAILED: u8 = 6;

/// The exit statuses of `ctl`, for the end of each command's `--help`.
pub fn exit_statuses() -> String {
    format!(
        "Exit status:\n  \
         0  done\n  \
         {FAILED}  the host answered with an error (its reason and description are printed)\n  \
         {USAGE}  the command line is wrong\n  \
         {UNREACHABLE}  the gateway cannot be reached, broke the connection or did not answer in time\n  \
         {AUTH}  the gateway refused the token: missing, invalid, expired, revoked, or not for this name\n  \
         {NO_HOST}  the host is not connected to the gateway, left, or did not answer in time\n  \
         {SOME_HOSTS_FAILED}  a job (`run`, `job rerun`) did not succeed on every host (the summary says which)\n  \
         `exec --follow` and `output --follow` exit as the process did (128 + the signal's\n  \
         number when a signal ended it)"
    )
}

/// Why a command failed, with the exit status it gives.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CtlError {
    #[error("{0}")]
    Usage(String),
    /// The gateway is not there, or stopped answering.
    #[error("{0}")]
    Unreachable(String),
    /// The gateway closed the connection over the token.
    #[error("{0}")]
    Auth(String),
    /// The host is not there, or stopped answering.
    #[error("{0}")]
    NoHost(String),
    /// The agent answered with an error (already printed under --json).
    #[error("{host}: {reason}: {desc}")]
    Refused {
        host: String,
        reason: String,
        desc: String,
    },
    #[error("{0}")]
    Failed(String),
}

impl CtlError {
    pub(crate) fn status(&self) -> u8 {
        match self {
            CtlError::Usage(_) => USAGE,
            CtlError::Unreachable(_) => UNREACHABLE,
            CtlError::Auth(_) => AUTH,
            CtlError::NoHost(_) => NO_HOST,
            CtlError::Refused { .. } | CtlError::Failed(_) => FAILED,
        }
    }
}

/// What went wrong with the token, and what to do, when the gateway
/// closed the connection with `code` over it; `None` when `code` is not
/// about the token.
fn refused_token(code: u16, reason: &str) -> Option<String> {
    let close = [
        CloseCode::AuthRequired,
        CloseCode::TokenInvalid,
        CloseCode::TokenExpired,
        CloseCode::TokenRevoked,
        CloseCode::NameNotAllowed,
    ]
    .into_iter()
    .find(|c| c.code() == code)?;
    let what = match close {
        CloseCode::AuthRequired => "the gateway requires a token and none was given",
        CloseCode::NameNotAllowed => "the gateway refused the token for the name ctl takes",
        _ => "the gateway refused the token",
    };
    Some(format!(
        "{what} ({code} {reason}): set CONCIERGE_TOKEN (or --token) to a token from \
         `concierge token issue`, or run `concierge login` to keep one"
    ))
}

impl From<ClientError> for CtlError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Closed { code, reason } => match refused_token(code, &reason) {
                Some(message) => CtlError::Auth(message),
                None => CtlError::Unreachable(format!(
                    "the gateway closed the connection: {code} {reason}"
                )),
            },
            e @ ClientError::Connect { .. } => CtlError::Unreachable(format!(
                "{e} (is the gateway running there? --url or CONCIERGE_URL names it)"
            )),
            other => CtlError::Unreachable(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_of_the_token_is_an_authentication_failure() {
        for close in [
            CloseCode::AuthRequired,
            CloseCode::TokenInvalid,
            CloseCode::TokenExpired,
            CloseCode::TokenRevoked,
            CloseCode::NameNotAllowed,
        ] {
            let e = CtlError::from(ClientError::Closed {
                code: close.code(),
                reason: "refused".into(),
            });
            assert_eq!(e.status(), AUTH, "{close:?}: {e}");
            assert!(e.to_string().contains("CONCIERGE_TOKEN"), "{e}");
        }
        let taken = CtlError::from(ClientError::Closed {
            code: CloseCode::TakenOver.code(),
            reason: "taken over".into(),
        });
        assert_eq!(taken.status(), UNREACHABLE, "{taken}");
    }
}
