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
//! let logs = Exchange::topic("topic_logs").declare(&client).await?;
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
//! | work queue | [`WorkQueue`]: durable, persistent, prefetch, ack on success |
//! | publish/subscribe | [`Exchange<Fanout>`] |
//! | routing | [`Exchange<Direct>`] |
//! | topics | [`Exchange<Topic>`] with [`TopicPattern`] |
//! | headers | [`Exchange<HeadersKind>`] with [`HeadersMatch`] |
//! | RPC | [`RpcServer`], [`RpcClient`] |
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
//! ## Layout
//! - `exchange.rs` — [`Exchange<K>`] and the kinds ([`Direct`], [`Fanout`], [`Topic`], [`HeadersKind`]).
//! - `binding.rs` — [`TopicPattern`], [`HeadersMatch`], [`Headers`].
//! - `queue.rs` — [`Queue`], [`QueueBuilder`]; point-to-point.
//! - `work_queue.rs` — [`WorkQueue`].
//! - `rpc.rs` — [`RpcServer`], [`RpcClient`].
//! - `message.rs` — [`Received`], [`Subscription`], [`PublishOptions`], [`OnError`].
//! - `codec.rs` — JSON / text bodies, gzip.
//! - `names.rs` — name and routing-key checks.
//! - `error.rs` — [`SendError`], [`SubscribeError`], [`ReceiveError`].
//!
//! The connection, failover and recovery live in `rabbitkit-core`,
//! re-exported here ([`Options`], [`Client`], [`Event`], ...).
#![deny(missing_docs)]

mod binding;
pub mod codec;
mod error;
mod exchange;
pub mod message;
pub mod names;
mod queue;
mod rpc;
mod work_queue;

pub use binding::{HeaderValue, Headers, HeadersMatch, MatchMode, TopicPattern};
pub use error::{ReceiveError, SendError, SubscribeError};
pub use exchange::{Direct, Exchange, ExchangeBuilder, Fanout, HeadersKind, Kind, Topic};
pub use message::{HandleReport, OnError, PublishOptions, Received, Subscription};
pub use queue::{Queue, QueueBuilder, QueueType};
pub use rpc::{
    DEFAULT_TIMEOUT, DIRECT_REPLY_TO, ERROR_HEADER, RpcClient, RpcClientBuilder, RpcError,
    RpcServer, RpcServerBuilder, ServeReport,
};
pub use work_queue::{DEFAULT_PREFETCH, WorkQueue, WorkQueueBuilder};

/// The connection layer, for what the patterns do not cover.
pub use rabbitkit_core as core;
pub use rabbitkit_core::{
    AMQPValue, AckError, Backoff, BasicProperties, ChannelError, Client, Confirmed, ConnectError,
    ConsumeError, ConsumeOptions, Consumer, DeclareError, Delivery, Endpoint, EndpointOrder, Event,
    FieldTable, Options, OutgoingMessage, PublishError, Publisher, QueueInfo, Stats,
    endpoints_from_env,
};
