//! Routing: a direct exchange delivers by exact key; one queue may bind several.

mod common;

use rabbitkit::{DeclareError, Exchange, SendError};

#[tokio::test]
async fn routes_by_exact_key() {
    let client = common::client().await;
    let x = Exchange::direct(common::unique_name("direct_logs"))
        .declare(&client)
        .await
        .unwrap();
    let mut errors_only = x.subscribe::<String>(&["error", "end"]).await.unwrap();
    let mut everything = x
        .subscribe::<String>(&["info", "warning", "error", "end"])
        .await
        .unwrap();

    let mut unrouted = Vec::new();
    for (sev, msg) in [
        ("info", "i1"),
        ("warning", "w1"),
        ("error", "e1"),
        ("debug", "d1"),
        ("error", "e2"),
    ] {
        if !common::routed(x.publish(sev, &msg.to_string()).await) {
            unrouted.push(sev);
        }
    }
    // Mandatory by default: the key nobody bound is refused, not dropped.
    assert_eq!(unrouted, ["debug"]);
    x.publish("end", &"end".to_string()).await.unwrap();
    assert_eq!(
        common::bodies_until(&mut errors_only, "end").await,
        ["e1", "e2"]
    );
    assert_eq!(
        common::bodies_until(&mut everything, "end").await,
        ["i1", "w1", "e1", "e2"]
    );
    drop((errors_only, everything));
    client.delete_exchange(x.name()).await.unwrap();
}

#[tokio::test]
async fn bad_keys_never_reach_the_network() {
    let client = common::client().await;
    let x = Exchange::direct(common::unique_name("direct.bad"))
        .declare(&client)
        .await
        .unwrap();
    let long = "k".repeat(256);
    assert!(matches!(
        x.publish(&long, &1).await,
        Err(SendError::Invalid(ref e)) if e.what == "routing key" && e.value == long
    ));
    assert!(matches!(
        x.subscribe::<u32>(&[&long]).await,
        Err(rabbitkit::SubscribeError::Declare(
            DeclareError::Invalid { .. }
        ))
    ));
    client.delete_exchange(x.name()).await.unwrap();
}
