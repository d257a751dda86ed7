//! Tests that control the local cluster: they reconfigure it, run its
//! `rabbitmqctl` or use its TLS listener. `cargo xtask test` filters this
//! binary out (reported as skipped) when `AMQP_ADDR` points at another
//! broker; run directly against one, each test fails with that reason.

mod common;

use std::time::Duration;

use rabbitkit::{
    ConnectError, ConsumeError, ConsumeOptions, DeclareError, Options, OutgoingMessage,
    PublishError, Queue,
};
use rabbitkit_test::{Cluster, MAX_MESSAGE_SIZE, TLS_PORT, require_local_cluster};

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

/// Sets the memory watermark back to the cluster's setting when dropped,
/// also when the test fails: the cluster is shared.
struct RestoreWatermark(usize);

impl Drop for RestoreWatermark {
    fn drop(&mut self) {
        let _ = Cluster::local().rabbitmqctl(self.0, &["set_vm_memory_high_watermark", "0.4"]);
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
