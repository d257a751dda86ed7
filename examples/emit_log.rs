//! Publish/subscribe, the publisher: sends one log message to the fanout
//! exchange `logs`; every running `receive_logs` gets a copy.
//!
//! Shows: declaring a fanout exchange and publishing to it (no routing key:
//! a fanout exchange copies each message to every bound queue).
//!
//! ```text
//! terminal 1$ cargo run --example receive_logs
//! terminal 2$ cargo run --example receive_logs
//! terminal 3$ cargo run --example emit_log
//! terminal 3$ cargo run --example emit_log Disk almost full
//! ```
//!
//! The message is the command line's words (default `info: Hello World!`).
//! The exchange matches the official tutorials' `logs` (fanout, not
//! durable: declared with `.durable(false)`). Messages are persistent all
//! the same, as every message rabbitkit publishes. Chapter "Publish/Subscribe" of the book.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.
//!
//! Expected output:
//!
//! ```text
//! $ cargo run --example emit_log
//!  [x] Sent 'info: Hello World!'
//! ```

// ANCHOR: code
use rabbitkit::{Exchange, Options, Report};

#[tokio::main]
async fn main() -> Result<(), Report> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let message = if args.is_empty() {
        "info: Hello World!".to_string()
    } else {
        args.join(" ")
    };

    // ANCHOR: connect
    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    // ANCHOR_END: connect
    // ANCHOR: declare
    // Not durable, as the official tutorials declare it (rabbitkit's
    // exchanges are durable by default), so both work together.
    let logs = Exchange::fanout("logs")
        .durable(false)
        .declare(&client)
        .await?;
    // ANCHOR_END: declare
    // ANCHOR: publish
    logs.publish(&message).await?;
    println!(" [x] Sent '{message}'");
    // ANCHOR_END: publish

    client.close().await;
    Ok(())
}
// ANCHOR_END: code
