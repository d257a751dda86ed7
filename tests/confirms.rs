//! Publisher confirms: every publish gets its own outcome, even with many
//! mandatory publishes in flight on one channel, some of them unroutable.

mod common;

use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use rabbitkit::Queue;
use rabbitkit_core::{OutgoingMessage, PublishError};

/// Mandatory publishes to an existing and a missing queue, interleaved on one
/// channel: each unroutable one fails with `Unroutable`, each routable one is
/// confirmed and really arrives.
#[tokio::test]
async fn each_mandatory_publish_gets_its_own_outcome_on_a_shared_channel() {
    let client = common::client().await;
    let queue = Queue::named(common::unique_name("confirms.routable"))
        .declare(&client)
        .await
        .unwrap();
    let missing = common::unique_name("confirms.nobody");
    let publisher = client.publisher();
    const N: usize = 4000;
    let mut wrong = Vec::new();
    for round in 0..3 {
        let outcomes = join_all((0..N).map(|i| {
            let routable = (i * 7 + round) % 3 != 0;
            let key = if routable {
                queue.name()
            } else {
                missing.as_str()
            };
            let msg =
                OutgoingMessage::new("", key, format!("{round}.{i}").into_bytes()).mandatory(true);
            let publishing = publisher.publish(msg);
            async move { (routable, publishing.await) }
        }))
        .await;
        for (i, (routable, outcome)) in outcomes.into_iter().enumerate() {
            match (routable, outcome) {
                (true, Ok(_)) | (false, Err(PublishError::Unroutable { .. })) => {}
                (routable, other) => {
                    wrong.push(format!("#{round}.{i} routable={routable}: {other:?}"))
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} publishes got another's outcome, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(4)]
    );
    let expected = (0..3)
        .map(|round| (0..N).filter(|i| (i * 7 + round) % 3 != 0).count())
        .sum::<usize>();
    let mut sub = queue.subscribe::<String>().await.unwrap();
    let mut arrived = 0;
    while arrived < expected {
        match tokio::time::timeout(Duration::from_secs(20), sub.next()).await {
            Ok(Some(Ok(delivery))) => {
                arrived += 1;
                delivery.ack().await.unwrap();
            }
            other => panic!("after {arrived} of {expected} deliveries: {other:?}"),
        }
    }
    drop(sub);
    queue.delete().await.unwrap();
}

/// An application that gives its own `message_id`s may give two publishes
/// the same one: each still gets its own outcome (a return goes to the
/// publish that was sent where it was refused), and an unroutable one is
/// never reported confirmed.
#[tokio::test]
async fn publishes_sharing_a_message_id_get_their_own_outcomes() {
    let client = common::client().await;
    let queue = Queue::named(common::unique_name("confirms.same.id"))
        .declare(&client)
        .await
        .unwrap();
    let missing = common::unique_name("confirms.same.id.nobody");
    let publisher = client.publisher();
    let properties = |i: usize| {
        rabbitkit_core::BasicProperties::default().with_message_id(format!("order-{i}").into())
    };
    let outcomes = join_all((0..500).flat_map(|i| {
        // The same id twice: first routable, then unroutable (twice, to the
        // same missing queue, for every fifth).
        let routable = OutgoingMessage::new("", queue.name(), b"r".to_vec())
            .properties(properties(i))
            .mandatory(true);
        let lost = OutgoingMessage::new("", missing.as_str(), b"u".to_vec())
            .properties(properties(i))
            .mandatory(true);
        let mut sends = vec![
            (true, publisher.publish(routable)),
            (false, publisher.publish(lost)),
        ];
        if i % 5 == 0 {
            let again = OutgoingMessage::new("", missing.as_str(), b"u".to_vec())
                .properties(properties(i))
                .mandatory(true);
            sends.push((false, publisher.publish(again)));
        }
        sends
            .into_iter()
            .map(|(routable, f)| async move { (routable, f.await) })
    }))
    .await;
    let wrong: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, (routable, outcome))| {
            !matches!(
                (routable, outcome),
                (true, Ok(_)) | (false, Err(PublishError::Unroutable { .. }))
            )
        })
        .map(|(n, (routable, outcome))| format!("#{n} routable={routable}: {outcome:?}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} publishes got another's outcome, e.g. {:?}",
        wrong.len(),
        outcomes.len(),
        &wrong[..wrong.len().min(4)]
    );
    assert_eq!(queue.info().await.unwrap().messages, 500);
    queue.delete().await.unwrap();
}

/// Publishes given up on (here: each wrapped in a short timeout) before their
/// confirm arrived leave no confirm behind to pile up on the channel, and the
/// channel goes on confirming later publishes.
#[tokio::test]
async fn cancelled_publishes_leave_no_confirm_behind() {
    let client = common::client().await;
    let queue = Queue::quorum(common::unique_name("confirms.cancelled"))
        .declare(&client)
        .await
        .unwrap();
    let publisher = client.publisher();
    let cancelled = join_all((0..500).map(|i| {
        let msg = OutgoingMessage::new("", queue.name(), format!("{i}").into_bytes());
        tokio::time::timeout(Duration::from_millis(2), publisher.publish(msg))
    }))
    .await;
    let gave_up = cancelled.iter().filter(|r| r.is_err()).count();
    assert!(
        gave_up > 0,
        "no publish was cancelled: the test proves nothing"
    );
    // A later publish on the same channel is confirmed once every earlier
    // confirm has come in.
    publisher
        .publish(OutgoingMessage::new("", queue.name(), b"last".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        rabbitkit_core::abandoned_confirms(),
        0,
        "{gave_up} publishes were cancelled"
    );
    queue.delete().await.unwrap();
}

/// The mandatory default (issue 30): a publish no queue takes fails with
/// `Unroutable` to a direct, topic or headers exchange (and a queue), and
/// is dropped by a fanout exchange, as the tutorials' `emit_log` expects;
/// `PublishOptions::mandatory` turns either way round.
#[tokio::test]
async fn a_publish_is_mandatory_unless_it_goes_to_a_fanout_exchange() {
    use rabbitkit::{Exchange, Headers, PublishOptions};
    let client = common::client().await;
    let name = common::unique_name("confirms.default");
    let body = "order 7".to_string();
    let dropped = || PublishOptions::new().mandatory(false);
    let refused = |r: Result<rabbitkit::Confirmed, rabbitkit::SendError>| match r {
        Err(rabbitkit::SendError::Publish(PublishError::Unroutable { .. })) => true,
        other => panic!("expected Unroutable, got {other:?}"),
    };

    let direct = Exchange::direct(format!("{name}.direct"))
        .declare(&client)
        .await
        .unwrap();
    assert!(refused(direct.publish("order.placed", &body).await));
    direct
        .publish_with("order.placed", &body, dropped())
        .await
        .unwrap();

    let topic = Exchange::topic(format!("{name}.topic"))
        .declare(&client)
        .await
        .unwrap();
    assert!(refused(topic.publish("order.placed.eu", &body).await));
    topic
        .publish_with("order.placed.eu", &body, dropped())
        .await
        .unwrap();

    let headers = Exchange::headers(format!("{name}.headers"))
        .declare(&client)
        .await
        .unwrap();
    let eu = Headers::new().with("region", "eu");
    assert!(refused(headers.publish(&eu, &body).await));
    headers.publish_with(&eu, &body, dropped()).await.unwrap();

    let fanout = Exchange::fanout(format!("{name}.fanout"))
        .declare(&client)
        .await
        .unwrap();
    fanout.publish(&body).await.unwrap();
    assert!(refused(
        fanout
            .publish_with(&body, PublishOptions::new().mandatory(true))
            .await
    ));

    // Once a queue is bound, the same publish is confirmed and arrives.
    let queue = Queue::named(name.as_str()).declare(&client).await.unwrap();
    topic
        .bind(&queue, &"order.#".parse().unwrap())
        .await
        .unwrap();
    let mut sub = queue.subscribe::<String>().await.unwrap();
    topic.publish("order.placed.eu", &body).await.unwrap();
    assert_eq!(common::next_body(&mut sub).await, body);

    drop(sub);
    client.delete_queue(&name).await.unwrap();
    for x in [direct.name(), topic.name(), headers.name(), fanout.name()] {
        client.delete_exchange(x).await.unwrap();
    }
    client.close().await;
}
