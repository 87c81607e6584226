//! Signal names as requests spell them, and sending one to a process.

use super::request::{Failure, Reason};

/// The signals a request may name: seed 003's three and the ones an
/// operator needs to pause, resume, interrupt or poke a process.
const SIGNALS: [(&str, i32); 8] = [
    ("SIGTERM", libc::SIGTERM),
    ("SIGKILL", libc::SIGKILL),
    ("SIGHUP", libc::SIGHUP),
    ("SIGINT", libc::SIGINT),
    ("SIGSTOP", libc::SIGSTOP),
    ("SIGCONT", libc::SIGCONT),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGUSR2", libc::SIGUSR2),
];

/// The signal `name` spells (`SIGTERM` or `TERM`, any case).
pub fn parse(name: &str) -> Result<i32, Failure> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    SIGNALS
        .iter()
        .find(|(n, _)| *n == full)
        .map(|(_, s)| *s)
        .ok_or_else(|| {
            let names: Vec<_> = SIGNALS.iter().map(|(n, _)| *n).collect();
            Failure::bad_argument(format!(
                "unknown signal {name:?}: one of {}",
                names.join(", ")
            ))
        })
}

/// The name of signal number `signal` (`SIG<n>` for one not in the list).
pub fn name_of(signal: i32) -> String {
    SIGNALS
        .iter()
        .find(|(_, s)| *s == signal)
        .map_or_else(|| format!("SIG{signal}"), |(n, _)| (*n).to_owned())
}

/// Sends `signal` to `pid`.
pub fn send(pid: u32, signal: i32) -> Result<(), Failure> {
    deliver(pid, signal, false)
}

/// Sends `signal` to every process of the process group `pid` leads (a
/// started process with its children and theirs).
pub fn send_group(pid: u32, signal: i32) -> Result<(), Failure> {
    deliver(pid, signal, true)
}

fn deliver(pid: u32, signal: i32, group: bool) -> Result<(), Failure> {
    let target = libc::pid_t::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Failure::bad_argument(format!("{pid} is not a process id")))?;
    let target = if group { -target } else { target };
    // SAFETY: kill(2) takes plain integers and has no memory effects.
    if unsafe { libc::kill(target, signal) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    Err(match err.raw_os_error() {
        Some(libc::ESRCH) => Failure::new(Reason::NotFound, format!("no process {pid}")),
        _ => Failure::new(
            Reason::OsError,
            format!("cannot send {} to {pid}: {err}", name_of(signal)),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_both_ways() {
        assert_eq!(parse("SIGSTOP").expect("stop"), libc::SIGSTOP);
        assert_eq!(parse("term").expect("term"), libc::SIGTERM);
        assert_eq!(
            parse("SIGSEGV").expect_err("not offered").reason,
            Reason::BadArgument
        );
        assert_eq!(name_of(libc::SIGKILL), "SIGKILL");
        assert_eq!(name_of(libc::SIGSEGV), format!("SIG{}", libc::SIGSEGV));
    }
}
