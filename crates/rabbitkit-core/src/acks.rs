//! Acknowledgements, coalesced.
//!
//! Each ack a user makes is recorded at once; the broker is told with one
//! `basic.ack` with `multiple = true` for a whole run of consecutive
//! delivery tags: when half the consumer's prefetch is waiting, or a
//! millisecond after the last ack, whichever comes first. Only tags the user
//! acknowledged are ever covered: a gap (a delivery not yet settled) stops
//! the run. A nack or reject goes alone, at once; the acks behind it go on.
//! A delivery dropped unsettled is [released](Acks::release): settled at
//! once and nacked (requeue, or reject) before the next `multiple` ack, so
//! one lost delivery never holds back the acks after it.
//! This saves a frame and a round trip to lapin's IO thread per message.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use tokio::sync::Notify;

use crate::error::AckError;

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
    closed: bool,
}

/// The ack state of one consumer channel.
pub(crate) struct Acks {
    channel: Channel,
    state: Mutex<State>,
    send: tokio::sync::Mutex<()>,
    wake: Notify,
    batch: u64,
}

impl Acks {
    /// Starts coalescing acks on `channel`, flushing every `batch` acks.
    pub(crate) fn start(channel: Channel, batch: u64) -> Arc<Self> {
        let acks = Arc::new(Self {
            channel,
            state: Mutex::new(State {
                next: 1,
                ahead: BTreeSet::new(),
                unsent: BTreeSet::new(),
                released: Vec::new(),
                closed: false,
            }),
            send: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            batch: batch.max(1),
        });
        let flusher = acks.clone();
        tokio::spawn(async move {
            loop {
                flusher.wake.notified().await;
                if flusher.state.lock().unwrap().closed {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                let _ = flusher.flush().await;
            }
        });
        acks
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

    fn usable(&self) -> Result<(), AckError> {
        if self.state.lock().unwrap().closed || !self.channel.status().connected() {
            return Err(AckError::ChannelGone);
        }
        Ok(())
    }

    /// Records an ack; sends the run of acks when it is long enough.
    pub(crate) async fn ack(&self, tag: u64) -> Result<(), AckError> {
        self.usable()?;
        let flush_now = {
            let mut st = self.state.lock().unwrap();
            Self::settle(&mut st, tag)?;
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
        Self::settle(&mut self.state.lock().unwrap(), tag)?;
        let sent = self.send_nack(tag, requeue, reject).await;
        self.wake.notify_one();
        sent
    }

    /// Called when a delivery is dropped: if `tag` is not settled yet, it is
    /// settled now and nacked (requeued, or rejected when `requeue` is
    /// false) by the flusher, before any later `multiple` ack. Never blocks.
    pub(crate) fn release(&self, tag: u64, requeue: bool) {
        let mut st = self.state.lock().unwrap();
        if st.closed || Self::settle(&mut st, tag).is_err() {
            return;
        }
        st.released.push((tag, requeue));
        drop(st);
        self.wake.notify_one();
    }

    async fn send_nack(&self, tag: u64, requeue: bool, reject: bool) -> Result<(), AckError> {
        let sent = if reject {
            self.channel
                .basic_reject(tag, BasicRejectOptions { requeue })
                .await
        } else {
            self.channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: false,
                        requeue,
                    },
                )
                .await
        };
        sent.map_err(|_| AckError::ChannelGone)
    }

    /// Sends the pending run of acks, if any.
    pub(crate) async fn flush(&self) -> Result<(), AckError> {
        let _one_sender = self.send.lock().await;
        self.flush_locked().await
    }

    async fn flush_locked(&self) -> Result<(), AckError> {
        let released = std::mem::take(&mut self.state.lock().unwrap().released);
        for (tag, requeue) in released {
            self.send_nack(tag, requeue, !requeue).await?;
        }
        let upto = {
            let mut st = self.state.lock().unwrap();
            // Every tag up to `next - 1` is settled: acked ones are still
            // held by the broker, nacked ones are gone. One `multiple` ack
            // naming the highest unsent acked tag of that run covers them.
            let run_end = st.next - 1;
            let Some(&upto) = st.unsent.range(..=run_end).next_back() else {
                return Ok(());
            };
            st.unsent = st.unsent.split_off(&(upto + 1));
            upto
        };
        self.channel
            .basic_ack(upto, BasicAckOptions { multiple: true })
            .await
            .map_err(|_| AckError::ChannelGone)
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
}
