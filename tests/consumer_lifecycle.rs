//! A consumer's life: whatever happens to a subscribe (cancelled midway, timed
//! out, its queue deleted while the client was away), nothing it registered
//! is left behind, on the broker or in the client, and its stream never hangs.
//!
//! The client under test goes through a [`FaultProxy`], so the tests can slow
//! or cut its connection; an observer client, connected directly, checks what
//! the broker sees.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use rabbitkit::{Event, OutgoingMessage, Queue};
use rabbitkit_core::{Client, ConsumeError, ConsumeOptions};
use rabbitkit_test::FaultProxy;

/// A proxy in front of the first node (or the one external broker).
async fn proxy() -> FaultProxy {
    common::ensure_cluster();
    let e: rabbitkit::Endpoint = common::amqp_addrs()[0].parse().unwrap();
    let upstream: SocketAddr = format!("{}:{}", e.host(), e.port()).parse().unwrap();
    FaultProxy::start(upstream).await.unwrap()
}

/// Waits (bounded: a hang guard) until the broker reports `want` consumers on `queue`.
async fn wait_for_consumers(observer: &Client, queue: &str, want: u32) {
    let mut last = None;
    let reached = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let n = observer.queue_info(queue).await.unwrap().consumers;
            if n == want {
                return;
            }
            last = Some(n);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "the broker still reports {last:?} consumer(s) on {queue}, not {want}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consume_cancelled_midway_leaves_no_consumer_behind_even_after_a_failover() {
    let p = proxy().await;
    let observer = common::client().await;
    let queue = Queue::named(common::unique_name("lifecycle.cancelled"))
        .declare(&observer)
        .await
        .unwrap();
    let client = common::options().connect(p.amqp_url()).await.unwrap();
    let mut events = client.events();

    // Every chunk of bytes waits 300 ms: opening the channel, setting its
    // prefetch and basic.consume take several round trips, so a subscribe
    // given 250 ms is dropped while waiting for the broker.
    p.delay(Duration::from_millis(300));
    let dropped = tokio::time::timeout(
        Duration::from_millis(250),
        client.consume(queue.name(), ConsumeOptions::new()),
    )
    .await;
    assert!(
        dropped.is_err(),
        "the consume was still in flight when dropped"
    );
    p.delay(Duration::ZERO);
    // Whatever reached the broker is cancelled (its channel is closed).
    wait_for_consumers(&observer, queue.name(), 0).await;

    let mut live = client
        .consume(queue.name(), ConsumeOptions::new())
        .await
        .unwrap();
    wait_for_consumers(&observer, queue.name(), 1).await;

    // After a reconnect only the live consumer is subscribed again: the
    // dropped subscribe left no record behind to be replayed.
    p.cut();
    let recovered = common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    match recovered {
        Event::Recovered { consumers, .. } => {
            assert_eq!(consumers, 1, "consumers re-subscribed after the reconnect")
        }
        _ => unreachable!(),
    }
    assert_eq!(
        observer.queue_info(queue.name()).await.unwrap().consumers,
        1
    );

    // And it gets every message.
    for i in 0..20 {
        observer
            .publish(OutgoingMessage::new(
                "",
                queue.name(),
                i.to_string().into_bytes(),
            ))
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    while got.len() < 20 {
        let d = tokio::time::timeout(Duration::from_secs(20), live.next())
            .await
            .expect("the live consumer gets every message")
            .expect("stream open")
            .expect("a delivery");
        got.push(String::from_utf8(d.body().to_vec()).unwrap());
        d.ack().await.unwrap();
    }
    got.sort_by_key(|s| s.parse::<u32>().unwrap());
    assert_eq!(got, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
    drop(live);
    queue.delete().await.unwrap();
}

/// A subscribe dropped after its `basic.consume` went out, before the
/// broker's `consume-ok` came back (a timed-out consume; a re-subscription
/// after a failover given up at its recovery step, as in the first
/// 3.10 autoheal run of RELIABILITY.md): lapin keeps such a channel open
/// and registers the broker's consumer when `consume-ok` arrives, so the
/// broker would deliver up to the prefetch to a consumer nobody reads, and
/// hold those messages unacknowledged until the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consume_dropped_after_its_basic_consume_went_out_holds_no_message() {
    let p = proxy().await;
    let observer = common::client().await;
    let queue = Queue::named(common::unique_name("lifecycle.consume_sent"))
        .declare(&observer)
        .await
        .unwrap();
    for i in 0..20 {
        observer
            .publish(OutgoingMessage::new(
                "",
                queue.name(),
                i.to_string().into_bytes(),
            ))
            .await
            .unwrap();
    }
    let client = common::options().connect(p.amqp_url()).await.unwrap();

    // Every chunk of bytes waits 1 s each way: channel.open and basic.qos
    // take a round trip each (done at about 4 s), basic.consume goes out
    // then, reaches the broker at about 5 s, and its consume-ok would be
    // back at about 6 s. The subscribe is dropped at 5 s, in between.
    p.delay(Duration::from_secs(1));
    let dropped = tokio::time::timeout(
        Duration::from_secs(5),
        client.consume(queue.name(), ConsumeOptions::new().prefetch(50)),
    )
    .await;
    assert!(
        dropped.is_err(),
        "the consume was still in flight when dropped"
    );
    p.delay(Duration::ZERO);

    // A new consumer gets every message: none is held by the dropped one...
    let mut live = client
        .consume(queue.name(), ConsumeOptions::new())
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 20 {
        let d = tokio::time::timeout(Duration::from_secs(20), live.next())
            .await
            .expect("the new consumer gets every message")
            .expect("stream open")
            .expect("a delivery");
        got.push(String::from_utf8(d.body().to_vec()).unwrap());
        d.ack().await.unwrap();
    }
    got.sort_by_key(|s| s.parse::<u32>().unwrap());
    got.dedup();
    assert_eq!(got, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
    // ...and it is the only one subscribed on the broker.
    wait_for_consumers(&observer, queue.name(), 1).await;
    drop(live);
    queue.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_queue_was_deleted_during_a_failover_gets_an_error_and_ends() {
    let p = proxy().await;
    let observer = common::client().await;
    // Declared by the observer: the client under test will not re-declare it.
    let queue = Queue::named(common::unique_name("lifecycle.gone"))
        .declare(&observer)
        .await
        .unwrap();
    let name = queue.name().to_owned();
    let client = common::options().connect(p.amqp_url()).await.unwrap();
    let mut events = client.events();
    let mut consumer = client.consume(&name, ConsumeOptions::new()).await.unwrap();

    p.refuse(true);
    p.cut();
    common::wait_for_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    queue.delete().await.unwrap();
    p.refuse(false);
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, Event::ConsumerRecoveryFailed { .. })
    })
    .await;

    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        let first = consumer.next().await;
        let then = consumer.next().await;
        (first, then)
    })
    .await
    .expect("the stream yields an error and ends instead of hanging");
    match ended {
        (Some(Err(ConsumeError::Cancelled { queue })), None) => assert_eq!(queue, name),
        other => panic!("expected Cancelled then the end, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consume_that_timed_out_while_disconnected_is_not_subscribed_after_the_recovery() {
    let p = proxy().await;
    let observer = common::client().await;
    let queue = Queue::named(common::unique_name("lifecycle.timed.out"))
        .declare(&observer)
        .await
        .unwrap();
    let operation_timeout = Duration::from_secs(1);
    let client = common::options()
        .operation_timeout(operation_timeout)
        .backoff(rabbitkit::Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            ..Default::default()
        })
        .connect(p.amqp_url())
        .await
        .unwrap();
    let mut events = client.events();

    // The connection goes, and cannot come back while the consume waits.
    p.refuse(true);
    p.cut();
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    let consumed = client.consume(queue.name(), ConsumeOptions::new()).await;
    assert!(
        matches!(consumed, Err(ConsumeError::Timeout(t)) if t == operation_timeout),
        "{consumed:?}"
    );
    drop(consumed);

    // The connection comes back: the consume that timed out is not
    // subscribed by the recovery, now or at any later one.
    p.refuse(false);
    let recovered = common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    assert!(
        matches!(recovered, Event::Recovered { consumers: 0, .. }),
        "{recovered}"
    );
    assert_eq!(
        observer.queue_info(queue.name()).await.unwrap().consumers,
        0
    );
    p.cut();
    let recovered = common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    assert!(
        matches!(recovered, Event::Recovered { consumers: 0, .. }),
        "{recovered}"
    );

    // A consume made now is the queue's one consumer, and gets its messages.
    let mut live = client
        .consume(queue.name(), ConsumeOptions::new())
        .await
        .unwrap();
    wait_for_consumers(&observer, queue.name(), 1).await;
    observer
        .publish(OutgoingMessage::new("", queue.name(), b"one".to_vec()))
        .await
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(20), live.next())
        .await
        .expect("the live consumer gets the message")
        .expect("stream open")
        .expect("a delivery");
    assert_eq!(d.body(), b"one");
    d.ack().await.unwrap();
    drop(live);
    queue.delete().await.unwrap();
}

/// An auto-delete queue of the application's own (a name it chose) goes
/// with its last consumer; after a failover, recovery does not make it
/// again (it would collect messages for nobody). Before, the recorded
/// declaration was replayed and the queue came back, bound, unconsumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_delete_queue_whose_consumer_went_is_not_made_again_by_recovery() {
    let proxy = proxy().await;
    let client = common::options().connect(proxy.amqp_url()).await.unwrap();
    let observer = common::client().await;
    let logs = rabbitkit::Exchange::fanout(common::unique_name("lifecycle.autodel.x"))
        .declare(&client)
        .await
        .unwrap();
    let queue = Queue::named(common::unique_name("lifecycle.autodel"))
        .classic()
        .auto_delete(true)
        .declare(&client)
        .await
        .unwrap();
    logs.bind(&queue).await.unwrap();
    let sub = queue.subscribe::<String>().await.unwrap();
    wait_for_consumers(&observer, queue.name(), 1).await;
    drop(sub);
    // The broker deletes it with its last consumer.
    let gone = tokio::time::timeout(Duration::from_secs(15), async {
        while observer.queue_info(queue.name()).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "the broker deletes an auto-delete queue with its consumer"
    );
    let mut events = client.events();
    proxy.cut();
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    let after = observer.queue_info(queue.name()).await;
    assert!(
        matches!(after, Err(rabbitkit_core::DeclareError::NotFound { .. })),
        "recovery made the auto-delete queue again: {after:?}"
    );
    observer.delete_exchange(logs.name()).await.unwrap();
    client.close().await;
}

/// A recorded declaration whose replay fails in a way that may pass is
/// tried again while the connection lives: here the application's own
/// exclusive queue is held, during the recovery, by another connection
/// (`RESOURCE_LOCKED`); once that one lets go, the queue is declared
/// again, its consumer subscribed again, and messages arrive. Before, the
/// replay was reported failed once and never tried again: the queue stayed
/// missing until the next failover, and its consumer ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_failed_is_tried_again_until_it_passes() {
    let proxy = proxy().await;
    let client = common::options().connect(proxy.amqp_url()).await.unwrap();
    let observer = common::client().await;
    let name = common::unique_name("lifecycle.replay.exclusive");
    let exclusive = |q: rabbitkit::QueueBuilder| q.classic().durable(false).exclusive(true);
    let queue = exclusive(Queue::named(name.as_str()))
        .declare(&client)
        .await
        .unwrap();
    let mut sub = queue.subscribe::<String>().await.unwrap();
    let mut events = client.events();
    // The connection goes, and stays away while another takes the name.
    proxy.refuse(true);
    proxy.cut();
    let gone = tokio::time::timeout(Duration::from_secs(15), async {
        while observer.queue_info(&name).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "the broker deletes the lost connection's exclusive queue"
    );
    let holder = common::client().await;
    exclusive(Queue::named(name.as_str()))
        .declare(&holder)
        .await
        .unwrap();
    proxy.refuse(false);
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, Event::TopologyRecoveryFailed { declaration, .. } if declaration.contains(name.as_str()))
    })
    .await;
    holder.close().await; // lets go of the name: the broker deletes its queue
    common::wait_for_event(&mut events, Duration::from_secs(60), |e| {
        matches!(e, Event::TopologyRecovered { declaration } if declaration.contains(name.as_str()))
    })
    .await;
    // Its consumer is subscribed again: a message sent to it arrives.
    let received = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let sent = observer
                .publish(OutgoingMessage::new("", name.as_str(), b"again".to_vec()).mandatory(true))
                .await;
            if sent.is_ok() {
                if let Ok(got) = tokio::time::timeout(Duration::from_secs(1), sub.next()).await {
                    return got;
                }
            } else {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    })
    .await
    .expect("a message sent to the queue arrives within 60 s");
    let got = received
        .expect("the subscription goes on")
        .expect("decoded");
    assert_eq!(got.body, "again");
    client.close().await;
}

/// What the broker does when a delivery stays unacknowledged past the
/// consumer timeout, and with the ack that comes late, measured with raw
/// lapin (no rabbitkit in the way): what rabbitkit's docs say of each
/// version. A quorum queue, `x-consumer-timeout` of 1 s on the consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_each_version_does_with_a_consumer_timeout_and_the_late_ack() {
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
    };
    use lapin::types::{AMQPValue, FieldTable};
    let client = common::client().await;
    let server = client.server().unwrap();
    let name = common::unique_name("lifecycle.late_ack");
    let queue = Queue::quorum(name.as_str()).declare(&client).await.unwrap();
    queue.send(&"slow task").await.unwrap();
    let conn = lapin::Connection::connect(
        &common::amqp_addrs()[0],
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_qos(1, BasicQosOptions::default()).await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-consumer-timeout".into(), AMQPValue::LongLongInt(1000));
    let mut consumer = ch
        .basic_consume(
            name.as_str().into(),
            "late".into(),
            BasicConsumeOptions::default(),
            args,
        )
        .await
        .unwrap();
    let delivery = consumer.next().await.unwrap().unwrap();
    // What the broker does: cancel the consumer (its stream ends), close
    // the channel (an error), or nothing (no per-consumer timeout).
    let acted = match tokio::time::timeout(Duration::from_secs(10), consumer.next()).await {
        Ok(None) => "consumer cancelled",
        Ok(Some(Err(_))) => "channel closed",
        Ok(Some(Ok(_))) => "delivered again",
        Err(_) => "nothing in 10 s",
    };
    let open_before = ch.status().connected();
    let _ = ch
        .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
        .await;
    // An ack has no reply: a round trip on the channel shows whether the
    // broker closed it over the ack.
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    // The queue returns the message through its log, a moment after the
    // cancel reaches the client: look again (up to 20 s) until it shows,
    // so a return still on its way is not read as a message lost.
    let expected_ready = u32::from(server.cancels_timed_out_consumers());
    let mut after_ack = String::new();
    for _ in 0..100 {
        match ch
            .queue_declare(name.as_str().into(), passive, FieldTable::default())
            .await
        {
            Ok(q) => {
                after_ack = format!("channel open, {} ready", q.message_count());
                if q.message_count() == expected_ready {
                    break;
                }
            }
            Err(e) => {
                after_ack = format!("channel closed: {e}");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "RabbitMQ {}: after the timeout: {acted}; channel open: {open_before}; after the late ack: {after_ack}",
        server.version_text
    );
    if server.cancels_timed_out_consumers() {
        // 4.3: the consumer is cancelled, its channel kept, the message
        // returned to the queue; the late ack is ignored (no error, the
        // channel stays open) and the message waits to be done again.
        // Measured on 4.3.6: "consumer cancelled; channel open: true;
        // after the late ack: channel open, 1 ready".
        assert_eq!(acted, "consumer cancelled");
        assert!(open_before);
        assert_eq!(after_ack, "channel open, 1 ready");
    } else {
        // Before 4.3 the broker checks consumer timeouts on its own
        // schedule (about once a minute) and then closes the channel: a
        // 1 s timeout is not acted on within 10 s, and the ack goes
        // through. Measured on 4.0.5: "nothing in 10 s; channel open:
        // true; after the late ack: channel open, 0 ready".
        assert_eq!(acted, "nothing in 10 s");
        assert_eq!(after_ack, "channel open, 0 ready");
    }
    let _ = conn.close(200, "done".into()).await;
    client.delete_queue(&name).await.unwrap();
}
