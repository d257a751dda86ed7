//! The one policy for subscribing a consumer again: after its subscription
//! ended while the connection stayed up (a channel error, a cancel by the
//! broker), and after it could not be subscribed again during a recovery.
//!
//! Built from [`Timings`] (`consumer_restart_attempts`,
//! `consumer_restart_delay`, `resubscribe_backoff`); the supervisor asks it
//! what to do after each failure and does it: nothing else retries a
//! subscription (a consumer's pump only reports that it ended).

use std::time::Duration;

use crate::error::ConsumeError;
use crate::options::{Backoff, Timings};

/// Why a consumer needs subscribing again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// Its subscription ended while the connection stayed up.
    Ended,
    /// A recovery could not subscribe it on the new connection.
    RecoveryFailed,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Try again after this delay.
    RetryIn(Duration),
    /// Give up: the stream ends with [`ConsumeError::Cancelled`] and the
    /// consumer is forgotten.
    EndStream,
    /// Stop retrying on this connection; the next recovery subscribes it.
    WaitForRecovery,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    restart_attempts: u32,
    restart_delay: Duration,
    recovery: Backoff,
}

impl Policy {
    pub(crate) fn new(timings: &Timings) -> Self {
        Self {
            restart_attempts: timings.consumer_restart_attempts,
            restart_delay: timings.consumer_restart_delay,
            recovery: timings.resubscribe_backoff.clone(),
        }
    }

    /// What to do before attempt `attempt` (1-based) for a consumer that
    /// needs subscribing again because of `why`; `last` is the error of the
    /// attempt before, if there was one.
    pub(crate) fn next(&self, why: Why, attempt: u32, last: Option<&ConsumeError>) -> Next {
        if matches!(last, Some(ConsumeError::QueueNotFound { .. }))
            && !(why == Why::RecoveryFailed && attempt <= 1)
        {
            // Nothing will bring the queue back. Except right after a
            // recovery: a durable classic queue whose node is still starting
            // is reported missing too (RabbitMQ 3.10: "home node ... of
            // durable queue ... is down or inaccessible"), so the first retry
            // after the backoff's first delay is still made.
            return Next::EndStream;
        }
        if matches!(
            last,
            Some(ConsumeError::AccessRefused { .. } | ConsumeError::InvalidName { .. })
        ) {
            // Retrying cannot fix it.
            return Next::EndStream;
        }
        match why {
            Why::Ended if attempt > self.restart_attempts => {
                // The queue exists but refuses the consumer for now (a
                // classic queue whose node is down: "home node ... down or
                // inaccessible"; a broker under load): keep trying, backing
                // off, for as long as the queue is there. Ending the stream
                // would stop a service for good, even after the node came back.
                Next::RetryIn(self.recovery.delay_for(attempt - self.restart_attempts))
            }
            Why::Ended => Next::RetryIn(self.restart_delay.saturating_mul(attempt)),
            Why::RecoveryFailed if self.recovery.max_attempts.is_some_and(|max| attempt > max) => {
                Next::WaitForRecovery
            }
            Why::RecoveryFailed => Next::RetryIn(self.recovery.delay_for(attempt)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ended_subscription_is_restarted_with_linear_delays_then_backs_off_for_as_long_as_its_queue_is_there()
     {
        let policy = Policy::new(&Timings::DEFAULT);
        let ms = |n| Next::RetryIn(Duration::from_millis(n));
        assert_eq!(policy.next(Why::Ended, 1, None), ms(200));
        let refused = ConsumeError::Closed {
            reason: "channel closed".into(),
        };
        assert_eq!(policy.next(Why::Ended, 5, Some(&refused)), ms(1000));
        // A classic queue whose node is down: still there, so never given up.
        let node_down = ConsumeError::Broker {
            code: 404,
            text: "NOT_FOUND - home node 'rabbit3@localhost' of durable queue 'jobs' in vhost '/' is down or inaccessible".into(),
            cause: None,
        };
        assert_eq!(policy.next(Why::Ended, 6, Some(&node_down)), ms(500));
        assert_eq!(
            policy.next(Why::Ended, 1000, Some(&node_down)),
            Next::RetryIn(Duration::from_secs(10))
        );
        // What retrying cannot fix ends the stream.
        let denied = ConsumeError::AccessRefused {
            text: "ACCESS_REFUSED - read access to queue 'jobs' refused".into(),
        };
        assert_eq!(policy.next(Why::Ended, 2, Some(&denied)), Next::EndStream);
    }

    #[test]
    fn a_missing_queue_ends_the_stream_at_once_or_after_one_retry_after_a_recovery() {
        let policy = Policy::new(&Timings::DEFAULT);
        let gone = ConsumeError::QueueNotFound { queue: "q".into() };
        assert_eq!(policy.next(Why::Ended, 1, Some(&gone)), Next::EndStream);
        // After a recovery, one retry first: the queue's node may be starting.
        assert_eq!(
            policy.next(Why::RecoveryFailed, 1, Some(&gone)),
            Next::RetryIn(Duration::from_millis(500))
        );
        assert_eq!(
            policy.next(Why::RecoveryFailed, 2, Some(&gone)),
            Next::EndStream
        );
    }

    #[test]
    fn a_failed_recovery_is_retried_with_the_backoff_until_its_limit() {
        let mut timings = Timings::DEFAULT;
        let policy = Policy::new(&timings);
        assert_eq!(
            policy.next(Why::RecoveryFailed, 1, None),
            Next::RetryIn(Duration::from_millis(500))
        );
        assert_eq!(
            policy.next(Why::RecoveryFailed, 100, None),
            Next::RetryIn(Duration::from_secs(10))
        );
        timings.resubscribe_backoff.max_attempts = Some(2);
        let policy = Policy::new(&timings);
        assert!(matches!(
            policy.next(Why::RecoveryFailed, 2, None),
            Next::RetryIn(_)
        ));
        assert_eq!(
            policy.next(Why::RecoveryFailed, 3, None),
            Next::WaitForRecovery
        );
    }
}
