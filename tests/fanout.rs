//! Publish/subscribe: every subscriber of a fanout exchange gets every
//! message; a queue that is not bound gets none.

mod common;

use rabbitkit::{Exchange, Queue};

#[tokio::test]
async fn every_subscriber_gets_every_message() {
    let client = common::client().await;
    let logs = Exchange::fanout(common::unique_name("fanout.logs"))
        .declare(&client)
        .await
        .unwrap();
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(logs.subscribe::<String>().await.unwrap());
    }
    // A named durable subscriber too, and a queue that is not bound.
    let durable = Queue::durable(common::unique_name("fanout.audit"))
        .declare(&client)
        .await
        .unwrap();
    logs.bind(&durable).await.unwrap();
    let unbound = Queue::named(common::unique_name("fanout.unbound"))
        .declare(&client)
        .await
        .unwrap();

    for i in 0..5 {
        logs.publish(&format!("log {i}")).await.unwrap();
    }
    logs.publish(&"end".to_string()).await.unwrap();
    let expected: Vec<String> = (0..5).map(|i| format!("log {i}")).collect();
    for sub in &mut subs {
        assert_eq!(common::bodies_until(sub, "end").await, expected);
    }
    let mut audit = durable.subscribe::<String>().await.unwrap();
    assert_eq!(common::bodies_until(&mut audit, "end").await, expected);
    assert_eq!(
        unbound.info().await.unwrap().messages,
        0,
        "an unbound queue gets nothing"
    );
    drop(audit);
    durable.delete().await.unwrap();
    unbound.delete().await.unwrap();
    drop(subs);
    client.delete_exchange(logs.name()).await.unwrap();
}
