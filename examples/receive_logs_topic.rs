//! Topics, a subscriber: prints the log messages whose routing key matches
//! one of the binding patterns given on the command line, from the topic
//! exchange `topic_logs`, until Ctrl-C.
//!
//! Shows: topic patterns, where `*` stands for exactly one word and `#` for
//! zero or more; each pattern is validated (`TopicPattern`) before it is
//! bound, so a typo such as `kern*` is refused instead of silently matching
//! nothing.
//!
//! ```text
//! terminal 1$ cargo run --example receive_logs_topic "#"
//! terminal 2$ cargo run --example receive_logs_topic "kern.*"
//! terminal 3$ cargo run --example receive_logs_topic "*.critical"
//! terminal 4$ cargo run --example receive_logs_topic "kern.*" "*.critical"
//! terminal 5$ cargo run --example emit_log_topic kern.critical "A critical kernel error"
//! ```
//!
//! Arguments: `BINDING_KEY...` (at least one). Quote patterns so the shell
//! leaves `*` and `#` alone. The exchange is the official tutorials'
//! `topic_logs` (not durable), so this works with their `emit_log_topic.py`. Chapter "Topics" of the book.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.
//!
//! Expected output:
//!
//! ```text
//! $ cargo run --example receive_logs_topic "kern.*"   (then `emit_log_topic kern.critical ...`)
//!  [*] Waiting for logs. To exit press CTRL+C
//!  [x] Received 'kern.critical':'A critical kernel error'
//! ```

// ANCHOR: code
use std::time::Duration;

use futures::StreamExt;
use rabbitkit::{Client, Exchange, Options, Report, Shutdown, TopicPattern};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Report> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("Usage: receive_logs_topic [binding_key]...");
        std::process::exit(1);
    }
    // ANCHOR: patterns
    // Each argument parsed into a checked `TopicPattern`: a mistyped one
    // (`kern*`) ends the program, with the reason, before it connects.
    let patterns = args
        .iter()
        .map(|arg| arg.parse())
        .collect::<Result<Vec<TopicPattern>, _>>()?;
    // ANCHOR_END: patterns

    // ANCHOR: connect
    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    // ANCHOR_END: connect
    // Ctrl-C, or SIGTERM from a deploy: finish the message in hand, then stop.
    let shutdown = Shutdown::on_signals(Duration::from_secs(5));
    receive(&client, &patterns, &shutdown).await?;
    client.close().await;
    Ok(())
}

// ANCHOR: receive
async fn receive(
    client: &Client,
    patterns: &[TopicPattern],
    shutdown: &Shutdown,
) -> Result<(), Error> {
    // ANCHOR: declare
    // Not durable, as the official tutorials declare it (rabbitkit's
    // exchanges are durable by default), so both work together.
    let logs = Exchange::topic("topic_logs")
        .durable(false)
        .declare(client)
        .await?;
    // ANCHOR_END: declare
    // ANCHOR: subscribe
    let mut messages = logs.subscribe::<String>(patterns).await?;
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
