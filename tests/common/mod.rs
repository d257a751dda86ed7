//! Helpers shared by the integration tests: every test talks to the real
//! local 3-node cluster (or to `AMQP_ADDR`).
#![allow(dead_code, unused_imports)]

pub mod capture;
pub mod process;
pub mod streams;

use std::time::Duration;

use futures::{Stream, StreamExt};
use rabbitkit_core::{Client, Event, Options};

pub use rabbitkit_test::{Cluster, amqp_addrs, ensure_cluster, unique_name};

/// Options suited to tests: short timeouts so a failure shows quickly.
pub fn options() -> Options {
    Options::new()
        .connection_name("rabbitkit-tests")
        .heartbeat(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
        .publish_timeout(Duration::from_secs(60))
        .operation_timeout(Duration::from_secs(30))
}

/// A client on the whole cluster.
pub async fn client() -> Client {
    ensure_cluster();
    options()
        .connect(amqp_addrs())
        .await
        .expect("connect to the test cluster")
}

/// A client on one node only (1-based), or on the first address when an
/// external broker is used.
pub async fn client_on(node: usize) -> Client {
    ensure_cluster();
    let addrs = amqp_addrs();
    let addr = addrs[(node - 1) % addrs.len()].clone();
    options().connect(addr).await.expect("connect to one node")
}

/// Waits (bounded) for an event matching `pred`; panics with what was seen otherwise.
pub async fn wait_for_event(
    events: &mut (impl Stream<Item = Event> + Unpin),
    within: Duration,
    pred: impl Fn(&Event) -> bool,
) -> Event {
    wait_for_event_of(events, within, pred).await
}

/// Waits (bounded) for an item of `events` matching `pred`; panics with
/// what was seen otherwise.
pub async fn wait_for_event_of<E: std::fmt::Display>(
    events: &mut (impl Stream<Item = E> + Unpin),
    within: Duration,
    pred: impl Fn(&E) -> bool,
) -> E {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(within, async {
        while let Some(ev) = events.next().await {
            if pred(&ev) {
                return Some(ev);
            }
            seen.push(ev.to_string());
        }
        None
    })
    .await;
    match found {
        Ok(Some(ev)) => ev,
        _ => panic!("expected event not seen within {within:?}; saw: {seen:#?}"),
    }
}

/// The next typed message of a subscription (not acked), within 20 s.
pub async fn next_received<T: serde::de::DeserializeOwned>(
    sub: &mut rabbitkit::Subscription<T>,
) -> rabbitkit::Received<T> {
    tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .unwrap_or_else(|_| panic!("no message on {} within 20 s", sub.queue()))
        .expect("subscription ended")
        .expect("a decodable message")
}

/// The next typed message of a subscription (acked), within 20 s.
pub async fn next_body<T: serde::de::DeserializeOwned>(sub: &mut rabbitkit::Subscription<T>) -> T {
    let msg = next_received(sub).await;
    msg.ack().await.expect("ack");
    msg.body
}

/// Every body received until (and not including) `sentinel`. Messages from
/// one publisher reach a queue in order, so anything routed before the
/// sentinel has arrived by then: absence is shown without waiting on a clock.
pub async fn bodies_until(
    sub: &mut rabbitkit::Subscription<String>,
    sentinel: &str,
) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let body = next_body(sub).await;
        if body == sentinel {
            return got;
        }
        got.push(body);
    }
}

/// Whether a publish was routed to a queue: `true` when confirmed, `false`
/// when the broker returned it as unroutable (a publish to a direct, topic
/// or headers exchange is mandatory unless its options say otherwise);
/// any other error fails the test.
pub fn routed(result: Result<rabbitkit::Confirmed, rabbitkit::SendError>) -> bool {
    match result {
        Ok(_) => true,
        Err(e) if e.is_unroutable() => false,
        Err(e) => panic!("publish failed: {e:?}"),
    }
}
