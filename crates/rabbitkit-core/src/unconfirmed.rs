//! [`UnconfirmedChannel`]: the channel unconfirmed publishes go out on, and
//! the bounded queue of publishes handed to lapin but not yet written.
//!
//! lapin's `basic_publish` queues the frames for its IO thread at once and
//! then waits until that thread has written them. An unconfirmed publish
//! resolves as soon as its frames are queued, in call order: the wait for
//! the write happens in the channel's writer task instead, so a loop of
//! publishes is not paced by a thread hand-off per message. At most
//! `window` publishes wait there: past that a publish waits for room
//! (back-pressure, so a connection that writes slower than the caller
//! publishes does not queue without bound).

use std::sync::Arc;

use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, PublisherConfirm};
use tokio::sync::mpsc;

use crate::confirm::poll_now;

/// A publish whose frames are queued, waiting for lapin to write them.
type Writing = std::pin::Pin<Box<dyn Future<Output = lapin::Result<PublisherConfirm>> + Send>>;

/// A channel without confirm mode, for unconfirmed publishes. Cloning it
/// is a reference count.
#[derive(Clone)]
pub(crate) struct UnconfirmedChannel {
    inner: Arc<Inner>,
}

struct Inner {
    channel: lapin::Channel,
    writing: mpsc::Sender<Writing>,
}

impl UnconfirmedChannel {
    /// Wraps `channel` (not in confirm mode), with at most `window`
    /// publishes queued and not yet written. Must be called within a
    /// tokio runtime: it spawns the channel's writer task, which ends once
    /// every clone is dropped and what it holds is written (or failed).
    pub(crate) fn new(channel: lapin::Channel, window: usize) -> Self {
        let (writing, rx) = mpsc::channel(window.max(1));
        tokio::spawn(wait_written(rx));
        Self {
            inner: Arc::new(Inner { channel, writing }),
        }
    }

    /// The underlying channel.
    pub(crate) fn channel(&self) -> &lapin::Channel {
        &self.inner.channel
    }

    /// Queues the message's frames on the channel, in call order, and
    /// resolves once they are queued, or once there is room when `window`
    /// earlier publishes are not yet written. An error means nothing was
    /// queued (the channel or connection is closed).
    pub(crate) async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: Vec<u8>,
        properties: BasicProperties,
    ) -> Result<(), lapin::Error> {
        let held = self.inner.clone();
        let exchange = ShortString::from(exchange);
        let routing_key = ShortString::from(routing_key);
        let mut write: Writing = Box::pin(async move {
            let options = BasicPublishOptions {
                mandatory,
                immediate: false,
            };
            held.channel
                .basic_publish(exchange, routing_key, options, &body, properties)
                .await
        });
        // The first poll queues the frames (or fails without queuing).
        if let std::task::Poll::Ready(done) = poll_now(write.as_mut()) {
            return done.map(drop);
        }
        match self.inner.writing.try_send(write) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(write)) => {
                // Queued already; only the room to track it is waited for.
                let _ = self.inner.writing.send(write).await;
                Ok(())
            }
            // The writer task is gone only once every clone is: not while
            // this one is used. The frames are queued anyway.
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }
}

/// Waits, in order, for each queued publish to be written.
async fn wait_written(mut rx: mpsc::Receiver<Writing>) {
    while let Some(write) = rx.recv().await {
        let _ = write.await;
    }
}
