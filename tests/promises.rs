//! The service runtime's promises under ordinary trouble: a slow handler, a
//! panicking one, one that always fails, a retry through a router, a copy
//! that cannot be published, deliveries left over from a lost connection.
//! Each test breaks one promise on purpose and checks it still holds.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rabbitkit::message::{ATTEMPTS_HEADER, PARKED_ERROR_HEADER};
use rabbitkit::{
    AMQPValue, Event, Exchange, HandleOptions, OnError, Queue, RetryPolicy, Router, RpcClient,
    RpcServer, WorkQueue,
};
use rabbitkit_core::Client;
use rabbitkit_test::FaultProxy;
use tokio::sync::Notify;

/// A fault-injecting proxy in front of the first node (or broker).
async fn proxy() -> FaultProxy {
    common::ensure_cluster();
    let e: rabbitkit::Endpoint = common::amqp_addrs()[0].parse().unwrap();
    let upstream: SocketAddr = format!("{}:{}", e.host(), e.port()).parse().unwrap();
    FaultProxy::start(upstream).await.unwrap()
}

/// Waits (bounded: a hang guard, not a speed check) until `done()` holds;
/// panics with `what()` otherwise.
async fn wait_until(within: Duration, done: impl Fn() -> bool, what: impl Fn() -> String) {
    let reached = tokio::time::timeout(within, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "{}", what());
}

fn text(value: Option<&AMQPValue>) -> String {
    match value {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => format!("{other:?}"),
    }
}

fn number(value: Option<&AMQPValue>) -> i64 {
    match value {
        Some(AMQPValue::LongLongInt(n)) => *n,
        other => panic!("not a number: {other:?}"),
    }
}

/// The one message parked from `queue` (within 30 s), acknowledged.
async fn parked_from<T: serde::de::DeserializeOwned>(
    client: &Client,
    queue: &str,
) -> rabbitkit::Received<T> {
    let parked = Queue::durable(format!("{queue}.parked"))
        .declare(client)
        .await
        .unwrap();
    let mut sub = parked.subscribe::<T>().await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("a message parked within 30 s")
        .unwrap()
        .unwrap();
    message.ack().await.unwrap();
    message
}

/// Runs `tasks.work` with a handler that always fails with `error`,
/// counting its runs in `calls`.
fn spawn_failing_worker(
    tasks: &WorkQueue<u32>,
    calls: &Arc<AtomicU32>,
    error: &'static str,
) -> tokio::task::JoinHandle<Result<rabbitkit::HandleReport, rabbitkit::SubscribeError>> {
    let (tasks, calls) = (tasks.clone(), calls.clone());
    tokio::spawn(async move {
        tasks
            .work(move |_: u32| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { Err(error.into()) }
            })
            .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_task_never_holds_up_the_acks_of_the_tasks_after_it() {
    // Before: acks were only sent as one `multiple` ack up to the first
    // unsettled delivery, so the broker saw 20 unacked, stopped delivering,
    // and 19 of the 300 quick tasks were done while the slow one ran.
    let client = common::client().await;
    let tasks = WorkQueue::<u32>::builder(common::unique_name("promise.slow"))
        .prefetch(20)
        .concurrency(8)
        .declare(&client)
        .await
        .unwrap();
    tasks.submit(&0).await.unwrap(); // the slow one, first in line
    for n in 1..=300 {
        tasks.submit(&n).await.unwrap();
    }
    let done = Arc::new(AtomicU32::new(0));
    let release = Arc::new(Notify::new());
    let worker = tokio::spawn({
        let (tasks, done, release) = (tasks.clone(), done.clone(), release.clone());
        async move {
            tasks
                .work(move |n: u32| {
                    let (done, release) = (done.clone(), release.clone());
                    async move {
                        if n == 0 {
                            release.notified().await;
                        }
                        done.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }
                })
                .await
        }
    });
    wait_until(
        Duration::from_secs(60),
        || done.load(Ordering::SeqCst) == 300,
        || {
            format!(
                "{} of the 300 quick tasks done while the slow one runs: its ack holds the others back",
                done.load(Ordering::SeqCst)
            )
        },
    )
    .await;
    // The broker holds only the slow one: every other ack reached it.
    let info = tasks.info().await.unwrap();
    assert_eq!(info.messages, 0, "nothing left to deliver");
    release.notify_one();
    wait_until(
        Duration::from_secs(30),
        || done.load(Ordering::SeqCst) == 301,
        || "the slow task did not finish".into(),
    )
    .await;
    worker.abort();
    client.delete_queue(tasks.queue().name()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_a_failed_task_and_the_loop_goes_on() {
    // Before: the panic unwound out of the handler loop: `work` itself
    // panicked after the first handler call and no good task was handled.
    let client = common::client().await;
    let name = common::unique_name("promise.panic");
    let tasks = WorkQueue::<String>::builder(name.as_str())
        .declare(&client)
        .await
        .unwrap();
    for task in ["boom", "ok-1", "sync-boom", "ok-2", "ok-3"] {
        tasks.submit(&task.to_owned()).await.unwrap();
    }
    let handled: Arc<Mutex<Vec<String>>> = Arc::default();
    let worker = tokio::spawn({
        let (tasks, handled) = (tasks.clone(), handled.clone());
        async move {
            tasks
                .work(move |task: String| {
                    // A panic before the future exists...
                    if task == "sync-boom" {
                        panic!("no future for {task}");
                    }
                    let handled = handled.clone();
                    async move {
                        tokio::task::yield_now().await;
                        // ... and one while it runs.
                        if task == "boom" {
                            panic!("the handler of {task} panicked");
                        }
                        handled.lock().unwrap().push(task);
                        Ok(())
                    }
                })
                .await
        }
    });
    // Each panicking task runs twice (one more try), then is parked with
    // the panic's message.
    let mut parked = HashMap::new();
    for _ in 0..2 {
        let message = parked_from::<String>(&client, &name).await;
        let error = text(message.header(PARKED_ERROR_HEADER));
        assert_eq!(number(message.header(ATTEMPTS_HEADER)), 2, "{error}");
        parked.insert(message.body.clone(), error);
    }
    assert_eq!(
        parked.get("boom").map(String::as_str),
        Some("handler panicked: the handler of boom panicked")
    );
    assert_eq!(
        parked.get("sync-boom").map(String::as_str),
        Some("handler panicked: no future for sync-boom")
    );
    wait_until(
        Duration::from_secs(30),
        || handled.lock().unwrap().len() == 3,
        || format!("good tasks handled: {:?}", handled.lock().unwrap()),
    )
    .await;
    assert!(!worker.is_finished(), "the worker is still running");
    // And it still takes new work.
    tasks.submit(&"ok-4".to_owned()).await.unwrap();
    wait_until(
        Duration::from_secs(30),
        || handled.lock().unwrap().len() == 4,
        || format!("good tasks handled: {:?}", handled.lock().unwrap()),
    )
    .await;
    worker.abort();
    client.delete_queue(&name).await.unwrap();
    client
        .delete_queue(&format!("{name}.parked"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_rpc_handler_answers_with_an_error_and_the_server_goes_on() {
    let client = common::client().await;
    let name = common::unique_name("promise.rpc.panic");
    let server = RpcServer::<u32, u32>::builder(name.as_str())
        .declare(&client)
        .await
        .unwrap();
    let serving = tokio::spawn(async move {
        server
            .serve(|n: u32| async move {
                if n == 13 {
                    panic!("unlucky {n}");
                }
                Ok::<_, String>(n * 2)
            })
            .await
    });
    let caller = RpcClient::<u32, u32, String>::builder(name.as_str())
        .build(&client)
        .await
        .unwrap();
    match caller.call(&13).await {
        Err(rabbitkit::RpcError::Server(error)) => {
            assert_eq!(error, "handler panicked: unlucky 13")
        }
        other => panic!("expected the handler's error, got {other:?}"),
    }
    assert_eq!(caller.call(&21).await.unwrap(), 42, "the server goes on");
    serving.abort();
    client.delete_queue(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_keeps_failing_is_parked_not_dropped() {
    // Before: the default policy rejected it after its retry, and on a queue
    // without a dead-letter exchange (the default) it was gone.
    let client = common::client().await;
    let name = common::unique_name("promise.park");
    let tasks = WorkQueue::<u32>::builder(name.as_str())
        .declare(&client)
        .await
        .unwrap();
    tasks.submit(&7).await.unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let worker = spawn_failing_worker(&tasks, &calls, "the database refuses it");
    let parked = parked_from::<u32>(&client, &name).await;
    assert_eq!(parked.body, 7);
    assert_eq!(number(parked.header(ATTEMPTS_HEADER)), 2);
    assert_eq!(
        text(parked.header(PARKED_ERROR_HEADER)),
        "the database refuses it"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one try, one retry");
    worker.abort();
    client.delete_queue(&name).await.unwrap();
    client
        .delete_queue(&format!("{name}.parked"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_failed_task_is_said_explicitly() {
    let client = common::client().await;
    let name = common::unique_name("promise.drop");
    let queue = Queue::named(name.as_str()).declare(&client).await.unwrap();
    queue.send(&1u32).await.unwrap();
    let sub = queue.subscribe::<u32>().await.unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let report = tokio::spawn(sub.handle(OnError::Drop, {
        let calls = calls.clone();
        move |_: u32| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err("not wanted".into()) }
        }
    }));
    wait_until(
        Duration::from_secs(30),
        || calls.load(Ordering::SeqCst) == 1,
        || "the handler did not run".into(),
    )
    .await;
    // Rejected once: no retry, no parking queue.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while queue.info().await.unwrap().messages != 0 {
        assert!(tokio::time::Instant::now() < deadline, "still queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.close().await;
    let report = report.await.unwrap();
    assert_eq!((report.rejected, report.requeued, report.parked), (1, 0, 0));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let check = common::client().await;
    assert!(
        check.queue_info(&format!("{name}.parked")).await.is_err(),
        "no parking queue"
    );
    check.delete_queue(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_under_a_router_keeps_its_route() {
    // Before: the retried copy came back with routing key = the queue's
    // name, matched no route and was parked as "no route".
    let client = common::client().await;
    let events = Exchange::topic(common::unique_name("promise.router.x"))
        .declare(&client)
        .await
        .unwrap();
    let name = common::unique_name("promise.router");
    let orders = Queue::named(name.as_str()).declare(&client).await.unwrap();
    events
        .bind(&orders, &"order.#".parse().unwrap())
        .await
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let router = Router::new().route("order.placed", {
        let calls = calls.clone();
        move |_: u32| {
            let calls = calls.clone();
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err("db down".into())
                } else {
                    Ok(())
                }
            }
        }
    });
    let running = tokio::spawn({
        let orders = orders.clone();
        async move { router.run(&orders, HandleOptions::new()).await }
    });
    events.publish("order.placed", &1u32).await.unwrap();
    wait_until(
        Duration::from_secs(30),
        || calls.load(Ordering::SeqCst) == 2,
        || {
            format!(
                "the order's handler ran {} time(s), not twice",
                calls.load(Ordering::SeqCst)
            )
        },
    )
    .await;
    running.abort();
    client.delete_queue(&name).await.unwrap();
    client.delete_exchange(events.name()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_cannot_be_published_does_not_spin() {
    // The parking queue exists as a classic queue: declaring it as a quorum
    // queue fails every time. Before: the original was requeued at once and
    // the handler ran again in a tight loop (thousands of runs a second).
    let client = common::client().await;
    let name = common::unique_name("promise.spin");
    Queue::durable(format!("{name}.parked"))
        .classic()
        .declare(&client)
        .await
        .unwrap();
    let tasks = WorkQueue::<u32>::builder(name.as_str())
        .retry(RetryPolicy::new([]))
        .declare(&client)
        .await
        .unwrap();
    tasks.submit(&1).await.unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let worker = spawn_failing_worker(&tasks, &calls, "always");
    wait_until(
        Duration::from_secs(30),
        || calls.load(Ordering::SeqCst) >= 2,
        || "the handler did not run twice".into(),
    )
    .await;
    // A back-off doubling from 100 ms runs it a handful of times in 4 s;
    // a tight loop runs it thousands of times.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let runs = calls.load(Ordering::SeqCst);
    assert!(runs <= 12, "the handler ran {runs} times in about 4 s");
    worker.abort();
    // Nothing lost: the message is still in its queue (requeued).
    client.close().await;
    let check = common::client().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while check.queue_info(&name).await.unwrap().messages != 1 {
        assert!(tokio::time::Instant::now() < deadline, "the task was lost");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check.delete_queue(&name).await.unwrap();
    check.delete_queue(&format!("{name}.parked")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_left_over_from_a_lost_connection_are_not_handled() {
    // Before: the deliveries already buffered for a subscription whose
    // connection died were still given to the handler, then redelivered
    // by the broker and handled again.
    let proxy = proxy().await;
    let observer = common::client().await;
    let name = common::unique_name("promise.stale");
    let tasks = WorkQueue::<u32>::builder(name.as_str())
        .prefetch(10)
        .declare(&observer)
        .await
        .unwrap();
    for n in 0..10 {
        tasks.submit(&n).await.unwrap();
    }
    let client = common::options().connect(proxy.amqp_url()).await.unwrap();
    let mut client_events = client.events();
    let theirs = WorkQueue::<u32>::builder(name.as_str())
        .prefetch(10)
        .declare(&client)
        .await
        .unwrap();
    let runs: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let reached = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let worker = tokio::spawn({
        let (runs, reached, release) = (runs.clone(), reached.clone(), release.clone());
        async move {
            theirs
                .work(move |n: u32| {
                    let (runs, reached, release) = (runs.clone(), reached.clone(), release.clone());
                    async move {
                        let first = {
                            let mut runs = runs.lock().unwrap();
                            let count = runs.entry(n).or_default();
                            *count += 1;
                            *count == 1
                        };
                        if n == 0 && first {
                            reached.notify_one();
                            release.notified().await;
                        }
                        Ok(())
                    }
                })
                .await
        }
    });
    reached.notified().await;
    // All ten are delivered (one running, nine waiting in the client).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while observer.queue_info(&name).await.unwrap().messages != 0 {
        assert!(tokio::time::Instant::now() < deadline, "not all delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.cut();
    common::wait_for_event(&mut client_events, Duration::from_secs(30), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    release.notify_one();
    wait_until(
        Duration::from_secs(30),
        || (0..10).all(|n| runs.lock().unwrap().contains_key(&n)) && runs.lock().unwrap()[&0] == 2,
        || format!("runs: {:?}", runs.lock().unwrap()),
    )
    .await;
    // Give any stale delivery the time to be (wrongly) run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while observer.queue_info(&name).await.unwrap().messages != 0 {
        assert!(tokio::time::Instant::now() < deadline, "tasks left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let runs = runs.lock().unwrap().clone();
    for n in 1..10 {
        assert_eq!(runs[&n], 1, "task {n} ran more than once: {runs:?}");
    }
    worker.abort();
    observer.delete_queue(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_nobody_polls_for_a_while_does_not_tear_the_connection_down() {
    // Before: the "no confirm within confirm_deadline" check counted a
    // publish from its first poll until it was polled again, so a future
    // left in a slowly drained FuturesUnordered closed a healthy
    // connection: Unresponsive, Disconnected, Recovered, and every unacked
    // delivery redelivered.
    let mut timings = rabbitkit::Timings::DEFAULT;
    timings.confirm_deadline = Duration::from_secs(2);
    common::ensure_cluster();
    let client = common::options()
        .timings(timings)
        .connect(common::amqp_addrs())
        .await
        .unwrap();
    let mut events = client.events();
    let name = common::unique_name("promise.unpolled");
    let queue = Queue::named(name.as_str()).declare(&client).await.unwrap();
    let mut inflight = futures::stream::FuturesUnordered::new();
    inflight.push(queue.send(&1u32));
    // Polled once (sent), then left alone three times the deadline while
    // its confirm comes in.
    assert!(futures::poll!(inflight.next()).is_pending());
    tokio::time::sleep(Duration::from_secs(6)).await;
    let confirmed = inflight.next().await.unwrap().unwrap();
    assert_eq!(confirmed.attempts, 1, "sent once, never re-sent");
    // The connection stayed up: nothing but its first `Connected`.
    let mut seen = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(500), events.next()).await
    {
        seen.push(event.to_string());
    }
    assert!(
        seen.len() <= 1 && seen.iter().all(|e| e.starts_with("connected")),
        "the healthy connection was disturbed: {seen:?}"
    );
    assert_eq!(queue.info().await.unwrap().messages, 1);
    client.delete_queue(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_goes_on_after_the_broker_takes_back_a_task_that_ran_too_long() {
    // RabbitMQ 4.3 cancels a quorum queue's consumer whose delivery stays
    // unacknowledged past its consumer timeout (basic.cancel) and returns
    // its messages. Before: the tutorial worker exited on the late ack and
    // the quick tasks behind were never done. (Brokers without per-consumer
    // timeouts ignore the argument: the slow task then just finishes.)
    let client = common::client().await;
    let name = common::unique_name("promise.timeout");
    let tasks = WorkQueue::<u32>::builder(name.as_str())
        .prefetch(10)
        .consumer_timeout(Duration::from_secs(1))
        .declare(&client)
        .await
        .unwrap();
    tasks.submit(&0).await.unwrap(); // runs past the timeout, once
    for n in 1..=5 {
        tasks.submit(&n).await.unwrap();
    }
    let runs: Arc<Mutex<Vec<u32>>> = Arc::default();
    let worker = tokio::spawn({
        let (tasks, runs) = (tasks.clone(), runs.clone());
        async move {
            tasks
                .work(move |n: u32| {
                    let runs = runs.clone();
                    async move {
                        let first = {
                            let mut runs = runs.lock().unwrap();
                            runs.push(n);
                            runs.iter().filter(|&&m| m == n).count() == 1
                        };
                        if n == 0 && first {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                        }
                        Ok(())
                    }
                })
                .await
        }
    });
    wait_until(
        Duration::from_secs(90),
        || {
            let runs = runs.lock().unwrap();
            (0..=5).all(|n| runs.contains(&n))
        },
        || format!("tasks run: {:?}", runs.lock().unwrap()),
    )
    .await;
    // Every task ends acknowledged; the worker is still there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let info = tasks.info().await.unwrap();
        if info.messages == 0 && info.consumers == 1 && !worker.is_finished() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue {info:?}, worker finished: {}, runs {:?}",
            worker.is_finished(),
            runs.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("runs: {:?}", runs.lock().unwrap());
    worker.abort();
    client.delete_queue(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publish_over_the_size_limit_does_not_fail_the_others() {
    // Before: the oversized body reached the broker, which closed the
    // pooled channel; every publish waiting for its confirm there failed
    // with the same `TooLarge` ("not retryable"), though some were stored.
    common::ensure_cluster();
    let max = rabbitkit_test::MAX_MESSAGE_SIZE;
    let client = common::options()
        .max_message_size(max)
        .connect(common::amqp_addrs())
        .await
        .unwrap();
    let name = common::unique_name("promise.too_large");
    let queue = Queue::named(name.as_str()).declare(&client).await.unwrap();
    let mut all = Vec::new();
    for i in 0..200 {
        let body = if i == 100 {
            vec![0u8; max + 1]
        } else {
            vec![1u8; 100]
        };
        all.push(client.publish(rabbitkit::OutgoingMessage::new("", &name, body)));
    }
    let results = futures::future::join_all(all).await;
    for (i, result) in results.iter().enumerate() {
        if i == 100 {
            match result {
                Err(rabbitkit::PublishError::TooLarge { size, max: limit }) => {
                    assert_eq!((*size, *limit), (max as u64 + 1, max as u64));
                }
                other => panic!("the big one: {other:?}"),
            }
        } else {
            assert!(result.is_ok(), "publish {i}: {result:?}");
        }
    }
    assert_eq!(
        queue.info().await.unwrap().messages,
        199,
        "nothing of the big one sent"
    );
    assert_eq!(client.stats().disconnects, 0);
    client.delete_queue(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_stream_message_is_parked_not_appended_to_the_log() {
    // Before: the default policy published a retry copy to the stream: a
    // second copy in the shared log, read by every reader.
    let client = common::client().await;
    let name = common::unique_name("promise.stream");
    let stream = Queue::stream(name.as_str()).declare(&client).await.unwrap();
    for n in [1u32, 2, 3] {
        stream.send(&n).await.unwrap();
    }
    let sub = stream
        .subscribe_stream::<u32>(rabbitkit::StreamOffset::First)
        .await
        .unwrap();
    let handling = tokio::spawn(sub.handle(OnError::default(), |n: u32| async move {
        if n == 2 {
            Err("two is bad".into())
        } else {
            Ok(())
        }
    }));
    let parked = parked_from::<u32>(&client, &name).await;
    assert_eq!(parked.body, 2);
    assert_eq!(number(parked.header(ATTEMPTS_HEADER)), 1, "parked at once");
    assert_eq!(text(parked.header(PARKED_ERROR_HEADER)), "two is bad");
    // The log holds what was published, once.
    stream.send(&99).await.unwrap();
    let mut reader = stream
        .subscribe_stream::<u32>(rabbitkit::StreamOffset::First)
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.last() != Some(&99) {
        let message = tokio::time::timeout(Duration::from_secs(30), reader.next())
            .await
            .expect("the stream within 30 s")
            .unwrap()
            .unwrap();
        seen.push(message.body);
        message.ack().await.unwrap();
    }
    assert_eq!(seen, [1, 2, 3, 99]);
    handling.abort();
    drop(reader);
    client.delete_queue(&name).await.unwrap();
    client
        .delete_queue(&format!("{name}.parked"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_messages_given_back_do_not_move_the_resume_offset() {
    // Before: giving back unprocessed stream messages counted them as
    // settled, so `last_acked_offset` (what an application persists to
    // resume from) skipped them.
    let client = common::client().await;
    let name = common::unique_name("promise.stream.back");
    let stream = Queue::stream(name.as_str()).declare(&client).await.unwrap();
    for n in 0..5u32 {
        stream.send(&n).await.unwrap();
    }
    let mut sub = stream
        .subscribe_stream::<u32>(rabbitkit::StreamOffset::First)
        .await
        .unwrap();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("a message within 30 s")
            .unwrap()
            .unwrap()
    };
    let first = next().await;
    let offset = first.stream_offset().unwrap();
    for _ in 1..5 {
        next().await.give_back();
    }
    first.ack().await.unwrap();
    assert_eq!(
        sub.last_acked_offset(),
        Some(offset),
        "only the first was processed"
    );
    drop(sub);
    client.delete_queue(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reader_from_next_misses_nothing_published_while_it_was_away() {
    // Before: a reader that started at `next` and had received nothing
    // re-subscribed at the *new* next after a failover, skipping what was
    // published during the outage.
    let proxy = proxy().await;
    let observer = common::client().await;
    let name = common::unique_name("promise.stream.next");
    let stream = Queue::stream(name.as_str())
        .declare(&observer)
        .await
        .unwrap();
    stream.send(&0u32).await.unwrap(); // before the reader: not for it
    let client = common::options().connect(proxy.amqp_url()).await.unwrap();
    let mut events = client.events();
    let theirs = Queue::stream(name.as_str()).declare(&client).await.unwrap();
    let mut sub = theirs
        .subscribe_stream::<u32>(rabbitkit::StreamOffset::Next)
        .await
        .unwrap();
    // The timestamp a re-subscription uses has whole seconds.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    proxy.refuse(true);
    proxy.cut();
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    for n in 1..=3u32 {
        stream.send(&n).await.unwrap();
    }
    proxy.refuse(false);
    // A few messages from just before the start may come again (the broker
    // resolves the resume time to a chunk); none published since is missed.
    let mut seen = Vec::new();
    while !(1..=3).all(|n| seen.contains(&n)) {
        let message = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {seen:?} within 30 s"))
            .unwrap()
            .unwrap();
        seen.push(message.body);
        message.ack().await.unwrap();
    }
    assert!(seen.ends_with(&[1, 2, 3]), "{seen:?}");
    drop(sub);
    observer.delete_queue(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_can_see_what_they_handle() {
    // Before: handlers got only the decoded body (no message id to
    // deduplicate on, no attempt, no headers), and no publish option set
    // the `type` property that `Router::route_type` matches.
    let client = common::client().await;
    let name = common::unique_name("promise.incoming");
    let tasks = WorkQueue::<String>::builder(name.as_str())
        .declare(&client)
        .await
        .unwrap();
    tasks
        .submit_with(
            &"invoice".to_owned(),
            rabbitkit::PublishOptions::new()
                .message_id("order-17")
                .header("tenant", "acme"),
        )
        .await
        .unwrap();
    // (message id, attempt, routing key, tenant header) per run.
    type Seen = (Option<String>, u64, String, String);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let worker = tokio::spawn({
        let (tasks, seen) = (tasks.clone(), seen.clone());
        async move {
            tasks
                .work_incoming(None, move |task: rabbitkit::Incoming<String>| {
                    let seen = seen.clone();
                    async move {
                        let attempt = task.attempt();
                        seen.lock().unwrap().push((
                            task.message_id().map(str::to_owned),
                            attempt,
                            task.routing_key().to_owned(),
                            text(task.header("tenant")),
                        ));
                        if attempt == 1 {
                            Err("first try fails".into())
                        } else {
                            Ok(())
                        }
                    }
                })
                .await
        }
    });
    wait_until(
        Duration::from_secs(30),
        || seen.lock().unwrap().len() == 2,
        || format!("{:?}", seen.lock().unwrap()),
    )
    .await;
    let id = Some("order-17".to_owned());
    let tenant = "acme".to_owned();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (id.clone(), 1, name.clone(), tenant.clone()),
            (id, 2, name.clone(), tenant)
        ],
        "the id and headers stay, the attempt counts, the key is the original"
    );
    worker.abort();

    // The `type` a publish sets is what `route_type` matches.
    let events = Exchange::topic(common::unique_name("promise.incoming.x"))
        .declare(&client)
        .await
        .unwrap();
    let orders = Queue::named(common::unique_name("promise.incoming.q"))
        .declare(&client)
        .await
        .unwrap();
    events.bind(&orders, &"#".parse().unwrap()).await.unwrap();
    let routed: Arc<Mutex<Vec<String>>> = Arc::default();
    let router = Router::new()
        .route_type("refund", {
            let routed = routed.clone();
            move |n: u32| {
                let routed = routed.clone();
                async move {
                    routed.lock().unwrap().push(format!("refund {n}"));
                    Ok(())
                }
            }
        })
        .route_incoming("order.*", {
            let routed = routed.clone();
            move |o: rabbitkit::Incoming<u32>| {
                let routed = routed.clone();
                async move {
                    routed
                        .lock()
                        .unwrap()
                        .push(format!("{} {}", o.routing_key(), o.body));
                    Ok(())
                }
            }
        });
    let running = tokio::spawn({
        let orders = orders.clone();
        async move { router.run(&orders, HandleOptions::new()).await }
    });
    events
        .publish_with(
            "payments.in",
            &5u32,
            rabbitkit::PublishOptions::new().message_type("refund"),
        )
        .await
        .unwrap();
    events.publish("order.placed", &6u32).await.unwrap();
    wait_until(
        Duration::from_secs(30),
        || routed.lock().unwrap().len() == 2,
        || format!("{:?}", routed.lock().unwrap()),
    )
    .await;
    assert_eq!(*routed.lock().unwrap(), ["refund 5", "order.placed 6"]);
    running.abort();
    client.delete_queue(&name).await.unwrap();
    client.delete_queue(orders.name()).await.unwrap();
    client.delete_exchange(events.name()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_client_says_closed_once() {
    // Before: `close()` emitted `Closed` twice.
    let client = common::client().await;
    let mut events = client.events();
    client.close().await;
    let mut closed = 0;
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(500), events.next()).await
    {
        if matches!(event, Event::Closed { .. }) {
            closed += 1;
        }
    }
    assert_eq!(closed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_channel_refuses_a_name_too_long_instead_of_panicking() {
    common::ensure_cluster();
    let connection = lapin::Connection::connect(
        &common::amqp_addrs()[0],
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirms = rabbitkit_core::ConfirmChannel::new(channel);
    let long = "x".repeat(300);
    for (exchange, key) in [(long.as_str(), "k"), ("", long.as_str())] {
        let sent = confirms
            .publish(
                exchange,
                key,
                false,
                Arc::from(&b"body"[..]),
                rabbitkit_core::BasicProperties::default(),
            )
            .await;
        assert!(sent.is_err(), "a name over 255 bytes was sent");
    }
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_delayed_publish_is_bounded_by_the_publish_timeout() {
    // Before: the first delayed publish declared the delay queues one by
    // one, each bounded by the operation timeout only, so on a slow link it
    // took many times the publish timeout.
    let proxy = proxy().await;
    let client = common::options()
        .publish_timeout(Duration::from_secs(2))
        .connect(proxy.amqp_url())
        .await
        .unwrap();
    let name = common::unique_name("promise.delay.bound");
    let queue = Queue::named(name.as_str()).declare(&client).await.unwrap();
    proxy.delay(Duration::from_millis(400));
    let started = tokio::time::Instant::now();
    let sent = tokio::time::timeout(
        Duration::from_secs(20),
        queue.send_with(
            &1u32,
            rabbitkit::PublishOptions::new().delay(Duration::from_millis(500)),
        ),
    )
    .await
    .expect("the publish returned within 20 s (its timeout is 2 s)");
    // A bound, not a speed: the timeout plus slack for the slow link, far
    // below the declarations' own time on it (13 s before).
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "a 2 s publish timeout took {took:?}"
    );
    match sent {
        Err(rabbitkit::SendError::Publish(rabbitkit::PublishError::Timeout(t))) => {
            assert_eq!(t, Duration::from_secs(2))
        }
        other => panic!("expected a publish timeout, got {other:?}"),
    }
    // On a healthy link the same client delays and delivers.
    proxy.delay(Duration::ZERO);
    queue
        .send_with(
            &2u32,
            rabbitkit::PublishOptions::new().delay(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    let mut sub = queue.subscribe::<u32>().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("the delayed message within 30 s")
        .unwrap()
        .unwrap();
    assert!(got.body == 2 || got.body == 1, "{}", got.body);
    drop(sub);
    client.delete_queue(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_to_a_queue_deleted_and_declared_again_arrives() {
    // Before: the client remembered the target as bound for good; after
    // `delete_queue` and a new `declare`, delayed publishes were confirmed
    // and then dropped in the delay sink.
    let client = common::client().await;
    let name = common::unique_name("promise.delay.again");
    let delayed = || rabbitkit::PublishOptions::new().delay(Duration::from_millis(300));
    let queue = Queue::named(name.as_str()).declare(&client).await.unwrap();
    queue.send_with(&1u32, delayed()).await.unwrap();
    let mut sub = queue.subscribe::<u32>().await.unwrap();
    assert_eq!(common::next_body(&mut sub).await, 1);
    drop(sub);
    client.delete_queue(&name).await.unwrap();
    let queue = Queue::named(name.as_str()).declare(&client).await.unwrap();
    queue.send_with(&2u32, delayed()).await.unwrap();
    let mut sub = queue.subscribe::<u32>().await.unwrap();
    assert_eq!(
        common::next_body(&mut sub).await,
        2,
        "the delayed message arrives"
    );
    drop(sub);
    client.delete_queue(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_with_its_own_ttl_is_refused_not_delivered_early() {
    // Before: the message's TTL shortened the first delay level: asked for
    // 10 s, with a 1 s expiration, it arrived after about 1 s.
    let client = common::client().await;
    let name = common::unique_name("promise.delay.ttl");
    let queue = Queue::named(name.as_str()).declare(&client).await.unwrap();
    let sent = queue
        .send_with(
            &1u32,
            rabbitkit::PublishOptions::new()
                .delay(Duration::from_secs(10))
                .expiration(Duration::from_secs(1)),
        )
        .await;
    match sent {
        Err(rabbitkit::SendError::Publish(rabbitkit::PublishError::Invalid { what, .. })) => {
            assert_eq!(what, "expiration")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(queue.info().await.unwrap().messages, 0);
    client.delete_queue(&name).await.unwrap();
}

/// A retry chain does not split in two across a failover: the task's
/// parked copy is confirmed, then the connection goes before the original's
/// ack reaches the broker (acks held back here by a 3 s flush delay), so
/// the original comes back. It is acknowledged without running its handler
/// again: one parked copy. Before, it ran again and was parked twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_copy_was_confirmed_is_not_handled_again_when_it_comes_back() {
    let proxy = proxy().await;
    let timings = rabbitkit::Timings {
        ack_flush_delay: Duration::from_secs(3),
        ..rabbitkit::Timings::DEFAULT
    };
    let client = common::options()
        .timings(timings)
        .connect(proxy.amqp_url())
        .await
        .unwrap();
    let observer = common::client().await;
    let name = common::unique_name("promise.split");
    let tasks = WorkQueue::<u32>::builder(name.as_str())
        .on_error(OnError::Retry(RetryPolicy::new([])))
        .declare(&client)
        .await
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let shutdown = rabbitkit::Shutdown::new();
    let worker = tokio::spawn({
        let (tasks, calls, shutdown) = (tasks.clone(), calls.clone(), shutdown.clone());
        async move {
            tasks
                .work_until(&shutdown, move |_: u32| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async move { Err("always fails".into()) }
                })
                .await
        }
    });
    let confirmed = client.stats().confirmed;
    let mut events = client.events();
    WorkQueue::<u32>::builder(name.as_str())
        .on_error(OnError::Retry(RetryPolicy::new([])))
        .declare(&observer)
        .await
        .unwrap()
        .submit(&7)
        .await
        .unwrap();
    // The parked copy is confirmed; the original's ack is still held.
    wait_until(
        Duration::from_secs(30),
        || client.stats().confirmed > confirmed,
        || "the parked copy is confirmed".into(),
    )
    .await;
    proxy.cut();
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, Event::Recovered { .. })
    })
    .await;
    // The original came back (nothing ready any more) and was settled.
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        while observer.queue_info(&name).await.unwrap().messages > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(drained.is_ok(), "the original is delivered again");
    shutdown.stop(Duration::from_secs(10));
    worker.await.unwrap().unwrap();
    let parked = observer
        .queue_info(&format!("{name}.parked"))
        .await
        .unwrap()
        .messages;
    assert_eq!(parked, 1, "parked once, not once per chain");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler ran once");
    assert_eq!(
        observer.queue_info(&name).await.unwrap().messages,
        0,
        "the original is settled"
    );
}
