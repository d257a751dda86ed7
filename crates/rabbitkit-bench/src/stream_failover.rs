//! The `stream-failover` scenario (issue 29): a SIGKILL of the stream
//! leader's node while a named rabbitkit-stream producer publishes.
//!
//! Each round: a fresh stream (3 replicas), a producer named
//! `bench-failover` publishing `n` numbered messages with `window`
//! confirms in flight, the leader's node SIGKILLed after a quarter of them;
//! every confirm awaited. Then the whole stream is read from the first
//! offset and compared with `0..n`: messages **lost** (confirmed, not in
//! the stream), **duplicated** (in the stream more than once), and the
//! time from the kill until the producer was publishing again (its
//! `Reconnected` event). The killed node is started again before the next
//! round. rabbitkit-stream only: no other Rust stream client fails over.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rabbitkit_stream::{OffsetSpec, StreamEvent, StreamOptions, StreamSpec};
use rabbitkit_test::{Cluster, unique_name};

use crate::measure::Result;

/// One kill.
#[derive(Debug, Clone)]
pub struct Round {
    /// The node killed (1..=3).
    pub node: usize,
    /// Kill → the producer's `Reconnected` event.
    pub resumed: Duration,
    /// Messages re-sent after the reconnection (unconfirmed at the kill).
    pub resent: usize,
    /// Confirmed messages missing from the stream.
    pub lost: u64,
    /// Messages in the stream more than once.
    pub duplicated: u64,
}

/// What the scenario measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Messages per round.
    pub n: u64,
    /// Publishes in flight.
    pub window: usize,
    /// One per kill.
    pub rounds: Vec<Round>,
}

/// The stream listeners of the local cluster.
fn stream_urls() -> Vec<String> {
    (5552..=5554)
        .map(|p| format!("rabbitmq-stream://guest:guest@127.0.0.1:{p}/%2f"))
        .collect()
}

/// Runs `rounds` kills; leaves the whole cluster running.
pub async fn run(n: u64, window: usize, rounds: usize) -> Result<Report> {
    let mut out = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let r = one(n, window).await;
        tokio::task::spawn_blocking(|| Cluster::local().up()).await??;
        let r = r?;
        eprintln!(
            "  stream-failover round {round}/{rounds}: node {} killed, publishing again after {:.0} ms, {} re-sent, {} lost, {} duplicated",
            r.node,
            r.resumed.as_secs_f64() * 1000.0,
            r.resent,
            r.lost,
            r.duplicated
        );
        out.push(r);
    }
    Ok(Report {
        n,
        window,
        rounds: out,
    })
}

async fn one(n: u64, window: usize) -> Result<Round> {
    let client = StreamOptions::new()
        .connection_name("rabbitkit-bench")
        .connect(stream_urls())
        .await?;
    let stream = unique_name("bench.stream.failover");
    client
        .declare_stream(
            StreamSpec::new(&stream)
                .max_age(Duration::from_secs(3600))
                .initial_cluster_size(3),
        )
        .await?;
    let leader = client.stream_nodes(&stream).await?[0].clone();
    let port: u16 = leader
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or("no leader port")?;
    // The stream port of node N is its AMQP port - 120.
    let node = Cluster::local()
        .node_for_port(port + 120)
        .ok_or("the leader is not a local node")?;
    let producer = client
        .producer::<u64>(&stream, "bench-failover")
        .build()
        .await?;
    let mut events = producer.events();
    let killed_at: Arc<OnceLock<Instant>> = Arc::default();
    let watch = {
        let killed_at = killed_at.clone();
        tokio::spawn(async move {
            let (mut resumed, mut resent) = (None, 0);
            while let Some(e) = events.next().await {
                match e {
                    StreamEvent::Reconnected { .. } if resumed.is_none() => {
                        resumed = killed_at.get().map(|k| k.elapsed());
                    }
                    StreamEvent::Resent { count, .. } => resent += count,
                    _ => {}
                }
                if resumed.is_some() && resent > 0 {
                    break;
                }
            }
            (resumed, resent)
        })
    };
    let mut inflight = VecDeque::with_capacity(window);
    let mut kill = None;
    for i in 0..n {
        inflight.push_back(producer.publish(&i));
        if inflight.len() >= window {
            inflight.pop_front().ok_or("empty")?.await?;
        }
        if i == n / 4 {
            let at = killed_at.clone();
            kill = Some(tokio::task::spawn_blocking(move || -> Result<()> {
                let cluster = Cluster::local();
                let pid = cluster
                    .pid(node)
                    .ok_or("the leader's node is not running")?;
                let _ = at.set(Instant::now());
                std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status()?;
                cluster.kill(node)?;
                Ok(())
            }));
        }
    }
    for c in inflight {
        c.await?;
    }
    producer.close().await?;
    if let Some(k) = kill {
        k.await??;
    }
    let (resumed, resent) = tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .map_err(|_| "no Reconnected event after the kill")??;
    let resumed = resumed.ok_or("no Reconnected event after the kill")?;

    // The whole stream against 0..n.
    let mut seen = vec![0u32; n as usize];
    let mut reader = client
        .consumer::<u64>(&stream)
        .offset(OffsetSpec::First)
        .build()
        .await?;
    let mut read = 0u64;
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), reader.next()).await {
        let m = m?;
        if let Some(s) = seen.get_mut(m.body as usize) {
            *s += 1;
        }
        read += 1;
        if read >= n && seen.iter().all(|&s| s > 0) {
            // Give a duplicate the chance to show.
            if let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(500), reader.next()).await
                && let Some(s) = seen.get_mut(m?.body as usize)
            {
                *s += 1;
            }
            break;
        }
    }
    reader.close().await?;
    let _ = client.delete_stream(&stream).await;
    Ok(Round {
        node,
        resumed,
        resent,
        lost: seen.iter().filter(|&&s| s == 0).count() as u64,
        duplicated: seen.iter().map(|&s| u64::from(s.saturating_sub(1))).sum(),
    })
}

/// The scenario's section of the report.
pub fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Stream failover: SIGKILL of the stream leader's node mid-publish (rabbitkit-stream)\n\n\
         {} confirmed publishes of one named producer per round, {} in flight, the leader's node \
         SIGKILLed after a quarter; then the whole stream read and compared with what was sent.\n\n\
         | round | node killed | kill → publishing again | re-sent | lost | duplicated |\n\
         |---:|---:|---:|---:|---:|---:|",
        r.n, r.window
    );
    for (i, round) in r.rounds.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} ms | {} | {} | {} |",
            i + 1,
            round.node,
            round.resumed.as_secs_f64() * 1000.0,
            round.resent,
            round.lost,
            round.duplicated
        );
    }
    let lost: u64 = r.rounds.iter().map(|x| x.lost).sum();
    let dup: u64 = r.rounds.iter().map(|x| x.duplicated).sum();
    let _ = writeln!(
        out,
        "\n- issue 29 target (0 lost, 0 duplicated): **{}** ({lost} lost, {dup} duplicated over {} rounds).",
        if lost == 0 && dup == 0 {
            "met"
        } else {
            "not met"
        },
        r.rounds.len()
    );
    out
}
