//! The small process a job's command runs under, so that the command does
//! not depend on the agent: the agent binary itself, started as `concierge
//! agent __job-wrap DIR -- ARGV` (or `concierge-agent __job-wrap …`).
//!
//! An agent that restarts (an upgrade, a crash) loses its children's exit
//! statuses: only their parent may wait for them. The wrapper is that
//! parent instead. It leads a process group of its own (the command and
//! its children stay in it, and are signalled with it), sends the
//! command's stdout and stderr to files in the job's folder, and writes the
//! exit status to `exit.json` (atomically) when the command ends, where
//! whichever agent runs then reads it.
//!
//! It starts the command only once the agent has recorded the wrapper's
//! pid and said `go` on its stdin: if the agent dies before that, the
//! wrapper reads the end of its stdin and exits without starting
//! anything, so a job is never run by a process the record does not name.
//! It outlives SIGTERM, SIGINT and SIGHUP sent to its group (they are for
//! the command, which gets the default handling back when it starts), so
//! that a stopped command's exit is still recorded; SIGKILL ends both.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use serde::{Deserialize, Serialize};

use super::procs::{Spawn, TOKEN_VARIABLE};
use super::state::write_atomically;
use concierge_protocol::agent::Reason;

/// The hidden subcommand's name.
pub const SUBCOMMAND: &str = "__job-wrap";

/// What the agent writes to the wrapper's stdin once the wrapper's pid is
/// recorded.
pub const GO: &[u8] = b"go";

/// The files in a job's folder the wrapper writes.
pub const EXIT_FILE: &str = "exit.json";
pub const STDOUT_FILE: &str = "stdout";
pub const STDERR_FILE: &str = "stderr";
/// The wrapper's own messages (a command that could not start is in
/// `exit.json`; this is for the rest).
pub const LOG_FILE: &str = "wrapper.log";

/// `concierge agent`'s hidden subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Hidden {
    /// Run a job's command and record its exit (started by the agent).
    #[command(name = SUBCOMMAND, hide = true)]
    JobWrap {
        /// The job's folder.
        dir: PathBuf,
        /// The command.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
}

/// How the command ended, as `exit.json` keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// The signal that ended it (`SIGKILL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Set when the command could not start: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<(Reason, String)>,
    pub finished_ms: u64,
}

impl ExitFile {
    /// The file in `dir`, if the wrapper wrote one.
    pub fn read(dir: &Path) -> Option<ExitFile> {
        let text = std::fs::read(dir.join(EXIT_FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// The wrapper's `main`: waits for `go`, runs `argv`, records its exit.
pub fn main(dir: &Path, argv: &[String]) -> ExitCode {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: installs a handler that does nothing (so that exec
        // restores the default in the command, as SIG_IGN would not).
        unsafe { libc::signal(signal, outlive as extern "C" fn(libc::c_int) as usize) };
    }
    let mut said = Vec::new();
    let _ = std::io::stdin().take(16).read_to_end(&mut said);
    if said != GO {
        eprintln!("the agent did not record this job's start: nothing started");
        return ExitCode::from(1);
    }
    let exit = run(dir, argv);
    let written = serde_json::to_vec(&exit)
        .map_err(std::io::Error::other)
        .and_then(|bytes| write_atomically(&dir.join(EXIT_FILE), &bytes));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write {}: {e}", dir.join(EXIT_FILE).display());
            ExitCode::from(3)
        }
    }
}

extern "C" fn outlive(_: libc::c_int) {}

/// Runs the command to its end.
fn run(dir: &Path, argv: &[String]) -> ExitFile {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::process::ExitStatusExt;
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.join(name))
    };
    let failed = |reason: Reason, desc: String| ExitFile {
        code: None,
        signal: None,
        error: Some((reason, desc)),
        finished_ms: super::procs::now_ms(),
    };
    let (out, err) = match (open(STDOUT_FILE), open(STDERR_FILE)) {
        (Ok(out), Ok(err)) => (out, err),
        (Err(e), _) | (_, Err(e)) => {
            return failed(
                Reason::OsError,
                format!("cannot create its output files: {e}"),
            )
        }
    };
    let Some((program, args)) = argv.split_first() else {
        return failed(Reason::BadArgument, "no command".into());
    };
    let child = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn();
    let status = match child.and_then(|mut child| child.wait()) {
        Ok(status) => status,
        Err(e) => {
            let reason = match e.kind() {
                std::io::ErrorKind::NotFound => Reason::NotFound,
                std::io::ErrorKind::PermissionDenied => Reason::OsError,
                _ => Reason::Failed,
            };
            return failed(reason, format!("cannot start {program:?}: {e}"));
        }
    };
    ExitFile {
        code: status.code(),
        signal: status.signal().map(super::signals::name_of),
        error: None,
        finished_ms: super::procs::now_ms(),
    }
}

/// The wrapper of `spec` for the job in `dir` (an absolute path: the
/// wrapper starts in the command's folder), to be spawned with its stdin
/// written [`GO`] once its pid is recorded. It leads a process group of its
/// own and gets the command's environment (without the agent's token).
pub fn command(dir: &Path, spec: &Spawn) -> std::io::Result<tokio::process::Command> {
    let exe = std::env::current_exe()?;
    let log = std::fs::File::create(dir.join(LOG_FILE))?;
    let mut command = tokio::process::Command::new(exe);
    command
        .args(invoked_as())
        .arg(SUBCOMMAND)
        .arg(dir)
        .arg("--")
        .args(&spec.argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .env_remove(TOKEN_VARIABLE)
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    Ok(command)
}

/// The words before the subcommand this binary was started with: `agent`
/// for `concierge agent`, none for `concierge-agent`.
fn invoked_as() -> Option<OsString> {
    std::env::args_os().nth(1).filter(|word| word == "agent")
}
