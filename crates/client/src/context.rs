//! Contexts, as kubectl's and tsh's: which gateway a person's tools talk to
//! and with which credential.
//!
//! `concierge login URL USER` stores a context (its name, the gateway's
//! address, the user, the token) in `<config dir>/concierge/contexts.json`
//! (mode 0600) and makes it the current one; `ctl`, `agent` and the admin
//! commands then find the gateway and the token there ([`resolve`]), and
//! `--context NAME` picks another. Explicit `--url` and `--token` (or
//! `CONCIERGE_URL`, `CONCIERGE_TOKEN`) win over the context; a context's
//! token is only ever sent to that context's gateway.
//!
//! Before contexts, `login` kept the token alone in
//! `<config dir>/concierge/token`. That file is still read, as it was
//! then (the token, for whatever gateway is named), while no contexts file
//! exists; the next `login` writes a context and the old file is no longer
//! read.
//!
//! A gateway's address is accepted in every spelling a person types
//! ([`GatewayUrl::parse`]): `http://h:8080`, `https://h`, `ws://h:8080/ws`,
//! `wss://h/ws`, `h:8080` or `h`; a wrong one gets an error that says how
//! to write it.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The gateway's port when an address names none and no scheme either
/// (`concierge serve`'s default).
pub const DEFAULT_PORT: u16 = 8080;

/// The gateway tools talk to with no context and no `--url`.
pub const DEFAULT_GATEWAY: &str = "http://127.0.0.1:8080";

/// What a context, an address or the contexts file got wrong.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// An address that is not a gateway's, and how to write it.
    #[error("{0}")]
    Url(String),
    #[error(
        "no context named {name:?} ({known}): `concierge login URL USER --context {name}` makes it"
    )]
    Unknown { name: String, known: String },
    /// The contexts file cannot be read or written.
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("no config folder to keep contexts in (HOME is not set)")]
    NoConfigDir,
}

/// A gateway's base address: `http://HOST:PORT` or `https://HOST:PORT`,
/// from which its WebSocket URL and its HTTP endpoints are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayUrl(url::Url);

impl GatewayUrl {
    /// Reads an address as a person gives it: `http(s)://HOST[:PORT]`,
    /// `ws(s)://HOST[:PORT][/ws]`, or `HOST[:PORT]` (http, port 8080 when
    /// none is given). Anything else is an error saying how to write it.
    pub fn parse(given: &str) -> Result<GatewayUrl, ContextError> {
        let how = "give the gateway as http://HOST:PORT (https:// with TLS; ws://HOST:PORT/ws and HOST:PORT work too)";
        let given = given.trim();
        if given.is_empty() {
            return Err(ContextError::Url(format!("no gateway address: {how}")));
        }
        let (scheme, rest, defaulted) = match given.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest, false),
            None => ("http".to_owned(), given, true),
        };
        let secure = match scheme.as_str() {
            "http" | "ws" => false,
            "https" | "wss" => true,
            other => {
                return Err(ContextError::Url(format!(
                    "{given:?}: a gateway is not reached over {other}://: {how}"
                )))
            }
        };
        let bad = |why: &str| ContextError::Url(format!("{given:?}: {why}: {how}"));
        let mut url = url::Url::parse(&format!(
            "{}://{rest}",
            if secure { "https" } else { "http" }
        ))
        .map_err(|e| bad(&e.to_string()))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "a user belongs in `concierge login URL USER`, not in the address",
            ));
        }
        if !matches!(url.path(), "" | "/" | "/ws" | "/ws/") {
            return Err(bad(&format!(
                "the gateway is at the root, not at {}",
                url.path()
            )));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("an address has no query nor fragment"));
        }
        if defaulted && url.port().is_none() {
            url.set_port(Some(DEFAULT_PORT))
                .map_err(|()| bad("no port can be set"))?;
        }
        url.set_path("");
        Ok(GatewayUrl(url))
    }

    /// The WebSocket endpoint: `ws://HOST:PORT/ws` (`wss://` with TLS).
    pub fn ws(&self) -> String {
        let scheme = if self.0.scheme() == "https" {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://{}/ws", self.authority())
    }

    /// An HTTP endpoint: `PATH` (starting with `/`) on the gateway.
    pub fn http(&self, path: &str) -> String {
        format!("{}://{}{path}", self.0.scheme(), self.authority())
    }

    /// `HOST:PORT` (the port only when the scheme's default is not it).
    pub fn authority(&self) -> String {
        let host = self.0.host_str().unwrap_or_default();
        match self.0.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }
}

impl fmt::Display for GatewayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.0.scheme(), self.authority())
    }
}

/// What the contexts file holds about one gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// The gateway's base address (`http://HOST:PORT`).
    pub url: String,
    pub user: String,
    pub token: String,
}

/// The contexts file: every context by name, and the current one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contexts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// `<config dir>/concierge`, where `login` keeps what it keeps.
fn config_folder() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("concierge"))
}

/// Where the contexts are kept: `<config dir>/concierge/contexts.json`.
pub fn contexts_file() -> Option<PathBuf> {
    config_folder().map(|d| d.join("contexts.json"))
}

/// Where `concierge login` kept the token before contexts (read while no
/// contexts file exists, see the module's doc).
fn legacy_token_file() -> Option<PathBuf> {
    config_folder().map(|d| d.join("token"))
}

impl Contexts {
    /// The contexts file's contents; none when it does not exist.
    pub fn load() -> Result<Contexts, ContextError> {
        let Some(path) = contexts_file() else {
            return Ok(Contexts::default());
        };
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| file_error(&path, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Contexts::default()),
            Err(e) => Err(file_error(&path, e)),
        }
    }

    /// Writes the file whole, readable by its owner only, replacing the
    /// previous one at once (a reader never sees half of it).
    pub fn save(&self) -> Result<PathBuf, ContextError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = contexts_file().ok_or(ContextError::NoConfigDir)?;
        let folder = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(folder).map_err(|e| file_error(folder, e))?;
        let partial = path.with_extension("json.partial");
        let text = serde_json::to_vec_pretty(self).map_err(|e| file_error(&path, e))?;
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .and_then(|mut file| {
                file.write_all(&text)?;
                file.write_all(b"\n")?;
                file.sync_all()
            });
        written.map_err(|e| file_error(&partial, e))?;
        std::fs::rename(&partial, &path).map_err(|e| file_error(&path, e))?;
        Ok(path)
    }

    /// The context named `name`, or an error listing the known ones.
    pub fn get(&self, name: &str) -> Result<&Context, ContextError> {
        self.contexts
            .get(name)
            .ok_or_else(|| ContextError::Unknown {
                name: name.to_owned(),
                known: self.known(),
            })
    }

    /// The known contexts' names, for an error message.
    fn known(&self) -> String {
        if self.contexts.is_empty() {
            "there is none yet".to_owned()
        } else {
            let names: Vec<&str> = self.contexts.keys().map(String::as_str).collect();
            format!("known: {}", names.join(", "))
        }
    }
}

fn file_error(path: &Path, e: impl fmt::Display) -> ContextError {
    ContextError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

/// Which gateway to talk to and with which token, as the command line,
/// the environment and the contexts decide.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub gateway: GatewayUrl,
    pub token: Option<String>,
    /// The context used, if any.
    pub context: Option<String>,
}

/// Resolves `--context`, `--url` and `--token` (each `None` when not
/// given): an explicit URL or token wins; otherwise the named context, or
/// else the current one, gives them; without any, [`DEFAULT_GATEWAY`]
/// (and the token of the pre-contexts `token` file, if there is one). A
/// context's token goes only to its own gateway: with `--url` naming
/// another, no token is taken from it.
pub fn resolve(
    context: Option<&str>,
    url: Option<&str>,
    token: Option<String>,
) -> Result<Resolved, ContextError> {
    let explicit = url.map(GatewayUrl::parse).transpose()?;
    let contexts = Contexts::load()?;
    let chosen = match context {
        Some(name) => Some((name.to_owned(), contexts.get(name)?)),
        None => contexts
            .current
            .as_deref()
            .and_then(|name| Some((name.to_owned(), contexts.contexts.get(name)?))),
    };
    let Some((name, chosen)) = chosen else {
        let token = token.or_else(|| {
            if contexts_file().is_some_and(|p| p.exists()) {
                return None;
            }
            let text = std::fs::read_to_string(legacy_token_file()?).ok()?;
            let token = text.trim();
            (!token.is_empty()).then(|| token.to_owned())
        });
        let gateway = match explicit {
            Some(gateway) => gateway,
            None => GatewayUrl::parse(DEFAULT_GATEWAY)?,
        };
        return Ok(Resolved {
            gateway,
            token,
            context: None,
        });
    };
    let own = GatewayUrl::parse(&chosen.url)?;
    match explicit {
        Some(gateway) if gateway != own => Ok(Resolved {
            gateway,
            token,
            context: None,
        }),
        _ => Ok(Resolved {
            gateway: own,
            token: token.or_else(|| Some(chosen.token.clone())),
            context: Some(name),
        }),
    }
}

/// Why a gateway could not be reached, with what to do about it, from the
/// error a connection attempt gave (its sources are searched for the
/// operating system's reason).
pub fn why_unreachable(error: &(dyn std::error::Error + 'static)) -> String {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            let why = match io.kind() {
                ConnectionRefused => "nothing listens there (connection refused): is the gateway running? Start it with `concierge`, or name the right one with --url or --context",
                TimedOut => "no answer (timed out): check the address, the port and any firewall between",
                ConnectionReset | ConnectionAborted | UnexpectedEof => "the connection was cut: is that a concierge gateway, and does it speak TLS (then use https:// or wss://)?",
                _ => "",
            };
            if !why.is_empty() {
                return why.to_owned();
            }
        }
        let text = e.to_string();
        if text.contains("failed to lookup address") || text.contains("Name or service not known") {
            return "no such host (the name does not resolve): check its spelling".to_owned();
        }
        if text.contains("InvalidContentType")
            || text.contains("invalid HTTP version")
            || text.contains("CorruptMessage")
        {
            return "TLS and plain HTTP mixed up: use http:// or ws:// for a gateway without TLS, https:// or wss:// for one with it".to_owned();
        }
        source = e.source();
    }
    error.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_a_person_types_names_the_same_gateway() {
        for given in [
            "http://h:8080",
            "ws://h:8080/ws",
            "ws://h:8080",
            "h:8080",
            "h",
            "HTTP://h:8080/",
        ] {
            let url = GatewayUrl::parse(given).unwrap();
            assert_eq!(url.to_string(), "http://h:8080", "{given}");
            assert_eq!(url.ws(), "ws://h:8080/ws", "{given}");
        }
        let secure = GatewayUrl::parse("wss://h/ws").unwrap();
        assert_eq!(secure.to_string(), "https://h");
        assert_eq!(secure.http("/admin/users"), "https://h/admin/users");
        assert_eq!(GatewayUrl::parse("https://h").unwrap(), secure);
        assert_eq!(
            GatewayUrl::parse("[::1]:9000").unwrap().ws(),
            "ws://[::1]:9000/ws"
        );
    }

    #[test]
    fn a_wrong_address_says_how_to_write_it() {
        for given in [
            "ftp://h",
            "",
            "http://",
            "http://h:8080/console",
            "h:port",
            "http://u@h",
        ] {
            let e = GatewayUrl::parse(given).unwrap_err().to_string();
            assert!(e.contains("http://HOST:PORT"), "{given}: {e}");
        }
    }
}
