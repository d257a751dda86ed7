//! Checks made at every entry of the core, before anything is registered or
//! sent.
//!
//! AMQP carries names, routing keys and exchange types as *short strings*:
//! at most [`MAX_LEN`] (255) bytes. lapin panics on a longer one, in the
//! caller or, for what is recorded and replayed, in the supervisor at the
//! next failover. So every name that reaches lapin goes through here first
//! and a longer one is a typed error instead: [`DeclareError::InvalidName`]
//! or [`DeclareError::Invalid`], [`ConsumeError::InvalidName`],
//! [`PublishError::Invalid`]. Only the length is checked here; the typed
//! `rabbitkit` crate adds its own rules (empty names, the `amq.` prefix).
//!
//! Field tables (arguments, headers) need no check: their keys are already
//! [`ShortString`]s, built by the caller.
//!
//! ```
//! use rabbitkit_core::validate::{MAX_LEN, check_short_string};
//! assert!(check_short_string(&"q".repeat(MAX_LEN)).is_ok());
//! assert!(check_short_string(&"q".repeat(MAX_LEN + 1)).is_err());
//! ```

use std::time::Duration;

use lapin::types::ShortString;

use crate::error::{ConsumeError, DeclareError, PublishError};
use crate::topology::{BindingSpec, Declaration, ExchangeBindingSpec, ExchangeType};

/// A name, routing key, pattern or header refused before anything reaches
/// the network: what was checked, the value, and why. Nothing was sent.
///
/// The checks of the typed `rabbitkit` crate (names, routing keys, topic
/// patterns, header matches) return it; it converts into the error of the
/// operation that made the check ([`DeclareError::InvalidName`] or
/// [`DeclareError::Invalid`], [`PublishError::Invalid`],
/// [`ConsumeError::InvalidName`]) so `?` works in either.
///
/// ```
/// use rabbitkit_core::{DeclareError, validate::ValidationError};
/// let err = ValidationError::new("routing key", "a.*", "'*' is a wildcard");
/// assert_eq!(err.to_string(), r#"invalid routing key "a.*": '*' is a wildcard"#);
/// assert!(matches!(DeclareError::from(err), DeclareError::Invalid { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
#[non_exhaustive]
pub struct ValidationError {
    /// What was checked: `name`, `routing key`, `topic pattern`, `header key`, ...
    pub what: String,
    /// The value refused.
    pub value: String,
    /// Why it is refused.
    pub reason: String,
}

impl ValidationError {
    /// What was checked, the value, and why it is refused.
    pub fn new(
        what: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            what: what.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// A queue or exchange name refused.
    pub fn name(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(NAME, name, reason)
    }
}

/// [`ValidationError::what`] of a queue or exchange name.
pub const NAME: &str = "name";

impl From<ValidationError> for DeclareError {
    fn from(e: ValidationError) -> Self {
        if e.what == NAME {
            DeclareError::InvalidName {
                name: e.value,
                reason: e.reason,
            }
        } else {
            DeclareError::Invalid {
                what: e.what,
                value: e.value,
                reason: e.reason,
            }
        }
    }
}

impl From<ValidationError> for PublishError {
    fn from(e: ValidationError) -> Self {
        PublishError::Invalid {
            what: e.what,
            value: e.value,
            reason: e.reason,
        }
    }
}

impl From<ValidationError> for ConsumeError {
    fn from(e: ValidationError) -> Self {
        ConsumeError::InvalidName {
            name: e.value,
            reason: e.reason,
        }
    }
}

/// The longest AMQP short string, in bytes: the limit for queue and exchange
/// names, routing keys, exchange types and virtual hosts.
pub const MAX_LEN: usize = 255;

/// `Ok` when `value` fits in an AMQP short string; else why not (the reason
/// names the limit, e.g. `300 bytes, more than the 255 AMQP allows`).
pub fn check_short_string(value: &str) -> Result<(), String> {
    if value.len() > MAX_LEN {
        Err(format!(
            "{} bytes, more than the {MAX_LEN} AMQP allows",
            value.len()
        ))
    } else {
        Ok(())
    }
}

/// The longest per-message TTL (`expiration`) RabbitMQ accepts: 2^32 - 1
/// milliseconds (about 49.7 days); a larger one is refused with 406
/// PRECONDITION_FAILED (`value_too_large`).
pub const MAX_EXPIRATION: Duration = Duration::from_millis(u32::MAX as u64);

/// The `expiration` property for a per-message TTL, in milliseconds, at
/// most [`MAX_EXPIRATION`] (a longer TTL is clamped to it, so
/// `Duration::MAX` means "as long as the broker allows").
///
/// ```
/// use std::time::Duration;
/// use rabbitkit_core::validate::expiration;
/// assert_eq!(expiration(Duration::from_secs(2)).as_str(), "2000");
/// assert_eq!(expiration(Duration::MAX).as_str(), "4294967295");
/// ```
pub fn expiration(ttl: Duration) -> ShortString {
    let millis = ttl.min(MAX_EXPIRATION).as_millis();
    ShortString::from(millis.to_string())
}

/// A queue or exchange name for a declaration or an admin call.
pub(crate) fn name(name: &str) -> Result<(), DeclareError> {
    check_short_string(name).map_err(|reason| DeclareError::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Another short string of a declaration (`routing key`, `exchange type`).
fn field(what: &str, value: &str) -> Result<(), DeclareError> {
    check_short_string(value).map_err(|reason| DeclareError::Invalid {
        what: what.to_owned(),
        value: value.to_owned(),
        reason,
    })
}

/// A binding (to declare or to remove).
pub(crate) fn binding(b: &BindingSpec) -> Result<(), DeclareError> {
    name(&b.queue)?;
    name(&b.exchange)?;
    field("routing key", &b.routing_key)
}

/// An exchange-to-exchange binding (to declare or to remove).
pub(crate) fn exchange_binding(b: &ExchangeBindingSpec) -> Result<(), DeclareError> {
    name(&b.destination)?;
    name(&b.source)?;
    field("routing key", &b.routing_key)
}

/// Everything of a declaration that lapin turns into short strings.
pub(crate) fn declaration(decl: &Declaration) -> Result<(), DeclareError> {
    match decl {
        Declaration::Exchange(e) => {
            name(&e.name)?;
            if let ExchangeType::Custom(kind) = &e.kind {
                field("exchange type", kind)?;
            }
            Ok(())
        }
        Declaration::Queue(q) => name(&q.name),
        Declaration::Binding(b) => binding(b),
        Declaration::ExchangeBinding(b) => exchange_binding(b),
    }
}

/// The queue a consumer reads from.
pub(crate) fn consume_queue(queue: &str) -> Result<(), ConsumeError> {
    check_short_string(queue).map_err(|reason| ConsumeError::InvalidName {
        name: queue.to_owned(),
        reason,
    })
}

/// The exchange and routing key of a message.
pub(crate) fn publish(exchange: &str, routing_key: &str) -> Result<(), PublishError> {
    let invalid = |what: &str, value: &str, reason| PublishError::Invalid {
        what: what.to_owned(),
        value: value.to_owned(),
        reason,
    };
    check_short_string(exchange).map_err(|r| invalid("exchange", exchange, r))?;
    check_short_string(routing_key).map_err(|r| invalid("routing key", routing_key, r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{ExchangeSpec, QueueSpec};
    use lapin::types::FieldTable;

    #[test]
    fn the_limit_is_255_bytes_not_characters() {
        assert!(check_short_string("").is_ok());
        assert!(check_short_string(&"a".repeat(255)).is_ok());
        assert!(check_short_string(&"é".repeat(127)).is_ok()); // 254 bytes
        assert_eq!(
            check_short_string(&"é".repeat(128)), // 256 bytes
            Err("256 bytes, more than the 255 AMQP allows".to_owned())
        );
        // What lapin accepts is exactly what passes here.
        for len in [0, 1, 254, 255, 256, 300] {
            let s = "x".repeat(len);
            assert_eq!(
                check_short_string(&s).is_ok(),
                lapin::types::ShortString::try_new(s.as_str()).is_ok(),
                "{len}"
            );
        }
    }

    #[test]
    fn every_short_string_of_a_declaration_is_checked() {
        let long = "n".repeat(256);
        let exchange = |name: &str, kind: ExchangeType| {
            Declaration::Exchange(ExchangeSpec {
                name: name.into(),
                kind,
                durable: true,
                auto_delete: false,
                internal: false,
                arguments: FieldTable::default(),
            })
        };
        let binding = |q: &str, x: &str, k: &str| {
            Declaration::Binding(BindingSpec {
                queue: q.into(),
                exchange: x.into(),
                routing_key: k.into(),
                arguments: FieldTable::default(),
            })
        };
        let invalid_name = |n: &str| {
            Err(DeclareError::InvalidName {
                name: n.into(),
                reason: "256 bytes, more than the 255 AMQP allows".into(),
            })
        };
        let invalid = |what: &str, v: &str| {
            Err(DeclareError::Invalid {
                what: what.into(),
                value: v.into(),
                reason: "256 bytes, more than the 255 AMQP allows".into(),
            })
        };
        assert_eq!(declaration(&exchange("x", ExchangeType::Topic)), Ok(()));
        assert_eq!(
            declaration(&exchange(&long, ExchangeType::Topic)),
            invalid_name(&long)
        );
        assert_eq!(
            declaration(&exchange("x", ExchangeType::Custom(long.clone()))),
            invalid("exchange type", &long)
        );
        assert_eq!(
            declaration(&Declaration::Queue(QueueSpec {
                name: long.clone(),
                durable: true,
                exclusive: false,
                auto_delete: false,
                arguments: FieldTable::default(),
            })),
            invalid_name(&long)
        );
        assert_eq!(declaration(&binding("q", "x", "k")), Ok(()));
        assert_eq!(declaration(&binding(&long, "x", "k")), invalid_name(&long));
        assert_eq!(declaration(&binding("q", &long, "k")), invalid_name(&long));
        assert_eq!(
            declaration(&binding("q", "x", &long)),
            invalid("routing key", &long)
        );
        let e2e = |d: &str, s: &str, k: &str| {
            Declaration::ExchangeBinding(ExchangeBindingSpec {
                destination: d.into(),
                source: s.into(),
                routing_key: k.into(),
                arguments: FieldTable::default(),
            })
        };
        assert_eq!(declaration(&e2e("d", "s", "k")), Ok(()));
        assert_eq!(declaration(&e2e(&long, "s", "k")), invalid_name(&long));
        assert_eq!(declaration(&e2e("d", &long, "k")), invalid_name(&long));
        assert_eq!(
            declaration(&e2e("d", "s", &long)),
            invalid("routing key", &long)
        );
    }

    #[test]
    fn consume_and_publish_checks() {
        let long = "n".repeat(256);
        assert_eq!(consume_queue("q"), Ok(()));
        assert!(matches!(
            consume_queue(&long),
            Err(ConsumeError::InvalidName { name, .. }) if name == long
        ));
        assert!(publish("", "q").is_ok());
        assert!(matches!(
            publish(&long, "k"),
            Err(PublishError::Invalid { what, .. }) if what == "exchange"
        ));
        assert!(matches!(
            publish("", &long),
            Err(PublishError::Invalid { what, .. }) if what == "routing key"
        ));
    }
}
