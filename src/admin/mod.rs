//! The commands that manage who may connect: `concierge user`, `token` and
//! `settings`, and the person's side: `login` and `context` ([`login`]).
//!
//! By default the commands ask a running gateway over its admin API
//! (`/admin/…`, [`remote`]) with an admin's token, the gateway and token
//! found as `ctl` finds them: `--url` and `--token` (or `CONCIERGE_URL`,
//! `CONCIERGE_TOKEN`), else the context (`--context`, else the current
//! one). `--local` works on the store directly instead ([`local`]), for
//! the first admin of a new gateway: it is named by `--data-dir`,
//! `--config` or `--redis-url`, and is never created unless asked to.
//! Either way the operations are [`ops`], and their results print the same.
//!
//! Passwords are read from the terminal without echo, or from standard
//! input with `--password-stdin`: never from a flag, which would put them
//! in the process list and the shell's history.

mod backend;
mod local;
mod login;
pub mod ops;
mod remote;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use uuid::Uuid;

pub use login::{context, login, ContextCommand};

use self::backend::Backend;
use self::ops::AdminError;
use crate::auth::Role;
use crate::protocol::admin::{NewUser, TokenFormat, TokenRequest};

/// Exit status: the command failed (a name or id that does not exist, an
/// account that exists, a store that cannot be reached).
const FAILED: u8 = 1;
/// Exit status: the command line or the input is wrong.
const INVALID: u8 = 2;
/// Exit status: the gateway could not be reached.
const UNREACHABLE: u8 = 3;
/// Exit status: the gateway refused the token (none, expired, not an
/// admin's).
const REFUSED: u8 = 4;

/// The exit statuses, for the end of these commands' `--help`.
pub const EXIT_STATUSES: &str = "Exit status:\n  \
    0  done\n  \
    1  failed: no such user, token or key; the account exists; the store failed\n  \
    2  invalid command line or input\n  \
    3  the gateway could not be reached\n  \
    4  the gateway refused the token (none, expired, not an admin's)";

/// Which gateway to ask, or which store to open with `--local`; accepted
/// before or after the subcommand.
#[derive(clap::Args)]
#[command(next_help_heading = "Which gateway (or, with --local, which store)")]
pub struct GatewayArgs {
    /// The gateway: http://HOST:PORT, https://…, ws://HOST:PORT/ws or
    /// HOST:PORT [default: the context's].
    #[arg(long, env = "CONCIERGE_URL", global = true, conflicts_with = "local")]
    url: Option<String>,
    /// An admin's token [default: the context's].
    #[arg(long, env = "CONCIERGE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// The context (from `concierge login`) to use [default: the current one].
    #[arg(
        long,
        env = "CONCIERGE_CONTEXT",
        global = true,
        conflicts_with = "local"
    )]
    context: Option<String>,
    /// Work on the store directly, not through a gateway: to create the
    /// first admin. Name the store with --data-dir, --config or --redis-url.
    #[arg(long, global = true)]
    local: bool,
    /// With --local: the gateway's data folder, whose concierge.db is the
    /// store [default: ./data, or the config's].
    #[arg(long, value_name = "DIR", global = true, requires = "local")]
    data_dir: Option<PathBuf>,
    /// With --local: the gateway's TOML config file, for its data_dir or
    /// Redis.
    #[arg(long, value_name = "FILE", global = true, requires = "local")]
    config: Option<PathBuf>,
    /// With --local: the cluster's Redis (redis://HOST:PORT).
    #[arg(long, value_name = "URL", global = true, requires = "local")]
    redis_url: Option<String>,
    /// Print results as JSON, one document per line.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create an account (asks for its password).
    #[command(after_help = "\
Examples:
  concierge user add alice --role operator
  # The password from a secret store instead of the terminal
  pass show concierge/bob | concierge user add bob --role viewer --password-stdin
  # The first admin, on the store of a gateway that is not running yet
  echo \"$PASSWORD\" | concierge user add ada --role admin --password-stdin --local --data-dir /var/lib/concierge")]
    Add {
        /// The account's name, which its clients identify as (also NAME_anything).
        name: String,
        /// What it may do: viewer (read), operator (command hosts), admin (also
        /// any VPN config and `vpn revoke`), or agent (a host).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Read the password from standard input (its first line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the accounts.
    #[command(after_help = "\
Examples:
  concierge user list")]
    List,
    /// Change an account's password; its earlier tokens are revoked.
    #[command(after_help = "\
Examples:
  concierge user passwd alice")]
    Passwd {
        /// The account's name, as `user list` shows it.
        name: String,
        /// Read the password from standard input (its first line).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove an account; its tokens are revoked at once. Tokens stay
    /// required when the last one is removed (see allow-anonymous).
    #[command(after_help = "\
Examples:
  concierge user remove bob")]
    Remove {
        /// The account's name, as `user list` shows it.
        name: String,
    },
    /// Let clients without a token connect again, as before the first
    /// account: only once no account is left.
    #[command(after_help = "\
Examples:
  concierge user allow-anonymous")]
    AllowAnonymous,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Issue a long-lived token, for a host (`--role agent`) or a program;
    /// prints the token on standard output.
    #[command(after_help = "\
Examples:
  # For the agent of host1, valid a year
  concierge token issue --name host1 --role agent > host1.token
  # For a dashboard that only reads, valid 30 days
  concierge token issue --name dashboard --role viewer --ttl 30d
  # For a Nest bot host (seed 000's client_token)
  concierge token issue --name nesthost --role agent --format nest")]
    Issue {
        /// The client name it may identify as (also NAME_anything); the
        /// token's user is that name too.
        #[arg(long)]
        name: String,
        /// What it may do: viewer, operator, admin, or agent (a host).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// How long it is valid: 365d, 12h, 30m...
        #[arg(long, default_value = "365d", value_parser = parse_ttl)]
        ttl: Duration,
        /// `jwt` for concierge clients; `nest` for a Nest bot host (seed 000's
        /// client_token: 64 hex, a dot, 8 hex of checksum; role agent).
        #[arg(long, default_value = "jwt", value_parser = parse_format)]
        format: TokenFormat,
    },
    /// List the long-lived tokens that have not expired.
    #[command(after_help = "\
Examples:
  concierge token list")]
    List,
    /// Revoke a listed token by its id (and every token refreshed from it), or
    /// every token of a user.
    #[command(after_help = "\
Examples:
  # An id from `token list`
  concierge token revoke 0b6f1c9e-5f2a-4a8e-9d2b-3c1f7e0a4b5d
  concierge token revoke --user host1")]
    Revoke {
        /// The token's id (from `token list`).
        #[arg(required_unless_present = "user", conflicts_with = "user")]
        id: Option<Uuid>,
        /// Revoke every token issued to this user (or host) so far.
        #[arg(long)]
        user: Option<String>,
    },
    /// Make a new signing key; tokens signed with the older keys stay valid
    /// until their keys are retired.
    #[command(after_help = "\
Examples:
  concierge token rotate-key")]
    RotateKey,
    /// List the signing keys.
    #[command(after_help = "\
Examples:
  concierge token keys")]
    Keys,
    /// Remove a signing key: every token it signed stops working.
    #[command(after_help = "\
Examples:
  # KEY_ID: the first column of a `token keys` line
  concierge token keys
  concierge token retire-key KEY_ID")]
    RetireKey {
        /// The key's id, as `token keys` lists it.
        id: String,
    },
}

#[derive(Subcommand)]
pub enum SettingsCommand {
    /// Print a user's settings.
    #[command(after_help = "\
Examples:
  concierge settings get alice")]
    Get {
        /// The user (an account, or a host with an issued token).
        user: String,
    },
    /// Set one of a user's settings.
    #[command(after_help = "\
Examples:
  concierge settings set alice storage_unit_of_measurement gib
  concierge settings set alice mem_or_ram ram")]
    Set {
        /// The user (an account, or a host with an issued token).
        user: String,
        /// storage_unit_of_measurement (bytes, gb, gib), mem_or_ram (mem, ram)
        /// or tutorial (stage_1, stage_2, stage_3).
        setting: String,
        /// The setting's new value.
        value: String,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|_| "expected a duration like 30d or 12h".to_owned())
}

fn parse_format(s: &str) -> Result<TokenFormat, String> {
    match s {
        "jwt" => Ok(TokenFormat::Jwt),
        "nest" => Ok(TokenFormat::Nest),
        _ => Err("expected jwt or nest".to_owned()),
    }
}

/// Prints an error and gives its exit status.
fn failed(e: &AdminError) -> ExitCode {
    eprintln!("concierge: {e}");
    ExitCode::from(match e {
        AdminError::Invalid(_) => INVALID,
        AdminError::Unreachable(_) => UNREACHABLE,
        AdminError::Unauthorized(_) | AdminError::Forbidden(_) => REFUSED,
        AdminError::NotFound(_) | AdminError::Exists(_) | AdminError::Failed(_) => FAILED,
    })
}

/// Runs `f` on the backend `args` name, on a runtime of its own.
fn run(
    args: GatewayArgs,
    creates: bool,
    f: impl AsyncFnOnce(&Backend, bool) -> Result<(), AdminError>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return failed(&AdminError::Failed(format!("cannot start: {e}"))),
    };
    let json = args.json;
    runtime.block_on(async move {
        let backend = match Backend::open(args, creates).await {
            Ok(backend) => backend,
            Err(e) => return failed(&e),
        };
        match f(&backend, json).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failed(&e),
        }
    })
}

/// A password: from standard input's first line, or asked twice on the
/// terminal without echo.
fn read_password(from_stdin: bool) -> Result<String, AdminError> {
    let unreadable =
        |e: std::io::Error| AdminError::Invalid(format!("cannot read the password: {e}"));
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(unreadable)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        return Err(AdminError::Invalid(
            "no terminal to ask for the password: pass --password-stdin and write it to standard input".into(),
        ));
    }
    let first = rpassword::prompt_password("Password: ").map_err(unreadable)?;
    let again = rpassword::prompt_password("Again: ").map_err(unreadable)?;
    if first != again {
        return Err(AdminError::Invalid("the two passwords differ".into()));
    }
    Ok(first)
}

/// When, in seconds since the epoch, as UTC.
fn when(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Prints `value` as one JSON document.
fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(value).unwrap_or_default());
}

pub fn user(args: GatewayArgs, command: UserCommand) -> ExitCode {
    // Asked before anything is opened, so a prompt is not held behind it.
    let password = match &command {
        UserCommand::Add { password_stdin, .. } | UserCommand::Passwd { password_stdin, .. } => {
            match read_password(*password_stdin) {
                Ok(p) => p,
                Err(e) => return failed(&e),
            }
        }
        _ => String::new(),
    };
    let creates = matches!(command, UserCommand::Add { .. });
    run(args, creates, async move |backend, json| {
        match command {
            UserCommand::Add { name, role, .. } => {
                let new = NewUser {
                    username: name,
                    role,
                    password,
                };
                let added = backend.add_user(&new).await?;
                if json {
                    print_json(&added);
                } else {
                    println!("created {} ({})", added.username, added.role);
                }
            }
            UserCommand::List => {
                let users = backend.list_users().await?;
                if json {
                    print_json(&users);
                    return Ok(());
                }
                println!("{:<24} {:<9} created", "user", "role");
                for a in users {
                    println!(
                        "{:<24} {:<9} {}",
                        a.username,
                        a.role.as_str(),
                        when(a.created)
                    );
                }
            }
            UserCommand::Passwd { name, .. } => {
                backend.set_password(&name, &password).await?;
                println!("changed the password of {name}; its earlier tokens are revoked");
            }
            UserCommand::Remove { name } => {
                let removed = backend.remove_user(&name).await?;
                if json {
                    print_json(&removed);
                    return Ok(());
                }
                println!("removed {name}; its tokens are revoked");
                if !removed.accounts_left {
                    println!(
                        "no account is left; tokens stay required (`concierge user \
                         allow-anonymous` lets clients without one in again)"
                    );
                }
            }
            UserCommand::AllowAnonymous => {
                backend.allow_anonymous().await?;
                println!("clients without a token may connect again (unless require_auth is set)");
            }
        }
        Ok(())
    })
}

pub fn token(args: GatewayArgs, command: TokenCommand) -> ExitCode {
    let creates = matches!(command, TokenCommand::Issue { .. });
    run(args, creates, async move |backend, json| {
        match command {
            TokenCommand::Issue {
                name,
                role,
                ttl,
                format,
            } => {
                let issued = backend
                    .issue_token(&TokenRequest {
                        name,
                        role,
                        ttl_secs: ttl.as_secs(),
                        format,
                    })
                    .await?;
                if json {
                    print_json(&issued);
                    return Ok(());
                }
                let kind = match issued.format {
                    TokenFormat::Jwt => "token",
                    TokenFormat::Nest => "Nest token",
                };
                eprintln!(
                    "{kind} {} for {} ({}), valid until {}",
                    issued.id,
                    issued.name,
                    issued.role,
                    when(issued.expires)
                );
                println!("{}", issued.token);
            }
            TokenCommand::List => {
                let tokens = backend.list_tokens().await?;
                if json {
                    print_json(&tokens);
                    return Ok(());
                }
                println!(
                    "{:<36} {:<24} {:<9} {:<20} expires",
                    "id", "name", "role", "issued"
                );
                for t in tokens {
                    let revoked = if t.revoked { " (revoked)" } else { "" };
                    println!(
                        "{:<36} {:<24} {:<9} {:<20} {}{revoked}",
                        t.id,
                        t.name,
                        t.role.as_str(),
                        when(t.issued),
                        when(t.expires)
                    );
                }
            }
            TokenCommand::Revoke { id: Some(id), .. } => {
                backend.revoke_token(id).await?;
                println!("revoked {id}");
            }
            TokenCommand::Revoke {
                user: Some(user), ..
            } => {
                backend.revoke_user_tokens(&user).await?;
                println!("revoked every token of {user} issued so far");
            }
            TokenCommand::Revoke { .. } => {
                return Err(AdminError::Invalid("name a token id or --user".into()))
            }
            TokenCommand::RotateKey => {
                let key = backend.rotate_key().await?;
                if json {
                    print_json(&key);
                } else {
                    println!("new signing key {}", key.id);
                }
            }
            TokenCommand::Keys => {
                let keys = backend.keys().await?;
                if json {
                    print_json(&keys);
                    return Ok(());
                }
                for key in keys {
                    println!("{} {}", key.id, when(key.created));
                }
            }
            TokenCommand::RetireKey { id } => {
                backend.retire_key(&id).await?;
                println!(
                    "retired {id}: the tokens it signed no longer verify, and their sockets \
                     are closed"
                );
            }
        }
        Ok(())
    })
}

pub fn settings(args: GatewayArgs, command: SettingsCommand) -> ExitCode {
    run(args, false, async move |backend, json| {
        let all = match command {
            SettingsCommand::Get { user } => backend.get_settings(&user).await?,
            SettingsCommand::Set {
                user,
                setting,
                value,
            } => backend.set_setting(&user, &setting, &value).await?,
        };
        if json {
            print_json(&all);
            return Ok(());
        }
        for (name, value) in all {
            println!("{name} = {value}");
        }
        Ok(())
    })
}
