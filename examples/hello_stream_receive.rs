//! Stream "Hello World", the receiving half: reads the stream
//! `hello-stream` from its first message, over the stream protocol
//! (rabbitkit-stream, port 5552), and prints each message with its offset,
//! until Ctrl-C. Reading removes nothing: run it twice, both read it all.
//!
//! Shows: a consumer that starts at `OffsetSpec::First`, typed bodies
//! (`String`), each message's offset, stopping cleanly on Ctrl-C.
//!
//! ```text
//! terminal 1$ cargo run --example hello_stream_receive
//! terminal 2$ cargo run --example hello_stream_send
//! ```
//!
//! RabbitMQ's official stream tutorial 1 calls this program `receive`
//! (that name is taken here by the queue tutorial). It declares the stream
//! as they do (5 GB at most), so either program can start first. Chapter
//! "Streams: Hello World and offset tracking" of the book walks through
//! it.
//!
//! It connects to `RABBITKIT_STREAM_ADDR` (one `rabbitmq-stream://` URL or
//! a comma-separated list), or to the local cluster's three stream ports.
//! Needs a broker with the stream plugin: the local cluster (`cargo xtask
//! broker up`), or RabbitMQ in Docker as the book's chapter shows.
//!
//! Expected output:
//!
//! ```text
//! $ cargo run --example hello_stream_receive   (then `hello_stream_send`)
//!  [*] Waiting for messages. To exit press CTRL+C
//!  [x] Received 'Hello, World!' at offset 0
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
    let stream = "hello-stream";
    client
        .declare_stream(StreamSpec::new(stream).max_length_bytes(5_000_000_000))
        .await?;

    // ANCHOR: consume
    let mut consumer = client
        .consumer::<String>(stream)
        .offset(OffsetSpec::First) // everything the stream holds
        .build()
        .await?;
    println!(" [*] Waiting for messages. To exit press CTRL+C");
    loop {
        let message = tokio::select! {
            _ = shutdown.stopping() => break,
            message = consumer.next() => message,
        };
        match message {
            Some(Ok(message)) => {
                println!(
                    " [x] Received '{}' at offset {}",
                    message.body, message.offset
                );
            }
            // A body that is not text: said, and the next one is read.
            Some(Err(e)) => eprintln!(" [!] {e}"),
            None => break, // the consumer gave up (the error came first)
        }
    }
    consumer.close().await?;
    // ANCHOR_END: consume
    Ok(())
}
// ANCHOR_END: code
