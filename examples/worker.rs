//! Work queues, the worker: takes tasks from `task_queue` one at a time and
//! "works" one second per `.` in each, then acknowledges it. Start several
//! and the tasks are shared between them.
//!
//! Shows: prefetch 1 (fair dispatch), acknowledging each task explicitly
//! once the work is done (a worker killed half-way loses nothing: its task
//! goes to another), and a graceful stop: Ctrl-C lets the task in progress
//! finish (and be acknowledged) before the program exits, so no task is
//! done twice.
//!
//! ```text
//! terminal 1$ cargo run --example worker
//! terminal 2$ cargo run --example worker
//! terminal 3$ cargo run --example new_task First message.
//! terminal 3$ cargo run --example new_task Second message..
//! ```
//!
//! Stop it with Ctrl-C: the task in progress finishes first. (`WorkQueue::
//! work_until`, shown in the book, does the same loop for you, with retries,
//! several tasks at once and a bound on the wait.) The queue is the official tutorials' `task_queue`
//! (durable quorum queue), so this works with their `new_task.py`;
//! `TASK_QUEUE=name` makes it work on another queue (the tests use it).
//! Chapter "Work queues" of the book.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.
//!
//! Expected output:
//!
//! ```text
//! $ cargo run --example worker   (then `new_task First message.`, then Ctrl-C)
//!  [*] Waiting for messages. To exit press CTRL+C
//!  [x] Received 'First message.'
//!  [x] Done
//!  [*] Stopped after 1 task(s)
//! ```

// ANCHOR: code
use std::time::Duration;

use futures::StreamExt;
use rabbitkit::{Client, Options, Report, Shutdown, WorkQueue};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Report> {
    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    // ANCHOR: shutdown
    // Ctrl-C, or SIGTERM from a deploy: take no new task; the one in progress finishes first.
    let shutdown = Shutdown::on_signals(Duration::from_secs(30));
    work(&client, &shutdown).await?;
    client.close().await; // the last acks are sent before it closes
    // ANCHOR_END: shutdown
    Ok(())
}

// ANCHOR: work
async fn work(client: &Client, shutdown: &Shutdown) -> Result<(), Error> {
    // ANCHOR: declare
    let queue = std::env::var("TASK_QUEUE").unwrap_or_else(|_| "task_queue".into());
    // The official tutorials' `task_queue`: a durable quorum queue. At most
    // one unacknowledged task at a time for this worker (prefetch 1).
    let tasks = WorkQueue::<String>::builder(queue)
        .prefetch(1)
        .declare(client)
        .await?;
    // ANCHOR_END: declare
    // ANCHOR: subscribe
    let mut tasks = tasks.subscribe().await?;
    println!(" [*] Waiting for messages. To exit press CTRL+C");
    // ANCHOR_END: subscribe

    // ANCHOR: consume
    let mut done = 0;
    // A task is worked to the end; the stop is looked at between two
    // (`biased`: once Ctrl-C was pressed, no new task starts).
    while let Some(task) = tokio::select! {
        biased;
        _ = shutdown.stopping() => None,
        task = tasks.next() => task,
    } {
        let task = task?;
        println!(" [x] Received '{}'", task.body);
        let dots = task.body.matches('.').count() as u64;
        tokio::time::sleep(Duration::from_secs(dots)).await;
        println!(" [x] Done");
        // ANCHOR: ack
        // Only now is the task acknowledged: the broker deletes it. Had the
        // worker died before this line, the broker would give the task to
        // another worker.
        // An ack the broker no longer takes (it took the message back: a lost
        // connection, a consumer timeout) is reported, not fatal: the message
        // comes again.
        if let Err(e) = task.ack().await {
            eprintln!(" [!] {e}");
        }
        // ANCHOR_END: ack
        done += 1;
    }
    println!(" [*] Stopped after {done} task(s)");
    // ANCHOR_END: consume
    Ok(())
}
// ANCHOR_END: work
// ANCHOR_END: code
