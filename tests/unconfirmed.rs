//! Unconfirmed publishing (`Publisher::publish_unconfirmed`): for traffic
//! that may be lost. It arrives like any message on a healthy connection,
//! and fails at once, with a typed error, when it cannot be sent now —
//! never waits, never re-sends. (The broker blocking publishers is in
//! `local_cluster.rs`, beside the other memory-alarm tests.)

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use rabbitkit::{Event, OutgoingMessage, Queue};
use rabbitkit_core::{ConsumeOptions, PublishError};
use rabbitkit_test::FaultProxy;

#[tokio::test]
async fn unconfirmed_publishes_arrive_in_order_without_a_message_id() {
    let client = common::client().await;
    let queue = Queue::durable(common::unique_name("unconfirmed.arrive"))
        .classic()
        .declare(&client)
        .await
        .unwrap();
    let publisher = client.publisher();
    for i in 0..1000u32 {
        publisher
            .publish_unconfirmed(OutgoingMessage::new(
                "",
                queue.name(),
                i.to_string().into_bytes(),
            ))
            .await
            .unwrap();
    }
    let mut consumer = client
        .consume(queue.name(), ConsumeOptions::new().prefetch(100))
        .await
        .unwrap();
    for i in 0..1000u32 {
        let d = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .expect("every unconfirmed message arrives on a healthy connection")
            .unwrap()
            .unwrap();
        assert_eq!(d.body(), i.to_string().as_bytes(), "in order");
        assert!(d.properties().message_id().is_none());
        d.ack().await.unwrap();
    }
    // Confirmed publishing on the same client is unaffected.
    client
        .publish(OutgoingMessage::new(
            "",
            queue.name(),
            b"confirmed".to_vec(),
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unconfirmed_publish_fails_at_once_while_recovering_and_when_closed() {
    common::ensure_cluster();
    let e: rabbitkit::Endpoint = common::amqp_addrs()[0].parse().unwrap();
    let upstream: SocketAddr = format!("{}:{}", e.host(), e.port()).parse().unwrap();
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let client = common::options().connect(proxy.amqp_url()).await.unwrap();
    let mut events = client.events();
    let msg = || OutgoingMessage::new("", "unconfirmed.nowhere", b"x".to_vec());
    client.publish_unconfirmed(msg()).await.unwrap();

    // The connection is cut and cannot come back for now.
    proxy.refuse(true);
    proxy.cut();
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    let answered = tokio::time::timeout(Duration::from_secs(5), client.publish_unconfirmed(msg()))
        .await
        .expect("no wait");
    assert!(
        matches!(answered, Err(PublishError::NotSent { ref reason }) if reason.contains("not connected")),
        "{answered:?}"
    );
    // A delay needs confirms.
    let delayed = client
        .publish_unconfirmed(msg().delay(Duration::from_secs(1)))
        .await;
    assert!(
        matches!(delayed, Err(PublishError::Invalid { .. })),
        "{delayed:?}"
    );

    proxy.refuse(false);
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    client.publish_unconfirmed(msg()).await.unwrap();

    client.close().await;
    let closed = client.publish_unconfirmed(msg()).await;
    assert!(
        matches!(closed, Err(PublishError::Closed { .. })),
        "{closed:?}"
    );
}

/// An unconfirmed publish returns once its frames are queued, and at most
/// `publish_window` wait to be written. With a window of 2 and 5,000
/// publishes from several tasks at once, the later ones wait for room:
/// every message still arrives, each task's in its order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_publishes_past_the_write_window_wait_for_room_and_all_arrive() {
    const TASKS: u32 = 5;
    const EACH: u32 = 1000;
    common::ensure_cluster();
    let client = common::options()
        .publish_window(2)
        .connect(common::amqp_addrs())
        .await
        .unwrap();
    let queue = Queue::durable(common::unique_name("unconfirmed.window"))
        .classic()
        .declare(&client)
        .await
        .unwrap();
    let publishing: Vec<_> = (0..TASKS)
        .map(|task| {
            let publisher = client.publisher();
            let queue = queue.name().to_string();
            tokio::spawn(async move {
                for i in 0..EACH {
                    let body = format!("{task}:{i}").into_bytes();
                    publisher
                        .publish_unconfirmed(OutgoingMessage::new("", &queue, body))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in publishing {
        task.await.unwrap();
    }
    let mut consumer = client
        .consume(queue.name(), ConsumeOptions::new().prefetch(200))
        .await
        .unwrap();
    let mut next = vec![0u32; TASKS as usize];
    for _ in 0..TASKS * EACH {
        let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("every unconfirmed message arrives on a healthy connection")
            .unwrap()
            .unwrap();
        let body = String::from_utf8(d.body().to_vec()).unwrap();
        let (task, i) = body.split_once(':').unwrap();
        let (task, i): (usize, u32) = (task.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[task], "task {task}'s messages in order");
        next[task] += 1;
        d.ack().await.unwrap();
    }
    assert_eq!(next, vec![EACH; TASKS as usize]);
}
