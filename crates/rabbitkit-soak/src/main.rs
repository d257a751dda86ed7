//! Soak run: confirmed publishing and consuming on a quorum queue for
//! minutes, while the node the client is connected to is SIGKILLed every
//! 30 s (and started again). Reports messages sent, confirmed, received,
//! lost (confirmed but never received: must be 0), duplicates, and the
//! process's resident memory over time (must stay flat). Beside it, a
//! fanout subscription (a temporary queue) and an RPC server and client
//! keep working, and the broker's count of queues and consumers is taken
//! before the first kill and at the end: recovery must not leave ghost
//! queues or orphan consumers behind (exit status 1 if it does, or if a
//! confirmed message was lost).
//!
//! ```text
//! cargo xtask soak                      # 10 minutes, a kill every 30 s
//! cargo xtask soak -- --minutes 2 --kill-every 20 --rate 2000
//! cargo xtask soak -- --help
//! ```
//! Needs the local 3-node cluster (it kills its nodes); refuses to run
//! against `AMQP_ADDR`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rabbitkit::{
    ConsumeOptions, Event, Exchange, Options, OutgoingMessage, Queue, RpcClient, RpcServer,
};
use rabbitkit_test::Cluster;

/// Confirmed publishing and consuming on a quorum queue (plus a fanout
/// subscription and RPC calls) while the connected node is SIGKILLed
/// periodically; reports loss, duplicates, memory and broker-side leftovers.
#[derive(Parser, Debug)]
#[command(name = "rabbitkit-soak", about, long_about = None)]
struct Args {
    /// How long to run, in minutes.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Seconds between two SIGKILLs of the node the client is connected to.
    #[arg(long, default_value_t = 30)]
    kill_every: u64,
    /// Publish rate, messages per second.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Publishes in flight at most (the client's publish window).
    #[arg(long, default_value_t = 256)]
    window: usize,
}

/// What the broker holds for this vhost: queues (`rabbitmqctl list_queues`)
/// and consumers (`rabbitmqctl list_consumers`, which asks the queues
/// themselves, unlike the lagging `consumers` column of `list_queues`),
/// counted on a running node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BrokerSide {
    queues: usize,
    consumers: usize,
}

fn broker_side(cluster: &Cluster) -> Option<BrokerSide> {
    let lines = |out: String| out.lines().filter(|l| !l.trim().is_empty()).count();
    for n in 1..=3 {
        let queues = cluster.rabbitmqctl(n, &["list_queues", "-q", "--no-table-headers", "name"]);
        let consumers = cluster.rabbitmqctl(
            n,
            &["list_consumers", "-q", "--no-table-headers", "queue_name"],
        );
        if let (Ok(queues), Ok(consumers)) = (queues, consumers) {
            return Some(BrokerSide {
                queues: lines(queues),
                consumers: lines(consumers),
            });
        }
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

#[tokio::main]
async fn main() {
    if rabbitkit_test::using_external_broker() {
        eprintln!("soak kills local cluster nodes; unset AMQP_ADDR");
        std::process::exit(2);
    }
    let a = Args::parse();
    let cluster = Cluster::local();
    cluster.up().expect("cluster up");
    let client = Options::new()
        .connection_name("rabbitkit-soak")
        .heartbeat(Duration::from_secs(5))
        .publish_window(a.window)
        .publish_timeout(Duration::from_secs(120))
        .connect(cluster.amqp_urls())
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
            if matches!(ev, Event::Disconnected { .. } | Event::Recovered { .. }) {
                println!("  event: {ev}");
            }
        }
    });

    // Consumer: counts deliveries per sequence number.
    let received: Arc<Mutex<Vec<u8>>> = Arc::default();
    let mut consumer = client
        .consume(&name, ConsumeOptions::new().prefetch(200))
        .await
        .expect("consume");
    let got = received.clone();
    tokio::spawn(async move {
        while let Some(item) = consumer.next().await {
            let Ok(d) = item else { continue };
            if let Ok(n) = std::str::from_utf8(d.body())
                .unwrap_or("x")
                .parse::<usize>()
            {
                let mut g = got.lock().unwrap();
                if g.len() <= n {
                    g.resize(n + 1, 0);
                }
                g[n] = g[n].saturating_add(1);
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
    let server = RpcServer::<u64, u64, String>::builder(rpc_queue.clone())
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
    let broker_before = tokio::task::spawn_blocking(|| broker_side(&Cluster::local()))
        .await
        .ok()
        .flatten();

    // Killer: the publisher's node, every `kill_every` seconds.
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicU64::new(0));
    let killer = tokio::spawn({
        let (client, stop, kills) = (client.clone(), stop.clone(), kills.clone());
        async move {
            loop {
                // Sleep in short steps, so the end of the run is not held up.
                let wake = Instant::now() + Duration::from_secs(a.kill_every);
                while Instant::now() < wake && !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Some(ep) = client.current_endpoint() else {
                    continue;
                };
                let Some(node) = Cluster::local().node_for_port(ep.port()) else {
                    continue;
                };
                println!("  kill rabbit{node}");
                let _ = tokio::task::spawn_blocking(move || {
                    let c = Cluster::local();
                    c.kill(node)?;
                    std::thread::sleep(Duration::from_secs(5));
                    c.start(node)
                })
                .await;
                kills.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    // Publisher: sequence numbers at a steady rate, many in flight.
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(a.minutes * 60.0);
    let publisher = client.publisher();
    let mut confirmed = vec![false; 0];
    let (mut sent, mut failed) = (0usize, 0u64);
    let mut in_flight = FuturesUnordered::new();
    let mut rss = vec![(0u64, rss_kib())];
    let mut next_sample = started + Duration::from_secs(10);
    let tick = Duration::from_secs_f64(1.0 / a.rate.max(1) as f64);
    let mut next_send = Instant::now();
    while Instant::now() < deadline {
        if in_flight.len() < a.window && Instant::now() >= next_send {
            let n = sent;
            sent += 1;
            next_send += tick;
            let f = publisher.publish(OutgoingMessage::new(
                "",
                name.as_str(),
                n.to_string().into_bytes(),
            ));
            in_flight.push(async move { (n, f.await) });
        } else {
            tokio::select! {
                Some((n, res)) = in_flight.next(), if !in_flight.is_empty() => {
                    if confirmed.len() <= n { confirmed.resize(n + 1, false); }
                    match res { Ok(_) => confirmed[n] = true, Err(e) => { failed += 1; eprintln!("publish {n}: {e}"); } }
                }
                _ = tokio::time::sleep_until(next_send.into()) => {}
            }
        }
        if Instant::now() >= next_sample {
            rss.push((started.elapsed().as_secs(), rss_kib()));
            next_sample += Duration::from_secs(10);
        }
    }
    stop.store(true, Ordering::SeqCst);
    while let Some((n, res)) = in_flight.next().await {
        if confirmed.len() <= n {
            confirmed.resize(n + 1, false);
        }
        match res {
            Ok(_) => confirmed[n] = true,
            Err(_) => failed += 1,
        }
    }
    let _ = killer.await;
    cluster.up().expect("cluster back up");

    // Drain: wait until every confirmed message arrived (bounded).
    let confirmed_count = confirmed.iter().filter(|c| **c).count();
    let drain_until = Instant::now() + Duration::from_secs(120);
    let missing = loop {
        let missing = {
            let g = received.lock().unwrap();
            confirmed
                .iter()
                .enumerate()
                .filter(|(n, c)| **c && g.get(*n).copied().unwrap_or(0) == 0)
                .count()
        };
        if missing == 0 || Instant::now() > drain_until {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    side.abort();
    // Let the fanout and RPC consumers settle after the last recovery.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let broker_after = tokio::task::spawn_blocking(|| broker_side(&Cluster::local()))
        .await
        .ok()
        .flatten();
    let g = received.lock().unwrap().clone();
    let received_unique = g.iter().filter(|c| **c > 0).count();
    let duplicates: u64 = g.iter().map(|c| u64::from(c.saturating_sub(1))).sum();
    let peak = rss.iter().map(|(_, r)| *r).max().unwrap_or(0);
    let after_1min = rss
        .iter()
        .find(|(t, _)| *t >= 60)
        .map(|(_, r)| *r)
        .unwrap_or(rss[0].1);
    let end = rss.last().map(|(_, r)| *r).unwrap_or(0);
    let stats = client.stats();

    println!(
        "\n### Soak: {:.1} min, a SIGKILL of the connected node every {} s\n",
        a.minutes, a.kill_every
    );
    println!("| figure | value |\n|---|---:|");
    println!("| nodes killed | {} |", kills.load(Ordering::Relaxed));
    println!("| recoveries | {} |", recoveries.load(Ordering::Relaxed));
    println!("| messages sent | {sent} |");
    println!("| confirmed | {confirmed_count} |");
    println!("| publish errors (not confirmed, reported to the caller) | {failed} |");
    println!("| received (distinct) | {received_unique} |");
    println!("| **lost** (confirmed, never received) | **{missing}** |");
    println!("| duplicates received | {duplicates} |");
    println!("| re-published after failover | {} |", stats.republished);
    println!(
        "| RSS at start / after 1 min / end / peak (KiB) | {} / {after_1min} / {end} / {peak} |",
        rss[0].1
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
        "| broker-side queues / consumers, before the first kill → at the end | {} → {} |",
        show(broker_before),
        show(broker_after)
    );
    println!(
        "\nRSS every 10 s (KiB): {}",
        rss.iter()
            .map(|(_, r)| r.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = queue.delete().await;
    let _ = client.delete_exchange(fanout.name()).await;
    let _ = client.delete_queue(&rpc_queue).await;
    client.close().await;
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
