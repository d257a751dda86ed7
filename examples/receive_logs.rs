//! Publish/subscribe, a subscriber: prints every message published to the
//! fanout exchange `logs` from the moment it starts, until Ctrl-C.
//!
//! Shows: a temporary queue (exclusive to this program, deleted when it
//! stops) bound to a fanout exchange.
//!
//! ```text
//! terminal 1$ cargo run --example receive_logs
//! terminal 2$ cargo run --example receive_logs
//! terminal 3$ cargo run --example emit_log
//! ```
//!
//! The exchange is the official tutorials' `logs` (fanout, not durable), so
//! this works with their `emit_log.py`. Chapter
//! "Publish/Subscribe" of the book.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.
//!
//! Expected output:
//!
//! ```text
//! $ cargo run --example receive_logs   (then `emit_log`)
//!  [*] Waiting for logs. To exit press CTRL+C
//!  [x] Received 'info: Hello World!'
//! ```

// ANCHOR: code
use std::time::Duration;

use futures::StreamExt;
use rabbitkit::{Client, Exchange, Options, Report, Shutdown};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Report> {
    // ANCHOR: connect
    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    // ANCHOR_END: connect
    // Ctrl-C, or SIGTERM from a deploy: finish the message in hand, then stop.
    let shutdown = Shutdown::on_signals(Duration::from_secs(5));
    receive(&client, &shutdown).await?;
    client.close().await;
    Ok(())
}

// ANCHOR: receive
async fn receive(client: &Client, shutdown: &Shutdown) -> Result<(), Error> {
    // ANCHOR: declare
    // Not durable, as the official tutorials declare it (rabbitkit's
    // exchanges are durable by default), so both work together.
    let logs = Exchange::fanout("logs")
        .durable(false)
        .declare(client)
        .await?;
    // ANCHOR_END: declare
    // ANCHOR: subscribe
    // A temporary queue of our own, bound to `logs`.
    let mut messages = logs.subscribe::<String>().await?;
    println!(" [*] Waiting for logs. To exit press CTRL+C");
    // ANCHOR_END: subscribe

    // ANCHOR: consume
    // A message is handled to the end; the stop is looked at between two.
    while let Some(message) = tokio::select! {
        message = messages.next() => message,
        _ = shutdown.stopping() => None,
    } {
        let message = message?;
        println!(" [x] Received '{}'", message.body);
        // An ack the broker no longer takes (it took the message back: a lost
        // connection, a consumer timeout) is reported, not fatal: the message
        // comes again.
        if let Err(e) = message.ack().await {
            eprintln!(" [!] {e}");
        }
    }
    // ANCHOR_END: consume
    Ok(())
}
// ANCHOR_END: receive
// ANCHOR_END: code
