//! Retries with back-off, then parking: a work queue whose failed jobs are
//! tried again 1 s later, then 2 s later, and then put aside in
//! `jobs.parked` with why they failed, for a human to look at. No broker
//! plugin: the retries wait in rabbitkit's delay queues (quorum queues with
//! a message TTL that dead-letter to each other).
//!
//! ```text
//! $ cargo run --example retry_dead_letter        # 6 jobs
//! $ cargo run --example retry_dead_letter 9
//! ```
//!
//! Arguments: `[JOBS]`, default 6. It submits jobs `job 1` ... `job N`, then
//! works on them until each is done or parked, and exits. Its handler fails
//! on purpose: jobs 3, 6, 9, ... always fail (they end up parked); jobs 2,
//! 5, 8, ... fail on their first attempt only (they succeed on the retry).
//! It deletes `jobs` and `jobs.parked` when it starts and leaves them
//! behind, so you can look at the parked jobs afterwards:
//! `cargo xtask broker ctl 1 list_queues name messages | grep jobs`.
//! Chapter "Delays, retries and dead letters" of the book.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.

// ANCHOR: code
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rabbitkit::{
    ATTEMPTS_HEADER, Options, PARKED_ERROR_HEADER, Queue, Report, RetryPolicy, Shutdown, WorkQueue,
};

const JOBS: &str = "jobs";

#[tokio::main]
async fn main() -> Result<(), Report> {
    let count: usize = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 6,
    };
    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;

    // ANCHOR: topology
    // Failed jobs come back 1 s later, then 2 s later; after the third
    // failed attempt they go to `jobs.parked`.
    let policy = RetryPolicy::new([Duration::from_secs(1), Duration::from_secs(2)]);
    let parking = policy.parking_queue(JOBS);
    for queue in [JOBS, parking.as_str()] {
        client.delete_queue(queue).await?; // start afresh
    }
    let jobs = WorkQueue::<String>::builder(JOBS)
        .retry(policy.clone())
        .declare(&client)
        .await?;
    let parked = Queue::durable(&parking).declare(&client).await?;
    // ANCHOR_END: topology

    for n in 1..=count {
        let job = format!("job {n}");
        jobs.submit(&job).await?;
        println!(" [x] Sent '{job}'");
    }

    // ANCHOR: work
    println!(" [*] Working. To exit press CTRL+C");
    let shutdown = Shutdown::on_signals(Duration::from_secs(5));
    let attempts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let max_attempts = policy.attempts();
    let worker = {
        let (jobs, shutdown, done) = (jobs.clone(), shutdown.clone(), done.clone());
        tokio::spawn(async move {
            jobs.work_until(&shutdown, move |job: String| {
                let attempt = {
                    let mut attempts = attempts.lock().unwrap();
                    let n = attempts.entry(job.clone()).or_default();
                    *n += 1;
                    *n
                };
                let done = done.clone();
                async move {
                    match handle(&job, attempt).await {
                        Ok(()) => {
                            done.fetch_add(1, Ordering::Relaxed);
                            println!(" [x] Done '{job}' (attempt {attempt})");
                            Ok(())
                        }
                        Err(e) => {
                            let next = if attempt < max_attempts { "retrying later" } else { "parking it" };
                            println!(" [!] '{job}' failed (attempt {attempt} of {max_attempts}): {e}; {next}");
                            Err(e)
                        }
                    }
                }
            })
            .await
        })
    };
    // ANCHOR_END: work

    // ANCHOR: parked
    // Read the parked jobs back: rabbitkit says why and how often they failed.
    let mut parked_jobs = parked.subscribe::<String>().await?;
    let mut parked_count = 0;
    while done.load(Ordering::Relaxed) + parked_count < count {
        tokio::select! {
            Some(message) = parked_jobs.next() => {
                let message = message?;
                let headers = message.headers();
                let (tries, error) = (headers.get(ATTEMPTS_HEADER), headers.get(PARKED_ERROR_HEADER));
                println!(
                    " [!] Parked '{}' after {} attempts: {}",
                    message.body,
                    tries.map(ToString::to_string).unwrap_or_default(),
                    error.map(ToString::to_string).unwrap_or_default(),
                );
                // An ack the broker no longer takes (it took the message back: a lost
                // connection, a consumer timeout) is reported, not fatal: the message
                // comes again.
                if let Err(e) = message.ack().await {
                    eprintln!(" [!] {e}");
                }
                parked_count += 1;
            }
            // Look at `done` again now and then.
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.stopping() => break,
        }
    }
    // ANCHOR_END: parked
    shutdown.stop(Duration::from_secs(5));
    let report = worker.await??;
    println!(" [x] Done: {}, parked: {}", report.acked, report.parked);
    client.close().await;
    Ok(())
}

// ANCHOR: handler
/// The work itself, failing on purpose: jobs 3, 6, 9... always fail, jobs
/// 2, 5, 8... fail on their first attempt only.
async fn handle(job: &str, attempt: usize) -> Result<(), rabbitkit::Report> {
    let n: u32 = job.trim_start_matches("job ").parse().unwrap_or(1);
    match n % 3 {
        0 => Err("this job can never be done".into()),
        2 if attempt == 1 => Err("a temporary failure".into()),
        _ => Ok(()),
    }
}
// ANCHOR_END: handler
// ANCHOR_END: code
