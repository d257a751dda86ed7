//! Exchange-to-exchange bindings: an exchange bound to another exchange
//! receives the messages the source routes to it, typed by the source's
//! kind (a pattern for a topic source, a header match for a headers one).

mod common;

use rabbitkit::{DeclareError, Exchange, Headers, HeadersMatch, Queue, TopicPattern};

fn p(s: &str) -> TopicPattern {
    s.parse().unwrap()
}

#[tokio::test]
async fn a_topic_source_forwards_matching_messages_to_the_destination_exchange() {
    let client = common::client().await;
    let events = Exchange::topic(common::unique_name("e2e.events"))
        .declare(&client)
        .await
        .unwrap();
    // Internal: reachable only through exchange bindings.
    let payments = Exchange::topic(common::unique_name("e2e.payments"))
        .internal(true)
        .declare(&client)
        .await
        .unwrap();
    events
        .bind_exchange(&payments, &p("payment.#"))
        .await
        .unwrap();
    events.bind_exchange(&payments, &p("end")).await.unwrap();
    // Queues bound to the destination, by its own patterns.
    let mut refunds = payments
        .subscribe::<String>(&[p("*.refund"), p("end")])
        .await
        .unwrap();
    let mut all_payments = payments.subscribe::<String>(&[p("#")]).await.unwrap();
    // A queue on the source sees everything, as before.
    let mut everything = events.subscribe::<String>(&[p("#")]).await.unwrap();

    for key in [
        "payment.refund",
        "order.placed",
        "payment.charge",
        "order.refund",
        "end",
    ] {
        events.publish(key, &key.to_string()).await.unwrap();
    }
    assert_eq!(
        common::bodies_until(&mut refunds, "end").await,
        ["payment.refund"],
        "order.refund does not match the exchange binding payment.#"
    );
    assert_eq!(
        common::bodies_until(&mut all_payments, "end").await,
        ["payment.refund", "payment.charge"]
    );
    assert_eq!(
        common::bodies_until(&mut everything, "end").await,
        [
            "payment.refund",
            "order.placed",
            "payment.charge",
            "order.refund"
        ]
    );

    // Unbinding stops the forwarding (and the client forgets the bindings).
    events.unbind_exchange(&payments).await.unwrap();
    assert!(
        client
            .exchange_bindings(events.name(), payments.name())
            .is_empty()
    );
    let lonely = Queue::temporary().declare(&client).await.unwrap();
    payments.bind(&lonely, &p("#")).await.unwrap();
    events
        .publish("payment.refund", &"after unbind".to_string())
        .await
        .unwrap();
    // It reached the source's own queue ...
    assert_eq!(common::next_body(&mut everything).await, "after unbind");
    // ... and nothing reached the destination.
    assert_eq!(client.queue_info(lonely.name()).await.unwrap().messages, 0);
    drop((refunds, all_payments, everything));
    client.delete_exchange(events.name()).await.unwrap();
    client.delete_exchange(payments.name()).await.unwrap();
}

#[tokio::test]
async fn fanout_direct_and_headers_sources_bind_exchanges_by_their_own_rules() {
    let client = common::client().await;
    let fan = Exchange::fanout(common::unique_name("e2e.fan"))
        .declare(&client)
        .await
        .unwrap();
    let direct = Exchange::direct(common::unique_name("e2e.direct"))
        .declare(&client)
        .await
        .unwrap();
    let headers = Exchange::headers(common::unique_name("e2e.headers"))
        .declare(&client)
        .await
        .unwrap();
    let sink = Exchange::fanout(common::unique_name("e2e.sink"))
        .internal(true)
        .declare(&client)
        .await
        .unwrap();
    fan.bind_exchange(&sink).await.unwrap();
    direct.bind_exchange(&sink, "error").await.unwrap();
    headers
        .bind_exchange(&sink, &HeadersMatch::all().header("format", "pdf"))
        .await
        .unwrap();
    let mut got = sink.subscribe::<String>().await.unwrap();

    fan.publish(&"from fanout".to_string()).await.unwrap();
    // Only "error" is bound: refused as unroutable (mandatory by default).
    assert!(!common::routed(
        direct.publish("info", &"direct info".to_string()).await
    ));
    direct
        .publish("error", &"direct error".to_string())
        .await
        .unwrap();
    assert!(!common::routed(
        headers
            .publish(&Headers::new().with("format", "zip"), &"zip".to_string())
            .await
    ));
    headers
        .publish(&Headers::new().with("format", "pdf"), &"pdf".to_string())
        .await
        .unwrap();
    fan.publish(&"end".to_string()).await.unwrap();
    assert_eq!(
        common::bodies_until(&mut got, "end").await,
        ["from fanout", "direct error", "pdf"]
    );
    drop(got);
    for x in [fan.name(), direct.name(), headers.name(), sink.name()] {
        client.delete_exchange(x).await.unwrap();
    }
}

#[tokio::test]
async fn binding_to_a_missing_exchange_is_not_found_and_the_client_keeps_working() {
    let client = common::client().await;
    let events = Exchange::topic(common::unique_name("e2e.src"))
        .declare(&client)
        .await
        .unwrap();
    // A handle to an exchange that was deleted behind our back.
    let gone = Exchange::fanout(common::unique_name("e2e.gone"))
        .declare(&client)
        .await
        .unwrap();
    client.delete_exchange(gone.name()).await.unwrap();
    let err = events.bind_exchange(&gone, &p("#")).await.unwrap_err();
    assert!(matches!(err, DeclareError::NotFound { .. }), "{err:?}");
    // Not recorded, so not replayed after a failover.
    assert!(
        client
            .exchange_bindings(events.name(), gone.name())
            .is_empty()
    );
    // Invalid patterns never reach the broker.
    assert!("a.b*".parse::<TopicPattern>().is_err());
    // The broker answers (no queue is bound: unroutable, mandatory by default).
    assert!(!common::routed(events.publish("still.works", &1).await));
    client.delete_exchange(events.name()).await.unwrap();
}
