//! Failover against the real 3-node cluster: nodes are SIGKILLed for real.
//!
//! These tests stop and kill nodes, so `cargo xtask test` runs this binary
//! alone, after every other test, one test at a time; with `AMQP_ADDR`
//! set it skips the binary (the runner reports its tests as skipped).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rabbitkit::Queue;
use rabbitkit_core::{
    AMQPValue, BasicProperties, ConsumeOptions, Declaration, Event, FieldTable, OutgoingMessage,
    QueueSpec,
};
use rabbitkit_test::{Cluster, LoadBalancer, require_local_cluster};

fn quorum_queue(name: &str) -> Declaration {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    Declaration::Queue(QueueSpec {
        name: name.into(),
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments: args,
    })
}

fn node_of(client: &rabbitkit_core::Client) -> usize {
    let port = client.current_endpoint().expect("connected").port();
    Cluster::local().node_for_port(port).expect("a local node")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_connected_node_loses_no_confirmed_message() {
    const TOTAL: u32 = 3000;
    const WINDOW: usize = 128;
    const PREFETCH: u16 = 50;
    let cluster = require_local_cluster();
    cluster.up().unwrap();
    let client = common::options()
        .publish_window(WINDOW)
        .connect(common::amqp_addrs())
        .await
        .unwrap();
    let mut events = client.events();
    let queue = common::unique_name("failover.quorum");
    client.declare(quorum_queue(&queue)).await.unwrap();

    // The consumer counts every delivery per message number and acks it.
    let received: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let mut consumer = client
        .consume(&queue, ConsumeOptions::new().prefetch(PREFETCH))
        .await
        .unwrap();
    let seen = received.clone();
    let consuming = tokio::spawn(async move {
        while let Some(item) = consumer.next().await {
            let delivery = item.expect("the consumer stream survives failover");
            let n: u32 = std::str::from_utf8(delivery.body())
                .unwrap()
                .parse()
                .unwrap();
            *seen.lock().unwrap().entry(n).or_default() += 1;
            // An ack on a dead channel is a clear error; the broker redelivers.
            let _ = delivery.ack().await;
        }
    });

    // Publish with confirms, many in flight, and kill the node half-way.
    let publisher = client.publisher();
    let mut confirmed = BTreeSet::new();
    let mut in_flight = FuturesUnordered::new();
    let mut killed = None;
    for n in 0..TOTAL {
        let props = BasicProperties::default().with_delivery_mode(2);
        in_flight.push({
            let f = publisher.publish(
                OutgoingMessage::new("", queue.as_str(), n.to_string().into_bytes())
                    .properties(props),
            );
            async move { (n, f.await) }
        });
        if in_flight.len() >= WINDOW {
            let (n, res) = in_flight.next().await.unwrap();
            res.unwrap_or_else(|e| panic!("publish {n} failed: {e}"));
            confirmed.insert(n);
        }
        if n == TOTAL / 3 && killed.is_none() {
            let node = node_of(&client);
            cluster.kill(node).unwrap();
            killed = Some(node);
        }
    }
    while let Some((n, res)) = in_flight.next().await {
        res.unwrap_or_else(|e| panic!("publish {n} failed: {e}"));
        confirmed.insert(n);
    }
    assert_eq!(confirmed.len(), TOTAL as usize);

    // The events tell the story.
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    let recovered = common::wait_for_event(&mut events, Duration::from_secs(60), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    if let Event::Recovered { consumers, .. } = recovered {
        assert_eq!(consumers, 1, "the consumer was re-subscribed");
    }
    assert_ne!(node_of(&client), killed.unwrap(), "now on another node");

    // Zero loss: every confirmed message arrives (the consumer resumed by itself).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let missing = {
            let got = received.lock().unwrap();
            confirmed.iter().filter(|n| !got.contains_key(n)).count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} confirmed messages never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let duplicates: u32 = received.lock().unwrap().values().map(|c| c - 1).sum();
    let stats = client.stats();
    eprintln!(
        "killed node {killed:?}; confirmed {}, duplicates {duplicates}, republished {}",
        confirmed.len(),
        stats.republished
    );
    assert!(
        duplicates as usize <= WINDOW + PREFETCH as usize,
        "duplicates ({duplicates}) are bounded by the publish window plus the prefetch"
    );
    assert!(stats.recoveries >= 1);

    consuming.abort();
    client.delete_queue(&queue).await.unwrap();
    cluster.start(killed.unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_nodes_down_then_back_recovers_by_itself() {
    let cluster = require_local_cluster();
    cluster.up().unwrap();
    // Publishes may wait as long as a full cluster restart takes.
    let client = common::options()
        .publish_timeout(Duration::from_secs(300))
        .connect(common::amqp_addrs())
        .await
        .unwrap();
    let mut events = client.events();
    let queue = common::unique_name("failover.alldown");
    // A durable classic queue: rabbitkit re-declares it after the restart
    // whatever the broker kept. (A quorum queue created a moment before
    // every node is SIGKILLed can come back without a leader on 3.10.)
    client
        .declare(Declaration::Queue(QueueSpec {
            name: queue.clone(),
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: FieldTable::default(),
        }))
        .await
        .unwrap();
    let mut consumer = client.consume(&queue, ConsumeOptions::new()).await.unwrap();
    // One confirmed round trip first.
    client
        .publish(OutgoingMessage::new("", queue.as_str(), b"before".to_vec()))
        .await
        .unwrap();
    let before = tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(before.body(), b"before");
    before.ack().await.unwrap();

    for n in Cluster::nodes() {
        cluster.kill(n).unwrap();
    }
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    // While every node is down, the client keeps trying and says so.
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, Event::ConnectFailed { .. })
    })
    .await;
    assert!(!client.is_connected());
    // A publish made now waits for the cluster (back-pressure), it is not dropped.
    let pending = tokio::spawn(client.publish(OutgoingMessage::new(
        "",
        queue.as_str(),
        b"sent while down".to_vec(),
    )));

    let t = std::time::Instant::now();
    cluster.up().unwrap();
    eprintln!("cluster back up in {:?}", t.elapsed());
    let ev = common::wait_for_event(&mut events, Duration::from_secs(120), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    eprintln!("{ev} ({:?} after the cluster was up)", t.elapsed());
    pending
        .await
        .unwrap()
        .expect("the publish made while down is confirmed");
    let delivery = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("the consumer resumes by itself")
        .unwrap()
        .unwrap();
    assert_eq!(delivery.body(), b"sent while down");
    delivery.ack().await.unwrap();
    drop(consumer);
    client.delete_queue(&queue).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_sent_with_default_options_survive_restarting_every_node() {
    const TOTAL: usize = 200;
    let cluster = require_local_cluster();
    cluster.up().unwrap();
    let client = common::client().await;
    let name = common::unique_name("failover.restart");
    // Nothing chosen: a named queue is a durable quorum queue, messages are
    // persistent and confirmed.
    let queue = Queue::named(name.as_str()).declare(&client).await.unwrap();
    let sent: BTreeSet<String> = (0..TOTAL).map(|i| format!("m{i}")).collect();
    let confirms = sent.iter().map(|body| queue.send(body));
    for confirmed in futures::future::join_all(confirms).await {
        confirmed.expect("confirmed");
    }
    client.close().await;

    // Every node stops (gracefully), then the cluster starts again.
    cluster.down().unwrap();
    cluster.up().unwrap();

    let client = common::client().await;
    let queue = Queue::named(name.as_str()).declare(&client).await.unwrap();
    let mut sub = queue.subscribe::<String>().await.unwrap();
    let mut got = BTreeSet::new();
    while got.len() < TOTAL {
        let msg = tokio::time::timeout(Duration::from_secs(60), sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {TOTAL} messages after the restart", got.len()))
            .expect("subscription open")
            .expect("decodable");
        assert_eq!(msg.properties().delivery_mode(), &Some(2), "persistent");
        msg.ack().await.unwrap();
        got.insert(msg.body);
    }
    assert_eq!(got, sent, "every confirmed message survived");
    drop(sub);
    queue.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_of_a_dead_node_are_redelivered_to_the_recovered_consumer() {
    let cluster = require_local_cluster();
    cluster.up().unwrap();
    let client = common::client().await;
    let mut events = client.events();
    let queue = common::unique_name("failover.unacked");
    client.declare(quorum_queue(&queue)).await.unwrap();
    for n in 0..10u32 {
        client
            .publish(OutgoingMessage::new(
                "",
                queue.as_str(),
                n.to_string().into_bytes(),
            ))
            .await
            .unwrap();
    }
    let mut consumer = client
        .consume(&queue, ConsumeOptions::new().prefetch(10))
        .await
        .unwrap();
    // Take all ten and acknowledge none.
    let mut held = Vec::new();
    for _ in 0..10 {
        let d = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(!d.redelivered());
        held.push(d);
    }
    let node = node_of(&client);
    cluster.kill(node).unwrap();
    common::wait_for_event(&mut events, Duration::from_secs(60), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    // The old deliveries cannot be acknowledged any more: a clear error.
    for d in &held {
        assert_eq!(d.ack().await, Err(rabbitkit_core::AckError::ChannelGone));
    }
    // All ten come again, flagged as redelivered, to the same stream. On
    // RabbitMQ 4 a quorum queue holds the messages of a consumer whose node
    // became unreachable for `consumer_disconnected_timeout` (60 s by
    // default in 4.3) before it returns them: the bound covers that.
    let mut again = BTreeSet::new();
    while again.len() < 10 {
        let d = tokio::time::timeout(Duration::from_secs(120), consumer.next())
            .await
            .expect("redelivered within 120 s")
            .unwrap()
            .unwrap();
        assert!(d.redelivered(), "redelivered flag set");
        again.insert(
            std::str::from_utf8(d.body())
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
        d.ack().await.unwrap();
    }
    assert_eq!(again, (0..10).collect());
    drop(consumer);
    client.delete_queue(&queue).await.unwrap();
    cluster.start(node).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_calls_end_when_the_node_is_restarted_or_killed_mid_call() {
    let cluster = require_local_cluster();
    cluster.up().unwrap();
    let client = common::client().await;
    let queue = common::unique_name("failover.rpc");
    // A server on a client of its own, which fails over too.
    let server_client = common::options()
        .order(rabbitkit_core::EndpointOrder::Shuffled)
        .connect(common::amqp_addrs())
        .await
        .unwrap();
    let server = rabbitkit::RpcServer::<u64, u64>::builder(queue.as_str())
        .queue(|q| q.quorum())
        .concurrency(4)
        .declare(&server_client)
        .await
        .unwrap();
    let serving = tokio::spawn(async move {
        server
            .serve(|ms: u64| async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(ms)
            })
            .await
    });
    let rpc = rabbitkit::RpcClient::<u64, u64>::builder(queue.as_str())
        .timeout(Duration::from_secs(20))
        .build(&client)
        .await
        .unwrap();
    assert_eq!(rpc.call(&1).await.unwrap(), 1);

    for graceful in [true, false] {
        let node = node_of(&client);
        let call = tokio::spawn({
            let rpc = rpc.clone();
            async move { rpc.call(&1500).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await; // the call is in flight
        if graceful {
            cluster.stop(node).unwrap();
        } else {
            cluster.kill(node).unwrap();
        }
        // The call ends: answered, or a typed error; it does not hang.
        match tokio::time::timeout(Duration::from_secs(30), call).await {
            Ok(Ok(Ok(1500))) | Ok(Ok(Err(rabbitkit::RpcError::ConnectionLost))) => {}
            other => panic!("graceful={graceful}: unexpected {other:?}"),
        }
        assert_eq!(rpc.pending(), 0);
        // And calls work again after the failover.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match rpc.call(&2).await {
                Ok(2) => break,
                Ok(other) => panic!("wrong answer {other}"),
                Err(e) => {
                    assert!(tokio::time::Instant::now() < deadline, "no recovery: {e:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        cluster.start(node).unwrap();
    }
    serving.abort();
    client.delete_queue(&queue).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_bindings_route_again_after_failover() {
    let cluster = require_local_cluster();
    cluster.up().unwrap();
    let client = common::client().await;
    let mut events = client.events();
    let source = rabbitkit::Exchange::topic(common::unique_name("failover.e2e.src"))
        .declare(&client)
        .await
        .unwrap();
    let destination = rabbitkit::Exchange::fanout(common::unique_name("failover.e2e.dst"))
        .internal(true)
        .declare(&client)
        .await
        .unwrap();
    source
        .bind_exchange(&destination, &"audit.#".parse().unwrap())
        .await
        .unwrap();
    // A durable quorum queue behind the destination: it outlives the node.
    let audit = Queue::named(common::unique_name("failover.e2e.audit"))
        .declare(&client)
        .await
        .unwrap();
    destination.bind(&audit).await.unwrap();
    let mut audited = audit.subscribe::<String>().await.unwrap();
    source
        .publish("audit.before", &"before".to_string())
        .await
        .unwrap();
    // Bound nowhere else: unroutable (a topic publish is mandatory by default).
    assert!(!common::routed(
        source
            .publish("other.before", &"not audited".to_string())
            .await
    ));
    assert_eq!(common::next_body(&mut audited).await, "before");

    let node = node_of(&client);
    cluster.kill(node).unwrap();
    common::wait_for_event(&mut events, Duration::from_secs(60), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    // Bound nowhere else: unroutable (a topic publish is mandatory by default).
    assert!(!common::routed(
        source
            .publish("other.after", &"still not audited".to_string())
            .await
    ));
    source
        .publish("audit.after", &"after".to_string())
        .await
        .unwrap();
    // At least once: the ack of "before" may have died with the node, so it
    // may come again first, flagged as redelivered. Then "after" is routed
    // through the recovered exchange-to-exchange binding; the unaudited
    // messages never arrive.
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), audited.next())
            .await
            .expect("\"after\" is routed through the recovered binding")
            .expect("subscription ended")
            .expect("a decodable message");
        msg.ack().await.unwrap();
        if msg.body == "after" {
            break;
        }
        assert_eq!(msg.body, "before", "only a redelivery may come first");
        assert!(
            msg.redelivered(),
            "\"before\" again, not flagged redelivered"
        );
    }
    drop(audited);
    audit.delete().await.unwrap();
    client.delete_exchange(source.name()).await.unwrap();
    client.delete_exchange(destination.name()).await.unwrap();
    cluster.start(node).unwrap();
}

/// Starts a stopped node again when dropped, also when the test fails.
struct StartAgain(usize);

impl Drop for StartAgain {
    fn drop(&mut self) {
        let _ = Cluster::local().start(self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_recovering_while_the_node_is_down_and_connected_after() {
    let cluster = require_local_cluster();
    cluster.up().unwrap();
    // A client of one node has nowhere else to go while it is down.
    let node = 3;
    let client = common::client_on(node).await;
    assert!(client.health().is_ready(), "{}", client.health());
    let mut events = client.events();
    let start_again = StartAgain(node);
    cluster.stop(node).unwrap();
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    assert_eq!(client.health(), rabbitkit::Health::Recovering);
    drop(start_again);
    common::wait_for_event(&mut events, Duration::from_secs(120), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    assert!(
        matches!(client.health(), rabbitkit::Health::Connected { .. }),
        "{}",
        client.health()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_node_with_handlers_in_flight_loses_no_task() {
    const TOTAL: u32 = 200;
    const N: usize = 8;
    let cluster = require_local_cluster();
    cluster.up().unwrap();
    let client = common::client().await;
    let mut events = client.events();
    let tasks = rabbitkit::WorkQueue::<u32>::builder(common::unique_name("failover.inflight"))
        .prefetch(16)
        .concurrency(N)
        .declare(&client)
        .await
        .unwrap();
    for id in 0..TOTAL {
        tasks.submit(&id).await.unwrap();
    }
    let done: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let half = Arc::new(tokio::sync::Notify::new());
    let all = Arc::new(tokio::sync::Notify::new());
    let shutdown = rabbitkit::Shutdown::new();
    let worker = {
        let (tasks, done, half, all) = (tasks.clone(), done.clone(), half.clone(), all.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tasks
                .work_until(&shutdown, move |id: u32| {
                    let (done, half, all) = (done.clone(), half.clone(), all.clone());
                    async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let mut done = done.lock().unwrap();
                        *done.entry(id).or_default() += 1;
                        if done.len() == TOTAL as usize / 4 {
                            half.notify_one();
                        }
                        if done.len() == TOTAL as usize {
                            all.notify_one();
                        }
                        Ok(())
                    }
                })
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(60), half.notified())
        .await
        .expect("a quarter of the tasks done");
    let node = node_of(&client);
    cluster.kill(node).unwrap();
    common::wait_for_event(&mut events, Duration::from_secs(60), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    // A quorum queue returns the deliveries of a consumer on a dead node
    // after `consumer_disconnected_timeout` (60 s): the bound covers that.
    tokio::time::timeout(Duration::from_secs(180), all.notified())
        .await
        .unwrap_or_else(|_| {
            let done = done.lock().unwrap();
            let missing: Vec<u32> = (0..TOTAL).filter(|id| !done.contains_key(id)).collect();
            panic!("tasks never done: {missing:?}")
        });
    shutdown.stop(Duration::from_secs(10));
    worker.await.unwrap().unwrap();
    cluster.start(node).unwrap();
    let done = done.lock().unwrap().clone();
    assert_eq!(done.len(), TOTAL as usize, "every task done at least once");
    // What is left in the queue can only be second copies of done tasks:
    // deliveries whose handler finished but whose ack died with the node,
    // and redeliveries the worker had prefetched but not started when it
    // stopped (requeued). Read exactly that many and check each.
    let left = tasks.info().await.unwrap().messages as usize;
    if left > 0 {
        let mut rest = client
            .consume(
                tasks.queue().name(),
                rabbitkit_core::ConsumeOptions::new().prefetch(64),
            )
            .await
            .unwrap();
        for _ in 0..left {
            let d = tokio::time::timeout(Duration::from_secs(20), rest.next())
                .await
                .expect("a ready message is delivered")
                .unwrap()
                .unwrap();
            let id: u32 = serde_json::from_slice(d.body()).unwrap();
            assert!(done.contains_key(&id), "task {id} left over but never done");
            d.ack().await.unwrap();
        }
    }
    tasks.queue().clone().delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanout_subscriber_receives_again_after_its_node_is_killed() {
    let cluster = require_local_cluster();
    cluster.up().unwrap();
    let client = common::client().await;
    let mut events = client.events();
    let logs = rabbitkit::Exchange::fanout(common::unique_name("failover.fanout"))
        .declare(&client)
        .await
        .unwrap();
    // A temporary (exclusive) queue, on the node the client is connected to.
    let mut sub = logs.subscribe::<String>().await.unwrap();
    logs.publish(&"before".to_string()).await.unwrap();
    assert_eq!(common::next_body(&mut sub).await, "before");

    let node = node_of(&client);
    cluster.kill(node).unwrap();
    common::wait_for_event(&mut events, Duration::from_secs(60), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    // The killed node's exclusive queue may stay behind, locked, while the
    // node is down (RabbitMQ 4): the subscriber must still get what is
    // published from now on, without the node coming back. (The broker
    // nacks the publish meanwhile, since it also routes to that unavailable
    // queue: the publisher retries it, then reports `Nacked`; the message
    // reaches the live subscriber all the same.)
    let publish = tokio::spawn({
        let logs = logs.clone();
        async move { logs.publish(&"after".to_string()).await }
    });
    assert_eq!(common::next_body(&mut sub).await, "after");
    match publish.await.unwrap() {
        Ok(_) | Err(rabbitkit::SendError::Publish(rabbitkit::PublishError::Nacked { .. })) => {}
        Err(other) => panic!("unexpected publish error: {other:?}"),
    }
    drop(sub);
    client.delete_exchange(logs.name()).await.unwrap();
    cluster.start(node).unwrap();
}

/// The node that leads quorum queue `queue`, from `rabbitmqctl list_queues`.
fn leader_of(cluster: &Cluster, queue: &str) -> usize {
    let out = cluster
        .rabbitmqctl(
            1,
            &["list_queues", "name", "leader", "--no-table-headers", "-q"],
        )
        .unwrap();
    let leader = out
        .lines()
        .find_map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next() == Some(queue)).then(|| cols.next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| panic!("{queue} not listed:\n{out}"));
    Cluster::nodes()
        .find(|n| cluster.node_name(*n) == leader)
        .unwrap_or_else(|| panic!("leader {leader:?} of {queue} is not a local node"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_survives_killing_the_node_that_leads_its_delay_queue() {
    let cluster = require_local_cluster();
    cluster.up().unwrap();
    let client = common::client().await;
    let queue = Queue::durable(common::unique_name("failover.delayed"))
        .declare(&client)
        .await
        .unwrap();
    // 20 s = 200 units of 100 ms = 0b11001000: it enters level 07 (12.8 s).
    let start = std::time::Instant::now();
    queue
        .send_with(
            &"still here".to_string(),
            rabbitkit::PublishOptions::new().delay(Duration::from_secs(20)),
        )
        .await
        .unwrap();
    let leader = leader_of(&cluster, "rabbitkit.delay.07");
    eprintln!("killing rabbit{leader}, leader of rabbitkit.delay.07");
    cluster.kill(leader).unwrap();

    let mut sub = queue.subscribe::<String>().await.unwrap();
    let received = tokio::time::timeout(Duration::from_secs(90), sub.next())
        .await
        .expect("the delayed message arrives although its queue's leader died")
        .unwrap()
        .unwrap();
    assert_eq!(received.body, "still here");
    assert!(start.elapsed() >= Duration::from_secs(20), "not early");
    received.ack().await.unwrap();
    cluster.up().unwrap();
}

/// A parked task says it was tried 3 times, retried twice.
fn assert_parked_after_two_retries(message: &rabbitkit::Received<u32>) {
    let headers = message.headers();
    assert_eq!(
        headers.get(rabbitkit::ATTEMPTS_HEADER),
        Some(&rabbitkit::HeaderValue::Int(3)),
        "{headers}"
    );
    assert_eq!(
        headers.get(rabbitkit::RETRIES_HEADER),
        Some(&rabbitkit::HeaderValue::Int(2)),
        "{headers}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_between_retries_does_not_change_the_attempt_count() {
    let cluster = require_local_cluster();
    cluster.up().unwrap();
    let client = common::client().await;
    let name = common::unique_name("failover.retry");
    let tasks = rabbitkit::WorkQueue::<u32>::builder(&name)
        .retry(rabbitkit::RetryPolicy::new([
            Duration::from_secs(3),
            Duration::from_secs(3),
        ]))
        .declare(&client)
        .await
        .unwrap();
    let parking = Queue::durable(format!("{name}.parked"))
        .declare(&client)
        .await
        .unwrap();
    let calls = Arc::new(Mutex::new(0u32));
    let first_failure = Arc::new(tokio::sync::Notify::new());
    let shutdown = rabbitkit::Shutdown::new();
    let worker = {
        let (tasks, calls, first_failure, shutdown) = (
            tasks.clone(),
            calls.clone(),
            first_failure.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            tasks
                .work_until(&shutdown, move |_: u32| {
                    let (calls, first_failure) = (calls.clone(), first_failure.clone());
                    async move {
                        *calls.lock().unwrap() += 1;
                        first_failure.notify_one();
                        Err("always".into())
                    }
                })
                .await
        })
    };
    tasks.submit(&1).await.unwrap();
    first_failure.notified().await;
    // While the retry waits in a delay queue, the client's node dies.
    let node = node_of(&client);
    cluster.kill(node).unwrap();

    let mut parked = parking.subscribe::<u32>().await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(120), parked.next())
        .await
        .expect("parked after the failover")
        .unwrap()
        .unwrap();
    assert_parked_after_two_retries(&message);
    message.ack().await.unwrap();
    shutdown.stop(Duration::from_secs(5));
    let report = worker.await.unwrap().unwrap();
    // At least once: the node may die between a retry copy's confirm and the
    // original's ack; the original then comes back and starts a second line
    // of retries. Each line counts its own attempts: every parked copy says
    // 3 attempts, 2 retries, never a count reset or inflated by the failover.
    assert!(report.parked >= 1, "{report:?}");
    for n in 1..report.parked {
        let copy = tokio::time::timeout(Duration::from_secs(60), parked.next())
            .await
            .unwrap_or_else(|_| panic!("parked copy {} of {}", n + 1, report.parked))
            .unwrap()
            .unwrap();
        assert_parked_after_two_retries(&copy);
        copy.ack().await.unwrap();
    }
    assert!(*calls.lock().unwrap() >= 3);
    cluster.up().unwrap();
}

/// Which node serves the connection named `connection_name`, asked of the
/// broker: through nginx the client only knows nginx's address, but the
/// broker sees the connection arrive on its node's own port.
fn node_serving(cluster: &Cluster, connection_name: &str) -> usize {
    let asked = Cluster::nodes()
        .find(|&n| cluster.is_running(n))
        .expect("a running node");
    let out = cluster
        .rabbitmqctl(
            asked,
            &[
                "list_connections",
                "--no-table-headers",
                "port",
                "client_properties",
            ],
        )
        .unwrap();
    let line = out
        .lines()
        .find(|line| line.contains(connection_name))
        .unwrap_or_else(|| panic!("no connection named {connection_name}:\n{out}"));
    let port: u16 = line
        .split_whitespace()
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    cluster.node_for_port(port).expect("a local node's port")
}

/// The set-up of many users: one URL, a TCP load balancer (nginx, with
/// `crates/rabbitkit-test/nginx/rabbitmq-lb.conf`, the file the book shows)
/// in front of the three nodes. The client is given nginx's URL only; when
/// the node nginx sent it to is killed, its reconnect goes through nginx to
/// a live node, new connections skip the dead node, and every confirmed
/// message arrives. Without nginx,
/// `cargo xtask test` filters this test out (reported as skipped); run
/// directly, it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_nginx_killing_the_connected_node_loses_no_confirmed_message() {
    const TOTAL: u32 = 1500;
    const IN_FLIGHT: usize = 64;
    let cluster = require_local_cluster();
    cluster.up().unwrap();
    let lb = LoadBalancer::start().unwrap_or_else(|e| {
        panic!("this test needs nginx in front of the cluster (cargo xtask test skips it): {e}")
    });
    let connection_name = common::unique_name("nginx-client");
    let client = common::options()
        .connection_name(connection_name.as_str())
        .connect(lb.url())
        .await
        .unwrap();
    assert_eq!(
        client.current_endpoint().expect("connected").port(),
        rabbitkit_test::LB_PORT,
        "the client knows nginx only"
    );
    let mut events = client.events();
    let queue = Queue::named(common::unique_name("failover.nginx"))
        .declare(&client)
        .await
        .unwrap();

    let received: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let mut messages = queue.subscribe::<u32>().await.unwrap();
    let seen = received.clone();
    let consuming = tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            let message = message.expect("the subscription survives failover");
            *seen.lock().unwrap().entry(message.body).or_default() += 1;
            let _ = message.ack().await;
        }
    });

    // Confirmed sends, many in flight; the node behind nginx killed a third
    // of the way through.
    let mut confirmed = BTreeSet::new();
    let mut in_flight = FuturesUnordered::new();
    let mut killed = None;
    for n in 0..TOTAL {
        let queue = &queue;
        in_flight.push(async move { (n, queue.send(&n).await) });
        if in_flight.len() >= IN_FLIGHT {
            let (n, res) = in_flight.next().await.unwrap();
            res.unwrap_or_else(|e| panic!("send {n} failed: {e}"));
            confirmed.insert(n);
        }
        if n == TOTAL / 3 {
            let node = node_serving(&cluster, &connection_name);
            cluster.kill(node).unwrap();
            killed = Some(node);
        }
    }
    while let Some((n, res)) = in_flight.next().await {
        res.unwrap_or_else(|e| panic!("send {n} failed: {e}"));
        confirmed.insert(n);
    }
    drop(in_flight);
    assert_eq!(confirmed.len(), TOTAL as usize);
    let killed = killed.unwrap();

    common::wait_for_event(&mut events, Duration::from_secs(60), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    assert_eq!(
        client.current_endpoint().expect("connected").port(),
        rabbitkit_test::LB_PORT,
        "reconnected through nginx"
    );
    let now_on = node_serving(&cluster, &connection_name);
    assert_ne!(now_on, killed, "nginx sent the reconnect to a live node");
    // While the node is down, every new connection through nginx reaches a
    // live node: three in a row, so round robin comes to the dead one.
    for _ in 0..3 {
        let name = common::unique_name("nginx-extra");
        let other = common::options()
            .connection_name(name.as_str())
            .connect(lb.url())
            .await
            .expect("a live node through nginx");
        assert_ne!(
            node_serving(&cluster, &name),
            killed,
            "nginx skips the dead node"
        );
        other.close().await;
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let missing = {
            let got = received.lock().unwrap();
            confirmed.iter().filter(|n| !got.contains_key(n)).count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} confirmed messages never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let duplicates: u32 = received.lock().unwrap().values().map(|c| c - 1).sum();
    eprintln!(
        "through nginx: killed node {killed}, now on node {now_on}; confirmed {}, duplicates {duplicates}, republished {}",
        confirmed.len(),
        client.stats().republished
    );

    consuming.abort();
    queue.delete().await.unwrap();
    client.close().await;
    drop(lb);
    cluster.start(killed).unwrap();
}

/// A stream consumer on the node that is killed resumes, on another node,
/// after the last offset it acknowledged: every message is read, and only
/// those delivered but not acknowledged before the kill come twice.
/// Run by exact name only: it kills a node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_consumer_resumes_after_its_last_acknowledged_offset_when_its_node_dies() {
    const TOTAL: u32 = 10_000;
    const PREFETCH: u16 = 50;
    const KILL_AT: usize = 3_000;
    let cluster = require_local_cluster();
    cluster.up().unwrap();
    let client = common::client().await;
    let mut events = client.events();
    let queue = Queue::stream(common::unique_name("failover.stream"))
        .declare(&client)
        .await
        .unwrap();
    futures::stream::iter(0..TOTAL)
        .map(|n| {
            let queue = &queue;
            async move { queue.send(&n).await.map(|_| ()) }
        })
        .buffer_unordered(256)
        .for_each(|sent| async move { sent.expect("confirmed") })
        .await;

    let mut sub = queue
        .subscribe_with::<u32>(
            ConsumeOptions::new()
                .prefetch(PREFETCH)
                .stream_offset(rabbitkit::StreamOffset::First),
        )
        .await
        .unwrap();
    // Deliveries per body (the message number): offsets need not be
    // contiguous, bodies are.
    let mut seen: HashMap<u32, u32> = HashMap::new();
    let mut deliveries = 0usize;
    let mut killed = None;
    let mut acked_at_kill: Option<u64> = None;
    // One more message is sent after the failover (body TOTAL), so all
    // TOTAL + 1 are expected.
    while seen.len() <= TOTAL as usize {
        let msg = tokio::time::timeout(Duration::from_secs(120), sub.next())
            .await
            .unwrap_or_else(|_| panic!("stalled at {} distinct offsets", seen.len()))
            .expect("the subscription survives failover")
            .expect("a decodable message");
        let offset = msg.stream_offset().expect("a stream offset");
        let times = seen.entry(msg.body).or_default();
        *times += 1;
        if *times > 1 {
            // Read again: only what was not acknowledged when the node died.
            let acked = acked_at_kill.expect("duplicates only after the kill");
            assert!(
                offset > acked,
                "offset {offset} read again, though acknowledged (up to {acked}) before the kill"
            );
        }
        deliveries += 1;
        if deliveries == KILL_AT && killed.is_none() {
            // This one (held, not dropped: a dropped delivery counts as
            // settled) and those buffered behind it stay unacknowledged.
            let held = msg;
            let node = node_of(&client);
            acked_at_kill = Some(sub.last_acked_offset().unwrap_or(0));
            eprintln!(
                "killing rabbit{node} at offset {offset}, last acknowledged {:?}",
                sub.last_acked_offset()
            );
            cluster.kill(node).unwrap();
            killed = Some(node);
            common::wait_for_event(&mut events, Duration::from_secs(60), |e| {
                matches!(e, Event::Recovered { .. })
            })
            .await;
            // A stream's reader sees only chunks its node knows to be
            // committed. On RabbitMQ 3.10 a replica that becomes leader
            // may not tell readers of its last chunks until it writes
            // again (CI once stalled at 9,926 of 10,000 here, with no
            // new writes): one more message, sent after the failover as
            // a live producer would, moves the commit on, and must be
            // read too.
            queue.send(&TOTAL).await.expect("sent after the failover");
            drop(held);
            continue;
        }
        // An ack on the dead channel fails (ChannelGone): not acknowledged,
        // so read again after the resume.
        let _ = msg.ack().await;
    }
    let killed = killed.expect("a node was killed");
    let duplicates = deliveries - seen.len();
    eprintln!(
        "killed rabbit{killed}; {deliveries} deliveries, {} messages, {duplicates} duplicates (prefetch {PREFETCH})",
        seen.len()
    );
    // No gap: every message was read.
    let mut bodies: Vec<u32> = seen.keys().copied().collect();
    bodies.sort_unstable();
    assert_eq!(bodies, (0..=TOTAL).collect::<Vec<_>>());
    // Resumed after the last acknowledged offset (checked per duplicate
    // above), not from the first (that would read thousands again): only
    // what was delivered and not yet acknowledged: about the prefetch, but
    // a stream's broker may hand out more than the prefetch (RabbitMQ 3.10
    // in CI: 67 read again with a prefetch of 50).
    assert!(
        duplicates < KILL_AT / 2,
        "{duplicates} duplicates: resumed near the start, not after offset {acked_at_kill:?}"
    );
    assert!(
        seen.values().all(|&n| n <= 2),
        "an offset delivered 3 times"
    );
    assert!(
        sub.last_acked_offset()
            .is_some_and(|o| o >= u64::from(TOTAL))
    );
    drop(sub);
    queue.delete().await.unwrap();
    cluster.start(killed).unwrap();
}

/// A classic queue lives on one node. When that node dies the broker
/// cancels its consumers, and subscribing again is refused ("home node ...
/// down or inaccessible") until the node is back. Before: the consumer gave
/// up after 5 tries (about 3 s) and `work()` returned `Ok`, stopping the
/// service for good. Now it keeps trying, backing off, and handles the
/// tasks sent once the node is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_a_classic_queue_whose_node_died_resumes_when_the_node_returns() {
    let cluster = require_local_cluster();
    cluster.up().unwrap();
    // The queue is declared on node 3 (its home); the worker is on node 1.
    let on_node3 = common::client_on(3).await;
    let name = common::unique_name("failover.classic.home");
    rabbitkit::WorkQueue::<u32>::builder(name.as_str())
        .classic()
        .declare(&on_node3)
        .await
        .unwrap();
    on_node3.close().await;
    let client = common::client_on(1).await;
    let tasks = rabbitkit::WorkQueue::<u32>::builder(name.as_str())
        .classic()
        .declare(&client)
        .await
        .unwrap();
    tasks.submit(&1).await.unwrap();
    let handled: Arc<Mutex<Vec<u32>>> = Arc::default();
    let worker = tokio::spawn({
        let (tasks, handled) = (tasks.clone(), handled.clone());
        async move {
            tasks
                .work(move |n: u32| {
                    handled.lock().unwrap().push(n);
                    async { Ok(()) }
                })
                .await
        }
    });
    let wait_for = |n: u32| {
        let handled = handled.clone();
        async move {
            for _ in 0..1200 {
                if handled.lock().unwrap().contains(&n) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("task {n} not handled: {:?}", handled.lock().unwrap());
        }
    };
    wait_for(1).await;
    cluster.kill(3).unwrap();
    // Long past the old five tries.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        !worker.is_finished(),
        "the worker gave up: {:?}",
        worker.await
    );
    cluster.start(3).unwrap();
    cluster.up().unwrap();
    tasks.submit(&2).await.unwrap();
    wait_for(2).await;
    assert!(!worker.is_finished());
    worker.abort();
    client.delete_queue(&name).await.unwrap();
}

/// rabbitkit-stream (stream protocol): the node of a stream's leader is
/// SIGKILLed while a named producer publishes and a named consumer reads.
/// The producer reconnects to the new leader under its name and re-sends
/// what was unconfirmed with the same publishing ids: every message is in
/// the stream exactly once, in order (0 lost, 0 duplicated). The consumer
/// reconnects and goes on without a gap or a repeat, and a consumer started
/// under its name after it stops resumes right after its stored offset.
///
/// Ignored (reported skipped): it passed twice, then failed on a fresh
/// cluster (2026-12-07: a publish timed out after the kill and message 480
/// was never read), so rabbitkit-stream's failover is not a promise yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_protocol_named_producer_and_consumer_survive_a_sigkill_of_the_leader_node() {
    use rabbitkit_stream::{OffsetSpec, StreamEvent, StreamSpec};
    const TOTAL: u64 = 20_000;
    const WINDOW: usize = 500;
    let cluster = require_local_cluster();
    cluster.up().unwrap();
    let client = common::streams::stream_client().await;
    let stream = common::unique_name("failover.stream");
    client
        .declare_stream(StreamSpec::new(&stream).max_age(Duration::from_secs(3600)))
        .await
        .unwrap();
    let leader = client.stream_nodes(&stream).await.unwrap()[0].clone();
    let port: u16 = leader.rsplit(':').next().unwrap().parse().unwrap();
    // The stream port of node N is its AMQP port - 120.
    let node = cluster.node_for_port(port + 120).expect("a local node");

    let producer = client
        .producer::<u64>(&stream, "failover-writer")
        .build()
        .await
        .unwrap();
    let mut producer_events = producer.events();
    let mut consumer = client
        .consumer::<u64>(&stream)
        .name("failover-reader")
        .offset(OffsetSpec::First)
        .store_every(100, Duration::from_secs(1))
        .build()
        .await
        .unwrap();

    // Publish with WINDOW confirms in flight; kill the leader's node at 5000.
    let publishing = tokio::spawn(async move {
        let mut inflight = std::collections::VecDeque::new();
        for n in 0..TOTAL {
            inflight.push_back(producer.publish(&n));
            if inflight.len() >= WINDOW {
                inflight.pop_front().unwrap().await.expect("confirmed");
            }
            if n == 5_000 {
                let cluster = Cluster::local();
                tokio::task::spawn_blocking(move || cluster.kill(node).unwrap());
            }
        }
        for c in inflight {
            c.await.expect("confirmed");
        }
        producer.close().await.expect("close");
    });

    // Read concurrently: every body once, in order.
    let mut offsets = vec![];
    for want in 0..TOTAL {
        let msg = tokio::time::timeout(Duration::from_secs(60), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("message {want} not read within 60 s"))
            .expect("consumer ended")
            .expect("decodable");
        assert_eq!(msg.body, want, "in order, no gap, no repeat");
        offsets.push(msg.offset);
        if want == 15_000 {
            break;
        }
    }
    publishing.await.unwrap();
    let reconnected =
        common::wait_for_event_of(&mut producer_events, Duration::from_secs(5), |e| {
            matches!(e, StreamEvent::Reconnected { .. })
        })
        .await;
    eprintln!("producer: {reconnected}");

    // Stop the reader gracefully at 15000 (offset stored), start it again
    // under its name: right after the stored offset.
    let last = *offsets.last().unwrap();
    consumer.close().await.unwrap();
    assert_eq!(
        client
            .stored_offset(&stream, "failover-reader")
            .await
            .unwrap(),
        Some(last)
    );
    let mut resumed = client
        .consumer::<u64>(&stream)
        .name("failover-reader")
        .offset(OffsetSpec::First)
        .build()
        .await
        .unwrap();
    let first = resumed.next().await.unwrap().unwrap();
    assert_eq!((first.offset, first.body), (last + 1, 15_001));
    resumed.close().await.unwrap();

    // The whole stream: exactly 0..TOTAL, each once, in order.
    let mut all = client
        .consumer::<u64>(&stream)
        .offset(OffsetSpec::First)
        .build()
        .await
        .unwrap();
    for want in 0..TOTAL {
        let msg = tokio::time::timeout(Duration::from_secs(30), all.next())
            .await
            .unwrap_or_else(|_| panic!("the stream holds only {want} of {TOTAL}"))
            .unwrap()
            .unwrap();
        assert_eq!(msg.body, want, "0 lost, 0 duplicated");
    }
    let extra = tokio::time::timeout(Duration::from_secs(2), all.next()).await;
    assert!(
        extra.is_err(),
        "nothing after the last message: no duplicate"
    );
    all.close().await.unwrap();
    cluster.up().unwrap();
    client.delete_stream(&stream).await.unwrap();
}

/// RabbitMQ 4.3 keeps the deliveries of a consumer whose node died (and a
/// single active consumer's place) for the queue's
/// `consumer_disconnected_timeout` (60 s by default) before it gives them
/// to another consumer; before 4.3 it gives them back once the node is
/// seen down. `QueueBuilder::consumer_disconnected_timeout` sets it per
/// queue. Measured here on a real SIGKILL: the time from the kill until
/// an in-flight task is delivered again, and until a standby of a
/// single-active-consumer queue takes over, with a 2 s timeout and with
/// the default. On 4.3 the short one must come back first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_disconnected_timeout_decides_when_a_dead_nodes_tasks_and_partitions_come_back() {
    let cluster = require_local_cluster();
    cluster.up().unwrap();
    // `a` holds a task of each queue when its node is killed; `b`, on
    // another node, waits as a second consumer (a standby for the
    // single-active-consumer queues).
    let a = common::client().await;
    let x = node_of(&a);
    let y = if x == 1 { 2 } else { 1 };
    let b = common::client_on(y).await;
    let server = a.server().expect("identified");
    let prefix = common::unique_name("failover.disconnected");
    let short = Duration::from_secs(2);
    // (label, short timeout, single active consumer)
    let cases = [
        ("task, 2 s", true, false),
        ("task, default", false, false),
        ("partition, 2 s", true, true),
        ("partition, default", false, true),
    ];
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, &'static str)>();
    let mut names = Vec::new();
    let mut held = Vec::new();
    let mut tasks = Vec::new();
    for (i, (label, is_short, sac)) in cases.iter().enumerate() {
        let name = format!("{prefix}.{i}");
        let mut queue = Queue::quorum(name.as_str());
        if *is_short {
            queue = queue.consumer_disconnected_timeout(short);
        }
        if *sac {
            queue = queue.single_active_consumer();
        }
        let queue = queue.declare(&a).await.unwrap();
        queue.send(&label.to_string()).await.unwrap();
        let mut first = a
            .consume(&name, ConsumeOptions::new().prefetch(1))
            .await
            .unwrap();
        let d = tokio::time::timeout(Duration::from_secs(20), first.next())
            .await
            .expect("the task is delivered")
            .unwrap()
            .unwrap();
        held.push(d); // in flight: never acknowledged before the kill
        let standby = b
            .consume(&name, ConsumeOptions::new().prefetch(1))
            .await
            .unwrap();
        for (who, mut consumer) in [
            ("recovered consumer", first),
            ("other node's consumer", standby),
        ] {
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                if let Some(Ok(d)) = consumer.next().await {
                    let _ = tx.send((i, who));
                    d.ack().await.unwrap();
                }
            }));
        }
        names.push(name);
    }
    let killed_at = std::time::Instant::now();
    cluster.kill(x).unwrap();
    let mut back: Vec<Option<(Duration, &str)>> = vec![None; cases.len()];
    while back.iter().any(Option::is_none) {
        let (i, who) = tokio::time::timeout(Duration::from_secs(180), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("not delivered again within 180 s: {back:?}"))
            .unwrap();
        assert!(back[i].is_none(), "{} delivered again twice", cases[i].0);
        back[i] = Some((killed_at.elapsed(), who));
    }
    let back: Vec<(Duration, &str)> = back.into_iter().map(Option::unwrap).collect();
    for ((label, _, _), (after, who)) in cases.iter().zip(&back) {
        eprintln!(
            "RabbitMQ {}: {label}: delivered again {} ms after the kill, to the {who}",
            server.version_text,
            after.as_millis()
        );
    }
    if server.has_consumer_disconnected_timeout() {
        // The queue waited out its timeout: the short one came back first.
        assert!(back[0].0 < back[1].0, "{back:?}");
        assert!(back[2].0 < back[3].0, "{back:?}");
    }
    drop(held);
    for task in tasks {
        task.abort();
    }
    for name in &names {
        // Each was delivered again once and acknowledged: the queue empties.
        let mut left = u32::MAX;
        for _ in 0..100 {
            left = a.queue_info(name).await.unwrap().messages;
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(left, 0, "{name}");
        a.delete_queue(name).await.unwrap();
    }
    cluster.start(x).unwrap();
}
