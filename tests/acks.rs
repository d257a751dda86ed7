//! Acknowledgements: acks are coalesced into `multiple` acks, and one
//! delivery that is never settled must not hold back the ones after it.
//!
//! A [`Delivery`](rabbitkit_core::Delivery) dropped without `ack`, `nack`
//! or `reject` (a handler that panicked, an error dropped by
//! `filter_map(Result::ok)`) is given back to the queue (nack with requeue);
//! the acks after it still reach the broker.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use rabbitkit::{Queue, ReceiveError};
use rabbitkit_core::{ConsumeOptions, OutgoingMessage};

const TOTAL: usize = 30;
const PREFETCH: u16 = 5;

#[tokio::test]
async fn a_dropped_delivery_is_requeued_and_later_acks_still_reach_the_broker() {
    let client = common::client().await;
    let queue = Queue::named(common::unique_name("acks.dropped"))
        .declare(&client)
        .await
        .unwrap();
    for i in 0..TOTAL {
        client
            .publish(OutgoingMessage::new(
                "",
                queue.name(),
                i.to_string().into_bytes(),
            ))
            .await
            .unwrap();
    }
    let mut consumer = client
        .consume(queue.name(), ConsumeOptions::new().prefetch(PREFETCH))
        .await
        .unwrap();
    let mut acked = BTreeSet::new();
    let mut dropped = None;
    while acked.len() < TOTAL {
        // With the old behaviour the consumer stalls after `PREFETCH`
        // deliveries: the acks behind the dropped one never leave.
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "consumer stalled after {} acks (dropped: {dropped:?})",
                    acked.len()
                )
            })
            .expect("consumer open")
            .expect("a delivery");
        let body = String::from_utf8(delivery.body().to_vec()).unwrap();
        if dropped.is_none() {
            dropped = Some(body);
            drop(delivery); // neither acked nor nacked
            continue;
        }
        if Some(&body) == dropped.as_ref() {
            assert!(delivery.redelivered(), "the dropped delivery came back");
        }
        delivery.ack().await.unwrap();
        acked.insert(body);
    }
    let expected: BTreeSet<String> = (0..TOTAL).map(|i| i.to_string()).collect();
    assert_eq!(acked, expected, "every message, the dropped one included");
    drop(consumer);
    // Every ack reached the broker: nothing is left to deliver.
    let info = queue.info().await.unwrap();
    assert_eq!(info.messages, 0, "{info:?}");
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn an_undecodable_message_dropped_with_its_error_is_rejected_not_redelivered() {
    let client = common::client().await;
    let dead = Queue::named(common::unique_name("acks.dead"))
        .declare(&client)
        .await
        .unwrap();
    let queue = Queue::named(common::unique_name("acks.undecodable"))
        .dead_letter("")
        .dead_letter_routing_key(dead.name())
        .declare(&client)
        .await
        .unwrap();
    client
        .publish(OutgoingMessage::new(
            "",
            queue.name(),
            b"{not json".to_vec(),
        ))
        .await
        .unwrap();
    queue.send(&42u32).await.unwrap();
    let mut sub = queue
        .subscribe_with::<u32>(ConsumeOptions::new().prefetch(1))
        .await
        .unwrap();
    // The error (with its delivery) is dropped, as `filter_map(Result::ok)` does.
    match tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("a first item")
        .expect("subscription open")
    {
        Err(ReceiveError::Decode { .. }) => {}
        other => panic!("expected a decode error, got {other:?}"),
    }
    // With prefetch 1, the next message comes only once the first is settled.
    let next = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("the consumer goes on")
        .expect("subscription open")
        .expect("decodable");
    assert_eq!(next.body, 42);
    next.ack().await.unwrap();
    // The undecodable body went to the dead-letter queue, not back to the queue.
    let mut dead_consumer = client
        .consume(dead.name(), ConsumeOptions::new())
        .await
        .unwrap();
    let parked = tokio::time::timeout(Duration::from_secs(30), dead_consumer.next())
        .await
        .expect("dead-lettered")
        .expect("open")
        .expect("a delivery");
    assert_eq!(parked.body(), b"{not json");
    parked.ack().await.unwrap();
    drop(sub);
    drop(dead_consumer);
    queue.delete().await.unwrap();
    dead.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_and_a_nack_racing_on_one_delivery_settle_it_once_and_the_channel_lives() {
    let client = common::client().await;
    let queue = Queue::named(common::unique_name("acks.race"))
        .declare(&client)
        .await
        .unwrap();
    const RACES: usize = 200;
    for i in 0..RACES {
        client
            .publish(OutgoingMessage::new(
                "",
                queue.name(),
                i.to_string().into_bytes(),
            ))
            .await
            .unwrap();
    }
    client
        .publish(OutgoingMessage::new("", queue.name(), b"end".to_vec()))
        .await
        .unwrap();
    let mut consumer = client
        .consume(queue.name(), ConsumeOptions::new().prefetch(20))
        .await
        .unwrap();
    let mut races = Vec::new();
    let mut seen = BTreeSet::new();
    loop {
        let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("the consumer goes on")
            .expect("consumer open")
            .expect("a delivery");
        let body = String::from_utf8(delivery.body().to_vec()).unwrap();
        // A 406 (a `multiple` ack naming a nacked tag) would close the
        // channel: everything unacknowledged would come back, redelivered.
        assert!(
            !delivery.redelivered(),
            "{body} redelivered: the channel died"
        );
        if body == "end" {
            delivery.ack().await.unwrap();
            break;
        }
        assert!(seen.insert(body), "each message once");
        let delivery = std::sync::Arc::new(delivery);
        let (a, n) = (delivery.clone(), delivery.clone());
        let ack = tokio::spawn(async move { a.ack().await });
        let nack = tokio::spawn(async move { n.nack(false).await });
        races.push((ack, nack));
    }
    for (ack, nack) in races {
        let (ack, nack) = (ack.await.unwrap(), nack.await.unwrap());
        assert!(
            ack.is_ok() != nack.is_ok(),
            "exactly one settles it: ack {ack:?}, nack {nack:?}"
        );
        let lost = if ack.is_err() { ack } else { nack };
        assert_eq!(lost, Err(rabbitkit_core::AckError::AlreadyAcknowledged));
    }
    assert_eq!(seen.len(), RACES);
    drop(consumer);
    // Once the consumer's channel is closed, whatever it had not settled
    // with the broker would be ready again: every settlement went out.
    let info = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let info = queue.info().await.unwrap();
            if info.consumers == 0 {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the dropped consumer is cancelled");
    assert_eq!(info.messages, 0, "{info:?}");
    queue.delete().await.unwrap();
}
