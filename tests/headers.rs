//! Headers: routing on header values, all or any of them, typed.

mod common;

use rabbitkit::{Exchange, HeaderValue, Headers, HeadersMatch, PublishOptions, Queue};

#[tokio::test]
async fn routes_on_all_or_any_headers() {
    let client = common::client().await;
    let x = Exchange::headers(common::unique_name("headers_logs"))
        .declare(&client)
        .await
        .unwrap();
    let end = HeadersMatch::any().header("end", true);
    let q_all = Queue::temporary().declare(&client).await.unwrap();
    x.bind(
        &q_all,
        &HeadersMatch::all()
            .header("format", "pdf")
            .header("type", "report"),
    )
    .await
    .unwrap();
    x.bind(&q_all, &end).await.unwrap();
    let q_any = Queue::temporary().declare(&client).await.unwrap();
    x.bind(
        &q_any,
        &HeadersMatch::any()
            .header("format", "pdf")
            .header("pages", 2),
    )
    .await
    .unwrap();
    x.bind(&q_any, &end).await.unwrap();
    let mut all = q_all.subscribe::<String>().await.unwrap();
    let mut any = q_any.subscribe::<String>().await.unwrap();

    let mut unrouted = Vec::new();
    for (headers, body) in [
        (
            Headers::new().with("format", "pdf").with("type", "report"),
            "pdf report",
        ),
        (
            Headers::new().with("format", "pdf").with("type", "log"),
            "pdf log",
        ),
        (
            Headers::new().with("format", "zip").with("pages", 2),
            "zip 2 pages",
        ),
        (
            Headers::new().with("format", "zip").with("pages", "2"),
            "pages as text",
        ),
        (Headers::new().with("format", "zip"), "zip"),
        (Headers::new().with("end", true), "end"),
    ] {
        if !common::routed(x.publish(&headers, &body.to_string()).await) {
            unrouted.push(body);
        }
    }
    // Mandatory by default: what no binding matches is refused, not dropped.
    assert_eq!(unrouted, ["pages as text", "zip"]);
    assert_eq!(common::bodies_until(&mut all, "end").await, ["pdf report"]);
    assert_eq!(
        common::bodies_until(&mut any, "end").await,
        ["pdf report", "pdf log", "zip 2 pages"],
        "a header typed as text does not match an integer binding"
    );
    drop((all, any));
    client.delete_exchange(x.name()).await.unwrap();
}

#[tokio::test]
async fn empty_and_reserved_matches_are_refused() {
    let client = common::client().await;
    let x = Exchange::headers(common::unique_name("headers.bad"))
        .declare(&client)
        .await
        .unwrap();
    let q = Queue::temporary().declare(&client).await.unwrap();
    assert!(matches!(
        x.bind(&q, &HeadersMatch::all()).await,
        Err(rabbitkit::DeclareError::Invalid { .. })
    ));
    assert!(
        x.bind(&q, &HeadersMatch::all().header("x-match", "any"))
            .await
            .is_err()
    );
    q.delete().await.unwrap();
    client.delete_exchange(x.name()).await.unwrap();
}

#[tokio::test]
async fn with_x_modes_compare_x_headers_that_all_and_any_ignore() {
    let client = common::client().await;
    let x = Exchange::headers(common::unique_name("headers.with_x"))
        .declare(&client)
        .await
        .unwrap();
    let end = HeadersMatch::any().header("end", true);
    // `all` cannot name an `x-` header (the broker would ignore it) ...
    let q = Queue::temporary().declare(&client).await.unwrap();
    assert!(matches!(
        x.bind(&q, &HeadersMatch::all().header("x-tenant", "acme"))
            .await,
        Err(rabbitkit::DeclareError::Invalid { .. })
    ));
    assert!(matches!(
        x.bind(&q, &HeadersMatch::all_with_x().header("x-match", "any"))
            .await,
        Err(rabbitkit::DeclareError::Invalid { .. })
    ));
    // ... `all-with-x` compares it.
    x.bind(
        &q,
        &HeadersMatch::all_with_x()
            .header("x-tenant", "acme")
            .header("format", "pdf"),
    )
    .await
    .unwrap();
    x.bind(&q, &end).await.unwrap();
    let q_any = Queue::temporary().declare(&client).await.unwrap();
    x.bind(
        &q_any,
        &HeadersMatch::any_with_x()
            .header("x-tenant", "acme")
            .header("x-region", "eu"),
    )
    .await
    .unwrap();
    x.bind(&q_any, &end).await.unwrap();
    let mut all = q.subscribe::<String>().await.unwrap();
    let mut any = q_any.subscribe::<String>().await.unwrap();
    let mut unrouted = Vec::new();
    for (headers, body) in [
        (
            Headers::new()
                .with("x-tenant", "acme")
                .with("format", "pdf"),
            "acme pdf",
        ),
        (
            Headers::new()
                .with("x-tenant", "other")
                .with("format", "pdf"),
            "other pdf",
        ),
        (Headers::new().with("format", "pdf"), "no tenant"),
        (Headers::new().with("x-region", "eu"), "eu"),
        (Headers::new().with("end", true), "end"),
    ] {
        if !common::routed(x.publish(&headers, &body.to_string()).await) {
            unrouted.push(body);
        }
    }
    assert_eq!(unrouted, ["other pdf", "no tenant"]);
    assert_eq!(common::bodies_until(&mut all, "end").await, ["acme pdf"]);
    assert_eq!(
        common::bodies_until(&mut any, "end").await,
        ["acme pdf", "eu"]
    );
    drop((all, any));
    client.delete_exchange(x.name()).await.unwrap();
}

#[tokio::test]
async fn publish_headers_win_over_the_options_headers() {
    // `publish_with(&headers, ..)` routes by `headers`; the options' own
    // headers travel too, and a header set in both takes the route's value.
    let client = common::client().await;
    let x = Exchange::headers(common::unique_name("headers.options"))
        .declare(&client)
        .await
        .unwrap();
    let pdf_or_end = HeadersMatch::any()
        .header("format", "pdf")
        .header("end", true);
    let mut sub = x.subscribe::<String>(&pdf_or_end).await.unwrap();
    let options = || {
        PublishOptions::new()
            .header("format", "txt")
            .header("origin", "app")
    };
    let pdf = Headers::new().with("format", "pdf");
    x.publish_with(&pdf, &"pdf".to_string(), options())
        .await
        .unwrap();
    let txt = Headers::new().with("format", "txt");
    let routed_as_pdf = PublishOptions::new().header("format", "pdf");
    // Routed by the route's `format: txt`, which nothing binds: unroutable
    // (mandatory by default), not delivered as a pdf.
    assert!(!common::routed(
        x.publish_with(&txt, &"txt".to_string(), routed_as_pdf)
            .await
    ));
    x.publish(&Headers::new().with("end", true), &"end".to_string())
        .await
        .unwrap();

    let msg = common::next_received(&mut sub).await;
    assert_eq!(msg.body, "pdf");
    let headers = msg.headers();
    assert_eq!(headers.get("format"), Some(&HeaderValue::from("pdf")));
    assert_eq!(headers.get("origin"), Some(&HeaderValue::from("app")));
    msg.ack().await.unwrap();
    assert_eq!(
        common::bodies_until(&mut sub, "end").await,
        Vec::<String>::new(),
        "routed by the publish's headers, not the options'"
    );
    drop(sub);
    client.delete_exchange(x.name()).await.unwrap();
}
