//! Work queues, the worker: takes tasks from `task_queue` one at a time and
//! "works" one second per `.` in each, then acknowledges it. Start several
//! and the tasks are shared between them.
//!
//! Shows: prefetch 1 (fair dispatch), acknowledging only after the work is
//! done (a worker killed half-way loses nothing: its task goes to another).
//!
//! ```text
//! terminal 1$ cargo run --example worker
//! terminal 2$ cargo run --example worker
//! terminal 3$ cargo run --example new_task First message.
//! terminal 3$ cargo run --example new_task Second message..
//! ```
//!
//! A task whose handler fails is retried once, then dropped (this queue has
//! no dead-letter exchange). Stop it with Ctrl-C. The queue is the official
//! tutorials' `task_queue` (durable quorum queue), so this works with their
//! `new_task.py`.
//! Chapter "Work queues" of the book.

// ANCHOR: code
use std::convert::Infallible;
use std::io::Write;
use std::time::Duration;

use rabbitkit::{Client, Options, WorkQueue};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let client = Options::new().connect_env().await?;
    tokio::select! {
        result = work(&client) => result?,
        _ = tokio::signal::ctrl_c() => {}
    }
    client.close().await;
    Ok(())
}

// ANCHOR: work
async fn work(client: &Client) -> Result<(), Error> {
    let tasks = WorkQueue::<String>::builder("task_queue")
        .prefetch(1)
        .declare(client)
        .await?;
    println!(" [*] Waiting for messages. To exit press CTRL+C");

    // Each task is acknowledged when the handler returns Ok.
    tasks
        .work(|task: String| async move {
            println!(" [x] Received '{task}'");
            let _ = std::io::stdout().flush();
            let dots = task.matches('.').count() as u64;
            tokio::time::sleep(Duration::from_secs(dots)).await;
            println!(" [x] Done");
            let _ = std::io::stdout().flush();
            Ok::<(), Infallible>(())
        })
        .await?;
    Ok(())
}
// ANCHOR_END: work
// ANCHOR_END: code
