//! Clusters and failover: publishes numbered messages (with confirms) to a
//! quorum queue and consumes them, while you kill the node it is connected
//! to. The client moves to another node by itself, re-declares the queue,
//! re-subscribes the consumer and re-sends the publishes that were not yet
//! confirmed; at the end the program checks that every confirmed message
//! was received.
//!
//! ```text
//! terminal 1$ cargo xtask broker up                  # the local 3-node cluster
//! terminal 1$ cargo run --example failover           # until Ctrl-C
//! terminal 2$ cargo xtask broker kill 1              # the node it said it is on
//! terminal 2$ cargo xtask broker start 1             # bring it back afterwards
//! ```
//!
//! Arguments: `[COUNT]`: stop after COUNT messages instead of at Ctrl-C.
//! It prints the client's events (`client.events()`), a progress line each
//! second, and at the end the totals and `lost: 0` (it exits with status 1
//! if a confirmed message never arrived). It publishes about 200 messages a
//! second to the quorum queue `failover_queue`, which it deletes when it
//! starts and when it ends. Chapter "Clusters and failover" of the book.
//!
//! With `--features opentelemetry` it also prints the trace id of every
//! 1000th message where it was published and where it was received (the
//! same id, also for a message sent again after a failover): each publish
//! runs in a span of its own, recorded by an OpenTelemetry SDK in the
//! process (no exporter), and carries it in its `traceparent` header.
//!
//! ```text
//! terminal 1$ cargo run --features opentelemetry --example failover 5000
//! ```
//!
//! Needs the local 3-node cluster (`cargo xtask broker up`), or `AMQP_ADDR`
//! listing the nodes of a cluster of your own.

// ANCHOR: code
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rabbitkit::{Options, Queue, Report};
use tokio::time::Instant;

const QUEUE: &str = "failover_queue";

/// How many times each message number was delivered.
type Received = Arc<Mutex<HashMap<u64, u32>>>;

#[tokio::main]
async fn main() -> Result<(), Report> {
    let count: Option<u64> = match std::env::args().nth(1) {
        Some(arg) => Some(arg.parse()?),
        None => None,
    };
    #[cfg(feature = "opentelemetry")]
    let _tracer = traces::install();

    // ANCHOR: events
    let client = Options::new()
        .connection_name("rabbitkit failover example")
        // AMQP_ADDR, or the three nodes of `cargo xtask broker up`.
        .connect_env_or(
            "amqp://127.0.0.1:5672/%2f,amqp://127.0.0.1:5673/%2f,amqp://127.0.0.1:5674/%2f",
        )
        .await?;
    let mut events = client.events();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            println!(" [!] {event}");
        }
    });
    // ANCHOR_END: events
    if let Some(endpoint) = client.current_endpoint() {
        println!(" [*] Connected to {endpoint}");
        if endpoint.host() == "127.0.0.1" && (5672..=5674).contains(&endpoint.port()) {
            println!(
                " [*] Kill that node with `cargo xtask broker kill {}` in another terminal",
                endpoint.port() - 5671
            );
        }
    }

    // ANCHOR: queue
    // A quorum queue is replicated on every node: it outlives any one of them.
    client.delete_queue(QUEUE).await?;
    let queue = Queue::quorum(QUEUE).declare(&client).await?;
    // ANCHOR_END: queue

    // ANCHOR: consume
    let received = Received::default();
    let mut messages = queue.subscribe::<u64>().await?;
    let consuming = tokio::spawn({
        let received = received.clone();
        async move {
            while let Some(message) = messages.next().await {
                match message {
                    Ok(message) => {
                        #[cfg(feature = "opentelemetry")]
                        traces::received(message.body, message.delivery());
                        *received.lock().unwrap().entry(message.body).or_default() += 1;
                        // After a failover this ack can fail (its channel is
                        // gone); the broker then delivers the message again.
                        let _ = message.ack().await;
                    }
                    Err(e) => println!(" [!] {e}"),
                }
            }
        }
    });
    // ANCHOR_END: consume

    match count {
        Some(n) => println!(" [*] Publishing {n} messages"),
        None => println!(" [*] Publishing. To stop press CTRL+C"),
    }
    let (sent, confirmed) = publish(&queue, count, &received).await;

    // ANCHOR: check
    // Every confirmed message must arrive; give the consumer time to catch up.
    let deadline = Instant::now() + Duration::from_secs(60);
    let lost = loop {
        let missing = {
            let got = received.lock().unwrap();
            confirmed.iter().filter(|n| !got.contains_key(n)).count()
        };
        if missing == 0 || Instant::now() > deadline {
            break missing;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = tokio::signal::ctrl_c() => break missing,
        }
    };
    let (distinct, deliveries) = {
        let got = received.lock().unwrap();
        (got.len(), got.values().map(|&n| u64::from(n)).sum::<u64>())
    };
    let stats = client.stats();
    println!(
        " [x] Sent {sent}, confirmed {}, received {distinct} (duplicate deliveries: {})",
        confirmed.len(),
        deliveries - distinct as u64,
    );
    println!(
        " [x] Connections lost: {}, recoveries: {}, publishes sent again: {}",
        stats.disconnects, stats.recoveries, stats.republished
    );
    println!(" [x] lost: {lost}");
    // ANCHOR_END: check

    consuming.abort();
    queue.delete().await?;
    client.close().await;
    if lost > 0 {
        std::process::exit(1);
    }
    Ok(())
}

// ANCHOR: publish
/// Publishes 0, 1, 2, ... about 200 a second, many awaiting their confirm
/// at once, until `count` or Ctrl-C. Returns how many were sent and which
/// were confirmed.
async fn publish(queue: &Queue, count: Option<u64>, received: &Received) -> (u64, Vec<u64>) {
    let mut ticks = tokio::time::interval(Duration::from_millis(5));
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let mut in_flight = FuturesUnordered::new();
    let (mut sent, mut confirmed, mut stopping) = (0u64, Vec::new(), false);
    loop {
        let publishing = !stopping && count.is_none_or(|c| sent < c);
        if !publishing && in_flight.is_empty() {
            return (sent, confirmed);
        }
        tokio::select! {
            _ = ticks.tick(), if publishing => {
                let n = sent;
                sent += 1;
                // Resolves once the broker confirms it; a publish cut off
                // by a failover is sent again, after the recovery.
                let send = async move { (n, queue.send(&n).await) };
                #[cfg(feature = "opentelemetry")]
                let send = traces::sent(n, send);
                in_flight.push(send);
            }
            Some((n, result)) = in_flight.next(), if !in_flight.is_empty() => match result {
                Ok(_) => confirmed.push(n),
                Err(e) => println!(" [!] message {n} not confirmed: {e}"),
            },
            _ = progress.tick() => {
                let got = received.lock().unwrap().len();
                println!(" [x] sent {sent}, confirmed {}, received {got}", confirmed.len());
            }
            _ = &mut ctrl_c, if !stopping => {
                stopping = true;
                println!(" [*] Stopping: waiting for the last confirms");
            }
        }
    }
}
// ANCHOR_END: publish
// ANCHOR_END: code

// ANCHOR: traces
/// The trace ids of every 1000th message (the `opentelemetry` feature).
#[cfg(feature = "opentelemetry")]
mod traces {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing::Instrument;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    /// Makes every `tracing` span an OpenTelemetry span (ids only: the
    /// provider has no exporter). Keep the provider while the program runs.
    pub fn install() -> SdkTracerProvider {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("failover"));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("no other subscriber");
        provider
    }

    /// Runs the publish of message `n` in a trace of its own.
    pub fn sent<F: Future>(n: u64, publish: F) -> impl Future<Output = F::Output> {
        let span = tracing::info_span!("failover message", n);
        if n.is_multiple_of(1000) {
            let trace = span.context().span().span_context().trace_id();
            println!(" [t] message {n} published in trace {trace}");
        }
        publish.instrument(span)
    }

    /// Prints the trace that message `n` carries.
    pub fn received(n: u64, delivery: &rabbitkit::Delivery) {
        if n.is_multiple_of(1000) {
            let trace = delivery.trace_context().span().span_context().trace_id();
            println!(" [t] message {n} received in trace {trace}");
        }
    }
}
// ANCHOR_END: traces
