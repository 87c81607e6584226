//! How a job reads to a person (`ctl run`, `ctl jobs`, `ctl job`): the
//! progress line while it runs, host names folded as clustershell's
//! `clubak` folds them (`web[1-3,5],db1`), the end's summary (exit codes
//! and every other final state counted, with their hosts), hosts with the
//! same output grouped under one header, output lines prefixed by their
//! host, and the tables of jobs and of a job's hosts. Everything here is a
//! pure function of the protocol's job types, so that it is tested without
//! a gateway.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use concierge_protocol::agent::Request;
use concierge_protocol::jobs::{HostState, JobDetail, JobHost, JobInfo, OutputStream};

use super::render::table;

/// The longest piece of a line kept while waiting for its end (`--stream`):
/// beyond it, the piece is printed as a line of its own.
const MAX_PARTIAL_LINE: usize = 64 * 1024;

/// Host names folded: those that differ only by a trailing number share a
/// prefix and list their numbers as ranges (`web[1-3,5]`), zero-padded
/// numbers kept apart by their width (`n[01-02],n7`); a name alone is as it
/// is. Sorted by prefix, then number.
pub(crate) fn fold<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    // prefix -> (width when zero-padded, else 0) -> numbers
    let mut numbered: BTreeMap<&str, BTreeMap<usize, Vec<u64>>> = BTreeMap::new();
    let mut plain: Vec<&str> = Vec::new();
    for name in names {
        let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (prefix, number) = name.split_at(name.len() - digits);
        match number.parse::<u64>() {
            Ok(n) if digits > 0 => {
                let width = if number.starts_with('0') && digits > 1 {
                    digits
                } else {
                    0
                };
                numbered
                    .entry(prefix)
                    .or_default()
                    .entry(width)
                    .or_default()
                    .push(n);
            }
            _ => plain.push(name),
        }
    }
    let mut items: Vec<(String, String)> = plain
        .into_iter()
        .map(|name| (name.to_owned(), name.to_owned()))
        .collect();
    for (prefix, widths) in numbered {
        for (width, mut numbers) in widths {
            numbers.sort_unstable();
            numbers.dedup();
            let show = |n: u64| format!("{n:0width$}");
            let item = match numbers.as_slice() {
                [one] => format!("{prefix}{}", show(*one)),
                _ => format!("{prefix}[{}]", ranges(&numbers, show)),
            };
            items.push((format!("{prefix}{:020}", numbers[0]), item));
        }
    }
    items.sort();
    items.dedup();
    items
        .into_iter()
        .map(|(_, item)| item)
        .collect::<Vec<_>>()
        .join(",")
}

/// Sorted, distinct numbers as ranges: `1-3,5`.
fn ranges(numbers: &[u64], show: impl Fn(u64) -> String) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut start = 0;
    for i in 1..=numbers.len() {
        if i == numbers.len() || numbers[i] != numbers[i - 1] + 1 {
            let (first, last) = (numbers[start], numbers[i - 1]);
            out.push(if first == last {
                show(first)
            } else {
                format!("{}-{}", show(first), show(last))
            });
            start = i;
        }
    }
    out.join(",")
}

/// `1 host`, `3 hosts`.
fn hosts(n: usize) -> String {
    format!("{n} host{}", if n == 1 { "" } else { "s" })
}

/// Where a job's hosts are, as the progress line counts them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Final, and it went well.
    pub done: usize,
    /// Final, and it did not.
    pub failed: usize,
    /// Sent, or running.
    pub running: usize,
    /// Queued.
    pub waiting: usize,
}

impl Tally {
    pub(crate) fn of<'a>(hosts: impl IntoIterator<Item = &'a JobHost>) -> Tally {
        let mut tally = Tally::default();
        for h in hosts {
            match h.state {
                HostState::Queued => tally.waiting += 1,
                HostState::Sent | HostState::Running => tally.running += 1,
                _ if h.unsuccessful() => tally.failed += 1,
                _ => tally.done += 1,
            }
        }
        tally
    }

    /// `12 done, 1 failed, 4 running, 3 waiting, of 20`.
    pub(crate) fn line(&self, total: u32) -> String {
        format!(
            "{} done, {} failed, {} running, {} waiting, of {total}",
            self.done, self.failed, self.running, self.waiting
        )
    }
}

/// The end's counts, one line per kind of outcome: the exit codes on the
/// first (`exit 0: 18 hosts, exit 1: 2 hosts (web[3,7])`), then each other
/// state with its hosts (failures by reason). Hosts that went well are
/// counted, those that did not are named.
pub(crate) fn outcomes(all: &[JobHost]) -> Vec<String> {
    let mut exits: BTreeMap<(u8, i64, String), Vec<&str>> = BTreeMap::new();
    let mut others: BTreeMap<(HostState, String), Vec<&str>> = BTreeMap::new();
    for h in all {
        match (h.state, h.exit_code, &h.signal) {
            (HostState::Exited, Some(code), _) => exits
                .entry((0, i64::from(code), String::new()))
                .or_default()
                .push(&h.host),
            (HostState::Exited, None, signal) => exits
                .entry((1, 0, signal.clone().unwrap_or_else(|| "unknown".into())))
                .or_default()
                .push(&h.host),
            (state, _, _) => {
                let why = match (&h.reason, &h.desc) {
                    (Some(reason), Some(desc)) => format!("{reason}: {desc}"),
                    (Some(reason), None) => reason.to_string(),
                    (None, Some(desc)) => desc.clone(),
                    (None, None) => String::new(),
                };
                others.entry((state, why)).or_default().push(&h.host)
            }
        }
    }
    let mut lines = Vec::new();
    let exit_parts: Vec<String> = exits
        .into_iter()
        .map(|((by_signal, code, signal), names)| {
            let what = match by_signal {
                0 => format!("exit {code}"),
                _ => format!("signal {signal}"),
            };
            match code == 0 && by_signal == 0 {
                true => format!("{what}: {}", hosts(names.len())),
                false => format!("{what}: {} ({})", hosts(names.len()), fold(names)),
            }
        })
        .collect();
    if !exit_parts.is_empty() {
        lines.push(exit_parts.join(", "));
    }
    for ((state, why), names) in others {
        let what = state.as_str().replace('_', " ");
        let mut line = match state {
            HostState::Done => format!("{what}: {}", hosts(names.len())),
            _ => format!("{what}: {} ({})", hosts(names.len()), fold(names)),
        };
        if !why.is_empty() {
            line.push_str(&format!(": {why}"));
        }
        lines.push(line);
    }
    lines
}

/// Hosts whose output and reply are the same (equal `digest`), largest
/// group first: each group's output is fetched once and shown once.
pub(crate) fn groups(all: &[JobHost]) -> Vec<Vec<&JobHost>> {
    let mut by_digest: HashMap<&str, Vec<&JobHost>> = HashMap::new();
    for h in all {
        if let Some(digest) = &h.digest {
            by_digest.entry(digest).or_default().push(h);
        }
    }
    let mut groups: Vec<Vec<&JobHost>> = by_digest.into_values().collect();
    for g in &mut groups {
        g.sort_by(|a, b| a.host.cmp(&b.host));
    }
    groups.sort_by(|a, b| {
        b.len()
            .cmp(&a.len())
            .then_with(|| a[0].host.cmp(&b[0].host))
    });
    groups
}

/// A group's header, as clubak draws it: its hosts folded and counted
/// between two rules.
pub(crate) fn group_header(group: &[&JobHost]) -> String {
    let title = format!(
        "{} ({})",
        fold(group.iter().map(|h| h.host.as_str())),
        group.len()
    );
    let rule = "-".repeat(title.chars().count().clamp(15, 78));
    format!("{rule}\n{title}\n{rule}")
}

/// What one host printed and replied (from `job_output`): its standard
/// output, its standard error, then a reply as JSON; `(no output)` when
/// there is none.
pub(crate) fn host_output(host: &JobHost) -> String {
    let mut out = String::new();
    for captured in [&host.stdout, &host.stderr].into_iter().flatten() {
        if !captured.is_empty() {
            out.push_str(&captured.text());
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    if let Some(reply) = &host.reply {
        out.push_str(&serde_json::to_string_pretty(reply).unwrap_or_default());
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("(no output)\n");
    }
    out
}

/// A request in a few words: a command as typed, else its name and
/// arguments (at most 60 characters).
pub(crate) fn request_summary(request: &Request) -> String {
    let full = match request {
        Request::Execute(e) => match (&e.cmd, &e.command) {
            (Some(cmd), _) => cmd
                .iter()
                .map(|w| {
                    if w.is_empty() || w.contains(char::is_whitespace) {
                        format!("'{w}'")
                    } else {
                        w.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
            (None, Some(command)) => command.clone(),
            (None, None) => "execute".into(),
        },
        other => {
            let args = serde_json::to_value(other).unwrap_or_default()["msg"].clone();
            match args.as_object().is_none_or(|a| a.is_empty()) {
                true => other.name().as_str().to_owned(),
                false => format!("{} {args}", other.name().as_str()),
            }
        }
    };
    match full.char_indices().nth(59) {
        Some((at, _)) => format!("{}…", &full[..at]),
        None => full,
    }
}

/// Unix milliseconds as an RFC 3339 time, to the second.
pub(crate) fn when(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A job's counts by state: `exited 18, offline 2`.
fn counts(job: &JobInfo) -> String {
    let parts: Vec<String> = job
        .counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(state, n)| format!("{} {n}", state.as_str()))
        .collect();
    match parts.is_empty() {
        true => "-".into(),
        false => parts.join(", "),
    }
}

fn job_state(job: &JobInfo) -> String {
    let state = serde_json::to_value(job.state).unwrap_or_default();
    let state = state.as_str().unwrap_or("?");
    match &job.stopped_by {
        Some(by) => format!("{state} ({by})"),
        None => state.to_owned(),
    }
}

/// `ctl jobs`: one row a job, newest first as the gateway lists them.
pub(crate) fn jobs_table(jobs: &[JobInfo]) -> String {
    let mut t = table([
        "ID", "CREATED", "USER", "TARGET", "REQUEST", "STATE", "HOSTS", "COUNTS",
    ]);
    for job in jobs {
        t.add_row([
            job.id.to_string(),
            when(job.created_ms),
            job.user.clone().unwrap_or_else(|| "-".into()),
            job.spec.target.clone(),
            request_summary(&job.spec.request),
            job_state(job),
            job.hosts.to_string(),
            counts(job),
        ]);
    }
    t.to_string()
}

/// `ctl job ID`: the job, then one row a host.
pub(crate) fn job_detail(detail: &JobDetail) -> String {
    let job = &detail.job;
    let mut out = format!(
        "job {}: {} on {} ({})\ncreated {} by {}{}\nstate {}: {}\n",
        job.id,
        request_summary(&job.spec.request),
        job.spec.target,
        hosts(job.hosts as usize),
        when(job.created_ms),
        job.user.as_deref().unwrap_or(&job.client),
        job.finished_ms
            .map(|f| format!(", finished {}", when(f)))
            .unwrap_or_default(),
        job_state(job),
        counts(job),
    );
    let mut t = table(["HOST", "STATE", "RESULT", "ATTEMPTS", "TOOK"]);
    for h in &detail.hosts {
        let result = match (h.exit_code, &h.signal, &h.reason) {
            (Some(code), _, _) => format!("exit {code}"),
            (None, Some(signal), _) => signal.clone(),
            (None, None, Some(reason)) => match &h.desc {
                Some(desc) => format!("{reason}: {desc}"),
                None => reason.to_string(),
            },
            _ => h.desc.clone().unwrap_or_else(|| "-".into()),
        };
        let took = match (h.started_ms, h.finished_ms) {
            (Some(s), Some(f)) => {
                humantime::format_duration(Duration::from_millis(f.saturating_sub(s))).to_string()
            }
            _ => "-".into(),
        };
        t.add_row([
            h.host.clone(),
            h.state.as_str().to_owned(),
            result,
            h.attempts.to_string(),
            took,
        ]);
    }
    out.push_str(&t.to_string());
    if (detail.offset as usize + detail.hosts.len()) < detail.total as usize {
        out.push_str(&format!(
            "\n({} of {} hosts shown)",
            detail.hosts.len(),
            detail.total
        ));
    }
    out
}

/// Output as it streams (`--stream`), cut into lines each prefixed with
/// its host, the prefixes padded to the longest name; a line's pieces are
/// kept until its end comes (at most [`MAX_PARTIAL_LINE`] bytes).
pub(crate) struct Prefixer {
    width: usize,
    partial: HashMap<(String, bool), String>,
}

impl Prefixer {
    pub(crate) fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Prefixer {
        Prefixer {
            width: names.into_iter().map(str::len).max().unwrap_or(0),
            partial: HashMap::new(),
        }
    }

    /// Makes room for a name longer than any seen yet.
    pub(crate) fn widen(&mut self, name: &str) {
        self.width = self.width.max(name.len());
    }

    /// The whole lines `data` ends, prefixed, each with whether it goes to
    /// standard error.
    pub(crate) fn push(
        &mut self,
        host: &str,
        stream: OutputStream,
        data: &str,
    ) -> Vec<(bool, String)> {
        let stderr = stream == OutputStream::Stderr;
        self.widen(host);
        let buffer = self.partial.entry((host.to_owned(), stderr)).or_default();
        buffer.push_str(data);
        let mut lines = Vec::new();
        while let Some(end) = buffer.find('\n') {
            let line: String = buffer.drain(..=end).collect();
            lines.push(line.trim_end_matches(['\n', '\r']).to_owned());
        }
        if buffer.len() > MAX_PARTIAL_LINE {
            lines.push(std::mem::take(buffer));
        }
        let width = self.width;
        lines
            .into_iter()
            .map(|line| (stderr, format!("{:<width$}: {line}", host)))
            .collect()
    }

    /// What `host` printed after its last line end: its output is over.
    pub(crate) fn finish(&mut self, host: &str) -> Vec<(bool, String)> {
        let width = self.width;
        [false, true]
            .into_iter()
            .filter_map(|stderr| {
                let rest = self.partial.remove(&(host.to_owned(), stderr))?;
                (!rest.is_empty()).then(|| (stderr, format!("{host:<width$}: {rest}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concierge_protocol::agent::args::{Execute, Unit};
    use concierge_protocol::agent::Reason;
    use concierge_protocol::jobs::{Captured, JobSpec, JobState};

    fn host(name: &str, state: HostState, exit_code: Option<i32>) -> JobHost {
        JobHost {
            state,
            exit_code,
            ..JobHost::queued(name, 0)
        }
    }

    fn with_digest(mut h: JobHost, digest: &str) -> JobHost {
        h.digest = Some(digest.into());
        h
    }

    #[test]
    fn names_fold_as_clubak_folds_them() {
        assert_eq!(
            fold(["web1", "web2", "web3", "web5", "db1"]),
            "db1,web[1-3,5]"
        );
        assert_eq!(fold(["web3"]), "web3");
        assert_eq!(fold(["b", "a", "a"]), "a,b");
        assert_eq!(fold(["n01", "n02", "n7", "n10"]), "n[01-02],n[7,10]");
        assert_eq!(fold(["web_1", "web_2", "web"]), "web,web_[1-2]");
        assert_eq!(fold(["x9", "x10", "x11", "x13"]), "x[9-11,13]");
        assert_eq!(fold(Vec::<&str>::new()), "");
        // A number too long for u64 is a plain name, never a panic.
        let long = "h123456789012345678901234567890";
        assert_eq!(fold([long, "h1"]), format!("h1,{long}"));
        assert_eq!(fold(["7", "8"]), "[7-8]");
    }

    #[test]
    fn the_tally_counts_what_is_done_failed_running_and_waiting() {
        let all = [
            host("a", HostState::Exited, Some(0)),
            host("b", HostState::Exited, Some(3)),
            host("c", HostState::Running, None),
            host("d", HostState::Sent, None),
            host("e", HostState::Queued, None),
            host("f", HostState::Done, None),
            host("g", HostState::Offline, None),
        ];
        let tally = Tally::of(&all);
        assert_eq!(
            tally,
            Tally {
                done: 2,
                failed: 2,
                running: 2,
                waiting: 1
            }
        );
        assert_eq!(
            tally.line(7),
            "2 done, 2 failed, 2 running, 1 waiting, of 7"
        );
    }

    #[test]
    fn the_summary_counts_exit_codes_and_names_what_went_wrong() {
        let mut all: Vec<JobHost> = (1..=18)
            .map(|i| host(&format!("web{i}"), HostState::Exited, Some(0)))
            .collect();
        all.push(host("web19", HostState::Exited, Some(1)));
        all.push(host("web20", HostState::Exited, Some(1)));
        let mut killed = host("db1", HostState::Exited, None);
        killed.signal = Some("SIGKILL".into());
        all.push(killed);
        all.push(host("db2", HostState::Offline, None));
        all.push(host("db3", HostState::Offline, None));
        all.push(host("db4", HostState::TimedOut, None));
        let mut refused = host("db5", HostState::Failed, None);
        refused.reason = Some(Reason::Forbidden);
        refused.desc = Some("not allowed here".into());
        all.push(refused);
        all.push(host("db6", HostState::Skipped, None));
        assert_eq!(
            outcomes(&all),
            [
                "exit 0: 18 hosts, exit 1: 2 hosts (web[19-20]), signal SIGKILL: 1 host (db1)",
                "failed: 1 host (db5): forbidden: not allowed here",
                "timed out: 1 host (db4)",
                "offline: 2 hosts (db[2-3])",
                "skipped: 1 host (db6)",
            ]
        );
        assert_eq!(
            outcomes(&[host("a", HostState::Done, None)]),
            ["done: 1 host"]
        );
    }

    #[test]
    fn equal_outputs_make_one_group_under_a_header() {
        let all = [
            with_digest(host("web2", HostState::Exited, Some(0)), "aa"),
            with_digest(host("web1", HostState::Exited, Some(0)), "aa"),
            with_digest(host("db1", HostState::Exited, Some(1)), "bb"),
            with_digest(host("web3", HostState::Exited, Some(0)), "aa"),
            host("web4", HostState::Offline, None),
        ];
        let groups = groups(&all);
        let names: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(|h| h.host.as_str()).collect())
            .collect();
        assert_eq!(names, [vec!["web1", "web2", "web3"], vec!["db1"]]);
        assert_eq!(
            group_header(&groups[0]),
            "---------------\nweb[1-3] (3)\n---------------"
        );
    }

    #[test]
    fn a_hosts_output_is_its_streams_then_its_reply() {
        let mut h = host("a", HostState::Exited, Some(0));
        assert_eq!(host_output(&h), "(no output)\n");
        h.stdout = Some(Captured::keep(b"hello", 100));
        h.stderr = Some(Captured::keep(b"warn\n", 100));
        assert_eq!(host_output(&h), "hello\nwarn\n");
        h.stdout = Some(Captured::keep(&[b'x'; 40], 10));
        assert!(host_output(&h).contains("30 bytes left out"));
        let mut done = host("b", HostState::Done, None);
        done.reply = Some(serde_json::json!({"result": "success"}));
        assert!(host_output(&done).contains("\"result\": \"success\""));
    }

    #[test]
    fn requests_read_in_a_few_words() {
        let exec = Request::Execute(Execute {
            cmd: Some(vec!["sh".into(), "-c".into(), "exit 3".into()]),
            ..Execute::default()
        });
        assert_eq!(request_summary(&exec), "sh -c 'exit 3'");
        let unit = Request::RestartService(Unit {
            service_name: "nginx.service".into(),
        });
        assert_eq!(
            request_summary(&unit),
            r#"restart_service {"service_name":"nginx.service"}"#
        );
        assert_eq!(request_summary(&Request::Ping(Default::default())), "ping");
        let long = Request::Execute(Execute {
            cmd: Some(vec!["é".repeat(100)]),
            ..Execute::default()
        });
        assert_eq!(request_summary(&long).chars().count(), 60);
    }

    #[test]
    fn tables_show_jobs_and_their_hosts() {
        let spec = JobSpec::new("web*", Request::Ping(Default::default()));
        let job = JobInfo {
            id: "0123456789ab".parse().unwrap(),
            spec,
            user: Some("olga".into()),
            client: "olga_ctl_1".into(),
            created_ms: 1_700_000_000_000,
            finished_ms: Some(1_700_000_001_000),
            state: JobState::Stopped,
            stopped_by: Some("max_failures".into()),
            hosts: 2,
            counts: [(HostState::Done, 1), (HostState::Skipped, 1)].into(),
        };
        let listed = jobs_table(std::slice::from_ref(&job));
        for word in [
            "0123456789ab",
            "olga",
            "web*",
            "ping",
            "stopped (max_failures)",
        ] {
            assert!(listed.contains(word), "{word}: {listed}");
        }
        assert!(listed.contains("done 1, skipped 1"), "{listed}");
        let mut done = host("web1", HostState::Done, None);
        (done.started_ms, done.finished_ms) = (Some(1000), Some(3500));
        let detail = JobDetail {
            job,
            hosts: vec![done, host("web2", HostState::Skipped, None)],
            total: 2,
            offset: 0,
        };
        let shown = job_detail(&detail);
        assert!(
            shown.starts_with("job 0123456789ab: ping on web* (2 hosts)"),
            "{shown}"
        );
        assert!(
            shown.contains("2s 500ms") && shown.contains("skipped"),
            "{shown}"
        );
    }

    #[test]
    fn streamed_output_is_cut_into_prefixed_lines() {
        let mut p = Prefixer::new(["web1", "db10"]);
        assert!(p.push("web1", OutputStream::Stdout, "hel").is_empty());
        assert_eq!(
            p.push("web1", OutputStream::Stdout, "lo\nwor"),
            [(false, "web1: hello".to_owned())]
        );
        assert_eq!(
            p.push("db10", OutputStream::Stderr, "oops\r\n"),
            [(true, "db10: oops".to_owned())]
        );
        assert_eq!(p.finish("web1"), [(false, "web1: wor".to_owned())]);
        assert!(p.finish("web1").is_empty());
        p.widen("longer_name");
        assert_eq!(
            p.push("a", OutputStream::Stdout, "x\n"),
            [(false, "a          : x".to_owned())]
        );
        let flood = "y".repeat(MAX_PARTIAL_LINE + 1);
        assert_eq!(p.push("a", OutputStream::Stdout, &flood).len(), 1);
    }
}
