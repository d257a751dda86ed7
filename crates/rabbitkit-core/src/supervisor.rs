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

use futures::StreamExt;
use lapin::{Connection, ConnectionProperties};
use rand::seq::SliceRandom;
use tokio::sync::oneshot;

use crate::channels::{ChannelPool, Slot};
use crate::connection::{Link, Session, Shared};
use crate::endpoint::Endpoint;
use crate::error::{ConnectError, amqp_error, describe};
use crate::events::Event;
use crate::options::EndpointOrder;

enum AttemptError {
    Fatal(ConnectError),
    Transient(String),
}

async fn connect_one(shared: &Shared, endpoint: &Endpoint) -> Result<Connection, AttemptError> {
    let o = &shared.options;
    let heartbeat = u16::try_from(o.heartbeat.as_secs()).unwrap_or(u16::MAX);
    let uri = endpoint.to_uri(heartbeat, o.connect_timeout.as_millis() as u64);
    let mut props = ConnectionProperties::default();
    if let Some(name) = &o.connection_name {
        props = props.with_connection_name(name.as_str().into());
    }
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
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
        Ok(Err(err)) => Err(match amqp_error(&err) {
            Some((403, message)) => AttemptError::Fatal(ConnectError::AuthenticationFailed {
                endpoint: endpoint.to_string(),
                message,
            }),
            Some((530, message)) | Some((402, message)) => {
                AttemptError::Fatal(ConnectError::VhostNotAllowed {
                    endpoint: endpoint.to_string(),
                    vhost: endpoint.vhost().to_owned(),
                    message,
                })
            }
            _ if endpoint.is_tls() && is_certificate_error(&err) => {
                AttemptError::Fatal(ConnectError::Tls {
                    endpoint: endpoint.to_string(),
                    message: describe(&err),
                })
            }
            _ => AttemptError::Transient(describe(&err)),
        }),
    }
}

/// A TLS handshake refused for the certificate: retrying cannot fix it.
fn is_certificate_error(err: &lapin::Error) -> bool {
    let text = err.to_string().to_lowercase();
    text.contains("certificate")
        || text.contains("unknownissuer")
        || text.contains("notvalidforname")
}

fn close_for_good(shared: &Shared, reason: String) {
    shared.link.send_replace(Link::Closed(reason.clone()));
    shared.window.close();
    shared.emit(Event::Closed { reason });
    // End every consumer stream.
    shared.consumers.lock().unwrap().clear();
}

/// Runs until the client is closed or stops on a fatal error.
pub(crate) async fn run(shared: Arc<Shared>, first: oneshot::Sender<Result<(), ConnectError>>) {
    let mut first = Some(first);
    let mut order: Vec<usize> = (0..shared.endpoints.len()).collect();
    if shared.options.order == EndpointOrder::Shuffled {
        order.shuffle(&mut rand::rng());
    }
    let mut next = 0usize;
    let mut generation = 0u64;
    let mut lost_at: Option<Instant> = None;

    'outer: loop {
        // 1. Connect, endpoint after endpoint, with backoff.
        let mut attempt = 0u32;
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
            match connect_one(&shared, &endpoint).await {
                Ok(conn) => break (conn, endpoint),
                Err(AttemptError::Fatal(err)) => {
                    shared.emit(Event::ConnectFailed {
                        endpoint: endpoint.clone(),
                        error: err.to_string(),
                    });
                    close_for_good(&shared, err.to_string());
                    if let Some(tx) = first.take() {
                        let _ = tx.send(Err(err));
                    }
                    return;
                }
                Err(AttemptError::Transient(error)) => {
                    tracing::warn!(target: "rabbitkit", %endpoint, %error, "connection attempt failed");
                    shared.emit(Event::ConnectFailed {
                        endpoint: endpoint.clone(),
                        error: error.clone(),
                    });
                    let initial_round_over = first.is_some()
                        && !shared.options.retry_initial_connect
                        && attempt as usize >= order.len();
                    let limit_hit = shared
                        .options
                        .backoff
                        .max_attempts
                        .is_some_and(|max| attempt >= max);
                    if initial_round_over || limit_hit {
                        let err = ConnectError::Unreachable {
                            attempts: attempt,
                            endpoint: endpoint.to_string(),
                            last_error: error,
                        };
                        close_for_good(&shared, err.to_string());
                        if let Some(tx) = first.take() {
                            let _ = tx.send(Err(err));
                        }
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
        let step = shared.options.connect_timeout * 2;
        let pool = match tokio::time::timeout(
            step,
            ChannelPool::open(
                &connection,
                shared.options.channels,
                shared.options.prefetch,
            ),
        )
        .await
        {
            Ok(Ok(pool)) => pool,
            Ok(Err(err)) => {
                tracing::warn!(target: "rabbitkit", %endpoint, error = %describe(&err), "opening channels failed");
                lost_at.get_or_insert_with(Instant::now);
                continue 'outer;
            }
            Err(_) => {
                tracing::warn!(target: "rabbitkit", %endpoint, "opening channels timed out");
                let _ =
                    tokio::time::timeout(step, connection.close(320, "recovery timed out".into()))
                        .await;
                lost_at.get_or_insert_with(Instant::now);
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
        });

        let replay = shared.topology.lock().unwrap().replay_order();
        for decl in replay {
            let outcome = tokio::time::timeout(step, session.declare(&decl)).await;
            if !session.alive() {
                lost_at.get_or_insert_with(Instant::now);
                continue 'outer;
            }
            let error = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(err)) => err.to_string(),
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
            let outcome =
                tokio::time::timeout(step, crate::consumer::subscribe(&shared, &session, record))
                    .await;
            if !session.alive() {
                lost_at.get_or_insert_with(Instant::now);
                continue 'outer;
            }
            let error = match outcome {
                Ok(Ok(())) => {
                    resubscribed += 1;
                    continue;
                }
                Ok(Err(err)) => err.to_string(),
                Err(_) => format!("no answer within {step:?}"),
            };
            shared.emit(Event::ConsumerRecoveryFailed {
                queue: record.queue.clone(),
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
            for record in &records {
                let count =
                    tokio::time::timeout(step, passive_consumer_count(&session, &record.queue))
                        .await
                        .ok()
                        .flatten();
                if count == Some(0) {
                    shared.emit(Event::ConsumerRecoveryFailed {
                        queue: record.queue.clone(),
                        error: "broker reports no consumer after re-subscribing".into(),
                    });
                }
            }
        }

        // 3. Up.
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
        let mut poll = tokio::time::interval(Duration::from_millis(250));
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
                    Some(lapin::Event::ConnectionUnblocked) => shared.emit(Event::Unblocked),
                    Some(_) => {}
                    None => break "connection dropped".to_owned(),
                },
                _ = poll.tick() => {
                    if !session.alive() {
                        break "connection closed".to_owned();
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
