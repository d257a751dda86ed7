//! Delayed delivery without a plugin (`PublishOptions::delay`): messages
//! wait in rabbitkit's quorum delay queues and reach their exchange and
//! routing key once their time is up — never earlier, in delay order, to
//! any exchange kind; bad delays are typed errors.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;
use rabbitkit::{Exchange, PublishOptions, Queue, TopicPattern};
use rabbitkit_core::delay::MAX_DELAY;
use rabbitkit_core::{ConsumeOptions, OutgoingMessage, PublishError};

fn after(d: Duration) -> PublishOptions {
    PublishOptions::new().delay(d)
}

#[tokio::test]
async fn delayed_messages_arrive_no_earlier_than_asked_and_in_delay_order() {
    let client = common::client().await;
    let queue = Queue::durable(common::unique_name("delayed.order"))
        .declare(&client)
        .await
        .unwrap();
    let mut sub = queue.subscribe::<u64>().await.unwrap();

    // Published longest first: they must come out shortest first.
    let start = Instant::now();
    for secs in [65u64, 5, 1] {
        queue
            .send_with(&secs, after(Duration::from_secs(secs)))
            .await
            .unwrap();
    }
    let mut order = Vec::new();
    let mut late_by = Vec::new();
    for _ in 0..3 {
        let received = tokio::time::timeout(Duration::from_secs(120), sub.next())
            .await
            .expect("a delayed message within 120 s")
            .expect("stream open")
            .expect("decodes");
        let elapsed = start.elapsed();
        let secs = received.body;
        assert!(
            elapsed >= Duration::from_secs(secs),
            "the {secs} s message arrived early, after {elapsed:?}"
        );
        late_by.push((secs, elapsed - Duration::from_secs(secs)));
        order.push(secs);
        received.ack().await.unwrap();
    }
    assert_eq!(order, [1, 5, 65]);
    eprintln!("late by: {late_by:?}");
}

#[tokio::test]
async fn a_delayed_message_keeps_its_routing_key_and_reaches_the_queues_of_any_exchange_kind() {
    let client = common::client().await;
    let topic = Exchange::topic(common::unique_name("delayed.topic"))
        .declare(&client)
        .await
        .unwrap();
    let pattern: TopicPattern = "order.*".parse().unwrap();
    let mut orders = topic.subscribe::<String>(&[pattern]).await.unwrap();
    let fanout = Exchange::fanout(common::unique_name("delayed.fanout"))
        .declare(&client)
        .await
        .unwrap();
    let mut all = fanout.subscribe::<String>().await.unwrap();

    let d = after(Duration::from_millis(300));
    topic
        .publish_with("invoice.sent", &"not for orders".to_string(), d.clone())
        .await
        .unwrap();
    topic
        .publish_with("order.placed", &"placed".to_string(), d.clone())
        .await
        .unwrap();
    fanout
        .publish_with(&"to everyone".to_string(), d)
        .await
        .unwrap();
    topic
        .publish_with(
            "order.end",
            &"end".to_string(),
            after(Duration::from_secs(1)),
        )
        .await
        .unwrap();

    assert_eq!(
        common::bodies_until(&mut orders, "end").await,
        ["placed"],
        "the delayed copy was routed by its own routing key"
    );
    let received = common::next_body(&mut all).await;
    assert_eq!(received, "to everyone");
}

#[tokio::test]
async fn the_message_arrives_unchanged_apart_from_the_delay_headers() {
    let client = common::client().await;
    let queue = Queue::durable(common::unique_name("delayed.props"))
        .declare(&client)
        .await
        .unwrap();
    let mut sub = queue.subscribe::<String>().await.unwrap();
    let sent = queue
        .send_with(
            &"hello".to_string(),
            after(Duration::from_millis(200))
                .message_id("m-1")
                .header("tenant", "acme"),
        )
        .await
        .unwrap();
    assert_eq!(sent.message_id, "m-1");
    let received = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(received.body, "hello");
    assert_eq!(
        received
            .properties()
            .message_id()
            .as_ref()
            .map(|s| s.as_str()),
        Some("m-1")
    );
    assert_eq!(
        received.properties().delivery_mode(),
        &Some(2),
        "still persistent"
    );
    let headers = received.headers();
    assert_eq!(
        headers.get("tenant").map(|v| v.to_string()).as_deref(),
        Some("acme")
    );
    assert!(
        headers.get("x-death").is_some(),
        "the broker records the hops"
    );
    received.ack().await.unwrap();
}

#[tokio::test]
async fn unroutable_delayed_messages_do_not_hold_up_the_ones_behind_them() {
    let client = common::client().await;
    // A fanout nobody listens to: each delayed message to it routes nowhere
    // when its time is up. The broker's dead-letter worker holds at most 32
    // messages in flight per queue; more unroutable ones than that would
    // stall every later delivery without the sink.
    let silent = Exchange::fanout(common::unique_name("delayed.silent"))
        .declare(&client)
        .await
        .unwrap();
    let numbers: Vec<u32> = (0..50).collect();
    let mut sends = futures::stream::FuturesUnordered::new();
    for i in &numbers {
        sends.push(silent.publish_with(i, after(Duration::from_millis(100))));
    }
    while let Some(sent) = sends.next().await {
        sent.unwrap();
    }
    let queue = Queue::durable(common::unique_name("delayed.behind"))
        .declare(&client)
        .await
        .unwrap();
    let mut sub = queue.subscribe::<String>().await.unwrap();
    queue
        .send_with(&"behind".to_string(), after(Duration::from_millis(500)))
        .await
        .unwrap();
    assert_eq!(common::next_body(&mut sub).await, "behind");
}

/// A target that refuses messages (a queue full at its max length, with
/// `reject-publish`) holds up its own delayed messages only: another
/// target's delayed message, on the same delay levels, arrives. Before,
/// at-least-once dead-lettering kept the refused messages in the shared
/// last level, and after about 32 of them (the broker's dead-letter worker
/// prefetch) that level delivered nothing to anyone.
#[tokio::test]
async fn a_target_that_refuses_messages_holds_up_no_other_targets_delayed_messages() {
    let client = common::client().await;
    let full = Queue::durable(common::unique_name("delayed.full"))
        .max_length(1)
        .argument(
            "x-overflow",
            rabbitkit::AMQPValue::LongString("reject-publish".into()),
        )
        .declare(&client)
        .await
        .unwrap();
    full.send(&"fills it".to_string()).await.unwrap();
    {
        let numbers: Vec<u32> = (0..50).collect();
        let mut sends = futures::stream::FuturesUnordered::new();
        for i in &numbers {
            // 200 ms: the same last level (01) as the message below.
            sends.push(full.send_with(i, after(Duration::from_millis(200))));
        }
        while let Some(sent) = sends.next().await {
            sent.unwrap();
        }
    }
    let other = Queue::durable(common::unique_name("delayed.other"))
        .declare(&client)
        .await
        .unwrap();
    let mut sub = other.subscribe::<String>().await.unwrap();
    // Well after the 50 refused ones are due.
    tokio::time::sleep(Duration::from_millis(500)).await;
    other
        .send_with(&"ping".to_string(), after(Duration::from_millis(200)))
        .await
        .unwrap();
    assert_eq!(common::next_body(&mut sub).await, "ping");
    drop(sub);
    // The refused ones wait in the full queue's own inbox, which goes
    // with the queue.
    let inbox = rabbitkit_core::delay::delay_inbox_name("", full.name());
    client
        .queue_info(&inbox)
        .await
        .expect("the full queue's inbox");
    full.delete().await.unwrap();
    other.delete().await.unwrap();
    assert!(
        matches!(
            client.queue_info(&inbox).await,
            Err(rabbitkit_core::DeclareError::NotFound { .. })
        ),
        "the inbox is deleted with its queue"
    );
}

/// A target bound straight to the deliver exchange, as rabbitkit did before
/// the inboxes (or as a program of another client declares it the old
/// way), gets each delayed message once: the direct binding goes when the
/// inbox is made. Before: every delayed message arrived twice (seen in CI:
/// a duplicate left in the tutorial's `delayed_hello`).
#[tokio::test]
async fn a_target_bound_the_old_way_gets_each_delayed_message_once() {
    use rabbitkit_core::delay::{DELAY_DELIVER_EXCHANGE, DELAY_QUEUE_HEADER};
    use rabbitkit_core::{AMQPValue, BindingSpec, Declaration, FieldTable};
    let client = common::client().await;
    // The delay topology exists (made by a delayed publish elsewhere).
    let elsewhere = Queue::durable(common::unique_name("delayed.elsewhere"))
        .declare(&client)
        .await
        .unwrap();
    elsewhere
        .send_with(&"first".to_string(), after(Duration::from_millis(100)))
        .await
        .unwrap();
    let queue = Queue::durable(common::unique_name("delayed.old"))
        .declare(&client)
        .await
        .unwrap();
    let mut old = FieldTable::default();
    old.insert("x-match".into(), AMQPValue::LongString("all".into()));
    old.insert(
        DELAY_QUEUE_HEADER.into(),
        AMQPValue::LongString(queue.name().into()),
    );
    client
        .declare(Declaration::Binding(BindingSpec {
            queue: queue.name().into(),
            exchange: DELAY_DELIVER_EXCHANGE.into(),
            routing_key: String::new(),
            arguments: old,
        }))
        .await
        .unwrap();
    let mut sub = queue.subscribe::<String>().await.unwrap();
    queue
        .send_with(&"once".to_string(), after(Duration::from_millis(100)))
        .await
        .unwrap();
    queue
        .send_with(&"end".to_string(), after(Duration::from_millis(600)))
        .await
        .unwrap();
    // Both copies of "once" (if two) would be in the queue before "end".
    assert_eq!(common::bodies_until(&mut sub, "end").await, ["once"]);
    drop(sub);
    queue.delete().await.unwrap();
    elsewhere.delete().await.unwrap();
}

/// Each target of delayed messages has an inbox (a quorum queue and a
/// fanout exchange): deleting the target through rabbitkit deletes its
/// inbox, and the target made again under the same name gets delayed
/// messages again (through a new inbox).
#[tokio::test]
async fn deleting_a_target_deletes_its_delay_inbox_and_a_new_one_gets_delayed_messages() {
    let client = common::client().await;
    let name = common::unique_name("delayed.inbox");
    for round in ["first", "second"] {
        let fanout = Exchange::fanout(name.as_str())
            .declare(&client)
            .await
            .unwrap();
        let mut sub = fanout.subscribe::<String>().await.unwrap();
        fanout
            .publish_with(&round.to_string(), after(Duration::from_millis(100)))
            .await
            .unwrap();
        assert_eq!(common::next_body(&mut sub).await, round);
        drop(sub);
        let inbox = rabbitkit_core::delay::delay_inbox_name(&name, "");
        client
            .queue_info(&inbox)
            .await
            .expect("the exchange's inbox");
        client.delete_exchange(&name).await.unwrap();
        assert!(
            matches!(
                client.queue_info(&inbox).await,
                Err(rabbitkit_core::DeclareError::NotFound { .. })
            ),
            "{round}: the inbox is deleted with its exchange"
        );
    }
}

#[tokio::test]
async fn a_zero_delay_is_an_ordinary_send_and_a_too_long_one_is_refused_before_sending() {
    let client = common::client().await;
    let queue = Queue::durable(common::unique_name("delayed.bad"))
        .declare(&client)
        .await
        .unwrap();
    let err = queue
        .send_with(
            &"never".to_string(),
            after(MAX_DELAY + Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, rabbitkit::SendError::Publish(PublishError::Invalid { ref what, .. }) if what == "delay"),
        "{err:?}"
    );
    let err = queue
        .send_with(&"never".to_string(), after(Duration::MAX))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            rabbitkit::SendError::Publish(PublishError::Invalid { .. })
        ),
        "{err:?}"
    );

    queue
        .send_with(&"now".to_string(), after(Duration::ZERO))
        .await
        .unwrap();
    let info = queue.info().await.unwrap();
    assert_eq!(
        info.messages, 1,
        "a zero delay is in the queue at once; nothing else is"
    );
}

#[tokio::test]
async fn a_delayed_publish_to_a_missing_target_fails_with_its_cause() {
    let client = common::client().await;
    let missing_exchange = common::unique_name("delayed.nope");
    let err = client
        .publish(
            OutgoingMessage::new(&missing_exchange, "k", b"x".to_vec())
                .delay(Duration::from_secs(1)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, PublishError::ExchangeNotFound { ref exchange } if *exchange == missing_exchange),
        "{err:?}"
    );
    let err = client
        .publish(
            OutgoingMessage::new("", common::unique_name("delayed.noqueue"), b"x".to_vec())
                .delay(Duration::from_secs(1)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Unroutable { .. }), "{err:?}");
    // The client is fine afterwards.
    let queue = Queue::durable(common::unique_name("delayed.after"))
        .declare(&client)
        .await
        .unwrap();
    queue
        .send_with(&1u8, after(Duration::from_millis(100)))
        .await
        .unwrap();
    let mut consumer = client
        .consume(queue.name(), ConsumeOptions::new())
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    delivery.ack().await.unwrap();
}
