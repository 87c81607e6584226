//! The WebSocket close codes the gateway uses, each with the reason it
//! sends.

/// WebSocket close codes the gateway uses, each sent with a readable reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1001: the gateway is shutting down.
    GoingAway,
    /// 1008: the client broke a limit (for example it stopped reading and
    /// its outgoing queue filled up).
    Policy,
    /// 1009: a frame larger than the configured maximum.
    TooBig,
    /// 1012: this replica is restarting; reconnect (to another one).
    ServiceRestart,
    /// 1013: the cluster cannot take new clients right now (Redis is
    /// unreachable); try again later.
    TryAgainLater,
    /// 4000: an internal error.
    Unknown,
    /// 4002: the first frame could not be decoded.
    FatalDecode,
    /// 4003: a payload other than IDENTIFY was sent first.
    NoAuth,
    /// 4004: no IDENTIFY within the identify timeout.
    AuthFailed,
    /// 4005: the name is taken.
    DuplicateAuth,
    /// 4006: the gateway secret does not match.
    BadSecret,
    /// 4007: the protocol version is not compatible.
    BadVersion,
    /// 4008: the name (or another identity field) is not acceptable.
    BadAuth,
    /// 4009: no sign of life within the heartbeat timeout.
    HeartbeatFailed,
    /// 4010: the gateway requires a token and IDENTIFY carried none.
    AuthRequired,
    /// 4011: the token is not one of this gateway's (malformed, altered,
    /// or signed by a retired key).
    TokenInvalid,
    /// 4012: the token has expired (also sent to an open socket when its
    /// token expires).
    TokenExpired,
    /// 4013: the token was revoked (also sent to its open sockets).
    TokenRevoked,
    /// 4014: the token does not allow this name.
    NameNotAllowed,
    /// 4015: a newer connection with the same user took the name over.
    TakenOver,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            CloseCode::GoingAway => 1001,
            CloseCode::Policy => 1008,
            CloseCode::TooBig => 1009,
            CloseCode::ServiceRestart => 1012,
            CloseCode::TryAgainLater => 1013,
            CloseCode::Unknown => 4000,
            CloseCode::FatalDecode => 4002,
            CloseCode::NoAuth => 4003,
            CloseCode::AuthFailed => 4004,
            CloseCode::DuplicateAuth => 4005,
            CloseCode::BadSecret => 4006,
            CloseCode::BadVersion => 4007,
            CloseCode::BadAuth => 4008,
            CloseCode::HeartbeatFailed => 4009,
            CloseCode::AuthRequired => 4010,
            CloseCode::TokenInvalid => 4011,
            CloseCode::TokenExpired => 4012,
            CloseCode::TokenRevoked => 4013,
            CloseCode::NameNotAllowed => 4014,
            CloseCode::TakenOver => 4015,
        }
    }
}

/// A close code with its human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: CloseCode,
    pub reason: String,
}

impl Close {
    pub fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        Close {
            code,
            reason: reason.into(),
        }
    }

    /// 1008 for a client that does not read: more than `max` frames (its
    /// payloads, and the pongs answering its pings) wait to be sent to it.
    pub fn too_slow(max: usize) -> Self {
        Close::new(
            CloseCode::Policy,
            format!("too slow: more than {max} frames waiting to be sent"),
        )
    }
}
