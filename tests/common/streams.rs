//! The stream protocol endpoints of the cluster the tests use.

use rabbitkit_stream::{StreamClient, StreamOptions};

/// `RABBITKIT_STREAM_ADDR` (one URL or a comma-separated list) when set;
/// else, with `AMQP_ADDR`, port 5552 of each of its hosts with its
/// credentials; else the local cluster's three stream listeners
/// (127.0.0.1:5552-5554).
pub fn stream_addrs() -> Vec<String> {
    if let Ok(v) = std::env::var("RABBITKIT_STREAM_ADDR")
        && !v.trim().is_empty()
    {
        return v.split(',').map(|s| s.trim().to_owned()).collect();
    }
    if rabbitkit_test::using_external_broker() {
        return rabbitkit_test::amqp_addrs()
            .iter()
            .map(|url| {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
                let authority = rest.split('/').next().unwrap_or(rest);
                let (userinfo, hostport) = authority
                    .rsplit_once('@')
                    .unwrap_or(("guest:guest", authority));
                let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
                format!("rabbitmq-stream://{userinfo}@{host}:5552/%2f")
            })
            .collect();
    }
    (5552..=5554)
        .map(|p| format!("rabbitmq-stream://guest:guest@127.0.0.1:{p}/%2f"))
        .collect()
}

/// Options suited to tests.
pub fn stream_options() -> StreamOptions {
    StreamOptions::new()
        .connection_name("rabbitkit-stream-tests")
        .publish_timeout(std::time::Duration::from_secs(60))
}

/// A stream client on the whole cluster.
pub async fn stream_client() -> StreamClient {
    crate::common::ensure_cluster();
    stream_options()
        .connect(stream_addrs())
        .await
        .expect("connect to the stream listeners")
}
