//! [`OutgoingMessage`]: what a publish sends (exchange, routing key, body,
//! properties) and how (mandatory, re-sent after a reconnect, delayed).

use lapin::BasicProperties;

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
    /// Fail with [`PublishError::Unroutable`](crate::PublishError::Unroutable) when no queue receives the message.
    pub mandatory: bool,
    /// Send it again after a reconnect when the connection died before its
    /// confirm (default `true`: at-least-once). With `false` such a publish
    /// fails with [`PublishError::ConnectionLost`](crate::PublishError::ConnectionLost) (for best-effort messages
    /// such as RPC replies, whose target may have died with the node).
    pub resend_after_reconnect: bool,
    /// Deliver it this much later (see [`delay`](crate::delay)): `None`
    /// or zero sends it at once.
    pub delay: Option<std::time::Duration>,
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
            delay: None,
        }
    }

    /// Delivers the message to its exchange and routing key `delay` from
    /// now, through the plugin-free delay queues described in
    /// [`delay`](crate::delay). Rounded up to [`DELAY_UNIT`](crate::delay::DELAY_UNIT);
    /// zero publishes at once; above [`MAX_DELAY`](crate::delay::MAX_DELAY)
    /// the publish fails with [`PublishError::Invalid`](crate::PublishError::Invalid). The confirm means
    /// the broker holds the message durably, replicated, for the whole delay.
    pub fn delay(mut self, delay: std::time::Duration) -> Self {
        self.delay = Some(delay);
        self
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
