//! Signal names as requests spell them (`proc_signal`'s `signal`, `ctl kill
//! --signal`), and the numbers they stand for on this system.

use super::Failure;

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
            let names: Vec<_> = names().collect();
            Failure::bad_argument(format!(
                "unknown signal {name:?}: one of {}",
                names.join(", ")
            ))
        })
}

/// Every signal a request may name, as it is spelled in full.
pub fn names() -> impl Iterator<Item = &'static str> {
    SIGNALS.iter().map(|(name, _)| *name)
}

/// The name of signal number `signal` (`SIG<n>` for one not in the list).
pub fn name_of(signal: i32) -> String {
    SIGNALS
        .iter()
        .find(|(_, s)| *s == signal)
        .map_or_else(|| format!("SIG{signal}"), |(n, _)| (*n).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::Reason;

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
