//! What a host's replies say, for a person: one function per command,
//! reading the reply in the dialect of the host that sent it.
//!
//! Three kinds of host answer the same requests ([`HostKind`]: the native
//! agent, a Nest bot host through `/nest`, a Quix backend through `/wsi`),
//! and they say the same things differently: a Nest host lists its
//! services by name only, gives a service's uptime as a sentence, its
//! folder's usage as `du` rows with sizes in strings and its resources as
//! `nest resources` prints them, and answers a signal or a service action
//! with no fields at all; a Quix backend's `mem_util` is in MB and its
//! memory totals have no unit. `ctl` knows which kind answered from the tag
//! the gateway relays with every reply (the client's `tags`: the adapters
//! give theirs; a native client's are its own, and choose only how its own
//! replies read), not by guessing from the reply's shape: the shapes
//! overlap (an agent's and a Quix backend's memory totals are both three
//! numbers, in bytes and in no unit).
//!
//! Each field is shown as the host gave it, in its unit; a field the
//! host's dialect does not have is left out of the table, and what a reply
//! lacks is said in a line, never shown as a `-`. Every function takes any
//! JSON and never panics: a host's reply is its own.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

use super::render::{plain, table, text, Units};
use concierge_protocol::HostKind;

/// A reply that is not what the request answers: said, with the reply.
fn unexpected(what: &str, reply: &Value) -> String {
    format!("the host's reply is not {what}: {reply}")
}

/// The host's own words in a reply (a Nest host's `message`), as a line.
fn said(reply: &Value, out: &mut String) {
    if let Some(words) = reply["message"].as_str() {
        out.push_str(&format!("\nthe host says: {words}"));
    }
}

/// Unix seconds (a float from a Nest host) as a time, or as given.
fn time(value: &Value) -> String {
    // Up to the year 9999, as RFC 3339 writes it.
    const LAST: f64 = 253_402_300_799.0;
    match value.as_f64() {
        Some(secs) if (0.0..=LAST).contains(&secs) => {
            let at = UNIX_EPOCH + Duration::from_secs(secs as u64);
            humantime::format_rfc3339_seconds(at).to_string()
        }
        _ => text(value),
    }
}

/// `obtain_process_info` (`ctl proc`): an agent and a Nest host give the
/// same fields; each is shown in its unit, any other as it is.
pub fn process(reply: &Value, units: &Units) -> String {
    let Some(fields) = reply.as_object() else {
        return unexpected("a process", reply);
    };
    let mut t = plain();
    for (key, value) in fields {
        let shown = match (key.as_str(), value) {
            ("result", _) => continue,
            ("memory", Value::Object(_)) => {
                format!(
                    "rss {}, swap {}",
                    units.bytes(&value["rss"]),
                    units.bytes(&value["swap"])
                )
            }
            ("cpu_time", Value::Object(_)) => {
                format!(
                    "user {} s, system {} s",
                    text(&value["user"]),
                    text(&value["system"])
                )
            }
            ("cpu_usage", Value::Number(n)) => format!("{n}%"),
            ("started", Value::Number(_)) => time(value),
            ("cmd", Value::Array(words)) => words.iter().map(text).collect::<Vec<_>>().join(" "),
            (_, other) => text(other),
        };
        t.add_row([key.clone(), shown]);
    }
    t.to_string()
}

/// A columns' header and how a row shows it (`None`: the row lacks it).
type Column = (&'static str, fn(&Value, &Units) -> Option<String>);

fn present(value: &Value) -> Option<String> {
    (!value.is_null()).then(|| text(value))
}

/// A table of `rows` with those of `columns` any row has: a dialect that
/// lacks a field has no column for it rather than a column of `-`.
fn table_of(rows: &[Value], columns: &[Column], units: &Units) -> String {
    let shown: Vec<&Column> = columns
        .iter()
        .filter(|(_, cell)| rows.iter().any(|row| cell(row, units).is_some()))
        .collect();
    let mut t = plain();
    t.set_header(shown.iter().map(|(name, _)| *name));
    for row in rows {
        t.add_row(
            shown
                .iter()
                .map(|(_, cell)| cell(row, units).unwrap_or_default()),
        );
    }
    t.to_string()
}

/// `obtain_all_process_info` (`ctl ps --all`): every field an agent gives
/// (its user by name, by uid where the host has no name for it); a Nest
/// host gives pid and name.
pub fn processes(list: &[Value], units: &Units) -> String {
    let columns: [Column; 7] = [
        ("PID", |p, _| present(&p["pid"])),
        ("USER", |p, _| {
            present(&p["user_name"]).or_else(|| present(&p["user"]))
        }),
        ("STATUS", |p, _| present(&p["status"])),
        ("CPU%", |p, _| present(&p["cpu_usage"])),
        ("RSS", |p, u| {
            let rss = &p["memory"]["rss"];
            (!rss.is_null()).then(|| u.bytes(rss))
        }),
        ("SAFE_KILL", |p, _| present(&p["safe_kill"])),
        ("NAME", |p, _| present(&p["name"])),
    ];
    table_of(list, &columns, units)
}

/// `view_running` (`ctl ps`): seed 003's list, `mem_util` in MB. The Nest
/// adapter makes it from a Nest host's process list, which has only pids
/// and names: its CPU and memory columns would be zeros the host never
/// reported, so they are not shown.
pub fn running(reply: &Value, kind: HostKind, host: &str, units: &Units) -> String {
    let Some(list) = reply.as_array() else {
        return unexpected("a list of processes", reply);
    };
    if kind == HostKind::Nest {
        let mut t = table(["PID", "NAME"]);
        for p in list {
            t.add_row([text(&p["pid"]), text(&p["title"])]);
        }
        return format!(
            "{t}\n(a Nest host lists each process's pid and name only: \
             `ctl proc {host} PID` shows one's CPU and memory)"
        );
    }
    let mut t = table(["PID", "CPU%", units.mem_label, "PORTS", "TITLE", "COMMAND"]);
    for p in list {
        let ports: Vec<String> = p["port_util"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        t.add_row([
            text(&p["pid"]),
            text(&p["cpu_util"]),
            units.megabytes(&p["mem_util"]),
            ports.join(","),
            text(&p["title"]),
            text(&p["reqc"]),
        ]);
    }
    t.to_string()
}

/// `proc_signal` (`ctl signal`, `pause`, `resume`): an agent names the
/// signal it sent and whether to a process group; a Nest host or a Quix
/// backend only says it succeeded, so the signal is the one asked for.
pub fn signal(reply: &Value, pid: u32, asked: &str) -> String {
    let name = reply["signal"].as_str().unwrap_or(asked);
    let mut out = format!("sent {name} to {pid}");
    if reply["group"].as_bool() == Some(true) {
        out.push_str(" and its process group");
    }
    said(reply, &mut out);
    out
}

/// `list_services` (`ctl units`): an agent's units with their states, or a
/// Nest host's names of its user services.
pub fn services(list: &[Value], host: &str) -> String {
    if list.is_empty() {
        return "no services".into();
    }
    if list.iter().all(Value::is_string) {
        let mut t = table(["UNIT"]);
        for name in list {
            t.add_row([text(name)]);
        }
        return format!(
            "{t}\n(the host lists its services' names only: \
             `ctl unit {host} status UNIT` shows one's state)"
        );
    }
    let mut t = table(["UNIT", "LOAD", "ACTIVE", "SUB", "DESCRIPTION"]);
    for u in list {
        let name = match u {
            Value::String(name) => name.clone(),
            other => text(&other["name"]),
        };
        t.add_row([
            name,
            text(&u["load_state"]),
            text(&u["active_state"]),
            text(&u["sub_state"]),
            text(&u["description"]),
        ]);
    }
    t.to_string()
}

/// `obtain_service_info` and the actions (`ctl unit`): an agent answers
/// every action with the unit's state, uptime in seconds and `pid` null
/// without a main process; a Nest host answers `status` with its uptime as
/// a sentence and `pid` 0 without one, and an action with no state at all.
pub fn unit(reply: &Value, host: &str, action: &str, unit: &str) -> String {
    let mut out = if reply.get("active_state").is_some() {
        let name = reply["name"].as_str().unwrap_or(unit);
        let mut line = format!(
            "{name}: {} ({})",
            text(&reply["active_state"]),
            text(&reply["sub_state"])
        );
        match reply.get("pid") {
            Some(Value::Null) => line.push_str(", no main process"),
            Some(pid) if pid.as_u64() == Some(0) => line.push_str(", no main process"),
            Some(pid) => line.push_str(&format!(", main pid {}", text(pid))),
            None => {}
        }
        match reply.get("uptime") {
            Some(Value::Number(secs)) => {
                if let Some(secs) = secs.as_u64().filter(|s| *s > 0) {
                    let up = humantime::format_duration(Duration::from_secs(secs));
                    line.push_str(&format!(", up {up}"));
                }
            }
            Some(Value::String(since)) => line.push_str(&format!("\nuptime: {since}")),
            _ => {}
        }
        for (label, key) in [("description", "description"), ("file", "file_location")] {
            if let Some(value) = reply.get(key).filter(|v| !v.is_null()) {
                line.push_str(&format!("\n{label}: {}", text(value)));
            }
        }
        line
    } else {
        let done = match action {
            "start" => "started",
            "stop" => "stopped",
            "restart" => "restarted",
            "reload" => "reloaded",
            _ => "asked about",
        };
        format!(
            "{done} {unit}\n(the host's reply does not give its state: \
             `ctl unit {host} status {unit}` asks)"
        )
    };
    said(reply, &mut out);
    out
}

/// `obtain_user_usages` (`ctl usage`), in the host's dialect.
pub fn usage(reply: &Value, kind: HostKind, units: &Units) -> String {
    match kind {
        HostKind::Nest => nest_usage(reply, units),
        HostKind::Agent | HostKind::Quix | HostKind::Monitor => agent_usage(reply, units),
    }
}

/// An agent's: its work folder's entries (bytes) and its started
/// processes' resources (`mem_util` in MB).
fn agent_usage(reply: &Value, units: &Units) -> String {
    let res = &reply["resources"];
    let mut out = format!(
        "{}: {} in {} entries",
        text(&reply["folder"]),
        units.bytes(&reply["total_bytes"]),
        text(&reply["total"]),
    );
    if res.is_object() {
        out.push_str(&format!(
            "; {} running processes, {}% CPU, {} {}",
            text(&res["processes"]),
            text(&res["cpu_util"]),
            units.megabytes(&res["mem_util"]),
            units.mem_label,
        ));
    }
    out.push('\n');
    let mut t = table(["SIZE", "TYPE", "NAME"]);
    for e in reply["entries"].as_array().into_iter().flatten() {
        t.add_row([units.bytes(&e["bytes"]), text(&e["type"]), text(&e["name"])]);
    }
    out.push_str(&t.to_string());
    out
}

/// A Nest host's: `resources`, what `nest resources` printed, as it is,
/// and `storage`, the rows of `du --max-depth=1 -c -b` (`[bytes, path]`,
/// bytes in a string, the last row `total`).
fn nest_usage(reply: &Value, units: &Units) -> String {
    let mut out = match reply["resources"].as_str() {
        Some(resources) => format!("{}\n", resources.trim_end()),
        None => "(the host's reply has no resources)\n".to_owned(),
    };
    let Some(rows) = reply["storage"].as_array() else {
        out.push_str("(the host's reply has no storage)");
        return out;
    };
    let size = |bytes: &Value| match bytes {
        Value::String(s) => match s.trim().parse::<u64>() {
            Ok(n) => units.size(n),
            Err(_) => s.clone(),
        },
        other => units.bytes(other),
    };
    let mut t = table(["SIZE", "NAME"]);
    let mut total = None;
    for row in rows {
        let (bytes, path) = (&row[0], &row[1]);
        if path.as_str() == Some("total") {
            total = Some(size(bytes));
        } else {
            t.add_row([size(bytes), text(path)]);
        }
    }
    if let Some(total) = total {
        out.push_str(&format!("total {total}\n"));
    }
    out.push_str(&t.to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn units() -> Units {
        Units::default()
    }

    #[test]
    fn a_nest_hosts_services_are_names() {
        let shown = services(&[json!("demo_app.service")], "nesthost");
        assert!(
            shown.contains("UNIT") && shown.contains("demo_app.service"),
            "{shown}"
        );
        assert!(shown.contains("ctl unit nesthost status UNIT"), "{shown}");
        assert!(!shown.contains(" - "), "{shown}");
        let agent = json!({"name": "a.service", "load_state": "loaded",
            "active_state": "active", "sub_state": "running", "description": "A"});
        let shown = services(&[agent], "host1");
        assert!(
            shown.contains("loaded") && shown.contains("running"),
            "{shown}"
        );
        assert_eq!(services(&[], "host1"), "no services");
    }

    #[test]
    fn a_signal_names_what_was_asked_when_the_host_does_not() {
        assert_eq!(
            signal(&json!({"result": "success"}), 21384, "SIGTERM"),
            "sent SIGTERM to 21384"
        );
        let agent = json!({"result": "success", "pid": 7, "signal": "SIGKILL", "group": true});
        assert_eq!(
            signal(&agent, 7, "9"),
            "sent SIGKILL to 7 and its process group"
        );
        let nest = json!({"result": "success", "message": "You're a killer now..."});
        assert!(signal(&nest, 7, "SIGKILL").ends_with("the host says: You're a killer now..."));
    }

    #[test]
    fn a_unit_in_each_dialect() {
        let agent = json!({"result": "success", "name": "demo.service", "description": "Demo",
            "active_state": "active", "sub_state": "running", "file_location": "/etc/demo.service",
            "uptime": 3725, "pid": 42});
        let shown = unit(&agent, "host1", "restart", "demo");
        assert!(
            shown.starts_with("demo.service: active (running), main pid 42, up 1h 2m 5s"),
            "{shown}"
        );
        assert!(shown.contains("file: /etc/demo.service"), "{shown}");
        let stopped = json!({"name": "demo.service", "active_state": "inactive",
            "sub_state": "dead", "uptime": 0, "pid": null});
        assert_eq!(
            unit(&stopped, "host1", "stop", "demo"),
            "demo.service: inactive (dead), no main process"
        );
        let nest = json!({"result": "success", "name": "demo_app.service", "description": "D",
            "active_state": "active", "sub_state": "running", "file_location": "/u/demo_app.service",
            "uptime": "Mon 2026-12-07 03:00:00 ; 5 minutes ago", "pid": 0});
        let shown = unit(&nest, "nesthost", "status", "demo_app");
        assert!(shown.contains("no main process"), "{shown}");
        assert!(
            shown.contains("uptime: Mon 2026-12-07 03:00:00 ; 5 minutes ago"),
            "{shown}"
        );
        let action = unit(
            &json!({"result": "success"}),
            "nesthost",
            "restart",
            "demo_app",
        );
        assert!(action.starts_with("restarted demo_app\n"), "{action}");
        assert!(
            action.contains("ctl unit nesthost status demo_app"),
            "{action}"
        );
        assert!(!action.contains('-'), "{action}");
    }

    #[test]
    fn a_nest_hosts_usage_is_du_rows_and_its_resources_text() {
        let reply = json!({"result": "success", "resources": "Memory: 10 MB of 2 GB\n",
            "storage": [["4096", "/home/u/.cache"], ["1500000", "/home/u"], ["1500000", "total"]]});
        let shown = usage(&reply, HostKind::Nest, &units());
        assert!(
            shown.starts_with("Memory: 10 MB of 2 GB\ntotal 1.5 MB\n"),
            "{shown}"
        );
        assert!(
            shown.contains("4.1 kB") && shown.contains("/home/u/.cache"),
            "{shown}"
        );
        let bare = usage(&json!({"result": "success"}), HostKind::Nest, &units());
        assert!(
            bare.contains("no resources") && bare.contains("no storage"),
            "{bare}"
        );
    }

    #[test]
    fn memory_in_mb_is_megabytes() {
        let quix = json!([{"title": "Test Server v0.1", "pid": 12321, "cpu_util": 0,
            "mem_util": 111, "reqc": "python3 testserver/testserver.py --help",
            "port_util": [12345, 56193]}]);
        let shown = running(&quix, HostKind::Quix, "q", &units());
        assert!(
            shown.contains("111.0 MB") && shown.contains("12345,56193"),
            "{shown}"
        );
        let nest = json!([{"title": "python3", "pid": 9, "cpu_util": 0, "mem_util": 0,
            "reqc": null, "port_util": []}]);
        let shown = running(&nest, HostKind::Nest, "n", &units());
        let header = shown.lines().next().unwrap_or_default();
        assert!(
            !header.contains("CPU") && shown.contains("python3"),
            "{shown}"
        );
        assert!(running(&json!({"x": 1}), HostKind::Quix, "q", &units()).contains("not a list"));
    }

    #[test]
    fn an_agents_processes_show_their_user_by_name_or_else_by_uid() {
        let shown = processes(
            &[
                json!({"pid": 1, "name": "init", "user": 0, "user_name": "root", "status": "sleeping"}),
                json!({"pid": 7, "name": "orphan", "user": 4242, "user_name": null, "status": "running"}),
            ],
            &units(),
        );
        let rows: Vec<Vec<&str>> = shown
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0][..3], ["PID", "USER", "STATUS"], "{shown}");
        assert_eq!(rows[1][..3], ["1", "root", "sleeping"], "{shown}");
        assert_eq!(rows[2][..3], ["7", "4242", "running"], "{shown}");
    }

    #[test]
    fn columns_a_dialect_lacks_are_left_out() {
        let shown = processes(&[json!({"pid": 1, "name": "init"})], &units());
        let header = shown.lines().next().unwrap_or_default();
        assert!(header.contains("PID") && header.contains("NAME"), "{shown}");
        assert!(
            !header.contains("RSS") && !header.contains("STATUS") && !header.contains("USER"),
            "{shown}"
        );
        let shown = process(
            &json!({"result": "success", "pid": 1, "cpu_time": {"user": 1.5, "system": 0.25},
                "memory": {"rss": 2_000_000, "swap": 0}, "started": 1_700_000_000.5,
                "cpu_usage": 2.5}),
            &units(),
        );
        assert!(shown.contains("user 1.5 s, system 0.25 s"), "{shown}");
        assert!(shown.contains("rss 2.0 MB, swap 0 B"), "{shown}");
        assert!(
            shown.contains("2023-11-14T22:13:20Z") && shown.contains("2.5%"),
            "{shown}"
        );
    }

    /// The fields the dialects have, so that arbitrary replies reach
    /// every branch that reads one.
    const FIELDS: &[&str] = &[
        "pid",
        "name",
        "memory",
        "rss",
        "swap",
        "cpu_time",
        "user",
        "system",
        "cpu_usage",
        "started",
        "cmd",
        "status",
        "safe_kill",
        "signal",
        "group",
        "message",
        "active_state",
        "sub_state",
        "uptime",
        "description",
        "file_location",
        "storage",
        "resources",
        "folder",
        "total_bytes",
        "total",
        "entries",
        "bytes",
        "type",
        "mem_util",
        "cpu_util",
        "processes",
        "title",
        "reqc",
        "port_util",
        "ttl_cpu_usage",
        "ttl_mem_usage",
        "disk_util",
        "vpn_status",
        "ifname",
        "conn_type",
        "conn_host",
    ];

    fn reply() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[0-9]{0,25}".prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            Just(Value::from("total")),
        ];
        let key = prop_oneof![
            prop::sample::select(FIELDS).prop_map(str::to_owned),
            any::<String>(),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(key.clone(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// A host's reply is its own: whatever it is, each command shows
        /// something and nothing panics.
        #[test]
        fn any_reply_is_shown_without_a_panic(reply in reply()) {
            let list = reply.as_array().cloned().unwrap_or_default();
            for kind in HostKind::ALL {
                let _ = process(&reply, &units());
                let _ = processes(&list, &units());
                let _ = running(&reply, kind, "h", &units());
                let _ = signal(&reply, 1, "SIGTERM");
                let _ = services(&list, "h");
                let _ = unit(&reply, "h", "restart", "u");
                let _ = usage(&reply, kind, &units());
                let _ = crate::top::frame("h", &reply, &units(), kind);
                let _ = crate::top::frame("h", &reply["tele_data"], &units(), kind);
            }
        }
    }

    #[test]
    fn any_json_is_shown_without_a_panic() {
        let odd = [
            json!(null),
            json!([1, "x", {"a": []}]),
            json!({"storage": [[], [null], "total", {"0": 1}], "resources": 5,
                "uptime": -1, "pid": "x", "active_state": 3, "started": 1e300}),
            json!({"memory": {"rss": -1.5}, "cpu_time": [], "entries": 3, "resources": []}),
        ];
        for reply in &odd {
            for kind in HostKind::ALL {
                let list = reply.as_array().cloned().unwrap_or_default();
                let _ = process(reply, &units());
                let _ = processes(&list, &units());
                let _ = running(reply, kind, "h", &units());
                let _ = signal(reply, 1, "SIGTERM");
                let _ = services(&list, "h");
                let _ = unit(reply, "h", "status", "u");
                let _ = usage(reply, kind, &units());
            }
        }
    }
}
