//! Publishing with confirms: a publish resolves when the broker confirms it.
//!
//! Many publishes may be in flight at once (run their futures concurrently),
//! up to the client's publish window. A publish whose connection dies before
//! its confirm arrives is sent again, with the same `message_id`, once the
//! client has recovered (at-least-once; consumers can de-duplicate on the id).
//! While the client is disconnected a publish waits, holding its place in
//! the window (back-pressure), and fails with [`PublishError::Timeout`]
//! after the publish timeout. While the broker blocks the connection (a
//! memory or disk alarm) a publish waits the same way, and fails with
//! [`PublishError::Blocked`], which carries the broker's reason, instead of
//! `Timeout`. Nothing is dropped silently.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::FutureExt;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation};
use tokio::sync::{mpsc, oneshot};

use crate::connection::{Client, Link, Session, Shared};
use crate::error::PublishError;

/// A message to publish: where to, the body, its AMQP properties.
///
/// ```
/// use rabbitkit_core::{BasicProperties, OutgoingMessage};
/// let msg = OutgoingMessage::new("orders", "order.created", br#"{"id":1}"#.to_vec())
///     .properties(BasicProperties::default().with_content_type("application/json".into()))
///     .mandatory(true);
/// assert_eq!(msg.routing_key, "order.created");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct OutgoingMessage {
    /// The exchange (`""` is the default exchange, which routes to the queue named by the key).
    pub exchange: String,
    /// The routing key.
    pub routing_key: String,
    /// The body, as sent.
    pub body: Vec<u8>,
    /// AMQP properties. A `message_id` is added when missing.
    pub properties: BasicProperties,
    /// Fail with [`PublishError::Unroutable`] when no queue receives the message.
    pub mandatory: bool,
    /// Send it again after a reconnect when the connection died before its
    /// confirm (default `true`: at-least-once). With `false` such a publish
    /// fails with [`PublishError::ConnectionLost`] (for best-effort messages
    /// such as RPC replies, whose target may have died with the node).
    pub resend_after_reconnect: bool,
    /// Deliver it this much later (see [`delay`](crate::delay)): `None`
    /// or zero sends it at once.
    pub delay: Option<std::time::Duration>,
}

impl OutgoingMessage {
    /// A message with default properties, not mandatory.
    pub fn new(exchange: impl Into<String>, routing_key: impl Into<String>, body: Vec<u8>) -> Self {
        Self {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            body,
            properties: BasicProperties::default(),
            mandatory: false,
            resend_after_reconnect: true,
            delay: None,
        }
    }

    /// Delivers the message to its exchange and routing key `delay` from
    /// now, through the plugin-free delay queues described in
    /// [`delay`](crate::delay). Rounded up to [`DELAY_UNIT`](crate::delay::DELAY_UNIT);
    /// zero publishes at once; above [`MAX_DELAY`](crate::delay::MAX_DELAY)
    /// the publish fails with [`PublishError::Invalid`]. The confirm means
    /// the broker holds the message durably, replicated, for the whole delay.
    pub fn delay(mut self, delay: std::time::Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Sets [`resend_after_reconnect`](Self::resend_after_reconnect).
    pub fn resend_after_reconnect(mut self, resend: bool) -> Self {
        self.resend_after_reconnect = resend;
        self
    }

    /// Sets the AMQP properties.
    pub fn properties(mut self, properties: BasicProperties) -> Self {
        self.properties = properties;
        self
    }

    /// Sets the `mandatory` flag.
    pub fn mandatory(mut self, mandatory: bool) -> Self {
        self.mandatory = mandatory;
        self
    }
}

/// What a successful publish tells.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Confirmed {
    /// The message's `message_id` (given, or generated).
    pub message_id: String,
    /// How many times it was sent (more than 1 after a failover: a possible duplicate).
    pub attempts: u32,
}

/// Publishes on one pooled channel, so its messages keep their order.
/// Cheap to clone. Made by [`Client::publisher`].
#[derive(Clone, Debug)]
pub struct Publisher {
    client: Client,
    slot: usize,
}

impl Publisher {
    pub(crate) fn new(client: Client, slot: usize) -> Self {
        Self { client, slot }
    }

    /// The client this publisher belongs to.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Publishes `message` **without a confirm**, for traffic that may be
    /// lost (metrics, logs, telemetry): it resolves once the frames are
    /// handed to the connection, on a channel of its own without confirm
    /// mode. Nothing is re-sent after a connection loss, no `message_id` is
    /// added, and `mandatory` returns are not reported. It fails at once,
    /// with no wait, while the connection is recovering or the broker
    /// blocks publishers ([`PublishError::NotSent`]), and with
    /// [`PublishError::Closed`] once the client is closed; a delay is
    /// refused ([`PublishError::Invalid`]: a delayed publish is always
    /// confirmed).
    pub fn publish_unconfirmed(
        &self,
        message: OutgoingMessage,
    ) -> impl Future<Output = Result<(), PublishError>> + Send + 'static + use<> {
        let shared = self.client.shared().clone();
        #[cfg(feature = "opentelemetry")]
        let span = crate::trace::publish_span(&message.exchange, &message.routing_key);
        let publish = async move { publish_unconfirmed(shared, message).await };
        #[cfg(feature = "opentelemetry")]
        let publish = tracing::Instrument::instrument(publish, span);
        publish
    }

    /// Publishes `message` and resolves when the broker confirms it.
    ///
    /// Errors: [`PublishError::Unroutable`] (mandatory, no queue),
    /// [`PublishError::ExchangeNotFound`], [`PublishError::Nacked`],
    /// [`PublishError::Rejected`], [`PublishError::Timeout`] (or
    /// [`PublishError::Blocked`] when the broker was blocking publishers at
    /// the timeout),
    /// [`PublishError::Closed`], and [`PublishError::Invalid`] for an
    /// exchange or routing key over 255 bytes (nothing is sent). A connection loss is not an error: the
    /// message is sent again after recovery.
    pub fn publish(
        &self,
        message: OutgoingMessage,
    ) -> impl Future<Output = Result<Confirmed, PublishError>> + Send + 'static + use<> {
        let shared = self.client.shared().clone();
        let slot = self.slot;
        // Only a delayed publish needs the client (to declare its queues).
        let client = message.delay.is_some().then(|| self.client.clone());
        #[cfg(feature = "opentelemetry")]
        let span = crate::trace::publish_span(&message.exchange, &message.routing_key);
        let publish = async move {
            let message = match client {
                Some(client) => crate::delay::prepare(&client, message).await?,
                None => message,
            };
            let timeout = shared.options.publish_timeout;
            publish(shared, &mut Route::Pool(slot), message, timeout).await
        };
        #[cfg(feature = "opentelemetry")]
        let publish = tracing::Instrument::instrument(publish, span);
        publish
    }
}

/// See [`Publisher::publish_unconfirmed`].
async fn publish_unconfirmed(
    shared: Arc<Shared>,
    msg: OutgoingMessage,
) -> Result<(), PublishError> {
    let metrics = crate::metrics::Publish::start(&msg.exchange);
    let result = send_unconfirmed(shared, msg).await;
    metrics.finished(&result);
    result
}

async fn send_unconfirmed(shared: Arc<Shared>, msg: OutgoingMessage) -> Result<(), PublishError> {
    crate::validate::publish(&msg.exchange, &msg.routing_key)?;
    if msg.delay.is_some_and(|d| !d.is_zero()) {
        return Err(PublishError::Invalid {
            what: "delay".into(),
            value: format!("{:?}", msg.delay.unwrap_or_default()),
            reason: "a delayed publish is always confirmed: use `publish`".into(),
        });
    }
    #[cfg(feature = "opentelemetry")]
    let msg = OutgoingMessage {
        properties: crate::trace::with_current_context(msg.properties),
        ..msg
    };
    let session = match &*shared.link.borrow() {
        Link::Up(s) if s.alive() => s.clone(),
        Link::Closed(reason) => {
            return Err(PublishError::Closed {
                reason: reason.clone(),
            });
        }
        _ => {
            return Err(PublishError::NotSent {
                reason: "not connected (recovering)".into(),
            });
        }
    };
    if let Some(reason) = shared.blocked.lock().unwrap().clone() {
        return Err(PublishError::NotSent {
            reason: format!("the broker is blocking publishers ({reason})"),
        });
    }
    let timeout = shared.options.publish_timeout;
    let sent = async {
        let channel = session.pool.unconfirmed(&session.connection).await?;
        channel
            .basic_publish(
                msg.exchange.as_str().into(),
                msg.routing_key.as_str().into(),
                lapin::options::BasicPublishOptions {
                    mandatory: msg.mandatory,
                    immediate: false,
                },
                &msg.body,
                msg.properties,
            )
            .await
    };
    match tokio::time::timeout(timeout, sent).await {
        Err(_) => Err(PublishError::Timeout(timeout)),
        Ok(Ok(_no_confirm)) => Ok(()),
        Ok(Err(_)) if !session.alive() => Err(PublishError::ConnectionLost),
        Ok(Err(e)) => Err(crate::reply::publish_error(&e, &msg.exchange)),
    }
}

/// Where a confirmed publish goes out, attempt after attempt.
pub(crate) enum Route<'a> {
    /// The pool's channel of this slot (modulo the pool's size).
    Pool(usize),
    /// A channel of one's own ([`RecoveredChannel`](crate::RecoveredChannel)).
    Own(&'a mut dyn OwnRoute),
}

/// A channel other than the pool's to publish on: asked for a channel on
/// each attempt's connection, told to retire one after a nack.
pub(crate) trait OwnRoute: Send {
    /// The confirm-mode channel to publish on, on `session`'s connection.
    fn channel<'a>(
        &'a mut self,
        session: &'a Session,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<ConfirmChannel, lapin::Error>> + Send + 'a>>;
    /// Channel `channel_id` was nacked: the next attempt takes a fresh one.
    fn retire(&self, channel_id: u16);
}

impl Route<'_> {
    async fn channel(&mut self, session: &Session) -> Result<ConfirmChannel, lapin::Error> {
        match self {
            Route::Pool(slot) => session.pool.get(&session.connection, *slot).await,
            Route::Own(own) => own.channel(session).await,
        }
    }

    fn retire(&self, session: &Session, channel_id: u16) {
        match self {
            Route::Pool(slot) => session.pool.retire(*slot, channel_id),
            Route::Own(own) => own.retire(channel_id),
        }
    }
}

/// A confirmed publish of `msg` through `route`, bounded by `timeout`.
pub(crate) async fn publish(
    shared: Arc<Shared>,
    route: &mut Route<'_>,
    msg: OutgoingMessage,
    timeout: std::time::Duration,
) -> Result<Confirmed, PublishError> {
    let metrics = crate::metrics::Publish::start(&msg.exchange);
    let result = publish_confirmed(shared, route, msg, timeout, &metrics).await;
    metrics.finished(&result);
    result
}

async fn publish_confirmed(
    shared: Arc<Shared>,
    route: &mut Route<'_>,
    mut msg: OutgoingMessage,
    timeout: std::time::Duration,
    metrics: &crate::metrics::Publish,
) -> Result<Confirmed, PublishError> {
    crate::validate::publish(&msg.exchange, &msg.routing_key)?;
    let deadline = Instant::now() + timeout;
    // A place in the in-flight window: at once when there is one (no timer
    // to register), else waited for until the publish timeout.
    let _permit = match shared.window.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(tokio::sync::TryAcquireError::Closed) => {
            return Err(PublishError::Closed {
                reason: "client closed".into(),
            });
        }
        Err(tokio::sync::TryAcquireError::NoPermits) => {
            tokio::time::timeout(timeout, shared.window.clone().acquire_owned())
                .await
                .map_err(|_| timed_out(&shared, timeout))?
                .map_err(|_| PublishError::Closed {
                    reason: "client closed".into(),
                })?
        }
    };

    let (message_id, properties) = with_message_id(std::mem::take(&mut msg.properties));
    #[cfg(feature = "opentelemetry")]
    let properties = crate::trace::sending(&message_id, properties);
    msg.properties = properties;
    let body: Arc<[u8]> = std::mem::take(&mut msg.body).into();

    let mut newer_than = 0;
    let mut attempts = 0u32;
    let mut channel_retries = 0;
    let mut nacks = 0u32;
    // The id of the channel the last attempt went out on (NO_CHANNEL: none
    // yet), to retire that channel after a nack.
    const NO_CHANNEL: u32 = u32::MAX;
    let channel_id = std::sync::atomic::AtomicU32::new(NO_CHANNEL);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let session = match shared.wait_up_for(newer_than, left).await {
            Ok(Ok(s)) => s,
            Ok(Err(reason)) => return Err(PublishError::Closed { reason }),
            Err(_) => return Err(timed_out(&shared, timeout)),
        };
        attempts += 1;
        if attempts > 1 {
            shared.counters.republished.fetch_add(1, Ordering::Relaxed);
            metrics.resent();
        }
        let sent = async {
            let channel = route.channel(&session).await?;
            let _outstanding = metrics.sending();
            channel_id.store(u32::from(channel.channel().id()), Ordering::Relaxed);
            channel
                .publish(
                    &msg.exchange,
                    &msg.routing_key,
                    msg.mandatory,
                    body.clone(),
                    msg.properties.clone(),
                )
                .await
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let waiting = session.confirms.start();
        let outcome = match tokio::time::timeout(left, sent).await {
            Ok(outcome) => outcome,
            Err(_) => return Err(timed_out(&shared, timeout)),
        };
        drop(waiting);
        match outcome {
            Ok(PublishOutcome::Confirmed) => {
                shared.counters.confirmed.fetch_add(1, Ordering::Relaxed);
                return Ok(Confirmed {
                    message_id,
                    attempts,
                });
            }
            Ok(PublishOutcome::Returned { reply_text, .. }) => {
                return Err(PublishError::Unroutable {
                    exchange: msg.exchange,
                    routing_key: msg.routing_key,
                    reply_text,
                });
            }
            Ok(PublishOutcome::Nacked) => {
                // The broker could not store it: e.g. a quorum queue between
                // leaders after a node died. RabbitMQ 3.10 goes on nacking a
                // channel that published during the election, so send it
                // again on a fresh channel, with backoff, until the deadline.
                let id = u16::try_from(channel_id.load(Ordering::Relaxed)).ok();
                if let Some(id) = id {
                    route.retire(&session, id);
                }
                nacks = nacks.saturating_add(1);
                metrics.nacked();
                let backoff = &shared.options.timings.nack_backoff;
                let nack_delay = backoff.delay_for(nacks);
                if Instant::now() + nack_delay >= deadline
                    || backoff.max_attempts.is_some_and(|max| nacks >= max)
                {
                    return Err(PublishError::Nacked {
                        exchange: msg.exchange,
                    });
                }
                tracing::debug!(target: "rabbitkit", message_id, "publish nacked; sending it again");
                tokio::time::sleep(nack_delay).await;
                newer_than = 0;
                continue;
            }
            Err(err) => {
                if !session.alive() && !msg.resend_after_reconnect {
                    return Err(PublishError::ConnectionLost);
                }
                if !session.alive() {
                    // The connection is gone: send again once recovered.
                    tracing::debug!(target: "rabbitkit", message_id, "publish interrupted by connection loss; will re-publish");
                    newer_than = session.generation;
                    continue;
                }
                match crate::reply::publish_refusal(&err, &msg.exchange) {
                    Some(
                        e @ (PublishError::TooLarge { .. } | PublishError::ExchangeNotFound { .. }),
                    ) => {
                        return Err(e);
                    }
                    // The channel was closed, maybe by another publisher's
                    // mistake: try once more on a fresh channel.
                    Some(e) if channel_retries > 0 => return Err(e),
                    None if channel_retries > 0 => {
                        return Err(crate::reply::publish_error(&err, &msg.exchange));
                    }
                    _ => channel_retries += 1,
                }
            }
        }
    }
}

/// The error of a publish whose timeout passed: [`PublishError::Blocked`]
/// while the broker blocks the connection, else [`PublishError::Timeout`].
fn timed_out(shared: &Shared, timeout: std::time::Duration) -> PublishError {
    match shared.blocked.lock().unwrap().clone() {
        Some(reason) => PublishError::Blocked { reason, timeout },
        None => PublishError::Timeout(timeout),
    }
}

static ABANDONED_CONFIRMS: AtomicU64 = AtomicU64::new(0);

/// Publisher confirms this process dropped before the broker answered them
/// (lapin then keeps each one for the life of its channel).
#[doc(hidden)]
pub fn abandoned_confirms() -> u64 {
    ABANDONED_CONFIRMS.load(Ordering::Relaxed)
}

/// What the broker answered about one publish on a [`ConfirmChannel`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishOutcome {
    /// Confirmed: the broker took responsibility for it.
    Confirmed,
    /// Returned as unroutable (a mandatory publish that no queue took), then confirmed.
    Returned {
        /// The broker's reply code (312 NO_ROUTE).
        reply_code: u16,
        /// The broker's reply text.
        reply_text: String,
    },
    /// Nacked: the broker could not store it.
    Nacked,
}

type Work = std::pin::Pin<Box<dyn Future<Output = lapin::Result<Confirmation>> + Send>>;

/// One publish handed to a channel's confirm collector.
struct Tracked {
    message_id: String,
    work: Work,
    reply: oneshot::Sender<lapin::Result<PublishOutcome>>,
}

/// A channel in confirm mode on which every publish learns its own outcome.
///
/// lapin hands the oldest returned message to whichever confirm it resolves
/// next (and resolves a `multiple` ack in no particular order), so with
/// several mandatory publishes in flight its `Ack(Some(returned))` may name
/// another publish. Here one collector task per channel owns every confirm:
/// it gathers all the returns of a batch of confirms and gives each publish
/// the outcome that matches its `message_id`. Because the collector owns the
/// confirms, a publish whose caller gives up (timeout, dropped future) leaves
/// no confirm behind on the channel either.
///
/// Dropping the last clone closes the channel once its confirms are in.
#[derive(Clone)]
pub struct ConfirmChannel {
    channel: lapin::Channel,
    tracker: mpsc::UnboundedSender<Tracked>,
}

impl std::fmt::Debug for ConfirmChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfirmChannel")
            .field("channel", &self.channel.id())
            .finish_non_exhaustive()
    }
}

impl ConfirmChannel {
    /// Wraps `channel`, which must already be in confirm mode
    /// (`confirm_select`). Must be called within a tokio runtime.
    pub fn new(channel: lapin::Channel) -> Self {
        let (tracker, rx) = mpsc::unbounded_channel();
        tokio::spawn(collect(channel.clone(), rx));
        Self { channel, tracker }
    }

    /// The underlying channel.
    pub fn channel(&self) -> &lapin::Channel {
        &self.channel
    }

    /// Publishes and resolves with this publish's own outcome. A
    /// `message_id` is added to `properties` when missing: returns are
    /// matched by it, so ids must be unique among the publishes in flight.
    ///
    /// The message is handed to the channel before this returns its future
    /// (publishes keep their call order); dropping the future does not
    /// abandon the confirm.
    pub fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: Arc<[u8]>,
        properties: BasicProperties,
    ) -> impl Future<Output = lapin::Result<PublishOutcome>> + Send + 'static + use<> {
        let (message_id, properties) = with_message_id(properties);
        let channel = self.channel.clone();
        let exchange = ShortString::from(exchange);
        let routing_key = ShortString::from(routing_key);
        let mut work: Work = Box::pin(async move {
            let options = BasicPublishOptions {
                mandatory,
                immediate: false,
            };
            channel
                .basic_publish(exchange, routing_key, options, &body, properties)
                .await
                .map(Watched::new)?
                .await
        });
        // The first poll puts the message on the channel (and takes its
        // delivery tag) at once, in call order.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if let std::task::Poll::Ready(done) = work.as_mut().poll(&mut cx) {
            work = Box::pin(std::future::ready(done));
        }
        let (reply, outcome) = oneshot::channel();
        let handed = self.tracker.send(Tracked {
            message_id,
            work,
            reply,
        });
        async move {
            if handed.is_err() {
                return Err(gone());
            }
            outcome.await.unwrap_or_else(|_| Err(gone()))
        }
    }
}

fn gone() -> lapin::Error {
    std::io::Error::other("the channel's confirm collector stopped").into()
}

/// The message id in `properties`, generated (and set) when missing.
fn with_message_id(properties: BasicProperties) -> (String, BasicProperties) {
    match properties.message_id() {
        Some(id) => (id.to_string(), properties),
        None => {
            let id = next_message_id();
            let properties = properties.with_message_id(id.as_str().into());
            (id, properties)
        }
    }
}

/// A new message id: 32 lowercase hex digits, the shape of a simple UUID.
/// The first 16 are random, drawn once per process; the last 16 count this
/// process's messages. Unique among this process's publishes by
/// construction, and across processes but for a 2⁻⁶⁴ chance per pair of
/// processes; it costs an atomic increment instead of a system call to the
/// OS random number generator per message (a UUID v4 did that). It is
/// generated once per publish, so a message sent again after a failover
/// keeps its id.
fn next_message_id() -> String {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let count = COUNT.fetch_add(1, Ordering::Relaxed);
    let mut hex = [0u8; 32];
    for (i, byte) in hex.iter_mut().enumerate() {
        let word = if i < 16 { prefix } else { count };
        let nibble = (word >> (4 * (15 - i % 16))) & 0xf;
        *byte = b"0123456789abcdef"[nibble as usize];
    }
    // Only ASCII hex digits were written.
    String::from_utf8(hex.to_vec()).unwrap_or_default()
}

/// The message id a returned message carries.
fn returned_id(message: &lapin::message::BasicReturnMessage) -> Option<String> {
    message
        .delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string())
}

/// Owns the confirms of one channel and answers each publish.
async fn collect(channel: lapin::Channel, mut rx: mpsc::UnboundedReceiver<Tracked>) {
    type Done = (
        String,
        oneshot::Sender<lapin::Result<PublishOutcome>>,
        lapin::Result<Confirmation>,
    );
    let mut waiting: FuturesUnordered<std::pin::Pin<Box<dyn Future<Output = Done> + Send>>> =
        FuturesUnordered::new();
    // Returns seen, by message id, not yet claimed by their publish.
    let mut returned: HashMap<String, (u16, String)> = HashMap::new();
    let mut open = true;
    loop {
        tokio::select! {
            tracked = rx.recv(), if open => match tracked {
                Some(t) => waiting.push(Box::pin(async move {
                    let confirmation = t.work.await;
                    (t.message_id, t.reply, confirmation)
                })),
                None => open = false,
            },
            Some(first) = waiting.next(), if !waiting.is_empty() => {
                // lapin resolves a batch of confirms (one `multiple` ack)
                // under its lock; taking that lock (wait_for_confirms does)
                // makes sure the whole batch is resolved before it is read.
                if let Some(Ok(orphans)) = channel.wait_for_confirms().now_or_never() {
                    for m in orphans {
                        if let Some(id) = returned_id(&m) {
                            returned.insert(id, (m.reply_code, m.reply_text.to_string()));
                        }
                    }
                }
                let mut batch = vec![first];
                while let Some(Some(more)) = waiting.next().now_or_never() {
                    batch.push(more);
                }
                for (_, _, confirmation) in &batch {
                    if let Ok(Confirmation::Ack(Some(m)) | Confirmation::Nack(Some(m))) = confirmation
                        && let Some(id) = returned_id(m)
                    {
                        returned.insert(id, (m.reply_code, m.reply_text.to_string()));
                    }
                }
                for (id, reply, confirmation) in batch {
                    let outcome = confirmation.map(|c| match (c, returned.remove(&id)) {
                        (Confirmation::Nack(_), _) => PublishOutcome::Nacked,
                        (_, Some((reply_code, reply_text))) => PublishOutcome::Returned {
                            reply_code,
                            reply_text,
                        },
                        (_, None) => PublishOutcome::Confirmed,
                    });
                    let _ = reply.send(outcome);
                }
            },
            else => break,
        }
    }
    if channel.status().connected() {
        let _ = channel.close(200, "no longer used".into()).await;
    }
}

/// A lapin confirm that counts itself when dropped unanswered.
struct Watched(Option<lapin::PublisherConfirm>);

impl Watched {
    fn new(confirm: lapin::PublisherConfirm) -> Self {
        Self(Some(confirm))
    }
}

impl Future for Watched {
    type Output = lapin::Result<Confirmation>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let Some(inner) = self.0.as_mut() else {
            return std::task::Poll::Pending;
        };
        let out = std::pin::Pin::new(inner).poll(cx);
        if out.is_ready() {
            self.0 = None;
        }
        out
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.0.is_some() {
            ABANDONED_CONFIRMS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_unique_hex_of_a_uuids_length() {
        let ids: Vec<String> = (0..10_000).map(|_| next_message_id()).collect();
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        for id in &ids {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
        }
        // One process, one prefix; the counter part grows.
        assert_eq!(ids[0][..16], ids[9_999][..16]);
        let n = |id: &str| u64::from_str_radix(&id[16..], 16).unwrap();
        assert!(n(&ids[9_999]) > n(&ids[0]));
    }

    #[test]
    fn a_given_message_id_is_kept() {
        let props = BasicProperties::default().with_message_id("mine".into());
        let (id, props) = with_message_id(props);
        assert_eq!(id, "mine");
        assert_eq!(
            props.message_id().as_ref().map(|s| s.as_str()),
            Some("mine")
        );
        let (generated, props) = with_message_id(BasicProperties::default());
        assert_eq!(
            props.message_id().as_ref().map(|s| s.to_string()),
            Some(generated)
        );
    }
}
