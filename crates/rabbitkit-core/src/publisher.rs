//! Publishing with confirms: a publish resolves when the broker confirms it.
//!
//! Many publishes may be in flight at once (run their futures concurrently),
//! up to the client's publish window. A publish whose connection dies before
//! its confirm arrives is sent again, with the same `message_id`, once the
//! client has recovered (at-least-once; consumers can de-duplicate on the id).
//! While the client is disconnected a publish waits, holding its place in
//! the window (back-pressure), and fails with [`PublishError::Timeout`]
//! after the publish timeout. While the broker blocks the connection (a
//! memory or disk alarm) a publish waits the same way, and fails with
//! [`PublishError::Blocked`], which carries the broker's reason, instead of
//! `Timeout`. Nothing is dropped silently.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::future::Either;

use crate::confirm::{ConfirmChannel, PublishOutcome, with_message_id};
use crate::connection::Client;
use crate::error::PublishError;
use crate::message::OutgoingMessage;
use crate::session::{Link, Session, Shared};

/// Publishing, on the client itself.
impl Client {
    /// A publisher bound to one slot of the channel pool, so its messages
    /// keep their order (see [`Publisher`]). Publishers made one after
    /// another use the pool's slots in turn.
    pub fn publisher(&self) -> Publisher {
        let slot = self.shared().next_slot.fetch_add(1, Ordering::Relaxed);
        Publisher::new(self.clone(), slot % self.shared().options.channels)
    }

    /// Publishes one message with confirms on the pool's first channel.
    /// See [`Publisher::publish`].
    pub fn publish(
        &self,
        message: OutgoingMessage,
    ) -> impl Future<Output = Result<Confirmed, crate::PublishError>> + Send + 'static + use<> {
        Publisher::new(self.clone(), 0).publish(message)
    }

    /// Publishes one message without a confirm, on the connection's
    /// unconfirmed channel. See [`Publisher::publish_unconfirmed`]: for
    /// traffic that may be lost.
    pub fn publish_unconfirmed(
        &self,
        message: OutgoingMessage,
    ) -> impl Future<Output = Result<(), crate::PublishError>> + Send + 'static + use<> {
        Publisher::new(self.clone(), 0).publish_unconfirmed(message)
    }
}

/// What a successful publish tells.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Confirmed {
    /// The message's `message_id` (given, or generated).
    pub message_id: String,
    /// How many times it was sent (more than 1 after a failover: a possible duplicate).
    pub attempts: u32,
}

/// Publishes on one slot of the channel pool, so its messages keep their
/// order: its mandatory publishes go out on the slot's channel for them,
/// the others on the slot's other channel, each kind in call order (the
/// order between a mandatory publish and one that is not is not kept).
/// Cheap to clone. Made by [`Client::publisher`].
#[derive(Clone, Debug)]
pub struct Publisher {
    client: Client,
    slot: usize,
}

impl Publisher {
    pub(crate) fn new(client: Client, slot: usize) -> Self {
        Self { client, slot }
    }

    /// The client this publisher belongs to.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Publishes `message` **without a confirm**, for traffic that may be
    /// lost (metrics, logs, telemetry): it resolves once its frames are
    /// queued on the connection, in call order, on a channel of its own
    /// without confirm mode; lapin's IO thread writes them after. At most
    /// [`Options::publish_window`](crate::Options::publish_window) publishes
    /// wait to be written: past that a publish waits for room (up to the
    /// publish timeout, then [`PublishError::Timeout`]). Nothing is re-sent after a connection loss, no `message_id` is
    /// added, and `mandatory` returns are not reported. It fails at once,
    /// with no wait, while the connection is recovering or the broker
    /// blocks publishers ([`PublishError::NotSent`]), and with
    /// [`PublishError::Closed`] once the client is closed; a delay is
    /// refused ([`PublishError::Invalid`]: a delayed publish is always
    /// confirmed).
    pub fn publish_unconfirmed(
        &self,
        message: OutgoingMessage,
    ) -> impl Future<Output = Result<(), PublishError>> + Send + 'static + use<> {
        let shared = self.client.shared().clone();
        #[cfg(feature = "opentelemetry")]
        let span = crate::trace::publish_span(&message.exchange, &message.routing_key);
        let publish = async move { publish_unconfirmed(shared, message).await };
        #[cfg(feature = "opentelemetry")]
        let publish = tracing::Instrument::instrument(publish, span);
        publish
    }

    /// Publishes `message` and resolves when the broker confirms it.
    ///
    /// Errors: [`PublishError::Unroutable`] (mandatory, no queue),
    /// [`PublishError::ExchangeNotFound`], [`PublishError::Nacked`],
    /// [`PublishError::Rejected`], [`PublishError::Timeout`] (or
    /// [`PublishError::Blocked`] when the broker was blocking publishers at
    /// the timeout),
    /// [`PublishError::Closed`], and [`PublishError::Invalid`] for an
    /// exchange or routing key over 255 bytes (nothing is sent). A connection loss is not an error: the
    /// message is sent again after recovery.
    #[inline]
    pub fn publish(
        &self,
        message: OutgoingMessage,
    ) -> impl Future<Output = Result<Confirmed, PublishError>> + Send + 'static + use<> {
        let shared = self.client.shared().clone();
        let timeout = shared.options.publish_timeout;
        #[cfg(feature = "opentelemetry")]
        let span = crate::trace::publish_span(&message.exchange, &message.routing_key);
        // A delayed publish needs the client (to declare its queues): that
        // rare path is boxed, so it does not weigh on every publish future.
        let publish = match message.delay {
            None => Either::Left(publish(shared, Route::Pool(self.slot), message, timeout)),
            Some(_) => {
                let client = self.client.clone();
                let slot = self.slot;
                Either::Right(Box::pin(async move {
                    // The publish timeout bounds the whole send, the delay
                    // queues' declarations (the first delayed publish) included.
                    let started = Instant::now();
                    let declare = |d| client.declare(d);
                    let unbind = |d| crate::delay::unbind(&client, d);
                    let prepared = tokio::time::timeout(
                        timeout,
                        crate::delay::prepare(&client.shared().delay, declare, unbind, message),
                    )
                    .await;
                    let message = match prepared {
                        Ok(message) => message?,
                        Err(_) => return Err(timed_out(&shared, timeout)),
                    };
                    let left = timeout.saturating_sub(started.elapsed());
                    publish(shared, Route::Pool(slot), message, left).await
                }))
            }
        };
        #[cfg(feature = "opentelemetry")]
        let publish = tracing::Instrument::instrument(publish, span);
        publish
    }
}

/// See [`Publisher::publish_unconfirmed`].
async fn publish_unconfirmed(
    shared: Arc<Shared>,
    msg: OutgoingMessage,
) -> Result<(), PublishError> {
    let metrics = crate::metrics::Publish::start(&msg);
    let result = send_unconfirmed(shared, msg).await;
    metrics.finished(&result);
    result
}

/// A body over [`Options::max_message_size`](crate::Options::max_message_size),
/// refused before it is sent: the broker would close the channel over it,
/// failing the other publishes in flight there.
fn too_large(shared: &Shared, msg: &OutgoingMessage) -> Result<(), PublishError> {
    let max = shared.options.max_message_size;
    if msg.body.len() > max {
        return Err(PublishError::TooLarge {
            size: msg.body.len() as u64,
            max: max as u64,
        });
    }
    Ok(())
}

async fn send_unconfirmed(shared: Arc<Shared>, msg: OutgoingMessage) -> Result<(), PublishError> {
    crate::validate::publish(&msg.exchange, &msg.routing_key)?;
    too_large(&shared, &msg)?;
    if msg.delay.is_some_and(|d| !d.is_zero()) {
        return Err(PublishError::Invalid {
            what: "delay".into(),
            value: format!("{:?}", msg.delay.unwrap_or_default()),
            reason: "a delayed publish is always confirmed: use `publish`".into(),
        });
    }
    #[cfg(feature = "opentelemetry")]
    let msg = OutgoingMessage {
        properties: crate::trace::with_current_context(msg.properties),
        ..msg
    };
    let session = match &*shared.link.borrow() {
        Link::Up(s) if s.alive() => s.clone(),
        Link::Closed(reason) => {
            return Err(PublishError::Closed {
                reason: reason.clone(),
            });
        }
        _ => {
            return Err(PublishError::NotSent {
                reason: "not connected (recovering)".into(),
            });
        }
    };
    if let Some(reason) = session.blocked() {
        return Err(PublishError::NotSent {
            reason: format!("the broker is blocking publishers ({reason})"),
        });
    }
    let timeout = shared.options.publish_timeout;
    let deadline = Instant::now() + timeout;
    let channel = match session.pool.unconfirmed_live() {
        Some(channel) => channel,
        // Opening the channel (once per connection) is the rare wait.
        None => match Box::pin(tokio::time::timeout(
            timeout,
            session.pool.unconfirmed(&session.connection),
        ))
        .await
        {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => return Err(unconfirmed_failed(&session, &e, &msg.exchange)),
            Err(_) => return Err(PublishError::Timeout(timeout)),
        },
    };
    let sent = channel.publish(
        &msg.exchange,
        &msg.routing_key,
        msg.mandatory,
        msg.body,
        msg.properties,
    );
    let mut sent = std::pin::pin!(sent);
    // Queued at the first poll unless the write window is full: only then
    // is a timer set, for the wait for room.
    let result = match futures::poll!(sent.as_mut()) {
        std::task::Poll::Ready(result) => result,
        std::task::Poll::Pending => {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, sent).await {
                Ok(result) => result,
                Err(_) => return Err(PublishError::Timeout(timeout)),
            }
        }
    };
    result.map_err(|e| unconfirmed_failed(&session, &e, &msg.exchange))
}

/// The error of an unconfirmed publish that lapin refused.
fn unconfirmed_failed(session: &Session, e: &lapin::Error, exchange: &str) -> PublishError {
    if session.alive() {
        crate::reply::publish_error(e, exchange)
    } else {
        PublishError::ConnectionLost
    }
}

/// Where a confirmed publish goes out, attempt after attempt.
pub(crate) enum Route<'a> {
    /// The pool's channel of this slot (modulo the pool's size).
    Pool(usize),
    /// A channel of one's own ([`RecoveredChannel`](crate::RecoveredChannel)).
    Own(&'a mut dyn OwnRoute),
}

/// A channel other than the pool's to publish on: asked for a channel on
/// each attempt's connection, told to retire one after a nack.
pub(crate) trait OwnRoute: Send {
    /// The confirm-mode channel to publish on, on `session`'s connection.
    fn channel<'a>(
        &'a mut self,
        session: &'a Session,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<ConfirmChannel, lapin::Error>> + Send + 'a>>;
    /// Channel `channel_id` was nacked: the next attempt takes a fresh one.
    fn retire(&self, channel_id: u16);
}

impl Route<'_> {
    /// The channel to publish on: at once when the pool's is open, else
    /// opened (a rare wait, boxed so every publish future stays small).
    async fn channel(
        &mut self,
        session: &Session,
        mandatory: bool,
    ) -> Result<ConfirmChannel, lapin::Error> {
        match self {
            Route::Pool(slot) => match session.pool.live(*slot, mandatory) {
                Some(channel) => Ok(channel),
                None => Box::pin(session.pool.get(&session.connection, *slot, mandatory)).await,
            },
            Route::Own(own) => own.channel(session).await,
        }
    }

    fn retire(&self, session: &Session, channel_id: u16) {
        match self {
            Route::Pool(slot) => session.pool.retire(*slot, channel_id),
            Route::Own(own) => own.retire(channel_id),
        }
    }
}

/// A confirmed publish of `msg` through `route`, bounded by `timeout`.
///
/// One `async fn` holds the message (a future per layer would hold a copy
/// of its state each), and the waits that are rare (for a place in the
/// window, for a connection, for a channel to open, after a nack) are
/// boxed: the future every publish allocates stays small.
pub(crate) async fn publish(
    shared: Arc<Shared>,
    mut route: Route<'_>,
    mut msg: OutgoingMessage,
    timeout: std::time::Duration,
) -> Result<Confirmed, PublishError> {
    let metrics = crate::metrics::Publish::start(&msg);
    if let Err(e) = crate::validate::publish(&msg.exchange, &msg.routing_key)
        .and_then(|()| too_large(&shared, &msg))
    {
        let result = Err(e);
        metrics.finished(&result);
        return result;
    }
    let deadline = Instant::now() + timeout;
    // A place in the in-flight window: at once when there is one (no timer
    // to register), else waited for until the publish timeout.
    let _permit = match shared.window.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(tokio::sync::TryAcquireError::Closed) => {
            let result = Err(PublishError::Closed {
                reason: "client closed".into(),
            });
            metrics.finished(&result);
            return result;
        }
        Err(tokio::sync::TryAcquireError::NoPermits) => {
            match Box::pin(tokio::time::timeout(
                timeout,
                shared.window.clone().acquire_owned(),
            ))
            .await
            {
                Ok(Ok(permit)) => permit,
                Ok(Err(_)) => {
                    let result = Err(PublishError::Closed {
                        reason: "client closed".into(),
                    });
                    metrics.finished(&result);
                    return result;
                }
                Err(_) => {
                    let result = Err(timed_out(&shared, timeout));
                    metrics.finished(&result);
                    return result;
                }
            }
        }
    };

    let (message_id, properties) = with_message_id(std::mem::take(&mut msg.properties));
    #[cfg(feature = "opentelemetry")]
    let properties = crate::trace::sending(&message_id, properties);
    msg.properties = properties;
    let body: Arc<[u8]> = std::mem::take(&mut msg.body).into();

    let mut newer_than = 0;
    let mut attempts = 0u32;
    let mut channel_retries = 0;
    let mut nacks = 0u32;
    let result = loop {
        let session = match shared.up_now(newer_than) {
            Some(session) => session,
            None => {
                let left = deadline.saturating_duration_since(Instant::now());
                match Box::pin(shared.wait_up_for(newer_than, left)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(reason)) => break Err(PublishError::Closed { reason }),
                    Err(_) => break Err(timed_out(&shared, timeout)),
                }
            }
        };
        attempts += 1;
        if attempts > 1 {
            shared.counters.republished.fetch_add(1, Ordering::Relaxed);
            metrics.resent();
        }
        // The id of the channel this attempt went out on (none: it did
        // not), to retire that channel after a nack.
        let mut channel_id = None;
        let sent = async {
            let channel = route.channel(&session, msg.mandatory).await?;
            let _outstanding = metrics.sending();
            channel_id = Some(channel.channel().id());
            channel
                .publish(
                    &msg.exchange,
                    &msg.routing_key,
                    msg.mandatory,
                    body.clone(),
                    msg.properties.clone(),
                )
                .await
        };
        let left = deadline.saturating_duration_since(Instant::now());
        // Counted as waiting for its confirm until the confirm wakes it,
        // whenever the caller polls it again.
        let outcome = {
            let sent = std::pin::pin!(sent);
            tokio::time::timeout(left, session.confirms.watch(sent)).await
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(_) => break Err(timed_out(&shared, timeout)),
        };
        match outcome {
            Ok(PublishOutcome::Confirmed) => {
                shared.counters.confirmed.fetch_add(1, Ordering::Relaxed);
                break Ok(Confirmed {
                    message_id,
                    attempts,
                });
            }
            Ok(PublishOutcome::Returned { reply_text, .. }) => {
                break Err(PublishError::Unroutable {
                    exchange: msg.exchange,
                    routing_key: msg.routing_key,
                    reply_text,
                });
            }
            Ok(PublishOutcome::Nacked) => {
                // The broker could not store it: e.g. a quorum queue between
                // leaders after a node died. RabbitMQ 3.10 goes on nacking a
                // channel that published during the election, so send it
                // again on a fresh channel, with backoff, until the deadline.
                if let Some(id) = channel_id {
                    route.retire(&session, id);
                }
                nacks = nacks.saturating_add(1);
                metrics.nacked();
                let backoff = &shared.options.timings.nack_backoff;
                let nack_delay = backoff.delay_for(nacks);
                if Instant::now() + nack_delay >= deadline
                    || backoff.max_attempts.is_some_and(|max| nacks >= max)
                {
                    break Err(PublishError::Nacked {
                        exchange: msg.exchange,
                    });
                }
                tracing::debug!(target: "rabbitkit", message_id, "publish nacked; sending it again");
                Box::pin(tokio::time::sleep(nack_delay)).await;
                newer_than = 0;
                continue;
            }
            Err(err) => {
                if !session.alive() && !msg.resend_after_reconnect {
                    break Err(PublishError::ConnectionLost);
                }
                if !session.alive() {
                    // The connection is gone: send again once recovered.
                    tracing::debug!(target: "rabbitkit", message_id, "publish interrupted by connection loss; will re-publish");
                    newer_than = session.generation;
                    continue;
                }
                match crate::reply::publish_refusal(&err, &msg.exchange) {
                    Some(
                        e @ (PublishError::TooLarge { .. } | PublishError::ExchangeNotFound { .. }),
                    ) => {
                        break Err(e);
                    }
                    // The channel was closed, maybe by another publisher's
                    // mistake: try once more on a fresh channel.
                    Some(e) if channel_retries > 0 => break Err(e),
                    None if channel_retries > 0 => {
                        break Err(crate::reply::publish_error(&err, &msg.exchange));
                    }
                    _ => channel_retries += 1,
                }
            }
        }
    };
    metrics.finished(&result);
    result
}

/// The error of a publish whose timeout passed: [`PublishError::Blocked`]
/// while the broker blocks the connection, else [`PublishError::Timeout`].
fn timed_out(shared: &Shared, timeout: std::time::Duration) -> PublishError {
    match shared.current().and_then(|s| s.blocked()) {
        Some(reason) => PublishError::Blocked { reason, timeout },
        None => PublishError::Timeout(timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<F, G: Fn(&Publisher, OutgoingMessage) -> F>(_: G) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every confirmed publish allocates its future (in the caller's
    /// `FuturesUnordered`, or `tokio::spawn`): the rare waits are boxed and
    /// the message is held once so that it stays small. 2,880 bytes before
    /// that (rustc 1.95); 1,376 after. The bound leaves room for compiler
    /// changes; a new wait held inline, or a second copy of the message,
    /// goes over it.
    #[test]
    fn a_publish_future_stays_small() {
        let size = future_size(|p, m| p.publish(m));
        assert!(size <= 1_600, "Publisher::publish's future is {size} bytes");
    }
}
