//! RPC, the server: answers Fibonacci requests from the queue `rpc_queue`
//! until Ctrl-C.
//!
//! Shows: `RpcServer`, which takes typed requests, runs a handler and
//! replies to each request's `reply_to` with its `correlation_id`. Requests
//! and replies are decimal numbers, as in the official tutorials, so this
//! server answers their `rpc_client.py` too. Its queue is theirs: `rpc_queue`,
//! a durable quorum queue (`durable=True, arguments={'x-queue-type': 'quorum'}`).
//!
//! ```text
//! terminal 1$ cargo run --example rpc_server
//! terminal 2$ cargo run --example rpc_client 30
//! ```
//!
//! Chapter "RPC" of the book.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.
//!
//! Expected output:
//!
//! ```text
//! $ cargo run --example rpc_server   (then `rpc_client 30`)
//!  [x] Awaiting RPC requests
//!  [.] fib(30)
//! ```

// ANCHOR: code
use std::time::Duration;

use rabbitkit::{Client, Options, Report, RpcServer, Shutdown};

type Error = Box<dyn std::error::Error + Send + Sync>;

// ANCHOR: fib
/// The n-th Fibonacci number, or `None` when it does not fit in a u64.
fn fib(n: u64) -> Option<u64> {
    if n == 0 {
        return Some(0);
    }
    let (mut a, mut b) = (0u64, 1u64); // fib(0), fib(1)
    for _ in 1..n {
        (a, b) = (b, a.checked_add(b)?);
    }
    Some(b)
}
// ANCHOR_END: fib

#[tokio::main]
async fn main() -> Result<(), Report> {
    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    // Ctrl-C, or SIGTERM from a deploy: take no new request, answer the ones in progress (up to 10 s).
    let shutdown = Shutdown::on_signals(Duration::from_secs(10));
    serve(&client, &shutdown).await?;
    client.close().await;
    Ok(())
}

// ANCHOR: serve
async fn serve(client: &Client, shutdown: &Shutdown) -> Result<(), Error> {
    // ANCHOR: declare
    // Requests are u64, replies are u64, errors are String.
    let server = RpcServer::<u64, u64>::builder("rpc_queue")
        .prefetch(1)
        .declare(client)
        .await?;
    println!(" [x] Awaiting RPC requests");
    // ANCHOR_END: declare

    // ANCHOR: handler
    server
        .serve_until(shutdown, |n: u64| async move {
            println!(" [.] fib({n})");
            fib(n).ok_or_else(|| format!("fib({n}) does not fit in 64 bits"))
        })
        .await?;
    // ANCHOR_END: handler
    Ok(())
}
// ANCHOR_END: serve
// ANCHOR_END: code
