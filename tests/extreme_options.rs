//! Extreme option values (`Duration::MAX`, `usize::MAX`) neither panic nor
//! stop the client: they are clamped to the documented maxima, and a client
//! built with them connects, publishes and consumes.

mod common;

use std::time::Duration;

use futures::StreamExt;
use rabbitkit_core::{
    ConsumeOptions, Declaration, FieldTable, Options, OutgoingMessage, QueueSpec,
};

async fn round_trip(options: Options) {
    common::ensure_cluster();
    let client = options
        .connect(common::amqp_addrs())
        .await
        .expect("connect with extreme option values");
    let name = common::unique_name("extreme");
    client
        .declare(Declaration::Queue(QueueSpec {
            name: name.clone(),
            durable: false,
            exclusive: true,
            auto_delete: false,
            arguments: FieldTable::default(),
        }))
        .await
        .unwrap();
    let mut consumer = client.consume(&name, ConsumeOptions::new()).await.unwrap();
    client
        .publish(OutgoingMessage::new("", name.as_str(), b"hi".to_vec()))
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .expect("a delivery within 20 s")
        .expect("stream open")
        .expect("a delivery");
    assert_eq!(delivery.body(), b"hi");
    delivery.ack().await.unwrap();
    drop(consumer);
    client.delete_queue(&name).await.unwrap();
    assert_eq!(client.stats().disconnects, 0);
    client.close().await;
}

#[tokio::test]
async fn a_maximal_publish_timeout_works() {
    round_trip(Options::new().publish_timeout(Duration::MAX)).await;
}

#[tokio::test]
async fn a_maximal_connect_timeout_works() {
    round_trip(Options::new().connect_timeout(Duration::MAX)).await;
}

#[tokio::test]
async fn a_maximal_publish_window_works() {
    round_trip(Options::new().publish_window(usize::MAX)).await;
}

#[tokio::test]
async fn every_option_at_its_extreme_works() {
    round_trip(
        Options::new()
            .connect_timeout(Duration::MAX)
            .publish_timeout(Duration::MAX)
            .operation_timeout(Duration::MAX)
            .heartbeat(Duration::MAX)
            .publish_window(usize::MAX)
            .channels(usize::MAX)
            .prefetch(u16::MAX),
    )
    .await;
}
