//! `ctl top`: one screen of a host's telemetry (seed 003's `tele_data`).

use serde_json::Value;

use super::render::{bar, Units};

/// The screen for one snapshot.
pub fn frame(host: &str, data: &Value, units: &Units) -> String {
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
        let (used, cache, free) = (
            used.as_u64().unwrap_or(0),
            cache.as_u64().unwrap_or(0),
            free.as_u64().unwrap_or(0),
        );
        let total = (used + cache + free).max(1);
        out.push_str(&format!(
            "\n{:<5} {} used {}, buff/cache {}, free {} of {}\n",
            units.mem_label,
            bar(used as f64 / total as f64, 30),
            units.size(used),
            units.size(cache),
            units.size(free),
            units.size(total),
        ));
    }
    if let Some(disks) = data["disk_util"].as_object() {
        out.push_str("\nDisks\n");
        for (device, usage) in disks {
            let used = usage[0].as_u64().unwrap_or(0);
            let free = usage[1].as_u64().unwrap_or(0);
            let total = (used + free).max(1);
            out.push_str(&format!(
                "  {} {:5.1}%  {} used, {} free  {device}\n",
                bar(used as f64 / total as f64, 20),
                used as f64 * 100.0 / total as f64,
                units.size(used),
                units.size(free),
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
        let frame = frame("host1", &data, &Units::default());
        assert!(
            frame.contains("cpu0  ###############...............  50.0%"),
            "{frame}"
        );
        assert!(frame.contains("cpu1"), "{frame}");
        assert!(frame.contains("used 1.0 kB"), "{frame}");
        assert!(frame.contains("/dev/vda"), "{frame}");
        assert!(frame.contains("no VPN interface"), "{frame}");
    }
}
