//! How a job and its hosts are kept in the [`Ledger`]: the job's record
//! (its [`JobInfo`] and what a coordinator that takes it over needs), each
//! host's row without its output (what lists read), its output apart, and
//! the digest that tells which hosts printed the same.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::cluster::ledger::HostRow;
use crate::protocol::jobs::{Captured, HostOutcome, HostState, JobHost, JobInfo, JobState};

/// The job's record in the ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub info: JobInfo,
    /// The creator's roles, which the coordinator carries to the agents
    /// (a coordinator that takes the job over needs them).
    pub roles: Vec<String>,
    /// Until when offline hosts are waited for (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_until_ms: Option<u64>,
    /// Cancelled: nothing more is sent, what runs is stopped; the job is
    /// `cancelled` once every host is final.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a job record serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Whether every host is final.
    pub fn is_over(&self) -> bool {
        self.info.state != JobState::Running
    }
}

/// A host's output and reply, kept apart from its row.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Output {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stdout: Option<Captured>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stderr: Option<Captured>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reply: Option<Value>,
}

/// A host's row to write: the row without output, the output apart.
pub fn row(host: &JobHost) -> HostRow {
    let mut light = host.clone();
    let output = Output {
        stdout: light.stdout.take(),
        stderr: light.stderr.take(),
        reply: light.reply.take(),
    };
    let has_output = output.stdout.is_some() || output.stderr.is_some() || output.reply.is_some();
    HostRow {
        host: host.host.clone(),
        row: serde_json::to_vec(&light).expect("a host row serializes"),
        output: has_output.then(|| serde_json::to_vec(&output).expect("output serializes")),
        is_final: host.state.is_final(),
    }
}

/// A stored row, with its output when it was read.
pub fn host(row: &[u8], output: Option<&[u8]>) -> Option<JobHost> {
    let mut host: JobHost = serde_json::from_slice(row).ok()?;
    if let Some(output) = output.and_then(|o| serde_json::from_slice::<Output>(o).ok()) {
        host.stdout = output.stdout;
        host.stderr = output.stderr;
        host.reply = output.reply;
    }
    Some(host)
}

/// The row of a host after the agent's outcome.
pub fn settle(host: &mut JobHost, outcome: HostOutcome, now_ms: u64) {
    host.state = outcome.state;
    host.updated_ms = now_ms;
    host.started_ms = Some(outcome.started_ms);
    host.finished_ms = Some(outcome.finished_ms);
    host.exit_code = outcome.exit_code;
    host.signal = outcome.signal;
    host.reason = outcome.reason;
    host.desc = outcome.desc;
    let printed = |c: &Option<Captured>| c.as_ref().is_some_and(|c| !c.is_empty());
    host.digest = (printed(&outcome.stdout) || printed(&outcome.stderr) || outcome.reply.is_some())
        .then(|| {
            digest(
                outcome.stdout.as_ref(),
                outcome.stderr.as_ref(),
                outcome.reply.as_ref(),
            )
        });
    host.stdout = outcome.stdout;
    host.stderr = outcome.stderr;
    host.reply = outcome.reply;
}

/// Equal for equal outputs and replies: 16 hex digits of their SHA-256.
fn digest(stdout: Option<&Captured>, stderr: Option<&Captured>, reply: Option<&Value>) -> String {
    let mut hash = Sha256::new();
    for part in [stdout, stderr] {
        let text = part.map(Captured::text).unwrap_or_default();
        hash.update((text.len() as u64).to_le_bytes());
        hash.update(text.as_bytes());
    }
    hash.update(reply.map(Value::to_string).unwrap_or_default().as_bytes());
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How many hosts are in each state.
pub fn counts<'a>(hosts: impl Iterator<Item = &'a JobHost>) -> BTreeMap<HostState, u32> {
    let mut counts = BTreeMap::new();
    for host in hosts {
        *counts.entry(host.state).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(stdout: &str) -> HostOutcome {
        HostOutcome {
            exit_code: Some(0),
            stdout: Some(Captured::keep(stdout.as_bytes(), 100)),
            ..HostOutcome::new("0123456789ab".parse().unwrap(), HostState::Exited, 1, 2)
        }
    }

    #[test]
    fn a_row_keeps_its_output_apart_and_equal_outputs_share_a_digest() {
        let (mut a, mut b, mut c) = (
            JobHost::queued("a", 0),
            JobHost::queued("b", 0),
            JobHost::queued("c", 0),
        );
        settle(&mut a, outcome("same"), 3);
        settle(&mut b, outcome("same"), 3);
        settle(&mut c, outcome("other"), 3);
        assert_eq!(a.digest, b.digest);
        assert_ne!(a.digest, c.digest);
        let stored = row(&a);
        assert!(stored.is_final);
        assert!(!String::from_utf8_lossy(&stored.row).contains("same"));
        let light = host(&stored.row, None).unwrap();
        assert!(light.stdout.is_none());
        let whole = host(&stored.row, stored.output.as_deref()).unwrap();
        assert_eq!(whole, a);
        let queued = row(&JobHost::queued("q", 0));
        assert!(!queued.is_final && queued.output.is_none());
        let tally = counts([&a, &b].into_iter());
        assert_eq!(tally.get(&HostState::Exited), Some(&2));
        let mut silent = JobHost::queued("s", 0);
        settle(&mut silent, outcome(""), 3);
        assert_eq!(silent.digest, None, "nothing printed, nothing to group");
    }
}
