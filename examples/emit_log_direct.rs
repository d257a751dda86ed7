//! Routing, the publisher: sends a log message with its severity as the
//! routing key to the direct exchange `direct_logs`.
//!
//! Shows: a direct exchange routes a message to the queues bound with
//! exactly its routing key.
//!
//! ```text
//! terminal 1$ cargo run --example receive_logs_direct warning error
//! terminal 2$ cargo run --example receive_logs_direct info warning error
//! terminal 3$ cargo run --example emit_log_direct error "Run. Run. Or it will explode."
//! terminal 3$ cargo run --example emit_log_direct info "Just saying."
//! ```
//!
//! Arguments: `[SEVERITY [MESSAGE...]]`, default `info Hello World!`.
//! The exchange matches the official tutorials' `direct_logs` (direct, not
//! durable: declared with `.durable(false)`). Chapter "Routing" of the book.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.
//!
//! Expected output:
//!
//! ```text
//! $ cargo run --example emit_log_direct error "Run. Run. Or it will explode."
//!  [x] Sent 'error':'Run. Run. Or it will explode.'
//! ```

// ANCHOR: code
use rabbitkit::{Exchange, Options, Report};

#[tokio::main]
async fn main() -> Result<(), Report> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let severity = args.first().map_or("info", String::as_str);
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
    let logs = Exchange::direct("direct_logs")
        .durable(false)
        .declare(&client)
        .await?;
    // ANCHOR_END: declare
    // ANCHOR: publish
    match logs.publish(severity, &message).await {
        Ok(_) => println!(" [x] Sent '{severity}':'{message}'"),
        // Mandatory by default: no queue is bound with this severity (the
        // official tutorial's program drops it without a word).
        Err(e) if e.is_unroutable() => {
            println!(" [ ] No queue is bound for '{severity}': '{message}' was dropped")
        }
        Err(e) => return Err(e.into()),
    }
    // ANCHOR_END: publish

    client.close().await;
    Ok(())
}
// ANCHOR_END: code
