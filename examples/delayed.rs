//! Delayed delivery, no plugin: puts MESSAGE on the queue `delayed_hello`
//! SECONDS from now, then exits. The broker keeps the message meanwhile,
//! replicated, in rabbitkit's delay queues; any consumer of `delayed_hello`
//! (in any language) gets it when its time is up.
//!
//! ```text
//! terminal 1$ cargo run --example receive -- delayed_hello
//! terminal 2$ cargo run --example delayed -- 5 "Hello later!"
//! ```
//!
//! Arguments: `SECONDS MESSAGE` (default `5 "Hello later!"`); SECONDS may
//! have a fraction (`0.5`), up to about 77 days. `delayed_hello` is a
//! durable quorum queue, declared here and by the receiver. Chapter "Delays,
//! retries and dead letters" of the book (`docs/`) walks through it.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.

// ANCHOR: code
use std::time::Duration;

use rabbitkit::{Options, PublishOptions, Queue, Report};

#[tokio::main]
async fn main() -> Result<(), Report> {
    let mut args = std::env::args().skip(1);
    let seconds: f64 = match args.next() {
        Some(s) => s.parse()?,
        None => 5.0,
    };
    let delay = Duration::try_from_secs_f64(seconds)?;
    let message = args.next().unwrap_or_else(|| "Hello later!".to_string());

    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    let queue = Queue::named("delayed_hello").declare(&client).await?;

    // ANCHOR: send
    // Confirmed once the broker holds it durably for the whole delay.
    queue
        .send_with(message.as_str(), PublishOptions::new().delay(delay))
        .await?;
    println!(" [x] Sent '{message}', due in {delay:?}");
    // ANCHOR_END: send

    client.close().await;
    Ok(())
}
// ANCHOR_END: code
