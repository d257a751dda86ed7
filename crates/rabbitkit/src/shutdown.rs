//! Graceful shutdown: one signal that handler loops watch.
//!
//! A [`Shutdown`] is given to [`WorkQueue::work_until`](crate::WorkQueue::work_until),
//! [`Subscription::handle_with`](crate::Subscription::handle_with),
//! [`Router::run`](crate::Router::run) and
//! [`RpcServer::serve_until`](crate::RpcServer::serve_until). When it is
//! [stopped](Shutdown::stop), each loop:
//!
//! 1. cancels its consumer (`basic.cancel`): the broker sends no more;
//! 2. gives back (nack, requeue) the deliveries it received but never started;
//! 3. lets the handlers in flight finish, up to the deadline, and settles
//!    them as usual (ack on `Ok`);
//! 4. abandons the handlers still running at the deadline: their
//!    deliveries are requeued (another worker takes them);
//! 5. returns its report. Dropping the subscription then flushes the acks
//!    and closes its channel; [`Client::close`](crate::Client::close) waits for that.
//!
//! ```no_run
//! # async fn run(client: rabbitkit::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use rabbitkit::{Shutdown, WorkQueue};
//! let tasks = WorkQueue::<String>::builder("task_queue").declare(&client).await?;
//! // SIGTERM (a deploy) or Ctrl-C: stop taking tasks, give the ones in
//! // progress 25 s to finish.
//! let shutdown = Shutdown::on_signals(Duration::from_secs(25));
//! let report = tasks
//!     .work_until(&shutdown, |task: String| async move {
//!         println!("working on {task}");
//!         Ok(())
//!     })
//!     .await?;
//! client.close().await; // acks flushed, connection closed
//! println!("{} done, {} given back", report.acked, report.unstarted + report.abandoned);
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// A stop signal with a deadline, shared by any number of handler loops.
/// Cheap to clone; every clone is the same signal.
#[derive(Debug, Clone)]
pub struct Shutdown {
    /// `Some(deadline)` once stopped.
    tx: Arc<watch::Sender<Option<Instant>>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A signal not yet given.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(None).0),
        }
    }

    /// A signal given on the first Ctrl-C (SIGINT) with `grace` for the
    /// handlers in progress. Needs a Tokio runtime. A service stopped by a
    /// deploy gets SIGTERM instead: use [`on_signals`](Self::on_signals).
    pub fn on_ctrl_c(grace: Duration) -> Self {
        let shutdown = Self::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!(target: "rabbitkit", ?grace, "Ctrl-C: stopping");
                signal.stop(grace);
            }
        });
        shutdown
    }

    /// A signal given on the first SIGTERM or SIGINT (Ctrl-C), with
    /// `grace` for the handlers in progress: what a deploy sends (systemd,
    /// Docker and Kubernetes stop a service with SIGTERM, then SIGKILL
    /// after their own grace period: keep `grace` below theirs). On
    /// platforms without SIGTERM, Ctrl-C only. Needs a Tokio runtime.
    ///
    /// ```no_run
    /// # async fn run() {
    /// use std::time::Duration;
    /// // Kubernetes kills 30 s after SIGTERM by default: finish within 25.
    /// let shutdown = rabbitkit::Shutdown::on_signals(Duration::from_secs(25));
    /// # }
    /// ```
    pub fn on_signals(grace: Duration) -> Self {
        let shutdown = Self::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal as unix_signal};
                let mut term = match unix_signal(SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(e) => {
                        tracing::warn!(target: "rabbitkit", error = %e, "cannot watch SIGTERM; Ctrl-C only");
                        if tokio::signal::ctrl_c().await.is_ok() {
                            signal.stop(grace);
                        }
                        return;
                    }
                };
                let which = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    r = tokio::signal::ctrl_c() => match r {
                        Ok(()) => "SIGINT",
                        Err(_) => return,
                    },
                };
                tracing::info!(target: "rabbitkit", ?grace, signal = which, "stopping");
                signal.stop(grace);
            }
            #[cfg(not(unix))]
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!(target: "rabbitkit", ?grace, "Ctrl-C: stopping");
                signal.stop(grace);
            }
        });
        shutdown
    }

    /// Gives the signal: loops stop taking messages now, and handlers in
    /// flight have `grace` to finish. Only the first call counts.
    pub fn stop(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        self.tx.send_if_modified(|d| {
            if d.is_none() {
                *d = Some(deadline);
                true
            } else {
                false
            }
        });
    }

    /// Whether the signal was given.
    pub fn is_stopping(&self) -> bool {
        self.tx.borrow().is_some()
    }

    /// Waits for the signal; returns the deadline for handlers in flight.
    pub async fn stopping(&self) -> Instant {
        let mut rx = self.tx.subscribe();
        loop {
            if let Some(deadline) = *rx.borrow_and_update() {
                return deadline;
            }
            // The sender lives in `self`: `changed` cannot fail here.
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_stop_sets_the_deadline_and_wakes_every_clone() {
        let shutdown = Shutdown::new();
        let other = shutdown.clone();
        assert!(!other.is_stopping());
        let waiter = tokio::spawn(async move { other.stopping().await });
        shutdown.stop(Duration::from_secs(10));
        let first = waiter.await.unwrap();
        shutdown.stop(Duration::from_secs(1000));
        assert_eq!(shutdown.stopping().await, first);
        assert!(shutdown.is_stopping());
    }
}
