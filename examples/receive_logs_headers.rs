//! Headers, a subscriber: prints the messages of the headers exchange
//! `headers_logs` whose headers match all (or any) of the `KEY=VALUE` pairs
//! given on the command line, until Ctrl-C.
//!
//! Shows: a headers binding (`x-match: all` or `any`), checked before it
//! reaches the broker (no empty match, no reserved `x-` keys).
//!
//! ```text
//! terminal 1$ cargo run --example receive_logs_headers all format=pdf type=report
//! terminal 2$ cargo run --example receive_logs_headers any format=pdf type=log
//! terminal 3$ cargo run --example emit_log_headers format=pdf type=report -- "Monthly report"
//! terminal 3$ cargo run --example emit_log_headers format=zip type=log -- "Archived logs"
//! ```
//!
//! Arguments: `all|any KEY=VALUE...` (values are matched as strings).
//! The exchange is not durable, declared the way the official tutorials
//! declare theirs. Chapter "Headers" of the book.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.
//!
//! Expected output:
//!
//! ```text
//! $ cargo run --example receive_logs_headers all format=pdf type=report   (then `emit_log_headers ...`)
//!  [*] Waiting for logs. To exit press CTRL+C
//!  [x] Received {format=pdf, type=report}:'Monthly report'
//! ```

// ANCHOR: code
use std::time::Duration;

use futures::StreamExt;
use rabbitkit::{Client, Exchange, HeadersMatch, Options, Report, Shutdown};

type Error = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "Usage: receive_logs_headers all|any KEY=VALUE...";

#[tokio::main]
async fn main() -> Result<(), Report> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // ANCHOR: matching
    let mut matching = match args.first().map(String::as_str) {
        Some("all") if args.len() > 1 => HeadersMatch::all(),
        Some("any") if args.len() > 1 => HeadersMatch::any(),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(1);
        }
    };
    for pair in &args[1..] {
        let Some((key, value)) = pair.split_once('=') else {
            eprintln!("{USAGE}  (not {pair:?})");
            std::process::exit(1);
        };
        matching = matching.header(key, value);
    }
    // ANCHOR_END: matching

    // ANCHOR: connect
    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    // ANCHOR_END: connect
    // Ctrl-C, or SIGTERM from a deploy: finish the message in hand, then stop.
    let shutdown = Shutdown::on_signals(Duration::from_secs(5));
    receive(&client, &matching, &shutdown).await?;
    client.close().await;
    Ok(())
}

// ANCHOR: receive
async fn receive(
    client: &Client,
    matching: &HeadersMatch,
    shutdown: &Shutdown,
) -> Result<(), Error> {
    // ANCHOR: declare
    // Not durable, the way the official tutorials declare their exchanges
    // (rabbitkit's exchanges are durable by default).
    let logs = Exchange::headers("headers_logs")
        .durable(false)
        .declare(client)
        .await?;
    // ANCHOR_END: declare
    // ANCHOR: subscribe
    let mut messages = logs.subscribe::<String>(matching).await?;
    println!(" [*] Waiting for logs. To exit press CTRL+C");
    // ANCHOR_END: subscribe

    // ANCHOR: consume
    // A message is handled to the end; the stop is looked at between two.
    while let Some(message) = tokio::select! {
        message = messages.next() => message,
        _ = shutdown.stopping() => None,
    } {
        let message = message?;
        println!(" [x] Received {}:'{}'", message.headers(), message.body);
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
