//! [`RpcError`]: every way a call ends without its reply.

use std::sync::Arc;
use std::time::Duration;

use rabbitkit_core::{Cause, ChannelError, PublishError};
use thiserror::Error;

use crate::codec::{DecodeError, EncodeError};

/// A call failed.
#[derive(Debug, Clone, Error, PartialEq)]
#[non_exhaustive]
pub enum RpcError<E> {
    /// No reply within the call's timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// No queue received the request (nobody serves it).
    #[error("request to {routing_key:?} is unroutable: no server queue")]
    Unroutable {
        /// The routing key (the server's queue).
        routing_key: String,
    },
    /// The connection (or the reply channel) died while the call waited;
    /// the request may or may not have been served.
    #[error("connection lost while waiting for the reply")]
    ConnectionLost,
    /// The server's handler returned an error.
    #[error("server error")]
    Server(E),
    /// The server could not decode the request.
    #[error("server could not decode the request: {0}")]
    BadRequest(String),
    /// The reply did not decode.
    #[error(transparent)]
    Decode(DecodeError),
    /// The request did not encode.
    #[error(transparent)]
    Encode(EncodeError),
    /// The reply channel could not be opened (or the client is closed:
    /// [`is_closed`](Self::is_closed)).
    #[error(transparent)]
    Channel(ChannelError),
    /// The broker refused the request: nacked (after the retries of
    /// [`Timings::nack_backoff`](rabbitkit_core::Timings::nack_backoff)),
    /// too large, a missing exchange, access refused, ... `code` is the
    /// broker's reply code (0 when it gave none, e.g. for a nack); the
    /// publish's error, with lapin's underneath it, is the `cause`, the
    /// [`source`](std::error::Error::source).
    #[error("broker refused the request ({code}): {text}")]
    Broker {
        /// AMQP reply code (0: none).
        code: u16,
        /// What happened.
        text: String,
        /// The error underneath.
        #[source]
        cause: Option<Cause>,
    },
    /// The request cannot be sent as addressed: the exchange or routing key
    /// (the server's queue) is longer than the 255 bytes AMQP allows.
    /// Nothing was sent.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What was checked: `exchange` or `routing key`.
        what: String,
        /// The value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

impl<E> RpcError<E> {
    /// Whether no reply came in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_)) || matches!(self, Self::Channel(e) if e.is_timeout())
    }

    /// Whether the client was closed under the call.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Channel(e) if e.is_closed())
    }

    /// Whether calling again later may succeed: after a timeout, a lost
    /// connection, a reply channel that could not be opened yet, or a
    /// broker error that was not a refusal (a nack). Not for the server's
    /// own error, a request it could not decode, an unroutable request (no
    /// server), a refusal, or invalid input.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::ConnectionLost => true,
            Self::Channel(e) => e.is_retryable(),
            Self::Broker { code, .. } => *code == 0,
            _ => false,
        }
    }

    /// The broker's reply code behind this error: 312 (unroutable), the
    /// refusal's code, or the one a reply channel failed with.
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            Self::Unroutable { .. } => Some(312),
            Self::Broker { code, .. } => (*code != 0).then_some(*code),
            Self::Channel(e) => e.reply_code(),
            _ => None,
        }
    }

    /// The call's error for a request whose publish failed.
    pub(crate) fn from_publish(error: PublishError, routing_key: &str, timeout: Duration) -> Self {
        match error {
            PublishError::Unroutable { .. } => Self::Unroutable {
                routing_key: routing_key.to_owned(),
            },
            PublishError::ConnectionLost => Self::ConnectionLost,
            PublishError::Timeout(_) | PublishError::Blocked { .. } => Self::Timeout(timeout),
            PublishError::Closed { reason } => Self::Channel(ChannelError::Closed { reason }),
            PublishError::Invalid {
                what,
                value,
                reason,
            } => Self::Invalid {
                what,
                value,
                reason,
            },
            other => Self::Broker {
                code: other.reply_code().unwrap_or(0),
                text: other.to_string(),
                cause: Some(Cause::new(Arc::new(other))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Error = RpcError<String>;

    #[test]
    fn classifiers_follow_the_publish_error_underneath() {
        let timeout = Duration::from_secs(1);
        let nacked = Error::from_publish(
            PublishError::Nacked {
                exchange: String::new(),
            },
            "q",
            timeout,
        );
        assert!(nacked.is_retryable() && !nacked.is_timeout() && !nacked.is_closed());
        assert_eq!(nacked.reply_code(), None);
        assert!(nacked.to_string().contains("nacked"), "{nacked}");
        // The cause is the publish's error: nothing is lost.
        let source = std::error::Error::source(&nacked).expect("a source");
        assert!(source.to_string().contains("nacked"), "{source}");
        let refused = Error::from_publish(
            PublishError::Rejected {
                code: 403,
                text: "ACCESS_REFUSED".into(),
                cause: None,
            },
            "q",
            timeout,
        );
        assert!(!refused.is_retryable());
        assert_eq!(refused.reply_code(), Some(403));
        let unroutable = Error::from_publish(
            PublishError::Unroutable {
                exchange: String::new(),
                routing_key: "q".into(),
                reply_text: "NO_ROUTE".into(),
            },
            "q",
            timeout,
        );
        assert_eq!(
            unroutable,
            Error::Unroutable {
                routing_key: "q".into()
            }
        );
        assert!(!unroutable.is_retryable());
        assert_eq!(unroutable.reply_code(), Some(312));
        let lost = Error::from_publish(PublishError::ConnectionLost, "q", timeout);
        assert!(lost.is_retryable() && !lost.is_closed());
        let closed = Error::from_publish(
            PublishError::Closed {
                reason: "client closed".into(),
            },
            "q",
            timeout,
        );
        assert!(closed.is_closed() && !closed.is_retryable());
        let late = Error::from_publish(PublishError::Timeout(timeout), "q", timeout);
        assert!(late.is_timeout() && late.is_retryable());
    }
}
