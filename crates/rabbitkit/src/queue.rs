//! Queues: the builder (durable, exclusive, quorum, dead-lettering, TTL,
//! limits) and the declared [`Queue`], which is also the point-to-point
//! pattern: send to a queue through the default exchange, receive from it.

use std::time::Duration;

use rabbitkit_core::{
    AMQPValue, Client, ConsumeOptions, Declaration, DeclareError, FieldTable, QueueInfo, QueueSpec,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{SendError, SubscribeError};
use crate::message::{PublishOptions, Subscription, outgoing};
use crate::names::{MAX_LEN, check_name};

/// The queue type (`x-queue-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueType {
    /// A classic queue (one node holds it).
    Classic,
    /// A quorum queue: replicated with Raft over the cluster's nodes; the
    /// replacement for the classic mirrored queues that RabbitMQ 4.0
    /// removed. Durable, never exclusive.
    Quorum,
}

/// Builds and declares a queue. Problems are collected and returned by
/// [`declare`](Self::declare), before anything reaches the network.
///
/// ```no_run
/// # async fn run(client: rabbitkit::Client) -> Result<(), rabbitkit::DeclareError> {
/// use std::time::Duration;
/// use rabbitkit::Queue;
/// let orders = Queue::durable("orders")
///     .quorum()
///     .dead_letter("orders.dlx")
///     .message_ttl(Duration::from_secs(3600))
///     .delivery_limit(5)
///     .declare(&client)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct QueueBuilder {
    name: Option<String>,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    queue_type: Option<QueueType>,
    arguments: FieldTable,
    delivery_limit: bool,
    errors: Vec<DeclareError>,
}

/// A declared queue.
#[derive(Debug, Clone)]
pub struct Queue {
    name: String,
    client: Client,
    durable: bool,
    temporary: bool,
}

impl Queue {
    /// A queue with AMQP's defaults: not durable, not exclusive, not
    /// auto-deleted (what the official tutorials' `queue_declare('hello')` makes).
    pub fn named(name: impl Into<String>) -> QueueBuilder {
        QueueBuilder::new(Some(name.into()), false)
    }

    /// A durable queue: it survives a broker restart (its persistent messages too).
    pub fn durable(name: impl Into<String>) -> QueueBuilder {
        QueueBuilder::new(Some(name.into()), true)
    }

    /// A durable quorum queue: replicated over the cluster.
    pub fn quorum(name: impl Into<String>) -> QueueBuilder {
        QueueBuilder::new(Some(name.into()), true).quorum()
    }

    /// A temporary queue for one subscriber: exclusive, deleted when its
    /// consumer goes, with a client-generated name (`rabbitkit.tmp.<uuid>`)
    /// so it can be declared again after a reconnect.
    pub fn temporary() -> QueueBuilder {
        let mut b = QueueBuilder::new(None, false);
        b.exclusive = true;
        b.auto_delete = true;
        b
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client it was declared with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sends a message to this queue through the default exchange and waits
    /// for the broker's confirm. Persistent when the queue is durable.
    pub async fn send<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<rabbitkit_core::Confirmed, SendError> {
        self.send_with(value, PublishOptions::default()).await
    }

    /// [`send`](Self::send) with per-message options.
    pub async fn send_with<T: Serialize + ?Sized>(
        &self,
        value: &T,
        options: PublishOptions,
    ) -> Result<rabbitkit_core::Confirmed, SendError> {
        let msg = outgoing("", &self.name, value, self.durable, &options, |p| p)?;
        Ok(self.client.publish(msg).await?)
    }

    /// Receives typed messages from this queue, with the client's prefetch.
    pub async fn subscribe<T: DeserializeOwned>(&self) -> Result<Subscription<T>, SubscribeError> {
        self.subscribe_with(ConsumeOptions::new()).await
    }

    /// [`subscribe`](Self::subscribe) with consumer options (prefetch, exclusive, ...).
    pub async fn subscribe_with<T: DeserializeOwned>(
        &self,
        options: ConsumeOptions,
    ) -> Result<Subscription<T>, SubscribeError> {
        let consumer = self.client.consume(&self.name, options).await?;
        Ok(Subscription::new(
            consumer,
            self.client.clone(),
            self.temporary,
        ))
    }

    /// Ready messages and consumers, from a passive declare.
    pub async fn info(&self) -> Result<QueueInfo, DeclareError> {
        self.client.queue_info(&self.name).await
    }

    /// Deletes the queue; returns how many messages it held.
    pub async fn delete(self) -> Result<u32, DeclareError> {
        self.client.delete_queue(&self.name).await
    }
}

impl QueueBuilder {
    fn new(name: Option<String>, durable: bool) -> Self {
        Self {
            name,
            durable,
            exclusive: false,
            auto_delete: false,
            queue_type: None,
            arguments: FieldTable::default(),
            delivery_limit: false,
            errors: Vec::new(),
        }
    }

    fn arg(mut self, key: &str, value: AMQPValue) -> Self {
        self.arguments.insert(key.into(), value);
        self
    }

    fn refuse(mut self, what: &str, value: String, reason: &str) -> Self {
        self.errors.push(DeclareError::Invalid {
            what: what.into(),
            value,
            reason: reason.into(),
        });
        self
    }

    /// Survives a broker restart.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Only this client's connection may use it; deleted when the connection closes.
    pub fn exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// Deleted when its last consumer goes.
    pub fn auto_delete(mut self, auto_delete: bool) -> Self {
        self.auto_delete = auto_delete;
        self
    }

    /// A quorum queue (replicated; durable; not exclusive).
    pub fn quorum(mut self) -> Self {
        self.queue_type = Some(QueueType::Quorum);
        self.durable = true;
        self.arg("x-queue-type", AMQPValue::LongString("quorum".into()))
    }

    /// A classic queue, said explicitly (`x-queue-type: classic`).
    pub fn classic(mut self) -> Self {
        self.queue_type = Some(QueueType::Classic);
        self.arg("x-queue-type", AMQPValue::LongString("classic".into()))
    }

    /// Rejected and expired messages go to this exchange (`x-dead-letter-exchange`).
    pub fn dead_letter(self, exchange: &str) -> Self {
        if exchange.len() > MAX_LEN {
            return self.refuse(
                "dead-letter exchange",
                exchange.into(),
                "longer than 255 bytes",
            );
        }
        self.arg(
            "x-dead-letter-exchange",
            AMQPValue::LongString(exchange.into()),
        )
    }

    /// ... with this routing key instead of the message's own (`x-dead-letter-routing-key`).
    pub fn dead_letter_routing_key(self, key: &str) -> Self {
        if key.len() > MAX_LEN {
            return self.refuse(
                "dead-letter routing key",
                key.into(),
                "longer than 255 bytes",
            );
        }
        self.arg(
            "x-dead-letter-routing-key",
            AMQPValue::LongString(key.into()),
        )
    }

    /// Messages expire after this long in the queue (`x-message-ttl`).
    pub fn message_ttl(self, ttl: Duration) -> Self {
        match i64::try_from(ttl.as_millis()) {
            Ok(ms) => self.arg("x-message-ttl", AMQPValue::LongLongInt(ms)),
            Err(_) => self.refuse("message TTL", format!("{ttl:?}"), "too long"),
        }
    }

    /// At most this many ready messages; the oldest are dropped or dead-lettered (`x-max-length`).
    pub fn max_length(self, max: u32) -> Self {
        self.arg("x-max-length", AMQPValue::LongLongInt(max.into()))
    }

    /// Quorum queues: a message delivered this many times without an ack is
    /// dead-lettered (or dropped) instead of redelivered (`x-delivery-limit`).
    pub fn delivery_limit(mut self, limit: u32) -> Self {
        self.delivery_limit = true;
        self.arg("x-delivery-limit", AMQPValue::LongLongInt(limit.into()))
    }

    /// Any other queue argument.
    pub fn argument(self, key: &str, value: AMQPValue) -> Self {
        self.arg(key, value)
    }

    /// The declaration this builder makes, or the first problem found.
    pub fn build(self) -> Result<QueueSpec, DeclareError> {
        if let Some(e) = self.errors.into_iter().next() {
            return Err(e);
        }
        let name = match self.name {
            Some(name) => {
                check_name(&name)?;
                name
            }
            None => format!("rabbitkit.tmp.{}", uuid::Uuid::new_v4().simple()),
        };
        let quorum = self.queue_type == Some(QueueType::Quorum);
        let conflict = |reason: &str| DeclareError::Invalid {
            what: "queue options".into(),
            value: name.clone(),
            reason: reason.into(),
        };
        if quorum && self.exclusive {
            return Err(conflict("a quorum queue cannot be exclusive"));
        }
        if quorum && !self.durable {
            return Err(conflict("a quorum queue is always durable"));
        }
        if quorum && self.auto_delete {
            return Err(conflict("a quorum queue cannot be auto-delete"));
        }
        if self.delivery_limit && !quorum {
            return Err(conflict("delivery_limit needs a quorum queue"));
        }
        Ok(QueueSpec {
            name,
            durable: self.durable,
            exclusive: self.exclusive,
            auto_delete: self.auto_delete,
            arguments: self.arguments,
        })
    }

    /// Declares the queue (idempotent: the same declaration again changes
    /// nothing; different properties fail with `DeclareError::Inequivalent`,
    /// naming the argument).
    pub async fn declare(self, client: &Client) -> Result<Queue, DeclareError> {
        let temporary = self.name.is_none();
        let spec = self.build()?;
        let queue = Queue {
            name: spec.name.clone(),
            client: client.clone(),
            durable: spec.durable,
            temporary,
        };
        client.declare(Declaration::Queue(spec)).await?;
        Ok(queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicting_options_are_refused_before_the_network() {
        assert!(Queue::quorum("q").exclusive(true).build().is_err());
        assert!(Queue::quorum("q").durable(false).build().is_err());
        assert!(Queue::durable("q").delivery_limit(3).build().is_err());
        assert!(Queue::named("amq.x").build().is_err());
        assert!(
            Queue::named("q")
                .dead_letter(&"x".repeat(300))
                .build()
                .is_err()
        );
        let spec = Queue::quorum("q").delivery_limit(3).build().unwrap();
        assert!(spec.durable);
        assert_eq!(
            spec.arguments.inner().get("x-queue-type"),
            Some(&AMQPValue::LongString("quorum".into()))
        );
    }

    #[test]
    fn temporary_queues_get_client_names() {
        let a = Queue::temporary().build().unwrap();
        let b = Queue::temporary().build().unwrap();
        assert!(a.name.starts_with("rabbitkit.tmp."));
        assert_ne!(a.name, b.name);
        assert!(a.exclusive && a.auto_delete && !a.durable);
    }
}
