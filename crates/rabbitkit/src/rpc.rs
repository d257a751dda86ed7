//! Request/reply (RPC) over RabbitMQ: `reply_to` + `correlation_id`.
//!
//! [`RpcServer`] consumes requests from a queue, runs a typed handler
//! `Req -> Result<Resp, E>` and replies to each request's `reply_to` with its
//! `correlation_id`. [`RpcClient`] sends requests and waits for replies on
//! RabbitMQ's *direct reply-to* pseudo-queue by default (or on an exclusive
//! reply queue of its own), with many calls in flight at once.
//!
//! Requests and replies are transient (not persistent), unlike the other
//! patterns' messages, and deliberately so: a request expires with its
//! call's timeout (a caller that gave up does not want it served after a
//! broker restart), and a reply goes to a caller waiting in memory (direct
//! reply-to stores nothing). Both are confirmed; a request in a quorum
//! queue (the default server queue) is written to disk all the same.
//!
//! Every call ends: with the reply, the handler's typed error
//! ([`RpcError::Server`]), [`RpcError::Timeout`], [`RpcError::Unroutable`]
//! at once when no queue takes the request, or [`RpcError::ConnectionLost`]
//! when the connection dies while it waits. Replies whose correlation id is
//! unknown (late replies to timed-out calls) are dropped and counted.
//!
//! A dropped call leaves nothing pending; a nacked request fails its call
//! alone (later calls use a fresh channel, the calls in flight finish on the
//! old one); dropping the last clone of an [`RpcClient`] closes its reply
//! channel. Requests go out through a [`ConfirmChannel`], so an unroutable
//! request is told apart from the others in flight by its `message_id`.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use lapin::options::{BasicConsumeOptions, ConfirmSelectOptions, QueueDeclareOptions};
use rabbitkit_core::{
    AMQPValue, BasicProperties, ChannelError, Client, ConfirmChannel, ConsumeOptions, DeclareError,
    FieldTable, OutgoingMessage, PublishOutcome, lapin,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::sync::oneshot;

use crate::codec::{self, DecodeError, EncodeError};
use crate::error::SubscribeError;
use crate::instrument::{timed, traced};
use crate::queue::{Queue, QueueBuilder};
use crate::shutdown::Shutdown;

/// The pseudo-queue of RabbitMQ's direct reply-to.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// Header a server sets on a reply that carries an error.
pub const ERROR_HEADER: &str = "x-rabbitkit-rpc-error";
/// Default time a call waits for its reply (10 s): the default of
/// [`Timings::rpc_timeout`](rabbitkit_core::Timings::rpc_timeout), which a
/// client's [`Options::timings`](rabbitkit_core::Options::timings) may change.
pub const DEFAULT_TIMEOUT: Duration = rabbitkit_core::Timings::DEFAULT.rpc_timeout;

/// A call failed.
#[derive(Debug, Clone, Error, PartialEq)]
#[non_exhaustive]
pub enum RpcError<E> {
    /// No reply within the call's timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// No queue received the request (nobody serves it).
    #[error("request to {routing_key:?} is unroutable: no server queue")]
    Unroutable {
        /// The routing key (the server's queue).
        routing_key: String,
    },
    /// The connection died while the call waited; the request may or may not have been served.
    #[error("connection lost while waiting for the reply")]
    ConnectionLost,
    /// The server's handler returned an error.
    #[error("server error")]
    Server(E),
    /// The server could not decode the request.
    #[error("server could not decode the request: {0}")]
    BadRequest(String),
    /// The reply did not decode.
    #[error(transparent)]
    Decode(DecodeError),
    /// The request did not encode.
    #[error(transparent)]
    Encode(EncodeError),
    /// The reply channel could not be opened.
    #[error(transparent)]
    Channel(ChannelError),
    /// The broker refused the request.
    #[error("broker refused the request: {0}")]
    Broker(String),
    /// The request cannot be sent as addressed: the exchange or routing key
    /// (the server's queue) is longer than the 255 bytes AMQP allows.
    /// Nothing was sent.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What was checked: `exchange` or `routing key`.
        what: String,
        /// The value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

impl<E> RpcError<E> {
    /// Whether no reply came in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }

    /// Whether the client was closed under the call.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Channel(e) if e.is_closed())
    }

    /// Whether calling again later may succeed: after a timeout, a lost
    /// connection, or a reply channel that could not be opened yet. Not
    /// for the server's own error, a request it could not decode, an
    /// unroutable request (no server), or invalid input.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::ConnectionLost => true,
            Self::Channel(e) => e.is_retryable(),
            _ => false,
        }
    }
}

type Waiter = oneshot::Sender<lapin::message::Delivery>;

/// The channel requests go out on and replies come back to. Calls in flight
/// hold it: it stays open until the last of them ends, even once replaced.
struct ReplyChannel {
    confirms: ConfirmChannel,
    reply_to: String,
    epoch: u64,
}

struct Inner {
    client: Client,
    direct: bool,
    /// The current reply channel. Dropping the last handle of a
    /// `ConfirmChannel` closes its channel, so a dropped client (or a
    /// replaced channel, once its calls are done) leaves nothing open.
    reply: Mutex<Option<Arc<ReplyChannel>>>,
    /// One opening at a time.
    opening: tokio::sync::Mutex<()>,
    pending: Mutex<HashMap<String, (u64, Waiter)>>,
    epochs: AtomicU64,
    unknown: AtomicU64,
}

/// Builds an [`RpcClient`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RpcClientBuilder<Req, Resp, E> {
    exchange: String,
    routing_key: String,
    /// `None`: the client's [`Timings::rpc_timeout`](rabbitkit_core::Timings::rpc_timeout).
    timeout: Option<Duration>,
    direct: bool,
    _t: PhantomData<fn(Req) -> (Resp, E)>,
}

/// Calls a typed RPC server. Cheap to clone; clones share the reply
/// channel, which closes when the last clone is dropped.
///
/// ```no_run
/// # async fn run(client: rabbitkit::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use rabbitkit::RpcClient;
/// let fib = RpcClient::<u64, u64>::builder("rpc_queue").build(&client).await?;
/// let answer = fib.call(&30).await?;
/// assert_eq!(answer, 832040);
/// # Ok(()) }
/// ```
pub struct RpcClient<Req, Resp, E = String> {
    inner: Arc<Inner>,
    exchange: String,
    routing_key: String,
    timeout: Duration,
    _t: PhantomData<fn(Req) -> (Resp, E)>,
}

impl<Req, Resp, E> Clone for RpcClient<Req, Resp, E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
            timeout: self.timeout,
            _t: PhantomData,
        }
    }
}

impl<Req, Resp, E> std::fmt::Debug for RpcClient<Req, Resp, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("routing_key", &self.routing_key)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<Req, Resp, E> RpcClient<Req, Resp, E> {
    /// A client of the server consuming `queue` (through the default exchange).
    pub fn builder(queue: impl Into<String>) -> RpcClientBuilder<Req, Resp, E> {
        RpcClientBuilder {
            exchange: String::new(),
            routing_key: queue.into(),
            timeout: None,
            direct: true,
            _t: PhantomData,
        }
    }

    /// Replies that arrived for no waiting call (e.g. after a timeout).
    pub fn unknown_replies(&self) -> u64 {
        self.inner.unknown.load(Ordering::Relaxed)
    }

    /// The address replies come to (the reply queue's name), once the
    /// reply channel is open.
    #[doc(hidden)]
    pub fn reply_to(&self) -> Option<String> {
        let slot = self.inner.reply.lock().unwrap();
        slot.as_ref().map(|r| r.reply_to.clone())
    }

    /// Calls waiting for their reply right now.
    pub fn pending(&self) -> usize {
        self.inner.pending.lock().unwrap().len()
    }
}

impl<Req, Resp, E> RpcClientBuilder<Req, Resp, E> {
    /// How long a call waits for its reply (default: the client's
    /// [`Timings::rpc_timeout`](rabbitkit_core::Timings::rpc_timeout), 10 s
    /// unless changed). At most [`Options::MAX_TIMEOUT`](rabbitkit_core::Options::MAX_TIMEOUT).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout.min(rabbitkit_core::Options::MAX_TIMEOUT));
        self
    }

    /// Send requests through this exchange (with the queue name as routing key).
    pub fn exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }

    /// Receive replies on an exclusive queue of this client's own instead of
    /// direct reply-to.
    pub fn exclusive_reply_queue(mut self) -> Self {
        self.direct = false;
        self
    }

    /// Builds the client and opens its reply channel.
    pub async fn build(self, client: &Client) -> Result<RpcClient<Req, Resp, E>, ChannelError> {
        let rpc = RpcClient {
            inner: Arc::new(Inner {
                client: client.clone(),
                direct: self.direct,
                reply: Mutex::new(None),
                opening: tokio::sync::Mutex::new(()),
                pending: Mutex::new(HashMap::new()),
                epochs: AtomicU64::new(0),
                unknown: AtomicU64::new(0),
            }),
            exchange: self.exchange,
            routing_key: self.routing_key,
            timeout: self.timeout.unwrap_or(client.timings().rpc_timeout),
            _t: PhantomData,
        };
        rpc.inner.reply_channel().await?;
        Ok(rpc)
    }
}

impl Inner {
    /// Takes the reply channel of `epoch` out of service: later calls open
    /// a new one; the calls still on it keep it open until they end.
    fn retire(&self, epoch: u64) {
        let mut slot = self.reply.lock().unwrap();
        if slot.as_ref().is_some_and(|r| r.epoch == epoch) {
            slot.take();
        }
    }

    fn current(&self) -> Option<Arc<ReplyChannel>> {
        let slot = self.reply.lock().unwrap();
        slot.as_ref()
            .filter(|r| r.confirms.channel().status().connected())
            .cloned()
    }

    /// The live reply channel, opened (again) when needed.
    async fn reply_channel(self: &Arc<Self>) -> Result<Arc<ReplyChannel>, ChannelError> {
        if let Some(r) = self.current() {
            return Ok(r);
        }
        let _one_at_a_time = self.opening.lock().await;
        if let Some(r) = self.current() {
            return Ok(r);
        }
        let broker = |e: lapin::Error| ChannelError::Broker {
            text: e.to_string(),
            cause: Some(rabbitkit_core::Cause::new(Arc::new(e))),
        };
        let (channel, _) = self.client.open_channel().await?;
        if let Err(e) = channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
        {
            let _ = channel.close(200, "confirm.select failed".into()).await;
            return Err(broker(e));
        }
        // From here on, dropping `confirms` closes the channel.
        let confirms = ConfirmChannel::new(channel.clone());
        let reply_to = if self.direct {
            DIRECT_REPLY_TO.to_owned()
        } else {
            let name = format!("rabbitkit.rpc.{}", uuid::Uuid::new_v4().simple());
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
                .await
                .map_err(broker)?;
            name
        };
        let consumer = channel
            .basic_consume(
                reply_to.as_str().into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(broker)?;
        let epoch = self.epochs.fetch_add(1, Ordering::Relaxed) + 1;
        tokio::spawn(reply_pump(Arc::downgrade(self), consumer, epoch));
        let reply = Arc::new(ReplyChannel {
            confirms,
            reply_to,
            epoch,
        });
        *self.reply.lock().unwrap() = Some(reply.clone());
        Ok(reply)
    }
}

/// Removes a call's pending entry however the call ends (reply, error,
/// timeout, or its future dropped).
struct PendingCall<'a> {
    inner: &'a Inner,
    id: String,
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        self.inner.pending.lock().unwrap().remove(&self.id);
    }
}

async fn reply_pump(inner: std::sync::Weak<Inner>, mut consumer: lapin::Consumer, epoch: u64) {
    while let Some(Ok(delivery)) = consumer.next().await {
        let Some(inner) = inner.upgrade() else { return };
        let id = delivery
            .properties
            .correlation_id()
            .as_ref()
            .map(|s| s.to_string());
        let waiter = id.and_then(|id| inner.pending.lock().unwrap().remove(&id));
        match waiter {
            Some((_, tx)) => {
                let _ = tx.send(delivery);
            }
            None => {
                inner.unknown.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(target: "rabbitkit", "RPC reply with unknown correlation id dropped");
            }
        }
    }
    // The reply channel is gone: fail the calls waiting on it (dropping
    // their senders), rather than leave them hanging.
    if let Some(inner) = inner.upgrade() {
        inner
            .pending
            .lock()
            .unwrap()
            .retain(|_, (e, _)| *e != epoch);
    }
}

impl<Req, Resp, E> RpcClient<Req, Resp, E> {
    /// Sends one encoded request and waits for its reply delivery.
    async fn exchange_messages(
        &self,
        body: Vec<u8>,
        props: BasicProperties,
    ) -> Result<lapin::message::Delivery, RpcError<E>> {
        let reply = self
            .inner
            .reply_channel()
            .await
            .map_err(RpcError::Channel)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let props = props
            .with_reply_to(reply.reply_to.as_str().into())
            .with_correlation_id(id.as_str().into())
            .with_message_id(id.as_str().into())
            // A request nobody served in time is worthless: let it expire.
            .with_expiration(rabbitkit_core::validate::expiration(self.timeout));
        #[cfg(feature = "opentelemetry")]
        let props = rabbitkit_core::trace::rpc_request(&id, props);
        let (tx, mut rx) = oneshot::channel();
        self.inner
            .pending
            .lock()
            .unwrap()
            .insert(id.clone(), (reply.epoch, tx));
        let _pending = PendingCall {
            inner: &self.inner,
            id,
        };
        let confirm =
            reply
                .confirms
                .publish(&self.exchange, &self.routing_key, true, body.into(), props);
        tokio::pin!(confirm);
        // Wait for the confirm and the reply together: the reply may come
        // first (its round trip overlaps the confirm's); an unroutable
        // request is known from the confirm.
        let mut confirmed = false;
        loop {
            tokio::select! {
                delivery = &mut rx => return delivery.map_err(|_| RpcError::ConnectionLost),
                outcome = &mut confirm, if !confirmed => match outcome {
                    Err(e) => {
                        return Err(if reply.confirms.channel().status().connected() {
                            RpcError::Broker(e.to_string())
                        } else {
                            RpcError::ConnectionLost
                        });
                    }
                    Ok(PublishOutcome::Returned { .. }) => {
                        return Err(RpcError::Unroutable {
                            routing_key: self.routing_key.clone(),
                        });
                    }
                    Ok(PublishOutcome::Nacked) => {
                        // RabbitMQ 3.10 goes on nacking a channel that
                        // published to a quorum queue during its leader
                        // election: later calls get a fresh channel, while
                        // the calls in flight on this one go on.
                        self.inner.retire(reply.epoch);
                        return Err(RpcError::Broker("request nacked".into()));
                    }
                    Ok(_) => confirmed = true,
                },
            }
        }
    }
}

impl<Req: Serialize, Resp: DeserializeOwned, E: DeserializeOwned> RpcClient<Req, Resp, E> {
    /// Calls the server and waits for its typed reply. The call's timeout
    /// covers everything, (re)opening the reply channel included. Dropping
    /// the future abandons the call and leaves nothing behind.
    pub async fn call(&self, request: &Req) -> Result<Resp, RpcError<E>> {
        #[cfg(feature = "opentelemetry")]
        let span = rabbitkit_core::trace::rpc_call_span(&self.exchange, &self.routing_key);
        let call = self.call_inner(request);
        #[cfg(feature = "opentelemetry")]
        let call = tracing::Instrument::instrument(call, span);
        call.await
    }

    async fn call_inner(&self, request: &Req) -> Result<Resp, RpcError<E>> {
        // Before anything is opened or recorded: lapin panics on a name over 255 bytes.
        for (what, value) in [
            ("exchange", &self.exchange),
            ("routing key", &self.routing_key),
        ] {
            if let Err(reason) = rabbitkit_core::validate::check_short_string(value) {
                return Err(RpcError::Invalid {
                    what: what.to_owned(),
                    value: value.clone(),
                    reason,
                });
            }
        }
        let (body, props) = codec::encode(request, false).map_err(RpcError::Encode)?;
        let reply =
            match tokio::time::timeout(self.timeout, self.exchange_messages(body, props)).await {
                Ok(reply) => reply?,
                Err(_) => return Err(RpcError::Timeout(self.timeout)),
            };
        let error_kind = reply
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(ERROR_HEADER).cloned());
        match error_kind {
            None => codec::decode(&reply.data, &reply.properties).map_err(RpcError::Decode),
            Some(AMQPValue::LongString(kind)) if kind.to_string() == "bad-request" => Err(
                RpcError::BadRequest(String::from_utf8_lossy(&reply.data).into_owned()),
            ),
            Some(_) => Err(RpcError::Server(
                codec::decode(&reply.data, &reply.properties).map_err(RpcError::Decode)?,
            )),
        }
    }
}

/// Builds an [`RpcServer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RpcServerBuilder<Req, Resp, E> {
    queue: QueueBuilder,
    prefetch: u16,
    concurrency: usize,
    _t: PhantomData<fn(Req) -> (Resp, E)>,
}

/// Serves typed requests from a queue.
///
/// ```no_run
/// # async fn run(client: rabbitkit::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use rabbitkit::RpcServer;
/// let server = RpcServer::<u64, u64, String>::builder("rpc_queue").declare(&client).await?;
/// server
///     .serve(|n: u64| async move {
///         if n > 90 { Err(format!("{n} is too large")) } else { Ok(fib(n)) }
///     })
///     .await?;
/// # fn fib(n: u64) -> u64 { n }
/// # Ok(()) }
/// ```
pub struct RpcServer<Req, Resp, E> {
    queue: Queue,
    prefetch: u16,
    concurrency: usize,
    _t: PhantomData<fn(Req) -> (Resp, E)>,
}

impl<Req, Resp, E> std::fmt::Debug for RpcServer<Req, Resp, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcServer")
            .field("queue", &self.queue.name())
            .finish_non_exhaustive()
    }
}

/// What a server did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServeReport {
    /// Requests answered with the handler's `Ok`.
    pub answered: u64,
    /// Requests answered with the handler's `Err`.
    pub failed: u64,
    /// Requests whose body did not decode (answered with a bad-request error).
    pub bad_requests: u64,
    /// Requests without `reply_to`, rejected (nobody could get the answer).
    pub no_reply_to: u64,
    /// Redelivered requests dropped because their reply had already been
    /// lost with a connection (their caller is gone).
    pub dropped: u64,
}

impl<Req, Resp, E> RpcServer<Req, Resp, E> {
    /// A server on queue `name`, a durable quorum queue
    /// ([`Queue::named`]), as the official tutorials declare `rpc_queue`
    /// (`durable=True, arguments={'x-queue-type': 'quorum'}`). Change it with
    /// [`queue`](RpcServerBuilder::queue).
    pub fn builder(name: impl Into<String>) -> RpcServerBuilder<Req, Resp, E> {
        RpcServerBuilder {
            queue: Queue::named(name),
            prefetch: 32,
            concurrency: 16,
            _t: PhantomData,
        }
    }

    /// The request queue.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }
}

impl<Req, Resp, E> RpcServerBuilder<Req, Resp, E> {
    /// Requests taken from the broker at once (default 32).
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// Requests handled at once (default 16; 1 handles them one by one, in order).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Change the request queue's declaration.
    pub fn queue(mut self, f: impl FnOnce(QueueBuilder) -> QueueBuilder) -> Self {
        self.queue = f(self.queue);
        self
    }

    /// Declares the request queue.
    pub async fn declare(self, client: &Client) -> Result<RpcServer<Req, Resp, E>, DeclareError> {
        Ok(RpcServer {
            queue: self.queue.declare(client).await?,
            prefetch: self.prefetch,
            concurrency: self.concurrency,
            _t: PhantomData,
        })
    }
}

#[derive(Default)]
struct Counters {
    /// Correlation ids whose reply was cut off by a connection loss.
    lost_replies: Mutex<std::collections::HashSet<String>>,
    dropped: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
    bad: AtomicU64,
    no_reply_to: AtomicU64,
}

impl<Req, Resp, E> RpcServer<Req, Resp, E>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    E: Serialize,
{
    /// Serves requests until the subscription ends. Each request is
    /// acknowledged once its reply is published; one whose reply could not
    /// be published (connection lost) is redelivered after recovery.
    pub async fn serve<F, Fut>(&self, handler: F) -> Result<ServeReport, SubscribeError>
    where
        F: Fn(Req) -> Fut,
        Fut: Future<Output = Result<Resp, E>>,
    {
        self.serve_inner(None, handler).await
    }

    /// [`serve`](Self::serve) until `shutdown` is given, then stops
    /// gracefully: no new requests are taken (those received but not
    /// started go back to the queue when the consumer closes), the requests
    /// in progress are answered and acknowledged up to the shutdown's
    /// deadline, and those still running then are abandoned and requeued.
    ///
    /// ```no_run
    /// # async fn run(server: rabbitkit::RpcServer<u64, u64, String>) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let shutdown = rabbitkit::Shutdown::on_ctrl_c(Duration::from_secs(10));
    /// server.serve_until(&shutdown, |n: u64| async move { Ok(n * 2) }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn serve_until<F, Fut>(
        &self,
        shutdown: &Shutdown,
        handler: F,
    ) -> Result<ServeReport, SubscribeError>
    where
        F: Fn(Req) -> Fut,
        Fut: Future<Output = Result<Resp, E>>,
    {
        self.serve_inner(Some(shutdown), handler).await
    }

    async fn serve_inner<F, Fut>(
        &self,
        shutdown: Option<&Shutdown>,
        handler: F,
    ) -> Result<ServeReport, SubscribeError>
    where
        F: Fn(Req) -> Fut,
        Fut: Future<Output = Result<Resp, E>>,
    {
        let client = self.queue.client().clone();
        let consumer = client
            .consume(
                self.queue.name(),
                ConsumeOptions::new().prefetch(self.prefetch),
            )
            .await?;
        let counters = Counters::default();
        let stop = async {
            match shutdown {
                Some(s) => s.stopping().await,
                None => std::future::pending().await,
            }
        };
        // After the stop: no new requests; the ones in flight finish up to
        // the deadline, then are dropped (their deliveries requeued).
        let deadline = async {
            match shutdown {
                Some(s) => tokio::time::sleep_until(s.stopping().await).await,
                None => std::future::pending().await,
            }
        };
        let queue = self.queue.name();
        let metrics = rabbitkit_core::metrics::Handling::new(queue);
        let metrics = &metrics;
        let serving = consumer
            .take_until(stop)
            .for_each_concurrent(self.concurrency, |item| {
                let client = &client;
                let handler = &handler;
                let counters = &counters;
                let Ok(delivery) = item else {
                    return futures::future::Either::Left(std::future::ready(()));
                };
                let serve = traced(delivery, queue, move |delivery| async move {
                    let props = delivery.properties().clone();
                    let correlation = props.correlation_id().as_ref().map(|c| c.to_string());
                    // A redelivered request whose reply already cost a
                    // connection: its caller is gone (RabbitMQ 3.10 closes the
                    // connection that replies to a direct reply-to address of
                    // a dead node). Drop it rather than loop.
                    if delivery.redelivered()
                        && let Some(id) = &correlation
                        && counters.lost_replies.lock().unwrap().contains(id)
                    {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(target: "rabbitkit", correlation_id = %id, "RPC request dropped: its reply already failed once");
                        let _ = delivery.reject(false).await;
                        return None;
                    }
                    let Some(reply_to) = props.reply_to().as_ref().map(|s| s.to_string()) else {
                        counters.no_reply_to.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(target: "rabbitkit", "RPC request without reply_to rejected");
                        let _ = delivery.reject(false).await;
                        return None;
                    };
                    let mut failure = None;
                    let encoded = match codec::decode::<Req>(delivery.body(), &props) {
                        Err(e) => {
                            failure = Some("undecodable");
                            counters.bad.fetch_add(1, Ordering::Relaxed);
                            Ok((e.to_string().into_bytes(), error_props("bad-request", TEXT_PROPS())))
                        }
                        Ok(req) => match handler(req).await {
                            Ok(resp) => {
                                counters.answered.fetch_add(1, Ordering::Relaxed);
                                codec::encode(&resp, false)
                            }
                            Err(err) => {
                                failure = Some("handler");
                                counters.failed.fetch_add(1, Ordering::Relaxed);
                                codec::encode(&err, false).map(|(b, p)| (b, error_props("handler", p)))
                            }
                        },
                    };
                    let (body, mut reply_props) = match encoded {
                        Ok(x) => x,
                        Err(e) => (e.to_string().into_bytes(), error_props("handler", TEXT_PROPS())),
                    };
                    if let Some(id) = props.correlation_id() {
                        reply_props = reply_props.with_correlation_id(id.clone());
                    }
                    let reply = OutgoingMessage::new("", reply_to, body)
                        .properties(reply_props)
                        .resend_after_reconnect(false);
                    match client.publish(reply).await {
                        Ok(_) => {
                            let _ = delivery.ack().await;
                        }
                        Err(rabbitkit_core::PublishError::ConnectionLost) => {
                            if let Some(id) = correlation {
                                let mut lost = counters.lost_replies.lock().unwrap();
                                if lost.len() > 10_000 {
                                    lost.clear();
                                }
                                lost.insert(id);
                            }
                            tracing::warn!(target: "rabbitkit", "RPC reply lost with the connection; the request will come back");
                        }
                        Err(e) => {
                            tracing::warn!(target: "rabbitkit", error = %e, "RPC reply not sent; request requeued");
                            let _ = delivery.nack(true).await;
                        }
                    }
                    failure
                });
                futures::future::Either::Right(timed(metrics, serve, |failure| *failure).map(|_| ()))
            });
        tokio::select! {
            () = serving => {}
            () = deadline => {
                tracing::warn!(target: "rabbitkit", queue = self.queue.name(), "RPC requests still running at the shutdown deadline abandoned; they are requeued");
            }
        }
        Ok(ServeReport {
            answered: counters.answered.load(Ordering::Relaxed),
            failed: counters.failed.load(Ordering::Relaxed),
            bad_requests: counters.bad.load(Ordering::Relaxed),
            no_reply_to: counters.no_reply_to.load(Ordering::Relaxed),
            dropped: counters.dropped.load(Ordering::Relaxed),
        })
    }
}

#[allow(non_snake_case)]
fn TEXT_PROPS() -> BasicProperties {
    BasicProperties::default().with_content_type(codec::TEXT.into())
}

fn error_props(kind: &str, props: BasicProperties) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(ERROR_HEADER.into(), AMQPValue::LongString(kind.into()));
    props.with_headers(headers)
}
