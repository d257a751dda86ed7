//! Work queues, the worker: takes tasks from `task_queue` one at a time and
//! "works" one second per `.` in each, then acknowledges it. Start several
//! and the tasks are shared between them.
//!
//! Shows: prefetch 1 (fair dispatch), acknowledging only after the work is
//! done (a worker killed half-way loses nothing: its task goes to another),
//! and a graceful stop: Ctrl-C lets the task in progress finish (and be
//! acknowledged) before the program exits, so no task is done twice.
//!
//! ```text
//! terminal 1$ cargo run --example worker
//! terminal 2$ cargo run --example worker
//! terminal 3$ cargo run --example new_task First message.
//! terminal 3$ cargo run --example new_task Second message..
//! ```
//!
//! A task whose handler fails is retried once, then dropped (this queue has
//! no dead-letter exchange). Stop it with Ctrl-C: the task in progress gets
//! up to 30 s to finish. The queue is the official tutorials' `task_queue`
//! (durable quorum queue), so this works with their `new_task.py`;
//! `TASK_QUEUE=name` makes it work on another queue (the tests use it).
//! Chapter "Work queues" of the book.

// ANCHOR: code
use std::convert::Infallible;
use std::time::Duration;

use rabbitkit::{Client, Options, Report, Shutdown, WorkQueue};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Report> {
    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    // ANCHOR: shutdown
    // Ctrl-C: take no new task, give the one in progress 30 s to finish.
    let shutdown = Shutdown::on_ctrl_c(Duration::from_secs(30));
    work(&client, &shutdown).await?;
    client.close().await; // the last acks are sent before it closes
    // ANCHOR_END: shutdown
    Ok(())
}

// ANCHOR: work
async fn work(client: &Client, shutdown: &Shutdown) -> Result<(), Error> {
    let queue = std::env::var("TASK_QUEUE").unwrap_or_else(|_| "task_queue".into());
    let tasks = WorkQueue::<String>::builder(queue)
        .prefetch(1)
        .declare(client)
        .await?;
    println!(" [*] Waiting for messages. To exit press CTRL+C");

    // Each task is acknowledged when the handler returns Ok.
    let report = tasks
        .work_until(shutdown, |task: String| async move {
            println!(" [x] Received '{task}'");
            let dots = task.matches('.').count() as u64;
            tokio::time::sleep(Duration::from_secs(dots)).await;
            println!(" [x] Done");
            Ok::<(), Infallible>(())
        })
        .await?;
    println!(" [*] Stopped after {} task(s)", report.acked);
    Ok(())
}
// ANCHOR_END: work
// ANCHOR_END: code
