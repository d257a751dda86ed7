//! RPC: typed calls with reply_to + correlation_id, many in flight, typed
//! server errors, timeouts, unroutable requests, unknown replies.

mod common;

use std::time::Duration;

use rabbitkit::{Queue, RpcClient, RpcError, RpcServer};

fn fib(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    a
}

async fn start_server(client: &rabbitkit::Client, queue: &str) -> tokio::task::JoinHandle<()> {
    let server = RpcServer::<u64, u64>::builder(queue)
        .concurrency(8)
        .declare(client)
        .await
        .unwrap();
    tokio::spawn(async move {
        server
            .serve(|n: u64| async move {
                if n > 90 {
                    Err(format!("fib({n}) overflows"))
                } else {
                    Ok(fib(n))
                }
            })
            .await
            .unwrap();
    })
}

#[tokio::test]
async fn sixty_four_concurrent_calls_are_all_answered_correctly() {
    let client = common::client().await;
    let queue = common::unique_name("rpc_queue");
    let server = start_server(&client, &queue).await;
    for direct in [true, false] {
        let mut b = RpcClient::<u64, u64>::builder(queue.as_str());
        if !direct {
            b = b.exclusive_reply_queue();
        }
        let rpc = b.build(&client).await.unwrap();
        let calls = (0..64u64).map(|i| {
            let rpc = rpc.clone();
            async move { (i % 50, rpc.call(&(i % 50)).await) }
        });
        for (n, res) in futures::future::join_all(calls).await {
            assert_eq!(res.unwrap(), fib(n), "fib({n}) with direct={direct}");
        }
        assert_eq!(rpc.pending(), 0);
        // The handler's error reaches the caller, typed.
        assert_eq!(
            rpc.call(&91).await,
            Err(RpcError::Server("fib(91) overflows".to_string()))
        );
    }
    server.abort();
    client.delete_queue(&queue).await.unwrap();
}

#[tokio::test]
async fn unroutable_request_fails_at_once() {
    let client = common::client().await;
    for direct in [true, false] {
        let mut b = RpcClient::<u64, u64>::builder(common::unique_name("rpc.nobody"))
            .timeout(Duration::from_secs(30));
        if !direct {
            b = b.exclusive_reply_queue();
        }
        let rpc = b.build(&client).await.unwrap();
        match rpc.call(&1).await {
            Err(e @ RpcError::Unroutable { .. }) => {
                assert_eq!(e.reply_code(), Some(312));
                assert!(!e.is_retryable(), "nobody serves it: {e:?}");
            }
            other => panic!("expected Unroutable (direct={direct}), got {other:?}"),
        }
        assert_eq!(rpc.pending(), 0);
    }
}

#[tokio::test]
async fn a_slow_reply_times_out_and_the_late_reply_is_counted() {
    let client = common::client().await;
    // A "server" that takes the request but answers only after the caller gave up.
    let queue = Queue::named(common::unique_name("rpc.slow"))
        .declare(&client)
        .await
        .unwrap();
    let mut slow_server = queue.subscribe::<u64>().await.unwrap();
    let rpc = RpcClient::<u64, u64>::builder(queue.name())
        .timeout(Duration::from_millis(500))
        .build(&client)
        .await
        .unwrap();
    let call = tokio::spawn({
        let rpc = rpc.clone();
        async move { rpc.call(&10).await }
    });
    let req = tokio::time::timeout(
        Duration::from_secs(20),
        futures::StreamExt::next(&mut slow_server),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert_eq!(req.body, 10);
    assert_eq!(
        call.await.unwrap(),
        Err(RpcError::Timeout(Duration::from_millis(500)))
    );
    assert_eq!(rpc.pending(), 0, "a timed-out call leaves nothing behind");
    let props = req.properties().clone();
    let reply = rabbitkit::OutgoingMessage::new(
        "",
        props.reply_to().as_ref().unwrap().as_str(),
        b"55".to_vec(),
    )
    .properties(
        rabbitkit::BasicProperties::default()
            .with_correlation_id(props.correlation_id().clone().unwrap()),
    );
    client.publish(reply).await.unwrap();
    req.ack().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while rpc.unknown_replies() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "late reply never counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rpc.unknown_replies(), 1);
    drop(slow_server);
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn a_request_without_reply_to_is_rejected_not_looped() {
    let client = common::client().await;
    let queue = common::unique_name("rpc.noreply");
    let server = RpcServer::<u64, u64>::builder(queue.as_str())
        .declare(&client)
        .await
        .unwrap();
    let q = server.queue().clone();
    let handle = tokio::spawn(async move { server.serve(|n: u64| async move { Ok(n) }).await });
    q.send(&5u64).await.unwrap(); // no reply_to
    // The server rejects it (no requeue): the queue drains and stays empty.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = q.info().await.unwrap();
        if info.messages == 0 && info.consumers == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rpc = RpcClient::<u64, u64>::builder(queue.as_str())
        .build(&client)
        .await
        .unwrap();
    assert_eq!(rpc.call(&7).await.unwrap(), 7, "the server goes on serving");
    handle.abort();
    client.delete_queue(&queue).await.unwrap();
}

/// Polls `check` (a hang guard bounds it) until it holds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_dropped_rpc_client_closes_its_reply_channel_and_queue() {
    let client = common::client().await;
    let queue = common::unique_name("rpc.dropped");
    let server = start_server(&client, &queue).await;
    let rpc = RpcClient::<u64, u64>::builder(queue.as_str())
        .exclusive_reply_queue()
        .build(&client)
        .await
        .unwrap();
    assert_eq!(rpc.call(&10).await.unwrap(), 55);
    let reply_queue = rpc.reply_to().expect("a reply queue");
    let info = client.queue_info(&reply_queue).await.unwrap();
    assert_eq!(
        info.consumers, 1,
        "the reply consumer is there while the client lives"
    );
    let clone = rpc.clone();
    drop(rpc);
    assert_eq!(clone.call(&11).await.unwrap(), 89, "a clone keeps it alive");
    drop(clone);
    // With the last clone gone, the reply channel is closed: its consumer
    // goes and the auto-delete reply queue with it.
    eventually("the reply queue is deleted", async || {
        client.queue_info(&reply_queue).await.is_err()
    })
    .await;
    server.abort();
    client.delete_queue(&queue).await.unwrap();
}

/// How many channels the connection named `name` has open, from the broker.
fn channels_of(name: &str) -> usize {
    let out = rabbitkit_test::Cluster::local()
        .rabbitmqctl(
            1,
            &[
                "list_connections",
                "-q",
                "--no-table-headers",
                "channels",
                "client_properties",
            ],
        )
        .unwrap();
    let counts: Vec<usize> = out
        .lines()
        .filter(|l| l.contains(name))
        .filter_map(|l| l.split('\t').next()?.trim().parse().ok())
        .collect();
    assert_eq!(counts.len(), 1, "one connection named {name}: {out}");
    counts[0]
}

#[tokio::test]
async fn a_dropped_direct_reply_to_client_closes_its_reply_channel() {
    let server_client = common::client().await;
    let queue = common::unique_name("rpc.dropped.direct");
    let server = start_server(&server_client, &queue).await;
    let name = common::unique_name("rpc-direct-drop");
    let client = common::options()
        .connection_name(name.as_str())
        .connect(common::amqp_addrs())
        .await
        .unwrap();
    let before = channels_of(&name);
    let rpc = RpcClient::<u64, u64>::builder(queue.as_str())
        .build(&client)
        .await
        .unwrap();
    assert_eq!(rpc.call(&10).await.unwrap(), 55);
    assert_eq!(channels_of(&name), before + 1, "the reply channel");
    drop(rpc);
    eventually("the reply channel is closed", async || {
        channels_of(&name) == before
    })
    .await;
    client.close().await;
    server.abort();
    server_client.delete_queue(&queue).await.unwrap();
}

#[tokio::test]
async fn a_cancelled_call_leaves_nothing_pending() {
    let client = common::client().await;
    // A queue nobody serves: the call waits for a reply that never comes.
    let queue = Queue::named(common::unique_name("rpc.unserved"))
        .declare(&client)
        .await
        .unwrap();
    let rpc = RpcClient::<u64, u64>::builder(queue.name())
        .timeout(Duration::from_secs(30))
        .build(&client)
        .await
        .unwrap();
    let requests: Vec<u64> = (0..5).collect();
    let calls = requests
        .iter()
        .map(|n| tokio::time::timeout(Duration::from_millis(300), rpc.call(n)));
    for outcome in futures::future::join_all(calls).await {
        assert!(outcome.is_err(), "nobody serves the queue: {outcome:?}");
    }
    assert_eq!(rpc.pending(), 0, "cancelled calls leave no pending entry");
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn a_nacked_request_does_not_fail_the_other_calls() {
    // A nacked request is sent again on a fresh channel, as every publish
    // is; three nacks in a row fail its call.
    let client = common::options()
        .timings(nacked_at_most(3))
        .connect(common::amqp_addrs())
        .await
        .unwrap();
    let queue = common::unique_name("rpc.full");
    // A request queue that holds one request and nacks the next ones.
    let server = RpcServer::<u64, u64>::builder(queue.as_str())
        .queue(|q| {
            q.classic().max_length(1).argument(
                "x-overflow",
                rabbitkit_core::AMQPValue::LongString("reject-publish".into()),
            )
        })
        .declare(&client)
        .await
        .unwrap();
    let rpc = RpcClient::<u64, u64>::builder(queue.as_str())
        .timeout(Duration::from_secs(30))
        .build(&client)
        .await
        .unwrap();
    let first = tokio::spawn({
        let rpc = rpc.clone();
        async move { rpc.call(&10).await }
    });
    let q = server.queue().clone();
    eventually("the first request is queued", async || {
        q.info().await.unwrap().messages == 1
    })
    .await;
    match rpc.call(&20).await {
        Err(e @ RpcError::Broker { .. }) => {
            assert!(e.to_string().contains("nack"), "{e}");
            assert!(e.is_retryable(), "a nack may go away: {e:?}");
            assert!(std::error::Error::source(&e).is_some(), "the cause is kept");
        }
        other => panic!("expected the second request to be nacked, got {other:?}"),
    }
    let serving = tokio::spawn(async move {
        server
            .serve(|n: u64| async move { Ok(fib(n)) })
            .await
            .unwrap();
    });
    assert_eq!(
        first.await.unwrap(),
        Ok(55),
        "the call in flight still gets its reply"
    );
    assert_eq!(rpc.call(&12).await, Ok(144), "and later calls work");
    serving.abort();
    client.delete_queue(&queue).await.unwrap();
}

/// Timings under which a publish fails after `n` nacks in a row.
fn nacked_at_most(n: u32) -> rabbitkit::Timings {
    let mut timings = rabbitkit::Timings::default();
    timings.nack_backoff.max_attempts = Some(n);
    timings
}

#[tokio::test]
async fn concurrent_calls_are_in_flight_at_once() {
    const N: usize = 8;
    let client = common::client().await;
    let queue = common::unique_name("rpc.together");
    let server = RpcServer::<u64, u64>::builder(queue.as_str())
        .concurrency(N)
        .declare(&client)
        .await
        .unwrap();
    // The server answers only once it holds all N requests at once: calls
    // that went one after another would all time out.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(N));
    let serving = tokio::spawn(async move {
        server
            .serve(move |n: u64| {
                let barrier = barrier.clone();
                async move {
                    barrier.wait().await;
                    Ok(n * 2)
                }
            })
            .await
            .unwrap();
    });
    let rpc = RpcClient::<u64, u64>::builder(queue.as_str())
        .timeout(Duration::from_secs(20))
        .build(&client)
        .await
        .unwrap();
    let calls = (0..N as u64).map(|n| {
        let rpc = rpc.clone();
        async move { (n, rpc.call(&n).await) }
    });
    for (n, answer) in futures::future::join_all(calls).await {
        assert_eq!(answer, Ok(n * 2));
    }
    serving.abort();
    client.delete_queue(&queue).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_timeout_covers_reopening_the_reply_channel() {
    common::ensure_cluster();
    let direct = common::client().await;
    let addr: rabbitkit::Endpoint = common::amqp_addrs()[0].parse().unwrap();
    let proxy = rabbitkit_test::FaultProxy::start(
        format!("{}:{}", addr.host(), addr.port()).parse().unwrap(),
    )
    .await
    .unwrap();
    let client = common::options()
        .timings(nacked_at_most(1))
        .connect(proxy.amqp_url())
        .await
        .unwrap();
    // A full request queue: the first request is nacked, which takes the
    // reply channel out of service; the next call must open a new one.
    let queue = Queue::named(common::unique_name("rpc.reopen"))
        .classic()
        .max_length(1)
        .argument(
            "x-overflow",
            rabbitkit_core::AMQPValue::LongString("reject-publish".into()),
        )
        .declare(&direct)
        .await
        .unwrap();
    queue.send(&1u64).await.unwrap();
    let timeout = Duration::from_millis(500);
    let rpc = RpcClient::<u64, u64>::builder(queue.name())
        .timeout(timeout)
        .build(&client)
        .await
        .unwrap();
    assert!(matches!(rpc.call(&2).await, Err(RpcError::Broker { .. })));
    // The broker stops answering (the socket stays open): opening the new
    // reply channel waits, but not past the call's timeout.
    proxy.stall();
    let outcome = tokio::time::timeout(Duration::from_secs(60), rpc.call(&3)).await;
    proxy.resume();
    assert_eq!(
        outcome.expect("the call hung"),
        Err(RpcError::Timeout(timeout))
    );
    queue.delete().await.unwrap();
}

/// A client whose connection goes through a proxy that can cut it.
async fn client_behind_proxy() -> (rabbitkit::Client, rabbitkit_test::FaultProxy) {
    common::ensure_cluster();
    let addr: rabbitkit::Endpoint = common::amqp_addrs()[0].parse().unwrap();
    let proxy = rabbitkit_test::FaultProxy::start(
        format!("{}:{}", addr.host(), addr.port()).parse().unwrap(),
    )
    .await
    .unwrap();
    let client = common::options().connect(proxy.amqp_url()).await.unwrap();
    (client, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_are_matched_after_the_reply_channel_is_replaced() {
    let server_client = common::client().await;
    let queue = common::unique_name("rpc.replaced");
    let server = start_server(&server_client, &queue).await;
    let (client, proxy) = client_behind_proxy().await;
    for direct in [true, false] {
        let mut b = RpcClient::<u64, u64>::builder(queue.as_str()).timeout(Duration::from_secs(20));
        if !direct {
            b = b.exclusive_reply_queue();
        }
        let rpc = b.build(&client).await.unwrap();
        assert_eq!(rpc.call(&10).await, Ok(55));
        let before = rpc.reply_to().expect("a reply queue");
        let mut events = client.events();
        proxy.cut();
        common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
            matches!(e, rabbitkit::Event::Recovered { .. })
        })
        .await;
        // The reply channel is opened again, on the new connection, and
        // every reply finds its call.
        let calls = (0..16u64).map(|n| {
            let rpc = rpc.clone();
            async move { (n, rpc.call(&n).await) }
        });
        for (n, answer) in futures::future::join_all(calls).await {
            assert_eq!(
                answer,
                Ok(fib(n)),
                "fib({n}) after the cut, direct={direct}"
            );
        }
        let after = rpc.reply_to().expect("a reply queue");
        if !direct {
            assert_ne!(
                before, after,
                "a new exclusive reply queue on the new connection"
            );
        }
        assert_eq!(rpc.pending(), 0);
        assert_eq!(rpc.unknown_replies(), 0, "no reply went astray");
        // A request nobody serves still fails at once on the new channel.
        let nobody = RpcClient::<u64, u64>::builder(common::unique_name("rpc.nobody"))
            .timeout(Duration::from_secs(30));
        let nobody = if direct {
            nobody
        } else {
            nobody.exclusive_reply_queue()
        };
        let nobody = nobody.build(&client).await.unwrap();
        assert!(matches!(
            nobody.call(&1).await,
            Err(RpcError::Unroutable { .. })
        ));
    }
    client.close().await;
    server.abort();
    server_client.delete_queue(&queue).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_waiting_when_the_connection_is_cut_fail_as_retryable() {
    const CALLS: usize = 4;
    let server_client = common::client().await;
    let queue = common::unique_name("rpc.cut");
    let server = RpcServer::<u64, u64>::builder(queue.as_str())
        .concurrency(CALLS)
        .declare(&server_client)
        .await
        .unwrap();
    // The server takes every request and answers none until released.
    let started = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let serving = tokio::spawn({
        let (started, release) = (started.clone(), release.clone());
        async move {
            server
                .serve(move |n: u64| {
                    let (started, release) = (started.clone(), release.clone());
                    async move {
                        started.add_permits(1);
                        release.notified().await;
                        Ok(n)
                    }
                })
                .await
        }
    });
    let (client, proxy) = client_behind_proxy().await;
    for direct in [true, false] {
        let mut b = RpcClient::<u64, u64>::builder(queue.as_str())
            // Far longer than the hang guard below: the calls must fail
            // because the connection went, not because they timed out.
            .timeout(Duration::from_secs(120));
        if !direct {
            b = b.exclusive_reply_queue();
        }
        let rpc = b.build(&client).await.unwrap();
        let calls: Vec<_> = (0..CALLS as u64)
            .map(|n| {
                let rpc = rpc.clone();
                tokio::spawn(async move { rpc.call(&n).await })
            })
            .collect();
        // Every request reached the server: the calls wait for replies.
        let all = tokio::time::timeout(Duration::from_secs(20), started.acquire_many(CALLS as u32))
            .await
            .expect("the requests reached the server")
            .unwrap();
        all.forget();
        assert_eq!(rpc.pending(), CALLS);
        proxy.cut();
        for call in calls {
            let outcome = tokio::time::timeout(Duration::from_secs(60), call)
                .await
                .expect("a call hung after the cut")
                .unwrap();
            match outcome {
                Err(e @ RpcError::ConnectionLost) => {
                    assert!(
                        e.is_retryable() && !e.is_closed() && !e.is_timeout(),
                        "{e:?}"
                    );
                }
                other => panic!("expected ConnectionLost (direct={direct}), got {other:?}"),
            }
        }
        assert_eq!(rpc.pending(), 0, "nothing left pending");
        // The server's answers go to a reply channel that is gone.
        release.notify_waiters();
    }
    client.close().await;
    serving.abort();
    server_client.delete_queue(&queue).await.unwrap();
}

#[tokio::test]
async fn a_handler_gets_the_typed_request_with_its_properties() {
    use rabbitkit::{BasicProperties, FieldTable, OutgoingMessage, Request};
    type Seen = (u64, Option<String>, Option<String>, bool, String);
    let client = common::client().await;
    let queue = common::unique_name("rpc.request");
    let server = RpcServer::<u64, u64>::builder(queue.as_str())
        .declare(&client)
        .await
        .unwrap();
    let seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>> = Default::default();
    let serving = tokio::spawn({
        let seen = seen.clone();
        async move {
            server
                .serve_requests(move |request: Request<u64>| {
                    let tenant = request.headers().get("x-tenant").map(|v| v.to_string());
                    seen.lock().unwrap().push((
                        request.body,
                        request.correlation_id().map(str::to_owned),
                        tenant,
                        request.redelivered(),
                        request.reply_to().to_owned(),
                    ));
                    async move { Ok(request.into_body() + 1) }
                })
                .await
                .unwrap()
        }
    });
    // A request written by hand, as another client would send it.
    let replies = Queue::temporary().declare(&client).await.unwrap();
    let mut reply_sub = replies.subscribe::<u64>().await.unwrap();
    let mut headers = FieldTable::default();
    headers.insert(
        "x-tenant".into(),
        rabbitkit::AMQPValue::LongString("acme".into()),
    );
    let request = OutgoingMessage::new("", queue.as_str(), b"41".to_vec()).properties(
        BasicProperties::default()
            .with_reply_to(replies.name().into())
            .with_correlation_id("corr-41".into())
            .with_headers(headers),
    );
    client.publish(request).await.unwrap();
    let reply = tokio::time::timeout(
        Duration::from_secs(20),
        futures::StreamExt::next(&mut reply_sub),
    )
    .await
    .expect("a reply")
    .unwrap()
    .unwrap();
    assert_eq!(reply.body, 42);
    assert_eq!(
        reply
            .properties()
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str()),
        Some("corr-41")
    );
    reply.ack().await.unwrap();
    // And through an RpcClient: its correlation id and direct reply-to address.
    let rpc = RpcClient::<u64, u64>::builder(queue.as_str())
        .build(&client)
        .await
        .unwrap();
    assert_eq!(rpc.call(&7).await, Ok(8));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let (body, correlation_id, tenant, redelivered, reply_to) = &seen[0];
    assert_eq!(*body, 41);
    assert_eq!(correlation_id.as_deref(), Some("corr-41"));
    assert_eq!(tenant.as_deref(), Some("acme"));
    assert!(!redelivered);
    assert_eq!(reply_to, replies.name());
    let (body, correlation_id, _, redelivered, reply_to) = &seen[1];
    assert_eq!(*body, 7);
    assert_eq!(
        correlation_id.as_ref().map(String::len),
        Some(32),
        "a UUID: {correlation_id:?}"
    );
    assert!(!redelivered);
    assert!(
        reply_to.starts_with(rabbitkit::DIRECT_REPLY_TO),
        "the broker's direct reply-to address: {reply_to}"
    );
    serving.abort();
    drop(reply_sub);
    client.delete_queue(&queue).await.unwrap();
}

/// The server's connection dies while it answers; its caller, on a
/// healthy connection, still waits. The request comes back after the
/// server's recovery and is answered: the caller gets its reply. Before,
/// a redelivered request whose reply had been lost once was dropped, and
/// the caller timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_lost_with_the_servers_connection_is_sent_when_the_request_comes_back() {
    let caller = common::client().await;
    let queue = common::unique_name("rpc.lost.once");
    let (server_client, proxy) = client_behind_proxy().await;
    let server = RpcServer::<u64, u64, String>::builder(queue.as_str())
        .queue(|q| q.quorum())
        .declare(&server_client)
        .await
        .unwrap();
    let started = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let serving = tokio::spawn({
        let (started, release, calls) = (started.clone(), release.clone(), calls.clone());
        async move {
            server
                .serve(move |n: u64| {
                    let (started, release, calls) =
                        (started.clone(), release.clone(), calls.clone());
                    async move {
                        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                            // The first time: held until its connection is gone.
                            started.notify_one();
                            release.acquire().await.unwrap().forget();
                        }
                        Ok(n * 2)
                    }
                })
                .await
                .unwrap()
        }
    });
    let rpc = RpcClient::<u64, u64>::builder(queue.as_str())
        .timeout(Duration::from_secs(20))
        .build(&caller)
        .await
        .unwrap();
    let call = tokio::spawn(async move { rpc.call(&21).await });
    started.notified().await;
    // The server's connection goes, and stays away while the handler ends:
    // its reply is lost with the connection.
    proxy.refuse(true);
    proxy.cut();
    release.add_permits(1);
    eventually("the server sees its connection lost", async || {
        matches!(server_client.health(), rabbitkit::Health::Recovering)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // the handler's reply fails meanwhile
    proxy.refuse(false);
    let answer = call.await.unwrap();
    assert_eq!(answer.unwrap(), 42, "the caller gets its answer");
    assert!(
        calls.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "answered again"
    );
    serving.abort();
    caller.delete_queue(&queue).await.unwrap();
}
