//! Topics, the publisher: sends a log message with a routing key of
//! dot-separated words (`<facility>.<severity>`, e.g. `kern.critical`) to the
//! topic exchange `topic_logs`.
//!
//! Shows: publishing to a topic exchange; the routing key is checked
//! (words separated by dots, no wildcards, at most 255 bytes) before
//! anything is sent.
//!
//! ```text
//! terminal 1$ cargo run --example receive_logs_topic "#"
//! terminal 2$ cargo run --example receive_logs_topic "kern.*" "*.critical"
//! terminal 3$ cargo run --example emit_log_topic kern.critical "A critical kernel error"
//! ```
//!
//! Arguments: `[ROUTING_KEY [MESSAGE...]]`, default `anonymous.info Hello
//! World!`. The exchange matches the official tutorials' `topic_logs`
//! (topic, not durable: declared with `.durable(false)`). Chapter "Topics" of the book.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.
//!
//! Expected output:
//!
//! ```text
//! $ cargo run --example emit_log_topic kern.critical "A critical kernel error"
//!  [x] Sent 'kern.critical':'A critical kernel error'
//! ```

// ANCHOR: code
use rabbitkit::{Exchange, Options, Report};

#[tokio::main]
async fn main() -> Result<(), Report> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let routing_key = args.first().map_or("anonymous.info", String::as_str);
    let message = if args.len() > 1 {
        args[1..].join(" ")
    } else {
        "Hello World!".to_string()
    };

    // ANCHOR: connect
    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    // ANCHOR_END: connect
    // ANCHOR: declare
    // Not durable, as the official tutorials declare it (rabbitkit's
    // exchanges are durable by default), so both work together.
    let logs = Exchange::topic("topic_logs")
        .durable(false)
        .declare(&client)
        .await?;
    // ANCHOR_END: declare
    // ANCHOR: publish
    match logs.publish(routing_key, &message).await {
        Ok(_) => println!(" [x] Sent '{routing_key}':'{message}'"),
        // Mandatory by default: no pattern bound matches the key (the
        // official tutorial's program drops it without a word).
        Err(e) if e.is_unroutable() => {
            println!(" [ ] No queue is bound for '{routing_key}': '{message}' was dropped")
        }
        Err(e) => return Err(e.into()),
    }
    // ANCHOR_END: publish

    client.close().await;
    Ok(())
}
// ANCHOR_END: code
