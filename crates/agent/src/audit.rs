//! The agent's audit trail: one JSON line per command request (who sent it,
//! from which client, what it asked, what came of it), appended to the
//! audit log and published on the host's `audit_<host>` service.
//!
//! Values a request passes in `env` are masked before they are written: they
//! are where secrets travel. Arguments nested deeper than [`ARGS_DEPTH`] are
//! recorded as their JSON text: an entry is published inside an event and
//! read back inside the `audit` reply, levels deeper than the request it
//! records, and must stay within what the gateway relays
//! ([`concierge_protocol::MAX_DATA_DEPTH`]), or one deep request would keep
//! every later reading of the trail from arriving.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::{json, Map, Value};

use concierge_protocol::agent::{Envelope, Failure, Reason};
use concierge_protocol::{History, Origin};

/// How deeply a request's arguments may nest and still be recorded as
/// JSON (no command of the agent takes more than a few levels).
pub const ARGS_DEPTH: usize = 16;

/// The history `audit_<host>` asks the gateway to keep, so that a watcher
/// that comes back resumes where it was (`docs/PROTOCOL.md` §17): the last
/// thousand commands of the last hour.
pub const HISTORY: History = History {
    size: 1_000,
    ttl: 3_600,
};

pub struct Audit {
    path: PathBuf,
    file: Mutex<File>,
}

impl Audit {
    pub fn open(path: &Path) -> Result<Audit, String> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("audit log folder {}: {e}", parent.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(|e| format!("audit log {}: {e}", path.display()))?;
        Ok(Audit {
            path: path.to_owned(),
            file: Mutex::new(file),
        })
    }

    /// The record of a request and its outcome.
    pub fn entry(origin: &Origin, request: &Envelope, outcome: &Result<Value, Failure>) -> Value {
        let mut args = request.msg.clone();
        if let Some(Value::Object(env)) = args.get_mut("env") {
            for value in env.values_mut() {
                *value = Value::from("***");
            }
        }
        let mut args = Value::Object(args);
        if concierge_protocol::data::depth(&args) > ARGS_DEPTH {
            args = Value::String(args.to_string());
        }
        let mut entry = json!({
            "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            "user": origin.client.user,
            "roles": origin.client.roles,
            "client": origin.client.name,
            "uuid": origin.client.uuid,
            "req": request.req,
            "rid": request.rid,
            "args": args,
        });
        let fields = entry.as_object_mut().map(|m| m as &mut Map<String, Value>);
        if let Some(fields) = fields {
            match outcome {
                Ok(body) => {
                    fields.insert("result".into(), Value::from("success"));
                    if let Some(proc_id) = body.get("proc_id") {
                        fields.insert("proc_id".into(), proc_id.clone());
                    }
                }
                Err(f) => {
                    fields.insert("result".into(), Value::from("error"));
                    fields.insert("reason".into(), Value::from(f.reason.as_str()));
                    fields.insert("desc".into(), Value::from(f.desc.clone()));
                }
            }
        }
        entry
    }

    /// Appends one record; a write that fails is logged, never fatal to the
    /// request it records.
    pub fn write(&self, entry: &Value) {
        let mut line = entry.to_string();
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot write the audit log");
        }
    }

    /// The last `limit` records, oldest first.
    pub fn tail(&self, limit: usize) -> Result<Vec<Value>, Failure> {
        const WINDOW: u64 = 256 * 1024;
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let fail = |e: std::io::Error| {
            Failure::new(Reason::OsError, format!("cannot read the audit log: {e}"))
        };
        let len = file.seek(SeekFrom::End(0)).map_err(fail)?;
        let start = len.saturating_sub(WINDOW);
        file.seek(SeekFrom::Start(start)).map_err(fail)?;
        let mut text = String::new();
        Read::by_ref(&mut *file)
            .take(WINDOW)
            .read_to_string(&mut text)
            .map_err(fail)?;
        // Reads share the file with appends: put the cursor back at the end.
        file.seek(SeekFrom::End(0)).map_err(fail)?;
        let mut lines: Vec<&str> = text.lines().collect();
        if start > 0 && !lines.is_empty() {
            lines.remove(0); // cut in the middle of a line
        }
        let skip = lines.len().saturating_sub(limit);
        Ok(lines[skip..]
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}
