//! Bodies interoperate with other AMQP clients, and a body that does not
//! decode is an error with the raw delivery at hand, never a crash.

mod common;

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rabbitkit::{Queue, ReceiveError};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u32,
    item: String,
}

async fn raw_channel() -> (Connection, lapin::Channel) {
    common::ensure_cluster();
    let conn = Connection::connect(&common::amqp_addrs()[0], ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (conn, ch)
}

#[tokio::test]
async fn raw_lapin_publishes_and_rabbitkit_reads_typed() {
    let client = common::client().await;
    let q = Queue::named(common::unique_name("interop.in"))
        .declare(&client)
        .await
        .unwrap();
    let (_conn, ch) = raw_channel().await;
    let publish = |body: &'static [u8], props: BasicProperties| {
        let ch = ch.clone();
        let name = q.name().to_string();
        async move {
            ch.basic_publish(
                "".into(),
                name.as_str().into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    };
    publish(
        br#"{"id":7,"item":"tea"}"#,
        BasicProperties::default().with_content_type("application/json".into()),
    )
    .await;
    publish(br#"{"id":8,"item":"cake"}"#, BasicProperties::default()).await; // no content type
    let mut orders = q.subscribe::<Order>().await.unwrap();
    assert_eq!(
        common::next_body(&mut orders).await,
        Order {
            id: 7,
            item: "tea".into()
        }
    );
    assert_eq!(
        common::next_body(&mut orders).await,
        Order {
            id: 8,
            item: "cake".into()
        }
    );
    drop(orders);
    // The dropped subscription is cancelled in the background: wait until the
    // broker has no consumer left, else it may still take the next message
    // and hand it back (requeued behind the one after it).
    for _ in 0..200 {
        if client.queue_info(q.name()).await.unwrap().consumers == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Plain text and decimal numbers, as the tutorials' programs send them.
    publish(b"Hello World!", BasicProperties::default()).await;
    publish(b"30", BasicProperties::default()).await;
    let mut text = q.subscribe::<String>().await.unwrap();
    assert_eq!(common::next_body(&mut text).await, "Hello World!");
    assert_eq!(common::next_body(&mut text).await, "30");
    drop(text);
    q.delete().await.unwrap();
}

#[tokio::test]
async fn rabbitkit_publishes_and_raw_lapin_reads_the_conventional_format() {
    let client = common::client().await;
    let q = Queue::named(common::unique_name("interop.out"))
        .declare(&client)
        .await
        .unwrap();
    q.send(&Order {
        id: 1,
        item: "tea".into(),
    })
    .await
    .unwrap();
    q.send(&"Hello World!".to_string()).await.unwrap();
    q.send(&832040u64).await.unwrap();
    let (_conn, ch) = raw_channel().await;
    let mut got = Vec::new();
    while got.len() < 3 {
        if let Some(m) = ch
            .basic_get(q.name().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            let ct = m
                .delivery
                .properties
                .content_type()
                .as_ref()
                .map(|c| c.to_string());
            got.push((m.delivery.data.clone(), ct));
        }
    }
    assert_eq!(got[0].0, br#"{"id":1,"item":"tea"}"#);
    assert_eq!(got[0].1.as_deref(), Some("application/json"));
    assert_eq!(
        got[1],
        (b"Hello World!".to_vec(), Some("text/plain".to_string()))
    );
    assert_eq!(got[2].0, b"832040");
    q.delete().await.unwrap();
}

#[tokio::test]
async fn an_undecodable_body_is_an_error_with_the_delivery_and_the_stream_goes_on() {
    let client = common::client().await;
    let q = Queue::named(common::unique_name("bodies.bad"))
        .declare(&client)
        .await
        .unwrap();
    q.send(&"{not an order".to_string()).await.unwrap();
    q.send(&Order {
        id: 2,
        item: "ok".into(),
    })
    .await
    .unwrap();
    let mut sub = q.subscribe::<Order>().await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .unwrap()
        .unwrap();
    match first {
        Err(ReceiveError::Decode { error, delivery }) => {
            assert_eq!(error.content_type, "text/plain");
            assert_eq!(delivery.body(), b"{not an order");
            delivery.reject(false).await.unwrap();
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(
        common::next_body(&mut sub).await,
        Order {
            id: 2,
            item: "ok".into()
        }
    );
    drop(sub);
    assert_eq!(q.info().await.unwrap().messages, 0);
    q.delete().await.unwrap();
}
