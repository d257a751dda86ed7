//! Stream "Hello World", the sending half: appends one message,
//! `Hello, World!`, to the stream `hello-stream`, over the stream protocol
//! (rabbitkit-stream, port 5552).
//!
//! Shows: declaring a stream with a size limit, a named producer, a
//! confirmed send.
//!
//! ```text
//! terminal 1$ cargo run --example hello_stream_receive
//! terminal 2$ cargo run --example hello_stream_send
//! ```
//!
//! RabbitMQ's official stream tutorial 1 calls this program `send` (that
//! name is taken here by the queue tutorial). It declares the stream as
//! they do: 5 GB at most (`max-length-bytes`). Unlike theirs, it does not
//! wait for Enter: `send` returns once the broker has confirmed the
//! message. Chapter "Streams: Hello World and offset tracking" of the book
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
//! $ cargo run --example hello_stream_send
//!  [x] 'Hello, World!' message sent
//! ```

// ANCHOR: code
use rabbitkit::Report;
use rabbitkit_stream::{StreamOptions, StreamSpec};

#[tokio::main]
async fn main() -> Result<(), Report> {
    // ANCHOR: connect
    let endpoints = std::env::var("RABBITKIT_STREAM_ADDR").unwrap_or_else(|_| {
        "rabbitmq-stream://127.0.0.1:5552,rabbitmq-stream://127.0.0.1:5553,\
         rabbitmq-stream://127.0.0.1:5554"
            .into()
    });
    let client = StreamOptions::new().connect(endpoints.as_str()).await?;
    // ANCHOR_END: connect
    // ANCHOR: declare
    // Created if missing; left as it is if it exists.
    let stream = "hello-stream";
    client
        .declare_stream(StreamSpec::new(stream).max_length_bytes(5_000_000_000))
        .await?;
    // ANCHOR_END: declare

    // ANCHOR: send
    // The name makes re-sends safe: the broker drops a message it has.
    let producer = client
        .producer::<String>(stream, "hello_stream_send")
        .build()
        .await?;
    producer.send(&"Hello, World!".to_string()).await?; // confirmed
    println!(" [x] 'Hello, World!' message sent");
    producer.close().await?;
    // ANCHOR_END: send
    Ok(())
}
// ANCHOR_END: code
