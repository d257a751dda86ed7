//! Work queues: durable queue, persistent messages, fair dispatch by
//! prefetch, ack on success, requeue-once then dead-letter on failure.

mod common;

use std::sync::{Arc, Mutex};

use rabbitkit::{Exchange, OnError, Queue, WorkQueue};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Job {
    id: u32,
    fail: bool,
}

#[tokio::test]
async fn several_workers_share_the_work_and_each_job_is_done_once() {
    let client = common::client().await;
    let name = common::unique_name("work.share");
    let tasks = WorkQueue::<Job>::builder(name.as_str())
        .prefetch(1)
        .declare(&client)
        .await
        .unwrap();
    for id in 0..60 {
        tasks.submit(&Job { id, fail: false }).await.unwrap();
    }
    let done: Arc<Mutex<Vec<(usize, u32)>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..3 {
        let tasks = tasks.clone();
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            tasks
                .work(move |job: Job| {
                    let done = done.clone();
                    async move {
                        done.lock().unwrap().push((w, job.id));
                        tokio::task::yield_now().await;
                        Ok(())
                    }
                })
                .await
        }));
    }
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while done.lock().unwrap().len() < 60 {
        assert!(tokio::time::Instant::now() < deadline, "jobs not all done");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let done = done.lock().unwrap().clone();
    let mut ids: Vec<u32> = done.iter().map(|(_, id)| *id).collect();
    ids.sort();
    assert_eq!(ids, (0..60).collect::<Vec<_>>(), "each job once");
    let busy: std::collections::HashSet<usize> = done.iter().map(|(w, _)| *w).collect();
    assert!(busy.len() >= 2, "work spread over workers: {busy:?}");
    for w in workers {
        w.abort();
    }
    // Persistent messages on a durable queue.
    let props_check = tasks.info().await.unwrap();
    assert_eq!(props_check.messages, 0);
    tasks.queue().clone().delete().await.unwrap();
}

#[tokio::test]
async fn failed_jobs_are_retried_once_then_dead_lettered_and_bad_bodies_never_loop() {
    let client = common::client().await;
    let dlx = Exchange::fanout(common::unique_name("work.dlx"))
        .declare(&client)
        .await
        .unwrap();
    let parked = Queue::named(common::unique_name("work.parked"))
        .declare(&client)
        .await
        .unwrap();
    dlx.bind(&parked).await.unwrap();
    let tasks = WorkQueue::<Job>::builder(common::unique_name("work.fail"))
        .dead_letter(dlx.name())
        .on_error(OnError::RequeueOnce)
        .declare(&client)
        .await
        .unwrap();
    tasks.submit(&Job { id: 1, fail: true }).await.unwrap();
    tasks.submit(&Job { id: 2, fail: false }).await.unwrap();
    // A body that is not a Job at all, sent by someone else.
    tasks.queue().send(&"not a job".to_string()).await.unwrap();
    let attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
    let seen = attempts.clone();
    let worker = tokio::spawn({
        let tasks = tasks.clone();
        async move {
            tasks
                .work(move |job: Job| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push(job.id);
                        if job.fail { Err("boom".into()) } else { Ok(()) }
                    }
                })
                .await
        }
    });
    // Both bad messages end up parked, nothing loops.
    let mut parked_sub = parked.subscribe::<serde_json::Value>().await.unwrap();
    let mut parked_bodies = Vec::new();
    for _ in 0..2 {
        let m = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            futures::StreamExt::next(&mut parked_sub),
        )
        .await
        .expect("dead-lettered within 20 s")
        .unwrap()
        .unwrap();
        parked_bodies.push(m.body.clone());
        m.ack().await.unwrap();
    }
    assert!(parked_bodies.contains(&serde_json::json!({"id": 1, "fail": true})));
    assert!(parked_bodies.contains(&serde_json::json!("not a job")));
    let mut a = attempts.lock().unwrap().clone();
    a.sort();
    assert_eq!(
        a,
        [1, 1, 2],
        "the failing job ran twice (requeued once), the good one once"
    );
    worker.abort();
    drop(parked_sub);
    tasks.queue().clone().delete().await.unwrap();
    parked.delete().await.unwrap();
    client.delete_exchange(dlx.name()).await.unwrap();
}

/// Job id of the sentinel that ends a `work` loop at a known point: once
/// its handler runs, every task before it has been settled and counted;
/// its handler then waits, the client is closed, and the loop ends with a
/// report that does not count the sentinel (its ack fails with the client).
const SENTINEL: u32 = 0;

/// Runs `tasks.work(handler)` for non-sentinel jobs; stops at the sentinel.
fn spawn_worker<F>(
    tasks: &WorkQueue<Job>,
    handler: F,
) -> (
    tokio::task::JoinHandle<Result<rabbitkit::HandleReport, rabbitkit::SubscribeError>>,
    Arc<tokio::sync::Notify>,
    Arc<tokio::sync::Notify>,
)
where
    F: Fn(Job) -> Result<(), String> + Send + Sync + 'static,
{
    let reached = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let handler = Arc::new(handler);
    let worker = tokio::spawn({
        let tasks = tasks.clone();
        let (reached, release) = (reached.clone(), release.clone());
        async move {
            tasks
                .work(move |job: Job| {
                    let (reached, release, handler) =
                        (reached.clone(), release.clone(), handler.clone());
                    async move {
                        if job.id == SENTINEL {
                            reached.notify_one();
                            release.notified().await;
                            return Ok(());
                        }
                        Ok(handler(job)?)
                    }
                })
                .await
        }
    });
    (worker, reached, release)
}

/// The broker sets `redelivered` on every message that was unacknowledged
/// when a consumer's connection died. Such a task, failing once, must still
/// get its retry (not be dropped as if it had failed twice).
#[tokio::test]
async fn a_task_redelivered_after_its_worker_died_still_gets_its_retry() {
    let name = common::unique_name("work.redelivered");
    let client = common::client().await;
    let tasks = WorkQueue::<Job>::builder(name.as_str())
        .declare(&client)
        .await
        .unwrap();
    tasks.submit(&Job { id: 7, fail: false }).await.unwrap();

    // A worker takes the task and dies without acknowledging it: the
    // broker delivers it again, flagged `redelivered`.
    let doomed = common::client().await;
    let mut taken = doomed
        .consume(&name, rabbitkit::ConsumeOptions::new().prefetch(1))
        .await
        .unwrap();
    let first = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        futures::StreamExt::next(&mut taken),
    )
    .await
    .expect("delivered within 20 s")
    .unwrap()
    .unwrap();
    assert!(!first.redelivered());
    doomed.close().await;
    drop((first, taken));

    // The next worker fails on its first attempt, succeeds on the second.
    let attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let done_tx = Mutex::new(Some(done_tx));
    let (worker, reached, release) = spawn_worker(&tasks, {
        let attempts = attempts.clone();
        move |job| {
            let mut a = attempts.lock().unwrap();
            a.push(job.id);
            if a.len() == 1 {
                return Err("a temporary failure".to_string());
            }
            if let Some(tx) = done_tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
            Ok(())
        }
    });
    tokio::time::timeout(std::time::Duration::from_secs(30), done_rx)
        .await
        .expect("the task was dropped after its first failure instead of retried")
        .unwrap();
    tasks
        .submit(&Job {
            id: SENTINEL,
            fail: false,
        })
        .await
        .unwrap();
    reached.notified().await;
    client.close().await; // ends the worker's subscription
    release.notify_one();
    let report = worker.await.unwrap().unwrap();
    assert_eq!(*attempts.lock().unwrap(), [7, 7], "failed once, then done");
    assert_eq!(
        (report.acked, report.requeued, report.rejected),
        (1, 1, 0),
        "{report:?}"
    );
    common::client().await.delete_queue(&name).await.unwrap();
}

#[tokio::test]
async fn a_task_failing_every_time_runs_twice_then_is_dead_lettered() {
    let client = common::client().await;
    let dlx = Exchange::fanout(common::unique_name("work.dlx2"))
        .declare(&client)
        .await
        .unwrap();
    let parked = Queue::named(common::unique_name("work.parked2"))
        .declare(&client)
        .await
        .unwrap();
    dlx.bind(&parked).await.unwrap();
    let tasks = WorkQueue::<Job>::builder(common::unique_name("work.always"))
        .dead_letter(dlx.name())
        .declare(&client)
        .await
        .unwrap();
    let job = Job { id: 3, fail: true };
    tasks.submit(&job).await.unwrap();
    let attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
    let (worker, reached, release) = spawn_worker(&tasks, {
        let attempts = attempts.clone();
        move |job| {
            attempts.lock().unwrap().push(job.id);
            Err("this job can never be done".to_string())
        }
    });
    let mut parked_sub = parked.subscribe::<Job>().await.unwrap();
    let dead = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        futures::StreamExt::next(&mut parked_sub),
    )
    .await
    .expect("dead-lettered within 20 s")
    .unwrap()
    .unwrap();
    assert_eq!(dead.body, job);
    assert_eq!(dead.retries(), 1, "it was retried once");
    assert_eq!(dead.death_count(tasks.queue().name(), "rejected"), 1);
    dead.ack().await.unwrap();
    tasks
        .submit(&Job {
            id: SENTINEL,
            fail: false,
        })
        .await
        .unwrap();
    reached.notified().await;
    let queue = tasks.queue().name().to_owned();
    client.close().await; // ends the worker's subscription
    release.notify_one();
    let report = worker.await.unwrap().unwrap();
    assert_eq!(*attempts.lock().unwrap(), [3, 3], "handled exactly twice");
    assert_eq!(
        (report.acked, report.requeued, report.rejected),
        (0, 1, 1),
        "{report:?}"
    );
    let check = common::client().await;
    check.delete_queue(&queue).await.unwrap();
    check.delete_queue(parked.name()).await.unwrap();
    check.delete_exchange(dlx.name()).await.unwrap();
}

#[tokio::test]
async fn always_requeue_is_still_bounded_by_the_quorum_delivery_limit() {
    // RabbitMQ 4.3 stopped counting `basic.nack` returns towards a quorum
    // queue's delivery limit; a handler failure is a `basic.reject`, which
    // counts on every version, so `OnError::Requeue` cannot loop forever.
    let client = common::client().await;
    let dlx = Exchange::fanout(common::unique_name("work.dlx3"))
        .declare(&client)
        .await
        .unwrap();
    let parked = Queue::named(common::unique_name("work.parked3"))
        .declare(&client)
        .await
        .unwrap();
    dlx.bind(&parked).await.unwrap();
    let tasks = WorkQueue::<Job>::builder(common::unique_name("work.requeue"))
        .on_error(OnError::Requeue)
        .dead_letter(dlx.name())
        .queue(|q| q.delivery_limit(2))
        .declare(&client)
        .await
        .unwrap();
    let job = Job { id: 4, fail: true };
    tasks.submit(&job).await.unwrap();
    let attempts: Arc<Mutex<Vec<u32>>> = Arc::default();
    let (worker, reached, release) = spawn_worker(&tasks, {
        let attempts = attempts.clone();
        move |job| {
            attempts.lock().unwrap().push(job.id);
            Err("this job can never be done".to_string())
        }
    });
    let mut parked_sub = parked.subscribe::<Job>().await.unwrap();
    let dead = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        futures::StreamExt::next(&mut parked_sub),
    )
    .await
    .expect("dead-lettered once the delivery limit was reached")
    .unwrap()
    .unwrap();
    assert_eq!(dead.body, job);
    dead.ack().await.unwrap();
    tasks
        .submit(&Job {
            id: SENTINEL,
            fail: false,
        })
        .await
        .unwrap();
    reached.notified().await;
    let queue = tasks.queue().name().to_owned();
    client.close().await;
    release.notify_one();
    worker.await.unwrap().unwrap();
    // The first delivery and two redeliveries (x-delivery-limit 2).
    assert_eq!(*attempts.lock().unwrap(), [4, 4, 4]);
    let check = common::client().await;
    check.delete_queue(&queue).await.unwrap();
    check.delete_queue(parked.name()).await.unwrap();
    check.delete_exchange(dlx.name()).await.unwrap();
}

/// A consumer timeout on a classic work queue: RabbitMQ 4.3 has consumer
/// timeouts on quorum queues only and refuses `x-consumer-timeout` on a
/// classic one (406), so the worker leaves it out there and works. Before,
/// its subscribe failed on 4.3.
#[tokio::test]
async fn a_classic_work_queue_with_a_consumer_timeout_works_on_every_version() {
    let client = common::client().await;
    let tasks = WorkQueue::<u32>::builder(common::unique_name("wq.classic.timeout"))
        .classic()
        .consumer_timeout(std::time::Duration::from_secs(60))
        .declare(&client)
        .await
        .unwrap();
    tasks.submit(&1).await.unwrap();
    let mut sub = tasks.subscribe().await.expect("subscribed");
    let task = tokio::time::timeout(std::time::Duration::from_secs(30), sub.recv())
        .await
        .expect("a task within 30 s")
        .expect("the subscription goes on")
        .expect("decoded");
    assert_eq!(task.body, 1);
    task.ack().await.unwrap();
    drop(sub);
    tasks.queue().clone().delete().await.unwrap();
}

/// A task that runs past a share of its consumer timeout is made visible
/// before the broker acts: a WARN log and `Event::HandlerRunningLong`
/// naming the queue and the message, once; a quick task is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_running_past_its_share_of_the_consumer_timeout_is_warned_about_first() {
    use futures::StreamExt;
    use std::time::Duration;
    let client = common::client().await;
    let mut events = client.events();
    let name = common::unique_name("wq.long");
    let tasks = WorkQueue::<u32>::builder(name.as_str())
        .concurrency(2)
        .consumer_timeout(Duration::from_secs(60))
        .warn_long_running(1.0 / 60.0) // after 1 s
        .declare(&client)
        .await
        .unwrap();
    let options = |id: &str| rabbitkit::PublishOptions::new().message_id(id);
    tasks.submit_with(&1, options("quick")).await.unwrap();
    tasks.submit_with(&2, options("long")).await.unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let runs: Arc<Mutex<Vec<u32>>> = Arc::default();
    let worker = tokio::spawn({
        let (tasks, release, runs) = (tasks.clone(), release.clone(), runs.clone());
        async move {
            tasks
                .work(move |n: u32| {
                    let (release, runs) = (release.clone(), runs.clone());
                    async move {
                        runs.lock().unwrap().push(n);
                        if n == 2 {
                            // Runs until the test saw the warning.
                            release.notified().await;
                        }
                        Ok(())
                    }
                })
                .await
        }
    });
    // The first warning is the long task's: the quick one, which started
    // first, would have been warned about before it.
    let warned = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match events.next().await.expect("events go on") {
                rabbitkit::Event::HandlerRunningLong {
                    queue,
                    message_id,
                    running,
                    timeout,
                } => break (queue, message_id, running, timeout),
                _ => continue,
            }
        }
    })
    .await
    .expect("a HandlerRunningLong event");
    assert_eq!(warned.0, name);
    assert_eq!(warned.1.as_deref(), Some("long"));
    assert_eq!(warned.3, Duration::from_secs(60));
    assert!(warned.2 < warned.3);
    release.notify_one();
    // Both done once, acknowledged; the worker goes on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(tasks.info().await.unwrap().messages == 0 && runs.lock().unwrap().len() == 2) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "runs {:?}",
            runs.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ran = runs.lock().unwrap().clone();
    ran.sort_unstable();
    assert_eq!(ran, vec![1, 2], "each once");
    assert!(!worker.is_finished());
    worker.abort();
    tasks.queue().clone().delete().await.unwrap();
}
