//! How `concierge ctl` shows things to a person: tables, sizes in the unit
//! the user chose (`storage_unit_of_measurement`), and the memory label
//! they prefer (`mem_or_ram`). The console writes sizes the same way
//! (`bytes` in src/console/assets/js/ui.js): a size reads alike in both. A size a host gives in bytes or in MB (10^6
//! bytes, seed 003's unit) is shown in the user's unit; a number a host
//! gives without a unit is shown as it is (see `replies`).

use std::collections::BTreeMap;

use comfy_table::{presets, Table};
use serde_json::Value;

/// A user's display choices, from USER_SETTINGS_FETCH.
#[derive(Debug, Clone)]
pub struct Units {
    storage: Storage,
    pub mem_label: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storage {
    Bytes,
    Decimal,
    Binary,
}

impl Default for Units {
    /// The defaults of the seed's settings: `gb` and `mem`.
    fn default() -> Self {
        Units {
            storage: Storage::Decimal,
            mem_label: "Mem",
        }
    }
}

impl Units {
    pub fn from_settings(settings: &BTreeMap<String, String>) -> Units {
        let storage = match settings
            .get("storage_unit_of_measurement")
            .map(String::as_str)
        {
            Some("bytes") => Storage::Bytes,
            Some("gib") => Storage::Binary,
            _ => Storage::Decimal,
        };
        let mem_label = match settings.get("mem_or_ram").map(String::as_str) {
            Some("ram") => "RAM",
            _ => "Mem",
        };
        Units { storage, mem_label }
    }

    /// `bytes` in the user's unit: `1234567 B`, `1.2 MB` or `1.2 MiB`.
    pub fn size(&self, bytes: u64) -> String {
        let (base, names): (f64, [&str; 5]) = match self.storage {
            Storage::Bytes => return format!("{bytes} B"),
            Storage::Decimal => (1000.0, ["B", "kB", "MB", "GB", "TB"]),
            Storage::Binary => (1024.0, ["B", "KiB", "MiB", "GiB", "TiB"]),
        };
        let mut value = bytes as f64;
        let mut unit = 0;
        while value >= base && unit < names.len() - 1 {
            value /= base;
            unit += 1;
        }
        if unit == 0 {
            format!("{bytes} B")
        } else {
            format!("{value:.1} {}", names[unit])
        }
    }
}

impl Units {
    /// A JSON number of bytes in the user's unit; anything else as it is.
    pub fn bytes(&self, value: &Value) -> String {
        match value.as_f64() {
            Some(bytes) if bytes >= 0.0 => self.size(bytes.round() as u64),
            _ => text(value),
        }
    }

    /// A JSON number of MB (10^6 bytes) in the user's unit; anything else
    /// as it is.
    pub fn megabytes(&self, value: &Value) -> String {
        match value.as_f64() {
            Some(mb) if mb >= 0.0 => self.size((mb * 1e6).round() as u64),
            _ => text(value),
        }
    }
}

/// `secs` since the Unix epoch as this machine's local time,
/// `2026-12-07 09:30:00` (UTC, with a `Z`, where the local zone cannot be
/// read).
pub fn local_time(secs: u64) -> String {
    let Ok(t) = libc::time_t::try_from(secs) else {
        return secs.to_string();
    };
    let mut tm = std::mem::MaybeUninit::<libc::tm>::zeroed();
    // SAFETY: localtime_r reads one time_t and writes one tm, both ours.
    let local = unsafe { libc::localtime_r(&t, tm.as_mut_ptr()) };
    if local.is_null() {
        let utc = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        return humantime::format_rfc3339_seconds(utc)
            .to_string()
            .replace('T', " ");
    }
    // SAFETY: localtime_r succeeded, so it filled the tm in.
    let tm = unsafe { tm.assume_init() };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        i64::from(tm.tm_year) + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// A table with a header row and no borders, like `ps`.
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = plain();
    table.set_header(header);
    table
}

/// A table without borders or header.
pub fn plain() -> Table {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    table
}

/// A bar of `width` cells for a share between 0 and 1.
pub fn bar(share: f64, width: usize) -> String {
    let filled = ((share.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    format!("{}{}", "#".repeat(filled), ".".repeat(width - filled))
}

/// A JSON value as a table cell: strings without quotes, null as `-`.
pub(crate) fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_have_every_field() {
        let shown = local_time(1_796_600_000);
        assert_eq!(shown.len(), "2026-12-07 09:30:00".len(), "{shown}");
        assert!(shown.starts_with("2026-"), "{shown}");
    }

    #[test]
    fn sizes_follow_the_users_unit() {
        let mut settings = BTreeMap::new();
        assert_eq!(Units::from_settings(&settings).size(1_500_000), "1.5 MB");
        settings.insert("storage_unit_of_measurement".into(), "gib".into());
        assert_eq!(
            Units::from_settings(&settings).size(3 * 1024 * 1024 * 1024),
            "3.0 GiB"
        );
        settings.insert("storage_unit_of_measurement".into(), "bytes".into());
        settings.insert("mem_or_ram".into(), "ram".into());
        let units = Units::from_settings(&settings);
        assert_eq!(
            (units.size(42), units.mem_label),
            ("42 B".to_owned(), "RAM")
        );
        assert_eq!(bar(0.5, 4), "##..");
    }

    /// The console formats sizes alike (`bytes` in
    /// src/console/assets/js/ui.js): these are its cases too.
    #[test]
    fn sizes_are_written_as_the_console_writes_them() {
        let unit = |name: &str| {
            let settings =
                BTreeMap::from([("storage_unit_of_measurement".to_owned(), name.to_owned())]);
            Units::from_settings(&settings)
        };
        let (gb, gib, raw) = (unit("gb"), unit("gib"), unit("bytes"));
        assert_eq!(gib.size(1536), "1.5 KiB");
        assert_eq!(gib.size(1023), "1023 B");
        assert_eq!(gib.size(5 * 1024 * 1024 + 512 * 1024), "5.5 MiB");
        assert_eq!(gb.size(1536), "1.5 kB");
        assert_eq!(gb.size(999), "999 B");
        assert_eq!(gb.size(250_000_000), "250.0 MB");
        assert_eq!(raw.size(1536), "1536 B");
        // An unknown value is the gateway's default, `gb`.
        assert_eq!(unit("furlongs").size(1536), "1.5 kB");
    }

    #[test]
    fn megabytes_are_millions_of_bytes_in_any_unit() {
        let mut settings = BTreeMap::new();
        let decimal = Units::from_settings(&settings);
        assert_eq!(decimal.megabytes(&Value::from(111)), "111.0 MB");
        assert_eq!(decimal.megabytes(&Value::from(0.5)), "500.0 kB");
        settings.insert("storage_unit_of_measurement".into(), "gib".into());
        let binary = Units::from_settings(&settings);
        assert_eq!(binary.megabytes(&Value::from(111)), "105.9 MiB");
        assert_eq!(binary.bytes(&Value::from(2048)), "2.0 KiB");
        // Not a size: shown as it is, never as 0 B.
        assert_eq!(decimal.megabytes(&Value::from("lots")), "lots");
        assert_eq!(decimal.bytes(&Value::from(-3)), "-3");
        assert_eq!(decimal.bytes(&Value::Null), "-");
    }
}
