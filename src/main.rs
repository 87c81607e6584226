//! The `concierge` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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

/// Concierge: a WebSocket gateway for running a fleet of machines.
///
/// With no subcommand it runs the gateway. Settings come from built-in
/// defaults, then the config file (--config), then CONCIERGE_* environment
/// variables, then flags. A wrong value is reported under the name it was
/// given by: the flag, the variable, or the file and its key. Logging follows
/// CONCIERGE_LOG (or RUST_LOG), for example CONCIERGE_LOG=debug or
/// CONCIERGE_LOG=concierge=trace; default info.
#[derive(Parser)]
#[command(
    version,
    args_conflicts_with_subcommands = true,
    after_long_help = exit_statuses()
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    #[command(after_long_help = exit_statuses())]
    Serve(Box<ServeArgs>),
    /// Print the documented config file with every default.
    Config,
    /// Load-test a running gateway (see docs/BENCHMARKS.md).
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Some(Command::Context(command)) => admin::context(command),
        None => serve(cli.serve),
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
        let addrs = gateway.addrs.clone();
        let scheme = if gateway.tls { "wss" } else { "ws" };
        // Handle signals before announcing the address: a supervisor may
        // send SIGTERM as soon as it sees it.
        let server = gateway.run_until_signalled();
        for addr in &addrs {
            tracing::info!(%addr, "listening: {scheme}://{addr}/ws");
        }
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
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
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
