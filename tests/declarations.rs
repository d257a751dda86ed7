//! Declarations are idempotent and checked against what exists; a mismatch
//! is a typed error naming what differs, and the connection survives it.

mod common;

use std::time::Duration;

use rabbitkit::{DeclareError, Exchange, Queue};

#[tokio::test]
async fn redeclaring_the_same_thing_changes_nothing() {
    let client = common::client().await;
    let name = common::unique_name("decl.same");
    let q = Queue::durable(name.as_str())
        .message_ttl(Duration::from_secs(60))
        .declare(&client)
        .await
        .unwrap();
    q.send(&"kept".to_string()).await.unwrap();
    for _ in 0..3 {
        Queue::durable(name.as_str())
            .message_ttl(Duration::from_secs(60))
            .declare(&client)
            .await
            .unwrap();
    }
    assert_eq!(
        q.info().await.unwrap().messages,
        1,
        "re-declaring kept the message"
    );
    let x = common::unique_name("decl.x");
    for _ in 0..3 {
        Exchange::topic(x.as_str())
            .durable(true)
            .declare(&client)
            .await
            .unwrap();
    }
    q.delete().await.unwrap();
    client.delete_exchange(&x).await.unwrap();
}

#[tokio::test]
async fn exchange_of_another_type_names_both_types() {
    let client = common::client().await;
    let name = common::unique_name("decl.kind");
    let direct = Exchange::direct(name.as_str())
        .declare(&client)
        .await
        .unwrap();
    let err = Exchange::fanout(name.as_str())
        .declare(&client)
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
    assert!(err.to_string().contains("direct") && err.to_string().contains("fanout"));
    // The connection and the exchange are fine.
    assert_eq!(client.stats().disconnects, 0);
    // The broker answers: no queue is bound for "k" (a direct publish is
    // mandatory by default).
    assert!(!common::routed(
        direct.publish("k", &"still works".to_string()).await
    ));
    client.delete_exchange(&name).await.unwrap();
}

#[tokio::test]
async fn inequivalent_queue_arguments_are_named() {
    let client = common::client().await;
    let name = common::unique_name("decl.qtype");
    Queue::durable(name.as_str())
        .classic()
        .declare(&client)
        .await
        .unwrap();
    match Queue::quorum(name.as_str())
        .declare(&client)
        .await
        .unwrap_err()
    {
        DeclareError::Inequivalent {
            object,
            argument,
            requested,
            ..
        } => {
            assert_eq!(object, "queue");
            assert_eq!(argument, "x-queue-type");
            assert_eq!(requested, "quorum");
        }
        other => panic!("{other:?}"),
    }
    // The old tutorials' declaration (not durable) against a durable queue.
    #[allow(deprecated)]
    let transient = Queue::transient(name.as_str());
    match transient.declare(&client).await.unwrap_err() {
        DeclareError::Inequivalent {
            argument,
            requested,
            current,
            ..
        } => {
            assert_eq!(
                (argument.as_str(), requested.as_str(), current.as_str()),
                ("durable", "false", "true")
            );
        }
        other => panic!("{other:?}"),
    }
    let ttl = common::unique_name("decl.ttl");
    Queue::named(ttl.as_str())
        .message_ttl(Duration::from_secs(1))
        .declare(&client)
        .await
        .unwrap();
    match Queue::named(ttl.as_str())
        .message_ttl(Duration::from_secs(2))
        .declare(&client)
        .await
        .unwrap_err()
    {
        DeclareError::Inequivalent {
            argument,
            requested,
            current,
            ..
        } => {
            assert_eq!(
                (argument.as_str(), requested.as_str(), current.as_str()),
                ("x-message-ttl", "2000", "1000")
            );
        }
        other => panic!("{other:?}"),
    }
    client.delete_queue(&name).await.unwrap();
    client.delete_queue(&ttl).await.unwrap();
}

#[tokio::test]
async fn invalid_names_never_reach_the_broker() {
    let client = common::client().await;
    for bad in ["amq.mine".to_string(), String::new(), "x".repeat(256)] {
        assert!(matches!(
            Queue::named(bad.as_str()).declare(&client).await,
            Err(DeclareError::InvalidName { .. })
        ));
        assert!(matches!(
            Exchange::direct(bad.as_str()).declare(&client).await,
            Err(DeclareError::InvalidName { .. })
        ));
    }
}

#[tokio::test]
async fn an_exclusive_queue_of_another_connection_is_locked() {
    let a = common::client().await;
    let b = common::client().await;
    let name = common::unique_name("decl.excl");
    let q = Queue::named(name.as_str())
        .exclusive(true)
        .declare(&a)
        .await
        .unwrap();
    let err = Queue::named(name.as_str())
        .exclusive(true)
        .declare(&b)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DeclareError::ResourceLocked { .. }),
        "{err:?}"
    );
    q.delete().await.unwrap();
}
