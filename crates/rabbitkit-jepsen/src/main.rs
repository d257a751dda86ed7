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
//!
//! To explain a loss, the run records every publish (when it was sent and
//! confirmed, on which connection and node, whether it was sent again
//! after a failover) and every delivery (when, by which client), prints
//! each event of the clients and the nemesis (cuts, heals, operator
//! actions) in one time base (seconds since the start, and the UTC time
//! of day, to match the brokers' logs), and what each node says of the
//! queue (leader, members, Raft state) in the middle of each cut and once
//! the cluster is whole again. When something is lost it prints, for each
//! missing message, its history and what became of its neighbours; with
//! `--logs DIR` it also keeps the nodes' log files, the timeline and a
//! CSV of every message under `DIR/<UTC time>-<version>-<mode>/`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
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
    /// Seconds of traffic before the nemesis starts (with `--partitions 0`,
    /// the whole run: a window for faults made by hand, e.g. with
    /// `cargo xtask netsplit` or `rabbitmqctl stop_app`).
    #[arg(long, default_value_t = 0.0)]
    idle_secs: f64,
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
    /// Publish with the `mandatory` flag: a message the broker routes to
    /// no queue is returned (the publish fails with `Unroutable`, counted
    /// apart) instead of being confirmed and dropped.
    #[arg(long)]
    mandatory: bool,
    /// Where to keep, when a run loses anything, the nodes' log files, the
    /// timeline and a CSV of every message (in a new directory per run).
    #[arg(long)]
    logs: Option<PathBuf>,
    /// Keep them (with `--logs`) even when nothing is lost.
    #[arg(long)]
    keep_logs: bool,
    /// Do not ask the nodes what they know of the queue during each cut
    /// and after each heal (each probe runs the RabbitMQ CLI on every
    /// node: a few seconds of CPU).
    #[arg(long)]
    no_queue_probe: bool,
}

/// The timeline: printed as it happens and kept for the run's record.
static TIMELINE: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Prints one line of the timeline: seconds since `started`, the UTC time
/// of day (the brokers' logs use it), the text.
fn say(started: Instant, text: impl std::fmt::Display) {
    let line = format!(
        "{:7.1} s  {}  {text}",
        started.elapsed().as_secs_f64(),
        utc_time_of_day()
    );
    println!("{line}");
    TIMELINE.lock().unwrap().push(line);
}

/// `HH:MM:SS.mmm`, UTC.
fn utc_time_of_day() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ms = now.as_millis() % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// A client's connection as its events tell: the how-many-th connection
/// (1 = the first; each recovery adds one) and the node (0 while down).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Conn {
    number: u32,
    node: u8,
}

impl std::fmt::Display for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.node {
            0 => write!(f, "conn {} (down)", self.number),
            n => write!(f, "conn {} (node {n})", self.number),
        }
    }
}

/// The node of an endpoint of the partitionable cluster (`10.77.0.1N`).
fn node_of(endpoint: &rabbitkit::Endpoint) -> u8 {
    let text = endpoint.to_string();
    text.split("@10.77.0.1")
        .nth(1)
        .and_then(|rest| rest.get(..1))
        .and_then(|d| d.parse().ok())
        .unwrap_or(0)
}

/// One publish: when it was sent (seconds into the run) on which
/// connection, and what came of it.
#[derive(Debug, Clone, Copy)]
struct Sent {
    at: f64,
    conn: Conn,
    outcome: Outcome,
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Pending,
    Confirmed { at: f64, conn: Conn, attempts: u32 },
    Failed { at: f64 },
}

/// What the consumers saw of one message.
#[derive(Debug, Clone, Copy)]
struct Received {
    count: u32,
    first_at: f64,
    /// The client whose consumer got it first (`DRAIN`: the final drain).
    first_by: usize,
    redelivered: bool,
}

/// The final drain's "client" number in [`Received::first_by`].
const DRAIN: usize = usize::MAX;
/// [`Received::first_by`] of a message read only after the clients closed.
const AFTER_CLOSE: usize = usize::MAX - 1;

/// What one client saw.
#[derive(Debug, Default)]
struct ClientLog {
    confirmed: HashSet<u64>,
    /// Every publish, by sequence number.
    sent: Vec<Sent>,
    resent: u64,
    failed: u64,
    /// Of the failed publishes, those the broker returned as unroutable.
    unroutable: u64,
    /// Acks that failed because the delivery's channel had died.
    acks_failed: Arc<std::sync::atomic::AtomicU64>,
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
    say(
        started,
        format!(
            "run started (RabbitMQ {version}, {}, {} queue)",
            args.partition_handling, args.queue
        ),
    );
    let urls = netsplit.amqp_urls();
    let queue_name = rabbitkit_test::unique_name(&format!("jepsen.{}", args.queue));
    let classic = args.queue == "classic";

    let received: Arc<Mutex<HashMap<u64, Received>>> = Arc::default();
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
        if c == 0 {
            say(started, format!("queue {queue_name} declared"));
        }
        // The connection in use, as the events tell.
        let conn = Arc::new(Mutex::new(Conn {
            number: 1,
            node: client.current_endpoint().as_ref().map_or(0, node_of),
        }));
        say(started, format!("client {c}: on {}", *conn.lock().unwrap()));
        // Events: recoveries and stalls, with the time.
        let mut events = client.events();
        let event_log = log.clone();
        let event_conn = conn.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.next().await {
                match &ev {
                    Event::Recovered { endpoint, .. } => {
                        event_log.lock().unwrap().recoveries += 1;
                        let mut conn = event_conn.lock().unwrap();
                        conn.number += 1;
                        conn.node = node_of(endpoint);
                    }
                    Event::Disconnected { .. } => event_conn.lock().unwrap().node = 0,
                    Event::Unresponsive { .. } => event_log.lock().unwrap().stalls_detected += 1,
                    _ => {}
                }
                if !matches!(
                    ev,
                    Event::Reconnecting { .. } | Event::Blocked { .. } | Event::Unblocked
                ) {
                    let now = *event_conn.lock().unwrap();
                    say(started, format!("client {c}: {ev} [now {now}]"));
                }
            }
        });
        // Consumer.
        let mut consumer = client
            .consume(&queue_name, ConsumeOptions::new().prefetch(200))
            .await
            .expect("consume");
        let got = received.clone();
        let acks_failed = log.lock().unwrap().acks_failed.clone();
        tokio::spawn(async move {
            while let Some(item) = consumer.next().await {
                let d = match item {
                    Ok(d) => d,
                    Err(e) => {
                        say(started, format!("client {c}: consumer error: {e}"));
                        continue;
                    }
                };
                if let Some(n) = std::str::from_utf8(d.body())
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                {
                    record(&got, n, t(), c, d.redelivered());
                }
                if d.ack().await.is_err() {
                    // The channel died under it (a failover): the broker
                    // delivers it again. Counted, not printed.
                    acks_failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            say(started, format!("client {c}: consumer stream ended"));
        });
        // Publisher.
        let (log, stop, name) = (log.clone(), stop.clone(), queue_name.clone());
        let pub_conn = conn.clone();
        let mandatory = args.mandatory;
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
                    let f = publisher.publish(
                        OutgoingMessage::new("", name.as_str(), n.to_string().into_bytes())
                            .mandatory(mandatory),
                    );
                    in_flight.push(async move { (n, f.await) });
                    let now = *pub_conn.lock().unwrap();
                    let mut l = log.lock().unwrap();
                    l.sent.push(Sent {
                        at: t(),
                        conn: now,
                        outcome: Outcome::Pending,
                    });
                    l.in_flight = in_flight.len();
                    continue;
                }
                tokio::select! {
                    Some((n, res)) = in_flight.next(), if !in_flight.is_empty() => {
                        let now = *pub_conn.lock().unwrap();
                        let mut l = log.lock().unwrap();
                        let seq = (n & SEQ_MASK) as usize;
                        match res {
                            Ok(confirmed) => {
                                l.confirmed.insert(n);
                                l.last_progress = Some(Instant::now());
                                if confirmed.attempts > 1 {
                                    l.resent += 1;
                                }
                                l.sent[seq].outcome = Outcome::Confirmed {
                                    at: t(),
                                    conn: now,
                                    attempts: confirmed.attempts,
                                };
                            }
                            Err(e) => {
                                l.failed += 1;
                                if matches!(e, rabbitkit::PublishError::Unroutable { .. }) {
                                    l.unroutable += 1;
                                }
                                l.sent[seq].outcome = Outcome::Failed { at: t() };
                                say(started, format!("client {c}: publish {seq} failed: {e}"));
                            }
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

    if args.idle_secs > 0.0 {
        say(
            started,
            format!("traffic for {} s before the nemesis", args.idle_secs),
        );
        tokio::time::sleep(Duration::from_secs_f64(args.idle_secs)).await;
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
        say(started, format!("nemesis {round}: cutting node {n} {what}"));
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
        let cut_at = Instant::now();
        if !args.no_queue_probe {
            // What each side says of the queue in the middle of the cut.
            tokio::time::sleep(Duration::from_secs_f64(args.cut_secs / 2.0)).await;
            probe(
                started,
                netsplit,
                &queue_name,
                &format!("nemesis {round}, mid-cut"),
            );
        }
        let rest = Duration::from_secs_f64(args.cut_secs).saturating_sub(cut_at.elapsed());
        tokio::time::sleep(rest).await;
        say(started, format!("nemesis {round}: healing"));
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
                let actions = if healed.actions.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; operator actions (from the heal): {}",
                        healed.actions.join("; ")
                    )
                };
                say(
                    started,
                    format!(
                        "nemesis {round}: cluster whole after {:.1} s{actions}",
                        healed.took.as_secs_f64()
                    ),
                );
                if !args.no_queue_probe {
                    probe(
                        started,
                        netsplit,
                        &queue_name,
                        &format!("nemesis {round}, healed"),
                    );
                }
            }
            Err(e) => {
                eprintln!("jepsen: {e}");
                return false;
            }
        }
        tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;
    }

    // Stop publishing, let the publishes in flight settle, drain.
    say(started, "stopping the publishers");
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
    let info = clients[0].queue_info(&queue_name).await.ok();
    let left = info.map(|i| i.messages);
    say(
        started,
        format!(
            "the queue at the end: {:?} ready, {:?} consumer(s) (the clients have {})",
            left,
            info.map(|i| i.consumers),
            clients.len()
        ),
    );
    if left.is_some_and(|n| n > 0) {
        say(
            started,
            format!("draining {left:?} messages left in the queue"),
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
                record(&received, n, t(), DRAIN, d.redelivered());
            }
            let _ = d.ack().await;
        }
    }
    say(started, "drained");
    if !args.no_queue_probe {
        probe(started, netsplit, &queue_name, "at the end");
    }
    for client in &clients {
        client.close().await;
    }
    // A consumer that holds deliveries it never hands over (a subscription
    // nobody reads) keeps them unacknowledged, out of the count above, until
    // its connection closes: read what came back with a fresh client.
    // Received only now = held, not lost by the broker.
    let checker = connect(args, urls.clone(), "jepsen-check".into()).await;
    let back = checker
        .queue_info(&queue_name)
        .await
        .map(|i| i.messages)
        .ok();
    say(started, format!("after the clients closed: {back:?} ready"));
    if back.is_some_and(|n| n > 0) {
        let mut drain = checker
            .consume(&queue_name, ConsumeOptions::new().prefetch(500))
            .await
            .expect("consume after close");
        while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(5), drain.next()).await
        {
            if let Some(n) = std::str::from_utf8(d.body())
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            {
                record(&received, n, t(), AFTER_CLOSE, d.redelivered());
            }
            let _ = d.ack().await;
        }
    }
    checker.close().await;

    let received = received.lock().unwrap();
    // Confirmed messages first read after the clients closed.
    let held = confirmed
        .iter()
        .filter(|n| received.get(n).is_some_and(|r| r.first_by == AFTER_CLOSE))
        .count();
    let lost = confirmed
        .iter()
        .filter(|n| !received.contains_key(n))
        .count();
    let mut report = String::new();
    if lost > 0 {
        report = lost_report(&logs, &confirmed, &received);
        print!("{report}");
    }
    let duplicated: u64 = received
        .values()
        .map(|r| u64::from(r.count.saturating_sub(1)))
        .sum();
    let failed: u64 = logs.iter().map(|l| l.lock().unwrap().failed).sum();
    let unroutable: u64 = logs.iter().map(|l| l.lock().unwrap().unroutable).sum();
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
            "  client {c}: confirmed {} ({} after a re-send), failed {}, recoveries {}, stalls detected {}, stuck {:.1} s, longest stall {:.1} s, acks refused (channel gone) {}",
            l.confirmed.len(),
            l.resent,
            l.failed,
            l.recoveries,
            l.stalls_detected,
            l.stuck.as_secs_f64(),
            l.longest_stall.as_secs_f64(),
            l.acks_failed.load(Ordering::Relaxed)
        );
        stuck.push(format!(
            "{:.0}/{:.0}",
            l.stuck.as_secs_f64(),
            l.longest_stall.as_secs_f64()
        ));
    }
    println!(
        "  confirmed {}, lost {lost}, duplicated {duplicated}, failed publishes {failed} (unroutable {unroutable}{}), left in the queue for a fresh consumer {left:?}, held by a consumer until the clients closed {held}",
        confirmed.len(),
        if args.mandatory {
            ""
        } else {
            "; not mandatory: unroutable ones are confirmed"
        }
    );
    let slowest = heal_times.iter().copied().fold(0.0, f64::max);
    println!(
        "  cluster whole again after each heal within {slowest:.0} s; operator actions needed after {interventions} of {} heals",
        args.partitions
    );
    println!();
    println!(
        "| {version} | {mode} | {} | {} ({node_cuts}+{client_cuts}) | {} | **{lost}**{} | {duplicated} | {failed} | {} | {interventions} |",
        args.queue,
        args.partitions,
        confirmed.len(),
        if held > 0 {
            format!(" (+{held} held until close)")
        } else {
            String::new()
        },
        stuck.join(", ")
    );
    if held > 0 {
        let mut ids: Vec<u64> = confirmed
            .iter()
            .filter(|n| received.get(n).is_some_and(|r| r.first_by == AFTER_CLOSE))
            .copied()
            .collect();
        ids.sort_unstable();
        let _ = writeln!(
            report,
            "  HELD (confirmed, read only after the clients closed): {held}, e.g. {:?}",
            ids.iter()
                .take(10)
                .map(|n| format!("client {} seq {}", n >> 40, n & SEQ_MASK))
                .collect::<Vec<_>>()
        );
        print!("{report}");
    }
    if let Some(dir) = &args.logs
        && (lost > 0 || held > 0 || args.keep_logs)
    {
        let mode = mode.trim_matches(['(', ')']).to_lowercase();
        let utc = utc_time_of_day().replace(':', "").replace('.', "-");
        let dir = dir.join(format!("{utc}-{version}-{mode}"));
        match keep_record(&dir, netsplit, &logs, &received, &report) {
            Ok(()) => println!(
                "  the nodes' logs, the timeline and every message: {}",
                dir.display()
            ),
            Err(e) => eprintln!("jepsen: keeping the record in {}: {e}", dir.display()),
        }
    }
    lost == 0 && held == 0
}

/// The sequence number of a message id (see [`id`]).
const SEQ_MASK: u64 = (1 << 40) - 1;

/// Records a delivery of message `n` at `at` by client `by`.
fn record(received: &Mutex<HashMap<u64, Received>>, n: u64, at: f64, by: usize, redelivered: bool) {
    received
        .lock()
        .unwrap()
        .entry(n)
        .and_modify(|r| r.count += 1)
        .or_insert(Received {
            count: 1,
            first_at: at,
            first_by: by,
            redelivered,
        });
}

/// Asks every node what it knows of the queue and prints it.
fn probe(started: Instant, netsplit: &Netsplit, queue: &str, when: &str) {
    let report =
        tokio::task::block_in_place(|| netsplit.queue_report(queue, Duration::from_secs(20)));
    for line in report.lines() {
        say(started, format!("queue ({when}): {line}"));
    }
}

/// One publish's history, for the report of a loss.
fn history(s: &Sent) -> String {
    let sent = format!("sent {:.1} s on {}", s.at, s.conn);
    match s.outcome {
        Outcome::Pending => format!("{sent}, never settled"),
        Outcome::Failed { at } => format!("{sent}, failed {at:.1} s"),
        Outcome::Confirmed { at, conn, attempts } => format!(
            "{sent}, confirmed {at:.1} s on {conn}{}",
            if attempts > 1 {
                format!(" after {attempts} attempts (re-sent after a failover)")
            } else {
                String::new()
            }
        ),
    }
}

/// What became of a message, as the consumers saw it.
fn fate(r: Option<&Received>) -> String {
    match r {
        None => "never received".into(),
        Some(r) => format!(
            "received {:.1} s by {}{}{}",
            r.first_at,
            if r.first_by == DRAIN {
                "the final drain".to_owned()
            } else if r.first_by == AFTER_CLOSE {
                "a fresh client after the clients closed (held unacked until then)".to_owned()
            } else {
                format!("client {}", r.first_by)
            },
            if r.redelivered { " (redelivered)" } else { "" },
            if r.count > 1 {
                format!(", {} times", r.count)
            } else {
                String::new()
            }
        ),
    }
}

/// For each run of missing messages: each one's history (up to 100 in
/// all), and the message just before and just after the run.
fn lost_report(
    logs: &[Arc<Mutex<ClientLog>>],
    confirmed: &HashSet<u64>,
    received: &HashMap<u64, Received>,
) -> String {
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
    let mut out = String::new();
    let mut listed = 0;
    for &(a, b) in &ranges {
        let c = (a >> 40) as usize;
        let (first, last) = (a & SEQ_MASK, b & SEQ_MASK);
        let log = logs[c].lock().unwrap();
        let _ = writeln!(
            out,
            "  LOST: client {c}, messages {first}..={last} ({} messages)",
            last - first + 1
        );
        for (label, seq) in [("before", first.checked_sub(1)), ("after", Some(last + 1))] {
            if let Some(seq) = seq
                && let Some(s) = log.sent.get(seq as usize)
            {
                let _ = writeln!(
                    out,
                    "    {label}: {seq}: {}; {}",
                    history(s),
                    fate(received.get(&id(c, seq)))
                );
            }
        }
        for seq in first..=last {
            if listed < 100 {
                listed += 1;
                let _ = writeln!(out, "    {seq}: {}", history(&log.sent[seq as usize]));
            }
        }
    }
    out
}

/// Keeps the record of a run in `dir`: the nodes' logs, the timeline, the
/// report of what was lost, and `messages.csv` (every publish and what
/// became of it).
fn keep_record(
    dir: &Path,
    netsplit: &Netsplit,
    logs: &[Arc<Mutex<ClientLog>>],
    received: &HashMap<u64, Received>,
    report: &str,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    netsplit
        .copy_logs(&dir.join("nodes"))
        .map_err(std::io::Error::other)?;
    std::fs::write(
        dir.join("timeline.txt"),
        TIMELINE.lock().unwrap().join("\n") + "\n",
    )?;
    std::fs::write(dir.join("lost.txt"), report)?;
    let mut csv = String::from(
        "client,seq,sent_at,sent_conn,sent_node,outcome,settled_at,confirmed_conn,confirmed_node,attempts,received,first_received_at,first_received_by,redelivered\n",
    );
    for (c, log) in logs.iter().enumerate() {
        for (seq, s) in log.lock().unwrap().sent.iter().enumerate() {
            let (outcome, settled, conn, attempts) = match s.outcome {
                Outcome::Pending => ("pending", f64::NAN, Conn::default(), 0),
                Outcome::Failed { at } => ("failed", at, Conn::default(), 0),
                Outcome::Confirmed { at, conn, attempts } => ("confirmed", at, conn, attempts),
            };
            let r = received.get(&id(c, seq as u64));
            let _ = writeln!(
                csv,
                "{c},{seq},{:.3},{},{},{outcome},{settled:.3},{},{},{attempts},{},{},{},{}",
                s.at,
                s.conn.number,
                s.conn.node,
                conn.number,
                conn.node,
                r.map_or(0, |r| r.count),
                r.map_or(String::new(), |r| format!("{:.3}", r.first_at)),
                r.map_or(String::new(), |r| if r.first_by == DRAIN {
                    "drain".into()
                } else if r.first_by == AFTER_CLOSE {
                    "after_close".into()
                } else {
                    r.first_by.to_string()
                }),
                r.is_some_and(|r| r.redelivered)
            );
        }
    }
    std::fs::write(dir.join("messages.csv"), csv)
}
