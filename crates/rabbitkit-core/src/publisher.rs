//! Publishing with confirms: a publish resolves when the broker confirms it.
//!
//! Many publishes may be in flight at once (run their futures concurrently),
//! up to the client's publish window. A publish whose connection dies before
//! its confirm arrives is sent again, with the same `message_id`, once the
//! client has recovered (at-least-once; consumers can de-duplicate on the id).
//! While the client is disconnected a publish waits, holding its place in
//! the window (back-pressure), and fails with [`PublishError::Timeout`]
//! after the publish timeout. Nothing is dropped silently.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Confirmation};

use crate::connection::{Client, Shared};
use crate::error::{PublishError, amqp_error};

/// A message to publish: where to, the body, its AMQP properties.
///
/// ```
/// use rabbitkit_core::{BasicProperties, OutgoingMessage};
/// let msg = OutgoingMessage::new("orders", "order.created", br#"{"id":1}"#.to_vec())
///     .properties(BasicProperties::default().with_content_type("application/json".into()))
///     .mandatory(true);
/// assert_eq!(msg.routing_key, "order.created");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct OutgoingMessage {
    /// The exchange (`""` is the default exchange, which routes to the queue named by the key).
    pub exchange: String,
    /// The routing key.
    pub routing_key: String,
    /// The body, as sent.
    pub body: Vec<u8>,
    /// AMQP properties. A `message_id` is added when missing.
    pub properties: BasicProperties,
    /// Fail with [`PublishError::Unroutable`] when no queue receives the message.
    pub mandatory: bool,
    /// Send it again after a reconnect when the connection died before its
    /// confirm (default `true`: at-least-once). With `false` such a publish
    /// fails with [`PublishError::ConnectionLost`] (for best-effort messages
    /// such as RPC replies, whose target may have died with the node).
    pub resend_after_reconnect: bool,
}

impl OutgoingMessage {
    /// A message with default properties, not mandatory.
    pub fn new(exchange: impl Into<String>, routing_key: impl Into<String>, body: Vec<u8>) -> Self {
        Self {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            body,
            properties: BasicProperties::default(),
            mandatory: false,
            resend_after_reconnect: true,
        }
    }

    /// Sets [`resend_after_reconnect`](Self::resend_after_reconnect).
    pub fn resend_after_reconnect(mut self, resend: bool) -> Self {
        self.resend_after_reconnect = resend;
        self
    }

    /// Sets the AMQP properties.
    pub fn properties(mut self, properties: BasicProperties) -> Self {
        self.properties = properties;
        self
    }

    /// Sets the `mandatory` flag.
    pub fn mandatory(mut self, mandatory: bool) -> Self {
        self.mandatory = mandatory;
        self
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

/// Publishes on one pooled channel, so its messages keep their order.
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

    /// Publishes `message` and resolves when the broker confirms it.
    ///
    /// Errors: [`PublishError::Unroutable`] (mandatory, no queue),
    /// [`PublishError::ExchangeNotFound`], [`PublishError::Nacked`],
    /// [`PublishError::Rejected`], [`PublishError::Timeout`],
    /// [`PublishError::Closed`], and [`PublishError::Invalid`] for an
    /// exchange or routing key over 255 bytes (nothing is sent). A connection loss is not an error: the
    /// message is sent again after recovery.
    pub fn publish(
        &self,
        message: OutgoingMessage,
    ) -> impl Future<Output = Result<Confirmed, PublishError>> + Send + 'static + use<> {
        let shared = self.client.shared().clone();
        let slot = self.slot;
        async move { publish(shared, slot, message).await }
    }
}

async fn publish(
    shared: Arc<Shared>,
    slot: usize,
    mut msg: OutgoingMessage,
) -> Result<Confirmed, PublishError> {
    crate::validate::publish(&msg.exchange, &msg.routing_key)?;
    let timeout = shared.options.publish_timeout;
    let deadline = Instant::now() + timeout;
    let _permit = tokio::time::timeout(timeout, shared.window.clone().acquire_owned())
        .await
        .map_err(|_| PublishError::Timeout(timeout))?
        .map_err(|_| PublishError::Closed {
            reason: "client closed".into(),
        })?;

    let message_id = match msg.properties.message_id() {
        Some(id) => id.to_string(),
        None => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            msg.properties = msg.properties.with_message_id(id.as_str().into());
            id
        }
    };

    let mut newer_than = 0;
    let mut attempts = 0u32;
    let mut channel_retries = 0;
    let mut nack_delay = std::time::Duration::from_millis(50);
    let channel_id = std::sync::Mutex::new(None::<u16>);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let session = match shared.wait_up_for(newer_than, left).await {
            Ok(Ok(s)) => s,
            Ok(Err(reason)) => return Err(PublishError::Closed { reason }),
            Err(_) => return Err(PublishError::Timeout(timeout)),
        };
        attempts += 1;
        if attempts > 1 {
            shared.counters.republished.fetch_add(1, Ordering::Relaxed);
        }
        let sent = async {
            let channel = session.pool.get(&session.connection, slot).await?;
            *channel_id.lock().unwrap() = Some(channel.id());
            channel
                .basic_publish(
                    msg.exchange.as_str().into(),
                    msg.routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: msg.mandatory,
                        immediate: false,
                    },
                    &msg.body,
                    msg.properties.clone(),
                )
                .await?
                .await
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let outcome = match tokio::time::timeout(left, sent).await {
            Ok(outcome) => outcome,
            Err(_) => return Err(PublishError::Timeout(timeout)),
        };
        match outcome {
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => {
                shared.counters.confirmed.fetch_add(1, Ordering::Relaxed);
                return Ok(Confirmed {
                    message_id,
                    attempts,
                });
            }
            Ok(Confirmation::Ack(Some(returned))) => {
                return Err(PublishError::Unroutable {
                    exchange: msg.exchange,
                    routing_key: msg.routing_key,
                    reply_text: returned.reply_text.to_string(),
                });
            }
            Ok(Confirmation::Nack(_)) => {
                // The broker could not store it: e.g. a quorum queue between
                // leaders after a node died. RabbitMQ 3.10 goes on nacking a
                // channel that published during the election, so send it
                // again on a fresh channel, with backoff, until the deadline.
                let id = *channel_id.lock().unwrap();
                if let Some(id) = id {
                    session.pool.retire(slot, id);
                }
                if Instant::now() + nack_delay >= deadline {
                    return Err(PublishError::Nacked {
                        exchange: msg.exchange,
                    });
                }
                tracing::debug!(target: "rabbitkit", message_id, "publish nacked; sending it again");
                tokio::time::sleep(nack_delay).await;
                nack_delay = (nack_delay * 2).min(std::time::Duration::from_secs(1));
                newer_than = 0;
                continue;
            }
            Err(err) => {
                if !session.alive() && !msg.resend_after_reconnect {
                    return Err(PublishError::ConnectionLost);
                }
                if !session.alive() {
                    // The connection is gone: send again once recovered.
                    tracing::debug!(target: "rabbitkit", message_id, "publish interrupted by connection loss; will re-publish");
                    newer_than = session.generation;
                    continue;
                }
                let broker = amqp_error(&err);
                if let Some((406, text)) = &broker
                    && let Some(e) = too_large(text)
                {
                    return Err(e);
                }
                match broker {
                    Some((404, text)) if text.contains(&format!("exchange '{}'", msg.exchange)) => {
                        return Err(PublishError::ExchangeNotFound {
                            exchange: msg.exchange,
                        });
                    }
                    // The channel was closed, maybe by another publisher's
                    // mistake: try once more on a fresh channel.
                    Some((code, text)) if channel_retries > 0 => {
                        return Err(PublishError::Rejected { code, text });
                    }
                    None if channel_retries > 0 => {
                        return Err(PublishError::Rejected {
                            code: 0,
                            text: err.to_string(),
                        });
                    }
                    _ => channel_retries += 1,
                }
            }
        }
    }
}

/// Reads `message size 9000000 is larger than configured max size 8388608`.
fn too_large(text: &str) -> Option<PublishError> {
    let rest = &text[text.find("message size ")? + "message size ".len()..];
    let (size, rest) = rest.split_once(' ')?;
    let max = rest.strip_prefix("is larger than configured max size ")?;
    let max = max.trim().trim_end_matches('.');
    Some(PublishError::TooLarge {
        size: size.parse().ok()?,
        max: max.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_size_refusal() {
        match too_large(
            "PRECONDITION_FAILED - message size 9000000 is larger than configured max size 8388608",
        ) {
            Some(PublishError::TooLarge { size, max }) => {
                assert_eq!((size, max), (9000000, 8388608))
            }
            other => panic!("{other:?}"),
        }
        assert!(too_large("PRECONDITION_FAILED - unknown delivery tag 3").is_none());
    }
}
