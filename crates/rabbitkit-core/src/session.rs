//! One live connection ([`Session`]) and what the hot path reads without
//! asking the supervisor ([`Shared`]): the current session through the
//! [`Link`] watch, the publish window, the counters and the event stream.
//!
//! Only the supervisor (see `supervisor.rs`) writes the link; publishes,
//! acks, declarations and the application's own channels read it and go
//! straight to lapin.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, broadcast, watch};

use crate::channels::{ChannelPool, Slot};
use crate::endpoint::Endpoint;
use crate::error::DeclareError;
use crate::events::Event;
use crate::options::Options;
use crate::reply::declare_error;
use crate::topology::{Declaration, Topology};

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
    /// The broker's reason while it blocks this connection (an alarm); a
    /// block belongs to one connection. Written by the supervisor.
    pub(crate) blocked: Mutex<Option<String>>,
    /// The broker this connection's probe identified (`server.rs`).
    pub(crate) server: Option<Arc<crate::server::ServerInfo>>,
}

impl Session {
    pub(crate) fn alive(&self) -> bool {
        self.connection.status().connected()
    }

    /// Why the broker blocks this connection's publishers, if it does.
    pub(crate) fn blocked(&self) -> Option<String> {
        self.blocked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
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

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) confirmed: AtomicU64,
    pub(crate) republished: AtomicU64,
    pub(crate) disconnects: AtomicU64,
    pub(crate) recoveries: AtomicU64,
}

/// What the client handles, publishes and acks read without asking the
/// supervisor. Everything else (the topology record, the consumer
/// registry, the connection's tasks) belongs to the supervisor task.
pub(crate) struct Shared {
    pub(crate) options: Options,
    pub(crate) endpoints: Vec<Endpoint>,
    /// Written by the supervisor only.
    pub(crate) link: watch::Sender<Link>,
    pub(crate) events: broadcast::Sender<Event>,
    /// The publishes in flight: one permit each (closed with the client).
    pub(crate) window: Arc<Semaphore>,
    /// The next pool slot a new `Publisher` takes.
    pub(crate) next_slot: AtomicUsize,
    pub(crate) counters: Counters,
    /// The supervisor's topology record, for reading (`exchange_bindings`).
    pub(crate) topology: watch::Receiver<Topology>,
    /// The delay topology this client declared (see `delay.rs`).
    pub(crate) delay: crate::delay::Declared,
    /// Connection-level metrics (the `metrics` feature).
    pub(crate) metrics: crate::metrics::Connection,
    /// The broker last identified (see `server.rs`); kept across
    /// reconnects, replaced by each connection whose probe answered.
    pub(crate) server: std::sync::Mutex<Option<Arc<crate::server::ServerInfo>>>,
}

impl Shared {
    pub(crate) fn new(
        options: Options,
        endpoints: Vec<Endpoint>,
        topology: watch::Receiver<Topology>,
    ) -> Self {
        let (link, _) = watch::channel(Link::Connecting);
        let (events, _) = broadcast::channel(1024);
        Self {
            window: Arc::new(Semaphore::new(
                options.publish_window.min(Semaphore::MAX_PERMITS),
            )),
            options,
            endpoints,
            link,
            events,
            next_slot: AtomicUsize::new(0),
            counters: Counters::default(),
            topology,
            delay: Default::default(),
            metrics: Default::default(),
            server: Default::default(),
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        if matches!(event, Event::HandlerRunningLong { .. }) {
            tracing::warn!(target: "rabbitkit", "{event}");
        } else {
            tracing::info!(target: "rabbitkit", "{event}");
        }
        self.metrics.event(&event);
        let _ = self.events.send(event);
    }

    /// The current session, if the link is up.
    pub(crate) fn current(&self) -> Option<Arc<Session>> {
        match &*self.link.borrow() {
            Link::Up(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// Why the client stopped, once it has.
    pub(crate) fn closed_reason(&self) -> Option<String> {
        match &*self.link.borrow() {
            Link::Closed(reason) => Some(reason.clone()),
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

    /// The current session when it is up, alive and newer than
    /// `newer_than`: the check `wait_up_for` makes first, without a wait.
    pub(crate) fn up_now(&self, newer_than: u64) -> Option<Arc<Session>> {
        self.current()
            .filter(|s| s.generation > newer_than && s.alive())
    }

    /// Like [`wait_up`](Self::wait_up), bounded by `timeout`.
    pub(crate) async fn wait_up_for(
        &self,
        newer_than: u64,
        timeout: Duration,
    ) -> Result<Result<Arc<Session>, String>, tokio::time::error::Elapsed> {
        if let Some(s) = self.up_now(newer_than) {
            return Ok(Ok(s));
        }
        tokio::time::timeout(timeout, self.wait_up(newer_than)).await
    }
}
