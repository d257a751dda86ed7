//! Partitioned work queues, the worker: handles the payments of the
//! partitioned queue `payments`, every partition, one payment at a time per
//! partition (so each account's payments in the order they were sent), the
//! partitions in parallel, until Ctrl-C.
//!
//! Start it twice: per partition, the broker delivers to one instance (the
//! first subscribed) and the other stands by. Stop the active one (Ctrl-C,
//! or kill it): the other takes its partitions over where it stopped, in
//! order, nothing lost.
//!
//! ```text
//! terminal 1$ cargo run --example partitioned_worker
//! terminal 2$ cargo run --example partitioned_worker      # stands by
//! terminal 3$ cargo run --example partitioned_send -- 12
//! ```
//!
//! `PARTITIONED_QUEUE=name` uses another queue. It connects to `AMQP_ADDR`,
//! or to the three nodes of the local cluster. Chapter "Beyond one queue"
//! of the book.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.
//! Before RabbitMQ 4.3 (which has the `x-modulus-hash` exchange built in),
//! enable the consistent-hash plugin first: `docker exec rabbitmq
//! rabbitmq-plugins enable rabbitmq_consistent_hash_exchange`.

// ANCHOR: code
use std::time::Duration;

use rabbitkit::{Client, DeclareError, Options, PartitionedQueue, Report, Shutdown};
use serde::{Deserialize, Serialize};

/// What is received: one payment of an account.
#[derive(Debug, Serialize, Deserialize)]
pub struct Payment {
    account: String,
    number: u32,
}

/// The same declaration as `partitioned_send`'s.
async fn declare_payments(client: &Client) -> Result<PartitionedQueue<Payment>, DeclareError> {
    let name = std::env::var("PARTITIONED_QUEUE").unwrap_or_else(|_| "payments".into());
    PartitionedQueue::builder(name, 3).declare(client).await
}

#[tokio::main]
async fn main() -> Result<(), Report> {
    let client = Options::new()
        .connect_env_or(
            "amqp://127.0.0.1:5672/%2f,amqp://127.0.0.1:5673/%2f,amqp://127.0.0.1:5674/%2f",
        )
        .await?;
    let payments = declare_payments(&client).await?;
    // ANCHOR: work
    // Ctrl-C, or SIGTERM from a deploy: take nothing new; the payments in progress finish first, the
    // others go back to their partition for the standby.
    let shutdown = Shutdown::on_signals(Duration::from_secs(30));
    println!(" [*] Waiting for messages. To exit press CTRL+C");
    let report = payments
        .work_until(&shutdown, |payment: Payment| async move {
            // One at a time per partition: an account's payments in order.
            println!(" [x] Received '{} #{}'", payment.account, payment.number);
            Ok(())
        })
        .await?;
    println!(" [*] Stopped after {} payment(s)", report.acked);
    // ANCHOR_END: work
    client.close().await;
    Ok(())
}
// ANCHOR_END: code
