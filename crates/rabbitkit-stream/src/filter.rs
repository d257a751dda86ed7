//! Stream filtering (RabbitMQ 3.13+): a producer's filter value per
//! message, a consumer's filter, and the client-side post-filter.
//!
//! The broker keeps a Bloom filter of the filter values of each chunk and
//! skips the chunks that hold none of the consumer's values. A Bloom filter
//! has false positives, and a chunk holds messages of many values: the
//! broker sends whole chunks, so the consumer must drop the messages that do
//! not match itself. rabbitkit-stream does: the filter value of each message
//! travels in its AMQP 1.0 application properties under
//! [`FILTER_VALUE_PROPERTY`] (the header AMQP 0-9-1 publishers set for the
//! same purpose), and the consumer hands out only the messages whose value
//! is one of its values (and, with
//! [`match_unfiltered`](ConsumerFilter::match_unfiltered), those without
//! one).

use rabbitmq_stream_client::types::{Message, SimpleValue};

/// The application property that carries a message's filter value, set by
/// rabbitkit-stream's producers and read by its consumers' post-filter.
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

/// The filter value a message carries, if any.
pub(crate) fn filter_value(message: &Message) -> Option<&str> {
    match message
        .application_properties()?
        .get(FILTER_VALUE_PROPERTY)?
    {
        SimpleValue::String(s) => Some(s.as_str()),
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
