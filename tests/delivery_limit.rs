//! A quorum queue's delivery limit, as each RabbitMQ version counts it:
//! what `Delivery::delivery_count` and `acquired_count` read, which give-backs
//! count toward the limit, and that a message past the limit is
//! dead-lettered (never dropped when the queue has a dead-letter exchange).

mod common;

use std::time::Duration;

use rabbitkit::{Exchange, Queue};

/// How a message was given back after one delivery.
#[derive(Debug, Clone, Copy, PartialEq)]
enum GiveBack {
    /// `basic.nack` with requeue (what rabbitkit's graceful give-back and
    /// a dropped delivery send).
    Nack,
    /// `basic.reject` with requeue.
    Reject,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_version_counts_give_backs_toward_the_delivery_limit_as_documented() {
    let client = common::client().await;
    let version = client.server_version().expect("the broker's version");
    let server = client.server().unwrap();
    let name = common::unique_name("limit.counted");
    let dead = Exchange::fanout(format!("{name}.dlx"))
        .declare(&client)
        .await
        .unwrap();
    let graveyard = Queue::named(format!("{name}.dead"))
        .declare(&client)
        .await
        .unwrap();
    dead.bind(&graveyard).await.unwrap();
    let queue = Queue::quorum(name.as_str())
        .delivery_limit(2)
        .dead_letter(dead.name())
        .declare(&client)
        .await
        .unwrap();
    queue.send(&"poison").await.unwrap();

    // What counts toward the limit of 2: on 4.3 the rejects only (the two
    // nacks are free), elsewhere every give-back. So the message is
    // delivered this many times, with these counts, then dead-lettered.
    let expected: Vec<Option<u64>> =
        if server.requeues_count_toward_delivery_limit() || !version.at_least(4, 0) {
            vec![None, Some(1), Some(2)]
        } else {
            vec![None, None, None, Some(1), Some(2)]
        };
    // Give it back: twice by nack, then by reject.
    let plan = [
        GiveBack::Nack,
        GiveBack::Nack,
        GiveBack::Reject,
        GiveBack::Reject,
        GiveBack::Reject,
    ];
    let mut sub = queue.subscribe::<String>().await.unwrap();
    let mut seen = Vec::new(); // (delivery_count, acquired_count) at each delivery
    for how in &plan[..expected.len()] {
        let received = common::next_received(&mut sub).await;
        seen.push((received.delivery_count(), received.acquired_count()));
        match how {
            GiveBack::Nack => received.nack(true).await.unwrap(),
            GiveBack::Reject => received.reject(true).await.unwrap(),
        }
    }
    drop(sub);
    eprintln!(
        "RabbitMQ {version}: (x-delivery-count, x-acquired-count) at each delivery: {seen:?}"
    );

    // The first delivery carries no count, on every version.
    assert_eq!(seen[0], (None, None), "{seen:?}");
    // 4.3 counts every acquisition; before, there is no such header
    // (measured on 4.0.5: none).
    for (n, (_, acquired)) in seen.iter().enumerate().skip(1) {
        let expected = version.at_least(4, 3).then_some(n as u64);
        assert_eq!(*acquired, expected, "delivery {n}: {seen:?}");
    }
    let counted: Vec<Option<u64>> = seen.iter().map(|(count, _)| *count).collect();
    assert_eq!(counted, expected, "RabbitMQ {version}");
    // Past the limit it is dead-lettered, never dropped.
    let mut dead_sub = graveyard.subscribe::<String>().await.unwrap();
    let last = tokio::time::timeout(
        Duration::from_secs(10),
        common::next_received(&mut dead_sub),
    )
    .await
    .expect("the poison message was dead-lettered");
    assert_eq!(last.body, "poison");
    last.ack().await.unwrap();
    drop(dead_sub);
    assert_eq!(queue.info().await.unwrap().messages, 0);
    client.delete_queue(&name).await.unwrap();
    client.delete_queue(graveyard.name()).await.unwrap();
    client.delete_exchange(dead.name()).await.unwrap();
    client.close().await;
}
