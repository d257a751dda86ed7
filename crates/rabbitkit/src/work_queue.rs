//! The work queue: tasks spread over several workers.
//!
//! Safe defaults: the queue is a durable quorum queue (as the official
//! tutorials' `task_queue`), tasks are persistent and confirmed, each worker
//! takes few tasks at a time (prefetch, for fair dispatch) and acknowledges
//! each only once its handler succeeded. A handler error (or panic) retries
//! the task once at the tail of the queue, then parks it in
//! `<queue>.parked` with its error and attempt count (the default
//! [`OnError`]); with a [`dead_letter`](WorkQueueBuilder::dead_letter)
//! exchange it is dead-lettered there instead ([`OnError::RequeueOnce`]).
//! Nothing is dropped unless asked ([`OnError::Drop`]). A body that does not
//! decode is dead-lettered (or dropped) at once.
//!
//! A worker runs one handler at a time unless asked for more
//! ([`concurrency`](WorkQueueBuilder::concurrency)): the safe default, as
//! handlers written for one-at-a-time (shared state, ordering) stay
//! correct. A handler that waits (on a database, an HTTP call) wants
//! `concurrency(n)` with `n` up to the prefetch. [`WorkQueue::work_until`]
//! stops gracefully on a [`Shutdown`].

use std::marker::PhantomData;
use std::time::Duration;

use rabbitkit_core::{Client, Confirmed, ConsumeOptions, DeclareError, QueueInfo};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::HandleOptions;
use crate::error::{SendError, SubscribeError};
use crate::message::{HandleReport, OnError, PublishOptions, Subscription};
use crate::queue::{Queue, QueueBuilder};
use crate::report::Report;
use crate::shutdown::Shutdown;

/// The default number of tasks a worker holds at once.
pub const DEFAULT_PREFETCH: u16 = 20;

/// Builds a [`WorkQueue`] of tasks of type `T`.
///
/// ```no_run
/// # async fn run(client: rabbitkit::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use rabbitkit::WorkQueue;
/// let tasks = WorkQueue::<String>::builder("task_queue")
///     .prefetch(1)
///     .declare(&client)
///     .await?;
/// tasks.submit(&"Hello...".to_string()).await?;
/// let report = tasks
///     .work(|task: String| async move {
///         println!("working on {task}");
///         Ok(())
///     })
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct WorkQueueBuilder<T> {
    queue: QueueBuilder,
    prefetch: u16,
    concurrency: usize,
    /// `None`: the default, or [`OnError::RequeueOnce`] with a dead-letter
    /// exchange.
    on_error: Option<OnError>,
    dead_letter: bool,
    consumer_timeout: Option<Duration>,
    /// The share of the consumer timeout after which a running handler
    /// is warned about.
    warn_share: f64,
    _t: PhantomData<fn() -> T>,
}

/// The share of the consumer timeout after which a running handler is
/// warned about, unless [`WorkQueueBuilder::warn_long_running`] says
/// otherwise.
pub const DEFAULT_WARN_SHARE: f64 = 0.5;

/// RabbitMQ's default `consumer_timeout`: 30 minutes.
pub const BROKER_CONSUMER_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A durable (quorum, by default) queue of tasks of type `T` shared by workers.
#[derive(Debug, Clone)]
pub struct WorkQueue<T> {
    queue: Queue,
    prefetch: u16,
    concurrency: usize,
    on_error: OnError,
    consumer_timeout: Option<Duration>,
    /// When a running handler is warned about: after `.0` of the
    /// consumer timeout `.1`; `None` when the queue has no timeout.
    long_running: Option<(Duration, f64)>,
    /// Declared as a quorum queue (the only type with a consumer timeout
    /// on RabbitMQ 4.3).
    quorum: bool,
    _t: PhantomData<fn() -> T>,
}

impl<T> WorkQueue<T> {
    /// A work queue on a durable quorum queue named `name`: what the
    /// official tutorials declare as `task_queue`
    /// (`durable=True, arguments={'x-queue-type': 'quorum'}`).
    /// [`classic`](WorkQueueBuilder::classic) makes it a durable classic
    /// queue instead.
    pub fn builder(name: impl Into<String>) -> WorkQueueBuilder<T> {
        WorkQueueBuilder {
            queue: Queue::durable(name),
            prefetch: DEFAULT_PREFETCH,
            concurrency: 1,
            on_error: None,
            dead_letter: false,
            consumer_timeout: None,
            warn_share: DEFAULT_WARN_SHARE,
            _t: PhantomData,
        }
    }

    /// The underlying queue.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Ready tasks and workers.
    pub async fn info(&self) -> Result<QueueInfo, DeclareError> {
        self.queue.info().await
    }
}

impl<T> WorkQueueBuilder<T> {
    /// Tasks a worker holds at once (default 20; 1 for the strictest fairness).
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// Tasks a worker handles at once (default 1: one after another). Each
    /// task is acknowledged when its own handler ends, in any order. Tasks
    /// beyond the [`prefetch`](Self::prefetch) never run at once (the broker
    /// sends no more), so `n` up to the prefetch is what counts; a larger
    /// `n` raises the prefetch to `n`.
    ///
    /// ```no_run
    /// # async fn run(client: rabbitkit::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// // A handler that waits 50 ms on a database: 32 at once do ~640 tasks/s, not 20.
    /// let tasks = rabbitkit::WorkQueue::<String>::builder("emails")
    ///     .prefetch(64)
    ///     .concurrency(32)
    ///     .declare(&client)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How long a task may run before the broker takes it back (the
    /// `x-consumer-timeout` consumer argument; see
    /// [`ConsumeOptions::consumer_timeout`]). Without it the broker's own
    /// `consumer_timeout` applies (30 minutes by default). On RabbitMQ 4.3
    /// the broker then cancels the worker's consumer and requeues its
    /// unacknowledged tasks; the worker subscribes again at once and goes
    /// on (the task that ran too long runs again). RabbitMQ 4.3 has
    /// consumer timeouts on quorum queues only (and refuses the argument on
    /// a classic queue): on a classic work queue there, nothing is sent and
    /// a task may run as long as it takes (logged once per subscription).
    pub fn consumer_timeout(mut self, timeout: Duration) -> Self {
        self.consumer_timeout = Some(timeout);
        self
    }

    /// When a task still running is worth a warning: after this share
    /// (0 to 1; default 0.5) of the consumer timeout that applies to it
    /// ([`consumer_timeout`](Self::consumer_timeout), else the queue's
    /// [`QueueBuilder::consumer_timeout`](crate::QueueBuilder::consumer_timeout),
    /// else the broker's default of 30 minutes), a WARN log and an
    /// [`Event::HandlerRunningLong`](crate::Event::HandlerRunningLong),
    /// once per task: a handler that runs long is visible before the
    /// broker takes its task back. A classic queue on RabbitMQ 4.3 has no
    /// consumer timeout, so no warning.
    pub fn warn_long_running(mut self, share: f64) -> Self {
        self.warn_share = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            DEFAULT_WARN_SHARE
        };
        self
    }

    /// What happens to a task whose handler fails (returns `Err` or
    /// panics). Default: one more try at the tail of the queue, then parked
    /// in `<queue>.parked` ([`OnError::default`]); with a
    /// [`dead_letter`](Self::dead_letter) exchange, one more try then
    /// dead-lettered ([`OnError::RequeueOnce`]).
    pub fn on_error(mut self, on_error: OnError) -> Self {
        self.on_error = Some(on_error);
        self
    }

    /// Retries failed tasks after the policy's delays, then parks them:
    /// short for `on_error(OnError::Retry(policy))`. See [`RetryPolicy`](crate::RetryPolicy).
    pub fn retry(self, policy: crate::RetryPolicy) -> Self {
        self.on_error(OnError::Retry(policy))
    }

    /// Use a quorum queue (replicated over the cluster): the default, said
    /// explicitly.
    pub fn quorum(mut self) -> Self {
        self.queue = self.queue.quorum();
        self
    }

    /// Use a durable classic queue (one node holds it) instead of a quorum queue.
    pub fn classic(mut self) -> Self {
        self.queue = self.queue.classic();
        self
    }

    /// Failed tasks go to this exchange: unless [`on_error`](Self::on_error)
    /// says otherwise, a failed task gets one more try and is then
    /// dead-lettered here ([`OnError::RequeueOnce`]) instead of parked.
    pub fn dead_letter(mut self, exchange: &str) -> Self {
        self.queue = self.queue.dead_letter(exchange);
        self.dead_letter = true;
        self
    }

    /// ... with this routing key.
    pub fn dead_letter_routing_key(mut self, key: &str) -> Self {
        self.queue = self.queue.dead_letter_routing_key(key);
        self
    }

    /// Tasks expire after this long in the queue.
    pub fn message_ttl(mut self, ttl: Duration) -> Self {
        self.queue = self.queue.message_ttl(ttl);
        self
    }

    /// Change anything else about the queue.
    pub fn queue(mut self, f: impl FnOnce(QueueBuilder) -> QueueBuilder) -> Self {
        self.queue = f(self.queue);
        self
    }

    /// Declares the queue.
    pub async fn declare(self, client: &Client) -> Result<WorkQueue<T>, DeclareError> {
        let quorum = self.queue.clone().build().is_ok_and(|spec| {
            matches!(spec.arguments.inner().get("x-queue-type"),
                Some(rabbitkit_core::AMQPValue::LongString(t)) if t.to_string() == "quorum")
        });
        let on_error = match self.on_error {
            Some(on_error) => on_error,
            None if self.dead_letter => OnError::RequeueOnce,
            None => OnError::default(),
        };
        let parks = matches!(on_error, OnError::Retry(_));
        let queue_timeout = self.queue.clone().build().ok().and_then(|spec| {
            match spec.arguments.inner().get("x-consumer-timeout") {
                Some(rabbitkit_core::AMQPValue::LongLongInt(ms)) => {
                    u64::try_from(*ms).ok().map(Duration::from_millis)
                }
                _ => None,
            }
        });
        let cancels = client
            .server()
            .is_some_and(|s| s.cancels_timed_out_consumers());
        let timeout = self.consumer_timeout.or(queue_timeout).or(
            // The broker's default; a classic queue on 4.3 has none.
            (quorum || !cancels).then_some(BROKER_CONSUMER_TIMEOUT),
        );
        let long_running = timeout
            .filter(|_| quorum || !cancels)
            .map(|t| (t, self.warn_share));
        let mut queue = self.queue;
        if let OnError::Retry(policy) = &on_error
            && let Some((min, max)) = policy.queue_delays()
        {
            let name = queue.clone().build()?.name;
            let refuse = |reason: String| DeclareError::Invalid {
                what: "retry policy".into(),
                value: name.clone(),
                reason,
            };
            if !quorum {
                return Err(refuse(
                    "RetryPolicy::in_queue needs a quorum queue (the queue delays the retries)"
                        .into(),
                ));
            }
            match client.server() {
                Some(server) if server.has_delayed_retry() => {}
                Some(server) => {
                    return Err(refuse(format!(
                        "RetryPolicy::in_queue needs RabbitMQ 4.3+ (quorum queue delayed retry);                          this broker is {server}: use RetryPolicy::new or exponential"
                    )));
                }
                None => {
                    return Err(refuse(
                        "RetryPolicy::in_queue needs RabbitMQ 4.3+, and the broker's version is unknown"
                            .into(),
                    ));
                }
            }
            let ms = |d: Duration| {
                rabbitkit_core::AMQPValue::LongLongInt(
                    i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
                )
            };
            queue = queue
                .argument(
                    "x-delayed-retry-type",
                    rabbitkit_core::AMQPValue::LongString("failed".into()),
                )
                .argument("x-delayed-retry-min", ms(min))
                .argument("x-delayed-retry-max", ms(max));
        }
        Ok(WorkQueue {
            queue: queue.parks_failures(parks).declare(client).await?,
            quorum,
            prefetch: self
                .prefetch
                .max(u16::try_from(self.concurrency).unwrap_or(u16::MAX)),
            concurrency: self.concurrency,
            on_error,
            long_running,
            consumer_timeout: self.consumer_timeout,
            _t: PhantomData,
        })
    }
}

impl<T: Serialize> WorkQueue<T> {
    /// Submits a task (persistent) and waits for the broker's confirm.
    /// Once it returns `Ok`, the task is on disk (on a majority of the
    /// nodes for a quorum queue).
    pub async fn submit(&self, task: &T) -> Result<Confirmed, SendError> {
        self.queue
            .send_with(task, PublishOptions::new().persistent(true))
            .await
    }

    /// [`submit`](Self::submit) with options (persistent unless
    /// [`PublishOptions::persistent`] says otherwise).
    pub async fn submit_with(
        &self,
        task: &T,
        options: PublishOptions,
    ) -> Result<Confirmed, SendError> {
        self.queue.send_with(task, options).await
    }
}

impl<T: DeserializeOwned> WorkQueue<T> {
    /// Takes tasks as a stream, to acknowledge yourself.
    pub async fn subscribe(&self) -> Result<Subscription<T>, SubscribeError> {
        let mut options = ConsumeOptions::new().prefetch(self.prefetch);
        let cancels =
            (self.queue.client().server()).is_some_and(|s| s.cancels_timed_out_consumers());
        match self.consumer_timeout {
            // RabbitMQ 4.3 has consumer timeouts on quorum queues only, and
            // refuses the argument elsewhere (406): nothing to time out.
            Some(_) if cancels && !self.quorum => {
                tracing::warn!(target: "rabbitkit", queue = self.queue.name(), "RabbitMQ 4.3 has no consumer timeout on classic queues: consumer_timeout not sent");
            }
            Some(timeout) => options = options.consumer_timeout(timeout),
            None => {}
        }
        self.queue.subscribe_with(options).await
    }

    /// Runs `handler` on each task until the subscription ends: `Ok` acks
    /// it, `Err` follows the queue's [`OnError`] policy. Up to
    /// [`concurrency`](WorkQueueBuilder::concurrency) handlers run at once.
    pub async fn work<F, Fut>(&self, handler: F) -> Result<HandleReport, SubscribeError>
    where
        F: FnMut(T) -> Fut,
        Fut: Future<Output = Result<(), Report>>,
    {
        let sub = self.subscribe().await?;
        Ok(sub.handle_with(self.handle_options(), handler).await)
    }

    /// [`work`](Self::work) with a handler that takes each task with what
    /// it needs to know about it ([`Incoming`](crate::Incoming)): its
    /// message id (to deduplicate on), attempt, redelivered flag, headers.
    /// With `shutdown`, stops as [`work_until`](Self::work_until) does.
    ///
    /// ```no_run
    /// # async fn run(client: rabbitkit::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use rabbitkit::{Incoming, WorkQueue};
    /// let emails = WorkQueue::<String>::builder("emails").declare(&client).await?;
    /// emails
    ///     .work_incoming(None, |email: Incoming<String>| async move {
    ///         if email.redelivered() {
    ///             // Perhaps sent already: check by its id first.
    ///             println!("{:?} again", email.message_id());
    ///         }
    ///         Ok(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn work_incoming<F, Fut>(
        &self,
        shutdown: Option<&Shutdown>,
        handler: F,
    ) -> Result<HandleReport, SubscribeError>
    where
        F: FnMut(crate::Incoming<T>) -> Fut,
        Fut: Future<Output = Result<(), Report>>,
    {
        let sub = self.subscribe().await?;
        let mut options = self.handle_options();
        if let Some(shutdown) = shutdown {
            options = options.shutdown(shutdown);
        }
        Ok(sub.handle_incoming(options, handler).await)
    }

    /// [`work`](Self::work) until `shutdown` is given, then stops
    /// gracefully: no new tasks, tasks received but not started go back to
    /// the queue, tasks in progress finish (and are acknowledged) up to the
    /// shutdown's deadline; those still running then are abandoned and
    /// requeued. See [`Shutdown`].
    ///
    /// ```no_run
    /// # async fn run(client: rabbitkit::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use rabbitkit::{Shutdown, WorkQueue};
    /// let tasks = WorkQueue::<String>::builder("task_queue").declare(&client).await?;
    /// let shutdown = Shutdown::on_signals(Duration::from_secs(30));
    /// tasks
    ///     .work_until(&shutdown, |task: String| async move {
    ///         println!("{task}");
    ///         Ok(())
    ///     })
    ///     .await?;
    /// client.close().await;
    /// # Ok(()) }
    /// ```
    pub async fn work_until<F, Fut>(
        &self,
        shutdown: &Shutdown,
        handler: F,
    ) -> Result<HandleReport, SubscribeError>
    where
        F: FnMut(T) -> Fut,
        Fut: Future<Output = Result<(), Report>>,
    {
        let sub = self.subscribe().await?;
        Ok(sub
            .handle_with(self.handle_options().shutdown(shutdown), handler)
            .await)
    }

    /// Runs `workers` loops like [`work_until`](Self::work_until), each on
    /// its own consumer (its own channel and prefetch) and its own Tokio
    /// task, so CPU-bound handlers use several cores of a multi-threaded
    /// runtime. Each loop runs up to
    /// [`concurrency`](WorkQueueBuilder::concurrency) handlers. Returns
    /// when every loop has stopped (the subscriptions ended, or `shutdown`
    /// was given), with their reports added up.
    ///
    /// ```no_run
    /// # async fn run(client: rabbitkit::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use rabbitkit::{Shutdown, WorkQueue};
    /// let thumbnails = WorkQueue::<String>::builder("thumbnails").prefetch(2).declare(&client).await?;
    /// let shutdown = Shutdown::on_signals(Duration::from_secs(30));
    /// let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    /// thumbnails
    ///     .work_parallel(cores, &shutdown, |path: String| async move {
    ///         println!("resizing {path}"); // CPU-bound work
    ///         Ok(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn work_parallel<F, Fut>(
        &self,
        workers: usize,
        shutdown: &Shutdown,
        handler: F,
    ) -> Result<HandleReport, SubscribeError>
    where
        T: Send + 'static,
        F: Fn(T) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<(), Report>> + Send + 'static,
    {
        // Subscribe them all first: an error stops before any work starts.
        let mut subs = Vec::new();
        for _ in 0..workers.max(1) {
            subs.push(self.subscribe().await?);
        }
        let tasks: Vec<_> = subs
            .into_iter()
            .map(|sub| {
                let options = self.handle_options().shutdown(shutdown);
                tokio::spawn(sub.handle_with(options, handler.clone()))
            })
            .collect();
        let mut total = HandleReport::default();
        for task in tasks {
            match task.await {
                Ok(report) => total.merge(&report),
                Err(e) => {
                    tracing::error!(target: "rabbitkit", queue = self.queue.name(), error = %e, "a worker task panicked; its tasks are requeued")
                }
            }
        }
        Ok(total)
    }

    fn handle_options(&self) -> HandleOptions {
        let options = HandleOptions::new()
            .on_error(self.on_error.clone())
            .concurrency(self.concurrency);
        match self.long_running {
            Some((timeout, share)) => options.long_running(timeout, share),
            None => options,
        }
    }
}
