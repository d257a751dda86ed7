//! Soak run: confirmed publishing and consuming on a quorum queue for
//! minutes, while the node the client is connected to is SIGKILLed every
//! 30 s (and started again). Reports messages sent, confirmed, received,
//! lost (confirmed but never received: must be 0), duplicates, and the
//! process's resident memory over time (must stay flat).
//!
//! ```text
//! cargo xtask soak                      # 10 minutes, a kill every 30 s
//! cargo xtask soak -- --minutes 2 --kill-every 20 --rate 2000
//! ```
//! Needs the local 3-node cluster (it kills its nodes); refuses to run
//! against `AMQP_ADDR`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rabbitkit::{ConsumeOptions, Event, Options, OutgoingMessage, Queue};
use rabbitkit_test::Cluster;

struct Args {
    minutes: f64,
    kill_every: u64,
    rate: u64,
    window: usize,
}

fn args() -> Args {
    let mut a = Args {
        minutes: 10.0,
        kill_every: 30,
        rate: 2000,
        window: 256,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--minutes" => a.minutes = v.parse().expect("--minutes N"),
            "--kill-every" => a.kill_every = v.parse().expect("--kill-every SECONDS"),
            "--rate" => a.rate = v.parse().expect("--rate MSGS_PER_S"),
            "--window" => a.window = v.parse().expect("--window N"),
            "--" => {
                i += 1;
                continue;
            }
            other => panic!(
                "unknown argument {other}; see the header of crates/rabbitkit-soak/src/main.rs"
            ),
        }
        i += 2;
    }
    a
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
    let a = args();
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

    // Killer: the publisher's node, every `kill_every` seconds.
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicU64::new(0));
    let killer = tokio::spawn({
        let (client, stop, kills) = (client.clone(), stop.clone(), kills.clone());
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(a.kill_every)).await;
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
        "\nRSS every 10 s (KiB): {}",
        rss.iter()
            .map(|(_, r)| r.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = queue.delete().await;
    client.close().await;
    if missing > 0 {
        std::process::exit(1);
    }
}
