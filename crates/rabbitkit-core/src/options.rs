//! The options builder: every default in one place.

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable};

use crate::endpoint::Endpoint;
use crate::error::EndpointError;
use crate::stream::StreamOffset;

/// In which order endpoints are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum EndpointOrder {
    /// In the order given; after a loss, the next one in the list first.
    #[default]
    InOrder,
    /// Shuffled once per client, so many clients spread over the cluster;
    /// after a loss, the next one in the shuffled list first.
    Shuffled,
}

/// How long to wait between connection attempts.
///
/// The first attempt after a loss goes at once to the *next* endpoint (a
/// dead node is skipped without delay). After that, delays grow
/// exponentially from `initial` by `factor` up to `max`, with random jitter
/// of up to half the delay, for at most `max_attempts` attempts (or forever).
///
/// An attempt counts whether it fails at the TCP connect or after it
/// (opening the channel pool, a connection lost while the topology is
/// replayed): the series, and so the delay, starts again only once a
/// connection came fully up. A broker that accepts connections but cannot
/// serve them is retried with growing delays, not in a tight loop.
///
/// ```
/// use std::time::Duration;
/// use rabbitkit_core::Backoff;
/// let b = Backoff::default();
/// assert_eq!(b.delay_for(0), Duration::ZERO);
/// assert!(b.delay_for(1) <= Duration::from_millis(100));
/// assert!(b.delay_for(30) <= Duration::from_secs(10));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Delay before the second attempt (default 100 ms).
    pub initial: Duration,
    /// Growth per attempt (default 2.0).
    pub factor: f64,
    /// Upper bound of a delay (default 10 s).
    pub max: Duration,
    /// Whether to randomise each delay within `[delay/2, delay]` (default on).
    pub jitter: bool,
    /// Give up after this many attempts in a row (default: never).
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_secs(10),
            jitter: true,
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// The delay before attempt number `attempt` (0-based) of a series.
    pub fn delay_for(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let exp = self
            .factor
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let base = self.initial.as_secs_f64() * exp;
        let capped = base.min(self.max.as_secs_f64()).max(0.0);
        let secs = if self.jitter {
            capped * (0.5 + rand::random::<f64>() * 0.5)
        } else {
            capped
        };
        // Never panics: a delay too large for a Duration (huge `initial` or
        // `max`, infinite `factor`) is the largest allowed.
        Duration::try_from_secs_f64(secs).unwrap_or_else(|_| self.max.min(Options::MAX_TIMEOUT))
    }
}

/// The client's inner delays, intervals and retry policies: how long it
/// waits before doing something again. The defaults suit nearly every
/// program; the timeouts an application usually tunes have setters of their
/// own on [`Options`] ([`connect_timeout`](Options::connect_timeout),
/// [`operation_timeout`](Options::operation_timeout), ...).
///
/// Set with [`Options::timings`], read back with
/// [`Client::timings`](crate::Client::timings). Change a field and keep the
/// other defaults:
///
/// ```
/// use std::time::Duration;
/// use rabbitkit_core::{Options, Timings};
/// let options = Options::new().timings(Timings {
///     rpc_timeout: Duration::from_secs(3),
///     ..Timings::default()
/// });
/// # let _ = options;
/// ```
///
/// Every duration is clamped to [`Options::MAX_TIMEOUT`] by
/// [`Options::timings`] (as are the `initial` and `max` of the two
/// [`Backoff`]s); the two polling intervals are at least
/// [`Timings::MIN_INTERVAL`].
#[derive(Debug, Clone, PartialEq)]
pub struct Timings {
    /// How long a consumer's acknowledgements wait to be coalesced into one
    /// `multiple` ack before they are sent (default 1 ms). A batch of half
    /// the prefetch window goes out at once, without waiting.
    pub ack_flush_delay: Duration,
    /// How often the supervisor checks that the connection is still up, in
    /// addition to lapin's events (default 250 ms; at least
    /// [`MIN_INTERVAL`](Self::MIN_INTERVAL)).
    pub liveness_check: Duration,
    /// When a consumer's channel closes while the connection stays up (a
    /// channel error, a cancel by the broker): how many times it is
    /// subscribed again before its stream ends with
    /// [`ConsumeError::Cancelled`](crate::ConsumeError::Cancelled)
    /// (default 5). A queue that no longer exists ends the stream at once.
    pub consumer_restart_attempts: u32,
    /// The wait before restart attempt `n` (1-based) of such a consumer is
    /// `n` times this (default 200 ms: 200, 400, 600, 800, 1000 ms).
    pub consumer_restart_delay: Duration,
    /// Retries of a consumer that could not be subscribed again during a
    /// recovery (default: 500 ms doubling to 10 s, no jitter, until it
    /// works, the consumer is dropped, or the connection is lost: the next
    /// recovery takes over then). The first retry waits
    /// `delay_for(1)`; `max_attempts` stops the retries early (the next
    /// recovery still re-subscribes the consumer).
    pub resubscribe_backoff: Backoff,
    /// A publish the broker nacked (it could not store it, e.g. a quorum
    /// queue between leaders) is sent again on a fresh channel after these
    /// delays (default: 50 ms doubling to 1 s, no jitter), until the
    /// [`publish_timeout`](Options::publish_timeout) or `max_attempts`
    /// nacks, after which it fails with
    /// [`PublishError::Nacked`](crate::PublishError::Nacked).
    pub nack_backoff: Backoff,
    /// Has no effect: [`Client::close`](crate::Client::close) no longer polls (it waits for the
    /// publish window to fill and for the supervisor's tasks to end). Kept,
    /// and still clamped to at least [`MIN_INTERVAL`](Self::MIN_INTERVAL),
    /// so code that sets it keeps compiling.
    pub close_poll: Duration,
    /// How long [`Client::close`](crate::Client::close) waits, once the connection is closed, for
    /// the connection's tasks (the consumers' pumps) to end before they are
    /// aborted, and for the supervisor to stop (default 1 s).
    pub close_slack: Duration,
    /// How long an RPC call waits for its reply unless its client sets its
    /// own timeout (default 10 s; rabbitkit's `RpcClientBuilder::timeout`).
    pub rpc_timeout: Duration,
    /// How long the oldest publish may wait for its confirm, while the
    /// broker does not block the connection, before the node is taken for
    /// failed (default 10 s; zero never does): the client emits
    /// [`Event::Unresponsive`](crate::Event::Unresponsive), closes the
    /// connection and fails over to the next endpoint, where the
    /// publishes still waiting are sent again. This is how a client
    /// leaves a node on the minority side of a network partition, whose
    /// connection stays healthy while nothing is confirmed. Checked at
    /// every [`liveness_check`](Self::liveness_check). Keep it above the
    /// longest confirm latency you expect (a quorum queue electing a new
    /// leader takes a few seconds) and below
    /// [`publish_timeout`](Options::publish_timeout), so the publishes
    /// move instead of failing.
    pub confirm_deadline: Duration,
}

impl Timings {
    /// The shortest polling interval ([`liveness_check`](Self::liveness_check),
    /// [`close_poll`](Self::close_poll)): 1 ms.
    pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

    /// The defaults, as a constant:
    ///
    /// | timing | default |
    /// |---|---|
    /// | [`ack_flush_delay`](Self::ack_flush_delay) | 1 ms |
    /// | [`liveness_check`](Self::liveness_check) | 250 ms |
    /// | [`consumer_restart_attempts`](Self::consumer_restart_attempts) | 5 |
    /// | [`consumer_restart_delay`](Self::consumer_restart_delay) | 200 ms, growing linearly |
    /// | [`resubscribe_backoff`](Self::resubscribe_backoff) | 500 ms doubling to 10 s, no jitter, no limit |
    /// | [`nack_backoff`](Self::nack_backoff) | 50 ms doubling to 1 s, no jitter, no limit |
    /// | [`close_poll`](Self::close_poll) | 1 ms (no effect) |
    /// | [`close_slack`](Self::close_slack) | 1 s |
    /// | [`rpc_timeout`](Self::rpc_timeout) | 10 s |
    /// | [`confirm_deadline`](Self::confirm_deadline) | 10 s |
    pub const DEFAULT: Self = Self {
        ack_flush_delay: Duration::from_millis(1),
        liveness_check: Duration::from_millis(250),
        consumer_restart_attempts: 5,
        consumer_restart_delay: Duration::from_millis(200),
        resubscribe_backoff: Backoff {
            initial: Duration::from_millis(500),
            factor: 2.0,
            max: Duration::from_secs(10),
            jitter: false,
            max_attempts: None,
        },
        nack_backoff: Backoff {
            initial: Duration::from_millis(50),
            factor: 2.0,
            max: Duration::from_secs(1),
            jitter: false,
            max_attempts: None,
        },
        close_poll: Duration::from_millis(1),
        close_slack: Duration::from_secs(1),
        rpc_timeout: Duration::from_secs(10),
        confirm_deadline: Duration::from_secs(10),
    };

    /// The same timings with every value within its documented bounds.
    fn clamped(self) -> Self {
        let max = Options::MAX_TIMEOUT;
        let backoff = |b: Backoff| Backoff {
            initial: b.initial.min(max),
            max: b.max.min(max),
            ..b
        };
        Self {
            ack_flush_delay: self.ack_flush_delay.min(max),
            liveness_check: self.liveness_check.clamp(Self::MIN_INTERVAL, max),
            consumer_restart_attempts: self.consumer_restart_attempts,
            consumer_restart_delay: self.consumer_restart_delay.min(max),
            resubscribe_backoff: backoff(self.resubscribe_backoff),
            nack_backoff: backoff(self.nack_backoff),
            close_poll: self.close_poll.clamp(Self::MIN_INTERVAL, max),
            close_slack: self.close_slack.min(max),
            rpc_timeout: self.rpc_timeout.min(max),
            confirm_deadline: self.confirm_deadline.min(max),
        }
    }
}

impl Default for Timings {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A client certificate and its private key (PEM). Its `Debug` never shows
/// the key.
#[derive(Clone)]
pub(crate) struct ClientIdentity {
    pub(crate) cert_pem: Vec<u8>,
    pub(crate) key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &format_args!("***"))
            .finish()
    }
}

/// Everything a [`Client`](crate::Client) can be configured with, each default documented here.
///
/// ```no_run
/// # async fn run() -> Result<(), rabbitkit_core::ConnectError> {
/// use std::time::Duration;
/// use rabbitkit_core::Options;
/// let client = Options::new()
///     .connection_name("billing")
///     .heartbeat(Duration::from_secs(10))
///     .connect("amqp://guest:guest@127.0.0.1:5672/%2f,amqp://guest:guest@127.0.0.1:5673/%2f")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Options {
    pub(crate) order: EndpointOrder,
    pub(crate) connect_timeout: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) connection_name: Option<String>,
    pub(crate) backoff: Backoff,
    pub(crate) retry_initial_connect: bool,
    pub(crate) channels: usize,
    pub(crate) prefetch: u16,
    pub(crate) publish_window: usize,
    pub(crate) max_message_size: usize,
    pub(crate) publish_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) tls_ca_pem: Option<String>,
    pub(crate) tls_identity: Option<ClientIdentity>,
    pub(crate) auth_external: bool,
    // Bounds of waits on the broker (see `close_timeout`, `operation_timeout`).
    pub(crate) close_timeout: Duration,
    pub(crate) timings: Timings,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            order: EndpointOrder::InOrder,
            connect_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_secs(10),
            connection_name: None,
            backoff: Backoff::default(),
            retry_initial_connect: false,
            channels: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            prefetch: 100,
            publish_window: 1024,
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
            publish_timeout: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(30),
            tls_ca_pem: None,
            tls_identity: None,
            auth_external: false,
            // Bounds of waits on the broker.
            close_timeout: Duration::from_secs(5),
            timings: Timings::DEFAULT,
        }
    }
}

impl Options {
    /// The longest timeout (about a year): [`connect_timeout`](Self::connect_timeout),
    /// [`publish_timeout`](Self::publish_timeout) and
    /// [`operation_timeout`](Self::operation_timeout) are clamped to it, so
    /// `Duration::MAX` means "practically never" instead of an overflow.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

    /// The longest heartbeat interval AMQP can express: 65535 s.
    pub const MAX_HEARTBEAT: Duration = Duration::from_secs(u16::MAX as u64);

    /// The largest [`publish_window`](Self::publish_window): 1 048 576
    /// unconfirmed publishes; larger values are clamped to it.
    pub const MAX_PUBLISH_WINDOW: usize = 1 << 20;

    /// The most pooled publishing [`channels`](Self::channels): 1024; larger
    /// values are clamped to it. With the consumers' channels they stay
    /// within RabbitMQ's default `channel_max` of 2047.
    pub const MAX_CHANNELS: usize = 1024;

    /// The defaults:
    ///
    /// | option | default |
    /// |---|---|
    /// | [`order`](Self::order) | [`EndpointOrder::InOrder`] |
    /// | [`connect_timeout`](Self::connect_timeout) | 5 s per attempt |
    /// | [`heartbeat`](Self::heartbeat) | 10 s (a dead peer is noticed in ~20 s at worst; a killed node at once) |
    /// | [`connection_name`](Self::connection_name) | none (shown in the management UI when set) |
    /// | [`backoff`](Self::backoff) | [`Backoff::default`]: next node at once, then 100 ms doubling to 10 s, jittered, forever |
    /// | [`retry_initial_connect`](Self::retry_initial_connect) | off: the first connect fails after one round over the endpoints |
    /// | [`channels`](Self::channels) | the number of CPUs |
    /// | [`prefetch`](Self::prefetch) | 100 unacknowledged deliveries per consumer |
    /// | [`publish_window`](Self::publish_window) | 1024 unconfirmed publishes in flight |
    /// | [`max_message_size`](Self::max_message_size) | 16 MiB, RabbitMQ 4's default `max_message_size` |
    /// | [`publish_timeout`](Self::publish_timeout) | 30 s, waiting for a connection included |
    /// | [`operation_timeout`](Self::operation_timeout) | 30 s for a declaration, admin call, consumer start or channel open, waiting for a connection included |
    /// | [`close_timeout`](Self::close_timeout) | 5 s for each step of [`Client::close`](crate::Client::close) |
    /// | [`tls_ca_pem`](Self::tls_ca_pem) | none: `amqps://` servers are checked against the system's roots |
    /// | [`tls_client_identity`](Self::tls_client_identity) | none: no client certificate is presented |
    /// | [`auth_external`](Self::auth_external) | off: log in with the URL's user name and password (`PLAIN`) |
    /// | [`timings`](Self::timings) | [`Timings::DEFAULT`]: the inner delays, intervals and retry policies |
    pub fn new() -> Self {
        Self::default()
    }

    /// Order in which endpoints are tried.
    pub fn order(mut self, order: EndpointOrder) -> Self {
        self.order = order;
        self
    }

    /// Time allowed for one connection attempt (TCP + TLS + AMQP handshake);
    /// each recovery step after a reconnect gets twice as long. At most
    /// [`MAX_TIMEOUT`](Self::MAX_TIMEOUT).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.min(Self::MAX_TIMEOUT);
        self
    }

    /// Heartbeat interval asked of the broker (whole seconds; 0 disables).
    /// At most [`MAX_HEARTBEAT`](Self::MAX_HEARTBEAT).
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval.min(Self::MAX_HEARTBEAT);
        self
    }

    /// A name for the connection, shown by the broker's tools.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// The reconnection policy.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Keep retrying the very first connect per the backoff policy instead of
    /// failing after one round over the endpoints.
    pub fn retry_initial_connect(mut self, retry: bool) -> Self {
        self.retry_initial_connect = retry;
        self
    }

    /// Number of pooled publishing channels on the one connection (at least
    /// 1, at most [`MAX_CHANNELS`](Self::MAX_CHANNELS)). The broker's
    /// `channel_max` must leave room for them (and for one channel per
    /// consumer): if not, `connect` fails with
    /// [`ConnectError::ChannelLimit`](crate::ConnectError::ChannelLimit).
    pub fn channels(mut self, count: usize) -> Self {
        self.channels = count.clamp(1, Self::MAX_CHANNELS);
        self
    }

    /// Default prefetch (unacknowledged deliveries per consumer).
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Most publishes awaiting a confirm at once; further publishes wait
    /// (back-pressure). This also bounds duplicates after a failover.
    /// At least 1, at most [`MAX_PUBLISH_WINDOW`](Self::MAX_PUBLISH_WINDOW).
    pub fn publish_window(mut self, window: usize) -> Self {
        self.publish_window = window.clamp(1, Self::MAX_PUBLISH_WINDOW);
        self
    }

    /// RabbitMQ 4's default `max_message_size`: 16 MiB.
    pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

    /// The largest body a publish may carry (default 16 MiB, RabbitMQ 4's
    /// `max_message_size`; set it to your broker's). A larger body is
    /// refused before anything is sent, with `PublishError::TooLarge`:
    /// sent, the broker would close the channel, and every other publish
    /// waiting for its confirm on that channel would fail with it.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Longest a publish may take, including waiting for a connection.
    /// At most [`MAX_TIMEOUT`](Self::MAX_TIMEOUT).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout.min(Self::MAX_TIMEOUT);
        self
    }

    /// Longest a declaration, an admin call ([`Client::queue_info`](crate::Client::queue_info),
    /// [`Client::delete_queue`](crate::Client::delete_queue), ...), a consumer start or
    /// [`Client::open_channel`](crate::Client::open_channel) may take, waiting for a connection and for
    /// the broker's answer included. Past it the call fails with its
    /// `Timeout` error (e.g. [`DeclareError::Timeout`](crate::DeclareError::Timeout))
    /// instead of waiting on a connection that stopped answering (a stalled
    /// network path, a broker that stopped reading during a memory alarm).
    /// It also bounds each ack, nack or reject a consumer sends (see
    /// [`Delivery::ack`](crate::Delivery::ack)).
    /// At most [`MAX_TIMEOUT`](Self::MAX_TIMEOUT).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout.min(Self::MAX_TIMEOUT);
        self
    }

    /// Trusts this CA (PEM, one or more certificates) for `amqps://`
    /// endpoints, in addition to the system's roots. The server's
    /// certificate must be valid for the host name in the URL.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let ca = std::fs::read_to_string("/etc/rabbitmq/ca.pem")?;
    /// let client = rabbitkit_core::Options::new()
    ///     .tls_ca_pem(ca)
    ///     .connect("amqps://app:secret@rabbit.internal:5671/%2f")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn tls_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.tls_ca_pem = Some(pem.into());
        self
    }

    /// Presents this client certificate (mutual TLS) to `amqps://`
    /// endpoints: `cert_pem` holds the certificate, followed by any
    /// intermediate CA certificates, `key_pem` its unencrypted private key
    /// (PKCS#8, PKCS#1 or SEC1), both PEM. Brokers that require client
    /// certificates (`ssl_options.fail_if_no_peer_cert = true`) refuse a
    /// client without one.
    ///
    /// The certificate alone does not log in: the user is still the URL's,
    /// with its password, unless [`auth_external`](Self::auth_external)
    /// logs in as the certificate's user.
    ///
    /// The key is never printed: `Options`' `Debug` shows `***`, and
    /// errors never repeat either PEM. An unreadable certificate or key is
    /// [`ConnectError::ClientCertificate`](crate::ConnectError::ClientCertificate) with
    /// [`ClientCertError::Unreadable`](crate::ClientCertError::Unreadable),
    /// fatal.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = rabbitkit_core::Options::new()
    ///     .tls_ca_pem(std::fs::read_to_string("/etc/rabbitmq/ca.pem")?)
    ///     .tls_client_identity(
    ///         std::fs::read("/etc/app/client.pem")?,
    ///         std::fs::read("/etc/app/client.key")?,
    ///     )
    ///     .auth_external()
    ///     .connect("amqps://rabbit.internal:5671/%2f")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn tls_client_identity(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls_identity = Some(ClientIdentity {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        });
        self
    }

    /// Logs in with the `EXTERNAL` SASL mechanism: the broker takes the
    /// user from the client certificate (see
    /// [`tls_client_identity`](Self::tls_client_identity)), and the URL's
    /// user name and password are not sent. The broker needs the
    /// `rabbitmq_auth_mechanism_ssl` plugin (shipped with RabbitMQ),
    /// `EXTERNAL` in its `auth_mechanisms`, and a user of that name
    /// (by default the certificate's distinguished name; with
    /// `ssl_cert_login_from = common_name`, its common name).
    ///
    /// Chosen explicitly, not guessed from a URL without a password: a URL
    /// without credentials means user `guest`, and a broker may require a
    /// certificate and a password both. A URL's own
    /// `?auth_mechanism=external` has the same effect for that endpoint.
    ///
    /// A user the broker does not know is
    /// [`ConnectError::AuthenticationFailed`](crate::ConnectError::AuthenticationFailed), fatal.
    pub fn auth_external(mut self) -> Self {
        self.auth_external = true;
        self
    }
}

/// Bounds of waits on the broker.
impl Options {
    /// Longest each of the two steps of [`Client::close`](crate::Client::close) may take: sending
    /// the acks consumers recorded, then closing the connection. A broker
    /// that does not answer within it is left (the socket is dropped); acks
    /// not sent then mean redeliveries, never losses.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout.min(Self::MAX_TIMEOUT);
        self
    }

    /// The client's inner delays, intervals and retry policies (see
    /// [`Timings`] for each one and its default). Durations beyond
    /// [`MAX_TIMEOUT`](Self::MAX_TIMEOUT) are clamped to it, polling
    /// intervals below [`Timings::MIN_INTERVAL`] raised to it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rabbitkit_core::{Options, Timings};
    /// let options = Options::new().timings(Timings {
    ///     ack_flush_delay: Duration::from_millis(5),
    ///     ..Timings::default()
    /// });
    /// # let _ = options;
    /// ```
    pub fn timings(mut self, timings: Timings) -> Self {
        self.timings = timings.clamped();
        self
    }
}

/// The environment variable [`Options::connect_env`] reads.
const AMQP_ADDR: &str = "AMQP_ADDR";

/// The endpoints in `AMQP_ADDR` (one URL or a comma-separated list).
///
/// # Errors
///
/// [`EndpointError::Unset`] when `AMQP_ADDR` is not set or blank; the
/// parse errors of [`Endpoint::parse_list`].
pub fn endpoints_from_env() -> Result<Vec<Endpoint>, EndpointError> {
    endpoints_from(AMQP_ADDR, std::env::var(AMQP_ADDR).ok())
}

fn endpoints_from(
    variable: &'static str,
    value: Option<String>,
) -> Result<Vec<Endpoint>, EndpointError> {
    match value {
        Some(list) if !list.trim().is_empty() => Endpoint::parse_list(&list),
        _ => Err(EndpointError::Unset { variable }),
    }
}

/// The prefetch of a stream consumer when neither its options nor the
/// client give one (a stream consumer needs a prefetch: the broker sends
/// it credit for that many deliveries at a time).
pub const STREAM_DEFAULT_PREFETCH: u16 = 100;

/// How to consume.
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use]
pub struct ConsumeOptions {
    /// Unacknowledged deliveries allowed at once (default: the client's prefetch).
    pub prefetch: Option<u16>,
    /// Be the queue's only consumer.
    pub exclusive: bool,
    /// Deliveries need no acknowledgement (they are lost if the consumer dies).
    pub no_ack: bool,
    /// Consumer arguments (e.g. `x-priority`).
    pub arguments: FieldTable,
    /// Consume a stream from this position (`x-stream-offset`). The
    /// consumer then resumes after a failover from the offset after the
    /// last one the application settled (see [`stream_offset`](Self::stream_offset)).
    pub stream_offset: Option<StreamOffset>,
}

impl ConsumeOptions {
    /// Defaults: client prefetch, manual acks, not exclusive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the prefetch.
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = Some(prefetch);
        self
    }

    /// Sets exclusive consumption.
    pub fn exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// Sets automatic acknowledgement.
    pub fn no_ack(mut self, no_ack: bool) -> Self {
        self.no_ack = no_ack;
        self
    }

    /// How long one delivery may stay unacknowledged before the broker
    /// takes it back (the `x-consumer-timeout` consumer argument,
    /// milliseconds): for handlers that run longer than the broker's
    /// `consumer_timeout` (30 minutes by default), or shorter to notice a
    /// stuck handler. On RabbitMQ 4.3 a quorum queue then cancels this
    /// consumer (`basic.cancel`) and returns its unacknowledged messages;
    /// rabbitkit subscribes it again at once, and the late ack of a
    /// delivery the broker took back fails harmlessly with
    /// `AckError::ChannelGone` (the message comes again). RabbitMQ 4.3
    /// has consumer timeouts on quorum queues only and refuses the argument
    /// on a classic queue (`406 PRECONDITION_FAILED`: the consume fails);
    /// `WorkQueueBuilder::consumer_timeout` leaves it out there. Brokers
    /// before 3.12 do not know the argument and ignore it.
    pub fn consumer_timeout(mut self, timeout: Duration) -> Self {
        let millis = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        self.arguments
            .insert("x-consumer-timeout".into(), AMQPValue::LongLongInt(millis));
        self
    }

    /// Consumes a stream (`x-queue-type: stream`) from `offset`
    /// (the `x-stream-offset` consume argument).
    ///
    /// The consumer remembers the highest offset up to which every delivery
    /// it received was settled ([`Delivery::ack`](crate::Delivery::ack), `nack`, `reject`, or
    /// dropped unsettled: a stream requeues nothing) and, when the
    /// connection fails over, subscribes again from the offset after it,
    /// never from `offset` again. Deliveries received but not settled when
    /// the connection died come again: at most the prefetch. With
    /// [`no_ack`](Self::no_ack) a delivery counts as settled once the
    /// application has taken it from the stream. A consumer given a raw
    /// `x-stream-offset` in [`arguments`](Self::arguments) is tracked the
    /// same way.
    ///
    /// A stream consumer needs a prefetch: the one given, else the
    /// client's, else [`STREAM_DEFAULT_PREFETCH`] when those are 0.
    ///
    /// ```
    /// use rabbitkit_core::{ConsumeOptions, StreamOffset};
    /// let options = ConsumeOptions::new()
    ///     .prefetch(500)
    ///     .stream_offset(StreamOffset::First);
    /// ```
    pub fn stream_offset(mut self, offset: StreamOffset) -> Self {
        self.stream_offset = Some(offset);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ConnectError;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let b = Backoff {
            jitter: false,
            ..Backoff::default()
        };
        assert_eq!(b.delay_for(0), Duration::ZERO);
        assert_eq!(b.delay_for(1), Duration::from_millis(100));
        assert_eq!(b.delay_for(2), Duration::from_millis(200));
        assert_eq!(b.delay_for(5), Duration::from_millis(1600));
        assert_eq!(b.delay_for(100), Duration::from_secs(10));
        let j = Backoff::default();
        for _ in 0..100 {
            let d = j.delay_for(3);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
        }
    }

    #[test]
    fn a_client_key_is_never_printed() {
        let key = "-----BEGIN PRIVATE KEY-----\nTUlJRXZRSUJBREFOQmdrcWhraUc5dzBCQVFFRkFBU0NCS2N3\n-----END PRIVATE KEY-----\n";
        let o = Options::new()
            .tls_client_identity("-----BEGIN CERTIFICATE-----\n", key)
            .auth_external();
        let shown = format!("{o:?}");
        assert!(!shown.contains("TUlJRXZR"), "{shown}");
        assert!(shown.contains("key_pem: ***"), "{shown}");
        assert!(o.auth_external);
        assert!(!Options::new().auth_external);
    }

    #[test]
    fn defaults_are_sane() {
        let o = Options::new();
        assert!(o.channels >= 1);
        assert_eq!(o.prefetch, 100);
        assert!(!o.retry_initial_connect);
        let o = Options::new().channels(0).publish_window(0);
        assert_eq!(o.channels, 1);
        assert_eq!(o.publish_window, 1);
    }

    #[test]
    fn an_unset_or_blank_amqp_addr_is_an_error_not_a_default() {
        for value in [None, Some(String::new()), Some(" \n".into())] {
            assert_eq!(
                endpoints_from("AMQP_ADDR", value),
                Err(EndpointError::Unset {
                    variable: "AMQP_ADDR"
                })
            );
        }
        let err = endpoints_from("AMQP_ADDR", None).unwrap_err().to_string();
        assert!(err.contains("AMQP_ADDR is not set"), "{err}");
        let list = endpoints_from("AMQP_ADDR", Some("amqp://a:1/%2f, amqp://b:2/%2f".into()));
        assert_eq!(list.unwrap().len(), 2);
    }

    #[test]
    fn timings_default_to_the_documented_values() {
        let t = Options::new().timings;
        assert_eq!(t, Timings::default());
        assert_eq!(t.ack_flush_delay, Duration::from_millis(1));
        assert_eq!(t.liveness_check, Duration::from_millis(250));
        assert_eq!(t.consumer_restart_attempts, 5);
        assert_eq!(t.consumer_restart_delay, Duration::from_millis(200));
        assert_eq!(t.close_poll, Duration::from_millis(1));
        assert_eq!(t.close_slack, Duration::from_secs(1));
        assert_eq!(t.rpc_timeout, Duration::from_secs(10));
        assert_eq!(t.confirm_deadline, Duration::from_secs(10));
        // Re-subscribing: 500 ms doubling to 10 s, without jitter.
        let waits: Vec<u64> = (1..=7)
            .map(|n| t.resubscribe_backoff.delay_for(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        // A nacked publish: 50 ms doubling to 1 s, without jitter.
        let waits: Vec<u64> = (1..=7)
            .map(|n| t.nack_backoff.delay_for(n).as_millis() as u64)
            .collect();
        assert_eq!(waits, [50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(t.resubscribe_backoff.max_attempts, None);
        assert_eq!(t.nack_backoff.max_attempts, None);
        // Setting the defaults changes nothing.
        assert_eq!(Options::new().timings(Timings::default()).timings, t);
    }

    #[test]
    fn timings_are_clamped() {
        let huge = Backoff {
            initial: Duration::MAX,
            factor: f64::INFINITY,
            max: Duration::MAX,
            jitter: true,
            max_attempts: None,
        };
        let t = Options::new()
            .timings(Timings {
                ack_flush_delay: Duration::MAX,
                liveness_check: Duration::MAX,
                consumer_restart_attempts: u32::MAX,
                consumer_restart_delay: Duration::MAX,
                resubscribe_backoff: huge.clone(),
                nack_backoff: huge,
                close_poll: Duration::MAX,
                close_slack: Duration::MAX,
                rpc_timeout: Duration::MAX,
                confirm_deadline: Duration::MAX,
            })
            .timings;
        let now = std::time::Instant::now();
        for d in [
            t.ack_flush_delay,
            t.liveness_check,
            t.consumer_restart_delay,
            t.close_poll,
            t.close_slack,
            t.confirm_deadline,
            t.rpc_timeout,
            t.resubscribe_backoff.initial,
            t.resubscribe_backoff.max,
            t.nack_backoff.max,
        ] {
            assert_eq!(d, Options::MAX_TIMEOUT);
        }
        // Deadlines are `now + delay` (a nacked publish checks its deadline so).
        for n in [1, 2, 64, u32::MAX] {
            let d = t.nack_backoff.delay_for(n);
            assert!(now.checked_add(d).is_some(), "{d:?}");
        }
        // A zero interval would panic in `tokio::time::interval` or spin.
        let t = Options::new()
            .timings(Timings {
                liveness_check: Duration::ZERO,
                close_poll: Duration::ZERO,
                ack_flush_delay: Duration::ZERO,
                ..Timings::default()
            })
            .timings;
        assert_eq!(t.liveness_check, Timings::MIN_INTERVAL);
        assert_eq!(t.close_poll, Timings::MIN_INTERVAL);
        assert_eq!(t.ack_flush_delay, Duration::ZERO);
    }

    #[test]
    fn backoff_with_extreme_values_does_not_panic() {
        for (initial, factor, max) in [
            (Duration::MAX, f64::MAX, Duration::MAX),
            (Duration::MAX, 2.0, Duration::MAX),
            (Duration::from_millis(100), f64::INFINITY, Duration::MAX),
            (Duration::ZERO, f64::INFINITY, Duration::MAX),
            (Duration::from_secs(1), f64::NAN, Duration::MAX),
        ] {
            for jitter in [false, true] {
                let b = Backoff {
                    initial,
                    factor,
                    max,
                    jitter,
                    max_attempts: None,
                };
                for attempt in [0, 1, 2, 10, 64, 65, u32::MAX] {
                    let _ = b.delay_for(attempt);
                }
            }
        }
    }

    #[test]
    fn extreme_option_values_cannot_overflow() {
        let o = Options::new()
            .connect_timeout(Duration::MAX)
            .publish_timeout(Duration::MAX)
            .operation_timeout(Duration::MAX)
            .heartbeat(Duration::MAX)
            .publish_window(usize::MAX)
            .channels(usize::MAX);
        let now = std::time::Instant::now();
        for t in [o.connect_timeout, o.publish_timeout, o.operation_timeout] {
            // Deadlines are `now + timeout`; recovery steps take twice the connect timeout.
            assert!(now.checked_add(t.saturating_mul(2)).is_some(), "{t:?}");
        }
        // The window is a tokio semaphore, which panics above MAX_PERMITS.
        assert!(o.publish_window <= tokio::sync::Semaphore::MAX_PERMITS);
        // AMQP numbers channels with 16 bits.
        assert!(o.channels <= usize::from(u16::MAX));
    }

    #[tokio::test]
    async fn connecting_with_extreme_option_values_does_not_panic() {
        let result = Options::new()
            .connect_timeout(Duration::MAX)
            .publish_timeout(Duration::MAX)
            .operation_timeout(Duration::MAX)
            .heartbeat(Duration::MAX)
            .publish_window(usize::MAX)
            .channels(usize::MAX)
            .timings(Timings {
                liveness_check: Duration::ZERO,
                close_poll: Duration::ZERO,
                close_slack: Duration::MAX,
                ..Timings::default()
            })
            // Nothing listens on port 1: the connect fails after one attempt.
            .connect("amqp://127.0.0.1:1/%2f")
            .await;
        match result {
            Err(ConnectError::Unreachable { attempts, .. }) => assert_eq!(attempts, 1),
            other => panic!("expected ConnectError::Unreachable, got {other:?}"),
        }
    }
}
