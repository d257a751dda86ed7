//! One subscription, several typed handlers: a [`Router`] picks the handler
//! of each message by its routing key (exact, or a topic pattern) or by its
//! `type` property, decodes the body into that handler's type, and settles
//! it like [`Subscription::handle`](crate::Subscription::handle). A message
//! no route takes follows the router's [`OnError`] policy: it is never
//! silently acknowledged.
//!
//! ```no_run
//! # async fn run(client: rabbitkit::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use rabbitkit::{HandleOptions, OnError, Queue, Router};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct OrderPlaced { id: u64 }
//! #[derive(Deserialize)]
//! struct OrderShipped { id: u64, carrier: String }
//!
//! let orders = Queue::named("orders").dead_letter("orders.dlx").declare(&client).await?;
//! let router = Router::new()
//!     .route("order.placed", |o: OrderPlaced| async move {
//!         println!("placed {}", o.id);
//!         Ok(())
//!     })
//!     .route("order.shipped.*", |o: OrderShipped| async move {
//!         println!("{} shipped by {}", o.id, o.carrier);
//!         Ok(())
//!     })
//!     .route_type("refund", |amount: u64| async move {
//!         println!("refund of {amount}");
//!         Ok(())
//!     })
//!     .on_error(OnError::DeadLetter); // unknown kinds and failures: dead-lettered
//! let report = router.run(&orders, HandleOptions::new().concurrency(8)).await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use futures::future::BoxFuture;
use rabbitkit_core::{ConsumeOptions, DeclareError, Delivery};
use serde::de::DeserializeOwned;

use crate::binding::TopicPattern;
use crate::codec;
use crate::engine::{HandleOptions, Settle, call_handler, drive, handled};
use crate::error::SubscribeError;
use crate::message::{HandleReport, Incoming, OnError, Subscription, original_routing_key};
use crate::queue::Queue;
use crate::report::Report;

/// An async function that handles messages of type `T`: any
/// `Fn(T) -> impl Future<Output = Result<(), Report>>` (`Send + Sync +
/// 'static`); `?` turns any error into a [`Report`], and a closure's
/// `Ok(())` needs no annotation.
pub trait Handler<T>: Send + Sync + 'static {
    /// Runs the handler; the error is kept as text for the log.
    fn call(&self, message: T) -> BoxFuture<'static, Result<(), String>>;
}

impl<T, F, Fut> Handler<T> for F
where
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Report>> + Send + 'static,
{
    fn call(&self, message: T) -> BoxFuture<'static, Result<(), String>> {
        // A panic, at the call or while it runs, is the handler's error.
        let started = call_handler(|| self(message));
        Box::pin(handled(started))
    }
}

/// What a route matches.
#[derive(Debug, Clone)]
enum Match {
    /// The routing key (a pattern without wildcards matches exactly).
    Key(TopicPattern),
    /// The `type` property.
    Type(String),
}

impl Match {
    fn matches(&self, delivery: &Delivery) -> bool {
        match self {
            // A retried copy came back through the default exchange: it
            // carries the key it was published with.
            Self::Key(pattern) => pattern.matches(original_routing_key(delivery)),
            Self::Type(kind) => delivery
                .properties()
                .kind()
                .as_ref()
                .is_some_and(|k| k.as_str() == kind),
        }
    }
}

/// Decodes a body (within `max_inflated` bytes) and starts its handler.
type Start = dyn Fn(&Delivery, usize) -> Result<BoxFuture<'static, Result<(), String>>, String>
    + Send
    + Sync;

struct Route {
    on: Match,
    start: Arc<Start>,
}

/// Routes the messages of one subscription to typed handlers. Routes are
/// tried in the order they were added; the first that matches takes the
/// message. Build it, then [`run`](Self::run) it on a queue or
/// [`handle`](Self::handle) a subscription.
#[must_use]
pub struct Router {
    routes: Vec<Route>,
    on_error: OnError,
    prefetch: Option<u16>,
    errors: Vec<DeclareError>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field(
                "routes",
                &self.routes.iter().map(|r| &r.on).collect::<Vec<_>>(),
            )
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// A router without routes; failures (errors and panics) and unknown
    /// kinds follow the default [`OnError`] (one more try, then parked)
    /// unless [`on_error`](Self::on_error) says otherwise.
    pub fn new() -> Self {
        Self {
            routes: Vec::new(),
            on_error: OnError::default(),
            prefetch: None,
            errors: Vec::new(),
        }
    }

    /// Messages whose routing key matches `pattern` (exact, or a topic
    /// pattern with `*` and `#`) go to `handler`, decoded as `T`. An
    /// invalid pattern is reported by [`run`](Self::run) /
    /// [`handle`](Self::handle) as [`SubscribeError::Declare`].
    pub fn route<T: DeserializeOwned + 'static>(
        mut self,
        pattern: &str,
        handler: impl Handler<T>,
    ) -> Self {
        match TopicPattern::new(pattern) {
            Ok(pattern) => self.add(Match::Key(pattern), handler),
            Err(e) => {
                self.errors.push(e.into());
                self
            }
        }
    }

    /// Messages whose `type` property is `kind` go to `handler`, decoded as `T`.
    pub fn route_type<T: DeserializeOwned + 'static>(
        self,
        kind: &str,
        handler: impl Handler<T>,
    ) -> Self {
        self.add(Match::Type(kind.to_owned()), handler)
    }

    /// [`route`](Self::route) for a handler that takes the message with
    /// what it needs to know about it ([`Incoming`]): its id, routing key,
    /// `type`, headers, attempt.
    pub fn route_incoming<T: DeserializeOwned + 'static>(
        mut self,
        pattern: &str,
        handler: impl Handler<Incoming<T>>,
    ) -> Self {
        match TopicPattern::new(pattern) {
            Ok(pattern) => {
                let start: Arc<Start> =
                    Arc::new(move |delivery: &Delivery, max_inflated: usize| {
                        codec::decode_with_limit::<T>(
                            delivery.body(),
                            delivery.properties(),
                            max_inflated,
                        )
                        .map(|body| handler.call(Incoming::new(body, delivery)))
                        .map_err(|e| e.to_string())
                    });
                self.routes.push(Route {
                    on: Match::Key(pattern),
                    start,
                });
                self
            }
            Err(e) => {
                self.errors.push(e.into());
                self
            }
        }
    }

    fn add<T: DeserializeOwned + 'static>(mut self, on: Match, handler: impl Handler<T>) -> Self {
        let start: Arc<Start> = Arc::new(move |delivery: &Delivery, max_inflated: usize| {
            codec::decode_with_limit::<T>(delivery.body(), delivery.properties(), max_inflated)
                .map(|message| handler.call(message))
                .map_err(|e| e.to_string())
        });
        self.routes.push(Route { on, start });
        self
    }

    /// What happens to a message whose handler failed, or that no route
    /// takes (see [`OnError`]).
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.on_error = on_error;
        self
    }

    /// The prefetch [`run`](Self::run) consumes with (default: the
    /// client's). Handlers beyond it never run at once.
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = Some(prefetch.max(1));
        self
    }

    /// Consumes `queue` (with the router's [`prefetch`](Self::prefetch)) and
    /// routes its messages until the subscription ends or the options'
    /// [`Shutdown`](crate::Shutdown) stops it. The options' `on_error` is
    /// ignored: the router's own applies.
    pub async fn run(
        &self,
        queue: &Queue,
        options: HandleOptions,
    ) -> Result<HandleReport, SubscribeError> {
        if let Some(e) = self.errors.first() {
            return Err(SubscribeError::Declare(e.clone()));
        }
        let mut consume = ConsumeOptions::new();
        consume.prefetch = self.prefetch;
        let sub = queue.subscribe_with::<()>(consume).await?;
        self.handle(sub, options).await
    }

    /// Routes the messages of `subscription` (of any pattern: a queue, an
    /// exchange subscription, a work queue's) until it ends or the options'
    /// [`Shutdown`](crate::Shutdown) stops it. Its element type is ignored:
    /// each route decodes the body into its own.
    pub async fn handle<X>(
        &self,
        mut subscription: Subscription<X>,
        options: HandleOptions,
    ) -> Result<HandleReport, SubscribeError> {
        if let Some(e) = self.errors.first() {
            return Err(SubscribeError::Declare(e.clone()));
        }
        let settle = Settle::new(
            subscription.client.clone(),
            subscription.queue().to_owned(),
            self.on_error.clone(),
        );
        let settle = &settle;
        let max_inflated = subscription.max_inflated;
        let watch = crate::engine::Watch::of(&options, &subscription.client);
        let report = drive(
            &mut subscription.consumer,
            options.concurrency,
            options.shutdown.as_ref(),
            watch,
            |delivery| {
                let copied = settle.copied_already(&delivery);
                let route = (self.routes.iter()).find(|r| !copied && r.on.matches(&delivery));
                let started = route.map(|r| (r.start)(&delivery, max_inflated));
                async move {
                    match started {
                        _ if copied => settle.settle_copied(delivery).await,
                        Some(Ok(work)) => settle.result(delivery, work.await).await,
                        Some(Err(error)) => settle.undecodable(delivery, error).await,
                        None => {
                            let error = format!(
                                "no route for routing key {:?}, type {:?}",
                                original_routing_key(&delivery),
                                delivery.properties().kind().as_ref().map(|k| k.as_str())
                            );
                            settle.failed(delivery, error).await
                        }
                    }
                }
            },
        )
        .await;
        Ok(report)
    }
}
