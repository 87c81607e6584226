//! How a WireGuard interface's status is read, the same way by the gateway's
//! VPN actor (`/vpn/status`) and by the agent (`vpn_status`): both report a
//! peer's `latest_handshake`, and both read it from boringtun, which does not
//! answer as the kernel does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// boringtun answers `last_handshake_time_sec` with the seconds since the
/// handshake rather than a timestamp, which the library reads as a time
/// in 1970: a time that early is turned into "that many seconds ago".
pub fn handshake_time(reported: SystemTime, now: SystemTime) -> SystemTime {
    const PLAUSIBLE: Duration = Duration::from_secs(10 * 365 * 86_400);
    match reported.duration_since(UNIX_EPOCH) {
        Ok(since_epoch) if since_epoch < PLAUSIBLE => now.checked_sub(since_epoch).unwrap_or(now),
        _ => reported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_since_a_handshake_become_a_time() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ago = handshake_time(UNIX_EPOCH + Duration::from_secs(5), now);
        assert_eq!(
            now.duration_since(ago).expect("earlier"),
            Duration::from_secs(5)
        );
        let stamp = UNIX_EPOCH + Duration::from_secs(1_799_999_990);
        assert_eq!(handshake_time(stamp, now), stamp);
    }
}
