//! The `partitions` and `streams` scenarios (issue 15), rabbitkit only:
//! what spreading one logical queue over the cluster buys.
//!
//! - **partitions**: confirmed publishing of `n` messages, then consuming
//!   them, through one quorum queue (reached through the default exchange,
//!   and through a direct exchange, to tell an exchange's routing cost) and
//!   through `PartitionedQueue`s of 1, 3 and 6 partitions. Three clients publish, one per node (each `n / 3`,
//!   the window in flight each); for one queue three clients consume it
//!   (competing consumers), for partitions each partition is consumed by
//!   one consumer (single active consumer), partition `i` on the client of
//!   node `i % 3`.
//! - **streams**: the same publishing into a stream, then reading it back
//!   by one reader and by three (each reads all `n`: the aggregate is
//!   `3 n`), against a quorum queue published the same way and consumed by
//!   one consumer.
//!
//! Typed API throughout (`Queue::send`, `PartitionedQueue::publish`,
//! `Subscription` + `ack`), `String` bodies of the bench's body size,
//! prefetch [`PREFETCH`]. Rates are messages per second of wall time;
//! broker CPU per message is the three nodes' CPU time over the phase
//! divided by the messages (delivered ones, for reads).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rabbitkit::{
    Client, ConsumeOptions, Direct, Exchange, PartitionedQueue, Queue, StreamOffset, Subscription,
    partition_name,
};
use rabbitkit_test::unique_name;

use crate::Ctx;
use crate::measure::{Meter, Result, Sample, median};

/// The consumers' prefetch.
pub const PREFETCH: u16 = 200;

/// One row: how messages were published and read, and what it measured.
#[derive(Debug, Clone)]
pub struct Row {
    /// What it is.
    pub label: String,
    /// Publish phase, per round.
    pub publish: Vec<Sample>,
    /// Read phase, per round.
    pub read: Vec<Sample>,
}

/// What a scenario measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// `partitions` or `streams`.
    pub scenario: &'static str,
    /// Messages published per run.
    pub n: u64,
    /// Publishes in flight per client.
    pub window: usize,
    /// The rows; the first is the single quorum queue everything is compared with.
    pub rows: Vec<Row>,
}

/// Where messages go.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// One quorum queue, `consumers` competing consumers; published to
    /// through the default exchange, or (`direct`) through a direct
    /// exchange bound to it.
    Queue { consumers: usize, direct: bool },
    /// A partitioned queue of this many partitions.
    Partitioned(usize),
    /// A stream, read by this many readers (each reads everything).
    Stream { readers: usize },
}

impl Layout {
    fn label(self) -> String {
        match self {
            Layout::Queue {
                consumers: 1,
                direct: false,
            } => "one quorum queue, 1 consumer".into(),
            Layout::Queue {
                consumers,
                direct: false,
            } => format!("one quorum queue, {consumers} consumers"),
            Layout::Queue {
                consumers,
                direct: true,
            } => format!("one quorum queue behind a direct exchange, {consumers} consumers"),
            Layout::Partitioned(1) => "PartitionedQueue, 1 partition".into(),
            Layout::Partitioned(p) => format!("PartitionedQueue, {p} partitions"),
            Layout::Stream { readers: 1 } => "stream, 1 reader".into(),
            Layout::Stream { readers } => format!("stream, {readers} readers (aggregate)"),
        }
    }
}

/// One client per node, client `i` connected to node `i + 1` first.
async fn clients(ctx: &Ctx, window: usize) -> Result<Vec<Client>> {
    let mut clients = Vec::new();
    for i in 0..ctx.addrs.len().max(1) {
        let mut addrs = ctx.addrs.clone();
        addrs.rotate_left(i);
        clients.push(crate::rk::options(window).connect(addrs.join(",")).await?);
    }
    Ok(clients)
}

/// The declared target, on every client.
enum Target {
    /// The queue on each client, and the direct exchange in front of it
    /// (if any) on each client.
    Queues(Vec<Queue>, Vec<Exchange<Direct>>),
    Partitioned(Vec<PartitionedQueue<String>>),
}

/// Publishes `n` messages split over the clients, `window` in flight each;
/// returns when every one is confirmed. One task per client.
async fn publish(target: &Target, n: u64, window: usize, body: &str) -> Result<()> {
    let count = match target {
        Target::Queues(q, _) => q.len(),
        Target::Partitioned(p) => p.len(),
    } as u64;
    let mut tasks = Vec::new();
    for i in 0..count {
        let m = n / count + u64::from(i < n % count);
        let body = body.to_owned();
        tasks.push(match target {
            Target::Queues(queues, exchanges) => {
                let q = queues[i as usize].clone();
                let x = exchanges.get(i as usize).cloned();
                tokio::spawn(async move {
                    let mut pending = FuturesUnordered::new();
                    for _ in 0..m {
                        pending.push(async {
                            match &x {
                                Some(x) => x.publish("k", &body).await,
                                None => q.send(&body).await,
                            }
                        });
                        if pending.len() >= window
                            && let Some(done) = pending.next().await
                        {
                            done.map_err(|e| e.to_string())?;
                        }
                    }
                    while let Some(done) = pending.next().await {
                        done.map_err(|e| e.to_string())?;
                    }
                    Ok::<_, String>(())
                })
            }
            Target::Partitioned(pqs) => {
                let pq = pqs[i as usize].clone();
                tokio::spawn(async move {
                    let keys: Vec<String> = (0..m).map(|k| format!("c{i}-k{k}")).collect();
                    let mut pending = FuturesUnordered::new();
                    for key in &keys {
                        pending.push(pq.publish(key, &body));
                        if pending.len() >= window
                            && let Some(done) = pending.next().await
                        {
                            done.map_err(|e| e.to_string())?;
                        }
                    }
                    while let Some(done) = pending.next().await {
                        done.map_err(|e| e.to_string())?;
                    }
                    Ok::<_, String>(())
                })
            }
        });
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Reads from every subscription concurrently (a task each),
/// acknowledging each message, until `total` were read in all; returns how
/// many.
async fn drain(subs: Vec<Subscription<String>>, total: u64) -> Result<u64> {
    let read = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut sub in subs {
        let read = read.clone();
        tasks.push(tokio::spawn(async move {
            let mut idle = Duration::ZERO;
            while read.load(Ordering::SeqCst) < total {
                match tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
                    Ok(Some(msg)) => {
                        let msg = msg.map_err(|e| e.to_string())?;
                        msg.ack().await.map_err(|e| e.to_string())?;
                        read.fetch_add(1, Ordering::SeqCst);
                        idle = Duration::ZERO;
                    }
                    Ok(None) => return Err("a subscription ended".to_owned()),
                    Err(_) => {
                        idle += Duration::from_millis(100);
                        if idle > Duration::from_secs(60) {
                            return Err(format!(
                                "nothing read for 60 s ({} of {total})",
                                read.load(Ordering::SeqCst)
                            ));
                        }
                    }
                }
            }
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(read.load(Ordering::SeqCst))
}

/// One run of one layout: declare, publish (measured), read (measured), delete.
async fn run_layout(ctx: &Ctx, layout: Layout, n: u64, window: usize) -> Result<(Sample, Sample)> {
    let clients = clients(ctx, window).await?;
    let body = String::from_utf8(ctx.body.clone())?;
    let name = unique_name("bench.beyond");
    let options = || ConsumeOptions::new().prefetch(PREFETCH);
    let target = match layout {
        Layout::Queue { .. } | Layout::Stream { .. } => {
            let mut queues = Vec::new();
            let mut exchanges = Vec::new();
            for c in &clients {
                let b = match layout {
                    Layout::Stream { .. } => Queue::stream(&name),
                    _ => Queue::quorum(&name),
                };
                let q = b.declare(c).await?;
                if let Layout::Queue { direct: true, .. } = layout {
                    let x = Exchange::direct(&name).declare(c).await?;
                    x.bind(&q, "k").await?;
                    exchanges.push(x);
                }
                queues.push(q);
            }
            Target::Queues(queues, exchanges)
        }
        Layout::Partitioned(p) => {
            let mut pqs = Vec::new();
            for c in &clients {
                pqs.push(
                    PartitionedQueue::<String>::builder(&name, p)
                        .prefetch(PREFETCH)
                        .declare(c)
                        .await?,
                );
            }
            Target::Partitioned(pqs)
        }
    };

    let meter = Meter::start(&ctx.pids);
    publish(&target, n, window, &body).await?;
    let published = meter.finish(n);

    let (subs, total) = match (&target, layout) {
        (Target::Queues(queues, _), Layout::Queue { consumers, .. }) => {
            let mut subs = Vec::new();
            for i in 0..consumers {
                subs.push(queues[i % queues.len()].subscribe_with(options()).await?);
            }
            (subs, n)
        }
        (Target::Queues(queues, _), Layout::Stream { readers }) => {
            let mut subs = Vec::new();
            for i in 0..readers {
                subs.push(
                    queues[i % queues.len()]
                        .subscribe_with(options().stream_offset(StreamOffset::First))
                        .await?,
                );
            }
            (subs, n * readers as u64)
        }
        (Target::Partitioned(pqs), Layout::Partitioned(p)) => {
            let mut subs = Vec::new();
            for i in 0..p {
                let queue = &pqs[i % pqs.len()].queues()[i];
                debug_assert_eq!(queue.name(), partition_name(&name, i));
                subs.push(queue.subscribe_with(options()).await?);
            }
            (subs, n)
        }
        _ => unreachable!("targets follow their layout"),
    };
    let meter = Meter::start(&ctx.pids);
    let read = drain(subs, total).await?;
    let consumed = meter.finish(read);

    match target {
        Target::Queues(mut queues, exchanges) => {
            if let Some(q) = queues.pop() {
                if let Some(c) = exchanges.first().map(|x| x.client().clone()) {
                    c.delete_exchange(&name).await?;
                }
                q.delete().await?;
            }
        }
        Target::Partitioned(mut pqs) => {
            if let Some(pq) = pqs.pop() {
                pq.delete().await?;
            }
        }
    }
    for c in clients {
        c.close().await;
    }
    Ok((published, consumed))
}

/// Runs `scenario` (`partitions` or `streams`): every layout, `rounds`
/// times, the order reversed every other round.
pub async fn run(
    ctx: &Ctx,
    scenario: &'static str,
    n: u64,
    window: usize,
    rounds: usize,
) -> Result<Report> {
    let layouts: Vec<Layout> = match scenario {
        "partitions" => vec![
            Layout::Queue {
                consumers: 3,
                direct: false,
            },
            Layout::Queue {
                consumers: 3,
                direct: true,
            },
            Layout::Partitioned(1),
            Layout::Partitioned(3),
            Layout::Partitioned(6),
        ],
        _ => vec![
            Layout::Queue {
                consumers: 1,
                direct: false,
            },
            Layout::Stream { readers: 1 },
            Layout::Stream { readers: 3 },
        ],
    };
    let mut rows: Vec<Row> = layouts
        .iter()
        .map(|l| Row {
            label: l.label(),
            publish: Vec::new(),
            read: Vec::new(),
        })
        .collect();
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..layouts.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (p, r) = run_layout(ctx, layouts[i], n, window).await?;
            eprintln!(
                "  {scenario} [{}] round {}: publish {:.0}/s (broker {:.1} µs/msg), read {:.0}/s (broker {:.1} µs/msg)",
                rows[i].label,
                round + 1,
                p.rate(),
                p.broker_us(),
                r.rate(),
                r.broker_us()
            );
            rows[i].publish.push(p);
            rows[i].read.push(r);
        }
    }
    Ok(Report {
        scenario,
        n,
        window,
        rows,
    })
}

/// The median publish and read msgs/s of the one-reader stream row.
pub fn stream_row(r: &Report) -> Option<(f64, f64)> {
    let row = r.rows.iter().find(|row| row.label == "stream, 1 reader")?;
    let med = |v: &[Sample]| median(v.iter().map(Sample::rate).collect());
    Some((med(&row.publish), med(&row.read)))
}

/// The report's section, in Markdown.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let med = |v: &[Sample], f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
    let mut out = String::new();
    let rounds = r.rows.first().map_or(0, |row| row.publish.len());
    let (title, read_what) = match r.scenario {
        "partitions" => (
            "Partitioned queues vs one quorum queue (rabbitkit only)",
            "consume (ack each)",
        ),
        _ => (
            "Streams vs a quorum queue (rabbitkit only)",
            "read (ack each)",
        ),
    };
    let _ = writeln!(out, "\n## {title}\n");
    let _ = writeln!(
        out,
        "{} messages published with confirms by 3 clients (one per node, {} in flight each), then read, prefetch {PREFETCH}; \
         medians of {rounds} rounds. Broker CPU: the three nodes' CPU time over the phase per message.\n",
        r.n, r.window
    );
    let _ = writeln!(
        out,
        "| layout | publish msgs/s | broker CPU / msg | {read_what} msgs/s | broker CPU / msg | publish ÷ first row | read ÷ first row |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    let base = r.rows.first().map(|row| {
        (
            med(&row.publish, Sample::rate),
            med(&row.read, Sample::rate),
        )
    });
    for row in &r.rows {
        let (p, rd) = (
            med(&row.publish, Sample::rate),
            med(&row.read, Sample::rate),
        );
        let (bp, br) = base.unwrap_or((p, rd));
        let _ = writeln!(
            out,
            "| {} | {p:.0} | {:.0} µs | {rd:.0} | {:.0} µs | {:.2} | {:.2} |",
            row.label,
            med(&row.publish, Sample::broker_us),
            med(&row.read, Sample::broker_us),
            p / bp,
            rd / br
        );
    }
    out
}
