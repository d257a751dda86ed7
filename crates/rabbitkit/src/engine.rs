//! The handler engine: the one owner of a delivery from the moment a
//! handler loop reads it to its settlement, used by every handler-style
//! API (`Subscription::handle*`, `WorkQueue::work*`, `Router`,
//! `PartitionedQueue::work*`, and `RpcServer`, which settles by replying).
//!
//! - [`drive`]: up to N handlers in flight on one subscription, each
//!   delivery settled when its own handler ends (acks past a delivery still
//!   running go out singly, see `rabbitkit-core`'s `acks.rs`), and the
//!   graceful stop ([`Shutdown`]). The loop reads a delivery only while
//!   fewer than N handlers run, so the prefetch bounds what waits in memory
//!   and N bounds what runs. Deliveries of a subscription that ended never
//!   reach it (the core's `Consumer` skips them).
//! - [`call_handler`] / [`run_handler`]: a handler's panic, at the call or
//!   while it runs, is its error; nothing unwinds into the loop.
//! - [`Settle`]: the failure policy ([`OnError`], [`RetryPolicy`]): retry
//!   copies (keeping the original exchange and routing key), parking,
//!   dead-lettering, streams' own rule, and the back-off when a copy cannot
//!   be published. Its report is a [`HandleReport`].
//!
//! Handlers run as futures inside the loop's task (a `FuturesUnordered`):
//! they overlap while they wait (I/O, timers), which is what a work queue
//! handler mostly does. For CPU-bound work, use several loops on several
//! threads: [`WorkQueue::work_parallel`](crate::WorkQueue::work_parallel).
//!
//! This module imports nothing else of the crate's but the instrumentation,
//! [`Shutdown`] and [`Report`] (the handlers' error): the typed layers (`message.rs`, `router.rs`, ...) sit
//! on top of it.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rabbitkit_core::{
    AMQPValue, BasicProperties, Client, Consumer, Declaration, Delivery, OutgoingMessage,
};

use crate::instrument::{timed, traced};
use crate::report::Report;
use crate::shutdown::Shutdown;

/// The header in which [`OnError::RequeueOnce`] counts the retries a
/// message was given: set on the copy it publishes again after a failure.
pub const RETRIES_HEADER: &str = "x-rabbitkit-retries";

/// How many times a handler-style consumer retried this message, from its
/// [`RETRIES_HEADER`] (0 without one).
///
/// ```
/// use rabbitkit::{AMQPValue, BasicProperties, FieldTable};
/// use rabbitkit::message::{RETRIES_HEADER, retries};
/// assert_eq!(retries(&BasicProperties::default()), 0);
/// let mut headers = FieldTable::default();
/// headers.insert(RETRIES_HEADER.into(), AMQPValue::LongLongInt(1));
/// assert_eq!(retries(&BasicProperties::default().with_headers(headers)), 1);
/// ```
pub fn retries(properties: &BasicProperties) -> u64 {
    match header(properties, RETRIES_HEADER) {
        Some(AMQPValue::LongLongInt(n)) => u64::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongInt(n)) => u64::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongUInt(n)) => u64::from(*n),
        Some(AMQPValue::ShortInt(n)) => u64::try_from(*n).unwrap_or(0),
        Some(AMQPValue::ShortUInt(n)) => u64::from(*n),
        Some(AMQPValue::ShortShortInt(n)) => u64::try_from(*n).unwrap_or(0),
        Some(AMQPValue::ShortShortUInt(n)) => u64::from(*n),
        Some(AMQPValue::LongString(s)) => s.to_string().trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// One header of `properties`, if present.
pub fn header<'a>(properties: &'a BasicProperties, key: &str) -> Option<&'a AMQPValue> {
    properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(key))
}

/// What a handler-style consumer does with a message whose handler failed
/// (returned `Err`, or panicked: the panic's message is the error).
///
/// On a stream, which keeps every message for every reader and cannot
/// requeue one, no copy is ever appended to the log: a [`Retry`](Self::Retry)
/// policy (the default) parks a failed message at once, and the others
/// settle it with a warning (counted as rejected) and move on.
///
/// The default ([`OnError::default()`]) never drops a message: a failed
/// message gets one more try at the tail of its queue, and when that fails
/// too it is parked in `<queue>.parked` (a durable quorum queue) with its
/// last error and attempt count in headers, as [`RetryPolicy`] parks: it is
/// `OnError::Retry(RetryPolicy::new([Duration::ZERO]))`. Dropping (or
/// dead-lettering) needs saying so: [`OnError::Drop`],
/// [`OnError::DeadLetter`], [`OnError::RequeueOnce`].
///
/// ```
/// use std::time::Duration;
/// use rabbitkit::{OnError, RetryPolicy};
/// assert_eq!(OnError::default(), OnError::Retry(RetryPolicy::new([Duration::ZERO])));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnError {
    /// Retry it once, then dead-letter it (or drop it, when its queue has
    /// no dead-letter exchange).
    ///
    /// On the first failure, the message (same body and properties, plus
    /// the header [`RETRIES_HEADER`]` = 1`) is published again to the end
    /// of the queue it came from, through the default exchange, mandatory
    /// and confirmed; then the original is acknowledged. When a message
    /// whose header says it was retried fails again, it is rejected without
    /// requeue: dead-lettered when the queue has a dead-letter exchange,
    /// dropped otherwise. [`WorkQueueBuilder::dead_letter`](crate::WorkQueueBuilder::dead_letter)
    /// makes this the work queue's policy unless another is set.
    ///
    /// The count travels in the message, not in the broker's `redelivered`
    /// flag: the broker also sets that flag on every message that was
    /// unacknowledged when a consumer's connection died, so a task whose
    /// worker's node failed still gets its retry. If the copy cannot be
    /// published, the message is requeued instead (nack) after a pause that
    /// grows while the cause lasts (100 ms doubling up to 30 s): nothing is
    /// lost, nothing spins, and a connection loss in between may at worst
    /// run it once more.
    RequeueOnce,
    /// Always requeue (only for failures that go away by themselves). The
    /// failure is a `basic.reject`, which a quorum queue counts as a failed
    /// delivery on every version, so its delivery limit (20 by default in
    /// RabbitMQ 4) still ends the loop: RabbitMQ 4.3 stopped counting
    /// `basic.nack` returns, which rabbitkit keeps for deliveries given back
    /// unprocessed (a dropped [`Delivery`]).
    Requeue,
    /// Dead-letter it at once (`basic.reject` without requeue), or drop it
    /// when the queue has no dead-letter exchange.
    DeadLetter,
    /// Drop it at once: the same `basic.reject` without requeue as
    /// [`DeadLetter`](Self::DeadLetter), named for a queue without a
    /// dead-letter exchange, where the message is gone.
    Drop,
    /// Retry it after each of the policy's delays in turn, then park it in
    /// a parking queue with why and how often it failed. See
    /// [`RetryPolicy`].
    Retry(RetryPolicy),
}

impl Default for OnError {
    /// One more try at the tail of the queue, then parked:
    /// `OnError::Retry(RetryPolicy::new([Duration::ZERO]))`.
    fn default() -> Self {
        OnError::Retry(RetryPolicy::new([Duration::ZERO]))
    }
}

/// Retries with back-off, then parking: what [`OnError::Retry`] does.
///
/// When the handler fails on a message that was retried `n` times (its
/// [`RETRIES_HEADER`], 0 at first), and the policy has an `n`-th delay, a
/// copy of the message (same body and properties, `RETRIES_HEADER = n + 1`)
/// is published to the queue it came from **delayed** by that delay
/// (rabbitkit's plugin-free delay queues, see
/// [`PublishOptions::delay`](crate::PublishOptions::delay)), and the original is acknowledged once the
/// copy is confirmed. When the delays are used up, the message is published
/// to the parking queue (by default `<queue>.parked`, a durable quorum
/// queue declared on first use) with the headers [`ATTEMPTS_HEADER`] (how
/// many times the handler ran), [`RETRIES_HEADER`], [`PARKED_ERROR_HEADER`] (the
/// last error, at most 1,000 bytes) and [`PARKED_FROM_HEADER`] (the queue).
///
/// The count travels in the message, set by rabbitkit: a redelivery after
/// a failover, or another consumer taking the message, neither resets nor
/// inflates it. If a copy cannot be published, the original is requeued
/// (nothing is lost; it may run once more).
///
/// ```
/// use std::time::Duration;
/// use rabbitkit::{OnError, RetryPolicy};
/// let policy = RetryPolicy::new([1, 10, 60].map(Duration::from_secs));
/// assert_eq!(policy.attempts(), 4); // the first try and three retries
/// let on_error = OnError::Retry(policy.park_in("orders.failed"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub(crate) delays: std::sync::Arc<[Duration]>,
    pub(crate) park: Option<String>,
    /// Delayed by the queue itself (RabbitMQ 4.3+): `(min, max)`.
    pub(crate) in_queue: Option<(Duration, Duration)>,
}

/// The most retries [`RetryPolicy::in_queue`] may ask for: below a quorum
/// queue's default delivery limit (20), which would otherwise drop or
/// dead-letter the message before it is parked.
pub const MAX_IN_QUEUE_RETRIES: usize = 19;

impl RetryPolicy {
    /// Retries after each of `delays` in turn (zero: at once, to the end of
    /// the queue), then parks the message in `<queue>.parked`. A delay
    /// above [`MAX_DELAY`](rabbitkit_core::delay::MAX_DELAY) (about 77 days)
    /// is clamped to it.
    pub fn new(delays: impl IntoIterator<Item = Duration>) -> Self {
        Self {
            delays: delays
                .into_iter()
                .map(|d| d.min(rabbitkit_core::delay::MAX_DELAY))
                .collect(),
            park: None,
            in_queue: None,
        }
    }

    /// Retries delayed by the quorum queue itself (RabbitMQ 4.3+): a
    /// failed message is returned to its queue (`basic.reject` with
    /// requeue), which holds it `min × n` (at most `max`) before the `n`-th
    /// redelivery, then, after `retries` retries, it is parked as with
    /// [`new`](Self::new). No copy is published, no delay queue used: the
    /// broker writes nothing more, and the client sends one frame per
    /// retry. The queue is declared with `x-delayed-retry-type: failed`,
    /// `x-delayed-retry-min` and `x-delayed-retry-max`
    /// ([`WorkQueueBuilder::retry`](crate::WorkQueueBuilder::retry)).
    ///
    /// The count is the queue's `x-delivery-count`
    /// ([`Incoming::delivery_count`](crate::Incoming::delivery_count)):
    /// a worker that crashed or lost its connection with the message also
    /// counts as a failure, and the queue delays that redelivery too. Only
    /// linear delays: for exact or exponential ones, or brokers before
    /// 4.3, use [`new`](Self::new) or [`exponential`](Self::exponential).
    /// Declaring a work queue with this policy on a broker before 4.3, or
    /// on a classic queue, fails with [`DeclareError::Invalid`](crate::DeclareError::Invalid);
    /// `retries` above [`MAX_IN_QUEUE_RETRIES`] are clamped to it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rabbitkit::RetryPolicy;
    /// let policy = RetryPolicy::in_queue(Duration::from_secs(1), Duration::from_secs(5), 3);
    /// assert_eq!(policy.delays(), [1, 2, 3].map(Duration::from_secs));
    /// ```
    pub fn in_queue(min: Duration, max: Duration, retries: usize) -> Self {
        let (min, max) = (min.max(Duration::from_millis(1)), max.max(min));
        let retries = retries.min(MAX_IN_QUEUE_RETRIES);
        Self {
            delays: (1..=retries as u32)
                .map(|n| min.saturating_mul(n).min(max))
                .collect(),
            park: None,
            in_queue: Some((min, max)),
        }
    }

    /// Whether the queue delays the retries itself ([`in_queue`](Self::in_queue)):
    /// `(min, max)`.
    pub fn queue_delays(&self) -> Option<(Duration, Duration)> {
        self.in_queue
    }

    /// `retries` delays growing from `first` by `factor` each time, none
    /// longer than `max`: `exponential(1 s, 10, 1 min, 4)` waits 1 s, 10 s,
    /// 60 s, 60 s.
    pub fn exponential(first: Duration, factor: u32, max: Duration, retries: usize) -> Self {
        let mut delay = first.min(max);
        Self::new((0..retries).map(|_| {
            let this = delay;
            delay = delay.saturating_mul(factor).min(max);
            this
        }))
    }

    /// Parks messages whose retries are used up in `queue` (declared as a
    /// durable quorum queue if missing) instead of `<queue>.parked`
    /// (`rabbitkit.parked` for a temporary queue, whose name lives no longer
    /// than its subscriber).
    pub fn park_in(mut self, queue: impl Into<String>) -> Self {
        self.park = Some(queue.into());
        self
    }

    /// The delays, in order.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// How many times the handler runs at most for one message: the first
    /// try and one per delay.
    pub fn attempts(&self) -> usize {
        self.delays.len() + 1
    }

    /// The parking queue for messages of `queue`: the one given to
    /// [`park_in`](Self::park_in), or `<queue>.parked`, or
    /// [`SHARED_PARKING_QUEUE`] for a temporary queue (one durable parking
    /// queue per temporary queue would outlive them all).
    ///
    /// ```
    /// use rabbitkit::RetryPolicy;
    /// let policy = RetryPolicy::new([]);
    /// assert_eq!(policy.parking_queue("orders"), "orders.parked");
    /// assert_eq!(policy.parking_queue("rabbitkit.tmp.5f0c"), "rabbitkit.parked");
    /// assert_eq!(policy.park_in("failed").parking_queue("orders"), "failed");
    /// ```
    pub fn parking_queue(&self, queue: &str) -> String {
        match &self.park {
            Some(park) => park.clone(),
            None if queue.starts_with(rabbitkit_core::TEMPORARY_QUEUE_PREFIX) => {
                SHARED_PARKING_QUEUE.to_owned()
            }
            None => format!("{queue}{PARKED_SUFFIX}"),
        }
    }
}

/// Where [`RetryPolicy`] parks the failed messages of temporary queues
/// (their [`PARKED_FROM_HEADER`] names the queue).
pub const SHARED_PARKING_QUEUE: &str = "rabbitkit.parked";

/// What [`RetryPolicy`] appends to a queue's name to name its parking queue.
pub const PARKED_SUFFIX: &str = ".parked";

/// On a parked message: how many times the handler ran.
pub const ATTEMPTS_HEADER: &str = "x-rabbitkit-attempts";

/// On a parked message: the handler's last error (at most 1,000 bytes).
pub const PARKED_ERROR_HEADER: &str = "x-rabbitkit-error";

/// On a retried or parked copy: the exchange the message was first
/// published to (a copy goes through the default exchange).
pub const ORIGINAL_EXCHANGE_HEADER: &str = "x-rabbitkit-original-exchange";

/// On a retried or parked copy: the routing key the message was first
/// published with, which a [`Router`](crate::Router) routes on.
pub const ORIGINAL_ROUTING_KEY_HEADER: &str = "x-rabbitkit-original-routing-key";

/// The routing key `delivery` was first published with: its
/// [`ORIGINAL_ROUTING_KEY_HEADER`] on a retried copy, its own otherwise.
pub fn original_routing_key(delivery: &Delivery) -> &str {
    match header(delivery.properties(), ORIGINAL_ROUTING_KEY_HEADER) {
        Some(AMQPValue::LongString(key)) => std::str::from_utf8(key.as_bytes()).unwrap_or(""),
        _ => delivery.routing_key(),
    }
}

/// On a parked message: the queue it was parked from.
pub const PARKED_FROM_HEADER: &str = "x-rabbitkit-parked-from";

/// What a handler-style consumer did, returned when its stream ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandleReport {
    /// Messages handled and acknowledged.
    pub acked: u64,
    /// Messages whose handler failed and that were given another try
    /// (retried by [`OnError::RequeueOnce`] or [`OnError::Retry`], or requeued).
    pub requeued: u64,
    /// Messages whose retries were used up ([`OnError::Retry`]): published
    /// to the parking queue and acknowledged.
    pub parked: u64,
    /// Messages dead-lettered (or dropped): handler failures and undecodable bodies.
    pub rejected: u64,
    /// Of those, bodies that did not decode.
    pub undecodable: u64,
    /// Messages received but not started when a [`Shutdown`](crate::Shutdown)
    /// came: given back to the queue (requeued) for another consumer.
    pub unstarted: u64,
    /// Messages whose handler was still running at the shutdown's
    /// deadline: the handler was abandoned (its future dropped) and the
    /// message requeued, so it runs again elsewhere.
    pub abandoned: u64,
}

/// How a handler loop runs: the failure policy, handlers in flight, and
/// the stop signal.
///
/// ```
/// use rabbitkit::{HandleOptions, OnError, Shutdown};
/// let shutdown = Shutdown::new();
/// let options = HandleOptions::new()
///     .on_error(OnError::DeadLetter)
///     .concurrency(8)
///     .shutdown(&shutdown);
/// assert_eq!(options.concurrency, 8);
/// ```
#[derive(Debug, Clone)]
#[must_use]
#[non_exhaustive]
pub struct HandleOptions {
    /// What happens to a message whose handler failed.
    pub on_error: OnError,
    /// Handlers in flight at once (default 1: one after another, in order).
    pub concurrency: usize,
    /// The stop signal, if any.
    pub shutdown: Option<Shutdown>,
    /// When a handler still running becomes worth a warning: after
    /// `.0`, measured against the consumer timeout `.1` (see
    /// [`long_running`](Self::long_running)).
    pub long_running: Option<(Duration, Duration)>,
}

impl Default for HandleOptions {
    fn default() -> Self {
        Self {
            on_error: OnError::default(),
            concurrency: 1,
            shutdown: None,
            long_running: None,
        }
    }
}

impl HandleOptions {
    /// One handler at a time, the default [`OnError`] (one more try, then
    /// parked), no stop signal.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the failure policy.
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// Runs up to `n` handlers at once (at least 1). More than the
    /// consumer's prefetch never run: the broker sends no more than the
    /// prefetch unacknowledged.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Stops gracefully on this signal (see [`Shutdown`]).
    pub fn shutdown(mut self, shutdown: &Shutdown) -> Self {
        self.shutdown = Some(shutdown.clone());
        self
    }

    /// Warns when a handler has run `share` (0 to 1) of the consumer
    /// timeout `timeout` on one delivery and is still running: a WARN log
    /// and an [`Event::HandlerRunningLong`](rabbitkit_core::Event::HandlerRunningLong),
    /// once per delivery, before the broker takes the message back.
    pub fn long_running(mut self, timeout: Duration, share: f64) -> Self {
        self.long_running = Some((timeout.mul_f64(share.clamp(0.0, 1.0)), timeout));
        self
    }
}

/// Watches one delivery's handling: after `after` still running, a
/// warning ([`Event::HandlerRunningLong`](rabbitkit_core::Event::HandlerRunningLong)).
#[derive(Clone)]
pub(crate) struct Watch {
    pub(crate) client: rabbitkit_core::Client,
    pub(crate) after: Duration,
    pub(crate) timeout: Duration,
}

impl Watch {
    /// The watch `options` ask for, if any.
    pub(crate) fn of(options: &HandleOptions, client: &rabbitkit_core::Client) -> Option<Self> {
        options.long_running.map(|(after, timeout)| Self {
            client: client.clone(),
            after,
            timeout,
        })
    }

    /// Runs `work`, warning once (naming the queue and the message id) if
    /// it is still running after `after`.
    async fn run<F: Future>(watched: Option<(Self, String, Option<String>)>, work: F) -> F::Output {
        let Some((watch, queue, message_id)) = watched else {
            return work.await;
        };
        let mut work = std::pin::pin!(work);
        tokio::select! {
            output = &mut work => return output,
            () = tokio::time::sleep(watch.after) => {}
        }
        watch
            .client
            .emit(rabbitkit_core::Event::HandlerRunningLong {
                queue,
                message_id,
                running: watch.after,
                timeout: watch.timeout,
            });
        work.await
    }
}

impl Outcome {
    /// Why a handling failed (a label of the handler metrics).
    pub(crate) fn error(&self) -> Option<&'static str> {
        match self {
            Outcome::Acked | Outcome::Unsettled => None,
            Outcome::Undecodable => Some("undecodable"),
            Outcome::Requeued | Outcome::Rejected | Outcome::Parked => Some("handler"),
        }
    }
}

/// How one delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Acked,
    Requeued,
    Rejected,
    Undecodable,
    /// Retries used up: published to the parking queue.
    Parked,
    /// Could not be settled (channel gone): the broker redelivers it.
    Unsettled,
}

impl HandleReport {
    /// Adds `other`'s counts to these.
    pub(crate) fn merge(&mut self, other: &HandleReport) {
        self.acked += other.acked;
        self.requeued += other.requeued;
        self.rejected += other.rejected;
        self.undecodable += other.undecodable;
        self.unstarted += other.unstarted;
        self.abandoned += other.abandoned;
        self.parked += other.parked;
    }

    pub(crate) fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Acked => self.acked += 1,
            Outcome::Requeued => self.requeued += 1,
            Outcome::Rejected => self.rejected += 1,
            Outcome::Undecodable => {
                self.rejected += 1;
                self.undecodable += 1;
            }
            Outcome::Parked => self.parked += 1,
            Outcome::Unsettled => {}
        }
    }
}

/// Settles deliveries after their handler ran, per the [`OnError`] policy.
pub(crate) struct Settle {
    pub(crate) client: Client,
    pub(crate) queue: String,
    pub(crate) on_error: OnError,
    /// Whether the parking queue was declared ([`OnError::Retry`]).
    pub(crate) parking_declared: std::sync::atomic::AtomicBool,
    /// Copies (retries, parked messages) that could not be published in a
    /// row: the back-off before the original is requeued.
    copy_failures: AtomicU32,
    /// The originals whose copy was confirmed (see [`Copied`]).
    copied: std::sync::Mutex<Copied>,
}

/// The originals (message id, retries so far) whose retry or parked copy
/// the broker confirmed, most recent last, at most [`Copied::MAX`]. Such an
/// original that comes back (its ack was lost with a connection) is
/// acknowledged without running its handler again: the copy carries its
/// retry chain on, and a second chain would retry, or park, the message
/// twice.
#[derive(Default)]
pub(crate) struct Copied {
    order: std::collections::VecDeque<(String, u64)>,
    set: std::collections::HashSet<(String, u64)>,
}

impl Copied {
    const MAX: usize = 10_000;

    fn key(delivery: &Delivery) -> Option<(String, u64)> {
        let id = delivery.message_id()?;
        Some((id.to_owned(), retries(delivery.properties())))
    }

    fn insert(&mut self, key: (String, u64)) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            if self.order.len() > Self::MAX
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, key: &(String, u64)) -> bool {
        self.set.contains(key)
    }
}

impl Settle {
    pub(crate) fn new(client: Client, queue: String, on_error: OnError) -> Self {
        Self {
            client,
            queue,
            on_error,
            parking_declared: Default::default(),
            copy_failures: AtomicU32::new(0),
            copied: Default::default(),
        }
    }

    /// Whether `delivery` is an original that came back after its copy
    /// was confirmed (see [`Copied`]): then its handler must not run.
    pub(crate) fn copied_already(&self, delivery: &Delivery) -> bool {
        delivery.redelivered()
            && Copied::key(delivery).is_some_and(|key| self.copied.lock().unwrap().contains(&key))
    }

    /// Acknowledges an original whose copy already carries its retry chain.
    pub(crate) async fn settle_copied(&self, delivery: Delivery) -> Outcome {
        tracing::info!(target: "rabbitkit", queue = %self.queue, "a message whose retry copy was already confirmed came back; acknowledged without running its handler again");
        match delivery.ack().await {
            Ok(()) => Outcome::Requeued,
            Err(_) => Outcome::Unsettled,
        }
    }

    /// Acks on `Ok`; on `Err` follows the policy.
    pub(crate) async fn result(&self, delivery: Delivery, result: Result<(), String>) -> Outcome {
        match result {
            Ok(()) => match delivery.ack().await {
                Ok(()) => Outcome::Acked,
                Err(_) => Outcome::Unsettled,
            },
            Err(e) => self.failed(delivery, e).await,
        }
    }

    /// A handler (or the router) failed on `delivery`.
    pub(crate) async fn failed(&self, delivery: Delivery, error: String) -> Outcome {
        if delivery.stream_offset().is_some() {
            return self.failed_on_stream(delivery, error).await;
        }
        let retried = retries(delivery.properties());
        if let OnError::Retry(policy) = &self.on_error {
            return self.retry_or_park(policy, delivery, retried, error).await;
        }
        let requeue = match self.on_error {
            OnError::Requeue => true,
            OnError::RequeueOnce => retried < 1,
            OnError::DeadLetter | OnError::Drop | OnError::Retry(_) => false,
        };
        tracing::warn!(target: "rabbitkit", queue = %self.queue, %error, requeue, retried, "handler failed");
        if requeue && self.on_error == OnError::RequeueOnce {
            let copy = self.copy(
                &delivery,
                "",
                &self.queue,
                &[(RETRIES_HEADER, count(retried + 1))],
            );
            if self.republish(&delivery, copy, "retry").await {
                Outcome::Requeued
            } else {
                Outcome::Unsettled
            }
        } else if delivery.reject(requeue).await.is_ok() {
            if requeue {
                Outcome::Requeued
            } else {
                Outcome::Rejected
            }
        } else {
            Outcome::Unsettled
        }
    }

    /// A stream keeps every message for every reader, and cannot requeue
    /// or dead-letter one: a retry copy would be appended to the log and
    /// read twice by everyone. So on a stream no copy goes back to the
    /// log: with a [`Retry`](OnError::Retry) policy (the default) the
    /// message is parked at once (`<stream>.parked`); with any other it is
    /// settled with a warning and the reader moves on.
    async fn failed_on_stream(&self, delivery: Delivery, error: String) -> Outcome {
        match &self.on_error {
            OnError::Retry(policy) => {
                let parked = RetryPolicy {
                    delays: std::sync::Arc::from([]),
                    park: policy.park.clone(),
                    in_queue: None,
                };
                let retried = retries(delivery.properties());
                self.retry_or_park(&parked, delivery, retried, error).await
            }
            _ => {
                tracing::warn!(target: "rabbitkit", queue = %self.queue, %error, "handler failed on a stream message; a stream keeps it, the reader moves on");
                match delivery.ack().await {
                    Ok(()) => Outcome::Rejected,
                    Err(_) => Outcome::Unsettled,
                }
            }
        }
    }

    /// [`OnError::Retry`]: a delayed copy while the policy has delays left,
    /// then the parking queue.
    async fn retry_or_park(
        &self,
        policy: &RetryPolicy,
        delivery: Delivery,
        retried: u64,
        error: String,
    ) -> Outcome {
        // In-queue retries are counted by the queue (x-delivery-count).
        let retried = match policy.in_queue {
            Some(_) => delivery.delivery_count().unwrap_or(0),
            None => retried,
        };
        let next_delay = usize::try_from(retried)
            .ok()
            .and_then(|n| policy.delays().get(n).copied());
        if let (Some(delay), Some(_)) = (next_delay, policy.in_queue) {
            tracing::warn!(target: "rabbitkit", queue = %self.queue, %error, retried, ?delay, "handler failed; the queue retries it later");
            return match delivery.reject(true).await {
                Ok(()) => Outcome::Requeued,
                Err(_) => Outcome::Unsettled,
            };
        }
        if let Some(delay) = next_delay {
            tracing::warn!(target: "rabbitkit", queue = %self.queue, %error, retried, ?delay, "handler failed; retrying later");
            let mut copy = self.copy(
                &delivery,
                "",
                &self.queue,
                &[(RETRIES_HEADER, count(retried + 1))],
            );
            if !delay.is_zero() {
                // A delayed message cannot carry a per-message TTL (it would
                // cut the delay short): the retry copy goes without it.
                copy.properties = without_expiration(&copy.properties);
            }
            copy.delay = Some(delay);
            return if self.republish(&delivery, copy, "retry").await {
                Outcome::Requeued
            } else {
                Outcome::Unsettled
            };
        }
        let parking = policy.parking_queue(&self.queue);
        tracing::warn!(target: "rabbitkit", queue = %self.queue, %error, retried, parking, "handler failed; retries used up, parking the message");
        if let Err(e) = self.declare_parking(&parking).await {
            self.copy_failed("park", &e.to_string()).await;
            return match delivery.nack(true).await {
                Ok(()) => Outcome::Requeued,
                Err(_) => Outcome::Unsettled,
            };
        }
        let copy = self.copy(
            &delivery,
            "",
            &parking,
            &[
                (RETRIES_HEADER, count(retried)),
                (ATTEMPTS_HEADER, count(retried + 1)),
                (
                    PARKED_ERROR_HEADER,
                    AMQPValue::LongString(truncate(&error, 1000).into()),
                ),
                (
                    PARKED_FROM_HEADER,
                    AMQPValue::LongString(self.queue.as_str().into()),
                ),
            ],
        );
        if self.republish(&delivery, copy, "park").await {
            Outcome::Parked
        } else {
            Outcome::Unsettled
        }
    }

    /// Declares the parking queue once per `Settle` (durable quorum).
    async fn declare_parking(&self, queue: &str) -> Result<(), rabbitkit_core::DeclareError> {
        if self
            .parking_declared
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Ok(());
        }
        let spec = crate::Queue::durable(queue).build()?;
        self.client.declare(Declaration::Queue(spec)).await?;
        self.parking_declared
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// A copy of `delivery` (body and properties) to `exchange`/`key`,
    /// mandatory, with `extra` headers set.
    fn copy(
        &self,
        delivery: &Delivery,
        exchange: &str,
        key: &str,
        extra: &[(&str, AMQPValue)],
    ) -> OutgoingMessage {
        let mut headers = delivery.properties().headers().clone().unwrap_or_default();
        // The copy goes through the default exchange: where the original
        // was published travels with it (kept from the first attempt), so
        // a `Router` still routes it by its own key.
        if !headers.inner().contains_key(ORIGINAL_ROUTING_KEY_HEADER) {
            headers.insert(
                ORIGINAL_EXCHANGE_HEADER.into(),
                AMQPValue::LongString(delivery.exchange().into()),
            );
            headers.insert(
                ORIGINAL_ROUTING_KEY_HEADER.into(),
                AMQPValue::LongString(delivery.routing_key().into()),
            );
        }
        for (k, v) in extra {
            headers.insert((*k).into(), v.clone());
        }
        OutgoingMessage::new(exchange, key, delivery.body().to_vec())
            .properties(delivery.properties().clone().with_headers(headers))
            .mandatory(true)
    }

    /// A body that will never decode: rejected without requeue.
    pub(crate) async fn undecodable(&self, delivery: Delivery, error: String) -> Outcome {
        tracing::warn!(target: "rabbitkit", queue = %self.queue, %error, "undecodable message rejected");
        match delivery.reject(false).await {
            Ok(()) => Outcome::Undecodable,
            Err(_) => Outcome::Unsettled,
        }
    }

    /// Publishes `copy` and acknowledges the original once it is
    /// confirmed; requeues the original (nack) when it is not. Whether the
    /// message went on either way.
    async fn republish(&self, delivery: &Delivery, copy: OutgoingMessage, what: &str) -> bool {
        match self.client.publish(copy).await {
            Ok(_) => {
                self.copy_failures.store(0, Ordering::Relaxed);
                if let Some(key) = Copied::key(delivery) {
                    self.copied.lock().unwrap().insert(key);
                }
                // Should the ack be lost with the connection, the original
                // comes back too: at least once, never lost.
                if let Err(e) = delivery.ack().await {
                    tracing::warn!(target: "rabbitkit", queue = %self.queue, error = %e, what, "original not acknowledged; it will come back");
                }
                true
            }
            Err(e) => {
                self.copy_failed(what, &e.to_string()).await;
                delivery.nack(true).await.is_ok()
            }
        }
    }

    /// A copy (`what`: retry or park) could not be published or its
    /// parking queue declared: waits before the original is requeued, so a
    /// cause that lasts (no permission, a parking queue declared otherwise,
    /// an unroutable copy) makes a bounded, growing pause instead of a
    /// tight redelivery loop (RabbitMQ 4.3 does not count requeues by nack
    /// toward a quorum queue's delivery limit). Logged on the first failure
    /// of a row and then at each doubling.
    async fn copy_failed(&self, what: &str, error: &str) {
        let failures = self.copy_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let pause = copy_backoff(failures);
        if failures.is_power_of_two() {
            tracing::warn!(target: "rabbitkit", queue = %self.queue, %error, what, failures, ?pause, "copy not published; the message is requeued after a pause");
        }
        tokio::time::sleep(pause).await;
    }
}

/// The pause after `failures` copies in a row could not be published:
/// 100 ms, doubling, at most 30 s.
pub(crate) fn copy_backoff(failures: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1 << failures.saturating_sub(1).min(9))
        .min(Duration::from_secs(30))
}

/// Calls a handler: its future, or the text of its panic (a handler that
/// panics before returning its future).
pub(crate) fn call_handler<Fut>(call: impl FnOnce() -> Fut) -> Result<Fut, String> {
    std::panic::catch_unwind(AssertUnwindSafe(call)).map_err(panic_text)
}

/// Runs a handler's future (from [`call_handler`]) to its end: its output,
/// or `Err` with the text of its panic. A panicking handler is a failed
/// task like any other: it never unwinds into the loop.
pub(crate) async fn run_handler<Fut: Future>(
    started: Result<Fut, String>,
) -> Result<Fut::Output, String> {
    match started {
        Ok(work) => AssertUnwindSafe(work)
            .catch_unwind()
            .await
            .map_err(panic_text),
        Err(panicked) => Err(panicked),
    }
}

/// Calls and runs a handler: its error (a [`Report`], which any error
/// converts into with `?`) or its panic, as text.
pub(crate) async fn handled<Fut>(started: Result<Fut, String>) -> Result<(), String>
where
    Fut: Future<Output = Result<(), Report>>,
{
    match run_handler(started).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(panicked) => Err(panicked),
    }
}

/// `handler panicked: <its message>`.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(a panic without a message)".to_owned());
    format!("handler panicked: {message}")
}

/// `properties` without an `expiration`.
fn without_expiration(p: &BasicProperties) -> BasicProperties {
    let mut out = BasicProperties::default();
    macro_rules! keep {
        ($($get:ident => $set:ident),* $(,)?) => {
            $(if let Some(v) = p.$get() { out = out.$set(v.clone()); })*
        };
    }
    keep!(
        content_type => with_content_type,
        content_encoding => with_content_encoding,
        headers => with_headers,
        delivery_mode => with_delivery_mode,
        priority => with_priority,
        correlation_id => with_correlation_id,
        reply_to => with_reply_to,
        message_id => with_message_id,
        timestamp => with_timestamp,
        kind => with_type,
        user_id => with_user_id,
        app_id => with_app_id,
        cluster_id => with_cluster_id,
    );
    out
}

fn count(n: u64) -> AMQPValue {
    AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX))
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Runs `start(delivery)` for each delivery of `consumer`, up to
/// `concurrency` at once, until the stream ends or `shutdown` is given;
/// then stops as [`Shutdown`] describes.
pub(crate) async fn drive<G>(
    consumer: &mut Consumer,
    concurrency: usize,
    shutdown: Option<&Shutdown>,
    watch: Option<Watch>,
    mut start: impl FnMut(Delivery) -> G,
) -> HandleReport
where
    G: Future<Output = Outcome>,
{
    let concurrency = concurrency.max(1);
    let mut report = HandleReport::default();
    let queue = consumer.queue().to_owned();
    let metrics = rabbitkit_core::metrics::Handling::new(&queue);
    let mut running = FuturesUnordered::new();
    let stopping = async {
        match shutdown {
            Some(s) => s.stopping().await,
            None => std::future::pending().await,
        }
    };
    let mut stopping = std::pin::pin!(stopping);
    let deadline = loop {
        tokio::select! {
            biased;
            deadline = &mut stopping => break Some(deadline),
            Some(outcome) = running.next(), if !running.is_empty() => report.add(outcome),
            item = consumer.next(), if running.len() < concurrency => match item {
                Some(Ok(delivery)) => {
                    // What a warning names; nothing is copied without a watch.
                    let watched = watch.as_ref().map(|w| {
                        (w.clone(), queue.clone(), delivery.message_id().map(str::to_owned))
                    });
                    let work = timed(&metrics, traced(delivery, &queue, &mut start), Outcome::error);
                    let work = Watch::run(watched, work);
                    // Handler panics are caught where they run; this only
                    // keeps a panic in settling from ending the loop.
                    running.push(AssertUnwindSafe(work).catch_unwind().map(|ended| ended.unwrap_or_else(|panic| {
                        tracing::error!(target: "rabbitkit", error = %panic_text(panic), "a delivery's settlement panicked; it will be redelivered");
                        Outcome::Unsettled
                    })));
                }
                Some(Err(e)) => {
                    tracing::warn!(target: "rabbitkit", queue = consumer.queue(), error = %e, "consumer ended");
                }
                None => break None,
            },
        }
    };
    let Some(deadline) = deadline else {
        // The stream ended: let the handlers in flight finish.
        while let Some(outcome) = running.next().await {
            report.add(outcome);
        }
        return report;
    };
    // 1. No new deliveries.
    consumer.cancel().await;
    // 2. Deliveries received but never started go back (dropping an
    //    unsettled delivery requeues it), while ...
    // 3. ... the handlers in flight finish, up to the deadline.
    let finish = async {
        loop {
            while let Some(item) = consumer.try_recv() {
                if let Ok(delivery) = item {
                    delivery.give_back();
                    report.unstarted += 1;
                }
            }
            match running.next().await {
                Some(outcome) => report.add(outcome),
                None => break,
            }
        }
    };
    let finished = tokio::time::timeout_at(deadline, finish).await.is_ok();
    if !finished {
        // 4. Abandoned: dropping their futures requeues their deliveries.
        report.abandoned += running.len() as u64;
        tracing::warn!(target: "rabbitkit", queue = consumer.queue(), abandoned = running.len(), "handlers still running at the deadline abandoned; their messages are requeued");
        drop(running);
    }
    while let Some(Some(item)) = consumer.next().now_or_never() {
        if let Ok(delivery) = item {
            delivery.give_back();
            report.unstarted += 1;
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_without_expiration_keeps_every_other_property() {
        let mut headers = rabbitkit_core::FieldTable::default();
        headers.insert("k".into(), AMQPValue::LongString("v".into()));
        let p = BasicProperties::default()
            .with_expiration("5000".into())
            .with_message_id("id-1".into())
            .with_type("order".into())
            .with_delivery_mode(2)
            .with_headers(headers.clone());
        let q = without_expiration(&p);
        assert_eq!(q.expiration(), &None);
        assert_eq!(
            q,
            BasicProperties::default()
                .with_message_id("id-1".into())
                .with_type("order".into())
                .with_delivery_mode(2)
                .with_headers(headers)
        );
    }

    #[test]
    fn the_pause_after_failed_copies_doubles_up_to_thirty_seconds() {
        let ms = |n| Duration::from_millis(n);
        assert_eq!(copy_backoff(1), ms(100));
        assert_eq!(copy_backoff(2), ms(200));
        assert_eq!(copy_backoff(5), ms(1600));
        assert_eq!(copy_backoff(9), ms(25_600));
        assert_eq!(copy_backoff(10), Duration::from_secs(30));
        assert_eq!(copy_backoff(u32::MAX), Duration::from_secs(30));
    }
}
