//! The supervisor: the one task that owns the connection and what must
//! survive it.
//!
//! It owns the connection (connecting, failing over, recovering), the
//! channel pool (in the [`Session`] it publishes through the `Link`
//! watch), the topology record, the consumer registry, and the tasks of the
//! connection (the consumers' pumps and the subscriptions in progress, in
//! one `JoinSet`). Client handles send it [`Command`]s; it reports state
//! through the `Link` watch and [`Event`]s. Publishes, acks and
//! declarations do not go through it: they read the current session and go
//! straight to lapin.
//!
//! One run: [`connect`](Supervisor::connect) (endpoint after endpoint,
//! with backoff), [`recover`](Supervisor::recover) (channel pool, topology
//! replayed in order, every consumer subscribed again and checked with the
//! broker), [`report_up`](Supervisor::report_up), then
//! [`serve`](Supervisor::serve) (commands, lapin's events, the liveness
//! check, pumps that end, re-subscriptions due) until the connection is
//! lost ([`report_lost`](Supervisor::report_lost), and again from the next
//! endpoint) or the client closes ([`close`](Supervisor::close)).
//! Whether and when a consumer is subscribed again is decided by
//! `resubscribe.rs`'s policy, here and nowhere else. Publishes interrupted
//! by a loss are re-sent by their own futures once the client is up again
//! (see `publisher.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use futures::{FutureExt as _, StreamExt};
use lapin::{Connection, ConnectionProperties};
use rand::seq::SliceRandom;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::channels::{ChannelPool, Slot};
use crate::endpoint::Endpoint;
use crate::error::{ConnectError, ConsumeError, DeclareError};
use crate::events::Event;
use crate::options::EndpointOrder;
use crate::reply::{connect_refusal, describe};
use crate::resubscribe::{Next, Policy, Why};
use crate::server::ServerInfo;
use crate::session::{Link, Session, Shared};
use crate::subscription::{ConsumerRecord, PumpEnd, Subscription, pump, subscribe};
use crate::topology::{BindingSpec, Declaration, ExchangeBindingSpec, Topology};

/// What the client's handles ask the supervisor.
pub(crate) enum Command {
    /// Register a consumer and subscribe it; `done` gets the outcome of its
    /// first subscription (kept while the connection is down).
    Consume {
        record: Arc<ConsumerRecord>,
        done: oneshot::Sender<Result<(), ConsumeError>>,
    },
    /// Never subscribe consumer `id` again; `done` gets its live channel
    /// and consumer tag, for the `basic.cancel`.
    CancelConsumer {
        id: u64,
        done: oneshot::Sender<Option<(lapin::Channel, String)>>,
    },
    /// A declaration succeeded on connection `generation`: record it, to
    /// replay it after every reconnect.
    Declared {
        declaration: Declaration,
        generation: u64,
        done: oneshot::Sender<()>,
    },
    /// Stop replaying what a deletion or an unbind removes.
    Forget {
        forget: Forget,
        done: Option<oneshot::Sender<()>>,
    },
    /// Send the consumers' acks, close the connection, end the tasks;
    /// `done` once they have.
    Close { done: oneshot::Sender<()> },
}

/// What [`Command::Forget`] removes from the topology record.
pub(crate) enum Forget {
    Queue(String),
    Exchange(String),
    Binding(BindingSpec),
    ExchangeBinding(ExchangeBindingSpec),
}

/// Why one connection attempt (connect + channel pool) failed.
enum AttemptError {
    /// Retrying cannot fix it (credentials, vhost, certificate): the client
    /// stops, at the first connect and during recovery alike.
    Fatal(ConnectError),
    /// This broker cannot serve this configuration (its `channel_max` is
    /// too low for the pool): the first `connect()` fails with it; a
    /// recovering client keeps trying, with backoff.
    Unfit(ConnectError),
    /// A temporary refusal (a connection limit is reached): the first
    /// `connect()` fails with it unless told to retry; a recovering client
    /// retries with backoff.
    Refused(ConnectError),
    /// Anything else: retried with backoff.
    Transient(String),
}

/// How long the version probe may take at most (`server.rs`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection made, and the broker its probe identified (`server.rs`).
type Connected = (Connection, Option<ServerInfo>);

async fn connect_one(shared: &Shared, endpoint: &Endpoint) -> Result<Connected, AttemptError> {
    let o = &shared.options;
    let heartbeat = u16::try_from(o.heartbeat.as_secs()).unwrap_or(u16::MAX);
    let timeout_ms = u64::try_from(o.connect_timeout.as_millis()).unwrap_or(u64::MAX);
    let uri = endpoint.to_uri(heartbeat, timeout_ms, o.auth_external);
    let mut props = ConnectionProperties::default();
    if let Some(name) = &o.connection_name {
        props = props.with_connection_name(name.as_str().into());
    }
    let identity = match &o.tls_identity {
        Some(id) if endpoint.is_tls() => {
            crate::tls::check_identity(id)
                .map_err(|kind| AttemptError::Fatal(crate::tls::unreadable(endpoint, kind)))?;
            Some(lapin::tcp::OwnedIdentity::PKCS8 {
                pem: id.cert_pem.clone(),
                key: id.key_pem.clone(),
            })
        }
        _ => None,
    };
    let tls = lapin::tcp::OwnedTLSConfig {
        identity,
        cert_chain: o.tls_ca_pem.clone(),
    };
    let runtime = match lapin::runtime::default_runtime() {
        Ok(rt) => rt,
        Err(e) => return Err(AttemptError::Transient(describe(&e))),
    };
    let connect = Connection::connect_uri_with_config(uri.clone(), props, tls.clone(), runtime);
    match tokio::time::timeout(o.connect_timeout, connect).await {
        Err(_) => Err(AttemptError::Transient(format!(
            "timed out after {:?}",
            o.connect_timeout
        ))),
        Ok(Ok(conn)) => {
            // Once the connection holds its place (a connection limit), the
            // probe reads the broker's version: a few milliseconds.
            let within = o.connect_timeout.min(PROBE_TIMEOUT);
            let server = crate::server::probe(&uri, &tls, within).await;
            Ok((conn, server))
        }
        Ok(Err(err)) => Err(
            match crate::reply::of(&err)
                .and_then(|(code, text)| connect_refusal(endpoint, code, text))
                .or_else(|| crate::tls::client_cert_refusal(endpoint, &err))
            {
                Some(err @ ConnectError::ConnectionLimit { .. }) => AttemptError::Refused(err),
                Some(err) => AttemptError::Fatal(err),
                _ if endpoint.is_tls() && crate::tls::is_certificate_error(&err) => {
                    AttemptError::Fatal(ConnectError::Tls {
                        endpoint: endpoint.to_string(),
                        message: describe(&err),
                    })
                }
                _ => AttemptError::Transient(describe(&err)),
            },
        ),
    }
}

/// Opens the channel pool on a new connection, bounded by `step`. On
/// failure the connection is closed (it would otherwise stay open, unused).
async fn open_pool(
    shared: &Shared,
    connection: &Connection,
    endpoint: &Endpoint,
    step: Duration,
) -> Result<ChannelPool, AttemptError> {
    let channels = shared.options.channels;
    let window = shared.options.publish_window;
    let opening = ChannelPool::open(connection, channels, window);
    let error = match tokio::time::timeout(step, opening).await {
        Ok(Ok(pool)) => return Ok(pool),
        Ok(Err(err)) if matches!(err.kind(), lapin::ErrorKind::ChannelsLimitReached) => {
            AttemptError::Unfit(ConnectError::ChannelLimit {
                endpoint: endpoint.to_string(),
                channel_max: connection.configuration().channel_max(),
                channels,
            })
        }
        Ok(Err(err)) => AttemptError::Transient(format!("opening channels: {}", describe(&err))),
        Err(_) => AttemptError::Transient(format!("opening channels: no answer within {step:?}")),
    };
    let _ = tokio::time::timeout(step, connection.close(200, "channel pool failed".into())).await;
    Err(error)
}

/// Reports a failed attempt (a log line, [`Event::ConnectFailed`]) and
/// decides whether to give up: `Some(error)` is the error to stop with.
/// `attempt` counts every attempt since the last connection that came up,
/// whether it failed before or after the TCP connect.
fn failed_attempt(
    shared: &Shared,
    first_connect: bool,
    endpoint: &Endpoint,
    attempt: u32,
    endpoints: usize,
    err: AttemptError,
) -> Option<ConnectError> {
    let (text, typed, stop_now) = match err {
        AttemptError::Fatal(e) => (e.to_string(), Some(e), true),
        AttemptError::Unfit(e) => (e.to_string(), Some(e), first_connect),
        AttemptError::Refused(e) => {
            let stop = first_connect && !shared.options.retry_initial_connect;
            (e.to_string(), Some(e), stop)
        }
        AttemptError::Transient(text) => (text, None, false),
    };
    tracing::warn!(target: "rabbitkit", %endpoint, error = %text, "connection attempt failed");
    shared.emit(Event::ConnectFailed {
        endpoint: endpoint.clone(),
        error: text.clone(),
    });
    if stop_now {
        return typed;
    }
    let initial_round_over =
        first_connect && !shared.options.retry_initial_connect && attempt as usize >= endpoints;
    let limit_hit = shared
        .options
        .backoff
        .max_attempts
        .is_some_and(|max| attempt >= max);
    (initial_round_over || limit_hit).then(|| {
        typed.unwrap_or(ConnectError::Unreachable {
            attempts: attempt,
            endpoint: endpoint.to_string(),
            last_error: text,
        })
    })
}

/// Stops the client for good with `err`, which the first `connect()` gets
/// if it is still waiting.
fn give_up(
    shared: &Shared,
    first: &mut Option<oneshot::Sender<Result<(), ConnectError>>>,
    err: ConnectError,
) {
    close_for_good(shared, err.to_string());
    if let Some(tx) = first.take() {
        let _ = tx.send(Err(err));
    }
}

/// Marks the client closed for good: the link says why, publishes waiting
/// for a place in the window fail, an [`Event::Closed`].
/// Only the first call counts: a client is closed once, with one event.
fn close_for_good(shared: &Shared, reason: String) {
    if matches!(&*shared.link.borrow(), Link::Closed(_)) {
        return;
    }
    shared.link.send_replace(Link::Closed(reason.clone()));
    shared.window.close();
    shared.emit(Event::Closed { reason });
}

/// The text of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "(no message)".to_owned(),
    }
}

/// Runs one recovery step, turning a panic in it into an error text, so a
/// step that panics is reported instead of killing the supervisor and
/// leaving the client `Connecting` for good: in connecting or opening the
/// channel pool it is a failed attempt (an [`Event::ConnectFailed`], then
/// the backoff); in replaying the topology or re-subscribing, a
/// recovery-failed event.
/// Validation at every entry (`validate.rs`) keeps user data from causing
/// one; this is the net under it.
async fn guarded<T>(step: impl Future<Output = T>) -> Result<T, String> {
    std::panic::AssertUnwindSafe(step)
        .catch_unwind()
        .await
        .map_err(|panic| format!("panicked: {}", panic_text(&*panic)))
}

/// Runs the supervisor; should it panic anyway, the client is closed with
/// the panic's text (an [`Event::Closed`], and pending and later operations
/// fail with `Closed`) instead of waiting for a connection forever.
pub(crate) async fn supervise(
    shared: Arc<Shared>,
    inbox: mpsc::UnboundedReceiver<Command>,
    topology: watch::Sender<Topology>,
    first: oneshot::Sender<Result<(), ConnectError>>,
) {
    let mut supervisor = Supervisor::new(shared.clone(), inbox, topology, first);
    if let Err(text) = guarded(supervisor.run()).await {
        let reason = format!("the supervisor stopped: {text}");
        tracing::error!(target: "rabbitkit", %reason);
        close_for_good(&shared, reason.clone());
        if let Some(tx) = supervisor.first.take() {
            let _ = tx.send(Err(ConnectError::Closed { reason }));
        }
    }
    // Dropping it aborts what is left of its tasks and ends every
    // consumer's stream.
}

/// What the supervisor's tasks return when they end.
enum TaskEnd {
    /// A consumer's pump ended.
    Pump(PumpEnd),
    /// A subscription attempt on connection `generation` ended; `retry`
    /// when it was a re-subscription (why, attempt).
    Subscribed {
        id: u64,
        generation: u64,
        retry: Option<(Why, u32)>,
        result: Box<Result<Subscription, ConsumeError>>,
    },
    /// A replayed declaration tried again (see [`Replay`]).
    Replayed {
        generation: u64,
        replay: Box<Replay>,
        result: Result<(), DeclareError>,
    },
    /// Anything else (a stream ended).
    Other,
}

/// A declaration whose replay failed in a way that may pass (a timeout, a
/// queue still locked by the lost connection or another, a binding whose
/// queue is not back yet), tried again while the connection lives.
#[derive(Clone)]
struct Replay {
    decl: Declaration,
    attempt: u32,
    at: tokio::time::Instant,
}

/// How many times a replayed declaration is tried again before it is
/// given up (with the recovery backoff's delays: about three minutes).
const REPLAY_ATTEMPTS: u32 = 20;

/// Whether a replayed declaration that failed with `err` may pass later.
fn replay_may_pass(err: &DeclareError) -> bool {
    err.is_retryable()
        || matches!(
            err,
            DeclareError::ResourceLocked { .. } | DeclareError::NotFound { .. }
        )
}

/// A re-subscription waiting for its time.
struct Retry {
    why: Why,
    attempt: u32,
    at: tokio::time::Instant,
}

/// Why the supervisor stops.
enum Stop {
    /// The client closed (or every handle is gone).
    Close,
    /// It gave up (fatal error, attempts exhausted); already reported.
    GaveUp,
}

/// How serving a connection ended.
enum Served {
    Lost(String),
    Close,
}

/// The supervisor's state: see the module docs.
struct Supervisor {
    shared: Arc<Shared>,
    inbox: mpsc::UnboundedReceiver<Command>,
    close_requested: bool,
    /// Close commands to answer once closed.
    closing: Vec<oneshot::Sender<()>>,
    /// The topology record (readers borrow it through `Shared::topology`).
    topology: watch::Sender<Topology>,
    /// The consumer registry.
    consumers: HashMap<u64, Arc<ConsumerRecord>>,
    /// Consumes waiting for their first subscription.
    first_subscribe: HashMap<u64, oneshot::Sender<Result<(), ConsumeError>>>,
    /// Re-subscriptions waiting for their time.
    retries: HashMap<u64, Retry>,
    /// Replayed declarations to try again (see [`Replay`]), and those being
    /// tried right now.
    replays: Vec<Replay>,
    replaying: Vec<Declaration>,
    policy: Policy,
    /// Pumps, subscriptions in progress, and the small jobs around them.
    tasks: JoinSet<TaskEnd>,
    /// Endpoint order, and the next to try.
    order: Vec<usize>,
    next: usize,
    generation: u64,
    /// Attempts since the last connection that came up: a failure after
    /// the TCP connect (channel pool, a connection lost during replay)
    /// counts too, so it backs off like any other.
    attempt: u32,
    /// Connections closed in a row because nothing was confirmed in time
    /// ([`Event::Unresponsive`]): the reconnect after one backs off by this
    /// many attempts, so a cause that follows the client to every node (a
    /// quorum queue without a majority) does not churn connections.
    unresponsive: u32,
    lost_at: Option<Instant>,
    /// Consumers the last recovery subscribed again.
    resubscribed: usize,
    /// The first `connect()`, while it waits.
    first: Option<oneshot::Sender<Result<(), ConnectError>>>,
}

impl Supervisor {
    fn new(
        shared: Arc<Shared>,
        inbox: mpsc::UnboundedReceiver<Command>,
        topology: watch::Sender<Topology>,
        first: oneshot::Sender<Result<(), ConnectError>>,
    ) -> Self {
        let mut order: Vec<usize> = (0..shared.endpoints.len()).collect();
        if shared.options.order == EndpointOrder::Shuffled {
            order.shuffle(&mut rand::rng());
        }
        Self {
            policy: Policy::new(&shared.options.timings),
            shared,
            inbox,
            close_requested: false,
            closing: Vec::new(),
            topology,
            consumers: HashMap::new(),
            first_subscribe: HashMap::new(),
            retries: HashMap::new(),
            replays: Vec::new(),
            replaying: Vec::new(),
            tasks: JoinSet::new(),
            order,
            next: 0,
            generation: 0,
            attempt: 0,
            unresponsive: 0,
            lost_at: None,
            resubscribed: 0,
            first: Some(first),
        }
    }

    /// Runs until the client is closed or stops on a fatal error.
    async fn run(&mut self) {
        let stop = loop {
            let ((connection, server), endpoint) = match self.connect().await {
                Ok(connected) => connected,
                Err(stop) => break stop,
            };
            let mut lapin_events = connection.events_listener().boxed();
            let server = server.map(Arc::new);
            let session = match self.recover(connection, &endpoint, server).await {
                Ok(session) => session,
                Err(None) => continue,
                Err(Some(stop)) => break stop,
            };
            self.report_up(&session);
            match self.serve(&session, &mut lapin_events).await {
                Served::Lost(reason) => self.report_lost(endpoint, reason),
                Served::Close => {
                    self.close(Some(&session)).await;
                    break Stop::Close;
                }
            }
        };
        if let Stop::Close = stop {
            self.close(None).await;
        }
        self.finish().await;
    }

    /// The step bound of recovery: a node that accepts connections while
    /// still booting must not stall it.
    fn step(&self) -> Duration {
        self.shared.options.connect_timeout.saturating_mul(2)
    }

    /// Reports a failed attempt; `Err` when the supervisor gives up.
    fn failed(&mut self, endpoint: &Endpoint, err: AttemptError) -> Result<(), Stop> {
        let first_connect = self.first.is_some();
        match failed_attempt(
            &self.shared,
            first_connect,
            endpoint,
            self.attempt,
            self.order.len(),
            err,
        ) {
            Some(err) => {
                give_up(&self.shared, &mut self.first, err);
                Err(Stop::GaveUp)
            }
            None => Ok(()),
        }
    }

    /// Step 1: connects, endpoint after endpoint, with backoff. Commands
    /// that come meanwhile are taken (a close ends the wait).
    async fn connect(&mut self) -> Result<(Connected, Endpoint), Stop> {
        loop {
            if self.close_requested {
                return Err(Stop::Close);
            }
            let endpoint = self.shared.endpoints[self.order[self.next]].clone();
            self.next = (self.next + 1) % self.order.len();
            let delay = self.shared.options.backoff.delay_for(self.attempt);
            self.attempt += 1;
            if self.lost_at.is_some() || self.attempt > 1 {
                self.shared.emit(Event::Reconnecting {
                    attempt: self.attempt,
                    delay,
                    endpoint: endpoint.clone(),
                });
            }
            if !delay.is_zero() {
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                while !self.close_requested {
                    tokio::select! {
                        () = &mut sleep => break,
                        command = self.inbox.recv() => self.command(command, None),
                    }
                }
                if self.close_requested {
                    return Err(Stop::Close);
                }
            }
            let attempt = guarded(connect_one(&self.shared, &endpoint))
                .await
                .unwrap_or_else(|panicked| Err(AttemptError::Transient(panicked)));
            match attempt {
                Ok(connected) => return Ok((connected, endpoint)),
                Err(err) => self.failed(&endpoint, err)?,
            }
        }
    }

    /// Step 2: the channel pool, the topology, the consumers. `Err(None)`:
    /// this attempt failed, try the next endpoint; `Err(Some(_))`: stop.
    async fn recover(
        &mut self,
        connection: Connection,
        endpoint: &Endpoint,
        server: Option<Arc<ServerInfo>>,
    ) -> Result<Arc<Session>, Option<Stop>> {
        self.generation += 1;
        let step = self.step();
        let pool = guarded(open_pool(&self.shared, &connection, endpoint, step))
            .await
            .unwrap_or_else(|panicked| Err(AttemptError::Transient(panicked)));
        let pool = match pool {
            Ok(pool) => pool,
            Err(err) => return Err(self.failed(endpoint, err).err()),
        };
        let session = Arc::new(Session {
            generation: self.generation,
            endpoint: endpoint.clone(),
            connection,
            pool,
            admin: Slot::new(false, 0),
            admin_lock: tokio::sync::Mutex::new(()),
            confirms: Default::default(),
            blocked: Default::default(),
            server,
        });
        self.replay_topology(&session).await?;
        let resubscribed = self.resubscribe_all(&session).await?;
        self.check_consumers(&session).await;
        self.resubscribed = resubscribed;
        Ok(session)
    }

    /// The broker of a connection that came up, identified: kept for
    /// [`Client::server`](crate::Client::server); logged (target
    /// `rabbitkit`, INFO) when it is the first or differs from the one
    /// before (a rolling upgrade), with the version-dependent paths it
    /// chooses.
    fn identified(&self, endpoint: &Endpoint, server: &Arc<ServerInfo>) {
        let before = self.shared.server.lock().unwrap().replace(server.clone());
        if before.as_deref() == Some(&**server) {
            return;
        }
        tracing::info!(
            target: "rabbitkit",
            %endpoint,
            server = %server,
            consumer_timeout = if server.cancels_timed_out_consumers() { "cancels the consumer (4.3+)" } else { "closes the channel" },
            delivery_limit = if server.requeues_count_toward_delivery_limit() { "every requeue counts (4.0-4.2)" } else if server.has_default_delivery_limit() { "failures count (4.3+)" } else { "none by default" },
            delayed_retry = if server.has_delayed_retry() { "in the queue available" } else { "delay levels only" },
            partitions = if server.has_modulus_hash_exchange() { "x-modulus-hash" } else { "x-consistent-hash (plugin)" },
            "broker identified"
        );
    }

    /// A connection lost during recovery: a failed attempt.
    fn lost_during(&mut self, endpoint: &Endpoint, what: &str) -> Option<Stop> {
        let lost = AttemptError::Transient(format!("connection lost while {what}"));
        let stop = self.failed(endpoint, lost).err();
        self.lost_at.get_or_insert_with(Instant::now);
        stop
    }

    /// Step 2b: declares every recorded exchange, queue and binding again,
    /// in that order.
    async fn replay_topology(&mut self, session: &Arc<Session>) -> Result<(), Option<Stop>> {
        let step = self.step();
        // This replay takes over every declaration still to be tried again.
        self.replays.clear();
        self.replaying.clear();
        let mut replay = self.topology.borrow().replay_order();
        let mut replaced = 0;
        let mut next = 0;
        while next < replay.len() {
            let decl = replay[next].clone();
            next += 1;
            let outcome = tokio::time::timeout(step, guarded(session.declare(&decl))).await;
            if !session.alive() {
                return Err(self.lost_during(&session.endpoint, "replaying the topology"));
            }
            // The lost connection's temporary queue is still there, locked
            // (RabbitMQ 4 keeps a killed node's exclusive queues while the
            // node is down): declare a fresh one, bound the same way, and
            // move its consumers there.
            if let Ok(Ok(Err(DeclareError::ResourceLocked { .. }))) = &outcome
                && let Some(old) = decl.replaceable_when_locked()
                && replaced < replay.len()
            {
                replaced += 1;
                let (old, new) = (old.to_owned(), crate::topology::temporary_queue_name());
                self.topology.send_modify(|t| t.rename_queue(&old, &new));
                for d in &mut replay {
                    d.rename_queue(&old, &new);
                }
                for record in self.consumers.values() {
                    if record.queue() == old {
                        record.set_queue(&new);
                    }
                }
                self.shared.emit(Event::TemporaryQueueReplaced { old, new });
                next -= 1; // declare it again, under its new name
                continue;
            }
            let error = match outcome {
                Ok(Ok(Ok(()))) => continue,
                Ok(Ok(Err(err))) if replay_may_pass(&err) => {
                    self.replay_later(decl.clone(), 1);
                    format!("{err} (tried again in the background)")
                }
                Ok(Ok(Err(err))) => err.to_string(),
                Ok(Err(panicked)) => panicked,
                Err(_) => {
                    self.replay_later(decl.clone(), 1);
                    format!("no answer within {step:?} (tried again in the background)")
                }
            };
            self.shared.emit(Event::TopologyRecoveryFailed {
                declaration: decl.to_string(),
                error,
            });
        }
        Ok(())
    }

    /// Schedules `decl` to be declared again (its attempt `attempt`).
    fn replay_later(&mut self, decl: Declaration, attempt: u32) {
        let delay = self
            .shared
            .options
            .timings
            .resubscribe_backoff
            .delay_for(attempt);
        let at = tokio::time::Instant::now() + delay;
        self.replays.push(Replay { decl, attempt, at });
    }

    /// Declares again the replays whose time has come (those still recorded).
    fn replays_due(&mut self, session: &Arc<Session>) {
        let now = tokio::time::Instant::now();
        let (due, later): (Vec<Replay>, Vec<Replay>) =
            self.replays.drain(..).partition(|r| r.at <= now);
        self.replays = later;
        for replay in due {
            let recorded =
                (self.topology.borrow().replay_order().iter()).any(|d| d.same_object(&replay.decl));
            if !recorded || !session.alive() {
                continue; // forgotten meanwhile, or the next recovery's
            }
            self.replaying.push(replay.decl.clone());
            let (session, step) = (session.clone(), self.step());
            self.tasks.spawn(async move {
                let result = tokio::time::timeout(step, session.declare(&replay.decl))
                    .await
                    .unwrap_or(Err(DeclareError::Timeout(step)));
                TaskEnd::Replayed {
                    generation: session.generation,
                    replay: Box::new(replay),
                    result,
                }
            });
        }
    }

    /// A replayed declaration tried again: done, or later, or given up.
    fn replayed(
        &mut self,
        generation: u64,
        replay: Replay,
        result: Result<(), DeclareError>,
        session: &Arc<Session>,
    ) {
        if generation != session.generation {
            return; // the recovery since replayed everything
        }
        if let Some(i) = self
            .replaying
            .iter()
            .position(|d| d.same_object(&replay.decl))
        {
            self.replaying.swap_remove(i);
        }
        match result {
            Ok(()) => {
                tracing::info!(target: "rabbitkit", declaration = %replay.decl, attempt = replay.attempt, "declaration replayed");
                self.shared.emit(Event::TopologyRecovered {
                    declaration: replay.decl.to_string(),
                });
            }
            Err(err) if replay_may_pass(&err) && replay.attempt < REPLAY_ATTEMPTS => {
                self.replay_later(replay.decl, replay.attempt + 1);
            }
            Err(err) => self.shared.emit(Event::TopologyRecoveryFailed {
                declaration: replay.decl.to_string(),
                error: format!("{err} (given up after {} attempts)", replay.attempt + 1),
            }),
        }
    }

    /// Whether queue `queue`'s declaration is still to be tried again.
    fn replay_pending(&self, queue: &str) -> bool {
        let declares = |d: &Declaration| matches!(d, Declaration::Queue(q) if q.name == queue);
        self.replays.iter().any(|r| declares(&r.decl)) || self.replaying.iter().any(declares)
    }

    /// Step 2c: subscribes every registered consumer on the new connection
    /// (those that fail are retried by the policy); the number subscribed.
    async fn resubscribe_all(&mut self, session: &Arc<Session>) -> Result<usize, Option<Stop>> {
        let step = self.step();
        // This recovery takes over every pending re-subscription.
        self.retries.clear();
        self.forget_dropped();
        let mut records: Vec<_> = self.consumers.values().cloned().collect();
        records.sort_by_key(|r| r.id);
        let mut resubscribed = 0;
        for record in records {
            if record.is_cancelled() {
                continue;
            }
            let outcome = tokio::time::timeout(
                step,
                guarded(subscribe(&self.shared.options, session, &record)),
            )
            .await;
            if !session.alive() {
                return Err(self.lost_during(&session.endpoint, "re-subscribing consumers"));
            }
            let err = match outcome {
                Ok(Ok(Ok(subscription))) => {
                    self.start_pump(&record, subscription);
                    resubscribed += 1;
                    continue;
                }
                Ok(Ok(Err(err))) => err,
                Ok(Err(panicked)) => ConsumeError::Closed { reason: panicked },
                Err(_) => ConsumeError::Timeout(step),
            };
            if let Some(done) = self.first_subscribe.remove(&record.id) {
                // A consume still waiting gets the error; the consumer is forgotten.
                let _ = done.send(Err(err));
                self.consumers.remove(&record.id);
                continue;
            }
            self.shared.emit(Event::ConsumerRecoveryFailed {
                queue: record.queue(),
                error: err.to_string(),
            });
            let next = self.policy.next(Why::RecoveryFailed, 1, Some(&err));
            self.follow(&record, Why::RecoveryFailed, 1, next);
        }
        Ok(resubscribed)
    }

    /// Step 2d: after a loss, checks with the broker that each queue
    /// consumed from has consumers again.
    async fn check_consumers(&self, session: &Arc<Session>) {
        if self.lost_at.is_none() {
            return;
        }
        let step = self.step();
        // (A stream reports no consumers in its declare-ok.)
        for record in self.consumers.values().filter(|r| !r.is_stream()) {
            if record.subscribed_on() != Some(session.generation) {
                continue; // reported already
            }
            let count = tokio::time::timeout(
                step,
                guarded(passive_consumer_count(session, &record.queue())),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
            if count == Some(0) {
                self.shared.emit(Event::ConsumerRecoveryFailed {
                    queue: record.queue(),
                    error: "broker reports no consumer after re-subscribing".into(),
                });
            }
        }
    }

    /// Step 3: up. Publishes the session, reports it.
    fn report_up(&mut self, session: &Arc<Session>) {
        // After connections closed for want of confirms, the next reconnect
        // backs off as if those were failed attempts.
        self.attempt = self.unresponsive;
        self.shared.link.send_replace(Link::Up(session.clone()));
        let endpoint = session.endpoint.clone();
        if let Some(server) = &session.server {
            self.identified(&endpoint, server);
        }
        match self.lost_at.take() {
            None => self.shared.emit(Event::Connected { endpoint }),
            Some(since) => {
                // A delay target re-created by another program meanwhile has
                // no binding to the deliver exchange: check each again.
                self.shared.delay.forget_targets();
                self.shared
                    .counters
                    .recoveries
                    .fetch_add(1, Ordering::Relaxed);
                self.shared.emit(Event::Recovered {
                    endpoint,
                    took: since.elapsed(),
                    consumers: self.resubscribed,
                });
            }
        }
        if let Some(tx) = self.first.take() {
            let _ = tx.send(Ok(()));
        }
    }

    /// Step 4: serves the connection until it is lost or the client closes.
    async fn serve(
        &mut self,
        session: &Arc<Session>,
        lapin_events: &mut BoxStream<'static, lapin::Event>,
    ) -> Served {
        let mut poll = tokio::time::interval(self.shared.options.timings.liveness_check);
        // Confirms wait while the broker blocks the connection: count from
        // the end of the last block.
        let mut unblocked_at = Instant::now();
        let up_since = Instant::now();
        loop {
            let next_retry = (self.retries.values().map(|r| r.at))
                .chain(self.replays.iter().map(|r| r.at))
                .min();
            tokio::select! {
                event = lapin_events.next() => match event {
                    // Channel-level errors are reported here too: only a dead
                    // connection counts as a loss.
                    Some(lapin::Event::Error(err)) if !session.alive() => {
                        return Served::Lost(describe(&err));
                    }
                    Some(lapin::Event::Error(err)) => {
                        tracing::debug!(target: "rabbitkit", error = %describe(&err), "channel error");
                    }
                    Some(lapin::Event::ConnectionBlocked(reason)) => {
                        *session.blocked.lock().unwrap() = Some(reason.clone());
                        self.shared.emit(Event::Blocked { reason });
                    }
                    Some(lapin::Event::ConnectionUnblocked) => {
                        unblocked_at = Instant::now();
                        *session.blocked.lock().unwrap() = None;
                        self.shared.emit(Event::Unblocked);
                    }
                    Some(_) => {}
                    None => return Served::Lost("connection dropped".to_owned()),
                },
                _ = poll.tick() => {
                    if !session.alive() {
                        return Served::Lost("connection closed".to_owned());
                    }
                    if let Some(waited) = unconfirmed_too_long(&self.shared, session, unblocked_at) {
                        // A node on the minority side of a partition: the
                        // connection is healthy, nothing gets confirmed.
                        // Close it; the waiting publishes are re-sent on
                        // the next node once recovered.
                        self.shared.emit(Event::Unresponsive {
                            endpoint: session.endpoint.clone(),
                            waited,
                        });
                        let _ = tokio::time::timeout(
                            self.shared.options.connect_timeout,
                            session.connection.close(200, "no confirm in time".into()),
                        )
                        .await;
                        self.unresponsive = self.unresponsive.saturating_add(1);
                        return Served::Lost(format!("no publish confirmed for {waited:?}"));
                    }
                    if self.unresponsive > 0
                        && up_since.elapsed() >= self.shared.options.timings.confirm_deadline.saturating_mul(2)
                    {
                        // Up and confirming for a while: the streak is over.
                        self.unresponsive = 0;
                    }
                    self.forget_dropped();
                }
                command = self.inbox.recv() => {
                    self.command(command, Some(session));
                    if self.close_requested {
                        return Served::Close;
                    }
                }
                Some(ended) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match ended {
                        Ok(ended) => self.task_ended(ended, session),
                        Err(e) if e.is_panic() => {
                            tracing::error!(target: "rabbitkit", "a connection task panicked: {}", panic_text(&*e.into_panic()));
                        }
                        Err(_) => {}
                    }
                }
                () = sleep_until(next_retry), if next_retry.is_some() => {
                    self.retries_due(session);
                    self.replays_due(session);
                }
            }
        }
    }

    /// Reports a lost connection; the next run starts from the next endpoint.
    fn report_lost(&mut self, endpoint: Endpoint, reason: String) {
        self.lost_at = Some(Instant::now());
        self.shared
            .counters
            .disconnects
            .fetch_add(1, Ordering::Relaxed);
        self.shared.link.send_replace(Link::Connecting);
        tracing::warn!(target: "rabbitkit", %endpoint, %reason, "connection lost");
        self.shared.emit(Event::Disconnected { endpoint, reason });
    }

    /// Closing: the consumers' acks recorded but not sent go out, then the
    /// connection is closed (each bounded by the close timeout), then the
    /// client is marked closed. `None`: no connection is up.
    async fn close(&mut self, session: Option<&Arc<Session>>) {
        let bound = self.shared.options.close_timeout;
        if let Some(session) = session {
            let records: Vec<_> = self.consumers.values().cloned().collect();
            let _ = tokio::time::timeout(bound, async {
                for record in records {
                    record.flush_acks().await;
                }
            })
            .await;
            let _ =
                tokio::time::timeout(bound, session.connection.close(200, "client closed".into()))
                    .await;
        }
        close_for_good(&self.shared, "client closed".into());
    }

    /// Stopping: every consumer is forgotten (their streams end once their
    /// pumps do), the tasks are awaited (bounded by
    /// [`Timings::close_slack`](crate::Timings::close_slack); the rest are
    /// aborted), and the close commands are answered.
    async fn finish(&mut self) {
        self.consumers.clear();
        self.first_subscribe.clear();
        self.retries.clear();
        // Nothing more is taken: a command sent from now on fails.
        self.inbox.close();
        while let Ok(command) = self.inbox.try_recv() {
            if let Command::Close { done } = command {
                self.closing.push(done);
            }
        }
        // The connection is closed: the pumps end at once, and a
        // subscription still waiting fails.
        let bound = self.shared.options.timings.close_slack;
        let tasks = &mut self.tasks;
        let _ =
            tokio::time::timeout(bound, async { while tasks.join_next().await.is_some() {} }).await;
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        for done in self.closing.drain(..) {
            let _ = done.send(());
        }
    }

    /// Takes one command; `session` is the connection up, if one is.
    fn command(&mut self, command: Option<Command>, session: Option<&Arc<Session>>) {
        let Some(command) = command else {
            // Every client handle is gone.
            self.close_requested = true;
            return;
        };
        match command {
            Command::Consume { record, done } => {
                if record.is_dropped() {
                    return; // the caller gave up already
                }
                let id = record.id;
                self.consumers.insert(id, record.clone());
                self.first_subscribe.insert(id, done);
                if let Some(session) = session.filter(|s| s.alive()) {
                    self.start_subscribe(record, session, None);
                }
                // Otherwise the next recovery subscribes it.
            }
            Command::CancelConsumer { id, done } => {
                self.retries.remove(&id);
                let live = self.consumers.get(&id).and_then(|r| r.cancel());
                let _ = done.send(live);
            }
            Command::Declared {
                declaration,
                generation,
                done,
            } => {
                self.topology.send_modify(|t| t.record(declaration.clone()));
                let _ = done.send(());
                // It ran on a connection that was replaced since, perhaps
                // after the replay: declare it on this one too.
                if let Some(session) = session.filter(|s| s.generation > generation) {
                    self.redeclare(session, declaration);
                }
            }
            Command::Forget { forget, done } => {
                self.topology.send_modify(|t| match &forget {
                    Forget::Queue(name) => t.forget_queue(name),
                    Forget::Exchange(name) => t.forget_exchange(name),
                    Forget::Binding(spec) => t.forget_binding(spec),
                    Forget::ExchangeBinding(spec) => t.forget_exchange_binding(spec),
                });
                // A deleted delay target loses its binding to the deliver
                // exchange: the next delayed publish to it binds it again.
                match &forget {
                    Forget::Queue(name) => self.shared.delay.forget_queue(name),
                    Forget::Exchange(name) => self.shared.delay.forget_exchange(name),
                    Forget::Binding(_) | Forget::ExchangeBinding(_) => {}
                }
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Command::Close { done } => {
                self.closing.push(done);
                self.close_requested = true;
            }
        }
    }

    /// Declares `declaration` on `session` in a task (a failure is an
    /// [`Event::TopologyRecoveryFailed`]).
    fn redeclare(&mut self, session: &Arc<Session>, declaration: Declaration) {
        let (shared, session, step) = (self.shared.clone(), session.clone(), self.step());
        self.tasks.spawn(async move {
            let error = match tokio::time::timeout(step, session.declare(&declaration)).await {
                Ok(Ok(())) => return TaskEnd::Other,
                Ok(Err(err)) => err.to_string(),
                Err(_) => format!("no answer within {step:?}"),
            };
            shared.emit(Event::TopologyRecoveryFailed {
                declaration: declaration.to_string(),
                error,
            });
            TaskEnd::Other
        });
    }

    /// Subscribes `record` on `session` in a task; its end comes back as a
    /// [`TaskEnd::Subscribed`].
    fn start_subscribe(
        &mut self,
        record: Arc<ConsumerRecord>,
        session: &Arc<Session>,
        retry: Option<(Why, u32)>,
    ) {
        let (shared, session) = (self.shared.clone(), session.clone());
        let step = shared.options.operation_timeout;
        // A temporary queue is deleted by the broker when its consumer's
        // channel closes (auto-delete): make it again, bound as before, so
        // its subscriber goes on (what was published meanwhile is gone with
        // the old one). Idempotent when the queue is still there.
        let remake = match retry {
            Some((Why::Ended, _)) => self.topology.borrow().temporary_queue(&record.queue()),
            _ => None,
        };
        self.tasks.spawn(async move {
            let attempt = async {
                for decl in remake.iter().flatten() {
                    session.declare(decl).await.map_err(|e| match e {
                        DeclareError::AccessRefused { text } => {
                            ConsumeError::AccessRefused { text }
                        }
                        other => ConsumeError::Closed {
                            reason: format!("declaring the temporary queue again: {other}"),
                        },
                    })?;
                }
                subscribe(&shared.options, &session, &record).await
            };
            let result = tokio::time::timeout(step, attempt)
                .await
                .unwrap_or(Err(ConsumeError::Timeout(step)));
            TaskEnd::Subscribed {
                id: record.id,
                generation: session.generation,
                retry,
                result: Box::new(result),
            }
        });
    }

    /// A subscription made: recorded on its consumer, its pump started, a
    /// consume waiting for it answered.
    fn start_pump(&mut self, record: &Arc<ConsumerRecord>, subscription: Subscription) {
        record.set_subscribed(&subscription);
        let options = &self.shared.options;
        self.tasks.spawn(
            pump(
                record.clone(),
                subscription,
                options.operation_timeout,
                options.timings.ack_flush_delay,
            )
            .map(TaskEnd::Pump),
        );
        if let Some(done) = self.first_subscribe.remove(&record.id) {
            let _ = done.send(Ok(()));
        }
    }

    /// One of the tasks ended.
    fn task_ended(&mut self, ended: TaskEnd, session: &Arc<Session>) {
        match ended {
            TaskEnd::Pump(end) => self.pump_ended(end, session),
            TaskEnd::Subscribed {
                id,
                generation,
                retry,
                result,
            } => self.subscribed(id, generation, retry, *result, session),
            TaskEnd::Replayed {
                generation,
                replay,
                result,
            } => self.replayed(generation, *replay, result, session),
            TaskEnd::Other => {}
        }
    }

    /// A pump ended: forget its consumer (stream dropped), or subscribe it
    /// again as the policy says (subscription ended while the connection is up).
    fn pump_ended(&mut self, end: PumpEnd, session: &Arc<Session>) {
        if end.dropped {
            self.forget_consumer(end.id);
            return;
        }
        let Some(record) = self.consumers.get(&end.id).cloned() else {
            return;
        };
        if record.is_dropped() {
            self.forget_consumer(end.id);
            return;
        }
        if record.is_cancelled()
            || end.generation != session.generation
            || !session.alive()
            || record.subscribed_on() == Some(session.generation)
        {
            return; // a connection lost is the next recovery's
        }
        let next = self.policy.next(Why::Ended, 1, None);
        self.follow(&record, Why::Ended, 1, next);
    }

    /// A subscription attempt ended.
    fn subscribed(
        &mut self,
        id: u64,
        generation: u64,
        retry: Option<(Why, u32)>,
        result: Result<Subscription, ConsumeError>,
        session: &Arc<Session>,
    ) {
        let Some(record) = self.consumers.get(&id).cloned() else {
            return; // forgotten meanwhile: a subscription made closes as it drops
        };
        if generation != session.generation || record.subscribed_on() == Some(session.generation) {
            return; // the recovery since took care of it
        }
        match result {
            Ok(_) if record.is_cancelled() => {}
            Ok(subscription) => {
                if retry.is_some() {
                    tracing::info!(target: "rabbitkit", queue = %record.queue(), "consumer subscribed again");
                }
                self.start_pump(&record, subscription);
            }
            // The connection is going: the next recovery subscribes it (and
            // answers a consume still waiting).
            Err(_) if !session.alive() => {}
            Err(err) => match retry {
                None => {
                    if let Some(done) = self.first_subscribe.remove(&id) {
                        let _ = done.send(Err(err));
                    }
                    self.consumers.remove(&id);
                }
                Some((why, attempt)) => {
                    tracing::warn!(target: "rabbitkit", queue = %record.queue(), error = %err, attempt, "consumer not subscribed again");
                    // A queue whose declaration is to be tried again is not
                    // gone for good: wait for it.
                    let err = match err {
                        ConsumeError::QueueNotFound { queue } if self.replay_pending(&queue) => {
                            ConsumeError::Closed {
                                reason: format!("queue {queue:?} not declared again yet"),
                            }
                        }
                        err => err,
                    };
                    let next = self.policy.next(why, attempt + 1, Some(&err));
                    self.follow(&record, why, attempt + 1, next);
                }
            },
        }
    }

    /// Does what the policy said for `record`'s attempt `attempt`.
    fn follow(&mut self, record: &Arc<ConsumerRecord>, why: Why, attempt: u32, next: Next) {
        match next {
            Next::RetryIn(delay) => {
                let at = tokio::time::Instant::now() + delay;
                self.retries.insert(record.id, Retry { why, attempt, at });
            }
            Next::WaitForRecovery => {}
            Next::EndStream => {
                tracing::warn!(target: "rabbitkit", queue = %record.queue(), "consumer cannot be subscribed again: its stream ends");
                self.forget_consumer(record.id);
                let record = record.clone();
                self.tasks.spawn(async move {
                    record.end_stream().await;
                    TaskEnd::Other
                });
            }
        }
    }

    /// Starts the re-subscriptions whose time has come.
    fn retries_due(&mut self, session: &Arc<Session>) {
        let now = tokio::time::Instant::now();
        let due: Vec<u64> = (self.retries.iter())
            .filter(|(_, r)| r.at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(retry) = self.retries.remove(&id) else {
                continue;
            };
            let Some(record) = self.consumers.get(&id).cloned() else {
                continue;
            };
            if record.is_dropped() {
                self.forget_consumer(id);
            } else if !record.is_cancelled()
                && session.alive()
                && record.subscribed_on() != Some(session.generation)
            {
                self.start_subscribe(record, session, Some((retry.why, retry.attempt)));
            }
        }
    }

    /// Forgets consumer `id`: never subscribed again. An auto-delete queue
    /// it consumed, that no other consumer of this client consumes, is
    /// forgotten too: the broker deleted it with its last consumer, and a
    /// recovery must not make it again (it would collect messages for
    /// nobody until the connection closes).
    fn forget_consumer(&mut self, id: u64) {
        let record = self.consumers.remove(&id);
        self.retries.remove(&id);
        self.first_subscribe.remove(&id);
        let Some(record) = record.filter(|r| r.was_subscribed()) else {
            return; // never a consumer: the broker did not delete the queue
        };
        let queue = record.queue();
        if self.consumers.values().any(|r| r.queue() == queue) {
            return;
        }
        if self.topology.borrow().is_auto_delete(&queue) {
            self.topology.send_modify(|t| t.forget_queue(&queue));
        }
    }

    /// Forgets the consumers whose stream was dropped and that have no
    /// subscription left (a pump reports the others when it has cleaned up).
    fn forget_dropped(&mut self) {
        let dropped: Vec<u64> = (self.consumers.values())
            .filter(|r| r.is_dropped() && r.subscribed_on().is_none())
            .map(|r| r.id)
            .collect();
        for id in dropped {
            self.forget_consumer(id);
        }
    }
}

/// Sleeps until `at` (forever when `None`).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How long the oldest publish of `session` has waited for its confirm,
/// when that is past [`Timings::confirm_deadline`](crate::Timings::confirm_deadline)
/// (not zero) and the broker does not block the connection.
fn unconfirmed_too_long(
    shared: &Shared,
    session: &Session,
    unblocked_at: Instant,
) -> Option<Duration> {
    let deadline = shared.options.timings.confirm_deadline;
    if deadline.is_zero() || session.blocked().is_some() {
        return None;
    }
    session
        .confirms
        .oldest(unblocked_at)
        .filter(|&waited| waited >= deadline)
}

async fn passive_consumer_count(session: &Session, queue: &str) -> Option<u32> {
    let _serial = session.admin_lock.lock().await;
    let ch = session.admin.get(&session.connection).await.ok()?;
    ch.queue_declare(
        queue.into(),
        lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .ok()
    .map(|q| q.consumer_count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_step_becomes_an_error_text() {
        assert_eq!(guarded(async { 7 }).await, Ok(7));
        let name = "n".repeat(300);
        // What lapin did with an over-long name before validation.
        let step = async { lapin::types::ShortString::from(name.as_str()) };
        assert_eq!(
            guarded(step).await.unwrap_err(),
            "panicked: ShortString exceeds maximum length: ShortStringError(300)"
        );
        let formatted = async { panic!("step {} failed", 3) };
        assert_eq!(
            guarded(formatted).await,
            Err::<(), _>("panicked: step 3 failed".to_owned())
        );
    }
}
