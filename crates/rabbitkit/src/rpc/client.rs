//! [`RpcClient`]: sends typed requests and matches the replies to the calls.
//!
//! The requests go out, and the replies come back, on one
//! [`RecoveredChannel`] of the core: it consumes the reply queue (direct
//! reply-to, or a temporary queue of its own) and publishes the requests
//! through the core's confirmed publish path, on the same channel. What is
//! left here: the calls waiting for their reply, by correlation id.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rabbitkit_core::{
    AMQPValue, BasicProperties, ChannelError, Client, OutgoingMessage, RecoveredChannel, lapin,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::{DIRECT_REPLY_TO, ERROR_HEADER, RpcError};
use crate::codec;

type Waiter = oneshot::Sender<lapin::message::Delivery>;

/// The calls waiting for their reply, by correlation id.
#[derive(Default)]
struct Pending {
    calls: Mutex<HashMap<String, Waiter>>,
    unknown: AtomicU64,
}

impl Pending {
    /// Gives a reply to its call; counts and drops a reply nobody waits for.
    fn reply(&self, delivery: lapin::message::Delivery) {
        let id = delivery.properties.correlation_id().as_ref();
        let waiter = id.and_then(|id| self.calls.lock().unwrap().remove(id.as_str()));
        match waiter {
            Some(tx) => {
                let _ = tx.send(delivery);
            }
            None => {
                self.unknown.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(target: "rabbitkit", "RPC reply with unknown correlation id dropped");
            }
        }
    }
}

struct Inner {
    /// Dropping the last handle closes the reply channel.
    channel: RecoveredChannel,
    pending: Arc<Pending>,
}

/// Builds an [`RpcClient`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RpcClientBuilder<Req, Resp, E = String> {
    exchange: String,
    routing_key: String,
    /// `None`: the client's [`Timings::rpc_timeout`](rabbitkit_core::Timings::rpc_timeout).
    timeout: Option<Duration>,
    direct: bool,
    _t: PhantomData<fn(Req) -> (Resp, E)>,
}

/// Calls a typed RPC server. Cheap to clone; clones share the reply
/// channel, which closes when the last clone is dropped.
///
/// ```no_run
/// # async fn run(client: rabbitkit::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use rabbitkit::RpcClient;
/// let fib = RpcClient::<u64, u64>::builder("rpc_queue").build(&client).await?;
/// let answer = fib.call(&30).await?;
/// assert_eq!(answer, 832040);
/// # Ok(()) }
/// ```
pub struct RpcClient<Req, Resp, E = String> {
    inner: Arc<Inner>,
    exchange: String,
    routing_key: String,
    timeout: Duration,
    _t: PhantomData<fn(Req) -> (Resp, E)>,
}

impl<Req, Resp, E> Clone for RpcClient<Req, Resp, E> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            exchange: self.exchange.clone(),
            routing_key: self.routing_key.clone(),
            timeout: self.timeout,
            _t: PhantomData,
        }
    }
}

impl<Req, Resp, E> std::fmt::Debug for RpcClient<Req, Resp, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("routing_key", &self.routing_key)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<Req, Resp, E> RpcClient<Req, Resp, E> {
    /// A client of the server consuming `queue` (through the default exchange).
    pub fn builder(queue: impl Into<String>) -> RpcClientBuilder<Req, Resp, E> {
        RpcClientBuilder {
            exchange: String::new(),
            routing_key: queue.into(),
            timeout: None,
            direct: true,
            _t: PhantomData,
        }
    }

    /// Replies that arrived for no waiting call (e.g. after a timeout).
    pub fn unknown_replies(&self) -> u64 {
        self.inner.pending.unknown.load(Ordering::Relaxed)
    }

    /// The address replies come to (the reply queue's name), while the
    /// reply channel is open.
    #[doc(hidden)]
    pub fn reply_to(&self) -> Option<String> {
        self.inner.channel.queue()
    }

    /// Calls waiting for their reply right now.
    pub fn pending(&self) -> usize {
        self.inner.pending.calls.lock().unwrap().len()
    }
}

impl<Req, Resp, E> RpcClientBuilder<Req, Resp, E> {
    /// How long a call waits for its reply (default: the client's
    /// [`Timings::rpc_timeout`](rabbitkit_core::Timings::rpc_timeout), 10 s
    /// unless changed). At most [`Options::MAX_TIMEOUT`](rabbitkit_core::Options::MAX_TIMEOUT).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout.min(rabbitkit_core::Options::MAX_TIMEOUT));
        self
    }

    /// Send requests through this exchange (with the queue name as routing key).
    pub fn exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }

    /// Receive replies on an exclusive queue of this client's own instead of
    /// direct reply-to.
    pub fn exclusive_reply_queue(mut self) -> Self {
        self.direct = false;
        self
    }

    /// Builds the client and opens its reply channel.
    pub async fn build(self, client: &Client) -> Result<RpcClient<Req, Resp, E>, ChannelError> {
        let pending = Arc::new(Pending::default());
        let replies = {
            let pending = pending.clone();
            move |delivery| pending.reply(delivery)
        };
        let channel = if self.direct {
            RecoveredChannel::consume(client, DIRECT_REPLY_TO, replies).map_err(|e| {
                ChannelError::Broker {
                    text: e.to_string(),
                    cause: None,
                }
            })?
        } else {
            RecoveredChannel::consume_temporary(client, replies)
        };
        channel.lease().await?;
        Ok(RpcClient {
            inner: Arc::new(Inner { channel, pending }),
            exchange: self.exchange,
            routing_key: self.routing_key,
            timeout: self.timeout.unwrap_or(client.timings().rpc_timeout),
            _t: PhantomData,
        })
    }
}

/// Removes a call's pending entry however the call ends (reply, error,
/// timeout, or its future dropped).
struct PendingCall<'a> {
    pending: &'a Pending,
    id: String,
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        self.pending.calls.lock().unwrap().remove(&self.id);
    }
}

impl<Req, Resp, E> RpcClient<Req, Resp, E> {
    /// Sends one encoded request and waits for its reply delivery.
    async fn exchange_messages(
        &self,
        body: Vec<u8>,
        props: BasicProperties,
    ) -> Result<lapin::message::Delivery, RpcError<E>> {
        // The opening the request goes out on names the reply queue.
        let first = self
            .inner
            .channel
            .lease()
            .await
            .map_err(RpcError::Channel)?;
        let reply_to = first.queue().to_owned();
        // Unique among this process's calls: a counter, not the OS RNG.
        let id = rabbitkit_core::new_message_id();
        let props = props
            .with_reply_to(reply_to.as_str().into())
            .with_correlation_id(id.as_str().into())
            .with_message_id(id.as_str().into())
            // A request nobody served in time is worthless: let it expire.
            .with_expiration(rabbitkit_core::validate::expiration(self.timeout));
        let (tx, mut rx) = oneshot::channel();
        let pending = &self.inner.pending;
        pending.calls.lock().unwrap().insert(id.clone(), tx);
        let _pending = PendingCall { pending, id };
        let request = OutgoingMessage::new(&self.exchange, &self.routing_key, body)
            .properties(props)
            .mandatory(true)
            // Its reply would go to a channel of the lost connection.
            .resend_after_reconnect(false);
        let publish = self.inner.channel.publish(request, self.timeout);
        tokio::pin!(publish);
        // Wait for the confirm and the reply together: the reply may come
        // first (its round trip overlaps the confirm's); an unroutable
        // request is known from the confirm.
        let lease = tokio::select! {
            biased;
            reply = &mut rx => return reply.map_err(|_| RpcError::ConnectionLost),
            published = &mut publish => match published {
                Ok((_, last)) if last.queue() == reply_to => last,
                // Sent again on a new connection, whose reply queue has another name.
                Ok(_) => return Err(RpcError::ConnectionLost),
                Err(e) => return Err(RpcError::from_publish(e, &self.routing_key, self.timeout)),
            },
        };
        drop((publish, first));
        // The reply comes to the opening the request last went out on:
        // the call fails at once when that opening is gone.
        tokio::select! {
            biased;
            reply = &mut rx => reply.map_err(|_| RpcError::ConnectionLost),
            () = lease.closed() => Err(RpcError::ConnectionLost),
        }
    }
}

impl<Req: Serialize, Resp: DeserializeOwned, E: DeserializeOwned> RpcClient<Req, Resp, E> {
    /// Calls the server and waits for its typed reply. The call's timeout
    /// covers everything, (re)opening the reply channel included. Dropping
    /// the future abandons the call and leaves nothing behind.
    pub async fn call(&self, request: &Req) -> Result<Resp, RpcError<E>> {
        #[cfg(feature = "opentelemetry")]
        let span = rabbitkit_core::trace::rpc_call_span(&self.exchange, &self.routing_key);
        let call = self.call_inner(request);
        #[cfg(feature = "opentelemetry")]
        let call = tracing::Instrument::instrument(call, span);
        call.await
    }

    async fn call_inner(&self, request: &Req) -> Result<Resp, RpcError<E>> {
        // Before anything is opened or recorded: lapin panics on a name over 255 bytes.
        for (what, value) in [
            ("exchange", &self.exchange),
            ("routing key", &self.routing_key),
        ] {
            if let Err(reason) = rabbitkit_core::validate::check_short_string(value) {
                return Err(RpcError::Invalid {
                    what: what.to_owned(),
                    value: value.clone(),
                    reason,
                });
            }
        }
        let (body, props) = codec::encode(request, false).map_err(RpcError::Encode)?;
        let reply =
            match tokio::time::timeout(self.timeout, self.exchange_messages(body, props)).await {
                Ok(reply) => reply?,
                Err(_) => return Err(RpcError::Timeout(self.timeout)),
            };
        let error_kind = reply
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(ERROR_HEADER).cloned());
        match error_kind {
            None => codec::decode(&reply.data, &reply.properties).map_err(RpcError::Decode),
            Some(AMQPValue::LongString(kind)) if kind.to_string() == "bad-request" => Err(
                RpcError::BadRequest(String::from_utf8_lossy(&reply.data).into_owned()),
            ),
            Some(_) => Err(RpcError::Server(
                codec::decode(&reply.data, &reply.properties).map_err(RpcError::Decode)?,
            )),
        }
    }
}
