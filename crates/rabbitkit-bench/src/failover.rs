//! Failover time, rabbitkit only (raw lapin has no failover).
//!
//! One client on the whole cluster publishes with confirms to a quorum
//! queue at a steady rate, each body carrying its sequence number. In each
//! round the node the client is connected to is SIGKILLed; the round
//! measures the time from the kill to the first publish confirmed through
//! the new connection (and to the `Disconnected` / `Recovered` events), then
//! restarts the node and lets the cluster settle. At the end everything in
//! the queue is read back: a confirmed sequence number that never arrives is
//! a lost message; one that arrives twice is a duplicate.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use rabbitkit::{Event, OutgoingMessage, Queue};
use rabbitkit_test::Cluster;

use crate::measure::Result;
use crate::{Ctx, raw, rk};

/// How the failover scenario runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Kills (rounds).
    pub rounds: usize,
    /// Publishes in flight at most.
    pub window: usize,
    /// Publishes per second (0: as fast as the window allows).
    pub rate: u64,
    /// Steady publishing before each kill.
    pub before: Duration,
    /// Publishing after the first confirm on the new node.
    pub after: Duration,
    /// Pause after the killed node is back, before the next round.
    pub settle: Duration,
    /// A round stops when no publish is confirmed through the new
    /// connection this long after the kill.
    pub give_up: Duration,
}

/// One kill.
#[derive(Debug, Clone)]
pub struct Round {
    /// The node killed (1..=3).
    pub node: usize,
    /// The node the client went to.
    pub new_node: Option<usize>,
    /// Kill → `Event::Disconnected`.
    pub to_disconnected: Option<Duration>,
    /// Kill → `Event::Recovered`.
    pub to_recovered: Option<Duration>,
    /// Kill → first publish confirmed through the new connection.
    pub to_first_confirm: Option<Duration>,
    /// Kill → a task held unacknowledged by a consumer on the killed node
    /// delivered again (RabbitMQ 4.3 waits `consumer_disconnected_timeout`).
    pub to_task_redone: Option<Duration>,
    /// Kill → a single-active-consumer queue whose active consumer was on
    /// the killed node delivers again (its standby, or the consumer
    /// re-subscribed on another node).
    pub to_takeover: Option<Duration>,
    /// Publishes re-sent after the loss (`Stats::republished`).
    pub republished: u64,
    /// Publishes that failed in this round, and why.
    pub failed: u64,
    /// The first error, if any.
    pub error: Option<String>,
}

/// What the scenario found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The rounds.
    pub rounds: Vec<Round>,
    /// Publishes confirmed.
    pub confirmed: u64,
    /// Publishes that failed (an error returned to the caller).
    pub failed: u64,
    /// Messages read back from the queue.
    pub received: u64,
    /// Confirmed but never read back.
    pub lost: u64,
    /// Read back more than once (extra copies).
    pub duplicates: u64,
    /// Messages per second published while steady (median over rounds).
    pub steady_rate: f64,
}

fn body_for(seq: u64, len: usize) -> Vec<u8> {
    let mut body = format!("{seq:020}").into_bytes();
    body.resize(len.max(20), b'.');
    body
}

fn seq_of(body: &[u8]) -> Option<u64> {
    std::str::from_utf8(body.get(..20)?).ok()?.parse().ok()
}

/// SIGKILLs node `n`, recording the instant just before the signal is sent,
/// and waits until it is gone.
fn kill(n: usize, at: &OnceLock<Instant>) -> Result<()> {
    let cluster = Cluster::local();
    let pid = cluster.pid(n).ok_or("the node to kill is not running")?;
    let _ = at.set(Instant::now());
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()?;
    // Kills whatever is left of the node and waits until its port is closed.
    cluster.kill(n)?;
    Ok(())
}

/// What a consumer on the node about to be killed has in flight: one
/// task held unacknowledged from a plain quorum queue, and the place of
/// active consumer of a single-active-consumer queue (also holding one
/// message); a client on another node consumes both, standing by. The
/// waiter yields when each is delivered again.
struct InFlight {
    queues: Vec<String>,
    waiter: tokio::task::JoinHandle<[Option<Instant>; 2]>,
    _held: Vec<rabbitkit::Delivery>,
    other: rabbitkit::Client,
}

async fn hold_in_flight(client: &rabbitkit::Client, other_node: usize) -> Result<InFlight> {
    use rabbitkit::ConsumeOptions;
    let cluster = Cluster::local();
    let other = rk::options(1).connect(cluster.amqp_url(other_node)).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let mut queues = Vec::new();
    let mut held = Vec::new();
    for (i, sac) in [false, true].into_iter().enumerate() {
        let name = rabbitkit_test::unique_name(if sac {
            "bench.failover.partition"
        } else {
            "bench.failover.task"
        });
        let mut queue = Queue::quorum(&name);
        if sac {
            queue = queue.single_active_consumer();
        }
        queue.declare(client).await?;
        client
            .publisher()
            .publish(OutgoingMessage::new("", name.as_str(), b"held".to_vec()))
            .await?;
        let mut mine = client
            .consume(&name, ConsumeOptions::new().prefetch(1))
            .await?;
        let d = tokio::time::timeout(Duration::from_secs(20), mine.next())
            .await
            .map_err(|_| "the held task was not delivered")?
            .ok_or("consumer ended")??;
        held.push(d);
        let standby = other
            .consume(&name, ConsumeOptions::new().prefetch(1))
            .await?;
        for mut consumer in [mine, standby] {
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(Ok(d)) = consumer.next().await {
                    let _ = tx.send((i, Instant::now()));
                    let _ = d.ack().await;
                }
            });
        }
        queues.push(name);
    }
    let waiter = tokio::spawn(async move {
        let mut at = [None, None];
        while at.iter().any(Option::is_none) {
            match rx.recv().await {
                Some((i, t)) => {
                    at[i].get_or_insert(t);
                }
                None => break,
            }
        }
        at
    });
    Ok(InFlight {
        queues,
        waiter,
        _held: held,
        other,
    })
}

/// Runs the scenario.
pub async fn run(ctx: &Ctx, s: &Settings) -> Result<Report> {
    let cluster = Cluster::local();
    let client = rk::options(s.window).connect(ctx.addrs.join(",")).await?;
    let queue = rabbitkit_test::unique_name("bench.failover");
    Queue::quorum(&queue).declare(&client).await?;
    let events: Arc<Mutex<Vec<(Instant, Event)>>> = Arc::default();
    let recorder = tokio::spawn({
        let events = events.clone();
        let mut stream = client.events();
        async move {
            while let Some(ev) = stream.next().await {
                events.lock().unwrap().push((Instant::now(), ev));
            }
        }
    });
    let publisher = client.publisher();
    let mut confirmed: HashSet<u64> = HashSet::new();
    let mut report = Report::default();
    let mut steady_rates = Vec::new();
    let mut seq = 0u64;

    for round in 1..=s.rounds {
        let port = client.current_endpoint().ok_or("not connected")?.port();
        let node = cluster
            .node_for_port(port)
            .ok_or("connected to a node that is not part of the local cluster")?;
        eprintln!("  failover round {round}/{}: killing node {node}", s.rounds);
        let other_node = if node == 1 { 2 } else { 1 };
        let in_flight = hold_in_flight(&client, other_node).await?;
        let republished_before = client.stats().republished;
        let kill_at: Arc<OnceLock<Instant>> = Arc::default();
        let mut kill_task = None;
        let started = Instant::now();
        let mut sent = 0u64;
        let mut first_after: Option<Instant> = None;
        let mut pending = FuturesUnordered::new();
        let mut failed = 0u64;
        let mut errors: std::collections::BTreeMap<String, u64> = Default::default();
        let give_up = s.before + s.give_up;
        loop {
            if first_after.is_some_and(|t| t.elapsed() >= s.after) || started.elapsed() > give_up {
                break;
            }
            let due = if s.rate == 0 {
                u64::MAX
            } else {
                (started.elapsed().as_secs_f64() * s.rate as f64) as u64
            };
            while pending.len() < s.window && sent < due {
                let n = seq;
                seq += 1;
                sent += 1;
                let publish = publisher.publish(OutgoingMessage::new(
                    "",
                    queue.as_str(),
                    body_for(n, ctx.body.len()),
                ));
                pending.push(async move { (n, publish.await) });
            }
            if kill_task.is_none() && started.elapsed() >= s.before {
                steady_rates.push(sent as f64 / started.elapsed().as_secs_f64());
                let at = kill_at.clone();
                kill_task = Some(tokio::task::spawn_blocking(move || kill(node, &at)));
            }
            let done = tokio::select! {
                done = pending.next(), if !pending.is_empty() => done,
                _ = tokio::time::sleep(Duration::from_millis(1)) => None,
            };
            if let Some((n, outcome)) = done {
                match outcome {
                    Ok(_) => {
                        confirmed.insert(n);
                        if first_after.is_none()
                            && kill_at.get().is_some()
                            && client.current_endpoint().is_some_and(|e| e.port() != port)
                        {
                            first_after = Some(Instant::now());
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        *errors.entry(e.to_string()).or_insert(0u64) += 1;
                        let _ = n;
                    }
                }
            }
        }
        while let Some((n, outcome)) = pending.next().await {
            match outcome {
                Ok(_) => {
                    confirmed.insert(n);
                }
                Err(e) => {
                    failed += 1;
                    *errors.entry(e.to_string()).or_insert(0u64) += 1;
                }
            }
        }
        for (error, count) in &errors {
            eprintln!("    {count} publishes failed: {error}");
        }
        report.failed += failed;
        if let Some(task) = kill_task {
            task.await??;
        }
        let t0 = kill_at.get().copied();
        let since = |t: Instant| t0.map(|t0| t.saturating_duration_since(t0));
        let (to_disconnected, to_recovered) = {
            let evs = events.lock().unwrap();
            let after_kill = |pred: fn(&Event) -> bool| {
                evs.iter()
                    .filter(|(t, e)| t0.is_some_and(|t0| *t >= t0) && pred(e))
                    .map(|(t, _)| *t)
                    .next()
            };
            (
                after_kill(|e| matches!(e, Event::Disconnected { .. })).and_then(since),
                after_kill(|e| matches!(e, Event::Recovered { .. })).and_then(since),
            )
        };
        let new_node = client
            .current_endpoint()
            .and_then(|e| cluster.node_for_port(e.port()));
        // The held task and the partition: delivered again once the queue
        // lets the dead node's consumer go (4.3: consumer_disconnected_timeout).
        let InFlight {
            queues,
            waiter,
            _held,
            other,
        } = in_flight;
        let redone = tokio::time::timeout(Duration::from_secs(180), waiter)
            .await
            .ok()
            .and_then(|joined| joined.ok())
            .unwrap_or([None, None]);
        drop(_held);
        for queue in &queues {
            let _ = other.delete_queue(queue).await;
        }
        other.close().await;
        let r = Round {
            to_task_redone: redone[0].and_then(since),
            to_takeover: redone[1].and_then(since),
            node,
            new_node,
            to_disconnected,
            to_recovered,
            to_first_confirm: first_after.and_then(since),
            republished: client.stats().republished - republished_before,
            failed,
            error: errors.keys().next().cloned(),
        };
        eprintln!(
            "    kill→disconnected {:?}, kill→recovered {:?}, kill→first confirm {:?}, republished {}, kill→task redone {:?}, kill→partition taken over {:?}",
            r.to_disconnected,
            r.to_recovered,
            r.to_first_confirm,
            r.republished,
            r.to_task_redone,
            r.to_takeover
        );
        report.rounds.push(r);
        events.lock().unwrap().clear();

        // Bring the node back and let the quorum queue's member catch up.
        tokio::task::spawn_blocking(move || Cluster::local().start(node)).await??;
        tokio::time::sleep(s.settle).await;
    }
    report.confirmed = confirmed.len() as u64;
    report.steady_rate = crate::measure::median(steady_rates);

    // Read everything back, on a connection of its own.
    let info = client.queue_info(&queue).await?;
    let node = client
        .current_endpoint()
        .and_then(|e| cluster.node_for_port(e.port()))
        .unwrap_or(1);
    let conn = raw::connect(&cluster.amqp_url(node), "bench-failover-check").await?;
    let ch = conn.create_channel().await?;
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            "bench-check".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut counts = vec![0u32; seq as usize];
    let mut received = 0u64;
    while received < u64::from(info.messages) {
        let next = tokio::time::timeout(Duration::from_secs(30), consumer.next()).await;
        let Ok(Some(Ok(delivery))) = next else {
            eprintln!("  read back stopped at {received} of {}", info.messages);
            break;
        };
        received += 1;
        if let Some(n) = seq_of(&delivery.data)
            && let Some(c) = counts.get_mut(n as usize)
        {
            *c += 1;
        }
    }
    let _ = conn.close(200, "bye".into()).await;
    report.received = received;
    report.lost = confirmed
        .iter()
        .filter(|&&n| counts[n as usize] == 0)
        .count() as u64;
    report.duplicates = counts.iter().map(|&c| u64::from(c.saturating_sub(1))).sum();
    client.delete_queue(&queue).await?;
    recorder.abort();
    client.close().await;
    Ok(report)
}
