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
                        Ok::<_, String>(())
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
                        Ok::<_, String>(())
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
                        Ok::<_, String>(())
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
