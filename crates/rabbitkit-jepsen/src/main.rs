//! Jepsen-style run: confirmed publishing and consuming on one queue while
//! a nemesis repeatedly partitions the cluster's network, then every
//! confirmed message is looked for.
//!
//! Run it with `cargo xtask jepsen [--rabbitmq 4.3|3.10] -- [ARGS]` (as
//! root; it builds its own partitionable cluster, see
//! `rabbitkit_test::Netsplit`, and tears it down at the end, also on
//! Ctrl-C), e.g.
//!
//! ```text
//! cargo xtask jepsen -- --partitions 20
//! cargo xtask jepsen --rabbitmq 3.10 -- --partition-handling pause_minority
//! cargo xtask jepsen -- --queue classic --partitions 10
//! ```
//!
//! `--clients` clients (default 3), client `i` connected first to node
//! `i`, each publish `--rate` messages a second with confirms and consume
//! from the same queue (a quorum queue, or with `--queue classic` a
//! durable classic queue, declared through node 1). The nemesis, for each
//! of `--partitions` rounds: picks a random node; cuts it off from the
//! other two nodes (every `--client-cut-every`-th round: from the clients
//! instead); waits `--cut-secs`; heals; waits until the cluster is whole
//! (on RabbitMQ 3.10 with `ignore`, restarting the cut node's application,
//! as an operator would); waits `--settle-secs`. Then publishing stops,
//! the consumers drain the queue, and the run prints one line per client
//! and a Markdown table row: confirmed, lost (confirmed but never
//! received), duplicated (received more than once), failed publishes
//! (timed out or refused: the client was told, nothing to lose), and how
//! long each client was stuck (publishes outstanding and no confirm for
//! over a second).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rabbitkit::{Client, ConsumeOptions, Event, Options, OutgoingMessage, Queue, Timings};
use rabbitkit_test::{Cluster, Netsplit, PartitionHandling, RabbitMq};
use rand::Rng;

/// Confirmed publishing and consuming while a nemesis partitions the
/// network of a 3-node cluster.
#[derive(Debug, Parser)]
struct Args {
    /// `cluster_partition_handling` of RabbitMQ 3.10 (ignore,
    /// pause_minority, autoheal); RabbitMQ 4 ignores it.
    #[arg(long, default_value = "ignore")]
    partition_handling: PartitionHandling,
    /// The queue type: quorum or classic.
    #[arg(long, default_value = "quorum")]
    queue: String,
    /// Partitions the nemesis makes.
    #[arg(long, default_value_t = 20)]
    partitions: u32,
    /// How long each partition lasts, in seconds.
    #[arg(long, default_value_t = 15.0)]
    cut_secs: f64,
    /// How long to wait once the cluster is whole again, in seconds.
    #[arg(long, default_value_t = 5.0)]
    settle_secs: f64,
    /// Every N-th partition cuts a node from the clients instead of from
    /// the other nodes (0: never).
    #[arg(long, default_value_t = 4)]
    client_cut_every: u32,
    /// Clients (each publishes and consumes).
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Messages each client publishes per second.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Overrides `Timings::confirm_deadline` (seconds; 0 disables the
    /// detection of a node that stopped confirming).
    #[arg(long)]
    confirm_deadline: Option<f64>,
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientLog {
    confirmed: HashSet<u64>,
    failed: u64,
    in_flight: usize,
    last_progress: Option<Instant>,
    stuck: Duration,
    longest_stall: Duration,
    recoveries: u64,
    stalls_detected: u64,
}

/// The id of message `seq` of client `c`: client in the high bits.
fn id(c: usize, seq: u64) -> u64 {
    ((c as u64) << 40) | seq
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let version = match RabbitMq::from_env() {
        Ok(v) => v.unwrap_or_default(),
        Err(e) => {
            eprintln!("jepsen: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(why) = Netsplit::unavailable(version) {
        eprintln!("jepsen: cannot run: {why}");
        return std::process::ExitCode::FAILURE;
    }
    let netsplit = match Netsplit::up(version, args.partition_handling) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("jepsen: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let ok = runtime.block_on(async {
        tokio::select! {
            ok = run(&args, version, &netsplit) => ok,
            _ = tokio::signal::ctrl_c() => {
                eprintln!("jepsen: interrupted; tearing the cluster down");
                false
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    drop(netsplit);
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

async fn connect(args: &Args, urls: Vec<String>, name: String) -> Client {
    let mut timings = Timings::default();
    if let Some(secs) = args.confirm_deadline {
        timings.confirm_deadline = Duration::from_secs_f64(secs);
    }
    Options::new()
        .connection_name(name)
        .heartbeat(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(3))
        .publish_timeout(Duration::from_secs(60))
        .publish_window(500)
        .timings(timings)
        .connect(urls)
        .await
        .expect("connect")
}

async fn run(args: &Args, version: RabbitMq, netsplit: &Netsplit) -> bool {
    let started = Instant::now();
    let t = move || started.elapsed().as_secs_f64();
    let urls = netsplit.amqp_urls();
    let queue_name = rabbitkit_test::unique_name(&format!("jepsen.{}", args.queue));
    let classic = args.queue == "classic";

    let received: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let logs: Vec<Arc<Mutex<ClientLog>>> = (0..args.clients).map(|_| Arc::default()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    let mut publishers = Vec::new();

    for (c, log) in logs.iter().enumerate() {
        let mut order = urls.clone();
        order.rotate_left(c % urls.len());
        let client = connect(args, order, format!("jepsen-{c}")).await;
        let mut builder = Queue::named(queue_name.clone());
        if classic {
            builder = builder.classic();
        }
        builder.declare(&client).await.expect("declare");
        // Events: recoveries and stalls, with the time.
        let mut events = client.events();
        let event_log = log.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                match &ev {
                    Event::Recovered { .. } => event_log.lock().unwrap().recoveries += 1,
                    Event::Unresponsive { .. } => event_log.lock().unwrap().stalls_detected += 1,
                    _ => {}
                }
                if matches!(
                    ev,
                    Event::Disconnected { .. }
                        | Event::Recovered { .. }
                        | Event::Unresponsive { .. }
                ) {
                    println!("{:7.1} s  client {c}: {ev}", t());
                }
            }
        });
        // Consumer.
        let mut consumer = client
            .consume(&queue_name, ConsumeOptions::new().prefetch(200))
            .await
            .expect("consume");
        let got = received.clone();
        tokio::spawn(async move {
            while let Some(item) = consumer.next().await {
                let Ok(d) = item else { continue };
                if let Some(n) = std::str::from_utf8(d.body())
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    *got.lock().unwrap().entry(n).or_default() += 1;
                }
                let _ = d.ack().await;
            }
        });
        // Publisher.
        let (log, stop, name) = (log.clone(), stop.clone(), queue_name.clone());
        let publisher = client.publisher();
        let rate = args.rate.max(1);
        publishers.push(tokio::spawn(async move {
            let tick = Duration::from_secs_f64(1.0 / f64::from(rate));
            let mut next = Instant::now();
            let mut in_flight = FuturesUnordered::new();
            let mut seq = 0u64;
            log.lock().unwrap().last_progress = Some(Instant::now());
            loop {
                let stopping = stop.load(Ordering::Relaxed);
                if stopping && in_flight.is_empty() {
                    break;
                }
                if !stopping && Instant::now() >= next && in_flight.len() < 500 {
                    let n = id(c, seq);
                    seq += 1;
                    next += tick;
                    let f = publisher.publish(OutgoingMessage::new(
                        "",
                        name.as_str(),
                        n.to_string().into_bytes(),
                    ));
                    in_flight.push(async move { (n, f.await) });
                    log.lock().unwrap().in_flight = in_flight.len();
                    continue;
                }
                tokio::select! {
                    Some((n, res)) = in_flight.next(), if !in_flight.is_empty() => {
                        let mut l = log.lock().unwrap();
                        match res {
                            Ok(_) => {
                                l.confirmed.insert(n);
                                l.last_progress = Some(Instant::now());
                            }
                            Err(_) => l.failed += 1,
                        }
                        l.in_flight = in_flight.len();
                    }
                    _ = tokio::time::sleep_until(next.into()), if !stopping => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }));
        clients.push(client);
    }

    // Stuck time: outstanding publishes and no confirm for over a second.
    {
        let (logs, stop) = (logs.clone(), stop.clone());
        tokio::spawn(async move {
            let step = Duration::from_millis(100);
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(step).await;
                for log in &logs {
                    let mut l = log.lock().unwrap();
                    let stall = match l.last_progress {
                        Some(at) if l.in_flight > 0 => at.elapsed(),
                        _ => Duration::ZERO,
                    };
                    if stall > Duration::from_secs(1) {
                        l.stuck += step;
                    }
                    l.longest_stall = l.longest_stall.max(stall);
                }
            }
        });
    }

    // The nemesis.
    let mut node_cuts = 0;
    let mut client_cuts = 0;
    let mut heal_times = Vec::new();
    let mut interventions = 0;
    for round in 1..=args.partitions {
        let n = rand::rng().random_range(1..=Cluster::NODE_COUNT);
        let from_clients = args.client_cut_every > 0 && round % args.client_cut_every == 0;
        let what = if from_clients {
            client_cuts += 1;
            "from the clients"
        } else {
            node_cuts += 1;
            "from the other nodes"
        };
        println!("{:7.1} s  nemesis {round}: cutting node {n} {what}", t());
        let cut = tokio::task::spawn_blocking(move || {
            if from_clients {
                Netsplit::cut_from_clients(n)
            } else {
                Netsplit::cut(n)
            }
        })
        .await
        .expect("nemesis");
        if let Err(e) = cut {
            eprintln!("jepsen: cut failed: {e}");
            return false;
        }
        tokio::time::sleep(Duration::from_secs_f64(args.cut_secs)).await;
        println!("{:7.1} s  nemesis {round}: healing", t());
        if let Err(e) = tokio::task::spawn_blocking(Netsplit::heal)
            .await
            .expect("nemesis")
        {
            eprintln!("jepsen: heal failed: {e}");
            return false;
        }
        let healed = tokio::task::block_in_place(|| {
            netsplit.wait_healed((!from_clients).then_some(n), Duration::from_secs(180))
        });
        match healed {
            Ok(healed) => {
                heal_times.push(healed.took.as_secs_f64());
                if !healed.actions.is_empty() {
                    interventions += 1;
                }
                println!(
                    "{:7.1} s  nemesis {round}: cluster whole after {:.1} s {:?}",
                    t(),
                    healed.took.as_secs_f64(),
                    healed.actions
                );
            }
            Err(e) => {
                eprintln!("jepsen: {e}");
                return false;
            }
        }
        tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
    }

    // Stop publishing, let the publishes in flight settle, drain.
    println!("{:7.1} s  stopping the publishers", t());
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        let _ = tokio::time::timeout(Duration::from_secs(120), p).await;
    }
    let confirmed: HashSet<u64> = logs
        .iter()
        .flat_map(|l| l.lock().unwrap().confirmed.clone())
        .collect();
    let mut last_count = 0;
    let mut idle_since = Instant::now();
    loop {
        let (count, missing) = {
            let r = received.lock().unwrap();
            (
                r.len(),
                confirmed.iter().filter(|n| !r.contains_key(n)).count(),
            )
        };
        if count != last_count {
            last_count = count;
            idle_since = Instant::now();
        }
        if missing == 0 && idle_since.elapsed() > Duration::from_secs(3) {
            break;
        }
        if idle_since.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A consumer may have ended (a classic queue's node restarted cancels
    // it): read what is left in the queue with a fresh one.
    let left = clients[0]
        .queue_info(&queue_name)
        .await
        .map(|i| i.messages)
        .ok();
    if left.is_some_and(|n| n > 0) {
        println!(
            "{:7.1} s  draining {left:?} messages left in the queue",
            t()
        );
        let mut drain = clients[0]
            .consume(&queue_name, ConsumeOptions::new().prefetch(500))
            .await
            .expect("consume to drain");
        while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(5), drain.next()).await
        {
            if let Some(n) = std::str::from_utf8(d.body())
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            {
                *received.lock().unwrap().entry(n).or_default() += 1;
            }
            let _ = d.ack().await;
        }
    }
    for client in &clients {
        client.close().await;
    }

    let received = received.lock().unwrap();
    let lost = confirmed
        .iter()
        .filter(|n| !received.contains_key(n))
        .count();
    if lost > 0 {
        // Which messages: ranges of each client's sequence numbers, with
        // the second of the run they were published in (seq / rate).
        let mut missing: Vec<u64> = confirmed
            .iter()
            .filter(|n| !received.contains_key(n))
            .copied()
            .collect();
        missing.sort_unstable();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for n in missing {
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == n => *end = n,
                _ => ranges.push((n, n)),
            }
        }
        for (a, b) in ranges.iter().take(20) {
            let (c, first, last) = (a >> 40, a & ((1 << 40) - 1), b & ((1 << 40) - 1));
            println!(
                "  LOST: client {c}, messages {first}..={last} (published about {:.0} s into the run)",
                first as f64 / f64::from(args.rate.max(1))
            );
        }
    }
    let duplicated: u64 = received
        .values()
        .map(|&k| u64::from(k.saturating_sub(1)))
        .sum();
    let failed: u64 = logs.iter().map(|l| l.lock().unwrap().failed).sum();
    let mode = if version.is_4() {
        "(Khepri)".to_owned()
    } else {
        args.partition_handling.to_string()
    };
    println!();
    println!(
        "RabbitMQ {version}, {mode}, {} queue: {} partitions ({node_cuts} node from nodes, {client_cuts} node from clients), {:.0} s",
        args.queue,
        args.partitions,
        t()
    );
    let mut stuck = Vec::new();
    for (c, log) in logs.iter().enumerate() {
        let l = log.lock().unwrap();
        println!(
            "  client {c}: confirmed {}, failed {}, recoveries {}, stalls detected {}, stuck {:.1} s, longest stall {:.1} s",
            l.confirmed.len(),
            l.failed,
            l.recoveries,
            l.stalls_detected,
            l.stuck.as_secs_f64(),
            l.longest_stall.as_secs_f64()
        );
        stuck.push(format!(
            "{:.0}/{:.0}",
            l.stuck.as_secs_f64(),
            l.longest_stall.as_secs_f64()
        ));
    }
    println!(
        "  confirmed {}, lost {lost}, duplicated {duplicated}, failed publishes {failed}, left in the queue for a fresh consumer {left:?}",
        confirmed.len()
    );
    let slowest = heal_times.iter().copied().fold(0.0, f64::max);
    println!(
        "  cluster whole again after each heal within {slowest:.0} s; operator actions needed after {interventions} of {} heals",
        args.partitions
    );
    println!();
    println!(
        "| {version} | {mode} | {} | {} ({node_cuts}+{client_cuts}) | {} | **{lost}** | {duplicated} | {failed} | {} | {interventions} |",
        args.queue,
        args.partitions,
        confirmed.len(),
        stuck.join(", ")
    );
    lost == 0
}
