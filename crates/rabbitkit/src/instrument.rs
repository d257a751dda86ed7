//! The handler loops' span and metrics (the `opentelemetry` and `metrics`
//! features; without them [`traced`] is `start(delivery)` and [`timed`]
//! nothing).
//!
//! Each handler runs in its delivery's `process` span, whose parent is the
//! trace context the message carries (see `rabbitkit_core::trace`), so the
//! publishes it makes (a reply, follow-up tasks) continue the publisher's
//! trace; its duration and failure are recorded as
//! `messaging.process.duration` and `rabbitkit.handler.errors` (see
//! `rabbitkit_core::metrics`).

use rabbitkit_core::Delivery;
use rabbitkit_core::metrics::Handling;

/// The future of a delivery's handling, in its span (`opentelemetry`).
#[cfg(feature = "opentelemetry")]
pub(crate) type Traced<G> = tracing::instrument::Instrumented<G>;
/// The future of a delivery's handling, in its span (`opentelemetry`).
#[cfg(not(feature = "opentelemetry"))]
pub(crate) type Traced<G> = G;

/// Starts `start(delivery)` (a delivery's handling, up to its settlement)
/// in the delivery's span.
#[inline(always)]
pub(crate) fn traced<G: Future>(
    delivery: Delivery,
    queue: &str,
    start: impl FnOnce(Delivery) -> G,
) -> Traced<G> {
    #[cfg(feature = "opentelemetry")]
    {
        let span = delivery.process_span(queue);
        let work = span.in_scope(|| start(delivery));
        tracing::Instrument::instrument(work, span)
    }
    #[cfg(not(feature = "opentelemetry"))]
    {
        let _ = queue;
        start(delivery)
    }
}

/// Times `work`, a delivery's handling (`metrics`); `error` says whether
/// (and how) it failed, from its output.
#[cfg(feature = "metrics")]
pub(crate) async fn timed<F: Future>(
    metrics: &Handling,
    work: F,
    error: fn(&F::Output) -> Option<&'static str>,
) -> F::Output {
    let timer = metrics.start();
    let output = work.await;
    metrics.finished(timer, error(&output));
    output
}

/// Times `work`, a delivery's handling (`metrics`).
#[cfg(not(feature = "metrics"))]
#[inline(always)]
pub(crate) fn timed<F: Future>(
    _metrics: &Handling,
    work: F,
    _error: fn(&F::Output) -> Option<&'static str>,
) -> F {
    work
}
