//! Partitioned work queues, the producer: sends payments for four accounts
//! to the partitioned queue `payments` (3 partitions, `payments.p0..p2`),
//! the account as the key. The payments of one account all go to one
//! partition, so a worker handles them in the order they were sent.
//!
//! Shows: declaring a partitioned queue (a hash exchange, N
//! quorum queues with their leaders spread over the nodes, a single active
//! consumer each), and publishing by key (persistent, confirmed).
//!
//! ```text
//! terminal 1$ cargo run --example partitioned_worker
//! terminal 2$ cargo run --example partitioned_worker      # stands by
//! terminal 3$ cargo run --example partitioned_send -- 12
//! ```
//!
//! Argument: how many payments (default 12), numbered per account
//! (`account-1 #1`, `account-2 #1`, ..., `account-1 #2`, ...).
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
use rabbitkit::{Client, DeclareError, Options, PartitionedQueue, Report};
use serde::{Deserialize, Serialize};

// ANCHOR: declare
/// What is sent: one payment of an account.
#[derive(Debug, Serialize, Deserialize)]
pub struct Payment {
    account: String,
    number: u32,
}

/// The partitioned queue both programs declare (the same way).
async fn declare_payments(client: &Client) -> Result<PartitionedQueue<Payment>, DeclareError> {
    let name = std::env::var("PARTITIONED_QUEUE").unwrap_or_else(|_| "payments".into());
    // One partition per node of a 3-node cluster.
    PartitionedQueue::builder(name, 3).declare(client).await
}
// ANCHOR_END: declare

#[tokio::main]
async fn main() -> Result<(), Report> {
    let count: u32 = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 12,
    };
    let client = Options::new()
        .connect_env_or(
            "amqp://127.0.0.1:5672/%2f,amqp://127.0.0.1:5673/%2f,amqp://127.0.0.1:5674/%2f",
        )
        .await?;
    let payments = declare_payments(&client).await?;
    // ANCHOR: publish
    for i in 0..count {
        let payment = Payment {
            account: format!("account-{}", i % 4 + 1),
            number: i / 4 + 1,
        };
        // The key picks the partition: always the same one for an account.
        payments.publish(&payment.account, &payment).await?;
        println!(" [x] Sent '{} #{}'", payment.account, payment.number);
    }
    // ANCHOR_END: publish
    client.close().await;
    Ok(())
}
// ANCHOR_END: code
