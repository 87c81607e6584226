//! The agent's request vocabulary: what an operator, `ctl`, the console and the
//! seeds' adapters send to `concierge agent` by MESSAGE, and what comes back
//! (docs/PROTOCOL.md §13). It lives in the protocol crate because every side
//! speaks it: the agent serves it, the gateway's adapters translate to it, and
//! `ctl` builds it.

pub mod request;
pub mod signals;

/// Who may send a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `viewer` and above.
    Read,
    /// `operator` and above; audited.
    Command,
}

/// Every request name, with who may send it.
pub const REQUESTS: [(&str, Access); 22] = [
    ("execute", Access::Command),
    ("view_running", Access::Read),
    ("list_started", Access::Read),
    ("proc_signal", Access::Command),
    ("proc_output", Access::Read),
    ("telemetry", Access::Read),
    ("obtain_user_usages", Access::Read),
    ("obtain_all_process_info", Access::Read),
    ("obtain_process_info", Access::Read),
    ("kill_process", Access::Command),
    ("pause_process", Access::Command),
    ("resume_process", Access::Command),
    ("list_services", Access::Read),
    ("obtain_service_info", Access::Read),
    ("start_service", Access::Command),
    ("stop_service", Access::Command),
    ("restart_service", Access::Command),
    ("reload_service", Access::Command),
    ("exec_command", Access::Command),
    ("audit", Access::Command),
    ("get_vpn_conf", Access::Read),
    ("ping", Access::Read),
];
