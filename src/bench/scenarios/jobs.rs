//! The `jobs` scenario (issue 25's proof): N simulated agents
//! ([`super::agent`]) join with the run's label, an operator
//! ([`super::operator`]) creates one job on them all and follows it; right
//! after the job is created, the `--kill-ratio` share of the agents drop
//! their sockets and come back. Then every host's row is read back and
//! checked against what its agent did: final, run once, as answered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::agent::{agent_task, gather, AgentOutcome, AgentPlan, Live};
use super::operator::{Followed, Operator};
use super::run::{finish, Clocks, Ctx};
use super::{GO, STOP};
use crate::bench::report::{JobFigures, Report};
use crate::bench::{BenchError, JobsArgs};
use crate::protocol::agent::args::Execute;
use crate::protocol::agent::Request;
use crate::protocol::jobs::{HostState, JobSpec};

/// The label every agent of a run has (its value the run's id), which the
/// job's target selects.
const LABEL: &str = "bench";

/// `jobs`: see the module's doc.
pub async fn jobs(args: &JobsArgs, scenario: &str) -> Result<Report, BenchError> {
    let n = args.agents;
    if n == 0 {
        return Err(BenchError::Usage("--agents must be at least 1".into()));
    }
    let mut ctx = Ctx::new(&args.common, n + 1).await?;
    let mut report = ctx.report(scenario);
    report.clients = n as u64 + 1;
    let run = ctx.run_id().to_owned();
    let failing = pick(n, args.fail_ratio);
    let killed = pick(n, args.kill_ratio);
    let rss_before = ctx.server_rss().await;
    let live = Arc::new(Live::default());
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let setup_clock = Instant::now();
    ctx.progress.phase("joining", n as u64);
    let reconnect = Duration::from_millis(args.reconnect_ms);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let plan = AgentPlan {
                index: i,
                endpoint: ctx.shared.spread.endpoint_for(i),
                name: ctx.name("agent", i),
                labels: BTreeMap::from([(LABEL.to_owned(), run.clone())]),
                delay: Duration::from_millis(args.delay),
                fails: failing[i],
                kill: killed[i].then_some(reconnect),
                summaries: None,
            };
            tokio::spawn(agent_task(
                ctx.shared.clone(),
                live.clone(),
                plan,
                ctx.connecting(),
                ready_tx.clone(),
                ctx.shared.phase.subscribe(),
            ))
        })
        .collect();
    let up = ctx.await_ready(&mut ready, n).await.len();
    ctx.progress.finish();
    report.setup_seconds = setup_clock.elapsed().as_secs_f64();
    let rss_joined = ctx.server_rss().await;
    let followed = if up == 0 {
        ctx.notes.push("no agent joined: no job was created".into());
        None
    } else {
        Some(run_job(&mut ctx, args, &run, &live).await)
    };
    let rss_after = ctx.server_rss().await;
    ctx.set_phase(STOP);
    let (agents, errors) = gather(handles, &mut report).await;
    let Some((followed, clocks)) = followed.transpose()? else {
        report.errors = errors.into_iter().take(5).collect();
        return finish(ctx, report);
    };
    let (begun, ended) = clocks;
    let chosen = killed.iter().filter(|k| **k).count() as u64;
    let mut figures = check(&followed, &agents, args, chosen);
    let cpu = begun.until(&ended, figures.hosts);
    figures.server_cpu_ms_per_1000_hosts = cpu.server_us_per_delivery;
    let per_1000 = |a: Option<u64>, b: Option<u64>, count: usize| match (a, b) {
        (Some(a), Some(b)) if count > 0 => Some((b as f64 - a as f64) / count as f64 * 1000.0),
        _ => None,
    };
    figures.server_rss_per_1000_hosts_bytes = per_1000(rss_before, rss_joined, up);
    figures.job_rss_per_1000_hosts_bytes = per_1000(rss_joined, rss_after, figures.hosts as usize);
    report.cpu = Some(cpu);
    report.errors = errors.into_iter().take(5).collect();
    ctx.notes.extend(followed.notes);
    report.jobs = Some(figures);
    finish(ctx, report)
}

/// Creates the job, drops the chosen agents' sockets, follows it to the
/// end: what the follower saw, and both sides' clocks around it.
async fn run_job(
    ctx: &mut Ctx,
    args: &JobsArgs,
    run: &str,
    live: &Arc<Live>,
) -> Result<(Followed, (Clocks, Clocks)), BenchError> {
    let mut operator = Operator::join(ctx.shared.clone(), 0, &ctx.name("operator", 0)).await?;
    let spec = JobSpec {
        wait_secs: Some(args.wait_secs),
        batch: args.batch,
        ..JobSpec::new(
            format!("{LABEL}={run}"),
            Request::Execute(Execute {
                cmd: Some(vec!["true".into()]),
                ..Execute::default()
            }),
        )
    };
    let begun = Clocks::read(ctx);
    let job = operator.create(spec).await?;
    // Right after the job is created: the chosen agents drop their sockets.
    ctx.set_phase(GO);
    ctx.progress.phase("running", u64::from(job.hosts));
    let ticker = {
        let progress = ctx.progress.clone();
        let live = live.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                progress.set(live.executions.load(std::sync::atomic::Ordering::Relaxed));
            }
        })
    };
    let followed = operator
        .follow(&job, ctx.shared.patience, args.events)
        .await;
    ticker.abort();
    ctx.progress.finish();
    followed?;
    let ended = Clocks::read(ctx);
    let mut followed = operator.followed;
    let first_outcome = live
        .first_outcome_ns
        .load(std::sync::atomic::Ordering::Relaxed);
    if first_outcome > 0 {
        followed.first_outcome_ns = Some(first_outcome);
    }
    Ok((followed, (begun, ended)))
}

/// The figures of a followed job, and the checks of every host's row
/// against what its agent did.
fn check(followed: &Followed, agents: &[AgentOutcome], args: &JobsArgs, killed: u64) -> JobFigures {
    let ms = |at: Option<u64>| at.map(|at| at.saturating_sub(followed.sent_ns) as f64 / 1e6);
    let job = followed.job.as_ref();
    let hosts = job.map_or(0, |j| u64::from(j.hosts));
    let create_ms = followed.created_ns.saturating_sub(followed.sent_ns) as f64 / 1e6;
    let mut figures = JobFigures {
        job: job.map(|j| j.id.to_string()).unwrap_or_default(),
        hosts,
        delay_ms: args.delay,
        fail_ratio: args.fail_ratio,
        kill_ratio: args.kill_ratio,
        batch: args.batch.map(|b| b.to_string()),
        killed,
        reconnected: agents.iter().filter(|a| a.reconnects > 0).count() as u64,
        refused_rejoins: agents.iter().map(|a| u64::from(a.refused_rejoins)).sum(),
        first_refusal: agents.iter().find_map(|a| a.first_refusal.clone()),
        create_ms,
        create_ms_per_1000_hosts: create_ms / hosts.max(1) as f64 * 1000.0,
        first_outcome_ms: ms(followed.first_outcome_ns),
        followed_all_ms: ms(followed.all_final_ns),
        host_events: followed.host_events,
        regressions: followed.regressions,
        gave_up: followed.gave_up.clone(),
        ..JobFigures::default()
    };
    let by_name: BTreeMap<&str, &AgentOutcome> =
        agents.iter().map(|a| (a.name.as_str(), a)).collect();
    let id = job.map(|j| &j.id);
    for row in &followed.hosts {
        *figures
            .states
            .entry(row.state.as_str().to_owned())
            .or_default() += 1;
        figures.max_attempts = figures.max_attempts.max(row.attempts);
        let record = by_name
            .get(row.host.as_str())
            .and_then(|a| id.and_then(|id| a.jobs.get(id)));
        let executions = record.map_or(0, |r| r.executions);
        figures.redeliveries += record.map_or(0, |r| u64::from(r.redeliveries));
        match executions {
            0 => {}
            1 => figures.executed_once += 1,
            _ => figures.duplicated += 1,
        }
        let answered = record.and_then(|r| r.outcome.as_ref());
        let as_answered = answered.is_some_and(|o| {
            row.state == HostState::Exited && o.state == row.state && o.exit_code == row.exit_code
        });
        if !row.state.is_final() || executions == 0 || !as_answered {
            figures.lost += 1;
        }
    }
    // When the gateway recorded the first and the last outcome.
    let settled = followed
        .hosts
        .iter()
        .filter(|row| row.state.is_final())
        .map(|row| row.updated_ms.saturating_sub(followed.sent_unix_ms) as f64);
    figures.first_result_ms = settled.clone().reduce(f64::min);
    figures.all_results_ms = settled.reduce(f64::max);
    // A host the rows do not list at all is lost too.
    figures.lost += hosts.saturating_sub(followed.hosts.len() as u64);
    figures
}

/// `round(n × ratio)` of `n` indices, chosen at random.
fn pick(n: usize, ratio: f64) -> Vec<bool> {
    let k = ((n as f64 * ratio).round() as usize).min(n);
    let mut order: Vec<(u32, usize)> = (0..n)
        .map(|i| (getrandom::u32().unwrap_or(i as u32), i))
        .collect();
    order.sort_unstable();
    let mut chosen = vec![false; n];
    for &(_, i) in &order[..k] {
        chosen[i] = true;
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_picks_that_many() {
        for (n, ratio, k) in [(10, 0.3, 3), (7, 0.0, 0), (7, 1.0, 7), (1000, 0.25, 250)] {
            assert_eq!(
                pick(n, ratio).iter().filter(|c| **c).count(),
                k,
                "{n} × {ratio}"
            );
        }
    }
}
