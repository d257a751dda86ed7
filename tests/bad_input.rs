//! Bad input gets a clear, typed error and loses nothing; the connection
//! and the other channels keep working after each.

mod common;

use std::time::Duration;

use futures::StreamExt;
use rabbitkit::{BasicProperties, OutgoingMessage, Queue, ReceiveError};

#[tokio::test]
async fn an_unexpected_content_type_is_a_decode_error_with_the_delivery() {
    let client = common::client().await;
    let queue = Queue::named(common::unique_name("bad.ctype"))
        .declare(&client)
        .await
        .unwrap();
    client
        .publish(
            OutgoingMessage::new("", queue.name(), b"<order id='1'/>".to_vec())
                .properties(BasicProperties::default().with_content_type("application/xml".into())),
        )
        .await
        .unwrap();
    queue.send(&"next".to_string()).await.unwrap();
    let mut sub = queue.subscribe::<String>().await.unwrap();
    match tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .unwrap()
        .unwrap()
    {
        Err(ReceiveError::Decode { error, delivery }) => {
            assert_eq!(error.content_type, "application/xml");
            assert_eq!(delivery.body(), b"<order id='1'/>");
            delivery.reject(false).await.unwrap();
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(common::next_body(&mut sub).await, "next");
    drop(sub);
    queue.delete().await.unwrap();
}
