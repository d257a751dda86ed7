//! Faults a real network produces, injected by a TCP proxy between the
//! client and the broker: a stalled connection, a connection cut while the
//! client is recovering.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use rabbitkit::{Event, OutgoingMessage, Queue};
use rabbitkit_test::FaultProxy;

/// Two proxies, in front of two different nodes (or the one external broker).
async fn proxies() -> (FaultProxy, FaultProxy) {
    common::ensure_cluster();
    let addrs = common::amqp_addrs();
    let sock = |i: usize| -> SocketAddr {
        let e: rabbitkit::Endpoint = addrs[i % addrs.len()].parse().unwrap();
        format!("{}:{}", e.host(), e.port()).parse().unwrap()
    };
    (
        FaultProxy::start(sock(0)).await.unwrap(),
        FaultProxy::start(sock(1)).await.unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_is_detected_by_heartbeats_and_fails_over() {
    let (p1, p2) = proxies().await;
    let heartbeat = Duration::from_secs(2);
    let client = common::options()
        .heartbeat(heartbeat)
        .publish_timeout(Duration::from_secs(20))
        .connect([p1.amqp_url(), p2.amqp_url()])
        .await
        .unwrap();
    let mut events = client.events();
    let queue = Queue::named(common::unique_name("faults.stall"))
        .declare(&client)
        .await
        .unwrap();
    queue.send(&"before".to_string()).await.unwrap();

    p1.stall(); // bytes stop; the socket stays open: only heartbeats can tell
    // A publish made now does not hang: it is re-sent once the client fails over.
    let during = tokio::spawn({
        let q = queue.clone();
        async move { q.send(&"during".to_string()).await }
    });
    common::wait_for_event(&mut events, heartbeat * 4, |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    let recovered = common::wait_for_event(&mut events, Duration::from_secs(20), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    match recovered {
        Event::Recovered { endpoint, .. } => assert_eq!(endpoint.port(), p2.addr().port()),
        _ => unreachable!(),
    }
    during
        .await
        .unwrap()
        .expect("the publish made during the stall is confirmed");
    let mut sub = queue.subscribe::<String>().await.unwrap();
    assert_eq!(common::next_body(&mut sub).await, "before");
    assert_eq!(common::next_body(&mut sub).await, "during");
    drop(sub);
    p1.resume();
    queue.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_during_topology_recovery_is_retried_until_complete() {
    let (p1, p2) = proxies().await;
    let client = common::options()
        .connect([p1.amqp_url(), p2.amqp_url()])
        .await
        .unwrap();
    let mut events = client.events();
    // Exclusive queues die with their connection: after recovery they exist
    // again only if the client really declared them again.
    let mut queues = Vec::new();
    for _ in 0..20 {
        queues.push(
            Queue::named(common::unique_name("faults.recover"))
                .exclusive(true)
                .auto_delete(false)
                .declare(&client)
                .await
                .unwrap(),
        );
    }
    // Make recovery slow on p2 (every chunk of bytes waits), keep p1 closed.
    p2.delay(Duration::from_millis(40));
    p1.refuse(true);
    p1.cut();
    common::wait_for_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    // Wait until the client reached p2, then cut it while it re-declares.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while p2.connections() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never reached p2");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !client.is_connected(),
        "still recovering when the cut comes"
    );
    p2.cut();
    p2.delay(Duration::ZERO);
    p1.refuse(false);
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    for q in &queues {
        q.info()
            .await
            .expect("every exclusive queue declared again");
    }
    queues[0].send(&"works".to_string()).await.unwrap();
    let mut sub = queues[0].subscribe::<String>().await.unwrap();
    assert_eq!(common::next_body(&mut sub).await, "works");
    let _ = client
        .publish(OutgoingMessage::new("", queues[1].name(), b"x".to_vec()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_deleted_exchange_and_its_exchange_binding_come_back_after_a_cut() {
    let (p1, p2) = proxies().await;
    let client = common::options()
        .connect([p1.amqp_url(), p2.amqp_url()])
        .await
        .unwrap();
    let mut events = client.events();
    let source = rabbitkit::Exchange::topic(common::unique_name("faults.e2e.src"))
        .declare(&client)
        .await
        .unwrap();
    // Auto-delete: when the connection is cut, the broker deletes the
    // subscriber's exclusive queue, then this exchange (its last binding
    // went), then the exchange binding into it. Only the client's topology
    // replay brings them back, in an order that works.
    let destination = rabbitkit::Exchange::fanout(common::unique_name("faults.e2e.dst"))
        .auto_delete(true)
        .internal(true)
        .declare(&client)
        .await
        .unwrap();
    source
        .bind_exchange(&destination, &"audit.#".parse().unwrap())
        .await
        .unwrap();
    let mut audit = destination.subscribe::<String>().await.unwrap();
    source
        .publish("audit.before", &"before".to_string())
        .await
        .unwrap();
    assert_eq!(common::next_body(&mut audit).await, "before");

    p1.refuse(true);
    p1.cut();
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    // Bound nowhere else: unroutable (a topic publish is mandatory by default).
    assert!(!common::routed(
        source
            .publish("other.after", &"not audited".to_string())
            .await
    ));
    source
        .publish("audit.after", &"after".to_string())
        .await
        .unwrap();
    assert_eq!(common::next_body(&mut audit).await, "after");
    drop(audit);
    client.delete_exchange(source.name()).await.unwrap();
    let _ = client.delete_exchange(destination.name()).await;
    drop(p2);
}
