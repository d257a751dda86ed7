//! The [`Client`]: the cheap-to-clone handle an application holds.
//!
//! A client owns one AMQP connection at a time (to one node of the cluster),
//! a pool of publishing channels on it, a dedicated channel for declarations,
//! and one channel per consumer. A supervisor task (see `supervisor.rs`)
//! replaces all of them when the connection is lost.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use lapin::options::{
    ExchangeDeleteOptions, ExchangeUnbindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use tokio::sync::{mpsc, oneshot, watch};

use crate::endpoint::{Endpoint, ToEndpoints};
use crate::error::{ConnectError, DeclareError, EndpointError};
use crate::events::{self, Event};
use crate::options::{Options, endpoints_from_env};
use crate::reply::declare_error;
use crate::server::{ServerInfo, Version};
use crate::session::{Link, Shared};
use crate::supervisor::{Command, Forget};
use crate::topology::{BindingSpec, Declaration, ExchangeBindingSpec, Topology};
use crate::validate;

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

/// What every clone of one [`Client`] shares. Dropping it (the last
/// client, publisher and consumer gone) drops the command sender: the
/// supervisor sees its command channel end and closes the connection.
pub(crate) struct Owner {
    pub(crate) shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    /// The supervisor task, awaited by [`Client::close`].
    supervisor: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A connection to a RabbitMQ cluster that survives the loss of a node.
///
/// Cheap to clone; all clones share one AMQP connection. Dropping the last
/// clone (and every [`Publisher`](crate::Publisher) and [`Consumer`](crate::Consumer) made from it) closes it.
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
        let (topology, topology_view) = watch::channel(Topology::default());
        let shared = Arc::new(Shared::new(options, endpoints, topology_view));
        let (commands, inbox) = mpsc::unbounded_channel();
        let (first_tx, first_rx) = oneshot::channel();
        let supervisor = tokio::spawn(crate::supervisor::supervise(
            shared.clone(),
            inbox,
            topology,
            first_tx,
        ));
        let client = Client {
            owner: Arc::new(Owner {
                shared,
                commands,
                supervisor: Mutex::new(Some(supervisor)),
            }),
        };
        match first_rx.await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnectError::Closed {
                reason: "supervisor stopped".into(),
            }),
        }
    }

    /// Sends `command` to the supervisor; `false` once it has stopped.
    pub(crate) fn command(&self, command: Command) -> bool {
        self.owner.commands.send(command).is_ok()
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

    /// Sends `event` to every [`events`](Self::events) stream of this
    /// client and its metrics, and logs it: for the layers built on the
    /// client that have something to report, such as rabbitkit's handler
    /// loops ([`Event::HandlerRunningLong`]).
    pub fn emit(&self, event: Event) {
        self.shared().emit(event);
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
            Link::Up(s) => match s.blocked() {
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

    /// The broker this client talks to, as it announced itself in
    /// `connection.start`: product, version, capabilities, and what follows
    /// for rabbitkit ([`ServerInfo::cancels_timed_out_consumers`], ...).
    /// The last connection's broker while recovering; `None` before the
    /// first connection came up, or when the broker did not answer the
    /// probe (see [`ServerInfo`]).
    ///
    /// ```no_run
    /// # fn show(client: &rabbitkit_core::Client) {
    /// if let Some(server) = client.server() {
    ///     println!("{server}: delayed retry in the queue: {}", server.has_delayed_retry());
    /// }
    /// # }
    /// ```
    pub fn server(&self) -> Option<ServerInfo> {
        let shared = self.shared();
        let server = shared.server.lock().unwrap().clone();
        server.map(|s| ServerInfo::clone(&s))
    }

    /// The broker's version ([`server`](Self::server)'s), e.g. `4.3.6`.
    pub fn server_version(&self) -> Option<Version> {
        self.server().and_then(|s| s.version)
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
                    // Recorded by the supervisor, which replays it after
                    // every reconnect (and declares it again at once if the
                    // connection it ran on was replaced meanwhile). Waited
                    // for within the deadline, so what the client reports
                    // (`exchange_bindings`) includes it.
                    let (done, recorded) = oneshot::channel();
                    let generation = session.generation;
                    if self.command(Command::Declared {
                        declaration,
                        generation,
                        done,
                    }) {
                        let _ = tokio::time::timeout_at(deadline, recorded).await;
                    }
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
            .borrow()
            .exchange_bindings(source, destination)
    }

    /// Tells the supervisor to stop replaying what `forget` names; waits
    /// (within the operation timeout) until it has.
    async fn forget(&self, forget: Forget) {
        let (done, forgotten) = oneshot::channel();
        if self.command(Command::Forget {
            forget,
            done: Some(done),
        }) {
            let _ = tokio::time::timeout(self.shared().options.operation_timeout, forgotten).await;
        }
    }

    /// Stops re-declaring a queue (and its bindings) after reconnects,
    /// without deleting it. For queues the broker deletes by itself.
    pub fn forget_queue(&self, queue: &str) {
        let _ = self.command(Command::Forget {
            forget: Forget::Queue(queue.to_owned()),
            done: None,
        });
    }

    /// Deletes a queue (and forgets its declaration and bindings). Returns
    /// the number of messages it held. Deleting a missing queue succeeds.
    /// A name over 255 bytes is [`DeclareError::InvalidName`].
    ///
    /// The queue's delay inbox goes with it
    /// ([`delay_inbox_name`](crate::delay::delay_inbox_name), made by the
    /// first delayed publish to the queue), with any delayed messages still
    /// waiting there for a queue that had no room. Failing to delete the
    /// inbox (the connection lost just then) is logged as a warning and
    /// does not fail the call: the queue is deleted.
    pub async fn delete_queue(&self, queue: &str) -> Result<u32, DeclareError> {
        validate::name(queue)?;
        self.forget(Forget::Queue(queue.to_owned())).await;
        let name = queue.to_owned();
        let held = self
            .admin(move |ch| {
                let name = name.clone();
                async move {
                    ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                        .await
                }
            })
            .await?;
        self.delete_delay_inbox("", queue).await;
        Ok(held)
    }

    /// Deletes the delay inbox of a target that was deleted (queue and
    /// fanout exchange; missing ones are fine). The target is gone
    /// already: a failure here is logged, not the caller's error.
    async fn delete_delay_inbox(&self, exchange: &str, queue: &str) {
        let inbox = crate::delay::delay_inbox_name(exchange, queue);
        self.forget(Forget::Queue(inbox.clone())).await;
        self.forget(Forget::Exchange(inbox.clone())).await;
        self.admin(move |ch| {
            let name = inbox.clone();
            async move {
                ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                    .await?;
                ch.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                    .await
            }
        })
        .await
        .or_else(|e| match e {
            // Brokers that answer a missing exchange's delete with 404.
            DeclareError::NotFound { .. } => Ok(()),
            e => Err(e),
        })
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "deleting a deleted target's delay inbox failed; it stays");
        });
    }

    /// Deletes an exchange (and forgets its declaration and bindings), and
    /// its delay inbox as [`delete_queue`](Self::delete_queue) does.
    /// A name over 255 bytes is [`DeclareError::InvalidName`].
    pub async fn delete_exchange(&self, exchange: &str) -> Result<(), DeclareError> {
        validate::name(exchange)?;
        self.forget(Forget::Exchange(exchange.to_owned())).await;
        let name = exchange.to_owned();
        self.admin(move |ch| {
            let name = name.clone();
            async move {
                ch.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                    .await
            }
        })
        .await?;
        if !exchange.is_empty() {
            self.delete_delay_inbox(exchange, "").await;
        }
        Ok(())
    }

    /// Removes a binding (and forgets it). Names or a routing key over 255
    /// bytes are refused as by [`declare`](Self::declare).
    pub async fn unbind(&self, binding: BindingSpec) -> Result<(), DeclareError> {
        validate::binding(&binding)?;
        self.forget(Forget::Binding(binding.clone())).await;
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
        self.forget(Forget::ExchangeBinding(binding.clone())).await;
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
        // Publishes in flight hold a permit of the window until their
        // confirm (or failure): wait until every permit is back.
        let _ = tokio::time::timeout(
            bound,
            all_permits(&shared.window, shared.options.publish_window),
        )
        .await;
        // The supervisor sends the acks consumers recorded, closes the
        // connection, and waits for its tasks (the consumers' pumps) to end.
        let (done, closed) = oneshot::channel();
        if self.command(Command::Close { done }) {
            // It gives the broker `bound` for the acks, `bound` to answer
            // its close, and `close_slack` for its tasks to end.
            let slack = shared.options.timings.close_slack;
            let _ = tokio::time::timeout(
                bound
                    .saturating_mul(2)
                    .saturating_add(slack.saturating_mul(2)),
                closed,
            )
            .await;
        }
        let supervisor = self.owner.supervisor.lock().unwrap().take();
        if let Some(supervisor) = supervisor {
            let _ = tokio::time::timeout(shared.options.timings.close_slack, supervisor).await;
        }
    }
}

/// Waits until all `window` permits of `semaphore` are free (the publishes
/// in flight ended); they are given back at once.
async fn all_permits(semaphore: &tokio::sync::Semaphore, window: usize) {
    let mut left = window.min(tokio::sync::Semaphore::MAX_PERMITS);
    let mut held = Vec::new();
    while left > 0 {
        let n = u32::try_from(left).unwrap_or(u32::MAX);
        match semaphore.acquire_many(n).await {
            Ok(permits) => held.push(permits),
            Err(_) => return, // closed: the client is closed
        }
        left -= n as usize;
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

/// Connecting.
impl Options {
    /// Connects to the first reachable endpoint and starts the supervisor
    /// that keeps the connection alive.
    ///
    /// `endpoints` is one URL, a comma-separated list, or a slice/`Vec` of them.
    pub async fn connect(self, endpoints: impl ToEndpoints) -> Result<Client, ConnectError> {
        let endpoints = endpoints.to_endpoints()?;
        Client::start(self, endpoints).await
    }

    /// Connects to the endpoints listed in the `AMQP_ADDR` environment
    /// variable (one URL or a comma-separated list).
    ///
    /// # Errors
    ///
    /// [`ConnectError::Endpoint`] with [`EndpointError::Unset`] when
    /// `AMQP_ADDR` is not set (or blank): nothing is connected to by
    /// default. [`connect_env_or`](Self::connect_env_or) names a fallback.
    pub async fn connect_env(self) -> Result<Client, ConnectError> {
        let endpoints = endpoints_from_env()?;
        Client::start(self, endpoints).await
    }

    /// Connects to the endpoints listed in `AMQP_ADDR`, or, when it is not
    /// set (or blank), to `default` (one URL, a comma-separated list, or a
    /// slice/`Vec` of them), saying so in an `info` log line (passwords
    /// hidden). The examples use it to reach a broker on this machine:
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), rabbitkit_core::ConnectError> {
    /// // AMQP_ADDR, or RabbitMQ's default port on this machine (user guest).
    /// let client = rabbitkit_core::Options::new()
    ///     .connect_env_or("amqp://127.0.0.1:5672/%2f")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_env_or(self, default: impl ToEndpoints) -> Result<Client, ConnectError> {
        let endpoints = match endpoints_from_env() {
            Err(EndpointError::Unset { variable }) => {
                let endpoints = default.to_endpoints()?;
                let list: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
                tracing::info!(
                    target: "rabbitkit",
                    endpoints = %list.join(","),
                    "{variable} is not set: connecting to the default endpoints"
                );
                endpoints
            }
            other => other?,
        };
        Client::start(self, endpoints).await
    }
}
