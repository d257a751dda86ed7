//! Errors of the pattern layer, one type per operation. Errors from the
//! connection layer ([`DeclareError`], [`PublishError`], [`ConsumeError`],
//! [`AckError`]) are re-exported from `rabbitkit-core`.

use rabbitkit_core::{ConsumeError, DeclareError, Delivery, PublishError};
use thiserror::Error;

use crate::codec::{DecodeError, EncodeError};

/// Sending a typed message failed.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum SendError {
    /// The routing key is invalid (nothing was sent).
    #[error(transparent)]
    Invalid(DeclareError),
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
