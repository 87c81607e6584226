//! What the agent lets a request do beyond the sender's role: which
//! processes it signals and which commands it starts.
//!
//! By default it signals only the processes it started (seed 003: "only
//! allow applications originally called by Quix Server to be terminated");
//! `signal_allow` rules widen that by user and by executable. Without
//! `exec_allow` rules an operator may start any command; with them, only a
//! command one rule matches. Whatever the rules say, the agent never signals
//! itself, its parent or init.

use std::path::PathBuf;

use serde::Deserialize;

use super::procs::Procs;
use super::request::{Failure, Reason};

/// Processes the agent did not start that may still be signalled. Every
/// field given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRule {
    /// The process's real user, by name.
    pub user: Option<String>,
    /// The process's executable, as an absolute path.
    pub executable: Option<PathBuf>,
}

/// A command `execute` and `exec_command` may start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRule {
    /// The program (`argv[0]`), a glob pattern: `sh`, `/usr/bin/*`.
    pub executable: String,
    /// One glob pattern per argument; a last pattern `**` matches any
    /// remaining arguments, none included. Without `args`, any arguments.
    pub args: Option<Vec<String>>,
}

/// The rules, checked.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    signal_allow: Vec<(Option<u32>, SignalRule)>,
    exec_allow: Vec<(glob::Pattern, Option<Vec<glob::Pattern>>)>,
}

impl Policy {
    /// Compiles the rules; a pattern that does not parse or a user that
    /// does not exist is an error at start, not a silent non-match.
    pub fn new(signal_allow: &[SignalRule], exec_allow: &[ExecRule]) -> Result<Policy, String> {
        let users = sysinfo::Users::new_with_refreshed_list()
            .map_err(|e| format!("cannot read the user list: {e}"))?;
        let mut signals = Vec::new();
        for rule in signal_allow {
            if rule.user.is_none() && rule.executable.is_none() {
                return Err("a signal_allow rule needs a user, an executable or both".into());
            }
            let uid = match &rule.user {
                None => None,
                Some(name) => Some(
                    users
                        .iter()
                        .find(|u| u.name() == name)
                        .map(|u| **u.id())
                        .ok_or_else(|| format!("signal_allow: no user {name:?} on this host"))?,
                ),
            };
            signals.push((uid, rule.clone()));
        }
        let pattern =
            |p: &str| glob::Pattern::new(p).map_err(|e| format!("exec_allow: pattern {p:?}: {e}"));
        let mut execs = Vec::new();
        for rule in exec_allow {
            let args = match &rule.args {
                None => None,
                Some(args) => Some(args.iter().map(|a| pattern(a)).collect::<Result<_, _>>()?),
            };
            execs.push((pattern(&rule.executable)?, args));
        }
        Ok(Policy {
            signal_allow: signals,
            exec_allow: execs,
        })
    }

    /// Whether a command may be started.
    pub fn check_exec(&self, argv: &[String]) -> Result<(), Failure> {
        if self.exec_allow.is_empty() {
            return Ok(());
        }
        let Some((program, args)) = argv.split_first() else {
            return Err(Failure::bad_argument("the command is empty"));
        };
        let allowed = self.exec_allow.iter().any(|(exe, patterns)| {
            exe.matches(program)
                && patterns
                    .as_ref()
                    .is_none_or(|patterns| args_match(patterns, args))
        });
        if allowed {
            Ok(())
        } else {
            Err(Failure::new(
                Reason::Forbidden,
                format!(
                    "no exec_allow rule of this agent allows {}",
                    shell_words::join(argv)
                ),
            ))
        }
    }

    /// Whether `pid` may be signalled.
    pub fn check_signal(&self, pid: u32, procs: &Procs) -> Result<(), Failure> {
        let me = std::process::id();
        // SAFETY: getppid(2) cannot fail and touches no memory.
        let parent = unsafe { libc::getppid() } as u32;
        if pid == me || pid == parent || pid <= 1 {
            return Err(Failure::new(
                Reason::Forbidden,
                format!("the agent does not signal itself, its parent or init (pid {pid})"),
            ));
        }
        if procs.is_running(pid) {
            return Ok(());
        }
        let process = procfs::process::Process::new(pid as i32)
            .ok()
            .filter(|p| p.is_alive())
            .ok_or_else(|| Failure::new(Reason::NotFound, format!("no process {pid}")))?;
        let uid = process.uid().ok();
        let exe = process.exe().ok();
        let allowed = self.signal_allow.iter().any(|(rule_uid, rule)| {
            rule_uid.is_none_or(|u| Some(u) == uid)
                && rule
                    .executable
                    .as_ref()
                    .is_none_or(|e| exe.as_ref() == Some(e))
        });
        if allowed {
            Ok(())
        } else {
            Err(Failure::new(
                Reason::Forbidden,
                format!(
                    "process {pid} was not started by this agent and no signal_allow rule covers it"
                ),
            ))
        }
    }
}

fn args_match(patterns: &[glob::Pattern], args: &[String]) -> bool {
    match patterns.split_last() {
        Some((last, head)) if last.as_str() == "**" => {
            args.len() >= head.len() && head.iter().zip(args).all(|(p, a)| p.matches(a))
        }
        _ => patterns.len() == args.len() && patterns.iter().zip(args).all(|(p, a)| p.matches(a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn exec_rules_match_program_and_arguments() {
        let policy = Policy::new(
            &[],
            &[
                ExecRule {
                    executable: "sh".into(),
                    args: Some(vec!["-c".into(), "echo *".into()]),
                },
                ExecRule {
                    executable: "/usr/bin/*".into(),
                    args: Some(vec!["--version".into(), "**".into()]),
                },
            ],
        )
        .expect("rules compile");
        assert!(policy.check_exec(&argv(&["sh", "-c", "echo hi"])).is_ok());
        assert!(policy.check_exec(&argv(&["sh", "-c", "rm -rf /"])).is_err());
        assert!(policy
            .check_exec(&argv(&["sh", "-c", "echo hi", "x"]))
            .is_err());
        assert!(policy
            .check_exec(&argv(&["/usr/bin/env", "--version"]))
            .is_ok());
        assert!(policy
            .check_exec(&argv(&["/usr/bin/env", "--version", "a", "b"]))
            .is_ok());
        assert_eq!(
            policy
                .check_exec(&argv(&["bash"]))
                .expect_err("no rule")
                .reason,
            Reason::Forbidden
        );
        assert!(Policy::default().check_exec(&argv(&["anything"])).is_ok());
    }

    #[test]
    fn bad_rules_are_refused_at_start() {
        assert!(Policy::new(&[SignalRule::default()], &[]).is_err());
        assert!(Policy::new(
            &[SignalRule {
                user: Some("no-such-user-here".into()),
                executable: None
            }],
            &[]
        )
        .is_err());
        assert!(Policy::new(
            &[],
            &[ExecRule {
                executable: "[".into(),
                args: None
            }]
        )
        .is_err());
    }
}
