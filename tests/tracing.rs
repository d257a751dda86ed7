//! Trace context across clients (the `opentelemetry` feature: `cargo
//! nextest run --features opentelemetry --test tracing`, which `cargo
//! xtask test` does).
//!
//! Every span goes to an in-memory OpenTelemetry exporter through
//! `tracing-opentelemetry`. A trace started around a publish on one client
//! continues in the handler span of a worker on another client, and
//! through an RPC server's handler into its reply; a pika producer that
//! sets `traceparent` by hand is continued by a rabbitkit consumer, and a
//! pika consumer reads the `traceparent` of a rabbitkit publish. Each
//! test starts a trace of its own and reads only that trace's spans.
#![cfg(feature = "opentelemetry")]

mod common;

use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceId, TracerProvider as _,
};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use rabbitkit::{ConsumeOptions, HandleOptions, Queue, RpcClient, RpcServer, Shutdown, WorkQueue};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

/// The exporter every span of this process ends in (installed once).
fn exporter() -> &'static InMemorySpanExporter {
    static EXPORTER: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    &EXPORTER
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            let tracer = provider.tracer("rabbitkit-tests");
            let subscriber = tracing_subscriber::registry()
                .with(tracing_opentelemetry::layer().with_tracer(tracer));
            tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
            (exporter, provider)
        })
        .0
}

/// The OpenTelemetry span context of a `tracing` span.
fn context_of(span: &tracing::Span) -> SpanContext {
    span.context().span().span_context().clone()
}

/// The spans of `trace` ended so far.
fn spans_of(trace: TraceId) -> Vec<SpanData> {
    exporter()
        .get_finished_spans()
        .expect("finished spans")
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect()
}

/// Waits (bounded) until the spans of `trace` hold one that matches each of `wanted`.
async fn wait_for_spans(trace: TraceId, wanted: &[(&str, SpanKind)]) -> Vec<SpanData> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let spans = spans_of(trace);
        if wanted.iter().all(|(name, kind)| {
            spans
                .iter()
                .any(|s| s.name == *name && s.span_kind == *kind)
        }) {
            return spans;
        }
        if tokio::time::Instant::now() > deadline {
            let seen: Vec<_> = spans.iter().map(|s| (&s.name, &s.span_kind)).collect();
            panic!("spans {wanted:?} not all ended within 20 s; trace {trace} has {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn span<'a>(spans: &'a [SpanData], name: &str, kind: SpanKind) -> &'a SpanData {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.name == name && s.span_kind == kind)
        .collect();
    assert_eq!(found.len(), 1, "one span {name} ({kind:?}): {found:#?}");
    found[0]
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// What a handler saw as its current span.
type Seen = Mutex<Vec<SpanContext>>;

async fn wait_seen(seen: &Seen, n: usize) -> Vec<SpanContext> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = seen.lock().unwrap().clone();
        if now.len() >= n {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the handler ran {} times, not {n}, within 20 s",
            now.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_started_by_a_publisher_continues_in_a_worker_on_another_client() {
    exporter();
    let publisher = common::client().await;
    let worker = common::client().await;
    let name = common::unique_name("trace.work");
    let tasks = WorkQueue::<String>::builder(name.as_str())
        .declare(&publisher)
        .await
        .unwrap();
    let root = tracing::info_span!("checkout");
    let root_cx = context_of(&root);
    assert!(
        root_cx.is_valid(),
        "the test's subscriber makes OpenTelemetry spans"
    );
    let trace = root_cx.trace_id();
    let confirmed = tasks
        .submit(&"ship order 7".to_string())
        .instrument(root.clone())
        .await
        .unwrap();
    drop(root);

    let seen: &'static Seen = Box::leak(Box::default());
    let shutdown = Shutdown::new();
    let queue = WorkQueue::<String>::builder(name.as_str())
        .declare(&worker)
        .await
        .unwrap();
    let stop = shutdown.clone();
    let work = tokio::spawn(async move {
        queue
            .work_until(&stop, |task: String| async move {
                assert_eq!(task, "ship order 7");
                seen.lock()
                    .unwrap()
                    .push(context_of(&tracing::Span::current()));
                Ok(())
            })
            .await
            .unwrap()
    });
    let handler = wait_seen(seen, 1).await[0].clone();
    shutdown.stop(Duration::from_secs(5));
    let report = work.await.unwrap();
    assert_eq!(report.acked, 1);
    assert_eq!(
        handler.trace_id(),
        trace,
        "the handler runs in the publisher's trace"
    );

    let spans = wait_for_spans(
        trace,
        &[
            (&format!("publish {name}"), SpanKind::Producer),
            (&format!("process {name}"), SpanKind::Consumer),
        ],
    )
    .await;
    let publish = span(&spans, &format!("publish {name}"), SpanKind::Producer);
    let process = span(&spans, &format!("process {name}"), SpanKind::Consumer);
    assert_eq!(
        publish.parent_span_id,
        root_cx.span_id(),
        "publish under the caller's span"
    );
    assert_eq!(
        process.parent_span_id,
        publish.span_context.span_id(),
        "the handler's span is the publish span's child, across the broker"
    );
    assert!(process.parent_span_is_remote);
    assert_eq!(
        handler.span_id(),
        process.span_context.span_id(),
        "the handler runs in it"
    );
    for (span, operation) in [(publish, "send"), (process, "process")] {
        assert_eq!(attr(span, "messaging.system").as_deref(), Some("rabbitmq"));
        assert_eq!(
            attr(span, "messaging.operation.type").as_deref(),
            Some(operation)
        );
        assert_eq!(
            attr(span, "messaging.destination.name").as_deref(),
            Some("")
        );
        assert_eq!(
            attr(span, "messaging.rabbitmq.destination.routing_key").as_deref(),
            Some(name.as_str())
        );
        assert_eq!(
            attr(span, "messaging.message.id").as_deref(),
            Some(confirmed.message_id.as_str())
        );
    }
    assert_eq!(
        attr(process, "messaging.destination.subscription.name").as_deref(),
        Some(name.as_str())
    );
    publisher.delete_queue(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_call_continues_in_the_server_and_its_reply() {
    exporter();
    let caller = common::client().await;
    let server_client = common::client().await;
    let name = common::unique_name("trace.rpc");
    let server = RpcServer::<u64, u64>::builder(name.as_str())
        .declare(&server_client)
        .await
        .unwrap();
    let seen: &'static Seen = Box::leak(Box::default());
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let serving = tokio::spawn(async move {
        server
            .serve_until(&stop, |n: u64| async move {
                seen.lock()
                    .unwrap()
                    .push(context_of(&tracing::Span::current()));
                Ok(n * 2)
            })
            .await
            .unwrap()
    });
    let rpc = RpcClient::<u64, u64, String>::builder(name.as_str())
        .build(&caller)
        .await
        .unwrap();
    let root = tracing::info_span!("quote");
    let root_cx = context_of(&root);
    let trace = root_cx.trace_id();
    assert_eq!(rpc.call(&21).instrument(root.clone()).await.unwrap(), 42);
    drop(root);
    let handler = wait_seen(seen, 1).await[0].clone();
    shutdown.stop(Duration::from_secs(5));
    assert_eq!(serving.await.unwrap().answered, 1);

    let spans = wait_for_spans(
        trace,
        &[
            (&format!("call {name}"), SpanKind::Client),
            (&format!("process {name}"), SpanKind::Consumer),
        ],
    )
    .await;
    let call = span(&spans, &format!("call {name}"), SpanKind::Client);
    let process = span(&spans, &format!("process {name}"), SpanKind::Consumer);
    assert_eq!(call.parent_span_id, root_cx.span_id());
    assert_eq!(process.parent_span_id, call.span_context.span_id());
    assert_eq!(handler.trace_id(), trace);
    assert_eq!(handler.span_id(), process.span_context.span_id());
    // The reply is published from the handler's span: the same trace, its child.
    let replies: Vec<_> = spans
        .iter()
        .filter(|s| {
            s.span_kind == SpanKind::Producer && s.name.starts_with("publish amq.rabbitmq.reply-to")
        })
        .collect();
    assert_eq!(
        replies.len(),
        1,
        "one reply publish in the trace: {spans:#?}"
    );
    assert_eq!(replies[0].parent_span_id, process.span_context.span_id());
    caller.delete_queue(&name).await.unwrap();
}

fn python() -> String {
    std::env::var("PYTHON")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "python3".to_string())
}

/// Runs `send_traced.py` (pika): one message to `queue` with `traceparent` set by hand.
fn send_traced_py(queue: &str, traceparent: &str, body: &str) {
    let mut cmd = Command::new(python());
    cmd.arg(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/interop/python/send_traced.py"),
    )
    .args([queue, traceparent, body])
    .env("PYTHONUNBUFFERED", "1")
    .env("AMQP_ADDR", common::amqp_addrs().join(","));
    let lines = common::process::Program::spawn(format!("send_traced.py {queue}"), cmd).succeed();
    assert_eq!(
        lines,
        [format!(" [x] Sent {body} with traceparent {traceparent}")],
        "pika (PYTHON: cargo xtask test sets it to target/python-venv) published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pika_producer_that_sets_traceparent_is_continued_by_a_rabbitkit_consumer() {
    exporter();
    let client = common::client().await;
    let trace = TraceId::from(rand_u128());
    let parent = SpanId::from(rand_u128() as u64 | 1);
    let traceparent = format!("00-{trace}-{parent}-01");

    // The raw delivery hands the context back.
    let raw = common::unique_name("trace.pika.raw");
    let queue = Queue::named(raw.as_str()).declare(&client).await.unwrap();
    let blocking = traceparent.clone();
    let raw_name = raw.clone();
    tokio::task::spawn_blocking(move || send_traced_py(&raw_name, &blocking, "raw"))
        .await
        .unwrap();
    let mut consumer = client.consume(&raw, ConsumeOptions::new()).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .expect("the pika message within 20 s")
        .unwrap()
        .unwrap();
    let cx = delivery.trace_context();
    let remote = cx.span().span_context().clone();
    assert_eq!((remote.trace_id(), remote.span_id()), (trace, parent));
    assert!(remote.is_remote() && remote.is_sampled());
    assert_eq!(remote.trace_state().header(), "vendor=rabbitkit-test");
    delivery.ack().await.unwrap();
    drop(consumer);
    queue.delete().await.unwrap();

    // A handler loop runs the handler in a span of the pika trace.
    let name = common::unique_name("trace.pika");
    let queue = Queue::named(name.as_str()).declare(&client).await.unwrap();
    let blocking = traceparent.clone();
    let task_name = name.clone();
    tokio::task::spawn_blocking(move || send_traced_py(&task_name, &blocking, "hello"))
        .await
        .unwrap();
    let seen: &'static Seen = Box::leak(Box::default());
    let shutdown = Shutdown::new();
    let sub = queue.subscribe::<String>().await.unwrap();
    let stop = shutdown.clone();
    let handling = tokio::spawn(async move {
        sub.handle_with(
            HandleOptions::new().shutdown(&stop),
            |body: String| async move {
                assert_eq!(body, "hello");
                seen.lock()
                    .unwrap()
                    .push(context_of(&tracing::Span::current()));
                Ok(())
            },
        )
        .await
    });
    let handler = wait_seen(seen, 1).await[0].clone();
    shutdown.stop(Duration::from_secs(5));
    assert_eq!(handling.await.unwrap().acked, 1);
    assert_eq!(
        handler.trace_id(),
        trace,
        "the handler continues pika's trace"
    );
    let spans = wait_for_spans(trace, &[(&format!("process {name}"), SpanKind::Consumer)]).await;
    let process = span(&spans, &format!("process {name}"), SpanKind::Consumer);
    assert_eq!(
        process.parent_span_id, parent,
        "its parent is the span pika named"
    );
    assert_eq!(handler.span_id(), process.span_context.span_id());
    queue.delete().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pika_consumer_receives_the_traceparent_of_a_rabbitkit_publish() {
    exporter();
    let client = common::client().await;
    let name = common::unique_name("trace.to_pika");
    let queue = Queue::named(name.as_str()).declare(&client).await.unwrap();
    let root = tracing::info_span!("notify");
    let trace = context_of(&root).trace_id();
    queue
        .send(&"hi pika".to_string())
        .instrument(root.clone())
        .await
        .unwrap();
    drop(root);
    let spans = wait_for_spans(trace, &[(&format!("publish {name}"), SpanKind::Producer)]).await;
    let publish = span(&spans, &format!("publish {name}"), SpanKind::Producer);
    let expected = format!("00-{trace}-{}-01", publish.span_context.span_id());

    let mut cmd = Command::new(python());
    cmd.arg(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/interop/python/receive_traced.py"),
    )
    .arg(&name)
    .env("PYTHONUNBUFFERED", "1")
    .env("AMQP_ADDR", common::amqp_addrs().join(","));
    let program = common::process::Program::spawn(format!("receive_traced.py {name}"), cmd);
    let lines = tokio::task::spawn_blocking(move || program.succeed())
        .await
        .unwrap();
    assert_eq!(
        lines,
        [format!(" [x] Received hi pika with traceparent {expected}")],
        "pika sees the publish span as the parent"
    );
    queue.delete().await.unwrap();
}

/// 128 random bits (uuid v4 is random enough for ids).
fn rand_u128() -> u128 {
    uuid::Uuid::new_v4().as_u128()
}
