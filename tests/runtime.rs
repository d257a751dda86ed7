//! The consumer runtime a service is built on: handlers in flight at once,
//! the graceful stop, routing by message kind, and health.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rabbitkit::{Queue, Shutdown, WorkQueue};
use tokio::sync::{Barrier, Notify};

/// Polls (bounded) until the queue holds `n` ready messages.
async fn wait_ready(queue: &Queue, n: u32) {
    let mut last = None;
    for _ in 0..200 {
        let info = queue.info().await.unwrap();
        if info.messages == n {
            return;
        }
        last = Some(info);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{} never held {n} ready messages; last seen {last:?}",
        queue.name()
    );
}

#[tokio::test]
async fn concurrent_handlers_really_overlap_and_each_task_is_acked_once() {
    const N: usize = 8;
    let client = common::client().await;
    let tasks = WorkQueue::<u32>::builder(common::unique_name("runtime.overlap"))
        .prefetch(N as u16)
        .concurrency(N)
        .declare(&client)
        .await
        .unwrap();
    for id in 0..(2 * N as u32) {
        tasks.submit(&id).await.unwrap();
    }
    // Each handler waits until N handlers wait with it: this passes only if
    // N handlers run at once.
    let barrier = Arc::new(Barrier::new(N));
    let seen: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let all_done = Arc::new(Notify::new());
    let shutdown = Shutdown::new();
    let worker = {
        let (tasks, seen, barrier, all_done) = (
            tasks.clone(),
            seen.clone(),
            barrier.clone(),
            all_done.clone(),
        );
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tasks
                .work_until(&shutdown, move |id: u32| {
                    let (seen, barrier, all_done) =
                        (seen.clone(), barrier.clone(), all_done.clone());
                    async move {
                        barrier.wait().await;
                        let mut seen = seen.lock().unwrap();
                        *seen.entry(id).or_default() += 1;
                        if seen.len() == 2 * N {
                            all_done.notify_one();
                        }
                        Ok(())
                    }
                })
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(30), all_done.notified())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "handlers did not all pass a barrier of {N}: ran {:?}",
                seen.lock().unwrap()
            )
        });
    shutdown.stop(Duration::from_secs(10));
    let report = worker.await.unwrap().unwrap();
    assert_eq!(report.acked, 2 * N as u64, "{report:?}");
    assert!(seen.lock().unwrap().values().all(|&n| n == 1));
    client.close().await;
    // Every ack reached the broker: nothing comes back.
    let other = common::client().await;
    let queue = Queue::named(tasks.queue().name())
        .declare(&other)
        .await
        .unwrap();
    wait_ready(&queue, 0).await;
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_the_task_in_progress_finish_and_gives_back_the_unstarted_ones() {
    let client = common::client().await;
    let tasks = WorkQueue::<u32>::builder(common::unique_name("runtime.drain"))
        .prefetch(5)
        .declare(&client)
        .await
        .unwrap();
    for id in 0..5 {
        tasks.submit(&id).await.unwrap();
    }
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let done: Arc<Mutex<Vec<u32>>> = Arc::default();
    let shutdown = Shutdown::new();
    let worker = {
        let (tasks, started, release, done) = (
            tasks.clone(),
            started.clone(),
            release.clone(),
            done.clone(),
        );
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tasks
                .work_until(&shutdown, move |id: u32| {
                    let (started, release, done) = (started.clone(), release.clone(), done.clone());
                    async move {
                        started.notify_one();
                        release.notified().await;
                        done.lock().unwrap().push(id);
                        Ok(())
                    }
                })
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(20), started.notified())
        .await
        .expect("the first task started");
    shutdown.stop(Duration::from_secs(30));
    // Finish the task in progress only once the stop was asked for.
    release.notify_one();
    let report = worker.await.unwrap().unwrap();
    assert_eq!(*done.lock().unwrap(), [0], "only the task in progress ran");
    assert_eq!(report.acked, 1, "{report:?}");
    assert_eq!(report.abandoned, 0, "{report:?}");
    client.close().await;
    // The four others are back in the queue; the finished one is not.
    let other = common::client().await;
    let queue = Queue::named(tasks.queue().name())
        .declare(&other)
        .await
        .unwrap();
    wait_ready(&queue, 4).await;
    let mut sub = queue.subscribe::<u32>().await.unwrap();
    let mut rest = Vec::new();
    for _ in 0..4 {
        rest.push(common::next_body(&mut sub).await);
    }
    rest.sort();
    assert_eq!(rest, [1, 2, 3, 4]);
    drop(sub);
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn a_handler_that_ignores_the_deadline_is_abandoned_and_its_task_requeued() {
    let client = common::client().await;
    let tasks = WorkQueue::<u32>::builder(common::unique_name("runtime.abandon"))
        .prefetch(1)
        .declare(&client)
        .await
        .unwrap();
    tasks.submit(&7).await.unwrap();
    let started = Arc::new(Notify::new());
    let shutdown = Shutdown::new();
    let worker = {
        let (tasks, started) = (tasks.clone(), started.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tasks
                .work_until(&shutdown, move |_: u32| {
                    let started = started.clone();
                    async move {
                        started.notify_one();
                        std::future::pending::<()>().await;
                        Ok(())
                    }
                })
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(20), started.notified())
        .await
        .expect("the task started");
    shutdown.stop(Duration::from_millis(200));
    let report = tokio::time::timeout(Duration::from_secs(20), worker)
        .await
        .expect("the worker stops at the deadline")
        .unwrap()
        .unwrap();
    assert_eq!((report.acked, report.abandoned), (0, 1), "{report:?}");
    client.close().await;
    let other = common::client().await;
    let queue = Queue::named(tasks.queue().name())
        .declare(&other)
        .await
        .unwrap();
    let mut sub = queue.subscribe::<u32>().await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(20), sub.recv())
        .await
        .expect("the abandoned task is back")
        .unwrap()
        .unwrap();
    assert_eq!(msg.body, 7);
    assert!(msg.redelivered());
    msg.ack().await.unwrap();
    drop(sub);
    queue.delete().await.unwrap();
}

#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
struct OrderPlaced {
    id: u32,
}

#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq)]
struct OrderShipped {
    id: u32,
    carrier: String,
}

#[tokio::test]
async fn a_router_sends_each_kind_to_its_handler_and_dead_letters_unknown_kinds() {
    use rabbitkit::{BasicProperties, Exchange, HandleOptions, OnError, OutgoingMessage, Router};
    let client = common::client().await;
    let dlx = Exchange::fanout(common::unique_name("router.dlx"))
        .declare(&client)
        .await
        .unwrap();
    let parked = Queue::named(common::unique_name("router.parked"))
        .declare(&client)
        .await
        .unwrap();
    dlx.bind(&parked).await.unwrap();
    let orders = Queue::named(common::unique_name("router.orders"))
        .dead_letter(dlx.name())
        .declare(&client)
        .await
        .unwrap();
    let topic = Exchange::topic(common::unique_name("router.topic"))
        .declare(&client)
        .await
        .unwrap();
    topic
        .bind(&orders, &"order.#".parse().unwrap())
        .await
        .unwrap();
    // Three kinds: two by routing key (exact, topic pattern), one by `type`.
    let publish = |key: &'static str, kind: Option<&'static str>, body: String| {
        let mut props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        if let Some(kind) = kind {
            props = props.with_type(kind.into());
        }
        client.publish(OutgoingMessage::new(topic.name(), key, body.into_bytes()).properties(props))
    };
    publish("order.placed", None, r#"{"id":1}"#.into())
        .await
        .unwrap();
    publish(
        "order.shipped.eu",
        None,
        r#"{"id":2,"carrier":"post"}"#.into(),
    )
    .await
    .unwrap();
    publish("order.other", Some("refund"), "30".into())
        .await
        .unwrap();
    publish("order.unknown", None, r#"{"id":4}"#.into())
        .await
        .unwrap();

    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let shutdown = Shutdown::new();
    let (g1, g2, g3) = (got.clone(), got.clone(), got.clone());
    let router = Router::new()
        .route("order.placed", move |o: OrderPlaced| {
            let g = g1.clone();
            async move {
                g.lock().unwrap().push(format!("placed {}", o.id));
                Ok(())
            }
        })
        .route("order.shipped.*", move |o: OrderShipped| {
            let g = g2.clone();
            async move {
                g.lock()
                    .unwrap()
                    .push(format!("shipped {} {}", o.id, o.carrier));
                Ok(())
            }
        })
        .route_type("refund", move |amount: u32| {
            let g = g3.clone();
            async move {
                g.lock().unwrap().push(format!("refund {amount}"));
                Ok(())
            }
        })
        .on_error(OnError::DeadLetter);
    let run = {
        let orders = orders.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            router
                .run(
                    &orders,
                    HandleOptions::new().concurrency(4).shutdown(&shutdown),
                )
                .await
        })
    };
    // The unknown kind is dead-lettered, not acknowledged.
    let mut parked_sub = parked.subscribe::<serde_json::Value>().await.unwrap();
    let dead = common::next_body(&mut parked_sub).await;
    assert_eq!(dead, serde_json::json!({"id": 4}));
    for _ in 0..200 {
        if got.lock().unwrap().len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.stop(Duration::from_secs(10));
    let report = run.await.unwrap().unwrap();
    let mut got = got.lock().unwrap().clone();
    got.sort();
    assert_eq!(got, ["placed 1", "refund 30", "shipped 2 post"]);
    assert_eq!((report.acked, report.rejected), (3, 1), "{report:?}");
    drop(parked_sub);
    orders.delete().await.unwrap();
    parked.delete().await.unwrap();
    client.delete_exchange(topic.name()).await.unwrap();
    client.delete_exchange(dlx.name()).await.unwrap();
}

#[tokio::test]
async fn a_router_with_an_invalid_pattern_is_refused_before_subscribing() {
    let client = common::client().await;
    let q = Queue::named(common::unique_name("router.bad"))
        .declare(&client)
        .await
        .unwrap();
    let router = rabbitkit::Router::new().route("a..b", |_: String| async { Ok(()) });
    let err = router
        .run(&q, rabbitkit::HandleOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, rabbitkit::SubscribeError::Declare(_)),
        "{err:?}"
    );
    assert_eq!(q.info().await.unwrap().consumers, 0);
    q.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_workers_each_have_a_consumer_and_share_the_tasks() {
    const WORKERS: usize = 3;
    let client = common::client().await;
    let tasks = WorkQueue::<u32>::builder(common::unique_name("runtime.parallel"))
        .prefetch(1)
        .declare(&client)
        .await
        .unwrap();
    for id in 0..30 {
        tasks.submit(&id).await.unwrap();
    }
    // Each worker loop runs one handler at a time: the barrier of 3 passes
    // only if the three loops (three consumers) run at once.
    let barrier = Arc::new(Barrier::new(WORKERS));
    let done: Arc<Mutex<Vec<u32>>> = Arc::default();
    let shutdown = Shutdown::new();
    let run = {
        let (tasks, barrier, done, shutdown) = (
            tasks.clone(),
            barrier.clone(),
            done.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            tasks
                .work_parallel(WORKERS, &shutdown, move |id: u32| {
                    let (barrier, done) = (barrier.clone(), done.clone());
                    async move {
                        if id < WORKERS as u32 {
                            barrier.wait().await;
                        }
                        done.lock().unwrap().push(id);
                        Ok(())
                    }
                })
                .await
        })
    };
    for _ in 0..400 {
        if done.lock().unwrap().len() == 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tasks.info().await.unwrap().consumers, WORKERS as u32);
    shutdown.stop(Duration::from_secs(10));
    let report = run.await.unwrap().unwrap();
    let mut done = done.lock().unwrap().clone();
    done.sort();
    assert_eq!(done, (0..30).collect::<Vec<_>>(), "each task once");
    assert_eq!(report.acked, 30, "{report:?}");
    tasks.queue().clone().delete().await.unwrap();
}

#[tokio::test]
async fn an_rpc_server_stopped_mid_request_answers_it_then_returns() {
    use rabbitkit::{RpcClient, RpcServer};
    let client = common::client().await;
    let name = common::unique_name("runtime.rpc");
    let server = RpcServer::<u32, u32>::builder(name.as_str())
        .declare(&client)
        .await
        .unwrap();
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let shutdown = Shutdown::new();
    let serving = {
        let (started, release, shutdown) = (started.clone(), release.clone(), shutdown.clone());
        tokio::spawn(async move {
            server
                .serve_until(&shutdown, move |n: u32| {
                    let (started, release) = (started.clone(), release.clone());
                    async move {
                        started.notify_one();
                        release.notified().await;
                        Ok(n + 1)
                    }
                })
                .await
        })
    };
    let caller = RpcClient::<u32, u32, String>::builder(name.as_str())
        .build(&client)
        .await
        .unwrap();
    let call = tokio::spawn(async move { caller.call(&41).await });
    tokio::time::timeout(Duration::from_secs(20), started.notified())
        .await
        .expect("the request started");
    shutdown.stop(Duration::from_secs(30));
    release.notify_one();
    assert_eq!(
        call.await.unwrap().unwrap(),
        42,
        "the request in progress is answered"
    );
    let report = tokio::time::timeout(Duration::from_secs(20), serving)
        .await
        .expect("serve_until returns after the stop")
        .unwrap()
        .unwrap();
    assert_eq!(report.answered, 1, "{report:?}");
    client.delete_queue(&name).await.unwrap();
}

#[tokio::test]
async fn closing_the_client_waits_for_the_publishes_in_flight() {
    use rabbitkit::OutgoingMessage;
    let client = common::client().await;
    let queue = Queue::named(common::unique_name("runtime.close"))
        .declare(&client)
        .await
        .unwrap();
    let publishes = futures::future::join_all((0..30).map(|i: u32| {
        client.publish(OutgoingMessage::new(
            "",
            queue.name(),
            i.to_string().into_bytes(),
        ))
    }));
    // The publishes start (first poll) before the close is asked for.
    let (results, ()) = tokio::join!(publishes, async {
        tokio::task::yield_now().await;
        client.close().await;
    });
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of 30 failed: {:?}",
        failed.len(),
        failed.first()
    );
    let other = common::client().await;
    let queue = Queue::named(queue.name()).declare(&other).await.unwrap();
    assert_eq!(queue.info().await.unwrap().messages, 30);
    queue.delete().await.unwrap();
}
