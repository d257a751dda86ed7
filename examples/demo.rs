//! A short tour of rabbitkit's seven patterns against a real cluster.
//!
//! Run it (starts the local 3-node cluster first if needed):
//!
//! ```text
//! cargo xtask demo
//! ```
//!
//! or, with a broker of your own: `AMQP_ADDR=amqp://user:pass@host:5672/%2f cargo run --example demo`.
//! Everything it declares is temporary or deleted at the end.
//!
//! Needs a broker: `docker run -d --name rabbitmq -p 5672:5672 rabbitmq:4-management`,
//! or the local cluster (`cargo xtask broker up`); `AMQP_ADDR` names another.

use std::time::Duration;

use futures::StreamExt;
use rabbitkit::{
    Exchange, Headers, HeadersMatch, Options, Queue, Report, RpcClient, RpcServer, TopicPattern,
    WorkQueue,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn next<T: serde::de::DeserializeOwned>(
    sub: &mut rabbitkit::Subscription<T>,
) -> Result<T, Error> {
    let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await?
        .ok_or("subscription ended")??;
    msg.ack().await?;
    Ok(msg.body)
}

#[tokio::main]
async fn main() -> Result<(), Report> {
    let client = Options::new()
        .connection_name("rabbitkit-demo")
        .connect_env_or("amqp://127.0.0.1:5672/%2f")
        .await?;
    println!(
        "connected to {}",
        client
            .current_endpoint()
            .map(|e| e.to_string())
            .unwrap_or_default()
    );
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();

    // 1. Point-to-point.
    let hello = Queue::named(format!("demo.hello.{tag}"))
        .declare(&client)
        .await?;
    let mut sub = hello.subscribe::<String>().await?;
    hello.send(&"Hello World!".to_string()).await?;
    println!(
        "1. point-to-point: sent 'Hello World!' to {}, received {:?}",
        hello.name(),
        next(&mut sub).await?
    );
    drop(sub);
    hello.delete().await?;

    // 2. Work queue: two workers share five tasks.
    let tasks = WorkQueue::<u32>::builder(format!("demo.tasks.{tag}"))
        .prefetch(1)
        .declare(&client)
        .await?;
    for n in 1..=5 {
        tasks.submit(&n).await?;
    }
    let done = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for w in 1..=2 {
        let (tasks, done) = (tasks.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            tasks
                .work(move |n: u32| {
                    let done = done.clone();
                    async move {
                        done.lock()
                            .unwrap()
                            .push(format!("worker {w} did task {n}"));
                        Ok(())
                    }
                })
                .await
        }));
    }
    while done.lock().unwrap().len() < 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("2. work queue: {}", done.lock().unwrap().join(", "));
    workers.iter().for_each(|w| w.abort());
    tasks.queue().clone().delete().await?;

    // 3. Publish/subscribe.
    let logs = Exchange::fanout(format!("demo.logs.{tag}"))
        .auto_delete(true)
        .declare(&client)
        .await?;
    let (mut a, mut b) = (
        logs.subscribe::<String>().await?,
        logs.subscribe::<String>().await?,
    );
    logs.publish(&"system booted".to_string()).await?;
    println!(
        "3. fanout: both subscribers got {:?} and {:?}",
        next(&mut a).await?,
        next(&mut b).await?
    );

    // 4. Routing.
    let direct = Exchange::direct(format!("demo.direct.{tag}"))
        .auto_delete(true)
        .declare(&client)
        .await?;
    let mut errors = direct.subscribe::<String>(&["error"]).await?;
    // Mandatory by default: a key nobody bound is an error, not a silent loss.
    let info = direct.publish("info", &"just saying".to_string()).await;
    assert!(info.is_err_and(|e| e.is_unroutable()));
    direct.publish("error", &"disk full".to_string()).await?;
    println!(
        "4. direct: the 'error' subscriber got only {:?} ('info' was refused: unroutable)",
        next(&mut errors).await?
    );

    // 5. Topics.
    let topics = Exchange::topic(format!("demo.topic.{tag}"))
        .auto_delete(true)
        .declare(&client)
        .await?;
    let mut kern = topics
        .subscribe::<String>(&[TopicPattern::new("kern.*")?])
        .await?;
    let unbound = topics.publish("user.info", &"login".to_string()).await;
    assert!(unbound.is_err_and(|e| e.is_unroutable()));
    topics
        .publish("kern.critical", &"kernel panic".to_string())
        .await?;
    println!("5. topic: 'kern.*' got {:?}", next(&mut kern).await?);

    // 6. Headers.
    let headers = Exchange::headers(format!("demo.headers.{tag}"))
        .auto_delete(true)
        .declare(&client)
        .await?;
    let mut pdfs = headers
        .subscribe::<String>(&HeadersMatch::all().header("format", "pdf"))
        .await?;
    let zip = headers
        .publish(
            &Headers::new().with("format", "zip"),
            &"archive.zip".to_string(),
        )
        .await;
    assert!(zip.is_err_and(|e| e.is_unroutable()));
    headers
        .publish(
            &Headers::new().with("format", "pdf"),
            &"report.pdf".to_string(),
        )
        .await?;
    println!("6. headers: format=pdf got {:?}", next(&mut pdfs).await?);

    // 7. RPC.
    let server = RpcServer::<u64, u64>::builder(format!("demo.rpc.{tag}"))
        .declare(&client)
        .await?;
    let rpc_queue = server.queue().clone();
    let serving = tokio::spawn(async move {
        server
            .serve(|n: u64| async move { Ok((1..=n).product::<u64>()) })
            .await
    });
    let rpc = RpcClient::<u64, u64>::builder(rpc_queue.name())
        .build(&client)
        .await?;
    println!("7. rpc: 10! = {}", rpc.call(&10).await?);
    serving.abort();
    rpc_queue.delete().await?;

    client.close().await;
    println!("done");
    Ok(())
}
