//! Consumers that survive failover: the [`Consumer`] stream the
//! application reads, and [`Client::consume`], which asks the supervisor to
//! register and subscribe one.
//!
//! Each consumer has a channel of its own (with its prefetch). When the
//! connection is lost, the supervisor subscribes it again on the new
//! connection and checks with the broker that it is registered before
//! reporting the recovery; the stream just goes on. When the broker cancels
//! it (the queue was deleted) and it cannot be restarted, the stream yields
//! [`ConsumeError::Cancelled`] and ends. Dropping the stream ends its pump,
//! which unsubscribes it and tells the supervisor to forget it.

use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures::Stream;
use lapin::options::BasicCancelOptions;
use tokio::sync::{mpsc, oneshot};

use crate::connection::Client;
use crate::delivery::Delivery;
use crate::error::ConsumeError;
use crate::options::ConsumeOptions;
use crate::stream::StreamCursor;
use crate::subscription::{ConsumerRecord, Item};
use crate::supervisor::Command;
use crate::validate;

/// Consuming, on the client itself.
impl Client {
    /// Starts consuming from `queue`. The returned [`Consumer`] is a stream
    /// that survives failover: after a reconnect it is subscribed again
    /// (and checked) before the client reports [`Event::Recovered`](crate::Event::Recovered).
    ///
    /// Waits at most the operation timeout for the first subscription
    /// ([`ConsumeError::Timeout`]); a consumer that gets an error is
    /// forgotten, never subscribed later.
    ///
    /// A queue name over 255 bytes is [`ConsumeError::InvalidName`], and
    /// nothing is registered.
    pub async fn consume(
        &self,
        queue: &str,
        options: ConsumeOptions,
    ) -> Result<Consumer, ConsumeError> {
        // Before anything is registered: a recorded consumer is replayed by
        // the supervisor after every reconnect.
        validate::consume_queue(queue)?;
        let shared = self.shared();
        if let Some(reason) = shared.closed_reason() {
            return Err(ConsumeError::Closed { reason });
        }
        let (record, rx) = ConsumerRecord::new(queue, options, shared.options.prefetch);
        // The consumer exists from here on: if this function returns an
        // error or is cancelled (a caller's timeout, a dropped future), the
        // stream is dropped, and the supervisor forgets the record (and
        // unsubscribes whatever subscription it got).
        let consumer = Consumer {
            rx,
            ended: false,
            queue: record.queue(),
            stream: record.stream.clone(),
            record: Arc::downgrade(&record),
            id: record.id,
            client: self.clone(),
        };
        let (done, subscribed) = oneshot::channel();
        if !self.command(Command::Consume { record, done }) {
            return Err(closed(self));
        }
        let timeout = shared.options.operation_timeout;
        match tokio::time::timeout(timeout, subscribed).await {
            Ok(Ok(Ok(()))) => Ok(consumer),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(closed(self)),
            Err(_) => Err(ConsumeError::Timeout(timeout)),
        }
    }
}

/// The error of a consume the supervisor did not answer: it stopped.
fn closed(client: &Client) -> ConsumeError {
    ConsumeError::Closed {
        reason: client
            .shared()
            .closed_reason()
            .unwrap_or_else(|| "client closed".into()),
    }
}

/// A stream of [`Delivery`]s from one queue that survives failover.
///
/// Dropping it cancels the subscription; unacknowledged deliveries go back
/// to the queue.
pub struct Consumer {
    rx: mpsc::Receiver<Item>,
    /// Set once the stream yielded its last item (a terminal error).
    ended: bool,
    queue: String,
    /// Its registration, shared with the supervisor and the pump.
    /// (Weak: the record holds the stream's sender, which must go with
    /// the supervisor and the pump for the stream to end.)
    record: Weak<ConsumerRecord>,
    /// The registration's id.
    id: u64,
    /// Keeps the connection open while the consumer lives.
    client: Client,
    /// Stream consumers: the position, shared with the record.
    stream: Option<Arc<StreamCursor>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// The queue consumed from, as subscribed. (When recovery has to
    /// replace a temporary queue, see
    /// [`Event::TemporaryQueueReplaced`](crate::Event::TemporaryQueueReplaced),
    /// the stream goes on from the new queue.)
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The queue consumed from now: [`queue`](Self::queue), or the new
    /// name of a temporary queue that recovery replaced.
    pub fn current_queue(&self) -> String {
        match self.record.upgrade() {
            Some(record) => record.queue(),
            None => self.queue.clone(),
        }
    }

    /// A stream consumer: the highest offset up to which every delivery was
    /// settled (acknowledged, rejected, or taken with `no_ack`); where a
    /// failover resumes from (the offset after it). `None` before the
    /// first, and for a consumer of a classic or quorum queue. An
    /// application that persists it can start again after a restart with
    /// [`StreamOffset::Offset`](crate::StreamOffset::Offset)`(last + 1)`.
    pub fn last_acked_offset(&self) -> Option<u64> {
        self.stream.as_ref().and_then(|c| c.last_acked())
    }

    /// Waits for the next delivery; `None` once the stream has ended.
    pub async fn recv(&mut self) -> Option<Result<Delivery, ConsumeError>> {
        futures::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let item = loop {
            let item = std::task::ready!(self.rx.poll_recv(cx));
            match item {
                Some(Ok(delivery)) if delivery.is_stale() => skip_stale(delivery),
                item => break item,
            }
        };
        // A cancelled consumer is never restarted: its error is the last item,
        // whoever still holds the sending side.
        if matches!(item, None | Some(Err(ConsumeError::Cancelled { .. }))) {
            self.ended = true;
        }
        self.taken(&item);
        Poll::Ready(item)
    }

    /// A delivery already received and waiting in the stream, without
    /// waiting for one.
    pub fn try_recv(&mut self) -> Option<Result<Delivery, ConsumeError>> {
        let item = loop {
            match self.rx.try_recv().ok() {
                Some(Ok(delivery)) if delivery.is_stale() => skip_stale(delivery),
                item => break item,
            }
        };
        self.taken(&item);
        item
    }

    /// A `no_ack` stream delivery counts as settled once taken.
    fn taken(&self, item: &Option<Item>) {
        if let (Some(cursor), Some(Ok(delivery))) = (&self.stream, item)
            && delivery.is_no_ack()
            && let Some(offset) = delivery.stream_offset()
        {
            cursor.received(offset);
            cursor.settled_up_to(offset);
        }
    }

    /// Stops the broker from sending more deliveries (`basic.cancel`),
    /// keeping the channel open: deliveries already received can still be
    /// acknowledged, and those received but never settled go back to the
    /// queue when they (or this `Consumer`) are dropped. The consumer is
    /// not subscribed again after a reconnect. The first step of a graceful
    /// stop; waits at most the client's operation timeout for the broker.
    pub async fn cancel(&mut self) {
        let shared = self.client.shared();
        let (done, cancelled) = oneshot::channel();
        let command = Command::CancelConsumer { id: self.id, done };
        if !self.client.command(command) {
            return;
        }
        let bound = shared.options.operation_timeout;
        if let Ok(Ok(Some((channel, tag)))) = tokio::time::timeout(bound, cancelled).await {
            let _ = tokio::time::timeout(
                bound,
                channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
            )
            .await;
        }
    }
}

/// A delivery received for a subscription that has ended (its channel or
/// connection is gone) is never handed out: the broker gives it again, to
/// this consumer's next subscription or another consumer, and handing it
/// out too would have it processed twice, perhaps at the same time (two
/// instances of a single-active-consumer partition).
fn skip_stale(delivery: Delivery) {
    tracing::debug!(target: "rabbitkit", delivery_tag = delivery.delivery_tag(), "delivery of an ended subscription skipped; the broker redelivers it");
    delivery.give_back();
}

impl Stream for Consumer {
    type Item = Result<Delivery, ConsumeError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_item(cx)
    }
}
