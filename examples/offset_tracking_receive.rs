//! Stream "Offset tracking", the receiving half: reads the stream
//! `stream-offset-tracking` as the consumer named `offset-tracking-tutorial`
//! and stops at the first `marker` message. The broker stores how far the
//! consumer got, under its name: run it again and it goes on from there.
//!
//! Shows: a named consumer, offsets stored on the server (every 10
//! messages, and when the consumer is closed), resuming after the stored
//! offset, which takes precedence over `OffsetSpec::First`.
//!
//! ```text
//! terminal 1$ cargo run --example offset_tracking_send
//! terminal 2$ cargo run --example offset_tracking_receive   # offsets 0 to 99
//! terminal 1$ cargo run --example offset_tracking_send
//! terminal 2$ cargo run --example offset_tracking_receive   # 100 to 199
//! ```
//!
//! With nothing new in the stream it waits for the next marker; Ctrl-C
//! stops it, and stores how far it got. The program of RabbitMQ's
//! official stream tutorial 2, under its official name and with the
//! consumer name of their Java, Go and .NET programs. Chapter "Streams:
//! Hello World and offset tracking" of the book walks through it.
//!
//! It connects to `RABBITKIT_STREAM_ADDR` (one `rabbitmq-stream://` URL or
//! a comma-separated list), or to the local cluster's three stream ports.
//! Needs a broker with the stream plugin: the local cluster (`cargo xtask
//! broker up`), or RabbitMQ in Docker as the book's chapter shows.
//!
//! Expected output (the first run after the first `offset_tracking_send`):
//!
//! ```text
//! $ cargo run --example offset_tracking_receive
//! Started consuming...
//! First message received.
//! Done consuming, first offset 0, last offset 99.
//! ```

// ANCHOR: code
use std::time::Duration;

use futures::StreamExt;
use rabbitkit::{Report, Shutdown};
use rabbitkit_stream::{OffsetSpec, StreamOptions, StreamSpec};

#[tokio::main]
async fn main() -> Result<(), Report> {
    // Ctrl-C (or SIGTERM): stop reading, close the consumer.
    let shutdown = Shutdown::on_signals(Duration::from_secs(5));
    let endpoints = std::env::var("RABBITKIT_STREAM_ADDR").unwrap_or_else(|_| {
        "rabbitmq-stream://127.0.0.1:5552,rabbitmq-stream://127.0.0.1:5553,\
         rabbitmq-stream://127.0.0.1:5554"
            .into()
    });
    let client = StreamOptions::new().connect(endpoints.as_str()).await?;
    let stream = "stream-offset-tracking";
    client
        .declare_stream(StreamSpec::new(stream).max_length_bytes(2_000_000_000))
        .await?;

    // ANCHOR: consumer
    let mut consumer = client
        .consumer::<String>(stream)
        // Offsets are stored on the server under this name.
        .name("offset-tracking-tutorial")
        // Only when nothing is stored under the name yet.
        .offset(OffsetSpec::First)
        // Store the offset every 10 messages (and at `close`).
        .store_every(10, Duration::from_secs(5))
        .build()
        .await?;
    println!("Started consuming...");
    // ANCHOR_END: consumer

    // ANCHOR: read
    let (mut first, mut last) = (None, None);
    loop {
        let message = tokio::select! {
            _ = shutdown.stopping() => break,
            message = consumer.next() => message,
        };
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                eprintln!(" [!] {e}"); // not text: skipped
                continue;
            }
            None => break, // the consumer gave up (the error came first)
        };
        if first.is_none() {
            println!("First message received.");
            first = Some(message.offset);
        }
        // `marker`, or `marker: 99` from the official Python program.
        if message.body.starts_with("marker") {
            last = Some(message.offset);
            break;
        }
    }
    // Stores the offset of the last message read: the marker's.
    consumer.close().await?;
    if let (Some(first), Some(last)) = (first, last) {
        println!("Done consuming, first offset {first}, last offset {last}.");
    }
    // ANCHOR_END: read
    Ok(())
}
// ANCHOR_END: code
