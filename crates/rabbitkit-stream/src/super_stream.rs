//! Super streams (RabbitMQ 3.11+; declared by the client from 3.13): a
//! partitioned stream, its producer routing by key and its consumers.
//!
//! A super stream `invoices` of 3 partitions is a direct exchange
//! `invoices` bound to the streams `invoices-0`, `invoices-1`,
//! `invoices-2` (binding keys `0`, `1`, `2`), or, declared with binding
//! keys, to `invoices-<key>` by `<key>`. The producer picks a partition per
//! message from its routing key:
//! - [`Routing::Hash`] (the default): murmur3 (32-bit, seed 104729) of the
//!   key's UTF-8 bytes as an unsigned number, modulo the partition count,
//!   over the partitions in the broker's order: what the Java (since 2022,
//!   `Integer.remainderUnsigned`), .NET, Go and Rust stream clients do, so a
//!   key lands in the same partition whichever of them writes it.
//! - [`Routing::Key`]: the partitions the broker's exchange binds to the key
//!   (asked once per key with the `route` command).
//!
//! Each partition has its own [`StreamProducer`] under the producer's name,
//! so deduplication and failover work per partition. The consumer reads
//! every partition; with a name and single active consumer, the consumers
//! of that name share the partitions (one active per partition), and when
//! one closes, another takes its partitions over after the offsets it
//! stored.

use std::collections::HashMap;
use std::future::Future;
use std::io::Cursor;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use rabbitmq_stream_client::Client;
use rabbitmq_stream_client::types::ResponseCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::{StreamClient, StreamSpec, check_name, client_error};
use crate::consumer::{OffsetSpec, StreamConsumer};
use crate::error::{Error, ErrorKind};
use crate::filter::ConsumerFilter;
use crate::producer::{Confirm, StreamProducer};

/// The most partitions [`SuperStreamSpec`] accepts. Each partition is a
/// replicated stream with its own leader and segment files; thousands of
/// them take the cluster minutes to create and are more likely a typo than
/// a design.
pub const MAX_PARTITIONS: usize = 1000;

/// The seed of the stream clients' murmur3 routing.
const HASH_SEED: u32 = 104_729;

/// A super stream to declare: its partitions and their retention.
///
/// ```no_run
/// # async fn f(client: rabbitkit_stream::StreamClient) -> Result<(), rabbitkit_stream::Error> {
/// use std::time::Duration;
/// use rabbitkit_stream::SuperStreamSpec;
/// // invoices-0, invoices-1, invoices-2
/// client
///     .declare_super_stream(SuperStreamSpec::new("invoices", 3).max_age(Duration::from_secs(3600)))
///     .await?;
/// // regions-amer, regions-emea, regions-apac, bound by "amer", "emea", "apac"
/// client
///     .declare_super_stream(SuperStreamSpec::with_keys("regions", ["amer", "emea", "apac"]))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct SuperStreamSpec {
    name: String,
    keys: Vec<String>,
    /// The partitions' arguments (its name is unused).
    partition: StreamSpec,
}

impl SuperStreamSpec {
    /// A super stream of `partitions` partitions, `<name>-0` to
    /// `<name>-<partitions - 1>`, bound by `0` to `<partitions - 1>`.
    pub fn new(name: impl Into<String>, partitions: usize) -> Self {
        SuperStreamSpec {
            name: name.into(),
            keys: (0..partitions).map(|i| i.to_string()).collect(),
            partition: StreamSpec::new(""),
        }
    }

    /// A super stream with a partition `<name>-<key>` per binding key.
    pub fn with_keys<S: Into<String>>(
        name: impl Into<String>,
        keys: impl IntoIterator<Item = S>,
    ) -> Self {
        SuperStreamSpec {
            name: name.into(),
            keys: keys.into_iter().map(Into::into).collect(),
            partition: StreamSpec::new(""),
        }
    }

    /// The super stream's name (its exchange's).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The partitions' names, in order.
    pub fn partitions(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| format!("{}-{k}", self.name))
            .collect()
    }

    /// Each partition's `max-age` (see [`StreamSpec::max_age`]).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.partition = self.partition.max_age(age);
        self
    }

    /// Each partition's `max-length-bytes` (see [`StreamSpec::max_length_bytes`]).
    pub fn max_length_bytes(mut self, bytes: u64) -> Self {
        self.partition = self.partition.max_length_bytes(bytes);
        self
    }

    /// Each partition's segment size (see [`StreamSpec::max_segment_size_bytes`]).
    pub fn max_segment_size_bytes(mut self, bytes: u64) -> Self {
        self.partition = self.partition.max_segment_size_bytes(bytes);
        self
    }

    /// Each partition's `initial-cluster-size` (see [`StreamSpec::initial_cluster_size`]).
    pub fn initial_cluster_size(mut self, nodes: u16) -> Self {
        self.partition = self.partition.initial_cluster_size(nodes);
        self
    }

    /// What the broker would refuse or what is surely a mistake, before
    /// the network: no partition, more than [`MAX_PARTITIONS`], an empty or
    /// repeated binding key, a name (or a partition's) of 0 or over 255 bytes.
    fn check(&self) -> Result<(), Error> {
        check_name("super stream", &self.name)?;
        let invalid = |m: String| Err(Error::new(ErrorKind::InvalidInput, m));
        if self.keys.is_empty() {
            return invalid(format!(
                "super stream {} needs at least one partition",
                self.name
            ));
        }
        if self.keys.len() > MAX_PARTITIONS {
            return invalid(format!(
                "super stream {} asks for {} partitions; at most {MAX_PARTITIONS}",
                self.name,
                self.keys.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for k in &self.keys {
            if k.is_empty() || !seen.insert(k) {
                return invalid(format!(
                    "super stream {}: binding key {k:?} is empty or repeated",
                    self.name
                ));
            }
        }
        for p in self.partitions() {
            check_name("partition", &p)?;
        }
        Ok(())
    }
}

/// How a [`SuperStreamProducer`] picks the partition of a routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Routing {
    /// murmur3 of the key modulo the partition count, as the Java, .NET, Go
    /// and Rust stream clients do (see [`hash_partition`]).
    #[default]
    Hash,
    /// The partitions the super stream's exchange binds to the key.
    Key,
}

/// The partition index of `key` among `partitions` partitions with
/// [`Routing::Hash`]: `murmur3_32(utf8(key), seed 104729) % partitions`,
/// the hash taken as an unsigned 32-bit number, as the Java
/// (`Integer.remainderUnsigned`, since its fix of September 2022), .NET, Go
/// and Rust stream clients compute it.
pub fn hash_partition(key: &str, partitions: usize) -> usize {
    let h = murmur3::murmur3_32(&mut Cursor::new(key.as_bytes()), HASH_SEED)
        .expect("reading from memory");
    (h % partitions.max(1) as u32) as usize
}

/// The broker's version from its peer properties, as (major, minor).
async fn broker_version(client: &Client) -> Option<(u32, u32)> {
    parse_version(client.server_properties().await.get("version")?)
}

/// `"4.3.6"` → `(4, 3)`; `None` for what is not a version.
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split(['.', '-', '+']).map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??))
}

async fn require_version(client: &Client, at_least: (u32, u32), what: &str) -> Result<(), Error> {
    match broker_version(client).await {
        Some(v) if v < at_least => Err(Error::new(
            ErrorKind::SuperStreamsUnsupported,
            format!(
                "{what} needs RabbitMQ {}.{}+; the broker is {}.{}",
                at_least.0, at_least.1, v.0, v.1
            ),
        )),
        _ => Ok(()),
    }
}

impl StreamClient {
    /// Declares a super stream: its exchange and partitions, created when
    /// missing (RabbitMQ 3.13+). Declaring again the same partitions is a
    /// no-op; other partitions for an existing name are
    /// [`ErrorKind::Refused`]. Returns once every partition has a leader.
    pub async fn declare_super_stream(&self, spec: SuperStreamSpec) -> Result<(), Error> {
        spec.check()?;
        let (client, _) = self.connect_any().await?;
        let result = declare_on(&client, &spec).await;
        let _ = client.close().await;
        result?;
        for p in spec.partitions() {
            self.wait_for_leader(&p).await;
        }
        Ok(())
    }

    /// Deletes a super stream: its exchange and its partitions with their
    /// messages. A missing one is an [`ErrorKind::StreamNotFound`] error.
    pub async fn delete_super_stream(&self, name: &str) -> Result<(), Error> {
        check_name("super stream", name)?;
        let (client, _) = self.connect_any().await?;
        let result = async {
            require_version(&client, (3, 13), "deleting a super stream").await?;
            let res = client
                .delete_super_stream(name)
                .await
                .map_err(|e| client_error("delete super stream", e))?;
            match res.code() {
                ResponseCode::Ok => Ok(()),
                other => Err(Error::from_code(
                    other,
                    &format!("delete super stream {name}"),
                )),
            }
        }
        .await;
        let _ = client.close().await;
        result
    }

    /// The partitions of super stream `name`, in the broker's order (the
    /// order [`Routing::Hash`] counts in).
    pub async fn super_stream_partitions(&self, name: &str) -> Result<Vec<String>, Error> {
        check_name("super stream", name)?;
        let (client, _) = self.connect_any().await?;
        let result = partitions_on(&client, name).await;
        let _ = client.close().await;
        result
    }

    /// A producer for super stream `super_stream` under `name` (see
    /// [`SuperStreamProducer`]).
    pub fn super_stream_producer<T>(
        &self,
        super_stream: &str,
        name: &str,
    ) -> SuperStreamProducerBuilder<T> {
        SuperStreamProducerBuilder {
            client: self.clone(),
            super_stream: super_stream.to_owned(),
            name: name.to_owned(),
            routing: Routing::Hash,
            filter_value: None,
            _t: PhantomData,
        }
    }

    /// A consumer of every partition of `super_stream` (see
    /// [`SuperStreamConsumer`]).
    pub fn super_stream_consumer<T>(&self, super_stream: &str) -> SuperStreamConsumerBuilder<T> {
        SuperStreamConsumerBuilder {
            client: self.clone(),
            super_stream: super_stream.to_owned(),
            name: None,
            single_active: false,
            offset: OffsetSpec::Next,
            store_every: None,
            filter: None,
            _t: PhantomData,
        }
    }
}

async fn declare_on(client: &Client, spec: &SuperStreamSpec) -> Result<(), Error> {
    require_version(client, (3, 13), "declaring a super stream").await?;
    let args: HashMap<String, String> = spec.partition.args.iter().cloned().collect();
    let wanted = spec.partitions();
    let res = client
        .create_super_stream(&spec.name, wanted.clone(), spec.keys.clone(), args)
        .await
        .map_err(|e| client_error("create super stream", e))?;
    match res.code() {
        ResponseCode::Ok => Ok(()),
        ResponseCode::StreamAlreadyExists => {
            let have = partitions_on(client, &spec.name).await?;
            if have == wanted {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorKind::Refused,
                    format!(
                        "super stream {} exists with partitions {have:?}, not {wanted:?}",
                        spec.name
                    ),
                ))
            }
        }
        ResponseCode::PreconditionFailed => Err(Error::new(
            ErrorKind::Refused,
            format!(
                "the broker refused super stream {} (its name, partitions or arguments, \
                 or a stream or exchange of a partition's name exists)",
                spec.name
            ),
        )),
        other => Err(Error::from_code(
            other,
            &format!("create super stream {}", spec.name),
        )),
    }
}

async fn partitions_on(client: &Client, name: &str) -> Result<Vec<String>, Error> {
    require_version(client, (3, 11), "a super stream").await?;
    let res = client
        .partitions(name.to_owned())
        .await
        .map_err(|e| client_error("super stream partitions", e))?;
    if !res.is_ok() || res.streams.is_empty() {
        return Err(Error::new(
            ErrorKind::StreamNotFound,
            format!("super stream {name} does not exist or has no partition"),
        ));
    }
    Ok(res.streams)
}

/// Builds a [`SuperStreamProducer`]; from [`StreamClient::super_stream_producer`].
#[must_use]
pub struct SuperStreamProducerBuilder<T> {
    client: StreamClient,
    super_stream: String,
    name: String,
    routing: Routing,
    filter_value: Option<crate::producer::FilterValue<T>>,
    _t: PhantomData<fn(&T)>,
}

impl<T> std::fmt::Debug for SuperStreamProducerBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuperStreamProducerBuilder")
            .field("super_stream", &self.super_stream)
            .field("name", &self.name)
            .field("routing", &self.routing)
            .finish()
    }
}

impl<T: Serialize> SuperStreamProducerBuilder<T> {
    /// How a routing key picks its partition: [`Routing::Hash`] by default.
    pub fn routing(mut self, routing: Routing) -> Self {
        self.routing = routing;
        self
    }

    /// Gives every message the filter value `f` returns for it, in every
    /// partition (see [`ProducerBuilder::filter_value`](crate::ProducerBuilder::filter_value)).
    pub fn filter_value(
        mut self,
        f: impl Fn(&T) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.filter_value = Some(std::sync::Arc::new(f));
        self
    }

    /// Finds the partitions and makes a [`StreamProducer`] on each under
    /// the producer's name.
    pub async fn build(self) -> Result<SuperStreamProducer<T>, Error> {
        check_name("producer", &self.name)?;
        let partitions = self
            .client
            .super_stream_partitions(&self.super_stream)
            .await?;
        let mut producers = Vec::with_capacity(partitions.len());
        for p in &partitions {
            let builder = self
                .client
                .producer::<T>(p, &self.name)
                .shared_filter_value(self.filter_value.clone());
            match builder.build().await {
                Ok(producer) => producers.push(producer),
                Err(e) => {
                    for producer in producers {
                        let _ = producer.close().await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(SuperStreamProducer {
            super_stream: self.super_stream,
            partitions,
            producers,
            routing: self.routing,
            routes: Mutex::new(HashMap::new()),
            locator: tokio::sync::Mutex::new(None),
            client: self.client,
        })
    }
}

/// A typed producer of a super stream: each message goes to the partition
/// of its routing key ([`Routing`]), through a [`StreamProducer`] per
/// partition under the producer's name: messages of one key keep their
/// order, deduplication and failover work per partition.
pub struct SuperStreamProducer<T> {
    super_stream: String,
    partitions: Vec<String>,
    producers: Vec<StreamProducer<T>>,
    routing: Routing,
    /// [`Routing::Key`]: the partition indexes of each key asked for.
    routes: Mutex<HashMap<String, Vec<usize>>>,
    /// The connection the `route` command is sent on ([`Routing::Key`]),
    /// opened at the first key.
    locator: tokio::sync::Mutex<Option<Client>>,
    client: StreamClient,
}

impl<T> std::fmt::Debug for SuperStreamProducer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuperStreamProducer")
            .field("super_stream", &self.super_stream)
            .field("partitions", &self.partitions)
            .finish()
    }
}

/// The confirms of one message of a [`SuperStreamProducer`] (one per
/// partition its key routes to): resolves when all are in.
#[must_use = "a confirm does nothing unless awaited; drop it to not wait"]
pub struct SuperConfirm(futures::future::TryJoinAll<Confirm>);

impl std::fmt::Debug for SuperConfirm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuperConfirm").finish_non_exhaustive()
    }
}

impl Future for SuperConfirm {
    type Output = Result<(), Error>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map_ok(|_| ())
    }
}

impl<T: Serialize> SuperStreamProducer<T> {
    /// Routes `value` by `key`, queues it on its partition(s) and returns
    /// its confirm (see [`StreamProducer::publish`]). A key no partition is
    /// bound to ([`Routing::Key`]) is an [`ErrorKind::Unroutable`] error and
    /// nothing is sent.
    ///
    /// ```no_run
    /// # async fn f(producer: rabbitkit_stream::SuperStreamProducer<String>) -> Result<(), rabbitkit_stream::Error> {
    /// let confirm = producer.publish("customer-42", &"invoice 1".to_string()).await?;
    /// confirm.await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish(&self, key: &str, value: &T) -> Result<SuperConfirm, Error> {
        let targets = self.route(key).await?;
        Ok(SuperConfirm(futures::future::try_join_all(
            targets
                .into_iter()
                .map(|i| self.producers[i].publish(value)),
        )))
    }

    /// Sends `value` by `key` and waits for its confirm.
    pub async fn send(&self, key: &str, value: &T) -> Result<(), Error> {
        self.publish(key, value).await?.await
    }

    /// The partition indexes `key` routes to.
    async fn route(&self, key: &str) -> Result<Vec<usize>, Error> {
        match self.routing {
            Routing::Hash => Ok(vec![hash_partition(key, self.partitions.len())]),
            Routing::Key => {
                if let Some(r) = self.routes.lock().expect("routes").get(key) {
                    return Ok(r.clone());
                }
                let streams = self.ask_route(key).await?;
                let idx: Vec<usize> = streams
                    .iter()
                    .filter_map(|s| self.partitions.iter().position(|p| p == s))
                    .collect();
                if idx.is_empty() {
                    return Err(Error::new(
                        ErrorKind::Unroutable,
                        format!(
                            "no partition of super stream {} is bound to routing key {key:?}",
                            self.super_stream
                        ),
                    ));
                }
                self.routes
                    .lock()
                    .expect("routes")
                    .insert(key.to_owned(), idx.clone());
                Ok(idx)
            }
        }
    }

    /// The broker's `route` answer for `key`; on a broken connection, once
    /// more on a new one.
    async fn ask_route(&self, key: &str) -> Result<Vec<String>, Error> {
        let mut locator = self.locator.lock().await;
        let mut last = None;
        for _ in 0..2 {
            let client = match locator.take() {
                Some(c) => c,
                None => self.client.connect_any().await?.0,
            };
            match client
                .route(key.to_owned(), self.super_stream.clone())
                .await
            {
                Ok(r) => {
                    *locator = Some(client);
                    return Ok(if r.is_ok() { r.streams } else { vec![] });
                }
                Err(e) => {
                    let _ = client.close().await;
                    last = Some(e);
                }
            }
        }
        Err(client_error("route", last.expect("two attempts failed")))
    }
}

impl<T> SuperStreamProducer<T> {
    /// The super stream written to.
    pub fn super_stream(&self) -> &str {
        &self.super_stream
    }

    /// Its partitions, in the broker's order.
    pub fn partitions(&self) -> &[String] {
        &self.partitions
    }

    /// How many messages wait for their confirm, over all partitions.
    pub fn unconfirmed(&self) -> usize {
        self.producers.iter().map(StreamProducer::unconfirmed).sum()
    }

    /// Closes every partition's producer (see [`StreamProducer::close`]);
    /// the first error, if any.
    pub async fn close(self) -> Result<(), Error> {
        let mut first = Ok(());
        for p in self.producers {
            let r = p.close().await;
            if first.is_ok() {
                first = r;
            }
        }
        if let Some(c) = self.locator.into_inner() {
            let _ = c.close().await;
        }
        first
    }
}

/// Builds a [`SuperStreamConsumer`]; from [`StreamClient::super_stream_consumer`].
#[must_use]
pub struct SuperStreamConsumerBuilder<T> {
    client: StreamClient,
    super_stream: String,
    name: Option<String>,
    single_active: bool,
    offset: OffsetSpec,
    store_every: Option<(u64, Duration)>,
    filter: Option<ConsumerFilter>,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for SuperStreamConsumerBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuperStreamConsumerBuilder")
            .field("super_stream", &self.super_stream)
            .field("name", &self.name)
            .finish()
    }
}

impl<T: DeserializeOwned> SuperStreamConsumerBuilder<T> {
    /// The consumer's name: offsets are stored under it per partition.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Single active consumer over the super stream (RabbitMQ 3.11+): the
    /// consumers of this name share the partitions, one active per
    /// partition; when one closes, another takes its partitions over after
    /// the offsets stored under the name. Needs a name.
    ///
    /// When a consumer joins, the broker may move a partition from an active
    /// consumer to it: the one that gives the partition up stores the offset
    /// of what it processed first, but messages it had received and not yet
    /// processed are read again by the new one.
    pub fn single_active(mut self, on: bool) -> Self {
        self.single_active = on;
        self
    }

    /// Where each partition starts when no offset is stored under the name
    /// ([`OffsetSpec::Next`] by default).
    pub fn offset(mut self, spec: OffsetSpec) -> Self {
        self.offset = spec;
        self
    }

    /// Store offsets every `messages` messages and every `interval`, per
    /// partition (see [`ConsumerBuilder::store_every`](crate::ConsumerBuilder::store_every)).
    pub fn store_every(mut self, messages: u64, interval: Duration) -> Self {
        self.store_every = Some((messages, interval));
        self
    }

    /// Only the messages that pass `filter`, on every partition (see
    /// [`ConsumerBuilder::filter`](crate::ConsumerBuilder::filter)).
    pub fn filter(mut self, filter: ConsumerFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Finds the partitions and subscribes to each.
    pub async fn build(self) -> Result<SuperStreamConsumer<T>, Error> {
        let partitions = self
            .client
            .super_stream_partitions(&self.super_stream)
            .await?;
        let mut consumers = Vec::with_capacity(partitions.len());
        for p in &partitions {
            let mut b = self
                .client
                .consumer::<T>(p)
                .offset(self.offset)
                .single_active(self.single_active);
            if let Some(n) = &self.name {
                b = b.name(n.clone());
            }
            if let Some((m, i)) = self.store_every {
                b = b.store_every(m, i);
            }
            if let Some(f) = &self.filter {
                b = b.filter(f.clone());
            }
            if self.single_active {
                b.properties
                    .push(("super-stream".to_owned(), self.super_stream.clone()));
            }
            match b.build().await {
                Ok(c) => consumers.push(c),
                Err(e) => {
                    for c in consumers {
                        let _ = c.close().await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(SuperStreamConsumer {
            super_stream: self.super_stream,
            partitions,
            consumers,
            next: 0,
        })
    }
}

/// A message read from a partition of a super stream.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SuperStreamMessage<T> {
    /// The partition (stream) it was read from.
    pub partition: String,
    /// The decoded body.
    pub body: T,
    /// Its offset in the partition.
    pub offset: u64,
}

/// A typed consumer of every partition of a super stream: a `Stream` of
/// their messages, each partition in offset order (so the messages of one
/// routing key in order), each message once (see [`StreamConsumer`]).
pub struct SuperStreamConsumer<T> {
    super_stream: String,
    partitions: Vec<String>,
    consumers: Vec<StreamConsumer<T>>,
    /// The partition polled first next time, so none starves.
    next: usize,
}

impl<T> std::fmt::Debug for SuperStreamConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuperStreamConsumer")
            .field("super_stream", &self.super_stream)
            .field("partitions", &self.partitions)
            .finish()
    }
}

impl<T> SuperStreamConsumer<T> {
    /// The super stream read.
    pub fn super_stream(&self) -> &str {
        &self.super_stream
    }

    /// Its partitions, in the broker's order.
    pub fn partitions(&self) -> &[String] {
        &self.partitions
    }

    /// Closes every partition's consumer, storing its offset (see
    /// [`StreamConsumer::close`]); the first error, if any.
    pub async fn close(self) -> Result<(), Error> {
        let mut first = Ok(());
        for c in self.consumers {
            let r = c.close().await;
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl<T: DeserializeOwned> futures::Stream for SuperStreamConsumer<T> {
    type Item = Result<SuperStreamMessage<T>, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let n = this.consumers.len();
        let mut ended = 0;
        for k in 0..n {
            let i = (this.next + k) % n;
            match Pin::new(&mut this.consumers[i]).poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    this.next = (i + 1) % n;
                    let partition = this.partitions[i].clone();
                    return Poll::Ready(Some(item.map(|m| SuperStreamMessage {
                        partition,
                        body: m.body,
                        offset: m.offset,
                    })));
                }
                Poll::Ready(None) => ended += 1,
                Poll::Pending => {}
            }
        }
        if ended == n {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_is_the_reference_one() {
        // MurmurHash3_x86_32 test vectors (seed 0, and seed 0x9747b28c).
        let h = |s: &str, seed| murmur3::murmur3_32(&mut Cursor::new(s.as_bytes()), seed).unwrap();
        assert_eq!(h("", 0), 0);
        assert_eq!(h("hello", 0), 0x248b_fa47);
        assert_eq!(h("Hello, world!", 0x9747_b28c), 0x2488_4cba);
    }

    #[test]
    fn hash_routing_takes_the_hash_unsigned_as_the_other_clients() {
        let mut high_bit = 0;
        for k in 0..100 {
            let key = format!("customer-{k}");
            let h = murmur3::murmur3_32(&mut Cursor::new(key.as_bytes()), HASH_SEED).unwrap();
            high_bit += usize::from(h >= 1 << 31);
            for n in 1..=7 {
                // Java's Integer.remainderUnsigned(hash, n), Go's and
                // .NET's uint32 `%`; not (hash & 0x7fffffff) % n, which
                // Java used before September 2022.
                assert_eq!(hash_partition(&key, n), (u64::from(h) % n as u64) as usize);
            }
        }
        assert!(high_bit > 0, "the keys cover hashes with the top bit set");
        // Stable: a key always goes to the same partition.
        assert_eq!(
            hash_partition("customer-42", 3),
            hash_partition("customer-42", 3)
        );
    }

    #[test]
    fn broker_versions_are_read_from_the_peer_properties_text() {
        assert_eq!(parse_version("4.3.6"), Some((4, 3)));
        assert_eq!(parse_version("3.10.7"), Some((3, 10)));
        assert_eq!(parse_version("3.13.0-rc.1"), Some((3, 13)));
        assert_eq!(parse_version("4.1+dev"), Some((4, 1)));
        assert_eq!(parse_version("unknown"), None);
        // 3.10 < 3.11 < 3.13 as numbers, not as text.
        assert!((3, 10) < (3, 11) && (3, 11) < (3, 13) && (3, 13) < (4, 0));
    }

    #[test]
    fn bad_specs_are_refused_before_the_network() {
        let kind = |s: SuperStreamSpec| s.check().unwrap_err().kind();
        assert_eq!(kind(SuperStreamSpec::new("s", 0)), ErrorKind::InvalidInput);
        assert_eq!(
            kind(SuperStreamSpec::new("s", MAX_PARTITIONS + 1)),
            ErrorKind::InvalidInput
        );
        assert_eq!(kind(SuperStreamSpec::new("", 3)), ErrorKind::InvalidInput);
        assert_eq!(
            kind(SuperStreamSpec::new("x".repeat(254), 3)),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(SuperStreamSpec::with_keys("s", ["a", "a"])),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(SuperStreamSpec::with_keys("s", Vec::<String>::new())),
            ErrorKind::InvalidInput
        );
        assert!(SuperStreamSpec::new("s", MAX_PARTITIONS).check().is_ok());
        assert_eq!(
            SuperStreamSpec::new("inv", 3).partitions(),
            vec!["inv-0", "inv-1", "inv-2"]
        );
    }
}
