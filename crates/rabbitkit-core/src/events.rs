//! What happened to the connection, as a stream of [`Event`]s.

use std::fmt;
use std::time::Duration;

use futures::Stream;
use tokio::sync::broadcast;

use crate::endpoint::Endpoint;

/// Something that happened to the client's connection.
///
/// Get them with [`Client::events`](crate::Client::events):
///
/// ```no_run
/// # async fn run(client: rabbitkit_core::Client) {
/// use futures::StreamExt;
/// use rabbitkit_core::Event;
/// let mut events = client.events();
/// while let Some(event) = events.next().await {
///     match event {
///         Event::Recovered { endpoint, took, .. } => println!("back on {endpoint} after {took:?}"),
///         other => println!("{other}"),
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The first connection is up.
    Connected {
        /// Where (password hidden).
        endpoint: Endpoint,
    },
    /// The connection was lost.
    Disconnected {
        /// Where it was.
        endpoint: Endpoint,
        /// Why, as far as the client knows.
        reason: String,
    },
    /// A connection attempt is about to be made.
    Reconnecting {
        /// Attempt number in this series (1-based).
        attempt: u32,
        /// Delay waited before this attempt.
        delay: Duration,
        /// The endpoint tried.
        endpoint: Endpoint,
    },
    /// A connection attempt failed.
    ConnectFailed {
        /// The endpoint tried.
        endpoint: Endpoint,
        /// The error (no credentials).
        error: String,
    },
    /// Connection, channels, topology and consumers are back.
    Recovered {
        /// The endpoint now in use.
        endpoint: Endpoint,
        /// From the loss to the end of recovery.
        took: Duration,
        /// Consumers re-subscribed (and verified).
        consumers: usize,
    },
    /// A temporary queue of the lost connection was still locked on the
    /// broker (RabbitMQ 4 keeps a killed node's exclusive queues until the
    /// node returns), so recovery declared a fresh one, with the same
    /// bindings, and moved its consumers to it. Messages routed to the old
    /// queue while the connection was down stay there and are lost with it.
    TemporaryQueueReplaced {
        /// The old queue's name.
        old: String,
        /// The new queue's name.
        new: String,
    },
    /// A recorded declaration could not be replayed after a reconnect.
    TopologyRecoveryFailed {
        /// The declaration, in words.
        declaration: String,
        /// The error.
        error: String,
    },
    /// A declaration whose replay failed in a way that may pass (a timeout,
    /// a queue still locked, a binding whose queue was not back yet:
    /// [`TopologyRecoveryFailed`](Self::TopologyRecoveryFailed) said "tried
    /// again in the background") was declared on a later try.
    TopologyRecovered {
        /// The declaration, in words.
        declaration: String,
    },
    /// A consumer could not be re-subscribed after a reconnect. It is retried
    /// in the background while the connection lives, and at the next
    /// recovery; if its queue is gone, its stream yields
    /// [`ConsumeError::Cancelled`](crate::ConsumeError::Cancelled) and ends.
    ConsumerRecoveryFailed {
        /// The queue.
        queue: String,
        /// The error.
        error: String,
    },
    /// The broker blocks this connection's publishers: a resource alarm
    /// (memory over `vm_memory_high_watermark`, or free disk below
    /// `disk_free_limit`) is raised somewhere in the cluster. The broker
    /// stops reading from the connection, so publishes wait for their
    /// confirm; each one still waiting at its
    /// [`publish_timeout`](crate::Options::publish_timeout) fails with
    /// [`PublishError::Blocked`](crate::PublishError::Blocked) carrying
    /// this reason. Consuming goes on (it frees the broker's memory).
    /// [`Client::health`](crate::Client::health) says
    /// [`Health::Blocked`](crate::Health::Blocked) meanwhile.
    ///
    /// What to do: nothing in the client (it stays connected, and
    /// publishing resumes by itself at [`Unblocked`](Self::Unblocked)).
    /// Stop producing new work or shed it (answer "busy", fail a readiness
    /// probe) rather than queueing publishes in memory; alert an operator:
    /// the broker needs memory or disk, or its consumers to catch up.
    Blocked {
        /// The broker's reason, e.g. `low on memory` or `low on disk space`.
        reason: String,
    },
    /// The broker lifted the block (the alarm cleared): publishes that
    /// were waiting are confirmed now, and new ones go through. Resume
    /// producing.
    Unblocked,
    /// The node stopped confirming publishes while the connection looked
    /// healthy: the oldest publish waited `waited`, past
    /// [`Timings::confirm_deadline`](crate::Timings::confirm_deadline),
    /// and the broker did not block the connection (an alarm, see
    /// [`Blocked`](Self::Blocked), does not count). The usual cause is a
    /// network partition that left this node on the minority side: its
    /// TCP connection and heartbeats are fine, but a quorum queue cannot
    /// confirm without a majority, and its consumers get nothing. The
    /// client closes the connection and fails over to the next endpoint
    /// ([`Disconnected`](Self::Disconnected), then
    /// [`Recovered`](Self::Recovered) follow); the publishes still waiting
    /// are sent again there (they may arrive twice).
    Unresponsive {
        /// The node left.
        endpoint: Endpoint,
        /// How long the oldest publish had waited for its confirm.
        waited: Duration,
    },
    /// A handler has been running on one delivery for `running`, a share
    /// of the consumer timeout (`timeout`) after which the broker takes the
    /// message back: RabbitMQ 4.3 cancels a quorum queue's consumer whose
    /// delivery stays unacknowledged that long (rabbitkit subscribes again,
    /// and the message is delivered again, perhaps to another worker, while
    /// this handler may still be running); older brokers close the channel.
    /// Sent once per delivery, by the handler loops of `rabbitkit` (a
    /// `WorkQueue`, `Subscription::handle_with`), and logged at WARN.
    ///
    /// What to do: make the task shorter, or split it; or give the queue
    /// or consumer a longer consumer timeout.
    HandlerRunningLong {
        /// The queue the delivery came from.
        queue: String,
        /// The message's id, if it has one.
        message_id: Option<String>,
        /// How long the handler has been running.
        running: Duration,
        /// The consumer timeout it is measured against.
        timeout: Duration,
    },
    /// The client stopped for good: closed by the application, a fatal error
    /// (bad credentials, missing vhost) or the backoff's attempt limit.
    Closed {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connected { endpoint } => write!(f, "connected to {endpoint}"),
            Self::Disconnected { endpoint, reason } => {
                write!(f, "disconnected from {endpoint}: {reason}")
            }
            Self::Reconnecting {
                attempt,
                delay,
                endpoint,
            } => write!(
                f,
                "reconnecting to {endpoint} (attempt {attempt}, after {delay:?})"
            ),
            Self::ConnectFailed { endpoint, error } => {
                write!(f, "connection to {endpoint} failed: {error}")
            }
            Self::Recovered {
                endpoint,
                took,
                consumers,
            } => write!(
                f,
                "recovered on {endpoint} in {took:?} ({consumers} consumer(s) re-subscribed)"
            ),
            Self::TemporaryQueueReplaced { old, new } => write!(
                f,
                "temporary queue {old:?} still locked by the lost connection; replaced by {new:?}"
            ),
            Self::TopologyRecoveryFailed { declaration, error } => {
                write!(f, "could not re-declare {declaration}: {error}")
            }
            Self::TopologyRecovered { declaration } => {
                write!(f, "re-declared {declaration} on a later try")
            }
            Self::ConsumerRecoveryFailed { queue, error } => {
                write!(f, "could not re-subscribe consumer on {queue:?}: {error}")
            }
            Self::Blocked { reason } => write!(f, "blocked by the broker: {reason}"),
            Self::Unblocked => write!(f, "unblocked by the broker"),
            Self::Unresponsive { endpoint, waited } => write!(
                f,
                "{endpoint} confirmed nothing for {waited:?} (minority side of a partition?); leaving it"
            ),
            Self::HandlerRunningLong {
                queue,
                message_id,
                running,
                timeout,
            } => write!(
                f,
                "a handler on {queue:?} (message {}) has run {running:?} of the consumer timeout of {timeout:?}",
                message_id.as_deref().unwrap_or("without id")
            ),
            Self::Closed { reason } => write!(f, "closed: {reason}"),
        }
    }
}

/// Turns a broadcast receiver into a stream that skips lagged events.
pub(crate) fn stream(rx: broadcast::Receiver<Event>) -> impl Stream<Item = Event> + Send + Unpin {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => return Some((ev, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }))
}
