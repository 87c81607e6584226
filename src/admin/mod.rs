//! The commands that manage who may connect: `concierge user`, `token`,
//! `settings` and `login`.
//!
//! `user`, `token` and `settings` work on the store directly (the file in
//! the data folder alone, Redis in a cluster), beside a running gateway:
//! what they change reaches every replica within a second. They take the
//! gateway's own settings (`--config`, `--data-dir`, `--redis-url`) to
//! find it. `login` asks a gateway over HTTP, for a person, and keeps the
//! token in the user's config folder.
//!
//! Passwords are read from the terminal without echo, or from standard
//! input with `--password-stdin`: never from a flag, which would put them
//! in the process list and the shell's history.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use uuid::Uuid;

use crate::auth::{accounts, tokens, user_settings, Auth, AuthError, Role, TokenKind};
use crate::config::{Settings, SettingsLayer};
use crate::protocol::CtlName;

/// Exit status: the command failed (a name that does not exist, a store
/// that cannot be reached).
const FAILED: u8 = 1;
/// Exit status: the command line or the settings are wrong.
const INVALID: u8 = 2;

/// Where the store is: the gateway's settings, accepted before or after
/// the subcommand (`concierge user add alice --data-dir D`).
pub struct StoreArgs {
    config: Option<PathBuf>,
    settings: SettingsLayer,
}

impl clap::Args for StoreArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let config = clap::Arg::new("config")
            .long("config")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help(format!(
                "TOML config file of the gateway (see `concierge config`) [env: {}]",
                crate::config::CONFIG_ENV
            ));
        SettingsLayer::augment_args(cmd.arg(config)).mut_args(|a| a.global(true))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl clap::FromArgMatches for StoreArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(StoreArgs {
            config: matches.get_one::<PathBuf>("config").cloned(),
            settings: SettingsLayer::from_arg_matches(matches)?,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create an account (asks for its password).
    #[command(after_help = "\
Examples:
  concierge user add alice --role operator
  # The password from a secret store instead of the terminal
  pass show concierge/bob | concierge user add bob --role viewer --password-stdin")]
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
    /// Change an account's password.
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
        #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// `jwt` for concierge clients; `nest` for a Nest bot host (seed 000's
        /// client_token: 64 hex, a dot, 8 hex of checksum; role agent).
        #[arg(long, default_value = "jwt", value_parser = ["jwt", "nest"])]
        format: String,
    },
    /// List the long-lived tokens that have not expired.
    #[command(after_help = "\
Examples:
  concierge token list")]
    List,
    /// Revoke a token by its id (and every token refreshed from it), or
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
        /// The user's name.
        user: String,
    },
    /// Set one of a user's settings.
    #[command(after_help = "\
Examples:
  concierge settings set alice storage_unit_of_measurement gib
  concierge settings set alice mem_or_ram ram")]
    Set {
        /// The user's name.
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

/// Runs `f` with the store and an [`Auth`] on it, and turns its outcome
/// into an exit status.
fn with_auth(
    args: StoreArgs,
    f: impl AsyncFnOnce(&Arc<Auth>) -> Result<(), AuthError>,
) -> ExitCode {
    let settings = match Settings::from_process(args.config, args.settings) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("concierge: {e}");
            return ExitCode::from(INVALID);
        }
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(status) => return status,
    };
    runtime.block_on(async move {
        let store = match crate::cluster::open_store(&settings.cluster()).await {
            Ok(store) => store,
            Err(e) => {
                eprintln!("concierge: {e}");
                return ExitCode::from(FAILED);
            }
        };
        let result = match Auth::open(store, &settings).await {
            Ok(auth) => f(&auth).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e @ AuthError::Invalid(_)) => {
                eprintln!("concierge: {e}");
                ExitCode::from(INVALID)
            }
            Err(e) => {
                eprintln!("concierge: {e}");
                ExitCode::from(FAILED)
            }
        }
    })
}

/// The runtime a command runs its requests on.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("concierge: cannot start: {e}");
            ExitCode::from(FAILED)
        })
}

/// A password: from standard input's first line, or asked twice on the
/// terminal without echo.
fn read_password(from_stdin: bool) -> Result<String, AuthError> {
    let unreadable =
        |e: std::io::Error| AuthError::Invalid(format!("cannot read the password: {e}"));
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(unreadable)?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        return Err(AuthError::Invalid(
            "no terminal to ask for the password: pass --password-stdin and write it to standard input".into(),
        ));
    }
    let first = rpassword::prompt_password("Password: ").map_err(unreadable)?;
    let again = rpassword::prompt_password("Again: ").map_err(unreadable)?;
    if first != again {
        return Err(AuthError::Invalid("the two passwords differ".into()));
    }
    Ok(first)
}

/// When, in seconds since the epoch, as UTC.
fn when(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

pub fn user(args: StoreArgs, command: UserCommand) -> ExitCode {
    // Asked before the store is opened, so a prompt is not held behind it.
    let password = match &command {
        UserCommand::Add { password_stdin, .. } | UserCommand::Passwd { password_stdin, .. } => {
            match read_password(*password_stdin) {
                Ok(p) => Some(p),
                Err(e) => {
                    eprintln!("concierge: {e}");
                    return ExitCode::from(INVALID);
                }
            }
        }
        _ => None,
    };
    let password = password.unwrap_or_default();
    with_auth(args, async move |auth| {
        let store = auth.store();
        match command {
            UserCommand::Add { name, role, .. } => {
                check_apart(store, &name, role).await?;
                accounts::add(store, &name, role, &password).await?;
                println!("created {name} ({role})");
            }
            UserCommand::List => {
                println!("{:<24} {:<9} created", "user", "role");
                for a in accounts::list(store).await? {
                    println!(
                        "{:<24} {:<9} {}",
                        a.username,
                        a.role.as_str(),
                        when(a.created)
                    );
                }
            }
            UserCommand::Passwd { name, .. } => {
                auth.set_password(&name, &password).await?;
                println!("changed the password of {name}; its earlier tokens are revoked");
            }
            UserCommand::Remove { name } => {
                if !auth.remove_user(&name).await? {
                    return Err(AuthError::NotFound(format!("no account named {name:?}")));
                }
                println!("removed {name}; its tokens are revoked");
                if !accounts::any(store).await? {
                    println!(
                        "no account is left; tokens stay required (`concierge user \
                         allow-anonymous` lets clients without one in again)"
                    );
                }
            }
            UserCommand::AllowAnonymous => {
                accounts::allow_anonymous(store).await?;
                println!("clients without a token may connect again (unless require_auth is set)");
            }
        }
        Ok(())
    })
}

/// A host may not be named like a ctl command (`NAME_ctl_` and six hex
/// digits): host NAME's token allows those names for its own ctl.
fn check_host_name(name: &str) -> Result<(), AuthError> {
    match CtlName::owner(name) {
        Some(owner) => Err(AuthError::Invalid(format!(
            "{name:?} has the shape of a ctl command's name (host {owner:?}'s): a host may not be named so"
        ))),
        None => Ok(()),
    }
}

/// People and hosts are named apart. A person's token also allows the
/// person's name followed by `_` and anything (`alice_ctl`), so a host named
/// `alice_db` could be taken by alice while its agent is offline: a host
/// name under a person's names is refused, and so is a person's name over a
/// host's (from the accounts and the issued tokens).
async fn check_apart(
    store: &Arc<dyn crate::cluster::store::Store>,
    name: &str,
    role: Role,
) -> Result<(), AuthError> {
    let under = |person: &str, host: &str| {
        host.strip_prefix(person)
            .is_some_and(|rest| rest.starts_with('_'))
    };
    let mut hosts = Vec::new();
    let mut people = Vec::new();
    for a in accounts::list(store).await? {
        if a.role == Role::Agent {
            hosts.push(a.username);
        } else {
            people.push(a.username);
        }
    }
    for c in tokens::list_issued(store).await? {
        if c.is_host() {
            hosts.push(c.name);
        } else {
            people.push(c.name);
        }
    }
    if role == Role::Agent {
        if let Some(person) = people.iter().find(|p| under(p, name)) {
            return Err(AuthError::Invalid(format!(
                "host {name:?} would be among the names {person:?}'s tokens allow ({person}_…): name the host apart"
            )));
        }
    } else if let Some(host) = hosts.iter().find(|h| under(name, h)) {
        return Err(AuthError::Invalid(format!(
            "{name:?}'s tokens would allow host {host:?}'s name ({name}_…): name the person apart"
        )));
    }
    Ok(())
}

pub fn token(args: StoreArgs, command: TokenCommand) -> ExitCode {
    with_auth(args, async move |auth| {
        let store = auth.store();
        match command {
            TokenCommand::Issue {
                name,
                role,
                ttl,
                format,
            } if format == "nest" => {
                accounts::check_username(&name)?;
                check_host_name(&name)?;
                check_apart(store, &name, role).await?;
                if role != Role::Agent {
                    return Err(AuthError::Invalid(
                        "a Nest token is a host's: issue it with --role agent".into(),
                    ));
                }
                let (token, claims) = crate::auth::nest::issue(store, &name, ttl).await?;
                eprintln!(
                    "Nest token {} for {name} (agent), valid until {}",
                    claims.jti,
                    when(claims.exp)
                );
                println!("{token}");
            }
            TokenCommand::Issue {
                name, role, ttl, ..
            } => {
                accounts::check_username(&name)?;
                if role == Role::Agent {
                    check_host_name(&name)?;
                }
                check_apart(store, &name, role).await?;
                let issued = auth
                    .issue(&name, &name, role, ttl, TokenKind::Issued)
                    .await?;
                eprintln!(
                    "token {} for {name} ({role}), valid until {}",
                    issued.claims.jti,
                    when(issued.claims.exp)
                );
                println!("{}", issued.token);
            }
            TokenCommand::List => {
                println!(
                    "{:<36} {:<24} {:<9} {:<20} expires",
                    "id", "name", "role", "issued"
                );
                for c in tokens::list_issued(store).await? {
                    let revoked = if auth.check(&c).is_err() {
                        " (revoked)"
                    } else {
                        ""
                    };
                    println!(
                        "{:<36} {:<24} {:<9} {:<20} {}{revoked}",
                        c.jti,
                        c.name,
                        c.role.as_str(),
                        when(c.iat),
                        when(c.exp)
                    );
                }
            }
            TokenCommand::Revoke { id: Some(id), .. } => {
                auth.revoke_token(id).await?;
                println!("revoked {id}");
            }
            TokenCommand::Revoke {
                user: Some(user), ..
            } => {
                auth.revoke_subject(&user).await?;
                println!("revoked every token of {user} issued so far");
            }
            TokenCommand::Revoke { .. } => {
                return Err(AuthError::Invalid("name a token id or --user".into()))
            }
            TokenCommand::RotateKey => {
                let kid = tokens::rotate(store).await?;
                println!("new signing key {kid}");
            }
            TokenCommand::Keys => {
                for (kid, created) in tokens::Keys::load(store).await?.ids() {
                    println!("{kid} {}", when(created));
                }
            }
            TokenCommand::RetireKey { id } => {
                if !tokens::retire(store, &id).await? {
                    return Err(AuthError::NotFound(format!("no signing key {id:?}")));
                }
                println!(
                    "retired {id}: the tokens it signed no longer verify, and their sockets \
                     are closed"
                );
            }
        }
        Ok(())
    })
}

pub fn settings(args: StoreArgs, command: SettingsCommand) -> ExitCode {
    with_auth(args, async move |auth| {
        let store = auth.store();
        let (user, all) = match command {
            SettingsCommand::Get { user } => {
                let all = user_settings::get(store, &user).await?;
                (user, all)
            }
            SettingsCommand::Set {
                user,
                setting,
                value,
            } => {
                let all = user_settings::set(store, &user, &setting, &value).await?;
                (user, all)
            }
        };
        if accounts::get(store, &user).await?.is_none() {
            eprintln!("concierge: note: no account is named {user:?}");
        }
        for (name, value) in all {
            println!("{name} = {value}");
        }
        Ok(())
    })
}

/// `concierge login URL USERNAME`: asks the gateway at URL for a token and
/// keeps it (mode 0600).
pub fn login(url: &str, username: &str, password_stdin: bool) -> ExitCode {
    let password = match read_password_once(password_stdin) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("concierge: {e}");
            return ExitCode::from(INVALID);
        }
    };
    let endpoint = format!("{}/auth/token", url.trim_end_matches('/'));
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(status) => return status,
    };
    let body = serde_json::json!({ "username": username, "password": password });
    let answer = runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(&endpoint)
            .timeout(Duration::from_secs(30))
            .json(&body)
            .send()
            .await?;
        response.json::<serde_json::Value>().await
    });
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("concierge: cannot reach {endpoint}: {e}");
            return ExitCode::from(FAILED);
        }
    };
    let Some(token) = answer.get("token").and_then(|t| t.as_str()) else {
        let reason = answer
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or("no token in the answer");
        eprintln!("concierge: login refused: {reason}");
        return ExitCode::from(FAILED);
    };
    let Some(path) = concierge_client::token_file() else {
        eprintln!("concierge: no config folder to keep the token in (HOME is not set)");
        return ExitCode::from(FAILED);
    };
    match save_private(&path, token) {
        Ok(()) => {
            let validity = answer.get("validity").and_then(|v| v.as_u64()).unwrap_or(0);
            println!(
                "logged in as {username}; token kept in {} for {validity} s",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("concierge: cannot write {}: {e}", path.display());
            ExitCode::from(FAILED)
        }
    }
}

fn read_password_once(from_stdin: bool) -> Result<String, AuthError> {
    if from_stdin || !std::io::stdin().is_terminal() {
        return read_password(true);
    }
    rpassword::prompt_password("Password: ")
        .map_err(|e| AuthError::Invalid(format!("cannot read the password: {e}")))
}

/// Writes a file only its owner can read, created so from the start.
fn save_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")
}
