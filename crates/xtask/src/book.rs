//! `cargo xtask book`: checks the book's `{{#include}}`s, measures its
//! sentences and checks its `rabbitmqctl` commands, then builds it.
//!
//! mdBook only logs an include whose file or anchor is missing and goes on
//! with an empty code block; here such an include is an error that names
//! the chapter, the line and what is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use crate::{Metadata, Result, cargo, exit_code, prose, run_step};

/// The mdBook release installed when `mdbook` is missing: the last 0.4.x,
/// which builds with the workspace's Rust.
const MDBOOK_VERSION: &str = "0.4.52";

/// One `{{#include PATH}}` or `{{#include PATH:ANCHOR}}` (also
/// `#rustdoc_include`) found in a chapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Include {
    /// 1-based line in the chapter.
    pub(crate) line: usize,
    /// The directive as written, for messages.
    pub(crate) text: String,
    /// The file, relative to the chapter's directory.
    pub(crate) path: String,
    /// The anchor, when one is named (line ranges are not anchors).
    pub(crate) anchor: Option<String>,
}

/// The includes of a chapter, as mdBook reads them: `{{#include path}}`,
/// `{{#include path:anchor}}`, `{{#include path:10:20}}` (a line range, no
/// anchor); `\{{#include ...}}` is escaped and ignored.
pub(crate) fn find_includes(markdown: &str) -> Vec<Include> {
    let mut found = Vec::new();
    for (index, line) in markdown.lines().enumerate() {
        let mut rest = line;
        let mut offset = 0;
        while let Some(start) = rest.find("{{") {
            let escaped = rest[..start].ends_with('\\');
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else { break };
            let text = format!("{{{{{}}}}}", &after[..end]);
            let inner = after[..end].trim_start().strip_prefix('#').map(str::trim);
            offset += start + 2 + end + 2;
            rest = &line[offset..];
            let Some(inner) = inner.filter(|_| !escaped) else {
                continue;
            };
            let Some(target) = inner
                .strip_prefix("include ")
                .or_else(|| inner.strip_prefix("rustdoc_include "))
            else {
                continue;
            };
            let target = target.trim();
            let (path, selector) = match target.split_once(':') {
                Some((path, selector)) => (path, Some(selector)),
                None => (target, None),
            };
            let is_range = |s: &str| s.split(':').all(|p| p.chars().all(|c| c.is_ascii_digit()));
            let anchor = selector
                .filter(|s| !is_range(s))
                .map(|s| s.trim().to_owned());
            found.push(Include {
                line: index + 1,
                text,
                path: path.trim().to_owned(),
                anchor,
            });
        }
    }
    found
}

/// Whether `source` has `ANCHOR: name` and, after it, `ANCHOR_END: name`
/// (mdBook's markers; anchor names are letters, digits, `_` and `-`).
/// Returns what is wrong, if anything.
pub(crate) fn anchor_problem(source: &str, name: &str) -> Option<String> {
    let marker = |line: &str, prefix: &str| -> bool {
        line.match_indices(prefix).any(|(i, _)| {
            let rest = line[i + prefix.len()..].trim_start();
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
                .collect();
            word == name
        })
    };
    let start = source.lines().position(|l| marker(l, "ANCHOR:"));
    let end = source.lines().position(|l| marker(l, "ANCHOR_END:"));
    match (start, end) {
        (Some(s), Some(e)) if s < e => None,
        (Some(_), Some(_)) => Some(format!(
            "`ANCHOR_END: {name}` comes before `ANCHOR: {name}`"
        )),
        (None, None) => Some(format!(
            "no anchor `{name}` (neither `ANCHOR: {name}` nor `ANCHOR_END: {name}`)"
        )),
        (None, Some(_)) => Some(format!("no `ANCHOR: {name}`")),
        (Some(_), None) => Some(format!("no `ANCHOR_END: {name}`")),
    }
}

/// Checks every include of every chapter under `src` (recursively).
/// Returns how many includes were checked and one message per bad one.
pub(crate) fn check_includes(src: &Path) -> Result<(usize, Vec<String>)> {
    let mut chapters = Vec::new();
    collect_markdown(src, &mut chapters)?;
    chapters.sort();
    let mut checked = 0;
    let mut problems = Vec::new();
    for chapter in &chapters {
        let markdown = std::fs::read_to_string(chapter)
            .map_err(|e| format!("cannot read {}: {e}", chapter.display()))?;
        let dir = chapter.parent().unwrap_or(src);
        // Chapters are named from the repository root (docs/src/x.md).
        let shown = src
            .parent()
            .and_then(Path::parent)
            .and_then(|root| chapter.strip_prefix(root).ok())
            .unwrap_or(chapter);
        for include in find_includes(&markdown) {
            checked += 1;
            let at = format!("{}:{}: {}", shown.display(), include.line, include.text);
            let file = dir.join(&include.path);
            let Ok(source) = std::fs::read_to_string(&file) else {
                problems.push(format!("{at}: no file {}", include.path));
                continue;
            };
            if let Some(anchor) = &include.anchor
                && let Some(problem) = anchor_problem(&source, anchor)
            {
                problems.push(format!("{at}: {problem} in {}", include.path));
            }
        }
    }
    Ok((checked, problems))
}

fn collect_markdown(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .path();
        if path.is_dir() {
            collect_markdown(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
    Ok(())
}

/// `cargo xtask book`: check the includes, then `mdbook build docs`
/// (installing mdBook first when it is missing).
pub(crate) fn book() -> Result<ExitCode> {
    let metadata = Metadata::load()?;
    let docs = metadata.root.join("docs");
    let (checked, problems) = check_includes(&docs.join("src"))?;
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("xtask: bad include: {problem}");
        }
        return Err(format!(
            "{} of the book's {checked} includes name a missing file or anchor",
            problems.len()
        ));
    }
    eprintln!("xtask: [book] all {checked} includes name an existing file and anchor");
    check_prose(&docs.join("src"))?;

    let mdbook = match find_mdbook() {
        Some(mdbook) => mdbook,
        None => {
            let mut install = cargo(&metadata.root);
            install.args([
                "install",
                "mdbook",
                "--locked",
                "--version",
                MDBOOK_VERSION,
                "--no-default-features",
                "--features",
                "search",
            ]);
            let code = run_step("install mdbook", install)?;
            if code != 0 {
                return Ok(exit_code(code));
            }
            find_mdbook()
                .ok_or("mdbook was installed but cannot be found: is ~/.cargo/bin on PATH?")?
        }
    };
    let mut build = Command::new(mdbook);
    build.current_dir(&metadata.root).args(["build", "docs"]);
    run_step("book", build).map(exit_code)
}

/// Prints words per sentence per chapter (in the order of SUMMARY.md),
/// flags sentences over [`prose::LONG`] words, and fails on any over
/// [`prose::TOO_LONG`] or on a `rabbitmqctl` a reader could not run.
fn check_prose(src: &Path) -> Result<()> {
    let summary = std::fs::read_to_string(src.join("SUMMARY.md"))
        .map_err(|e| format!("cannot read SUMMARY.md: {e}"))?;
    let mut chapters: Vec<String> = summary
        .lines()
        .filter_map(|l| l.split_once("](")?.1.split_once(')'))
        .map(|(file, _)| file.trim().to_owned())
        .filter(|file| file.ends_with(".md"))
        .collect();
    chapters.dedup();
    let mut too_long = Vec::new();
    let mut bad_ctl = Vec::new();
    eprintln!(
        "xtask: [book] words per sentence (flagged: over {} words)",
        prose::LONG
    );
    eprintln!(
        "xtask: [book] {:<28} {:>9} {:>6} {:>7} {:>7} {:>7}",
        "chapter", "sentences", "words", "average", "longest", "over45"
    );
    for chapter in &chapters {
        let markdown = std::fs::read_to_string(src.join(chapter))
            .map_err(|e| format!("cannot read docs/src/{chapter}: {e}"))?;
        let measure = prose::measure(&markdown);
        eprintln!(
            "xtask: [book] {:<28} {:>9} {:>6} {:>7.1} {:>7} {:>7}",
            chapter,
            measure.sentences,
            measure.words,
            measure.average(),
            measure.longest,
            measure.long.len()
        );
        for sentence in &measure.long {
            let at = format!("docs/src/{chapter}:{}", sentence.line);
            eprintln!(
                "xtask: [book]   {at}: {} words: {} ...",
                sentence.words, sentence.start
            );
            if sentence.words > prose::TOO_LONG {
                too_long.push(at);
            }
        }
        for (line, text) in prose::bad_rabbitmqctl(&markdown) {
            bad_ctl.push(format!("docs/src/{chapter}:{line}: {text}"));
        }
    }
    for bad in &bad_ctl {
        eprintln!(
            "xtask: [book] rabbitmqctl that does not run as written (use `cargo xtask broker ctl N ...` \
             or `docker exec CONTAINER rabbitmqctl ...`): {bad}"
        );
    }
    if !too_long.is_empty() || !bad_ctl.is_empty() {
        return Err(format!(
            "the book has {} sentence(s) over {} words ({}) and {} rabbitmqctl command(s) \
             in neither working form",
            too_long.len(),
            prose::TOO_LONG,
            too_long.join(", "),
            bad_ctl.len()
        ));
    }
    Ok(())
}

/// `mdbook` on PATH, or in cargo's bin directory.
fn find_mdbook() -> Option<PathBuf> {
    let runs = |p: &Path| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let on_path = PathBuf::from("mdbook");
    if runs(&on_path) {
        return Some(on_path);
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let installed = cargo_home.join("bin").join("mdbook");
    runs(&installed).then_some(installed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_includes_with_and_without_anchors() {
        let md = "# Hello\n\
                  ```rust,ignore\n\
                  {{#include ../../examples/send.rs:code}}\n\
                  ```\n\
                  {{#include a.rs}} and {{ #include b.rs:10:20 }} and {{#rustdoc_include c.rs:x-1}}\n\
                  \\{{#include escaped.rs:nope}} {{#title Not an include}}\n";
        let found = find_includes(md);
        let got: Vec<(usize, &str, Option<&str>)> = found
            .iter()
            .map(|i| (i.line, i.path.as_str(), i.anchor.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (3, "../../examples/send.rs", Some("code")),
                (5, "a.rs", None),
                (5, "b.rs", None),
                (5, "c.rs", Some("x-1")),
            ]
        );
        assert_eq!(found[0].text, "{{#include ../../examples/send.rs:code}}");
        assert_eq!(found[2].text, "{{ #include b.rs:10:20 }}");
    }

    #[test]
    fn anchors_need_a_start_then_an_end() {
        let src = "// ANCHOR: main\nfn main() {}\n// ANCHOR_END: main\n// ANCHOR: half\n";
        assert_eq!(anchor_problem(src, "main"), None);
        assert!(
            anchor_problem(src, "half")
                .unwrap()
                .contains("no `ANCHOR_END: half`")
        );
        assert!(
            anchor_problem(src, "missing")
                .unwrap()
                .contains("no anchor `missing`")
        );
        // A name is a whole word: `main` does not match `main_loop`.
        let src = "// ANCHOR: main_loop\n// ANCHOR_END: main_loop\n";
        assert!(anchor_problem(src, "main").is_some());
        let src = "// ANCHOR_END: x\n// ANCHOR: x\n";
        assert!(anchor_problem(src, "x").unwrap().contains("comes before"));
    }

    #[test]
    fn reports_missing_files_and_anchors_by_chapter_and_line() {
        let dir = std::env::temp_dir().join(format!("xtask-book-{}", std::process::id()));
        let src = dir.join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            dir.join("code.rs"),
            "// ANCHOR: good\nfn f() {}\n// ANCHOR_END: good\n",
        )
        .unwrap();
        std::fs::write(
            src.join("chapter.md"),
            "{{#include ../code.rs:good}}\n\
             {{#include ../code.rs:bad}}\n\
             {{#include ../missing.rs}}\n\
             {{#include ../code.rs}}\n",
        )
        .unwrap();
        let (checked, problems) = check_includes(&src).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(checked, 4);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].contains("chapter.md:2: {{#include ../code.rs:bad}}"));
        assert!(problems[0].contains("no anchor `bad`"));
        assert!(problems[1].contains("chapter.md:3:") && problems[1].contains("no file"));
    }
}
