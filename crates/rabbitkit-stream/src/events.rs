//! What happens to the connections of producers and consumers.

use std::fmt;
use std::time::Duration;

/// An event of a producer or a consumer; subscribe with
/// [`StreamProducer::events`](crate::StreamProducer::events) or
/// [`StreamConsumer::events`](crate::StreamConsumer::events).
///
/// ```no_run
/// # async fn f(producer: rabbitkit_stream::StreamProducer<String>) {
/// use futures::StreamExt;
/// use rabbitkit_stream::StreamEvent;
/// let mut events = producer.events();
/// tokio::spawn(async move {
///     while let Some(event) = events.next().await {
///         if let StreamEvent::Reconnected { node, .. } = &event {
///             eprintln!("publishing again through {node}");
///         }
///         eprintln!("{event}");
///     }
/// });
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// The connection to `node` (`host:port`) was lost, or the broker said
    /// the stream's leader moved.
    Disconnected {
        /// The stream.
        stream: String,
        /// Why, as the client saw it.
        reason: String,
    },
    /// Connected again, to `node`, after `downtime`.
    Reconnected {
        /// The stream.
        stream: String,
        /// `host:port` of the node now used (the leader for a producer, a
        /// replica when there is one for a consumer).
        node: String,
        /// From the loss to the new connection being ready.
        downtime: Duration,
    },
    /// A producer re-sent `count` unconfirmed messages under its name after
    /// reconnecting (those the broker had already are dropped by it).
    Resent {
        /// The stream.
        stream: String,
        /// How many.
        count: usize,
    },
    /// Reconnection gave up after the limit of
    /// [`StreamOptions::reconnect_for`](crate::StreamOptions::reconnect_for)
    /// or on an error that retrying cannot fix.
    GaveUp {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for StreamEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamEvent::Disconnected { stream, reason } => {
                write!(f, "stream {stream}: disconnected ({reason})")
            }
            StreamEvent::Reconnected {
                stream,
                node,
                downtime,
            } => write!(
                f,
                "stream {stream}: reconnected to {node} after {downtime:?}"
            ),
            StreamEvent::Resent { stream, count } => {
                write!(f, "stream {stream}: re-sent {count} unconfirmed messages")
            }
            StreamEvent::GaveUp { stream, reason } => {
                write!(f, "stream {stream}: gave up reconnecting ({reason})")
            }
        }
    }
}

pub(crate) type Events = tokio::sync::broadcast::Sender<StreamEvent>;

pub(crate) fn channel() -> Events {
    tokio::sync::broadcast::channel(256).0
}

/// The events as a `Stream`; lagging receivers skip what they missed.
pub(crate) fn subscribe(
    events: &Events,
) -> impl futures::Stream<Item = StreamEvent> + Unpin + use<> {
    let rx = events.subscribe();
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(ev) => return Some((ev, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    }))
}
