//! The options builder and the endpoint list, every default in one place.

use std::fmt;
use std::time::Duration;

use crate::client::StreamClient;
use crate::error::{Error, ErrorKind};

/// The stream protocol's port (`rabbitmq-stream://` URLs without a port).
pub const DEFAULT_PORT: u16 = 5552;

/// The stream protocol's TLS port (`rabbitmq-stream+tls://` URLs without a
/// port).
pub const DEFAULT_TLS_PORT: u16 = 5551;

/// Where the system's CA bundle usually is (Debian/Ubuntu/Alpine, then
/// Fedora/RHEL, then openSUSE): the default roots of a TLS endpoint.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
];

/// One node of the cluster: `rabbitmq-stream://user:password@host:port/vhost`,
/// or `rabbitmq-stream+tls://…` for TLS (the server's certificate checked
/// against [`StreamOptions::tls_ca_file`], else the system's CA bundle).
///
/// Its `Debug` and `Display` never show the password:
///
/// ```
/// use rabbitkit_stream::Endpoint;
/// let e: Endpoint = "rabbitmq-stream://app:s3cret@10.0.0.1:5553/%2f".parse().unwrap();
/// assert_eq!(e.to_string(), "rabbitmq-stream://app:***@10.0.0.1:5553/%2f");
/// assert!(!format!("{e:?}").contains("s3cret"));
/// assert_eq!((e.host(), e.port(), e.vhost()), ("10.0.0.1", 5553, "/"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) vhost: String,
    pub(crate) tls: bool,
}

impl Endpoint {
    /// The host name or address.
    pub fn host(&self) -> &str {
        &self.host
    }
    /// The port of the stream protocol listener.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The virtual host (`/` by default).
    pub fn vhost(&self) -> &str {
        &self.vhost
    }
    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }
    /// Whether the connection uses TLS (`rabbitmq-stream+tls://`).
    pub fn tls(&self) -> bool {
        self.tls
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vhost = if self.vhost == "/" {
            "%2f".to_owned()
        } else {
            self.vhost.replace('%', "%25").replace('/', "%2f")
        };
        let scheme = if self.tls {
            "rabbitmq-stream+tls"
        } else {
            "rabbitmq-stream"
        };
        write!(
            f,
            "{scheme}://{}:***@{}:{}/{}",
            self.user, self.host, self.port, vhost
        )
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl std::str::FromStr for Endpoint {
    type Err = Error;

    /// Parses `rabbitmq-stream://[user[:password]@]host[:port][/vhost]`
    /// (user and password default to `guest`, the port to 5552, the vhost
    /// to `/`), or the same with `rabbitmq-stream+tls://` (port 5551). A
    /// bad URL is an [`ErrorKind::InvalidEndpoint`] error that
    /// does not repeat the password.
    fn from_str(url: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            // Never echo the URL: it may hold a password.
            Error::new(ErrorKind::InvalidEndpoint, format!("bad stream URL: {why}"))
        };
        let url = url.trim();
        let (rest, tls) = match url.strip_prefix("rabbitmq-stream+tls://") {
            Some(rest) => (rest, true),
            None => (
                url.strip_prefix("rabbitmq-stream://").ok_or_else(|| {
                    bad("it must start with rabbitmq-stream:// or rabbitmq-stream+tls://")
                })?,
                false,
            ),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (
                    percent_decode(user).ok_or_else(|| bad("bad user name"))?,
                    percent_decode(pass).ok_or_else(|| bad("bad password encoding"))?,
                ),
                None => (
                    percent_decode(u).ok_or_else(|| bad("bad user name"))?,
                    String::new(),
                ),
            },
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))?,
            ),
            None => (hostport, if tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT }),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let vhost = if path.is_empty() {
            "/".to_owned()
        } else {
            percent_decode(path).ok_or_else(|| bad("bad virtual host encoding"))?
        };
        Ok(Endpoint {
            host: host.to_owned(),
            port,
            user,
            password,
            vhost,
            tls,
        })
    }
}

/// What [`StreamOptions::connect`] takes: one URL, a comma-separated list,
/// or a list of URLs.
pub trait ToEndpoints {
    /// The endpoints, parsed.
    fn to_endpoints(&self) -> Result<Vec<Endpoint>, Error>;
}

impl ToEndpoints for str {
    fn to_endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        self.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(str::parse)
            .collect()
    }
}
impl ToEndpoints for &str {
    fn to_endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        (**self).to_endpoints()
    }
}
impl ToEndpoints for String {
    fn to_endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        self.as_str().to_endpoints()
    }
}
impl ToEndpoints for &String {
    fn to_endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        self.as_str().to_endpoints()
    }
}
impl<T: ToEndpoints> ToEndpoints for [T] {
    fn to_endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        let mut all = vec![];
        for t in self {
            all.extend(t.to_endpoints()?);
        }
        Ok(all)
    }
}
impl<T: ToEndpoints> ToEndpoints for Vec<T> {
    fn to_endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        self.as_slice().to_endpoints()
    }
}
impl<T: ToEndpoints, const N: usize> ToEndpoints for [T; N] {
    fn to_endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        self.as_slice().to_endpoints()
    }
}

/// How to connect and how hard to retry; every default is in
/// [`StreamOptions::new`].
///
/// ```no_run
/// # async fn f() -> Result<(), rabbitkit_stream::Error> {
/// use std::time::Duration;
/// use rabbitkit_stream::StreamOptions;
/// let client = StreamOptions::new()
///     .connection_name("orders")
///     .publish_timeout(Duration::from_secs(30))
///     .connect("rabbitmq-stream://guest:guest@127.0.0.1:5552,rabbitmq-stream://guest:guest@127.0.0.1:5553")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct StreamOptions {
    pub(crate) connection_name: String,
    pub(crate) heartbeat: Duration,
    pub(crate) max_frame_size: u32,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) reconnect_for: Duration,
    pub(crate) publish_timeout: Duration,
    pub(crate) batch_size: usize,
    pub(crate) tls_ca_file: Option<std::path::PathBuf>,
    pub(crate) tls_identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            connection_name: "rabbitkit-stream".to_owned(),
            heartbeat: Duration::from_secs(10),
            max_frame_size: 1_048_576,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            reconnect_for: Duration::from_secs(120),
            publish_timeout: Duration::from_secs(60),
            batch_size: 1000,
            tls_ca_file: None,
            tls_identity: None,
        }
    }
}

impl StreamOptions {
    /// The defaults: connection name `rabbitkit-stream`, heartbeat 10 s,
    /// frames up to 1 MiB (RabbitMQ's default `stream.frame_max`),
    /// reconnect back-off from 100 ms doubling to 5 s for up to 120 s,
    /// publish timeout 60 s, up to 1000 messages per publish frame.
    pub fn new() -> Self {
        Self::default()
    }
    /// The name the broker shows for the connections.
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = name.into();
        self
    }
    /// The heartbeat asked of the broker (whole seconds).
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }
    /// The largest frame asked of the broker (it may lower it); no message
    /// bigger than this fits.
    pub fn max_frame_size(mut self, bytes: u32) -> Self {
        self.max_frame_size = bytes;
        self
    }
    /// Back-off between reconnection attempts: from `min`, doubling up to `max`.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max.max(min);
        self
    }
    /// How long a producer or consumer keeps trying to reconnect before it
    /// gives up (its waiting sends then fail with
    /// [`ErrorKind::Connect`]).
    pub fn reconnect_for(mut self, limit: Duration) -> Self {
        self.reconnect_for = limit;
        self
    }
    /// How long a send waits for its confirm.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }
    /// The most messages a producer puts in one publish frame (also bounded
    /// by the frame size).
    pub fn batch_size(mut self, messages: usize) -> Self {
        self.batch_size = messages.max(1);
        self
    }
    /// The PEM file of the CA(s) a `rabbitmq-stream+tls://` server's
    /// certificate must be signed by; without it, the system's CA bundle
    /// (the first of `/etc/ssl/certs/ca-certificates.crt`,
    /// `/etc/pki/tls/certs/ca-bundle.crt`, `/etc/ssl/ca-bundle.pem`).
    pub fn tls_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }
    /// A client certificate and its key (PEM files), for brokers that ask
    /// for one (mutual TLS).
    pub fn tls_identity(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.tls_identity = Some((cert.into(), key.into()));
        self
    }
    /// The CA file a TLS connection checks the server against: the one
    /// given, else the system's bundle. An [`ErrorKind::InvalidInput`]
    /// error when neither exists.
    pub(crate) fn tls_roots(&self) -> Result<std::path::PathBuf, Error> {
        if let Some(path) = &self.tls_ca_file {
            if !path.is_file() {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("the TLS CA file {} does not exist", path.display()),
                ));
            }
            return Ok(path.clone());
        }
        SYSTEM_CA_BUNDLES
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    "TLS: no CA file given (StreamOptions::tls_ca_file) and no system CA bundle found",
                )
            })
    }
    /// Connects to the first endpoint that answers and returns the client;
    /// the others are kept for failover.
    pub async fn connect(self, endpoints: impl ToEndpoints) -> Result<StreamClient, Error> {
        let endpoints = endpoints.to_endpoints()?;
        if endpoints.is_empty() {
            return Err(Error::new(ErrorKind::InvalidEndpoint, "no endpoint given"));
        }
        StreamClient::connect(self, endpoints).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_defaults() {
        let all = "rabbitmq-stream://127.0.0.1, rabbitmq-stream://u:p%40ss@h:5553/vh"
            .to_endpoints()
            .unwrap();
        assert_eq!(all[0].user, "guest");
        assert_eq!(all[0].port, 5552);
        assert_eq!(all[0].vhost, "/");
        assert_eq!(all[1].password, "p@ss");
        assert_eq!(all[1].vhost, "vh");
        let tls: Endpoint = "rabbitmq-stream+tls://u:secret@h".parse().unwrap();
        assert!(tls.tls && !all[0].tls);
        assert_eq!(tls.port, DEFAULT_TLS_PORT);
        assert_eq!(tls.to_string(), "rabbitmq-stream+tls://u:***@h:5551/%2f");
        let e = "amqp://u:secret@h".to_endpoints().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidEndpoint);
        assert!(!e.to_string().contains("secret"));
        let e = "rabbitmq-stream://u:secret@h:port"
            .to_endpoints()
            .unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
