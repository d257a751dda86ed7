//! Topics: routing by pattern, with `*` for one word and `#` for any number.

mod common;

use rabbitkit::{Exchange, SendError, TopicPattern};

fn p(s: &str) -> TopicPattern {
    s.parse().unwrap()
}

#[tokio::test]
async fn routes_by_pattern_as_in_the_tutorial() {
    let client = common::client().await;
    let x = Exchange::topic(common::unique_name("topic_logs"))
        .declare(&client)
        .await
        .unwrap();
    let mut q1 = x
        .subscribe::<String>(&[p("*.orange.*"), p("end")])
        .await
        .unwrap();
    let mut q2 = x
        .subscribe::<String>(&[p("*.*.rabbit"), p("lazy.#"), p("end")])
        .await
        .unwrap();
    let mut unrouted = Vec::new();
    for key in [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "quick.orange.fox",
        "lazy.brown.fox",
        "lazy.pink.rabbit",
        "quick.brown.fox",
        "orange",
        "quick.orange.new.rabbit",
        "lazy.orange.new.rabbit",
        "lazy",
    ] {
        if !common::routed(x.publish(key, &key.to_string()).await) {
            unrouted.push(key);
        }
    }
    // Mandatory by default: what no pattern matches is refused, not dropped.
    assert_eq!(
        unrouted,
        ["quick.brown.fox", "orange", "quick.orange.new.rabbit"]
    );
    x.publish("end", &"end".to_string()).await.unwrap();
    assert_eq!(
        common::bodies_until(&mut q1, "end").await,
        [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "quick.orange.fox"
        ]
    );
    assert_eq!(
        common::bodies_until(&mut q2, "end").await,
        [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "lazy.brown.fox",
            "lazy.pink.rabbit", // once, although it matches two bindings
            "lazy.orange.new.rabbit",
            "lazy"
        ]
    );
    drop((q1, q2));
    client.delete_exchange(x.name()).await.unwrap();
}

#[tokio::test]
async fn invalid_patterns_and_wildcard_keys_are_refused() {
    assert!(matches!(
        "a..b".parse::<TopicPattern>(),
        Err(ref e) if e.what == "topic pattern" && e.value == "a..b"
    ));
    assert!("kern*".parse::<TopicPattern>().is_err());
    let client = common::client().await;
    let x = Exchange::topic(common::unique_name("topic.bad"))
        .declare(&client)
        .await
        .unwrap();
    assert!(matches!(
        x.publish("kern.*", &1).await,
        Err(SendError::Invalid(ref e)) if e.what == "routing key"
    ));
    client.delete_exchange(x.name()).await.unwrap();
}

/// A topic pattern with more than two `#` is refused before the network:
/// RabbitMQ 4.3.5+ refuses such a binding (matching many `#` costs the
/// broker time exponential in their number). What the broker does with
/// it, sent raw, is printed for each version.
#[tokio::test]
async fn a_pattern_with_more_than_two_hashes_is_refused_before_the_network() {
    let err = "#.a.#.b.#".parse::<TopicPattern>().unwrap_err();
    assert_eq!(err.what, "topic pattern");
    assert!(err.reason.contains("two '#'"), "{err}");
    assert!("#.a.#".parse::<TopicPattern>().is_ok());
    // Sent anyway, through the core, past the check.
    let client = common::client().await;
    let x = Exchange::topic(common::unique_name("topic.hashes"))
        .declare(&client)
        .await
        .unwrap();
    let q = rabbitkit::Queue::temporary()
        .declare(&client)
        .await
        .unwrap();
    let raw = client
        .declare(rabbitkit::core::Declaration::Binding(
            rabbitkit::core::BindingSpec {
                queue: q.name().into(),
                exchange: x.name().into(),
                routing_key: "#.a.#.b.#".into(),
                arguments: Default::default(),
            },
        ))
        .await;
    let server = client.server().unwrap();
    eprintln!(
        "RabbitMQ {}: binding #.a.#.b.# sent raw: {raw:?}",
        server.version_text
    );
    if server
        .version
        .is_some_and(|v| v >= rabbitkit::Version::new(4, 3, 5))
    {
        assert!(raw.is_err(), "RabbitMQ {} took it", server.version_text);
    }
    client.delete_exchange(x.name()).await.unwrap();
}
