//! Exchanges, with their kind in the type: [`Exchange<Fanout>`],
//! [`Exchange<Direct>`], [`Exchange<Topic>`], [`Exchange<Headers>`].
//!
//! Each kind binds with what it routes on and nothing else, so a wrong
//! binding does not compile:
//!
//! ```compile_fail
//! # async fn run(client: rabbitkit::Client, q: rabbitkit::Queue) {
//! let logs = rabbitkit::Exchange::fanout("logs").declare(&client).await.unwrap();
//! logs.bind(&q, "error").await; // a fanout binding takes no routing key
//! # }
//! ```
//!
//! ```compile_fail
//! # async fn run(client: rabbitkit::Client, q: rabbitkit::Queue) {
//! let x = rabbitkit::Exchange::topic("topic_logs").declare(&client).await.unwrap();
//! x.bind(&q, rabbitkit::HeadersMatch::all()).await; // a topic binding takes a pattern
//! # }
//! ```
//!
//! These are the four exchange patterns: publish/subscribe (fanout),
//! routing (direct), topics, and headers.

use std::marker::PhantomData;

use rabbitkit_core::{
    AMQPValue, BindingSpec, Client, Confirmed, ConsumeOptions, Declaration, DeclareError,
    ExchangeBindingSpec, ExchangeSpec, ExchangeType, FieldTable, Publisher,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::binding::{Headers, HeadersMatch, TopicPattern};
use crate::error::{SendError, SubscribeError};
use crate::message::{PublishOptions, Subscription, outgoing};
use crate::names::{check_name, check_routing_key};
use crate::queue::Queue;

mod sealed {
    pub trait Sealed {}
}

/// An exchange kind, as a type. Implemented by [`Direct`], [`Fanout`],
/// [`Topic`] and [`Headers`]; not by user types.
pub trait Kind: sealed::Sealed + Send + Sync + 'static {
    /// The broker's name for the kind.
    fn exchange_type() -> ExchangeType;
}

/// Routing on an exact routing key; a queue may bind several keys.
#[derive(Debug, Clone, Copy)]
pub struct Direct;
/// Every bound queue gets a copy; routing keys are ignored.
#[derive(Debug, Clone, Copy)]
pub struct Fanout;
/// Routing on dot-separated keys matched by patterns with `*` and `#`.
#[derive(Debug, Clone, Copy)]
pub struct Topic;
/// Routing on message headers, all or any of them.
#[derive(Debug, Clone, Copy)]
pub struct HeadersKind;

macro_rules! kind {
    ($t:ty, $v:expr) => {
        impl sealed::Sealed for $t {}
        impl Kind for $t {
            fn exchange_type() -> ExchangeType {
                $v
            }
        }
    };
}
kind!(Direct, ExchangeType::Direct);
kind!(Fanout, ExchangeType::Fanout);
kind!(Topic, ExchangeType::Topic);
kind!(HeadersKind, ExchangeType::Headers);

/// Builds and declares an exchange of kind `K`: durable unless
/// [`durable(false)`](Self::durable), not auto-delete, not internal.
///
/// ```
/// use rabbitkit::Exchange;
/// let spec = Exchange::topic("events").build().unwrap();
/// assert!(spec.durable && !spec.auto_delete && !spec.internal);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ExchangeBuilder<K> {
    name: String,
    durable: bool,
    auto_delete: bool,
    internal: bool,
    arguments: FieldTable,
    _k: PhantomData<K>,
}

/// A declared exchange of kind `K`.
///
/// Its publishes go through one channel of the client's pool, so messages
/// published through one handle are routed in the order they were
/// published; each handle — each clone too — takes the pool's next
/// channel, so handles used from several tasks spread over the pool
/// ([`Options::channels`](rabbitkit_core::Options::channels)).
#[derive(Debug)]
pub struct Exchange<K> {
    name: String,
    client: Client,
    publisher: Publisher,
    _k: PhantomData<K>,
}

impl<K> Clone for Exchange<K> {
    /// Another handle on the same exchange, publishing on the pool's next channel.
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            client: self.client.clone(),
            publisher: self.client.publisher(),
            _k: PhantomData,
        }
    }
}

impl<K: Kind> ExchangeBuilder<K> {
    fn new(name: String) -> Self {
        Self {
            name,
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::default(),
            _k: PhantomData,
        }
    }

    /// Survives a broker restart (default: durable). `durable(false)`
    /// makes the non-durable exchanges of the official tutorials (`logs`,
    /// `direct_logs`, `topic_logs`), which the broker forgets when it
    /// restarts (with their bindings). Messages published through an
    /// exchange are persistent either way; see [`PublishOptions`].
    ///
    /// ```
    /// use rabbitkit::Exchange;
    /// assert!(Exchange::fanout("audit").build().unwrap().durable);
    /// // exchange_declare(exchange='logs', exchange_type='fanout'), as the tutorials do:
    /// assert!(!Exchange::fanout("logs").durable(false).build().unwrap().durable);
    /// ```
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Deleted when its last binding goes.
    pub fn auto_delete(mut self, auto_delete: bool) -> Self {
        self.auto_delete = auto_delete;
        self
    }

    /// Reachable only through exchange-to-exchange bindings.
    pub fn internal(mut self, internal: bool) -> Self {
        self.internal = internal;
        self
    }

    /// Unroutable messages go to this exchange instead (`alternate-exchange`).
    pub fn alternate_exchange(mut self, exchange: &str) -> Self {
        self.arguments.insert(
            "alternate-exchange".into(),
            AMQPValue::LongString(exchange.into()),
        );
        self
    }

    /// The declaration, or the first problem found.
    pub fn build(self) -> Result<ExchangeSpec, DeclareError> {
        check_name(&self.name)?;
        Ok(ExchangeSpec {
            name: self.name,
            kind: K::exchange_type(),
            durable: self.durable,
            auto_delete: self.auto_delete,
            internal: self.internal,
            arguments: self.arguments,
        })
    }

    /// Declares it. Idempotent; an existing exchange of another type fails
    /// with [`DeclareError::Inequivalent`] naming both types, and the
    /// connection goes on.
    pub async fn declare(self, client: &Client) -> Result<Exchange<K>, DeclareError> {
        let spec = self.build()?;
        let exchange = Exchange {
            name: spec.name.clone(),
            client: client.clone(),
            publisher: client.publisher(),
            _k: PhantomData,
        };
        client.declare(Declaration::Exchange(spec)).await?;
        Ok(exchange)
    }
}

impl Exchange<Fanout> {
    /// A fanout exchange: publish/subscribe.
    pub fn fanout(name: impl Into<String>) -> ExchangeBuilder<Fanout> {
        ExchangeBuilder::new(name.into())
    }
}
impl Exchange<Direct> {
    /// A direct exchange: routing by exact key.
    pub fn direct(name: impl Into<String>) -> ExchangeBuilder<Direct> {
        ExchangeBuilder::new(name.into())
    }
}
impl Exchange<Topic> {
    /// A topic exchange: routing by pattern.
    pub fn topic(name: impl Into<String>) -> ExchangeBuilder<Topic> {
        ExchangeBuilder::new(name.into())
    }
}
impl Exchange<HeadersKind> {
    /// A headers exchange: routing by header values.
    pub fn headers(name: impl Into<String>) -> ExchangeBuilder<HeadersKind> {
        ExchangeBuilder::new(name.into())
    }
}

impl<K: Kind> Exchange<K> {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client it was declared with.
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn bind_raw(&self, queue: &str, key: &str, args: FieldTable) -> Result<(), DeclareError> {
        self.client
            .declare(Declaration::Binding(BindingSpec {
                queue: queue.into(),
                exchange: self.name.clone(),
                routing_key: key.into(),
                arguments: args,
            }))
            .await
    }

    async fn bind_exchange_raw<D: Kind>(
        &self,
        destination: &Exchange<D>,
        key: &str,
        args: FieldTable,
    ) -> Result<(), DeclareError> {
        self.client
            .declare(Declaration::ExchangeBinding(self.exchange_binding(
                destination,
                key,
                args,
            )))
            .await
    }

    fn exchange_binding<D: Kind>(
        &self,
        destination: &Exchange<D>,
        key: &str,
        args: FieldTable,
    ) -> ExchangeBindingSpec {
        ExchangeBindingSpec {
            destination: destination.name.clone(),
            source: self.name.clone(),
            routing_key: key.into(),
            arguments: args,
        }
    }

    /// Removes every exchange-to-exchange binding from this exchange to
    /// `destination` that this client declared, and forgets them.
    pub async fn unbind_exchange<D: Kind>(
        &self,
        destination: &Exchange<D>,
    ) -> Result<(), DeclareError> {
        for spec in self.client.exchange_bindings(&self.name, &destination.name) {
            self.client.unbind_exchange(spec).await?;
        }
        Ok(())
    }

    async fn send_raw<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: &PublishOptions,
        headers: Option<FieldTable>,
    ) -> Result<Confirmed, SendError> {
        let msg = outgoing(&self.name, key, value, options, |p| match headers {
            Some(h) => p.with_headers(h),
            None => p,
        })?;
        Ok(self.publisher.publish(msg).await?)
    }

    async fn subscribe_raw<T: DeserializeOwned>(
        &self,
        bindings: Vec<(String, FieldTable)>,
    ) -> Result<Subscription<T>, SubscribeError> {
        let queue = Queue::temporary().declare(&self.client).await?;
        let subscribed = async {
            for (key, args) in bindings {
                self.bind_raw(queue.name(), &key, args).await?;
            }
            queue.subscribe_with(ConsumeOptions::new()).await
        }
        .await;
        if subscribed.is_err() {
            // Nobody will consume it: delete it (and forget its record, so
            // it is not declared again at every failover to collect
            // messages for nobody).
            if let Err(e) = self.client.delete_queue(queue.name()).await {
                tracing::warn!(target: "rabbitkit", queue = queue.name(), error = %e, "temporary queue of a failed subscribe not deleted");
            }
        }
        subscribed
    }
}

impl Exchange<Fanout> {
    /// Binds a queue: it gets a copy of every message.
    pub async fn bind(&self, queue: &Queue) -> Result<(), DeclareError> {
        self.bind_raw(queue.name(), "", FieldTable::default()).await
    }

    /// Binds another exchange: every message published here is also routed
    /// by `destination`, as if published to it with the same routing key
    /// (an exchange-to-exchange binding, recovered after failover like
    /// queue bindings). `destination` may be [`internal`](ExchangeBuilder::internal).
    pub async fn bind_exchange<D: Kind>(
        &self,
        destination: &Exchange<D>,
    ) -> Result<(), DeclareError> {
        self.bind_exchange_raw(destination, "", FieldTable::default())
            .await
    }

    /// Publishes to every bound queue (persistent, confirmed).
    pub async fn publish<T: Serialize + ?Sized>(&self, value: &T) -> Result<Confirmed, SendError> {
        self.send_raw("", value, &PublishOptions::default(), None)
            .await
    }

    /// [`publish`](Self::publish) with options.
    pub async fn publish_with<T: Serialize + ?Sized>(
        &self,
        value: &T,
        options: PublishOptions,
    ) -> Result<Confirmed, SendError> {
        self.send_raw("", value, &options, None).await
    }

    /// A subscriber of its own: a temporary queue bound to this exchange.
    /// A subscribe that fails (e.g. the exchange is gone) deletes the
    /// temporary queue it declared, here and for the other exchange kinds.
    pub async fn subscribe<T: DeserializeOwned>(&self) -> Result<Subscription<T>, SubscribeError> {
        self.subscribe_raw(vec![(String::new(), FieldTable::default())])
            .await
    }
}

impl Exchange<Direct> {
    /// Binds a queue to one routing key (call again for more keys).
    pub async fn bind(&self, queue: &Queue, key: &str) -> Result<(), DeclareError> {
        check_routing_key(key, false)?;
        self.bind_raw(queue.name(), key, FieldTable::default())
            .await
    }

    /// Binds another exchange to one routing key: the messages published
    /// here with that key are also routed by `destination`, with their
    /// routing key unchanged (an exchange-to-exchange binding, recovered
    /// after failover).
    pub async fn bind_exchange<D: Kind>(
        &self,
        destination: &Exchange<D>,
        key: &str,
    ) -> Result<(), DeclareError> {
        check_routing_key(key, false)?;
        self.bind_exchange_raw(destination, key, FieldTable::default())
            .await
    }

    /// Publishes with a routing key (persistent, confirmed).
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<Confirmed, SendError> {
        self.publish_with(key, value, PublishOptions::default())
            .await
    }

    /// [`publish`](Self::publish) with options.
    pub async fn publish_with<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: PublishOptions,
    ) -> Result<Confirmed, SendError> {
        check_routing_key(key, false).map_err(SendError::Invalid)?;
        self.send_raw(key, value, &options, None).await
    }

    /// A temporary queue bound to each of `keys` (any strings: `&["a", "b"]`,
    /// a `Vec<String>` from the command line, ...).
    pub async fn subscribe<T: DeserializeOwned>(
        &self,
        keys: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Subscription<T>, SubscribeError> {
        let keys: Vec<String> = keys.into_iter().map(|k| k.as_ref().to_owned()).collect();
        for k in &keys {
            check_routing_key(k, false)?;
        }
        self.subscribe_raw(
            keys.into_iter()
                .map(|k| (k, FieldTable::default()))
                .collect(),
        )
        .await
    }
}

impl Exchange<Topic> {
    /// Binds a queue with a pattern.
    pub async fn bind(&self, queue: &Queue, pattern: &TopicPattern) -> Result<(), DeclareError> {
        self.bind_raw(queue.name(), pattern.as_str(), FieldTable::default())
            .await
    }

    /// Binds another exchange with a pattern: the messages published here
    /// whose routing key matches are also routed by `destination`, with
    /// their routing key unchanged (an exchange-to-exchange binding,
    /// recovered after failover).
    ///
    /// ```no_run
    /// # async fn run(client: rabbitkit::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use rabbitkit::{Exchange, TopicPattern};
    /// let events = Exchange::topic("events").declare(&client).await?;
    /// // Only the payment events reach the audit exchange (internal: nobody
    /// // publishes to it directly) and whatever is bound to it.
    /// let audit = Exchange::fanout("audit").internal(true).declare(&client).await?;
    /// events.bind_exchange(&audit, &TopicPattern::new("payment.#")?).await?;
    /// # Ok(()) }
    /// ```
    pub async fn bind_exchange<D: Kind>(
        &self,
        destination: &Exchange<D>,
        pattern: &TopicPattern,
    ) -> Result<(), DeclareError> {
        self.bind_exchange_raw(destination, pattern.as_str(), FieldTable::default())
            .await
    }

    /// Publishes with a plain routing key (words; no wildcards); persistent, confirmed.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<Confirmed, SendError> {
        self.publish_with(key, value, PublishOptions::default())
            .await
    }

    /// [`publish`](Self::publish) with options.
    pub async fn publish_with<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: PublishOptions,
    ) -> Result<Confirmed, SendError> {
        check_routing_key(key, true).map_err(SendError::Invalid)?;
        self.send_raw(key, value, &options, None).await
    }

    /// A temporary queue bound with each pattern.
    pub async fn subscribe<T: DeserializeOwned>(
        &self,
        patterns: &[TopicPattern],
    ) -> Result<Subscription<T>, SubscribeError> {
        self.subscribe_raw(
            patterns
                .iter()
                .map(|p| (p.to_string(), FieldTable::default()))
                .collect(),
        )
        .await
    }
}

impl Exchange<HeadersKind> {
    /// Binds a queue with a header match (all or any).
    pub async fn bind(&self, queue: &Queue, matching: &HeadersMatch) -> Result<(), DeclareError> {
        let args = matching.to_arguments()?;
        self.bind_raw(queue.name(), "", args).await
    }

    /// Binds another exchange with a header match: the messages published
    /// here whose headers match are also routed by `destination` (an
    /// exchange-to-exchange binding, recovered after failover).
    pub async fn bind_exchange<D: Kind>(
        &self,
        destination: &Exchange<D>,
        matching: &HeadersMatch,
    ) -> Result<(), DeclareError> {
        let args = matching.to_arguments()?;
        self.bind_exchange_raw(destination, "", args).await
    }

    /// Publishes with headers (persistent, confirmed).
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        headers: &Headers,
        value: &T,
    ) -> Result<Confirmed, SendError> {
        self.publish_with(headers, value, PublishOptions::default())
            .await
    }

    /// [`publish`](Self::publish) with options.
    pub async fn publish_with<T: Serialize + ?Sized>(
        &self,
        headers: &Headers,
        value: &T,
        options: PublishOptions,
    ) -> Result<Confirmed, SendError> {
        headers.check_keys().map_err(SendError::Invalid)?;
        let mut table = options.headers.clone().unwrap_or_default();
        for (k, v) in headers.to_table().inner() {
            table.insert(k.clone(), v.clone());
        }
        self.send_raw("", value, &options, Some(table)).await
    }

    /// A temporary queue bound with `matching`.
    pub async fn subscribe<T: DeserializeOwned>(
        &self,
        matching: &HeadersMatch,
    ) -> Result<Subscription<T>, SubscribeError> {
        let args = matching.to_arguments()?;
        self.subscribe_raw(vec![(String::new(), args)]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchanges_are_durable_unless_asked_otherwise() {
        let spec = Exchange::fanout("audit").build().unwrap();
        assert!(spec.durable && !spec.auto_delete && !spec.internal);
        assert!(spec.arguments.inner().is_empty());
        assert!(Exchange::direct("d").build().unwrap().durable);
        assert!(Exchange::topic("t").build().unwrap().durable);
        assert!(Exchange::headers("h").build().unwrap().durable);
        // The official tutorials' `logs`.
        assert!(
            !Exchange::fanout("logs")
                .durable(false)
                .build()
                .unwrap()
                .durable
        );
    }
}
