//! The names the protocol reserves: a host's own services
//! (`telemetry_<host>`, `audit_<host>`), the names `concierge ctl` takes,
//! and the tags that say which kind of host a client is. Who may hold them
//! is what keeps a host from being impersonated, so the gateway, the
//! agent, `ctl`, the admin commands and the bench all read them from here.

use super::ClientInfo;

/// The services an agent publishes on, named after its host:
/// `telemetry_<host>` and `audit_<host>`. They are reserved: only the host
/// itself (the client of that name, with a host token where tokens are
/// used) may create them, so whoever reads them knows who publishes there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostService {
    Telemetry,
    Audit,
}

impl HostService {
    pub const ALL: [HostService; 2] = [HostService::Telemetry, HostService::Audit];

    pub fn prefix(self) -> &'static str {
        match self {
            HostService::Telemetry => "telemetry_",
            HostService::Audit => "audit_",
        }
    }

    /// This service's name for `host`.
    pub fn of(self, host: &str) -> String {
        format!("{}{host}", self.prefix())
    }

    /// The host a service name is reserved for, if it is a host's.
    pub fn host_of(service: &str) -> Option<&str> {
        HostService::ALL
            .iter()
            .find_map(|kind| service.strip_prefix(kind.prefix()))
    }
}

/// The names `concierge ctl` identifies with: `<owner>_ctl_` and six hex
/// digits, unique per command so two never take each other over. A host
/// token allows its host's name and these (a host fetches its VPN config
/// with ctl), and no host may be named like one, so they name no host.
pub struct CtlName;

impl CtlName {
    const INFIX: &'static str = "_ctl_";
    const DIGITS: usize = 6;

    /// `<owner>_ctl_<suffix>` (`ctl_<suffix>` without an owner), from the
    /// low 24 bits of `random`.
    pub fn make(owner: Option<&str>, random: u32) -> String {
        let suffix = format!("{:06x}", random & 0xff_ffff);
        match owner {
            Some(owner) => format!("{owner}{}{suffix}", Self::INFIX),
            None => format!("{}{suffix}", &Self::INFIX[1..]),
        }
    }

    /// The owner in `name`, if it has the shape of a ctl name.
    pub fn owner(name: &str) -> Option<&str> {
        let at = name.len().checked_sub(Self::INFIX.len() + Self::DIGITS)?;
        let (owner, rest) = name.split_at_checked(at)?;
        let digits = rest.strip_prefix(Self::INFIX)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            .then_some(owner)
    }
}

/// The kinds of host the fleet has, by the tag each joins with: the
/// native agent (`agent`), a Nest bot host on `/nest` (`nest`), a Quix
/// backend on `/wsi` (`quix`) and an Altoponix monitor on `/socket.io/`
/// (`altoponix-monitor`, commanded by seed 002's users, not by `ctl`).
/// The first three answer the same requests in their own dialects
/// (docs/PROTOCOL.md, sections 13 and 15), so whoever shows a reply reads
/// it by the kind of host that sent it. The adapters' tags are the
/// gateway's to give; a native client's are its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostKind {
    Agent,
    Nest,
    Quix,
    #[serde(rename = "altoponix-monitor")]
    Monitor,
}

impl HostKind {
    pub const ALL: [HostKind; 4] = [
        HostKind::Agent,
        HostKind::Nest,
        HostKind::Quix,
        HostKind::Monitor,
    ];

    /// The tag a host of this kind carries.
    pub const fn tag(self) -> &'static str {
        match self {
            HostKind::Agent => "agent",
            HostKind::Nest => "nest",
            HostKind::Quix => "quix",
            HostKind::Monitor => "altoponix-monitor",
        }
    }

    /// The kind the first of `tags` that names one says.
    pub fn of(tags: &[String]) -> Option<HostKind> {
        tags.iter()
            .find_map(|tag| HostKind::ALL.into_iter().find(|kind| kind.tag() == tag))
    }
}

impl ClientInfo {
    /// Whether this client is host `host`: it holds that name and, unless
    /// it is anonymous (a gateway that requires no token, where the name is
    /// all there is), a host token (role `agent`) issued to that host, not
    /// one of the host's ctl commands.
    pub fn is_host(&self, host: &str) -> bool {
        self.name == host
            && (self.roles.is_empty()
                || (self.roles.iter().any(|r| r == "agent") && self.user.as_deref() == Some(host)))
    }
}
