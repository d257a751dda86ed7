//! Checks on names and routing keys, made before anything reaches the network.

#[cfg(test)]
use rabbitkit_core::DeclareError;
use rabbitkit_core::validate::ValidationError;

/// The broker's limit for names, routing keys and patterns, in bytes.
pub const MAX_LEN: usize = 255;

/// Checks a queue or exchange name the application wants to declare.
///
/// Refused: empty names, names over 255 bytes, names starting with the
/// reserved `amq.` prefix, and names with control characters.
///
/// ```
/// use rabbitkit::names::check_name;
/// assert!(check_name("task_queue").is_ok());
/// assert!(check_name("amq.mine").is_err());
/// assert!(check_name(&"x".repeat(256)).is_err());
/// ```
pub fn check_name(name: &str) -> Result<(), ValidationError> {
    let refuse = |reason: &str| Err(ValidationError::name(name, reason));
    if name.is_empty() {
        return refuse(
            "empty (the default exchange and server-named queues cannot be declared; use Queue::temporary for an anonymous queue)",
        );
    }
    if name.len() > MAX_LEN {
        return refuse("longer than 255 bytes");
    }
    if name.starts_with("amq.") {
        return refuse("the \"amq.\" prefix is reserved by the broker");
    }
    if name.chars().any(char::is_control) {
        return refuse("contains control characters");
    }
    Ok(())
}

/// Checks a plain routing key (direct routing or topic publishing).
/// With `plain_words`, `*` and `#` are refused: they are wildcards only in
/// binding patterns, and a message published with them would match nothing
/// the publisher meant.
pub fn check_routing_key(key: &str, plain_words: bool) -> Result<(), ValidationError> {
    let refuse = |reason: &str| Err(ValidationError::new("routing key", key, reason));
    if key.len() > MAX_LEN {
        return refuse("longer than 255 bytes");
    }
    if plain_words && key.contains(['*', '#']) {
        return refuse("'*' and '#' are wildcards for binding patterns, not for publishing");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("logs").is_ok());
        assert!(check_name("a.b-c_d:e").is_ok());
        assert!(check_name(&"é".repeat(127)).is_ok()); // 254 bytes
        assert!(matches!(
            check_name(&"é".repeat(128)).map_err(DeclareError::from),
            Err(DeclareError::InvalidName { .. })
        ));
        assert!(check_name("").is_err());
        assert!(check_name("amq.topic").is_err());
        assert!(check_name("bad\nname").is_err());
        assert!(check_name("amqp.is.fine").is_ok());
    }

    #[test]
    fn routing_keys() {
        assert!(check_routing_key("", false).is_ok());
        assert!(check_routing_key("quick.orange.rabbit", true).is_ok());
        assert!(check_routing_key("quick.*.rabbit", true).is_err());
        assert!(check_routing_key(&"k".repeat(256), false).is_err());
    }
}
