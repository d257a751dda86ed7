//! Temporary (per-subscriber) queues: a subscribe that fails leaves no
//! queue behind, on the broker or in the client's recorded topology.

mod common;

use rabbitkit::Exchange;
use rabbitkit_test::Cluster;

/// The `rabbitkit.tmp.*` queues owned by the connection named `name`.
fn temporary_queues_of(name: &str) -> Vec<String> {
    let ctl = |args: &[&str]| {
        Cluster::local()
            .rabbitmqctl(1, args)
            .unwrap_or_else(|e| panic!("rabbitmqctl {args:?}: {e}"))
    };
    let connections = ctl(&[
        "list_connections",
        "-q",
        "--no-table-headers",
        "pid",
        "client_properties",
    ]);
    let pids: Vec<&str> = connections
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, props)| props.contains(name))
        .map(|(pid, _)| pid.trim())
        .collect();
    assert_eq!(pids.len(), 1, "one connection named {name}: {connections}");
    ctl(&[
        "list_queues",
        "-q",
        "--no-table-headers",
        "name",
        "owner_pid",
    ])
    .lines()
    .filter_map(|l| l.split_once('\t'))
    .filter(|(q, owner)| q.starts_with("rabbitkit.tmp.") && owner.trim() == pids[0])
    .map(|(q, _)| q.to_owned())
    .collect()
}

#[tokio::test]
async fn a_failed_subscribe_leaves_no_temporary_queue_behind() {
    common::ensure_cluster();
    let name = common::unique_name("tmp-queues");
    let client = common::options()
        .connection_name(name.as_str())
        .connect(common::amqp_addrs())
        .await
        .unwrap();
    let logs = Exchange::fanout(common::unique_name("tmp.logs"))
        .declare(&client)
        .await
        .unwrap();
    let sub = logs.subscribe::<String>().await.unwrap();
    assert_eq!(
        temporary_queues_of(&name).len(),
        1,
        "the subscriber's queue"
    );
    drop(sub);
    // The exchange goes (someone else deleted it): subscribing declares a
    // temporary queue, then fails to bind it.
    client.delete_exchange(logs.name()).await.unwrap();
    let failed = logs.subscribe::<String>().await;
    assert!(failed.is_err(), "binding to a deleted exchange fails");
    let left = temporary_queues_of(&name);
    assert!(left.is_empty(), "temporary queues left behind: {left:?}");
    client.close().await;
}

/// A temporary queue goes with its consumer's channel (auto-delete): after
/// the broker cancels that consumer (here: the queue deleted by an
/// operator, as a consumer-channel error also deletes it), the subscriber
/// makes its queue again, bound as before, and goes on receiving. Before,
/// re-subscribing got `404` and the subscription ended for good.
#[tokio::test]
async fn a_temporary_queue_subscriber_goes_on_after_its_queue_went_with_its_consumer() {
    common::ensure_cluster();
    let name = common::unique_name("tmp-again");
    let client = common::options()
        .connection_name(name.as_str())
        .connect(common::amqp_addrs())
        .await
        .unwrap();
    let logs = Exchange::fanout(common::unique_name("tmp.again"))
        .declare(&client)
        .await
        .unwrap();
    let mut sub = logs.subscribe::<String>().await.unwrap();
    logs.publish(&"before".to_owned()).await.unwrap();
    let first = sub.recv().await.expect("a message").expect("decoded");
    assert_eq!(first.body, "before");
    first.ack().await.unwrap();
    let queue = sub.queue().to_owned();
    Cluster::local()
        .rabbitmqctl(1, &["delete_queue", &queue])
        .unwrap_or_else(|e| panic!("rabbitmqctl delete_queue: {e}"));
    // Published until one arrives: the queue is back only after the
    // re-subscription's delay, and a fanout with no queue drops.
    let received = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            logs.publish(&"after".to_owned()).await.unwrap();
            match tokio::time::timeout(std::time::Duration::from_millis(300), sub.recv()).await {
                Err(_) => continue,
                Ok(got) => return got,
            }
        }
    })
    .await
    .expect("the subscriber receives again within 30 s");
    let got = received
        .expect("the subscription goes on (it ended)")
        .expect("decoded");
    assert_eq!(got.body, "after");
    assert_eq!(
        temporary_queues_of(&name),
        [queue],
        "the same temporary queue, made again"
    );
    client.close().await;
}
