//! What the broker's replies mean: the one place where rabbitkit reads a
//! reply code and the broker's text and turns them into a typed error.
//!
//! AMQP 0-9-1 closes a channel or a connection with a reply code (`404`,
//! `406`, `530`, ...) and a text (`NOT_FOUND - no exchange 'x' in vhost
//! '/'`). The code says little on its own — `406` is an inequivalent
//! declaration or a message over `max_message_size`, `530` a missing
//! virtual host or a reached connection limit — so some errors are told
//! apart by the text. Every such reading is here, tested against texts
//! captured from RabbitMQ 3.10.8 and 4.3.6 (identical in both, quoted in
//! the tests). Elsewhere the core only matches on the typed errors these
//! functions return.

use std::sync::Arc;

use crate::endpoint::Endpoint;
use crate::error::{Cause, ConnectError, ConsumeError, DeclareError, PublishError};

/// The reply code and text of the broker's `channel.close` or
/// `connection.close` behind a lapin error; `None` when the error did not
/// come from the broker (I/O, a closed channel, a protocol error on the
/// client's side).
pub(crate) fn of(err: &lapin::Error) -> Option<(u16, String)> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some((e.get_id(), e.get_message().to_string())),
        _ => None,
    }
}

/// Short, password-free text for a lapin error: `code text` for a broker
/// reply, else lapin's own description.
pub(crate) fn describe(err: &lapin::Error) -> String {
    match of(err) {
        Some((code, text)) => format!("{code} {text}"),
        None => err.to_string(),
    }
}

/// lapin's error, kept as the `source()` of the error made from it.
pub(crate) fn cause(err: &lapin::Error) -> Option<Cause> {
    Some(Cause::new(Arc::new(err.clone())))
}

/// The reply code named by the constant that starts a broker text
/// (`NOT_FOUND - ...` → 404), for errors that keep only the text.
pub(crate) fn code_of_text(text: &str) -> Option<u16> {
    let name = text.split_once(" - ").map_or(text, |(name, _)| name).trim();
    Some(match name {
        "CONTENT_TOO_LARGE" => 311,
        "NO_ROUTE" => 312,
        "NO_CONSUMERS" => 313,
        "CONNECTION_FORCED" => 320,
        "INVALID_PATH" => 402,
        "ACCESS_REFUSED" => 403,
        "NOT_FOUND" => 404,
        "RESOURCE_LOCKED" => 405,
        "PRECONDITION_FAILED" => 406,
        "FRAME_ERROR" => 501,
        "SYNTAX_ERROR" => 502,
        "COMMAND_INVALID" => 503,
        "CHANNEL_ERROR" => 504,
        "UNEXPECTED_FRAME" => 505,
        "RESOURCE_ERROR" => 506,
        "NOT_ALLOWED" => 530,
        "NOT_IMPLEMENTED" => 540,
        "INTERNAL_ERROR" => 541,
        _ => return None,
    })
}

/// What the broker's refusal of a connection (its `connection.close`
/// during the handshake: reply `code` and `text`) means, or `None` when it
/// is not a refusal this client knows (then it is retried).
///
/// RabbitMQ answers 530 NOT_ALLOWED both for a virtual host that is missing
/// or not allowed (fatal) and for a reached connection limit of the virtual
/// host or the user (temporary); only the text tells them apart.
pub(crate) fn connect_refusal(
    endpoint: &Endpoint,
    code: u16,
    text: String,
) -> Option<ConnectError> {
    let endpoint_text = endpoint.to_string();
    match code {
        403 => Some(ConnectError::AuthenticationFailed {
            endpoint: endpoint_text,
            message: text,
        }),
        530 if text.to_lowercase().contains("connection limit") => {
            Some(ConnectError::ConnectionLimit {
                endpoint: endpoint_text,
                message: text,
            })
        }
        530 | 402 => Some(ConnectError::VhostNotAllowed {
            endpoint: endpoint_text,
            vhost: endpoint.vhost().to_owned(),
            message: text,
        }),
        _ => None,
    }
}

/// Turns a lapin error from a declaration into a [`DeclareError`].
pub(crate) fn declare_error(err: &lapin::Error) -> DeclareError {
    match of(err) {
        Some((406, text)) => parse_inequivalent(&text).unwrap_or(DeclareError::Broker {
            code: 406,
            text,
            cause: None,
        }),
        Some((404, text)) => DeclareError::NotFound { text },
        Some((541, text)) if parse_deprecated(&text).is_some() => DeclareError::Deprecated {
            feature: parse_deprecated(&text).unwrap_or_default(),
            text,
        },
        Some((403, text)) => DeclareError::AccessRefused { text },
        Some((405, text)) => DeclareError::ResourceLocked { text },
        Some((code, text)) => DeclareError::Broker {
            code,
            text,
            cause: None,
        },
        None => DeclareError::Broker {
            code: 0,
            text: err.to_string(),
            cause: cause(err),
        },
    }
}

/// Turns a lapin error from `basic.consume` on `queue` into a [`ConsumeError`].
pub(crate) fn consume_error(err: &lapin::Error, queue: &str) -> ConsumeError {
    match of(err) {
        // RabbitMQ 3.10: `NOT_FOUND - home node 'rabbit@h' of durable queue
        // 'q' in vhost '/' is down or inaccessible`: the queue exists, its
        // node is not up (yet). Not a missing queue: retrying can fix it.
        Some((404, text)) if text.contains("down or inaccessible") => ConsumeError::Broker {
            code: 404,
            text,
            cause: cause(err),
        },
        Some((404, _)) => ConsumeError::QueueNotFound {
            queue: queue.to_owned(),
        },
        // `ACCESS_REFUSED - queue 'q' in vhost '/' in exclusive use`: an
        // exclusive consumer holds it.
        Some((403, text)) if text.contains("in exclusive use") => ConsumeError::Locked { text },
        Some((403, text)) => ConsumeError::AccessRefused { text },
        Some((405, text)) => ConsumeError::Locked { text },
        Some((code, text)) => ConsumeError::Broker {
            code,
            text,
            cause: None,
        },
        None => ConsumeError::Broker {
            code: 0,
            text: err.to_string(),
            cause: cause(err),
        },
    }
}

/// Turns the broker's refusal of a publish to `exchange` (the channel it
/// closed) into a [`PublishError`]: a missing exchange, a message over
/// `max_message_size`, or another refusal. `None` when the error did not
/// come from the broker.
pub(crate) fn publish_refusal(err: &lapin::Error, exchange: &str) -> Option<PublishError> {
    let (code, text) = of(err)?;
    Some(match code {
        404 if names_exchange(&text, exchange) => PublishError::ExchangeNotFound {
            exchange: exchange.to_owned(),
        },
        406 => match too_large(&text) {
            Some((size, max)) => PublishError::TooLarge { size, max },
            None => PublishError::Rejected {
                code,
                text,
                cause: None,
            },
        },
        _ => PublishError::Rejected {
            code,
            text,
            cause: None,
        },
    })
}

/// [`publish_refusal`], or [`PublishError::Rejected`] with lapin's error as
/// the cause when the broker did not answer.
pub(crate) fn publish_error(err: &lapin::Error, exchange: &str) -> PublishError {
    publish_refusal(err, exchange).unwrap_or_else(|| PublishError::Rejected {
        code: 0,
        text: err.to_string(),
        cause: cause(err),
    })
}

/// Whether a 404 text is about `exchange` (`NOT_FOUND - no exchange 'x' in
/// vhost '/'`), not about something else the channel did.
fn names_exchange(text: &str, exchange: &str) -> bool {
    text.contains(&format!("no exchange '{exchange}'"))
}

/// Reads `message size 9000000 is larger than configured max size 8388608`.
pub(crate) fn too_large(text: &str) -> Option<(u64, u64)> {
    let rest = &text[text.find("message size ")? + "message size ".len()..];
    let (size, rest) = rest.split_once(' ')?;
    let max = rest.strip_prefix("is larger than configured max size ")?;
    let max = max.trim().trim_end_matches('.');
    Some((size.parse().ok()?, max.parse().ok()?))
}

/// Parses the broker's `inequivalent arg` text, e.g.
/// `PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'logs' in vhost '/': received 'fanout' but current is 'direct'`.
pub fn parse_inequivalent(text: &str) -> Option<DeclareError> {
    let rest = &text[text.find("inequivalent arg '")? + "inequivalent arg '".len()..];
    let (argument, rest) = rest.split_once('\'')?;
    let rest = rest.trim_start().strip_prefix("for ")?;
    let (object, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix('\'')?;
    let (name, rest) = rest.split_once("' in vhost ")?;
    let rest = &rest[rest.find(": received ")? + ": received ".len()..];
    let (requested, current) = rest.split_once(" but current is ")?;
    Some(DeclareError::Inequivalent {
        object: object.to_owned(),
        name: name.to_owned(),
        argument: argument.to_owned(),
        requested: clean_value(requested),
        current: clean_value(current),
    })
}

/// The feature named by the broker's refusal of a denied deprecated
/// feature, e.g. `transient_nonexcl_queues` from RabbitMQ 4's
/// ``INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated. ...``.
pub(crate) fn parse_deprecated(text: &str) -> Option<String> {
    let rest = &text[text.find("Feature `")? + "Feature `".len()..];
    let (feature, rest) = rest.split_once('`')?;
    (rest.trim_start().starts_with("is deprecated") && !feature.is_empty())
        .then(|| feature.to_owned())
}

/// `'fanout'` -> `fanout`; `the value 'quorum' of type 'longstr'` -> `quorum`; `none` -> `none`.
fn clean_value(raw: &str) -> String {
    let v = raw.trim().trim_end_matches('.');
    let v = v.strip_prefix("the value ").unwrap_or(v);
    let v = match v.rfind(" of type '") {
        Some(i) => &v[..i],
        None => v,
    };
    let v = v.trim();
    v.strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or(v)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Texts captured with pika from RabbitMQ 3.10.8 (Debian 12) and 4.3.6
    /// (the local cluster) on 2026-12-01: both versions sent exactly these.
    const INEQUIVALENT_TYPE: &str = "PRECONDITION_FAILED - inequivalent arg 'type' for exchange \
         'rk.texts.x.72a9d422' in vhost '/': received 'fanout' but current is 'direct'";
    const INEQUIVALENT_DURABLE: &str = "PRECONDITION_FAILED - inequivalent arg 'durable' for \
         queue 'rk.texts.q.72a9d422' in vhost '/': received 'false' but current is 'true'";
    const INEQUIVALENT_QUEUE_TYPE: &str = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' \
         for queue 'rk.texts.q.72a9d422' in vhost '/': received 'classic' but current is 'quorum'";
    const INEQUIVALENT_MISSING: &str = "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' \
         for queue 'rk.texts.q.72a9d422' in vhost '/': received the value '1000' of type \
         'signedint' but current is none";
    const NO_EXCHANGE: &str = "NOT_FOUND - no exchange 'rk.no.such.x.72a9d422' in vhost '/'";
    const NO_QUEUE: &str = "NOT_FOUND - no queue 'rk.no.such.q.72a9d422' in vhost '/'";
    const RESERVED: &str =
        "ACCESS_REFUSED - exchange name 'amq.rk72a9d422' contains reserved prefix 'amq.*'";
    const LOCKED: &str = "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue \
         'rk.texts.excl.72a9d422' in vhost '/'. It could be originally declared on another \
         connection or the exclusive property value does not match that of the original \
         declaration.";
    const EXCLUSIVE_CONSUMER: &str =
        "ACCESS_REFUSED - queue 'rk.texts.sac.72a9d422' in vhost '/' in exclusive use";
    const TOO_LARGE: &str =
        "PRECONDITION_FAILED - message size 136314880 is larger than configured max size 8388608";
    /// RabbitMQ 4.3.6 only (3.10 has no deprecated features), with
    /// `deprecated_features.permit.transient_nonexcl_queues = false`.
    const DEPRECATED: &str = "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is \
         deprecated.\nIts use is not permitted per the configuration (overriding the default, \
         which is permitted):\n    deprecated_features.permit.transient_nonexcl_queues = false";

    fn broker(code: u16, text: &str) -> lapin::Error {
        let reply = lapin::protocol::AMQPError::from_id(code, text.into()).expect("a reply code");
        lapin::ErrorKind::ProtocolError(reply).into()
    }

    #[test]
    fn inequivalent_declarations_name_both_sides() {
        for (text, object, argument, requested, current) in [
            (INEQUIVALENT_TYPE, "exchange", "type", "fanout", "direct"),
            (INEQUIVALENT_DURABLE, "queue", "durable", "false", "true"),
            (
                INEQUIVALENT_QUEUE_TYPE,
                "queue",
                "x-queue-type",
                "classic",
                "quorum",
            ),
            (
                INEQUIVALENT_MISSING,
                "queue",
                "x-message-ttl",
                "1000",
                "none",
            ),
        ] {
            match declare_error(&broker(406, text)) {
                DeclareError::Inequivalent {
                    object: o,
                    argument: a,
                    requested: r,
                    current: c,
                    ..
                } => assert_eq!(
                    (o.as_str(), a.as_str(), r.as_str(), c.as_str()),
                    (object, argument, requested, current),
                    "{text}"
                ),
                other => panic!("{text}: {other:?}"),
            }
        }
        // Another 406 stays a broker refusal, with its code.
        let other = declare_error(&broker(406, "PRECONDITION_FAILED - unknown delivery tag 1"));
        assert_eq!(other.reply_code(), Some(406));
        assert!(matches!(other, DeclareError::Broker { code: 406, .. }));
    }

    #[test]
    fn declarations_refused_for_what_they_name() {
        assert!(matches!(
            declare_error(&broker(404, NO_EXCHANGE)),
            DeclareError::NotFound { .. }
        ));
        assert!(matches!(
            declare_error(&broker(404, NO_QUEUE)),
            DeclareError::NotFound { .. }
        ));
        assert!(matches!(
            declare_error(&broker(403, RESERVED)),
            DeclareError::AccessRefused { .. }
        ));
        assert!(matches!(
            declare_error(&broker(405, LOCKED)),
            DeclareError::ResourceLocked { .. }
        ));
        match declare_error(&broker(541, DEPRECATED)) {
            DeclareError::Deprecated { feature, .. } => {
                assert_eq!(feature, "transient_nonexcl_queues")
            }
            other => panic!("{other:?}"),
        }
        for text in [NO_EXCHANGE, RESERVED, LOCKED, DEPRECATED, TOO_LARGE] {
            let err = declare_error(&broker(code_of_text(text).unwrap(), text));
            assert_eq!(err.reply_code(), code_of_text(text), "{text}");
            assert!(!err.is_retryable(), "{text}");
        }
    }

    #[test]
    fn consumers_refused_tell_a_lock_from_a_permission() {
        assert!(matches!(
            consume_error(&broker(404, NO_QUEUE), "q"),
            ConsumeError::QueueNotFound { .. }
        ));
        let node_down = consume_error(
            &broker(
                404,
                "NOT_FOUND - home node 'rabbit1@localhost' of durable queue 'q' in vhost '/' is down or inaccessible",
            ),
            "q",
        );
        assert!(
            matches!(node_down, ConsumeError::Broker { code: 404, .. }),
            "{node_down:?}"
        );
        let taken = consume_error(&broker(403, EXCLUSIVE_CONSUMER), "q");
        assert!(matches!(taken, ConsumeError::Locked { .. }), "{taken:?}");
        assert_eq!(taken.reply_code(), Some(403));
        let locked = consume_error(&broker(405, LOCKED), "q");
        assert!(matches!(locked, ConsumeError::Locked { .. }), "{locked:?}");
        assert_eq!(locked.reply_code(), Some(405));
        assert!(matches!(
            consume_error(
                &broker(
                    403,
                    "ACCESS_REFUSED - access to queue 'q' in vhost '/' refused for user 'u'"
                ),
                "q"
            ),
            ConsumeError::AccessRefused { .. }
        ));
    }

    #[test]
    fn publishes_refused_name_the_exchange_or_the_size() {
        let exchange = "rk.no.such.x.72a9d422";
        match publish_refusal(&broker(404, NO_EXCHANGE), exchange) {
            Some(PublishError::ExchangeNotFound { exchange: e }) => assert_eq!(e, exchange),
            other => panic!("{other:?}"),
        }
        // A 404 about another exchange (e.g. an exchange-to-exchange
        // binding's) is not "this exchange does not exist".
        assert!(matches!(
            publish_refusal(&broker(404, NO_EXCHANGE), "other"),
            Some(PublishError::Rejected { code: 404, .. })
        ));
        match publish_refusal(&broker(406, TOO_LARGE), "") {
            Some(PublishError::TooLarge { size, max }) => {
                assert_eq!((size, max), (136_314_880, 8_388_608))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            too_large("PRECONDITION_FAILED - unknown delivery tag 3"),
            None
        );
    }

    #[test]
    fn errors_that_are_not_the_brokers_keep_lapins_error_as_their_source() {
        let io: lapin::Error = std::io::Error::other("connection reset by peer").into();
        assert_eq!(of(&io), None);
        for err in [
            Box::new(declare_error(&io)) as Box<dyn std::error::Error>,
            Box::new(consume_error(&io, "q")),
            Box::new(publish_error(&io, "x")),
        ] {
            let source = err.source().expect("lapin's error as the source");
            assert!(source.to_string().contains("connection reset"), "{source}");
        }
    }

    #[test]
    fn reply_codes_are_read_from_the_texts_constant() {
        assert_eq!(code_of_text(NO_QUEUE), Some(404));
        assert_eq!(code_of_text(LOCKED), Some(405));
        assert_eq!(code_of_text(EXCLUSIVE_CONSUMER), Some(403));
        assert_eq!(
            code_of_text("NOT_ALLOWED - vhost nosuchvhost not found"),
            Some(530)
        );
        assert_eq!(code_of_text("something else"), None);
    }

    /// Texts of RabbitMQ 3.10.8's and 4.3.6's refusals of a connection (the
    /// same in both), as the broker sends them.
    #[test]
    fn connection_refusals_are_told_apart_by_the_brokers_text() {
        let endpoint: Endpoint = "amqp://u:pw@h:5672/app".parse().unwrap();
        let kind = |code, text: &str| match connect_refusal(&endpoint, code, text.to_owned()) {
            Some(ConnectError::AuthenticationFailed { .. }) => "auth",
            Some(ConnectError::VhostNotAllowed { .. }) => "vhost",
            Some(ConnectError::ConnectionLimit { .. }) => "limit",
            Some(other) => panic!("{other:?}"),
            None => "retry",
        };
        for (code, text, expected) in [
            (
                403,
                "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. \
                 For details see the broker logfile.",
                "auth",
            ),
            (530, "NOT_ALLOWED - vhost nosuchvhost not found", "vhost"),
            (
                530,
                "NOT_ALLOWED - access to vhost 'rkpriv' refused for user 'rkn'",
                "vhost",
            ),
            (
                530,
                "NOT_ALLOWED - access to vhost 'rklim' refused for user 'guest': connection \
                 limit (0) is reached",
                "limit",
            ),
            (
                530,
                "NOT_ALLOWED - connection refused for user 'rkul': user connection limit (0) \
                 is reached",
                "limit",
            ),
            (
                541,
                "INTERNAL_ERROR - access to vhost 'app' refused for user 'u': vhost 'app' is down",
                "retry",
            ),
        ] {
            assert_eq!(kind(code, text), expected, "{code} {text}");
        }
        // The typed errors keep the broker's text and never the password.
        let err = connect_refusal(
            &endpoint,
            530,
            "NOT_ALLOWED - connection limit (1) is reached".into(),
        )
        .unwrap();
        assert!(!err.is_fatal() && err.is_retryable());
        assert_eq!(err.reply_code(), Some(530));
        assert!(!format!("{err} {err:?}").contains("pw"), "{err}");
        let auth = connect_refusal(&endpoint, 403, String::new()).unwrap();
        assert!(auth.is_fatal() && !auth.is_retryable());
    }

    #[test]
    fn parses_a_denied_deprecated_feature() {
        // RabbitMQ 4.3.6 with deprecated_features.permit.transient_nonexcl_queues = false.
        let t = "INTERNAL_ERROR - Feature `transient_nonexcl_queues` is deprecated.\n\
                 Its use is not permitted per the configuration (overriding the default, \
                 which is permitted):\n    \"deprecated_features.permit.transient_nonexcl_queues = false\"\n\
                 Its use will not be permit...";
        assert_eq!(
            parse_deprecated(t).as_deref(),
            Some("transient_nonexcl_queues")
        );
        assert_eq!(
            parse_deprecated("INTERNAL_ERROR - Feature `x` is experimental"),
            None
        );
        assert_eq!(
            parse_deprecated("PRECONDITION_FAILED - inequivalent arg 'type'"),
            None
        );
    }

    #[test]
    fn parses_exchange_type_mismatch() {
        let t = "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'logs' in vhost '/': received 'fanout' but current is 'direct'";
        assert_eq!(
            parse_inequivalent(t),
            Some(DeclareError::Inequivalent {
                object: "exchange".into(),
                name: "logs".into(),
                argument: "type".into(),
                requested: "fanout".into(),
                current: "direct".into(),
            })
        );
    }

    #[test]
    fn parses_queue_argument_mismatches() {
        let t = "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'jobs' in vhost '/': received the value 'quorum' of type 'longstr' but current is none";
        match parse_inequivalent(t) {
            Some(DeclareError::Inequivalent {
                object,
                name,
                argument,
                requested,
                current,
            }) => {
                assert_eq!(
                    (object.as_str(), name.as_str(), argument.as_str()),
                    ("queue", "jobs", "x-queue-type")
                );
                assert_eq!((requested.as_str(), current.as_str()), ("quorum", "none"));
            }
            other => panic!("{other:?}"),
        }
        let t = "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q.1' in vhost 'prod': received 'false' but current is 'true'";
        assert!(matches!(
            parse_inequivalent(t),
            Some(DeclareError::Inequivalent { ref argument, ref requested, ref current, .. })
                if argument == "durable" && requested == "false" && current == "true"
        ));
        let t = "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received the value '500' of type 'signedint' but current is the value '1000' of type 'long'";
        assert!(matches!(
            parse_inequivalent(t),
            Some(DeclareError::Inequivalent { ref requested, ref current, .. })
                if requested == "500" && current == "1000"
        ));
    }

    #[test]
    fn other_texts_are_not_inequivalence() {
        assert_eq!(
            parse_inequivalent("PRECONDITION_FAILED - unknown delivery tag 1"),
            None
        );
        assert_eq!(parse_inequivalent(""), None);
    }
}
