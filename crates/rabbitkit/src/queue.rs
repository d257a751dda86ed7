//! Queues: the builder (durable, exclusive, quorum, dead-lettering, TTL,
//! limits) and the declared [`Queue`], which is also the point-to-point
//! pattern: send to a queue through the default exchange, receive from it.
//!
//! Streams ([`Queue::stream`]) are append-only replicated logs read from
//! any offset; see [`QueueBuilder::max_age`] and [`Queue::subscribe_stream`].
//!
//! The defaults follow one rule: *everything you name is durable, and a
//! named queue is a quorum queue; temporary queues are exclusive.* A
//! non-durable queue that is not exclusive (deprecated since RabbitMQ 4,
//! refused by 4.3.0 by default) is refused before it reaches the broker,
//! unless asked for with the deprecated [`Queue::transient`].

use std::time::Duration;

use rabbitkit_core::{
    AMQPValue, Client, ConsumeOptions, Declaration, DeclareError, FieldTable, Publisher, QueueInfo,
    QueueSpec, STREAM_OFFSET, StreamOffset,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{SendError, SubscribeError};
use crate::message::{PublishOptions, Subscription, outgoing};
use crate::names::{MAX_LEN, check_name};

/// The queue type (`x-queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueType {
    /// A classic queue (one node holds it).
    Classic,
    /// A quorum queue: replicated with Raft over the cluster's nodes; the
    /// replacement for the classic mirrored queues that RabbitMQ 4.0
    /// removed. Durable, never exclusive.
    Quorum,
    /// A stream (RabbitMQ 3.9+): an append-only log replicated over the
    /// cluster, which any number of consumers read from any offset; reading
    /// removes nothing. Durable, never exclusive or auto-delete. Retention
    /// is by age and size ([`QueueBuilder::max_age`],
    /// [`QueueBuilder::max_length_bytes`]).
    Stream,
}

/// Queue arguments a stream refuses: the classic and quorum features it
/// does not have (priorities, TTLs, expiry, dead-lettering, length limits in
/// messages, overflow, delivery limits, classic/quorum placement).
const NOT_FOR_STREAMS: &[(&str, &str)] = &[
    ("x-max-priority", "priorities are a classic-queue feature"),
    (
        "x-message-ttl",
        "a stream keeps messages by age (max_age), not per-message TTL",
    ),
    ("x-expires", "a stream does not expire when unused"),
    ("x-dead-letter-exchange", "a stream does not dead-letter"),
    ("x-dead-letter-routing-key", "a stream does not dead-letter"),
    ("x-dead-letter-strategy", "a stream does not dead-letter"),
    (
        "x-max-length",
        "a stream is limited in bytes (max_length_bytes), not in messages",
    ),
    (
        "x-overflow",
        "a stream drops its oldest segments, it never refuses publishes",
    ),
    (
        "x-delivery-limit",
        "delivery limits are a quorum-queue feature",
    ),
    ("x-queue-mode", "queue modes are a classic-queue feature"),
    (
        "x-queue-version",
        "queue versions are a classic-queue feature",
    ),
    (
        "x-queue-master-locator",
        "master locators are a classic-queue feature",
    ),
    (
        "x-quorum-initial-group-size",
        "a quorum-queue argument (streams: x-initial-cluster-size)",
    ),
    ("x-quorum-target-group-size", "a quorum-queue argument"),
];

/// Queue arguments only a stream takes.
const ONLY_FOR_STREAMS: &[&str] = &[
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-stream-filter-size-bytes",
];

/// Builds and declares a queue. Problems are collected and returned by
/// [`declare`](Self::declare), before anything reaches the network.
///
/// When no type is chosen ([`quorum`](Self::quorum) or
/// [`classic`](Self::classic)), a durable queue that is neither exclusive
/// nor auto-delete is a quorum queue (`x-queue-type: quorum`); any other
/// queue gets no `x-queue-type` argument (the broker makes it classic).
/// A queue that is neither durable nor exclusive is refused with
/// [`DeclareError::Invalid`] (see [`Queue::transient`]).
///
/// ```
/// use rabbitkit::{AMQPValue, Queue};
/// // What the official tutorials declare:
/// // queue_declare(queue='hello', durable=True, arguments={'x-queue-type': 'quorum'})
/// let hello = Queue::named("hello").build().unwrap();
/// assert!(hello.durable && !hello.exclusive && !hello.auto_delete);
/// assert_eq!(
///     hello.arguments.inner().get("x-queue-type"),
///     Some(&AMQPValue::LongString("quorum".into()))
/// );
/// // A durable classic queue, said explicitly.
/// let audit = Queue::durable("audit").classic().build().unwrap();
/// assert_eq!(
///     audit.arguments.inner().get("x-queue-type"),
///     Some(&AMQPValue::LongString("classic".into()))
/// );
/// // Transient and shared: deprecated since RabbitMQ 4, refused here.
/// assert!(Queue::named("scratch").durable(false).build().is_err());
/// ```
///
/// ```no_run
/// # async fn run(client: rabbitkit::Client) -> Result<(), rabbitkit::DeclareError> {
/// use std::time::Duration;
/// use rabbitkit::Queue;
/// let orders = Queue::durable("orders")
///     .quorum()
///     .dead_letter("orders.dlx")
///     .message_ttl(Duration::from_secs(3600))
///     .delivery_limit(5)
///     .declare(&client)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct QueueBuilder {
    name: Option<String>,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    arguments: FieldTable,
    delivery_limit: bool,
    /// Options only a quorum queue takes, by name, as given.
    quorum_only: Vec<&'static str>,
    /// Its consumer parks what fails (a work queue's retry policy): no
    /// warning about messages dropped at the delivery limit.
    parks_failures: bool,
    /// Made by [`Queue::transient`]: a non-durable shared queue is allowed.
    transient: bool,
    errors: Vec<DeclareError>,
}

/// A declared queue.
///
/// Its sends go through one channel of the client's pool, so messages sent
/// through one handle reach the queue in the order they were sent; each
/// handle — each clone too — takes the pool's next channel, so handles
/// used from several tasks spread over the pool
/// ([`Options::channels`](rabbitkit_core::Options::channels)).
#[derive(Debug)]
pub struct Queue {
    name: String,
    client: Client,
    publisher: Publisher,
    temporary: bool,
    /// Declared as a stream: consumers are stream consumers.
    stream: bool,
}

impl Clone for Queue {
    /// Another handle on the same queue, publishing on the pool's next channel.
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            client: self.client.clone(),
            publisher: self.client.publisher(),
            temporary: self.temporary,
            stream: self.stream,
        }
    }
}

impl Queue {
    /// A durable quorum queue: exactly what the official tutorials'
    /// `queue_declare(queue='hello', durable=True, arguments={'x-queue-type': 'quorum'})`
    /// makes (durable, not exclusive, not auto-delete, `x-queue-type: quorum`
    /// and no other argument). It survives a broker restart and the loss of
    /// a node, with the messages in it.
    ///
    /// [`classic`](QueueBuilder::classic) makes it a durable classic queue
    /// instead; [`exclusive`](QueueBuilder::exclusive) or
    /// [`auto_delete`](QueueBuilder::auto_delete) make it classic too (a
    /// quorum queue can be neither).
    ///
    /// ```
    /// let spec = rabbitkit::Queue::named("hello").build().unwrap();
    /// assert!(spec.durable);
    /// assert_eq!(spec.arguments.inner().len(), 1); // x-queue-type: quorum
    /// ```
    pub fn named(name: impl Into<String>) -> QueueBuilder {
        QueueBuilder::new(Some(name.into()), true)
    }

    /// A durable queue: the same as [`named`](Self::named) (a quorum
    /// queue unless [`classic`](QueueBuilder::classic) is asked for), said
    /// explicitly.
    ///
    /// ```
    /// use rabbitkit::{AMQPValue, Queue};
    /// let spec = Queue::durable("audit").classic().build().unwrap();
    /// assert!(spec.durable);
    /// assert_eq!(
    ///     spec.arguments.inner().get("x-queue-type"),
    ///     Some(&AMQPValue::LongString("classic".into()))
    /// );
    /// ```
    pub fn durable(name: impl Into<String>) -> QueueBuilder {
        QueueBuilder::new(Some(name.into()), true)
    }

    /// A durable quorum queue: replicated over the cluster. The type is
    /// explicit, so making it exclusive, auto-delete or non-durable is an
    /// error rather than a silent change of type.
    ///
    /// ```
    /// assert!(rabbitkit::Queue::quorum("q").exclusive(true).build().is_err());
    /// ```
    pub fn quorum(name: impl Into<String>) -> QueueBuilder {
        QueueBuilder::new(Some(name.into()), true).quorum()
    }

    /// A stream (`x-queue-type: stream`): durable, replicated, append-only;
    /// read it with [`subscribe_stream`](Self::subscribe_stream) from any
    /// offset. Exclusive, auto-delete, non-durable and the classic- or
    /// quorum-only arguments (priorities, TTLs, dead-lettering, `x-max-length`,
    /// delivery limits, ...) are refused with [`DeclareError::Invalid`]
    /// before anything is sent.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rabbitkit::{AMQPValue, Queue};
    /// let spec = Queue::stream("events")
    ///     .max_age(Duration::from_secs(7 * 24 * 3600))
    ///     .max_length_bytes(20_000_000_000)
    ///     .stream_max_segment_size_bytes(100_000_000)
    ///     .build()
    ///     .unwrap();
    /// assert!(spec.durable && !spec.exclusive && !spec.auto_delete);
    /// assert_eq!(
    ///     spec.arguments.inner().get("x-max-age"),
    ///     Some(&AMQPValue::LongString("604800s".into()))
    /// );
    /// assert!(Queue::stream("events").max_priority(10).build().is_err());
    /// assert!(Queue::stream("events").exclusive(true).build().is_err());
    /// ```
    pub fn stream(name: impl Into<String>) -> QueueBuilder {
        QueueBuilder::new(Some(name.into()), true).queue_type(QueueType::Stream)
    }

    /// A temporary queue for one subscriber: exclusive, deleted when its
    /// consumer goes, with a client-generated name (`rabbitkit.tmp.<uuid>`)
    /// so it can be declared again after a reconnect. Not durable, classic.
    ///
    /// ```
    /// let spec = rabbitkit::Queue::temporary().build().unwrap();
    /// assert!(spec.exclusive && spec.auto_delete && !spec.durable);
    /// assert!(spec.name.starts_with("rabbitkit.tmp."));
    /// ```
    pub fn temporary() -> QueueBuilder {
        let mut b = QueueBuilder::new(None, false);
        b.exclusive = true;
        b.auto_delete = true;
        b
    }

    /// A transient shared queue: not durable, not exclusive, classic, no
    /// arguments — what `queue_declare('hello')` made before RabbitMQ 4.
    ///
    /// Only to interoperate with programs that still declare such a queue
    /// (declaring it with other properties would fail as inequivalent).
    /// RabbitMQ 4 deprecates transient non-exclusive queues and 4.3.0
    /// refuses them by default; the queue and its messages are lost when
    /// its node restarts. Use [`Queue::named`] (durable) or
    /// [`Queue::temporary`] (exclusive) instead.
    ///
    /// ```
    /// #[allow(deprecated)]
    /// let spec = rabbitkit::Queue::transient("hello").build().unwrap();
    /// assert!(!spec.durable && !spec.exclusive && !spec.auto_delete);
    /// assert!(spec.arguments.inner().is_empty());
    /// ```
    #[deprecated(
        note = "transient non-exclusive queues are deprecated since RabbitMQ 4 and refused by 4.3.0 by default; use Queue::named (durable quorum) or Queue::temporary (exclusive)"
    )]
    pub fn transient(name: impl Into<String>) -> QueueBuilder {
        let mut b = QueueBuilder::new(Some(name.into()), false);
        b.transient = true;
        b
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client it was declared with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sends a message to this queue through the default exchange and waits
    /// for the broker's confirm. Persistent (delivery mode 2) unless
    /// [`PublishOptions::persistent`] says otherwise. Always `mandatory`: if
    /// the queue no longer exists the send fails with
    /// `PublishError::Unroutable` instead of being dropped by the broker.
    pub async fn send<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<rabbitkit_core::Confirmed, SendError> {
        self.send_with(value, PublishOptions::default()).await
    }

    /// [`send`](Self::send) with per-message options.
    pub async fn send_with<T: Serialize + ?Sized>(
        &self,
        value: &T,
        options: PublishOptions,
    ) -> Result<rabbitkit_core::Confirmed, SendError> {
        // Always mandatory: a send to a queue that no longer exists is
        // `PublishError::Unroutable`, never a silent drop.
        let options = options.mandatory(true);
        let msg = outgoing("", &self.name, value, &options, |p| p)?;
        Ok(self.publisher.publish(msg).await?)
    }

    /// Receives typed messages from this queue, with the client's prefetch.
    pub async fn subscribe<T: DeserializeOwned>(&self) -> Result<Subscription<T>, SubscribeError> {
        self.subscribe_with(ConsumeOptions::new()).await
    }

    /// [`subscribe`](Self::subscribe) with consumer options (prefetch, exclusive, ...).
    ///
    /// On a queue declared with [`Queue::stream`], a consumer without a
    /// [`StreamOffset`] reads from [`StreamOffset::Next`] (the broker's
    /// default), and is a stream consumer (see
    /// [`subscribe_stream`](Self::subscribe_stream)).
    pub async fn subscribe_with<T: DeserializeOwned>(
        &self,
        mut options: ConsumeOptions,
    ) -> Result<Subscription<T>, SubscribeError> {
        let raw_offset = options.arguments.inner().contains_key(STREAM_OFFSET);
        if self.stream && options.stream_offset.is_none() && !raw_offset {
            options.stream_offset = Some(StreamOffset::Next);
        }
        if options.stream_offset.is_some() || raw_offset {
            check_stream_consumer(&options)?;
        }
        let consumer = self.client.consume(&self.name, options).await?;
        Ok(Subscription::new(
            consumer,
            self.client.clone(),
            self.temporary,
        ))
    }

    /// Reads a stream from `offset`, with the client's prefetch (100 by
    /// default). Each [`Received`](crate::Received) tells its
    /// [`stream_offset`](crate::Received::stream_offset).
    ///
    /// After a failover the subscription goes on after the last offset the
    /// application settled (acknowledged or rejected: a stream requeues
    /// nothing), never from `offset` again: nothing is skipped, and what
    /// was received but not yet acknowledged comes again (at most the
    /// prefetch). [`Subscription::last_acked_offset`] tells that offset,
    /// for an application that persists it to start again after a restart.
    ///
    /// ```no_run
    /// # async fn run(client: rabbitkit::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use rabbitkit::{Queue, StreamOffset};
    /// let events = Queue::stream("events").declare(&client).await?;
    /// let mut sub = events.subscribe_stream::<String>(StreamOffset::First).await?;
    /// while let Some(msg) = sub.recv().await {
    ///     let msg = msg?;
    ///     println!("{:?} at offset {:?}", msg.body, msg.stream_offset());
    ///     msg.ack().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_stream<T: DeserializeOwned>(
        &self,
        offset: StreamOffset,
    ) -> Result<Subscription<T>, SubscribeError> {
        self.subscribe_with(ConsumeOptions::new().stream_offset(offset))
            .await
    }

    /// Ready messages and consumers, from a passive declare.
    pub async fn info(&self) -> Result<QueueInfo, DeclareError> {
        self.client.queue_info(&self.name).await
    }

    /// Deletes the queue; returns how many messages it held.
    pub async fn delete(self) -> Result<u32, DeclareError> {
        self.client.delete_queue(&self.name).await
    }
}

/// A stream consumer needs a prefetch (the broker gives it credit for that
/// many deliveries) and manual acknowledgements.
fn check_stream_consumer(options: &ConsumeOptions) -> Result<(), SubscribeError> {
    let invalid = |reason: &str| SubscribeError::Invalid {
        what: "stream consumer".into(),
        reason: reason.into(),
    };
    if options.prefetch == Some(0) {
        return Err(invalid(
            "a stream consumer needs a prefetch above 0 (leave it unset for the client's)",
        ));
    }
    if options.no_ack {
        return Err(invalid(
            "a stream consumer needs manual acknowledgements (no_ack is not supported)",
        ));
    }
    Ok(())
}

impl QueueBuilder {
    fn new(name: Option<String>, durable: bool) -> Self {
        Self {
            name,
            durable,
            exclusive: false,
            auto_delete: false,
            arguments: FieldTable::default(),
            delivery_limit: false,
            quorum_only: Vec::new(),
            parks_failures: false,
            transient: false,
            errors: Vec::new(),
        }
    }

    /// Its consumers park failed messages (no delivery-limit warning).
    pub(crate) fn parks_failures(mut self, parks: bool) -> Self {
        self.parks_failures = parks;
        self
    }

    /// The same declaration under another name (partitioned queues build
    /// their partitions from one template).
    pub(crate) fn renamed(mut self, name: String) -> Self {
        self.name = Some(name);
        self
    }

    fn arg(mut self, key: &str, value: AMQPValue) -> Self {
        self.arguments.insert(key.into(), value);
        self
    }

    fn refuse(mut self, what: &str, value: String, reason: &str) -> Self {
        self.errors.push(DeclareError::Invalid {
            what: what.into(),
            value,
            reason: reason.into(),
        });
        self
    }

    /// Survives a broker restart (default: durable, except for
    /// [`Queue::temporary`] and [`Queue::transient`]). A queue that is
    /// neither durable nor exclusive is refused by [`build`](Self::build).
    ///
    /// ```
    /// use rabbitkit::Queue;
    /// assert!(Queue::named("q").durable(false).build().is_err());
    /// assert!(Queue::named("q").durable(false).exclusive(true).build().is_ok());
    /// ```
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Only this client's connection may use it; deleted when the connection
    /// closes. An exclusive queue is classic (never quorum).
    pub fn exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// Deleted when its last consumer goes. An auto-delete queue is classic
    /// (never quorum).
    pub fn auto_delete(mut self, auto_delete: bool) -> Self {
        self.auto_delete = auto_delete;
        self
    }

    /// A quorum queue (replicated; durable; not exclusive).
    pub fn quorum(mut self) -> Self {
        self.durable = true;
        self.arg("x-queue-type", AMQPValue::LongString("quorum".into()))
    }

    /// The queue type, as a value: the same as [`quorum`](Self::quorum),
    /// [`classic`](Self::classic) or [`Queue::stream`].
    pub fn queue_type(mut self, queue_type: QueueType) -> Self {
        let name = match queue_type {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        };
        if queue_type != QueueType::Classic {
            self.durable = true;
        }
        self.arg("x-queue-type", AMQPValue::LongString(name.into()))
    }

    /// Streams: drop segments older than this (`x-max-age`, sent in whole
    /// seconds, e.g. `"3600s"`). Less than a second is refused.
    ///
    /// ```
    /// use std::time::Duration;
    /// assert!(rabbitkit::Queue::stream("s").max_age(Duration::from_millis(10)).build().is_err());
    /// ```
    pub fn max_age(self, age: Duration) -> Self {
        if age.as_secs() == 0 {
            return self.refuse("max age", format!("{age:?}"), "at least one second");
        }
        self.arg(
            "x-max-age",
            AMQPValue::LongString(format!("{}s", age.as_secs()).into()),
        )
    }

    /// At most this many bytes: the oldest messages (streams: the oldest
    /// segments) go first (`x-max-length-bytes`).
    pub fn max_length_bytes(self, bytes: u64) -> Self {
        match i64::try_from(bytes) {
            Ok(b) => self.arg("x-max-length-bytes", AMQPValue::LongLongInt(b)),
            Err(_) => self.refuse("max length bytes", bytes.to_string(), "too large"),
        }
    }

    /// Streams: the size of one segment file on disk
    /// (`x-stream-max-segment-size-bytes`, the broker's default 500 MB);
    /// retention drops whole segments.
    pub fn stream_max_segment_size_bytes(self, bytes: u64) -> Self {
        match i64::try_from(bytes) {
            Ok(b) => self.arg("x-stream-max-segment-size-bytes", AMQPValue::LongLongInt(b)),
            Err(_) => self.refuse("stream segment size", bytes.to_string(), "too large"),
        }
    }

    /// Classic queues: deliver higher priorities first, up to this one
    /// (`x-max-priority`). A stream refuses it.
    pub fn max_priority(self, max: u8) -> Self {
        self.arg("x-max-priority", AMQPValue::ShortShortUInt(max))
    }

    /// A classic queue, said explicitly (`x-queue-type: classic`): one node
    /// holds it. Durable unless [`durable(false)`](Self::durable) (which
    /// then needs [`exclusive`](Self::exclusive)).
    pub fn classic(self) -> Self {
        self.arg("x-queue-type", AMQPValue::LongString("classic".into()))
    }

    /// Rejected and expired messages go to this exchange (`x-dead-letter-exchange`).
    pub fn dead_letter(self, exchange: &str) -> Self {
        if exchange.len() > MAX_LEN {
            return self.refuse(
                "dead-letter exchange",
                exchange.into(),
                "longer than 255 bytes",
            );
        }
        self.arg(
            "x-dead-letter-exchange",
            AMQPValue::LongString(exchange.into()),
        )
    }

    /// ... with this routing key instead of the message's own (`x-dead-letter-routing-key`).
    pub fn dead_letter_routing_key(self, key: &str) -> Self {
        if key.len() > MAX_LEN {
            return self.refuse(
                "dead-letter routing key",
                key.into(),
                "longer than 255 bytes",
            );
        }
        self.arg(
            "x-dead-letter-routing-key",
            AMQPValue::LongString(key.into()),
        )
    }

    /// Messages expire after this long in the queue (`x-message-ttl`).
    pub fn message_ttl(self, ttl: Duration) -> Self {
        match i64::try_from(ttl.as_millis()) {
            Ok(ms) => self.arg("x-message-ttl", AMQPValue::LongLongInt(ms)),
            Err(_) => self.refuse("message TTL", format!("{ttl:?}"), "too long"),
        }
    }

    /// At most this many ready messages; the oldest are dropped or dead-lettered (`x-max-length`).
    pub fn max_length(self, max: u32) -> Self {
        self.arg("x-max-length", AMQPValue::LongLongInt(max.into()))
    }

    /// Quorum queues: a message delivered this many times without an ack is
    /// dead-lettered (or dropped) instead of redelivered (`x-delivery-limit`).
    pub fn delivery_limit(mut self, limit: u32) -> Self {
        self.delivery_limit = true;
        self.arg("x-delivery-limit", AMQPValue::LongLongInt(limit.into()))
    }

    /// Quorum queues (RabbitMQ 4.3+): a consumer whose delivery stays
    /// unacknowledged this long is cancelled (`basic.cancel`, its channel
    /// kept) and its unacknowledged messages go back to the queue, for
    /// every consumer of this queue (`x-consumer-timeout`; a consumer's own
    /// [`ConsumeOptions::consumer_timeout`](crate::ConsumeOptions::consumer_timeout)
    /// overrides it). rabbitkit subscribes again after such a cancel.
    /// Classic queues and streams have no consumer timeout on 4.3: refused
    /// for them. Older brokers ignore the argument (their consumer timeout
    /// is one broker-wide setting, 30 minutes by default, which closes the
    /// channel).
    pub fn consumer_timeout(mut self, timeout: Duration) -> Self {
        self.quorum_only.push("consumer_timeout");
        match i64::try_from(timeout.as_millis()) {
            Ok(ms) if ms > 0 => self.arg("x-consumer-timeout", AMQPValue::LongLongInt(ms)),
            _ => self.refuse(
                "consumer timeout",
                format!("{timeout:?}"),
                "not between 1 ms and i64::MAX ms",
            ),
        }
    }

    /// Quorum queues (RabbitMQ 4.3+): how long the queue keeps a consumer
    /// whose node went away (killed, partitioned) before it gives that
    /// consumer's unacknowledged messages to others, and, for a
    /// single-active-consumer queue, before the next consumer takes over
    /// (`x-consumer-disconnected-timeout`; the broker's default is
    /// `consumer_disconnected_timeout`, 60 s).
    ///
    /// The trade-off: a short value redoes in-flight tasks and hands a
    /// partition over sooner after a node dies, but also re-runs the tasks
    /// of a consumer that was only cut off for a moment (and that may
    /// still be running them: a task can run twice at once). Before 4.3
    /// the queue returns them as soon as the node is seen down, and
    /// ignores the argument (a warning is logged at declare time).
    pub fn consumer_disconnected_timeout(mut self, timeout: Duration) -> Self {
        self.quorum_only.push("consumer_disconnected_timeout");
        match i64::try_from(timeout.as_millis()) {
            Ok(ms) if ms >= 0 => self.arg(
                "x-consumer-disconnected-timeout",
                AMQPValue::LongLongInt(ms),
            ),
            _ => self.refuse(
                "consumer disconnected timeout",
                format!("{timeout:?}"),
                "too long",
            ),
        }
    }

    /// Only one consumer at a time gets the queue's messages
    /// (`x-single-active-consumer`); the others wait, in order of
    /// subscription, and the next takes over when it goes: order kept with
    /// a standby. See also [`PartitionedQueue`](crate::PartitionedQueue).
    pub fn single_active_consumer(self) -> Self {
        self.arg("x-single-active-consumer", AMQPValue::Boolean(true))
    }

    /// Any other queue argument.
    pub fn argument(self, key: &str, value: AMQPValue) -> Self {
        self.arg(key, value)
    }

    /// The declaration this builder makes, or the first problem found.
    pub fn build(self) -> Result<QueueSpec, DeclareError> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(e);
        }
        let name = match self.name {
            Some(name) => {
                check_name(&name)?;
                name
            }
            None => rabbitkit_core::temporary_queue_name(),
        };
        // The type asked for: `quorum()`, `classic()`, or an `x-queue-type`
        // given with `argument`. Without one, the rule of the defaults.
        let explicit = self.arguments.inner().get("x-queue-type").map(|v| match v {
            AMQPValue::LongString(s) => s.to_string(),
            AMQPValue::ShortString(s) => s.to_string(),
            other => format!("{other:?}"),
        });
        let stream = explicit.as_deref() == Some("stream");
        if stream {
            check_stream(
                &name,
                self.exclusive,
                self.auto_delete,
                self.durable,
                &self.arguments,
            )?;
        } else if let Some(key) = ONLY_FOR_STREAMS
            .iter()
            .find(|k| self.arguments.inner().contains_key(**k))
        {
            return Err(DeclareError::Invalid {
                what: "queue options".into(),
                value: name,
                reason: format!("{key} is a stream argument: declare the queue with Queue::stream"),
            });
        }
        if let Some(reason) = refused_by_rabbitmq_4_3(&self.arguments) {
            return Err(DeclareError::Invalid {
                what: "queue options".into(),
                value: name,
                reason: reason.into(),
            });
        }
        let implicit_quorum =
            explicit.is_none() && self.durable && !self.exclusive && !self.auto_delete;
        let quorum = explicit.as_deref() == Some("quorum") || implicit_quorum;
        let conflict = |reason: &str| DeclareError::Invalid {
            what: "queue options".into(),
            value: name.clone(),
            reason: reason.into(),
        };
        if quorum && self.exclusive {
            return Err(conflict("a quorum queue cannot be exclusive"));
        }
        if quorum && !self.durable {
            return Err(conflict("a quorum queue is always durable"));
        }
        if quorum && self.auto_delete {
            return Err(conflict("a quorum queue cannot be auto-delete"));
        }
        if self.delivery_limit && !quorum {
            return Err(conflict("delivery_limit needs a quorum queue"));
        }
        if let Some(option) = self.quorum_only.first().filter(|_| !quorum) {
            return Err(conflict(&format!(
                "{option} needs a quorum queue (RabbitMQ 4.3 has no consumer timeouts on classic queues and streams)"
            )));
        }
        if !self.durable && !self.exclusive && !self.transient {
            return Err(conflict(
                "transient (non-durable) non-exclusive queues are deprecated since RabbitMQ 4 \
                 and refused by RabbitMQ 4.3.0 by default: use an exclusive (temporary) queue \
                 or a durable one",
            ));
        }
        let mut arguments = self.arguments;
        if implicit_quorum {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        Ok(QueueSpec {
            name,
            durable: self.durable,
            exclusive: self.exclusive,
            auto_delete: self.auto_delete,
            arguments,
        })
    }

    /// Declares the queue (idempotent: the same declaration again changes
    /// nothing; different properties fail with `DeclareError::Inequivalent`,
    /// naming the argument).
    pub async fn declare(self, client: &Client) -> Result<Queue, DeclareError> {
        let temporary = self.name.is_none();
        let parks = self.parks_failures;
        let spec = self.build()?;
        let stream = spec.arguments.inner().get("x-queue-type")
            == Some(&AMQPValue::LongString("stream".into()));
        let queue = Queue {
            name: spec.name.clone(),
            client: client.clone(),
            publisher: client.publisher(),
            temporary,
            stream,
        };
        let warnings = client
            .server()
            .map(|server| declare_warnings(&spec, &server, parks))
            .unwrap_or_default();
        client.declare(Declaration::Queue(spec)).await?;
        for warning in warnings {
            tracing::warn!(target: "rabbitkit", queue = queue.name(), "{warning}");
        }
        Ok(queue)
    }
}

/// Why RabbitMQ 4.3 refuses these queue arguments, if it does: classic
/// queue v1 storage and its modes are gone (every classic queue is v2,
/// which keeps messages on disk as `lazy` did).
fn refused_by_rabbitmq_4_3(arguments: &FieldTable) -> Option<&'static str> {
    let args = arguments.inner();
    if args.contains_key("x-queue-mode") {
        return Some(
            "x-queue-mode is refused by RabbitMQ 4.3 (classic queue v1 is removed;              v2 queues page messages to disk as `lazy` did): leave it out",
        );
    }
    let v1 = match args.get("x-queue-version") {
        Some(AMQPValue::LongString(v)) => v.to_string() == "1",
        Some(AMQPValue::ShortString(v)) => v.as_str() == "1",
        Some(AMQPValue::LongLongInt(n)) => *n == 1,
        Some(AMQPValue::LongInt(n)) => *n == 1,
        Some(AMQPValue::ShortInt(n)) => *n == 1,
        Some(AMQPValue::ShortShortInt(n)) => *n == 1,
        Some(AMQPValue::ShortShortUInt(n)) => *n == 1,
        _ => false,
    };
    if v1 {
        return Some(
            "x-queue-version 1 is refused by RabbitMQ 4.3 (classic queue v1 storage is removed):              leave it out, or ask for 2",
        );
    }
    if args.contains_key("x-queue-master-locator") {
        return Some(
            "x-queue-master-locator is a deprecated feature RabbitMQ 4.3 denies: use              x-queue-leader-locator",
        );
    }
    None
}

/// What declaring `spec` on `server` deserves a warning for: a quorum
/// queue that drops a message past its delivery limit (no dead-letter
/// exchange, and no consumer of rabbitkit's that parks failures), an
/// argument the broker ignores.
fn declare_warnings(
    spec: &QueueSpec,
    server: &rabbitkit_core::ServerInfo,
    parks: bool,
) -> Vec<String> {
    let args = spec.arguments.inner();
    let quorum = args.get("x-queue-type") == Some(&AMQPValue::LongString("quorum".into()));
    let mut warnings = Vec::new();
    if !quorum {
        return warnings;
    }
    let limit = match args.get("x-delivery-limit") {
        Some(AMQPValue::LongLongInt(n)) => Some(n.to_string()),
        Some(other) => Some(format!("{other:?}")),
        None if server.has_default_delivery_limit() => Some("20, the default,".to_owned()),
        None => None,
    };
    if let Some(limit) = limit.filter(|_| !parks && !args.contains_key("x-dead-letter-exchange")) {
        let counted = if server.requeues_count_toward_delivery_limit() {
            "every return (nack, reject, a consumer lost) counts on this RabbitMQ version"
        } else {
            "rejects and lost consumers count"
        };
        warnings.push(format!(
            "quorum queue without a dead-letter exchange: a message delivered {limit} times              without an ack is dropped ({counted}); give it a dead-letter exchange, or consume              it with a WorkQueue whose failures are parked"
        ));
    }
    if args.contains_key("x-consumer-disconnected-timeout")
        && !server.has_consumer_disconnected_timeout()
    {
        warnings.push(format!(
            "consumer_disconnected_timeout needs RabbitMQ 4.3, ignored by {server}: the              messages of a consumer whose node dies come back as soon as the node is seen down"
        ));
    }
    warnings
}

/// A stream is durable, shared, and takes none of the classic- or
/// quorum-only arguments.
fn check_stream(
    name: &str,
    exclusive: bool,
    auto_delete: bool,
    durable: bool,
    arguments: &FieldTable,
) -> Result<(), DeclareError> {
    let invalid = |reason: String| DeclareError::Invalid {
        what: "stream options".into(),
        value: name.to_owned(),
        reason,
    };
    if exclusive {
        return Err(invalid("a stream cannot be exclusive".into()));
    }
    if auto_delete {
        return Err(invalid("a stream cannot be auto-delete".into()));
    }
    if !durable {
        return Err(invalid("a stream is always durable".into()));
    }
    if let Some((key, why)) = NOT_FOR_STREAMS
        .iter()
        .find(|(k, _)| arguments.inner().contains_key(*k))
    {
        return Err(invalid(format!("a stream does not take {key}: {why}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_rabbitmq_4_3_refuses_is_refused_before_the_network() {
        let refused = |b: QueueBuilder, needle: &str| match b.build() {
            Err(DeclareError::Invalid { reason, .. }) => {
                assert!(reason.contains(needle), "{reason}")
            }
            other => panic!("expected Invalid ({needle}), got {other:?}"),
        };
        refused(
            Queue::durable("q")
                .classic()
                .argument("x-queue-mode", AMQPValue::LongString("lazy".into())),
            "x-queue-mode",
        );
        refused(
            Queue::durable("q")
                .classic()
                .argument("x-queue-version", AMQPValue::LongLongInt(1)),
            "x-queue-version 1",
        );
        refused(
            Queue::durable("q").classic().argument(
                "x-queue-master-locator",
                AMQPValue::LongString("min-masters".into()),
            ),
            "x-queue-master-locator",
        );
        // Version 2 is what 4.3 has: fine.
        assert!(
            Queue::durable("q")
                .classic()
                .argument("x-queue-version", AMQPValue::LongLongInt(2))
                .build()
                .is_ok()
        );
        // Consumer timeouts are quorum-queue options on 4.3.
        let second = Duration::from_secs(1);
        refused(
            Queue::durable("q").classic().consumer_timeout(second),
            "consumer_timeout",
        );
        refused(
            Queue::stream("s").consumer_disconnected_timeout(second),
            "consumer_disconnected_timeout",
        );
        refused(
            Queue::quorum("q").consumer_timeout(Duration::ZERO),
            "not between",
        );
        let ok = Queue::quorum("q")
            .consumer_timeout(second)
            .consumer_disconnected_timeout(second)
            .single_active_consumer()
            .build()
            .unwrap();
        let args = ok.arguments.inner();
        assert_eq!(
            args.get("x-consumer-timeout"),
            Some(&AMQPValue::LongLongInt(1000))
        );
        assert_eq!(
            args.get("x-consumer-disconnected-timeout"),
            Some(&AMQPValue::LongLongInt(1000))
        );
        assert_eq!(
            args.get("x-single-active-consumer"),
            Some(&AMQPValue::Boolean(true))
        );
    }

    #[test]
    fn conflicting_options_are_refused_before_the_network() {
        assert!(Queue::quorum("q").exclusive(true).build().is_err());
        assert!(Queue::quorum("q").durable(false).build().is_err());
        assert!(
            Queue::durable("q")
                .classic()
                .delivery_limit(3)
                .build()
                .is_err()
        );
        assert!(Queue::named("amq.x").build().is_err());
        assert!(
            Queue::named("q")
                .dead_letter(&"x".repeat(300))
                .build()
                .is_err()
        );
        let spec = Queue::quorum("q").delivery_limit(3).build().unwrap();
        assert!(spec.durable);
        assert_eq!(
            spec.arguments.inner().get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
    }

    fn queue_type(spec: &QueueSpec) -> Option<&AMQPValue> {
        spec.arguments.inner().get("x-queue-type")
    }

    fn quorum_arg() -> Option<&'static AMQPValue> {
        static Q: std::sync::OnceLock<AMQPValue> = std::sync::OnceLock::new();
        Some(Q.get_or_init(|| AMQPValue::LongString("quorum".into())))
    }

    fn is_invalid(r: Result<QueueSpec, DeclareError>) -> bool {
        matches!(r, Err(DeclareError::Invalid { .. }))
    }

    #[test]
    fn a_named_queue_is_what_the_official_tutorials_declare() {
        // queue_declare(queue='hello', durable=True, arguments={'x-queue-type': 'quorum'})
        let spec = Queue::named("hello").build().unwrap();
        assert_eq!(spec.name, "hello");
        assert!(spec.durable && !spec.exclusive && !spec.auto_delete);
        assert_eq!(spec.arguments.inner().len(), 1, "{:?}", spec.arguments);
        assert_eq!(queue_type(&spec), quorum_arg());
        // Queue::durable and Queue::quorum make the same declaration.
        let durable = Queue::durable("hello").build().unwrap();
        let quorum = Queue::quorum("hello").build().unwrap();
        for other in [durable, quorum] {
            assert_eq!(
                (other.durable, other.exclusive, other.auto_delete),
                (true, false, false)
            );
            assert_eq!(other.arguments, spec.arguments);
        }
    }

    #[test]
    fn a_quorum_queue_takes_the_quorum_options() {
        let spec = Queue::named("jobs")
            .delivery_limit(5)
            .dead_letter("jobs.dlx")
            .build()
            .unwrap();
        assert_eq!(queue_type(&spec), quorum_arg());
        assert_eq!(
            spec.arguments.inner().get("x-delivery-limit"),
            Some(&AMQPValue::LongLongInt(5))
        );
    }

    #[test]
    fn classic_is_kept_when_asked_for() {
        let spec = Queue::durable("audit").classic().build().unwrap();
        assert!(spec.durable && !spec.exclusive && !spec.auto_delete);
        assert_eq!(
            queue_type(&spec),
            Some(&AMQPValue::LongString("classic".into()))
        );
        let spec = Queue::named("audit").classic().build().unwrap();
        assert!(spec.durable);
        assert_eq!(spec.arguments.inner().len(), 1);
        // A type given as a plain argument is respected too.
        let spec = Queue::named("events")
            .argument("x-queue-type", AMQPValue::LongString("stream".into()))
            .build()
            .unwrap();
        assert_eq!(
            queue_type(&spec),
            Some(&AMQPValue::LongString("stream".into()))
        );
    }

    #[test]
    fn exclusive_or_auto_delete_queues_get_no_type() {
        for spec in [
            Queue::named("mine").exclusive(true).build().unwrap(),
            Queue::named("mine").auto_delete(true).build().unwrap(),
            Queue::named("mine")
                .durable(false)
                .exclusive(true)
                .build()
                .unwrap(),
            Queue::temporary().build().unwrap(),
        ] {
            assert_eq!(queue_type(&spec), None, "{spec:?}");
            assert!(spec.arguments.inner().is_empty(), "{spec:?}");
        }
    }

    #[test]
    fn transient_shared_queues_are_refused() {
        let err = Queue::named("scratch").durable(false).build().unwrap_err();
        match &err {
            DeclareError::Invalid { value, reason, .. } => {
                assert_eq!(value, "scratch");
                assert!(reason.contains("deprecated since RabbitMQ 4"), "{reason}");
                assert!(reason.contains("4.3.0"), "{reason}");
                assert!(reason.contains("exclusive"), "{reason}");
                assert!(reason.contains("durable"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(is_invalid(
            Queue::named("scratch")
                .durable(false)
                .auto_delete(true)
                .build()
        ));
        assert!(is_invalid(
            Queue::durable("scratch").classic().durable(false).build()
        ));
        // Explicitly quorum and not durable: the quorum rule speaks first.
        assert!(is_invalid(Queue::quorum("scratch").durable(false).build()));
        // Names are checked before anything else.
        assert!(matches!(
            Queue::named("amq.scratch").durable(false).build(),
            Err(DeclareError::InvalidName { .. })
        ));
    }

    #[test]
    #[allow(deprecated)]
    fn transient_makes_the_old_declaration() {
        // queue_declare(queue='hello'), as the tutorials declared it before 2026.
        let spec = Queue::transient("hello").build().unwrap();
        assert_eq!(spec.name, "hello");
        assert!(!spec.durable && !spec.exclusive && !spec.auto_delete);
        assert!(spec.arguments.inner().is_empty(), "{:?}", spec.arguments);
        // It may still be made durable (and then follows the usual rule).
        let spec = Queue::transient("hello").durable(true).build().unwrap();
        assert_eq!(queue_type(&spec), quorum_arg());
    }

    #[test]
    fn temporary_queues_get_client_names() {
        let a = Queue::temporary().build().unwrap();
        let b = Queue::temporary().build().unwrap();
        assert!(a.name.starts_with("rabbitkit.tmp."));
        assert_ne!(a.name, b.name);
        assert!(a.exclusive && a.auto_delete && !a.durable);
    }
}
