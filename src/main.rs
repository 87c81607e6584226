//! The `concierge` command.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use concierge::admin;
use concierge::config::{Settings, SettingsLayer, CONFIG_ENV};
use concierge::gateway::{Gateway, StartError};

/// Exit status: the gateway failed while it was running.
const FAILED: u8 = 1;
/// Exit status: the command line, a variable or the config file is wrong
/// (clap's own usage errors exit with 2 as well).
const INVALID: u8 = 2;
/// Exit status: something the settings name cannot be used at start.
const UNAVAILABLE: u8 = 3;

/// The exit statuses, for the end of `--help`.
fn exit_statuses() -> String {
    format!(
        "Exit status of the gateway:\n  \
         0  stopped on SIGTERM or SIGINT (or printed the help, version or config)\n  \
         {FAILED}  the gateway failed while running\n  \
         {INVALID}  invalid command line, environment variable, config file or log filter;\n     \
         nothing was touched\n  \
         {UNAVAILABLE}  something the settings name cannot be used at start: the address (in use,\n     \
         not this machine's, not permitted), the data folder (cannot be created),\n     \
         the cluster (Redis refuses the URL, the shared state cannot be opened),\n     \
         the TLS certificate or key (missing, unreadable, invalid, not a pair)"
    )
}

/// mimalloc rather than glibc's malloc: frames are allocated on one thread
/// and freed on another (the sender's and the receiver's), which glibc
/// serializes on its arena locks (see docs/BENCHMARKS.md). The baseline
/// server is built with the same allocator, so the figures stay comparable.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Examples at the end of `concierge --help`.
const EXAMPLES: &str = "\
Examples:
  # Run the gateway on 127.0.0.1:8080, files under ./data (as `concierge serve` does)
  concierge
  # An operator's account, then a token for a host
  concierge user add alice --role operator
  concierge token issue --name host1 --role agent --ttl 365d > host1.token
  # Who is connected
  concierge ctl clients
  # Completion for bash, from the next shell on
  concierge completion bash > ~/.local/share/bash-completion/completions/concierge

Each command's --help tells more, with examples and its exit statuses.";

const SERVE_EXAMPLES: &str = "\
Examples:
  # On 127.0.0.1:8080, files under ./data
  concierge serve
  # Open to the network over TLS, tokens required
  concierge serve --bind 0.0.0.0:8443 --tls-cert fullchain.pem --tls-key privkey.pem --require-auth true
  # From a config file, one setting changed by its variable
  concierge config > concierge.toml
  CONCIERGE_WORKERS=2 concierge serve --config concierge.toml
  # One replica of a cluster
  concierge serve --redis-url redis://127.0.0.1:6379 --bind 127.0.0.1:8081";

const CONFIG_EXAMPLES: &str = "\
Examples:
  concierge config > concierge.toml
  concierge serve --config concierge.toml";

const BENCH_EXAMPLES: &str = "\
Examples:
  # 1000 clients connect to the local gateway, whose CPU and memory are measured
  concierge bench connect --clients 1000 --server-pid \"$(pgrep -f 'concierge serve')\"
  # One owner sends 2000 messages to a service with 1000 subscribers
  concierge bench fanout --subscribers 1000 --messages 2000
  # 100 pairs of clients, the report as JSON
  concierge bench direct --pairs 100 --json
  # Clients spread over two replicas of a cluster
  concierge bench cluster direct --url ws://127.0.0.1:8080/ws --url ws://127.0.0.1:8081/ws

Exit status: 0 clean, 1 a message was lost or duplicated or a client failed, 2 the run
could not be carried out.";

const AGENT_EXAMPLES: &str = "\
Examples:
  # With a token for this host, systemd left alone
  concierge token issue --name host1 --role agent > host1.token
  concierge agent --name host1 --token-file host1.token --systemd off
  # Another gateway, the rest from a settings file
  concierge agent --url wss://gw.example.com/ws --config /etc/concierge/agent.toml";

const COMPLETION_EXAMPLES: &str = "\
Examples:
  # bash (with the bash-completion package), from the next shell on
  concierge completion bash > ~/.local/share/bash-completion/completions/concierge
  # zsh: a folder of your fpath, before compinit runs
  concierge completion zsh > ~/.zfunc/_concierge
  # fish
  concierge completion fish > ~/.config/fish/completions/concierge.fish";

/// Concierge: a WebSocket gateway for running a fleet of machines.
///
/// With no command it runs the gateway and takes the settings `serve` does
/// (`concierge serve --help` lists them).
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    ///
    /// Settings come from built-in defaults, then the config file (--config),
    /// then CONCIERGE_* environment variables, then flags. A wrong value is
    /// reported under the name it was given by: the flag, the variable, or
    /// the file and its key. Logging follows CONCIERGE_LOG (or RUST_LOG), for
    /// example CONCIERGE_LOG=debug or CONCIERGE_LOG=concierge=trace; default
    /// info.
    #[command(
        after_help = SERVE_EXAMPLES,
        after_long_help = format!("{SERVE_EXAMPLES}\n\n{}", exit_statuses())
    )]
    Serve(Box<ServeArgs>),
    /// Print the documented config file with every default.
    #[command(after_help = CONFIG_EXAMPLES)]
    Config,
    /// Load-test a running gateway (see docs/BENCHMARKS.md).
    #[command(after_help = BENCH_EXAMPLES)]
    Bench(Box<concierge::bench::BenchArgs>),
    /// Manage accounts, through the gateway of the current context (or --local).
    #[command(after_long_help = admin::EXIT_STATUSES)]
    User {
        #[command(flatten)]
        gateway: Box<admin::GatewayArgs>,
        #[command(subcommand)]
        command: admin::UserCommand,
    },
    /// Issue, list and revoke tokens; rotate the signing key.
    #[command(after_long_help = admin::EXIT_STATUSES)]
    Token {
        #[command(flatten)]
        gateway: Box<admin::GatewayArgs>,
        #[command(subcommand)]
        command: admin::TokenCommand,
    },
    /// Read and write a user's settings.
    #[command(after_long_help = admin::EXIT_STATUSES)]
    Settings {
        #[command(flatten)]
        gateway: Box<admin::GatewayArgs>,
        #[command(subcommand)]
        command: admin::SettingsCommand,
    },
    /// Run the host agent: serve operators' requests through a gateway.
    #[command(
        after_help = AGENT_EXAMPLES,
        after_long_help = format!("{AGENT_EXAMPLES}\n\n{}", concierge_agent::refusal::exit_statuses())
    )]
    Agent(Box<concierge_agent::settings::AgentArgs>),
    /// Command hosts' agents through a gateway.
    Ctl(Box<concierge_ctl::CtlArgs>),
    /// Log in to a gateway and keep its address and the token as a context
    /// (the current one), which ctl and the admin commands then use.
    #[command(after_help = "Examples:\n  \
        concierge login http://127.0.0.1:8080 alice\n  \
        concierge login https://gw.example.org ada --context prod")]
    Login {
        /// The gateway: http://HOST:PORT, https://HOST, ws://HOST:PORT/ws,
        /// HOST:PORT or HOST (port 8080).
        url: String,
        /// The account to log in as.
        username: String,
        /// The name to keep the context under [default: the gateway's HOST:PORT].
        #[arg(long)]
        context: Option<String>,
        /// Read the password from standard input (its first line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Print a shell's completion script for concierge.
    #[command(after_help = COMPLETION_EXAMPLES)]
    Completion {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// List, switch, show and delete the contexts `login` keeps.
    #[command(subcommand)]
    Context(admin::ContextCommand),
}

#[derive(clap::Args)]
struct ServeArgs {
    #[arg(
        long,
        value_name = "FILE",
        help = format!("TOML config file (see `concierge config`) [default: none] [env: {CONFIG_ENV}]")
    )]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: SettingsLayer,
}

/// The command line as clap reads it: the gateway's settings, which a bare
/// `concierge` takes as `serve` does, listed under `serve --help` only, and
/// `ctl`'s exit statuses at the end of each of its commands' help.
fn cli() -> clap::Command {
    Cli::command()
        .mut_args(|arg| arg.hide(true))
        .mut_subcommand("ctl", concierge_ctl::documented)
}

fn main() -> ExitCode {
    let matches = cli().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command {
        Some(Command::Config) => {
            print!("{}", Settings::default_toml());
            ExitCode::SUCCESS
        }
        Some(Command::Serve(args)) => serve(*args),
        Some(Command::Bench(args)) => concierge::bench::main(*args),
        Some(Command::Agent(args)) => match init_logging() {
            Ok(()) => concierge_agent::main(*args),
            Err(status) => status,
        },
        Some(Command::Ctl(args)) => concierge_ctl::main(*args),
        Some(Command::User { gateway, command }) => admin::user(*gateway, command),
        Some(Command::Token { gateway, command }) => admin::token(*gateway, command),
        Some(Command::Settings { gateway, command }) => admin::settings(*gateway, command),
        Some(Command::Login {
            url,
            username,
            context,
            password_stdin,
        }) => admin::login(&url, &username, context, password_stdin),
        Some(Command::Completion { shell }) => completion(shell),
        Some(Command::Context(command)) => admin::context(command),
        None => serve(cli.serve),
    }
}

/// Writes `shell`'s completion script to standard output.
fn completion(shell: clap_complete::Shell) -> ExitCode {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cli(), "concierge", &mut script);
    match std::io::stdout().write_all(&script) {
        Ok(()) => ExitCode::SUCCESS,
        // `concierge completion bash | head` ends quietly, as `ctl` does.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("concierge: cannot write the completion script: {e}");
            ExitCode::from(FAILED)
        }
    }
}

/// Logs to standard error as every concierge program does; a log filter
/// that does not parse is an invalid environment.
fn init_logging() -> Result<(), ExitCode> {
    concierge_client::logging::init().map_err(|e| {
        eprintln!("concierge: {e}");
        ExitCode::from(INVALID)
    })
}

fn serve(args: ServeArgs) -> ExitCode {
    if let Err(status) = init_logging() {
        return status;
    }

    let settings = match Settings::from_process(args.config, args.settings) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("concierge: {e}");
            return ExitCode::from(INVALID);
        }
    };
    actix_web::rt::System::new().block_on(async move {
        let gateway = match Gateway::start(settings).await {
            Ok(gateway) => gateway,
            Err(e) => {
                eprintln!("concierge: {e}");
                return ExitCode::from(match e {
                    StartError::Settings(_) => INVALID,
                    StartError::Listen { .. }
                    | StartError::Tls(_)
                    | StartError::DataFolder { .. }
                    | StartError::Cluster(_) => UNAVAILABLE,
                });
            }
        };
        // Announces the addresses once signals are handled: a supervisor
        // may send SIGTERM as soon as it sees them.
        let server = gateway.run_until_signalled();
        match server.await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("concierge: the gateway failed: {e}");
                ExitCode::from(FAILED)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        cli().debug_assert();
    }

    /// Every command, every argument of it (but `--help`), with its path.
    fn walk(command: &clap::Command, path: &str, out: &mut Vec<(String, clap::Command)>) {
        let path = format!("{path} {}", command.get_name()).trim().to_owned();
        out.push((path.clone(), command.clone()));
        for sub in command.get_subcommands() {
            walk(sub, &path, out);
        }
    }

    /// The `concierge` command lines of a help's "Examples:" section (up to
    /// its first blank line): each line but the comments, from the word
    /// `concierge` (after the variables it sets or the command piped into
    /// it) to its end (the test stops its words at a pipe or an output
    /// redirection, which quotes may hold: `'cpu > 90'`).
    fn examples(help: &str) -> Vec<String> {
        help.lines()
            .skip_while(|line| *line != "Examples:")
            .skip(1)
            .map(str::trim)
            .take_while(|line| !line.is_empty())
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let (from, _) = line
                    .match_indices("concierge")
                    .find(|(at, word)| {
                        let (before, after) = (&line[..*at], &line[at + word.len()..]);
                        (before.is_empty() || before.ends_with(' '))
                            && (after.is_empty() || after.starts_with(' '))
                    })
                    .unwrap_or_else(|| panic!("`{line}` does not run concierge"));
                line[from..].to_owned()
            })
            .collect()
    }

    /// Every example is a command line `concierge` accepts: a command
    /// substitution (`"$(...)"`) stands for a value, here a number.
    #[test]
    fn every_example_is_a_command_line_concierge_accepts() {
        let mut commands = Vec::new();
        let mut root = cli();
        root.build();
        walk(&root, "", &mut commands);
        let mut count = 0;
        for (path, command) in &commands {
            let helps = [command.get_after_help(), command.get_after_long_help()];
            for help in helps.into_iter().flatten() {
                for example in examples(&help.to_string()) {
                    let words: Vec<String> = shlex::split(&example)
                        .unwrap_or_else(|| panic!("{path}: {example}: unbalanced quotes"))
                        .into_iter()
                        .take_while(|w| w != "|" && w != ">")
                        .map(|w| if w.starts_with("$(") { "1".into() } else { w })
                        .collect();
                    if let Err(e) = cli().try_get_matches_from(&words) {
                        panic!("{path}: `{example}` is refused: {e}");
                    }
                    count += 1;
                }
            }
        }
        assert!(count > 50, "only {count} examples");
    }

    #[test]
    fn every_command_has_examples_and_every_argument_a_description() {
        let mut commands = Vec::new();
        let mut root = cli();
        root.build();
        walk(&root, "", &mut commands);
        let mut missing = Vec::new();
        for (path, command) in &commands {
            if path.split(' ').any(|word| word == "help") || command.is_hide_set() {
                continue;
            }
            if command.get_subcommands().next().is_none()
                && !command
                    .get_after_help()
                    .is_some_and(|h| h.to_string().contains("Examples:"))
                && !command
                    .get_after_long_help()
                    .is_some_and(|h| h.to_string().contains("Examples:"))
            {
                missing.push(format!("{path}: no examples"));
            }
            for arg in command.get_arguments() {
                if arg.get_help().is_none() && !arg.is_hide_set() {
                    missing.push(format!("{path}: {} has no description", arg.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "{missing:#?}");
    }

    /// The documented status for a wrong command line is the one clap
    /// exits with for its own usage errors.
    #[test]
    fn usage_errors_exit_with_the_invalid_status() {
        let err = Cli::try_parse_from(["concierge", "--no-such-flag"])
            .err()
            .expect("refused");
        assert_eq!(err.exit_code(), i32::from(INVALID));
    }
}
