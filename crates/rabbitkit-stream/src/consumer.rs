//! The consumer: typed bodies, offset specs, offsets stored on the server
//! under the consumer's name, single active consumer, failover.
//!
//! One task owns the connection. The connection's handler forwards each
//! message whose offset is past the last one forwarded (so a late chunk of
//! an old connection, or a chunk read again after a reconnection, is never
//! handed out twice), then grants one more chunk of credit. After a
//! failure the task reconnects to a replica (or the leader) and subscribes
//! again from the offset after the last one forwarded.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rabbitkit::codec;
use rabbitmq_stream_client::Client;
use rabbitmq_stream_client::error::ClientError;
use rabbitmq_stream_client::types::{
    Message, MessageResult, OffsetSpecification, ResponseCode, ResponseKind,
};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::client::{DELETED_GRACE, MISSING_GRACE, Role, StreamClient, check_name, client_error};
use crate::error::{BrokerCode, Error, ErrorKind};
use crate::events::{self, Events, StreamEvent};
use crate::filter::ConsumerFilter;

const SUBSCRIPTION: u8 = 1;
/// Chunks granted at subscription; one more per chunk handed on. One at a
/// time: rabbitmq-stream-client runs the handler of each frame in a task of
/// its own, so two chunks in flight could be handled out of order.
const INITIAL_CREDIT: u16 = 1;
/// Messages buffered between the connection and the application.
const BUFFER: usize = 8192;

/// Where a consumer starts reading when no offset is stored under its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OffsetSpec {
    /// The first message still in the stream.
    First,
    /// The last chunk of the stream (its messages, then what comes next).
    Last,
    /// Only messages written from now on.
    Next,
    /// From this offset (or the first one still there).
    Offset(u64),
    /// From the first chunk written at or after this time.
    Timestamp(SystemTime),
}

impl OffsetSpec {
    fn to_client(self) -> OffsetSpecification {
        match self {
            OffsetSpec::First => OffsetSpecification::First,
            OffsetSpec::Last => OffsetSpecification::Last,
            OffsetSpec::Next => OffsetSpecification::Next,
            OffsetSpec::Offset(o) => OffsetSpecification::Offset(o),
            OffsetSpec::Timestamp(t) => OffsetSpecification::Timestamp(
                t.duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0),
            ),
        }
    }
}

/// Builds a [`StreamConsumer`]; from [`StreamClient::consumer`].
#[must_use]
pub struct ConsumerBuilder<T> {
    client: StreamClient,
    stream: String,
    name: Option<String>,
    offset: OffsetSpec,
    store_every: u64,
    store_interval: Duration,
    single_active: bool,
    filter: Option<ConsumerFilter>,
    /// Subscription properties besides the ones above (a super stream's).
    pub(crate) properties: Vec<(String, String)>,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for ConsumerBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("stream", &self.stream)
            .field("name", &self.name)
            .field("offset", &self.offset)
            .finish()
    }
}

impl<T> ConsumerBuilder<T> {
    pub(crate) fn new(client: StreamClient, stream: &str) -> Self {
        ConsumerBuilder {
            client,
            stream: stream.to_owned(),
            name: None,
            offset: OffsetSpec::Next,
            store_every: 1000,
            store_interval: Duration::from_secs(5),
            single_active: false,
            filter: None,
            properties: vec![],
            _t: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> ConsumerBuilder<T> {
    /// Where to start when no offset is stored under the consumer's name
    /// (or it has none): [`OffsetSpec::Next`] by default.
    pub fn offset(mut self, spec: OffsetSpec) -> Self {
        self.offset = spec;
        self
    }

    /// The consumer's name: its offsets are stored on the server under it,
    /// and a consumer of the same name resumes after the last one stored.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Store the offset every `messages` processed messages and every
    /// `interval` (when it moved); 1000 and 5 s by default. Also stored at
    /// [`StreamConsumer::close`].
    pub fn store_every(mut self, messages: u64, interval: Duration) -> Self {
        self.store_every = messages.max(1);
        self.store_interval = interval;
        self
    }

    /// Single active consumer (RabbitMQ 3.11+): of the consumers with this
    /// name on the stream, one receives; when it goes, another takes over
    /// after the offset stored under the name. Needs a name.
    pub fn single_active(mut self, on: bool) -> Self {
        self.single_active = on;
        self
    }

    /// Only the messages that pass `filter` (RabbitMQ 3.13+): the broker
    /// skips chunks without any of its values, and the consumer drops the
    /// other messages of the chunks it gets (see [`ConsumerFilter`]). On a
    /// broker without filtering, [`build`](Self::build) fails with
    /// [`ErrorKind::FilteringUnsupported`].
    pub fn filter(mut self, filter: ConsumerFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Connects and subscribes. With a name, reads from the offset after
    /// the one stored under it, if any; else from [`offset`](Self::offset).
    pub async fn build(self) -> Result<StreamConsumer<T>, Error> {
        check_name("stream", &self.stream)?;
        if let Some(n) = &self.name {
            check_name("consumer", n)?;
        } else if self.single_active {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a single active consumer needs a name",
            ));
        }
        if self.filter.as_ref().is_some_and(|f| f.values.is_empty()) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a consumer filter needs at least one value",
            ));
        }
        let (client, node) = self
            .client
            .connect_with_retry(&self.stream, Role::Replica, MISSING_GRACE)
            .await?;
        if self.filter.is_some() && !client.filtering_supported() {
            let _ = client.close().await;
            return Err(crate::filter::unsupported());
        }
        let stored = match &self.name {
            Some(name) => match client.query_offset(name.clone(), &self.stream).await {
                Ok(o) => Some(o),
                Err(ClientError::RequestError(ResponseCode::OffsetNotFound)) => None,
                Err(e) => {
                    let _ = client.close().await;
                    return Err(client_error("query offset", e));
                }
            },
            None => None,
        };
        let start = match stored {
            Some(o) => OffsetSpec::Offset(o + 1),
            None => self.offset,
        };
        let (tx, rx) = mpsc::channel(BUFFER);
        let shared = Arc::new(Shared {
            client: self.client,
            stream: self.stream,
            name: self.name,
            start,
            single_active: self.single_active,
            filter: self.filter,
            properties: self.properties,
            store_every: self.store_every,
            store_interval: self.store_interval,
            forwarded: AtomicU64::new(0),
            processed: AtomicU64::new(stored.map_or(0, |o| o + 1)),
            processed_count: AtomicU64::new(0),
            store_now: Notify::new(),
            events: events::channel(),
            generation: AtomicU64::new(0),
            forward: tokio::sync::Mutex::new(()),
        });
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (mut client, mut node) = (client, node);
        let started = Instant::now();
        loop {
            match subscribe(&shared, &client, &tx, &control_tx).await {
                Ok(()) => break,
                // A stream just declared may have no leader here yet.
                Err(e)
                    if e.kind() == ErrorKind::Broker(BrokerCode::StreamNotAvailable)
                        && started.elapsed() < Duration::from_secs(5) =>
                {
                    let _ = client.close().await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    (client, node) = shared
                        .client
                        .connect_with_retry(&shared.stream, Role::Replica, MISSING_GRACE)
                        .await?;
                }
                Err(e) => {
                    let _ = client.close().await;
                    return Err(e);
                }
            }
        }
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(run(
            shared.clone(),
            client,
            node,
            tx,
            control_tx,
            control_rx,
            stop_rx,
            stored,
        ));
        Ok(StreamConsumer {
            shared,
            rx,
            ended: false,
            last: None,
            stop: Some(stop_tx),
            task: Some(task),
            _t: PhantomData,
        })
    }
}

struct Shared {
    client: StreamClient,
    stream: String,
    name: Option<String>,
    start: OffsetSpec,
    single_active: bool,
    filter: Option<ConsumerFilter>,
    properties: Vec<(String, String)>,
    store_every: u64,
    store_interval: Duration,
    /// The offset after the last one handed to the channel (0: none yet).
    forwarded: AtomicU64,
    /// The offset after the last one the application processed (0: none).
    processed: AtomicU64,
    processed_count: AtomicU64,
    store_now: Notify,
    events: Events,
    generation: AtomicU64,
    /// Held while a chunk is handed on and while a new connection takes
    /// over: a chunk of an old connection is handed on whole or not at all.
    forward: tokio::sync::Mutex<()>,
}

type Item = Result<(u64, Message), Error>;

enum Control {
    Broken(u64, String),
    Update {
        generation: u64,
        correlation_id: u32,
        active: bool,
    },
}

/// A message read from a stream.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StreamMessage<T> {
    /// The decoded body.
    pub body: T,
    /// Its offset in the stream.
    pub offset: u64,
}

/// A typed consumer of a stream: a `Stream` of messages in offset order,
/// each once, across reconnections.
///
/// A message counts as **processed** when the application asks for the
/// next one (or calls [`close`](Self::close)): the offset stored on the
/// server (for a named consumer, every N messages, every T seconds and at
/// `close`) is the last processed one, so a consumer that restarts under
/// the same name resumes right after it.
///
/// On a connection loss or a node's death the consumer reconnects with
/// back-off over the endpoints to a replica (or the leader) of the stream
/// and subscribes again after the last offset it had received: nothing is
/// skipped and nothing is handed out twice. When it gives up — the stream
/// was deleted (an [`ErrorKind::StreamNotFound`] error a few seconds
/// after), or no node took it back within
/// [`StreamOptions::reconnect_for`](crate::StreamOptions::reconnect_for) —
/// it yields that error once, then ends (`None`).
pub struct StreamConsumer<T> {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Item>,
    /// The consumer gave up (its error was handed out): the stream ends.
    ended: bool,
    last: Option<u64>,
    stop: Option<oneshot::Sender<Option<u64>>>,
    task: Option<tokio::task::JoinHandle<Result<(), Error>>>,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for StreamConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConsumer")
            .field("stream", &self.shared.stream)
            .field("name", &self.shared.name)
            .finish()
    }
}

impl<T> StreamConsumer<T> {
    /// The stream read.
    pub fn stream(&self) -> &str {
        &self.shared.stream
    }

    /// The consumer's events (disconnections, reconnections).
    pub fn events(&self) -> impl futures::Stream<Item = StreamEvent> + Unpin + use<T> {
        events::subscribe(&self.shared.events)
    }

    /// Stops: stores the offset of the last message handed out (for a named
    /// consumer), unsubscribes and closes the connection.
    pub async fn close(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(self.last);
        }
        match self.task.take() {
            Some(t) => t
                .await
                .unwrap_or_else(|e| Err(Error::new(ErrorKind::Closed, e.to_string()))),
            None => Ok(()),
        }
    }
}

impl<T> Drop for StreamConsumer<T> {
    fn drop(&mut self) {
        // Without close: the task stores what was processed and ends.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(None);
        }
    }
}

impl<T: DeserializeOwned> futures::Stream for StreamConsumer<T> {
    type Item = Result<StreamMessage<T>, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            // Only the task's last word is an error (it gave up): the
            // stream ends after it.
            Poll::Ready(Some(Err(e))) => {
                this.ended = true;
                this.rx.close();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok((offset, message)))) => {
                if let Some(prev) = this.last.replace(offset) {
                    this.shared.processed.store(prev + 1, Ordering::Release);
                    let n = this.shared.processed_count.fetch_add(1, Ordering::AcqRel) + 1;
                    if n.is_multiple_of(this.shared.store_every) {
                        this.shared.store_now.notify_one();
                    }
                }
                Poll::Ready(Some(
                    decode(&message).map(|body| StreamMessage { body, offset }),
                ))
            }
        }
    }
}

fn decode<T: DeserializeOwned>(message: &Message) -> Result<T, Error> {
    let mut props = rabbitkit::BasicProperties::default();
    if let Some(ct) = message.properties().and_then(|p| p.content_type.as_ref()) {
        props = props.with_content_type(ct.as_str().into());
    }
    let body = message.data().unwrap_or_default();
    codec::decode(body, &props)
        .map_err(|e| Error::new(ErrorKind::Decode, e.to_string()).with_source(e))
}

/// Subscribes on `client` as the next connection: after the last offset
/// handed on, or at the start offset when none was.
async fn subscribe(
    shared: &Arc<Shared>,
    client: &Client,
    tx: &mpsc::Sender<Item>,
    control: &mpsc::UnboundedSender<Control>,
) -> Result<(), Error> {
    let guard = shared.forward.lock().await;
    let generation = shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
    let next = shared.forwarded.load(Ordering::Acquire);
    let offset = if next > 0 {
        OffsetSpecification::Offset(next)
    } else {
        shared.start.to_client()
    };
    drop(guard);
    let (h_shared, h_tx, h_control, h_client) =
        (shared.clone(), tx.clone(), control.clone(), client.clone());
    client
        .set_handler(move |item: MessageResult| {
            let (shared, tx, control, client) = (
                h_shared.clone(),
                h_tx.clone(),
                h_control.clone(),
                h_client.clone(),
            );
            async move {
                on_message(&shared, generation, &tx, &control, &client, item).await;
                Ok(())
            }
        })
        .await;
    let mut props = HashMap::new();
    if shared.single_active
        && let Some(name) = &shared.name
    {
        props.insert("single-active-consumer".to_owned(), "true".to_owned());
        props.insert("name".to_owned(), name.clone());
    }
    props.extend(shared.properties.iter().cloned());
    if let Some(f) = &shared.filter {
        props.extend(f.properties());
    }
    let res = client
        .subscribe(SUBSCRIPTION, &shared.stream, offset, INITIAL_CREDIT, props)
        .await
        .map_err(|e| client_error("subscribe", e))?;
    if !res.is_ok() {
        return Err(Error::from_code(
            res.code(),
            &format!("subscribe to {}", shared.stream),
        ));
    }
    Ok(())
}

async fn on_message(
    shared: &Shared,
    generation: u64,
    tx: &mpsc::Sender<Item>,
    control: &mpsc::UnboundedSender<Control>,
    client: &Client,
    item: MessageResult,
) {
    let current = || shared.generation.load(Ordering::Acquire) == generation;
    match item {
        Some(Ok(response)) => match response.kind() {
            ResponseKind::Deliver(d) => {
                let guard = shared.forward.lock().await;
                if !current() {
                    return;
                }
                for (offset, m) in (d.chunk_first_offset..).zip(d.messages) {
                    let next = shared.forwarded.load(Ordering::Acquire);
                    let skip = match shared.start {
                        OffsetSpec::Offset(o) => offset < o,
                        _ => false,
                    };
                    // The post-filter: a chunk holds messages of other values.
                    let wanted = shared.filter.as_ref().is_none_or(|f| f.matches(&m));
                    if (next == 0 || offset >= next) && !skip {
                        if !wanted {
                            shared.forwarded.store(offset + 1, Ordering::Release);
                            continue;
                        }
                        if tx.send(Ok((offset, m))).await.is_err() {
                            return;
                        }
                        shared.forwarded.store(offset + 1, Ordering::Release);
                    }
                }
                drop(guard);
                let _ = client.credit(SUBSCRIPTION, 1).await;
            }
            ResponseKind::ConsumerUpdate(u) => {
                let _ = control.send(Control::Update {
                    generation,
                    correlation_id: u.get_correlation_id(),
                    active: u.is_active() == 1,
                });
            }
            ResponseKind::MetadataUpdate(u) => {
                let _ = control.send(Control::Broken(
                    generation,
                    format!("metadata update: {u:?}"),
                ));
            }
            _ => {}
        },
        Some(Err(e)) => {
            let _ = control.send(Control::Broken(
                generation,
                format!("connection error: {e}"),
            ));
        }
        None => {
            let _ = control.send(Control::Broken(generation, "connection closed".to_owned()));
        }
    }
}

/// Stores `processed - 1` when it moved past `stored`.
async fn store(shared: &Shared, client: &Client, stored: &mut Option<u64>, processed: u64) {
    let Some(name) = &shared.name else { return };
    if processed == 0 || *stored >= Some(processed - 1) {
        return;
    }
    let offset = processed - 1;
    match client.store_offset(name, &shared.stream, offset).await {
        Ok(()) => *stored = Some(offset),
        Err(e) => tracing::debug!(error = %e, "storing the offset failed"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    shared: Arc<Shared>,
    mut client: Client,
    node: String,
    tx: mpsc::Sender<Item>,
    control_tx: mpsc::UnboundedSender<Control>,
    mut control: mpsc::UnboundedReceiver<Control>,
    mut stop: oneshot::Receiver<Option<u64>>,
    mut stored: Option<u64>,
) -> Result<(), Error> {
    tracing::debug!(stream = %shared.stream, node = %node, "stream consumer subscribed");
    let mut tick = tokio::time::interval(shared.store_interval);
    tick.tick().await;
    loop {
        let why = loop {
            tokio::select! {
                last = &mut stop => {
                    // A graceful stop stores the last message handed out;
                    // a drop what was processed.
                    let processed = match last {
                        Ok(Some(o)) => o + 1,
                        _ => shared.processed.load(Ordering::Acquire),
                    };
                    store(&shared, &client, &mut stored, processed).await;
                    let _ = client.unsubscribe(SUBSCRIPTION).await;
                    let _ = client.close().await;
                    return Ok(());
                }
                _ = tick.tick() => {
                    store(&shared, &client, &mut stored, shared.processed.load(Ordering::Acquire)).await;
                }
                _ = shared.store_now.notified() => {
                    store(&shared, &client, &mut stored, shared.processed.load(Ordering::Acquire)).await;
                }
                c = control.recv() => match c {
                    Some(Control::Broken(g, why)) if g == shared.generation.load(Ordering::Acquire) => break why,
                    Some(Control::Broken(..)) => {}
                    Some(Control::Update { generation, correlation_id, active }) => {
                        if generation != shared.generation.load(Ordering::Acquire) {
                            continue;
                        }
                        let spec = if active {
                            resume_spec(&shared, &client).await
                        } else {
                            // Another consumer takes over from the stored
                            // offset: store what was processed first.
                            store(&shared, &client, &mut stored, shared.processed.load(Ordering::Acquire)).await;
                            OffsetSpecification::Next
                        };
                        if active && let OffsetSpecification::Offset(o) = spec {
                            // Deliveries restart at what the broker is told now.
                            let _guard = shared.forward.lock().await;
                            shared.forwarded.store(o, Ordering::Release);
                        }
                        // rabbitmq-stream-client waits for a reply to this
                        // answer, which the broker never sends: answered
                        // from a task of its own, bounded.
                        let c = client.clone();
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(
                                Duration::from_secs(5),
                                c.consumer_update(correlation_id, spec),
                            )
                            .await;
                        });
                    }
                    None => return Ok(()),
                },
            }
        };
        let lost = Instant::now();
        let _ = shared.events.send(StreamEvent::Disconnected {
            stream: shared.stream.clone(),
            reason: why,
        });
        {
            let old = client;
            tokio::spawn(async move {
                let _ = old.close().await;
            });
        }
        let node_now;
        loop {
            let (c, n) = match shared
                .client
                .connect_with_retry(&shared.stream, Role::Replica, DELETED_GRACE)
                .await
            {
                Ok(x) => x,
                Err(e) => {
                    let _ = shared.events.send(StreamEvent::GaveUp {
                        stream: shared.stream.clone(),
                        reason: e.to_string(),
                    });
                    let _ = tx.send(Err(Error::new(e.kind(), e.to_string()))).await;
                    return Err(e);
                }
            };
            match subscribe(&shared, &c, &tx, &control_tx).await {
                Ok(()) => {
                    client = c;
                    node_now = n;
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "subscribing again failed; retrying");
                    let _ = c.close().await;
                    if lost.elapsed() > shared.client.options().reconnect_for {
                        let _ = tx.send(Err(Error::new(e.kind(), e.to_string()))).await;
                        return Err(e);
                    }
                    tokio::time::sleep(shared.client.options().reconnect_min).await;
                }
            }
        }
        let _ = shared.events.send(StreamEvent::Reconnected {
            stream: shared.stream.clone(),
            node: node_now,
            downtime: lost.elapsed(),
        });
    }
}

/// Where an activated single active consumer starts: after the offset
/// stored under its name, else the start offset.
async fn resume_spec(shared: &Shared, client: &Client) -> OffsetSpecification {
    if let Some(name) = &shared.name
        && let Ok(o) = client.query_offset(name.clone(), &shared.stream).await
    {
        return OffsetSpecification::Offset(o + 1);
    }
    shared.start.to_client()
}
