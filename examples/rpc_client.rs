//! RPC, the client: asks the server on `rpc_queue` for a Fibonacci number
//! and prints the reply.
//!
//! Shows: `RpcClient`, which sends a typed request with `reply_to` and a
//! `correlation_id` and waits (with a timeout) for the matching reply on
//! RabbitMQ's direct reply-to. The request and the reply are decimal
//! numbers, as in the official tutorials, so this client works with their
//! `rpc_server.py` too (whose `rpc_queue` is a durable quorum queue, as
//! `rpc_server`'s). Requests are transient and expire with the call's
//! timeout: a caller that gave up does not want them served later.
//!
//! ```text
//! terminal 1$ cargo run --example rpc_server
//! terminal 2$ cargo run --example rpc_client 30
//! ```
//!
//! Arguments: `[N]`, default 30. Chapter "RPC" of the book.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.
//!
//! Expected output:
//!
//! ```text
//! $ cargo run --example rpc_client 30   (with `rpc_server` running)
//!  [x] Requesting fib(30)
//!  [.] Got 832040
//! ```

// ANCHOR: code
use rabbitkit::{Options, Report, RpcClient, RpcError};

#[tokio::main]
async fn main() -> Result<(), Report> {
    let n: u64 = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 30,
    };

    let client = Options::new()
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    // ANCHOR: build
    // Requests and replies are u64; the requests go to `rpc_queue`.
    let fibonacci = RpcClient::<u64, u64>::builder("rpc_queue")
        .build(&client)
        .await?;
    // ANCHOR_END: build
    // ANCHOR: call
    println!(" [x] Requesting fib({n})");
    match fibonacci.call(&n).await {
        Ok(answer) => println!(" [.] Got {answer}"),
        Err(RpcError::Server(message)) => println!(" [.] The server says: {message}"),
        Err(RpcError::Unroutable { .. }) => {
            println!(" [.] There is no rpc_queue: start rpc_server")
        }
        Err(RpcError::Timeout(after)) => {
            println!(" [.] No reply within {after:?}: is rpc_server running?")
        }
        Err(e) => return Err(e.into()),
    }
    // ANCHOR_END: call

    client.close().await;
    Ok(())
}
// ANCHOR_END: code
