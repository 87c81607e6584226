//! Ctrl-C on `exec --follow`: as with `kubectl exec` and ssh, interrupting
//! the command stops what it started (the agent is asked to end the
//! process's group with SIGTERM), unless `--detach` says to leave it
//! running. Without this a person's Ctrl-C left the process running on the
//! host with nobody watching. (`ctl run` catches them the same way, and
//! asks whether to cancel its job: see `jobs`.)

use std::process::ExitCode;

use tokio::signal::unix::{signal, Signal, SignalKind};

use super::error::CtlError;
use super::Ctl;
use concierge_protocol::agent::args::{KillProcess, Pid};
use concierge_protocol::agent::Request;

/// SIGINT and SIGTERM, caught from before the process starts: one that
/// comes while the agent has not answered yet is acted on once it has.
pub(crate) struct Interrupts {
    int: Signal,
    term: Signal,
}

impl Interrupts {
    pub(crate) fn catch() -> Result<Interrupts, CtlError> {
        let catch = |kind| {
            signal(kind).map_err(|e| CtlError::Failed(format!("cannot handle signals: {e}")))
        };
        Ok(Interrupts {
            int: catch(SignalKind::interrupt())?,
            term: catch(SignalKind::terminate())?,
        })
    }

    /// The signal that came (its number).
    pub(crate) async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.int.recv() => libc::SIGINT,
            _ = self.term.recv() => libc::SIGTERM,
        }
    }
}

impl Ctl {
    /// Prints process `pid`'s events until it exits (exiting as it did); on
    /// SIGINT or SIGTERM asks `host` to stop it, or with `detach` leaves it,
    /// and exits with 128 + the signal's number, as a shell reports it.
    pub(crate) async fn follow_started(
        &mut self,
        host: &str,
        rid: u64,
        pid: u32,
        detach: bool,
        mut interrupts: Interrupts,
    ) -> Result<ExitCode, CtlError> {
        let caught = tokio::select! {
            ended = self.stream(host, rid) => return ended,
            caught = interrupts.next() => caught,
        };
        let status = ExitCode::from(128 + caught as u8);
        if detach {
            eprintln!(
                "concierge ctl: detached: process {pid} keeps running on {host} \
                 (ctl output {host} {pid} --follow, ctl signal {host} {pid} SIGTERM)"
            );
            return Ok(status);
        }
        let stop = Request::KillProcess(KillProcess {
            pid: Pid(pid),
            method: None,
        });
        match self.request(host, &stop).await {
            Ok(_) => eprintln!(
                "concierge ctl: interrupted: asked {host} to stop process {pid} \
                 (SIGTERM to its process group; --detach leaves it running)"
            ),
            Err(e) => {
                eprintln!("concierge ctl: interrupted, but process {pid} was not stopped: {e}")
            }
        }
        Ok(status)
    }
}
