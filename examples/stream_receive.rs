//! Streams, the reader: reads the stream `events` from where it is told —
//! `first` (the default: everything the stream still holds), `last`, `next`
//! (only what comes after it starts), an offset (`42`), or a time (`600s`:
//! the last ten minutes) — and prints each message with its offset, until
//! Ctrl-C. Reading removes nothing: run it twice, both read everything.
//!
//! Shows: a stream consumer (a prefetch and manual acks, which only give
//! credit back), each message's offset, and the offset to start again
//! from: the last one acknowledged, which rabbitkit also uses by itself
//! after a failover (it resumes after it, never from `first` again).
//!
//! ```text
//! terminal 1$ cargo run --example stream_send -- one two three
//! terminal 2$ cargo run --example stream_receive              # from the first message
//! terminal 2$ cargo run --example stream_receive -- 1         # from offset 1
//! terminal 2$ cargo run --example stream_receive -- 600s      # the last ten minutes
//! terminal 2$ cargo run --example stream_receive -- next      # only new ones
//! terminal 1$ cargo run --example stream_send -- four
//! ```
//!
//! At Ctrl-C it prints the last offset it acknowledged and how to go on
//! from there. `STREAM=name` uses another stream (the tests do). Chapter
//! "Beyond one queue" of the book.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.

// ANCHOR: code
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use rabbitkit::{Client, DeclareError, Options, Queue, Report, Shutdown, StreamOffset};

/// The same declaration as `stream_send`'s.
async fn declare_events(client: &Client) -> Result<Queue, DeclareError> {
    let name = std::env::var("STREAM").unwrap_or_else(|_| "events".into());
    Queue::stream(name)
        .max_age(Duration::from_secs(7 * 24 * 3600))
        .max_length_bytes(1_000_000_000)
        .stream_max_segment_size_bytes(50_000_000)
        .declare(client)
        .await
}

// ANCHOR: offset
/// `first`, `last`, `next`, an offset (`42`) or seconds ago (`600s`).
fn parse_offset(arg: &str) -> Result<StreamOffset, Report> {
    Ok(match arg {
        "first" => StreamOffset::First,
        "last" => StreamOffset::Last,
        "next" => StreamOffset::Next,
        secs if secs.ends_with('s') => {
            let ago = Duration::from_secs(secs.trim_end_matches('s').parse()?);
            StreamOffset::Timestamp(SystemTime::now() - ago)
        }
        offset => StreamOffset::Offset(offset.parse()?),
    })
}
// ANCHOR_END: offset

#[tokio::main]
async fn main() -> Result<(), Report> {
    let from = parse_offset(&std::env::args().nth(1).unwrap_or_else(|| "first".into()))?;
    let client = Options::new()
        .connect_env_or(
            "amqp://127.0.0.1:5672/%2f,amqp://127.0.0.1:5673/%2f,amqp://127.0.0.1:5674/%2f",
        )
        .await?;
    let events = declare_events(&client).await?;
    let shutdown = Shutdown::on_signals(Duration::from_secs(5));

    // ANCHOR: read
    // A prefetch of 100 (the client's default for streams): the broker
    // sends up to 100 messages ahead; each ack gives one credit back.
    let mut sub = events.subscribe_stream::<String>(from).await?;
    println!(" [*] Waiting for messages. To exit press CTRL+C");
    while let Some(msg) = tokio::select! {
        biased;
        _ = shutdown.stopping() => None,
        msg = sub.next() => msg,
    } {
        let msg = msg?;
        let offset = msg.stream_offset().unwrap_or_default();
        println!(" [x] Received '{}' at offset {offset}", msg.body);
        // Settles it: a stream keeps it anyway. rabbitkit remembers the
        // highest offset settled, and resumes after it after a failover.
        // An ack the broker no longer takes (it took the message back: a lost
        // connection, a consumer timeout) is reported, not fatal: the message
        // comes again.
        if let Err(e) = msg.ack().await {
            eprintln!(" [!] {e}");
        }
    }
    // ANCHOR_END: read
    // ANCHOR: resume
    // What an application persists to go on after a restart.
    match sub.last_acked_offset() {
        Some(last) => println!(
            " [*] Last acknowledged offset: {last}; go on with `stream_receive {}`",
            last + 1
        ),
        None => println!(" [*] Nothing acknowledged"),
    }
    // ANCHOR_END: resume
    drop(sub);
    client.close().await;
    Ok(())
}
// ANCHOR_END: code
