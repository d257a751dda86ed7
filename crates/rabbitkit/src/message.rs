//! Typed messages: what a subscriber receives, and how a publish is labelled.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use rabbitkit_core::{
    AMQPValue, AckError, BasicProperties, Client, Consumer, Delivery, FieldTable, OutgoingMessage,
    PublishError,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::engine::{HandleOptions, Outcome, Settle, call_handler, drive, handled};
// The failure policy and the headers it sets live with the handler engine
// (`engine.rs`); their paths under `rabbitkit::message` stay.
pub use crate::engine::{
    ATTEMPTS_HEADER, HandleReport, MAX_IN_QUEUE_RETRIES, ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER, OnError, PARKED_ERROR_HEADER, PARKED_FROM_HEADER, PARKED_SUFFIX,
    RETRIES_HEADER, RetryPolicy, SHARED_PARKING_QUEUE, header, original_routing_key, retries,
};
use crate::error::{ReceiveError, SendError};
use crate::report::Report;

/// Per-message publishing settings; these override the defaults.
///
/// Every message rabbitkit publishes for you is persistent (delivery mode
/// 2) and confirmed: [`Queue::send`](crate::Queue::send),
/// [`WorkQueue::submit`](crate::WorkQueue::submit) and every
/// `Exchange::publish`, whatever the durability of the exchange or the
/// queues it reaches. [`persistent(false)`](Self::persistent) opts out: a
/// transient message in a classic queue lives in memory only and is lost
/// when its node restarts (quorum queues keep every message on disk).
/// RPC requests and replies are transient by design (see [`RpcClient`](crate::RpcClient)).
///
/// ```
/// use std::time::Duration;
/// use rabbitkit::PublishOptions;
/// let o = PublishOptions::new().persistent(false).gzip(true).expiration(Duration::from_secs(60));
/// assert_eq!(o.persistent, Some(false));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use]
pub struct PublishOptions {
    /// Written to disk by the broker (delivery mode 2). `None`: the default, persistent.
    pub persistent: Option<bool>,
    /// Fail with `Unroutable` when no queue receives it. `None`: the
    /// pattern's default, mandatory for a queue, a direct, topic or headers
    /// exchange and a partitioned queue, not for a fanout exchange.
    pub mandatory: Option<bool>,
    /// Compress the body (`content_encoding: gzip`).
    pub gzip: bool,
    /// A `message_id` (one is generated otherwise).
    pub message_id: Option<String>,
    /// Per-message TTL.
    pub expiration: Option<Duration>,
    /// Priority (for priority queues).
    pub priority: Option<u8>,
    /// Extra headers.
    pub headers: Option<FieldTable>,
    /// Deliver it this much later (see [`delay`](Self::delay)).
    pub delay: Option<Duration>,
    /// The `type` property (see [`message_type`](Self::message_type)).
    pub message_type: Option<String>,
}

impl PublishOptions {
    /// No overrides.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets persistence (default: persistent).
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = Some(persistent);
        self
    }
    /// Sets `mandatory`: with `true`, a message no queue takes fails with
    /// `PublishError::Unroutable` (the broker returns it); with `false` it
    /// is dropped and the publish succeeds. The default depends on where it
    /// goes: mandatory to a direct, topic or headers exchange (a binding is
    /// expected: an order published before its queue is bound is an error,
    /// not a silent loss), not to a fanout exchange (which drops a message
    /// nobody subscribed to, as the tutorials' `emit_log` expects); sends to
    /// a queue and partitioned publishes are always mandatory.
    ///
    /// ```no_run
    /// # async fn run(client: rabbitkit::Client) -> Result<(), rabbitkit::Report> {
    /// use rabbitkit::{Exchange, PublishOptions};
    /// let events = Exchange::topic("order_events").declare(&client).await?;
    /// match events.publish("order.placed.eu", &"order 7".to_string()).await {
    ///     Ok(_) => println!("a queue has it"),
    ///     Err(e) if e.is_unroutable() => println!("no queue is bound for order.placed.eu"),
    ///     Err(e) => return Err(e.into()),
    /// }
    /// // Fire and forget, as the tutorials' emit_log_topic does:
    /// let dropped_if_unbound = PublishOptions::new().mandatory(false);
    /// events.publish_with("order.placed.eu", &"order 8".to_string(), dropped_if_unbound).await?;
    /// # Ok(()) }
    /// ```
    pub fn mandatory(mut self, mandatory: bool) -> Self {
        self.mandatory = Some(mandatory);
        self
    }
    /// Compresses the body with gzip.
    pub fn gzip(mut self, gzip: bool) -> Self {
        self.gzip = gzip;
        self
    }
    /// Sets the message id (at most 255 bytes; a longer one fails the send
    /// with `PublishError::Invalid`).
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }
    /// Sets a per-message TTL (at most
    /// [`MAX_EXPIRATION`](rabbitkit_core::validate::MAX_EXPIRATION), about
    /// 49.7 days, the broker's limit; a longer one is clamped to it).
    pub fn expiration(mut self, ttl: Duration) -> Self {
        self.expiration = Some(ttl);
        self
    }
    /// Sets the priority: a queue that honours priorities delivers higher
    /// ones first. A quorum queue on RabbitMQ 4.3+ has 32 strict priorities
    /// (0–31, higher counts as 31) with no queue argument; on 4.0–4.2 it
    /// has two (0–4 normal, 5 and above high, delivered two high for one
    /// normal while both wait); 3.x quorum queues and
    /// streams ignore it. A classic queue honours it when declared with
    /// [`max_priority`](crate::QueueBuilder::max_priority) (higher counts
    /// as that maximum). [`ServerInfo::quorum_queue_priorities`](crate::ServerInfo::quorum_queue_priorities)
    /// says which applies.
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }
    /// Delivers the message `delay` from now instead of at once, to the
    /// same exchange and routing key, with no broker plugin: it waits in
    /// rabbitkit's delay queues (durable quorum queues, declared by the
    /// first delayed send; see [`rabbitkit_core::delay`]). The send is
    /// confirmed once the broker holds it, replicated, for the whole wait:
    /// it survives the loss of a node meanwhile.
    ///
    /// Rounded up to [`DELAY_UNIT`](rabbitkit_core::delay::DELAY_UNIT)
    /// (100 ms), so never early; usually within a few tens of milliseconds
    /// after. Zero sends at once; more than
    /// [`MAX_DELAY`](rabbitkit_core::delay::MAX_DELAY) (about 77 days) fails
    /// the send with `PublishError::Invalid`, nothing sent, and so does a
    /// delayed message with an [`expiration`](Self::expiration) (it would
    /// arrive early; give the target queue a TTL instead). If the target
    /// routes the message nowhere when the delay ends (a fanout without
    /// subscribers, a deleted queue), it is dropped, like any unroutable
    /// publish.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rabbitkit::PublishOptions;
    /// let in_thirty_minutes = PublishOptions::new().delay(Duration::from_secs(30 * 60));
    /// assert_eq!(in_thirty_minutes.delay, Some(Duration::from_secs(1800)));
    /// ```
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
    /// Sets the message's `type` property: what kind of message it is
    /// (e.g. `order.placed`), which [`Router::route_type`](crate::Router::route_type)
    /// routes on and [`Incoming::message_type`] reads. At most 255 bytes
    /// (a longer one fails the send with `PublishError::Invalid`).
    pub fn message_type(mut self, kind: impl Into<String>) -> Self {
        self.message_type = Some(kind.into());
        self
    }
    /// Adds a header. A key over 255 bytes (the AMQP limit) fails the send
    /// with `PublishError::Invalid` (nothing is sent).
    pub fn header(mut self, key: &str, value: impl Into<crate::HeaderValue>) -> Self {
        let table = self.headers.get_or_insert_with(FieldTable::default);
        if rabbitkit_core::validate::check_short_string(key).is_ok() {
            table.insert(key.into(), value.into().to_amqp());
        } else {
            // No panic in a builder: remembered, and refused at the send.
            table.insert(INVALID_HEADER_KEY.into(), AMQPValue::LongString(key.into()));
        }
        self
    }
}

/// Where [`PublishOptions::header`] keeps a key too long to send, for
/// [`outgoing`] to refuse.
const INVALID_HEADER_KEY: &str = "x-rabbitkit-invalid-header-key";

/// A header key [`PublishOptions::header`] could not take, as the error of the send.
fn invalid_header_key(opts: &PublishOptions) -> Result<(), PublishError> {
    let Some(AMQPValue::LongString(key)) = opts
        .headers
        .as_ref()
        .and_then(|h| h.inner().get(INVALID_HEADER_KEY))
    else {
        return Ok(());
    };
    let key = key.to_string();
    let reason = rabbitkit_core::validate::check_short_string(&key).unwrap_err();
    Err(PublishError::Invalid {
        what: "header key".to_owned(),
        value: key,
        reason,
    })
}

/// Encodes `value` and builds the outgoing message: persistent unless
/// `opts` says otherwise.
pub(crate) fn outgoing<T: Serialize + ?Sized>(
    exchange: &str,
    routing_key: &str,
    value: &T,
    opts: &PublishOptions,
    extra: impl FnOnce(BasicProperties) -> BasicProperties,
) -> Result<OutgoingMessage, SendError> {
    invalid_header_key(opts)?;
    let (body, mut props) = codec::encode(value, opts.gzip)?;
    if opts.persistent.unwrap_or(true) {
        props = props.with_delivery_mode(2);
    }
    if let Some(id) = &opts.message_id {
        rabbitkit_core::validate::check_short_string(id).map_err(|reason| {
            PublishError::Invalid {
                what: "message id".to_owned(),
                value: id.clone(),
                reason,
            }
        })?;
        props = props.with_message_id(id.as_str().into());
    }
    if let Some(ttl) = opts.expiration {
        props = props.with_expiration(rabbitkit_core::validate::expiration(ttl));
    }
    if let Some(p) = opts.priority {
        props = props.with_priority(p);
    }
    if let Some(kind) = &opts.message_type {
        rabbitkit_core::validate::check_short_string(kind).map_err(|reason| {
            PublishError::Invalid {
                what: "message type".to_owned(),
                value: kind.clone(),
                reason,
            }
        })?;
        props = props.with_type(kind.as_str().into());
    }
    props = props.with_timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    if let Some(h) = &opts.headers {
        props = props.with_headers(h.clone());
    }
    let props = extra(props);
    let mut msg = OutgoingMessage::new(exchange, routing_key, body)
        .properties(props)
        .mandatory(opts.mandatory.unwrap_or(false));
    msg.delay = opts.delay;
    Ok(msg)
}

/// How many times a message was dead-lettered from `queue` for `reason`,
/// from its `x-death` header (0 without one).
///
/// ```
/// use rabbitkit::{AMQPValue, BasicProperties, FieldTable};
/// let mut death = FieldTable::default();
/// death.insert("queue".into(), AMQPValue::LongString("jobs".into()));
/// death.insert("reason".into(), AMQPValue::LongString("rejected".into()));
/// death.insert("count".into(), AMQPValue::LongLongInt(2));
/// let mut headers = FieldTable::default();
/// headers.insert("x-death".into(), AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()));
/// let props = BasicProperties::default().with_headers(headers);
/// assert_eq!(rabbitkit::message::death_count(&props, "jobs", "rejected"), 2);
/// assert_eq!(rabbitkit::message::death_count(&props, "jobs", "expired"), 0);
/// ```
pub fn death_count(properties: &BasicProperties, queue: &str, reason: &str) -> u64 {
    let Some(AMQPValue::FieldArray(deaths)) = header(properties, "x-death") else {
        return 0;
    };
    let text = |v: Option<&AMQPValue>| match v {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        Some(AMQPValue::ShortString(s)) => s.to_string(),
        _ => String::new(),
    };
    deaths
        .as_slice()
        .iter()
        .filter_map(|d| match d {
            AMQPValue::FieldTable(t)
                if text(t.inner().get("queue")) == queue
                    && text(t.inner().get("reason")) == reason =>
            {
                t.inner().get("count")
            }
            _ => None,
        })
        .map(|c| match c {
            AMQPValue::LongLongInt(n) => u64::try_from(*n).unwrap_or(0),
            AMQPValue::LongInt(n) => u64::try_from(*n).unwrap_or(0),
            AMQPValue::LongUInt(n) => u64::from(*n),
            AMQPValue::ShortInt(n) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// A typed message received, with the means to acknowledge it.
#[derive(Debug)]
pub struct Received<T> {
    /// The decoded body.
    pub body: T,
    delivery: Delivery,
}

impl<T> Received<T> {
    /// Acknowledges it.
    pub async fn ack(&self) -> Result<(), AckError> {
        self.delivery.ack().await
    }

    /// Its offset in the stream it was read from (`x-stream-offset`);
    /// `None` for a message from a classic or quorum queue.
    pub fn stream_offset(&self) -> Option<u64> {
        self.delivery.stream_offset()
    }
    /// Gives it back: requeued, or (`requeue: false`) dead-lettered/dropped.
    pub async fn nack(&self, requeue: bool) -> Result<(), AckError> {
        self.delivery.nack(requeue).await
    }
    /// Rejects it.
    pub async fn reject(&self, requeue: bool) -> Result<(), AckError> {
        self.delivery.reject(requeue).await
    }
    /// Gives it back to the queue unprocessed (requeued), as dropping it
    /// unsettled does, but on purpose: no warning is logged. See
    /// [`Delivery::give_back`].
    pub fn give_back(self) {
        self.delivery.give_back();
    }
    /// The raw delivery (properties, routing key, redelivered flag, body bytes).
    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }
    /// The routing key it was published with.
    pub fn routing_key(&self) -> &str {
        self.delivery.routing_key()
    }
    /// Whether it was delivered before.
    pub fn redelivered(&self) -> bool {
        self.delivery.redelivered()
    }
    /// Its queue's count of failed deliveries before this one
    /// (`x-delivery-count`); see [`Delivery::delivery_count`].
    pub fn delivery_count(&self) -> Option<u64> {
        self.delivery.delivery_count()
    }
    /// How many times it was acquired before (`x-acquired-count`); see
    /// [`Delivery::acquired_count`].
    pub fn acquired_count(&self) -> Option<u64> {
        self.delivery.acquired_count()
    }
    /// The AMQP properties.
    pub fn properties(&self) -> &BasicProperties {
        self.delivery.properties()
    }
    /// One header's value, if present.
    pub fn header(&self, key: &str) -> Option<&AMQPValue> {
        header(self.delivery.properties(), key)
    }
    /// The message's headers, readable: `headers().to_string()` is
    /// `{format=pdf, type=report}`, `headers().get("format")` a typed value.
    pub fn headers(&self) -> crate::Headers {
        self.delivery
            .properties()
            .headers()
            .as_ref()
            .map(crate::Headers::from_table)
            .unwrap_or_default()
    }
    /// How many times the broker dead-lettered this message from `queue`
    /// for `reason` (`rejected`, `expired`, `maxlen`, `delivery_limit`), read
    /// from the `x-death` header: the number of failed attempts in a
    /// TTL + dead-letter retry loop.
    pub fn death_count(&self, queue: &str, reason: &str) -> u64 {
        death_count(self.delivery.properties(), queue, reason)
    }
    /// How many times [`OnError::RequeueOnce`] retried it (its
    /// [`RETRIES_HEADER`]; 0 for a first attempt).
    pub fn retries(&self) -> u64 {
        retries(self.delivery.properties())
    }
    /// Body and delivery apart.
    pub fn into_parts(self) -> (T, Delivery) {
        (self.body, self.delivery)
    }
}

/// A message a handler runs on, with what the handler may need to know
/// about it: its id (to deduplicate on), routing key, exchange, `type`,
/// headers, how many times it was tried, whether it was delivered before.
/// The handler loop settles it (the handler returns `Ok` or `Err`): it
/// has no ack of its own. Handlers that need only the body take `T`
/// ([`Subscription::handle_with`], [`WorkQueue::work`](crate::WorkQueue::work));
/// those that need more take `Incoming<T>`
/// ([`Subscription::handle_incoming`], [`WorkQueue::work_incoming`](crate::WorkQueue::work_incoming),
/// [`Router::route_incoming`](crate::Router::route_incoming)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Incoming<T> {
    /// The decoded body.
    pub body: T,
    properties: BasicProperties,
    exchange: String,
    routing_key: String,
    redelivered: bool,
}

impl<T> Incoming<T> {
    pub(crate) fn new(body: T, delivery: &Delivery) -> Self {
        Self {
            body,
            properties: delivery.properties().clone(),
            exchange: delivery.exchange().to_owned(),
            routing_key: original_routing_key(delivery).to_owned(),
            redelivered: delivery.redelivered(),
        }
    }

    /// Its `message_id` (rabbitkit gives every publish one, kept when it is
    /// re-sent or retried): what to deduplicate on.
    pub fn message_id(&self) -> Option<&str> {
        self.properties.message_id().as_ref().map(|id| id.as_str())
    }

    /// The routing key it was published with (kept by a retried copy,
    /// which comes back through the default exchange).
    pub fn routing_key(&self) -> &str {
        &self.routing_key
    }

    /// The exchange it came through (`""` for a retried copy: see
    /// [`ORIGINAL_EXCHANGE_HEADER`]).
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// Its `type` property ([`PublishOptions::message_type`]), which
    /// [`Router::route_type`](crate::Router::route_type) matches on.
    pub fn message_type(&self) -> Option<&str> {
        self.properties.kind().as_ref().map(|k| k.as_str())
    }

    /// Which attempt this is: 1 the first time, 2 after one retry
    /// ([`RETRIES_HEADER`] + 1). A redelivery after a failover is not a
    /// new attempt (see [`redelivered`](Self::redelivered)).
    pub fn attempt(&self) -> u64 {
        retries(&self.properties).saturating_add(1)
    }

    /// Whether the broker delivered it before (e.g. its consumer's
    /// connection was lost before the ack): it may have been handled.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// How many earlier deliveries its quorum queue counted as failed
    /// (`x-delivery-count`, checked against the queue's delivery limit);
    /// `None` on a first delivery, a classic queue or a stream. See
    /// [`Delivery::delivery_count`] for what counts on each RabbitMQ
    /// version.
    pub fn delivery_count(&self) -> Option<u64> {
        rabbitkit_core::Delivery::count_in(&self.properties, rabbitkit_core::DELIVERY_COUNT)
    }

    /// How many times a consumer acquired it before (`x-acquired-count`,
    /// RabbitMQ 4.3+ quorum queues); `None` on a first delivery or where
    /// the broker does not count.
    pub fn acquired_count(&self) -> Option<u64> {
        rabbitkit_core::Delivery::count_in(&self.properties, rabbitkit_core::ACQUIRED_COUNT)
    }

    /// The message's headers, readable.
    pub fn headers(&self) -> crate::Headers {
        self.properties
            .headers()
            .as_ref()
            .map(crate::Headers::from_table)
            .unwrap_or_default()
    }

    /// One header's value, if present.
    pub fn header(&self, key: &str) -> Option<&AMQPValue> {
        header(&self.properties, key)
    }

    /// All its AMQP properties.
    pub fn properties(&self) -> &BasicProperties {
        &self.properties
    }
}

/// A typed stream of messages from one queue; survives failover.
///
/// Each item is a [`Received<T>`] to acknowledge, or a [`ReceiveError`]:
/// a body that did not decode comes with its raw delivery, and the stream
/// goes on.
pub struct Subscription<T> {
    pub(crate) consumer: Consumer,
    pub(crate) client: Client,
    temporary: bool,
    pub(crate) max_inflated: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("queue", &self.consumer.queue())
            .finish_non_exhaustive()
    }
}

impl<T> Subscription<T> {
    pub(crate) fn new(consumer: Consumer, client: Client, temporary: bool) -> Self {
        Self {
            consumer,
            client,
            temporary,
            max_inflated: codec::DEFAULT_MAX_INFLATED,
            _t: PhantomData,
        }
    }

    /// The queue consumed from.
    pub fn queue(&self) -> &str {
        self.consumer.queue()
    }

    /// A stream subscription: the highest offset up to which every message
    /// was settled (acknowledged or rejected), where a failover resumes
    /// from (the offset after it). Persist it to start again after a
    /// restart with [`StreamOffset::Offset`](crate::StreamOffset::Offset)`(last + 1)`.
    /// `None` before the first, and for a classic or quorum queue.
    pub fn last_acked_offset(&self) -> Option<u64> {
        self.consumer.last_acked_offset()
    }

    /// Sets the most bytes a gzip body may inflate to (default
    /// [`codec::DEFAULT_MAX_INFLATED`], 128 MiB). A body beyond it is a
    /// [`ReceiveError::Decode`] of kind
    /// [`DecodeErrorKind::TooLarge`](codec::DecodeErrorKind::TooLarge), with
    /// its delivery, and no more than the limit is ever held in memory.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn run(queue: rabbitkit::Queue) -> Result<(), Box<dyn std::error::Error>> {
    /// let sub = queue.subscribe::<String>().await?.max_inflated(1024 * 1024);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn max_inflated(mut self, bytes: usize) -> Self {
        self.max_inflated = bytes;
        self
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        if self.temporary {
            // The broker deletes the auto-delete queue when this consumer goes;
            // stop re-declaring it after reconnects.
            self.client.forget_queue(&self.consumer.current_queue());
        }
    }
}

impl<T: DeserializeOwned> Subscription<T> {
    /// The next message; `None` when the subscription has ended.
    pub async fn recv(&mut self) -> Option<Result<Received<T>, ReceiveError>> {
        self.next().await
    }
}

impl<T: DeserializeOwned> Stream for Subscription<T> {
    type Item = Result<Received<T>, ReceiveError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.consumer).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(ReceiveError::Consume(e)))),
            Poll::Ready(Some(Ok(mut delivery))) => Poll::Ready(Some(
                match codec::decode_with_limit(
                    delivery.body(),
                    delivery.properties(),
                    self.max_inflated,
                ) {
                    Ok(body) => Ok(Received { body, delivery }),
                    Err(error) => {
                        // It will never decode: if the caller drops the
                        // error unsettled, reject it rather than requeue it
                        // forever.
                        delivery.reject_on_drop();
                        Err(ReceiveError::Decode {
                            error,
                            delivery: Box::new(delivery),
                        })
                    }
                },
            )),
        }
    }
}

impl<T: DeserializeOwned> Subscription<T> {
    /// Runs `handler` on every message until the stream ends, one at a
    /// time: `Ok` acks, `Err` is handled per `on_error` (see [`OnError`]),
    /// and so is a panic (its message is the error);
    /// an undecodable body is rejected without requeue (dead-lettered when
    /// the queue has a dead-letter exchange) and never reaches the handler.
    /// Nothing crashes the loop. [`handle_with`](Self::handle_with) adds
    /// concurrency and a graceful stop.
    pub async fn handle<F, Fut>(self, on_error: OnError, handler: F) -> HandleReport
    where
        F: FnMut(T) -> Fut,
        Fut: Future<Output = Result<(), Report>>,
    {
        self.handle_with(HandleOptions::new().on_error(on_error), handler)
            .await
    }

    /// [`handle`](Self::handle) with [`HandleOptions`]: up to
    /// `concurrency` handlers in flight (each message acknowledged when its
    /// own handler ends, in any order), and a [`Shutdown`](crate::Shutdown)
    /// that stops the loop gracefully.
    ///
    /// ```no_run
    /// # async fn run(queue: rabbitkit::Queue) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use rabbitkit::{HandleOptions, Shutdown};
    /// let shutdown = Shutdown::on_signals(Duration::from_secs(10));
    /// let sub = queue.subscribe_with::<String>(rabbitkit::ConsumeOptions::new().prefetch(32)).await?;
    /// let report = sub
    ///     .handle_with(HandleOptions::new().concurrency(16).shutdown(&shutdown), |order| async move {
    ///         println!("{order}");
    ///         Ok(())
    ///     })
    ///     .await;
    /// # Ok(()) }
    /// ```
    pub async fn handle_with<F, Fut>(self, options: HandleOptions, mut handler: F) -> HandleReport
    where
        F: FnMut(T) -> Fut,
        Fut: Future<Output = Result<(), Report>>,
    {
        self.handle_decoded(options, |body, _| handler(body)).await
    }

    /// [`handle_with`](Self::handle_with) for a handler that takes the
    /// message with what it needs to know about it ([`Incoming`]): its id,
    /// routing key, `type`, headers, attempt, redelivered flag.
    ///
    /// ```no_run
    /// # async fn run(queue: rabbitkit::Queue) -> Result<(), Box<dyn std::error::Error>> {
    /// use rabbitkit::{HandleOptions, Incoming};
    /// let sub = queue.subscribe::<String>().await?;
    /// sub.handle_incoming(HandleOptions::new(), |order: Incoming<String>| async move {
    ///     println!("{} (id {:?}, attempt {})", order.body, order.message_id(), order.attempt());
    ///     Ok(())
    /// })
    /// .await;
    /// # Ok(()) }
    /// ```
    pub async fn handle_incoming<F, Fut>(
        self,
        options: HandleOptions,
        mut handler: F,
    ) -> HandleReport
    where
        F: FnMut(Incoming<T>) -> Fut,
        Fut: Future<Output = Result<(), Report>>,
    {
        self.handle_decoded(options, |body, delivery| {
            handler(Incoming::new(body, delivery))
        })
        .await
    }

    /// The handler loop: decodes each body and calls `handler` with it and
    /// its delivery.
    async fn handle_decoded<F, Fut>(
        mut self,
        options: HandleOptions,
        mut handler: F,
    ) -> HandleReport
    where
        F: FnMut(T, &Delivery) -> Fut,
        Fut: Future<Output = Result<(), Report>>,
    {
        let watch = crate::engine::Watch::of(&options, &self.client);
        let settle = Settle::new(
            self.client.clone(),
            self.queue().to_owned(),
            options.on_error,
        );
        let settle = &settle;
        let max_inflated = self.max_inflated;
        drive(
            &mut self.consumer,
            options.concurrency,
            options.shutdown.as_ref(),
            watch,
            |delivery| {
                let decoded = codec::decode_with_limit::<T>(
                    delivery.body(),
                    delivery.properties(),
                    max_inflated,
                );
                let copied = settle.copied_already(&delivery);
                let (work, error) = match decoded {
                    _ if copied => (None, None),
                    Ok(body) => (Some(call_handler(|| handler(body, &delivery))), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                async move {
                    match (work, error) {
                        _ if copied => settle.settle_copied(delivery).await,
                        (Some(work), _) => {
                            let result = handled(work).await;
                            settle.result(delivery, result).await
                        }
                        (None, Some(error)) => settle.undecodable(delivery, error).await,
                        (None, None) => Outcome::Unsettled,
                    }
                }
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_persistent_unless_asked_otherwise() {
        let msg = outgoing("logs", "", "hi", &PublishOptions::new(), |p| p).unwrap();
        assert_eq!(*msg.properties.delivery_mode(), Some(2));
        let msg = outgoing(
            "logs",
            "",
            "hi",
            &PublishOptions::new().persistent(false),
            |p| p,
        )
        .unwrap();
        assert_eq!(*msg.properties.delivery_mode(), None);
    }

    #[test]
    fn retries_are_read_from_the_header() {
        let with = |v: AMQPValue| {
            let mut h = FieldTable::default();
            h.insert(RETRIES_HEADER.into(), v);
            BasicProperties::default().with_headers(h)
        };
        assert_eq!(retries(&BasicProperties::default()), 0);
        assert_eq!(retries(&with(AMQPValue::LongLongInt(1))), 1);
        assert_eq!(retries(&with(AMQPValue::LongInt(2))), 2);
        assert_eq!(retries(&with(AMQPValue::ShortShortUInt(3))), 3);
        assert_eq!(retries(&with(AMQPValue::LongString("1".into()))), 1);
        assert_eq!(retries(&with(AMQPValue::LongLongInt(-1))), 0);
    }
}
