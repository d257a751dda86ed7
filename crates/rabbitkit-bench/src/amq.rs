//! The amqprs column: the same scenarios with amqprs 2, the other Rust
//! AMQP 0-9-1 client, driven the way its documentation shows and well:
//! publisher confirms tracked by its own [`ChannelCallback`]
//! (`publish_ack` / `publish_nack`) with a window of permits, consumers read
//! from `basic_consume_rx` and acknowledged with `basic_ack`, direct
//! reply-to for RPC. amqprs writes frames from a task of its own, so
//! `basic_publish` and `basic_ack` return once the frame is queued for it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    ConfirmSelectArguments, QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, FieldTable, FieldValue, Nack, Return};
use async_trait::async_trait;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;

use crate::measure::{Meter, Result, Sample, drive};
use crate::{Ctx, QueueKind};

/// RabbitMQ's direct reply-to pseudo-queue.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// Splits `amqp://user:pass@host:port/vhost` (the local cluster's URLs)
/// into amqprs's connection arguments.
fn arguments(url: &str, name: &str) -> Result<OpenConnectionArguments> {
    let rest = url
        .strip_prefix("amqp://")
        .ok_or("the amqprs column speaks plain amqp:// only")?;
    let (auth, rest) = rest.rsplit_once('@').unwrap_or(("guest:guest", rest));
    let (user, pass) = auth.split_once(':').unwrap_or((auth, ""));
    let (hostport, vhost) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5672"));
    let vhost = match vhost {
        "" | "%2f" | "%2F" => "/".to_owned(),
        v => v.replace("%2f", "/").replace("%2F", "/"),
    };
    let mut args = OpenConnectionArguments::new(host, port.parse()?, user, pass);
    args.virtual_host(&vhost).connection_name(name);
    Ok(args)
}

/// Opens a connection.
pub async fn connect(url: &str, name: &str) -> Result<Connection> {
    Ok(Connection::open(&arguments(url, name)?).await?)
}

/// The broker's version as node `url` reports it (`server-properties`).
pub async fn server_version(url: &str) -> Result<String> {
    let conn = connect(url, "bench-amqprs-version").await?;
    let version = conn.server_properties().version().to_owned();
    close(conn).await;
    Ok(version)
}

/// Declares `queue` as `kind` on `ch` (the same arguments as raw lapin).
pub async fn declare(ch: &Channel, queue: &str, kind: QueueKind) -> Result<()> {
    let mut arguments = FieldTable::new();
    let queue_type = match kind {
        QueueKind::Classic => Some("classic"),
        QueueKind::Durable => None,
        QueueKind::Quorum => Some("quorum"),
    };
    if let Some(t) = queue_type {
        arguments.insert("x-queue-type".try_into()?, FieldValue::from(t));
    }
    ch.queue_declare(
        QueueDeclareArguments::durable_client_named(queue)
            .arguments(arguments)
            .finish(),
    )
    .await?;
    Ok(())
}

async fn close(conn: Connection) {
    let _ = conn.close().await;
}

/// Publisher confirms, tracked the amqprs way: a [`ChannelCallback`] whose
/// `publish_ack` / `publish_nack` give back one permit of the window per
/// message confirmed (delivery tags count publishes from 1; `multiple`
/// confirms every tag up to it not confirmed yet).
struct Confirms {
    window: Arc<Semaphore>,
    nacked: Arc<AtomicU64>,
    /// Every tag up to this one is confirmed.
    floor: u64,
    /// Tags above `floor` confirmed one by one.
    above: BTreeSet<u64>,
}

impl Confirms {
    fn confirm(&mut self, tag: u64, multiple: bool) -> u64 {
        let released = if multiple {
            let singles = self.above.range(..=tag).count() as u64;
            self.above = self.above.split_off(&(tag + 1));
            let n = tag.saturating_sub(self.floor).saturating_sub(singles);
            self.floor = self.floor.max(tag);
            n
        } else if tag > self.floor && self.above.insert(tag) {
            1
        } else {
            0
        };
        while self.above.remove(&(self.floor + 1)) {
            self.floor += 1;
        }
        released
    }
}

#[async_trait]
impl ChannelCallback for Confirms {
    async fn close(
        &mut self,
        _: &Channel,
        _: CloseChannel,
    ) -> std::result::Result<(), amqprs::error::Error> {
        // Nothing more will be confirmed: fail whoever waits for a permit.
        self.window.close();
        Ok(())
    }

    async fn cancel(
        &mut self,
        _: &Channel,
        _: Cancel,
    ) -> std::result::Result<(), amqprs::error::Error> {
        Ok(())
    }

    async fn flow(
        &mut self,
        _: &Channel,
        active: bool,
    ) -> std::result::Result<bool, amqprs::error::Error> {
        Ok(active)
    }

    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        let n = self.confirm(ack.delivery_tag(), ack.mutiple());
        self.window.add_permits(n as usize);
    }

    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        let n = self.confirm(nack.delivery_tag(), nack.multiple());
        self.nacked.fetch_add(n, Ordering::Relaxed);
        self.window.add_permits(n as usize);
    }

    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {}
}

/// Publishes `n` bodies to a fresh `queue`: without confirms (`window`
/// `None`), or with up to `window` unconfirmed. Measured until the observer
/// sees all `n` in the queue.
pub async fn publish(
    ctx: &Ctx,
    queue: &str,
    kind: QueueKind,
    n: u64,
    window: Option<usize>,
) -> Result<Sample> {
    let conn = connect(&ctx.url, "bench-amqprs-publish").await?;
    let ch = conn.open_channel(None).await?;
    declare(&ch, queue, kind).await?;
    let permits = Arc::new(Semaphore::new(window.unwrap_or(0)));
    let nacked = Arc::new(AtomicU64::new(0));
    if window.is_some() {
        ch.register_callback(Confirms {
            window: permits.clone(),
            nacked: nacked.clone(),
            floor: 0,
            above: BTreeSet::new(),
        })
        .await?;
        ch.confirm_select(ConfirmSelectArguments::default()).await?;
    }
    let args = BasicPublishArguments::new("", queue);
    let props = BasicProperties::default();
    let meter = Meter::start(&ctx.pids);
    for _ in 0..n {
        if window.is_some() {
            permits.acquire().await?.forget();
        }
        ch.basic_publish(props.clone(), ctx.body.clone(), args.clone())
            .await?;
    }
    if let Some(window) = window {
        // Every permit back: every publish confirmed.
        permits.acquire_many(u32::try_from(window)?).await?.forget();
        let nacked = nacked.load(Ordering::Relaxed);
        if nacked > 0 {
            return Err(format!("{nacked} publishes nacked").into());
        }
    }
    ctx.observer.wait_for(queue, n).await?;
    let sample = meter.finish(n);
    close(conn).await;
    Ok(sample)
}

/// Consumes `n` messages from the pre-filled `queue` with `prefetch`,
/// acknowledging each with `basic_ack`.
pub async fn consume(ctx: &Ctx, queue: &str, n: u64, prefetch: u16) -> Result<Sample> {
    let conn = connect(&ctx.url, "bench-amqprs-consume").await?;
    let ch = conn.open_channel(None).await?;
    let meter = Meter::start(&ctx.pids);
    ch.basic_qos(BasicQosArguments::new(0, prefetch, false))
        .await?;
    let (_, mut rx) = ch
        .basic_consume_rx(
            BasicConsumeArguments::new(queue, "bench-amqprs")
                .manual_ack(true)
                .finish(),
        )
        .await?;
    for _ in 0..n {
        let msg = rx.recv().await.ok_or("consumer ended")?;
        let tag = msg.deliver.ok_or("no deliver")?.delivery_tag();
        ch.basic_ack(BasicAckArguments::new(tag, false)).await?;
    }
    let sample = meter.finish(n);
    close(conn).await;
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
        let conn = connect(url, "bench-amqprs-rpc-server").await?;
        let ch = conn.open_channel(None).await?;
        declare(&ch, queue, QueueKind::Classic).await?;
        ch.basic_qos(BasicQosArguments::new(0, prefetch, false))
            .await?;
        let (_, mut requests) = ch
            .basic_consume_rx(
                BasicConsumeArguments::new(queue, "bench-amqprs-server")
                    .manual_ack(true)
                    .finish(),
            )
            .await?;
        let task = tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                let (Some(deliver), Some(props), Some(body)) =
                    (request.deliver, request.basic_properties, request.content)
                else {
                    break;
                };
                let Some(reply_to) = props.reply_to() else {
                    continue;
                };
                let mut reply = BasicProperties::default();
                reply.with_content_type("text/plain");
                if let Some(id) = props.correlation_id() {
                    reply.with_correlation_id(id);
                }
                let sent = ch
                    .basic_publish(reply, body, BasicPublishArguments::new("", reply_to))
                    .await;
                if sent.is_err() {
                    break;
                }
                let _ = ch
                    .basic_ack(BasicAckArguments::new(deliver.delivery_tag(), false))
                    .await;
            }
        });
        Ok(Self { conn, task })
    }

    /// Stops serving and closes the connection.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        close(self.conn).await;
    }
}

fn request_props(id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("text/plain")
        .with_reply_to(DIRECT_REPLY_TO)
        .with_correlation_id(id)
        .finish()
}

async fn reply_consumer(
    ch: &Channel,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<amqprs::channel::ConsumerMessage>> {
    let (_, rx) = ch
        .basic_consume_rx(
            BasicConsumeArguments::new(DIRECT_REPLY_TO, "")
                .manual_ack(false)
                .finish(),
        )
        .await?;
    Ok(rx)
}

/// RPC, one call at a time: publish the request, then read replies from
/// the direct reply-to consumer until the one with its correlation id.
pub async fn rpc_serial(ctx: &Ctx, queue: &str, n: usize, warmup: usize) -> Result<Sample> {
    let conn = connect(&ctx.url, "bench-amqprs-rpc-client").await?;
    let ch = conn.open_channel(None).await?;
    let mut replies = reply_consumer(&ch).await?;
    let args = BasicPublishArguments::new("", queue);
    let mut latencies = Vec::with_capacity(n);
    let mut meter = None;
    for i in 0..warmup + n {
        if i == warmup {
            meter = Some(Meter::start(&ctx.pids));
        }
        let id = i.to_string();
        let t = Instant::now();
        ch.basic_publish(request_props(&id), ctx.body.clone(), args.clone())
            .await?;
        loop {
            let reply = replies.recv().await.ok_or("reply consumer ended")?;
            let matches = reply
                .basic_properties
                .as_ref()
                .and_then(|p| p.correlation_id())
                .is_some_and(|c| *c == id);
            if matches {
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
    close(conn).await;
    Ok(sample)
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>;

/// An RPC client for many calls in flight: a task reads the direct
/// reply-to consumer and hands each reply to its caller by correlation id
/// (the same design as the raw lapin client).
struct Client {
    conn: Connection,
    ch: Channel,
    args: BasicPublishArguments,
    waiters: Waiters,
    next_id: AtomicU64,
    pump: JoinHandle<()>,
}

impl Client {
    async fn new(url: &str, queue: &str) -> Result<Self> {
        let conn = connect(url, "bench-amqprs-rpc-client").await?;
        let ch = conn.open_channel(None).await?;
        let mut replies = reply_consumer(&ch).await?;
        let waiters: Waiters = Arc::default();
        let pump = tokio::spawn({
            let waiters = waiters.clone();
            async move {
                while let Some(reply) = replies.recv().await {
                    let id = reply
                        .basic_properties
                        .as_ref()
                        .and_then(|p| p.correlation_id())
                        .and_then(|c| c.parse::<u64>().ok());
                    let waiter = id.and_then(|id| waiters.lock().unwrap().remove(&id));
                    if let (Some(tx), Some(body)) = (waiter, reply.content) {
                        let _ = tx.send(body);
                    }
                }
            }
        });
        Ok(Self {
            conn,
            ch,
            args: BasicPublishArguments::new("", queue),
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
                request_props(&id.to_string()),
                body.to_vec(),
                self.args.clone(),
            )
            .await?;
        Ok(rx.await?)
    }

    async fn close(self) {
        self.pump.abort();
        close(self.conn).await;
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

/// A work queue whose handler awaits a 10 ms timer (standing for I/O):
/// prefetch `concurrency`, each delivery handled in a spawned task (a
/// semaphore keeps `concurrency` at once) that acknowledges it. Consumes `n`
/// from the pre-filled `queue`.
pub async fn work(ctx: &Ctx, queue: &str, n: u64, concurrency: usize) -> Result<Sample> {
    let conn = connect(&ctx.url, "bench-amqprs-work").await?;
    let ch = conn.open_channel(None).await?;
    let prefetch = u16::try_from(concurrency).unwrap_or(u16::MAX);
    ch.basic_qos(BasicQosArguments::new(0, prefetch, false))
        .await?;
    let (_, mut rx) = ch
        .basic_consume_rx(
            BasicConsumeArguments::new(queue, "bench-amqprs-work")
                .manual_ack(true)
                .finish(),
        )
        .await?;
    let meter = Meter::start(&ctx.pids);
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let msg = rx.recv().await.ok_or("consumer ended")?;
        let tag = msg.deliver.ok_or("no deliver")?.delivery_tag();
        let permit = permits.clone().acquire_owned().await?;
        let ch = ch.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let acked = ch.basic_ack(BasicAckArguments::new(tag, false)).await;
            drop(permit);
            acked
        }));
    }
    for task in tasks {
        task.await??;
    }
    let sample = meter.finish(n);
    close(conn).await;
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::Confirms;
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    use tokio::sync::Semaphore;

    #[test]
    fn confirms_count_each_tag_once() {
        let mut c = Confirms {
            window: Arc::new(Semaphore::new(0)),
            nacked: Arc::new(AtomicU64::new(0)),
            floor: 0,
            above: BTreeSet::new(),
        };
        assert_eq!(c.confirm(2, false), 1);
        assert_eq!(c.confirm(5, true), 4); // 1, 3, 4, 5
        assert_eq!(c.floor, 5);
        assert_eq!(c.confirm(7, false), 1);
        assert_eq!(c.confirm(6, false), 1);
        assert_eq!(c.floor, 7);
        assert_eq!(c.confirm(7, true), 0);
        assert_eq!(c.confirm(10, true), 3);
    }
}
