//! Publisher confirms: three ways of waiting for the broker to confirm that
//! it has taken responsibility for each message, timed on the same number
//! of messages.
//!
//! 1. individually: send one message, wait for its confirm, send the next;
//! 2. in batches: send 100 messages, wait for their 100 confirms, go on;
//! 3. streamed: keep up to 1,000 messages in flight, handling each confirm
//!    as it arrives (and sending the next message at once).
//!
//! ```text
//! $ cargo run --example publisher_confirms            # 10,000 messages
//! $ cargo run --release --example publisher_confirms 50000
//! ```
//!
//! Arguments: `[COUNT]`, default 10000. Each strategy publishes to a
//! temporary queue of its own, deleted afterwards. The numbers depend on
//! the machine and the network; what matters is how they compare. Chapter
//! "Publisher confirms" of the book.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.
//!
//! Expected output:
//!
//! ```text
//! $ cargo run --example publisher_confirms   (the times vary)
//!  [x] Published 10000 messages individually in 6829 ms
//!  [x] Published 10000 messages in batches of 100 in 664 ms
//!  [x] Published 10000 messages and handled confirms asynchronously in 560 ms
//! ```

// ANCHOR: code
// ANCHOR: main
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::try_join_all;
use rabbitkit::{Client, Options, Queue, Report};

type Error = Box<dyn std::error::Error + Send + Sync>;

const BATCH_SIZE: usize = 100;
const IN_FLIGHT: usize = 1_000;

#[tokio::main]
async fn main() -> Result<(), Report> {
    let count: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 10_000,
    };
    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    let messages: Vec<String> = (0..count).map(|i| i.to_string()).collect();

    let took = individually(&client, &messages).await?;
    println!(
        " [x] Published {count} messages individually in {} ms",
        took.as_millis()
    );
    let took = in_batches(&client, &messages).await?;
    println!(
        " [x] Published {count} messages in batches of {BATCH_SIZE} in {} ms",
        took.as_millis()
    );
    let took = streamed(&client, &messages).await?;
    println!(
        " [x] Published {count} messages and handled confirms asynchronously in {} ms",
        took.as_millis()
    );

    client.close().await;
    Ok(())
}
// ANCHOR_END: main

// ANCHOR: individually
/// One at a time: each `send` resolves when the broker confirms the message.
async fn individually(client: &Client, messages: &[String]) -> Result<Duration, Error> {
    let queue = Queue::temporary().declare(client).await?;
    let start = Instant::now();
    for message in messages {
        queue.send(message).await?;
    }
    let took = start.elapsed();
    queue.delete().await?;
    Ok(took)
}
// ANCHOR_END: individually

// ANCHOR: batches
/// A batch at a time: start `BATCH_SIZE` sends, then wait for all of them.
async fn in_batches(client: &Client, messages: &[String]) -> Result<Duration, Error> {
    let queue = Queue::temporary().declare(client).await?;
    let start = Instant::now();
    for batch in messages.chunks(BATCH_SIZE) {
        try_join_all(batch.iter().map(|message| queue.send(message))).await?;
    }
    let took = start.elapsed();
    queue.delete().await?;
    Ok(took)
}
// ANCHOR_END: batches

// ANCHOR: streamed
/// Streamed: up to `IN_FLIGHT` sends at once; as each confirm arrives the
/// next message goes out.
async fn streamed(client: &Client, messages: &[String]) -> Result<Duration, Error> {
    let queue = Queue::temporary().declare(client).await?;
    let start = Instant::now();
    let mut confirms = futures::stream::iter(messages)
        .map(|message| queue.send(message))
        .buffer_unordered(IN_FLIGHT);
    while let Some(confirm) = confirms.next().await {
        confirm?;
    }
    let took = start.elapsed();
    drop(confirms);
    queue.delete().await?;
    Ok(took)
}
// ANCHOR_END: streamed
// ANCHOR_END: code
