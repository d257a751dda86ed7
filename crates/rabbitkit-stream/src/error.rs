//! Errors: one type with a [`ErrorKind`] to match on, the cause kept.

use std::fmt;

use rabbitmq_stream_client::types::ResponseCode;

/// What went wrong, to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A `rabbitmq-stream://` URL could not be parsed, or none was given.
    InvalidEndpoint,
    /// An option or a name is not acceptable (refused before the network).
    InvalidInput,
    /// No endpoint could be reached (within the reconnection limit).
    Connect,
    /// The broker refused the user name or password.
    Authentication,
    /// The TLS handshake failed: the server's certificate is not signed by
    /// a trusted CA or names another host, or the broker wanted a client
    /// certificate. Retrying does not fix it.
    Tls,
    /// The stream does not exist (or was deleted).
    StreamNotFound,
    /// The broker refused the declaration (bad name or arguments, or the
    /// stream exists with other settings).
    Refused,
    /// The message is larger than the negotiated frame size.
    TooLarge {
        /// The encoded size of the message, in bytes.
        size: usize,
        /// The most the frame can carry, in bytes.
        limit: usize,
    },
    /// The body could not be encoded.
    Encode,
    /// A received body could not be decoded into the type asked for.
    Decode,
    /// No confirm within the publish timeout. The message is still re-sent
    /// after a failover (never twice: see deduplication).
    Timeout,
    /// The producer or consumer was closed.
    Closed,
    /// The broker refused a message or an operation with this response code.
    Broker(BrokerCode),
    /// The broker has no stream filtering (RabbitMQ 3.13+ with the
    /// `stream_filtering` feature flag).
    FilteringUnsupported,
    /// A producer of this name is open on this stream already (in this
    /// process): two would share one sequence of publishing ids and the
    /// broker would drop the messages of one as duplicates.
    ProducerNameInUse,
    /// The broker has no super streams (RabbitMQ 3.11+ with the stream
    /// protocol's super stream commands).
    SuperStreamsUnsupported,
    /// No partition of the super stream is bound to the routing key.
    Unroutable,
}

/// The broker's response codes that rabbitkit-stream reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BrokerCode {
    /// `PRECONDITION_FAILED`.
    PreconditionFailed,
    /// `ACCESS_REFUSED`.
    AccessRefused,
    /// `STREAM_NOT_AVAILABLE` (no leader for now).
    StreamNotAvailable,
    /// `PUBLISHER_DOES_NOT_EXIST`.
    PublisherDoesNotExist,
    /// `FRAME_TOO_LARGE`.
    FrameTooLarge,
    /// `INTERNAL_ERROR`.
    InternalError,
    /// Any other code.
    Other,
}

/// An error of rabbitkit-stream; never shows a password.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether this was a connection failure (reconnecting may help).
    pub fn is_connect(&self) -> bool {
        self.kind == ErrorKind::Connect
    }

    pub(crate) fn from_code(code: &ResponseCode, context: &str) -> Self {
        let kind = match code {
            ResponseCode::StreamDoesNotExist => ErrorKind::StreamNotFound,
            ResponseCode::AuthenticationFailure
            | ResponseCode::AuthenticationFailureLoopback
            | ResponseCode::SaslError
            | ResponseCode::SaslMechanismNotSupported => ErrorKind::Authentication,
            ResponseCode::PreconditionFailed => ErrorKind::Broker(BrokerCode::PreconditionFailed),
            ResponseCode::AccessRefused | ResponseCode::VirtualHostAccessFailure => {
                ErrorKind::Broker(BrokerCode::AccessRefused)
            }
            ResponseCode::StreamNotAvailable => ErrorKind::Broker(BrokerCode::StreamNotAvailable),
            ResponseCode::PublisherDoesNotExist => {
                ErrorKind::Broker(BrokerCode::PublisherDoesNotExist)
            }
            ResponseCode::FrameTooLarge => ErrorKind::Broker(BrokerCode::FrameTooLarge),
            ResponseCode::InternalError => ErrorKind::Broker(BrokerCode::InternalError),
            _ => ErrorKind::Broker(BrokerCode::Other),
        };
        Error::new(kind, format!("{context}: the broker answered {code:?}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(s) = &self.source {
            d.field("source", &s.to_string());
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
