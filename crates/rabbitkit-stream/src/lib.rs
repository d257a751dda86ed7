//! RabbitMQ streams over the **stream protocol**, typed, with failover.
//!
//! rabbitkit reads and writes streams over AMQP 0-9-1 too
//! (`Queue::stream`); this crate speaks the stream protocol (port 5552, the
//! `rabbitmq_stream` plugin) through the official client,
//! [`rabbitmq-stream-client`](https://docs.rs/rabbitmq-stream-client), and
//! adds what that client leaves to the application. Tested on RabbitMQ
//! 4.3 and 3.10 (super streams and single active consumer need 3.11,
//! filtering and declaring super streams 3.13), with a node of the cluster
//! killed mid-publish on both. It uses a patched copy of that client (the
//! workspace's `vendor/`: the published 0.11 cannot connect to 3.10, fails
//! on entries that are not AMQP 1.0 and cannot publish filter values), so
//! it is not published to crates.io yet.
//!
//! - **Failover.** A producer or consumer whose connection dies (a node
//!   killed, a leader moved) reconnects with back-off over the endpoint
//!   list, finds the stream's leader (producers) or a replica (consumers)
//!   again in the metadata, and goes on: a named producer's confirmed
//!   messages are stored once (0 lost, 0 duplicated when the leader's node
//!   is SIGKILLed mid-publish), the consumer reads on without gap or
//!   repeat. A stream deleted meanwhile ends both with
//!   [`ErrorKind::StreamNotFound`].
//! - **Deduplication by name.** A [`StreamProducer`] has a name; every
//!   message gets the next publishing id of that name, and after a failure
//!   the unconfirmed ones are re-sent with the same ids. The broker drops
//!   the ids it has: a confirmed message is stored once.
//! - **Offsets on the server.** A named [`StreamConsumer`] stores the offset
//!   of the last processed message every N messages, every T seconds and
//!   when closed, and resumes after it when started again.
//! - **Super streams** (see [below](#super-streams)): a partitioned stream
//!   declared as one [`SuperStreamSpec`], a [`SuperStreamProducer`] routing
//!   by key, a [`SuperStreamConsumer`] with single active consumer per
//!   partition.
//! - **Filtering** (RabbitMQ 3.13+): a producer's filter values
//!   ([`ProducerBuilder::filter_value`]) and a consumer's [`ConsumerFilter`],
//!   with the client-side post-filter the Bloom filter needs.
//! - **TLS**: `rabbitmq-stream+tls://` endpoints (port 5551 by default),
//!   the server checked against [`StreamOptions::tls_ca_file`] or the
//!   system's CA bundle, a client certificate with
//!   [`StreamOptions::tls_identity`]; a failed handshake is an
//!   [`ErrorKind::Tls`] error at once.
//! - **Typed bodies** with rabbitkit's codec (strings as text, anything
//!   else as JSON), **typed errors** ([`ErrorKind`]), **events**
//!   ([`StreamEvent`]) and an [`StreamOptions`] builder whose endpoints
//!   never show their password.
//!
//! ```no_run
//! use futures::StreamExt;
//! use rabbitkit_stream::{OffsetSpec, StreamOptions, StreamSpec};
//!
//! # async fn f() -> Result<(), rabbitkit_stream::Error> {
//! let client = StreamOptions::new()
//!     .connect("rabbitmq-stream://guest:guest@127.0.0.1:5552")
//!     .await?;
//! client.declare_stream(StreamSpec::new("hello-stream")).await?;
//!
//! let producer = client.producer::<String>("hello-stream", "greeter").build().await?;
//! producer.send(&"Hello, World!".to_string()).await?; // confirmed
//!
//! let mut consumer = client
//!     .consumer::<String>("hello-stream")
//!     .name("reader")
//!     .offset(OffsetSpec::First)
//!     .build()
//!     .await?;
//! if let Some(msg) = consumer.next().await {
//!     let msg = msg?;
//!     println!("{} at offset {}", msg.body, msg.offset);
//! }
//! consumer.close().await?; // stores the offset under "reader"
//! # Ok(()) }
//! ```
//!
//! ## Super streams
//!
//! A super stream `invoices` of 3 partitions is the streams `invoices-0`,
//! `invoices-1`, `invoices-2` behind an exchange `invoices`. Each message
//! goes to the partition of its routing key: by default
//! ([`Routing::Hash`]) the murmur3 hash of the key the Java, .NET, Go and
//! Rust stream clients use ([`hash_partition`]), so rabbitkit-stream and
//! their applications agree on a key's partition; or ([`Routing::Key`]) the partitions the exchange
//! binds to the key. The messages of one key keep their order.
//!
//! ```no_run
//! use futures::StreamExt;
//! use rabbitkit_stream::{StreamClient, SuperStreamSpec};
//!
//! # async fn f(client: StreamClient) -> Result<(), rabbitkit_stream::Error> {
//! client.declare_super_stream(SuperStreamSpec::new("invoices", 3)).await?;
//! let producer = client
//!     .super_stream_producer::<String>("invoices", "billing")
//!     .build()
//!     .await?;
//! producer.send("customer-42", &"invoice 1".to_string()).await?;
//!
//! // Consumers named "accounting" share the partitions, one active per
//! // partition; when one closes, another takes its partitions over.
//! let mut consumer = client
//!     .super_stream_consumer::<String>("invoices")
//!     .name("accounting")
//!     .single_active(true)
//!     .build()
//!     .await?;
//! while let Some(msg) = consumer.next().await {
//!     let msg = msg?;
//!     println!("{} from {} at {}", msg.body, msg.partition, msg.offset);
//! }
//! # Ok(()) }
//! ```
//!
//! Bad input is refused with an [`ErrorKind`]: no partition or more than
//! [`MAX_PARTITIONS`], a repeated binding key or a name over 255 bytes
//! (`InvalidInput`, before the network); a super stream that exists with
//! other partitions (`Refused`); a key no partition is bound to
//! (`Unroutable`, nothing sent); a producer name open twice on a stream in
//! one process (`ProducerNameInUse`: the broker would accept it and drop
//! one producer's messages as duplicates); a filter or filter values on a
//! broker without
//! filtering (`FilteringUnsupported`, from the command versions the broker
//! announces); super streams on a broker before 3.11/3.13
//! (`SuperStreamsUnsupported`, from its version).
//!
//! ## Layout
//! - `options.rs` — [`StreamOptions`], [`Endpoint`] (redacted), [`ToEndpoints`].
//! - `client.rs` — [`StreamClient`]: declarations, and the one place that
//!   connects to a node and locates a stream's leader or replicas.
//! - `producer.rs` — [`StreamProducer`]: ids, batching, confirms, re-sends.
//! - `consumer.rs` — [`StreamConsumer`]: offsets, storage, single active consumer.
//! - `super_stream.rs` — [`SuperStreamSpec`], [`SuperStreamProducer`] and its
//!   [`Routing`], [`SuperStreamConsumer`].
//! - `filter.rs` — [`ConsumerFilter`] and the post-filter.
//! - `names.rs` — the producer names open in this process.
//! - `events.rs`, `error.rs` — [`StreamEvent`], [`Error`] and [`ErrorKind`].
#![deny(missing_docs)]

mod client;
mod consumer;
mod error;
mod events;
mod filter;
mod names;
mod options;
mod producer;
mod super_stream;

pub use client::{StreamClient, StreamSpec};
pub use consumer::{ConsumerBuilder, OffsetSpec, StreamConsumer, StreamMessage};
pub use error::{BrokerCode, Error, ErrorKind};
pub use events::StreamEvent;
pub use filter::{ConsumerFilter, FILTER_VALUE_PROPERTY};
pub use options::{DEFAULT_PORT, DEFAULT_TLS_PORT, Endpoint, StreamOptions, ToEndpoints};
pub use producer::{Confirm, ProducerBuilder, StreamProducer};
pub use super_stream::{
    MAX_PARTITIONS, Routing, SuperConfirm, SuperStreamConsumer, SuperStreamConsumerBuilder,
    SuperStreamMessage, SuperStreamProducer, SuperStreamProducerBuilder, SuperStreamSpec,
    hash_partition,
};
