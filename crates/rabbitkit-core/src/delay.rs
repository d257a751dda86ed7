//! Delayed delivery without a broker plugin.
//!
//! A message published with a delay ([`OutgoingMessage::delay`]) is not
//! sent to its exchange: it goes through a chain of durable **quorum**
//! queues whose message TTLs are powers of two of [`DELAY_UNIT`], and is
//! dead-lettered from one to the next until its time is up, then delivered
//! to its exchange with its routing key. Any delay up to [`MAX_DELAY`] is
//! the sum of a few of those TTLs (its binary digits), so a fixed, small set
//! of queues serves every delay, each queue's messages expire in the order
//! they arrived (one TTL per queue), and nothing is kept in a client.
//!
//! # The topology (declared by the first delayed publish, recovered like the rest)
//! - `rabbitkit.delay.NN` for level `NN` = 00 … 25: a **headers exchange**
//!   and a **quorum queue** of the same name, the queue holding messages for
//!   `DELAY_UNIT × 2^NN` (`x-message-ttl`), then dead-lettering them to level
//!   `NN − 1`'s exchange (level 00: to `rabbitkit.delay.deliver`) with
//!   `x-dead-letter-strategy: at-least-once` (the queue keeps a message
//!   until the next queue confirms it, so a node dying mid-hop loses
//!   nothing). Exchange `NN` routes a message whose header
//!   `rabbitkit-delay-NN` is `"1"` to its queue, and one whose header is
//!   `"0"` straight on to the level below. Levels are declared up to the
//!   highest one a delay needs.
//! - `rabbitkit.delay.deliver`, a headers exchange, routes each message to
//!   its target's **inbox** (matching `rabbitkit-delay-exchange` for an
//!   exchange, `rabbitkit-delay-queue` for a queue of the default
//!   exchange): `rabbitkit.delay.to.x.<exchange>` or
//!   `rabbitkit.delay.to.q.<queue>` ([`delay_inbox_name`]), a quorum queue
//!   with a TTL of 0 that dead-letters at least once to the fanout exchange
//!   of the same name, bound to the target (and to the sink). Declared by
//!   the first delayed publish to each target. A target that refuses
//!   messages (a queue full at its `x-max-length` with `x-overflow:
//!   reject-publish`) holds up its own inbox only, where its messages wait;
//!   the levels, shared by every target in the virtual host, never wait for
//!   one target. Each target costs one quorum queue;
//!   [`Client::delete_queue`](crate::Client::delete_queue) and
//!   [`delete_exchange`](crate::Client::delete_exchange) delete the
//!   target's inbox with it (and the messages waiting there).
//! - `rabbitkit.delay.sink`, a quorum queue with a TTL of 0 that receives a
//!   copy of every delivered message and drops it at once. It is there so a
//!   message whose target routes nowhere (a fanout without subscribers, a
//!   deleted queue) is dropped like any unroutable publish, instead of
//!   staying in the last delay queue and holding up the ones behind it.
//!
//! A message enters at the exchange of its highest level: a 5 s delay
//! (50 units, binary 110010) enters `rabbitkit.delay.05`, waits 3.2 s, moves
//! to level 04 (1.6 s), passes levels 03 and 02, waits 0.2 s in level 01,
//! passes level 00 and is delivered.
//!
//! # What it costs and guarantees
//! - The publish is confirmed once the first delay queue holds the message
//!   (replicated to a majority of its nodes): the same guarantee as a
//!   persistent message on a quorum queue. It survives the loss of any
//!   minority of nodes while it waits.
//! - A delay is rounded **up** to a whole number of [`DELAY_UNIT`]s, so a
//!   message never arrives early; each hop adds a few milliseconds.
//! - A delay of zero is an ordinary publish, sent at once.
//! - A delay above [`MAX_DELAY`] is refused with
//!   [`PublishError::Invalid`] before anything is sent.
//! - The message arrives with the broker's `x-death` headers (one entry per
//!   delay queue it passed) and the `rabbitkit-delay-*` headers; its body,
//!   properties and other headers are unchanged.
//! - Programs written with other clients can publish delayed messages the
//!   same way: set the headers and publish to the entry level's exchange.
//!   See the book's "Delays and retries" chapter.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString};

use crate::error::{DeclareError, PublishError};
use crate::message::OutgoingMessage;
use crate::topology::{
    BindingSpec, Declaration, ExchangeBindingSpec, ExchangeSpec, ExchangeType, QueueSpec,
};

/// The resolution of delays: a delay is rounded up to a multiple of it.
pub const DELAY_UNIT: Duration = Duration::from_millis(100);

/// How many delay levels exist: level `k` holds messages for
/// `DELAY_UNIT × 2^k`. The longest level (2^25 × 100 ms ≈ 38.8 days) is the
/// largest power of two whose TTL in milliseconds RabbitMQ accepts
/// (at most 2^32 − 1).
pub const DELAY_LEVELS: u32 = 26;

/// The longest delay: every level once, `DELAY_UNIT × (2^26 − 1)`, about
/// 77.7 days.
pub const MAX_DELAY: Duration = Duration::from_millis(100 * ((1 << DELAY_LEVELS) - 1));

/// The prefix of every name the delay topology uses.
pub const DELAY_PREFIX: &str = "rabbitkit.delay.";

/// The exchange that hands messages whose delay is over to their target.
pub const DELAY_DELIVER_EXCHANGE: &str = "rabbitkit.delay.deliver";

/// The queue that drops a copy of every delivered message (see the module docs).
pub const DELAY_SINK_QUEUE: &str = "rabbitkit.delay.sink";

/// The header naming a delayed message's target exchange.
pub const DELAY_EXCHANGE_HEADER: &str = "rabbitkit-delay-exchange";

/// The header naming a delayed message's target queue (default exchange).
pub const DELAY_QUEUE_HEADER: &str = "rabbitkit-delay-queue";

/// The header that records the requested delay, in milliseconds
/// (informational: an `x-` header is never matched by headers exchanges).
pub const DELAY_MS_HEADER: &str = "x-rabbitkit-delay-ms";

/// The name of level `level`'s exchange and queue: `rabbitkit.delay.07`.
pub fn delay_level_name(level: u32) -> String {
    format!("{DELAY_PREFIX}{level:02}")
}

/// The header that says whether a message waits in level `level`:
/// `rabbitkit-delay-07`, valued `"1"` or `"0"`.
pub fn delay_level_header(level: u32) -> String {
    format!("rabbitkit-delay-{level:02}")
}

/// A delay in units (rounded up) and the level it enters at; `None` for zero.
pub(crate) fn plan(delay: Duration) -> Result<Option<(u64, u32)>, PublishError> {
    if delay.is_zero() {
        return Ok(None);
    }
    if delay > MAX_DELAY {
        return Err(PublishError::Invalid {
            what: "delay".into(),
            value: format!("{delay:?}"),
            reason: format!(
                "longer than the longest delay, {} s (about 77 days)",
                MAX_DELAY.as_secs()
            ),
        });
    }
    let unit = DELAY_UNIT.as_nanos();
    let units = delay.as_nanos().div_ceil(unit) as u64;
    let top = 63 - units.leading_zeros();
    Ok(Some((units, top)))
}

/// What this client declared already, so each delayed publish declares
/// only what is new (declarations are recorded and replayed by recovery).
#[derive(Debug, Default)]
pub(crate) struct Declared {
    levels: Mutex<Option<u32>>,
    targets: Mutex<HashSet<(String, String)>>,
    declaring: tokio::sync::Mutex<()>,
}

impl Declared {
    /// The target queue `queue` was deleted: its binding to the deliver
    /// exchange went with it, and is made again by the next delayed
    /// publish to it (else it would be confirmed, then dropped in the sink).
    pub(crate) fn forget_queue(&self, queue: &str) {
        let target = (String::new(), queue.to_owned());
        self.targets.lock().unwrap().remove(&target);
    }

    /// The target exchange `exchange` was deleted (see [`forget_queue`](Self::forget_queue)).
    pub(crate) fn forget_exchange(&self, exchange: &str) {
        let target = (exchange.to_owned(), String::new());
        self.targets.lock().unwrap().remove(&target);
    }

    /// After a reconnect, every target's binding is checked again by its
    /// next delayed publish (a target deleted and re-created by another
    /// program meanwhile lost it).
    pub(crate) fn forget_targets(&self) {
        self.targets.lock().unwrap().clear();
    }
}

fn longstr(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn headers_exchange(name: String) -> Declaration {
    Declaration::Exchange(ExchangeSpec {
        name,
        kind: ExchangeType::Headers,
        durable: true,
        auto_delete: false,
        internal: false,
        arguments: FieldTable::default(),
    })
}

fn match_all(pairs: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-match".into(), longstr("all"));
    for (k, v) in pairs {
        t.insert((*k).into(), longstr(v));
    }
    t
}

/// A durable quorum queue that holds messages for `ttl_ms`, then
/// dead-letters them at least once to `dead_letter_exchange` (or drops
/// them, with `None`).
fn delay_queue(name: String, ttl_ms: u64, dead_letter_exchange: Option<String>) -> Declaration {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), longstr("quorum"));
    args.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(ttl_ms as i64),
    );
    if let Some(dlx) = dead_letter_exchange {
        args.insert("x-dead-letter-exchange".into(), longstr(&dlx));
        args.insert("x-dead-letter-strategy".into(), longstr("at-least-once"));
        // At-least-once dead-lettering needs this overflow mode.
        args.insert("x-overflow".into(), longstr("reject-publish"));
    }
    Declaration::Queue(QueueSpec {
        name,
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments: args,
    })
}

/// The delivery exchange and the sink.
fn base_declarations() -> Vec<Declaration> {
    vec![
        headers_exchange(DELAY_DELIVER_EXCHANGE.into()),
        delay_queue(DELAY_SINK_QUEUE.into(), 0, None),
        Declaration::Binding(BindingSpec {
            queue: DELAY_SINK_QUEUE.into(),
            exchange: DELAY_DELIVER_EXCHANGE.into(),
            routing_key: String::new(),
            arguments: match_all(&[]),
        }),
    ]
}

/// Level `level`'s exchange, queue and both bindings.
fn level_declarations(level: u32) -> Vec<Declaration> {
    let name = delay_level_name(level);
    let below = if level == 0 {
        DELAY_DELIVER_EXCHANGE.to_string()
    } else {
        delay_level_name(level - 1)
    };
    let header = delay_level_header(level);
    let ttl_ms = DELAY_UNIT.as_millis() as u64 * (1u64 << level);
    vec![
        headers_exchange(name.clone()),
        delay_queue(name.clone(), ttl_ms, Some(below.clone())),
        Declaration::Binding(BindingSpec {
            queue: name.clone(),
            exchange: name.clone(),
            routing_key: String::new(),
            arguments: match_all(&[(&header, "1")]),
        }),
        Declaration::ExchangeBinding(ExchangeBindingSpec {
            destination: below,
            source: name,
            routing_key: String::new(),
            arguments: match_all(&[(&header, "0")]),
        }),
    ]
}

/// The prefix of a target's inbox (queue and exchange): see [`delay_inbox_name`].
pub const DELAY_INBOX_PREFIX: &str = "rabbitkit.delay.to.";

/// The name of the inbox of a delayed message's target, queue and fanout
/// exchange alike: `rabbitkit.delay.to.q.<queue>` for a queue (the default
/// exchange), `rabbitkit.delay.to.x.<exchange>` for an exchange; a name
/// that would pass 255 bytes ends with a hash of the whole instead.
pub fn delay_inbox_name(exchange: &str, routing_key: &str) -> String {
    let (kind, target) = if exchange.is_empty() {
        ("q", routing_key)
    } else {
        ("x", exchange)
    };
    let name = format!("{DELAY_INBOX_PREFIX}{kind}.{target}");
    if name.len() <= 255 {
        return name;
    }
    // FNV-1a: the same in every process and every Rust version.
    let hash = (target.bytes()).fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut keep = 200;
    while !target.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{DELAY_INBOX_PREFIX}{kind}.{}.{hash:016x}", &target[..keep])
}

/// What hands a delayed message to its target: the deliver exchange routes
/// it (by its target header) to the target's **inbox**, a quorum queue
/// with a TTL of 0 that dead-letters it at least once to the inbox's
/// fanout exchange, bound to the target and to the sink. A target that
/// refuses messages (full, with `reject-publish`) then holds up its own
/// inbox only: the delay levels, shared by every target, never wait for it.
fn target_declarations(exchange: &str, routing_key: &str) -> Vec<Declaration> {
    let inbox = delay_inbox_name(exchange, routing_key);
    let (header, value) = if exchange.is_empty() {
        (DELAY_QUEUE_HEADER, routing_key)
    } else {
        (DELAY_EXCHANGE_HEADER, exchange)
    };
    let mut fanout = headers_exchange(inbox.clone());
    if let Declaration::Exchange(e) = &mut fanout {
        e.kind = ExchangeType::Fanout;
    }
    let to_target = if exchange.is_empty() {
        Declaration::Binding(BindingSpec {
            queue: routing_key.into(),
            exchange: inbox.clone(),
            routing_key: String::new(),
            arguments: FieldTable::default(),
        })
    } else {
        Declaration::ExchangeBinding(ExchangeBindingSpec {
            destination: exchange.into(),
            source: inbox.clone(),
            routing_key: String::new(),
            arguments: FieldTable::default(),
        })
    };
    vec![
        fanout,
        delay_queue(inbox.clone(), 0, Some(inbox.clone())),
        Declaration::Binding(BindingSpec {
            queue: inbox.clone(),
            exchange: DELAY_DELIVER_EXCHANGE.into(),
            routing_key: String::new(),
            arguments: match_all(&[(header, value)]),
        }),
        Declaration::Binding(BindingSpec {
            queue: DELAY_SINK_QUEUE.into(),
            exchange: inbox,
            routing_key: String::new(),
            arguments: FieldTable::default(),
        }),
        to_target,
    ]
}

/// The binding from the deliver exchange straight to the target, as
/// rabbitkit made it before the inboxes: removed when the inbox is made.
fn direct_binding(exchange: &str, routing_key: &str) -> Declaration {
    if exchange.is_empty() {
        Declaration::Binding(BindingSpec {
            queue: routing_key.into(),
            exchange: DELAY_DELIVER_EXCHANGE.into(),
            routing_key: String::new(),
            arguments: match_all(&[(DELAY_QUEUE_HEADER, routing_key)]),
        })
    } else {
        Declaration::ExchangeBinding(ExchangeBindingSpec {
            destination: exchange.into(),
            source: DELAY_DELIVER_EXCHANGE.into(),
            routing_key: String::new(),
            arguments: match_all(&[(DELAY_EXCHANGE_HEADER, exchange)]),
        })
    }
}

/// Removes `binding` (a [`Declaration::Binding`] or
/// [`Declaration::ExchangeBinding`]; a missing one is fine) through
/// `client`: the `unbind` of [`prepare`].
pub(crate) async fn unbind(
    client: &crate::Client,
    binding: Declaration,
) -> Result<(), DeclareError> {
    match binding {
        Declaration::Binding(b) => client.unbind(b).await,
        Declaration::ExchangeBinding(b) => client.unbind_exchange(b).await,
        _ => Ok(()),
    }
}

/// Every declaration the delay topology needs for delays up to level
/// `top` and one target, in order. Exposed for tests and tools.
pub fn delay_declarations(top: u32, exchange: &str, routing_key: &str) -> Vec<Declaration> {
    let mut all = base_declarations();
    for level in 0..=top.min(DELAY_LEVELS - 1) {
        all.extend(level_declarations(level));
    }
    all.extend(target_declarations(exchange, routing_key));
    all
}

/// Declares what `message`'s delay needs and turns it into the publish
/// that starts the delay. `None`: no delay, publish as it is.
///
/// `declared` is what this client declared already; `declare` declares
/// (and records) one declaration, as [`Client::declare`](crate::Client::declare) does;
/// `unbind` removes a binding ([`unbind`]).
pub(crate) async fn prepare<F, Fut, U, UFut>(
    declared: &Declared,
    declare: F,
    unbind: U,
    mut message: OutgoingMessage,
) -> Result<OutgoingMessage, PublishError>
where
    F: Fn(Declaration) -> Fut,
    Fut: Future<Output = Result<(), DeclareError>>,
    U: FnOnce(Declaration) -> UFut,
    UFut: Future<Output = Result<(), DeclareError>>,
{
    let Some(delay) = message.delay.take() else {
        return Ok(message);
    };
    let Some((units, top)) = plan(delay)? else {
        return Ok(message);
    };
    crate::validate::publish(&message.exchange, &message.routing_key)?;
    if let Some(ttl) = message.properties.expiration() {
        // Its TTL would shorten the first delay level's (it would arrive
        // early), and the broker strips it when it dead-letters the message
        // on: a delayed message cannot carry one.
        return Err(PublishError::Invalid {
            what: "expiration".into(),
            value: ttl.to_string(),
            reason: "a delayed message cannot carry a per-message TTL: it would shorten the \
                     delay, and the broker drops it on the way (set the TTL on the target queue)"
                .into(),
        });
    }
    let target = (message.exchange.as_str(), message.routing_key.as_str());
    ensure(declared, declare, unbind, top, target).await?;

    // A copy of a message that was delayed (or dead-lettered) before must
    // not carry its history: the broker would see the same queues again as
    // a dead-letter cycle and drop it.
    let mut headers = FieldTable::default();
    if let Some(old) = message.properties.headers() {
        for (k, v) in old.inner() {
            let name = k.as_str();
            let stale = name == "x-death"
                || name.starts_with("x-first-death-")
                || name.starts_with("x-last-death-")
                || name.starts_with("rabbitkit-delay-");
            if !stale {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    for level in 0..=top {
        let bit = if units >> level & 1 == 1 { "1" } else { "0" };
        headers.insert(delay_level_header(level).into(), longstr(bit));
    }
    if message.exchange.is_empty() {
        headers.insert(DELAY_QUEUE_HEADER.into(), longstr(&message.routing_key));
    } else {
        headers.insert(DELAY_EXCHANGE_HEADER.into(), longstr(&message.exchange));
    }
    headers.insert(
        DELAY_MS_HEADER.into(),
        AMQPValue::LongLongInt(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
    );
    message.properties = message.properties.with_headers(headers);
    message.exchange = delay_level_name(top);
    // Entering the delay always routes; `Unroutable` here means the delay
    // topology was removed behind our back.
    message.mandatory = true;
    Ok(message)
}

/// Declares the levels up to `top` and the target's binding, unless this
/// client did already.
async fn ensure<F, Fut, U, UFut>(
    declared: &Declared,
    declare: F,
    unbind: U,
    top: u32,
    (exchange, routing_key): (&str, &str),
) -> Result<(), PublishError>
where
    F: Fn(Declaration) -> Fut,
    Fut: Future<Output = Result<(), DeclareError>>,
    U: FnOnce(Declaration) -> UFut,
    UFut: Future<Output = Result<(), DeclareError>>,
{
    let target = (exchange.to_string(), target_key(exchange, routing_key));
    let levels_ok = |d: &Declared| d.levels.lock().unwrap().is_some_and(|l| l >= top);
    let target_ok = |d: &Declared| d.targets.lock().unwrap().contains(&target);
    if levels_ok(declared) && target_ok(declared) {
        return Ok(());
    }
    let _one_at_a_time = declared.declaring.lock().await;
    if !levels_ok(declared) {
        let from = declared.levels.lock().unwrap().map(|l| l + 1);
        let mut todo = Vec::new();
        if from.is_none() {
            todo.extend(base_declarations());
        }
        for level in from.unwrap_or(0)..=top {
            todo.extend(level_declarations(level));
        }
        for d in todo {
            declare(d).await.map_err(|e| declare_failed(e, None))?;
        }
        *declared.levels.lock().unwrap() = Some(top);
    }
    if !target_ok(declared) {
        for d in target_declarations(exchange, routing_key) {
            // Only the last one names the application's exchange or queue.
            let names_target = matches!(&d, Declaration::Binding(b) if b.queue == routing_key && exchange.is_empty())
                || matches!(&d, Declaration::ExchangeBinding(b) if b.destination == exchange);
            let target = names_target.then_some((exchange, routing_key));
            declare(d).await.map_err(|e| declare_failed(e, target))?;
        }
        // Once the inbox is in place (never neither: a message would
        // reach only the sink), the direct binding that rabbitkit before
        // the inboxes made (or a program of another client that declares
        // the topology that way) goes: with both, the target would get
        // each delayed message twice.
        unbind(direct_binding(exchange, routing_key))
            .await
            .map_err(|e| declare_failed(e, Some((exchange, routing_key))))?;
        declared.targets.lock().unwrap().insert(target);
    }
    Ok(())
}

/// The default exchange's targets are queues (one binding per routing key);
/// another exchange's one binding serves every key.
fn target_key(exchange: &str, routing_key: &str) -> String {
    if exchange.is_empty() {
        routing_key.to_string()
    } else {
        String::new()
    }
}

/// The error of a delayed publish whose declaration failed; `target` when
/// it was the target's binding (the one that names the user's exchange or
/// queue, which may be missing).
fn declare_failed(e: DeclareError, target: Option<(&str, &str)>) -> PublishError {
    match (e, target) {
        (DeclareError::Timeout(t), _) => PublishError::Timeout(t),
        (DeclareError::Closed { reason }, _) => PublishError::Closed { reason },
        (DeclareError::NotFound { text }, Some(("", routing_key))) => PublishError::Unroutable {
            exchange: String::new(),
            routing_key: routing_key.into(),
            reply_text: text,
        },
        (DeclareError::NotFound { .. }, Some((exchange, _))) => PublishError::ExchangeNotFound {
            exchange: exchange.into(),
        },
        (other, _) => PublishError::Delay {
            source: Box::new(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_names_fit_an_amqp_short_string() {
        assert_eq!(
            delay_inbox_name("orders", "eu.#"),
            "rabbitkit.delay.to.x.orders"
        );
        let long = "é".repeat(127); // 254 bytes
        let name = delay_inbox_name("", &long);
        assert!(name.len() <= 255, "{}", name.len());
        assert_eq!(name, delay_inbox_name("", &long), "stable");
        assert_ne!(name, delay_inbox_name("", &"é".repeat(126)));
    }

    #[test]
    fn zero_is_no_delay_and_every_delay_rounds_up_to_a_unit() {
        assert_eq!(plan(Duration::ZERO).unwrap(), None);
        assert_eq!(plan(Duration::from_nanos(1)).unwrap(), Some((1, 0)));
        assert_eq!(plan(Duration::from_millis(100)).unwrap(), Some((1, 0)));
        assert_eq!(plan(Duration::from_millis(101)).unwrap(), Some((2, 1)));
        assert_eq!(plan(Duration::from_secs(5)).unwrap(), Some((50, 5)));
        assert_eq!(plan(Duration::from_secs(65)).unwrap(), Some((650, 9)));
    }

    #[test]
    fn the_longest_delay_uses_every_level_and_one_more_unit_is_refused() {
        assert_eq!(
            plan(MAX_DELAY).unwrap(),
            Some(((1 << DELAY_LEVELS) - 1, DELAY_LEVELS - 1))
        );
        let err = plan(MAX_DELAY + Duration::from_nanos(1)).unwrap_err();
        assert!(
            matches!(err, PublishError::Invalid { ref what, .. } if what == "delay"),
            "{err}"
        );
        assert!(plan(Duration::MAX).is_err());
    }

    #[test]
    fn the_longest_level_ttl_is_one_the_broker_accepts() {
        let ttl_ms = DELAY_UNIT.as_millis() as u64 * (1u64 << (DELAY_LEVELS - 1));
        assert!(ttl_ms <= u32::MAX as u64);
        assert!(ttl_ms * 2 > u32::MAX as u64, "a level could be added");
    }

    #[test]
    fn each_level_dead_letters_to_the_one_below_and_level_0_to_delivery() {
        let decls = delay_declarations(2, "", "jobs");
        let dlx_of = |name: &str| {
            decls.iter().find_map(|d| match d {
                Declaration::Queue(q) if q.name == name => {
                    match q.arguments.inner().get("x-dead-letter-exchange") {
                        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
                        _ => None,
                    }
                }
                _ => None,
            })
        };
        assert_eq!(
            dlx_of("rabbitkit.delay.02").as_deref(),
            Some("rabbitkit.delay.01")
        );
        assert_eq!(
            dlx_of("rabbitkit.delay.00").as_deref(),
            Some(DELAY_DELIVER_EXCHANGE)
        );
        assert_eq!(dlx_of(DELAY_SINK_QUEUE), None);
        // deliver -> the target's inbox -> (dead-lettered) its fanout -> the target and the sink.
        let inbox = delay_inbox_name("", "jobs");
        assert_eq!(inbox, "rabbitkit.delay.to.q.jobs");
        assert!(decls.iter().any(|d| matches!(d,
            Declaration::Binding(b) if b.queue == inbox && b.exchange == DELAY_DELIVER_EXCHANGE)));
        assert_eq!(dlx_of(&inbox).as_deref(), Some(inbox.as_str()));
        assert!(decls.iter().any(|d| matches!(d,
            Declaration::Binding(b) if b.queue == "jobs" && b.exchange == inbox)));
        assert!(decls.iter().any(|d| matches!(d,
            Declaration::Binding(b) if b.queue == DELAY_SINK_QUEUE && b.exchange == inbox)));
        assert!(!decls.iter().any(|d| matches!(d,
            Declaration::Binding(b) if b.queue == "jobs" && b.exchange == DELAY_DELIVER_EXCHANGE)));
        assert!(
            !decls
                .iter()
                .any(|d| matches!(d, Declaration::Queue(q) if q.name == "rabbitkit.delay.03"))
        );
    }
}
