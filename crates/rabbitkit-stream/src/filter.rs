//! Stream filtering (RabbitMQ 3.13+): a consumer's filter and the
//! client-side post-filter.
//!
//! The broker keeps a Bloom filter of the filter values of each chunk and
//! skips the chunks that hold none of the consumer's values. A Bloom filter
//! has false positives, and a chunk holds messages of many values: the
//! broker sends whole chunks, so the consumer must drop the messages that do
//! not match itself. rabbitkit-stream does, reading each message's value
//! where the broker keeps it: the `x-stream-filter-value` message
//! annotation (RabbitMQ 4 puts an AMQP 0-9-1 publisher's `x-` headers there)
//! or the application property of that name.
//!
//! **Who sets the values.** A rabbitkit-stream producer,
//! [`ProducerBuilder::filter_value`](crate::ProducerBuilder::filter_value):
//! the value goes in the publish frame (for the Bloom filter) and in the
//! message's `x-stream-filter-value` application property (for the
//! post-filter). Or an AMQP 0-9-1 publisher, e.g. rabbitkit's
//! `queue.send_with(&v, PublishOptions::new().header("x-stream-filter-value", "california"))`:
//! the broker indexes the header and keeps it with the message. A
//! stream-protocol client that puts the value only in the publish frame
//! (the Java client's extractor does) must also put it in that application
//! property, or the post-filter sees its messages as unfiltered.

use rabbitmq_stream_client::types::{Message, SimpleValue, Value};

/// The message annotation (or application property) that carries a
/// message's filter value, read by the consumers' post-filter; also the
/// AMQP 0-9-1 header that sets it.
pub const FILTER_VALUE_PROPERTY: &str = "x-stream-filter-value";

/// The filter of a consumer: the filter values it wants.
///
/// ```no_run
/// # async fn f(client: rabbitkit_stream::StreamClient) -> Result<(), rabbitkit_stream::Error> {
/// use rabbitkit_stream::ConsumerFilter;
/// let consumer = client
///     .consumer::<String>("orders")
///     .filter(ConsumerFilter::new(["california"]))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct ConsumerFilter {
    pub(crate) values: Vec<String>,
    pub(crate) match_unfiltered: bool,
}

impl ConsumerFilter {
    /// Messages whose filter value is one of `values`.
    pub fn new<S: Into<String>>(values: impl IntoIterator<Item = S>) -> Self {
        ConsumerFilter {
            values: values.into_iter().map(Into::into).collect(),
            match_unfiltered: false,
        }
    }

    /// Also the messages published without a filter value (off by default).
    pub fn match_unfiltered(mut self, on: bool) -> Self {
        self.match_unfiltered = on;
        self
    }

    /// The subscription properties the broker reads (`filter.N`,
    /// `match-unfiltered`).
    pub(crate) fn properties(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("filter.{i}"), v.clone()))
            .chain(std::iter::once((
                "match-unfiltered".to_owned(),
                self.match_unfiltered.to_string(),
            )))
    }

    /// The post-filter: whether `message` is one this consumer wants.
    pub(crate) fn matches(&self, message: &Message) -> bool {
        match filter_value(message) {
            Some(v) => self.values.iter().any(|w| w == v),
            None => self.match_unfiltered,
        }
    }
}

/// The error for a filter on a broker without filtering.
pub(crate) fn unsupported() -> crate::Error {
    crate::Error::new(
        crate::ErrorKind::FilteringUnsupported,
        "the broker has no stream filtering (RabbitMQ 3.13+ with the stream_filtering feature flag): \
         its publish command has no version 2",
    )
}

/// The filter value a message carries, if any: in its message annotations
/// (where RabbitMQ 4 puts an AMQP 0-9-1 publisher's `x-` headers) or its
/// application properties (where rabbitkit-stream and older brokers put it).
pub(crate) fn filter_value(message: &Message) -> Option<&str> {
    let annotated = message
        .message_annotations()
        .and_then(|a| a.get(FILTER_VALUE_PROPERTY))
        .and_then(|v| match v {
            Value::Simple(s) => text(s),
            _ => None,
        });
    annotated.or_else(|| {
        text(
            message
                .application_properties()?
                .get(FILTER_VALUE_PROPERTY)?,
        )
    })
}

fn text(v: &SimpleValue) -> Option<&str> {
    match v {
        SimpleValue::String(s) => Some(s.as_str()),
        SimpleValue::Symbol(s) => Some(s.as_str()),
        // An AMQP 0-9-1 header converted by the broker may be binary.
        SimpleValue::Binary(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_value(v: Option<&str>) -> Message {
        let b = Message::builder();
        match v {
            Some(v) => b
                .application_properties()
                .insert(FILTER_VALUE_PROPERTY, v)
                .message_builder()
                .body("x")
                .build(),
            None => b.body("x").build(),
        }
    }

    #[test]
    fn the_post_filter_keeps_only_the_values_asked_for() {
        let f = ConsumerFilter::new(["a", "b"]);
        assert!(f.matches(&with_value(Some("a"))));
        assert!(f.matches(&with_value(Some("b"))));
        assert!(!f.matches(&with_value(Some("c"))));
        assert!(!f.matches(&with_value(None)));
        assert!(f.match_unfiltered(true).matches(&with_value(None)));
    }

    #[test]
    fn the_subscription_properties_are_the_brokers() {
        let props: Vec<_> = ConsumerFilter::new(["a", "b"]).properties().collect();
        assert_eq!(
            props,
            vec![
                ("filter.0".to_owned(), "a".to_owned()),
                ("filter.1".to_owned(), "b".to_owned()),
                ("match-unfiltered".to_owned(), "false".to_owned()),
            ]
        );
    }
}
