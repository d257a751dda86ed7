//! rabbitkit-stream's super streams, filtering and producer names against
//! the real cluster (stream protocol, 5552-5554): a super stream declared
//! once, routing by key (hash as the other stream clients, or the broker's
//! bindings), order per key, every message once, a single active consumer
//! standby taking a partition over from the stored offset, consumer
//! filters with the client-side post-filter, and the bad input of each.
//!
//! Super streams and single active consumer arrived in RabbitMQ 3.11, their
//! declaration over the stream protocol and filtering in 3.13: every test
//! here declares a super stream, so every name ends `_since_3_13`, and
//! `cargo xtask test --rabbitmq 3.10` skips them (and this binary). What
//! 3.10 answers instead is tested in `stream_protocol.rs`.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use rabbitkit_stream::{
    ConsumerFilter, ErrorKind, OffsetSpec, Routing, StreamClient, StreamSpec, SuperStreamConsumer,
    SuperStreamMessage, SuperStreamSpec, hash_partition,
};
use serde::{Deserialize, Serialize};

use common::streams::stream_client;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Event {
    key: String,
    seq: u32,
}

const KEYS: usize = 12;

fn key(k: usize) -> String {
    format!("customer-{k}")
}

async fn new_super_stream(client: &StreamClient, prefix: &str, partitions: usize) -> String {
    let name = common::unique_name(prefix);
    client
        .declare_super_stream(
            SuperStreamSpec::new(&name, partitions).max_age(Duration::from_secs(3600)),
        )
        .await
        .expect("declare the super stream");
    name
}

/// Sends `per_key` events of each of the [`KEYS`] keys, seq `from..`,
/// interleaved, every confirm awaited.
async fn write(client: &StreamClient, super_stream: &str, from: u32, per_key: u32) {
    let producer = client
        .super_stream_producer::<Event>(super_stream, "writer")
        .build()
        .await
        .expect("producer");
    let mut confirms = vec![];
    for seq in from..from + per_key {
        for k in 0..KEYS {
            let e = Event { key: key(k), seq };
            confirms.push(producer.publish(&e.key, &e).await.expect("routed"));
        }
    }
    for c in confirms {
        c.await.expect("confirmed");
    }
    producer.close().await.expect("close");
}

async fn next(consumer: &mut SuperStreamConsumer<Event>) -> SuperStreamMessage<Event> {
    tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("a message within 30 s")
        .expect("consumer ended")
        .expect("a decodable message")
}

/// Every event of every key once, each key's in order and in one partition.
fn assert_once_in_order(got: &[SuperStreamMessage<Event>], per_key: u32) {
    let mut seen = HashSet::new();
    let mut by_key: BTreeMap<&str, (Vec<u32>, HashSet<&str>)> = BTreeMap::new();
    for m in got {
        assert!(seen.insert(&m.body), "{:?} read twice", m.body);
        let e = by_key.entry(&m.body.key).or_default();
        e.0.push(m.body.seq);
        e.1.insert(&m.partition);
    }
    assert_eq!(by_key.len(), KEYS);
    for (k, (seqs, partitions)) in by_key {
        assert_eq!(
            seqs,
            (0..per_key).collect::<Vec<_>>(),
            "key {k}: order or loss"
        );
        assert_eq!(partitions.len(), 1, "key {k} in partitions {partitions:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_super_stream_routes_each_key_to_its_hash_partition_in_order_once_since_3_13() {
    let client = stream_client().await;
    let name = new_super_stream(&client, "ss.hash", 3).await;
    // Declared again: a no-op; with other partitions: refused.
    client
        .declare_super_stream(SuperStreamSpec::new(&name, 3))
        .await
        .expect("declaring the same super stream again");
    let e = client
        .declare_super_stream(SuperStreamSpec::new(&name, 4))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Refused, "{e}");
    let partitions = client.super_stream_partitions(&name).await.unwrap();
    assert_eq!(
        partitions,
        vec![
            format!("{name}-0"),
            format!("{name}-1"),
            format!("{name}-2")
        ]
    );

    write(&client, &name, 0, 50).await;
    let reader = || {
        client
            .super_stream_consumer::<Event>(&name)
            .name("reader")
            .offset(OffsetSpec::First)
            .build()
    };
    let mut consumer = reader().await.unwrap();
    let mut got = vec![];
    while got.len() < KEYS * 50 {
        got.push(next(&mut consumer).await);
    }
    assert_once_in_order(&got, 50);
    // Each key is in the partition the other stream clients' hash picks.
    for m in &got {
        assert_eq!(
            m.partition,
            partitions[hash_partition(&m.body.key, 3)],
            "{:?}",
            m.body
        );
    }
    let used: HashSet<_> = got.iter().map(|m| &m.partition).collect();
    assert_eq!(used.len(), 3, "12 keys spread over the 3 partitions");
    // Nothing more.
    let more = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(more.is_err(), "a message more: {more:?}");
    // Closed, it stores its offset per partition under its name; started
    // again, it reads exactly what came since.
    consumer.close().await.unwrap();
    write(&client, &name, 50, 5).await;
    let mut consumer = reader().await.unwrap();
    let mut since = vec![];
    while since.len() < KEYS * 5 {
        since.push(next(&mut consumer).await);
    }
    assert!(
        since.iter().all(|m| m.body.seq >= 50),
        "read again after a restart: {:?}",
        since.iter().find(|m| m.body.seq < 50)
    );
    got.extend(since);
    assert_once_in_order(&got, 55);
    let more = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(more.is_err(), "a message more: {more:?}");
    consumer.close().await.unwrap();

    client.delete_super_stream(&name).await.unwrap();
    let e = client.super_stream_partitions(&name).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StreamNotFound, "{e}");
    let e = client.delete_super_stream(&name).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StreamNotFound, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_key_mode_follows_the_bindings_and_refuses_an_unbound_key_since_3_13() {
    let client = stream_client().await;
    let name = common::unique_name("ss.keys");
    client
        .declare_super_stream(SuperStreamSpec::with_keys(&name, ["amer", "emea", "apac"]))
        .await
        .unwrap();
    let producer = client
        .super_stream_producer::<String>(&name, "regional")
        .routing(Routing::Key)
        .build()
        .await
        .unwrap();
    for region in ["emea", "apac", "emea"] {
        producer
            .send(region, &format!("order from {region}"))
            .await
            .unwrap();
    }
    let e = producer
        .send("mars", &"lost?".to_owned())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unroutable, "{e}");
    producer.close().await.unwrap();

    let mut consumer = client
        .super_stream_consumer::<String>(&name)
        .offset(OffsetSpec::First)
        .build()
        .await
        .unwrap();
    let mut got = vec![];
    for _ in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push((m.partition, m.body));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            (format!("{name}-apac"), "order from apac".to_owned()),
            (format!("{name}-emea"), "order from emea".to_owned()),
            (format!("{name}-emea"), "order from emea".to_owned()),
        ]
    );
    let more = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(more.is_err(), "the unroutable message was sent: {more:?}");
    consumer.close().await.unwrap();
    client.delete_super_stream(&name).await.unwrap();
}

/// The official client's super stream producer (rabbitmq-stream-client,
/// hash routing: the same murmur3 as the Java, .NET and Go clients) and
/// rabbitkit-stream put every key in the same partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_written_by_the_official_client_are_in_the_partitions_rabbitkit_picks_since_3_13() {
    use rabbitmq_stream_client::Environment;
    use rabbitmq_stream_client::types::{
        HashRoutingMurmurStrategy, Message, RoutingStrategy, SimpleValue,
    };
    fn routing_key(m: &Message) -> String {
        match m.application_properties().and_then(|p| p.get("key")) {
            Some(SimpleValue::String(s)) => s.clone(),
            _ => String::new(),
        }
    }
    let client = stream_client().await;
    let name = new_super_stream(&client, "ss.interop", 5).await;
    let partitions = client.super_stream_partitions(&name).await.unwrap();
    // The official client follows the advertised host, which the local
    // cluster's nodes resolve to 127.0.0.1.
    let ep = &client.endpoints()[0];
    let env = Environment::builder()
        .host(ep.host())
        .port(ep.port())
        .build()
        .await
        .unwrap();
    let mut producer = env
        .super_stream_producer(RoutingStrategy::HashRoutingStrategy(
            HashRoutingMurmurStrategy {
                routing_extractor: &routing_key,
            },
        ))
        .build(&name)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for k in 0..100 {
        let key = format!("customer-{k}");
        let msg = Message::builder()
            .properties()
            .content_type("text/plain")
            .message_builder()
            .application_properties()
            .insert("key", key.as_str())
            .message_builder()
            .body(key.clone().into_bytes())
            .build();
        let tx = tx.clone();
        producer
            .send(msg, move |r| {
                let _ = tx.send(r.map(|s| s.confirmed()).unwrap_or(false));
                async {}
            })
            .await
            .unwrap();
    }
    for _ in 0..100 {
        assert!(rx.recv().await.unwrap(), "confirmed by the broker");
    }
    producer.close().await.unwrap();

    let mut consumer = client
        .super_stream_consumer::<String>(&name)
        .offset(OffsetSpec::First)
        .build()
        .await
        .unwrap();
    let mut seen = HashSet::new();
    while seen.len() < 100 {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.next())
            .await
            .expect("a message within 30 s")
            .unwrap()
            .unwrap();
        assert_eq!(
            m.partition,
            partitions[hash_partition(&m.body, partitions.len())],
            "key {}",
            m.body
        );
        assert!(seen.insert(m.body));
    }
    consumer.close().await.unwrap();
    client.delete_super_stream(&name).await.unwrap();
}

/// Two consumers of one name with single active consumer share the three
/// partitions; when one closes, the other takes its partitions over after
/// the offsets it stored: every message once, each key in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_the_partitions_of_a_closed_consumer_from_its_stored_offset_since_3_13()
 {
    let client = stream_client().await;
    let name = new_super_stream(&client, "ss.sac", 3).await;
    let consumer = || {
        client
            .super_stream_consumer::<Event>(&name)
            .name("billing")
            .single_active(true)
            .offset(OffsetSpec::First)
            .build()
    };
    let mut a = consumer().await.unwrap();
    let mut b = consumer().await.unwrap();
    // Let the broker settle which partitions each one has.
    tokio::time::sleep(Duration::from_millis(500)).await;

    write(&client, &name, 0, 30).await;
    let (mut from_a, mut from_b) = (vec![], vec![]);
    while from_a.len() + from_b.len() < KEYS * 30 {
        tokio::select! {
            m = next(&mut a) => from_a.push(m),
            m = next(&mut b) => from_b.push(m),
        }
    }
    assert!(
        !from_a.is_empty() && !from_b.is_empty(),
        "both consumers are active on some partition: {} and {}",
        from_a.len(),
        from_b.len()
    );
    let parts_a: HashSet<_> = from_a.iter().map(|m| m.partition.clone()).collect();
    let parts_b: HashSet<_> = from_b.iter().map(|m| m.partition.clone()).collect();
    assert!(parts_a.is_disjoint(&parts_b), "{parts_a:?} / {parts_b:?}");

    // A closes (storing its offsets); B takes A's partitions over after them.
    a.close().await.unwrap();
    write(&client, &name, 30, 30).await;
    let mut rest = vec![];
    while from_a.len() + from_b.len() + rest.len() < KEYS * 60 {
        rest.push(next(&mut b).await);
    }
    let took_over: HashSet<_> = rest.iter().map(|m| m.partition.clone()).collect();
    assert!(
        parts_a.is_subset(&took_over),
        "B reads A's partitions {parts_a:?}: {took_over:?}"
    );
    let more = tokio::time::timeout(Duration::from_millis(500), b.next()).await;
    assert!(more.is_err(), "a message more: {more:?}");
    let mut all = from_a;
    all.extend(from_b);
    all.extend(rest);
    // Per partition in offset order = per key in order (a key has one partition).
    all.sort_by(|x, y| (&x.partition, x.offset).cmp(&(&y.partition, y.offset)));
    assert_once_in_order(&all, 60);
    b.close().await.unwrap();
    client.delete_super_stream(&name).await.unwrap();
}

/// A consumer joining while another reads: the broker moves partitions to
/// it; the one giving a partition up stores what it processed first, so the
/// newcomer starts there, not from the first offset: nothing lost, and read
/// again at most the message each moved partition had handed out last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_joining_takes_partitions_over_after_what_the_other_processed_since_3_13() {
    let client = stream_client().await;
    let name = new_super_stream(&client, "ss.rebalance", 3).await;
    let consumer = || {
        client
            .super_stream_consumer::<Event>(&name)
            .name("ledger")
            .single_active(true)
            .offset(OffsetSpec::First)
            .build()
    };
    let mut a = consumer().await.unwrap();
    write(&client, &name, 0, 30).await;
    let mut got = vec![];
    while got.len() < KEYS * 30 {
        got.push(next(&mut a).await);
    }
    // B joins: some partition moves from A to B.
    let mut b = consumer().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    write(&client, &name, 30, 30).await;
    let mut seen: HashSet<Event> = got.iter().map(|m| m.body.clone()).collect();
    let (mut from_b, mut again) = (0, vec![]);
    while seen.len() < KEYS * 60 {
        let m = tokio::select! {
            m = next(&mut a) => m,
            m = next(&mut b) => { from_b += 1; m }
        };
        if !seen.insert(m.body.clone()) {
            again.push(m.body);
        }
    }
    assert!(from_b > 0, "B took no partition over");
    assert!(
        again.len() <= 3 && again.iter().all(|e| e.seq == 29),
        "read again: {again:?} (more than the last message of each moved partition)"
    );
    let more = tokio::time::timeout(Duration::from_millis(500), async {
        tokio::select! { m = a.next() => m, m = b.next() => m }
    })
    .await;
    assert!(more.is_err(), "a message more: {more:?}");
    a.close().await.unwrap();
    b.close().await.unwrap();
    client.delete_super_stream(&name).await.unwrap();
}

/// A consumer's filter: the broker skips chunks without its values, and the
/// post-filter drops the messages of other values in the chunks it sends.
/// The values are written by AMQP 0-9-1 publishers (rabbitkit's
/// `x-stream-filter-value` header), interleaved so chunks hold both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_consumer_gets_exactly_the_matching_messages_since_3_13() {
    use rabbitkit::{PublishOptions, Queue};
    let amqp = common::client().await;
    let name = common::unique_name("ss.filter");
    let queue = Queue::stream(&name)
        .max_age(Duration::from_secs(3600))
        .declare(&amqp)
        .await
        .unwrap();
    let states = ["california", "texas", "ohio"];
    let mut sends = vec![];
    for seq in 0..600u32 {
        let state = states[seq as usize % 3];
        let event = Event {
            key: state.to_owned(),
            seq,
        };
        let options = PublishOptions::new().header("x-stream-filter-value", state);
        let q = &queue;
        sends.push(async move { q.send_with(&event, options).await });
    }
    for r in futures::future::join_all(sends).await {
        r.expect("confirmed");
    }
    // Five unfiltered ones.
    for seq in 600..605u32 {
        queue
            .send(&Event {
                key: "none".into(),
                seq,
            })
            .await
            .unwrap();
    }

    let client = stream_client().await;
    let read = |filter: ConsumerFilter, count: usize| {
        let client = client.clone();
        let name = name.clone();
        async move {
            let mut c = client
                .consumer::<Event>(&name)
                .offset(OffsetSpec::First)
                .filter(filter)
                .build()
                .await
                .unwrap();
            let mut got = vec![];
            while got.len() < count {
                let m = tokio::time::timeout(Duration::from_secs(30), c.next())
                    .await
                    .unwrap_or_else(|_| panic!("only {} of {count}", got.len()))
                    .unwrap()
                    .unwrap();
                got.push(m.body);
            }
            let more = tokio::time::timeout(Duration::from_millis(500), c.next()).await;
            assert!(more.is_err(), "a message more: {more:?}");
            c.close().await.unwrap();
            got
        }
    };
    let california = read(ConsumerFilter::new(["california"]), 200).await;
    assert!(california.iter().all(|e| e.key == "california"));
    let mut seqs: Vec<u32> = california.iter().map(|e| e.seq).collect();
    seqs.sort();
    seqs.dedup();
    assert_eq!(
        seqs,
        (0..600).step_by(3).collect::<Vec<_>>(),
        "each once, none lost"
    );

    let two = read(
        ConsumerFilter::new(["texas", "ohio"]).match_unfiltered(true),
        405,
    )
    .await;
    assert!(two.iter().all(|e| e.key != "california"));
    assert_eq!(two.iter().filter(|e| e.key == "none").count(), 5);
    assert_eq!(two.iter().map(|e| e.seq).collect::<HashSet<_>>().len(), 405);

    // A super stream's consumer filters every partition the same way; its
    // partitions are streams AMQP 0-9-1 publishers can write to.
    let ss = new_super_stream(&client, "ss.filter", 2).await;
    for p in client.super_stream_partitions(&ss).await.unwrap() {
        // As the broker made it (a super stream's partitions are balanced).
        let q = Queue::stream(&p)
            .max_age(Duration::from_secs(3600))
            .argument(
                "x-queue-leader-locator",
                rabbitkit::AMQPValue::LongString("balanced".into()),
            )
            .declare(&amqp)
            .await
            .unwrap();
        for seq in 0..60u32 {
            let state = states[seq as usize % 3];
            let e = Event {
                key: format!("{p}/{state}"),
                seq,
            };
            q.send_with(
                &e,
                PublishOptions::new().header("x-stream-filter-value", state),
            )
            .await
            .unwrap();
        }
    }
    let mut c = client
        .super_stream_consumer::<Event>(&ss)
        .offset(OffsetSpec::First)
        .filter(ConsumerFilter::new(["ohio"]))
        .build()
        .await
        .unwrap();
    let mut got = HashSet::new();
    while got.len() < 40 {
        let m = tokio::time::timeout(Duration::from_secs(30), c.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of 40", got.len()))
            .unwrap()
            .unwrap();
        assert!(m.body.key.ends_with("/ohio"), "{:?}", m.body);
        assert!(got.insert(m.body), "read twice");
    }
    let more = tokio::time::timeout(Duration::from_millis(500), c.next()).await;
    assert!(more.is_err(), "a message more: {more:?}");
    c.close().await.unwrap();
    client.delete_super_stream(&ss).await.unwrap();

    // A filter without values: refused before the network.
    let e = client
        .consumer::<Event>(&name)
        .filter(ConsumerFilter::new(Vec::<String>::new()))
        .build()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    queue.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_to_super_streams_and_producer_names_is_a_typed_error_nothing_lost_since_3_13() {
    let client = stream_client().await;
    // Partition counts the broker would refuse or that are surely a typo,
    // and names too long for the broker: refused before the network.
    for spec in [
        SuperStreamSpec::new(common::unique_name("ss.zero"), 0),
        SuperStreamSpec::new(common::unique_name("ss.huge"), 1_000_000),
        SuperStreamSpec::new("x".repeat(254), 3),
        SuperStreamSpec::with_keys(common::unique_name("ss.dup"), ["a", "a"]),
    ] {
        let e = client.declare_super_stream(spec).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
    // A missing super stream.
    let missing = common::unique_name("ss.missing");
    let e = client
        .super_stream_producer::<Event>(&missing, "p")
        .build()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StreamNotFound, "{e}");
    let e = client
        .super_stream_consumer::<Event>(&missing)
        .build()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StreamNotFound, "{e}");

    // A producer name reused while its producer is open: refused, on the
    // super stream and on a partition; free again once it is closed, and
    // the sequence goes on: nothing lost, nothing dropped as a duplicate.
    let name = new_super_stream(&client, "ss.names", 2).await;
    let first = client
        .super_stream_producer::<String>(&name, "shop")
        .build()
        .await
        .unwrap();
    let e = client
        .super_stream_producer::<String>(&name, "shop")
        .build()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProducerNameInUse, "{e}");
    let e = client
        .producer::<String>(&format!("{name}-0"), "shop")
        .build()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProducerNameInUse, "{e}");
    // Another name is fine meanwhile.
    let other = client
        .super_stream_producer::<String>(&name, "other-shop")
        .build()
        .await
        .unwrap();
    other.close().await.unwrap();
    for i in 0..10 {
        first.send("k", &format!("first {i}")).await.unwrap();
    }
    // A body over the frame size: refused, nothing sent, the producer goes on.
    let e = first
        .send("k", &"x".repeat(2 * 1024 * 1024))
        .await
        .unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::TooLarge { .. }), "{e:?}");
    first.close().await.unwrap();
    let second = client
        .super_stream_producer::<String>(&name, "shop")
        .build()
        .await
        .unwrap();
    for i in 0..10 {
        second.send("k", &format!("second {i}")).await.unwrap();
    }
    second.close().await.unwrap();
    let mut consumer = client
        .super_stream_consumer::<String>(&name)
        .offset(OffsetSpec::First)
        .build()
        .await
        .unwrap();
    let mut got = vec![];
    for _ in 0..20 {
        got.push(
            tokio::time::timeout(Duration::from_secs(30), consumer.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
                .body,
        );
    }
    let want: Vec<String> = (0..10)
        .map(|i| format!("first {i}"))
        .chain((0..10).map(|i| format!("second {i}")))
        .collect();
    assert_eq!(got, want, "one key: one partition, in order, all of them");
    let more = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await;
    assert!(more.is_err(), "a message more: {more:?}");
    consumer.close().await.unwrap();
    client.delete_super_stream(&name).await.unwrap();
}

/// A rabbitkit-stream producer's filter values (publish version 2): a
/// consumer filtered on one value reads exactly the messages with it, in
/// order; one that also matches unfiltered messages reads those too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producers_filter_values_reach_exactly_the_matching_consumer_since_3_13() {
    let client = stream_client().await;
    let name = common::unique_name("ss.filter.producer");
    client
        .declare_stream(StreamSpec::new(&name).max_age(Duration::from_secs(3600)))
        .await
        .unwrap();
    let producer = client
        .producer::<Event>(&name, "filtering-writer")
        .filter_value(|e: &Event| (e.key != "none").then(|| e.key.clone()))
        .build()
        .await
        .unwrap();
    let states = ["california", "texas", "ohio", "none"];
    let events: Vec<Event> = (0..400u32)
        .map(|seq| Event {
            key: states[seq as usize % 4].to_owned(),
            seq,
        })
        .collect();
    for chunk in events.chunks(50) {
        producer.send_batch(chunk).await.unwrap();
    }
    producer.close().await.unwrap();

    for (filter, keys) in [
        (ConsumerFilter::new(["texas"]), &["texas"][..]),
        (
            ConsumerFilter::new(["ohio"]).match_unfiltered(true),
            &["ohio", "none"][..],
        ),
    ] {
        let want: Vec<u32> = events
            .iter()
            .filter(|e| keys.contains(&e.key.as_str()))
            .map(|e| e.seq)
            .collect();
        let mut c = client
            .consumer::<Event>(&name)
            .offset(OffsetSpec::First)
            .filter(filter)
            .build()
            .await
            .unwrap();
        let mut got = vec![];
        while got.len() < want.len() {
            let m = tokio::time::timeout(Duration::from_secs(30), c.next())
                .await
                .unwrap_or_else(|_| panic!("only {} of {}", got.len(), want.len()))
                .unwrap()
                .unwrap();
            got.push(m.body.seq);
        }
        let more = tokio::time::timeout(Duration::from_millis(500), c.next()).await;
        assert!(more.is_err(), "a message more: {more:?}");
        assert_eq!(got, want, "exactly {keys:?}, in order");
        c.close().await.unwrap();
    }
    client.delete_stream(&name).await.unwrap();
}
