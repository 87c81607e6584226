//! The message scenarios, `fanout` and `direct`: clients set up as senders
//! and receivers, then the message phase, timed and counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::client::{Expect, Plan, Receive, Send, Sent};
use super::run::{finish, join, tally, Clocks, Ctx};
use super::{GO, STOP};
use crate::bench::report::Report;
use crate::bench::stats::Tracker;
use crate::bench::{BenchError, DirectArgs, FanoutArgs, MessageArgs};
use crate::protocol::{History, Target};

/// Runs the message phase: go, wait for every sender and every delivery,
/// drain, stop. Returns the senders' accounts and both sides' CPU.
async fn message_phase(
    ctx: &mut Ctx,
    senders: usize,
    trackers: Vec<Arc<Tracker>>,
    mut done: mpsc::UnboundedReceiver<Sent>,
    drain: Duration,
) -> (Vec<Sent>, Clocks, Clocks) {
    let expected: u64 = trackers.iter().map(|t| t.expected_deliveries()).sum();
    ctx.progress.phase("delivering", expected);
    let ticker = {
        let progress = ctx.progress.clone();
        let trackers = trackers.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                progress.set(trackers.iter().map(|t| t.completed_deliveries()).sum());
            }
        })
    };
    let clocks = Clocks::read(ctx);
    ctx.set_phase(GO);
    let mut sent = Vec::with_capacity(senders);
    while sent.len() < senders {
        match done.recv().await {
            Some(s) => sent.push(s),
            None => break,
        }
    }
    for s in &sent {
        if let Some(t) = &s.tracker {
            if !t.wait_complete(s.sent, ctx.shared.patience).await {
                ctx.notes.push(format!(
                    "gave up waiting for deliveries after {:?} without progress",
                    ctx.shared.patience
                ));
                break;
            }
        }
    }
    let end = Clocks::read(ctx);
    ticker.abort();
    ctx.progress.finish();
    tokio::time::sleep(drain).await;
    ctx.set_phase(STOP);
    (sent, clocks, end)
}

fn message_report(report: &mut Report, args: &MessageArgs, senders: usize, receivers: u64) {
    report.window = Some(args.window.max(1));
    report.window_mode = Some(args.window_mode);
    report.rate = (args.rate > 0.0).then_some(args.rate);
    report.senders = Some(senders as u64);
    report.receivers_per_message = Some(receivers);
    report.messages_per_sender = Some(args.messages);
}

/// `fanout`: K owners (one by default), each with a service; N subscribers
/// spread over the services (subscriber i on service i mod K); every owner
/// sends M messages to its service at the same time.
pub async fn fanout(args: &FanoutArgs, scenario: &str) -> Result<Report, BenchError> {
    // Named apart, so that runs with and without history never share a line.
    let scenario = match args.history {
        0 => scenario.to_owned(),
        size => format!(
            "{scenario} (history {size} messages, {} s)",
            args.history_ttl
        ),
    };
    let scenario = scenario.as_str();
    let (n, k) = (args.subscribers, args.services.max(1));
    let mut ctx = Ctx::new(&args.common, n + k).await?;
    let mut report = ctx.report(scenario);
    report.clients = (n + k) as u64;
    let services: Vec<String> = (0..k).map(|s| ctx.name("svc", s)).collect();
    let owners: Vec<String> = (0..k).map(|s| ctx.name("owner", s)).collect();
    let trackers: Vec<Arc<Tracker>> = (0..k)
        .map(|_| Tracker::new(args.messages.messages, 0))
        .collect();
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let (done_tx, done) = mpsc::unbounded_channel();
    let setup_clock = Instant::now();
    ctx.progress.phase("connecting", (n + k) as u64);
    let mut handles = Vec::with_capacity(n + k);
    for s in 0..k {
        handles.push(ctx.spawn(
            Plan {
                index: s,
                endpoint: ctx.shared.spread.endpoint_for(s),
                name: owners[s].clone(),
                presence: true,
                create: vec![services[s].clone()],
                history: (args.history > 0).then_some(History {
                    size: args.history,
                    ttl: args.history_ttl,
                }),
                subscribe: None,
                receive: None,
                send: Some(Send {
                    tracker: trackers[s].clone(),
                    target: Target::Service {
                        service: services[s].clone(),
                    },
                    args: args.messages.clone(),
                    offset: s as f64 / k as f64,
                    done: done_tx.clone(),
                }),
            },
            &ready_tx,
        ));
    }
    drop(done_tx);
    if ctx.await_ready(&mut ready, k).await.len() < k {
        ctx.set_phase(STOP);
        let outcomes = join(handles).await;
        let why = outcomes
            .into_iter()
            .find_map(|o| o.setup_error)
            .unwrap_or_default();
        return Err(BenchError::Connect(format!(
            "an owner could not set up: {why}"
        )));
    }
    for i in 0..n {
        let s = i % k;
        handles.push(ctx.spawn(
            Plan {
                index: k + i,
                // The owner and the first subscriber sit on different
                // gateways when there are several.
                endpoint: ctx.shared.spread.endpoint_for(s + i / k + 1),
                name: ctx.name("sub", i),
                presence: true,
                create: Vec::new(),
                history: None,
                subscribe: Some(services[s].clone()),
                receive: Some(Receive {
                    tracker: trackers[s].clone(),
                    messages: args.messages.messages,
                    expect: Expect {
                        target: Target::Service {
                            service: services[s].clone(),
                        },
                        origin: owners[s].clone(),
                        service: Some(services[s].clone()),
                    },
                }),
                send: None,
            },
            &ready_tx,
        ));
    }
    let mut subscribed = vec![0u32; k];
    for index in ctx.await_ready(&mut ready, n).await {
        subscribed[(index - k) % k] += 1;
    }
    ctx.progress.finish();
    for (tracker, count) in trackers.iter().zip(&subscribed) {
        tracker.set_receivers(*count);
    }
    ctx.settle().await;
    report.setup_seconds = setup_clock.elapsed().as_secs_f64();
    let total: u64 = subscribed.iter().map(|c| u64::from(*c)).sum();
    message_report(&mut report, &args.messages, k, total / k as u64);
    let drain = Duration::from_millis(args.messages.drain_ms);
    let (sent, begun, ended) = message_phase(&mut ctx, k, trackers, done, drain).await;
    let outcomes = join(handles).await;
    let delivered = tally(&mut report, outcomes, &sent)?;
    report.cpu = Some(begun.until(&ended, delivered));
    finish(ctx, report)
}

/// `direct`: P pairs, each member sending M messages to the other by NAME.
pub async fn direct(args: &DirectArgs, scenario: &str) -> Result<Report, BenchError> {
    let clients = args.pairs * 2;
    let mut ctx = Ctx::new(&args.common, clients).await?;
    let mut report = ctx.report(scenario);
    report.clients = clients as u64;
    let names: Vec<String> = (0..clients)
        .map(|j| ctx.name(if j % 2 == 0 { "a" } else { "b" }, j / 2))
        .collect();
    let trackers: Vec<Arc<Tracker>> = (0..clients)
        .map(|_| Tracker::new(args.messages.messages, 0))
        .collect();
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let (done_tx, done) = mpsc::unbounded_channel();
    let setup_clock = Instant::now();
    ctx.progress.phase("connecting", clients as u64);
    let mut handles = Vec::with_capacity(clients);
    for j in 0..clients {
        let (pair, peer) = (j / 2, j ^ 1);
        // The two members of a pair sit on different gateways when there
        // are several.
        let endpoint = ctx.shared.spread.endpoint_for(pair + j % 2);
        handles.push(ctx.spawn(
            Plan {
                index: j,
                endpoint,
                name: names[j].clone(),
                presence: true,
                create: Vec::new(),
                history: None,
                subscribe: None,
                receive: Some(Receive {
                    tracker: trackers[peer].clone(),
                    messages: args.messages.messages,
                    expect: Expect {
                        target: Target::Name {
                            name: names[j].clone(),
                        },
                        origin: names[peer].clone(),
                        service: None,
                    },
                }),
                send: Some(Send {
                    tracker: trackers[j].clone(),
                    target: Target::Name {
                        name: names[peer].clone(),
                    },
                    args: args.messages.clone(),
                    offset: j as f64 / clients as f64,
                    done: done_tx.clone(),
                }),
            },
            &ready_tx,
        ));
    }
    drop(done_tx);
    let mut up = vec![false; clients];
    for j in ctx.await_ready(&mut ready, clients).await {
        up[j] = true;
    }
    ctx.progress.finish();
    for j in 0..clients {
        // A sender whose peer is not up has no one to send to.
        trackers[j].set_receivers(u32::from(up[j ^ 1]));
    }
    let senders = up.iter().filter(|u| **u).count();
    ctx.settle().await;
    report.setup_seconds = setup_clock.elapsed().as_secs_f64();
    message_report(&mut report, &args.messages, senders, 1);
    let drain = Duration::from_millis(args.messages.drain_ms);
    let (sent, begun, ended) = message_phase(&mut ctx, senders, trackers, done, drain).await;
    let outcomes = join(handles).await;
    let delivered = tally(&mut report, outcomes, &sent)?;
    report.cpu = Some(begun.until(&ended, delivered));
    finish(ctx, report)
}
