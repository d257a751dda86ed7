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
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The publishes of one connection waiting for their confirm, by start.
#[derive(Debug, Default)]
pub(crate) struct ConfirmWaits {
    next: AtomicU64,
    waiting: Mutex<BTreeMap<u64, Instant>>,
}

/// One publish waiting for its confirm; unregistered when dropped.
pub(crate) struct Waiting<'a> {
    waits: &'a ConfirmWaits,
    key: u64,
}

impl ConfirmWaits {
    /// Registers a publish that is about to wait for its confirm.
    pub(crate) fn start(&self) -> Waiting<'_> {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(key, Instant::now());
        Waiting { waits: self, key }
    }

    /// How long the oldest waiting publish has waited, counted from
    /// `since` at the earliest (the end of a broker block); `None` when
    /// nothing waits.
    pub(crate) fn oldest(&self, since: Instant) -> Option<Duration> {
        let first = *self.lock().values().next()?;
        Some(first.max(since).elapsed())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Instant>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.waits.lock().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_wait_is_measured_until_it_ends() {
        let waits = ConfirmWaits::default();
        let start = Instant::now();
        assert_eq!(waits.oldest(start), None);
        let first = waits.start();
        std::thread::sleep(Duration::from_millis(20));
        let second = waits.start();
        assert!(waits.oldest(start).unwrap() >= Duration::from_millis(20));
        // A later `since` (the end of a block) caps the age.
        assert!(waits.oldest(Instant::now()).unwrap() < Duration::from_millis(20));
        drop(first);
        assert!(waits.oldest(start).unwrap() < Duration::from_millis(20));
        drop(second);
        assert_eq!(waits.oldest(start), None);
    }
}
