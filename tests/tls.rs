//! `amqps://`: node 1 of the local cluster has a TLS listener whose
//! certificate (for `localhost` only) was signed by a CA made for the tests.

mod common;

use std::time::Duration;

use rabbitkit::{ConnectError, Options, Queue};
use rabbitkit_test::{Cluster, TLS_PORT, using_external_broker};

fn pem(name: &str) -> String {
    std::fs::read_to_string(Cluster::local().tls_dir().join(name)).unwrap()
}

#[tokio::test]
async fn tls_connects_and_verifies_the_server() {
    if using_external_broker() {
        eprintln!("skipped: the TLS listener is the local cluster's");
        return;
    }
    common::ensure_cluster();
    let cluster = Cluster::local();

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
