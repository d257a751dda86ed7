//! Errors, one type per operation, each variant a kind you can match on.
//!
//! None of them ever holds a password: endpoints print as
//! `amqp://user:***@host:port/vhost`.

use std::time::Duration;

use thiserror::Error;

/// A URL in the endpoint list could not be used.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointError {
    /// No endpoint was given (empty string or list).
    #[error("no broker endpoint given")]
    Empty,
    /// The environment variable that should list the endpoints (`AMQP_ADDR`
    /// for [`Options::connect_env`](crate::Options::connect_env)) is not set
    /// or blank.
    #[error(
        "{variable} is not set: set it to the broker's URL, e.g. \
         {variable}=amqp://guest:guest@127.0.0.1:5672/%2f (several separated by commas)"
    )]
    Unset {
        /// The variable's name.
        variable: &'static str,
    },
    /// The URL does not start with `amqp://` or `amqps://`.
    #[error("broker URL must start with amqp:// or amqps:// (got scheme {scheme:?})")]
    Scheme {
        /// The scheme that was found, if any.
        scheme: String,
    },
    /// The URL could not be parsed. The URL itself is not repeated: it may hold a password.
    #[error("invalid broker URL: {reason}")]
    Invalid {
        /// What is wrong with it.
        reason: String,
    },
}

/// Connecting failed.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The endpoint list was invalid.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The broker refused the user name or password. Retrying cannot fix this.
    #[error("authentication failed at {endpoint}: {message}")]
    AuthenticationFailed {
        /// The endpoint that refused (password hidden).
        endpoint: String,
        /// The broker's explanation.
        message: String,
    },
    /// The virtual host does not exist or the user may not use it. Retrying cannot fix this.
    #[error("virtual host {vhost:?} is missing or not allowed at {endpoint}: {message}")]
    VhostNotAllowed {
        /// The endpoint (password hidden).
        endpoint: String,
        /// The virtual host asked for.
        vhost: String,
        /// The broker's explanation.
        message: String,
    },
    /// The TLS handshake failed on the server's certificate (unknown CA,
    /// wrong host name, expired). Retrying cannot fix this.
    #[error("TLS handshake with {endpoint} failed: {message}")]
    Tls {
        /// The endpoint (password hidden).
        endpoint: String,
        /// What the TLS library said.
        message: String,
    },
    /// The broker refused this client's certificate (mutual TLS), or its
    /// absence, or the certificate or key given to
    /// [`Options::tls_client_identity`](crate::Options::tls_client_identity)
    /// cannot be read: see [`ClientCertError`] for which. Retrying cannot
    /// fix this. The TLS alert (or the reading error) is the
    /// [`source`](std::error::Error::source); no key material is ever in it.
    #[error("client certificate refused at {endpoint}: {kind} ({source})")]
    ClientCertificate {
        /// The endpoint (password hidden).
        endpoint: String,
        /// What is wrong with the certificate.
        kind: ClientCertError,
        /// The TLS error: the broker's alert, e.g. `received fatal alert: UnknownCA`.
        #[source]
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The broker refused the connection because a connection limit is
    /// reached: the virtual host's (`max-connections`) or the user's.
    /// Temporary: it lifts when other connections close or the limit is
    /// raised. The first `connect()` fails with it unless
    /// [`Options::retry_initial_connect`](crate::Options::retry_initial_connect)
    /// is on; a recovering client retries with backoff, reporting each
    /// refusal as an [`Event::ConnectFailed`](crate::Event::ConnectFailed).
    #[error("connection refused at {endpoint}, a connection limit is reached: {message}")]
    ConnectionLimit {
        /// The endpoint (password hidden).
        endpoint: String,
        /// The broker's explanation.
        message: String,
    },
    /// The connection opened, but the broker's `channel_max` (negotiated
    /// per connection) leaves no room for the pool of
    /// [`Options::channels`](crate::Options::channels) publishing channels.
    /// Retrying cannot fix this: lower `channels`, or raise the broker's
    /// `channel_max`. A recovering client keeps trying (with backoff);
    /// the first `connect()` fails with it.
    #[error(
        "{endpoint} allows {channel_max} channels per connection, too few for a pool of {channels}: lower Options::channels"
    )]
    ChannelLimit {
        /// The endpoint (password hidden).
        endpoint: String,
        /// The negotiated `channel_max`.
        channel_max: u16,
        /// The pool size asked for.
        channels: usize,
    },
    /// No endpoint could be reached within the retry policy.
    #[error(
        "no broker endpoint reachable after {attempts} attempt(s); last error at {endpoint}: {last_error}"
    )]
    Unreachable {
        /// How many connection attempts were made.
        attempts: u32,
        /// The endpoint of the last attempt (password hidden).
        endpoint: String,
        /// The last error seen.
        last_error: String,
    },
    /// The client was closed.
    #[error("client closed: {reason}")]
    Closed {
        /// Why.
        reason: String,
    },
}

impl ConnectError {
    /// Whether retrying the same configuration could ever succeed.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::Endpoint(_)
                | Self::AuthenticationFailed { .. }
                | Self::VhostNotAllowed { .. }
                | Self::Tls { .. }
                | Self::ClientCertificate { .. }
                | Self::ChannelLimit { .. }
        )
    }

    /// What is wrong with the client certificate, when the broker refused
    /// it (or its absence).
    pub fn client_cert_error(&self) -> Option<ClientCertError> {
        match self {
            Self::ClientCertificate { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// Why a client certificate (mutual TLS) was refused: what
/// [`ConnectError::ClientCertificate`] says. Every kind is fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ClientCertError {
    /// The broker requires a client certificate and none was presented:
    /// set [`Options::tls_client_identity`](crate::Options::tls_client_identity).
    #[error("the broker requires a client certificate and none was presented")]
    Missing,
    /// The broker does not trust the CA that signed the certificate.
    #[error("the broker does not trust the certificate's CA")]
    UnknownCa,
    /// The certificate has expired (or is not valid yet).
    #[error("the certificate has expired")]
    Expired,
    /// The certificate was revoked.
    #[error("the certificate was revoked")]
    Revoked,
    /// The broker refused the certificate for another reason (bad,
    /// unsupported, not for client authentication, access denied).
    #[error("the broker rejected the certificate")]
    Rejected,
    /// The certificate or key PEM given could not be read; nothing was sent.
    #[error("the certificate or key cannot be read")]
    Unreadable,
}

/// Publishing a message failed.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum PublishError {
    /// A `mandatory` message matched no queue; the broker returned it.
    #[error(
        "message to exchange {exchange:?} with routing key {routing_key:?} is unroutable: {reply_text}"
    )]
    Unroutable {
        /// Exchange published to.
        exchange: String,
        /// Routing key used.
        routing_key: String,
        /// The broker's text (`NO_ROUTE`).
        reply_text: String,
    },
    /// The broker refused the message (negative confirm).
    #[error("broker nacked the message to exchange {exchange:?}")]
    Nacked {
        /// Exchange published to.
        exchange: String,
    },
    /// The exchange does not exist (404).
    #[error("exchange {exchange:?} does not exist")]
    ExchangeNotFound {
        /// The missing exchange.
        exchange: String,
    },
    /// The body is larger than [`Options::max_message_size`](crate::Options::max_message_size)
    /// (refused before anything is sent), or than the broker's own
    /// `max_message_size` when that is lower.
    #[error("message of {size} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// The body's size.
        size: u64,
        /// The broker's limit.
        max: u64,
    },
    /// The broker refused the message: access refused, etc. (`code` 0
    /// when the failure did not come from the broker: then its `cause`,
    /// lapin's error, is the [`source`](std::error::Error::source)).
    #[error("broker rejected the publish ({code}): {text}")]
    Rejected {
        /// AMQP reply code (0: not the broker's).
        code: u16,
        /// The broker's text.
        text: String,
        /// The error underneath, when it was not the broker's.
        #[source]
        cause: Option<Cause>,
    },
    /// The message cannot be sent as given: e.g. an exchange name or
    /// routing key longer than the 255 bytes AMQP allows. Checked before
    /// anything reaches the network; nothing was sent.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What was checked: `exchange` or `routing key`.
        what: String,
        /// The value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A delayed publish could not declare the delay topology it needs
    /// (see [`delay`](crate::delay)): e.g. a `rabbitkit.delay.*` queue
    /// declared by someone else with other arguments, or no permission to
    /// declare. Nothing was published.
    #[error("cannot set up the delay topology")]
    Delay {
        /// What the broker said.
        #[source]
        source: Box<DeclareError>,
    },
    /// The connection died before the confirm, and the message asked not
    /// to be sent again (`resend_after_reconnect: false`). It may or may not
    /// have reached the broker.
    #[error("connection lost before the confirm (not sent again)")]
    ConnectionLost,
    /// No confirm arrived before the publish timeout. The message may or may
    /// not have reached the broker.
    #[error("publish not confirmed within {0:?}")]
    Timeout(Duration),
    /// The publish timed out while the broker was blocking this
    /// connection's publishers (`connection.blocked`: a memory or disk
    /// alarm, see [`Event::Blocked`](crate::Event::Blocked)). The broker
    /// stopped reading, so the message most likely did not reach it; it
    /// may still, once the alarm clears. Not a network problem: the
    /// client stays connected, and publishing resumes by itself when the
    /// broker unblocks the connection ([`Event::Unblocked`](crate::Event::Unblocked)).
    #[error(
        "publish not confirmed within {timeout:?}: the broker is blocking publishers ({reason})"
    )]
    Blocked {
        /// The broker's reason, e.g. `low on memory` or `low on disk space`.
        reason: String,
        /// The publish timeout that passed.
        timeout: Duration,
    },
    /// An unconfirmed publish ([`Publisher::publish_unconfirmed`](crate::Publisher::publish_unconfirmed))
    /// was not sent, at once rather than after a wait: the client is
    /// recovering its connection, or the broker is blocking publishers.
    #[error("not sent: {reason}")]
    NotSent {
        /// Why: `not connected (recovering)` or `the broker is blocking
        /// publishers (low on memory)`.
        reason: String,
    },
    /// The client is closed (or stopped on a fatal error).
    #[error("client closed: {reason}")]
    Closed {
        /// Why.
        reason: String,
    },
}

/// Declaring an exchange, queue or binding failed.
#[derive(Debug, Clone, Error, PartialEq)]
#[non_exhaustive]
pub enum DeclareError {
    /// The object exists with other properties (`406 PRECONDITION_FAILED -
    /// inequivalent arg ...`). Nothing was changed.
    #[error("{object} {name:?} already exists with {argument} = {current}, not {requested}")]
    Inequivalent {
        /// `exchange` or `queue`.
        object: String,
        /// Its name.
        name: String,
        /// The differing argument (`type`, `durable`, `x-queue-type`, ...).
        argument: String,
        /// What this declaration asked for.
        requested: String,
        /// What the broker has.
        current: String,
    },
    /// A name given is invalid (checked before anything reaches the network).
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// A topic pattern, routing key or header match is invalid (checked
    /// before anything reaches the network).
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What was checked: `topic pattern`, `routing key`, `argument`, ...
        what: String,
        /// The value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// Something named does not exist (404), e.g. binding to a missing exchange.
    #[error("not found: {text}")]
    NotFound {
        /// The broker's text.
        text: String,
    },
    /// The user may not do this (403), e.g. a reserved `amq.` name or missing permissions.
    #[error("access refused: {text}")]
    AccessRefused {
        /// The broker's text.
        text: String,
    },
    /// The queue is exclusive to another connection (405).
    #[error("resource locked: {text}")]
    ResourceLocked {
        /// The broker's text.
        text: String,
    },
    /// The declaration uses a feature the broker deprecates and is
    /// configured to deny (RabbitMQ 4: `transient_nonexcl_queues` for a
    /// non-durable, non-exclusive queue; 4.3.0 denied it by default). The
    /// broker closed the connection for it (`541`); rabbitkit reconnected,
    /// did not record the declaration, and retrying cannot help.
    #[error("the broker denies the deprecated feature `{feature}`: {text}")]
    Deprecated {
        /// The feature's name, e.g. `transient_nonexcl_queues`.
        feature: String,
        /// The broker's text.
        text: String,
    },
    /// Another broker refusal (`code` 0 when the failure did not come
    /// from the broker: then its `cause`, lapin's error, is the
    /// [`source`](std::error::Error::source)).
    #[error("broker refused the declaration ({code}): {text}")]
    Broker {
        /// AMQP reply code (0: not the broker's).
        code: u16,
        /// The broker's text.
        text: String,
        /// The error underneath, when it was not the broker's.
        #[source]
        cause: Option<Cause>,
    },
    /// The connection was not available in time.
    #[error("declaration timed out after {0:?}")]
    Timeout(Duration),
    /// The client is closed.
    #[error("client closed: {reason}")]
    Closed {
        /// Why.
        reason: String,
    },
}

/// Starting or running a consumer failed.
#[derive(Debug, Clone, Error, PartialEq)]
#[non_exhaustive]
pub enum ConsumeError {
    /// The queue name cannot be sent as given (longer than the 255 bytes
    /// AMQP allows). Checked before anything is registered or sent.
    #[error("invalid queue name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// The queue does not exist (404).
    #[error("queue {queue:?} does not exist")]
    QueueNotFound {
        /// The queue.
        queue: String,
    },
    /// The user may not consume from this queue (403).
    #[error("access refused: {text}")]
    AccessRefused {
        /// The broker's text.
        text: String,
    },
    /// The queue is exclusive to another connection or has an exclusive consumer (405 / 403).
    #[error("queue locked: {text}")]
    Locked {
        /// The broker's text.
        text: String,
    },
    /// The broker cancelled the consumer and it could not be restarted (e.g. the queue was deleted).
    #[error("consumer on {queue:?} cancelled by the broker")]
    Cancelled {
        /// The queue.
        queue: String,
    },
    /// Another broker refusal (`code` 0 when the failure did not come
    /// from the broker: then its `cause`, lapin's error, is the
    /// [`source`](std::error::Error::source)).
    #[error("broker refused the consumer ({code}): {text}")]
    Broker {
        /// AMQP reply code (0: not the broker's).
        code: u16,
        /// The broker's text.
        text: String,
        /// The error underneath, when it was not the broker's.
        #[source]
        cause: Option<Cause>,
    },
    /// The connection was not available in time.
    #[error("consume timed out after {0:?}")]
    Timeout(Duration),
    /// The client is closed.
    #[error("client closed: {reason}")]
    Closed {
        /// Why.
        reason: String,
    },
}

/// Opening a channel of one's own failed.
#[derive(Debug, Clone, Error, PartialEq)]
#[non_exhaustive]
pub enum ChannelError {
    /// The connection was not available in time.
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    /// The client is closed.
    #[error("client closed: {reason}")]
    Closed {
        /// Why.
        reason: String,
    },
    /// The broker refused (e.g. channel limit reached), or the connection
    /// failed while opening it (lapin's error is the `cause`, the
    /// [`source`](std::error::Error::source)).
    #[error("could not open a channel: {text}")]
    Broker {
        /// What went wrong.
        text: String,
        /// The error underneath.
        #[source]
        cause: Option<Cause>,
    },
}

/// Acknowledging (ack, nack, reject) a delivery failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckError {
    /// The delivery came through a connection or channel that is gone. The
    /// broker has put the message back and will deliver it again (with the
    /// `redelivered` flag set); nothing is lost.
    #[error("the delivery's channel is gone; the broker will redeliver the message")]
    ChannelGone,
    /// This delivery was already acknowledged, rejected or nacked.
    #[error("delivery already acknowledged")]
    AlreadyAcknowledged,
    /// The delivery was received with `no_ack`; there is nothing to acknowledge.
    #[error("delivery was consumed without acknowledgements")]
    NoAck,
}

/// The error underneath a rabbitkit error — lapin's (an I/O error, a
/// closed connection, ...) — kept as its [`source`](std::error::Error::source)
/// so that nothing is lost when rabbitkit names what happened.
///
/// Cheap to clone. Two causes are equal when they are the same error (the
/// same allocation): errors that hold one stay comparable.
#[derive(Clone)]
pub struct Cause(std::sync::Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    /// Wraps an error.
    pub fn new(error: std::sync::Arc<dyn std::error::Error + Send + Sync>) -> Self {
        Self(error)
    }

    /// lapin's error, when that is what this is.
    pub fn lapin(&self) -> Option<&lapin::Error> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0, f)
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Cause {}

/// A broker reply code kept in a variant (0 means "not the broker's").
fn code(code: u16) -> Option<u16> {
    (code != 0).then_some(code)
}

impl ConnectError {
    /// Whether this is the client having been closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed { .. })
    }

    /// Whether trying again later may succeed: not for a fatal error
    /// ([`is_fatal`](Self::is_fatal)) nor a closed client.
    pub fn is_retryable(&self) -> bool {
        !self.is_fatal() && !self.is_closed()
    }

    /// The broker's reply code behind this error (403 for bad
    /// credentials, 530 for a missing virtual host or a connection limit).
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            Self::AuthenticationFailed { .. } => Some(403),
            Self::VhostNotAllowed { message, .. } | Self::ConnectionLimit { message, .. } => {
                crate::reply::code_of_text(message).or(Some(530))
            }
            _ => None,
        }
    }
}

impl PublishError {
    /// Whether no confirm came in time ([`Timeout`](Self::Timeout), or
    /// [`Blocked`](Self::Blocked): timed out while the broker blocked
    /// publishers). The message may or may not have reached the broker.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Blocked { .. })
    }

    /// Whether this is the client having been closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed { .. })
    }

    /// Whether no queue took the message ([`Unroutable`](Self::Unroutable):
    /// a `mandatory` publish the broker returned).
    pub fn is_unroutable(&self) -> bool {
        matches!(self, Self::Unroutable { .. })
    }

    /// Whether the broker is blocking publishers (a memory or disk alarm).
    pub fn is_blocked(&self) -> bool {
        matches!(self, Self::Blocked { .. })
            || matches!(self, Self::NotSent { reason } if reason.contains("blocking publishers"))
    }

    /// Whether publishing the same message again later may succeed: after a
    /// timeout, a blocked broker, a lost connection, a nack, or a failure
    /// that was not the broker's refusal. Not for what only a change can
    /// fix: an invalid or unroutable message, a missing exchange, a message
    /// too large, a refusal, a closed client.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout(_)
            | Self::Blocked { .. }
            | Self::NotSent { .. }
            | Self::ConnectionLost
            | Self::Nacked { .. } => true,
            Self::Rejected { code, .. } => *code == 0,
            Self::Delay { source } => source.is_retryable(),
            _ => false,
        }
    }

    /// The broker's reply code behind this error: 312 (unroutable), 404
    /// (no such exchange), 406 (too large), or the refusal's code.
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            Self::Unroutable { .. } => Some(312),
            Self::ExchangeNotFound { .. } => Some(404),
            Self::TooLarge { .. } => Some(406),
            Self::Rejected { code: c, .. } => code(*c),
            Self::Delay { source } => source.reply_code(),
            _ => None,
        }
    }
}

impl DeclareError {
    /// Whether the connection was not available in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }

    /// Whether this is the client having been closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed { .. })
    }

    /// Whether declaring the same again later may succeed: after a timeout
    /// or a failure that was not the broker's refusal. Not for an invalid
    /// name, an inequivalent declaration, a refusal or a closed client.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Timeout(_) | Self::Broker { code: 0, .. })
    }

    /// The broker's reply code behind this error: 406 (inequivalent), 404,
    /// 403, 405, 541 (a denied deprecated feature), or the refusal's code.
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            Self::Inequivalent { .. } => Some(406),
            Self::NotFound { .. } => Some(404),
            Self::AccessRefused { .. } => Some(403),
            Self::ResourceLocked { .. } => Some(405),
            Self::Deprecated { .. } => Some(541),
            Self::Broker { code: c, .. } => code(*c),
            _ => None,
        }
    }
}

impl ConsumeError {
    /// Whether the connection was not available in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }

    /// Whether this is the client having been closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed { .. })
    }

    /// Whether consuming again later may succeed: after a timeout, an
    /// exclusive lock held by someone else (it may be released), or a
    /// failure that was not the broker's refusal.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_) | Self::Locked { .. } | Self::Broker { code: 0, .. }
        )
    }

    /// The broker's reply code behind this error: 404 (no such queue), 403,
    /// 405 or 403 for a lock (read from the broker's text), or the
    /// refusal's code.
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            Self::QueueNotFound { .. } => Some(404),
            Self::AccessRefused { .. } => Some(403),
            Self::Locked { text } => crate::reply::code_of_text(text),
            Self::Broker { code: c, .. } => code(*c),
            _ => None,
        }
    }
}

impl ChannelError {
    /// Whether the connection was not available in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }

    /// Whether this is the client having been closed.
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed { .. })
    }

    /// Whether opening a channel again later may succeed (not once the
    /// client is closed).
    pub fn is_retryable(&self) -> bool {
        !self.is_closed()
    }

    /// The broker's reply code behind this error, read from its text.
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            Self::Broker { text, .. } => crate::reply::code_of_text(text),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifiers_say_what_retrying_can_do() {
        let timeout = Duration::from_secs(1);
        let closed = || "client closed".to_owned();
        // Publish.
        assert!(PublishError::Timeout(timeout).is_timeout());
        let blocked = PublishError::Blocked {
            reason: "low on memory".into(),
            timeout,
        };
        assert!(blocked.is_timeout() && blocked.is_blocked() && blocked.is_retryable());
        assert!(
            PublishError::NotSent {
                reason: "the broker is blocking publishers (low on memory)".into()
            }
            .is_blocked()
        );
        assert!(PublishError::ConnectionLost.is_retryable());
        assert!(
            PublishError::Nacked {
                exchange: "".into()
            }
            .is_retryable()
        );
        let closed_publish = PublishError::Closed { reason: closed() };
        assert!(closed_publish.is_closed() && !closed_publish.is_retryable());
        let unroutable = PublishError::Unroutable {
            exchange: "".into(),
            routing_key: "q".into(),
            reply_text: "NO_ROUTE".into(),
        };
        assert!(!unroutable.is_retryable());
        assert_eq!(unroutable.reply_code(), Some(312));
        assert!(!PublishError::TooLarge { size: 2, max: 1 }.is_retryable());
        let refused = PublishError::Rejected {
            code: 403,
            text: "ACCESS_REFUSED - write access to exchange 'x' refused".into(),
            cause: None,
        };
        assert!(!refused.is_retryable());
        assert_eq!(refused.reply_code(), Some(403));
        // Declare.
        assert!(DeclareError::Timeout(timeout).is_timeout());
        assert!(DeclareError::Timeout(timeout).is_retryable());
        let inequivalent = DeclareError::Inequivalent {
            object: "exchange".into(),
            name: "logs".into(),
            argument: "type".into(),
            requested: "fanout".into(),
            current: "direct".into(),
        };
        assert!(!inequivalent.is_retryable() && !inequivalent.is_timeout());
        assert_eq!(inequivalent.reply_code(), Some(406));
        assert!(DeclareError::Closed { reason: closed() }.is_closed());
        // A delayed publish's declaration error keeps its own classification.
        let delay = PublishError::Delay {
            source: Box::new(inequivalent),
        };
        assert_eq!(delay.reply_code(), Some(406));
        assert!(!delay.is_retryable());
        // Consume.
        assert!(ConsumeError::Timeout(timeout).is_retryable());
        assert_eq!(
            ConsumeError::QueueNotFound { queue: "q".into() }.reply_code(),
            Some(404)
        );
        assert!(!ConsumeError::QueueNotFound { queue: "q".into() }.is_retryable());
        // Channel.
        assert!(ChannelError::Timeout(timeout).is_timeout());
        assert!(!ChannelError::Closed { reason: closed() }.is_retryable());
    }

    #[test]
    fn causes_compare_by_identity_and_show_lapins_error() {
        let err: lapin::Error = std::io::Error::other("connection reset by peer").into();
        let cause = Cause::new(std::sync::Arc::new(err));
        assert_eq!(cause, cause.clone());
        let other = Cause::new(std::sync::Arc::new(lapin::Error::from(
            std::io::Error::other("connection reset by peer"),
        )));
        assert_ne!(cause, other);
        assert!(cause.lapin().is_some());
        assert!(cause.to_string().contains("connection reset"), "{cause}");
    }
}
