//! The baseline: hand-written raw lapin 4, the way a careful lapin user
//! writes it (the lapin README and the RabbitMQ tutorials' style): one
//! connection and channel per role, `basic_publish(..).await` in a loop,
//! confirms pipelined through a `FuturesUnordered`, `Delivery::ack` per
//! message, direct reply-to for RPC.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::measure::{Meter, Result, Sample, drive};
use crate::{Ctx, QueueKind};

/// RabbitMQ's direct reply-to pseudo-queue.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Opens a connection.
pub async fn connect(url: &str, name: &str) -> Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    Ok(Connection::connect(url, props).await?)
}

/// Declares `queue` as `kind` on `ch`.
pub async fn declare(ch: &Channel, queue: &str, kind: QueueKind) -> Result<()> {
    let mut arguments = FieldTable::default();
    let durable = match kind {
        QueueKind::Classic => {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("classic".into()),
            );
            true
        }
        QueueKind::Durable => true,
        QueueKind::Quorum => {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            true
        }
    };
    let options = QueueDeclareOptions {
        durable,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), options, arguments).await?;
    Ok(())
}

fn expect_ack(confirmation: Confirmation) -> Result<()> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        other => Err(format!("publish not confirmed: {other:?}").into()),
    }
}

/// A connection of its own that watches queues (passive declares) and
/// deletes them; used the same way for both columns.
pub struct Observer {
    conn: Connection,
    ch: Channel,
}

impl Observer {
    /// Connects to `url`.
    pub async fn new(url: &str) -> Result<Self> {
        let conn = connect(url, "rabbitkit-bench-observer").await?;
        let ch = conn.create_channel().await?;
        Ok(Self { conn, ch })
    }

    /// Ready messages in `queue`.
    pub async fn count(&self, queue: &str) -> Result<u32> {
        let options = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = self
            .ch
            .queue_declare(queue.into(), options, FieldTable::default())
            .await?;
        Ok(q.message_count())
    }

    /// Polls (every 5 ms) until `queue` holds at least `n` ready messages.
    pub async fn wait_for(&self, queue: &str, n: u64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while u64::from(self.count(queue).await?) < n {
            if Instant::now() > deadline {
                return Err(format!("{queue} never reached {n} messages").into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Declares `queue` as `kind`.
    pub async fn declare(&self, queue: &str, kind: QueueKind) -> Result<()> {
        declare(&self.ch, queue, kind).await
    }

    /// Deletes `queue` (missing is fine).
    pub async fn delete(&self, queue: &str) -> Result<()> {
        self.ch
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await?;
        Ok(())
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self.conn.close(200, "bye".into()).await;
    }
}

/// How the raw column publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// No confirms: `basic_publish(..).await` in a loop.
    NoConfirms,
    /// Confirms, the idiomatic way: `basic_publish(..).await` in turn, the
    /// confirm futures kept in a `FuturesUnordered` of up to this many.
    Confirms(usize),
    /// Confirms, the way rabbitkit drives lapin: up to this many
    /// `basic_publish(..).await?.await` futures run concurrently.
    ConcurrentConfirms(usize),
}

/// Publishes `n` bodies to a fresh `queue` as `mode` says. Measured until
/// the observer sees all `n` in the queue.
pub async fn publish(
    ctx: &Ctx,
    queue: &str,
    kind: QueueKind,
    n: u64,
    mode: Publish,
) -> Result<Sample> {
    let conn = connect(&ctx.url, "bench-raw-publish").await?;
    let ch = conn.create_channel().await?;
    declare(&ch, queue, kind).await?;
    if mode != Publish::NoConfirms {
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
    }
    let body = ctx.body.as_slice();
    let meter = Meter::start(&ctx.pids);
    match mode {
        Publish::NoConfirms => {
            for _ in 0..n {
                ch.basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default(),
                )
                .await?;
            }
        }
        Publish::Confirms(window) => {
            let mut pending = FuturesUnordered::new();
            for _ in 0..n {
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        body,
                        BasicProperties::default(),
                    )
                    .await?;
                pending.push(confirm);
                if pending.len() >= window
                    && let Some(c) = pending.next().await
                {
                    expect_ack(c?)?;
                }
            }
            while let Some(c) = pending.next().await {
                expect_ack(c?)?;
            }
        }
        Publish::ConcurrentConfirms(window) => {
            let ch = &ch;
            let mut pending = FuturesUnordered::new();
            for _ in 0..n {
                pending.push(async move {
                    ch.basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        body,
                        BasicProperties::default(),
                    )
                    .await?
                    .await
                });
                if pending.len() >= window
                    && let Some(c) = pending.next().await
                {
                    expect_ack(c?)?;
                }
            }
            while let Some(c) = pending.next().await {
                expect_ack(c?)?;
            }
        }
    }
    ctx.observer.wait_for(queue, n).await?;
    let sample = meter.finish(n);
    let _ = conn.close(200, "bye".into()).await;
    Ok(sample)
}

/// Fills the (declared) `queue` with `n` persistent `text/plain` bodies,
/// unmeasured: the same filler serves both columns.
pub async fn fill(ctx: &Ctx, queue: &str, n: u64) -> Result<()> {
    let conn = connect(&ctx.url, "bench-filler").await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let props = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_delivery_mode(2);
    let mut pending = FuturesUnordered::new();
    for _ in 0..n {
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &ctx.body,
                props.clone(),
            )
            .await?;
        pending.push(confirm);
        if pending.len() >= 1000
            && let Some(c) = pending.next().await
        {
            expect_ack(c?)?;
        }
    }
    while let Some(c) = pending.next().await {
        expect_ack(c?)?;
    }
    ctx.observer.wait_for(queue, n).await?;
    let _ = conn.close(200, "bye".into()).await;
    Ok(())
}

/// How the raw column consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consume {
    /// The idiomatic loop: `consumer.next().await`, then `delivery.ack(..).await`.
    Inline,
    /// Coalesced acks, as rabbitkit-core does them: one
    /// `ack(multiple: true)` every `prefetch / 2` deliveries (and at the end).
    MultipleAcks,
}

/// Consumes `n` messages from the pre-filled `queue` with `prefetch`,
/// acknowledging each (`delivery.ack(..).await`).
pub async fn consume(
    ctx: &Ctx,
    queue: &str,
    n: u64,
    prefetch: u16,
    mode: Consume,
) -> Result<Sample> {
    let conn = connect(&ctx.url, "bench-raw-consume").await?;
    let ch = conn.create_channel().await?;
    let meter = Meter::start(&ctx.pids);
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "bench-raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    match mode {
        Consume::Inline => {
            for _ in 0..n {
                let delivery = consumer.next().await.ok_or("consumer ended")??;
                delivery.ack(BasicAckOptions::default()).await?;
            }
        }
        Consume::MultipleAcks => {
            let every = u64::from((prefetch / 2).max(1));
            for i in 1..=n {
                let delivery = consumer.next().await.ok_or("consumer ended")??;
                if i % every == 0 || i == n {
                    delivery.ack(BasicAckOptions { multiple: true }).await?;
                }
            }
        }
    }
    let sample = meter.finish(n);
    let _ = conn.close(200, "bye".into()).await;
    Ok(sample)
}

/// An RPC server: echoes each request's body to its `reply_to` with its
/// `correlation_id`, then acks it; one request at a time, `prefetch` taken.
pub struct Server {
    conn: Connection,
    task: JoinHandle<()>,
}

impl Server {
    /// Declares `queue` (classic) and starts serving it.
    pub async fn start(url: &str, queue: &str, prefetch: u16) -> Result<Self> {
        let conn = connect(url, "bench-raw-rpc-server").await?;
        let ch = conn.create_channel().await?;
        declare(&ch, queue, QueueKind::Classic).await?;
        ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let mut requests = ch
            .basic_consume(
                queue.into(),
                "bench-raw-server".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let task = tokio::spawn(async move {
            while let Some(Ok(request)) = requests.next().await {
                let Some(reply_to) = request.properties.reply_to().clone() else {
                    let _ = request.reject(BasicRejectOptions::default()).await;
                    continue;
                };
                let mut props = BasicProperties::default().with_content_type("text/plain".into());
                if let Some(id) = request.properties.correlation_id() {
                    props = props.with_correlation_id(id.clone());
                }
                let sent = ch
                    .basic_publish(
                        "".into(),
                        reply_to,
                        BasicPublishOptions::default(),
                        &request.data,
                        props,
                    )
                    .await;
                if sent.is_err() {
                    break;
                }
                let _ = request.ack(BasicAckOptions::default()).await;
            }
        });
        Ok(Self { conn, task })
    }

    /// Stops serving and closes the connection.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.conn.close(200, "bye".into()).await;
    }
}

fn request_props(id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_reply_to(DIRECT_REPLY_TO.into())
        .with_correlation_id(id.into())
}

/// RPC, one call at a time: publish the request, then read replies from
/// the direct reply-to consumer until the one with its correlation id.
pub async fn rpc_serial(ctx: &Ctx, queue: &str, n: usize, warmup: usize) -> Result<Sample> {
    let conn = connect(&ctx.url, "bench-raw-rpc-client").await?;
    let ch = conn.create_channel().await?;
    let mut replies = ch
        .basic_consume(
            DIRECT_REPLY_TO.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut latencies = Vec::with_capacity(n);
    let mut meter = None;
    for i in 0..warmup + n {
        if i == warmup {
            meter = Some(Meter::start(&ctx.pids));
        }
        let id = i.to_string();
        let t = Instant::now();
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            &ctx.body,
            request_props(&id),
        )
        .await?;
        loop {
            let reply = replies.next().await.ok_or("reply consumer ended")??;
            if reply
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str())
                == Some(id.as_str())
            {
                break;
            }
        }
        if i >= warmup {
            latencies.push(t.elapsed());
        }
    }
    let sample = meter
        .unwrap_or_else(|| Meter::start(&ctx.pids))
        .finish_calls(latencies);
    let _ = conn.close(200, "bye".into()).await;
    Ok(sample)
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<lapin::message::Delivery>>>>;

/// An RPC client for many calls in flight: a task reads the direct
/// reply-to consumer and hands each reply to its caller by correlation id.
struct Client {
    conn: Connection,
    ch: Channel,
    queue: String,
    waiters: Waiters,
    next_id: AtomicU64,
    pump: JoinHandle<()>,
}

impl Client {
    async fn new(url: &str, queue: &str) -> Result<Self> {
        let conn = connect(url, "bench-raw-rpc-client").await?;
        let ch = conn.create_channel().await?;
        let mut replies = ch
            .basic_consume(
                DIRECT_REPLY_TO.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let waiters: Waiters = Arc::default();
        let pump = tokio::spawn({
            let waiters = waiters.clone();
            async move {
                while let Some(Ok(reply)) = replies.next().await {
                    let id = reply
                        .properties
                        .correlation_id()
                        .as_ref()
                        .and_then(|c| c.as_str().parse::<u64>().ok());
                    let waiter = id.and_then(|id| waiters.lock().unwrap().remove(&id));
                    if let Some(tx) = waiter {
                        let _ = tx.send(reply);
                    }
                }
            }
        });
        Ok(Self {
            conn,
            ch,
            queue: queue.to_owned(),
            waiters,
            next_id: AtomicU64::new(0),
            pump,
        })
    }

    async fn call(&self, body: &[u8]) -> Result<Vec<u8>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap().insert(id, tx);
        self.ch
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                BasicPublishOptions::default(),
                body,
                request_props(&id.to_string()),
            )
            .await?;
        Ok(rx.await?.data)
    }

    async fn close(self) {
        self.pump.abort();
        let _ = self.conn.close(200, "bye".into()).await;
    }
}

/// RPC with `in_flight` calls at once.
pub async fn rpc_concurrent(
    ctx: &Ctx,
    queue: &str,
    n: usize,
    warmup: usize,
    in_flight: usize,
) -> Result<Sample> {
    let client = Client::new(&ctx.url, queue).await?;
    let body = ctx.body.as_slice();
    let c = &client;
    let call = move || async move {
        let reply = c.call(body).await?;
        if reply.len() != body.len() {
            return Err("wrong reply".into());
        }
        Ok(())
    };
    drive(warmup, in_flight, call).await?;
    let meter = Meter::start(&ctx.pids);
    let latencies = drive(n, in_flight, call).await?;
    let sample = meter.finish_calls(latencies);
    client.close().await;
    Ok(sample)
}

/// A work queue whose handler awaits a 10 ms timer (standing for I/O),
/// hand-written: prefetch `concurrency`, each delivery handled in a spawned
/// task (a semaphore keeps `concurrency` at once) and acknowledged by it.
/// Consumes `n` from the pre-filled `queue`.
pub async fn work(ctx: &Ctx, queue: &str, n: u64, concurrency: usize) -> Result<Sample> {
    let conn = connect(&ctx.url, "bench-raw-work").await?;
    let ch = conn.create_channel().await?;
    let prefetch = u16::try_from(concurrency).unwrap_or(u16::MAX);
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "bench-raw-work".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let meter = Meter::start(&ctx.pids);
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let delivery = consumer.next().await.ok_or("consumer ended")??;
        let permit = permits.clone().acquire_owned().await?;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let acked = delivery.ack(BasicAckOptions::default()).await;
            drop(permit);
            acked
        }));
    }
    for task in tasks {
        task.await??;
    }
    let sample = meter.finish(n);
    let _ = conn.close(200, "bye".into()).await;
    Ok(sample)
}
