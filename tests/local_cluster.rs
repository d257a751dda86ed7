//! Tests that control the local cluster: they reconfigure it, run its
//! `rabbitmqctl` or use its TLS listener. `cargo xtask test` filters this
//! binary out (reported as skipped) when `AMQP_ADDR` points at another
//! broker; run directly against one, each test fails with that reason.

mod common;

use std::time::Duration;

use rabbitkit::ClientCertError;
use rabbitkit::{
    ConnectError, ConsumeError, ConsumeOptions, DeclareError, Options, OutgoingMessage,
    PublishError, Queue,
};
use rabbitkit_test::{
    Cluster, MAX_MESSAGE_SIZE, MTLS_NODE, MTLS_USER, TLS_PORT, require_local_cluster,
};

fn pem(name: &str) -> String {
    std::fs::read_to_string(Cluster::local().tls_dir().join(name)).unwrap()
}

#[tokio::test]
async fn a_body_larger_than_the_broker_accepts_is_too_large() {
    // The local cluster's max_message_size is known (MAX_MESSAGE_SIZE).
    require_local_cluster();
    let client = common::client().await;
    let queue = Queue::named(common::unique_name("bad.big"))
        .declare(&client)
        .await
        .unwrap();
    let big = vec![b'x'; MAX_MESSAGE_SIZE + 1];
    match client
        .publish(OutgoingMessage::new("", queue.name(), big))
        .await
    {
        Err(PublishError::TooLarge { size, max }) => {
            assert_eq!(
                (size, max),
                (MAX_MESSAGE_SIZE as u64 + 1, MAX_MESSAGE_SIZE as u64)
            );
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The same client goes on: a message at the limit passes.
    queue.send(&"small".to_string()).await.unwrap();
    assert_eq!(queue.info().await.unwrap().messages, 1);
    assert_eq!(client.stats().disconnects, 0);
    queue.delete().await.unwrap();
}

fn rabbitmqctl(args: &[&str]) {
    if let Err(err) = Cluster::local().rabbitmqctl(1, args) {
        panic!("rabbitmqctl {args:?}: {err}");
    }
}

#[tokio::test]
async fn a_user_without_permissions_gets_access_refused_everywhere() {
    // Users are made with the local cluster's rabbitmqctl.
    require_local_cluster();
    let user = common::unique_name("rk-norights");
    rabbitmqctl(&["add_user", &user, "pw-norights"]);
    rabbitmqctl(&["set_permissions", "-p", "/", &user, "", "", ""]);
    let url = format!("amqp://{user}:pw-norights@127.0.0.1:5672/%2f");
    let client = rabbitkit::Options::new()
        .connect(url.as_str())
        .await
        .unwrap();

    let err = Queue::named(common::unique_name("bad.perm"))
        .declare(&client)
        .await
        .unwrap_err();
    assert!(matches!(err, DeclareError::AccessRefused { .. }), "{err:?}");
    let err = client
        .publish(OutgoingMessage::new("amq.topic", "k", b"x".to_vec()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PublishError::Rejected { code: 403, .. }),
        "{err:?}"
    );
    let err = client
        .consume("any-queue", ConsumeOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConsumeError::AccessRefused { .. } | ConsumeError::QueueNotFound { .. }
        ),
        "{err:?}"
    );
    // Refusals close channels, never the connection.
    assert!(client.is_connected());
    assert_eq!(client.stats().disconnects, 0);

    // A vhost the user may not enter: refused at connect, no retry loop.
    let err = rabbitkit::Options::new()
        .retry_initial_connect(true)
        .connect(format!("amqp://{user}:pw-norights@127.0.0.1:5672/rk-private").as_str())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnectError::VhostNotAllowed { .. }),
        "{err:?}"
    );
    client.close().await;
    rabbitmqctl(&["delete_user", &user]);
}

#[tokio::test]
async fn tls_connects_and_verifies_the_server() {
    // The TLS listener is the local cluster's.
    let cluster = require_local_cluster();

    // The right CA and host name: a working, encrypted client.
    let client = Options::new()
        .tls_ca_pem(pem("ca.pem"))
        .connect(cluster.amqps_url().as_str())
        .await
        .unwrap();
    assert!(client.current_endpoint().unwrap().is_tls());
    // The broker's version is read over the same TLS.
    assert!(client.server_version().is_some(), "{:?}", client.server());
    let q = Queue::temporary().declare(&client).await.unwrap();
    let mut sub = q.subscribe::<String>().await.unwrap();
    q.send(&"over TLS".to_string()).await.unwrap();
    assert_eq!(common::next_body(&mut sub).await, "over TLS");
    drop(sub);
    client.close().await;

    // A CA that did not sign the server's certificate: refused, at once.
    let err = Options::new()
        .tls_ca_pem(pem("other-ca.pem"))
        .retry_initial_connect(true)
        .connect_timeout(Duration::from_secs(5))
        .connect(cluster.amqps_url().as_str())
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Tls { .. }), "{err:?}");
    assert!(err.is_fatal());

    // The right CA but another host name than the certificate's.
    let by_ip = format!("amqps://guest:guest@127.0.0.1:{TLS_PORT}/%2f");
    let err = Options::new()
        .tls_ca_pem(pem("ca.pem"))
        .connect(by_ip.as_str())
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Tls { .. }), "{err:?}");
    assert!(!format!("{err}").contains("guest:guest"));
}

/// rabbitkit-stream over TLS (`rabbitmq-stream+tls://`, node 1's stream
/// TLS listener): the server checked against the test CA, a stream written
/// and read over it; another CA or another host name than the
/// certificate's is a `Tls` error at once, without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_protocol_tls_connects_and_verifies_the_server() {
    use futures::StreamExt;
    use rabbitkit_stream::{ErrorKind, OffsetSpec, StreamOptions, StreamSpec};
    let cluster = require_local_cluster();
    let dir = cluster.tls_dir();
    let client = StreamOptions::new()
        .tls_ca_file(dir.join("ca.pem"))
        .connect(cluster.stream_tls_url())
        .await
        .unwrap();
    assert!(client.endpoints()[0].tls());
    // One replica, led by node 1 (the only node with a stream TLS
    // listener): every connection of this test goes to it.
    let stream = common::unique_name("tls.stream");
    client
        .declare_stream(
            StreamSpec::new(&stream)
                .initial_cluster_size(1)
                .leader_locator_client_local(),
        )
        .await
        .unwrap();
    let producer = client
        .producer::<String>(&stream, "tls-writer")
        .build()
        .await
        .unwrap();
    producer.send(&"over TLS".to_owned()).await.unwrap();
    producer.close().await.unwrap();
    let mut consumer = client
        .consumer::<String>(&stream)
        .offset(OffsetSpec::First)
        .build()
        .await
        .unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("read over TLS")
        .unwrap()
        .unwrap();
    assert_eq!(msg.body, "over TLS");
    consumer.close().await.unwrap();
    client.delete_stream(&stream).await.unwrap();

    // A CA that did not sign the server's certificate: refused at once.
    let e = StreamOptions::new()
        .tls_ca_file(dir.join("other-ca.pem"))
        .connect(cluster.stream_tls_url())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    // The right CA but another host name than the certificate's.
    let e = StreamOptions::new()
        .tls_ca_file(dir.join("ca.pem"))
        .connect(format!(
            "rabbitmq-stream+tls://guest:s3cret@127.0.0.1:{}/%2f",
            rabbitkit_test::STREAM_TLS_PORT
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    assert!(!format!("{e} {e:?}").contains("s3cret"));
    // A CA file that does not exist: refused before the network.
    let e = StreamOptions::new()
        .tls_ca_file(dir.join("missing.pem"))
        .connect(cluster.stream_tls_url())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}

/// The nodes that accept connections now (other tests restart nodes).
fn nodes_up() -> Vec<usize> {
    let cluster = Cluster::local();
    Cluster::nodes()
        .filter(|&n| cluster.accepts_connections(n))
        .collect()
}

/// `rabbitmqctl` on the first node that is up.
fn try_ctl(args: &[&str]) -> Result<String, String> {
    let mut last = "no node up".to_owned();
    for n in nodes_up() {
        match Cluster::local().rabbitmqctl(n, args) {
            Ok(out) => return Ok(out),
            Err(err) => last = err.to_string(),
        }
    }
    Err(last)
}

fn ctl(args: &[&str]) -> String {
    try_ctl(args).unwrap_or_else(|err| panic!("rabbitmqctl {args:?}: {err}"))
}

/// Closes the connection whose client-given name is `name` (from the
/// broker's side, as an operator or a load balancer would).
fn close_connection_named(name: &str) {
    let listing = ctl(&[
        "list_connections",
        "-q",
        "--no-table-headers",
        "pid",
        "client_properties",
    ]);
    let pid = listing
        .lines()
        .find_map(|line| {
            let (pid, properties) = line.split_once('\t')?;
            properties.contains(name).then(|| pid.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no connection named {name}: {listing}"));
    ctl(&["close_connection", &pid, "closed by a test"]);
}

#[tokio::test]
async fn recovery_that_fails_after_connecting_backs_off_instead_of_storming() {
    // A connection closed from the broker's side; the next endpoint accepts
    // the TCP connection and the AMQP handshake, but its channel_max (asked
    // for by the URL) is too small for the pool: the failure comes after the
    // connect. The attempt count (and so the backoff) must carry on across
    // it instead of starting again at 1 with no delay, forever.
    require_local_cluster();
    let name = common::unique_name("rk-backoff");
    let up = nodes_up();
    assert!(up.len() >= 2, "two nodes up needed, up: {up:?}");
    let cluster = Cluster::local();
    let good = format!("amqp://127.0.0.1:{}/%2f", cluster.amqp_port(up[0]));
    let cramped_port = cluster.amqp_port(up[1]);
    let cramped = format!("amqp://127.0.0.1:{cramped_port}/%2f?channel_max=3");
    let client = Options::new()
        .connection_name(name.as_str())
        .channels(4)
        .connect(format!("{good},{cramped}").as_str())
        .await
        .unwrap();
    let mut events = client.events();
    close_connection_named(&name);
    let mut attempts = Vec::new();
    let mut cramped_failure = None;
    tokio::time::timeout(Duration::from_secs(60), async {
        use futures::StreamExt;
        while let Some(event) = events.next().await {
            match event {
                rabbitkit::Event::Reconnecting { attempt, .. } => attempts.push(attempt),
                rabbitkit::Event::ConnectFailed { endpoint, error }
                    if endpoint.port() == cramped_port =>
                {
                    cramped_failure.get_or_insert(error);
                }
                rabbitkit::Event::Recovered { .. } => return,
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not recovered within 60 s; attempts so far: {attempts:?}"));
    // The cramped node at attempt 1, the good one at attempt 2 (after a
    // backoff delay), not 1 again.
    assert_eq!(attempts, vec![1, 2]);
    let error = cramped_failure.expect("a ConnectFailed event for the cramped endpoint");
    assert!(error.contains("channel"), "{error}");
    // Back up and working.
    let q = Queue::temporary().declare(&client).await.unwrap();
    q.send(&"after".to_string()).await.unwrap();
    client.close().await;
}

/// A virtual host of the test's own (guest may use it), deleted with its
/// limits when dropped, also when the test fails: other tests share the
/// cluster, and a limit on `/` would refuse their connections.
struct OwnVhost {
    name: String,
}

impl OwnVhost {
    fn new(prefix: &str) -> Self {
        let name = common::unique_name(prefix);
        ctl(&["add_vhost", &name]);
        let vhost = Self { name };
        ctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ]);
        vhost
    }

    /// The URLs of the cluster's nodes for this vhost.
    fn urls(&self) -> String {
        Cluster::nodes()
            .map(|n| {
                format!(
                    "amqp://guest:guest@127.0.0.1:{}/{}",
                    Cluster::local().amqp_port(n),
                    self.name
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `rabbitmqctl set_vhost_limits`: at most `max` connections (0: none;
    /// negative: no limit).
    fn limit_connections(&self, max: i32) {
        let limit = format!("{{\"max-connections\": {max}}}");
        ctl(&["set_vhost_limits", "-p", &self.name, &limit]);
    }
}

impl Drop for OwnVhost {
    fn drop(&mut self) {
        let _ = try_ctl(&["delete_vhost", &self.name]);
    }
}

/// A user of the test's own with a connection limit of 0, allowed into
/// `vhost`; deleted when dropped, also when the test fails.
struct LimitedUser {
    name: String,
}

impl LimitedUser {
    fn new(prefix: &str, vhost: &OwnVhost) -> Self {
        let name = common::unique_name(prefix);
        ctl(&["add_user", &name, "pw-limited"]);
        let user = Self { name };
        ctl(&[
            "set_permissions",
            "-p",
            &vhost.name,
            &user.name,
            ".*",
            ".*",
            ".*",
        ]);
        ctl(&["set_user_limits", &user.name, "{\"max-connections\": 0}"]);
        user
    }
}

impl Drop for LimitedUser {
    fn drop(&mut self) {
        let _ = try_ctl(&["delete_user", &self.name]);
    }
}

#[tokio::test]
async fn a_connection_limit_at_first_connect_is_a_temporary_refusal() {
    require_local_cluster();
    let vhost = OwnVhost::new("rk-limit-first");
    vhost.limit_connections(0);
    let err = Options::new()
        .connect(vhost.urls().as_str())
        .await
        .unwrap_err();
    match &err {
        ConnectError::ConnectionLimit { message, .. } => {
            assert!(message.contains("connection limit"), "{message}")
        }
        other => panic!("expected ConnectionLimit, got {other:?}"),
    }
    assert!(!err.is_fatal(), "a limit lifts: {err}");

    // A user's own limit is the same kind of refusal.
    vhost.limit_connections(-1);
    let user = LimitedUser::new("rk-limited", &vhost);
    let url = format!(
        "amqp://{}:pw-limited@127.0.0.1:{}/{}",
        user.name,
        Cluster::local().amqp_port(nodes_up()[0]),
        vhost.name
    );
    let err = Options::new().connect(url.as_str()).await.unwrap_err();
    match &err {
        ConnectError::ConnectionLimit { message, .. } => {
            assert!(message.contains("connection limit"), "{message}")
        }
        other => panic!("expected ConnectionLimit, got {other:?}"),
    }
    assert!(!format!("{err} {err:?}").contains("pw-limited"), "{err}");
    drop(user);
    vhost.limit_connections(0);

    // Told to retry, the client waits for the limit to lift.
    let connecting = tokio::spawn(
        Options::new()
            .retry_initial_connect(true)
            .backoff(rabbitkit::Backoff {
                max: Duration::from_millis(500),
                ..Default::default()
            })
            .connect(vhost.urls()),
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // a few refusals
    assert!(!connecting.is_finished(), "gave up on a temporary refusal");
    vhost.limit_connections(-1);
    let client = tokio::time::timeout(Duration::from_secs(30), connecting)
        .await
        .expect("connected once the limit lifted")
        .unwrap()
        .unwrap();
    client.close().await;
}

#[tokio::test]
async fn a_connection_limit_during_recovery_is_retried_until_it_lifts() {
    require_local_cluster();
    let vhost = OwnVhost::new("rk-limit-recovery");
    let name = common::unique_name("rk-limit-conn");
    let client = Options::new()
        .connection_name(name.as_str())
        .backoff(rabbitkit::Backoff {
            max: Duration::from_millis(500),
            ..Default::default()
        })
        .connect(vhost.urls().as_str())
        .await
        .unwrap();
    let q = Queue::temporary().declare(&client).await.unwrap();
    let mut sub = q.subscribe::<String>().await.unwrap();
    let mut events = client.events();
    // No new connection allowed; then ours is closed.
    vhost.limit_connections(0);
    close_connection_named(&name);
    let mut refusals = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        use futures::StreamExt;
        while let Some(event) = events.next().await {
            match event {
                rabbitkit::Event::ConnectFailed { error, .. }
                    if error.contains("connection limit") =>
                {
                    refusals += 1;
                    if refusals == 3 {
                        return;
                    }
                }
                rabbitkit::Event::Closed { reason } => panic!("closed for good: {reason}"),
                _ => {}
            }
        }
    })
    .await
    .expect("three refusals for the limit within 60 s");
    // The limit lifts: the client recovers, its consumer with it.
    vhost.limit_connections(-1);
    common::wait_for_event(&mut events, Duration::from_secs(60), |e| {
        assert!(!matches!(e, rabbitkit::Event::Closed { .. }), "{e}");
        matches!(e, rabbitkit::Event::Recovered { .. })
    })
    .await;
    q.send(&"after the limit".to_string()).await.unwrap();
    assert_eq!(common::next_body(&mut sub).await, "after the limit");
    drop(sub);
    client.close().await;
}

#[tokio::test]
async fn a_ca_that_is_not_pem_is_a_clear_error() {
    // The TLS listener is the local cluster's.
    let cluster = require_local_cluster();
    let connect = Options::new()
        .tls_ca_pem("this is not a PEM certificate")
        .retry_initial_connect(true)
        .connect(cluster.amqps_url());
    let err = tokio::time::timeout(Duration::from_secs(30), connect)
        .await
        .expect("connect() answers")
        .unwrap_err();
    assert!(matches!(err, ConnectError::Tls { .. }), "{err:?}");
    assert!(err.is_fatal());
}

/// Sets the memory watermark back to the cluster's setting when dropped,
/// also when the test fails: the cluster is shared.
struct RestoreWatermark(usize);

impl Drop for RestoreWatermark {
    /// Back to the running version's default: 0.6 since RabbitMQ 4.0, 0.4 before.
    fn drop(&mut self) {
        let cluster = Cluster::local();
        let default = if cluster.version().is_4() {
            "0.6"
        } else {
            "0.4"
        };
        let _ = cluster.rabbitmqctl(self.0, &["set_vm_memory_high_watermark", default]);
    }
}

#[tokio::test]
async fn health_says_blocked_during_a_memory_alarm_and_connected_after() {
    // The alarm is forced with the local cluster's rabbitmqctl.
    require_local_cluster();
    let client = common::client_on(1).await;
    assert!(client.health().is_ready(), "{}", client.health());
    let queue = Queue::named(common::unique_name("health.alarm"))
        .declare(&client)
        .await
        .unwrap();
    let mut events = client.events();
    let restore = RestoreWatermark(1);
    rabbitmqctl(&["set_vm_memory_high_watermark", "absolute", "1"]);
    // The broker blocks a connection when it publishes during the alarm.
    let publish = tokio::spawn({
        let queue = queue.clone();
        async move { queue.send(&"during the alarm".to_string()).await }
    });
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, rabbitkit::Event::Blocked { .. })
    })
    .await;
    match client.health() {
        rabbitkit::Health::Blocked { reason, .. } => {
            assert!(reason.contains("memory"), "the broker's reason: {reason}")
        }
        other => panic!("expected Blocked, got {other:?}"),
    }
    assert!(!client.health().is_ready());
    drop(restore);
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, rabbitkit::Event::Unblocked)
    })
    .await;
    assert!(client.health().is_ready(), "{}", client.health());
    publish.await.unwrap().unwrap();
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn a_publish_during_a_memory_alarm_fails_with_blocked_and_the_same_client_publishes_after() {
    // The alarm is forced with the local cluster's rabbitmqctl.
    require_local_cluster();
    let client = common::options()
        .publish_timeout(Duration::from_secs(2))
        .connect(Cluster::local().amqp_url(1))
        .await
        .unwrap();
    let queue = Queue::named(common::unique_name("blocked.alarm"))
        .declare(&client)
        .await
        .unwrap();
    let mut events = client.events();
    let restore = RestoreWatermark(1);
    rabbitmqctl(&["set_vm_memory_high_watermark", "absolute", "1"]);
    // No hang: the publish fails at its timeout, saying why.
    let body = "during the alarm".to_string();
    let send = queue.send(&body);
    let err = tokio::time::timeout(Duration::from_secs(30), send)
        .await
        .expect("the publish answers at its timeout")
        .unwrap_err();
    let shown = err.to_string();
    match err {
        rabbitkit::SendError::Publish(PublishError::Blocked { reason, timeout }) => {
            assert!(reason.contains("memory"), "the broker's reason: {reason}");
            assert_eq!(timeout, Duration::from_secs(2));
            assert!(shown.contains("blocking publishers"), "{shown}");
        }
        other => panic!("expected PublishError::Blocked, got {other:?}"),
    }
    assert!(client.is_connected());
    // An unconfirmed publish does not even wait: it is refused at once.
    let unconfirmed = client
        .publisher()
        .publish_unconfirmed(rabbitkit::OutgoingMessage::new(
            "",
            queue.name(),
            b"telemetry".to_vec(),
        ))
        .await;
    match unconfirmed {
        Err(PublishError::NotSent { reason }) => {
            assert!(reason.contains("blocking publishers"), "{reason}")
        }
        other => panic!("expected PublishError::NotSent, got {other:?}"),
    }
    // The alarm lifts: the same client publishes again, by itself.
    drop(restore);
    common::wait_for_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, rabbitkit::Event::Unblocked)
    })
    .await;
    queue.send(&"after the alarm".to_string()).await.unwrap();
    assert_eq!(client.stats().disconnects, 0);
    queue.delete().await.unwrap();
    client.close().await;
}

/// The broker user of the test client certificate (its common name),
/// with every permission on `/`. EXTERNAL logs in without its password.
fn ensure_mtls_user() {
    if let Err(err) = Cluster::local().rabbitmqctl(1, &["add_user", MTLS_USER, "unused-pw"])
        && !err.to_string().contains("already exists")
    {
        panic!("add_user {MTLS_USER}: {err}");
    }
    rabbitmqctl(&["set_permissions", "-p", "/", MTLS_USER, ".*", ".*", ".*"]);
}

/// Options for the mutual-TLS listener, trusting the test CA.
fn mtls_options() -> Options {
    common::options()
        .tls_ca_pem(pem("ca.pem"))
        .connect_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn a_client_certificate_with_external_logs_in_as_the_certificates_user() {
    // The mutual-TLS listener and its certificates are the local cluster's.
    let cluster = require_local_cluster();
    ensure_mtls_user();
    let name = common::unique_name("rk-mtls");
    let options = mtls_options()
        .connection_name(name.as_str())
        .tls_client_identity(pem("client.pem"), pem("client.key"))
        .auth_external();
    // The key is never printed.
    let key = pem("client.key");
    let key_line = key.lines().nth(1).unwrap();
    let shown = format!("{options:?}");
    assert!(!shown.contains(key_line), "{shown}");
    assert!(shown.contains("***"), "{shown}");

    let client = options.connect(cluster.mtls_url()).await.unwrap();
    let q = Queue::temporary().declare(&client).await.unwrap();
    let mut sub = q.subscribe::<String>().await.unwrap();
    q.send(&"over mutual TLS".to_string()).await.unwrap();
    assert_eq!(common::next_body(&mut sub).await, "over mutual TLS");
    // The broker says who logged in: the certificate's user, over TLS.
    let listing = Cluster::local()
        .rabbitmqctl(
            MTLS_NODE,
            &[
                "list_connections",
                "-q",
                "--no-table-headers",
                "user",
                "ssl",
                "client_properties",
            ],
        )
        .unwrap();
    let line = listing
        .lines()
        .find(|l| l.contains(&name))
        .unwrap_or_else(|| panic!("no connection named {name}: {listing}"));
    let mut fields = line.split('\t');
    assert_eq!(fields.next(), Some(MTLS_USER), "{line}");
    assert_eq!(fields.next(), Some("true"), "{line}");
    drop(sub);
    client.close().await;
}

#[tokio::test]
async fn refused_client_certificates_are_typed_fatal_errors() {
    // The mutual-TLS listener and its certificates are the local cluster's.
    let cluster = require_local_cluster();
    ensure_mtls_user();
    for (cert, expected) in [
        (None, ClientCertError::Missing),
        (Some("client-other-ca"), ClientCertError::UnknownCa),
        (Some("client-expired"), ClientCertError::Expired),
    ] {
        let mut options = mtls_options().auth_external().retry_initial_connect(true);
        let mut key = None;
        if let Some(cert) = cert {
            let key_pem = pem(&format!("{cert}.key"));
            key = Some(key_pem.lines().nth(1).unwrap().to_owned());
            options = options.tls_client_identity(pem(&format!("{cert}.pem")), key_pem);
        }
        // Never retried: with retry_initial_connect on, only a fatal error
        // ends connect().
        let err =
            tokio::time::timeout(Duration::from_secs(30), options.connect(cluster.mtls_url()))
                .await
                .unwrap_or_else(|_| panic!("{cert:?}: connect() retried instead of failing"))
                .unwrap_err();
        assert_eq!(err.client_cert_error(), Some(expected), "{cert:?}: {err:?}");
        assert!(err.is_fatal(), "{err:?}");
        // The TLS alert is kept as the source, and no key material is shown.
        let source = std::error::Error::source(&err).expect("the TLS error as source");
        assert!(source.to_string().contains("alert"), "{source}");
        let shown = format!("{err} {err:?}");
        if let Some(key) = key {
            assert!(!shown.contains(&key), "{shown}");
        }
    }

    // A key that is not PEM: refused before anything is sent.
    let err = mtls_options()
        .tls_client_identity(pem("client.pem"), "not a key: s3cret-material")
        .connect(cluster.mtls_url())
        .await
        .unwrap_err();
    assert_eq!(err.client_cert_error(), Some(ClientCertError::Unreadable));
    assert!(!format!("{err} {err:?}").contains("s3cret"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_key_in_any_log() {
    // The mutual-TLS listener and its certificates are the local cluster's.
    let capture = common::capture::Capture::default();
    tracing::subscriber::set_global_default(capture.clone()).unwrap();
    let cluster = require_local_cluster();
    ensure_mtls_user();
    for cert in ["client", "client-other-ca"] {
        let result = mtls_options()
            .tls_client_identity(pem(&format!("{cert}.pem")), pem(&format!("{cert}.key")))
            .auth_external()
            .connect(cluster.mtls_url())
            .await;
        if let Ok(client) = result {
            Queue::temporary().declare(&client).await.unwrap();
            client.close().await;
        }
    }
    let logs = capture.0.lock().unwrap().clone();
    assert!(logs.lines().count() > 3, "logs were captured: {logs}");
    for cert in ["client", "client-other-ca"] {
        let key = pem(&format!("{cert}.key"));
        let line = key.lines().nth(1).unwrap();
        // As text, and as the list of numbers a `Debug` of bytes prints.
        let as_bytes: Vec<String> = line.bytes().take(16).map(|b| b.to_string()).collect();
        assert!(!logs.contains(line), "{cert}.key in the logs");
        assert!(
            !logs.contains(&as_bytes.join(", ")),
            "{cert}.key's bytes in the logs"
        );
    }
}

/// RabbitMQ 4.3 cancels a quorum queue's consumer whose delivery stays
/// unacknowledged past its consumer timeout (`basic.cancel`, channel kept)
/// and returns its messages. The tutorial worker goes on: its consumer
/// comes back, the late ack is reported, not fatal, and every task is done.
/// Before: the worker's `task.ack()?` ended it, 0 of the 5 quick tasks were
/// done and the queue was left with 6 messages and no consumer.
#[test]
fn the_tutorial_worker_goes_on_after_a_consumer_timeout() {
    let cluster = require_local_cluster();
    if cluster.version() == rabbitkit_test::RabbitMq::V3_10 {
        // 3.10 has one global consumer timeout (30 min), no per-queue
        // policy: nothing to test there.
        eprintln!("RabbitMQ 3.10: no consumer-timeout policy; nothing to check");
        return;
    }
    common::process::build_examples(&["worker"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let name = common::unique_name("worker.timeout");
    let policy = common::unique_name("timeout");
    rabbitmqctl(&[
        "set_policy",
        &policy,
        &format!("^{}$", name.replace('.', "\\.")),
        r#"{"consumer-timeout": 2000}"#,
        "--apply-to",
        "queues",
    ]);
    let client = rt.block_on(common::client());
    let tasks = rt
        .block_on(rabbitkit::WorkQueue::<String>::builder(name.as_str()).declare(&client))
        .unwrap();
    for task in [
        "slow....", "quick 1", "quick 2", "quick 3", "quick 4", "quick 5",
    ] {
        rt.block_on(tasks.submit(&task.to_string())).unwrap();
    }
    let mut cmd = std::process::Command::new(common::process::example_path("worker"));
    cmd.env("TASK_QUEUE", &name);
    let mut worker = common::process::Program::spawn("worker".into(), cmd);
    worker.expect(" [x] Received 'slow....'");
    // 4 s of work: the broker takes it back after 2 s and cancels the
    // consumer; the worker's ack then fails (reported on stderr), and it
    // goes on with its new subscription.
    worker.expect(" [x] Done");
    // Without the policy the next try of the slow task ends in time.
    rabbitmqctl(&["clear_policy", &policy]);
    for n in 1..=5 {
        worker.expect(&format!(" [x] Received 'quick {n}'"));
    }
    // Every task ends acknowledged, and the worker still consumes.
    rt.block_on(async {
        for _ in 0..600 {
            let info = tasks.info().await.unwrap();
            if info.messages == 0 && info.consumers == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("tasks left, or no consumer: {:?}", tasks.info().await);
    });
    let (status, lines) = worker.interrupt_and_finish();
    assert!(status.success(), "exit status {status}: {lines:#?}");
    rt.block_on(tasks.queue().clone().delete()).unwrap();
    rt.block_on(client.close());
}

/// `GET path` on 127.0.0.1:`port` as `guest`/`guest`: the whole response
/// (status line, headers, body), or why there was none.
fn management_get(port: u16, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    // "guest:guest" in base64.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Authorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    Ok(response)
}

/// The book sends a reader to the management UI of the local cluster:
/// node N on 15671+N, user guest, password guest, each node its own.
#[test]
fn every_node_serves_the_management_ui_as_guest() {
    let cluster = require_local_cluster();
    for n in Cluster::nodes() {
        let port = cluster
            .management_port(n)
            .expect("the local cluster has one");
        assert_eq!(port, 15671 + n as u16);
        // The plugin may finish starting just after the AMQP listener.
        let mut last = Err(String::from("not asked"));
        for _ in 0..60 {
            last = management_get(port, "/api/overview");
            if last.as_ref().is_ok_and(|r| r.starts_with("HTTP/1.1 200")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let response = last.unwrap_or_else(|e| panic!("node {n}: no management UI on {port}: {e}"));
        assert!(response.starts_with("HTTP/1.1 200"), "node {n}: {response}");
        let node = format!("\"node\":\"{}\"", cluster.node_name(n));
        assert!(response.contains(&node), "node {n}: {response}");
        assert!(cluster.status().unwrap().nodes[n - 1].management_port == Some(port));
    }
}
