//! Soak run: confirmed publishing and consuming on a quorum queue for
//! minutes, while the client fails over again and again. Reports messages
//! sent, confirmed, received, lost (confirmed but never received: must be
//! 0), duplicates, and the process's memory over time: the live heap bytes
//! (what is allocated and not freed, counted by the soak's global
//! allocator) before each failover and every 10 s, and the resident set
//! size. Beside it, a fanout subscription (a temporary queue) and an RPC
//! server and client keep working, and the broker's count of queues and
//! consumers is taken before the first failover and at the end: recovery
//! must not leave ghost queues or orphan consumers behind (exit status 1 if
//! it does, or if a confirmed message was lost).
//!
//! Two ways to fail over:
//! - by default the node the client is connected to is SIGKILLed every
//!   `--kill-every` seconds (and started again 5 s later);
//! - with `--cut-every SECS` no node is touched: the client connects
//!   through one in-process TCP proxy per node ([`FaultProxy`]), and the
//!   connected node's proxy cuts its connections every `SECS` seconds. The
//!   client sees a dead connection and recovers on the next node exactly as
//!   after a kill (re-declare, re-subscribe, re-publish), while the cluster
//!   stays whole, so this mode can run beside other users of the cluster.
//!
//! ```text
//! cargo xtask soak                      # 10 minutes, a kill every 30 s
//! cargo xtask soak -- --minutes 2 --kill-every 20 --rate 2000
//! cargo xtask soak -- --minutes 12 --cut-every 25 --rate 1000
//! cargo run --release -p rabbitkit-soak --features dhat-heap -- --cut-every 25
//! cargo xtask soak -- --help
//! ```
//! The soak's own bookkeeping is O(messages in flight), not O(messages
//! sent), and is reported apart, so the live heap figure is the library's
//! (plus the proxies' buffers in `--cut-every` mode: 128 KiB per open
//! connection). With the `dhat-heap` feature, dhat is the global allocator
//! and the allocation sites still live at the end of the run are printed
//! (and written as dhat JSON to `--heap-profile`).
//!
//! Needs the local 3-node cluster; refuses to run against `AMQP_ADDR`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rabbitkit::{
    ConsumeOptions, Event, Exchange, Options, OutgoingMessage, Queue, RpcClient, RpcServer,
};
use rabbitkit_test::{Cluster, FaultProxy};

mod heap;

/// Confirmed publishing and consuming on a quorum queue (plus a fanout
/// subscription and RPC calls) while the connected node is SIGKILLed (or,
/// with `--cut-every`, its connection cut by a proxy) periodically; reports
/// loss, duplicates, memory and broker-side leftovers.
#[derive(Parser, Debug)]
#[command(name = "rabbitkit-soak", about, long_about = None)]
struct Args {
    /// How long to run, in minutes.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Seconds between two SIGKILLs of the node the client is connected to.
    #[arg(long, default_value_t = 30)]
    kill_every: u64,
    /// Instead of killing nodes: connect through one TCP proxy per node and
    /// cut the connected node's proxy every SECS seconds (no node is touched).
    #[arg(long, value_name = "SECS")]
    cut_every: Option<u64>,
    /// Where the `dhat-heap` feature writes its profile (dhat JSON).
    #[arg(long, default_value = "/tmp/rabbitkit-soak-dhat.json")]
    heap_profile: std::path::PathBuf,
    /// Publish rate, messages per second.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Publishes in flight at most (the client's publish window).
    #[arg(long, default_value_t = 256)]
    window: usize,
}

/// What the broker holds for this soak: its queues (the ones it named, and
/// those owned by its connection: temporary queues) and the consumers on
/// its connection's channels, counted on a running node. Other users of
/// the cluster are left out, so the figures mean the same on a shared one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BrokerSide {
    queues: usize,
    consumers: usize,
}

fn broker_side(cluster: &Cluster, connection: &str, named: &[String]) -> Option<BrokerSide> {
    let rows = |out: String| -> Vec<Vec<String>> {
        out.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    };
    let ctl = |n: usize, args: &[&str]| {
        let mut all = vec!["-q", "--no-table-headers"];
        all.extend_from_slice(args);
        cluster.rabbitmqctl(n, &all).ok().map(rows)
    };
    for n in Cluster::nodes() {
        let (Some(connections), Some(channels), Some(queues)) = (
            ctl(n, &["list_connections", "pid", "client_properties"]),
            ctl(n, &["list_channels", "connection", "consumer_count"]),
            ctl(n, &["list_queues", "name", "owner_pid"]),
        ) else {
            continue;
        };
        let ours: Vec<&String> = connections
            .iter()
            // The client properties hold the connection name (a unique one).
            .filter(|r| r.get(1).is_some_and(|props| props.contains(connection)))
            .map(|r| &r[0])
            .collect();
        let consumers = channels
            .iter()
            .filter(|r| ours.contains(&&r[0]))
            .filter_map(|r| r.get(1)?.parse::<usize>().ok())
            .sum();
        let queues = queues
            .iter()
            .filter(|r| named.contains(&r[0]) || r.get(1).is_some_and(|o| ours.contains(&o)))
            .count();
        return Some(BrokerSide { queues, consumers });
    }
    None
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// What the soak knows of each message, kept only while it matters: from
/// its publish until it is both settled (confirmed or failed) and, if
/// confirmed, received. So the bookkeeping is O(messages in flight), not
/// O(messages sent), and does not blur the library's memory figure.
#[derive(Debug, Default)]
struct Tracker {
    /// Every message below `base` is settled.
    base: usize,
    /// Messages `base..`, in sequence order.
    open: VecDeque<Slot>,
    confirmed: usize,
    failed: u64,
    received_unique: usize,
    duplicates: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    outcome: Outcome,
    received: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    #[default]
    Pending,
    Confirmed,
    Failed,
}

impl Tracker {
    fn slot(&mut self, n: usize) -> Option<&mut Slot> {
        let i = n.checked_sub(self.base)?;
        if i >= self.open.len() {
            self.open.resize(i + 1, Slot::default());
        }
        self.open.get_mut(i)
    }

    fn published(&mut self, outcome: Outcome, n: usize) {
        match outcome {
            Outcome::Confirmed => self.confirmed += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Pending => {}
        }
        if let Some(slot) = self.slot(n) {
            slot.outcome = outcome;
        }
        self.compact();
    }

    /// A delivery of message `n`. A copy of a message already settled is a
    /// duplicate (a late copy of a failed publish counts as one too).
    fn received(&mut self, n: usize) {
        match self.slot(n) {
            Some(slot) if !slot.received => {
                slot.received = true;
                self.received_unique += 1;
            }
            _ => self.duplicates += 1,
        }
        self.compact();
    }

    fn compact(&mut self) {
        while let Some(front) = self.open.front() {
            let settled = match front.outcome {
                Outcome::Pending => false,
                Outcome::Confirmed => front.received,
                Outcome::Failed => true,
            };
            if !settled {
                break;
            }
            self.open.pop_front();
            self.base += 1;
        }
    }

    /// Confirmed and not received (yet).
    fn missing(&self) -> usize {
        self.open
            .iter()
            .filter(|s| s.outcome == Outcome::Confirmed && !s.received)
            .count()
    }

    /// Heap bytes the bookkeeping holds.
    fn heap_bytes(&self) -> usize {
        self.open.capacity() * std::mem::size_of::<Slot>()
    }
}

/// Memory at one instant: live heap bytes (allocated, not freed) and RSS.
#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: u64,
    heap: Option<heap::Live>,
    /// Of which the soak's own bookkeeping.
    bookkeeping: u64,
    /// Messages received so far (distinct).
    received: usize,
    rss_kib: u64,
}

fn sample(started: Instant, tracker: &Mutex<Tracker>) -> Sample {
    let (bookkeeping, received) = {
        let t = tracker.lock().unwrap();
        (t.heap_bytes() as u64, t.received_unique)
    };
    Sample {
        secs: started.elapsed().as_secs(),
        heap: heap::live(),
        bookkeeping,
        received,
        rss_kib: rss_kib(),
    }
}

/// Live heap bytes less the soak's bookkeeping, in KiB.
fn library_kib(s: &Sample) -> Option<u64> {
    s.heap.map(|h| h.bytes.saturating_sub(s.bookkeeping) / 1024)
}

/// Least-squares slope of `ys` over their index.
fn slope(ys: &[f64]) -> f64 {
    let n = ys.len() as f64;
    if ys.len() < 2 {
        return 0.0;
    }
    let mx = (n - 1.0) / 2.0;
    let my = ys.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in ys.iter().enumerate() {
        let dx = x as f64 - mx;
        num += dx * (y - my);
        den += dx * dx;
    }
    num / den
}

/// How the soak makes the client fail over.
enum Failover {
    /// SIGKILL the connected node, start it again 5 s later.
    Kill { every: u64 },
    /// Cut the connected node's proxy.
    Cut {
        every: u64,
        proxies: Arc<Vec<FaultProxy>>,
    },
}

impl Failover {
    fn every(&self) -> u64 {
        match self {
            Self::Kill { every } | Self::Cut { every, .. } => *every,
        }
    }
}

#[tokio::main]
async fn main() {
    let a = Args::parse();
    let profiler = heap::start(&a.heap_profile);
    if rabbitkit_test::using_external_broker() {
        eprintln!(
            "soak needs the local cluster (it kills its nodes or cuts their connections); unset AMQP_ADDR"
        );
        std::process::exit(2);
    }
    let cluster = Cluster::local();
    cluster.up().expect("cluster up");
    let (failover, urls) = match a.cut_every {
        None => (
            Failover::Kill {
                every: a.kill_every,
            },
            cluster.amqp_urls(),
        ),
        Some(every) => {
            let mut proxies = Vec::new();
            for n in Cluster::nodes() {
                let upstream = SocketAddr::from(([127, 0, 0, 1], cluster.amqp_port(n)));
                proxies.push(FaultProxy::start(upstream).await.expect("start proxy"));
            }
            let urls = proxies.iter().map(FaultProxy::amqp_url).collect();
            let proxies = Arc::new(proxies);
            (Failover::Cut { every, proxies }, urls)
        }
    };
    let connection_name = rabbitkit_test::unique_name("rabbitkit-soak");
    let client = Options::new()
        .connection_name(connection_name.clone())
        .heartbeat(Duration::from_secs(5))
        .publish_window(a.window)
        .publish_timeout(Duration::from_secs(120))
        .connect(urls)
        .await
        .expect("connect");
    let queue = Queue::quorum(rabbitkit_test::unique_name("soak"))
        .declare(&client)
        .await
        .expect("declare");
    let name = queue.name().to_string();

    // Events, counted.
    let recoveries = Arc::new(AtomicU64::new(0));
    let mut events = client.events();
    let rec = recoveries.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            if matches!(ev, Event::Recovered { .. }) {
                rec.fetch_add(1, Ordering::Relaxed);
            }
            if matches!(
                ev,
                Event::Disconnected { .. } | Event::Recovered { .. } | Event::ConnectFailed { .. }
            ) {
                println!("  event: {ev}");
            }
        }
    });

    // Consumer: tells the tracker each sequence number received.
    let tracker: Arc<Mutex<Tracker>> = Arc::default();
    let mut consumer = client
        .consume(&name, ConsumeOptions::new().prefetch(200))
        .await
        .expect("consume");
    let got = tracker.clone();
    tokio::spawn(async move {
        while let Some(item) = consumer.next().await {
            let Ok(d) = item else { continue };
            if let Ok(n) = std::str::from_utf8(d.body())
                .unwrap_or("x")
                .parse::<usize>()
            {
                got.lock().unwrap().received(n);
            }
            let _ = d.ack().await;
        }
    });
    // A fanout subscription (a temporary queue that rabbitkit re-declares
    // after each failover) and an RPC server and client: the broker-side
    // objects a leak would multiply at every failover.
    let fanout = Exchange::fanout(rabbitkit_test::unique_name("soak.fanout"))
        .declare(&client)
        .await
        .expect("declare fanout");
    let mut broadcasts = fanout.subscribe::<u64>().await.expect("subscribe");
    let broadcasts_received = Arc::new(AtomicU64::new(0));
    tokio::spawn({
        let count = broadcasts_received.clone();
        async move {
            while let Some(item) = broadcasts.next().await {
                if let Ok(message) = item {
                    count.fetch_add(1, Ordering::Relaxed);
                    let _ = message.ack().await;
                }
            }
        }
    });
    let rpc_queue = rabbitkit_test::unique_name("soak.rpc");
    let server = RpcServer::<u64, u64>::builder(rpc_queue.clone())
        .declare(&client)
        .await
        .expect("declare RPC server");
    tokio::spawn(async move {
        let _ = server
            .serve(|n: u64| async move { Ok::<u64, String>(n + 1) })
            .await;
    });
    let rpc = RpcClient::<u64, u64, String>::builder(rpc_queue.clone())
        .build(&client)
        .await
        .expect("RPC client");
    let side_traffic = Arc::new((AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)));
    let side = tokio::spawn({
        let (fanout, traffic) = (fanout.clone(), side_traffic.clone());
        async move {
            let mut n = 0u64;
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                n += 1;
                if fanout.publish(&n).await.is_ok() {
                    traffic.0.fetch_add(1, Ordering::Relaxed);
                }
                match rpc.call(&n).await {
                    Ok(r) if r == n + 1 => traffic.1.fetch_add(1, Ordering::Relaxed),
                    _ => traffic.2.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let named = vec![name.clone(), rpc_queue.clone()];
    let broker_before = tokio::task::spawn_blocking({
        let (connection, named) = (connection_name.clone(), named.clone());
        move || broker_side(&Cluster::local(), &connection, &named)
    })
    .await
    .ok()
    .flatten();

    // Failovers: of the publisher's node, every `every` seconds. Memory is
    // sampled just before each one (the steady state since the last).
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let failovers = Arc::new(AtomicU64::new(0));
    let at_failover: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let every = failover.every();
    // The proxies live until the end (the drain and clean-up go through them).
    let proxies = match &failover {
        Failover::Cut { proxies, .. } => Some(proxies.clone()),
        Failover::Kill { .. } => None,
    };
    let failer = tokio::spawn({
        let (client, stop, failovers) = (client.clone(), stop.clone(), failovers.clone());
        let (at_failover, tracker) = (at_failover.clone(), tracker.clone());
        async move {
            loop {
                // Sleep in short steps, so the end of the run is not held up.
                let wake = Instant::now() + Duration::from_secs(every);
                while Instant::now() < wake && !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Some(ep) = client.current_endpoint() else {
                    continue;
                };
                let before = sample(started, &tracker);
                match &failover {
                    Failover::Kill { .. } => {
                        let Some(node) = Cluster::local().node_for_port(ep.port()) else {
                            continue;
                        };
                        at_failover.lock().unwrap().push(before);
                        println!("  kill rabbit{node}");
                        let _ = tokio::task::spawn_blocking(move || {
                            let c = Cluster::local();
                            c.kill(node)?;
                            std::thread::sleep(Duration::from_secs(5));
                            c.start(node)
                        })
                        .await;
                    }
                    Failover::Cut { proxies, .. } => {
                        let Some(proxy) = proxies.iter().find(|p| p.addr().port() == ep.port())
                        else {
                            continue;
                        };
                        at_failover.lock().unwrap().push(before);
                        println!("  cut the connection to {}", proxy.upstream());
                        proxy.cut();
                    }
                }
                failovers.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    // Publisher: sequence numbers at a steady rate, many in flight.
    let deadline = started + Duration::from_secs_f64(a.minutes * 60.0);
    let publisher = client.publisher();
    let mut sent = 0usize;
    let mut in_flight = FuturesUnordered::new();
    let mut series = vec![sample(started, &tracker)];
    let mut next_sample = started + Duration::from_secs(10);
    let tick = Duration::from_secs_f64(1.0 / a.rate.max(1) as f64);
    let mut next_send = Instant::now();
    let settle = |n: usize, res: Result<_, rabbitkit::PublishError>| {
        let outcome = match res {
            Ok(_) => Outcome::Confirmed,
            Err(e) => {
                eprintln!("publish {n}: {e}");
                Outcome::Failed
            }
        };
        tracker.lock().unwrap().published(outcome, n);
    };
    while Instant::now() < deadline {
        if in_flight.len() < a.window && Instant::now() >= next_send {
            let n = sent;
            sent += 1;
            next_send += tick;
            tracker.lock().unwrap().published(Outcome::Pending, n);
            let f = publisher.publish(OutgoingMessage::new(
                "",
                name.as_str(),
                n.to_string().into_bytes(),
            ));
            in_flight.push(async move { (n, f.await) });
        } else {
            tokio::select! {
                Some((n, res)) = in_flight.next(), if !in_flight.is_empty() => settle(n, res),
                _ = tokio::time::sleep_until(next_send.into()) => {}
            }
        }
        if Instant::now() >= next_sample {
            series.push(sample(started, &tracker));
            next_sample += Duration::from_secs(10);
        }
    }
    stop.store(true, Ordering::SeqCst);
    while let Some((n, res)) = in_flight.next().await {
        settle(n, res);
    }
    let _ = failer.await;
    series.push(sample(started, &tracker));
    // With dhat: what is live now, with every part of the client still
    // running (before the drain, the clean-up and `close`).
    heap::finish(profiler);
    cluster.up().expect("cluster back up");

    // Drain: wait until every confirmed message arrived (bounded).
    let drain_started = Instant::now();
    let missing_at_stop = tracker.lock().unwrap().missing();
    let drain_until = drain_started + Duration::from_secs(120);
    let missing = loop {
        let missing = tracker.lock().unwrap().missing();
        if missing == 0 || Instant::now() > drain_until {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let drained_in = drain_started.elapsed();
    side.abort();
    // Let the fanout and RPC consumers settle after the last recovery.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let broker_after = tokio::task::spawn_blocking(move || {
        broker_side(&Cluster::local(), &connection_name, &named)
    })
    .await
    .ok()
    .flatten();
    let t = std::mem::take(&mut *tracker.lock().unwrap());
    let peak = series.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let after_1min = series
        .iter()
        .find(|s| s.secs >= 60)
        .unwrap_or(&series[0])
        .rss_kib;
    let end = series.last().map(|s| s.rss_kib).unwrap_or(0);
    let stats = client.stats();
    let at_failover = at_failover.lock().unwrap().clone();

    match a.cut_every {
        None => println!(
            "\n### Soak: {:.1} min, a SIGKILL of the connected node every {} s\n",
            a.minutes, a.kill_every
        ),
        Some(every) => println!(
            "\n### Soak: {:.1} min, the connected node's connection cut (proxy) every {every} s\n",
            a.minutes
        ),
    }
    println!("| figure | value |\n|---|---:|");
    match a.cut_every {
        None => println!("| nodes killed | {} |", failovers.load(Ordering::Relaxed)),
        Some(_) => println!(
            "| connections cut | {} |",
            failovers.load(Ordering::Relaxed)
        ),
    }
    println!("| recoveries | {} |", recoveries.load(Ordering::Relaxed));
    println!("| messages sent | {sent} |");
    println!("| confirmed | {} |", t.confirmed);
    println!(
        "| publish errors (not confirmed, reported to the caller) | {} |",
        t.failed
    );
    println!("| received (distinct) | {} |", t.received_unique);
    println!("| **lost** (confirmed, never received) | **{missing}** |");
    println!(
        "| confirmed, not yet received when publishing stopped → after the drain ({:.0} s) | {missing_at_stop} → {missing} |",
        drained_in.as_secs_f64()
    );
    println!("| duplicates received | {} |", t.duplicates);
    println!("| re-published after failover | {} |", stats.republished);
    println!(
        "| RSS at start / after 1 min / end / peak (KiB) | {} / {after_1min} / {end} / {peak} |",
        series[0].rss_kib
    );
    let kib = |s: &Sample| library_kib(s).map_or("?".into(), |k| k.to_string());
    if let (Some(first), Some(last)) = (at_failover.first(), at_failover.last()) {
        let lib: Vec<f64> = at_failover
            .iter()
            .filter_map(library_kib)
            .map(|k| k as f64)
            .collect();
        let (lo, hi) = lib
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), k| (lo.min(*k), hi.max(*k)));
        println!(
            "| live heap before the first / last failover, min / max (KiB) | {} / {} , {lo} / {hi} |",
            kib(first),
            kib(last)
        );
        println!(
            "| live heap trend over the failovers (least squares) | {:+.1} KiB per failover |",
            slope(&lib)
        );
    }
    println!(
        "| soak bookkeeping at the end (not in the live heap figures) | {} KiB |",
        series.last().map_or(0, |s| s.bookkeeping / 1024)
    );
    println!(
        "| broadcasts published / received (fanout, temporary queue) | {} / {} |",
        side_traffic.0.load(Ordering::Relaxed),
        broadcasts_received.load(Ordering::Relaxed)
    );
    println!(
        "| RPC calls answered / failed | {} / {} |",
        side_traffic.1.load(Ordering::Relaxed),
        side_traffic.2.load(Ordering::Relaxed)
    );
    let show = |b: Option<BrokerSide>| {
        b.map(|b| format!("{} / {}", b.queues, b.consumers))
            .unwrap_or_else(|| "?".into())
    };
    println!(
        "| broker-side queues / consumers of the soak, before the first failover → at the end | {} → {} |",
        show(broker_before),
        show(broker_after)
    );
    let join = |v: Vec<String>| v.join(" ");
    println!(
        "\nRSS every 10 s (KiB): {}",
        join(series.iter().map(|s| s.rss_kib.to_string()).collect())
    );
    println!(
        "Received (distinct) every 10 s: {}",
        join(series.iter().map(|s| s.received.to_string()).collect())
    );
    println!(
        "Live heap every 10 s, less the soak's bookkeeping (KiB): {}",
        join(series.iter().map(kib).collect())
    );
    println!(
        "Live heap before each failover, less the soak's bookkeeping (KiB): {}",
        join(at_failover.iter().map(kib).collect())
    );
    println!(
        "Live blocks before each failover: {}",
        join(
            at_failover
                .iter()
                .map(|s| s.heap.map_or("?".into(), |h| h.blocks.to_string()))
                .collect()
        )
    );
    println!(
        "RSS before each failover (KiB): {}",
        join(at_failover.iter().map(|s| s.rss_kib.to_string()).collect())
    );
    let _ = queue.delete().await;
    let _ = client.delete_exchange(fanout.name()).await;
    let _ = client.delete_queue(&rpc_queue).await;
    client.close().await;
    drop(proxies);
    let leaked = match (broker_before, broker_after) {
        (Some(b), Some(a)) => a.queues > b.queues || a.consumers > b.consumers,
        _ => false,
    };
    if leaked {
        eprintln!("broker-side queues or consumers grew: {broker_before:?} → {broker_after:?}");
    }
    if missing > 0 || leaked {
        std::process::exit(1);
    }
}
