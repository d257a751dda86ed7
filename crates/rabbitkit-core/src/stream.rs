//! Stream offsets: where a stream consumer starts, and where it resumes
//! after a failover.
//!
//! A stream (`x-queue-type: stream`) keeps its messages: consumers read it
//! from any position (`x-stream-offset`), and acknowledging or rejecting a
//! delivery only returns credit to the consumer's prefetch window; nothing
//! is removed or requeued. Left alone, a consumer re-subscribed after a
//! failover would start again from its original position (`first`: the
//! whole stream again; `next`: losing what was published during the
//! outage). A [`StreamCursor`] remembers, per consumer, the highest offset
//! up to which every delivery was settled, and the supervisor re-subscribes
//! from the offset after it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};

/// The consume argument naming where a stream consumer starts, and the
/// header carrying each delivery's offset.
pub const STREAM_OFFSET: &str = "x-stream-offset";

/// Where a stream consumer starts reading (`x-stream-offset`).
///
/// ```
/// use rabbitkit_core::{ConsumeOptions, StreamOffset};
/// let from_the_start = ConsumeOptions::new().stream_offset(StreamOffset::First);
/// let from_5000 = ConsumeOptions::new().stream_offset(StreamOffset::Offset(5000));
/// let last_hour = ConsumeOptions::new().stream_offset(StreamOffset::Timestamp(
///     std::time::SystemTime::now() - std::time::Duration::from_secs(3600),
/// ));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOffset {
    /// The first message still in the stream.
    First,
    /// The last chunk written (a few of the latest messages, then what comes).
    Last,
    /// Only messages written after the consumer starts (the broker's default).
    Next,
    /// This exact offset (offsets start at 0 and grow by one per message).
    Offset(u64),
    /// The first chunk written at or after this time. The broker's
    /// resolution is a second and a chunk holds many messages: a few
    /// written just before may come too.
    Timestamp(SystemTime),
}

impl StreamOffset {
    /// The `x-stream-offset` consume argument value.
    ///
    /// ```
    /// use rabbitkit_core::{AMQPValue, StreamOffset};
    /// assert_eq!(StreamOffset::Offset(7).to_amqp(), AMQPValue::LongLongInt(7));
    /// assert_eq!(StreamOffset::First.to_amqp(), AMQPValue::LongString("first".into()));
    /// ```
    pub fn to_amqp(&self) -> AMQPValue {
        match self {
            Self::First => AMQPValue::LongString("first".into()),
            Self::Last => AMQPValue::LongString("last".into()),
            Self::Next => AMQPValue::LongString("next".into()),
            Self::Offset(n) => AMQPValue::LongLongInt(i64::try_from(*n).unwrap_or(i64::MAX)),
            Self::Timestamp(t) => {
                // AMQP timestamps are whole seconds since the epoch.
                let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                AMQPValue::Timestamp(secs)
            }
        }
    }
}

/// The offset a stream delivery carries in its `x-stream-offset` header.
pub(crate) fn offset_of(properties: &BasicProperties) -> Option<u64> {
    let value = properties.headers().as_ref()?.inner().get(STREAM_OFFSET)?;
    match value {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::Timestamp(n) => Some(*n),
        _ => None,
    }
}

/// Where one stream consumer is: where it started, the first offset it
/// received, and the highest offset up to which the application settled
/// every delivery. Shared by the consumer's record (re-subscription), its
/// ack state (which advances it) and the `Consumer` (which reads it).
#[derive(Debug)]
pub(crate) struct StreamCursor {
    state: Mutex<Cursor>,
}

#[derive(Debug)]
struct Cursor {
    /// The start the application asked for, as sent.
    start: AMQPValue,
    /// The first offset ever delivered, if any.
    first_seen: Option<u64>,
    /// The highest offset up to which every delivery was settled.
    last_acked: Option<u64>,
    /// A start relative to the subscription (`next`, `last`) pinned to the
    /// time of the first subscription: a re-subscription before anything
    /// arrived must not skip what was published meanwhile.
    pinned: Option<AMQPValue>,
    /// The lowest offset given back unprocessed: the cursor never passes it.
    given_back: Option<u64>,
}

impl StreamCursor {
    /// A cursor for a consumer whose arguments (or options) name a start.
    /// `None` when the consumer is not a stream consumer.
    pub(crate) fn for_consumer(
        offset: Option<StreamOffset>,
        arguments: &FieldTable,
    ) -> Option<Self> {
        let start = match offset {
            Some(offset) => offset.to_amqp(),
            None => arguments.inner().get(STREAM_OFFSET)?.clone(),
        };
        Some(Self {
            state: Mutex::new(Cursor {
                start,
                first_seen: None,
                last_acked: None,
                pinned: None,
                given_back: None,
            }),
        })
    }

    /// The `x-stream-offset` to subscribe with now: after the last settled
    /// offset; else the first offset received (nothing settled yet); else
    /// the start asked for. A start relative to the subscription (`next`,
    /// `last`) is asked for once: later subscriptions that still received
    /// nothing start from the time of the first one (a timestamp, whole
    /// seconds, resolved by the broker to a chunk: a few messages from just
    /// before it may come, none published since is skipped).
    pub(crate) fn resume_from(&self) -> AMQPValue {
        let mut st = self.state.lock().unwrap();
        // The new subscription starts at or before what was given back.
        st.given_back = None;
        match (st.last_acked, st.first_seen) {
            (Some(last), _) => StreamOffset::Offset(last.saturating_add(1)).to_amqp(),
            (None, Some(first)) => StreamOffset::Offset(first).to_amqp(),
            (None, None) => {
                if let Some(pinned) = &st.pinned {
                    return pinned.clone();
                }
                let relative = matches!(&st.start, AMQPValue::LongString(s)
                    if matches!(s.as_bytes(), b"next" | b"last"));
                if relative {
                    st.pinned =
                        Some(StreamOffset::Timestamp(std::time::SystemTime::now()).to_amqp());
                }
                st.start.clone()
            }
        }
    }

    /// A delivery at `offset` was given back unprocessed: the cursor stays
    /// below it.
    pub(crate) fn given_back(&self, offset: u64) {
        let mut st = self.state.lock().unwrap();
        st.given_back = Some(st.given_back.map_or(offset, |o| o.min(offset)));
        if let Some(last) = st.last_acked
            && last >= offset
        {
            st.last_acked = offset.checked_sub(1);
        }
    }

    /// Notes a delivery received.
    pub(crate) fn received(&self, offset: u64) {
        let mut st = self.state.lock().unwrap();
        st.first_seen.get_or_insert(offset);
    }

    /// Every delivery up to `offset` is settled. Never moves back (a late
    /// ack from before a failover).
    pub(crate) fn settled_up_to(&self, offset: u64) {
        let mut st = self.state.lock().unwrap();
        let offset = match st.given_back {
            // Never past a message given back unprocessed.
            Some(back) if offset >= back => match back.checked_sub(1) {
                Some(below) => below,
                None => return,
            },
            _ => offset,
        };
        st.last_acked = Some(st.last_acked.map_or(offset, |last| last.max(offset)));
    }

    /// The highest offset up to which every delivery was settled.
    pub(crate) fn last_acked(&self) -> Option<u64> {
        self.state.lock().unwrap().last_acked
    }

    /// The consume arguments with the resume position in them.
    pub(crate) fn arguments(&self, arguments: &FieldTable) -> FieldTable {
        let mut arguments = arguments.clone();
        arguments.insert(STREAM_OFFSET.into(), self.resume_from());
        arguments
    }
}

/// The offsets of one subscription's deliveries by delivery tag, kept by
/// its ack state until the run of settled tags passes them.
#[derive(Debug, Default)]
pub(crate) struct TagOffsets {
    offsets: BTreeMap<u64, u64>,
}

impl TagOffsets {
    /// Delivery `tag` carries `offset`.
    pub(crate) fn insert(&mut self, tag: u64, offset: u64) {
        self.offsets.insert(tag, offset);
    }

    /// Every tag up to `tag` is settled: forgets them, and returns the
    /// highest offset among them, if any.
    /// The offset of delivery `tag`, while it is kept.
    pub(crate) fn get(&self, tag: u64) -> Option<u64> {
        self.offsets.get(&tag).copied()
    }

    pub(crate) fn settled_up_to(&mut self, tag: u64) -> Option<u64> {
        let rest = self.offsets.split_off(&(tag + 1));
        let done = std::mem::replace(&mut self.offsets, rest);
        done.into_values().max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn long_string(s: &str) -> AMQPValue {
        AMQPValue::LongString(s.into())
    }

    #[test]
    fn offsets_are_sent_as_the_broker_reads_them() {
        assert_eq!(StreamOffset::Last.to_amqp(), long_string("last"));
        assert_eq!(StreamOffset::Next.to_amqp(), long_string("next"));
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_900);
        assert_eq!(
            StreamOffset::Timestamp(t).to_amqp(),
            AMQPValue::Timestamp(1_700_000_000)
        );
    }

    #[test]
    fn a_cursor_resumes_after_the_last_settled_offset() {
        let c =
            StreamCursor::for_consumer(Some(StreamOffset::First), &FieldTable::default()).unwrap();
        assert_eq!(c.resume_from(), long_string("first"));
        c.received(40);
        c.received(41);
        assert_eq!(
            c.resume_from(),
            AMQPValue::LongLongInt(40),
            "nothing settled"
        );
        c.settled_up_to(45);
        c.settled_up_to(43); // a late ack from an older subscription
        assert_eq!(c.last_acked(), Some(45));
        assert_eq!(c.resume_from(), AMQPValue::LongLongInt(46));
        let args = c.arguments(&FieldTable::default());
        assert_eq!(
            args.inner().get(STREAM_OFFSET),
            Some(&AMQPValue::LongLongInt(46))
        );
    }

    #[test]
    fn a_raw_stream_offset_argument_makes_a_cursor_too() {
        let mut args = FieldTable::default();
        assert!(StreamCursor::for_consumer(None, &args).is_none());
        args.insert(STREAM_OFFSET.into(), long_string("1h"));
        let c = StreamCursor::for_consumer(None, &args).unwrap();
        assert_eq!(c.resume_from(), long_string("1h"));
        c.settled_up_to(9);
        assert_eq!(c.resume_from(), AMQPValue::LongLongInt(10));
    }

    #[test]
    fn a_start_at_next_is_asked_for_once_then_pinned_to_its_time() {
        let c =
            StreamCursor::for_consumer(Some(StreamOffset::Next), &FieldTable::default()).unwrap();
        assert_eq!(c.resume_from(), long_string("next"));
        // Nothing received before a failover: not the new `next`.
        assert!(matches!(c.resume_from(), AMQPValue::Timestamp(_)));
        c.received(7);
        assert_eq!(c.resume_from(), AMQPValue::LongLongInt(7));
    }

    #[test]
    fn the_cursor_never_passes_a_message_given_back() {
        let c =
            StreamCursor::for_consumer(Some(StreamOffset::First), &FieldTable::default()).unwrap();
        c.given_back(12);
        c.settled_up_to(15);
        assert_eq!(c.last_acked(), Some(11));
        c.given_back(10);
        assert_eq!(c.last_acked(), Some(9), "moved back below it");
        // A new subscription starts there: later settlements count again.
        assert_eq!(c.resume_from(), AMQPValue::LongLongInt(10));
        c.settled_up_to(20);
        assert_eq!(c.last_acked(), Some(20));
    }

    #[test]
    fn tag_offsets_report_the_highest_settled() {
        let mut t = TagOffsets::default();
        for (tag, offset) in [(1, 100), (2, 101), (3, 105), (4, 106)] {
            t.insert(tag, offset);
        }
        assert_eq!(t.settled_up_to(3), Some(105));
        assert_eq!(t.settled_up_to(3), None);
        assert_eq!(t.settled_up_to(9), Some(106));
    }
}
