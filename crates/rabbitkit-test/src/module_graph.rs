//! Which of a crate's modules import which (its `use crate::…` lines), and
//! whether that graph has a cycle: the unit tests of rabbitkit-core and
//! rabbitkit keep their modules a DAG, so a reader can start from the
//! leaves.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The import graph of the top-level `.rs` files of `dir` (`lib.rs`
/// excluded), and a cycle in it, if there is one. A file that cannot be
/// read is left out.
pub fn cycle_in(dir: &Path) -> (Option<Vec<String>>, BTreeMap<String, BTreeSet<String>>) {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let Some(module) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        if path.extension().is_some_and(|e| e == "rs")
            && module != "lib"
            && let Ok(source) = std::fs::read_to_string(&path)
        {
            files.push((module.to_owned(), source));
        }
    }
    let graph = graph_of(&files);
    (cycle(&graph), graph)
}

/// The modules named by the `use crate::…` lines of `source` (its
/// `#[cfg(test)]` module excluded).
pub fn imports(source: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code = source
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or(source);
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("use crate::") {
        let line_start = rest[..at].rfind('\n').map_or(0, |i| i + 1);
        let before = rest[line_start..at].trim();
        let statement = &rest[at + "use crate::".len()..];
        let end = statement.find(';').unwrap_or(statement.len());
        let is_use = before.is_empty() || before.starts_with("pub");
        if is_use {
            let list = &statement[..end];
            // `a::B`, or `{a::B, b::{C, D}}`: every path's first segment.
            let mut depth = 0;
            let mut segment_start = true;
            let mut word = String::new();
            for c in list.chars().chain([',']) {
                match c {
                    'a'..='z' | 'A'..='Z' | '0'..='9' | '_' => {
                        if segment_start {
                            word.push(c);
                        }
                    }
                    _ => {
                        if segment_start && !word.is_empty() {
                            if modules.contains(&word) {
                                found.insert(word.clone());
                            }
                            segment_start = false;
                        }
                        word.clear();
                        match c {
                            '{' => {
                                depth += 1;
                                segment_start = depth == 1;
                            }
                            '}' => depth -= 1,
                            ',' if depth <= 1 => segment_start = true,
                            _ => {}
                        }
                    }
                }
            }
        }
        rest = &statement[end.min(statement.len())..];
    }
    found
}

/// A cycle in `graph`, if there is one.
pub fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut done, &mut Vec::new()))
}

/// The graph of `(module, source)` files: each module and the modules its
/// `use crate::…` lines name (itself excluded).
pub fn graph_of(files: &[(String, String)]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    files
        .iter()
        .map(|(module, source)| {
            let mut uses = imports(source, &modules);
            uses.remove(module);
            (module.clone(), uses)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_through_grouped_imports_is_found() {
        let files = [
            ("a".to_owned(), "use crate::b::X;\n".to_owned()),
            (
                "b".to_owned(),
                "use crate::{c::Y, d::{self, Z}};\n".to_owned(),
            ),
            ("c".to_owned(), "pub(crate) use crate::a::W;\n".to_owned()),
            (
                "d".to_owned(),
                "// use crate::a::V; (a comment)\n#[cfg(test)]\nmod tests {\n    use crate::a::V;\n}\n"
                    .to_owned(),
            ),
        ];
        let graph = graph_of(&files);
        assert_eq!(graph["b"], ["c", "d"].map(String::from).into());
        assert!(graph["d"].is_empty(), "{graph:?}");
        let found = cycle(&graph).unwrap();
        assert_eq!(found.first(), found.last());
        assert!(found.contains(&"c".to_owned()), "{found:?}");
    }
}
