//! The broker side of one consumer: its registration ([`ConsumerRecord`],
//! kept by the supervisor and replayed after every reconnect), subscribing
//! it on a connection ([`subscribe`]) and the pump that forwards one
//! subscription's deliveries to the application's stream ([`pump`]).
//!
//! A pump never subscribes again: when its subscription ends it cleans up
//! and returns a [`PumpEnd`] to the supervisor, which decides what follows
//! (see `resubscribe.rs`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::Channel;
use lapin::options::BasicConsumeOptions;
use tokio::sync::mpsc;

use crate::acks::Acks;
use crate::channels::open_channel;
use crate::delivery::Delivery;
use crate::error::ConsumeError;
use crate::options::{ConsumeOptions, Options, STREAM_DEFAULT_PREFETCH};
use crate::reply::consume_error;
use crate::session::Session;
use crate::stream::StreamCursor;

/// What a consumer's stream yields.
pub(crate) type Item = Result<Delivery, ConsumeError>;

/// A consumer's registration, replayed after every reconnect.
pub(crate) struct ConsumerRecord {
    pub(crate) id: u64,
    /// The queue; a temporary queue may be replaced (renamed) by recovery.
    queue: Mutex<String>,
    pub(crate) options: ConsumeOptions,
    /// The prefetch it subscribes with.
    pub(crate) prefetch: u16,
    tx: mpsc::Sender<Item>,
    /// Its live subscription, if any.
    subscribed: Mutex<Option<Subscribed>>,
    /// Set by `Consumer::cancel` (through the supervisor): never subscribed
    /// again, and the end of its subscription leaves its channel (and acks)
    /// open for the deliveries still being handled.
    cancelled: AtomicBool,
    /// Stream consumers: where to subscribe again from.
    pub(crate) stream: Option<Arc<StreamCursor>>,
}

/// One live subscription of a consumer.
struct Subscribed {
    generation: u64,
    channel: Channel,
    acks: Option<Arc<Acks>>,
}

impl ConsumerRecord {
    /// A new registration for `queue`, and the receiving end of its stream.
    pub(crate) fn new(
        queue: &str,
        options: ConsumeOptions,
        client_prefetch: u16,
    ) -> (Arc<Self>, mpsc::Receiver<Item>) {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let stream =
            StreamCursor::for_consumer(options.stream_offset, &options.arguments).map(Arc::new);
        let prefetch = match options.prefetch.unwrap_or(client_prefetch) {
            0 if stream.is_some() => STREAM_DEFAULT_PREFETCH,
            prefetch => prefetch,
        };
        let (tx, rx) = mpsc::channel(usize::from(prefetch.max(16)));
        let record = Arc::new(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            queue: Mutex::new(queue.to_owned()),
            options,
            prefetch,
            tx,
            subscribed: Mutex::new(None),
            cancelled: AtomicBool::new(false),
            stream,
        });
        (record, rx)
    }

    /// The queue it consumes from.
    pub(crate) fn queue(&self) -> String {
        self.queue.lock().unwrap().clone()
    }

    /// Whether it consumes a stream (tracks its offset).
    pub(crate) fn is_stream(&self) -> bool {
        self.stream.is_some()
    }

    /// Moves it to another queue (a temporary queue replaced by recovery).
    pub(crate) fn set_queue(&self, queue: &str) {
        *self.queue.lock().unwrap() = queue.to_owned();
    }

    /// Whether the application dropped its stream.
    pub(crate) fn is_dropped(&self) -> bool {
        self.tx.is_closed()
    }

    /// Whether `Consumer::cancel` stopped it.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Marks it cancelled; returns its live channel and consumer tag, to
    /// send the `basic.cancel` on.
    pub(crate) fn cancel(&self) -> Option<(Channel, String)> {
        let subscribed = self.subscribed.lock().unwrap();
        self.cancelled.store(true, Ordering::SeqCst);
        subscribed
            .as_ref()
            .map(|s| (s.channel.clone(), consumer_tag(self.id, s.generation)))
    }

    /// The generation of the connection it is subscribed on, if its
    /// subscription is live.
    pub(crate) fn subscribed_on(&self) -> Option<u64> {
        self.subscribed
            .lock()
            .unwrap()
            .as_ref()
            .filter(|s| s.channel.status().connected())
            .map(|s| s.generation)
    }

    /// Records `sub` as its live subscription (the supervisor does, before
    /// starting its pump).
    /// Whether it was ever subscribed (the broker saw it as a consumer).
    pub(crate) fn was_subscribed(&self) -> bool {
        self.subscribed.lock().unwrap().is_some()
    }

    pub(crate) fn set_subscribed(&self, sub: &Subscription) {
        *self.subscribed.lock().unwrap() = Some(Subscribed {
            generation: sub.generation,
            channel: sub.channel.clone(),
            acks: sub.acks.clone(),
        });
    }

    /// Sends the acks recorded but not yet sent.
    pub(crate) async fn flush_acks(&self) {
        let acks = self
            .subscribed
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|s| s.acks.clone());
        if let Some(acks) = acks {
            let _ = acks.flush().await;
        }
    }

    /// Ends its stream with [`ConsumeError::Cancelled`]: the queue is gone
    /// and it cannot be subscribed again. Waits while the stream is full.
    pub(crate) async fn end_stream(&self) {
        let _ = self
            .tx
            .send(Err(ConsumeError::Cancelled {
                queue: self.queue(),
            }))
            .await;
    }
}

/// A subscription made by [`subscribe`], not yet pumped. Dropped unused,
/// its channel closes (lapin closes a channel whose last handle goes),
/// which cancels its broker consumer.
pub(crate) struct Subscription {
    pub(crate) generation: u64,
    channel: Channel,
    consumer: lapin::Consumer,
    acks: Option<Arc<Acks>>,
}

/// Subscribes `record` on `session`: a channel of its own with its
/// prefetch, then `basic.consume`.
pub(crate) async fn subscribe(
    options: &Options,
    session: &Session,
    record: &ConsumerRecord,
) -> Result<Subscription, ConsumeError> {
    // A stream consumer subscribes from where it is, not where it started.
    let arguments = match &record.stream {
        Some(cursor) => cursor.arguments(&record.options.arguments),
        None => record.options.arguments.clone(),
    };
    let queue = record.queue();
    let channel = open_channel(&session.connection, false, record.prefetch)
        .await
        .map_err(|e| consume_error(&e, &queue))?;
    // If this future is dropped before the end (a timeout, a cancelled
    // `consume`, a re-subscription given up by recovery), the channel is
    // closed, which cancels a broker consumer that `basic.consume` may
    // already have made. Dropping the last handle is not enough: lapin keeps
    // the channel open while a `basic.consume` waits for its `consume-ok`,
    // then registers that consumer, and the broker would deliver up to the
    // prefetch to it, held unacknowledged until the connection closes.
    let mut unfinished = Unfinished {
        channel: Some(channel.clone()),
        bound: options.operation_timeout,
    };
    let tag = consumer_tag(record.id, session.generation);
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions {
                no_local: false,
                no_ack: record.options.no_ack,
                exclusive: record.options.exclusive,
                nowait: false,
            },
            arguments,
        )
        .await
        .map_err(|e| consume_error(&e, &queue))?;
    // Flush acks when half the prefetch window is acknowledged.
    let acks = (!record.options.no_ack).then(|| {
        Acks::new(
            channel.clone(),
            u64::from(record.prefetch.max(2) / 2),
            options.operation_timeout,
            record.stream.clone(),
            crate::metrics::Consume::new(&queue),
        )
    });
    unfinished.channel = None; // subscribed: the subscription owns the channel now
    Ok(Subscription {
        generation: session.generation,
        channel,
        consumer,
        acks,
    })
}

/// Closes the channel of a subscription that did not finish (see
/// [`subscribe`]), bounded by `bound`, when dropped still holding it.
struct Unfinished {
    channel: Option<Channel>,
    bound: std::time::Duration,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(channel) = self.channel.take()
            && channel.status().connected()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let bound = self.bound;
            runtime.spawn(async move {
                let close = channel.close(200, "subscription abandoned".into());
                let _ = tokio::time::timeout(bound, close).await;
            });
        }
    }
}

/// The consumer tag of consumer `id` subscribed on session `generation`.
fn consumer_tag(id: u64, generation: u64) -> String {
    format!("rabbitkit-{id}-{generation}")
}

/// How a pump ended, for the supervisor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PumpEnd {
    pub(crate) id: u64,
    pub(crate) generation: u64,
    /// The application dropped the stream: forget the consumer. Otherwise
    /// the subscription ended (connection lost, channel error, broker
    /// cancel) and the consumer may be subscribed again.
    pub(crate) dropped: bool,
}

/// Forwards one subscription's deliveries to the application's stream
/// (and sends its coalesced acks), until the subscription or the stream
/// ends; then cleans up and says which.
pub(crate) async fn pump(
    record: Arc<ConsumerRecord>,
    sub: Subscription,
    bound: Duration,
    flush_delay: Duration,
) -> PumpEnd {
    let Subscription {
        generation,
        channel,
        mut consumer,
        acks,
    } = sub;
    let forwarding = forward(&record, &mut consumer, acks.clone());
    let dropped = match &acks {
        Some(acks) => tokio::select! {
            biased;
            dropped = forwarding => dropped,
            () = acks.flusher(flush_delay) => unreachable!("the flusher never returns"),
        },
        None => forwarding.await,
    };
    // Bounded: the connection may not answer.
    let _ = tokio::time::timeout(bound, async {
        if let Some(acks) = &acks {
            // Acks recorded but not yet sent go out first.
            acks.close().await;
        }
        // Closing the channel cancels its consumer and requeues what it
        // held, in one round trip. No `basic.cancel` first: it raced with a
        // cancel from the broker (the queue deleted), and lapin took the
        // second `cancel-ok` for a protocol error that closed the connection.
        let _ = channel.close(200, "consumer ended".into()).await;
    })
    .await;
    // Dropped only now: lapin cancels a consumer dropped while its channel
    // is open (`basic.cancel`), the very race the close avoids (on
    // RabbitMQ 3.10, deleting a queue right after its consumer's stream
    // was dropped closed the whole connection: 505, unexpected cancel-ok).
    drop(consumer);
    if !dropped {
        // Only this subscription is cleared: channel ids start again on
        // every connection, so a newer subscription may have this one's id.
        let mut subscribed = record.subscribed.lock().unwrap();
        if subscribed
            .as_ref()
            .is_some_and(|s| s.generation == generation && s.channel.id() == channel.id())
        {
            *subscribed = None;
        }
    }
    PumpEnd {
        id: record.id,
        generation,
        dropped,
    }
}

/// The forwarding loop; `true` when the application dropped the stream.
async fn forward(
    record: &ConsumerRecord,
    consumer: &mut lapin::Consumer,
    acks: Option<Arc<Acks>>,
) -> bool {
    let metrics = crate::metrics::Consume::new(&record.queue());
    loop {
        let item = tokio::select! {
            item = consumer.next() => item,
            // The application dropped the stream (perhaps before any delivery came).
            () = record.tx.closed() => return true,
        };
        match item {
            Some(Ok(inner)) => {
                metrics.delivered();
                if let Some(acks) = &acks
                    && let Some(offset) = crate::stream::offset_of(&inner.properties)
                {
                    acks.track(inner.delivery_tag, offset);
                }
                if record
                    .tx
                    .send(Ok(Delivery::new(inner, acks.clone())))
                    .await
                    .is_err()
                {
                    return true;
                }
            }
            // lapin yields one error and may then hang: stop reading.
            Some(Err(_)) | None => break,
        }
    }
    if record.is_cancelled() {
        // `Consumer::cancel`: deliveries already received are still being
        // handled and acknowledged on this channel (its acks keep being
        // flushed here); dropping the `Consumer` ends it.
        record.tx.closed().await;
        return true;
    }
    false
}
