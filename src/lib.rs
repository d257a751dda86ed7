//! The root package of the rabbitkit workspace holds the tutorial programs
//! (`examples/`), the integration tests (`tests/`) and the book (`docs/`).
//!
//! This library is empty. It exists so that the Rust snippets written in
//! the book's chapters are compiled (and, unless marked `no_run`, run) as
//! doc tests: `cargo test --doc -p rabbitkit-suite`, which
//! `cargo xtask test` runs with the rest of the doc tests. Code the chapters
//! include from `examples/` is marked `ignore` there: it is compiled as the
//! examples themselves.

macro_rules! chapters {
    ($($module:ident => $file:literal,)*) => {
        /// Every chapter of the book.
        #[cfg(test)]
        const CHAPTERS: &[&str] = &[$($file),*];
        $(
            #[cfg(doctest)]
            #[doc = include_str!(concat!("../docs/src/", $file))]
            mod $module {}
        )*
    };
}

chapters! {
    introduction => "introduction.md",
    hello_world => "hello_world.md",
    work_queues => "work_queues.md",
    publish_subscribe => "publish_subscribe.md",
    routing => "routing.md",
    topics => "topics.md",
    headers => "headers.md",
    rpc => "rpc.md",
    publisher_confirms => "publisher_confirms.md",
    stream_tutorials => "stream_tutorials.md",
    workers => "workers.md",
    failover => "failover.md",
    dead_letters => "dead_letters.md",
    beyond_one_queue => "beyond_one_queue.md",
    observability => "observability.md",
    local_cluster => "local_cluster.md",
    cluster_operations => "cluster_operations.md",
    how_rabbitkit_works => "how_rabbitkit_works.md",
}

#[cfg(test)]
mod tests {
    /// A chapter added to the book must be added here too, or its snippets
    /// would go untested.
    #[test]
    fn every_chapter_is_a_doc_test() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src");
        let mut on_disk: Vec<String> = std::fs::read_dir(&src)
            .expect("docs/src")
            .map(|e| {
                e.expect("a directory entry")
                    .file_name()
                    .into_string()
                    .unwrap()
            })
            .filter(|name| name.ends_with(".md") && name != "SUMMARY.md")
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = super::CHAPTERS.iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(
            listed, on_disk,
            "src/lib.rs includes every chapter of docs/src"
        );
    }
}
