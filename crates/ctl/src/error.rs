//! Why a `ctl` command failed, and the exit status each failure gives.

use concierge_client::ClientError;

/// Exit status: the request was answered with an error, or the process
/// `exec --follow` ran failed without an exit code.
pub(crate) const FAILED: u8 = 1;
/// Exit status: the command line is wrong.
pub(crate) const USAGE: u8 = 2;
/// Exit status: the gateway or the host could not be reached, or did not
/// answer in time.
pub(crate) const UNREACHABLE: u8 = 3;

/// Why a command failed, with the exit status it gives.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CtlError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unreachable(String),
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
            CtlError::Refused { .. } | CtlError::Failed(_) => FAILED,
        }
    }
}

impl From<ClientError> for CtlError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Closed { code, reason } => CtlError::Unreachable(format!(
                "the gateway closed the connection: {code} {reason}"
            )),
            other => CtlError::Unreachable(other.to_string()),
        }
    }
}
