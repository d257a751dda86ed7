//! A channel-level error (a 406 on a declaration, a 404 on a publish) comes
//! back as a typed error to the caller that caused it, while the connection,
//! the other publishers and the consumers keep working.

mod common;

use std::time::Duration;

use futures::StreamExt;
use rabbitkit_core::{
    ConsumeOptions, Declaration, DeclareError, ExchangeSpec, ExchangeType, FieldTable,
    OutgoingMessage, PublishError, QueueSpec,
};

fn exchange(name: &str, kind: ExchangeType) -> Declaration {
    Declaration::Exchange(ExchangeSpec {
        name: name.into(),
        kind,
        durable: false,
        auto_delete: true,
        internal: false,
        arguments: FieldTable::default(),
    })
}

#[tokio::test]
async fn exchange_type_mismatch_is_typed_and_the_connection_survives() {
    let client = common::client().await;
    let name = common::unique_name("chanerr.x");
    client
        .declare(exchange(&name, ExchangeType::Direct))
        .await
        .unwrap();
    // Idempotent: the same declaration again is fine.
    client
        .declare(exchange(&name, ExchangeType::Direct))
        .await
        .unwrap();
    let err = client
        .declare(exchange(&name, ExchangeType::Fanout))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        DeclareError::Inequivalent {
            object: "exchange".into(),
            name: name.clone(),
            argument: "type".into(),
            requested: "fanout".into(),
            current: "direct".into(),
        }
    );
    // Same connection, still usable for declarations and publishing.
    client
        .declare(exchange(&name, ExchangeType::Direct))
        .await
        .unwrap();
    client
        .publish(OutgoingMessage::new(name.as_str(), "k", b"x".to_vec()))
        .await
        .unwrap();
    assert_eq!(client.stats().disconnects, 0);
    client.delete_exchange(&name).await.unwrap();
}

#[tokio::test]
async fn publishing_to_a_missing_exchange_fails_only_that_publish() {
    let client = common::client().await;
    let queue = common::unique_name("chanerr.q");
    client
        .declare(Declaration::Queue(QueueSpec {
            name: queue.clone(),
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: FieldTable::default(),
        }))
        .await
        .unwrap();
    let mut consumer = client.consume(&queue, ConsumeOptions::new()).await.unwrap();
    let missing = common::unique_name("chanerr.missing");

    // Good and bad publishes interleaved on the same pooled channel.
    let publisher = client.publisher();
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for i in 0..50u32 {
        good.push(publisher.publish(OutgoingMessage::new(
            "",
            queue.as_str(),
            i.to_string().into_bytes(),
        )));
        if i % 10 == 0 {
            bad.push(publisher.publish(OutgoingMessage::new(
                missing.as_str(),
                "k",
                b"lost?".to_vec(),
            )));
        }
    }
    for res in futures::future::join_all(bad).await {
        match res {
            Err(PublishError::ExchangeNotFound { exchange }) => assert_eq!(exchange, missing),
            other => panic!("expected ExchangeNotFound, got {other:?}"),
        }
    }
    for res in futures::future::join_all(good).await {
        res.expect("a good publish must not suffer from another's error");
    }
    // The consumer on the same connection receives every good message.
    let mut got = std::collections::BTreeSet::new();
    while got.len() < 50 {
        let d = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .expect("all 50 within 20 s")
            .unwrap()
            .unwrap();
        got.insert(
            String::from_utf8(d.body().to_vec())
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
        d.ack().await.unwrap();
    }
    assert_eq!(got, (0..50).collect());
    assert_eq!(client.stats().disconnects, 0);
    drop(consumer);
    client.delete_queue(&queue).await.unwrap();
}

#[tokio::test]
async fn unroutable_mandatory_message_is_an_error() {
    let client = common::client().await;
    let name = common::unique_name("chanerr.noroute");
    client
        .declare(exchange(&name, ExchangeType::Direct))
        .await
        .unwrap();
    let err = client
        .publish(OutgoingMessage::new(name.as_str(), "nobody", b"x".to_vec()).mandatory(true))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PublishError::Unroutable { ref routing_key, .. } if routing_key == "nobody"),
        "{err:?}"
    );
    // Not mandatory: the broker drops it silently, by AMQP's rules, and confirms.
    client
        .publish(OutgoingMessage::new(name.as_str(), "nobody", b"x".to_vec()))
        .await
        .unwrap();
    client.delete_exchange(&name).await.unwrap();
}

#[tokio::test]
async fn consuming_a_missing_queue_is_typed() {
    let client = common::client().await;
    let queue = common::unique_name("chanerr.nosuchqueue");
    let err = client
        .consume(&queue, ConsumeOptions::new())
        .await
        .unwrap_err();
    assert_eq!(err, rabbitkit_core::ConsumeError::QueueNotFound { queue });
    // The client is fine afterwards.
    assert!(client.is_connected());
    client
        .queue_info(&common::unique_name("x"))
        .await
        .unwrap_err();
}
