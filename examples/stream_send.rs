//! Streams, the writer: appends each of its arguments as one message to the
//! stream `events` (default: one message, `Hello World!`). A stream keeps
//! what it is sent: every reader reads it all, from where it chooses.
//!
//! Shows: declaring a stream with its retention (by age and by size),
//! publishing to it like to any queue (persistent, confirmed: replicated on
//! a majority of the nodes when `send` returns).
//!
//! ```text
//! terminal 1$ cargo run --example stream_send -- one two three
//! terminal 2$ cargo run --example stream_receive              # from the first message
//! terminal 2$ cargo run --example stream_receive -- next      # only new ones
//! terminal 1$ cargo run --example stream_send -- four
//! ```
//!
//! `STREAM=name` uses another stream (the tests do). It connects to
//! `AMQP_ADDR`, or to the three nodes of the local cluster. Chapter
//! "Beyond one queue" of the book.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.

// ANCHOR: code
use std::time::Duration;

use rabbitkit::{Client, DeclareError, Options, Queue, Report};

// ANCHOR: declare
/// The stream both programs declare (the same way: a stream declared again
/// with other retention settings is an error).
async fn declare_events(client: &Client) -> Result<Queue, DeclareError> {
    let name = std::env::var("STREAM").unwrap_or_else(|_| "events".into());
    Queue::stream(name)
        .max_age(Duration::from_secs(7 * 24 * 3600)) // drop segments older than a week
        .max_length_bytes(1_000_000_000) // ... or past 1 GB
        .stream_max_segment_size_bytes(50_000_000) // retention drops whole segments
        .declare(client)
        .await
}
// ANCHOR_END: declare

#[tokio::main]
async fn main() -> Result<(), Report> {
    let mut messages: Vec<String> = std::env::args().skip(1).collect();
    if messages.is_empty() {
        messages.push("Hello World!".into());
    }
    let client = Options::new()
        .connect_env_or(
            "amqp://127.0.0.1:5672/%2f,amqp://127.0.0.1:5673/%2f,amqp://127.0.0.1:5674/%2f",
        )
        .await?;
    let events = declare_events(&client).await?;
    // ANCHOR: send
    for message in &messages {
        // Confirmed: stored on a majority of the stream's nodes.
        events.send(message).await?;
        println!(" [x] Sent '{message}'");
    }
    // ANCHOR_END: send
    client.close().await;
    Ok(())
}
// ANCHOR_END: code
