//! The partitioned work queue: one logical queue spread over `N` quorum
//! queues, with order kept per key. See [`PartitionedQueue`] for what is
//! declared, and which hash exchange.

use std::marker::PhantomData;

use rabbitkit_core::{
    AMQPValue, BindingSpec, Client, Confirmed, ConsumeOptions, Declaration, DeclareError,
    ExchangeSpec, ExchangeType, FieldTable, QueueInfo,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::HandleOptions;
use crate::error::{SendError, SubscribeError};
use crate::message::{HandleReport, OnError, PublishOptions, Subscription, outgoing};
use crate::names::{check_name, check_routing_key};
use crate::queue::{Queue, QueueBuilder};
use crate::report::Report;
use crate::shutdown::Shutdown;
use crate::work_queue::DEFAULT_PREFETCH;

/// The most partitions a [`PartitionedQueue`] may have. Each partition is
/// a quorum queue (a Raft group on every node it is replicated to): a few
/// per node make use of the cores; hundreds cost memory and gain nothing.
pub const MAX_PARTITIONS: usize = 256;

/// The exchange type the partitions are bound to (the
/// `rabbitmq_consistent_hash_exchange` plugin).
pub const CONSISTENT_HASH: &str = "x-consistent-hash";

/// The exchange type of RabbitMQ 4.3+'s core broker that routes by
/// `hash(routing key) mod N` over its bindings in a stable order: no
/// plugin needed.
pub const MODULUS_HASH: &str = "x-modulus-hash";

/// The `x-queue-leader-locator` every partition is declared with: the node
/// that leads the fewest queues (`balanced` on RabbitMQ 3.12+, which 3.10
/// and 3.11 do not know; see [`PartitionedQueue`]).
pub const LEADER_LOCATOR: &str = "least-leaders";

/// The name of partition `index` of the partitioned queue `name`:
/// `<name>.p<index>`.
///
/// ```
/// assert_eq!(rabbitkit::partition_name("orders", 2), "orders.p2");
/// ```
pub fn partition_name(name: &str, index: usize) -> String {
    format!("{name}.p{index}")
}

/// Builds a [`PartitionedQueue`] of messages of type `T`. Problems (no
/// partitions, too many, a name that is invalid or too long for its
/// partitions' names, options that do not make a quorum queue) are
/// returned by [`build`](Self::build) and [`declare`](Self::declare)
/// before anything reaches the network.
///
/// ```
/// use rabbitkit::PartitionedQueue;
/// use rabbitkit::core::Declaration;
/// let decls = PartitionedQueue::<String>::builder("orders", 3).build().unwrap();
/// // The exchange, then each partition and its binding.
/// assert_eq!(decls.len(), 1 + 3 * 2);
/// assert!(matches!(&decls[0], Declaration::Exchange(x) if x.kind.as_str() == "x-consistent-hash"));
/// assert!(PartitionedQueue::<String>::builder("orders", 0).build().is_err());
/// assert!(PartitionedQueue::<String>::builder("amq.orders", 3).build().is_err());
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct PartitionedQueueBuilder<T> {
    name: String,
    partitions: usize,
    prefetch: u16,
    on_error: OnError,
    /// The exchange type asked for; `None`: chosen by the broker's version.
    routing: Option<&'static str>,
    /// Every partition's declaration, but for its name.
    template: QueueBuilder,
    _t: PhantomData<fn() -> T>,
}

/// `N` quorum queues behind a hash exchange: publish by key,
/// consume every partition, one consumer active per partition, order kept
/// per key.
///
/// One queue, however replicated, is served by one Erlang process on one
/// node (a quorum queue's leader): it tops out at about one core of one
/// node. A [`PartitionedQueue`] named `orders` with `N` partitions is:
///
/// - a durable exchange `orders` of type `x-modulus-hash` on RabbitMQ
///   4.3+ (in the core broker) or `x-consistent-hash` before (the
///   `rabbitmq_consistent_hash_exchange` plugin, shipped with RabbitMQ);
///   see below;
/// - `N` durable quorum queues `orders.p0` … `orders.p{N-1}`, each bound to
///   it with weight 1, in that order;
/// - on each, `x-single-active-consumer: true`: however many instances of
///   a worker subscribe, the broker delivers a partition to one of them at
///   a time, the others stand by and take over when it goes;
/// - on each, `x-queue-leader-locator: least-leaders` ([`LEADER_LOCATOR`]):
///   each partition's leader goes to the node that leads the fewest queues,
///   so the partitions' leaders spread over the cluster's nodes.
///
/// [`publish(key, &msg)`](PartitionedQueue::publish) sends through the
/// exchange with the key as routing key: the broker hashes it, so a key
/// always reaches the same partition, and a partition is consumed by one
/// consumer at a time, one message after another: **messages of one key
/// are handled in the order they were published** when each was confirmed
/// before the next of its key was published (awaiting `publish` one after
/// another does that). Publishes of one key kept in flight together may be
/// reordered by a re-send (a nack, a failover). Different keys spread over
/// the partitions (and the nodes).
///
/// ## Which exchange: modulus hash on 4.3, consistent hash before
/// The broker does the hashing, so any program in any language publishes
/// to the exchange with the key as routing key and reaches the same
/// partition as rabbitkit, with no hash function to agree on.
///
/// - On RabbitMQ 4.3+, [`declare`](PartitionedQueueBuilder::declare)
///   makes an `x-modulus-hash` exchange ([`MODULUS_HASH`]): in the core
///   broker since 4.3, with a stable order of bindings, the shape
///   RabbitMQ's own guide recommends (N queues, single active consumer).
///   No plugin to enable. Adding a partition moves most keys.
/// - Before 4.3, or when asked ([`consistent_hash`](PartitionedQueueBuilder::consistent_hash)),
///   an `x-consistent-hash` exchange ([`CONSISTENT_HASH`]): the plugin
///   must be enabled (it is shipped with RabbitMQ, and the local test
///   cluster enables it; without it the declaration fails with
///   [`DeclareError::Broker`], `unknown exchange type`). Adding a
///   partition moves only about `1/(N+1)` of the keys (jump consistent
///   hashing over the bindings).
///
/// Either way a key always reaches the same partition. An exchange that
/// already exists keeps its type: a partitioned queue made on 3.x or 4.0
/// stays on consistent hashing after an upgrade to 4.3 (switching would
/// move keys, and break order per key for those queued). The client
/// cannot tell in advance which partition a key goes to.
///
/// ## The leader locator, on 3.10 and 4.x
/// `balanced` is the name RabbitMQ 3.12+ gives this placement, but 3.10
/// and 3.11 refuse it (they know `client-local`, `random` and
/// `least-leaders`); 3.12+ still accept `least-leaders` and read it as
/// `balanced`. So rabbitkit declares `least-leaders`, which means the
/// same on every version from 3.10. (`x-queue-master-locator: min-masters`
/// is for classic queues only.) Once more than 1,000 queues exist, 3.12+
/// place leaders at random instead of counting, which still spreads them.
///
/// ## Number of partitions
/// Between 1 and [`MAX_PARTITIONS`]. Declaring again with the same number
/// changes nothing. Declaring with more partitions than exist adds the new
/// ones: keys move to them (about `1/N` of them with consistent hashing,
/// most with modulus hashing), and for the messages of those keys already
/// queued, order is no longer guaranteed. Declaring
/// with fewer is refused ([`DeclareError::Inequivalent`]): the extra
/// partitions would keep receiving messages that nobody consumes.
///
/// ## Example
/// ```no_run
/// # async fn run(client: rabbitkit::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use rabbitkit::PartitionedQueue;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Payment { account: String, cents: i64 }
///
/// let payments = PartitionedQueue::<Payment>::builder("payments", 6)
///     .declare(&client)
///     .await?;
/// // Payments of one account go to one partition: handled in this order.
/// payments.publish("acct-42", &Payment { account: "acct-42".into(), cents: 500 }).await?;
/// payments.publish("acct-42", &Payment { account: "acct-42".into(), cents: -200 }).await?;
///
/// // Every instance runs the same worker; per partition, one is active.
/// payments
///     .work(|p: Payment| async move {
///         println!("{} {}", p.account, p.cents);
///         Ok(())
///     })
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PartitionedQueue<T> {
    name: String,
    client: Client,
    queues: Vec<Queue>,
    prefetch: u16,
    on_error: OnError,
    _t: PhantomData<fn() -> T>,
}

impl<T> PartitionedQueue<T> {
    /// A partitioned queue `name` of `partitions` durable quorum queues
    /// (`<name>.p0` …) behind the hash exchange `name`, each
    /// queue with a single active consumer and its leader placed on the
    /// node that leads the fewest queues.
    pub fn builder(name: impl Into<String>, partitions: usize) -> PartitionedQueueBuilder<T> {
        PartitionedQueueBuilder {
            name: name.into(),
            partitions,
            prefetch: DEFAULT_PREFETCH,
            on_error: OnError::default(),
            routing: None,
            template: Queue::quorum("partition")
                .argument("x-single-active-consumer", AMQPValue::Boolean(true))
                .argument(
                    "x-queue-leader-locator",
                    AMQPValue::LongString(LEADER_LOCATOR.into()),
                ),
            _t: PhantomData,
        }
    }

    /// Its name: the exchange's, and the prefix of the partitions'.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client it was declared with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// How many partitions it has.
    pub fn partitions(&self) -> usize {
        self.queues.len()
    }

    /// The partitions' queues, in order (`<name>.p0` first).
    pub fn queues(&self) -> &[Queue] {
        &self.queues
    }

    /// Ready messages and consumers of each partition, in order. The
    /// broker counts only a partition's active consumer (1 however many
    /// instances stand by), 0 when nobody consumes it.
    pub async fn info(&self) -> Result<Vec<QueueInfo>, DeclareError> {
        let mut infos = Vec::with_capacity(self.queues.len());
        for queue in &self.queues {
            infos.push(queue.info().await?);
        }
        Ok(infos)
    }

    /// Deletes the partitions and the exchange (and forgets them: recovery
    /// no longer declares them); returns how many messages they held.
    pub async fn delete(self) -> Result<u32, DeclareError> {
        let mut messages = 0u32;
        for queue in self.queues {
            messages = messages.saturating_add(queue.delete().await?);
        }
        self.client.delete_exchange(&self.name).await?;
        Ok(messages)
    }
}

impl<T> PartitionedQueueBuilder<T> {
    /// Messages a consumer holds at once, per partition (default 20). A
    /// partition's messages are handled one at a time whatever the
    /// prefetch; a larger one saves round trips.
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// What happens to a message whose handler fails (default: one more
    /// try, then parked; see [`OnError`]). A retried message ([`OnError::RequeueOnce`],
    /// [`OnError::Retry`], the default) goes back to the tail of its partition, behind
    /// later messages of its key: for a key whose order matters, retry in
    /// the handler, or dead-letter ([`OnError::DeadLetter`]) and repair.
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// Failed messages go to this exchange (`x-dead-letter-exchange` on
    /// every partition).
    pub fn dead_letter(mut self, exchange: &str) -> Self {
        self.template = self.template.dead_letter(exchange);
        self
    }

    /// How long a partition keeps its active consumer after that
    /// consumer's node went away before the next one takes over (RabbitMQ
    /// 4.3+, `x-consumer-disconnected-timeout`; 60 s by default). Measured
    /// on a real node kill: 2.3 s with 2 s here, 60.3 s with the default.
    /// Shorter hands a partition over sooner, but also away from a consumer
    /// only cut off for a moment (which may still be handling a message
    /// the standby then gets again). See
    /// [`QueueBuilder::consumer_disconnected_timeout`].
    pub fn consumer_disconnected_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.template = self.template.consumer_disconnected_timeout(timeout);
        self
    }

    /// Change anything else about every partition's queue (a delivery
    /// limit, a TTL, ...). It must stay a quorum queue: a partition made
    /// classic, exclusive or a stream is refused by [`build`](Self::build).
    ///
    /// ```
    /// use rabbitkit::PartitionedQueue;
    /// let ok = PartitionedQueue::<String>::builder("orders", 3).queue(|q| q.delivery_limit(5));
    /// assert!(ok.build().is_ok());
    /// let classic = PartitionedQueue::<String>::builder("orders", 3).queue(|q| q.classic());
    /// assert!(classic.build().is_err());
    /// ```
    pub fn queue(mut self, f: impl FnOnce(QueueBuilder) -> QueueBuilder) -> Self {
        self.template = f(self.template);
        self
    }

    /// Route through the `x-consistent-hash` exchange (the
    /// `rabbitmq_consistent_hash_exchange` plugin) on every broker version:
    /// adding a partition later moves only about `1/(N+1)` of the keys.
    /// The default on RabbitMQ before 4.3.
    pub fn consistent_hash(mut self) -> Self {
        self.routing = Some(CONSISTENT_HASH);
        self
    }

    /// Route through the `x-modulus-hash` exchange (RabbitMQ 4.3+, in the
    /// core broker: no plugin): `hash(key) mod N`. Adding a partition
    /// later moves most keys. The default on RabbitMQ 4.3+; declaring it
    /// on an older broker fails with the broker's
    /// `unknown exchange type` ([`DeclareError::Broker`]).
    pub fn modulus_hash(mut self) -> Self {
        self.routing = Some(MODULUS_HASH);
        self
    }

    fn invalid(&self, what: &str, value: String, reason: &str) -> DeclareError {
        DeclareError::Invalid {
            what: what.into(),
            value,
            reason: reason.into(),
        }
    }

    /// The declarations this builder makes, in order: the exchange, then
    /// each partition's queue followed by its binding (weight `"1"`). The
    /// order of the bindings decides which keys go where, so it never
    /// changes. The exchange is of the type asked for
    /// ([`modulus_hash`](Self::modulus_hash), [`consistent_hash`](Self::consistent_hash)),
    /// else `x-consistent-hash`; [`declare`](Self::declare) chooses by the
    /// broker's version when none was asked for.
    pub fn build(&self) -> Result<Vec<Declaration>, DeclareError> {
        self.build_with(self.routing.unwrap_or(CONSISTENT_HASH))
    }

    fn build_with(&self, routing: &'static str) -> Result<Vec<Declaration>, DeclareError> {
        check_name(&self.name)?;
        if self.partitions == 0 {
            return Err(self.invalid(
                "number of partitions",
                "0".into(),
                "a partitioned queue needs at least one partition",
            ));
        }
        if self.partitions > MAX_PARTITIONS {
            return Err(self.invalid(
                "number of partitions",
                self.partitions.to_string(),
                "more than MAX_PARTITIONS (256): each partition is a quorum queue",
            ));
        }
        let mut decls = vec![Declaration::Exchange(ExchangeSpec {
            name: self.name.clone(),
            kind: ExchangeType::Custom(routing.into()),
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::default(),
        })];
        for index in 0..self.partitions {
            let spec = self
                .template
                .clone()
                .renamed(partition_name(&self.name, index))
                .build()?;
            let quorum = spec.arguments.inner().get("x-queue-type")
                == Some(&AMQPValue::LongString("quorum".into()));
            if !quorum {
                return Err(self.invalid(
                    "partition options",
                    spec.name,
                    "a partition is a quorum queue (replicated, with a single active consumer)",
                ));
            }
            let name = spec.name.clone();
            decls.push(Declaration::Queue(spec));
            decls.push(Declaration::Binding(BindingSpec {
                queue: name,
                exchange: self.name.clone(),
                routing_key: "1".into(),
                arguments: FieldTable::default(),
            }));
        }
        Ok(decls)
    }

    /// Declares the exchange, the partitions and their bindings
    /// (idempotent; recorded, so recovery declares them again after a
    /// failover). Refused before the network: see [`build`](Self::build).
    /// When more partitions exist than asked for (`<name>.p<N>` exists),
    /// fails with [`DeclareError::Inequivalent`] and declares nothing.
    pub async fn declare(self, client: &Client) -> Result<PartitionedQueue<T>, DeclareError> {
        let chosen = self.routing.unwrap_or_else(|| {
            if client
                .server()
                .is_some_and(|s| s.has_modulus_hash_exchange())
            {
                MODULUS_HASH
            } else {
                CONSISTENT_HASH
            }
        });
        let mut decls = self.build_with(chosen)?;
        let beyond = partition_name(&self.name, self.partitions);
        match client.queue_info(&beyond).await {
            Ok(_) => {
                return Err(DeclareError::Inequivalent {
                    object: "partitioned queue".into(),
                    name: self.name,
                    argument: "partitions".into(),
                    requested: self.partitions.to_string(),
                    current: format!("at least {} ({beyond} exists)", self.partitions + 1),
                });
            }
            Err(DeclareError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        // An exchange made before with the other type (by rabbitkit on an
        // older broker) keeps it: switching would move most keys to other
        // partitions, and order per key with them.
        if let Some(Declaration::Exchange(exchange)) = decls.first().cloned() {
            match client.declare(Declaration::Exchange(exchange)).await {
                Ok(()) => {}
                Err(DeclareError::Inequivalent { current, .. })
                    if self.routing.is_none()
                        && chosen == MODULUS_HASH
                        && current.contains(CONSISTENT_HASH) =>
                {
                    tracing::info!(target: "rabbitkit", exchange = %self.name, "the partitioned queue's exchange exists as x-consistent-hash: kept (keys stay on their partitions)");
                    decls = self.build_with(CONSISTENT_HASH)?;
                    client.declare(decls[0].clone()).await?;
                }
                Err(e) => return Err(e),
            }
        }
        let parks = matches!(self.on_error, OnError::Retry(_));
        let mut queues = Vec::with_capacity(self.partitions);
        for decl in decls.into_iter().skip(1) {
            if let Declaration::Queue(spec) = &decl {
                queues.push(
                    self.template
                        .clone()
                        .renamed(spec.name.clone())
                        .parks_failures(parks)
                        .declare(client)
                        .await?,
                );
            } else {
                client.declare(decl).await?;
            }
        }
        Ok(PartitionedQueue {
            name: self.name,
            client: client.clone(),
            queues,
            prefetch: self.prefetch,
            on_error: self.on_error,
            _t: PhantomData,
        })
    }
}

impl<T: Serialize> PartitionedQueue<T> {
    /// Publishes `message` to the partition of `key` (persistent,
    /// confirmed: once it returns `Ok` the message is on a majority of the
    /// partition's nodes). The same key always goes to the same partition.
    /// Mandatory: if no partition is bound any more, it fails with
    /// `PublishError::Unroutable` instead of being dropped. A key over 255
    /// bytes is [`SendError::Invalid`], nothing sent.
    pub async fn publish(&self, key: &str, message: &T) -> Result<Confirmed, SendError> {
        self.publish_with(key, message, PublishOptions::default())
            .await
    }

    /// [`publish`](Self::publish) with options (persistent unless
    /// [`PublishOptions::persistent`] says otherwise; always mandatory).
    pub async fn publish_with(
        &self,
        key: &str,
        message: &T,
        options: PublishOptions,
    ) -> Result<Confirmed, SendError> {
        check_routing_key(key, false).map_err(SendError::Invalid)?;
        let msg = outgoing(&self.name, key, message, &options.mandatory(true), |p| p)?;
        Ok(self.client.publish(msg).await?)
    }
}

impl<T: DeserializeOwned> PartitionedQueue<T> {
    /// One subscription per partition, in partition order, to acknowledge
    /// yourself. Each partition delivers to one consumer at a time (the
    /// first subscribed; the others stand by), in order. To read them as
    /// one stream, `futures::stream::select_all(subs)`; to keep order per
    /// key, acknowledge each partition's messages in the order received.
    ///
    /// If one partition cannot be subscribed, those already subscribed are
    /// dropped (cancelled) and the error returned.
    pub async fn subscribe(&self) -> Result<Vec<Subscription<T>>, SubscribeError> {
        let mut subs = Vec::with_capacity(self.queues.len());
        for queue in &self.queues {
            subs.push(
                queue
                    .subscribe_with(ConsumeOptions::new().prefetch(self.prefetch))
                    .await?,
            );
        }
        Ok(subs)
    }

    /// Runs `handler` on every message of every partition until the
    /// subscriptions end: one loop per partition, each on its own Tokio
    /// task and one message at a time (so a key's messages are handled in
    /// order), the partitions in parallel. `Ok` acknowledges, `Err`
    /// follows the [`OnError`] policy. Returns the loops' reports added up.
    ///
    /// Run it in every instance of the service: per partition, the broker
    /// delivers to one instance at a time; when that instance goes (its
    /// connection closes or dies), its unacknowledged messages go back to
    /// the head of the partition, in order, and the next instance takes
    /// over. A message being handled when its instance died is handled
    /// again (at least once): at most the prefetch per partition.
    pub async fn work<F, Fut>(&self, handler: F) -> Result<HandleReport, SubscribeError>
    where
        T: Send + 'static,
        F: Fn(T) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<(), Report>> + Send + 'static,
    {
        self.run(None, handler).await
    }

    /// [`work`](Self::work) until `shutdown` is given, then stops
    /// gracefully (see [`Shutdown`]): every partition's consumer is
    /// cancelled, the messages in progress finish, those not started go
    /// back to their partition, and a standing-by instance takes over.
    pub async fn work_until<F, Fut>(
        &self,
        shutdown: &Shutdown,
        handler: F,
    ) -> Result<HandleReport, SubscribeError>
    where
        T: Send + 'static,
        F: Fn(T) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<(), Report>> + Send + 'static,
    {
        self.run(Some(shutdown), handler).await
    }

    async fn run<F, Fut>(
        &self,
        shutdown: Option<&Shutdown>,
        handler: F,
    ) -> Result<HandleReport, SubscribeError>
    where
        T: Send + 'static,
        F: Fn(T) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<(), Report>> + Send + 'static,
    {
        // Subscribe them all first: an error stops before any work starts.
        let subs = self.subscribe().await?;
        let tasks: Vec<_> = subs
            .into_iter()
            .map(|sub| {
                // One at a time: the order of a key is the order of its partition.
                let mut options = HandleOptions::new()
                    .on_error(self.on_error.clone())
                    .concurrency(1);
                if let Some(shutdown) = shutdown {
                    options = options.shutdown(shutdown);
                }
                tokio::spawn(sub.handle_with(options, handler.clone()))
            })
            .collect();
        let mut total = HandleReport::default();
        for task in tasks {
            match task.await {
                Ok(report) => total.merge(&report),
                Err(e) => {
                    tracing::error!(target: "rabbitkit", queue = self.name, error = %e, "a partition's handler task panicked; its messages are requeued")
                }
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(name: &str, n: usize) -> PartitionedQueueBuilder<String> {
        PartitionedQueue::builder(name, n)
    }

    #[test]
    fn declares_the_exchange_then_each_partition_and_its_binding_in_order() {
        let decls = builder("orders", 3).build().unwrap();
        assert_eq!(decls.len(), 7);
        let Declaration::Exchange(x) = &decls[0] else {
            panic!("{:?}", decls[0])
        };
        assert_eq!(x.name, "orders");
        assert_eq!(x.kind.as_str(), "x-consistent-hash");
        assert!(x.durable && !x.auto_delete && !x.internal);
        for i in 0..3 {
            let Declaration::Queue(q) = &decls[1 + 2 * i] else {
                panic!("{:?}", decls[1 + 2 * i])
            };
            assert_eq!(q.name, format!("orders.p{i}"));
            assert!(q.durable && !q.exclusive && !q.auto_delete);
            let args = q.arguments.inner();
            assert_eq!(
                args.get("x-queue-type"),
                Some(&AMQPValue::LongString("quorum".into()))
            );
            assert_eq!(
                args.get("x-single-active-consumer"),
                Some(&AMQPValue::Boolean(true))
            );
            assert_eq!(
                args.get("x-queue-leader-locator"),
                Some(&AMQPValue::LongString("least-leaders".into()))
            );
            let Declaration::Binding(b) = &decls[2 + 2 * i] else {
                panic!("{:?}", decls[2 + 2 * i])
            };
            assert_eq!(
                (
                    b.exchange.as_str(),
                    b.queue.as_str(),
                    b.routing_key.as_str()
                ),
                ("orders", q.name.as_str(), "1")
            );
        }
    }

    #[test]
    fn every_partition_takes_the_disconnected_timeout_and_the_routing_asked_for() {
        let decls = builder("orders", 2)
            .consumer_disconnected_timeout(std::time::Duration::from_secs(5))
            .modulus_hash()
            .build()
            .unwrap();
        assert!(matches!(&decls[0], Declaration::Exchange(x) if x.kind.as_str() == MODULUS_HASH));
        let partitions: Vec<_> = decls
            .iter()
            .filter_map(|d| match d {
                Declaration::Queue(q) => Some(q),
                _ => None,
            })
            .collect();
        assert_eq!(partitions.len(), 2);
        for q in partitions {
            assert_eq!(
                q.arguments.inner().get("x-consumer-disconnected-timeout"),
                Some(&AMQPValue::LongLongInt(5000))
            );
        }
    }

    #[test]
    fn bad_input_is_refused_before_the_network() {
        assert!(matches!(
            builder("orders", 0).build(),
            Err(DeclareError::Invalid { .. })
        ));
        assert!(matches!(
            builder("orders", MAX_PARTITIONS + 1).build(),
            Err(DeclareError::Invalid { .. })
        ));
        assert!(builder("orders", MAX_PARTITIONS).build().is_ok());
        for bad in ["", "amq.orders", "bad\nname"] {
            assert!(
                matches!(
                    builder(bad, 3).build(),
                    Err(DeclareError::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
        // The exchange's name fits, its partitions' names do not.
        let long = "x".repeat(253);
        assert!(matches!(
            builder(&long, 3).build(),
            Err(DeclareError::InvalidName { .. })
        ));
        assert!(builder(&"x".repeat(252), 10).build().is_ok());
        assert!(builder(&"x".repeat(252), 11).build().is_err());
        // A partition must stay a quorum queue.
        assert!(matches!(
            builder("orders", 3).queue(|q| q.classic()).build(),
            Err(DeclareError::Invalid { .. })
        ));
        assert!(
            builder("orders", 3)
                .queue(|q| q.exclusive(true))
                .build()
                .is_err()
        );
        assert!(
            builder("orders", 3)
                .queue(|q| q.max_age(std::time::Duration::from_secs(60)))
                .build()
                .is_err()
        );
    }
}
