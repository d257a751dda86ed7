//! [`ConfirmChannel`]: a channel in confirm mode on which every publish
//! learns its own outcome (returns matched by `message_id`), and the message
//! ids rabbitkit gives every publish.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt;
use futures::StreamExt;
use futures::future::Either;
use futures::stream::FuturesUnordered;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Confirmation};
use tokio::sync::{mpsc, oneshot};

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

type Reply = oneshot::Sender<lapin::Result<PublishOutcome>>;

/// One publish handed to a channel's confirm collector: the publish and its
/// confirm (`work`), the way back to its caller (none for a publish whose
/// caller gave up: the collector only sees its confirm in), and, for a
/// mandatory publish, what its return would carry. A publish that is not
/// mandatory is never returned, so it needs no id.
struct Tracked {
    returnable: Option<ReturnKey>,
    work: Work,
    reply: Option<Reply>,
}

/// A [`Tracked`] publish whose confirm came in.
struct Done {
    returnable: Option<ReturnKey>,
    reply: Option<Reply>,
    confirmation: lapin::Result<Confirmation>,
}

impl Future for Tracked {
    type Output = Done;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Done> {
        // FuturesUnordered never polls it again once it resolved.
        let confirmation = std::task::ready!(self.work.as_mut().poll(cx));
        std::task::Poll::Ready(Done {
            returnable: self.returnable.take(),
            reply: self.reply.take(),
            confirmation,
        })
    }
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
/// A channel made for publishes that are never mandatory (the pool's, see
/// `unreturnable`) skips the collector: no confirm on it can carry a
/// return, so each publish awaits its own confirm in its caller's future,
/// and only one whose caller gives up hands its confirm to the collector.
///
/// Dropping the last clone closes the channel once its confirms are in.
#[derive(Clone)]
pub struct ConfirmChannel {
    inner: Arc<Inner>,
}

/// What the clones of a [`ConfirmChannel`] (and the publishes in flight on
/// it) share: cloning one is a reference count, not a lapin `Channel`.
struct Inner {
    channel: lapin::Channel,
    tracker: mpsc::UnboundedSender<Tracked>,
    /// No mandatory publish ever goes out on this channel, so no confirm on
    /// it carries a return: a publish awaits its own confirm.
    unreturnable: bool,
}

impl std::fmt::Debug for ConfirmChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfirmChannel")
            .field("channel", &self.inner.channel.id())
            .finish_non_exhaustive()
    }
}

impl ConfirmChannel {
    /// Wraps `channel`, which must already be in confirm mode
    /// (`confirm_select`). Must be called within a tokio runtime.
    pub fn new(channel: lapin::Channel) -> Self {
        Self::with_returns(channel, false)
    }

    /// Wraps `channel` for publishes that are never mandatory: each awaits
    /// its own confirm, without the collector's hop (a task wake-up, a
    /// queue and a `oneshot` per publish). A mandatory publish on it fails
    /// at once without being sent: the caller must use a channel made by
    /// [`new`](Self::new) for those.
    pub(crate) fn unreturnable(channel: lapin::Channel) -> Self {
        Self::with_returns(channel, true)
    }

    fn with_returns(channel: lapin::Channel, unreturnable: bool) -> Self {
        let (tracker, rx) = mpsc::unbounded_channel();
        tokio::spawn(collect(channel.clone(), rx));
        Self {
            inner: Arc::new(Inner {
                channel,
                tracker,
                unreturnable,
            }),
        }
    }

    /// The underlying channel.
    pub fn channel(&self) -> &lapin::Channel {
        &self.inner.channel
    }

    /// Publishes and resolves with this publish's own outcome. A
    /// `message_id` is added to `properties` when missing: returns are
    /// matched by it and the exchange and routing key, so publishes that
    /// share an id still get their own outcomes (those sent to the same
    /// place route alike).
    ///
    /// The message is handed to the channel before this returns its future
    /// (publishes keep their call order); dropping the future does not
    /// abandon the confirm.
    #[inline]
    pub fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: Arc<[u8]>,
        properties: BasicProperties,
    ) -> impl Future<Output = lapin::Result<PublishOutcome>> + Send + 'static + use<> {
        if exchange.len() > 255 || routing_key.len() > 255 {
            // An AMQP short string: a longer one cannot be sent (and would
            // panic in the encoder). `Client::publish` refuses it with a
            // typed error before it gets here.
            return Either::Left(std::future::ready(Err(std::io::Error::other(
                "exchange or routing key longer than 255 bytes",
            )
            .into())));
        }
        if mandatory && self.inner.unreturnable {
            return Either::Left(std::future::ready(Err(std::io::Error::other(
                "a mandatory publish on a channel made for unreturnable ones",
            )
            .into())));
        }
        // Only a mandatory publish can be returned, so only its id is kept
        // (to match its return).
        let (returnable, properties) = if mandatory {
            let (message_id, properties) = with_message_id(properties);
            let key = ReturnKey {
                message_id,
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
            };
            (Some(key), properties)
        } else if properties.message_id().is_some() {
            (None, properties)
        } else {
            (None, properties.with_message_id(new_message_id().into()))
        };
        // The future holds the channel through the shared `Inner` (a
        // reference count, not a lapin `Channel` clone).
        let held = self.inner.clone();
        let exchange = ShortString::from(exchange);
        let routing_key = ShortString::from(routing_key);
        let work_fut = async move {
            let options = BasicPublishOptions {
                mandatory,
                immediate: false,
            };
            held.channel
                .basic_publish(exchange, routing_key, options, &body, properties)
                .await
                .map(Watched::new)?
                .await
        };
        let mut work: Work = Box::pin(work_fut);
        // The first poll puts the message on the channel (and takes its
        // delivery tag) at once, in call order.
        if let std::task::Poll::Ready(done) = poll_now(work.as_mut()) {
            work = Box::pin(std::future::ready(done));
        }
        if self.inner.unreturnable {
            return Either::Right(Either::Left(Direct {
                work: Some(work),
                inner: self.inner.clone(),
            }));
        }
        let (reply, outcome) = oneshot::channel();
        let handed = self.inner.tracker.send(Tracked {
            returnable,
            work,
            reply: Some(reply),
        });
        Either::Right(Either::Right(async move {
            if handed.is_err() {
                return Err(gone());
            }
            outcome.await.unwrap_or_else(|_| Err(gone()))
        }))
    }
}

/// A publish on an unreturnable channel, awaiting its own confirm. Dropped
/// before the confirm came in, it hands the confirm to the channel's
/// collector, so no confirm is left behind on the channel.
struct Direct {
    work: Option<Work>,
    inner: Arc<Inner>,
}

impl Future for Direct {
    type Output = lapin::Result<PublishOutcome>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let Some(work) = self.work.as_mut() else {
            return std::task::Poll::Ready(Err(gone()));
        };
        let confirmation = std::task::ready!(work.as_mut().poll(cx));
        self.work = None;
        // Nothing mandatory goes out on this channel: a confirm carries no
        // return.
        std::task::Poll::Ready(confirmation.map(|c| match c {
            Confirmation::Nack(_) => PublishOutcome::Nacked,
            Confirmation::Ack(_) | Confirmation::NotRequested => PublishOutcome::Confirmed,
        }))
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            let _ = self.inner.tracker.send(Tracked {
                returnable: None,
                work,
                reply: None,
            });
        }
    }
}

/// Polls `future` once, with a waker that does nothing. A lapin publish's
/// first poll queues its frames on the channel at once: polled when the
/// publish is called, messages go out in call order whoever polls them
/// later (and with the waker that matters).
pub(crate) fn poll_now<F: Future + ?Sized>(
    future: std::pin::Pin<&mut F>,
) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    future.poll(&mut cx)
}

fn gone() -> lapin::Error {
    std::io::Error::other("the channel's confirm collector stopped").into()
}

/// The message id in `properties`, generated (and set) when missing.
pub(crate) fn with_message_id(properties: BasicProperties) -> (String, BasicProperties) {
    match properties.message_id() {
        Some(id) => (id.to_string(), properties),
        None => {
            let id = new_message_id();
            let properties = properties.with_message_id(id.as_str().into());
            (id, properties)
        }
    }
}

/// A new message id, as rabbitkit gives every confirmed publish that has
/// none (and RPC requests their correlation id): 32 lowercase hex digits,
/// the shape of a simple UUID. The first 16 are random, drawn once per
/// process; the last 16 count this process's ids. Unique within the
/// process by construction, and across processes but for a 2⁻⁶⁴ chance
/// per pair of processes; it costs an atomic increment instead of a system
/// call to the OS random number generator per message (a UUID v4 does
/// that). A publish's id is generated once, so a message sent again after
/// a failover keeps its id.
///
/// ```
/// let (a, b) = (rabbitkit_core::new_message_id(), rabbitkit_core::new_message_id());
/// assert_ne!(a, b);
/// assert_eq!(a.len(), 32);
/// ```
pub fn new_message_id() -> String {
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

/// What matches a returned message to its publish: the message id, and
/// where it was sent (an application may give two publishes the same
/// `message_id`: sent to different places, their returns still go to the
/// right publish; sent to the same place, they route alike).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ReturnKey {
    message_id: String,
    exchange: String,
    routing_key: String,
}

/// The returns seen, not yet claimed by their publish: several per key
/// when publishes share a message id and a destination.
#[derive(Default)]
struct Returns(HashMap<ReturnKey, std::collections::VecDeque<(u16, String)>>);

impl Returns {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keeps a returned message for the publish it belongs to.
    fn keep(&mut self, message: &lapin::message::BasicReturnMessage) {
        let Some(id) = message.delivery.properties.message_id() else {
            return;
        };
        let key = ReturnKey {
            message_id: id.to_string(),
            exchange: message.delivery.exchange.to_string(),
            routing_key: message.delivery.routing_key.to_string(),
        };
        (self.0.entry(key).or_default())
            .push_back((message.reply_code, message.reply_text.to_string()));
    }

    /// The return of the publish `key`, if one came.
    fn claim(&mut self, key: &ReturnKey) -> Option<(u16, String)> {
        let queue = self.0.get_mut(key)?;
        let own = queue.pop_front();
        if queue.is_empty() {
            self.0.remove(key);
        }
        own
    }
}

/// Owns the confirms of one channel and answers each publish.
async fn collect(channel: lapin::Channel, mut rx: mpsc::UnboundedReceiver<Tracked>) {
    let mut waiting: FuturesUnordered<Tracked> = FuturesUnordered::new();
    // Returns seen, by message id, not yet claimed by their publish.
    let mut returned = Returns::default();
    let mut batch: Vec<Done> = Vec::new();
    let mut open = true;
    loop {
        tokio::select! {
            tracked = rx.recv(), if open => match tracked {
                Some(t) => {
                    waiting.push(t);
                    take_handed(&mut rx, &mut waiting);
                }
                None => open = false,
            },
            Some(first) = waiting.next(), if !waiting.is_empty() => {
                batch.push(first);
                take_ready(&mut waiting, &mut batch);
                // A mandatory publish's return may ride on any confirm that
                // lapin resolves with the same `multiple` ack, so before a
                // mandatory publish is answered the whole batch must be in.
                // lapin resolves a batch under its lock; taking that lock
                // (wait_for_confirms does) makes sure the whole batch is
                // resolved before it is read. Without a mandatory publish in
                // the batch, nobody's outcome here depends on another's
                // confirm: a return carried by one of these is kept for its
                // owner, whose own batch will take the lock.
                if batch.iter().any(|done| done.returnable.is_some()) {
                    if let Some(Ok(orphans)) = channel.wait_for_confirms().now_or_never() {
                        for m in orphans {
                            returned.keep(&m);
                        }
                    }
                    take_handed(&mut rx, &mut waiting);
                    take_ready(&mut waiting, &mut batch);
                }
                for done in &batch {
                    if let Ok(Confirmation::Ack(Some(m)) | Confirmation::Nack(Some(m))) =
                        &done.confirmation
                    {
                        returned.keep(m);
                    }
                }
                for done in batch.drain(..) {
                    let Done { returnable, reply, confirmation } = done;
                    let outcome = confirmation.map(|c| {
                        let own_return = match returnable {
                            Some(key) if !returned.is_empty() => returned.claim(&key),
                            _ => None,
                        };
                        match (c, own_return) {
                            (Confirmation::Nack(_), _) => PublishOutcome::Nacked,
                            (_, Some((reply_code, reply_text))) => PublishOutcome::Returned {
                                reply_code,
                                reply_text,
                            },
                            (_, None) => PublishOutcome::Confirmed,
                        }
                    });
                    if let Some(reply) = reply {
                        let _ = reply.send(outcome);
                    }
                }
            },
            else => break,
        }
    }
    if channel.status().connected() {
        let _ = channel.close(200, "no longer used".into()).await;
    }
}

/// Moves the publishes already handed to the collector into `waiting`.
fn take_handed(rx: &mut mpsc::UnboundedReceiver<Tracked>, waiting: &mut FuturesUnordered<Tracked>) {
    while let Ok(tracked) = rx.try_recv() {
        waiting.push(tracked);
    }
}

/// Moves the publishes whose confirm is in from `waiting` to `batch`.
fn take_ready(waiting: &mut FuturesUnordered<Tracked>, batch: &mut Vec<Done>) {
    while let Some(Some(done)) = waiting.next().now_or_never() {
        batch.push(done);
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
        let ids: Vec<String> = (0..10_000).map(|_| new_message_id()).collect();
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
