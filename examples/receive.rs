//! Hello World, the receiving half: prints every message that arrives on the
//! queue `hello`, until Ctrl-C.
//!
//! Shows: subscribing to a queue, typed bodies (`String`), acknowledging,
//! stopping cleanly on Ctrl-C.
//!
//! ```text
//! terminal 1$ cargo run --example receive
//! terminal 2$ cargo run --example send
//! ```
//!
//! `cargo run --example receive -- QUEUE` reads another queue instead
//! (declared as a durable quorum queue too), e.g. `delayed_hello`.
//!
//! The queue is the official tutorials' `hello`, a durable quorum queue, so
//! this works with their `send.py` (and the other languages') as well. Chapter "Hello World" of the book (`docs/`) walks through it.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.
//!
//! Expected output:
//!
//! ```text
//! $ cargo run --example receive   (then `send` in another terminal)
//!  [*] Waiting for messages. To exit press CTRL+C
//!  [x] Received 'Hello World!'
//! ```

// ANCHOR: code
use std::time::Duration;

use futures::StreamExt;
use rabbitkit::{Client, Options, Queue, Report, Shutdown};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Report> {
    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    // ANCHOR: ctrl_c
    // Ctrl-C, or SIGTERM from a deploy: finish the message in hand, then stop.
    let shutdown = Shutdown::on_signals(Duration::from_secs(5));
    receive(&client, &shutdown).await?;
    client.close().await;
    // ANCHOR_END: ctrl_c
    Ok(())
}

// ANCHOR: receive
async fn receive(client: &Client, shutdown: &Shutdown) -> Result<(), Error> {
    // ANCHOR: declare
    // `hello`, or the queue named on the command line (e.g. `delayed_hello`).
    let name = std::env::args().nth(1).unwrap_or_else(|| "hello".into());
    let hello = Queue::named(name).declare(client).await?;
    // ANCHOR_END: declare
    // ANCHOR: subscribe
    let mut messages = hello.subscribe::<String>().await?;
    println!(" [*] Waiting for messages. To exit press CTRL+C");
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
