//! The `delay` scenario (issue 12), rabbitkit only: nobody else has a
//! plugin-free delay to compare with.
//!
//! - **Throughput**: confirmed publishing of `n` messages to a quorum queue,
//!   plainly and with `PublishOptions::delay(1 h)` (the messages wait in
//!   rabbitkit's quorum delay queues, entering at level 15), same window,
//!   alternating which goes first. The delayed copies are deleted with the
//!   target queue's binding when the queue goes, so they are dropped by the
//!   sink when their hour is up.
//! - **Lateness**: `k` messages with delays spread evenly over 1–60 s (plus
//!   a few odd milliseconds), sent at once; each arrival is compared with
//!   its send time plus its delay: min (must not be negative: never early),
//!   p50, p99 and max of arrival − requested.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rabbitkit::{OutgoingMessage, Queue};
use rabbitkit_test::unique_name;

use crate::Ctx;
use crate::measure::{Meter, Result, Sample};

/// What the scenario measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Messages per throughput run.
    pub n: u64,
    /// Plain confirmed publishes, per round.
    pub plain: Vec<Sample>,
    /// Delayed confirmed publishes, per round.
    pub delayed: Vec<Sample>,
    /// Arrival − requested, sorted, one per lateness message.
    pub late: Vec<Duration>,
    /// Messages that arrived before their time (must be 0).
    pub early: Vec<Duration>,
    /// The longest delay of the lateness run.
    pub longest: Duration,
}

/// Runs the whole scenario.
pub async fn run(
    ctx: &Ctx,
    n: u64,
    window: usize,
    rounds: usize,
    k: usize,
    longest: Duration,
) -> Result<Report> {
    // Lateness first, while the delay queues hold nothing else.
    let (late, early) = lateness(ctx, k, longest).await?;
    let mut plain = Vec::new();
    let mut delayed = Vec::new();
    for round in 0..rounds {
        for delayed_run in if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            let s = publish(ctx, n, window, delayed_run).await?;
            eprintln!(
                "  round {}: {} {:.0} msgs/s, {:.1} µs client CPU/msg",
                round + 1,
                if delayed_run { "delayed" } else { "plain  " },
                s.rate(),
                s.cpu_us()
            );
            if delayed_run {
                delayed.push(s);
            } else {
                plain.push(s);
            }
        }
    }
    // The delayed copies would wait an hour for a queue that is gone:
    // drop them now (they all entered at level 15).
    let purged = tokio::task::spawn_blocking(|| {
        rabbitkit_test::Cluster::local().rabbitmqctl(1, &["purge_queue", "rabbitkit.delay.15"])
    })
    .await;
    if !matches!(purged, Ok(Ok(_))) {
        eprintln!("  warning: rabbitkit.delay.15 not purged: {purged:?}");
    }
    Ok(Report {
        n,
        plain,
        delayed,
        late,
        early,
        longest,
    })
}

async fn publish(ctx: &Ctx, n: u64, window: usize, delayed: bool) -> Result<Sample> {
    let client = crate::rk::connect(ctx, window).await?;
    let name = unique_name(if delayed {
        "bench.delay.delayed"
    } else {
        "bench.delay.plain"
    });
    let queue = Queue::quorum(&name).declare(&client).await?;
    let publisher = client.publisher();
    let one = |i: u64| {
        let m = OutgoingMessage::new("", name.as_str(), ctx.body.clone());
        if delayed {
            // An hour: out of the way of every other scenario.
            m.delay(Duration::from_secs(3600) + Duration::from_millis(i % 7))
        } else {
            m
        }
    };
    if delayed {
        // The delay topology is declared by the first delayed publish:
        // not part of the measurement.
        publisher.publish(one(0)).await?;
    }
    let meter = Meter::start(&ctx.pids);
    let mut pending = FuturesUnordered::new();
    for i in 0..n {
        pending.push(publisher.publish(one(i)));
        if pending.len() >= window
            && let Some(done) = pending.next().await
        {
            done?;
        }
    }
    while let Some(done) = pending.next().await {
        done?;
    }
    let sample = meter.finish(n);
    queue.delete().await?;
    client.close().await;
    Ok(sample)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Sends `k` messages with delays from 1 s to `longest`, each carrying the
/// time (ms since the epoch) it is due, and measures when they arrive.
async fn lateness(
    ctx: &Ctx,
    k: usize,
    longest: Duration,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let client = crate::rk::connect(ctx, 1000).await?;
    let name = unique_name("bench.delay.lateness");
    let queue = Queue::quorum(&name).declare(&client).await?;
    let mut consumer = client
        .consume(&name, rabbitkit::ConsumeOptions::new())
        .await?;
    let publisher = client.publisher();
    let mut sends = FuturesUnordered::new();
    let spread = longest.as_millis() as u64 - 1000;
    for i in 0..k {
        // 1 s to `longest`, plus 0–96 ms so rounding up to 100 ms shows.
        let delay = Duration::from_millis(1000 + (spread * i as u64) / (k.max(2) as u64 - 1))
            + Duration::from_millis((i as u64 * 37) % 97);
        let due = now_ms() + delay.as_millis() as u64;
        sends.push(publisher.publish(
            OutgoingMessage::new("", name.as_str(), due.to_string().into_bytes()).delay(delay),
        ));
    }
    while let Some(sent) = sends.next().await {
        sent?;
    }
    eprintln!("  {k} delayed messages sent; waiting up to {longest:?} for them");
    let deadline = Instant::now() + longest + Duration::from_secs(60);
    let mut late = Vec::new();
    let mut early = Vec::new();
    while late.len() + early.len() < k {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(delivery)) = tokio::time::timeout(left, consumer.next()).await else {
            return Err(format!(
                "only {} of {k} delayed messages arrived in time",
                late.len() + early.len()
            )
            .into());
        };
        let delivery = delivery?;
        let arrived = now_ms();
        let due: u64 = String::from_utf8_lossy(delivery.body()).parse()?;
        if arrived >= due {
            late.push(Duration::from_millis(arrived - due));
        } else {
            early.push(Duration::from_millis(due - arrived));
        }
        delivery.ack().await?;
    }
    late.sort();
    drop(consumer);
    queue.delete().await?;
    client.close().await;
    Ok((late, early))
}

/// The report's section, in Markdown.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let med = |v: &[Sample], f: fn(&Sample) -> f64| {
        let mut xs: Vec<f64> = v.iter().map(f).collect();
        xs.sort_by(|a, b| a.total_cmp(b));
        xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (pr, dr) = (med(&r.plain, Sample::rate), med(&r.delayed, Sample::rate));
    let (pc, dc) = (
        med(&r.plain, Sample::cpu_us),
        med(&r.delayed, Sample::cpu_us),
    );
    let pct = |p: f64| -> String {
        if r.late.is_empty() {
            return "–".into();
        }
        let i = ((r.late.len() - 1) as f64 * p).round() as usize;
        format!("{} ms", r.late[i].as_millis())
    };
    let mut out = String::new();
    let _ = writeln!(out, "\n## Delayed publish (rabbitkit only)\n");
    let _ = writeln!(
        out,
        "Confirmed publishing of {} messages to a quorum queue, plain vs `delay(1 h)` (through rabbitkit's quorum delay \
         queues, no plugin), medians of {} rounds:\n",
        r.n,
        r.plain.len()
    );
    let _ = writeln!(out, "| publish | msgs/s | client CPU / msg |");
    let _ = writeln!(out, "|---|---:|---:|");
    let _ = writeln!(out, "| plain, confirmed | {pr:.0} | {pc:.1} µs |");
    let _ = writeln!(out, "| delayed, confirmed | {dr:.0} | {dc:.1} µs |");
    let _ = writeln!(out, "| delayed ÷ plain | {:.2} | {:.2} |", dr / pr, dc / pc);
    let _ = writeln!(
        out,
        "\nDelivery time of {} messages with delays spread over 1–{} s, arrival − requested: min {}, p50 {}, p99 {}, \
         max {}; arrived early: **{}**. (A delay is rounded up to 100 ms, so up to 99 ms of each figure is that rounding.)",
        r.late.len() + r.early.len(),
        r.longest.as_secs(),
        pct(0.0),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        r.early.len()
    );
    out
}
