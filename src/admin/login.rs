//! `concierge login` and `concierge context`: a person's credential for a
//! gateway, kept as a context (see [`concierge_client::context`]) that
//! `ctl`, the admin commands and the agent use.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde::Serialize;
use serde_json::Value;

use super::ops::AdminError;
use super::{failed, print_json, read_password};
use concierge_client::context::{why_unreachable, Context, Contexts, GatewayUrl};

#[derive(Subcommand)]
pub enum ContextCommand {
    /// List the contexts; `*` marks the current one.
    #[command(after_help = "\
Examples:
  concierge context list
  concierge context list --json")]
    List {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make NAME the current context.
    #[command(after_help = "\
Examples:
  # Log in to two gateways, then go back to the first
  concierge login http://127.0.0.1:8080 alice --context dev
  concierge login https://gw.example.org ada --context prod
  concierge context use dev")]
    Use {
        /// The context's name (from `context list`).
        name: String,
    },
    /// Show a context's gateway and user (never its token).
    #[command(after_help = "\
Examples:
  concierge context show
  concierge context show prod --json")]
    Show {
        /// The context's name [default: the current one].
        name: Option<String>,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget a context and its token.
    #[command(after_help = "\
Examples:
  concierge context delete prod")]
    Delete {
        /// The context's name (from `context list`).
        name: String,
    },
}

/// A context as listed: everything but the token.
#[derive(Serialize)]
struct Listed<'a> {
    name: &'a str,
    url: &'a str,
    user: &'a str,
    current: bool,
}

/// `concierge login URL USER [--context NAME]`: asks the gateway at URL
/// (any spelling [`GatewayUrl::parse`] reads) for a token, keeps it as the
/// context NAME (by default the gateway's HOST:PORT) and makes that the
/// current context.
pub fn login(url: &str, username: &str, context: Option<String>, password_stdin: bool) -> ExitCode {
    let gateway = match GatewayUrl::parse(url) {
        Ok(gateway) => gateway,
        Err(e) => return failed(&AdminError::Invalid(e.to_string())),
    };
    let password = match read_password_once(password_stdin) {
        Ok(p) => p,
        Err(e) => return failed(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return failed(&AdminError::Failed(format!("cannot start: {e}"))),
    };
    let (token, validity) = match runtime.block_on(ask(&gateway, username, &password)) {
        Ok(answer) => answer,
        Err(e) => return failed(&e),
    };
    let name = context.unwrap_or_else(|| gateway.authority());
    let saved = Contexts::load().and_then(|mut contexts| {
        contexts.contexts.insert(
            name.clone(),
            Context {
                url: gateway.to_string(),
                user: username.to_owned(),
                token,
            },
        );
        contexts.current = Some(name.clone());
        contexts.save()
    });
    match saved {
        Ok(path) => {
            println!(
                "logged in to {gateway} as {username}; context {name:?} (now the current one) \
                 kept in {}; the token is valid for {validity} s",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => failed(&AdminError::Failed(e.to_string())),
    }
}

/// `POST /auth/token`: the token and its validity (seconds).
async fn ask(
    gateway: &GatewayUrl,
    username: &str,
    password: &str,
) -> Result<(String, u64), AdminError> {
    let endpoint = gateway.http("/auth/token");
    let body = serde_json::json!({ "username": username, "password": password });
    let response = reqwest::Client::new()
        .post(&endpoint)
        .timeout(Duration::from_secs(30))
        .json(&body)
        .send()
        .await
        .map_err(|e| {
            AdminError::Unreachable(format!("cannot reach {gateway}: {}", why_unreachable(&e)))
        })?;
    let status = response.status();
    let answer: Value = response.json().await.map_err(|_| {
        AdminError::Failed(format!(
            "{gateway} answered {status} to a login without a concierge gateway's answer: is \
             it a concierge gateway (its address, not the console's or a proxy's)?"
        ))
    })?;
    if let Some(token) = answer.get("token").and_then(Value::as_str) {
        let validity = answer.get("validity").and_then(Value::as_u64).unwrap_or(0);
        return Ok((token.to_owned(), validity));
    }
    let reason = answer
        .get("reason")
        .and_then(Value::as_str)
        .unwrap_or("no token in the answer");
    Err(AdminError::Unauthorized(format!(
        "login refused by {gateway}: {reason}"
    )))
}

fn read_password_once(from_stdin: bool) -> Result<String, AdminError> {
    if from_stdin || !std::io::stdin().is_terminal() {
        return read_password(true);
    }
    rpassword::prompt_password("Password: ")
        .map_err(|e| AdminError::Invalid(format!("cannot read the password: {e}")))
}

/// `concierge context …`.
pub fn context(command: ContextCommand) -> ExitCode {
    match context_command(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(&e),
    }
}

fn context_command(command: ContextCommand) -> Result<(), AdminError> {
    let unusable = |e: concierge_client::context::ContextError| AdminError::Invalid(e.to_string());
    let mut contexts = Contexts::load().map_err(unusable)?;
    let current = contexts.current.clone();
    let is_current = |name: &str| current.as_deref() == Some(name);
    match command {
        ContextCommand::List { json } => {
            let listed: Vec<Listed> = contexts
                .contexts
                .iter()
                .map(|(name, c)| Listed {
                    name,
                    url: &c.url,
                    user: &c.user,
                    current: is_current(name),
                })
                .collect();
            if json {
                print_json(&listed);
                return Ok(());
            }
            if listed.is_empty() {
                eprintln!("no context yet: `concierge login http://HOST:8080 USER` makes one");
                return Ok(());
            }
            println!("  {:<24} {:<32} user", "context", "gateway");
            for l in listed {
                let mark = if l.current { '*' } else { ' ' };
                println!("{mark} {:<24} {:<32} {}", l.name, l.url, l.user);
            }
        }
        ContextCommand::Use { name } => {
            contexts
                .get(&name)
                .map_err(|e| AdminError::NotFound(e.to_string()))?;
            contexts.current = Some(name.clone());
            contexts.save().map_err(unusable)?;
            println!("now using context {name:?}");
        }
        ContextCommand::Show { name, json } => {
            let Some(name) = name.or(current.clone()) else {
                return Err(AdminError::NotFound(
                    "no current context: `concierge login http://HOST:8080 USER` makes one".into(),
                ));
            };
            let c = contexts
                .get(&name)
                .map_err(|e| AdminError::NotFound(e.to_string()))?;
            let shown = Listed {
                name: &name,
                url: &c.url,
                user: &c.user,
                current: is_current(&name),
            };
            if json {
                print_json(&shown);
            } else {
                println!(
                    "context: {}{}\ngateway: {}\nuser:    {}",
                    shown.name,
                    if shown.current { " (current)" } else { "" },
                    shown.url,
                    shown.user
                );
            }
        }
        ContextCommand::Delete { name } => {
            contexts
                .get(&name)
                .map_err(|e| AdminError::NotFound(e.to_string()))?;
            contexts.contexts.remove(&name);
            if is_current(&name) {
                contexts.current = None;
            }
            contexts.save().map_err(unusable)?;
            println!("forgot context {name:?} and its token");
        }
    }
    Ok(())
}
