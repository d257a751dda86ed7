//! Metrics (the `metrics` feature: `cargo nextest run --features metrics
//! --test metrics`, which `cargo xtask test` does).
//!
//! A small recorder of this file's own keeps every counter, gauge and
//! histogram by name and labels; the tests send known traffic through
//! exchanges and queues of their own and check the counts exactly: what
//! was published, confirmed, delivered, acknowledged, rejected, handled
//! and failed, and the publishes sent again after a failover, caused by
//! cutting the client's connection with rabbitkit-test's proxy and by
//! killing the client's node.
#![cfg(feature = "metrics")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use rabbitkit::core::metrics as names;
use rabbitkit::{Exchange, Queue, WorkQueue};
use rabbitkit_test::FaultProxy;
use serde::{Deserialize, Serialize};

/// A metric's name and its labels, sorted.
type Id = (String, BTreeMap<String, String>);

#[derive(Default)]
struct Values(Mutex<Vec<f64>>);

impl HistogramFn for Values {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

/// Keeps every metric, never resets one.
#[derive(Default)]
struct Memory {
    counters: Mutex<HashMap<Id, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<Id, Arc<AtomicU64>>>,
    histograms: Mutex<HashMap<Id, Arc<Values>>>,
}

fn id(key: &Key) -> Id {
    let labels = key
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect();
    (key.name().to_owned(), labels)
}

impl Recorder for &'static Memory {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.counters.lock().unwrap();
        Counter::from_arc(counters.entry(id(key)).or_default().clone())
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut gauges = self.gauges.lock().unwrap();
        Gauge::from_arc(gauges.entry(id(key)).or_default().clone())
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut histograms = self.histograms.lock().unwrap();
        Histogram::from_arc(histograms.entry(id(key)).or_default().clone())
    }
}

/// The recorder of this process (installed once).
fn memory() -> &'static Memory {
    static MEMORY: OnceLock<&'static Memory> = OnceLock::new();
    MEMORY.get_or_init(|| {
        let memory: &'static Memory = Box::leak(Box::default());
        metrics::set_global_recorder(memory).expect("one global recorder");
        memory
    })
}

fn labels(labels: &[(&str, &str)]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The counter `name` with exactly `with` as labels (0 when never recorded).
fn counter(name: &str, with: &[(&str, &str)]) -> u64 {
    let key = (name.to_owned(), labels(with));
    memory()
        .counters
        .lock()
        .unwrap()
        .get(&key)
        .map_or(0, |c| c.load(Ordering::SeqCst))
}

/// The gauge `name` with exactly `with` as labels.
fn gauge(name: &str, with: &[(&str, &str)]) -> Option<f64> {
    let key = (name.to_owned(), labels(with));
    memory()
        .gauges
        .lock()
        .unwrap()
        .get(&key)
        .map(|g| f64::from_bits(g.load(Ordering::SeqCst)))
}

/// How many values the histogram `name` with exactly `with` as labels holds.
fn histogram_count(name: &str, with: &[(&str, &str)]) -> usize {
    let key = (name.to_owned(), labels(with));
    memory()
        .histograms
        .lock()
        .unwrap()
        .get(&key)
        .map_or(0, |h| h.0.lock().unwrap().len())
}

/// Every counter named `name` that has the label `label` = `value`.
fn counters_with(name: &str, label: &str, value: &str) -> Vec<(BTreeMap<String, String>, u64)> {
    memory()
        .counters
        .lock()
        .unwrap()
        .iter()
        .filter(|((n, l), _)| n == name && l.get(label).is_some_and(|v| v == value))
        .map(|((_, l), c)| (l.clone(), c.load(Ordering::SeqCst)))
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    id: u32,
}

/// Polls (bounded) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_match_the_traffic_sent() {
    memory();
    let client = common::client().await;
    let name = common::unique_name("metrics.tasks");
    let exchange = Exchange::fanout(format!("{name}.in"))
        .declare(&client)
        .await
        .unwrap();
    let tasks = WorkQueue::<Task>::builder(name.as_str())
        .declare(&client)
        .await
        .unwrap();
    exchange.bind(tasks.queue()).await.unwrap();

    // 20 tasks through the exchange, every publish confirmed.
    const N: u32 = 20;
    for id in 0..N {
        exchange.publish(&Task { id }).await.unwrap();
    }
    let sent = [
        (names::SYSTEM, "rabbitmq"),
        (names::OPERATION, "publish"),
        (names::DESTINATION, exchange.name()),
    ];
    assert_eq!(counter(names::SENT_MESSAGES, &sent), u64::from(N));
    assert_eq!(
        histogram_count(names::OPERATION_DURATION, &sent),
        N as usize
    );
    let on_exchange = [(names::DESTINATION, exchange.name())];
    assert_eq!(gauge(names::CONFIRMS_OUTSTANDING, &on_exchange), Some(0.0));
    assert_eq!(counter(names::NACKS, &on_exchange), 0);
    assert_eq!(counter(names::RESENT, &on_exchange), 0);
    assert!(
        counters_with(names::SENT_MESSAGES, names::ERROR_TYPE, "unroutable")
            .iter()
            .all(|(l, _)| l.get(names::DESTINATION).map(String::as_str) != Some(exchange.name())),
        "no failed publish"
    );

    // Every fifth task fails twice: retried once (a copy to the tail of
    // the queue, the original acked), then parked (a copy to
    // `<queue>.parked`, the original acked): the default policy.
    let worker = tokio::spawn({
        let tasks = tasks.clone();
        async move {
            tasks
                .work(|task: Task| async move {
                    if task.id.is_multiple_of(5) {
                        Err(format!("task {} failed", task.id).into())
                    } else {
                        Ok(())
                    }
                })
                .await
        }
    });
    let queue = [(names::SUBSCRIPTION, name.as_str())];
    let settled = |op: &str| {
        counter(
            names::SETTLED,
            &[(names::SUBSCRIPTION, name.as_str()), (names::OPERATION, op)],
        )
    };
    let processed = |error: Option<&str>| {
        let mut with = vec![
            (names::SYSTEM, "rabbitmq"),
            (names::OPERATION, "process"),
            (names::SUBSCRIPTION, name.as_str()),
        ];
        with.extend(error.map(|e| (names::ERROR_TYPE, e)));
        histogram_count(names::PROCESS_DURATION, &with)
    };
    let (failing, fine) = (u64::from(N / 5), u64::from(N - N / 5));
    eventually("every task handled, the failing ones twice", || {
        processed(None) as u64 == fine && processed(Some("handler")) as u64 == 2 * failing
    })
    .await;
    eventually("the last settlement counted", || {
        settled("ack") == N as u64 + failing
    })
    .await;
    worker.abort();
    let consumed = [
        (names::SYSTEM, "rabbitmq"),
        (names::OPERATION, "deliver"),
        (names::SUBSCRIPTION, name.as_str()),
    ];
    assert_eq!(
        counter(names::CONSUMED_MESSAGES, &consumed),
        u64::from(N) + failing
    );
    assert_eq!(
        settled("ack"),
        u64::from(N) + failing,
        "16 done, 4 acked after their retry copy, 4 after their parked copy"
    );
    assert_eq!(settled("reject"), 0, "nothing dropped");
    assert_eq!(settled("nack"), 0);
    assert_eq!(
        counter(
            names::HANDLER_ERRORS,
            &[
                (names::SUBSCRIPTION, name.as_str()),
                (names::ERROR_TYPE, "handler")
            ]
        ),
        2 * failing
    );
    assert_eq!(counter(names::HANDLER_ERRORS, &queue), 0);
    // This client lost no connection.
    assert_eq!(client.stats().disconnects, 0);

    client.delete_queue(&name).await.unwrap();
    client
        .delete_queue(&format!("{name}.parked"))
        .await
        .unwrap();
    client.delete_exchange(exchange.name()).await.unwrap();
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_sent_again_after_a_failover_are_counted() {
    memory();
    common::ensure_cluster();
    let first: rabbitkit::Endpoint = common::amqp_addrs()[0].parse().unwrap();
    let upstream: SocketAddr = format!("{}:{}", first.host(), first.port())
        .parse()
        .unwrap();
    let proxy = FaultProxy::start(upstream).await.unwrap();
    let client = common::options().connect(proxy.amqp_url()).await.unwrap();
    let name = common::unique_name("metrics.failover");
    let exchange = Exchange::fanout(format!("{name}.in"))
        .declare(&client)
        .await
        .unwrap();
    let queue = Queue::named(name.as_str()).declare(&client).await.unwrap();
    exchange.bind(&queue).await.unwrap();
    let on_exchange = [(names::DESTINATION, exchange.name())];

    // The confirms cannot come back while the proxy stalls: every publish
    // handed to the connection is waiting for its confirm when the
    // connection is cut, and is sent again after the recovery.
    proxy.stall();
    const N: u64 = 50;
    let publishes = tokio::spawn({
        let exchange = exchange.clone();
        async move {
            let all = (0..N).map(|n| {
                let exchange = exchange.clone();
                async move { exchange.publish(&n).await }
            });
            futures::future::join_all(all).await
        }
    });
    eventually("every publish waiting for its confirm", || {
        gauge(names::CONFIRMS_OUTSTANDING, &on_exchange) == Some(N as f64)
    })
    .await;
    proxy.cut();
    proxy.resume();
    let confirmed: Vec<_> = publishes
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.expect("confirmed after the recovery"))
        .collect();

    let resent: u64 = confirmed.iter().map(|c| u64::from(c.attempts - 1)).sum();
    assert_eq!(resent, N, "each publish was cut off once");
    assert_eq!(counter(names::RESENT, &on_exchange), resent);
    assert_eq!(client.stats().republished, resent);
    let sent = [
        (names::SYSTEM, "rabbitmq"),
        (names::OPERATION, "publish"),
        (names::DESTINATION, exchange.name()),
    ];
    assert_eq!(
        counter(names::SENT_MESSAGES, &sent),
        N,
        "a re-send is no new publish"
    );
    assert_eq!(
        histogram_count(names::OPERATION_DURATION, &sent),
        N as usize
    );
    assert_eq!(gauge(names::CONFIRMS_OUTSTANDING, &on_exchange), Some(0.0));
    assert_eq!(counter(names::DISCONNECTS, &[]), 1);
    assert_eq!(counter(names::RECONNECTS, &[]), 1);
    assert_eq!(client.stats().recoveries, 1);

    client.delete_queue(&name).await.unwrap();
    client.delete_exchange(exchange.name()).await.unwrap();
    client.close().await;
}

/// The same counts when the failover is real: the node the client is
/// connected to is killed (SIGKILL) while publishes to a quorum queue wait
/// for their confirms. Whatever was confirmed before the kill and whatever
/// was sent again after it, every publish is counted once as sent, once
/// as a confirm duration, and each re-send once as a re-send.
/// It kills a node: `cargo xtask test` runs this binary one test at a
/// time, and skips this test (reports it as skipped) against AMQP_ADDR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_sent_again_after_a_node_kill_are_counted() {
    memory();
    let cluster = rabbitkit_test::require_local_cluster();
    cluster.up().unwrap();
    let client = common::options()
        .connect(common::amqp_addrs())
        .await
        .unwrap();
    let name = common::unique_name("metrics.node_kill");
    let exchange = Exchange::fanout(format!("{name}.in"))
        .declare(&client)
        .await
        .unwrap();
    let queue = Queue::named(name.as_str()).declare(&client).await.unwrap();
    exchange.bind(&queue).await.unwrap();
    let on_exchange = [(names::DESTINATION, exchange.name())];
    let sent = [
        (names::SYSTEM, "rabbitmq"),
        (names::OPERATION, "publish"),
        (names::DESTINATION, exchange.name()),
    ];

    const N: u64 = 2_000;
    let publishes = tokio::spawn({
        let exchange = exchange.clone();
        async move {
            let all = (0..N).map(|n| {
                let exchange = exchange.clone();
                async move { exchange.publish(&n).await }
            });
            futures::future::join_all(all).await
        }
    });
    // Kill the node once the first confirms are in: the rest are in flight.
    eventually("the first confirms", || {
        histogram_count(names::OPERATION_DURATION, &sent) > 0
    })
    .await;
    let port = client.current_endpoint().expect("connected").port();
    let node = cluster.node_for_port(port).expect("a local node");
    cluster.kill(node).unwrap();
    let confirmed: Vec<_> = publishes
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.expect("confirmed after the failover"))
        .collect();
    cluster.start(node).unwrap();

    let resent: u64 = confirmed.iter().map(|c| u64::from(c.attempts - 1)).sum();
    eprintln!("{resent} of {N} publishes sent again after killing rabbit{node}");
    assert_eq!(counter(names::RESENT, &on_exchange), resent);
    assert_eq!(client.stats().republished, resent);
    assert_eq!(counter(names::SENT_MESSAGES, &sent), N);
    assert_eq!(
        histogram_count(names::OPERATION_DURATION, &sent),
        N as usize
    );
    assert_eq!(gauge(names::CONFIRMS_OUTSTANDING, &on_exchange), Some(0.0));
    assert_eq!(counter(names::DISCONNECTS, &[]), 1);
    assert_eq!(counter(names::RECONNECTS, &[]), 1);
    assert_eq!(client.stats().recoveries, 1);

    client.delete_queue(&name).await.unwrap();
    client.delete_exchange(exchange.name()).await.unwrap();
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_publish_is_counted_under_its_target_not_a_delay_queue() {
    // Issue 30: a delayed publish was counted under
    // `messaging.destination.name = "rabbitkit.delay.03"`, the delay queue
    // it enters, instead of the exchange it is delivered to.
    memory();
    let client = common::client().await;
    let name = common::unique_name("metrics.delayed");
    let reminders = Exchange::direct(format!("{name}.x"))
        .declare(&client)
        .await
        .unwrap();
    let queue = Queue::named(name.as_str()).declare(&client).await.unwrap();
    reminders.bind(&queue, "reminder").await.unwrap();
    let mut sub = queue.subscribe::<Task>().await.unwrap();

    let later = rabbitkit::PublishOptions::new().delay(Duration::from_millis(300));
    for id in 0..3 {
        reminders
            .publish_with("reminder", &Task { id }, later.clone())
            .await
            .unwrap();
    }
    // And one straight to the queue (the default exchange, `""`).
    queue
        .send_with(&Task { id: 3 }, later.clone())
        .await
        .unwrap();
    for _ in 0..4 {
        let got = tokio::time::timeout(Duration::from_secs(30), sub.recv())
            .await
            .expect("a delayed message arrives")
            .unwrap()
            .unwrap();
        got.ack().await.unwrap();
    }

    fn delayed(destination: &str) -> [(&str, &str); 4] {
        [
            (names::SYSTEM, "rabbitmq"),
            (names::OPERATION, "publish"),
            (names::DESTINATION, destination),
            (names::DELAYED, "true"),
        ]
    }
    assert_eq!(counter(names::SENT_MESSAGES, &delayed(reminders.name())), 3);
    assert_eq!(
        histogram_count(names::OPERATION_DURATION, &delayed(reminders.name())),
        3
    );
    assert_eq!(counter(names::SENT_MESSAGES, &delayed("")), 1);
    assert_eq!(
        gauge(
            names::CONFIRMS_OUTSTANDING,
            &[
                (names::DESTINATION, reminders.name()),
                (names::DELAYED, "true")
            ]
        ),
        Some(0.0)
    );
    let delay_queues: Vec<_> = memory()
        .counters
        .lock()
        .unwrap()
        .keys()
        .filter_map(|(_, l)| l.get(names::DESTINATION))
        .filter(|d| d.starts_with(rabbitkit::core::delay::DELAY_PREFIX))
        .cloned()
        .collect();
    assert!(
        delay_queues.is_empty(),
        "publishes counted under delay queues: {delay_queues:?}"
    );

    drop(sub);
    client.delete_queue(&name).await.unwrap();
    client.delete_exchange(reminders.name()).await.unwrap();
    client.close().await;
}
