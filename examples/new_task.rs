//! Work queues, the producer: submits one task to the durable queue
//! `task_queue`. Each `.` in the task stands for one second of work.
//!
//! Shows: a durable (quorum) work queue, persistent messages, confirms.
//! The producer sets no prefetch: that is a consumer's setting.
//!
//! ```text
//! terminal 1$ cargo run --example worker
//! terminal 2$ cargo run --example worker
//! terminal 3$ cargo run --example new_task First message.
//! terminal 3$ cargo run --example new_task Second message..
//! terminal 3$ cargo run --example new_task Third message...
//! ```
//!
//! The task is the command line's words (default `Hello World!`). The queue
//! matches the official tutorials' `task_queue` (durable quorum queue:
//! `durable=True, arguments={'x-queue-type': 'quorum'}`), so this works with
//! their `worker.py`. Chapter "Work queues" of the book.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.
//!
//! Expected output:
//!
//! ```text
//! $ cargo run --example new_task First message.
//!  [x] Sent 'First message.'
//! ```

// ANCHOR: code
use rabbitkit::{Options, Report, WorkQueue};

#[tokio::main]
async fn main() -> Result<(), Report> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let message = if args.is_empty() {
        "Hello World!".to_string()
    } else {
        args.join(" ")
    };

    // ANCHOR: connect
    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    // ANCHOR_END: connect
    // ANCHOR: declare
    // The official tutorials' `task_queue`: a durable quorum queue. (How
    // many tasks a worker takes at once, the prefetch, is the worker's
    // business: nothing to say here.)
    let tasks = WorkQueue::<String>::builder("task_queue")
        .declare(&client)
        .await?;
    // ANCHOR_END: declare
    // ANCHOR: submit
    // Persistent, and returns once the broker has confirmed it.
    tasks.submit(&message).await?;
    println!(" [x] Sent '{message}'");
    // ANCHOR_END: submit

    client.close().await;
    Ok(())
}
// ANCHOR_END: code
