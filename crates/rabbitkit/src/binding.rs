//! What each exchange kind binds with: topic patterns and header matches.

use std::fmt;
use std::str::FromStr;

use rabbitkit_core::validate::ValidationError;
use rabbitkit_core::{AMQPValue, FieldTable};

use crate::names::MAX_LEN;

/// A validated topic binding pattern: dot-separated words, where `*`
/// matches exactly one word and `#` matches zero or more words.
///
/// Refused: empty patterns, empty words (`a..b`, a leading or trailing
/// dot), words that mix a wildcard with letters (`ab*`, which the broker
/// would take literally), and patterns over 255 bytes.
///
/// ```
/// use rabbitkit::TopicPattern;
/// let p: TopicPattern = "*.orange.*".parse().unwrap();
/// assert!(p.matches("quick.orange.rabbit"));
/// assert!(!p.matches("quick.orange.male.rabbit"));
/// assert!("lazy.#".parse::<TopicPattern>().unwrap().matches("lazy"));
/// assert!("lazy.*x".parse::<TopicPattern>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicPattern(String);

/// The most `#` words a topic pattern may have: RabbitMQ 4.3.5+ refuses
/// a binding key with more (matching them costs the broker time
/// exponential in their number).
pub const MAX_HASHES: usize = 2;

impl TopicPattern {
    /// Parses and checks a pattern.
    pub fn new(pattern: &str) -> Result<Self, ValidationError> {
        let refuse = |reason: &str| Err(ValidationError::new("topic pattern", pattern, reason));
        if pattern.is_empty() {
            return refuse("empty (use \"#\" to match everything)");
        }
        if pattern.len() > MAX_LEN {
            return refuse("longer than 255 bytes");
        }
        for word in pattern.split('.') {
            if word.is_empty() {
                return refuse("empty word (two dots in a row, or a dot at either end)");
            }
            if word != "*" && word != "#" && word.contains(['*', '#']) {
                return refuse("a wildcard must be a whole word: '*' or '#'");
            }
        }
        if pattern.split('.').filter(|w| *w == "#").count() > MAX_HASHES {
            return refuse("more than two '#' words (RabbitMQ 4.3.5+ refuses such a binding)");
        }
        Ok(Self(pattern.to_owned()))
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a routing key matches, as the broker decides it.
    ///
    /// A routing key is split on dots; the empty key has no words (so only
    /// patterns made of `#` alone match it). Runs in O(p·k) time and O(k)
    /// memory for p pattern words and k key words, whatever the number of
    /// `#`.
    pub fn matches(&self, routing_key: &str) -> bool {
        let key: Vec<&str> = if routing_key.is_empty() {
            Vec::new()
        } else {
            routing_key.split('.').collect()
        };
        // reach[j]: the pattern words seen so far match the first j key words.
        let mut reach = vec![false; key.len() + 1];
        reach[0] = true;
        for word in self.0.split('.') {
            let mut any = false;
            match word {
                // Zero words (reach[j] as it was) or one more word on top of
                // a match of j - 1 words by this same `#` (reach[j - 1] as
                // just updated): a prefix OR, left to right.
                "#" => {
                    for j in 0..reach.len() {
                        step();
                        reach[j] = reach[j] || (j > 0 && reach[j - 1]);
                        any |= reach[j];
                    }
                }
                // Exactly one word, any (`*`) or this one: shift right by
                // one, right to left so reach[j - 1] is still the old value.
                _ => {
                    for j in (0..reach.len()).rev() {
                        step();
                        reach[j] = j > 0 && reach[j - 1] && (word == "*" || key[j - 1] == word);
                        any |= reach[j];
                    }
                }
            }
            if !any {
                return false;
            }
        }
        reach[key.len()]
    }
}

/// One unit of matcher work. Tests count these (see `tests::within`)
/// to check the matcher's cost without a clock; a no-op otherwise.
#[inline(always)]
fn step() {
    #[cfg(test)]
    tests::STEPS.with(|s| {
        let (done, budget) = s.get();
        assert!(
            done < budget,
            "topic matcher exceeded its budget of {budget} steps"
        );
        s.set((done + 1, budget));
    });
}

impl FromStr for TopicPattern {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A header value, typed: the broker compares type and value, so a binding
/// on `Int(1)` does not match a message header `Str("1")`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HeaderValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

impl From<&str> for HeaderValue {
    fn from(v: &str) -> Self {
        Self::Str(v.to_owned())
    }
}
impl From<String> for HeaderValue {
    fn from(v: String) -> Self {
        Self::Str(v)
    }
}
impl From<i64> for HeaderValue {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}
impl From<i32> for HeaderValue {
    fn from(v: i32) -> Self {
        Self::Int(v.into())
    }
}
impl From<bool> for HeaderValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl fmt::Display for HeaderValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => f.write_str(s),
            Self::Int(i) => write!(f, "{i}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl HeaderValue {
    /// A header value as received: strings, integers and booleans as they
    /// are; any other AMQP type (floats, tables, arrays, timestamps, bytes)
    /// as text in Rust's debug notation.
    pub fn from_amqp(value: &AMQPValue) -> Self {
        match value {
            AMQPValue::LongString(s) => Self::Str(s.to_string()),
            AMQPValue::ShortString(s) => Self::Str(s.to_string()),
            AMQPValue::Boolean(b) => Self::Bool(*b),
            AMQPValue::ShortShortInt(i) => Self::Int((*i).into()),
            AMQPValue::ShortShortUInt(i) => Self::Int((*i).into()),
            AMQPValue::ShortInt(i) => Self::Int((*i).into()),
            AMQPValue::ShortUInt(i) => Self::Int((*i).into()),
            AMQPValue::LongInt(i) => Self::Int((*i).into()),
            AMQPValue::LongUInt(i) => Self::Int((*i).into()),
            AMQPValue::LongLongInt(i) => Self::Int(*i),
            other => Self::Str(format!("{other:?}")),
        }
    }

    pub(crate) fn to_amqp(&self) -> AMQPValue {
        match self {
            Self::Str(s) => AMQPValue::LongString(s.as_str().into()),
            Self::Int(i) => AMQPValue::LongLongInt(*i),
            Self::Bool(b) => AMQPValue::Boolean(*b),
        }
    }
}

/// Message headers, for publishing to a headers exchange.
///
/// ```
/// use rabbitkit::Headers;
/// let h = Headers::new().with("format", "pdf").with("pages", 3);
/// assert_eq!(h.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use]
pub struct Headers(Vec<(String, HeaderValue)>);

impl fmt::Display for Headers {
    /// `{format=pdf, pages=3}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}={v}")?;
        }
        f.write_str("}")
    }
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// The headers of a received message's table, in the table's order
    /// (see [`HeaderValue::from_amqp`]).
    ///
    /// ```
    /// use rabbitkit::{AMQPValue, FieldTable, Headers};
    /// let mut table = FieldTable::default();
    /// table.insert("format".into(), AMQPValue::LongString("pdf".into()));
    /// table.insert("pages".into(), AMQPValue::LongLongInt(3));
    /// assert_eq!(Headers::from_table(&table).to_string(), "{format=pdf, pages=3}");
    /// ```
    pub fn from_table(table: &FieldTable) -> Self {
        Self(
            table
                .inner()
                .iter()
                .map(|(k, v)| (k.to_string(), HeaderValue::from_amqp(v)))
                .collect(),
        )
    }

    /// A header's value, if present.
    pub fn get(&self, key: &str) -> Option<&HeaderValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Adds a header.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<HeaderValue>) -> Self {
        self.0.push((key.into(), value.into()));
        self
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keys over the 255 bytes AMQP allows are refused (lapin would panic).
    pub(crate) fn check_keys(&self) -> Result<(), ValidationError> {
        for (k, _) in &self.0 {
            rabbitkit_core::validate::check_short_string(k)
                .map_err(|reason| ValidationError::new("header key", k.clone(), reason))?;
        }
        Ok(())
    }

    /// The headers as a table; call [`check_keys`](Self::check_keys) first.
    pub(crate) fn to_table(&self) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in &self.0 {
            t.insert(k.as_str().into(), v.to_amqp());
        }
        t
    }
}

/// Whether all or any of a [`HeadersMatch`]'s headers must match (`x-match`).
///
/// With `all` and `any` the broker ignores the message headers whose names
/// start with `x-`; the `-with-x` modes (RabbitMQ 3.10 and later) compare
/// them too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchMode {
    /// Every header must be present with the value (`x-match: all`).
    All,
    /// At least one must (`x-match: any`).
    Any,
    /// Like `All`, and headers named `x-...` are compared too
    /// (`x-match: all-with-x`).
    AllWithX,
    /// Like `Any`, and headers named `x-...` are compared too
    /// (`x-match: any-with-x`).
    AnyWithX,
}

impl MatchMode {
    /// The value of the binding's `x-match` argument.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchMode::All => "all",
            MatchMode::Any => "any",
            MatchMode::AllWithX => "all-with-x",
            MatchMode::AnyWithX => "any-with-x",
        }
    }

    /// Whether headers named `x-...` take part in the match.
    pub fn compares_x_headers(self) -> bool {
        matches!(self, MatchMode::AllWithX | MatchMode::AnyWithX)
    }
}

/// A headers-exchange binding: `x-match` all/any over typed values.
///
/// ```
/// use rabbitkit::HeadersMatch;
/// let m = HeadersMatch::all().header("format", "pdf").header("type", "report");
/// assert_eq!(m.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct HeadersMatch {
    mode: MatchMode,
    headers: Headers,
}

impl HeadersMatch {
    /// Every header must match.
    pub fn all() -> Self {
        Self {
            mode: MatchMode::All,
            headers: Headers::new(),
        }
    }

    /// Any header may match.
    pub fn any() -> Self {
        Self {
            mode: MatchMode::Any,
            headers: Headers::new(),
        }
    }

    /// Every header must match, including headers named `x-...`
    /// (`x-match: all-with-x`, RabbitMQ 3.10+).
    ///
    /// ```
    /// use rabbitkit::{HeadersMatch, MatchMode};
    /// let m = HeadersMatch::all_with_x().header("x-tenant", "acme");
    /// assert_eq!(m.mode(), MatchMode::AllWithX);
    /// ```
    pub fn all_with_x() -> Self {
        Self {
            mode: MatchMode::AllWithX,
            headers: Headers::new(),
        }
    }

    /// Any header may match, including headers named `x-...`
    /// (`x-match: any-with-x`, RabbitMQ 3.10+).
    pub fn any_with_x() -> Self {
        Self {
            mode: MatchMode::AnyWithX,
            headers: Headers::new(),
        }
    }

    /// How the headers are matched.
    pub fn mode(&self) -> MatchMode {
        self.mode
    }

    /// Adds a header to match.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<HeaderValue>) -> Self {
        self.headers = self.headers.with(key, value);
        self
    }

    /// Number of headers to match.
    pub fn len(&self) -> usize {
        self.headers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
    }

    /// The binding arguments; refuses an empty match, `x-match` itself as a
    /// header, and `x-` keys in the `all`/`any` modes (the broker would
    /// ignore them there: use the `-with-x` modes to compare them).
    pub(crate) fn to_arguments(&self) -> Result<FieldTable, ValidationError> {
        if self.headers.is_empty() {
            return Err(ValidationError::new(
                "headers match",
                String::new(),
                "no header to match",
            ));
        }
        if let Some((k, _)) = self.headers.0.iter().find(|(k, _)| *k == "x-match") {
            return Err(ValidationError::new(
                "headers match",
                k.clone(),
                "\"x-match\" is the match mode, not a header to match",
            ));
        }
        if !self.mode.compares_x_headers()
            && let Some((k, _)) = self.headers.0.iter().find(|(k, _)| k.starts_with("x-"))
        {
            return Err(ValidationError::new(
                "headers match",
                k.clone(),
                "keys starting with \"x-\" are ignored by the broker in the all/any \
                         modes; use HeadersMatch::all_with_x or any_with_x to match them",
            ));
        }
        self.headers.check_keys()?;
        let mut t = self.headers.to_table();
        t.insert(
            "x-match".into(),
            AMQPValue::LongString(self.mode.as_str().into()),
        );
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// (steps taken, steps allowed) by the topic matcher on this thread.
        pub(super) static STEPS: Cell<(u64, u64)> = const { Cell::new((0, u64::MAX)) };
    }

    /// Runs `f` allowing the matcher at most `budget` steps (it panics
    /// beyond), and returns `f`'s result with the steps taken.
    fn within<R>(budget: u64, f: impl FnOnce() -> R) -> (R, u64) {
        STEPS.with(|s| s.set((0, budget)));
        let r = f();
        let (done, _) = STEPS.with(|s| s.replace((0, u64::MAX)));
        (r, done)
    }

    #[test]
    fn topic_patterns_validate() {
        for ok in ["#", "*", "a.b.c", "*.orange.*", "lazy.#", "#.x.#", "kern.*"] {
            TopicPattern::new(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "a..b",
            ".a",
            "a.",
            "ab*",
            "a.#b",
            "*x.y",
            "#.a.#.b.#",
            "#.#.#",
        ] {
            assert!(TopicPattern::new(bad).is_err(), "{bad}");
        }
        assert!(TopicPattern::new(&"a.".repeat(128)).is_err());
    }

    #[test]
    fn topic_matching_follows_the_tutorial() {
        let p = |s: &str| TopicPattern::new(s).unwrap();
        assert!(p("*.orange.*").matches("quick.orange.rabbit"));
        assert!(p("*.*.rabbit").matches("quick.orange.rabbit"));
        assert!(p("lazy.#").matches("lazy.orange.elephant"));
        assert!(p("lazy.#").matches("lazy"));
        assert!(!p("*.orange.*").matches("quick.brown.fox"));
        assert!(!p("*.orange.*").matches("orange"));
        assert!(p("lazy.#").matches("lazy.orange.new.rabbit"));
        assert!(!p("*.*.rabbit").matches("lazy.orange.new.rabbit"));
        assert!(p("#").matches(""));
        assert!(p("#.rabbit").matches("rabbit"));
    }

    #[test]
    fn topic_matching_tricky_cases() {
        // Built directly: one case has more `#` than a binding may (the
        // matcher is right for any).
        let p = |s: &str| TopicPattern(s.to_owned());
        // `#` takes zero or more words, `*` exactly one; "" has no words.
        for (pattern, yes, no) in [
            ("#", &["", "a", "a.b.c"][..], &[][..]),
            ("*", &["a"], &["", "a.b"]),
            ("#.#", &["", "a", "a.b.c"], &[]),
            ("*.#", &["a", "a.b", "a.b.c"], &[""]),
            ("#.*", &["a", "a.b"], &[""]),
            (
                "a.#.b",
                &["a.b", "a.x.b", "a.x.y.b", "a.b.b"],
                &["a", "b", "a.b.c", "x.a.b"],
            ),
            (
                "#.a.#",
                &["a", "x.a", "a.x", "x.a.y", "a.a"],
                &["", "x", "x.y", "ab"],
            ),
            ("#.a.*", &["a.x", "y.a.x", "a.a.a"], &["a", "x.a", "a.x.y"]),
            ("a.*.#.b", &["a.x.b", "a.x.y.b"], &["a.b", "a.x", "a.x.b.c"]),
            ("#.#.a.#.#", &["a", "x.x.a.x.x"], &["", "x.x"]),
            ("a", &["a"], &["", "b", "a.a", "A"]),
            ("*.*", &["a.b", "a."], &["", "a", "a.b.c"]),
        ] {
            for key in yes {
                assert!(p(pattern).matches(key), "{pattern:?} should match {key:?}");
            }
            for key in no {
                assert!(
                    !p(pattern).matches(key),
                    "{pattern:?} should not match {key:?}"
                );
            }
        }
    }

    #[test]
    fn topic_matching_agrees_with_the_naive_matcher() {
        // The former matcher, exponential but plainly the definition: `#`
        // tries every split. Compared on every pattern of up to 4 words
        // over {a, b, *, #} and every key of up to 4 words over {a, b}.
        fn naive(p: &[&str], k: &[&str]) -> bool {
            match p.split_first() {
                None => k.is_empty(),
                Some((&"#", rest)) => (0..=k.len()).any(|i| naive(rest, &k[i..])),
                Some((&"*", rest)) => !k.is_empty() && naive(rest, &k[1..]),
                Some((w, rest)) => k.first() == Some(w) && naive(rest, &k[1..]),
            }
        }
        fn all(alphabet: &[&'static str], max: usize) -> Vec<Vec<&'static str>> {
            let mut out = vec![vec![]];
            let mut last = vec![vec![]];
            for _ in 0..max {
                last = last
                    .iter()
                    .flat_map(|w: &Vec<_>| {
                        alphabet.iter().map(move |a| [w.as_slice(), &[*a]].concat())
                    })
                    .collect();
                out.extend(last.iter().cloned());
            }
            out
        }
        let keys = all(&["a", "b"], 4);
        for p in all(&["a", "b", "*", "#"], 4).into_iter().skip(1) {
            // Also patterns with more `#` than a binding may have: the
            // matcher is right for any.
            let pattern = TopicPattern(p.join("."));
            for k in &keys {
                assert_eq!(
                    pattern.matches(&k.join(".")),
                    naive(&p, k),
                    "{pattern} vs {:?}",
                    k.join(".")
                );
            }
        }
    }

    #[test]
    fn topic_matching_is_polynomial_in_the_hashes() {
        // Many `#` and a long key that does not match: a matcher where each
        // `#` tries every split explores about C(words + hashes, hashes)
        // paths (~10^11 here). A dynamic programme over (pattern word, key
        // word) pairs needs at most (p + 1) * (k + 1) steps; the budget is
        // twice that.
        let pattern = TopicPattern(format!("{}a.b", "#.".repeat(12)));
        let key = vec!["x"; 40].join(".") + ".b";
        let (p, k) = (14u64, 41u64);
        let budget = 2 * (p + 1) * (k + 1);
        let (matched, steps) = within(budget, || pattern.matches(&key));
        assert!(!matched);
        assert!(steps <= budget, "{steps} steps");
        // The same pattern still matches when it should, within the same bound.
        let key = vec!["x"; 40].join(".") + ".a.b";
        let (matched, _) = within(2 * (p + 1) * (k + 2), || pattern.matches(&key));
        assert!(matched);
    }

    #[test]
    fn headers_match_arguments() {
        let t = HeadersMatch::any()
            .header("format", "pdf")
            .header("n", 1)
            .to_arguments()
            .unwrap();
        let m = t.inner();
        assert_eq!(m.get("x-match"), Some(&AMQPValue::LongString("any".into())));
        assert_eq!(m.get("n"), Some(&AMQPValue::LongLongInt(1)));
        assert!(HeadersMatch::all().to_arguments().is_err());
        assert!(
            HeadersMatch::all()
                .header("x-match", "any")
                .to_arguments()
                .is_err()
        );
    }
}
