//! Exchanges, with their kind in the type: [`Exchange<Fanout>`],
//! [`Exchange<Direct>`], [`Exchange<Topic>`], [`Exchange<HeadersKind>`].
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
//! x.bind(&q, &rabbitkit::HeadersMatch::all()).await; // a topic binding takes a pattern
//! # }
//! ```
//!
//! and a publish carries what the kind routes by:
//!
//! ```compile_fail
//! # async fn run(client: rabbitkit::Client) {
//! let x = rabbitkit::Exchange::headers("headers_logs").declare(&client).await.unwrap();
//! x.publish("error", &"m").await; // a headers exchange routes by Headers, not a key
//! # }
//! ```
//!
//! These are the four exchange patterns: publish/subscribe (fanout),
//! routing (direct), topics, and headers.
//!
//! [`Exchange<K>`] is written once for all four: each [`Kind`] names what
//! it binds with and routes by ([`Kind::Binding`], [`Kind::Route`]) and, in
//! a sealed half of the trait, how they are checked and put on the wire.
//! Per kind remain only the constructors and what has another shape:
//! fanout's `bind`, `bind_exchange`, `publish` and `subscribe` take nothing
//! to route by, and `subscribe` takes several keys (direct), a slice of
//! patterns (topic) or one match (headers).

use std::marker::PhantomData;

use rabbitkit_core::validate::ValidationError;
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

/// An exchange kind, as a type: the broker's type, what a binding of this
/// kind matches on ([`Binding`](Kind::Binding)) and what a publish routes
/// by ([`Route`](Kind::Route)).
///
/// | kind | `Binding` | `Route` |
/// |---|---|---|
/// | [`Fanout`] | `()`: nothing, every bound queue gets everything | `()` |
/// | [`Direct`] | `str`: an exact routing key | `str`: the routing key |
/// | [`Topic`] | [`TopicPattern`] | `str`: a routing key of plain words |
/// | [`HeadersKind`] | [`HeadersMatch`] | [`Headers`] |
///
/// [`Exchange<K>`] is written once for every kind; the kind only decides
/// how its binding and route are checked and what they become on the
/// wire. Implemented by the four kinds above and not by user types:
///
/// ```compile_fail
/// struct Mine;
/// impl rabbitkit::Kind for Mine { // sealed
///     type Binding = ();
///     type Route = ();
///     fn exchange_type() -> rabbitkit::core::ExchangeType { todo!() }
/// }
/// ```
pub trait Kind: sealed::Sealed + Send + Sync + 'static {
    /// What a binding of this kind matches on: given to `bind`,
    /// `bind_exchange` and `subscribe`.
    type Binding: ?Sized + Sync;
    /// What a publish to this kind routes by: given to `publish`.
    type Route: ?Sized + Sync;
    /// The broker's name for the kind.
    fn exchange_type() -> ExchangeType;
}

/// The kinds whose bindings choose messages: [`Direct`], [`Topic`] and
/// [`HeadersKind`], which bind and publish with their
/// [`Binding`](Kind::Binding) and [`Route`](Kind::Route). A [`Fanout`]
/// exchange binds and publishes with nothing at all (its own `bind(&queue)`
/// and `publish(&value)`).
pub trait Selective: Kind {}

mod sealed {
    use super::{FieldTable, Kind, ValidationError};

    /// What differs between the kinds, out of the public API: how a
    /// binding and a route are checked, and what they become on the wire.
    pub trait Sealed {
        /// Whether a publish is mandatory unless its options say: for the
        /// kinds whose bindings choose messages (a binding is expected),
        /// not for fanout.
        const MANDATORY: bool = true;

        /// A binding's routing key and arguments, checked.
        fn binding(
            binding: &<Self as Kind>::Binding,
        ) -> Result<(&str, FieldTable), ValidationError>
        where
            Self: Kind;

        /// A publish's routing key, and the headers the route sets, if
        /// it sets any, checked.
        fn route(
            route: &<Self as Kind>::Route,
        ) -> Result<(&str, Option<FieldTable>), ValidationError>
        where
            Self: Kind;
    }
}

/// What a [`Fanout`] exchange's `publish` takes as its body: a value its
/// subscribers can decode, that is any type that is `Serialize` and
/// `DeserializeOwned` (`String`, numbers, your `serde` structs, JSON
/// values), but not a bare `&str`.
///
/// A fanout exchange routes by nothing, so its `publish` takes one
/// argument. Given a routing key and a body (`logs.publish("kern.info",
/// &msg)`, a topic exchange's call), rustc says the method takes one
/// argument and suggests dropping the second one, which would send the
/// routing key as the message: that call does not compile, because a
/// bare `&str` is not a fanout body. A text body is a `String`
/// (`publish(&text)`, `publish(&"hello".to_string())`).
///
/// ```compile_fail,E0277
/// # async fn run(client: rabbitkit::Client) {
/// let orders = rabbitkit::Exchange::fanout("orders").declare(&client).await.unwrap();
/// orders.publish("order.placed.eu").await; // a routing key, not a body
/// # }
/// ```
///
/// ```compile_fail,E0277
/// # async fn run(client: rabbitkit::Client) {
/// let orders = rabbitkit::Exchange::fanout("orders").declare(&client).await.unwrap();
/// orders.publish(&"order.placed.eu").await; // borrowed, still a routing key
/// # }
/// ```
///
/// ```no_run
/// # async fn run(client: rabbitkit::Client) -> Result<(), rabbitkit::Report> {
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Order { id: u64 }
/// let orders = rabbitkit::Exchange::fanout("orders").declare(&client).await?;
/// orders.publish(&Order { id: 7 }).await?;
/// orders.publish(&"order 7 placed".to_string()).await?;
/// // Routing by key is a topic (or direct) exchange's:
/// let events = rabbitkit::Exchange::topic("order_events").declare(&client).await?;
/// events.publish("order.placed.eu", &Order { id: 7 }).await?;
/// # Ok(()) }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a fanout body: a fanout exchange's `publish` takes the body alone (a bare string there is most likely a routing key: to route by key, publish to `Exchange::topic` or `Exchange::direct`; a text body is a `String`)",
    label = "a routing key? a fanout exchange routes by nothing",
    note = "to route by a key, publish to `Exchange::topic` or `Exchange::direct`: `publish(\"order.placed.eu\", &order)`",
    note = "a text body is a `String`: `publish(&text)`, `publish(&\"hello\".to_string())`"
)]
pub trait FanoutBody: Serialize {}

impl<T: Serialize + DeserializeOwned> FanoutBody for T {}

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
    ($kind:ty: $type:ident, binds $binding:ty, routes $route:ty) => {
        impl Kind for $kind {
            type Binding = $binding;
            type Route = $route;
            fn exchange_type() -> ExchangeType {
                ExchangeType::$type
            }
        }
    };
}
kind!(Fanout: Fanout, binds (), routes ());
kind!(Direct: Direct, binds str, routes str);
kind!(Topic: Topic, binds TopicPattern, routes str);
kind!(HeadersKind: Headers, binds HeadersMatch, routes Headers);
impl Selective for Direct {}
impl Selective for Topic {}
impl Selective for HeadersKind {}

impl sealed::Sealed for Fanout {
    const MANDATORY: bool = false;
    fn binding((): &()) -> Result<(&str, FieldTable), ValidationError> {
        Ok(("", FieldTable::default()))
    }
    fn route((): &()) -> Result<(&str, Option<FieldTable>), ValidationError> {
        Ok(("", None))
    }
}

impl sealed::Sealed for Direct {
    fn binding(key: &str) -> Result<(&str, FieldTable), ValidationError> {
        check_routing_key(key, false)?;
        Ok((key, FieldTable::default()))
    }
    fn route(key: &str) -> Result<(&str, Option<FieldTable>), ValidationError> {
        check_routing_key(key, false)?;
        Ok((key, None))
    }
}

impl sealed::Sealed for Topic {
    fn binding(pattern: &TopicPattern) -> Result<(&str, FieldTable), ValidationError> {
        Ok((pattern.as_str(), FieldTable::default()))
    }
    /// Plain words: `*` and `#` are wildcards only in patterns.
    fn route(key: &str) -> Result<(&str, Option<FieldTable>), ValidationError> {
        check_routing_key(key, true)?;
        Ok((key, None))
    }
}

impl sealed::Sealed for HeadersKind {
    fn binding(matching: &HeadersMatch) -> Result<(&str, FieldTable), ValidationError> {
        Ok(("", matching.to_arguments()?))
    }
    fn route(headers: &Headers) -> Result<(&str, Option<FieldTable>), ValidationError> {
        headers.check_keys()?;
        Ok(("", Some(headers.to_table())))
    }
}

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

    // The bodies of bind, bind_exchange, publish and subscribe, for every
    // kind: the kind's `Sealed` half checks the binding or route and says
    // what goes on the wire.

    async fn bind_to(&self, queue: &str, binding: &K::Binding) -> Result<(), DeclareError> {
        let (key, arguments) = K::binding(binding)?;
        self.bind_checked(queue, key, arguments).await
    }

    async fn bind_checked(
        &self,
        queue: &str,
        key: &str,
        arguments: FieldTable,
    ) -> Result<(), DeclareError> {
        self.client
            .declare(Declaration::Binding(BindingSpec {
                queue: queue.into(),
                exchange: self.name.clone(),
                routing_key: key.into(),
                arguments,
            }))
            .await
    }

    async fn bind_exchange_to<D: Kind>(
        &self,
        destination: &Exchange<D>,
        binding: &K::Binding,
    ) -> Result<(), DeclareError> {
        let (key, arguments) = K::binding(binding)?;
        self.client
            .declare(Declaration::ExchangeBinding(ExchangeBindingSpec {
                destination: destination.name.clone(),
                source: self.name.clone(),
                routing_key: key.into(),
                arguments,
            }))
            .await
    }

    async fn publish_to<T: Serialize + ?Sized>(
        &self,
        route: &K::Route,
        value: &T,
        options: &PublishOptions,
    ) -> Result<Confirmed, SendError> {
        let (key, route_headers) = K::route(route).map_err(SendError::Invalid)?;
        let mut msg = outgoing(&self.name, key, value, options, |p| match route_headers {
            // Over the options' headers: a header in both takes the route's value.
            Some(route_headers) => {
                let mut headers = options.headers.clone().unwrap_or_default();
                for (k, v) in route_headers.inner() {
                    headers.insert(k.clone(), v.clone());
                }
                p.with_headers(headers)
            }
            None => p,
        })?;
        // Mandatory unless the options say otherwise, but to a fanout exchange.
        msg.mandatory = options.mandatory.unwrap_or(K::MANDATORY);
        Ok(self.publisher.publish(msg).await?)
    }

    /// A temporary queue bound with each of `bindings`, all checked before
    /// anything reaches the network. A subscribe that fails (e.g. the
    /// exchange is gone) deletes the temporary queue it declared.
    async fn subscribe_to<'b, T: DeserializeOwned>(
        &self,
        bindings: impl IntoIterator<Item = &'b K::Binding>,
    ) -> Result<Subscription<T>, SubscribeError>
    where
        K::Binding: 'b,
    {
        let bindings = bindings
            .into_iter()
            .map(K::binding)
            .collect::<Result<Vec<_>, _>>()?;
        let queue = Queue::temporary().declare(&self.client).await?;
        let subscribed = async {
            for (key, arguments) in bindings {
                self.bind_checked(queue.name(), key, arguments).await?;
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

/// Direct, topic and headers exchanges: bound and published to with what
/// the kind routes on ([`Kind::Binding`], [`Kind::Route`]).
impl<K: Selective> Exchange<K> {
    /// Binds a queue with what this kind matches on: a routing key
    /// ([`Direct`]; call again for more keys), a [`TopicPattern`], or a
    /// [`HeadersMatch`] (all or any).
    ///
    /// ```no_run
    /// # async fn run(client: rabbitkit::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use rabbitkit::{Exchange, HeadersMatch, Queue};
    /// let q = Queue::temporary().declare(&client).await?;
    /// Exchange::direct("direct_logs").declare(&client).await?.bind(&q, "error").await?;
    /// Exchange::topic("topic_logs").declare(&client).await?.bind(&q, &"kern.*".parse()?).await?;
    /// let pdf = HeadersMatch::all().header("format", "pdf");
    /// Exchange::headers("docs").declare(&client).await?.bind(&q, &pdf).await?;
    /// # Ok(()) }
    /// ```
    pub async fn bind(&self, queue: &Queue, binding: &K::Binding) -> Result<(), DeclareError> {
        self.bind_to(queue.name(), binding).await
    }

    /// Binds another exchange: the messages published here that `binding`
    /// matches (a routing key, a pattern, a header match) are also routed
    /// by `destination`, with their routing key unchanged (an
    /// exchange-to-exchange binding, recovered after failover like queue
    /// bindings). `destination` may be [`internal`](ExchangeBuilder::internal).
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
        binding: &K::Binding,
    ) -> Result<(), DeclareError> {
        self.bind_exchange_to(destination, binding).await
    }

    /// Publishes with what this kind routes by (persistent, confirmed): a
    /// routing key ([`Direct`]), a routing key of plain words, no wildcards
    /// ([`Topic`]), or [`Headers`] (a header also set in
    /// [`PublishOptions::headers`] takes this value).
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        route: &K::Route,
        value: &T,
    ) -> Result<Confirmed, SendError> {
        self.publish_to(route, value, &PublishOptions::default())
            .await
    }

    /// [`publish`](Self::publish) with options.
    pub async fn publish_with<T: Serialize + ?Sized>(
        &self,
        route: &K::Route,
        value: &T,
        options: PublishOptions,
    ) -> Result<Confirmed, SendError> {
        self.publish_to(route, value, &options).await
    }
}

impl Exchange<Fanout> {
    /// Binds a queue: it gets a copy of every message.
    pub async fn bind(&self, queue: &Queue) -> Result<(), DeclareError> {
        self.bind_to(queue.name(), &()).await
    }

    /// Binds another exchange: every message published here is also routed
    /// by `destination`, as if published to it with the same routing key
    /// (an exchange-to-exchange binding, recovered after failover like
    /// queue bindings). `destination` may be [`internal`](ExchangeBuilder::internal).
    pub async fn bind_exchange<D: Kind>(
        &self,
        destination: &Exchange<D>,
    ) -> Result<(), DeclareError> {
        self.bind_exchange_to(destination, &()).await
    }

    /// Publishes to every bound queue (persistent, confirmed). The body is
    /// a [`FanoutBody`]: any `serde` value its subscribers can decode, not
    /// a bare `&str` (which here is most likely a routing key).
    pub async fn publish<T: FanoutBody + ?Sized>(&self, value: &T) -> Result<Confirmed, SendError> {
        self.publish_to(&(), value, &PublishOptions::default())
            .await
    }

    /// [`publish`](Self::publish) with options.
    pub async fn publish_with<T: FanoutBody + ?Sized>(
        &self,
        value: &T,
        options: PublishOptions,
    ) -> Result<Confirmed, SendError> {
        self.publish_to(&(), value, &options).await
    }

    /// A subscriber of its own: a temporary queue bound to this exchange.
    /// A subscribe that fails (e.g. the exchange is gone) deletes the
    /// temporary queue it declared, here and for the other exchange kinds.
    pub async fn subscribe<T: DeserializeOwned>(&self) -> Result<Subscription<T>, SubscribeError> {
        self.subscribe_to([&()]).await
    }
}

impl Exchange<Direct> {
    /// A temporary queue bound to each of `keys` (any strings: `&["a", "b"]`,
    /// a `Vec<String>` from the command line, ...).
    pub async fn subscribe<T: DeserializeOwned>(
        &self,
        keys: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Result<Subscription<T>, SubscribeError> {
        let keys: Vec<_> = keys.into_iter().collect();
        self.subscribe_to(keys.iter().map(AsRef::as_ref)).await
    }
}

impl Exchange<Topic> {
    /// A temporary queue bound with each pattern.
    pub async fn subscribe<T: DeserializeOwned>(
        &self,
        patterns: &[TopicPattern],
    ) -> Result<Subscription<T>, SubscribeError> {
        self.subscribe_to(patterns).await
    }
}

impl Exchange<HeadersKind> {
    /// A temporary queue bound with `matching`.
    pub async fn subscribe<T: DeserializeOwned>(
        &self,
        matching: &HeadersMatch,
    ) -> Result<Subscription<T>, SubscribeError> {
        self.subscribe_to([matching]).await
    }
}

#[cfg(test)]
mod tests {
    use super::sealed::Sealed;
    use super::*;

    #[test]
    fn each_kind_checks_what_it_binds_with_and_routes_by() {
        assert_eq!(Fanout::route(&()).unwrap(), ("", None));
        assert_eq!(Direct::binding("a.*").unwrap().0, "a.*");
        assert_eq!(Direct::route("a.*").unwrap(), ("a.*", None));
        // Wildcards mean something in a topic pattern, nothing in a key.
        assert!(Topic::route("a.*").is_err());
        assert_eq!(Topic::route("a.b").unwrap(), ("a.b", None));
        let pattern = TopicPattern::new("a.#").unwrap();
        assert_eq!(Topic::binding(&pattern).unwrap().0, "a.#");
        // Headers route with an empty key; the match goes in the arguments.
        let pdf_match = HeadersMatch::all().header("f", "pdf");
        let (key, args) = HeadersKind::binding(&pdf_match).unwrap();
        assert_eq!(key, "");
        assert_eq!(args.inner().len(), 2); // f, x-match
        assert!(HeadersKind::binding(&HeadersMatch::all()).is_err());
        let pdf = Headers::new().with("f", "pdf");
        let (key, headers) = HeadersKind::route(&pdf).unwrap();
        assert_eq!((key, headers.unwrap().inner().len()), ("", 1));
        let long = "k".repeat(256);
        assert!(Direct::binding(&long).is_err());
        assert!(HeadersKind::route(&Headers::new().with(long, 1)).is_err());
    }

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
