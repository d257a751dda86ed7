//! Errors that retrying cannot fix stop at once with a clear kind, and no
//! credential ever shows in `Debug` or `Display`.

mod common;

use std::time::Duration;

use rabbitkit_core::{ConnectError, Endpoint, Event, Options};

fn with_credentials(user: &str, password: &str, vhost: &str) -> String {
    let addr = common::amqp_addrs()[0].clone();
    let endpoint: Endpoint = addr.parse().unwrap();
    format!(
        "amqp://{user}:{password}@{}:{}/{vhost}",
        endpoint.host(),
        endpoint.port()
    )
}

#[tokio::test]
async fn wrong_password_fails_at_once_without_retry_loop() {
    common::ensure_cluster();
    let url = with_credentials("guest", "not-the-password-7731", "%2f");
    let err = Options::new()
        .retry_initial_connect(true) // even when told to retry: a refusal is final
        .connect(url.as_str())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnectError::AuthenticationFailed { .. }),
        "{err:?}"
    );
    assert!(err.is_fatal());
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("not-the-password-7731"), "{shown}");
}

#[tokio::test]
async fn missing_vhost_is_a_clear_error() {
    common::ensure_cluster();
    let url = with_credentials("guest", "guest", "no-such-vhost-rk");
    let err = Options::new().connect(url.as_str()).await.unwrap_err();
    match err {
        ConnectError::VhostNotAllowed { ref vhost, .. } => assert_eq!(vhost, "no-such-vhost-rk"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn unreachable_endpoints_fail_after_one_round() {
    // Ports on loopback where nothing listens.
    let err = Options::new()
        .connect_timeout(Duration::from_secs(2))
        .connect("amqp://u:pw-secret@127.0.0.1:1/%2f,amqp://u:pw-secret@127.0.0.1:2/%2f")
        .await
        .unwrap_err();
    match &err {
        ConnectError::Unreachable { attempts, .. } => assert_eq!(*attempts, 2),
        other => panic!("{other:?}"),
    }
    assert!(!err.is_fatal());
    assert!(!format!("{err} {err:?}").contains("pw-secret"));
}

#[tokio::test]
async fn passwords_never_show_in_debug_output() {
    let client = common::client().await;
    let endpoint: Endpoint = with_credentials("guest", "guest", "%2f").parse().unwrap();
    let options = Options::new().connection_name("x");
    for shown in [
        format!("{client:?}"),
        format!("{endpoint:?} {endpoint}"),
        format!("{options:?}"),
    ] {
        assert!(!shown.contains(":guest@"), "{shown}");
    }
    // And in events.
    let mut events = client.events();
    client.close().await;
    let ev = common::wait_for_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, Event::Closed { .. })
    })
    .await;
    assert!(!format!("{ev} {ev:?}").contains(":guest@"));
    assert!(!client.is_connected());
}

/// `amqp_addrs()[0]` with a `channel_max` asked of the broker (the lower of
/// the client's and the broker's wins).
fn with_channel_max(channel_max: u16) -> String {
    let addr = common::amqp_addrs()[0].clone();
    let sep = if addr.contains('?') { '&' } else { '?' };
    format!("{addr}{sep}channel_max={channel_max}")
}

#[tokio::test]
async fn a_pool_larger_than_the_channel_limit_fails_connect_with_the_cause() {
    common::ensure_cluster();
    let url = with_channel_max(4);
    // Even when told to retry: no broker setting changes by itself.
    for retry in [false, true] {
        let connect = Options::new()
            .channels(8)
            .retry_initial_connect(retry)
            .connect(url.as_str());
        let err = tokio::time::timeout(Duration::from_secs(60), connect)
            .await
            .unwrap_or_else(|_| panic!("connect() (retry: {retry}) never answered"))
            .unwrap_err();
        match &err {
            ConnectError::ChannelLimit {
                channel_max,
                channels,
                ..
            } => assert_eq!((*channel_max, *channels), (4, 8)),
            other => panic!("expected ChannelLimit, got {other:?}"),
        }
        assert!(err.is_fatal());
        assert!(err.to_string().contains("Options::channels"), "{err}");
    }
    // A pool that fits connects.
    let client = Options::new()
        .channels(2)
        .connect(url.as_str())
        .await
        .expect("a pool of 2 fits in channel_max 4");
    client.close().await;
}
