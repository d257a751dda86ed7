//! Stream "Offset tracking", the sending half: appends a wave of 100
//! messages to the stream `stream-offset-tracking`: 99 times `hello`, then
//! `marker`, which tells `offset_tracking_receive` to stop.
//!
//! Shows: many confirms in flight at once (`publish`), then waiting for
//! all of them.
//!
//! ```text
//! terminal 1$ cargo run --example offset_tracking_send
//! terminal 2$ cargo run --example offset_tracking_receive   # offsets 0 to 99
//! terminal 1$ cargo run --example offset_tracking_send
//! terminal 2$ cargo run --example offset_tracking_receive   # 100 to 199
//! ```
//!
//! The program of RabbitMQ's official stream tutorial 2, under its official
//! name. It declares the stream as their Rust and Python programs do: 2 GB
//! at most. Chapter "Streams: Hello World and offset tracking" of the book
//! walks through it.
//!
//! It connects to `RABBITKIT_STREAM_ADDR` (one `rabbitmq-stream://` URL or
//! a comma-separated list), or to the local cluster's three stream ports.
//! Needs a broker with the stream plugin: the local cluster (`cargo xtask
//! broker up`), or RabbitMQ in Docker as the book's chapter shows.
//!
//! Expected output:
//!
//! ```text
//! $ cargo run --example offset_tracking_send
//! Publishing 100 messages...
//! Messages confirmed: true.
//! ```

// ANCHOR: code
use rabbitkit::Report;
use rabbitkit_stream::{StreamOptions, StreamSpec};

#[tokio::main]
async fn main() -> Result<(), Report> {
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
    let producer = client
        .producer::<String>(stream, "offset_tracking_send")
        .build()
        .await?;

    // ANCHOR: send
    let count = 100;
    println!("Publishing {count} messages...");
    // All in flight at once: `publish` queues a message and returns its
    // confirm, which is awaited later.
    let confirms: Vec<_> = (0..count)
        .map(|i| {
            let body = if i == count - 1 { "marker" } else { "hello" };
            producer.publish(&body.to_string())
        })
        .collect();
    let mut failed = None;
    for confirm in confirms {
        if let Err(e) = confirm.await {
            failed.get_or_insert(e);
        }
    }
    println!("Messages confirmed: {}.", failed.is_none());
    // ANCHOR_END: send
    producer.close().await?;
    failed.map_or(Ok(()), |e| Err(e.into()))
}
// ANCHOR_END: code
