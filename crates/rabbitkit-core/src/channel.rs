//! [`RecoveredChannel`]: a channel of one's own that consumes one queue and
//! publishes with confirms on the *same* channel, reopened on the current
//! connection after a failover.
//!
//! That is what RabbitMQ's direct reply-to needs: a reply to
//! `amq.rabbitmq.reply-to` reaches only the channel that published the
//! request, and only while that channel consumes the pseudo-queue. Such a
//! consumption lives and dies with its channel, so it cannot be one of the
//! client's recovered consumers (each on a channel of its own), nor can the
//! request go out on a pooled channel.
//!
//! How it recovers: each opening of the channel (on one connection) is a
//! [`ChannelLease`]. The channel is opened when first needed, and opened
//! again, with its consumption, at the next use after the connection it was
//! on is gone (or the channel was closed, or retired after a nack); the
//! session accessors of `connection.rs` give the connection to open it on.
//! A lease keeps its opening open, so the work that depends on one opening
//! (an RPC call waiting for the reply to a request sent on it) holds its
//! lease and learns from [`ChannelLease::closed`] when that opening is gone:
//! at once, not at a timeout. Publishes go through the core's confirmed
//! publish path ([`RecoveredChannel::publish`]: the window, nacks sent again
//! on a fresh channel, returns, connection losses), on this channel instead
//! of a pooled one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use tokio::sync::watch;

use crate::confirm::ConfirmChannel;
use crate::connection::{Client, deadline_after};
use crate::error::{ChannelError, PublishError};
use crate::message::OutgoingMessage;
use crate::publisher::{Confirmed, OwnRoute, Route};
use crate::session::Session;
use crate::validate::ValidationError;

/// What is done with each delivery of the consumption.
type OnDelivery = Arc<dyn Fn(lapin::message::Delivery) + Send + Sync>;

/// The queue a [`RecoveredChannel`] consumes.
#[derive(Debug, Clone)]
enum Source {
    /// A queue that exists, or a pseudo-queue (direct reply-to).
    Named(String),
    /// An exclusive, auto-delete queue declared by each opening, named anew
    /// on each connection.
    Temporary,
}

/// A channel of one's own that consumes one queue (without
/// acknowledgements) and publishes with confirms on the same channel;
/// reopened, with its consumption, on the current connection after a
/// failover. Cheap to clone; the channel closes when the last clone and the
/// last [`ChannelLease`] are dropped.
///
/// Made for RabbitMQ's direct reply-to (the RPC client of `rabbitkit` is
/// built on it). For ordinary consumers use [`Client::consume`], which
/// acknowledges and is re-subscribed during recovery.
///
/// ```no_run
/// # async fn run(client: rabbitkit_core::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use rabbitkit_core::{BasicProperties, OutgoingMessage, RecoveredChannel};
/// let replies = RecoveredChannel::consume(&client, "amq.rabbitmq.reply-to", |reply| {
///     println!("reply: {:?}", reply.data);
/// })?;
/// let request = OutgoingMessage::new("", "rpc_queue", b"30".to_vec()).properties(
///     BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into()),
/// );
/// let (_confirmed, lease) = replies.publish(request, Duration::from_secs(10)).await?;
/// // The reply can only come while this opening of the channel lives.
/// lease.closed().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RecoveredChannel {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    source: Source,
    on_delivery: OnDelivery,
    /// The opening later uses get, while it is alive.
    current: Mutex<Option<Arc<Opening>>>,
    /// One opening at a time.
    opening: tokio::sync::Mutex<()>,
    /// The temporary queue's name and the connection it was made for.
    temporary: Mutex<Option<(u64, String)>>,
}

/// The channel as opened on one connection.
struct Opening {
    generation: u64,
    queue: String,
    /// Dropping the last clone closes the channel (once its confirms are in).
    confirms: ConfirmChannel,
    /// `true` once the consumption ended (the channel or connection is gone).
    closed: watch::Receiver<bool>,
    pump: tokio::task::AbortHandle,
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

impl Opening {
    fn alive(&self) -> bool {
        !*self.closed.borrow() && self.confirms.channel().status().connected()
    }
}

/// One opening of a [`RecoveredChannel`]: the channel on one connection.
/// It stays open while a lease exists, even once the recovered channel has
/// moved to a newer one. Cheap to clone.
#[derive(Clone)]
pub struct ChannelLease(Arc<Opening>);

impl std::fmt::Debug for ChannelLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelLease")
            .field("channel", &self.0.confirms.channel().id())
            .field("generation", &self.0.generation)
            .field("queue", &self.0.queue)
            .finish()
    }
}

impl ChannelLease {
    /// The connection's generation number (it grows by one on every
    /// reconnect) this opening is on.
    pub fn generation(&self) -> u64 {
        self.0.generation
    }

    /// The queue this opening consumes (for a temporary queue, its name on
    /// this connection).
    pub fn queue(&self) -> &str {
        &self.0.queue
    }

    /// The lapin channel, for what this type does not wrap.
    pub fn channel(&self) -> &lapin::Channel {
        self.0.confirms.channel()
    }

    /// Whether this opening still consumes (its channel and connection are up).
    pub fn is_open(&self) -> bool {
        self.0.alive()
    }

    /// Resolves once this opening's consumption has ended: its channel or
    /// connection is gone (or the broker cancelled the consumer). Every
    /// delivery it received was handed over before.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static + use<> {
        let mut closed = self.0.closed.clone();
        async move {
            // An error means the pump is gone: closed too.
            let _ = closed.wait_for(|c| *c).await;
        }
    }
}

impl std::fmt::Debug for RecoveredChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveredChannel")
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

impl RecoveredChannel {
    /// A channel that consumes `queue` (which must exist, or be a
    /// pseudo-queue such as `amq.rabbitmq.reply-to`) without
    /// acknowledgements, handing each delivery to `on_delivery` (called on
    /// the channel's task: keep it short). Nothing is opened yet (see
    /// [`lease`](Self::lease)). A name over 255 bytes is refused.
    pub fn consume(
        client: &Client,
        queue: impl Into<String>,
        on_delivery: impl Fn(lapin::message::Delivery) + Send + Sync + 'static,
    ) -> Result<Self, ValidationError> {
        let queue = queue.into();
        crate::validate::check_short_string(&queue)
            .map_err(|reason| ValidationError::name(queue.clone(), reason))?;
        Ok(Self::new(
            client,
            Source::Named(queue),
            Arc::new(on_delivery),
        ))
    }

    /// A channel that declares a temporary queue of its own (exclusive,
    /// auto-delete, named [`temporary_queue_name`](crate::temporary_queue_name))
    /// on every opening, and consumes it as [`consume`](Self::consume)
    /// does. The name stays the same on one connection and changes with
    /// it ([`ChannelLease::queue`] tells it): an exclusive queue of a dead
    /// node may stay locked for a while.
    pub fn consume_temporary(
        client: &Client,
        on_delivery: impl Fn(lapin::message::Delivery) + Send + Sync + 'static,
    ) -> Self {
        Self::new(client, Source::Temporary, Arc::new(on_delivery))
    }

    fn new(client: &Client, source: Source, on_delivery: OnDelivery) -> Self {
        Self {
            inner: Arc::new(Inner {
                client: client.clone(),
                source,
                on_delivery,
                current: Mutex::new(None),
                opening: tokio::sync::Mutex::new(()),
                temporary: Mutex::new(None),
            }),
        }
    }

    /// The queue the current opening consumes, if one is open.
    pub fn queue(&self) -> Option<String> {
        let current = self.inner.current.lock().unwrap();
        current
            .as_ref()
            .filter(|o| o.alive())
            .map(|o| o.queue.clone())
    }

    /// The channel on the current connection: the open one, or a new one
    /// (channel opened in confirm mode, queue declared if temporary,
    /// consumption started). Waits for the connection up to the client's
    /// [`operation_timeout`](crate::Options::operation_timeout), which
    /// bounds the whole opening.
    pub async fn lease(&self) -> Result<ChannelLease, ChannelError> {
        let shared = self.inner.client.shared();
        let timeout = shared.options.operation_timeout;
        let deadline = deadline_after(timeout);
        let session = match shared.wait_up_for(0, timeout).await {
            Ok(Ok(s)) => s,
            Ok(Err(reason)) => return Err(ChannelError::Closed { reason }),
            Err(_) => return Err(ChannelError::Timeout(timeout)),
        };
        tokio::time::timeout_at(deadline, self.lease_on(&session))
            .await
            .map_err(|_| ChannelError::Timeout(timeout))?
            .map_err(|e| ChannelError::Broker {
                text: crate::reply::describe(&e),
                cause: crate::reply::cause(&e),
            })
    }

    /// Publishes `message` on this channel with a confirm, through the
    /// core's publish path (as [`Publisher::publish`](crate::Publisher::publish)
    /// does on a pooled channel): its place in the publish window, a nack
    /// sent again on a fresh opening after [`Timings::nack_backoff`](crate::Timings::nack_backoff),
    /// a closed channel tried once more on a new one, a connection loss
    /// sent again after recovery unless
    /// [`resend_after_reconnect`](OutgoingMessage::resend_after_reconnect)
    /// is off. `timeout` (at most [`Options::MAX_TIMEOUT`](crate::Options::MAX_TIMEOUT))
    /// bounds it instead of the client's publish timeout. The publish runs
    /// in the caller's span (no span of its own): with the `opentelemetry`
    /// feature, that span's context goes in the message.
    ///
    /// Resolves with the confirm and the lease of the opening the message
    /// last went out on (where a reply to it will come).
    pub fn publish(
        &self,
        message: OutgoingMessage,
        timeout: Duration,
    ) -> impl Future<Output = Result<(Confirmed, ChannelLease), PublishError>> + Send + 'static + use<>
    {
        let this = self.clone();
        let timeout = timeout.min(crate::Options::MAX_TIMEOUT);
        async move {
            let shared = this.inner.client.shared().clone();
            let message = match message.delay {
                Some(_) => {
                    let client = &this.inner.client;
                    let declare = |d| client.declare(d);
                    let unbind = |d| crate::delay::unbind(client, d);
                    crate::delay::prepare(&client.shared().delay, declare, unbind, message).await?
                }
                None => message,
            };
            let mut attempts = Attempts {
                channel: this,
                lease: None,
            };
            let confirmed =
                crate::publisher::publish(shared, Route::Own(&mut attempts), message, timeout)
                    .await?;
            let lease = attempts.lease.ok_or(PublishError::ConnectionLost)?;
            Ok((confirmed, lease))
        }
    }

    /// The open opening on `session`'s connection, if any.
    fn live(&self, generation: u64) -> Option<Arc<Opening>> {
        let current = self.inner.current.lock().unwrap();
        current
            .as_ref()
            .filter(|o| o.generation == generation && o.alive())
            .cloned()
    }

    /// The channel on `session`'s connection, opened if needed.
    async fn lease_on(&self, session: &Session) -> Result<ChannelLease, lapin::Error> {
        if let Some(o) = self.live(session.generation) {
            return Ok(ChannelLease(o));
        }
        let _one_at_a_time = self.inner.opening.lock().await;
        if let Some(o) = self.live(session.generation) {
            return Ok(ChannelLease(o));
        }
        let newer = self
            .inner
            .current
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|o| o.generation > session.generation);
        if newer {
            return Err(std::io::Error::other("connection replaced").into());
        }
        let opening = Arc::new(self.open(session).await?);
        *self.inner.current.lock().unwrap() = Some(opening.clone());
        Ok(ChannelLease(opening))
    }

    async fn open(&self, session: &Session) -> Result<Opening, lapin::Error> {
        let channel = crate::channels::open_channel(&session.connection, true, 0).await?;
        // From here on, dropping `confirms` closes the channel.
        let confirms = ConfirmChannel::new(channel.clone());
        let queue = match &self.inner.source {
            Source::Named(queue) => queue.clone(),
            Source::Temporary => {
                let name = {
                    let mut temporary = self.inner.temporary.lock().unwrap();
                    match &*temporary {
                        Some((generation, name)) if *generation == session.generation => {
                            name.clone()
                        }
                        _ => {
                            let name = crate::topology::temporary_queue_name();
                            *temporary = Some((session.generation, name.clone()));
                            name
                        }
                    }
                };
                channel
                    .queue_declare(
                        name.as_str().into(),
                        QueueDeclareOptions {
                            exclusive: true,
                            auto_delete: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                name
            }
        };
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let (closed_tx, closed) = watch::channel(false);
        let pump = tokio::spawn(pump(consumer, self.inner.on_delivery.clone(), closed_tx));
        Ok(Opening {
            generation: session.generation,
            queue,
            confirms,
            closed,
            pump: pump.abort_handle(),
        })
    }

    /// Takes the opening of channel `id` out of service: the next use
    /// opens a new one; the leases of the old one keep it open.
    fn retire(&self, id: u16) {
        let mut current = self.inner.current.lock().unwrap();
        if current
            .as_ref()
            .is_some_and(|o| o.confirms.channel().id() == id)
        {
            current.take();
        }
    }
}

/// Hands each delivery over, then says the consumption ended.
async fn pump(mut consumer: lapin::Consumer, on_delivery: OnDelivery, closed: watch::Sender<bool>) {
    while let Some(Ok(delivery)) = consumer.next().await {
        on_delivery(delivery);
    }
    let _ = closed.send(true);
}

/// A publish's route through a [`RecoveredChannel`], and the lease of the
/// opening its last attempt went out on.
struct Attempts {
    channel: RecoveredChannel,
    lease: Option<ChannelLease>,
}

impl OwnRoute for Attempts {
    fn channel<'a>(
        &'a mut self,
        session: &'a Session,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<ConfirmChannel, lapin::Error>> + Send + 'a>>
    {
        Box::pin(async move {
            let lease = self.channel.lease_on(session).await?;
            let confirms = lease.0.confirms.clone();
            self.lease = Some(lease);
            Ok(confirms)
        })
    }

    fn retire(&self, channel_id: u16) {
        self.channel.retire(channel_id);
    }
}
