//! Sending a signal to a process or its group, as `proc_signal`,
//! `kill_process`, `pause_process` and `resume_process` ask.

pub use concierge_protocol::agent::signals::{name_of, parse};
use concierge_protocol::agent::{Failure, Reason};

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
