//! The [`Client`]: the cheap-to-clone handle an application holds.
//!
//! A client owns one AMQP connection at a time (to one node of the cluster),
//! a pool of publishing channels on it, a dedicated channel for declarations,
//! and one channel per consumer. A supervisor task (see `supervisor.rs`)
//! replaces all of them when the connection is lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use lapin::options::{
    ExchangeDeleteOptions, ExchangeUnbindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use tokio::sync::{Notify, Semaphore, broadcast, oneshot, watch};

use crate::channels::{ChannelPool, Slot};
use crate::consumer::{ConsumeOptions, Consumer, ConsumerRecord};
use crate::endpoint::Endpoint;
use crate::error::{ConnectError, ConsumeError, DeclareError};
use crate::events::{self, Event};
use crate::options::Options;
use crate::publisher::{Confirmed, OutgoingMessage, Publisher};
use crate::reply::declare_error;
use crate::topology::{BindingSpec, Declaration, ExchangeBindingSpec, Topology};
use crate::validate;

/// The state of the client's link to the cluster.
#[derive(Clone)]
pub(crate) enum Link {
    /// Connecting or recovering.
    Connecting,
    /// Connected and recovered.
    Up(Arc<Session>),
    /// Stopped for good.
    Closed(String),
}

/// One live AMQP connection and its channels.
pub(crate) struct Session {
    pub(crate) generation: u64,
    pub(crate) endpoint: Endpoint,
    pub(crate) connection: lapin::Connection,
    pub(crate) pool: ChannelPool,
    pub(crate) admin: Slot,
    pub(crate) admin_lock: tokio::sync::Mutex<()>,
    /// Publishes waiting for their confirm (see `stall.rs`).
    pub(crate) confirms: crate::stall::ConfirmWaits,
}

impl Session {
    pub(crate) fn alive(&self) -> bool {
        self.connection.status().connected()
    }

    /// Runs a declaration on the admin channel (never on a channel that
    /// carries user traffic: a refusal closes the channel it ran on).
    pub(crate) async fn declare(&self, decl: &Declaration) -> Result<(), DeclareError> {
        let _serial = self.admin_lock.lock().await;
        let channel = self
            .admin
            .get(&self.connection)
            .await
            .map_err(|e| declare_error(&e))?;
        decl.run(&channel).await
    }
}

/// Counters of what the client did, for monitoring and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Publishes confirmed by the broker.
    pub confirmed: u64,
    /// Publishes sent again after a connection loss (each may be a duplicate).
    pub republished: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Successful recoveries.
    pub recoveries: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) confirmed: AtomicU64,
    pub(crate) republished: AtomicU64,
    pub(crate) disconnects: AtomicU64,
    pub(crate) recoveries: AtomicU64,
}

/// State shared by the client handles, the supervisor and the tasks.
pub(crate) struct Shared {
    pub(crate) options: Options,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) link: watch::Sender<Link>,
    pub(crate) topology: Mutex<Topology>,
    pub(crate) consumers: Mutex<HashMap<u64, Arc<ConsumerRecord>>>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) window: Arc<Semaphore>,
    pub(crate) next_id: AtomicU64,
    pub(crate) next_slot: AtomicUsize,
    pub(crate) counters: Counters,
    pub(crate) shutdown: Notify,
    pub(crate) closing: AtomicBool,
    /// Consumers dropped whose last acks are still being sent.
    pub(crate) draining: AtomicUsize,
    /// The broker's reason while it blocks this connection (an alarm).
    pub(crate) blocked: Mutex<Option<String>>,
    /// The delay topology this client declared (see `delay.rs`).
    pub(crate) delay: crate::delay::Declared,
    /// Connection-level metrics (the `metrics` feature).
    pub(crate) metrics: crate::metrics::Connection,
}

impl Shared {
    pub(crate) fn emit(&self, event: Event) {
        tracing::info!(target: "rabbitkit", "{event}");
        self.metrics.event(&event);
        match &event {
            Event::Blocked { reason } => *self.blocked.lock().unwrap() = Some(reason.clone()),
            // A block belongs to one connection.
            Event::Unblocked
            | Event::Connected { .. }
            | Event::Disconnected { .. }
            | Event::Recovered { .. } => *self.blocked.lock().unwrap() = None,
            _ => {}
        }
        let _ = self.events.send(event);
    }

    /// The current session, if the link is up.
    pub(crate) fn current(&self) -> Option<Arc<Session>> {
        match &*self.link.borrow() {
            Link::Up(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// Waits for a session newer than `generation` (0: any), or the close reason.
    pub(crate) async fn wait_up(&self, newer_than: u64) -> Result<Arc<Session>, String> {
        let mut rx = self.link.subscribe();
        loop {
            match &*rx.borrow_and_update() {
                Link::Up(s) if s.generation > newer_than && s.alive() => return Ok(s.clone()),
                Link::Closed(r) => return Err(r.clone()),
                _ => {}
            }
            if rx.changed().await.is_err() {
                return Err("client dropped".into());
            }
        }
    }

    /// Like [`wait_up`](Self::wait_up), bounded by `timeout`.
    pub(crate) async fn wait_up_for(
        &self,
        newer_than: u64,
        timeout: Duration,
    ) -> Result<Result<Arc<Session>, String>, tokio::time::error::Elapsed> {
        if let Some(s) = self.current()
            && s.generation > newer_than
            && s.alive()
        {
            return Ok(Ok(s));
        }
        tokio::time::timeout(timeout, self.wait_up(newer_than)).await
    }
}

/// Closes the connection when the last [`Client`] clone is dropped.
pub(crate) struct Owner {
    pub(crate) shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.shutdown.notify_one();
    }
}

/// A connection to a RabbitMQ cluster that survives the loss of a node.
///
/// Cheap to clone; all clones share one AMQP connection. Dropping the last
/// clone (and every [`Publisher`] and [`Consumer`] made from it) closes it.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use rabbitkit_core::{Options, OutgoingMessage};
/// let client = Options::new().connect_env().await?;
/// client.publish(OutgoingMessage::new("", "hello", b"Hello World!".to_vec())).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) owner: Arc<Owner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shared = &self.owner.shared;
        f.debug_struct("Client")
            .field("endpoints", &shared.endpoints)
            .field("current", &shared.current().map(|s| s.endpoint.clone()))
            .finish_non_exhaustive()
    }
}

impl Client {
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }

    pub(crate) async fn start(
        options: Options,
        endpoints: Vec<Endpoint>,
    ) -> Result<Self, ConnectError> {
        let (link, _) = watch::channel(Link::Connecting);
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            window: Arc::new(Semaphore::new(
                options.publish_window.min(Semaphore::MAX_PERMITS),
            )),
            options,
            endpoints,
            link,
            topology: Mutex::new(Topology::default()),
            consumers: Mutex::new(HashMap::new()),
            events,
            next_id: AtomicU64::new(1),
            next_slot: AtomicUsize::new(0),
            counters: Counters::default(),
            shutdown: Notify::new(),
            closing: AtomicBool::new(false),
            draining: AtomicUsize::new(0),
            blocked: Mutex::new(None),
            delay: Default::default(),
            metrics: Default::default(),
        });
        let (first_tx, first_rx) = oneshot::channel();
        tokio::spawn(crate::supervisor::supervise(shared.clone(), first_tx));
        let client = Client {
            owner: Arc::new(Owner { shared }),
        };
        match first_rx.await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnectError::Closed {
                reason: "supervisor stopped".into(),
            }),
        }
    }

    /// A stream of connection [`Event`]s from now on. When the client is
    /// connected, the stream starts with an [`Event::Connected`] naming the
    /// endpoint in use, so a listener made after `connect` knows where it is.
    pub fn events(&self) -> impl Stream<Item = Event> + Send + Unpin + 'static {
        let rx = self.shared().events.subscribe();
        let first = self.shared().current().map(|s| Event::Connected {
            endpoint: s.endpoint.clone(),
        });
        futures::StreamExt::boxed(futures::stream::iter(first).chain(events::stream(rx)))
    }

    /// The options this client was built with.
    pub fn options(&self) -> &Options {
        &self.shared().options
    }

    /// The inner delays, intervals and retry policies this client runs with
    /// (see [`Options::timings`]).
    pub fn timings(&self) -> &crate::Timings {
        &self.shared().options.timings
    }

    /// Whether the connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.shared().current().is_some_and(|s| s.alive())
    }

    /// How the client is, right now: connected, blocked by a broker alarm,
    /// recovering, or closed for good. Reads local state only (no network
    /// round trip), so a readiness probe can call it on every request.
    ///
    /// ```no_run
    /// # fn probe(client: &rabbitkit_core::Client) -> u16 {
    /// use rabbitkit_core::Health;
    /// match client.health() {
    ///     Health::Connected { .. } => 200,
    ///     Health::Blocked { reason, .. } => { eprintln!("blocked: {reason}"); 503 }
    ///     Health::Recovering | Health::Closed { .. } => 503,
    ///     _ => 503,
    /// }
    /// # }
    /// ```
    pub fn health(&self) -> Health {
        let shared = self.shared();
        let link = shared.link.borrow().clone();
        match link {
            Link::Closed(reason) => Health::Closed { reason },
            Link::Connecting => Health::Recovering,
            Link::Up(s) if !s.alive() => Health::Recovering,
            Link::Up(s) => match shared.blocked.lock().unwrap().clone() {
                Some(reason) => Health::Blocked {
                    endpoint: s.endpoint.clone(),
                    reason,
                },
                None => Health::Connected {
                    endpoint: s.endpoint.clone(),
                },
            },
        }
    }

    /// The endpoint in use right now, if connected.
    pub fn current_endpoint(&self) -> Option<Endpoint> {
        self.shared().current().map(|s| s.endpoint.clone())
    }

    /// Counters of confirms, re-publishes and recoveries.
    pub fn stats(&self) -> Stats {
        let c = &self.shared().counters;
        Stats {
            confirmed: c.confirmed.load(Ordering::Relaxed),
            republished: c.republished.load(Ordering::Relaxed),
            disconnects: c.disconnects.load(Ordering::Relaxed),
            recoveries: c.recoveries.load(Ordering::Relaxed),
        }
    }

    /// A publisher bound to one pooled channel, so its messages keep their
    /// order. Publishers made one after another use the pool's channels in turn.
    pub fn publisher(&self) -> Publisher {
        let slot = self.shared().next_slot.fetch_add(1, Ordering::Relaxed);
        Publisher::new(self.clone(), slot % self.shared().options.channels)
    }

    /// Publishes one message with confirms on the pool's first channel.
    /// See [`Publisher::publish`].
    pub fn publish(
        &self,
        message: OutgoingMessage,
    ) -> impl Future<Output = Result<Confirmed, crate::PublishError>> + Send + 'static + use<> {
        Publisher::new(self.clone(), 0).publish(message)
    }

    /// Publishes one message without a confirm, on the connection's
    /// unconfirmed channel. See [`Publisher::publish_unconfirmed`]: for
    /// traffic that may be lost.
    pub fn publish_unconfirmed(
        &self,
        message: OutgoingMessage,
    ) -> impl Future<Output = Result<(), crate::PublishError>> + Send + 'static + use<> {
        Publisher::new(self.clone(), 0).publish_unconfirmed(message)
    }

    /// Declares an exchange, queue or binding, and records it so it is
    /// declared again after every reconnect.
    ///
    /// Declaring what exists with the same properties succeeds and changes
    /// nothing; with other properties it fails with
    /// [`DeclareError::Inequivalent`], and the connection and every other
    /// channel keep working (declarations run on a channel of their own).
    ///
    /// A name, routing key or exchange type over 255 bytes is
    /// [`DeclareError::InvalidName`] / [`DeclareError::Invalid`], and
    /// nothing is sent or recorded.
    pub async fn declare(&self, declaration: Declaration) -> Result<(), DeclareError> {
        validate::declaration(&declaration)?;
        let shared = self.shared();
        let timeout = shared.options.operation_timeout;
        let deadline = deadline_after(timeout);
        let mut newer_than = 0;
        loop {
            let session = match shared.wait_up_for(newer_than, left(deadline)).await {
                Ok(Ok(s)) => s,
                Ok(Err(reason)) => return Err(DeclareError::Closed { reason }),
                Err(_) => return Err(DeclareError::Timeout(timeout)),
            };
            match tokio::time::timeout_at(deadline, session.declare(&declaration)).await {
                Ok(Ok(())) => {
                    shared.topology.lock().unwrap().record(declaration);
                    return Ok(());
                }
                Ok(Err(e)) if !session.alive() && !closed_by_this_command(&e) => {
                    newer_than = session.generation;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    session.admin.discard(timeout);
                    return Err(DeclareError::Timeout(timeout));
                }
            }
        }
    }

    /// Runs `op` on the admin channel of a live session, retrying once
    /// after a reconnect; bounded by the operation timeout as a whole.
    async fn admin<T, F, Fut>(&self, op: F) -> Result<T, DeclareError>
    where
        F: Fn(lapin::Channel) -> Fut,
        Fut: Future<Output = Result<T, lapin::Error>>,
    {
        let shared = self.shared();
        let timeout = shared.options.operation_timeout;
        let deadline = deadline_after(timeout);
        let mut newer_than = 0;
        loop {
            let session = match shared.wait_up_for(newer_than, left(deadline)).await {
                Ok(Ok(s)) => s,
                Ok(Err(reason)) => return Err(DeclareError::Closed { reason }),
                Err(_) => return Err(DeclareError::Timeout(timeout)),
            };
            let res = tokio::time::timeout_at(deadline, async {
                let _serial = session.admin_lock.lock().await;
                match session.admin.get(&session.connection).await {
                    Ok(ch) => op(ch).await,
                    Err(e) => Err(e),
                }
            })
            .await;
            match res {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => {
                    let e = declare_error(&e);
                    if session.alive() || closed_by_this_command(&e) {
                        return Err(e);
                    }
                    newer_than = session.generation;
                }
                Err(_) => {
                    session.admin.discard(timeout);
                    return Err(DeclareError::Timeout(timeout));
                }
            }
        }
    }

    /// Number of ready messages and consumers of a queue (a passive declare).
    /// A missing queue is [`DeclareError::NotFound`]; a name over 255 bytes
    /// is [`DeclareError::InvalidName`].
    pub async fn queue_info(&self, queue: &str) -> Result<QueueInfo, DeclareError> {
        validate::name(queue)?;
        let name = queue.to_owned();
        self.admin(move |ch| {
            let name = name.clone();
            async move {
                let q = ch
                    .queue_declare(
                        name.as_str().into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                Ok(QueueInfo {
                    messages: q.message_count(),
                    consumers: q.consumer_count(),
                })
            }
        })
        .await
    }

    /// The exchange-to-exchange bindings from `source` to `destination` this
    /// client declared (and re-declares after a failover).
    pub fn exchange_bindings(&self, source: &str, destination: &str) -> Vec<ExchangeBindingSpec> {
        self.shared()
            .topology
            .lock()
            .unwrap()
            .exchange_bindings(source, destination)
    }

    /// Stops re-declaring a queue (and its bindings) after reconnects,
    /// without deleting it. For queues the broker deletes by itself.
    pub fn forget_queue(&self, queue: &str) {
        self.shared().topology.lock().unwrap().forget_queue(queue);
    }

    /// Deletes a queue (and forgets its declaration and bindings). Returns
    /// the number of messages it held. Deleting a missing queue succeeds.
    /// A name over 255 bytes is [`DeclareError::InvalidName`].
    pub async fn delete_queue(&self, queue: &str) -> Result<u32, DeclareError> {
        validate::name(queue)?;
        self.shared().topology.lock().unwrap().forget_queue(queue);
        let name = queue.to_owned();
        self.admin(move |ch| {
            let name = name.clone();
            async move {
                ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                    .await
            }
        })
        .await
    }

    /// Deletes an exchange (and forgets its declaration and bindings).
    /// A name over 255 bytes is [`DeclareError::InvalidName`].
    pub async fn delete_exchange(&self, exchange: &str) -> Result<(), DeclareError> {
        validate::name(exchange)?;
        self.shared()
            .topology
            .lock()
            .unwrap()
            .forget_exchange(exchange);
        let name = exchange.to_owned();
        self.admin(move |ch| {
            let name = name.clone();
            async move {
                ch.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                    .await
            }
        })
        .await
    }

    /// Removes a binding (and forgets it). Names or a routing key over 255
    /// bytes are refused as by [`declare`](Self::declare).
    pub async fn unbind(&self, binding: BindingSpec) -> Result<(), DeclareError> {
        validate::binding(&binding)?;
        self.shared()
            .topology
            .lock()
            .unwrap()
            .forget_binding(&binding);
        self.admin(move |ch| {
            let b = binding.clone();
            async move {
                ch.queue_unbind(
                    b.queue.as_str().into(),
                    b.exchange.as_str().into(),
                    b.routing_key.as_str().into(),
                    b.arguments.clone(),
                )
                .await
            }
        })
        .await
    }

    /// Removes an exchange-to-exchange binding (and forgets it). Names or a
    /// routing key over 255 bytes are refused as by [`declare`](Self::declare).
    pub async fn unbind_exchange(&self, binding: ExchangeBindingSpec) -> Result<(), DeclareError> {
        validate::exchange_binding(&binding)?;
        self.shared()
            .topology
            .lock()
            .unwrap()
            .forget_exchange_binding(&binding);
        self.admin(move |ch| {
            let b = binding.clone();
            async move {
                ch.exchange_unbind(
                    b.destination.as_str().into(),
                    b.source.as_str().into(),
                    b.routing_key.as_str().into(),
                    ExchangeUnbindOptions::default(),
                    b.arguments.clone(),
                )
                .await
            }
        })
        .await
    }

    /// Starts consuming from `queue`. The returned [`Consumer`] is a stream
    /// that survives failover: after a reconnect it is subscribed again
    /// (and checked) before the client reports [`Event::Recovered`].
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
        crate::consumer::start(self.clone(), queue, options).await
    }

    /// Opens a channel of your own on the current connection, for what the
    /// client does not wrap (e.g. direct reply-to, which must consume and
    /// publish on one channel). Such a channel is *not* recovered: when the
    /// connection is lost it closes, and you open another.
    /// Returns the channel and the connection's generation number, which
    /// grows by one on every reconnect.
    pub async fn open_channel(&self) -> Result<(lapin::Channel, u64), crate::ChannelError> {
        let shared = self.shared();
        let timeout = shared.options.operation_timeout;
        let deadline = deadline_after(timeout);
        let session = match shared.wait_up_for(0, timeout).await {
            Ok(Ok(s)) => s,
            Ok(Err(reason)) => return Err(crate::ChannelError::Closed { reason }),
            Err(_) => return Err(crate::ChannelError::Timeout(timeout)),
        };
        // Dropped on timeout, a channel whose opening went through later is
        // closed by lapin (its last handle is gone).
        let opened = tokio::time::timeout_at(
            deadline,
            crate::channels::open_channel(&session.connection, false, 0),
        )
        .await
        .map_err(|_| crate::ChannelError::Timeout(timeout))?;
        let ch = opened.map_err(|e| crate::ChannelError::Broker {
            text: crate::reply::describe(&e),
            cause: crate::reply::cause(&e),
        })?;
        Ok((ch, session.generation))
    }

    /// Closes the connection, after waiting for the publishes in flight to
    /// be confirmed and sending the acks consumers recorded. Publishes
    /// still unconfirmed then fail with `Closed`; consumers' streams end.
    ///
    /// Bounded: each step (the confirms, the acks, closing the connection)
    /// waits at most [`Options::close_timeout`]; a broker that does not
    /// answer is left.
    pub async fn close(&self) {
        let shared = self.shared();
        let bound = shared.options.close_timeout;
        let poll = shared.options.timings.close_poll;
        // Publishes in flight hold a permit of the window until their
        // confirm (or failure): wait until every permit is back.
        let window = shared.options.publish_window;
        let _ = tokio::time::timeout(bound, async {
            while shared.window.available_permits() < window {
                tokio::time::sleep(poll).await;
            }
        })
        .await;
        // Acks recorded but not yet sent go out before the connection does,
        // and those of consumers dropped a moment ago.
        let records: Vec<_> = shared.consumers.lock().unwrap().values().cloned().collect();
        let _ = tokio::time::timeout(bound, async {
            for record in records {
                record.flush_acks().await;
            }
            while shared.draining.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(poll).await;
            }
        })
        .await;
        shared.closing.store(true, Ordering::SeqCst);
        shared.shutdown.notify_one();
        let mut rx = shared.link.subscribe();
        // The supervisor gives the broker `bound` to answer its close.
        let slack = shared.options.timings.close_slack;
        let _ = tokio::time::timeout(bound.saturating_add(slack), async {
            loop {
                if matches!(&*rx.borrow_and_update(), Link::Closed(_)) {
                    break;
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
    }
}

/// What [`Client::health`] reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Health {
    /// Connected, recovered, and free to publish.
    Connected {
        /// The node in use (no credentials).
        endpoint: Endpoint,
    },
    /// Connected, but the broker blocks publishing on this connection
    /// (a memory or disk alarm): publishes wait until it lifts the block.
    /// Consuming goes on.
    Blocked {
        /// The node in use.
        endpoint: Endpoint,
        /// The broker's reason (e.g. `low on memory`).
        reason: String,
    },
    /// The connection was lost and is being replaced (or the first one is
    /// being made).
    Recovering,
    /// Stopped for good: closed by the application, a fatal error, or the
    /// reconnect attempts ran out.
    Closed {
        /// Why.
        reason: String,
    },
}

impl Health {
    /// Whether the client can publish and consume right now (connected and
    /// not blocked): what a readiness probe asks.
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Connected { .. })
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connected { endpoint } => write!(f, "connected to {endpoint}"),
            Self::Blocked { endpoint, reason } => {
                write!(
                    f,
                    "connected to {endpoint}, blocked by the broker: {reason}"
                )
            }
            Self::Recovering => write!(f, "recovering"),
            Self::Closed { reason } => write!(f, "closed: {reason}"),
        }
    }
}

/// What a passive declare tells about a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueInfo {
    /// Messages ready for delivery (not counting unacknowledged ones).
    pub messages: u32,
    /// Active consumers.
    pub consumers: u32,
}

/// `timeout` from now; a timeout too large for the clock (e.g.
/// `Duration::MAX`) means no bound, not a panic.
pub(crate) fn deadline_after(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// What is left of the time until `deadline`.
fn left(deadline: tokio::time::Instant) -> Duration {
    deadline.saturating_duration_since(tokio::time::Instant::now())
}

/// Whether the broker closed the connection *because of* the command that
/// failed with `err` (a connection-level refusal such as `541` for a
/// denied deprecated feature), rather than the connection being lost or
/// shut down around it (no reply code, or `320 CONNECTION_FORCED` from a
/// node that stops). Retrying such a command after a reconnect would only
/// close the next connection too.
fn closed_by_this_command(err: &DeclareError) -> bool {
    match err {
        DeclareError::Deprecated { .. } => true,
        DeclareError::Broker { code, .. } => *code != 0 && *code != 320,
        _ => false,
    }
}
