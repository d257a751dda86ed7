//! Features RabbitMQ 4 deprecates and may deny: using one is a typed error
//! that names the feature, never a reconnect loop, and the client goes on.
//!
//! A denied deprecated feature is not refused like other declarations (a
//! channel error): the broker closes the whole connection with
//! `541 INTERNAL_ERROR - Feature `…` is deprecated`. The local 4.x cluster
//! denies `transient_nonexcl_queues`, as RabbitMQ 4.3.0 did by default.

mod common;

use rabbitkit::{DeclareError, Queue};
use rabbitkit_core::{Declaration, QueueSpec};
use rabbitkit_test::{Cluster, using_external_broker};

#[tokio::test]
async fn a_denied_transient_queue_is_a_typed_error_and_the_client_goes_on() {
    let client = common::client().await;
    let name = common::unique_name("deprecated.transient");
    let transient = Declaration::Queue(QueueSpec {
        name: name.clone(),
        durable: false,
        exclusive: false,
        auto_delete: false,
        arguments: Default::default(),
    });
    let denied_here = !using_external_broker() && Cluster::local().version().is_4();
    match client.declare(transient).await {
        Err(DeclareError::Deprecated { feature, .. }) => {
            assert_eq!(feature, "transient_nonexcl_queues");
        }
        Ok(()) if !denied_here => {
            // RabbitMQ 3.x, or a 4.x that permits the feature.
            client.delete_queue(&name).await.unwrap();
        }
        other => panic!("expected DeclareError::Deprecated, got {other:?}"),
    }
    // Not recorded: later recoveries do not replay it. The client works.
    let q = Queue::durable(common::unique_name("deprecated.after"))
        .declare(&client)
        .await
        .unwrap();
    q.send(&"still here".to_string()).await.unwrap();
    assert_eq!(q.info().await.unwrap().messages, 1);
    q.delete().await.unwrap();
    client.close().await;
}
