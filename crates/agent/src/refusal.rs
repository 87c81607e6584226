//! The gateway's refusals that retrying does not cure: a token it does not
//! accept, a name it does not allow, a name another agent holds. The agent
//! stops on them with an exit status saying which and a message saying
//! what to do (or, with `retry_refused`, says so once and retries rarely),
//! instead of reconnecting forever as it does after a transient failure.

use std::time::Duration;

use concierge_protocol::CloseCode;

/// Exit status: the gateway refused the token, or wants one and got none.
pub const TOKEN: u8 = 4;
/// Exit status: the gateway does not accept the name (or not for this token).
pub const NAME: u8 = 5;
/// Exit status: another agent is connected with this name.
pub const NAME_IN_USE: u8 = 6;

/// The first wait after a refusal with `retry_refused`.
pub const RETRY_FIRST: Duration = Duration::from_secs(60);
/// The longest wait after refusals with `retry_refused`.
pub const RETRY_MAX: Duration = Duration::from_secs(15 * 60);

/// The exit statuses of `concierge agent`, for its `--help`.
pub fn exit_statuses() -> String {
    format!(
        "Exit status of the agent:\n  \
         0  stopped on SIGTERM or SIGINT\n  \
         2  invalid settings (command line, variable, settings file, token file)\n  \
         3  something it needs cannot be set up (telemetry, audit log, VPN key)\n  \
         {TOKEN}  the gateway refused its token (invalid, expired, revoked: 4011 to 4013)\n     \
         or requires one and it has none (4010)\n  \
         {NAME}  the gateway does not accept its name (4008), or its token does not allow it (4014)\n  \
         {NAME_IN_USE}  another agent is connected with its name (4005), or took it over (4015)\n\
         With --retry-refused it does not exit on those: it retries after 1 minute, then\n\
         less often, up to every 15 minutes. Other failures (gateway down, restarting,\n\
         network) are retried with the reconnect backoff, forever."
    )
}

/// A refusal that retrying does not cure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The close code it came with.
    pub code: u16,
    /// The exit status it stops the agent with.
    pub status: u8,
    /// What happened and what to do.
    pub message: String,
}

/// What the refused agent was.
pub struct Agent<'a> {
    pub name: &'a str,
    pub has_token: bool,
}

impl Refusal {
    /// The refusal a close with `code` and `reason` is, or `None` for a
    /// failure worth retrying at once.
    pub fn of(code: u16, reason: &str, agent: &Agent<'_>) -> Option<Refusal> {
        let name = agent.name;
        let issue = format!(
            "issue one (concierge token issue --name {name} --role agent) and give it with \
             --token-file, CONCIERGE_AGENT_TOKEN or token_file in the settings file"
        );
        let is = |c: CloseCode| c.code() == code;
        let (status, message) = if is(CloseCode::AuthRequired) {
            let message = match agent.has_token {
                false => format!("the gateway requires a token and this agent has none: {issue}"),
                true => format!("the gateway requires a token ({reason}): {issue}"),
            };
            (TOKEN, message)
        } else if is(CloseCode::TokenInvalid) {
            let message = format!(
                "the gateway does not accept this agent's token ({reason}): it is not one of \
                 this gateway's; {issue}"
            );
            (TOKEN, message)
        } else if is(CloseCode::TokenExpired) || is(CloseCode::TokenRevoked) {
            (
                TOKEN,
                format!("the gateway refused this agent's token ({reason}): {issue}"),
            )
        } else if is(CloseCode::NameNotAllowed) {
            let message = format!(
                "the token does not allow the name {name} ({reason}): start the agent with \
                 the name its token was issued for (--name), or issue a token for {name} \
                 (concierge token issue --name {name} --role agent)"
            );
            (NAME, message)
        } else if is(CloseCode::BadAuth) {
            let message = format!(
                "the gateway does not accept the name {name:?} ({reason}): give the agent a \
                 name of ASCII letters, digits and _ with --name"
            );
            (NAME, message)
        } else if is(CloseCode::DuplicateAuth) {
            let message = format!(
                "another client is connected as {name}: stop the other agent, give this one \
                 another name (--name), or replace the other with --take-over (a host that \
                 went away keeps its name until the gateway's heartbeat notices, about 15 s)"
            );
            (NAME_IN_USE, message)
        } else if is(CloseCode::TakenOver) {
            let message = format!(
                "another agent took the name {name} over (it was started with --take-over): \
                 this one stops so that the two do not keep replacing each other"
            );
            (NAME_IN_USE, message)
        } else {
            return None;
        };
        Some(Refusal {
            code,
            status,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_without_a_token_is_not_told_its_token_was_refused() {
        let agent = Agent {
            name: "host1",
            has_token: false,
        };
        let refusal = Refusal::of(4010, "a token is required", &agent).expect("a refusal");
        assert_eq!(refusal.status, TOKEN);
        assert!(refusal.message.contains("has none"), "{}", refusal.message);
        assert!(!refusal.message.contains("refused"), "{}", refusal.message);
    }

    #[test]
    fn each_permanent_refusal_has_its_status_and_transient_closes_none() {
        let agent = Agent {
            name: "host1",
            has_token: true,
        };
        let status = |code| Refusal::of(code, "", &agent).map(|r| r.status);
        for (code, expected) in [
            (4010, Some(TOKEN)),
            (4011, Some(TOKEN)),
            (4012, Some(TOKEN)),
            (4013, Some(TOKEN)),
            (4008, Some(NAME)),
            (4014, Some(NAME)),
            (4005, Some(NAME_IN_USE)),
            (4015, Some(NAME_IN_USE)),
            (1001, None),
            (1012, None),
            (1013, None),
            (4009, None),
        ] {
            assert_eq!(status(code), expected, "close {code}");
        }
    }
}
