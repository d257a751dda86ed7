//! Point-to-point: a message sent to a queue through the default exchange
//! reaches that queue's consumer, once, intact.

mod common;

use rabbitkit::{PublishOptions, Queue};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Greeting {
    to: String,
    n: u32,
}

#[tokio::test]
async fn send_and_receive_typed_messages_in_order() {
    let client = common::client().await;
    let queue = Queue::named(common::unique_name("p2p"))
        .declare(&client)
        .await
        .unwrap();
    let mut sub = queue.subscribe::<Greeting>().await.unwrap();
    for n in 0..20 {
        queue
            .send(&Greeting {
                to: "world".into(),
                n,
            })
            .await
            .unwrap();
    }
    for n in 0..20 {
        assert_eq!(
            common::next_body(&mut sub).await,
            Greeting {
                to: "world".into(),
                n
            }
        );
    }
    drop(sub);
    assert_eq!(
        queue.info().await.unwrap().messages,
        0,
        "nothing left behind"
    );
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn plain_text_and_gzip_bodies() {
    let client = common::client().await;
    let queue = Queue::named(common::unique_name("p2p.text"))
        .declare(&client)
        .await
        .unwrap();
    let mut sub = queue.subscribe::<String>().await.unwrap();
    queue.send(&"Hello World!".to_string()).await.unwrap();
    queue
        .send_with(&"squeezed ".repeat(100), PublishOptions::new().gzip(true))
        .await
        .unwrap();
    let first = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        futures::StreamExt::next(&mut sub),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert_eq!(
        first.delivery().body(),
        b"Hello World!",
        "plain text on the wire"
    );
    assert_eq!(
        first.properties().content_type().as_ref().unwrap().as_str(),
        "text/plain"
    );
    first.ack().await.unwrap();
    assert_eq!(common::next_body(&mut sub).await, "squeezed ".repeat(100));
    drop(sub);
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn competing_consumers_each_message_goes_to_exactly_one() {
    let client = common::client().await;
    let queue = Queue::named(common::unique_name("p2p.compete"))
        .declare(&client)
        .await
        .unwrap();
    let mut a = queue.subscribe::<u32>().await.unwrap();
    let mut b = queue.subscribe::<u32>().await.unwrap();
    for n in 0..40u32 {
        queue.send(&n).await.unwrap();
    }
    let mut all = Vec::new();
    while all.len() < 40 {
        tokio::select! {
            Some(Ok(m)) = futures::StreamExt::next(&mut a) => { m.ack().await.unwrap(); all.push(m.body) }
            Some(Ok(m)) = futures::StreamExt::next(&mut b) => { m.ack().await.unwrap(); all.push(m.body) }
        }
    }
    all.sort();
    assert_eq!(all, (0..40).collect::<Vec<_>>(), "each exactly once");
    drop((a, b));
    queue.delete().await.unwrap();
}

#[tokio::test]
async fn a_send_to_a_queue_that_is_gone_is_unroutable_not_silently_dropped() {
    let client = common::client().await;
    let queue = Queue::named(common::unique_name("p2p.gone"))
        .declare(&client)
        .await
        .unwrap();
    let tasks = rabbitkit::WorkQueue::<String>::builder(common::unique_name("p2p.gone.tasks"))
        .declare(&client)
        .await
        .unwrap();
    // Someone else deletes both queues.
    client.delete_queue(queue.name()).await.unwrap();
    client.delete_queue(tasks.queue().name()).await.unwrap();
    for err in [
        queue.send(&"into the void".to_string()).await.unwrap_err(),
        tasks.submit(&"lost task".to_string()).await.unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                rabbitkit::SendError::Publish(rabbitkit::PublishError::Unroutable { .. })
            ),
            "{err:?}"
        );
    }
    // The client goes on.
    assert!(client.is_connected());
    assert_eq!(client.stats().disconnects, 0);
}
