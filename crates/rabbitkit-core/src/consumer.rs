//! Consumers that survive failover, and the deliveries they yield.
//!
//! A [`Consumer`] is a `Stream` of [`Delivery`]s. Each consumer has a
//! channel of its own (with its prefetch). When the connection is lost, the
//! supervisor subscribes it again on the new connection and checks with the
//! broker that it is registered before reporting the recovery; the stream
//! just goes on. When the broker cancels it (the queue was deleted) and it
//! cannot be restarted, the stream yields [`ConsumeError::Cancelled`] and ends.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use tokio::sync::mpsc;

use crate::acks::Acks;
use crate::channels::open_channel;
use crate::connection::{Client, Session, Shared};
use crate::error::{AckError, ConsumeError};
use crate::reply::consume_error;
use crate::stream::{StreamCursor, StreamOffset};

/// The prefetch of a stream consumer when neither its options nor the
/// client give one (a stream consumer needs a prefetch: the broker sends
/// it credit for that many deliveries at a time).
pub const STREAM_DEFAULT_PREFETCH: u16 = 100;

/// How to consume.
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use]
pub struct ConsumeOptions {
    /// Unacknowledged deliveries allowed at once (default: the client's prefetch).
    pub prefetch: Option<u16>,
    /// Be the queue's only consumer.
    pub exclusive: bool,
    /// Deliveries need no acknowledgement (they are lost if the consumer dies).
    pub no_ack: bool,
    /// Consumer arguments (e.g. `x-priority`).
    pub arguments: FieldTable,
    /// Consume a stream from this position (`x-stream-offset`). The
    /// consumer then resumes after a failover from the offset after the
    /// last one the application settled (see [`stream_offset`](Self::stream_offset)).
    pub stream_offset: Option<StreamOffset>,
}

impl ConsumeOptions {
    /// Defaults: client prefetch, manual acks, not exclusive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the prefetch.
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = Some(prefetch);
        self
    }

    /// Sets exclusive consumption.
    pub fn exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// Sets automatic acknowledgement.
    pub fn no_ack(mut self, no_ack: bool) -> Self {
        self.no_ack = no_ack;
        self
    }

    /// Consumes a stream (`x-queue-type: stream`) from `offset`
    /// (the `x-stream-offset` consume argument).
    ///
    /// The consumer remembers the highest offset up to which every delivery
    /// it received was settled ([`Delivery::ack`], `nack`, `reject`, or
    /// dropped unsettled: a stream requeues nothing) and, when the
    /// connection fails over, subscribes again from the offset after it,
    /// never from `offset` again. Deliveries received but not settled when
    /// the connection died come again: at most the prefetch. With
    /// [`no_ack`](Self::no_ack) a delivery counts as settled once the
    /// application has taken it from the stream. A consumer given a raw
    /// `x-stream-offset` in [`arguments`](Self::arguments) is tracked the
    /// same way.
    ///
    /// A stream consumer needs a prefetch: the one given, else the
    /// client's, else [`STREAM_DEFAULT_PREFETCH`] when those are 0.
    ///
    /// ```
    /// use rabbitkit_core::{ConsumeOptions, StreamOffset};
    /// let options = ConsumeOptions::new()
    ///     .prefetch(500)
    ///     .stream_offset(StreamOffset::First);
    /// ```
    pub fn stream_offset(mut self, offset: StreamOffset) -> Self {
        self.stream_offset = Some(offset);
        self
    }
}

type Item = Result<Delivery, ConsumeError>;

/// A consumer's registration, replayed after every reconnect.
pub(crate) struct ConsumerRecord {
    pub(crate) id: u64,
    /// The queue; a temporary queue may be replaced (renamed) by recovery.
    queue: std::sync::Mutex<String>,
    pub(crate) options: ConsumeOptions,
    tx: mpsc::Sender<Item>,
    /// Generation of the session it is subscribed on, and that subscription's channel.
    subscribed: tokio::sync::Mutex<Option<Subscribed>>,
    /// Set by [`Consumer::cancel`]: never subscribed again, and the end of
    /// its stream leaves its channel (and acks) open for the deliveries
    /// still being handled.
    cancelled: std::sync::atomic::AtomicBool,
    /// Stream consumers: where to subscribe again from.
    stream: Option<Arc<StreamCursor>>,
}

impl ConsumerRecord {
    /// The queue it consumes from.
    pub(crate) fn queue(&self) -> String {
        self.queue.lock().unwrap().clone()
    }

    /// Whether it consumes a stream (tracks its offset).
    pub(crate) fn is_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// Moves it to another queue (a temporary queue replaced by recovery).
    pub(crate) fn set_queue(&self, queue: &str) {
        *self.queue.lock().unwrap() = queue.to_owned();
    }

    /// Sends the acks recorded but not yet sent.
    pub(crate) async fn flush_acks(&self) {
        let acks = self
            .subscribed
            .lock()
            .await
            .as_ref()
            .and_then(|s| s.acks.clone());
        if let Some(acks) = acks {
            let _ = acks.flush().await;
        }
    }
}

/// One live subscription of a consumer.
struct Subscribed {
    generation: u64,
    channel: Channel,
    acks: Option<Arc<Acks>>,
}

/// One message received by a [`Consumer`].
///
/// Acknowledge it with [`ack`](Self::ack) once processed, or give it back
/// with [`nack`](Self::nack) / [`reject`](Self::reject). A delivery whose
/// connection died cannot be acknowledged: you get
/// [`AckError::ChannelGone`], and the broker delivers the message again.
pub struct Delivery {
    inner: lapin::message::Delivery,
    /// `None` for deliveries consumed with `no_ack`.
    acks: Option<Arc<Acks>>,
    /// What dropping it unsettled does: requeue (`true`) or reject.
    requeue_on_drop: bool,
}

impl Drop for Delivery {
    /// A delivery dropped without [`ack`](Self::ack), [`nack`](Self::nack)
    /// or [`reject`](Self::reject) (a handler that panicked, an error value
    /// thrown away) is given back: nacked with requeue (or rejected, see
    /// [`reject_on_drop`](Self::reject_on_drop)), so the acks after it keep
    /// reaching the broker. Nothing happens if it was settled.
    ///
    /// A dropped unsettled delivery is usually a forgotten acknowledgement,
    /// a bug that repeats (the message comes straight back), so it is
    /// logged as a warning; [`give_back`](Self::give_back) does the same
    /// on purpose, without the warning.
    fn drop(&mut self) {
        if let Some(acks) = &self.acks {
            acks.release(self.inner.delivery_tag, self.requeue_on_drop, true);
        }
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("exchange", &self.exchange())
            .field("routing_key", &self.routing_key())
            .field("redelivered", &self.redelivered())
            .field("bytes", &self.inner.data.len())
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// The body as received.
    pub fn body(&self) -> &[u8] {
        &self.inner.data
    }

    /// The AMQP properties (content type, headers, correlation id, ...).
    pub fn properties(&self) -> &BasicProperties {
        &self.inner.properties
    }

    /// The exchange it was published to.
    pub fn exchange(&self) -> &str {
        self.inner.exchange.as_str()
    }

    /// The routing key it was published with.
    pub fn routing_key(&self) -> &str {
        self.inner.routing_key.as_str()
    }

    /// Whether the broker delivered it before (to this or another consumer).
    pub fn redelivered(&self) -> bool {
        self.inner.redelivered
    }

    /// The `message_id` property, if any.
    pub fn message_id(&self) -> Option<&str> {
        self.inner
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str())
    }

    /// The broker's delivery tag (per channel).
    pub fn delivery_tag(&self) -> u64 {
        self.inner.delivery_tag
    }

    /// Its offset in the stream it was read from (the `x-stream-offset`
    /// header the broker adds to every stream delivery); `None` for a
    /// delivery from a classic or quorum queue.
    pub fn stream_offset(&self) -> Option<u64> {
        crate::stream::offset_of(&self.inner.properties)
    }

    /// Makes dropping it unsettled reject it (dead-lettered when the queue
    /// has a dead-letter exchange, else dropped) instead of requeueing it:
    /// for a message that can never be processed, such as a body that does
    /// not decode, which would otherwise come back forever.
    pub fn reject_on_drop(&mut self) {
        self.requeue_on_drop = false;
    }

    /// Gives it back to the queue unprocessed (requeued, or rejected after
    /// [`reject_on_drop`](Self::reject_on_drop)), as dropping it does but
    /// on purpose: no warning is logged. It goes out with the next batch of
    /// acknowledgements, with no wait here. For deliveries a consumer
    /// received but will not handle, e.g. when it stops.
    pub fn give_back(mut self) {
        if let Some(acks) = self.acks.take() {
            acks.release(self.inner.delivery_tag, self.requeue_on_drop, false);
        }
    }

    fn acks(&self) -> Result<&Acks, AckError> {
        self.acks.as_deref().ok_or(AckError::NoAck)
    }

    /// Acknowledges: the broker forgets the message.
    ///
    /// Acks are coalesced: this returns once the ack is recorded, and the
    /// broker gets one `basic.ack` (`multiple`) for a run of consecutive
    /// acknowledged deliveries, at most a millisecond later. If the channel
    /// dies first, the broker redelivers (at-least-once, never lost).
    ///
    /// A send that cannot leave within [`Options::operation_timeout`](crate::Options::operation_timeout)
    /// (a connection that stopped taking bytes) gives the channel up: it is
    /// closed, the broker redelivers what was not settled, and this and later
    /// acks on it fail with [`AckError::ChannelGone`].
    pub async fn ack(&self) -> Result<(), AckError> {
        self.acks()?.ack(self.inner.delivery_tag).await
    }

    /// Negative acknowledgement: requeue it, or (with `requeue: false`)
    /// dead-letter it when the queue has a dead-letter exchange, else drop it.
    pub async fn nack(&self, requeue: bool) -> Result<(), AckError> {
        self.acks()?
            .nack(self.inner.delivery_tag, requeue, false)
            .await
    }

    /// Rejects it; like [`nack`](Self::nack).
    pub async fn reject(&self, requeue: bool) -> Result<(), AckError> {
        self.acks()?
            .nack(self.inner.delivery_tag, requeue, true)
            .await
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
    id: u64,
    queue: String,
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
        self.client
            .shared()
            .consumers
            .lock()
            .unwrap()
            .get(&self.id)
            .map(|r| r.queue())
            .unwrap_or_else(|| self.queue.clone())
    }

    /// A stream consumer: the highest offset up to which every delivery was
    /// settled (acknowledged, rejected, or taken with `no_ack`); where a
    /// failover resumes from (the offset after it). `None` before the
    /// first, and for a consumer of a classic or quorum queue. An
    /// application that persists it can start again after a restart with
    /// [`StreamOffset::Offset`]`(last + 1)`.
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
        let item = std::task::ready!(self.rx.poll_recv(cx));
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
        let item = self.rx.try_recv().ok();
        self.taken(&item);
        item
    }

    /// A `no_ack` stream delivery counts as settled once taken.
    fn taken(&self, item: &Option<Item>) {
        if let (Some(cursor), Some(Ok(delivery))) = (&self.stream, item)
            && delivery.acks.is_none()
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
        let shared = self.client.shared().clone();
        let Some(record) = shared.consumers.lock().unwrap().get(&self.id).cloned() else {
            return;
        };
        let subscribed = {
            let sub = record.subscribed.lock().await;
            record.cancelled.store(true, Ordering::SeqCst);
            sub.as_ref().map(|s| (s.channel.clone(), s.generation))
        };
        if let Some((channel, generation)) = subscribed {
            let tag = consumer_tag(record.id, generation);
            let _ = tokio::time::timeout(
                shared.options.operation_timeout,
                channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
            )
            .await;
        }
    }
}

impl Stream for Consumer {
    type Item = Result<Delivery, ConsumeError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_item(cx)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let shared = self.client.shared();
        let removed = shared.consumers.lock().unwrap().remove(&self.id);
        if let Some(record) = removed
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let shared = shared.clone();
            shared.draining.fetch_add(1, Ordering::SeqCst);
            handle.spawn(async move {
                let _done = Draining(shared);
                if let Some(sub) = record.subscribed.lock().await.take() {
                    // Acks recorded but not yet sent go out first.
                    if let Some(acks) = &sub.acks {
                        acks.close().await;
                    }
                    let _ = sub.channel.close(200, "consumer dropped".into()).await;
                }
            });
        }
    }
}

/// Counts a dropped consumer as draining until its last acks are sent.
struct Draining(Arc<Shared>);

impl Drop for Draining {
    fn drop(&mut self) {
        self.0.draining.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(crate) async fn start(
    client: Client,
    queue: &str,
    options: ConsumeOptions,
) -> Result<Consumer, ConsumeError> {
    let shared = client.shared().clone();
    let stream =
        StreamCursor::for_consumer(options.stream_offset, &options.arguments).map(Arc::new);
    let prefetch = effective_prefetch(&shared, &options, stream.is_some());
    let capacity = usize::from(prefetch.max(16));
    let (tx, rx) = mpsc::channel(capacity);
    let record = Arc::new(ConsumerRecord {
        id: shared.next_id.fetch_add(1, Ordering::Relaxed),
        queue: std::sync::Mutex::new(queue.to_owned()),
        options,
        tx,
        subscribed: tokio::sync::Mutex::new(None),
        cancelled: std::sync::atomic::AtomicBool::new(false),
        stream: stream.clone(),
    });
    // The consumer exists from here on, and owns the registration: if this
    // function returns an error or is cancelled (a caller's timeout, a
    // dropped future), dropping it unregisters the record and closes the
    // subscription it may have got, as for any dropped consumer.
    let consumer = Consumer {
        rx,
        ended: false,
        id: record.id,
        queue: record.queue(),
        client,
        stream,
    };
    let timeout = shared.options.operation_timeout;
    let deadline = crate::connection::deadline_after(timeout);
    let mut newer_than = 0;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let session = match shared.wait_up_for(newer_than, left).await {
            Ok(Ok(s)) => s,
            Ok(Err(reason)) => return Err(ConsumeError::Closed { reason }),
            Err(_) => return Err(ConsumeError::Timeout(timeout)),
        };
        // Registered before subscribing, so a recovery that starts now replays it.
        shared
            .consumers
            .lock()
            .unwrap()
            .insert(record.id, record.clone());
        match tokio::time::timeout_at(deadline, subscribe(&shared, &session, &record)).await {
            Ok(Ok(())) => return Ok(consumer),
            // The connection died under it: the supervisor subscribes it on
            // the next one (or this loop does, if the supervisor has not yet).
            Ok(Err(_)) if !session.alive() => newer_than = session.generation,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(ConsumeError::Timeout(timeout)),
        }
    }
}

/// Subscribes `record` on `session` unless it already is; spawns its pump.
/// (Boxed: the pump calls it again, and the cycle needs a named `Send` type.)
pub(crate) fn subscribe<'a>(
    shared: &'a Arc<Shared>,
    session: &'a Arc<Session>,
    record: &'a Arc<ConsumerRecord>,
) -> futures::future::BoxFuture<'a, Result<(), ConsumeError>> {
    Box::pin(subscribe_inner(shared, session, record))
}

async fn subscribe_inner(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    record: &Arc<ConsumerRecord>,
) -> Result<(), ConsumeError> {
    let mut subscribed = record.subscribed.lock().await;
    if record.tx.is_closed() {
        // The consumer was dropped: subscribing again would leave a broker
        // consumer nobody reads.
        return Err(ConsumeError::Closed {
            reason: "consumer dropped".into(),
        });
    }
    if record.cancelled.load(Ordering::SeqCst) {
        return Ok(()); // cancelled on purpose: no new deliveries, ever
    }
    if let Some(sub) = subscribed.as_ref()
        && sub.generation >= session.generation
        && sub.channel.status().connected()
    {
        return Ok(());
    }
    let prefetch = effective_prefetch(shared, &record.options, record.stream.is_some());
    // A stream consumer subscribes from where it is, not where it started.
    let arguments = match &record.stream {
        Some(cursor) => cursor.arguments(&record.options.arguments),
        None => record.options.arguments.clone(),
    };
    let channel = open_channel(&session.connection, false, prefetch)
        .await
        .map_err(|e| consume_error(&e, &record.queue()))?;
    // If this future is dropped before the end (a timeout, a cancelled
    // `consume`, a re-subscription given up by recovery), the channel is
    // closed, which cancels a broker consumer that `basic.consume` may
    // already have made. Dropping the last handle is not enough: lapin keeps
    // the channel open while a `basic.consume` waits for its `consume-ok`,
    // then registers that consumer, and the broker would deliver up to the
    // prefetch to it, held unacknowledged until the connection closes.
    let mut unfinished = Unfinished {
        channel: Some(channel.clone()),
        bound: shared.options.operation_timeout,
    };
    let tag = consumer_tag(record.id, session.generation);
    let consumer = channel
        .basic_consume(
            record.queue().as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions {
                no_local: false,
                no_ack: record.options.no_ack,
                exclusive: record.options.exclusive,
                nowait: false,
            },
            arguments,
        )
        .await
        .map_err(|e| consume_error(&e, &record.queue()))?;
    let metrics = crate::metrics::Consume::new(&record.queue());
    // Flush acks when half the prefetch window is acknowledged.
    let acks = (!record.options.no_ack).then(|| {
        Acks::start(
            channel.clone(),
            u64::from(prefetch.max(2) / 2),
            shared.options.timings.ack_flush_delay,
            shared.options.operation_timeout,
            record.stream.clone(),
            metrics,
        )
    });
    *subscribed = Some(Subscribed {
        generation: session.generation,
        channel: channel.clone(),
        acks: acks.clone(),
    });
    unfinished.channel = None; // subscribed: the pump owns the channel now
    drop(subscribed);
    tokio::spawn(pump(
        acks,
        Arc::downgrade(shared),
        session.clone(),
        record.clone(),
        consumer,
        channel,
        shared.options.close_timeout,
    ));
    Ok(())
}

/// Closes the channel of a subscription that did not finish (see
/// `subscribe_inner`), bounded by `bound`, when dropped still holding it.
struct Unfinished {
    channel: Option<Channel>,
    bound: Duration,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(channel) = self.channel.take()
            && channel.status().connected()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let bound = self.bound;
            runtime.spawn(async move {
                let close = channel.close(200, "subscription abandoned".into());
                let _ = tokio::time::timeout(bound, close).await;
            });
        }
    }
}

/// The prefetch a consumer subscribes with: its own, else the client's;
/// a stream consumer never goes without one.
fn effective_prefetch(shared: &Shared, options: &ConsumeOptions, stream: bool) -> u16 {
    match options.prefetch.unwrap_or(shared.options.prefetch) {
        0 if stream => STREAM_DEFAULT_PREFETCH,
        prefetch => prefetch,
    }
}

/// The consumer tag of consumer `id` subscribed on session `generation`.
fn consumer_tag(id: u64, generation: u64) -> String {
    format!("rabbitkit-{id}-{generation}")
}

/// Forwards one subscription's deliveries to the user's stream.
async fn pump(
    acks: Option<Arc<Acks>>,
    shared: Weak<Shared>,
    session: Arc<Session>,
    record: Arc<ConsumerRecord>,
    mut consumer: lapin::Consumer,
    channel: Channel,
    // Bounds the teardown of a dropped stream once the client is gone.
    close_timeout: Duration,
) {
    let tag = consumer_tag(record.id, session.generation);
    let metrics = crate::metrics::Consume::new(&record.queue());
    loop {
        let item = tokio::select! {
            item = consumer.next() => item,
            // The user dropped the stream (perhaps before any delivery came).
            _ = record.tx.closed() => {
                abandon(&shared, &record, acks.as_deref(), &channel, &tag, close_timeout).await;
                return;
            }
        };
        match item {
            Some(Ok(inner)) => {
                metrics.delivered();
                if let Some(acks) = &acks
                    && let Some(offset) = crate::stream::offset_of(&inner.properties)
                {
                    acks.track(inner.delivery_tag, offset);
                }
                let delivery = Delivery {
                    inner,
                    acks: acks.clone(),
                    requeue_on_drop: true,
                };
                if record.tx.send(Ok(delivery)).await.is_err() {
                    // The user dropped the stream.
                    abandon(
                        &shared,
                        &record,
                        acks.as_deref(),
                        &channel,
                        &tag,
                        close_timeout,
                    )
                    .await;
                    return;
                }
            }
            // lapin yields one error and may then hang: stop reading.
            Some(Err(_)) | None => break,
        }
    }
    // The subscription ended: connection lost, channel error, or broker cancel.
    drop(consumer);
    if record.cancelled.load(Ordering::SeqCst) {
        // `Consumer::cancel`: deliveries already received are still being
        // handled and acknowledged on this channel; dropping the `Consumer`
        // closes it.
        return;
    }
    if let Some(acks) = &acks {
        acks.close().await;
    }
    {
        // Only this subscription is cleared: channel ids start again on every
        // connection, so a newer subscription may have this one's id.
        let mut subscribed = record.subscribed.lock().await;
        if subscribed.as_ref().is_some_and(|sub| {
            sub.generation == session.generation && sub.channel.id() == channel.id()
        }) {
            *subscribed = None;
        }
    }
    let _ = channel.close(200, "consumer ended".into()).await;
    let mut attempt = 0u32;
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let timings = &shared.options.timings;
        if attempt >= timings.consumer_restart_attempts {
            break;
        }
        attempt += 1;
        if record.tx.is_closed() || !shared.consumers.lock().unwrap().contains_key(&record.id) {
            return;
        }
        let delay = timings.consumer_restart_delay.saturating_mul(attempt);
        tokio::time::sleep(delay).await;
        if !session.alive()
            || shared
                .current()
                .is_none_or(|s| s.generation != session.generation)
        {
            return; // the supervisor re-subscribes it after the reconnect
        }
        let step = shared.options.operation_timeout;
        match tokio::time::timeout(step, subscribe(&shared, &session, &record)).await {
            Ok(Ok(())) => return,
            Ok(Err(ConsumeError::QueueNotFound { .. })) => break,
            Ok(Err(e)) => {
                tracing::warn!(target: "rabbitkit", queue = %record.queue(), error = %e, "consumer restart failed");
            }
            Err(_) => {
                tracing::warn!(target: "rabbitkit", queue = %record.queue(), "consumer restart timed out");
            }
        }
    }
    end_stream(&shared, &record).await;
}

/// Unregisters `record` and ends its stream with [`ConsumeError::Cancelled`]:
/// the queue is gone and the consumer cannot be restarted.
async fn end_stream(shared: &Weak<Shared>, record: &ConsumerRecord) {
    if let Some(shared) = shared.upgrade() {
        shared.consumers.lock().unwrap().remove(&record.id);
    }
    let _ = record
        .tx
        .send(Err(ConsumeError::Cancelled {
            queue: record.queue(),
        }))
        .await;
}

/// Tears down a subscription whose stream the user dropped: the record is
/// unregistered (never replayed after a reconnect), the acks recorded go
/// out, and the broker consumer is cancelled with its channel.
async fn abandon(
    shared: &Weak<Shared>,
    record: &ConsumerRecord,
    acks: Option<&Acks>,
    channel: &Channel,
    tag: &str,
    close_timeout: Duration,
) {
    if let Some(shared) = shared.upgrade() {
        shared.consumers.lock().unwrap().remove(&record.id);
    }
    let bound = match shared.upgrade() {
        Some(shared) => shared.options.operation_timeout,
        None => close_timeout,
    };
    let _ = tokio::time::timeout(bound, async {
        if let Some(acks) = acks {
            acks.close().await;
        }
        let _ = channel
            .basic_cancel(tag.into(), BasicCancelOptions::default())
            .await;
        let _ = channel.close(200, "consumer dropped".into()).await;
    })
    .await;
}

/// Retries subscribing `record` on `session` with growing delays until it
/// works, the consumer is dropped, or the session ends (the next recovery
/// takes over then).
pub(crate) async fn keep_trying(
    shared: Weak<Shared>,
    session: Arc<Session>,
    record: Arc<ConsumerRecord>,
) {
    let mut attempt = 0u32;
    loop {
        attempt = attempt.saturating_add(1);
        let delay = match shared.upgrade() {
            Some(shared) => {
                let backoff = &shared.options.timings.resubscribe_backoff;
                if backoff.max_attempts.is_some_and(|max| attempt > max) {
                    return; // the next recovery re-subscribes it
                }
                backoff.delay_for(attempt)
            }
            None => return,
        };
        tokio::time::sleep(delay).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if record.tx.is_closed()
            || !session.alive()
            || !shared.consumers.lock().unwrap().contains_key(&record.id)
            || shared
                .current()
                .is_some_and(|s| s.generation != session.generation)
        {
            return;
        }
        let step = shared.options.connect_timeout * 2;
        match tokio::time::timeout(step, subscribe(&shared, &session, &record)).await {
            Ok(Ok(())) => {
                tracing::info!(target: "rabbitkit", queue = %record.queue(), "consumer re-subscribed");
                return;
            }
            Ok(Err(ConsumeError::QueueNotFound { .. })) => {
                // Nothing will bring it back: tell the stream, and stop
                // replaying the consumer after reconnects.
                tracing::warn!(target: "rabbitkit", queue = %record.queue(), "queue gone: consumer cancelled");
                let weak = Arc::downgrade(&shared);
                drop(shared); // the user may be slow to read the error
                end_stream(&weak, &record).await;
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(target: "rabbitkit", queue = %record.queue(), error = %e, "consumer still not re-subscribed")
            }
            Err(_) => {
                tracing::warn!(target: "rabbitkit", queue = %record.queue(), "consumer re-subscription timed out")
            }
        }
    }
}
