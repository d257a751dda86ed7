//! Headers, the publisher: sends a message carrying the headers given on the
//! command line to the headers exchange `headers_logs`.
//!
//! Shows: a headers exchange routes on message headers instead of the
//! routing key.
//!
//! ```text
//! terminal 1$ cargo run --example receive_logs_headers all format=pdf type=report
//! terminal 2$ cargo run --example receive_logs_headers any format=pdf type=log
//! terminal 3$ cargo run --example emit_log_headers format=pdf type=report -- "Monthly report"
//! terminal 3$ cargo run --example emit_log_headers format=zip type=log -- "Archived logs"
//! ```
//!
//! Arguments: `KEY=VALUE... [-- MESSAGE...]`: the headers, then `--`, then
//! the message (default `Hello World!`). Values are sent as strings. The
//! official tutorials have no headers chapter; the exchange is declared the
//! way theirs are (not durable: `.durable(false)`). Chapter "Headers" of the book.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.
//!
//! Expected output:
//!
//! ```text
//! $ cargo run --example emit_log_headers format=pdf type=report -- "Monthly report"
//!  [x] Sent {format=pdf, type=report}:'Monthly report'
//! ```

// ANCHOR: code
use rabbitkit::{Exchange, Headers, Options, Report};

#[tokio::main]
async fn main() -> Result<(), Report> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // KEY=VALUE... before `--`, the message after it.
    let (pairs, words) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (&args[..], &[][..]),
    };
    let message = if words.is_empty() {
        "Hello World!".to_string()
    } else {
        words.join(" ")
    };
    // ANCHOR: headers
    let mut headers = Headers::new();
    let mut shown = Vec::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            eprintln!("Usage: emit_log_headers KEY=VALUE... [-- MESSAGE...]  (not {pair:?})");
            std::process::exit(1);
        };
        headers = headers.with(key, value);
        shown.push(format!("{key}={value}"));
    }
    // ANCHOR_END: headers

    // ANCHOR: connect
    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    // ANCHOR_END: connect
    // ANCHOR: declare
    // Not durable, the way the official tutorials declare their exchanges
    // (rabbitkit's exchanges are durable by default).
    let logs = Exchange::headers("headers_logs")
        .durable(false)
        .declare(&client)
        .await?;
    // ANCHOR_END: declare
    // ANCHOR: publish
    match logs.publish(&headers, &message).await {
        Ok(_) => println!(" [x] Sent {{{}}}:'{message}'", shown.join(", ")),
        // Mandatory by default: no binding matches these headers.
        Err(e) if e.is_unroutable() => println!(
            " [ ] No queue is bound for {{{}}}: '{message}' was dropped",
            shown.join(", ")
        ),
        Err(e) => return Err(e.into()),
    }
    // ANCHOR_END: publish

    client.close().await;
    Ok(())
}
// ANCHOR_END: code
