//! Acknowledgements, coalesced.
//!
//! Each ack a user makes is recorded at once; the broker is told when half
//! the consumer's prefetch is waiting, or a millisecond after the last ack,
//! whichever comes first: one `basic.ack` with `multiple = true` for the
//! whole run of consecutive settled delivery tags, then one single ack for
//! each acknowledged tag past a gap (a delivery still being handled). So
//! the common in-order case costs one frame per batch, and a slow handler
//! never holds back the acks of the deliveries after it: the broker counts
//! unacknowledged deliveries against the prefetch, and a held-back ack
//! would stop the consumer. Only tags the user acknowledged are ever
//! covered. A nack or reject goes alone, at once; the acks behind it go on.
//! A delivery dropped unsettled is [released](Acks::release): settled at
//! once and nacked (requeue, or reject) before the next `multiple` ack, so
//! one lost delivery never holds back the acks after it.
//! This saves a frame and a round trip to lapin's IO thread per message.
//!
//! Sending is bounded by the client's operation timeout: a connection that
//! stopped taking bytes (a stalled path, a broker blocked by an alarm) does
//! not hold an `ack` or a `close` forever. The channel is then given up
//! (closed): its unsettled deliveries go back to the queue, and later acks
//! fail with `ChannelGone`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use tokio::sync::Notify;

use crate::error::AckError;
use crate::stream::{StreamCursor, TagOffsets};

#[derive(Debug)]
struct State {
    /// Lowest delivery tag not settled yet (tags start at 1 on each channel).
    next: u64,
    /// Settled tags above `next`.
    ahead: BTreeSet<u64>,
    /// Tags acknowledged by the user and not yet sent. A `multiple` ack
    /// must name one of these: the broker refuses a tag it no longer holds
    /// (e.g. one already nacked) with a channel error.
    unsent: BTreeSet<u64>,
    /// Tags released by dropped deliveries, settled here but not yet told
    /// to the broker: `(tag, requeue)`. Sent before any `multiple` ack,
    /// which would otherwise cover (acknowledge) them.
    released: Vec<(u64, bool)>,
    /// Stream consumers: the offsets of the deliveries not yet passed by
    /// the run of settled tags.
    offsets: TagOffsets,
    closed: bool,
}

/// What one flush sends (see [`Acks::take_batch`]).
#[derive(Debug, PartialEq, Eq)]
struct Batch {
    /// Tags to nack (requeue) or reject, first.
    released: Vec<(u64, bool)>,
    /// The tag of one `multiple` ack, if any.
    upto: Option<u64>,
    /// Tags to ack one by one.
    singles: Vec<u64>,
}

/// The ack state of one consumer channel.
pub(crate) struct Acks {
    channel: Channel,
    state: Mutex<State>,
    send: tokio::sync::Mutex<()>,
    wake: Notify,
    batch: u64,
    /// Longest one send (ack, nack, reject) may take.
    bound: Duration,
    /// A stream consumer's position, advanced as the run of settled tags
    /// grows (when the application settles, not when the ack is sent: a
    /// stream keeps its messages whatever the broker hears).
    cursor: Option<Arc<StreamCursor>>,
    metrics: crate::metrics::Consume,
}

impl Acks {
    /// Coalesces acks on `channel`, flushing every `batch` acks or, run by
    /// [`flusher`](Self::flusher), a moment after an ack; each send is
    /// bounded by `bound`.
    pub(crate) fn new(
        channel: Channel,
        batch: u64,
        bound: Duration,
        cursor: Option<Arc<StreamCursor>>,
        metrics: crate::metrics::Consume,
    ) -> Arc<Self> {
        Arc::new(Self {
            channel,
            state: Mutex::new(State {
                next: 1,
                ahead: BTreeSet::new(),
                unsent: BTreeSet::new(),
                released: Vec::new(),
                offsets: TagOffsets::default(),
                closed: false,
            }),
            send: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            batch: batch.max(1),
            bound,
            cursor,
            metrics,
        })
    }

    /// Sends the acks `delay` after they were recorded (those that did not
    /// fill a batch). Runs in the consumer's pump task, for as long as the
    /// pump does; never returns (pending once the acks are closed).
    pub(crate) async fn flusher(&self, delay: Duration) {
        loop {
            self.wake.notified().await;
            if self.state.lock().unwrap().closed {
                return std::future::pending().await;
            }
            tokio::time::sleep(delay).await;
            let _ = self.flush().await;
        }
    }

    fn settle(state: &mut State, tag: u64) -> Result<(), AckError> {
        if tag < state.next || state.ahead.contains(&tag) {
            return Err(AckError::AlreadyAcknowledged);
        }
        if tag == state.next {
            state.next += 1;
            while state.ahead.remove(&state.next) {
                state.next += 1;
            }
        } else {
            state.ahead.insert(tag);
        }
        Ok(())
    }

    /// Stream consumers: delivery `tag` carries stream offset `offset`.
    pub(crate) fn track(&self, tag: u64, offset: u64) {
        if let Some(cursor) = &self.cursor {
            cursor.received(offset);
            self.state.lock().unwrap().offsets.insert(tag, offset);
        }
    }

    /// Settles `tag` and moves the stream cursor past the run of settled tags.
    fn settle_and_advance(&self, st: &mut State, tag: u64) -> Result<(), AckError> {
        Self::settle(st, tag)?;
        if let Some(cursor) = &self.cursor
            && let Some(offset) = st.offsets.settled_up_to(st.next - 1)
        {
            cursor.settled_up_to(offset);
        }
        Ok(())
    }

    fn usable(&self) -> Result<(), AckError> {
        if self.is_gone() {
            return Err(AckError::ChannelGone);
        }
        Ok(())
    }

    /// Whether nothing can be settled here any more: the channel is closed
    /// (or closing), or was given up.
    pub(crate) fn is_gone(&self) -> bool {
        self.state.lock().unwrap().closed || !self.channel.status().connected()
    }

    /// Records an ack; sends the run of acks when it is long enough.
    pub(crate) async fn ack(&self, tag: u64) -> Result<(), AckError> {
        self.usable()?;
        let flush_now = {
            let mut st = self.state.lock().unwrap();
            self.settle_and_advance(&mut st, tag)?;
            self.metrics.acked(1);
            st.unsent.insert(tag);
            st.unsent.len() as u64 >= self.batch
        };
        if flush_now {
            self.flush().await
        } else {
            self.wake.notify_one();
            Ok(())
        }
    }

    /// Sends a nack or reject for `tag`. The tag is settled (claimed) before
    /// it is sent, under the send lock: a concurrent `ack` of the same
    /// delivery then fails with `AlreadyAcknowledged` instead of putting a
    /// nacked tag into a `multiple` ack. Acks before and after it go on (the
    /// flusher is woken: the run may now extend past this tag).
    pub(crate) async fn nack(&self, tag: u64, requeue: bool, reject: bool) -> Result<(), AckError> {
        self.usable()?;
        let _one_sender = self.send.lock().await;
        self.settle_and_advance(&mut self.state.lock().unwrap(), tag)?;
        self.metrics.nacked(reject);
        let sent = self.send_nack(tag, requeue, reject).await;
        self.wake.notify_one();
        sent
    }

    /// Called when a delivery is dropped: if `tag` is not settled yet, it is
    /// settled now and nacked (requeued, or rejected when `requeue` is
    /// false) by the flusher, before any later `multiple` ack. Never blocks.
    pub(crate) fn release(&self, tag: u64, requeue: bool, warn: bool) {
        let mut st = self.state.lock().unwrap();
        if let Some(cursor) = &self.cursor
            && !st.closed
            && self.channel.status().connected()
            && let Some(offset) = st.offsets.get(tag)
        {
            // Unprocessed: the stream cursor must not pass it (a delivery of
            // a subscription that ended is not: the next one starts from
            // the cursor anyway).
            cursor.given_back(offset);
        }
        if st.closed || self.settle_and_advance(&mut st, tag).is_err() {
            return;
        }
        st.released.push((tag, requeue));
        drop(st);
        self.metrics.nacked(!requeue);
        if warn {
            // A forgotten ack is a bug that repeats: the message comes
            // straight back (and RabbitMQ 4.3 does not count nacks toward a
            // quorum queue's delivery limit). Say so each time.
            tracing::warn!(
                target: "rabbitkit",
                delivery_tag = tag,
                requeue,
                "a delivery was dropped without ack, nack or reject: given back to the queue"
            );
        }
        self.wake.notify_one();
    }

    async fn send_nack(&self, tag: u64, requeue: bool, reject: bool) -> Result<(), AckError> {
        if reject {
            self.bounded(
                self.channel
                    .basic_reject(tag, BasicRejectOptions { requeue }),
            )
            .await
        } else {
            self.bounded(self.channel.basic_nack(
                tag,
                BasicNackOptions {
                    multiple: false,
                    requeue,
                },
            ))
            .await
        }
    }

    /// Runs one send within `bound`. Past it the channel is given up:
    /// closed (the broker requeues what it had not settled) and this
    /// `Acks` with it.
    async fn bounded(
        &self,
        send: impl Future<Output = Result<(), lapin::Error>>,
    ) -> Result<(), AckError> {
        match tokio::time::timeout(self.bound, send).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(AckError::ChannelGone),
            Err(_) => {
                tracing::warn!(target: "rabbitkit", bound = ?self.bound, "ack not sent in time: giving up the consumer channel");
                self.state.lock().unwrap().closed = true;
                self.wake.notify_one();
                let channel = self.channel.clone();
                let bound = self.bound;
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        bound,
                        channel.close(200, "acks not sent in time".into()),
                    )
                    .await;
                });
                Err(AckError::ChannelGone)
            }
        }
    }

    /// Sends the pending run of acks, if any.
    pub(crate) async fn flush(&self) -> Result<(), AckError> {
        let _one_sender = self.send.lock().await;
        self.flush_locked().await
    }

    async fn flush_locked(&self) -> Result<(), AckError> {
        let batch = Self::take_batch(&mut self.state.lock().unwrap());
        for (tag, requeue) in batch.released {
            if self.cursor.is_some() {
                // A stream keeps every message whatever its readers say,
                // and RabbitMQ answers `basic.nack`/`reject` on a stream
                // with 540 NOT_IMPLEMENTED, closing the whole connection.
                // A delivery given back is acked (its credit returns); the
                // cursor was told it was not processed.
                self.bounded(
                    self.channel
                        .basic_ack(tag, BasicAckOptions { multiple: false }),
                )
                .await?;
                continue;
            }
            self.send_nack(tag, requeue, !requeue).await?;
        }
        if let Some(upto) = batch.upto {
            self.bounded(
                self.channel
                    .basic_ack(upto, BasicAckOptions { multiple: true }),
            )
            .await?;
        }
        for tag in batch.singles {
            self.bounded(
                self.channel
                    .basic_ack(tag, BasicAckOptions { multiple: false }),
            )
            .await?;
        }
        Ok(())
    }

    /// What one flush sends: the released tags to nack, the tag of one
    /// `multiple` ack for the run of settled tags, and single acks for the
    /// acknowledged tags past the run's end. Taken in one critical section:
    /// a tag released after the released list was taken must not end up
    /// covered by the `multiple` ack (its nack would then name a tag the
    /// broker no longer holds, a 406 that closes the channel).
    fn take_batch(st: &mut State) -> Batch {
        let released = std::mem::take(&mut st.released);
        // Every tag up to `next - 1` is settled: acked ones are still held by
        // the broker, nacked ones are gone or in `released`. One `multiple`
        // ack naming the highest unsent acked tag of that run covers them.
        let run_end = st.next - 1;
        let upto = st.unsent.range(..=run_end).next_back().copied();
        // Past the run's end, a delivery is still being handled: a
        // `multiple` ack would cover it, so each acked tag goes alone.
        let singles: Vec<u64> = st.unsent.range(run_end + 1..).copied().collect();
        st.unsent.clear();
        Batch {
            released,
            upto,
            singles,
        }
    }

    /// Flushes and stops the flusher; later acks fail with `ChannelGone`.
    pub(crate) async fn close(&self) {
        let _ = self.flush().await;
        self.state.lock().unwrap().closed = true;
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            next: 1,
            ahead: BTreeSet::new(),
            unsent: BTreeSet::new(),
            released: Vec::new(),
            offsets: TagOffsets::default(),
            closed: false,
        }
    }

    #[test]
    fn runs_of_settled_tags_advance_and_gaps_stop_them() {
        let mut st = state();
        Acks::settle(&mut st, 2).unwrap();
        Acks::settle(&mut st, 3).unwrap();
        assert_eq!(
            st.next, 1,
            "tag 1 unsettled: nothing may be acked with multiple"
        );
        Acks::settle(&mut st, 1).unwrap();
        assert_eq!(st.next, 4);
        assert!(st.ahead.is_empty());
        assert_eq!(Acks::settle(&mut st, 2), Err(AckError::AlreadyAcknowledged));
        Acks::settle(&mut st, 5).unwrap();
        assert_eq!(Acks::settle(&mut st, 5), Err(AckError::AlreadyAcknowledged));
        assert_eq!(st.next, 4);
    }

    #[test]
    fn a_flush_acks_only_up_to_what_was_settled_when_it_took_the_released_tags() {
        let mut st = state();
        // 2 acked, 1 still out.
        Acks::settle(&mut st, 2).unwrap();
        st.unsent.insert(2);
        let batch = Acks::take_batch(&mut st);
        assert!(batch.released.is_empty());
        assert_eq!(batch.upto, None, "tag 1 unsettled: no multiple ack");
        assert_eq!(batch.singles, vec![2], "2 is acked alone, past the gap");
        // 1 released (dropped delivery): nacked, nothing else to send.
        Acks::settle(&mut st, 1).unwrap();
        st.released.push((1, true));
        let batch = Acks::take_batch(&mut st);
        assert_eq!(batch.released, vec![(1, true)]);
        assert_eq!(batch.upto, None, "2 was acked already");
        assert!(st.released.is_empty() && st.unsent.is_empty());
    }

    #[test]
    fn acks_past_an_unsettled_delivery_go_out_one_by_one_and_the_run_as_one() {
        let mut st = state();
        // 1 in progress (slow), 2..=5 acked, 7 acked, 6 in progress.
        for tag in [2, 3, 4, 5, 7] {
            Acks::settle(&mut st, tag).unwrap();
            st.unsent.insert(tag);
        }
        let batch = Acks::take_batch(&mut st);
        assert_eq!(batch.upto, None);
        assert_eq!(batch.singles, vec![2, 3, 4, 5, 7]);
        // The slow one ends, then 6, 8, 9: one multiple ack covers 1..=9,
        // naming 9 (acked, not yet sent).
        for tag in [1, 6, 8, 9] {
            Acks::settle(&mut st, tag).unwrap();
            st.unsent.insert(tag);
        }
        let batch = Acks::take_batch(&mut st);
        assert_eq!(batch.upto, Some(9));
        assert!(batch.singles.is_empty());
        // In order, the common case: one multiple ack, no singles.
        for tag in 10..=20 {
            Acks::settle(&mut st, tag).unwrap();
            st.unsent.insert(tag);
        }
        assert_eq!(
            Acks::take_batch(&mut st),
            Batch {
                released: vec![],
                upto: Some(20),
                singles: vec![]
            }
        );
    }
}
