//! The same scenarios through rabbitkit's public API, as its documentation
//! shows it: `Client::publisher` + `Publisher::publish` (raw bytes) or the
//! typed `Queue::send`, `Client::consume` or `WorkQueue::subscribe` with
//! `ack`, `RpcServer::serve` + `RpcClient::call`.

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rabbitkit::{
    Client, ConsumeOptions, DEFAULT_PREFETCH, Options, OutgoingMessage, PublishOptions, Queue,
    RpcClient, RpcServer, WorkQueue,
};

use crate::measure::{Meter, Result, Sample, drive};
use crate::{Ctx, QueueKind};

/// rabbitkit's options for the benchmark: the defaults, except the publish
/// window (set to the scenario's in-flight window).
pub fn options(window: usize) -> Options {
    Options::new()
        .connection_name("rabbitkit-bench")
        .publish_window(window)
}

/// Connects to the whole cluster (node 1 first, so it lands on node 1 like
/// the raw column) and checks where it landed.
pub async fn connect(ctx: &Ctx, window: usize) -> Result<Client> {
    let client = options(window).connect(ctx.addrs.join(",")).await?;
    let port = client.current_endpoint().map(|e| e.port());
    if port != Some(ctx.port) {
        eprintln!(
            "warning: rabbitkit connected to port {port:?}, the raw column to {}",
            ctx.port
        );
    }
    Ok(client)
}

fn queue_builder(queue: &str, kind: QueueKind) -> rabbitkit::QueueBuilder {
    match kind {
        // Durable classic queues, as raw lapin declares them (rabbitkit's
        // default for a named queue is a quorum queue).
        QueueKind::Classic | QueueKind::Durable => Queue::durable(queue).classic(),
        QueueKind::Quorum => Queue::quorum(queue),
    }
}

/// How the rabbitkit column publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishApi {
    /// `Publisher::publish(OutgoingMessage)`: raw bytes, one pooled channel.
    Publisher,
    /// `Publisher::publish_unconfirmed(OutgoingMessage)`: no confirms, each
    /// call awaited in turn (like raw lapin's loop).
    Unconfirmed,
    /// `Queue::send(&String)`: the typed point-to-point API.
    TypedSend,
}

/// Publishes `n` bodies to a fresh `queue` with up to `window` unconfirmed
/// (rabbitkit always publishes with confirms). Measured until the observer
/// sees all `n` in the queue.
pub async fn publish(
    ctx: &Ctx,
    queue: &str,
    kind: QueueKind,
    n: u64,
    window: usize,
    api: PublishApi,
) -> Result<Sample> {
    let client = connect(ctx, window).await?;
    let q = queue_builder(queue, kind).declare(&client).await?;
    let publisher = client.publisher();
    let text = String::from_utf8(ctx.body.clone())?;
    let meter = Meter::start(&ctx.pids);
    match api {
        PublishApi::Unconfirmed => {
            for _ in 0..n {
                publisher
                    .publish_unconfirmed(OutgoingMessage::new("", queue, ctx.body.clone()))
                    .await?;
            }
        }
        PublishApi::Publisher => {
            let mut pending = FuturesUnordered::new();
            for _ in 0..n {
                pending.push(publisher.publish(OutgoingMessage::new("", queue, ctx.body.clone())));
                if pending.len() >= window
                    && let Some(done) = pending.next().await
                {
                    done?;
                }
            }
            while let Some(done) = pending.next().await {
                done?;
            }
        }
        PublishApi::TypedSend => {
            let mut pending = FuturesUnordered::new();
            for _ in 0..n {
                // Transient to a `Classic` queue, as raw lapin publishes
                // (rabbitkit's default is persistent).
                pending.push(q.send_with(
                    &text,
                    PublishOptions::new().persistent(kind != QueueKind::Classic),
                ));
                if pending.len() >= window
                    && let Some(done) = pending.next().await
                {
                    done?;
                }
            }
            while let Some(done) = pending.next().await {
                done?;
            }
        }
    }
    ctx.observer.wait_for(queue, n).await?;
    let sample = meter.finish(n);
    client.close().await;
    Ok(sample)
}

/// Declares the work queue `queue` as a durable classic queue (as raw lapin
/// declares its own; `WorkQueue`'s default is a quorum queue).
pub async fn declare_work_queue(ctx: &Ctx, queue: &str) -> Result<()> {
    let client = connect(ctx, 1).await?;
    WorkQueue::<String>::builder(queue)
        .classic()
        .declare(&client)
        .await?;
    client.close().await;
    Ok(())
}

/// How the rabbitkit column consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumeApi {
    /// `Client::consume` + `Delivery::ack`: rabbitkit-core's stream.
    Core,
    /// `WorkQueue::<String>::subscribe` + `Received::ack`: the typed pattern.
    WorkQueue,
}

/// Consumes `n` messages from the pre-filled work queue `queue` with the
/// work queue's default prefetch, acknowledging each.
pub async fn consume(ctx: &Ctx, queue: &str, n: u64, api: ConsumeApi) -> Result<Sample> {
    let client = connect(ctx, 1).await?;
    let work = WorkQueue::<String>::builder(queue)
        .classic()
        .declare(&client)
        .await?;
    let meter = Meter::start(&ctx.pids);
    match api {
        ConsumeApi::Core => {
            let mut consumer = client
                .consume(queue, ConsumeOptions::new().prefetch(DEFAULT_PREFETCH))
                .await?;
            for _ in 0..n {
                let delivery = consumer.next().await.ok_or("consumer ended")??;
                delivery.ack().await?;
            }
        }
        ConsumeApi::WorkQueue => {
            let mut sub = work.subscribe().await?;
            for _ in 0..n {
                let msg = sub.next().await.ok_or("subscription ended")??;
                msg.ack().await?;
            }
        }
    }
    let sample = meter.finish(n);
    client.close().await;
    Ok(sample)
}

/// A running `RpcServer` (defaults: prefetch 32, one request at a time),
/// echoing `String` requests.
pub struct Server {
    client: Client,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Declares the request queue and serves it.
    pub async fn start(ctx: &Ctx, queue: &str) -> Result<Self> {
        let client = connect(ctx, 1024).await?;
        // A durable classic request queue, as the raw lapin server declares
        // (`RpcServer`'s default is a quorum queue).
        let server = RpcServer::<String, String>::builder(queue)
            .queue(|q| q.classic())
            .declare(&client)
            .await?;
        let task = tokio::spawn(async move {
            let _ = server
                .serve(|request: String| async move { Ok::<_, String>(request) })
                .await;
        });
        Ok(Self { client, task })
    }

    /// Stops serving and closes the connection.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        self.client.close().await;
    }
}

/// RPC through `RpcClient::call`, `in_flight` calls at once (1: one at a time).
pub async fn rpc(
    ctx: &Ctx,
    queue: &str,
    n: usize,
    warmup: usize,
    in_flight: usize,
) -> Result<Sample> {
    let client = connect(ctx, 1024).await?;
    let rpc = RpcClient::<String, String, String>::builder(queue)
        .build(&client)
        .await?;
    let request = String::from_utf8(ctx.body.clone())?;
    let (rpc_ref, req) = (&rpc, &request);
    let call = move || async move {
        let reply = rpc_ref.call(req).await?;
        if reply.len() != req.len() {
            return Err("wrong reply".into());
        }
        Ok(())
    };
    drive(warmup, in_flight, call).await?;
    let meter = Meter::start(&ctx.pids);
    let latencies = drive(n, in_flight, call).await?;
    let sample = meter.finish_calls(latencies);
    drop(rpc);
    client.close().await;
    Ok(sample)
}

/// A work queue whose handler awaits a 10 ms timer (standing for I/O):
/// `WorkQueue::work_until` with prefetch and concurrency `concurrency`,
/// stopped (gracefully) once `n` tasks are done.
pub async fn work(ctx: &Ctx, queue: &str, n: u64, concurrency: usize) -> Result<Sample> {
    let prefetch = u16::try_from(concurrency).unwrap_or(u16::MAX);
    work_mixed(ctx, queue, n, (prefetch, concurrency), None).await
}

/// `WorkQueue` (prefetch `prefetch`, `concurrency` handlers) consuming `n`
/// tasks whose handler awaits 10 ms, except every `slow_every`-th task
/// (counted as started), which awaits 100 × that: one slow task must not
/// hold up the others (issue 25).
pub async fn work_mixed(
    ctx: &Ctx,
    queue: &str,
    n: u64,
    (prefetch, concurrency): (u16, usize),
    slow_every: Option<u64>,
) -> Result<Sample> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;
    let client = connect(ctx, 1).await?;
    let work = WorkQueue::<String>::builder(queue)
        .classic()
        .prefetch(prefetch)
        .concurrency(concurrency)
        .declare(&client)
        .await?;
    let shutdown = rabbitkit::Shutdown::new();
    let started = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let meter = Meter::start(&ctx.pids);
    let report = work
        .work_until(&shutdown, |_task: String| {
            let (started, done, shutdown) = (started.clone(), done.clone(), shutdown.clone());
            async move {
                let i = started.fetch_add(1, Ordering::Relaxed);
                let slow = slow_every.is_some_and(|every| i % every == every / 2);
                let wait = if slow { 1000 } else { 10 };
                tokio::time::sleep(Duration::from_millis(wait)).await;
                if done.fetch_add(1, Ordering::Relaxed) + 1 == n {
                    shutdown.stop(Duration::from_secs(10));
                }
                Ok(())
            }
        })
        .await?;
    let sample = meter.finish(n);
    client.close().await;
    if report.acked < n {
        return Err(format!("only {} of {n} tasks acknowledged", report.acked).into());
    }
    Ok(sample)
}
