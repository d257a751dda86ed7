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
//! closing it, the node killed, or the node confirming nothing for
//! [`Timings::confirm_deadline`], see below), the supervisor:
//! 1. reports [`Event::Disconnected`] and connects to the *next* endpoint at
//!    once, then backs off ([`Backoff`]) while endpoints keep failing;
//! 2. re-opens the channel pool (confirm mode, prefetch applied);
//! 3. re-declares every recorded exchange, queue and binding, in that order
//!    (one that fails in a way that may pass, a timeout, a queue still
//!    locked, a binding whose queue is not back, is reported with
//!    [`Event::TopologyRecoveryFailed`] and tried again in the background,
//!    with the re-subscription backoff, up to 20 times;
//!    [`Event::TopologyRecovered`] says when it passed);
//! 4. re-subscribes every consumer and checks with the broker that its queue
//!    has consumers again;
//! 5. reports [`Event::Recovered`], and publishes that were interrupted are
//!    sent again with the same `message_id`.
//!
//! Every failed attempt counts towards the backoff, whether it failed at
//! the TCP connect or after it (opening the channel pool, a connection lost
//! during replay); the series starts again only once a connection came
//! fully up. A recovery step that panics is reported (a failed attempt or
//! a recovery-failed event), never a silently dead supervisor.
//!
//! Bad credentials, a missing virtual host, an untrusted certificate, a
//! client certificate the broker refuses (mutual TLS:
//! [`Options::tls_client_identity`], [`Options::auth_external`];
//! [`ConnectError::ClientCertificate`] says whether it was missing, from an
//! unknown CA or expired) and a broker whose `channel_max` cannot hold the channel pool stop at once
//! with a [`ConnectError`] that says so: retrying cannot fix them. A
//! reached connection limit (the virtual host's or the user's) is
//! temporary: [`ConnectError::ConnectionLimit`] at the first connect
//! (unless [`Options::retry_initial_connect`] is on), retried with backoff
//! during recovery.
//!
//! ## Network partitions
//! A partition that leaves the connected node on the minority side breaks
//! nothing a socket can see: on RabbitMQ 4 (and 3.10 with the default
//! `cluster_partition_handling = ignore`) the node keeps the connection
//! and answers heartbeats, while publishes to quorum queues are neither
//! confirmed nor nacked and consumers receive nothing, for as long as the
//! partition lasts. The publishes show it: when the oldest one has waited
//! [`Timings::confirm_deadline`] (10 s) for its confirm and the broker does
//! not block the connection (an alarm), the client emits
//! [`Event::Unresponsive`], closes the connection and recovers on the next
//! endpoint, where the waiting publishes are sent again (possible
//! duplicates, at most the publish window) and consumers resume. A client
//! that only consumes cannot tell a partition from an idle queue and stays.
//! RabbitMQ 3.10's `pause_minority` closes the minority node's connections
//! itself (an ordinary failover). Measured figures: `RELIABILITY.md`.
//!
//! Names, routing keys and exchange types are AMQP short strings: over 255
//! bytes they are refused with a typed error before anything is sent (see
//! [`validate`]); option values beyond their documented maxima are clamped.
//!
//! ## Layout
//! One task, the supervisor, owns the connection, the channel pool, the
//! topology record and the consumer registry; [`Client`] handles send it
//! commands (`Consume`, `CancelConsumer`, `Declared`, `Forget`, `Close`)
//! and read its state through a watch (`session.rs`: the current
//! connection, or recovering, or closed). Publishes, acks and declarations
//! do not go through it: they read the current connection and go straight
//! to lapin, the hot path. Each consumer's pump reports to the supervisor
//! when its subscription ends; whether and when it is subscribed again is
//! decided in `resubscribe.rs` alone; `close` waits for the supervisor's
//! tasks. The modules import each other without a cycle (a unit test in
//! `lib.rs` checks it), from the leaves (`options`, `topology`, `acks`,
//! `confirm`, ...) through `channels`, `session`, `subscription` and
//! `supervisor` to the handles (`connection`, `consumer`, `publisher`).
//!
//! A file per concept:
//! - `options.rs` — [`Options`], every default in one place; [`Backoff`], [`EndpointOrder`],
//!   [`Timings`] (the inner delays, intervals and retry policies); [`ConsumeOptions`].
//! - `endpoint.rs` — [`Endpoint`]: URL parsing; `Debug`/`Display` hide the password.
//! - `connection.rs` — [`Client`], the handle applications hold: declarations and
//!   admin calls, `close`, and [`Options::connect`].
//! - `server.rs` — [`ServerInfo`]: the broker's product, [`Version`] and
//!   capabilities from `connection.start` (a probe beside each connect), and
//!   what rabbitkit does differently by version.
//! - `session.rs` — one live connection and its channels, and what the hot path
//!   reads without asking the supervisor (the link watch, the publish window,
//!   counters, events).
//! - `supervisor.rs` — the task that connects, fails over and recovers, and owns
//!   the topology record, the consumer registry and the connection's tasks;
//!   its run is split into named steps (connect, recover, report up, serve,
//!   report lost, close).
//! - `resubscribe.rs` — the one policy for subscribing a consumer again, built
//!   from [`Timings`].
//! - `stall.rs` — the publishes waiting for a confirm on a connection: a
//!   node that stops confirming (the minority side of a network
//!   partition) is left for the next one ([`Event::Unresponsive`]).
//! - `tls.rs` — client certificates: checking the PEM, reading the broker's TLS alert
//!   when it refuses one ([`ClientCertError`]).
//! - `channels.rs` — the channel pool; replaces channels closed by channel errors.
//! - `channel.rs` — [`RecoveredChannel`]: a channel of one's own that consumes
//!   one queue and publishes (through the core's confirmed publish path) on
//!   the same channel, what direct reply-to needs; each opening, a
//!   [`ChannelLease`], is on one connection, and the next use after that
//!   connection is gone opens it again, consumption included, on the current one.
//! - `topology.rs` — [`Declaration`]s recorded for replay; the broker's
//!   `inequivalent arg` text parsed into [`DeclareError::Inequivalent`].
//! - `message.rs` — [`OutgoingMessage`], what a publish sends.
//! - `publisher.rs` — [`Publisher`]: confirms, the in-flight window, re-publishing.
//! - `unconfirmed.rs` — the channel of unconfirmed publishes: each resolves
//!   once its frames are queued, with a bounded number not yet written.
//! - `confirm.rs` — [`ConfirmChannel`]: one collector per channel gives each
//!   publish its own outcome (returns matched by `message_id`); message ids.
//! - `delay.rs` — [`delay`]: delayed delivery through quorum queues of
//!   power-of-two TTLs, no plugin ([`OutgoingMessage::delay`]).
//! - `consumer.rs` — [`Consumer`] streams that survive failover, and [`Client::consume`].
//! - `subscription.rs` — a consumer's registration, subscribing it, and its pump.
//! - `delivery.rs` — [`Delivery`]: one message received, and settling it.
//! - `acks.rs` — acknowledgements, coalesced into `multiple` acks.
//! - `stream.rs` — [`StreamOffset`]: where a stream consumer starts, and the
//!   cursor that makes it resume after its last settled offset on failover.
//! - `validate.rs` — [`validate`]: the 255-byte AMQP limit, checked at every
//!   entry before anything is registered or sent; [`validate::ValidationError`], what the
//!   typed checks of names, keys and patterns return.
//! - `events.rs` — [`Event`].
//! - `metrics.rs` — [`metrics`]: the metric names and labels (every one listed
//!   there); recorded through the `metrics` facade with the `metrics` feature.
//! - `trace.rs` — `trace` (the `opentelemetry` feature): W3C trace context
//!   in message headers, a span per publish and per handled delivery.
//! - `error.rs` — one error type per operation, each with `is_timeout`/`is_closed`/
//!   `is_retryable`/`reply_code` classifiers; [`Cause`] keeps lapin's error as the `source()`.
//! - `reply.rs` — the one place where the broker's reply codes and texts are read
//!   (inequivalent declarations, refusals, sizes), tested with RabbitMQ 3.10's and 4.3's texts.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

mod acks;
mod channel;
mod channels;
mod confirm;
mod connection;
mod consumer;
pub mod delay;
mod delivery;
mod endpoint;
mod error;
mod events;
mod message;
pub mod metrics;
mod options;
mod publisher;
mod reply;
mod resubscribe;
mod server;
mod session;
mod stall;
mod stream;
mod subscription;
mod supervisor;
mod tls;
mod topology;
#[cfg(feature = "opentelemetry")]
pub mod trace;
mod unconfirmed;
pub mod validate;

pub use channel::{ChannelLease, RecoveredChannel};
pub use confirm::{ConfirmChannel, PublishOutcome, abandoned_confirms, new_message_id};
pub use connection::{Client, Health, QueueInfo, Stats};
pub use consumer::Consumer;
pub use delivery::{ACQUIRED_COUNT, DELIVERY_COUNT, Delivery};
pub use endpoint::{Endpoint, ToEndpoints};
pub use error::{
    AckError, Cause, ChannelError, ClientCertError, ConnectError, ConsumeError, DeclareError,
    EndpointError, PublishError,
};
pub use events::Event;
pub use message::OutgoingMessage;
pub use options::{
    Backoff, ConsumeOptions, EndpointOrder, Options, STREAM_DEFAULT_PREFETCH, Timings,
    endpoints_from_env,
};
pub use publisher::{Confirmed, Publisher};
pub use reply::parse_inequivalent;
pub use server::{ServerInfo, Version};
pub use stream::{STREAM_OFFSET, StreamOffset};
pub use topology::{
    BindingSpec, Declaration, ExchangeBindingSpec, ExchangeSpec, ExchangeType, QueueSpec,
    TEMPORARY_QUEUE_PREFIX, temporary_queue_name,
};

/// lapin itself, for what rabbitkit does not wrap.
pub use lapin;
/// The lapin types that appear in rabbitkit's API.
pub use lapin::BasicProperties;
pub use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

/// The core's modules import each other without a cycle: each file's
/// `use crate::…` lines name the modules it depends on, and that graph
/// must be a DAG (a reader can then start from the leaves).
#[cfg(test)]
mod module_graph {
    #[test]
    fn the_core_modules_import_each_other_without_a_cycle() {
        // `MODULE_GRAPH_SRC` checks another tree (e.g. an older checkout).
        let dir = match std::env::var_os("MODULE_GRAPH_SRC") {
            Some(dir) => std::path::PathBuf::from(dir),
            None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        };
        let (cycle, graph) = rabbitkit_test::module_graph::cycle_in(&dir);
        assert!(graph.len() > 10, "read {} files from {dir:?}", graph.len());
        assert_eq!(cycle, None, "the imports: {graph:#?}");
    }
}
