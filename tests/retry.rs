//! Retry with back-off, then parking (`OnError::Retry` / `RetryPolicy`):
//! a failing task runs again after each configured delay, and once the
//! delays are used up it lands in the parking queue with why and how often
//! it failed. The count travels in the message.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rabbitkit::{
    ATTEMPTS_HEADER, HeaderValue, PARKED_ERROR_HEADER, PARKED_FROM_HEADER, Queue, RETRIES_HEADER,
    RetryPolicy, Shutdown, WorkQueue,
};

type Calls = Arc<Mutex<HashMap<u32, Vec<Instant>>>>;

/// One run of a handler: (task, x-delivery-count, retries header, message id).
type Run = (u32, Option<u64>, u64, Option<String>);

#[tokio::test]
async fn a_task_failing_twice_then_succeeding_runs_three_times_after_the_configured_delays() {
    let client = common::client().await;
    let delays = [Duration::from_secs(1), Duration::from_secs(2)];
    let tasks = WorkQueue::<u32>::builder(common::unique_name("retry.spacing"))
        .retry(RetryPolicy::new(delays))
        .declare(&client)
        .await
        .unwrap();
    tasks.submit(&7).await.unwrap();

    let calls: Calls = Arc::default();
    let done = Arc::new(tokio::sync::Notify::new());
    let shutdown = Shutdown::new();
    let worker = {
        let (tasks, calls, done, shutdown) =
            (tasks.clone(), calls.clone(), done.clone(), shutdown.clone());
        tokio::spawn(async move {
            tasks
                .work_until(&shutdown, move |id: u32| {
                    let (calls, done) = (calls.clone(), done.clone());
                    async move {
                        let n = {
                            let mut calls = calls.lock().unwrap();
                            let seen = calls.entry(id).or_default();
                            seen.push(Instant::now());
                            seen.len()
                        };
                        if n < 3 {
                            return Err(format!("attempt {n} failed").into());
                        }
                        done.notify_one();
                        Ok(())
                    }
                })
                .await
        })
    };
    tokio::time::timeout(Duration::from_secs(60), done.notified())
        .await
        .expect("the third attempt within 60 s");
    shutdown.stop(Duration::from_secs(5));
    let report = worker.await.unwrap().unwrap();
    assert_eq!(report.acked, 1);
    assert_eq!(report.requeued, 2, "two retries");
    assert_eq!(report.parked, 0);

    let times = calls.lock().unwrap()[&7].clone();
    assert_eq!(times.len(), 3, "called exactly three times");
    for (i, delay) in delays.iter().enumerate() {
        let gap = times[i + 1] - times[i];
        assert!(
            gap >= *delay,
            "retry {} came after {gap:?}, before its delay of {delay:?}",
            i + 1
        );
    }
    assert_eq!(tasks.queue().info().await.unwrap().messages, 0);
}

#[tokio::test]
async fn a_task_that_always_fails_is_parked_after_its_attempts_with_the_reason() {
    let client = common::client().await;
    let name = common::unique_name("retry.park");
    let tasks = WorkQueue::<u32>::builder(&name)
        .retry(RetryPolicy::new([
            Duration::from_millis(200),
            Duration::ZERO,
            Duration::from_millis(300),
        ]))
        .declare(&client)
        .await
        .unwrap();
    let parking = Queue::durable(format!("{name}.parked"))
        .declare(&client)
        .await
        .unwrap();
    let mut parked = parking.subscribe::<u32>().await.unwrap();
    tasks.submit(&1).await.unwrap();
    tasks.submit(&2).await.unwrap();

    let calls: Calls = Arc::default();
    let shutdown = Shutdown::new();
    let worker = {
        let (tasks, calls, shutdown) = (tasks.clone(), calls.clone(), shutdown.clone());
        tokio::spawn(async move {
            tasks
                .work_until(&shutdown, move |id: u32| {
                    let calls = calls.clone();
                    async move {
                        calls
                            .lock()
                            .unwrap()
                            .entry(id)
                            .or_default()
                            .push(Instant::now());
                        if id == 2 {
                            Ok(())
                        } else {
                            Err(format!("task {id}: the printer is on fire").into())
                        }
                    }
                })
                .await
        })
    };
    let message = tokio::time::timeout(Duration::from_secs(60), parked.next())
        .await
        .expect("parked within 60 s")
        .unwrap()
        .unwrap();
    assert_eq!(message.body, 1);
    let headers = message.headers();
    assert_eq!(headers.get(ATTEMPTS_HEADER), Some(&HeaderValue::Int(4)));
    assert_eq!(headers.get(RETRIES_HEADER), Some(&HeaderValue::Int(3)));
    assert_eq!(
        headers.get(PARKED_ERROR_HEADER),
        Some(&HeaderValue::Str("task 1: the printer is on fire".into()))
    );
    assert_eq!(
        headers.get(PARKED_FROM_HEADER),
        Some(&HeaderValue::Str(name.clone()))
    );
    message.ack().await.unwrap();

    shutdown.stop(Duration::from_secs(5));
    let report = worker.await.unwrap().unwrap();
    assert_eq!(report.parked, 1);
    assert_eq!(report.requeued, 3);
    assert_eq!(report.acked, 1);
    let (ones, twos) = {
        let calls = calls.lock().unwrap();
        (calls[&1].len(), calls[&2].len())
    };
    assert_eq!(ones, 4, "the first try and three retries");
    assert_eq!(twos, 1);
    assert_eq!(
        tasks.queue().info().await.unwrap().messages,
        0,
        "nothing left behind"
    );
}

#[tokio::test]
async fn the_parking_queue_can_be_named_and_is_declared_on_first_use() {
    let client = common::client().await;
    let name = common::unique_name("retry.named");
    let parking = common::unique_name("retry.named-parking");
    let tasks = WorkQueue::<String>::builder(&name)
        .retry(RetryPolicy::new([]).park_in(&parking))
        .declare(&client)
        .await
        .unwrap();
    tasks.submit(&"doomed".to_string()).await.unwrap();
    let shutdown = Shutdown::new();
    let worker = {
        let (tasks, shutdown) = (tasks.clone(), shutdown.clone());
        tokio::spawn(async move {
            tasks
                .work_until(&shutdown, |_: String| async { Err("no".into()) })
                .await
        })
    };
    // No retries: parked after the first failure, in a queue nobody declared.
    let mut info = None;
    for _ in 0..200 {
        if let Ok(i) = client.queue_info(&parking).await
            && i.messages == 1
        {
            info = Some(i);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(info.is_some(), "the message was never parked in {parking}");
    shutdown.stop(Duration::from_secs(5));
    assert_eq!(worker.await.unwrap().unwrap().parked, 1);
    client.delete_queue(&parking).await.unwrap();
}

#[test]
fn exponential_delays_grow_by_the_factor_up_to_the_cap() {
    let p = RetryPolicy::exponential(Duration::from_secs(1), 10, Duration::from_secs(60), 4);
    assert_eq!(p.delays(), [1, 10, 60, 60].map(Duration::from_secs));
    assert_eq!(p.attempts(), 5);
    assert_eq!(p.parking_queue("jobs"), "jobs.parked");
    // Delays beyond the longest delay are clamped to it, not refused at
    // every retry.
    assert_eq!(
        RetryPolicy::exponential(Duration::MAX, u32::MAX, Duration::MAX, 2).delays(),
        [rabbitkit_core::delay::MAX_DELAY; 2]
    );
}

/// RabbitMQ 4.3's quorum queues delay a returned message themselves
/// (`RetryPolicy::in_queue`): the same message comes back, counted by the
/// queue (`x-delivery-count`), with no copy published, then is parked.
/// Before 4.3 declaring such a work queue is a typed error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_delayed_by_the_queue_itself_then_parked_on_rabbitmq_4_3() {
    let client = common::client().await;
    let server = client.server().unwrap();
    let name = common::unique_name("retry.in_queue");
    let declared = WorkQueue::<u32>::builder(&name)
        .retry(RetryPolicy::in_queue(
            Duration::from_millis(200),
            Duration::from_secs(1),
            2,
        ))
        .declare(&client)
        .await;
    if !server.has_delayed_retry() {
        match declared {
            Err(rabbitkit::DeclareError::Invalid { what, reason, .. }) => {
                assert_eq!(what, "retry policy");
                assert!(reason.contains("4.3"), "{reason}");
            }
            other => panic!("{server}: expected DeclareError::Invalid, got {other:?}"),
        }
        // Nothing was declared.
        assert!(client.queue_info(&name).await.is_err());
        return;
    }
    let tasks = declared.unwrap();
    let parking = Queue::durable(format!("{name}.parked"))
        .declare(&client)
        .await
        .unwrap();
    let mut parked = parking.subscribe::<u32>().await.unwrap();
    tasks.submit(&1).await.unwrap();
    tasks.submit(&2).await.unwrap();
    // (task, x-delivery-count, retries header, message id) at each run
    let runs: Arc<Mutex<Vec<Run>>> = Arc::default();
    let shutdown = Shutdown::new();
    let worker = {
        let (tasks, runs, shutdown) = (tasks.clone(), runs.clone(), shutdown.clone());
        tokio::spawn(async move {
            tasks
                .work_incoming(Some(&shutdown), move |task: rabbitkit::Incoming<u32>| {
                    let runs = runs.clone();
                    async move {
                        let id = task.body;
                        let retried = task.attempt() - 1;
                        runs.lock().unwrap().push((
                            id,
                            task.delivery_count(),
                            retried,
                            task.message_id().map(str::to_owned),
                        ));
                        // Task 2 fails once, then succeeds.
                        let tries = runs.lock().unwrap().iter().filter(|r| r.0 == id).count();
                        if id == 1 || tries == 1 {
                            Err(format!("task {id} failed").into())
                        } else {
                            Ok(())
                        }
                    }
                })
                .await
        })
    };
    let message = tokio::time::timeout(Duration::from_secs(60), parked.next())
        .await
        .expect("parked within 60 s")
        .unwrap()
        .unwrap();
    assert_eq!(message.body, 1);
    let headers = message.headers();
    assert_eq!(headers.get(ATTEMPTS_HEADER), Some(&HeaderValue::Int(3)));
    assert_eq!(
        headers.get(PARKED_ERROR_HEADER),
        Some(&HeaderValue::Str("task 1 failed".into()))
    );
    message.ack().await.unwrap();
    shutdown.stop(Duration::from_secs(5));
    let report = worker.await.unwrap().unwrap();
    assert_eq!((report.parked, report.requeued, report.acked), (1, 3, 1));
    let runs = runs.lock().unwrap().clone();
    let of = |id: u32| -> Vec<(Option<u64>, u64)> {
        runs.iter()
            .filter(|r| r.0 == id)
            .map(|r| (r.1, r.2))
            .collect()
    };
    // The queue counted the failures; no copy was made (no retries header,
    // the same message id each time).
    assert_eq!(of(1), vec![(None, 0), (Some(1), 0), (Some(2), 0)]);
    assert_eq!(of(2), vec![(None, 0), (Some(1), 0)]);
    for id in [1, 2] {
        let ids: std::collections::BTreeSet<_> = runs
            .iter()
            .filter(|r| r.0 == id)
            .map(|r| r.3.clone())
            .collect();
        assert_eq!(ids.len(), 1, "task {id}: one message, {ids:?}");
    }
    assert_eq!(tasks.queue().info().await.unwrap().messages, 0);
    client.delete_queue(&name).await.unwrap();
    client.delete_queue(parking.name()).await.unwrap();
}
