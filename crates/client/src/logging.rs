//! How every concierge program logs: to standard error, filtered by
//! CONCIERGE_LOG (else RUST_LOG, else `info`), in colour only for a person at
//! a terminal. The gateway, the agent and its slim binary share it, so one
//! variable means the same everywhere.

use tracing_subscriber::EnvFilter;

/// The log filter of CONCIERGE_LOG, else RUST_LOG, else `info`; one that
/// does not parse is reported under its variable's name.
fn filter() -> Result<EnvFilter, String> {
    for name in ["CONCIERGE_LOG", "RUST_LOG"] {
        let Some(value) = std::env::var_os(name) else {
            continue;
        };
        let value = value
            .into_string()
            .map_err(|value| format!("{name}={}: not valid UTF-8", value.to_string_lossy()))?;
        return EnvFilter::try_new(&value).map_err(|e| {
            format!("{name}={value}: not a log filter ({e}); e.g. info, debug or concierge=trace")
        });
    }
    Ok(EnvFilter::new("info"))
}

/// Logs to standard error, filtered by [`filter`]; the error names the
/// variable whose filter does not parse.
pub fn init() -> Result<(), String> {
    let filter = filter()?;
    // Colours only for a person at a terminal, and never under NO_COLOR:
    // escape codes in a log file or a supervisor's journal are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
    Ok(())
}
