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
                        Ok::<_, String>(())
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
                        if job.fail {
                            Err("boom".to_string())
                        } else {
                            Ok(())
                        }
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
