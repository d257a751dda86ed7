//! Message priorities (`PublishOptions::priority`): a quorum queue on
//! RabbitMQ 4.3 delivers higher priorities first with no queue argument (32
//! strict priorities); 4.0–4.2 know two (0–4 normal, 5 and above high,
//! delivered two high for one normal);
//! 3.x quorum queues ignore them. A classic queue declared with
//! `max_priority` orders by priority on every version.

mod common;

use rabbitkit::{PublishOptions, Queue};

/// Sends `priorities` in that order to `queue` (no consumer yet), then
/// reads them all: the priorities in the order delivered.
async fn delivered_order(queue: &Queue, priorities: &[u8]) -> Vec<u8> {
    for p in priorities {
        queue
            .send_with(p, PublishOptions::new().priority(*p))
            .await
            .unwrap();
    }
    let mut sub = queue.subscribe::<u8>().await.unwrap();
    let mut order = Vec::new();
    for _ in priorities {
        order.push(common::next_body(&mut sub).await);
    }
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_delivers_higher_priorities_first_as_the_broker_version_allows() {
    let client = common::client().await;
    let server = client.server().unwrap();
    let name = common::unique_name("priority.quorum");
    let queue = Queue::quorum(name.as_str()).declare(&client).await.unwrap();
    let sent: Vec<u8> = vec![0, 7, 3, 31, 1, 12, 5, 2];
    let order = delivered_order(&queue, &sent).await;
    eprintln!(
        "RabbitMQ {}: sent {sent:?}, delivered {order:?}",
        server.version_text
    );
    let expected: Vec<u8> = match server.quorum_queue_priorities() {
        // Strict: highest first.
        Some(32) => vec![31, 12, 7, 5, 3, 2, 1, 0],
        // Two levels (5 and above high), each in publish order, and the
        // queue delivers two high for one normal while both wait, so the
        // normal ones are not starved. Measured on 4.0.5.
        Some(2) => vec![7, 31, 0, 12, 5, 3, 1, 2],
        // No priorities: publish order.
        _ => sent.clone(),
    };
    assert_eq!(order, expected);
    client.delete_queue(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_queue_with_max_priority_delivers_higher_priorities_first_on_every_version() {
    let client = common::client().await;
    let name = common::unique_name("priority.classic");
    let queue = Queue::durable(name.as_str())
        .classic()
        .max_priority(5)
        .declare(&client)
        .await
        .unwrap();
    // Above the maximum counts as the maximum (kept in publish order).
    let order = delivered_order(&queue, &[0, 9, 3, 5, 1]).await;
    assert_eq!(order, vec![9, 5, 3, 1, 0]);
    client.delete_queue(&name).await.unwrap();
}
