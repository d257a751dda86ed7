//! The client handle: endpoints and options; declares and deletes streams;
//! makes producers and consumers. Also the one place that connects to a
//! node and locates a stream's leader or replicas.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rabbitmq_stream_client::error::ClientError;
use rabbitmq_stream_client::types::ResponseCode;
use rabbitmq_stream_client::{Client, ClientOptions, TlsConfiguration};

use crate::consumer::ConsumerBuilder;
use crate::error::{Error, ErrorKind};
use crate::options::{Endpoint, StreamOptions};
use crate::producer::ProducerBuilder;

/// A handle on the cluster: cheap to clone. It holds no connection of its
/// own: each producer and consumer has its connection, which it re-opens
/// on another node after a failure.
#[derive(Debug, Clone)]
pub struct StreamClient {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) options: StreamOptions,
    pub(crate) endpoints: Vec<Endpoint>,
    /// Where the next connection attempt starts, so attempts spread.
    next: AtomicUsize,
}

/// Which node of a stream to connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The leader (producers: only the leader writes).
    Leader,
    /// A replica when there is one, else the leader (consumers).
    Replica,
}

/// A stream to declare, with its retention.
///
/// ```no_run
/// # async fn f(client: rabbitkit_stream::StreamClient) -> Result<(), rabbitkit_stream::Error> {
/// use std::time::Duration;
/// use rabbitkit_stream::StreamSpec;
/// client
///     .declare_stream(
///         StreamSpec::new("events")
///             .max_age(Duration::from_secs(7 * 24 * 3600))
///             .max_length_bytes(5_000_000_000),
///     )
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct StreamSpec {
    pub(crate) name: String,
    pub(crate) args: Vec<(String, String)>,
}

impl StreamSpec {
    /// A stream named `name`, with the broker's default retention.
    pub fn new(name: impl Into<String>) -> Self {
        StreamSpec {
            name: name.into(),
            args: vec![],
        }
    }
    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Segments older than this are deleted (`max-age`, whole seconds).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.args
            .push(("max-age".into(), format!("{}s", age.as_secs().max(1))));
        self
    }
    /// Old segments are deleted beyond this size (`max-length-bytes`).
    pub fn max_length_bytes(mut self, bytes: u64) -> Self {
        self.args
            .push(("max-length-bytes".into(), bytes.to_string()));
        self
    }
    /// The size of a segment file (`stream-max-segment-size-bytes`).
    pub fn max_segment_size_bytes(mut self, bytes: u64) -> Self {
        self.args
            .push(("stream-max-segment-size-bytes".into(), bytes.to_string()));
        self
    }
    /// How many replicas besides the leader (`initial-cluster-size` minus one
    /// is what the broker takes; this sets `initial-cluster-size`).
    pub fn initial_cluster_size(mut self, nodes: u16) -> Self {
        self.args
            .push(("initial-cluster-size".into(), nodes.to_string()));
        self
    }
    /// The leader on the node the declaration went to
    /// (`queue-leader-locator: client-local`) instead of the broker's
    /// balanced choice.
    pub fn leader_locator_client_local(mut self) -> Self {
        self.args
            .push(("queue-leader-locator".into(), "client-local".into()));
        self
    }
}

/// How long a stream missing from the metadata is looked for again before
/// it counts as missing (when making a producer or consumer).
pub(crate) const MISSING_GRACE: Duration = Duration::from_secs(2);

/// How long a stream missing from the metadata is looked for again when a
/// producer or consumer reconnects, before it counts as deleted: its
/// pending sends then fail at once instead of after the reconnection
/// limit. (A node's death never makes a stream missing: only its leader
/// moves.)
pub(crate) const DELETED_GRACE: Duration = Duration::from_secs(5);

/// The longest stream name the broker takes (a queue name: 255 bytes).
const MAX_NAME: usize = 255;

pub(crate) fn check_name(what: &str, name: &str) -> Result<(), Error> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "a {what} name must have 1 to {MAX_NAME} bytes, this one has {}",
                name.len()
            ),
        ));
    }
    Ok(())
}

/// Errors that retrying (on this node or another) cannot fix.
fn final_error(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Authentication | ErrorKind::Tls | ErrorKind::InvalidInput
    )
}

pub(crate) fn client_error(context: &str, e: ClientError) -> Error {
    let kind = match &e {
        ClientError::RequestError(code) => return Error::from_code(code, context),
        _ => ErrorKind::Connect,
    };
    Error::new(kind, format!("{context}: {e}")).with_source(e)
}

impl StreamClient {
    pub(crate) async fn connect(
        options: StreamOptions,
        endpoints: Vec<Endpoint>,
    ) -> Result<Self, Error> {
        let client = StreamClient {
            inner: Arc::new(Inner {
                options,
                endpoints,
                next: AtomicUsize::new(0),
            }),
        };
        let (c, _) = client.connect_any().await?;
        let _ = c.close().await;
        Ok(client)
    }

    /// The options this client was made with.
    pub fn options(&self) -> &StreamOptions {
        &self.inner.options
    }

    /// The endpoints, in the order given.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.inner.endpoints
    }

    fn client_options(&self, ep: &Endpoint, host: &str, port: u16) -> Result<ClientOptions, Error> {
        let o = &self.inner.options;
        let mut builder = ClientOptions::builder()
            .host(host)
            .port(port)
            .user(&ep.user)
            .password(&ep.password)
            .v_host(&ep.vhost)
            .heartbeat(o.heartbeat.as_secs().max(1) as u32)
            .max_frame_size(o.max_frame_size)
            .client_provided_name(o.connection_name.clone());
        if ep.tls {
            let mut tls = TlsConfiguration::builder().add_root_certificates(o.tls_roots()?);
            if let Some((cert, key)) = &o.tls_identity {
                tls = tls.add_client_certificates_keys(cert.clone(), key.clone());
            }
            let tls = tls
                .build()
                .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("TLS: {e}")))?;
            builder = builder.tls(tls);
        }
        Ok(builder.build())
    }

    async fn open(&self, ep: &Endpoint, host: &str, port: u16) -> Result<Client, Error> {
        Client::connect(self.client_options(ep, host, port)?)
            .await
            .map_err(|e| match &e {
                ClientError::RequestError(code) => {
                    Error::from_code(code, &format!("connect to {host}:{port}"))
                }
                ClientError::Io(io) if ep.tls && io.kind() == std::io::ErrorKind::InvalidData => {
                    Error::new(ErrorKind::Tls, format!("TLS with {host}:{port}: {e}"))
                        .with_source(e)
                }
                ClientError::Tls(_) => {
                    Error::new(ErrorKind::Tls, format!("TLS with {host}:{port}: {e}"))
                        .with_source(e)
                }
                _ => Error::new(ErrorKind::Connect, format!("connect to {host}:{port}: {e}"))
                    .with_source(e),
            })
    }

    /// A connection to the first endpoint that answers, starting after the
    /// one used last; the endpoint it went to.
    pub(crate) async fn connect_any(&self) -> Result<(Client, Endpoint), Error> {
        let eps = &self.inner.endpoints;
        let start = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let mut last = None;
        for i in 0..eps.len() {
            let ep = &eps[(start + i) % eps.len()];
            match self.open(ep, &ep.host, ep.port).await {
                Ok(c) => return Ok((c, ep.clone())),
                // Wrong credentials or TLS settings will not get better on
                // another node.
                Err(e) if final_error(&e) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::new(ErrorKind::Connect, "no endpoint")))
    }

    /// A connection to the node of `stream` with `role`, as the metadata
    /// says; `host:port` of that node. When the advertised host cannot be
    /// reached (a node advertising a name only it resolves, or a cluster
    /// behind NAT), the endpoint with the advertised port is used.
    pub(crate) async fn connect_to(
        &self,
        stream: &str,
        role: Role,
    ) -> Result<(Client, String), Error> {
        let (client, ep) = self.connect_any().await?;
        let meta = match metadata(&client, stream).await {
            Ok(m) => m,
            Err(e) => {
                let _ = client.close().await;
                return Err(e);
            }
        };
        let Some(m) = meta.get(stream) else {
            let _ = client.close().await;
            return Err(Error::new(
                ErrorKind::StreamNotFound,
                format!("stream {stream} does not exist or has no leader"),
            ));
        };
        if m.response_code != ResponseCode::Ok {
            let _ = client.close().await;
            return Err(Error::from_code(
                &m.response_code,
                &format!("stream {stream}"),
            ));
        }
        let node = match role {
            Role::Leader => m.leader.clone(),
            Role::Replica => {
                if m.replicas.is_empty() {
                    m.leader.clone()
                } else {
                    let i = rand::random_range(0..m.replicas.len());
                    m.replicas[i].clone()
                }
            }
        };
        let port = node.port as u16;
        let name = format!("{}:{}", node.host, port);
        let same = ep.port == port
            && (ep.host == node.host || self.resolves_same(&ep.host, &node.host).await);
        if same {
            return Ok((client, name));
        }
        let _ = client.close().await;
        match self.open(&ep, &node.host, port).await {
            Ok(c) => Ok((c, name)),
            Err(e) if e.kind() == ErrorKind::Connect => {
                // The advertised host is not reachable from here: the
                // endpoint with the advertised port, if any.
                match self.inner.endpoints.iter().find(|e| e.port == port) {
                    Some(alt) => {
                        let c = self.open(alt, &alt.host, port).await?;
                        Ok((c, format!("{}:{}", alt.host, port)))
                    }
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn resolves_same(&self, a: &str, b: &str) -> bool {
        let lookup = |h: &str| {
            let h = format!("{h}:0");
            async move {
                tokio::net::lookup_host(h)
                    .await
                    .map(|it| it.map(|s| s.ip()).collect::<Vec<_>>())
                    .unwrap_or_default()
            }
        };
        let (a, b) = (lookup(a).await, lookup(b).await);
        a.iter().any(|x| b.contains(x))
    }

    /// [`connect_to`](Self::connect_to), retried with back-off until the
    /// reconnection limit; errors retrying cannot fix (authentication) end
    /// it at once. A missing stream is retried too (it may be missing from
    /// one node's metadata for a moment), for `missing_grace`: after that
    /// it is an [`ErrorKind::StreamNotFound`] error.
    pub(crate) async fn connect_with_retry(
        &self,
        stream: &str,
        role: Role,
        missing_grace: Duration,
    ) -> Result<(Client, String), Error> {
        let o = &self.inner.options;
        let started = Instant::now();
        let mut delay = o.reconnect_min;
        loop {
            match self.connect_to(stream, role).await {
                Ok(done) => return Ok(done),
                Err(e) if final_error(&e) => return Err(e),
                // A stream just declared through another node may be
                // missing from this one's metadata for a moment.
                Err(e)
                    if e.kind() == ErrorKind::StreamNotFound
                        && started.elapsed() > missing_grace =>
                {
                    return Err(e);
                }
                Err(e) if started.elapsed() + delay > o.reconnect_for => return Err(e),
                Err(e) => {
                    tracing::debug!(stream, error = %e, "stream connection failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(o.reconnect_max);
                }
            }
        }
    }

    /// Declares `spec`: created when missing (a stream that exists already
    /// is left as it is), and returns once the stream has a leader (waiting
    /// up to 10 s), so a producer or consumer can be made at once.
    pub async fn declare_stream(&self, spec: StreamSpec) -> Result<(), Error> {
        check_name("stream", &spec.name)?;
        let (client, _) = self.connect_any().await?;
        let args: HashMap<String, String> = spec.args.iter().cloned().collect();
        let res = client.create_stream(&spec.name, args).await;
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                let _ = client.close().await;
                return Err(client_error("create stream", e));
            }
        };
        let _ = client.close().await;
        if matches!(
            res.code(),
            ResponseCode::Ok | ResponseCode::StreamAlreadyExists
        ) {
            self.wait_for_leader(&spec.name).await;
            return Ok(());
        }
        match res.code() {
            ResponseCode::PreconditionFailed => Err(Error::new(
                ErrorKind::Refused,
                format!(
                    "the broker refused stream {} (its name or arguments)",
                    spec.name
                ),
            )),
            other => Err(Error::from_code(
                other,
                &format!("create stream {}", spec.name),
            )),
        }
    }

    /// Waits (up to 10 s) until every node's metadata names a leader of
    /// `stream`: a stream just created has none for a moment, and a
    /// producer or consumer made then would find no node to connect to.
    pub(crate) async fn wait_for_leader(&self, stream: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ready = 0;
        while Instant::now() < deadline && ready < self.inner.endpoints.len() {
            if let Ok((client, _)) = self.connect_any().await {
                let ok = metadata(&client, stream)
                    .await
                    .ok()
                    .and_then(|m| m.get(stream).map(|m| m.response_code == ResponseCode::Ok))
                    .unwrap_or(false);
                let _ = client.close().await;
                if ok {
                    ready += 1;
                    continue;
                }
            }
            ready = 0;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Deletes a stream and its messages. A missing stream is an
    /// [`ErrorKind::StreamNotFound`] error.
    pub async fn delete_stream(&self, name: &str) -> Result<(), Error> {
        let (client, _) = self.connect_any().await?;
        let res = client.delete_stream(name).await;
        let _ = client.close().await;
        let res = res.map_err(|e| client_error("delete stream", e))?;
        match res.code() {
            ResponseCode::Ok => Ok(()),
            other => Err(Error::from_code(other, &format!("delete stream {name}"))),
        }
    }

    /// Where `stream` lives now, as its metadata says: the leader's
    /// `host:port` first, then the replicas'.
    pub async fn stream_nodes(&self, stream: &str) -> Result<Vec<String>, Error> {
        let started = Instant::now();
        loop {
            match self.stream_nodes_once(stream).await {
                Err(e)
                    if e.kind() == ErrorKind::StreamNotFound
                        && started.elapsed() < MISSING_GRACE =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    async fn stream_nodes_once(&self, stream: &str) -> Result<Vec<String>, Error> {
        let (client, _) = self.connect_any().await?;
        let meta = metadata(&client, stream).await;
        let _ = client.close().await;
        let meta = meta?;
        let m = meta.get(stream).ok_or_else(|| {
            Error::new(
                ErrorKind::StreamNotFound,
                format!("stream {stream} does not exist or has no leader"),
            )
        })?;
        Ok(std::iter::once(&m.leader)
            .chain(&m.replicas)
            .map(|b| format!("{}:{}", b.host, b.port))
            .collect())
    }

    /// The offset stored on the server for `consumer` on `stream`, if any.
    pub async fn stored_offset(&self, stream: &str, consumer: &str) -> Result<Option<u64>, Error> {
        let (client, _) = self.connect_any().await?;
        let res = client.query_offset(consumer.to_owned(), stream).await;
        let _ = client.close().await;
        match res {
            Ok(o) => Ok(Some(o)),
            Err(ClientError::RequestError(ResponseCode::OffsetNotFound)) => Ok(None),
            Err(e) => Err(client_error("query offset", e)),
        }
    }

    /// A producer for `stream` under `name`: the broker deduplicates by
    /// this name (see [`StreamProducer`](crate::StreamProducer)).
    pub fn producer<T>(&self, stream: &str, name: &str) -> ProducerBuilder<T> {
        ProducerBuilder::new(self.clone(), stream, name)
    }

    /// A consumer of `stream` (see [`StreamConsumer`](crate::StreamConsumer)).
    pub fn consumer<T>(&self, stream: &str) -> ConsumerBuilder<T> {
        ConsumerBuilder::new(self.clone(), stream)
    }
}

/// How long a metadata request may take. rabbitmq-stream-protocol 0.11
/// panics decoding some metadata responses (seen for a stream just
/// created: "mid > len"), which kills the connection's reader: the request
/// then never completes. Bounded, it is an error, and a new connection is
/// tried.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn metadata(
    client: &Client,
    stream: &str,
) -> Result<HashMap<String, rabbitmq_stream_client::types::StreamMetadata>, Error> {
    match tokio::time::timeout(METADATA_TIMEOUT, client.metadata(vec![stream.to_owned()])).await {
        Ok(r) => r.map_err(|e| client_error("metadata", e)),
        Err(_) => Err(Error::new(
            ErrorKind::Connect,
            format!("no metadata for stream {stream} within {METADATA_TIMEOUT:?}"),
        )),
    }
}
