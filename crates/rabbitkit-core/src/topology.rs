//! Declarations (exchanges, queues, bindings), recorded in order so they can
//! be replayed after a reconnect, and the broker's refusal text turned into a
//! typed [`DeclareError`].

use std::fmt;

use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};

use crate::error::DeclareError;
use crate::reply::declare_error;

/// The prefix of the names rabbitkit gives temporary queues
/// (`rabbitkit.tmp.<uuid>`). Nobody else relies on such a name, so when
/// recovery finds the lost connection's queue of that name still locked
/// (RabbitMQ 4 keeps the exclusive queues of a killed node while the node
/// is down), it declares a fresh one instead, with the same bindings, and
/// moves its consumers there ([`Event::TemporaryQueueReplaced`](crate::Event::TemporaryQueueReplaced)).
pub const TEMPORARY_QUEUE_PREFIX: &str = "rabbitkit.tmp.";

/// A new temporary queue name: [`TEMPORARY_QUEUE_PREFIX`] and a random UUID.
pub fn temporary_queue_name() -> String {
    format!("{TEMPORARY_QUEUE_PREFIX}{}", uuid::Uuid::new_v4().simple())
}

/// The type of an exchange, as the broker names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExchangeType {
    /// Routes on an exact routing key.
    Direct,
    /// Copies to every bound queue.
    Fanout,
    /// Routes on a dot-separated pattern.
    Topic,
    /// Routes on header values.
    Headers,
    /// A plugin's type, e.g. `x-delayed-message`.
    Custom(String),
}

impl ExchangeType {
    /// The broker's name for it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
            Self::Custom(s) => s,
        }
    }

    fn to_lapin(&self) -> ExchangeKind {
        match self {
            Self::Direct => ExchangeKind::Direct,
            Self::Fanout => ExchangeKind::Fanout,
            Self::Topic => ExchangeKind::Topic,
            Self::Headers => ExchangeKind::Headers,
            Self::Custom(s) => ExchangeKind::Custom(s.clone()),
        }
    }
}

impl fmt::Display for ExchangeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An exchange declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeSpec {
    /// Name.
    pub name: String,
    /// Type.
    pub kind: ExchangeType,
    /// Survives a broker restart.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Only reachable through exchange-to-exchange bindings.
    pub internal: bool,
    /// Extra arguments (`alternate-exchange`, ...).
    pub arguments: FieldTable,
}

/// A queue declaration. The name is always given: rabbitkit never relies on
/// server-named queues, which cannot be re-declared after a reconnect.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    /// Name.
    pub name: String,
    /// Survives a broker restart.
    pub durable: bool,
    /// Owned by this connection; deleted when it closes (re-declared after a reconnect).
    pub exclusive: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// `x-queue-type`, `x-dead-letter-exchange`, `x-message-ttl`, ...
    pub arguments: FieldTable,
}

/// A queue-to-exchange binding.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingSpec {
    /// The queue.
    pub queue: String,
    /// The exchange.
    pub exchange: String,
    /// Routing key or pattern (empty for fanout and headers).
    pub routing_key: String,
    /// Binding arguments (`x-match` and header values for headers exchanges).
    pub arguments: FieldTable,
}

/// An exchange-to-exchange binding: messages published to `source` that
/// match its routing key (or header match) are routed by `destination` too,
/// exactly as if they had been published to it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeBindingSpec {
    /// The exchange that receives the copies (it may be `internal`).
    pub destination: String,
    /// The exchange messages are published to.
    pub source: String,
    /// Routing key or pattern, read by the source's kind (empty for fanout
    /// and headers).
    pub routing_key: String,
    /// Binding arguments (`x-match` and header values for a headers source).
    pub arguments: FieldTable,
}

/// One recorded declaration.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Declaration {
    /// An exchange.
    Exchange(ExchangeSpec),
    /// A queue.
    Queue(QueueSpec),
    /// A binding.
    Binding(BindingSpec),
    /// An exchange-to-exchange binding.
    ExchangeBinding(ExchangeBindingSpec),
}

impl fmt::Display for Declaration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exchange(e) => write!(f, "{} exchange {:?}", e.kind, e.name),
            Self::Queue(q) => write!(f, "queue {:?}", q.name),
            Self::Binding(b) => write!(
                f,
                "binding {:?} -> {:?} ({:?})",
                b.exchange, b.queue, b.routing_key
            ),
            Self::ExchangeBinding(b) => write!(
                f,
                "exchange binding {:?} -> {:?} ({:?})",
                b.source, b.destination, b.routing_key
            ),
        }
    }
}

impl Declaration {
    /// Runs the declaration on `channel`. A refusal closes that channel: use
    /// a channel that carries no other traffic.
    pub(crate) async fn run(&self, channel: &Channel) -> Result<(), DeclareError> {
        let res = match self {
            Self::Exchange(e) => {
                channel
                    .exchange_declare(
                        e.name.as_str().into(),
                        e.kind.to_lapin(),
                        ExchangeDeclareOptions {
                            passive: false,
                            durable: e.durable,
                            auto_delete: e.auto_delete,
                            internal: e.internal,
                            nowait: false,
                        },
                        e.arguments.clone(),
                    )
                    .await
            }
            Self::Queue(q) => channel
                .queue_declare(
                    q.name.as_str().into(),
                    QueueDeclareOptions {
                        passive: false,
                        durable: q.durable,
                        exclusive: q.exclusive,
                        auto_delete: q.auto_delete,
                        nowait: false,
                    },
                    q.arguments.clone(),
                )
                .await
                .map(|_| ()),
            Self::Binding(b) => {
                channel
                    .queue_bind(
                        b.queue.as_str().into(),
                        b.exchange.as_str().into(),
                        b.routing_key.as_str().into(),
                        QueueBindOptions::default(),
                        b.arguments.clone(),
                    )
                    .await
            }
            Self::ExchangeBinding(b) => {
                channel
                    .exchange_bind(
                        b.destination.as_str().into(),
                        b.source.as_str().into(),
                        b.routing_key.as_str().into(),
                        ExchangeBindOptions::default(),
                        b.arguments.clone(),
                    )
                    .await
            }
        };
        res.map_err(|e| declare_error(&e))
    }

    /// Renames queue `old` to `new` if this declares it or binds it.
    pub(crate) fn rename_queue(&mut self, old: &str, new: &str) {
        match self {
            Self::Queue(q) if q.name == old => q.name = new.to_owned(),
            Self::Binding(b) if b.queue == old => b.queue = new.to_owned(),
            _ => {}
        }
    }

    /// Whether a locked queue of this name may be replaced by a fresh one
    /// during recovery: an exclusive queue that rabbitkit named.
    pub(crate) fn replaceable_when_locked(&self) -> Option<&str> {
        match self {
            Self::Queue(q) if q.exclusive && q.name.starts_with(TEMPORARY_QUEUE_PREFIX) => {
                Some(&q.name)
            }
            _ => None,
        }
    }

    /// Whether `other` declares the same object (so it replaces this record).
    pub(crate) fn same_object(&self, other: &Declaration) -> bool {
        match (self, other) {
            (Self::Exchange(a), Self::Exchange(b)) => a.name == b.name,
            (Self::Queue(a), Self::Queue(b)) => a.name == b.name,
            (Self::Binding(a), Self::Binding(b)) => {
                a.queue == b.queue
                    && a.exchange == b.exchange
                    && a.routing_key == b.routing_key
                    && a.arguments == b.arguments
            }
            (Self::ExchangeBinding(a), Self::ExchangeBinding(b)) => a == b,
            _ => false,
        }
    }
}

/// The ordered record of declarations to replay after a reconnect.
#[derive(Debug, Default)]
pub(crate) struct Topology {
    records: Vec<Declaration>,
}

impl Topology {
    pub(crate) fn record(&mut self, decl: Declaration) {
        if let Some(existing) = self.records.iter_mut().find(|d| d.same_object(&decl)) {
            *existing = decl;
        } else {
            self.records.push(decl);
        }
    }

    pub(crate) fn forget_queue(&mut self, name: &str) {
        self.records.retain(|d| match d {
            Declaration::Queue(q) => q.name != name,
            Declaration::Binding(b) => b.queue != name,
            Declaration::Exchange(_) | Declaration::ExchangeBinding(_) => true,
        });
    }

    /// Renames a queue in its declaration and its bindings.
    pub(crate) fn rename_queue(&mut self, old: &str, new: &str) {
        for d in &mut self.records {
            d.rename_queue(old, new);
        }
    }

    pub(crate) fn forget_exchange(&mut self, name: &str) {
        self.records.retain(|d| match d {
            Declaration::Exchange(e) => e.name != name,
            Declaration::Binding(b) => b.exchange != name,
            Declaration::ExchangeBinding(b) => b.source != name && b.destination != name,
            Declaration::Queue(_) => true,
        });
    }

    pub(crate) fn forget_binding(&mut self, spec: &BindingSpec) {
        let probe = Declaration::Binding(spec.clone());
        self.records.retain(|d| !d.same_object(&probe));
    }

    pub(crate) fn exchange_bindings(
        &self,
        source: &str,
        destination: &str,
    ) -> Vec<ExchangeBindingSpec> {
        self.records
            .iter()
            .filter_map(|d| match d {
                Declaration::ExchangeBinding(b)
                    if b.source == source && b.destination == destination =>
                {
                    Some(b.clone())
                }
                _ => None,
            })
            .collect()
    }

    pub(crate) fn forget_exchange_binding(&mut self, spec: &ExchangeBindingSpec) {
        let probe = Declaration::ExchangeBinding(spec.clone());
        self.records.retain(|d| !d.same_object(&probe));
    }

    /// The declarations that make temporary queue `name` again (the queue,
    /// then its bindings), when it is a rabbitkit-named exclusive queue
    /// still recorded; `None` otherwise (a queue of the application's, or
    /// one this client deleted).
    pub(crate) fn temporary_queue(&self, name: &str) -> Option<Vec<Declaration>> {
        let queue = self
            .records
            .iter()
            .find(|d| d.replaceable_when_locked() == Some(name))?;
        let bindings = self
            .records
            .iter()
            .filter(|d| matches!(d, Declaration::Binding(b) if b.queue == name));
        Some(std::iter::once(queue).chain(bindings).cloned().collect())
    }

    /// Whether queue `name` is recorded as auto-delete.
    pub(crate) fn is_auto_delete(&self, name: &str) -> bool {
        self.records
            .iter()
            .any(|d| matches!(d, Declaration::Queue(q) if q.name == name && q.auto_delete))
    }

    /// Exchanges first, then queues, then bindings, each in recorded order.
    pub(crate) fn replay_order(&self) -> Vec<Declaration> {
        let rank = |d: &Declaration| match d {
            Declaration::Exchange(_) => 0,
            Declaration::Queue(_) => 1,
            Declaration::Binding(_) | Declaration::ExchangeBinding(_) => 2,
        };
        let mut out = self.records.clone();
        out.sort_by_key(rank); // stable: keeps the recorded order within a rank
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_order_is_exchanges_queues_bindings() {
        let mut t = Topology::default();
        let q = |n: &str| {
            Declaration::Queue(QueueSpec {
                name: n.into(),
                durable: true,
                exclusive: false,
                auto_delete: false,
                arguments: FieldTable::default(),
            })
        };
        let b = Declaration::Binding(BindingSpec {
            queue: "q1".into(),
            exchange: "x".into(),
            routing_key: "k".into(),
            arguments: FieldTable::default(),
        });
        let x = Declaration::Exchange(ExchangeSpec {
            name: "x".into(),
            kind: ExchangeType::Direct,
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::default(),
        });
        t.record(q("q1"));
        t.record(b.clone());
        t.record(x.clone());
        t.record(q("q1"));
        t.record(q("q2"));
        assert_eq!(t.replay_order(), vec![x, q("q1"), q("q2"), b]);
        t.forget_queue("q1");
        assert_eq!(t.replay_order().len(), 2);
    }
}
