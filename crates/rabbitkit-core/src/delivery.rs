//! [`Delivery`]: one message a consumer received, and how it is settled
//! (ack, nack, reject, or given back when dropped; see `acks.rs`).

use std::sync::Arc;

use lapin::BasicProperties;

use crate::acks::Acks;
use crate::error::AckError;

/// The header in which a quorum queue counts a message's failed deliveries.
pub const DELIVERY_COUNT: &str = "x-delivery-count";

/// The header in which a RabbitMQ 4.3+ quorum queue counts every time a
/// message was acquired by a consumer.
pub const ACQUIRED_COUNT: &str = "x-acquired-count";

/// A count header (`x-delivery-count`, `x-acquired-count`), whatever
/// integer type the broker chose.
pub(crate) fn count_header(properties: &BasicProperties, key: &str) -> Option<u64> {
    use lapin::types::AMQPValue;
    match properties.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::Timestamp(n) => Some(*n),
        _ => None,
    }
}

/// One message received by a [`Consumer`](crate::Consumer).
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
    /// A delivery settled through `acks` (`None`: consumed with `no_ack`).
    pub(crate) fn new(inner: lapin::message::Delivery, acks: Option<Arc<Acks>>) -> Self {
        Self {
            inner,
            acks,
            requeue_on_drop: true,
        }
    }

    /// Whether it was consumed with `no_ack` (nothing to settle).
    pub(crate) fn is_no_ack(&self) -> bool {
        self.acks.is_none()
    }

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

    /// How many earlier deliveries of this message its quorum queue counted
    /// as failed (the `x-delivery-count` header): what the queue's
    /// delivery limit (20 by default since RabbitMQ 4.0) is checked
    /// against. `None` when the broker sent no count: the first delivery,
    /// a classic queue or a stream.
    ///
    /// What counts depends on the broker (see
    /// [`ServerInfo::requeues_count_toward_delivery_limit`](crate::ServerInfo::requeues_count_toward_delivery_limit)):
    /// on RabbitMQ 4.0–4.2 (and 3.x) every return does (a `nack` or
    /// `reject` with requeue, a consumer lost with it unacknowledged); on
    /// 4.3 a `reject` and a lost consumer do, a `nack` with requeue does
    /// not ([`acquired_count`](Self::acquired_count) counts it).
    pub fn delivery_count(&self) -> Option<u64> {
        count_header(&self.inner.properties, DELIVERY_COUNT)
    }

    /// How many times a consumer acquired this message before this
    /// delivery, whatever the outcome (the `x-acquired-count` header of
    /// RabbitMQ 4.3+ quorum queues). `None` when the broker sent no count:
    /// the first delivery, a classic queue or a stream, a broker before
    /// 4.3 (4.0.5 sends none).
    pub fn acquired_count(&self) -> Option<u64> {
        count_header(&self.inner.properties, ACQUIRED_COUNT)
    }

    /// A count header (`DELIVERY_COUNT`, `ACQUIRED_COUNT`) read from
    /// properties kept apart from their delivery; `None` when absent.
    pub fn count_in(properties: &BasicProperties, header: &str) -> Option<u64> {
        count_header(properties, header)
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
    ///
    /// A stream keeps every message and refuses `basic.nack` (RabbitMQ
    /// closes the connection for it): a stream delivery given back (or
    /// dropped) is acknowledged on the wire instead, and
    /// `last_acked_offset` does not pass it.
    pub fn give_back(mut self) {
        if let Some(acks) = self.acks.take() {
            acks.release(self.inner.delivery_tag, self.requeue_on_drop, false);
        }
    }

    /// Whether the subscription it came with has ended (its channel or
    /// connection is gone, or the channel was given up): it can no longer
    /// be settled, and the broker gives it again. A [`Consumer`](crate::Consumer)
    /// never hands out such a delivery (it would be processed twice); it can
    /// only become stale after it was handed out. Always `false` for a
    /// delivery consumed with `no_ack`.
    pub fn is_stale(&self) -> bool {
        self.acks.as_deref().is_some_and(Acks::is_gone)
    }

    fn acks(&self) -> Result<&Acks, AckError> {
        self.acks.as_deref().ok_or(AckError::NoAck)
    }

    /// Acknowledges: the broker forgets the message.
    ///
    /// Acks are coalesced: this returns once the ack is recorded, and the
    /// broker gets one `basic.ack` (`multiple`) for a run of consecutive
    /// acknowledged deliveries, and a single ack for one acknowledged past
    /// a delivery still in progress, at most a millisecond later: a slow
    /// delivery never holds back the acks of those after it. If the channel
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
