//! What the agent lets a request do beyond the sender's role: which
//! processes it signals and which commands it starts.
//!
//! By default it signals only the processes it started (seed 003: "only
//! allow applications originally called by Quix Server to be terminated");
//! `signal_allow` rules widen that by user and by executable. Whatever the
//! rules say, the agent never signals itself, its parent or init.
//!
//! Without `exec_allow` rules an operator may start any command, with any
//! environment, in any folder: on that host an operator is whoever the
//! agent runs as (root, usually). With rules, a rule must match the command
//! and the request may no longer step around it: the program is resolved
//! before it is matched (a bare name through the agent's own `PATH`, never
//! the request's; a path's `..` and symbolic links through the file system)
//! and started by that resolved path; a wildcard never crosses `/` nor
//! matches a leading `.`; a rule that would hand a wildcard argument to a
//! shell or interpreter (which runs any code it is given) is refused at
//! load unless it says so (`runs_code = true`); the request's `env` may set
//! only the variables `exec_env_allow` names (never `LD_PRELOAD` or `PATH`
//! by default), and its `cwd` must be inside `work_dir` or an
//! `exec_cwd_allow` folder.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::procs::Procs;
use concierge_protocol::agent::{Failure, Reason};

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRule {
    /// The program: a bare name (`systemctl`: that name, found on the
    /// agent's `PATH`) or an absolute path glob pattern (`/opt/tools/*`).
    pub executable: String,
    /// One glob pattern per argument; a last pattern `**` matches any
    /// remaining arguments, none included. Without `args`, any arguments.
    pub args: Option<Vec<String>>,
    /// Says that the rule lets an operator run code of their choosing (a
    /// shell or interpreter with a wildcard argument): without it such a
    /// rule is refused at load.
    #[serde(default)]
    pub runs_code: bool,
}

/// Programs that run whatever code or command their arguments give them:
/// a wildcard argument to one of them allows everything. Version suffixes
/// (`python3.11`, `lua5.4`) are stripped before the comparison.
const RUNS_CODE: &[&str] = &[
    "sh",
    "bash",
    "dash",
    "ash",
    "zsh",
    "ksh",
    "mksh",
    "rbash",
    "fish",
    "csh",
    "tcsh",
    "busybox",
    "python",
    "pypy",
    "perl",
    "ruby",
    "irb",
    "node",
    "nodejs",
    "deno",
    "bun",
    "php",
    "lua",
    "luajit",
    "tclsh",
    "wish",
    "expect",
    "awk",
    "gawk",
    "mawk",
    "nawk",
    "sed",
    "env",
    "xargs",
    "find",
    "sudo",
    "su",
    "doas",
    "runuser",
    "setsid",
    "nohup",
    "nice",
    "ionice",
    "timeout",
    "stdbuf",
    "chroot",
    "unshare",
    "nsenter",
    "strace",
    "ltrace",
    "gdb",
    "script",
    "ssh",
    "flock",
    "watch",
    "tar",
    "rsync",
    "zip",
    "java",
    "jshell",
    "julia",
    "rscript",
    "pwsh",
    "osascript",
    "make",
    "vim",
    "vi",
    "nvim",
    "emacs",
    "less",
    "more",
    "man",
    "git",
    "docker",
    "podman",
    "systemd-run",
];

/// Whether `name` (a file name) is a program of [`RUNS_CODE`].
fn runs_code(name: &str) -> bool {
    let base = name
        .trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '-')
        .to_ascii_lowercase();
    RUNS_CODE.contains(&base.as_str())
}

/// How a pattern matches: `*` never crosses `/` nor matches a leading `.`
/// (so never `..`).
const STRICT: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: true,
};

/// An `exec_allow` rule, compiled.
#[derive(Debug, Clone)]
struct Compiled {
    /// The rule's executable as written, for messages.
    source: String,
    exe: glob::Pattern,
    /// A bare program name, found on the agent's `PATH`.
    bare: bool,
    args: Option<Vec<glob::Pattern>>,
    /// Some argument is a wildcard (or any arguments are allowed).
    wild_args: bool,
    runs_code: bool,
}

/// What a checked request starts: the program by its resolved path, in
/// its resolved folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
}

/// The rules, checked.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    signal_allow: Vec<(Option<u32>, SignalRule)>,
    exec_allow: Vec<Compiled>,
    env_allow: Vec<glob::Pattern>,
    /// Folders a started process may run in besides `work_dir` (only with
    /// `exec_allow` rules).
    cwd_allow: Vec<PathBuf>,
    work_dir: PathBuf,
}

/// The exec side of the policy, as the settings give it.
#[derive(Debug, Clone, Copy)]
pub struct ExecSettings<'a> {
    pub rules: &'a [ExecRule],
    pub env_allow: &'a [String],
    pub cwd_allow: &'a [PathBuf],
    pub work_dir: &'a Path,
}

impl ExecSettings<'_> {
    /// No rules: any command.
    pub fn none() -> ExecSettings<'static> {
        ExecSettings {
            rules: &[],
            env_allow: &[],
            cwd_allow: &[],
            work_dir: Path::new("."),
        }
    }
}

impl Policy {
    /// Compiles the rules; a pattern that does not parse, a user that does
    /// not exist or a rule that lets any code run without saying so is an
    /// error at start, not a silent non-match.
    pub fn new(signal_allow: &[SignalRule], exec: ExecSettings<'_>) -> Result<Policy, String> {
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
        let exec_allow = exec
            .rules
            .iter()
            .map(Compiled::new)
            .collect::<Result<_, _>>()?;
        let env_allow = exec
            .env_allow
            .iter()
            .map(|p| {
                glob::Pattern::new(p).map_err(|e| format!("exec_env_allow: pattern {p:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        if let Some(relative) = exec.cwd_allow.iter().find(|p| !p.is_absolute()) {
            return Err(format!(
                "exec_cwd_allow: {} is not an absolute path",
                relative.display()
            ));
        }
        Ok(Policy {
            signal_allow: signals,
            exec_allow,
            env_allow,
            cwd_allow: exec.cwd_allow.to_vec(),
            work_dir: exec.work_dir.to_owned(),
        })
    }

    /// Whether a command may be started with `env` in `cwd` (the request's,
    /// or `None` for `work_dir`), and what to start.
    pub fn check_exec(
        &self,
        argv: Vec<String>,
        cwd: Option<&str>,
        env: &[(String, String)],
    ) -> Result<Launch, Failure> {
        let cwd = match cwd {
            Some(cwd) => self.work_dir.join(cwd),
            None => self.work_dir.clone(),
        };
        if self.exec_allow.is_empty() {
            return Ok(Launch { argv, cwd });
        }
        if let Some((name, _)) = env
            .iter()
            .find(|(name, _)| !self.env_allow.iter().any(|p| p.matches(name)))
        {
            return Err(Failure::new(
                Reason::Forbidden,
                format!("this agent's exec_env_allow does not let a request set {name}"),
            ));
        }
        let cwd = self.check_cwd(&cwd)?;
        let Some((program, args)) = argv.split_first() else {
            return Err(Failure::bad_argument("the command is empty"));
        };
        let found = Program::resolve(program, &cwd)?;
        let mut refused_interpreter = None;
        for rule in &self.exec_allow {
            if !rule.matches(&found, args) {
                continue;
            }
            if rule.wild_args && !rule.runs_code && found.runs_code() {
                refused_interpreter = Some(rule);
                continue;
            }
            let mut argv = argv.clone();
            argv[0] = found.path.display().to_string();
            return Ok(Launch { argv, cwd });
        }
        let desc = match refused_interpreter {
            Some(rule) => format!(
                "{} runs any code it is given and exec_allow rule {:?} lets any argument \
                 through: it needs a rule of its own (or runs_code = true)",
                found.path.display(),
                rule.source
            ),
            None => format!(
                "no exec_allow rule of this agent allows {} (the program resolves to {})",
                shell_words::join(&argv),
                found.path.display()
            ),
        };
        Err(Failure::new(Reason::Forbidden, desc))
    }

    /// `cwd`, resolved, if it is inside `work_dir` or an `exec_cwd_allow`
    /// folder.
    fn check_cwd(&self, cwd: &Path) -> Result<PathBuf, Failure> {
        let real = std::fs::canonicalize(cwd).map_err(|e| {
            Failure::new(
                Reason::NotFound,
                format!("cannot use {} as the folder: {e}", cwd.display()),
            )
        })?;
        let allowed = std::iter::once(&self.work_dir)
            .chain(&self.cwd_allow)
            .filter_map(|folder| std::fs::canonicalize(folder).ok())
            .any(|folder| real.starts_with(folder));
        if allowed {
            Ok(real)
        } else {
            Err(Failure::new(
                Reason::Forbidden,
                format!(
                    "{} is outside the folders this agent starts commands in (work_dir and exec_cwd_allow)",
                    real.display()
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
        if procs.owns_group(pid) {
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

impl Compiled {
    fn new(rule: &ExecRule) -> Result<Compiled, String> {
        let pattern = |p: &str| {
            glob::Pattern::new(p).map_err(|e| {
                format!(
                    "exec_allow: pattern {p:?} (rule {:?}): {e}",
                    rule.executable
                )
            })
        };
        let bare = !rule.executable.contains('/');
        if !bare && !rule.executable.starts_with('/') {
            return Err(format!(
                "exec_allow: executable {:?} is neither a bare program name nor an absolute path",
                rule.executable
            ));
        }
        let args = match &rule.args {
            None => None,
            Some(args) => Some(args.iter().map(|a| pattern(a)).collect::<Result<_, _>>()?),
        };
        let is_wild = |p: &str| p.contains(['*', '?', '[']);
        let wild_args = rule
            .args
            .as_ref()
            .is_none_or(|args| args.iter().any(|a| is_wild(a)));
        let name = rule.executable.rsplit('/').next().unwrap_or_default();
        if wild_args && !rule.runs_code && !is_wild(name) && runs_code(name) {
            return Err(format!(
                "exec_allow: the rule for {:?} lets any argument reach a program that runs any \
                 code it is given (a shell or interpreter): list its exact arguments, or mark \
                 the rule runs_code = true if that is what it is for",
                rule.executable
            ));
        }
        Ok(Compiled {
            source: rule.executable.clone(),
            exe: pattern(&rule.executable)?,
            bare,
            args,
            wild_args,
            runs_code: rule.runs_code,
        })
    }

    fn matches(&self, program: &Program, args: &[String]) -> bool {
        let exe = if self.bare {
            program.bare && self.exe.matches_with(&program.name, STRICT)
        } else {
            program
                .names()
                .any(|path| self.exe.matches_with(path, STRICT))
        };
        exe && self
            .args
            .as_ref()
            .is_none_or(|patterns| args_match(patterns, args))
    }
}

/// A request's program, resolved as the kernel will find it.
#[derive(Debug)]
struct Program {
    /// Named by a bare name (found on the agent's `PATH`).
    bare: bool,
    /// Its file name.
    name: String,
    /// The path it is started by: its folder with `..` and symbolic
    /// links resolved, then its name.
    path: PathBuf,
    /// The absolute path the request wrote, when it has no `.` or `..`
    /// (a rule may name the program by it: it is the same file).
    literal: Option<String>,
}

impl Program {
    fn resolve(program: &str, cwd: &Path) -> Result<Program, Failure> {
        if !program.contains('/') {
            let found = on_agent_path(program).ok_or_else(|| {
                Failure::new(
                    Reason::NotFound,
                    format!("no program {program:?} on the agent's PATH"),
                )
            })?;
            let folder = found.parent().and_then(|f| std::fs::canonicalize(f).ok());
            return Ok(Program {
                bare: true,
                name: program.to_owned(),
                literal: Some(found.display().to_string()),
                path: folder.map_or_else(|| found.clone(), |f| f.join(program)),
            });
        }
        let (folder, name) = program.rsplit_once('/').unwrap_or(("", program));
        if matches!(name, "" | "." | "..") {
            return Err(Failure::bad_argument(format!(
                "{program:?} names a folder, not a program"
            )));
        }
        let folder = if folder.is_empty() { "/" } else { folder };
        let real = std::fs::canonicalize(cwd.join(folder)).map_err(|e| {
            Failure::new(Reason::NotFound, format!("cannot start {program:?}: {e}"))
        })?;
        let clean =
            program.starts_with('/') && !program.split('/').any(|part| matches!(part, "." | ".."));
        Ok(Program {
            bare: false,
            name: name.to_owned(),
            path: real.join(name),
            literal: clean.then(|| program.to_owned()),
        })
    }

    /// The paths a rule may match.
    fn names(&self) -> impl Iterator<Item = &str> {
        self.path
            .to_str()
            .into_iter()
            .chain(self.literal.as_deref())
    }

    /// Whether it is a shell or interpreter, by its name or by the name of
    /// the file it links to (`/usr/bin/sh` is `dash`). A link to busybox is
    /// the applet its name says (busybox runs by its `argv[0]`, which is
    /// that name).
    fn runs_code(&self) -> bool {
        let target = std::fs::canonicalize(&self.path)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        runs_code(&self.name) || target.is_some_and(|t| !t.starts_with("busybox") && runs_code(&t))
    }
}

/// The first executable file `name` names in one of the agent's own
/// `PATH` folders (absolute ones only: a relative entry would depend on the
/// request's `cwd`).
fn on_agent_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|file| {
            std::fs::metadata(file)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn args_match(patterns: &[glob::Pattern], args: &[String]) -> bool {
    let matches = |(p, a): (&glob::Pattern, &String)| p.matches_with(a, STRICT);
    match patterns.split_last() {
        Some((last, head)) if last.as_str() == "**" => {
            args.len() >= head.len() && head.iter().zip(args).all(matches)
        }
        _ => patterns.len() == args.len() && patterns.iter().zip(args).all(matches),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    fn rule(executable: &str, args: Option<&[&str]>) -> ExecRule {
        ExecRule {
            executable: executable.into(),
            args: args.map(argv),
            runs_code: false,
        }
    }

    fn policy(rules: &[ExecRule]) -> Result<Policy, String> {
        Policy::new(
            &[],
            ExecSettings {
                rules,
                env_allow: &["LANG".into()],
                cwd_allow: &[],
                work_dir: Path::new("/"),
            },
        )
    }

    #[test]
    fn exec_rules_match_the_resolved_program_and_arguments() {
        let policy = policy(&[
            rule("echo", Some(&["hi", "**"])),
            rule("/usr/bin/*", Some(&["--version", "**"])),
        ])
        .expect("rules compile");
        let allowed = |words: &[&str]| policy.check_exec(argv(words), None, &[]);
        let launch = allowed(&["echo", "hi"]).expect("bare name");
        assert!(launch.argv[0].ends_with("/echo") && launch.argv[0].starts_with('/'));
        assert!(allowed(&["echo", "ho"]).is_err());
        assert!(allowed(&["/usr/bin/ls", "--version"]).is_ok());
        assert!(allowed(&["/usr/bin/ls", "--version", "a", "b"]).is_ok());
        // `*` crosses no `/`, and `..` is resolved before matching.
        assert!(allowed(&["/usr/bin/x/../ls", "--version"]).is_err());
        assert!(allowed(&["/usr/bin/../../etc/passwd", "--version"]).is_err());
        assert_eq!(
            allowed(&["bash"]).expect_err("no rule").reason,
            Reason::Forbidden
        );
        assert!(Policy::default()
            .check_exec(argv(&["anything"]), None, &[])
            .is_ok());
    }

    #[test]
    fn wildcard_arguments_to_an_interpreter_are_refused_unless_marked() {
        let refused = policy(&[rule("sh", Some(&["-c", "echo *"]))]).expect_err("a shell");
        assert!(
            refused.contains("\"sh\"") && refused.contains("runs_code"),
            "{refused}"
        );
        assert!(policy(&[rule("/usr/bin/python3", None)]).is_err());
        assert!(policy(&[rule("sh", Some(&["/opt/deploy.sh"]))]).is_ok());
        let marked = ExecRule {
            runs_code: true,
            ..rule("sh", Some(&["-c", "**"]))
        };
        assert!(policy(&[marked]).is_ok());
        // A wildcard executable reaches a shell only by a rule of its own.
        let policy = policy(&[rule("/usr/bin/*", None)]).expect("compiles");
        let failure = policy
            .check_exec(argv(&["/usr/bin/sh", "-c", "id"]), None, &[])
            .expect_err("a shell");
        assert!(failure.desc.contains("runs any code"), "{failure:?}");
        assert!(policy
            .check_exec(argv(&["/usr/bin/true"]), None, &[])
            .is_ok());
    }

    #[test]
    fn env_and_cwd_are_limited_with_rules() {
        let policy = policy(&[rule("true", None)]).expect("compiles");
        let env = |k: &str| vec![(k.to_owned(), "x".to_owned())];
        assert!(policy
            .check_exec(argv(&["true"]), None, &env("LANG"))
            .is_ok());
        for name in ["LD_PRELOAD", "PATH"] {
            let failure = policy
                .check_exec(argv(&["true"]), None, &env(name))
                .expect_err(name);
            assert_eq!(failure.reason, Reason::Forbidden);
        }
        let inside = policy.check_exec(argv(&["true"]), Some("tmp"), &[]);
        assert_eq!(inside.expect("under /").cwd, Path::new("/tmp"));
    }

    #[test]
    fn bad_rules_are_refused_at_start() {
        assert!(Policy::new(&[SignalRule::default()], ExecSettings::none()).is_err());
        assert!(Policy::new(
            &[SignalRule {
                user: Some("no-such-user-here".into()),
                executable: None
            }],
            ExecSettings::none()
        )
        .is_err());
        assert!(policy(&[rule("[", None)]).is_err());
        assert!(policy(&[rule("bin/*", None)]).is_err());
    }
}
