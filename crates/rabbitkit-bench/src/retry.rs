//! The `retry` scenario (issue 26), rabbitkit only: a retried task costs
//! what, with rabbitkit's delay levels (`RetryPolicy::new`) and with the
//! quorum queue's own delayed retry of RabbitMQ 4.3 (`RetryPolicy::in_queue`).
//!
//! `n` tasks are submitted to a work queue (not measured); then a worker
//! (concurrency 32) runs them: each fails on its first run and succeeds on
//! its second, 200 ms later. Measured from the worker's start until every
//! task is done: wall time, this process's CPU and the broker's, per
//! retried task, and the messages the client published for the retries
//! (its confirmed publishes). With the levels, each retry is a copy
//! published to a delay queue, which dead-letters it back into the work
//! queue: two quorum-queue writes per retry. In the queue, a retry is a
//! `basic.reject` with requeue: no message written.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rabbitkit::{RetryPolicy, Shutdown, WorkQueue};
use rabbitkit_test::unique_name;

use crate::Ctx;
use crate::measure::{Meter, Result, Sample};

/// The delay before the retry.
pub const DELAY: Duration = Duration::from_millis(200);

/// One way to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// rabbitkit's delay levels: a copy through `rabbitkit.delay.NN`.
    Levels,
    /// The quorum queue's delayed retry (RabbitMQ 4.3).
    InQueue,
}

impl Mode {
    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Levels => "RetryPolicy::new (delay levels: a copy per retry)",
            Mode::InQueue => "RetryPolicy::in_queue (the queue delays it, 4.3)",
        }
    }
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct Run {
    /// How it retried.
    pub mode: Mode,
    /// The measurement (msgs: tasks retried once each).
    pub sample: Sample,
    /// Publishes the client made for the retries.
    pub published: u64,
}

/// What the scenario measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Tasks per run.
    pub n: u64,
    /// The runs, in the order they ran.
    pub runs: Vec<Run>,
    /// Why the in-queue mode did not run, if it did not.
    pub in_queue_skipped: Option<String>,
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx, n: u64, rounds: usize) -> Result<Report> {
    let probe = crate::rk::connect(ctx, 64).await?;
    let in_queue_skipped = match probe.server() {
        Some(server) if server.has_delayed_retry() => None,
        Some(server) => Some(format!(
            "{server} has no delayed retry in quorum queues (4.3+)"
        )),
        None => Some("the broker's version is unknown".into()),
    };
    probe.close().await;
    let mut runs = Vec::new();
    for round in 0..rounds.max(1) {
        let mut modes = vec![Mode::Levels];
        if in_queue_skipped.is_none() {
            modes.push(Mode::InQueue);
        }
        if round % 2 == 1 {
            modes.reverse();
        }
        for mode in modes {
            let r = one(ctx, n, mode).await?;
            eprintln!(
                "  round {}: {}: {:.0} retried tasks/s, {:.1} µs client CPU, {:.1} µs broker CPU per retried task, {} published",
                round + 1,
                mode.label(),
                r.sample.rate(),
                r.sample.cpu_us(),
                r.sample.broker_cpu.as_secs_f64() * 1e6 / r.sample.msgs.max(1) as f64,
                r.published
            );
            runs.push(r);
        }
    }
    Ok(Report {
        n,
        runs,
        in_queue_skipped,
    })
}

async fn one(ctx: &Ctx, n: u64, mode: Mode) -> Result<Run> {
    let client = crate::rk::connect(ctx, 64).await?;
    let name = unique_name(match mode {
        Mode::Levels => "bench.retry.levels",
        Mode::InQueue => "bench.retry.in_queue",
    });
    let policy = match mode {
        Mode::Levels => RetryPolicy::new([DELAY]),
        Mode::InQueue => RetryPolicy::in_queue(DELAY, DELAY, 1),
    };
    let tasks = WorkQueue::<u64>::builder(name.as_str())
        .prefetch(64)
        .concurrency(32)
        .retry(policy)
        .declare(&client)
        .await?;
    if mode == Mode::Levels {
        // The delay topology is declared by the first delayed publish:
        // not part of the measurement.
        client
            .publisher()
            .publish(
                // An hour: dropped with the queue before it is due.
                rabbitkit::OutgoingMessage::new("", name.as_str(), b"warm-up".to_vec())
                    .delay(Duration::from_secs(3600)),
            )
            .await?;
    }
    for i in 0..n {
        tasks.submit(&i).await?;
    }
    let seen: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let all = Arc::new(tokio::sync::Notify::new());
    let shutdown = Shutdown::new();
    let published_before = client.stats().confirmed;
    let meter = Meter::start(&ctx.pids);
    let worker = tokio::spawn({
        let (tasks, seen, done, all, shutdown) = (
            tasks.clone(),
            seen.clone(),
            done.clone(),
            all.clone(),
            shutdown.clone(),
        );
        async move {
            tasks
                .work_until(&shutdown, move |i: u64| {
                    let (seen, done, all) = (seen.clone(), done.clone(), all.clone());
                    async move {
                        if seen.lock().unwrap().insert(i) {
                            return Err("the first run fails".into());
                        }
                        if done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == n {
                            all.notify_one();
                        }
                        Ok(())
                    }
                })
                .await
        }
    });
    tokio::time::timeout(Duration::from_secs(600), all.notified())
        .await
        .map_err(|_| format!("retry ({}): not every task done within 600 s", mode.label()))?;
    let sample = meter.finish(n);
    let published = client.stats().confirmed - published_before;
    shutdown.stop(Duration::from_secs(5));
    let _ = worker.await;
    client.delete_queue(&name).await?;
    let _ = client.delete_queue(&format!("{name}.parked")).await;
    client.close().await;
    Ok(Run {
        mode,
        sample,
        published,
    })
}

/// The section of BENCHMARKS.md.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Retries: delay levels and the queue's own delayed retry\n\n\
         {} tasks per run, each failing once and retried after {} ms, then done (concurrency 32, prefetch 64). \
         Per retried task: wall rate, client and broker CPU, and the messages the client published for the retries.\n",
        r.n,
        DELAY.as_millis()
    );
    let _ = writeln!(
        out,
        "| how | run | retried tasks/s | client CPU / task | broker CPU / task | messages published |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for (i, run) in r.runs.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.1} µs | {:.1} µs | {} |",
            run.mode.label(),
            i + 1,
            run.sample.rate(),
            run.sample.cpu_us(),
            run.sample.broker_cpu.as_secs_f64() * 1e6 / run.sample.msgs.max(1) as f64,
            run.published
        );
    }
    if let Some(why) = &r.in_queue_skipped {
        let _ = writeln!(out, "\nThe in-queue rows did not run: {why}.");
    }
    out
}
