//! The supervisor: the task that owns the connection.
//!
//! It connects (trying endpoints in turn, with backoff), opens the channel
//! pool, replays the recorded topology (exchanges, queues, bindings, in that
//! order), re-subscribes every consumer and checks with the broker that each
//! is registered, and only then marks the client up. Then it watches the
//! connection; on loss it starts over at the next endpoint. Publishes
//! interrupted by the loss are re-sent by their own futures once the client
//! is up again (see `publisher.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt};
use lapin::{Connection, ConnectionProperties};
use rand::seq::SliceRandom;
use tokio::sync::oneshot;

use crate::channels::{ChannelPool, Slot};
use crate::connection::{Link, Session, Shared};
use crate::endpoint::Endpoint;
use crate::error::ConnectError;
use crate::events::Event;
use crate::options::EndpointOrder;
use crate::reply::{connect_refusal, describe};

/// Why one connection attempt (connect + channel pool) failed.
enum AttemptError {
    /// Retrying cannot fix it (credentials, vhost, certificate): the client
    /// stops, at the first connect and during recovery alike.
    Fatal(ConnectError),
    /// This broker cannot serve this configuration (its `channel_max` is
    /// too low for the pool): the first `connect()` fails with it; a
    /// recovering client keeps trying, with backoff.
    Unfit(ConnectError),
    /// A temporary refusal (a connection limit is reached): the first
    /// `connect()` fails with it unless told to retry; a recovering client
    /// retries with backoff.
    Refused(ConnectError),
    /// Anything else: retried with backoff.
    Transient(String),
}

async fn connect_one(shared: &Shared, endpoint: &Endpoint) -> Result<Connection, AttemptError> {
    let o = &shared.options;
    let heartbeat = u16::try_from(o.heartbeat.as_secs()).unwrap_or(u16::MAX);
    let timeout_ms = u64::try_from(o.connect_timeout.as_millis()).unwrap_or(u64::MAX);
    let uri = endpoint.to_uri(heartbeat, timeout_ms, o.auth_external);
    let mut props = ConnectionProperties::default();
    if let Some(name) = &o.connection_name {
        props = props.with_connection_name(name.as_str().into());
    }
    let identity = match &o.tls_identity {
        Some(id) if endpoint.is_tls() => {
            crate::tls::check_identity(id)
                .map_err(|kind| AttemptError::Fatal(crate::tls::unreadable(endpoint, kind)))?;
            Some(lapin::tcp::OwnedIdentity::PKCS8 {
                pem: id.cert_pem.clone(),
                key: id.key_pem.clone(),
            })
        }
        _ => None,
    };
    let tls = lapin::tcp::OwnedTLSConfig {
        identity,
        cert_chain: o.tls_ca_pem.clone(),
    };
    let runtime = match lapin::runtime::default_runtime() {
        Ok(rt) => rt,
        Err(e) => return Err(AttemptError::Transient(describe(&e))),
    };
    let connect = Connection::connect_uri_with_config(uri, props, tls, runtime);
    match tokio::time::timeout(o.connect_timeout, connect).await {
        Err(_) => Err(AttemptError::Transient(format!(
            "timed out after {:?}",
            o.connect_timeout
        ))),
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(err)) => Err(
            match crate::reply::of(&err)
                .and_then(|(code, text)| connect_refusal(endpoint, code, text))
                .or_else(|| crate::tls::client_cert_refusal(endpoint, &err))
            {
                Some(err @ ConnectError::ConnectionLimit { .. }) => AttemptError::Refused(err),
                Some(err) => AttemptError::Fatal(err),
                _ if endpoint.is_tls() && crate::tls::is_certificate_error(&err) => {
                    AttemptError::Fatal(ConnectError::Tls {
                        endpoint: endpoint.to_string(),
                        message: describe(&err),
                    })
                }
                _ => AttemptError::Transient(describe(&err)),
            },
        ),
    }
}

/// Opens the channel pool on a new connection, bounded by `step`. On
/// failure the connection is closed (it would otherwise stay open, unused).
async fn open_pool(
    shared: &Shared,
    connection: &Connection,
    endpoint: &Endpoint,
    step: Duration,
) -> Result<ChannelPool, AttemptError> {
    let channels = shared.options.channels;
    let error = match tokio::time::timeout(step, ChannelPool::open(connection, channels)).await {
        Ok(Ok(pool)) => return Ok(pool),
        Ok(Err(err)) if matches!(err.kind(), lapin::ErrorKind::ChannelsLimitReached) => {
            AttemptError::Unfit(ConnectError::ChannelLimit {
                endpoint: endpoint.to_string(),
                channel_max: connection.configuration().channel_max(),
                channels,
            })
        }
        Ok(Err(err)) => AttemptError::Transient(format!("opening channels: {}", describe(&err))),
        Err(_) => AttemptError::Transient(format!("opening channels: no answer within {step:?}")),
    };
    let _ = tokio::time::timeout(step, connection.close(200, "channel pool failed".into())).await;
    Err(error)
}

/// Reports a failed attempt (a log line, [`Event::ConnectFailed`]) and
/// decides whether to give up: `Some(error)` is the error to stop with.
/// `attempt` counts every attempt since the last connection that came up,
/// whether it failed before or after the TCP connect.
fn failed_attempt(
    shared: &Shared,
    first_connect: bool,
    endpoint: &Endpoint,
    attempt: u32,
    endpoints: usize,
    err: AttemptError,
) -> Option<ConnectError> {
    let (text, typed, stop_now) = match err {
        AttemptError::Fatal(e) => (e.to_string(), Some(e), true),
        AttemptError::Unfit(e) => (e.to_string(), Some(e), first_connect),
        AttemptError::Refused(e) => {
            let stop = first_connect && !shared.options.retry_initial_connect;
            (e.to_string(), Some(e), stop)
        }
        AttemptError::Transient(text) => (text, None, false),
    };
    tracing::warn!(target: "rabbitkit", %endpoint, error = %text, "connection attempt failed");
    shared.emit(Event::ConnectFailed {
        endpoint: endpoint.clone(),
        error: text.clone(),
    });
    if stop_now {
        return typed;
    }
    let initial_round_over =
        first_connect && !shared.options.retry_initial_connect && attempt as usize >= endpoints;
    let limit_hit = shared
        .options
        .backoff
        .max_attempts
        .is_some_and(|max| attempt >= max);
    (initial_round_over || limit_hit).then(|| {
        typed.unwrap_or(ConnectError::Unreachable {
            attempts: attempt,
            endpoint: endpoint.to_string(),
            last_error: text,
        })
    })
}

/// Stops the client for good with `err`, which the first `connect()` gets
/// if it is still waiting.
fn give_up(
    shared: &Shared,
    first: &mut Option<oneshot::Sender<Result<(), ConnectError>>>,
    err: ConnectError,
) {
    close_for_good(shared, err.to_string());
    if let Some(tx) = first.take() {
        let _ = tx.send(Err(err));
    }
}

fn close_for_good(shared: &Shared, reason: String) {
    shared.link.send_replace(Link::Closed(reason.clone()));
    shared.window.close();
    shared.emit(Event::Closed { reason });
    // End every consumer stream. (Also after a panic that poisoned the lock.)
    shared
        .consumers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
}

/// The text of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "(no message)".to_owned(),
    }
}

/// Runs one recovery step, turning a panic in it into an error text, so a
/// step that panics is reported instead of killing the supervisor and
/// leaving the client `Connecting` for good: in connecting or opening the
/// channel pool it is a failed attempt (an [`Event::ConnectFailed`], then
/// the backoff); in replaying the topology or re-subscribing, a
/// recovery-failed event.
/// Validation at every entry (`validate.rs`) keeps user data from causing
/// one; this is the net under it.
async fn guarded<T>(step: impl Future<Output = T>) -> Result<T, String> {
    std::panic::AssertUnwindSafe(step)
        .catch_unwind()
        .await
        .map_err(|panic| format!("panicked: {}", panic_text(&*panic)))
}

/// Runs the supervisor; should it panic anyway, the client is closed with
/// the panic's text (an [`Event::Closed`], and pending and later operations
/// fail with `Closed`) instead of waiting for a connection forever.
pub(crate) async fn supervise(
    shared: Arc<Shared>,
    first: oneshot::Sender<Result<(), ConnectError>>,
) {
    let mut first = Some(first);
    if let Err(text) = guarded(run(shared.clone(), &mut first)).await {
        let reason = format!("the supervisor stopped: {text}");
        tracing::error!(target: "rabbitkit", %reason);
        close_for_good(&shared, reason.clone());
        if let Some(tx) = first.take() {
            let _ = tx.send(Err(ConnectError::Closed { reason }));
        }
    }
}

/// Runs until the client is closed or stops on a fatal error.
async fn run(shared: Arc<Shared>, first: &mut Option<oneshot::Sender<Result<(), ConnectError>>>) {
    let mut order: Vec<usize> = (0..shared.endpoints.len()).collect();
    if shared.options.order == EndpointOrder::Shuffled {
        order.shuffle(&mut rand::rng());
    }
    let mut next = 0usize;
    let mut generation = 0u64;
    let mut lost_at: Option<Instant> = None;
    // Attempts since the last connection that came up: a failure after the
    // TCP connect (channel pool, a connection lost during replay) counts
    // too, so it backs off like any other instead of reconnecting at once.
    let mut attempt = 0u32;

    'outer: loop {
        // 1. Connect, endpoint after endpoint, with backoff.
        let (connection, endpoint) = loop {
            if shared.closing.load(Ordering::SeqCst) {
                close_for_good(&shared, "client closed".into());
                return;
            }
            let endpoint = shared.endpoints[order[next]].clone();
            next = (next + 1) % order.len();
            let delay = shared.options.backoff.delay_for(attempt);
            attempt += 1;
            if lost_at.is_some() || attempt > 1 {
                shared.emit(Event::Reconnecting {
                    attempt,
                    delay,
                    endpoint: endpoint.clone(),
                });
            }
            if !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.shutdown.notified() => continue,
                }
            }
            let attempt_result = guarded(connect_one(&shared, &endpoint))
                .await
                .unwrap_or_else(|panicked| Err(AttemptError::Transient(panicked)));
            match attempt_result {
                Ok(conn) => break (conn, endpoint),
                Err(err) => {
                    let first_connect = first.is_some();
                    if let Some(err) =
                        failed_attempt(&shared, first_connect, &endpoint, attempt, order.len(), err)
                    {
                        give_up(&shared, first, err);
                        return;
                    }
                }
            }
        };

        // 2. Channels, topology, consumers.
        let mut lapin_events = connection.events_listener();
        generation += 1;
        // Every recovery step is bounded: a node that accepts connections
        // while still booting must not stall recovery.
        let step = shared.options.connect_timeout.saturating_mul(2);
        let pool = guarded(open_pool(&shared, &connection, &endpoint, step))
            .await
            .unwrap_or_else(|panicked| Err(AttemptError::Transient(panicked)));
        let pool = match pool {
            Ok(pool) => pool,
            Err(err) => {
                let first_connect = first.is_some();
                if let Some(err) =
                    failed_attempt(&shared, first_connect, &endpoint, attempt, order.len(), err)
                {
                    give_up(&shared, first, err);
                    return;
                }
                continue 'outer;
            }
        };
        let session = Arc::new(Session {
            generation,
            endpoint: endpoint.clone(),
            connection,
            pool,
            admin: Slot::new(false, 0),
            admin_lock: tokio::sync::Mutex::new(()),
            confirms: Default::default(),
        });

        let mut replay = shared.topology.lock().unwrap().replay_order();
        let mut replaced = 0;
        let mut next = 0;
        while next < replay.len() {
            let decl = replay[next].clone();
            next += 1;
            let outcome = tokio::time::timeout(step, guarded(session.declare(&decl))).await;
            if !session.alive() {
                let lost =
                    AttemptError::Transient("connection lost while replaying the topology".into());
                if let Some(err) = failed_attempt(
                    &shared,
                    first.is_some(),
                    &endpoint,
                    attempt,
                    order.len(),
                    lost,
                ) {
                    give_up(&shared, first, err);
                    return;
                }
                lost_at.get_or_insert_with(Instant::now);
                continue 'outer;
            }
            // The lost connection's temporary queue is still there, locked
            // (RabbitMQ 4 keeps a killed node's exclusive queues while the
            // node is down): declare a fresh one, bound the same way, and
            // move its consumers there.
            if let Ok(Ok(Err(crate::DeclareError::ResourceLocked { .. }))) = &outcome
                && let Some(old) = decl.replaceable_when_locked()
                && replaced < replay.len()
            {
                replaced += 1;
                let (old, new) = (old.to_owned(), crate::topology::temporary_queue_name());
                shared.topology.lock().unwrap().rename_queue(&old, &new);
                for d in &mut replay {
                    d.rename_queue(&old, &new);
                }
                for record in shared.consumers.lock().unwrap().values() {
                    if record.queue() == old {
                        record.set_queue(&new);
                    }
                }
                shared.emit(Event::TemporaryQueueReplaced { old, new });
                next -= 1; // declare it again, under its new name
                continue;
            }
            let error = match outcome {
                Ok(Ok(Ok(()))) => continue,
                Ok(Ok(Err(err))) => err.to_string(),
                Ok(Err(panicked)) => panicked,
                Err(_) => format!("no answer within {step:?}"),
            };
            shared.emit(Event::TopologyRecoveryFailed {
                declaration: decl.to_string(),
                error,
            });
        }

        let records: Vec<_> = shared.consumers.lock().unwrap().values().cloned().collect();
        let mut resubscribed = 0;
        let mut retry_later = Vec::new();
        for record in &records {
            let outcome = tokio::time::timeout(
                step,
                guarded(crate::consumer::subscribe(&shared, &session, record)),
            )
            .await;
            if !session.alive() {
                let lost = AttemptError::Transient(
                    "connection lost while re-subscribing consumers".into(),
                );
                if let Some(err) = failed_attempt(
                    &shared,
                    first.is_some(),
                    &endpoint,
                    attempt,
                    order.len(),
                    lost,
                ) {
                    give_up(&shared, first, err);
                    return;
                }
                lost_at.get_or_insert_with(Instant::now);
                continue 'outer;
            }
            let error = match outcome {
                Ok(Ok(Ok(()))) => {
                    resubscribed += 1;
                    continue;
                }
                Ok(Ok(Err(err))) => err.to_string(),
                Ok(Err(panicked)) => panicked,
                Err(_) => format!("no answer within {step:?}"),
            };
            shared.emit(Event::ConsumerRecoveryFailed {
                queue: record.queue(),
                error,
            });
            retry_later.push(record.clone());
        }
        // Consumers that could not be re-subscribed keep being retried in the
        // background while this connection lives: never left silently stopped.
        for record in retry_later {
            tokio::spawn(crate::consumer::keep_trying(
                Arc::downgrade(&shared),
                session.clone(),
                record,
            ));
        }
        // Check with the broker that each re-subscribed queue has consumers again.
        if lost_at.is_some() {
            // (A stream reports no consumers in its declare-ok.)
            for record in records.iter().filter(|r| !r.is_stream()) {
                let count = tokio::time::timeout(
                    step,
                    guarded(passive_consumer_count(&session, &record.queue())),
                )
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
                if count == Some(0) {
                    shared.emit(Event::ConsumerRecoveryFailed {
                        queue: record.queue(),
                        error: "broker reports no consumer after re-subscribing".into(),
                    });
                }
            }
        }

        // 3. Up.
        attempt = 0;
        shared.link.send_replace(Link::Up(session.clone()));
        match lost_at.take() {
            None => shared.emit(Event::Connected {
                endpoint: endpoint.clone(),
            }),
            Some(since) => {
                shared.counters.recoveries.fetch_add(1, Ordering::Relaxed);
                shared.emit(Event::Recovered {
                    endpoint: endpoint.clone(),
                    took: since.elapsed(),
                    consumers: resubscribed,
                });
            }
        }
        if let Some(tx) = first.take() {
            let _ = tx.send(Ok(()));
        }

        // 4. Watch until the connection is lost or the client closes.
        let mut poll = tokio::time::interval(shared.options.timings.liveness_check);
        // Confirms wait while the broker blocks the connection: count from
        // the end of the last block.
        let mut unblocked_at = Instant::now();
        let reason = loop {
            tokio::select! {
                ev = lapin_events.next() => match ev {
                    // Channel-level errors are reported here too: only a dead
                    // connection counts as a loss.
                    Some(lapin::Event::Error(err)) if !session.alive() => break describe(&err),
                    Some(lapin::Event::Error(err)) => {
                        tracing::debug!(target: "rabbitkit", error = %describe(&err), "channel error");
                    }
                    Some(lapin::Event::ConnectionBlocked(reason)) => shared.emit(Event::Blocked { reason }),
                    Some(lapin::Event::ConnectionUnblocked) => {
                        unblocked_at = Instant::now();
                        shared.emit(Event::Unblocked);
                    }
                    Some(_) => {}
                    None => break "connection dropped".to_owned(),
                },
                _ = poll.tick() => {
                    if !session.alive() {
                        break "connection closed".to_owned();
                    }
                    if let Some(waited) = unconfirmed_too_long(&shared, &session, unblocked_at) {
                        // A node on the minority side of a partition: the
                        // connection is healthy, nothing gets confirmed.
                        // Close it; the waiting publishes are re-sent on
                        // the next node once recovered.
                        shared.emit(Event::Unresponsive {
                            endpoint: endpoint.clone(),
                            waited,
                        });
                        let _ = tokio::time::timeout(
                            shared.options.connect_timeout,
                            session.connection.close(200, "no confirm in time".into()),
                        )
                        .await;
                        break format!("no publish confirmed for {waited:?}");
                    }
                }
                _ = shared.shutdown.notified() => {
                    let _ = tokio::time::timeout(
                        shared.options.close_timeout,
                        session.connection.close(200, "client closed".into()),
                    )
                    .await;
                    close_for_good(&shared, "client closed".into());
                    return;
                }
            }
            if shared.closing.load(Ordering::SeqCst) {
                let _ = tokio::time::timeout(
                    shared.options.close_timeout,
                    session.connection.close(200, "client closed".into()),
                )
                .await;
                close_for_good(&shared, "client closed".into());
                return;
            }
        };
        lost_at = Some(Instant::now());
        shared.counters.disconnects.fetch_add(1, Ordering::Relaxed);
        shared.link.send_replace(Link::Connecting);
        tracing::warn!(target: "rabbitkit", %endpoint, %reason, "connection lost");
        shared.emit(Event::Disconnected { endpoint, reason });
    }
}

/// How long the oldest publish of `session` has waited for its confirm,
/// when that is past [`Timings::confirm_deadline`](crate::Timings::confirm_deadline)
/// (not zero) and the broker does not block the connection.
fn unconfirmed_too_long(
    shared: &Shared,
    session: &Session,
    unblocked_at: Instant,
) -> Option<Duration> {
    let deadline = shared.options.timings.confirm_deadline;
    if deadline.is_zero() || shared.blocked.lock().unwrap().is_some() {
        return None;
    }
    session
        .confirms
        .oldest(unblocked_at)
        .filter(|&waited| waited >= deadline)
}

async fn passive_consumer_count(session: &Session, queue: &str) -> Option<u32> {
    let _serial = session.admin_lock.lock().await;
    let ch = session.admin.get(&session.connection).await.ok()?;
    ch.queue_declare(
        queue.into(),
        lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .ok()
    .map(|q| q.consumer_count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_step_becomes_an_error_text() {
        assert_eq!(guarded(async { 7 }).await, Ok(7));
        let name = "n".repeat(300);
        // What lapin did with an over-long name before validation.
        let step = async { lapin::types::ShortString::from(name.as_str()) };
        assert_eq!(
            guarded(step).await.unwrap_err(),
            "panicked: ShortString exceeds maximum length: ShortStringError(300)"
        );
        let formatted = async { panic!("step {} failed", 3) };
        assert_eq!(
            guarded(formatted).await,
            Err::<(), _>("panicked: step 3 failed".to_owned())
        );
    }
}
