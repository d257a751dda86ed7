//! Streams against the real cluster: declared with typed options, read from
//! the first message, an offset, a timestamp; bad input refused before the
//! network. (Resuming after a node is killed: `failover.rs`.)

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rabbitkit::{
    AMQPValue, ConsumeOptions, DeclareError, Queue, StreamOffset, SubscribeError, Subscription,
};

const TOTAL: u32 = 10_000;

/// Sends `range` to the stream, many confirms in flight. Offsets follow
/// arrival order, which concurrent sends may shuffle: tests check offsets,
/// and the set of bodies.
async fn write(queue: &Queue, range: std::ops::Range<u32>) {
    futures::stream::iter(range)
        .map(|n| async move { queue.send(&n).await.map(|_| ()) })
        .buffer_unordered(256)
        .for_each(|sent| async move { sent.expect("confirmed") })
        .await;
}

/// The next `count` messages as `(offset, body)`, each acknowledged.
async fn read(sub: &mut Subscription<u32>, count: usize) -> Vec<(u64, u32)> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let msg = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} within 30 s", got.len()))
            .expect("subscription ended")
            .expect("a decodable message");
        got.push((msg.stream_offset().expect("a stream offset"), msg.body));
        msg.ack().await.expect("ack");
    }
    got
}

/// The first offset is `first`, offsets only grow, and the bodies are
/// exactly `from..to`, each once. (Offsets need not be contiguous: the
/// broker may use some for its own entries.)
fn assert_exactly(got: &[(u64, u32)], first: u64, from: u32, to: u32) {
    assert_eq!(got.first().map(|(o, _)| *o), Some(first), "first offset");
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "offsets only grow");
    let mut bodies: Vec<u32> = got.iter().map(|(_, b)| *b).collect();
    bodies.sort_unstable();
    bodies.dedup();
    assert_eq!(bodies.len(), got.len(), "each body once");
    assert_eq!(bodies.first(), Some(&from));
    assert_eq!(bodies.last(), Some(&(to - 1)));
    assert_eq!(bodies.len(), (to - from) as usize);
}

async fn stream(client: &rabbitkit::Client, prefix: &str) -> Queue {
    Queue::stream(common::unique_name(prefix))
        .max_age(Duration::from_secs(3600))
        .max_length_bytes(100_000_000)
        .stream_max_segment_size_bytes(1_000_000)
        .declare(client)
        .await
        .expect("declare the stream")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_read_from_the_first_then_from_an_offset() {
    let client = common::client().await;
    let queue = stream(&client, "streams.first").await;
    write(&queue, 0..TOTAL).await;

    // From the first: all 10k, offsets 0..9999; then nothing more until the
    // next write, which comes at offset 10000.
    let mut sub = queue
        .subscribe_stream::<u32>(StreamOffset::First)
        .await
        .unwrap();
    let got = read(&mut sub, TOTAL as usize).await;
    assert_exactly(&got, 0, 0, TOTAL);
    let last = got.last().unwrap().0;
    assert_eq!(sub.last_acked_offset(), Some(last));
    write(&queue, TOTAL..TOTAL + 1).await;
    let sentinel = read(&mut sub, 1).await[0];
    assert!(sentinel.0 > last && sentinel.1 == TOTAL, "{sentinel:?}");
    drop(sub);

    // From the offset of the 7500th message: exactly the 2500 from there
    // (then the sentinel).
    let (offset_7500, body_7500) = got[7500];
    let mut sub = queue
        .subscribe_stream::<u32>(StreamOffset::Offset(offset_7500))
        .await
        .unwrap();
    let from = read(&mut sub, 2501).await;
    assert_eq!(from[0], (offset_7500, body_7500));
    assert_eq!(&from[..2500], &got[7500..]);
    assert_eq!(from[2500], sentinel);
    drop(sub);

    // Next: only what is written after subscribing.
    let mut sub = queue
        .subscribe_stream::<u32>(StreamOffset::Next)
        .await
        .unwrap();
    write(&queue, TOTAL + 1..TOTAL + 2).await;
    let next = read(&mut sub, 1).await[0];
    assert!(next.0 > sentinel.0 && next.1 == TOTAL + 1, "{next:?}");
    drop(sub);
    queue.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_read_from_a_timestamp() {
    let client = common::client().await;
    let queue = stream(&client, "streams.timestamp").await;
    write(&queue, 0..TOTAL / 2).await;
    // The broker's resolution is a second: start the second half after the
    // next whole second, and read from that second.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let boundary = Duration::from_secs(now.as_secs() + 1);
    tokio::time::sleep(boundary - now + Duration::from_millis(100)).await;
    write(&queue, TOTAL / 2..TOTAL).await;

    let mut sub = queue
        .subscribe_stream::<u32>(StreamOffset::Timestamp(UNIX_EPOCH + boundary))
        .await
        .unwrap();
    let got = read(&mut sub, (TOTAL / 2) as usize).await;
    // Exactly the second half, from the offset of its first message (the
    // halves were written one after the other).
    let mut all = queue
        .subscribe_stream::<u32>(StreamOffset::First)
        .await
        .unwrap();
    let everything = read(&mut all, TOTAL as usize).await;
    drop(all);
    assert_exactly(&everything, 0, 0, TOTAL);
    let second_half = &everything[(TOTAL / 2) as usize..];
    assert_exactly(&got, second_half[0].0, TOTAL / 2, TOTAL);
    assert_eq!(got, second_half);
    // And nothing else: the next message is one written now.
    write(&queue, TOTAL..TOTAL + 1).await;
    assert_eq!(read(&mut sub, 1).await[0].1, TOTAL);
    drop(sub);
    queue.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_declared_with_its_typed_options() {
    let client = common::client().await;
    let queue = stream(&client, "streams.declare").await;
    // The same declaration again is accepted (same arguments)...
    Queue::stream(queue.name())
        .max_age(Duration::from_secs(3600))
        .max_length_bytes(100_000_000)
        .stream_max_segment_size_bytes(1_000_000)
        .declare(&client)
        .await
        .unwrap();
    // ... another max age is inequivalent: the broker took the first.
    let err = Queue::stream(queue.name())
        .max_age(Duration::from_secs(60))
        .max_length_bytes(100_000_000)
        .stream_max_segment_size_bytes(1_000_000)
        .declare(&client)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DeclareError::Inequivalent { argument, .. } if argument == "x-max-age"),
        "{err:?}"
    );
    queue.delete().await.unwrap();
}

#[test]
fn a_stream_with_classic_or_quorum_only_options_is_refused_before_the_network() {
    let refused = |b: rabbitkit::QueueBuilder, word: &str| match b.build() {
        Err(DeclareError::Invalid { value, reason, .. }) => {
            assert_eq!(value, "events");
            assert!(reason.contains(word), "{word:?} not in {reason:?}");
        }
        other => panic!("expected Invalid for {word}, got {other:?}"),
    };
    refused(Queue::stream("events").exclusive(true), "exclusive");
    refused(Queue::stream("events").auto_delete(true), "auto-delete");
    refused(Queue::stream("events").durable(false), "durable");
    refused(Queue::stream("events").max_priority(5), "x-max-priority");
    refused(
        Queue::stream("events").message_ttl(Duration::from_secs(1)),
        "x-message-ttl",
    );
    refused(
        Queue::stream("events").dead_letter("dlx"),
        "x-dead-letter-exchange",
    );
    refused(Queue::stream("events").max_length(10), "x-max-length");
    refused(
        Queue::stream("events").delivery_limit(3),
        "x-delivery-limit",
    );
    refused(
        Queue::stream("events").argument("x-quorum-initial-group-size", AMQPValue::LongInt(3)),
        "x-quorum-initial-group-size",
    );
    // Stream-only options on a quorum or classic queue.
    match Queue::named("events")
        .max_age(Duration::from_secs(60))
        .build()
    {
        Err(DeclareError::Invalid { reason, .. }) => assert!(reason.contains("x-max-age")),
        other => panic!("{other:?}"),
    }
    assert!(
        Queue::durable("events")
            .classic()
            .stream_max_segment_size_bytes(1)
            .build()
            .is_err()
    );
    // A stream keeps x-max-length-bytes.
    let spec = Queue::stream("events").max_length_bytes(1).build().unwrap();
    assert_eq!(
        spec.arguments.inner().get("x-queue-type"),
        Some(&AMQPValue::LongString("stream".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_consumer_without_prefetch_or_with_no_ack_is_refused() {
    let client = common::client().await;
    let queue = stream(&client, "streams.consumer").await;
    for options in [
        ConsumeOptions::new()
            .prefetch(0)
            .stream_offset(StreamOffset::First),
        ConsumeOptions::new()
            .no_ack(true)
            .stream_offset(StreamOffset::First),
        // Any consumer of a queue declared as a stream is a stream consumer.
        ConsumeOptions::new().prefetch(0),
    ] {
        match queue.subscribe_with::<u32>(options.clone()).await {
            Err(SubscribeError::Invalid { what, .. }) => assert_eq!(what, "stream consumer"),
            other => panic!("{options:?}: {other:?}"),
        }
    }
    // Without a prefetch of its own, it takes the client's (100), and
    // without an offset, on a queue declared as a stream, reads what comes
    // next.
    let mut sub = queue.subscribe::<u32>().await.unwrap();
    write(&queue, 7..8).await;
    let got = read(&mut sub, 1).await;
    assert_eq!(got[0].1, 7);
    drop(sub);
    queue.delete().await.unwrap();
}
