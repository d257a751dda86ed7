//! The `stream-protocol` scenario (issue 29): the stream protocol through
//! rabbitkit-stream beside raw `rabbitmq-stream-client` driven well, and
//! beside rabbitkit's AMQP 0-9-1 stream row of the same run (`streams`).
//!
//! Each round, for each client: a fresh stream on the cluster, `n`
//! confirmed publishes of the bench's body (a `String`) by one named
//! producer with `window` in flight, then one consumer reading all `n`
//! from the first offset. Rates are messages per second of wall time;
//! client CPU per message is this process's CPU time over the phase.
//!
//! - rabbitkit-stream: `StreamProducer::publish` (typed, the codec), the
//!   confirms awaited oldest first; `StreamConsumer<String>`.
//! - raw: `Producer<Dedup>::send` with a callback that releases a semaphore
//!   permit (`window` permits), the body's bytes as they are, the
//!   library's default batch size; `Consumer` read to `n`,
//!   `String::from_utf8` of each body.
//!
//! Then the same with a super stream of 3 partitions: `n` messages over
//! 100 routing keys (`customer-0..99`, in turn), hash routing.
//! - rabbitkit-stream: `SuperStreamProducer::publish(key, ..)` (a named
//!   `StreamProducer` per partition), `SuperStreamConsumer<String>`.
//! - raw: `SuperStreamProducer` with `HashRoutingMurmurStrategy` (the key in
//!   an application property its extractor reads; no deduplication: the
//!   library's super stream producer has no name), a semaphore permit per
//!   message in flight; `SuperStreamConsumer` read to `n`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use rabbitkit_stream::{OffsetSpec, StreamClient, StreamOptions, StreamSpec, SuperStreamSpec};
use rabbitkit_test::unique_name;
use rabbitmq_stream_client::Environment;
use rabbitmq_stream_client::types::{
    HashRoutingMurmurStrategy, Message, OffsetSpecification, RoutingStrategy, SimpleValue,
};
use tokio::sync::Semaphore;

use crate::Ctx;
use crate::measure::{Meter, Result, Sample, median};

/// One client's samples.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Publish phase, per round.
    pub publish: Vec<Sample>,
    /// Read phase, per round.
    pub read: Vec<Sample>,
}

/// What the scenario measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Messages per run.
    pub n: u64,
    /// Publishes in flight.
    pub window: usize,
    /// rabbitkit-stream.
    pub kit: Row,
    /// raw rabbitmq-stream-client.
    pub raw: Row,
    /// rabbitkit-stream, a super stream of [`PARTITIONS`] partitions.
    pub kit_super: Row,
    /// raw rabbitmq-stream-client, the same super stream.
    pub raw_super: Row,
}

/// The super stream rows' partitions.
pub const PARTITIONS: usize = 3;
/// The super stream rows' routing keys, used in turn.
const KEYS: usize = 100;

const STREAM_PORT: u16 = 5552;

fn stream_url() -> String {
    format!("rabbitmq-stream://guest:guest@127.0.0.1:{STREAM_PORT}/%2f")
}

async fn kit_round(
    ctx: &Ctx,
    client: &StreamClient,
    n: u64,
    window: usize,
) -> Result<(Sample, Sample)> {
    let stream = unique_name("bench.sp.kit");
    client.declare_stream(StreamSpec::new(&stream)).await?;
    let body = String::from_utf8_lossy(&ctx.body).into_owned();
    let producer = client.producer::<String>(&stream, "bench").build().await?;
    let meter = Meter::start(&ctx.pids);
    let mut inflight = VecDeque::with_capacity(window);
    for _ in 0..n {
        inflight.push_back(producer.publish(&body));
        if inflight.len() >= window
            && let Some(c) = inflight.pop_front()
        {
            c.await?;
        }
    }
    for c in inflight {
        c.await?;
    }
    let publish = meter.finish(n);
    producer.close().await?;

    let mut consumer = client
        .consumer::<String>(&stream)
        .offset(OffsetSpec::First)
        .build()
        .await?;
    let meter = Meter::start(&ctx.pids);
    let mut read = 0;
    while read < n {
        let m = consumer.next().await.ok_or("consumer ended")??;
        std::hint::black_box(&m.body);
        read += 1;
    }
    let read = meter.finish(read);
    consumer.close().await?;
    client.delete_stream(&stream).await?;
    Ok((publish, read))
}

async fn raw_round(
    ctx: &Ctx,
    client: &StreamClient,
    env: &Environment,
    n: u64,
    window: usize,
) -> Result<(Sample, Sample)> {
    let stream = unique_name("bench.sp.raw");
    client.declare_stream(StreamSpec::new(&stream)).await?;
    let body = String::from_utf8_lossy(&ctx.body).into_owned();
    let mut producer = env.producer().name("bench").build(&stream).await?;
    let permits = Arc::new(Semaphore::new(window));
    let confirmed = Arc::new(AtomicU64::new(0));
    let meter = Meter::start(&ctx.pids);
    for _ in 0..n {
        let permit = permits.clone().acquire_owned().await?;
        let confirmed = confirmed.clone();
        let msg = Message::builder().body(body.as_bytes().to_vec()).build();
        producer
            .send(msg, move |r| {
                if matches!(r, Ok(ref s) if s.confirmed()) {
                    confirmed.fetch_add(1, Ordering::Relaxed);
                }
                drop(permit);
                async {}
            })
            .await?;
    }
    // Every permit back: every confirm in.
    let _all = permits.acquire_many(window as u32).await?;
    let publish = meter.finish(n);
    if confirmed.load(Ordering::Relaxed) != n {
        return Err(format!(
            "raw: {} of {n} confirmed",
            confirmed.load(Ordering::Relaxed)
        )
        .into());
    }
    producer.close().await?;

    // The replica the client picks may not serve the stream yet
    // (STREAM_NOT_AVAILABLE): tried again, as a careful application would.
    let mut attempts = 0;
    let mut consumer = loop {
        match env
            .consumer()
            .offset(OffsetSpecification::First)
            .build(&stream)
            .await
        {
            Ok(c) => break c,
            Err(e) if attempts < 50 => {
                attempts += 1;
                eprintln!("  raw consumer: {e}; again");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let meter = Meter::start(&ctx.pids);
    let mut read = 0;
    while read < n {
        let d = consumer.next().await.ok_or("consumer ended")??;
        let s = String::from_utf8(d.message().data().unwrap_or_default().to_vec())?;
        std::hint::black_box(&s);
        read += 1;
    }
    let read = meter.finish(read);
    let _ = consumer.handle().close().await;
    client.delete_stream(&stream).await?;
    Ok((publish, read))
}

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("customer-{i}")).collect()
}

async fn kit_super_round(
    ctx: &Ctx,
    client: &StreamClient,
    n: u64,
    window: usize,
) -> Result<(Sample, Sample)> {
    let name = unique_name("bench.ss.kit");
    client
        .declare_super_stream(SuperStreamSpec::new(&name, PARTITIONS))
        .await?;
    let body = String::from_utf8_lossy(&ctx.body).into_owned();
    let keys = keys();
    let producer = client
        .super_stream_producer::<String>(&name, "bench")
        .build()
        .await?;
    let meter = Meter::start(&ctx.pids);
    let mut inflight = VecDeque::with_capacity(window);
    for i in 0..n {
        inflight.push_back(producer.publish(&keys[i as usize % KEYS], &body).await?);
        if inflight.len() >= window
            && let Some(c) = inflight.pop_front()
        {
            c.await?;
        }
    }
    for c in inflight {
        c.await?;
    }
    let publish = meter.finish(n);
    producer.close().await?;

    let mut consumer = client
        .super_stream_consumer::<String>(&name)
        .offset(OffsetSpec::First)
        .build()
        .await?;
    let meter = Meter::start(&ctx.pids);
    let mut read = 0;
    while read < n {
        let m = consumer.next().await.ok_or("consumer ended")??;
        std::hint::black_box(&m.body);
        read += 1;
    }
    let read = meter.finish(read);
    consumer.close().await?;
    client.delete_super_stream(&name).await?;
    Ok((publish, read))
}

/// The raw producer's routing key: the message's `key` application property.
fn routing_key(m: &Message) -> String {
    match m.application_properties().and_then(|p| p.get("key")) {
        Some(SimpleValue::String(s)) => s.clone(),
        _ => String::new(),
    }
}

async fn raw_super_round(
    ctx: &Ctx,
    client: &StreamClient,
    env: &Environment,
    n: u64,
    window: usize,
) -> Result<(Sample, Sample)> {
    let name = unique_name("bench.ss.raw");
    client
        .declare_super_stream(SuperStreamSpec::new(&name, PARTITIONS))
        .await?;
    let body = String::from_utf8_lossy(&ctx.body).into_owned();
    let keys = keys();
    let mut producer = env
        .super_stream_producer(RoutingStrategy::HashRoutingStrategy(
            HashRoutingMurmurStrategy {
                routing_extractor: &routing_key,
            },
        ))
        .build(&name)
        .await?;
    let permits = Arc::new(Semaphore::new(window));
    let confirmed = Arc::new(AtomicU64::new(0));
    let meter = Meter::start(&ctx.pids);
    for i in 0..n {
        permits.acquire().await?.forget();
        let (permits, confirmed) = (permits.clone(), confirmed.clone());
        let msg = Message::builder()
            .application_properties()
            .insert("key", keys[i as usize % KEYS].as_str())
            .message_builder()
            .body(body.as_bytes().to_vec())
            .build();
        producer
            .send(msg, move |r| {
                if matches!(r, Ok(ref s) if s.confirmed()) {
                    confirmed.fetch_add(1, Ordering::Relaxed);
                }
                permits.add_permits(1);
                async {}
            })
            .await?;
    }
    let _all = permits.acquire_many(window as u32).await?;
    let publish = meter.finish(n);
    if confirmed.load(Ordering::Relaxed) != n {
        return Err(format!(
            "raw super stream: {} of {n} confirmed",
            confirmed.load(Ordering::Relaxed)
        )
        .into());
    }
    producer.close().await?;

    let mut consumer = env
        .super_stream_consumer()
        .offset(OffsetSpecification::First)
        .build(&name)
        .await?;
    let meter = Meter::start(&ctx.pids);
    let mut read = 0;
    while read < n {
        let d = consumer.next().await.ok_or("consumer ended")??;
        let s = String::from_utf8(d.message().data().unwrap_or_default().to_vec())?;
        std::hint::black_box(&s);
        read += 1;
    }
    let read = meter.finish(read);
    let _ = consumer.handle().close().await;
    client.delete_super_stream(&name).await?;
    Ok((publish, read))
}

/// Runs the scenario `rounds` times, the order of the two clients swapped
/// every other round.
pub async fn run(ctx: &Ctx, n: u64, window: usize, rounds: usize) -> Result<Report> {
    let client = StreamOptions::new()
        .connection_name("rabbitkit-bench")
        .connect(stream_url())
        .await?;
    let env = Environment::builder()
        .host("127.0.0.1")
        .port(STREAM_PORT)
        .build()
        .await?;
    let mut kit = Row::default();
    let mut raw = Row::default();
    let mut kit_super = Row::default();
    let mut raw_super = Row::default();
    for round in 0..rounds {
        for which in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            let (label, (p, r)) = if which == 0 {
                (
                    "rabbitkit-stream",
                    kit_round(ctx, &client, n, window).await?,
                )
            } else {
                (
                    "raw rabbitmq-stream-client",
                    raw_round(ctx, &client, &env, n, window).await?,
                )
            };
            eprintln!(
                "  stream-protocol [{label}] round {}: publish {:.0}/s ({:.2} µs CPU/msg), read {:.0}/s ({:.2} µs CPU/msg)",
                round + 1,
                p.rate(),
                p.cpu_us(),
                r.rate(),
                r.cpu_us()
            );
            let row = if which == 0 { &mut kit } else { &mut raw };
            row.publish.push(p);
            row.read.push(r);
        }
        for which in if round % 2 == 0 { [0, 1] } else { [1, 0] } {
            let (label, (p, r)) = if which == 0 {
                (
                    "rabbitkit-stream super stream",
                    kit_super_round(ctx, &client, n, window).await?,
                )
            } else {
                (
                    "raw rabbitmq-stream-client super stream",
                    raw_super_round(ctx, &client, &env, n, window).await?,
                )
            };
            eprintln!(
                "  stream-protocol [{label}] round {}: publish {:.0}/s ({:.2} µs CPU/msg), read {:.0}/s ({:.2} µs CPU/msg)",
                round + 1,
                p.rate(),
                p.cpu_us(),
                r.rate(),
                r.cpu_us()
            );
            let row = if which == 0 {
                &mut kit_super
            } else {
                &mut raw_super
            };
            row.publish.push(p);
            row.read.push(r);
        }
    }
    Ok(Report {
        n,
        window,
        kit,
        raw,
        kit_super,
        raw_super,
    })
}

/// The section, in Markdown; `amqp` is the AMQP 0-9-1 stream row of the
/// same run (publish and read msgs/s), when the `streams` scenario ran.
pub fn render(r: &Report, amqp: Option<(f64, f64)>) -> String {
    use std::fmt::Write;
    let med = |v: &[Sample], f: fn(&Sample) -> f64| median(v.iter().map(f).collect());
    let rounds = r.kit.publish.len();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Streams over the stream protocol (rabbitkit-stream vs raw rabbitmq-stream-client)\n"
    );
    let _ = writeln!(
        out,
        "{} messages published with confirms by one named producer ({} in flight) into a fresh stream, \
         then read from the first offset by one consumer; medians of {rounds} rounds. Client CPU: this \
         process's CPU time over the phase per message. The super stream rows: the same into a super \
         stream of {PARTITIONS} partitions, over {KEYS} routing keys in turn (hash routing), read by \
         one consumer of every partition (the raw library's super stream producer has no name, so no \
         deduplication).\n",
        r.n, r.window
    );
    let _ = writeln!(
        out,
        "| client | publish msgs/s | client CPU / msg | read msgs/s | client CPU / msg |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    let figures = |row: &Row| {
        (
            med(&row.publish, Sample::rate),
            med(&row.publish, Sample::cpu_us),
            med(&row.read, Sample::rate),
            med(&row.read, Sample::cpu_us),
        )
    };
    let kit = figures(&r.kit);
    let raw = figures(&r.raw);
    let kit_super = figures(&r.kit_super);
    let raw_super = figures(&r.raw_super);
    let super_label = |who: &str| format!("{who}, super stream of {PARTITIONS} partitions");
    for (label, f) in [
        ("rabbitkit-stream".to_owned(), kit),
        ("raw rabbitmq-stream-client".to_owned(), raw),
        (super_label("rabbitkit-stream"), kit_super),
        (super_label("raw rabbitmq-stream-client"), raw_super),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {:.0} | {:.2} µs | {:.0} | {:.2} µs |",
            f.0, f.1, f.2, f.3
        );
    }
    let mark = |ok: bool| if ok { "met" } else { "not met" };
    let _ = writeln!(out, "\nTargets (issue 29):\n");
    let _ = writeln!(
        out,
        "- ≥ 0.9× raw: publish {:.2}× ({}), read {:.2}× ({})",
        kit.0 / raw.0,
        mark(kit.0 / raw.0 >= 0.9),
        kit.2 / raw.2,
        mark(kit.2 / raw.2 >= 0.9)
    );
    let _ = writeln!(
        out,
        "- client CPU ≤ 1.1× raw: publish {:.2}× ({}), read {:.2}× ({})",
        kit.1 / raw.1,
        mark(kit.1 / raw.1 <= 1.1),
        kit.3 / raw.3,
        mark(kit.3 / raw.3 <= 1.1)
    );
    let _ = writeln!(
        out,
        "- super stream, ≥ 0.9× raw: publish {:.2}× ({}), read {:.2}× ({}); client CPU ≤ 1.1× raw: \
         publish {:.2}× ({}), read {:.2}× ({})",
        kit_super.0 / raw_super.0,
        mark(kit_super.0 / raw_super.0 >= 0.9),
        kit_super.2 / raw_super.2,
        mark(kit_super.2 / raw_super.2 >= 0.9),
        kit_super.1 / raw_super.1,
        mark(kit_super.1 / raw_super.1 <= 1.1),
        kit_super.3 / raw_super.3,
        mark(kit_super.3 / raw_super.3 <= 1.1)
    );
    match amqp {
        Some((p, rd)) => {
            let _ = writeln!(
                out,
                "- ≥ 5× the AMQP 0-9-1 stream row of this run ({p:.0} publish, {rd:.0} read msgs/s): \
                 publish {:.1}× ({}), read {:.1}× ({})",
                kit.0 / p,
                mark(kit.0 / p >= 5.0),
                kit.2 / rd,
                mark(kit.2 / rd >= 5.0)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "- ≥ 5× the AMQP 0-9-1 stream rows: not compared (the `streams` scenario did not run)"
            );
        }
    }
    out
}
