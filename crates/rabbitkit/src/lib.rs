//! # rabbitkit
//!
//! RabbitMQ's messaging patterns, typed and hard to misuse, on a connection
//! that survives the loss of a cluster node.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use rabbitkit::{Exchange, Options, TopicPattern};
//! use futures::StreamExt;
//!
//! let client = Options::new().connect_env().await?;            // AMQP_ADDR, comma-separated
//! let logs = Exchange::topic("topic_logs").durable(false).declare(&client).await?;
//! let mut sub = logs.subscribe::<String>(&["kern.*".parse()?]).await?;
//! logs.publish("kern.critical", &"A critical kernel error".to_string()).await?;
//! let msg = sub.next().await.unwrap()?;
//! println!(" [x] {}:{}", msg.routing_key(), msg.body);
//! msg.ack().await?;
//! # Ok(()) }
//! ```
//!
//! ## The seven patterns
//! | pattern | types |
//! |---|---|
//! | point-to-point | [`Queue::send`], [`Queue::subscribe`] |
//! | work queue | [`WorkQueue`]: quorum queue, persistent, prefetch, ack on success, one retry |
//! | publish/subscribe | [`Exchange<Fanout>`] |
//! | routing | [`Exchange<Direct>`] |
//! | topics | [`Exchange<Topic>`] with [`TopicPattern`] |
//! | headers | [`Exchange<HeadersKind>`] with [`HeadersMatch`] |
//! | RPC | [`RpcServer`], [`RpcClient`] |
//!
//! Past what one queue does (one core of one node): streams
//! ([`Queue::stream`], read from any [`StreamOffset`]) and partitioned work
//! queues ([`PartitionedQueue`]: publish by key, order kept per key, the
//! partitions' leaders spread over the nodes).
//!
//! ## Defaults: a confirmed message is never lost
//! **Everything you name is durable, and a named queue is a quorum queue;
//! temporary queues are exclusive; every message is persistent and
//! confirmed.** On RabbitMQ 4 (no more mirrored classic queues; transient
//! non-exclusive queues deprecated) this is what makes a publish that
//! returned `Ok` survive a broker restart and the loss of a node:
//!
//! - [`Queue::named`], [`Queue::durable`], [`WorkQueue::builder`] and
//!   [`RpcServer::builder`] declare a durable quorum queue: exactly what the
//!   official tutorials declare for `hello`, `task_queue` and `rpc_queue`
//!   (`durable=True, arguments={'x-queue-type': 'quorum'}`).
//!   [`QueueBuilder::classic`] keeps a (durable) classic queue; an
//!   exclusive or auto-delete queue is classic.
//! - [`Queue::temporary`] (and every exchange subscriber's queue) is
//!   exclusive and auto-delete, with a client-generated name.
//! - A queue that is neither durable nor exclusive is refused with
//!   [`DeclareError::Invalid`] before it reaches the broker (RabbitMQ 4
//!   deprecates them, 4.3.0 refused them by default), unless made with the
//!   deprecated [`Queue::transient`], for programs that must share one with
//!   old declarations. A broker that denies the deprecated feature (as
//!   RabbitMQ 4.3.0 did by default) closes the whole connection for such a
//!   declaration (`541`): rabbitkit then returns
//!   [`DeclareError::Deprecated`], does not record the declaration, and
//!   reconnects.
//! - Exchanges are durable; [`ExchangeBuilder::durable`]`(false)` declares
//!   the tutorials' non-durable `logs`, `direct_logs`, `topic_logs` (and
//!   the book's `headers_logs`).
//! - A publish is mandatory unless it goes to a fanout exchange: to a
//!   queue, a direct, topic or headers exchange, or a partitioned queue, a
//!   message no queue takes fails with `PublishError::Unroutable`
//!   ([`SendError::is_unroutable`]) instead of vanishing;
//!   [`PublishOptions::mandatory`]`(false)` opts out. A fanout exchange
//!   drops what nobody subscribed to, as the tutorials' `emit_log` expects.
//!   (A delayed publish is checked when it enters its delay, not when it is
//!   delivered.)
//! - Messages are persistent (delivery mode 2) in every pattern, whatever
//!   the exchange's or queue's durability, and every publish waits for the
//!   broker's confirm; [`PublishOptions::persistent`]`(false)` opts out. RPC
//!   requests and replies are the exception: short-lived by design, they
//!   are transient (see [`RpcClient`]).
//! - A failed task is retried once: a copy goes to the tail of its queue
//!   with the header [`RETRIES_HEADER`] counting the retry, then the
//!   original is acknowledged; the count travels in the message, so a
//!   redelivery after a failover does not use the retry up. When the retry
//!   fails too, the task is parked in `<queue>.parked` with its last error
//!   and attempt count (the default [`OnError`]; with a dead-letter
//!   exchange, [`OnError::RequeueOnce`] dead-letters it instead): nothing is
//!   dropped unless [`OnError::Drop`] says so. A handler that panics is a
//!   failed task like any other.
//!
//! ```
//! use rabbitkit::{Exchange, Queue};
//! let hello = Queue::named("hello").build()?;
//! assert!(hello.durable && !hello.exclusive);
//! assert_eq!(hello.arguments.inner().len(), 1); // x-queue-type: quorum
//! assert!(Exchange::fanout("audit").build()?.durable);
//! assert!(Queue::named("scratch").durable(false).build().is_err());
//! # Ok::<(), rabbitkit::DeclareError>(())
//! ```
//!
//! ## Services: concurrency, graceful stop, routing, health
//! A worker runs one handler at a time unless asked for more:
//! [`WorkQueueBuilder::concurrency`] (or [`HandleOptions::concurrency`] for
//! any [`Subscription`]) keeps up to `n` handlers in flight on one consumer,
//! and [`WorkQueue::work_parallel`] runs several consumers on several Tokio
//! tasks for CPU-bound handlers. A [`Shutdown`] stops a handler loop
//! cleanly ([`WorkQueue::work_until`], [`Subscription::handle_with`],
//! [`Router::run`], [`RpcServer::serve_until`]): the consumer is cancelled,
//! unstarted deliveries go back to the queue, handlers in progress finish
//! up to a deadline. A [`Router`] dispatches the messages of one queue to
//! typed handlers by routing key or `type`. [`Client::health`] tells a
//! readiness probe whether the client is [`Health::Connected`], blocked by
//! a broker alarm, recovering or closed, without a network round trip.
//!
//! Handlers return `Result<(), `[`Report`]`>`: a closure's `Ok(())` needs no
//! type annotation, and `?` takes any error (see [`Report`] for a handler
//! with an error type of its own). [`RpcServer`] and [`RpcClient`] take the
//! same type parameters, the error type `String` unless given:
//!
//! ```no_run
//! # async fn run(client: rabbitkit::Client) -> Result<(), rabbitkit::Report> {
//! use rabbitkit::{HandleOptions, Queue, Router, RpcClient, RpcServer, WorkQueue};
//! let orders = Queue::named("orders").declare(&client).await?;
//! let router = Router::new()
//!     .route("order.placed", |id: u64| async move {
//!         println!("placed {id}");
//!         Ok(())
//!     })
//!     .route("order.cancelled", |id: u64| async move {
//!         let reason = std::str::from_utf8(b"changed my mind")?;
//!         println!("cancelled {id}: {reason}");
//!         Ok(())
//!     });
//! let routing = router.run(&orders, HandleOptions::new().concurrency(4));
//! let reminders = WorkQueue::<String>::builder("reminders").declare(&client).await?;
//! let working = reminders.work(|text: String| async move {
//!     println!("{text}");
//!     Ok(())
//! });
//! let quotes = RpcServer::<u64, u64>::builder("price_quote").declare(&client).await?;
//! let serving = quotes.serve(|item: u64| async move { Ok(item * 100) });
//! let quote = RpcClient::<u64, u64>::builder("price_quote").build(&client).await?;
//! let (_, _, _, price) = tokio::join!(routing, working, serving, quote.call(&7));
//! println!("{}", price?);
//! # Ok(()) }
//! ```
//!
//! An RPC handler's error is the server's error type (`String` by
//! default), sent to the caller: another type does not compile.
//!
//! ```compile_fail,E0271
//! # async fn run(client: rabbitkit::Client) -> Result<(), rabbitkit::Report> {
//! let quotes = rabbitkit::RpcServer::<u64, u64>::builder("price_quote").declare(&client).await?;
//! quotes.serve(|item: u64| async move { Err(std::io::Error::other("no price")) }).await?;
//! # Ok(()) }
//! ```
//!
//! ## Declarations are checked
//! Names, routing keys and patterns are checked before anything reaches the
//! network. Declaring what exists with the same properties changes nothing;
//! with other properties it fails with [`DeclareError::Inequivalent`], which
//! names the argument, what you asked for and what the broker has. The
//! connection survives: declarations run on a channel of their own.
//!
//! ## Bodies
//! `serde` types travel as JSON, strings as plain text and numbers as their
//! decimal digits, so rabbitkit programs work with programs written with
//! other AMQP clients; see [`codec`].
//!
//! ## Traces and metrics
//! Two cargo features, off by default. `opentelemetry`: W3C trace context
//! (`traceparent`, `tracestate`) written on every publish and RPC request
//! and read on every delivery (`Delivery::trace_context`), a span per
//! publish (ended at the confirm), per handled delivery (the handler loops
//! above, [`RpcServer`] included) and per [`RpcClient::call`]; see
//! `rabbitkit::core::trace`. `metrics`: counters and histograms through
//! the `metrics` facade, labelled by exchange or queue; every name is
//! listed in [`core::metrics`].
//!
//! ## Layout
//! - `exchange.rs` — [`Exchange<K>`] and the kinds ([`Direct`], [`Fanout`], [`Topic`], [`HeadersKind`]):
//!   one generic implementation; each [`Kind`] names what it binds with and
//!   routes by, and checks them.
//! - `binding.rs` — [`TopicPattern`], [`HeadersMatch`], [`Headers`].
//! - `queue.rs` — [`Queue`], [`QueueBuilder`]; point-to-point; streams
//!   ([`Queue::stream`], [`Queue::subscribe_stream`], [`StreamOffset`]).
//! - `work_queue.rs` — [`WorkQueue`].
//! - `partitioned.rs` — [`PartitionedQueue`]: `N` quorum queues behind a
//!   hash exchange (`x-modulus-hash` on RabbitMQ 4.3, `x-consistent-hash`
//!   before), a single active consumer each; order per key.
//! - `rpc.rs` and `rpc/` — request/reply: `rpc/client.rs` ([`RpcClient`],
//!   on the core's `RecoveredChannel`: requests and replies on one channel,
//!   reopened after a failover), `rpc/server.rs` ([`RpcServer`], handlers on
//!   typed [`Request`]s), `rpc/error.rs` ([`RpcError`]).
//! - `message.rs` — [`Received`], [`Incoming`], [`Subscription`], [`PublishOptions`].
//! - `engine.rs` — the handler engine: [`HandleOptions`], the handler loop
//!   (handlers in flight, panics, the graceful stop), settlement and the
//!   failure policy ([`OnError`], [`RetryPolicy`], [`HandleReport`]).
//! - `shutdown.rs` — [`Shutdown`]: the graceful stop.
//! - `router.rs` — [`Router`]: several typed handlers on one subscription.
//! - `instrument.rs` — each handler in its delivery's span, timed (the
//!   `opentelemetry` and `metrics` features).
//! - `codec.rs` — JSON / text bodies, gzip.
//! - `names.rs` — name and routing-key checks.
//! - `error.rs` — [`SendError`], [`SubscribeError`], [`ReceiveError`].
//! - `report.rs` — [`Report`], an error for `main` that prints sentences, and the error every handler returns.
//!
//! The connection, failover and recovery live in `rabbitkit-core`,
//! re-exported here ([`Options`], [`Client`], [`Event`], ...).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

mod binding;
pub mod codec;
mod engine;
mod error;
mod exchange;
mod instrument;
pub mod message;
pub mod names;
mod partitioned;
mod queue;
mod report;
mod router;
mod rpc;
mod shutdown;
mod work_queue;

pub use binding::{HeaderValue, Headers, HeadersMatch, MAX_HASHES, MatchMode, TopicPattern};
pub use engine::HandleOptions;
pub use error::{ReceiveError, SendError, SubscribeError};
pub use exchange::{
    Direct, Exchange, ExchangeBuilder, Fanout, FanoutBody, HeadersKind, Kind, Selective, Topic,
};
pub use message::{
    ATTEMPTS_HEADER, HandleReport, Incoming, MAX_IN_QUEUE_RETRIES, OnError, PARKED_ERROR_HEADER,
    PARKED_FROM_HEADER, PARKED_SUFFIX, PublishOptions, RETRIES_HEADER, Received, RetryPolicy,
    Subscription,
};
pub use partitioned::{
    CONSISTENT_HASH, LEADER_LOCATOR, MAX_PARTITIONS, MODULUS_HASH, PartitionedQueue,
    PartitionedQueueBuilder, partition_name,
};
pub use queue::{Queue, QueueBuilder, QueueType};
pub use report::Report;
pub use router::{Handler, Router};
pub use rpc::{
    DEFAULT_TIMEOUT, DIRECT_REPLY_TO, ERROR_HEADER, Request, RpcClient, RpcClientBuilder, RpcError,
    RpcServer, RpcServerBuilder, ServeReport,
};
pub use shutdown::Shutdown;
pub use work_queue::{
    BROKER_CONSUMER_TIMEOUT, DEFAULT_PREFETCH, DEFAULT_WARN_SHARE, WorkQueue, WorkQueueBuilder,
};

/// The connection layer, for what the patterns do not cover.
pub use rabbitkit_core as core;
pub use rabbitkit_core::validate::ValidationError;
pub use rabbitkit_core::{
    AMQPValue, AckError, Backoff, BasicProperties, Cause, ChannelError, Client, ClientCertError,
    Confirmed, ConnectError, ConsumeError, ConsumeOptions, Consumer, DeclareError, Delivery,
    Endpoint, EndpointOrder, Event, FieldTable, Health, Options, OutgoingMessage, PublishError,
    Publisher, QueueInfo, STREAM_DEFAULT_PREFETCH, ServerInfo, Stats, StreamOffset, Timings,
    Version, endpoints_from_env,
};

/// The crate's modules import each other without a cycle (see
/// `rabbitkit_test::module_graph`): the handler engine (`engine.rs`) sits
/// under the typed layers, never beside them.
#[cfg(test)]
mod module_graph {
    #[test]
    fn the_modules_import_each_other_without_a_cycle() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let (cycle, graph) = rabbitkit_test::module_graph::cycle_in(&dir);
        assert!(graph.len() > 10, "read {} files from {dir:?}", graph.len());
        assert_eq!(cycle, None, "the imports: {graph:#?}");
        assert!(
            graph["engine"]
                .iter()
                .all(|m| m == "instrument" || m == "shutdown" || m == "report"),
            "the engine imports only the instrumentation, the stop signal and the handlers' error: {:?}",
            graph["engine"]
        );
    }
}
