//! The broker a connection talks to: its product, version and capabilities,
//! as it announces them in `connection.start`, and what rabbitkit does
//! differently by version ([`ServerInfo`]).
//!
//! lapin reads `connection.start` and keeps none of it, so once a
//! connection is up, a short probe goes to the same endpoint (the same TLS
//! settings and credentials): it reads the broker's `connection.start`,
//! completes the handshake and closes at once (a few milliseconds on a
//! LAN), so the broker logs an ordinary connection named `rabbitkit
//! version probe`, not a client that vanished mid-handshake. It runs after
//! the connection holds its place, so a connection limit never refuses
//! the connection for the probe (a probe refused at the limit still reads
//! the version). A probe that gets no answer within 2 s never fails the
//! connection: the version is then unknown (`None`) and rabbitkit takes
//! the paths that are safe on every version. Behind a load balancer the
//! probe may reach another node of the same cluster than the connection
//! did.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use lapin::protocol::{AMQPClass, connection::AMQPMethod};
use lapin::types::{AMQPValue, FieldTable};

/// A RabbitMQ version, `major.minor.patch` (what follows, such as
/// `-rc.1` or a Debian revision, is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major version: 3, 4, ...
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl Version {
    /// A version.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses `4.3.6`, `3.10.8`, `4.0.0-rc.1`, `4.3` (patch 0); `None` for
    /// anything else.
    pub fn parse(text: &str) -> Option<Self> {
        let numbers = text.trim().split(['-', '+', ' ']).next()?;
        let mut parts = numbers.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        Some(Self::new(major, minor, patch))
    }

    /// Whether this is `major.minor` or later.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What the broker announced about itself in `connection.start`, and
/// what follows from its version for a client
/// ([`Client::server`](crate::Client::server)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `product`, e.g. `RabbitMQ`.
    pub product: String,
    /// `version` as announced, e.g. `4.3.6`.
    pub version_text: String,
    /// `version`, parsed (`None` when it is not `x.y.z`).
    pub version: Option<Version>,
    /// `cluster_name`, when announced.
    pub cluster_name: Option<String>,
    /// `capabilities`: each announced capability and whether it is on.
    pub capabilities: BTreeMap<String, bool>,
}

impl ServerInfo {
    /// Reads the server properties of `connection.start`.
    pub fn from_properties(properties: &FieldTable) -> Self {
        let text = |key: &str| match properties.inner().get(key) {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()),
            Some(AMQPValue::ShortString(s)) => Some(s.to_string()),
            _ => None,
        };
        let capabilities = match properties.inner().get("capabilities") {
            Some(AMQPValue::FieldTable(table)) => table
                .inner()
                .iter()
                .filter_map(|(k, v)| match v {
                    AMQPValue::Boolean(on) => Some((k.to_string(), *on)),
                    _ => None,
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        let version_text = text("version").unwrap_or_default();
        Self {
            product: text("product").unwrap_or_default(),
            version: Version::parse(&version_text),
            version_text,
            cluster_name: text("cluster_name"),
            capabilities,
        }
    }

    /// Whether the broker announced capability `name` as on (e.g.
    /// `consumer_cancel_notify`, `per_consumer_qos`, `direct_reply_to`).
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.get(name).copied().unwrap_or(false)
    }

    fn at_least(&self, major: u32, minor: u32) -> bool {
        self.version.is_some_and(|v| v.at_least(major, minor))
    }

    /// RabbitMQ 4.3+: a quorum queue's consumer whose delivery stays
    /// unacknowledged past its consumer timeout is cancelled
    /// (`basic.cancel`, channel kept) and its messages returned; classic
    /// queues and streams have no consumer timeout. Before 4.3 the broker
    /// closes the consumer's channel instead, for every queue type.
    pub fn cancels_timed_out_consumers(&self) -> bool {
        self.at_least(4, 3)
    }

    /// RabbitMQ 4.0–4.2: every requeue of a quorum queue's message
    /// (`nack` with requeue, a channel or connection lost with it
    /// unacknowledged, a graceful give-back) counts toward its delivery
    /// limit (20 by default). 4.3 counts only failures (`reject`, a crash)
    /// in `x-delivery-count`; 3.x has no default limit.
    pub fn requeues_count_toward_delivery_limit(&self) -> bool {
        self.at_least(4, 0) && !self.at_least(4, 3)
    }

    /// RabbitMQ 4.0+: quorum queues have a delivery limit of 20 by default.
    pub fn has_default_delivery_limit(&self) -> bool {
        self.at_least(4, 0)
    }

    /// RabbitMQ 4.3+: quorum queues can delay a returned message themselves
    /// (`x-delayed-retry-type`, `-min`, `-max`).
    pub fn has_delayed_retry(&self) -> bool {
        self.at_least(4, 3)
    }

    /// RabbitMQ 4.3+: the `x-modulus-hash` exchange type is in the core
    /// broker (no plugin).
    pub fn has_modulus_hash_exchange(&self) -> bool {
        self.at_least(4, 3)
    }

    /// RabbitMQ 4.3+: a quorum queue keeps a disconnected consumer's
    /// unacknowledged messages (and a single active consumer's place) for
    /// `consumer_disconnected_timeout` (60 s by default, queue argument
    /// `x-consumer-disconnected-timeout`); before, it returns them as soon
    /// as the node is seen down (0.2–0.5 s after a SIGKILL here).
    pub fn has_consumer_disconnected_timeout(&self) -> bool {
        self.at_least(4, 3)
    }

    /// How many priorities a quorum queue honours without `x-max-priority`:
    /// 32 on 4.3+ (strict), 2 on 4.0–4.2 (0–4 normal, 5 and above high,
    /// delivered two high for one normal while both wait),
    /// none before 4.0 (quorum queues ignored priorities). `None` when the
    /// version is unknown.
    pub fn quorum_queue_priorities(&self) -> Option<u8> {
        let v = self.version?;
        Some(if v.at_least(4, 3) {
            32
        } else if v.at_least(4, 0) {
            2
        } else {
            0
        })
    }
}

impl fmt::Display for ServerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.product, self.version_text)?;
        if let Some(cluster) = &self.cluster_name {
            write!(f, " (cluster {cluster})")?;
        }
        Ok(())
    }
}

/// Parses one `connection.start` frame (type 1, channel 0) as the broker
/// sends it first; `None` when `frame` is not one (or is incomplete).
pub(crate) fn parse_connection_start(frame: &[u8]) -> Option<ServerInfo> {
    let (&kind, rest) = frame.split_first()?;
    if kind != 1 || rest.len() < 6 {
        return None;
    }
    let size = u32::from_be_bytes(rest[2..6].try_into().ok()?) as usize;
    let payload = rest.get(6..6 + size)?;
    match lapin::protocol::parse_class(payload) {
        Ok((_, AMQPClass::Connection(AMQPMethod::Start(start)))) => {
            Some(ServerInfo::from_properties(&start.server_properties))
        }
        _ => None,
    }
}

/// How many bytes the frame at the start of `buffer` takes, when its
/// header is there (7 bytes of header, the payload, the end octet).
fn frame_len(buffer: &[u8]) -> Option<usize> {
    let size = u32::from_be_bytes(buffer.get(3..7)?.try_into().ok()?) as usize;
    Some(7 + size + 1)
}

/// The class and method ids of a method frame, and its arguments.
fn method(frame: &[u8]) -> Option<(u16, u16, &[u8])> {
    if *frame.first()? != 1 {
        return None;
    }
    let payload = frame.get(7..frame.len() - 1)?;
    let class = u16::from_be_bytes(payload.get(0..2)?.try_into().ok()?);
    let method = u16::from_be_bytes(payload.get(2..4)?.try_into().ok()?);
    Some((class, method, &payload[4..]))
}

/// A method frame on channel 0: `connection.<method>` with `args`.
fn connection_frame(method: u16, args: &[u8]) -> Vec<u8> {
    let mut frame = vec![1u8, 0, 0];
    frame.extend_from_slice(&((args.len() + 4) as u32).to_be_bytes());
    frame.extend_from_slice(&10u16.to_be_bytes());
    frame.extend_from_slice(&method.to_be_bytes());
    frame.extend_from_slice(args);
    frame.push(0xCE);
    frame
}

fn short_str(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(255)];
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

fn long_str(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// `connection.start-ok`: a connection name that says what it is, the
/// URL's mechanism and credentials.
fn start_ok(uri: &lapin::uri::AMQPUri) -> Vec<u8> {
    let mut args = Vec::new();
    let mut props = Vec::new();
    short_str(&mut props, "connection_name");
    props.push(b'S');
    long_str(&mut props, b"rabbitkit version probe");
    args.extend_from_slice(&(props.len() as u32).to_be_bytes());
    args.extend_from_slice(&props);
    let external = uri.query.auth_mechanism == Some(lapin::uri::SASLMechanism::External);
    if external {
        short_str(&mut args, "EXTERNAL");
        long_str(&mut args, b"");
    } else {
        let user = &uri.authority.userinfo;
        short_str(&mut args, "PLAIN");
        let mut response = vec![0u8];
        response.extend_from_slice(user.username.as_bytes());
        response.push(0);
        response.extend_from_slice(user.password.as_bytes());
        long_str(&mut args, &response);
    }
    short_str(&mut args, "en_US");
    args
}

/// Reads one whole frame from `stream` into `buffer` (consuming it).
async fn read_frame<S: futures::AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut Vec<u8>,
) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(len) = frame_len(buffer)
            && buffer.len() >= len
        {
            return Some(buffer.drain(..len).collect());
        }
        if buffer.len() > 1024 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// The probe of the module docs: connects to `uri` (TLS as configured),
/// reads `connection.start`, then goes through the handshake and closes
/// the connection politely (a connection that left during the handshake
/// would be a warning in the broker's log). `None` on any failure or
/// after `within`; the credentials go only to the broker, as lapin sends
/// them.
pub(crate) async fn probe(
    uri: &lapin::uri::AMQPUri,
    tls: &lapin::tcp::OwnedTLSConfig,
    within: Duration,
) -> Option<ServerInfo> {
    use lapin::tcp::AMQPUriTcpExt;
    let attempt = async {
        let runtime = lapin::runtime::default_runtime().ok()?;
        let mut stream = uri
            .connect_with_config_async(tls.as_ref(), &runtime)
            .await
            .ok()?;
        let mut buffer = Vec::with_capacity(4096);
        stream.write_all(b"AMQP\x00\x00\x09\x01").await.ok()?;
        let start = read_frame(&mut stream, &mut buffer).await?;
        let info = parse_connection_start(&start)?;
        stream
            .write_all(&connection_frame(11, &start_ok(uri)))
            .await
            .ok()?;
        // connection.tune (10, 30): channel-max, frame-max, heartbeat.
        let tune = read_frame(&mut stream, &mut buffer).await;
        let tuned = tune.as_deref().and_then(method);
        let Some((10, 30, limits)) = tuned else {
            // Refused (credentials, vhost): the version is still known;
            // the real connection reports the refusal.
            return Some(info);
        };
        let limits = limits.get(..8)?.to_vec();
        stream
            .write_all(&connection_frame(31, &limits))
            .await
            .ok()?;
        let mut open = Vec::new();
        short_str(&mut open, &uri.vhost);
        open.extend_from_slice(&[0, 0]); // reserved capabilities, insist
        stream.write_all(&connection_frame(40, &open)).await.ok()?;
        if let Some((10, 41, _)) = read_frame(&mut stream, &mut buffer)
            .await
            .as_deref()
            .and_then(method)
        {
            let mut close = 200u16.to_be_bytes().to_vec();
            short_str(&mut close, "version read");
            close.extend_from_slice(&[0, 0, 0, 0]);
            stream.write_all(&connection_frame(50, &close)).await.ok()?;
            // connection.close-ok, or whatever: the socket closes anyway.
            let _ = read_frame(&mut stream, &mut buffer).await;
        }
        Some(info)
    };
    tokio::time::timeout(within, attempt).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_as_rabbitmq_announces_them() {
        assert_eq!(Version::parse("4.3.6"), Some(Version::new(4, 3, 6)));
        assert_eq!(Version::parse("3.10.8"), Some(Version::new(3, 10, 8)));
        assert_eq!(Version::parse("4.0.0-rc.1"), Some(Version::new(4, 0, 0)));
        assert_eq!(Version::parse("4.2"), Some(Version::new(4, 2, 0)));
        assert_eq!(Version::parse("unknown"), None);
        assert!(Version::new(3, 10, 8) < Version::new(4, 0, 0));
        assert!(Version::new(4, 3, 0).at_least(4, 3));
        assert!(!Version::new(4, 2, 9).at_least(4, 3));
    }

    fn info(version: &str) -> ServerInfo {
        let mut props = FieldTable::default();
        props.insert("version".into(), AMQPValue::LongString(version.into()));
        ServerInfo::from_properties(&props)
    }

    #[test]
    fn what_each_version_does() {
        let (v310, v40, v43) = (info("3.10.8"), info("4.0.5"), info("4.3.6"));
        assert!(!v310.cancels_timed_out_consumers() && !v40.cancels_timed_out_consumers());
        assert!(v43.cancels_timed_out_consumers());
        assert!(!v310.requeues_count_toward_delivery_limit());
        assert!(v40.requeues_count_toward_delivery_limit());
        assert!(!v43.requeues_count_toward_delivery_limit());
        assert!(v43.has_delayed_retry() && !v40.has_delayed_retry());
        assert!(v43.has_modulus_hash_exchange() && !v40.has_modulus_hash_exchange());
        assert!(v43.has_consumer_disconnected_timeout());
        assert!(!v40.has_consumer_disconnected_timeout());
        assert_eq!(v310.quorum_queue_priorities(), Some(0));
        assert_eq!(v40.quorum_queue_priorities(), Some(2));
        assert_eq!(v43.quorum_queue_priorities(), Some(32));
        // Unknown: the paths safe everywhere.
        let unknown = info("devel");
        assert_eq!(unknown.version, None);
        assert!(!unknown.has_delayed_retry());
        assert_eq!(unknown.quorum_queue_priorities(), None);
    }

    /// An AMQP field table of long strings and nested tables, encoded.
    fn table(entries: &[(&str, Value<'_>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (key, value) in entries {
            body.push(key.len() as u8);
            body.extend_from_slice(key.as_bytes());
            match value {
                Value::Text(text) => {
                    body.push(b'S');
                    body.extend_from_slice(&(text.len() as u32).to_be_bytes());
                    body.extend_from_slice(text.as_bytes());
                }
                Value::Bool(on) => body.extend_from_slice(&[b't', u8::from(*on)]),
                Value::Table(inner) => {
                    body.push(b'F');
                    body.extend_from_slice(inner);
                }
            }
        }
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    enum Value<'a> {
        Text(&'a str),
        Bool(bool),
        Table(Vec<u8>),
    }

    /// A `connection.start` frame shaped as RabbitMQ sends it (the
    /// properties read here, a boolean capability table).
    fn start_frame(version: &str) -> Vec<u8> {
        let caps = table(&[
            ("consumer_cancel_notify", Value::Bool(true)),
            ("per_consumer_qos", Value::Bool(true)),
        ]);
        let props = table(&[
            ("capabilities", Value::Table(caps)),
            ("cluster_name", Value::Text("rabbit1@localhost")),
            ("product", Value::Text("RabbitMQ")),
            ("version", Value::Text(version)),
        ]);
        let mut payload = vec![0, 10, 0, 10, 0, 9];
        payload.extend_from_slice(&props);
        for text in ["PLAIN AMQPLAIN", "en_US"] {
            payload.extend_from_slice(&(text.len() as u32).to_be_bytes());
            payload.extend_from_slice(text.as_bytes());
        }
        let mut frame = vec![1u8, 0, 0];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&payload);
        frame.push(0xCE);
        frame
    }

    #[test]
    fn a_connection_start_frame_is_read() {
        let frame = start_frame("4.3.6");
        assert_eq!(frame_len(&frame), Some(frame.len()));
        let info = parse_connection_start(&frame).expect("parsed");
        assert_eq!(info.product, "RabbitMQ");
        assert_eq!(info.version, Some(Version::new(4, 3, 6)));
        assert_eq!(info.cluster_name.as_deref(), Some("rabbit1@localhost"));
        assert!(info.has_capability("consumer_cancel_notify"));
        assert!(!info.has_capability("no_such_thing"));
        assert_eq!(
            info.to_string(),
            "RabbitMQ 4.3.6 (cluster rabbit1@localhost)"
        );
        // Not a connection.start, or cut short: nothing.
        assert_eq!(parse_connection_start(&frame[..frame.len() - 10]), None);
        assert_eq!(
            parse_connection_start(b"\x08\x00\x00\x00\x00\x00\x00\xce"),
            None
        );
    }
}
