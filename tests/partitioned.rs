//! Partitioned work queues against the real cluster: a key always reaches
//! the same partition, in order; keys spread over the partitions; with two
//! instances of a worker, the standby takes a partition over when the
//! active one goes (closed, or its connection cut as in a crash), in
//! order and with nothing lost; bad input is a typed error. No node is
//! killed: the instance goes, the cluster stays.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rabbitkit::{
    Client, DeclareError, MAX_PARTITIONS, PartitionedQueue, SendError, partition_name,
};
use rabbitkit_test::FaultProxy;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Msg {
    key: String,
    seq: u32,
}

fn key(k: usize) -> String {
    format!("account-{k}")
}

/// Publishes `seqs` for each of `keys` keys: round by round, every key's
/// message of one round concurrently, each round confirmed before the next,
/// so each key's messages are published in order.
async fn publish(pq: &PartitionedQueue<Msg>, keys: usize, seqs: std::ops::Range<u32>) {
    for seq in seqs {
        let sends = (0..keys).map(|k| {
            let msg = Msg { key: key(k), seq };
            async move { pq.publish(&msg.key, &msg).await.map(|_| ()) }
        });
        for sent in futures::future::join_all(sends).await {
            sent.expect("confirmed");
        }
    }
}

/// Waits (bounded: a hang guard) until the broker reports `want` consumers
/// on every partition.
async fn wait_for_consumers(pq: &PartitionedQueue<Msg>, want: u32) {
    let mut last = Vec::new();
    let reached = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            last = pq
                .info()
                .await
                .unwrap()
                .iter()
                .map(|i| i.consumers)
                .collect();
            if last.iter().all(|n| *n == want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "consumers per partition: {last:?}, not {want} each"
    );
}

/// The hash exchange a test asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Routing {
    /// None asked: rabbitkit chooses by the broker's version.
    Chosen,
    ConsistentHash,
}

fn builder(name: &str, routing: Routing) -> rabbitkit::PartitionedQueueBuilder<Msg> {
    let builder = PartitionedQueue::<Msg>::builder(name, 3);
    match routing {
        Routing::Chosen => builder,
        Routing::ConsistentHash => builder.consistent_hash(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_always_reaches_one_partition_in_order_and_keys_spread() {
    keys_reach_one_partition_each_in_order(Routing::Chosen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_consistent_hashing_asked_a_key_always_reaches_one_partition_in_order() {
    keys_reach_one_partition_each_in_order(Routing::ConsistentHash).await;
}

/// The exchange type a partitioned queue was declared with: found by
/// declaring it again with another type (refused, naming the current one).
async fn exchange_type_of(client: &rabbitkit::Client, name: &str) -> String {
    let probe = rabbitkit_core::Declaration::Exchange(rabbitkit_core::ExchangeSpec {
        name: name.into(),
        kind: rabbitkit_core::ExchangeType::Headers,
        durable: true,
        auto_delete: false,
        internal: false,
        arguments: Default::default(),
    });
    match client.declare(probe).await {
        Err(rabbitkit::DeclareError::Inequivalent { current, .. }) => current,
        other => panic!("expected Inequivalent, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_4_3_partitions_through_the_core_modulus_hash_exchange_and_keeps_an_older_one() {
    let client = common::client().await;
    let server = client.server().unwrap();
    let name = common::unique_name("partitioned.kind");
    let pq = builder(&name, Routing::Chosen)
        .declare(&client)
        .await
        .unwrap();
    let kind = exchange_type_of(&client, &name).await;
    let expected = if server.has_modulus_hash_exchange() {
        rabbitkit::MODULUS_HASH
    } else {
        rabbitkit::CONSISTENT_HASH
    };
    assert!(kind.contains(expected), "{server}: declared {kind}");
    pq.delete().await.unwrap();
    // One made with consistent hashing (as rabbitkit did before 4.3) stays
    // so when declared again without a choice: its keys keep their
    // partitions.
    let older = builder(&name, Routing::ConsistentHash)
        .declare(&client)
        .await
        .unwrap();
    let again = builder(&name, Routing::Chosen)
        .declare(&client)
        .await
        .unwrap();
    let kind = exchange_type_of(&client, &name).await;
    assert!(kind.contains(rabbitkit::CONSISTENT_HASH), "{kind}");
    again
        .publish(
            "k",
            &Msg {
                key: "k".into(),
                seq: 0,
            },
        )
        .await
        .unwrap();
    let infos = older.info().await.unwrap();
    assert_eq!(infos.iter().map(|i| i.messages).sum::<u32>(), 1);
    assert_eq!(older.delete().await.unwrap(), 1);
}

async fn keys_reach_one_partition_each_in_order(routing: Routing) {
    const KEYS: usize = 40;
    const SEQS: u32 = 20;
    let client = common::client().await;
    let other = common::client_on(2).await;
    let name = common::unique_name("partitioned.keys");
    let pq = builder(&name, routing).declare(&client).await.unwrap();
    // Declared again by another client (another node): nothing changes, and
    // its publishes of the same keys reach the same partitions.
    let again = builder(&name, routing).declare(&other).await.unwrap();
    assert_eq!(again.partitions(), 3);
    publish(&pq, KEYS, 0..SEQS / 2).await;
    publish(&again, KEYS, SEQS / 2..SEQS).await;

    let subs = pq.subscribe().await.unwrap();
    assert_eq!(subs.len(), 3);
    let mut all = futures::stream::select_all(
        subs.into_iter()
            .enumerate()
            .map(|(p, sub)| sub.map(move |m| (p, m))),
    );
    // key -> (partitions seen, seqs in arrival order)
    let mut seen: BTreeMap<String, (BTreeSet<usize>, Vec<u32>)> = BTreeMap::new();
    for _ in 0..KEYS * SEQS as usize {
        let (p, msg) = tokio::time::timeout(Duration::from_secs(30), all.next())
            .await
            .expect("a message within 30 s")
            .expect("subscriptions go on");
        let msg = msg.expect("decodable");
        assert_eq!(msg.routing_key(), msg.body.key, "routed by its key");
        let entry = seen.entry(msg.body.key.clone()).or_default();
        entry.0.insert(p);
        entry.1.push(msg.body.seq);
        msg.ack().await.unwrap();
    }
    assert_eq!(seen.len(), KEYS);
    let mut keys_per_partition = [0usize; 3];
    for (key, (partitions, seqs)) in &seen {
        assert_eq!(partitions.len(), 1, "{key} reached {partitions:?}");
        keys_per_partition[*partitions.first().unwrap()] += 1;
        assert_eq!(
            seqs,
            &(0..SEQS).collect::<Vec<_>>(),
            "{key}: in order, each once"
        );
    }
    assert!(
        keys_per_partition.iter().all(|n| *n > 0),
        "keys spread over every partition: {keys_per_partition:?}"
    );
    // Nothing left anywhere.
    for info in pq.info().await.unwrap() {
        assert_eq!(info.messages, 0);
    }
    assert_eq!(pq.delete().await.unwrap(), 0);
}

/// What an instance handled, in order: `(key, seq)`.
type Log = Arc<Mutex<Vec<(String, u32)>>>;

/// One instance of a worker: what it handled, in order.
struct Instance {
    log: Log,
    handled: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Instance {
    fn new() -> (Self, Log, Arc<AtomicUsize>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let handled = Arc::new(AtomicUsize::new(0));
        let instance = Self {
            log: log.clone(),
            handled: handled.clone(),
            task: tokio::spawn(async {}),
        };
        (instance, log, handled)
    }

    /// The handler: logs each message; with `hang_after`, hangs (never
    /// returns) from the message after that many: a stuck instance, with
    /// deliveries unacknowledged in every partition.
    fn handler(
        log: Log,
        handled: Arc<AtomicUsize>,
        hang_after: Option<usize>,
    ) -> impl Fn(Msg) -> futures::future::BoxFuture<'static, Result<(), rabbitkit::Report>>
    + Clone
    + Send
    + 'static {
        move |m: Msg| {
            let (log, handled) = (log.clone(), handled.clone());
            Box::pin(async move {
                let n = handled.fetch_add(1, Ordering::SeqCst);
                if hang_after.is_some_and(|stop| n >= stop) {
                    std::future::pending::<()>().await;
                }
                log.lock().unwrap().push((m.key, m.seq));
                Ok(())
            })
        }
    }

    /// Runs `pq.work` in a task of its own.
    fn work(pq: PartitionedQueue<Msg>, hang_after: Option<usize>) -> Self {
        let (mut me, log, handled) = Self::new();
        let handler = Self::handler(log, handled, hang_after);
        me.task = tokio::spawn(async move {
            let _ = pq.work(handler).await;
        });
        me
    }

    /// Subscribes every partition (registered with the broker when this
    /// returns), then handles them as `work` does: one loop per partition,
    /// one message at a time.
    async fn subscribed(pq: &PartitionedQueue<Msg>) -> Self {
        let (mut me, log, handled) = Self::new();
        let handler = Self::handler(log, handled, None);
        let subs = pq.subscribe().await.unwrap();
        me.task = tokio::spawn(async move {
            let loops = subs.into_iter().map(|sub| {
                tokio::spawn(sub.handle_with(rabbitkit::HandleOptions::new(), handler.clone()))
            });
            futures::future::join_all(loops).await;
        });
        me
    }

    fn log(&self) -> Vec<(String, u32)> {
        self.log.lock().unwrap().clone()
    }
}

enum Death {
    /// The application closes its client (a stopped instance).
    Closed,
    /// Its connection is cut and it cannot reconnect (a crashed instance:
    /// nothing flushed, the broker finds the connection gone).
    Crashed,
}

async fn the_standby_takes_over(death: Death, prefix: &str) {
    const KEYS: usize = 12;
    const SEQS: u32 = 50;
    const PREFETCH: u16 = 10;
    const HANG_AFTER: usize = 200;
    let name = common::unique_name(prefix);
    let observer = common::client().await;
    let proxy = {
        let e: rabbitkit::Endpoint = common::amqp_addrs()[0].parse().unwrap();
        let upstream: SocketAddr = format!("{}:{}", e.host(), e.port()).parse().unwrap();
        FaultProxy::start(upstream).await.unwrap()
    };
    let client_a: Client = common::options().connect(proxy.amqp_url()).await.unwrap();
    let client_b = common::client_on(2).await;
    let builder = PartitionedQueue::<Msg>::builder(&name, 3).prefetch(PREFETCH);
    let pq = builder.clone().declare(&observer).await.unwrap();
    let pa = builder.clone().declare(&client_a).await.unwrap();
    let pb = builder.declare(&client_b).await.unwrap();
    publish(&pq, KEYS, 0..SEQS).await;

    // A subscribes first: the active consumer of every partition.
    let a = Instance::work(pa, Some(HANG_AFTER));
    wait_for_consumers(&pq, 1).await;
    // B subscribes second (registered when `subscribed` returns): it stands
    // by on every partition. (The broker counts only the active consumer of
    // a single-active-consumer queue, so there is nothing more to wait for.)
    let b = Instance::subscribed(&pb).await;
    tokio::time::timeout(Duration::from_secs(60), async {
        while a.handled.load(Ordering::SeqCst) < HANG_AFTER {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("A handles its first messages");
    assert!(
        b.log().is_empty(),
        "the standby got messages: {:?}",
        b.log()
    );

    match death {
        Death::Closed => client_a.close().await,
        Death::Crashed => {
            proxy.refuse(true);
            proxy.cut();
        }
    }
    a.task.abort();

    // B takes every partition over and gets what A did not finish.
    let total = KEYS * SEQS as usize;
    let a_log = a.log();
    assert_eq!(a_log.len(), HANG_AFTER);
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let mut got: BTreeSet<(String, u32)> = a_log.iter().cloned().collect();
            got.extend(b.log());
            if got.len() == total {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let b_log = b.log();
    assert!(
        done.is_ok(),
        "nothing lost: A handled {}, B {}, of {total}",
        a_log.len(),
        b_log.len()
    );

    // Per key: A handled 0..a, B a contiguous run b..SEQS with b <= a (no
    // gap, no reordering); b < a only for messages A handled but whose ack
    // the broker never got (at least once), at most the prefetch per partition.
    let by_key = |log: &[(String, u32)]| {
        let mut m: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (k, s) in log {
            m.entry(k.clone()).or_default().push(*s);
        }
        m
    };
    let (a_keys, b_keys) = (by_key(&a_log), by_key(&b_log));
    let mut duplicates = 0;
    for k in (0..KEYS).map(key) {
        let a_seqs = a_keys.get(&k).cloned().unwrap_or_default();
        let b_seqs = b_keys.get(&k).cloned().unwrap_or_default();
        let a_end = a_seqs.len() as u32;
        assert_eq!(a_seqs, (0..a_end).collect::<Vec<_>>(), "{k}: A in order");
        let b_start = b_seqs.first().copied().unwrap_or(SEQS);
        assert!(
            b_start <= a_end,
            "{k}: gap between A ({a_end}) and B ({b_start})"
        );
        assert_eq!(
            b_seqs,
            (b_start..SEQS).collect::<Vec<_>>(),
            "{k}: B in order, from where A stopped"
        );
        duplicates += (a_end - b_start) as usize;
    }
    assert!(
        duplicates <= 3 * PREFETCH as usize,
        "{duplicates} handled twice: more than the prefetch of each partition"
    );
    eprintln!(
        "A handled {}, B {} ({duplicates} again)",
        a_log.len(),
        b_log.len()
    );
    b.task.abort();
    client_b.close().await;
    assert_eq!(pq.delete().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_when_the_active_instance_closes() {
    the_standby_takes_over(Death::Closed, "partitioned.closed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standby_takes_over_when_the_active_instance_crashes() {
    the_standby_takes_over(Death::Crashed, "partitioned.crashed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_typed_error_before_the_network() {
    let client = common::client().await;
    let name = common::unique_name("partitioned.bad");
    let invalid = |r: Result<PartitionedQueue<Msg>, DeclareError>| {
        matches!(r, Err(DeclareError::Invalid { .. }))
    };
    assert!(invalid(
        PartitionedQueue::builder(&name, 0).declare(&client).await
    ));
    assert!(invalid(
        PartitionedQueue::builder(&name, MAX_PARTITIONS + 1)
            .declare(&client)
            .await
    ));
    assert!(invalid(
        PartitionedQueue::builder(&name, 3)
            .queue(|q| q.classic())
            .declare(&client)
            .await
    ));
    for bad in ["amq.partitioned", "", &"x".repeat(254)] {
        assert!(
            matches!(
                PartitionedQueue::<Msg>::builder(bad, 3)
                    .declare(&client)
                    .await,
                Err(DeclareError::InvalidName { .. })
            ),
            "{bad:?}"
        );
    }
    // Nothing of those reached the broker.
    for i in 0..3 {
        assert!(matches!(
            client.queue_info(&partition_name(&name, i)).await,
            Err(DeclareError::NotFound { .. })
        ));
    }

    // Fewer partitions than exist: refused, nothing changed.
    let pq = PartitionedQueue::<Msg>::builder(&name, 3)
        .declare(&client)
        .await
        .unwrap();
    match PartitionedQueue::<Msg>::builder(&name, 2)
        .declare(&client)
        .await
    {
        Err(DeclareError::Inequivalent { argument, .. }) => assert_eq!(argument, "partitions"),
        other => panic!("{other:?}"),
    }
    // A key over 255 bytes: nothing sent, the handle still works.
    let msg = Msg {
        key: "k".into(),
        seq: 0,
    };
    assert!(matches!(
        pq.publish(&"k".repeat(256), &msg).await,
        Err(SendError::Invalid(_))
    ));
    pq.publish("k", &msg).await.unwrap();
    let total: u32 = pq.info().await.unwrap().iter().map(|i| i.messages).sum();
    assert_eq!(total, 1);
    assert_eq!(pq.delete().await.unwrap(), 1);
}

/// The topology is recorded like any other: after a failover, recovery
/// declares the exchange, the partitions and their bindings again, in
/// order. Shown by deleting them all behind the client's back, then cutting
/// its connection (no node is touched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_declares_the_partitions_again() {
    let observer = common::client().await;
    let proxy = {
        let e: rabbitkit::Endpoint = common::amqp_addrs()[0].parse().unwrap();
        let upstream: SocketAddr = format!("{}:{}", e.host(), e.port()).parse().unwrap();
        FaultProxy::start(upstream).await.unwrap()
    };
    let client: Client = common::options().connect(proxy.amqp_url()).await.unwrap();
    let mut events = client.events();
    let name = common::unique_name("partitioned.recovered");
    let pq = PartitionedQueue::<Msg>::builder(&name, 3)
        .declare(&client)
        .await
        .unwrap();
    let publish_keys = || async {
        for k in 0..30 {
            let msg = Msg {
                key: key(k),
                seq: 0,
            };
            pq.publish(&msg.key, &msg).await.expect("routed");
        }
    };
    publish_keys().await;
    let before: Vec<u32> = pq
        .info()
        .await
        .unwrap()
        .iter()
        .map(|i| i.messages)
        .collect();
    // Gone, as after a disaster the client did not see.
    for i in 0..3 {
        observer
            .delete_queue(&partition_name(&name, i))
            .await
            .unwrap();
    }
    observer.delete_exchange(&name).await.unwrap();

    proxy.cut();
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, rabbitkit::Event::Recovered { .. })
    })
    .await;
    // Everything is back, as declared: the same declaration from elsewhere
    // is equivalent, and every key is routed (publishes are mandatory).
    let again = PartitionedQueue::<Msg>::builder(&name, 3)
        .declare(&observer)
        .await
        .expect("re-declared with the same arguments");
    publish_keys().await;
    let after: Vec<u32> = again
        .info()
        .await
        .unwrap()
        .iter()
        .map(|i| i.messages)
        .collect();
    // Bound in the same order: the same keys reach the same partitions.
    assert_eq!(after, before);
    assert_eq!(after.iter().sum::<u32>(), 30);
    client.close().await;
    assert_eq!(again.delete().await.unwrap(), 30);
}
