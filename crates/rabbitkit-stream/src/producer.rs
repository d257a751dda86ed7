//! The producer: typed bodies, confirms, batching, deduplication by name,
//! failover.
//!
//! One task (the writer) owns the connection: it takes messages in the
//! order of their publishing ids, packs them into publish frames (by count
//! and by bytes, never past the frame size), and on a failure reconnects to
//! the stream's leader, declares the publisher under the same name and
//! re-sends every unconfirmed message with its original id, in order, before
//! anything new. The broker drops ids it already has (and confirms them),
//! so a message is stored once.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use rabbitmq_stream_client::types::{Message, MessageResult, ResponseKind};
use rabbitmq_stream_client::{Client, ClientMessage};
use serde::Serialize;
use tokio::sync::{Notify, oneshot};

use crate::client::{DELETED_GRACE, MISSING_GRACE, Role, StreamClient, check_name, client_error};
use crate::error::{Error, ErrorKind};
use crate::events::{self, Events, StreamEvent};

/// Bytes of a publish frame besides the messages (size, key, version,
/// publisher id, count) and per message besides its AMQP 1.0 body section
/// (publishing id, length, the sections' headers and properties), rounded up.
const FRAME_OVERHEAD: usize = 64;
const MESSAGE_OVERHEAD: usize = 128;
const PUBLISHER_ID: u8 = 1;

/// Builds a [`StreamProducer`]; from [`StreamClient::producer`].
#[must_use]
pub struct ProducerBuilder<T> {
    client: StreamClient,
    stream: String,
    name: String,
    filter_value: Option<FilterValue<T>>,
    _t: PhantomData<fn(&T)>,
}

/// How a producer gets a message's filter value.
pub(crate) type FilterValue<T> = Arc<dyn Fn(&T) -> Option<String> + Send + Sync>;

impl<T> std::fmt::Debug for ProducerBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerBuilder")
            .field("stream", &self.stream)
            .field("name", &self.name)
            .finish()
    }
}

impl<T> ProducerBuilder<T> {
    pub(crate) fn new(client: StreamClient, stream: &str, name: &str) -> Self {
        ProducerBuilder {
            client,
            stream: stream.to_owned(),
            name: name.to_owned(),
            filter_value: None,
            _t: PhantomData,
        }
    }

    /// Gives every message the filter value `f` returns for it (RabbitMQ
    /// 3.13+): the broker keeps a Bloom filter of each chunk's values, and
    /// a consumer with a [`ConsumerFilter`](crate::ConsumerFilter) is sent
    /// only the chunks that may hold its values (it drops the rest of a
    /// chunk itself). `None` leaves a message without a value. On a broker
    /// without filtering, [`build`](Self::build) is an
    /// [`ErrorKind::FilteringUnsupported`] error.
    ///
    /// ```no_run
    /// # #[derive(serde::Serialize)] struct Order { region: String }
    /// # async fn f(client: rabbitkit_stream::StreamClient) -> Result<(), rabbitkit_stream::Error> {
    /// let producer = client
    ///     .producer::<Order>("orders", "order-writer")
    ///     .filter_value(|order| Some(order.region.clone()))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn filter_value(
        mut self,
        f: impl Fn(&T) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.filter_value = Some(Arc::new(f));
        self
    }

    /// The same, shared (a super stream's producers of every partition).
    pub(crate) fn shared_filter_value(mut self, f: Option<FilterValue<T>>) -> Self {
        self.filter_value = f;
        self
    }
}

impl<T: Serialize> ProducerBuilder<T> {
    /// Connects to the stream's leader and declares the publisher under
    /// its name; the next publishing id follows the last one the broker
    /// stored under that name (so a restarted application continues its
    /// sequence).
    pub async fn build(self) -> Result<StreamProducer<T>, Error> {
        check_name("stream", &self.stream)?;
        check_name("producer", &self.name)?;
        let (client, node) = self
            .client
            .connect_with_retry(&self.stream, Role::Leader, MISSING_GRACE)
            .await?;
        if self.filter_value.is_some() && !client.filtering_supported() {
            let _ = client.close().await;
            return Err(crate::filter::unsupported());
        }
        let name_guard = match crate::names::NameGuard::take(&self.client, &self.stream, &self.name)
        {
            Ok(g) => g,
            Err(e) => {
                let _ = client.close().await;
                return Err(e);
            }
        };
        let shared = Arc::new(Shared {
            stream: self.stream,
            name: self.name,
            client: self.client,
            state: Mutex::new(State {
                next_id: 1,
                unconfirmed: BTreeMap::new(),
                outbox: VecDeque::new(),
                generation: 0,
                broken: None,
                closing: false,
                failed: None,
            }),
            wake: Notify::new(),
            events: events::channel(),
            frame_limit: 0,
            publish_version: if self.filter_value.is_some() { 2 } else { 1 },
        });
        let mut shared = shared;
        Arc::get_mut(&mut shared)
            .expect("not shared yet")
            .frame_limit = shared.client.options().max_frame_size as usize - FRAME_OVERHEAD;
        let seq = match declare(&shared, &client, 0).await {
            Ok(seq) => seq,
            Err(e) => {
                let _ = client.close().await;
                return Err(e);
            }
        };
        shared.state.lock().expect("state").next_id = seq + 1;
        // The name is held until the writer has drained and closed, not
        // only until the handle is dropped.
        let write = writer(shared.clone(), client, node);
        let writer = tokio::spawn(async move {
            write.await;
            drop(name_guard);
        });
        Ok(StreamProducer {
            shared,
            writer: Some(writer),
            filter_value: self.filter_value,
            _t: PhantomData,
        })
    }
}

/// A typed producer of a stream, named for deduplication.
///
/// - Every message gets the next **publishing id** of the producer's name;
///   [`send`](Self::send) returns when the broker confirms it.
/// - On a connection loss or a node's death the producer reconnects with
///   back-off over the endpoints to the stream's (new) leader, declares
///   itself under the same name and re-sends every unconfirmed message with
///   its original id, in order. The broker drops the ids it already has:
///   **a confirmed message is stored once**, never twice.
/// - A stream deleted under the producer fails its waiting and later
///   sends with [`ErrorKind::StreamNotFound`] (a few seconds after, not
///   after the reconnection limit).
/// - Messages are packed into publish frames of up to
///   [`StreamOptions::batch_size`](crate::StreamOptions::batch_size)
///   messages and never more bytes than the frame size; a message that
///   cannot fit is an [`ErrorKind::TooLarge`] error before anything is sent.
/// - Bodies are encoded as rabbitkit's codec encodes them (a string as
///   plain text, everything else as JSON), with the AMQP 1.0 `content-type`.
///
/// Only one live producer may use a name on a stream: two would share one
/// sequence of ids, and the broker would drop the messages of one as
/// duplicates (and confirm them). Building a second producer of the same
/// name and stream while the first is open, in the same process, fails with
/// [`ErrorKind::ProducerNameInUse`]; the name is free again once the first
/// is closed (or, dropped, once it has drained). The broker itself accepts
/// the same name from two connections (RabbitMQ 4.3: both declarations
/// succeed and both are told the same last id), so across processes keeping
/// names unique is the application's part.
pub struct StreamProducer<T> {
    shared: Arc<Shared>,
    writer: Option<tokio::task::JoinHandle<()>>,
    filter_value: Option<FilterValue<T>>,
    _t: PhantomData<fn(&T)>,
}

impl<T> std::fmt::Debug for StreamProducer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamProducer")
            .field("stream", &self.shared.stream)
            .field("name", &self.shared.name)
            .finish()
    }
}

struct Shared {
    stream: String,
    name: String,
    client: StreamClient,
    state: Mutex<State>,
    /// Wakes the writer: new messages, a broken connection, closing.
    wake: Notify,
    events: Events,
    frame_limit: usize,
    /// 2 when messages carry filter values (the publish command's version
    /// with them), else 1.
    publish_version: u16,
}

struct State {
    next_id: u64,
    unconfirmed: BTreeMap<u64, Pending>,
    /// Ids not yet written on the current connection, ascending.
    outbox: VecDeque<u64>,
    /// Of the connection the writer uses; confirms of older ones are ignored.
    generation: u64,
    /// Set by the connection's handler: why it is unusable.
    broken: Option<(u64, String)>,
    closing: bool,
    /// The producer gave up: every later send fails with this.
    failed: Option<(ErrorKind, String)>,
}

struct Pending {
    message: Message,
    filter: Option<String>,
    size: usize,
    done: Option<oneshot::Sender<Result<(), Error>>>,
}

/// The confirm of one message: resolves when the broker confirms it (or
/// the producer gives up on it). From [`StreamProducer::publish`].
#[must_use = "a Confirm does nothing unless awaited; drop it to not wait"]
pub struct Confirm {
    rx: Option<oneshot::Receiver<Result<(), Error>>>,
    timeout: Pin<Box<tokio::time::Sleep>>,
    early: Option<Error>,
}

impl std::fmt::Debug for Confirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Confirm").finish_non_exhaustive()
    }
}

impl Future for Confirm {
    type Output = Result<(), Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(e) = self.early.take() {
            return Poll::Ready(Err(e));
        }
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(Err(Error::new(ErrorKind::Closed, "confirm polled again")));
        };
        if let Poll::Ready(r) = Pin::new(rx).poll(cx) {
            self.rx = None;
            return Poll::Ready(r.unwrap_or_else(|_| {
                Err(Error::new(ErrorKind::Closed, "the producer was closed"))
            }));
        }
        if self.timeout.as_mut().poll(cx).is_ready() {
            self.rx = None;
            return Poll::Ready(Err(Error::new(
                ErrorKind::Timeout,
                "no confirm within the publish timeout (the message stays queued for re-sending)",
            )));
        }
        Poll::Pending
    }
}

impl<T: Serialize> StreamProducer<T> {
    /// Sends `value` and waits for its confirm.
    pub async fn send(&self, value: &T) -> Result<(), Error> {
        self.publish(value).await
    }

    /// Queues `value` and returns its [`Confirm`] at once, so many messages
    /// can be in flight (they are written in the order of the calls).
    ///
    /// ```no_run
    /// # async fn f(producer: rabbitkit_stream::StreamProducer<u64>) -> Result<(), rabbitkit_stream::Error> {
    /// let confirms: Vec<_> = (0..10_000u64).map(|n| producer.publish(&n)).collect();
    /// for c in confirms {
    ///     c.await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn publish(&self, value: &T) -> Confirm {
        let timeout = Box::pin(tokio::time::sleep(
            self.shared.client.options().publish_timeout,
        ));
        match self.enqueue(std::slice::from_ref(value)) {
            Ok(mut rxs) => Confirm {
                rx: rxs.pop(),
                timeout,
                early: None,
            },
            Err(e) => Confirm {
                rx: None,
                timeout,
                early: Some(e),
            },
        }
    }

    /// Sends every value of `values` (in one go, in order) and waits for
    /// all their confirms; the first failure is returned. Nothing is sent
    /// when one of them cannot be encoded or is too large.
    pub async fn send_batch(&self, values: &[T]) -> Result<(), Error> {
        let rxs = self.enqueue(values)?;
        let timeout = self.shared.client.options().publish_timeout;
        let all = async {
            let mut first = Ok(());
            for rx in rxs {
                let r = rx.await.unwrap_or_else(|_| {
                    Err(Error::new(ErrorKind::Closed, "the producer was closed"))
                });
                if first.is_ok() {
                    first = r;
                }
            }
            first
        };
        tokio::time::timeout(timeout, all).await.unwrap_or_else(|_| {
            Err(Error::new(
                ErrorKind::Timeout,
                "no confirm within the publish timeout (the messages stay queued for re-sending)",
            ))
        })
    }

    fn encode(&self, value: &T) -> Result<Encoded, Error> {
        let (body, props) = rabbitkit::codec::encode(value, false)
            .map_err(|e| Error::new(ErrorKind::Encode, e.to_string()))?;
        let filter = self.filter_value.as_ref().and_then(|f| f(value));
        // The value goes twice: in the publish frame and in the message.
        let size = body.len() + MESSAGE_OVERHEAD + filter.as_ref().map_or(0, |f| 64 + 2 * f.len());
        if size > self.shared.frame_limit {
            return Err(Error::new(
                ErrorKind::TooLarge {
                    size,
                    limit: self.shared.frame_limit,
                },
                format!(
                    "a message of {size} bytes (encoded) does not fit a stream frame of {} bytes",
                    self.shared.frame_limit
                ),
            ));
        }
        let text = props
            .content_type()
            .as_ref()
            .is_some_and(|c| c.as_str() == rabbitkit::codec::TEXT);
        Ok(Encoded {
            body,
            text,
            size,
            filter,
        })
    }

    fn enqueue(&self, values: &[T]) -> Result<Vec<oneshot::Receiver<Result<(), Error>>>, Error> {
        let encoded = values
            .iter()
            .map(|v| self.encode(v))
            .collect::<Result<Vec<_>, _>>()?;
        let mut rxs = Vec::with_capacity(encoded.len());
        {
            let mut st = self.shared.state.lock().expect("state");
            if let Some((kind, why)) = &st.failed {
                return Err(Error::new(*kind, why.clone()));
            }
            if st.closing {
                return Err(Error::new(ErrorKind::Closed, "the producer is closing"));
            }
            for Encoded {
                body,
                text,
                size,
                filter,
            } in encoded
            {
                let id = st.next_id;
                st.next_id += 1;
                let (tx, rx) = oneshot::channel();
                let content_type = if text {
                    rabbitkit::codec::TEXT
                } else {
                    rabbitkit::codec::JSON
                };
                let mut builder = Message::builder()
                    .properties()
                    .content_type(content_type)
                    .message_builder();
                // The value is in the chunk's Bloom filter only; consumers
                // post-filter on this copy in the message.
                if let Some(value) = &filter {
                    builder = builder
                        .application_properties()
                        .insert(crate::FILTER_VALUE_PROPERTY, value.as_str())
                        .message_builder();
                }
                let message = builder.body(body).publishing_id(id).build();
                st.unconfirmed.insert(
                    id,
                    Pending {
                        message,
                        filter,
                        size,
                        done: Some(tx),
                    },
                );
                st.outbox.push_back(id);
                rxs.push(rx);
            }
        }
        self.shared.wake.notify_one();
        Ok(rxs)
    }
}

struct Encoded {
    body: Vec<u8>,
    text: bool,
    size: usize,
    filter: Option<String>,
}

impl<T> StreamProducer<T> {
    /// The stream written to.
    pub fn stream(&self) -> &str {
        &self.shared.stream
    }

    /// The producer's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// How many messages wait for their confirm.
    pub fn unconfirmed(&self) -> usize {
        self.shared.state.lock().expect("state").unconfirmed.len()
    }

    /// The producer's events (disconnections, reconnections, re-sends).
    pub fn events(&self) -> impl futures::Stream<Item = StreamEvent> + Unpin + use<T> {
        events::subscribe(&self.shared.events)
    }

    /// Waits (up to the publish timeout) for every message sent to be
    /// confirmed, then closes the connection. Messages still unconfirmed
    /// then fail with [`ErrorKind::Closed`].
    pub async fn close(mut self) -> Result<(), Error> {
        self.shared.state.lock().expect("state").closing = true;
        self.shared.wake.notify_one();
        if let Some(w) = self.writer.take() {
            let _ = w.await;
        }
        match &self.shared.state.lock().expect("state").failed {
            Some((kind, why)) => Err(Error::new(*kind, why.clone())),
            None => Ok(()),
        }
    }
}

impl<T> Drop for StreamProducer<T> {
    fn drop(&mut self) {
        if self.writer.is_some() {
            self.shared.state.lock().expect("state").closing = true;
            self.shared.wake.notify_one();
        }
    }
}

/// Declares the publisher on `client`, installs the confirm handler of
/// connection `generation`; the last publishing id stored under the name.
async fn declare(shared: &Arc<Shared>, client: &Client, generation: u64) -> Result<u64, Error> {
    let handler_shared = shared.clone();
    client
        .set_handler(move |item: MessageResult| {
            let shared = handler_shared.clone();
            async move {
                on_message(&shared, generation, item);
                Ok(())
            }
        })
        .await;
    let res = client
        .declare_publisher(PUBLISHER_ID, Some(shared.name.clone()), &shared.stream)
        .await
        .map_err(|e| client_error("declare publisher", e))?;
    if !res.is_ok() {
        return Err(Error::from_code(
            res.code(),
            &format!("declare producer {} on {}", shared.name, shared.stream),
        ));
    }
    client
        .query_publisher_sequence(&shared.name, &shared.stream)
        .await
        .map_err(|e| client_error("query publisher sequence", e))
}

fn on_message(shared: &Shared, generation: u64, item: MessageResult) {
    let broken = match item {
        Some(Ok(response)) => match response.kind_ref() {
            ResponseKind::PublishConfirm(confirm) => {
                let mut st = shared.state.lock().expect("state");
                for id in &confirm.publishing_ids {
                    if let Some(p) = st.unconfirmed.remove(id)
                        && let Some(tx) = p.done
                    {
                        let _ = tx.send(Ok(()));
                    }
                }
                let drained = st.closing && st.unconfirmed.is_empty();
                drop(st);
                if drained {
                    shared.wake.notify_one();
                }
                None
            }
            ResponseKind::PublishError(errors) => {
                let mut st = shared.state.lock().expect("state");
                for e in &errors.publishing_errors {
                    if let Some(p) = st.unconfirmed.remove(&e.publishing_id)
                        && let Some(tx) = p.done
                    {
                        let _ = tx.send(Err(Error::from_code(&e.error_code, "publish")));
                    }
                }
                None
            }
            ResponseKind::MetadataUpdate(update) => {
                Some(format!("metadata update from the broker: {update:?}"))
            }
            _ => None,
        },
        Some(Err(e)) => Some(format!("connection error: {e}")),
        None => Some("connection closed".to_owned()),
    };
    if let Some(why) = broken {
        let mut st = shared.state.lock().expect("state");
        if st.generation == generation && st.broken.is_none() {
            st.broken = Some((generation, why));
            drop(st);
            shared.wake.notify_one();
        }
    }
}

enum Next {
    Write(Vec<ClientMessage>),
    Broken(String),
    Wait,
    Done,
}

fn next_batch(shared: &Shared, batch_size: usize) -> Next {
    let mut st = shared.state.lock().expect("state");
    if let Some((_, why)) = st.broken.take() {
        return Next::Broken(why);
    }
    if st.outbox.is_empty() {
        return if st.closing && st.unconfirmed.is_empty() {
            Next::Done
        } else {
            Next::Wait
        };
    }
    let mut batch = Vec::with_capacity(st.outbox.len().min(batch_size));
    let mut bytes = 0;
    while let Some(&id) = st.outbox.front() {
        let Some(p) = st.unconfirmed.get(&id) else {
            // Failed or confirmed meanwhile.
            st.outbox.pop_front();
            continue;
        };
        if !batch.is_empty() && (batch.len() == batch_size || bytes + p.size > shared.frame_limit) {
            break;
        }
        bytes += p.size;
        batch.push(ClientMessage::new(id, p.message.clone(), p.filter.clone()));
        st.outbox.pop_front();
    }
    Next::Write(batch)
}

async fn writer(shared: Arc<Shared>, mut client: Client, mut node: String) {
    let options = shared.client.options().clone();
    let closing_deadline = || tokio::time::Instant::now() + options.publish_timeout;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        // Write until the connection breaks or the producer is done.
        let why = loop {
            if deadline.is_none() && shared.state.lock().expect("state").closing {
                deadline = Some(closing_deadline());
            }
            match next_batch(&shared, options.batch_size) {
                Next::Write(batch) => {
                    if let Err(e) = client
                        .publish(PUBLISHER_ID, batch, shared.publish_version)
                        .await
                    {
                        break format!("publish failed: {e}");
                    }
                }
                Next::Broken(why) => break why,
                Next::Done => {
                    let _ = client.delete_publisher(PUBLISHER_ID).await;
                    let _ = client.close().await;
                    return;
                }
                Next::Wait => match deadline {
                    Some(d) => {
                        if tokio::time::timeout_at(d, shared.wake.notified())
                            .await
                            .is_err()
                        {
                            fail_all(
                                &shared,
                                ErrorKind::Closed,
                                "closed before the broker confirmed it",
                            );
                            let _ = client.close().await;
                            return;
                        }
                    }
                    None => shared.wake.notified().await,
                },
            }
        };
        // The connection is gone (or the leader moved): a new one.
        let lost = Instant::now();
        tracing::info!(stream = %shared.stream, node = %node, reason = %why, "stream producer disconnected");
        let _ = shared.events.send(StreamEvent::Disconnected {
            stream: shared.stream.clone(),
            reason: why.clone(),
        });
        {
            let old = client;
            tokio::spawn(async move {
                let _ = old.close().await;
            });
        }
        let (new_client, new_node, generation) = loop {
            let attempt = shared
                .client
                .connect_with_retry(&shared.stream, Role::Leader, DELETED_GRACE)
                .await;
            let (c, n) = match attempt {
                Ok(x) => x,
                Err(e) => {
                    let _ = shared.events.send(StreamEvent::GaveUp {
                        stream: shared.stream.clone(),
                        reason: e.to_string(),
                    });
                    fail_all(&shared, e.kind(), &e.to_string());
                    return;
                }
            };
            let generation = {
                let mut st = shared.state.lock().expect("state");
                st.generation += 1;
                st.broken = None;
                st.generation
            };
            match declare(&shared, &c, generation).await {
                Ok(_) => break (c, n, generation),
                Err(e) => {
                    tracing::debug!(error = %e, "declaring the producer again failed; retrying");
                    let _ = c.close().await;
                    if lost.elapsed() > options.reconnect_for {
                        fail_all(&shared, e.kind(), &e.to_string());
                        return;
                    }
                    tokio::time::sleep(options.reconnect_min).await;
                }
            }
        };
        let _ = generation;
        client = new_client;
        node = new_node;
        // Every unconfirmed message again, in id order, before anything new.
        let count = {
            let mut st = shared.state.lock().expect("state");
            let ids: VecDeque<u64> = st.unconfirmed.keys().copied().collect();
            let count = ids.len();
            st.outbox = ids;
            count
        };
        let _ = shared.events.send(StreamEvent::Reconnected {
            stream: shared.stream.clone(),
            node: node.clone(),
            downtime: lost.elapsed(),
        });
        if count > 0 {
            let _ = shared.events.send(StreamEvent::Resent {
                stream: shared.stream.clone(),
                count,
            });
        }
        tracing::info!(stream = %shared.stream, node = %node, resent = count, "stream producer reconnected");
    }
}

fn fail_all(shared: &Shared, kind: ErrorKind, why: &str) {
    let mut st = shared.state.lock().expect("state");
    st.failed = Some((kind, why.to_owned()));
    st.outbox.clear();
    for (_, p) in std::mem::take(&mut st.unconfirmed) {
        if let Some(tx) = p.done {
            let _ = tx.send(Err(Error::new(kind, why.to_owned())));
        }
    }
}
