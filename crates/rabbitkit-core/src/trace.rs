//! Trace context across services (the `opentelemetry` feature).
//!
//! A request that crosses several services over RabbitMQ stays one trace:
//! every publish carries the W3C trace context of its span in the message
//! headers `traceparent` and `tracestate` (written by OpenTelemetry's
//! [`TraceContextPropagator`], as the .NET client, MassTransit, Spring AMQP
//! and OpenTelemetry's instrumentations for Python and Java do), and every
//! delivery hands it back ([`Delivery::trace_context`]).
//!
//! rabbitkit opens [`tracing`] spans, and [`tracing_opentelemetry`] turns
//! them into OpenTelemetry spans when the application's subscriber has its
//! layer (`tracing_opentelemetry::layer().with_tracer(..)`); without such a
//! layer no header is written and the spans are plain `tracing` spans.
//! They are INFO spans of the target `rabbitkit`: a filter that drops them
//! (e.g. `RUST_LOG=rabbitkit=warn` on the OpenTelemetry layer) drops the
//! trace context with them.
//!
//! | span | kind | opened by | ends |
//! |---|---|---|---|
//! | `publish {exchange}` (`publish {queue}` through the default exchange) | producer | every confirmed publish ([`Publisher::publish`](crate::Publisher::publish), `Client::publish`, every typed `send`/`publish`/`submit` of `rabbitkit`), and `publish_unconfirmed` | at the broker's confirm (or the publish's error); re-sends after a failover stay in it |
//! | `process {queue}` | consumer | each delivery a `rabbitkit` handler loop runs (`WorkQueue::work*`, `Subscription::handle*`, `Router`, `RpcServer::serve*`); [`Delivery::process_span`] for a loop of your own | when the handler's delivery is settled |
//! | `call {routing key}` | client | each `RpcClient::call` | at the reply (or the call's error) |
//!
//! The `process` span's parent is the trace context the message carries,
//! so its trace is the publisher's; the publishes made inside a handler
//! (an RPC server's reply, a task's follow-up messages) are its children.
//! Attributes follow OpenTelemetry's messaging semantic conventions:
//! `messaging.system = "rabbitmq"`, `messaging.destination.name` (the
//! exchange; `""` for the default exchange), `messaging.rabbitmq.destination.routing_key`,
//! `messaging.message.id`, `messaging.operation.type` (`send`, `process`)
//! and `messaging.operation.name` (`publish`, `process`, `call`);
//! `messaging.rabbitmq.message.delivery_tag` and
//! `messaging.destination.subscription.name` (the queue) on `process` spans.
//!
//! ```no_run
//! # async fn run(mut consumer: rabbitkit_core::Consumer) -> Result<(), Box<dyn std::error::Error>> {
//! use futures::StreamExt;
//! use tracing::Instrument;
//! // A consumer loop of your own: the handler's span continues the publisher's trace.
//! while let Some(delivery) = consumer.next().await {
//!     let delivery = delivery?;
//!     let span = delivery.process_span(consumer.queue());
//!     async { delivery.ack().await }.instrument(span).await?;
//! }
//! # Ok(()) }
//! ```

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::delivery::Delivery;

pub use opentelemetry::Context;

/// The W3C header that carries the trace id and the parent span id.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header that carries vendor trace state.
pub const TRACESTATE: &str = "tracestate";

/// Writes `context`'s span (if it has a valid one) into `headers`, as
/// `traceparent` and `tracestate` long strings.
pub fn inject(context: &Context, headers: &mut FieldTable) {
    TraceContextPropagator::new().inject_context(context, &mut HeaderInjector(headers));
}

/// The trace context carried by `properties`' headers: a remote parent
/// when they hold a valid `traceparent`, else an empty context.
pub fn extract(properties: &BasicProperties) -> Context {
    match properties.headers() {
        Some(headers) => TraceContextPropagator::new().extract(&HeaderExtractor(headers)),
        None => Context::new(),
    }
}

/// `properties` with the current span's trace context in its headers
/// (replacing any there); unchanged when there is no valid span context.
pub fn with_current_context(properties: BasicProperties) -> BasicProperties {
    let context = Span::current().context();
    if !context.span().span_context().is_valid() {
        return properties;
    }
    let mut headers = properties.headers().clone().unwrap_or_default();
    inject(&context, &mut headers);
    properties.with_headers(headers)
}

/// The span of one publish to `exchange` with `routing_key` (producer);
/// its `messaging.message.id` is recorded once known.
pub(crate) fn publish_span(exchange: &str, routing_key: &str) -> Span {
    // The default exchange routes to the queue its routing key names.
    let target = if exchange.is_empty() {
        routing_key
    } else {
        exchange
    };
    tracing::info_span!(
        target: "rabbitkit",
        "publish",
        otel.name = %format_args!("publish {target}"),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = exchange,
        messaging.rabbitmq.destination.routing_key = routing_key,
        messaging.message.id = tracing::field::Empty,
    )
}

/// The span of one RPC call sent to `exchange` with `routing_key` (client):
/// its request carries the span's trace context, the server's handling
/// and reply continue it.
pub fn rpc_call_span(exchange: &str, routing_key: &str) -> Span {
    tracing::info_span!(
        target: "rabbitkit",
        "call",
        otel.name = %format_args!("call {routing_key}"),
        otel.kind = "client",
        messaging.system = "rabbitmq",
        messaging.operation.type = "send",
        messaging.operation.name = "call",
        messaging.destination.name = exchange,
        messaging.rabbitmq.destination.routing_key = routing_key,
        messaging.message.id = tracing::field::Empty,
    )
}

/// Records the message id on the current span (a publish's or a call's)
/// and writes that span's trace context into `properties`' headers.
pub(crate) fn sending(message_id: &str, properties: BasicProperties) -> BasicProperties {
    Span::current().record("messaging.message.id", message_id);
    with_current_context(properties)
}

impl Delivery {
    /// The trace context the message carries (`traceparent`,
    /// `tracestate`), e.g. to parent a span of your own:
    /// `span.set_parent(delivery.trace_context())`. An empty context when
    /// it carries none.
    pub fn trace_context(&self) -> Context {
        extract(self.properties())
    }

    /// A span for handling this delivery from `queue` (consumer,
    /// `process {queue}`), whose parent is the message's trace context
    /// when it carries one (else the current span). The `rabbitkit`
    /// handler loops run each handler in one; publishes made in it carry
    /// its trace on.
    pub fn process_span(&self, queue: &str) -> Span {
        let span = tracing::info_span!(
            target: "rabbitkit",
            "process",
            otel.name = %format_args!("process {queue}"),
            otel.kind = "consumer",
            messaging.system = "rabbitmq",
            messaging.operation.type = "process",
            messaging.operation.name = "process",
            messaging.destination.name = self.exchange(),
            messaging.destination.subscription.name = queue,
            messaging.rabbitmq.destination.routing_key = self.routing_key(),
            messaging.rabbitmq.message.delivery_tag = self.delivery_tag(),
            messaging.message.id = self.message_id().unwrap_or(""),
        );
        let parent = self.trace_context();
        if parent.span().span_context().is_valid() {
            // Fails only when the span is disabled or already started.
            let _ = span.set_parent(parent);
        }
        span
    }
}

struct HeaderInjector<'a>(&'a mut FieldTable);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0
            .insert(ShortString::from(key), AMQPValue::LongString(value.into()));
    }
}

struct HeaderExtractor<'a>(&'a FieldTable);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    #[test]
    fn a_context_goes_through_headers_and_back() {
        let sc = SpanContext::new(
            TraceId::from(0x0af7651916cd43dd8448eb211c80319c_u128),
            SpanId::from(0xb7ad6b7169203331_u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(sc.clone());
        let mut headers = FieldTable::default();
        inject(&cx, &mut headers);
        assert_eq!(
            headers.inner().get(TRACEPARENT),
            Some(&AMQPValue::LongString(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()
            ))
        );
        let back = extract(&BasicProperties::default().with_headers(headers));
        assert_eq!(back.span().span_context(), &sc);
        assert!(
            !extract(&BasicProperties::default())
                .span()
                .span_context()
                .is_valid()
        );
    }
}
