//! What the operating system can tell about both sides of a run: CPU time
//! (the benchmark's own through getrusage, a gateway's from
//! `/proc/<pid>/stat`), resident memory, and open-file limits.

use std::io;
use std::time::Duration;

use super::clients::split_url;
use super::BenchError;

/// CPU time (user + system) this process has used.
pub fn own_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a full rusage into the pointer it is given.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return Duration::ZERO;
        }
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time (user + system) process `pid` has used, to the kernel's clock
/// tick (usually 10 ms).
pub fn process_cpu(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may contain anything: fields
    // are counted from the last ')'. utime and stime are fields 14 and 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat"))
    };
    Ok(ticks_to_duration(tick(11)? + tick(12)?))
}

/// CPU time every core of the machine spent busy (anything but idle and
/// I/O wait), from `/proc/stat`: it includes work no process is billed for,
/// such as loopback packet processing in softirq threads.
pub fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    Some(ticks_to_duration(busy))
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// Resident memory of process `pid` in bytes (`VmRSS`).
pub fn process_rss(pid: u32) -> io::Result<u64> {
    status_kib(&format!("/proc/{pid}/status"), "VmRSS:").map(|kib| kib * 1024)
}

/// Resident memory of this process in bytes.
pub fn own_rss() -> io::Result<u64> {
    status_kib("/proc/self/status", "VmRSS:").map(|kib| kib * 1024)
}

fn status_kib(path: &str, key: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(path)?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no {key} in {path}")))
}

/// Raises this process's soft open-file limit to its hard limit and returns
/// the new soft limit.
pub fn raise_open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit read and write one rlimit struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// The soft open-file limit of process `pid`, from `/proc/<pid>/limits`.
pub fn open_files_limit(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Reads `process_resident_memory_bytes` from a Prometheus text endpoint.
pub async fn metrics_rss(url: &str) -> Result<u64, BenchError> {
    let body = http_get(url).await?;
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let value = l.strip_prefix("process_resident_memory_bytes")?;
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .map(|v| v as u64)
        .ok_or_else(|| {
            BenchError::Usage(format!(
                "{url} has no process_resident_memory_bytes: pass --server-pid instead"
            ))
        })
}

/// A minimal HTTP/1.1 GET (no TLS, no redirects): the body of a 200.
pub async fn http_get(url: &str) -> Result<String, BenchError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (authority, path) = split_url(url)?;
    let mut stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .map_err(|_| BenchError::Protocol(format!("GET {url} timed out")))??;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| BenchError::Protocol(format!("GET {url}: incomplete response")))?;
    if head.split_whitespace().nth(1) != Some("200") {
        let status = head.lines().next().unwrap_or("");
        return Err(BenchError::Protocol(format!("GET {url}: {status}")));
    }
    if head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"))
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

/// Joins the chunks of a chunked HTTP body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        let (Some(chunk), Some(after)) = (rest.get(..size), rest.get(size..)) else {
            break;
        };
        if size == 0 {
            break;
        }
        out.push_str(chunk);
        body = after.trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_figures_are_readable() {
        let pid = std::process::id();
        assert!(process_rss(pid).expect("rss") > 0);
        assert!(own_rss().expect("rss") > 0);
        process_cpu(pid).expect("cpu");
        assert!(machine_busy().is_some());
        assert!(open_files_limit(pid).is_some());
        assert!(raise_open_files() >= 1);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
