//! A connection that stops answering (a stalled network path, or a broker
//! that stopped reading from it during a memory alarm) while the socket
//! stays open: no call waits forever. Each returns its `Timeout` error after
//! `Options::operation_timeout`, and `close` returns too.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use rabbitkit_core::{
    AckError, ChannelError, ConsumeError, ConsumeOptions, Declaration, DeclareError, FieldTable,
    OutgoingMessage, QueueSpec,
};
use rabbitkit_test::FaultProxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_makes_declare_consume_and_close_return_timeouts_not_hang() {
    common::ensure_cluster();
    let e: rabbitkit_core::Endpoint = common::amqp_addrs()[0].parse().unwrap();
    let upstream: SocketAddr = format!("{}:{}", e.host(), e.port()).parse().unwrap();
    let p = FaultProxy::start(upstream).await.unwrap();
    let observer = common::client().await;
    let queue = common::unique_name("stalled.q");
    observer
        .declare(Declaration::Queue(QueueSpec {
            name: queue.clone(),
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: FieldTable::default(),
        }))
        .await
        .unwrap();
    // Heartbeats would notice the stall only after a minute: every wait
    // below must end on its own bound, long before.
    let operation_timeout = Duration::from_secs(2);
    let client = common::options()
        .heartbeat(Duration::from_secs(60))
        .operation_timeout(operation_timeout)
        .connect(p.amqp_url())
        .await
        .unwrap();
    let hang_guard = Duration::from_secs(20);

    p.stall();
    let declared = tokio::time::timeout(
        hang_guard,
        client.declare(Declaration::Queue(QueueSpec {
            name: common::unique_name("stalled.new"),
            durable: false,
            exclusive: true, // gone with the connection if it ever arrives
            auto_delete: false,
            arguments: FieldTable::default(),
        })),
    )
    .await
    .expect("declare returned");
    assert_eq!(declared, Err(DeclareError::Timeout(operation_timeout)));

    let info = tokio::time::timeout(hang_guard, client.queue_info(&queue))
        .await
        .expect("queue_info returned");
    assert_eq!(info, Err(DeclareError::Timeout(operation_timeout)));

    let consumed = tokio::time::timeout(hang_guard, client.consume(&queue, ConsumeOptions::new()))
        .await
        .expect("consume returned");
    assert!(
        matches!(consumed, Err(ConsumeError::Timeout(t)) if t == operation_timeout),
        "{consumed:?}"
    );

    let opened = tokio::time::timeout(hang_guard, client.open_channel())
        .await
        .expect("open_channel returned");
    assert!(
        matches!(opened, Err(ChannelError::Timeout(t)) if t == operation_timeout),
        "{opened:?}"
    );

    tokio::time::timeout(hang_guard, client.close())
        .await
        .expect("close returned");
    assert!(!client.is_connected());

    p.resume();
    // Nothing was left subscribed on the broker by the timed-out consume.
    assert_eq!(observer.queue_info(&queue).await.unwrap().consumers, 0);
    observer.delete_queue(&queue).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_stuck_behind_a_stalled_connection_fails_instead_of_hanging() {
    common::ensure_cluster();
    let e: rabbitkit_core::Endpoint = common::amqp_addrs()[0].parse().unwrap();
    let upstream: SocketAddr = format!("{}:{}", e.host(), e.port()).parse().unwrap();
    let p = FaultProxy::start(upstream).await.unwrap();
    let observer = common::client().await;
    let queue = common::unique_name("stalled.acks");
    observer
        .declare(Declaration::Queue(QueueSpec {
            name: queue.clone(),
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: FieldTable::default(),
        }))
        .await
        .unwrap();
    observer
        .publish(OutgoingMessage::new("", &queue, b"one".to_vec()))
        .await
        .unwrap();
    let operation_timeout = Duration::from_secs(2);
    let client = common::options()
        .heartbeat(Duration::from_secs(60))
        .operation_timeout(operation_timeout)
        .publish_timeout(Duration::from_secs(5))
        .connect(p.amqp_url())
        .await
        .unwrap();
    // Prefetch 2: every ack is sent at once (half the window).
    let mut consumer = client
        .consume(&queue, ConsumeOptions::new().prefetch(2))
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .expect("a delivery")
        .expect("open")
        .expect("a delivery");

    // The path stalls, and the socket's buffers fill with publishes: the
    // ack frame queued behind them cannot leave.
    p.stall();
    for _ in 0..12 {
        let publish = client.publish(OutgoingMessage::new("", &queue, vec![0u8; 4 << 20]));
        tokio::spawn(publish);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked = tokio::time::timeout(Duration::from_secs(20), delivery.ack())
        .await
        .expect("ack returned");
    assert_eq!(acked, Err(AckError::ChannelGone));

    tokio::time::timeout(Duration::from_secs(20), client.close())
        .await
        .expect("close returned");
    p.resume();
    drop(p);
    observer.delete_queue(&queue).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_operation_timeout_means_no_bound_not_a_panic() {
    let client = common::options()
        .operation_timeout(Duration::MAX)
        .close_timeout(Duration::MAX)
        .connect(common::amqp_addrs())
        .await
        .unwrap();
    let queue = common::unique_name("stalled.huge");
    client
        .declare(Declaration::Queue(QueueSpec {
            name: queue.clone(),
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: FieldTable::default(),
        }))
        .await
        .unwrap();
    assert_eq!(client.queue_info(&queue).await.unwrap().messages, 0);
    let consumer = client.consume(&queue, ConsumeOptions::new()).await.unwrap();
    drop(consumer);
    let (channel, _) = client.open_channel().await.unwrap();
    drop(channel);
    client.delete_queue(&queue).await.unwrap();
    client.close().await;
}
