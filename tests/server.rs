//! The broker a client talks to, as it announced itself in
//! `connection.start` (`Client::server`, `Client::server_version`).

mod common;

use rabbitkit_core::Version;
use rabbitkit_test::{Cluster, RabbitMq, using_external_broker};

#[tokio::test]
async fn a_client_knows_the_version_and_capabilities_of_its_broker() {
    let client = common::client().await;
    let server = client.server().expect("the broker identified itself");
    assert_eq!(server.product, "RabbitMQ");
    let version = client.server_version().expect("a version x.y.z");
    assert_eq!(server.version, Some(version));
    for capability in [
        "publisher_confirms",
        "consumer_cancel_notify",
        "basic.nack",
        "per_consumer_qos",
    ] {
        assert!(
            server.has_capability(capability),
            "{capability}: {server:?}"
        );
    }
    if !using_external_broker() {
        // The local cluster runs a known version.
        let (major, minor) = match Cluster::local().version() {
            RabbitMq::V3_10 => (3, 10),
            RabbitMq::V4_0 => (4, 0),
            RabbitMq::V4_3 => (4, 3),
        };
        assert_eq!((version.major, version.minor), (major, minor), "{server}");
        assert_eq!(server.has_delayed_retry(), version >= Version::new(4, 3, 0));
    }
    client.close().await;
}
