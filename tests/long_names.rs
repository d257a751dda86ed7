//! Names, routing keys and exchange types longer than the 255 bytes AMQP
//! allows are refused with a typed error at every entry of the core, before
//! anything is registered or sent; the client keeps working afterwards (no
//! panic in the caller, no panic of the supervisor, no reconnect).
//! A 255-byte name is fine.

mod common;

use std::time::Duration;

use futures::StreamExt;
use rabbitkit_core::{
    BindingSpec, Client, ConsumeError, ConsumeOptions, Declaration, DeclareError, ExchangeSpec,
    ExchangeType, FieldTable, OutgoingMessage, PublishError, QueueSpec,
};

/// 300 bytes: over the limit.
fn long(prefix: &str) -> String {
    format!("{prefix}.{}", "x".repeat(300 - prefix.len() - 1))
}

fn queue_spec(name: &str) -> QueueSpec {
    QueueSpec {
        name: name.to_owned(),
        durable: false,
        exclusive: true,
        auto_delete: false,
        arguments: FieldTable::default(),
    }
}

fn exchange_spec(name: &str, kind: ExchangeType) -> ExchangeSpec {
    ExchangeSpec {
        name: name.to_owned(),
        kind,
        durable: false,
        auto_delete: true,
        internal: false,
        arguments: FieldTable::default(),
    }
}

/// A normal publish and consume on `queue_name` (an exclusive queue declared
/// here) succeeds, and the connection was never lost.
async fn round_trip_on(client: &Client, queue_name: &str) {
    client
        .declare(Declaration::Queue(queue_spec(queue_name)))
        .await
        .expect("declare the round-trip queue");
    let mut consumer = client
        .consume(queue_name, ConsumeOptions::new())
        .await
        .expect("consume");
    client
        .publish(OutgoingMessage::new("", queue_name, b"still fine".to_vec()))
        .await
        .expect("publish");
    let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .expect("a delivery within 20 s")
        .expect("stream open")
        .expect("a delivery");
    assert_eq!(delivery.body(), b"still fine");
    delivery.ack().await.unwrap();
    drop(consumer);
    client.delete_queue(queue_name).await.unwrap();
    assert_eq!(client.stats().disconnects, 0);
    assert!(client.is_connected());
}

async fn still_works(client: &Client) {
    round_trip_on(client, &common::unique_name("long.ok")).await;
}

fn assert_invalid_name(err: DeclareError, name: &str) {
    match err {
        DeclareError::InvalidName { name: n, reason } => {
            assert_eq!(n, name);
            assert!(reason.contains("255"), "{reason}");
        }
        other => panic!("expected DeclareError::InvalidName, got {other:?}"),
    }
}

fn assert_invalid(err: DeclareError, expected_what: &str, value: &str) {
    match err {
        DeclareError::Invalid {
            what,
            value: v,
            reason,
        } => {
            assert_eq!(what, expected_what);
            assert_eq!(v, value);
            assert!(reason.contains("255"), "{reason}");
        }
        other => panic!("expected DeclareError::Invalid, got {other:?}"),
    }
}

fn assert_publish_invalid(err: PublishError, expected_what: &str, value: &str) {
    match err {
        PublishError::Invalid {
            what,
            value: v,
            reason,
        } => {
            assert_eq!(what, expected_what);
            assert_eq!(v, value);
            assert!(reason.contains("255"), "{reason}");
        }
        other => panic!("expected PublishError::Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn consume_with_a_long_queue_name_is_refused() {
    let client = common::client().await;
    let name = long("long.consume");
    match client.consume(&name, ConsumeOptions::new()).await {
        Err(ConsumeError::InvalidName { name: n, reason }) => {
            assert_eq!(n, name);
            assert!(reason.contains("255"), "{reason}");
        }
        other => panic!("expected ConsumeError::InvalidName, got {other:?}"),
    }
    still_works(&client).await;
}

#[tokio::test]
async fn publish_to_a_long_exchange_is_refused() {
    let client = common::client().await;
    let exchange = long("long.px");
    let err = client
        .publish(OutgoingMessage::new(exchange.as_str(), "k", b"x".to_vec()))
        .await
        .unwrap_err();
    assert_publish_invalid(err, "exchange", &exchange);
    still_works(&client).await;
}

#[tokio::test]
async fn publish_with_a_long_routing_key_is_refused() {
    let client = common::client().await;
    let key = long("long.rk");
    let err = client
        .publisher()
        .publish(OutgoingMessage::new("", key.as_str(), b"x".to_vec()))
        .await
        .unwrap_err();
    assert_publish_invalid(err, "routing key", &key);
    still_works(&client).await;
}

#[tokio::test]
async fn declare_of_a_long_exchange_name_is_refused() {
    let client = common::client().await;
    let name = long("long.dx");
    let err = client
        .declare(Declaration::Exchange(exchange_spec(
            &name,
            ExchangeType::Direct,
        )))
        .await
        .unwrap_err();
    assert_invalid_name(err, &name);
    still_works(&client).await;
}

#[tokio::test]
async fn declare_of_a_long_custom_exchange_type_is_refused() {
    let client = common::client().await;
    let kind = long("x-long-type");
    let err = client
        .declare(Declaration::Exchange(exchange_spec(
            &common::unique_name("long.kind"),
            ExchangeType::Custom(kind.clone()),
        )))
        .await
        .unwrap_err();
    assert_invalid(err, "exchange type", &kind);
    still_works(&client).await;
}

#[tokio::test]
async fn declare_of_a_long_queue_name_is_refused() {
    let client = common::client().await;
    let name = long("long.dq");
    let err = client
        .declare(Declaration::Queue(queue_spec(&name)))
        .await
        .unwrap_err();
    assert_invalid_name(err, &name);
    still_works(&client).await;
}

#[tokio::test]
async fn declare_of_a_binding_with_long_parts_is_refused() {
    let client = common::client().await;
    let binding = |queue: &str, exchange: &str, key: &str| {
        Declaration::Binding(BindingSpec {
            queue: queue.to_owned(),
            exchange: exchange.to_owned(),
            routing_key: key.to_owned(),
            arguments: FieldTable::default(),
        })
    };
    let name = long("long.b");
    let err = client
        .declare(binding(&name, "amq.direct", "k"))
        .await
        .unwrap_err();
    assert_invalid_name(err, &name);
    let err = client.declare(binding("q", &name, "k")).await.unwrap_err();
    assert_invalid_name(err, &name);
    let err = client
        .declare(binding("q", "amq.direct", &name))
        .await
        .unwrap_err();
    assert_invalid(err, "routing key", &name);
    let err = client
        .unbind(BindingSpec {
            queue: "q".into(),
            exchange: "amq.direct".into(),
            routing_key: name.clone(),
            arguments: FieldTable::default(),
        })
        .await
        .unwrap_err();
    assert_invalid(err, "routing key", &name);
    still_works(&client).await;
}

#[tokio::test]
async fn admin_calls_with_a_long_name_are_refused() {
    let client = common::client().await;
    let name = long("long.admin");
    assert_invalid_name(client.queue_info(&name).await.unwrap_err(), &name);
    assert_invalid_name(client.delete_queue(&name).await.unwrap_err(), &name);
    assert_invalid_name(client.delete_exchange(&name).await.unwrap_err(), &name);
    still_works(&client).await;
}

#[tokio::test]
async fn a_255_byte_queue_name_is_fine() {
    let client = common::client().await;
    let prefix = common::unique_name("long.255");
    let name = format!("{prefix}.{}", "y".repeat(255 - prefix.len() - 1));
    assert_eq!(name.len(), 255);
    round_trip_on(&client, &name).await;
    still_works(&client).await;
}

#[tokio::test]
async fn rpc_calls_to_a_long_queue_or_exchange_are_refused() {
    use rabbitkit::{RpcClient, RpcError};
    let client = common::client().await;
    let queue = long("long.rpc");
    let rpc = RpcClient::<u64, u64>::builder(queue.as_str())
        .build(&client)
        .await
        .unwrap();
    match rpc.call(&1).await {
        Err(RpcError::Invalid {
            what,
            value,
            reason,
        }) => {
            assert_eq!(
                (what.as_str(), value.as_str()),
                ("routing key", queue.as_str())
            );
            assert!(reason.contains("255"), "{reason}");
        }
        other => panic!("expected RpcError::Invalid, got {other:?}"),
    }
    assert_eq!(rpc.pending(), 0);
    let exchange = long("long.rpcx");
    let rpc = RpcClient::<u64, u64>::builder("some-queue")
        .exchange(exchange.as_str())
        .build(&client)
        .await
        .unwrap();
    match rpc.call(&1).await {
        Err(RpcError::Invalid { what, value, .. }) => {
            assert_eq!(
                (what.as_str(), value.as_str()),
                ("exchange", exchange.as_str())
            );
        }
        other => panic!("expected RpcError::Invalid, got {other:?}"),
    }
    still_works(&client).await;
}

#[tokio::test]
async fn a_send_with_a_long_message_id_is_refused() {
    use rabbitkit::{PublishOptions, Queue, SendError};
    let client = common::client().await;
    let q = Queue::temporary().declare(&client).await.unwrap();
    let id = long("long.id");
    match q
        .send_with(
            &"x".to_string(),
            PublishOptions::new().message_id(id.as_str()),
        )
        .await
    {
        Err(SendError::Publish(err)) => assert_publish_invalid(err, "message id", &id),
        other => panic!("expected SendError::Publish(Invalid), got {other:?}"),
    }
    still_works(&client).await;
}

#[tokio::test]
async fn a_header_key_over_255_bytes_is_refused() {
    use rabbitkit::{Exchange, Headers, HeadersMatch, Queue, SendError};
    let client = common::client().await;
    let x_name = common::unique_name("long.hx");
    let x = Exchange::headers(x_name.as_str())
        .declare(&client)
        .await
        .unwrap();
    let q = Queue::temporary().declare(&client).await.unwrap();
    let key = long("long.hk");
    let err = x
        .bind(&q, &HeadersMatch::all().header(key.as_str(), "v"))
        .await
        .unwrap_err();
    assert_invalid(err, "header key", &key);
    match x
        .publish(&Headers::new().with(key.as_str(), "v"), &"x".to_string())
        .await
    {
        Err(SendError::Invalid(err)) => assert_invalid(err.into(), "header key", &key),
        other => panic!("expected SendError::Invalid, got {other:?}"),
    }
    // A header added through PublishOptions, on any send.
    match q
        .send_with(
            &"x".to_string(),
            rabbitkit::PublishOptions::new().header(&key, "v"),
        )
        .await
    {
        Err(SendError::Publish(err)) => assert_publish_invalid(err, "header key", &key),
        other => panic!("expected SendError::Publish(Invalid), got {other:?}"),
    }
    client.delete_exchange(&x_name).await.unwrap();
    still_works(&client).await;
}
