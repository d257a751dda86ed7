//! [`RpcServer`]: serves typed requests from a queue and replies to each.
//!
//! The handler loop is the one every handler-style consumer runs
//! (`concurrency.rs`: handlers in flight, the graceful stop, spans and
//! metrics); each request is decoded into a [`Request`], handled, and its
//! reply published through the client's confirmed publish path before the
//! request is acknowledged.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rabbitkit_core::{
    AMQPValue, BasicProperties, Client, ConsumeOptions, DeclareError, Delivery, FieldTable,
    OutgoingMessage, PublishError, Publisher,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ERROR_HEADER;
use crate::codec;
use crate::engine::{Outcome, call_handler, copy_backoff, drive, run_handler};
use crate::error::SubscribeError;
use crate::queue::{Queue, QueueBuilder};
use crate::shutdown::Shutdown;

/// A request as a handler of [`RpcServer::serve_requests`] receives it:
/// the decoded body and what the handler may need about the message (who
/// asked, its headers, whether it was delivered before). The server
/// acknowledges it itself, once its reply is published.
#[derive(Debug)]
#[non_exhaustive]
pub struct Request<T> {
    /// The decoded body.
    pub body: T,
    properties: BasicProperties,
    redelivered: bool,
}

impl<T> Request<T> {
    /// The caller's correlation id, which the reply carries back.
    pub fn correlation_id(&self) -> Option<&str> {
        self.properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str())
    }

    /// Where the reply goes (the caller's reply queue).
    pub fn reply_to(&self) -> &str {
        self.properties
            .reply_to()
            .as_ref()
            .map_or("", |r| r.as_str())
    }

    /// Whether the broker delivered this request before (its first
    /// delivery's connection was lost before the reply): make handlers
    /// safe to run twice.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// The AMQP properties.
    pub fn properties(&self) -> &BasicProperties {
        &self.properties
    }

    /// One header's value, if present.
    pub fn header(&self, key: &str) -> Option<&AMQPValue> {
        crate::message::header(&self.properties, key)
    }

    /// The request's headers, readable (see [`Received::headers`](crate::Received::headers)).
    pub fn headers(&self) -> crate::Headers {
        self.properties
            .headers()
            .as_ref()
            .map(crate::Headers::from_table)
            .unwrap_or_default()
    }

    /// The body alone.
    pub fn into_body(self) -> T {
        self.body
    }
}

/// Builds an [`RpcServer`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RpcServerBuilder<Req, Resp, E = String> {
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
/// // The error type (what a caller gets in `RpcError::Server`) is `String`
/// // unless said otherwise, as for `RpcClient`: `RpcServer::<u64, u64, MyError>`.
/// let server = RpcServer::<u64, u64>::builder("rpc_queue").declare(&client).await?;
/// server
///     .serve(|n: u64| async move {
///         if n > 90 { Err(format!("{n} is too large")) } else { Ok(fib(n)) }
///     })
///     .await?;
/// # fn fib(n: u64) -> u64 { n }
/// # Ok(()) }
/// ```
pub struct RpcServer<Req, Resp, E = String> {
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
    /// lost with a connection twice (their caller is most likely gone; a
    /// reply lost once is answered again when the request comes back).
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

impl<Req, Resp, E> RpcServer<Req, Resp, E>
where
    Req: DeserializeOwned,
    Resp: Serialize,
    E: Serialize,
{
    /// Serves requests until the subscription ends, the handler taking the
    /// decoded body. Each request is acknowledged once its reply is
    /// published; one whose reply could not be published (connection lost)
    /// is redelivered after recovery and answered again (dropped when its
    /// reply was lost twice: its caller is most likely gone).
    pub async fn serve<F, Fut>(&self, handler: F) -> Result<ServeReport, SubscribeError>
    where
        F: Fn(Req) -> Fut,
        Fut: Future<Output = Result<Resp, E>>,
    {
        self.run(None, |request: Request<Req>| handler(request.body))
            .await
    }

    /// [`serve`](Self::serve) until `shutdown` is given, then stops
    /// gracefully: no new requests are taken (those received but not
    /// started go back to the queue), the requests in progress are
    /// answered and acknowledged up to the shutdown's deadline, and those
    /// still running then are abandoned and requeued.
    ///
    /// ```no_run
    /// # async fn run(server: rabbitkit::RpcServer<u64, u64>) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let shutdown = rabbitkit::Shutdown::on_signals(Duration::from_secs(10));
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
        self.run(Some(shutdown), |request: Request<Req>| {
            handler(request.body)
        })
        .await
    }

    /// [`serve`](Self::serve) with a handler that takes the whole
    /// [`Request`]: the body and the message's correlation id, headers and
    /// redelivered flag.
    ///
    /// ```no_run
    /// # async fn run(server: rabbitkit::RpcServer<u64, u64>) -> Result<(), Box<dyn std::error::Error>> {
    /// use rabbitkit::Request;
    /// server
    ///     .serve_requests(|request: Request<u64>| async move {
    ///         if request.redelivered() {
    ///             println!("again: {:?}", request.correlation_id());
    ///         }
    ///         Ok(request.body * 2)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn serve_requests<F, Fut>(&self, handler: F) -> Result<ServeReport, SubscribeError>
    where
        F: Fn(Request<Req>) -> Fut,
        Fut: Future<Output = Result<Resp, E>>,
    {
        self.run(None, handler).await
    }

    /// [`serve_requests`](Self::serve_requests) until `shutdown` is given,
    /// then stops as [`serve_until`](Self::serve_until) does.
    pub async fn serve_requests_until<F, Fut>(
        &self,
        shutdown: &Shutdown,
        handler: F,
    ) -> Result<ServeReport, SubscribeError>
    where
        F: Fn(Request<Req>) -> Fut,
        Fut: Future<Output = Result<Resp, E>>,
    {
        self.run(Some(shutdown), handler).await
    }

    async fn run<F, Fut>(
        &self,
        shutdown: Option<&Shutdown>,
        handler: F,
    ) -> Result<ServeReport, SubscribeError>
    where
        F: Fn(Request<Req>) -> Fut,
        Fut: Future<Output = Result<Resp, E>>,
    {
        let client = self.queue.client();
        let mut consumer = client
            .consume(
                self.queue.name(),
                ConsumeOptions::new().prefetch(self.prefetch),
            )
            .await?;
        let serving = Serving {
            replies: client.publisher(),
            handler,
            counters: Counters::default(),
            reply_failures: AtomicU32::new(0),
        };
        let serving = &serving;
        let report = drive(
            &mut consumer,
            self.concurrency,
            shutdown,
            None,
            |delivery| serving.answer(delivery),
        )
        .await;
        if report.abandoned > 0 {
            tracing::warn!(target: "rabbitkit", queue = self.queue.name(), abandoned = report.abandoned, "RPC requests still running at the shutdown deadline abandoned; they are requeued");
        }
        Ok(serving.counters.report())
    }
}

/// How many times a request's reply may be lost with a connection before
/// the request is dropped when it comes back (see `Counters::already_lost`).
const LOST_REPLIES_BEFORE_DROP: u32 = 2;

#[derive(Default)]
struct Counters {
    /// Correlation ids whose reply was cut off by a connection loss, and
    /// how many times.
    lost_replies: Mutex<HashMap<String, u32>>,
    dropped: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
    bad: AtomicU64,
    no_reply_to: AtomicU64,
}

impl Counters {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self) -> ServeReport {
        ServeReport {
            answered: self.answered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            bad_requests: self.bad.load(Ordering::Relaxed),
            no_reply_to: self.no_reply_to.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// Whether the reply to this request was already lost with a
    /// connection [`LOST_REPLIES_BEFORE_DROP`] times: its caller is most
    /// likely gone with a node (RabbitMQ 3.10 closes the connection that
    /// replies to a direct reply-to address of a dead node, so answering
    /// such a request again and again would cost a failover each time).
    /// Once lost is not enough: the server's own connection may be the
    /// one that died while its caller, on a healthy node, still waits.
    fn already_lost(&self, delivery: &Delivery) -> bool {
        delivery.redelivered()
            && delivery
                .properties()
                .correlation_id()
                .as_ref()
                .and_then(|id| self.lost_replies.lock().unwrap().get(id.as_str()).copied())
                .is_some_and(|lost| lost >= LOST_REPLIES_BEFORE_DROP)
    }

    fn reply_lost(&self, correlation_id: Option<&str>) {
        if let Some(id) = correlation_id {
            let mut lost = self.lost_replies.lock().unwrap();
            if lost.len() > 10_000 {
                lost.clear();
            }
            *lost.entry(id.to_owned()).or_default() += 1;
        }
    }
}

/// One server's handler, where its replies go, and what it did.
struct Serving<F> {
    replies: Publisher,
    handler: F,
    counters: Counters,
    /// Replies not sent in a row (the back-off before a requeue).
    reply_failures: AtomicU32,
}

impl<F> Serving<F> {
    /// Handles one request delivery, up to its settlement. The outcome
    /// labels the handler metrics (`handler`, `undecodable`, or none).
    async fn answer<Req, Resp, E, Fut>(&self, delivery: Delivery) -> Outcome
    where
        F: Fn(Request<Req>) -> Fut,
        Fut: Future<Output = Result<Resp, E>>,
        Req: DeserializeOwned,
        Resp: Serialize,
        E: Serialize,
    {
        if self.counters.already_lost(&delivery) {
            Counters::count(&self.counters.dropped);
            tracing::warn!(target: "rabbitkit", "RPC request dropped: its reply was lost with a connection twice");
            let _ = delivery.reject(false).await;
            return Outcome::Unsettled;
        }
        let Some(reply_to) = delivery.properties().reply_to().clone() else {
            Counters::count(&self.counters.no_reply_to);
            tracing::warn!(target: "rabbitkit", "RPC request without reply_to rejected");
            let _ = delivery.reject(false).await;
            return Outcome::Unsettled;
        };
        let (outcome, body, mut props) = self.reply(&delivery).await;
        let correlation_id = delivery.properties().correlation_id().clone();
        if let Some(id) = &correlation_id {
            props = props.with_correlation_id(id.clone());
        }
        let reply = OutgoingMessage::new("", reply_to.as_str(), body)
            .properties(props)
            .resend_after_reconnect(false);
        match self.replies.publish(reply).await {
            Ok(_) => {
                self.reply_failures.store(0, Ordering::Relaxed);
                let _ = delivery.ack().await;
            }
            Err(PublishError::ConnectionLost) => {
                self.counters
                    .reply_lost(correlation_id.as_ref().map(|id| id.as_str()));
                tracing::warn!(target: "rabbitkit", "RPC reply lost with the connection; the request will come back");
            }
            Err(e) => {
                // A cause that lasts (a reply over the broker's size limit,
                // no permission) must not become a tight loop: pause,
                // growing while the failures go on, before the requeue.
                let failures = self.reply_failures.fetch_add(1, Ordering::Relaxed) + 1;
                let pause = copy_backoff(failures);
                if failures.is_power_of_two() {
                    tracing::warn!(target: "rabbitkit", error = %e, failures, ?pause, "RPC reply not sent; the request is requeued after a pause");
                }
                tokio::time::sleep(pause).await;
                let _ = delivery.nack(true).await;
                return outcome;
            }
        }
        outcome
    }

    /// The reply to a request: the handler's answer or error, or a
    /// bad-request error when the body does not decode.
    async fn reply<Req, Resp, E, Fut>(
        &self,
        delivery: &Delivery,
    ) -> (Outcome, Vec<u8>, BasicProperties)
    where
        F: Fn(Request<Req>) -> Fut,
        Fut: Future<Output = Result<Resp, E>>,
        Req: DeserializeOwned,
        Resp: Serialize,
        E: Serialize,
    {
        let body = match codec::decode::<Req>(delivery.body(), delivery.properties()) {
            Ok(body) => body,
            Err(e) => {
                Counters::count(&self.counters.bad);
                let props = error_props("bad-request", text_props());
                return (Outcome::Undecodable, e.to_string().into_bytes(), props);
            }
        };
        let request = Request {
            body,
            properties: delivery.properties().clone(),
            redelivered: delivery.redelivered(),
        };
        let (outcome, encoded) = match run_handler(call_handler(|| (self.handler)(request))).await {
            Ok(Ok(answer)) => {
                Counters::count(&self.counters.answered);
                (Outcome::Acked, codec::encode(&answer, false))
            }
            Ok(Err(error)) => {
                Counters::count(&self.counters.failed);
                let encoded =
                    codec::encode(&error, false).map(|(b, p)| (b, error_props("handler", p)));
                (Outcome::Rejected, encoded)
            }
            Err(panicked) => {
                // The caller gets an error reply with the panic's message
                // (text), and the server goes on.
                Counters::count(&self.counters.failed);
                tracing::warn!(target: "rabbitkit", error = %panicked, "RPC handler panicked; an error reply is sent");
                let props = error_props("handler", text_props());
                return (Outcome::Rejected, panicked.into_bytes(), props);
            }
        };
        match encoded {
            Ok((body, props)) => (outcome, body, props),
            Err(e) => (
                outcome,
                e.to_string().into_bytes(),
                error_props("handler", text_props()),
            ),
        }
    }
}

fn text_props() -> BasicProperties {
    BasicProperties::default().with_content_type(codec::TEXT.into())
}

fn error_props(kind: &str, props: BasicProperties) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(ERROR_HEADER.into(), AMQPValue::LongString(kind.into()));
    props.with_headers(headers)
}
