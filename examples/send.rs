//! Hello World, the sending half: puts one message on the queue `hello`.
//!
//! Shows: connecting (`AMQP_ADDR`, or RabbitMQ on 127.0.0.1:5672), declaring a
//! queue, sending a plain-text message through the default exchange.
//!
//! Run the receiver in one terminal, then the sender in another:
//!
//! ```text
//! terminal 1$ cargo run --example receive
//! terminal 2$ cargo run --example send
//! ```
//!
//! The queue is the one of RabbitMQ's official tutorials, a durable quorum
//! queue (`durable=True, arguments={'x-queue-type': 'quorum'}`): it keeps
//! the message until a receiver comes, across broker restarts. This program
//! works with their `receive.py` and friends.
//! Chapter "Hello World" of the book (`docs/`) walks through it.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.
//!
//! Expected output:
//!
//! ```text
//! $ cargo run --example send
//!  [x] Sent 'Hello World!'
//! ```

// ANCHOR: code
use rabbitkit::{Options, Queue, Report};

#[tokio::main]
async fn main() -> Result<(), Report> {
    // ANCHOR: connect
    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    // ANCHOR_END: connect
    // ANCHOR: declare
    // A durable quorum queue, as the official tutorials declare `hello`.
    let hello = Queue::named("hello").declare(&client).await?;
    // ANCHOR_END: declare

    // ANCHOR: send
    let message = "Hello World!";
    hello.send(message).await?;
    println!(" [x] Sent '{message}'");
    // ANCHOR_END: send

    client.close().await;
    Ok(())
}
// ANCHOR_END: code
