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

/// A failover rabbitkit handles logs nothing above WARN from rabbitkit's
/// own targets (`rabbitkit`, `rabbitkit_core::*`): users alert on ERROR,
/// and a node lost and replaced in milliseconds is not an incident. lapin
/// logs the lost socket at ERROR on its own targets (`lapin::io_loop`,
/// `lapin::channels`): the README and the failover chapter show the
/// filter (`lapin=warn` / `lapin=off`) and name those lines; this test
/// prints them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handled_failover_logs_nothing_above_warn_from_rabbitkit() {
    let capture = common::capture::Capture::default();
    tracing::subscriber::set_global_default(capture.clone()).unwrap();
    let (p1, p2) = proxies().await;
    let client = common::options()
        .connect([p1.amqp_url(), p2.amqp_url()])
        .await
        .unwrap();
    let mut events = client.events();
    let tasks = rabbitkit::WorkQueue::<u32>::builder(common::unique_name("faults.quiet"))
        .concurrency(4)
        .declare(&client)
        .await
        .unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let worker = tokio::spawn({
        let (tasks, done) = (tasks.clone(), done.clone());
        async move {
            tasks
                .work(move |_: u32| {
                    let done = done.clone();
                    async move {
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        Ok(())
                    }
                })
                .await
        }
    });
    for n in 0..20 {
        tasks.submit(&n).await.unwrap();
    }
    // The node in use goes away mid-traffic: the client fails over.
    let publishing = tokio::spawn({
        let tasks = tasks.clone();
        async move {
            for n in 20..60 {
                tasks.submit(&n).await.unwrap();
            }
        }
    });
    p1.refuse(true);
    p1.cut();
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    publishing.await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while done.load(std::sync::atomic::Ordering::SeqCst) < 60 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every task was handled after the failover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.abort();
    client.delete_queue(tasks.queue().name()).await.unwrap();
    client.close().await;

    let logs = capture.0.lock().unwrap().clone();
    let errors = |from: &str| -> Vec<String> {
        logs.lines()
            .filter(|l| l.starts_with(&format!("ERROR {from}")))
            .map(str::to_owned)
            .collect()
    };
    let ours = errors("rabbitkit");
    assert!(
        ours.is_empty(),
        "rabbitkit logged ERROR for a failover it handled: {ours:#?}"
    );
    assert!(
        logs.lines()
            .any(|l| l.starts_with("WARN rabbitkit") || l.starts_with("INFO rabbitkit")),
        "rabbitkit's own account of the failover was captured: {logs}"
    );
    for line in errors("lapin") {
        eprintln!("expected lapin line: {line}");
    }
}
