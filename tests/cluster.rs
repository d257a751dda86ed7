//! The local cluster really is one cluster: a message published through any
//! node is received through any other.

mod common;

use futures::StreamExt;
use rabbitkit_core::{
    AMQPValue, ConsumeOptions, Declaration, FieldTable, OutgoingMessage, QueueSpec,
};

#[tokio::test]
async fn a_message_published_on_each_node_is_received_on_the_next() {
    let clients = [
        common::client_on(1).await,
        common::client_on(2).await,
        common::client_on(3).await,
    ];
    for from in 0..3 {
        let to = (from + 1) % 3;
        let queue = common::unique_name("cluster.hop");
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        clients[from]
            .declare(Declaration::Queue(QueueSpec {
                name: queue.clone(),
                durable: true,
                exclusive: false,
                auto_delete: false,
                arguments: args,
            }))
            .await
            .unwrap();
        let body = format!("from node {} to node {}", from + 1, to + 1);
        clients[from]
            .publish(OutgoingMessage::new(
                "",
                queue.as_str(),
                body.clone().into_bytes(),
            ))
            .await
            .unwrap();
        let mut consumer = clients[to]
            .consume(&queue, ConsumeOptions::new())
            .await
            .unwrap();
        let delivery = tokio::time::timeout(std::time::Duration::from_secs(20), consumer.next())
            .await
            .expect("delivery within 20 s")
            .unwrap()
            .unwrap();
        assert_eq!(delivery.body(), body.as_bytes());
        delivery.ack().await.unwrap();
        drop(consumer);
        assert_eq!(clients[to].delete_queue(&queue).await.unwrap(), 0);
    }
}
