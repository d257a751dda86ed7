//! The book's prose, measured: words per sentence, and the commands it
//! tells a reader to run to look inside the broker.
//!
//! Pure text logic, so it is unit-tested; `cargo xtask book` runs it on
//! every chapter.

/// A sentence longer than this is flagged.
pub(crate) const LONG: usize = 45;
/// A sentence longer than this fails the build.
pub(crate) const TOO_LONG: usize = 60;

/// One sentence of a chapter's prose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sentence {
    /// 1-based line where the sentence starts.
    pub(crate) line: usize,
    /// How many words it has.
    pub(crate) words: usize,
    /// Its first few words, for messages.
    pub(crate) start: String,
}

/// Abbreviations whose final dot does not end a sentence.
const ABBREVIATIONS: [&str; 6] = ["e.g.", "i.e.", "etc.", "vs.", "cf.", "approx."];

/// The sentences of a chapter's prose. What is not prose is left out:
/// fenced code blocks, headings, table rows, HTML comments and
/// `{{#...}}` directives. A blank line, a heading and a list item end a
/// sentence, as do `.`, `!` and `?` before a space or the line's end
/// (after any closing `)`, `"`, `*` or `_`). An inline code span counts as
/// one word and a link as its text.
pub(crate) fn sentences(markdown: &str) -> Vec<Sentence> {
    let mut out = Vec::new();
    let mut current: Option<(usize, Vec<String>)> = None;
    let mut finish = |current: &mut Option<(usize, Vec<String>)>| {
        if let Some((line, words)) = current.take()
            && !words.is_empty()
        {
            let start = words.iter().take(8).cloned().collect::<Vec<_>>().join(" ");
            out.push(Sentence {
                line,
                words: words.len(),
                start,
            });
        }
    };
    let mut fence: Option<&str> = None;
    let mut in_comment = false;
    for (index, raw) in markdown.lines().enumerate() {
        let line = raw.trim();
        if let Some(marker) = fence {
            if line.starts_with(marker) {
                fence = None;
            }
            continue;
        }
        if in_comment {
            if line.contains("-->") {
                in_comment = false;
            }
            continue;
        }
        if line.starts_with("<!--") {
            in_comment = !line.contains("-->");
            continue;
        }
        if let Some(marker) = ["```", "~~~"].into_iter().find(|m| line.starts_with(m)) {
            finish(&mut current);
            fence = Some(marker);
            continue;
        }
        if line.is_empty()
            || line.starts_with('#')
            || line.starts_with('|')
            || line.starts_with("{{#")
        {
            finish(&mut current);
            continue;
        }
        let text = strip_list_marker(line);
        if text.len() != line.len() {
            finish(&mut current);
        }
        let text = text.trim_start_matches('>').trim();
        for word in words_of(text) {
            let ends = ends_sentence(&word);
            current
                .get_or_insert_with(|| (index + 1, Vec::new()))
                .1
                .push(word);
            if ends {
                finish(&mut current);
            }
        }
    }
    finish(&mut current);
    out
}

/// `line` without a leading `- `, `* `, `+ ` or `1. ` list marker.
fn strip_list_marker(line: &str) -> &str {
    for marker in ["- ", "* ", "+ "] {
        if let Some(rest) = line.strip_prefix(marker) {
            return rest;
        }
    }
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    if digits > 0
        && let Some(rest) = line[digits..]
            .strip_prefix(". ")
            .or_else(|| line[digits..].strip_prefix(") "))
    {
        return rest;
    }
    line
}

/// The words of one line of prose: code spans become one word each,
/// links their text; a word is a run of non-space characters with at
/// least one letter or digit.
fn words_of(text: &str) -> Vec<String> {
    let mut flat = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                // A code span: one word, whatever it holds.
                let mut ticks = 1;
                while chars.peek() == Some(&'`') {
                    chars.next();
                    ticks += 1;
                }
                let mut closing = 0;
                for c in chars.by_ref() {
                    if c == '`' {
                        closing += 1;
                        if closing == ticks {
                            break;
                        }
                    } else {
                        closing = 0;
                    }
                }
                flat.push_str("CODE");
            }
            ']' if chars.peek() == Some(&'(') => {
                // The target of a link is not read.
                for c in chars.by_ref() {
                    if c == ')' {
                        break;
                    }
                }
            }
            '[' => {}
            _ => flat.push(c),
        }
    }
    flat.split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .map(str::to_owned)
        .collect()
}

/// Whether `word` ends its sentence.
fn ends_sentence(word: &str) -> bool {
    let lower = word.to_lowercase();
    let bare = lower.trim_start_matches(['(', '"', '*', '_']);
    if ABBREVIATIONS.iter().any(|a| bare.starts_with(a)) {
        return false;
    }
    let trimmed = word.trim_end_matches([')', '"', '*', '_', '\'']);
    trimmed.ends_with(['.', '!', '?'])
}

/// Words per sentence for one chapter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Measure {
    /// How many sentences.
    pub(crate) sentences: usize,
    /// How many words, in all sentences.
    pub(crate) words: usize,
    /// The longest sentence, in words.
    pub(crate) longest: usize,
    /// Sentences over [`LONG`] words.
    pub(crate) long: Vec<Sentence>,
}

impl Measure {
    /// Words per sentence on average (0 with no sentence).
    pub(crate) fn average(&self) -> f64 {
        if self.sentences == 0 {
            0.0
        } else {
            self.words as f64 / self.sentences as f64
        }
    }
}

/// Measures a chapter's prose.
pub(crate) fn measure(markdown: &str) -> Measure {
    let all = sentences(markdown);
    Measure {
        sentences: all.len(),
        words: all.iter().map(|s| s.words).sum(),
        longest: all.iter().map(|s| s.words).max().unwrap_or(0),
        long: all.into_iter().filter(|s| s.words > LONG).collect(),
    }
}

/// Every use of `rabbitmqctl` in a chapter that a reader could not run
/// as written: on the local cluster it is `cargo xtask broker ctl N ...`
/// (which needs no `rabbitmqctl` on PATH), on a Docker broker `docker
/// exec CONTAINER rabbitmqctl ...`. A bare mention of the tool's name
/// (the code span `` `rabbitmqctl` `` or the word in prose) is fine.
/// Returns (1-based line, the line) per bad use.
pub(crate) fn bad_rabbitmqctl(markdown: &str) -> Vec<(usize, String)> {
    let mut bad = Vec::new();
    let mut in_fence = false;
    for (index, line) in markdown.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        // The command lines of this line: the whole line in a code block,
        // each code span in prose.
        let commands: Vec<&str> = if in_fence {
            vec![line]
        } else {
            line.split('`').skip(1).step_by(2).collect()
        };
        let wrong = commands.iter().any(|command| {
            command.match_indices("rabbitmqctl").any(|(at, _)| {
                let before = &command[..at];
                let after = &command[at + "rabbitmqctl".len()..];
                let is_name_only = before.trim().is_empty() && after.trim().is_empty();
                let docker = before.contains("docker exec");
                !(is_name_only || docker)
            })
        });
        if wrong {
            bad.push((index + 1, line.trim().to_owned()));
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(md: &str) -> Vec<usize> {
        sentences(md).iter().map(|s| s.words).collect()
    }

    #[test]
    fn counts_words_per_sentence() {
        assert_eq!(
            counts("One two three. Four five!\nSix seven? Eight"),
            [3, 2, 2, 1]
        );
        // A sentence runs over lines until its full stop.
        assert_eq!(counts("One two\nthree four.\nFive."), [4, 1]);
        // Closing brackets, quotes and emphasis after the stop.
        assert_eq!(counts("(One two.) \"Three.\" **Four.** five"), [2, 1, 1, 1]);
    }

    #[test]
    fn a_paragraph_heading_or_list_item_ends_a_sentence() {
        assert_eq!(counts("One two\n\nThree four"), [2, 2]);
        assert_eq!(
            counts("Intro:\n- one two\n- three\n1. four five six"),
            [1, 2, 1, 3]
        );
        assert_eq!(counts("One\n# Heading words here\nTwo"), [1, 1]);
    }

    #[test]
    fn code_tables_comments_and_directives_are_not_prose() {
        let md = "Before it.\n\
                  ```rust\n\
                  let x = 1. Not. Prose.\n\
                  ```\n\
                  | a | b. c |\n\
                  <!-- a\ncomment. -->\n\
                  {{#include ../../examples/send.rs:code}}\n\
                  After it.";
        assert_eq!(counts(md), [2, 2]);
    }

    #[test]
    fn code_spans_links_and_abbreviations() {
        // A code span is one word, even with dots and spaces in it.
        assert_eq!(counts("Run `cargo xtask broker up. now` here."), [3]);
        // A link counts as its text; its target is not read.
        assert_eq!(counts("See [the guide](https://x.org/a.b. c) now."), [4]);
        // e.g. and i.e. do not end a sentence; numbers with dots neither.
        assert_eq!(
            counts("Use one, e.g. this, i.e. that. Version 4.3 is out."),
            [6, 4]
        );
        // Pure punctuation is not a word.
        assert_eq!(counts("One - two — three."), [3]);
    }

    #[test]
    fn lines_are_where_sentences_start() {
        let found = sentences("Title text.\n\nOne\ntwo.");
        assert_eq!(found[1].line, 3);
        assert_eq!(found[1].start, "One two.");
    }

    #[test]
    fn measures_average_longest_and_long_ones() {
        let long = vec!["word"; 50].join(" ") + ".";
        let md = format!("Short one.\n\n{long}\n\nAnother short one.");
        let m = measure(&md);
        assert_eq!((m.sentences, m.words, m.longest), (3, 55, 50));
        assert_eq!(m.long.len(), 1);
        assert_eq!(m.long[0].line, 3);
        assert!((m.average() - 55.0 / 3.0).abs() < 1e-9);
        assert_eq!(measure("").average(), 0.0);
    }

    #[test]
    fn rabbitmqctl_only_in_the_two_working_forms() {
        let md = "The `rabbitmqctl` tool, or rabbitmqctl in prose, is fine.\n\
                  `cargo xtask broker ctl 1 list_queues` is fine.\n\
                  `docker exec rabbitmq rabbitmqctl list_queues` is fine.\n\
                  `rabbitmqctl list_queues` is not.\n\
                  ```console\n\
                  $ docker exec -it rabbitmq rabbitmqctl list_bindings\n\
                  $ rabbitmqctl -n rabbit1@localhost list_queues\n\
                  ```\n\
                  `sudo rabbitmqctl status` neither.";
        let bad: Vec<usize> = bad_rabbitmqctl(md).into_iter().map(|(l, _)| l).collect();
        assert_eq!(bad, [4, 7, 9]);
    }
}
