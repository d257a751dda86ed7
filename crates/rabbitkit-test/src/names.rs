//! Unique resource names for tests that share one broker.

/// Returns `"<prefix>.<8 hex digits>"`, e.g. `orders.3f9a0c1e`.
///
/// The suffix comes from a random (v4) UUID, so tests running in parallel,
/// in one process or in many, never declare the same queue or exchange.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}.{}", &id[..8])
}

#[cfg(test)]
mod tests {
    use super::unique_name;
    use std::collections::HashSet;

    #[test]
    fn has_prefix_and_hex_suffix() {
        let name = unique_name("orders");
        let (prefix, suffix) = name.split_once('.').expect("a dot");
        assert_eq!(prefix, "orders");
        assert_eq!(suffix.len(), 8);
        assert!(suffix.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
    }

    #[test]
    fn keeps_dotted_prefixes() {
        assert!(unique_name("a.b").starts_with("a.b."));
    }

    #[test]
    fn does_not_repeat() {
        let names: HashSet<String> = (0..1000).map(|_| unique_name("q")).collect();
        assert_eq!(names.len(), 1000);
    }
}
