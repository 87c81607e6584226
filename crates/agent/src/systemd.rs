//! The agent's window on systemd: listing services, reading one's state and
//! starting, stopping, restarting or reloading it, over D-Bus.
//!
//! The agent talks to the service manager (`org.freedesktop.systemd1` on the
//! system bus, or a user's manager on the session bus) directly rather than
//! by running `systemctl`:
//!
//! - the answers are typed values (`ActiveState`, `MainPID`...), not text
//!   whose format changes between systemd versions and locales;
//! - errors come with a name (`org.freedesktop.systemd1.NoSuchUnit`,
//!   `org.freedesktop.DBus.Error.AccessDenied`), so each maps to a stable
//!   [`Reason`] instead of being guessed from an exit status;
//! - a job is followed to its end by the `JobRemoved` signal and its result
//!   (`done`, `failed`, `timeout`...), which is what `systemctl` itself does,
//!   without a process per request;
//! - unit names from remote clients never reach a command line.
//!
//! One connection is opened on first use and kept; when the bus drops it, the
//! next request opens a new one.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use zbus::proxy::CacheProperties;
use zbus::{proxy, Connection, OwnedObjectPath};

use concierge_protocol::agent::{Failure, Reason};

/// How long a start, stop, restart or reload job may take before the request
/// fails with [`Reason::Timeout`] (the job itself goes on in systemd).
const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one D-Bus method call may go unanswered.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting to the bus may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// systemd's limit on a unit name (`UNIT_NAME_MAX` less the NUL).
const UNIT_NAME_MAX: usize = 255;

/// The unit types systemd knows: a name ending in one of these has a suffix.
const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".device",
    ".mount",
    ".automount",
    ".swap",
    ".target",
    ".path",
    ".timer",
    ".slice",
    ".scope",
];

/// Which service manager: the system's (system bus) or the user's the agent
/// runs as (session bus).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    System,
    User,
}

impl FromStr for Manager {
    type Err = String;

    fn from_str(s: &str) -> Result<Manager, String> {
        match s {
            "system" => Ok(Manager::System),
            "user" => Ok(Manager::User),
            other => Err(format!(
                "unknown systemd manager {other:?}: expected \"system\" or \"user\""
            )),
        }
    }
}

impl fmt::Display for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Manager::System => "system",
            Manager::User => "user",
        })
    }
}

/// What to do to a unit: the Manager method it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitAction {
    Start,
    Stop,
    Restart,
    Reload,
}

impl UnitAction {
    fn verb(self) -> &'static str {
        match self {
            UnitAction::Start => "start",
            UnitAction::Stop => "stop",
            UnitAction::Restart => "restart",
            UnitAction::Reload => "reload",
        }
    }
}

/// One row of `ListUnits`: name, description, load state, active state, sub
/// state, followed unit, unit path, job id, job type, job path.
type UnitRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait SystemdManager {
    /// Asks the manager to send its signals (JobRemoved among them).
    fn subscribe(&self) -> zbus::Result<()>;

    /// The path of a loaded unit; `NoSuchUnit` when it is not loaded.
    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    /// The path of a unit, loading it from disk if needed (its LoadState is
    /// `not-found` when there is no such unit file).
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<UnitRow>>;

    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reload_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    /// A job ended: its id, path, unit and result (`done`, `canceled`,
    /// `timeout`, `failed`, `dependency`, `skipped`...).
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait SystemdUnit {
    #[zbus(property)]
    fn id(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn description(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn fragment_path(&self) -> zbus::Result<String>;
    /// Microseconds since the epoch (CLOCK_REALTIME) of the last entry into
    /// the active state; 0 if never.
    #[zbus(property)]
    fn active_enter_timestamp(&self) -> zbus::Result<u64>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Service",
    default_service = "org.freedesktop.systemd1"
)]
trait SystemdService {
    #[zbus(property, name = "MainPID")]
    fn main_pid(&self) -> zbus::Result<u32>;
}

/// A service manager, reached over D-Bus. Connects on first use and again
/// after the bus dropped the connection; share it behind an `Rc` or `Arc`.
pub struct Systemd {
    manager: Manager,
    connection: Mutex<Option<Connection>>,
    /// Set when a call failed because the connection broke: the next one
    /// reconnects instead of waiting for zbus to notice the socket closed.
    broken: AtomicBool,
}

impl Systemd {
    /// A handle on `manager`; nothing is opened until the first request.
    pub fn new(manager: Manager) -> Systemd {
        Systemd {
            manager,
            connection: Mutex::new(None),
            broken: AtomicBool::new(false),
        }
    }

    /// Whether a failure came from a connection that broke (and was
    /// forgotten): the request can be tried once more on a new one.
    fn retry(&self, outcome: &Result<Value, Failure>) -> bool {
        outcome.is_err() && self.broken.load(Ordering::Acquire)
    }

    /// Every loaded `*.service` unit, by name: `[{"name", "description",
    /// "load_state", "active_state", "sub_state"}, ...]`.
    pub async fn list_services(&self) -> Result<Value, Failure> {
        let outcome = self.list_services_once().await;
        if self.retry(&outcome) {
            return self.list_services_once().await;
        }
        outcome
    }

    async fn list_services_once(&self) -> Result<Value, Failure> {
        let manager = self.manager_proxy().await?;
        let mut rows = manager
            .list_units_by_patterns(&[], &["*.service"])
            .await
            .map_err(|e| self.failure(e, "listing the units"))?;
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let services = rows
            .into_iter()
            .map(
                |(name, description, load_state, active_state, sub_state, ..)| {
                    json!({
                        "name": name,
                        "description": description,
                        "load_state": load_state,
                        "active_state": active_state,
                        "sub_state": sub_state,
                    })
                },
            )
            .collect();
        Ok(Value::Array(services))
    }

    /// The state of one service: `{"name", "description", "active_state",
    /// "sub_state", "file_location", "uptime", "pid"}`, `uptime` in seconds
    /// since it became active (0 when it is not), `pid` its main process
    /// (null when it has none).
    pub async fn service_info(&self, name: &str) -> Result<Value, Failure> {
        let unit = unit_name(name)?;
        let outcome = self.service_info_once(&unit).await;
        if self.retry(&outcome) {
            return self.service_info_once(&unit).await;
        }
        outcome
    }

    async fn service_info_once(&self, unit: &str) -> Result<Value, Failure> {
        let manager = self.manager_proxy().await?;
        let path = self.unit_path(&manager, unit).await?;
        self.info_at(unit, path).await
    }

    /// Runs `action` on the unit (job mode `replace`) and waits for the job
    /// to end: its result `done` answers with the unit's state after it;
    /// any other result is a [`Reason::Failed`] naming it and the state.
    pub async fn control(&self, name: &str, action: UnitAction) -> Result<Value, Failure> {
        let unit = unit_name(name)?;
        let mut sent = false;
        let outcome = self.control_once(&unit, action, &mut sent).await;
        // Once the job was asked for, trying again could run it twice.
        if !sent && self.retry(&outcome) {
            return self.control_once(&unit, action, &mut sent).await;
        }
        outcome
    }

    async fn control_once(
        &self,
        unit: &str,
        action: UnitAction,
        sent: &mut bool,
    ) -> Result<Value, Failure> {
        let manager = self.manager_proxy().await?;
        let verb = action.verb();
        // Listen before asking: a job can end before its method returns.
        let mut removed = manager
            .receive_job_removed()
            .await
            .map_err(|e| self.failure(e, "subscribing to job signals"))?;
        *sent = true;
        let call = match action {
            UnitAction::Start => manager.start_unit(unit, "replace").await,
            UnitAction::Stop => manager.stop_unit(unit, "replace").await,
            UnitAction::Restart => manager.restart_unit(unit, "replace").await,
            UnitAction::Reload => manager.reload_unit(unit, "replace").await,
        };
        let job = call.map_err(|e| self.failure(e, &format!("{verb} {unit}")))?;

        let wait = async {
            while let Some(signal) = removed.next().await {
                let Ok(args) = signal.args() else { continue };
                if args.job == job {
                    return Some(args.result);
                }
            }
            None
        };
        let result = match tokio::time::timeout(JOB_TIMEOUT, wait).await {
            Ok(Some(result)) => result,
            Ok(None) => {
                return Err(Failure::new(
                    Reason::OsError,
                    format!(
                        "the {} bus connection closed while waiting for the {verb} job of {unit}",
                        self.bus()
                    ),
                ))
            }
            Err(_) => {
                return Err(Failure::new(
                    Reason::Timeout,
                    format!(
                        "the {verb} job of {unit} did not finish in {} s (systemd goes on with it)",
                        JOB_TIMEOUT.as_secs()
                    ),
                ))
            }
        };

        let path = self.unit_path(&manager, unit).await?;
        let info = self.info_at(unit, path).await?;
        if result == "done" {
            return Ok(info);
        }
        let state = |key: &str| {
            info.get(key)
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned()
        };
        Err(Failure::new(
            Reason::Failed,
            format!(
                "the {verb} job of {unit} ended with result '{result}'; the unit is {} ({})",
                state("active_state"),
                state("sub_state")
            ),
        ))
    }

    /// The path of a unit that exists: loaded, or loadable from a unit file.
    async fn unit_path(
        &self,
        manager: &SystemdManagerProxy<'static>,
        unit: &str,
    ) -> Result<OwnedObjectPath, Failure> {
        match manager.get_unit(unit).await {
            Ok(path) => return Ok(path),
            Err(e) if error_name(&e) == Some(NO_SUCH_UNIT) => {}
            Err(e) => return Err(self.failure(e, &format!("looking up {unit}"))),
        }
        // Not loaded (systemd unloads inactive units): load it to see
        // whether there is a unit file.
        let path = manager
            .load_unit(unit)
            .await
            .map_err(|e| self.failure(e, &format!("loading {unit}")))?;
        let proxy = self.unit_proxy(&path).await?;
        let load_state = proxy
            .load_state()
            .await
            .map_err(|e| self.failure(e, &format!("reading {unit}")))?;
        if load_state == "not-found" {
            return Err(not_found(unit));
        }
        Ok(path)
    }

    async fn info_at(&self, unit: &str, path: OwnedObjectPath) -> Result<Value, Failure> {
        let reading = |e| self.failure(e, &format!("reading {unit}"));
        let proxy = self.unit_proxy(&path).await?;
        let load_state = proxy.load_state().await.map_err(reading)?;
        if load_state == "not-found" {
            return Err(not_found(unit));
        }
        let id = proxy.id().await.map_err(reading)?;
        let description = proxy.description().await.map_err(reading)?;
        let active_state = proxy.active_state().await.map_err(reading)?;
        let sub_state = proxy.sub_state().await.map_err(reading)?;
        let fragment_path = proxy.fragment_path().await.map_err(reading)?;
        let entered = proxy.active_enter_timestamp().await.map_err(reading)?;
        let uptime = if matches!(active_state.as_str(), "active" | "reloading") {
            uptime_since(entered, SystemTime::now())
        } else {
            0
        };
        let pid = if id.ends_with(".service") {
            let service = SystemdServiceProxy::builder(&self.connection().await?)
                .path(path)
                .cache_properties(CacheProperties::No)
                .build()
                .await
                .map_err(reading)?;
            match service.main_pid().await.map_err(reading)? {
                0 => Value::Null,
                pid => Value::from(pid),
            }
        } else {
            Value::Null
        };
        Ok(json!({
            "name": id,
            "description": description,
            "active_state": active_state,
            "sub_state": sub_state,
            "file_location": fragment_path,
            "uptime": uptime,
            "pid": pid,
        }))
    }

    async fn unit_proxy(
        &self,
        path: &OwnedObjectPath,
    ) -> Result<SystemdUnitProxy<'static>, Failure> {
        SystemdUnitProxy::builder(&self.connection().await?)
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| self.failure(e, "opening a unit"))
    }

    async fn manager_proxy(&self) -> Result<SystemdManagerProxy<'static>, Failure> {
        SystemdManagerProxy::builder(&self.connection().await?)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| self.failure(e, "opening the manager"))
    }

    /// The open connection, or a new one if there is none or the bus
    /// closed it.
    async fn connection(&self) -> Result<Connection, Failure> {
        let mut slot = self.connection.lock().await;
        let broken = self.broken.swap(false, Ordering::AcqRel);
        if let Some(connection) = slot.as_ref() {
            if !broken && !connection.is_closed() {
                return Ok(connection.clone());
            }
            tracing::info!(
                bus = self.bus(),
                "the D-Bus connection closed; reconnecting"
            );
        }
        *slot = None;
        let builder = match self.manager {
            Manager::System => zbus::connection::Builder::system(),
            Manager::User => zbus::connection::Builder::session(),
        };
        let connection = match tokio::time::timeout(
            CONNECT_TIMEOUT,
            builder.method_timeout(CALL_TIMEOUT).build(),
        )
        .await
        {
            Ok(Ok(connection)) => connection,
            Ok(Err(e)) => return Err(self.no_systemd(&e.to_string())),
            Err(_) => {
                return Err(
                    self.no_systemd(&format!("no answer in {} s", CONNECT_TIMEOUT.as_secs()))
                )
            }
        };
        // Without a subscriber the manager may not send JobRemoved. An error
        // here (AlreadySubscribed, a policy) is not fatal: signals may come
        // anyway, and a job that is never seen to end fails as a timeout.
        let manager = SystemdManagerProxy::builder(&connection)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| self.failure(e, "opening the manager"))?;
        if let Err(e) = manager.subscribe().await {
            let failure = self.failure(e, "subscribing to the manager's signals");
            if failure.reason == Reason::NoSystemd {
                return Err(failure);
            }
            tracing::warn!(bus = self.bus(), error = %failure, "Subscribe failed");
        }
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// The bus this manager is on, for messages.
    fn bus(&self) -> &'static str {
        match self.manager {
            Manager::System => "system",
            Manager::User => "session",
        }
    }

    /// The address the bus is looked for at, for messages.
    fn address(&self) -> String {
        match self.manager {
            Manager::System => std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
                .unwrap_or_else(|_| "unix:path=/var/run/dbus/system_bus_socket".into()),
            Manager::User => std::env::var("DBUS_SESSION_BUS_ADDRESS").unwrap_or_else(|_| {
                match std::env::var("XDG_RUNTIME_DIR") {
                    Ok(dir) => format!("unix:path={dir}/bus"),
                    Err(_) => "unix:path=$XDG_RUNTIME_DIR/bus (XDG_RUNTIME_DIR is not set)".into(),
                }
            }),
        }
    }

    fn no_systemd(&self, cause: &str) -> Failure {
        Failure::new(
            Reason::NoSystemd,
            format!(
                "no systemd {} manager on this host: cannot connect to the {} bus at {}: {cause}",
                self.manager,
                self.bus(),
                self.address()
            ),
        )
    }

    /// The bus is there but systemd is not on it.
    fn not_on_bus(&self, cause: &str) -> Failure {
        Failure::new(
            Reason::NoSystemd,
            format!(
                "no systemd {} manager on this host: org.freedesktop.systemd1 is not on the {} \
                 bus at {}: {cause}",
                self.manager,
                self.bus(),
                self.address()
            ),
        )
    }

    /// Maps a D-Bus error met while `doing` something to a failure.
    fn failure(&self, error: zbus::Error, doing: &str) -> Failure {
        use zbus::fdo::Error as Fdo;
        let text = match &error {
            zbus::Error::MethodError(_, Some(desc), _) => desc.clone(),
            other => other.to_string(),
        };
        let reason = match &error {
            zbus::Error::MethodError(name, ..) => {
                let name = name.as_str();
                if name == NO_SUCH_UNIT {
                    Reason::NotFound
                } else if name.starts_with("org.freedesktop.systemd1.") {
                    // JobTypeNotApplicable, UnitMasked, OnlyByDependency,
                    // LoadFailed, TransactionIsDestructive...
                    Reason::Failed
                } else {
                    Reason::OsError
                }
            }
            zbus::Error::FDO(fdo) => match fdo.as_ref() {
                Fdo::ServiceUnknown(_) | Fdo::NameHasNoOwner(_) => return self.not_on_bus(&text),
                Fdo::NoReply(_) | Fdo::Timeout(_) | Fdo::TimedOut(_) => Reason::Timeout,
                _ => Reason::OsError,
            },
            zbus::Error::InputOutput(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                Reason::Timeout
            }
            zbus::Error::InputOutput(_) => {
                // The socket failed (the bus restarted, the peer closed it):
                // the next request gets a new connection.
                self.broken.store(true, Ordering::Release);
                Reason::OsError
            }
            zbus::Error::Connection(..) => return self.no_systemd(&text),
            _ => Reason::OsError,
        };
        Failure::new(reason, format!("{doing}: {text}"))
    }
}

const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";

fn error_name(error: &zbus::Error) -> Option<&str> {
    match error {
        zbus::Error::MethodError(name, ..) => Some(name.as_str()),
        _ => None,
    }
}

fn not_found(unit: &str) -> Failure {
    Failure::new(Reason::NotFound, format!("unit {unit} not found"))
}

/// Whole seconds from `entered_us` (µs since the epoch; 0 for never) to `now`.
fn uptime_since(entered_us: u64, now: SystemTime) -> u64 {
    if entered_us == 0 {
        return 0;
    }
    let now_us = now
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    now_us.saturating_sub(entered_us) / 1_000_000
}

/// Checks a unit name from a client and completes it: `nginx` becomes
/// `nginx.service`, `getty@tty1` `getty@tty1.service`; a name with a unit
/// type suffix (`foo.timer`) is kept. Only `[A-Za-z0-9:_.\@-]`, not starting
/// with `-` (it would read as an option wherever the name ends up), at most
/// 255 bytes with the suffix.
pub fn unit_name(name: &str) -> Result<String, Failure> {
    if name.is_empty() {
        return Err(Failure::bad_argument("a unit name cannot be empty"));
    }
    if name.len() > UNIT_NAME_MAX {
        return Err(Failure::bad_argument(format!(
            "a unit name has at most {UNIT_NAME_MAX} bytes, not {}",
            name.len()
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ":_.\\@-".contains(*c)))
    {
        return Err(Failure::bad_argument(format!(
            "invalid unit name {name:?}: {bad:?} is not allowed (only letters, digits and :_.\\@-)"
        )));
    }
    if name.starts_with('-') {
        return Err(Failure::bad_argument(format!(
            "invalid unit name {name:?}: it cannot start with '-'"
        )));
    }
    let has_suffix = UNIT_SUFFIXES
        .iter()
        .any(|suffix| name.len() > suffix.len() && name.ends_with(suffix));
    if has_suffix {
        return Ok(name.to_owned());
    }
    let full = format!("{name}.service");
    if full.len() > UNIT_NAME_MAX {
        return Err(Failure::bad_argument(format!(
            "a unit name has at most {UNIT_NAME_MAX} bytes with its .service suffix, not {}",
            full.len()
        )));
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_without_a_suffix_becomes_a_service() {
        assert_eq!(unit_name("nginx").unwrap(), "nginx.service");
        assert_eq!(unit_name("getty@tty1").unwrap(), "getty@tty1.service");
        assert_eq!(unit_name("nginx.service").unwrap(), "nginx.service");
        assert_eq!(unit_name("logrotate.timer").unwrap(), "logrotate.timer");
        assert_eq!(
            unit_name("dev-disk-by\\x2duuid-1.device").unwrap(),
            "dev-disk-by\\x2duuid-1.device"
        );
        assert_eq!(unit_name("a:b_c.d").unwrap(), "a:b_c.d.service");
        // A bare suffix is a name, not a suffix.
        assert_eq!(unit_name(".service").unwrap(), ".service.service");
    }

    #[test]
    fn bad_names_are_bad_arguments() {
        let long = "a".repeat(256);
        let almost = "a".repeat(250);
        for bad in [
            "",
            "-nginx",
            "--help",
            "a b",
            "a/b",
            "../etc/passwd",
            "x;reboot",
            "ünï",
            "a\n",
            "$(id)",
            "*",
            long.as_str(),
            almost.as_str(), // 258 bytes with .service
        ] {
            let failure = unit_name(bad).expect_err(bad);
            assert_eq!(failure.reason, Reason::BadArgument, "{bad:?}");
        }
        assert_eq!(unit_name(&"a".repeat(247)).unwrap().len(), 255);
        assert!(unit_name(&format!("{}.service", "a".repeat(247))).is_ok());
    }

    #[test]
    fn managers_parse() {
        assert_eq!("system".parse::<Manager>(), Ok(Manager::System));
        assert_eq!("user".parse::<Manager>(), Ok(Manager::User));
        assert!("System".parse::<Manager>().is_err());
    }

    #[test]
    fn uptime_counts_whole_seconds_since_entering() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(uptime_since(0, now), 0);
        assert_eq!(uptime_since(990_500_000, now), 9);
        assert_eq!(uptime_since(2_000_000_000, now), 0);
    }

    #[tokio::test]
    async fn no_bus_is_no_systemd() {
        // A path where no bus listens: the failure says so, it does not panic.
        let dir = std::env::temp_dir().join(format!("concierge-nobus-{}", std::process::id()));
        let address = format!("unix:path={}/system_bus_socket", dir.display());
        let connection = zbus::connection::Builder::address(address.as_str())
            .build()
            .await
            .expect_err("nothing listens there");
        let systemd = Systemd::new(Manager::System);
        let failure = systemd.failure(connection, "connecting");
        assert_eq!(failure.reason, Reason::NoSystemd);
        assert!(
            failure.desc.contains("no systemd system manager"),
            "{failure}"
        );
    }
}
