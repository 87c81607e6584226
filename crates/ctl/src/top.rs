//! `ctl top`: one screen of a host's telemetry (seed 003's `tele_data`).
//! An agent counts memory in bytes; seed 003 gives its memory totals no
//! unit, so a Quix backend's are shown as the numbers it sent.

use serde_json::Value;

use super::render::{bar, text, Units};
use concierge_protocol::HostKind;

/// The screen for one snapshot from a host of `kind`.
pub fn frame(host: &str, data: &Value, units: &Units, kind: HostKind) -> String {
    let mut out = format!(
        "{host}  {}\n\n",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
    let cores = data["ttl_cpu_usage"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let average = if cores.is_empty() {
        0.0
    } else {
        cores.iter().filter_map(Value::as_f64).sum::<f64>() / cores.len() as f64
    };
    out.push_str(&format!(
        "CPU   {} {:5.1}%  ({} cores)\n",
        bar(average, 30),
        average * 100.0,
        cores.len()
    ));
    for (i, core) in cores.iter().enumerate() {
        let share = core.as_f64().unwrap_or(0.0);
        out.push_str(&format!(
            "cpu{i:<2} {} {:5.1}%\n",
            bar(share, 30),
            share * 100.0
        ));
    }
    if let Some([used, cache, free]) = data["ttl_mem_usage"]
        .as_array()
        .and_then(|m| <[Value; 3]>::try_from(m.clone()).ok())
    {
        let amount = |v: &Value| match kind {
            HostKind::Quix => text(v),
            HostKind::Agent | HostKind::Nest | HostKind::Monitor => units.bytes(v),
        };
        let sum: f64 = [&used, &cache, &free]
            .iter()
            .filter_map(|v| v.as_f64())
            .sum();
        let share = used.as_f64().unwrap_or(0.0) / sum.max(1.0);
        let total = match (used.as_u64(), cache.as_u64(), free.as_u64()) {
            (Some(u), Some(c), Some(f)) => Value::from(u.saturating_add(c).saturating_add(f)),
            _ => Value::from(sum),
        };
        out.push_str(&format!(
            "\n{:<5} {} used {}, buff/cache {}, free {} of {}{}\n",
            units.mem_label,
            bar(share, 30),
            amount(&used),
            amount(&cache),
            amount(&free),
            amount(&total),
            if kind == HostKind::Quix {
                " (no unit given)"
            } else {
                ""
            },
        ));
    }
    if let Some(disks) = data["disk_util"].as_object() {
        out.push_str("\nDisks\n");
        for (device, usage) in disks {
            let used = usage[0].as_f64().unwrap_or(0.0);
            let free = usage[1].as_f64().unwrap_or(0.0);
            let share = used / (used + free).max(1.0);
            out.push_str(&format!(
                "  {} {:5.1}%  {} used, {} free  {device}\n",
                bar(share, 20),
                share * 100.0,
                units.bytes(&usage[0]),
                units.bytes(&usage[1]),
            ));
        }
    }
    let vpn = &data["vpn_status"];
    if vpn.is_object() {
        let line = match vpn["ifname"].as_str() {
            Some(ifname) => format!(
                "{ifname} {} to {} ({} {})",
                vpn["conn_type"].as_str().unwrap_or("?"),
                vpn["conn_host"].as_str().unwrap_or("?"),
                vpn["conn_ip4"].as_str().unwrap_or("-"),
                vpn["conn_ip6"].as_str().unwrap_or("-"),
            ),
            None => vpn["desc"].as_str().unwrap_or("none").to_owned(),
        };
        out.push_str(&format!("\nVPN   {line}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_frame_shows_every_core_memory_and_disks() {
        let data = json!({
            "ttl_cpu_usage": [0.5, 0.25],
            "ttl_mem_usage": [1000, 2000, 3000],
            "disk_util": {"/dev/vda": [10, 30]},
            "vpn_status": {"ifname": null, "desc": "no VPN interface on this host"},
        });
        let frame = frame("host1", &data, &Units::default(), HostKind::Agent);
        assert!(
            frame.contains("cpu0  ###############...............  50.0%"),
            "{frame}"
        );
        assert!(frame.contains("cpu1"), "{frame}");
        assert!(frame.contains("used 1.0 kB"), "{frame}");
        assert!(frame.contains("/dev/vda"), "{frame}");
        assert!(frame.contains("no VPN interface"), "{frame}");
    }

    #[test]
    fn a_quix_backends_memory_totals_have_no_unit() {
        // backup.py's telemetry, as seed 003 gives it.
        let data = json!({
            "ttl_cpu_usage": [0.10, 0.11, 0.02, 0.01],
            "ttl_mem_usage": [128, 1000, 412],
            "disk_util": {"/dev/sda": [195739194, 8185749375u64]},
        });
        let seed = frame("quixhost", &data, &Units::default(), HostKind::Quix);
        assert!(
            seed.contains("used 128, buff/cache 1000, free 412 of 1540 (no unit given)"),
            "{seed}"
        );
        assert!(seed.contains("195.7 MB used, 8.2 GB free"), "{seed}");
        let odd = json!({"ttl_mem_usage": [1.5, "x", null], "disk_util": {"d": "x"}});
        let screen = frame("quixhost", &odd, &Units::default(), HostKind::Quix);
        assert!(
            screen.contains("used 1.5, buff/cache x, free -"),
            "{screen}"
        );
    }
}
