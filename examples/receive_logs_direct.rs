//! Routing, a subscriber: prints the log messages of the severities given on
//! the command line, from the direct exchange `direct_logs`, until Ctrl-C.
//!
//! Shows: one temporary queue bound to a direct exchange with several
//! routing keys.
//!
//! ```text
//! terminal 1$ cargo run --example receive_logs_direct warning error
//! terminal 2$ cargo run --example receive_logs_direct info warning error
//! terminal 3$ cargo run --example emit_log_direct error "Run. Run. Or it will explode."
//! ```
//!
//! Arguments: `SEVERITY...` (at least one, e.g. `info warning error`).
//! The exchange is the official tutorials' `direct_logs` (not durable), so
//! this works with their `emit_log_direct.py`. Chapter
//! "Routing" of the book.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.
//!
//! Expected output:
//!
//! ```text
//! $ cargo run --example receive_logs_direct warning error   (then `emit_log_direct error ...`)
//!  [*] Waiting for logs. To exit press CTRL+C
//!  [x] Received 'error':'Run. Run. Or it will explode.'
//! ```

// ANCHOR: code
use std::time::Duration;

use futures::StreamExt;
use rabbitkit::{Client, Exchange, Options, Report, Shutdown};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Report> {
    let severities: Vec<String> = std::env::args().skip(1).collect();
    if severities.is_empty() {
        eprintln!("Usage: receive_logs_direct [info] [warning] [error]");
        std::process::exit(1);
    }

    // ANCHOR: connect
    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    // ANCHOR_END: connect
    // Ctrl-C, or SIGTERM from a deploy: finish the message in hand, then stop.
    let shutdown = Shutdown::on_signals(Duration::from_secs(5));
    receive(&client, &severities, &shutdown).await?;
    client.close().await;
    Ok(())
}

// ANCHOR: receive
async fn receive(client: &Client, severities: &[String], shutdown: &Shutdown) -> Result<(), Error> {
    // ANCHOR: declare
    // Not durable, as the official tutorials declare it (rabbitkit's
    // exchanges are durable by default), so both work together.
    let logs = Exchange::direct("direct_logs")
        .durable(false)
        .declare(client)
        .await?;
    // ANCHOR_END: declare
    // ANCHOR: subscribe
    // One temporary queue, bound once per severity.
    let keys: Vec<&str> = severities.iter().map(String::as_str).collect();
    let mut messages = logs.subscribe::<String>(&keys).await?;
    println!(" [*] Waiting for logs. To exit press CTRL+C");
    // ANCHOR_END: subscribe

    // ANCHOR: consume
    // A message is handled to the end; the stop is looked at between two.
    while let Some(message) = tokio::select! {
        message = messages.next() => message,
        _ = shutdown.stopping() => None,
    } {
        let message = message?;
        println!(
            " [x] Received '{}':'{}'",
            message.routing_key(),
            message.body
        );
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
