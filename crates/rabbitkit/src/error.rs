//! Errors of the pattern layer, one type per operation. Errors from the
//! connection layer ([`DeclareError`], [`PublishError`], [`ConsumeError`],
//! [`AckError`]) are re-exported from `rabbitkit-core`.

use rabbitkit_core::validate::ValidationError;
use rabbitkit_core::{ConsumeError, DeclareError, Delivery, PublishError};
use thiserror::Error;

use crate::codec::{DecodeError, EncodeError};

/// Sending a typed message failed.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum SendError {
    /// The routing key or a header key is invalid (nothing was sent).
    #[error(transparent)]
    Invalid(ValidationError),
    /// The value could not be encoded (nothing was sent).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The publish failed (unroutable, nacked, timed out, ...).
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Subscribing (declaring the queue and bindings, then consuming) failed.
#[derive(Debug, Clone, Error, PartialEq)]
#[non_exhaustive]
pub enum SubscribeError {
    /// A declaration failed.
    #[error(transparent)]
    Declare(#[from] DeclareError),
    /// Starting the consumer failed.
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    /// The consumer options do not fit the queue (e.g. a stream consumer
    /// with a prefetch of 0 or without manual acks). Nothing was sent.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was refused.
        what: String,
        /// Why.
        reason: String,
    },
}

/// A name, key or pattern refused before subscribing is reported as the
/// declaration it would have made: [`SubscribeError::Declare`].
impl From<ValidationError> for SubscribeError {
    fn from(e: ValidationError) -> Self {
        Self::Declare(e.into())
    }
}

/// Receiving a typed message failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The body did not decode into the expected type. The raw delivery is
    /// at hand: inspect it, then `reject(false)` it (it goes to the queue's
    /// dead-letter exchange, if any) or `nack(true)` it.
    #[error("{error}")]
    Decode {
        /// What went wrong.
        error: DecodeError,
        /// The message as received, still to be acknowledged.
        delivery: Box<Delivery>,
    },
    /// The consumer failed (queue deleted, access refused, ...).
    #[error(transparent)]
    Consume(#[from] ConsumeError),
}

impl SendError {
    /// Whether no confirm came in time (see [`PublishError::is_timeout`]).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Publish(e) if e.is_timeout())
    }

    /// Whether the client was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Publish(e) if e.is_closed())
    }

    /// Whether no queue took the message (a mandatory publish returned
    /// by the broker: [`PublishError::Unroutable`]), as a publish to a
    /// direct, topic or headers exchange that no binding matches.
    pub fn is_unroutable(&self) -> bool {
        matches!(self, Self::Publish(e) if e.is_unroutable())
    }

    /// Whether sending the same value again later may succeed (see
    /// [`PublishError::is_retryable`]); never for an invalid key or a value
    /// that cannot be encoded.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Publish(e) if e.is_retryable())
    }

    /// The broker's reply code behind this error, if any.
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            Self::Publish(e) => e.reply_code(),
            _ => None,
        }
    }
}

impl SubscribeError {
    /// Whether the connection was not available in time.
    pub fn is_timeout(&self) -> bool {
        match self {
            Self::Declare(e) => e.is_timeout(),
            Self::Consume(e) => e.is_timeout(),
            Self::Invalid { .. } => false,
        }
    }

    /// Whether the client was closed.
    pub fn is_closed(&self) -> bool {
        match self {
            Self::Declare(e) => e.is_closed(),
            Self::Consume(e) => e.is_closed(),
            Self::Invalid { .. } => false,
        }
    }

    /// Whether subscribing again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Declare(e) => e.is_retryable(),
            Self::Consume(e) => e.is_retryable(),
            Self::Invalid { .. } => false,
        }
    }

    /// The broker's reply code behind this error, if any.
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            Self::Declare(e) => e.reply_code(),
            Self::Consume(e) => e.reply_code(),
            Self::Invalid { .. } => None,
        }
    }
}
