//! Noticing a node that stopped confirming: the publishes waiting for
//! their confirm on one connection, and how long the oldest has waited.
//!
//! A network partition can leave the node a client talks to on the
//! minority side: the TCP connection and its heartbeats stay healthy, but
//! publishes to quorum queues are never confirmed (no majority to
//! replicate to) and consumers get nothing. Only the confirms show it. Each
//! publish registers here while it waits for its confirm
//! ([`ConfirmWaits::start`]); the supervisor checks the oldest at every
//! liveness check and, past [`Timings::confirm_deadline`] while the broker
//! does not block the connection, closes the connection and fails over
//! (see `supervisor.rs`): the publishes still waiting are re-sent on the
//! next node by the ordinary recovery.
//!
//! [`Timings::confirm_deadline`]: crate::Timings::confirm_deadline

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// The publishes of one connection waiting for their confirm, by start.
///
/// A publish counts as waiting from its first poll for as long as its
/// future is pending and has not been woken since it was last polled: a
/// confirm that came in wakes the future, which stops counting even if
/// nobody polls it for a while (a slowly drained `FuturesUnordered`, a
/// starved `select!` branch). So only a confirm that did not come counts
/// against [`Timings::confirm_deadline`](crate::Timings::confirm_deadline),
/// never a caller that is slow to look.
#[derive(Debug, Default, Clone)]
pub(crate) struct ConfirmWaits {
    inner: Arc<Waits>,
}

#[derive(Debug, Default)]
struct Waits {
    next: AtomicU64,
    waiting: Mutex<BTreeMap<u64, Instant>>,
}

impl Waits {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Instant>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ConfirmWaits {
    /// `future` (a publish up to its confirm), counted as waiting while it
    /// is pending and not woken.
    pub(crate) fn watch<F: Future + Unpin>(&self, future: F) -> Watched<F> {
        let flag = Arc::new(Flag {
            waits: self.inner.clone(),
            key: self.inner.next.fetch_add(1, Ordering::Relaxed),
            started: Instant::now(),
            wakes: AtomicU64::new(0),
            parent: Mutex::new(None),
        });
        Watched {
            future,
            waker: Waker::from(flag.clone()),
            flag,
        }
    }

    /// How long the oldest waiting publish has waited, counted from
    /// `since` at the earliest (the end of a broker block); `None` when
    /// nothing waits.
    pub(crate) fn oldest(&self, since: Instant) -> Option<Duration> {
        let first = *self.inner.lock().values().next()?;
        Some(first.max(since).elapsed())
    }
}

/// One watched publish's registration, and its waker: a wake (the confirm,
/// or anything else the publish waits on) unregisters it and wakes the
/// caller's task.
struct Flag {
    waits: Arc<Waits>,
    key: u64,
    started: Instant,
    /// Wakes so far: a wake between a poll and its registration undoes it.
    wakes: AtomicU64,
    parent: Mutex<Option<Waker>>,
}

impl Flag {
    fn unregister(&self) {
        self.waits.lock().remove(&self.key);
    }
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.unregister();
        let parent = self
            .parent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(waker) = parent.as_ref() {
            waker.wake_by_ref();
        }
    }
}

/// A future counted by [`ConfirmWaits`] (see [`ConfirmWaits::watch`]);
/// unregistered when it ends or is dropped.
pub(crate) struct Watched<F> {
    future: F,
    flag: Arc<Flag>,
    waker: Waker,
}

impl<F: Future + Unpin> Future for Watched<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        {
            let mut parent = this
                .flag
                .parent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !parent.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *parent = Some(cx.waker().clone());
            }
        }
        let wakes = this.flag.wakes.load(Ordering::SeqCst);
        let mut inner = Context::from_waker(&this.waker);
        match Pin::new(&mut this.future).poll(&mut inner) {
            Poll::Ready(output) => {
                this.flag.unregister();
                Poll::Ready(output)
            }
            Poll::Pending => {
                this.flag
                    .waits
                    .lock()
                    .insert(this.flag.key, this.flag.started);
                if this.flag.wakes.load(Ordering::SeqCst) != wakes {
                    // Woken meanwhile: it will be polled again.
                    this.flag.unregister();
                }
                Poll::Pending
            }
        }
    }
}

impl<F> Drop for Watched<F> {
    fn drop(&mut self) {
        self.flag.unregister();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_publish_waits_until_it_is_woken_even_if_nobody_polls_it() {
        let waits = ConfirmWaits::default();
        let start = Instant::now();
        assert_eq!(waits.oldest(start), None);
        // A publish whose confirm is not in: pending, not woken.
        let (confirm, confirmed) = futures::channel::oneshot::channel::<()>();
        let mut first = waits.watch(confirmed);
        let noop = &mut Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut first).poll(noop).is_pending());
        std::thread::sleep(Duration::from_millis(20));
        let (_second_confirm, second_confirmed) = futures::channel::oneshot::channel::<()>();
        let mut second = waits.watch(second_confirmed);
        assert!(Pin::new(&mut second).poll(noop).is_pending());
        assert!(waits.oldest(start).unwrap() >= Duration::from_millis(20));
        // A later `since` (the end of a block) caps the age.
        assert!(waits.oldest(Instant::now()).unwrap() < Duration::from_millis(20));
        // The first confirm comes in: no longer waiting, though nobody polled it.
        confirm.send(()).unwrap();
        assert!(waits.oldest(start).unwrap() < Duration::from_millis(20));
        assert!(Pin::new(&mut first).poll(noop).is_ready());
        drop(second);
        assert_eq!(waits.oldest(start), None);
    }
}
