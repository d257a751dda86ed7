//! Request/reply (RPC) over RabbitMQ: `reply_to` + `correlation_id`.
//!
//! [`RpcServer`] consumes requests from a queue, runs a typed handler
//! `Req -> Result<Resp, E>` (or [`Request<Req>`](Request) `-> Result<Resp, E>`,
//! with the message's correlation id, headers and redelivered flag) and
//! replies to each request's `reply_to` with its `correlation_id`.
//! [`RpcClient`] sends requests and waits for replies on RabbitMQ's *direct
//! reply-to* pseudo-queue by default (or on an exclusive reply queue of its
//! own), with many calls in flight at once.
//!
//! Requests and replies are transient (not persistent), unlike the other
//! patterns' messages, and deliberately so: a request expires with its
//! call's timeout (a caller that gave up does not want it served after a
//! broker restart), and a reply goes to a caller waiting in memory (direct
//! reply-to stores nothing). Both are confirmed; a request in a quorum
//! queue (the default server queue) is written to disk all the same.
//!
//! Every call ends: with the reply, the handler's typed error
//! ([`RpcError::Server`]), [`RpcError::Timeout`], [`RpcError::Unroutable`]
//! at once when no queue takes the request, or [`RpcError::ConnectionLost`]
//! as soon as the connection (or the reply channel) the request went out on
//! dies while it waits. Replies whose correlation id is unknown (late
//! replies to timed-out calls) are dropped and counted.
//!
//! The client is built on the core's [`RecoveredChannel`](rabbitkit_core::RecoveredChannel):
//! requests go out through the core's confirmed publish path on the channel
//! that consumes the replies, which is opened again on the new connection
//! after a failover. So a nacked request is sent again on a fresh channel
//! after [`Timings::nack_backoff`](rabbitkit_core::Timings::nack_backoff), as
//! every publish is, and fails its call alone ([`RpcError::Broker`]) when the
//! nacks go on (the calls in flight finish on the old channel). A dropped
//! call leaves nothing pending; dropping the last clone of an [`RpcClient`]
//! closes its reply channel.
//!
//! Files: `rpc/client.rs` ([`RpcClient`]), `rpc/server.rs` ([`RpcServer`],
//! [`Request`]), `rpc/error.rs` ([`RpcError`]).

use std::time::Duration;

mod client;
mod error;
mod server;

pub use client::{RpcClient, RpcClientBuilder};
pub use error::RpcError;
pub use server::{Request, RpcServer, RpcServerBuilder, ServeReport};

/// The pseudo-queue of RabbitMQ's direct reply-to.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// Header a server sets on a reply that carries an error.
pub const ERROR_HEADER: &str = "x-rabbitkit-rpc-error";
/// Default time a call waits for its reply (10 s): the default of
/// [`Timings::rpc_timeout`](rabbitkit_core::Timings::rpc_timeout), which a
/// client's [`Options::timings`](rabbitkit_core::Options::timings) may change.
pub const DEFAULT_TIMEOUT: Duration = rabbitkit_core::Timings::DEFAULT.rpc_timeout;
