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

#[tokio::test]
async fn an_rpc_client_with_a_maximal_timeout_works() {
    use rabbitkit::{RpcClient, RpcServer};
    let client = common::client().await;
    let queue = common::unique_name("extreme.rpc");
    let server = RpcServer::<u64, u64>::builder(queue.as_str())
        .declare(&client)
        .await
        .unwrap();
    let serving = tokio::spawn(async move {
        let _ = server.serve(|n: u64| async move { Ok(n + 1) }).await;
    });
    let rpc = RpcClient::<u64, u64>::builder(queue.as_str())
        .timeout(Duration::MAX)
        .build(&client)
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(20), rpc.call(&41))
        .await
        .expect("an answer within 20 s");
    assert_eq!(answer, Ok(42));
    serving.abort();
    client.delete_queue(&queue).await.unwrap();
}

#[tokio::test]
async fn a_maximal_message_ttl_works() {
    use rabbitkit::{PublishOptions, Queue};
    let client = common::client().await;
    let q = Queue::temporary().declare(&client).await.unwrap();
    let mut sub = q.subscribe::<String>().await.unwrap();
    q.send_with(
        &"kept".to_string(),
        PublishOptions::new().expiration(Duration::MAX),
    )
    .await
    .expect("a send with the longest TTL");
    assert_eq!(common::next_body(&mut sub).await, "kept");
    assert_eq!(client.stats().disconnects, 0);
}
