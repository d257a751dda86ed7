//! `RecoveredChannel` (rabbitkit-core): one channel that consumes and
//! publishes, opened again on the new connection after the old one is cut;
//! the lease of an opening tells at once that it is gone.

mod common;

use std::time::Duration;

use futures::StreamExt;
use rabbitkit::core::{BasicProperties, OutgoingMessage, RecoveredChannel, lapin};
use rabbitkit::{ConsumeOptions, Event, Queue};
use tokio::sync::mpsc;

/// Reads one request from `requests` (through an ordinary consumer) and
/// answers it to its `reply_to`, the way a server does.
async fn answer_one(client: &rabbitkit::Client, requests: &mut rabbitkit::Consumer, body: &[u8]) {
    let request = tokio::time::timeout(Duration::from_secs(20), requests.next())
        .await
        .expect("a request")
        .unwrap()
        .unwrap();
    let reply_to = request.properties().reply_to().clone().expect("a reply_to");
    client
        .publish(OutgoingMessage::new("", reply_to.as_str(), body.to_vec()))
        .await
        .unwrap();
    request.ack().await.unwrap();
}

async fn next_reply(replies: &mut mpsc::UnboundedReceiver<lapin::message::Delivery>) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(20), replies.recv())
        .await
        .expect("a reply")
        .expect("the channel's consumption lives")
        .data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovered_channel_is_reopened_with_its_consumption_after_a_cut() {
    common::ensure_cluster();
    let server = common::client().await;
    let queue = Queue::temporary().declare(&server).await.unwrap();
    let mut requests = server
        .consume(queue.name(), ConsumeOptions::new())
        .await
        .unwrap();
    let addr: rabbitkit::Endpoint = common::amqp_addrs()[0].parse().unwrap();
    let proxy = rabbitkit_test::FaultProxy::start(
        format!("{}:{}", addr.host(), addr.port()).parse().unwrap(),
    )
    .await
    .unwrap();
    let client = common::options().connect(proxy.amqp_url()).await.unwrap();
    for direct in [true, false] {
        let (tx, mut replies) = mpsc::unbounded_channel();
        let on_reply = move |d| {
            let _ = tx.send(d);
        };
        let channel = if direct {
            RecoveredChannel::consume(&client, rabbitkit::DIRECT_REPLY_TO, on_reply).unwrap()
        } else {
            RecoveredChannel::consume_temporary(&client, on_reply)
        };
        let request = |queue_to_reply: &str| {
            OutgoingMessage::new("", queue.name(), b"ping".to_vec())
                .properties(BasicProperties::default().with_reply_to(queue_to_reply.into()))
        };
        let first = channel.lease().await.unwrap();
        let (_, lease) = channel
            .publish(request(first.queue()), Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(lease.generation(), first.generation());
        answer_one(&server, &mut requests, b"pong").await;
        assert_eq!(next_reply(&mut replies).await, b"pong");

        let mut events = client.events();
        proxy.cut();
        tokio::time::timeout(Duration::from_secs(30), lease.closed())
            .await
            .expect("the lease says its opening is gone");
        assert!(!lease.is_open());
        common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
            matches!(e, Event::Recovered { .. })
        })
        .await;
        // The next use opens it again, consuming again, on the new connection.
        let again = channel.lease().await.unwrap();
        assert!(again.generation() > lease.generation());
        assert!(again.is_open());
        if !direct {
            assert!(
                again
                    .queue()
                    .starts_with(rabbitkit::core::TEMPORARY_QUEUE_PREFIX)
            );
            assert_ne!(
                again.queue(),
                lease.queue(),
                "a fresh name on a new connection"
            );
        }
        let (_, used) = channel
            .publish(request(again.queue()), Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(used.generation(), again.generation());
        answer_one(&server, &mut requests, b"pong again").await;
        assert_eq!(next_reply(&mut replies).await, b"pong again");
    }
    client.close().await;
    drop(requests);
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn a_recovered_channel_refuses_a_queue_name_over_255_bytes() {
    let client = common::client().await;
    let long = "q".repeat(256);
    let err = RecoveredChannel::consume(&client, long.as_str(), |_| {}).unwrap_err();
    assert_eq!(err.value, long);
}
