//! Network partitions, on a partitionable cluster of its own
//! (`rabbitkit_test::Netsplit`: three nodes in network namespaces, cut with
//! iptables), never the shared one.
//!
//! Needs root, iproute2, iptables and the selected RabbitMQ version
//! installed (`RABBITKIT_RABBITMQ`, 4.3 by default). `cargo xtask test`
//! runs this binary alone, serially, after the failover tests, and filters
//! it out (nextest reports it as skipped) when it cannot run it or when
//! `AMQP_ADDR` is set; run directly where it cannot run, it fails with the
//! reason.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rabbitkit::{ConsumeOptions, Event, OutgoingMessage, Queue};
use rabbitkit_test::{Netsplit, PartitionHandling, RabbitMq, using_external_broker};

/// The cluster, built fresh (about 25 s), or the reason it cannot be.
fn netsplit(handling: PartitionHandling) -> Netsplit {
    assert!(
        !using_external_broker(),
        "the netsplit tests build their own cluster and do not run with AMQP_ADDR; \
         `cargo xtask test` skips them there"
    );
    let version = RabbitMq::from_env().unwrap().unwrap_or_default();
    if let Some(why) = Netsplit::unavailable(version) {
        panic!("cannot run the netsplit tests: {why}; `cargo xtask test` skips them there");
    }
    Netsplit::up(version, handling).expect("partitionable cluster")
}

/// A client connected to the node that will be cut off (the minority side
/// of the partition, on RabbitMQ 3.10 with `ignore`, the mode where that
/// node keeps its clients' connections) publishes confirmed messages to a
/// quorum queue and consumes them. It notices that nothing is confirmed
/// any more, moves to a majority node, re-sends what was not confirmed;
/// after the heal, every confirmed message has been received, and the
/// copies received twice are no more than the publishes in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_on_the_minority_side_moves_to_the_majority_and_loses_nothing() {
    let cluster = tokio::task::block_in_place(|| netsplit(PartitionHandling::Ignore));
    let mut urls = cluster.amqp_urls();
    urls.rotate_left(2); // node 3 first: the node to cut off
    let minority = cluster.amqp_url(3);
    let (window, prefetch) = (50, 100u16);
    let client = common::options()
        .publish_window(window)
        .publish_timeout(Duration::from_secs(90))
        .connect(urls)
        .await
        .expect("connect");
    assert_eq!(
        client.current_endpoint().unwrap().to_string(),
        minority.replace(":guest@", ":***@")
    );
    let mut events = client.events();
    let queue = Queue::named(common::unique_name("netsplit"))
        .declare(&client)
        .await
        .unwrap();
    let name = queue.name().to_owned();

    let received: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let mut consumer = client
        .consume(&name, ConsumeOptions::new().prefetch(prefetch))
        .await
        .unwrap();
    let got = received.clone();
    tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            let n: u64 = std::str::from_utf8(d.body()).unwrap().parse().unwrap();
            *got.lock().unwrap().entry(n).or_default() += 1;
            let _ = d.ack().await;
        }
    });

    // Publishes, 100 a second, `window` in flight at most.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (client, stop, name) = (client.clone(), stop.clone(), name.clone());
        tokio::spawn(async move {
            let mut confirmed = HashSet::new();
            let mut failed = 0;
            let mut in_flight = FuturesUnordered::new();
            let mut n = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                let stopping = stop.load(Ordering::Relaxed);
                if stopping && in_flight.is_empty() {
                    return (n, confirmed, failed);
                }
                tokio::select! {
                    _ = tick.tick(), if !stopping && in_flight.len() < window => {
                        let f = client.publish(OutgoingMessage::new("", name.as_str(), n.to_string().into_bytes()));
                        let id = n;
                        in_flight.push(async move { (id, f.await) });
                        n += 1;
                    }
                    Some((id, res)) = in_flight.next(), if !in_flight.is_empty() => match res {
                        Ok(_) => { confirmed.insert(id); }
                        Err(e) => { eprintln!("publish {id}: {e}"); failed += 1; }
                    },
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| Netsplit::cut(3)).unwrap();
    // Within the confirm deadline (10 s) plus the broker's own detection,
    // the client leaves node 3 and recovers on node 1 or 2.
    let recovered = common::wait_for_event(&mut events, Duration::from_secs(90), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    let Event::Recovered { endpoint, .. } = recovered else {
        unreachable!()
    };
    assert_ne!(endpoint.to_string(), minority.replace(":guest@", ":***@"));
    // Publishing and consuming go on on the majority side.
    let before = received.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        received.lock().unwrap().len() > before,
        "consuming resumed on the majority side"
    );

    tokio::task::block_in_place(|| {
        Netsplit::heal()?;
        cluster.wait_healed(Some(3), Duration::from_secs(150))
    })
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let (sent, confirmed, failed) = publisher.await.unwrap();
    assert_eq!(failed, 0, "no publish failed: they moved to the majority");
    assert_eq!(confirmed.len() as u64, sent);

    // Every confirmed message arrives (bounded wait).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let missing: Vec<u64> = {
            let r = received.lock().unwrap();
            confirmed
                .iter()
                .filter(|n| !r.contains_key(n))
                .copied()
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} confirmed messages never arrived, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let duplicated: u32 = received
        .lock()
        .unwrap()
        .values()
        .map(|k| k.saturating_sub(1))
        .sum();
    // A copy is sent again only when its confirm did not come, and at most
    // `window` publishes wait for theirs; and the broker redelivers at most
    // `prefetch` unacknowledged deliveries when the consumer moves.
    assert!(
        (duplicated as usize) <= window + prefetch as usize,
        "{duplicated} duplicates"
    );
    client.close().await;
}
