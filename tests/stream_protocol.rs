//! rabbitkit-stream against the real cluster (stream protocol, 5552-5554):
//! typed confirmed publishing, offset specs, offsets stored under a
//! consumer's name, a producer name's sequence, single active consumer,
//! bad input. (A node SIGKILLed under a producer and a consumer:
//! `failover.rs`.)

mod common;

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use rabbitkit_stream::{
    ErrorKind, OffsetSpec, StreamClient, StreamConsumer, StreamMessage, StreamSpec,
};
use serde::{Deserialize, Serialize};

use common::streams::{stream_addrs, stream_client, stream_options};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    n: u32,
    item: String,
}

fn order(n: u32) -> Order {
    Order {
        n,
        item: format!("item-{n}"),
    }
}

async fn new_stream(client: &StreamClient, prefix: &str) -> String {
    let name = common::unique_name(prefix);
    client
        .declare_stream(StreamSpec::new(&name).max_age(Duration::from_secs(3600)))
        .await
        .expect("declare the stream");
    name
}

/// Sends `range` through one producer, every confirm awaited.
async fn write(client: &StreamClient, stream: &str, name: &str, range: std::ops::Range<u32>) {
    let producer = client
        .producer::<Order>(stream, name)
        .build()
        .await
        .expect("producer");
    let confirms: Vec<_> = range.map(|n| producer.publish(&order(n))).collect();
    for c in confirms {
        c.await.expect("confirmed");
    }
    producer.close().await.expect("close");
}

async fn read<T: serde::de::DeserializeOwned>(
    consumer: &mut StreamConsumer<T>,
    count: usize,
) -> Vec<StreamMessage<T>> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let msg = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {count} within 30 s; offsets {:?}",
                    got.len(),
                    got.iter()
                        .map(|m: &StreamMessage<T>| m.offset)
                        .collect::<Vec<_>>()
                )
            })
            .expect("consumer ended")
            .expect("a decodable message");
        got.push(msg);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_typed_messages_are_read_from_first_offset_last_next_and_timestamp() {
    let client = stream_client().await;
    let stream = new_stream(&client, "sp.specs").await;
    write(&client, &stream, "writer", 0..1000).await;

    // First: all of them, in order, offsets 0..999.
    let mut first = client
        .consumer::<Order>(&stream)
        .offset(OffsetSpec::First)
        .build()
        .await
        .unwrap();
    let got = read(&mut first, 1000).await;
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.body, order(i as u32));
        assert_eq!(m.offset, i as u64);
    }
    first.close().await.unwrap();

    // An offset: from there on.
    let mut from = client
        .consumer::<Order>(&stream)
        .offset(OffsetSpec::Offset(600))
        .build()
        .await
        .unwrap();
    let got = read(&mut from, 400).await;
    assert_eq!(got[0].offset, 600);
    assert_eq!(got[0].body, order(600));
    assert_eq!(got[399].body, order(999));
    from.close().await.unwrap();

    // Last: the last chunk, which holds message 999.
    let mut last = client
        .consumer::<Order>(&stream)
        .offset(OffsetSpec::Last)
        .build()
        .await
        .unwrap();
    let mut bodies = vec![];
    loop {
        let m = read(&mut last, 1).await.remove(0);
        bodies.push(m.body.n);
        if m.body.n == 999 {
            break;
        }
    }
    assert!(
        bodies.len() < 1000,
        "Last starts at the last chunk, not the first"
    );
    last.close().await.unwrap();

    // Next and a timestamp: only what is written after they start.
    let mut next = client
        .consumer::<Order>(&stream)
        .offset(OffsetSpec::Next)
        .build()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let since = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    write(&client, &stream, "writer", 1000..1010).await;
    let got = read(&mut next, 10).await;
    assert_eq!(got[0].body, order(1000));
    assert_eq!(got[0].offset, 1000);
    next.close().await.unwrap();
    let mut at = client
        .consumer::<Order>(&stream)
        .offset(OffsetSpec::Timestamp(since))
        .build()
        .await
        .unwrap();
    let got = read(&mut at, 10).await;
    assert_eq!(got[0].body, order(1000), "the chunks written after `since`");
    at.close().await.unwrap();
    client.delete_stream(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_name_continues_its_sequence_and_batches_are_confirmed_in_order() {
    let client = stream_client().await;
    let stream = new_stream(&client, "sp.names").await;
    write(&client, &stream, "app-1", 0..100).await;
    // The same name again (an application restarted): its ids continue
    // after the broker's last one, so nothing it sends now is dropped.
    let producer = client
        .producer::<Order>(&stream, "app-1")
        .build()
        .await
        .unwrap();
    let batch: Vec<Order> = (100..300).map(order).collect();
    producer.send_batch(&batch).await.unwrap();
    producer.send(&order(300)).await.unwrap();
    assert_eq!(producer.unconfirmed(), 0);
    producer.close().await.unwrap();

    let mut all = client
        .consumer::<Order>(&stream)
        .offset(OffsetSpec::First)
        .build()
        .await
        .unwrap();
    let got = read(&mut all, 301).await;
    let bodies: Vec<u32> = got.iter().map(|m| m.body.n).collect();
    assert_eq!(bodies, (0..301).collect::<Vec<_>>());
    all.close().await.unwrap();
    client.delete_stream(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_consumer_stores_its_offset_and_resumes_right_after_it() {
    let client = stream_client().await;
    let stream = new_stream(&client, "sp.offsets").await;
    write(&client, &stream, "writer", 0..500).await;

    // Reads 120, then stops gracefully: the 120th (offset 119) is stored.
    let mut reader = client
        .consumer::<Order>(&stream)
        .name("reader")
        .offset(OffsetSpec::First)
        .store_every(50, Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    let got = read(&mut reader, 120).await;
    assert_eq!(got[119].offset, 119);
    reader.close().await.unwrap();
    assert_eq!(
        client.stored_offset(&stream, "reader").await.unwrap(),
        Some(119)
    );

    // Restarted under the name: from offset 120, whatever its spec says.
    let mut again = client
        .consumer::<Order>(&stream)
        .name("reader")
        .offset(OffsetSpec::First)
        .store_every(100, Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    let got = read(&mut again, 380).await;
    assert_eq!(got[0].offset, 120);
    assert_eq!(got[0].body, order(120));
    assert_eq!(got[379].body, order(499));
    // Every N processed messages, by count alone (the interval is an
    // hour): the 300th processed one (offset 419) asks for a store, which
    // stores what is processed by the time it runs: at least 419, never
    // past the last processed one (498: the 380th, 499, is handed out,
    // not processed).
    let stored = wait_stored(&client, &stream, "reader", 419).await;
    assert!(
        stored.is_some_and(|o| (419..=498).contains(&o)),
        "{stored:?}"
    );
    drop(again);
    // Another name has its own offset: none stored.
    assert_eq!(client.stored_offset(&stream, "other").await.unwrap(), None);
    client.delete_stream(&stream).await.unwrap();
}

/// Polls the stored offset (stores are asynchronous) until it is at least
/// `want`, for up to 10 s; returns what was there last.
async fn wait_stored(client: &StreamClient, stream: &str, name: &str, want: u64) -> Option<u64> {
    let mut last = None;
    for _ in 0..100 {
        last = client.stored_offset(stream, name).await.unwrap();
        if last.is_some_and(|o| o >= want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

/// Single active consumer for streams arrived in RabbitMQ 3.11: `cargo
/// xtask test --rabbitmq 3.10` filters this test out (reported skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumer_a_standby_takes_over_after_the_stored_offset_since_3_11() {
    let client = stream_client().await;
    let stream = new_stream(&client, "sp.sac").await;
    write(&client, &stream, "writer", 0..200).await;
    let consumer = |c: &StreamClient| {
        c.consumer::<Order>(&stream)
            .name("group")
            .single_active(true)
            .offset(OffsetSpec::First)
            .build()
    };
    let mut active = consumer(&client).await.unwrap();
    let got = read(&mut active, 50).await;
    assert_eq!(got[0].offset, 0);
    let mut standby = consumer(&client).await.unwrap();
    // The standby receives nothing while the first is active.
    let quiet = tokio::time::timeout(Duration::from_millis(1500), standby.next()).await;
    assert!(
        quiet.is_err(),
        "the standby received while the other was active"
    );
    // The active one stops (storing offset 49): the standby takes over at 50.
    active.close().await.unwrap();
    let got = read(&mut standby, 150).await;
    assert_eq!(got[0].offset, 50);
    assert_eq!(got[149].body, order(199));
    standby.close().await.unwrap();
    client.delete_stream(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_typed_error_before_anything_is_sent() {
    let client = stream_client().await;
    // A stream that does not exist.
    let missing = common::unique_name("sp.missing");
    let e = client
        .producer::<Order>(&missing, "p")
        .build()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StreamNotFound, "{e}");
    let e = client
        .consumer::<Order>(&missing)
        .build()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StreamNotFound, "{e}");
    // Names the broker cannot take.
    let e = client
        .declare_stream(StreamSpec::new("x".repeat(256)))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = client
        .declare_stream(StreamSpec::new(""))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    // A single active consumer needs a name.
    let stream = new_stream(&client, "sp.bad").await;
    let e = client
        .consumer::<Order>(&stream)
        .single_active(true)
        .build()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    // A body over the frame size: refused before the network; the producer
    // goes on, and only the good messages are in the stream.
    let producer = client
        .producer::<String>(&stream, "p")
        .build()
        .await
        .unwrap();
    producer.send(&"before".to_owned()).await.unwrap();
    let e = producer
        .send(&"x".repeat(2 * 1024 * 1024))
        .await
        .unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::TooLarge { .. }), "{e:?}");
    let e = producer
        .send_batch(&["ok".to_owned(), "y".repeat(2 * 1024 * 1024)])
        .await
        .unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::TooLarge { .. }), "{e:?}");
    producer.send(&"after".to_owned()).await.unwrap();
    producer.close().await.unwrap();
    let mut all = client
        .consumer::<String>(&stream)
        .offset(OffsetSpec::First)
        .build()
        .await
        .unwrap();
    let got: Vec<String> = read(&mut all, 2)
        .await
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(got, ["before", "after"]);
    // A body of another type is a decode error for that message only.
    let mut wrong = client
        .consumer::<Order>(&stream)
        .offset(OffsetSpec::First)
        .build()
        .await
        .unwrap();
    let e = wrong.next().await.unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Decode);
    all.close().await.unwrap();
    wrong.close().await.unwrap();
    client.delete_stream(&stream).await.unwrap();
    let e = client.delete_stream(&stream).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StreamNotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_show_and_a_wrong_password_is_an_authentication_error() {
    common::ensure_cluster();
    let secret = "wr0ng-s3cret";
    let urls: Vec<String> = stream_addrs()
        .iter()
        .map(|u| u.replace("guest:guest@", &format!("guest:{secret}@")))
        .collect();
    let e = stream_options().connect(urls).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Authentication, "{e:?}");
    assert!(!format!("{e} {e:?}").contains(secret));
    let client = stream_client().await;
    let shown = format!("{client:?} {:?}", client.endpoints());
    assert!(!shown.contains("guest:guest"), "{shown}");
    assert!(shown.contains("guest:***@"), "{shown}");
}

/// A stream deleted under a live producer and consumer: the producer's
/// pending and later sends fail with `StreamNotFound` (not after the
/// reconnection limit, set here to an hour), the consumer's stream ends
/// with that error; what was confirmed before was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_fails_the_sends_and_ends_the_consumer_with_stream_not_found() {
    common::ensure_cluster();
    let client = stream_options()
        .reconnect_for(Duration::from_secs(3600))
        .connect(stream_addrs())
        .await
        .unwrap();
    let stream = new_stream(&client, "sp.deleted").await;
    let producer = client
        .producer::<Order>(&stream, "doomed")
        .build()
        .await
        .unwrap();
    let mut events = producer.events();
    let mut consumer = client
        .consumer::<Order>(&stream)
        .offset(OffsetSpec::First)
        .build()
        .await
        .unwrap();
    for n in 0..10 {
        producer.send(&order(n)).await.unwrap();
    }
    let got = read(&mut consumer, 10).await;
    assert_eq!(got[9].body, order(9));

    client.delete_stream(&stream).await.unwrap();
    // Bounded only so that a hang fails the test instead of the run.
    let bound = Duration::from_secs(60);
    let gave_up = common::wait_for_event_of(&mut events, bound, |e| {
        matches!(e, rabbitkit_stream::StreamEvent::GaveUp { .. })
    })
    .await;
    eprintln!("producer: {gave_up}");
    let e = tokio::time::timeout(bound, producer.send(&order(10)))
        .await
        .expect("a send to a deleted stream fails, it does not hang")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StreamNotFound, "{e}");
    let end = tokio::time::timeout(bound, consumer.next())
        .await
        .expect("the consumer of a deleted stream ends, it does not hang");
    let e = end.expect("an error first").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StreamNotFound, "{e}");
    assert!(consumer.next().await.is_none(), "then the stream ends");
    let e = producer.close().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StreamNotFound, "{e}");
}

/// What the broker lacks is a typed error before anything is sent: super
/// streams need RabbitMQ 3.13 (their declaration over the stream protocol),
/// filters 3.13 too. On an older broker (3.10 in `cargo xtask test
/// --rabbitmq 3.10`) the errors; on a newer one (4.3) the same calls work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_older_broker_lacks_is_a_typed_error_and_creates_nothing() {
    use rabbitkit_stream::{ConsumerFilter, SuperStreamSpec};
    let amqp = common::client().await;
    let version = amqp.server_version().expect("identified");
    let new_enough = version.at_least(3, 13);
    eprintln!("broker {version:?}: super streams and filters expected: {new_enough}");
    let client = stream_client().await;
    let name = common::unique_name("sp.older");
    let declared = client
        .declare_super_stream(SuperStreamSpec::new(&name, 2))
        .await;
    let stream = new_stream(&client, "sp.older.filter").await;
    let filtered = client
        .consumer::<Order>(&stream)
        .offset(OffsetSpec::First)
        .filter(ConsumerFilter::new(["eu"]))
        .build()
        .await;
    let filtering = client
        .producer::<Order>(&stream, "filtering")
        .filter_value(|o: &Order| Some(o.item.clone()))
        .build()
        .await;
    if new_enough {
        filtering
            .expect("filter values on 3.13+")
            .close()
            .await
            .unwrap();
        declared.expect("super streams on 3.13+");
        filtered.expect("filters on 3.13+").close().await.unwrap();
        client.delete_super_stream(&name).await.unwrap();
    } else {
        let e = declared.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SuperStreamsUnsupported, "{e}");
        // Nothing was created: no partition stream exists.
        let e = client
            .consumer::<Order>(&format!("{name}-0"))
            .build()
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::StreamNotFound, "{e}");
        let e = filtered.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::FilteringUnsupported, "{e}");
        let e = filtering.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::FilteringUnsupported, "{e}");
    }
    client.delete_stream(&stream).await.unwrap();
}
