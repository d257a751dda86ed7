//! Bad input gets a clear, typed error and loses nothing; the connection
//! and the other channels keep working after each.

mod common;

use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use rabbitkit::{
    BasicProperties, ConnectError, ConsumeError, ConsumeOptions, DeclareError, OutgoingMessage,
    PublishError, Queue, ReceiveError,
};
use rabbitkit_test::{MAX_MESSAGE_SIZE, using_external_broker};

#[tokio::test]
async fn a_body_larger_than_the_broker_accepts_is_too_large() {
    if using_external_broker() {
        eprintln!("skipped: the external broker's max_message_size is unknown");
        return;
    }
    let client = common::client().await;
    let queue = Queue::named(common::unique_name("bad.big"))
        .declare(&client)
        .await
        .unwrap();
    let big = vec![b'x'; MAX_MESSAGE_SIZE + 1];
    match client
        .publish(OutgoingMessage::new("", queue.name(), big))
        .await
    {
        Err(PublishError::TooLarge { size, max }) => {
            assert_eq!(
                (size, max),
                (MAX_MESSAGE_SIZE as u64 + 1, MAX_MESSAGE_SIZE as u64)
            );
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The same client goes on: a message at the limit passes.
    queue.send(&"small".to_string()).await.unwrap();
    assert_eq!(queue.info().await.unwrap().messages, 1);
    assert_eq!(client.stats().disconnects, 0);
    queue.delete().await.unwrap();
}

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

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(["-n", "rabbit1@localhost"])
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_user_without_permissions_gets_access_refused_everywhere() {
    if using_external_broker() {
        eprintln!("skipped: users are made with the local cluster's rabbitmqctl");
        return;
    }
    common::ensure_cluster();
    let user = common::unique_name("rk-norights");
    rabbitmqctl(&["add_user", &user, "pw-norights"]);
    rabbitmqctl(&["set_permissions", "-p", "/", &user, "", "", ""]);
    let url = format!("amqp://{user}:pw-norights@127.0.0.1:5672/%2f");
    let client = rabbitkit::Options::new()
        .connect(url.as_str())
        .await
        .unwrap();

    let err = Queue::named(common::unique_name("bad.perm"))
        .declare(&client)
        .await
        .unwrap_err();
    assert!(matches!(err, DeclareError::AccessRefused { .. }), "{err:?}");
    let err = client
        .publish(OutgoingMessage::new("amq.topic", "k", b"x".to_vec()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PublishError::Rejected { code: 403, .. }),
        "{err:?}"
    );
    let err = client
        .consume("any-queue", ConsumeOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConsumeError::AccessRefused { .. } | ConsumeError::QueueNotFound { .. }
        ),
        "{err:?}"
    );
    // Refusals close channels, never the connection.
    assert!(client.is_connected());
    assert_eq!(client.stats().disconnects, 0);

    // A vhost the user may not enter: refused at connect, no retry loop.
    let err = rabbitkit::Options::new()
        .retry_initial_connect(true)
        .connect(format!("amqp://{user}:pw-norights@127.0.0.1:5672/rk-private").as_str())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnectError::VhostNotAllowed { .. }),
        "{err:?}"
    );
    client.close().await;
    rabbitmqctl(&["delete_user", &user]);
}
