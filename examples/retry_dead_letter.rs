//! Retries and dead letters: a work queue whose failed jobs are retried
//! after a delay, and parked after three failed attempts, with nothing but
//! queue arguments (no broker plugin):
//!
//! - `jobs` dead-letters what a worker rejects to `jobs.wait`;
//! - `jobs.wait` has no consumer; its messages expire after one second
//!   (`x-message-ttl`) and are dead-lettered back to `jobs`;
//! - the worker counts a job's failed attempts in its `x-death` header,
//!   which the broker updates on each dead-lettering, and after the third
//!   failure sends the job to `jobs.parked` instead, for a human to look at.
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
//! It deletes the three queues when it starts and leaves them behind, so
//! you can look at the parked jobs afterwards:
//! `rabbitmqctl -n rabbit1@localhost list_queues name messages | grep jobs`.
//! Chapter "Retries and dead letters" of the book.

// ANCHOR: code
use std::time::Duration;

use futures::StreamExt;
use rabbitkit::{BasicProperties, Options, Queue, Report, WorkQueue};

type Error = Box<dyn std::error::Error + Send + Sync>;

const JOBS: &str = "jobs";
const WAIT: &str = "jobs.wait";
const PARKED: &str = "jobs.parked";
const RETRY_DELAY: Duration = Duration::from_secs(1);
const MAX_ATTEMPTS: u32 = 3;

#[tokio::main]
async fn main() -> Result<(), Report> {
    let count: u32 = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 6,
    };
    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    for queue in [JOBS, WAIT, PARKED] {
        client.delete_queue(queue).await?; // start afresh
    }

    // ANCHOR: topology
    // Rejected jobs go to `jobs.wait` (through the default exchange, "",
    // which routes to the queue named by the routing key) ...
    let jobs = WorkQueue::<String>::builder(JOBS)
        .prefetch(1)
        .dead_letter("")
        .dead_letter_routing_key(WAIT)
        .declare(&client)
        .await?;
    // ... wait there for RETRY_DELAY, then go back to `jobs`.
    Queue::durable(WAIT)
        .message_ttl(RETRY_DELAY)
        .dead_letter("")
        .dead_letter_routing_key(JOBS)
        .declare(&client)
        .await?;
    // Jobs that failed MAX_ATTEMPTS times.
    let parked = Queue::durable(PARKED).declare(&client).await?;
    // ANCHOR_END: topology

    for n in 1..=count {
        let job = format!("job {n}");
        jobs.submit(&job).await?;
        println!(" [x] Sent '{job}'");
    }

    println!(" [*] Working. To exit press CTRL+C");
    tokio::select! {
        result = work(&jobs, &parked, count) => {
            let (done, parked) = result?;
            println!(" [x] Done: {done}, parked: {parked}");
        }
        _ = tokio::signal::ctrl_c() => {}
    }
    client.close().await;
    Ok(())
}

// ANCHOR: handler
/// The work itself, failing on purpose: jobs 3, 6, 9... always fail, jobs
/// 2, 5, 8... fail on their first attempt only.
async fn handle(job: &str, attempt: u32) -> Result<(), String> {
    let n: u32 = job.trim_start_matches("job ").parse().unwrap_or(1);
    match n % 3 {
        0 => Err("this job can never be done".into()),
        2 if attempt == 1 => Err("a temporary failure".into()),
        _ => Ok(()),
    }
}
// ANCHOR_END: handler

// ANCHOR: work
/// Works until `count` jobs are done or parked; returns how many of each.
async fn work(jobs: &WorkQueue<String>, parked: &Queue, count: u32) -> Result<(u32, u32), Error> {
    let mut tasks = jobs.subscribe().await?;
    let (mut done, mut parked_jobs) = (0, 0);
    while done + parked_jobs < count {
        let Some(task) = tasks.next().await else {
            break;
        };
        let task = task?;
        let attempt = failed_attempts(task.properties()) + 1;
        match handle(&task.body, attempt).await {
            Ok(()) => {
                task.ack().await?;
                done += 1;
                println!(" [x] Done '{}' (attempt {attempt})", task.body);
            }
            Err(e) if attempt < MAX_ATTEMPTS => {
                // Dead-lettered to jobs.wait: back in RETRY_DELAY.
                task.reject(false).await?;
                println!(
                    " [!] '{}' failed (attempt {attempt} of {MAX_ATTEMPTS}): {e}; retry in {RETRY_DELAY:?}",
                    task.body
                );
            }
            Err(e) => {
                // Park it first, then ack: if we die in between, the job
                // comes back rather than being lost.
                parked.send(&task.body).await?;
                task.ack().await?;
                parked_jobs += 1;
                println!(
                    " [!] '{}' failed (attempt {attempt} of {MAX_ATTEMPTS}): {e}; parked in {PARKED}",
                    task.body
                );
            }
        }
    }
    Ok((done, parked_jobs))
}
// ANCHOR_END: work

// ANCHOR: x_death
/// How many times this message was rejected from `jobs`: the broker counts
/// it in the `x-death` header, one entry per queue and reason.
fn failed_attempts(properties: &BasicProperties) -> u32 {
    rabbitkit::message::death_count(properties, JOBS, "rejected") as u32
}
// ANCHOR_END: x_death
// ANCHOR_END: code
