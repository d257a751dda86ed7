//! # rabbitkit-core
//!
//! The connection half of [rabbitkit](https://docs.rs/rabbitkit): one AMQP
//! connection to a RabbitMQ cluster, many channels on it, failover to the
//! next node when the one in use dies, and recovery that loses no confirmed
//! message. Applications normally use the `rabbitkit` crate, which
//! re-exports what they need from here.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use rabbitkit_core::{ConsumeOptions, Options, OutgoingMessage};
//! use futures::StreamExt;
//!
//! let client = Options::new()
//!     .connect("amqp://guest:guest@127.0.0.1:5672/%2f,amqp://guest:guest@127.0.0.1:5673/%2f")
//!     .await?;
//! client.publish(OutgoingMessage::new("", "hello", b"hi".to_vec())).await?;
//! let mut consumer = client.consume("hello", ConsumeOptions::new()).await?;
//! while let Some(delivery) = consumer.next().await {
//!     let delivery = delivery?;
//!     println!("{:?}", String::from_utf8_lossy(delivery.body()));
//!     delivery.ack().await?;
//! }
//! # Ok(()) }
//! ```
//!
//! ## What recovery does
//! When the connection is lost (IO error, missed heartbeats, the broker
//! closing it, the node killed), the supervisor:
//! 1. reports [`Event::Disconnected`] and connects to the *next* endpoint at
//!    once, then backs off ([`Backoff`]) while endpoints keep failing;
//! 2. re-opens the channel pool (confirm mode, prefetch applied);
//! 3. re-declares every recorded exchange, queue and binding, in that order;
//! 4. re-subscribes every consumer and checks with the broker that its queue
//!    has consumers again;
//! 5. reports [`Event::Recovered`], and publishes that were interrupted are
//!    sent again with the same `message_id`.
//!
//! Bad credentials and a missing virtual host stop at once with a
//! [`ConnectError`] that says so: retrying cannot fix them.
//!
//! ## Layout
//! A file per concept:
//! - `options.rs` — [`Options`], every default in one place; [`Backoff`], [`EndpointOrder`].
//! - `endpoint.rs` — [`Endpoint`]: URL parsing; `Debug`/`Display` hide the password.
//! - `connection.rs` — [`Client`], the handle applications hold.
//! - `supervisor.rs` — the task that connects, fails over and recovers.
//! - `channels.rs` — the channel pool; replaces channels closed by channel errors.
//! - `topology.rs` — [`Declaration`]s recorded for replay; the broker's
//!   `inequivalent arg` text parsed into [`DeclareError::Inequivalent`].
//! - `publisher.rs` — [`Publisher`]: confirms, the in-flight window, re-publishing.
//! - `consumer.rs` — [`Consumer`] streams that survive failover; [`Delivery`].
//! - `acks.rs` — acknowledgements, coalesced into `multiple` acks.
//! - `events.rs` — [`Event`].
//! - `error.rs` — one error type per operation.
#![deny(missing_docs)]

mod acks;
mod channels;
mod connection;
mod consumer;
mod endpoint;
mod error;
mod events;
mod options;
mod publisher;
mod supervisor;
mod topology;

pub use connection::{Client, Health, QueueInfo, Stats};
pub use consumer::{ConsumeOptions, Consumer, Delivery};
pub use endpoint::{Endpoint, ToEndpoints};
pub use error::{
    AckError, ChannelError, ConnectError, ConsumeError, DeclareError, EndpointError, PublishError,
};
pub use events::Event;
pub use options::{Backoff, EndpointOrder, LOCAL_CLUSTER, Options, endpoints_from_env};
pub use publisher::{Confirmed, OutgoingMessage, Publisher};
pub use topology::{
    BindingSpec, Declaration, ExchangeSpec, ExchangeType, QueueSpec, parse_inequivalent,
};

/// lapin itself, for what rabbitkit does not wrap.
pub use lapin;
/// The lapin types that appear in rabbitkit's API.
pub use lapin::BasicProperties;
pub use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
